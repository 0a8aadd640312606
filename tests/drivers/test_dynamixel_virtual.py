"""The virtual rig: four emulated chains in a child process, real DynamixelArm on each; scripted leader hand."""
from __future__ import annotations

import time

import numpy as np
import pytest

from drivers.dynamixel_arm import DynamixelArm
from drivers.errors import ServoHardwareError
from drivers.gripper import GRIPPER_PRESETS
from drivers.virtual import VirtualRig, virtual_arm_configs


@pytest.fixture(scope="module")
def dxl_virtual_rig():
    rig = VirtualRig(gripper=GRIPPER_PRESETS["aloha1"])
    rig.start()
    yield rig
    rig.stop()


def test_virtual_rig_four_chains_in_a_subprocess(dxl_virtual_rig):
    rig = dxl_virtual_rig
    assert rig.running and rig._proc.pid is not None
    assert set(rig.paths) == {"leader_left", "leader_right", "follower_left", "follower_right"}
    assert len(set(rig.paths.values())) == 4
    arms = {n: DynamixelArm(c) for n, c in virtual_arm_configs(rig, {"follower_left": {"timeout_ms": 30}}).items()}
    try:
        for arm in arms.values():
            arm.connect()
        for arm in arms.values():
            s = arm.read()
            # everything starts in the sleep pose
            np.testing.assert_allclose(s.position[:3], [0.0, -1.7, 1.55], atol=2e-3)
        follower = arms["follower_left"]
        rig.inject_hardware_error("follower_left", "gripper")
        with pytest.raises(ServoHardwareError, match="follower_left.*gripper"):
            follower.read()
        follower.reboot("gripper")
        follower.read()
    finally:
        for arm in arms.values():
            arm.disconnect()


def test_leader_hand_squeezes_then_moves(dxl_virtual_rig):
    rig = dxl_virtual_rig
    leader = DynamixelArm(rig.arm_configs(timeout_ms=30)["leader_right"])
    leader.connect()
    try:
        threshold = rig.gripper.start_threshold_normalized
        leader.set_torque(True, True)
        leader.set_torque(True, False)  # let go of the gripper: the "hand" squeezes it
        deadline = time.monotonic() + 10
        while leader.read().position[6] >= threshold and time.monotonic() < deadline:
            time.sleep(0.02)
        assert leader.read().position[6] < threshold
        start = leader.read().position.copy()
        leader.set_torque(False)  # let go of the arm: the hand swings the joints
        deadline = time.monotonic() + 10
        while np.abs(leader.read().position[:6] - start[:6]).max() < 0.02 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert np.abs(leader.read().position[:6] - start[:6]).max() >= 0.02
    finally:
        leader.disconnect()
