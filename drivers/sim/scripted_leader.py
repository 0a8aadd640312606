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

Policy trials with operator takeover (`set_follow`, as on hardware): in follow mode a leader's read() returns the
last pose it was commanded with (the followers'; before any command, the demonstrator's pose) and the start-up
schedule does not run. `take_over()` is the sim's operator's hand: the demonstrator plans a fresh demonstration
from the world as it is now and the leaders' commanded poses (`demonstrator.plan_takeover`: resumes the task
script after what the contacts show is done). Until the plan starts the leaders' gripper readings are "squeezed"
(2 x SQUEEZE_DEPARTURE from their commanded gripper), which is how the workbench detects a takeover on hardware.
The plan's tick 0 is the tick after a leader leaves follow mode (`set_follow(False)`, or its arm torque goes off)
or after `squeeze_reads` read ticks, and its first target is the latest commanded pose (no jump). When the plan
ends, or on `hand_back()` / `set_follow(True)`, the scripted hand lets go: a following leader tracks commands
again, a torque-off one rests where the hand left it. `set_follow(False)` in follow mode without a `take_over()`
(a pedal on hardware) takes over the same way.
"""
from __future__ import annotations

import numpy as np

from drivers.arm import (ARM_DOF, ARM_JOINTS, SIDES, SQUEEZE_DEPARTURE, ArmState, ArmStatus, GRIPPER_RANGE, JointStatus,
                         Role, START_POSE)
from drivers.errors import DriverError
from drivers.gripper import GRIPPER_PRESETS, GripperConstants
from drivers.sim.aloha_sim import AlohaSim
from drivers.sim.demonstrator import (STARTUP_PHASE, TAKEOVER_BLEND_TICKS, JointTrajectory, TaskProgress, plan_demo,
                                     plan_takeover)

IDLE_GRIPPER = 0.5  # normalized: ALOHA moves the leader grippers to mid-range during start-up
SQUEEZE_GRIPPER = 0.0  # normalized: fully squeezed, well below the start threshold
TAKEOVER_SQUEEZE = 2.0 * SQUEEZE_DEPARTURE  # how far the scripted hand pulls a following leader's gripper
TAKEOVER_PHASE = "take-over"  # phase label while a takeover's squeeze waits for the workbench to switch over


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
        # follow mode / takeover (see the module docstring)
        self.commanded: dict[str, np.ndarray] = {}  # side -> last pose a following leader was commanded with
        self.takeover: JointTrajectory | None = None  # the scripted hand's plan while it holds the leaders
        self.takeover_progress: TaskProgress | None = None
        self.takeover_start: int | None = None  # sim tick of the takeover plan's tick 0
        self._takeover_raw: np.ndarray | None = None  # plan before its head is blended into the latest command
        self._takeover_reads = 0
        self._takeover_last_tick: int | None = None
        self.rest: dict[str, np.ndarray] = {}  # side -> where the hand left a torque-off leader

    # --- planning ---------------------------------------------------------------------------------------------
    def plan(self) -> JointTrajectory:
        """Plan the demonstration for the sim's current episode (its initial object poses) and restart the
        start-up schedule. Called automatically by the first read after `sim.reset()`."""
        self.trajectory = plan_demo(self.sim.task, self.sim.initial_object_poses, gripper=self.gripper)
        self._planned_episode = self.sim.episode
        self.commanded, self.rest = {}, {}
        self.takeover, self.takeover_progress, self.takeover_start = None, None, None
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

    # --- takeover (policy trials) -------------------------------------------------------------------------------
    def follower_pose(self, side: str) -> np.ndarray:
        """The side's last commanded pose, else the simulated follower's present pose (ALOHA space)."""
        if side in self.commanded:
            return self.commanded[side].copy()
        sim, ix, g = self.sim, self.sim.arm_index(side), self.gripper
        with sim.lock:
            q = np.r_[sim.data.qpos[ix.qpos], g.follower_finger_to_normalized(sim.data.qpos[ix.finger_qpos[0]])]
        return q

    def take_over(self) -> TaskProgress:
        """The operator (the demonstrator) takes over: plan from the world's current state and the commanded
        poses; the leaders squeeze until a leader leaves follow mode. Returns what the plan resumes from."""
        with self.sim.lock:
            self._ensure_planned()
            start = np.concatenate([self.follower_pose(s) for s in SIDES])
            goals = {s: float(self.gripper.follower_finger_to_normalized(
                self.sim.data.ctrl[self.sim.arm_index(s).finger_actuators[0]])) for s in SIDES}
            traj, progress = plan_takeover(self.sim.task, self.sim.data.qpos.copy(), start, gripper=self.gripper,
                                           gripper_goals=goals)
            self.takeover, self.takeover_progress = traj, progress
            self._takeover_raw = traj.targets.copy()
            self.takeover_start = None
            self._takeover_reads = 0
            self._takeover_last_tick = None
            self.rest = {}
        return progress

    @property
    def takeover_active(self) -> bool:
        """The scripted hand holds the leaders (from take_over() until its plan ends or hand_back())."""
        if self.takeover is None:
            return False
        if self.takeover_start is not None and self.sim.tick - self.takeover_start >= len(self.takeover):
            self._let_go()
            return False
        return True

    @property
    def takeover_step(self) -> int | None:
        return None if self.takeover_start is None else self.sim.tick - self.takeover_start

    def start_takeover(self) -> None:
        """A leader left follow mode: the takeover plan starts with the next tick, from the latest commands."""
        if self.takeover is None or self.takeover_start is not None:
            return
        targets = self._takeover_raw.copy()
        head = min(TAKEOVER_BLEND_TICKS, len(targets))
        latest = np.concatenate([self.follower_pose(s) for s in SIDES])
        latest[[6, 13]] = targets[0, [6, 13]]  # grippers start from the followers' goals (see plan_takeover)
        targets[:head] += np.outer(1.0 - np.arange(head) / head, latest - targets[0])
        self.takeover.targets = targets
        self.takeover_start = self.sim.tick + 1

    def observe_takeover_read(self) -> None:
        tick = self.sim.tick
        if self.takeover_start is not None or tick == self._takeover_last_tick:
            return
        self._takeover_last_tick = tick
        self._takeover_reads += 1
        if self.squeeze_reads is not None and self._takeover_reads > self.squeeze_reads:
            self.start_takeover()

    def takeover_target(self, side: str, following: bool) -> np.ndarray:
        """A held leader's position now: squeezed at the commanded pose until the plan starts, then the plan."""
        step = self.takeover_step
        if step is None:  # waiting for the workbench to leave follow mode
            q = self.follower_pose(side)
            if following:
                g = q[6]
                q[6] = g - TAKEOVER_SQUEEZE if g - TAKEOVER_SQUEEZE >= GRIPPER_RANGE[0] else g + TAKEOVER_SQUEEZE
            return q
        return self.takeover.target(side, step)  # clamped: the tick of the switch reads the plan's tick 0

    def hand_back(self) -> None:
        """The scripted hand lets go now (the workbench hands control back to the policy)."""
        if self.takeover is not None:
            self._let_go()

    def _let_go(self) -> None:
        traj, step = self.takeover, self.takeover_step
        if traj is not None:
            self.rest = {s: (traj.target(s, step) if step is not None and step >= 0 else self.follower_pose(s))
                         for s in SIDES}
        self.takeover = None
        self.takeover_start = None

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
        if self.takeover_active:
            step = self.takeover_step
            return TAKEOVER_PHASE if step is None or step < 0 else self.takeover.phase_at(step)
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
        self._following = False
        self._prev: tuple[int | None, np.ndarray | None] = (None, None)  # (tick, position) of the last held read

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

    @property
    def following(self) -> bool:
        return self._following

    def set_follow(self, on: bool) -> None:
        """on: read() returns the commanded poses (torque on, status); a scripted takeover in progress ends (the
        policy resumes). off: teleop (torque off); from follow mode it starts the takeover plan, taking over
        first if take_over() was not called (an operator's pedal)."""
        with self.sim.lock:
            if on:
                self.demo.hand_back()
                self.demo.rest.pop(self.side, None)
                self._following = True
                self._torque[:] = True
                return
            if self._following:
                if not self.demo.takeover_active and self.demo.takeover_start is None:
                    self.demo.take_over()
                self.demo.start_takeover()
            self._following = False
            self._torque[:] = False

    def take_over(self) -> TaskProgress:
        """The sim's operator's hand grabs the leaders: the demonstrator plans from the current state (both
        leaders share the plan; see the module docstring)."""
        return self.demo.take_over()

    def hand_back(self) -> None:
        self.demo.hand_back()

    def _held_read(self) -> np.ndarray | None:
        """Position when follow mode / a takeover decides it, else None (the start-up schedule / demonstration)."""
        demo = self.demo
        demo._ensure_planned()  # a new episode drops the last one's commands and takeover
        if demo.takeover_active:
            demo.observe_takeover_read()
            return demo.takeover_target(self.side, self._following)
        if self._following:
            return demo.follower_pose(self.side) if self.side in demo.commanded else demo.target(self.side)
        if self.side in demo.rest:
            return demo.rest[self.side].copy()
        return None

    def read(self) -> ArmState:
        if not self._connected:
            raise DriverError(f"{self.name}: not connected (call connect())")
        with self.sim.lock:
            held = self._held_read()
            if held is not None:
                tick = self.sim.tick
                prev, self._prev = self._prev, (tick, held.copy())
                vel = (held - prev[1]) / self.sim.dt if prev[0] == tick - 1 else np.zeros(ARM_DOF)
                return ArmState(held, vel, np.zeros(ARM_DOF), self.sim.time)
            self.demo.observe_read()
            pos = self.demo.target(self.side)
            step = self.demo.step
            prev = self.demo.target(self.side, step - 1) if step is not None and step >= 1 else pos
            t = self.sim.time
        vel = (pos - prev) / self.sim.dt
        return ArmState(pos, vel, np.zeros(ARM_DOF), t)

    def command(self, position: np.ndarray) -> None:
        """In follow mode the leader goes there (read() returns it); otherwise accepted and ignored: the script
        holds the leader (kept in `last_command` for inspection)."""
        self.last_command = np.asarray(position, dtype=np.float64).copy()
        if self._following:
            with self.sim.lock:
                self.demo._ensure_planned()
                self.demo.commanded[self.side] = self.last_command.copy()

    def set_torque(self, arm: bool, gripper: bool | None = None) -> None:
        """Recorded for status(); switching the arm torque off while squeezing starts the demonstration."""
        if not arm:
            with self.sim.lock:
                self.demo.release()
                if self.demo.takeover_active:
                    self.demo.start_takeover()
                self._following = False
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
