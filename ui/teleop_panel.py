"""Teleop tab: start (the ALOHA start-up ceremony, step by step), stop, live loop figures, e-stop state."""
from __future__ import annotations

import math
import time

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import (QCheckBox, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout,
                             QWidget)

from ui import theme
from ui.widgets import BigFigure, RateMeter, rate_status

CEREMONY = [
    ("Rebooting follower grippers", "Reboot follower grippers"),
    ("Torque on all arms", "Torque on all arms"),
    ("Moving all arms to the start pose", "Move all arms to the start pose"),
    ("Moving grippers", "Grippers: leaders half open, followers closed"),
    ("Squeeze both leader grippers to start", "Squeeze both leader grippers to start"),
    ("Teleoperating", "Teleoperating"),
]


class TeleopPanel(QWidget):
    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.ctl = controller
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 12, 12, 12)
        lay.setSpacing(10)

        box = QGroupBox("Teleoperation")
        b = QVBoxLayout(box)
        self.headline = QLabel("Idle")
        self.headline.setWordWrap(True)
        self.headline.setStyleSheet("font-size: 20px; font-weight: 700;")
        b.addWidget(self.headline)
        row = QHBoxLayout()
        self.start_btn = QPushButton("▶  Start teleop")
        theme.set_role(self.start_btn, "go")
        self.stop_btn = QPushButton("■  Stop")
        for w in (self.start_btn, self.stop_btn):
            w.setMinimumHeight(40)
        row.addWidget(self.start_btn, 2)
        row.addWidget(self.stop_btn, 1)
        b.addLayout(row)
        self.squeeze = QCheckBox("Start on leader-gripper squeeze")
        self.squeeze.setToolTip("Wait until both leader grippers are squeezed before the followers copy the leaders "
                                "(the ALOHA start-up). Off: teleop starts right after the start pose.")
        self.squeeze.setChecked(True)
        b.addWidget(self.squeeze)
        lay.addWidget(box)

        steps = QGroupBox("Start-up")
        s = QVBoxLayout(steps)
        s.setSpacing(4)
        self.step_labels: list[QLabel] = []
        for _key, text in CEREMONY:
            lab = QLabel()
            self.step_labels.append(lab)
            s.addWidget(lab)
        self.step_note = QLabel("")
        self.step_note.setProperty("class", "muted")
        self.step_note.setWordWrap(True)
        s.addWidget(self.step_note)
        lay.addWidget(steps)

        live = QGroupBox("Control loop")
        g = QGridLayout(live)
        g.setHorizontalSpacing(18)
        self.rate = BigFigure("Loop rate", "Hz")
        self.period = BigFigure("Worst period", "ms")
        self.ticks = BigFigure("Ticks")
        self.overruns = BigFigure("Overruns")
        g.addWidget(self.rate, 0, 0)
        g.addWidget(self.period, 0, 1)
        g.addWidget(self.ticks, 1, 0)
        g.addWidget(self.overruns, 1, 1)
        self.summary = QLabel("")
        self.summary.setProperty("class", "muted")
        self.summary.setWordWrap(True)
        g.addWidget(self.summary, 2, 0, 1, 2)
        lay.addWidget(live)

        es = QGroupBox("Emergency stop")
        e = QHBoxLayout(es)
        self.estop_state = QLabel()
        self.estop_state.setWordWrap(True)
        self.release_btn = QPushButton("Release e-stop")
        e.addWidget(self.estop_state, 1)
        e.addWidget(self.release_btn)
        lay.addWidget(es)
        lay.addStretch(1)

        self.meter = RateMeter()
        self._last_figures = 0.0
        self._pmax = 0.0
        self._current_step = -1
        self.start_btn.clicked.connect(self.start)
        self.stop_btn.clicked.connect(self.ctl.stop_teleop)
        self.release_btn.clicked.connect(self.ctl.release_estop)
        controller.teleopStep.connect(self.on_step)
        controller.teleopState.connect(self.on_state)
        controller.teleopFinished.connect(self.on_finished)
        controller.estopChanged.connect(self.on_estop)
        controller.connectionChanged.connect(lambda _: self.refresh())
        self._paint_steps()
        self.on_estop(False)
        self.refresh()

    # -- actions -------------------------------------------------------------------------------------------------
    def start(self) -> bool:
        self.meter.reset()
        self._current_step = -1
        self._paint_steps()
        self.summary.setText("")
        self.step_note.setText("")
        ok = self.ctl.start_teleop(wait_for_squeeze=self.squeeze.isChecked())
        self.refresh()
        return ok

    # -- signals -------------------------------------------------------------------------------------------------
    def on_step(self, msg: str) -> None:
        for i, (key, _t) in enumerate(CEREMONY):
            if msg.startswith(key):
                self._current_step = i
                break
        else:
            self.step_note.setText(msg)
        if msg.startswith("Squeeze"):
            self.headline.setText(f"<span style='color:{theme.WARN}'>Squeeze both leader grippers to start</span>")
        self._paint_steps()

    def on_state(self, state: str) -> None:
        text = {"idle": "Idle", "starting": "Starting up…", "waiting_for_squeeze":
                f"<span style='color:{theme.WARN}'>Squeeze both leader grippers to start</span>",
                "aligning": "Re-aligning followers to the leaders (slowly)…",
                "running": f"<span style='color:{theme.OK}'>Teleoperating</span>", "stopping": "Stopping…"}
        if not self.ctl.estopped:
            self.headline.setText(text.get(state, state))
        if state == "running":
            self._current_step = len(CEREMONY) - 1
            self._paint_steps(done_all=True)
        self.refresh()

    def on_finished(self, summary) -> None:
        if summary is not None and summary.ticks:
            self.summary.setText(f"Last run: {summary.ticks} ticks at {summary.rate_hz:.2f} Hz · period p99 "
                                 f"{summary.period_p99_ms:.2f} ms · max {summary.period_max_ms:.2f} ms · "
                                 f"overruns {summary.overruns}")
        self._current_step = -1  # nothing is running: no step of the sequence is current (it kept "Teleoperating")
        self._paint_steps()
        if not self.ctl.estopped:
            self.headline.setText("Idle")
        self.refresh()

    def on_estop(self, engaged: bool) -> None:
        if engaged:
            action = self.ctl.config.safety.estop_action if self.ctl.config else "hold"
            what = "followers hold their pose" if action == "hold" else "followers torqued off"
            self.estop_state.setText(f"<span style='color:{theme.FAIL}; font-size:16px; font-weight:800'>"
                                     f"E-STOP ENGAGED</span><br>Motion refused; {what}. Release when the workspace is clear.")
            self.headline.setText(f"<span style='color:{theme.FAIL}'>E-stop engaged</span>")
        else:
            self.estop_state.setText(f"<span style='color:{theme.OK}; font-weight:700'>Ready</span> · "
                                     f"<span style='color:{theme.MUTED}'>press Esc or the red button in the toolbar "
                                     f"to stop the arms at any time</span>")
            if not self.ctl.teleop_running:
                self.headline.setText("Idle")
            if self.step_note.text().startswith("E-stop"):
                self.step_note.setText("E-stop released: the followers hold where they are; start again when ready")
        self.refresh()

    def refresh(self) -> None:
        running = self.ctl.teleop_running
        self.start_btn.setEnabled(self.ctl.connected and not running and not self.ctl.estopped)
        self.stop_btn.setEnabled(running)
        self.squeeze.setEnabled(not running)
        self.release_btn.setEnabled(self.ctl.estopped)

    def _paint_steps(self, done_all: bool = False) -> None:
        for i, (lab, (_k, text)) in enumerate(zip(self.step_labels, CEREMONY)):
            if done_all or i < self._current_step:
                lab.setText(f"<span style='color:{theme.OK}'>✔</span>&nbsp;&nbsp;{text}")
            elif i == self._current_step:
                lab.setText(f"<span style='color:{theme.WARN}'>▶</span>&nbsp;&nbsp;<b>{text}</b>")
            else:
                lab.setText(f"<span style='color:{theme.MUTED}'>○&nbsp;&nbsp;{text}</span>")

    # -- live (poll timer) -----------------------------------------------------------------------------------------
    def update_live(self, tick, max_period: float, overruns: int) -> None:
        if tick is None:
            return
        self.meter.add(tick.index, tick.t)
        if math.isfinite(max_period):
            self._pmax = max(self._pmax, max_period)
        now = time.monotonic()
        if now - self._last_figures < 0.2:  # big numbers: 5 updates a second is plenty to read
            return
        self._last_figures = now
        max_period, self._pmax = self._pmax, 0.0
        max_period = max_period if max_period > 0 else float("nan")
        nominal = self.ctl.config.control_hz if self.ctl.config else 50.0
        hz = self.meter.rate()
        self.rate.set("—" if not math.isfinite(hz) else f"{hz:5.1f}", rate_status(hz, nominal))
        if math.isfinite(max_period):
            ms = max_period * 1e3
            self.period.set(f"{ms:5.1f}", "fail" if ms > 2 * 1e3 / nominal else "warn" if ms > 1.5e3 / nominal else "ok")
        self.ticks.set(f"{tick.index + 1}")
        self.overruns.set(f"{overruns}", "warn" if overruns else "ok")
