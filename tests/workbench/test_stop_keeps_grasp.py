"""Issue 19.1: a stop that holds keeps what the grippers grasp. On the real simulator: e-stop (hold) during a
scripted transfer with the cube lifted; 3 s later the cube is still lifted. Checked to fail with the gripper
goal set to its present position in SafetyLayer._apply_stop (the cube fell to the table, z = 0.02)."""
import threading

import numpy as np

from workbench import events as ev
from workbench.backends import build_rig
from workbench.config import parse_rig_config, preset_text
from workbench.session import RigSession

LIFTED_Z = 0.06  # the cube rests at z = 0.02 on the table


def _cube_z(rig) -> float:
    return float(rig.sim.object_poses()["red_box_joint"][2])


def test_estop_hold_keeps_a_lifted_cube_in_the_gripper():
    rig = build_rig(parse_rig_config(preset_text("sim-transfer-cube"), "test"))
    rig.connect()
    session = RigSession(rig)
    pressed = threading.Event()

    def press(tick):
        if not pressed.is_set() and rig.sim.reward() >= 2 and _cube_z(rig) > 0.08:  # lifted, in the right gripper
            pressed.set()
            threading.Thread(target=session.estop, args=("operator",)).start()

    session.add_tick_listener(press)
    seen = []
    session.subscribe(seen.append)
    try:
        session.start_teleop(squeeze_timeout=10, seed=3)
        assert session.wait(120), "the mode did not end"
        assert pressed.is_set(), "the scripted demonstration never lifted the cube"
        assert [e.reason for e in seen if isinstance(e, ev.Stopped)] == ["estop"]
        z_at_stop = _cube_z(rig)
        assert z_at_stop > LIFTED_Z
        rig.sim.step(150)  # 3 s at 50 Hz with the goals the stop left in the servos
        assert _cube_z(rig) > LIFTED_Z, f"the cube fell from z = {z_at_stop:.3f} to {_cube_z(rig):.3f}"
        assert rig.sim.reward() >= 2
        # the arm joints held where they were: their goals are the present positions
        for name in rig.follower_names:
            goal = rig.safety.last_command(name)
            present = np.asarray(rig.all_arms()[name].read().position)
            np.testing.assert_allclose(goal[:6], present[:6], atol=0.05)
    finally:
        session.release_estop()
        session.close()
