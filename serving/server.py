"""The policy server of `workbench serve`: one policy over openpi's websocket protocol (serving.protocol), to any
number of clients (openpi's unmodified `WebsocketClientPolicy`, or serving.client.RemotePolicy). GET /healthz
answers 200; any host but a loopback address needs an api key, which clients send as `Authorization: Api-Key <key>`;
an address that sends `auth_max_failures` wrong keys within `auth_window_s` is answered 429 for `auth_cooldown_s`.
With `tls_cert` + `tls_key` (PEM files) it serves `wss://` (TLS): the key and the actions no longer travel in clear.
The metadata tells clients which cameras the policy reads and at what size (serving.protocol: "image_cameras",
"image_size"), so a robot sends only those, resized; full frames of every camera (an unmodified openpi client) are
still accepted and resized here. What a server can serve (a policy folder, a replay folder) is serving.policies'.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import inspect
import logging
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.policies import image_inputs
from serving.protocol import (AUTH_HEADER, HEALTH_PATH, IMAGE_CAMERAS_KEY, MAX_MESSAGE_BYTES, ProtocolError,
                              api_key_value, is_loopback, packb, parse_extensions, parse_observation, unpackb)

log = logging.getLogger(__name__)


def _accepted_kwargs(fn: Any) -> set[str] | None:
    """Keyword names `fn` accepts (None: any, it takes **kwargs)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)}


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_message_bytes: int = MAX_MESSAGE_BYTES
    tls_cert: str | Path | None = None  # PEM certificate (chain): serve wss://
    tls_key: str | Path | None = None  # its PEM private key
    # wrong api keys: after auth_max_failures from one address within auth_window_s, that address is refused (429)
    # for auth_cooldown_s, whatever key it sends
    auth_max_failures: int = 5
    auth_window_s: float = 60.0
    auth_cooldown_s: float = 300.0

    @property
    def scheme(self) -> str:
        return "wss" if self.tls_cert else "ws"

    def check(self) -> None:
        """A token is required whenever the server is reachable from other machines; TLS needs both files."""
        if not is_loopback(self.host) and not self.api_key:
            raise ValueError(f"serving on {self.host} (not a loopback address) needs an api key (--api-key); "
                             "clients then send `Authorization: Api-Key <key>`")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("TLS needs both a certificate and its private key (--tls-cert CERT --tls-key KEY)")
        if self.auth_max_failures < 1 or self.auth_window_s <= 0 or self.auth_cooldown_s < 0:
            raise ValueError("auth_max_failures must be >= 1, auth_window_s > 0 and auth_cooldown_s >= 0")
        self.ssl_context()

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server's TLS context (None: plaintext ws://); a ValueError names a missing or unreadable file."""
        if not self.tls_cert:
            return None
        for what, path in (("certificate", self.tls_cert), ("private key", self.tls_key)):
            if not Path(path).is_file():
                raise ValueError(f"TLS {what} {str(path)!r} is not a file")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(str(self.tls_cert), str(self.tls_key))
        except (ssl.SSLError, OSError) as e:
            raise ValueError(f"cannot load the TLS certificate {str(self.tls_cert)!r} with the key "
                             f"{str(self.tls_key)!r}: {e} (PEM files, the key matching the certificate)") from None
        return ctx


class _AuthLimiter:
    """Wrong api keys per remote address: `failed` counts one (-> True when it starts a cool-down), `blocked` says
    how many seconds the address is still refused. Runs on the server's event loop only (no lock)."""

    MAX_ADDRESSES = 10_000  # the most addresses remembered (the oldest forgotten first)

    def __init__(self, max_failures: int, window_s: float, cooldown_s: float,
                 clock: Any = time.monotonic) -> None:
        self.max_failures, self.window_s, self.cooldown_s, self.clock = max_failures, window_s, cooldown_s, clock
        self._failures: dict[str, deque[float]] = {}
        self._until: dict[str, float] = {}

    def blocked(self, addr: str) -> float:
        until = self._until.get(addr)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left > 0:
            return left
        del self._until[addr]  # the cool-down passed: a fresh start
        self._failures.pop(addr, None)
        return 0.0

    def failed(self, addr: str) -> bool:
        now = self.clock()
        times = self._failures.pop(addr, None) or deque()
        times.append(now)
        while times and now - times[0] > self.window_s:
            times.popleft()
        if len(times) >= self.max_failures:
            if len(self._until) >= self.MAX_ADDRESSES:  # forget the cool-downs that have passed
                self._until = {a: t for a, t in self._until.items() if t > now}
            self._until[addr] = now + self.cooldown_s
            return True
        self._failures[addr] = times  # re-inserted: the dict's order is the last failure's
        while len(self._failures) > self.MAX_ADDRESSES:
            del self._failures[next(iter(self._failures))]
        return False

    def succeeded(self, addr: str) -> None:
        self._failures.pop(addr, None)


class PolicyServer:
    """Serves one policy (anything with `infer(state, images, prompt, seed=..., [step=, prefix=, delay=])`,
    `metadata()` and `action_shape`) to any number of clients; inference runs in a worker thread, one request
    at a time. The wire extensions are passed only when the client sent them. A runtime whose `infer` lacks
    `step` gets none (the tick is informational to a model); one lacking `prefix`/`delay` answers requests that
    carry them with an error (it cannot honour a real-time-chunking prefix)."""

    def __init__(self, runtime: Any, config: ServeConfig) -> None:
        config.check()
        self.runtime, self.config = runtime, config
        self.port: int | None = None
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._accepts = _accepted_kwargs(runtime.infer)
        self._ssl = config.ssl_context()
        self._limiter = _AuthLimiter(config.auth_max_failures, config.auth_window_s, config.auth_cooldown_s)
        # the frames the policy reads (announced in the metadata), and the cameras the runtime insists on that it
        # does not read (rig cameras without a model slot, e.g. cam_low): a client that sends only the policy's
        # cameras gets those filled with a 1x1 placeholder, which the transforms drop unseen
        self._image_inputs = image_inputs(runtime)
        used = self._image_inputs.get(IMAGE_CAMERAS_KEY)
        self._unread = [] if used is None else [str(c) for c in (getattr(runtime, "cameras", None) or ())
                                                 if c not in used]
        self.requests = 0  # requests answered (error replies included)
        self.request_bytes = 0  # their bytes, all together
        self.last_request_bytes = 0

    def metadata(self) -> dict[str, Any]:
        """What a client gets on connect: the policy's metadata and the frames it reads."""
        return {**self.runtime.metadata(), **self._image_inputs}

    def _infer_kwargs(self, ext: dict[str, Any]) -> dict[str, Any]:
        if self._accepts is None:
            return ext
        out = {k: v for k, v in ext.items() if k in self._accepts}  # an unsupported `step` is dropped
        missing = [k for k in ext if k not in self._accepts and k != "step" and not (k == "delay" and ext[k] == 0)]
        if missing:
            names = {"prefix": "action_prefix", "delay": "inference_delay"}
            raise ProtocolError(f"this server's policy does not support {', '.join(names.get(k, k) for k in missing)}"
                                " (real-time chunking); leave the field out or update the server")
        return out

    # -- http part of the handshake: health check and auth
    def _process_request(self, connection: Any, request: Any) -> Any:
        if request.path.split("?")[0] == HEALTH_PATH:
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        key = self.config.api_key
        if key:
            addr = str((connection.remote_address or ("?",))[0])
            left = self._limiter.blocked(addr)
            if left > 0:  # logged once, when the cool-down started
                return connection.respond(http.HTTPStatus.TOO_MANY_REQUESTS,
                                          f"429 Too Many Requests: too many wrong api keys from {addr}; refused for "
                                          f"another {left:.0f} s\n")
            got = request.headers.get(AUTH_HEADER) or ""
            want = api_key_value(key)
            if not hmac.compare_digest(got.encode("utf-8", "replace"), want.encode("utf-8")):
                reason = "missing" if not got else "wrong"
                log.warning("refused a client at %s: %s api key", addr, reason)
                if got and self._limiter.failed(addr):
                    c = self.config
                    log.warning("%d wrong api keys from %s within %g s: refusing it for %g s", c.auth_max_failures,
                                addr, c.auth_window_s, c.auth_cooldown_s)
                return connection.respond(http.HTTPStatus.UNAUTHORIZED,
                                          f"401 Unauthorized: {reason} api key; send the header "
                                          "`Authorization: Api-Key <key>`\n")
            self._limiter.succeeded(addr)
        return None

    async def _handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await ws.send(packb(self.metadata()))
            async for message in ws:
                reply = await self._reply(message)
                await ws.send(packb(reply))
        except ConnectionClosed:  # a client that leaves mid-request is fine
            pass

    async def _reply(self, message: bytes | str) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            self.requests += 1
            self.last_request_bytes = len(message)
            self.request_bytes += len(message)
            if isinstance(message, str):
                raise ProtocolError("expected a binary msgpack message, got text")
            if len(message) > self.config.max_message_bytes:
                raise ProtocolError(f"message of {len(message)} bytes exceeds the limit of "
                                    f"{self.config.max_message_bytes}")
            msg = unpackb(message)
            state, images, prompt, seed = parse_observation(msg, self.runtime.action_shape[1])
            for cam in self._unread:
                images.setdefault(cam, np.zeros((1, 1, 3), np.uint8))
            kwargs = self._infer_kwargs(parse_extensions(msg, self.runtime.action_shape))
            t1 = time.perf_counter()
            actions = await asyncio.to_thread(self.runtime.infer, state, images, prompt, seed=seed, **kwargs)
            t2 = time.perf_counter()
        except (ProtocolError, ValueError) as e:
            return {"error": str(e)}
        except Exception as e:  # a failing model must not take the server down
            log.exception("inference failed")
            return {"error": f"inference failed: {type(e).__name__}: {e}"}
        infer_ms = (t2 - t1) * 1e3
        return {"actions": np.asarray(actions, dtype=np.float32),
                "policy_timing": {"infer_ms": infer_ms},
                "server_timing": {"decode_ms": (t1 - t0) * 1e3, "infer_ms": infer_ms,
                                  "encode_ms": (time.perf_counter() - t2) * 1e3}}

    async def serve(self, stop: asyncio.Future | None = None, on_ready: Any = None) -> None:
        """Runs until `stop` resolves (forever without one); `on_ready(port)` once the socket is bound."""
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        limit = self.config.max_message_bytes
        async with serve(self._handle, self.config.host, self.config.port, process_request=self._process_request,
                         compression=None, max_size=4 * limit + (1 << 20), ping_interval=None,
                         ssl=self._ssl) as server:
            self._server = server
            self.port = next(iter(server.sockets)).getsockname()[1]
            log.info("serving %s on %s://%s:%d%s", self.runtime.metadata().get("policy"), self.config.scheme,
                     self.config.host, self.port, "" if self._ssl or is_loopback(self.config.host) else
                     " (unencrypted: the api key and the actions travel in clear; --tls-cert/--tls-key serve wss://)")
            self._ready.set()
            if on_ready is not None:
                on_ready(self.port)
            await (stop if stop is not None else asyncio.get_running_loop().create_future())

    def start_in_thread(self, timeout: float = 30.0) -> int:
        """Starts the server on a daemon thread with its own event loop; -> the bound port."""
        self._stop_event: asyncio.Event | None = None

        def run() -> None:
            async def main() -> None:
                self._stop = asyncio.get_running_loop().create_future()
                await self.serve(self._stop)

            asyncio.run(main())

        self._thread = threading.Thread(target=run, name="policy-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the policy server did not start")
        assert self.port is not None
        return self.port

    def stop(self) -> None:
        if self._loop is not None and hasattr(self, "_stop"):
            self._loop.call_soon_threadsafe(lambda: self._stop.done() or self._stop.set_result(None))
            self._thread.join(10)


__all__ = ["PolicyServer", "ServeConfig"]
