"""Recording sessions: episodes of a fixed length with countdown and reset periods, driven by one event stream.

Key events (next, re-record, stop, segment mark) come from any front end - the CLI keyboard, the GUI, foot
pedals - through one thread-safe `EventStream`. The session handles them inside the control loop's listener
(cheap), so a key press takes effect on the next tick. It runs on the `RigSession`'s control thread, reports
through typed events (`workbench.events`), and re-aligns followers to leaders before every episode.
"""
from __future__ import annotations

import enum
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

from drivers.arm import BIMANUAL_JOINT_NAMES
from recorder.quality import QualityThresholds
from recorder.rig_info import RigInfo, gripper_dict
from recorder.store import DatasetStore
from recorder.finalize import RecorderError, SavedEpisode
from recorder.writer import EpisodeWriter
from workbench import events as ev
from workbench.config import RigConfig
from workbench.control import ControlLoop
from workbench.sources import LeaderSource
from workbench.teleop import align_to_leaders

log = logging.getLogger(__name__)


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


DEFAULT_EPISODE_S = 10.0  # one default for `workbench record` and the Record tab


@dataclass
class SessionSettings:
    task: str
    episodes: int
    episode_s: float = DEFAULT_EPISODE_S
    reset_s: float = 5.0
    countdown_s: float = 3.0
    seed: int | None = None  # simulation: seed of the first episode (then +1 per episode); None: continue the dataset


def episode_rig_info(config: RigConfig, cameras: list[str] | None = None) -> RigInfo:
    """What an episode records about its rig (recorder.rig_info.RigInfo) so that training never reads rig files:
    name, backend, control rate, cameras (the recorded ones; default: the rig's), joint layout and gripper
    normalization constants."""
    return RigInfo(name=config.name, backend=config.backend, control_hz=float(config.control_hz),
                   cameras=tuple(cameras if cameras is not None else (c.name for c in config.cameras)),
                   joint_names=BIMANUAL_JOINT_NAMES, gripper_set=config.gripper_set,
                   gripper=gripper_dict(config.gripper))


SEED_CLAIMS = ".sim_seeds"  # in the dataset folder: one file per simulation seed a recording session took


def claimed_sim_seeds(store: DatasetStore) -> list[int]:
    """Seeds recording sessions claimed in this dataset (claim_sim_seed), recorded or not."""
    folder = store.root / SEED_CLAIMS
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def next_sim_seed(store: DatasetStore) -> int:
    """One past the highest simulation seed in the dataset (trash included) or claimed by a recording session, so
    a new session never repeats a demonstration an earlier session recorded (or one still recording takes)."""
    from recorder.reader import read_info

    top = max(claimed_sim_seeds(store), default=-1)
    for e in store.list(include_deleted=True):
        try:
            seed = read_info(store.path(e.name, include_deleted=True)).sim_seed
        except Exception as exc:  # noqa: BLE001 - a damaged file has no seed to avoid
            log.warning("no seed from %s: %s", e.name, exc)
            continue
        if seed is not None:
            top = max(top, seed)
    return top + 1


def claim_sim_seed(store: DatasetStore, start: int | None = None) -> int:
    """A simulation seed for one episode that no other session on this dataset uses: the first seed from `start`
    (default: next_sim_seed) nobody claimed, claimed atomically by creating `<dataset>/.sim_seeds/<seed>` with
    O_CREAT | O_EXCL. Two sessions (threads or processes, one machine or a shared folder) asking at once get
    different seeds: one creates the file, the other finds it and takes the next."""
    folder = store.root / SEED_CLAIMS
    folder.mkdir(parents=True, exist_ok=True)
    seed = next_sim_seed(store) if start is None else int(start)
    while True:
        try:
            fd = os.open(folder / str(seed), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            seed += 1
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"pid {os.getpid()} at {time.time():.3f}\n")
        return seed


class RecordingSession:
    def __init__(self, rig, store: DatasetStore, settings: SessionSettings, events: EventStream | None = None,
                 emit: Callable[[ev.RigEvent], None] = lambda e: None):
        self.rig, self.store, self.s = rig, store, settings
        self.events = events or EventStream()
        self.emit = emit
        self.saved: list[SavedEpisode] = []
        self._stop_session = False
        self.current: EpisodeWriter | None = None  # the episode being recorded
        sim = rig.sim is not None
        # simulation: a concrete seed per episode (replays recreate the scene): the given ones, else seeds claimed
        # one episode at a time from the dataset's (two sessions on one dataset never record the same scene)
        self._claim = sim and settings.seed is None
        self.base_seed = settings.seed if settings.seed is not None else (claim_sim_seed(store) if sim else 0)
        self.seeds: list[int] = [self.base_seed] if sim else []  # per episode number (a re-record keeps its seed)

    def _say(self, text: str) -> None:
        self.emit(ev.StepMessage(text))

    def _seed(self, k: int) -> int:
        """Episode k's simulation seed: the given seeds count on; claimed ones are claimed when first needed."""
        while len(self.seeds) <= k:
            nxt = self.seeds[-1] + 1
            self.seeds.append(claim_sim_seed(self.store, nxt) if self._claim else nxt)
        return self.seeds[k]

    def _writer(self) -> EpisodeWriter:
        cfg = self.rig.config
        cameras = list(self.rig.cameras)
        return self.store.new_episode(
            cameras, task=self.s.task, rig_config=cfg.text, rig_info=episode_rig_info(cfg, cameras),
            sim=self.rig.sim is not None, sim_seed=None if self.rig.sim is None else self.rig.sim.seed,
            control_hz=cfg.control_hz, thresholds=QualityThresholds.from_mapping(dict(cfg.quality)))

    def _wait(self, seconds: float, what: str, phase: ev.Phase, stop: threading.Event) -> None:
        """Real rigs: countdown / reset time (NEXT skips it). Simulation needs no waiting."""
        if self.rig.sim is not None or seconds <= 0:
            return
        self.emit(ev.PhaseChanged(phase))
        end = time.monotonic() + seconds
        shown = None
        while (left := end - time.monotonic()) > 0 and not stop.is_set():
            if shown != int(left + 0.999):
                shown = int(left + 0.999)
                self.emit(ev.Countdown(what, left))
            e = self.events.wait(min(left, 0.1))
            if e and e.kind == SessionEvent.NEXT:
                return
            if e and e.kind == SessionEvent.STOP:
                self._stop_session = True
                return

    def run(self, loop: ControlLoop, stop: threading.Event) -> list[SavedEpisode]:
        """Record until the episode count, a STOP key event or `stop` (the session's stop, set once)."""
        steps = int(round(self.s.episode_s * self.rig.config.control_hz))
        k = 0
        sim = self.rig.sim is not None
        while k < self.s.episodes and not self._stop_session and not stop.is_set():
            seed = self._seed(k) if sim else None
            self.rig.begin_episode(seed)  # a concrete seed per episode: replays recreate the scene
            self._wait(self.s.countdown_s, f"episode {k + 1}/{self.s.episodes} starts in", ev.Phase.COUNTDOWN, stop)
            if self._stop_session or stop.is_set():
                break
            self.emit(ev.PhaseChanged(ev.Phase.ALIGNING))
            if not align_to_leaders(self.rig, stop, self._say):
                break
            self.events.drain()  # presses during the countdown do not end the new episode
            writer = self._writer()
            self.current = writer  # read by a GUI for the episode timer (its step count)
            rerecord = False

            def listener(tick, writer=writer):
                nonlocal rerecord
                writer.append(tick)
                for e in self.events.drain():
                    if e.kind == SessionEvent.MARK:
                        writer.mark_segment(e.label)
                    else:
                        rerecord = e.kind == SessionEvent.RERECORD
                        self._stop_session |= e.kind == SessionEvent.STOP
                        loop.request_stop()

            loop.add_listener(listener)
            self.emit(ev.EpisodeStarted(k + 1, self.s.episodes, writer.name, seed))
            self.emit(ev.PhaseChanged(ev.Phase.RUNNING))
            try:
                loop.run(LeaderSource(), steps=steps, stop=stop)
            except RecorderError:
                loop.remove_listener(listener)
                self._stop_session = True
                raise
            except BaseException:
                loop.remove_listener(listener)
                writer.discard() if writer.steps == 0 else writer.stop()
                raise
            loop.remove_listener(listener)
            self.current = None
            if rerecord or writer.steps == 0:
                writer.discard()
                self.emit(ev.EpisodeDiscarded(writer.name, rerecord=rerecord))
                if rerecord:
                    continue
                break
            success = self.rig.success()
            if success is not None:
                writer.set_outcome("success" if success else "failure")
            if writer.steps < steps and (stop.is_set() or self.rig.safety.estopped):
                # ended by the session's stop (operator, window closed) or the e-stop, not by its length or NEXT
                why = "the e-stop" if self.rig.safety.estopped else "a stop"
                writer.set_outcome(writer.header.get("outcome", "unlabeled"),
                                   notes=f"partial episode: ended by {why} after {writer.steps} of {steps} steps")
            saved = writer.stop()
            self.saved.append(saved)
            self.emit(ev.EpisodeSaved(saved, "unlabeled" if success is None else ("success" if success else "failure")))
            k += 1
            if self.rig.safety.estopped:
                break
            if k < self.s.episodes and not self._stop_session and not stop.is_set():
                self._wait(self.s.reset_s, "reset the scene", ev.Phase.RESET, stop)
        return self.saved
