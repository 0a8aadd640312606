"""OpenCVCamera through a real cv2.VideoCapture: an MJPG .avi written here, replayed at the configured fps."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from drivers.cameras import OpenCVCameraConfig, make_camera
from drivers.cameras.opencv_camera import OpenCVCamera
from drivers.cameras.synthetic import SyntheticFrames, read_stamp
from drivers.errors import CameraError, CameraModeError, CameraNotFoundError, CameraStalledError

W, H, N, FPS = 320, 240, 30, 30


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """N frames, each stamped with its index, written as MJPG (what a UVC camera sends)."""
    path = tmp_path_factory.mktemp("cams") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    assert writer.isOpened()
    gen = SyntheticFrames(W, H, seed=3)
    for k in range(N):
        writer.write(cv2.cvtColor(gen.frame(k), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_file_replay_in_order_at_fps_then_stalls(video):
    cam = OpenCVCamera(OpenCVCameraConfig("cam_high", str(video), W, H, FPS, stall_timeout_s=0.3))
    with cam:
        first = cam.latest()
        assert first.image.shape == (H, W, 3) and first.image.dtype == np.uint8
        frames, seq = [first], first.seq
        while len(frames) < 15:
            f = cam.next_frame(seq, timeout=2.0)
            frames.append(f)
            seq = f.seq
        stats = cam.stats()
        numbers = [read_stamp(f.image) for f in frames]
        assert numbers == sorted(set(numbers)) and numbers[0] == 0  # in order, from the first frame
        assert 10 < stats.fps < 100  # paced at ~30, not decoded as fast as possible
        # RGB out: the stamp's white blocks read back white, and a textured pixel matches the source image
        src = SyntheticFrames(W, H, seed=3).frame(numbers[-1])
        assert np.abs(frames[-1].image.astype(int) - src.astype(int)).mean() < 8
        # the file ends after N frames: the stream stops and latest() says so instead of serving stale frames
        deadline = time.monotonic() + 5.0
        with pytest.raises(CameraStalledError, match="cam_high.*video file"):
            while time.monotonic() < deadline:
                cam.latest()
                time.sleep(0.02)
        stats = cam.stats()
        assert stats.frames == N and stats.dropped == 0 and stats.repeated == 0


def test_size_mismatch_is_a_mode_error(video):
    cam = make_camera("opencv", name="cam_low", device=str(video), width=640, height=480, fps=FPS)
    with pytest.raises(CameraModeError, match=f"cam_low.*640x480.*{W}x{H}"):
        cam.connect()
    assert not cam.connected


@pytest.mark.parametrize("device", ["/dev/video99", 99, "99"])
def test_missing_device_fails_fast_with_the_devices_present(device):
    cam = OpenCVCamera(OpenCVCameraConfig("cam_right_wrist", device))
    t0 = time.monotonic()
    with pytest.raises(CameraNotFoundError, match=r"cam_right_wrist.*/dev/video99.*Video devices present"):
        cam.connect()
    assert time.monotonic() - t0 < 2.0
    with pytest.raises(CameraError, match="not connected"):
        cam.latest()


def test_missing_file_is_not_found(tmp_path):
    with pytest.raises(CameraNotFoundError, match="does not exist"):
        OpenCVCamera(OpenCVCameraConfig("cam_high", str(tmp_path / "nope.avi"))).connect()
