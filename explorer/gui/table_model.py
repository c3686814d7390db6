"""QAbstractTableModel over every on-disk tensor plus the model keys the checkpoint lacks.

Columns: status, on-disk name, mapped model key, shape, dtype, size, how. ``SORT_ROLE`` gives numbers for
the size column so sorting is numeric.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor

from . import palette
from .entries import Row, fmt_bytes
from .tree_model import ITEM_ROLE, KEY_ROLE, KIND_ROLE, SORT_ROLE

_Index = QModelIndex | QPersistentModelIndex
NOT_ON_DISK = "(not in checkpoint)"


class TensorTableModel(QAbstractTableModel):
    sorts_itself = True  # FilterProxy forwards sort() here
    COLUMNS = ("Status", "On-disk name", "Model key", "Shape", "dtype", "Size", "How")
    STATUS, NAME, KEY, SHAPE, DTYPE, SIZE, HOW = range(7)

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: list[Row] = []
        self._by_key: dict[str, list[int]] = {}
        self._by_name: dict[str, int] = {}
        self._sort: tuple[int, Qt.SortOrder] | None = None

    def set_rows(self, rows: list[Row]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        if self._sort is not None:
            self._rows.sort(key=self._sort_key(self._sort[0]), reverse=self._sort[1] == Qt.SortOrder.DescendingOrder)
        self._reindex()
        self.endResetModel()

    def _reindex(self) -> None:
        rows = self._rows
        self._by_name = {r.name: i for i, r in enumerate(rows) if r.name}
        self._by_key = {}
        for i, r in enumerate(rows):
            if r.key:
                self._by_key.setdefault(r.key.split(" (+", 1)[0], []).append(i)

    def _sort_key(self, column: int) -> Any:
        c = self
        if column == c.STATUS:
            return lambda r: (_KIND_ORDER.get(r.kind, 99), r.name or r.key)
        if column == c.NAME:
            return lambda r: (not r.name, r.name)
        if column == c.KEY:
            return lambda r: (not r.key, r.key)
        if column == c.SHAPE:
            return lambda r: (r.numel, r.shape)
        if column == c.DTYPE:
            return lambda r: r.dtype
        if column == c.SIZE:
            return lambda r: r.nbytes
        return lambda r: r.how

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort the rows in Python (one key per row): a C++ proxy calling back into Python per comparison
        is far too slow for 50k rows."""
        if not (0 <= column < len(self.COLUMNS)):
            return
        self._sort = (column, order)
        self.layoutAboutToBeChanged.emit()
        old = self.persistentIndexList()
        perm = sorted(range(len(self._rows)), key=lambda i, k=self._sort_key(column): k(self._rows[i]),
                      reverse=order == Qt.SortOrder.DescendingOrder)
        where = [0] * len(perm)
        for new, i in enumerate(perm):
            where[i] = new
        self._rows = [self._rows[i] for i in perm]
        self._reindex()
        self.changePersistentIndexList(old, [self.index(where[i.row()], i.column()) if i.isValid() else QModelIndex() for i in old])
        self.layoutChanged.emit()

    @property
    def rows(self) -> list[Row]:
        return self._rows

    def row(self, i: int) -> Row:
        return self._rows[i]

    def rows_for_key(self, key: str) -> list[int]:
        return self._by_key.get(key, [])

    def rows_under(self, module_path: str) -> list[int]:
        """Rows whose model key is in the module (prefix-safe)."""
        if not module_path:
            return [i for i, r in enumerate(self._rows) if r.key]
        pre = module_path + "."
        return [i for k, rows in self._by_key.items() if k == module_path or k.startswith(pre) for i in rows]

    def row_for_name(self, name: str) -> int | None:
        return self._by_name.get(name)

    def rowCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole:
            if orientation == Qt.Orientation.Horizontal and 0 <= section < len(self.COLUMNS):
                return self.COLUMNS[section]
            if orientation == Qt.Orientation.Vertical:
                return section + 1
        return None

    def flags(self, index: _Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not (0 <= index.row() < len(self._rows)):
            return None
        r = self._rows[index.row()]
        c = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if c == 0:
                return palette.look(r.kind).label
            if c == 1:
                return r.name or NOT_ON_DISK
            if c == 2:
                return r.key or "—"
            if c == 3:
                return r.shape
            if c == 4:
                return r.dtype
            if c == 5:
                return fmt_bytes(r.nbytes) if r.name else ""
            if c == 6:
                return r.how
            return None
        if role == Qt.ItemDataRole.DecorationRole and c == 0:
            return palette.icon(r.kind)
        if role == Qt.ItemDataRole.ForegroundRole:
            if c == 0:
                return palette.color(r.kind)
            if (c == 1 and not r.name) or (c == 2 and not r.key):
                return QColor(palette.MUTED_TEXT)
            return None
        if role == Qt.ItemDataRole.BackgroundRole and r.kind in palette.TROUBLE:
            return palette.tint(r.kind)
        if role == Qt.ItemDataRole.TextAlignmentRole and c == 5:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            return r.tooltip
        if role == KIND_ROLE:
            return r.kind
        if role == KEY_ROLE:
            return r.key.split(" (+", 1)[0] if r.key else r.name
        if role == SORT_ROLE:
            if c == 5:
                return r.nbytes
            if c == 0:
                return _KIND_ORDER.get(r.kind, 99)
            return self.data(index)
        if role == ITEM_ROLE:
            return r
        return None


_KIND_ORDER = {k: i for i, k in enumerate(("missing", "mismatched", "unexpected", "dtype", "renamed", "tied", "matched", "ignored", "computed"))}
