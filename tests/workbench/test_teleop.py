"""The control loop and the teleop sequences on the virtual rig (real SDK + emulated chains with a scripted hand)
and on the MuJoCo sim."""
import threading

import numpy as np
import pytest

from drivers.arm import ARM_JOINT_COLUMNS, START_POSE
from workbench.control import ControlLoop, LoopStopped
from workbench.sources import HoldSource, LeaderSource
from workbench.teleop import startup, shutdown

JOINTS = list(ARM_JOINT_COLUMNS)


def test_startup_sequence_then_follower_tracks_leader(virtual_rig):
    steps = []
    assert startup(virtual_rig, threading.Event(), progress=steps.append, squeeze_timeout=20)
    assert steps[0] == "Rebooting follower grippers"
    assert "Squeeze both leader grippers to start" in steps and steps[-1] == "Teleoperating"
    # the start pose was reached by the followers before teleop began
    q = virtual_rig.observe()["qpos"]
    np.testing.assert_allclose(q[:6], START_POSE, atol=0.05)
    loop = ControlLoop(virtual_rig)
    ticks = []
    loop.add_listener(ticks.append)
    summary = loop.run(LeaderSource(), steps=150)
    assert summary.ticks == 150 and len(ticks) == 150
    # the scripted hand moves the leaders; the followers follow within a few ticks of lag
    action = np.array([t.action for t in ticks])
    qpos = np.array([t.qpos for t in ticks])
    assert np.ptp(action[:, JOINTS], axis=0).max() > 0.05, "leaders did not move"
    err = np.abs(qpos[50:, JOINTS] - action[50:, JOINTS])
    assert np.median(err) < 0.05
    assert all(t.index == i + ticks[0].index for i, t in enumerate(ticks))
    assert all(t.source == "teleop" for t in ticks)
    assert all(set(t.frames) == {"cam_high", "cam_left_wrist", "cam_right_wrist"} for t in ticks)
    shutdown(virtual_rig)


def test_servo_overload_stops_the_loop_safely_with_a_named_error(virtual_rig):
    loop = ControlLoop(virtual_rig)
    for arm in virtual_rig.all_arms().values():
        virtual_rig.safety.set_torque(arm.name, arm.role == "follower", arm.role == "follower")
    fired = threading.Event()
    ticks = []

    def inject(tick):
        ticks.append(tick)
        if len(ticks) == 10 and not fired.is_set():
            fired.set()
            virtual_rig.emulators.inject_hardware_error("follower_right", "gripper")

    loop.add_listener(inject)
    with pytest.raises(LoopStopped, match=r"follower_right.*gripper.*overload"):
        loop.run(LeaderSource(), steps=200)
    # the fault reaches the listeners (a recording stores it for the servo_hw_errors quality check)
    assert ticks[-1].hw_errors and "follower_right" in ticks[-1].hw_errors[0]
    assert not any(t.hw_errors for t in ticks[:-1])
    faulted = [j for st in virtual_rig.arm_status() if st.name == "follower_right" for j in st.faulted]
    assert [j.name for j in faulted] == ["gripper"]
    virtual_rig.reboot("follower_right", "gripper")
    assert not [j for st in virtual_rig.arm_status() for j in st.faulted]


class _Ramp:
    """Asks every joint to move as fast as the safety layer allows (the servos lag behind their goals)."""

    name = "ramp"
    done = False

    def start(self, rig, observation):
        self.q = observation.qpos.copy()

    def action(self, observation):
        self.q[JOINTS] += 0.2
        return self.q

    def stop(self):
        pass


def test_exception_in_loop_holds_followers(virtual_rig):
    """A listener bug (or Ctrl-C) mid-motion: the followers stop where they are, not at their last moving goal."""
    for arm in virtual_rig.followers.values():
        virtual_rig.safety.set_torque(arm.name, True, True)
    loop = ControlLoop(virtual_rig)
    n = []

    def boom(tick):
        n.append(tick)
        if len(n) == 8:
            raise KeyboardInterrupt

    loop.add_listener(boom)
    with pytest.raises(KeyboardInterrupt):
        loop.run(_Ramp(), steps=100)
    stopped_at = virtual_rig.observe()["qpos"]
    import time

    time.sleep(0.4)
    # held: goal = present at the stop, so the arms do not travel on to the goal the ramp last sent
    moved = np.abs(virtual_rig.observe()["qpos"][JOINTS] - stopped_at[JOINTS]).max()
    assert moved < 0.03, f"followers moved {moved:.3f} rad after the stop"
    for i, arm in enumerate(virtual_rig.followers.values()):
        virtual_rig.safety.sync([arm.name])


def test_estop_during_teleop_stops_within_one_tick(sim_rig):
    """In simulation time: after the e-stop lands, no further command moves the followers."""
    sim_rig.begin_episode(1)
    assert startup(sim_rig, threading.Event(), squeeze_timeout=10)
    loop = ControlLoop(sim_rig)
    commands = []

    def press(tick):
        commands.append(tick.command.copy())
        if len(commands) == 30:
            threading.Thread(target=sim_rig.safety.estop, args=("test",)).start()

    loop.add_listener(press)
    loop.run(LeaderSource(), steps=200)
    assert sim_rig.safety.estopped
    assert 30 <= len(commands) <= 32, "the loop ran on after the e-stop"
    held = sim_rig.observe()["qpos"]
    for _ in range(25):
        sim_rig.clock.sleep_until(sim_rig.clock.now() + 0.02)
    moved = np.abs(sim_rig.observe()["qpos"][JOINTS] - held[JOINTS]).max()
    assert moved < 0.02
    sim_rig.safety.release()


def test_hold_source_keeps_the_followers_still(sim_rig):
    loop = ControlLoop(sim_rig)
    ticks = []
    loop.add_listener(ticks.append)
    loop.run(HoldSource(), steps=20)
    cmd = np.array([t.command for t in ticks])
    assert np.ptp(cmd, axis=0).max() < 1e-9 and all(t.source == "hold" for t in ticks)


def test_align_to_leaders_closes_a_large_gap_slowly(sim_rig):
    """GELLO-style start-gap check: followers far from the leaders move to them at the realign velocity, not
    at the step clamp's speed."""
    from workbench.teleop import align_to_leaders, leader_gap

    sim_rig.begin_episode(2)
    for arm in sim_rig.followers.values():
        sim_rig.safety.set_torque(arm.name, True, True)
    away = {a.name: np.r_[START_POSE + np.array([0.6, 0.2, -0.2, 0.3, 0.0, -0.5]), 0.5]
            for a in sim_rig.followers.values()}
    assert sim_rig.safety.move_to(away, 1.5, sim_rig.clock, 50)
    gap, where = leader_gap(sim_rig)
    assert gap > sim_rig.config.safety.start_gap
    sent = []
    orig = sim_rig.safety.command

    def spy(name, target, present=None):
        out = orig(name, target, present)
        sent.append((name, out.copy()))
        return out

    sim_rig.safety.command = spy
    try:
        msgs = []
        assert align_to_leaders(sim_rig, threading.Event(), msgs.append)
    finally:
        del sim_rig.safety.command
    assert msgs and "re-aligning slowly" in msgs[0]
    per_arm = {}
    for name, q in sent:
        per_arm.setdefault(name, []).append(q)
    slow = sim_rig.config.safety.realign_velocity / sim_rig.config.control_hz
    for qs in per_arm.values():
        steps = np.abs(np.diff(np.array(qs)[:, :6], axis=0)).max()
        assert steps <= slow * 1.05, f"re-alignment moved {steps:.3f} rad in one tick (limit {slow:.3f})"
    for _ in range(25):
        sim_rig.clock.sleep_until(sim_rig.clock.now() + 0.02)
    assert leader_gap(sim_rig)[0] < sim_rig.config.safety.start_gap
