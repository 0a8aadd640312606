"""The Rig: arms, cameras and a clock built from a RigConfig, whatever the backend (sim, virtual, dynamixel).

Front ends (CLI, GUI, recorder, trials) see only this object. It owns the I/O lock shared with its safety
layer, so an e-stop from another thread lands between two control ticks, never inside a bus transaction.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import numpy as np

from drivers.arm import SIDES, Arm, ArmStatus
from drivers.cameras.base import Camera, CameraStats
from drivers.clock import Clock, RealClock
from drivers.errors import DriverError
from workbench.config import RigConfig
from workbench.safety import SafetyLayer

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


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
        self.safety = SafetyLayer(self.all_arms(), config.safety, self.io_lock)
        self.connected = False

    # -- lifecycle -------------------------------------------------------------------------------------
    def all_arms(self) -> dict[str, Arm]:
        return {a.name: a for a in [*(self.leaders[s] for s in SIDES), *(self.followers[s] for s in SIDES)]}

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
        with self.io_lock:
            self.all_arms()[arm_name].reboot(joint)
            if self.all_arms()[arm_name].role == "follower":
                self.safety.sync([arm_name])

    def camera_stats(self) -> dict[str, CameraStats]:
        return {n: c.stats() for n, c in self.cameras.items()}

    def observe(self) -> dict[str, np.ndarray]:
        """Follower state in ALOHA space (14,), for trials and replay."""
        with self.io_lock:
            states = [self.followers[s].read() for s in SIDES]
        return {
            "qpos": np.concatenate([s.position for s in states]),
            "qvel": np.concatenate([s.velocity for s in states]),
            "effort": np.concatenate([s.effort for s in states]),
        }


def build_rig(config: RigConfig) -> Rig:
    """Instantiate (not connect) the rig a config describes."""
    from workbench import backends

    return backends.BUILDERS[config.backend](config)
