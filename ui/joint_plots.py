"""Joint plots of a recorded episode (the player): leader (= action) vs follower (= state) per joint of one arm,
with a cursor at the current step. pyqtgraph, drawn once per episode; the live charts are `ui.strip_charts`."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import QButtonGroup, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from drivers.arm import ARM_DOF, JOINT_NAMES, SIDES, arm_slice
from ui import theme

pg.setConfigOptions(antialias=False, background=theme.BG, foreground=theme.MUTED, useOpenGL=False)

LEADER_PEN = pg.mkPen(theme.ACCENT, width=2)
FOLLOWER_PEN = pg.mkPen(theme.WARN, width=2)


def _small_font():
    from PyQt6.QtGui import QFont

    f = QFont()
    f.setPointSizeF(7.5)
    return f


def joint_unit(name: str, short: bool = False) -> str:
    """The axis unit of a joint's chart: radians for the arm joints, the normalized 0-1 range for a gripper.
    `short`: for the player's four columns, whose titles' text widths are their minimum widths (pyqtgraph)."""
    if name == "gripper":
        return "1 = open" if short else "0 closed – 1 open"
    return "rad"


class SideHeader(QWidget):
    """Caption, leader/follower legend and the left/right arm switch shared by the live charts and the player."""
    sideChanged = pyqtSignal(str)

    def __init__(self, caption: str, parent=None):
        super().__init__(parent)
        head = QHBoxLayout(self)
        head.setContentsMargins(0, 0, 0, 0)
        self.title = QLabel(caption)
        self.title.setProperty("class", "caption")
        head.addWidget(self.title)
        head.addSpacing(12)
        self.legend = QLabel("")
        head.addWidget(self.legend)
        self.set_command_label("leader")
        self.extra = QLabel("")  # an extra legend entry (the live charts' predicted chunk), hidden when empty
        self.extra.hide()
        head.addWidget(self.extra)
        head.addStretch(1)
        self.buttons = QButtonGroup(self)
        for side in ("left", "right"):
            b = QPushButton(f"{side} arm")
            b.setCheckable(True)
            b.setChecked(side == "left")
            b.setMinimumWidth(90)
            b.clicked.connect(lambda _=False, s=side: self.sideChanged.emit(s))
            self.buttons.addButton(b)
            head.addWidget(b)

    def set_command_label(self, name: str) -> None:
        self.legend.setText(f'<span style="color:{theme.ACCENT}">━━ {name}</span>&nbsp;&nbsp;&nbsp;'
                            f'<span style="color:{theme.WARN}">━━ follower</span>')

    def set_extra_legend(self, html: str) -> None:
        self.extra.setText(html)
        self.extra.setVisible(bool(html))

    def set_side(self, side: str) -> None:
        for b in self.buttons.buttons():
            b.setChecked(b.text().startswith(side))

    @classmethod
    def on_top_of(cls, owner: QWidget, caption: str = "JOINTS") -> QVBoxLayout:
        """Give `owner` a column layout with this header on top, wired to `owner.set_side`; returns the layout."""
        lay = QVBoxLayout(owner)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        owner.header = cls(caption)
        owner.title = owner.header.title
        owner.header.sideChanged.connect(owner.set_side)
        lay.addWidget(owner.header)
        return lay


class JointPlots(QWidget):
    sideChanged = pyqtSignal(str)

    def __init__(self, parent=None, columns: int = 4):
        super().__init__(parent)
        self.side = "left"
        self._ep: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        lay = SideHeader.on_top_of(self)
        self.glw = pg.GraphicsLayoutWidget()
        self.glw.ci.setSpacing(2)
        self.glw.ci.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.glw, 1)
        self.plots: list[pg.PlotItem] = []
        self.lead_curves, self.fol_curves, self.cursors = [], [], []
        for j, name in enumerate(JOINT_NAMES):
            p = self.glw.addPlot(row=j // columns, col=j % columns)
            p.setTitle(f'<span style="color:{theme.TEXT}; font-size:8pt">{name.replace("_", " ")} '
                       f'<span style="color:{theme.MUTED}">({joint_unit(name, short=True)})</span></span>', size="8pt")
            p.titleLabel.setMaximumHeight(16)
            p.showGrid(x=False, y=True, alpha=0.15)
            p.setMenuEnabled(False)
            p.setMouseEnabled(x=False, y=False)
            p.hideButtons()
            p.getAxis("bottom").setStyle(showValues=False)
            p.getAxis("left").setWidth(36)
            p.getAxis("left").setStyle(tickFont=_small_font(), tickTextOffset=3)
            self.lead_curves.append(p.plot(pen=LEADER_PEN))
            self.fol_curves.append(p.plot(pen=FOLLOWER_PEN))
            line = pg.InfiniteLine(angle=90, pen=pg.mkPen(theme.TEXT, width=1))
            p.addItem(line)
            self.cursors.append(line)
            self.plots.append(p)

    def set_side(self, side: str) -> None:
        self.side = side
        self.header.set_side(side)
        if self._ep is not None:
            self._draw_episode()
        self.sideChanged.emit(side)

    def set_episode(self, t: np.ndarray, action: np.ndarray, qpos: np.ndarray) -> None:
        self._ep = (np.asarray(t), np.asarray(action), np.asarray(qpos))
        self._draw_episode()

    def _draw_episode(self) -> None:
        t, action, qpos = self._ep
        off = arm_slice(SIDES.index(self.side)).start
        for j in range(ARM_DOF):
            self.lead_curves[j].setData(t, action[:, off + j])
            self.fol_curves[j].setData(t, qpos[:, off + j])
            self.plots[j].enableAutoRange()

    def set_cursor(self, x: float) -> None:
        for c in self.cursors:
            c.setValue(x)

    def clear_episode(self) -> None:
        self._ep = None
        for c in (*self.lead_curves, *self.fol_curves):
            c.setData([], [])
