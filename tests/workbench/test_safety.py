"""The safety layer on the virtual rig: real DynamixelArm objects over dynamixel-sdk and the servo emulator."""
import time

import numpy as np
import pytest

from drivers.arm import START_POSE
from drivers.errors import SafetyError
from workbench.safety import SafetyConfig, SafetyLayer


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
    step = min(safety.config.max_joint_step, safety.config.max_joint_velocity / virtual_rig.config.control_hz)
    assert sent[0] == pytest.approx(start[0] + step)
    # the servo receives the clamped goal, not the jump
    assert abs(follower.read().position[0] - start[0]) < 0.2


def test_joint_limits_clamp(virtual_rig, follower):
    """Limits come from the arm model (the vx300s servo range), narrowed by the rig file's joint_limits."""
    cfg = SafetyConfig(max_joint_step=10.0, max_joint_velocity=1000.0, max_goal_error=10.0,
                       joint_limits={"elbow": (-1.0, 1.0)})
    safety = SafetyLayer({follower.name: follower}, cfg, virtual_rig.io_lock)
    model_lo, model_hi = follower.joint_limits()
    target = np.concatenate([START_POSE, [0.5]])
    target[1] = -3.0  # shoulder far below the model's limit
    target[2] = 1.5  # elbow inside the model's range, outside the rig file's
    sent = safety.command(follower.name, target)
    assert sent[1] == pytest.approx(model_lo[1]) and model_lo[1] > -2.0
    assert sent[2] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="outside the arm's range"):
        SafetyLayer({follower.name: follower}, SafetyConfig(joint_limits={"shoulder": (2.0, 3.0)}))


def test_non_finite_command_is_refused(virtual_rig, follower, monkeypatch):
    """Refused by the safety layer itself: the servo is never commanded (the driver would refuse a NaN with the
    same words, so the message alone cannot tell who refused it)."""
    virtual_rig.safety.sync([follower.name])
    sent = []
    monkeypatch.setattr(follower, "command", lambda position: sent.append(np.array(position)))
    for bad in (np.full(7, np.nan), np.r_[START_POSE, [np.inf]], np.r_[np.nan, START_POSE[1:], [0.5]]):
        with pytest.raises(SafetyError, match="non-finite"):
            virtual_rig.safety.command(follower.name, bad)
    with pytest.raises(SafetyError, match="7 values"):
        virtual_rig.safety.command(follower.name, np.zeros(6))
    assert sent == [], "a refused command reached the servo"
    virtual_rig.safety.command(follower.name, virtual_rig.safety.last_command(follower.name))
    assert len(sent) == 1  # the spy sees what the safety layer sends


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


def test_goal_stays_within_a_bound_of_the_present_position(virtual_rig, follower):
    """A follower that lags (blocked, overloaded) is never wound up: a goal further than max_goal_error ahead of
    the present position comes back toward it, at the step cap per tick (issue 19.4: never faster)."""
    safety = virtual_rig.safety
    safety.sync([follower.name])
    present = follower.read().position.copy()
    lagging = present.copy()
    lagging[1] -= 0.5  # the arm is reported 0.5 rad behind where the last command put it
    last = present + np.r_[[0, 0.3, 0, 0, 0, 0], 0]  # a goal already far ahead
    safety._last[follower.name] = last.copy()
    target = present + np.r_[[0, 0.4, 0, 0, 0, 0], 0]
    bound, step = safety.config.max_goal_error, safety._step[1]
    for _ in range(10):
        sent = safety.command(follower.name, target, present=lagging)
        assert sent[1] == pytest.approx(max(last[1] - step, lagging[1] + bound))  # toward the arm, step-capped
        last = sent
    assert sent[1] == pytest.approx(lagging[1] + bound)
    safety.sync([follower.name])


def test_the_step_cap_is_hard_even_when_the_arm_is_dragged_away(virtual_rig, follower):
    """Issue 19.4: last command 0, target 0, measured -0.5 gave -0.15 when the goal bound ran after the step cap.
    No command may move further than the step cap from the last one. Checked to fail with the old order."""
    safety = virtual_rig.safety
    safety.sync([follower.name])
    last = safety.last_command(follower.name)
    dragged = last.copy()
    dragged[:6] -= 0.5
    sent = safety.command(follower.name, last, present=dragged)
    assert np.all(np.abs(sent - last) <= safety._step + 1e-12)
    assert np.all(sent[:6] < last[:6])  # and it does give way toward where the arm is
    safety.sync([follower.name])


def test_velocity_limit_sets_the_step_per_tick(virtual_rig, follower):
    """The per-tick step is what max_joint_velocity allows at the rig's rate (capped by max_joint_step)."""
    cfg = SafetyConfig(max_joint_step=0.5, max_joint_velocity=1.0, max_goal_error=10.0)
    safety = SafetyLayer({follower.name: follower}, cfg, virtual_rig.io_lock, control_hz=50.0)
    safety.sync([follower.name])
    start = safety.last_command(follower.name)
    sent = safety.command(follower.name, start + np.r_[[0.3] * 6, 0])
    np.testing.assert_allclose(sent[:6] - start[:6], 1.0 / 50.0)
    safety.sync([follower.name])


def test_torque_on_and_reboot_are_refused_while_estopped(virtual_rig, follower):
    """Nothing may re-enable torque (a reboot restores it) while the e-stop is engaged; torque off is allowed."""
    safety = SafetyLayer({follower.name: follower}, SafetyConfig(estop_action="torque_off"), virtual_rig.io_lock)
    safety.sync([follower.name])
    safety.estop("test")
    with pytest.raises(SafetyError, match="e-stop"):
        safety.set_torque(follower.name, True, True)
    with pytest.raises(SafetyError, match="e-stop"):
        safety.reboot(follower.name, "gripper")
    assert all(j.torque is False for j in follower.status().joints)
    safety.set_torque(follower.name, False, False)  # allowed
    safety.release()
    safety.set_torque(follower.name, True, True)
    assert all(j.torque for j in follower.status().joints)


def test_estop_logs_once_per_press(virtual_rig, follower, caplog):
    safety = virtual_rig.safety
    seen = []
    safety.on_estop(lambda engaged, reason: seen.append(engaged))
    with caplog.at_level("WARNING", logger="workbench.safety"):
        for _ in range(5):  # a held key repeats
            safety.estop("operator")
    assert [r.getMessage() for r in caplog.records].count("E-STOP: operator") == 1
    assert seen == [True]
    safety.release()
    assert seen == [True, False]


def _drive_gripper(safety, arm, value, ticks=60):
    for _ in range(ticks):
        goal = safety.last_command(arm.name)
        goal[6] = value
        safety.command(arm.name, goal)
        time.sleep(0.01)


def test_estop_hold_keeps_the_gripper_squeeze_and_stops_an_opening(virtual_rig, follower):
    """Issue 19.1 on the real driver stack: a hold sets the arm joints' goals to their present positions, but a
    follower gripper whose goal is more closed than where it is keeps that goal (the squeeze on an object is that
    position error). A gripper that was opening stops where it is. Checked to fail with goal := present."""
    safety = virtual_rig.safety
    safety.sync([follower.name])
    _drive_gripper(safety, follower, 0.9)
    goal = safety.last_command(follower.name)
    goal[6] = 0.1  # closing on an object: the goal lies past where the fingers are
    safety.command(follower.name, goal)  # one tick: the step cap moves the goal 0.2 toward 0.1
    squeeze = safety.last_command(follower.name)[6]
    safety.estop("test")
    present = follower.read().position
    held = safety.last_command(follower.name)
    assert held[6] == pytest.approx(squeeze) and squeeze < present[6] - 0.05
    np.testing.assert_allclose(held[:6], present[:6], atol=1e-6)
    safety.release()

    _drive_gripper(safety, follower, 0.1)
    goal = safety.last_command(follower.name)
    goal[6] = 0.9
    opening = safety.command(follower.name, goal)[6]  # opening: the step cap sends it part of the way to 0.9
    safety.estop("test")
    present = follower.read().position
    held = safety.last_command(follower.name)[6]
    # The hold read the gripper a moment before this read, and it was moving: allow a few encoder ticks
    # (2 pi / 4096 rad each) between the two reads, far less than the opening step it must not finish.
    assert held == pytest.approx(present[6], abs=3 * 2 * np.pi / 4096)
    assert held < opening - 0.1 and present[6] < 0.9 - 0.2
    safety.release()
