"""Deadline pacing and loop timing statistics.

The loop's deadlines are anchored to its start (tick k is due at t0 + k*dt), so lateness never accumulates
into drift. A tick that overruns by more than a whole period skips the missed deadlines instead of bursting
to catch up: at 50 Hz, sending three stale commands back to back is worse than skipping them.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from drivers.clock import Clock

log = logging.getLogger(__name__)


class Pacer:
    def __init__(self, clock: Clock, hz: float):
        if hz <= 0:
            raise ValueError(f"control rate must be positive, got {hz} Hz")
        self.clock, self.dt = clock, 1.0 / hz
        self._t0: float | None = None
        self._k = 0
        self.skipped = 0  # deadlines missed entirely

    def start(self) -> float:
        self._t0, self._k = self.clock.now(), 0
        return self._t0

    def wait(self) -> float:
        """Sleep to the next deadline; return it (the nominal start of the next tick)."""
        if self._t0 is None:
            return self.start()
        self._k += 1
        deadline = self._t0 + self._k * self.dt
        now = self.clock.now()
        if now > deadline + self.dt:
            missed = int((now - deadline) / self.dt)
            self.skipped += missed
            self._k += missed
            deadline = self._t0 + self._k * self.dt
        self.clock.sleep_until(deadline)
        return deadline


@dataclass(frozen=True)
class TimingSummary:
    ticks: int
    rate_hz: float  # achieved mean rate
    period_p50_ms: float
    period_p99_ms: float
    period_max_ms: float
    overruns: int  # ticks whose period exceeded 1.5 nominal periods
    skipped: int
    work_p50_ms: float  # loop's own work (excluding bus and camera I/O)
    work_p99_ms: float
    io_p50_ms: float  # bus round trips (reads + writes)
    io_p99_ms: float
    camera_p50_ms: float  # fetching camera frames (in simulation: rendering)

    def format(self) -> str:
        return (
            f"{self.ticks} ticks at {self.rate_hz:.2f} Hz | period p50 {self.period_p50_ms:.2f} ms, "
            f"p99 {self.period_p99_ms:.2f} ms, max {self.period_max_ms:.2f} ms, overruns {self.overruns}, "
            f"skipped {self.skipped} | own work p50 {self.work_p50_ms:.3f} ms, p99 {self.work_p99_ms:.3f} ms | "
            f"bus I/O p50 {self.io_p50_ms:.3f} ms, p99 {self.io_p99_ms:.3f} ms | cameras p50 {self.camera_p50_ms:.3f} ms"
        )


class LoopTiming:
    """Rolling per-tick timings (bounded memory: the last `window` ticks)."""

    def __init__(self, hz: float, window: int = 50 * 60 * 10):
        self.dt = 1.0 / hz
        self.ticks = 0
        self.overruns = 0
        self.skipped = 0
        self.periods: deque[float] = deque(maxlen=window)
        self.work: deque[float] = deque(maxlen=window)
        self.io: deque[float] = deque(maxlen=window)
        self.camera: deque[float] = deque(maxlen=window)
        self._first_t: float | None = None
        self._last_t: float | None = None

    def record(self, t_start: float, work_s: float, io_s: float, camera_s: float = 0.0) -> float:
        """Record a tick that started at t_start; return the measured period (nan for the first)."""
        period = math.nan
        if self._last_t is not None:
            period = t_start - self._last_t
            self.periods.append(period)
            if period > 1.5 * self.dt:
                self.overruns += 1
        else:
            self._first_t = t_start
        self._last_t = t_start
        self.ticks += 1
        self.work.append(work_s)
        self.io.append(io_s)
        self.camera.append(camera_s)
        return period

    def summary(self) -> TimingSummary:
        def pct(values, q):
            return float(np.percentile(np.fromiter(values, float), q) * 1e3) if values else math.nan

        span = (self._last_t - self._first_t) if self._first_t is not None and self.ticks > 1 else 0.0
        rate = (self.ticks - 1) / span if span > 0 else math.nan
        return TimingSummary(
            ticks=self.ticks,
            rate_hz=rate,
            period_p50_ms=pct(self.periods, 50),
            period_p99_ms=pct(self.periods, 99),
            period_max_ms=(max(self.periods) * 1e3) if self.periods else math.nan,
            overruns=self.overruns,
            skipped=self.skipped,
            work_p50_ms=pct(self.work, 50),
            work_p99_ms=pct(self.work, 99),
            io_p50_ms=pct(self.io, 50),
            io_p99_ms=pct(self.io, 99),
            camera_p50_ms=pct(self.camera, 50),
        )



@contextlib.contextmanager
def elevated_priority(realtime: int = 50, nice: int = -10) -> Iterator[str]:
    """Best effort: a higher CPU priority for the calling thread (the control loop) while inside; yields what it got.

    On a busy PC (GUI drawing, video encoding) the 50 Hz loop must get a core the moment its deadline comes: under
    the normal scheduler a woken thread can wait a millisecond or more behind others. `realtime` > 0 asks for
    SCHED_FIFO at that priority (as ros2_control does), else it falls back to a lower niceness. Both need root,
    CAP_SYS_NICE or a limits.conf grant (`@robot - rtprio 50`, `@robot - nice -10`); without them the loop runs at
    normal priority and says so once. The previous policy comes back on exit, so threads this one starts later
    (e.g. after a CLI teleop run) do not inherit it.
    """
    tid = threading.get_native_id()
    try:
        old_policy, old_param = os.sched_getscheduler(tid), os.sched_getparam(tid)
        old_nice = os.getpriority(os.PRIO_PROCESS, tid)
    except (OSError, AttributeError):  # not Linux
        yield "normal"
        return
    got = "normal"
    if realtime > 0:
        try:
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(realtime))
            got = f"SCHED_FIFO {realtime}"
        except (PermissionError, OSError):
            pass
    if got == "normal" and nice < old_nice:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
            got = f"nice {nice}"
        except (PermissionError, OSError):
            pass
    asked = realtime > 0 or nice < old_nice
    if got == "normal" and asked and not _warned:
        _warned.append(True)
        log.info("control loop runs at normal CPU priority (no permission for a higher one; see README)")
    try:
        yield got
    finally:
        try:
            os.sched_setscheduler(tid, old_policy, old_param)
            os.setpriority(os.PRIO_PROCESS, tid, old_nice)
        except (PermissionError, OSError):
            pass


_warned: list[bool] = []
