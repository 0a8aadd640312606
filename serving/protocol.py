"""The wire protocol of `workbench serve`: openpi's remote inference protocol (websocket + msgpack) and this
project's optional extensions. Both sides import it: the server (serving.server) and the robot side's client
(serving.client). Torch-free; it imports neither finetune nor workbench.

Protocol: on connect the server sends a msgpack metadata map. Each binary message is one msgpack observation
{"state": float[14], "images": {cam: uint8 [3,H,W] or [H,W,3]}, "prompt": str, optional "noise_seed": int};
optional extensions (an unmodified openpi client never sends them, and then nothing changes):
  "step": int >= 0                      the control tick of the observation (a replay policy looks its chunk up by it)
  "action_prefix": float [k, 14]        rig-unit actions the new chunk must continue (real-time chunking), k <= H
  "inference_delay": int, 0 <= d <= k   how many prefix actions execute before the new chunk arrives
the reply is {"actions": float32 [50,14], "server_timing": {...}, "policy_timing": {...}} or {"error": str}.
numpy arrays travel as maps {"__ndarray__": True, "data": bytes, "dtype": dtype.str, "shape": [...]} (never
pickle). GET /healthz answers 200. With an api key, clients send `Authorization: Api-Key <key>`; after
`auth_max_failures` wrong keys from one address within `auth_window_s` the server answers that address 429 for
`auth_cooldown_s` (the right key included). `workbench serve --tls-cert/--tls-key` serves the same over `wss://`.

What a client should send (the metadata, this project's; an openpi client ignores them and sends full frames, which
the server resizes itself):
  "image_cameras": [str]   the rig cameras the policy reads; other cameras need not be sent ([]: no images at all,
                           e.g. a replay policy; absent: unknown, send every camera)
  "image_size": int|None   the square side the policy resizes frames to (with padding, aspect kept): a client
                           sends frames already shrunk with `resize_with_pad`, the same pixels as the server's
                           resize (None: send frames as they are)
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any, Mapping

import msgpack
import numpy as np

from drivers.cameras.resize import resize_with_pad

MAX_MESSAGE_BYTES = 32 << 20  # a server's default limit on one request
MAX_IMAGE_SIDE = 4096
MAX_PROMPT_CHARS = 10_000
HEALTH_PATH = "/healthz"  # GET answers 200 (no websocket, no api key)
AUTH_HEADER = "Authorization"
EXTENSION_FIELDS = ("step", "action_prefix", "inference_delay")  # optional, this project's
IMAGE_CAMERAS_KEY = "image_cameras"  # metadata: the cameras the policy reads ([]: none)
IMAGE_SIZE_KEY = "image_size"  # metadata: the square side the policy resizes frames to (None: as they are)


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
    if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
        raise ProtocolError(f"prompt must be a string (at most {MAX_PROMPT_CHARS} characters)")
    if not isinstance(images, Mapping):  # empty: a policy that reads no images (it says so in its metadata)
        raise ProtocolError("images must be a map {camera name: uint8 array}")
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


def observation_message(state: Any, images: Mapping[str, Any], prompt: str, *, seed: int | None = None,
                        step: int | None = None, prefix: Any = None, delay: int = 0) -> dict[str, Any]:
    """An observation map as a client sends it (before packb): the extensions only when given -- `step` when not
    None, `noise_seed` with a seed, `action_prefix` + `inference_delay` with a prefix."""
    obs: dict[str, Any] = {"state": np.asarray(state, dtype=np.float64),
                           "images": {k: np.asarray(v) for k, v in images.items()},
                           "prompt": prompt}
    if step is not None:
        obs["step"] = int(step)
    if seed is not None:
        obs["noise_seed"] = int(seed)
    if prefix is not None:
        obs["action_prefix"] = np.asarray(prefix, dtype=np.float64)
        obs["inference_delay"] = int(delay)
    return obs


def is_loopback(host: str) -> bool:
    """A loopback host (the server then needs no API key; the client warns about no other plaintext URL)."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------ robot-side images
# (resize_with_pad: drivers.cameras.resize, the same function the model's transforms use)
def policy_images(images: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The frames a client sends, from all of the rig's (HxWx3 uint8 by camera) and the server's metadata: only the
    cameras in "image_cameras" (all when the server does not say), each larger than "image_size" shrunk with
    resize_with_pad (a smaller one travels as it is: the server enlarges it, as it would have)."""
    cams = metadata.get(IMAGE_CAMERAS_KEY)
    size = metadata.get(IMAGE_SIZE_KEY)
    if isinstance(cams, (list, tuple)) and all(isinstance(c, str) for c in cams):
        images = {c: images[c] for c in cams if c in images}  # a missing one: the server names it
    out: dict[str, np.ndarray] = {}
    for cam, img in images.items():
        a = np.asarray(img)
        if isinstance(size, int) and not isinstance(size, bool) and size > 0 and a.ndim == 3 and a.shape[2] == 3 \
                and a.dtype == np.uint8 and (a.shape[0] > size or a.shape[1] > size):
            a = resize_with_pad(a, size)
        out[cam] = a
    return out


def api_key_value(api_key: str) -> str:
    """The AUTH_HEADER value a client sends and a server with that key expects."""
    return f"Api-Key {api_key}"


def auth_headers(api_key: str | None) -> dict[str, str] | None:
    """The handshake headers of a client: the api key, if any."""
    return {AUTH_HEADER: api_key_value(api_key)} if api_key else None


__all__ = ["AUTH_HEADER", "EXTENSION_FIELDS", "HEALTH_PATH", "IMAGE_CAMERAS_KEY", "IMAGE_SIZE_KEY", "MAX_IMAGE_SIDE",
           "MAX_MESSAGE_BYTES", "MAX_PROMPT_CHARS", "ProtocolError", "api_key_value", "auth_headers", "is_loopback",
           "observation_message", "packb", "parse_extensions", "parse_observation", "policy_images",
           "unpackb"]
