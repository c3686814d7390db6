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
from PySide6.QtCore import QAbstractItemModel, QEvent, QModelIndex, QObject, QPersistentModelIndex, Qt
from PySide6.QtWidgets import QHeaderView, QMenu, QTreeView

from ..core.fmt import human_count, safe_lines, safe_text
from . import palette
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
                return palette.color(it.kind) if it.kind in palette.TROUBLE or it.is_param else None
            if col == 2 and not it.is_param:
                return palette.QColor(palette.MUTED_TEXT)
            if col == 6:
                return palette.color("untrained")
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


# ---------------------------------------------------------------------------------------------- view helpers
TREE_HIDDEN = (3, 5, 6)  # dtype and how: in the table and the details panel; the header menu shows them;
# the init-check column repeats the name column's "? untrained" badge in a sortable form


TREE_INDENT = 14  # px per level: BERT's names nest 8 deep; the branch arrows still have room
NAME_LEVELS = 6  # dotted levels below the model's row whose names are always shown in full (bert.encoder.layer.0.attention.output)
STATUS_MIN = "shape mismatch"  # the status column shrinks (eliding on the right) to this before names do


def size_tree_columns(view: QTreeView, *, first: bool = False) -> None:
    """Size the tree's columns for the current tree: shape/params fixed; the status column as wide as the widest
    module roll-up (``TreeIndex.widest_status``) while there is room, the names get the rest (``fit_tree_columns``,
    also on every resize). ``first=True`` also sets the indentation, hides dtype/how and installs the
    show/hide-columns menu on the header."""
    h = view.header()
    fm = view.fontMetrics()
    if first:
        h.setStretchLastSection(False)
        h.setMinimumSectionSize(40)
        view.setIndentation(TREE_INDENT)
        view.setTextElideMode(Qt.TextElideMode.ElideRight)
        for col in TREE_HIDDEN:
            view.setColumnHidden(col, True)
        h.moveSection(h.visualIndex(ModuleTreeModel.UNTRAINED), 2)  # beside the status it qualifies
        install_column_menu(h)
        view.viewport().installEventFilter(_ColumnFitter(view))
    for col in range(h.count()):
        h.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
    view.setColumnWidth(2, fm.horizontalAdvance("30522×1024") + 16)
    view.setColumnWidth(3, fm.horizontalAdvance("bfloat16→float32") + 16)
    view.setColumnWidth(4, fm.horizontalAdvance("146.0M") + 20)
    view.setColumnWidth(5, 220)
    view.setColumnWidth(6, fm.horizontalAdvance("⚠ 12 look untrained") + 16)
    fit_tree_columns(view)


def _tree_index(view: QTreeView) -> TreeIndex | None:
    model = view.model()
    src = model.sourceModel() if hasattr(model, "sourceModel") else model
    return getattr(src, "tree_index", None)


def tree_widths(view: QTreeView) -> tuple[int, int, int]:
    """(names, status, status minimum) in px: what the first ``NAME_LEVELS`` + 1 levels of names need in full,
    the widest module roll-up, and the narrowest the status column gets before names are cut."""
    fm = view.fontMetrics()
    idx = _tree_index(view)
    longest = idx.longest_names if idx is not None and idx.longest_names else (
        "BertForSequenceClassification", "bert", "encoder", "layer", "11", "attention", "output")
    icon = view.iconSize().width() if view.iconSize().width() > 0 else 16
    indent = view.indentation()
    names = max(indent * (d + 1) + fm.horizontalAdvance(n) for d, n in enumerate(longest[: NAME_LEVELS + 1]))
    widest = (idx.widest_status if idx is not None else "") or "103/105 loaded, 2 missing"
    status_min = fm.horizontalAdvance(STATUS_MIN) + 24
    return names + icon + 16, max(fm.horizontalAdvance(widest) + 24, status_min), status_min


def fit_tree_columns(view: QTreeView) -> None:
    """Share the free width between names and status: names (up to ``NAME_LEVELS``) in full first, then the status
    up to its widest roll-up, the rest to the names. Short of room, the status text is elided on the right."""
    h = view.header()
    fixed = sum(view.columnWidth(c) for c in range(2, h.count()) if not view.isColumnHidden(c))
    free = view.viewport().width() - fixed
    names, status, status_min = tree_widths(view)
    st = min(status, max(status_min, free - names))
    view.setColumnWidth(1, st)
    view.setColumnWidth(0, max(free - st, 60))


class _ColumnFitter(QObject):
    """Refits the name/status columns whenever the tree's viewport is resized (what ``Stretch`` would do, but
    with the names' needs first)."""

    def __init__(self, view: QTreeView) -> None:
        super().__init__(view)
        self.view = view

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if event.type() == QEvent.Type.Resize:
            fit_tree_columns(self.view)
        return False


def tree_width_needed(view: QTreeView, *, names_only: bool = False) -> int:
    """The tree view width that shows the names (``NAME_LEVELS``) and the widest roll-up in full
    (``names_only``: the names in full, the status at its minimum — the tree's minimum width)."""
    names, status, status_min = tree_widths(view)
    if names_only:
        status = status_min
    fixed = sum(view.columnWidth(c) for c in range(2, view.header().count()) if not view.isColumnHidden(c))
    return names + status + fixed + view.verticalScrollBar().sizeHint().width() + 2 * view.frameWidth()


def install_column_menu(header: QHeaderView) -> None:
    """A right-click menu on ``header`` that shows or hides columns (the first column always stays)."""
    header.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)

    def menu(pos: object) -> None:
        m = QMenu(header)
        model = header.model()
        for col in range(1, header.count()):
            a = m.addAction(str(model.headerData(col, Qt.Orientation.Horizontal)))
            a.setCheckable(True)
            a.setChecked(not header.isSectionHidden(col))
            a.toggled.connect(lambda on, c=col: header.setSectionHidden(c, not on))
        m.exec(header.mapToGlobal(pos))

    header.customContextMenuRequested.connect(menu)
