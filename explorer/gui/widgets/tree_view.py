"""The module tree view's layout: column widths (names first, the status gives way), indentation, the
show/hide-columns header menu, and the width the tree needs to show its names in full."""
from __future__ import annotations

from typing import Any, Sequence

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QMenu, QSplitter, QTreeView

from ..kinds import TROUBLE
from ..models.entries import TreeIndex, TreeItem
from ..models.tree_model import ModuleTreeModel
from .badges import TEXT_SLACK


TREE_HIDDEN = (3, 5, 6)  # dtype and how: in the table and the details panel; the header menu shows them;
# the init-check column repeats the name column's "? untrained" badge in a sortable form


TREE_INDENT = 14  # px per level: BERT's names nest 8 deep; the branch arrows still have room
NAME_LEVELS = 6  # dotted levels below the model's row whose names are always shown in full (bert.encoder.layer.0.attention.output)
STATUS_MIN = "shape mismatch"  # the status column shrinks (eliding on the right) to this before names do
TEXT_ROOM = 24  # px beside a name: the icon's gap, the item padding and the text margins the style draws it within


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
    idx = _tree_index(view)
    shapes = {it.shape for it in idx.items if it.shape} if idx is not None else set()
    # shapes are numbers: as wide as the widest of this tree (never "…72×8192"); the names give way instead
    view.setColumnWidth(2, max([fm.horizontalAdvance(t) for t in shapes | {"30522×1024"}]) + 24)
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
    return names + icon + TEXT_ROOM + TEXT_SLACK, max(fm.horizontalAdvance(widest) + 24, status_min), status_min


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


def make_tree_view(model: Any) -> QTreeView:
    """The module tree view over ``model`` (the filter proxy): one row selected, columns sized by
    ``size_tree_columns`` (names first, status fits the roll-ups, dtype/how on demand)."""
    tree = QTreeView()
    tree.setModel(model)
    tree.setUniformRowHeights(True)
    tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    tree.setAnimated(False)
    tree.setAllColumnsShowFocus(True)
    size_tree_columns(tree, first=True)
    return tree


def expand_items(view: QTreeView, items: Sequence[TreeItem]) -> None:
    """Expand the branches that lead to ``items`` (items of the source model under ``view``'s filter proxy)."""
    proxy = view.model()
    src = proxy.sourceModel()
    seen: set[int] = set()
    for it in items:
        p, chain = it.parent, []
        while p is not None and p is not src.root and id(p) not in seen:
            seen.add(id(p))
            chain.append(p)
            p = p.parent
        for q in reversed(chain):
            idx = proxy.mapFromSource(src.createIndex(q.row, 0, q))
            if idx.isValid():
                view.expand(idx)


def expand_trouble(view: QTreeView, limit: int = 300) -> None:
    """Expand the top of the tree, every branch that holds a missing/mismatched/unexpected entry and the
    "(not in model)" branch."""
    proxy = view.model()
    top = proxy.index(0, 0)
    if top.isValid():
        view.expand(top)
    expand_items(view, [it for it in proxy.sourceModel().param_items() if it.kind in TROUBLE][:limit])
    for i in range(proxy.rowCount()):
        idx = proxy.index(i, 0)
        if proxy.mapToSource(idx).internalPointer().group:
            view.expand(idx)


class TreeSplit:
    """The tree | right side splitter: unless the user moved it (now or in a saved session: ``chosen``), the
    tree gets what its names (``NAME_LEVELS``) and roll-ups need, up to 60% of the window."""

    def __init__(self, split: QSplitter, tree: QTreeView) -> None:
        self.split, self.tree = split, tree
        self.chosen = False
        split.splitterMoved.connect(self._moved)

    def _moved(self, _pos: int, _index: int) -> None:
        self.chosen = True

    def right_needs(self) -> int:
        """What the right side's content needs (the widest of tabs and details): it never scrolls sideways."""
        right = self.split.widget(1)
        need = right.minimumSizeHint().width()
        right.setMinimumWidth(max(200, need))
        return need

    def fit(self, window_width: int) -> None:
        """Size the tree for its names; the right side always keeps what its content needs: numbers there never
        clip, the tree's names give way."""
        need = self.right_needs()
        sizes = self.split.sizes()
        total = sum(sizes)
        if not self.chosen and total > 0:
            tree = min(max(tree_width_needed(self.tree), sizes[0]), int(0.6 * total), total - need)
            if tree != sizes[0]:
                self.split.blockSignals(True)  # not a user's move
                try:
                    self.split.setSizes([tree, total - tree])
                finally:
                    self.split.blockSignals(False)
        self.fit_minimum(window_width, need)

    def fit_minimum(self, window_width: int, need: int | None = None) -> None:
        """The tree's minimum width (on load and whenever the window is resized): the names of ``NAME_LEVELS``
        levels in full while there is room, at most half the window, and never so wide that the right side
        would not fit."""
        need = self.right_needs() if need is None else need
        names = tree_width_needed(self.tree, names_only=True)
        self.tree.setMinimumWidth(max(120, min(names, max(window_width // 2, 240), window_width - need - 40)))
