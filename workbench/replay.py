"""Replay a recorded episode's actions on the follower arms (sim, virtual or real) through the control loop.

The recorded `action` is what the followers were asked to do (the leader reading in teleop), so replaying it
through the same loop, safety layer and timing as teleop reproduces the episode. In simulation the episode's
seed recreates the scene first, so a replay can be judged by the task's success signal.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from drivers.arm import ARM_JOINT_COLUMNS, arm_slice
from recorder.reader import EpisodeReader
from workbench.control import ControlLoop
from workbench.rig import Rig
from workbench.sources import ReplaySource
from workbench.timing import TimingSummary


class ReplayError(ValueError):
    """The episode cannot be replayed on this rig (wrong action size, no steps)."""


@dataclass(frozen=True)
class ReplayResult:
    steps: int  # ticks commanded
    tracking_median_rad: float  # follower vs replayed action, arm joints, after the first 10 ticks
    tracking_max_rad: float
    clamped: int  # commands the safety layer had to clamp
    success: bool | None  # simulation only
    stopped: bool  # stopped early (operator, e-stop)
    timing: TimingSummary | None = None


def load_replay(path: Path | str, rig: Rig) -> tuple[ReplaySource, int | None]:
    """The episode's actions as a source, and its simulation seed. Raises ReplayError if it cannot drive `rig`."""
    with EpisodeReader(path) as reader:
        actions = np.asarray(reader.action, dtype=np.float64)
        info = reader.info
    try:
        source = ReplaySource(actions)
    except ValueError as exc:
        raise ReplayError(f"{path}: {exc}") from None
    if info.control_hz and abs(info.control_hz - rig.config.control_hz) > 1e-6:
        raise ReplayError(f"{path}: recorded at {info.control_hz:g} Hz, but rig {rig.config.name!r} runs at "
                          f"{rig.config.control_hz:g} Hz; replay it on a rig with the same control_hz")
    return source, info.sim_seed


def replay(rig: Rig, loop: ControlLoop, path: Path | str, stop: threading.Event,
           progress: Callable[[str], None] = print, approach_s: float = 2.0, record_to=None) -> ReplayResult:
    """Reset the scene (sim), bring the followers to the first pose slowly, then run the loop on the recording.
    `record_to` (a recorder DatasetStore): the replay is recorded as a new episode there, like teleop (e.g. to
    check that a recording reproduces, or to re-render it with other cameras)."""
    source, seed = load_replay(path, rig)
    actions = source.actions
    if rig.sim is not None:
        rig.begin_episode(seed)
        progress(f"Simulation reset with the episode's seed {seed}")
    safety = rig.safety
    for name in rig.follower_names:
        safety.set_torque(name, True, True)
    clamped0 = safety.clamped_ticks
    progress(f"Moving the followers to the first pose of {Path(path).name} ({approach_s:.1f} s)")
    first = {n: actions[0, arm_slice(i)] for i, n in enumerate(rig.follower_names)}
    if not safety.move_to(first, approach_s, rig.clock, rig.config.control_hz, stop.is_set):
        return ReplayResult(0, float("nan"), float("nan"), 0, rig.success(), True)
    progress(f"Replaying {len(actions)} steps")
    errors: list[float] = []
    joints = list(ARM_JOINT_COLUMNS)

    def track(tick) -> None:
        k = source.index - 1  # the action sent this tick
        if k >= 10:  # the follower answers a command one tick later
            errors.append(float(np.abs(tick.qpos[joints] - actions[k - 1, joints]).max()))

    writer = None
    if record_to is not None:
        from recorder.quality import QualityThresholds

        with EpisodeReader(path) as reader:
            task = reader.info.task
        cfg = rig.config
        writer = record_to.new_episode(list(rig.cameras), task=task, rig_config=cfg.text, sim=rig.sim is not None,
                                       sim_seed=seed if rig.sim is not None else None, control_hz=cfg.control_hz,
                                       thresholds=QualityThresholds.from_mapping(dict(cfg.quality)))
        writer.set_outcome("unlabeled", notes=f"replay of {Path(path).name}")
        loop.add_listener(writer.append)
    loop.add_listener(track)
    try:
        summary = loop.run(source, stop=stop)
    except BaseException:
        if writer is not None:
            writer.discard() if writer.steps == 0 else writer.stop()
        raise
    finally:
        loop.remove_listener(track)
        if writer is not None:
            loop.remove_listener(writer.append)
    if writer is not None:
        success = rig.success()
        if success is not None:
            writer.set_outcome("success" if success else "failure")
        saved = writer.stop()
        progress(f"Replay recorded as {saved.path.name} ({saved.steps} steps)")
    e = np.asarray(errors) if errors else np.array([np.nan])
    return ReplayResult(steps=source.index, tracking_median_rad=float(np.median(e)), tracking_max_rad=float(e.max()),
                        clamped=safety.clamped_ticks - clamped0, success=rig.success(),
                        stopped=source.index < len(actions), timing=summary)
