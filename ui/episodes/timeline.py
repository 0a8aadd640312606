"""Segment timeline editor: segments as labelled blocks over the episode's steps.

Click a block to select it, drag its left/right edge to move a boundary, click empty track to move the cursor,
Delete removes the selected segment. Text edits and additions come from the panel's buttons. Every finished edit
emits `segmentsEdited(list[Segment])`; the panel saves through the dataset store.
"""
from __future__ import annotations

from PyQt6.QtCore import QRectF, QSize, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QFont, QPainter, QPen
from PyQt6.QtWidgets import QSizePolicy, QWidget

from recorder.format import Segment
from ui import theme

EDGE_PX = 6
PALETTE = ["#1f6feb", "#8957e5", "#238636", "#bf8700", "#da3633", "#1b7c83", "#bc4c00"]


class SegmentTimeline(QWidget):
    segmentsEdited = pyqtSignal(list)
    selectionChanged = pyqtSignal(int)  # index in `segments`, -1 = none
    cursorMoved = pyqtSignal(int)  # step

    def __init__(self, parent=None):
        super().__init__(parent)
        self.n_steps = 0
        self.segments: list[Segment] = []
        self.selected = -1
        self.cursor = 0
        self._drag: tuple[int, str] | None = None  # (segment index, "start" | "end")
        self._scrubbing = False
        self.setMinimumHeight(58)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:
        return QSize(600, 58)

    # -- model ---------------------------------------------------------------------------------------------------
    def set_episode(self, n_steps: int, segments: list[Segment]) -> None:
        self.n_steps = n_steps
        self.segments = sorted(segments, key=lambda s: (s.start, s.end))
        self.selected = -1
        self.cursor = 0
        self.selectionChanged.emit(-1)
        self.update()

    def set_cursor(self, step: int) -> None:
        self.cursor = step
        self.update()

    def select(self, i: int) -> None:
        self.selected = i if 0 <= i < len(self.segments) else -1
        self.selectionChanged.emit(self.selected)
        self.update()

    def add_segment(self, start: int | None = None, length: int = 50, text: str = "new segment") -> int:
        if self.n_steps <= 0:
            return -1
        s = self.cursor if start is None else start
        s = max(0, min(s, self.n_steps - 1))
        seg = Segment(s, min(self.n_steps, s + max(1, length)), text)
        self.segments.append(seg)
        self.segments.sort(key=lambda x: (x.start, x.end))
        i = self.segments.index(seg)
        self.select(i)
        self._emit()
        return i

    def delete_selected(self) -> None:
        if 0 <= self.selected < len(self.segments):
            del self.segments[self.selected]
            self.select(-1)
            self._emit()

    def set_text(self, i: int, text: str) -> None:
        if 0 <= i < len(self.segments) and text.strip():
            s = self.segments[i]
            self.segments[i] = Segment(s.start, s.end, text.strip())
            self._emit()

    def move_boundary(self, i: int, which: str, step: int) -> None:
        s = self.segments[i]
        step = max(0, min(step, self.n_steps))
        if which == "start":
            self.segments[i] = Segment(min(step, s.end - 1), s.end, s.text)
        else:
            self.segments[i] = Segment(s.start, max(step, s.start + 1), s.text)
        self.update()

    def _emit(self) -> None:
        self.update()
        self.segmentsEdited.emit(list(self.segments))

    # -- geometry ------------------------------------------------------------------------------------------------
    def _track(self) -> QRectF:
        return QRectF(8, 6, max(1, self.width() - 16), self.height() - 12)

    def x_of(self, step: float) -> float:
        r = self._track()
        return r.x() + r.width() * (step / self.n_steps if self.n_steps else 0)

    def step_at(self, x: float) -> int:
        r = self._track()
        if self.n_steps <= 0:
            return 0
        return int(round(max(0.0, min(1.0, (x - r.x()) / r.width())) * self.n_steps))

    def _hit(self, x: float) -> tuple[int, str | None]:
        """(segment, edge) under x: edge "start"/"end" near a boundary, None inside; (-1, None) for empty."""
        best = (-1, None)
        # the selected segment's edges win, then any edge, then the innermost block
        order = ([self.selected] if self.selected >= 0 else []) + [i for i in range(len(self.segments)) if i != self.selected]
        for i in order:
            s = self.segments[i]
            if abs(x - self.x_of(s.start)) <= EDGE_PX:
                return i, "start"
            if abs(x - self.x_of(s.end)) <= EDGE_PX:
                return i, "end"
        for i in order:
            s = self.segments[i]
            if self.x_of(s.start) <= x <= self.x_of(s.end):
                return i, None
        return best

    # -- painting ------------------------------------------------------------------------------------------------
    def paintEvent(self, _ev) -> None:  # noqa: N802
        p = QPainter(self)
        r = self._track()
        p.fillRect(self.rect(), QColor(theme.PANEL))
        p.setPen(QPen(QColor(theme.BORDER)))
        p.setBrush(QColor(theme.BG))
        p.drawRoundedRect(r, 5, 5)
        f = QFont(self.font())
        f.setPointSizeF(9.5)
        f.setBold(True)
        p.setFont(f)
        for i, s in enumerate(self.segments):
            x0, x1 = self.x_of(s.start), self.x_of(s.end)
            box = QRectF(x0, r.y() + 4, max(2.0, x1 - x0), r.height() - 8)
            colour = QColor(PALETTE[i % len(PALETTE)])
            p.setBrush(colour.darker(130) if i != self.selected else colour)
            p.setPen(QPen(QColor("#ffffff") if i == self.selected else colour.lighter(130), 2 if i == self.selected else 1))
            p.drawRoundedRect(box, 4, 4)
            p.setPen(QColor("#ffffff"))
            text = p.fontMetrics().elidedText(s.text, Qt.TextElideMode.ElideRight, int(box.width() - 10))
            p.drawText(box.adjusted(6, 0, -4, 0), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, text)
        if self.n_steps:
            x = self.x_of(self.cursor)
            p.setPen(QPen(QColor(theme.TEXT), 2))
            p.drawLine(int(x), int(r.top()), int(x), int(r.bottom()))
        elif not self.segments:
            p.setPen(QColor(theme.MUTED))
            p.drawText(r, Qt.AlignmentFlag.AlignCenter, "select an episode")
        p.end()

    # -- mouse ---------------------------------------------------------------------------------------------------
    def mousePressEvent(self, ev) -> None:  # noqa: N802
        if ev.button() != Qt.MouseButton.LeftButton or not self.n_steps:
            return
        x = ev.position().x()
        i, edge = self._hit(x)
        if i >= 0:
            self.select(i)
            if edge is not None:
                self._drag = (i, edge)
                return
        self._scrubbing = i < 0
        self.cursor = self.step_at(x)
        self.cursorMoved.emit(self.cursor)
        self.update()

    def mouseMoveEvent(self, ev) -> None:  # noqa: N802
        x = ev.position().x()
        if self._drag is not None:
            self.move_boundary(self._drag[0], self._drag[1], self.step_at(x))
            return
        if self._scrubbing:
            self.cursor = self.step_at(x)
            self.cursorMoved.emit(self.cursor)
            self.update()
            return
        _i, edge = self._hit(x)
        self.setCursor(Qt.CursorShape.SizeHorCursor if edge else Qt.CursorShape.ArrowCursor)

    def mouseReleaseEvent(self, ev) -> None:  # noqa: N802
        if self._drag is not None:
            i = self._drag[0]
            self._drag = None
            seg = self.segments[i]
            self.segments.sort(key=lambda s: (s.start, s.end))
            self.selected = self.segments.index(seg)
            self._emit()
        self._scrubbing = False

    def keyPressEvent(self, ev) -> None:  # noqa: N802
        if ev.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.delete_selected()
        else:
            super().keyPressEvent(ev)
