"""Widgets and helpers that several tabs share (Teleop, Record, Trials): one home instead of private names
imported from another tab's module."""
from __future__ import annotations

import collections
import math

from PyQt6.QtWidgets import QComboBox, QLabel, QLineEdit, QVBoxLayout, QWidget

from ui import theme


class BigFigure(QWidget):
    """A caption over a big monospace number, coloured by status."""

    def __init__(self, caption: str, unit: str = "", parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        self.cap = QLabel(caption.upper())
        self.cap.setProperty("class", "caption")
        self.value = QLabel("—")
        self.value.setProperty("class", "big")
        self.unit = unit
        lay.addWidget(self.cap)
        lay.addWidget(self.value)

    def set(self, text: str, status: str = "idle") -> None:
        colour = theme.TEXT if status == "idle" else theme.status_colour(status)
        u = f"<span style='font-size:14px; color:{theme.MUTED}'> {self.unit}</span>" if self.unit else ""
        self.value.setText(f"<span style='color:{colour}'>{text}</span>{u}")


class RateMeter:
    """Loop rate from tick indices and rig-clock times seen by the GUI poll (no access to the loop's buffers)."""

    def __init__(self, window_s: float = 2.0):
        self.samples: collections.deque = collections.deque()
        self.window_s = window_s

    def add(self, index: int, t: float) -> None:
        if self.samples and self.samples[-1][0] == index:
            return
        self.samples.append((index, t))
        while self.samples and t - self.samples[0][1] > self.window_s:
            self.samples.popleft()

    def rate(self) -> float:
        if len(self.samples) < 2:
            return float("nan")
        (i0, t0), (i1, t1) = self.samples[0], self.samples[-1]
        return (i1 - i0) / (t1 - t0) if t1 > t0 else float("nan")

    def reset(self) -> None:
        self.samples.clear()


def rate_status(hz: float, nominal: float) -> str:
    """ok / warn / fail for a loop rate against the rig's nominal one (idle: no rate yet)."""
    if not math.isfinite(hz):
        return "idle"
    return "fail" if hz < 0.84 * nominal else "warn" if hz < 0.96 * nominal else "ok"


def is_text_input(w) -> bool:
    """True for a widget that types: single-key shortcuts (N, T, pedals) stay off while one has focus."""
    from PyQt6.QtWidgets import QAbstractSpinBox, QPlainTextEdit, QTextEdit

    return isinstance(w, (QLineEdit, QTextEdit, QPlainTextEdit, QAbstractSpinBox)) or \
        (isinstance(w, QComboBox) and w.isEditable())


def readable(title: str, message: str, fix: str = "", severity: str = "warning"):
    """A message for the error banner in words (ui.errors.Readable), not an exception's text."""
    from ui.errors import Readable

    return Readable(title, message, fix, severity)


__all__ = ["BigFigure", "RateMeter", "is_text_input", "rate_status", "readable"]
