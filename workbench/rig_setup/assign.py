"""Which one changed: the bus whose joints moved ("move the left leader arm"), the camera whose image changed
("wave in front of cam_high"). One rule for both: the largest change wins if it is clearly above the noise
and clearly above the runner-up; otherwise the operator is asked to try again (never a guess).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

ARM_MOVE_MIN_RAD = 0.15  # a deliberate nudge of one joint; servo noise is a tick (0.0015 rad)
IMAGE_CHANGE_MIN = 12.0  # mean absolute pixel change (0..255) of the most changed image region
CLEAR_RATIO = 3.0  # the winner's change must be this many times the runner-up's


class AssignmentError(ValueError):
    """Nothing changed enough, or two candidates changed alike: the operator should repeat the step."""


@dataclass(frozen=True)
class Change:
    key: str
    amount: float


def pick_changed(changes: Mapping[str, float], minimum: float, what: str, action: str,
                 ratio: float = CLEAR_RATIO) -> str:
    """The key whose change is clearly the largest; `what` / `action` word the error ("arm", "move it")."""
    if not changes:
        raise AssignmentError(f"no {what} left to choose from")
    ranked = sorted(changes.items(), key=lambda kv: kv[1], reverse=True)
    (best, amount), rest = ranked[0], ranked[1:]
    if amount < minimum:
        listing = ", ".join(f"{k} {v:.3g}" for k, v in ranked)
        raise AssignmentError(f"no {what} changed enough ({listing}; need {minimum:g}): {action}, then try again")
    if rest and rest[0][1] * ratio > amount:
        raise AssignmentError(f"{best} and {rest[0][0]} changed alike ({amount:.3g} vs {rest[0][1]:.3g}): "
                              f"{action} (only that one), then try again")
    return best


def arm_motion(before: np.ndarray, samples: Sequence[np.ndarray]) -> float:
    """Largest joint excursion (rad) from `before` over a window of readings."""
    if not len(samples):
        return 0.0
    return float(np.max(np.abs(np.asarray(samples) - np.asarray(before)[None, :])))


def image_change(before: np.ndarray, after: np.ndarray, grid: int = 4) -> float:
    """Mean absolute change of the most changed cell of a `grid` x `grid` split: a hand waved in one part of
    the image scores high, sensor noise or a slow exposure drift over the whole image does not."""
    a = np.asarray(before, dtype=np.int16)
    b = np.asarray(after, dtype=np.int16)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    d = np.abs(b - a).mean(axis=-1) if a.ndim == 3 else np.abs(b - a)
    h, w = d.shape
    cells = [d[i * h // grid:(i + 1) * h // grid, j * w // grid:(j + 1) * w // grid].mean()
             for i in range(grid) for j in range(grid)]
    return float(max(cells))
