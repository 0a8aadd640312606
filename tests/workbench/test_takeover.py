"""Operator takeover during a trial on the virtual rig (real DynamixelArm + dynamixel-sdk over the servo emulator,
whose grab model stands in for the operator's hand): the leaders follow the followers while the policy drives, a
squeeze or the pedal hands control to the leaders and back, with no jump beyond the safety clamp, and the span is
recorded as a correction segment. The leaders reach the start pose at the re-alignment speed, keep their torque
after a pedal takeover until the operator moves them, and the squeeze that takes over is not copied to the
followers' grippers."""
import time

import numpy as np
import pytest

from drivers.arm import ARM_JOINT_SLICE, GRIPPER_COLUMNS, SIDES, SLEEP_POSE, START_POSE, arm_slice
from recorder.reader import EpisodeReader
from recorder.store import DatasetStore
from workbench.deploy.takeover import GRIPPER_PICKUP, set_following
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
    # no jump at either switch: the requested action, grippers included, is within one tick's clamp of the last
    # command (the squeeze that took over is not a command: it used to close the follower gripper 0.3 -> 0.05)
    limits = step_limits(rig)
    for prev, t in zip(ticks, ticks[1:]):
        if t.source != prev.source:
            excess = np.abs(t.action - prev.command) / limits
            assert excess.max() <= 1.0, (t.index, t.source, excess.round(2).tolist())
    # the follower gripper kept its command through the squeeze: until the operator's leader gripper came back
    # to it, it held; it never followed the squeeze down
    first = next(i for i, t in enumerate(ticks) if t.source == "takeover")
    held = ticks[first - 1].command[GRIPPER_COLUMNS[0]]
    grip = np.array([t.action[GRIPPER_COLUMNS[0]] for t in op])
    assert grip.min() >= held - GRIPPER_PICKUP - 1e-9, (held, grip.min())
    assert grip[0] == held
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
    # and what the episode records inside the correction span has no "close the gripper" at its start
    with EpisodeReader(store.path(runner.results[0].name)) as r:
        recorded = np.asarray(r.action)[iv["start"]:iv["end"], GRIPPER_COLUMNS[0]]
    assert recorded.min() >= held - GRIPPER_PICKUP - 1e-6, (held, recorded.min())
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


def leader_torque(rig, side: str) -> list[bool]:
    with rig.safety.io_lock:
        return [bool(j.torque) for j in rig.leaders[side].status().joints]


def test_a_pedal_takeover_keeps_the_leaders_holding_until_the_operator_moves_one(session, tmp_path):
    """The pedal moves nothing: both leaders keep their (weak, follow-mode) torque and hold where they are, so
    they do not fold (with torque off the virtual rig's released leaders drift as a falling arm would, and the
    followers copied it); the leader the operator then moves goes limp and the followers follow it; the other
    keeps holding."""
    rig = session.rig
    emu = rig.emulators
    ticks = ticks_of(session)
    seen_state = {}

    def during(runner, seen):
        wait_event(seen, ev.ChunkArrived, where=lambda e: e.tick >= 30)
        runner.take_over()
        wait_event(seen, ev.TakeoverChanged, where=lambda e: e.operator)
        time.sleep(0.8)  # nobody touches the leaders
        seen_state["before_grab"] = len(ticks)
        seen_state["torque"] = {s: leader_torque(rig, s) for s in SIDES}
        emu.grab("leader_left", "elbow", rad=float(rig.leaders["left"].read().position[2]) + 0.3)
        time.sleep(0.8)
        emu.release_grab("leader_left", "elbow")
        seen_state["torque_after"] = {s: leader_torque(rig, s) for s in SIDES}
        runner.hand_back()
        wait_event(seen, ev.TakeoverChanged, where=lambda e: not e.operator)

    try:
        runner, seen = run_trials(session, DatasetStore(tmp_path), RampPolicy(rate=0.002), time_limit_s=5.0,
                                  during=during, execution=ExecConfig(mode="sync"))
    finally:
        session.remove_tick_listener(ticks.append)
    assert runner.results[0].info.interventions[0]["reason"] == "pedal"
    # untouched, both leaders kept their torque and the followers stood still
    assert all(all(v) for v in seen_state["torque"].values()), seen_state["torque"]
    op = [t for t in ticks[:seen_state["before_grab"]] if t.source == "takeover"]
    assert len(op) > 20
    cmds = np.array([t.command for t in op])
    drift = np.abs(cmds - cmds[0]).max(axis=0)
    assert drift.max() < 0.01, drift.round(3).tolist()
    # the operator moved the left leader: it went limp and the left follower followed its elbow
    assert not any(seen_state["torque_after"]["left"]), seen_state["torque_after"]
    assert all(seen_state["torque_after"]["right"]), seen_state["torque_after"]
    elbow = np.array([t.command[2] for t in ticks[seen_state["before_grab"]:] if t.source == "takeover"])
    assert elbow.max() - elbow[0] > 0.2
    jumps = switch_jumps(ticks, step_limits(rig))
    assert [s for _, s, _ in jumps] == ["takeover", "policy"] and all(x <= 1.0 for _, _, x in jumps), jumps


def test_at_trial_start_the_leaders_move_at_the_realign_speed(session, tmp_path, monkeypatch):
    """The leaders come to the start pose with the followers, at the re-alignment speed; following then starts
    from the followers' pose. (They were commanded straight to the follower pose at the per-tick clamp, ~3.1
    rad/s toward the operator's hands.)"""
    rig = session.rig
    hz, cfg = rig.config.control_hz, rig.config.safety
    # the leaders far from the start pose (rest pose), let go as after teleop
    set_following(rig, list(rig.leaders.values()), True)
    rest = {a.name: np.concatenate([SLEEP_POSE, [0.3]]) for a in rig.leaders.values()}
    assert rig.safety.move_to(rest, 2.5, rig.clock, hz)
    set_following(rig, list(rig.leaders.values()), False)
    sent: dict[str, list[np.ndarray]] = {a.name: [] for a in rig.leaders.values()}
    real = rig.safety.command

    def spy(name, target, present=None):
        out = real(name, target, present)
        if name in sent:
            sent[name].append(np.array(out))
        return out

    monkeypatch.setattr(rig.safety, "command", spy)
    # and the left follower stops short of the start pose (an obstacle, within the start gap): following must
    # not start with the leader jumping the rest of the way
    name = rig.followers["left"].name
    lo, hi = rig.safety.limits(name)
    lo[2] = START_POSE[2] + 0.2  # elbow: it comes down from the rest pose's 1.55
    monkeypatch.setitem(rig.safety._limits, name, (lo, hi))
    runner, _ = run_trials(session, DatasetStore(tmp_path), RampPolicy(rate=0.0), time_limit_s=1.0,
                           execution=ExecConfig(mode="sync"))
    monkeypatch.undo()
    assert runner.results, "the trial did not run"
    for name, cmds in sent.items():
        c = np.array(cmds)
        assert len(c) > 10, name
        assert np.abs(c[-1, :6] - c[0, :6]).max() > 0.5, name  # a long way: from near the rest pose
        assert np.abs(c[-1, :6] - START_POSE).max() < cfg.start_gap, name
        speed = np.abs(np.diff(c[:, :6], axis=0)).max() * hz
        assert speed <= cfg.realign_velocity * 1.1, f"{name}: {speed:.2f} rad/s (allowed {cfg.realign_velocity})"
        assert np.abs(np.diff(c[:, 6])).max() <= 0.05, name  # the gripper too: no snap toward the fingers


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
