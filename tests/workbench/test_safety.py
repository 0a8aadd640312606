"""The safety layer on the virtual rig: real DynamixelArm objects over dynamixel-sdk and the servo emulator."""
import time

import numpy as np
import pytest

from drivers.arm import START_POSE
from drivers.errors import SafetyError
from workbench.safety import DEFAULT_JOINT_LIMITS, SafetyConfig, SafetyLayer


def _settle(arm, goal, timeout=5.0):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if np.max(np.abs(arm.read().position[:6] - goal[:6])) < 0.02:
            return
        time.sleep(0.02)
    raise AssertionError(f"{arm.name} did not reach {goal}")


@pytest.fixture
def follower(virtual_rig):
    rig = virtual_rig
    arm = rig.followers["left"]
    arm.set_torque(True, True)
    rig.safety.release()
    yield arm
    rig.safety.release()


def test_step_clamp_bounds_every_command(virtual_rig, follower):
    safety = virtual_rig.safety
    safety.sync([follower.name])
    start = safety.last_command(follower.name)
    far = start.copy()
    far[0] += 1.0  # a 1 rad jump of the waist in one tick
    sent = safety.command(follower.name, far)
    assert sent[0] == pytest.approx(start[0] + safety.config.max_joint_step)
    # the servo receives the clamped goal, not the jump
    assert abs(follower.read().position[0] - start[0]) < 0.2


def test_joint_limits_clamp(virtual_rig, follower):
    safety = SafetyLayer({follower.name: follower}, SafetyConfig(max_joint_step=10.0), virtual_rig.io_lock)
    target = np.concatenate([START_POSE, [0.5]])
    target[1] = -3.0  # shoulder far below its limit
    sent = safety.command(follower.name, target)
    assert sent[1] == pytest.approx(DEFAULT_JOINT_LIMITS["shoulder"][0])


def test_non_finite_command_is_refused(virtual_rig, follower):
    target = np.full(7, np.nan)
    with pytest.raises(SafetyError, match="non-finite"):
        virtual_rig.safety.command(follower.name, target)
    with pytest.raises(SafetyError, match="7 values"):
        virtual_rig.safety.command(follower.name, np.zeros(6))


def test_estop_holds_and_refuses_until_released(virtual_rig, follower):
    safety = virtual_rig.safety
    safety.sync([follower.name])
    goal = safety.last_command(follower.name)
    goal[0] += 0.08
    safety.command(follower.name, goal)
    safety.estop("test")
    assert safety.estopped
    held = follower.read().position.copy()
    time.sleep(0.3)
    # hold: goal = present position, so the arm stays where it was when the e-stop landed
    assert np.max(np.abs(follower.read().position[:6] - held[:6])) < 0.02
    with pytest.raises(SafetyError, match="e-stop"):
        safety.command(follower.name, goal)
    safety.release()
    assert not safety.estopped
    safety.command(follower.name, safety.last_command(follower.name))


def test_estop_torque_off_action(virtual_rig, follower):
    safety = SafetyLayer({follower.name: follower}, SafetyConfig(estop_action="torque_off"), virtual_rig.io_lock)
    safety.sync([follower.name])
    safety.estop("test")
    st = follower.status()
    assert all(j.torque is False for j in st.joints)
    follower.set_torque(True, True)


def test_move_to_is_bounded_and_reaches_target(virtual_rig, follower):
    from drivers.clock import RealClock

    safety = virtual_rig.safety
    target = np.concatenate([START_POSE, [0.3]])
    safety.move_to({follower.name: target}, 0.5, RealClock(), 50)
    np.testing.assert_allclose(safety.last_command(follower.name), target, atol=1e-9)
    _settle(follower, target)
