"""Rig and Teleop tabs on the simulated rig: connect, the start-up ceremony, live previews and plots, the e-stop
(Esc) stopping motion within one control tick, a servo fault rebooted from the Rig tab, readable config errors."""
from __future__ import annotations

import numpy as np
from PyQt6.QtCore import Qt
from PyQt6.QtTest import QTest

from tests.ui.conftest import connect, start_teleop


def test_connect_teleop_previews_and_escape_estop_within_one_tick(qtbot, window):
    win = window
    assert win.rig_panel.summary.text().startswith("MuJoCo simulation")
    connect(qtbot, win)
    assert set(win.live.cameras.tiles) == {"cam_high", "cam_left_wrist"}

    steps = []
    win.ctl.teleopStep.connect(steps.append)
    start_teleop(qtbot, win, min_ticks=30)
    assert steps[:3] == ["Rebooting follower grippers", "Torque on all arms", "Moving all arms to the start pose"]
    assert "Squeeze both leader grippers to start" in steps and "Teleoperating" in steps
    # previews and plots are fed from the poll timer
    qtbot.waitUntil(lambda: all(t.updates > 2 for t in win.live.cameras.tiles.values()), timeout=30000)
    qtbot.waitUntil(lambda: win.live.plots.redraws > 2, timeout=30000)
    assert win.teleop_panel.ticks.value.text()

    # record every tick's index and what the safety layer sent, from the control thread
    rig, loop = win.ctl.rig, win.ctl.loop
    seen: list[tuple[int, np.ndarray]] = []
    loop.add_listener(lambda t: seen.append((t.index, t.command.copy())))
    qtbot.waitUntil(lambda: len(seen) > 5, timeout=30000)

    QTest.keyClick(win, Qt.Key.Key_Escape)  # synchronous: returns after safety.estop() took the I/O lock
    assert rig.safety.estopped
    index_at_estop = loop.tick_index  # ticks completed when the e-stop landed
    held = {n: rig.safety.last_command(n) for n in ("follower_left", "follower_right")}
    qtbot.waitUntil(lambda: not win.ctl.teleop_running, timeout=30000)
    assert loop.tick_index <= index_at_estop + 1, "more than one control tick ran after the e-stop"
    assert all(i <= index_at_estop for i, _ in seen)
    # the followers' commanded positions no longer change, even while the simulation keeps running
    q0 = np.concatenate([rig.followers[s].read().position for s in ("left", "right")])
    rig.clock.sleep_until(rig.clock.now() + 0.4)  # 20 more sim ticks
    for n, cmd in held.items():
        np.testing.assert_array_equal(rig.safety.last_command(n), cmd)
    q1 = np.concatenate([rig.followers[s].read().position for s in ("left", "right")])
    assert np.abs(q1 - q0)[[0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]].max() < 0.02
    # the UI says so, and refuses to start again until released
    assert win.estop_btn.text().startswith("■  E-STOP ENGAGED")
    assert win.banner.current is not None and win.banner.current.title == "E-stop engaged"
    assert not win.teleop_panel.start_btn.isEnabled()
    qtbot.mouseClick(win.teleop_panel.release_btn, Qt.MouseButton.LeftButton)
    assert not rig.safety.estopped and win.teleop_panel.start_btn.isEnabled()
    assert win.banner.current is None


def test_servo_fault_shows_with_one_click_reboot(qtbot, window):
    win = window
    connect(qtbot, win)
    win.ctl.rig.followers["left"].inject_fault("gripper")
    qtbot.mouseClick(win.rig_panel.refresh_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: ("follower_left", "gripper") in win.rig_panel.reboot_buttons, timeout=20000)
    assert "fault" in win.rig_panel.arms_note.text()
    qtbot.mouseClick(win.rig_panel.reboot_buttons[("follower_left", "gripper")], Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not win.rig_panel.reboot_buttons, timeout=20000)
    assert not [j for st in win.ctl.rig.arm_status() for j in st.faulted]


def test_invalid_rig_file_is_a_readable_banner_not_a_traceback(qtbot, window, tmp_path):
    win = window
    bad = tmp_path / "bad.toml"
    bad.write_text('[rig]\nbackend = "sim"\ncontrol_hz = 50\n[cameras.cam_high]\nkind = "sim"\nfps = 500\n')
    win.select_rig(str(bad))
    r = win.banner.current
    assert r is not None and r.title == "Rig configuration is invalid"
    assert "cameras.cam_high.fps" in r.message and "workbench rig check" in r.fix
    # the rig list remembers the file (QSettings)
    assert str(bad) in win.settings.value("rig/recent_files")
