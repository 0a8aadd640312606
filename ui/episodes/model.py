"""Table model over the dataset store's episode summaries, and a filter proxy (text, outcome, quality).

Damaged episodes are rows too (label "damaged", the reason in the tooltip), so the operator sees them and can
delete them; the Task column comes last and elides, so the short columns (Segs) stay visible at any width."""
from __future__ import annotations

from PyQt6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt
from PyQt6.QtGui import QBrush, QColor, QFont

from ui import theme

COLUMNS = ["#", "Recorded", "Length", "Label", "Quality", "Segs", "Task"]
COL = {name: i for i, name in enumerate(COLUMNS)}
DAMAGED_COLOUR = "#f85149"


def _date(created: str) -> str:
    # ISO 8601 "2026-11-23T09:31:02+00:00" -> "11-23 09:31" (the year is in the tooltip and `episodes show`)
    return created.replace("T", " ")[5:16] if created else "—"


class EpisodesModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.episodes: list = []  # recorder.store.EpisodeSummary

    def set_episodes(self, episodes: list) -> None:
        self.beginResetModel()
        self.episodes = list(episodes)
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.episodes)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def episode(self, row: int):
        return self.episodes[row]

    def row_of(self, name: str) -> int:
        return next((i for i, e in enumerate(self.episodes) if e.name == name), -1)

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        e = self.episodes[index.row()]
        c = index.column()
        damaged = bool(getattr(e, "damaged", ""))
        if role == Qt.ItemDataRole.DisplayRole:
            return [
                str(e.index),
                _date(e.created),
                f"{e.duration_s:.1f} s" if e.duration_s >= 0 else f"{e.steps} steps",
                ("damaged" if damaged else e.outcome) + (" (deleted)" if e.deleted else ""),
                "—" if damaged else (e.quality.upper() if e.quality != "n/a" else "n/a"),
                str(e.segments),
                e.damaged if damaged else (e.task or "—"),
            ][c]
        if role == Qt.ItemDataRole.UserRole:  # sort keys
            return [e.index, e.created, e.duration_s, e.outcome, e.quality, e.segments, e.task][c]
        if role == Qt.ItemDataRole.ForegroundRole:
            if e.deleted:
                return QBrush(QColor("#56606b"))
            if damaged and c in (COL["Label"], COL["Task"]):
                return QBrush(QColor(DAMAGED_COLOUR))
            if c == COL["Label"]:
                return QBrush(QColor(theme.status_colour(e.outcome)))
            if c == COL["Quality"]:
                return QBrush(QColor(theme.status_colour(e.quality)))
        if role == Qt.ItemDataRole.FontRole and c in (COL["Label"], COL["Quality"]) and not e.deleted:
            f = QFont()
            f.setBold(True)
            return f
        if role == Qt.ItemDataRole.TextAlignmentRole and c in (COL["#"], COL["Length"], COL["Segs"]):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            if damaged:
                return f"{e.name}: damaged: {e.damaged}. Delete moves it to the trash; export skips it."
            return f"{e.name} · recorded {e.created} · {e.steps} steps · cameras {', '.join(e.cameras)} · {e.size_bytes / 1e6:.1f} MB" + \
                   (" · recovered after a crash" if e.recovered else "")
        return None


class EpisodesFilter(QSortFilterProxyModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.text = ""
        self.outcome = ""  # "" = all
        self.quality = ""
        self.setSortRole(Qt.ItemDataRole.UserRole)

    def set_filters(self, text: str | None = None, outcome: str | None = None, quality: str | None = None) -> None:
        if text is not None:
            self.text = text.strip().lower()
        if outcome is not None:
            self.outcome = outcome
        if quality is not None:
            self.quality = quality
        self.invalidateFilter()

    def filterAcceptsRow(self, row: int, parent) -> bool:  # noqa: N802
        e = self.sourceModel().episode(row)
        if self.outcome and e.outcome != self.outcome:
            return False
        if self.quality and e.quality != self.quality:
            return False
        if self.text and self.text not in f"{e.task} {e.name}".lower():
            return False
        return True
