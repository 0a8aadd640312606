"""Normalization statistics from the training episodes, computed where pi0 sees the data: after the ALOHA -> pi0
conversion and the delta joints (over every step of every action chunk), before z-scoring and padding.

Near-constant dims (std below `min_std`) are the known cause of diverging fine-tunes: z-scoring multiplies any later
deviation by up to 1/eps (pi0.5's quantile normalization likewise divides by the q01..q99 range). They are refused
with the joint's name, or fixed (std 1, and q01/q99 at mean -/+ 1: the dim is only centred).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

import numpy as np

from finetune.episode_set import EpisodeDataError
from finetune.normalize import NormStats
from finetune.transforms.chunks import chunk_indices
from finetune.transforms.config import TransformConfig
from finetune.transforms.vectors import Chain, Vectors, pi_space_steps

log = logging.getLogger(__name__)
MIN_STD = 1e-3
QUANTILE_ROWS = 100_000  # rows per kind kept (seeded) for q01 / q99; mean and std use every row


class NearConstantError(EpisodeDataError):
    pass


class NearConstantWarning(UserWarning):
    pass


@dataclass(frozen=True)
class StatsResult:
    stats: dict[str, NormStats]  # {"state": ..., "actions": ...}
    fixed: tuple[str, ...]  # "state/left_shoulder" ... dims whose std was set to 1


class _Acc:
    def __init__(self, dim: int, seed: int) -> None:
        self.n = 0
        self.s = np.zeros(dim)
        self.ss = np.zeros(dim)
        self.samples: list[np.ndarray] = []
        self.rng = np.random.default_rng(seed)

    def add(self, rows: np.ndarray, budget: int) -> None:
        self.n += len(rows)
        self.s += rows.sum(0)
        self.ss += (rows * rows).sum(0)
        k = min(len(rows), budget)
        self.samples.append(rows[self.rng.choice(len(rows), k, replace=False)] if k < len(rows) else rows)

    def result(self) -> NormStats:
        if self.n == 0:
            raise ValueError("no data to compute normalization statistics from")
        mean = self.s / self.n
        std = np.sqrt(np.maximum(self.ss / self.n - mean * mean, 0.0))
        q = np.quantile(np.concatenate(self.samples), [0.01, 0.99], axis=0)
        return NormStats(mean, std, q[0], q[1])


def compute_norm_stats(episodes: Iterable[tuple[np.ndarray, np.ndarray]], cfg: TransformConfig, *,
                       dim_names: Sequence[str], low_std: Literal["error", "fix"] = "error",
                       min_std: float = MIN_STD, n_episodes: int | None = None, seed: int = 0) -> StatsResult:
    """episodes: (state [T, D], actions [T, D]) in rig units. Padded chunk steps are left out."""
    chain = Chain(tuple(pi_space_steps(cfg)))
    d = cfg.rig_dim
    st_acc, ac_acc = _Acc(d, seed), _Acc(d, seed + 1)
    budget = QUANTILE_ROWS // max(1, n_episodes or 1)
    for state, actions in episodes:
        idx, pad = chunk_indices(np.arange(len(state)), len(state), cfg.action_horizon)
        v = chain.forward(Vectors(np.asarray(state, np.float64), np.asarray(actions, np.float64)[idx]))
        st_acc.add(v.state, budget)
        ac_acc.add(v.actions[~pad], budget * 4)
    stats = {"state": st_acc.result(), "actions": ac_acc.result()}
    return _check_low_std(stats, dim_names, low_std, min_std)


def _check_low_std(stats: dict[str, NormStats], names: Sequence[str], low_std: str, min_std: float) -> StatsResult:
    low = {k: [i for i in np.flatnonzero(s.std < min_std)] for k, s in stats.items()}
    found = [f"{k}/{names[i]} (dim {i}, std {stats[k].std[i]:.2g})" for k, dims in low.items() for i in dims]
    if not found:
        return StatsResult(stats, ())
    what = ", ".join(found)
    if low_std == "error":
        raise NearConstantError(
            f"near-constant dims in the training data (std < {min_std:g}): {what}. Z-scoring them would blow up any "
            f"deviation at deployment (a known cause of diverging fine-tunes). Fix: select episodes in which these "
            f"joints move, or set low_std='fix' (DataConfig) to only centre them (std 1).")
    if low_std != "fix":
        raise ValueError(f"low_std must be 'error' or 'fix', not {low_std!r}")
    fixed = {}
    for k, s in stats.items():
        std = s.std.copy()
        std[low[k]] = 1.0
        q01, q99 = (None, None) if s.q01 is None else (s.q01.copy(), s.q99.copy())
        if q01 is not None:  # pi0.5's quantile normalization: the same fix, mean -> 0 at unit scale
            q01[low[k]], q99[low[k]] = s.mean[low[k]] - 1.0, s.mean[low[k]] + 1.0
        fixed[k] = NormStats(s.mean, std, q01, q99)
    msg = f"near-constant dims only centred (std set to 1, not z-scored): {what}"
    log.warning(msg)
    warnings.warn(msg, NearConstantWarning, stacklevel=3)
    return StatsResult(fixed, tuple(f"{k}/{names[i]}" for k, dims in low.items() for i in dims))
