"""QAbstractItemModel over the module tree of a Report (items from ``entries.build_tree``).

Columns: name, status (roll-up for modules: "12/14 loaded, 2 missing"), shape, dtype, parameters, how.
Roles: colour (foreground of the status column, tinted background for trouble), icon, tooltip, plus
``KIND_ROLE`` (display kind), ``KEY_ROLE`` (model key / module path) and ``SORT_ROLE``.
"""
from __future__ import annotations

import html
from typing import Any

import numpy as np
from PySide6 import QtGui
from PySide6.QtCore import QAbstractItemModel, QModelIndex, QPersistentModelIndex, Qt

from ...core.fmt import human_count, safe_lines, safe_text
from .. import palette
from .entries import TreeIndex, TreeItem, index_tree

KIND_ROLE = Qt.ItemDataRole.UserRole + 1
KEY_ROLE = Qt.ItemDataRole.UserRole + 2
SORT_ROLE = Qt.ItemDataRole.UserRole + 3
ITEM_ROLE = Qt.ItemDataRole.UserRole + 4

_Index = QModelIndex | QPersistentModelIndex


def shown(value: Any, role: int) -> Any:
    """What an item model hands a view for ``role``: text with control, bidi and invisible format characters
    escaped (``\\x1b``, ``\\u202e``; names come from files), a tooltip line by line (``plain_tooltip``);
    anything else as it is."""
    if isinstance(value, str):
        if role == Qt.ItemDataRole.DisplayRole:
            return safe_text(value)
        if role == Qt.ItemDataRole.ToolTipRole:
            return plain_tooltip(safe_lines(value))
    return value


def plain_tooltip(text: str) -> str:
    """``text`` as a tooltip Qt shows literally. Qt renders a tooltip whose first line looks like HTML (a tensor
    named ``<img src=...>``) as rich text; such a tooltip is handed over HTML-escaped, its spaces and lines kept."""
    if QtGui.Qt.mightBeRichText(text):
        return "<p style='white-space:pre'>" + html.escape(text) + "</p>"
    return text


class ModuleTreeModel(QAbstractItemModel):
    COLUMNS = ("Module / parameter", "Status", "Shape", "dtype", "Params", "How", "Init check")
    UNTRAINED = 6

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._root = TreeItem("(root)", "", False)
        self._index: TreeIndex = index_tree(self._root)
        self.untrained_params: np.ndarray | None = None  # per TreeIndex.params: looks untrained (None: not checked)
        self._untrained_counts: np.ndarray | None = None  # per uid: parameters at or below that look untrained
        self.untrained_gen = 0  # bumped on every change (filter caches compare it)

    def set_untrained(self, params: np.ndarray | None, counts: np.ndarray | None) -> None:
        """Show an init check's verdicts (``entries.untrained_tree``); None clears them."""
        old = self._untrained_counts
        self.untrained_params, self._untrained_counts = params, counts
        self.untrained_gen += 1
        changed = set()
        for arr in (old, counts):
            if arr is not None and len(arr) == len(self._index.items):
                changed.update(np.flatnonzero(arr).tolist())
        for uid in sorted(changed):
            it = self._index.items[uid]
            if it is not self._root:
                i = self.createIndex(it.row, self.UNTRAINED, it)
                self.dataChanged.emit(i, i, [Qt.ItemDataRole.DisplayRole])

    def untrained_count(self, it: TreeItem) -> int:
        c = self._untrained_counts
        return int(c[it.uid]) if c is not None and 0 <= it.uid < len(c) else 0

    def untrained_text(self, it: TreeItem) -> str:
        n = self.untrained_count(it)
        if not n:
            return ""
        return "⚠ untrained?" if it.is_param else f"⚠ {n} look{'s' if n == 1 else ''} untrained"

    # ---- content
    def set_root(self, root: TreeItem | None, index: TreeIndex | None = None) -> None:
        """Show ``root``. Pass the ``TreeIndex`` built in the worker (``index_tree``) to keep this cheap."""
        root = root or TreeItem("(root)", "", False)
        if index is None or not index.items or index.items[0] is not root:
            index = index_tree(root)
        self.beginResetModel()
        self._root = root
        self._index = index
        self.untrained_params = self._untrained_counts = None
        self.untrained_gen += 1
        self.endResetModel()

    @property
    def tree_index(self) -> TreeIndex:
        return self._index

    @property
    def root(self) -> TreeItem:
        return self._root

    def item(self, index: _Index) -> TreeItem | None:
        if not index.isValid():
            return None
        return index.internalPointer()

    def index_for_key(self, key: str, column: int = 0) -> QModelIndex:
        it = self._index.by_key.get(key) or self._index.modules.get(key)
        return self._index_of(it, column) if it is not None else QModelIndex()

    def _index_of(self, it: TreeItem, column: int = 0) -> QModelIndex:
        return self.createIndex(it.row, column, it)

    def param_items(self) -> list[TreeItem]:
        return list(self._index.by_key.values())

    # ---- QAbstractItemModel
    def index(self, row: int, column: int, parent: _Index = QModelIndex()) -> QModelIndex:
        p = parent.internalPointer() if parent.isValid() else self._root
        if parent.isValid() and parent.column() != 0:
            return QModelIndex()
        if 0 <= row < len(p.children) and 0 <= column < len(self.COLUMNS):
            return self.createIndex(row, column, p.children[row])
        return QModelIndex()

    def parent(self, index: _Index = QModelIndex()) -> QModelIndex:  # type: ignore[override]
        if not index.isValid():
            return QModelIndex()
        it: TreeItem = index.internalPointer()
        p = it.parent
        if p is None or p is self._root:
            return QModelIndex()
        return self.createIndex(p.row, 0, p)

    def rowCount(self, parent: _Index = QModelIndex()) -> int:
        if parent.isValid():
            if parent.column() != 0:
                return 0
            return len(parent.internalPointer().children)
        return len(self._root.children)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:
        return len(self.COLUMNS)

    def hasChildren(self, parent: _Index = QModelIndex()) -> bool:
        return self.rowCount(parent) > 0

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole and 0 <= section < len(self.COLUMNS):
            return self.COLUMNS[section]
        return None

    def flags(self, index: _Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        return shown(self._data(index, role), role)

    def _data(self, index: _Index, role: int) -> Any:
        if not index.isValid():
            return None
        it: TreeItem = index.internalPointer()
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return it.name
            if col == 1:
                return it.status_text
            if col == 2:
                return it.shape
            if col == 3:
                return it.dtype
            if col == 4:
                return human_count(it.numel, digits=1) if it.numel else ""
            if col == 5:
                return it.how
            if col == 6:
                return self.untrained_text(it)
            return None
        if role == Qt.ItemDataRole.DecorationRole:
            if col == 0 and it.kind is not None:
                return palette.icon(it.kind)
            return None
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == 1:
                return palette.text_color(it.kind) if it.kind in palette.TROUBLE or it.is_param else None
            if col == 2 and not it.is_param:
                return palette.QColor(palette.MUTED_TEXT)
            if col == 6:
                return palette.text_color("untrained")
            return None
        if role == Qt.ItemDataRole.BackgroundRole:
            if it.is_param and it.kind in palette.TROUBLE:
                return palette.tint(it.kind)
            return None
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == 6 and self.untrained_count(it):
                return palette.look("untrained").meaning
            return it.tooltip
        if role == KIND_ROLE:
            return it.kind
        if role == KEY_ROLE:
            return it.path
        if role == SORT_ROLE:
            if col == 6:
                return self.untrained_count(it)
            return it.numel if col == 4 else str(self.data(index))
        if role == ITEM_ROLE:
            return it
        return None
