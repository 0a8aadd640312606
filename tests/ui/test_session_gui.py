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
    rp = _start_recording(qtbot, win, episodes=4, length=3.0)
    session = rp.session
    qtbot.waitUntil(lambda: rp.elapsed() > 0.5, timeout=60000)
    win.show_tab(win.teleop_panel)
    assert win.teleop_panel.stop_btn.isEnabled()
    qtbot.mouseClick(win.teleop_panel.stop_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: rp.session is None, timeout=60000)
    assert len(session.saved) == 1 and session.saved[0].steps >= 25
    assert not win.ctl.teleop_running


def test_estop_holds_without_the_shutdown_sequence_then_disconnect_parks(qtbot, window, monkeypatch):
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
    # Disconnect while the e-stop is engaged: the app asks (parking is impossible); Cancel keeps everything as is
    asked = []
    monkeypatch.setattr("ui.dialogs.ask", lambda parent, title, text, choices, default:
                        asked.append((title, [c for c, _ in choices])) or "cancel")
    qtbot.mouseClick(win.rig_panel.disconnect_btn, Qt.MouseButton.LeftButton)
    assert asked == [("Disconnect: e-stop engaged", ["torque_off", "cancel"])]
    assert win.ctl.connected and win.ctl.estopped
    win.ctl.release_estop()
    poses = []
    orig = rig.disconnect
    rig.disconnect = lambda: (poses.append(rig.observe()["qpos"]), orig())
    qtbot.mouseClick(win.rig_panel.disconnect_btn, Qt.MouseButton.LeftButton)  # idle, no e-stop: no question
    assert len(asked) == 1
    qtbot.waitUntil(lambda: not win.ctl.connected and win.ctl.session is None, timeout=60000)
    for i in (0, 7):  # parked at the sleep pose through the safety layer before torque off
        np.testing.assert_allclose(poses[0][i:i + 6], SLEEP_POSE, atol=0.05)


def _start_recording(qtbot, win, episodes=3, length=4.0):
    rp = win.record_panel
    win.show_tab(rp)
    rp.task.setEditText("transfer the cube")
    rp.episodes.setValue(episodes)
    rp.length.setValue(length)
    assert rp.start()
    qtbot.waitUntil(lambda: rp.state == "recording" and rp.elapsed() > 0.3, timeout=60000)
    return rp


def test_typing_a_label_never_fires_session_keys(qtbot, window):
    """Space, r, q, d, s typed into the segment field only type; `s` outside a field focuses it."""
    from PyQt6.QtTest import QTest

    win = window
    connect(qtbot, win)
    rp = _start_recording(qtbot, win)
    session = rp.session
    rp.setFocus()
    QTest.keyClick(win, Qt.Key.Key_S)  # the advertised "segment text" key
    qtbot.waitUntil(lambda: rp.mark_text.hasFocus(), timeout=5000)
    QTest.keyClicks(rp.mark_text, "grasp q r d n the s corner")
    assert rp.mark_text.text() == "grasp q r d n the s corner"
    QTest.keyClick(rp.mark_text, Qt.Key.Key_Space)
    qtbot.wait(300)
    assert rp.session is session and rp.state == "recording" and not session.saved
    assert win.ctl.teleop_running and rp.events is not None
    QTest.keyClick(rp.mark_text, Qt.Key.Key_Return)  # Enter starts the segment
    assert rp.marks[-1][1] == "grasp q r d n the s corner"
    win.ctl.stop_teleop()
    qtbot.waitUntil(lambda: rp.session is None, timeout=60000)
    assert len(session.saved) == 1


def test_closing_during_a_recording_asks_first(qtbot, window, monkeypatch):
    win = window
    connect(qtbot, win)
    rp = _start_recording(qtbot, win)
    session = rp.session
    answers = ["keep", "partial"]
    asked = []
    monkeypatch.setattr("ui.dialogs.ask", lambda parent, title, text, choices, default:
                        asked.append([c for c, _ in choices]) or answers.pop(0))
    win.close()
    assert asked == [["partial", "discard", "keep"]]
    assert win.isVisible() and win.ctl.teleop_running and rp.session is session  # kept recording
    win.close()
    assert len(asked) == 2 and not win.ctl.connected
    assert len(session.saved) == 1
    from recorder.reader import read_info

    info = read_info(session.saved[0].path)
    assert "partial episode" in info.notes and session.saved[0].steps < 200


def test_a_banner_does_not_change_the_window_size_or_move_controls(qtbot, window):
    win = window
    win.resize(1280, 800)
    qtbot.wait(50)
    size, pos = win.size(), win.rig_panel.connect_btn.mapTo(win, win.rig_panel.connect_btn.rect().topLeft())
    for i in range(3):
        win.show_error(RuntimeError(f"a long error message number {i} " * 8), "Test")
        qtbot.wait(50)
        assert win.size() == size
        assert win.rig_panel.connect_btn.mapTo(win, win.rig_panel.connect_btn.rect().topLeft()) == pos
    assert win.banner.isVisible() and win.banner.geometry().bottom() < win.centralWidget().height()
    win.banner.dismiss()


def test_escape_closing_a_dialog_is_not_an_estop_and_one_press_is_one_estop(qtbot, window, caplog):
    from PyQt6.QtCore import QTimer
    from PyQt6.QtTest import QTest
    from PyQt6.QtWidgets import QApplication, QMessageBox

    win = window
    connect(qtbot, win)
    box = QMessageBox(QMessageBox.Icon.Question, "A question", "Esc closes me", QMessageBox.StandardButton.Cancel, win)
    QTimer.singleShot(200, lambda: QTest.keyClick(QApplication.activeModalWidget() or box, Qt.Key.Key_Escape))
    box.exec()  # modal: returns when Esc closed it
    assert not win.ctl.estopped
    with caplog.at_level("WARNING", logger="workbench.safety"):
        QTest.keyClick(win.rig_panel.combo, Qt.Key.Key_Escape)  # propagates through several widgets
        qtbot.wait(100)
    assert win.ctl.estopped
    assert [r.getMessage() for r in caplog.records].count("E-STOP: operator") == 1
    win.ctl.release_estop()


def test_two_recording_sessions_record_different_scenes(qtbot, window):
    """Seeds continue from the dataset: the second session's episode is a new scene, not a repeat of the first."""
    from recorder.reader import EpisodeReader

    win = window
    connect(qtbot, win)
    from tests.ui.test_record_episodes import _record_one_second

    first = _record_one_second(qtbot, win)
    second = _record_one_second(qtbot, win)
    with EpisodeReader(first.saved[0].path) as a, EpisodeReader(second.saved[0].path) as b:
        assert b.info.sim_seed == a.info.sim_seed + 1
        assert np.abs(np.asarray(a.qpos) - np.asarray(b.qpos)).max() > 1e-3 or \
            np.abs(np.asarray(a.action) - np.asarray(b.action)).max() > 1e-3


def test_quitting_with_a_connected_rig_says_it_parks_the_arms(qtbot, window, monkeypatch):
    """Issue 21: parking before the window closes takes seconds and gave no feedback. The status bar says what is
    happening before the arms start moving (seen by the real shutdown, which parks the simulated arms)."""
    win = window
    connect(qtbot, win)
    monkeypatch.setattr("ui.dialogs.before_arms_stop", lambda parent, ctl, what: "park")
    seen = []
    real = win.ctl.shutdown

    def shutdown(**kw):
        seen.append(win.statusBar().currentMessage())
        return real(**kw)

    monkeypatch.setattr(win.ctl, "shutdown", shutdown)
    win.close()
    assert seen and seen[0].startswith("Parking the arms (slowly to the sleep pose, then torque off)"), seen
    assert not win.ctl.connected


def test_nothing_is_cut_at_1280x800_before_during_and_after_connect(qtbot, window):
    """Issue 21 (Everywhere): at the default 1280x800 no label, button, check box, placeholder or camera message
    of any tab is cut -- disconnected, while connecting, connected, while disconnecting -- and the window keeps its
    size and the tabs their width (progress texts used to widen the Rig tab past its page)."""
    from PyQt6.QtCore import QSize

    from tests.ui.layout_checks import window_cuts

    win = window
    assert win.size() == QSize(1280, 800)
    cuts: dict[str, None] = {}
    widths: list[int] = []

    def walk(state: str) -> None:
        for i in range(win.tabs.count()):
            win.tabs.setCurrentIndex(i)
            qtbot.wait(40)
            cuts.update({f"{state}: {c}": None for c in window_cuts(win)})
        win.show_tab(win.rig_panel)
        qtbot.wait(40)

    def watch(state: str) -> None:  # the Rig tab while the job runs
        qtbot.wait(20)
        cuts.update({f"{state}: {c}": None for c in window_cuts(win)})
        widths.append(win.tabs.width())

    walk("disconnected")
    left = win.tabs.width()
    qtbot.mouseClick(win.rig_panel.connect_btn, Qt.MouseButton.LeftButton)
    while not win.ctl.connected:
        watch("connecting")
        assert win.ctl.connecting or win.ctl.connected, win.banner.current
    walk("connected")
    qtbot.mouseClick(win.rig_panel.disconnect_btn, Qt.MouseButton.LeftButton)
    while win.ctl.connected or win.ctl.session is not None:
        watch("disconnecting")
    walk("disconnected again")
    assert not cuts, "\n".join(cuts)
    assert win.size() == QSize(1280, 800)
    assert widths and max(abs(w - left) for w in widths) <= 3, (left, sorted(set(widths)))


def test_the_dialog_close_icon_is_light_on_the_dark_theme(qtbot, window):
    """Issue 21: Fusion's Close icon (the Keys window's button on a desktop; the offscreen platform shows dialog
    buttons without icons, so the style's icon is checked as well) was dark grey on the dark button."""
    from PyQt6.QtGui import QColor, QImage
    from PyQt6.QtWidgets import QPushButton, QStyle

    from ui import theme

    def lightness(icon) -> float:
        img = icon.pixmap(16, 16).toImage().convertToFormat(QImage.Format.Format_ARGB32)
        ink = [QColor.fromRgba(img.pixel(x, y)) for x in range(img.width()) for y in range(img.height())]
        ink = [c for c in ink if c.alpha() > 128]
        assert len(ink) > 10
        return sum(c.lightness() for c in ink) / len(ink)

    win = window
    dark_button = QColor(theme.RAISED).lightness()
    for sp in (QStyle.StandardPixmap.SP_DialogCloseButton, QStyle.StandardPixmap.SP_DialogCancelButton,
               QStyle.StandardPixmap.SP_DialogOkButton):
        assert lightness(win.style().standardIcon(sp)) > dark_button + 120, sp  # light ink on the dark button
    win.show_keys()
    close = next(b for b in win.keys_box.findChildren(QPushButton) if b.text() == "Close")
    if not close.icon().isNull():
        assert lightness(close.icon()) > dark_button + 120
    win.keys_box.close()
