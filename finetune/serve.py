"""Policy server speaking openpi's remote inference protocol (websocket + msgpack), so openpi's
`WebsocketClientPolicy` (and finetune.serve_client) can drive a policy trained here.

Protocol: on connect the server sends a msgpack metadata map. Each binary message is one msgpack observation
{"state": float[14], "images": {cam: uint8 [3,H,W] or [H,W,3]}, "prompt": str, optional "noise_seed": int};
optional extensions (an unmodified openpi client never sends them, and then nothing changes):
  "step": int >= 0                      the control tick of the observation (a replay policy looks its chunk up by it)
  "action_prefix": float [k, 14]        rig-unit actions the new chunk must continue (real-time chunking), k <= H
  "inference_delay": int, 0 <= d <= k   how many prefix actions execute before the new chunk arrives
the reply is {"actions": float32 [50,14], "server_timing": {...}, "policy_timing": {...}} or {"error": str}.
numpy arrays travel as maps {"__ndarray__": True, "data": bytes, "dtype": dtype.str, "shape": [...]} (never
pickle). GET /healthz answers 200. With an api key, clients send `Authorization: Api-Key <key>`.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import http
import ipaddress
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

import msgpack
import numpy as np

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 32 << 20
MAX_IMAGE_SIDE = 4096
_ND_KEYS = ("__ndarray__", "data", "dtype", "shape")


class ProtocolError(ValueError):
    """A message that does not follow the protocol (answered with an error reply)."""


# ----------------------------------------------------------------------------------------- msgpack + numpy
def _encode_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in ("V", "O", "c"):
            raise TypeError(f"unsupported array dtype {obj.dtype}")
        a = np.ascontiguousarray(obj)
        # bytes keys: openpi's decoder looks them up as b"__ndarray__" etc.
        return {b"__ndarray__": True, b"data": a.tobytes(), b"dtype": a.dtype.str, b"shape": list(a.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _field(obj: Mapping[Any, Any], key: str) -> Any:
    return obj[key] if key in obj else obj.get(key.encode())


def _decode_hook(obj: dict[Any, Any]) -> Any:
    if _field(obj, "__ndarray__") is not True:
        if _field(obj, "__npgeneric__") is True:
            return _field(obj, "data")
        return obj
    data, dtype, shape = _field(obj, "data"), _field(obj, "dtype"), _field(obj, "shape")
    if isinstance(dtype, bytes):
        dtype = dtype.decode("ascii", "replace")
    if not isinstance(data, bytes) or not isinstance(dtype, str) or not isinstance(shape, (list, tuple)) \
            or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n for n in shape) or len(shape) > 8:
        raise ProtocolError("malformed __ndarray__ (need data: bytes, dtype: str, shape: list of ints >= 0)")
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise ProtocolError(f"unknown array dtype {dtype!r}") from e
    if dt.kind not in "biuf" or dt.hasobject:
        raise ProtocolError(f"unsupported array dtype {dtype!r}")
    if math.prod(shape) * dt.itemsize != len(data):
        raise ProtocolError(f"array data has {len(data)} bytes, shape {list(shape)} of {dtype} needs "
                            f"{math.prod(shape) * dt.itemsize}")
    return np.frombuffer(data, dtype=dt).reshape(shape)


def packb(obj: Any) -> bytes:
    """msgpack with numpy arrays as __ndarray__ maps."""
    return msgpack.packb(obj, default=_encode_default, use_bin_type=True)


def unpackb(data: bytes) -> Any:
    """The inverse of packb; str or bytes map keys; raises ProtocolError on anything malformed."""
    try:
        return msgpack.unpackb(data, object_hook=_decode_hook, raw=False, strict_map_key=False)
    except ProtocolError:
        raise
    except Exception as e:  # msgpack's ExtraData, FormatError, StackError, ValueError, UnicodeDecodeError, ...
        raise ProtocolError(f"not a msgpack message ({type(e).__name__}: {e})") from e


def _key(d: Mapping[Any, Any], key: str) -> Any:
    if key in d:
        return d[key]
    return d.get(key.encode())


def _numeric_array(value: Any, what: str) -> np.ndarray:
    """A list or a numeric ndarray -> ndarray; anything else is a ProtocolError naming the field."""
    if isinstance(value, (list, tuple)):
        try:
            value = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ProtocolError(f"{what} must be a list or array of numbers") from e
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
        raise ProtocolError(f"{what} must be a numeric array")
    return value


def parse_observation(msg: Any, state_dim: int = 14) -> tuple[np.ndarray, dict[str, np.ndarray], str, int | None]:
    """An observation map -> (state [state_dim], {cam: HxWx3 uint8}, prompt, noise seed or None)."""
    if not isinstance(msg, Mapping):
        raise ProtocolError(f"an observation must be a map, got {type(msg).__name__}")
    state, images, prompt = _key(msg, "state"), _key(msg, "images"), _key(msg, "prompt")
    if state is None or images is None or prompt is None:
        missing = [k for k, v in (("state", state), ("images", images), ("prompt", prompt)) if v is None]
        raise ProtocolError(f"observation lacks {missing} (needs state, images, prompt)")
    state = _numeric_array(state, "state")
    if state.shape != (state_dim,):
        raise ProtocolError(f"state must have shape [{state_dim}], got {list(state.shape)}")
    if not np.all(np.isfinite(state)):
        raise ProtocolError("state has non-finite values")
    if isinstance(prompt, bytes):
        prompt = prompt.decode("utf-8", "replace")
    if not isinstance(prompt, str) or len(prompt) > 10_000:
        raise ProtocolError("prompt must be a string (at most 10000 characters)")
    if not isinstance(images, Mapping) or not images:
        raise ProtocolError("images must be a non-empty map {camera name: uint8 array}")
    frames: dict[str, np.ndarray] = {}
    for cam, img in images.items():
        name = cam.decode("utf-8", "replace") if isinstance(cam, bytes) else cam
        if not isinstance(name, str):
            raise ProtocolError("image keys must be camera names (strings)")
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3:
            raise ProtocolError(f"image {name!r} must be a uint8 array [3,H,W] or [H,W,3]")
        if img.shape[-1] != 3 and img.shape[0] == 3:
            img = img.transpose(1, 2, 0)
        if img.shape[-1] != 3 or min(img.shape[:2]) < 1 or max(img.shape[:2]) > MAX_IMAGE_SIDE:
            raise ProtocolError(f"image {name!r} has shape {list(img.shape)}; need [3,H,W] or [H,W,3]")
        frames[name] = np.ascontiguousarray(img)
    seed = _key(msg, "noise_seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 63):
        raise ProtocolError("noise_seed must be a non-negative integer")
    return state, frames, prompt, seed


EXTENSION_FIELDS = ("step", "action_prefix", "inference_delay")


def _int_field(value: Any, name: str, hi: int = 2 ** 63) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < hi:
        raise ProtocolError(f"{name} must be a non-negative integer{'' if hi == 2 ** 63 else f' <= {hi - 1}'}, "
                            f"got {value!r}")
    return int(value)


def parse_extensions(msg: Mapping[Any, Any], action_shape: tuple[int, int]) -> dict[str, Any]:
    """The optional wire extensions of an observation map -> the runtime's keyword arguments, only those present:
    {"step": int, "prefix": float64 [k, action_dim], "delay": int}. Raises ProtocolError with what is wrong."""
    horizon, dim = int(action_shape[0]), int(action_shape[1])
    out: dict[str, Any] = {}
    step = _key(msg, "step")
    if step is not None:
        out["step"] = _int_field(step, "step")
    prefix = _key(msg, "action_prefix")
    if prefix is not None:
        prefix = _numeric_array(prefix, "action_prefix")
        if prefix.ndim != 2 or prefix.shape[1] != dim or not 1 <= prefix.shape[0] <= horizon:
            raise ProtocolError(f"action_prefix must have shape [k, {dim}] with 1 <= k <= {horizon} (the action "
                                f"horizon), got {list(prefix.shape)}")
        if not np.all(np.isfinite(prefix)):
            raise ProtocolError("action_prefix has non-finite values")
        out["prefix"] = np.array(prefix, dtype=np.float64)
    delay = _key(msg, "inference_delay")
    if delay is not None:
        k = out["prefix"].shape[0] if "prefix" in out else 0
        d = _int_field(delay, "inference_delay")
        if d > k:
            raise ProtocolError(f"inference_delay {d} exceeds the action_prefix length {k}"
                                + ("" if k else " (no action_prefix sent)"))
        out["delay"] = d
    return out


def _accepted_kwargs(fn: Any) -> set[str] | None:
    """Keyword names `fn` accepts (None: any, it takes **kwargs)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)}


# ----------------------------------------------------------------------------------------------- server
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
        if request.path.split("?")[0] == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        key = self.config.api_key
        if key:
            got = request.headers.get("Authorization") or ""
            want = f"Api-Key {key}"
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


__all__ = ["EXTENSION_FIELDS", "PolicyServer", "ProtocolError", "ServeConfig", "is_loopback", "packb",
           "parse_extensions", "parse_observation", "unpackb"]
