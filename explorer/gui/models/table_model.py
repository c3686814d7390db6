"""QAbstractTableModel over every on-disk tensor plus the model keys the checkpoint lacks.

Columns: status, on-disk name, mapped model key, shape, dtype, size, how. ``SORT_ROLE`` gives numbers for
the size column so sorting is numeric. Filtering and sorting happen here, on precomputed arrays (``TableIndex``).
"""
from __future__ import annotations

import bisect
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor

from ...core.fmt import human_bytes, safe_text
from .. import palette
from .entries import KIND_ORDER, Row, TableIndex, index_rows
from .tree_model import ITEM_ROLE, KEY_ROLE, KIND_ROLE, SORT_ROLE, shown

_Index = QModelIndex | QPersistentModelIndex
NOT_ON_DISK = "(not in checkpoint)"
SAME_KEY = "= on-disk"
STATUS_SHORT = {"dtype": "dtype", "mismatched": "mismatch"}  # the Status column stays narrow; tooltips say it all


def status_text(kind: str) -> str:
    """A row's Status word."""
    return STATUS_SHORT.get(kind) or palette.look(kind).label


def key_note(name: str, key: str) -> str | None:
    """The Model key column's short text when the key is the on-disk name, or it with a prefix added or removed
    (``"= on-disk"``, ``"+ bert."``, ``"− module."``), so the on-disk column can take the width; None when the key
    differs otherwise (then it is shown in full). The tooltip always has the full key."""
    if not name or not key:
        return None
    if key == name:
        return SAME_KEY
    if key.endswith("." + name):
        return f"+ {key[:len(key) - len(name)]}"
    if name.endswith("." + key):
        return f"− {name[:len(name) - len(key)]}"
    return None


class TensorTableModel(QAbstractTableModel):
    """Filters and sorts itself: ``_vis`` holds the shown row numbers (into ``rows``) in display order, so a
    filter or sort is a numpy pass plus one cheap reset/layout change, and ``data()`` is two list look-ups."""

    sorts_itself = True  # the proxy forwards sort() here
    # Plan and Init check are appended (the view moves them beside the key) so the base columns keep the
    # numbers of TableIndex's precomputed sort orders
    COLUMNS = ("Status", "On-disk name", "Model key", "Shape", "dtype", "Size", "How", "Plan", "Init check")
    STATUS, NAME, KEY, SHAPE, DTYPE, SIZE, HOW, PLAN, UNTRAINED = range(9)

    def __init__(self, parent: Any = None, *, plan_badge: Callable[[str], str] | None = None) -> None:
        super().__init__(parent)
        self._index: TableIndex = index_rows([])
        self._rows: list[Row] = []
        self._mask: np.ndarray | None = None
        self._vis: list[int] = []
        self._where = np.zeros(0, dtype=np.int64)
        self._sort: tuple[int, Qt.SortOrder] | None = None
        self._filter: Any = None  # the filtering.Filter last applied
        self.plan_badge = plan_badge  # key -> the Plan column's text ("↻ reinit"); None: no plan column
        self.untrained: np.ndarray | None = None  # per row: looks untrained (None: no init check yet)
        self.short_keys = True  # Model key column: "= on-disk" / "+ bert." instead of a key that repeats the name

    def set_untrained(self, flags: np.ndarray | None) -> None:
        """Per-row "looks untrained" flags (``entries.untrained_rows``); the filter is re-applied by the caller."""
        self.untrained = flags
        self._filter = None  # same Filter, other result
        self._emit_column(self.UNTRAINED)

    def plan_changed(self) -> None:
        """The plan badges changed: repaint the Plan column (and re-sort if sorted by it)."""
        self._emit_column(self.PLAN)
        if self._sort is not None and self._sort[0] == self.PLAN:
            self.sort(*self._sort)

    def _emit_column(self, col: int) -> None:
        if self._vis:
            self.dataChanged.emit(self.index(0, col), self.index(len(self._vis) - 1, col), [Qt.ItemDataRole.DisplayRole])

    def plan_text(self, r: Row) -> str:
        f = self.plan_badge
        if f is None:
            return ""
        return f(r.target)

    def _key_note(self, r: Row) -> str | None:
        return key_note(r.name, r.key) if self.short_keys and not r.more_keys else None

    def untrained_shown(self, display_row: int) -> bool:
        """The row shown at ``display_row`` looks untrained."""
        return 0 <= display_row < len(self._vis) and bool(self.untrained_text(self._vis[display_row]))

    def untrained_text(self, i: int) -> str:
        u = self.untrained
        return "⚠ untrained?" if u is not None and i < len(u) and u[i] else ""

    def set_rows(self, rows: list[Row], index: TableIndex | None = None) -> None:
        """Show ``rows`` (unfiltered). Pass the ``TableIndex`` built in the worker to keep this cheap."""
        if index is None or index.rows is not rows:
            index = index_rows(list(rows), warm=False)
        self.beginResetModel()
        self._index = index
        self._rows = index.rows
        self._mask = None
        self._filter = None
        self._refresh()
        self.endResetModel()

    def key_notes(self) -> tuple[list[str], list[str]]:
        """(the Model key texts shown in full, the distinct short notes shown for the other rows)."""
        full, notes = [], set()
        for r in self._rows:
            n = self._key_note(r)
            if n is None:
                full.append(r.key_text or "—")
            else:
                notes.add(n)
        return full, sorted(notes)

    def set_filter(self, flt: Any) -> int:
        """Show only the rows matching the ``filtering.Filter``; returns how many are shown."""
        if flt == self._filter:
            return len(self._vis)
        mask = flt.mask(self._index.search, untrained=self.untrained)
        self.beginResetModel()
        self._mask = mask
        self._filter = flt
        self._refresh()
        self.endResetModel()
        return len(self._vis)

    def _order(self) -> np.ndarray:
        if self._sort is None:
            return np.arange(len(self._rows))
        col = self._sort[0]
        if col == self.PLAN:  # plan badges change with every edit: sorted on demand, rows with a badge first
            texts = [self.plan_text(r) for r in self._rows]
            o = np.lexsort((np.array([t or "~" for t in texts], dtype=str) if texts else np.zeros(0, "<U1"),))
        elif col == self.UNTRAINED:
            u = self.untrained if self.untrained is not None else np.zeros(len(self._rows), dtype=bool)
            o = np.argsort(~u, kind="stable")
        else:
            o = self._index.order(col)
        return o[::-1] if self._sort[1] == Qt.SortOrder.DescendingOrder else o

    def _refresh(self) -> None:
        order = self._order()
        vis = order if self._mask is None else order[self._mask[order]]
        self._vis = vis.tolist()
        where = np.full(len(self._rows), -1, dtype=np.int64)
        where[vis] = np.arange(len(vis))
        self._where = where

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Pick the precomputed permutation of ``column`` (no per-comparison callbacks into Python)."""
        if not (0 <= column < len(self.COLUMNS)):
            return
        self._sort = (column, order)
        self.layoutAboutToBeChanged.emit()
        old = self.persistentIndexList()
        old_ids = [self._vis[i.row()] if i.isValid() and i.row() < len(self._vis) else -1 for i in old]
        self._refresh()
        where = self._where
        self.changePersistentIndexList(
            old, [self.index(int(where[r]), i.column()) if r >= 0 else QModelIndex() for i, r in zip(old, old_ids)])
        self.layoutChanged.emit()

    @property
    def rows(self) -> list[Row]:
        """Every row, shown or not, in load order."""
        return self._rows

    @property
    def tensor_count(self) -> int:
        return len(self._rows)

    def shown_keys(self) -> int:
        """How many distinct model keys the shown rows load into."""
        rows = self._rows
        return len({rows[i].key for i in self._vis if rows[i].key})

    def rows_note(self) -> str:
        """What a table row is (the tooltip of the "N of M rows" count)."""
        on_disk = sum(1 for r in self._rows if r.name)
        return (f"{len(self._rows):,} rows: {on_disk:,} on-disk tensors + {len(self._rows) - on_disk:,} model keys with "
                "nothing on disk (missing). The status chips count model keys (unexpected and ignored: tensors).")

    def row(self, i: int) -> Row:
        """The row shown at display position ``i``."""
        return self._rows[self._vis[i]]

    def _shown(self, ids: Any) -> list[int]:
        where = self._where
        return [int(where[i]) for i in ids if where[i] >= 0]

    def rows_for_key(self, key: str) -> list[int]:
        """Display positions of the rows that load into ``key`` (hidden rows left out)."""
        return self._shown(self._index.by_key.get(key, ()))

    def rows_under(self, module_path: str) -> list[int]:
        """Display positions of the rows whose model key is in the module (prefix-safe)."""
        idx = self._index
        if not module_path:
            ids = [i for k in idx.keys_sorted for i in idx.by_key[k]]
        else:
            keys = idx.keys_sorted
            ids = []
            j = bisect.bisect_left(keys, module_path)
            n = len(module_path)
            while j < len(keys) and keys[j].startswith(module_path):
                k = keys[j]
                if len(k) == n or k[n] == ".":
                    ids.extend(idx.by_key[k])
                j += 1
        if not ids:
            return []
        w = self._where[np.asarray(ids, dtype=np.int64)]
        return w[w >= 0].tolist()

    def row_for_name(self, name: str) -> int | None:
        """Display position of the on-disk tensor ``name`` (None if absent or filtered out)."""
        i = self._index.by_name.get(name)
        if i is None or self._where[i] < 0:
            return None
        return int(self._where[i])

    def rowCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._vis)

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

    def status_texts(self) -> set[str]:
        """The distinct Status words of the rows (what the Status column must show in full)."""
        return {status_text(k) for k in {r.kind for r in self._rows}}

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        return shown(self._data(index, role), role)

    def _data(self, index: _Index, role: int) -> Any:
        if not index.isValid() or not (0 <= index.row() < len(self._vis)):
            return None
        r = self._rows[self._vis[index.row()]]
        c = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if c == 0:
                return status_text(r.kind)
            if c == 1:
                return r.name or NOT_ON_DISK
            if c == 2:
                return self._key_note(r) or r.key_text or "—"
            if c == 3:
                return r.shape
            if c == 4:
                return r.dtype
            if c == 5:
                return human_bytes(r.nbytes) if r.name else ""
            if c == 6:
                return r.how
            if c == 7:
                return self.plan_text(r)
            if c == 8:
                return self.untrained_text(self._vis[index.row()])
            return None
        if role == Qt.ItemDataRole.DecorationRole and c == 0:
            return palette.icon(r.kind)
        if role == Qt.ItemDataRole.ForegroundRole:
            if c == 0:
                return palette.text_color(r.kind)
            if (c == 1 and not r.name) or (c == 2 and (not r.key or self._key_note(r))):
                return QColor(palette.MUTED_TEXT)
            if c == 7:
                return QColor(palette.ACCENT)
            if c == 8:
                return palette.text_color("untrained")
            return None
        if role == Qt.ItemDataRole.BackgroundRole and r.kind in palette.TROUBLE:
            return palette.tint(r.kind)
        if role == Qt.ItemDataRole.TextAlignmentRole and c == 5:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            if c == 8 and self.untrained_text(self._vis[index.row()]):
                return palette.look("untrained").meaning
            tip = r.tooltip + (f"\nhow: {safe_text(r.how)}" if r.how else "")
            if c == 2 and r.key and safe_text(r.key) not in tip:
                tip = f"model key: {safe_text(r.key_text)}\n{tip}"
            return tip
        if role == KIND_ROLE:
            return r.kind
        if role == KEY_ROLE:
            return r.target
        if role == SORT_ROLE:
            if c == 5:
                return r.nbytes
            if c == 0:
                return KIND_ORDER.get(r.kind, 99)
            return self.data(index) or ""
        if role == ITEM_ROLE:
            return r
        return None

