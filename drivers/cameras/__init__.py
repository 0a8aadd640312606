"""Cameras: OpenCV/UVC, RealSense and simulated, behind `drivers.cameras.base.Camera`.

Backends (`opencv_camera`, `realsense_camera`, `synthetic`) share one capture-thread base (`capture`); build
them with `make_camera(kind, **settings)` from the rig config's keys (`config` holds the per-kind fields).
"""
from drivers.cameras.base import ALOHA_CAMERAS, Camera, CameraStats, Frame
from drivers.cameras.config import (CameraConfig, OpenCVCameraConfig, RealSenseCameraConfig,
                                    SyntheticCameraConfig)
from drivers.cameras.factory import CONFIG_TYPES, camera_config, make_camera

__all__ = [
    "ALOHA_CAMERAS", "Camera", "CameraStats", "Frame", "CameraConfig", "OpenCVCameraConfig",
    "RealSenseCameraConfig", "SyntheticCameraConfig", "CONFIG_TYPES", "camera_config", "make_camera",
]
