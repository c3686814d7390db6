"""Pieces the record tabs ("Compare A/B", "Looks untrained") and the details panel share: a read-only table over
a list of records that follows the session's selection, and a progress bar + Cancel for one worker channel."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QHBoxLayout, QProgressBar, QTableView, QToolButton, QWidget

from ...core.fmt import safe_text

SORT_ROLE = Qt.ItemDataRole.UserRole + 1


class RecordTableModel(QAbstractTableModel):
    """A read-only table over a list of records; columns are (header, display fn, sort-key fn)."""

    def __init__(self, columns: Sequence[tuple[str, Callable[[Any], str], Callable[[Any], Any]]],
                 parent: Any = None, *, background: Callable[[Any, int], QColor | None] | None = None) -> None:
        super().__init__(parent)
        self.columns = list(columns)
        self.records: list[Any] = []
        self._background = background

    def set_records(self, records: list[Any]) -> None:
        self.beginResetModel()
        self.records = list(records)
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.records)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.columns)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole and 0 <= section < len(self.columns):
            return self.columns[section][0]
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not (0 <= index.row() < len(self.records)):
            return None
        rec = self.records[index.row()]
        _h, disp, key = self.columns[index.column()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            v = disp(rec)
            return safe_text(v) if isinstance(v, str) else v  # names come from files: control/bidi shown escaped
        if role == SORT_ROLE:
            return key(rec)
        if role == Qt.ItemDataRole.BackgroundRole and self._background is not None:
            return self._background(rec, index.column())
        if role == Qt.ItemDataRole.UserRole:
            return rec
        return None


def sortable(v: float | None) -> float:
    """A sort key for an optional figure: None and NaN/Inf sort below every real value."""
    return -1.0 if v is None or not math.isfinite(v) else float(v)


class RecordProxy(QSortFilterProxyModel):
    """Sorts by ``SORT_ROLE``; ``accept`` (a predicate over records, or None) filters. Call ``invalidate()`` after
    changing it."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.accept: Callable[[Any], bool] | None = None

    def filterAcceptsRow(self, row: int, parent: QModelIndex) -> bool:
        if self.accept is None:
            return True
        return self.accept(self.sourceModel().records[row])  # type: ignore[attr-defined]


class RecordTable(QTableView):
    """A sortable single-row-selection view of a RecordTableModel (through a RecordProxy).

    ``recordChosen`` fires when the user (or code calling ``setCurrentIndex``) makes a record current, and on every
    click — a click on the row that is already current chooses it again — but not for ``follow``, which shows a
    selection made elsewhere without echoing it back."""

    recordChosen = Signal(object)

    def __init__(self, model: RecordTableModel, proxy: RecordProxy | None = None, parent: Any = None) -> None:
        super().__init__(parent)
        self.record_model = model
        self.proxy = proxy if proxy is not None else RecordProxy(self)
        self.proxy.setSourceModel(model)
        self.setModel(self.proxy)
        self.setSortingEnabled(True)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setShowGrid(False)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(22)
        self.horizontalHeader().setStretchLastSection(True)
        self._following = False
        self._pressing = False  # a mouse press moves the current row: the click that follows chooses it, once
        self.selectionModel().currentChanged.connect(self._on_current)
        self.clicked.connect(self._on_clicked)

    def record_at(self, index: QModelIndex) -> Any:
        """The record behind a view (proxy) index."""
        return self.record_model.records[self.proxy.mapToSource(index).row()]

    def follow(self, pred: Callable[[Any], bool]) -> bool:
        """Make the first record matching ``pred`` current and scroll to it, without emitting ``recordChosen``.
        Returns False when no shown row matches."""
        for i, rec in enumerate(self.record_model.records):
            if pred(rec):
                idx = self.proxy.mapFromSource(self.record_model.index(i, 0))
                if not idx.isValid():
                    return False
                if idx != self.currentIndex():
                    self._following = True
                    try:
                        self.setCurrentIndex(idx)
                        self.scrollTo(idx)
                    finally:
                        self._following = False
                return True
        return False

    def fit_columns(self, samples: Sequence[str], *, stretch_first: bool = False) -> None:
        """Size column i for its header (with the sort arrow) and ``samples[i]``; ``stretch_first``: column 0
        takes what is left and the others keep their width."""
        for col, sample in enumerate(samples):
            if sample is not None and not (stretch_first and col == 0):
                self.setColumnWidth(col, self.column_width(col, sample))
        if stretch_first:
            h = self.horizontalHeader()
            h.setStretchLastSection(False)
            h.setSectionResizeMode(0, h.ResizeMode.Stretch)

    def column_width(self, col: int, sample: str) -> int:
        """Wide enough for the header (with its sort arrow) and a typical value."""
        head = self.record_model.headerData(col, Qt.Orientation.Horizontal, Qt.ItemDataRole.DisplayRole) or ""
        return max(self.horizontalHeader().fontMetrics().horizontalAdvance(str(head)) + 26,
                   self.fontMetrics().horizontalAdvance(sample) + 14)

    def mousePressEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        self._pressing = True
        try:
            super().mousePressEvent(event)
        finally:
            self._pressing = False

    def _on_current(self, cur: QModelIndex, _prev: QModelIndex) -> None:
        if cur.isValid() and not self._following and not self._pressing:
            self.recordChosen.emit(self.record_at(cur))

    def _on_clicked(self, index: QModelIndex) -> None:
        if index.isValid():
            self.recordChosen.emit(self.record_at(index))


class JobProgress(QWidget):
    """A thin progress bar and a Cancel button for the job it ``track``s; hidden while idle."""

    def __init__(self, *, on_cancel: Callable[[], Any], tooltip: str = "",
                 height: int = 8, max_width: int | None = 180, parent: Any = None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.bar.setFixedHeight(height)
        if max_width is not None:
            self.bar.setMaximumWidth(max_width)
        self.cancel_btn = QToolButton(text="Cancel")
        if tooltip:
            self.cancel_btn.setToolTip(tooltip)
        self.cancel_btn.clicked.connect(lambda _c=False: on_cancel())
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.bar, 1)
        lay.addWidget(self.cancel_btn)
        self._job: Any = None
        self.set_busy(False)

    def track(self, handle: Any) -> None:
        """Show ``handle``'s progress until it finishes (or another job is tracked)."""
        self._job = handle
        self.set_busy(True)
        handle.progress.connect(lambda d, t, h=handle: self._on_progress(h, d, t))
        handle.finished.connect(lambda h=handle: self.set_busy(False) if h is self._job else None)

    def set_busy(self, busy: bool) -> None:
        if busy:
            self.bar.setValue(0)
        self.setVisible(busy)

    def _on_progress(self, handle: Any, done: int, total: int) -> None:
        if handle is self._job and total:
            self.bar.setValue(int(1000 * done / total))
