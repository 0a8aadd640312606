"""Live joint charts: leader (the command) vs follower per joint of one arm, the last `window_s` seconds.

Why not pyqtgraph here: every Qt call made from Python holds the GIL for its whole duration, and a scene of seven
plots spends milliseconds in such calls per redraw, which the 50 Hz control loop thread then waits out (measured
with bench/bench_gui_teleop.py). These charts draw their curves with OpenCV into a numpy canvas (the GIL is released
while it draws) over a background that is re-rendered only when the size or a y range changes, and paint one 1:1
blit. The episode player, which draws once per episode, keeps pyqtgraph (`ui.joint_plots`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np
from PyQt6.QtCore import QPointF, QRectF, Qt
from PyQt6.QtGui import QColor, QFont, QFontMetrics, QImage, QPainter, QPen
from PyQt6.QtWidgets import QSizePolicy, QWidget

from drivers.arm import ARM_DOF, BIMANUAL_DOF, JOINT_NAMES, SIDES, arm_slice
from ui import theme
from ui.joint_plots import SideHeader, joint_unit

TITLE_H, AXIS_W, GAP = 16, 40, 6
PREDICTED = "#bc8cff"  # the policy's predicted chunk, dashed, ahead of the present


def _bgr(hex_colour: str) -> tuple[int, int, int, int]:
    c = QColor(hex_colour)
    return (c.blue(), c.green(), c.red(), 255)  # canvas bytes are B, G, R, A (QImage RGB32 on little-endian)


def chart_title(j: int, width: float, fm: QFontMetrics) -> str:
    """A chart's title with its unit; the short unit where the long one would not fit its cell (it was cut)."""
    name = JOINT_NAMES[j].replace("_", " ")
    text = ""
    for text in (f"{name} ({joint_unit(JOINT_NAMES[j])})", f"{name} ({joint_unit(JOINT_NAMES[j], short=True)})"):
        if fm.horizontalAdvance(text) <= width:
            return text
    return fm.elidedText(text, Qt.TextElideMode.ElideRight, int(width))


@dataclass
class Cell:
    """One joint's chart: its plot rectangle in canvas pixels and its y range (radians)."""
    x: int
    y: int
    w: int
    h: int
    lo: float = -1.0
    hi: float = 1.0

    def rows(self, v: np.ndarray) -> np.ndarray:
        return self.y + (self.hi - v) / (self.hi - self.lo) * (self.h - 1)


def fit_range(lo: float, hi: float, cur: tuple[float, float]) -> tuple[float, float]:
    """A new y range only when the data left the current one or fill less than a quarter of it (no jitter)."""
    y0, y1 = cur
    span = max(hi - lo, 0.05)
    if lo < y0 or hi > y1 or span < 0.25 * (y1 - y0):
        pad = 0.15 * span
        return lo - pad, hi + pad
    return cur


class _Canvas(QWidget):
    """Paints the composed chart image 1:1 and asks its owner to re-render when resized."""

    def __init__(self, owner: "LiveJointCharts"):
        super().__init__(owner)
        self.owner = owner
        self.image: QImage | None = None
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumHeight(160)

    def resizeEvent(self, ev) -> None:  # noqa: N802
        self.owner._layout_changed()
        super().resizeEvent(ev)

    def paintEvent(self, _ev) -> None:  # noqa: N802
        p = QPainter(self)
        if self.image is not None:
            p.drawImage(QPointF(0, 0), self.image)
        else:
            p.fillRect(self.rect(), QColor(theme.BG))
        p.end()


class LiveJointCharts(QWidget):
    """`push(tick)` from the GUI poll timer (~20 Hz); redraws at most `redraw_hz` while visible."""

    def __init__(self, parent=None, window_s: float = 10.0, sample_hz: float = 20.0, redraw_hz: float = 10.0,
                 columns: int = 4, refit_s: float = 2.0):
        super().__init__(parent)
        self.window_s, self.columns, self.refit_s = window_s, columns, refit_s
        self.side = "left"
        self.n = int(window_s * sample_hz)
        self.min_interval = 1.0 / redraw_hz
        self._t = np.full(self.n, np.nan)
        self._lead = np.full((self.n, BIMANUAL_DOF), np.nan)
        self._fol = np.full((self.n, BIMANUAL_DOF), np.nan)
        self._last_index = -1
        self._last_draw = 0.0
        self._last_fit = 0.0
        self.redraws = 0
        self.cells: list[Cell] = []
        self._bg: np.ndarray | None = None  # background (frames, grid, labels) as B, G, R, A bytes
        self._canvas_np: np.ndarray | None = None
        # the predicted chunk (trials): rig-clock times and actions [H, 14]; drawn dashed in `future_s` seconds
        # to the right of the present while set
        self.future_s = 2.0
        self._pred_t: np.ndarray | None = None
        self._pred: np.ndarray | None = None
        self.pred_px: list[np.ndarray] = []  # per joint of the shown arm: the drawn (x, y) points (tests)
        self.line_px: list[np.ndarray] = []  # per joint of the shown arm: the drawn samples' (x, y) (tests)
        self.now_x: float | None = None  # x of the present while a prediction is shown

        lay = SideHeader.on_top_of(self)
        self.canvas = _Canvas(self)
        lay.addWidget(self.canvas, 1)

    # -- data ---------------------------------------------------------------------------------------------------
    def push(self, tick) -> None:
        """Append one sample from a Tick (a tick already seen is skipped)."""
        if tick is None or tick.index == self._last_index:
            return
        last = self._t[-1]
        if np.isfinite(last) and tick.t < last:  # a new episode's clock (a trial's simulation restarts at 0): the
            self._t[:] = np.nan  # old samples would land in the future, drawn past the chart's right edge
        self._last_index = tick.index
        self._t[:-1], self._t[-1] = self._t[1:], tick.t
        self._lead[:-1], self._lead[-1] = self._lead[1:], tick.action
        self._fol[:-1], self._fol[-1] = self._fol[1:], tick.qpos
        self._redraw()

    def reset(self) -> None:
        self._t[:] = np.nan
        self._lead[:] = np.nan
        self._fol[:] = np.nan
        self._last_index = -1
        self._pred_t = self._pred = None
        self.header.set_extra_legend("")
        self._redraw(force=True)

    def set_prediction(self, prediction) -> None:
        """`(times, actions)`: a policy chunk, actions[i] [14] meant for rig-clock time times[i]; its remaining
        part (times after the newest sample) is drawn dashed ahead of the present. None removes it."""
        if prediction is None:
            if self._pred is None:
                return
            self._pred_t = self._pred = None
            self.header.set_extra_legend("")
        else:
            times, actions = prediction
            self._pred_t = np.asarray(times, dtype=np.float64)
            self._pred = np.asarray(actions, dtype=np.float64)
            self.header.set_extra_legend(f'&nbsp;&nbsp;&nbsp;<span style="color:{PREDICTED}">╍╍ predicted</span>')
        self._redraw(force=True)

    def set_command_label(self, name: str) -> None:
        """What the thin line is: the leader in teleop and recording, the policy's command in trials."""
        self.header.set_command_label(name)

    def set_side(self, side: str) -> None:
        self.side = side
        self.header.set_side(side)
        self._last_fit = 0.0  # the other arm's ranges
        self._redraw(force=True)

    # -- drawing ------------------------------------------------------------------------------------------------
    def _layout_changed(self) -> None:
        w, h = self.canvas.width(), self.canvas.height()
        rows = -(-ARM_DOF // self.columns)
        cw, ch = (w - GAP * (self.columns - 1)) // self.columns, (h - GAP * (rows - 1)) // rows
        old = [(c.lo, c.hi) for c in self.cells] or [(-1.0, 1.0)] * ARM_DOF
        self.cells = []
        for j in range(ARM_DOF):
            r, c = divmod(j, self.columns)
            x0, y0 = c * (cw + GAP), r * (ch + GAP)
            self.cells.append(Cell(x0 + AXIS_W, y0 + TITLE_H, max(cw - AXIS_W - 2, 8), max(ch - TITLE_H - 4, 8),
                                   *old[j]))
        self._bg = None
        self._redraw(force=True)

    def _render_background(self) -> np.ndarray:
        """Frames, grid lines, titles and y labels: Qt text, drawn only when the layout or a range changes."""
        w, h = max(self.canvas.width(), 1), max(self.canvas.height(), 1)
        img = QImage(w, h, QImage.Format.Format_RGB32)
        img.fill(QColor(theme.BG))
        p = QPainter(img)
        small = QFont(self.font())
        small.setPointSizeF(7.5)
        title_font = QFont(self.font())
        title_font.setPointSizeF(8.5)
        for j, cell in enumerate(self.cells):
            p.fillRect(QRectF(cell.x, cell.y, cell.w, cell.h), QColor(theme.PANEL))
            p.setPen(QPen(QColor(theme.BORDER), 1))
            p.drawRect(QRectF(cell.x - 0.5, cell.y - 0.5, cell.w, cell.h))
            p.setFont(title_font)
            p.setPen(QColor(theme.TEXT))
            p.drawText(QRectF(cell.x, cell.y - TITLE_H, cell.w, TITLE_H),
                       Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                       chart_title(j, cell.w, p.fontMetrics()))
            p.setFont(small)
            for frac in (0.0, 0.5, 1.0):
                v = cell.hi - frac * (cell.hi - cell.lo)
                y = cell.y + frac * (cell.h - 1)
                p.setPen(QPen(QColor(48, 54, 61, 140), 1, Qt.PenStyle.DotLine))
                if 0.0 < frac < 1.0:
                    p.drawLine(QPointF(cell.x, y), QPointF(cell.x + cell.w - 1, y))
                p.setPen(QColor(theme.MUTED))
                p.drawText(QRectF(cell.x - AXIS_W, y - 7, AXIS_W - 4, 14),
                           Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"{v:+.2f}")
        p.end()
        ptr = img.constBits()
        ptr.setsize(img.sizeInBytes())
        arr = np.frombuffer(ptr, np.uint8).reshape(h, img.bytesPerLine() // 4, 4)[:, :w]
        return arr.copy()

    def _redraw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (now - self._last_draw < self.min_interval or not self.isVisible()):
            return
        if not self.cells:
            return
        self._last_draw = now
        ok = np.isfinite(self._t)
        off = arm_slice(SIDES.index(self.side)).start
        if (force or now - self._last_fit > self.refit_s) and ok.any():
            self._last_fit = now
            for j, cell in enumerate(self.cells):
                both = np.concatenate([self._lead[ok, off + j], self._fol[ok, off + j]]
                                      + ([self._pred[:, off + j]] if self._pred is not None else []))
                both = both[np.isfinite(both)]
                if both.size:
                    new = fit_range(float(both.min()), float(both.max()), (cell.lo, cell.hi))
                    if new != (cell.lo, cell.hi):
                        cell.lo, cell.hi = new
                        self._bg = None
        if self._bg is None:
            self._bg = self._render_background()
        canvas = self._bg.copy()
        pred = self._pred is not None and ok.any()
        span = self.window_s + (self.future_s if pred else 0.0)  # seconds across a chart
        self.pred_px, self.line_px, self.now_x = [], [], None
        if ok.sum() >= 2:
            ok &= self._t >= self._t[ok][-1] - self.window_s  # the window only: older samples would be drawn
            #                                                   left of the frame, over the labels
        if ok.sum() >= 2:
            t = self._t[ok] - self._t[ok][-1]  # seconds before now (<= 0)
            for j, cell in enumerate(self.cells):
                xs = cell.x + (t + self.window_s) / span * (cell.w - 1)
                # follower wide underneath, leader thin on top: when tracking is good both stay visible
                for data, colour, width in ((self._fol, theme.WARN, 4), (self._lead, theme.ACCENT, 2)):
                    ys = np.clip(cell.rows(data[ok, off + j]), cell.y, cell.y + cell.h - 1)
                    pts = np.stack([xs, ys], axis=1)
                    pts = pts[np.isfinite(pts).all(axis=1)]
                    if data is self._lead:
                        self.line_px.append(pts)
                    # 4 fractional bits: sub-pixel positions, so slow motions stay smooth
                    cv2.polylines(canvas, [np.round(pts * 16).astype(np.int32)], False, _bgr(colour), width,
                                  cv2.LINE_AA, shift=4)
            if pred:
                self._draw_prediction(canvas, self._t[ok][-1], off, span)
        self._canvas_np = canvas
        h, w = canvas.shape[:2]
        self.canvas.image = QImage(canvas.data, w, h, 4 * w, QImage.Format.Format_RGB32)
        self.canvas.update()
        self.redraws += 1

    def _draw_prediction(self, canvas: np.ndarray, now: float, off: int, span: float) -> None:
        """The chunk's actions still to come (times after `now`), dashed, and a dotted line at the present."""
        rel = self._pred_t - now
        keep = (rel >= 0) & (rel <= self.future_s)
        for j, cell in enumerate(self.cells):
            x_now = cell.x + self.window_s / span * (cell.w - 1)
            if j == 0:
                self.now_x = x_now
            cv2.line(canvas, (int(round(x_now)), cell.y), (int(round(x_now)), cell.y + cell.h - 1),
                     _bgr(theme.BORDER), 1)
            if keep.sum() < 2:
                self.pred_px.append(np.zeros((0, 2)))
                continue
            xs = cell.x + (rel[keep] + self.window_s) / span * (cell.w - 1)
            ys = np.clip(cell.rows(self._pred[keep, off + j]), cell.y, cell.y + cell.h - 1)
            pts = np.stack([xs, ys], axis=1)
            pts = pts[np.isfinite(pts).all(axis=1)]
            self.pred_px.append(pts)
            dashes = [np.round(d * 16).astype(np.int32) for d in dashed(pts)]
            if dashes:
                cv2.polylines(canvas, dashes, False, _bgr(PREDICTED), 2, cv2.LINE_AA, shift=4)


def dashed(pts: np.ndarray, on: float = 5.0, off: float = 3.0) -> list[np.ndarray]:
    """A polyline cut into dashes of `on` pixels with `off`-pixel gaps (OpenCV draws no dashed lines)."""
    if len(pts) < 2:
        return []
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
    total = s[-1]
    if total <= 0:
        return []
    out = []
    for a in np.arange(0.0, total, on + off):
        b = min(a + on, total)
        inner = pts[(s > a) & (s < b)]
        ends = [np.array([[np.interp(x, s, pts[:, 0]), np.interp(x, s, pts[:, 1])]]) for x in (a, b)]
        out.append(np.vstack([ends[0], inner, ends[1]]))
    return out
