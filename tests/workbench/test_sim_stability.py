"""MuJoCo stays stable in trials and teleop on the simulator: no "Nan, Inf or huge value in QACC ... simulation is
unstable" (MuJoCo then resets the world mid-episode). That warning is the sign of commands jumping: it appears
(QACC at a wrist DOF within a few seconds) when a policy's commands alternate by 1.5 rad from one tick to the
next and the safety layer's per-tick step cap and goal bound are taken out; through the safety layer the same
policy is a bounded motion. Every MuJoCo warning of the process counts (the world and the demonstrator's
planning models), and each world's own counters (`MjData.warning`) must stay zero."""
from __future__ import annotations

import dataclasses

import drivers.sim  # noqa: F401 - before mujoco (drivers/sim/llvm_order.py)
import mujoco
import numpy as np
import pytest

from recorder.store import DatasetStore
from workbench import events as ev
from workbench.backends import build_rig
from workbench.config import load_rig_config
from workbench.deploy.chunk_check import ChunkLimits
from workbench.deploy.policy_source import ExecConfig
from workbench.session import RigSession

from trial_helpers import RampPolicy, run_trials, wait_event

# a policy known to be wild: the chunk check's own tolerances opened wide, so only the safety layer stands between
# its chunks and the servos (that is what this file is about)
WIDE = ChunkLimits(first_action_steps=1e6, velocity_tolerance=1e6, limit_tolerance=10.0, trained_range=False)


class Chatter(RampPolicy):
    """Every chunk alternates between the observed state + amp and - amp, tick by tick."""

    def __init__(self, amp):
        super().__init__()
        self.amp = np.asarray(amp, dtype=np.float64)

    def infer(self, state, images, prompt, seed=None, step=None, prefix=None, delay=0):
        with self.lock:
            self.requests.append({"step": step})
        return np.tile(np.asarray(state, dtype=np.float64), (50, 1)) + np.outer((-1.0) ** np.arange(50), self.amp)


@pytest.fixture(scope="module")
def sim_session():
    cfg = load_rig_config("sim-transfer-cube")
    cfg = dataclasses.replace(cfg, cameras=tuple(dataclasses.replace(c, width=64, height=48) for c in cfg.cameras))
    rig = build_rig(cfg)
    rig.connect()
    session = RigSession(rig)
    yield session
    session.close(torque_off_here=True)


@pytest.fixture
def mujoco_warnings():
    """Every MuJoCo warning raised in the process while the test runs (MuJoCo prints them only)."""
    seen: list[str] = []
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(seen.append)
    yield seen
    mujoco.set_mju_user_warning(previous)


def world_warnings(rig) -> dict[str, int]:
    d = rig.sim.data
    return {mujoco.mjtWarning(i).name: int(d.warning[i].number) for i in range(len(d.warning))
            if d.warning[i].number}


def test_a_wild_policy_through_the_safety_layer_keeps_the_simulation_stable(sim_session, tmp_path, mujoco_warnings):
    rig = sim_session.rig
    before = world_warnings(rig)
    amp = np.tile([1.5, 1.5, 1.5, 3.0, 2.0, 3.0, 1.0], 2)
    runner, seen = run_trials(sim_session, DatasetStore(tmp_path), Chatter(amp), time_limit_s=4.0,
                              execution=ExecConfig(mode="async", delay_ticks=2, chunk_limits=WIDE), takeover=True)
    assert not [e for e in seen if isinstance(e, ev.SessionError)]
    assert runner.results and runner.results[0].info.ended_by == "time_limit"
    assert mujoco_warnings == [] and world_warnings(rig) == before == {}, (mujoco_warnings, world_warnings(rig))


def test_an_ordinary_trial_with_a_takeover_and_teleop_keep_the_simulation_stable(sim_session, tmp_path,
                                                                                  mujoco_warnings):
    """A trial from the start sequence (followers and leaders to the start pose), the policy, the scripted
    operator's squeeze takeover, the demonstrator finishing the task; then a teleoperated demonstration."""
    rig = sim_session.rig

    def during(runner, seen):
        wait_event(seen, ev.ChunkArrived, where=lambda e: e.tick >= 60)
        rig.leaders["right"].take_over()
        wait_event(seen, ev.TakeoverChanged, where=lambda e: e.operator)

    runner, seen = run_trials(sim_session, DatasetStore(tmp_path), RampPolicy(rate=0.002), seeds=(3,),
                              time_limit_s=12.0, during=during, execution=ExecConfig(mode="async", delay_ticks=3))
    assert not [e for e in seen if isinstance(e, ev.SessionError)]
    assert runner.results[0].info.interventions
    sim_session.start_teleop(squeeze_timeout=10, seed=4, steps=300)
    assert sim_session.wait(240) and sim_session.last_error is None
    assert mujoco_warnings == [] and world_warnings(rig) == {}, (mujoco_warnings, world_warnings(rig))
