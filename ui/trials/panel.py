"""Trials tab: widgets and signal wiring over `workbench.deploy.trials_service`, the service `workbench trials`
uses. The fields become a `TrialsRequest`; the service opens the policy (a local server child process for a folder
or hub id: on a worker job, never on the GUI thread), resolves the plan (prompt, policy identity, default
dataset), runs the `TrialRunner` on the RigSession and closes the policy when the trials end or the window
closes. The tab follows the runner's typed events and shows the statistics of `workbench.deploy.trial_stats`.
"""
from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path

import numpy as np
from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtGui import QKeySequence, QShortcut
from PyQt6.QtWidgets import (QAbstractItemView, QApplication, QButtonGroup, QCheckBox, QComboBox, QDoubleSpinBox,
                             QFileDialog, QFormLayout, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
                             QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ui import theme
from ui.tasks import Cancelled
from ui.trials.models import ResultsModel, SessionTrialsModel, TrialRow, make_table
from ui.widgets import BigFigure, PathEdit, is_text_input, readable
from workbench import events as ev
from workbench.deploy.policy_source import ExecConfig
from workbench.deploy.trials_service import TrialsPlan, TrialsRequest, TrialsService

log = logging.getLogger(__name__)

SOURCES = (("folder", "Policy folder"), ("hub", "Hub id"), ("url", "Policy server (ws://)"))
DEVICES = ("auto", "cuda", "cpu")
MODES = (("sync", "execute k actions, then ask for the next chunk (the followers hold while it comes)"),
         ("async", "ask every k actions while the current chunk runs (latency compensated)"),
         ("rtc", "async + real-time chunking: the new chunk continues the old one"))
OUTCOME_BUTTONS = (("success", "✔ Success"), ("failure", "✖ Failure"), ("partial", "◐ Partial"))
OUTCOME_COLOURS = {"success": "#238636", "failure": "#da3633", "partial": "#9e6a03", "unlabeled": "#6e7681",
                   "aborted": "#8957e5"}
KEYS = {"next": "N", "takeover": "T", "command": "C"}


def _left(w: QWidget) -> QHBoxLayout:
    """A form field at its own width, on the left."""
    row = QHBoxLayout()
    row.addWidget(w)
    row.addStretch(1)
    return row


class TrialsPanel(QWidget):
    openEpisode = pyqtSignal(str, str)  # dataset folder, episode name: the Episodes player
    predictionChanged = pyqtSignal(object)  # (times [H] on the rig clock, actions [H, 14]) or None: live charts
    trialsChanged = pyqtSignal(str, str)  # toolbar pill text, status

    def __init__(self, controller, jobs, settings, record_dataset=lambda: "", parent=None):
        super().__init__(parent)
        self.ctl, self.jobs, self.settings = controller, jobs, settings
        self.record_dataset = record_dataset  # callable: the Record tab's dataset (the default's anchor)
        self.service: TrialsService | None = None  # this (or the last) session's trials: policy, plan, runner
        self.open_job = None
        self.state = "idle"  # idle | opening | running | finished
        self.server_pid: int | None = None
        self.selected_trial: int | None = None  # the trial the outcome buttons label
        self.latencies: list[float] = []  # round trips of this trial's chunks (ms)
        self.commands: list[str] = []
        self._closing = False
        self._pending = False  # start the trials once the free teleop that ran has stopped
        self.operator = False
        self.needs_label = False
        self.choose_csv_path = self._ask_csv_path  # replaceable (tests)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 12, 12, 12)
        lay.setSpacing(10)
        self._build_policy(lay)
        self._build_settings(lay)
        self._build_run(lay)
        self._build_outcome(lay)
        self._build_results(lay)
        self._wire()
        self._kind_changed()
        self._update()

    # ------------------------------------------------------------------------------------------------ layout
    def _build_policy(self, lay: QVBoxLayout) -> None:
        s = self.settings
        box = QGroupBox("Policy")
        outer = QVBoxLayout(box)
        form = QFormLayout()
        outer.addLayout(form)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.source = QComboBox()
        for key, text in SOURCES:
            self.source.addItem(text, key)
        self.source.setCurrentIndex(max(0, self.source.findData(s.value("trials/source", "folder"))))
        form.addRow("Source", self.source)
        row = QHBoxLayout()
        self.policy_edit = PathEdit(str(s.value("trials/policy", "") or ""))  # long paths: both ends shown
        self.browse_btn = QPushButton("Browse…")
        row.addWidget(self.policy_edit, 1)
        row.addWidget(self.browse_btn)
        form.addRow("Policy", row)
        trow = QHBoxLayout()
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("the server's api key")
        self.token.setToolTip("The api key of the policy server (empty: the WORKBENCH_API_KEY environment variable)")
        self.remember_token = QCheckBox("remember")
        self.remember_token.setToolTip("Keep the key in the app's settings file (plain text on this computer); "
                                       "otherwise it is forgotten when the app closes")
        if s.value("trials/token"):
            self.token.setText(str(s.value("trials/token")))
            self.remember_token.setChecked(True)
        trow.addWidget(self.token, 1)
        trow.addWidget(self.remember_token)
        self.token_label = QLabel("Token")
        form.addRow(self.token_label, trow)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setCurrentText(str(s.value("trials/device", "auto")))
        self.device.setToolTip("inference device of the local policy server")
        self.device_label = QLabel("Device")
        form.addRow(self.device_label, self.device)
        self.policy_info = QLabel("")
        self.policy_info.setWordWrap(True)
        self.policy_info.setProperty("class", "muted")
        outer.addWidget(self.policy_info)  # under the form, not in it: a form row's wrapped label got blank lines
        lay.addWidget(box)

    def _build_settings(self, lay: QVBoxLayout) -> None:
        s = self.settings
        box = QGroupBox("Trials")
        form = QFormLayout(box)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        # each policy's own prompt: empty = the task it was trained on; a typed one is remembered for that policy
        self.prompt = QLineEdit("")
        self.prompt.setPlaceholderText("default: the policy's task")
        form.addRow("Prompt", self.prompt)
        self.prompt_note = QLabel("")
        self.prompt_note.setWordWrap(True)
        self.prompt_note.setVisible(False)
        form.addRow("", self.prompt_note)
        self.trained_task: str | None = None  # the selected policy's (its folder's dataset.json, then the server's)
        self.trials = QSpinBox()
        self.trials.setRange(1, 10000)
        self.trials.setValue(int(s.value("trials/count", 10)))
        self.trials.valueChanged.connect(self._trials_suffix)  # "1 trial", "10 trials"
        self._trials_suffix(self.trials.value())
        self.time_limit = QDoubleSpinBox()
        self.time_limit.setRange(0.5, 3600)
        self.time_limit.setDecimals(1)
        self.time_limit.setSuffix(" s")
        self.time_limit.setToolTip("a trial ends at this time at the latest (its outcome: the simulator's, or "
                                   "yours to label)")
        self.time_limit.setValue(float(s.value("trials/time_limit_s", 20.0)))
        form.addRow("Run", _left(self.trials))
        form.addRow("Time limit", _left(self.time_limit))
        mrow = QHBoxLayout()
        self.mode = QComboBox()
        for i, (key, text) in enumerate(MODES):
            self.mode.addItem(key, key)
            self.mode.setItemData(i, text, Qt.ItemDataRole.ToolTipRole)
        self.mode.setToolTip("chunk execution: " + "; ".join(f"{k}: {t}" for k, t in MODES))
        self.mode.setCurrentIndex(max(0, self.mode.findData(s.value("trials/mode", "sync"))))
        self.execute_steps = QSpinBox()
        self.execute_steps.setRange(1, 1000)
        self.execute_steps.setValue(int(s.value("trials/execute_steps", 25)))
        self.execute_steps.setToolTip("sync: actions executed per chunk; async / rtc: ask every this many actions")
        self.ensemble = QCheckBox("ensemble")
        self.ensemble.setToolTip("ACT temporal ensembling (async / rtc): every slot's action is a weighted mean "
                                 "of all chunks that cover it")
        self.ensemble.setChecked(s.value("trials/ensemble", False) in (True, "true"))
        mrow.addWidget(self.mode)
        mrow.addWidget(QLabel("k"))
        mrow.addWidget(self.execute_steps)
        mrow.addWidget(self.ensemble)
        mrow.addStretch(1)
        form.addRow("Execution", mrow)
        self.seeds = QLineEdit(str(s.value("trials/seeds", "") or ""))
        self.seeds.setPlaceholderText("e.g. 100-119 or 3,5,8 (default: held out)")
        self.seeds.setToolTip("Simulator scenes, e.g. 100-119 or 3,5,8. Empty: held-out scenes, from 100000 on (or "
                              "after the trials dataset's last), skipping any the policy was trained on")
        form.addRow("Seeds", self.seeds)
        drow = QHBoxLayout()
        self.dataset = PathEdit(str(s.value("trials/dataset", "") or ""))
        self.dataset.setPlaceholderText("default: trials/<policy>")
        self.dataset.set_empty_tip("Where the trial episodes go. Empty: trials/<policy> next to the recording "
                                   "dataset (each policy its own folder)")
        self.dataset_btn = QPushButton("Browse…")
        drow.addWidget(self.dataset, 1)
        drow.addWidget(self.dataset_btn)
        form.addRow("Dataset", drow)
        self.takeover = QCheckBox("leaders follow, a squeeze takes over")
        self.takeover.setToolTip("The leader arms follow the followers during a trial; squeezing a leader gripper "
                                 "(or the pedal, or T) hands control to the operator, recorded as a correction")
        self.takeover.setChecked(s.value("trials/takeover", True) not in (False, "false"))
        form.addRow("Takeover", self.takeover)
        lay.addWidget(box)

    def _trials_suffix(self, n: int) -> None:
        self.trials.setSuffix(" trial" if n == 1 else " trials")

    def _build_run(self, lay: QVBoxLayout) -> None:
        box = self.run_box = QGroupBox("Run")
        g = QGridLayout(box)
        g.setVerticalSpacing(6)
        self.state_label = QLabel("Ready")
        self.state_label.setStyleSheet("font-size: 18px; font-weight: 800;")
        self.state_label.setWordWrap(True)
        self.state_label.setMinimumWidth(1)
        g.addWidget(self.state_label, 0, 0, 1, 3)
        self.trial_fig = BigFigure("Trial")
        self.time_fig = BigFigure("Time", "s")
        self.latency_fig = BigFigure("Latency", "ms")
        g.addWidget(self.trial_fig, 1, 0)
        g.addWidget(self.time_fig, 1, 1)
        g.addWidget(self.latency_fig, 1, 2)
        self.latency_label = QLabel("")
        self.latency_label.setProperty("class", "muted")
        self.latency_label.setWordWrap(True)
        g.addWidget(self.latency_label, 2, 0, 1, 3)
        self.start_btn = QPushButton("▶  Start trials")
        theme.set_role(self.start_btn, "primary")
        self.next_btn = QPushButton("Next →")
        self.next_btn.setToolTip("End this trial now (outcome: yours to label) and go on (N)")
        self.takeover_btn = QPushButton("Take over")
        self.takeover_btn.setToolTip("The leaders drive the followers / hand back to the policy (T; the pedal and "
                                     "a squeeze of the leader grippers do the same)")
        self.stop_btn = QPushButton("■ Stop")
        self.stop_btn.setToolTip("End this trial and the session")
        for b in (self.start_btn, self.next_btn, self.takeover_btn, self.stop_btn):
            b.setMinimumHeight(34)
        g.addWidget(self.start_btn, 3, 0, 1, 3)
        btns = QHBoxLayout()
        btns.addWidget(self.next_btn)
        btns.addWidget(self.takeover_btn)
        btns.addWidget(self.stop_btn)
        g.addLayout(btns, 4, 0, 1, 3)
        self.takeover_label = QLabel("")
        self.takeover_label.setWordWrap(True)
        g.addWidget(self.takeover_label, 5, 0, 1, 3)
        crow = QHBoxLayout()
        self.command = QLineEdit()
        self.command.setPlaceholderText("language command (Enter sends)")
        self.command.setToolTip("A new prompt for the policy, from its next chunk on (C focuses this field)")
        self.send_btn = QPushButton("Send")
        crow.addWidget(self.command, 1)
        crow.addWidget(self.send_btn)
        g.addLayout(crow, 6, 0, 1, 3)
        self.prompt_label = QLabel("")
        self.prompt_label.setWordWrap(True)
        self.prompt_label.setMinimumWidth(1)
        self.prompt_label.setStyleSheet(f"color: {theme.ACCENT}; font-weight: 600;")
        g.addWidget(self.prompt_label, 7, 0, 1, 3)
        keys = QLabel(f"Keys: {KEYS['next']} next · {KEYS['takeover']} take over / hand back · "
                      f"{KEYS['command']} type a command · Esc e-stop")
        keys.setProperty("class", "muted")
        keys.setWordWrap(True)
        g.addWidget(keys, 8, 0, 1, 3)
        lay.addWidget(box)

    def _build_outcome(self, lay: QVBoxLayout) -> None:
        self.outcome_box = QGroupBox("Outcome")
        v = QVBoxLayout(self.outcome_box)
        self.outcome_label = QLabel("No trial yet")
        self.outcome_label.setWordWrap(True)
        self.outcome_label.setMinimumWidth(1)
        v.addWidget(self.outcome_label)
        row = QHBoxLayout()
        self.outcome_group = QButtonGroup(self)
        self.outcome_btns: dict[str, QPushButton] = {}
        for o, text in OUTCOME_BUTTONS:
            b = QPushButton(text)
            b.setCheckable(True)
            b.setToolTip(f"Label the trial {o} (overrides the simulator's outcome)")
            self.outcome_group.addButton(b)
            self.outcome_btns[o] = b
            row.addWidget(b)
        v.addLayout(row)
        self.notes = QLineEdit()
        self.notes.setPlaceholderText("notes (saved with the label)")
        v.addWidget(self.notes)
        self._style_outcomes(attention=False)
        lay.addWidget(self.outcome_box)

    def _build_results(self, lay: QVBoxLayout) -> None:
        box = QGroupBox("Results")
        v = QVBoxLayout(box)
        self.results_model = ResultsModel(self)
        self.results = make_table(self.results_model, 0)
        self.results.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        self.results.setMinimumHeight(96)
        self.results.setToolTip("per policy and prompt, from the trial episodes of this dataset and of the other "
                                "policies' trial folders next to it; click two rows to compare them")
        self.results.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # "cube@2000 · …the cube": both ends matter
        v.addWidget(self.results)
        self.results_note = QLabel("Click two rows (two policies or prompts), then Compare.")
        self.results_note.setProperty("class", "muted")
        self.results_note.setWordWrap(True)
        v.addWidget(self.results_note)
        row = QHBoxLayout()
        self.compare_btn = QPushButton("Compare")
        self.compare_btn.setToolTip("Fisher's exact test on the two selected rows")
        self.export_btn = QPushButton("Export CSV…")
        self.refresh_btn = QPushButton("Refresh")
        row.addWidget(self.compare_btn)
        row.addWidget(self.export_btn)
        row.addStretch(1)
        row.addWidget(self.refresh_btn)
        v.addLayout(row)
        self.compare_label = QLabel("")
        self.compare_label.setWordWrap(True)
        self.compare_label.setMinimumWidth(1)
        v.addWidget(self.compare_label)
        cap = QLabel("THIS SESSION")
        cap.setProperty("class", "caption")
        v.addWidget(cap)
        self.trials_model = SessionTrialsModel(self)
        self.trials_table = make_table(self.trials_model, 1)
        self.trials_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.trials_table.setMinimumHeight(110)
        v.addWidget(self.trials_table)
        lay.addWidget(box, 1)

    def _wire(self) -> None:
        self.source.currentIndexChanged.connect(self._kind_changed)
        self.policy_edit.textChanged.connect(self._policy_text_changed)
        self.prompt.textChanged.connect(self._prompt_edited)
        self._load_prompt(self.policy_edit.text().strip())  # the remembered policy's own prompt
        self.browse_btn.clicked.connect(self._browse_policy)
        self.dataset_btn.clicked.connect(self._browse_dataset)
        self.dataset.editingFinished.connect(self.refresh_results)
        self.mode.currentIndexChanged.connect(self._update)
        self.start_btn.clicked.connect(self.start)
        self.next_btn.clicked.connect(self.next)
        self.stop_btn.clicked.connect(self.stop)
        self.takeover_btn.clicked.connect(self.toggle_takeover)
        self.send_btn.clicked.connect(self.send_command)
        self.command.returnPressed.connect(self.send_command)
        for o, b in self.outcome_btns.items():
            b.clicked.connect(lambda _=False, oo=o: self.label(oo))
        self.compare_btn.clicked.connect(self.compare_selected)
        self.export_btn.clicked.connect(lambda: self.export_csv())
        self.refresh_btn.clicked.connect(self.refresh_results)
        self.trials_table.doubleClicked.connect(self._open_row)
        self.trials_table.selectionModel().selectionChanged.connect(self._trial_selected)
        self.results.selectionModel().selectionChanged.connect(lambda *_: self._update())
        self.shortcuts: list[QShortcut] = []
        for key, fn in ((KEYS["next"], self.next), (KEYS["takeover"], self.toggle_takeover),
                        (KEYS["command"], self._focus_command)):
            sc = QShortcut(QKeySequence(key), self, fn)
            sc.setContext(Qt.ShortcutContext.ApplicationShortcut)
            sc.setAutoRepeat(False)
            self.shortcuts.append(sc)
        QApplication.instance().focusChanged.connect(self._on_focus_changed)  # a bound slot: gone with us
        self.ctl.sessionEvent.connect(self._on_event)
        self.ctl.teleopFinished.connect(self._on_mode_finished)
        self.ctl.connectionChanged.connect(lambda _: self._update())
        self.ctl.estopChanged.connect(lambda _: self._update())

    # ------------------------------------------------------------------------------------------------ keys
    def keys_active(self) -> bool:
        """N / T / C work on this tab, never while a text field has focus (there they type), and never while the
        Record tab's session owns the single keys."""
        rp = getattr(self.window(), "record_panel", None)
        return self.isVisible() and not is_text_input(QApplication.focusWidget()) and \
            (rp is None or rp.session is None)

    def _enable_keys(self) -> None:
        on = self.keys_active()
        for sc in self.shortcuts:
            sc.setEnabled(on)

    def _on_focus_changed(self, _old, _new) -> None:
        self._enable_keys()

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        self._enable_keys()

    def hideEvent(self, event) -> None:  # noqa: N802
        super().hideEvent(event)
        self._enable_keys()

    def _focus_command(self) -> None:
        self.command.setFocus()
        self.command.selectAll()

    # ------------------------------------------------------------------------------------------------ policy
    def source_kind(self) -> str:
        return self.source.currentData()

    def set_policy(self, spec: str) -> None:
        """From the Train tab's "Use in trials": a policy folder."""
        self.source.setCurrentIndex(self.source.findData("url" if spec.startswith(("ws://", "wss://")) else
                                                         "folder"))
        self.policy_edit.setText(spec)

    def _policy_text_changed(self, text: str) -> None:
        if text.strip().startswith(("ws://", "wss://")) and self.source_kind() != "url":
            self.source.setCurrentIndex(self.source.findData("url"))
        self._load_prompt(text.strip())

    # -- the prompt, per policy
    def _prompts(self) -> dict[str, str]:
        try:
            d = json.loads(str(self.settings.value("trials/prompts", "{}") or "{}"))
        except ValueError:
            return {}
        return d if isinstance(d, dict) else {}

    def _remember_prompt(self) -> None:
        """The typed prompt for the current policy (none: its trained task is the default again)."""
        spec, text = self.policy_edit.text().strip(), self.prompt.text().strip()
        if not spec:
            return
        d = self._prompts()
        if text and text != self.trained_task:
            d[spec] = text
        else:
            d.pop(spec, None)
        self.settings.setValue("trials/prompts", json.dumps(d))

    def _load_prompt(self, spec: str) -> None:
        """Another policy: its own remembered prompt, else empty with its trained task as the shown default."""
        from finetune.policy_meta import trained_task

        self.trained_task = trained_task(spec) if spec and self.source_kind() == "folder" else None
        self._show_trained_task()
        self.prompt.setText(self._prompts().get(spec, ""))
        self._prompt_edited()

    def _show_trained_task(self) -> None:
        self.prompt.setPlaceholderText(f"default: “{self.trained_task}”" if self.trained_task else
                                       "default: the policy's task")
        self.prompt.setToolTip("Empty: the task the policy was trained on" +
                               (f", “{self.trained_task}”" if self.trained_task else "") +
                               ". A typed prompt is remembered for this policy only.")

    def _prompt_edited(self, *_) -> None:
        text = self.prompt.text().strip()
        differs = bool(text and self.trained_task and text != self.trained_task)
        self.prompt_note.setVisible(differs)
        if differs:
            self.prompt_note.setText(f"<span style='color:{theme.WARN}'>differs from the task the policy was trained "
                                     f"on: “{self.trained_task}”</span> (clear the field to use it)")

    def _kind_changed(self) -> None:
        kind = self.source_kind()
        url = kind == "url"
        self.browse_btn.setVisible(kind == "folder")
        for w in (self.token, self.remember_token, self.token_label):
            w.setVisible(url)
        for w in (self.device, self.device_label):
            w.setVisible(not url)
        self.policy_edit.setPlaceholderText({"folder": "a run's policy folder",
                                             "hub": "e.g. user/pi0-cube",
                                             "url": "ws://gpu-box:8000"}[kind])
        self.policy_edit.set_empty_tip({"folder": "A training run's policy folder (Train → Use in trials)",
                                        "hub": "A Hugging Face hub id (downloaded once, then cached)",
                                        "url": "The address of a `workbench serve` policy server"}[kind])

    def _browse_policy(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Policy folder", self.policy_edit.text().strip())
        if d:
            self.policy_edit.setText(d)

    def _browse_dataset(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Dataset for the trial episodes", self.dataset.text().strip())
        if d:
            self.dataset.setText(d)
            self.refresh_results()

    def _remember(self) -> None:
        s = self.settings
        for k, v in (("trials/source", self.source_kind()), ("trials/policy", self.policy_edit.text().strip()),
                     ("trials/device", self.device.currentText()),
                     ("trials/count", self.trials.value()), ("trials/time_limit_s", self.time_limit.value()),
                     ("trials/mode", self.mode.currentData()), ("trials/execute_steps", self.execute_steps.value()),
                     ("trials/ensemble", self.ensemble.isChecked()), ("trials/seeds", self.seeds.text().strip()),
                     ("trials/dataset", self.dataset.text().strip()), ("trials/takeover", self.takeover.isChecked())):
            s.setValue(k, v)
        self._remember_prompt()
        if self.remember_token.isChecked() and self.token.text():
            s.setValue("trials/token", self.token.text())
        else:
            s.remove("trials/token")

    # ------------------------------------------------------------------------------------------------ start
    @property
    def runner(self):
        """The TrialRunner of this (or the last) session."""
        return self.service.runner if self.service is not None else None

    @property
    def policy(self):
        """The open policy (a RemotePolicy; a local server's child process with it), None once closed."""
        return self.service.policy if self.service is not None else None

    def execution(self) -> ExecConfig:
        return ExecConfig(mode=self.mode.currentData(), execute_steps=self.execute_steps.value(),
                          ensemble=self.ensemble.isChecked())

    def request(self) -> TrialsRequest:
        """The fields as the service's request (`workbench trials` builds the same from its flags). Empty prompt
        and dataset take the service's defaults; the default dataset goes next to the recording dataset."""
        url = self.source_kind() == "url"
        record = self.record_dataset()
        return TrialsRequest(policy=self.policy_edit.text().strip(), trials=self.trials.value(),
                             prompt=self.prompt.text().strip(), dataset=self.dataset.text().strip() or None,
                             data_root=Path(record).expanduser().parent if record else None,
                             seeds=self.seeds.text().strip(), execution=self.execution(),
                             time_limit_s=self.time_limit.value(), takeover=self.takeover.isChecked(),
                             device=self.device.currentText(), api_key=(self.token.text() or None) if url else None)

    def start(self) -> bool:
        """Open the policy on a job ("Starting the policy server…"), then start the trials on the rig."""
        if self.state in ("opening", "running"):
            return False
        if not self.ctl.connected:
            self.ctl.error.emit("Connect a rig first (Rig tab).", "Trials")
            return False
        spec = self.policy_edit.text().strip()
        if self.source_kind() == "url" and spec and not spec.startswith(("ws://", "wss://")):
            self.ctl.error.emit(readable("Not a server address", f"“{spec}” does not start with ws:// or wss://"),
                                "")
            return False
        try:
            service = TrialsService(self.request(), self.ctl.config)
        except ValueError as exc:  # no policy, bad seeds, too few seeds, an impossible execution setting
            self.ctl.error.emit(exc, "Trial settings")
            if not spec:
                self.policy_edit.setFocus()
            return False
        self._remember()
        local = not service.request.remote

        def work(ctx):
            ctx.progress("Starting the policy server…" if local else f"Connecting to {spec}…")
            # the server's own output (never the key: it travels in the child's environment) as progress
            plan = service.open(log=lambda line: ctx.progress(line))
            if ctx.cancelled:  # the window closed or Stop was pressed meanwhile: nobody will use it
                service.close()
                raise Cancelled()
            return plan

        self.service = service
        self.state = "opening"
        self._clear_run()
        self.state_label.setText("Starting the policy server…" if local else f"Connecting to {spec}…")
        self.policy_info.setText("")
        self.open_job = self.jobs.submit("Starting the policy" if local else "Connecting to the policy server",
                                         work, cancellable=True,
                                         on_success=lambda plan: self._policy_ready(service, plan),
                                         on_error=self._policy_failed)
        self.open_job.progress.connect(self._open_progress)
        self.open_job.cancelled.connect(self._open_cancelled)
        self._update()
        return True

    def _open_progress(self, text: str, _frac: float) -> None:
        if self.state == "opening" and text:
            self.policy_info.setText(text.splitlines()[0][:200])

    def _open_cancelled(self) -> None:
        self.open_job = None
        if self.state == "opening":
            self.state = "idle"
            self.state_label.setText("Ready")
        self._update()

    def _policy_failed(self, exc) -> None:
        self.open_job = None
        self.state = "idle"
        self.state_label.setText("The policy could not be opened")
        self.ctl.error.emit(exc, "Opening the policy")
        self._update()

    def _policy_ready(self, service: TrialsService, plan: TrialsPlan) -> None:
        self.open_job = None
        if self._closing or self.state != "opening" or not self.ctl.connected or service is not self.service:
            self._close_service(service, wait=False)
            self.state = "idle"
            self._update()
            return
        self.server_pid = service.server_pid
        seeds = plan.seeds_text()
        colour = theme.WARN if plan.overlap else theme.MUTED
        self.policy_info.setText(plan.describe() + (f"<br><span style='color:{colour}'>{seeds}</span>" if seeds else ""))
        if plan.trained_task and plan.trained_task != self.trained_task:  # a hub id or a server: now known
            self.trained_task = plan.trained_task
            self._show_trained_task()
            self._prompt_edited()
        if not self.dataset.text().strip():
            self.dataset.setText(str(plan.dataset))
        self.settings.setValue("trials/dataset", self.dataset.text().strip())
        self.trials_model.clear()
        self.selected_trial = None
        self.commands = []
        self._show_outcome(None)
        self.refresh_results()
        if self.ctl.teleop_running and self.ctl.mode.value == "teleop":  # free teleop: stop it, then start
            self._pending = True
            self.ctl.stop_teleop()
            self.state_label.setText("Stopping teleoperation…")
            return
        self._launch()

    def _clear_run(self) -> None:
        """A new session shows nothing of the last one: figures, latency, prompt and takeover lines."""
        self.latencies = []
        for fig in (self.trial_fig, self.time_fig, self.latency_fig):
            fig.set("—")
        for lab in (self.latency_label, self.prompt_label, self.takeover_label):
            lab.setText("")

    def _launch(self) -> None:
        service = self.service
        if service is None or self.ctl.start_service("Trials", service.start) is None:
            self._abort(None)
            return
        self.state = "running"
        self.state_label.setText("Moving to the start pose…")
        self.trialsChanged.emit("Trials starting", "warn")
        self._update()

    def _abort(self, error) -> None:
        if error is not None:
            self.ctl.error.emit(error, "Trials")
        self._close_service(self.service, wait=False)
        self.state = "idle"
        self.state_label.setText("Ready")
        self._update()

    # ------------------------------------------------------------------------------------------------ controls
    def next(self) -> None:
        if self.state == "running" and self.runner is not None:
            self.runner.next()

    def stop(self) -> None:
        if self.state == "opening" and self.open_job is not None:
            self.open_job.cancel()
            self.state_label.setText("Cancelling: the policy is closed once it has started…")
            return
        if self.state == "running":
            self.ctl.stop_teleop()  # the session's stop: ends the running trial and the trials
            self.state_label.setText("Stopping: saving the current trial…")

    def toggle_takeover(self) -> None:
        r = self.runner
        if self.state != "running" or r is None:
            return
        if r.source is not None and r.source.operator:
            r.hand_back()
        else:
            r.take_over()

    def send_command(self) -> bool:
        text = self.command.text().strip()
        if not text or self.runner is None or self.state != "running":
            return False
        try:
            self.runner.command(text)
        except ValueError as exc:
            self.ctl.error.emit(exc, "Language command")
            return False
        self.commands.append(text)
        self.command.clear()
        self.prompt_label.setText(f"command sent: “{text}” (from the next chunk on)")
        self.setFocus()  # keys go back to the trials
        return True

    # ------------------------------------------------------------------------------------------------ outcome
    def label(self, outcome: str, index: int | None = None) -> bool:
        """The operator's outcome for a trial of this session (default: the selected / last one)."""
        index = self.selected_trial if index is None else index
        row = self._row(index) if index is not None else None
        if self.runner is None or row is None or row.outcome == "running":
            self._show_outcome(None)  # nothing labelled: no button stays down
            return False
        notes = self.notes.text().strip() or None
        try:
            self.service.label(index, outcome, notes)  # also while the control thread finishes the trial
        except Exception as exc:  # noqa: BLE001
            self.ctl.error.emit(exc, "Labelling the trial")
            return False
        if row is not None:
            row.outcome, row.source = outcome, "operator"
            self.trials_model.changed(self.trials_model.row_of(index))
        self._show_outcome(outcome)
        self._style_outcomes(attention=False)
        self.refresh_results()
        return True

    def _row(self, index: int) -> TrialRow | None:
        i = self.trials_model.row_of(index)
        return self.trials_model.rows[i] if i >= 0 else None

    def _show_outcome(self, outcome: str | None) -> None:
        self.outcome_group.setExclusive(False)
        for o, b in self.outcome_btns.items():
            b.setChecked(o == outcome)
        self.outcome_group.setExclusive(True)

    def _style_outcomes(self, attention: bool) -> None:
        """On hardware a finished trial waits for the operator's label: the buttons stand out until pressed."""
        self.needs_label = attention
        for o, b in self.outcome_btns.items():
            c = OUTCOME_COLOURS[o]
            extra = f"QPushButton {{ border: 2px solid {theme.WARN}; }}" if attention else ""
            b.setStyleSheet(f"QPushButton:checked {{ background: {c}; border-color: {c}; color: white; "
                            f"font-weight: 700; }}" + extra)
        self.outcome_box.setTitle("Outcome — label this trial" if attention else "Outcome")

    def _trial_selected(self, *_) -> None:
        rows = self.trials_table.selectionModel().selectedRows()
        if not rows:
            return
        r = self.trials_model.rows[rows[0].row()]
        if r.outcome == "running":
            return
        self.selected_trial = r.index
        self._describe(r)
        self._show_outcome(r.outcome)

    def _describe(self, r: TrialRow) -> None:
        by = {"success": "task done", "time_limit": "time limit", "operator": "ended by the operator",
              "estop": "e-stop", "error": "error",
              "aborted": "aborted: the policy's chunks were refused"}.get(r.ended_by, r.ended_by)
        src = {"auto": " (simulator)", "operator": " (your label)"}.get(r.source, "")
        tts = "" if r.time_to_success_s is None else f", success at {r.time_to_success_s:.1f} s"
        self.outcome_label.setText(f"Trial {r.index + 1} · {r.name}: <b>{r.outcome}</b>{src} · {by}"
                                   f"{tts} · {r.interventions} intervention{'s' if r.interventions != 1 else ''}")

    # ------------------------------------------------------------------------------------------------ results
    def dataset_dir(self) -> str:
        return self.dataset.text().strip()

    def refresh_results(self) -> None:
        from workbench.deploy.trial_stats import load_trials, summarize

        folders = self.results_folders()
        groups: list = []
        if folders:
            try:
                groups = summarize([r for f in folders for r in load_trials(f)], by=("policy_id", "prompt"))
            except Exception as exc:  # noqa: BLE001 - a foreign folder: said, not raised
                self.ctl.error.emit(exc, "Reading the trial results")
        self.results_note.setText(
            f"{len(folders)} trial folder{'s' if len(folders) != 1 else ''} ({Path(folders[0]).parent if folders else '-'})"
            " · click two rows, then Compare" if len(folders) > 1 else "Click two rows (two policies or prompts), "
            "then Compare.")
        self.results_model.set_groups(groups)
        self.compare_label.setText("")
        self._update()

    def results_folders(self) -> list[str]:
        """This session's dataset and, next to it, the other policies' trial folders (the default layout puts each
        policy's trials in `<data root>/trials/<policy>`), so two policies can be compared here as with
        `workbench trial-stats A B`."""
        folder = self.dataset_dir()
        if not folder or not Path(folder).expanduser().is_dir():
            return []
        here = Path(folder).expanduser()
        out = [str(here)]
        if here.parent.name == "trials":
            out += [str(d) for d in sorted(here.parent.iterdir()) if d.is_dir() and d != here
                    and any(d.glob("episode_*.hdf5"))]
        return out

    def selected_groups(self) -> list:
        rows = sorted(i.row() for i in self.results.selectionModel().selectedRows())
        return [self.results_model.groups[r] for r in rows]

    def compare_selected(self) -> str | None:
        from workbench.deploy.trial_stats import compare

        groups = self.selected_groups()
        if len(groups) != 2:
            self.compare_label.setText("Select two rows to compare.")
            return None
        c = compare(groups[0], groups[1])

        def side(g, s: int, n: int) -> str:
            return f"<b>{g.label.replace('policy_id=', '').replace('prompt=', '')}</b>: {s}/{n}"

        text = f"{side(groups[0], c.successes_a, c.n_a)} vs {side(groups[1], c.successes_b, c.n_b)} · {c.verdict}"
        self.compare_label.setText(text)
        return text

    def _ask_csv_path(self) -> str:
        default = str(Path(self.dataset_dir() or ".") / "trial_results.csv")
        path, _ = QFileDialog.getSaveFileName(self, "Export the results", default, "CSV (*.csv)")
        return path

    def export_csv(self, path: str | None = None) -> str | None:
        from workbench.deploy.trial_stats import write_csv

        path = path or self.choose_csv_path()
        if not path:
            return None
        try:
            write_csv(path, self.results_model.groups)
        except OSError as exc:
            self.ctl.error.emit(exc, "Exporting the results")
            return None
        self.compare_label.setText(f"Results written to {path}")
        return path

    def _open_row(self, index) -> None:
        r = self.trials_model.rows[index.row()]
        if r.outcome != "running":
            self.openEpisode.emit(self.dataset_dir(), r.name)

    # ------------------------------------------------------------------------------------------------ events
    def _on_event(self, e) -> None:
        if self.state != "running":
            return
        if isinstance(e, ev.TrialStarted):
            self.latencies = []
            self.trials_model.add(TrialRow(e.index, e.name, e.seed, e.prompt))
            seed = "" if e.seed is None else f" · seed {e.seed}"
            self.state_label.setText(f"<span style='color:{theme.OK}'>● Trial {e.index + 1} of {e.total}</span>"
                                     f"<span style='font-size:13px; color:{theme.MUTED}'> · {e.name}{seed}</span>")
            self.prompt_label.setText(f"prompt: “{e.prompt}”")
            self.trial_fig.set(f"{e.index + 1}<span style='font-size:16px; color:{theme.MUTED}'> / {e.total}</span>")
            self.latency_fig.set("—")
            self.latency_label.setText(f"waiting for the first chunk…{self._age_limit_text()}")
            self._set_takeover(False, "")
            self.trialsChanged.emit(f"Trial {e.index + 1}/{e.total}", "ok")
        elif isinstance(e, ev.ChunkArrived):
            self._on_chunk(e)
        elif isinstance(e, ev.ChunkRefused):
            self.latency_label.setText(f"<span style='color:{theme.WARN}; font-weight:700'>chunk refused "
                                       f"({e.in_a_row}/{e.limit} in a row, {e.kind})</span>: {e.reason} · "
                                       f"the followers hold, asking again{self._age_limit_text()}")
        elif isinstance(e, ev.TakeoverChanged):
            self._set_takeover(e.operator, e.reason)
        elif isinstance(e, ev.PromptChanged):
            self.prompt_label.setText(f"prompt: “{e.text}” ({e.source})")
        elif isinstance(e, ev.TrialEnded):
            self._on_trial_ended(e)
        elif isinstance(e, ev.PolicyRevived):
            self.latency_label.setText(f"<span style='color:{theme.WARN}; font-weight:700'>policy server back</span>: "
                                       f"{e.message}")
        elif isinstance(e, ev.PolicyLost):
            self.latency_label.setText(f"<span style='color:{theme.FAIL}; font-weight:700'>policy lost</span>: "
                                       f"{e.message} · {e.trials_left} trial{'s' if e.trials_left != 1 else ''} not "
                                       "run; the followers hold")
        elif isinstance(e, ev.TrialsFinished):
            n = len(e.results)
            ok = sum(r.outcome == "success" for r in e.results)
            self.state_label.setText(f"{n} trial{'s' if n != 1 else ''} done · {ok} success")

    def _on_chunk(self, e) -> None:
        rt = float(e.roundtrip_ms)
        self.latencies.append(rt)
        delay = e.start_tick - e.tick
        med = statistics.median(self.latencies)
        self.latency_fig.set(f"{rt:.0f}", "ok" if rt < 100 else "warn")
        self.latency_label.setText(f"last chunk: inference {e.infer_ms:.0f} ms, round trip {rt:.0f} ms, entered "
                                   f"{delay} tick{'s' if delay != 1 else ''} after its observation · median round "
                                   f"trip this trial {med:.0f} ms ({len(self.latencies)} chunks)"
                                   f"{self._age_limit_text()}")
        if e.prompt and not self.prompt_label.text().endswith(f"“{e.prompt}”"):
            self.prompt_label.setText(f"prompt: “{e.prompt}”")
        tick = self.ctl.latest_tick()
        if tick is None or self.ctl.config is None:
            return
        # actions[i] is for loop tick loop_tick + i - entry: on the rig clock, counted from the newest tick seen
        hz = float(self.ctl.config.control_hz)
        actions = np.asarray(e.actions, dtype=np.float64)
        loop_ticks = int(e.loop_tick) + np.arange(len(actions)) - int(e.entry)
        times = tick.t + (loop_ticks - tick.index) / hz
        self.predictionChanged.emit((times, actions))

    def _age_limit_text(self) -> str:
        """" · chunks older than 500 ms are refused": the rig's [safety] max_chunk_age_s, shown with the latency."""
        safety = getattr(self.ctl.config, "safety", None)
        limit = getattr(safety, "max_chunk_age_s", None)
        return "" if limit is None else f" · chunks older than {limit * 1e3:.0f} ms are refused"

    def _set_takeover(self, operator: bool, reason: str) -> None:
        self.operator = operator
        self.takeover_btn.setText("Hand back" if operator else "Take over")
        if operator:
            self.takeover_label.setText(f"<span style='color:{theme.WARN}; font-weight:700'>Operator in control"
                                        f"</span> ({reason}) · the correction is recorded")
        elif reason:
            self.takeover_label.setText(f"<span style='color:{theme.OK}'>Policy in control</span> ({reason})")
        else:
            self.takeover_label.setText(f"<span style='color:{theme.OK}'>Policy in control</span>")

    def _on_trial_ended(self, e) -> None:
        self.predictionChanged.emit(None)
        self.takeover_label.setText(f"<span style='color:{theme.MUTED}'>Trial {e.index + 1} ended: the followers "
                                    "hold</span>")
        row = self._row(e.index)
        if row is None:
            row = TrialRow(e.index, e.name, None, "")
            self.trials_model.add(row)
        row.outcome, row.source, row.ended_by = e.outcome, e.outcome_source, e.ended_by
        row.duration_s, row.time_to_success_s, row.interventions = e.duration_s, e.time_to_success_s, e.interventions
        i = self.trials_model.row_of(e.index)
        self.trials_model.changed(i)
        self.selected_trial = e.index
        self.trials_table.selectRow(i)
        self.notes.clear()
        self._describe(row)
        if e.ended_by == "aborted" and e.message:
            self.latency_label.setText(f"<span style='color:{theme.WARN}; font-weight:700'>trial aborted</span>: "
                                       f"{e.message}")
        elif e.outcome == "aborted":
            self.latency_label.setText(f"<span style='color:{theme.WARN}; font-weight:700'>trial aborted</span> "
                                       f"({e.ended_by}): not counted as a failure")
        self._show_outcome(e.outcome if e.outcome != "unlabeled" else None)
        self._style_outcomes(attention=e.outcome == "unlabeled")
        self.refresh_results()

    def _on_mode_finished(self, _summary) -> None:
        if self._pending:
            self._pending = False
            self._launch()
            return
        if self.state != "running":
            return
        self.state = "finished"
        self.predictionChanged.emit(None)
        self.operator = False
        self.takeover_btn.setText("Take over")
        self.takeover_label.setText("")  # nobody is in control once the trials ended: the followers hold
        self._close_service(self.service, wait=False)
        if not self.state_label.text().endswith("success"):
            n = len(self.runner.results) if self.runner is not None else 0
            self.state_label.setText(f"Trials ended · {n} saved")
        self.trialsChanged.emit("No trials", "idle")
        self.refresh_results()
        self._update()

    def _close_service(self, service: TrialsService | None, wait: bool) -> None:
        """Closes the policy client and a local server's child process (SIGTERM, then SIGKILL after 5 s): on a
        job, or here when the window closes."""
        if service is None or (service.closed and service.policy is None):
            return
        if wait:
            service.close()
            return
        self.jobs.submit("Stopping the policy server", lambda ctx: service.close(),
                         on_error=lambda exc: log.error("closing the policy: %s", exc))

    # ------------------------------------------------------------------------------------------------ poll, state
    def poll(self) -> None:
        self._enable_keys()
        r = self.runner
        if self.state == "running" and r is not None and r.current is not None and self.ctl.config is not None:
            self.time_fig.set(f"{r.current.steps / self.ctl.config.control_hz:5.1f}<span style='font-size:16px; "
                              f"color:{theme.MUTED}'> / {r.s.time_limit_s:.0f}</span>", "ok")

    def _update(self) -> None:
        running, opening = self.state == "running", self.state == "opening"
        busy = running or opening
        self.start_btn.setEnabled(not busy and self.ctl.connected and not self.ctl.estopped)
        self.stop_btn.setEnabled(busy)
        for b in (self.next_btn, self.takeover_btn, self.send_btn, self.command):
            b.setEnabled(running)
        self.takeover_btn.setEnabled(running and self.takeover.isChecked())
        for w in (self.source, self.policy_edit, self.browse_btn, self.token, self.device, self.prompt, self.trials,
                  self.time_limit, self.mode, self.execute_steps, self.seeds, self.dataset, self.dataset_btn,
                  self.takeover):
            w.setEnabled(not busy)
        self.ensemble.setEnabled(not busy and self.mode.currentData() != "sync")
        if self.mode.currentData() == "sync":
            self.ensemble.setChecked(False)
        sim = self.ctl.config is not None and self.ctl.config.backend == "sim"
        self.seeds.setEnabled(not busy and sim)
        self.compare_btn.setEnabled(len(self.selected_groups()) == 2)
        self.export_btn.setEnabled(bool(self.results_model.groups))
        idle_texts = ("", "Ready", "Connect a rig to run trials")
        if not busy and (not self.ctl.connected or self.state_label.text() in idle_texts):
            self.state_label.setText("Ready" if self.ctl.connected else "Connect a rig to run trials")

    def shutdown(self) -> None:
        """The window closes (after the session stopped): close the policy and its server process now."""
        self._closing = True
        if self.open_job is not None:
            self.open_job.cancel()
        self._close_service(self.service, wait=True)  # one still opening closes its policy when it arrives
        if self.remember_token.isChecked() and self.token.text():
            self.settings.setValue("trials/token", self.token.text())


__all__ = ["TrialsPanel"]
