"""A real sshd on loopback for the remote-training tests (not a test module): its own host and client keys, the
logged-in user's environment set with SetEnv, stopped by the caller."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
LOGIN = "root@127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def why_not() -> str | None:
    """The reason a loopback sshd cannot run here (a skip reason), or None."""
    if SSHD is None or shutil.which("rsync") is None:
        return "needs openssh-server and rsync (python -m workbench.bootstrap test installs them)"
    if os.geteuid() != 0:
        return "sshd on loopback needs root here (it switches to the logged-in user)"
    return None


@dataclass
class Sshd:
    proc: subprocess.Popen
    ssh: str  # the whole ssh command with its options (WORKBENCH_SSH)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class SshdFailed(RuntimeError):
    pass


def start_sshd(folder: Path, env: dict[str, str]) -> Sshd:
    """sshd on a free loopback port that lets root in with a fresh key; `env` is set in every session."""
    d = folder
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "client_key")], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = free_port()
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege-separation directory
    config = d / "sshd_config"
    set_env = " ".join(f"{k}={v}" for k, v in env.items())
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_key'}
AuthorizedKeysFile {d / 'authorized_keys'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PidFile {d / 'sshd.pid'}
SetEnv {set_env}
""")
    assert SSHD is not None
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    ssh = (f"ssh -p {port} -i {d / 'client_key'} -o StrictHostKeyChecking=no -o UserKnownHostsFile={d / 'known'} "
           "-o LogLevel=ERROR")
    deadline = time.monotonic() + 20
    while subprocess.run([*ssh.split(), "-o", "BatchMode=yes", LOGIN, "true"], capture_output=True).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SshdFailed(f"sshd did not start: {proc.stderr.read()[-500:] if proc.stderr else ''}")
        time.sleep(0.2)
    return Sshd(proc, ssh)
