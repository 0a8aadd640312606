"""DynamixelArm against emulated ALOHA chains: configuration at connect, torque, gripper mapping, faults, reboot."""
from __future__ import annotations

import time

import numpy as np
import pytest

from drivers.arm import Arm, ArmState
from drivers.dynamixel import control_table as ct
from drivers.dynamixel_arm import (DynamixelArm, DynamixelArmConfig, config_from_settings, default_layout,
                                   validate_arm_settings)
from drivers.errors import ServoHardwareError
from drivers.gripper import GRIPPER_PRESETS


def _settle(arm):
    arm.bus.ping(1)  # round trip: earlier unanswered sync writes have been handled


def test_follower_configuration_at_connect(dxl_arm):
    arm, chain = dxl_arm("follower", gripper_current_limit=200)
    _settle(arm)
    assert isinstance(arm, Arm) and arm.connected
    for m in default_layout("vx300s"):
        s = chain.servo(m.id)
        assert s.torque, m.name
        assert s.reverse == m.reverse, m.name
        assert s.get(ct.RETURN_DELAY_TIME) == 0
        assert s.get(ct.VELOCITY_LIMIT) == 131
        assert s.get(ct.POSITION_P_GAIN) == 800
        assert s.secondary_id == (m.shadow_of if m.is_shadow else 255)
        assert (s.get(ct.MIN_POSITION_LIMIT), s.get(ct.MAX_POSITION_LIMIT)) == (m.min_tick, m.max_tick)
        if m.name == "gripper":
            assert s.mode == ct.MODE_CURRENT_POSITION and s.get(ct.CURRENT_LIMIT) == 200
        else:
            assert s.mode == ct.MODE_POSITION
    assert chain.servo(8).get(ct.CURRENT_LIMIT) == 1193  # untouched XM430 default
    assert chain.servo(1).get(ct.CURRENT_LIMIT) == 2047  # XM540 default


def test_reconnect_writes_no_eeprom_and_keeps_torque(dxl_arm, dxl_chains):
    arm, chain = dxl_arm("follower")
    _settle(arm)
    before = {i: bytes(chain.servo(i).table[:64]) for i in range(1, 10)}
    arm2 = DynamixelArm(arm.config)  # e.g. a second process start; torque stays on, EEPROM already right
    arm.bus.close()
    arm2.connect()
    _settle(arm2)
    assert all(chain.servo(i).torque for i in range(1, 10))
    assert {i: bytes(chain.servo(i).table[:64]) for i in range(1, 10)} == before
    arm2.disconnect()


def test_leader_is_torque_off_and_set_torque_splits_gripper(dxl_arm):
    arm, chain = dxl_arm("leader")
    _settle(arm)
    assert not any(chain.servo(i).torque for i in range(1, 10))
    assert chain.servo(9).mode == ct.MODE_POSITION  # XC430 leader gripper: plain position mode
    assert chain.servo(3).reverse and chain.servo(5).reverse and not chain.servo(2).reverse  # wx250s shadows
    arm.set_torque(True, False)
    _settle(arm)
    assert [chain.servo(i).torque for i in range(1, 10)] == [True] * 8 + [False]
    st = arm.status()
    assert [j.torque for j in st.joints] == [True] * 8 + [False]
    assert all(j.voltage_v == pytest.approx(12.0) and j.temperature_c > 0 for j in st.joints)
    arm.set_torque(False)
    _settle(arm)
    assert not any(chain.servo(i).torque for i in range(1, 10))


def test_read_is_one_sync_read_and_shapes(dxl_arm):
    arm, chain = dxl_arm("follower")
    _settle(arm)
    n = chain.packets_handled
    t0 = time.monotonic()
    s = arm.read()
    assert chain.packets_handled == n + 1
    assert isinstance(s, ArmState) and s.position.shape == s.velocity.shape == s.effort.shape == (7,)
    assert t0 <= s.t <= time.monotonic()
    np.testing.assert_allclose(s.position[:6], 0.0, atol=1e-9)


@pytest.mark.parametrize("preset", ["aloha1", "aloha2"])
def test_gripper_mapping_leader_to_follower(dxl_arm, preset):
    g = GRIPPER_PRESETS[preset]
    leader, lchain = dxl_arm("leader", gripper=g)
    follower, fchain = dxl_arm("follower", gripper=g)
    # an operator holds the leader gripper joint at 30% of its range
    x = g.leader_joint_close + 0.3 * (g.leader_joint_open - g.leader_joint_close)
    lchain.servo(9).set_present(ct.rad_to_ticks(x))
    q = leader.read().position
    assert q[6] == pytest.approx(0.3, abs=2 * ct.RAD_PER_TICK / (g.leader_joint_open - g.leader_joint_close))
    follower.command(q)  # ALOHA teleop: follower joint = unnormalize_follower(normalize_leader(leader joint))
    _settle(follower)
    goal = fchain.servo(9).get(ct.GOAL_POSITION, signed=True)
    assert goal == ct.rad_to_ticks(g.normalized_to_follower_joint(q[6]))
    deadline = time.monotonic() + 10
    while abs(follower.read().position[6] - q[6]) > 0.01 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert follower.read().position[6] == pytest.approx(q[6], abs=0.01)
    # the ends of the range
    follower.command(np.r_[np.zeros(6), 1.0])
    _settle(follower)
    assert fchain.servo(9).get(ct.GOAL_POSITION, signed=True) == ct.rad_to_ticks(g.follower_joint_open)
    follower.command(np.r_[np.zeros(6), 0.0])
    _settle(follower)
    assert fchain.servo(9).get(ct.GOAL_POSITION, signed=True) == ct.rad_to_ticks(g.follower_joint_close)


def test_overload_on_follower_gripper_then_reboot(dxl_arm):
    arm, chain = dxl_arm("follower")
    arm.command(np.r_[np.zeros(6), 0.2])
    chain.inject_hardware_error(9, 0x20)
    with pytest.raises(ServoHardwareError) as exc:
        arm.read()
    e = exc.value
    assert (e.arm, e.joint, e.servo_id, e.bits) == ("follower_left", "gripper", 9, 0x20)
    assert "follower_left" in str(e) and "gripper" in str(e) and "overload" in str(e)
    st = arm.status()
    assert [j.name for j in st.faulted] == ["gripper"]
    g = st.faulted[0]
    assert g.hardware_error == 0x20 and g.torque is False and "overload" in g.message
    arm.reboot("gripper")
    st = arm.status()
    assert not st.faulted and all(j.torque for j in st.joints)
    assert chain.servo(9).mode == ct.MODE_CURRENT_POSITION and chain.servo(9).get(ct.CURRENT_LIMIT) == 300
    arm.read()
    arm.command(np.r_[np.zeros(6), 0.8])  # and it moves again
    deadline = time.monotonic() + 10
    while abs(arm.read().position[6] - 0.8) > 0.01 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert arm.read().position[6] == pytest.approx(0.8, abs=0.01)


def test_reboot_keeps_torque_off_where_it_was_off(dxl_arm):
    arm, chain = dxl_arm("leader")
    chain.inject_hardware_error(2, 0x04)  # overheating on the shoulder
    assert {j.name for j in arm.status().faulted} == {"shoulder"}
    arm.reboot("shoulder")  # reboots the shoulder and its shadow
    _settle(arm)
    assert not arm.status().faulted and not chain.servo(2).torque and not chain.servo(3).torque
    assert chain.servo(3).secondary_id == 2 and chain.servo(3).reverse  # EEPROM survives a reboot


def test_disconnect_torques_off_and_never_raises(dxl_arm):
    arm, chain = dxl_arm("follower")
    arm.disconnect()
    assert not arm.connected
    assert not arm.status().connected
    arm.disconnect()  # twice is fine
    time.sleep(0.05)
    assert not any(chain.servo(i).torque for i in range(1, 10))


def test_settings_validation():
    validate_arm_settings({"port": "/dev/ttyDXL_leader_left", "model": "wx250s", "gripper_current_limit": 200})
    with pytest.raises(ValueError, match="model"):
        validate_arm_settings({"model": "px100"})
    with pytest.raises(ValueError, match="unknown arm setting"):
        validate_arm_settings({"modle": "vx300s"})
    with pytest.raises(ValueError, match="homing_offsets"):
        validate_arm_settings({"homing_offsets": {"elbow_shaddow": 3}})
    cfg = config_from_settings("follower_right", "follower", GRIPPER_PRESETS["aloha2"],
                               {"position_limits": {"waist": [-1.0, 1.0]}}, port="/dev/x")
    assert isinstance(cfg, DynamixelArmConfig) and cfg.model == "vx300s" and cfg.position_limits["waist"] == (-1.0, 1.0)
