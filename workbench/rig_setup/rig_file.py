"""The rig file a set-up proposes: arms on stable device paths, cameras by serial or by-id path, and the
measured [gripper] table. Built from data, checked by the rig parser before anyone sees it."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from drivers.gripper import GRIPPER_PRESETS, GripperConstants
from workbench.config import RigConfig, parse_rig_config

CAMERA_NAMES = ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")


@dataclass(frozen=True)
class ArmPlan:
    name: str  # leader_left ...
    role: str
    side: str
    model: str
    port: str | None  # stable path; None on the virtual rig (it assigns emulator ports itself)
    settings: dict[str, Any] = field(default_factory=dict)  # e.g. gripper_current_limit, timeout_ms


@dataclass(frozen=True)
class CameraPlan:
    name: str
    kind: str
    settings: dict[str, Any]
    width: int = 640
    height: int = 480
    fps: int = 30


@dataclass(frozen=True)
class RigPlan:
    name: str
    backend: str  # "dynamixel" | "virtual"
    arms: tuple[ArmPlan, ...]
    cameras: tuple[CameraPlan, ...]
    gripper: GripperConstants | str = "aloha1"  # a preset name until measured
    control_hz: float = 50.0
    notes: tuple[str, ...] = ()  # comment lines at the top (what was detected, what is still to do)

    def with_gripper(self, g: GripperConstants) -> "RigPlan":
        return dataclasses.replace(self, gripper=g)

    def to_toml(self) -> str:
        lines = [f"# {n}" for n in self.notes]
        lines += ["[rig]", f"name = {_v(self.name)}", f"backend = {_v(self.backend)}",
                  f"control_hz = {_v(self.control_hz)}"]
        if isinstance(self.gripper, str):
            lines.append(f"gripper = {_v(self.gripper)}  # preset constants: `workbench rig calibrate` measures them")
        for a in self.arms:
            lines += ["", f"[arms.{a.name}]", f"role = {_v(a.role)}", f"side = {_v(a.side)}", f"model = {_v(a.model)}"]
            if a.port is not None:
                lines.append(f"port = {_v(a.port)}")
            lines += [f"{k} = {_v(v)}" for k, v in a.settings.items()]
        for c in self.cameras:
            lines += ["", f"[cameras.{c.name}]", f"kind = {_v(c.kind)}"]
            lines += [f"{k} = {_v(v)}" for k, v in c.settings.items()]
            lines += [f"width = {c.width}", f"height = {c.height}", f"fps = {c.fps}"]
        if not isinstance(self.gripper, str):
            lines += ["", "[gripper]  # measured by `workbench rig calibrate` (gripper joint rad, finger m)"]
            lines += [f"{k} = {_v(v)}" for k, v in dataclasses.asdict(self.gripper).items()]
        return "\n".join(lines) + "\n"

    def config(self, source: str = "<proposed rig>") -> RigConfig:
        """Parse the text: a proposal the rig loader would refuse is a bug here, never the operator's problem."""
        return parse_rig_config(self.to_toml(), source)


def _v(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(float(value)) if isinstance(value, float) else str(value)
    s = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def gripper_of(plan: RigPlan) -> GripperConstants:
    return GRIPPER_PRESETS[plan.gripper] if isinstance(plan.gripper, str) else plan.gripper


def replace_gripper(text: str, g: GripperConstants, comment: str = "measured by `workbench rig calibrate`") -> str:
    """A rig file's text with its gripper constants (rig.gripper or a [gripper] table) replaced by a [gripper]
    table of `g`; every other line (comments included) stays as it was."""
    import re

    out, section = [], ""
    for line in text.splitlines():
        header = re.match(r"\s*\[([^\]]+)\]", line)
        if header:
            section = header.group(1).strip()
        if section == "gripper":
            continue
        if section == "rig" and re.match(r"\s*gripper\s*=", line):
            continue
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    out += ["", f"[gripper]  # {comment} (gripper joint rad, finger m)"]
    out += [f"{k} = {_v(v)}" for k, v in dataclasses.asdict(g).items()]
    return "\n".join(out) + "\n"
