"""The operator's loop on the simulated rig, through the real app: record two episodes with the scripted
demonstrator (a segment marked with a number key), see them in the Episodes table, scrub the player, edit a
segment on the timeline (drag a boundary, rename, add, delete), label one a success, soft delete and restore,
export to LeRobot."""
from __future__ import annotations

import json
from pathlib import Path

from PyQt6.QtCore import QPoint, Qt
from PyQt6.QtTest import QTest

from tests.ui.conftest import connect
from ui.episodes.model import COL


def test_record_two_episodes_then_review_edit_label_export(qtbot, window, tmp_path):
    win = window
    connect(qtbot, win)
    rp = win.record_panel
    win.show_tab(rp)
    rp.task.setEditText("transfer the cube to the right gripper")
    rp.episodes.setValue(2)
    rp.length.setValue(2.0)  # 100 ticks each
    qtbot.mouseClick(rp.start_btn, Qt.MouseButton.LeftButton)
    session = rp.session
    assert session is not None
    qtbot.waitUntil(lambda: rp.state == "recording" and rp.elapsed() > 0.3, timeout=60000)
    QTest.keyClick(win, Qt.Key.Key_2)  # preset label 2 ("grasp"), as a foot pedal or the keyboard would
    assert rp.marks and rp.marks[-1][1] == "grasp"
    qtbot.waitUntil(lambda: rp.session is None, timeout=120000)
    assert [s.name for s in session.saved] == ["episode_0", "episode_1"]
    assert rp.report.rowCount() > 0 and rp.q_last.value.text()
    assert win.banner.current is None or win.banner.current.severity == "info", win.banner.current
    texts = [s.text for s in session.saved[0].segments]
    assert "grasp" in texts
    # the task prompt is remembered (QSettings history)
    assert win.settings.value("record/task_history")[0] == "transfer the cube to the right gripper"

    # ---- Episodes tab: the table shows both, with their segment counts ----
    ep = win.episodes_panel
    win.show_tab(ep)
    qtbot.waitUntil(lambda: ep.model.rowCount() == 2, timeout=10000)
    assert ep.model.episodes[0].segments == len(session.saved[0].segments)
    assert ep.model.data(ep.model.index(0, COL["Task"])) == "transfer the cube to the right gripper"
    ep.select_names(["episode_0"])
    qtbot.waitUntil(lambda: ep.player.info is not None and ep.player.info.name == "episode_0", timeout=10000)
    player = ep.player
    assert set(player.tiles) == {"cam_high", "cam_left_wrist"}
    player.slider.setValue(60)
    assert player.step == 60 and player.timeline.cursor == 60
    assert all(t.image is not None for t in player.tiles.values())

    # ---- timeline: drag the end of the "grasp" segment with the mouse ----
    tl = player.timeline
    i = next(k for k, s in enumerate(tl.segments) if s.text == "grasp")
    seg = tl.segments[i]
    assert seg.lane == "operator"  # the operator's mark has its own lane, under the demonstrator's phases
    y = tl.lane_y("operator")
    tl.select(i)
    x_end = round(tl.x_of(seg.end))
    target = max(seg.start + 5, seg.end - 10)
    QTest.mousePress(tl, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(x_end, y))
    QTest.mouseMove(tl, QPoint(round(tl.x_of(target)), y))
    QTest.mouseRelease(tl, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(round(tl.x_of(target)), y))
    stored = {s.text: s for s in win.episodes_panel.store.show("episode_0").segments}
    assert abs(stored["grasp"].end - target) <= 1 and stored["grasp"].start == seg.start
    # rename it
    tl.select(next(k for k, s in enumerate(tl.segments) if s.text == "grasp"))
    ep.seg_text.setText("grasp the cube")
    qtbot.mouseClick(ep.seg_apply, Qt.MouseButton.LeftButton)
    texts = [s.text for s in ep.store.show("episode_0").segments]
    assert "grasp the cube" in texts and "grasp" not in texts
    # add one at the cursor, then delete it with the Delete key
    n = len(texts)
    player.set_step(10)
    ep.seg_text.setText("approach")
    qtbot.mouseClick(ep.seg_add, Qt.MouseButton.LeftButton)
    assert len(ep.store.show("episode_0").segments) == n + 1
    tl.setFocus()
    QTest.keyClick(tl, Qt.Key.Key_Delete)
    assert len(ep.store.show("episode_0").segments) == n

    # ---- label a success, with notes ----
    qtbot.mouseClick(ep.outcome_btns["success"], Qt.MouseButton.LeftButton)
    ep.notes.setPlainText("clean hand-over")
    qtbot.mouseClick(ep.save_notes_btn, Qt.MouseButton.LeftButton)
    info = ep.store.show("episode_0")
    assert info.outcome == "success" and info.notes == "clean hand-over"
    assert ep.model.data(ep.model.index(ep.model.row_of("episode_0"), COL["Label"])) == "success"
    ep.outcome_f.setCurrentText("success")
    assert ep.proxy.rowCount() == 1
    ep.outcome_f.setCurrentIndex(0)

    # ---- soft delete and restore ----
    ep.select_names(["episode_1"])
    qtbot.mouseClick(ep.delete_btn, Qt.MouseButton.LeftButton)
    assert [e.name for e in ep.model.episodes] == ["episode_0"]
    ep.show_deleted.setChecked(True)
    ep.select_names(["episode_1"])
    qtbot.mouseClick(ep.restore_btn, Qt.MouseButton.LeftButton)
    ep.show_deleted.setChecked(False)
    assert [e.name for e in ep.model.episodes] == ["episode_0", "episode_1"]

    # ---- export to LeRobot (worker thread, progress bar) ----
    out = tmp_path / "lerobot"
    ep.export_dir.setText(str(out))
    ep.export_scope.setCurrentText("shown episodes")  # the default takes only successes that passed quality
    results = []
    ep.exported.connect(results.append)
    qtbot.wait(50)
    before = _layout(win)
    qtbot.mouseClick(ep.export_btn, Qt.MouseButton.LeftButton)
    assert ep.progress.isVisible()
    layouts, cuts = _watch(qtbot, win, lambda: bool(results) or (win.banner.current is not None and
                                                                 win.banner.current.severity == "error"))
    assert results, win.banner.current
    assert layouts == {before} and not cuts, (before, layouts, cuts)  # progress texts never move the panes
    assert results[0].episodes == 2
    meta = json.loads((Path(out) / "meta" / "info.json").read_text())
    assert meta["total_episodes"] == 2


def _layout(win) -> tuple:
    """The window's size, its tabs | live split and the Episodes tab's table | player split."""
    from PyQt6.QtWidgets import QSplitter

    inner = win.episodes_panel.findChild(QSplitter)
    return (win.width(), win.height()), tuple(win.split.sizes()), tuple(inner.sizes())


def _watch(qtbot, win, done, timeout_s: float = 120.0) -> tuple[set, set]:
    """The layouts seen and the cut texts (tests.ui.layout_checks) of the current tab until `done()`."""
    import time

    from tests.ui.layout_checks import window_cuts

    layouts, cuts = set(), set()
    t0 = time.monotonic()
    while not done():
        assert time.monotonic() - t0 < timeout_s, "timed out"
        qtbot.wait(20)
        layouts.add(_layout(win))
        cuts.update(window_cuts(win))
    return layouts, cuts


def _record_one_second(qtbot, win):
    """One 1 s episode from the Record tab (Start recording); returns the finished session."""
    rp = win.record_panel
    win.show_tab(rp)
    rp.task.setEditText("transfer the cube")
    rp.episodes.setValue(1)
    rp.length.setValue(1.0)
    assert rp.start()
    qtbot.waitUntil(lambda: rp.session is not None, timeout=60000)  # after a running teleop has stopped
    session = rp.session
    qtbot.waitUntil(lambda: rp.session is None, timeout=120000)
    return session


def test_record_right_after_stopping_free_teleop(qtbot, window):
    """The operator stops teleop and clicks Record at once: the end of the old run (a queued signal) must not be
    taken for the end of the new recording session."""
    from tests.ui.conftest import start_teleop

    win = window
    connect(qtbot, win)
    start_teleop(qtbot, win)
    win.ctl.stop_teleop()
    assert win.ctl.session.wait(30)  # the control thread is gone, its "Stopped" event not yet delivered
    session = _record_one_second(qtbot, win)
    assert [s.name for s in session.saved] == ["episode_0"]
    assert not win.ctl.teleop_running


def test_replay_a_recorded_episode_then_cancel_one(qtbot, window):
    """Episodes tab → Replay on arms: the recorded actions drive the simulated followers through the safety layer;
    teleop cannot start meanwhile; Cancel stops a replay early (the arms hold)."""
    win = window
    connect(qtbot, win)
    _record_one_second(qtbot, win)

    ep = win.episodes_panel
    win.show_tab(ep)
    qtbot.waitUntil(lambda: ep.model.rowCount() == 1, timeout=10000)
    ep.select_names(["episode_0"])
    qtbot.waitUntil(lambda: ep.replay_btn.isEnabled(), timeout=10000)
    qtbot.wait(50)  # the tab's splits settle once shown
    before = _layout(win)
    job = ep.replay()
    assert job is not None and not ep.replay_btn.isEnabled()
    assert not win.ctl.start_teleop()  # one thing drives the arms at a time
    # issue 21: the long progress text ("Replaying episode_0: Moving the followers to the first pose…") widened
    # the Export box, the table's pane jumped and snapped back; now it is cut with "…" (whole in the tooltip)
    layouts, cuts = _watch(qtbot, win, lambda: job.done)
    assert layouts == {before} and not cuts, (before, layouts, cuts)
    assert job.error is None, job.error
    r = job.result
    assert r.steps == 50 and not r.stopped and r.tracking_median_rad < 0.05
    qtbot.waitUntil(lambda: win.banner.current is not None and win.banner.current.title.startswith("Replay done"),
                    timeout=5000)
    qtbot.waitUntil(lambda: ep.replay_btn.isEnabled(), timeout=5000)
    # the Rig tab's servo Refresh is usable again after a replay (issue 21: it stayed disabled)
    qtbot.waitUntil(lambda: win.rig_panel.refresh_btn.isEnabled(), timeout=5000)

    job = ep.replay()
    qtbot.mouseClick(ep.progress.cancel, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: job.done, timeout=120000)
    assert job.error is None and job.result.stopped and job.result.steps < 50
    qtbot.waitUntil(lambda: win.banner.current is not None and win.banner.current.title.startswith("Replay stopped"),
                    timeout=5000)
    assert win.ctl.replay_job is None


def test_no_stale_values_after_stop_relabel_or_disconnect(qtbot, window):
    """Issue 21 ("Everywhere"): after teleop stops, no step of the start-up sequence stays current
    ("Teleoperating"); the Record tab's goal counter follows labels and deletes made in Episodes; with the rig
    disconnected the Record tab shows no loop rate."""
    from tests.ui.conftest import start_teleop

    win = window
    connect(qtbot, win)
    start_teleop(qtbot, win)
    win.ctl.stop_teleop()
    tp = win.teleop_panel
    qtbot.waitUntil(lambda: not win.ctl.teleop_running, timeout=30000)
    qtbot.waitUntil(lambda: not any("▶" in lab.text() or "✔" in lab.text() for lab in tp.step_labels),
                    timeout=10000)
    assert "Teleoperating" not in tp.headline.text()

    _record_one_second(qtbot, win)
    rp = win.record_panel
    qtbot.waitUntil(lambda: "(0 success)" in rp.goal_label.text() or "(1 success)" in rp.goal_label.text(),
                    timeout=10000)
    ep = win.episodes_panel
    win.show_tab(ep)
    ep.set_dataset(rp.dataset_dir())
    qtbot.waitUntil(lambda: ep.model.rowCount() == 1, timeout=10000)
    ep.select_names(["episode_0"])
    qtbot.waitUntil(lambda: ep.current == "episode_0", timeout=10000)
    ep.set_outcome("success")
    win.show_tab(rp)
    assert "<b>1</b> / " in rp.goal_label.text() and "(1 success)" in rp.goal_label.text(), rp.goal_label.text()
    win.show_tab(ep)
    ep.select_names(["episode_0"])
    ep.delete_selected()
    win.show_tab(rp)
    assert "<b>0</b> / " in rp.goal_label.text(), rp.goal_label.text()

    # Wait for the GUI to hear of the disconnect: the rig reads disconnected (on the worker thread) a moment before.
    with qtbot.waitSignal(win.ctl.connectionChanged, timeout=60000):
        win.ctl.disconnect_rig()
    assert not win.ctl.connected
    assert "50" not in rp.q_rate.value.text() and "—" in rp.q_rate.value.text()
