"""The batch script a SLURM training job runs (written into the run folder as slurm_job.sh for the operator to read).

One task per node (srun), and in it torchrun starts one trainer process per GPU (`--nproc-per-node`). The
rendezvous comes from SLURM's environment, torchrun's static one: the first host of `scontrol show hostnames
$SLURM_JOB_NODELIST` is the master (MASTER_ADDR, a port derived from the job id), `--nnodes` is SLURM_NNODES and
each node's `--node-rank` is its SLURM_NODEID, set per task by srun (torchrun reads it from PET_NODE_RANK). The
trainer (finetune.train) reads RANK / WORLD_SIZE / LOCAL_RANK from torchrun.

Signals (the trainer checkpoints and exits on SIGTERM: finetune.train's _Stop):
  * USR1, sent by SLURM `signal_lead_s` before the time limit (`--signal=B:USR1@N`, to this shell only): SIGTERM to
    the trainer (`scancel --signal=TERM` reaches every node's processes), wait for its checkpoint, then
    `scontrol requeue`: the job goes back to the queue and, started again (SLURM_RESTART_COUNT > 0), resumes the
    run with --resume from that checkpoint;
  * USR2 (finetune.cluster's graceful cancel, `scancel --batch --signal=USR2`): the same checkpoint, then the job
    cancels itself (state CANCELLED; resume it later with `workbench train --out RUN --resume --slurm ...`);
  * TERM (a plain `scancel`, or preemption): SLURM signals every process of the job itself; this shell waits for
    the trainer's checkpoint (SLURM's KillWait bounds how long).
Status lines are printed as the trainer's JSON events (`{"event": "status", ...}`), so the job log reads as one
event stream (finetune.events).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from finetune.cluster.profile import ClusterProfile, sbatch_option

JOB_SCRIPT = "slurm_job.sh"
LOG_PATTERN = "slurm-%j.log"  # sbatch --output in the run folder; one file per job id, appended across requeues


@dataclass(frozen=True)
class JobSpec:
    """What one job trains: the cluster-side run folder and the `workbench train` arguments for it."""

    run_dir: str  # absolute, on the shared filesystem
    train_args: tuple[str, ...]  # after "train": cluster paths, --json
    name: str  # the job's name in squeue
    resume: bool = False  # --resume from the first start (else only once requeued)


def log_path(run_dir: str, job_id: int) -> str:
    return f"{run_dir.rstrip('/')}/{LOG_PATTERN.replace('%j', str(job_id))}"


def sbatch_lines(profile: ClusterProfile, spec: JobSpec) -> list[str]:
    """The #SBATCH options of the job (what `sbatch` reads from the script's head)."""
    p = profile
    opts = [f"--job-name={spec.name}", f"--output={spec.run_dir}/{LOG_PATTERN}", "--open-mode=append",
            f"--nodes={p.nodes}", "--ntasks-per-node=1", f"--cpus-per-task={p.cpus_per_task}"]
    if p.gpus_per_node > 0:
        opts.append(f"--gpus-per-node={p.gpus_per_node}")
    for value, name in ((p.mem, "mem"), (p.time_limit, "time"), (p.partition, "partition"),
                        (p.account, "account"), (p.qos, "qos"), (p.constraint, "constraint")):
        if value:
            opts.append(f"--{name}={value}")
    if p.requeue:
        opts += ["--requeue", f"--signal=B:USR1@{p.signal_lead_s}"]
    else:
        opts.append("--no-requeue")
    opts += [sbatch_option(x) for x in p.extra_sbatch]
    return [f"#SBATCH {o}" for o in opts]


def _launcher(profile: ClusterProfile) -> list[str]:
    """The command that starts torchrun on a node: Python, or Python inside the Apptainer image."""
    py = shlex.split(profile.python)
    if not profile.container:
        return [*py, "-m", "torch.distributed.run"]
    binds = [profile.remote_dir.rstrip("/")] + ([profile.hf_home] if profile.hf_home else [])
    gpu = ["--nv"] if profile.gpus_per_node > 0 else []
    return ["apptainer", "exec", *gpu, *[x for b in binds for x in ("--bind", b)], profile.container, *py, "-m",
            "torch.distributed.run"]


class _Raw(str):
    """A token written as is: it holds shell variables the job expands ("$SLURM_NNODES")."""


def _shell(tokens: list[str]) -> str:
    """Tokens for the script, quoted, except the _Raw ones."""
    return " ".join(t if isinstance(t, _Raw) else shlex.quote(t) for t in tokens)


def job_script(profile: ClusterProfile, spec: JobSpec) -> str:
    """The whole batch script (bash)."""
    p = profile.check()
    nproc = max(p.gpus_per_node, 1)
    shutdown = max(p.signal_lead_s - 30, 30)
    env = ["export PYTHONUNBUFFERED=1", f"export HF_HOME={shlex.quote(p.hub_cache)}",
           # torchrun gives its processes this long to checkpoint after SIGTERM before it kills them (torch >= 2.6;
           # older ones wait 30 s)
           f"export TORCH_ELASTIC_SHUTDOWN_TIMEOUT={shutdown} PET_SHUTDOWN_TIMEOUT={shutdown}",
           f'export OMP_NUM_THREADS="${{OMP_NUM_THREADS:-$(( ${{SLURM_CPUS_PER_TASK:-1}} / {nproc} > 0 ? '
           f'${{SLURM_CPUS_PER_TASK:-1}} / {nproc} : 1 ))}}"']
    if p.offline_nodes:
        env.append("export HF_HUB_OFFLINE=1  # compute nodes without network: the hub cache was filled beforehand")
    torchrun = _launcher(p) + [_Raw('--nnodes="$SLURM_NNODES"'), f"--nproc-per-node={nproc}",
                               _Raw('--master-addr="$MASTER_ADDR"'), _Raw('--master-port="$MASTER_PORT"'),
                               "--max-restarts=0",
                               "-m", "workbench.cli", "train", *spec.train_args]
    resume = ("RESUME=--resume  # the run was started before: go on from its last checkpoint" if spec.resume else
              'RESUME=""\nif [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then RESUME=--resume; fi  # requeued: go on '
              "from the checkpoint")
    lines = [
        "#!/bin/bash",
        *sbatch_lines(p, spec),
        "#",
        f"# Written by the ALOHA workbench (finetune/cluster/script.py) for the run {spec.run_dir}.",
        "# One task per node; torchrun starts one trainer process per GPU in it; see the module's notes for the",
        "# rendezvous and the signals (USR1: checkpoint + requeue, USR2: checkpoint + cancel, TERM: checkpoint).",
        *(["# environment set-up (the cluster profile's)", *p.setup] if p.setup else []),
        *env,
        f"cd {shlex.quote(spec.run_dir)}",
        'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        'MASTER_PORT="$((20000 + SLURM_JOB_ID % 20000))"',
        "export MASTER_ADDR MASTER_PORT",
        resume,
        "",
        "say() { printf '{\"event\":\"status\",\"text\":\"slurm: %s\"}\\n' \"$*\"; }",
        'STOP=""',
        'stop_trainer() {  # $1: requeue | cancel',
        '    STOP="$1"',
        '    say "signal $2: checkpointing, then $1"',
        '    scancel --signal=TERM "$SLURM_JOB_ID"  # every node: torchrun and its trainer processes',
        "}",
        "trap 'stop_trainer requeue USR1' USR1",
        "trap 'stop_trainer cancel USR2' USR2",
        "trap 'STOP=${STOP:-terminated}; say \"SIGTERM: waiting for the trainer to checkpoint\"' TERM",
        "",
        'say "job $SLURM_JOB_ID started on $SLURM_JOB_NODELIST (restart ${SLURM_RESTART_COUNT:-0}, '
        '$SLURM_NNODES node(s) x ' + str(nproc) + ' process(es))"',
        "rc=0",
        'if [ -z "$STOP" ]; then  # (a signal during the set-up lines: no trainer to start)',
        "# torchrun reads --node-rank from PET_NODE_RANK: each node's SLURM_NODEID, set per task by srun",
        'srun --ntasks="$SLURM_NNODES" --ntasks-per-node=1 '
        '${SLURM_CPUS_PER_TASK:+--cpus-per-task=$SLURM_CPUS_PER_TASK} \\',
        "    bash -c 'export PET_NODE_RANK=\"$SLURM_NODEID\"; exec \"$@\"' node \\",
        "    " + _shell(torchrun) + " $RESUME &",
        'child=$!',
        'while :; do',
        '    wait "$child"; rc=$?',
        '    if [ "$rc" -gt 128 ] && kill -0 "$child" 2>/dev/null; then continue; fi  # a trap ran: keep waiting',
        '    break',
        'done',
        'fi',
        'case "$STOP" in',
        '    requeue)',
        '        say "requeueing job $SLURM_JOB_ID (trainer exit $rc); it resumes from the checkpoint"',
        '        scontrol requeue "$SLURM_JOB_ID" || say "scontrol requeue failed: resume with --resume"',
        '        exit 0 ;;',
        '    cancel)',
        '        say "cancelled after the checkpoint (trainer exit $rc)"',
        '        scancel "$SLURM_JOB_ID"',
        '        exit 130 ;;',
        'esac',
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


__all__ = ["JOB_SCRIPT", "LOG_PATTERN", "JobSpec", "job_script", "log_path", "sbatch_lines"]
