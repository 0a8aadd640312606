"""The sim's clock: `now()` is sim time and `sleep_until()` advances physics, so a control loop paced on this
clock runs the simulation at its own speed and stamps everything with sim time."""
from __future__ import annotations

import math
import time

from drivers.sim.aloha_sim import AlohaSim


class SimClock:
    """drivers.clock.Clock over an AlohaSim.

    realtime=False (default): steps as fast as the loop (and rendering) allow; never pretends to be wall time.
    realtime=True: additionally waits so sim time does not run ahead of wall time (for a GUI); `now()` is still
    sim time. When the sim falls behind wall time (slow rendering) it does not try to catch up in a burst: the
    wall-clock anchor is moved instead, and `lag_resets` counts how often that happened.
    """

    _MAX_LAG_S = 0.1

    def __init__(self, sim: AlohaSim, realtime: bool = False):
        self.sim = sim
        self.realtime = realtime
        self.lag_resets = 0
        self._anchor: tuple[float, float] | None = None  # (sim time, wall time)

    def now(self) -> float:
        return self.sim.time

    def ticks_until(self, deadline: float) -> int:
        """Whole ticks needed so that now() >= deadline (1e-6 tick tolerance against float rounding)."""
        return max(0, math.ceil((deadline - self.sim.time) / self.sim.dt - 1e-6))

    def sleep_until(self, deadline: float) -> None:
        """Advance physics tick by tick (10 substeps each) until sim time reaches `deadline`."""
        for _ in range(self.ticks_until(deadline)):
            self.sim.step()
            if self.realtime:
                self._pace()

    def _pace(self) -> None:
        sim_t, wall = self.sim.time, time.monotonic()
        if self._anchor is None:
            self._anchor = (sim_t, wall)
            return
        target = self._anchor[1] + (sim_t - self._anchor[0])
        if wall - target > self._MAX_LAG_S:
            self._anchor = (sim_t, wall)
            self.lag_resets += 1
        elif target > wall:
            time.sleep(target - wall)
