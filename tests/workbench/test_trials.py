"""Trials on real rigs (MuJoCo sim; the virtual Dynamixel rig for takeover with leader arms): chunk alignment,
execution modes, language commands, the trial episode's fields, errors. Policies here are in-process stand-ins;
tests/workbench/test_trials_served.py runs served and trained policies."""
import json
import time

import numpy as np
import pytest

from drivers.arm import BIMANUAL_DOF
from recorder.format import TRIAL_ATTR
from recorder.reader import EpisodeReader, read_info
from recorder.store import DatasetStore
from workbench import events as ev
from workbench.config import load_rig_config
from workbench.deploy.policy_source import ExecConfig, ExecMode
from workbench.backends import build_rig
from workbench.session import RigSession

from trial_helpers import FailingPolicy, RampPolicy, run_trials, ticks_of, wait_event


@pytest.fixture(scope="module")
def sim_session():
    rig = build_rig(load_rig_config("sim-transfer-cube"))
    rig.connect()
    session = RigSession(rig)
    yield session
    session.close(torque_off_here=True)


@pytest.mark.parametrize("mode,delay", [("sync", None), ("async", 4), ("rtc", 4)])
def test_chunks_are_entered_at_the_slot_of_their_observation(sim_session, tmp_path, mode, delay):
    """A reply for the observation of slot s is entered at slot s + (ticks since the observation): the actions
    for slots that passed are skipped (async), none is executed twice (sync: the new chunk continues after the
    last executed slot)."""
    policy = RampPolicy()
    ticks = ticks_of(sim_session)
    try:
        runner, seen = run_trials(sim_session, DatasetStore(tmp_path), policy, time_limit_s=2.0,
                                  execution=ExecConfig(mode=mode, delay_ticks=delay), takeover=False)
    finally:
        sim_session.remove_tick_listener(ticks.append)
    chunks = runner.results[0].info.chunks
    assert len(chunks) >= 3
    # the first chunk is entered at its index 0 (nothing ran before it), later ones at the slot after the last
    # executed one: 25 actions per chunk either way
    steps = [c["step"] for c in chunks]
    assert np.diff(steps).tolist() == [24] + [25] * (len(steps) - 2), chunks
    for c in chunks:
        if delay is not None:
            assert c["delay_ticks"] == delay
            assert c["start"] == c["tick"] + delay
    # the requested steps are the slots executed before each observation: policy time, not ticks
    assert [r["step"] for r in policy.requests][:len(chunks)] == [c["step"] for c in chunks]
    # latency compensation, seen in what was executed: the tick a chunk is entered at executes the action for
    # the slot that is next *now*, counted from its observation's slot. Async / rtc kept executing the old chunk
    # meanwhile, so that is index (ticks since the observation); sync held, so index 1 (the observation's own
    # tick executed index 0's slot). The first chunk starts at index 0. (RampPolicy's actions differ per index:
    # entering a chunk at its index 0 on arrival is a visible step back.)
    arrived = [e for e in seen if isinstance(e, ev.ChunkArrived)]
    assert len(arrived) >= 3
    by_index = {t.index: t for t in ticks}
    for n, e in enumerate(arrived):
        if e.loop_tick not in by_index:  # entered after the trial's last tick
            continue
        passed = 0 if n == 0 else (1 if mode == "sync" else e.start_tick - e.tick)
        if delay is not None and n > 0 and mode != "sync":
            assert passed == delay
        executed = by_index[e.loop_tick].action
        assert np.array_equal(executed, e.actions[passed]), \
            (n, passed, [int(np.argmin(np.abs(e.actions[:, 0] - executed[0])))])


def test_sync_executes_k_then_holds_while_waiting(sim_session, tmp_path):
    """Sync with a 5-tick simulated delay: after 25 actions the followers hold (the last command repeated) until
    the next chunk is entered; the recorded actions show the hold."""
    policy = RampPolicy(rate=0.004)
    ticks = ticks_of(sim_session)
    runner, _ = run_trials(sim_session, DatasetStore(tmp_path), policy, time_limit_s=1.5,
                           execution=ExecConfig(mode="sync", delay_ticks=5), takeover=False)
    sim_session.remove_tick_listener(ticks.append)
    actions = np.array([t.action for t in ticks])
    waist = actions[:, 0]
    moving = np.abs(np.diff(waist)) > 1e-9
    # 5 ticks to the first chunk, 25 moving, 5 held (the boundary tick's repeat included), 25 moving...
    assert not moving[:4].any() and moving[5:29].all(), moving[:40].astype(int)
    assert not moving[29:33].any() and moving[34:58].all(), moving[:70].astype(int)
    chunks = runner.results[0].info.chunks
    assert [c["delay_ticks"] for c in chunks[:3]] == [5, 5, 5]


def test_async_mode_never_holds_and_ensemble_blends(sim_session, tmp_path):
    policy = RampPolicy()
    ticks = ticks_of(sim_session)
    run_trials(sim_session, DatasetStore(tmp_path), policy, time_limit_s=1.5,
               execution=ExecConfig(mode="async", delay_ticks=3), takeover=False)
    sim_session.remove_tick_listener(ticks.append)
    waist = np.array([t.action[0] for t in ticks])
    assert (np.abs(np.diff(waist[4:])) > 1e-9).all(), "async held the followers although chunks were on time"

    policy = RampPolicy()
    runner, _ = run_trials(sim_session, DatasetStore(tmp_path / "ens"), policy, time_limit_s=1.0,
                           execution=ExecConfig(mode="async", delay_ticks=2, ensemble=True), takeover=False)
    chunks = runner.results[0].info.chunks
    assert len(chunks) >= 20, "ensembling queries a chunk per answer"
    with pytest.raises(ValueError, match="ensembling"):
        ExecConfig(mode="sync", ensemble=True)


def test_rtc_requests_carry_the_unexecuted_prefix_and_the_delay(sim_session, tmp_path):
    policy = RampPolicy()
    runner, _ = run_trials(sim_session, DatasetStore(tmp_path), policy, time_limit_s=1.5,
                           execution=ExecConfig(mode="rtc", delay_ticks=4), takeover=False)
    reqs = policy.requests
    assert reqs[0]["prefix"] is None  # nothing to continue yet
    chunks = runner.results[0].info.chunks
    for r in reqs[1:3]:
        assert r["prefix"] is not None and r["prefix"].shape[1] == BIMANUAL_DOF
        assert r["delay"] == 4 + ExecConfig().rtc_margin
        assert len(r["prefix"]) == 50 - (r["step"] - chunks[0]["step"]) if r is reqs[1] else True
    # the prefix is the current chunk from the request's slot on: its first action is the one executed there
    first = reqs[1]
    assert first["prefix"][0][0] == pytest.approx(first["prefix"][1][0] - policy.rate)


@pytest.mark.system
def test_language_command_changes_the_prompt_at_the_next_chunk_and_is_a_segment(sim_session, tmp_path):
    policy = RampPolicy()
    store = DatasetStore(tmp_path)

    def during(runner, seen):
        wait_event(seen, ev.ChunkArrived, where=lambda e: e.tick >= 30)
        runner.command("now wave faster")

    runner, seen = run_trials(sim_session, store, policy, time_limit_s=3.0, during=during, trials=2,
                              execution=ExecConfig(mode="sync", delay_ticks=2), takeover=False)
    first = len(runner.results[0].info.chunks)
    prompts = [r["prompt"] for r in policy.requests][:first]
    k = prompts.index("now wave faster")
    assert set(prompts[:k]) == {"wave"} and set(prompts[k:]) == {"now wave faster"}
    # the next trial starts from the task's prompt again
    assert [p["text"] for p in runner.results[1].info.prompts] == ["wave"]
    changes = [(e.text, e.source) for e in seen if isinstance(e, ev.PromptChanged)]
    assert changes == [("wave", "initial"), ("now wave faster", "operator"), ("wave", "initial")]
    info = runner.results[0].info
    assert [(p["text"], p["source"]) for p in info.prompts] == [("wave", "initial"), ("now wave faster", "operator")]
    change_tick = info.prompts[1]["tick"]
    assert change_tick == info.chunks[k]["tick"]  # from the request that first used it
    segs = [s for s in store.show(runner.results[0].name).segments if s.lane == "prompt"]
    assert [(s.start, s.text) for s in segs] == [(0, "wave"), (change_tick, "now wave faster")]
    with pytest.raises(ValueError):
        runner.command("   ")


def test_a_trial_episode_carries_policy_prompts_chunks_latency_and_outcome(sim_session, tmp_path):
    store = DatasetStore(tmp_path)
    runner, seen = run_trials(sim_session, store, RampPolicy(latency_s=0.01), time_limit_s=1.0, trials=2,
                              seeds=(41, 42), execution=ExecConfig(mode="async"), takeover=False)
    assert [r.outcome for r in runner.results] == ["failure", "failure"]  # waving does not move the cube
    ended = [e for e in seen if isinstance(e, ev.TrialEnded)]
    assert [e.ended_by for e in ended] == ["time_limit", "time_limit"]
    path = store.path(runner.results[1].name)
    info = read_info(path)
    assert info.sim_seed == 42 and info.outcome == "failure"
    trial = info.trial
    assert trial is not None and json.loads(info.extra[TRIAL_ATTR]) == trial
    assert trial["policy"] == "" and trial["policy_id"] == "ramp@7"  # runs/ramp/policy at step 7 and trial["checkpoint"] == 7
    assert trial["mode"] == "async" and trial["trial_index"] == 1 and trial["seed"] == 42
    assert trial["prompts"][0]["text"] == "wave" and trial["prompts"][0]["t"] == 0.0
    assert len(trial["chunks"]) >= 2
    for c in trial["chunks"]:
        assert c["infer_ms"] >= 10.0 and c["roundtrip_ms"] >= c["infer_ms"]
        assert c["start"] >= c["tick"] + 1
    assert trial["ended_by"] == "time_limit" and trial["outcome_source"] == "auto"
    assert 0.05 < trial["closest_m"]["right"] < 0.5  # the gripper never got near the cube
    assert trial["duration_s"] == pytest.approx(1.0)
    with EpisodeReader(path) as r:
        assert len(r.action) == 50
    # the operator can override the simulator's verdict; the label file wins
    runner.label(1, "partial")
    assert store.show(runner.results[1].name).outcome == "partial"


def test_policy_failure_aborts_the_trial_keeps_the_episode_and_the_next_trial_runs(sim_session, tmp_path):
    """A policy that fails (its server went away): each failed request is a refused chunk (the followers hold, a
    fresh observation is asked for); three in a row abort the trial, recorded with the reasons; the next trial
    runs; the session ends normally."""
    store = DatasetStore(tmp_path)
    runner, seen = run_trials(sim_session, store, FailingPolicy(fail_at=2), time_limit_s=3.0, trials=2,
                              execution=ExecConfig(mode="sync", delay_ticks=2), takeover=False)
    assert not [e for e in seen if isinstance(e, ev.SessionError)]
    stopped = [e for e in seen if isinstance(e, ev.Stopped)][-1]
    assert stopped.reason == "done"
    assert [r.info.ended_by for r in runner.results] == ["aborted", "aborted"]
    first = runner.results[0].info
    assert len(first.chunks) == 2 and [r["kind"] for r in first.refusals] == ["failed"] * 3
    assert "policy server went away" in first.refusals[0]["reason"] and "policy server went away" in first.aborted
    assert [e.in_a_row for e in seen if isinstance(e, ev.ChunkRefused)] == [1, 2, 3, 1, 2, 3]
    ended = [e for e in seen if isinstance(e, ev.TrialEnded)]
    assert [e.ended_by for e in ended] == ["aborted"] * 2 and all("refused 3 times in a row" in e.message
                                                                   for e in ended)
    saved = store.list()
    assert len(saved) == 2 and read_info(store.path(saved[0].name)).trial["ended_by"] == "aborted"
    assert runner.results[1].info.duration_s < 1.0  # aborted at once: nothing ran


class SleepyPolicy(RampPolicy):
    """Request `slow` is answered only once the simulation has run `late_s` past it (the loop goes on meanwhile),
    with a plan that would take the left waist down 0.5 rad; every other request answers at once."""

    def __init__(self, clock, slow: int = 1, late_s: float = 0.6):
        super().__init__()
        self.clock, self.slow, self.late_s = clock, slow, late_s

    def infer(self, state, images, prompt, **kw):
        n = len(self.requests)
        chunk = super().infer(state, images, prompt, **kw)
        if n == self.slow:
            t0 = self.clock.now()
            end = time.monotonic() + 60
            while self.clock.now() < t0 + self.late_s and time.monotonic() < end:
                time.sleep(0.002)
            chunk[:, 0] = state[0] - 0.01 * np.arange(len(chunk))
        return chunk


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stale_chunk_never_runs_on_the_simulated_clock(sim_session, tmp_path, mode):
    """The reply to the second request comes 0.6 s of sim time after its observation (limit 0.5 s): refused, the
    operator told (ChunkRefused), a fresh observation sent; the old plan never runs (no 0.3 rad jump in async, no
    25 actions of it in sync) and the trial goes on with the fresh chunks."""
    policy = SleepyPolicy(sim_session.rig.clock)
    ticks = ticks_of(sim_session)
    runner, seen = run_trials(sim_session, DatasetStore(tmp_path), policy, time_limit_s=3.0,
                              execution=ExecConfig(mode=mode), takeover=False)
    sim_session.remove_tick_listener(ticks.append)
    info = runner.results[0].info
    assert info.ended_by == "time_limit" and info.max_chunk_age_s == 0.5
    assert [r["kind"] for r in info.refusals] == ["stale"] and 0.5 < info.refusals[0]["age_s"] < 0.6
    assert "no reply" in info.refusals[0]["reason"]  # refused as the limit passed, not when the reply came
    (refused,) = [e for e in seen if isinstance(e, ev.ChunkRefused)]
    assert refused.kind == "stale" and refused.max_age_s == 0.5 and refused.in_a_row == 1 and refused.limit == 3
    assert all(c["age_s"] <= 0.5 for c in info.chunks) and len(info.chunks) >= 3
    # the stale plan would take the waist down 0.01 rad a tick; a fresh chunk starts where the arm is (a few
    # hundredths behind its command): at most one small step back per chunk boundary
    steps = np.diff(np.array([t.action[0] for t in ticks]))
    assert np.abs(steps).max() < 0.05 and (steps < -1e-6).sum() <= len(info.chunks), "the stale plan ran"


def test_an_error_in_a_trial_holds_the_followers_where_they_are_and_keeps_the_episode(sim_session, tmp_path,
                                                                                      monkeypatch):
    """An error on the control thread during a trial (here a listener's bug; the policy's own failures are
    refused chunks, above): the loop holds the followers at once, before the trial is saved, and the session
    holds them again before it reports the stop; held means goal := where each joint is (not the last command,
    which a lagging arm would go on moving to). Each hold is checked: the followers' servo goals equal their
    positions, and a hold came before the episode was saved (the loop's) and one after (the session's)."""
    rig = sim_session.rig
    store = DatasetStore(tmp_path)
    seen_at_hold: list[list] = []
    real_hold = rig.safety.hold
    events: list = []
    sim_session.subscribe(events.append)

    def hold():
        seen_at_hold.append([type(e).__name__ for e in events])
        real_hold()

    monkeypatch.setattr(rig.safety, "hold", hold)
    count = [0]

    def listener_bug(tick):
        count[0] += 1
        if count[0] == 60:
            raise RuntimeError("a listener bug")

    sim_session.add_tick_listener(listener_bug)
    try:
        runner, seen = run_trials(sim_session, store, RampPolicy(rate=0.02), time_limit_s=3.0,
                                  execution=ExecConfig(mode="async", delay_ticks=2), takeover=False)
    finally:
        sim_session.remove_tick_listener(listener_bug)
        sim_session.unsubscribe(events.append)
    errors = [e for e in seen if isinstance(e, ev.SessionError)]
    assert errors and "a listener bug" in str(errors[0].error)
    stopped = [e for e in seen if isinstance(e, ev.Stopped)][-1]
    assert stopped.reason == "error" and stopped.held
    saved = store.list()
    assert len(saved) == 1 and read_info(store.path(saved[0].name)).trial["ended_by"] == "error"
    # held where they are: every follower joint's servo goal is its position (the ramp had the waist lagging)
    sim = rig.sim
    for side in ("left", "right"):
        ix = sim.arm_index(side)
        with sim.lock:
            goal, at = sim.data.ctrl[ix.actuators].copy(), sim.data.qpos[ix.qpos].copy()
        assert np.array_equal(goal, at), (side, (goal - at).round(4).tolist())
    # the loop's hold (before the trial was saved) and the session's (after it, before Stopped)
    assert [("TrialEnded" in names, "Stopped" in names) for names in seen_at_hold] == [(False, False), (True, False)]


def test_stop_ends_the_trial_as_operator(sim_session, tmp_path):
    store = DatasetStore(tmp_path)

    def during(runner, seen):
        wait_event(seen, ev.ChunkArrived)
        runner.next()

    runner, seen = run_trials(sim_session, store, RampPolicy(), time_limit_s=30.0, trials=1, during=during,
                              execution=ExecConfig(mode=ExecMode.SYNC), takeover=False)
    assert runner.results[0].info.ended_by == "operator"
    assert runner.results[0].info.duration_s < 30.0


@pytest.mark.parametrize("mode,delay", [("sync", 3), ("async", 4)])
def test_chunk_arrived_carries_the_loop_tick_of_its_first_action(sim_session, tmp_path, mode, delay):
    """ChunkArrived.loop_tick is the control loop's tick index that executes actions[entry] (front ends place the
    chunk on the rig clock from it): the recorded ticks show that action there and the chunk's next one after it,
    in every trial (loop ticks run on across trials and runs; trial ticks restart)."""
    ticks = ticks_of(sim_session)
    _, seen = run_trials(sim_session, DatasetStore(tmp_path), RampPolicy(), time_limit_s=1.0, trials=2,
                         execution=ExecConfig(mode=mode, delay_ticks=delay), takeover=False)
    sim_session.remove_tick_listener(ticks.append)
    by_index = {t.index: t for t in ticks}
    arrived = [e for e in seen if isinstance(e, ev.ChunkArrived)]
    assert len(arrived) >= 4 and len({e.loop_tick for e in arrived}) == len(arrived)
    assert any(e.loop_tick != e.start_tick for e in arrived)  # loop ticks, not the trial's (trial 2 restarts)
    limit = 50  # ticks per trial (1 s at 50 Hz)
    for e in arrived:
        # the chunk's first action at its loop tick, its second on the next tick (a ramp: each differs)
        assert np.array_equal(by_index[e.loop_tick].action, e.actions[e.entry]), (e.loop_tick, e.entry)
        if e.start_tick + 1 < limit:  # the next tick is still this trial's
            assert np.array_equal(by_index[e.loop_tick + 1].action, e.actions[e.entry + 1]), (e.loop_tick, e.entry)


def test_label_on_a_trial_that_ended_but_is_not_appended_keeps_the_label_and_the_note(sim_session, tmp_path):
    """A front end labels a trial the moment it hears TrialEnded (the GUI's outcome buttons), while the control
    thread is still inside the run: the runner takes the label and the operator's note (the store keeps both)."""
    from workbench.deploy.chunk_policy import InProcessPolicy
    from workbench.deploy.trials import TrialRunner, TrialSettings, start_trials

    store = DatasetStore(tmp_path)
    runner = TrialRunner(sim_session.rig, store, InProcessPolicy(RampPolicy()),
                         TrialSettings(prompt="wave", trials=1, time_limit_s=1.0, takeover=False,
                                       execution=ExecConfig(mode="sync", delay_ticks=2)))
    done: list = []

    def label_on_end(e) -> None:  # on the control thread, inside the runner's own TrialEnded emission
        if isinstance(e, ev.TrialEnded):
            try:
                done.append(runner.label(e.index, "partial", "the cube slipped at the hand-over"))
            except Exception as exc:  # noqa: BLE001 - the session would only log it
                done.append(exc)

    sim_session.subscribe(label_on_end)
    try:
        start_trials(sim_session, runner)
        assert sim_session.wait(240), "the trials did not end"
    finally:
        sim_session.unsubscribe(label_on_end)
    assert len(done) == 1 and not isinstance(done[0], Exception), done
    (result,) = runner.results
    assert result.outcome == "partial" and result.info.outcome_source == "operator"
    info = store.show(result.name)
    assert info.outcome == "partial" and info.notes == "the cube slipped at the hand-over"
