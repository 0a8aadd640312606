"""Episode player: all cameras of one step side by side, a scrubber, play/pause, joint plots with a cursor and
the segment timeline, all on the same step."""
from __future__ import annotations

import numpy as np
from PyQt6.QtCore import Qt, QTimer, pyqtSignal
from PyQt6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSlider, QStyle, QVBoxLayout, QWidget

from drivers.arm import DEFAULT_CONTROL_HZ

from ui.camera_grid import CameraTile
from ui.episodes.timeline import SegmentTimeline
from ui.joint_plots import JointPlots


class EpisodePlayer(QWidget):
    stepChanged = pyqtSignal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.reader = None
        self.info = None
        self.t = np.zeros(0)
        self.step = 0
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(6)
        self.title = QLabel("No episode selected")
        self.title.setStyleSheet("font-size: 15px; font-weight: 700;")
        lay.addWidget(self.title)
        self.cam_row = QHBoxLayout()
        self.cam_row.setSpacing(6)
        lay.addLayout(self.cam_row, 5)
        self.tiles: dict[str, CameraTile] = {}
        ctl = QHBoxLayout()
        self.play_btn = QPushButton("▶")
        self.play_btn.setFixedWidth(48)
        self.play_btn.setToolTip("Play / pause (Space)")
        self.slider = JumpSlider(Qt.Orientation.Horizontal)
        self.pos_label = QLabel("—")
        self.pos_label.setMinimumWidth(150)
        self.pos_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.pos_label.setStyleSheet("font-family: 'DejaVu Sans Mono'; font-size: 13px;")
        ctl.addWidget(self.play_btn)
        ctl.addWidget(self.slider, 1)
        ctl.addWidget(self.pos_label)
        lay.addLayout(ctl)
        self.timeline = SegmentTimeline()
        lay.addWidget(self.timeline)
        self.plots = JointPlots(columns=4)
        self.plots.title.setText("JOINTS")  # short: a long caption widened the player and squeezed the table
        self.plots.title.setToolTip("leader = the recorded action, follower = the state")
        lay.addWidget(self.plots, 4)
        self._timer = QTimer(self)
        self._timer.setInterval(40)
        self._timer.timeout.connect(self._advance)
        self.play_btn.clicked.connect(self.toggle_play)
        self.slider.valueChanged.connect(self.set_step)
        self.timeline.cursorMoved.connect(self.set_step)

    # -- loading -------------------------------------------------------------------------------------------------
    def load(self, path) -> None:
        from recorder.reader import EpisodeReader

        self.unload()
        r = EpisodeReader(path)
        self.reader, self.info = r, r.info
        n = r.info.steps
        t = r.t
        self.t = (t - t[0]) if t is not None and len(t) else np.arange(n) / (r.info.control_hz or DEFAULT_CONTROL_HZ)
        for name in r.info.cameras:
            tile = CameraTile(name)
            tile.live = False
            tile.setMinimumSize(160, 120)
            self.tiles[name] = tile
            self.cam_row.addWidget(tile)
        self.plots.set_episode(self.t, r.action, r.qpos)
        self.timeline.set_episode(n, r.info.segments)
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, n - 1))
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        self.title.setText(f"{r.info.name} · {r.info.task or 'no task prompt'}")
        self.set_step(0)

    def unload(self) -> None:
        self.pause()
        if self.reader is not None:
            self.reader.close()
        self.reader, self.info = None, None
        for tile in self.tiles.values():
            tile.setParent(None)
            tile.deleteLater()
        self.tiles = {}
        self.plots.clear_episode()
        self.timeline.set_episode(0, [])
        self.title.setText("No episode selected")
        self.pos_label.setText("—")

    # -- scrubbing -----------------------------------------------------------------------------------------------
    def set_step(self, i: int) -> None:
        if self.reader is None:
            return
        n = self.info.steps
        i = max(0, min(int(i), n - 1))
        self.step = i
        for name, tile in self.tiles.items():
            try:
                img = self.reader.image(name, i)
                tile.image = None
                tile.set_frame(img, i + 1)  # counted from 1, as the position label next to it
                tile.status = "ok"
            except (KeyError, ValueError, OSError) as exc:
                tile.clear(f"cannot decode: {exc}")
        x = float(self.t[i]) if i < len(self.t) else 0.0
        self.plots.set_cursor(x)
        self.timeline.set_cursor(i)
        if self.slider.value() != i:
            self.slider.blockSignals(True)
            self.slider.setValue(i)
            self.slider.blockSignals(False)
        seg = next((s.text for s in reversed(self.timeline.segments) if s.start <= i < s.end), "")
        self.pos_label.setText(f"{x:6.2f} s · {i + 1}/{n}")
        self.pos_label.setToolTip(seg)
        self.stepChanged.emit(i)

    def toggle_play(self) -> None:
        if self._timer.isActive():
            self.pause()
        elif self.reader is not None:
            if self.step >= self.info.steps - 1:
                self.set_step(0)
            self._timer.start()
            self.play_btn.setText("❚❚")

    def pause(self) -> None:
        self._timer.stop()
        self.play_btn.setText("▶")

    def _advance(self) -> None:
        if self.reader is None:
            return self.pause()
        hz = self.info.control_hz or DEFAULT_CONTROL_HZ
        nxt = self.step + max(1, int(round(hz * self._timer.interval() / 1000)))
        if nxt >= self.info.steps:
            self.set_step(self.info.steps - 1)
            self.pause()
        else:
            self.set_step(nxt)



class JumpSlider(QSlider):
    """A left click on the groove moves the handle there (the platform default moves one page toward it)."""

    def mousePressEvent(self, e) -> None:  # noqa: N802 - Qt's name
        if e.button() == Qt.MouseButton.LeftButton and self.maximum() > self.minimum():
            span = max(1, self.width())
            value = QStyle.sliderValueFromPosition(self.minimum(), self.maximum(), int(e.position().x()), span)
            self.setValue(value)
        super().mousePressEvent(e)
