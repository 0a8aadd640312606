"""Training on a SLURM cluster: stage, submit, follow, cancel, fetch. What `workbench train --slurm` and
`workbench cluster ...` run, and what the Train tab drives (typed events, nothing printed here).

  submit_training(profile, argv)  -> ClusterJob      rsync the dataset (and a local base / tokenizer) to the shared
                                                     filesystem, fill the hub cache on the login node when compute
                                                     nodes are offline, write RUN/slurm_job.sh, sbatch it; the job
                                                     record is saved in the local run folder (slurm_job.json)
  JobWatch(job).poll()            -> events          one SSH round trip: `scontrol show job` and the new part of the
                                                     job log (the trainer's JSON events)
  follow(job, emit)               -> JobStatus       poll until the job is done (JobStatus events on each change)
  cancel(job, now=False)                             checkpoint, then cancel (USR2 to the batch script); now=True or
                                                     a pending job: plain scancel
  fetch(job)                      -> policy folder   rsync the run folder home without its checkpoints: it shows in
                                                     the runs list like a local run
  last_status(run)                -> JobStatus       the job's state as last seen (RUN/slurm_status.json, written by
                                                     every JobWatch poll that saw a change): the runs list reads it
                                                     without asking the cluster

Reaching the cluster: `ClusterProfile.login` (user@login-node or an ~/.ssh/config alias) through finetune.launch's
RemoteTarget (WORKBENCH_SSH applies), or this machine when it is empty (the command runs on the login node).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from finetune import events as ev
from finetune import presets
from finetune.cluster.profile import ClusterProfile
from finetune.cluster.script import JOB_SCRIPT, JobSpec, job_script, log_path
from finetune.cluster.slurm import (ClusterEvent, JobState, JobStatus, LogLine, Progress, SlurmError, job_status,
                                    parse_line, parse_scontrol, submit_error)
from finetune.launch import RemoteError, RemotePlan, RemoteTarget, _replace, _value, plan_remote

JOB_RECORD = "slurm_job.json"
STATUS_RECORD = "slurm_status.json"  # the last JobStatus a poll saw (local only: never sent, never fetched over)
Emit = Callable[[ClusterEvent], None]
_MARK = "__WB_LOG__"
_SLURM_ONLY = ("--host", "--remote-dir", "--gpus", "--gpus-local")  # never passed to the trainer on the cluster


@dataclass(frozen=True)
class ClusterJob:
    """A submitted training job; saved in the local run folder as slurm_job.json, so `workbench cluster status
    RUN` (and the Train tab) find it again after a restart."""

    job_id: int
    profile: ClusterProfile
    local_run: str
    remote_run: str  # absolute, on the cluster
    submitted_at: float

    @property
    def log(self) -> str:
        return log_path(self.remote_run, self.job_id)

    @property
    def script(self) -> str:
        return f"{self.remote_run}/{JOB_SCRIPT}"

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["profile"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["profile"].items()}
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> "ClusterJob":
        prof = dict(d["profile"])
        name = prof.pop("name", "")
        return ClusterJob(int(d["job_id"]), ClusterProfile.from_dict(prof, name=name), str(d["local_run"]),
                          str(d["remote_run"]), float(d.get("submitted_at", 0.0)))

    def save(self) -> Path:
        path = Path(self.local_run) / JOB_RECORD
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path


def load_job(run_dir: str | Path) -> ClusterJob:
    """The job record of a run submitted with --slurm; a SlurmError when the folder has none."""
    path = Path(run_dir).expanduser() / JOB_RECORD
    if not path.is_file():
        raise SlurmError(f"{run_dir} has no {JOB_RECORD}: it was not submitted to a cluster from this machine "
                         "(`workbench train --slurm ...` writes it)")
    try:
        return ClusterJob.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise SlurmError(f"{path}: unreadable job record ({e})") from e


def save_status(job: ClusterJob, status: JobStatus) -> None:
    """RUN/slurm_status.json: the job's state as last seen, for listings that do not ask the cluster (the Train
    tab's runs list, finetune.run_status). Atomic; a run folder that cannot be written is left alone."""
    path = Path(job.local_run) / STATUS_RECORD
    try:
        tmp = path.with_name(f".tmp-{STATUS_RECORD}")
        tmp.write_text(status.to_json() + "\n")
        os.replace(tmp, path)
    except OSError:
        pass


def last_status(run_dir: str | Path) -> JobStatus | None:
    """The state of the run's current job as last seen (None: not looked at since it was submitted, or no job)."""
    run = Path(run_dir).expanduser()
    try:
        job_id = int(json.loads((run / JOB_RECORD).read_text())["job_id"])
        e = parse_line((run / STATUS_RECORD).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return e if isinstance(e, JobStatus) and e.job_id == job_id else None  # an earlier job's (before a resume)


def target_for(profile: ClusterProfile) -> RemoteTarget:
    return RemoteTarget.make(profile.login, profile.remote_dir)


def _sh(target: RemoteTarget, command: str, what: str, *, input: str | None = None,
        timeout: float | None = 120) -> subprocess.CompletedProcess:
    try:
        return target.run(command, input=input, timeout=timeout)
    except RemoteError as e:
        raise SlurmError(f"{what}: {e}") from e


def _setup_prefix(profile: ClusterProfile) -> str:
    """The profile's set-up lines, for a command on the login node."""
    return "".join(f"{line}\n" for line in profile.setup)


def _python(profile: ClusterProfile) -> list[str]:
    py = shlex.split(profile.python)
    if profile.container:
        return ["apptainer", "exec", "--bind", profile.remote_dir.rstrip("/"), profile.container, *py]
    return py


def _stream(target: RemoteTarget, command: str, emit: Emit) -> int:
    """Runs `command` on the host, passing its JSON events on as they come (downloads report progress)."""
    proc = subprocess.Popen(target.ssh_cmd(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        e = ev.parse(line)
        emit(e if e is not None else LogLine(line.rstrip()))
    rc = proc.wait()
    if rc != 0 and proc.stderr is not None:
        for line in proc.stderr.read().strip().splitlines()[-20:]:
            emit(LogLine(line))
    return rc


# ------------------------------------------------------------------------------------------------ submit
@dataclass(frozen=True)
class Submission:
    """What submit_training prepared: the plan, the job spec, the script text (and the job once submitted)."""

    plan: RemotePlan
    spec: JobSpec
    script: str
    job: ClusterJob | None = None
    test_only: str = ""  # `sbatch --test-only`'s verdict (dry runs)


def connect(profile: ClusterProfile) -> RemoteTarget:
    """The login node with the profile's remote folder made absolute; SLURM's tools must be there."""
    target = target_for(profile.check())
    try:
        target = target.resolve_dir("runs", "datasets", "bases")
    except RemoteError as e:
        raise SlurmError(str(e)) from e
    r = _sh(target, "command -v sbatch scontrol scancel", "checking for SLURM")
    if r.returncode != 0 or len(r.stdout.split()) < 3:
        raise SlurmError(f"no sbatch / scontrol / scancel on {target.where} (found: {r.stdout.split() or 'none'}). "
                         "Fix: --slurm must name the cluster's login node (where `sbatch` works in a non-interactive "
                         "shell: `ssh LOGIN sbatch --version`).")
    return target


def _hub_id(source: str | None) -> bool:
    from finetune.hub import _looks_local

    return bool(source) and source != presets.RANDOM_BASE and not Path(source).expanduser().exists() and \
        not _looks_local(source)


def _prefetch_command(profile: ClusterProfile, args: list[str]) -> list[str] | None:
    """`workbench base download ...` for what the job would fetch from the hub (None: nothing): the base checkpoint
    (and PaliGemma's tokenizer for a full-size model), run on the login node into the shared hub cache."""
    if _value(args, "--config") is None and _value(args, "--base") is None and "--resume" in args:
        return None  # resuming with the run's own settings: the cache was filled when it started
    preset = presets.preset(_value(args, "--config") or presets.DEFAULT)
    base = _value(args, "--base") or preset.base
    tok = _value(args, "--tokenizer")
    cmd = [*_python(profile), "-m", "workbench.cli", "base", "download"]
    if _hub_id(base):
        cmd.append(base)
        if _value(args, "--revision"):
            cmd += ["--revision", str(_value(args, "--revision"))]
        if tok and _hub_id(tok):
            cmd += ["--tokenizer", tok]
        return [*cmd, "--json"]
    from finetune.model_config import PALIGEMMA_VOCAB_SIZE, Pi0Config

    full = Pi0Config.variant(preset.model).vocab_size >= PALIGEMMA_VOCAB_SIZE
    if (tok and _hub_id(tok)) or (full and not tok):
        return [*cmd, *(["--tokenizer", tok] if tok else []), "--tokenizer-only", "--json"]
    return None


def prepare(profile: ClusterProfile, argv: list[str], target: RemoteTarget) -> tuple[RemotePlan, JobSpec]:
    """The trainer's arguments for the cluster (paths under REMOTE_DIR) and the job spec (no side effects)."""
    plan = plan_remote(argv, target, ship_base=True, drop=_SLURM_ONLY)
    args = plan.args[1:]
    tok = _value(args, "--tokenizer")
    if tok and Path(tok).expanduser().is_file():  # a local tokenizer.model goes with the job
        args = _replace(args, "--tokenizer", f"{target.remote_dir}/bases/tokenizers/{Path(tok).expanduser().name}")
    dataset = _value(args, "--dataset")
    if profile.offline_nodes and dataset and dataset != "synthetic" and plan.local_dataset is None \
            and not dataset.startswith("/"):
        raise SlurmError(f"--dataset {dataset} is not a folder here, and the compute nodes are offline (the "
                         "profile's offline_nodes): pass a local dataset folder (it is sent with rsync), a path on "
                         "the cluster, or --online-nodes if the nodes can reach the hub")
    resume = "--resume" in args
    args = [a for a in args if a != "--resume"]
    spec = JobSpec(plan.remote_run, tuple(args), f"wb-{plan.local_run.name}", resume=resume)
    return dataclasses.replace(plan, args=["train", *args]), spec


def submit_training(profile: ClusterProfile, argv: list[str], *, emit: Emit = lambda e: None,
                    dry_run: bool = False) -> Submission:
    """Stages and submits `workbench train <argv>` (the command line as typed, cluster options left out) as a
    batch job; dry_run: writes nothing there, asks `sbatch --test-only` instead. Raises SlurmError (SubmitError
    with SLURM's reason and the option to change when sbatch refuses the job)."""
    target = connect(profile)
    profile = dataclasses.replace(profile, remote_dir=target.remote_dir)  # absolute in the script and the record
    plan, spec = prepare(profile, argv, target)
    script = job_script(profile, spec)
    q = shlex.quote
    if dry_run:
        r = _sh(target, "sbatch --test-only", "sbatch --test-only", input=script)
        if r.returncode != 0:
            raise submit_error(r.stderr, r.returncode)
        return Submission(plan, spec, script, test_only=(r.stderr + r.stdout).strip())
    where = target.where
    run = spec.run_dir
    state = _sh(target, f"test -d {q(run)}/checkpoints && ls {q(run)}/checkpoints | grep -c '^step_' || true",
                "looking at the run folder")
    has_ckpt = state.stdout.strip() not in ("", "0")
    if has_ckpt and not spec.resume:
        raise SlurmError(f"{where}:{run} already has checkpoints. Pass --resume to continue that run, or choose "
                         "another --out.")
    if plan.local_dataset is not None:
        emit(ev.Status(f"sending dataset {plan.local_dataset} to {where}:{plan.remote_dataset} (rsync)"))
        _rsync(target, f"{plan.local_dataset}/", target.spec(f"{plan.remote_dataset}/"))
    if plan.local_base is not None:
        emit(ev.Status(f"sending base {plan.local_base} to {where}:{plan.remote_base} (rsync)"))
        _rsync(target, f"{plan.local_base}/", target.spec(f"{plan.remote_base}/"), "--exclude", "checkpoints/")
    tok = _value(argv, "--tokenizer")
    if tok and Path(tok).expanduser().is_file():
        _sh(target, f"mkdir -p {q(target.remote_dir)}/bases/tokenizers", "making the tokenizer folder")
        _rsync(target, str(Path(tok).expanduser().resolve()),
               target.spec(f"{target.remote_dir}/bases/tokenizers/{Path(tok).expanduser().name}"))
    if spec.resume and not has_ckpt and (plan.local_run / "checkpoints").is_dir():
        emit(ev.Status(f"sending run {plan.local_run} to {where} for --resume"))
        _rsync(target, f"{plan.local_run}/", target.spec(f"{run}/"), "--exclude", JOB_RECORD, "--exclude",
               STATUS_RECORD)
    fetch_cmd = _prefetch_command(profile, plan.args[1:] + (["--resume"] if spec.resume else []))
    if fetch_cmd is not None and profile.offline_nodes:
        emit(ev.Status(f"filling the hub cache {profile.hub_cache} on {where} (compute nodes are offline)"))
        rc = _stream(target, f"{_setup_prefix(profile)}export HF_HOME={q(profile.hub_cache)}\n"
                             f"{shlex.join(fetch_cmd)}", emit)
        if rc != 0:
            raise SlurmError(f"downloading on {where} failed ({rc}): `{shlex.join(fetch_cmd)}` (see the lines above)."
                             " Fix: the login node needs network and the workbench installed (the profile's setup "
                             "lines, --cluster-python); or fill the hub cache yourself (HF_HOME="
                             f"{profile.hub_cache}).")
    w = _sh(target, f"mkdir -p {q(run)} && cat > {q(run)}/{JOB_SCRIPT}", "writing the job script", input=script)
    if w.returncode != 0:
        raise SlurmError(f"cannot write {run}/{JOB_SCRIPT} on {where}: {w.stderr.strip()[-400:]}")
    plan.local_run.mkdir(parents=True, exist_ok=True)
    (plan.local_run / JOB_SCRIPT).write_text(script)
    r = _sh(target, f"cd {q(run)} && sbatch --parsable {JOB_SCRIPT}", "sbatch")
    if r.returncode != 0:
        raise submit_error(r.stderr, r.returncode)
    try:
        job_id = int(r.stdout.strip().splitlines()[-1].split(";")[0])
    except (ValueError, IndexError) as e:
        raise SlurmError(f"sbatch printed no job id: {r.stdout.strip()!r} {r.stderr.strip()!r}") from e
    job = ClusterJob(job_id, profile, str(plan.local_run), run, time.time())
    job.save()
    emit(ev.Status(f"submitted job {job_id} on {where} (script {job.script}, log {job.log})"))
    return Submission(plan, spec, script, job=job)


def _rsync(target: RemoteTarget, src: str, dst: str, *extra: str) -> None:
    try:
        target.rsync(src, dst, *extra)
    except RemoteError as e:
        raise SlurmError(str(e)) from e


# ------------------------------------------------------------------------------------------------ follow
class JobWatch:
    """Follows one job: each poll is one round trip for SLURM's state and the job log's new bytes."""

    def __init__(self, job: ClusterJob, *, target: RemoteTarget | None = None) -> None:
        self.job = job
        self.target = target or target_for(job.profile)
        self.offset = 0
        self._partial = b""
        self.progress = Progress()
        self.status: JobStatus | None = None
        self.failures = 0  # polls in a row that could not reach the cluster

    def _command(self) -> str:
        log = shlex.quote(self.job.log)
        return (f"scontrol show job -o {self.job.job_id} 2>&1; echo {_MARK} $(wc -c < {log} 2>/dev/null || echo 0); "
                f"tail -c +{self.offset + 1} {log} 2>/dev/null | head -c 8000000")

    def poll(self) -> list[ClusterEvent]:
        """The events since the last poll: the trainer's, LogLines, and a JobStatus when anything changed."""
        try:
            r = subprocess.run(self.target.ssh_cmd(self._command()), capture_output=True, timeout=60)
        except subprocess.TimeoutExpired:
            r = None
        if r is None or (self.target.host and r.returncode == 255):
            self.failures += 1
            why = "no answer" if r is None else r.stderr.decode(errors="replace").strip()[-300:]
            return [ev.Status(f"cannot reach {self.target.where} ({why}); retrying")]
        self.failures = 0
        head, sep, rest = r.stdout.partition(_MARK.encode())
        if not sep:
            raise SlurmError(f"unexpected answer from {self.target.where}: {r.stdout[-300:]!r} "
                             f"{r.stderr[-300:]!r}")
        size_line, _, data = rest.partition(b"\n")
        try:
            size = int(size_line.strip() or 0)
        except ValueError:
            size = 0
        if size < self.offset:  # the log was truncated (not --open-mode=append): read it again from the start
            self.offset, self._partial, data = 0, b"", b""
        out: list[ClusterEvent] = []
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            line = raw.decode(errors="replace")
            e = ev.parse(line)
            if e is not None:
                self.progress.feed(e)
                out.append(e)
            elif line.strip():
                out.append(LogLine(line.rstrip()))
        text = head.decode(errors="replace")
        pairs = parse_scontrol(text, self.job.job_id)
        if pairs is None and "invalid job id" not in text.lower():
            raise SlurmError(f"scontrol show job {self.job.job_id} on {self.target.where}: {text.strip()[-400:]}")
        status = job_status(self.job.job_id, pairs, self.progress)
        if (self.status is not None and status.restarts > self.status.restarts
                and JobState.REQUEUED not in (self.status.state, status.state)):
            # requeued and started again between two polls (a short wait in the queue): say it all the same
            out.append(dataclasses.replace(status, state=JobState.REQUEUED, slurm_state="REQUEUED", nodes="",
                                           message=f"requeued (restart {status.restarts})"))
        if self.status is None or _changed(self.status, status):
            out.append(status)
        if status != self.status:  # also a new step: the listing's "running, step 40/400"
            save_status(self.job, status)
        self.status = status
        return out


def _changed(a: JobStatus, b: JobStatus) -> bool:
    keys = ("state", "slurm_state", "reason", "restarts", "nodes", "resumed_from")
    return any(getattr(a, k) != getattr(b, k) for k in keys)


def follow(job: ClusterJob, emit: Emit, *, poll_s: float = 5.0, max_failures: int = 30,
           should_stop: Callable[[], bool] = lambda: False, watch: JobWatch | None = None) -> JobStatus:
    """Polls until the job is done (or should_stop()); emits every event; returns the last status. Up to
    `max_failures` polls in a row may fail to reach the cluster (a network blip) before a SlurmError."""
    w = watch or JobWatch(job)
    while True:
        for e in w.poll():
            emit(e)
        if w.failures > max_failures:
            raise SlurmError(f"lost the connection to {w.target.where} ({w.failures} tries); the job goes on: "
                             f"`workbench cluster follow {job.local_run}` picks it up again")
        if w.status is not None and w.status.done:
            for e in w.poll():  # the log's last lines (written as the job ended)
                emit(e)
            assert w.status is not None
            return w.status
        if should_stop():
            return w.status or JobStatus(job.job_id, JobState.UNKNOWN)
        time.sleep(poll_s)


# ------------------------------------------------------------------------------------------------ control
def cancel(job: ClusterJob, *, now: bool = False) -> str:
    """Stops the job. A running one checkpoints first (USR2 to its batch script, which then cancels the job:
    state CANCELLED, resumable), unless `now` (plain scancel: SLURM's SIGTERM, then SIGKILL after KillWait).
    Returns what was done."""
    target = target_for(job.profile)
    r = _sh(target, f"scontrol show job -o {job.job_id} 2>&1", "scontrol show job")
    pairs = parse_scontrol(r.stdout, job.job_id)
    if pairs is None or job_status(job.job_id, pairs, Progress()).state.done:
        return f"job {job.job_id} is not running (already ended)"
    running = pairs.get("JobState") == "RUNNING"
    if running and not now:
        cmd, said = f"scancel --batch --signal=USR2 {job.job_id}", "checkpointing, then cancelling"
    else:
        cmd, said = f"scancel {job.job_id}", "cancelled" + (" (the trainer checkpoints on SIGTERM)" if running else "")
    c = _sh(target, cmd, "scancel")
    if c.returncode != 0:
        raise SlurmError(f"`{cmd}` on {target.where} failed: {(c.stderr or c.stdout).strip()[-400:]}")
    return f"job {job.job_id}: {said}"


def fetch(job: ClusterJob, emit: Emit = lambda e: None) -> Path | None:
    """Brings the run folder home without its checkpoints (they stay on the cluster for --resume): the policy
    folder, metrics, train_config.json, the job script and logs. Returns the policy folder if it is there."""
    target = target_for(job.profile)
    local = Path(job.local_run)
    local.mkdir(parents=True, exist_ok=True)
    emit(ev.Status(f"fetching {target.where}:{job.remote_run} -> {local} (checkpoints stay on the cluster)"))
    _rsync(target, target.spec(f"{job.remote_run}/"), f"{local}/", "--exclude", "checkpoints/", "--exclude",
           JOB_RECORD, "--exclude", STATUS_RECORD)
    policy = local / "policy"
    if (policy / "policy.json").is_file():
        emit(ev.PolicySaved(-1, str(policy)))
        return policy
    return None


def log_tail(job: ClusterJob, lines: int = 50) -> str:
    """The last `lines` lines of the job log."""
    target = target_for(job.profile)
    r = _sh(target, f"tail -n {int(lines)} {shlex.quote(job.log)}", "reading the job log")
    if r.returncode != 0:
        return f"(no log yet at {job.log}: {r.stderr.strip()[-200:]})"
    return r.stdout


def exit_code(status: JobStatus) -> int:
    """The CLI's exit status for a job's end: 0 finished, 130 cancelled / preempted / requeued, 2 failed."""
    if status.state == JobState.FINISHED:
        return 0
    if status.state in (JobState.CANCELLED, JobState.PREEMPTED, JobState.REQUEUED):
        return 130
    return 2


__all__ = ["JOB_RECORD", "STATUS_RECORD", "ClusterJob", "JobWatch", "Submission", "cancel", "connect", "exit_code",
           "fetch", "follow", "last_status", "load_job", "log_tail", "prepare", "save_status", "submit_training",
           "target_for"]
