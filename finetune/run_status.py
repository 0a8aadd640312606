"""What a run folder says about its run, for a listing (the Train tab's runs list): how it ended (its metrics.jsonl's
last Finished / Failed events), whether its policy folder is ready, and whether there is anything to resume. A run
submitted to a SLURM cluster (RUN/slurm_job.json) is told by its job's state as last seen (RUN/slurm_status.json,
finetune.cluster.last_status): queued, running, finished, failed, cancelled, ... without asking the cluster.

No torch import: the GUI reads this.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from finetune import events as ev
from finetune.cluster import JOB_RECORD, JobState, last_status
from finetune.train_state import list_checkpoints

METRICS = "metrics.jsonl"  # finetune.train.METRICS (not imported: that module imports torch)
TRAIN_CONFIG = "train_config.json"


@dataclass(frozen=True)
class RunStatus:
    """ended: "done" (all its steps), "stopped" (cancelled, or killed before it said how it ended), "failed" (a
    Failed event: `error` is its stable name, `message` says what to do). policy: "ready", "stale" (older than the
    last checkpoint) or "missing". resumable: a checkpoint below the run's step count (a finished run has nothing
    left to resume). A SLURM run: `cluster` is its job's state as last seen (a finetune.cluster.JobState value, or
    "submitted" before anyone looked), `cluster_reason` SLURM's reason of a pending job, `cluster_line` the whole
    status in words; ended is "running" while the job is queued or runs; its checkpoints stay on the cluster, so a
    cancelled or preempted job below its step count is resumable (`workbench train --out RUN --resume --slurm ...`)."""

    ended: str
    policy: str
    step: int | None  # the policy's step, else the last checkpoint's, else None
    total_steps: int | None
    resumable: bool
    error: str = ""
    message: str = ""
    cluster: str = ""  # "" for a run trained here or over SSH
    cluster_reason: str = ""
    cluster_line: str = ""

    @property
    def live(self) -> bool:
        """A SLURM job that is still queued or running (Follow and Cancel apply)."""
        return self.ended == "running"

    @property
    def label(self) -> str:
        """The listing's one-word-or-so state: "failed", "stopped", "stopped, policy ready", "policy ready", ...;
        a SLURM run's: "SLURM pending (Priority)", "SLURM running", "SLURM cancelled, policy ready", ..."""
        policy = {"ready": "policy ready", "stale": "policy older than its last checkpoint",
                  "missing": "policy missing"}[self.policy]
        if self.cluster:
            said = f"SLURM {self.cluster}" + (f" ({self.cluster_reason})" if self.cluster_reason else "")
            return said + (f", {policy}" if self.policy != "missing" or self.cluster == "finished" else "")
        if self.ended in ("failed", "stopped"):
            return self.ended + (f", {policy}" if self.policy != "missing" else "")
        return policy


def policy_state(run: Path) -> str:
    """"ready", "stale" (the policy's step is below the last checkpoint's) or "missing" (an export that failed,
    a run killed before it exported)."""
    policy = run / "policy" / "policy.json"
    if not policy.is_file():
        return "missing"
    ckpts = list_checkpoints(run)
    try:
        step = int(json.loads(policy.read_text()).get("step", 0))
    except (ValueError, TypeError):
        return "stale"
    return "stale" if ckpts and ckpts[-1][0] > step else "ready"


def run_status(run: Path) -> RunStatus:
    """The status of run folder `run` (train_config.json, metrics.jsonl, checkpoints/, policy/)."""
    run = Path(run)
    outcome: str | None = None  # the last Finished event's reason (training's, or `workbench policy export`'s)
    failed: ev.Failed | None = None
    try:
        lines = (run / METRICS).read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:  # the last attempt decides (a resume and an export append to the same file)
        e = ev.parse(line)
        if isinstance(e, ev.RunStarted):
            outcome, failed = None, None
        elif isinstance(e, ev.Failed):
            failed = e
        elif isinstance(e, ev.Finished):
            outcome = e.reason
            if e.reason != "error":
                failed = None
    ckpts = list_checkpoints(run)
    try:
        total: int | None = int(json.loads((run / TRAIN_CONFIG).read_text())["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        total = None
    state = policy_state(run)
    step: int | None = ckpts[-1][0] if ckpts else None
    if state != "missing":
        try:
            step = int(json.loads((run / "policy" / "policy.json").read_text()).get("step", step))
        except (ValueError, TypeError, OSError):
            pass
    resumable = bool(ckpts) and (total is None or ckpts[-1][0] < total)
    if outcome == "error" or failed is not None:  # a failure before RunStarted (the base, the data) or in the loop
        ended = "failed"
    elif ckpts and not resumable:
        ended = "done"
    else:  # cancelled, or killed before it said how it ended
        ended = "stopped"
    if (run / JOB_RECORD).is_file():
        return _cluster_status(run, RunStatus(ended, state, step, total, resumable, failed.error if failed else "",
                                              failed.message if failed else ""))
    return RunStatus(ended, state, step, total, resumable, failed.error if failed else "",
                     failed.message if failed else "")


_CLUSTER_ENDED = {JobState.FINISHED: "done", JobState.FAILED: "failed", JobState.CANCELLED: "stopped",
                  JobState.PREEMPTED: "stopped", JobState.UNKNOWN: "stopped"}


def _cluster_status(run: Path, local: RunStatus) -> RunStatus:
    """A SLURM run's status: the job's last seen state over what the fetched files say (nothing until fetched)."""
    seen = last_status(run)
    if seen is None:
        return dataclasses.replace(local, ended="running", resumable=False, cluster="submitted",
                                   cluster_line="submitted; not looked at since")
    ended = _CLUSTER_ENDED.get(seen.state, "running")
    step = local.step if local.policy != "missing" else seen.step
    total = local.total_steps or seen.total_steps
    resumable = seen.state in (JobState.CANCELLED, JobState.PREEMPTED) and step is not None and \
        (total is None or step < total)
    error, message = local.error, local.message
    if ended == "failed" and not error:
        error, message = "slurm_failed", seen.message or seen.describe()
    return RunStatus(ended, local.policy, step, total, resumable, error, message, cluster=seen.state.value,
                     cluster_reason=seen.reason if seen.state == JobState.PENDING else "",
                     cluster_line=seen.describe())


__all__ = ["RunStatus", "policy_state", "run_status"]
