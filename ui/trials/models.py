"""Table models of the Trials tab: the statistics per policy and prompt (workbench.deploy.trial_stats groups) and
this session's trials (rows filled from the runner's typed events)."""
from __future__ import annotations

from dataclasses import dataclass

from PyQt6.QtCore import QAbstractTableModel, QEvent, QModelIndex, QObject, Qt
from PyQt6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

from ui import theme


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def _num(v: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "–" if v is None or v != v else f"{format(v, spec)}{unit}"


class ResultsModel(QAbstractTableModel):
    """One row per group of `trial_stats.summarize` (policy and prompt). Six columns, so the policy's name keeps
    room at 1280 px; the counts the rate leaves out (aborted, unlabelled) are in n and the row's tooltip."""

    HEADERS = ("Policy", "n", "Success", "95% CI", "t succ.", "Interv.")
    TIPS = ("policy id (name@step) and the trials' initial prompt", "trials (aborted and unlabelled ones included)",
            "successes / labelled trials · success rate (aborted and unlabelled trials are not counted)",
            "Wilson 95% interval of the rate", "mean time to success", "operator takeovers per trial")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.groups: list = []

    def set_groups(self, groups: list) -> None:
        self.beginResetModel()
        self.groups = list(groups)
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.groups)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.HEADERS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return self.TIPS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        g = self.groups[index.row()]
        c = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            name = str(g.key[0]) + (f" · {g.key[1]}" if len(g.key) > 1 and g.key[1] else "")
            return (name, str(g.n), f"{g.successes}/{g.labeled} · {_pct(g.rate)}",
                    f"{100 * g.ci_lo:.0f}–{100 * g.ci_hi:.0f}%", _num(g.mean_time_to_success_s, ".1f", " s"),
                    f"{g.interventions_per_trial:.1f}")[c]
        if role == Qt.ItemDataRole.ToolTipRole:
            return (f"{g.label}\n{g.n} trials: {g.successes} success, {g.partial} partial, {g.failures} failure, "
                    f"{g.unlabeled} unlabeled, {g.aborted} aborted (not in the rate)\nrate {_pct(g.rate)}, Wilson "
                    f"95% interval {100 * g.ci_lo:.1f}–{100 * g.ci_hi:.1f}%\nmean duration "
                    f"{_num(g.mean_duration_s, '.1f', ' s')}")
        if role == Qt.ItemDataRole.TextAlignmentRole and c >= 1:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


@dataclass
class TrialRow:
    index: int
    name: str
    seed: int | None
    prompt: str
    outcome: str = "running"
    source: str = ""
    ended_by: str = ""
    duration_s: float | None = None
    time_to_success_s: float | None = None
    interventions: int = 0


class SessionTrialsModel(QAbstractTableModel):
    """The trials of this session, newest last; double-click opens one in the Episodes player. Six columns fit the
    Trials tab at 1280 px; what ended a trial is in its tooltip and in the Outcome box."""

    HEADERS = ("#", "Episode", "Seed", "Outcome", "Time", "Interv.")
    TIPS = ("trial number in this session", "the trial's episode (double-click: open it in the Episodes player)",
            "simulator scene", "outcome; (sim): graded by the simulator, else your label", "duration of the trial",
            "operator takeovers")
    ENDED_BY = {"success": "task done", "time_limit": "time limit", "operator": "the operator", "estop": "e-stop",
                "error": "an error", "aborted": "refused chunks"}

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[TrialRow] = []

    def clear(self) -> None:
        self.beginResetModel()
        self.rows = []
        self.endResetModel()

    def add(self, row: TrialRow) -> None:
        self.beginInsertRows(QModelIndex(), len(self.rows), len(self.rows))
        self.rows.append(row)
        self.endInsertRows()

    def row_of(self, index: int) -> int:
        return next((i for i, r in enumerate(self.rows) if r.index == index), -1)

    def changed(self, i: int) -> None:
        self.dataChanged.emit(self.index(i, 0), self.index(i, len(self.HEADERS) - 1))

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        if role == Qt.ItemDataRole.ToolTipRole and orientation == Qt.Orientation.Horizontal:
            return self.TIPS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        r = self.rows[index.row()]
        c = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            outcome = r.outcome + (" (sim)" if r.source == "auto" else "")
            return (str(r.index + 1), r.name, "–" if r.seed is None else str(r.seed), outcome,
                    _num(r.duration_s, ".1f", " s"), str(r.interventions))[c]
        if role == Qt.ItemDataRole.ForegroundRole and c == 3:
            from PyQt6.QtGui import QBrush, QColor

            colour = {"success": theme.OK, "failure": theme.FAIL, "partial": theme.WARN}.get(r.outcome, theme.MUTED)
            return QBrush(QColor(colour))
        if role == Qt.ItemDataRole.ToolTipRole:
            tts = "" if r.time_to_success_s is None else f"\nsuccess at {r.time_to_success_s:.1f} s"
            ended = f"\nended by {self.ENDED_BY.get(r.ended_by, r.ended_by)}" if r.ended_by else ""
            return f"{r.name}: prompt “{r.prompt}”{ended}{tts}\ndouble-click: open in the Episodes player"
        return None


class ColumnFit(QObject):
    """Column widths of a row table, set here rather than by Qt's Stretch + ResizeToContents (which, once the
    contents outgrow the view, gave the stretched column most of the width and pushed the others out of sight):
    every other column gets its contents' width, the `stretch` columns share what is left (at least `min_w`
    each, eliding their text). Recomputed when the rows or the view's width change; a view too narrow for even
    that scrolls sideways."""

    def __init__(self, view: QTableView, stretch: tuple[int, ...], min_w: int = 60):
        super().__init__(view)
        self.view, self.stretch, self.min_w = view, stretch, min_w
        view.viewport().installEventFilter(self)
        m = view.model()
        for sig in (m.modelReset, m.rowsInserted, m.rowsRemoved, m.dataChanged, m.layoutChanged):
            sig.connect(self.fit)
        self.fit()

    def eventFilter(self, obj, ev) -> bool:  # noqa: N802 - Qt name
        if ev.type() == QEvent.Type.Resize:
            self.fit()
        return False

    def widths(self) -> list[int]:
        v, hdr = self.view, self.view.horizontalHeader()
        n = v.model().columnCount()
        want = [max(v.sizeHintForColumn(c), hdr.sectionSizeHint(c)) for c in range(n)]
        rest = v.viewport().width() - sum(w for c, w in enumerate(want) if c not in self.stretch)
        share = rest // max(1, len(self.stretch))
        return [max(self.min_w, share) if c in self.stretch else w for c, w in enumerate(want)]

    def fit(self, *_) -> None:
        hdr = self.view.horizontalHeader()
        for c, w in enumerate(self.widths()):
            if hdr.sectionSize(c) != w:
                hdr.resizeSection(c, w)


def make_table(model, *stretch: int) -> QTableView:
    """A read-only row table: the numbers keep their width, the `stretch` columns share the rest and elide."""
    t = QTableView()
    t.setModel(model)
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.verticalHeader().hide()
    t.verticalHeader().setDefaultSectionSize(24)
    t.setShowGrid(False)
    t.setAlternatingRowColors(True)
    hdr = t.horizontalHeader()
    hdr.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
    hdr.setStretchLastSection(False)
    hdr.setStyleSheet("QHeaderView::section { padding-left: 5px; padding-right: 5px; }")  # columns fit 1280 px
    t.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    t.setTextElideMode(Qt.TextElideMode.ElideRight)
    t.column_fit = ColumnFit(t, tuple(stretch))
    return t


__all__ = ["ColumnFit", "ResultsModel", "SessionTrialsModel", "TrialRow", "make_table"]
