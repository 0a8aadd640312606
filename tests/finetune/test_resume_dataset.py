"""`workbench train --resume` on a dataset that changed since the run started (finetune.run_data): refused, naming
the episodes added / removed / changed; `--keep-run-data` goes on with the run's own split and normalization
statistics, byte for byte; an unchanged dataset resumes as before; a run from before data states resumes with a
note. Real runs of the tiny preset on episodes recorded on the simulated rig, mutated with `workbench episodes`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from data_helpers import record_sim
from finetune import events as ev
from train_helpers import ROOT, TINY_ARGS, events, run_cli, sim_dataset, step_losses

pytestmark = pytest.mark.system  # end to end on real processes: CI's system step (README)

ARGS = [*TINY_ARGS, "--save-every", "2", "--val-fraction", "0.34"]


def _dataset(tmp_path: Path) -> Path:
    """A private copy of the session's three recorded episodes (the tests change it)."""
    return Path(shutil.copytree(sim_dataset(), tmp_path / "cube"))


def _episodes(ds: Path, *args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "workbench.cli", "episodes", str(ds), *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def _train(ds: Path, run: Path, steps: int, *extra: str) -> subprocess.CompletedProcess:
    args = list(ARGS)
    if "--outcome" in extra:  # the test's own filter instead of TINY_ARGS' "--outcome all"
        del args[args.index("--outcome"):args.index("--outcome") + 2]
    return run_cli(*args, "--dataset", str(ds), "--out", str(run), "--steps", str(steps), *extra)


def _split(folder: Path) -> tuple[list[str], list[str]]:
    split = json.loads((folder / "dataset.json").read_text())["split"]
    return split["train"], split["val"]


def _statuses(run: Path) -> list[str]:
    return [e.text for e in events(run) if isinstance(e, ev.Status)]


def _refused(res: subprocess.CompletedProcess, run: Path) -> str:
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    failed = [e for e in events(run) if isinstance(e, ev.Failed)]
    assert failed and failed[-1].error == "dataset_changed"
    assert failed[-1].message in res.stderr
    return failed[-1].message


def test_an_added_and_a_changed_episode_refuse_the_resume_and_kept_run_data_continues_exactly(tmp_path):
    """The refusal names the episodes and both fixes; --keep-run-data then trains on the run's own split and its
    norm_stats.json (the exported policy carries the very bytes), and repeats at steps 3 and 4 what the same run
    resumed on the dataset as it was does (the added episode is not used, the annotation does not reach a "task"
    prompt)."""
    ds, run = _dataset(tmp_path), tmp_path / "run"
    res = _train(ds, run, 2)
    assert res.returncode == 0, res.stderr[-3000:]
    shutil.copytree(run, tmp_path / "ref")
    ref = _train(ds, tmp_path / "ref", 4, "--resume")  # the unchanged dataset
    assert ref.returncode == 0, ref.stderr[-3000:]
    state = run / "data_state"
    stats0 = (state / "norm_stats.json").read_bytes()
    assert (run / "policy" / "norm_stats.json").read_bytes() == stats0  # what the run started with
    split0 = _split(state)
    assert sorted(split0[0] + split0[1]) == ["episode_0", "episode_1", "episode_2"] and len(split0[1]) == 1
    recorded = (state / "episodes.json").read_bytes()

    record_sim(ds, episodes=1, seconds=2.0, seed=1)  # episode_3: a 4-episode split would differ
    _episodes(ds, "annotate", "episode_1", "10", "30", "grasp the cube")

    msg = _refused(_train(ds, run, 4, "--resume"), run)
    assert "1 episode added (episode_3)" in msg and "1 episode changed (episode_1)" in msg, msg
    assert "--resume --keep-run-data" in msg and "new --out" in msg, msg
    assert max(step_losses(run)) == 2 and not (run / "checkpoints" / "step_00000004").exists()

    res = _train(ds, run, 4, "--resume", "--keep-run-data")
    assert res.returncode == 0, res.stderr[-3000:]
    started = [e for e in events(run) if isinstance(e, ev.RunStarted)]
    assert started[-1].resumed and started[-1].start_step == 2
    assert (run / "checkpoints" / "step_00000004" / "state.json").is_file()
    assert (run / "policy" / "norm_stats.json").read_bytes() == stats0
    assert _split(run / "policy") == split0
    assert (state / "episodes.json").read_bytes() == recorded  # the run's record stays the one of its start
    assert any("not used: episode_3" in s and "--keep-run-data" in s for s in _statuses(run)), _statuses(run)
    ref_losses, losses = step_losses(tmp_path / "ref"), step_losses(run)
    assert [losses[s] for s in (3, 4)] == [ref_losses[s] for s in (3, 4)]
    a, b = load_file(str(tmp_path / "ref" / "policy" / "model.safetensors")), \
        load_file(str(run / "policy" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_relabelled_and_trashed_episodes_are_named_and_kept_run_data_drops_only_the_trashed(tmp_path):
    """Under --outcome failure, relabelling the validation episode to success takes it out of the selection and
    trashing a training episode removes it: the refusal names both. --keep-run-data keeps the relabelled one where
    it was (the run's lists are the selection), drops the trashed one with a warning, and normalizes with the
    run's statistics, not with ones recomputed over the one training episode left."""
    ds, run = _dataset(tmp_path), tmp_path / "run"
    res = _train(ds, run, 2, "--outcome", "failure")
    assert res.returncode == 0, res.stderr[-3000:]
    state = run / "data_state"
    stats0 = (state / "norm_stats.json").read_bytes()
    (train0, val0) = _split(state)
    assert len(train0) == 2 and len(val0) == 1
    trashed, relabelled = train0[1], val0[0]
    _episodes(ds, "label", relabelled, "success")
    _episodes(ds, "rm", trashed)

    msg = _refused(_train(ds, run, 4, "--outcome", "failure", "--resume"), run)
    assert "2 episodes removed or no longer selected" in msg, msg
    assert f"({', '.join(e for e in ('episode_0', 'episode_1', 'episode_2') if e in (trashed, relabelled))})" in msg

    res = _train(ds, run, 4, "--outcome", "failure", "--resume", "--keep-run-data")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"warning: dropped from the run's episode lists, no longer in {ds}: {trashed}" in res.stdout, res.stdout
    assert _split(run / "policy") == ([train0[0]], [relabelled])
    assert (run / "policy" / "norm_stats.json").read_bytes() == stats0
    assert max(step_losses(run)) == 4


def test_an_unchanged_dataset_resumes_as_before(tmp_path):
    """A label outside the run's selection filters does not change what it trains on: no note, no refusal."""
    ds, run = _dataset(tmp_path), tmp_path / "run"
    assert _train(ds, run, 2).returncode == 0
    recorded = (run / "data_state" / "episodes.json").read_bytes()
    _episodes(ds, "label", "episode_0", "success")
    res = _train(ds, run, 4, "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(step_losses(run)) == [1, 2, 3, 4]
    assert not any("changed since" in s or "note:" in s for s in _statuses(run)), _statuses(run)
    assert (run / "data_state" / "episodes.json").read_bytes() == recorded


def test_a_run_without_a_recorded_data_state_resumes_with_a_note_and_is_checked_from_then_on(tmp_path):
    """A run folder from before data states (no data_state/: as the trainer before this change wrote them)
    resumes as it did, saying so, and records its data then: a later change is refused."""
    ds, run = _dataset(tmp_path), tmp_path / "run"
    assert _train(ds, run, 2).returncode == 0
    shutil.rmtree(run / "data_state")
    record_sim(ds, episodes=1, seconds=2.0, seed=1)
    res = _train(ds, run, 4, "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "has no record of what it trained on" in res.stdout, res.stdout
    assert max(step_losses(run)) == 4
    eps = json.loads((run / "data_state" / "episodes.json").read_text())
    assert eps["recorded_at_step"] == 2 and "episode_3" in eps["identities"]

    _episodes(ds, "rm", "episode_3")
    msg = _refused(_train(ds, run, 6, "--resume"), run)
    assert msg.startswith(f"{ds} changed since step 2, when this run recorded its data: 1 episode removed "
                          "or no longer selected (episode_3)"), msg


def test_keep_run_data_needs_resume(tmp_path):
    res = _train(sim_dataset(), tmp_path / "run", 2, "--keep-run-data")
    assert res.returncode != 0 and "--keep-run-data goes with --resume" in res.stderr
    assert not (tmp_path / "run").exists()
