"""Per-episode quality checks: every episode says how good it is, with figures and pass / warn / fail.

ALOHA only prints the mean loop rate (re-record below 42 Hz). We also check period jitter, camera drops,
repeats, frozen cameras, camera-to-state time skew, tracking and servo hardware errors.
Thresholds come from the rig config's `[quality]` table (same field names as `QualityThresholds`).

Each kind of episode is graded by what matters for it. On the simulator the data does not depend on wall-clock
timing (sim time is exact, frames are rendered at sim time): the loop's wall-clock rate and jitter are shown but
not graded (n/a), and a still scene is not a frozen camera. A demonstration's tracking is leader vs follower (a
follower that could not keep up recorded something else than the operator did); a trial has no leader in control
(its /action is the policy's request): its tracking is the follower vs the command the safety layer sent, which
shows an arm blocked by an obstacle or pushing into the table.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

import numpy as np

from drivers.arm import ARM_JOINT_COLUMNS

Status = Literal["pass", "warn", "fail", "n/a"]
_RANK = {"n/a": -1, "pass": 0, "warn": 1, "fail": 2}

# Arm joints only: grippers are normalized and legitimately lag when squeezing an object.


@dataclass(frozen=True)
class QualityThresholds:
    """A value beyond `*_warn` warns, beyond `*_fail` fails (rates: below)."""

    min_rate_hz_fail: float = 42.0  # ALOHA's re-record threshold on the mean control rate
    min_rate_hz_warn: float = 48.0
    jitter_p99_ms_warn: float = 2.0  # p99 of |period - nominal period|
    jitter_p99_ms_fail: float = 10.0
    max_dropped_frames_warn: int = 0  # per camera, per episode
    max_dropped_frames_fail: int = 25
    max_repeated_frac_warn: float = 0.02  # fraction of steps showing the previous step's camera frame
    max_repeated_frac_fail: float = 0.10
    frozen_s_warn: float = 0.5  # longest run of new frames with identical content (camera image frozen)
    frozen_s_fail: float = 2.0
    skew_ms_warn: float = 40.0  # p99 of (state time - frame capture time)
    skew_ms_fail: float = 100.0
    tracking_err_rad_warn: float = 0.15  # p99 over steps of the worst arm joint |leader - follower|
    tracking_err_rad_fail: float = 0.40
    max_hw_errors_warn: int = 0  # servo hardware errors seen during the episode
    max_hw_errors_fail: int = 0
    min_length_s_warn: float = 1.0  # episode length (steps / control rate): a 1-step "episode" is no demonstration
    min_length_s_fail: float = 0.5

    @classmethod
    def from_mapping(cls, values: dict) -> "QualityThresholds":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown [quality] keys: {', '.join(sorted(unknown))}")
        return cls(**values)


@dataclass
class Check:
    name: str
    status: Status
    value: float | None
    unit: str
    detail: str = ""


@dataclass
class QualityReport:
    status: Status
    checks: list[Check] = field(default_factory=list)
    thresholds: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), allow_nan=False, default=_nan_to_none)

    @classmethod
    def from_json(cls, text: str | bytes | None) -> "QualityReport | None":
        if not text:
            return None
        d = json.loads(text)
        return cls(d["status"], [Check(**c) for c in d["checks"]], d.get("thresholds", {}))

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def format(self) -> str:
        lines = [f"quality: {self.status.upper()}"]
        for c in self.checks:
            val = "-" if c.value is None else f"{c.value:.4g} {c.unit}".rstrip()
            lines.append(f"  {c.status:4s}  {c.name:28s} {val:>14s}  {c.detail}")
        return "\n".join(lines)


def _nan_to_none(o):  # json default hook for numpy scalars
    if isinstance(o, (np.floating, np.integer)):
        v = o.item()
        return None if isinstance(v, float) and not math.isfinite(v) else v
    raise TypeError(type(o))


def _grade(value: float, warn: float, fail: float, higher_is_worse: bool = True) -> Status:
    if not math.isfinite(value):
        return "fail"
    if higher_is_worse:
        return "fail" if value > fail else "warn" if value > warn else "pass"
    return "fail" if value < fail else "warn" if value < warn else "pass"


@dataclass
class CameraTrack:
    """Per-step capture metadata of one camera."""

    t: np.ndarray  # (T,) capture time
    seq: np.ndarray  # (T,) device sequence number
    crc: np.ndarray  # (T,) CRC-32 of the stored JPEG
    writer_dropped: int = 0  # frames the writer could not encode in time (previous frame reused)


@dataclass
class QualityInput:
    t: np.ndarray  # (T,) rig clock per step
    qpos: np.ndarray  # (T, 14)
    action: np.ndarray  # (T, 14)
    cameras: dict[str, CameraTrack]
    hw_errors: list[tuple[int, str]]
    control_hz: float | None = None  # nominal rate; None = take the median period
    timestamps_measured: bool = True  # False for imported files whose timestamps were synthesized
    t_wall: np.ndarray | None = None  # (T,) wall clock per step: the timing that really happened (also in sim)
    sim: bool = False  # simulation: sim time is exact and a still scene renders identical frames
    trial: bool = False  # a policy rollout (recorder.format.TRIAL_ATTR): /action is the policy's request
    command: np.ndarray | None = None  # (T, 14) what the safety layer sent (trials' tracking)


def _clock(q: QualityInput) -> tuple[np.ndarray, str]:
    """Wall time where every step has it (lateness that really happened, also in simulation), else the rig
    clock."""
    n = len(q.t)
    if q.t_wall is not None and len(q.t_wall) == n and n > 1 and np.all(np.isfinite(q.t_wall)):
        return np.asarray(q.t_wall, np.float64), "wall clock"
    return np.asarray(q.t, np.float64), "rig clock"


def compute_quality(q: QualityInput, th: QualityThresholds) -> QualityReport:
    """Grades what matters on the kind of episode (module docstring): simulation timing is not graded, a trial's
    tracking is follower vs command."""
    checks: list[Check] = []
    n = len(q.t)
    dt_rig = np.diff(q.t) if n > 1 else np.zeros(0)
    nominal = 1.0 / q.control_hz if q.control_hz else (float(np.median(dt_rig)) if len(dt_rig) else float("nan"))
    length_s = n * nominal if math.isfinite(nominal) else float("nan")
    checks.append(Check("length", _grade(length_s, th.min_length_s_warn, th.min_length_s_fail, False)
                        if math.isfinite(length_s) else ("fail" if n < 2 else "n/a"),
                        length_s if math.isfinite(length_s) else None, "s", f"{n} steps"))

    clock, clock_name = _clock(q)
    dt = np.diff(clock) if n > 1 else np.zeros(0)
    sim_note = "; simulation: sim time is exact, so wall-clock lateness is not graded" if q.sim else ""
    if not q.timestamps_measured or len(dt) == 0 or clock[-1] <= clock[0]:
        checks.append(Check("control_rate", "n/a", None, "Hz", "no measured timestamps"))
        checks.append(Check("period_jitter_p99", "n/a", None, "ms"))
    else:
        rate = (n - 1) / float(clock[-1] - clock[0])
        checks.append(Check("control_rate", "n/a" if q.sim else
                            _grade(rate, th.min_rate_hz_warn, th.min_rate_hz_fail, False),
                            rate, "Hz", f"mean over {n} steps ({clock_name}); nominal {1 / nominal:.4g} Hz{sim_note}"))
        dev_ms = np.abs(dt - nominal) * 1000.0
        p99 = float(np.percentile(dev_ms, 99))
        checks.append(Check("period_jitter_p99",
                            "n/a" if q.sim else _grade(p99, th.jitter_p99_ms_warn, th.jitter_p99_ms_fail), p99,
                            "ms", f"max period {dt.max() * 1000:.1f} ms ({clock_name}){sim_note}"))

    for cam, tr in q.cameras.items():
        checks.extend(_camera_checks(cam, tr, q, nominal, th))

    if n and q.trial and (q.command is None or len(q.command) < n):
        checks.append(Check("tracking_error_p99", "n/a", None, "rad",
                            "a policy rollout without the commands sent (its action is the policy's request)"))
    elif n:
        target, what = (q.command[:n], "follower vs the command sent") if q.trial else (q.action, "leader vs follower")
        err = np.abs(np.asarray(target)[:, ARM_JOINT_COLUMNS] - q.qpos[:, ARM_JOINT_COLUMNS]).max(axis=1)
        p99 = float(np.percentile(err, 99))
        checks.append(Check("tracking_error_p99", _grade(p99, th.tracking_err_rad_warn, th.tracking_err_rad_fail),
                            p99, "rad", f"max {err.max():.3f} rad (worst arm joint, {what})"))
    nerr = len(q.hw_errors)
    msgs = sorted({m for _, m in q.hw_errors})
    detail = ("; ".join(msgs[:3]) + (" ..." if len(msgs) > 3 else "")) if msgs else ""
    checks.append(Check("servo_hw_errors", _grade(nerr, th.max_hw_errors_warn, th.max_hw_errors_fail), nerr, "",
                        detail))

    graded = [c.status for c in checks if c.status != "n/a"]
    status: Status = max(graded, key=_RANK.__getitem__) if graded else "n/a"
    return QualityReport(status, checks, asdict(th))


def _camera_checks(cam: str, tr: CameraTrack, q: QualityInput, nominal: float, th: QualityThresholds) -> list[Check]:
    n = len(tr.seq)
    if n == 0:
        return []
    dseq = np.diff(tr.seq)
    adv = dseq > 0
    # Camera rate from its own capture clock, so a 60 fps camera sampled at 50 Hz is not "dropping" frames.
    dcap = np.diff(tr.t)
    per_frame = dcap[adv] / dseq[adv]
    cam_interval = float(np.median(per_frame)) if per_frame.size else float("nan")
    if q.timestamps_measured and math.isfinite(cam_interval) and cam_interval > 0 and math.isfinite(nominal):
        expected = max(1, math.ceil(nominal / cam_interval - 0.05))
        fps_detail = f"camera {1 / cam_interval:.1f} fps"
    else:
        expected, fps_detail = 1, ""
    dropped = int(np.maximum(dseq - expected, 0).sum()) + tr.writer_dropped
    repeated = int((dseq == 0).sum())
    out = [
        Check(f"dropped_frames/{cam}", _grade(dropped, th.max_dropped_frames_warn, th.max_dropped_frames_fail),
              dropped, "frames", f"{tr.writer_dropped} by the writer; {fps_detail}".strip("; ")),
        Check(f"repeated_frames/{cam}",
              _grade(repeated / max(n - 1, 1), th.max_repeated_frac_warn, th.max_repeated_frac_fail),
              repeated, "frames", f"{100 * repeated / max(n - 1, 1):.1f}% of steps"),
    ]
    # frozen: new device frames whose JPEG bytes equal the previous frame's; repeated steps neither break
    # nor end a run, so the run length is in steps of the episode
    same_crc = np.diff(tr.crc) == 0
    longest = run = 0
    for a, s in zip(adv, same_crc):
        if a:
            run = run + 1 if s else 0
        elif run:
            run += 1
        longest = max(longest, run)
    step_s = nominal if math.isfinite(nominal) else 0.0
    frozen_s = longest * step_s
    if q.sim:  # the rendered scene stops changing once the task is done: identical frames are expected
        out.append(Check(f"frozen/{cam}", "n/a", frozen_s, "s",
                         f"{longest} steps without a new image (simulation: a still scene, not a camera fault)"))
    else:
        out.append(Check(f"frozen/{cam}", _grade(frozen_s, th.frozen_s_warn, th.frozen_s_fail), frozen_s, "s",
                         f"{longest} steps without a new image"))
    if q.timestamps_measured:
        skew_ms = np.abs(q.t[:n] - tr.t) * 1000.0
        p99 = float(np.percentile(skew_ms, 99))
        out.append(Check(f"skew_p99/{cam}", _grade(p99, th.skew_ms_warn, th.skew_ms_fail), p99, "ms",
                         f"max {skew_ms.max():.1f} ms camera-to-state"))
    else:
        out.append(Check(f"skew_p99/{cam}", "n/a", None, "ms", "no measured timestamps"))
    return out
