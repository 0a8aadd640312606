"""A real single-node SLURM for the cluster tests (not a test module): Debian's munged, slurmctld and slurmd with a
slurm.conf written under a temporary folder (SLURM_CONF points the daemons and the client tools at it), their own
munge key and socket, free ports, one node (this machine, its CPUs) in partition "debug". Stopped by pid files.
See ../shared/reference/slurm-single-node.md for the facts this relies on."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ssh_helpers import free_port

DAEMONS = {"munged": "/usr/sbin/munged", "slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd"}
CLIENTS = ("sbatch", "scontrol", "scancel", "squeue", "sinfo", "srun")
PARTITION = "debug"


def why_not() -> str | None:
    """The reason a test SLURM cannot run here (a skip reason), or None."""
    missing = [p for p in DAEMONS.values() if not Path(p).exists()] + [c for c in CLIENTS if not shutil.which(c)]
    if missing:
        return ("needs SLURM and munge (apt-get install slurmctld slurmd slurm-client munge; python -m "
                f"workbench.bootstrap test installs them): missing {', '.join(missing)}")
    if os.geteuid() != 0:
        return "the test SLURM runs its daemons as root (SlurmUser=root)"
    return None


class SlurmFailed(RuntimeError):
    pass


@dataclass
class Slurm:
    folder: Path
    conf: Path
    node: str
    cpus: int
    pids: dict[str, Path] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def run(self, *cmd: str, check: bool = False) -> subprocess.CompletedProcess:
        r = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr}")
        return r

    def job(self, job_id: int) -> dict[str, str]:
        """scontrol show job's Key=Value pairs ({} once SLURM forgot the job)."""
        out = self.run("scontrol", "show", "job", "-o", str(job_id)).stdout
        return dict(p.split("=", 1) for p in out.split() if "=" in p)

    def logs(self) -> str:
        text = []
        for name in ("slurmctld", "slurmd", "munged"):
            f = self.folder / "log" / f"{name}.log"
            if f.is_file():
                text.append(f"--- {name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(text)

    def stop(self) -> None:
        """Cancels what is left of the test jobs, stops slurmd, slurmctld and munged by their pid files, and removes
        the folder."""
        self.run("scancel", "--user=root", "--full")
        for name in ("slurmd", "slurmctld", "munged"):
            pidfile = self.pids.get(name)
            if pidfile is None or not pidfile.is_file():
                continue
            try:
                pid = int(pidfile.read_text().split()[0])
            except (ValueError, IndexError):
                continue
            _stop_pid(pid)
        shutil.rmtree(self.folder, ignore_errors=True)


def _stop_pid(pid: int, timeout: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(int(line.split()[1]) / 1024 * 0.9)
    return 1024


def start_slurm() -> Slurm:
    """munged, slurmctld and slurmd on this machine; returns once `sinfo` shows the node idle."""
    # not under pytest's tmp folder: munged wants every user to be able to reach its socket's folder
    d = Path(tempfile.mkdtemp(prefix="wb-slurm-"))
    d.chmod(0o755)
    for sub, mode in (("munge", 0o700), ("run", 0o755), ("log", 0o755), ("state", 0o755), ("spool", 0o755),
                      ("lib", 0o700)):
        (d / sub).mkdir()
        (d / sub).chmod(mode)
    key = d / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = d / "run" / "munge.socket"
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    pids = {"munged": d / "run" / "munged.pid", "slurmctld": d / "run" / "slurmctld.pid",
            "slurmd": d / "run" / "slurmd.pid"}
    conf = d / "slurm.conf"
    conf.write_text(f"""ClusterName=wbtest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
StateSaveLocation={d / 'state'}
SlurmdSpoolDir={d / 'spool'}
SlurmctldPidFile={pids['slurmctld']}
SlurmdPidFile={pids['slurmd']}
SlurmctldLogFile={d / 'log' / 'slurmctld.log'}
SlurmdLogFile={d / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
KillWait=30
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_mem_mb()} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    s = Slurm(d, conf, host, cpus, pids)
    steps = [
        ("munged", [DAEMONS["munged"], f"--socket={sock}", f"--key-file={key}", f"--pid-file={pids['munged']}",
                    f"--log-file={d / 'log' / 'munged.log'}", f"--seed-file={d / 'lib' / 'munged.seed'}"]),
        ("slurmctld", [DAEMONS["slurmctld"]]),
        ("slurmd", [DAEMONS["slurmd"]]),
    ]
    try:
        for name, cmd in steps:  # each daemonizes once it is up
            r = subprocess.run(cmd, env=s.env, capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise SlurmFailed(f"{name} did not start ({r.returncode}): {r.stderr.strip()}\n{s.logs()}")
        deadline = time.monotonic() + 60
        while True:
            r = s.run("sinfo", "-h", "-N", "-o", "%t")
            if r.returncode == 0 and r.stdout.strip().startswith("idle"):
                return s
            if time.monotonic() > deadline:
                raise SlurmFailed(f"the node is not idle after 60 s (sinfo: {r.stdout.strip()} {r.stderr.strip()})\n"
                                  f"{s.logs()}")
            time.sleep(0.3)
    except BaseException:
        s.stop()
        raise


def wait_until(predicate, timeout: float, what: str, slurm: Slurm | None = None, poll: float = 0.3):
    """predicate()'s first truthy value within `timeout` seconds, else an AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{slurm.logs()}" if slurm else ""))
        time.sleep(poll)
