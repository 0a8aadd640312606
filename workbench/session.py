"""The RigSession owns a connected rig: one mode at a time (idle, teleop, recording, replay, trial), the start-up /
run / shutdown sequences, the e-stop fan-out, parking on close, and typed events for every front end.

The GUI (through a thin Qt adapter) and the CLI drive the arms only through this object, so what happens on
stop, e-stop, error and exit is decided here, once:
- stop(): the running mode ends once, cleanly (a recording keeps its current episode and records no more);
- e-stop: the loop stops within one tick, the followers hold, no shutdown sequence runs afterwards (it would
  open the grippers and drop what they hold); they hold until the operator releases the e-stop and decides;
- an error: the followers hold, the error is reported as a `SessionError` event and kept in `last_error`;
- close(): the followers go to the sleep pose through the safety layer, then torque off; "torque off here"
  only when asked for explicitly.
Modes run one after another on the session's one control thread (its GL contexts for simulated cameras, its
real-time priority); `wait()` waits for the running mode (the CLI), events report it (the GUI).
"""
from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from drivers.errors import DriverError, SafetyError
from workbench import events as ev
from workbench.control import ActionSource, ControlLoop, Listener, LoopStopped
from workbench.events import Mode, Phase
from workbench.rig import Rig
from workbench.sources import LeaderSource
from workbench.teleop import align_to_leaders, park, shutdown, startup

if TYPE_CHECKING:
    from workbench.recording import RecordingSession

log = logging.getLogger(__name__)


class SessionBusy(RuntimeError):
    """A mode was asked for while another one drives the arms."""


class ParkRefused(SafetyError):
    """Close was asked while the e-stop is engaged: the followers cannot move to the sleep pose."""


class RigSession:
    def __init__(self, rig: Rig):
        self.rig = rig
        self.loop = ControlLoop(rig)
        self.mode = Mode.IDLE
        self.phase = Phase.IDLE
        self.last_error: BaseException | None = None
        self.result: Any = None  # what the last mode returned (timing summary, saved episodes, replay result)
        self.recording = None  # the running workbench.recording.RecordingSession (GUI: episode timer, events)
        self._subscribers: list[ev.Subscriber] = []
        self._jobs: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._tick_listeners: list[Listener] = []
        self._on_stop: Callable[[], None] | None = None  # the running job's stop hook (start_job)
        rig.safety.on_estop(lambda engaged, reason: self._emit(ev.EstopChanged(engaged, reason)))

    # -- events -----------------------------------------------------------------------------------------
    def subscribe(self, fn: ev.Subscriber) -> None:
        self._subscribers.append(fn)

    def unsubscribe(self, fn: ev.Subscriber) -> None:
        if fn in self._subscribers:
            self._subscribers.remove(fn)

    def emit(self, event: ev.RigEvent) -> None:
        """Publish an event to the subscribers: for a job run on the control thread (`start_job`), so its events
        reach every front end the same way the session's own do."""
        self._emit(event)

    def _emit(self, event: ev.RigEvent) -> None:
        if isinstance(event, ev.PhaseChanged):
            self.phase = event.phase
        for fn in list(self._subscribers):
            try:
                fn(event)
            except Exception as exc:  # noqa: BLE001 - a front end's bug never stops the arms' sequence
                log.error("session subscriber failed on %s: %s", type(event).__name__, exc)

    def _say(self, text: str) -> None:
        self._emit(ev.StepMessage(text))

    def add_tick_listener(self, fn: Listener) -> None:
        """Per-tick listeners (the GUI's latest-tick slot) for every run of every mode."""
        self._tick_listeners.append(fn)
        self.loop.add_listener(fn)

    def remove_tick_listener(self, fn: Listener) -> None:
        if fn in self._tick_listeners:
            self._tick_listeners.remove(fn)
        self.loop.remove_listener(fn)

    # -- state ------------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    @property
    def estopped(self) -> bool:
        return self.rig.safety.estopped

    # -- modes ------------------------------------------------------------------------------------------
    def start_teleop(self, wait_for_squeeze: bool = True, seed: int | None = None,
                     squeeze_timeout: float | None = None, steps: int | None = None) -> None:
        """Start-up sequence, then the followers copy the leaders until stop(); then the shutdown sequence."""
        self.rig.require_leaders("teleoperation")

        def run(stop: threading.Event):
            if self.rig.sim is not None:
                self.rig.begin_episode(seed if seed is not None else self.rig.config.sim.seed)
            if not self._startup(stop, wait_for_squeeze, squeeze_timeout):
                return None
            self._emit(ev.PhaseChanged(Phase.RUNNING))
            return self.loop.run(LeaderSource(), steps=steps, stop=stop)

        self._start(Mode.TELEOP, run, "Teleoperation", ceremony=True)

    def start_recording(self, store, settings, events=None, wait_for_squeeze: bool = True,
                        squeeze_timeout: float | None = None) -> "RecordingSession":
        """A recording session (workbench.recording) after the start-up sequence; key events through `events`.
        Returns it (its `current` writer times the episode in a GUI)."""
        from workbench.recording import RecordingSession

        self.rig.require_leaders("recording")
        # before the start-up moves the arms: one episode and the recorder's reserve must fit (StoreError says so)
        store.require_space(int(settings.episode_s * self.rig.config.control_hz) + 1, len(self.rig.cameras),
                            "an episode")
        session = RecordingSession(self.rig, store, settings, events, emit=self._emit)

        def run(stop: threading.Event):
            self.recording = session
            try:
                self.rig.begin_episode(session.base_seed)  # the scene (and demonstrator, in sim) of episode 1
                if not self._startup(stop, wait_for_squeeze, squeeze_timeout):
                    return session.saved
                return session.run(self.loop, stop)
            finally:
                self.recording = None

        self._start(Mode.RECORDING, run, "Recording", ceremony=True)
        return session

    def start_replay(self, path: Path | str, record_to=None) -> None:
        """Replay an episode's actions (optionally recorded into the DatasetStore `record_to`); afterwards the
        followers hold the last pose (no shutdown sequence)."""
        from workbench.replay import replay

        def run(stop: threading.Event):
            self._emit(ev.PhaseChanged(Phase.STARTING))
            result = replay(self.rig, self.loop, path, stop, progress=self._say, record_to=record_to)
            self._emit(ev.ReplayFinished(result))
            return result

        self._start(Mode.REPLAY, run, "Replay", ceremony=False)

    def start_source(self, source: ActionSource, mode: Mode = Mode.TRIAL, steps: int | None = None,
                     align: bool = False) -> None:
        """Any action source through the loop. The followers hold afterwards."""

        def run(stop: threading.Event):
            for name in self.rig.follower_names:
                self.rig.safety.set_torque(name, True, True)
            if align and not align_to_leaders(self.rig, stop, self._say):
                return None
            self._emit(ev.PhaseChanged(Phase.RUNNING))
            return self.loop.run(source, steps=steps, stop=stop)

        self._start(mode, run, mode.value.capitalize(), ceremony=False)

    def start_job(self, body: Callable[[ControlLoop, threading.Event], Any], mode: Mode = Mode.TRIAL,
                  context: str | None = None, on_stop: Callable[[], None] | None = None) -> None:
        """Run `body(loop, stop)` on the control thread as mode `mode`: a sequence of loop runs that a service
        drives (policy trials: start pose, one loop run per rollout), without the session knowing what it is.
        `stop` is set by `stop()` and the e-stop, which also call `on_stop` (a job waiting on its own events wakes
        up). Errors are handled as every mode's: the followers hold and a SessionError is emitted; no shutdown
        sequence runs afterwards (the followers hold). What `body` returns becomes `result`."""

        def run(stop: threading.Event):
            return body(self.loop, stop)

        self._start(mode, run, context or mode.value.capitalize(), ceremony=False, on_stop=on_stop)

    def _startup(self, stop: threading.Event, wait_for_squeeze: bool, squeeze_timeout: float | None) -> bool:
        self._emit(ev.PhaseChanged(Phase.STARTING))

        def step(text: str) -> None:
            if text.startswith("Squeeze"):
                self._emit(ev.PhaseChanged(Phase.WAITING_FOR_SQUEEZE))
            self._say(text)

        if not startup(self.rig, stop, step, wait_for_squeeze, squeeze_timeout):
            return False
        self._emit(ev.PhaseChanged(Phase.ALIGNING))
        return align_to_leaders(self.rig, stop, self._say)

    def _start(self, mode: Mode, body: Callable[[threading.Event], Any], context: str, ceremony: bool,
               on_stop: Callable[[], None] | None = None) -> None:
        with self._lock:
            if self.busy:
                raise SessionBusy(f"{self.mode.value} is running: stop it first")
            if self.estopped:
                raise SafetyError("the e-stop is engaged: release it first")
            if not self.rig.connected:
                raise DriverError("the rig is not connected")
            self._stop = threading.Event()
            self.mode, self.last_error, self.result = mode, None, None
            self._on_stop = on_stop
            self._idle.clear()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="control", daemon=True)
                self._worker.start()
            self._emit(ev.ModeChanged(mode))
            self._jobs.put((mode, body, context, ceremony, self._stop))

    def _work(self) -> None:
        """The control thread: runs modes until close(); then frees the GL contexts it made (sim cameras)."""
        while (job := self._jobs.get()) is not None:
            try:
                self._run(*job)
            finally:
                self._idle.set()
        if self.rig.sim is not None:
            self.rig.sim.renders.close()  # this thread's renderers, freed in the thread that owns them

    def _run(self, mode: Mode, body, context: str, ceremony: bool, stop: threading.Event) -> None:
        reason, held = "done", False
        try:
            self.result = body(stop)
        except BaseException as exc:  # noqa: BLE001 - reported as an event; the followers hold
            self.last_error = exc
            held = True
            try:
                self.rig.safety.hold()
            except Exception as hold_exc:  # noqa: BLE001
                log.error("could not hold the followers: %s", hold_exc)
            if not self.estopped:
                reason = "error"
                self._emit(ev.SessionError(exc, context))
        finally:
            if self.estopped:
                reason, held = "estop", True
            elif reason == "done" and stop.is_set():
                reason = "operator"
            if ceremony and not held and self.rig.connected:
                self._emit(ev.PhaseChanged(Phase.STOPPING))
                try:
                    shutdown(self.rig, self._say)
                except Exception as exc:  # noqa: BLE001
                    held = True
                    self.last_error = exc
                    self._emit(ev.SessionError(exc, f"{context} shutdown"))
            summary = self.loop.timing.summary() if self.loop.timing.ticks else None
            self.mode = Mode.IDLE
            self._on_stop = None
            self._emit(ev.PhaseChanged(Phase.IDLE))
            self._emit(ev.Stopped(mode, reason, summary, held))
            self._emit(ev.ModeChanged(Mode.IDLE))
            self.loop = self._fresh_loop()

    def _fresh_loop(self) -> ControlLoop:
        """Each run gets its own timing statistics; tick indices continue."""
        loop = ControlLoop(self.rig)
        loop.tick_index = self.loop.tick_index
        for fn in self._tick_listeners:
            loop.add_listener(fn)
        return loop

    # -- stopping ---------------------------------------------------------------------------------------
    def stop(self) -> None:
        """End the running mode once, cleanly (it runs its shutdown sequence unless the e-stop is engaged)."""
        self._stop.set()
        self._call_stop_hook()
        self.loop.request_stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running mode to end; True when none runs. Ctrl-C here stops the mode (and holds)."""
        try:
            return self._idle.wait(timeout)
        except KeyboardInterrupt:
            self.stop()
            self.rig.safety.hold()
            self._idle.wait(10.0)
            raise

    def estop(self, reason: str = "operator") -> None:
        """From any thread: lands between two ticks; followers hold (or torque off, per the rig file)."""
        self._stop.set()
        self.rig.safety.estop(reason)
        self.loop.request_stop()
        self._call_stop_hook()

    def _call_stop_hook(self) -> None:
        hook = self._on_stop
        if hook is not None:
            try:
                hook()
            except Exception as exc:  # noqa: BLE001 - stopping the loop matters more than a job's hook
                log.error("stop hook failed: %s", exc)

    def release_estop(self) -> None:
        self.rig.safety.release()

    def close(self, torque_off_here: bool = False, progress: Callable[[str], None] | None = None) -> None:
        """Stop, park the followers at the sleep pose through the safety layer, then torque off and disconnect.
        With the e-stop engaged parking is impossible: ParkRefused, unless `torque_off_here` (the operator's
        explicit choice: the followers go limp where they stand)."""
        say = progress or self._say
        self.stop()
        if not self.wait(15.0):
            log.error("the control thread did not stop within 15 s; holding and disconnecting anyway")
            self.rig.safety.hold()
        self._end_worker()
        if self.rig.connected and not torque_off_here:
            if self.estopped:
                raise ParkRefused("the e-stop is engaged, so the followers cannot move to the sleep pose: release "
                                  "the e-stop to park them, or choose 'torque off here' (they go limp where they stand)")
            try:
                park(self.rig, say)
            except DriverError as exc:
                log.error("parking failed (%s); holding, then torque off", exc)
                self.rig.safety.hold()
        say("Torque off and disconnecting")
        self.rig.disconnect()

    def _end_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None and worker.is_alive():
            self._jobs.put(None)
            worker.join(5.0)

    def __enter__(self) -> "RigSession":
        if not self.rig.connected:
            self.rig.connect()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.close(torque_off_here=self.estopped)
        except ParkRefused:
            self.rig.disconnect()


def describe_stop(event: ev.Stopped) -> str:
    """One line for the CLI and the status bar."""
    what = {"done": "finished", "operator": "stopped by the operator", "estop": "stopped by the e-stop: followers "
            "held", "error": "stopped by an error: followers held"}[event.reason]
    return f"{event.mode.value} {what}"


__all__ = ["RigSession", "SessionBusy", "ParkRefused", "LoopStopped", "describe_stop"]
