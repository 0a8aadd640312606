"""The shared capture-thread base: every camera backend only opens, grabs one raw frame, and closes.

Everything else lives here once: the thread's lifecycle, the latest frame under a lock, the sequence number,
fps over a sliding window, dropped/repeated accounting, stall detection and a clean stop. Backends stay small
and behave identically, so the recorder sees the same semantics from a UVC webcam, a RealSense and a test feed.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np

from drivers.cameras.base import CameraStats, Frame
from drivers.errors import CameraError, CameraStalledError

log = logging.getLogger(__name__)

FPS_WINDOW_S = 1.0  # "measured over the last ~second" (CameraStats.fps)
GRAB_POLL_S = 0.1  # backends return from _grab at least this often so stop() is prompt


@dataclass(frozen=True)
class RawFrame:
    """What a backend hands the base: the image plus whatever the device says about the frame's identity.

    `device_seq` is the device's own frame counter (RealSense frame number, file frame index) when there is one;
    otherwise `device_time` (device timestamp, seconds) is used to infer drops from the interval, and failing
    both, the host arrival time `t`.
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB, owned by the caller (not a view into a recycled driver buffer)
    t: float  # host monotonic time the frame arrived
    device_seq: int | None = None
    device_time: float | None = None


class FrameAccounting:
    """Classifies each delivered device frame as new, repeated, or new-after-a-gap (counting the dropped ones).

    Pure bookkeeping (no threads, no clocks) so the rules can be tested on their own:
    - a device frame counter that jumps by k > 1 means k-1 frames were dropped; the same counter again is a repeat;
      a counter going backwards (device restarted) re-bases without counting anything;
    - without a counter, an interval over 1.5 nominal periods means round(interval/period) - 1 frames dropped,
      and an identical timestamp is a repeat.
    """

    def __init__(self, fps: float):
        self.period = 1.0 / fps
        self.dropped = 0
        self.repeated = 0
        self._last_seq: int | None = None
        self._last_time: float | None = None

    def classify(self, device_seq: int | None, time_s: float) -> bool:
        """Returns True when the frame is new (to be published), False for a repeat."""
        if device_seq is not None:
            last = self._last_seq
            self._last_seq = device_seq
            self._last_time = time_s
            if last is None or device_seq < last:
                return True
            if device_seq == last:
                self.repeated += 1
                return False
            self.dropped += device_seq - last - 1
            return True
        last_t = self._last_time
        if last_t is not None and time_s == last_t:
            self.repeated += 1
            return False
        self._last_time = time_s
        if last_t is not None and time_s > last_t:
            interval = time_s - last_t
            if interval > 1.5 * self.period:
                self.dropped += max(0, round(interval / self.period) - 1)
        return True


class CaptureCamera(ABC):
    """A Camera (drivers.cameras.base.Camera) whose frames come from its own capture thread.

    Subclasses implement `_open` (raise CameraError naming the device and the fix), `_grab` (block at most
    ~GRAB_POLL_S, return a RawFrame or None when nothing arrived) and `_close`, plus `describe()` for messages.
    """

    # connect() waits this long for the first frame so "opened but streams nothing" (USB bandwidth, wrong mode)
    # fails at connect with a message, not later as a stall in the middle of a recording.
    wait_first_frame_s: float | None = 5.0

    def __init__(self, name: str, width: int, height: int, fps: int, stall_timeout_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        if width <= 0 or height <= 0 or fps <= 0:
            raise CameraError(f"{name}: width, height and fps must be positive (got {width}x{height}@{fps})")
        if stall_timeout_s <= 0:
            raise CameraError(f"{name}: stall_timeout_s must be positive (got {stall_timeout_s})")
        self.name, self.width, self.height, self.fps = name, int(width), int(height), int(fps)
        self.stall_timeout_s = float(stall_timeout_s)
        self._clock = clock
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._last_new_t = 0.0
        self._connected_t = 0.0
        self._seq = 0
        self._times: collections.deque[float] = collections.deque()
        self._acct = FrameAccounting(fps)
        self._error: CameraError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- backend hooks -------------------------------------------------------------------------------------
    @abstractmethod
    def describe(self) -> str:
        """The device in words for error messages, e.g. "OpenCV /dev/video0" or "RealSense 123456"."""

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _grab(self) -> RawFrame | None: ...

    @abstractmethod
    def _close(self) -> None: ...

    def _stall_hint(self) -> str:
        """What to check when the stream stalls; backends add device-specific advice."""
        return "check the cable and that no other program uses the camera"

    # --- Camera protocol ------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._error is None

    def connect(self) -> None:
        if self.connected:
            return
        self.disconnect()  # after a stream failure: release the old device before opening it again
        self._reset()
        self._open()
        self._stop.clear()
        self._connected_t = self._clock()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()
        if self.wait_first_frame_s is None:
            return
        deadline = self._clock() + self.wait_first_frame_s
        with self._cond:
            while self._latest is None and self._error is None and self._clock() < deadline:
                self._cond.wait(timeout=min(0.05, max(0.0, deadline - self._clock())))
            error, got = self._error, self._latest is not None
        if error is not None or not got:
            self.disconnect()
            if error is not None:
                raise error
            raise CameraStalledError(
                f"{self.name} ({self.describe()}) opened but delivered no frame within {self.wait_first_frame_s:g} s; "
                f"{self._stall_hint()}")

    def disconnect(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=2.0 + GRAB_POLL_S)
        if thread.is_alive():
            # The driver is stuck inside a read: closing it under the thread's feet could crash, so leave it.
            log.warning("%s: capture thread did not stop within 2 s; leaving the device open", self.name)
            return
        try:
            self._close()
        except Exception as exc:  # closing a vanished device must not mask why we are disconnecting
            log.warning("%s: error while closing %s: %s", self.name, self.describe(), exc)

    def latest(self) -> Frame:
        with self._cond:
            if self._error is not None:
                raise self._error
            if self._thread is None:
                raise CameraError(f"{self.name} ({self.describe()}) is not connected; call connect() first")
            if self._latest is None:  # only reachable when connect() did not wait for a first frame
                deadline = self._connected_t + self.stall_timeout_s
                while self._latest is None and self._error is None and self._clock() < deadline:
                    self._cond.wait(timeout=max(0.0, deadline - self._clock()))
                if self._error is not None:
                    raise self._error
                if self._latest is None:
                    raise CameraStalledError(
                        f"{self.name} ({self.describe()}): no frame within {self.stall_timeout_s:g} s of connecting; "
                        f"{self._stall_hint()}")
            age = self._clock() - self._last_new_t
            if age > self.stall_timeout_s:
                frozen = (f" (it re-sent the same frame {self._acct.repeated} times: the sensor looks frozen)"
                          if self._acct.repeated else "")
                raise CameraStalledError(
                    f"{self.name} ({self.describe()}): no new frame for {age:.2f} s "
                    f"(stall timeout {self.stall_timeout_s:g} s){frozen}; {self._stall_hint()}")
            return self._latest

    def next_frame(self, after_seq: int, timeout: float | None = None) -> Frame:
        """Blocks until a frame newer than `after_seq` arrives (for consumers that want every frame, and tests)."""
        timeout = self.stall_timeout_s if timeout is None else timeout
        deadline = self._clock() + timeout
        with self._cond:
            while (self._latest is None or self._latest.seq <= after_seq) and self._error is None:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise CameraStalledError(
                        f"{self.name} ({self.describe()}): no frame after seq {after_seq} within {timeout:g} s; "
                        f"{self._stall_hint()}")
                self._cond.wait(timeout=remaining)
            if self._error is not None:
                raise self._error
            return self._latest  # type: ignore[return-value]

    def stats(self) -> CameraStats:
        with self._cond:
            now = self._clock()
            recent = [t for t in self._times if t >= now - FPS_WINDOW_S]
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 and recent[-1] > recent[0] else 0.0
            return CameraStats(frames=self._seq, fps=fps, dropped=self._acct.dropped, repeated=self._acct.repeated)

    # --- the capture thread ---------------------------------------------------------------------------------
    def _reset(self) -> None:
        with self._cond:
            self._latest, self._error, self._seq = None, None, 0
            self._times.clear()
            self._acct = FrameAccounting(self.fps)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self._grab()
            except CameraError as exc:
                self._fail(exc)
                return
            except Exception as exc:  # a driver exception type we do not know: still a camera failure
                self._fail(CameraError(f"{self.name} ({self.describe()}): capture failed: {exc}"))
                return
            if raw is not None:
                self._publish(raw)

    def _fail(self, error: CameraError) -> None:
        log.error("%s", error)
        with self._cond:
            self._error = error
            self._cond.notify_all()

    def _publish(self, raw: RawFrame) -> None:
        with self._cond:
            time_s = raw.device_time if raw.device_time is not None else raw.t
            if not self._acct.classify(raw.device_seq, time_s):
                return
            self._seq += 1
            self._latest = Frame(image=raw.image, t=raw.t, seq=self._seq)
            self._last_new_t = self._clock()
            self._times.append(raw.t)
            while self._times and self._times[0] < raw.t - 2 * FPS_WINDOW_S:
                self._times.popleft()
            self._cond.notify_all()

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.describe()}, {self.width}x{self.height}@{self.fps})"
