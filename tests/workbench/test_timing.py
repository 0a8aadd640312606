"""Deadline pacing: no drift, skipped deadlines instead of bursts, statistics."""
import math

import pytest

from workbench.timing import LoopTiming, Pacer


class StepClock:
    """A deterministic clock: sleeping jumps to the deadline; `work` adds time like a tick's own work would."""

    realtime = False

    def __init__(self):
        self.t = 100.0

    def now(self):
        return self.t

    def sleep_until(self, deadline):
        self.t = max(self.t, deadline)


def test_deadlines_do_not_drift_with_work():
    clock = StepClock()
    pacer = Pacer(clock, 50)
    t0 = pacer.start()
    starts = []
    for _ in range(500):
        clock.t += 0.013  # 13 ms of work per tick
        starts.append(pacer.wait())
    assert starts[-1] == pytest.approx(t0 + 500 * 0.02, abs=1e-9)
    assert pacer.skipped == 0


def test_overrun_skips_missed_deadlines_instead_of_bursting():
    clock = StepClock()
    pacer = Pacer(clock, 50)
    t0 = pacer.start()
    clock.t += 0.065  # one tick took 65 ms: the 20 and 40 ms slots are gone, the 60 ms slot is due now
    nxt = pacer.wait()
    assert pacer.skipped == 2
    assert nxt == pytest.approx(t0 + 0.06)
    assert clock.now() == pytest.approx(t0 + 0.065)  # no waiting: the late tick runs at once
    clock.t += 0.001
    assert pacer.wait() == pytest.approx(t0 + 0.08)  # and the cadence is back on the original grid


def test_timing_summary():
    timing = LoopTiming(50)
    t = 0.0
    for k in range(101):
        timing.record(t, 0.001, 0.002)
        t += 0.02 if k != 50 else 0.05  # one overrun
    s = timing.summary()
    assert s.ticks == 101 and s.overruns == 1
    assert s.period_p50_ms == pytest.approx(20.0)
    assert s.period_max_ms == pytest.approx(50.0)
    assert s.work_p50_ms == pytest.approx(1.0) and s.io_p50_ms == pytest.approx(2.0)
    assert not math.isnan(s.rate_hz)
    assert "p99" in s.format()


def test_rate_must_be_positive():
    with pytest.raises(ValueError):
        Pacer(StepClock(), 0)


def _sched(tid):
    import os

    return os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)


def _may_raise_priority() -> bool:
    """Whether this process may use SCHED_FIFO (root, CAP_SYS_NICE or an rtprio grant), tried on a throwaway thread."""
    import os
    import threading

    ok = []

    def probe():
        try:
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_FIFO, os.sched_param(1))
            ok.append(True)
        except (PermissionError, OSError):
            ok.append(False)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return ok[0]


@pytest.mark.parametrize("realtime", [50, 0])
def test_elevated_priority_applies_then_restores(realtime):
    """Inside: SCHED_FIFO (or a lower nice) for this thread only, whenever the process is allowed it; after: as
    before. Without permission it must say "normal" and change nothing."""
    import os
    import threading

    from workbench.timing import elevated_priority

    allowed = _may_raise_priority()
    result = {}

    def body():  # a fresh thread, so the test runner's own thread is never changed
        tid = threading.get_native_id()
        before = _sched(tid)
        with elevated_priority(realtime=realtime, nice=-5) as got:
            result["got"], result["inside"] = got, _sched(tid)
        result["before"], result["after"] = before, _sched(tid)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    got, inside, before = result["got"], result["inside"], result["before"]
    if allowed and realtime > 0:
        assert got == f"SCHED_FIFO {realtime}" and inside[0] == os.SCHED_FIFO
        assert os.sched_param(realtime) is not None
    elif allowed:
        assert got == "nice -5" and inside == (before[0], -5)
    else:
        assert got == "normal" and inside == before
    assert result["after"] == before
