"""Trials end to end through the real serving path: `workbench serve` as a child process on loopback, the
websocket client, the transform chain, the PolicySource's chunk scheduling and the MuJoCo rig.

- A replay policy (a recorded demonstration's actions, served through the training transforms) completes the task
  from that demonstration's seed in sync and async modes: time steps, transforms, chunking and units line up.
- A tiny trained pi0 runs in every mode, and in rtc mode the new chunk reproduces the committed prefix. Trained for
  two steps it is as good as random (chunks stepping ~1 rad per tick): with the default chunk check its chunks are
  refused and the trial aborts; the mode tests run it with the check's tolerances opened (`ROUGH`), the safety
  layer's caps still in force.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from finetune.replay_policy import make_replay_policy
from recorder.store import DatasetStore
from workbench import events as ev
from workbench.config import load_rig_config
from workbench.deploy.policy_launcher import open_policy
from workbench.deploy.chunk_check import ChunkLimits
from workbench.deploy.policy_source import ExecConfig
from workbench.recording import SessionSettings
from workbench.backends import build_rig
from workbench.session import RigSession

from trial_helpers import run_trials

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "finetune"))
from serve_helpers import tiny_policy  # noqa: E402

pytestmark = pytest.mark.system  # end to end on real processes: CI's system step (README)

SEED = 5
ROUGH = ChunkLimits(first_action_steps=1e9, velocity_tolerance=1e9, limit_tolerance=1e9, trained_range=False)


@pytest.fixture(scope="module")
def session():
    rig = build_rig(load_rig_config("sim-transfer-cube"))
    rig.connect()
    s = RigSession(rig)
    yield s
    s.close(torque_off_here=True)


@pytest.fixture(scope="module")
def demo(session, tmp_path_factory):
    """One scripted demonstration of the cube transfer, recorded on the sim rig from seed SEED."""
    store = DatasetStore(tmp_path_factory.mktemp("demos"))
    session.start_recording(store, SessionSettings(task="transfer the cube", episodes=1, episode_s=8.0, seed=SEED),
                            squeeze_timeout=10)
    assert session.wait(180)
    (ep,) = store.list()
    assert ep.outcome == "success"
    return store.path(ep.name)


@pytest.fixture(scope="module")
def replay_folder(demo, tmp_path_factory):
    return make_replay_policy(demo, tmp_path_factory.mktemp("policy") / "replay")


@pytest.fixture(scope="module")
def replay_server(replay_folder, session):
    policy = open_policy(replay_folder, rig=session.rig.config, device="cpu")
    yield policy
    policy.close()
    assert not policy.server.alive, "the policy server child outlived its client"


@pytest.mark.parametrize("execution", [ExecConfig(mode="sync"), ExecConfig(mode="async"),
                                       ExecConfig(mode="async", delay_ticks=6)],
                         ids=["sync", "async-measured-latency", "async-6-ticks"])
def test_served_replay_policy_completes_the_task_from_its_seed(session, replay_server, tmp_path, execution):
    store = DatasetStore(tmp_path)
    runner, seen = run_trials(session, store, replay_server, prompt="transfer the cube", time_limit_s=10.0,
                              seeds=(SEED,), execution=execution, takeover=False)
    (result,) = runner.results
    assert result.outcome == "success", (result.info.ended_by, result.info.max_reward)
    assert result.info.ended_by == "success" and result.info.closest_m == {"right": 0.0}  # fingers on the cube
    chunks = result.info.chunks
    assert len(chunks) >= 4 and all(c["roundtrip_ms"] > 0 for c in chunks)
    assert not result.info.refusals and all(c["age_s"] <= 0.5 for c in chunks)  # a sane policy is never refused
    assert store.show(result.name).outcome == "success"


def test_served_replay_policy_fails_from_another_seed(session, replay_server, tmp_path):
    """The control for the test above: the same actions from a different scene miss the cube."""
    runner, _ = run_trials(session, DatasetStore(tmp_path), replay_server, prompt="transfer the cube",
                           time_limit_s=8.0, seeds=(SEED + 1000,), execution=ExecConfig(mode="sync"),
                           takeover=False)
    assert runner.results[0].outcome != "success"


@pytest.fixture(scope="module")
def tiny_server(session):
    policy = open_policy(tiny_policy(), rig=session.rig.config, device="cpu")
    yield policy
    policy.close()


def test_a_barely_trained_pi0_is_refused_by_the_default_check(session, tiny_server, tmp_path):
    """The server announces the trained range (norm_stats q01..q99 in rig units); the tiny policy's chunks are
    wild (~1 rad per step): refused before any of them runs, the trial aborted, the followers held."""
    bounds = tiny_server.metadata["action_bounds"]
    assert len(bounds["lo"]) == len(bounds["hi"]) == 14
    assert bounds["relative"] == [True] * 6 + [False] + [True] * 6 + [False]  # delta arm joints, absolute grippers
    runner, seen = run_trials(session, DatasetStore(tmp_path), tiny_server, prompt="transfer the cube",
                              time_limit_s=2.0, seeds=(SEED,), execution=ExecConfig(mode="sync", delay_ticks=3),
                              takeover=False)
    (result,) = runner.results
    assert result.info.ended_by == "aborted" and not result.info.chunks and len(result.info.refusals) == 3
    assert not [e for e in seen if isinstance(e, ev.ChunkArrived)]


@pytest.mark.parametrize("execution", [ExecConfig(mode="sync", delay_ticks=3, chunk_limits=ROUGH),
                                       ExecConfig(mode="async", delay_ticks=3, chunk_limits=ROUGH),
                                       ExecConfig(mode="rtc", delay_ticks=3, chunk_limits=ROUGH),
                                       ExecConfig(mode="async", delay_ticks=3, ensemble=True, chunk_limits=ROUGH)],
                         ids=["sync", "async", "rtc", "ensemble"])
def test_tiny_trained_pi0_runs_in_every_mode(session, tiny_server, tmp_path, execution):
    assert tiny_server.metadata["task"] == "transfer the cube"  # the trials' default prompt: the training task
    store = DatasetStore(tmp_path)
    runner, seen = run_trials(session, store, tiny_server, prompt="transfer the cube", time_limit_s=1.2,
                              seeds=(SEED,), execution=execution, takeover=False)
    (result,) = runner.results
    assert result.info.ended_by == "time_limit" and result.info.mode == execution.mode.value
    arrived = [e for e in seen if isinstance(e, ev.ChunkArrived)]
    assert len(arrived) >= 2 and all(e.actions.shape == (50, 14) and np.isfinite(e.actions).all() for e in arrived)


def frozen_gaps(arrived: list, d: int) -> list[float]:
    """For consecutive chunks: the largest difference between the new chunk's first d actions and the old chunk's
    actions for the same slots (what ran, or will run, while the new chunk was computed)."""
    return [float(np.abs(new.actions[:d] - old.actions[new.step - old.step:][:d]).max())
            for old, new in zip(arrived, arrived[1:])]


def test_rtc_reproduces_the_committed_prefix(session, tiny_server, tmp_path):
    d = 3 + ExecConfig().rtc_margin
    chunks = {}
    for mode in ("rtc", "async"):
        _, seen = run_trials(session, DatasetStore(tmp_path / mode), tiny_server, prompt="transfer the cube",
                             time_limit_s=1.5, seeds=(SEED,),
                             execution=ExecConfig(mode=mode, delay_ticks=3, chunk_limits=ROUGH), takeover=False)
        chunks[mode] = [e for e in seen if isinstance(e, ev.ChunkArrived)]
    rtc, plain = frozen_gaps(chunks["rtc"], d), frozen_gaps(chunks["async"], d)
    assert len(rtc) >= 2
    # measured: rtc <= ~0.02 rad, plain async ~0.3-1 rad on the tiny policy
    assert max(rtc) < 0.05, rtc
    assert min(plain) > 4 * max(rtc), (plain, rtc)


def test_trials_cli_runs_the_served_policy_and_prints_the_rate(replay_folder, tmp_path):
    """`workbench trials` end to end in its own process: local server child, sim rig, recorded trial episodes,
    the statistics table."""
    import subprocess

    out = subprocess.run([sys.executable, "-m", "workbench", "trials", "--rig", "sim-transfer-cube", "--policy",
                          str(replay_folder), "--trials", "2", "--seeds", f"{SEED},{SEED + 1000}", "--dataset",
                          str(tmp_path / "trials"), "--mode", "async", "--device", "cpu", "--time-limit-s", "10"],
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "trial 1/2" in out.stdout and "-> success" in out.stdout
    assert "replay@" in out.stdout or "replay" in out.stdout
    store = DatasetStore(tmp_path / "trials")
    outcomes = sorted(e.outcome for e in store.list())
    assert outcomes[-1] == "success" and len(outcomes) == 2
    assert "50%" in out.stdout  # 1 of 2: the table's rate
