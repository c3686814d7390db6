"""Search and status filtering: substring, glob or regex over names, plus a set of shown statuses.

The match is computed in one pass over the precomputed records (``Filter.apply``), so the proxy's
``filterAcceptsRow`` is a flag lookup; the tree proxy filters recursively (a module is shown when any
parameter below it matches).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt

from .tree_model import SORT_ROLE

MODES = ("substring", "glob", "regex")


@dataclass(frozen=True)
class Filter:
    text: str = ""
    mode: str = "substring"
    kinds: frozenset[str] | None = None  # None: every status

    @property
    def active(self) -> bool:
        return bool(self.text) or self.kinds is not None

    def matcher(self) -> Callable[[str], bool]:
        """A predicate over an entry's search text. Raises re.error for a bad regex."""
        t = self.text
        if not t:
            return lambda s: True
        if self.mode == "regex":
            rx = re.compile(t, re.IGNORECASE | re.MULTILINE)
            return lambda s: rx.search(s) is not None
        if self.mode == "glob":
            # a glob matches one whole name (one line of the search text), like a shell pattern; * crosses dots
            rx = re.compile("^" + _glob_to_regex(t) + "$", re.IGNORECASE | re.MULTILINE)
            return lambda s: rx.search(s) is not None
        low = t.lower()
        return lambda s: low in s.lower()

    def apply(self, entries: Iterable[Any]) -> int:
        """Set ``visible`` on every entry (objects with ``search`` and ``kind``); returns how many are visible."""
        match = self.matcher()
        kinds = self.kinds
        n = 0
        for e in entries:
            v = (kinds is None or e.kind in kinds) and match(e.search)
            e.visible = v
            n += v
        return n


def _glob_to_regex(pattern: str) -> str:
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^\n]*")
        elif c == "?":
            out.append("[^\n]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


class FilterProxy(QSortFilterProxyModel):
    """Sort by ``SORT_ROLE``; filter by the ``visible`` flags that ``Filter.apply`` set on the source records."""

    def __init__(self, parent: Any = None, *, tree: bool = False) -> None:
        super().__init__(parent)
        self._tree = tree
        self._active = False
        self.setSortRole(SORT_ROLE)
        self.setRecursiveFilteringEnabled(tree)
        self.setDynamicSortFilter(False)

    def set_active(self, active: bool) -> None:
        """Re-run filtering after the source flags changed."""
        if hasattr(self, "beginFilterChange"):  # Qt >= 6.9; invalidateFilter is deprecated there
            self.beginFilterChange()
            self._active = active
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self._active = active
            self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        if not self._active:
            return True
        src = self.sourceModel()
        if self._tree:
            p = source_parent.internalPointer() if source_parent.isValid() else src.root
            it = p.children[source_row]
            return it.is_param and it.visible
        return src.rows[source_row].visible

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        src = self.sourceModel()
        if getattr(src, "sorts_itself", False):
            src.sort(column, order)  # the proxy keeps source order (column -1)
            return
        super().sort(column, order)

    def lessThan(self, left: QModelIndex | QPersistentModelIndex, right: QModelIndex | QPersistentModelIndex) -> bool:
        a, b = left.data(SORT_ROLE), right.data(SORT_ROLE)
        try:
            return a < b
        except TypeError:
            return str(a) < str(b)
