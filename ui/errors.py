"""Readable errors: every failure the operator can meet becomes a headline, the message and what to do.

Driver and config errors already say what failed and the fix; this module only adds a headline and a hint for
the common kinds, logs the traceback to the log file, and shows it in a banner instead of a terminal.
"""
from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass

from PyQt6.QtCore import Qt, QTimer, pyqtSignal
from PyQt6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton

from ui import theme

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readable:
    title: str
    message: str
    fix: str = ""
    severity: str = "error"  # error | warning | info
    keep: bool = False  # an info banner with a result to read (a path): stays until dismissed


def describe(exc: BaseException | str, context: str = "") -> Readable:
    """Map an exception to what an operator reads. `context` is the action that failed ("Connect")."""
    if isinstance(exc, str):
        return Readable(context or "Error", exc)
    from drivers import errors as de
    from workbench.config import ConfigError

    msg = str(exc) or type(exc).__name__
    head = f"{context} failed" if context else "Error"
    if isinstance(exc, ConfigError):
        return Readable("Rig configuration is invalid", msg,
                        f"Edit {exc.source} (key `{exc.key}`), or check it with `workbench rig check {exc.source}`.")
    if isinstance(exc, de.ServoHardwareError):
        return Readable(f"Servo fault on {exc.arm} / {exc.joint}", msg,
                        "Remove the load, then press Reboot next to the joint in the Rig tab.")
    if isinstance(exc, de.SafetyError):
        return Readable("Motion refused by the safety layer", msg,
                        "Release the e-stop (toolbar) when the workspace is clear, then start again.", "warning")
    if isinstance(exc, de.PortError):
        return Readable("Cannot open a servo bus", msg,
                        "Check the USB cable and the udev rule for /dev/ttyDXL_*, and that you are in the dialout group.")
    if isinstance(exc, de.CameraNotFoundError):
        return Readable("Camera not found", msg, "Plug the camera in (at most two cameras per USB hub) or fix its "
                                                 "serial/device in the rig file.")
    if isinstance(exc, de.CameraError):
        return Readable("Camera problem", msg, "Check the USB connection; reconnect the rig to restart the streams.")
    if isinstance(exc, (de.ServoMissingError, de.ServoModelError, de.CommunicationError)):
        return Readable("Servo bus problem", msg, "Check power to the arm and the daisy-chain cables, then reconnect.")
    if isinstance(exc, de.DriverError):
        return Readable(head, msg)
    if isinstance(exc, PermissionError):
        return Readable(head, msg, "Choose a folder you can write to, or fix its permissions.")
    if isinstance(exc, FileNotFoundError):
        return Readable(head, msg, "Check the path.")
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return Readable("Disk full", msg, "Free space or choose a dataset folder on another disk.")
    if type(exc).__module__.startswith("recorder") or type(exc).__name__ in ("StoreError", "RecorderError"):
        return Readable(head, msg)
    if isinstance(exc, ValueError):
        return Readable(head, msg)
    log.error("unexpected error%s:\n%s", f" in {context}" if context else "",
              "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return Readable(head, f"{type(exc).__name__}: {msg}",
                    "This is a bug in the workbench; the details are in the log (workbench -v shows them).")


class ErrorBanner(QFrame):
    """A dismissable strip at the top of the window: red for errors, amber for warnings, blue for info."""

    dismissed = pyqtSignal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("banner")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(14, 10, 10, 10)
        self.icon = QLabel()
        self.icon.setStyleSheet("font-size: 20px; font-weight: 800;")
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QPushButton("Dismiss")
        close.clicked.connect(self.dismiss)
        lay.addWidget(self.icon)
        lay.addWidget(self.text, 1)
        lay.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.current: Readable | None = None
        self.history: list[Readable] = []
        self._timer = QTimer(self, singleShot=True, timeout=self.dismiss)
        self.hide()

    def show_error(self, exc: BaseException | str | Readable, context: str = "") -> Readable:
        r = exc if isinstance(exc, Readable) else describe(exc, context)
        self.current = r
        self.history.append(r)
        colour = {"error": theme.FAIL, "warning": theme.WARN, "info": theme.ACCENT}[r.severity]
        bg = {"error": "#3d1417", "warning": "#3b2e0a", "info": "#0c2d5b"}[r.severity]
        self.setStyleSheet(f"QFrame#banner {{ background: {bg}; border: 1px solid {colour}; }}")
        self.icon.setText({"error": "✖", "warning": "⚠", "info": "ℹ"}[r.severity])
        self.icon.setStyleSheet(f"font-size: 20px; font-weight: 800; color: {colour};")
        fix = f"<br><span style='color:{theme.TEXT}'><b>What to do:</b> {_esc(r.fix)}</span>" if r.fix else ""
        self.text.setText(f"<b style='color:{colour}; font-size:14px'>{_esc(r.title)}</b><br>"
                          f"<span style='color:{theme.TEXT}'>{_esc(r.message)}</span>{fix}")
        self.show()
        self.place()
        self._timer.stop()
        if r.severity == "info" and not r.keep:
            self._timer.start(6000)
        return r

    def dismiss(self) -> None:
        self.current = None
        self.hide()
        self.dismissed.emit()

    # An overlay, not a layout member: showing it never resizes the window or moves the controls under the
    # operator's mouse. It floats over the bottom of its parent (the live view's charts), above everything.
    def eventFilter(self, obj, ev) -> bool:  # noqa: N802 - Qt name
        from PyQt6.QtCore import QEvent

        if obj is self.parent() and ev.type() == QEvent.Type.Resize and self.isVisible():
            self.place()
        return False

    def attach(self, parent) -> None:
        self.setParent(parent)
        parent.installEventFilter(self)
        self.hide()

    def place(self) -> None:
        parent = self.parentWidget()
        if parent is None:
            return
        w = max(200, parent.width() - 24)
        h = min(self.heightForWidth(w) if self.hasHeightForWidth() else self.sizeHint().height(), parent.height() // 2)
        h = max(h, self.sizeHint().height())
        self.setGeometry(12, parent.height() - h - 12, w, h)
        self.raise_()


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
