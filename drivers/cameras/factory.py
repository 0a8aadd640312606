"""Build a camera from a kind and the rig config's keys: the one place that maps names to backends.

The backend modules are imported only when that kind is built, so a rig of UVC cameras works without
pyrealsense2 installed.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from drivers.cameras.capture import CaptureCamera
from drivers.cameras.config import (CameraConfig, OpenCVCameraConfig, RealSenseCameraConfig,
                                    SyntheticCameraConfig)
from drivers.errors import CameraError

CONFIG_TYPES: dict[str, type] = {
    "opencv": OpenCVCameraConfig,
    "realsense": RealSenseCameraConfig,
    "synthetic": SyntheticCameraConfig,
}


def camera_config(kind: str, **settings: Any) -> CameraConfig:
    """The config dataclass for `kind`; unknown or missing keys are a CameraError that lists the valid ones."""
    name = settings.get("name", "?")
    if kind == "sim":
        raise CameraError(f"{name}: simulated cameras are rendered by the simulator rig (drivers.sim), not built here")
    cls = CONFIG_TYPES.get(kind)
    if cls is None:
        raise CameraError(f"{name}: unknown camera kind {kind!r}; one of {', '.join(CONFIG_TYPES)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - set(fields))
    missing = sorted(n for n, f in fields.items() if n not in settings
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if unknown or missing:
        problems = ([f"unknown keys {', '.join(unknown)}"] if unknown else []) + (
            [f"missing keys {', '.join(missing)}"] if missing else [])
        raise CameraError(f"{name}: {kind} camera: {'; '.join(problems)}; valid keys: {', '.join(fields)}")
    return cls(**settings)


def make_camera(kind_or_config: str | CameraConfig, **settings: Any) -> CaptureCamera:
    """`make_camera("opencv", name="cam_high", device="/dev/CAM_HIGH", fps=30)` or `make_camera(config)`."""
    config = camera_config(kind_or_config, **settings) if isinstance(kind_or_config, str) else kind_or_config
    if settings and not isinstance(kind_or_config, str):
        raise TypeError("pass either a config object or a kind with settings, not both")
    if isinstance(config, OpenCVCameraConfig):
        from drivers.cameras.opencv_camera import OpenCVCamera
        return OpenCVCamera(config)
    if isinstance(config, RealSenseCameraConfig):
        from drivers.cameras.realsense_camera import RealSenseCamera
        return RealSenseCamera(config)
    if isinstance(config, SyntheticCameraConfig):
        from drivers.cameras.synthetic import SyntheticCamera
        return SyntheticCamera(config)
    raise TypeError(f"not a camera config: {config!r}")
