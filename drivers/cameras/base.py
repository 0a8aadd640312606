"""The camera contract: a capture thread per device, the latest frame with its capture time and sequence number."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

ALOHA_CAMERAS: tuple[str, ...] = ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    t: float  # capture time on the rig clock (monotonic seconds on hardware, sim time in simulation)
    seq: int  # increases by one per frame the device delivered


@dataclass(frozen=True)
class CameraStats:
    frames: int  # frames received
    fps: float  # measured over the last ~second
    dropped: int  # frames the device skipped (gaps in its frame counter / time)
    repeated: int  # frames delivered twice (same device frame)


@runtime_checkable
class Camera(Protocol):
    name: str
    width: int
    height: int
    fps: int

    @property
    def connected(self) -> bool: ...

    def connect(self) -> None:
        """Open the device and start capturing; raises CameraError with the fix when it cannot."""

    def disconnect(self) -> None: ...

    def latest(self) -> Frame:
        """Newest frame; raises CameraStalledError when none arrived within the stall timeout."""

    def stats(self) -> CameraStats: ...
