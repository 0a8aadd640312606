"""The one safety layer every arm motion and every torque change goes through.

Per command: refuse non-finite targets, clamp to the joint limits (the arm model's range, narrowed by the rig
file), clamp the change since the last command to what the joint velocity limit allows in one tick, and keep
the goal within a bound of where the joint actually is (a blocked or lagging follower is never wound up into a
large pending motion). A leader yanked or a policy glitch becomes a bounded motion, never a jump.

The e-stop can be pressed from any thread: it takes the rig's I/O lock, so it lands between two control ticks
(at most one tick late), then holds every commanded arm where it is (goal = present position; a follower's
gripper keeps its squeeze, so a grasped object stays grasped) or torques the followers off. While it is engaged nothing moves an arm and nothing turns torque on or reboots a servo (a reboot
restores torque): only torque *off* is allowed. Shutdown (error, Ctrl-C, exit) holds the followers first.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping

import numpy as np

from drivers.arm import ARM_DOF, ARM_JOINT_SLICE, JOINT_NAMES, Arm
from drivers.errors import DriverError, SafetyError

log = logging.getLogger(__name__)
ARM_ONLY = ARM_JOINT_SLICE  # the goal bound skips the gripper: it squeezes objects, far from its goal by design
GRIPPER = ARM_DOF - 1  # normalized: 0 closed .. 1 open


@dataclass(frozen=True)
class SafetyConfig:
    max_joint_step: float = 0.1  # rad per control tick: a hard cap whatever the rate
    max_gripper_step: float = 0.2  # normalized units per tick
    max_joint_velocity: float = 3.14  # rad/s of the commanded trajectory (the ViperX servos' own velocity limit)
    max_goal_error: float = 0.35  # rad: how far a joint's goal may lead its present position
    start_gap: float = 0.25  # rad: a leader-follower gap above this is closed slowly before following starts
    realign_velocity: float = 0.5  # rad/s of that slow re-alignment
    estop_action: Literal["hold", "torque_off"] = "hold"
    joint_limits: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # narrows the arm models' ranges
    # s: a policy chunk computed from an older observation (capture -> entry, on the loop's clock) is refused, and
    # policy clients give up waiting for a reply after this long. pi0 answers in ~0.1 s on a GPU (0.2-0.3 s over a
    # network); 0.5 s is 25 ticks at 50 Hz, half a 50-action chunk: an older plan is of a world that moved on.
    max_chunk_age_s: float = 0.5
    max_chunk_refusals: int = 3  # chunks refused in a row (too old, or wild: deploy.chunk_check) abort the trial

    def __post_init__(self):
        for k in ("max_joint_step", "max_gripper_step", "max_joint_velocity", "max_goal_error", "start_gap",
                  "realign_velocity", "max_chunk_age_s"):
            if not getattr(self, k) > 0:
                raise ValueError(f"{k} must be positive, got {getattr(self, k)}")
        if isinstance(self.max_chunk_refusals, bool) or not isinstance(self.max_chunk_refusals, int) \
                or self.max_chunk_refusals < 1:
            raise ValueError(f"max_chunk_refusals must be an integer >= 1, got {self.max_chunk_refusals!r}")
        if self.estop_action not in ("hold", "torque_off"):
            raise ValueError(f"estop_action must be 'hold' or 'torque_off', got {self.estop_action!r}")
        unknown = set(self.joint_limits) - set(JOINT_NAMES)
        if unknown:
            raise ValueError(f"joint_limits has unknown joints {sorted(unknown)}; known: {list(JOINT_NAMES)}")
        for name, (lo, hi) in self.joint_limits.items():
            if not lo < hi:
                raise ValueError(f"joint_limits.{name}: lower {lo} must be below upper {hi}")

    def step_array(self, control_hz: float) -> np.ndarray:
        """Largest change of each of the 7 values per tick at `control_hz`."""
        joint = min(self.max_joint_step, self.max_joint_velocity / control_hz)
        return np.array([joint] * (ARM_DOF - 1) + [self.max_gripper_step])

    def narrow(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """An arm model's (lo, hi) narrowed by the rig file's joint_limits (never widened past the model)."""
        lo, hi = np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)
        for j, (a, b) in self.joint_limits.items():
            k = JOINT_NAMES.index(j)
            lo[k], hi[k] = max(lo[k], a), min(hi[k], b)
            if not lo[k] < hi[k]:
                raise ValueError(f"joint_limits.{j} = [{a}, {b}] lies outside the arm's range")
        return lo, hi


class SafetyLayer:
    def __init__(self, arms: Mapping[str, Arm], config: SafetyConfig | None = None,
                 io_lock: threading.RLock | None = None, control_hz: float = 50.0):
        self.arms = dict(arms)
        self.config = config or SafetyConfig()
        self.io_lock = io_lock or threading.RLock()
        self.control_hz = control_hz
        self._limits = {n: self.config.narrow(*a.joint_limits()) for n, a in self.arms.items()}
        self._step = self.config.step_array(control_hz)
        self._last: dict[str, np.ndarray] = {}
        self._estop = threading.Event()
        self.estop_reason = ""
        self.clamped_ticks = 0  # commands that were changed by a clamp (a sign of a fast leader or bad policy)
        self._io_s = 0.0  # time spent in arm.command since the last take_io_time() (for loop statistics)
        self._listeners: list[Callable[[bool, str], None]] = []

    # -- state ------------------------------------------------------------------------------------------
    @property
    def estopped(self) -> bool:
        return self._estop.is_set()

    def limits(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self._limits[name]
        return lo.copy(), hi.copy()

    def on_estop(self, fn: Callable[[bool, str], None]) -> None:
        """`fn(engaged, reason)` after every change of the e-stop state (called on the pressing thread)."""
        self._listeners.append(fn)

    def sync(self, names: list[str] | None = None) -> None:
        """Take present positions as the reference for the step clamp (call before commanding an arm)."""
        with self.io_lock:
            for name in names or list(self.arms):
                self._last[name] = np.asarray(self.arms[name].read().position, dtype=np.float64).copy()

    def last_command(self, name: str) -> np.ndarray | None:
        v = self._last.get(name)
        return None if v is None else v.copy()

    # -- commands ---------------------------------------------------------------------------------------
    def clamp(self, name: str, target: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
        target = np.asarray(target, dtype=np.float64)
        if target.shape != (ARM_DOF,):
            raise SafetyError(f"{name}: command must have {ARM_DOF} values (6 joints + gripper), got {target.shape}")
        if not np.all(np.isfinite(target)):
            raise SafetyError(f"{name}: refusing a non-finite command {np.round(target, 3).tolist()}")
        lo, hi = self._limits[name]
        out = np.clip(target, lo, hi)
        if present is not None:
            bound = self.config.max_goal_error
            p = np.asarray(present, dtype=np.float64)[ARM_ONLY]
            out[ARM_ONLY] = np.clip(out[ARM_ONLY], p - bound, p + bound)
        last = self._last.get(name)
        if last is not None:  # last, so it is a hard cap: a goal far from a lagging arm comes back at step rate
            out = np.clip(out, last - self._step, last + self._step)
        if not np.array_equal(out, target):
            self.clamped_ticks += 1
        return out

    def command(self, name: str, target: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
        """Clamp and send one arm's goal; returns what was sent. `present` (a follower's position read this tick)
        feeds the goal-vs-present bound; without it a follower is read here."""
        with self.io_lock:
            if self._estop.is_set():
                raise SafetyError(f"e-stop engaged ({self.estop_reason}); release it before moving {name}")
            arm = self.arms[name]
            if present is None and (arm.role == "follower" or name not in self._last):
                # leaders only get start-up poses: no goal bound, and no extra read (a scripted leader counts them)
                present = np.asarray(arm.read().position, dtype=np.float64)
            if name not in self._last:
                self._last[name] = np.array(present, dtype=np.float64)
            if arm.role != "follower":
                present = None
            out = self.clamp(name, target, present)
            t0 = time.perf_counter()
            arm.command(out)
            self._io_s += time.perf_counter() - t0
            self._last[name] = out
            return out

    def take_io_time(self) -> float:
        io, self._io_s = self._io_s, 0.0
        return io

    def set_torque(self, name: str, arm: bool, gripper: bool | None = None) -> None:
        """Torque through the lock; turning anything on is refused while the e-stop is engaged. An arm whose
        torque comes on holds where it is, so the step clamp starts from there."""
        on = arm or bool(gripper)
        with self.io_lock:
            if on and self._estop.is_set():
                raise SafetyError(f"e-stop engaged ({self.estop_reason}); refusing to turn torque on for {name}")
            self.arms[name].set_torque(arm, gripper)
            if on:
                self._last[name] = np.asarray(self.arms[name].read().position, dtype=np.float64).copy()

    def reboot(self, name: str, joint: str) -> None:
        """A servo reboot restores its torque: refused while the e-stop is engaged."""
        with self.io_lock:
            if self._estop.is_set():
                raise SafetyError(f"e-stop engaged ({self.estop_reason}); release it before rebooting {name}/{joint}")
            self.arms[name].reboot(joint)
            if name in self._last:
                self._last[name] = np.asarray(self.arms[name].read().position, dtype=np.float64).copy()

    def move_to(self, targets: Mapping[str, np.ndarray], duration: float, clock, hz: float,
                should_stop=lambda: False) -> bool:
        """Linear interpolation from present positions to targets, one command per tick (ALOHA start-up move).
        Returns False when stopped early (`should_stop` or the e-stop)."""
        from workbench.timing import Pacer

        self.sync(list(targets))
        starts = {n: self._last[n].copy() for n in targets}
        steps = max(1, int(round(duration * hz)))
        pacer = Pacer(clock, hz)
        pacer.start()
        for k in range(1, steps + 1):
            if should_stop() or self.estopped:
                return False
            a = k / steps
            for n, goal in targets.items():
                self.command(n, (1 - a) * starts[n] + a * np.asarray(goal, dtype=np.float64))
            pacer.wait()
        return True

    def move_duration(self, targets: Mapping[str, np.ndarray], velocity: float, minimum: float = 0.5) -> float:
        """Seconds for a move to `targets` at `velocity` rad/s on the farthest arm joint (present positions)."""
        far = 0.0
        with self.io_lock:
            for n, goal in targets.items():
                q = np.asarray(self.arms[n].read().position, dtype=np.float64)
                far = max(far, float(np.abs(np.asarray(goal)[ARM_ONLY] - q[ARM_ONLY]).max()))
        return max(minimum, far / velocity)

    # -- stopping ---------------------------------------------------------------------------------------
    def estop(self, reason: str = "operator") -> None:
        """Engage the e-stop from any thread; applied between two ticks (the I/O lock). Pressing it again while
        engaged applies the stop again (cheap) but is logged and announced once."""
        first = not self._estop.is_set()
        self._estop.set()
        if first:
            self.estop_reason = reason
            log.warning("E-STOP: %s", reason)
        with self.io_lock:
            self._apply_stop(self.config.estop_action)
        if first:
            for fn in list(self._listeners):
                fn(True, reason)

    def release(self) -> None:
        was = self._estop.is_set()
        with self.io_lock:
            self._estop.clear()
            self.estop_reason = ""
            self.sync([n for n in self._last if self.arms[n].connected])
        if was:
            for fn in list(self._listeners):
                fn(False, "")

    def hold(self) -> None:
        with self.io_lock:
            self._apply_stop("hold")

    def torque_off(self, names: list[str] | None = None) -> None:
        """Torque off (allowed in any state): the arms go limp where they are."""
        with self.io_lock:
            for name in names or list(self.arms):
                arm = self.arms[name]
                try:
                    if arm.connected:
                        arm.set_torque(False, False)
                except DriverError as exc:
                    log.error("%s: could not turn torque off: %s", name, exc)

    def _hold_goal(self, name: str, present: np.ndarray) -> np.ndarray:
        """Arm joints: goal := present. A follower's gripper keeps a goal that is more closed than where it is:
        a gripper squeezing an object sits at the object's width and the squeeze force *is* that position error,
        so goal := present would let go of it (the object drops). A gripper that was opening stops where it is."""
        lo, hi = self._limits[name]
        goal = np.clip(present, lo, hi)
        last = self._last.get(name)
        if last is not None and self.arms[name].role == "follower":
            goal[GRIPPER] = float(np.clip(min(last[GRIPPER], present[GRIPPER]), lo[GRIPPER], hi[GRIPPER]))
        return goal

    def _apply_stop(self, action: str) -> None:
        for name in list(self._last):
            arm = self.arms[name]
            try:
                if not arm.connected:
                    continue
                if action == "torque_off" and arm.role == "follower":
                    arm.set_torque(False, False)
                else:
                    goal = self._hold_goal(name, np.asarray(arm.read().position, dtype=np.float64))
                    arm.command(goal)
                    self._last[name] = goal
            except DriverError as exc:  # keep stopping the other arms
                log.error("%s: could not %s during stop: %s", name, action, exc)
                try:
                    arm.set_torque(False, False)
                except DriverError:
                    pass
