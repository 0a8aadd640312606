"""A simulated ViperX follower arm behind the `drivers.arm.Arm` contract.

Units are ALOHA space, as gym-aloha: joints are position-servo goals (rad); the gripper goal is normalized
(0 closed, 1 open) and becomes the two finger goals via the follower *finger* constants; reading gives the
normalized finger position and finger velocity / (open - close) (ACT's qvel). Effort is actuator force (N, N m).
"""
from __future__ import annotations

import numpy as np

from drivers.arm import ARM_DOF, ARM_JOINTS, ArmState, ArmStatus, GRIPPER_RANGE, JOINT_NAMES, JointStatus, Role
from drivers.errors import DriverError, SafetyError
from drivers.gripper import GRIPPER_PRESETS, GripperConstants
from drivers.sim.aloha_sim import AlohaSim


class SimArm:
    """One follower of the shared AlohaSim. `command()` sets position goals; physics moves on `sim.step()`.

    Torque off is modelled by zeroing the position servo's gain and damping (the joint then only has its
    friction), torque on holds the current position (the goal is set to where the joint is, like Interbotix
    does before enabling a Dynamixel). `inject_fault()` emulates a servo hardware error for tests of the
    error path: that joint loses torque until `reboot()`.
    """

    role: Role = "follower"

    def __init__(self, sim: AlohaSim, side: str, name: str | None = None,
                 gripper: GripperConstants = GRIPPER_PRESETS["aloha1"]):
        self.sim = sim
        self.side = side
        self.name = name or f"follower_{side}"
        self.gripper = gripper
        self._ix = sim.arm_index(side)
        self._connected = False
        ids = np.concatenate([self._ix.actuators, self._ix.finger_actuators])
        self._act_ids = ids
        self._gain = sim.model.actuator_gainprm[ids, 0].copy()
        self._bias = sim.model.actuator_biasprm[ids, 1:3].copy()
        # per ALOHA joint (7): torque flag and hardware error bits; the gripper maps to both finger actuators
        self._torque = np.ones(ARM_DOF, dtype=bool)
        self._errors = np.zeros(ARM_DOF, dtype=int)

    # --- lifecycle --------------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        self._connected = True

    def disconnect(self) -> None:
        if self._connected:
            self.set_torque(False, False)
        self._connected = False

    def _require(self) -> None:
        if not self._connected:
            raise DriverError(f"{self.name}: not connected (call connect())")

    # --- state ------------------------------------------------------------------------------------------------
    def read(self) -> ArmState:
        self._require()
        sim, ix, g = self.sim, self._ix, self.gripper
        with sim.lock:
            d = sim.data
            pos = np.empty(ARM_DOF)
            vel = np.empty(ARM_DOF)
            pos[:6] = d.qpos[ix.qpos]
            vel[:6] = d.qvel[ix.qvel]
            pos[6] = g.follower_finger_to_normalized(d.qpos[ix.finger_qpos[0]])
            vel[6] = d.qvel[ix.finger_qvel[0]] / (g.follower_finger_open - g.follower_finger_close)
            effort = d.actuator_force[self._act_ids[:ARM_DOF]].copy()
            t = sim.time
        return ArmState(pos, vel, effort, t)

    def command(self, position: np.ndarray) -> None:
        """Raw goal (7,) in ALOHA space. Joints without torque (or faulted) ignore it, like a real servo."""
        self._require()
        goal = np.asarray(position, dtype=np.float64)
        if goal.shape != (ARM_DOF,):
            raise SafetyError(f"{self.name}: command needs {ARM_DOF} values, got shape {goal.shape}")
        if not np.all(np.isfinite(goal)):
            raise SafetyError(f"{self.name}: non-finite command {goal}")
        finger = float(self.gripper.normalized_to_follower_finger(goal[6]))
        live = self._torque & (self._errors == 0)
        with self.sim.lock:
            ctrl = self.sim.data.ctrl
            for j in range(6):
                if live[j]:
                    ctrl[self._ix.actuators[j]] = goal[j]
            if live[6]:
                ctrl[self._ix.finger_actuators] = [finger, -finger]

    # --- torque / status --------------------------------------------------------------------------------------
    def _apply_torque(self) -> None:
        """Write the servo gains for the current torque/fault state; newly enabled joints hold where they are."""
        model, data, ix = self.sim.model, self.sim.data, self._ix
        live = self._torque & (self._errors == 0)
        per_actuator = np.concatenate([live[:6], [live[6], live[6]]])
        qpos_of = np.concatenate([ix.qpos, ix.finger_qpos])
        for k, act in enumerate(self._act_ids):
            was_on = model.actuator_gainprm[act, 0] != 0
            if per_actuator[k]:
                model.actuator_gainprm[act, 0] = self._gain[k]
                model.actuator_biasprm[act, 1:3] = self._bias[k]
                if not was_on:
                    data.ctrl[act] = data.qpos[qpos_of[k]]
            else:
                model.actuator_gainprm[act, 0] = 0.0
                model.actuator_biasprm[act, 1:3] = 0.0

    def set_torque(self, arm: bool, gripper: bool | None = None) -> None:
        with self.sim.lock:
            self._torque[:6] = arm
            self._torque[6] = arm if gripper is None else gripper
            self._apply_torque()

    def set_follow(self, on: bool) -> None:
        """Followers never follow: raises DriverError (the leaders follow the followers in a policy trial)."""
        raise DriverError(f"{self.name} is a follower: set_follow is for leader arms (a follower is commanded "
                          f"through the safety layer, it never follows)")

    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.sim.joint_limits(self.side)
        return np.r_[lo, GRIPPER_RANGE[0]], np.r_[hi, GRIPPER_RANGE[1]]

    def inject_fault(self, joint: str = "gripper", bits: int = 1 << 5) -> None:
        """Emulate a servo hardware error (default: overload on the gripper); torque off until reboot()."""
        with self.sim.lock:
            self._errors[JOINT_NAMES.index(joint)] = bits
            self._apply_torque()

    def reboot(self, joint: str) -> None:
        if joint not in JOINT_NAMES:
            raise DriverError(f"{self.name}: unknown joint {joint!r}; choose one of {JOINT_NAMES}")
        with self.sim.lock:
            self._errors[JOINT_NAMES.index(joint)] = 0
            self._apply_torque()

    def status(self) -> ArmStatus:
        joints = [JointStatus(name=n, torque=bool(self._torque[k]), hardware_error=int(self._errors[k]),
                              message="simulated")
                  for k, n in enumerate(ARM_JOINTS + ("gripper",))]
        return ArmStatus(self.name, self.role, self._connected, joints)
