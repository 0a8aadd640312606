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

A SLURM cluster (`--slurm`, finetune.cluster) uses the same `RemoteTarget` to reach its login node (or this machine,
host "", when the command runs on the cluster itself) and `plan_remote` to rewrite the arguments.
"""

from __future__ import annotations

import dataclasses
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
    host: str  # user@host (or an ~/.ssh/config alias); "" = this machine: commands run here, paths are local
    remote_dir: str  # run and dataset folders live here on the host
    ssh: tuple[str, ...]  # the ssh command and its options
    remote_cmd: str  # how `workbench` is invoked there

    @staticmethod
    def make(host: str, remote_dir: str) -> "RemoteTarget":
        ssh = tuple(shlex.split(os.environ.get("WORKBENCH_SSH", "ssh"))) + ("-o", "BatchMode=yes")
        return RemoteTarget(host, remote_dir.rstrip("/"), ssh, os.environ.get("WORKBENCH_REMOTE_CMD", "workbench"))

    @property
    def where(self) -> str:
        """The host for messages ("this machine" in local mode)."""
        return self.host or "this machine"

    def ssh_cmd(self, command: str) -> list[str]:
        """argv that runs the shell `command` on the host (through bash here in local mode)."""
        if not self.host:
            return ["bash", "-c", command]
        return [*self.ssh, self.host, command]

    def spec(self, path: str) -> str:
        """An rsync source or destination on the host ("host:path"; the path itself in local mode)."""
        return f"{self.host}:{path}" if self.host else path

    def run(self, command: str, *, input: str | None = None,
            timeout: float | None = 120) -> subprocess.CompletedProcess:
        """Runs `command` on the host and returns what it printed; ssh itself failing (255) is a RemoteError."""
        try:
            r = subprocess.run(self.ssh_cmd(command), input=input, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise RemoteError(f"`{command[:80]}` on {self.where} did not answer within {timeout:.0f} s") from e
        if self.host and r.returncode == 255:
            raise RemoteError(f"cannot log in to {self.host}: {r.stderr.strip()[-600:]}\nFix: `ssh {self.host}` must "
                              f"work without a password (ssh-copy-id {self.host}); set WORKBENCH_SSH for a port or "
                              "key.")
        return r

    def resolve_dir(self, *subdirs: str) -> "RemoteTarget":
        """This target with remote_dir made absolute by the host's shell (which expands ~), creating it and
        `subdirs` in it."""
        made = f"mkdir -p {' '.join(shlex.quote(d) for d in subdirs)} && " if subdirs else ""
        probe = self.run(f"mkdir -p {self.remote_dir} && cd {self.remote_dir} && {made}pwd")
        if probe.returncode != 0 or not probe.stdout.strip():
            raise RemoteError(f"cannot use {self.remote_dir} on {self.where} ({probe.returncode}): "
                              f"{probe.stderr.strip()[-600:]}\nFix: pick a folder you can write there (--remote-dir).")
        return dataclasses.replace(self, remote_dir=probe.stdout.strip().splitlines()[-1])

    def rsync(self, src: str, dst: str, *extra: str) -> None:
        cmd = ["rsync", "-a", "--partial", "--delete", *extra, src, dst]
        if self.host:
            cmd[1:1] = ["-e", shlex.join(self.ssh)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RemoteError(f"rsync {src} -> {dst} failed ({r.returncode}): {r.stderr.strip()[-800:]}\n"
                              "Fix: check that rsync is installed on both machines and that `ssh "
                              f"{self.host}` logs in without a password (ssh-copy-id).")


@dataclass(frozen=True)
class RemotePlan:
    """The local `workbench train` arguments rewritten for the host, and what has to be sent there first."""

    args: list[str]  # "train", ..., with the host's paths and --json
    local_run: Path
    remote_run: str
    local_dataset: Path | None = None  # a dataset folder to rsync to remote_dataset
    remote_dataset: str | None = None
    local_base: Path | None = None  # a base checkpoint folder (or one of our runs/policies) to rsync to remote_base
    remote_base: str | None = None


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
    p = plan_remote(argv, target)
    return p.args, p.local_run, p.remote_run, p.local_dataset, p.remote_dataset


def plan_remote(argv: list[str], target: RemoteTarget, *, ship_base: bool = False,
                drop: tuple[str, ...] = DROP_WITH_VALUE) -> RemotePlan:
    """The local `workbench train ...` arguments -> the host's (`drop`: this side's options with a value, never
    sent). A local --base folder is refused unless `ship_base` (then it is sent to REMOTE_DIR/bases/NAME: an
    earlier run goes without its checkpoints)."""
    args = drop_options(argv, drop)
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
    local_base, remote_base = None, None
    if base and Path(base).expanduser().is_dir():
        if not ship_base:
            raise RemoteError(f"--base {base} is a local folder; copy it to the host and pass the remote path, or "
                              "use a hub id")
        local_base = Path(base).expanduser().resolve()
        remote_base = f"{target.remote_dir}/bases/{local_base.name}"
        args = _replace(args, "--base", remote_base)
    if "--json" not in args:
        args.append("--json")
    return RemotePlan(["train", *args], local_run, remote_run, local_ds, remote_ds, local_base, remote_base)


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

    target = target.resolve_dir("runs", "datasets")  # the remote shell expands ~ in remote_dir
    args, local_run, remote_run, local_ds, remote_ds = remote_argv(argv, target)
    if local_ds is not None:
        show(ev.Status(f"sending dataset {local_ds} to {host}:{remote_ds} (rsync)"))
        target.rsync(f"{local_ds}/", target.spec(f"{remote_ds}/"))
    if "--resume" in args and (local_run / "checkpoints").is_dir():
        show(ev.Status(f"sending run {local_run} to {host} for --resume"))
        target.rsync(f"{local_run}/", target.spec(f"{remote_run}/"))
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
    target.rsync(target.spec(f"{remote_run}/"), f"{local_run}/", "--exclude", "checkpoints/")
    if (local_run / "policy" / "policy.json").is_file():
        show(ev.PolicySaved(-1, str(local_run / "policy")))
    return rc


__all__ = ["RemoteError", "RemotePlan", "RemoteTarget", "drop_options", "plan_remote", "remote_argv", "run_remote",
           "run_torchrun", "torchrun_command"]
