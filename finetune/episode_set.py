"""The episodes training reads, whatever their source: `Episode`, `EpisodeSet`, the `FrameReader` protocol and
`EpisodeDataError`. Both sources (finetune.episodes for our HDF5 folders, finetune.lerobot_source for LeRobot v3.0
datasets) produce these; finetune.episodes re-exports them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from recorder.rig_info import RigInfo


class EpisodeDataError(ValueError):
    """The selected episodes cannot be trained on as they are; the message says which and what to do."""


class NoEpisodesError(EpisodeDataError):
    """The selection is empty (nothing recorded, nothing labelled as asked, only trials): the fix is to label,
    widen the selection or record, not to repair files."""


class FrameReader(Protocol):
    def frames(self, episode: int, step: int) -> dict[str, np.ndarray]:
        """Rig camera name -> HxWx3 uint8 RGB frame of one step."""
        ...


@dataclass(frozen=True)
class Episode:
    """One selected episode: its small arrays in memory, its frames on disk."""

    id: str  # our episode name, or "episode_<i>" of a LeRobot dataset
    state: np.ndarray  # [T, D] follower joints, rig units
    actions: np.ndarray  # [T, D] leader joints = recorded actions, rig units
    task: str  # the episode's task prompt
    subtasks: tuple[str | None, ...] | None  # per step: the segment text covering it (None: no segment there)
    frame_tasks: tuple[str, ...] | None  # per step task strings (LeRobot stores one per frame), else None
    cameras: tuple[str, ...]
    control_hz: float | None
    rig_config: str = ""  # the rig TOML text the episode was recorded with ("" for imports / LeRobot)
    rig: RigInfo | None = None  # the rig facts the episode recorded (recorder.rig_info); None: older, imports, LeRobot
    outcome: str = "unlabeled"
    quality: str = "n/a"
    trial: bool = False  # a policy rollout (trial episode), not a demonstration
    corrections: tuple[tuple[int, int], ...] = ()  # trial: operator takeover spans [start, end) ("correction" lane)

    @property
    def length(self) -> int:
        return int(self.state.shape[0])

    def training_steps(self, trials: str = "exclude") -> tuple[np.ndarray, np.ndarray]:
        """(steps, ends): the steps that become training samples and, per sample, the exclusive end of its action
        targets. A demonstration, or a trial under trials="all": every step, targets up to the episode end. A trial
        under "corrections": only the steps inside its correction spans, and each chunk's targets end with its span
        (later targets are the policy's own actions after the hand-back: they are padding, no loss). A trial under
        "exclude": nothing."""
        if not self.trial or trials == "all":
            return np.arange(self.length), np.full(self.length, self.length)
        if trials != "corrections":
            return np.zeros(0, int), np.zeros(0, int)
        spans = [(max(0, s), min(e, self.length)) for s, e in self.corrections]
        spans = [(s, e) for s, e in spans if e > s]
        if not spans:
            return np.zeros(0, int), np.zeros(0, int)
        return (np.concatenate([np.arange(s, e) for s, e in spans]),
                np.concatenate([np.full(e - s, e) for s, e in spans]))

    def identity(self) -> str:
        """Content hash: the same episode copied elsewhere (rsync to a GPU host) keeps its identity."""
        h = hashlib.sha256()
        h.update(self.id.encode())
        h.update(np.ascontiguousarray(self.state, np.float32).tobytes())
        h.update(np.ascontiguousarray(self.actions, np.float32).tobytes())
        h.update(json.dumps([self.task, self.subtasks, self.frame_tasks, self.cameras]).encode())
        if self.trial:  # demonstrations keep the identity they had before trials existed
            h.update(json.dumps(["trial", self.corrections]).encode())
        return h.hexdigest()


@dataclass(frozen=True)
class EpisodeSet:
    source: str  # the resolved local folder
    kind: str  # "hdf5" or "lerobot"
    episodes: tuple[Episode, ...]
    frames: FrameReader
    skipped: tuple[str, ...] = ()  # "episode_7: truncated file", ... (damaged, left out)

    def ids(self) -> list[str]:
        return [e.id for e in self.episodes]
