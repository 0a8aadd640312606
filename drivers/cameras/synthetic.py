"""Cameras without hardware: a synthetic stream with fault injection, and a feed that tests push frames into.

SyntheticCamera drives the recorder benchmark (4 x 640x480 at 50 Hz) and the `virtual` rig, so a frame must
cost well under a millisecond on a 2-core machine and still look like camera data to a compressor: it is a
window into a precomputed textured image (smooth structure plus sensor-like noise) that moves with the frame
index, plus the device frame number stamped as 32 black/white 8x8 blocks in the top-left corner
(`read_stamp` decodes it, so tests can check order end to end through a recording).
"""
from __future__ import annotations

import functools
import queue
import time
from typing import Callable

import cv2
import numpy as np

from drivers.cameras.capture import GRAB_POLL_S, CaptureCamera, RawFrame
from drivers.cameras.config import SyntheticCameraConfig
from drivers.errors import CameraError

STAMP_BITS = 32
STAMP_BLOCK = 8  # pixels per bit, so the stamp survives JPEG/H.264 compression


@functools.lru_cache(maxsize=8)
def make_texture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A (2H, 2W, 3) RGB texture: low-frequency colour blobs + edges + per-pixel noise (compresses like a scene)."""
    rng = np.random.default_rng(seed)
    h2, w2 = 2 * height, 2 * width
    coarse = rng.integers(0, 256, size=(max(2, h2 // 32), max(2, w2 // 32), 3), dtype=np.uint8)
    tex = cv2.resize(coarse, (w2, h2), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    checker = np.outer(np.sign(np.sin(np.arange(h2) / 17.0)), np.sign(np.sin(np.arange(w2) / 23.0)))
    tex += (40 * checker).astype(np.int16)[..., None]  # hard edges
    tex += rng.integers(-6, 7, size=tex.shape, dtype=np.int16)  # sensor noise
    texture = np.clip(tex, 0, 255).astype(np.uint8)
    texture.flags.writeable = False  # shared between cameras via the cache
    return texture


def stamp(image: np.ndarray, number: int) -> None:
    """Writes `number` (mod 2**32) into the top-left STAMP_BITS blocks of `image`, in place."""
    bits = (number >> np.arange(STAMP_BITS)) & 1
    row = np.repeat((bits * 255).astype(np.uint8), STAMP_BLOCK)
    image[:STAMP_BLOCK, : STAMP_BITS * STAMP_BLOCK, :] = row[None, :, None]


def read_stamp(image: np.ndarray) -> int:
    """The number `stamp` wrote (block centres thresholded, so mild compression artefacts do not matter)."""
    c = STAMP_BLOCK // 2
    centres = image[c, c : STAMP_BITS * STAMP_BLOCK : STAMP_BLOCK, :].mean(axis=-1)
    bits = (centres > 127).astype(np.int64)
    return int((bits << np.arange(STAMP_BITS)).sum())


class SyntheticFrames:
    """Frame generator shared by SyntheticCamera and benchmarks: frame k is a moving window plus its stamp."""

    def __init__(self, width: int, height: int, seed: int = 0):
        if width < STAMP_BITS * STAMP_BLOCK or height < STAMP_BLOCK:
            raise CameraError(f"synthetic frames need at least {STAMP_BITS * STAMP_BLOCK}x{STAMP_BLOCK} pixels")
        self.width, self.height = width, height
        self.texture = make_texture(width, height, seed)

    def frame(self, k: int) -> np.ndarray:
        x = (k * 7) % self.width
        y = (k * 3) % self.height
        image = self.texture[y : y + self.height, x : x + self.width].copy()
        stamp(image, k)
        return image


class SyntheticCamera(CaptureCamera):
    """A paced synthetic stream with a device frame counter, so drops and repeats are accounted like hardware.

    If the capture thread wakes more than a period late (overloaded CPU), the ticks it missed are skipped and
    show up as dropped, as they would on a real camera. Faults (config or `inject`): stall = deliver nothing;
    freeze = re-send the last frame (same device frame number, counted as repeated; latest() then raises
    CameraStalledError after the stall timeout); drop_every = N skips every Nth device frame.
    """

    def __init__(self, config: SyntheticCameraConfig, clock: Callable[[], float] = time.monotonic):
        super().__init__(config.name, config.width, config.height, config.fps, config.stall_timeout_s, clock)
        self.config = config
        self._frames = SyntheticFrames(config.width, config.height, config.seed)
        self._stall = False
        self._freeze = False
        self._drop_every = int(config.drop_every)
        self._t0 = 0.0
        self._tick = 0
        self._last: RawFrame | None = None

    def describe(self) -> str:
        return f"synthetic {self.width}x{self.height}@{self.fps}"

    def inject(self, *, stall: bool | None = None, freeze: bool | None = None, drop_every: int | None = None) -> None:
        """Switches faults on or off while streaming (None leaves that fault as it is)."""
        if stall is not None:
            self._stall = stall
        if freeze is not None:
            self._freeze = freeze
        if drop_every is not None:
            self._drop_every = int(drop_every)

    def _open(self) -> None:
        self._stall = self._freeze = False
        self._drop_every = int(self.config.drop_every)
        self._t0 = self._clock()
        self._tick = 0
        self._last = None

    def _close(self) -> None:
        pass

    def _grab(self) -> RawFrame | None:
        due = self._t0 + self._tick / self.fps
        now = self._clock()
        if now < due:
            time.sleep(min(due - now, GRAB_POLL_S))
            now = self._clock()
            if now < due:
                return None
        late_ticks = int((now - self._t0) * self.fps)
        if late_ticks > self._tick:  # woke a whole period late or more: those frames were never captured
            self._tick = late_ticks
        k = self._tick
        self._tick += 1
        elapsed = now - self._t0
        cfg = self.config
        if self._stall or (cfg.stall_after_s > 0 and elapsed >= cfg.stall_after_s):
            return None
        if self._freeze or (cfg.freeze_after_s > 0 and elapsed >= cfg.freeze_after_s):
            if self._last is not None:
                return RawFrame(image=self._last.image, t=now, device_seq=self._last.device_seq)
        if self._drop_every > 0 and k % self._drop_every == self._drop_every - 1:
            return None
        self._last = RawFrame(image=self._frames.frame(k), t=now, device_seq=k)
        return self._last


class FeedCamera(CaptureCamera):
    """A camera whose frames the caller pushes: for tests of consumers (recorder, UI) that need exact frames.

    Pushed frames go through the same thread and accounting as hardware: pass `frame_number` to exercise
    drop/repeat counting, or leave it out to number frames consecutively. connect() does not wait for a frame.
    """

    wait_first_frame_s = None

    def __init__(self, name: str = "feed", width: int = 640, height: int = 480, fps: int = 30,
                 stall_timeout_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        super().__init__(name, width, height, fps, stall_timeout_s, clock)
        self._queue: queue.Queue[RawFrame] = queue.Queue()
        self._next_number = 0

    def describe(self) -> str:
        return "test feed"

    def push(self, image: np.ndarray, frame_number: int | None = None, t: float | None = None) -> None:
        if self._thread is None:
            raise CameraError(f"{self.name}: push() before connect()")
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise CameraError(f"{self.name}: expected a ({self.height}, {self.width}, 3) uint8 image, "
                              f"got {image.shape} {image.dtype}")
        if frame_number is None:
            frame_number = self._next_number
        self._next_number = frame_number + 1
        self._queue.put(RawFrame(image=image, t=self._clock() if t is None else t, device_seq=frame_number))

    def _open(self) -> None:
        self._queue = queue.Queue()
        self._next_number = 0

    def _close(self) -> None:
        pass

    def _grab(self) -> RawFrame | None:
        try:
            return self._queue.get(timeout=GRAB_POLL_S)
        except queue.Empty:
            return None
