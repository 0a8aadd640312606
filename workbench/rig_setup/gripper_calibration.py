"""Gripper calibration: measure where each gripper is open and closed, and turn that into the rig's constants.

Wrong gripper constants are a known cause of oscillating or never-closing grippers on modified arms. So:
- leader: the operator squeezes the trigger fully and releases it fully while its readings are watched (the
  leaders are torque-off: nothing moves them but the hand);
- follower: the gripper is closed, then opened, slowly, by goals sent through the safety layer (the one place
  motion passes; refused under the e-stop), in its current-based position mode with the rig's current limit,
  until it stalls against its own stops. The search runs past the configured constants (`widened`), so a gripper
  that opens or closes further than its preset says is measured too.
Values are the gripper joint angle (rad) the constants are written in. Inconsistent measurements are refused
with what to do: open and closed swapped, a range too small to control, no stop found, sides that disagree.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

from drivers.arm import GRIPPER_RANGE
from drivers.gripper import GripperConstants
from workbench.timing import Pacer

GRIPPER = 6  # index of the gripper in an arm's 7 values
MIN_SPAN = {"leader": 0.3, "follower": 0.5}  # rad: below this the gripper cannot be controlled finely enough
SEARCH_MARGIN = 0.25  # rad past the configured open / closed the follower search goes (and stalls on the stop)
STOP_EPS = 0.02  # rad: a stop was found if the gripper halted at least this far short of the search's end
SIDES_AGREE = 0.25  # fraction of the span by which left and right may differ


class CalibrationError(ValueError):
    """A measurement that must not become rig constants; the message says what to do."""


@dataclass(frozen=True)
class GripperMeasurement:
    arm: str  # "leader_left", ...
    role: str
    closed: float  # gripper joint, rad
    open: float
    samples: int = 0
    peak_effort: float = 0.0  # follower: the largest |current| (mA) seen while stalled at a stop

    @property
    def span(self) -> float:
        return self.open - self.closed

    def describe(self) -> str:
        extra = f", peak current {self.peak_effort:.0f} mA" if self.role == "follower" else ""
        return f"{self.arm}: closed {self.closed:+.4f} rad, open {self.open:+.4f} rad (span {self.span:.3f}){extra}"


def check_measurement(m: GripperMeasurement) -> None:
    """Refuse swapped or too small ranges."""
    if m.open < m.closed:
        raise CalibrationError(
            f"{m.arm}: the open reading ({m.open:+.3f} rad) is below the closed one ({m.closed:+.3f} rad): open and "
            f"closed are swapped. " + ("Squeeze when asked to squeeze, then release; if you did, the gripper "
                                       "servo's Drive Mode is reversed (Dynamixel Wizard)." if m.role == "leader" else
                                       "The gripper servo's Drive Mode is reversed (Dynamixel Wizard)."))
    need = MIN_SPAN[m.role]
    if m.span < need:
        what = ("squeeze the trigger all the way and release it all the way during the measurement"
                if m.role == "leader" else "check that nothing blocks the fingers and that the gripper servo turns")
        raise CalibrationError(f"{m.arm}: open and closed are only {m.span:.3f} rad apart (at least {need} rad "
                               f"is needed to control it): {what}, then measure again")


def _joint_of(g: GripperConstants, role: str) -> tuple[float, float]:
    return ((g.leader_joint_close, g.leader_joint_open) if role == "leader"
            else (g.follower_joint_close, g.follower_joint_open))


def to_joint(g: GripperConstants, role: str, normalized: float) -> float:
    """An arm's normalized gripper reading -> its gripper joint angle under the constants it was built with."""
    close, open_ = _joint_of(g, role)
    return close + float(normalized) * (open_ - close)


def widened(g: GripperConstants, margin: float = SEARCH_MARGIN) -> GripperConstants:
    """Constants whose normalized 0..1 spans `margin` rad more on each side (finger values stretched alike):
    the rig a calibration runs on, so the follower's search can go past the configured stops."""
    def stretch(close: float, open_: float, role: str) -> tuple[float, float]:
        jc, jo = _joint_of(g, role)
        k = margin / (jo - jc)  # the same fraction of the span for joint and finger values
        return close - k * (open_ - close), open_ + k * (open_ - close)

    lc, lo = stretch(g.leader_joint_close, g.leader_joint_open, "leader")
    fc, fo = stretch(g.follower_joint_close, g.follower_joint_open, "follower")
    lfc, lfo = stretch(g.leader_finger_close, g.leader_finger_open, "leader")
    ffc, ffo = stretch(g.follower_finger_close, g.follower_finger_open, "follower")
    return GripperConstants(lo, lc, fo, fc, lfo, lfc, ffo, ffc, g.start_threshold)


def measure_leader(rig, side: str, *, duration_s: float = 6.0, hz: float = 50.0,
                   done: Callable[[], bool] = lambda: False,
                   on_sample: Callable[[float], None] | None = None) -> GripperMeasurement:
    """Watch a torque-off leader's gripper for `duration_s` (or until `done()`) while the operator squeezes and
    releases it; closed / open = the extremes of a 3-sample median (one glitchy reading does not count)."""
    arm = rig.leaders[side]
    g = rig.config.gripper
    pacer = Pacer(rig.clock, hz)
    pacer.start()
    t_end = rig.clock.now() + duration_s
    values: list[float] = []
    while rig.clock.now() < t_end and not done():
        with rig.io_lock:
            q = to_joint(g, "leader", arm.read().position[GRIPPER])
        values.append(q)
        if on_sample is not None:
            on_sample(q)
        pacer.wait()
    if len(values) < 3:
        raise CalibrationError(f"{arm.name}: too few readings ({len(values)}): measure for longer")
    v = np.asarray(values)
    med = np.median(np.stack([v[:-2], v[1:-1], v[2:]]), axis=0)
    m = GripperMeasurement(arm.name, "leader", float(med.min()), float(med.max()), len(values))
    check_measurement(m)
    return m


def measure_follower(rig, side: str, *, speed: float = 1.0, hz: float = 50.0, settle_s: float = 0.4,
                     timeout_s: float = 20.0, should_stop: Callable[[], bool] = lambda: False) -> GripperMeasurement:
    """Close, then open the follower gripper slowly (`speed` rad/s of goal) through the safety layer, each time
    until it stalls; arm joints hold where they are. Ends back where the gripper started."""
    arm = rig.followers[side]
    name = arm.name
    g = rig.config.gripper
    close_j, open_j = _joint_of(g, "follower")
    step = speed / hz / (open_j - close_j)  # normalized goal change per tick
    safety = rig.safety
    safety.set_torque(name, True, True)  # refused under the e-stop; holds where it is
    start = np.asarray(arm.read().position, dtype=np.float64)
    hold = start.copy()
    pacer = Pacer(rig.clock, hz)
    peak = 0.0

    def run_to(goal_end: float, settle: bool = True) -> float:
        nonlocal peak
        pacer.start()
        goal = float(np.clip(arm.read().position[GRIPPER], *GRIPPER_RANGE))
        still_since, last, t0 = None, None, rig.clock.now()
        while True:
            if should_stop():
                raise CalibrationError(f"{name}: calibration stopped")
            if rig.clock.now() - t0 > timeout_s:
                raise CalibrationError(f"{name}: the gripper did not settle within {timeout_s:.0f} s")
            goal = goal_end if abs(goal_end - goal) <= step else goal + np.sign(goal_end - goal) * step
            target = hold.copy()
            target[GRIPPER] = goal
            with rig.io_lock:
                safety.command(name, target)
                state = arm.read()
            pos = float(state.position[GRIPPER])
            if goal == goal_end and not settle:
                return pos
            if goal == goal_end:
                peak = max(peak, float(abs(state.effort[GRIPPER])))
                if last is not None and abs(pos - last) * (open_j - close_j) < 0.004:
                    still_since = still_since if still_since is not None else rig.clock.now()
                    if rig.clock.now() - still_since >= settle_s:
                        return pos
                else:
                    still_since = None
            last = pos
            pacer.wait()

    lo, hi = GRIPPER_RANGE
    closed_n = run_to(lo)
    open_n = run_to(hi)
    run_to(float(np.clip(start[GRIPPER], lo, hi)), settle=False)  # back where it was
    closed, opened = to_joint(g, "follower", closed_n), to_joint(g, "follower", open_n)
    m = GripperMeasurement(name, "follower", closed, opened, peak_effort=peak)
    check_measurement(m)
    for what, value, end in (("closed", closed, close_j), ("open", opened, open_j)):
        if abs(value - end) < STOP_EPS:
            raise CalibrationError(
                f"{name}: the gripper reached the end of the search ({what} {end:+.3f} rad) without meeting its "
                f"stop: its range is wider than searched; give a larger search margin, or check the finger linkage")
    return m


def combine(base: GripperConstants, measurements: list[GripperMeasurement]) -> GripperConstants:
    """The rig's [gripper] constants from the measured arms (one set for both sides: the mean of left and right,
    refused when they differ by more than SIDES_AGREE of the span). Unmeasured roles keep `base`'s values;
    finger values and the squeeze threshold keep their place relative to the measured joint range."""
    out = dataclasses.asdict(base)
    for role in ("leader", "follower"):
        ms = [m for m in measurements if m.role == role]
        if not ms:
            continue
        for m in ms:
            check_measurement(m)
        closed = float(np.mean([m.closed for m in ms]))
        opened = float(np.mean([m.open for m in ms]))
        span = opened - closed
        for a, b in zip(ms, ms[1:]):
            if max(abs(a.closed - b.closed), abs(a.open - b.open)) > SIDES_AGREE * span:
                raise CalibrationError(
                    f"{a.arm} and {b.arm} differ too much ({a.describe()}; {b.describe()}): measure both again; if "
                    f"it stays so, one gripper is built differently (fix it: the rig has one set of constants)")
        old_close, old_open = _joint_of(base, role)
        frac = lambda x: (x - old_close) / (old_open - old_close)  # noqa: E731
        fc, fo = out[f"{role}_finger_close"], out[f"{role}_finger_open"]
        out[f"{role}_finger_close"] = fc + frac(closed) * (fo - fc)
        out[f"{role}_finger_open"] = fc + frac(opened) * (fo - fc)
        if role == "leader":
            out["start_threshold"] = closed + frac(base.start_threshold) * span
        out[f"{role}_joint_close"], out[f"{role}_joint_open"] = closed, opened
    return GripperConstants(**{k: round(float(v), 5) for k, v in out.items()})


def measure_all(rig, *, leader_s: float = 6.0, prompt: Callable[[str], None] = print,
                leaders: bool = True, followers: bool = True, **follower_kw) -> list[GripperMeasurement]:
    """Every gripper of a connected rig in turn (the CLI's order); the wizard calls the pieces itself."""
    out = []
    if leaders and rig.has_leaders:
        for side in ("left", "right"):
            prompt(f"Squeeze the {side} leader gripper fully and release it fully, twice, within {leader_s:.0f} s")
            out.append(measure_leader(rig, side, duration_s=leader_s))
    if followers:
        for side in ("left", "right"):
            prompt(f"Closing and opening the {side} follower gripper slowly (keep fingers and objects away)")
            out.append(measure_follower(rig, side, **follower_kw))
    return out
