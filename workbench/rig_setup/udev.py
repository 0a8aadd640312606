"""udev rules that name each arm's bus and each camera for good, keyed on USB serial numbers (as ALOHA's set-up
guide does), the one command that installs them, and the check afterwards that the names exist.

Serial rules also set the FTDI latency timer to 1 ms (the default 16 ms makes every servo read take ~16 ms) and
keep ModemManager off the port.
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

RULES_PATH = "/etc/udev/rules.d/99-aloha-workbench.rules"


@dataclass(frozen=True)
class NamedDevice:
    name: str  # the /dev name the rule creates: "ttyDXL_leader_left", "CAM_HIGH"
    subsystem: str  # "tty" | "video4linux"
    serial: str  # USB serial number (ATTRS{serial})
    vid: int | None = None
    pid: int | None = None

    @property
    def path(self) -> str:
        return f"/dev/{self.name}"


class UdevError(ValueError):
    """Rules cannot be written for these devices; the message says why and what to do."""


def serial_name(arm_name: str) -> str:
    return f"ttyDXL_{arm_name}"


def camera_name(camera: str) -> str:
    return camera.upper()


def rule_line(d: NamedDevice) -> str:
    match = [f'SUBSYSTEM=="{d.subsystem}"']
    if d.vid is not None and d.pid is not None:
        match += [f'ATTRS{{idVendor}}=="{d.vid:04x}"', f'ATTRS{{idProduct}}=="{d.pid:04x}"']
    match.append(f'ATTRS{{serial}}=="{d.serial}"')
    if d.subsystem == "tty":
        action = ['ENV{ID_MM_DEVICE_IGNORE}="1"', 'ATTR{device/latency_timer}="1"']
    else:
        match.append('ATTR{index}=="0"')  # the capture node, not the metadata node
        action = []
    return ", ".join(match + action + [f'SYMLINK+="{d.name}"'])


def rules_text(devices: list[NamedDevice]) -> str:
    """The rules file. Two devices with one serial number (cheap adapters / cameras without one) cannot be told
    apart by udev: refused, with the alternative."""
    seen: dict[tuple[str, str], str] = {}
    for d in devices:
        if not d.serial:
            raise UdevError(f"{d.name}: the device reports no USB serial number, so no rule can name it for good; "
                            f"use its /dev/serial/by-path or /dev/v4l/by-path link (tied to the USB socket) instead")
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", d.serial):
            raise UdevError(f"{d.name}: serial {d.serial!r} has characters a udev rule cannot match literally")
        key = (d.subsystem, d.serial)
        if key in seen:
            raise UdevError(f"{seen[key]} and {d.name} report the same serial {d.serial}: udev cannot tell them "
                            f"apart; use by-path links (tied to the USB socket) for these two")
        seen[key] = d.name
    lines = ["# written by `workbench rig udev`: fixed names by USB serial number"]
    lines += [rule_line(d) for d in devices]
    return "\n".join(lines) + "\n"


def install_command(rules_file: str, target: str = RULES_PATH) -> str:
    return (f"sudo cp {shlex.quote(rules_file)} {target} && sudo udevadm control --reload-rules && "
            f"sudo udevadm trigger")


def parse_rule(line: str) -> dict[str, str]:
    """KEY -> value of one rule line (match and assignment keys alike), for checks."""
    return {m.group(1): m.group(3) for m in re.finditer(r'([A-Za-z_]+(\{[^}]*\})?)[!=+:]?=+"([^"]*)"', line)}


def missing_names(devices: list[NamedDevice], dev_root: str = "/dev") -> list[str]:
    """The names the rules should have made that do not exist (yet): empty after a successful install."""
    return [os.path.join(dev_root, d.name) for d in devices if not os.path.exists(os.path.join(dev_root, d.name))]


def expected_names(cfg) -> list[NamedDevice]:
    """The /dev names the rules give a rig file's arms and V4L2 cameras (what the check after installing looks for)."""
    return ([NamedDevice(serial_name(a.name), "tty", "") for a in cfg.arms]
            + [NamedDevice(camera_name(c.name), "video4linux", "") for c in cfg.cameras if c.kind == "opencv"])


def devices_for_rig(cfg, adapters, cameras) -> tuple[list[NamedDevice], list[str]]:
    """NamedDevice per arm port and V4L2 camera of a rig file that is plugged in now; and what could not be
    matched (absent devices, RealSense cameras: those are found by serial already and need no rule)."""
    import os as _os

    by_real = {_os.path.realpath(a.device): a for a in adapters}
    cams = {_os.path.realpath(c.device): c for c in cameras if c.device}
    out, skipped = [], []
    for a in cfg.arms:
        port = a.settings.get("port")
        ad = by_real.get(_os.path.realpath(port)) if port else None
        if ad is None:
            skipped.append(f"arms.{a.name}: {port} is not a USB serial adapter plugged in now")
            continue
        out.append(NamedDevice(serial_name(a.name), "tty", ad.serial or "", ad.vid, ad.pid))
    for c in cfg.cameras:
        if c.kind != "opencv":
            if c.kind == "realsense":
                skipped.append(f"cameras.{c.name}: RealSense cameras are opened by serial number; no rule needed")
            continue
        dev = c.settings.get("device")
        cam = cams.get(_os.path.realpath(str(dev))) if isinstance(dev, str) else None
        if cam is None:
            skipped.append(f"cameras.{c.name}: {dev} is not a V4L2 camera plugged in now")
            continue
        out.append(NamedDevice(camera_name(c.name), "video4linux", cam.serial or "", cam.vid, cam.pid))
    return out, skipped
