"""Is a policy chunk fit to run? Checked once per chunk, before any of its actions reaches the safety layer.

The safety layer makes every single command harmless (finite, clipped to the joint limits, at most one step cap
from the last one), but it cannot tell a policy that went wild from one that moves fast: a chunk asking for 1e6 rad
would drive a joint to its limit at full step for a whole trial, and one alternating +-3 rad would thrash the arms
at the step cap every tick. So a chunk is refused as a whole when

- a value is not finite, or the chunk is not [H, 14];
- an action lies outside the joint limits (the safety layer's, `SafetyLayer.limits`, with JOINT_LIMIT_TOLERANCE);
- an action lies outside the range the policy was trained on (announced by the server as "action_bounds", see
  finetune.runtime.action_bounds: the training actions' q01..q99 widened by a margin, in rig units; the arm joints
  of a delta-action policy as offsets from the state the chunk was computed from);
- its first executed action is more than FIRST_ACTION_STEPS step caps from the current command, or (async modes)
  from the plan it replaces (a chunk boundary jump: a plan that does not continue where the arms are);
- one step of it moves a joint more than VELOCITY_TOLERANCE times the step the velocity limit allows per tick.

The last two are for the twelve arm joints: a gripper's whole range is a few of its step caps, demonstrations open
and close it in one or two ticks (the scripted ones at 0.5 per tick), and its limits bound it already.

`check_chunk` is pure (numpy only): the policy source calls it with the bounds built once per trial
(`ChunkBounds.for_rig`) and turns a refusal into a hold and a fresh request.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from drivers.arm import BIMANUAL_DOF, JOINT_NAMES, SIDES

FIRST_ACTION_STEPS = 4.0  # the first executed action may lie this many step caps from the current command
VELOCITY_TOLERANCE = 2.0  # a step of a chunk may move a joint this many times the velocity limit's step per tick
JOINT_LIMIT_TOLERANCE = 0.02  # rad (gripper: normalized) beyond a joint limit still accepted: rounding, a squeeze
GRIPPER_LIMIT_TOLERANCE = 0.25  # normalized: a policy overshooting open / closed asks for nothing the
# current-limited gripper cannot do (the safety layer clamps it to its range); measured: CPU policies trained on
# demonstrations that open the gripper fully (1.0) ask 1.03-1.12 (0.1 refused every trial of the closed loop)
DIM_NAMES = tuple(f"{side}_{j}" for side in SIDES for j in JOINT_NAMES)  # the 14 values of an action
ARM_DIMS = np.array([j != "gripper" for _ in SIDES for j in JOINT_NAMES])  # the motion checks' joints


@dataclass(frozen=True)
class ChunkRefusal:
    """Why a chunk was refused: `kind` for code ("non_finite", "shape", "joint_limits", "trained_range", "jump",
    "mismatch", "velocity"; the policy source adds "stale" and "failed"), `reason` one line for the operator."""

    kind: str
    reason: str
    value: float = float("nan")  # the offending figure (rad, normalized gripper units, seconds)
    limit: float = float("nan")  # what it was allowed
    joint: str = ""  # "left_shoulder", "" when not one joint's
    index: int = -1  # the action's index in the chunk (-1: not one action's)

    def to_json(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if not np.isfinite(x) else float(f"{x:.6g}")

        return {"kind": self.kind, "reason": self.reason, "value": num(self.value), "limit": num(self.limit),
                "joint": self.joint, "index": self.index}


@dataclass(frozen=True)
class ChunkLimits:
    """The check's tolerances (the defaults are this module's constants). Widening them is for policies known to
    be rough, on the simulator (a model trained for two steps in a test); the safety layer's caps stay in force."""

    first_action_steps: float = FIRST_ACTION_STEPS
    velocity_tolerance: float = VELOCITY_TOLERANCE
    limit_tolerance: float = JOINT_LIMIT_TOLERANCE
    trained_range: bool = True  # check the range the policy announces ("action_bounds")

    def __post_init__(self) -> None:
        for k in ("first_action_steps", "velocity_tolerance"):
            if not getattr(self, k) > 0:
                raise ValueError(f"{k} must be positive, got {getattr(self, k)}")
        if not self.limit_tolerance >= 0:
            raise ValueError(f"limit_tolerance must be >= 0, got {self.limit_tolerance}")


@dataclass(frozen=True)
class ChunkCheck:
    """The verdict on one chunk and the figures it was judged on (the trial record keeps them)."""

    refusal: ChunkRefusal | None
    jump: float = float("nan")  # largest arm-joint change from the current command to its first executed action
    mismatch: float = float("nan")  # largest arm-joint difference there from the plan it replaces (nan: none)
    max_step: float = float("nan")  # largest arm-joint change between two of its consecutive actions

    @property
    def ok(self) -> bool:
        return self.refusal is None


@dataclass(frozen=True)
class ChunkBounds:
    """What a chunk may ask for, in rig units (ALOHA space, 14 values: left 6 joints + gripper, right 6 + gripper)."""

    lo: np.ndarray  # (14,) joint limits
    hi: np.ndarray
    step: np.ndarray  # (14,) the safety layer's step cap per tick (velocity limit / control rate, gripper step)
    trained_lo: np.ndarray | None = None  # (14,) the policy's trained range (None: not announced)
    trained_hi: np.ndarray | None = None
    relative: np.ndarray | None = None  # (14,) bool: the trained range is an offset from the observed state
    limits: ChunkLimits = ChunkLimits()

    @staticmethod
    def for_rig(safety: Any, follower_names: Sequence[str], control_hz: float,
                metadata: Mapping[str, Any] | None = None, limits: ChunkLimits = ChunkLimits()) -> "ChunkBounds":
        """From the rig's safety layer (joint limits per follower, left then right; its step cap) and the
        policy's metadata ("action_bounds", when announced and well-formed)."""
        lims = [safety.limits(name) for name in follower_names]
        lo = np.concatenate([lo for lo, _ in lims])
        hi = np.concatenate([hi for _, hi in lims])
        step = np.tile(safety.config.step_array(control_hz), len(follower_names))
        trained = parse_action_bounds((metadata or {}).get("action_bounds"), len(lo)) if limits.trained_range \
            else None
        if trained is None:
            return ChunkBounds(lo, hi, step, limits=limits)
        return ChunkBounds(lo, hi, step, *trained, limits=limits)

    @property
    def announced(self) -> bool:
        return self.trained_lo is not None


def parse_action_bounds(value: Any, dim: int = BIMANUAL_DOF) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(lo, hi, relative) from a server's "action_bounds" ({"lo": [...], "hi": [...], "relative": [...]}), or None
    when absent or malformed (the joint limits and the motion checks still apply)."""
    if not isinstance(value, Mapping):
        return None
    try:
        lo = np.asarray(value.get("lo"), dtype=np.float64)
        hi = np.asarray(value.get("hi"), dtype=np.float64)
        rel = np.asarray(value.get("relative", [False] * dim), dtype=bool)
    except (TypeError, ValueError):
        return None
    if lo.shape != (dim,) or hi.shape != (dim,) or rel.shape != (dim,) or np.isnan(lo).any() or np.isnan(hi).any() \
            or not (lo <= hi).all():
        return None
    return lo, hi, rel


def _where(mask: np.ndarray) -> tuple[int, int]:
    """(action index, dim) of the first True in an [H, D] mask."""
    i, j = np.argwhere(mask)[0]
    return int(i), int(j)


def _name(j: int) -> str:
    return DIM_NAMES[j] if j < len(DIM_NAMES) else f"dim {j}"


def _unit(j: int) -> str:
    return "" if JOINT_NAMES[j % len(JOINT_NAMES)] == "gripper" else " rad"


def check_chunk(actions: Any, bounds: ChunkBounds, *, state: np.ndarray, current: np.ndarray | None,
                entry: int = 0, replaced: np.ndarray | None = None) -> ChunkCheck:
    """The verdict on a chunk before any of it runs: `.refusal` None when it may run, else the first reason it may
    not. `state`: the joints the chunk was computed from (its request's); `current`: the command the followers hold
    now (None: nothing commanded yet); `entry`: the index of the first action that would run (the ones before it
    are past); `replaced`: the action the running plan has for that slot, when that plan would otherwise go on
    (async modes; None in sync, where the followers hold between chunks)."""
    dim = len(bounds.lo)
    lim = bounds.limits
    try:
        a = np.asarray(actions, dtype=np.float64)
    except (TypeError, ValueError) as e:
        return ChunkCheck(ChunkRefusal("shape", f"the policy answered something that is not a numeric array ({e})"))
    if a.ndim != 2 or a.shape[1] != dim or len(a) == 0:
        return ChunkCheck(ChunkRefusal("shape", f"the policy answered actions of shape {list(a.shape)}, need "
                                                f"[H, {dim}]"))
    bad = ~np.isfinite(a)
    if bad.any():
        i, j = _where(bad)
        return ChunkCheck(ChunkRefusal("non_finite", f"{_name(j)} is {a[i, j]} at action {i}", a[i, j],
                                       joint=_name(j), index=i))
    arm = ARM_DIMS if dim == len(ARM_DIMS) else np.ones(dim, bool)
    first = a[entry] if 0 <= entry < len(a) else None
    jumps = np.where(arm, np.abs(first - np.asarray(current, np.float64)), 0.0) \
        if first is not None and current is not None else None
    gaps = np.where(arm, np.abs(first - np.asarray(replaced, np.float64)), 0.0) \
        if first is not None and replaced is not None else None
    steps = np.where(arm, np.abs(np.diff(a, axis=0)), 0.0) if len(a) > 1 else np.zeros((0, dim))
    figures = dict(jump=float(jumps.max()) if jumps is not None else float("nan"),
                   mismatch=float(gaps.max()) if gaps is not None else float("nan"),
                   max_step=float(steps.max()) if len(steps) else 0.0)

    def refuse(r: ChunkRefusal) -> ChunkCheck:
        return ChunkCheck(r, **figures)

    tol = np.where(arm, lim.limit_tolerance, max(lim.limit_tolerance, GRIPPER_LIMIT_TOLERANCE))
    out = (a < bounds.lo - tol) | (a > bounds.hi + tol)
    if out.any():
        i, j = _where(out)
        return refuse(ChunkRefusal("joint_limits", f"{_name(j)} asks for {a[i, j]:.4g}{_unit(j)} at action {i}, "
                                   f"outside its joint limits [{bounds.lo[j]:.3f}, {bounds.hi[j]:.3f}]",
                                   float(a[i, j]), float(bounds.hi[j] if a[i, j] > bounds.hi[j] else bounds.lo[j]),
                                   _name(j), i))
    if bounds.trained_lo is not None and bounds.trained_hi is not None:
        rel = bounds.relative if bounds.relative is not None else np.zeros(dim, bool)
        s = np.asarray(state, dtype=np.float64).reshape(-1)[:dim]
        x = a - np.where(rel, s, 0.0)
        out = (x < bounds.trained_lo) | (x > bounds.trained_hi)
        if out.any():
            i, j = _where(out)
            what = f"{x[i, j]:+.3f}{_unit(j)} from the observed state" if rel[j] else f"{x[i, j]:.3f}{_unit(j)}"
            return refuse(ChunkRefusal("trained_range", f"{_name(j)} asks for {what} at action {i}, outside the "
                                       f"range the policy was trained on [{bounds.trained_lo[j]:+.3f}, "
                                       f"{bounds.trained_hi[j]:+.3f}]", float(x[i, j]),
                                       float(bounds.trained_hi[j] if x[i, j] > bounds.trained_hi[j]
                                             else bounds.trained_lo[j]), _name(j), i))
    cap = lim.first_action_steps * bounds.step
    for kind, d, what in (("jump", jumps, "the current command"), ("mismatch", gaps, "the plan it replaces")):
        if d is not None and (d > cap).any():
            j = int(np.argmax(d / cap))
            return refuse(ChunkRefusal(kind, f"{_name(j)}: its first action is {d[j]:.3f}{_unit(j)} from {what} (at "
                                       f"most {cap[j]:.3f}: {lim.first_action_steps:g} step caps)", float(d[j]),
                                       float(cap[j]), _name(j), entry))
    cap = lim.velocity_tolerance * bounds.step
    over = steps > cap
    if over.any():
        i, j = _where(over)
        return refuse(ChunkRefusal("velocity", f"{_name(j)} moves {steps[i, j]:.3f}{_unit(j)} between actions {i} and "
                                   f"{i + 1} (at most {cap[j]:.3f} per tick: {lim.velocity_tolerance:g} x the "
                                   "velocity limit)", float(steps[i, j]), float(cap[j]), _name(j), i + 1))
    return ChunkCheck(None, **figures)


__all__ = ["ARM_DIMS", "ChunkBounds", "ChunkCheck", "ChunkLimits", "ChunkRefusal", "DIM_NAMES", "FIRST_ACTION_STEPS",
           "JOINT_LIMIT_TOLERANCE", "VELOCITY_TOLERANCE", "check_chunk", "parse_action_bounds"]
