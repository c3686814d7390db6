"""Search and status filtering: substring, glob or regex over names, plus a set of shown statuses.

The match is computed in one pass over the precomputed records (``Filter.apply``), so the proxy's
``filterAcceptsRow`` is a flag lookup; the tree proxy filters recursively (a module is shown when any
parameter below it matches).
"""
from __future__ import annotations

import fnmatch
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
            # a glob matches a whole line (one name), like a shell pattern; * crosses dots
            rx = re.compile(fnmatch.translate(t).replace(r"\Z", "$"), re.IGNORECASE | re.MULTILINE)
            return lambda s: rx.match(s) is not None or any(rx.match(x) for x in s.split("\n")[1:])
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

    def lessThan(self, left: QModelIndex | QPersistentModelIndex, right: QModelIndex | QPersistentModelIndex) -> bool:
        a, b = left.data(SORT_ROLE), right.data(SORT_ROLE)
        try:
            return a < b
        except TypeError:
            return str(a) < str(b)
