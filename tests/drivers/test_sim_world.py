"""The simulated world: model, tasks, randomization, clock. Real MuJoCo, no mocks."""
from __future__ import annotations

import time

import numpy as np
import pytest

from drivers.sim import AlohaSim, SimClock, TASKS
from drivers.sim.aloha_sim import START_FINGER, sample_object_poses
from drivers.arm import START_POSE


@pytest.fixture(scope="module")
def cube_sim():
    sim = AlohaSim("transfer_cube", seed=0)
    yield sim
    sim.close()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_models_load_with_arms_objects_and_cameras(task):
    sim = AlohaSim(task.replace("_", "-"), seed=1)  # "transfer-cube" spelling accepted too
    assert sim.task.name == task
    assert sim.substeps == 10 and sim.dt == pytest.approx(0.02)
    for name in ("top", "angle", "left_wrist", "right_wrist", "front_close"):
        assert name in sim.camera_names
    for side in ("left", "right"):
        ix = sim.arm_index(side)
        np.testing.assert_allclose(sim.data.qpos[ix.qpos], START_POSE)
        np.testing.assert_allclose(sim.data.qpos[ix.finger_qpos], [START_FINGER, -START_FINGER])
    assert set(sim.object_poses()) == {o.joint for o in sim.task.objects}
    assert sim.reward() == 0 and not sim.success
    sim.close()


def test_insertion_measures_both_grippers_reach():
    sim = AlohaSim("insertion", seed=2)
    reach = sim.reach()
    assert set(reach) == {"left", "right"} and all(0.05 < d < 0.5 for d in reach.values())
    sim.close()


def test_cube_pose_in_documented_range_and_seeded(cube_sim):
    seen = []
    for seed in range(20):
        cube_sim.reset(seed)
        pose = cube_sim.initial_object_poses["red_box_joint"]
        assert 0.0 <= pose[0] <= 0.2 and 0.4 <= pose[1] <= 0.6 and pose[2] == pytest.approx(0.05)
        np.testing.assert_allclose(pose[3:], [1, 0, 0, 0])
        np.testing.assert_allclose(cube_sim.object_poses()["red_box_joint"], pose)  # placed in the world
        seen.append(pose[:2])
    assert len({tuple(np.round(p, 9)) for p in seen}) == 20  # seeds differ
    cube_sim.reset(7)
    again = cube_sim.initial_object_poses["red_box_joint"]
    np.testing.assert_array_equal(again, sample_object_poses(cube_sim.task, 7)["red_box_joint"])
    np.testing.assert_array_equal(again[:2], seen[7])


def test_insertion_poses_in_ranges():
    spec = TASKS["insertion"]
    for seed in range(10):
        poses = sample_object_poses(spec, seed)
        peg, socket = poses["red_peg_joint"], poses["blue_socket_joint"]
        assert 0.1 <= peg[0] <= 0.2 and 0.4 <= peg[1] <= 0.6
        assert -0.2 <= socket[0] <= -0.1 and 0.4 <= socket[1] <= 0.6


def test_objects_fall_to_rest_and_reward_stays_zero(cube_sim):
    cube_sim.reset(3)
    cube_sim.step(25)
    box = cube_sim.object_poses()["red_box_joint"]
    assert box[2] == pytest.approx(0.02, abs=2e-3)  # 4 cm cube resting on the table
    assert cube_sim.reward() == 0 and cube_sim.max_reward == 0


def test_clock_advances_exactly_by_ticks_without_wall_time(cube_sim, monkeypatch):
    clock = SimClock(cube_sim)
    assert clock.realtime is False

    def no_sleep(_s):
        raise AssertionError("a non-realtime SimClock must never sleep")

    monkeypatch.setattr(time, "sleep", no_sleep)
    t0, tick0 = clock.now(), cube_sim.tick
    deadline = t0
    for k in range(1, 101):
        deadline += 0.02
        clock.sleep_until(deadline)
        assert cube_sim.tick == tick0 + k
        assert clock.now() == (tick0 + k) * 0.02
    clock.sleep_until(clock.now() - 1.0)  # a deadline in the past does not step
    clock.sleep_until(clock.now())
    assert cube_sim.tick == tick0 + 100
    clock.sleep_until(clock.now() + 0.03)  # not on a tick boundary: whole ticks until reached
    assert cube_sim.tick == tick0 + 102


def test_time_and_tick_never_go_back_on_reset(cube_sim):
    cube_sim.step(3)
    before = (cube_sim.tick, cube_sim.time)
    cube_sim.reset(1)
    assert cube_sim.tick == before[0] + 1 and cube_sim.time > before[1]
    assert cube_sim.episode_tick == 0


def test_realtime_clock_keeps_sim_time():
    sim = AlohaSim("transfer_cube", seed=0)
    clock = SimClock(sim, realtime=True)
    t0 = clock.now()
    clock.sleep_until(t0 + 0.1)
    assert clock.now() == pytest.approx(t0 + 0.1)
    sim.close()
