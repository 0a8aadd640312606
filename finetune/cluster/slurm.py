"""What SLURM says about a job, as types: the state (`scontrol show job`; no accounting database needed), the progress
read from the job log (the trainer's JSON events, finetune.events), and sbatch's refusals as errors that name the
option to change. No torch import (the GUI reads this).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Union

from finetune import events as ev
from finetune.cluster.profile import PROFILE_FIELDS


class JobState(str, Enum):
    """A job's state as the workbench shows it (SLURM's own is JobStatus.slurm_state)."""

    PENDING = "pending"  # queued (Reason says why: Priority, Resources, ...)
    RUNNING = "running"
    REQUEUED = "requeued"  # back in the queue after a checkpoint (time limit, preemption): it resumes when started
    FINISHED = "finished"  # completed: the policy folder is there
    FAILED = "failed"  # the trainer or the job failed (also a time limit without requeue, a node failure)
    CANCELLED = "cancelled"  # scancel: the last checkpoint stays, the run can be resumed
    PREEMPTED = "preempted"  # ended by a higher-priority job (no requeue): resumable like a cancelled run
    UNKNOWN = "unknown"  # SLURM no longer knows the job and the log does not say how it ended

    @property
    def done(self) -> bool:
        return self in (JobState.FINISHED, JobState.FAILED, JobState.CANCELLED, JobState.PREEMPTED, JobState.UNKNOWN)


_SLURM_STATES = {
    "PENDING": JobState.PENDING, "CONFIGURING": JobState.PENDING, "SUSPENDED": JobState.PENDING,
    "STOPPED": JobState.PENDING, "RESV_DEL_HOLD": JobState.PENDING,
    "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING, "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING, "RESIZING": JobState.RUNNING,
    "COMPLETED": JobState.FINISHED,
    "CANCELLED": JobState.CANCELLED,
    "PREEMPTED": JobState.PREEMPTED,
    "REQUEUED": JobState.REQUEUED, "REQUEUE_HOLD": JobState.REQUEUED, "REQUEUE_FED": JobState.REQUEUED,
    "SPECIAL_EXIT": JobState.REQUEUED,
    "FAILED": JobState.FAILED, "TIMEOUT": JobState.FAILED, "NODE_FAIL": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED, "OUT_OF_MEMORY": JobState.FAILED, "DEADLINE": JobState.FAILED,
}


@dataclass(frozen=True)
class JobStatus:
    """One look at a job: SLURM's state and the trainer's progress from the job log. Also an event (kind "slurm")
    in the stream `follow` emits and `workbench train --slurm --json` prints (`to_json`, `parse_line`)."""

    kind: ClassVar[str] = "slurm"
    job_id: int
    state: JobState
    slurm_state: str = ""  # JobState= of scontrol ("" when SLURM no longer knows the job)
    reason: str = ""  # SLURM's Reason= (why it is pending: Priority, Resources, BeginTime, ...)
    exit_code: str = ""
    restarts: int = 0  # requeues so far
    nodes: str = ""
    run_time: str = ""
    time_limit: str = ""
    step: int | None = None  # the trainer's last reported step
    total_steps: int | None = None
    eta_s: float | None = None
    loss: float | None = None
    resumed_from: int | None = None  # the checkpoint step the last (re)start resumed from
    message: str = ""  # the trainer's failure (error name and what to do), or the last status line

    @property
    def done(self) -> bool:
        return self.state.done

    def describe(self) -> str:
        """One line for people: 'running on node7: step 120/400, loss 0.93, ETA 0:12:09 (restart 1)'."""
        s = f"job {self.job_id} {self.state.value}"
        if self.state == JobState.PENDING and self.reason:
            s += f" ({self.reason})"
        if self.state == JobState.RUNNING and self.nodes:
            s += f" on {self.nodes}"
        if self.step is not None:
            s += f": step {self.step}" + (f"/{self.total_steps}" if self.total_steps else "")
            if self.loss is not None:
                s += f", loss {self.loss:.4f}"
            if self.eta_s is not None and self.state == JobState.RUNNING:
                s += f", ETA {ev._hms(self.eta_s)}"
        if self.restarts:
            s += f" (restart {self.restarts})"
        if self.state in (JobState.FAILED, JobState.UNKNOWN) and self.message:
            s += f": {self.message}"
        elif self.state == JobState.FAILED and self.slurm_state and self.slurm_state != "FAILED":
            s += f" ({self.slurm_state})"
        return s

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["state"] = self.state.value
        return json.dumps({"event": self.kind, **d}, separators=(",", ":"))

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "JobStatus":
        names = {f.name for f in dataclasses.fields(JobStatus)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["state"] = JobState(kw.get("state", "unknown"))
        return JobStatus(**kw)


@dataclass(frozen=True)
class LogLine:
    """A line of the job log that is not an event (tracebacks, torchrun's and SLURM's own messages)."""

    kind: ClassVar[str] = "log"
    text: str

    def to_json(self) -> str:
        return json.dumps({"event": self.kind, "text": self.text}, separators=(",", ":"))


ClusterEvent = Union[ev.Event, JobStatus, LogLine]


def to_json(e: ClusterEvent) -> str:
    return e.to_json() if isinstance(e, (JobStatus, LogLine)) else ev.to_json(e)


def parse_line(line: str) -> ClusterEvent | None:
    """A JSON line of `workbench train --slurm --json` (or `workbench cluster follow --json`) -> its event."""
    s = line.strip()
    if s.startswith('{"event":"slurm"') or s.startswith('{"event":"log"'):
        try:
            d = json.loads(s)
        except ValueError:
            return None
        kind = d.pop("event")
        try:
            return JobStatus.from_dict(d) if kind == "slurm" else LogLine(str(d.get("text", "")))
        except (TypeError, ValueError):
            return None
    return ev.parse(s)


# ------------------------------------------------------------------------------------------------ scontrol
_PAIR = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z:_]*)=(\S*)")


def parse_scontrol(text: str, job_id: int) -> dict[str, str] | None:
    """`scontrol show job -o ID` -> its Key=Value pairs; None when SLURM no longer knows the job."""
    for line in text.splitlines():
        pairs = dict(_PAIR.findall(line))
        if pairs.get("JobId") == str(job_id):
            return pairs
    return None


def state_of(pairs: dict[str, str]) -> JobState:
    raw = pairs.get("JobState", "")
    state = _SLURM_STATES.get(raw, JobState.UNKNOWN)
    if state == JobState.PENDING and int(pairs.get("Restarts", "0") or 0) > 0:
        return JobState.REQUEUED  # waiting again after a requeue: it resumes from its checkpoint
    return state


@dataclass
class Progress:
    """The trainer's progress read from the job log's events (all restarts of the job, in order)."""

    step: int | None = None
    total_steps: int | None = None
    eta_s: float | None = None
    loss: float | None = None
    resumed_from: int | None = None
    finished: str | None = None  # the last Finished event's reason of the current start
    failed: str = ""
    status: str = ""

    def feed(self, e: ev.Event) -> None:
        if isinstance(e, ev.RunStarted):
            self.total_steps, self.step = e.total_steps, e.start_step
            self.resumed_from = e.start_step if e.resumed else None
            self.finished, self.failed = None, ""
        elif isinstance(e, ev.Step):
            self.step, self.loss, self.eta_s = e.step, e.loss, e.eta_s
        elif isinstance(e, ev.Finished):
            self.finished, self.step = e.reason, e.step
        elif isinstance(e, ev.Failed):
            self.failed = f"{e.error}: {e.message}"
        elif isinstance(e, ev.Status):
            self.status = e.text


def job_status(job_id: int, pairs: dict[str, str] | None, progress: Progress) -> JobStatus:
    """SLURM's view (None: the job is gone from the controller) and the log's progress -> one JobStatus."""
    common = dict(step=progress.step, total_steps=progress.total_steps, eta_s=progress.eta_s, loss=progress.loss,
                  resumed_from=progress.resumed_from)
    if pairs is None:  # purged after MinJobAge: how the log says it ended
        state = {"done": JobState.FINISHED, "cancelled": JobState.CANCELLED, "error": JobState.FAILED}.get(
            progress.finished or "", JobState.UNKNOWN)
        msg = progress.failed or ("" if state != JobState.UNKNOWN else
                                  "SLURM no longer knows this job and its log does not say how it ended")
        return JobStatus(job_id, state, message=msg, **common)
    state = state_of(pairs)
    reason = pairs.get("Reason", "")
    msg = progress.failed if state == JobState.FAILED and progress.failed else progress.status
    if state == JobState.FAILED and not progress.failed:
        msg = f"SLURM: {pairs.get('JobState', '')} (exit {pairs.get('ExitCode', '?')})"
    return JobStatus(job_id, state, slurm_state=pairs.get("JobState", ""), reason="" if reason == "None" else reason,
                     exit_code=pairs.get("ExitCode", ""), restarts=int(pairs.get("Restarts", "0") or 0),
                     nodes="" if pairs.get("NodeList") in (None, "(null)") else pairs["NodeList"],
                     run_time=pairs.get("RunTime", ""), time_limit=pairs.get("TimeLimit", ""), message=msg, **common)


# ------------------------------------------------------------------------------------------------ sbatch errors
class SlurmError(RuntimeError):
    """A cluster operation failed; the message says what SLURM said and what to do."""


class SubmitError(SlurmError):
    """sbatch refused the job. `reason`: SLURM's own words; `field`: the profile field to change (None: not one
    option), `option` its CLI option."""

    def __init__(self, message: str, reason: str, field: str | None) -> None:
        super().__init__(message)
        self.reason, self.field = reason, field
        self.option = PROFILE_FIELDS[field].metadata["option"] if field else None


# SLURM's wording (src/common/slurm_errno.c) -> the profile field it is about, and a hint where to look
_REFUSALS: list[tuple[str, str, str]] = [  # specific wordings first ("invalid account or account/partition ...")
    (r"invalid account", "account", "`sacctmgr show assoc user=$USER` lists your accounts"),
    (r"invalid qos", "qos", "`sacctmgr show assoc user=$USER format=qos` lists yours"),
    (r"partition", "partition", "`sinfo -s` lists the partitions"),
    (r"time limit", "time_limit", "`sinfo -o '%P %l'` shows each partition's limit"),
    (r"feature|constraint", "constraint", "`sinfo -o '%P %f'` lists the node features"),
    (r"memory|--mem", "mem", "`sinfo -o '%P %m'` shows the nodes' memory (MB)"),
    (r"generic resource|gres|gpu", "gpus_per_node", "`sinfo -o '%P %G'` shows the GPUs per node"),
    (r"node count|nodes", "nodes", "`sinfo -s` shows the nodes per partition"),
    (r"more processors|cpus|processors", "cpus_per_task", "`sinfo -o '%P %c'` shows the CPUs per node"),
    (r"account", "account", "`sacctmgr show assoc user=$USER` lists your accounts"),
    (r"qos", "qos", "`sacctmgr show assoc user=$USER format=qos` lists yours"),
]


def submit_error(stderr: str, returncode: int) -> SubmitError:
    """sbatch's error output -> a SubmitError naming the option to change."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    reason = "; ".join(ln.removeprefix("sbatch: error: ").removeprefix("sbatch: ") for ln in lines[-3:]) or \
        f"sbatch exited with {returncode} and said nothing"
    low = reason.lower()
    if "requested node configuration is not available" in low:
        return SubmitError(f"SLURM refused the job: {reason}.\nFix: no node of the partition has what the job "
                           "asks for: lower --nodes, --gpus-per-node, --cpus-per-task or --mem, or change "
                           "--constraint / --partition (`sinfo -o '%P %D %c %m %G %f'` shows what the nodes have).",
                           reason, None)
    for pattern, field, hint in _REFUSALS:
        if re.search(pattern, low):
            option = PROFILE_FIELDS[field].metadata["option"]
            return SubmitError(f"SLURM refused the job: {reason}.\nFix: change {option} (the cluster profile's "
                               f"`{field}`): {hint}.", reason, field)
    return SubmitError(f"SLURM refused the job: {reason}.\nFix: check the job's options (the cluster profile, "
                       "--sbatch lines); `sbatch --test-only` on the login node says more.", reason, None)


__all__ = ["ClusterEvent", "JobState", "JobStatus", "LogLine", "Progress", "SlurmError", "SubmitError", "job_status",
           "parse_line", "parse_scontrol", "state_of", "submit_error", "to_json"]
