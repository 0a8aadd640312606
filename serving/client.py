"""The robot side's client of `workbench serve`: `RemotePolicy`, a `ChunkPolicy` over openpi's websocket protocol
(serving.protocol) to a server on loopback or on a GPU box, and `PolicyConnectionError`, the one exception of that
path. Torch-free: it imports neither finetune nor workbench (workbench.deploy.policy_launcher starts a local server
and opens this client on it).

    policy = RemotePolicy("ws://gpu-box:8000", api_key=key)                     # reads the server's metadata
    reply = policy.infer(ChunkRequest(state, images, prompt, step=t))          # ChunkReply, actions [H, 14]
    policy.close()

Every failure -- nothing listening, a wrong api key (401), an error reply, the server dying mid-request, a malformed
reply -- is a `PolicyConnectionError` whose message names the URL and what to do; `.kind` tells them apart for code
("url", "refused", "auth", "handshake", "timeout", "unreachable", "closed", "server_error", "bad_reply"; the
launcher adds "server_exited", "not_started", "rig").
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Mapping

import numpy as np

from serving.chunks import ChunkReply, ChunkRequest
from serving.protocol import ProtocolError, auth_headers, observation_message, packb, unpackb


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
                 diagnose: Callable[[], str | None] | None = None) -> None:
        if not (url.startswith("ws://") or url.startswith("wss://")):
            raise PolicyConnectionError(f"policy server URL {url!r} must start with ws:// or wss://", kind="url",
                                        url=url)
        self.url, self.api_key, self.timeout = url, api_key, float(timeout)
        self.metadata: dict[str, Any] = {}
        self.server: Any = None  # the child server open_policy started for it, if any (close() stops it)
        self._diagnose = diagnose
        self._on_close: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._ws: Any = None
        self._closed = False
        self._connect()

    # -- connection
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
        try:
            ws = connect(url, additional_headers=headers, compression=None, max_size=None,
                         open_timeout=self.timeout, close_timeout=2).__enter__()  # opened, as `with` would
        except InvalidStatus as e:
            status = e.response.status_code
            body = bytes(e.response.body or b"").decode("utf-8", "replace").strip()
            if status == 401:
                raise self._fail(f"the policy server at {url} refused the api key ({body or '401 Unauthorized'}); "
                                 "pass the server's key (api_key=..., --api-key or WORKBENCH_API_KEY)", "auth") from None
            raise self._fail(f"the policy server at {url} refused the connection with HTTP {status} ({body}); "
                             "is it a `workbench serve` (openpi protocol) server?", "handshake") from None
        except InvalidURI as e:
            raise self._fail(f"invalid policy server URL {url!r}: {e}", "url") from None
        except ConnectionRefusedError:
            raise self._fail(f"cannot connect to the policy server at {url}: connection refused. Start one there "
                             "(`workbench serve POLICY --host HOST --port PORT`) or check the address", "refused") \
                from None
        except TimeoutError:
            raise self._fail(f"the policy server at {url} did not accept a connection within {self.timeout:g} s; "
                             "check that it is running and the address and network are right", "timeout") from None
        except InvalidHandshake as e:
            raise self._fail(f"the websocket handshake with {url} failed ({e}); is it a `workbench serve` "
                             "server?", "handshake") from None
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
    @staticmethod
    def _message(request: ChunkRequest) -> bytes:
        return packb(observation_message(request.state, request.images, request.prompt, seed=request.seed,
                                         step=request.step, prefix=request.prefix, delay=request.delay))

    def infer(self, request: ChunkRequest) -> ChunkReply:
        from websockets.exceptions import ConnectionClosed

        data = self._message(request)
        with self._lock:
            if self._closed:
                raise PolicyConnectionError(f"the policy client for {self.url} is closed", kind="closed", url=self.url)
            if self._ws is None:
                self._connect()
            t0 = time.perf_counter()
            try:
                self._ws.send(data)
                raw = self._ws.recv(timeout=self.timeout)
            except ConnectionClosed as e:
                self._drop()
                raise self._fail(f"the policy server at {self.url} closed the connection during a request ({e}); "
                                 "it crashed or was stopped. Restart it; the next request reconnects", "closed") \
                    from None
            except TimeoutError:
                self._drop()  # a late reply would be taken for the next request's: start afresh
                raise self._fail(f"no reply from the policy server at {self.url} within {self.timeout:g} s; it may "
                                 "be overloaded or stuck (raise the timeout, or check its log)", "timeout") from None
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
        """One dummy request (zero state, black 224x224 frames for the policy's cameras) so that the first real
        chunk is not the slow first call."""
        dim = int(self.metadata.get("action_dim") or 14)
        cams = list(self.metadata.get("cameras") or ["cam_high"])
        prompt = str(self.metadata.get("task") or "")
        images = {c: np.zeros((224, 224, 3), np.uint8) for c in cams}
        return self.infer(ChunkRequest(np.zeros(dim), images, prompt, step=step))

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


__all__ = ["PolicyConnectionError", "RemotePolicy"]
