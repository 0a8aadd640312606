"""Launching training (finetune.launch): the argument rewriting for torchrun and a remote host, and remote training
over SSH against a real sshd on loopback: the dataset goes over with rsync, progress streams back as typed
events, the policy folder comes home."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from finetune import events as ev
from finetune.launch import RemoteTarget, drop_options, remote_argv, torchrun_command
from ssh_helpers import SshdFailed, start_sshd, why_not
from train_helpers import ROOT, events, sim_dataset


def test_arguments_are_rewritten_for_the_host(tmp_path):
    ds = tmp_path / "cube"
    ds.mkdir()
    target = RemoteTarget("me@gpu", "/srv/wb", ("ssh",), "workbench")
    args, local_run, remote_run, local_ds, remote_ds = remote_argv(
        ["train", "--dataset", str(ds), "--out", str(tmp_path / "runs" / "a"), "--host", "me@gpu", "--lora",
         "--remote-dir", "/srv/wb"], target)
    assert args == ["train", "--dataset", "/srv/wb/datasets/cube", "--out", "/srv/wb/runs/a", "--lora", "--json"]
    assert (local_run, remote_run, local_ds, remote_ds) == (tmp_path / "runs" / "a", "/srv/wb/runs/a", ds,
                                                            "/srv/wb/datasets/cube")


def test_options_are_dropped_with_their_values_in_both_spellings():
    argv = ["train", "--gpus", "2", "--out", "r", "--gpus=4", "--host", "me@gpu", "--hostile", "--lora"]
    assert drop_options(argv, ("--gpus",)) == ["train", "--out", "r", "--host", "me@gpu", "--hostile", "--lora"]
    assert drop_options(argv, ("--gpus", "--host")) == ["train", "--out", "r", "--hostile", "--lora"]


def test_torchrun_reruns_the_command_without_its_gpus():
    cmd = torchrun_command(["train", "--config", "tiny", "--gpus=2", "--out", "r", "--fsdp"], 2)
    assert cmd[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "workbench.cli",
                       "train", "--config", "tiny", "--out", "r", "--fsdp"]


@pytest.fixture
def sshd(tmp_path):
    reason = why_not()
    if reason:
        pytest.skip(reason)
    try:
        server = start_sshd(tmp_path / "ssh", {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    except SshdFailed as e:
        pytest.skip(str(e))
    yield server.ssh
    server.stop()


@pytest.mark.system
def test_train_on_a_host_over_ssh(tmp_path, sshd):
    env = dict(os.environ, WORKBENCH_SSH=sshd, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               WORKBENCH_REMOTE_CMD=f"env PYTHONPATH={ROOT} {sys.executable} -m workbench.cli")
    out = tmp_path / "home" / "runs" / "cube"
    remote = tmp_path / "gpu-box"
    cmd = [sys.executable, "-m", "workbench.cli", "train", "--config", "tiny", "--dataset", str(sim_dataset()),
           "--out", str(out), "--steps", "4", "--batch", "2", "--workers", "0", "--log-every", "1", "--val-every",
           "0", "--save-every", "2", "--outcome", "all", "--host", "root@127.0.0.1", "--remote-dir", str(remote),
           "--json"]
    res = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    streamed = [e for e in (ev.parse(line) for line in res.stdout.splitlines()) if e is not None]
    assert [e.step for e in streamed if isinstance(e, ev.Step)] == [1, 2, 3, 4]  # progress streamed back
    assert any(isinstance(e, ev.Finished) and e.reason == "done" for e in streamed)
    # the dataset went over with rsync, the training ran there, the policy came home (checkpoints stayed)
    assert sorted(p.name for p in (remote / "datasets" / "cube").glob("*.hdf5")) == sorted(
        p.name for p in sim_dataset().glob("*.hdf5"))
    assert (remote / "runs" / "cube" / "checkpoints").is_dir()
    assert (out / "policy" / "model.safetensors").is_file() and (out / "policy" / "norm_stats.json").is_file()
    assert not (out / "checkpoints").exists()
    assert [e.step for e in events(out) if isinstance(e, ev.Step)] == [1, 2, 3, 4]
