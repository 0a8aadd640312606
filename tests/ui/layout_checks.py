"""Geometry checks of what the operator sees: texts cut by their widget or by the tab they sit in.

A text counts as cut when it needs more room than its widget has (a label's size hint, a wrapped label's height for
its width, a button's or check box's size hint, a placeholder's advance) or when the widget itself sticks out of
the page it is on (a panel wider than its scroll area). A text that elides on purpose passes when its whole text is
in the tooltip (ui.widgets.ElidedLabel, PathEdit, a placeholder with a tooltip)."""
from __future__ import annotations

import numpy as np
from PyQt6.QtCore import QPoint, Qt
from PyQt6.QtGui import QImage
from PyQt6.QtWidgets import QAbstractButton, QCheckBox, QLabel, QLineEdit, QPushButton, QWidget

from ui.widgets import ElidedLabel, PathEdit


def _name(w: QWidget) -> str:
    text = w.text() if hasattr(w, "text") and callable(w.text) else ""
    return f"{type(w).__name__}({text[:60]!r}) in {type(w.parentWidget()).__name__}"


def _visible(w: QWidget, root: QWidget) -> bool:
    return w.isVisibleTo(root) and w.width() > 0 and w.height() > 0


def horizontally_cut(w: QWidget) -> int:
    """Pixels of `w`'s width hidden by its ancestors (a panel wider than its scroll area's view, a window edge)."""
    x0, x1 = 0, w.width()
    a = w.parentWidget()
    while a is not None:
        left = -w.mapTo(a, QPoint(0, 0)).x()  # the ancestor's rect in w's coordinates
        x0, x1 = max(x0, left), min(x1, left + a.width())
        a = a.parentWidget()
    return w.width() - max(0, x1 - x0)


def cut_texts(root: QWidget) -> list[str]:
    """Every visible label, button, check box and placeholder under `root` whose text does not fit."""
    bad: list[str] = []
    for w in root.findChildren(QWidget):
        if not _visible(w, root) or not isinstance(w, (QLabel, QAbstractButton, QLineEdit)):
            continue
        hidden = horizontally_cut(w)
        if hidden > 1:
            bad.append(f"{_name(w)}: {hidden} px of its {w.width()} px outside the page")
            continue
        if isinstance(w, ElidedLabel):
            if w.shown_text() != w.text() and w.toolTip() != w.text():
                bad.append(f"{_name(w)}: elided without the whole text in its tooltip")
            elif w.shown_text() == w.text() and QLabel.sizeHint(w).width() > w.width() + 1:  # QLabel's own need
                bad.append(f"{_name(w)}: not elided but needs {QLabel.sizeHint(w).width()} px, has {w.width()}")
        elif isinstance(w, QLabel):
            if not w.text() or w.pixmap() is not None and not w.pixmap().isNull():
                continue
            if w.wordWrap():
                need = w.heightForWidth(w.width())
                if need > w.height() + 1:
                    bad.append(f"{_name(w)}: needs {need} px of height, has {w.height()}")
            elif w.sizeHint().width() > w.width() + 1:
                bad.append(f"{_name(w)}: needs {w.sizeHint().width()} px, has {w.width()}")
        elif isinstance(w, (QPushButton, QCheckBox)):
            if w.text() and w.sizeHint().width() > w.width() + 1:
                bad.append(f"{_name(w)}: needs {w.sizeHint().width()} px, has {w.width()}")
        elif isinstance(w, QLineEdit):
            if w.text():
                if isinstance(w, PathEdit) and w.is_elided() and w.toolTip() != w.text():
                    bad.append(f"{_name(w)}: elided without the whole path in its tooltip")
            elif w.placeholderText():
                room = w.width() - 20  # the frame, padding and QLineEdit's own margins
                if w.fontMetrics().horizontalAdvance(w.placeholderText()) > room and not w.toolTip():
                    bad.append(f"placeholder {w.placeholderText()!r}: needs "
                               f"{w.fontMetrics().horizontalAdvance(w.placeholderText())} px, has {room}, no tooltip")
    return bad


def camera_messages_cut(cameras) -> list[str]:
    """A camera tile's message ("connect a rig…", "previews start with teleop…") drawn up to the tile's edges: a
    line too long for the tile, cut by it. Looks at the rendered pixels left and right of the text."""
    bad = []
    for tile in cameras.findChildren(QWidget):
        if type(tile).__name__ != "CameraTile" or not tile.isVisible() or tile.image is not None:
            continue
        img = tile.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
        w, h = img.width(), img.height()
        ptr = img.constBits()
        ptr.setsize(img.sizeInBytes())
        px = np.frombuffer(ptr, np.uint8).reshape(h, img.bytesPerLine() // 4, 4)[:, :w, :3].astype(int)
        band = px[30:h - 28]  # between the caption strips
        edges = np.concatenate([band[:, 2:6], band[:, w - 6:w - 2]], axis=1)
        if (edges.max(axis=2) > 60).any():  # text pixels (the background is #05080c, the border is at 0 / w-1)
            bad.append(f"camera tile {tile.name!r}: message {tile.message!r} reaches the tile's edges")
    return bad


def window_cuts(win) -> list[str]:
    """The current tab's texts, the toolbar's, the live view's (when shown) and the camera messages."""
    from PyQt6.QtWidgets import QToolBar

    page = win.tabs.currentWidget()
    bad = [f"[{win.tabs.tabText(win.tabs.currentIndex())}] {b}" for b in cut_texts(page)]
    bad += [f"[toolbar] {b}" for b in cut_texts(win.findChild(QToolBar))]
    if win.live.isVisible():
        bad += [f"[live] {b}" for b in cut_texts(win.live)] + camera_messages_cut(win.live.cameras)
    return bad


def column_visible(view, column: int) -> bool:
    """A table column shown, with room for its header, and inside the table's view."""
    hdr = view.horizontalHeader()
    if hdr.isSectionHidden(column) or hdr.sectionSize(column) <= 0:
        return False
    x = hdr.sectionViewportPosition(column)
    title = str(view.model().headerData(column, Qt.Orientation.Horizontal))
    return x >= 0 and x + hdr.sectionSize(column) <= view.viewport().width() + 1 and \
        hdr.sectionSize(column) >= hdr.fontMetrics().horizontalAdvance(title)


__all__ = ["camera_messages_cut", "column_visible", "cut_texts", "horizontally_cut", "window_cuts"]
