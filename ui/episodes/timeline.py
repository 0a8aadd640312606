"""Segment timeline editor: two lanes of labelled blocks over the episode's steps (recorder.segments).

Top lane: "auto" (the demonstrator's phases), bottom lane: "operator". Blocks in a lane never overlap, so a click
selects exactly the block drawn under the pointer. Dragging a boundary moves it for both neighbours when they
touch (a shared boundary), and never past a neighbour otherwise. Click empty track to move the cursor; Delete
removes the selected segment. Text edits and additions come from the panel; every finished edit emits
`segmentsEdited(list[Segment])`, which the panel saves through the dataset store (and its undo stack).
"""
from __future__ import annotations

import dataclasses

from PyQt6.QtCore import QRectF, QSize, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QFont, QPainter, QPen
from PyQt6.QtWidgets import QSizePolicy, QWidget

from recorder.format import LANES, Segment
from recorder.segments import canonical, insert
from ui import theme

EDGE_PX = 6
LANE_H = 26
LABEL_W = 64  # lane names on the left
PALETTE = ["#1f6feb", "#8957e5", "#238636", "#bf8700", "#da3633", "#1b7c83", "#bc4c00"]


@dataclasses.dataclass(frozen=True)
class Boundary:
    """A draggable boundary at `step` in `lane`: the segment ending there (left) and/or starting there (right)."""

    lane: str
    step: int
    left: int  # index in `segments`, -1 = none
    right: int


class SegmentTimeline(QWidget):
    segmentsEdited = pyqtSignal(list)
    selectionChanged = pyqtSignal(int)  # index in `segments`, -1 = none
    cursorMoved = pyqtSignal(int)  # step

    def __init__(self, parent=None):
        super().__init__(parent)
        self.n_steps = 0
        self.segments: list[Segment] = []  # canonical order: lane, then start
        self.selected = -1
        self.cursor = 0
        self._drag: Boundary | None = None
        self._before_drag: list[Segment] = []
        self._scrubbing = False
        self.setMinimumHeight(self._height())
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    @staticmethod
    def _height() -> int:
        return 12 + LANE_H * len(LANES) + 4

    def sizeHint(self) -> QSize:
        return QSize(600, self._height())

    # -- model ---------------------------------------------------------------------------------------------------
    def set_episode(self, n_steps: int, segments: list[Segment]) -> None:
        self.n_steps = n_steps
        self.segments = canonical(segments)
        self.selected = -1
        self.cursor = 0
        self.selectionChanged.emit(-1)
        self.update()

    def set_segments(self, segments: list[Segment]) -> None:
        """New segments for the same episode (after an undo), keeping the cursor and, if possible, the selection."""
        old = self.segments[self.selected] if 0 <= self.selected < len(self.segments) else None
        self.segments = canonical(segments)
        same = [i for i, s in enumerate(self.segments) if old and (s.lane, s.start) == (old.lane, old.start)]
        self.select(same[0] if same else -1)

    def set_cursor(self, step: int) -> None:
        self.cursor = step
        self.update()

    def select(self, i: int) -> None:
        self.selected = i if 0 <= i < len(self.segments) else -1
        self.selectionChanged.emit(self.selected)
        self.update()

    def add_segment(self, start: int | None = None, length: int = 50, text: str = "new segment",
                    lane: str = "operator") -> int:
        """A new segment at the cursor in `lane`, at most `length` steps: in a gap it stops at the next segment;
        inside a segment it takes the rest of it (or splits it when shorter: recorder.segments.insert)."""
        if self.n_steps <= 0:
            return -1
        s = max(0, min(self.cursor if start is None else start, self.n_steps - 1))
        end = min(self.n_steps, s + max(1, length))
        host = next((x for x in self.segments if x.lane == lane and x.start <= s < x.end), None)
        if host is not None:
            end = min(end, host.end)
        else:
            end = min([end] + [x.start for x in self.segments if x.lane == lane and x.start > s])
        seg = Segment(s, end, text, lane)
        self.segments = insert(self.segments, seg)
        self.select(self.segments.index(seg))
        self._emit()
        return self.selected

    def delete_selected(self) -> None:
        if 0 <= self.selected < len(self.segments):
            del self.segments[self.selected]
            self.select(-1)
            self._emit()

    def set_text(self, i: int, text: str) -> None:
        if 0 <= i < len(self.segments) and text.strip() and text.strip() != self.segments[i].text:
            self.segments[i] = dataclasses.replace(self.segments[i], text=text.strip())
            self._emit()

    def boundary_at(self, lane: str, step: int) -> Boundary:
        left = next((i for i, s in enumerate(self.segments) if s.lane == lane and s.end == step), -1)
        right = next((i for i, s in enumerate(self.segments) if s.lane == lane and s.start == step), -1)
        return Boundary(lane, step, left, right)

    def move_boundary(self, b: Boundary, step: int) -> Boundary:
        """Move a boundary: both neighbours when it is shared; each keeps at least one step, and a lone edge
        stops at the next segment of its lane."""
        lane_segs = [s for s in self.segments if s.lane == b.lane]
        lo, hi = 0, self.n_steps
        if b.left >= 0:
            lo = self.segments[b.left].start + 1
        else:
            lo = max([s.end for s in lane_segs if s.end <= b.step] + [0])
        if b.right >= 0:
            hi = self.segments[b.right].end - 1
        else:
            hi = min([s.start for s in lane_segs if s.start >= b.step] + [self.n_steps])
        step = max(lo, min(step, hi))
        if b.left >= 0:
            self.segments[b.left] = dataclasses.replace(self.segments[b.left], end=step)
        if b.right >= 0:
            self.segments[b.right] = dataclasses.replace(self.segments[b.right], start=step)
        self.update()
        return dataclasses.replace(b, step=step)

    def _emit(self) -> None:
        self.update()
        self.segmentsEdited.emit(list(self.segments))

    # -- geometry ------------------------------------------------------------------------------------------------
    def _track(self) -> QRectF:
        return QRectF(LABEL_W, 6, max(1, self.width() - LABEL_W - 8), LANE_H * len(LANES))

    def lane_rect(self, lane: str) -> QRectF:
        r = self._track()
        return QRectF(r.x(), r.y() + LANE_H * LANES.index(lane), r.width(), LANE_H)

    def lane_y(self, lane: str) -> int:
        """The middle of a lane (for clicks in tests and tools)."""
        return int(self.lane_rect(lane).center().y())

    def lane_at(self, y: float) -> str | None:
        r = self._track()
        k = int((y - r.y()) // LANE_H)
        return LANES[k] if 0 <= k < len(LANES) and y >= r.y() else None

    def x_of(self, step: float) -> float:
        r = self._track()
        return r.x() + r.width() * (step / self.n_steps if self.n_steps else 0)

    def step_at(self, x: float) -> int:
        r = self._track()
        if self.n_steps <= 0:
            return 0
        return int(round(max(0.0, min(1.0, (x - r.x()) / r.width())) * self.n_steps))

    def hit(self, x: float, y: float) -> tuple[int, Boundary | None]:
        """(segment drawn under the point or -1, boundary within EDGE_PX or None)."""
        lane = self.lane_at(y)
        if lane is None:
            return -1, None
        edges = sorted({s.start for s in self.segments if s.lane == lane} | {s.end for s in self.segments if s.lane == lane},
                       key=lambda st: abs(self.x_of(st) - x))
        edge = self.boundary_at(lane, edges[0]) if edges and abs(self.x_of(edges[0]) - x) <= EDGE_PX else None
        step = self.step_at(x)
        inside = next((i for i, s in enumerate(self.segments) if s.lane == lane and s.start <= step < s.end), -1)
        if inside < 0 and edge is not None:
            inside = edge.left if edge.left >= 0 else edge.right
        return inside, edge

    # -- painting ------------------------------------------------------------------------------------------------
    def paintEvent(self, _ev) -> None:  # noqa: N802
        p = QPainter(self)
        r = self._track()
        p.fillRect(self.rect(), QColor(theme.PANEL))
        small = QFont(self.font())
        small.setPointSizeF(8.5)
        for lane in LANES:
            lr = self.lane_rect(lane)
            p.setPen(QPen(QColor(theme.BORDER)))
            p.setBrush(QColor(theme.BG))
            p.drawRoundedRect(lr.adjusted(0, 1, 0, -1), 4, 4)
            p.setFont(small)
            p.setPen(QColor(theme.MUTED))
            p.drawText(QRectF(4, lr.y(), LABEL_W - 8, LANE_H), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight,
                       lane)
        f = QFont(self.font())
        f.setPointSizeF(9.0)
        f.setBold(True)
        p.setFont(f)
        for i, s in enumerate(self.segments):
            lr = self.lane_rect(s.lane)
            x0, x1 = self.x_of(s.start), self.x_of(s.end)
            box = QRectF(x0, lr.y() + 3, max(2.0, x1 - x0), LANE_H - 6)
            colour = QColor(PALETTE[i % len(PALETTE)])
            p.setBrush(colour.darker(130) if i != self.selected else colour)
            p.setPen(QPen(QColor("#ffffff") if i == self.selected else colour.lighter(130), 2 if i == self.selected else 1))
            p.drawRoundedRect(box, 3, 3)
            p.setPen(QColor("#ffffff"))
            text = p.fontMetrics().elidedText(s.text, Qt.TextElideMode.ElideRight, int(box.width() - 8))
            p.drawText(box.adjusted(5, 0, -3, 0), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, text)
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
        x, y = ev.position().x(), ev.position().y()
        i, edge = self.hit(x, y)
        if i >= 0:
            self.select(i)
        if edge is not None:
            self._drag, self._before_drag = edge, list(self.segments)
            return
        self._scrubbing = i < 0
        self.cursor = self.step_at(x)
        self.cursorMoved.emit(self.cursor)
        self.update()

    def mouseMoveEvent(self, ev) -> None:  # noqa: N802
        x = ev.position().x()
        if self._drag is not None:
            self._drag = self.move_boundary(self._drag, self.step_at(x))
            return
        if self._scrubbing:
            self.cursor = self.step_at(x)
            self.cursorMoved.emit(self.cursor)
            self.update()
            return
        i, edge = self.hit(x, ev.position().y())
        self.setCursor(Qt.CursorShape.SizeHorCursor if edge else Qt.CursorShape.ArrowCursor)
        self.setToolTip(self.tooltip_for(i))

    def tooltip_for(self, i: int) -> str:
        """The whole text of the block under the pointer (a short block elides it), with its span."""
        if not 0 <= i < len(self.segments):
            return ""
        s = self.segments[i]
        return f"{s.text}\n{s.lane} · steps {s.start}–{s.end} ({s.end - s.start} steps)"

    def mouseReleaseEvent(self, ev) -> None:  # noqa: N802
        if self._drag is not None:
            self._drag = None
            if self.segments != self._before_drag:
                self._emit()
        self._scrubbing = False

    def keyPressEvent(self, ev) -> None:  # noqa: N802
        if ev.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.delete_selected()
        else:
            super().keyPressEvent(ev)
