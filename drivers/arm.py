"""The arm contract shared by real (Dynamixel), virtual (emulated bus) and simulated (MuJoCo) arms.

Units at this interface ("ALOHA space"), 7 values per arm: the six joints in radians
(waist, shoulder, elbow, forearm_roll, wrist_angle, wrist_rotate) and the gripper normalized
(0 = closed, 1 = open). A leader's gripper is its normalized gripper *joint*; a follower's is its normalized
finger opening. Commanding a follower with a leader's reading is therefore the ALOHA teleop mapping.

`Arm.command` is raw: only `workbench.safety.SafetyLayer` calls it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

ARM_JOINTS: tuple[str, ...] = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
ARM_DOF = len(ARM_JOINTS) + 1  # + gripper
JOINT_NAMES: tuple[str, ...] = ARM_JOINTS + ("gripper",)
SIDES: tuple[str, ...] = ("left", "right")

# The bimanual layout every 14-vector (qpos, action, command) uses: [left 6 joints, left gripper, right 6, right
# gripper]. Recorder, quality checks, charts, replay and policies index through these, never through literals.
BIMANUAL_DOF = len(SIDES) * ARM_DOF
ARM_JOINT_SLICE = slice(0, ARM_DOF - 1)  # the six joints of one arm's 7-vector (the gripper is the last value)
ARM_JOINT_COLUMNS: tuple[int, ...] = tuple(i * ARM_DOF + j for i in range(len(SIDES)) for j in range(ARM_DOF - 1))
GRIPPER_COLUMNS: tuple[int, ...] = tuple(i * ARM_DOF + ARM_DOF - 1 for i in range(len(SIDES)))
BIMANUAL_JOINT_NAMES: tuple[str, ...] = tuple(f"{side}_{j}" for side in SIDES for j in JOINT_NAMES)
DEFAULT_CONTROL_HZ = 50.0  # ALOHA's rate; a rig file may choose another (rig.control_hz)


GRIPPER_RANGE = (0.0, 1.0)  # normalized gripper at the Arm interface: closed .. open

# Operator takeover during a policy trial (Arm.set_follow): a leader in follow mode is commanded with the follower's
# gripper value; an operator's squeeze pulls its gripper reading away from that command. A reading more than this
# (normalized units, either direction) from the leader's last gripper command is a takeover request. A quarter of
# the gripper's travel (~14 deg of an aloha1 leader's gripper joint): well above the tracking error of a weak servo
# chasing a moving follower gripper (< 0.07 per tick at the leader's velocity limit), well below a squeeze.
SQUEEZE_DEPARTURE = 0.25


def arm_slice(side_index: int) -> slice:
    """Columns of one arm (0 = left, 1 = right) in a bimanual 14-vector."""
    return slice(side_index * ARM_DOF, (side_index + 1) * ARM_DOF)
Role = Literal["leader", "follower"]

START_POSE = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0], dtype=np.float64)  # 6 arm joints, rad
SLEEP_POSE = np.array([0.0, -1.7, 1.55, 0.12, 0.65, 0.0], dtype=np.float64)


@dataclass
class ArmState:
    position: np.ndarray  # (7,) rad + normalized gripper
    velocity: np.ndarray  # (7,) rad/s + normalized gripper per s
    effort: np.ndarray  # (7,) motor current in mA (sim: actuator force)
    t: float  # clock time of the read (seconds; monotonic on hardware, sim time in simulation)


@dataclass
class JointStatus:
    name: str
    servo_id: int | None = None
    torque: bool | None = None
    temperature_c: float | None = None
    voltage_v: float | None = None
    hardware_error: int = 0  # Hardware Error Status bits, 0 = healthy
    message: str = ""


@dataclass
class ArmStatus:
    name: str
    role: Role
    connected: bool
    joints: list[JointStatus] = field(default_factory=list)

    @property
    def faulted(self) -> list[JointStatus]:
        return [j for j in self.joints if j.hardware_error]


@runtime_checkable
class Arm(Protocol):
    name: str  # e.g. "follower_left"
    role: Role

    @property
    def connected(self) -> bool: ...

    def connect(self) -> None:
        """Open, check every servo (ping + model), configure modes/limits. Raises a DriverError subclass."""

    def disconnect(self) -> None:
        """Torque off (followers hold nothing afterwards) and close. Never raises."""

    def read(self) -> ArmState: ...

    def command(self, position: np.ndarray) -> None:
        """Raw goal in ALOHA space (7,). Only the safety layer may call this."""

    def set_torque(self, arm: bool, gripper: bool | None = None) -> None:
        """Torque for the six arm joints and (None = same as arm) the gripper."""

    def status(self) -> ArmStatus: ...

    def set_follow(self, on: bool) -> None:
        """Leaders only: on -> the arm follows `command()` goals with torque on but weak (a hand can grab and move
        it; the workbench commands the followers' positions while a policy drives them, and takes a gripper
        reading more than SQUEEZE_DEPARTURE from its command as the operator's takeover); off -> back to teleop
        (arm torque off, as `set_torque(False, False)`). Switching on starts from the present pose (no jump).
        Followers raise DriverError ("... is a follower ..."): they are never back-driven by design."""

    def reboot(self, joint: str) -> None:
        """Clear a hardware error of one joint (Dynamixel REBOOT) and restore its torque state."""

    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi), each (7,), in ALOHA space (gripper 0..1): the arm model's own range, which the safety layer
        narrows with the rig file's limits. Known without connecting."""
