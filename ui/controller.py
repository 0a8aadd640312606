"""The GUI's handle on the rig: owns the Rig and the control thread that runs the TeleopLoop.

Threads: the control loop runs on its own Python thread. Its only GUI hook is a listener that stores the newest
`Tick` in a slot (one reference assignment) and keeps a cheap running max of the period; the GUI polls that slot
with a QTimer (~20 Hz) for previews, plots and rates. State changes (connected, teleop steps, errors, e-stop) come
back as Qt signals, which Qt queues onto the GUI thread. No widget is touched off the GUI thread.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
from pathlib import Path
from typing import Any, Callable

from PyQt6.QtCore import QObject, pyqtSignal

from drivers.errors import DriverError
from ui.tasks import JobContext, JobRunner
from workbench.config import RigConfig, load_rig_config
from workbench.rig import Rig, build_rig
from workbench.teleop import TeleopLoop, TeleopStopped, Tick

log = logging.getLogger(__name__)


class RigController(QObject):
    configChanged = pyqtSignal(object)  # RigConfig
    connectionChanged = pyqtSignal(bool)
    connectProgress = pyqtSignal(str)
    teleopState = pyqtSignal(str)  # idle | starting | waiting_for_squeeze | running | stopping
    teleopStep = pyqtSignal(str)  # start-up / shutdown ceremony steps, in words
    teleopFinished = pyqtSignal(object)  # TimingSummary or None
    estopChanged = pyqtSignal(bool)
    error = pyqtSignal(object, str)  # exception, context ("Connect", "Teleop")
    armStatus = pyqtSignal(object)  # list[ArmStatus]
    _controlDone = pyqtSignal(object, object)  # (thread, summary): the control thread's last word, queued

    def __init__(self, jobs: JobRunner, realtime_sim: bool = True, parent=None):
        super().__init__(parent)
        self.jobs = jobs
        self.realtime_sim = realtime_sim
        self.config: RigConfig | None = None
        self.rig: Rig | None = None
        self.loop: TeleopLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_flag = False
        self._latest: Tick | None = None  # lock-free slot: written by the control thread, read by the GUI
        self._max_period = 0.0
        self._extra_listeners: list[Callable[[Tick], None]] = []
        self.last_summary = None
        self.runner_result = None
        self.connecting = False
        self.state = "idle"
        self.replay_job = None  # the running replay (ui.tasks.Job), if any
        self._controlDone.connect(self._on_control_done)

    # -- configuration ---------------------------------------------------------------------------------
    def load_config(self, ref: str) -> RigConfig:
        """Parse a preset or TOML file (raises ConfigError). In simulation the GUI runs in real time."""
        cfg = load_rig_config(ref)
        if cfg.backend == "sim" and self.realtime_sim != cfg.sim.realtime:
            cfg = dataclasses.replace(cfg, sim=dataclasses.replace(cfg.sim, realtime=self.realtime_sim))
        self.config = cfg
        self.configChanged.emit(cfg)
        return cfg

    # -- connect / disconnect --------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.rig is not None and self.rig.connected

    @property
    def teleop_running(self) -> bool:
        """True from start until the GUI thread has handled the run's end (`teleopFinished`). Not `is_alive()`:
        a new run started between the thread's exit and that queued signal would be taken for the one ending."""
        return self._thread is not None

    def connect_rig(self, ref: str | None = None):
        """Build and connect the rig on a worker thread; returns the Job (progress/cancel/error signals)."""
        if self.connected or self.connecting:
            return None
        try:
            cfg = self.load_config(ref) if ref is not None else self.config
            if cfg is None:
                raise ValueError("choose a rig first")
        except Exception as exc:  # noqa: BLE001 - ConfigError and friends: shown, not raised
            self.error.emit(exc, "Loading the rig configuration")
            return None
        self.connecting = True

        def work(ctx: JobContext) -> Rig:
            ctx.progress(f"Building {cfg.name} ({cfg.backend})")
            rig = build_rig(cfg)
            try:
                rig.connect(progress=lambda m: (ctx.progress(m), self.connectProgress.emit(m)))
            except BaseException:
                rig.disconnect()
                raise
            if ctx.cancelled:
                rig.disconnect()
            return rig

        job = self.jobs.submit(f"Connecting {cfg.name}", work, cancellable=True,
                               on_success=self._on_connected, on_error=self._on_connect_failed)
        job.cancelled.connect(self._on_connect_cancelled)
        return job

    def _on_connected(self, rig: Rig) -> None:
        self.connecting = False
        self.rig = rig
        self.connectionChanged.emit(True)
        self.refresh_status()

    def _on_connect_failed(self, exc: BaseException) -> None:
        self.connecting = False
        self.error.emit(exc, "Connect")
        self.connectionChanged.emit(False)

    def _on_connect_cancelled(self) -> None:
        self.connecting = False
        self.connectionChanged.emit(False)

    def disconnect_rig(self):
        """Stop teleop (if any), then hold the followers and disconnect, off the GUI thread."""
        rig = self.rig
        if rig is None:
            return None
        self.stop_teleop()
        thread = self._thread

        def work(ctx: JobContext) -> None:
            if thread is not None:
                ctx.progress("Stopping teleoperation")
                thread.join(timeout=10)
            ctx.progress("Holding the followers and disconnecting")
            rig.disconnect()

        self.rig = None
        self._latest = None
        return self.jobs.submit("Disconnecting", work, on_success=lambda _: self.connectionChanged.emit(False),
                                on_error=lambda e: (self.error.emit(e, "Disconnect"), self.connectionChanged.emit(False)))

    def shutdown(self, timeout: float = 10.0) -> None:
        """Blocking: used when the window closes."""
        self.stop_teleop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.jobs.wait(int(timeout * 1000))
        if self.rig is not None:
            self.rig.disconnect()
            self.rig = None

    # -- status ------------------------------------------------------------------------------------------
    def refresh_status(self):
        """Per-arm status (torque, temperature, errors) on a worker thread. Skipped while teleoperating: each
        status read is several bus transactions under the I/O lock and would cost the control loop time."""
        rig = self.rig
        if rig is None or self.teleop_running:
            return None
        return self.jobs.submit("Reading servo status", lambda ctx: rig.arm_status(),
                                on_success=self.armStatus.emit, on_error=lambda e: self.error.emit(e, "Servo status"))

    def reboot(self, arm: str, joint: str):
        rig = self.rig
        if rig is None:
            return None

        def work(ctx: JobContext):
            rig.reboot(arm, joint)
            return rig.arm_status()

        return self.jobs.submit(f"Rebooting {arm} / {joint}", work, on_success=self.armStatus.emit,
                                on_error=lambda e: self.error.emit(e, f"Reboot {arm}/{joint}"))

    def replay(self, path):
        """Replay a recorded episode on the followers (workbench.replay, through the safety layer) on a worker
        thread; Cancel stops it and holds the arms. Teleop cannot start meanwhile. Returns the Job or None."""
        from workbench.replay import replay_episode

        rig = self.rig
        if rig is None or not rig.connected:
            self.error.emit("Connect a rig first (Rig tab).", "Replay")
            return None
        if self.teleop_running or self.replay_job is not None:
            self.error.emit("Stop teleoperation (or the running replay) first.", "Replay")
            return None
        if rig.safety.estopped:
            from drivers.errors import SafetyError
            self.error.emit(SafetyError("the e-stop is engaged"), "Replay")
            return None

        def work(ctx: JobContext):
            return replay_episode(rig, path, progress=lambda m: ctx.progress(m), stop=ctx.cancel_event)

        job = self.jobs.submit(f"Replaying {Path(path).stem}", work, cancellable=True,
                               on_error=lambda e: self.error.emit(e, "Replay"))
        self.replay_job = job
        job.finished.connect(lambda: setattr(self, "replay_job", None))
        return job

    def camera_stats(self) -> dict:
        return self.rig.camera_stats() if self.rig is not None else {}

    # -- teleoperation -------------------------------------------------------------------------------------
    def add_tick_listener(self, fn: Callable[[Tick], None]) -> None:
        """Extra per-tick listeners (the recording session) for the current and future loops."""
        self._extra_listeners.append(fn)
        if self.loop is not None:
            self.loop.add_listener(fn)

    def remove_tick_listener(self, fn: Callable[[Tick], None]) -> None:
        if fn in self._extra_listeners:
            self._extra_listeners.remove(fn)
        if self.loop is not None:
            self.loop.remove_listener(fn)

    def start_teleop(self, wait_for_squeeze: bool = True, seed: int | None = None,
                     runner: Callable[[TeleopLoop], Any] | None = None) -> bool:
        """Start-up ceremony, then `loop.run()` until stopped, or `runner(loop)` (a recording session's run) after
        the start-up; then the shutdown ceremony. All on the control thread."""
        rig = self.rig
        if rig is None or not rig.connected:
            self.error.emit("Connect a rig first (Rig tab).", "Teleop")
            return False
        if self.teleop_running:
            return False
        if self.replay_job is not None:
            self.error.emit("A replay is driving the arms: wait for it or cancel it (Episodes tab).", "Teleop")
            return False
        if rig.safety.estopped:
            from drivers.errors import SafetyError
            self.error.emit(SafetyError("the e-stop is engaged"), "Teleop")
            return False
        loop = TeleopLoop(rig)
        loop.add_listener(self._on_tick)
        for fn in self._extra_listeners:
            loop.add_listener(fn)
        self.loop = loop
        self._stop_flag = False
        self._max_period = 0.0
        self._thread = threading.Thread(target=self._control_thread, args=(loop, wait_for_squeeze, seed, runner),
                                        name="teleop-control", daemon=True)
        self._set_state("starting")
        self._thread.start()
        return True

    def stop_teleop(self) -> None:
        self._stop_flag = True
        if self.loop is not None:
            self.loop.request_stop()

    def _set_state(self, state: str) -> None:
        self.state = state
        self.teleopState.emit(state)

    def _control_thread(self, loop: TeleopLoop, squeeze: bool, seed: int | None, runner) -> None:
        rig = loop.rig
        summary = None

        def step(msg: str) -> None:
            self.teleopStep.emit(msg)
            if loop.state != self.state:
                self._set_state(loop.state)

        try:
            if rig.sim is not None:
                rig.begin_episode(seed if seed is not None else rig.config.sim.seed)
            loop.startup(progress=step, wait_for_squeeze=squeeze)
            if not self._stop_flag and not rig.safety.estopped:
                self._set_state("running")
                if runner is not None:
                    self.runner_result = None
                    self.runner_result = runner(loop)
                    summary = loop.timing.summary()
                else:
                    summary = loop.run()
        except TeleopStopped as exc:
            if not rig.safety.estopped:
                self.error.emit(exc, "Teleoperation")
            summary = loop.timing.summary()
        except DriverError as exc:
            if not rig.safety.estopped:
                self.error.emit(exc, "Teleop start-up")
        except Exception as exc:  # noqa: BLE001 - recorder errors, bugs: followers were held by the loop; show
            self.error.emit(exc, "Recording" if runner is not None else "Teleoperation")
        finally:
            try:
                if rig.connected and not rig.safety.estopped:
                    loop.shutdown(progress=step)
            except Exception as exc:  # noqa: BLE001
                self.error.emit(exc, "Teleop shutdown")
            self.last_summary = summary
            self._set_state("idle")
            self.teleopStep.emit("Stopped" if not rig.safety.estopped else "E-stop engaged: followers held")
            self._controlDone.emit(threading.current_thread(), summary)

    def _on_control_done(self, thread, summary) -> None:
        if thread is self._thread:
            self._thread = None
        self.teleopFinished.emit(summary)

    def _on_tick(self, tick: Tick) -> None:
        # control thread: keep this to a couple of assignments
        self._latest = tick
        p = tick.period
        if p > self._max_period:
            self._max_period = p
        if self._stop_flag:
            self.loop.request_stop()

    def latest_tick(self) -> Tick | None:
        return self._latest

    def take_max_period(self) -> float:
        p, self._max_period = self._max_period, 0.0
        return p if p > 0 and math.isfinite(p) else float("nan")

    # -- e-stop --------------------------------------------------------------------------------------------
    @property
    def estopped(self) -> bool:
        return self.rig is not None and self.rig.safety.estopped

    def estop(self, reason: str = "operator") -> None:
        """Engage from the GUI thread: blocks at most one control tick (the rig's I/O lock)."""
        self._stop_flag = True
        rig = self.rig
        if rig is not None:
            try:
                rig.safety.estop(reason)
            finally:
                if self.loop is not None:
                    self.loop.request_stop()
        self.estopChanged.emit(True)

    def release_estop(self) -> None:
        if self.rig is not None:
            self.rig.safety.release()
        self.estopChanged.emit(False)

    def any_state(self) -> dict[str, Any]:
        return {"connected": self.connected, "teleop": self.state, "estop": self.estopped}
