"""Live joint charts: each joint's cell shows the leader and the follower at the right heights, newest at the right
edge, for the selected arm; ranges follow the data. Checked on the pixels of the rendered widget."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from PyQt6.QtGui import QColor

from ui import theme
from ui.strip_charts import LiveJointCharts, fit_range


def _tick(i, lead, fol):
    return SimpleNamespace(index=i, t=i * 0.05, action=np.asarray(lead, np.float32), qpos=np.asarray(fol, np.float32))


def _pixels_of(img, cell, colour: str, tol: int = 40):
    """(rows, cols) inside `cell` whose colour is close to `colour`."""
    c = QColor(colour)
    arr = img[cell.y:cell.y + cell.h, cell.x:cell.x + cell.w, :3].astype(int)  # B, G, R
    d = np.abs(arr - np.array([c.blue(), c.green(), c.red()])).sum(axis=2)
    rows, cols = np.nonzero(d < tol)
    return rows + cell.y, cols + cell.x


def test_fit_range_has_hysteresis():
    assert fit_range(-0.1, 0.1, (-1.0, 1.0)) != (-1.0, 1.0)  # data fill < 1/4 of the range: zoom in
    assert fit_range(-0.6, 0.7, (-1.0, 1.0)) == (-1.0, 1.0)  # inside and filling it: keep (no tick jitter)
    lo, hi = fit_range(-0.5, 2.0, (-1.0, 1.0))  # data left the range: grow, with a margin
    assert lo < -0.5 and hi > 2.0


def test_charts_draw_leader_and_follower_where_they_are(qtbot):
    w = LiveJointCharts(redraw_hz=1000, refit_s=0.0)
    qtbot.addWidget(w)
    w.resize(1000, 360)
    w.show()
    qtbot.waitExposed(w)
    lead = np.r_[np.full(7, 0.5), np.full(7, -0.5)]   # left arm: leader above follower; right arm: below
    fol = np.r_[np.full(7, -0.5), np.full(7, 0.5)]
    for i in range(60):
        w.push(_tick(i, lead, fol))
    w._redraw(force=True)
    img = w._canvas_np
    assert w.redraws > 0 and img.shape[:2] == (w.canvas.height(), w.canvas.width())
    for cell in w.cells:
        lr, lc = _pixels_of(img, cell, theme.ACCENT)
        fr, fc = _pixels_of(img, cell, theme.WARN)
        assert len(lr) > 20 and len(fr) > 20
        assert lr.mean() < fr.mean()  # screen rows grow downwards: leader (+0.5) above follower (-0.5)
        assert lc.max() >= cell.x + cell.w - 3  # newest sample at the right edge
        assert lc.min() > cell.x + cell.w // 2  # 60 samples at 20 Hz = 3 s of a 10 s window: right part only
    w.set_side("right")
    img = w._canvas_np
    for cell in w.cells:
        lr, _ = _pixels_of(img, cell, theme.ACCENT)
        fr, _ = _pixels_of(img, cell, theme.WARN)
        assert lr.mean() > fr.mean()
    # what is painted on screen is the canvas
    shot = w.canvas.grab().toImage()
    cell = w.cells[0]
    rows, cols = _pixels_of(img, cell, theme.WARN, tol=3)
    px = shot.pixelColor(int(cols[0]), int(rows[0]))
    assert abs(px.red() - QColor(theme.WARN).red()) < 4


def test_reset_clears_the_curves(qtbot):
    w = LiveJointCharts(redraw_hz=1000)
    qtbot.addWidget(w)
    w.resize(800, 300)
    w.show()
    qtbot.waitExposed(w)
    for i in range(20):
        w.push(_tick(i, np.full(14, 0.3), np.full(14, 0.2)))
    w._redraw(force=True)  # pushes faster than redraw_hz are coalesced; show the latest
    assert len(_pixels_of(w._canvas_np, w.cells[0], theme.ACCENT)[0]) > 0
    w.reset()
    assert len(_pixels_of(w._canvas_np, w.cells[0], theme.ACCENT)[0]) == 0


def test_the_charts_stay_inside_their_frames_across_a_new_trials_clock(qtbot):
    """Issue 21: after a trial the next one's rig clock restarts (the simulation at 0) and the buffer holds more
    than the window: every drawn sample stays inside its joint's frame, never over the labels or the next chart;
    the thin line is named for what it is (the command in trials)."""
    w = LiveJointCharts(redraw_hz=1000, refit_s=0.0)
    qtbot.addWidget(w)
    w.resize(1000, 360)
    w.show()
    qtbot.waitExposed(w)
    q = np.zeros(14)

    def inside() -> None:
        w._redraw(force=True)
        assert w.line_px and all(len(p) for p in w.line_px)
        for cell, pts in zip(w.cells, w.line_px):
            assert pts[:, 0].min() >= cell.x - 1e-6 and pts[:, 0].max() <= cell.x + cell.w - 1 + 1e-6, \
                (cell, pts[:, 0].min(), pts[:, 0].max())

    for i in range(400):  # 40 s sampled at 10 Hz (a busy GUI polls late): the buffer spans twice the window
        w.push(SimpleNamespace(index=i, t=100.0 + i * 0.1, action=q + np.sin(i / 9), qpos=q))
    inside()
    for i in range(30):  # the next trial: its clock starts again near 0
        w.push(SimpleNamespace(index=1000 + i, t=i * 0.05, action=q - 0.3, qpos=q))
    inside()
    w.set_command_label("command (policy / takeover)")
    assert "command (policy / takeover)" in w.header.legend.text() and "leader" not in w.header.legend.text()


def test_spin_boxes_show_their_arrows(qtbot):
    """Issue 21: the styled spin boxes drew no arrows. With the app's style sheet, the up and down buttons show a
    light arrow on the dark button (pixels of the rendered widget)."""
    from PyQt6.QtWidgets import QApplication, QSpinBox

    theme.apply(QApplication.instance())
    box = QSpinBox()
    qtbot.addWidget(box)
    box.setRange(0, 10)
    box.setValue(5)
    box.resize(120, 34)
    box.show()
    qtbot.waitExposed(box)
    img = box.grab().toImage()
    w, h = img.width(), img.height()
    light = 0
    for x in range(w - 18, w - 2):
        for y in range(2, h - 2):
            c = img.pixelColor(x, y)
            light += (c.red() + c.green() + c.blue()) / 3 > 150
    assert light >= 8, light  # the two arrows' strokes


def test_every_chart_title_fits_its_cell_at_the_apps_size(qtbot):
    """The gripper's '(0 closed – 1 open)' ran past its cell in the 1280x800 window: the short unit is used there."""
    from PyQt6.QtGui import QFont, QFontMetrics

    from ui.strip_charts import chart_title

    w = LiveJointCharts()
    qtbot.addWidget(w)
    w.resize(760, 220)  # the charts' size in the default window
    w.show()
    qtbot.waitExposed(w)
    font = QFont()
    font.setPointSizeF(8.5)  # the titles' font (_render_background)
    fm = QFontMetrics(font)
    titles = [chart_title(j, cell.w, fm) for j, cell in enumerate(w.cells)]
    assert all(fm.horizontalAdvance(t) <= cell.w for t, cell in zip(titles, w.cells)), titles
    assert all("(" in t and t.endswith(")") for t in titles), titles  # each with its unit, none elided
