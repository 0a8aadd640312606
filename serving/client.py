"""The robot side's client of `workbench serve`: `RemotePolicy`, a `ChunkPolicy` over openpi's websocket protocol
(serving.protocol) to a server on loopback or on a GPU box, and `PolicyConnectionError`, the one exception of that
path. Torch-free: it imports neither finetune nor workbench (workbench.deploy.policy_launcher starts a local server
and opens this client on it).

    policy = RemotePolicy("wss://gpu-box:8000", api_key=key, tls_ca="lab-ca.pem")  # reads the server's metadata
    reply = policy.infer(ChunkRequest(state, images, prompt, step=t))          # ChunkReply, actions [H, 14]
    policy.close()

Frames: a request carries only the cameras the server's metadata names ("image_cameras"), each shrunk to its
"image_size" with serving.protocol.resize_with_pad (the pixels the server would compute): 4 cameras at 640x480 are
3.69 MB of a request, the 3 a pi0 reads at 224x224 are 0.45 MB. A server that does not say gets every frame as is.

Encryption: `wss://` is TLS; the server's certificate is verified against the system's trust store, or against
`tls_ca` (a PEM file; default $WORKBENCH_TLS_CA) for a lab's self-signed certificate. A `ws://` URL to another
machine is plaintext (the api key, the frames and the actions travel in clear, and anyone on the network can answer
with actions): it works, with a warning logged (`security_warning`); `encrypted` says which for a UI.

Every failure -- nothing listening, a wrong api key (401), too many wrong keys (429), a certificate that does not
verify, an error reply, the server dying mid-request, a malformed reply -- is a `PolicyConnectionError` whose message
names the URL and what to do; `.kind` tells them apart for code ("url", "refused", "auth", "rate_limited", "tls",
"handshake", "timeout", "unreachable", "closed", "server_error", "bad_reply"; the launcher adds "server_exited",
"not_started", "rig").
"""
from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import numpy as np

from serving.chunks import ChunkReply, ChunkRequest
from serving.protocol import (IMAGE_CAMERAS_KEY, IMAGE_SIZE_KEY, ProtocolError, auth_headers, observation_message,
                              is_loopback, packb, policy_images, unpackb)

log = logging.getLogger(__name__)
TLS_CA_ENV = "WORKBENCH_TLS_CA"  # the CA file a client trusts for wss:// when none is given


def url_host(url: str) -> str:
    """The host of a ws:// / wss:// URL ("" when there is none)."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


class PolicyConnectionError(RuntimeError):
    """The policy could not answer: not reachable, refused, failed, gone, or answered nonsense. `kind` says which;
    `url` is the server's address."""

    def __init__(self, message: str, *, kind: str = "connection", url: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.url = kind, url


class RemotePolicy:
    """A `ChunkPolicy` over openpi's websocket protocol (serving.protocol), with this project's optional request
    fields: `step`, `action_prefix` + `inference_delay` (when the request has a prefix), `noise_seed` (when it
    has a seed). One request at a time (a lock); after a lost connection the next `infer` reconnects once.
    `diagnose()` (optional) adds a line to a connection error, e.g. why a child server died."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0, *,
                 tls_ca: str | Path | None = None, diagnose: Callable[[], str | None] | None = None,
                 reply_timeout: float | None = None) -> None:
        if not (url.startswith("ws://") or url.startswith("wss://")):
            raise PolicyConnectionError(f"policy server URL {url!r} must start with ws:// or wss://", kind="url",
                                        url=url)
        self.url, self.api_key, self.timeout = url, api_key, float(timeout)
        # how long `infer` waits for a reply (None: `timeout`, which also bounds connecting). The robot side sets it
        # to its chunk age limit (workbench.deploy.policy_source, the rig's [safety] max_chunk_age_s): a later reply
        # would be refused anyway, so the connection is dropped then and the next request starts afresh
        self.reply_timeout = None if reply_timeout is None else float(reply_timeout)
        self.tls_ca = str(tls_ca) if tls_ca else (os.environ.get(TLS_CA_ENV) or None)
        if tls_ca and not self.encrypted:
            raise PolicyConnectionError(f"a TLS CA file ({tls_ca}) was given for {url}, which is not TLS: use a "
                                        "wss:// URL (a server started with --tls-cert/--tls-key)", kind="url", url=url)
        self._ssl = self._ssl_context() if self.encrypted else None
        self.metadata: dict[str, Any] = {}
        self.last_request_bytes = 0  # the size of the last observation sent
        self.server: Any = None  # the child server open_policy started for it, if any (close() stops it)
        self._diagnose = diagnose
        self._on_close: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._ws: Any = None
        self._closed = False
        self._warned = False
        self._connect()

    # -- connection
    @property
    def encrypted(self) -> bool:
        """True for wss:// (TLS, the server's certificate verified); False for plaintext ws://."""
        return self.url.startswith("wss://")

    @property
    def loopback(self) -> bool:
        """The server is on this machine (127.0.0.1, ::1, localhost): plaintext never leaves it."""
        return is_loopback(url_host(self.url))

    @property
    def security_warning(self) -> str | None:
        """A line for the operator when the connection goes in clear over a network (ws:// to another machine)."""
        if self.encrypted or self.loopback:
            return None
        return (f"warning: the connection to the policy server at {self.url} is not encrypted: the api key, the "
                "frames and the actions travel in clear, and anyone on that network can inject actions. Serve it with "
                "`workbench serve ... --tls-cert CERT --tls-key KEY` and connect to wss://")

    def _ssl_context(self) -> ssl.SSLContext:
        ca = self.tls_ca
        if ca and not Path(ca).is_file():
            raise PolicyConnectionError(f"the TLS CA file {ca!r} for {self.url} is not a file", kind="tls",
                                        url=self.url)
        try:
            return ssl.create_default_context(cafile=ca)  # verifies the chain and the host name
        except (ssl.SSLError, OSError) as e:
            raise PolicyConnectionError(f"cannot read the TLS CA file {ca!r} for {self.url}: {e} (a PEM "
                                        "certificate)", kind="tls", url=self.url) from None

    def _fail(self, message: str, kind: str) -> PolicyConnectionError:
        extra = None
        if self._diagnose is not None:
            try:
                extra = self._diagnose()
            except Exception:  # noqa: BLE001 - a diagnosis must not hide the error itself
                extra = None
        return PolicyConnectionError(message + (f"\n{extra}" if extra else ""), kind=kind, url=self.url)

    def _connect(self) -> None:
        from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
        from websockets.sync.client import connect

        headers = auth_headers(self.api_key)
        url = self.url
        if not self._warned and self.security_warning:
            self._warned = True  # once per client, not per reconnect
            log.warning("%s", self.security_warning)
        try:
            ws = connect(url, additional_headers=headers, compression=None, max_size=None, ssl=self._ssl,
                         open_timeout=self.timeout, close_timeout=2).__enter__()  # opened, as `with` would
        except InvalidStatus as e:
            status = e.response.status_code
            body = bytes(e.response.body or b"").decode("utf-8", "replace").strip()
            if status == 401:
                raise self._fail(f"the policy server at {url} refused the api key ({body or '401 Unauthorized'}); "
                                 "pass the server's key (api_key=..., --api-key or WORKBENCH_API_KEY)", "auth") from None
            if status == 429:
                raise self._fail(f"the policy server at {url} refuses this machine for now after too many wrong api "
                                 f"keys ({body or '429 Too Many Requests'}); fix the key and retry after the "
                                 "cool-down", "rate_limited") from None
            raise self._fail(f"the policy server at {url} refused the connection with HTTP {status} ({body}); "
                             "is it a `workbench serve` (openpi protocol) server?", "handshake") from None
        except InvalidURI as e:
            raise self._fail(f"invalid policy server URL {url!r}: {e}", "url") from None
        except ssl.SSLCertVerificationError as e:
            ca = f"the CA file {self.tls_ca}" if self.tls_ca else "the system's trust store"
            raise self._fail(f"the TLS certificate of the policy server at {url} was refused: "
                             f"{e.verify_message or e.reason or e} (checked against {ca}). For a lab's self-signed "
                             f"certificate pass its CA (tls_ca=... or {TLS_CA_ENV}=lab-ca.pem); never connect "
                             "to a server you cannot verify", "tls") from None
        except ssl.SSLError as e:
            raise self._fail(f"the TLS handshake with {url} failed ({e.reason or e}); does that server serve TLS "
                             "(`workbench serve --tls-cert/--tls-key`)? Without it use ws://", "tls") from None
        except ConnectionRefusedError:
            raise self._fail(f"cannot connect to the policy server at {url}: connection refused. Start one there "
                             "(`workbench serve POLICY --host HOST --port PORT`) or check the address", "refused") \
                from None
        except TimeoutError:
            raise self._fail(f"the policy server at {url} did not accept a connection within {self.timeout:g} s; "
                             "check that it is running and the address and network are right", "timeout") from None
        except InvalidHandshake as e:
            hint = "" if self.encrypted else " If it serves TLS (--tls-cert), use wss://."
            raise self._fail(f"the websocket handshake with {url} failed ({e}); is it a `workbench serve` "
                             f"server?{hint}", "handshake") from None
        except OSError as e:
            raise self._fail(f"cannot connect to the policy server at {url}: {e.strerror or e}; check the address "
                             "and network", "unreachable") from None
        try:
            meta = unpackb(ws.recv(timeout=self.timeout))
        except TimeoutError:
            ws.close()
            raise self._fail(f"the policy server at {url} sent no metadata within {self.timeout:g} s", "timeout") \
                from None
        except ProtocolError as e:
            ws.close()
            raise self._fail(f"the policy server at {url} sent unreadable metadata ({e})", "bad_reply") from None
        except Exception as e:  # ConnectionClosed and friends
            ws.close()
            raise self._fail(f"the policy server at {url} closed the connection before sending its metadata "
                             f"({type(e).__name__}: {e})", "closed") from None
        if not isinstance(meta, Mapping):
            ws.close()
            raise self._fail(f"the policy server at {url} sent metadata that is not a map", "bad_reply")
        self._ws, self.metadata = ws, dict(meta)

    def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close()
            except Exception:  # noqa: BLE001 - already broken
                pass

    # -- requests
    def _message(self, request: ChunkRequest) -> bytes:
        """The observation as sent: only the policy's cameras, resized to its input (serving.protocol.policy_images;
        everything as is when the server does not say)."""
        images = policy_images(request.images, self.metadata)
        return packb(observation_message(request.state, images, request.prompt, seed=request.seed,
                                         step=request.step, prefix=request.prefix, delay=request.delay))

    def infer(self, request: ChunkRequest) -> ChunkReply:
        from websockets.exceptions import ConnectionClosed

        data = self._message(request)
        self.last_request_bytes = len(data)
        with self._lock:
            if self._closed:
                raise PolicyConnectionError(f"the policy client for {self.url} is closed", kind="closed", url=self.url)
            if self._ws is None:
                self._connect()
            t0 = time.perf_counter()
            try:
                self._ws.send(data)
                wait = self.timeout if self.reply_timeout is None else self.reply_timeout
                raw = self._ws.recv(timeout=wait)
            except ConnectionClosed as e:
                self._drop()
                raise self._fail(f"the policy server at {self.url} closed the connection during a request ({e}); "
                                 "it crashed or was stopped (the next request, or the next trial, connects again)",
                                 "closed") from None
            except TimeoutError:
                self._drop()  # a late reply would be taken for the next request's: start afresh
                raise self._fail(f"no reply from the policy server at {self.url} within {wait:g} s; it may be "
                                 "overloaded or stuck: check its log (the wait is RemotePolicy(reply_timeout=...); "
                                 "trials set it to the rig's [safety] max_chunk_age_s)", "timeout") from None
            except OSError as e:
                self._drop()
                raise self._fail(f"lost the connection to the policy server at {self.url}: {e}", "closed") from None
            try:
                reply = unpackb(raw) if isinstance(raw, bytes) else None
            except ProtocolError as e:
                reply = None
                why = str(e)
            else:
                why = "a text message" if reply is None else "not a map"
            roundtrip_ms = (time.perf_counter() - t0) * 1e3
        if not isinstance(reply, Mapping):
            raise self._fail(f"the policy server at {self.url} sent an unreadable reply ({why})", "bad_reply")
        if "error" in reply:
            raise PolicyConnectionError(f"the policy server at {self.url} answered an error: {reply['error']}",
                                        kind="server_error", url=self.url)
        return ChunkReply(self._actions(reply, request), *self._timing(reply, roundtrip_ms))

    def _actions(self, reply: Mapping[str, Any], request: ChunkRequest) -> np.ndarray:
        a = reply.get("actions")
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "iuf":
            raise PolicyConnectionError(f"the policy server at {self.url} sent no numeric `actions` array",
                                        kind="bad_reply", url=self.url)
        dim = int(np.shape(request.state)[-1])
        horizon = self.metadata.get("action_horizon")
        ok = a.ndim == 2 and a.shape[1] == dim and a.shape[0] >= 1 and (not isinstance(horizon, int)
                                                                         or a.shape[0] == horizon)
        if not ok:
            want = f"[{horizon if isinstance(horizon, int) else 'H'}, {dim}]"
            raise PolicyConnectionError(f"the policy server at {self.url} sent actions of shape {list(a.shape)}, "
                                        f"expected {want} (horizon, joints): a policy for another robot?",
                                        kind="bad_reply", url=self.url)
        if not np.all(np.isfinite(a)):
            raise PolicyConnectionError(f"the policy server at {self.url} sent non-finite actions", kind="bad_reply",
                                        url=self.url)
        return np.array(a, dtype=np.float64)

    @staticmethod
    def _timing(reply: Mapping[str, Any], roundtrip_ms: float) -> tuple[float, float, dict[str, float]]:
        timing: dict[str, float] = {}
        for group in ("server_timing", "policy_timing"):
            t = reply.get(group)
            if isinstance(t, Mapping):
                for k, v in t.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        timing.setdefault(str(k), float(v))
        timing["roundtrip_ms"] = roundtrip_ms
        return timing.get("infer_ms", float("nan")), roundtrip_ms, timing

    def warmup(self, step: int = 0) -> ChunkReply:
        """One dummy request (zero state, black frames of the policy's input size for its cameras) so that the first
        real chunk is not the slow first call."""
        dim = int(self.metadata.get("action_dim") or 14)
        cams = self.metadata.get(IMAGE_CAMERAS_KEY)
        cams = list(cams if isinstance(cams, list) else (self.metadata.get("cameras") or ["cam_high"]))
        size = self.metadata.get(IMAGE_SIZE_KEY)
        size = size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else 224
        prompt = str(self.metadata.get("task") or "")
        images = {c: np.zeros((size, size, 3), np.uint8) for c in cams}
        return self.infer(ChunkRequest(np.zeros(dim), images, prompt, step=step))

    def revive(self) -> str | None:
        """Between trials: if a failed request dropped the connection, connect again now, so a server that went
        away and came back serves the next trial and one that stays away says so once, before the arms move
        (PolicyConnectionError naming the reason). None when the connection is up; else what was done."""
        with self._lock:
            if self._closed:
                raise PolicyConnectionError(f"the policy client for {self.url} is closed", kind="closed", url=self.url)
            if self._ws is not None:
                return None
            self._connect()
        return f"reconnected to the policy server at {self.url}"

    def on_close(self, hook: Callable[[], None]) -> None:
        """`hook()` runs once, after the connection is closed by close() (open_policy: stop the child server)."""
        with self._lock:
            self._on_close.append(hook)

    def close(self) -> None:
        """Closes the connection (and runs the on_close hooks: a child server open_policy started stops); idempotent."""
        with self._lock:
            self._closed = True
            self._drop()
            hooks, self._on_close = self._on_close, []
        for hook in hooks:
            hook()

    def __enter__(self) -> "RemotePolicy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["PolicyConnectionError", "RemotePolicy", "TLS_CA_ENV", "url_host"]
