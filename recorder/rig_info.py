"""What an episode says about the rig that recorded it: the facts training and deployment need, nothing else.

Since the `rig_info` attribute (recorder.format.RIG_INFO_ATTR) every recorded episode carries them as JSON: rig
name, backend, control rate, camera names, joint layout and the gripper normalization constants. Older episodes
carry only the rig file's TOML text (attribute `rig_config`); `rig_info_from_toml` reads the same facts from it.
That reader knows just the few keys it needs of the rig-file format ([rig] name / backend / control_hz / gripper,
a [gripper] table, the [cameras] names) and does not validate the rest, so the model side never needs the rig
layer (workbench.config, its safety limits, drivers' arm settings) to read an old episode.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from typing import Any, Mapping

from drivers.arm import BIMANUAL_JOINT_NAMES, DEFAULT_CONTROL_HZ
from drivers.gripper import GRIPPER_PRESETS, GripperConstants

GRIPPER_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(GripperConstants))
DEFAULT_GRIPPER_SET = "aloha1"  # a rig file without rig.gripper or [gripper] uses this preset (workbench.config)


@dataclass(frozen=True)
class RigInfo:
    name: str
    backend: str  # "sim", "virtual", "dynamixel" ("unknown" when the rig file does not say)
    control_hz: float | None
    cameras: tuple[str, ...]
    joint_names: tuple[str, ...]  # one per column of qpos / action, e.g. "left_waist" ... "right_gripper"
    gripper_set: str  # preset name or "custom"
    gripper: dict[str, float] | None  # drivers.gripper.GripperConstants fields (the normalization constants)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cameras"], d["joint_names"] = list(self.cameras), list(self.joint_names)
        return d

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "RigInfo":
        """Raises ValueError when a field is missing or of the wrong kind."""
        try:
            hz = d.get("control_hz")
            gripper = d.get("gripper")
            return RigInfo(name=str(d["name"]), backend=str(d["backend"]),
                           control_hz=float(hz) if hz is not None and math.isfinite(float(hz)) else None,
                           cameras=tuple(str(c) for c in d["cameras"]),
                           joint_names=tuple(str(j) for j in d["joint_names"]),
                           gripper_set=str(d["gripper_set"]),
                           gripper=None if gripper is None else {str(k): float(v) for k, v in gripper.items()})
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"rig info {dict(d) if isinstance(d, Mapping) else d!r}: {e!r}") from None


def gripper_dict(constants: GripperConstants) -> dict[str, float]:
    return {k: float(v) for k, v in dataclasses.asdict(constants).items()}


def rig_info_from_toml(text: str, default_name: str = "") -> RigInfo:
    """The rig facts of an old episode's rig file text. Raises ValueError when the text is not a rig file (no
    TOML, no [rig] table) or names an unknown gripper preset / an incomplete [gripper] table."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"the rig file is not valid TOML: {e}") from None
    rig = doc.get("rig")
    if not isinstance(rig, dict):
        raise ValueError("the rig file has no [rig] table")
    hz = rig.get("control_hz", DEFAULT_CONTROL_HZ)
    if isinstance(hz, bool) or not isinstance(hz, (int, float)):
        raise ValueError(f"rig.control_hz must be a number, got {hz!r}")
    custom = doc.get("gripper")
    if isinstance(custom, dict):
        missing = [k for k in GRIPPER_FIELDS if k not in custom]
        if missing:
            raise ValueError(f"the [gripper] table lacks {', '.join(missing)}")
        gripper_set, gripper = "custom", {k: float(custom[k]) for k in GRIPPER_FIELDS}
    else:
        gripper_set = str(rig.get("gripper", DEFAULT_GRIPPER_SET))
        if gripper_set not in GRIPPER_PRESETS:
            raise ValueError(f"rig.gripper {gripper_set!r} is not one of {', '.join(GRIPPER_PRESETS)}")
        gripper = gripper_dict(GRIPPER_PRESETS[gripper_set])
    cameras = doc.get("cameras")
    return RigInfo(name=str(rig.get("name", default_name)), backend=str(rig.get("backend", "unknown")),
                   control_hz=float(hz), cameras=tuple(cameras) if isinstance(cameras, dict) else (),
                   joint_names=BIMANUAL_JOINT_NAMES,  # a rig file describes ALOHA's two 7-joint follower arms
                   gripper_set=gripper_set, gripper=gripper)
