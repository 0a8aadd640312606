"""Cameras attached now: RealSense devices through pyrealsense2 (serial, product, firmware, USB speed) and V4L2
capture devices with their stable /dev/v4l/by-id paths (and the USB serial a udev rule can key on).

Only capture nodes are listed (a UVC camera makes two /dev/video nodes; index 0 captures, 1 is metadata), and
RealSense V4L2 nodes are left to pyrealsense2. Candidates (video files, device paths) can be added for the
"wave in front of it" step.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

V4L_BY_ID = "/dev/v4l/by-id"
SYS_V4L = "/sys/class/video4linux"
REALSENSE_VID = 0x8086


@dataclass(frozen=True)
class DetectedCamera:
    kind: str  # "realsense" | "opencv"
    ident: str  # RealSense serial number, or the device path (by-id when there is one)
    product: str = ""
    serial: str | None = None  # USB serial (V4L2) / device serial (RealSense)
    firmware: str | None = None
    usb: str | None = None  # RealSense USB type descriptor ("3.2"), or the V4L2 device's speed (Mb/s)
    device: str | None = None  # /dev/videoN now (V4L2)
    vid: int | None = None
    pid: int | None = None

    @property
    def settings(self) -> dict[str, str]:
        """The rig file's camera table keys that name this device."""
        return {"serial": self.ident} if self.kind == "realsense" else {"device": self.ident}

    def describe(self) -> str:
        bits = [self.kind, self.product or "?", f"serial {self.serial or '-'}"]
        if self.firmware:
            bits.append(f"firmware {self.firmware}")
        if self.usb:
            bits.append(f"USB {self.usb}")
        where = self.ident if self.kind == "realsense" else f"{self.device} -> {self.ident}"
        return f"{where}: " + ", ".join(bits)


def list_realsense() -> tuple[list[DetectedCamera], str | None]:
    """(devices, None) or ([], why not) when pyrealsense2 is missing: never raises for an empty machine."""
    try:
        import pyrealsense2 as rs
    except ImportError as exc:
        return [], f"pyrealsense2 is not installed ({exc}): `pip install pyrealsense2` to list RealSense cameras"
    out = []
    for dev in rs.context().query_devices():
        def info(key: str) -> str | None:
            k = getattr(rs.camera_info, key)
            return dev.get_info(k) if dev.supports(k) else None

        out.append(DetectedCamera("realsense", info("serial_number") or "?", info("name") or "RealSense",
                                  serial=info("serial_number"), firmware=info("firmware_version"),
                                  usb=info("usb_type_descriptor"), vid=REALSENSE_VID))
    return out, None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def usb_attributes(sys_device: str) -> dict[str, str]:
    """idVendor / idProduct / serial / product / speed of the USB device above a sysfs device path (the
    attributes `udevadm info --attribute-walk` shows as ATTRS{...})."""
    path = os.path.realpath(sys_device)
    while path and path != "/":
        if os.path.exists(os.path.join(path, "idVendor")):
            return {k: v for k in ("idVendor", "idProduct", "serial", "product", "manufacturer", "speed")
                    if (v := _read(os.path.join(path, k))) is not None}
        path = os.path.dirname(path)
    return {}


def list_v4l2(candidates: tuple[str, ...] = (), sys_root: str = SYS_V4L,
              by_id_dir: str = V4L_BY_ID) -> list[DetectedCamera]:
    """V4L2 capture nodes (index 0) with by-id paths, RealSense nodes left out; then the `candidates`."""
    links: dict[str, str] = {}
    for link in sorted(glob.glob(os.path.join(by_id_dir, "*"))):
        if link.endswith("-index0") or os.path.realpath(link) not in links:
            links[os.path.realpath(link)] = link
    out = []
    for node in sorted(glob.glob(os.path.join(sys_root, "video*")), key=lambda p: int(p.rsplit("video", 1)[1] or 0)):
        index = _read(os.path.join(node, "index"))
        if index not in (None, "0"):
            continue
        attrs = usb_attributes(os.path.join(node, "device"))
        vid = int(attrs["idVendor"], 16) if "idVendor" in attrs else None
        if vid == REALSENSE_VID:
            continue
        dev = "/dev/" + os.path.basename(node)
        out.append(DetectedCamera("opencv", links.get(os.path.realpath(dev), dev),
                                  _read(os.path.join(node, "name")) or attrs.get("product", ""),
                                  serial=attrs.get("serial"), usb=attrs.get("speed"), device=dev, vid=vid,
                                  pid=int(attrs["idProduct"], 16) if "idProduct" in attrs else None))
    for c in candidates:
        out.append(DetectedCamera("opencv", c, "candidate", device=c))
    return out


NOTHING_FOUND = ("no camera found: plug the cameras in (at most two per USB hub); `v4l2-ctl --list-devices` "
                 "and `rs-enumerate-devices -s` list what the system sees")


class CameraWatch:
    """The cameras open at once, for "wave in front of it": a baseline frame per camera, then how much each
    image changed from it (assign.image_change). Preview frames for the wizard come from `latest()`."""

    def __init__(self, cameras: list[DetectedCamera], width: int = 640, height: int = 480, fps: int = 30):
        from drivers.cameras.factory import make_camera

        self.detected = {c.ident: c for c in cameras}
        self.cams = {c.ident: make_camera(c.kind, name=c.ident, width=width, height=height, fps=fps, **c.settings)
                     for c in cameras}
        self.baseline: dict[str, object] = {}

    def __enter__(self) -> "CameraWatch":
        opened = []
        try:
            for cam in self.cams.values():
                cam.connect()
                opened.append(cam)
        except BaseException:
            for cam in opened:
                cam.disconnect()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for cam in self.cams.values():
            try:
                cam.disconnect()
            except Exception:  # noqa: BLE001 - closing must go on
                pass

    def latest(self) -> dict[str, object]:
        return {k: cam.latest().image for k, cam in self.cams.items()}

    def take_baseline(self) -> None:
        self.baseline = self.latest()

    def changes(self, keys=None) -> dict[str, float]:
        from workbench.rig_setup.assign import image_change

        now = self.latest()
        return {k: image_change(self.baseline[k], now[k]) for k in (keys or self.cams)}
