"""ALOHA's start-up and shutdown sequences, the slow re-alignment of followers to leaders, and parking.

Every motion goes through `rig.safety.move_to` and every torque change through `rig.safety.set_torque`, so an
e-stop pressed during a sequence stops it and nothing here can undo it (torque-on is refused while engaged).
The sequences return False when they were stopped (stop event or e-stop): the caller then holds, it does not
carry on with the next step.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

import numpy as np

from drivers.arm import ARM_JOINT_SLICE as ARM, ARM_JOINTS, SIDES, SLEEP_POSE, START_POSE
from workbench.control import LoopStopped
from workbench.rig import Rig
from workbench.timing import Pacer

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


class TeleopStopped(LoopStopped):
    """Teleoperation could not start or go on (nobody squeezed, a servo fault); the followers were held."""


def startup(rig: Rig, stop: threading.Event, progress: Progress = log.info, wait_for_squeeze: bool = True,
            squeeze_timeout: float | None = None) -> bool:
    """ALOHA start-up: reboot follower grippers, torque on, move to the start pose, wait for the squeeze.
    Returns False if stopped (operator stop or e-stop) part-way."""
    rig.require_leaders("teleoperation")
    safety, hz = rig.safety, rig.config.control_hz
    should_stop = stop.is_set
    progress("Rebooting follower grippers")
    for arm in rig.followers.values():
        safety.reboot(arm.name, "gripper")
    progress("Torque on all arms")
    for arm in rig.all_arms().values():
        safety.set_torque(arm.name, True, True)
    progress("Moving all arms to the start pose")
    targets = {arm.name: np.concatenate([START_POSE, arm.read().position[6:7]]) for arm in rig.all_arms().values()}
    if not safety.move_to(targets, 1.5, rig.clock, hz, should_stop):
        return False
    progress("Moving grippers (leaders half open, followers closed)")
    grip = {arm.name: np.concatenate([START_POSE, [0.5 if arm.role == "leader" else 0.0]])
            for arm in rig.all_arms().values()}
    if not safety.move_to(grip, 0.5, rig.clock, hz, should_stop):
        return False
    for arm in rig.leaders.values():
        safety.set_torque(arm.name, True, False)  # grippers free so the operator can squeeze them
    if wait_for_squeeze:
        progress("Squeeze both leader grippers to start")
        if not _wait_for_squeeze(rig, stop, squeeze_timeout):
            return False
    for arm in rig.leaders.values():
        safety.set_torque(arm.name, False, False)
    progress("Teleoperating")
    return True


def _wait_for_squeeze(rig: Rig, stop: threading.Event, timeout: float | None) -> bool:
    threshold = rig.config.gripper.start_threshold_normalized
    pacer = Pacer(rig.clock, rig.config.control_hz)
    t0 = pacer.start()
    while not stop.is_set() and not rig.safety.estopped:
        with rig.safety.io_lock:
            grips = [arm.read().position[6] for arm in rig.leaders.values()]
        if all(g < threshold for g in grips):
            return True
        if timeout is not None and rig.clock.now() - t0 > timeout:
            raise TeleopStopped(f"nobody squeezed both leader grippers within {timeout:.0f} s")
        pacer.wait()
    return False


def leader_gap(rig: Rig) -> tuple[float, str]:
    """Largest leader-follower difference over the arm joints (rad) and where it is ("follower_left/elbow")."""
    worst, where = 0.0, ""
    with rig.safety.io_lock:
        for s in SIDES:
            diff = np.abs(rig.leaders[s].read().position[ARM] - rig.followers[s].read().position[ARM])
            k = int(np.argmax(diff))
            if diff[k] > worst:
                worst, where = float(diff[k]), f"{s} {ARM_JOINTS[k]}"
    return worst, where


def align_to_leaders(rig: Rig, stop: threading.Event, progress: Progress = log.info) -> bool:
    """GELLO-style start-gap check: if the followers are far from the leaders, close the gap slowly (at the
    rig's realign velocity) before following starts, instead of letting the step clamp yank them there."""
    cfg = rig.config.safety
    gap, where = leader_gap(rig)
    if gap <= cfg.start_gap:
        return True
    with rig.safety.io_lock:
        targets = {rig.followers[s].name: rig.leaders[s].read().position.copy() for s in SIDES}
    duration = rig.safety.move_duration(targets, cfg.realign_velocity)
    progress(f"Leader and follower differ by {gap:.2f} rad ({where}): re-aligning slowly ({duration:.1f} s)")
    return rig.safety.move_to(targets, duration, rig.clock, rig.config.control_hz, stop.is_set)


def shutdown(rig: Rig, progress: Progress = log.info) -> None:
    """ALOHA shutdown after teleop: leaders hold their pose, follower grippers open. Never after an e-stop: then
    the followers hold whatever they grip until the operator releases the e-stop and decides."""
    if rig.safety.estopped:
        return
    progress("Leaders hold their pose")
    for arm in rig.leaders.values():
        rig.safety.set_torque(arm.name, True, True)
    targets = {arm.name: np.concatenate([arm.read().position[:6], [1.0]]) for arm in rig.followers.values()}
    progress("Opening follower grippers")
    rig.safety.move_to(targets, 0.5, rig.clock, rig.config.control_hz)


def park(rig: Rig, progress: Progress = log.info, stop: threading.Event | None = None) -> bool:
    """Move the followers to the sleep pose through the safety layer (before torque off: real arms would fall
    where they stand). Returns False if the e-stop or `stop` prevented it."""
    if rig.safety.estopped:
        return False
    for arm in rig.followers.values():
        rig.safety.set_torque(arm.name, True, True)
    targets = {arm.name: np.concatenate([SLEEP_POSE, arm.read().position[6:7]]) for arm in rig.followers.values()}
    duration = rig.safety.move_duration(targets, rig.config.safety.realign_velocity * 2, minimum=1.0)
    progress(f"Moving the followers to the sleep pose ({duration:.1f} s)")
    return rig.safety.move_to(targets, duration, rig.clock, rig.config.control_hz,
                              (stop or threading.Event()).is_set)
