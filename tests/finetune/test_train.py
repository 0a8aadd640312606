"""Trainer: exact resume after SIGKILL, atomic checkpoints, NaN stop, cancel, errors with their fix."""

from __future__ import annotations

import errno
import json
import signal
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from finetune import events as ev
from finetune import train as T
from finetune.precision import OptimConfig
from finetune.synthetic_data import SyntheticData
from finetune.train_state import list_checkpoints
from train_helpers import ROOT, TINY_ARGS, env, events, run_cli, sim_dataset, step_losses, train_cmd, wait_for


def tiny_cfg(out, **kw) -> T.TrainConfig:
    base = dict(dataset="synthetic", out=str(out), base="random", model="pi0_tiny", precision="fp32",
                gradient_checkpointing=False, steps=6, batch_size=2, log_every=1, val_every=0, save_every=2,
                num_workers=0, optim=OptimConfig(peak_lr=1e-3, end_lr=1e-4, warmup_steps=1, decay_steps=6))
    base.update(kw)
    return T.TrainConfig(**base)


@pytest.mark.system
def test_resume_after_sigkill_repeats_the_uninterrupted_run(tmp_path):
    """Episodes recorded on the sim rig (augmentation on, data position restored by the loader), EMA on."""
    args = [*TINY_ARGS, "--dataset", str(sim_dataset()), "--steps", "8", "--save-every", "2", "--ema", "0.9",
            "--val-fraction", "0.34"]
    ref = run_cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(*args, "--out", str(run)), env=env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(isinstance(e, ev.CheckpointSaved) and e.step == 4 for e in events(run)), proc=proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "policy").exists()
    killed_at = max(step_losses(run))
    assert killed_at < 8
    resumed = run_cli(*args, "--out", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    started = [e for e in events(run) if isinstance(e, ev.RunStarted)]
    assert started[-1].resumed and started[-1].start_step >= 4
    ref_losses, run_losses = step_losses(tmp_path / "ref"), step_losses(run)
    assert sorted(run_losses) == list(range(1, 9))
    for s in range(started[-1].start_step + 1, 9):
        assert run_losses[s] == ref_losses[s], s  # same data, noise, weights, optimizer and schedule: bitwise
    a = load_file(str(tmp_path / "ref" / "policy" / "model.safetensors"))
    b = load_file(str(run / "policy" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_disk_full_during_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_cfg(tmp_path / "run")
    real_save = torch.save
    calls = {"n": 0}

    def failing_save(obj, f, *a, **kw):
        if str(f).endswith("optimizer.pt"):
            calls["n"] += 1
            if calls["n"] == 2:  # the second checkpoint (step 4) hits a full disk halfway through
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(T.torch, "save", failing_save)
    with pytest.raises(T.TrainError) as info:
        T.train(cfg)
    assert info.value.error == "disk_full" and "step_00000002" in str(info.value) and "--resume" in str(info.value)
    ckpts = list_checkpoints(tmp_path / "run")
    assert [s for s, _ in ckpts] == [2]
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))
    good = load_file(str(ckpts[0][1] / "trainable.safetensors"))
    assert all(torch.isfinite(v).all() for v in good.values())
    failed = [e for e in events(tmp_path / "run") if isinstance(e, ev.Failed)]
    assert failed and failed[-1].error == "disk_full"
    monkeypatch.setattr(T.torch, "save", real_save)
    assert T.train(cfg, resume=True) == tmp_path / "run" / "policy"


def test_keep_last_and_atomic_names(tmp_path):
    T.train(tiny_cfg(tmp_path / "run", steps=6, save_every=1, keep_last=2))
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [5, 6]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_00000005", "step_00000006"]


def test_nan_loss_stops_before_the_update_and_names_the_step(tmp_path, monkeypatch):
    real = SyntheticData._samples

    def poisoned(self, positions):
        positions = list(positions)
        batch = real(self, positions)
        if positions[0] == 3 * self.b:  # the batch of step index 3 (the 4th update)
            batch["actions"][0, 0, 0] = float("nan")
        return batch

    monkeypatch.setattr(SyntheticData, "_samples", poisoned)
    with pytest.raises(T.TrainError) as info:
        T.train(tiny_cfg(tmp_path / "run"))
    assert info.value.error == "nan_loss" and info.value.step == 3
    assert "step 4" in str(info.value) and "step_00000002" in str(info.value)
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [2]
    assert max(step_losses(tmp_path / "run")) == 3


def test_sigint_writes_a_checkpoint_and_stops(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(*TINY_ARGS, "--dataset", "synthetic", "--steps", "500", "--save-every",
                                      "1000", "--out", str(run), "--json"),
                            env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        while not isinstance(ev.parse(first), ev.Step):
            first = proc.stdout.readline()
            assert first, proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    kinds = [e for e in (ev.parse(line) for line in out.splitlines()) if e is not None]
    fin = [e for e in kinds if isinstance(e, ev.Finished)]
    assert fin and fin[-1].reason == "cancelled"
    (step, _), = list_checkpoints(run)
    assert step == fin[-1].step < 500
    assert (run / "policy" / "model.safetensors").is_file()


def test_errors_carry_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(T.TrainError) as info:
        T.pick_device("cuda", T.Dist())
    assert info.value.error == "no_cuda" and "--config tiny" in str(info.value)

    not_pi0 = tmp_path / "bert"
    not_pi0.mkdir()
    (not_pi0 / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 768}))
    with pytest.raises(T.TrainError) as info:
        T.train(tiny_cfg(tmp_path / "a", base=str(not_pi0)))
    assert info.value.error == "not_pi0" and "lerobot/pi0_base" in str(info.value)

    T.train(tiny_cfg(tmp_path / "b", steps=2))
    with pytest.raises(T.TrainError) as info:
        T.train(tiny_cfg(tmp_path / "b", steps=2))
    assert info.value.error == "run_exists" and "--resume" in str(info.value)
    with pytest.raises(T.TrainError) as info:
        T.train(tiny_cfg(tmp_path / "b", steps=4, lora=True), resume=True)
    assert info.value.error == "resume_mismatch" and "lora" in str(info.value)


def test_cli_prints_progress_and_writes_json_lines(tmp_path):
    res = run_cli(*TINY_ARGS, "--dataset", "synthetic", "--steps", "3", "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    assert "step      3  loss" in res.stdout and "samples/s" in res.stdout and "ETA" in res.stdout
    evs = events(tmp_path / "run")
    assert [type(e).__name__ for e in evs if isinstance(e, (ev.RunStarted, ev.Finished))] == ["RunStarted",
                                                                                             "Finished"]
    steps = [e for e in evs if isinstance(e, ev.Step)]
    assert [s.step for s in steps] == [1, 2, 3] and all(s.lr > 0 and s.samples_per_s > 0 for s in steps)
    help_text = run_cli("--help").stdout
    for flag in ("--dataset", "--base", "--lora", "--steps", "--batch", "--gpus", "--host", "--resume"):
        assert flag in help_text
