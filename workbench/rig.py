"""The Rig: arms, cameras and a clock built from a RigConfig, whatever the backend (sim, virtual, dynamixel);
`workbench.backends.build_rig` makes one.

Front ends (CLI, GUI, recorder, trials) see only this object. It owns the I/O lock shared with its safety
layer, so an e-stop from another thread lands between two control ticks, never inside a bus transaction.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from drivers.arm import BIMANUAL_DOF, SIDES, Arm, ArmStatus, arm_slice
from drivers.cameras.base import Camera, CameraStats, Frame
from drivers.clock import Clock
from drivers.errors import DriverError, SafetyError
from workbench.config import RigConfig
from workbench.safety import SafetyLayer

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Observation:
    t: float  # rig clock when the joints were read
    qpos: np.ndarray  # (14,) followers, ALOHA space [left 6 joints, left gripper, right 6, right gripper]
    qvel: np.ndarray  # (14,)
    effort: np.ndarray  # (14,) motor currents (mA) or simulated actuator forces
    frames: dict[str, Frame]  # the newest frame per camera; each carries its own capture time


class NoLeadersError(DriverError):
    """Teleoperation or recording asked of a rig without leader arms."""


class Rig:
    def __init__(self, config: RigConfig, leaders: dict[str, Arm], followers: dict[str, Arm],
                 cameras: dict[str, Camera], clock: Clock, sim: Any = None,
                 on_close: Callable[[], None] | None = None):
        self.config = config
        self.leaders = leaders  # by side
        self.followers = followers
        self.cameras = cameras
        self.clock = clock
        self.sim = sim  # the simulated world (sim backend only)
        self._on_close = on_close
        self.io_lock = threading.RLock()
        self.safety = SafetyLayer(self.all_arms(), config.safety, self.io_lock, config.control_hz)
        self.connected = False

    # -- lifecycle -------------------------------------------------------------------------------------
    def all_arms(self) -> dict[str, Arm]:
        arms = [*(self.leaders[s] for s in SIDES if s in self.leaders), *(self.followers[s] for s in SIDES)]
        return {a.name: a for a in arms}

    @property
    def follower_names(self) -> list[str]:
        """Follower arm names in the bimanual order ([left, right]), the order of every 14-vector."""
        return [self.followers[s].name for s in SIDES]

    @property
    def has_leaders(self) -> bool:
        return all(s in self.leaders for s in SIDES)

    def require_leaders(self, what: str = "teleoperation") -> None:
        if not self.has_leaders:
            raise NoLeadersError(f"{what} needs leader arms, and rig {self.config.name!r} has none (a deployment-only "
                                 "rig); add [arms.leader_left] and [arms.leader_right] to its rig file")

    def connect(self, progress: Progress = log.info) -> None:
        """Connect every arm, then every camera; on failure, release what was opened and re-raise."""
        opened: list[Any] = []
        try:
            for arm in self.all_arms().values():
                progress(f"Connecting {arm.name}")
                arm.connect()
                opened.append(arm)
            for name, cam in self.cameras.items():
                progress(f"Starting camera {name}")
                cam.connect()
                opened.append(cam)
        except BaseException:
            for dev in reversed(opened):
                try:
                    dev.disconnect()
                except Exception as exc:  # noqa: BLE001 - cleanup must go on
                    log.warning("cleanup of %s failed: %s", getattr(dev, "name", dev), exc)
            self._close_backend()
            raise
        self.connected = True
        progress("Rig connected")

    def disconnect(self) -> None:
        """Hold the followers, then disconnect (arms torque off) and stop the cameras. Never raises."""
        if self.connected:
            try:
                self.safety.hold()
            except Exception as exc:  # noqa: BLE001
                log.warning("hold before disconnect failed: %s", exc)
        with self.io_lock:
            for arm in self.all_arms().values():
                try:
                    arm.disconnect()
                except Exception as exc:  # noqa: BLE001
                    log.warning("disconnecting %s: %s", arm.name, exc)
        for cam in self.cameras.values():
            try:
                cam.disconnect()
            except Exception as exc:  # noqa: BLE001
                log.warning("stopping camera %s: %s", cam.name, exc)
        self.connected = False
        self._close_backend()

    def _close_backend(self) -> None:
        if self._on_close is not None:
            fn, self._on_close = self._on_close, None
            fn()

    def __enter__(self) -> "Rig":
        if not self.connected:
            self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    # -- episodes (simulation) -------------------------------------------------------------------------
    def begin_episode(self, seed: int | None = None) -> None:
        """In simulation: reset the world (randomized objects) and re-plan the scripted leaders."""
        if self.sim is None:
            return
        with self.io_lock:
            self.sim.reset(seed)
            for leader in self.leaders.values():
                if hasattr(leader, "plan"):
                    leader.plan()
            self.safety.sync([a.name for a in self.followers.values()])

    def phase(self) -> str | None:
        """The sub-task the scripted demonstrator performs now (segment labels); None outside its demonstration."""
        if self.sim is None:
            return None
        from drivers.sim.demonstrator import DONE_PHASE, STARTUP_PHASE

        phase = getattr(self.leaders.get("right"), "phase", None)
        return None if phase in (STARTUP_PHASE, DONE_PHASE) else phase

    def success(self) -> bool | None:
        return None if self.sim is None else bool(self.sim.success)

    # -- status ----------------------------------------------------------------------------------------
    def arm_status(self) -> list[ArmStatus]:
        with self.io_lock:
            out = []
            for arm in self.all_arms().values():
                try:
                    out.append(arm.status())
                except DriverError as exc:
                    out.append(ArmStatus(arm.name, arm.role, False, []))
                    log.warning("status of %s: %s", arm.name, exc)
            return out

    def reboot(self, arm_name: str, joint: str) -> None:
        """Clear a servo fault through the safety layer (refused while the e-stop is engaged)."""
        self.safety.reboot(arm_name, joint)

    def camera_stats(self) -> dict[str, CameraStats]:
        return {n: c.stats() for n, c in self.cameras.items()}

    def observation(self, frames: bool = True) -> Observation:
        """What a policy sees: follower joints (ALOHA space, 14), velocities, efforts and the latest camera frames
        with their capture times. The one shape for trials, replay and policies."""
        with self.io_lock:
            t = self.clock.now()
            states = [self.followers[s].read() for s in SIDES]
        return Observation(
            t=t,
            qpos=np.concatenate([s.position for s in states]),
            qvel=np.concatenate([s.velocity for s in states]),
            effort=np.concatenate([s.effort for s in states]),
            frames={name: cam.latest() for name, cam in self.cameras.items()} if frames else {},
        )

    def observe(self) -> dict[str, np.ndarray]:
        """Follower state only (no frames), as a dict: tests and quick checks."""
        o = self.observation(frames=False)
        return {"qpos": o.qpos, "qvel": o.qvel, "effort": o.effort}

    def command(self, action: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
        """Send a bimanual action (14, ALOHA space) to the followers through the safety layer; returns what was
        sent. `present` (the followers' qpos read this tick) saves a bus read per arm."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (BIMANUAL_DOF,):
            raise SafetyError(f"an action has {BIMANUAL_DOF} values ([left 7, right 7]), got shape {action.shape}")
        with self.io_lock:
            return np.concatenate([
                self.safety.command(name, action[arm_slice(i)], None if present is None else present[arm_slice(i)])
                for i, name in enumerate(self.follower_names)])

