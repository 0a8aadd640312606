"""Trials tab on the real simulated rig, through the real app: a scripted demonstration recorded in the Record tab
becomes a replay policy (finetune.replay_policy), served by a real child server process; two trials run from the
GUI (the first reproduces the demonstration and succeeds, Next ends the second), with a language command, a
takeover and hand back, the predicted chunk on the live charts, the outcome override, the results table with its
Wilson interval, a trial opened in the Episodes player, and the server process gone afterwards."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PyQt6.QtCore import Qt
from PyQt6.QtTest import QTest

from tests.ui.conftest import connect

_DEMO: dict[str, object] = {}


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _record_demo(qtbot, win, tmp_path) -> tuple[Path, int]:
    """One 8-second scripted demonstration recorded from the Record tab (the sim's scripted leaders are the
    operator), made into a replay policy folder; -> (folder, the episode's sim seed)."""
    from finetune.replay_policy import make_replay_policy
    from recorder.reader import read_info

    rp = win.record_panel
    win.show_tab(rp)
    rp.task.setEditText("transfer the cube")
    rp.episodes.setValue(1)
    rp.length.setValue(8.0)
    assert rp.start()
    session = rp.session
    qtbot.waitUntil(lambda: rp.session is None, timeout=120_000)
    saved = session.saved[0]
    seed = read_info(saved.path).sim_seed
    folder = make_replay_policy(saved.path, tmp_path / "replay" / "policy", horizon=50)
    return folder, seed


def _wait_state(qtbot, tp, state: str, timeout: int = 120_000) -> None:
    qtbot.waitUntil(lambda: tp.state == state, timeout=timeout)


def test_two_trials_from_the_gui(qtbot, window, tmp_path):
    from recorder.reader import read_info
    from workbench.deploy.trial_stats import wilson_interval

    win = window
    connect(qtbot, win)
    folder, seed = _record_demo(qtbot, win, tmp_path)
    tp = win.trials_panel

    # Train → "Use in trials" fills the policy and shows the tab
    win.train_panel.policy_chosen.emit(str(folder))
    assert tp.policy_edit.text() == str(folder) and tp.source_kind() == "folder"
    assert win.tabs.currentWidget() is win._pages[tp]
    tp.prompt.clear()  # default: the policy's training task
    tp.dataset.clear()  # default: trials/<policy> next to the recording dataset
    tp.trials.setValue(2)
    tp.time_limit.setValue(12.0)
    tp.seeds.setText(f"{seed},{seed + 1}")  # trial 1: the demonstration's scene; trial 2: another
    tp.device.setCurrentText("cpu")
    qtbot.mouseClick(tp.start_btn, Qt.MouseButton.LeftButton)
    assert tp.state == "opening" and not tp.start_btn.isEnabled() and tp.stop_btn.isEnabled()
    _wait_state(qtbot, tp, "running", 60_000)
    pid = tp.server_pid
    assert pid is not None and _alive(pid)
    # the field stays empty (the policy's task is the default, shown as such), the running prompt is that task
    assert tp.prompt.text() == "" and "“transfer the cube”" in tp.prompt.placeholderText()
    assert tp.runner.s.prompt == "transfer the cube"
    pid_name = tp.runner.policy_id
    assert Path(tp.dataset_dir()) == Path(win.record_panel.dataset_dir()).parent / "trials" / pid_name

    # trial 1: a chunk arrives -> latency and the predicted chunk ahead of the present on the joint charts
    qtbot.waitUntil(lambda: tp.trials_model.rowCount() == 1, timeout=60_000)
    assert tp.trials_model.rows[0].seed == seed
    qtbot.waitUntil(lambda: bool(tp.latencies and win.live.plots.pred_px), timeout=60_000)
    assert "round trip" in tp.latency_label.text()
    plots = win.live.plots
    drawn = [p for p in plots.pred_px if len(p)]
    assert drawn and all(p[:, 0].min() >= plots.now_x - 1e-6 for p in drawn)
    assert plots.header.extra.isVisible()
    assert "command (policy / takeover)" in plots.header.legend.text()  # not "leader" during trials

    # trial 1 ends by itself: the replay of the demonstration transfers the cube
    qtbot.waitUntil(lambda: tp.trials_model.rowCount() == 2 or tp.trials_model.rows[0].outcome != "running",
                    timeout=120_000)
    first = tp.trials_model.rows[0]
    assert (first.outcome, first.source, first.ended_by) == ("success", "auto", "success"), first
    assert tp.outcome_btns["success"].isChecked() and not tp.needs_label

    # trial 2: a language command (typed keys -- n, t, c among them -- only type; Enter sends), then take over
    # and hand back following TakeoverChanged, then Next ends it
    qtbot.waitUntil(lambda: tp.trials_model.rowCount() == 2 and bool(tp.latencies), timeout=60_000)
    tp.command.setFocus()
    QTest.keyClicks(tp.command, "tnc carefully")
    assert tp.command.text() == "tnc carefully" and not tp.operator and tp.runner.results[-1].index == 0
    QTest.keyClick(tp.command, Qt.Key.Key_Return)
    assert tp.commands == ["tnc carefully"] and tp.command.text() == ""
    n_chunks = len(tp.latencies)
    qtbot.waitUntil(lambda: len(tp.latencies) > n_chunks, timeout=30_000)  # the next chunk carries it
    qtbot.mouseClick(tp.takeover_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tp.takeover_btn.text() == "Hand back", timeout=30_000)
    assert tp.operator and "Operator in control" in tp.takeover_label.text()
    QTest.qWait(300)
    qtbot.mouseClick(tp.takeover_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tp.takeover_btn.text() == "Take over", timeout=30_000)
    assert not tp.operator
    qtbot.mouseClick(tp.next_btn, Qt.MouseButton.LeftButton)
    _wait_state(qtbot, tp, "finished", 60_000)
    second = tp.trials_model.rows[1]
    assert second.ended_by == "operator" and second.interventions == 1, second
    # ended by the operator on the simulator: aborted (the policy was not given its time), not a failure
    assert second.outcome == "aborted"
    assert "Policy in control" not in tp.takeover_label.text()  # nobody is, once the trials ended

    # the policy server child process is gone once the trials ended
    qtbot.waitUntil(lambda: not _alive(pid), timeout=20_000)
    assert tp.policy is None

    # results: n, successes and the Wilson interval of trial_stats
    store_dir = Path(tp.dataset_dir())
    assert tp.results_model.rowCount() == 1
    g = tp.results_model.groups[0]
    assert (g.n, g.successes, g.labeled, g.aborted) == (2, 1, 1, 1)
    lo, hi = wilson_interval(1, 1)
    m = tp.results_model
    assert m.data(m.index(0, 0)) == f"{pid_name} · transfer the cube"
    assert m.data(m.index(0, 1)) == "2" and m.data(m.index(0, 2)) == "1/1 · 100%"  # the aborted one: in n only
    assert "1 aborted (not in the rate)" in m.data(m.index(0, 2), Qt.ItemDataRole.ToolTipRole)
    assert m.data(m.index(0, 3)) == f"{100 * lo:.0f}–{100 * hi:.0f}%"

    # the outcome override: trial 2 labelled a success by the operator -> stored, and the table follows
    tp.trials_table.selectRow(1)
    assert tp.selected_trial == 1
    tp.notes.setText("the cube was in reach")
    qtbot.mouseClick(tp.outcome_btns["success"], Qt.MouseButton.LeftButton)
    info = read_info(store_dir / f"{second.name}.hdf5")
    assert info.outcome == "success" and info.notes == "the cube was in reach"
    assert tp.trials_model.rows[1].outcome == "success" and tp.trials_model.rows[1].source == "operator"
    g = tp.results_model.groups[0]
    lo, hi = wilson_interval(2, 2)
    assert (g.n, g.successes, round(g.ci_lo, 9), g.ci_hi) == (2, 2, round(lo, 9), hi)
    assert m.data(m.index(0, 3)) == f"{100 * lo:.0f}–{100 * hi:.0f}%"

    # the language command is a prompt segment of trial 2's episode, after the initial prompt
    prompts = [s.text for s in info.segments if s.lane == "prompt"]
    assert prompts == ["transfer the cube", "tnc carefully"], info.segments

    # Export CSV
    out = tp.export_csv(str(tmp_path / "results.csv"))
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 1 and rows[0]["n"] == "2" and rows[0]["successes"] == "2"

    # double-click a trial: the Episodes player shows its episode
    view = tp.trials_table
    win._pages[tp].ensureWidgetVisible(view)
    rect = view.visualRect(tp.trials_model.index(0, 1))
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())  # a double click's first press
    qtbot.mouseDClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    ep = win.episodes_panel
    qtbot.waitUntil(lambda: ep.player.info is not None and ep.player.info.name == first.name, timeout=10_000)
    assert win.tabs.currentWidget() is win._pages[ep]
    assert Path(ep.store.root) == store_dir
    _DEMO["folder"], _DEMO["seed"] = folder, seed


def test_predicted_chunk_is_drawn_dashed_ahead_of_the_present_only(qtbot):
    """The remaining actions of a chunk, at their future times, right of the present line; actions already
    past are not drawn; None removes the overlay and the charts span the past again."""
    from types import SimpleNamespace

    import numpy as np
    from PyQt6.QtGui import QColor

    from ui.strip_charts import PREDICTED, LiveJointCharts

    w = LiveJointCharts(redraw_hz=1000, refit_s=0.0)
    qtbot.addWidget(w)
    w.resize(1000, 360)
    w.show()
    qtbot.waitExposed(w)
    for i in range(60):  # 3 s of samples at 20 Hz, joints at 0
        w.push(SimpleNamespace(index=i, t=i * 0.05, action=np.zeros(14), qpos=np.zeros(14)))
    now = 59 * 0.05
    times = now - 0.5 + np.arange(50) / 50.0  # a 1 s chunk that started half a second ago
    actions = np.zeros((50, 14))
    actions[:, 0] = np.linspace(-0.5, 0.5, 50)  # left waist ramps up
    w.set_prediction((times, actions))
    cell = w.cells[0]
    x_now = w.now_x
    assert cell.x + 0.7 * cell.w < x_now < cell.x + cell.w  # the present moved left: 2 s of future on the right
    pts = w.pred_px[0]
    assert len(pts) == 25 and pts[:, 0].min() >= x_now  # only the half still to come
    assert pts[-1, 0] == pytest.approx(x_now + 0.5 / (w.window_s + w.future_s) * (cell.w - 1), abs=0.5)
    assert pts[-1, 1] < pts[0, 1]  # rising: up on the screen
    img = w._canvas_np
    c = QColor(PREDICTED)
    arr = img[cell.y:cell.y + cell.h, cell.x:cell.x + cell.w, :3].astype(int)
    near = np.abs(arr - np.array([c.blue(), c.green(), c.red()])).sum(axis=2) < 60
    rows, cols = np.nonzero(near)
    rows, cols = rows + cell.y, cols + cell.x
    assert len(cols) > 10 and cols.min() >= x_now - 2 and cols.max() <= pts[-1, 0] + 3
    # dashed: rows along its (steep) span that carry no purple
    span = np.arange(int(pts[-1, 1]) + 2, int(pts[0, 1]) - 2)
    assert len(span) > 20 and len(set(span) - set(rows)) > 3
    w.set_prediction(None)
    assert w.now_x is None and not w.pred_px and not w.header.extra.isVisible()


def test_compare_two_selected_policies_shows_the_verdict(qtbot, settings):
    """Compare: Fisher's exact test of trial_stats on the two selected rows, its verdict shown as is."""
    from PyQt6.QtCore import QItemSelectionModel

    from ui.controller import RigController
    from ui.tasks import JobRunner
    from ui.trials import TrialsPanel
    from workbench.deploy.trial_stats import TrialRecord, compare, summarize

    def rec(i, pid, outcome):
        return TrialRecord(f"episode_{i}", Path(f"episode_{i}.hdf5"), pid, None, "transfer the cube", "sync",
                           outcome, "success", 5.0, 4.0 if outcome == "success" else None, 0, 0.0, i)

    records = [rec(i, "cube@2000", "success") for i in range(9)] + [rec(9, "cube@2000", "failure")]
    records += [rec(10 + i, "cube@500", "success" if i < 2 else "failure") for i in range(10)]
    jobs = JobRunner()
    tp = TrialsPanel(RigController(jobs), jobs, settings)
    qtbot.addWidget(tp)
    groups = summarize(records, by=("policy_id", "prompt"))
    tp.results_model.set_groups(groups)
    tp._update()
    assert not tp.compare_btn.isEnabled()
    sm = tp.results.selectionModel()
    flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
    for r in (0, 1):
        sm.select(tp.results_model.index(r, 0), flags)
    assert tp.compare_btn.isEnabled()
    qtbot.mouseClick(tp.compare_btn, Qt.MouseButton.LeftButton)
    want = compare(groups[0], groups[1]).verdict
    text = tp.compare_label.text()
    assert text.endswith(want) and "significant at 5%" in want
    # the result names the two policies and their counts (issue 21: it did not say which was which)
    a, b = groups[0], groups[1]
    assert f"<b>{a.key[0]}, transfer the cube</b>: {a.successes}/{a.labeled}" in text, text
    assert f"<b>{b.key[0]}, transfer the cube</b>: {b.successes}/{b.labeled}" in text, text


def test_the_results_table_reads_every_policys_trial_folder(qtbot, settings, tmp_path):
    """Each policy's trials sit in their own folder under <data root>/trials: the tab's results take the
    neighbouring policies' folders too, so two policies can be compared here."""
    import shutil

    from tests.workbench.test_trial_stats import record_trial
    from ui.controller import RigController
    from recorder.store import DatasetStore
    from ui.tasks import JobRunner
    from ui.trials.panel import TrialsPanel

    root = tmp_path / "trials"
    for name, pid in (("cube_2000", "cube@2000"), ("cube_500", "cube@500")):
        store = DatasetStore(root / name)
        for outcome in ("success", "failure"):
            record_trial(store, outcome, policy_id=pid)
    (root / "notes").mkdir()  # a folder without trials is no policy's
    jobs = JobRunner()
    tp = TrialsPanel(RigController(jobs), jobs, settings)
    qtbot.addWidget(tp)
    tp.dataset.setText(str(root / "cube_2000"))
    tp.refresh_results()
    assert tp.results_folders() == [str(root / "cube_2000"), str(root / "cube_500")]
    assert sorted(g.key[0] for g in tp.results_model.groups) == ["cube@2000", "cube@500"]
    assert "2 trial folders" in tp.results_note.text()


def _replay_trials_set_up(qtbot, win, tmp_path, *, trials: int, time_limit_s: float):
    """Connected, the replay policy of the recorded demo selected, the Trials tab shown: ready to start.
    -> (the panel, the policy folder)."""
    connect(qtbot, win)
    folder = _DEMO.get("folder")
    if folder is None or not Path(folder).is_dir():
        folder, _ = _record_demo(qtbot, win, tmp_path)
    tp = win.trials_panel
    tp.set_policy(str(folder))
    tp.dataset.setText(str(tmp_path / "trials"))
    tp.trials.setValue(trials)
    tp.time_limit.setValue(time_limit_s)
    tp.device.setCurrentText("cpu")
    win.show_tab(tp)
    return tp, folder


def test_closing_the_window_during_trials_stops_the_policy_server(qtbot, window, tmp_path, monkeypatch):
    win = window
    tp, _folder = _replay_trials_set_up(qtbot, win, tmp_path, trials=3, time_limit_s=30.0)
    assert tp.start()
    qtbot.waitUntil(lambda: tp.state == "running" and bool(tp.latencies), timeout=60_000)
    pid = tp.server_pid
    assert _alive(pid)
    asked = []
    monkeypatch.setattr("ui.dialogs.ask", lambda parent, title, text, choices, default:
                        asked.append(title) or "park")
    win.close()  # the usual close flow: asks, stops the trials, parks, then closes the policy
    assert asked == ["Quit during trial"]
    assert not _alive(pid)
    assert not win.ctl.connected




def test_each_policy_has_its_own_prompt_across_restarts(qtbot, window, settings, tmp_path):
    """Issue 21.2: a policy's trained task is its default prompt (shown, the field left empty); a typed prompt is
    that policy's only, marked when it differs from the trained task; switching policies never carries a prompt
    over, and a restart brings back each policy's own."""
    import json as _json

    from ui.trials.panel import TrialsPanel

    folders = {}
    for name, task in (("cube", "transfer the cube"), ("peg", "insert the peg")):
        folders[name] = tmp_path / name / "policy"
        folders[name].mkdir(parents=True)
        (folders[name] / "dataset.json").write_text(_json.dumps({"tasks": [task]}))
    tp = window.trials_panel
    tp.set_policy(str(folders["cube"]))
    assert tp.prompt.text() == "" and "“transfer the cube”" in tp.prompt.placeholderText()
    assert not tp.prompt_note.isVisible()
    tp.prompt.setText("push the cube gently")
    window.show_tab(tp)
    qtbot.waitUntil(tp.prompt_note.isVisible, timeout=5000)
    assert "differs from the task the policy was trained on: “transfer the cube”" in tp.prompt_note.text()
    tp._remember()  # what Start does
    tp.set_policy(str(folders["peg"]))
    assert tp.prompt.text() == "" and "“insert the peg”" in tp.prompt.placeholderText()
    assert tp.request().prompt == ""  # the service then takes the peg policy's task
    tp.prompt.setText("insert the peg")  # typing the trained task itself is no custom prompt
    assert not tp.prompt_note.isVisibleTo(tp)
    tp._remember()
    tp.set_policy(str(folders["cube"]))
    assert tp.prompt.text() == "push the cube gently"
    tp._remember()
    settings.sync()
    again = TrialsPanel(window.ctl, window.jobs, settings)  # a restart: the same settings file
    assert again.policy_edit.text() == str(folders["cube"]) and again.prompt.text() == "push the cube gently"
    again.set_policy(str(folders["peg"]))
    assert again.prompt.text() == ""


def _figures_overlapped(tp) -> list[str]:
    """The TRIAL / TIME / LATENCY figures: each whole (caption and number at their size hints) and clear of the
    latency line below them, which itself has the height its wrapped text needs."""
    bad = []
    lat = tp.latency_label
    for fig in (tp.trial_fig, tp.time_fig, tp.latency_fig):
        if fig.geometry().intersects(lat.geometry()):
            bad.append(f"{fig.cap.text()} {fig.geometry()} overlaps the latency line {lat.geometry()}")
        for part in (fig.cap, fig.value):
            hint = part.sizeHint()
            if hint.height() > part.height() or hint.width() > part.width():
                bad.append(f"{fig.cap.text()}: {part.text()!r} needs {hint.width()}x{hint.height()}, "
                           f"has {part.width()}x{part.height()}")
    if lat.text() and lat.heightForWidth(lat.width()) > lat.height():
        bad.append(f"latency line needs {lat.heightForWidth(lat.width())} px of height, has {lat.height()}")
    return bad


def test_a_second_trials_session_keeps_its_figures_and_columns(qtbot, window, tmp_path):
    """Issue 21 (Trials tab): in a second session in the same window the TRIAL / TIME / LATENCY figures were cut
    by the "last chunk…" line below them, and the session table lost its Seed and Outcome columns; the new
    session also showed the last one's figures until its first trial began. Two one-trial sessions on the
    simulator; the layout is checked right as each chunk's line is set (one pass of layout requests, before Qt
    would have caught up), while the trials run and after they end."""
    from PyQt6.QtCore import QCoreApplication, QEvent

    from tests.ui.layout_checks import column_visible, window_cuts
    from ui.trials.models import SessionTrialsModel
    from workbench import events as ev

    win = window
    tp, folder = _replay_trials_set_up(qtbot, win, tmp_path, trials=1, time_limit_s=1.5)
    qtbot.wait(50)
    # the policy's long path shows both ends ("/tmp/…/replay/policy"), the whole of it in the tooltip
    assert tp.policy_edit.is_elided() and tp.policy_edit.toolTip() == str(folder)
    shown = tp.policy_edit.shown_text()
    assert "…" in shown and shown.endswith("policy") and str(folder).startswith(shown.split("…")[0])
    page = win._pages[tp]
    problems: list[str] = []
    chunks = []

    def on_event(e) -> None:  # connected after the panel: its texts are set, their layout requests posted
        if isinstance(e, ev.ChunkArrived) and tp.state == "running":
            chunks.append(e)
            QCoreApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest.value)  # one pass
            problems.extend(f"chunk {len(chunks)}: {p}" for p in _figures_overlapped(tp))

    win.ctl.sessionEvent.connect(on_event)
    try:
        for session in (1, 2):
            tp.seeds.setText(str(200 + session))
            assert tp.start()
            # nothing of the last session stays on screen
            assert [f.value.text().count("—") for f in (tp.trial_fig, tp.time_fig, tp.latency_fig)] == [1, 1, 1]
            assert tp.latency_label.text() == "" and tp.latencies == []
            _wait_state(qtbot, tp, "running", 60_000)
            qtbot.waitUntil(lambda: "last chunk" in tp.latency_label.text() and len(tp.latencies) >= 2,
                            timeout=60_000)
            page.ensureWidgetVisible(tp.run_box)
            qtbot.wait(50)
            problems.extend(f"session {session} running: {p}" for p in _figures_overlapped(tp) + window_cuts(win))
            _wait_state(qtbot, tp, "finished", 60_000)
            qtbot.wait(100)
            page.ensureWidgetVisible(tp.trials_table)
            qtbot.wait(50)
            problems.extend(f"session {session} finished: {p}" for p in _figures_overlapped(tp) + window_cuts(win))
            assert tp.trials_model.rowCount() == 1 and tp.trials_model.rows[0].seed == 200 + session
            for c, title in enumerate(SessionTrialsModel.HEADERS):
                if not column_visible(tp.trials_table, c):
                    problems.append(f"session {session}: column {title} hidden, too narrow or out of view")
        for i in range(win.tabs.count()):  # every tab after the trials, at the default 1280x800
            win.tabs.setCurrentIndex(i)
            qtbot.wait(40)
            problems.extend(f"after the trials: {p}" for p in window_cuts(win))
        assert (win.width(), win.height()) == (1280, 800)
    finally:
        win.ctl.sessionEvent.disconnect(on_event)
    assert chunks and not problems, "\n".join(problems)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([__file__, "-q"]))
