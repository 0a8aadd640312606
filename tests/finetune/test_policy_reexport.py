"""A failed export loses nothing and can be redone: a full disk (a real, tiny tmpfs) or out of memory while writing
the policy leaves no policy.partial, keeps the checkpoints and names `workbench policy export RUN`, which rebuilds
the run's training model from train_config.json + a checkpoint and writes the policy that training would have."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from finetune import events as ev
from finetune import train as T
from finetune.checkpoint import TIED_ALIAS
from finetune.policy_folder import load_policy
from finetune.precision import OptimConfig
from finetune.run_export import export_run
from finetune.train_state import list_checkpoints
from tests.recorder.test_disk_full import mount_tmpfs, umount
from train_helpers import ROOT, TINY_ARGS, env, events, run_cli, sim_dataset

ARGS = [*TINY_ARGS, "--steps", "4", "--save-every", "2", "--lora", "--ema", "0.9", "--val-fraction", "0.34"]


def policy_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench.cli", "policy", *args], env=env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def json_events(stdout: str) -> list[ev.Event]:
    return [e for e in (ev.parse(line) for line in stdout.splitlines()) if e is not None]


def digest(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny LoRA + EMA run on episodes recorded on the sim rig, exported at its end (the reference)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    res = run_cli(*ARGS, "--dataset", str(sim_dataset()), "--out", str(run))
    assert res.returncode == 0, res.stderr[-3000:]
    return run


def _remount(mnt, size: int) -> None:
    r = subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.system
def test_full_disk_export_keeps_the_checkpoints_and_the_reexport_serves(tmp_path, trained):
    mnt = tmp_path / "disk"
    mount_tmpfs(mnt, "64m")
    try:
        run = mnt / "run"
        shutil.copytree(trained, run, ignore=shutil.ignore_patterns("policy"))
        before = digest(run / "checkpoints")
        st = os.statvfs(mnt)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        policy_bytes = (trained / "policy" / "model.safetensors").stat().st_size
        _remount(mnt, used + (64 << 10))  # room for the log lines, not for the policy's weights
        assert policy_bytes > 4 * (64 << 10)

        # the end of training meets the full disk (a resume with no steps left goes straight to the export)
        res = run_cli("--out", str(run), "--resume", "--json", "--workers", "0")
        assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
        failed = [e for e in json_events(res.stdout) if isinstance(e, ev.Failed)]
        assert failed and failed[-1].error == "disk_full", res.stdout[-2000:]
        msg = failed[-1].message
        assert f"workbench policy export {run}" in msg and "checkpoints are kept" in msg and "step_00000004" in msg
        assert sorted(p.name for p in run.iterdir() if p.name.startswith("policy")) == []  # no policy.partial
        assert digest(run / "checkpoints") == before and [s for s, _ in list_checkpoints(run)] == [2, 4]

        # the same disk: the re-export fails the same way and leaves nothing either
        res = policy_cli("export", str(run), "--json")
        assert res.returncode == 2 and [e.error for e in json_events(res.stdout) if isinstance(e, ev.Failed)] == [
            "disk_full"]
        assert not (run / "policy.partial").exists() and not (run / "policy").exists()

        _remount(mnt, 64 << 20)  # space freed: export it again
        res = policy_cli("export", str(run), "--json")
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        seen = json_events(res.stdout)
        assert any(isinstance(e, ev.Status) and "exporting the policy folder" in e.text for e in seen)
        saved = [e for e in seen if isinstance(e, ev.PolicySaved)]
        assert saved and saved[-1].step == 4 and saved[-1].path == str(run / "policy")
        assert isinstance(seen[-1], ev.Finished) and seen[-1].reason == "done"
        assert isinstance(events(run)[-1], ev.Finished)  # and the run's log has them too
        assert digest(run / "checkpoints") == before

        # what training would have written: the same weights bit for bit, the same data description
        a = load_file(str(trained / "policy" / "model.safetensors"))
        b = load_file(str(run / "policy" / "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        for name in ("norm_stats.json", "transforms.json", "rig.json", "config.json", "tokenizer.model"):
            assert (trained / "policy" / name).read_bytes() == (run / "policy" / name).read_bytes(), name
        assert json.loads((run / "policy" / "policy.json").read_text())["step"] == 4

        # and it serves: the serving runtime loads it (load_policy, strict) and answers in rig units
        from finetune.runtime import PolicyRuntime

        rt = PolicyRuntime.load(run / "policy", device="cpu")
        rng = np.random.default_rng(0)
        images = {c: rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for c in rt.cameras}
        out = rt.infer(rng.normal(0, 0.2, 14).astype(np.float32), images, "transfer the cube", seed=0)
        assert out.shape == (50, 14) and np.isfinite(out).all()
    finally:
        umount(mnt)


def test_reexport_of_an_earlier_step_and_clear_refusals(tmp_path, trained):
    run = tmp_path / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("policy"))
    res = policy_cli("export", str(run), "--step", "3")
    assert res.returncode == 2 and "no checkpoint of step 3" in res.stderr and "2, 4" in res.stderr
    assert "--step" in res.stderr and not (run / "policy").exists()
    res = policy_cli("export", str(run), "--step", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "policy folder" in res.stdout  # the human lines
    assert load_policy(run / "policy").manifest["step"] == 2
    res = policy_cli("export", str(tmp_path))
    assert res.returncode == 2 and "not a training run" in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(run / "train_config.json", empty)
    res = policy_cli("export", str(empty))
    assert res.returncode == 2 and f"workbench train --out {empty} --resume" in res.stderr


def _tiny_cfg(out) -> T.TrainConfig:
    return T.TrainConfig(dataset="synthetic", out=str(out), base="random", model="pi0_tiny", precision="fp32",
                         gradient_checkpointing=False, steps=2, batch_size=2, log_every=1, val_every=0, save_every=2,
                         num_workers=0, optim=OptimConfig(peak_lr=1e-3, warmup_steps=0, decay_steps=2))


def _no_space(text: str) -> RuntimeError:
    """torch's way: a failed write as a RuntimeError, the OSError only in its context."""
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        try:
            raise RuntimeError(text)
        except RuntimeError as e:
            return e


@pytest.mark.parametrize("make, error", [
    (lambda: MemoryError(), "out_of_memory"),
    (lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you "
                          "tried to allocate 134217728 bytes"), "out_of_memory"),
    (lambda: _no_space("unexpected pos 576 vs 534"), "disk_full"),
    (lambda: OSError(errno.EIO, "Input/output error"), "export_failed"),
])
def test_a_failed_export_is_a_train_error_and_exporting_again_works(tmp_path, monkeypatch, make, error):
    from finetune.policy_export import TrainingWeights

    real = TrainingWeights.produce
    calls = {"n": 0}

    def failing(self, key):
        calls["n"] += 1
        if calls["n"] == 20:  # halfway through model.safetensors
            raise make()
        return real(self, key)

    monkeypatch.setattr(TrainingWeights, "produce", failing)
    run = tmp_path / "run"
    with pytest.raises(T.TrainError) as info:
        T.train(_tiny_cfg(run))
    assert info.value.error == error and f"workbench policy export {run}" in str(info.value)
    assert "checkpoints are kept" in str(info.value)
    assert not (run / "policy.partial").exists() and not (run / "policy").exists()
    assert [s for s, _ in list_checkpoints(run)] == [2]
    failed = [e for e in events(run) if isinstance(e, ev.Failed)]
    assert failed and failed[-1].error == error
    monkeypatch.setattr(TrainingWeights, "produce", real)
    seen: list[ev.Event] = []
    out = export_run(run, emit=seen.append)
    assert out == run / "policy" and load_policy(out).manifest["step"] == 2
    assert [type(e) for e in seen[-2:]] == [ev.PolicySaved, ev.Finished]
    # no EMA here: the policy holds the checkpoint's trained weights (fp32 tiny: exactly)
    weights = load_file(str(out / "model.safetensors"))
    trained = load_file(str(list_checkpoints(run)[-1][1] / "trainable.safetensors"))
    assert len(trained) > 10 and all(torch.equal(weights[k], v) for k, v in trained.items() if k != TIED_ALIAS)
