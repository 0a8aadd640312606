"""Replay a recorded episode's actions onto the follower arms (sim, virtual or real), through the safety layer.

The recorded `action` is the leader reading (ALOHA convention), so replaying it is exactly what the followers
were asked to do. In simulation the episode's seed recreates the scene first, so a replay can be judged by the
task's success signal.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from drivers.arm import ARM_DOF, SIDES
from recorder.reader import EpisodeReader
from workbench.rig import Rig
from workbench.timing import Pacer


class ReplayError(ValueError):
    """The episode cannot be replayed on this rig (wrong action size, no steps)."""


@dataclass(frozen=True)
class ReplayResult:
    steps: int  # ticks commanded
    tracking_median_rad: float  # follower vs replayed action, arm joints, after the first 10 ticks
    tracking_max_rad: float
    clamped: int  # commands the safety layer had to clamp
    success: bool | None  # simulation only
    stopped: bool  # stopped early by the operator


def replay_episode(rig: Rig, path: Path | str, *, progress: Callable[[str], None] = print,
                   stop: threading.Event | None = None, approach_s: float = 2.0) -> ReplayResult:
    stop = stop or threading.Event()
    with EpisodeReader(path) as reader:
        actions = np.asarray(reader.action, dtype=np.float64)
        info = reader.info
    if actions.ndim != 2 or actions.shape[1] != 2 * ARM_DOF or len(actions) == 0:
        raise ReplayError(f"{path}: actions of shape {actions.shape} cannot drive two {ARM_DOF}-value arms")
    hz = rig.config.control_hz
    if info.control_hz and abs(info.control_hz - hz) > 1e-6:
        progress(f"note: recorded at {info.control_hz:g} Hz, replaying at the rig's {hz:g} Hz")
    if rig.sim is not None:
        rig.begin_episode(info.sim_seed)
        progress(f"simulation reset with the episode's seed {info.sim_seed}")
    safety = rig.safety
    names = [rig.followers[s].name for s in SIDES]
    for s in SIDES:
        rig.followers[s].set_torque(True, True)
    clamped0 = safety.clamped_ticks
    progress(f"moving the followers to the first pose of {Path(path).name} ({approach_s:.1f} s)")
    safety.move_to({n: actions[0, i * ARM_DOF:(i + 1) * ARM_DOF] for i, n in enumerate(names)},
                   approach_s, rig.clock, hz, stop.is_set)
    progress(f"replaying {len(actions)} steps")
    errors: list[float] = []
    joints = np.r_[0:6, 7:13]
    pacer = Pacer(rig.clock, hz)
    pacer.start()
    n = 0
    try:
        for n in range(len(actions)):
            if stop.is_set() or safety.estopped:
                break
            for i, name in enumerate(names):
                safety.command(name, actions[n, i * ARM_DOF:(i + 1) * ARM_DOF])
            if n >= 10:
                q = rig.observe()["qpos"]
                errors.append(float(np.abs(q[joints] - actions[n - 1, joints]).max()))
            pacer.wait()
        else:
            n = len(actions)
    except BaseException:
        safety.hold()
        raise
    success = rig.success()
    e = np.asarray(errors) if errors else np.array([np.nan])
    return ReplayResult(steps=n, tracking_median_rad=float(np.median(e)), tracking_max_rad=float(e.max()),
                        clamped=safety.clamped_ticks - clamped0, success=success,
                        stopped=n < len(actions))
