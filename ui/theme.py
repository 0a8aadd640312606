"""Colours, fonts and the application style sheet: one place, so status colours mean the same everywhere."""
from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import QSize
from PyQt6.QtGui import QColor, QFont, QIcon, QImage, QPainter, QPalette, QPixmap
from PyQt6.QtWidgets import QApplication, QProxyStyle, QStyle

# status colours: green = good / running, amber = attention, red = fault / e-stop, grey = inactive
OK = "#3fb950"
WARN = "#d29922"
FAIL = "#f85149"
IDLE = "#8b949e"
ACCENT = "#58a6ff"

BG = "#0d1117"
PANEL = "#161b22"
RAISED = "#1f2630"
BORDER = "#30363d"
TEXT = "#e6edf3"
MUTED = "#8b949e"

STATUS_COLOURS = {"pass": OK, "ok": OK, "good": OK, "warn": WARN, "fail": FAIL, "error": FAIL, "n/a": IDLE,
                  "idle": IDLE, "success": OK, "failure": FAIL, "unlabeled": IDLE}

# per-joint plot colours (7 joints: 6 + gripper)
JOINT_COLOURS = ["#58a6ff", "#3fb950", "#d29922", "#bc8cff", "#ff7b72", "#39c5cf", "#f0883e"]


def status_colour(status: str) -> str:
    return STATUS_COLOURS.get(str(status).lower(), IDLE)


CHECK_SVG = (Path(__file__).parent / "assets" / "check.svg").as_posix()
# a styled spin box draws no arrows of its own: these, light on the dark buttons
UP_SVG = (Path(__file__).parent / "assets" / "arrow_up.svg").as_posix()
DOWN_SVG = (Path(__file__).parent / "assets" / "arrow_down.svg").as_posix()

STYLE = f"""
QWidget {{ background: {BG}; color: {TEXT}; font-size: 13px; }}
QMainWindow::separator {{ background: {BORDER}; width: 1px; height: 1px; }}
QToolBar {{ background: {PANEL}; border-bottom: 1px solid {BORDER}; spacing: 8px; padding: 6px; }}
QStatusBar {{ background: {PANEL}; border-top: 1px solid {BORDER}; color: {MUTED}; }}
QStatusBar QLabel {{ background: transparent; }}
QTabWidget::pane {{ border: none; }}
QTabBar::tab {{ background: {BG}; color: {MUTED}; padding: 9px 22px; border: none; font-size: 14px;
               font-weight: 600; border-bottom: 3px solid transparent; }}
QTabBar::tab:selected {{ color: {TEXT}; border-bottom: 3px solid {ACCENT}; }}
QTabBar::tab:hover {{ color: {TEXT}; }}
QGroupBox {{ background: {PANEL}; border: 1px solid {BORDER}; border-radius: 8px; margin-top: 22px;
            padding: 12px 10px 10px 10px; font-weight: 600; }}
QGroupBox::title {{ subcontrol-origin: margin; left: 10px; top: 2px; padding: 0 4px; color: {MUTED};
                   font-size: 12px; letter-spacing: 1px; text-transform: uppercase; background: transparent; }}
QGroupBox QWidget {{ background: transparent; }}
QGroupBox QLineEdit, QGroupBox QComboBox, QGroupBox QSpinBox, QGroupBox QDoubleSpinBox, QGroupBox QPlainTextEdit,
QGroupBox QTableView, QGroupBox QTreeWidget, QGroupBox QListWidget {{ background: {BG}; }}
QLabel {{ background: transparent; }}
QPushButton {{ background: {RAISED}; border: 1px solid {BORDER}; border-radius: 6px; padding: 7px 14px;
              font-weight: 600; min-height: 20px; }}
QPushButton:hover {{ border-color: {ACCENT}; }}
QPushButton:pressed {{ background: {BORDER}; }}
QPushButton:checked {{ background: #1a2a44; border-color: {ACCENT}; color: {TEXT}; font-weight: 700; }}
QPushButton:disabled {{ color: #56606b; border-color: #252b33; background: {PANEL}; }}
QPushButton[role="primary"] {{ background: #1f6feb; border-color: #1f6feb; color: white; }}
QPushButton[role="primary"]:disabled {{ background: #1a2a44; border-color: #1a2a44; color: #6e7b8c; }}
QPushButton[role="go"] {{ background: #238636; border-color: #2ea043; color: white; }}
QPushButton[role="go"]:disabled {{ background: #17301f; border-color: #17301f; color: #5f7a66; }}
QPushButton[role="danger"] {{ background: #3d1417; border-color: {FAIL}; color: #ffb4ae; }}
QPushButton#estop {{ background: #da3633; border: 2px solid #ff7b72; color: white; font-size: 15px;
                    font-weight: 800; padding: 8px 22px; border-radius: 6px; letter-spacing: 1px; }}
QPushButton#estop:hover {{ background: #f85149; }}
QPushButton#estop[engaged="true"] {{ background: {WARN}; border-color: #f2cc60; color: #1b1300; }}
QLineEdit, QComboBox, QSpinBox, QDoubleSpinBox, QPlainTextEdit {{ background: {BG}; border: 1px solid {BORDER};
    border-radius: 5px; padding: 5px 7px; selection-background-color: #1f6feb; }}
QLineEdit:focus, QComboBox:focus, QSpinBox:focus, QDoubleSpinBox:focus, QPlainTextEdit:focus {{ border-color: {ACCENT}; }}
QSpinBox::up-button, QDoubleSpinBox::up-button {{ subcontrol-origin: border; subcontrol-position: top right;
    width: 20px; background: {RAISED}; border-left: 1px solid {BORDER}; border-top-right-radius: 5px; }}
QSpinBox::down-button, QDoubleSpinBox::down-button {{ subcontrol-origin: border; subcontrol-position: bottom right;
    width: 20px; background: {RAISED}; border-left: 1px solid {BORDER}; border-bottom-right-radius: 5px; }}
QSpinBox::up-button:hover, QDoubleSpinBox::up-button:hover, QSpinBox::down-button:hover,
    QDoubleSpinBox::down-button:hover {{ background: {BORDER}; }}
QSpinBox::up-arrow, QDoubleSpinBox::up-arrow {{ image: url({UP_SVG}); width: 10px; height: 10px; }}
QSpinBox::down-arrow, QDoubleSpinBox::down-arrow {{ image: url({DOWN_SVG}); width: 10px; height: 10px; }}
QSpinBox::up-arrow:disabled, QDoubleSpinBox::up-arrow:disabled, QSpinBox::down-arrow:disabled,
    QDoubleSpinBox::down-arrow:disabled {{ image: none; }}
QComboBox QAbstractItemView {{ background: {PANEL}; border: 1px solid {BORDER}; selection-background-color: #1f6feb; }}
QTableView, QTreeWidget, QListWidget {{ background: {BG}; border: 1px solid {BORDER}; border-radius: 6px;
    gridline-color: {PANEL}; alternate-background-color: {PANEL}; selection-background-color: #1f3a66;
    selection-color: {TEXT}; }}
QHeaderView::section {{ background: {PANEL}; color: {MUTED}; border: none; border-bottom: 1px solid {BORDER};
    padding: 6px 8px; font-weight: 600; }}
QProgressBar {{ background: {BG}; border: 1px solid {BORDER}; border-radius: 5px; text-align: center;
    min-height: 18px; color: {TEXT}; }}
QProgressBar::chunk {{ background: #1f6feb; border-radius: 4px; }}
QScrollBar:vertical {{ background: {BG}; width: 10px; }}
QScrollBar::handle:vertical {{ background: {BORDER}; border-radius: 5px; min-height: 30px; }}
QScrollBar:horizontal {{ background: {BG}; height: 10px; }}
QScrollBar::handle:horizontal {{ background: {BORDER}; border-radius: 5px; min-width: 30px; }}
QScrollBar::add-line, QScrollBar::sub-line {{ width: 0; height: 0; }}
QSlider::groove:horizontal {{ height: 6px; background: {BORDER}; border-radius: 3px; }}
QSlider::handle:horizontal {{ background: {ACCENT}; width: 16px; margin: -6px 0; border-radius: 8px; }}
QSlider::sub-page:horizontal {{ background: #1f6feb; border-radius: 3px; }}
QCheckBox {{ background: transparent; spacing: 8px; }}
QCheckBox::indicator {{ width: 16px; height: 16px; border: 1px solid {MUTED}; border-radius: 3px; background: {RAISED}; }}
QCheckBox::indicator:checked {{ background: #1f6feb; border-color: {ACCENT}; image: url({CHECK_SVG}); }}
QCheckBox::indicator:disabled {{ border-color: {BORDER}; }}
QToolTip {{ background: {RAISED}; color: {TEXT}; border: 1px solid {BORDER}; padding: 4px; }}
QFrame#banner {{ border-radius: 6px; }}
QLabel[class="muted"] {{ color: {MUTED}; }}
QLabel[class="big"] {{ font-size: 30px; font-weight: 700; font-family: "DejaVu Sans Mono", monospace; }}
QLabel[class="huge"] {{ font-size: 44px; font-weight: 700; font-family: "DejaVu Sans Mono", monospace; }}
QLabel[class="caption"] {{ color: {MUTED}; font-size: 11px; font-weight: 600; letter-spacing: 1px; }}
"""


_SP = QStyle.StandardPixmap
# Fusion's own icons for these are dark grey, drawn for light windows: a dialog's Close / OK / Cancel buttons, the
# file dialog's tools, the arrows and title-bar buttons. Here they are repainted light (the message-box icons keep
# their colours).
LIGHT_ICONS = frozenset(
    getattr(_SP, n) for n in dir(_SP) if n.startswith(("SP_Dialog", "SP_FileDialog", "SP_Arrow", "SP_TitleBar",
                                                         "SP_DockWidget", "SP_LineEditClear", "SP_TabClose",
                                                         "SP_ToolBar", "SP_Browser")))


def tinted(icon: QIcon, colour: str, disabled: str) -> QIcon:
    """The icon's shape (its alpha) filled with one colour, and with another for the disabled state."""
    out = QIcon()
    sizes = icon.availableSizes() or [QSize(16, 16), QSize(32, 32)]
    for size in sizes:
        base = icon.pixmap(size)
        if base.isNull():
            continue
        for mode, c in ((QIcon.Mode.Normal, colour), (QIcon.Mode.Active, colour), (QIcon.Mode.Disabled, disabled)):
            img = QImage(base.size(), QImage.Format.Format_ARGB32_Premultiplied)
            img.setDevicePixelRatio(base.devicePixelRatio())
            img.fill(0)
            p = QPainter(img)
            p.drawPixmap(0, 0, base)
            p.setCompositionMode(QPainter.CompositionMode.CompositionMode_SourceIn)
            p.fillRect(img.rect(), QColor(c))
            p.end()
            out.addPixmap(QPixmap.fromImage(img), mode)
    return out if not out.isNull() else icon


class DarkThemeStyle(QProxyStyle):
    """Fusion, with its dark standard icons (LIGHT_ICONS) in the text colour, so they show on dark buttons."""

    def standardIcon(self, sp, option=None, widget=None) -> QIcon:  # noqa: N802 - Qt name
        icon = super().standardIcon(sp, option, widget)
        return tinted(icon, TEXT, "#56606b") if sp in LIGHT_ICONS and not icon.isNull() else icon


def apply(app: QApplication) -> None:
    if not app.property("workbench_style"):  # once per application (Qt owns the style from here on)
        app.setStyle(DarkThemeStyle("Fusion"))
        app.setProperty("workbench_style", True)
    pal = QPalette()
    for role, colour in ((QPalette.ColorRole.Window, BG), (QPalette.ColorRole.Base, BG),
                         (QPalette.ColorRole.AlternateBase, PANEL), (QPalette.ColorRole.Text, TEXT),
                         (QPalette.ColorRole.WindowText, TEXT), (QPalette.ColorRole.Button, RAISED),
                         (QPalette.ColorRole.ButtonText, TEXT), (QPalette.ColorRole.Highlight, "#1f6feb"),
                         (QPalette.ColorRole.HighlightedText, "#ffffff"), (QPalette.ColorRole.ToolTipBase, RAISED),
                         (QPalette.ColorRole.ToolTipText, TEXT), (QPalette.ColorRole.PlaceholderText, MUTED)):
        pal.setColor(role, QColor(colour))
    app.setPalette(pal)
    font = QFont("DejaVu Sans", 10)
    app.setFont(font)
    app.setStyleSheet(STYLE)


def pill(text: str, colour: str) -> str:
    """Rich-text coloured status word (for labels and table cells)."""
    return f'<span style="color:{colour}; font-weight:700">{text}</span>'


def set_role(button, role: str) -> None:
    button.setProperty("role", role)
    button.style().unpolish(button)
    button.style().polish(button)
