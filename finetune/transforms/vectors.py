"""State/action transforms between the rig's units and pi0's normalized, padded model space.

Each transform maps a `Vectors` (state [..., D], actions [..., H, D] or None) forward and has an exact inverse:
serving runs the same objects backwards on the model's output, so training and deployment cannot drift apart.
Order (openpi's pi0 ALOHA): joint flip -> gripper conversion -> delta joints -> z-score -> zero padding.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import numpy as np

from finetune.normalize import NormStats, normalize, quantile_normalize, quantile_unnormalize, unnormalize
from finetune.transforms.config import GripperConversion, TransformConfig


@dataclass(frozen=True)
class Vectors:
    """state [..., D]; actions [..., H, D] (None at serving time, before the model has answered)."""

    state: np.ndarray
    actions: np.ndarray | None = None

    def replace(self, **kw) -> "Vectors":
        return dataclasses.replace(self, **kw)


class VectorTransform(Protocol):
    def forward(self, v: Vectors) -> Vectors: ...

    def inverse(self, v: Vectors) -> Vectors: ...


def _f64(x: np.ndarray) -> np.ndarray:
    return np.array(x, dtype=np.float64, copy=True)


# -- ALOHA -> pi0 (openpi's adapt_to_pi) -----------------------------------------------------------------------

@dataclass(frozen=True)
class JointFlip:
    """Negate shoulder and elbow of both arms (ALOHA's sign convention vs pi0's pre-training space); an involution."""

    signs: tuple[float, ...]

    def forward(self, v: Vectors) -> Vectors:
        s = np.asarray(self.signs, dtype=np.float64)
        return Vectors(_f64(v.state) * s, None if v.actions is None else _f64(v.actions) * s)

    inverse = forward


def gripper_to_angular(x: np.ndarray, g: GripperConversion) -> np.ndarray:
    """State gripper: normalized finger opening (linear, 0..1) -> pi0's normalized gripper angle.

    The finger is driven by a horn of radius r through a rod of length L: sin(angle) = (r^2 + x^2 - L^2) / (2 r x)."""
    x = np.asarray(x, dtype=np.float64) * (g.finger_open - g.finger_closed) + g.finger_closed
    s = (g.horn_radius ** 2 + x ** 2 - g.arm_length ** 2) / (2.0 * g.horn_radius * x)
    angle = np.arcsin(np.clip(s, -1.0, 1.0))
    return (angle - g.angle_min) / (g.angle_max - g.angle_min)


def angular_to_gripper(y: np.ndarray, g: GripperConversion) -> np.ndarray:
    """Exact inverse of gripper_to_angular where that is not clipped (finger between fully closed and fully open):
    the positive root of x^2 - 2 r sin(angle) x + r^2 - L^2 = 0."""
    angle = np.asarray(y, dtype=np.float64) * (g.angle_max - g.angle_min) + g.angle_min
    s = np.sin(angle)
    r, L = g.horn_radius, g.arm_length
    x = r * s + np.sqrt(r * r * s * s + L * L - r * r)
    return (x - g.finger_closed) / (g.finger_open - g.finger_closed)


def gripper_action_to_pi(a: np.ndarray, g: GripperConversion) -> np.ndarray:
    """Action gripper: ALOHA's normalized gripper joint -> pi0 (openpi's _gripper_from_angular_inv)."""
    return np.asarray(a, dtype=np.float64) * (g.joint_open - g.joint_closed) + g.joint_closed - g.action_offset


def gripper_action_from_pi(y: np.ndarray, g: GripperConversion) -> np.ndarray:
    """pi0 action gripper -> ALOHA's normalized gripper joint (openpi's _gripper_from_angular)."""
    return (np.asarray(y, dtype=np.float64) + g.action_offset - g.joint_closed) / (g.joint_open - g.joint_closed)


@dataclass(frozen=True)
class GripperToPi:
    """State grippers linear -> angular, action grippers ALOHA joint -> pi0 (two different maps, as in openpi)."""

    dims: tuple[int, ...]
    g: GripperConversion

    def forward(self, v: Vectors) -> Vectors:
        d = list(self.dims)
        st = _f64(v.state)
        st[..., d] = gripper_to_angular(st[..., d], self.g)
        if v.actions is None:
            return Vectors(st)
        ac = _f64(v.actions)
        ac[..., d] = gripper_action_to_pi(ac[..., d], self.g)
        return Vectors(st, ac)

    def inverse(self, v: Vectors) -> Vectors:
        d = list(self.dims)
        st = _f64(v.state)
        st[..., d] = angular_to_gripper(st[..., d], self.g)
        if v.actions is None:
            return Vectors(st)
        ac = _f64(v.actions)
        ac[..., d] = gripper_action_from_pi(ac[..., d], self.g)
        return Vectors(st, ac)


# -- delta actions -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeltaActions:
    """Masked action dims become relative to the current state (the chunk's first observation)."""

    mask: tuple[bool, ...]

    def _apply(self, v: Vectors, sign: float) -> Vectors:
        if v.actions is None:
            return v
        m = np.asarray(self.mask, dtype=bool)
        ac = _f64(v.actions)
        st = np.asarray(v.state, dtype=np.float64)
        ac[..., m] += sign * st[..., None, :][..., m]
        return Vectors(_f64(v.state), ac)

    def forward(self, v: Vectors) -> Vectors:
        return self._apply(v, -1.0)

    def inverse(self, v: Vectors) -> Vectors:
        return self._apply(v, +1.0)


# -- normalization, padding -----------------------------------------------------------------------------------

NORMALIZATIONS = ("zscore", "quantile")  # pi0's, pi0.5's


@dataclass(frozen=True)
class Normalize:
    """z-score (x - mean) / (std + eps), or quantile (pi0.5: q01..q99 -> -1..1, finetune.normalize), with the
    dataset's statistics; stats longer than the data (openpi files padded to 32) are cut to the data's dims."""

    state: NormStats
    actions: NormStats
    eps: float = 1e-6
    mode: str = "zscore"

    def __post_init__(self) -> None:
        if self.mode not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, not {self.mode!r}")

    @staticmethod
    def _cut(stats: NormStats, n: int) -> NormStats:
        if stats.mean.shape[-1] < n:
            raise ValueError(f"norm stats have {stats.mean.shape[-1]} dims, the data {n}")
        q = [None if x is None else x[:n] for x in (stats.q01, stats.q99)]
        return NormStats(stats.mean[:n], stats.std[:n], q[0], q[1])

    def _map(self, v: Vectors, fn) -> Vectors:
        n = v.state.shape[-1]
        st = fn(_f64(v.state), self._cut(self.state, n), self.eps)
        if v.actions is None:
            return Vectors(st)
        return Vectors(st, fn(_f64(v.actions), self._cut(self.actions, v.actions.shape[-1]), self.eps))

    def forward(self, v: Vectors) -> Vectors:
        return self._map(v, quantile_normalize if self.mode == "quantile" else normalize)

    def inverse(self, v: Vectors) -> Vectors:
        return self._map(v, quantile_unnormalize if self.mode == "quantile" else unnormalize)


@dataclass(frozen=True)
class PadTo:
    """Zero-pad the last dim to the model's width; the inverse keeps the first `rig_dim` entries."""

    rig_dim: int
    state_dim: int
    action_dim: int

    @staticmethod
    def _pad(x: np.ndarray, n: int) -> np.ndarray:
        if x.shape[-1] > n:
            raise ValueError(f"{x.shape[-1]} dims do not fit the model's {n}")
        out = np.zeros(x.shape[:-1] + (n,), dtype=np.float64)
        out[..., : x.shape[-1]] = x
        return out

    def forward(self, v: Vectors) -> Vectors:
        return Vectors(self._pad(v.state, self.state_dim),
                       None if v.actions is None else self._pad(v.actions, self.action_dim))

    def inverse(self, v: Vectors) -> Vectors:
        return Vectors(_f64(v.state[..., : self.rig_dim]),
                       None if v.actions is None else _f64(v.actions[..., : self.rig_dim]))


@dataclass(frozen=True)
class Chain:
    """Transforms applied in order; the inverse applies their inverses in reverse order."""

    steps: tuple[VectorTransform, ...]

    def forward(self, v: Vectors) -> Vectors:
        for t in self.steps:
            v = t.forward(v)
        return v

    def inverse(self, v: Vectors) -> Vectors:
        for t in reversed(self.steps):
            v = t.inverse(v)
        return v


def pi_space_steps(cfg: TransformConfig) -> list[VectorTransform]:
    """Rig units -> pi0's (un-normalized) state/action space: where the norm stats are computed."""
    steps: list[VectorTransform] = []
    if cfg.adapt_to_pi:
        steps += [JointFlip(cfg.joint_flip), GripperToPi(cfg.gripper_dims, cfg.gripper)]
    if cfg.delta_actions:
        steps.append(DeltaActions(cfg.delta_mask))
    return steps


def vector_chain(cfg: TransformConfig, stats: Mapping[str, NormStats]) -> Chain:
    """The whole rig -> model chain for state and actions."""
    missing = {"state", "actions"} - set(stats)
    if missing:
        raise ValueError(f"norm stats lack {sorted(missing)} (have {sorted(stats)})")
    return Chain(tuple(pi_space_steps(cfg)) + (Normalize(stats["state"], stats["actions"], cfg.norm_eps,
                                                         cfg.normalization),
                                               PadTo(cfg.rig_dim, cfg.state_dim, cfg.action_dim)))


def as_steps(steps: Sequence[VectorTransform]) -> Chain:
    return Chain(tuple(steps))
