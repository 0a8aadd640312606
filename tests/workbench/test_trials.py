"""Trials on real rigs (MuJoCo sim; the virtual Dynamixel rig for takeover with leader arms): chunk alignment,
execution modes, language commands, the trial episode's fields, errors. Policies here are in-process stand-ins;
tests/workbench/test_trials_served.py runs served and trained policies."""
import json

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
    runner, seen = run_trials(sim_session, DatasetStore(tmp_path), policy, time_limit_s=2.0,
                              execution=ExecConfig(mode=mode, delay_ticks=delay), takeover=False)
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


def test_policy_failure_holds_the_followers_and_keeps_the_episode(sim_session, tmp_path):
    store = DatasetStore(tmp_path)
    runner, seen = run_trials(sim_session, store, FailingPolicy(fail_at=2), time_limit_s=3.0,
                              execution=ExecConfig(mode="sync", delay_ticks=2), takeover=False)
    errors = [e for e in seen if isinstance(e, ev.SessionError)]
    assert errors and "policy server went away" in str(errors[0].error)
    stopped = [e for e in seen if isinstance(e, ev.Stopped)][-1]
    assert stopped.reason == "error" and stopped.held
    saved = store.list()
    assert len(saved) == 1
    assert read_info(store.path(saved[0].name)).trial["ended_by"] == "error"


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
