"""Action sources for the control loop: the leaders (teleop), a recorded episode (replay), standing still (hold).

A policy source (trials) is one more class with the same four members; the loop does not change for it.
"""
from __future__ import annotations

import numpy as np

from drivers.arm import ARM_DOF, BIMANUAL_DOF, SIDES
from workbench.rig import Observation, Rig


class LeaderSource:
    """Teleoperation: the followers copy the leader arms (their reading is the recorded action)."""

    name = "teleop"
    done = False

    def __init__(self) -> None:
        self._leaders: list = []

    def start(self, rig: Rig, observation: Observation) -> None:
        rig.require_leaders("teleoperation")
        self._leaders = [rig.leaders[s] for s in SIDES]

    def action(self, observation: Observation) -> np.ndarray:
        return np.concatenate([arm.read().position for arm in self._leaders])

    def stop(self) -> None:
        pass


class ReplaySource:
    """A recorded episode's actions, one per tick; done after the last."""

    name = "replay"

    def __init__(self, actions: np.ndarray):
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != BIMANUAL_DOF or len(actions) == 0:
            raise ValueError(f"actions of shape {actions.shape} cannot drive two {ARM_DOF}-value arms")
        self.actions = actions
        self.index = 0  # the next action to send

    @property
    def done(self) -> bool:
        return self.index >= len(self.actions)

    def start(self, rig: Rig, observation: Observation) -> None:
        pass

    def action(self, observation: Observation) -> np.ndarray:
        a = self.actions[self.index]
        self.index += 1
        return a

    def stop(self) -> None:
        pass


class HoldSource:
    """Followers stay where they were when the run started (a paused trial, a reset period)."""

    name = "hold"
    done = False

    def __init__(self) -> None:
        self._pose: np.ndarray | None = None

    def start(self, rig: Rig, observation: Observation) -> None:
        self._pose = observation.qpos.copy()

    def action(self, observation: Observation) -> np.ndarray:
        assert self._pose is not None, "HoldSource.start() was not called"
        return self._pose

    def stop(self) -> None:
        pass
