"""Default ALOHA motor layouts per arm model (IDs, joints, servo models, reverse drive modes, tick limits).

Data from the Interbotix WidowX 250 6DoF (leader) and ViperX 300 6DoF (follower) motor configs as used by ALOHA.
Shadow motors (3, 5) are mechanically coupled to their primary (2, 4), mounted opposite, and follow it through
Secondary ID, so the driver never addresses them in the control loop.
"""
from __future__ import annotations

from dataclasses import dataclass

from drivers.dynamixel.control_table import MODELS


@dataclass(frozen=True)
class MotorSpec:
    id: int
    name: str  # joint name ("shoulder", "shoulder_shadow", "gripper" ...)
    model: str  # "XM430-W350" ...
    reverse: bool = False  # Drive Mode bit 0
    shadow_of: int | None = None  # primary ID this motor follows via Secondary ID
    min_tick: int = 0
    max_tick: int = 4095

    @property
    def model_number(self) -> int:
        return MODELS[self.model].number

    @property
    def is_shadow(self) -> bool:
        return self.shadow_of is not None


ARM_MODELS = ("vx300s", "wx250s")
SHADOW_PAIRS = {3: 2, 5: 4}  # shadow ID -> primary ID

_NAMES = ("waist", "shoulder", "shoulder_shadow", "elbow", "elbow_shadow", "forearm_roll", "wrist_angle",
          "wrist_rotate", "gripper")


def default_layout(model: str) -> tuple[MotorSpec, ...]:
    """The nine motors of an ALOHA arm, ID order. `model` is "vx300s" (follower) or "wx250s" (leader)."""
    if model == "vx300s":
        models = ["XM540-W270"] * 7 + ["XM430-W350"] * 2
        reverse = {2, 4, 7}
        limits = {2: (841, 2867), 3: (841, 2867), 4: (898, 3094), 5: (898, 3094), 7: (830, 3504)}
    elif model == "wx250s":
        models = ["XM430-W350"] * 7 + ["XL430-W250", "XC430-W150"]
        reverse = {3, 5, 7}
        limits = {2: (819, 3345), 3: (819, 3345), 4: (648, 3094), 5: (648, 3094), 7: (910, 3447)}
    else:
        raise ValueError(f"unknown arm model {model!r}; choose one of {', '.join(ARM_MODELS)}")
    out = []
    for i, (name, m) in enumerate(zip(_NAMES, models), start=1):
        lo, hi = limits.get(i, (0, 4095))
        out.append(MotorSpec(i, name, m, i in reverse, SHADOW_PAIRS.get(i), lo, hi))
    return tuple(out)
