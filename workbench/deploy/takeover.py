"""Operator takeover during a trial (HG-DAgger): the leader arms follow the followers while the policy drives, so
the operator can grab them at any moment; a gripper squeeze or the pedal hands control to the leaders (the
followers then track them as in teleop: no jump, the leaders were already at the follower pose); releasing
(pedal, button, key) hands control back to the policy, which plans from the current state.

`TrialSource` is the one action source of a trial: the policy's actions or the leaders' readings, through the
same safety layer. Leader motions (following) go through the safety layer too.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from drivers.arm import SIDES, SQUEEZE_DEPARTURE, arm_slice
from workbench.control import Tick
from workbench.deploy.policy_source import PolicySource
from workbench.rig import Observation, Rig

log = logging.getLogger(__name__)

# A squeeze: a leader gripper's reading departs from its last command by more than drivers.arm.SQUEEZE_DEPARTURE
# for SQUEEZE_TICKS ticks in a row (a following leader lags a moving follower by a tick; a hand holds it away).
SQUEEZE_TICKS = 3


class TakeoverControl:
    """Thread-safe requests from the operator's devices (GUI button, pedal, keyboard)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._want: bool | None = None  # True: take over; False: hand back; None: nothing asked

    def take_over(self) -> None:
        with self._lock:
            self._want = True

    def hand_back(self) -> None:
        with self._lock:
            self._want = False

    def toggle(self, operator_now: bool) -> None:
        """A pedal press: the opposite of the current state."""
        with self._lock:
            self._want = not operator_now

    def take(self) -> bool | None:
        with self._lock:
            want, self._want = self._want, None
            return want


@dataclass
class Intervention:
    start: int  # trial tick of the first leader-driven action
    end: int = -1  # first tick back under the policy (exclusive); -1 while open
    reason: str = "pedal"


class TrialSource:
    """The policy, or the operator's leaders when they took over (if the rig has leaders and `takeover`)."""

    def __init__(self, policy: PolicySource, control: TakeoverControl | None = None, takeover: bool = True,
                 on_change: Callable[[bool, int, str], None] | None = None):
        self.policy = policy
        self.control = control or TakeoverControl()
        self.takeover_enabled = takeover
        self.on_change = on_change  # (operator?, tick, reason) on the control thread
        self.operator = False
        self.interventions: list[Intervention] = []
        self.tick = 0
        self._leaders: list = []
        self._rig: Rig | None = None
        self._squeeze = 0
        self._sent: dict[str, np.ndarray] = {}

    @property
    def name(self) -> str:
        return "takeover" if self.operator else "policy"

    @property
    def done(self) -> bool:
        return False

    # -- ActionSource ------------------------------------------------------------------------------------------
    def start(self, rig: Rig, observation: Observation) -> None:
        self._rig = rig
        self.tick = 0
        self.operator = False
        self.interventions = []
        self._leaders = [rig.leaders[s] for s in SIDES] if self.takeover_enabled and rig.has_leaders else []
        if self._leaders:
            self._follow(True)
        self.policy.start(rig, observation)

    def action(self, observation: Observation) -> np.ndarray:
        want = self.control.take()
        if self.operator:
            if want is False:
                self._hand_back(observation, "released")
            else:
                return self._leader_action()
        elif want is True and self._leaders:
            return self._take_over("pedal")
        a = self.policy.action(observation)
        if self._leaders:
            self._leaders_follow(observation.qpos)
            if self._squeezed(observation.qpos):
                return self._take_over("squeeze")
        return a

    def observe(self, tick: Tick) -> None:
        if not self.operator:
            self.policy.observe(tick)
        self.tick += 1

    def stop(self) -> None:
        try:
            self.policy.stop()
        finally:
            if self.operator:
                self.interventions[-1].end = self.tick
                self.operator = False
            if self._leaders:
                try:
                    self._follow(False)
                except Exception as exc:  # noqa: BLE001 - leaders are back-drivable anyway
                    log.error("could not end leader following: %s", exc)

    # -- switching ---------------------------------------------------------------------------------------------
    def _take_over(self, reason: str) -> np.ndarray:
        self._follow(False)  # the leaders go limp (teleop): the operator moves them
        self.policy.pause()
        self.operator = True
        self._squeeze = 0
        self.interventions.append(Intervention(self.tick, reason=reason))
        if self.on_change:
            self.on_change(True, self.tick, reason)
        return self._leader_action()

    def _hand_back(self, observation: Observation, reason: str) -> None:
        self.interventions[-1].end = self.tick
        self.operator = False
        self._follow(True)
        self.policy.resume(hold=self._last_leader if self._last_leader is not None else observation.qpos)
        if self.on_change:
            self.on_change(False, self.tick, reason)

    _last_leader: np.ndarray | None = None

    def _leader_action(self) -> np.ndarray:
        a = np.concatenate([arm.read().position for arm in self._leaders])
        self._last_leader = a
        return a

    def _follow(self, on: bool) -> None:
        assert self._rig is not None
        self._sent.clear()
        self._squeeze = 0
        safety = self._rig.safety
        for arm in self._leaders:
            if on:
                safety.set_torque(arm.name, True, True)  # refused while e-stopped
            if hasattr(arm, "set_follow"):
                with safety.io_lock:
                    arm.set_follow(on)
            elif not on:
                safety.set_torque(arm.name, False, False)
        if on:
            safety.sync([arm.name for arm in self._leaders])

    def _leaders_follow(self, follower_qpos: np.ndarray) -> None:
        """Each leader's gripper is read against its previous command (squeeze), then commanded anew."""
        assert self._rig is not None
        departed = False
        for i, arm in enumerate(self._leaders):
            last = self._sent.get(arm.name)
            if last is not None and abs(arm.read().position[6] - last[6]) > SQUEEZE_DEPARTURE:
                departed = True
            self._sent[arm.name] = self._rig.safety.command(arm.name, follower_qpos[arm_slice(i)])
        self._squeeze = self._squeeze + 1 if departed else 0

    def _squeezed(self, follower_qpos: np.ndarray) -> bool:
        return self._squeeze >= SQUEEZE_TICKS


__all__ = ["Intervention", "SQUEEZE_DEPARTURE", "TakeoverControl", "TrialSource"]
