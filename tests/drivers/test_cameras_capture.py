"""The shared capture base, the synthetic and feed cameras, and the factory (no hardware needed)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from drivers.cameras import (Camera, OpenCVCameraConfig, RealSenseCameraConfig, SyntheticCameraConfig,
                             camera_config, make_camera)
from drivers.cameras.capture import FrameAccounting
from drivers.cameras.synthetic import FeedCamera, SyntheticCamera, SyntheticFrames, read_stamp, stamp
from drivers.errors import CameraError, CameraStalledError


def collect(cam, seconds: float) -> list:
    """Every frame the camera publishes during `seconds` (via next_frame, so none are missed)."""
    frames, seq, end = [], 0, time.monotonic() + seconds
    while time.monotonic() < end:
        f = cam.next_frame(seq, timeout=1.0)
        frames.append(f)
        seq = f.seq
    return frames


def wait_until(predicate, timeout: float = 2.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# --- accounting rules --------------------------------------------------------------------------------------

def test_accounting_by_device_counter():
    acct = FrameAccounting(fps=30)
    news = [acct.classify(n, 0.0) for n in (10, 11, 12, 15, 15, 16, 3, 4)]
    assert news == [True, True, True, True, False, True, True, True]
    assert acct.dropped == 2  # 13, 14; the restart at 3 counts nothing
    assert acct.repeated == 1


def test_accounting_by_interval():
    acct = FrameAccounting(fps=50)  # period 20 ms
    news = [acct.classify(None, t) for t in (0.0, 0.020, 0.041, 0.100, 0.100, 0.125)]
    assert news == [True, True, True, True, False, True]
    assert acct.dropped == 2  # 41 -> 100 ms is ~3 periods: two frames missing; 25 ms jitter is not a drop
    assert acct.repeated == 1


# --- synthetic frames -------------------------------------------------------------------------------------

def test_synthetic_frames_differ_carry_their_number_and_are_cheap():
    gen = SyntheticFrames(640, 480, seed=1)
    a, b = gen.frame(1), gen.frame(2)
    assert a.shape == (480, 640, 3) and a.dtype == np.uint8
    assert (a != b).mean() > 0.5
    assert read_stamp(a) == 1 and read_stamp(gen.frame(123_456)) == 123_456
    assert len(np.unique(a[100:200, 300:400, 0])) > 30  # textured, not a flat fill
    n = 200
    t0 = time.perf_counter()
    for k in range(n):
        gen.frame(k)
    per_frame = (time.perf_counter() - t0) / n
    assert per_frame < 0.02  # sanity bound only; measured ~0.05 ms on the 2-core CI machine


def test_stamp_roundtrip_survives_jpeg():
    import cv2
    image = np.full((48, 320, 3), 90, np.uint8)
    stamp(image, 0xBEEF)
    ok, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok and read_stamp(cv2.imdecode(jpg, cv2.IMREAD_COLOR)) == 0xBEEF


# --- synthetic camera -------------------------------------------------------------------------------------

def test_synthetic_camera_streams_at_about_fps():
    cam = SyntheticCamera(SyntheticCameraConfig("cam_high", fps=50))
    assert isinstance(cam, Camera)
    with cam:
        assert cam.connected
        frames = collect(cam, 1.0)
        stats = cam.stats()
    assert not cam.connected
    assert len(frames) >= 10  # generous: ~50 expected
    seqs = [f.seq for f in frames]  # next_frame returns the newest, so a slow test thread may skip some
    assert seqs == sorted(set(seqs)) and seqs[0] >= 1
    numbers = [read_stamp(f.image) for f in frames]
    assert numbers == sorted(numbers)
    assert all(b > a for a, b in zip([f.t for f in frames], [f.t for f in frames[1:]]))
    assert 10 < stats.fps < 100
    assert stats.frames >= len(frames)
    assert stats.repeated == 0  # (dropped is not asserted: an overloaded CI machine may really skip ticks)


def test_synthetic_drop_every_n_is_counted():
    cam = SyntheticCamera(SyntheticCameraConfig("cam_low", width=320, height=240, fps=100, drop_every=4))
    with cam:
        frames = collect(cam, 0.6)
        stats = cam.stats()
    numbers = [read_stamp(f.image) for f in frames]
    assert all(n % 4 != 3 for n in numbers)  # every 4th device frame never arrives
    assert stats.dropped >= stats.frames // 4 - 1 > 0


def test_synthetic_stall_raises_then_recovers():
    cam = SyntheticCamera(SyntheticCameraConfig("cam_left_wrist", width=320, height=240, fps=50,
                                                stall_timeout_s=0.3))
    with cam:
        cam.latest()
        cam.inject(stall=True)
        t0 = time.monotonic()
        assert wait_until(lambda: _stalled(cam), timeout=2.0)
        assert time.monotonic() - t0 < 1.5  # clear error after the timeout, not a hang
        with pytest.raises(CameraStalledError, match="cam_left_wrist.*no new frame"):
            cam.latest()
        cam.inject(stall=False)
        assert wait_until(lambda: not _stalled(cam), timeout=2.0)
        assert cam.stats().fps > 0


def test_synthetic_freeze_counts_repeats_and_reports_frozen():
    cam = SyntheticCamera(SyntheticCameraConfig("cam_right_wrist", width=320, height=240, fps=50,
                                                stall_timeout_s=0.3))
    with cam:
        before = cam.latest()
        cam.inject(freeze=True)
        assert wait_until(lambda: cam.stats().repeated >= 5)
        with pytest.raises(CameraStalledError, match="frozen"):
            wait_until(lambda: _stalled(cam))
            cam.latest()
        assert cam.stats().frames <= before.seq + 2


def test_synthetic_config_faults_start_after_delay():
    cam = SyntheticCamera(SyntheticCameraConfig("cam_high", width=320, height=240, fps=50, stall_after_s=0.3,
                                                stall_timeout_s=0.3))
    with cam:
        cam.latest()
        assert wait_until(lambda: _stalled(cam), timeout=3.0)


def _stalled(cam) -> bool:
    try:
        cam.latest()
        return False
    except CameraStalledError:
        return True


# --- feed camera (for consumers' tests) -------------------------------------------------------------------

def test_feed_camera_delivers_pushed_frames_and_accounts():
    cam = FeedCamera("feed", width=64, height=48, fps=30, stall_timeout_s=0.3)
    with pytest.raises(CameraError, match="not connected"):
        cam.latest()
    with cam:
        for n in (0, 1, 2, 5, 5, 6):
            cam.push(np.full((48, 64, 3), n, np.uint8), frame_number=n)
        assert wait_until(lambda: cam.stats().frames == 5 and cam.stats().repeated == 1)
        f = cam.latest()
        assert f.seq == 5 and f.image[0, 0, 0] == 6
        assert cam.stats().dropped == 2
        with pytest.raises(CameraError, match="expected a"):
            cam.push(np.zeros((10, 10, 3), np.uint8))
        with pytest.raises(CameraStalledError):
            wait_until(lambda: _stalled(cam))
            cam.latest()


def test_feed_camera_without_frames_raises_stalled_after_timeout():
    with FeedCamera("feed", 64, 48, stall_timeout_s=0.2) as cam:
        t0 = time.monotonic()
        with pytest.raises(CameraStalledError, match="no frame within"):
            cam.latest()
        assert time.monotonic() - t0 < 1.0


class SilentCamera(FeedCamera):
    """A feed nobody pushes to, but which (like hardware) must deliver a first frame at connect."""

    wait_first_frame_s = 0.2


def test_connect_fails_clearly_when_no_first_frame():
    cam = SilentCamera("cam_high", 64, 48)
    with pytest.raises(CameraStalledError, match="cam_high.*delivered no frame"):
        cam.connect()
    assert not cam.connected
    cam.disconnect()  # idempotent


# --- factory ----------------------------------------------------------------------------------------------

def test_factory_builds_each_kind_from_rig_keys():
    assert camera_config("opencv", name="cam_high", device="/dev/CAM_HIGH", fps=30) == OpenCVCameraConfig(
        "cam_high", "/dev/CAM_HIGH", 640, 480, 30, "MJPG")
    assert camera_config("realsense", name="cam_low", serial="123") == RealSenseCameraConfig("cam_low", "123")
    cam = make_camera("synthetic", name="cam_high", fps=50)
    assert isinstance(cam, SyntheticCamera) and cam.fps == 50 and (cam.width, cam.height) == (640, 480)
    assert type(make_camera(OpenCVCameraConfig("c", 0))).__name__ == "OpenCVCamera"
    assert type(make_camera(RealSenseCameraConfig("c", "1"))).__name__ == "RealSenseCamera"


def test_factory_errors_name_the_keys():
    with pytest.raises(CameraError, match="unknown keys serial.*valid keys: name, device"):
        camera_config("opencv", name="cam_high", device=0, serial="x")
    with pytest.raises(CameraError, match="missing keys serial"):
        camera_config("realsense", name="cam_high")
    with pytest.raises(CameraError, match="unknown camera kind"):
        make_camera("gopro", name="x")
    with pytest.raises(CameraError, match="simulator"):
        make_camera("sim", name="cam_high")


class UnpluggedOnce(FeedCamera):
    """A backend whose read fails like a pulled cable, once."""

    fail = True

    def _grab(self):
        if self.fail:
            self.fail = False
            raise OSError("device disconnected")
        return super()._grab()


def test_stream_failure_is_reported_and_connect_recovers():
    cam = UnpluggedOnce("cam_low", 64, 48, stall_timeout_s=0.5)
    cam.connect()
    assert wait_until(lambda: not cam.connected)
    with pytest.raises(CameraError, match="cam_low.*capture failed: device disconnected"):
        cam.latest()
    cam.connect()  # re-opens after the failure
    try:
        assert cam.connected
        cam.push(np.zeros((48, 64, 3), np.uint8))
        assert cam.next_frame(0, timeout=2.0).seq == 1
    finally:
        cam.disconnect()
