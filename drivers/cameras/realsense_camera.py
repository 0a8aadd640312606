"""RealSense colour stream by serial number, through the sensor API of pyrealsense2.

The sensor API (open a stream profile on the colour sensor, start it into a frame queue) is used rather than
rs.pipeline because it works the same on a real device and on an `rs.software_device`, which is how the tests
drive this exact code: the production path differs only in finding the device by serial (`find_device`).
Drops and repeats come from the device's frame counter. Frame.t is the host arrival time (time.monotonic);
the device timestamp is used for nothing else, as its clock domain differs per firmware setting.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import cv2
import numpy as np

from drivers.cameras.capture import GRAB_POLL_S, CaptureCamera, RawFrame
from drivers.cameras.config import RealSenseCameraConfig
from drivers.errors import CameraError, CameraModeError, CameraNotFoundError

if TYPE_CHECKING:
    import pyrealsense2 as rs

QUEUE_CAPACITY = 4  # frames librealsense buffers for the capture thread; overflow shows up as dropped frames


def _rs() -> Any:
    """pyrealsense2, imported on first use: it has no wheel for ARM, where only the other cameras are used."""
    try:
        import pyrealsense2
    except ImportError as exc:
        raise CameraError(f"pyrealsense2 is not installed ({exc}); `pip install pyrealsense2` (x86_64 only)") from None
    return pyrealsense2


@dataclass(frozen=True, order=True)
class StreamMode:
    width: int
    height: int
    fps: int
    format: str  # "rgb8", "bgr8", "yuyv", ...

    def __str__(self) -> str:
        return f"{self.width}x{self.height}@{self.fps} {self.format}"


def connected_devices() -> list[str]:
    """'name serial (USB x.y)' for each RealSense device attached, for error messages and `workbench rig` lists."""
    rs = _rs()
    out = []
    for dev in rs.context().query_devices():
        info = {k: dev.get_info(getattr(rs.camera_info, k)) if dev.supports(getattr(rs.camera_info, k)) else "?"
                for k in ("name", "serial_number", "usb_type_descriptor")}
        out.append(f"{info['name']} serial {info['serial_number']} (USB {info['usb_type_descriptor']})")
    return out


def find_device(serial: str) -> "rs.device":
    """The attached device with this serial number, or a CameraNotFoundError listing the ones attached."""
    rs = _rs()
    for dev in rs.context().query_devices():
        if dev.supports(rs.camera_info.serial_number) and dev.get_info(rs.camera_info.serial_number) == serial:
            return dev
    present = connected_devices()
    listing = "; ".join(present) if present else "none (check the USB 3 cable; `rs-enumerate-devices` lists them)"
    raise CameraNotFoundError(f"RealSense serial {serial} is not connected. Connected RealSense devices: {listing}. "
                              f"Fix the `serial` key in the rig config.")


def colour_sensor(device: "rs.device") -> "rs.sensor":
    """The sensor that streams colour (on a D405 that is the stereo module, so is_color_sensor() is not enough)."""
    rs = _rs()
    for sensor in device.query_sensors():
        if sensor.is_color_sensor():
            return sensor
    for sensor in device.query_sensors():
        if any(p.stream_type() == rs.stream.color for p in sensor.get_stream_profiles()):
            return sensor
    raise CameraModeError("this RealSense device has no colour stream")


class RealSenseCamera(CaptureCamera):
    """A RealSense colour stream. `device` injects an already-found rs.device (a software device in tests);
    without it, connect() looks the device up by `config.serial`."""

    PREFERRED_FORMATS = ("rgb8", "bgr8")  # delivered as-is / converted once in the capture thread

    def __init__(self, config: RealSenseCameraConfig, device: "rs.device | None" = None,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(config.name, config.width, config.height, config.fps, config.stall_timeout_s, clock)
        self.config = config
        self._injected = device
        self._device: Any = None
        self._sensor: Any = None
        self._queue: Any = None
        self._bgr = False

    def describe(self) -> str:
        return f"RealSense {self.config.serial}"

    def _stall_hint(self) -> str:
        usb = self._usb_type()
        slow = f" It is on USB {usb}: use a USB 3 port and cable." if usb.startswith("2") else ""
        return (f"check the USB cable and that no other program (realsense-viewer, another workbench) uses "
                f"the camera; too many cameras on one hub/controller also stall streams.{slow}")

    def _usb_type(self) -> str:
        rs = _rs()
        dev = self._device
        try:
            if dev is not None and dev.supports(rs.camera_info.usb_type_descriptor):
                return str(dev.get_info(rs.camera_info.usb_type_descriptor))
        except RuntimeError:
            pass
        return ""

    def supported_modes(self) -> list[StreamMode]:
        """The colour stream modes the device offers (needs the device: found by serial unless injected)."""
        rs = _rs()
        device = self._device or self._injected or find_device(self.config.serial)
        return sorted({self._mode_of(p) for p in self._colour_profiles(colour_sensor(device))}
                      , key=lambda m: (m.width, m.height, m.fps, m.format))

    @staticmethod
    def _colour_profiles(sensor: Any) -> list[Any]:
        rs = _rs()
        return [p.as_video_stream_profile() for p in sensor.get_stream_profiles()
                if p.stream_type() == rs.stream.color and p.is_video_stream_profile()]

    @staticmethod
    def _mode_of(profile: Any) -> StreamMode:
        return StreamMode(profile.width(), profile.height(), profile.fps(), str(profile.format()).split(".")[-1])

    def _choose_profile(self, sensor: Any) -> Any:
        profiles = self._colour_profiles(sensor)
        for fmt in self.PREFERRED_FORMATS:
            for p in profiles:
                m = self._mode_of(p)
                if (m.width, m.height, m.fps, m.format) == (self.width, self.height, self.fps, fmt):
                    return p
        modes = sorted({(m.width, m.height, m.fps) for m in map(self._mode_of, profiles)
                        if m.format in self.PREFERRED_FORMATS})
        listing = ", ".join(f"{w}x{h}@{f}" for w, h, f in modes) or "none in rgb8/bgr8"
        usb = self._usb_type()
        usb_note = f" (the camera is on USB {usb}, which limits the modes: use a USB 3 port)" if usb.startswith("2") else ""
        raise CameraModeError(f"{self.name} ({self.describe()}): {self.width}x{self.height} @ {self.fps} fps colour "
                              f"is not supported{usb_note}. Supported colour modes: {listing}")

    def _open(self) -> None:
        rs = _rs()
        if self._injected is not None:
            self._device = self._injected
        else:
            try:
                self._device = find_device(self.config.serial)
            except CameraNotFoundError as exc:
                raise CameraNotFoundError(f"{self.name}: {exc}") from None
        try:
            sensor = colour_sensor(self._device)
        except CameraModeError as exc:
            raise CameraModeError(f"{self.name} ({self.describe()}): {exc}") from None
        profile = self._choose_profile(sensor)
        if sensor.supports(rs.option.enable_auto_exposure):
            try:
                sensor.set_option(rs.option.enable_auto_exposure, 1.0 if self.config.auto_exposure else 0.0)
            except RuntimeError as exc:
                raise CameraError(f"{self.name} ({self.describe()}): cannot set auto exposure: {exc}") from None
        queue = rs.frame_queue(QUEUE_CAPACITY)
        try:
            sensor.open(profile)
        except RuntimeError as exc:
            raise CameraError(f"{self.name} ({self.describe()}): cannot open the colour stream: {exc}; "
                              f"is another program using the camera?") from None
        try:
            sensor.start(queue)
        except RuntimeError as exc:
            sensor.close()
            raise CameraError(f"{self.name} ({self.describe()}): cannot start streaming: {exc}; "
                              f"{self._stall_hint()}") from None
        self._sensor, self._queue = sensor, queue
        self._bgr = self._mode_of(profile).format == "bgr8"

    def _close(self) -> None:
        sensor, self._sensor, self._queue = self._sensor, None, None
        if sensor is not None:
            try:
                sensor.stop()
            finally:
                sensor.close()

    def _grab(self) -> RawFrame | None:
        ok, frame = self._queue.try_wait_for_frame(int(GRAB_POLL_S * 1000))
        if not ok:
            return None
        now = self._clock()
        video = frame.as_video_frame()
        # Copy out of librealsense's buffer: it is recycled once the frame object is released.
        data = np.asanyarray(video.get_data())
        image = cv2.cvtColor(data, cv2.COLOR_BGR2RGB) if self._bgr else np.array(data, copy=True)
        if image.shape != (self.height, self.width, 3):
            raise CameraModeError(f"{self.name} ({self.describe()}): delivered a frame of shape {image.shape}")
        return RawFrame(image=image, t=now, device_seq=int(frame.get_frame_number()),
                        device_time=frame.get_timestamp() / 1000.0)
