"""`workbench cluster ...`: a training job submitted with `workbench train --slurm` (finetune.cluster), found again by
its run folder (OUT/slurm_job.json): status, follow, log, cancel, fetch; and the saved cluster profiles."""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="SLURM training jobs: status, follow, log, cancel, fetch; cluster profiles",
                       description="Work with a training job submitted by `workbench train --slurm` (RUN is its "
                                   "local run folder, the --out it was submitted with).")
    csub = p.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)

    def job_cmd(name: str, help: str, func) -> argparse.ArgumentParser:
        c = csub.add_parser(name, help=help, description=help)
        c.add_argument("run", metavar="RUN", help="the run folder (the --out of `workbench train --slurm`)")
        c.set_defaults(func=func)
        return c

    c = job_cmd("status", "the job's state (pending / running with step and ETA / finished / failed / cancelled / "
                          "requeued) from scontrol and its log", run_status)
    c.add_argument("--json", action="store_true", help="the JobStatus as one JSON line")
    c = job_cmd("follow", "follow the job to its end (progress, log), then fetch the run folder", run_follow)
    c.add_argument("--json", action="store_true", help="events as JSON lines (the Train tab)")
    c.add_argument("--poll-s", type=float, default=10.0, help="seconds between looks at the job")
    c = job_cmd("log", "the end of the job log (the trainer's events and messages)", run_log)
    c.add_argument("-n", "--lines", type=int, default=50)
    c = job_cmd("cancel", "stop the job: it checkpoints first (resume with `workbench train --out RUN --resume "
                          "--slurm ...`)", run_cancel)
    c.add_argument("--now", action="store_true", help="plain scancel: SLURM's SIGTERM, then SIGKILL after its "
                                                      "KillWait (the trainer still checkpoints if it can)")
    job_cmd("fetch", "bring the run folder home (policy, metrics, logs; checkpoints stay on the cluster)", run_fetch)
    pr = csub.add_parser("profiles", help="list the saved cluster profiles",
                         description="The saved cluster profiles (save one with `workbench train ... --slurm LOGIN "
                                     "--save-profile NAME`).")
    pr.set_defaults(func=run_profiles)


def _job(args: argparse.Namespace):  # -> finetune.cluster.ClusterJob
    from finetune.cluster import SlurmError, load_job

    try:
        return load_job(args.run)
    except SlurmError as e:
        raise SystemExit(f"error: {e}") from None


def _guard(fn):
    def run(args: argparse.Namespace) -> int:
        from finetune.cluster import SlurmError

        try:
            return fn(args)
        except SlurmError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            return 2
    return run


@_guard
def run_status(args: argparse.Namespace) -> int:
    from finetune.cluster import JobStatus, JobWatch

    w = JobWatch(_job(args))
    w.poll()
    status = w.status
    if status is None:
        print(f"cannot reach {w.target.where}", file=sys.stderr)
        return 2
    assert isinstance(status, JobStatus)
    print(status.to_json() if args.json else status.describe(), flush=True)
    return 0


@_guard
def run_follow(args: argparse.Namespace) -> int:
    from workbench.cli_train import cluster_printer, follow_job

    return follow_job(_job(args), cluster_printer(args.json), args.poll_s)


@_guard
def run_log(args: argparse.Namespace) -> int:
    from finetune.cluster import log_tail

    print(log_tail(_job(args), args.lines), end="", flush=True)
    return 0


@_guard
def run_cancel(args: argparse.Namespace) -> int:
    from finetune.cluster import cancel

    print(cancel(_job(args), now=args.now), flush=True)
    return 0


@_guard
def run_fetch(args: argparse.Namespace) -> int:
    from finetune import events as ev
    from finetune.cluster import fetch

    policy = fetch(_job(args), lambda e: print(ev.human(e) or "", flush=True) if isinstance(e, ev.Status) else None)
    print(f"policy folder {policy}" if policy else "no policy folder yet (the run has not exported one)", flush=True)
    return 0


def run_profiles(args: argparse.Namespace) -> int:
    from finetune.cluster import ProfileError, list_profiles, load_profile, profiles_dir

    names = list_profiles()
    if not names:
        print(f"no cluster profiles in {profiles_dir()}", flush=True)
    for name in names:
        try:
            p = load_profile(name)
            print(f"{name:20s} {p.login or '(this machine)'}  partition {p.partition or '-'}  {p.nodes} node(s) x "
                  f"{p.gpus_per_node} GPU(s)  {p.remote_dir}", flush=True)
        except ProfileError as e:
            print(f"{name:20s} unreadable: {e}", flush=True)
    return 0
