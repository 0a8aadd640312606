"""RealSenseCamera driven by a real pyrealsense2 software device (same sensor/queue code as a D405 by serial)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2")

from drivers.cameras import RealSenseCameraConfig  # noqa: E402
from drivers.cameras.realsense_camera import RealSenseCamera, StreamMode, find_device  # noqa: E402
from drivers.errors import CameraError, CameraModeError, CameraNotFoundError, CameraStalledError  # noqa: E402

W, H = 160, 120
SERIAL = "000000000001"


class SoftwareD405:
    """A software device shaped like a D405: one sensor with colour profiles and an auto-exposure option."""

    def __init__(self, fmt=rs.format.rgb8, modes=((W, H, 30), (W, H, 60), (320, 240, 30))):
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.name, "Software D405")
        self.device.register_info(rs.camera_info.serial_number, SERIAL)
        self.sensor = self.device.add_sensor("Stereo Module")
        self.profiles = {}
        for uid, (w, h, fps) in enumerate(modes):
            vs = rs.video_stream()
            vs.type, vs.index, vs.uid = rs.stream.color, 0, uid
            vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = w, h, fps, 3, fmt
            intr = rs.intrinsics()
            intr.width, intr.height = w, h
            vs.intrinsics = intr
            self.profiles[(w, h, fps)] = self.sensor.add_video_stream(vs).as_video_stream_profile()
        self.sensor.add_option(rs.option.enable_auto_exposure, rs.option_range(0, 1, 1, 1), True)

    def push(self, number: int, image: np.ndarray, fps: int = 60) -> None:
        f = rs.software_video_frame()
        f.pixels = image
        f.bpp, f.stride = 3, image.shape[1] * 3
        f.timestamp = number * 1000.0 / fps
        f.domain = rs.timestamp_domain.hardware_clock
        f.frame_number = number
        f.profile = self.profiles[(image.shape[1], image.shape[0], fps)]
        self.sensor.on_video_frame(f)


def image_for(n: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = n, 10, 200  # distinct channels, to see RGB/BGR order
    return img


def wait_until(predicate, timeout: float = 2.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        time.sleep(0.01)
    return predicate()


def test_frames_gaps_and_repeats_from_the_device_counter():
    dev = SoftwareD405()
    cam = RealSenseCamera(RealSenseCameraConfig("cam_high", SERIAL, W, H, 60, stall_timeout_s=0.3),
                          device=dev.device)
    dev.sensor.set_option(rs.option.enable_auto_exposure, 1)
    cam.wait_first_frame_s = 2.0
    seen = []
    # connect() waits for the first frame: push it from the "device" while connect is waiting
    pusher = threading.Timer(0.2, lambda: dev.push(1, image_for(1)))
    pusher.start()
    cam.connect()
    try:
        assert dev.sensor.get_option(rs.option.enable_auto_exposure) == 0  # auto_exposure=False applied
        seen.append(cam.latest())
        for n in (2, 3, 5):  # 4 never arrives: one dropped frame
            dev.push(n, image_for(n))
            seen.append(cam.next_frame(seen[-1].seq, timeout=2.0))
        dev.push(5, image_for(5))  # the same device frame again: a repeat, not a new frame
        assert wait_until(lambda: cam.stats().repeated == 1)
        dev.push(6, image_for(6))
        seen.append(cam.next_frame(seen[-1].seq, timeout=2.0))
        assert [f.seq for f in seen] == [1, 2, 3, 4, 5]
        assert [int(f.image[0, 0, 0]) for f in seen] == [1, 2, 3, 5, 6]
        assert tuple(seen[-1].image[0, 0]) == (6, 10, 200)
        assert all(b.t >= a.t for a, b in zip(seen, seen[1:]))
        stats = cam.stats()
        assert (stats.frames, stats.dropped, stats.repeated) == (5, 1, 1)
        # nothing more pushed: a clear stall error after the timeout, not a hang or a stale frame
        assert wait_until(lambda: _stalled(cam), timeout=2.0)
        with pytest.raises(CameraStalledError, match="cam_high.*RealSense 000000000001"):
            cam.latest()
    finally:
        cam.disconnect()
    assert not cam.connected


def test_bgr_stream_is_converted_to_rgb():
    dev = SoftwareD405(fmt=rs.format.bgr8, modes=((W, H, 30),))
    cam = RealSenseCamera(RealSenseCameraConfig("cam_low", SERIAL, W, H, 30), device=dev.device)
    cam.wait_first_frame_s = None  # the test pushes after connecting
    with cam:
        bgr = image_for(7)
        dev.push(7, bgr, fps=30)
        f = cam.next_frame(0, timeout=2.0)
        assert tuple(f.image[0, 0]) == (200, 10, 7)


def test_unsupported_mode_lists_the_supported_ones():
    dev = SoftwareD405()
    cam = RealSenseCamera(RealSenseCameraConfig("cam_left_wrist", SERIAL, 640, 480, 90), device=dev.device)
    assert cam.supported_modes() == [StreamMode(W, H, 30, "rgb8"), StreamMode(W, H, 60, "rgb8"),
                                     StreamMode(320, 240, 30, "rgb8")]
    with pytest.raises(CameraModeError, match=r"cam_left_wrist.*640x480 @ 90.*160x120@30, 160x120@60, 320x240@30"):
        cam.connect()
    assert not cam.connected


def test_connect_without_frames_fails_clearly():
    dev = SoftwareD405()
    cam = RealSenseCamera(RealSenseCameraConfig("cam_high", SERIAL, W, H, 30), device=dev.device)
    cam.wait_first_frame_s = 0.3
    with pytest.raises(CameraStalledError, match="cam_high.*delivered no frame.*USB"):
        cam.connect()
    # the sensor was stopped and closed: it can be opened again
    cam.wait_first_frame_s = None
    with cam:
        dev.push(1, image_for(1), fps=30)
        assert cam.next_frame(0, timeout=2.0).seq == 1


def test_unknown_serial_lists_what_is_connected():
    t0 = time.monotonic()
    with pytest.raises(CameraNotFoundError, match="serial 999 is not connected.*Connected RealSense devices"):
        find_device("999")
    cam = RealSenseCamera(RealSenseCameraConfig("cam_high", "999"))
    with pytest.raises(CameraNotFoundError, match="cam_high: RealSense serial 999"):
        cam.connect()
    with pytest.raises(CameraError, match="not connected"):
        cam.latest()
    assert time.monotonic() - t0 < 10.0


def _stalled(cam) -> bool:
    try:
        cam.latest()
        return False
    except CameraStalledError:
        return True
