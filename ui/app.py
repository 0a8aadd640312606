"""The desktop app: main window (Rig / Teleop / Record / Episodes), toolbar e-stop, live view, QSettings, style.

`main(rig)` is what `workbench` / `workbench gui` call. Without a display it says how to get one.
"""
from __future__ import annotations

import logging
import os
import sys
import time

from PyQt6.QtCore import QEvent, QObject, QSettings, Qt, QTimer
from PyQt6.QtGui import QKeySequence, QShortcut
from PyQt6.QtWidgets import (QApplication, QFrame, QLabel, QMainWindow, QPushButton, QSizePolicy,
                             QSplitter, QTabWidget, QToolBar, QVBoxLayout, QWidget)

from ui import theme
from ui.camera_grid import CameraGrid
from ui.controller import RigController
from ui.errors import ErrorBanner
from ui.strip_charts import LiveJointCharts
from ui.rig_panel import RigPanel, StatusPill
from ui.tasks import JobRunner
from ui.teleop_panel import TeleopPanel
from ui.widgets import FitScrollArea

log = logging.getLogger(__name__)

DEFAULT_RIG = "sim-transfer-cube"
POLL_HZ = 20.0


class _EstopKeyFilter(QObject):
    """Esc anywhere in the application engages the e-stop (an event filter on the QApplication, so it works
    whatever widget has focus, including line edits and the table; pedals that type Esc work too)."""

    def __init__(self, window: "MainWindow"):
        super().__init__(window)
        self.window = window
        self._last = 0.0

    def eventFilter(self, obj, ev) -> bool:  # noqa: N802 - Qt name
        if ev.type() == QEvent.Type.KeyPress and ev.key() == Qt.Key.Key_Escape and not ev.isAutoRepeat():
            # Esc that closes a dialog, a menu or a popup belongs to it, not to the e-stop
            active = QApplication.activeWindow()
            if QApplication.activeModalWidget() is not None or QApplication.activePopupWidget() is not None or \
                    (active is not None and active is not self.window):  # a dialog's own Esc (e.g. the Keys list)
                return False
            # one press reaches this filter once per widget it propagates through: act on the first only
            now = time.monotonic()
            if now - self._last > 0.2:
                self._last = now
                self.window.estop()
        return False


class LivePanel(QWidget):
    """Cameras on top, joint plots below: visible next to the Rig, Teleop and Record tabs."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 12, 12, 12)
        split = QSplitter(Qt.Orientation.Vertical)
        # rates chosen with bench/bench_gui_teleop.py: previews 10 fps, charts redrawn 10 times a second (sampled
        # at the 20 Hz poll) keep the GUI's share of the CPU and of the GIL small next to the 50 Hz loop
        self.cameras = CameraGrid(preview_hz=10.0)
        self.plots = LiveJointCharts(redraw_hz=10.0)
        split.addWidget(self.cameras)
        split.addWidget(self.plots)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setChildrenCollapsible(False)
        self.plots.setMinimumHeight(220)
        lay.addWidget(split)


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, realtime_sim: bool = True, poll_hz: float = POLL_HZ,
                 dataset_dir: str | None = None):
        super().__init__()
        # The control loop shares the GIL with this thread: a short switch interval bounds how long Python code
        # here (plots, previews) can delay the loop waking up (CPython's default is 5 ms, a quarter of a tick).
        sys.setswitchinterval(0.0001)
        self.settings = settings or QSettings("aloha-workbench", "workbench")
        self.setWindowTitle("ALOHA Workbench")
        self.jobs = JobRunner(self)
        self.ctl = RigController(self.jobs, realtime_sim=realtime_sim, parent=self)

        # toolbar: title, rig + state, e-stop
        tb = QToolBar("Main")
        tb.setMovable(False)
        tb.setObjectName("main_toolbar")
        self.addToolBar(tb)
        title = QLabel("ALOHA Workbench")
        title.setStyleSheet("font-size: 16px; font-weight: 800; padding: 0 10px 0 4px;")
        tb.addWidget(title)
        self.rig_pill = StatusPill("No rig", "idle")
        self.teleop_pill = StatusPill("Teleop idle", "idle")
        self.rec_pill = StatusPill("Not recording", "idle")
        for w in (self.rig_pill, self.teleop_pill, self.rec_pill):
            w.setStyleSheet(w.styleSheet() + "padding: 0 10px;")
            tb.addWidget(w)
        spacer = QWidget()
        spacer.setStyleSheet("background: transparent;")
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        tb.addWidget(spacer)
        self.release_btn = QPushButton("Release e-stop")
        self.release_btn.clicked.connect(self.ctl.release_estop)
        self.release_btn.hide()
        self.release_action = tb.addWidget(self.release_btn)
        self.release_action.setVisible(False)
        self.keys_btn = QPushButton("Keys  F1")
        self.keys_btn.setToolTip("Every key the app answers to")
        self.keys_btn.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.keys_btn.clicked.connect(self.show_keys)
        tb.addWidget(self.keys_btn)
        QShortcut(QKeySequence("F1"), self, self.show_keys)
        self.estop_btn = QPushButton("■  E-STOP   Esc")
        self.estop_btn.setObjectName("estop")
        self.estop_btn.setToolTip("Emergency stop: followers hold (or torque off, per the rig's safety.estop_action); "
                                  "Esc works from anywhere in the app")
        self.estop_btn.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.estop_btn.clicked.connect(self.estop)
        tb.addWidget(self.estop_btn)

        # central: banner over [tabs | live view]
        central = QWidget()
        v = QVBoxLayout(central)
        v.setContentsMargins(8, 8, 8, 0)
        v.setSpacing(6)
        self.banner = ErrorBanner()
        self.banner.attach(central)  # an overlay: a banner never changes the window's size or moves controls
        self.split = QSplitter(Qt.Orientation.Horizontal)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.tabBar().setDrawBase(False)
        self.tabs.setStyleSheet("QTabBar::tab { padding: 9px 13px; }")  # six tabs fit the left column
        self.rig_panel = RigPanel(self.ctl, self.settings)
        self.teleop_panel = TeleopPanel(self.ctl)
        self._pages: dict[QWidget, QWidget] = {}
        self._add_page(self.rig_panel, "Rig")
        self._add_page(self.teleop_panel, "Teleop")
        from ui.record_panel import RecordPanel
        from ui.episodes.panel import EpisodesPanel

        self.record_panel = RecordPanel(self.ctl, self.jobs, self.settings, dataset_dir=dataset_dir)
        self._add_page(self.record_panel, "Record")
        self.episodes_panel = EpisodesPanel(self.ctl, self.jobs, self.settings)
        self._add_page(self.episodes_panel, "Episodes", scroll=False)  # its table and player scroll themselves
        from ui.train_panel import TrainPanel

        self.train_panel = TrainPanel(self.settings)
        self._add_page(self.train_panel, "Train")
        from ui.trials import TrialsPanel

        self.trials_panel = TrialsPanel(self.ctl, self.jobs, self.settings,
                                        record_dataset=self.record_panel.dataset_dir)
        self._add_page(self.trials_panel, "Trials")
        self.live = LivePanel()
        self.split.addWidget(self.tabs)
        self.split.addWidget(self.live)
        self.split.setStretchFactor(0, 0)
        self.split.setStretchFactor(1, 1)
        self.split.setSizes([470, 800])
        self.split.setChildrenCollapsible(False)
        self.tabs.setMinimumWidth(440)
        v.addWidget(self.split, 1)
        self.setCentralWidget(central)
        self.status_label = QLabel("")
        self.status_label.setMinimumWidth(1)  # long lines are cut, never widen the window
        self.statusBar().addWidget(self.status_label, 1)
        self.shortcut_hint = QLabel("Esc e-stop")
        self.statusBar().addPermanentWidget(self.shortcut_hint)

        # wiring
        self._esc = _EstopKeyFilter(self)
        QApplication.instance().installEventFilter(self._esc)
        self.tabs.currentChanged.connect(self._tab_changed)
        self.ctl.error.connect(self.show_error)
        self.ctl.connectionChanged.connect(self._on_connection)
        self.ctl.configChanged.connect(lambda cfg: self.rig_pill.set(f"{cfg.name} · not connected", "idle"))
        self.ctl.teleopState.connect(self._on_teleop_state)
        self.ctl.estopChanged.connect(self._on_estop)
        self.ctl.teleopStep.connect(self.set_status)
        self.ctl.connectProgress.connect(self.set_status)
        self.record_panel.recordingChanged.connect(self._on_recording)
        self.record_panel.datasetChanged.connect(self.episodes_panel.set_dataset)
        if not self.train_panel.dataset.text().strip():  # a first run trains on the dataset being recorded
            self.train_panel.dataset.setText(self.record_panel.dataset_dir())
        self.record_panel.datasetChanged.connect(self.train_panel.dataset.setText)  # a running job keeps its own
        self.episodes_panel.set_dataset(self.record_panel.dataset_dir())
        self.jobs.jobStarted.connect(self._on_job_started)
        self.banner.dismissed.connect(lambda: self.status_label.setText(""))  # no stale banner title below
        self.ctl.teleopFinished.connect(self._on_mode_finished)
        self.ctl.sessionEvent.connect(self._on_session_event)
        self.train_panel.policy_chosen.connect(self._use_policy)
        self.trials_panel.predictionChanged.connect(self.live.plots.set_prediction)
        self.ctl.sessionEvent.connect(self._legend_for_mode)
        self.trials_panel.openEpisode.connect(self.open_episode)

        self._timer = QTimer(self)
        self._timer.setInterval(int(1000 / poll_hz))
        self._timer.timeout.connect(self.poll)
        self._timer.start()
        self._last_tick = None
        self._last_stats = 0.0
        self.polls = 0
        geo = self.settings.value("window/geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        else:
            self.resize(1280, 800)

    def showEvent(self, ev) -> None:  # noqa: N802
        super().showEvent(ev)
        if not getattr(self, "_sized", False):
            self._sized = True
            w = self.split.width() or self.width()
            left = max(self.tabs.minimumWidth(), min(520, int(w * 0.38)))
            self.split.setSizes([left, max(300, w - left)])

    # -- actions ------------------------------------------------------------------------------------------------
    def estop(self) -> None:
        self.ctl.estop("operator")

    def show_keys(self) -> None:
        """The one key list (ui.record_panel.key_help, also in the README), as a non-modal window."""
        from PyQt6.QtWidgets import QMessageBox

        from ui.record_panel import key_help

        rows = "".join(f"<tr><td style='padding:2px 14px 2px 0'><b>{k}</b></td><td>{t}</td></tr>" for k, t in key_help())
        rows += "<tr><td style='padding:2px 14px 2px 0'><b>Ctrl+Z / Ctrl+Shift+Z</b></td><td>undo / redo label, " \
                "note and segment edits (Episodes tab)</td></tr>" \
                "<tr><td style='padding:2px 14px 2px 0'><b>N / T / C</b></td><td>Trials tab: next trial / take " \
                "over or hand back / type a language command</td></tr><tr><td><b>F1</b></td><td>this list</td></tr>"
        box = QMessageBox(QMessageBox.Icon.NoIcon, "Keys", f"<p>Single keys never fire while a text field has "
                          f"focus.</p><table>{rows}</table>", QMessageBox.StandardButton.Close, self)
        box.setModal(False)
        box.show()
        self.keys_box = box

    def show_error(self, exc, context: str = "") -> None:
        r = self.banner.show_error(exc, context)
        self.status_label.setText(r.title)

    def select_rig(self, ref: str) -> None:
        self.rig_panel.select(ref)

    def _legend_for_mode(self, e) -> None:
        """The live charts' thin line: the leader's reading in teleop / recording, the command in a trial (the
        policy's, or the leaders' during a takeover), the recorded action in a replay."""
        from workbench import events as ev

        if isinstance(e, ev.ModeChanged) and e.mode is not ev.Mode.IDLE:
            self.live.plots.set_command_label({ev.Mode.TRIAL: "command (policy / takeover)",
                                               ev.Mode.REPLAY: "replayed action"}.get(e.mode, "leader"))

    def open_episode(self, folder: str, name: str) -> None:
        """An episode in the Episodes player (a trial from the Trials tab)."""
        if self.episodes_panel.open_episode(folder, name):
            self.show_tab(self.episodes_panel)

    def _use_policy(self, folder: str) -> None:
        """Train → "Use in trials": the Trials tab with that policy."""
        self.trials_panel.set_policy(folder)
        self.show_tab(self.trials_panel)

    # -- signal handlers ------------------------------------------------------------------------------------------
    def _on_connection(self, up: bool) -> None:
        cfg = self.ctl.config
        if up and cfg is not None:
            self.rig_pill.set(f"{cfg.name} · connected", "ok")
            self.live.cameras.set_cameras([c.name for c in cfg.cameras], {c.name: c.fps for c in cfg.cameras})
            if cfg.backend == "sim":
                self.live.cameras.clear("previews start with teleop (the simulator renders in its loop)")
            self.live.plots.reset()
            self.status_label.setText(f"Connected to {cfg.name}")
        else:
            self.rig_pill.set(f"{cfg.name if cfg else 'No rig'} · not connected", "idle")
            self.live.cameras.set_cameras([])
            self.live.plots.reset()  # no joints of a rig that is gone
        self._update_title()

    def _on_teleop_state(self, state: str) -> None:
        mode = self.ctl.mode.value if self.ctl.teleop_running else "idle"
        running = {"teleop": "Teleoperating", "recording": "Recording", "replay": "Replaying", "trial": "Trial"}
        text = {"idle": "Arms idle", "starting": "Starting up", "waiting_for_squeeze": "Waiting for squeeze",
                "aligning": "Aligning to leaders", "countdown": "Countdown", "reset": "Reset the scene",
                "running": running.get(mode, "Running"), "stopping": "Stopping"}.get(state, state)
        status = {"idle": "idle", "running": "ok"}.get(state, "warn")
        if self.ctl.estopped:
            self.teleop_pill.set("E-STOP", "fail")
        else:
            self.teleop_pill.set(text, status)
        if state == "starting":
            self.live.plots.reset()
            self.teleop_panel.meter.reset()

    def _on_estop(self, engaged: bool) -> None:
        self.estop_btn.setProperty("engaged", "true" if engaged else "false")
        self.estop_btn.style().unpolish(self.estop_btn)
        self.estop_btn.style().polish(self.estop_btn)
        self.estop_btn.setText("■  E-STOP ENGAGED" if engaged else "■  E-STOP   Esc")
        self.release_action.setVisible(engaged)
        self.release_btn.setVisible(engaged)
        if engaged:
            self.teleop_pill.set("E-STOP", "fail")
            self.banner.show_error(_estop_readable(self.ctl))
        else:
            self._on_teleop_state(self.ctl.state)
            if self.banner.current is not None and self.banner.current.title.startswith("E-stop"):
                self.banner.dismiss()

    def _on_job_started(self, job) -> None:
        text = job.title + "…"
        self.status_label.setText(text)
        # the status bar says what runs, not what ran: cleared when the job ends (unless something newer is shown)
        job.finished.connect(lambda: self.status_label.setText("") if self.status_label.text() == text else None)

    def _on_session_event(self, e) -> None:
        from workbench import events as ev

        if isinstance(e, ev.EpisodeStarted):
            self.set_status(f"Recording {e.name} ({e.number}/{e.total})")
        elif isinstance(e, ev.EpisodeSaved):
            self.set_status(f"Saved {e.episode.name}: {e.episode.steps} steps, quality {e.episode.quality.status}")
        elif isinstance(e, ev.TrialStarted):
            self.set_status(f"Trial {e.index + 1}/{e.total}: {e.name}")
        elif isinstance(e, ev.TrialEnded):
            self.set_status(f"Trial {e.index + 1} ({e.name}): {e.outcome}, {e.ended_by}")

    def _on_mode_finished(self, _summary) -> None:
        if self.ctl.config is not None and self.ctl.config.backend == "sim":
            self.live.cameras.pause("paused: the simulator renders while the arms are driven")

    def _on_recording(self, text: str, status: str) -> None:
        self.rec_pill.set(text, status)

    def set_status(self, message: str) -> None:
        """One line in the status bar: the first line of a message (session reports span many; the Record tab
        shows them in full). The full text is the tooltip."""
        self.status_label.setText(message.split("\n", 1)[0])
        self.status_label.setToolTip(message)

    def _add_page(self, panel: QWidget, title: str, scroll: bool = True) -> None:
        """A tab; form-like panels scroll vertically so the window fits a laptop screen (1366x768)."""
        page = panel
        if scroll:
            page = FitScrollArea(panel)
            page.setFrameShape(QFrame.Shape.NoFrame)
        self._pages[panel] = page
        self.tabs.addTab(page, title)

    def show_tab(self, panel: QWidget) -> None:
        self.tabs.setCurrentWidget(self._pages[panel])

    def _tab_changed(self, i: int) -> None:
        on_episodes = self.tabs.widget(i) is self._pages.get(self.episodes_panel)
        self.live.setVisible(not on_episodes)
        if on_episodes:
            self.episodes_panel.refresh()
        if self.tabs.widget(i) is self._pages.get(self.record_panel):
            self.record_panel._refresh_goal()  # labels and deletes made in Episodes count at once

    def _update_title(self) -> None:
        cfg = self.ctl.config
        self.setWindowTitle(f"ALOHA Workbench — {cfg.name}" if cfg else "ALOHA Workbench")

    # -- the poll timer (GUI thread, ~20 Hz) ----------------------------------------------------------------------
    def poll(self) -> None:
        self.polls += 1
        ctl = self.ctl
        tick = ctl.latest_tick()
        if tick is not None and tick is not self._last_tick and ctl.teleop_running:
            self._last_tick = tick
            if self.live.isVisible():
                self.live.cameras.feed(tick.frames)
                self.live.plots.push(tick)
            loop = ctl.loop
            self.teleop_panel.update_live(tick, ctl.take_max_period(), loop.timing.overruns if loop else 0)
            self.record_panel.update_live(tick)
        elif ctl.connected and not ctl.teleop_running and ctl.config is not None and ctl.config.backend != "sim" \
                and self.live.isVisible():
            self.live.cameras.feed(self._idle_frames())
        self.record_panel.poll()
        self.trials_panel.poll()
        now = time.monotonic()
        live_frames = ctl.teleop_running or (ctl.config is not None and ctl.config.backend != "sim")
        if ctl.connected and live_frames and now - self._last_stats > 0.5:
            self._last_stats = now
            try:
                self.live.cameras.set_stats(ctl.camera_stats())
            except RuntimeError:  # a stats deque changed under us (another thread appended); next time
                pass

    def _idle_frames(self) -> dict:
        out = {}
        rig = self.ctl.rig
        if rig is None:
            return out
        for name, cam in rig.cameras.items():
            try:
                out[name] = cam.latest()
            except Exception:  # noqa: BLE001 - a stalled camera shows in its tile's fps
                pass
        return out

    # -- closing ------------------------------------------------------------------------------------------------
    def closeEvent(self, ev) -> None:  # noqa: N802
        from ui import dialogs

        torque_off = False
        if self.record_panel.session is not None and not self.ctl.estopped:
            choice = dialogs.ask(self, "Quit while recording",
                                 f"{self.record_panel.episode_name or 'An episode'} is being recorded.",
                                 [("partial", "Save as partial episode"), ("discard", "Discard it"),
                                  ("keep", "Keep recording")], "keep")
            if choice in (None, "keep"):
                ev.ignore()
                return
            self.record_panel.end_session(discard=choice == "discard")
        else:
            choice = dialogs.before_arms_stop(self, self.ctl, "Quit")
            if choice in (None, "cancel"):
                ev.ignore()
                return
            torque_off = choice == "torque_off"
        self.settings.setValue("window/geometry", self.saveGeometry())
        self._timer.stop()
        self.train_panel.shutdown()  # a training process checkpoints, then stops (Resume continues it)
        if self.ctl.connected:  # parking takes seconds and blocks this thread: say so before it starts
            what = ("Turning torque off" if torque_off else
                    "Parking the arms (slowly to the sleep pose, then torque off)") + " before quitting…"
            self.statusBar().showMessage(what)
            self.quit_message = what
            self.setCursor(Qt.CursorShape.WaitCursor)
            QApplication.processEvents()
        try:
            self.ctl.shutdown(torque_off_here=torque_off)
        except Exception as exc:  # noqa: BLE001 - the window closes whatever happens; the session held the arms
            log.error("closing the rig: %s", exc)
        self.trials_panel.shutdown()  # the trials ended with the session: close the policy and its server process
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self._esc)
        super().closeEvent(ev)


def _estop_readable(ctl):
    from ui.errors import Readable

    action = ctl.config.safety.estop_action if ctl.config else "hold"
    what = "The followers hold their pose" if action == "hold" else "The followers are torqued off"
    return Readable("E-stop engaged", f"{what}; all motion commands are refused.",
                    "Make the workspace safe, then press “Release e-stop” (toolbar or Teleop tab).", "warning")


def create_window(rig: str | None = None, settings: QSettings | None = None, realtime_sim: bool = True,
                  dataset_dir: str | None = None) -> MainWindow:
    """Build the main window on the rig `rig` (else the remembered one, else the simulated rig)."""
    win = MainWindow(settings=settings, realtime_sim=realtime_sim, dataset_dir=dataset_dir)
    ref = rig or win.settings.value("rig/last") or DEFAULT_RIG
    win.select_rig(str(ref))
    return win


def ensure_app() -> QApplication:
    app = QApplication.instance()
    if app is None:
        QApplication.setApplicationName("ALOHA Workbench")
        QApplication.setOrganizationName("aloha-workbench")
        app = QApplication(sys.argv[:1])
    theme.apply(app)
    return app


def main(rig: str | None = None) -> int:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) \
            and os.environ.get("QT_QPA_PLATFORM") in (None, "", "xcb"):
        print("error: no display for the desktop app. Run it on a desktop, or on a virtual screen with "
              "`xvfb-run workbench`; headless teleoperation: `workbench teleop`.", file=sys.stderr)
        return 2
    app = ensure_app()
    win = create_window(rig)
    win.show()
    sys.excepthook = lambda t, e, tb: win.show_error(e, "Unexpected error")
    return app.exec()
