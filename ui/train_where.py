"""Where a Train-tab run trains and what it logs, as the `workbench train` options they stand for (the tab runs that
same command line, so a CLI user has all of it):

  Run on    this machine (no option) / SSH host (--host USER@HOST [--remote-dir DIR]) / SLURM cluster (--slurm
            PROFILE --poll-s S: a saved finetune.cluster profile, made or changed in ui.cluster_form)
  Tracking  TensorBoard (--track tensorboard: RUN/tensorboard), Weights & Biases (--track wandb [--wandb-mode
            online] [--wandb-project NAME]: RUN/wandb, offline unless asked); off by default

The choices are remembered in QSettings (train/run_on, train/ssh_host, train/ssh_remote_dir, train/slurm_profile,
train/track_*, train/wandb_*).
"""
from __future__ import annotations

from dataclasses import dataclass

from PyQt6.QtCore import QObject, QSettings, pyqtSignal
from PyQt6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QWidget

from finetune import tracking
from finetune.cluster import ClusterProfile, ProfileError, list_profiles, load_profile
from ui import theme
from ui.cluster_form import ClusterProfileDialog, field_label

LOCAL, SSH, SLURM = "local", "ssh", "slurm"
RUN_ON_CHOICES = ((LOCAL, "This machine"), (SSH, "SSH host"), (SLURM, "SLURM cluster"))
DEFAULT_REMOTE_DIR = "~/workbench-runs"  # `workbench train --remote-dir`'s default for --host
POLL_S = 5.0  # the tab's --poll-s: seconds between looks at a SLURM job (the CLI's default is 10)


@dataclass(frozen=True)
class RunOn:
    """Where the run trains: kind LOCAL, SSH (host, remote_dir) or SLURM (profile: a saved profile's name)."""

    kind: str = LOCAL
    host: str = ""
    remote_dir: str = ""
    profile: str = ""
    poll_s: float = POLL_S

    def problem(self) -> str | None:
        """What stops this choice from working, said with the fix (None: it can start)."""
        if self.kind == SSH:
            if not self.host:
                return "Enter the SSH host to train on (user@gpu-box, or an ~/.ssh/config alias)."
            if any(c.isspace() for c in self.host):
                return f"SSH host {self.host!r}: one user@host, no spaces."
        if self.kind == SLURM:
            if not self.profile:
                return "Choose a cluster profile (New… makes one)."
            try:
                load_profile(self.profile)
            except ProfileError as e:
                return f"Cluster profile {self.profile}, {field_label(e.field)}: {e}"
        return None

    def argv(self) -> list[str]:
        if self.kind == SSH:
            remote = ["--remote-dir", self.remote_dir] if self.remote_dir and \
                self.remote_dir != DEFAULT_REMOTE_DIR else []
            return ["--host", self.host, *remote]
        if self.kind == SLURM:
            return ["--slurm", self.profile, "--poll-s", f"{self.poll_s:g}"]
        return []


@dataclass(frozen=True)
class TrackingChoice:
    """The tracking check boxes: TensorBoard, W&B with its mode and project ("": the default project)."""

    tensorboard: bool = False
    wandb: bool = False
    wandb_mode: str = "offline"
    wandb_project: str = ""

    def config(self) -> tracking.TrackingConfig:
        """finetune.tracking's own check of the choice (a ValueError says what is wrong)."""
        backends = tuple(b for b, on in ((tracking.TENSORBOARD, self.tensorboard), (tracking.WANDB, self.wandb))
                         if on)
        return tracking.TrackingConfig(backends, wandb_project=self.wandb_project or tracking.DEFAULT_PROJECT,
                                       wandb_mode=self.wandb_mode)

    def argv(self) -> list[str]:
        a: list[str] = []
        for b in self.config().backends:
            a += ["--track", b]
        if self.wandb:
            if self.wandb_mode != "offline":
                a += ["--wandb-mode", self.wandb_mode]
            if self.wandb_project and self.wandb_project != tracking.DEFAULT_PROJECT:
                a += ["--wandb-project", self.wandb_project]
        return a


def profile_summary(p: ClusterProfile) -> str:
    """One line about a profile: where it logs in and what a job asks for."""
    gpus = f"{p.gpus_per_node} GPU{'s' if p.gpus_per_node != 1 else ''}" if p.gpus_per_node else "CPU only"
    parts = [p.login or "this machine is the login node", f"partition {p.partition or 'default'}",
             f"{p.nodes} node{'s' if p.nodes != 1 else ''} × {gpus}", f"time {p.time_limit or 'partition limit'}"]
    if p.account:
        parts.insert(2, f"account {p.account}")
    return " · ".join(parts)


class RunOnRows(QObject):
    """The form rows "Run on", "SSH host" / "Remote folder" (SSH) and "Cluster" (SLURM: a saved profile, Edit…,
    New…); only the chosen kind's rows show."""

    changed = pyqtSignal()

    def __init__(self, form: QFormLayout, settings: QSettings, parent: QWidget) -> None:
        super().__init__(parent)
        self.form, self.settings = form, settings  # the panel is parent(): no Python reference cycle to it
        self.poll_s = POLL_S  # --poll-s of the SLURM runs started here
        self.kind = QComboBox()
        for value, label in RUN_ON_CHOICES:
            self.kind.addItem(label, value)
        self.kind.setToolTip("where the training runs: this machine, a GPU machine over SSH (`workbench train "
                             "--host`), or a batch job on a SLURM cluster (`workbench train --slurm PROFILE`)")
        self.host = QLineEdit(str(settings.value("train/ssh_host", "")))
        self.host.setPlaceholderText("user@gpu-box")
        self.host.setToolTip("the GPU machine (user@host or an ~/.ssh/config alias); the dataset goes there with "
                             "rsync, the run folder comes home without its checkpoints")
        self.remote_dir = QLineEdit(str(settings.value("train/ssh_remote_dir", "")))
        self.remote_dir.setPlaceholderText(DEFAULT_REMOTE_DIR)
        self.remote_dir.setToolTip("the working folder on the host (--remote-dir)")
        self.profile = QComboBox()
        self.profile.setToolTip("a saved cluster profile (~/.config/aloha-workbench/clusters/NAME.toml)")
        self.edit_btn = QPushButton("Edit…")
        self.new_btn = QPushButton("New…")
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setStyleSheet(f"color: {theme.MUTED};")
        crow = QHBoxLayout()
        crow.addWidget(self.profile, 1)
        crow.addWidget(self.edit_btn)
        crow.addWidget(self.new_btn)
        self._cluster_row = QWidget()
        self._cluster_row.setLayout(crow)
        crow.setContentsMargins(0, 0, 0, 0)
        form.addRow("Run on", self.kind)
        form.addRow("SSH host", self.host)
        form.addRow("Remote folder", self.remote_dir)
        form.addRow("Cluster", self._cluster_row)
        form.addRow("", self.summary)
        self.dialog: ClusterProfileDialog | None = None
        self.refresh_profiles(str(settings.value("train/slurm_profile", "")))
        self.kind.setCurrentIndex(max(0, self.kind.findData(settings.value("train/run_on", LOCAL))))
        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.profile.currentIndexChanged.connect(self._profile_changed)
        self.host.textChanged.connect(self.changed)
        self.edit_btn.clicked.connect(lambda: self.edit_profile())
        self.new_btn.clicked.connect(lambda: self.edit_profile(new=True))
        self._kind_changed()

    def choice(self) -> RunOn:
        return RunOn(self.kind.currentData(), self.host.text().strip(), self.remote_dir.text().strip(),
                     self.profile.currentText() if self.profile.currentData() else "", self.poll_s)

    def set_kind(self, kind: str) -> None:
        self.kind.setCurrentIndex(self.kind.findData(kind))

    def remember(self) -> None:
        c = self.choice()
        for key, v in (("run_on", c.kind), ("ssh_host", c.host), ("ssh_remote_dir", c.remote_dir),
                       ("slurm_profile", c.profile)):
            self.settings.setValue(f"train/{key}", v)

    def refresh_profiles(self, select: str | None = None) -> None:
        want = select if select is not None else self.profile.currentText()
        self.profile.blockSignals(True)
        self.profile.clear()
        names = list_profiles()
        for name in names:
            self.profile.addItem(name, name)
        if not names:
            self.profile.addItem("(no profile yet: New…)", "")
        i = self.profile.findData(want) if want else -1
        self.profile.setCurrentIndex(max(0, i))
        self.profile.blockSignals(False)
        self._profile_changed()

    def edit_profile(self, new: bool = False) -> ClusterProfileDialog:
        """Opens the profile form (window-modal, not blocking): the chosen profile's, or a new one's; once saved,
        the profile is listed and chosen."""
        name = self.profile.currentData()
        start: ClusterProfile | None = None
        if not new and name:
            try:
                start = load_profile(name)
            except ProfileError as e:  # a broken file: the form starts empty, the summary says why
                self.summary.setText(f"{field_label(e.field)}: {e}")
        parent = self.parent()
        assert isinstance(parent, QWidget)
        dlg = ClusterProfileDialog(start or ClusterProfile(name="" if new else (name or "")), parent)
        dlg.accepted.connect(lambda: self.refresh_profiles(dlg.saved.name if dlg.saved else None))
        self.dialog = dlg
        dlg.open()
        return dlg

    def _kind_changed(self) -> None:
        kind = self.kind.currentData()
        for w, shown in ((self.host, kind == SSH), (self.remote_dir, kind == SSH),
                         (self._cluster_row, kind == SLURM), (self.summary, kind == SLURM)):
            self.form.setRowVisible(w, shown)
        self.changed.emit()

    def _profile_changed(self) -> None:
        name = self.profile.currentData()
        self.edit_btn.setEnabled(bool(name))
        if not name:
            self.summary.setText("A profile holds the login node and what every job asks for (partition, GPUs, "
                                 "time limit, set-up lines): New… makes one.")
        else:
            try:
                p = load_profile(name)
                self.summary.setText(profile_summary(p))
                self.summary.setToolTip(f"remote folder {p.remote_dir}")
            except ProfileError as e:
                self.summary.setText(f"{field_label(e.field)}: {e}")
        self.changed.emit()


class TrackingRows(QObject):
    """The "Tracking" rows: TensorBoard and W&B check boxes, W&B's mode and project, and where the files go."""

    def __init__(self, form: QFormLayout, settings: QSettings, parent: QWidget) -> None:
        super().__init__(parent)
        self.form = form
        self.settings = settings
        self.tensorboard = QCheckBox("TensorBoard")
        self.tensorboard.setToolTip("event files in the run folder: `tensorboard --logdir RUN/tensorboard` "
                                    "(--track tensorboard)")
        self.wandb = QCheckBox("Weights && Biases")
        self.wandb.setToolTip("W&B run folders in RUN/wandb: offline (nothing sent; `wandb sync` later) or "
                              "online (needs `wandb login` where it trains) (--track wandb)")
        self.mode = QComboBox()
        self.mode.addItems(tracking.WANDB_MODES)
        self.mode.setToolTip("offline: written to RUN/wandb only; online: streamed to W&B (--wandb-mode)")
        self.project = QLineEdit(str(settings.value("train/wandb_project", "")))
        self.project.setPlaceholderText(tracking.DEFAULT_PROJECT)
        self.project.setToolTip(f"the W&B project (--wandb-project; default {tracking.DEFAULT_PROJECT})")
        row = QHBoxLayout()
        row.addWidget(self.tensorboard)
        row.addWidget(self.wandb)
        row.addStretch(1)
        wrow = QHBoxLayout()
        wrow.addWidget(QLabel("mode"))
        wrow.addWidget(self.mode)
        wrow.addWidget(QLabel("project"))
        wrow.addWidget(self.project, 1)
        self._wandb_row = QWidget()
        self._wandb_row.setLayout(wrow)
        wrow.setContentsMargins(0, 0, 0, 0)
        self.note = QLabel()
        self.note.setWordWrap(True)
        form.addRow("Tracking", row)
        form.addRow("W&&B", self._wandb_row)
        form.addRow("", self.note)
        self.tensorboard.setChecked(settings.value("train/track_tensorboard", "false") == "true")
        self.wandb.setChecked(settings.value("train/track_wandb", "false") == "true")
        self.mode.setCurrentText(str(settings.value("train/wandb_mode", "offline")))
        for w in (self.tensorboard, self.wandb):
            w.toggled.connect(self._update)
        self.mode.currentIndexChanged.connect(self._update)
        self._update()

    def choice(self) -> TrackingChoice:
        return TrackingChoice(self.tensorboard.isChecked(), self.wandb.isChecked(), self.mode.currentText(),
                              self.project.text().strip())

    def remember(self) -> None:
        c = self.choice()
        for key, v in (("track_tensorboard", "true" if c.tensorboard else "false"),
                       ("track_wandb", "true" if c.wandb else "false"), ("wandb_mode", c.wandb_mode),
                       ("wandb_project", c.wandb_project)):
            self.settings.setValue(f"train/{key}", v)

    def _update(self) -> None:
        c = self.choice()
        self.form.setRowVisible(self._wandb_row, c.wandb)
        said = []
        if c.tensorboard:
            said.append("TensorBoard files go to the run folder's tensorboard/ (`tensorboard --logdir` it)")
        if c.wandb and c.wandb_mode == "offline":
            said.append("W&B writes the run folder's wandb/ and sends nothing; the run prints the `wandb sync` "
                        "command that uploads it later")
        elif c.wandb:
            said.append("W&B streams the metrics to wandb.ai (needs `wandb login` on the machine that trains) "
                        "and keeps a copy in the run folder's wandb/")
        self.note.setText("; ".join(said) + "." if said else "Off: nothing is logged outside the run folder's "
                          "metrics.jsonl, nothing is sent anywhere.")
        self.note.setStyleSheet(f"color: {theme.WARN};" if c.wandb and c.wandb_mode == "online" else
                                f"color: {theme.MUTED};")


__all__ = ["DEFAULT_REMOTE_DIR", "LOCAL", "POLL_S", "RUN_ON_CHOICES", "SLURM", "SSH", "RunOn", "RunOnRows",
           "TrackingChoice", "TrackingRows", "profile_summary"]
