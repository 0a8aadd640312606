"""Widgets and helpers that several tabs share (Teleop, Record, Trials): one home instead of private names
imported from another tab's module."""
from __future__ import annotations

import collections
import math

from PyQt6.QtCore import QEvent, QRect, QSize, Qt
from PyQt6.QtGui import QPainter, QPalette
from PyQt6.QtWidgets import (QComboBox, QLabel, QLineEdit, QScrollArea, QStyle, QStyleOptionFrame, QVBoxLayout,
                             QWidget)

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
        self.value.ensurePolished()  # the "big" font is the style sheet's: the height is that font's
        self.value.setMinimumHeight(self.value.sizeHint().height())  # never squeezed by a text that wraps below

    def set(self, text: str, status: str = "idle") -> None:
        colour = theme.TEXT if status == "idle" else theme.status_colour(status)
        u = f"<span style='font-size:14px; color:{theme.MUTED}'> {self.unit}</span>" if self.unit else ""
        self.value.setText(f"<span style='color:{colour}'>{text}</span>{u}")


class ElidedLabel(QLabel):
    """One line of plain text that fits the width it is given instead of widening its panel: cut with "…" (at
    the end, or in the middle for paths), the whole text then in the tooltip. `text()` is the whole text."""

    def __init__(self, text: str = "", mode: Qt.TextElideMode = Qt.TextElideMode.ElideRight, parent=None):
        super().__init__(parent)
        self._full = ""
        self._mode = mode
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt name
        self._full = str(text)
        self.updateGeometry()
        self._elide()

    def text(self) -> str:
        return self._full

    def shown_text(self) -> str:
        return super().text()

    def _need(self, text: str) -> int:
        """The width QLabel draws `text` in (its bounding rect: bold glyphs reach past the advance)."""
        return self.fontMetrics().boundingRect(QRect(0, 0, 100_000, 1000), int(self.alignment()), text).width()

    def _around(self) -> int:
        """What QLabel adds around the text it shows: margins, style-sheet padding and the indent it then uses."""
        return super().sizeHint().width() - self._need(super().text())

    def sizeHint(self) -> QSize:  # noqa: N802 - what the whole text needs
        return QSize(self._around() + self._need(self._full), super().sizeHint().height())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - a few characters: the layout may cut the rest
        return QSize(min(self.sizeHint().width(), self.fontMetrics().horizontalAdvance("Mmm…") + 2),
                     super().minimumSizeHint().height())

    def resizeEvent(self, ev) -> None:  # noqa: N802
        super().resizeEvent(ev)
        self._elide()

    def changeEvent(self, ev) -> None:  # noqa: N802 - a style sheet may change the font
        super().changeEvent(ev)
        if ev.type() in (QEvent.Type.FontChange, QEvent.Type.StyleChange):
            self.updateGeometry()  # the whole text's width changed with the font
            self._elide()

    def _elide(self) -> None:
        fm, room = self.fontMetrics(), self.width() - self._around()
        shown = self._full
        if room > 0 and self._need(self._full) > room:
            overhang = self._need(self._full) - fm.horizontalAdvance(self._full)
            shown = fm.elidedText(self._full, self._mode, room - overhang)
        if shown != super().text():
            super().setText(shown)
        self.setToolTip(self._full if shown != self._full else "")


class PathEdit(QLineEdit):
    """A path field that shows both ends of a long path: elided in the middle ("/home/…/runs/cube/policy") while
    it does not have the focus, whole while it is edited. The tooltip is the whole path (empty: `empty_tip`, what
    goes in)."""

    def __init__(self, text: str = "", parent=None):
        super().__init__(text, parent)
        self.empty_tip = ""
        self.textChanged.connect(self._tip)
        self._tip(text)

    def set_empty_tip(self, tip: str) -> None:
        self.empty_tip = tip
        self._tip(self.text())

    def _tip(self, text: str) -> None:
        self.setToolTip(text or self.empty_tip)

    def is_elided(self) -> bool:
        return bool(self.text()) and not self.hasFocus() and \
            self.fontMetrics().horizontalAdvance(self.text()) > self._text_rect().width()

    def shown_text(self) -> str:
        """What the field shows: the whole path, or the elided one."""
        if not self.is_elided():
            return self.text()
        return self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideMiddle, self._text_rect().width())

    def _text_rect(self):
        opt = QStyleOptionFrame()
        self.initStyleOption(opt)
        r = self.style().subElementRect(QStyle.SubElement.SE_LineEditContents, opt, self)
        m = self.textMargins()
        return r.adjusted(m.left() + 2, m.top(), -m.right() - 2, -m.bottom())  # QLineEdit's 2 px side margin

    def paintEvent(self, ev) -> None:  # noqa: N802
        if not self.is_elided():
            super().paintEvent(ev)
            return
        p = QPainter(self)
        opt = QStyleOptionFrame()
        self.initStyleOption(opt)
        self.style().drawPrimitive(QStyle.PrimitiveElement.PE_PanelLineEdit, opt, p, self)
        r = self._text_rect()
        group = QPalette.ColorGroup.Normal if self.isEnabled() else QPalette.ColorGroup.Disabled
        p.setPen(self.palette().color(group, QPalette.ColorRole.Text))
        p.drawText(r, int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft), self.shown_text())
        p.end()


class FitScrollArea(QScrollArea):
    """A vertically scrolling page (the form-like tabs). A label that wraps onto more lines asks its group box's
    layout for room; Qt applies that layout at the old height first (squeezing its rows: texts drawn over each
    other) and grows the page passes later. Here the page gets the height it needs for its width before any
    layout inside it is applied. A panel too wide for the page scrolls sideways rather than being cut unseen."""

    def __init__(self, panel: QWidget, parent=None):
        super().__init__(parent)
        self.setWidget(panel)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.watch()

    def watch(self) -> None:
        """Hear the layout requests of the panel and of every widget with a layout inside it (group boxes)."""
        panel = self.widget()
        if panel is None:
            return
        for w in [panel, *panel.findChildren(QWidget)]:
            if w.layout() is not None and w.property("_fit_watched") is None:
                w.setProperty("_fit_watched", True)
                w.installEventFilter(self)

    def showEvent(self, ev) -> None:  # noqa: N802 - widgets added since construction
        super().showEvent(ev)
        self.watch()

    def eventFilter(self, obj, ev) -> bool:  # noqa: N802 - setWidget installs us on the panel, watch() inside it
        if ev.type() == QEvent.Type.LayoutRequest and self.widget() is not None and \
                (obj is self.widget() or obj.layout() is None or obj.layout().hasHeightForWidth()):
            self.fit()  # (a box without wrapping texts changes height only through the panel's own request)
        return super().eventFilter(obj, ev)

    def needed_height(self) -> int:
        panel = self.widget()
        lay = panel.layout() if panel is not None else None
        if lay is None:
            return 0
        lay.invalidate()  # its cached heights predate the request that brought us here
        need = lay.totalHeightForWidth(panel.width()) if lay.hasHeightForWidth() else -1
        return max(need, lay.totalMinimumSize().height())

    def fit(self) -> None:
        panel = self.widget()
        need = self.needed_height()
        if panel is not None and panel.height() < need:
            panel.resize(panel.width(), need)


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


__all__ = ["BigFigure", "ElidedLabel", "FitScrollArea", "PathEdit", "RateMeter", "is_text_input", "rate_status",
           "readable"]
