"""The bus over the real dynamixel-sdk, talking to the emulator on a pty: checks, errors, faults, conversions."""
from __future__ import annotations

import time

import numpy as np
import pytest

from drivers.dynamixel import control_table as ct
from drivers.dynamixel.bus import DynamixelBus
from drivers.dynamixel.layout import default_layout
from drivers.dynamixel_arm import DynamixelArm, DynamixelArmConfig
from drivers.errors import CommunicationError, PortError, ServoAccessError, ServoMissingError, ServoModelError


def _settle(arm):
    """One round trip: the emulator has handled every (unanswered) sync write sent before it."""
    arm.bus.ping(1)


def _bus(path, model="vx300s", **kw):
    kw.setdefault("timeout_ms", 30.0)
    bus = DynamixelBus(path, default_layout(model), name="follower_left", **kw)
    bus.open()
    return bus


def test_ping_and_model_check_ok(dxl_chains):
    _, path = dxl_chains("wx250s")
    bus = _bus(path, "wx250s")
    try:
        bus.check_motors()
        assert bus.ping(8) == 1060 and bus.ping(9) == 1070
        assert bus.ping(42) is None
    finally:
        bus.close()


def test_missing_servo_names_port_and_id(dxl_chains):
    _, path = dxl_chains("vx300s", missing=(5,))
    bus = _bus(path, retries=1)
    with pytest.raises(ServoMissingError) as exc:
        bus.check_motors()
    bus.close()
    msg = str(exc.value)
    assert path in msg and "ID 5 (elbow_shadow)" in msg and "follower_left" in msg


def test_wrong_model_names_both_models(dxl_chains):
    _, path = dxl_chains("vx300s", models={8: "XL430-W250"})
    arm = DynamixelArm(DynamixelArmConfig("follower_left", "follower", path, "vx300s", timeout_ms=30))
    with pytest.raises(ServoModelError) as exc:
        arm.connect()
    assert not arm.connected
    msg = str(exc.value)
    assert "servo 8 (wrist_rotate)" in msg and "XL430-W250" in msg and "XM430-W350" in msg and path in msg


def test_wrong_port_is_a_port_error_with_the_fix():
    arm = DynamixelArm(DynamixelArmConfig("leader_left", "leader", "/dev/ttyDXL_no_such_arm", "wx250s"))
    with pytest.raises(PortError) as exc:
        arm.connect()
    msg = str(exc.value)
    assert "/dev/ttyDXL_no_such_arm" in msg and "udev" in msg and "dialout" in msg


def test_eeprom_write_with_torque_on_is_an_access_error(dxl_arm):
    arm, chain = dxl_arm("follower")
    _settle(arm)
    assert chain.servo(1).torque
    with pytest.raises(ServoAccessError) as exc:
        arm.bus.write(1, ct.OPERATING_MODE, ct.MODE_VELOCITY)
    msg = str(exc.value)
    assert "servo 1 (waist)" in msg and "EEPROM" in msg and "torque" in msg
    assert chain.servo(1).mode == ct.MODE_POSITION  # nothing changed
    arm.set_torque(False)  # (the write below is a round trip after this sync write)
    arm.bus.write(1, ct.OPERATING_MODE, ct.MODE_VELOCITY)  # allowed once torque is off
    assert chain.servo(1).mode == ct.MODE_VELOCITY


def test_unsupported_mode_is_refused(dxl_arm):
    arm, chain = dxl_arm("leader")  # torque off
    from drivers.errors import ServoStatusError

    with pytest.raises(ServoStatusError, match="data range"):
        arm.bus.write(9, ct.OPERATING_MODE, ct.MODE_CURRENT_POSITION)  # XC430 has no mode 5


def test_positions_follow_goals_at_finite_speed(dxl_arm):
    arm, chain = dxl_arm("follower")
    goal = np.array([2.5, 0, 0, 0, 0, 0, 0.3])
    arm.command(goal)
    first = arm.read().position[0]
    assert first < 2.0  # 2.5 rad at pi rad/s takes ~0.8 s: a read right after the command is still on the way
    seen, vmax = [first], 0.0
    deadline = time.monotonic() + 20
    while abs(seen[-1] - 2.5) > 2e-3 and time.monotonic() < deadline:
        time.sleep(0.02)
        s = arm.read()
        seen.append(s.position[0])
        vmax = max(vmax, s.velocity[0])
    assert abs(seen[-1] - 2.5) <= 2e-3
    assert all(b >= a - 1e-9 for a, b in zip(seen, seen[1:]))  # monotonic approach, no overshoot
    assert len(seen) > 5
    # Velocity Limit 131 x 0.229 rpm = 30 rpm = pi rad/s
    assert vmax == pytest.approx(131 * ct.RAD_S_PER_VELOCITY_UNIT, rel=0.05)
    assert chain.servo(3).get(ct.PRESENT_POSITION) == chain.servo(2).get(ct.PRESENT_POSITION)  # shadow follows


def test_tick_rad_conversions_with_reverse_and_homing_offset(dxl_chains):
    assert ct.ticks_to_rad(2048) == 0.0
    assert ct.ticks_to_rad(3072) == pytest.approx(np.pi / 2)
    assert ct.rad_to_ticks(-np.pi / 2) == 1024
    np.testing.assert_array_equal(ct.rad_to_ticks(ct.ticks_to_rad(np.arange(0, 4096))), np.arange(0, 4096))
    assert ct.present_from_shaft(2148, reverse=True, homing_offset=0) == 1948
    assert ct.shaft_from_present(ct.present_from_shaft(2148.0, True, 37), True, 37) == 2148.0

    chain, path = dxl_chains("vx300s")
    cfg = DynamixelArmConfig("follower_left", "follower", path, "vx300s", timeout_ms=30,
                             homing_offsets={"waist": 100, "wrist_rotate": -50})
    arm = DynamixelArm(cfg)
    arm.connect()
    try:
        arm.set_torque(False)  # first, or the servos would drive the shafts back toward their goals
        arm.read()  # a round trip: the emulator has applied the (unanswered) torque-off sync write before it
        chain.servo(1).shaft = 2048 + 200  # waist: drive mode normal, offset +100
        chain.servo(2).shaft = 2048 + 300  # shoulder: reverse drive mode (vx300s) -> reads -300 ticks
        chain.servo(8).shaft = 2048  # wrist_rotate: offset -50
        q = arm.read().position
        assert q[0] == pytest.approx(300 * ct.RAD_PER_TICK)
        assert q[1] == pytest.approx(-300 * ct.RAD_PER_TICK)
        assert q[5] == pytest.approx(-50 * ct.RAD_PER_TICK)
        assert chain.servo(1).get(ct.HOMING_OFFSET, signed=True) == 100
        assert chain.servo(8).get(ct.HOMING_OFFSET, signed=True) == -50
        # a command lands as the same ticks in the servo (the servo applies reverse/offset to its shaft)
        arm.set_torque(True)
        arm.command(np.array([0.1, -0.2, 0.3, 0.0, 0.4, -0.5, 0.5]))
        arm.read()  # a round trip: the emulator has handled the (unanswered) sync write before it
        assert chain.servo(1).get(ct.GOAL_POSITION, signed=True) == ct.rad_to_ticks(0.1)
        assert chain.servo(2).get(ct.GOAL_POSITION, signed=True) == ct.rad_to_ticks(-0.2)
        assert chain.servo(8).get(ct.GOAL_POSITION, signed=True) == ct.rad_to_ticks(-0.5)
    finally:
        arm.disconnect()


def test_commands_are_clipped_to_position_limits(dxl_arm):
    arm, chain = dxl_arm("follower", position_limits={"waist": (-0.5, 0.5)})
    arm.command(np.array([3.0, -3.0, 3.0, 0, 3.0, 0, 0.5]))
    arm.read()  # round trip after the unanswered sync write
    hi = chain.servo(1).get(ct.MAX_POSITION_LIMIT)
    assert chain.servo(1).get(ct.GOAL_POSITION, signed=True) == hi and hi * ct.RAD_PER_TICK - np.pi <= 0.5
    assert abs(hi - ct.rad_to_ticks(0.5)) <= 1
    assert chain.servo(2).get(ct.GOAL_POSITION, signed=True) == 841  # vx300s shoulder min
    assert chain.servo(4).get(ct.GOAL_POSITION, signed=True) == 3094  # elbow max
    assert chain.servo(7).get(ct.GOAL_POSITION, signed=True) == 3504  # wrist_angle max
    assert abs(chain.servo(1).get(ct.MIN_POSITION_LIMIT) - ct.rad_to_ticks(-0.5)) <= 1


# -- faults: retries, then CommunicationError --------------------------------------------------------------

@pytest.mark.parametrize("kind,text", [("no_reply", "timeout"), ("corrupt_crc", "corrupt")])
def test_persistent_fault_raises_after_retries(dxl_arm, kind, text):
    arm, chain = dxl_arm("follower", timeout_ms=15, retries=2)
    chain.inject_fault(9, kind)
    with pytest.raises(CommunicationError) as exc:
        arm.read()
    msg = str(exc.value)
    assert "3 attempts" in msg and "servo 9 (gripper)" in msg and text in msg.lower()
    with pytest.raises(CommunicationError, match=r"servo 4 \(elbow\)"):
        chain.clear_faults()
        chain.inject_fault(4, kind)
        arm.bus.read(4, ct.PRESENT_POSITION)
    chain.clear_faults()
    arm.read()  # healthy again


@pytest.mark.parametrize("kind", ["no_reply", "corrupt_crc"])
def test_transient_fault_is_retried(dxl_arm, kind):
    arm, chain = dxl_arm("follower", timeout_ms=15, retries=2)
    chain.inject_fault(6, kind, count=2)
    arm.read()
    assert 6 not in chain.faults  # both faulty replies were consumed by retries


def test_late_replies(dxl_arm):
    arm, chain = dxl_arm("follower", timeout_ms=25, retries=2)
    chain.inject_fault(2, "late", delay_s=0.005)  # late but within the timeout: no retry needed
    arm.read()
    chain.inject_fault(2, "late", count=1, delay_s=0.08)  # beyond one timeout, within the retry budget
    arm.read()
    time.sleep(0.15)  # let the stale late reply arrive; the next request flushes it (as on a real bus)
    chain.inject_fault(2, "late", delay_s=0.2)  # always too late
    with pytest.raises(CommunicationError, match=r"servo 2 \(shoulder\)"):
        arm.read()
    chain.clear_faults()
    time.sleep(0.25)
    arm.read()
