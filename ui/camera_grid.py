"""Camera previews: a grid of tiles, each the newest frame (resized to the tile, never full size) with its
measured fps and drop counter. Fed by the GUI's poll timer; a tile converts an image only when its frame is new
and its preview interval has passed, so previews cost the control loop nothing but a reference read. Frames are
resized to the tile in OpenCV (GIL released) and painted 1:1."""
from __future__ import annotations

import math
import time

import cv2
import numpy as np
from PyQt6.QtCore import QPointF, QRectF, QSize, Qt
from PyQt6.QtGui import QColor, QFont, QImage, QPainter
from PyQt6.QtWidgets import QGridLayout, QSizePolicy, QWidget

from ui import theme


def fit_size(w: int, h: int, box_w: int, box_h: int) -> tuple[int, int]:
    """The largest (w, h) with the image's aspect ratio inside the box (never upscaled, never zero)."""
    scale = min(box_w / w, box_h / h, 1.0)
    return max(1, round(w * scale)), max(1, round(h * scale))


def preview_image(image: np.ndarray, box_w: int, box_h: int) -> tuple[QImage, np.ndarray]:
    """Frame -> a QImage already at its on-screen size, in the paint engine's native 32-bit format.

    Resizing (area filter) and colour conversion run in OpenCV, which releases the GIL; painting is then a 1:1
    blit. Scaling or converting an RGB888 image in `paintEvent` happens inside a Qt call made from Python, which
    holds the GIL and so delays the control loop thread. Returns the image and the buffer it points into.
    """
    h, w = image.shape[:2]
    tw, th = fit_size(w, h, box_w, box_h)
    small = image if (tw, th) == (w, h) else cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
    code = cv2.COLOR_GRAY2BGRA if small.ndim == 2 else (cv2.COLOR_RGBA2BGRA if small.shape[2] == 4 else cv2.COLOR_RGB2BGRA)
    bgra = cv2.cvtColor(small, code)  # QImage RGB32 is 0xffRRGGBB: B, G, R, A bytes on little-endian machines
    return QImage(bgra.data, tw, th, 4 * tw, QImage.Format.Format_RGB32), bgra


class CameraTile(QWidget):
    def __init__(self, name: str, parent=None):
        super().__init__(parent)
        self.name = name
        self.image: QImage | None = None
        self._buffer: np.ndarray | None = None  # keeps the pixels `image` points into alive
        self.seq = -1
        self.fps = float("nan")
        self.nominal_fps = 0
        self.dropped = 0
        self.status = "idle"  # idle | ok | warn | fail
        self.message = "no signal"
        self.updates = 0
        self.live = True  # live: measured fps and drops at the bottom; playback (episode player): the frame index
        self.setMinimumSize(200, 150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def sizeHint(self) -> QSize:
        return QSize(400, 300)

    def set_frame(self, image: np.ndarray, seq: int) -> None:
        self.image, self._buffer = preview_image(image, max(self.width() - 2, 160), max(self.height() - 2, 120))
        self.seq = seq
        self.updates += 1
        self.update()

    def set_stats(self, fps: float, dropped: int, nominal: int) -> None:
        self.fps, self.dropped, self.nominal_fps = fps, dropped, nominal
        if not math.isfinite(fps) or fps <= 0:
            self.status = "fail" if self.image is not None else "idle"
        elif fps < 0.8 * nominal:
            self.status = "warn"
        else:
            self.status = "warn" if dropped else "ok"
        self.update()

    def pause(self, message: str) -> None:
        """Keep the last image, but say no frames flow now (no stale green fps)."""
        self.message, self.status, self.fps, self.dropped = message, "idle", float("nan"), 0
        self.update()

    def clear(self, message: str = "no signal") -> None:
        self.image, self.seq, self.message, self.status = None, -1, message, "idle"
        self.fps, self.dropped = float("nan"), 0
        self.update()

    def paintEvent(self, _ev) -> None:
        p = QPainter(self)
        r = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        p.fillRect(r, QColor("#05080c"))
        if self.image is not None:
            iw, ih = self.image.width(), self.image.height()
            if iw <= r.width() and ih <= r.height():  # the usual case: a blit at the size it was made for
                p.drawImage(QPointF(round(r.x() + (r.width() - iw) / 2), round(r.y() + (r.height() - ih) / 2)),
                            self.image)
            else:  # the tile shrank since the frame arrived; the next frame is made to fit again
                w, h = fit_size(iw, ih, int(r.width()), int(r.height()))
                p.drawImage(QRectF(r.x() + (r.width() - w) / 2, r.y() + (r.height() - h) / 2, w, h), self.image)
        else:
            p.setPen(QColor(theme.MUTED))
            p.drawText(r.adjusted(10, 26, -10, -24), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                       self.message)  # between the caption strips; a long message wraps
        colour = {"ok": theme.OK, "warn": theme.WARN, "fail": theme.FAIL}.get(self.status, theme.IDLE)
        p.setPen(QColor(theme.BORDER))
        p.drawRect(r)
        # caption strips: name on top, measured fps and drops at the bottom
        f = QFont(self.font())
        f.setPointSizeF(10)
        f.setBold(True)
        p.setFont(f)
        top = QRectF(r.x(), r.y(), r.width(), 24)
        p.fillRect(top, QColor(0, 0, 0, 165))
        p.setPen(QColor(theme.TEXT))
        p.drawText(top.adjusted(8, 0, -8, 0), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, self.name)
        bottom = QRectF(r.x(), r.bottom() - 22, r.width(), 22)
        p.fillRect(bottom, QColor(0, 0, 0, 165))
        if not self.live:
            p.setPen(QColor(theme.MUTED))
            p.drawText(bottom.adjusted(8, 0, -8, 0), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                       f"frame {self.seq}" if self.seq >= 0 else "")
            p.end()
            return
        fps = "— fps" if not math.isfinite(self.fps) else f"{self.fps:.1f} fps"
        p.setPen(QColor(colour))
        p.drawText(bottom.adjusted(8, 0, -8, 0), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, f"● {fps}")
        p.setPen(QColor(theme.WARN if self.dropped else theme.MUTED))
        p.drawText(bottom.adjusted(8, 0, -8, 0), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight,
                   f"drops {self.dropped}")
        p.end()


class CameraGrid(QWidget):
    """Tiles in a grid (2 columns for up to 4 cameras). `feed(frames)` from the poll timer, `set_stats(stats)`."""

    def __init__(self, parent=None, preview_hz: float = 15.0):
        super().__init__(parent)
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(6)
        self.tiles: dict[str, CameraTile] = {}
        self.min_interval = 1.0 / preview_hz
        self._last = 0.0
        self.set_cameras([])

    def set_cameras(self, names: list[str], fps: dict[str, int] | None = None) -> None:
        for t in self.tiles.values():
            t.setParent(None)
            t.deleteLater()
        self.tiles = {}
        if not names:
            names_ = ["no cameras"]
        else:
            names_ = list(names)
        cols = 1 if len(names_) == 1 else 2
        for i, n in enumerate(names_):
            tile = CameraTile(n)
            tile.nominal_fps = (fps or {}).get(n, 0)
            if not names:
                tile.message = "connect a rig to see its cameras"
            else:
                self.tiles[n] = tile
            self.grid.addWidget(tile, i // cols, i % cols)
            if not names:
                self._placeholder = tile

    def feed(self, frames: dict) -> None:
        now = time.monotonic()
        if now - self._last < self.min_interval:
            return
        self._last = now
        for name, fr in frames.items():
            tile = self.tiles.get(name)
            if tile is not None and fr is not None and fr.seq != tile.seq and tile.isVisible():
                tile.set_frame(fr.image, fr.seq)

    def set_stats(self, stats: dict) -> None:
        for name, st in stats.items():
            tile = self.tiles.get(name)
            if tile is not None:
                tile.set_stats(st.fps, st.dropped, tile.nominal_fps)

    def pause(self, message: str) -> None:
        for t in self.tiles.values():
            t.pause(message)

    def clear(self, message: str = "no signal") -> None:
        for t in self.tiles.values():
            t.clear(message)
