"""The GUI's thin adapter over `workbench.session.RigSession`: connect/disconnect jobs, and the session's typed
events re-emitted as Qt signals on the GUI thread.

Nothing here decides what the arms do: start-up, shutdown, e-stop, parking and recording belong to the session
(the same object the CLI uses). The control thread's only GUI hook is a tick listener that stores the newest
`Tick` in a slot (one reference assignment) and keeps a cheap running max of the period; the GUI polls that slot
with a QTimer (~20 Hz) for previews, plots and rates.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Callable

from PyQt6.QtCore import QObject, pyqtSignal

from ui.tasks import JobContext, JobRunner
from workbench import events as ev
from workbench.backends import build_rig
from workbench.config import RigConfig, load_rig_config
from workbench.control import Tick
from workbench.rig import Rig
from workbench.session import RigSession

log = logging.getLogger(__name__)


class RigController(QObject):
    configChanged = pyqtSignal(object)  # RigConfig
    connectionChanged = pyqtSignal(bool)
    connectProgress = pyqtSignal(str)
    sessionEvent = pyqtSignal(object)  # every workbench.events event, on the GUI thread
    teleopState = pyqtSignal(str)  # workbench.events.Phase value: starting | waiting_for_squeeze | running | ...
    teleopStep = pyqtSignal(str)  # sequence steps, in words
    teleopFinished = pyqtSignal(object)  # TimingSummary or None, after a mode ended
    estopChanged = pyqtSignal(bool)
    error = pyqtSignal(object, str)  # exception (or text), context ("Connect", "Teleop")
    armStatus = pyqtSignal(object)  # list[ArmStatus]
    _event = pyqtSignal(object)  # from the control thread: queued to the GUI thread

    def __init__(self, jobs: JobRunner, realtime_sim: bool = True, parent=None):
        super().__init__(parent)
        self.jobs = jobs
        self.realtime_sim = realtime_sim
        self.config: RigConfig | None = None
        self.session: RigSession | None = None
        self._latest: Tick | None = None  # lock-free slot: written by the control thread, read by the GUI
        self._max_period = 0.0
        self.last_summary = None
        self.connecting = False
        self.state = "idle"  # the session's phase, as last seen on the GUI thread
        self.mode = ev.Mode.IDLE
        self.replay_job = None  # the running replay (ui.tasks.Job), if any
        self._event.connect(self._on_event)

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
    def rig(self) -> Rig | None:
        return self.session.rig if self.session is not None else None

    @property
    def connected(self) -> bool:
        return self.session is not None and self.session.rig.connected

    @property
    def teleop_running(self) -> bool:
        """True while a mode (teleop, recording, replay, trial) drives the arms, until the GUI has seen it end."""
        return self.mode is not ev.Mode.IDLE

    @property
    def loop(self):
        return self.session.loop if self.session is not None else None

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
        session = RigSession(rig)
        session.subscribe(self._event.emit)  # control thread -> queued signal
        session.add_tick_listener(self._on_tick)
        self.session = session
        self.connectionChanged.emit(True)
        self.refresh_status()

    def _on_connect_failed(self, exc: BaseException) -> None:
        self.connecting = False
        self.error.emit(exc, "Connect")
        self.connectionChanged.emit(False)

    def _on_connect_cancelled(self) -> None:
        self.connecting = False
        self.connectionChanged.emit(False)

    def disconnect_rig(self, torque_off_here: bool = False):
        """Stop the running mode, park the followers at the sleep pose (or, only when asked, torque off where they
        stand), then disconnect; off the GUI thread. With the e-stop engaged the session refuses to park: the
        error says what to do and the rig stays connected."""
        session = self.session
        if session is None:
            return None

        def work(ctx: JobContext) -> None:
            session.close(torque_off_here=torque_off_here, progress=lambda m: ctx.progress(m))

        def done(_):
            self.session = None
            self._latest = None
            self.connectionChanged.emit(False)

        def failed(exc):
            self.error.emit(exc, "Disconnect")
            if not session.rig.connected:
                done(None)

        return self.jobs.submit("Disconnecting", work, on_success=done, on_error=failed)

    def shutdown(self, timeout: float = 15.0, torque_off_here: bool = False) -> None:
        """Blocking (the window closes): stop, park, disconnect. Parking refused (e-stop): torque off."""
        from workbench.session import ParkRefused

        self.jobs.wait(int(timeout * 1000))
        if self.session is not None:
            try:
                self.session.close(torque_off_here=torque_off_here)
            except ParkRefused:
                self.session.close(torque_off_here=True)
            self.session = None

    # -- status ------------------------------------------------------------------------------------------
    def refresh_status(self):
        """Per-arm status (torque, temperature, errors) on a worker thread. Skipped while a mode runs: each status
        read is several bus transactions under the I/O lock and would cost the control loop time."""
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
            rig.reboot(arm, joint)  # through the safety layer: refused while the e-stop is engaged
            return rig.arm_status()

        return self.jobs.submit(f"Rebooting {arm} / {joint}", work, on_success=self.armStatus.emit,
                                on_error=lambda e: self.error.emit(e, f"Reboot {arm}/{joint}"))

    def camera_stats(self) -> dict:
        return self.rig.camera_stats() if self.rig is not None else {}

    # -- modes -------------------------------------------------------------------------------------------
    def _begin(self, context: str, start: Callable[[RigSession], Any]) -> bool:
        if self.session is None or not self.connected:
            self.error.emit("Connect a rig first (Rig tab).", context)
            return False
        if self.mode is ev.Mode.IDLE:
            self.session.wait(2.0)  # the GUI has seen the last mode's Stopped: its thread is just finishing
        try:
            start(self.session)
        except Exception as exc:  # noqa: BLE001 - busy, e-stop engaged, no leaders: shown, not raised
            self.error.emit(exc, context)
            return False
        self.mode = self.session.mode
        self._max_period = 0.0
        return True

    def start_teleop(self, wait_for_squeeze: bool = True, seed: int | None = None) -> bool:
        return self._begin("Teleop", lambda s: s.start_teleop(wait_for_squeeze=wait_for_squeeze, seed=seed))

    def start_recording(self, store, settings, events, wait_for_squeeze: bool = True):
        """Returns the running workbench.recording.RecordingSession (episode timer, saved list), or None."""
        started: list = []
        ok = self._begin("Record", lambda s: started.append(s.start_recording(store, settings, events,
                                                                              wait_for_squeeze=wait_for_squeeze)))
        return started[0] if ok else None

    def start_service(self, context: str, start: Callable[[RigSession], Any]) -> Any:
        """A mode a service starts on the session (the trials: `TrialsService.start`); its events follow.
        Returns what `start` returned, or None when it could not start (the error is shown)."""
        started: list = []
        return started[0] if self._begin(context, lambda s: started.append(start(s))) else None

    def stop_teleop(self) -> None:
        """Stop whatever mode runs, once (a recording keeps its current episode and records no more)."""
        if self.session is not None:
            self.session.stop()

    def replay(self, path):
        """Replay an episode through the session; a Job (progress, Cancel = stop, result) for the Episodes tab."""
        if self.replay_job is not None:
            self.error.emit("A replay is already running.", "Replay")
            return None
        if not self._begin("Replay", lambda s: s.start_replay(path)):
            return None
        session = self.session

        def work(ctx: JobContext):
            say = lambda e: ctx.progress(e.text) if isinstance(e, ev.StepMessage) else None  # noqa: E731
            session.subscribe(say)
            try:
                while not session.wait(0.1):
                    if ctx.cancelled:
                        session.stop()
            finally:
                session.unsubscribe(say)
            if session.last_error is not None:
                raise session.last_error
            return session.result

        job = self.jobs.submit(f"Replaying {Path(path).stem}", work, cancellable=True,
                               on_error=lambda e: self.error.emit(e, "Replay"))
        self.replay_job = job
        job.finished.connect(lambda: setattr(self, "replay_job", None))
        return job

    # -- events (GUI thread) -------------------------------------------------------------------------------
    def _on_event(self, e: ev.RigEvent) -> None:
        if isinstance(e, ev.PhaseChanged):
            self.state = e.phase.value
            self.teleopState.emit(self.state)
        elif isinstance(e, ev.ModeChanged):
            if e.mode is not ev.Mode.IDLE:
                self.mode = e.mode
        elif isinstance(e, ev.StepMessage):
            self.teleopStep.emit(e.text)
        elif isinstance(e, ev.EstopChanged):
            self.estopChanged.emit(e.engaged)
        elif isinstance(e, ev.SessionError):
            self.error.emit(e.error, e.context)
        elif isinstance(e, ev.Stopped):
            self.mode = ev.Mode.IDLE
            self.last_summary = e.summary
            self.teleopStep.emit("E-stop engaged: followers held" if e.reason == "estop" else
                                 "Stopped by an error: followers held" if e.reason == "error" else "Stopped")
        self.sessionEvent.emit(e)
        if isinstance(e, ev.Stopped):
            self.teleopFinished.emit(e.summary)

    def _on_tick(self, tick: Tick) -> None:
        # control thread: keep this to a couple of assignments
        self._latest = tick
        p = tick.period
        if p > self._max_period:
            self._max_period = p

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
        if self.session is not None:
            self.session.estop(reason)
        else:
            self.estopChanged.emit(True)

    def release_estop(self) -> None:
        if self.session is not None:
            self.session.release_estop()
        else:
            self.estopChanged.emit(False)

    def any_state(self) -> dict[str, Any]:
        return {"connected": self.connected, "teleop": self.state, "estop": self.estopped}
