"""Episodes tab: the dataset table with filters, the player, segment editing, labels and notes (undoable), soft
delete and restore, replay on the arms, LeRobot export and hub upload. Every action is a `recorder` / `workbench`
call. Damaged episodes are listed with the reason and skipped by export; everything else keeps working."""
from __future__ import annotations

import logging
from pathlib import Path

from PyQt6.QtCore import QItemSelectionModel, Qt, pyqtSignal
from PyQt6.QtGui import QKeySequence, QShortcut, QUndoStack
from PyQt6.QtWidgets import (QAbstractItemView, QButtonGroup, QCheckBox, QComboBox, QFileDialog, QGridLayout,
                             QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QMessageBox, QPlainTextEdit,
                             QPushButton, QSplitter, QTableView, QVBoxLayout, QWidget)

from ui import theme
from ui.episodes.model import COL, DAMAGED_COLOUR, EpisodesFilter, EpisodesModel
from ui.episodes.player import EpisodePlayer
from ui.episodes.undo import LabelEdit
from ui.tasks import JobProgress

log = logging.getLogger(__name__)

EXPORT_SCOPES = ("successes that passed quality", "shown episodes", "selected episodes")
OUTCOME_STYLE = {"success": "#238636", "failure": "#da3633", "unlabeled": "#6e7681"}


def _ask_overwrite(parent: QWidget, out: Path) -> bool:
    answer = QMessageBox.question(parent, "Replace the export?",
                                  f"{out} already exists.\nReplace it with this export?",
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
                                  QMessageBox.StandardButton.Cancel)
    return answer == QMessageBox.StandardButton.Yes


class EpisodesPanel(QWidget):
    exported = pyqtSignal(object)

    def __init__(self, controller, jobs, settings, parent=None):
        super().__init__(parent)
        self.ctl, self.jobs, self.settings = controller, jobs, settings
        self.store = None
        self.current: str | None = None
        self.undo_stack = QUndoStack(self)
        self.confirm_overwrite = lambda out: _ask_overwrite(self, out)  # replaceable (tests, scripts)
        self._export_default = ""  # the export folder we proposed for the dataset (follows it until edited)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(12, 12, 12, 12)
        split = QSplitter(Qt.Orientation.Horizontal)
        outer.addWidget(split)

        # ---- left: dataset, filters, table, label/notes, actions ----
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 6, 0)
        lv.setSpacing(8)
        top = QHBoxLayout()
        self.folder_label = QLabel("No dataset")
        self.folder_label.setStyleSheet("font-weight: 700; font-size: 14px;")
        self.open_btn = QPushButton("Open dataset…")
        self.refresh_btn = QPushButton("Refresh")
        top.addWidget(self.folder_label, 1)
        top.addWidget(self.open_btn)
        top.addWidget(self.refresh_btn)
        lv.addLayout(top)
        filt = QHBoxLayout()
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter by task…")
        self.outcome_f = QComboBox()
        self.outcome_f.addItems(["All labels", "success", "failure", "unlabeled"])
        self.quality_f = QComboBox()
        self.quality_f.addItems(["All quality", "pass", "warn", "fail"])
        self.show_deleted = QCheckBox("Show deleted")
        filt.addWidget(self.search, 1)
        filt.addWidget(self.outcome_f)
        filt.addWidget(self.quality_f)
        lv.addLayout(filt)
        self.model = EpisodesModel(self)
        self.proxy = EpisodesFilter(self)
        self.proxy.setSourceModel(self.model)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(28)
        self.table.setShowGrid(False)
        hdr = self.table.horizontalHeader()
        hdr.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        hdr.setSectionResizeMode(COL["Task"], QHeaderView.ResizeMode.Stretch)  # last: it elides, Segs stays visible
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # the task elides instead
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        lv.addWidget(self.table, 3)
        self.count_label = QLabel("")
        self.count_label.setProperty("class", "muted")
        counts = QHBoxLayout()
        counts.addWidget(self.count_label, 1)
        counts.addWidget(self.show_deleted)
        lv.addLayout(counts)
        self.damaged_label = QLabel("")  # one line (the window must not grow); the list is in the tooltip
        self.damaged_label.setMinimumWidth(1)
        self.damaged_label.setStyleSheet(f"color: {DAMAGED_COLOUR};")
        self.damaged_label.hide()
        lv.addWidget(self.damaged_label)

        lab = QGroupBox("Label and notes")
        lg = QVBoxLayout(lab)
        row = QHBoxLayout()
        self.outcome_group = QButtonGroup(self)
        self.outcome_btns: dict[str, QPushButton] = {}
        for o, text in (("success", "✔ Success"), ("failure", "✖ Failure"), ("unlabeled", "Unlabeled")):
            b = QPushButton(text)
            b.setCheckable(True)
            b.setStyleSheet(f"QPushButton:checked {{ background: {OUTCOME_STYLE[o]}; border-color: "
                            f"{OUTCOME_STYLE[o]}; color: white; font-weight: 700; }}")
            b.setToolTip(f"Label the episode {o} (the highlighted button is its current label)")
            b.clicked.connect(lambda _=False, oo=o: self.set_outcome(oo))
            self.outcome_group.addButton(b)
            self.outcome_btns[o] = b
            row.addWidget(b)
        lg.addLayout(row)
        self.notes = QPlainTextEdit()
        self.notes.setPlaceholderText("Notes (what went wrong, object placement, …)")
        self.notes.setFixedHeight(54)
        lg.addWidget(self.notes)
        row2 = QHBoxLayout()
        self.save_notes_btn = QPushButton("Save notes")
        self.delete_btn = QPushButton("Delete")
        theme.set_role(self.delete_btn, "danger")
        self.restore_btn = QPushButton("Restore")
        self.replay_btn = QPushButton("Replay on arms")
        self.replay_btn.setToolTip("Play the recorded actions on the connected followers (through the safety layer)")
        self.undo_btn = QPushButton("Undo")
        self.redo_btn = QPushButton("Redo")
        self.undo_btn.setToolTip("Undo the last label, notes or segment edit (Ctrl+Z)")
        self.redo_btn.setToolTip("Redo (Ctrl+Shift+Z)")
        row2.addWidget(self.save_notes_btn)
        row2.addWidget(self.undo_btn)
        row2.addWidget(self.redo_btn)
        row2.addStretch(1)
        row2.addWidget(self.replay_btn)
        row2.addWidget(self.delete_btn)
        row2.addWidget(self.restore_btn)
        lg.addLayout(row2)
        lv.addWidget(lab)

        exp = QGroupBox("Export")
        eg = QGridLayout(exp)
        self.export_dir = QLineEdit()
        self.export_dir.setPlaceholderText("LeRobot dataset folder")
        self.export_browse = QPushButton("Browse…")
        self.export_btn = QPushButton("Export to LeRobot")
        theme.set_role(self.export_btn, "primary")
        self.export_scope = QComboBox()
        self.export_scope.addItems(list(EXPORT_SCOPES))
        self.export_scope.setToolTip("Which episodes to export; damaged episodes are always left out")
        self.task_from_segments = QCheckBox("Task = segment text (sub-task training)")
        self.task_from_segments.setToolTip("Off: every frame's task is the episode's task prompt, and segment text "
                                           "goes to its own field (subtask_index). On: frames covered by a segment "
                                           "get its text as their task.")
        self.repo = QLineEdit()
        self.repo.setPlaceholderText("hub dataset id, e.g. my-lab/aloha-cube")
        self.repo.setToolTip(self.repo.placeholderText())
        self.push_btn = QPushButton("Push to hub")
        self.hub_token = QLineEdit()  # not remembered: a write token stays in this session only
        self.hub_token.setEchoMode(QLineEdit.EchoMode.Password)
        self.hub_token.setPlaceholderText("write token (empty: HF_TOKEN or saved login)")
        eg.addWidget(self.export_dir, 0, 0, 1, 2)
        eg.addWidget(self.export_browse, 0, 2)
        eg.addWidget(self.export_scope, 1, 0)
        eg.addWidget(self.export_btn, 1, 1, 1, 2)
        eg.addWidget(self.task_from_segments, 2, 0, 1, 3)
        self.hub_token.setToolTip(self.hub_token.placeholderText())
        hub = QHBoxLayout()  # one row with the repo id: another row would grow the window past 800 px
        hub.addWidget(self.repo, 3)
        hub.addWidget(self.hub_token, 2)
        eg.addLayout(hub, 3, 0, 1, 2)
        eg.addWidget(self.push_btn, 3, 2)
        self.progress = JobProgress(compact=True)
        eg.addWidget(self.progress, 4, 0, 1, 3)
        lv.addWidget(exp)
        split.addWidget(left)

        # ---- right: player + segment editing ----
        right = QWidget()
        rv = QVBoxLayout(right)
        rv.setContentsMargins(6, 0, 0, 0)
        rv.setSpacing(6)
        self.player = EpisodePlayer()
        rv.addWidget(self.player, 1)
        seg = QHBoxLayout()
        cap = QLabel("SEGMENT")
        cap.setProperty("class", "caption")
        self.seg_text = QLineEdit()
        self.seg_text.setPlaceholderText("select a segment on the timeline, or add one at the cursor")
        self.seg_text.setToolTip(self.seg_text.placeholderText())  # the field may be narrower than its hint
        self.seg_apply = QPushButton("Rename")
        self.seg_add = QPushButton("+ Add at cursor")
        self.seg_del = QPushButton("Delete segment")
        seg.addWidget(cap)
        seg.addWidget(self.seg_text, 1)
        seg.addWidget(self.seg_apply)
        seg.addWidget(self.seg_add)
        seg.addWidget(self.seg_del)
        rv.addLayout(seg)
        split.addWidget(right)
        split.setSizes([660, 600])  # the table's columns (Segs included) fit at the default window width
        split.setStretchFactor(1, 1)

        # wiring
        self.open_btn.clicked.connect(self._open_dataset)
        self.refresh_btn.clicked.connect(self.refresh)
        self.search.textChanged.connect(lambda t: self._filter(text=t))
        self.outcome_f.currentIndexChanged.connect(
            lambda i: self._filter(outcome="" if i == 0 else self.outcome_f.currentText()))
        self.quality_f.currentIndexChanged.connect(
            lambda i: self._filter(quality="" if i == 0 else self.quality_f.currentText()))
        self.show_deleted.toggled.connect(lambda _: self.refresh())
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        self.save_notes_btn.clicked.connect(self.save_notes)
        self.delete_btn.clicked.connect(self.delete_selected)
        self.restore_btn.clicked.connect(self.restore_selected)
        self.replay_btn.clicked.connect(self.replay)
        self.export_btn.clicked.connect(self.export)
        self.export_browse.clicked.connect(self._browse_export)
        self.push_btn.clicked.connect(self.push)
        tl = self.player.timeline
        tl.segmentsEdited.connect(self.save_segments)
        tl.selectionChanged.connect(self._segment_selected)
        self.seg_apply.clicked.connect(self.rename_segment)
        self.seg_text.returnPressed.connect(self.rename_segment)
        self.seg_add.clicked.connect(lambda: tl.add_segment(text=self.seg_text.text().strip() or "new segment"))
        self.seg_del.clicked.connect(tl.delete_selected)
        self.repo.setText(str(self.settings.value("export/repo", "") or ""))
        self.undo_btn.clicked.connect(self.undo_stack.undo)
        self.redo_btn.clicked.connect(self.undo_stack.redo)
        self.undo_stack.canUndoChanged.connect(self.undo_btn.setEnabled)
        self.undo_stack.canRedoChanged.connect(self.redo_btn.setEnabled)
        # bound slots, not lambdas: PyQt drops them with this panel, so a stack emitting while the window is torn
        # down never reaches deleted buttons (a lambda did, and crashed the process)
        self.undo_stack.undoTextChanged.connect(self._undo_tip)
        self.undo_stack.redoTextChanged.connect(self._redo_tip)
        self.undo_btn.setEnabled(False)
        self.redo_btn.setEnabled(False)
        for keys, slot in (("Ctrl+Z", self.undo_stack.undo), ("Ctrl+Shift+Z", self.undo_stack.redo),
                           ("Ctrl+Y", self.undo_stack.redo)):
            sc = QShortcut(QKeySequence(keys), self, slot)
            sc.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)  # only on this tab; text fields keep theirs
        self._update_actions()

    # -- dataset ---------------------------------------------------------------------------------------------------
    def set_dataset(self, folder: str | None) -> None:
        from recorder.store import DatasetStore

        if not folder:
            return
        try:
            store = DatasetStore(folder, create=True)  # writes nothing until something is recorded or edited
        except Exception as exc:  # noqa: BLE001
            self.ctl.error.emit(exc, "Opening the dataset")
            return
        if self.store is not None and store.root == self.store.root:
            self.refresh()
            return
        self.store = store
        self.undo_stack.clear()  # edits of another dataset are not undoable from here
        # the player, labels and notes follow the table: nothing of the old dataset's episode may stay on screen
        # (an "episode_3" highlighted in the new table while the old one played took the next label)
        self.table.selectionModel().clearSelection()
        self._unload()
        self.folder_label.setText(f"Dataset: {Path(folder).name}")
        self.folder_label.setToolTip(str(folder))
        proposed = str(store.root.with_name(store.root.name + "_lerobot"))
        if not self.export_dir.text().strip() or self.export_dir.text().strip() == self._export_default:
            self.export_dir.setText(proposed)  # the default follows the dataset; a folder the operator typed stays
        self._export_default = proposed
        self.refresh()

    def open_episode(self, folder: str, name: str) -> bool:
        """Show episode `name` of dataset `folder` in the player (filters that would hide it are cleared)."""
        self.set_dataset(folder)
        if self.store is None:
            return False
        self.refresh()
        if self.model.row_of(name) >= 0 and not self.proxy.mapFromSource(self.model.index(self.model.row_of(name),
                                                                                          0)).isValid():
            self.search.clear()
            self.outcome_f.setCurrentIndex(0)
            self.quality_f.setCurrentIndex(0)
        self.select_names([name])
        return self.current == name

    def _open_dataset(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Open a dataset folder", str(self.store.root if self.store else Path.home()))
        if d:
            self.set_dataset(d)

    def _undo_tip(self, text: str) -> None:
        self.undo_btn.setToolTip(f"Undo {text} (Ctrl+Z)")

    def _redo_tip(self, text: str) -> None:
        self.redo_btn.setToolTip(f"Redo {text} (Ctrl+Shift+Z)")

    def refresh(self) -> None:
        if self.store is None:
            return
        keep = self.selected_names()
        try:
            eps = self.store.list(include_deleted=self.show_deleted.isChecked(), include_damaged=True)
        except Exception as exc:  # noqa: BLE001
            self.ctl.error.emit(exc, "Reading the dataset")
            return
        self.model.set_episodes(eps)
        self._count()
        self._show_damaged([e for e in eps if e.damaged and not e.deleted])
        if keep:
            self.select_names(keep)
        elif self.current and self.model.row_of(self.current) < 0:
            self._unload()
        self._update_actions()

    def _unload(self) -> None:
        """No episode in the player: nothing of the last one's video, plots, label or notes stays on screen."""
        self.current = None
        self.player.unload()
        self._show_outcome(None)
        self.notes.blockSignals(True)
        self.notes.clear()
        self.notes.blockSignals(False)

    def _show_damaged(self, damaged: list) -> None:
        self.damaged_label.setVisible(bool(damaged))
        if damaged:
            names = ", ".join(e.file_name for e in damaged)
            self.damaged_label.setText(f"⚠ {len(damaged)} damaged, skipped by export: {names}")
            self.damaged_label.setToolTip("<br>".join(f"<b>{e.file_name}</b>: {e.damaged}" for e in damaged)
                                          + "<br>Select one and press Delete to move it to the trash.")

    def _filter(self, **kw) -> None:
        self.proxy.set_filters(**kw)
        self._count()

    def _count(self) -> None:
        n, shown = len(self.model.episodes), self.proxy.rowCount()
        ok = sum(1 for e in self.model.episodes if e.outcome == "success" and not e.deleted and not e.damaged)
        self.count_label.setText(f"{shown} of {n} episodes shown · {ok} labelled success")

    # -- selection -------------------------------------------------------------------------------------------------
    def selected_names(self) -> list[str]:
        rows = {self.proxy.mapToSource(i).row() for i in self.table.selectionModel().selectedRows()}
        return [self.model.episode(r).name for r in sorted(rows)]

    def select_names(self, names: list[str]) -> None:
        sm = self.table.selectionModel()
        sm.clearSelection()
        for name in names:
            r = self.model.row_of(name)
            if r >= 0:
                idx = self.proxy.mapFromSource(self.model.index(r, 0))
                if idx.isValid():
                    sm.select(idx, QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)
                    self.table.scrollTo(idx)

    def _selection_changed(self, *_) -> None:
        names = self.selected_names()
        name = names[-1] if names else None
        if name != self.current:
            if name is None:
                self._unload()
            else:
                self.current = name
                self._load(name)
        self._update_actions()

    def _load(self, name: str) -> None:
        e = self.current_summary()
        if e is not None and e.damaged:  # nothing to play: say why instead of failing in the player
            self.player.unload()
            self.player.title.setText(f"{name} is damaged: {e.damaged}")
            self._show_outcome(None)
            return
        try:
            self.player.load(self.store.path(name, include_deleted=True))
        except Exception as exc:  # noqa: BLE001
            self._unload()  # never the previous episode under this one's name
            self.ctl.error.emit(exc, f"Opening {name}")
            return
        info = self.player.info
        self._show_outcome(info.outcome)
        self.notes.setPlainText(info.notes)

    def _show_outcome(self, outcome: str | None) -> None:
        """Highlight the current label's button (none for no episode)."""
        self.outcome_group.setExclusive(False)
        for o, b in self.outcome_btns.items():
            b.setChecked(o == outcome)
        self.outcome_group.setExclusive(True)

    def current_summary(self):
        r = self.model.row_of(self.current) if self.current else -1
        return self.model.episode(r) if r >= 0 else None

    def _update_actions(self) -> None:
        e = self.current_summary()
        has = e is not None
        for w in (*self.outcome_btns.values(), self.notes, self.save_notes_btn, self.seg_add, self.seg_text,
                  self.seg_apply, self.seg_del):
            w.setEnabled(has and not e.deleted and not e.damaged)
        self.delete_btn.setEnabled(bool(self.selected_names()) and not (has and e.deleted))
        self.restore_btn.setVisible(self.show_deleted.isChecked())
        self.restore_btn.setEnabled(has and e.deleted)
        self.replay_btn.setEnabled(has and not e.deleted and not e.damaged and self.ctl.connected
                                   and not self.ctl.teleop_running and self.ctl.replay_job is None)
        self.export_btn.setEnabled(self.store is not None and any(not x.damaged for x in self.model.episodes))

    # -- labels, notes, segments ------------------------------------------------------------------------------------
    def _after_edit(self, info) -> None:
        r = self.model.row_of(info.name)
        if r >= 0:  # refresh just this row from the store (it re-reads only changed files)
            self.refresh()

    def _write(self, name: str, field: str, value) -> object:
        """Write one field of an episode through the store (also used by undo / redo) and show the result."""
        if field == "outcome":
            info = self.store.label(name, value)
        elif field == "notes":
            info = self.store.set_notes(name, value)
        else:
            info = self.store.set_segments(name, value)
        if name == self.current and self.player.info is not None:
            self.player.info.outcome, self.player.info.notes = info.outcome, info.notes
            self.player.info.segments = info.segments
            self._show_outcome(info.outcome)
            if field == "notes" and self.notes.toPlainText() != info.notes:
                self.notes.setPlainText(info.notes)
            if field == "segments" and self.player.timeline.segments != info.segments:
                self.player.timeline.set_segments(info.segments)
        self._after_edit(info)
        return info

    def _undoable(self, name: str, field: str, before, after, text: str, context: str) -> None:
        if before == after:
            return
        try:
            self._write(name, field, after)
        except Exception as exc:  # noqa: BLE001
            self.ctl.error.emit(exc, context)
            self._write_quietly(name, field, before)
            return
        self.undo_stack.push(LabelEdit(self._apply_from_stack, name, field, before, after, text))

    def _apply_from_stack(self, name: str, field: str, value) -> None:
        try:
            self._write(name, field, value)
        except Exception as exc:  # noqa: BLE001
            self.ctl.error.emit(exc, "Undo / redo")

    def _write_quietly(self, name: str, field: str, value) -> None:
        """Put the view back after a failed edit (the store still holds `value`)."""
        if name == self.current and field == "segments" and self.player.info is not None:
            self.player.timeline.set_segments(value)
        elif name == self.current and field == "outcome":
            self._show_outcome(value)

    def set_outcome(self, outcome: str) -> None:
        if not self.current or self.player.info is None:
            return
        before = self.player.info.outcome
        self._undoable(self.current, "outcome", before, outcome, f"label {self.current} {outcome}", "Labelling")
        self._show_outcome(self.player.info.outcome)

    def save_notes(self) -> None:
        if not self.current or self.player.info is None:
            return
        self._undoable(self.current, "notes", self.player.info.notes, self.notes.toPlainText(),
                       f"notes of {self.current}", "Saving notes")

    def save_segments(self, segments: list) -> None:
        if not self.current or self.player.info is None:
            return
        before = list(self.player.info.segments)
        self._undoable(self.current, "segments", before, list(segments), f"segment edit in {self.current}",
                       "Saving segments")

    def _segment_selected(self, i: int) -> None:
        tl = self.player.timeline
        if 0 <= i < len(tl.segments):
            s = tl.segments[i]
            self.seg_text.setText(s.text)
            self.seg_text.setToolTip(f"steps {s.start}–{s.end}")
        else:
            self.seg_text.clear()

    def rename_segment(self) -> None:
        tl = self.player.timeline
        if tl.selected >= 0:
            tl.set_text(tl.selected, self.seg_text.text())

    # -- delete / restore -------------------------------------------------------------------------------------------
    def delete_selected(self) -> None:
        names = self.selected_names()
        self._unload()
        for n in names:
            try:
                self.store.remove(n)
            except Exception as exc:  # noqa: BLE001
                self.ctl.error.emit(exc, f"Deleting {n}")
        self.refresh()
        if names:
            self.ctl.error.emit(_info(f"Moved {len(names)} episode(s) to the trash",
                                      "Tick “Show deleted” to see them and press Restore to bring one back."), "")

    def restore_selected(self) -> None:
        names = self.selected_names()
        self.player.unload()
        self.current = None
        for n in names:
            try:
                self.store.restore(n)
            except Exception as exc:  # noqa: BLE001
                self.ctl.error.emit(exc, f"Restoring {n}")
        self.refresh()

    # -- replay -----------------------------------------------------------------------------------------------------
    def replay(self):
        if not self.current:
            return None
        job = self.ctl.replay(self.store.path(self.current))
        if job is not None:
            job.succeeded.connect(self._replayed)
            job.cancelled.connect(lambda: self.ctl.error.emit(
                _info("Replay stopped", "Cancelled by the operator: the followers hold their pose."), ""))
            self.progress.track(job)
            self._update_actions()
            job.finished.connect(self._update_actions)
        return job

    def _replayed(self, r) -> None:
        what = "stopped early" if r.stopped else f"{r.steps} steps"
        sim = "" if r.success is None else f" · task {'succeeded' if r.success else 'not completed'} in simulation"
        self.ctl.error.emit(_info(f"Replay done: {what}",
                                  f"follower tracking median {r.tracking_median_rad:.3f} rad, max "
                                  f"{r.tracking_max_rad:.3f} rad · {r.clamped} commands clamped by the safety "
                                  f"layer{sim}"), "")

    # -- export / upload --------------------------------------------------------------------------------------------
    def _browse_export(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Export into (a new folder is created)", self.export_dir.text())
        if d:
            self.export_dir.setText(d)

    def export_names(self) -> list[str]:
        """The episodes the export scope picks; damaged and deleted episodes are never exported."""
        scope = EXPORT_SCOPES[self.export_scope.currentIndex()]
        if scope == "selected episodes":
            chosen = [self.model.episode(self.model.row_of(n)) for n in self.selected_names()]
        elif scope == "shown episodes":
            chosen = [self.model.episode(self.proxy.mapToSource(self.proxy.index(r, 0)).row())
                      for r in range(self.proxy.rowCount())]
        else:
            chosen = [e for e in self.model.episodes if e.outcome == "success" and e.quality == "pass"]
        return [e.name for e in chosen if not e.deleted and not e.damaged]

    def export(self):
        from recorder.export_lerobot import export_lerobot

        names = self.export_names()
        out = self.export_dir.text().strip()
        if not names:
            from recorder.store import why_none_selected

            scope = EXPORT_SCOPES[self.export_scope.currentIndex()]
            usable = [e for e in self.model.episodes if not e.deleted and not e.damaged]
            damaged = sum(1 for e in self.model.episodes if e.damaged and not e.deleted)
            why = why_none_selected(usable, ["success"], ["pass"], damaged=damaged) \
                if scope not in ("selected episodes", "shown episodes") else \
                f"no {scope}{f' ({damaged} damaged left out)' if damaged else ''}"
            self.ctl.error.emit(_info("Nothing to export", f"{why[0].upper()}{why[1:]}. Pick another scope, label "
                                      "episodes or clear the filters."), "")
            return None
        if not out:
            self.ctl.error.emit(_info("Choose an export folder", "Type a folder path next to “Export”."), "")
            return None
        target = Path(out).expanduser()
        if target.exists() and not self.confirm_overwrite(target):
            return None
        paths = [self.store.path(n) for n in names]
        task_source = "segments" if self.task_from_segments.isChecked() else "task"

        def work(ctx):
            def progress(text: str, fraction: float) -> None:
                ctx.check()  # Cancel: export_lerobot removes its partial output; an earlier export stays
                ctx.progress(text, fraction)

            return export_lerobot(paths, target, robot_type="aloha", overwrite=True, progress=progress,
                                  task_source=task_source)

        job = self.jobs.submit(f"Exporting {len(paths)} episodes", work, cancellable=True,
                               on_success=self._exported, on_error=lambda e: self.ctl.error.emit(e, "Export"))
        job.cancelled.connect(lambda: self.ctl.error.emit(
            _info("Export cancelled", f"Nothing was written to {out}; an earlier export there is unchanged."), ""))
        self.progress.track(job)
        return job

    def _exported(self, result) -> None:
        self.exported.emit(result)
        self.ctl.error.emit(_info(f"Exported {result.episodes} episodes ({result.frames} frames)",
                                  f"LeRobot dataset at {result.root} (video codec {result.codec}).", keep=True), "")

    def push(self):
        from recorder.hub import push_to_hub

        repo, folder = self.repo.text().strip(), self.export_dir.text().strip()
        if not repo or "/" not in repo:
            self.ctl.error.emit(_info("Give a hub dataset id", "Like your-name/aloha-cube."), "")
            return None
        self.settings.setValue("export/repo", repo)
        token = self.hub_token.text().strip() or None

        def work(ctx):
            def progress(text: str, fraction: float) -> None:
                ctx.check()  # Cancel: stops before the commit, so nothing half-uploaded appears on the hub
                ctx.progress(text, fraction)

            return push_to_hub(Path(folder), repo, progress=progress, token=token)

        job = self.jobs.submit(f"Pushing to {repo}", work, cancellable=True,
                               on_success=lambda url: self.ctl.error.emit(_info("Uploaded", str(url), keep=True), ""),
                               on_error=lambda e: self.ctl.error.emit(_push_error(e), "Push to hub"))
        job.cancelled.connect(lambda: self.ctl.error.emit(
            _info("Upload cancelled", f"Nothing was committed to {repo}."), ""))
        self.progress.track(job)
        return job


def _info(title: str, message: str, keep: bool = False):
    from ui.errors import Readable

    return Readable(title, message, "", "info", keep=keep)


def _push_error(exc: BaseException):
    """A missing token said for a window user (the hub module's text names the CLI login)."""
    from recorder.hub import HubError
    from ui.errors import Readable

    if isinstance(exc, HubError) and "is not a LeRobot export" in str(exc):
        return Readable("Nothing exported to push", str(exc).split(";")[0] + ".",
                        "Export the episodes first (the Export button above), then push that folder.")
    if isinstance(exc, HubError) and "no Hugging Face token" in str(exc):
        return Readable("No Hugging Face token", "Pushing needs a token with write access.",
                        "Paste one into the token field under Push (huggingface.co → Settings → Access Tokens), "
                        "or set HF_TOKEN before starting the app.")
    return exc
