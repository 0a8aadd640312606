"""Launching `workbench train` elsewhere: on several local GPUs under torchrun, or on a remote GPU machine over SSH.

Both re-run the same command line (workbench/cli_train.py stays a thin CLI over this module), rewritten with one
helper (`drop_options`).

Several GPUs (`--gpus N`): `torchrun_command` re-runs the command under PyTorch's launcher (`torch.distributed.run
--standalone --nproc-per-node N`), one process per GPU; the trainer reads torchrun's environment (finetune.train).

A remote GPU machine (`--host user@gpu-box`), for labs whose robot PC has no GPU. The same `workbench train` runs on
the remote machine (it must have the workbench installed); this side only moves files and relays progress:

  1. rsync the dataset folder (and, on --resume, the run folder) to REMOTE_DIR on the host (incremental, resumable);
  2. ssh host "workbench train <same arguments, remote paths> --json", relaying its JSON events line by line
     (printed as progress here, or passed on as JSON for the GUI); Ctrl-C asks the remote trainer to checkpoint and
     stop (SIGINT to its process);
  3. rsync the run folder back without its checkpoints: the policy folder, metrics and config come home.

SSH options (port, key, known-hosts file) come from ~/.ssh/config, or from WORKBENCH_SSH (a whole ssh command, e.g.
"ssh -p 2222 -i ~/.ssh/gpu_key"); the remote command from WORKBENCH_REMOTE_CMD (default "workbench").
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from finetune import events as ev

DROP_WITH_VALUE = ("--host", "--remote-dir", "--gpus-local")  # options of this side only, never sent to the host


class RemoteError(RuntimeError):
    pass


@dataclass(frozen=True)
class RemoteTarget:
    host: str
    remote_dir: str  # run and dataset folders live here on the host
    ssh: tuple[str, ...]  # the ssh command and its options
    remote_cmd: str  # how `workbench` is invoked there

    @staticmethod
    def make(host: str, remote_dir: str) -> "RemoteTarget":
        ssh = tuple(shlex.split(os.environ.get("WORKBENCH_SSH", "ssh"))) + ("-o", "BatchMode=yes")
        return RemoteTarget(host, remote_dir.rstrip("/"), ssh, os.environ.get("WORKBENCH_REMOTE_CMD", "workbench"))

    def ssh_cmd(self, command: str) -> list[str]:
        return [*self.ssh, self.host, command]

    def rsync(self, src: str, dst: str, *extra: str) -> None:
        cmd = ["rsync", "-a", "--partial", "--delete", "-e", shlex.join(self.ssh), *extra, src, dst]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RemoteError(f"rsync {src} -> {dst} failed ({r.returncode}): {r.stderr.strip()[-800:]}\n"
                              "Fix: check that rsync is installed on both machines and that `ssh "
                              f"{self.host}` logs in without a password (ssh-copy-id).")


def _value(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def _replace(argv: list[str], name: str, value: str) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == name:
            out += [name, value]
            i += 2
            continue
        out.append(f"{name}={value}" if a.startswith(name + "=") else a)
        i += 1
    return out


def drop_options(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """argv without the options `names` and their values (both "--name value" and "--name=value")."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in names:
            skip = True
        elif not any(a.startswith(n + "=") for n in names):
            out.append(a)
    return out


# ------------------------------------------------------------------------------------------------ torchrun
def torchrun_command(argv: list[str], gpus: int) -> list[str]:
    """`workbench <argv>` again under torchrun with `gpus` processes (argv without its --gpus)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}",
            "-m", "workbench.cli", *drop_options(argv, ("--gpus",))]


def run_torchrun(argv: list[str], gpus: int) -> int:
    """Runs the command under torchrun and waits; progress comes from rank 0 (the exit status is torchrun's)."""
    return subprocess.call(torchrun_command(argv, gpus))


# ------------------------------------------------------------------------------------------------ SSH host
def remote_argv(argv: list[str], target: RemoteTarget) -> tuple[list[str], Path, str, Path | None, str | None]:
    """The local `workbench train ...` arguments -> the remote ones, plus (local run, remote run, local dataset
    to ship, its remote path)."""
    args = drop_options(argv, DROP_WITH_VALUE)
    if args and args[0] == "train":
        args = args[1:]
    args = [a for a in args if a not in ("-v", "--verbose")]
    out = _value(args, "--out")
    if not out:
        raise RemoteError("--out is required")
    local_run = Path(out).expanduser().resolve()
    remote_run = f"{target.remote_dir}/runs/{local_run.name}"
    args = _replace(args, "--out", remote_run)
    dataset = _value(args, "--dataset")
    local_ds, remote_ds = None, None
    if dataset and Path(dataset).expanduser().is_dir():
        local_ds = Path(dataset).expanduser().resolve()
        remote_ds = f"{target.remote_dir}/datasets/{local_ds.name}"
        args = _replace(args, "--dataset", remote_ds)
    base = _value(args, "--base")
    if base and Path(base).expanduser().is_dir():
        raise RemoteError(f"--base {base} is a local folder; copy it to the host and pass the remote path, or use "
                          "a hub id")
    if "--json" not in args:
        args.append("--json")
    return ["train", *args], local_run, remote_run, local_ds, remote_ds


def run_remote(host: str, argv: list[str], *, remote_dir: str = "~/workbench-runs", json_out: bool = False,
               emit: Callable[[ev.Event], None] | None = None) -> int:
    """Runs `workbench train` on `host`; returns the remote exit status (0 done, 130 cancelled, 2 user error)."""
    target = RemoteTarget.make(host, remote_dir)

    def show(e: ev.Event) -> None:
        if emit is not None:
            emit(e)
        elif json_out:
            print(ev.to_json(e), flush=True)
        else:
            line = ev.human(e)
            if line:
                print(line, flush=True)

    # the remote shell expands ~ in remote_dir: ask it once for the absolute path
    probe = subprocess.run(target.ssh_cmd(f"mkdir -p {target.remote_dir}/runs {target.remote_dir}/datasets && "
                                          f"cd {target.remote_dir} && pwd"), capture_output=True, text=True)
    if probe.returncode != 0:
        raise RemoteError(f"cannot log in to {host} ({probe.returncode}): {probe.stderr.strip()[-600:]}\nFix: `ssh "
                          f"{host}` must work without a password (ssh-copy-id {host}); set WORKBENCH_SSH for a port "
                          "or key.")
    target = RemoteTarget(host, probe.stdout.strip().splitlines()[-1], target.ssh, target.remote_cmd)
    args, local_run, remote_run, local_ds, remote_ds = remote_argv(argv, target)
    if local_ds is not None:
        show(ev.Status(f"sending dataset {local_ds} to {host}:{remote_ds} (rsync)"))
        target.rsync(f"{local_ds}/", f"{host}:{remote_ds}/")
    if "--resume" in args and (local_run / "checkpoints").is_dir():
        show(ev.Status(f"sending run {local_run} to {host} for --resume"))
        target.rsync(f"{local_run}/", f"{host}:{remote_run}/")
    command = f"echo __PID__ $$; exec {target.remote_cmd} {shlex.join(args)}"
    show(ev.Status(f"running on {host}: workbench {shlex.join(args)}"))
    proc = subprocess.Popen(target.ssh_cmd(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            bufsize=1, start_new_session=True)
    remote_pid: str | None = None
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        if remote_pid and not stopping:
            stopping = True
            subprocess.run(target.ssh_cmd(f"kill -INT {remote_pid}"), capture_output=True)

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if remote_pid is None and line.startswith("__PID__"):
                remote_pid = line.split()[1]
                continue
            e = ev.parse(line)
            if e is not None:
                show(e)
            elif line.strip():
                print(line.rstrip(), file=sys.stderr, flush=True)
        rc = proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    err = proc.stderr.read() if proc.stderr else ""
    if rc == 255:
        raise RemoteError(f"ssh to {host} failed: {err.strip()[-600:]}")
    if rc not in (0, 2, 130) and err.strip():
        print(err.strip()[-3000:], file=sys.stderr)
    local_run.mkdir(parents=True, exist_ok=True)
    show(ev.Status(f"fetching {host}:{remote_run} -> {local_run} (policy, metrics; checkpoints stay remote)"))
    target.rsync(f"{host}:{remote_run}/", f"{local_run}/", "--exclude", "checkpoints/")
    if (local_run / "policy" / "policy.json").is_file():
        show(ev.PolicySaved(-1, str(local_run / "policy")))
    return rc


__all__ = ["RemoteError", "RemoteTarget", "drop_options", "remote_argv", "run_remote", "run_torchrun",
           "torchrun_command"]
