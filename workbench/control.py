"""The one control loop: every tick asks an action source what the followers should do, sends it through the
safety layer, and hands a `Tick` to the listeners (recorder, GUI slot, statistics).

Teleop, replay, holding and (later) policies differ only in their `ActionSource`; pacing, real-time priority,
timing statistics, error handling and recording are the loop's, once. Listeners run on the control thread and
must be cheap; heavy work (encoding, plotting, inference) happens elsewhere.
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from drivers.cameras.base import Frame
from drivers.errors import CameraError, DriverError, SafetyError, ServoHardwareError
from workbench.rig import Observation, Rig
from workbench.timing import LoopTiming, Pacer, TimingSummary, elevated_priority

log = logging.getLogger(__name__)


@dataclass
class Tick:
    index: int
    t: float  # rig clock at the start of the tick (monotonic on hardware, sim time in simulation)
    t_wall: float
    qpos: np.ndarray  # (14,) followers, ALOHA space [left 6 joints, left gripper, right 6, right gripper]
    qvel: np.ndarray
    effort: np.ndarray
    action: np.ndarray  # (14,) what the source asked for: the recorded action (leader reading in teleop)
    command: np.ndarray  # (14,) what the safety layer sent to the followers
    frames: dict[str, Frame]
    phase: str | None = None  # scripted demonstrator phase (simulation)
    hw_errors: list[str] = field(default_factory=list)  # servo faults seen this tick (the loop then stops)
    period: float = float("nan")
    source: str = ""  # name of the action source that produced `action` (teleop, replay, hold, policy...)


Listener = Callable[[Tick], None]


@runtime_checkable
class ActionSource(Protocol):
    """Answers one question per tick: what should the followers do, given this observation?

    `action` runs on the control thread inside the rig's I/O lock: it may read other arms (leaders) but must
    not block. Heavy sources (policies) prepare their actions elsewhere and only hand them over here.
    """

    name: str

    def start(self, rig: Rig, observation: Observation) -> None:
        """Called once on the control thread before the first tick."""

    def action(self, observation: Observation) -> np.ndarray:
        """(14,) ALOHA-space target for the followers this tick."""

    @property
    def done(self) -> bool:
        """True when the source has nothing more to say (a replay at its end); the loop then stops."""

    def stop(self) -> None:
        """Called once on the control thread after the last tick, whatever ended the run."""

    # Optional: `observe(tick)`, called on the control thread after the tick's frames were taken and before the
    # listeners. A policy source asks for its next chunk here: joints and frames of the same instant, as recorded.


class LoopStopped(RuntimeError):
    """The loop ended because of an error; the followers were brought to a safe stop (held) first."""


class ControlLoop:
    def __init__(self, rig: Rig):
        self.rig = rig
        self.safety = rig.safety
        self.listeners: list[Listener] = []
        self.timing = LoopTiming(rig.config.control_hz)
        self._stop = threading.Event()
        self.tick_index = 0
        self.running = False
        self._last: Tick | None = None
        self.priority = "normal"  # the CPU priority the last run got (see workbench.timing.elevated_priority)

    def add_listener(self, fn: Listener) -> None:
        self.listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        if fn in self.listeners:
            self.listeners.remove(fn)

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def run(self, source: ActionSource, steps: int | None = None,
            stop: threading.Event | None = None) -> TimingSummary:
        """Drive the followers from `source` until `steps` ticks, `request_stop()`, `stop` (an owner's event, set
        perhaps before this run began), the source is done or the e-stop; on any error the followers hold first
        and the error propagates (drivers' as `LoopStopped`)."""
        # Everything alive now (the app, the rig, imported modules) leaves the collector's view: a full collection
        # holds the GIL for as long as it walks the heap (23 ms measured with the GUI up), a whole tick lost.
        gc.collect()
        gc.freeze()
        # a simulated clock never sleeps: real-time priority there would only starve the GUI
        realtime = self.rig.clock.realtime
        try:
            with elevated_priority(self.rig.config.rt_priority if realtime else 0, -10 if realtime else 0) as got:
                self.priority = got
                return self._run(source, steps, stop or threading.Event())
        finally:
            gc.unfreeze()  # what the run left behind is collectable again (between runs, off the loop's clock)

    def _run(self, source: ActionSource, steps: int | None, stop: threading.Event) -> TimingSummary:
        self._stop.clear()
        self.running = True
        rig, safety = self.rig, self.safety
        names = rig.follower_names
        safety.sync(names)
        source.start(rig, rig.observation())
        pacer = Pacer(rig.clock, rig.config.control_hz)
        pacer.start()
        n = 0
        try:
            while not self._stop.is_set() and not stop.is_set() and (steps is None or n < steps) and not source.done:
                if safety.estopped:
                    break
                try:
                    self._tick(source)
                except SafetyError:
                    if safety.estopped:  # the e-stop landed between reading and commanding: a clean stop
                        break
                    raise
                n += 1
                if (steps is not None and n >= steps) or source.done:
                    break
                pacer.wait()
        except ServoHardwareError as exc:
            self._safe_stop(exc)
            self._fault_tick(source, exc)
            raise LoopStopped(str(exc)) from exc
        except (DriverError, CameraError) as exc:
            self._safe_stop(exc)
            raise LoopStopped(f"the control loop stopped safely: {exc}") from exc
        except BaseException as exc:  # Ctrl-C, a listener bug: hold the followers, then let it propagate
            self._safe_stop(exc)
            raise
        finally:
            self.timing.skipped = pacer.skipped
            self.running = False
            try:
                source.stop()
            except Exception as exc:  # noqa: BLE001 - a source's cleanup never masks the loop's outcome
                log.error("action source %s: stop failed: %s", source.name, exc)
        return self.timing.summary()

    def _safe_stop(self, exc: BaseException) -> None:
        log.error("control loop stopping: %s", exc)
        try:
            self.safety.hold()
        except Exception as hold_exc:  # noqa: BLE001 - last resort, never mask the original error
            log.error("could not hold the followers: %s", hold_exc)

    def _fault_tick(self, source: ActionSource, exc: ServoHardwareError) -> None:
        """One last tick carrying the servo fault, so a recording stores it (quality check `servo_hw_errors`).
        A faulted servo answers every read with its error, so the tick repeats the last good readings."""
        last = self._last
        if last is None:
            return
        tick = dataclasses.replace(last, index=self.tick_index, t_wall=time.time(), hw_errors=[str(exc)],
                                   period=float("nan"))
        for fn in self.listeners:
            try:
                fn(tick)
            except Exception as listener_exc:  # noqa: BLE001 - the servo error still propagates
                log.error("listener failed on the fault tick: %s", listener_exc)
        self.tick_index += 1

    def _tick(self, source: ActionSource) -> Tick:
        rig = self.rig
        c0 = time.perf_counter()
        with self.safety.io_lock:
            b0 = time.perf_counter()
            obs = rig.observation(frames=False)
            b1 = time.perf_counter()
            s0 = time.perf_counter()
            action = np.asarray(source.action(obs), dtype=np.float64)
            s1 = time.perf_counter()  # a leader source reads its arms here: bus time, not own work
            sent = rig.command(action, present=obs.qpos)
            bus_write = self.safety.take_io_time()
        f0 = time.perf_counter()
        frames = {name: cam.latest() for name, cam in rig.cameras.items()}
        f1 = time.perf_counter()
        tick = Tick(index=self.tick_index, t=obs.t, t_wall=time.time(), qpos=obs.qpos, qvel=obs.qvel,
                    effort=obs.effort, action=action, command=sent, frames=frames, phase=rig.phase(),
                    source=source.name)
        tick.period = self.timing.record(obs.t, 0.0, 0.0)  # work filled in below
        self._last = tick
        observe = getattr(source, "observe", None)
        if observe is not None:
            observe(tick)
        for fn in self.listeners:
            fn(tick)
        total = time.perf_counter() - c0
        io = (b1 - b0) + (s1 - s0) + bus_write
        cams = f1 - f0
        self.timing.work[-1] = total - io - cams
        self.timing.io[-1] = io
        self.timing.camera[-1] = cams
        self.tick_index += 1
        return tick
