"""The one safety layer every arm motion goes through.

Per command: refuse non-finite targets, clamp to joint limits, clamp the change since the last command to a
per-tick step (a leader yanked or a policy glitch becomes a bounded motion, never a jump). The e-stop can be
pressed from any thread: it takes the rig's I/O lock, so it lands between two control ticks (at most one tick
late), then holds every commanded arm where it is (goal = present position) or torques the followers off, and
refuses further commands until released. Shutdown (error, Ctrl-C, exit) holds the followers first.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Literal, Mapping

import numpy as np

from drivers.arm import ARM_DOF, JOINT_NAMES, Arm
from drivers.errors import DriverError, SafetyError

log = logging.getLogger(__name__)


def _ticks_to_rad(lo: int, hi: int) -> tuple[float, float]:
    return ((lo - 2048) * 2 * math.pi / 4096, (hi - 2048) * 2 * math.pi / 4096)


# ViperX 300 (follower) joint-space limits from its servo position limits (reference: aloha-hardware.md).
DEFAULT_JOINT_LIMITS: dict[str, tuple[float, float]] = {
    "waist": (-math.pi, math.pi),
    "shoulder": _ticks_to_rad(841, 2867),
    "elbow": _ticks_to_rad(898, 3094),
    "forearm_roll": (-math.pi, math.pi),
    "wrist_angle": _ticks_to_rad(830, 3504),
    "wrist_rotate": (-math.pi, math.pi),
    "gripper": (0.0, 1.0),  # normalized
}


@dataclass(frozen=True)
class SafetyConfig:
    max_joint_step: float = 0.1  # rad per control tick (5 rad/s at 50 Hz)
    max_gripper_step: float = 0.2  # normalized units per tick
    estop_action: Literal["hold", "torque_off"] = "hold"
    joint_limits: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_JOINT_LIMITS))

    def __post_init__(self):
        if self.max_joint_step <= 0 or self.max_gripper_step <= 0:
            raise ValueError("safety step limits must be positive")
        if self.estop_action not in ("hold", "torque_off"):
            raise ValueError(f"estop_action must be 'hold' or 'torque_off', got {self.estop_action!r}")
        unknown = set(self.joint_limits) - set(JOINT_NAMES)
        if unknown:
            raise ValueError(f"joint_limits has unknown joints {sorted(unknown)}; known: {list(JOINT_NAMES)}")
        for name, (lo, hi) in self.joint_limits.items():
            if not lo < hi:
                raise ValueError(f"joint_limits.{name}: lower {lo} must be below upper {hi}")

    def limit_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        merged = {**DEFAULT_JOINT_LIMITS, **self.joint_limits}
        lo = np.array([merged[n][0] for n in JOINT_NAMES])
        hi = np.array([merged[n][1] for n in JOINT_NAMES])
        return lo, hi

    def step_array(self) -> np.ndarray:
        return np.array([self.max_joint_step] * (ARM_DOF - 1) + [self.max_gripper_step])


class SafetyLayer:
    def __init__(self, arms: Mapping[str, Arm], config: SafetyConfig | None = None, io_lock: threading.RLock | None = None):
        self.arms = dict(arms)
        self.config = config or SafetyConfig()
        self.io_lock = io_lock or threading.RLock()
        self._lo, self._hi = self.config.limit_arrays()
        self._step = self.config.step_array()
        self._last: dict[str, np.ndarray] = {}
        self._estop = threading.Event()
        self.estop_reason = ""
        self.clamped_ticks = 0  # commands that were changed by a clamp (a sign of a fast leader or bad policy)
        self._io_s = 0.0  # time spent in arm.command since the last take_io_time() (for loop statistics)

    # -- state ------------------------------------------------------------------------------------------
    @property
    def estopped(self) -> bool:
        return self._estop.is_set()

    def sync(self, names: list[str] | None = None) -> None:
        """Take present positions as the reference for the step clamp (call before commanding an arm)."""
        with self.io_lock:
            for name in names or list(self.arms):
                self._last[name] = np.asarray(self.arms[name].read().position, dtype=np.float64).copy()

    def last_command(self, name: str) -> np.ndarray | None:
        v = self._last.get(name)
        return None if v is None else v.copy()

    # -- commands ---------------------------------------------------------------------------------------
    def clamp(self, name: str, target: np.ndarray) -> np.ndarray:
        target = np.asarray(target, dtype=np.float64)
        if target.shape != (ARM_DOF,):
            raise SafetyError(f"{name}: command must have {ARM_DOF} values (6 joints + gripper), got {target.shape}")
        if not np.all(np.isfinite(target)):
            raise SafetyError(f"{name}: refusing a non-finite command {np.round(target, 3).tolist()}")
        out = np.clip(target, self._lo, self._hi)
        last = self._last.get(name)
        if last is not None:
            out = np.clip(out, last - self._step, last + self._step)
        if not np.array_equal(out, target):
            self.clamped_ticks += 1
        return out

    def command(self, name: str, target: np.ndarray) -> np.ndarray:
        """Clamp and send one arm's goal; returns what was sent."""
        with self.io_lock:
            if self._estop.is_set():
                raise SafetyError(f"e-stop engaged ({self.estop_reason}); release it before moving {name}")
            if name not in self._last:
                self._last[name] = np.asarray(self.arms[name].read().position, dtype=np.float64).copy()
            out = self.clamp(name, target)
            t0 = time.perf_counter()
            self.arms[name].command(out)
            self._io_s += time.perf_counter() - t0
            self._last[name] = out
            return out

    def take_io_time(self) -> float:
        io, self._io_s = self._io_s, 0.0
        return io

    def move_to(self, targets: Mapping[str, np.ndarray], duration: float, clock, hz: float,
                should_stop=lambda: False) -> None:
        """Linear interpolation from present positions to targets, one command per tick (ALOHA start-up move)."""
        from workbench.timing import Pacer

        self.sync(list(targets))
        starts = {n: self._last[n].copy() for n in targets}
        steps = max(1, int(round(duration * hz)))
        pacer = Pacer(clock, hz)
        pacer.start()
        for k in range(1, steps + 1):
            if should_stop():
                return
            a = k / steps
            for n, goal in targets.items():
                self.command(n, (1 - a) * starts[n] + a * np.asarray(goal, dtype=np.float64))
            pacer.wait()

    # -- stopping ---------------------------------------------------------------------------------------
    def estop(self, reason: str = "operator") -> None:
        """Engage the e-stop from any thread; applied between two ticks (the I/O lock)."""
        self._estop.set()
        self.estop_reason = reason
        log.warning("E-STOP: %s", reason)
        with self.io_lock:
            self._apply_stop(self.config.estop_action)

    def release(self) -> None:
        with self.io_lock:
            self._estop.clear()
            self.estop_reason = ""
            self.sync([n for n in self._last if self.arms[n].connected])

    def hold(self) -> None:
        with self.io_lock:
            self._apply_stop("hold")

    def _apply_stop(self, action: str) -> None:
        for name in list(self._last):
            arm = self.arms[name]
            try:
                if not arm.connected:
                    continue
                if action == "torque_off" and arm.role == "follower":
                    arm.set_torque(False, False)
                else:
                    present = np.asarray(arm.read().position, dtype=np.float64)
                    arm.command(np.clip(present, self._lo, self._hi))
                    self._last[name] = present
            except DriverError as exc:  # keep stopping the other arms
                log.error("%s: could not %s during stop: %s", name, action, exc)
                try:
                    arm.set_torque(False, False)
                except DriverError:
                    pass
