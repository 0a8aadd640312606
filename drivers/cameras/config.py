"""Per-kind camera settings: plain dataclasses whose field names are the rig TOML keys.

Kept free of cv2/pyrealsense2 imports so the workbench can parse and validate a rig file on a machine that
lacks a backend's library (pyrealsense2 has no ARM wheel).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpenCVCameraConfig:
    name: str
    device: int | str  # V4L2 index, /dev path (e.g. a udev symlink /dev/CAM_HIGH) or a video file (replayed at fps)
    width: int = 640
    height: int = 480
    fps: int = 30
    fourcc: str = "MJPG"  # MJPG keeps four 640x480 streams within USB 2 bandwidth; "" keeps the driver's default
    stall_timeout_s: float = 1.0


@dataclass(frozen=True)
class RealSenseCameraConfig:
    name: str
    serial: str
    width: int = 640
    height: int = 480
    fps: int = 60
    auto_exposure: bool = False  # ALOHA 2 runs with auto exposure off for consistent images across episodes
    stall_timeout_s: float = 1.0


@dataclass(frozen=True)
class SyntheticCameraConfig:
    name: str
    width: int = 640
    height: int = 480
    fps: int = 50
    seed: int = 0  # selects the texture, so several synthetic cameras show different images
    # Fault injection (0 = off): deliver nothing / re-send the same frame after this many seconds,
    # and skip every Nth device frame.
    stall_after_s: float = 0.0
    freeze_after_s: float = 0.0
    drop_every: int = 0
    stall_timeout_s: float = 1.0


CameraConfig = OpenCVCameraConfig | RealSenseCameraConfig | SyntheticCameraConfig
