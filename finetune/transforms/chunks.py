"""Action chunks: the next H actions from step t, with a padding mask where the chunk runs past the episode end."""
from __future__ import annotations

import numpy as np


def chunk_indices(t: int | np.ndarray, length: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (step indices [..., H], is_pad [..., H]). Steps past the end repeat the last action (finite values the
    loss then ignores through is_pad)."""
    if length < 1:
        raise ValueError("an episode needs at least one step")
    steps = np.asarray(t)[..., None] + np.arange(horizon)
    return np.minimum(steps, length - 1), steps >= length


def action_chunk(actions: np.ndarray, t: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """actions [T, D] -> (chunk [H, D], is_pad [H]) starting at step t."""
    idx, pad = chunk_indices(t, len(actions), horizon)
    return np.asarray(actions)[idx], pad
