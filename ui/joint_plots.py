"""Live joint plots: leader (the command source) vs follower per joint, one small plot per joint of one arm.

Data arrive from the GUI's poll timer (~20 Hz, i.e. already a downsample of the 50 Hz loop) into a fixed ring
buffer; curves are redrawn at most `redraw_hz`. Also used by the episode player (static data + a cursor line).
"""
from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import QButtonGroup, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from drivers.arm import JOINT_NAMES
from ui import theme

pg.setConfigOptions(antialias=False, background=theme.BG, foreground=theme.MUTED, useOpenGL=False)

LEADER_PEN = pg.mkPen(theme.ACCENT, width=2)
FOLLOWER_PEN = pg.mkPen(theme.WARN, width=2)
COMMAND_PEN = pg.mkPen("#8b949e", width=1, style=Qt.PenStyle.DashLine)


def _small_font():
    from PyQt6.QtGui import QFont

    f = QFont()
    f.setPointSizeF(7.5)
    return f


class JointPlots(QWidget):
    sideChanged = pyqtSignal(str)

    def __init__(self, parent=None, window_s: float = 10.0, sample_hz: float = 20.0, redraw_hz: float = 10.0,
                 columns: int = 4, cursor: bool = False):
        super().__init__(parent)
        self.side = "left"
        self.n = int(window_s * sample_hz)
        self.min_interval = 1.0 / redraw_hz
        self._last_draw = 0.0
        self._t = np.full(self.n, np.nan)
        self._lead = np.full((self.n, 14), np.nan)
        self._fol = np.full((self.n, 14), np.nan)
        self._count = 0
        self._last_index = -1
        self.redraws = 0

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        head = QHBoxLayout()
        self.title = QLabel("JOINTS")
        self.title.setProperty("class", "caption")
        head.addWidget(self.title)
        head.addSpacing(12)
        legend = QLabel(f'<span style="color:{theme.ACCENT}">━━ leader</span>&nbsp;&nbsp;&nbsp;'
                        f'<span style="color:{theme.WARN}">━━ follower</span>')
        head.addWidget(legend)
        head.addStretch(1)
        self.buttons = QButtonGroup(self)
        for side in ("left", "right"):
            b = QPushButton(f"{side} arm")
            b.setCheckable(True)
            b.setChecked(side == "left")
            b.setMinimumWidth(90)
            b.clicked.connect(lambda _=False, s=side: self.set_side(s))
            self.buttons.addButton(b)
            head.addWidget(b)
        lay.addLayout(head)
        self.glw = pg.GraphicsLayoutWidget()
        self.glw.ci.setSpacing(2)
        self.glw.ci.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.glw, 1)
        self.plots: list[pg.PlotItem] = []
        self.lead_curves, self.fol_curves, self.cursors = [], [], []
        for j, name in enumerate(JOINT_NAMES):
            p = self.glw.addPlot(row=j // columns, col=j % columns)
            p.setTitle(f'<span style="color:{theme.TEXT}; font-size:8pt">{name.replace("_", " ")}</span>', size="8pt")
            p.titleLabel.setMaximumHeight(16)
            p.showGrid(x=False, y=True, alpha=0.15)
            p.setMenuEnabled(False)
            p.setMouseEnabled(x=False, y=False)
            p.hideButtons()
            p.getAxis("bottom").setStyle(showValues=False)
            p.getAxis("left").setWidth(36)
            p.getAxis("left").setStyle(tickFont=_small_font(), tickTextOffset=3)
            p.setClipToView(True)
            self.lead_curves.append(p.plot(pen=LEADER_PEN))
            self.fol_curves.append(p.plot(pen=FOLLOWER_PEN))
            if cursor:
                line = pg.InfiniteLine(angle=90, pen=pg.mkPen(theme.TEXT, width=1))
                p.addItem(line)
                self.cursors.append(line)
            self.plots.append(p)

    # -- live ------------------------------------------------------------------------------------------------
    def set_side(self, side: str) -> None:
        self.side = side
        for b in self.buttons.buttons():
            b.setChecked(b.text().startswith(side))
        self.sideChanged.emit(side)
        if not self.cursors:
            self._redraw(force=True)

    def reset(self) -> None:
        self._t[:] = np.nan
        self._lead[:] = np.nan
        self._fol[:] = np.nan
        self._count = 0
        self._last_index = -1
        self._redraw(force=True)

    def push(self, tick) -> None:
        """Append one sample from a Tick (skips a tick already seen)."""
        if tick is None or tick.index == self._last_index:
            return
        self._last_index = tick.index
        self._t = np.roll(self._t, -1)
        self._lead = np.roll(self._lead, -1, axis=0)
        self._fol = np.roll(self._fol, -1, axis=0)
        self._t[-1] = tick.t
        self._lead[-1] = tick.action
        self._fol[-1] = tick.qpos
        self._count += 1
        self._redraw()

    def _redraw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (now - self._last_draw < self.min_interval or not self.isVisible()):
            return
        self._last_draw = now
        ok = np.isfinite(self._t)
        t = self._t[ok] - (self._t[ok][-1] if ok.any() else 0.0)
        off = 0 if self.side == "left" else 7
        for j in range(7):
            self.lead_curves[j].setData(t, self._lead[ok, off + j])
            self.fol_curves[j].setData(t, self._fol[ok, off + j])
        self.redraws += 1

    # -- static (episode player) -----------------------------------------------------------------------------
    def set_episode(self, t: np.ndarray, action: np.ndarray, qpos: np.ndarray) -> None:
        self._ep = (np.asarray(t), np.asarray(action), np.asarray(qpos))
        self._draw_episode()

    def _draw_episode(self) -> None:
        t, action, qpos = self._ep
        off = 0 if self.side == "left" else 7
        for j in range(7):
            self.lead_curves[j].setData(t, action[:, off + j])
            self.fol_curves[j].setData(t, qpos[:, off + j])
            self.plots[j].enableAutoRange()

    def set_cursor(self, x: float) -> None:
        for c in self.cursors:
            c.setValue(x)

    def clear_episode(self) -> None:
        for c in (*self.lead_curves, *self.fol_curves):
            c.setData([], [])
