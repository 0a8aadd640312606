"""Operator takeover during a trial on the virtual rig (real DynamixelArm + dynamixel-sdk over the servo emulator,
whose grab model stands in for the operator's hand): the leaders follow the followers while the policy drives, a
squeeze or the pedal hands control to the leaders and back, with no jump beyond the safety clamp, and the span is
recorded as a correction segment."""
import time

import numpy as np
import pytest

from drivers.arm import ARM_JOINT_SLICE, arm_slice
from recorder.store import DatasetStore
from workbench import events as ev
from workbench.config import load_rig_config
from workbench.deploy.policy_source import ExecConfig
from workbench.backends import build_rig
from workbench.session import RigSession

from trial_helpers import RampPolicy, run_trials, ticks_of, wait_event


@pytest.fixture(scope="module")
def session():
    rig = build_rig(load_rig_config("virtual"))
    rig.connect()
    s = RigSession(rig)
    yield s
    s.close(torque_off_here=True)


def step_limits(rig) -> np.ndarray:
    return np.tile(rig.config.safety.step_array(rig.config.control_hz), 2)


def switch_jumps(ticks, limits) -> list[tuple[int, str, float]]:
    """At every change of controller: the requested action's distance from the previous command, over the
    limit (joints where the request exceeded what the clamp lets through in one tick)."""
    out = []
    for prev, t in zip(ticks, ticks[1:]):
        if t.source != prev.source:
            excess = np.abs(t.action - prev.command) / limits
            out.append((t.index, t.source, float(excess.max())))
    return out


def test_squeeze_takes_over_and_release_hands_back_without_a_jump(session, tmp_path):
    rig = session.rig
    emu = rig.emulators
    store = DatasetStore(tmp_path)
    ticks = ticks_of(session)
    following = {}

    def during(runner, seen):
        wait_event(seen, ev.ChunkArrived, where=lambda e: e.tick >= 40)
        # while the policy drives, the leaders follow the followers (torque on, weak)
        with rig.safety.io_lock:
            following["gap"] = max(float(np.abs(rig.leaders[s].read().position[:6]
                                                - rig.followers[s].read().position[:6]).max())
                                   for s in ("left", "right"))
        emu.grab("leader_left", "gripper", normalized=0.05)  # the operator squeezes the leader's gripper
        wait_event(seen, ev.TakeoverChanged, where=lambda e: e.operator)
        emu.release_grab("leader_left", "gripper")
        emu.grab("leader_left", "elbow", rad=float(rig.leaders["left"].read().position[2]) + 0.3)  # a correction
        time.sleep(1.0)
        emu.release_grab("leader_left", "elbow")
        runner.hand_back()  # the pedal
        wait_event(seen, ev.TakeoverChanged, where=lambda e: not e.operator)

    try:
        runner, seen = run_trials(session, store, RampPolicy(rate=0.002), time_limit_s=5.0, during=during,
                                  execution=ExecConfig(mode="async"))
    finally:
        session.remove_tick_listener(ticks.append)
    assert following["gap"] < 0.05, f"leaders did not follow the followers (gap {following['gap']:.3f} rad)"
    changes = [e for e in seen if isinstance(e, ev.TakeoverChanged)]
    assert [(e.operator, e.reason) for e in changes] == [(True, "squeeze"), (False, "released")]
    sources = [t.source for t in ticks]
    assert sources[0] == "policy" and "takeover" in sources and sources[-1] == "policy"
    # the followers tracked the leader during the takeover: the elbow correction shows in the commands
    op = [t for t in ticks if t.source == "takeover"]
    elbow = np.array([t.command[2] for t in op])
    assert elbow.max() - elbow[0] > 0.2
    # no jump at either switch: the requested arm-joint action is within one tick's clamp of the last command
    limits = step_limits(rig)
    arm_cols = np.r_[arm_slice(0)][ARM_JOINT_SLICE].tolist() + np.r_[arm_slice(1)][ARM_JOINT_SLICE].tolist()
    for prev, t in zip(ticks, ticks[1:]):
        if t.source != prev.source:
            excess = np.abs(t.action - prev.command)[arm_cols] / limits[arm_cols]
            assert excess.max() <= 1.0, (t.index, t.source, excess.max())
    # and every command everywhere stayed within the clamp (the safety layer is the one path)
    cmds = np.array([t.command for t in ticks])
    assert (np.abs(np.diff(cmds, axis=0)) <= limits + 1e-9).all()
    # the span is a correction segment of the trial episode; the policy resumed from the current state
    info = runner.results[0].info
    assert info.ended_by == "time_limit"
    (iv,) = info.interventions
    assert iv["reason"] == "squeeze" and iv["end"] > iv["start"]
    segs = [s for s in store.show(runner.results[0].name).segments if s.lane == "correction"]
    assert [(s.start, s.end) for s in segs] == [(iv["start"], iv["end"])]
    after = [c for c in info.chunks if c["tick"] >= iv["end"]]
    assert after, "the policy never planned again after the hand-back"


def test_pedal_takeover_both_ways_without_a_jump(session, tmp_path):
    rig = session.rig
    ticks = ticks_of(session)

    def during(runner, seen):
        wait_event(seen, ev.ChunkArrived, where=lambda e: e.tick >= 30)
        runner.take_over()
        wait_event(seen, ev.TakeoverChanged, where=lambda e: e.operator)
        time.sleep(0.8)  # the virtual rig's scripted hand moves the released leaders meanwhile
        runner.hand_back()
        wait_event(seen, ev.TakeoverChanged, where=lambda e: not e.operator)

    try:
        runner, seen = run_trials(session, DatasetStore(tmp_path), RampPolicy(rate=0.002), time_limit_s=4.0,
                                  during=during, execution=ExecConfig(mode="sync"))
    finally:
        session.remove_tick_listener(ticks.append)
    jumps = switch_jumps(ticks, step_limits(rig))
    assert [s for _, s, _ in jumps] == ["takeover", "policy"]
    assert all(excess <= 1.0 for _, _, excess in jumps), jumps
    assert runner.results[0].info.interventions[0]["reason"] == "pedal"


def test_on_the_simulator_the_scripted_demonstrator_takes_over_and_completes_the_task(tmp_path):
    """The sim's stand-in for the operator's hand: the demonstrator squeezes the following leader, is detected
    exactly as a hand would be, and finishes the task from the current state; the span is a correction."""
    rig = build_rig(load_rig_config("sim-transfer-cube"))
    rig.connect()
    session = RigSession(rig)
    ticks = ticks_of(session)

    def during(runner, seen):
        wait_event(seen, ev.ChunkArrived, where=lambda e: e.tick >= 60)
        rig.leaders["right"].take_over()
        wait_event(seen, ev.TakeoverChanged, where=lambda e: e.operator)

    try:
        store = DatasetStore(tmp_path)
        runner, seen = run_trials(session, store, RampPolicy(rate=0.0), prompt="transfer the cube",
                                  time_limit_s=14.0, seeds=(3,), during=during,
                                  execution=ExecConfig(mode="async", delay_ticks=3))
    finally:
        session.remove_tick_listener(ticks.append)
        session.close(torque_off_here=True)
    (r,) = runner.results
    assert r.outcome == "success" and r.info.ended_by == "success"
    (iv,) = r.info.interventions
    assert iv["reason"] == "squeeze" and iv["end"] == len(ticks)  # still the operator's when the task succeeded
    jumps = switch_jumps(ticks, step_limits(rig))
    assert [s for _, s, _ in jumps] == ["takeover"]
    arm_only = [np.abs(t.action - p.command)[np.r_[0:6, 7:13]].max() for p, t in zip(ticks, ticks[1:])
                if t.source != p.source]
    assert max(arm_only) <= rig.config.safety.step_array(rig.config.control_hz)[0], arm_only
    segs = [s for s in store.show(r.name).segments if s.lane == "correction"]
    assert [(s.start, s.end) for s in segs] == [(iv["start"], iv["end"])]
