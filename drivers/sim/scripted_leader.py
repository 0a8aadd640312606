"""Scripted leader arms: the demonstrator's joint trajectory behind the `Arm` contract (role "leader").

A teleop loop reads the leaders and commands the followers with what it read (through its safety layer), as
with a human on real leaders. Before the demonstration the leaders emulate ALOHA's start-up: they rest at the
start pose with the grippers half open, then "squeeze" (normalized gripper 0, below the aloha1 start threshold
of ~0.39) so a ceremony waiting for the squeeze proceeds, and the demonstration begins right after.

The schedule is driven by *reads* and ALOHA's own start signal, not by time: a start-up ceremony may spend
seconds of sim time moving the followers without looking at the leaders, and the demonstration must not run
away meanwhile. It counts the distinct ticks at which a leader was read: after `hold_reads` at rest the leaders
squeeze, and the demonstration's tick 0 is the tick after whichever comes first:
- a leader's arm torque is switched off while squeezing (ALOHA's ceremony does that right after it saw the
  squeeze: "torque off the leader arms and start"), or
- `squeeze_reads` distinct ticks were read squeezed (for loops without a ceremony; None disables this).
From then on it follows sim ticks, so a loop that reads every tick and commands the follower with the reading
replays the trajectory exactly (demo tick k -> target k).
"""
from __future__ import annotations

import numpy as np

from drivers.arm import ARM_DOF, ARM_JOINTS, ArmState, ArmStatus, GRIPPER_RANGE, JointStatus, Role, START_POSE
from drivers.errors import DriverError
from drivers.gripper import GRIPPER_PRESETS, GripperConstants
from drivers.sim.aloha_sim import AlohaSim
from drivers.sim.demonstrator import STARTUP_PHASE, JointTrajectory, plan_demo

IDLE_GRIPPER = 0.5  # normalized: ALOHA moves the leader grippers to mid-range during start-up
SQUEEZE_GRIPPER = 0.0  # normalized: fully squeezed, well below the start threshold


class ScriptedDemo:
    """One demonstration shared by both scripted leaders: plan per episode, start-up schedule, playback."""

    def __init__(self, sim: AlohaSim, hold_reads: int = 2, squeeze_reads: int | None = 3,
                 gripper: GripperConstants = GRIPPER_PRESETS["aloha1"]):
        if SQUEEZE_GRIPPER >= gripper.start_threshold_normalized or IDLE_GRIPPER <= gripper.start_threshold_normalized:
            raise DriverError("scripted leader: start threshold of these gripper constants is outside (0, 0.5)")
        self.sim = sim
        self.hold_reads = hold_reads
        self.squeeze_reads = squeeze_reads
        self.gripper = gripper
        self.trajectory: JointTrajectory | None = None
        self._planned_episode: int | None = None
        self._reads = 0
        self._last_read_tick: int | None = None
        self.start_tick: int | None = None

    # --- planning ---------------------------------------------------------------------------------------------
    def plan(self) -> JointTrajectory:
        """Plan the demonstration for the sim's current episode (its initial object poses) and restart the
        start-up schedule. Called automatically by the first read after `sim.reset()`."""
        self.trajectory = plan_demo(self.sim.task, self.sim.initial_object_poses, gripper=self.gripper)
        self._planned_episode = self.sim.episode
        self._reads = 0
        self._last_read_tick = None
        self.start_tick = None
        return self.trajectory

    def _ensure_planned(self) -> JointTrajectory:
        if self.trajectory is None or self._planned_episode != self.sim.episode:
            self.plan()
        assert self.trajectory is not None
        return self.trajectory

    def start_now(self) -> None:
        """Skip the start-up ceremony: the demonstration's tick 0 is the current tick."""
        self._ensure_planned()
        self.start_tick = self.sim.tick

    # --- schedule ---------------------------------------------------------------------------------------------
    def observe_read(self) -> None:
        """Count a leader read (once per tick, whichever leader) toward the start-up schedule."""
        self._ensure_planned()
        tick = self.sim.tick
        if self.start_tick is not None or tick == self._last_read_tick:
            return
        self._last_read_tick = tick
        self._reads += 1
        if self.squeeze_reads is not None and self._reads >= self.hold_reads + self.squeeze_reads:
            self.start_tick = tick + 1

    def release(self) -> None:
        """A leader's arm torque went off: if the leaders are squeezing, teleop starts with the next tick."""
        if self.trajectory is not None and self.start_tick is None and self.squeezing:
            self.start_tick = self.sim.tick + 1

    @property
    def step(self) -> int | None:
        """Demonstration tick now (None before the start is scheduled; may be -1 on the last squeeze tick)."""
        return None if self.start_tick is None else self.sim.tick - self.start_tick

    @property
    def squeezing(self) -> bool:
        return self.start_tick is not None or self._reads > self.hold_reads

    @property
    def phase(self) -> str:
        step = self.step
        if step is None or step < 0 or self.trajectory is None:
            return STARTUP_PHASE
        return self.trajectory.phase_at(step)

    @property
    def finished(self) -> bool:
        step = self.step
        return step is not None and self.trajectory is not None and step >= len(self.trajectory)

    def target(self, side: str, step: int | None = None) -> np.ndarray:
        """Leader position (7,) in ALOHA space at demonstration tick `step` (default: now)."""
        traj = self._ensure_planned()
        step = self.step if step is None else step
        if step is None or step < 0:
            grip = SQUEEZE_GRIPPER if self.squeezing else IDLE_GRIPPER
            return np.concatenate([START_POSE, [grip]])
        return traj.target(side, step)


class ScriptedLeader:
    """A leader arm whose "hand" is the demonstrator. `phase` names what the demonstration is doing now."""

    role: Role = "leader"

    def __init__(self, demo: ScriptedDemo, side: str, name: str | None = None):
        self.demo = demo
        self.side = side
        self.name = name or f"leader_{side}"
        self._connected = False
        self._torque = np.zeros(ARM_DOF, dtype=bool)  # leaders are back-drivable during teleop
        self.last_command: np.ndarray | None = None

    @property
    def sim(self) -> AlohaSim:
        return self.demo.sim

    @property
    def phase(self) -> str:
        return self.demo.phase

    @property
    def finished(self) -> bool:
        return self.demo.finished

    def plan(self) -> JointTrajectory:
        """(Re)plan for the sim's current episode; both leaders share the plan."""
        return self.demo.plan()

    reset = plan

    @property
    def connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    def read(self) -> ArmState:
        if not self._connected:
            raise DriverError(f"{self.name}: not connected (call connect())")
        with self.sim.lock:
            self.demo.observe_read()
            pos = self.demo.target(self.side)
            step = self.demo.step
            prev = self.demo.target(self.side, step - 1) if step is not None and step >= 1 else pos
            t = self.sim.time
        vel = (pos - prev) / self.sim.dt
        return ArmState(pos, vel, np.zeros(ARM_DOF), t)

    def command(self, position: np.ndarray) -> None:
        """Accepted and ignored: the script holds the leader (kept in `last_command` for inspection)."""
        self.last_command = np.asarray(position, dtype=np.float64).copy()

    def set_torque(self, arm: bool, gripper: bool | None = None) -> None:
        """Recorded for status(); switching the arm torque off while squeezing starts the demonstration."""
        if not arm:
            with self.sim.lock:
                self.demo.release()
        self._torque[:6] = arm
        self._torque[6] = arm if gripper is None else gripper

    def status(self) -> ArmStatus:
        joints = [JointStatus(name=n, torque=bool(self._torque[k]), message="scripted")
                  for k, n in enumerate(ARM_JOINTS + ("gripper",))]
        return ArmStatus(self.name, self.role, self._connected, joints)

    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.sim.joint_limits(self.side)
        return np.r_[lo, GRIPPER_RANGE[0]], np.r_[hi, GRIPPER_RANGE[1]]

    def reboot(self, joint: str) -> None:
        """Nothing to clear on a scripted leader."""
