"""Record tab: a recording session (workbench.recording.RecordingSession, the service `workbench record` uses)
driven from the GUI. Keys and USB foot pedals (which type keys) feed the session's event stream; the panel shows
the episode counter and timer, live loop/camera quality and each episode's quality report."""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtGui import QKeySequence, QShortcut
from PyQt6.QtWidgets import (QApplication, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGridLayout, QGroupBox,
                             QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPushButton, QSpinBox, QTableWidget,
                             QTableWidgetItem, QVBoxLayout, QWidget)

from ui import theme
from ui.widgets import BigFigure, PathEdit, RateMeter, is_text_input, rate_status, readable
from workbench.recording import DEFAULT_EPISODE_S

log = logging.getLogger(__name__)

DEFAULT_LABELS = ["reach", "grasp", "lift", "hand over", "place", "release", "retreat", "recover", "other"]
# key bindings: several keys per action so that common foot pedals (PageDown/PageUp, arrows, b/n) work untouched
# Single keys fire only while no text field has focus (typing a label never ends an episode).
KEYS = {
    "next": ["Right", "PgDown", "N"],
    "rerecord": ["Left", "PgUp", "R"],
    "discard": ["Del"],
    "stop": ["End", "Q"],
    "label": ["S"],  # focus the segment text field
}
KEY_SHORT = {"next": "next", "rerecord": "re-record", "discard": "discard last", "stop": "stop", "label": "type a label"}
KEY_TEXT = {"next": "save this episode, go on", "rerecord": "discard this episode, record it again",
            "discard": "move the last saved episode to the trash", "stop": "save this episode, end the session",
            "label": "type a segment label (Enter starts it)"}


def key_help() -> list[tuple[str, str]]:
    """The one list of keys (the app's Keys help and the README show this)."""
    rows = [(" / ".join(k.replace("PgDown", "PgDn") for k in KEYS[a]), KEY_TEXT[a]) for a in KEYS]
    return rows + [("1 – 9", "start a segment with preset label 1–9 (edit them under Segments)"),
                   ("0", "close the open segment"), ("Esc", "E-STOP (anywhere in the app, except to close a dialog)")]


def _num(v: float) -> str:
    """Readable at a glance: 3 significant digits, no exponent for the near-zero jitter of a simulated clock."""
    return "0" if abs(v) < 5e-4 else f"{v:.3g}"


def _fmt_s(s: float) -> str:
    return "—" if not math.isfinite(s) else f"{s:5.1f}"


class RecordPanel(QWidget):
    recordingChanged = pyqtSignal(str, str)  # toolbar pill text, status
    datasetChanged = pyqtSignal(str)
    episodeSaved = pyqtSignal(object)  # recorder.finalize.SavedEpisode

    def __init__(self, controller, jobs, settings, dataset_dir: str | None = None, parent=None):
        super().__init__(parent)
        self.ctl, self.jobs, self.settings = controller, jobs, settings
        self.session = None
        self.events = None
        self.state = "idle"  # idle | starting | countdown | recording | saving | reset
        self.episode_name = ""
        self._wait_until: float | None = None
        self._saved_seen = 0
        self._drops0: dict[str, int] = {}
        self.meter = RateMeter()
        self.marks: list[tuple[str, str]] = []  # (episode, label) marked from the GUI
        self.discarded: list[str] = []
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 12, 12, 12)
        lay.setSpacing(10)

        # ---- session settings ----
        box = QGroupBox("Session")
        form = QFormLayout(box)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        form.setHorizontalSpacing(10)
        form.setVerticalSpacing(6)
        row = QHBoxLayout()
        self.dataset = PathEdit(dataset_dir or str(settings.value("record/dataset", "") or
                                                   Path.home() / "aloha_data" / "default"))  # long: both ends
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row.addWidget(self.dataset, 1)
        row.addWidget(browse)
        form.addRow("Dataset", row)
        self.task = QComboBox()
        self.task.setEditable(True)
        self.task.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.task.lineEdit().setPlaceholderText("e.g. “pick up the cube and hand it over”")
        self.task.setToolTip("The task prompt of the episodes, e.g. “pick up the cube and hand it over” (the list "
                             "holds the ones used before)")
        hist = settings.value("record/task_history", [])
        self.task.addItems([h for h in (hist if isinstance(hist, list) else [hist]) if h])
        form.addRow("Task", self.task)
        nums = QHBoxLayout()
        self.episodes = QSpinBox()
        self.episodes.setRange(1, 1000)
        self.episodes.setValue(int(settings.value("record/episodes", 10)))
        self.length = self._spin(settings.value("record/episode_s", DEFAULT_EPISODE_S), 1, 600, " s")
        nums.addWidget(self.episodes)
        nums.addWidget(QLabel("episodes of"))
        nums.addWidget(self.length)
        nums.addStretch(1)
        form.addRow("Record", nums)
        waits = QHBoxLayout()
        self.countdown = self._spin(settings.value("record/countdown_s", 3.0), 0, 60, " s")
        self.reset = self._spin(settings.value("record/reset_s", 5.0), 0, 300, " s")
        waits.addWidget(self.countdown)
        waits.addWidget(QLabel("countdown,"))
        waits.addWidget(self.reset)
        waits.addWidget(QLabel("reset"))
        waits.addStretch(1)
        form.addRow("Wait", waits)
        goal_row = QHBoxLayout()
        self.goal = QSpinBox()
        self.goal.setRange(1, 100000)
        self.goal.setValue(int(settings.value("record/goal", 50)))
        self.goal.setToolTip("How many episodes this dataset should reach")
        self.goal.valueChanged.connect(lambda v: (self.settings.setValue("record/goal", v), self._refresh_goal()))
        self.goal_label = QLabel("")
        goal_row.addWidget(self.goal)
        goal_row.addWidget(self.goal_label, 1)
        form.addRow("Goal", goal_row)
        lay.addWidget(box)

        # ---- big state + controls ----
        live = QGroupBox("Recording")
        g = QGridLayout(live)
        g.setVerticalSpacing(6)
        self.state_label = QLabel("Ready")
        self.state_label.setStyleSheet("font-size: 20px; font-weight: 800;")
        self.state_label.setWordWrap(True)  # long start-up texts wrap instead of widening the panel sideways
        g.addWidget(self.state_label, 0, 0, 1, 3)
        self.counter = BigFigure("Episode")
        self.timer = BigFigure("Time", "s")
        self.saved_fig = BigFigure("Saved")
        g.addWidget(self.counter, 1, 0)
        g.addWidget(self.timer, 1, 1)
        g.addWidget(self.saved_fig, 1, 2)
        btns = QHBoxLayout()
        self.start_btn = QPushButton("●  Start recording")
        theme.set_role(self.start_btn, "danger")
        self.start_btn.setStyleSheet("QPushButton { color: white; background: #b62324; border-color: #f85149; }"
                                     "QPushButton:disabled { background: #2a1214; color: #7d5a5a; border-color: #3d1417; }")
        # keys are listed once, below the buttons (and in each tooltip), so the labels stay short and readable
        self.next_btn = QPushButton("Next →")
        self.next_btn.setToolTip("Save this episode now and go on (→, PgDn, N)")
        self.rerecord_btn = QPushButton("↺ Re-record")
        self.rerecord_btn.setToolTip("Discard this episode and record it again (←, PgUp, R)")
        self.discard_btn = QPushButton("Discard last")
        self.discard_btn.setToolTip("Move the last saved episode to the trash (Del)")
        self.stop_btn = QPushButton("■ Stop")
        self.stop_btn.setToolTip("Save this episode and end the session (End, Q)")
        for b in (self.start_btn, self.next_btn, self.rerecord_btn, self.discard_btn, self.stop_btn):
            b.setMinimumHeight(36)
        for b in (self.next_btn, self.rerecord_btn, self.discard_btn, self.stop_btn):  # four in a row at 1280 px
            b.setStyleSheet("QPushButton { padding-left: 8px; padding-right: 8px; }")
        g.addWidget(self.start_btn, 2, 0, 1, 3)
        btns.addWidget(self.next_btn)
        btns.addWidget(self.rerecord_btn)
        btns.addWidget(self.discard_btn)
        btns.addWidget(self.stop_btn)
        g.addLayout(btns, 3, 0, 1, 3)
        keys = QLabel("Keys (and foot pedals): " + " · ".join(
            f"{' / '.join(KEYS[a]).replace('PgDown', 'PgDn')} {KEY_SHORT[a]}" for a in KEYS)
            + " · 1–9 segment · 0 close it · Esc e-stop · F1 all keys")
        keys.setWordWrap(True)
        keys.setProperty("class", "muted")
        g.addWidget(keys, 4, 0, 1, 3)
        lay.addWidget(live)

        # ---- segments ----
        seg = QGroupBox("Segments")
        sv = QVBoxLayout(seg)
        labels = settings.value("record/labels", DEFAULT_LABELS)
        self.labels = list(labels if isinstance(labels, list) else DEFAULT_LABELS)[:9]
        self.labels_edit = QLineEdit(", ".join(self.labels))
        self.labels_edit.setToolTip("Preset sub-task labels for keys 1–9, comma separated")
        self.labels_edit.editingFinished.connect(self._labels_changed)
        self.labels_edit.setCursorPosition(0)
        lrow = QHBoxLayout()
        lrow.addWidget(QLabel("Keys 1–9"))
        lrow.addWidget(self.labels_edit, 1)
        sv.addLayout(lrow)
        self.label_chips = QLabel()
        self.label_chips.setWordWrap(True)
        sv.addWidget(self.label_chips)
        mrow = QHBoxLayout()
        self.mark_text = QLineEdit()
        self.mark_text.setPlaceholderText("or type a label, Enter starts it")
        self.mark_text.setToolTip("Type a segment label and press Enter: a segment with that label starts now (S "
                                  "focuses this field)")
        self.mark_btn = QPushButton("Mark")
        mrow.addWidget(self.mark_text, 1)
        mrow.addWidget(self.mark_btn)
        sv.addLayout(mrow)
        self.last_mark = QLabel("")
        self.last_mark.setWordWrap(True)
        self.last_mark.setStyleSheet(f"color: {theme.ACCENT}; font-weight: 600;")
        sv.addWidget(self.last_mark)
        lay.addWidget(seg)

        # ---- quality ----
        q = QGroupBox("Quality")
        qv = QVBoxLayout(q)
        qrow = QHBoxLayout()
        self.q_rate = BigFigure("Loop", "Hz")
        self.q_drops = BigFigure("Camera drops")
        self.q_last = BigFigure("Last episode")
        for w in (self.q_rate, self.q_drops, self.q_last):
            qrow.addWidget(w)
        qv.addLayout(qrow)
        self.report = QTableWidget(0, 3)
        self.report.setHorizontalHeaderLabels(["Check", "Value", "Result"])
        self.report.verticalHeader().hide()
        self.report.setShowGrid(False)
        self.report.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.report.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.report.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.report.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.report.verticalHeader().setDefaultSectionSize(24)
        self.report.setMinimumHeight(110)
        qv.addWidget(self.report, 1)
        lay.addWidget(q, 1)

        # ---- wiring ----
        self.start_btn.clicked.connect(self.start)
        self.next_btn.clicked.connect(self.next)
        self.rerecord_btn.clicked.connect(self.rerecord)
        self.discard_btn.clicked.connect(self.discard_last)
        self.stop_btn.clicked.connect(self.stop)
        self.mark_btn.clicked.connect(self._mark_typed)
        self.mark_text.returnPressed.connect(self._mark_typed)
        self.shortcuts: list[QShortcut] = []
        for action, fn in (("next", self.next), ("rerecord", self.rerecord), ("discard", self.discard_last),
                           ("stop", self.stop)):  # "label" (S) is wired below
            for k in KEYS[action]:
                self._shortcut(k, fn)
        for i in range(9):
            self._shortcut(str(i + 1), lambda i=i: self.mark_preset(i))
        self._shortcut("0", lambda: self.mark(""))
        self._shortcut("S", self._focus_label)
        QApplication.instance().focusChanged.connect(self._on_focus_changed)  # a bound slot: gone with us
        self.dataset.editingFinished.connect(self._refresh_goal)
        controller.sessionEvent.connect(self._on_event)
        controller.teleopFinished.connect(self._on_finished)
        controller.connectionChanged.connect(self._connection_changed)
        controller.estopChanged.connect(lambda _: self._update())
        self._paint_labels()
        self._refresh_goal()
        self._update()

    def _spin(self, value, lo, hi, suffix) -> QDoubleSpinBox:
        s = QDoubleSpinBox()
        s.setRange(lo, hi)
        s.setDecimals(1)
        s.setSuffix(suffix)
        s.setValue(float(value))
        return s

    def _shortcut(self, key: str, fn) -> None:
        sc = QShortcut(QKeySequence(key), self.window() if self.window() is not self else self, fn)
        sc.setContext(Qt.ShortcutContext.ApplicationShortcut)
        sc.setAutoRepeat(False)
        self.shortcuts.append(sc)

    def keys_active(self) -> bool:
        """Session keys work while a session runs, or on this tab (so pedals work without clicking first) - but
        never while a text field has focus: there the keys type."""
        return (self.session is not None or self.isVisible()) and not is_text_input(QApplication.focusWidget())

    def _on_focus_changed(self, _old, _new) -> None:
        self._enable_keys()

    def _enable_keys(self) -> None:
        on = self.keys_active()
        for sc in self.shortcuts:
            sc.setEnabled(on)

    def _focus_label(self) -> None:
        self.mark_text.setFocus()
        self.mark_text.selectAll()

    def _connection_changed(self, connected: bool) -> None:
        if not connected:  # no loop runs: no rate to show (it read "50.0 Hz" while disconnected)
            self.q_rate.set("—")
            self.meter = RateMeter()
        self._update()

    def _refresh_goal(self) -> None:
        """"23 / 50 episodes (19 success)": the dataset's progress toward the operator's goal."""
        from recorder.store import DatasetStore

        folder = self.dataset_dir()
        if not folder or not Path(folder).is_dir():
            self.goal_label.setText(f"0 / {self.goal.value()} episodes")
            return
        try:
            eps = [e for e in DatasetStore(folder).list() if not getattr(e, "damaged", False)]
        except Exception:  # noqa: BLE001 - a damaged or foreign folder: the Episodes tab says why
            self.goal_label.setText("")
            return
        ok = sum(e.outcome == "success" for e in eps)
        colour = theme.OK if len(eps) >= self.goal.value() else theme.TEXT
        self.goal_label.setText(f"<span style='color:{colour}'><b>{len(eps)}</b> / {self.goal.value()} episodes "
                                f"({ok} success)</span>")

    # -- dataset / labels -------------------------------------------------------------------------------------------
    def dataset_dir(self) -> str:
        return self.dataset.text().strip()

    def _browse(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Dataset folder", self.dataset_dir())
        if d:
            self.dataset.setText(d)
            self.datasetChanged.emit(d)

    def _labels_changed(self) -> None:
        self.labels = [x.strip() for x in self.labels_edit.text().split(",") if x.strip()][:9]
        self.settings.setValue("record/labels", self.labels)
        self._paint_labels()

    def _paint_labels(self) -> None:
        chips = " ".join(f"<span style='background:{theme.RAISED}; color:{theme.TEXT}'>&nbsp;<b style='color:{theme.ACCENT}'>"
                         f"{i + 1}</b>&nbsp;{lab}&nbsp;</span>" for i, lab in enumerate(self.labels))
        self.label_chips.setText(chips + f"&nbsp;&nbsp;<span style='color:{theme.MUTED}'><b>0</b> closes</span>")

    # -- session control ---------------------------------------------------------------------------------------------
    def start(self) -> bool:
        from recorder.store import DatasetStore
        from workbench.recording import EventStream, SessionSettings

        if self.session is not None:
            return False
        if not self.ctl.connected:
            self.ctl.error.emit("Connect a rig first (Rig tab).", "Record")
            return False
        task = self.task.currentText().strip()
        if not task:
            self.ctl.error.emit(readable("Type a task prompt first",
                                          "Every episode stores the task it demonstrates (the policy's prompt)."), "")
            self.task.setFocus()
            return False
        folder = self.dataset_dir()
        try:
            store = DatasetStore(folder)
            rec = store.recover()
        except Exception as exc:  # noqa: BLE001
            self.ctl.error.emit(exc, "Opening the dataset")
            return False
        if rec.recovered or rec.quarantined:
            self.ctl.error.emit(readable("Recovered interrupted recordings", rec.format(), "", "info"), "")
        self._remember(task, folder)
        self.events = EventStream()
        # simulation: seeds continue from the dataset (the session picks them), so sessions never repeat a scene
        s = SessionSettings(task, self.episodes.value(), self.length.value(), self.reset.value(),
                            self.countdown.value(), None)
        self._saved_seen = 0
        self._drops0 = {n: st.dropped for n, st in _stats(self.ctl).items()}
        self.datasetChanged.emit(folder)
        self.state = "starting"
        if self.ctl.teleop_running:  # free teleop: stop it; the session runs its own start-up sequence
            self.ctl.stop_teleop()
            self._pending_start = (store, s)
        else:
            self._launch(store, s)
        self._update()
        self.setFocus()  # keys go to the session, not to a text field
        return True

    def _launch(self, store, settings) -> None:
        squeeze = self.window().teleop_panel.squeeze.isChecked() if hasattr(self.window(), "teleop_panel") else True
        self.session = self.ctl.start_recording(store, settings, self.events, wait_for_squeeze=squeeze)
        if self.session is None:
            self.state = "idle"
        self._update()

    def _remember(self, task: str, folder: str) -> None:
        hist = [task] + [self.task.itemText(i) for i in range(self.task.count()) if self.task.itemText(i) != task]
        self.task.blockSignals(True)
        self.task.clear()
        self.task.addItems(hist[:20])
        self.task.setCurrentIndex(0)
        self.task.blockSignals(False)
        for k, v in (("record/task_history", hist[:20]), ("record/dataset", folder),
                     ("record/episodes", self.episodes.value()), ("record/episode_s", self.length.value()),
                     ("record/reset_s", self.reset.value()), ("record/countdown_s", self.countdown.value())):
            self.settings.setValue(k, v)

    def _put(self, kind, label: str = "") -> bool:
        """Buttons, the label field and (through enabled shortcuts) keys all end here."""
        if self.events is None:
            return False
        self.events.put(kind, label)
        return True

    def next(self) -> None:
        from workbench.recording import SessionEvent

        if self._put(SessionEvent.NEXT) and self.state == "recording":
            self.state = "saving"
            self._update()

    def rerecord(self) -> None:
        from workbench.recording import SessionEvent

        self._put(SessionEvent.RERECORD)

    def stop(self) -> None:
        """End the session once: the current episode is kept, no further episode starts."""
        if self.session is None:
            return
        self.ctl.stop_teleop()
        self.state_label.setText("Stopping: saving the current episode…")

    def discard_last(self) -> None:
        """Move the most recently saved episode of this session to the dataset's trash (restorable)."""
        if self.session is None and not self.isVisible():
            return
        saved = list(self.session.saved) if self.session is not None else []
        name = saved[-1].name if saved else (self._last_saved_name if hasattr(self, "_last_saved_name") else "")
        if not name or name in self.discarded:
            self.ctl.error.emit(readable("Nothing to discard", "No episode was saved in this session yet; "
                                          "to throw away the episode being recorded, press Re-record (←).", "", "info"), "")
            return
        try:
            self.session.store.remove(name) if self.session is not None else self._store().remove(name)
        except Exception as exc:  # noqa: BLE001
            self.ctl.error.emit(exc, f"Discarding {name}")
            return
        self.discarded.append(name)
        self.last_mark.setText(f"{name} moved to the trash (Episodes tab → Show deleted → Restore to undo)")
        self.datasetChanged.emit(self.dataset_dir())

    def _store(self):
        from recorder.store import DatasetStore

        return DatasetStore(self.dataset_dir())

    def mark_preset(self, i: int) -> None:
        if i < len(self.labels):
            self.mark(self.labels[i])

    def _mark_typed(self) -> None:
        text = self.mark_text.text().strip()
        if text:
            self.mark(text)
            self.mark_text.clear()
            self.setFocus()

    def mark(self, label: str) -> bool:
        from workbench.recording import SessionEvent

        if self.state != "recording" or not self._put(SessionEvent.MARK, label):
            return False
        self.marks.append((self.episode_name, label))
        t = self.elapsed()
        self.last_mark.setText(f"at {t:.1f} s: " + (f"segment “{label}” started" if label else "segment closed"))
        return True

    def end_session(self, discard: bool = False) -> None:
        """The window closes: end the session now, keeping the current episode (marked partial) or discarding it."""
        from workbench.recording import SessionEvent

        if self.session is None:
            return
        if discard and self.events is not None:
            self.events.put(SessionEvent.RERECORD)  # the current episode is thrown away; stop ends the session
        self.ctl.stop_teleop()

    # -- session events (typed, queued onto the GUI thread by the controller) -----------------------------------------
    def _on_event(self, e) -> None:
        from workbench import events as ev

        if self.session is None:
            return
        if isinstance(e, ev.EpisodeStarted):
            self.state = "recording"
            self.episode_name = e.name
            self._wait_until = None
        elif isinstance(e, ev.EpisodeSaved):
            self.state = "saved"
            self._last_saved_name = e.episode.name
            self.show_report(e.episode)
            self.episodeSaved.emit(e.episode)
            self.datasetChanged.emit(self.dataset_dir())
            self._refresh_goal()
        elif isinstance(e, ev.Countdown):
            self.state = "countdown" if "starts in" in e.what else "reset"
            self._wait_until = time.monotonic() + e.seconds_left
        elif isinstance(e, ev.EpisodeDiscarded):
            self.state = "rerecord" if e.rerecord else self.state
            self.last_mark.setText(f"{e.name} discarded" + ("; recording it again" if e.rerecord else ""))
        else:
            return
        self._update()

    def _on_finished(self, _summary) -> None:
        pending = getattr(self, "_pending_start", None)
        if pending is not None:
            self._pending_start = None
            self._launch(*pending)
            return
        if self.session is not None:
            n = len(self.session.saved)
            self.session = None
            self.events = None
            self.state = "idle"
            self.state_label.setText(f"Session ended · {n} episode{'s' if n != 1 else ''} saved")
            self.datasetChanged.emit(self.dataset_dir())
        self._update()

    # -- poll timer ---------------------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Seconds recorded in the current episode: its step count over the control rate (exact on the sim's clock
        and on the wall clock alike, and never mixed up with the previous episode's ticks)."""
        w = self.session.current if self.session is not None else None
        if w is None or self.state != "recording" or self.ctl.config is None:
            return 0.0
        return w.steps / self.ctl.config.control_hz

    def update_live(self, tick) -> None:
        if self.session is None:
            return
        self.meter.add(tick.index, tick.t)
        nominal = self.ctl.config.control_hz
        hz = self.meter.rate()
        self.q_rate.set(_fmt_s(hz), rate_status(hz, nominal))

    def poll(self) -> None:
        self._enable_keys()
        if self.session is None:
            return
        if self.state == "recording":
            self.timer.set(f"{self.elapsed():5.1f}<span style='font-size:16px; color:{theme.MUTED}'> / "
                           f"{self.length.value():.0f}</span>", "fail")
        elif self._wait_until is not None and self.state in ("countdown", "reset"):
            left = max(0.0, self._wait_until - time.monotonic())
            self.timer.set(f"{left:4.1f}", "warn")
        drops = sum(max(0, st.dropped - self._drops0.get(n, 0)) for n, st in _stats(self.ctl).items())
        self.q_drops.set(str(drops), "warn" if drops else "ok")

    # -- display -----------------------------------------------------------------------------------------------------
    def show_report(self, saved) -> None:
        q = saved.quality
        self.report.setRowCount(len(q.checks))
        for r, c in enumerate(q.checks):
            val = "—" if c.value is None else f"{_num(c.value)} {c.unit}".strip()
            items = [QTableWidgetItem(c.name), QTableWidgetItem(val), QTableWidgetItem(c.status.upper())]
            items[0].setToolTip(c.detail)
            items[2].setForeground(theme_brush(c.status))
            f = items[2].font()
            f.setBold(True)
            items[2].setFont(f)
            for col, it in enumerate(items):
                self.report.setItem(r, col, it)
        self.q_last.set(q.status.upper(), q.status)
        self.saved_fig.set(str(len(self.session.saved) if self.session else self._saved_seen))

    def _update(self) -> None:
        active = self.session is not None
        pending = getattr(self, "_pending_start", None) is not None
        self.start_btn.setEnabled(not active and not pending and self.ctl.connected and not self.ctl.estopped)
        for b in (self.next_btn, self.rerecord_btn, self.stop_btn):
            b.setEnabled(active)
        self.discard_btn.setEnabled(active and bool(self.session.saved))
        for w in (self.dataset, self.task, self.episodes, self.length):
            w.setEnabled(not active)
        sim = self.ctl.config is not None and self.ctl.config.backend == "sim"
        for w in (self.countdown, self.reset):  # the simulator resets its scene itself: nothing to wait for
            w.setEnabled(not active and not sim)
            w.setToolTip("Not used on the simulator: it resets the scene itself" if sim else
                         "Seconds before each episode / between episodes (Next skips)")
        n = len(self.session.saved) if active else 0
        total = self.session.s.episodes if active else self.episodes.value()
        if active:
            self.counter.set(f"{min(n + 1, total)}<span style='font-size:16px; color:{theme.MUTED}'> / {total}</span>")
            self.saved_fig.set(str(n))
        texts = {
            "starting": ("Start-up: squeeze both leader grippers to begin", "warn"),
            "countdown": ("Get ready: recording starts…", "warn"),
            "recording": (f"● RECORDING  {self.episode_name}", "fail"),
            "saving": ("Saving…", "warn"),
            "saved": (f"Saved {getattr(self, '_last_saved_name', '')}", "ok"),
            "reset": ("Reset the scene", "warn"),
            "rerecord": ("Re-recording this episode", "warn"),
        }
        if active and self.state in texts:
            text, status = texts[self.state]
            self.state_label.setText(f"<span style='color:{theme.status_colour(status)}'>{text}</span>")
            pill = {"recording": f"REC {self.episode_name}"}.get(self.state, text.split(":")[0])
            self.recordingChanged.emit(pill, status)
        elif not active:
            ended = self.state_label.text().startswith("Session ended")
            if not self.ctl.connected:
                self.state_label.setText("Connect a rig to record")
            elif not ended or pending:
                self.state_label.setText("Starting…" if pending else "Ready")
            self.recordingChanged.emit("Not recording", "idle")


def _stats(ctl) -> dict:
    try:
        return ctl.camera_stats()
    except RuntimeError:
        return {}


def theme_brush(status: str):
    from PyQt6.QtGui import QBrush, QColor

    return QBrush(QColor(theme.status_colour(status)))
