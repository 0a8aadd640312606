"""Simulated cameras behind `drivers.cameras.base.Camera`: rendered on demand at the sim's current tick.

No capture thread: `latest()` renders in the calling thread (normally the control loop, which owns the GL
context) the first time it is asked in a tick and returns the cached image for further calls in that tick.
Frames carry sim time and seq = sim tick, so a consumer that skips ticks sees gaps in seq.
"""
from __future__ import annotations

from collections import deque

from drivers.cameras.base import ALOHA_CAMERAS, CameraStats, Frame
from drivers.errors import CameraError
from drivers.sim.aloha_sim import AlohaSim

# ALOHA camera name -> MuJoCo camera in gym-aloha's scene. cam_low has no exact counterpart: `angle` is the
# static front view (from the operator's side, 0.6 m up, looking at the table), the closest to ALOHA's low
# front camera. Other MuJoCo cameras (front_close, left_pillar, right_pillar) can be used by their own names.
CAMERA_MAP: dict[str, str] = {
    "cam_high": "top",
    "cam_low": "angle",
    "cam_left_wrist": "left_wrist",
    "cam_right_wrist": "right_wrist",
}
assert set(CAMERA_MAP) == set(ALOHA_CAMERAS)

DEFAULT_IMAGE_SIZE = (240, 320)  # (height, width): ~5-8 ms per image with "fast" quality on OSMesa


class SimCamera:
    def __init__(self, sim: AlohaSim, name: str, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
                 mujoco_camera: str | None = None, fps: int = 50):
        self.sim = sim
        self.name = name
        self.mujoco_camera = mujoco_camera or CAMERA_MAP.get(name, name)
        if self.mujoco_camera not in sim.camera_names:
            raise CameraError(
                f"sim camera {name!r}: the model has no camera {self.mujoco_camera!r}; "
                f"use one of {sorted(CAMERA_MAP)} or {sim.camera_names}")
        self.height, self.width = int(image_size[0]), int(image_size[1])
        self.fps = fps  # at most one new frame per 50 Hz tick
        self._connected = False
        self._frames = 0
        self._repeated = 0
        self._last: Frame | None = None
        self._recent: deque[float] = deque(maxlen=256)  # sim times of recent new frames

    @property
    def connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        """Marks the camera live. The renderer is made lazily by the first latest() in the thread that uses it."""
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    def latest(self) -> Frame:
        """The frame of the current tick (rendered now if this tick has none yet). Never stalls."""
        if not self._connected:
            raise CameraError(f"sim camera {self.name}: not connected (call connect())")
        last = self._last
        if last is not None and last.seq == self.sim.tick:
            self._repeated += 1
            return last
        image, tick = self.sim.render(self.mujoco_camera, self.height, self.width)
        frame = Frame(image=image, t=tick * self.sim.dt, seq=tick)
        self._last = frame
        self._frames += 1
        self._recent.append(frame.t)
        return frame

    def stats(self) -> CameraStats:
        """frames: distinct ticks delivered; fps: per second of *sim* time over the last ~1 s of sim time;
        dropped: always 0 (a sim camera renders whatever tick it is asked for); repeated: latest() calls
        answered from the same tick's frame (0 for a loop that asks once per tick)."""
        fps = 0.0
        if len(self._recent) >= 2:
            newest = self._recent[-1]
            window = [t for t in self._recent if newest - t <= 1.0]
            span = window[-1] - window[0]
            fps = (len(window) - 1) / span if span > 0 else 0.0
        return CameraStats(frames=self._frames, fps=fps, dropped=0, repeated=self._repeated)
