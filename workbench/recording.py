"""Recording sessions: episodes of a fixed length with countdown and reset periods, driven by one event stream.

Events (next, re-record, stop, segment mark) come from any front end - the CLI keyboard now, the GUI and foot
pedals later - through one thread-safe `EventStream`. The session handles them inside the control loop's
listener (cheap), so a key press takes effect on the next tick.
"""
from __future__ import annotations

import enum
import os
import queue
import time
from dataclasses import dataclass
from typing import Callable

from recorder.quality import QualityThresholds
from recorder.store import DatasetStore
from recorder.writer import EpisodeWriter, RecorderError, SavedEpisode


class SessionEvent(enum.Enum):
    NEXT = "next"  # end the episode now and keep it
    RERECORD = "rerecord"  # discard the current episode and record it again
    STOP = "stop"  # keep the current episode and end the session
    MARK = "mark"  # segment boundary; label = text of the new segment ('' = close the open one)


@dataclass(frozen=True)
class Event:
    kind: SessionEvent
    label: str = ""


class EventStream:
    """Thread-safe queue every event source writes to."""

    def __init__(self) -> None:
        self._q: queue.Queue[Event] = queue.Queue()

    def put(self, kind: SessionEvent, label: str = "") -> None:
        self._q.put(Event(kind, label))

    def drain(self) -> list[Event]:
        out = []
        while True:
            try:
                out.append(self._q.get_nowait())
            except queue.Empty:
                return out

    def wait(self, timeout: float) -> Event | None:
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None


@dataclass
class SessionSettings:
    task: str
    episodes: int
    episode_s: float
    reset_s: float = 5.0
    countdown_s: float = 3.0
    seed: int | None = None  # simulation: seed of the first episode (then +1 per episode)


class RecordingSession:
    def __init__(self, rig, store: DatasetStore, settings: SessionSettings, events: EventStream | None = None,
                 progress: Callable[[str], None] = print):
        self.rig, self.store, self.s = rig, store, settings
        self.events = events or EventStream()
        self.progress = progress
        self.saved: list[SavedEpisode] = []
        self._stop_session = False
        self.current: EpisodeWriter | None = None  # the episode being recorded

    def _writer(self) -> EpisodeWriter:
        cfg = self.rig.config
        return self.store.new_episode(
            list(self.rig.cameras), task=self.s.task, rig_config=cfg.text, sim=self.rig.sim is not None,
            sim_seed=None if self.rig.sim is None else self.rig.sim.seed,
            control_hz=cfg.control_hz, thresholds=QualityThresholds.from_mapping(dict(cfg.quality)))

    def _wait(self, seconds: float, what: str) -> None:
        """Real rigs: countdown / reset time (NEXT skips it). Simulation needs no waiting."""
        if self.rig.sim is not None or seconds <= 0:
            return
        self.progress(f"{what}: {seconds:.0f} s (n = skip)")
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            ev = self.events.wait(min(left, 0.1))
            if ev and ev.kind == SessionEvent.NEXT:
                return
            if ev and ev.kind == SessionEvent.STOP:
                self._stop_session = True
                return

    def run(self, loop) -> list[SavedEpisode]:
        """Record with `loop` (a started workbench.teleop.TeleopLoop) until the episode count or a stop."""
        steps = int(round(self.s.episode_s * self.rig.config.control_hz))
        k = 0
        base_seed = self.s.seed if self.s.seed is not None else int.from_bytes(os.urandom(3), "little")
        while k < self.s.episodes and not self._stop_session:
            self.rig.begin_episode(base_seed + k)  # a concrete seed per episode: replays recreate the scene
            self._wait(self.s.countdown_s, f"episode {k + 1}/{self.s.episodes} starts in")
            if self._stop_session:
                break
            self.events.drain()  # presses during the countdown do not end the new episode
            writer = self._writer()
            self.current = writer  # read by a GUI for the episode timer (its step count)
            rerecord = False

            def listener(tick, writer=writer):
                nonlocal rerecord
                writer.append(tick)
                for ev in self.events.drain():
                    if ev.kind == SessionEvent.MARK:
                        writer.mark_segment(ev.label)
                    else:
                        rerecord = ev.kind == SessionEvent.RERECORD
                        self._stop_session |= ev.kind == SessionEvent.STOP
                        loop.request_stop()

            loop.add_listener(listener)
            self.progress(f"recording {writer.name} ({self.s.episode_s:.0f} s): n next, r re-record, q stop, "
                          f"1-9 segment label, s segment text")
            try:
                loop.run(steps=steps)
            except RecorderError as e:
                self.progress(f"error: {e}")
                self._stop_session = True
                loop.remove_listener(listener)
                break
            except BaseException:
                loop.remove_listener(listener)
                writer.discard() if writer.steps == 0 else writer.stop()
                raise
            loop.remove_listener(listener)
            if rerecord:
                writer.discard()
                self.progress(f"{writer.name} discarded; recording it again")
                continue
            success = self.rig.success()
            if success is not None:
                writer.set_outcome("success" if success else "failure")
            try:
                saved = writer.stop()
            except RecorderError as e:
                self.progress(f"error: {e}")
                break
            self.saved.append(saved)
            self.progress(f"saved {saved.path.name}: {saved.steps} steps, {saved.duration_s:.1f} s, outcome "
                          f"{'unlabeled' if success is None else ('success' if success else 'failure')}, "
                          f"saved {saved.save_latency_s:.2f} s after stop\n{saved.quality.format()}")
            k += 1
            if k < self.s.episodes and not self._stop_session:
                self._wait(self.s.reset_s, "reset the scene")
        return self.saved
