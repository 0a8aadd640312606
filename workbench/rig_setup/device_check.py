"""`workbench rig check`'s second half: a valid rig file's devices, absent or wrong.

Absent (unplugged, powered off, the udev name not made yet) is a different fix from wrong (the file names a
port whose servos are another arm model, a camera serial that is another product): the report says which.
Nothing is written to a servo and nothing moves.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from workbench.config import RigConfig
from workbench.rig_setup.buses import scan_bus


@dataclass(frozen=True)
class DeviceFinding:
    what: str  # "arms.leader_left", "cameras.cam_high"
    status: str  # "ok" | "absent" | "wrong"
    detail: str


@dataclass
class DeviceReport:
    findings: list[DeviceFinding] = field(default_factory=list)

    @property
    def absent(self) -> list[DeviceFinding]:
        return [f for f in self.findings if f.status == "absent"]

    @property
    def wrong(self) -> list[DeviceFinding]:
        return [f for f in self.findings if f.status == "wrong"]


def check_devices(cfg: RigConfig, *, timeout_ms: float = 10.0) -> DeviceReport:
    """Ports and cameras of a dynamixel rig (sim and virtual rigs have no devices to be absent)."""
    report = DeviceReport()
    if cfg.backend != "dynamixel":
        return report
    for a in cfg.arms:
        key = f"arms.{a.name}"
        port = a.settings["port"]
        model = a.settings.get("model", "vx300s" if a.role == "follower" else "wx250s")
        if not os.path.exists(port):
            report.findings.append(DeviceFinding(key, "absent", f"{port} does not exist: plug in its U2D2, or run "
                                                 f"`workbench rig udev` if the name is a udev name"))
            continue
        bus = scan_bus(port, baudrate=a.settings.get("baudrate", 1_000_000), timeout_ms=timeout_ms)
        if bus.error:
            report.findings.append(DeviceFinding(key, "absent", bus.error))
        elif not bus.found:
            report.findings.append(DeviceFinding(key, "absent", f"no servo answered on {port}: is the arm powered?"))
        elif bus.model != model:
            seen = f"a {bus.role} arm ({bus.model})" if bus.model else "not an ALOHA arm"
            report.findings.append(DeviceFinding(key, "wrong", f"{port} is {seen}, but the file says {a.role} "
                                                 f"({model}): swap the ports of the arms in the file, or fix the udev "
                                                 f"rules (`workbench rig detect` shows which bus is which)"))
        elif bus.problems:
            report.findings.append(DeviceFinding(key, "wrong", "; ".join(p.describe(port) for p in bus.problems)))
        else:
            report.findings.append(DeviceFinding(key, "ok", f"{port}: {model}, {len(bus.found)} servos"))
    realsense = None
    for c in cfg.cameras:
        key = f"cameras.{c.name}"
        if c.kind == "opencv" and isinstance(c.settings.get("device"), str):
            dev = c.settings["device"]
            ok = os.path.exists(dev)
            report.findings.append(DeviceFinding(key, "ok" if ok else "absent", dev if ok else
                                                 f"{dev} does not exist: plug the camera in, or run `workbench rig udev`"))
        elif c.kind == "realsense":
            if realsense is None:
                from workbench.rig_setup.cameras import list_realsense

                found, note = list_realsense()
                realsense = {d.serial: d for d in found}
            d = realsense.get(str(c.settings["serial"]))
            report.findings.append(DeviceFinding(key, "ok", d.describe()) if d else DeviceFinding(
                key, "absent", f"no RealSense with serial {c.settings['serial']} is connected"
                               + (f" ({note})" if note else "")))
    return report
