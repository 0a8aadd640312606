"""The Rig tab's "Set up a new rig" wizard: `workbench rig detect / udev / calibrate` and a teleop check, by clicks.

Every step's logic is workbench.rig_setup's (the CLI's): this module asks the operator, runs the slow parts as
jobs on the app's JobRunner (progress, Cancel) and shows what came back. Nothing here moves an arm: the
follower gripper calibration commands go through the rig's safety layer inside gripper_calibration, and the
teleop check runs through the app's RigController like any teleop. A step that refuses (no buses, a swapped
gripper range, two cameras that changed alike) shows why in words, and its Next stays disabled.
"""
from __future__ import annotations

import contextlib
import html
import time
from pathlib import Path
from typing import Any, Callable

from PyQt6.QtCore import Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QPixmap
from PyQt6.QtWidgets import (QCheckBox, QDoubleSpinBox, QFormLayout, QGridLayout, QHBoxLayout, QLabel, QLineEdit,
                             QPlainTextEdit, QPushButton, QVBoxLayout, QWizard, QWizardPage)

from ui import theme
from ui.tasks import JobContext, JobProgress
from workbench.rig_setup import gripper_calibration as gc
from workbench.rig_setup import setup, udev
from workbench.rig_setup.assign import AssignmentError

SIDES = ("left", "right")


def _say(label: QLabel, text: str, status: str = "muted") -> None:
    """A step's verdict in words: red for a refusal (with the fix), green for done."""
    colour = {"fail": theme.FAIL, "ok": theme.OK, "warn": theme.WARN}.get(status)
    body = html.escape(text).replace("\n", "<br>")
    label.setText(f"<span style='color:{colour}'>{body}</span>" if colour else body)
    label.setProperty("status", status)


def _message() -> QLabel:
    m = QLabel()
    m.setWordWrap(True)
    m.setTextFormat(Qt.TextFormat.RichText)
    m.setProperty("status", "")
    return m


class _Page(QWizardPage):
    """A step: a message line, the job progress, and `run()` for its slow parts."""

    def __init__(self, wizard: "RigWizard", title: str, subtitle: str):
        super().__init__()
        self.wiz = wizard
        self.setTitle(title)
        self.setSubTitle(subtitle)
        self.lay = QVBoxLayout(self)
        self.message = _message()
        self.progress = JobProgress(compact=True)

    def finish_layout(self) -> None:
        self.lay.addWidget(self.message)
        self.lay.addWidget(self.progress)
        self.lay.addStretch(1)

    def run(self, title: str, fn: Callable[[JobContext], Any], on_ok: Callable[[Any], None],
            on_error: Callable[[BaseException], None] | None = None):
        return self.wiz.run(self, title, fn, on_ok, on_error)

    def validatePage(self) -> bool:
        """Next (or QWizard.next()) leaves a step only when it is complete: a refusal never advances."""
        return self.isComplete()

    def refuse(self, exc: BaseException | str) -> None:
        _say(self.message, str(exc), "fail")
        self.completeChanged.emit()


# -- 1. find the buses and cameras ---------------------------------------------------------------------------
class DetectPage(_Page):
    def __init__(self, wizard):
        super().__init__(wizard, "Find the arms and cameras",
                         "Plug in each arm's U2D2 (USB) and power the arms, plug in the cameras, then Detect. "
                         "Each bus is pinged for its servos: a leader is a WX250s, a follower a VX300s.")
        form = QFormLayout()
        self.virtual = QCheckBox("Virtual rig (emulated servos; an emulated operator moves the arms when asked)")
        self.ports = QLineEdit()
        self.ports.setPlaceholderText("optional: more serial devices to try, comma separated")
        self.cameras = QLineEdit()
        self.cameras.setPlaceholderText("optional: more camera devices or video files, comma separated")
        self.name = QLineEdit("aloha")
        form.addRow(self.virtual)
        form.addRow("Also try ports", self.ports)
        form.addRow("Also offer cameras", self.cameras)
        form.addRow("Rig name", self.name)
        self.lay.addLayout(form)
        self.detect_btn = QPushButton("Detect")
        theme.set_role(self.detect_btn, "primary")
        self.detect_btn.clicked.connect(self.detect)
        self.lay.addWidget(self.detect_btn)
        self.found = QPlainTextEdit()
        self.found.setReadOnly(True)
        self.found.setMinimumHeight(160)
        self.lay.addWidget(self.found, 1)
        self.finish_layout()

    def detect(self) -> None:
        w = self.wiz
        w.forget_detection()
        virtual = self.virtual.isChecked()
        ports = tuple(p.strip() for p in self.ports.text().split(",") if p.strip())
        cams = tuple(c.strip() for c in self.cameras.text().split(",") if c.strip())
        _say(self.message, "")
        self.found.clear()

        def work(ctx: JobContext):
            operator = None
            candidates = ports
            if virtual:
                ctx.progress("Starting the emulated servo chains")
                operator = setup.EmulatedOperator()
                w.operator = operator  # stopped by the wizard's clean-up, whatever happens next
                candidates += operator.start()
            det = setup.detect(candidates, cams, timeout_ms=50.0 if virtual else 10.0, progress=ctx.progress)
            return det

        self.detect_btn.setEnabled(False)

        def ok(det: setup.Detection) -> None:
            self.detect_btn.setEnabled(True)
            w.detection = det
            lines = det.lines()
            if w.operator is not None:
                lines += ["", "Virtual rig: " + ", ".join(f"{w.operator.arm_at(a.device)} on {a.device}"
                                                          for a in det.adapters if w.operator.arm_at(a.device))]
            self.found.setPlainText("\n".join(lines))
            problems = det.problems()
            if problems:
                self.refuse("Cannot propose a rig file yet:\n" + "\n".join(f"• {p}" for p in problems))
                return
            w.session = setup.SetupSession(det, backend="virtual" if virtual else "dynamixel",
                                           name=self.name.text().strip() or "aloha")
            roles = [r for r in ("leader", "follower") if w.session.ports(r)]
            _say(self.message, f"Found {' and '.join(f'2 {r} arms' for r in roles)} and "
                               f"{len(det.cameras)} camera(s): Next assigns left and right.", "ok")
            self.completeChanged.emit()

        def failed(exc):
            self.detect_btn.setEnabled(True)
            self.refuse(f"Detection failed: {exc}")

        self.run("Detecting", work, ok, failed)

    def isComplete(self) -> bool:
        return self.wiz.session is not None and not self.wiz.busy


# -- 2. left and right: move one arm ------------------------------------------------------------------------------
class ArmsPage(_Page):
    def __init__(self, wizard):
        super().__init__(wizard, "Left and right",
                         "For each kind of arm, press Watch, then move the LEFT arm by hand (any joint, a few "
                         "centimetres). The bus whose positions changed is the left one; the other is the right.")
        self.rows = QGridLayout()
        self.lay.addLayout(self.rows)
        self.live = QLabel()
        self.live.setWordWrap(True)
        self.lay.addWidget(self.live)
        self.watch_buttons: dict[str, QPushButton] = {}
        self.results: dict[str, QLabel] = {}
        self.finish_layout()
        wizard.live.connect(self._on_live)

    def initializePage(self) -> None:
        while self.rows.count():
            item = self.rows.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.watch_buttons.clear()
        self.results.clear()
        session = self.wiz.session
        for i, role in enumerate(r for r in ("leader", "follower") if session.ports(r)):
            extra = " (torque is off: support the arm)" if role == "follower" else ""
            self.rows.addWidget(QLabel(f"Move the LEFT {role} arm{extra}"), i, 0)
            btn = QPushButton(f"Watch the {role}s")
            btn.clicked.connect(lambda _=False, r=role: self.watch(r))
            self.rows.addWidget(btn, i, 1)
            res = QLabel("not assigned yet")
            res.setProperty("class", "muted")
            self.rows.addWidget(res, i, 2)
            self.watch_buttons[role], self.results[role] = btn, res
            self._show_assignment(role)
        _say(self.message, "")

    def watch(self, role: str) -> None:
        w = self.wiz
        session, operator, seconds = w.session, w.operator, w.seconds
        timeout = 50.0 if operator is not None else 10.0
        _say(self.message, f"Watching the {role} buses for {seconds:.0f} s: move the LEFT {role} arm now.")

        def work(ctx: JobContext):
            with session.arm_watch(role, timeout_ms=timeout) as watch:
                watch.baseline()
                moving = operator.moving(role, "left") if operator is not None else contextlib.nullcontext()
                with moving:
                    changes = watch.watch(seconds, should_stop=lambda: ctx.cancelled,
                                          on_sample=lambda ch: w.live.emit("arms", ch))
            ctx.check()
            return changes

        def ok(changes: dict[str, float]) -> None:
            try:
                session.assign_moved(role, "left", changes)
            except AssignmentError as exc:
                self.refuse(exc)
                return
            self._show_assignment(role)
            _say(self.message, f"{role}_left and {role}_right assigned.", "ok")
            self.completeChanged.emit()

        self.run(f"Watching the {role} arms", work, ok)

    def _show_assignment(self, role: str) -> None:
        session = self.wiz.session
        bits = [f"{role}_{session.sides[p]} = {p}" for p in session.ports(role) if p in session.sides]
        if bits and role in self.results:
            _say(self.results[role], "\n".join(sorted(bits)), "ok")

    def _on_live(self, kind: str, changes: dict) -> None:
        if kind != "arms" or not changes:
            return
        best = max(changes, key=changes.get)
        self.live.setText("Moved so far: " + ", ".join(
            (f"<b style='color:{theme.ACCENT}'>{html.escape(p)} {v:.2f} rad</b>" if p == best and v > 0.05
             else f"{html.escape(p)} {v:.2f} rad") for p, v in changes.items()))

    def isComplete(self) -> bool:
        s = self.wiz.session
        return (s is not None and not self.wiz.busy
                and all(p in s.sides for r in ("leader", "follower") for p in s.ports(r)))


# -- 3. cameras: wave in front of it -----------------------------------------------------------------------------
class CamerasPage(_Page):
    def __init__(self, wizard):
        super().__init__(wizard, "Name the cameras",
                         "Press Watch, then wave a hand close in front of the camera asked for: the image that "
                         "changes gets that name (highlighted live).")
        self.grid = QGridLayout()
        self.lay.addLayout(self.grid)
        self.prompt = QLabel()
        self.prompt.setWordWrap(True)
        self.lay.addWidget(self.prompt)
        self.wave_btn = QPushButton("Watch")
        self.wave_btn.clicked.connect(self.wave)
        self.lay.addWidget(self.wave_btn)
        self.tiles: dict[str, QLabel] = {}
        self.captions: dict[str, QLabel] = {}
        self.watch = None  # cameras.CameraWatch while this step is open
        self.timer = QTimer(self)
        self.timer.setInterval(200)
        self.timer.timeout.connect(self._refresh)
        self.highlighted: str | None = None
        self.finish_layout()
        wizard.live.connect(self._on_live)

    def initializePage(self) -> None:
        w = self.wiz
        cams = w.session.unnamed_cameras()
        self.wave_btn.setVisible(bool(cams))
        if not w.session.detection.cameras:
            extra = (" The virtual rig gets synthetic cameras (" + ", ".join(setup.EmulatedOperator.CAMERAS) + ")."
                     if w.operator is not None else " The rig file will have no cameras; add them later, or plug "
                                                    "them in and detect again (Back).")
            _say(self.message, "No camera was detected." + extra, "warn" if w.operator is None else "ok")
            return
        if not cams:
            self._update_prompt()
            return
        from workbench.rig_setup.cameras import CameraWatch

        self.wave_btn.setEnabled(False)
        watch = CameraWatch(cams)

        def work(ctx: JobContext):
            ctx.progress("Opening the cameras")
            return watch.__enter__()

        def ok(_):
            self.watch = watch
            w.camera_watch = watch
            self._build_tiles(cams)
            self.timer.start()
            self.wave_btn.setEnabled(True)
            self._update_prompt()

        self.run("Opening the cameras", work, ok, lambda e: self.refuse(f"Could not open the cameras: {e}"))

    def _build_tiles(self, cams) -> None:
        for i, c in enumerate(cams):
            tile, cap = QLabel(), QLabel(c.ident)
            tile.setFixedSize(200, 150)
            tile.setStyleSheet(f"border: 3px solid {theme.BORDER};")
            cap.setWordWrap(True)
            self.grid.addWidget(tile, 0, i)
            self.grid.addWidget(cap, 1, i)
            self.tiles[c.ident], self.captions[c.ident] = tile, cap

    def _refresh(self) -> None:
        if self.watch is None:
            return
        from ui.camera_grid import preview_image

        try:
            frames = self.watch.latest()
        except Exception:  # noqa: BLE001 - a stalled camera shows its last image; the wave step reports errors
            return
        for ident, img in frames.items():
            if ident in self.tiles and img is not None:
                qimg, _ = preview_image(img, 194, 144)
                self.tiles[ident].setPixmap(QPixmap.fromImage(qimg.copy()))

    def _update_prompt(self) -> None:
        s = self.wiz.session
        for ident, cap in self.captions.items():
            name = s.camera_names.get(ident)
            _say(cap, f"{name} = {ident}" if name else ident, "ok" if name else "muted")
        name = s.next_camera_name()
        if name is None or not s.unnamed_cameras():
            self.prompt.setText("Every camera is named.")
            self.wave_btn.setEnabled(False)
        else:
            self.prompt.setText(f"Press Watch, then wave a hand close in front of the camera that is <b>{name}</b> "
                                f"(within {self.wiz.seconds:.0f} s).")
        self.completeChanged.emit()

    def wave(self) -> None:
        w, watch, s = self.wiz, self.watch, self.wiz.session
        name = s.next_camera_name()
        if watch is None or name is None:
            return
        named = tuple(s.camera_names)
        _say(self.message, f"Watching: wave in front of {name} now.")

        def work(ctx: JobContext):
            watch.take_baseline()
            best = setup.watch_wave(watch, w.seconds, exclude=named, should_stop=lambda: ctx.cancelled,
                                    on_sample=lambda ch: w.live.emit("cameras", ch))
            ctx.check()
            return best

        def ok(best: dict[str, float]) -> None:
            try:
                ident = s.assign_changed_camera(name, best)
            except AssignmentError as exc:
                self.refuse(exc)
                return
            last = s.name_last_camera()
            _say(self.message, f"{name} = {ident}" + (f"; {s.camera_names[last]} = {last} (the last one)"
                                                        if last else ""), "ok")
            self._update_prompt()

        self.run(f"Watching for a wave ({name})", work, ok)

    def _on_live(self, kind: str, changes: dict) -> None:
        if kind != "cameras":
            return
        pool = {k: v for k, v in changes.items() if k not in self.wiz.session.camera_names}
        best = max(pool, key=pool.get) if pool else None
        self.highlighted = best if best is not None and pool[best] >= setup.IMAGE_CHANGE_MIN else None
        for ident, tile in self.tiles.items():
            colour = theme.ACCENT if ident == self.highlighted else theme.BORDER
            tile.setStyleSheet(f"border: 3px solid {colour};")

    def close_watch(self) -> None:
        self.timer.stop()
        if self.watch is not None:
            self.watch.__exit__()
            self.watch = None
            self.wiz.camera_watch = None

    def validatePage(self) -> bool:
        if not self.isComplete():
            return False
        self.close_watch()
        return True

    def cleanupPage(self) -> None:
        self.close_watch()

    def isComplete(self) -> bool:
        s = self.wiz.session
        return not self.wiz.busy and (not s.detection.cameras or not s.unnamed_cameras())


# -- 4. udev rules ---------------------------------------------------------------------------------------------
class UdevPage(_Page):
    def __init__(self, wizard):
        super().__init__(wizard, "Fixed device names (udev)",
                         "Rules keyed on each adapter's and camera's USB serial number give them names that never "
                         "change (/dev/ttyDXL_*, /dev/CAM_*). Optional: the rig file already uses stable by-id paths.")
        self.rules = QPlainTextEdit()
        self.rules.setReadOnly(True)
        self.lay.addWidget(self.rules, 1)
        row = QHBoxLayout()
        self.path = QLineEdit(str(Path.home() / "99-aloha-workbench.rules"))
        self.write_btn = QPushButton("Write rules file")
        self.write_btn.clicked.connect(self.write)
        row.addWidget(self.path, 1)
        row.addWidget(self.write_btn)
        self.lay.addLayout(row)
        self.command = QLineEdit()
        self.command.setReadOnly(True)
        self.lay.addWidget(QLabel("Install them with (then replug the devices):"))
        self.lay.addWidget(self.command)
        self.check_btn = QPushButton("Check the names exist")
        self.check_btn.clicked.connect(self.check)
        self.lay.addWidget(self.check_btn)
        self.text = ""
        self.finish_layout()

    def initializePage(self) -> None:
        w = self.wiz
        self.text = ""
        self.rules.clear()
        self.command.setText(udev.install_command(self.path.text()))
        virtual = w.operator is not None
        for b in (self.write_btn, self.check_btn, self.path, self.command):
            b.setEnabled(not virtual)
        if virtual:
            _say(self.message, "The virtual rig has no USB devices: no udev rules needed.", "ok")
            return
        cfg = w.proposed_plan().config()
        devices, skipped = udev.devices_for_rig(cfg, w.session.detection.adapters, w.session.detection.cameras)
        try:
            self.text = udev.rules_text(devices)
        except udev.UdevError as exc:
            self.refuse(f"{exc} (you can go on: the rig file keeps its by-id paths)")
            self.write_btn.setEnabled(False)
            return
        self.rules.setPlainText(self.text + "".join(f"# skipped {s}\n" for s in skipped))
        _say(self.message, "Write the rules file, run the command as root, replug, then Check.")

    def write(self) -> None:
        try:
            Path(self.path.text()).write_text(self.text)
        except OSError as exc:
            self.refuse(f"Could not write {self.path.text()}: {exc}")
            return
        self.command.setText(udev.install_command(self.path.text()))
        _say(self.message, f"Wrote {self.path.text()}: run the command below, replug the devices, then Check.", "ok")

    def check(self) -> None:
        names = udev.expected_names(self.wiz.proposed_plan().config())
        missing = udev.missing_names(names)
        if missing:
            _say(self.message, f"Missing: {', '.join(missing)}: install the rules (command above), replug the "
                               f"devices, then check again", "warn")
        else:
            _say(self.message, "Every name exists: " + ", ".join(n.path for n in names), "ok")


# -- 5. gripper calibration ------------------------------------------------------------------------------------
class GripperPage(_Page):
    def __init__(self, wizard):
        super().__init__(wizard, "Measure the grippers",
                         "Leaders: press Measure, then squeeze the gripper fully and release it fully, twice. "
                         "Followers: the gripper closes and opens slowly (current-limited, through the safety "
                         "layer): keep fingers and objects away.")
        form = QFormLayout()
        self.leader_s = QDoubleSpinBox()
        self.leader_s.setRange(1.0, 30.0)
        self.leader_s.setValue(6.0)
        self.leader_s.setSuffix(" s")
        form.addRow("Leader measurement", self.leader_s)
        self.lay.addLayout(form)
        self.grid = QGridLayout()
        self.lay.addLayout(self.grid)
        self.buttons: dict[str, QPushButton] = {}
        self.results: dict[str, QLabel] = {}
        for i, (role, side) in enumerate((r, s) for r in ("leader", "follower") for s in SIDES):
            arm = f"{role}_{side}"
            btn = QPushButton("Measure (squeeze / release)" if role == "leader" else "Close and open slowly")
            btn.clicked.connect(lambda _=False, r=role, s=side: self.measure(r, s))
            res = QLabel("not measured")
            res.setWordWrap(True)
            self.grid.addWidget(QLabel(arm), i, 0)
            self.grid.addWidget(btn, i, 1)
            self.grid.addWidget(res, i, 2)
            self.buttons[arm], self.results[arm] = btn, res
        self.reading = QLabel()
        self.lay.addWidget(self.reading)
        self.finish_layout()
        wizard.live.connect(self._on_live)

    def initializePage(self) -> None:
        w = self.wiz
        self._enable(False)
        if w.cal_rig is not None:
            self._enable(True)
            return
        plan = setup.calibration_plan(w.proposed_plan())

        def work(ctx: JobContext):
            from workbench.backends import build_rig

            ctx.progress("Building the calibration rig")
            rig = build_rig(plan.config())
            try:
                rig.connect(progress=ctx.progress)
            except BaseException:
                rig.disconnect()
                raise
            w.cal_rig = rig
            return rig

        def ok(rig):
            for side in SIDES:
                self.buttons[f"leader_{side}"].setVisible(rig.has_leaders)
            self._enable(True)
            _say(self.message, "Measure each gripper.")

        self.run("Connecting the arms for calibration", work, ok,
                 lambda e: self.refuse(f"Could not connect the arms: {e}"))

    def _enable(self, on: bool) -> None:
        for b in self.buttons.values():
            b.setEnabled(on)

    def measure(self, role: str, side: str) -> None:
        w, rig = self.wiz, self.wiz.cal_rig
        arm = f"{role}_{side}"
        seconds = self.leader_s.value()
        w.measurements.pop(arm, None)
        w.gripper = None
        self._enable(False)
        _say(self.results[arm], "measuring…")
        if role == "leader":
            _say(self.message, f"Squeeze the {side} leader gripper fully and release it fully, twice, within "
                               f"{seconds:.0f} s")

            def work(ctx: JobContext):
                return gc.measure_leader(rig, side, duration_s=seconds, done=lambda: ctx.cancelled,
                                         on_sample=lambda q: w.live.emit("gripper", {arm: q}))
        else:
            _say(self.message, f"Closing and opening the {side} follower gripper slowly (keep fingers and "
                               f"objects away)")

            def work(ctx: JobContext):
                return gc.measure_follower(rig, side, should_stop=lambda: ctx.cancelled)

        def ok(m: gc.GripperMeasurement) -> None:
            self._enable(True)
            w.measurements[arm] = m
            _say(self.results[arm], m.describe(), "ok")
            self._combine()

        def failed(exc):
            self._enable(True)
            _say(self.results[arm], "refused", "fail")
            self.refuse(exc)

        self.run(f"Measuring {arm}", work, ok, failed)

    def _combine(self) -> None:
        w = self.wiz
        wanted = [f"{r}_{s}" for r in ("leader", "follower") for s in SIDES
                  if r == "follower" or w.cal_rig.has_leaders]
        todo = [a for a in wanted if a not in w.measurements]
        if todo:
            _say(self.message, f"Still to measure: {', '.join(todo)}")
            self.completeChanged.emit()
            return
        from workbench.rig_setup.rig_file import gripper_of

        try:
            w.gripper = gc.combine(gripper_of(w.proposed_plan()), [w.measurements[a] for a in wanted])
        except gc.CalibrationError as exc:
            self.refuse(exc)
            return
        _say(self.message, "Measured [gripper] constants: " + ", ".join(
            f"{k} {v:+.3f}" for k, v in vars(w.gripper).items() if "joint" in k), "ok")
        self.completeChanged.emit()

    def _on_live(self, kind: str, data: dict) -> None:
        if kind == "gripper":
            self.reading.setText(", ".join(f"{a}: {q:+.3f} rad" for a, q in data.items()))

    def validatePage(self) -> bool:
        """Next releases the calibration rig first (off the GUI thread), so the teleop check can open the ports."""
        w = self.wiz
        if not self.isComplete():
            return False
        rig = w.cal_rig
        if rig is None:
            return True
        self._enable(False)

        def ok(_):
            w.cal_rig = None
            w.next()

        self.run("Releasing the arms", lambda ctx: rig.disconnect(), ok)
        return False

    def isComplete(self) -> bool:
        return self.wiz.gripper is not None and not self.wiz.busy


# -- 6. save and a teleop check ----------------------------------------------------------------------------------
class SavePage(_Page):
    def __init__(self, wizard):
        super().__init__(wizard, "Save the rig file, and a teleop check",
                         "Save the rig file, then run a short teleop on it (no squeeze needed): the followers must "
                         "track the leaders.")
        row = QHBoxLayout()
        self.path = QLineEdit(str(Path.home() / "aloha_rig.toml"))
        self.overwrite = QCheckBox("overwrite")
        self.save_btn = QPushButton("Save rig file")
        theme.set_role(self.save_btn, "primary")
        self.save_btn.clicked.connect(self.save)
        row.addWidget(self.path, 1)
        row.addWidget(self.overwrite)
        row.addWidget(self.save_btn)
        self.lay.addLayout(row)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.lay.addWidget(self.text, 1)
        row2 = QHBoxLayout()
        self.check_s = QDoubleSpinBox()
        self.check_s.setRange(1.0, 60.0)
        self.check_s.setValue(3.0)
        self.check_s.setSuffix(" s")
        self.check_btn = QPushButton("Run teleop check")
        self.check_btn.clicked.connect(self.teleop_check)
        row2.addWidget(QLabel("Teleop check for"))
        row2.addWidget(self.check_s)
        row2.addWidget(self.check_btn)
        row2.addStretch(1)
        self.lay.addLayout(row2)
        self.verdict = _message()
        self.lay.addWidget(self.verdict)
        self.result: setup.TeleopCheck | None = None
        self._meter: setup.TrackingMeter | None = None
        self._checking = False
        self.finish_layout()

    def initializePage(self) -> None:
        self.plan = self.wiz.proposed_plan().with_gripper(self.wiz.gripper)
        self.text.setPlainText(self.plan.to_toml())
        self._update()

    def _update(self) -> None:
        ctl = self.wiz.ctl
        free = not ctl.connected and not ctl.connecting
        self.check_btn.setEnabled(self.wiz.saved_path is not None and free and not self._checking)
        if self.wiz.saved_path is not None and not free and not self._checking:
            _say(self.verdict, "Disconnect the rig now connected (Rig tab) to run the teleop check.", "warn")

    def save(self) -> None:
        try:
            path = setup.save(self.plan, self.path.text(), overwrite=self.overwrite.isChecked())
        except (OSError, ValueError) as exc:
            self.refuse(f"{exc}" if isinstance(exc, FileExistsError) else f"Could not save: {exc}")
            return
        self.wiz.saved_path = str(path)
        _say(self.message, f"Wrote {path}." + ("" if self.wiz.operator is not None else
                                               f" Later: `workbench rig check {path}`."), "ok")
        self._update()
        self.completeChanged.emit()

    def teleop_check(self) -> None:
        """Through the app's RigController: select the new rig, connect, teleop (no squeeze), stop, judge."""
        w, ctl = self.wiz, self.wiz.ctl
        self._checking = True
        self.result = None
        self._update()
        if w.select_rig is not None:
            w.select_rig(w.saved_path)
        _say(self.verdict, "Connecting the new rig…")
        ctl.connectionChanged.connect(self._on_connection)
        ctl.error.connect(self._on_error)
        job = ctl.connect_rig(w.saved_path)
        if job is None:
            self._end_check()
            self.refuse_check("Could not start connecting: see the message above.")
            return
        self.progress.track(job)

    def _on_connection(self, up: bool) -> None:
        ctl = self.wiz.ctl
        ctl.connectionChanged.disconnect(self._on_connection)
        if not up:
            self._end_check()
            return
        ctl.teleopState.connect(self._on_state)
        ctl.teleopFinished.connect(self._on_finished)
        _say(self.verdict, "Teleop starting (start pose, then tracking)…")
        if not ctl.start_teleop(wait_for_squeeze=False):
            self._end_check()

    def _on_state(self, state: str) -> None:
        ctl = self.wiz.ctl
        if state == "running" and self._meter is None and ctl.session is not None:
            self._meter = setup.TrackingMeter()
            ctl.session.add_tick_listener(self._meter)
            _say(self.verdict, f"Teleoperating for {self.check_s.value():.0f} s…")
            QTimer.singleShot(int(self.check_s.value() * 1000), ctl.stop_teleop)

    def _on_finished(self, _summary) -> None:
        ctl, meter = self.wiz.ctl, self._meter
        if meter is not None and ctl.session is not None:
            ctl.session.remove_tick_listener(meter)
        self._end_check()
        try:
            self.result = meter.result() if meter is not None else None
        except RuntimeError as exc:
            self.refuse_check(str(exc))
            return
        if self.result is None:
            self.refuse_check("The teleop stopped before it ran (see the message above).")
            return
        _say(self.verdict, self.result.describe() + ("" if self.result.ok else
             ": check the gripper and arm settings, then calibrate again"), "ok" if self.result.ok else "fail")

    def _on_error(self, exc, context: str) -> None:
        if self._checking:
            self.refuse_check(f"{context}: {exc}")

    def refuse_check(self, text: str) -> None:
        _say(self.verdict, text, "fail")

    def _end_check(self) -> None:
        ctl = self.wiz.ctl
        for sig, slot in ((ctl.teleopState, self._on_state), (ctl.teleopFinished, self._on_finished),
                          (ctl.error, self._on_error), (ctl.connectionChanged, self._on_connection)):
            with contextlib.suppress(TypeError):
                sig.disconnect(slot)
        self._meter = None
        self._checking = False
        self._update()

    def isComplete(self) -> bool:
        return self.wiz.saved_path is not None and not self._checking


class RigWizard(QWizard):
    """Set up a new rig: detect -> left / right -> cameras -> udev -> grippers -> save + teleop check."""

    live = pyqtSignal(str, object)  # from a job's thread: ("arms" | "cameras" | "gripper", {key: value}) shown live

    def __init__(self, ctl, parent=None, select_rig: Callable[[str], None] | None = None):
        super().__init__(parent)
        self.setWindowTitle("Set up a new rig")
        self.setOption(QWizard.WizardOption.NoBackButtonOnStartPage, True)
        self.ctl = ctl
        self.select_rig = select_rig  # the Rig tab's select(): the new file joins its list
        self.seconds = 10.0  # how long a move / wave step watches
        self.detection = None
        self.session: setup.SetupSession | None = None
        self.operator: setup.EmulatedOperator | None = None
        self.camera_watch = None
        self.cal_rig = None
        self.measurements: dict[str, gc.GripperMeasurement] = {}
        self.gripper = None
        self.saved_path: str | None = None
        self.job = None
        self.pages = {
            "detect": DetectPage(self), "arms": ArmsPage(self), "cameras": CamerasPage(self),
            "udev": UdevPage(self), "gripper": GripperPage(self), "save": SavePage(self)}
        for p in self.pages.values():
            self.addPage(p)
        self.resize(820, 640)

    @property
    def busy(self) -> bool:
        return self.job is not None

    def run(self, page: _Page, title: str, fn, on_ok, on_error=None):
        """One job at a time: its progress on the page, its result or refusal shown by the page."""
        job = self.ctl.jobs.submit(title, fn, cancellable=True)
        self.job = job
        page.progress.track(job)

        def ended():
            if self.job is job:
                self.job = None
            page.completeChanged.emit()

        job.succeeded.connect(lambda r: (ended(), on_ok(r)))
        job.failed.connect(lambda e: (ended(), (on_error or page.refuse)(e)))
        job.cancelled.connect(ended)
        page.completeChanged.emit()
        return job

    def forget_detection(self) -> None:
        """A new detection: everything measured on the old one is void."""
        self.detection, self.session, self.measurements, self.gripper = None, None, {}, None
        self._release(wait_for=None)

    def proposed_plan(self):
        named = set(self.session.camera_names.values())
        extra = tuple(c for c in self.operator.camera_plans() if c.name not in named) if self.operator else ()
        return self.session.plan(extra_cameras=extra)

    def _release(self, wait_for) -> None:
        """Close what the wizard opened (cameras, the calibration rig, the emulated chains) on a worker, after
        `wait_for` (a cancelled job) ends: the safety layer holds the followers, then they are let go."""
        watch, rig, operator = self.camera_watch, self.cal_rig, self.operator
        self.camera_watch = self.cal_rig = self.operator = None
        if watch is None and rig is None and operator is None:
            return

        def work(ctx: JobContext):
            if wait_for is not None:
                while not wait_for.done:
                    ctx.progress("Waiting for the step to stop")
                    time.sleep(0.05)
            if watch is not None:
                watch.__exit__()
            if rig is not None:
                rig.disconnect()
            if operator is not None:
                operator.stop()

        self.release_job = self.ctl.jobs.submit("Closing the set-up devices", work)

    def done(self, result: int) -> None:
        """Finish or Cancel: stop the running step (a follower measurement stops and holds), then release."""
        job = self.job
        if job is not None:
            job.cancel()
        self.pages["cameras"].timer.stop()
        self._release(wait_for=job)
        if result and self.select_rig is not None and self.saved_path is not None and not self.ctl.connected:
            self.select_rig(self.saved_path)
        super().done(result)
