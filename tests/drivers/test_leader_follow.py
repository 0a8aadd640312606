"""Leader follow mode for policy trials with operator takeover (Arm.set_follow).

Hardware path: real DynamixelArm -> dynamixel-sdk -> pty emulator (VirtualRig), with the emulator's grab model
standing in for an operator's hand. Sim path: ScriptedLeader follows the follower commands, and `take_over()`
makes the scripted demonstrator take over from the current mid-episode state.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from drivers.arm import SQUEEZE_DEPARTURE
from drivers.dynamixel import control_table as ct
from drivers.dynamixel.emulator import HAND_OVERRIDE_CURRENT
from drivers.dynamixel_arm import DynamixelArm
from drivers.errors import DriverError
from drivers.virtual import VirtualRig

# --------------------------------------------------------------------------------------------------------------
# Virtual rig (real dynamixel-sdk over the pty emulator)
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def follow_rig():
    rig = VirtualRig(hand_motion=False)  # no scripted teleop hand: only grab() moves a joint
    rig.start()
    yield rig
    rig.stop()


@pytest.fixture
def leader(follow_rig):
    arms = []

    def make(name: str = "leader_left", **overrides) -> DynamixelArm:
        arm = DynamixelArm(follow_rig.arm_configs(timeout_ms=30, **overrides)[name])
        arm.connect()
        arms.append(arm)
        return arm

    yield make
    for a in arms:
        a.disconnect()
    for name in ("leader_left", "leader_right"):
        for joint in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"):
            follow_rig.release_grab(name, joint)


def wait_for(pred, timeout: float = 3.0, period: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(period)
    return pred()


def registers(arm: DynamixelArm, reg) -> dict[str, int]:
    return {m.name: ct.to_signed(arm.bus.read(m.id, reg), reg[1]) if reg[0] in ct.SIGNED else arm.bus.read(m.id, reg)
            for m in arm.layout}


def away(arm: DynamixelArm, q: np.ndarray, k: int, d: float) -> float:
    """Joint k moved by d rad, in whichever direction stays inside the arm's limits."""
    lo, hi = arm.joint_limits()
    return float(q[k] + d if q[k] + d + 0.05 < hi[k] else q[k] - d)


def follow_target(arm: DynamixelArm) -> np.ndarray:
    """A pose 0.3 rad from the present one on every arm joint (inside the limits), gripper 0.6."""
    q = arm.read().position.copy()
    lo, hi = arm.joint_limits()
    for k in range(6):
        q[k] = q[k] + 0.3 if q[k] + 0.35 < hi[k] else q[k] - 0.3
    q[6] = 0.6
    return q


def test_follow_mode_registers_and_tracking(leader):
    arm = leader()
    assert arm.status().joints[0].torque is False  # teleop default
    arm.set_follow(True)
    assert arm.following
    modes = registers(arm, ct.OPERATING_MODE)
    assert modes == {"waist": 5, "shoulder": 5, "shoulder_shadow": 5, "elbow": 5, "elbow_shadow": 5,
                     "forearm_roll": 5, "wrist_angle": 5, "wrist_rotate": 3, "gripper": 3}  # XL430 / XC430: no 5
    current = registers(arm, ct.GOAL_CURRENT)
    assert all(current[n] == arm.config.follow_current for n, m in modes.items() if m == 5)
    pwm = registers(arm, ct.GOAL_PWM)
    assert pwm["wrist_rotate"] == pwm["gripper"] == arm.config.follow_pwm
    assert all(j.torque for j in arm.status().joints)
    target = follow_target(arm)
    for _ in range(3):
        arm.command(target)
    assert wait_for(lambda: np.abs(arm.read().position - target).max() < 3 * ct.RAD_PER_TICK), \
        (arm.read().position, target)
    # takeover: torque off (teleop), configured modes and the stiff Goal PWM back
    arm.set_follow(False)
    assert not arm.following and not any(j.torque for j in arm.status().joints)
    assert set(registers(arm, ct.OPERATING_MODE).values()) == {ct.MODE_POSITION}
    pwm = registers(arm, ct.GOAL_PWM)
    assert pwm["wrist_rotate"] == pwm["gripper"] == ct.PWM_MAX
    # release: following again
    arm.set_follow(True)
    assert arm.following and all(j.torque for j in arm.status().joints)
    assert registers(arm, ct.OPERATING_MODE)["elbow"] == ct.MODE_CURRENT_POSITION


def test_set_follow_starts_from_the_present_pose(follow_rig, leader):
    """A leader moved by hand while torque-off must not snap back to an old goal when follow mode starts."""
    arm = leader()
    arm.set_follow(True)
    start = arm.read().position.copy()
    arm.set_follow(False)
    to = away(arm, start, 2, 0.4)
    follow_rig.grab(arm.name, "elbow", rad=to)  # torque off: the hand moves it
    assert wait_for(lambda: abs(arm.read().position[2] - to) < 0.01)
    follow_rig.release_grab(arm.name, "elbow")
    moved = arm.read().position.copy()
    arm.set_follow(True)
    time.sleep(0.3)
    assert np.abs(arm.read().position - moved).max() <= 2 * ct.RAD_PER_TICK


def test_grab_moves_a_weak_leader_and_shows_as_a_squeeze(follow_rig, leader):
    arm = leader()
    arm.set_follow(True)
    cmd = arm.read().position.copy()
    cmd[6] = 0.8
    arm.command(cmd)
    assert wait_for(lambda: abs(arm.read().position[6] - 0.8) < 0.02)
    assert abs(arm.read().position[6] - cmd[6]) < SQUEEZE_DEPARTURE  # tracking is no squeeze
    to = away(arm, cmd, 2, 0.5)
    follow_rig.grab(arm.name, "elbow", rad=to)
    follow_rig.grab(arm.name, "gripper", normalized=0.1)  # the operator squeezes the trigger
    assert wait_for(lambda: abs(arm.read().position[2] - to) < 0.01 and arm.read().position[6] < 0.15)
    state = arm.read()
    assert cmd[6] - state.position[6] > SQUEEZE_DEPARTURE
    # the servo pushes back with at most its goal current (saturated: the hand wins)
    assert abs(state.effort[2]) == pytest.approx(arm.config.follow_current * ct.CURRENT_UNIT_MA, rel=0.01)
    arm.command(cmd)  # the workbench keeps commanding the follower pose
    follow_rig.release_grab(arm.name, "elbow")
    follow_rig.release_grab(arm.name, "gripper")
    assert wait_for(lambda: np.abs(arm.read().position - cmd).max() < 3 * ct.RAD_PER_TICK)  # back on the command


def test_stiff_leader_cannot_be_grabbed(follow_rig, leader):
    """With a high Goal Current / Goal PWM the hand cannot move the leader: the low current is what matters."""
    arm = leader(follow_current=1000, follow_pwm=ct.PWM_MAX)
    assert arm.config.follow_current >= HAND_OVERRIDE_CURRENT
    arm.set_follow(True)
    cmd = arm.read().position.copy()
    follow_rig.grab(arm.name, "elbow", rad=away(arm, cmd, 2, 0.5))
    follow_rig.grab(arm.name, "gripper", normalized=cmd[6] - 0.5)
    time.sleep(0.4)
    state = arm.read()
    assert abs(state.position[2] - cmd[2]) <= 2 * ct.RAD_PER_TICK
    assert abs(state.position[6] - cmd[6]) < SQUEEZE_DEPARTURE / 10


def test_reboot_in_follow_mode_keeps_the_leader_weak(follow_rig, leader):
    arm = leader("leader_right")
    arm.set_follow(True)
    follow_rig.inject_hardware_error(arm.name, "elbow")
    arm.reboot("elbow")  # RAM defaults would be Goal Current = Current Limit (stiff)
    assert registers(arm, ct.GOAL_CURRENT)["elbow"] == arm.config.follow_current
    assert all(j.torque for j in arm.status().joints)
    cmd = arm.read().position.copy()
    to = away(arm, cmd, 2, 0.3)
    follow_rig.grab(arm.name, "elbow", rad=to)
    assert wait_for(lambda: abs(arm.read().position[2] - to) < 0.01)


def test_followers_refuse_follow_mode(follow_rig, leader):
    arm = leader("follower_left")
    with pytest.raises(DriverError, match="follower_left is a follower"):
        arm.set_follow(True)


def test_follow_settings_are_validated():
    from drivers.dynamixel_arm import validate_arm_settings

    validate_arm_settings({"follow_current": 150, "follow_pwm": 100})
    with pytest.raises(ValueError, match="follow_current must be 1..1193"):
        validate_arm_settings({"follow_current": 5000})
    with pytest.raises(ValueError, match="follow_pwm must be 1..885"):
        validate_arm_settings({"follow_pwm": 0})


# --------------------------------------------------------------------------------------------------------------
# Simulated rig: scripted leaders follow; take_over() = the demonstrator finishes the task from mid-episode
# --------------------------------------------------------------------------------------------------------------
SIDES = ("left", "right")


@pytest.fixture(scope="module")
def cube_rig():
    from drivers.sim import build_sim_rig

    rig = build_sim_rig("transfer_cube", seed=0, camera_names=())
    yield rig
    rig.close()


def policy_then_takeover(rig, seed: int, takeover_tick: int, max_ticks: int = 500) -> dict:
    """A trial as the workbench runs it: the "policy" (a replay of the planned demonstration) drives the followers
    for `takeover_tick` ticks while the leaders follow them; then the operator (take_over()) squeezes, the
    workbench sees the departure, switches the leaders to teleop and the followers track the leaders through a
    step clamp (the safety layer's default per-tick steps) until the scripted hand lets go."""
    from workbench.safety import SafetyConfig

    step = SafetyConfig().step_array(50.0)
    rig.reset(seed)
    plan = rig.demo.trajectory
    leaders, followers, sim = rig.leaders, rig.followers, rig.sim
    for leader in leaders.values():
        leader.set_follow(True)
    for k in range(takeover_tick):
        for s in SIDES:
            followers[s].command(plan.target(s, k))
        sim.step()
        for s in SIDES:
            leaders[s].command(followers[s].read().position)
            assert abs(leaders[s].read().position[6] - leaders[s].last_command[6]) <= SQUEEZE_DEPARTURE
    before = sim.max_reward
    progress = leaders["left"].take_over()
    sim.step()
    for s in SIDES:
        leaders[s].command(followers[s].read().position)
    departure = {s: abs(leaders[s].read().position[6] - leaders[s].last_command[6]) for s in SIDES}
    commanded = {s: leaders[s].last_command.copy() for s in SIDES}  # the followers' pose now
    goal = {s: np.r_[commanded[s][:6], plan.target(s, takeover_tick - 1)[6]] for s in SIDES}  # safety's last
    for leader in leaders.values():
        leader.set_follow(False)
    statuses = {s: leaders[s].status() for s in SIDES}
    first = {s: leaders[s].read().position.copy() for s in SIDES}
    last = {s: goal[s].copy() for s in SIDES}
    reading_steps, reward, ticks = [], 0, 0
    while rig.demo.takeover_active and ticks < max_ticks:
        for s in SIDES:
            q = leaders[s].read().position
            if ticks < 20:
                reading_steps.append(np.abs(q - last[s]))
            last[s] = np.clip(q, last[s] - step, last[s] + step)
            followers[s].command(last[s])
        sim.step()
        ticks += 1
        reward = max(reward, sim.reward())
    return dict(progress=progress, before=before, after=reward, departure=departure, commanded=commanded,
                first=first, reading_steps=np.array(reading_steps), step=step, statuses=statuses, ticks=ticks)


def test_scripted_leader_follows_commands(cube_rig):
    cube_rig.reset(3)
    leader = cube_rig.leaders["left"]
    leader.set_follow(True)
    try:
        np.testing.assert_allclose(leader.read().position, np.r_[cube_rig.demo.target("left")])  # no command yet
        for k in range(5):
            q = np.r_[0.05 * k, -0.9, 1.1, 0.0, -0.3, 0.0, 0.4]
            leader.command(q)
            cube_rig.sim.step()
            np.testing.assert_allclose(leader.read().position, q)
        assert all(j.torque for j in leader.status().joints)
        leader.set_follow(False)  # without take_over(): the pedal case, the scripted hand takes over anyway
        assert cube_rig.demo.takeover_active and not any(j.torque for j in leader.status().joints)
        np.testing.assert_allclose(leader.read().position[:6], q[:6])
    finally:
        leader.set_follow(True)
        leader.set_follow(False)
        cube_rig.demo.hand_back()
    with pytest.raises(DriverError, match="follower_left is a follower"):
        cube_rig.followers["left"].set_follow(True)


# takeover ticks: before the grasp (the script restarts with the cube where it is), right gripper around the
# cube, cube held and lifted, left gripper at the cube in the meeting point
TAKEOVERS = [(100, {0}), (175, {130, 170, 200}), (200, {170, 200}), (250, {200, 260, 310})]


@pytest.mark.parametrize("tick,resume", TAKEOVERS)
def test_take_over_finishes_the_task_from_mid_episode(cube_rig, tick, resume):
    results = [policy_then_takeover(cube_rig, seed, tick) for seed in (0, 1, 2)]
    for r in results:
        assert r["progress"].resume in resume, r["progress"]
        # the workbench sees the squeeze on both leaders' grippers
        assert min(r["departure"].values()) > SQUEEZE_DEPARTURE
        # teleop: torque off; the first readings start at the followers' pose, within one safety step
        assert not any(j.torque for st in r["statuses"].values() for j in st.joints)
        for s in SIDES:
            np.testing.assert_allclose(r["first"][s][:6], r["commanded"][s][:6], atol=1e-9)
        assert (r["reading_steps"] <= r["step"] + 1e-9).all(), r["reading_steps"].max(axis=0)
        assert r["before"] < 4 or tick >= 250
    successes = sum(r["after"] == 4 for r in results)
    assert successes == len(results), [(r["after"], r["progress"].reason) for r in results]
