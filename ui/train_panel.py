"""Train tab: dataset + base checkpoint + preset -> one Train button. The training runs as its own process
(QProcess running `workbench train --json`), so a crash, an OOM or a CUDA error never takes the app or the
control loop down; its typed JSON events (finetune.events) drive the progress, the loss plot and the run list.

Cancel sends SIGTERM: the trainer finishes its step, writes a checkpoint and the policy folder, then exits;
Resume continues the selected run from its last checkpoint; "Export policy" writes the policy folder of a run
whose export failed (or whose policy is older than its last checkpoint) from that checkpoint, as a child process
too (`workbench policy export RUN --json`). "Use in trials" emits `policy_chosen` with the run's
policy folder and remembers it in QSettings ("trials/policy") for the Trials tab. "Download base" runs
`workbench base download BASE --json` as its own process too (byte progress in the download bar, the outcome in
the status line): afterwards training runs offline.

What the runs list says of a run (done, stopped, failed with its error; policy ready or not; anything to resume)
is finetune.run_status's reading of the run folder, the same for every program. Without a CUDA card (nvidia-smi
sees none) the tab starts on the CPU preset (finetune.presets.CPU_DEFAULT) and says why.

"Run on" (ui.train_where) adds `--host USER@HOST` (an SSH GPU machine) or `--slurm PROFILE` (a batch job on a SLURM
cluster; profiles made in ui.cluster_form) to the same command line, and the tracking check boxes `--track ...`. A
SLURM run's process is `workbench train ... --slurm PROFILE --json`: it stages, submits, follows the job and fetches
the run folder home; its "slurm" events (finetune.cluster.JobStatus: pending with SLURM's reason, running with step
and ETA, requeued, finished, failed, cancelled, preempted) show in the progress box, its "log" lines in the log
tail, the trainer's events from the job log drive the loss plot as for a local run. The run folder exists from
the submission (RUN/slurm_job.json), so the run is listed at once, with its job's state as last seen
(RUN/slurm_status.json). Cancel runs `workbench cluster cancel RUN` (checkpoint, then cancel) as its own process;
Follow runs `workbench cluster follow RUN --json` for a queued or running job picked in the runs list; Refresh asks
the cluster for the state of the others (`workbench cluster status RUN --json`, one process each, in turn).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from PyQt6.QtCore import QEvent, QProcess, QSettings, Qt, pyqtSignal
from PyQt6.QtGui import QBrush, QColor, QFontDatabase, QTextOption, QWheelEvent
from PyQt6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGridLayout, QGroupBox, QHBoxLayout,
                             QHeaderView, QLabel, QLineEdit, QPlainTextEdit, QProgressBar, QPushButton, QSpinBox,
                             QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from finetune import cluster
from finetune import events as ev
from finetune import memory_model, presets
from finetune.cluster import JobState, JobStatus, LogLine
from finetune.model_config import Pi0Config
from finetune.hub import BaseReady
from finetune.presets import TrainPreset
from finetune.run_status import policy_state, run_status
from finetune.train_state import list_checkpoints
from ui import theme
from ui.train_where import LOCAL, SLURM, SSH, RunOn, RunOnRows, TrackingChoice, TrackingRows

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_POLICY = "trials/policy"


PRESETS = presets.PRESETS  # every `workbench train --config` preset, in the table's order
BASE_TIP = "a hub id, a local pi0 folder, or an earlier run (continue training a policy)"
# the outcome filter: (label, `workbench train --outcome` value); successes by default, as the CLI
FILTER_OUTCOMES = (("All labels", presets.ALL_OUTCOMES), ("success", "success"), ("failure", "failure"),
                   ("partial", "partial"), ("unlabeled", "unlabeled"))
FILTER_DEFAULT = presets.DEFAULT_OUTCOMES[0]
RANDOM_BASE_TEXT = "random weights"  # the base field of a random-init preset (small, tiny): there is no base
FILTER_QUALITY = ("All quality", "pass", "warn", "fail")
PRECISIONS = ("auto", "fp32", "bf16-amp", "bf16-sr")  # `workbench train --precision`
DEVICES = ("auto", "cuda", "cpu")
TRIAL_CHOICES = (  # DataConfig.trials: (value, label)
    ("exclude", "Leave out trial episodes"),
    ("corrections", "Operator corrections only (HG-DAgger)"),
    ("all", "All trial steps"),
)
# a SLURM job's state as the progress box colours it
STATE_COLOURS = {JobState.PENDING: theme.WARN, JobState.REQUEUED: theme.WARN, JobState.RUNNING: theme.OK,
                 JobState.FINISHED: theme.OK, JobState.FAILED: theme.FAIL, JobState.CANCELLED: theme.IDLE,
                 JobState.PREEMPTED: theme.WARN, JobState.UNKNOWN: theme.IDLE}
LOG_LINES = 400  # the log tail keeps this many lines


@dataclass(frozen=True)
class TrainRequest:
    dataset: str
    base: str
    out: str
    preset: TrainPreset
    steps: int
    batch: int
    outcome: str = FILTER_DEFAULT  # a `--outcome` value ("all": every label)
    quality: str = ""
    trials: str = "exclude"
    lora: bool | None = None  # None: the preset's
    precision: str = ""  # "": the preset's (auto, fp32, bf16-amp, bf16-sr)
    device: str = ""  # "": the preset's (auto, cuda, cpu)
    run_on: RunOn = RunOn()  # this machine, --host or --slurm
    tracking: TrackingChoice = TrackingChoice()  # --track ...

    def argv(self) -> list[str]:
        """`workbench train` selecting the preset by name; only what the form changed is passed on."""
        a = ["--dataset", self.dataset, "--out", self.out, "--config", self.preset.name, "--json"]
        if self.steps != self.preset.steps:
            a += ["--steps", str(self.steps)]
        if self.batch != self.preset.batch_size:
            a += ["--batch", str(self.batch)]
        if self.base and self.base != self.preset.base:
            a += ["--base", self.base]
        if self.outcome and (self.outcome,) != presets.DEFAULT_OUTCOMES:
            a += ["--outcome", self.outcome]
        if self.quality:
            a += ["--quality", self.quality]
        if self.trials != "exclude":
            a += ["--trials", self.trials]
        if self.lora is not None and self.lora != self.preset.lora:
            a += ["--lora" if self.lora else "--no-lora"]
        if self.precision and self.precision != self.preset.precision:
            a += ["--precision", self.precision]
        if self.device and self.device != self.preset.device:
            a += ["--device", self.device]
        return a + self.tracking.argv() + self.run_on.argv()


def loss_plot():  # -> pyqtgraph.PlotWidget
    """The loss plot: always auto-ranged to the curve; no mouse zoom or pan, and the wheel scrolls the page (the
    tab scrolls, and a wheel passing over the plot used to zoom it to -5000..5000 with no visible way back)."""
    import pyqtgraph as pg

    class LossPlot(pg.PlotWidget):
        def wheelEvent(self, ev: QWheelEvent) -> None:  # noqa: N802 - Qt's name
            ev.ignore()  # to the parent: the tab's scroll area

    plot = LossPlot()
    plot.setMinimumHeight(160)
    plot.setMouseEnabled(x=False, y=False)
    plot.setMenuEnabled(False)
    plot.hideButtons()
    plot.enableAutoRange()
    plot.setLabel("bottom", "optimizer step")
    plot.setLabel("left", "loss (normalized MSE)")  # flow matching's, in the normalized action space
    plot.addLegend(offset=(-10, 10))
    return plot


class TrainPanel(QWidget):
    policy_chosen = pyqtSignal(str)  # a policy folder for the Trials tab
    event_received = pyqtSignal(object)  # every finetune.events event of the running process
    running_changed = pyqtSignal(bool)
    download_event = pyqtSignal(object)  # the Download / Status / Failed events of a "Download base" process

    def __init__(self, settings: QSettings, runs_root: Path | None = None, python: str = sys.executable,
                 extra_args: tuple[str, ...] = (), parent: QWidget | None = None, has_gpu: bool | None = None) -> None:
        """has_gpu: whether this machine has a CUDA card (None: ask nvidia-smi, without importing torch)."""
        super().__init__(parent)
        self.has_gpu = has_gpu if has_gpu is not None else memory_model.cuda_memory_nvidia_smi() is not None
        self.settings = settings
        self.runs_root = Path(runs_root or settings.value("train/runs_root", str(Path.home() / "workbench-runs")))
        self.python, self.extra_args = python, tuple(extra_args)
        self.proc: QProcess | None = None
        self.proc_command: tuple[str, ...] = ("train",)  # the workbench command self.proc runs
        self.current_run: Path | None = None
        self.last_event: ev.Event | None = None
        self.stderr_tail = ""
        self._buf = b""
        self.download_proc: QProcess | None = None  # `workbench base download --json` ("Download base")
        self._dl_buf = b""
        self.download_error: str | None = None
        self.base_ready: BaseReady | None = None
        self.steps_x: list[float] = []
        self.loss_y: list[float] = []
        self.val_x: list[float] = []
        self.val_y: list[float] = []
        self.run_kind = LOCAL  # where self.proc's run trains (LOCAL, SSH, SLURM)
        self.job_status: JobStatus | None = None  # the last "slurm" event of the followed job
        self.saw_end = False  # self.proc reported how its run ended (a Finished / Failed event)
        self.aux_proc: QProcess | None = None  # `workbench cluster cancel|status RUN` (one at a time)
        self._aux_queue: list[list[str]] = []
        self._aux_out = b""
        self._build()
        self.refresh_runs()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        v = QVBoxLayout(self)
        form_box = QGroupBox("New training run")
        form = QFormLayout(form_box)
        self.dataset = QLineEdit(str(self.settings.value("train/dataset", "")))
        browse = QPushButton("…")
        browse.clicked.connect(self._browse_dataset)
        row = QHBoxLayout()
        row.addWidget(self.dataset, 1)
        row.addWidget(browse)
        form.addRow("Dataset", row)
        self.outcome_f = QComboBox()
        for label, value in FILTER_OUTCOMES:
            self.outcome_f.addItem(label, value)
        self.outcome_f.setCurrentIndex(self.outcome_f.findData(FILTER_DEFAULT))
        self.outcome_f.setToolTip("which episodes to train on by their outcome label; successes by default (as "
                                  "`workbench train`): a failed demonstration is not a behaviour to imitate")
        self.quality_f = QComboBox()
        self.quality_f.addItems(FILTER_QUALITY)
        self.outcome_note = QLabel()  # what the filter takes, in words ("successes only (the default)")
        self.outcome_note.setWordWrap(True)
        frow = QHBoxLayout()
        frow.addWidget(self.outcome_f, 1)
        frow.addWidget(self.quality_f, 1)
        form.addRow("Episodes", frow)
        form.addRow("", self.outcome_note)
        self.trials = QComboBox()
        for value, label in TRIAL_CHOICES:
            self.trials.addItem(label, value)
        self.trials.setToolTip("policy rollouts recorded as trials: left out (a rollout is not a demonstration), "
                               "only the spans where the operator took over (HG-DAgger), or every step (with "
                               "the success filter: imitate successful rollouts)")
        self.trials.setCurrentIndex(max(0, self.trials.findData(self.settings.value("train/trials", "exclude"))))
        form.addRow("Trial episodes", self.trials)
        self.base = QComboBox()
        self.base.setEditable(True)
        self.base.addItems(list(dict.fromkeys(p.base for p in PRESETS if not p.random_init)))
        self.base.setToolTip(BASE_TIP)
        self.download_base_btn = QPushButton("Download base")
        self.download_base_btn.setToolTip("fetch this base checkpoint and PaliGemma's tokenizer into the hub cache "
                                          "now (`workbench base download`), so that training can run offline")
        base_row = QHBoxLayout()
        base_row.addWidget(self.base, 1)
        base_row.addWidget(self.download_base_btn)
        form.addRow("Base checkpoint", base_row)
        self.preset = QComboBox()
        for p in PRESETS:
            self.preset.addItem(p.label, p.name)
            self.preset.setItemData(self.preset.count() - 1, p.note, Qt.ItemDataRole.ToolTipRole)
        self.preset_note = QLabel(PRESETS[0].note)
        self.preset_note.setWordWrap(True)
        self.gpu_note = QLabel(f"no GPU found (nvidia-smi sees no CUDA card), so the tab starts on the "
                               f"{presets.preset(presets.CPU_DEFAULT).label.split(' (')[0]}, which learns on a CPU; the "
                               "pi0 and pi0.5 presets need a CUDA card")
        self.gpu_note.setWordWrap(True)
        self.gpu_note.setVisible(not self.has_gpu)
        form.addRow("Preset", self.preset)
        form.addRow("", self.preset_note)
        form.addRow("", self.gpu_note)
        self.steps = QSpinBox()
        self.steps.setRange(1, 10_000_000)
        self.batch = QSpinBox()
        self.batch.setRange(1, 4096)
        for box in (self.steps, self.batch):  # their range's width ("10000000") would widen the tab past 480 px
            box.setMinimumWidth(box.fontMetrics().horizontalAdvance("0000000") + 28)
        srow = QHBoxLayout()
        srow.addWidget(QLabel("steps"))
        srow.addWidget(self.steps, 1)
        srow.addWidget(QLabel("batch"))
        srow.addWidget(self.batch, 1)
        form.addRow("Length", srow)
        self.lora = QCheckBox("LoRA")
        self.lora.setToolTip("rank 16/32 adapters on the Gemma pair; the vision tower and projections still train")
        self.precision = QComboBox()
        self.precision.addItems(PRECISIONS)
        self.precision.setToolTip("auto: bf16 compute over fp32 master weights on CUDA, fp32 on the CPU; bf16-sr: "
                                  "bf16 weights with stochastic rounding (less memory)")
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        mrow = QHBoxLayout()
        for w in (self.device, QLabel("precision"), self.precision):
            mrow.addWidget(w, 1 if isinstance(w, QComboBox) else 0)
        form.addRow("Device", mrow)
        form.addRow("", self.lora)
        self.memory = QLabel()  # "needs ~X GB on <device> (has Y GB)", finetune.memory_model
        self.memory.setWordWrap(True)
        form.addRow("Memory", self.memory)
        self.where = RunOnRows(form, self.settings, self)  # Run on: this machine / SSH host / SLURM cluster
        self.track = TrackingRows(form, self.settings, self)
        self._gpu: dict[str, memory_model.DeviceMemory | None] = {}  # nvidia-smi answers, asked once per device
        self.name = QLineEdit()
        self.name.setPlaceholderText("run name (folder under the runs folder)")
        form.addRow("Run", self.name)
        buttons = QHBoxLayout()
        self.train_btn = QPushButton("Train")
        self.train_btn.setObjectName("primary")
        self.cancel_btn = QPushButton("Cancel")
        self.resume_btn = QPushButton("Resume")
        for b in (self.train_btn, self.cancel_btn, self.resume_btn):
            buttons.addWidget(b)
        form.addRow(buttons)
        v.addWidget(form_box)

        prog = QGroupBox("Progress")
        g = QGridLayout(prog)
        self.error_l = QLabel()  # a failed run's error, readable: not only the status line's small text
        self.error_l.setWordWrap(True)
        self.error_l.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_l.setStyleSheet(f"color: {theme.TEXT}; background: #3d1a1a; border: 1px solid {theme.FAIL}; "
                                   "border-radius: 4px; padding: 6px; font-weight: 600;")
        self.error_l.hide()
        self._error_of_selection = False
        self.status = QLabel("idle")
        self.status.setWordWrap(True)
        self.queue_l = QLabel()  # a SLURM job's state: "job 12 pending (Priority)", "job 12 running on n1: step ..."
        self.queue_l.setWordWrap(True)
        self.queue_l.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.queue_l.hide()
        self.log_view = QPlainTextEdit()  # the job log's lines that are not events (torchrun, SLURM, tracebacks)
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(LOG_LINES)
        self.log_view.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)  # never wider than the tab
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        font.setPointSizeF(max(7.0, font.pointSizeF() - 1))
        self.log_view.setFont(font)
        self.log_view.setFixedHeight(self.log_view.fontMetrics().lineSpacing() * 6 + 14)
        self.log_view.setPlaceholderText("the job log's messages")
        self.log_view.hide()
        # where the run's tracking goes, as commands to copy: `tensorboard --logdir RUN/tensorboard`, and the
        # `wandb sync ...` that uploads a W&B offline run (the trainer says it as a Status event)
        self.tb_cmd, self.wandb_cmd = QLineEdit(), QLineEdit()
        for w in (self.tb_cmd, self.wandb_cmd):
            w.setReadOnly(True)
            w.hide()
        self.base_l = QLabel("–")  # the base the run uses, from its RunStarted event
        self.base_l.setWordWrap(True)
        self.download = QProgressBar()
        self.download.setFormat("download %p%")
        self.download.hide()
        self.progress = QProgressBar()
        self.progress.setFormat("step %v / %m")
        self.loss_l, self.lr_l, self.sps_l, self.eta_l, self.mem_l, self.val_l = (QLabel("–") for _ in range(6))
        self.val_l.setWordWrap(True)
        g.addWidget(self.error_l, 0, 0, 1, 4)
        lines = QVBoxLayout()
        lines.setSpacing(4)
        for w in (self.status, self.queue_l, self.tb_cmd, self.wandb_cmd):
            lines.addWidget(w)
        g.addLayout(lines, 1, 0, 1, 4)
        g.addWidget(self.log_view, 10, 0, 1, 4)
        g.addWidget(self.download, 2, 0, 1, 4)
        g.addWidget(self.progress, 3, 0, 1, 4)
        g.addWidget(QLabel("base"), 4, 0)
        g.addWidget(self.base_l, 4, 1, 1, 3)
        for i, (name, lab) in enumerate((("loss", self.loss_l), ("lr", self.lr_l), ("samples/s", self.sps_l),
                                         ("ETA", self.eta_l), ("GPU memory", self.mem_l))):
            g.addWidget(QLabel(name), 5 + i // 2, (i % 2) * 2)
            g.addWidget(lab, 5 + i // 2, (i % 2) * 2 + 1)
        g.addWidget(QLabel("validation"), 8, 0)
        g.addWidget(self.val_l, 8, 1, 1, 3)
        import pyqtgraph as pg

        self.plot = loss_plot()
        self.loss_curve = self.plot.plot([], [], pen=pg.mkPen("#3b82f6", width=2), name="train")
        self.val_curve = self.plot.plot([], [], pen=None, symbol="o", symbolBrush="#f59e0b", name="validation")
        g.addWidget(self.plot, 9, 0, 1, 4)
        v.addWidget(prog)

        runs = QGroupBox("Runs")
        rv = QVBoxLayout(runs)
        self.runs = QTreeWidget()
        self.runs.setHeaderLabels(["run / checkpoint", "step", "state"])
        self.runs.setMinimumHeight(120)
        header = self.runs.header()  # every header readable (was "run / checkp"), the state takes what is left
        header.setStretchLastSection(True)
        for c in (0, 1):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        rv.addWidget(self.runs)
        rrow = QHBoxLayout()
        self.refresh_btn = QPushButton("Refresh")
        self.refresh_btn.setToolTip("read the runs folder again; ask the cluster for its runs' job states")
        self.follow_btn = QPushButton("Follow")
        self.follow_btn.setToolTip("follow the selected SLURM job again (`workbench cluster follow RUN`): its "
                                   "state, log and loss; the run folder comes home when it ends")
        self.use_btn = QPushButton("Use in trials")
        self.export_btn = QPushButton("Export policy")
        self.export_btn.setToolTip("write the selected run's policy folder from its last checkpoint (`workbench "
                                   "policy export`): for a run whose export failed or whose policy is older than "
                                   "its last checkpoint")
        rrow.addWidget(self.refresh_btn)
        rrow.addWidget(self.follow_btn)
        rrow.addStretch(1)
        rrow.addWidget(self.export_btn)
        rrow.addWidget(self.use_btn)
        rv.addLayout(rrow)
        v.addWidget(runs)
        v.addStretch(1)

        self.preset.currentIndexChanged.connect(self._preset_changed)
        self.batch.valueChanged.connect(self.update_memory)
        self.lora.toggled.connect(self.update_memory)
        self.precision.currentIndexChanged.connect(self.update_memory)
        self.device.currentIndexChanged.connect(self.update_memory)
        self.train_btn.clicked.connect(lambda: self.start())
        self.cancel_btn.clicked.connect(self.cancel)
        self.resume_btn.clicked.connect(lambda: self.resume())
        self.refresh_btn.clicked.connect(self.refresh)
        self.follow_btn.clicked.connect(lambda: self.follow())
        self.where.changed.connect(self._where_changed)
        self.train_btn.installEventFilter(self)
        self.use_btn.clicked.connect(lambda: self.use_in_trials())
        self.export_btn.clicked.connect(lambda: self.export_policy())
        self.download_base_btn.clicked.connect(lambda: self.download_base())
        self.runs.itemSelectionChanged.connect(self._selection_changed)
        self.outcome_f.currentIndexChanged.connect(self._outcome_changed)
        self._outcome_changed()
        default = PRESETS[0].name if self.has_gpu else presets.CPU_DEFAULT
        saved = max(0, self.preset.findData(str(self.settings.value("train/preset", default))))
        self._preset_changed(saved)
        self.preset.setCurrentIndex(saved)
        for box in (self.base, self.preset, self.trials):  # long choices are elided, not a wider tab
            box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            box.setMinimumContentsLength(8)
        self._update_buttons()

    def _browse_dataset(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Dataset folder", self.dataset.text())
        if d:
            self.dataset.setText(d)

    def _where_changed(self) -> None:
        self.update_memory()

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        """The Train button's tooltip, made as it shows: the command line it runs, to copy into a terminal."""
        if obj is self.train_btn and event.type() == QEvent.Type.ToolTip:
            import shlex

            self.train_btn.setToolTip("runs: workbench train " + shlex.join(self.command_line()))
        return super().eventFilter(obj, event)

    def _preset_changed(self, i: int) -> None:
        p = PRESETS[max(0, min(i, len(PRESETS) - 1))]
        self.steps.setValue(p.steps)
        self.batch.setValue(p.batch_size)
        self.preset_note.setText(p.note)
        self.base.setEnabled(not p.random_init)  # random weights: nothing to choose, and the field says so
        self.download_base_btn.setEnabled(not p.random_init and not self.is_running() and not self.is_downloading())
        self.base.setCurrentText(RANDOM_BASE_TEXT if p.random_init else p.base)
        self.base.lineEdit().setCursorPosition(0)  # the start of a long hub id or folder, not its end
        self.base.setToolTip("this preset starts from random weights: there is no base checkpoint to choose or "
                             "download" if p.random_init else BASE_TIP)
        # without a card, a preset that needs one is said in warning colour
        self.gpu_note.setStyleSheet("" if p.random_init else f"color: {theme.WARN}; font-weight: 600;")
        self.lora.setChecked(p.lora)
        self.precision.setCurrentText(p.precision)
        self.device.setCurrentText(p.device)
        self.update_memory()

    def _outcome_changed(self) -> None:
        value = self.outcome_f.currentData()
        self.outcome_note.setText("successes only (the default)" if value == FILTER_DEFAULT else
                                  "every label: failed episodes are trained on too" if value == presets.ALL_OUTCOMES
                                  else f"only episodes labelled {value}")

    def update_memory(self) -> None:
        """The memory line: the estimate for the form's set-up against the chosen device, in warning colour
        when it will not fit (finetune.memory_model; no torch here: nvidia-smi tells a card's memory)."""
        p = PRESETS[max(0, self.preset.currentIndex())]
        device = self.device.currentText()
        if device == "cpu":
            dev: memory_model.DeviceMemory | None = memory_model.cpu_memory()
        else:
            if device not in self._gpu:
                self._gpu[device] = memory_model.device_memory(device, use_torch=False)
            dev = self._gpu[device]
            if dev is not None and dev.kind == "cpu":  # auto without a card: the RAM available now
                dev = memory_model.cpu_memory()
        kw = dict(lora=self.lora.isChecked(), precision=self.precision.currentText(), batch=self.batch.value(),
                  grad_ckpt=p.gradient_checkpointing, ema=p.ema_decay is not None)
        mc = Pi0Config.variant(p.model)
        where = self.where.choice().kind if hasattr(self, "where") else LOCAL
        if where != LOCAL:  # this machine's memory says nothing of the host's or the nodes' cards
            est = memory_model.estimate(mc, **kw, device_kind="cpu" if device == "cpu" else "cuda")
            self.memory.setText(f"needs ~{est.total / 2**30:.1f} GB per {'process' if device == 'cpu' else 'GPU'} "
                                f"(estimate); the {'SSH host' if where == SSH else 'cluster'} checks its own "
                                "memory when the run starts")
            self.memory.setToolTip(est.describe())
            self.memory.setProperty("fits", True)
            self.memory.setStyleSheet("")
            return
        est = memory_model.estimate(mc, **kw, device_kind=dev.kind if dev else "cuda")
        fits = memory_model.fits(est, dev)
        text = memory_model.fit_line(est, dev)
        if not fits and dev is not None:
            tips = memory_model.advice(mc, **kw, capacity=dev.total, device_kind=dev.kind)
            text += " — will not fit" + ("; try " + ", or ".join(tips) if tips else "")
        self.memory.setText(text)
        self.memory.setToolTip(est.describe())
        self.memory.setProperty("fits", fits)
        self.memory.setStyleSheet("" if fits else f"color: {theme.WARN}; font-weight: 600;")

    # ------------------------------------------------------------------ actions
    def request(self) -> TrainRequest:
        p = PRESETS[self.preset.currentIndex()]
        name = self.name.text().strip() or Path(self.dataset.text().rstrip("/")).name or "run"
        return TrainRequest(
            dataset=self.dataset.text().strip(), base="" if p.random_init else self.base.currentText().strip(),
            out=str(self.runs_root / name), preset=p, steps=self.steps.value(), batch=self.batch.value(),
            outcome=self.outcome_f.currentData(),
            quality="" if self.quality_f.currentIndex() == 0 else self.quality_f.currentText(),
            trials=self.trials.currentData(), lora=self.lora.isChecked(), precision=self.precision.currentText(),
            device=self.device.currentText(), run_on=self.where.choice(), tracking=self.track.choice())

    def command_line(self, request: TrainRequest | None = None) -> list[str]:
        """The `workbench train` arguments the Train button runs (the form's extra options last)."""
        return [*(request or self.request()).argv(), *self.extra_args]

    def start(self, request: TrainRequest | None = None) -> None:
        req = request or self.request()
        if not req.dataset:
            self.status.setText("Choose a dataset folder first.")
            return
        problem = req.run_on.problem()
        if problem is None:
            try:
                req.tracking.config()
            except ValueError as e:
                problem = f"Tracking: {e}."
        if problem is not None:
            self._show_error(problem)
            self.status.setText(problem)
            return
        self.settings.setValue("train/dataset", req.dataset)
        self.settings.setValue("train/preset", req.preset.name)
        self.settings.setValue("train/trials", req.trials)
        self.where.remember()
        self.track.remember()
        self._launch(Path(req.out), req.argv(), kind=req.run_on.kind)

    def resume(self, run: Path | None = None) -> None:
        run = run or self.selected_run()
        if run is None:
            self.status.setText("Select a run to resume.")
            return
        args = ["--out", str(run), "--resume", "--json"]
        if (run / cluster.JOB_RECORD).is_file():  # its checkpoints are on the cluster: resumed there
            try:
                p = cluster.load_job(run).profile
            except cluster.SlurmError as e:
                self._show_error(str(e))
                return
            args += RunOn(SLURM, profile=p.name or p.login or "local").argv()
            self._launch(run, args, keep_plot=True, kind=SLURM)
            return
        self._launch(run, args, keep_plot=True)

    def cancel(self) -> None:
        """A local (or SSH) run: checkpoint, then stop (the trainer handles SIGTERM at the next step boundary;
        over SSH the relay passes it on). A SLURM job: `workbench cluster cancel RUN` (checkpoint, then cancel)
        for the followed job or the selected one; a submission still staging is stopped before sbatch."""
        run = self.current_run if self.is_running() else self.selected_run()
        if self.is_running() and self.run_kind == SLURM:
            assert run is not None
            if not (run / cluster.JOB_RECORD).is_file():  # still staging: nothing is queued yet
                self.status.setText("stopping the submission (nothing was queued yet)…")
                assert self.proc is not None
                self.proc.terminate()
                return
            self._cluster_command(["cancel", str(run)])
            self.status.setText(f"cancelling the job of {run.name}: a running job checkpoints first…")
            return
        if self.is_running():
            assert self.proc is not None
            self.status.setText("stopping: writing a checkpoint…")
            self.proc.terminate()
            return
        if run is not None and run_status(run).live:
            self._cluster_command(["cancel", str(run)])
            self.status.setText(f"cancelling the job of {run.name}…")

    def follow(self, run: Path | None = None) -> None:
        """Follows a queued or running SLURM job of the runs list again (`workbench cluster follow RUN --json`):
        the job log is read from its start, so the loss plot fills in again; the run comes home when it ends."""
        run = run or self.selected_run()
        if run is None or not (run / cluster.JOB_RECORD).is_file():
            self.status.setText("Select a run submitted to a SLURM cluster.")
            return
        self._launch(run, ["follow", str(run), "--json", "--poll-s", f"{self.where.choice().poll_s:g}"],
                     command=("cluster",), kind=SLURM)
        self.status.setText(f"following the job of {run.name}…")

    def refresh(self) -> None:
        """Refresh: the runs folder again, and the cluster asked for each queued or running job not followed."""
        self.refresh_runs()
        for run in self._runs():
            if run_status(run).live and not (self.is_running() and run == self.current_run):
                self._cluster_command(["status", str(run), "--json"])

    def export_policy(self, run: Path | None = None) -> None:
        """`workbench policy export RUN --json` as a child process (the export never runs in the GUI process):
        its events drive the status line, its PolicySaved / Failed the outcome and the run list."""
        run = run or self.selected_run()
        if run is None or policy_state(run) == "ready":
            self.status.setText("Select a run whose policy is missing or older than its last checkpoint.")
            return
        self._launch(run, ["export", str(run), "--json"], keep_plot=True, command=("policy",))
        self.status.setText(f"exporting the policy of {run.name}…")

    def _launch(self, run: Path, args: list[str], keep_plot: bool = False,
                command: tuple[str, ...] = ("train",), kind: str = LOCAL) -> None:
        if self.is_running():
            return
        self.current_run = run
        if not keep_plot or command == ("cluster",):  # a followed job's log is read again from its start
            self.steps_x, self.loss_y, self.val_x, self.val_y = [], [], [], []
            self.loss_curve.setData([], [])
            self.val_curve.setData([], [])
        self.stderr_tail, self._buf = "", b""
        self.last_event, self.job_status, self.saw_end, self.run_kind = None, None, False, kind
        self._show_error("")
        self.eta_l.setText("–")
        if command == ("train",):
            self.base_l.setText("–")
        self.queue_l.setVisible(kind == SLURM)
        self.queue_l.setText("submitting…" if command == ("train",) else "asking the cluster…")
        self.queue_l.setStyleSheet("")
        self.log_view.clear()
        self.log_view.setVisible(kind != LOCAL)
        self.tb_cmd.hide()
        self.wandb_cmd.hide()
        self.proc = QProcess(self)
        self.proc.setWorkingDirectory(str(ROOT))
        self.proc.readyReadStandardOutput.connect(self._read_stdout)
        self.proc.readyReadStandardError.connect(self._read_stderr)
        self.proc.finished.connect(self._finished)
        self.status.setText(f"starting {run.name}…")
        self.proc_command = command
        extra = self.extra_args if command == ("train",) else ()  # the form's extra options are train's
        self.proc.start(self.python, ["-m", "workbench.cli", *command, *args, *extra])
        self.running_changed.emit(True)
        self.refresh_runs()
        self._update_buttons()

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.state() != QProcess.ProcessState.NotRunning

    # ------------------------------------------------------------------ cluster commands
    def _cluster_command(self, args: list[str]) -> None:
        """`workbench cluster ARGS` as a child process (SSH never runs on the GUI thread), one at a time."""
        if args in self._aux_queue:
            return
        self._aux_queue.append(args)
        self._next_cluster_command()

    def _next_cluster_command(self) -> None:
        if self.aux_busy() or not self._aux_queue:
            self._update_buttons()
            return
        args = self._aux_queue.pop(0)
        self._aux_out = b""
        self.aux_proc = QProcess(self)
        self.aux_proc.setWorkingDirectory(str(ROOT))
        self.aux_proc.setProperty("args", args)
        self.aux_proc.finished.connect(self._cluster_command_done)
        self.aux_proc.readyReadStandardOutput.connect(self._read_aux)
        self.aux_proc.start(self.python, ["-m", "workbench.cli", "cluster", *args])
        self._update_buttons()

    def aux_busy(self) -> bool:
        return self.aux_proc is not None and self.aux_proc.state() != QProcess.ProcessState.NotRunning

    def _read_aux(self) -> None:
        assert self.aux_proc is not None
        self._aux_out += bytes(self.aux_proc.readAllStandardOutput())

    def _cluster_command_done(self, code: int, status: QProcess.ExitStatus) -> None:
        proc = self.aux_proc
        assert proc is not None
        self._read_aux()
        args = proc.property("args")
        out = self._aux_out.decode(errors="replace").strip()
        err = bytes(proc.readAllStandardError()).decode(errors="replace").strip()
        if code != 0:
            why = (err or out).splitlines()[-1:] or [f"exit {code}"]
            self.status.setText(f"`workbench cluster {args[0]}` failed: {why[0]}")
        elif args[0] == "cancel":
            self.status.setText(out.splitlines()[-1] if out else "cancel sent")  # "job 12: checkpointing, ..."
        self.refresh_runs()
        if not self.is_running():
            self._selection_changed()
        self._next_cluster_command()

    # ------------------------------------------------------------------ process output
    def _read_stdout(self) -> None:
        assert self.proc is not None
        self._buf += bytes(self.proc.readAllStandardOutput())
        *lines, self._buf = self._buf.split(b"\n")
        for raw in lines:
            e = cluster.parse_line(raw.decode(errors="replace"))  # the trainer's events, "slurm" and "log" lines
            if e is not None:
                self._on_event(e)

    def _read_stderr(self) -> None:
        assert self.proc is not None
        text = bytes(self.proc.readAllStandardError()).decode(errors="replace")
        self.stderr_tail = (self.stderr_tail + text)[-4000:]
        if self.run_kind != LOCAL:  # the relay's and the remote side's messages, in the log tail
            for line in text.splitlines():
                if line.strip():
                    self.log_view.appendPlainText(line)

    def _on_event(self, e) -> None:  # e: a finetune.events event, a JobStatus or a LogLine
        if isinstance(e, JobStatus):
            self._on_job_status(e)
            self.event_received.emit(e)
            return
        if isinstance(e, LogLine):
            self.log_view.appendPlainText(e.text)
            self.event_received.emit(e)
            return
        self.last_event = e
        if isinstance(e, ev.RunStarted):
            self.progress.setRange(0, e.total_steps)
            self.progress.setValue(e.start_step)
            self.download.hide()
            self.status.setText(ev.human(e) or "")
            if e.base:  # what the weights start from, as the trainer resolved it (random weights, a hub id, ...)
                self.base_l.setText(ev.base_text(e))
                self.base_l.setToolTip(e.base_path)
            self._show_tensorboard()
        elif isinstance(e, ev.Download):
            self.download.show()
            self.download.setRange(0, 1000)
            self.download.setValue(int(1000 * e.done / e.total) if e.total else 0)
            self.status.setText(ev.human(e) or "")
        elif isinstance(e, ev.Status):
            self.status.setText(e.text)
            if "wandb sync" in e.text:  # W&B offline: the command that uploads the run later
                cmd = e.text[e.text.index("`") + 1:e.text.rindex("`")] if e.text.count("`") >= 2 else e.text
                self._show_command(self.wandb_cmd, cmd)
        elif isinstance(e, ev.Step):
            self.progress.setValue(e.step)
            self.loss_l.setText(f"{e.loss:.4f}")
            self.lr_l.setText(f"{e.lr:.2e}")
            self.sps_l.setText(f"{e.samples_per_s:.1f}")
            self.eta_l.setText(ev._hms(e.eta_s))
            self.mem_l.setText(f"{e.gpu_mem_gb:.1f} GB" if e.gpu_mem_gb is not None else "CPU")
            while self.steps_x and self.steps_x[-1] >= e.step:  # a resumed run repeats steps after its checkpoint
                self.steps_x.pop()
                self.loss_y.pop()
            self.steps_x.append(e.step)
            self.loss_y.append(e.loss)
            self.loss_curve.setData(self.steps_x, self.loss_y)
        elif isinstance(e, ev.Validation):
            self.val_x.append(e.step)
            self.val_y.append(e.val_loss)
            self.val_curve.setData(self.val_x, self.val_y)
            err = ev.action_error_text(e)
            self.val_l.setText(f"loss {e.val_loss:.4f}" + (f"; action error {err}" if err else ""))
        elif isinstance(e, (ev.CheckpointSaved, ev.PolicySaved)):
            self.refresh_runs()
        elif isinstance(e, ev.Failed):
            self.saw_end = True
            what = "export" if self.proc_command == ("policy",) else "training"
            self.status.setText(f"failed ({e.error}): the error and its fix are above")  # not twice
            self._show_error(f"The {what} failed ({e.error}): {e.message}")
        elif isinstance(e, ev.Finished):
            self.saw_end = True
            if e.reason != "error":
                self.status.setText(ev.human(e) or "")
        self.event_received.emit(e)

    def _on_job_status(self, s: JobStatus) -> None:
        """A SLURM job's state (on each change): the queue line, the progress, the runs list's label."""
        self.job_status = s
        self.queue_l.show()
        self.queue_l.setText(s.describe())
        self.queue_l.setStyleSheet(f"color: {STATE_COLOURS.get(s.state, theme.TEXT)}; font-weight: 600;")
        if s.total_steps:
            self.progress.setRange(0, s.total_steps)
        if s.step is not None:
            self.progress.setValue(s.step)
        self.eta_l.setText(ev._hms(s.eta_s) if s.eta_s is not None and s.state == JobState.RUNNING else "–")
        if s.state == JobState.FAILED and s.message:
            self._show_error(f"The job failed: {s.message}")
        self.refresh_runs()

    def _show_tensorboard(self) -> None:
        """A run that logs to TensorBoard (its train_config.json says so): the command that shows it."""
        run = self.current_run
        if run is None or self.proc_command != ("train",):
            return
        on = "tensorboard" in self._tracked(run) if (run / "train_config.json").is_file() else \
            self.track.choice().tensorboard  # a resumed run keeps its own tracking
        if on:
            home = "" if self.run_kind == LOCAL else "  (the event files come home with the run folder)"
            self._show_command(self.tb_cmd, f"tensorboard --logdir {run / 'tensorboard'}{home}")

    @staticmethod
    def _tracked(run: Path) -> tuple[str, ...]:
        import json

        try:
            return tuple(json.loads((run / "train_config.json").read_text())["tracking"]["backends"])
        except (OSError, ValueError, KeyError, TypeError):
            return ()

    @staticmethod
    def _show_command(field: QLineEdit, text: str) -> None:
        field.setText(text)
        field.setToolTip(text)
        field.setCursorPosition(0)
        field.show()

    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._read_stdout()
        if self.run_kind == SLURM:
            self._cluster_finished(code, status == QProcess.ExitStatus.CrashExit)
        elif not self.saw_end or code not in (0, 130, 2):
            tail = self.stderr_tail.strip().splitlines()[-3:]
            what = "export" if self.proc_command == ("policy",) else "training"
            self.status.setText(f"the {what} process ended with code {code}: " + " | ".join(tail))
            self._show_error(f"The {what} process ended with code {code}: " + " | ".join(tail))
        self.eta_l.setText("–")  # nothing is left to wait for
        self.running_changed.emit(False)
        self.refresh_runs()
        if self.current_run is not None:  # the run just ended, selected: Resume / Use in trials / Export apply
            self.select_run(self.current_run)
        self._update_buttons()

    def _cluster_finished(self, code: int, stopped: bool) -> None:
        """The end of `workbench train --slurm` / `workbench cluster follow`: 0 finished (and fetched), 130 cancelled,
        preempted or stopped following, 2 failed (SLURM's refusal or the trainer's error, said on stderr); stopped:
        ended by a signal (this tab's Cancel during staging, or its shutdown: the job itself goes on)."""
        s = self.job_status
        run = self.current_run
        home = run is not None and (run / "policy" / "policy.json").is_file()
        if stopped:
            queued = run is not None and (run / cluster.JOB_RECORD).is_file()
            self.status.setText("stopped following; the job goes on (Follow picks it up again)" if queued else
                                "submission stopped before anything was queued")
        elif code == 0:
            self.status.setText(f"job {s.job_id if s else ''} finished; the run folder is home"
                                + (": its policy is ready for trials" if home else ""))
        elif code == 130:
            self.status.setText((f"job {s.job_id} {s.state.value}" if s and s.done else "stopped following; the job "
                                 "goes on (Follow picks it up again)") + ("; its policy is home" if home else ""))
        else:
            lines = self.stderr_tail.strip().splitlines()
            at = max((i for i, ln in enumerate(lines) if ln.startswith("error:")), default=max(0, len(lines) - 3))
            said = "\n".join(lines[at:at + 6]).removeprefix("error: ")
            if not self.error_l.text():  # the trainer's Failed event (or the job's failed state) said it already
                self._show_error(f"The SLURM run failed (exit {code}): {said}" if said else
                                 f"The SLURM run failed (exit {code}): {s.describe() if s else 'no job state'}")
            self.status.setText(f"failed (exit {code}): the error is above")

    # ------------------------------------------------------------------ runs
    def _runs(self) -> list[Path]:
        """Run folders: trained here (train_config.json) or submitted to a cluster (slurm_job.json)."""
        if not self.runs_root.is_dir():
            return []
        return sorted(p for p in self.runs_root.iterdir()
                      if (p / "train_config.json").is_file() or (p / cluster.JOB_RECORD).is_file())

    def refresh_runs(self) -> None:
        selected = self.selected_run()
        self.runs.clear()
        for run in self._runs():
            st = run_status(run)
            running = self.is_running() and run == self.current_run
            state = st.label if st.cluster else "running" if running else st.label
            item = QTreeWidgetItem([run.name, "" if st.step is None else str(st.step), state])
            item.setData(0, Qt.ItemDataRole.UserRole, str(run))
            if st.ended == "failed" and not running:
                item.setForeground(2, QBrush(QColor(theme.FAIL)))
                item.setToolTip(2, f"{st.error}: {st.message}")
            elif st.cluster:
                item.setToolTip(2, st.cluster_line)
            for step, ck in list_checkpoints(run):
                item.addChild(QTreeWidgetItem([ck.name, str(step), "checkpoint"]))
            self.runs.addTopLevelItem(item)
            if selected == run:
                item.setSelected(True)
        self._update_buttons()

    def _selection_changed(self) -> None:
        """A failed run, selected while nothing runs, shows its error in the banner; a SLURM run its job's state
        as last seen."""
        run = self.selected_run()
        if run is not None and not self.is_running():
            st = run_status(run)
            if st.ended == "failed":
                self._show_error(f"Run {run.name} failed ({st.error}): {st.message}", of_selection=True)
            elif self._error_of_selection:  # another selected run's failure; a process's own error stays
                self._show_error("")
            self.queue_l.setVisible(bool(st.cluster))
            if st.cluster:
                self.queue_l.setText(st.cluster_line + ("" if not st.live else " (as last seen: Follow or Refresh "
                                                        "asks the cluster)"))
                state = JobState(st.cluster) if st.cluster in JobState._value2member_map_ else JobState.UNKNOWN
                self.queue_l.setStyleSheet(f"color: {STATE_COLOURS.get(state, theme.TEXT)}; font-weight: 600;")
        self._update_buttons()

    def _show_error(self, text: str, of_selection: bool = False) -> None:
        self._error_of_selection = of_selection
        self.error_l.setText(text)
        self.error_l.setVisible(bool(text))

    def selected_run(self) -> Path | None:
        items = self.runs.selectedItems() if hasattr(self, "runs") else []
        if not items:
            return None
        item = items[0]
        while item.parent() is not None:
            item = item.parent()
        return Path(item.data(0, Qt.ItemDataRole.UserRole))

    def select_run(self, run: Path) -> None:
        for i in range(self.runs.topLevelItemCount()):
            it = self.runs.topLevelItem(i)
            it.setSelected(Path(it.data(0, Qt.ItemDataRole.UserRole)) == Path(run))
            if it.isSelected():
                self.runs.setCurrentItem(it)
                self.runs.scrollToItem(it)

    def use_in_trials(self, run: Path | None = None) -> str | None:
        run = run or self.selected_run()
        if run is None or not (run / "policy" / "policy.json").is_file():
            self.status.setText("Select a run with a finished policy.")
            return None
        folder = str(run / "policy")
        self.settings.setValue(SETTINGS_POLICY, folder)
        self.policy_chosen.emit(folder)
        self.status.setText(f"policy for trials: {folder}")
        return folder

    def _update_buttons(self) -> None:
        running = self.is_running()
        run = self.selected_run()
        st = run_status(run) if run is not None else None
        self.train_btn.setEnabled(not running)
        # a SLURM job queued or running, picked in the list: Cancel (`workbench cluster cancel`) and Follow apply
        live = st is not None and st.live and not (running and run == self.current_run)
        self.cancel_btn.setEnabled(running or (live and not self.aux_busy()))
        self.follow_btn.setEnabled(not running and live)
        self.follow_btn.setVisible(st is not None and bool(st.cluster))
        # a finished run has nothing to resume; a stopped (or failed mid-run) one continues from its checkpoint
        self.resume_btn.setEnabled(not running and st is not None and st.resumable)
        self.use_btn.setEnabled(run is not None and (run / "policy" / "policy.json").is_file())
        self.export_btn.setEnabled(not running and run is not None and policy_state(run) != "ready"
                                   and bool(list_checkpoints(run)))
        downloading = self.is_downloading()
        if downloading:
            self.train_btn.setEnabled(False)
        self.download_base_btn.setEnabled(self.base.isEnabled() and not running and not downloading)

    # ------------------------------------------------------------------ download base
    def download_base(self, repo: str | None = None) -> None:
        """Runs `workbench base download REPO --json` as a child process (a download never runs in the GUI
        process); its Download events drive the download bar, its outcome the status line."""
        repo = (repo or self.base.currentText()).strip()
        if self.is_running() or self.is_downloading() or not repo:
            return
        self._dl_buf, self.download_error, self.base_ready = b"", None, None
        self.download_proc = QProcess(self)
        self.download_proc.setWorkingDirectory(str(ROOT))
        self.download_proc.readyReadStandardOutput.connect(self._read_download)
        self.download_proc.finished.connect(self._download_finished)
        self.download.setRange(0, 1000)
        self.download.setValue(0)
        self.download.show()
        self.status.setText(f"downloading {repo}…")
        self.download_proc.start(self.python, ["-m", "workbench.cli", "base", "download", repo, "--json"])
        self._update_buttons()

    def is_downloading(self) -> bool:
        proc = getattr(self, "download_proc", None)
        return proc is not None and proc.state() != QProcess.ProcessState.NotRunning

    def _read_download(self) -> None:
        assert self.download_proc is not None
        self._dl_buf += bytes(self.download_proc.readAllStandardOutput())
        *lines, self._dl_buf = self._dl_buf.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace")
            ready = BaseReady.parse(line)
            if ready is not None:
                self.base_ready = ready
                continue
            e = ev.parse(line)
            if isinstance(e, ev.Download):
                self.download.setValue(int(1000 * e.done / e.total) if e.total else 0)
                self.status.setText(ev.human(e) or "")
            elif isinstance(e, ev.Status):
                self.status.setText(e.text)
            elif isinstance(e, ev.Failed):
                self.download_error = e.message
            if e is not None:
                self.download_event.emit(e)

    def _download_finished(self, code: int, status: QProcess.ExitStatus) -> None:
        assert self.download_proc is not None
        self._read_download()
        r = self.base_ready
        if r is not None and code == 0:
            self.download.setValue(1000)
            tok = f"; tokenizer {r.tokenizer}" if r.tokenizer else ""
            self.status.setText(f"base {r.repo} ready ({r.bytes / 1e9:.2f} GB in {r.cache}): {r.checkpoint}{tok}. "
                                "Training can now run offline (HF_HUB_OFFLINE=1).")
        else:
            self.download.hide()
            tail = bytes(self.download_proc.readAllStandardError()).decode(errors="replace").strip().splitlines()
            self.status.setText(f"download failed: {self.download_error}" if self.download_error else
                                f"the download process ended with code {code}: " + " | ".join(tail[-3:]))
        self._update_buttons()

    def shutdown(self) -> None:
        """App closing: ask the trainer to checkpoint and stop, wait a little."""
        if self.is_downloading():  # a download resumes from its partial file next time
            assert self.download_proc is not None
            self.download_proc.kill()
            self.download_proc.waitForFinished(5_000)
        if self.aux_busy():  # a cluster status / cancel in flight: the cluster acts on a cancel already sent
            assert self.aux_proc is not None
            self.aux_proc.waitForFinished(5_000)
        self._aux_queue.clear()
        if self.is_running():  # a SLURM job goes on: only the following stops (Follow picks it up again)
            assert self.proc is not None
            self.proc.terminate()
            self.proc.waitForFinished(15_000)
