"""Faults around a trial (issue 19.6-8), through real processes and the real serving path:

- a `workbench trials` process killed mid-trial (SIGKILL): the rollout comes back as a *trial* (its marker was in
  the journal from the first tick), "interrupted" and aborted; the next `workbench trials` recovers it; training
  leaves it out; the statistics count it apart;
- the local policy server child killed mid-trial: that trial ends aborted, the child is restarted before the next
  one (which runs on the new child), and a child that dies every time is given up after its restart limit with one
  readable line;
- the disk too full for a trial: refused before the arms move;
- what a trial episode records: the policy's request (`action`) and what the safety layer sent (`command`).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recorder.reader import EpisodeReader, read_info
from recorder.store import DatasetStore
from workbench import events as ev
from workbench.config import load_rig_config
from workbench.deploy.chunk_check import ChunkLimits
from workbench.deploy.policy_launcher import open_policy
from workbench.deploy.policy_source import ExecConfig
from workbench.deploy.trial_stats import load_trials, summarize
from workbench.safety import SafetyConfig

from trial_helpers import RampPolicy, run_trials, wait_event

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "finetune"))
from train_helpers import sim_dataset  # noqa: E402
from serve_helpers import tiny_policy  # noqa: E402,F401

pytestmark = pytest.mark.system  # end to end on real processes: CI's system step (README)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def replay_folder(tmp_path_factory) -> Path:
    from finetune.replay_policy import make_replay_policy

    ep = sorted(Path(sim_dataset()).glob("episode_*.hdf5"))[1]
    return make_replay_policy(ep, tmp_path_factory.mktemp("replay") / "policy")


@pytest.fixture(scope="module")
def session(sim_session):
    return sim_session


def _trials_cmd(policy: Path, dataset: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "workbench.cli", "trials", "--rig", "sim-transfer-cube", "--policy", str(policy),
            "--dataset", str(dataset), "--no-takeover", "--device", "cpu", *extra]


def test_a_trial_killed_mid_run_is_recovered_as_an_aborted_trial(replay_folder, tmp_path):
    dataset = tmp_path / "trials"
    env = dict(os.environ, PYTHONPATH=str(ROOT), MUJOCO_GL=os.environ.get("MUJOCO_GL", "osmesa"))
    proc = subprocess.Popen(_trials_cmd(replay_folder, dataset, "--trials", "2", "--time-limit-s", "30"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 240
        for line in proc.stdout:  # the trial is running once its first line is out; then let steps reach disk
            lines.append(line)
            if line.startswith("trial 1/2"):
                break
            assert time.monotonic() < deadline, "".join(lines)
        journals = dataset / ".incoming"
        end = time.monotonic() + 60
        while time.monotonic() < end and not any(p.stat().st_size > 50_000 for p in journals.glob("*.journal")):
            time.sleep(0.2)
        time.sleep(1.0)  # a second of the rollout (the journal is flushed every 0.25 s)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not DatasetStore(dataset).list(), "nothing was saved normally: the process died mid-trial"

    # the next trials session on that dataset recovers it first
    out = subprocess.run(_trials_cmd(replay_folder, dataset, "--trials", "1", "--time-limit-s", "1"),
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "recovered episode_0" in out.stdout, out.stdout
    info = read_info(dataset / "episode_0.hdf5")
    assert info.recovered and info.steps > 10
    assert info.trial is not None, "the killed rollout came back as a demonstration"
    assert info.trial["ended_by"] == "interrupted" and info.outcome == "aborted"

    # training (default: trials excluded) never takes it; the statistics count it apart, not as a failure
    from finetune.episodes import EpisodeDataError, load_episodes

    with pytest.raises(EpisodeDataError, match="all trial episodes"):
        load_episodes(str(dataset))
    (g,) = summarize(load_trials(dataset))
    # the recovered one aborted, the 1-second trial of the second session a real failure (time limit)
    assert (g.n, g.aborted, g.failures, g.labeled, g.rate) == (2, 1, 1, 1, 0.0)


@pytest.fixture
def served(replay_folder, session):
    policies = []

    def open_() -> object:
        p = open_policy(replay_folder, rig=session.rig.config, device="cpu")
        policies.append(p)
        return p

    yield open_
    for p in policies:
        p.close()


def _kill_child_in_trial(policy, trial: int):
    """`during` for run_trials: SIGKILL the policy server child once trial `trial` has had a chunk."""
    def during(runner, seen):
        wait_event(seen, ev.ChunkArrived, 120, where=lambda e: runner.current is not None and
                   any(isinstance(x, ev.TrialStarted) and x.index == trial for x in seen))
        os.kill(policy.server.proc.pid, signal.SIGKILL)
    return during


def test_a_dead_local_server_is_restarted_and_the_next_trial_runs(session, served, tmp_path):
    policy = served()
    pid0 = policy.server.proc.pid
    runner, seen = run_trials(session, DatasetStore(tmp_path), policy, prompt="transfer the cube",
                              time_limit_s=3.0, trials=2, execution=ExecConfig(mode="sync"), takeover=False,
                              during=_kill_child_in_trial(policy, 0))
    first, second = runner.results
    assert first.info.ended_by == "aborted" and first.outcome == "aborted"
    assert {r["kind"] for r in first.info.refusals} == {"failed"}
    (revived,) = [e for e in seen if isinstance(e, ev.PolicyRevived)]
    assert "SIGKILL" in revived.message and "restarted it (1 of at most 2" in revived.message
    assert policy.server.alive and policy.server.proc.pid != pid0
    assert second.info.ended_by != "aborted" and len(second.info.chunks) >= 2 and not second.info.refusals
    assert not [e for e in seen if isinstance(e, (ev.SessionError, ev.PolicyLost))]


def test_a_server_that_dies_every_trial_is_given_up_after_its_restarts(session, served, tmp_path):
    policy = served()
    policy.max_restarts = 1

    def during(runner, seen):
        for k in range(2):
            _kill_child_in_trial(policy, k)(runner, seen)
            wait_event(seen, ev.TrialEnded, 120, where=lambda e, k=k: e.index == k)

    runner, seen = run_trials(session, DatasetStore(tmp_path), policy, prompt="transfer the cube",
                              time_limit_s=3.0, trials=3, execution=ExecConfig(mode="sync"), takeover=False,
                              during=during)
    assert [r.outcome for r in runner.results] == ["aborted", "aborted"]  # the third never ran
    (lost,) = [e for e in seen if isinstance(e, ev.PolicyLost)]
    assert lost.trials_left == 1 and "after 1 restart this session: not restarting it again" in lost.message
    stopped = [e for e in seen if isinstance(e, ev.Stopped)][-1]
    assert stopped.reason == "done" and not [e for e in seen if isinstance(e, ev.SessionError)]


def test_a_full_disk_is_refused_before_the_arms_move(replay_folder, tmp_path):
    """A dataset on a disk with too little room (a 20 MB tmpfs when one can be mounted, else a dataset whose
    measured bytes per step make one trial larger than the disk): refused with the numbers, nothing moved."""
    from workbench.deploy.trials_service import TrialsError, TrialsRequest, TrialsService

    store = DatasetStore(tmp_path / "d")
    free = store.free_bytes()
    # a trial whose episode cannot fit: the time limit at the default bytes per step beyond the free space
    seconds = (free / (3 * 40_000 + 1_000)) / 50 + 60
    service = TrialsService(TrialsRequest(policy=str(replay_folder), trials=1, time_limit_s=seconds,
                                          dataset=tmp_path / "d"), load_rig_config("sim-transfer-cube"))
    with pytest.raises(TrialsError, match=r"MB free; a trial needs ~\d+ MB plus the recorder's 256 MiB reserve"):
        service.use(RampPolicyServed())
    assert service.store is None


def test_trials_and_recording_on_a_20_mb_disk_are_refused_before_anything_moves(replay_folder, session, tmp_path,
                                                                                 capsys):
    """The issue's case, on a real 20 MB tmpfs: `workbench trials` says why and exits before the policy or the rig
    is touched; a recording session refuses before its start-up sequence (the arms do not move)."""
    sys.path.insert(0, str(ROOT / "tests" / "recorder"))
    from test_disk_full import mount_tmpfs, umount
    from recorder.store import StoreError
    from workbench.cli import main as cli_main
    from workbench.recording import SessionSettings

    mnt = tmp_path / "tiny"
    mount_tmpfs(mnt, "20m")
    try:
        rc = cli_main(["trials", "--rig", "sim-transfer-cube", "--policy", str(replay_folder), "--trials", "1",
                       "--dataset", str(mnt / "trials"), "--device", "cpu"])
        err = capsys.readouterr().err
        assert rc == 2 and "MB free; a trial needs" in err and "nothing was started" in err, err
        before = session.rig.observation().qpos.copy()
        with pytest.raises(StoreError, match="an episode needs"):
            session.start_recording(DatasetStore(mnt / "demos"), SessionSettings(task="x", episodes=1,
                                                                                   episode_s=5.0))
        assert np.array_equal(session.rig.observation().qpos, before) and session.mode.name == "IDLE"
    finally:
        umount(mnt)


class RampPolicyServed:
    """A ChunkPolicy stand-in for TrialsService.use (metadata only: the service refuses before asking it)."""

    metadata = {"policy": "runs/ramp/policy", "step": 1, "task": "wave"}

    def infer(self, request):  # pragma: no cover - never asked
        raise AssertionError("asked for a chunk")

    def close(self) -> None:
        pass


def test_a_trial_records_the_request_and_the_command_sent(session, tmp_path):
    """The policy asks for 0.15 rad per tick on the left waist, beyond the 0.063 rad step cap (its chunks let
    through with the chunk check opened): `action` holds the requests,
    `command` what the safety layer sent (capped); they differ exactly where the cap acted."""
    store = DatasetStore(tmp_path)
    rough = ChunkLimits(first_action_steps=1e9, velocity_tolerance=1e9, limit_tolerance=1e9, trained_range=False)
    runner, _ = run_trials(session, store, RampPolicy(rate=0.15), time_limit_s=1.0,
                           execution=ExecConfig(mode="sync", delay_ticks=2, chunk_limits=rough), takeover=False)
    with EpisodeReader(store.path(runner.results[0].name)) as r:
        act, cmd = np.asarray(r.action, np.float64), np.asarray(r.command, np.float64)
    cap = SafetyConfig().step_array(50.0)[0]
    assert (np.abs(np.diff(cmd[:, 0])) <= cap + 1e-6).all()
    assert np.abs(np.diff(act[:, 0])).max() > 2 * cap, "the requests were capped before being recorded"
    assert not np.allclose(act[:, 0], cmd[:, 0])


def test_simulated_trials_are_held_out_from_the_training_scenes(tmp_path, capsys):
    """Issue 21.3: a policy trained on simulator seeds 0-2: `workbench trials` without seeds runs held-out scenes
    (100000..) and says so; given seeds that include a training scene, it warns and marks those trials; the
    server announces the training scenes, so a remote client can check the same."""
    from serve_helpers import tiny_policy
    from workbench.cli import main as cli_main
    from workbench.deploy.trials_service import TRIAL_SEED_BASE, held_out, training_seeds

    folder = tiny_policy()
    train = training_seeds(str(folder), {})
    assert train == (0, 1, 2), train
    from finetune.runtime import PolicyRuntime

    assert PolicyRuntime.load(folder, device="cpu").metadata()["train_sim_seeds"] == [0, 1, 2]
    args = ["trials", "--rig", "sim-transfer-cube", "--policy", str(folder), "--trials", "2", "--time-limit-s", "0.5",
            "--no-takeover", "--device", "cpu"]
    assert cli_main([*args, "--dataset", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert f"seeds {TRIAL_SEED_BASE}, {TRIAL_SEED_BASE + 1}, held out (trained on 3 scenes, 0-2)" in out, out
    store = DatasetStore(tmp_path / "a")
    trials = [read_info(store.path(e.name)).trial for e in store.list()]
    assert [t["seed"] for t in trials] == [TRIAL_SEED_BASE, TRIAL_SEED_BASE + 1]
    assert [t["training_scene"] for t in trials] == [False, False]

    assert cli_main([*args, "--dataset", str(tmp_path / "b"), "--seeds", "1,7"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: trial seeds 1 are scenes the policy was trained on" in out, out
    store = DatasetStore(tmp_path / "b")
    trials = sorted((read_info(store.path(e.name)).trial for e in store.list()), key=lambda t: t["seed"])
    assert [(t["seed"], t["training_scene"]) for t in trials] == [(1, True), (7, False)]

    # the rule itself: training seeds inside the held-out range are skipped, the trials dataset's own continued
    from workbench.deploy.trials_service import TrialsPlan, plan_trials, TrialsRequest

    plan = plan_trials(TrialsRequest(policy="p", trials=3), {"task": "t"}, None)
    got = held_out(plan, DatasetStore(tmp_path / "a"), (TRIAL_SEED_BASE + 2, TRIAL_SEED_BASE + 3))
    assert got.seeds == (TRIAL_SEED_BASE + 4, TRIAL_SEED_BASE + 5, TRIAL_SEED_BASE + 6) and not got.overlap
    assert isinstance(got, TrialsPlan) and got.settings.seeds == got.seeds
