"""The robot side's launcher of policy servers: `LocalPolicyServer` (`workbench serve` as a child process on loopback)
and `open_policy` (a client of a server, started here or somewhere else, checked against the rig, from one string).
The client itself is serving.client (`RemotePolicy`, `PolicyConnectionError`).

    policy = open_policy("runs/cube/policy", rig=rig_config, log=print)        # child server + client
    policy = open_policy("wss://gpu-box:8000", api_key=key, tls_ca="lab-ca.pem")  # a server somewhere else (TLS)
    reply = policy.infer(ChunkRequest(state, images, prompt, step=t))          # ChunkReply, actions [H, 14]
    policy.close()                                                              # also stops a child server

Why a child process: a CUDA error, an out-of-memory or a slow first call in the model must never stall the 50 Hz
control loop or take the window down. The child is `python -m workbench.cli serve POLICY --host 127.0.0.1
--port 0 --ready-file F --exit-with-parent`: it binds a free port and writes {"port": ...} to F once listening;
its stdin is a pipe from us, so it exits by itself if we die. Every failure on this path -- nothing listening,
a wrong api key (401), an error reply, the server dying mid-request, a malformed reply -- is one exception type,
`PolicyConnectionError`, whose message names the URL (and for a child server its exit code and last output) and
what to do; `.kind` tells them apart for code ("refused", "auth", "timeout", "closed", "server_error",
"bad_reply", "server_exited", "rig", "tls", "rate_limited", ...).

Encryption: the child server is on loopback (plaintext never leaves this machine). A server elsewhere should be
`wss://` (`workbench serve --tls-cert CERT --tls-key KEY`; the client verifies its certificate against the system's
trust store or `tls_ca`, default $WORKBENCH_TLS_CA); opening a `ws://` URL of another machine works but says, on
`log` and the logging module, that the key, frames and actions travel in clear (`RemotePolicy.encrypted`,
`.security_warning` for a UI).

Warm-up: the first inference of a model is slow (CUDA context, kernel selection, allocator growth, the prompt's
first tokenization). `open_policy(..., warmup=True)` (the default) sends one dummy request (zero state, black
frames for the policy's cameras, the step 0) before returning, so the first real chunk of a trial comes at the
steady-state latency. `RemotePolicy.warmup()` does the same on demand.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from serving.client import PolicyConnectionError, RemotePolicy

Log = Callable[[str], None]
_ROOT = Path(__file__).resolve().parents[2]  # the repository root (workbench/deploy/ -> ..)


# ------------------------------------------------------------------------------------------- child server
def _caller_policy(policy: str | Path) -> str:
    """A policy folder relative to our cwd -> absolute (the child server runs in the repository root); a hub id
    ("owner/name", no such local folder) as is."""
    s = str(policy)
    local = os.path.expanduser(s)
    hub_like = not isinstance(policy, Path) and not s.startswith(("/", ".", "~")) and s.count("/") == 1 \
        and "\\" not in s
    if s.startswith(("ws://", "wss://")) or (hub_like and not os.path.exists(local)):
        return s
    return os.path.abspath(local)


def _caller_rig(rig: str | Path) -> str:
    """A rig TOML path relative to our cwd -> absolute (the child runs in the repository root); a preset as is."""
    from workbench.config import PRESETS

    s = str(rig)
    return s if s in PRESETS else os.path.abspath(os.path.expanduser(s))


def _rig_arg(rig: Any, tmp: Path) -> str | None:
    """A preset name, a TOML path, or a RigConfig -> what `workbench serve --rig` takes."""
    if rig is None:
        return None
    if isinstance(rig, (str, Path)):
        return _caller_rig(rig)
    source = str(getattr(rig, "source", "") or "")
    if source.startswith("preset:"):
        return source.split(":", 1)[1]
    if source and Path(source).is_file():
        return os.path.abspath(source)  # the child runs in the repository root, not in our cwd
    text = getattr(rig, "text", None)
    if not text:
        raise ValueError(f"cannot pass rig {rig!r} to the policy server: give a preset name, a TOML path or a "
                         "RigConfig read from one")
    path = tmp / "rig.toml"
    path.write_text(text)
    return str(path)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"{code} (killed by {signal.Signals(-code).name})"
        except ValueError:
            return str(code)
    return str(code)


class LocalPolicyServer:
    """`workbench serve POLICY` as a child process on 127.0.0.1 at a free port.

    start() waits until it listens (or raises PolicyConnectionError naming its exit code and last output when it
    dies first, or stops it on `startup_timeout`); its output lines go to `log`; connect() -> RemotePolicy whose
    errors mention the child's death if that was the cause; stop() ends it (SIGTERM, then SIGKILL), idempotent.
    `rig` (preset name, TOML path or RigConfig) makes the server refuse a policy trained for another rig.
    `policy_config` names how an openpi checkpoint was trained (`workbench serve --config`)."""

    def __init__(self, policy: str | Path, rig: Any = None, device: str = "auto", api_key: str | None = None,
                 log: Log | None = None, *, num_steps: int | None = None, startup_timeout: float = 300.0,
                 tail_lines: int = 40, policy_config: str | None = None) -> None:
        self.policy, self.rig, self.device, self.api_key = _caller_policy(policy), rig, device, api_key
        self.policy_config = policy_config
        if isinstance(rig, (str, Path)):
            self.rig = _caller_rig(rig)  # resolved against the caller's cwd now, not the child's
        self.log, self.num_steps, self.startup_timeout = log, num_steps, float(startup_timeout)
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._tmp: Path | None = None
        self._tail: deque[str] = deque(maxlen=tail_lines)  # stderr (logging, errors)
        self._out_tail: deque[str] = deque(maxlen=tail_lines)  # stdout
        self._readers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._exited = threading.Event()

    @property
    def url(self) -> str:
        if self.port is None:
            raise PolicyConnectionError(f"the policy server for {self.policy} is not started", kind="not_started")
        return f"ws://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def command(self, ready_file: Path) -> list[str]:
        cmd = [sys.executable, "-m", "workbench.cli", "serve", self.policy, "--host", "127.0.0.1", "--port", "0",
               "--device", self.device, "--ready-file", str(ready_file), "--exit-with-parent"]
        rig = _rig_arg(self.rig, ready_file.parent)
        if rig is not None:
            cmd += ["--rig", rig]
        if self.num_steps is not None:
            cmd += ["--num-steps", str(int(self.num_steps))]
        if self.policy_config:
            cmd += ["--config", str(self.policy_config)]
        return cmd

    # -- life cycle
    def start(self, timeout: float | None = None) -> "LocalPolicyServer":
        """Starts the child and waits until it listens; a second call is a no-op while it runs."""
        with self._lock:
            if self.proc is not None:
                if self.alive:
                    return self
                raise self._death("was started before and has exited")
            self._tmp = Path(tempfile.mkdtemp(prefix="workbench_serve_"))
            ready = self._tmp / "ready.json"
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p)
            if self.api_key:
                env["WORKBENCH_API_KEY"] = self.api_key  # not on the command line, where `ps` shows it
            cmd = self.command(ready)
            self._emit(f"starting the policy server: {' '.join(cmd[1:])}")
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         env=env, cwd=str(_ROOT), start_new_session=True)
            self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self._out_tail),
                                              name="policy-server-out", daemon=True),
                             threading.Thread(target=self._read, args=(self.proc.stderr, self._tail),
                                              name="policy-server-err", daemon=True)]
            for t in self._readers:
                t.start()
            threading.Thread(target=self._watch, name="policy-server-watch", daemon=True).start()
        deadline = time.monotonic() + (self.startup_timeout if timeout is None else float(timeout))
        while True:
            if ready.is_file():
                try:
                    self.port = int(json.loads(ready.read_text())["port"])
                    break
                except (ValueError, KeyError, OSError):
                    pass  # written atomically; a partial read cannot happen, but be lenient
            if self.proc.poll() is not None:
                self._drain()
                raise self._death("exited before it was ready")
            if time.monotonic() > deadline:
                self.stop()
                raise PolicyConnectionError(
                    f"the policy server for {self.policy} was not ready within "
                    f"{self.startup_timeout if timeout is None else timeout:g} s (stopped it)" + self._last_lines(),
                    kind="timeout")
            time.sleep(0.05)
        self._emit(f"policy server ready on {self.url} (pid {self.proc.pid})")
        return self

    def _read(self, stream: Any, tail: deque) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line:
                tail.append(line)
                self._emit(line)
        stream.close()

    def _watch(self) -> None:
        proc = self.proc
        assert proc is not None
        code = proc.wait()
        self._drain()
        self._exited.set()
        if not self._stopping:
            self._emit(f"the policy server exited with code {_exit_text(code)}")

    def _drain(self, timeout: float = 2.0) -> None:
        for t in self._readers:
            if t is not threading.current_thread():
                t.join(timeout)

    def _emit(self, line: str) -> None:
        if self.log is not None:
            try:
                self.log(line)
            except Exception:  # noqa: BLE001 - a broken log sink must not break serving
                pass

    def _last_lines(self) -> str:
        lines = list(self._tail) or list(self._out_tail)
        return ("; its last output:\n    " + "\n    ".join(lines[-12:])) if lines else "; it printed nothing"

    def _death(self, what: str) -> PolicyConnectionError:
        code = self.returncode
        return PolicyConnectionError(f"the policy server for {self.policy} {what} (exit code "
                                     f"{_exit_text(code) if code is not None else '?'})" + self._last_lines(),
                                     kind="server_exited", url=None if self.port is None else self.url)

    def death_report(self, wait: float = 1.0) -> str | None:
        """None while the child runs; else its exit code and last output (waits up to `wait` s for a dying one)."""
        if self.proc is None:
            return None
        if not self._exited.wait(wait) and self.proc.poll() is None:
            return None
        self._drain()
        code = self.proc.poll()
        return (f"the local policy server (pid {self.proc.pid}, {self.policy}) exited with code "
                f"{_exit_text(code) if code is not None else '?'}" + self._last_lines())

    def restart(self, timeout: float | None = None) -> "LocalPolicyServer":
        """A fresh child after this one exited (a new port: the old one may be taken by now)."""
        with self._lock:
            if self.alive:
                return self
            if self.proc is not None:
                self._drain()
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
            self.proc, self.port, self._tmp, self._stopping = None, None, None, False
            self._tail.clear()
            self._out_tail.clear()
            self._exited.clear()
        return self.start(timeout)

    def check(self) -> None:
        """Raises PolicyConnectionError if the child has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise self._death("has exited")

    def connect(self, timeout: float = 30.0, max_restarts: int = 2) -> "ChildServedPolicy":
        """A client of this server (starts it first if needed); its revive() restarts a dead child."""
        if self.proc is None:
            self.start()
        self.check()
        return ChildServedPolicy(self, timeout, max_restarts=max_restarts)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; -> the exit code. Idempotent."""
        with self._lock:
            self._stopping = True
            proc = self.proc
            if proc is not None and proc.poll() is None:
                try:
                    if proc.stdin is not None:
                        proc.stdin.close()
                except OSError:
                    pass
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout)
            if proc is not None:
                try:
                    if proc.stdin is not None and not proc.stdin.closed:
                        proc.stdin.close()
                except OSError:
                    pass
                self._drain()
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
            return None if proc is None else proc.poll()

    def __enter__(self) -> "LocalPolicyServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ChildServedPolicy(RemotePolicy):
    """The client of a LocalPolicyServer. Between trials, `revive()` restarts the child when it has died (a CUDA
    error, the OOM killer, a kill): at most `max_restarts` times per session, since a policy that dies on every
    trial should stop the session with its last output rather than be restarted forever. The trial it died in
    has already ended "aborted" (its requests were refused); the next one runs on the new child."""

    def __init__(self, server: LocalPolicyServer, timeout: float = 30.0, *, max_restarts: int = 2) -> None:
        super().__init__(server.url, server.api_key, timeout,
                         diagnose=lambda: None if server._stopping else server.death_report())
        self.server, self.max_restarts, self.restarts = server, int(max_restarts), 0

    def revive(self) -> str | None:
        server = self.server
        if server.alive:
            return super().revive()
        why = (server.death_report(wait=1.0) or f"the local policy server for {server.policy} exited").split(
            "; its last output")[0]
        if self.restarts >= self.max_restarts:
            raise PolicyConnectionError(
                f"{why}, after {self.restarts} restart{'s' if self.restarts != 1 else ''} this session: not "
                f"restarting it again. Its last output:" + server._last_lines().split(":", 1)[-1]
                + "\nFix what it says (memory, device, the policy folder), then start the trials again",
                kind="server_exited", url=self.url)
        self.restarts += 1
        with self._lock:
            self._drop()
        server.restart()
        self.url = server.url
        self.warmup()  # the model loaded and its first (slow) call made before a trial depends on it
        return f"{why}; restarted it ({self.restarts} of at most {self.max_restarts} this session), now on {self.url}"


# ------------------------------------------------------------------------------------------------ open
def _check_remote_rig(policy: RemotePolicy, rig: Any, *, allow_sim_policy: bool = False) -> Any:
    """The robot side's rig check, from the metadata the server announces (a child server or one elsewhere alike):
    camera names, joint layout, control rate, backend kind (a policy trained on a simulated backend on a real
    "dynamixel" rig is refused unless `allow_sim_policy`) and gripper constants (finetune.rig_check). Raises
    PolicyConnectionError(kind="rig") naming the differences; -> the RigCheck (None without a rig), whose
    summary() says what was checked and what the server did not announce."""
    if rig is None:
        return None
    if isinstance(rig, (str, Path)):
        from workbench.config import load_rig_config

        rig = load_rig_config(rig)
    from finetune.rig_check import compare_rigs

    meta = policy.metadata
    check = compare_rigs(meta, rig, allow_sim_policy=bool(allow_sim_policy),
                         policy=f"the policy at {policy.url} ({meta.get('policy') or '?'})")
    if check.differences:
        raise PolicyConnectionError(
            f"the policy at {policy.url} ({meta.get('policy') or '?'}) was trained for rig "
            f"{meta.get('rig') or '?'!r}, which differs from rig {getattr(rig, 'name', '')!r}:\n  "
            + "\n  ".join(check.differences)
            + (f"\n(not checked: {'; '.join(check.unchecked)})" if check.unchecked else ""), kind="rig", url=policy.url)
    return check


def _say(log: Log | None, line: str) -> None:
    if log is not None:
        try:
            log(line)
        except Exception:  # noqa: BLE001 - a broken log sink must not break opening
            pass


def _rig_report(policy: RemotePolicy, rig: Any, allow_sim_policy: bool, log: Log | None) -> None:
    """The robot side's check (raises on a mismatch); its one-line report goes to `log`, and to `policy.rig_check`."""
    check = _check_remote_rig(policy, rig, allow_sim_policy=allow_sim_policy)
    policy.rig_check = check
    _say(log, check.summary() if check is not None else
         f"rig check: none (no rig given): the policy at {policy.url} was NOT checked against a rig")


def open_policy(spec: str | Path, rig: Any = None, api_key: str | None = None, device: str = "auto",
                log: Log | None = None, *, warmup: bool = True, timeout: float = 30.0,
                startup_timeout: float = 300.0, tls_ca: str | Path | None = None,
                allow_sim_policy: bool = False, policy_config: str | None = None) -> RemotePolicy:
    """`ws://` / `wss://` URL -> RemotePolicy; a policy folder, replay folder or hub id -> a LocalPolicyServer child
    and a RemotePolicy whose close() also stops it. warmup: one dummy request before returning (see the module
    docstring). `rig` checks the policy against the rig: a child server is given it (`--rig`: refuses a mismatch
    before loading the model), and for every server the metadata it announces is checked here (cameras, joint
    layout, control rate, backend kind, gripper constants: `_check_remote_rig`), the one-line report going to
    `log` and `policy.rig_check`. allow_sim_policy: run a policy trained on a simulated backend on a real
    ("dynamixel") rig, which is refused otherwise (the operator's `--allow-sim-policy`). tls_ca: the CA file a
    `wss://` server's certificate is verified against (default $WORKBENCH_TLS_CA, else the system's trust store); a
    `ws://` URL of another machine is said to `log` to be unencrypted. policy_config: how an openpi checkpoint was
    trained (its child server's `--config`; a LeRobot folder or ours says it itself)."""
    spec = str(spec)
    if spec.startswith(("ws://", "wss://")):
        policy = RemotePolicy(spec, api_key, timeout, tls_ca=tls_ca)
        if policy.security_warning:
            _say(log, policy.security_warning)  # ws:// to another machine: the key and the actions in clear
    else:
        server = LocalPolicyServer(spec, rig=rig, device=device, api_key=api_key, log=log,
                                   startup_timeout=startup_timeout, policy_config=policy_config)
        server.start()
        try:
            policy = server.connect(timeout)
        except BaseException:
            server.stop()
            raise
        policy.on_close(server.stop)  # closing the policy stops its child
    try:
        _rig_report(policy, rig, allow_sim_policy, log)
        if warmup:
            policy.warmup()
    except BaseException:
        policy.close()
        raise
    return policy


__all__ = ["ChildServedPolicy", "LocalPolicyServer", "open_policy"]
