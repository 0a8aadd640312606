"""UVC cameras through OpenCV (V4L2 on Linux), and video files replayed at the configured rate.

OpenCV cannot list a device's modes, so the mode is validated the way the driver decides it: set fourcc,
size and fps, then read back what the driver accepted; a mismatch is a CameraModeError naming both (and, when
`v4l2-ctl` is installed, the modes it lists). V4L2 exposes no frame counter through OpenCV, so drops are inferred
from the buffer timestamps (interval > 1.5 periods); a replayed file has a real counter (its frame index).
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from typing import Callable

import cv2

from drivers.cameras.capture import GRAB_POLL_S, CaptureCamera, RawFrame
from drivers.cameras.config import OpenCVCameraConfig
from drivers.errors import CameraModeError, CameraNotFoundError

READ_TIMEOUT_MS = 500  # V4L2's default select() timeout is 10 s, which would make disconnect() hang that long
BANDWIDTH_HINT = (
    "if OpenCV or the kernel log (`dmesg`) says 'No space left on device' (VIDIOC_STREAMON), the USB bus is out "
    "of bandwidth: use fourcc = \"MJPG\", lower the fps or resolution, or move the camera to another hub/USB "
    "controller (at most 2 cameras per hub)"
)


def video_devices() -> list[str]:
    """The /dev/video* nodes present, each with the stable /dev/v4l/by-id names pointing at it."""
    by_target: dict[str, list[str]] = {}
    for link in sorted(glob.glob("/dev/v4l/by-id/*")):
        by_target.setdefault(os.path.realpath(link), []).append(os.path.basename(link))
    out = []
    for node in sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p)):
        names = by_target.get(node)
        out.append(f"{node} ({', '.join(names)})" if names else node)
    return out


def _fourcc_str(value: float) -> str:
    code = int(value)
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ") if code > 0 else ""


def _listed_modes(path: str) -> str:
    """`v4l2-ctl --list-formats-ext` output when the tool is installed (best effort: only used in messages)."""
    if shutil.which("v4l2-ctl") is None:
        return f"run `v4l2-ctl -d {path} --list-formats-ext` (package v4l-utils) to see the supported modes"
    try:
        out = subprocess.run(["v4l2-ctl", "-d", path, "--list-formats-ext"], capture_output=True, text=True,
                             timeout=2.0).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not list modes with v4l2-ctl: {exc}"
    lines = [ln.strip() for ln in out.splitlines() if ln.strip().startswith(("[", "Size", "Interval"))]
    return "supported modes (v4l2-ctl):\n  " + "\n  ".join(lines[:60])


class OpenCVCamera(CaptureCamera):
    def __init__(self, config: OpenCVCameraConfig, clock: Callable[[], float] = time.monotonic):
        super().__init__(config.name, config.width, config.height, config.fps, config.stall_timeout_s, clock)
        self.config = config
        device = config.device
        if isinstance(device, str) and device.strip().isdigit():
            device = int(device)
        self._device: int | str = device
        self._path = f"/dev/video{device}" if isinstance(device, int) else str(device)
        self._is_file = isinstance(device, str) and not device.startswith("/dev/")
        self._cap: cv2.VideoCapture | None = None
        self._next_due = 0.0
        self._failed_reads = 0

    def describe(self) -> str:
        if self._is_file:
            return f"video file {self._path}"
        real = os.path.realpath(self._path)
        return f"OpenCV {self._path}" + (f" -> {real}" if real != self._path else "")

    def _stall_hint(self) -> str:
        if self._is_file:
            return "the video file ended or cannot be decoded"
        failed = f"{self._failed_reads} reads failed in a row; " if self._failed_reads else ""
        return f"{failed}check the cable and that no other program uses {self._path}; {BANDWIDTH_HINT}"

    def _not_found(self) -> CameraNotFoundError:
        if self._is_file:
            return CameraNotFoundError(f"{self.name}: video file {self._path} does not exist or cannot be decoded")
        present = video_devices()
        listing = ", ".join(present) if present else "none (is the camera plugged in? see `lsusb`)"
        return CameraNotFoundError(
            f"{self.name}: camera device {self._path} not found or cannot be opened. Video devices present: "
            f"{listing}. Fix the `device` key in the rig config (a /dev/video index or a udev symlink), or check "
            f"permissions (user in the `video` group).")

    def _open(self) -> None:
        if not os.path.exists(self._path):  # VideoCapture on a missing node can hang or spam warnings: ask first
            raise self._not_found()
        if self._is_file:
            cap = cv2.VideoCapture(self._path)
        elif sys.platform.startswith("linux"):
            cap = cv2.VideoCapture(self._path, cv2.CAP_V4L2)
        else:
            cap = cv2.VideoCapture(self._device)
        if not cap.isOpened():
            cap.release()
            raise self._not_found()
        if not self._is_file:
            if self.config.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.config.fourcc))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_FPS, self.fps)
            if hasattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC"):
                cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS)
        try:
            self._check_mode(cap)
        except CameraModeError:
            cap.release()
            raise
        self._cap = cap
        self._failed_reads = 0
        self._next_due = self._clock()

    def _check_mode(self, cap: cv2.VideoCapture) -> None:
        got_w, got_h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        got_fps = cap.get(cv2.CAP_PROP_FPS)
        got_fourcc = _fourcc_str(cap.get(cv2.CAP_PROP_FOURCC))
        problems = []
        if (got_w, got_h) != (self.width, self.height):
            problems.append(f"size {got_w}x{got_h}")
        if not self._is_file:  # a file is replayed at the configured fps whatever it was recorded at
            if got_fps > 0 and abs(got_fps - self.fps) > 0.5:
                problems.append(f"{got_fps:g} fps")
            if self.config.fourcc and got_fourcc and got_fourcc != self.config.fourcc:
                problems.append(f"format {got_fourcc}")
        if not problems:
            return
        asked = f"{self.width}x{self.height} @ {self.fps} fps" + (f" {self.config.fourcc}" if self.config.fourcc else "")
        if self._is_file:
            raise CameraModeError(
                f"{self.name} ({self.describe()}): configured {asked}, but the file holds {got_w}x{got_h} frames; "
                f"set width/height to match the file")
        raise CameraModeError(
            f"{self.name} ({self.describe()}): configured {asked}, but the driver accepted "
            f"{', '.join(problems)} instead. Pick a mode the camera supports; {_listed_modes(self._path)}")

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _grab(self) -> RawFrame | None:
        cap = self._cap
        if cap is None:
            return None
        if self._is_file:  # replay in real time so fps, stalls and consumers behave as with a camera
            now = self._clock()
            if now < self._next_due:
                time.sleep(min(self._next_due - now, GRAB_POLL_S))
                if self._clock() < self._next_due:
                    return None
            self._next_due = max(self._next_due + 1.0 / self.fps, self._clock() - 1.0 / self.fps)
        ok, bgr = cap.read()
        now = self._clock()
        if not ok or bgr is None:
            self._failed_reads += 1
            time.sleep(GRAB_POLL_S if self._is_file else 0.01)  # at end of file, or device gone: do not spin
            return None
        self._failed_reads = 0
        if bgr.shape[:2] != (self.height, self.width):
            raise CameraModeError(f"{self.name} ({self.describe()}): delivered a {bgr.shape[1]}x{bgr.shape[0]} frame "
                                  f"while configured for {self.width}x{self.height}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # the one conversion; cv2 releases the GIL while doing it
        if self._is_file:
            return RawFrame(image=rgb, t=now, device_seq=int(cap.get(cv2.CAP_PROP_POS_FRAMES)) - 1)
        stamp_ms = cap.get(cv2.CAP_PROP_POS_MSEC)  # V4L2 buffer timestamp; 0 when the driver gives none
        return RawFrame(image=rgb, t=now, device_time=stamp_ms / 1000.0 if stamp_ms > 0 else None)
