"""The real app on the real simulated rig (MuJoCo), offscreen. Small camera images keep rendering cheap on CPU."""
from __future__ import annotations

import pytest

SIM_RIG = """
[rig]
name = "ui-test-sim"
backend = "sim"
control_hz = 50
gripper = "aloha1"

[sim]
task = "transfer_cube"
seed = 3

[cameras.cam_high]
kind = "sim"
width = 160
height = 120
fps = 50

[cameras.cam_left_wrist]
kind = "sim"
width = 160
height = 120
fps = 50
"""


@pytest.fixture
def rig_file(tmp_path):
    p = tmp_path / "ui_test_sim.toml"
    p.write_text(SIM_RIG)
    return str(p)


@pytest.fixture
def settings(tmp_path):
    from PyQt6.QtCore import QSettings

    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def window(qtbot, rig_file, settings, tmp_path):
    from ui.app import create_window, ensure_app

    ensure_app()
    import ui.dialogs

    # Closing the window asks before stopping arms that move; a test that ends (or fails) mid-recording must not
    # leave a modal question open: unless a test answers itself (monkeypatch), the first choice is taken.
    ask = ui.dialogs.ask
    ui.dialogs.ask = lambda parent, title, text, choices, default: choices[0][0]
    win = create_window(rig_file, settings=settings, realtime_sim=False, dataset_dir=str(tmp_path / "dataset"))
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    try:
        yield win
        win.close()
    finally:
        ui.dialogs.ask = ask


def connect(qtbot, win):
    from PyQt6.QtCore import Qt

    qtbot.mouseClick(win.rig_panel.connect_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.ctl.connected, timeout=60000)
    assert win.banner.current is None, win.banner.current


def start_teleop(qtbot, win, min_ticks: int = 10):
    from PyQt6.QtCore import Qt

    win.show_tab(win.teleop_panel)
    qtbot.mouseClick(win.teleop_panel.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.ctl.state == "running", timeout=60000)
    qtbot.waitUntil(lambda: win.ctl.latest_tick() is not None and win.ctl.latest_tick().index >= min_ticks,
                    timeout=60000)
