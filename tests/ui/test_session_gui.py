"""The app drives the arms only through the RigSession: Teleop Stop during a recording, the e-stop, disconnect.
Real window, real simulated rig (MuJoCo), offscreen."""
import numpy as np
from PyQt6.QtCore import Qt

from drivers.arm import SLEEP_POSE
from tests.ui.conftest import connect


def test_teleop_stop_during_a_recording_stops_the_session_once(qtbot, window):
    """It used to end every remaining episode after one tick, each graded pass (episodes of 26, 1, 1, 1 steps)."""
    win = window
    connect(qtbot, win)
    rp = win.record_panel
    win.show_tab(rp)
    rp.task.setEditText("transfer the cube")
    rp.episodes.setValue(4)
    rp.length.setValue(3.0)
    assert rp.start()
    session = rp.session
    qtbot.waitUntil(lambda: rp.state == "recording" and rp.elapsed() > 0.5, timeout=60000)
    win.show_tab(win.teleop_panel)
    assert win.teleop_panel.stop_btn.isEnabled()
    qtbot.mouseClick(win.teleop_panel.stop_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: rp.session is None, timeout=60000)
    assert len(session.saved) == 1 and session.saved[0].steps >= 25
    assert not win.ctl.teleop_running


def test_estop_holds_without_the_shutdown_sequence_then_disconnect_parks(qtbot, window):
    win = window
    connect(qtbot, win)
    from tests.ui.conftest import start_teleop

    start_teleop(qtbot, win, min_ticks=40)
    steps = []
    win.ctl.teleopStep.connect(steps.append)
    QTestKey = __import__("PyQt6.QtTest", fromlist=["QTest"]).QTest
    QTestKey.keyClick(win, Qt.Key.Key_Escape)  # Esc = e-stop
    qtbot.waitUntil(lambda: not win.ctl.teleop_running, timeout=30000)
    assert win.ctl.estopped
    assert "Opening follower grippers" not in steps and steps[-1] == "E-stop engaged: followers held"
    rig = win.ctl.rig
    # Disconnect while the e-stop is engaged: parking is refused with what to do; the rig stays connected
    qtbot.mouseClick(win.rig_panel.disconnect_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.banner.current is not None and "torque off here" in str(win.banner.current.message)
                    + str(getattr(win.banner.current, "fix", "")), timeout=30000)
    assert win.ctl.connected
    win.ctl.release_estop()
    poses = []
    orig = rig.disconnect
    rig.disconnect = lambda: (poses.append(rig.observe()["qpos"]), orig())
    qtbot.mouseClick(win.rig_panel.disconnect_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not win.ctl.connected and win.ctl.session is None, timeout=60000)
    for i in (0, 7):  # parked at the sleep pose through the safety layer before torque off
        np.testing.assert_allclose(poses[0][i:i + 6], SLEEP_POSE, atol=0.05)
