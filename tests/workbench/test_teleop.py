"""Teleoperation on the virtual rig (real SDK + emulated chains with a scripted hand) and on the MuJoCo sim."""
import threading

import numpy as np
import pytest

from drivers.arm import START_POSE
from workbench.teleop import TeleopLoop, TeleopStopped

ARM_JOINTS_14 = [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]


def test_startup_ceremony_then_follower_tracks_leader(virtual_rig):
    loop = TeleopLoop(virtual_rig)
    steps = []
    loop.startup(progress=steps.append, squeeze_timeout=20)
    assert steps[0] == "Rebooting follower grippers"
    assert "Squeeze both leader grippers to start" in steps and steps[-1] == "Teleoperating"
    # the start pose was reached by the followers before teleop began
    q = virtual_rig.observe()["qpos"]
    np.testing.assert_allclose(q[:6], START_POSE, atol=0.05)
    ticks = []
    loop.add_listener(ticks.append)
    summary = loop.run(steps=150)
    assert summary.ticks == 150 and len(ticks) == 150
    # the scripted hand moves the leaders; the followers follow within a few ticks of lag
    action = np.array([t.action for t in ticks])
    qpos = np.array([t.qpos for t in ticks])
    assert np.ptp(action[:, ARM_JOINTS_14], axis=0).max() > 0.05, "leaders did not move"
    err = np.abs(qpos[50:, ARM_JOINTS_14] - action[50:, ARM_JOINTS_14])
    assert np.median(err) < 0.05
    assert all(t.index == i + ticks[0].index for i, t in enumerate(ticks))
    assert all(set(t.frames) == {"cam_high", "cam_left_wrist", "cam_right_wrist"} for t in ticks)
    loop.shutdown()


def test_servo_overload_stops_teleop_safely_with_a_named_error(virtual_rig):
    loop = TeleopLoop(virtual_rig)
    for arm in virtual_rig.all_arms().values():
        arm.set_torque(arm.role == "follower", arm.role == "follower")
    fired = threading.Event()

    def inject(tick):
        if tick.index - first[0] == 10 and not fired.is_set():
            fired.set()
            virtual_rig.emulators.inject_hardware_error("follower_right", "gripper")

    first = []
    loop.add_listener(lambda t: first.append(t.index) if not first else None)
    loop.add_listener(inject)
    with pytest.raises(TeleopStopped, match=r"follower_right.*gripper.*overload"):
        loop.run(steps=200)
    faulted = [j for st in virtual_rig.arm_status() if st.name == "follower_right" for j in st.faulted]
    assert [j.name for j in faulted] == ["gripper"]
    virtual_rig.reboot("follower_right", "gripper")
    assert not [j for st in virtual_rig.arm_status() for j in st.faulted]


def test_exception_in_loop_holds_followers(virtual_rig):
    loop = TeleopLoop(virtual_rig)

    def boom(tick):
        if tick.index - start == 5:
            raise KeyboardInterrupt

    start = loop.tick_index
    loop.add_listener(boom)
    with pytest.raises(KeyboardInterrupt):
        loop.run(steps=100)
    # held: the last goal sent equals the present position at the time of the stop (within servo motion)
    for arm in virtual_rig.followers.values():
        last = virtual_rig.safety.last_command(arm.name)
        np.testing.assert_allclose(arm.read().position[:6], last[:6], atol=0.05)


def test_estop_during_teleop_stops_within_one_tick(sim_rig):
    """In simulation time: after the e-stop lands, no further command moves the followers."""
    sim_rig.begin_episode(1)
    loop = TeleopLoop(sim_rig)
    loop.startup(squeeze_timeout=10)
    commands = []

    def press(tick):
        commands.append(tick.command.copy())
        if len(commands) == 30:
            threading.Thread(target=sim_rig.safety.estop, args=("test",)).start()

    loop.add_listener(press)
    loop.run(steps=200)
    assert sim_rig.safety.estopped
    assert 30 <= len(commands) <= 32, "the loop ran on after the e-stop"
    held = sim_rig.observe()["qpos"]
    for _ in range(25):
        sim_rig.clock.sleep_until(sim_rig.clock.now() + 0.02)
    moved = np.abs(sim_rig.observe()["qpos"][ARM_JOINTS_14] - held[ARM_JOINTS_14]).max()
    assert moved < 0.02
    sim_rig.safety.release()
