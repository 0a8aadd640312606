"""Camera previews: frames are resized to the tile keeping their aspect ratio, colours survive the conversion to
Qt's 32-bit format, and painting shows the frame (read back from the rendered widget)."""
from __future__ import annotations

import numpy as np
import pytest

from ui.camera_grid import CameraGrid, fit_size, preview_image


@pytest.mark.parametrize("w,h,box,expect", [
    (640, 480, (320, 320), (320, 240)),   # wider than tall: width-limited
    (640, 480, (1000, 150), (200, 150)),  # height-limited
    (160, 120, (800, 600), (160, 120)),   # never upscaled
])
def test_fit_size(w, h, box, expect):
    assert fit_size(w, h, *box) == expect


def test_preview_image_keeps_colours():
    img = np.zeros((480, 640, 3), np.uint8)
    img[:, :320] = (230, 20, 40)   # left half red-ish (RGB)
    img[:, 320:] = (10, 200, 90)   # right half green-ish
    q, buf = preview_image(img, 320, 240)
    assert (q.width(), q.height()) == (320, 240)
    left, right = q.pixelColor(40, 120), q.pixelColor(280, 120)
    assert (left.red(), left.green(), left.blue()) == (230, 20, 40)
    assert (right.red(), right.green(), right.blue()) == (10, 200, 90)
    assert buf.shape == (240, 320, 4)


def test_grid_paints_the_newest_frame(qtbot):
    from drivers.cameras.base import Frame

    grid = CameraGrid(preview_hz=1000)
    qtbot.addWidget(grid)
    grid.resize(800, 600)
    grid.set_cameras(["cam_high", "cam_low"], {"cam_high": 50, "cam_low": 50})
    grid.show()
    qtbot.waitExposed(grid)
    img = np.full((480, 640, 3), (0, 0, 255), np.uint8)
    grid.feed({"cam_high": Frame(image=img, t=0.0, seq=7)})
    tile = grid.tiles["cam_high"]
    assert tile.seq == 7 and tile.updates == 1
    assert tile.image.width() <= tile.width() and tile.image.height() <= tile.height()
    shot = tile.grab().toImage()
    c = shot.pixelColor(tile.width() // 2, tile.height() // 2)
    assert (c.red(), c.green(), c.blue()) == (0, 0, 255)
    assert grid.tiles["cam_low"].image is None  # no frame for it yet: it shows its message, not a stale image
    grid.feed({"cam_high": Frame(image=img, t=0.0, seq=7)})
    assert tile.updates == 1  # same sequence number: not converted again
