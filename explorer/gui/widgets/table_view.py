"""The tensor table view's column layout: which columns show, how wide, and when the Model key column shrinks."""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QItemSelection, QItemSelectionModel, Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

from ..models.table_model import TensorTableModel
from .badges import KeyDelegate
from .tree_view import install_column_menu

TABLE_HIDDEN = (TensorTableModel.DTYPE, TensorTableModel.SIZE, TensorTableModel.HOW, TensorTableModel.PLAN,
                TensorTableModel.UNTRAINED)


def size_table_columns(view: QTableView) -> None:
    """The tensor table's columns: the two names share the free width (they are what a user reads); status,
    plan, init check and shape are as wide as their longest usual text and resizable; dtype, size and how
    (all in the details panel and the row tooltip) wait behind the header's right-click menu. The plan and
    init-check columns sit beside the key and appear when their panels have something to show."""
    T = TensorTableModel
    h = view.horizontalHeader()
    fm = view.fontMetrics()
    h.setStretchLastSection(False)
    h.setMinimumSectionSize(36)
    for col, visual in ((T.PLAN, 3), (T.UNTRAINED, 4)):
        h.moveSection(h.visualIndex(col), visual)
    for col in range(h.count()):
        h.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
    for col in (T.NAME, T.KEY):
        h.setSectionResizeMode(col, QHeaderView.ResizeMode.Stretch)
    widths = {T.STATUS: fm.horizontalAdvance("unexpected") + 54, T.PLAN: fm.horizontalAdvance("↻ reinit") + 16,
              T.UNTRAINED: fm.horizontalAdvance("⚠ untrained?") + 14, T.SHAPE: fm.horizontalAdvance("1536×384") + 18,
              T.DTYPE: fm.horizontalAdvance("bfloat16") + 16, T.SIZE: fm.horizontalAdvance("88.0 MiB") + 18, T.HOW: 240}
    for col, w in widths.items():
        view.setColumnWidth(col, w)
    for col in TABLE_HIDDEN:
        view.setColumnHidden(col, True)
    install_column_menu(h)


CELL_PAD = 24  # item padding (style.qss), the focus frame margins and a little air


def content_width(view: QAbstractItemView, texts: Any) -> int:
    """What a column needs to show every one of ``texts`` in full (distinct texts measured once)."""
    fm = view.fontMetrics()
    return max((fm.horizontalAdvance(t) for t in set(texts) if t), default=0) + CELL_PAD


def fit_shape_column(view: QTableView, model: TensorTableModel) -> None:
    """The Shape column as wide as the widest shape of this checkpoint: shapes are numbers, never elided
    (``…522×384`` read as another shape); the name columns stretch into what is left and give way instead."""
    T = TensorTableModel
    view.setColumnWidth(T.SHAPE, max(content_width(view, (r.shape for r in model.rows)),
                                     view.fontMetrics().horizontalAdvance(T.COLUMNS[T.SHAPE]) + CELL_PAD))


def fit_status_column(view: QTableView, model: TensorTableModel, *, badge: bool = False) -> None:
    """The Status column as wide as this checkpoint's widest status word (+ its icon, + the init check's "?"
    badge when it has results), not the widest word of any checkpoint: the names get the rest."""
    T = TensorTableModel
    fm = view.fontMetrics()
    icon = (view.iconSize().width() if view.iconSize().width() > 0 else 16) + 6
    extra = fm.horizontalAdvance("?") + 16 if badge else 0
    header = fm.horizontalAdvance(T.COLUMNS[T.STATUS]) + CELL_PAD + 16  # + the sort indicator
    view.setColumnWidth(T.STATUS, max(content_width(view, model.status_texts()) + icon + extra, header))


def fit_key_column(view: QTableView, model: TensorTableModel) -> None:
    """When nearly every Model key is the on-disk name (or it with a prefix added/removed, shown as "= on-disk" /
    "+ bert."), the Model key column shrinks to those short notes and the On-disk name column takes the width;
    otherwise both names share it."""
    T = TensorTableModel
    h = view.horizontalHeader()
    full, notes = model.key_notes()
    if model.rows and len(full) <= len(model.rows) // 2:
        fm = view.fontMetrics()
        w = max([fm.horizontalAdvance(n) for n in notes] + [fm.horizontalAdvance(T.COLUMNS[T.KEY])]
                + [min(fm.horizontalAdvance(k), 130) for k in full[:200]]) + 24
        h.setSectionResizeMode(T.KEY, QHeaderView.ResizeMode.Interactive)
        view.setColumnWidth(T.KEY, w)
    else:
        h.setSectionResizeMode(T.KEY, QHeaderView.ResizeMode.Stretch)


def make_table_view(model: Any) -> tuple[QTableView, KeyDelegate]:
    """The tensor table over ``model`` (the filter proxy): sortable (trouble first), whole rows selected, the two
    name columns drawn by a ``KeyDelegate`` (returned: the window keeps it)."""
    table = QTableView()
    table.setModel(model)
    table.setSortingEnabled(True)
    table.sortByColumn(TensorTableModel.STATUS, Qt.SortOrder.AscendingOrder)  # trouble first
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
    table.setWordWrap(False)
    # names differ in their indices and leaves (layer, expert, weight/bias): KeyDelegate keeps those and
    # elides the middle; anything else elides in the middle too. The tooltip has it all.
    table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    table.setShowGrid(False)
    table.verticalHeader().setVisible(False)
    table.verticalHeader().setDefaultSectionSize(22)
    table.horizontalHeader().setHighlightSections(False)
    size_table_columns(table)
    key_delegate = KeyDelegate(table)
    for col in (TensorTableModel.NAME, TensorTableModel.KEY):
        table.setItemDelegateForColumn(col, key_delegate)
    return table, key_delegate


def select_rows(view: QTableView, rows: list[int]) -> None:
    """Select the source-model ``rows`` in ``view`` (under its filter proxy) as contiguous ranges, make the first
    current without moving the selection, and scroll it into view (to the top when there are several)."""
    sm, proxy = view.selectionModel(), view.model()
    src = proxy.sourceModel()
    sel = QItemSelection()
    proxy_rows = sorted(r2 for r2 in (proxy.mapFromSource(src.index(r, 0)).row() for r in rows) if r2 >= 0)
    last_col = proxy.columnCount() - 1
    start = prev = None
    for r in proxy_rows + [None]:
        if start is not None and (r is None or r != prev + 1):
            sel.select(proxy.index(start, 0), proxy.index(prev, last_col))
            start = None
        if r is not None and start is None:
            start = r
        prev = r
    sm.select(sel, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
    if proxy_rows:
        first = proxy.index(proxy_rows[0], 0)
        sm.setCurrentIndex(first, QItemSelectionModel.SelectionFlag.NoUpdate)
        view.scrollTo(first, QAbstractItemView.ScrollHint.PositionAtTop if len(proxy_rows) > 1
                      else QAbstractItemView.ScrollHint.EnsureVisible)
