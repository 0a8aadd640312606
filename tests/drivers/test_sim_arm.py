"""SimArm (follower) behind the Arm contract, in ALOHA space."""
from __future__ import annotations

import numpy as np
import pytest

from drivers.arm import Arm, START_POSE
from drivers.errors import DriverError
from drivers.sim import AlohaSim, SimArm
from drivers.sim.aloha_sim import START_FINGER
from drivers.gripper import GRIPPER_PRESETS


@pytest.fixture
def sim_arms():
    sim = AlohaSim("transfer_cube", seed=0)
    arms = {s: SimArm(sim, s) for s in ("left", "right")}
    for a in arms.values():
        a.connect()
    yield sim, arms
    sim.close()


def test_is_an_arm_and_reads_start_state(sim_arms):
    sim, arms = sim_arms
    for side, arm in arms.items():
        assert isinstance(arm, Arm) and arm.role == "follower" and arm.name == f"follower_{side}"
        st = arm.read()
        assert st.position.shape == st.velocity.shape == st.effort.shape == (7,)
        np.testing.assert_allclose(st.position[:6], START_POSE)
        assert st.position[6] == pytest.approx(GRIPPER_PRESETS["aloha1"].follower_finger_to_normalized(START_FINGER))
        assert st.t == sim.time


def test_follower_tracks_commanded_pose_14d(sim_arms):
    sim, arms = sim_arms
    goal = {
        "left": np.array([0.3, -0.6, 0.9, 0.2, -0.1, 0.3, 0.8]),
        "right": np.array([-0.3, -0.7, 1.0, -0.2, 0.2, -0.3, 0.2]),
    }
    for _ in range(150):  # 3 s; the joint-space gains are gym-aloha's (weak wrist/roll servos)
        for s, a in arms.items():
            a.command(goal[s])
        sim.step()
    state = np.concatenate([arms[s].read().position for s in ("left", "right")])
    want = np.concatenate([goal["left"], goal["right"]])
    np.testing.assert_allclose(state[[0, 1, 2, 7, 8, 9]], want[[0, 1, 2, 7, 8, 9]], atol=0.03)
    np.testing.assert_allclose(state[[3, 4, 5, 10, 11, 12]], want[[3, 4, 5, 10, 11, 12]], atol=0.1)
    np.testing.assert_allclose(state[[6, 13]], want[[6, 13]], atol=0.08)  # normalized finger opening
    vel = arms["left"].read().velocity
    assert np.all(np.abs(vel) < 0.2)  # settled


def test_torque_off_lets_go_and_torque_on_holds_where_it_is(sim_arms):
    sim, arms = sim_arms
    arm = arms["left"]
    arm.set_torque(False)
    assert not any(j.torque for j in arm.status().joints)
    arm.command(np.concatenate([START_POSE + 0.5, [1.0]]))  # ignored without torque
    sim.step(50)
    sagged = arm.read().position
    arm.set_torque(True)
    sim.step(50)
    held = arm.read().position
    np.testing.assert_allclose(held[:3], sagged[:3], atol=0.05)  # holds (no jump to the ignored goal)
    assert abs(held[0] - (START_POSE[0] + 0.5)) > 0.3


def test_fault_and_reboot(sim_arms):
    _, arms = sim_arms
    arm = arms["right"]
    arm.inject_fault("gripper")
    assert [j.name for j in arm.status().faulted] == ["gripper"]
    arm.reboot("gripper")
    assert arm.status().faulted == []
    with pytest.raises(DriverError):
        arm.reboot("elbow_shadow")


def test_use_before_connect_and_bad_commands_raise():
    sim = AlohaSim("insertion", seed=0)
    arm = SimArm(sim, "left")
    with pytest.raises(DriverError):
        arm.read()
    arm.connect()
    with pytest.raises(DriverError):
        arm.command(np.zeros(6))
    with pytest.raises(DriverError):
        arm.command(np.full(7, np.nan))
    arm.disconnect()
    assert not arm.connected and not any(j.torque for j in arm.status().joints)
    sim.close()
