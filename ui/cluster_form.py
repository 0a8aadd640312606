"""The cluster profile form of the Train tab ("Run on: SLURM cluster" -> New… / Edit…): every field of
finetune.cluster.ClusterProfile with its label, help and CLI option (PROFILE_FIELDS' metadata), checked by the
profile's own check() and saved with save_profile, the same TOML file `workbench train --slurm NAME` reads
(~/.config/aloha-workbench/clusters/NAME.toml). A value that cannot work is refused with the message of the
ProfileError, naming the field (its label and CLI option), and that field is marked and focused.
"""
from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import (QCheckBox, QDialog, QDialogButtonBox, QFormLayout, QFrame, QLabel, QLineEdit,
                             QPlainTextEdit, QScrollArea, QSpinBox, QVBoxLayout, QWidget)

from finetune.cluster import PROFILE_FIELDS, ClusterProfile, ProfileError, profiles_dir, save_profile
from ui import theme

INT_RANGES = {"nodes": (0, 100_000), "gpus_per_node": (0, 64), "cpus_per_task": (0, 100_000),
              "signal_lead_s": (0, 86_400)}  # from 0: check() names the field of a 0 node or CPU count
PLACEHOLDERS = {"login": "user@login-node (empty: this machine is the login node)", "partition": "the default",
                "account": "your default", "qos": "the default", "mem": "e.g. 64G", "time_limit": "e.g. 12:00:00",
                "constraint": "e.g. a100|h100", "container": "/path/on/the/cluster/image.sif",
                "hf_home": "REMOTE_DIR/hf-home", "extra_sbatch": "--exclusive\n--reservation=lab",
                "setup": "module load cuda/12.4\nsource ~/venvs/wb/bin/activate"}
INVALID_STYLE = f"border: 2px solid {theme.FAIL};"


def field_label(name: str) -> str:
    """'Time limit (--time)': the field as the form and the CLI name it (a key no field has: itself, as a TOML
    file spelled it)."""
    if name not in PROFILE_FIELDS:
        return f"key {name!r}"
    meta = PROFILE_FIELDS[name].metadata
    return f"{meta['label']} ({meta['option']})"


class ProfileForm(QWidget):
    """One QLineEdit / QSpinBox / QCheckBox / QPlainTextEdit per profile field, with its help underneath."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.inputs: dict[str, QWidget] = {}
        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.error = QLabel()  # the refusal, naming the field
        self.error.setWordWrap(True)
        self.error.setStyleSheet(f"color: {theme.FAIL}; font-weight: 600;")
        self.error.hide()
        form.addRow(self.error)
        for name, f in PROFILE_FIELDS.items():
            meta, default = f.metadata, f.default
            if isinstance(default, bool):
                w: QWidget = QCheckBox(meta["label"])
            elif isinstance(default, int):
                w = QSpinBox()
                w.setRange(*INT_RANGES.get(name, (0, 1_000_000)))
            elif isinstance(default, tuple):
                w = QPlainTextEdit()
                w.setPlaceholderText(PLACEHOLDERS.get(name, "one per line"))
                w.setFixedHeight(w.fontMetrics().lineSpacing() * 3 + 16)
                w.setTabChangesFocus(True)
            else:
                w = QLineEdit()
                w.setPlaceholderText(PLACEHOLDERS.get(name, ""))
            w.setToolTip(f"{meta['help']} (`workbench train` option {meta['option']})")
            w.setObjectName(f"profile_{name}")
            self.inputs[name] = w
            help_l = QLabel(f"{meta['help']} · {meta['option']}")
            help_l.setWordWrap(True)
            help_l.setStyleSheet(f"color: {theme.MUTED}; font-size: 11px;")
            cell = QWidget()  # the field and its help, together
            box = QVBoxLayout(cell)
            box.setContentsMargins(0, 0, 0, 4)
            box.setSpacing(2)
            box.addWidget(w)
            box.addWidget(help_l)
            form.addRow("" if isinstance(w, QCheckBox) else meta["label"], cell)
        self.set_profile(ClusterProfile())

    def set_profile(self, p: ClusterProfile) -> None:
        for name, w in self.inputs.items():
            v = getattr(p, name)
            if isinstance(w, QCheckBox):
                w.setChecked(bool(v))
            elif isinstance(w, QSpinBox):
                w.setValue(int(v))
            elif isinstance(w, QPlainTextEdit):
                w.setPlainText("\n".join(v))
            else:
                assert isinstance(w, QLineEdit)
                w.setText(str(v))
        self.show_error(None)

    def profile(self) -> ClusterProfile:
        """The profile the form shows, checked; a ProfileError names the field that cannot work."""
        kw: dict[str, object] = {}
        for name, w in self.inputs.items():
            if isinstance(w, QCheckBox):
                kw[name] = w.isChecked()
            elif isinstance(w, QSpinBox):
                kw[name] = w.value()
            elif isinstance(w, QPlainTextEdit):
                kw[name] = tuple(line.strip() for line in w.toPlainText().splitlines() if line.strip())
            else:
                assert isinstance(w, QLineEdit)
                kw[name] = w.text().strip()
        return ClusterProfile(**kw).check()  # type: ignore[arg-type]

    def save(self, folder: Path | None = None) -> Path | None:
        """Saves the profile (save_profile); None and the refusal shown when a value cannot work."""
        try:
            p = self.profile()
            if not p.name:
                raise ProfileError("name", "give the profile a name: `workbench train --slurm NAME` finds it by it")
            path = save_profile(p, folder)
        except ProfileError as e:
            self.show_error(e)
            return None
        self.show_error(None)
        return path

    def show_error(self, e: ProfileError | None) -> None:
        """The refusal above the form, naming the field; that field marked and focused."""
        for w in self.inputs.values():
            w.setStyleSheet("")
            w.setProperty("invalid", False)
        if e is None:
            self.error.hide()
            self.error.setText("")
            return
        name = e.field if e.field in self.inputs else "name"
        self.error.setText(f"{field_label(name)}: {e}")
        self.error.show()
        w = self.inputs[name]
        w.setProperty("invalid", True)
        w.setStyleSheet(INVALID_STYLE)
        w.setFocus()


class ClusterProfileDialog(QDialog):
    """New… / Edit… of a cluster profile: the form in a scroll area, Save (checked, then written) and Cancel."""

    def __init__(self, profile: ClusterProfile | None = None, parent: QWidget | None = None,
                 folder: Path | None = None) -> None:
        super().__init__(parent)
        self.folder = folder
        self.saved: ClusterProfile | None = None
        self.setWindowTitle(f"Cluster profile {profile.name}" if profile and profile.name else "New cluster profile")
        v = QVBoxLayout(self)
        where = QLabel(f"Saved as {folder or profiles_dir()}/NAME.toml; `workbench train --slurm NAME` uses it too. "
                       "Empty fields leave the value to the cluster's default.")
        where.setWordWrap(True)
        where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        v.addWidget(where)
        self.form = ProfileForm()
        if profile is not None:
            self.form.set_profile(profile)
        scroll = self.scroll = QScrollArea()
        scroll.setWidget(self.form)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        v.addWidget(scroll, 1)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save |
                                        QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        v.addWidget(self.buttons)
        self.resize(620, 680)

    def save(self) -> bool:
        """Save pressed: written and closed, or the refusal shown (the dialog stays open)."""
        path = self.form.save(self.folder)
        if path is None:
            self.scroll.ensureWidgetVisible(self.form.error)
            return False
        self.saved = self.form.profile()
        self.accept()
        return True


__all__ = ["ClusterProfileDialog", "ProfileForm", "field_label"]
