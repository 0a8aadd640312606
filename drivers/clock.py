"""Clocks: the control loop is paced against deadlines on a clock, never by fixed sleeps.

RealClock is time.monotonic. A simulator provides its own Clock whose `sleep_until` advances physics,
so the same loop runs as fast as the simulation allows and stamps everything with simulated time.
"""
from __future__ import annotations

import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    realtime: bool

    def now(self) -> float: ...

    def sleep_until(self, deadline: float) -> None: ...


class RealClock:
    realtime = True
    _SPIN_S = 0.0003  # sleep() overshoots by ~60-100 us on Linux; spin the last bit for a tight period

    def now(self) -> float:
        return time.monotonic()

    def sleep_until(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining > self._SPIN_S:
            time.sleep(remaining - self._SPIN_S)
        while time.monotonic() < deadline:
            pass
