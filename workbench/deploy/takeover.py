"""Operator takeover during a trial (HG-DAgger): the leader arms follow the followers while the policy drives, so
the operator can grab them at any moment; a gripper squeeze or the pedal hands control to the leaders (the
followers then track them as in teleop: no jump, the leaders were already at the follower pose); releasing
(pedal, button, key) hands control back to the policy, which plans from the current state.

`TrialSource` is the one action source of a trial: the policy's actions or the leaders' readings, through the
same safety layer. Leader motions (following) go through the safety layer too; the trial's start sequence
(`workbench.deploy.trials`) brings the leaders to the start pose with the followers, at the re-alignment speed,
so following never starts with a fast leader motion toward the operator's hands.

A takeover does not drop the leaders. ALOHA's leaders (WidowX 250, back-drivable) fold under gravity with their
torque off, and the followers would copy the fall. So after a takeover each leader stays in follow mode (weak
torque: a hand overrides it) holding where it is, and the followers copy its (still) reading, until the operator's
hands are on it: one of its joints moved more than HANDS_ON_DEPARTURE (the gripper: SQUEEZE_DEPARTURE) from its
hold, or its gripper was the squeeze that took over. Only then does that leader go limp (teleop); the other keeps
holding until it is moved too. This is what a lab expects of the pedal: pressing it moves nothing; the arm the
operator then grabs is the one that follows.

The squeeze that takes over is a gesture, not a command: each follower gripper keeps its last command (a grasp
stays grasped) until its leader's gripper comes back to that value (within GRIPPER_PICKUP, or crosses it: the
operator released the squeeze), and only then follows the leader's gripper. So the correction span records no
"close the gripper" at its start.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from drivers.arm import ARM_DOF, SIDES, SQUEEZE_DEPARTURE, arm_slice
from workbench.control import Tick
from workbench.deploy.policy_source import PolicySource
from workbench.rig import Observation, Rig

log = logging.getLogger(__name__)
GRIPPER = ARM_DOF - 1

# A squeeze: a leader gripper's reading departs from its last command by more than drivers.arm.SQUEEZE_DEPARTURE
# for SQUEEZE_TICKS ticks in a row (a following leader lags a moving follower by a tick; a hand holds it away).
SQUEEZE_TICKS = 3
# A holding leader has the operator's hands on it when a joint's reading moved this far (rad) away from its hold,
# counted from the closest the joint came to the hold since the takeover (a leader that lagged a moving follower
# when the pedal came first settles onto its hold; that is not a hand). ~6 degrees: far above the steady error of
# a follow-mode servo holding still, and what any grab does at once.
HANDS_ON_DEPARTURE = 0.1
# A follower gripper held at its command picks up its leader's gripper once the leader's reading is this close to
# that command (normalized units) or has crossed it.
GRIPPER_PICKUP = 0.05


def set_following(rig: Rig, arms: list, on: bool) -> None:
    """Leaders into follow mode (torque on, weak: they track commands, a hand overrides them) or out of it (teleop:
    torque off), through the safety layer. An arm already following is left as it is (switching again would drop
    its torque for the operating-mode change)."""
    safety = rig.safety
    for arm in arms:
        if on:
            safety.set_torque(arm.name, True, True)  # refused while e-stopped
        if hasattr(arm, "set_follow"):
            if not (on and getattr(arm, "following", False)):
                with safety.io_lock:
                    arm.set_follow(on)
        elif not on:
            safety.set_torque(arm.name, False, False)
    if on and arms:
        safety.sync([arm.name for arm in arms])


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
        self._departed: set[str] = set()  # leaders whose gripper reading departed from its command this tick
        self._sent: dict[str, np.ndarray] = {}
        # during a takeover: leader -> (the pose it holds in follow mode, closest approach per joint) until the
        # operator's hands are on it; side index -> (held follower gripper command, sign of the leader's gripper
        # reading minus it) until the leader's gripper picks it up
        self._holding: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._grip: dict[int, tuple[float, float | None]] = {}

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
        """The leaders drive from this tick. They keep their follow-mode torque and hold where they are (the pose
        they were last commanded: the followers'); the leader whose gripper squeezed goes limp at once (the
        operator holds it), each other one when the operator moves it (see the module docstring)."""
        assert self._rig is not None
        squeezed = set(self._departed) if reason == "squeeze" else set()
        self.policy.pause()
        self.operator = True
        self._squeeze = 0
        self._holding = {}
        self._grip = {}
        with self._rig.safety.io_lock:
            for i, arm in enumerate(self._leaders):
                hold = self._sent.get(arm.name)
                if hold is None:
                    hold = np.asarray(arm.read().position, dtype=np.float64).copy()
                self._holding[arm.name] = (hold, np.full(len(hold), np.inf))
                follower = self._rig.followers[SIDES[i]].name
                last = self._rig.safety.last_command(follower)
                if last is not None:
                    self._grip[i] = (float(last[GRIPPER]), None)
        for arm in self._leaders:
            if arm.name in squeezed:
                self._release(arm, "its gripper squeezed")
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
        """The leaders' readings: a holding leader that the operator moved is let go (teleop); a follower gripper
        keeps its command until its leader's gripper picks it up."""
        out = []
        for i, arm in enumerate(self._leaders):
            q = np.asarray(arm.read().position, dtype=np.float64).copy()
            held = self._holding.get(arm.name)
            if held is not None:
                hold, closest = held
                off = np.abs(q - hold)
                np.minimum(closest, off, out=closest)
                if np.any(off - closest > _HANDS_ON):
                    self._release(arm, "moved by the operator")
            grip = self._grip.get(i)
            if grip is not None:
                value, sign = grip
                d = q[GRIPPER] - value
                if sign is None:
                    sign = float(np.sign(d))
                    self._grip[i] = (value, sign)
                if abs(d) <= GRIPPER_PICKUP or d * sign < 0:
                    del self._grip[i]  # the operator's gripper reached the follower's: it follows from now
                else:
                    q[GRIPPER] = value  # the squeeze gesture is not a command
            out.append(q)
        a = np.concatenate(out)
        self._last_leader = a
        return a

    def _release(self, arm, why: str) -> None:
        """The operator's hands are on this leader: out of follow mode (torque off), as in teleop."""
        assert self._rig is not None
        self._holding.pop(arm.name, None)
        log.info("%s: %s; torque off (teleop)", arm.name, why)
        set_following(self._rig, [arm], False)

    def _follow(self, on: bool) -> None:
        assert self._rig is not None
        self._sent.clear()
        self._squeeze = 0
        self._departed = set()
        self._holding = {}
        self._grip = {}
        set_following(self._rig, self._leaders, on)

    def _leaders_follow(self, follower_qpos: np.ndarray) -> None:
        """Each leader's gripper is read against its previous command (squeeze), then commanded anew."""
        assert self._rig is not None
        departed = set()
        for i, arm in enumerate(self._leaders):
            last = self._sent.get(arm.name)
            if last is not None and abs(arm.read().position[GRIPPER] - last[GRIPPER]) > SQUEEZE_DEPARTURE:
                departed.add(arm.name)
            self._sent[arm.name] = self._rig.safety.command(arm.name, follower_qpos[arm_slice(i)])
        self._departed = departed
        self._squeeze = self._squeeze + 1 if departed else 0

    def _squeezed(self, follower_qpos: np.ndarray) -> bool:
        return self._squeeze >= SQUEEZE_TICKS


# per joint of a holding leader: how far from its closest approach to the hold is a hand
_HANDS_ON = np.array([HANDS_ON_DEPARTURE] * (ARM_DOF - 1) + [SQUEEZE_DEPARTURE])

__all__ = ["GRIPPER_PICKUP", "HANDS_ON_DEPARTURE", "Intervention", "SQUEEZE_DEPARTURE", "TakeoverControl",
           "TrialSource", "set_following"]
