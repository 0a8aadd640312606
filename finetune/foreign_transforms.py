"""LeRobot's pi0 conventions as steps of our transform chain (finetune.transforms.vectors), so that a policy trained
with LeRobot is served through the same `PolicyTransforms` methods as ours: its normalization modes, its
`adapt_to_pi_aloha` joint flips and gripper conversion, its relative actions.

What LeRobot does, read from its code (src/lerobot/processor/normalize_processor.py, policies/pi0/):
- normalization per feature type (`normalization_mapping`): MEAN_STD (x - mean) / (std + eps), and back x * std +
  mean (no eps); MIN_MAX / QUANTILES / QUANTILE10 map [min, max] / [q01, q99] / [q10, q90] to [-1, 1] (a zero span
  replaced by eps); IDENTITY passes. eps is the processor's (1e-8). Every mode is affine per dim, so each is held
  as (center, scale in, scale out) and inverted exactly.
- `adapt_to_pi_aloha` (its processor-pipeline pi0, 2025-09-18 .. 2025-10-02): shoulder and elbow (dims 1, 2, 8, 9)
  negated; the state grippers (6, 13) converted linear finger -> angle normalized over [0.4, 1.5] rad (openpi's
  newer constants are 0.5476 .. 1.6296); the action grippers angle -> ALOHA joint over [-0.6213, 1.4910]. In that
  pipeline the normalizer runs first, so the adaptation is applied to *normalized* values: order
  normalize -> adapt -> model -> adapt back -> unnormalize, which this chain reproduces as is.
- relative actions (`use_relative_actions`, 2026): action -= raw state on the masked dims before normalizing, the
  mask built from the action names and `relative_exclude_joints` the way its RelativeActionsProcessorStep does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from finetune.normalize import NormStats
from finetune.tokenizer import PromptTokenizer
from finetune.transforms import GripperConversion, PolicyTransforms, TransformConfig
from finetune.transforms.vectors import Chain, JointFlip, Vectors, angular_to_gripper, gripper_to_angular

NORM_MODES = ("MEAN_STD", "MIN_MAX", "QUANTILES", "QUANTILE10", "IDENTITY")
_MODE_STATS = {"MEAN_STD": ("mean", "std"), "MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"),
               "QUANTILE10": ("q10", "q90"), "IDENTITY": ()}

# LeRobot's aloha constants (policies/pi0/modeling_pi0.py, processor-pipeline version)
LEROBOT_FLIP_DIMS: tuple[int, ...] = (1, 2, 8, 9)
LEROBOT_GRIPPER_DIMS: tuple[int, ...] = (6, 13)
LEROBOT_ANGLE_MIN, LEROBOT_ANGLE_MAX = 0.4, 1.5  # rad, "measured on an actual Trossen robot"
LEROBOT_JOINT_CLOSED, LEROBOT_JOINT_OPEN = -0.6213, 1.4910
# the state conversion is openpi's with LeRobot's angle range: reuse gripper_to_angular / angular_to_gripper
LEROBOT_GRIPPER = GripperConversion(angle_min=LEROBOT_ANGLE_MIN, angle_max=LEROBOT_ANGLE_MAX)


class ForeignStatsError(ValueError):
    """A foreign policy's statistics are missing or malformed (the message names the file and the key)."""


@dataclass(frozen=True)
class FeatureNorm:
    """One feature's normalization as LeRobot applies it, held affinely per dim: model = (x - center) / scale_in on
    the way in, x = model * scale_out + center on the way out (MEAN_STD: scale_in = std + eps, scale_out = std)."""

    mode: str
    center: np.ndarray
    scale_in: np.ndarray
    scale_out: np.ndarray

    @staticmethod
    def from_stats(mode: str, stats: Mapping[str, np.ndarray], eps: float, dim: int, what: str) -> "FeatureNorm":
        """`stats` {"mean": [D], ...} of one feature; raises ForeignStatsError naming `what` when the mode's
        statistics are missing, of the wrong length or not finite, or a std is negative."""
        mode = str(mode).upper()
        if mode not in _MODE_STATS:
            raise ForeignStatsError(f"{what}: normalization mode {mode!r} is not one LeRobot has "
                                    f"({', '.join(NORM_MODES)})")
        if mode == "IDENTITY":
            one = np.ones(dim)
            return FeatureNorm(mode, np.zeros(dim), one, one)
        vals = []
        for name in _MODE_STATS[mode]:
            if name not in stats:
                raise ForeignStatsError(f"{what}: {mode} normalization needs '{name}', the statistics have "
                                        f"{sorted(stats)}; re-save the policy with its dataset's statistics")
            v = np.asarray(stats[name], dtype=np.float64).reshape(-1)
            if v.shape != (dim,):
                raise ForeignStatsError(f"{what}.{name} has {v.size} values, the feature has {dim} dims")
            if not np.all(np.isfinite(v)):
                raise ForeignStatsError(f"{what}.{name} has non-finite values at dims "
                                        f"{np.flatnonzero(~np.isfinite(v)).tolist()}")
            vals.append(v)
        a, b = vals
        if mode == "MEAN_STD":
            if np.any(b < 0):
                raise ForeignStatsError(f"{what}.std is negative at dims {np.flatnonzero(b < 0).tolist()}")
            return FeatureNorm(mode, a, b + eps, b)
        if np.any(b < a):
            raise ForeignStatsError(f"{what}: {_MODE_STATS[mode][1]} < {_MODE_STATS[mode][0]} at dims "
                                    f"{np.flatnonzero(b < a).tolist()}")
        span = np.where(b - a == 0, eps, b - a)  # LeRobot: a zero span becomes eps (an input at the low end -> -1)
        return FeatureNorm(mode, a + span / 2.0, span / 2.0, span / 2.0)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) - self.center) / self.scale_in

    def forward_inverse(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, np.float64) * self.scale_in + self.center

    def output(self, y: np.ndarray) -> np.ndarray:
        """LeRobot's unnormalizer (postprocessor): model space -> feature units."""
        return np.asarray(y, np.float64) * self.scale_out + self.center

    def output_inverse(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) - self.center) / self.scale_out

    def as_norm_stats(self) -> NormStats | None:
        """Our NormStats (mean/std) when the mode is MEAN_STD, else None (what `norm_stats` reports)."""
        if self.mode != "MEAN_STD":
            return None
        return NormStats(self.center, self.scale_out)


def _check_width(x: np.ndarray, n: int, what: str) -> None:
    if x.shape[-1] != n:
        raise ValueError(f"{what} has {x.shape[-1]} dims, the policy's statistics {n}")


@dataclass(frozen=True)
class LeRobotNormalize:
    """State in: the preprocessor's normalizer; actions out: the postprocessor's unnormalizer. The other two
    directions (state back, an action prefix in) are their exact inverses."""

    state: FeatureNorm
    actions: FeatureNorm

    def forward(self, v: Vectors) -> Vectors:
        _check_width(v.state, self.state.center.size, "state")
        st = self.state.forward(v.state)
        if v.actions is None:
            return Vectors(st)
        _check_width(v.actions, self.actions.center.size, "actions")
        return Vectors(st, self.actions.output_inverse(v.actions))

    def inverse(self, v: Vectors) -> Vectors:
        st = self.state.forward_inverse(v.state)
        return Vectors(st, None if v.actions is None else self.actions.output(v.actions))


def lerobot_gripper_from_angular(y: np.ndarray) -> np.ndarray:
    """Model action gripper -> ALOHA's normalized gripper joint (LeRobot's aloha_gripper_from_angular)."""
    angle = np.asarray(y, np.float64) * (LEROBOT_ANGLE_MAX - LEROBOT_ANGLE_MIN) + LEROBOT_ANGLE_MIN
    return (angle - LEROBOT_JOINT_CLOSED) / (LEROBOT_JOINT_OPEN - LEROBOT_JOINT_CLOSED)


def lerobot_gripper_from_angular_inv(a: np.ndarray) -> np.ndarray:
    """Its exact inverse (LeRobot's aloha_gripper_from_angular_inv, the training direction)."""
    angle = np.asarray(a, np.float64) * (LEROBOT_JOINT_OPEN - LEROBOT_JOINT_CLOSED) + LEROBOT_JOINT_CLOSED
    return (angle - LEROBOT_ANGLE_MIN) / (LEROBOT_ANGLE_MAX - LEROBOT_ANGLE_MIN)


@dataclass(frozen=True)
class LeRobotAlohaAdapt:
    """LeRobot's `adapt_to_pi_aloha`: joint flips, then the state and action gripper conversions (its
    _pi_aloha_decode_state on the way in, _pi_aloha_encode_actions on the way out)."""

    rig_dim: int = 14

    @property
    def _flip(self) -> JointFlip:
        signs = np.ones(self.rig_dim)
        signs[list(LEROBOT_FLIP_DIMS)] = -1.0
        return JointFlip(tuple(signs.tolist()))

    def forward(self, v: Vectors) -> Vectors:
        v = self._flip.forward(v)
        d = list(LEROBOT_GRIPPER_DIMS)
        st = np.array(v.state, np.float64)
        st[..., d] = gripper_to_angular(st[..., d], LEROBOT_GRIPPER)
        if v.actions is None:
            return Vectors(st)
        ac = np.array(v.actions, np.float64)
        ac[..., d] = lerobot_gripper_from_angular_inv(ac[..., d])
        return Vectors(st, ac)

    def inverse(self, v: Vectors) -> Vectors:
        d = list(LEROBOT_GRIPPER_DIMS)
        st = np.array(v.state, np.float64)
        st[..., d] = angular_to_gripper(st[..., d], LEROBOT_GRIPPER)
        ac = None
        if v.actions is not None:
            ac = np.array(v.actions, np.float64)
            ac[..., d] = lerobot_gripper_from_angular(ac[..., d])
        return self._flip.inverse(Vectors(st, ac))


def lerobot_relative_mask(action_dim: int, action_names: Sequence[str] | None,
                          exclude_joints: Sequence[str] | None) -> tuple[bool, ...]:
    """Which action dims LeRobot makes relative (its RelativeActionsProcessorStep._build_mask): all, unless names
    are known and an exclude token equals or is contained in a dim's name (default exclude: "gripper")."""
    tokens = [str(t).lower() for t in (exclude_joints or ()) if t]
    if not tokens or action_names is None:
        return (True,) * action_dim
    names = [str(n).lower() for n in list(action_names)[:action_dim]]
    mask = [not any(t == n or t in n for t in tokens) for n in names]
    return tuple(mask + [True] * (action_dim - len(mask)))


class ChainTransforms(PolicyTransforms):
    """PolicyTransforms over an explicit chain (a foreign policy's conventions) instead of the one built from
    `config` and z-score stats: observation(), actions(), state_actions() and images() are the inherited methods,
    so serving and real-time chunking run the exact code our policies run. `config` still gives the cameras, image
    size, dims and horizon; its adapt_to_pi / delta / norm_eps fields are unused (the chain says it)."""

    def __init__(self, config: TransformConfig, chain: Chain, norm_stats: Mapping[str, NormStats],
                 tokenizer: PromptTokenizer | None = None) -> None:
        # PolicyTransforms.__init__ would build vector_chain(config, stats): set its attributes with our chain
        self.config = config
        self.norm_stats = dict(norm_stats)
        self.tokenizer = tokenizer
        self.vectors = chain
        self._tokens = {}


__all__ = ["ChainTransforms", "FeatureNorm", "ForeignStatsError", "LEROBOT_GRIPPER", "LeRobotAlohaAdapt",
           "LeRobotNormalize", "NORM_MODES", "lerobot_gripper_from_angular", "lerobot_gripper_from_angular_inv",
           "lerobot_relative_mask"]
