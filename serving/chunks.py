"""The request and reply of an action-chunk policy, as the robot side sees them: one observation in (rig units), one
action chunk out. serving.client.RemotePolicy takes and gives these; the control side's `ChunkPolicy` contract
(workbench.deploy.chunk_policy) is written in them. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np


@dataclass(frozen=True)
class ChunkRequest:
    state: np.ndarray  # (14,) follower joints, rig units, at the observation
    images: Mapping[str, np.ndarray]  # rig camera name -> HxWx3 uint8
    prompt: str
    step: int  # the trial tick index of the observation (a replay policy looks its chunk up by it)
    # Real-time chunking (Black et al. 2025): rig-unit actions the new chunk must continue, aligned so that
    # prefix[i] is the action planned for tick `step + i`; the first `delay` of them execute before the new chunk
    # arrives (frozen), the rest are a soft guide. None: plain sampling.
    prefix: np.ndarray | None = None
    delay: int = 0
    seed: int | None = None


@dataclass(frozen=True)
class ChunkReply:
    actions: np.ndarray  # (H, 14) rig units; actions[i] is meant for tick request.step + i
    infer_ms: float  # the model's time (server side)
    roundtrip_ms: float  # request sent -> reply decoded, as the control side saw it
    timing: Mapping[str, float] = field(default_factory=dict)


__all__ = ["ChunkReply", "ChunkRequest"]
