"""Training-state checkpoints (finetune.train_state): a run folder written by an earlier version of the trainer
still resumes, and continues exactly where it stopped."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from safetensors.torch import load_file

from finetune import events as ev
from train_helpers import ROOT, events, run_cli, step_losses

DATA = ROOT / "tests" / "data"
OLD_RUN = DATA / "train_run_v1_tiny_step2.tar.xz"  # see "made_by" in the .json next to it


def test_a_run_written_by_the_earlier_trainer_resumes_from_its_step(tmp_path):
    """The folder was written by the trainer before the split into presets / train_state / launch (commit
    ee0189a): `--config tiny` on synthetic data with EMA, 4 steps, killed after its step-2 checkpoint. Resumed by
    today's code it starts at step 2 and repeats the uninterrupted old run's steps 3 and 4 and its policy. (One
    figure was corrected since: the old export wrote the tied token embedding, lm_head, from the raw weights while
    every other weight got its EMA average; the streamed export averages it too, checked against the step-4
    checkpoint's EMA state.)"""
    expected = json.loads(OLD_RUN.with_suffix("").with_suffix(".json").read_text())
    run = tmp_path / "run"
    with tarfile.open(OLD_RUN) as tar:
        tar.extractall(run, filter="data")
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_00000002"]
    res = run_cli("--out", str(run), "--resume")  # alone: the run's own settings (train_config.json)
    assert res.returncode == 0, res.stderr[-3000:]
    started = [e for e in events(run) if isinstance(e, ev.RunStarted)]
    assert started[-1].resumed and started[-1].start_step == 2 and started[-1].total_steps == 4
    steps = {e.step: e for e in events(run) if isinstance(e, ev.Step)}
    assert sorted(step_losses(run)) == [1, 2, 3, 4]
    for s in (3, 4):  # same weights, optimizer, EMA, RNG and data position as the old run had at step 2
        want = expected["steps"][str(s)]
        assert steps[s].loss == pytest.approx(want["loss"], rel=1e-5), s
        assert steps[s].grad_norm == pytest.approx(want["grad_norm"], rel=1e-4), s
    policy = load_file(str(run / "policy" / "model.safetensors"))  # the EMA weights at step 4
    sums = expected["policy_tensor_sums"]
    assert sorted(policy) == sorted(sums)
    for k, (total, abs_total) in sums.items():
        t = policy[k].double()
        assert float(t.abs().sum()) == pytest.approx(abs_total, rel=1e-4, abs=1e-6), k
        assert float(t.sum()) == pytest.approx(total, rel=1e-3, abs=1e-4 * max(abs_total, 1e-3)), k
    assert Path(run / "checkpoints" / "step_00000004" / "state.json").is_file()


def test_a_full_disk_while_saving_says_disk_full_and_leaves_no_partial_checkpoint(tmp_path):
    """Issue 19 point 8: on a real full disk (a 5 MB tmpfs) torch.save fails with a RuntimeError, not an OSError;
    the save must still end in SaveError("disk_full") naming the last good checkpoint and --resume, with no
    .tmp-step_N left behind and the good checkpoint untouched."""
    import errno
    import subprocess

    import torch

    from finetune.train_state import SaveError, list_checkpoints, load_checkpoint, save_checkpoint

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); needs root / CAP_SYS_ADMIN")
    try:
        torch.manual_seed(0)
        model = torch.nn.Linear(512, 512)  # 1 MB of weights, 2 MB of Adam state: one checkpoint fits, two do not
        opt = torch.optim.Adam(model.parameters())
        model(torch.randn(4, 512)).square().mean().backward()
        opt.step()
        run = mnt / "run"
        kw = dict(resume_key={"model": "linear"}, keep_last=2)
        good = save_checkpoint(run, 1, model, opt, None, **kw)
        before = {p.name: p.read_bytes() for p in good.iterdir()}
        with pytest.raises(SaveError) as ei:  # trainable.safetensors still fits; torch.save of optimizer.pt fails
            save_checkpoint(run, 2, model, opt, None, **kw)
        e = ei.value
        assert e.error == "disk_full" and e.step == 2, str(e)
        assert isinstance(e.__cause__, OSError) and e.__cause__.errno == errno.ENOSPC  # the errno of the write
        assert "disk full" in str(e) and str(good) in str(e) and "--resume" in str(e)
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [good.name]  # no .tmp-step_00000002
        assert {p.name: p.read_bytes() for p in good.iterdir()} == before
        assert list_checkpoints(run) == [(1, good)]
        assert load_checkpoint(good, model, opt, None) == 1
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
