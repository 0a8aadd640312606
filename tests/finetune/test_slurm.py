"""Training on a SLURM cluster (finetune.cluster, `workbench train --slurm`, `workbench cluster`) against a real
single-node SLURM (munged, slurmctld, slurmd started for this module: slurm_helpers) reached through a real sshd on
loopback: a tiny CPU run is staged with rsync, submitted, followed from its job log, cancelled, requeued and
resumed, fetched home and served; sbatch's refusals come back with SLURM's reason and the option to change."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune import cluster
from finetune import events as ev
from finetune.cluster import ClusterProfile, JobState, JobStatus, JobWatch
from finetune.cluster.profile import ProfileError, load_profile, save_profile
from finetune.cluster.slurm import Progress, job_status
from ssh_helpers import LOGIN
from slurm_helpers import PARTITION, wait_until
from train_helpers import ROOT, TINY_ARGS, sim_dataset, step_losses

STEPS = 120  # 30-60 ms a step here: long enough to stop mid-run once the first steps are seen


# ------------------------------------------------------------------------------------------------ without SLURM
def test_two_node_job_script_has_the_rendezvous_from_slurm(tmp_path):
    """The script a 2-node x 4-GPU job submits: one task per node, torchrun with SLURM's node count, the first
    host as the master and each node's rank from srun; requeue before the time limit; valid bash."""
    p = ClusterProfile(login="me@login", remote_dir="/scratch/me/wb", partition="gpu", account="lab", qos="high",
                       nodes=2, gpus_per_node=4, cpus_per_task=32, mem="200G", time_limit="12:00:00",
                       constraint="h100", extra_sbatch=("#SBATCH --exclusive",), setup=("module load cuda/12.4",),
                       container="/scratch/me/wb.sif")
    spec = cluster.JobSpec("/scratch/me/wb/runs/cube", ("--dataset", "/scratch/me/wb/datasets/cube", "--out",
                                                        "/scratch/me/wb/runs/cube", "--json"), "wb-cube")
    text = cluster.job_script(p, spec)
    heads = [ln for ln in text.splitlines() if ln.startswith("#SBATCH")]
    for want in ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=4", "--cpus-per-task=32", "--mem=200G",
                 "--time=12:00:00", "--partition=gpu", "--account=lab", "--qos=high", "--constraint=h100",
                 "--requeue", "--signal=B:USR1@300", "--exclusive", "--open-mode=append",
                 "--output=/scratch/me/wb/runs/cube/slurm-%j.log"):
        assert f"#SBATCH {want}" in heads, want
    assert 'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"' in text
    assert 'srun --ntasks="$SLURM_NNODES" --ntasks-per-node=1' in text
    assert "export PET_NODE_RANK=\"$SLURM_NODEID\"" in text  # torchrun's --node-rank, per node
    launch = next(ln for ln in text.splitlines() if "torch.distributed.run" in ln)
    assert launch.strip().startswith("apptainer exec --nv --bind /scratch/me/wb /scratch/me/wb.sif python3 -m")
    for want in ('--nnodes="$SLURM_NNODES"', "--nproc-per-node=4", '--master-addr="$MASTER_ADDR"',
                 '--master-port="$MASTER_PORT"', "-m workbench.cli train --dataset /scratch/me/wb/datasets/cube"):
        assert want in launch, want
    assert text.index("module load cuda/12.4") < text.index("srun ")
    assert "trap 'stop_trainer requeue USR1' USR1" in text and 'scontrol requeue "$SLURM_JOB_ID"' in text
    script = tmp_path / "job.sh"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


def test_profiles_round_trip_and_bad_values_name_the_option(tmp_path):
    p = ClusterProfile(name="lab", login="me@login", partition="gpu", nodes=2, extra_sbatch=("--exclusive",),
                       setup=("module load cuda", 'source "$HOME/venv/bin/activate"'), offline_nodes=False)
    path = save_profile(p, tmp_path)
    assert path == tmp_path / "lab.toml"
    assert load_profile("lab", tmp_path) == p
    with pytest.raises(ProfileError, match="--time") as e:
        ClusterProfile(time_limit="tomorrow").check()
    assert e.value.field == "time_limit"
    with pytest.raises(ProfileError, match="--signal-lead"):
        ClusterProfile(time_limit="5:00", signal_lead_s=300).check()  # 5 minutes: signalled as it starts
    (tmp_path / "typo.toml").write_text('partiton = "gpu"\n')
    with pytest.raises(ProfileError, match="unknown key 'partiton'"):
        load_profile("typo", tmp_path)
    with pytest.raises(ProfileError, match="no cluster profile 'nope'.*saved: lab, typo"):
        load_profile("nope", tmp_path)


# ------------------------------------------------------------------------------------------------ real SLURM
# slurm and login: tests/conftest.py (shared with the Train tab's cluster tests)


@pytest.fixture
def profile(login, tmp_path, monkeypatch) -> ClusterProfile:
    monkeypatch.setenv("WORKBENCH_SSH", login.ssh)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return ClusterProfile(name="loop", login=LOGIN, remote_dir=str(tmp_path / "cluster"), partition=PARTITION,
                          gpus_per_node=0, cpus_per_task=1, python=sys.executable, signal_lead_s=60,
                          setup=(f"export PYTHONPATH={ROOT}",))


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> dict[int, float]:
    """step -> loss of the same run trained here, in this process, without interruption (the exact-resume
    reference; one thread, as in the jobs)."""
    import torch

    from finetune.train import train
    from workbench.cli import build_parser
    from workbench.cli_train import config_from_args

    out = tmp_path_factory.mktemp("reference") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(config_from_args(build_parser().parse_args(_argv(out))))
    finally:
        torch.set_num_threads(threads)
    return step_losses(out)


def _argv(out: Path, *extra: str) -> list[str]:
    return ["train", *TINY_ARGS, "--dataset", str(sim_dataset()), "--out", str(out), "--steps", str(STEPS),
            "--save-every", "1000", "--device", "cpu", *extra]


def _until_step(watch: JobWatch, seen: list, step: int, slurm) -> None:
    def reached() -> bool:
        seen.extend(watch.poll())
        return watch.progress.step is not None and watch.progress.step >= step
    wait_until(reached, 120, f"the job to report step {step}", slurm)


def _until_state(watch: JobWatch, seen: list, state: JobState, slurm) -> None:
    def reached() -> bool:
        seen.extend(watch.poll())
        assert watch.status is not None
        assert watch.status.state == state or not watch.status.done, (watch.status, cluster.log_tail(watch.job, 30))
        return watch.status.state == state
    wait_until(reached, 120, f"the job to be {state.value}", slurm)


def _remote_steps(run: str) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in (Path(run) / "checkpoints").glob("step_*"))


@pytest.mark.system
def test_bad_partition_gives_slurms_reason_and_the_option(slurm, tmp_path, monkeypatch):
    """On the login node itself (no SSH): sbatch's refusal, in SLURM's words, naming --partition."""
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    bad = ClusterProfile(login="", remote_dir=str(tmp_path / "cluster"), partition="nosuch", gpus_per_node=0,
                         cpus_per_task=1, python=sys.executable)
    with pytest.raises(cluster.SubmitError) as e:
        cluster.submit_training(bad, _argv(tmp_path / "runs" / "cube"))
    assert "invalid partition" in e.value.reason.lower()
    assert e.value.field == "partition" and e.value.option == "--partition"
    assert "--partition" in str(e.value) and "sinfo" in str(e.value)
    assert slurm.run("squeue", "-h").stdout.strip() == ""  # nothing was queued


@pytest.mark.system
def test_a_job_that_fails_ends_failed_with_the_reason(slurm, profile, tmp_path):
    """A job whose command fails (here: no Python where the profile says) ends FAILED with SLURM's exit code; a
    trainer failure in the log becomes the status's message (the trainer's error name and fix)."""
    broken = dataclasses.replace(profile, python="false")
    job = cluster.submit_training(broken, _argv(tmp_path / "home" / "runs" / "cube")).job
    assert job is not None
    final = cluster.follow(job, lambda e: None, poll_s=0.3)
    assert final.state == JobState.FAILED and final.slurm_state == "FAILED" and final.exit_code == "1:0"
    assert "FAILED" in final.describe()
    progress = Progress()
    progress.feed(ev.Failed("bad_dataset", "no episodes in /x. Fix: record some"))
    pairs = {"JobId": "7", "JobState": "FAILED", "ExitCode": "1:0", "Restarts": "0", "Reason": "NonZeroExitCode"}
    failed = job_status(7, pairs, progress)
    assert failed.state == JobState.FAILED and failed.message == "bad_dataset: no episodes in /x. Fix: record some"


@pytest.mark.system
def test_cancel_checkpoints_first_and_ends_cancelled(slurm, profile, tmp_path):
    """cluster.cancel (the Train tab's Cancel, `workbench cluster cancel RUN`) on a running job: the trainer
    checkpoints the step it is at, then the job cancels itself: CANCELLED, resumable from that checkpoint."""
    out = tmp_path / "home" / "runs" / "cube"
    job = cluster.submit_training(profile, _argv(out)).job
    assert job is not None and (out / "slurm_job.json").is_file() and (out / "slurm_job.sh").is_file()
    assert (Path(profile.remote_dir) / "datasets" / "cube").is_dir()  # staged with rsync
    w, seen = JobWatch(job), []
    _until_step(w, seen, 5, slurm)
    assert cluster.cancel(job) == f"job {job.job_id}: checkpointing, then cancelling"
    final = cluster.follow(job, seen.append, poll_s=0.3, watch=w)
    assert final.state == JobState.CANCELLED, (final, cluster.log_tail(job, 40))
    states = [e.state for e in seen if isinstance(e, JobStatus)]
    assert JobState.RUNNING in states and states[-1] == JobState.CANCELLED
    stopped = [e for e in seen if isinstance(e, ev.Finished)]
    assert [e.reason for e in stopped] == ["cancelled"] and 5 <= stopped[0].step < STEPS
    assert _remote_steps(job.remote_run) == [stopped[0].step]  # the checkpoint it stopped at: resumable
    assert cluster.fetch(job) == out / "policy"  # the stopped run's policy and metrics come home
    assert not (out / "checkpoints").exists()


def _trainer_pids(run: str) -> list[int]:
    """The trainer processes (torchrun's workers) of the job training `run`, found in /proc."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"workbench.cli" in argv and run.encode() in argv and b"torch.distributed.run" not in argv and \
                not any(a.endswith(b"bash") for a in argv[:1]):
            pids.append(int(d.name))
    return pids


@pytest.mark.system
def test_plain_scancel_leaves_a_resumable_checkpoint(slurm, profile, tmp_path):
    """An operator's `scancel` on the login node: SLURM signals every process of the job, torchrun forwards the
    signal again, and here one more SIGTERM comes half a second later; the trainer still checkpoints the step it
    was at and writes its policy folder, and the job ends CANCELLED."""
    out = tmp_path / "home" / "runs" / "cube"
    job = cluster.submit_training(profile, _argv(out)).job
    assert job is not None
    w, seen = JobWatch(job), []
    _until_step(w, seen, 5, slurm)
    trainers = _trainer_pids(job.remote_run)
    assert len(trainers) == 1, trainers
    slurm.run("scancel", str(job.job_id), check=True)
    time.sleep(0.5)
    os.kill(trainers[0], signal.SIGTERM)  # a repeat while it checkpoints / exports: ignored
    final = cluster.follow(job, seen.append, poll_s=0.3, watch=w)
    assert final.state == JobState.CANCELLED
    stopped = [e for e in seen if isinstance(e, ev.Finished)]
    assert [e.reason for e in stopped] == ["cancelled"], cluster.log_tail(job, 40)
    assert _remote_steps(job.remote_run) == [stopped[0].step]
    assert [e.step for e in seen if isinstance(e, ev.PolicySaved)] == [stopped[0].step]
    status = json.loads(subprocess.run(
        [sys.executable, "-m", "workbench.cli", "cluster", "status", str(out), "--json"], capture_output=True,
        text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60).stdout)
    assert status["state"] == "cancelled" and status["step"] == stopped[0].step


@pytest.mark.system
def test_cli_job_is_requeued_on_the_time_limit_signal_resumes_exactly_and_serves(slurm, profile, tmp_path,
                                                                                reference):
    """`workbench train --slurm PROFILE`: staged, submitted and followed; SLURM's warning before the time limit
    (USR1 to the batch script) makes the trainer checkpoint and the job requeue itself; started again it resumes
    from that checkpoint to the losses of an uninterrupted run, and the policy folder comes home and serves."""
    save_profile(profile)
    out = tmp_path / "home" / "runs" / "cube"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", *_argv(out), "--slurm", "loop", "--poll-s", "0.5",
                             "--json"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job = wait_until(lambda: (out / "slurm_job.json").is_file() and cluster.load_job(out), 120,
                         "the CLI to submit the job", slurm)
        w, seen = JobWatch(job), []
        _until_step(w, seen, 5, slurm)
        slow = JobWatch(job)  # a follower that polls before the requeue and next after the restart
        assert [e.state for e in slow.poll() if isinstance(e, JobStatus)] == [JobState.RUNNING]
        slurm.run("scancel", "--batch", "--signal=USR1", str(job.job_id), check=True)  # --signal=B:USR1@N's signal
        _until_state(w, seen, JobState.REQUEUED, slurm)
        # skip SLURM's hold before a requeued job starts again, once the node has cleaned up after its first run
        # (started while the node still completes it, SLURM kills it: "Job credential revoked")
        wait_until(lambda: slurm.run("sinfo", "-h", "-o", "%T").stdout.split() == ["idle"], 60,
                   "the node to be idle after the requeue", slurm)
        # slurmd revoked the first run's credential when it was killed, and refuses a credential created in the same
        # second or before ("Killing non-startable batch JobId=N: Job credential revoked"; the times are whole
        # seconds): start it again from the next second on, as SLURM's own hold of a requeued job would
        time.sleep(math.floor(time.time()) + 2 - time.time())
        slurm.run("scontrol", "update", f"JobId={job.job_id}", "StartTime=now", check=True)

        def restarted() -> bool:
            w.poll()
            return w.status.restarts == 1 and w.status.state != JobState.REQUEUED
        wait_until(restarted, 120, "the requeued job to start again", slurm)
        missed = [e.state for e in slow.poll() if isinstance(e, JobStatus)]
        assert missed[0] == JobState.REQUEUED and missed[-1] != JobState.REQUEUED, missed  # the requeue is told
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:] + stdout[-3000:] + "\n" + slurm.logs()
    streamed = [e for e in (cluster.parse_line(x) for x in stdout.splitlines()) if e is not None]
    states = [e for e in streamed if isinstance(e, JobStatus)]
    assert JobState.REQUEUED in [e.state for e in states]
    assert states[-1].state == JobState.FINISHED and states[-1].restarts == 1 and states[-1].step == STEPS
    stop = next(e for e in streamed if isinstance(e, ev.CheckpointSaved))
    started = [(e.resumed, e.start_step) for e in streamed if isinstance(e, ev.RunStarted)]
    assert started == [(False, 0), (True, stop.step)] and 5 <= stop.step < STEPS
    assert states[-1].resumed_from == stop.step
    assert [e.reason for e in streamed if isinstance(e, ev.Finished)] == ["cancelled", "done"]
    # home like a local run (policy, metrics, config, the job script and log), without the checkpoints
    assert (out / "policy" / "model.safetensors").is_file() and (out / "train_config.json").is_file()
    assert (out / "slurm_job.sh").is_file() and (out / f"slurm-{job.job_id}.log").is_file()
    assert not (out / "checkpoints").exists()
    assert step_losses(out) == reference  # before and after the requeue, every step: resumed exactly

    import numpy as np

    from finetune.runtime import PolicyRuntime  # what `workbench serve` loads
    from workbench.config import load_rig_config

    rt = PolicyRuntime.load(out / "policy", device="cpu", rig=load_rig_config("sim-transfer-cube"))
    rng = np.random.default_rng(0)
    actions = rt.infer(rng.normal(0, 0.3, 14).astype(np.float32),
                       {c: rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for c in rt.cameras}, "transfer the cube",
                       seed=1)
    assert actions.shape == (50, 14) and np.isfinite(actions).all()
