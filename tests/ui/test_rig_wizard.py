"""The Rig tab's "Set up a new rig" wizard by clicks, on the virtual rig (the emulated chains; the emulated operator
moves the arm a step asks for, as in `workbench rig detect --virtual`; this test squeezes the leader grippers),
ending with a rig file `workbench teleop` runs; refusals are shown in words and the wizard does not advance."""
from __future__ import annotations

import threading
import time

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QWizard

from drivers.virtual import HARDWARE_GRIPPER

TICK = 0.0015339807878856412  # rad per servo tick


def _click(qtbot, button) -> None:
    assert button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def _open(qtbot, win):
    _click(qtbot, win.rig_panel.setup_btn)
    wiz = win.rig_panel.wizard
    qtbot.waitExposed(wiz)
    wiz.seconds = 5.0
    return wiz


def _next(wiz):
    return wiz.button(QWizard.WizardButton.NextButton)


def _idle(qtbot, wiz, timeout=60000):
    qtbot.waitUntil(lambda: not wiz.busy, timeout=timeout)


def test_wizard_sets_up_the_virtual_rig_by_clicks(qtbot, window, tmp_path):
    win = window
    wiz = _open(qtbot, win)
    page = wiz.pages["detect"]
    assert wiz.currentPage() is page and not _next(wiz).isEnabled()
    page.virtual.setChecked(True)
    _click(qtbot, page.detect_btn)
    _idle(qtbot, wiz)
    assert page.message.property("status") == "ok", page.message.text()
    found = page.found.toPlainText()
    assert found.count("leader arm (wx250s)") == 2 and found.count("follower arm (vx300s)") == 2

    # left / right: the emulated operator moves the left arm of each role when Watch is pressed
    _click(qtbot, _next(wiz))
    arms = wiz.pages["arms"]
    assert wiz.currentPage() is arms and not _next(wiz).isEnabled()
    for role in ("leader", "follower"):
        _click(qtbot, arms.watch_buttons[role])
        _idle(qtbot, wiz)
        assert "assigned" in arms.message.text(), arms.message.text()
    paths = wiz.operator.rig.paths
    assert {p: s for p, s in wiz.session.sides.items()} == {paths[n]: n.split("_")[1] for n in paths}
    assert "rad" in arms.live.text()  # the live excursions were shown

    _click(qtbot, _next(wiz))  # cameras: none detected, the virtual rig gets synthetic ones
    assert "synthetic cameras" in wiz.pages["cameras"].message.text()
    _click(qtbot, _next(wiz))  # udev: nothing to name on the virtual rig
    assert "no udev rules needed" in wiz.pages["udev"].message.text()
    _click(qtbot, _next(wiz))

    grip = wiz.pages["gripper"]
    assert wiz.currentPage() is grip
    _idle(qtbot, wiz, 90000)
    assert wiz.cal_rig is not None, grip.message.text()
    emu = wiz.cal_rig.emulators
    # a leader measured without a squeeze: refused in words, Next stays disabled
    grip.leader_s.setValue(1.0)
    _click(qtbot, grip.buttons["leader_left"])
    _idle(qtbot, wiz)
    assert grip.message.property("status") == "fail" and "apart" in grip.message.text(), grip.message.text()
    assert not _next(wiz).isEnabled()

    grip.leader_s.setValue(2.5)
    for side in ("left", "right"):
        def squeeze(arm=f"leader_{side}"):  # the operator squeezes fully, then releases fully
            time.sleep(0.3)
            emu.grab(arm, "gripper", rad=-2.0)
            time.sleep(0.9)
            emu.grab(arm, "gripper", rad=2.0)
        hand = threading.Thread(target=squeeze)
        _click(qtbot, grip.buttons[f"leader_{side}"])
        hand.start()
        _idle(qtbot, wiz)
        hand.join()
        assert grip.results[f"leader_{side}"].property("status") == "ok", grip.message.text()
        emu.release_grab(f"leader_{side}", "gripper")
        assert not _next(wiz).isEnabled()  # not every gripper is measured yet
        _click(qtbot, grip.buttons[f"follower_{side}"])
        _idle(qtbot, wiz)
        assert grip.results[f"follower_{side}"].property("status") == "ok", grip.message.text()
    assert grip.message.property("status") == "ok", grip.message.text()
    g, hw = wiz.gripper, HARDWARE_GRIPPER
    assert abs(g.follower_joint_close - hw.follower_joint_close) <= 2 * TICK
    assert abs(g.leader_joint_open - hw.leader_joint_open) <= 2 * TICK

    _click(qtbot, _next(wiz))  # releases the calibration rig first, then advances
    save = wiz.pages["save"]
    qtbot.waitUntil(lambda: wiz.currentPage() is save, timeout=30000)
    assert wiz.cal_rig is None
    assert not wiz.button(QWizard.WizardButton.FinishButton).isEnabled()
    path = tmp_path / "new_rig.toml"
    save.path.setText(str(path))
    _click(qtbot, save.save_btn)
    assert path.exists() and "[gripper]" in path.read_text()
    assert wiz.button(QWizard.WizardButton.FinishButton).isEnabled()

    # the teleop check through the app's RigController: the new rig is selected, connected and teleoperated
    save.check_s.setValue(2.0)
    _click(qtbot, save.check_btn)
    qtbot.waitUntil(lambda: save.result is not None or save.verdict.property("status") == "fail", timeout=120000)
    assert save.result is not None and save.result.ok, save.verdict.text()
    assert "teleop check OK" in save.verdict.text() and "rad" in save.verdict.text()
    assert win.rig_panel.current_ref() == str(path) and win.ctl.connected
    _click(qtbot, wiz.button(QWizard.WizardButton.FinishButton))
    qtbot.waitUntil(lambda: not wiz.isVisible(), timeout=10000)

    # the file is one `workbench teleop` accepts: loaded and teleoperated headless, as the CLI test does
    from workbench.cli import main
    from workbench.config import load_rig_config

    cfg = load_rig_config(str(path))
    assert cfg.backend == "virtual" and len(cfg.arms) == 4 and {c.name for c in cfg.cameras} >= {"cam_high"}
    job = win.rig_panel.disconnect_rig()
    qtbot.waitUntil(lambda: job.done, timeout=30000)
    assert main(["teleop", "--rig", str(path), "--steps", "40", "--no-squeeze"]) == 0


def test_no_buses_found_is_said_and_the_wizard_does_not_advance(qtbot, window):
    wiz = _open(qtbot, window)
    page = wiz.pages["detect"]
    _click(qtbot, page.detect_btn)  # this machine has no U2D2: nothing to ping
    _idle(qtbot, wiz)
    text = page.message.text()
    assert page.message.property("status") == "fail"
    assert "Cannot propose a rig file yet" in text and "found 0 follower arm buses" in text
    assert "no USB serial adapter found" in page.found.toPlainText()
    assert not _next(wiz).isEnabled()
    wiz.next()  # even asked directly, QWizard does not leave an incomplete page
    assert wiz.currentPage() is page
    _click(qtbot, wiz.button(QWizard.WizardButton.CancelButton))
    assert not wiz.isVisible()


def _video(path, hand_from_s: float | None, seconds: float = 14.0, fps: int = 30) -> str:
    """A 640x480 video file (a camera candidate): a still scene; from `hand_from_s` on, a bright "hand" shows in
    one corner every other second."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(len(str(path)))
    scene = cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (31, 31), 0)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    for k in range(int(seconds * fps)):
        frame = scene.copy()
        t = k / fps
        if hand_from_s is not None and t >= hand_from_s and int(t - hand_from_s) % 2 == 0:
            frame[40:200, 60:260] = 235
        out.write(frame)
    out.release()
    return str(path)


def test_cameras_named_by_waving_the_changed_one_highlighted(qtbot, window, tmp_path):
    from ui import theme

    still = _video(tmp_path / "still.avi", None)
    waved = _video(tmp_path / "waved.avi", 5.0)
    wiz = _open(qtbot, window)
    page = wiz.pages["detect"]
    page.virtual.setChecked(True)
    page.cameras.setText(f"{still}, {waved}")
    _click(qtbot, page.detect_btn)
    _idle(qtbot, wiz)
    assert "2 camera(s)" in page.message.text(), page.message.text()
    _click(qtbot, _next(wiz))
    for role in ("leader", "follower"):
        _click(qtbot, wiz.pages["arms"].watch_buttons[role])
        _idle(qtbot, wiz)
    _click(qtbot, _next(wiz))
    cams = wiz.pages["cameras"]
    _idle(qtbot, wiz)
    assert set(cams.tiles) == {still, waved} and not _next(wiz).isEnabled()
    qtbot.waitUntil(lambda: all(t.pixmap() is not None and not t.pixmap().isNull() for t in cams.tiles.values()),
                    timeout=10000)  # live previews

    # nobody waved yet (the hand shows from 5 s on): refused in words, nothing named, no advance
    wiz.seconds = 1.0
    _click(qtbot, cams.wave_btn)
    _idle(qtbot, wiz)
    assert cams.message.property("status") == "fail" and "no camera image changed enough" in cams.message.text()
    assert not wiz.session.camera_names and not _next(wiz).isEnabled()

    wiz.seconds = 8.0
    _click(qtbot, cams.wave_btn)
    _idle(qtbot, wiz)
    assert wiz.session.camera_names == {waved: "cam_high", still: "cam_low"}, cams.message.text()
    assert cams.highlighted == waved and theme.ACCENT in cams.tiles[waved].styleSheet()
    assert theme.ACCENT not in cams.tiles[still].styleSheet()
    assert "(the last one)" in cams.message.text() and _next(wiz).isEnabled()
    plan = wiz.proposed_plan()  # the named cameras replace the virtual rig's synthetic ones of those names
    assert [c.name for c in plan.cameras] == ["cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist"]
    assert plan.cameras[0].settings == {"device": waved}
    _click(qtbot, wiz.button(QWizard.WizardButton.CancelButton))
    assert not wiz.isVisible()
