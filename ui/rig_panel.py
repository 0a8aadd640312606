"""Rig tab: choose a rig (preset or TOML file), connect / disconnect with progress, per-arm servo status with
one-click reboot of a faulted servo."""
from __future__ import annotations

import math
from pathlib import Path

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import (QComboBox, QFileDialog, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QPushButton,
                             QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from drivers.errors import describe_hardware_error
from ui import theme
from ui.tasks import JobProgress
from ui.widgets import ElidedLabel
from workbench.config import PRESETS, RigConfig

PRESET_LABELS = {
    "sim-transfer-cube": "Simulation: transfer cube",
    "sim-insertion": "Simulation: insertion",
    "virtual": "Virtual rig (emulated servos)",
    "aloha": "ALOHA hardware",
}


class StatusPill(ElidedLabel):
    """"● Connected" in a status colour; a long progress text ("● Connecting: opening cam_high…") is cut with
    "…" and whole in the tooltip, never widening its panel."""

    def __init__(self, text: str = "", status: str = "idle", parent=None):
        super().__init__(parent)
        self.set(text, status)

    def set(self, text: str, status: str) -> None:
        c = theme.status_colour(status)
        self.status = status
        self.setText(f"● {text}")
        self.setStyleSheet(f"color: {c}; font-weight: 700; font-size: 14px;")


class RigPanel(QWidget):
    rigChosen = pyqtSignal(str)  # preset name or file path

    def __init__(self, controller, settings, parent=None):
        super().__init__(parent)
        self.ctl = controller
        self.settings = settings
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 12, 12, 12)
        lay.setSpacing(10)

        # -- choose + connect ------------------------------------------------------------------------------
        box = QGroupBox("Rig")
        b = QVBoxLayout(box)
        row = QHBoxLayout()
        self.combo = QComboBox()
        self.combo.setMinimumWidth(200)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.browse = QPushButton("Open file…")
        self.browse.setToolTip("Use a rig TOML file (start one with `workbench rig init my_rig.toml`)")
        self.setup_btn = QPushButton("Set up a new rig…")
        self.setup_btn.setToolTip("Find the arms and cameras, name them, measure the grippers, save a rig file "
                                  "and check it with a short teleop (`workbench rig detect / udev / calibrate`)")
        row.addWidget(self.combo, 1)
        row.addWidget(self.browse)
        b.addLayout(row)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setProperty("class", "muted")
        b.addWidget(self.summary)
        row2 = QHBoxLayout()
        self.connect_btn = QPushButton("Connect")
        theme.set_role(self.connect_btn, "primary")
        self.disconnect_btn = QPushButton("Disconnect")
        self.state = StatusPill("Disconnected", "idle")
        for btn in (self.connect_btn, self.disconnect_btn, self.setup_btn):
            btn.setStyleSheet("QPushButton { padding-left: 10px; padding-right: 10px; }")  # one row at 1280 px
            row2.addWidget(btn)
            if btn is self.disconnect_btn:
                row2.addStretch(1)
        b.addLayout(row2)
        b.addWidget(self.state)  # its own line: progress texts are long
        self.progress = JobProgress(compact=True)
        b.addWidget(self.progress)
        lay.addWidget(box)

        # -- arms ------------------------------------------------------------------------------------------
        arms = QGroupBox("Arms and servos")
        a = QVBoxLayout(arms)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(5)
        self.tree.setHeaderLabels(["Arm / joint", "Torque", "Temp", "Status", ""])
        self.tree.setRootIsDecorated(True)
        self.tree.setUniformRowHeights(True)
        hdr = self.tree.header()
        for c in (0, 1, 2, 4):
            hdr.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        hdr.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)  # status texts vary; names never truncate
        hdr.setStretchLastSection(False)  # the reboot column is only as wide as its button (no sideways scroll)
        a.addWidget(self.tree, 1)
        row3 = QHBoxLayout()
        self.arms_note = QLabel("Connect to read servo status.")
        self.arms_note.setProperty("class", "muted")
        self.arms_note.setWordWrap(True)
        self.refresh_btn = QPushButton("Refresh")
        row3.addWidget(self.arms_note, 1)
        row3.addWidget(self.refresh_btn)
        a.addLayout(row3)
        lay.addWidget(arms, 1)

        self.reboot_buttons: dict[tuple[str, str], QPushButton] = {}
        self._fill_combo()
        self.combo.currentIndexChanged.connect(self._chosen)
        self.browse.clicked.connect(self._browse)
        self.setup_btn.clicked.connect(self.open_wizard)
        self.wizard = None  # the "Set up a new rig" wizard, while open
        self.connect_btn.clicked.connect(self.connect_rig)
        self.disconnect_btn.clicked.connect(self.disconnect_rig)
        self.refresh_btn.clicked.connect(lambda: self.ctl.refresh_status())
        controller.connectionChanged.connect(self._on_connection)
        controller.configChanged.connect(self._on_config)
        controller.armStatus.connect(self.show_status)
        controller.teleopState.connect(lambda s: self._update_buttons())
        controller.teleopFinished.connect(lambda _: self._update_buttons())  # a replay ends with no phase change
        self._update_buttons()

    # -- rig choice --------------------------------------------------------------------------------------------
    def _fill_combo(self) -> None:
        self.combo.blockSignals(True)
        self.combo.clear()
        for p in PRESETS:
            self.combo.addItem(PRESET_LABELS.get(p, p), p)
        for path in self.recent_files():
            self.combo.addItem(Path(path).name, path)
            self.combo.setItemData(self.combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        self.combo.blockSignals(False)

    def recent_files(self) -> list[str]:
        v = self.settings.value("rig/recent_files", [])
        return [x for x in (v if isinstance(v, list) else [v] if v else []) if x]

    def select(self, ref: str) -> None:
        """Select a preset or file (adding the file to the list) and load its config."""
        i = self.combo.findData(ref)
        if i < 0:
            recent = [ref] + [x for x in self.recent_files() if x != ref]
            self.settings.setValue("rig/recent_files", recent[:8])
            self._fill_combo()
            i = self.combo.findData(ref)
        self.combo.setCurrentIndex(i)
        self._chosen()

    def current_ref(self) -> str:
        return self.combo.currentData()

    def _chosen(self, *_):
        ref = self.current_ref()
        if ref is None:
            return
        self.settings.setValue("rig/last", ref)
        try:
            self.ctl.load_config(ref)
        except Exception as exc:  # noqa: BLE001 - shown in the banner, with the fix
            self.ctl.error.emit(exc, "Loading the rig configuration")
            self.summary.setText(f"<span style='color:{theme.FAIL}'>Invalid rig file — see the message above.</span>")
        self.rigChosen.emit(ref)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a rig file", str(Path.home()), "Rig files (*.toml)")
        if path:
            self.select(path)

    def open_wizard(self):
        """The set-up wizard (ui.rig_wizard), non-modal: the saved rig file joins this tab's list."""
        from ui.rig_wizard import RigWizard

        if self.wizard is not None and self.wizard.isVisible():
            self.wizard.raise_()
            return self.wizard
        self.wizard = RigWizard(self.ctl, self, select_rig=self.select)
        self.wizard.show()
        return self.wizard

    def _on_config(self, cfg: RigConfig) -> None:
        cams = ", ".join(c.name for c in cfg.cameras) or "none"
        kind = {"sim": "MuJoCo simulation", "virtual": "emulated Dynamixel servos", "dynamixel": "Dynamixel hardware"}
        self.summary.setText(f"{kind.get(cfg.backend, cfg.backend)} · {cfg.control_hz:g} Hz · "
                             f"gripper {cfg.gripper_set} · e-stop {cfg.safety.estop_action}<br>cameras: {cams}")

    # -- connect -------------------------------------------------------------------------------------------------
    def connect_rig(self):
        job = self.ctl.connect_rig(self.current_ref())
        if job is not None:
            self.progress.track(job)
            self.state.set("Connecting…", "warn")
            job.progress.connect(lambda t, f: self.state.set(t or "Connecting…", "warn"))
        self._update_buttons()
        return job

    def disconnect_rig(self):
        from ui import dialogs

        choice = dialogs.before_arms_stop(self, self.ctl, "Disconnect")
        if choice in (None, "cancel"):
            return None
        job = self.ctl.disconnect_rig(torque_off_here=choice == "torque_off")
        if job is not None:
            self.progress.track(job)
            self.state.set("Disconnecting…", "warn")
        self._update_buttons()
        return job

    def _on_connection(self, up: bool) -> None:
        if up:
            self.state.set("Connected", "ok")
            self.arms_note.setText("Servo status is read when idle; during teleop, errors come from the loop.")
        else:
            self.state.set("Disconnected", "idle")
            self.tree.clear()
            self.arms_note.setText("Connect to read servo status.")
        self._update_buttons()

    def _update_buttons(self) -> None:
        busy = self.ctl.connecting
        self.connect_btn.setEnabled(not self.ctl.connected and not busy)
        self.disconnect_btn.setEnabled(self.ctl.connected)
        self.combo.setEnabled(not self.ctl.connected and not busy)
        self.browse.setEnabled(not self.ctl.connected and not busy)
        self.refresh_btn.setEnabled(self.ctl.connected and not self.ctl.teleop_running)

    # -- servo status ---------------------------------------------------------------------------------------------
    def show_status(self, statuses) -> None:
        self.tree.clear()
        self.reboot_buttons.clear()
        faults = 0
        for st in statuses:
            temps = [j.temperature_c for j in st.joints if j.temperature_c is not None]
            torque = [j.torque for j in st.joints if j.torque is not None]
            bad = st.faulted
            faults += len(bad)
            status = "fail" if (bad or not st.connected) else "ok"
            text = ("disconnected" if not st.connected else
                    f"{len(bad)} fault{'s' if len(bad) != 1 else ''}" if bad else "healthy")
            top = QTreeWidgetItem([st.name,  # the name says the role (leader_left, follower_right)
                                   _torque_text(torque), f"{max(temps):.0f} °C" if temps else "—", text, ""])
            top.setForeground(3, _brush(status))
            f = top.font(0)
            f.setBold(True)
            top.setFont(0, f)
            self.tree.addTopLevelItem(top)
            for j in st.joints:
                err = j.hardware_error
                item = QTreeWidgetItem([f"{j.name}" + (f"  · id {j.servo_id}" if j.servo_id is not None else ""),
                                        "on" if j.torque else "off" if j.torque is not None else "—",
                                        f"{j.temperature_c:.0f} °C" if j.temperature_c is not None else "—",
                                        describe_hardware_error(err) if err else "ok", ""])
                item.setForeground(3, _brush("fail" if err else "ok"))
                if err:
                    item.setToolTip(3, j.message)
                top.addChild(item)
                if err:
                    btn = QPushButton("Reboot")
                    theme.set_role(btn, "danger")
                    btn.setToolTip(f"Clear the fault of {st.name}/{j.name} (Dynamixel REBOOT); remove the load first")
                    btn.clicked.connect(lambda _=False, a=st.name, jn=j.name: self.ctl.reboot(a, jn))
                    self.tree.setItemWidget(item, 4, btn)
                    self.reboot_buttons[(st.name, j.name)] = btn
            top.setExpanded(bool(bad))
        if faults:
            self.arms_note.setText(f"<span style='color:{theme.FAIL}'><b>{faults} servo fault(s).</b></span> "
                                   "Remove the load, then press Reboot next to the joint.")


def _torque_text(torque: list[bool]) -> str:
    if not torque:
        return "—"
    if all(torque):
        return "on"
    if not any(torque):
        return "off"
    return f"{sum(torque)}/{len(torque)} on"


def _brush(status: str):
    from PyQt6.QtGui import QBrush, QColor

    return QBrush(QColor(theme.status_colour(status)))
