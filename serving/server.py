"""The policy server of `workbench serve`: one policy over openpi's websocket protocol (serving.protocol), to any
number of clients (openpi's unmodified `WebsocketClientPolicy`, or serving.client.RemotePolicy). GET /healthz
answers 200; any host but a loopback address needs an api key, which clients send as `Authorization: Api-Key <key>`.
What a server can serve (a policy folder, a replay folder) is serving.policies'.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import inspect
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.protocol import (AUTH_HEADER, HEALTH_PATH, MAX_MESSAGE_BYTES, ProtocolError, api_key_value, packb,
                              parse_extensions, parse_observation, unpackb)

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


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_message_bytes: int = MAX_MESSAGE_BYTES

    def check(self) -> None:
        """A token is required whenever the server is reachable from other machines."""
        if not is_loopback(self.host) and not self.api_key:
            raise ValueError(f"serving on {self.host} (not a loopback address) needs an api key (--api-key); "
                             "clients then send `Authorization: Api-Key <key>`")


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
            got = request.headers.get(AUTH_HEADER) or ""
            want = api_key_value(key)
            if not hmac.compare_digest(got.encode("utf-8", "replace"), want.encode("utf-8")):
                reason = "missing" if not got else "wrong"
                log.warning("refused a client: %s api key", reason)
                return connection.respond(http.HTTPStatus.UNAUTHORIZED,
                                          f"401 Unauthorized: {reason} api key; send the header "
                                          "`Authorization: Api-Key <key>`\n")
        return None

    async def _handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await ws.send(packb(self.runtime.metadata()))
            async for message in ws:
                reply = await self._reply(message)
                await ws.send(packb(reply))
        except ConnectionClosed:  # a client that leaves mid-request is fine
            pass

    async def _reply(self, message: bytes | str) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            if isinstance(message, str):
                raise ProtocolError("expected a binary msgpack message, got text")
            if len(message) > self.config.max_message_bytes:
                raise ProtocolError(f"message of {len(message)} bytes exceeds the limit of "
                                    f"{self.config.max_message_bytes}")
            msg = unpackb(message)
            state, images, prompt, seed = parse_observation(msg, self.runtime.action_shape[1])
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
                         compression=None, max_size=4 * limit + (1 << 20), ping_interval=None) as server:
            self._server = server
            self.port = next(iter(server.sockets)).getsockname()[1]
            log.info("serving %s on ws://%s:%d", self.runtime.metadata().get("policy"), self.config.host, self.port)
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


__all__ = ["PolicyServer", "ServeConfig", "is_loopback"]
