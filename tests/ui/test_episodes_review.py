"""The Episodes tab on the real window (no rig needed): damaged episodes are listed with the reason and skipped;
the two-lane timeline selects the block drawn under a click and a shared boundary drag moves both neighbours;
labels and segment edits undo and redo; the outcome buttons show the current label; export asks before
replacing, defaults to "successes that passed quality" and keeps the task prompt."""
from __future__ import annotations

import pyarrow.parquet as pq
from PyQt6.QtCore import QPoint, Qt
from PyQt6.QtTest import QTest

from recorder.format import Segment
from recorder.segments import lane
from tests.recorder.helpers import DAMAGED, damaged_dataset
from ui.episodes.model import COL


def _open(qtbot, window, root, rows: int):
    ep = window.episodes_panel
    window.show_tab(ep)
    ep.set_dataset(str(root))
    qtbot.waitUntil(lambda: ep.model.rowCount() == rows, timeout=10000)
    return ep


def _select(qtbot, ep, name: str):
    ep.select_names([name])
    qtbot.waitUntil(lambda: ep.current == name, timeout=10000)


def test_damaged_dataset_in_the_episodes_tab(qtbot, window, tmp_path):
    damaged_dataset(tmp_path / "ds")
    ep = _open(qtbot, window, tmp_path / "ds", 6)
    text, tip = ep.damaged_label.text(), ep.damaged_label.toolTip()
    assert ep.damaged_label.isVisible() and "4 damaged" in text
    for name, words in DAMAGED.items():
        assert f"{name}.hdf5" in text and f"<b>{name}.hdf5</b>: " in tip and words in tip
        row = ep.model.row_of(name)
        assert ep.model.data(ep.model.index(row, COL["Label"])) == "damaged"
        assert words in ep.model.data(ep.model.index(row, COL["Task"]), Qt.ItemDataRole.ToolTipRole)
    _select(qtbot, ep, "episode_3")  # selecting one says why instead of failing in the player
    assert "damaged" in ep.player.title.text() and not ep.outcome_btns["success"].isEnabled()
    assert window.banner.current is None, window.banner.current
    _select(qtbot, ep, "episode_0")  # the good ones play
    assert ep.player.info is not None and set(ep.player.tiles) == {"cam_high", "cam_left_wrist"}
    # export: the default scope (successes that passed quality) takes the two good ones and skips the damaged
    assert ep.export_scope.currentText() == "successes that passed quality"
    assert ep.export_names() == ["episode_0", "episode_1"]
    assert ep.export_dir.text() == str(tmp_path / "ds_lerobot")  # the default follows the dataset
    results = []
    ep.exported.connect(results.append)
    job = ep.export()
    qtbot.waitUntil(lambda: bool(results) or job.error is not None, timeout=60000)
    assert job.error is None and results[0].episodes == 2
    data = pq.read_table(tmp_path / "ds_lerobot" / "data" / "chunk-000" / "file-000.parquet").to_pydict()
    tasks = pq.read_table(tmp_path / "ds_lerobot" / "meta" / "tasks.parquet").to_pydict()
    assert {tasks["task"][tasks["task_index"].index(t)] for t in data["task_index"]} == {"transfer the cube"}
    # exporting again asks before replacing; "no" leaves it alone
    asked = []
    ep.confirm_overwrite = lambda out: asked.append(out) or False
    assert ep.export() is None and asked == [tmp_path / "ds_lerobot"]
    # deleting a damaged episode moves it to the trash and out of the warning
    ep.select_names(["episode_2"])
    qtbot.mouseClick(ep.delete_btn, Qt.MouseButton.LeftButton)
    assert "episode_2.hdf5" not in ep.damaged_label.text() and "episode_3.hdf5" in ep.damaged_label.text()


def _episode_with_lanes(qtbot, window, tmp_path):
    ds = damaged_dataset(tmp_path / "ds")  # episode_0: auto lane approach [0,30) grasp [30,60)
    ds.set_segments("episode_0", [*ds.show("episode_0").segments, Segment(10, 40, "lift"), Segment(40, 60, "place")])
    ep = _open(qtbot, window, tmp_path / "ds", 6)
    _select(qtbot, ep, "episode_0")
    return ep, ep.player.timeline


def test_timeline_click_selects_the_drawn_block_and_a_drag_moves_both_neighbours(qtbot, window, tmp_path):
    ep, tl = _episode_with_lanes(qtbot, window, tmp_path)
    assert [s.text for s in tl.segments] == ["approach", "grasp", "lift", "place"]
    # a click selects the block drawn under the pointer, in its lane
    for text, step, ln in (("approach", 20, "auto"), ("lift", 20, "operator"), ("grasp", 35, "auto"),
                           ("lift", 35, "operator"), ("place", 50, "operator")):
        QTest.mouseClick(tl, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                         QPoint(round(tl.x_of(step + 0.5)), tl.lane_y(ln)))
        assert tl.selected >= 0 and tl.segments[tl.selected].text == text, (text, step, ln)
        assert ep.seg_text.text() == text
    # hovering a block names it whole (short blocks elide their text)
    from PyQt6.QtCore import QEvent, QPointF
    from PyQt6.QtGui import QMouseEvent
    from PyQt6.QtWidgets import QApplication

    at = QPointF(tl.x_of(50.5), tl.lane_y("operator"))
    QApplication.sendEvent(tl, QMouseEvent(QEvent.Type.MouseMove, at, tl.mapToGlobal(at), Qt.MouseButton.NoButton,
                                           Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier))
    assert tl.toolTip().startswith("place\noperator · steps 40–60"), tl.toolTip()
    # drag the shared boundary lift|place (step 40) to 48: both neighbours move, nothing overlaps
    y = tl.lane_y("operator")
    QTest.mousePress(tl, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(round(tl.x_of(40)), y))
    QTest.mouseMove(tl, QPoint(round(tl.x_of(48)), y))
    QTest.mouseRelease(tl, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(round(tl.x_of(48)), y))
    ops = lane(ep.store.show("episode_0").segments, "operator")
    assert [(s.start, s.end, s.text) for s in ops] == [(10, 48, "lift"), (48, 60, "place")]
    assert lane(ep.store.show("episode_0").segments, "auto")[1].start == 30  # the other lane did not move
    # "+ Add at cursor" inside "lift" takes the rest of it; a shorter one splits it (overlaps are resolved)
    ep.player.set_step(40)
    ep.seg_text.setText("lower")
    qtbot.mouseClick(ep.seg_add, Qt.MouseButton.LeftButton)
    ops = lane(ep.store.show("episode_0").segments, "operator")
    assert [(s.start, s.end, s.text) for s in ops] == [(10, 40, "lift"), (40, 48, "lower"), (48, 60, "place")]
    ep.player.set_step(20)
    tl.add_segment(length=5, text="pinch")
    ops = lane(ep.store.show("episode_0").segments, "operator")
    assert [s.text for s in ops] == ["lift", "pinch", "lift", "lower", "place"]
    for a, b in zip(ops, ops[1:]):
        assert a.end <= b.start


def test_undo_redo_of_labels_and_segment_edits(qtbot, window, tmp_path):
    ep, tl = _episode_with_lanes(qtbot, window, tmp_path)
    store = ep.store
    assert ep.outcome_btns["success"].isChecked()  # the buttons show the episode's current label
    qtbot.mouseClick(ep.outcome_btns["failure"], Qt.MouseButton.LeftButton)
    assert store.show("episode_0").outcome == "failure" and ep.outcome_btns["failure"].isChecked()
    # rename a segment, then undo both edits with Ctrl+Z (focus on the table, not a text field)
    tl.select(next(i for i, s in enumerate(tl.segments) if s.text == "lift"))
    ep.seg_text.setText("lift the cube")
    qtbot.mouseClick(ep.seg_apply, Qt.MouseButton.LeftButton)
    assert "lift the cube" in [s.text for s in store.show("episode_0").segments]
    ep.table.setFocus()
    QTest.keyClick(ep.table, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert "lift" in [s.text for s in store.show("episode_0").segments]
    assert "lift" in [s.text for s in tl.segments] and "lift the cube" not in [s.text for s in tl.segments]
    QTest.keyClick(ep.table, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert store.show("episode_0").outcome == "success" and ep.outcome_btns["success"].isChecked()
    assert ep.model.data(ep.model.index(ep.model.row_of("episode_0"), COL["Label"])) == "success"
    QTest.keyClick(ep.table, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert store.show("episode_0").outcome == "failure" and ep.outcome_btns["failure"].isChecked()
    qtbot.mouseClick(ep.redo_btn, Qt.MouseButton.LeftButton)
    assert "lift the cube" in [s.text for s in store.show("episode_0").segments]
    # deleting a segment undoes too
    n = len(store.show("episode_0").segments)
    tl.setFocus()
    QTest.keyClick(tl, Qt.Key.Key_Delete)
    assert len(store.show("episode_0").segments) == n - 1
    qtbot.mouseClick(ep.undo_btn, Qt.MouseButton.LeftButton)
    assert len(store.show("episode_0").segments) == n


def test_segs_column_is_visible_at_the_default_width(qtbot, window, tmp_path):
    size = window.size()
    ep, _tl = _episode_with_lanes(qtbot, window, tmp_path)
    qtbot.wait(200)  # let the layout settle after the live view hid
    assert window.size() == size  # damaged rows and their warning do not grow the window
    hdr = ep.table.horizontalHeader()
    right = hdr.sectionViewportPosition(COL["Segs"]) + hdr.sectionSize(COL["Segs"])
    assert hdr.sectionSize(COL["Segs"]) >= hdr.fontMetrics().horizontalAdvance("Segs")
    assert right <= ep.table.viewport().width()
    assert hdr.sectionSize(COL["Task"]) >= 80  # and the task is still readable
    # every joint chart of the player lies inside its view (the 4th column was cut by the titles' minimum widths)
    glw = ep.player.plots.glw
    qtbot.waitUntil(lambda: ep.player.plots.plots[0].sceneBoundingRect().width() > 20)
    for plot in ep.player.plots.plots:
        r = plot.sceneBoundingRect()
        assert r.left() >= 0 and r.right() <= glw.viewport().width() + 1, (plot.titleLabel.text, r, glw.width())
    # which arm is charted shows: the checked arm button is drawn apart from the other
    left, right = ep.player.plots.header.buttons.buttons()
    assert left.isChecked() and not right.isChecked()
    at = lambda b: b.grab().toImage().pixelColor(6, b.height() // 2).name()
    assert at(left) != at(right)


def test_launching_the_app_writes_nothing_into_the_dataset_folder(qtbot, window, tmp_path):
    """The window opens on the remembered/default dataset; nothing may be created before it is used."""
    window.show_tab(window.episodes_panel)
    qtbot.wait(100)
    assert window.episodes_panel.store is not None
    assert not (tmp_path / "dataset").exists()  # the folder the window fixture points the app at


def _dataset(root, notes: str, n: int = 2):
    from recorder.store import DatasetStore
    from tests.recorder.helpers import CAMS, tick

    store = DatasetStore(root)
    for k in range(n):
        w = store.new_episode(CAMS, task=f"{notes} task", control_hz=50)
        for i in range(60):
            w.append(tick(i))
        saved = w.stop()
        store.set_notes(saved.name, f"{notes} {saved.name}")
    return store


def test_the_player_follows_the_tables_dataset_and_selection(qtbot, window, tmp_path):
    """Issue 21.1: episode_1 of dataset A in the player, then the table switches to dataset B (as after recording
    into another dataset): nothing of A's episode stays (player, label, notes); B's episode_1 plays with its own
    notes, and a label click labels B's episode, never A's. A deleted episode leaves nothing on screen either."""
    a = _dataset(tmp_path / "a", "trial")
    b = _dataset(tmp_path / "b", "demo")
    ep = _open(qtbot, window, a.root, 2)
    _select(qtbot, ep, "episode_1")
    assert ep.notes.toPlainText() == "trial episode_1" and ep.player.info.path.parent == a.root
    ep.set_dataset(str(b.root))
    qtbot.waitUntil(lambda: ep.model.rowCount() == 2 and ep.model.episodes[0].task == "demo task", timeout=10000)
    assert ep.current is None and ep.player.info is None and ep.notes.toPlainText() == ""
    assert not ep.selected_names() and not ep.delete_btn.isEnabled()  # nothing selected: nothing to delete
    assert not ep.selected_names() and not ep.outcome_btns["success"].isEnabled()
    assert not any(btn.isChecked() for btn in ep.outcome_btns.values())
    _select(qtbot, ep, "episode_1")
    assert ep.player.info.path.parent == b.root and ep.notes.toPlainText() == "demo episode_1"
    qtbot.mouseClick(ep.outcome_btns["failure"], Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: b.show("episode_1").outcome == "failure", timeout=10000)
    assert a.show("episode_1").outcome == "unlabeled", "the label went to the other dataset's episode"
    # deleting the shown episode: its label, notes and plots go with it
    ep.delete_selected()
    qtbot.waitUntil(lambda: ep.model.row_of("episode_1") < 0, timeout=10000)
    assert ep.current is None and ep.player.info is None and ep.notes.toPlainText() == ""


def test_a_click_on_the_players_slider_jumps_there_and_frames_count_from_one(qtbot, tmp_path):
    """Issue 21: clicking the slider moved one page toward the click; it goes where it lands. The camera tile's
    frame number and the position label count alike (no "frame 253" next to "254/500")."""
    from ui.episodes.player import EpisodePlayer

    store = _dataset(tmp_path / "a", "demo", n=1)
    player = EpisodePlayer()
    qtbot.addWidget(player)
    player.resize(900, 600)
    player.show()
    qtbot.waitExposed(player)
    player.load(store.path("episode_0"))
    s = player.slider
    QTest.mouseClick(s, Qt.MouseButton.LeftButton, pos=QPoint(int(s.width() * 0.75), s.height() // 2))
    n = player.info.steps
    assert abs(s.value() - 0.75 * (n - 1)) <= 0.08 * n, (s.value(), n)
    i = player.step
    assert player.pos_label.text().endswith(f"{i + 1}/{n}")
    tile = next(iter(player.tiles.values()))
    assert tile.seq == i + 1, (tile.seq, i)
    player.unload()


def test_push_errors_speak_to_a_window_user_and_results_stay(qtbot, window, tmp_path, monkeypatch):
    """Issue 21: a push error named a CLI command (`hf auth login`, `workbench episodes export`); the window says
    what to do in the window (the token field, the Export button). A finished export's confirmation stays until
    dismissed (it vanished after 6 s)."""
    from ui.errors import Readable

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no saved login
    ep = window.episodes_panel
    window.show_tab(ep)
    ep.repo.setText("me/aloha-cube")
    ep.export_dir.setText(str(tmp_path / "nothing_here"))
    job = ep.push()
    qtbot.waitUntil(lambda: window.banner.current is not None, timeout=20000)
    r = window.banner.current
    assert r.title == "Nothing exported to push" and "Export button" in r.fix and "workbench" not in r.fix, r
    export = tmp_path / "export"
    (export / "meta").mkdir(parents=True)
    (export / "meta" / "info.json").write_text("{}")
    ep.export_dir.setText(str(export))
    window.banner.dismiss()
    job = ep.push()
    qtbot.waitUntil(lambda: window.banner.current is not None, timeout=20000)
    r = window.banner.current
    assert r.title == "No Hugging Face token" and "token field" in r.fix and "hf auth" not in r.fix, r
    assert job is not None
    window.banner.show_error(Readable("Exported 2 episodes", "LeRobot dataset at /x", "", "info", keep=True))
    assert not window.banner._timer.isActive()  # stays until dismissed
    window.banner.show_error(Readable("Uploaded", "done", "", "info"))
    assert window.banner._timer.isActive()  # a passing note still goes by itself
