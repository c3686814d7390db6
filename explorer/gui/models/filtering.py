"""Search and status filtering: substring, glob or regex over names, plus a set of shown statuses.

``Filter.mask(search_index)`` is one vectorised pass over precomputed lower-case search texts (a list
comprehension for substrings, a literal pre-filter for globs, a numpy mask for statuses), never a Python
callback per row from C++. Globs and regexes run on the GUI thread under a time budget
(:data:`explorer.core.keys.FILTER_BUDGET`): a catastrophic pattern raises PatternTooSlow ("regex too slow" in the
filter bar) instead of freezing the window. The table filters inside its model (a row-number array; see ``TableProxy``);
the tree proxy's ``filterAcceptsRow`` is a list lookup in the visible-uid flags computed from that mask
(matching parameters and their ancestors), so only rows under expanded branches are ever asked.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QIdentityProxyModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt

from ...core.errors import PlanError
from ...core.keys import FILTER_BUDGET, UserPattern
from .entries import KIND_CODES, SearchIndex, TreeItem
from .tree_model import SORT_ROLE

MODES = ("substring", "glob", "regex")
_GLOB_SPECIAL = re.compile(r"[*?\[\]]")
_BRACKETS = re.compile(r"([\[\]])")
_ANY = "[^\n]"  # the search text holds one name per line; a glob stays within one


@dataclass(frozen=True)
class Filter:
    text: str = ""
    mode: str = "substring"
    kinds: frozenset[str] | None = None  # None: every status
    untrained: bool = False  # only entries the last init check flagged as "looks untrained"

    @property
    def active(self) -> bool:
        return bool(self.text) or self.kinds is not None or self.untrained

    def regex(self) -> UserPattern | None:
        """The compiled pattern for glob/regex modes (None for substring). Raises ExplorerError for a bad regex."""
        import regex

        if not self.text or self.mode == "substring":
            return None
        flags = regex.IGNORECASE | regex.MULTILINE
        if self.mode == "regex":
            return UserPattern(self.text, label="filter", flags=flags, invalid="bad regex")
        # a glob matches one whole name (one line of the search text), like a shell pattern; * crosses dots
        return UserPattern("^" + _glob_to_regex(self.text) + "$", label="filter", flags=flags, invalid="bad glob")

    def matcher(self) -> Callable[[str], bool]:
        """A predicate over one entry's search text (time-bounded per call). Raises ExplorerError for a bad regex."""
        if not self.text:
            return lambda s: True
        rx = self.regex()
        if rx is not None:
            return lambda s: rx.search(s)
        low = self.text.lower()
        return lambda s: low in s.lower()

    def mask(self, index: SearchIndex, *, untrained: np.ndarray | None = None) -> np.ndarray | None:
        """Which entries of ``index`` match (a bool array), or None when the filter is inactive. ``untrained``
        flags the entries that look untrained (None: no init check yet, so nothing passes that toggle)."""
        if not self.active:
            return None
        base = self._mask(index) if (self.text or self.kinds is not None) else None
        if not self.untrained:
            return base
        flags = untrained if untrained is not None and len(untrained) == len(index) else np.zeros(len(index), dtype=bool)
        return flags.copy() if base is None else base & flags

    def _mask(self, index: SearchIndex) -> np.ndarray:
        n = len(index)
        texts = index.texts
        cand: np.ndarray | None = None
        if self.kinds is not None:
            codes = [KIND_CODES[k] for k in self.kinds if k in KIND_CODES]
            keep = np.isin(index.kinds, codes)
            if not self.text:
                return keep
            cand = np.flatnonzero(keep)
        if cand is not None:
            sub = [texts[i] for i in cand.tolist()]
        else:
            sub = texts
        hit = _match_texts(self, sub)
        if cand is None:
            return hit
        out = np.zeros(n, dtype=bool)
        out[cand[hit]] = True
        return out


def _match_texts(flt: Filter, texts: list[str]) -> np.ndarray:
    n = len(texts)
    if flt.mode == "substring":
        low = flt.text.lower()
        return np.fromiter((low in s for s in texts), dtype=bool, count=n)
    rx = flt.regex()
    assert rx is not None
    if flt.mode == "glob":
        lit = max(_GLOB_SPECIAL.split(_drop_classes(flt.text.lower())), key=len)
        if len(lit) >= 2:  # cheap literal pre-filter, then the regex on the few survivors
            pre = np.fromiter((lit in s for s in texts), dtype=bool, count=n)
            idx = np.flatnonzero(pre)
            out = np.zeros(n, dtype=bool)
            out[idx] = np.array(rx.hits([texts[i] for i in idx.tolist()], budget=FILTER_BUDGET), dtype=bool)
            return out
    return np.array(rx.hits(texts, budget=FILTER_BUDGET), dtype=bool).reshape(n)


def _drop_classes(glob: str) -> str:
    """A glob with its [...] classes replaced by '*', so what is left between wildcards is literal."""
    return re.sub(r"\[[^\]]*\]", "*", glob)


def _glob_to_regex(pattern: str) -> str:
    """core's glob translation, one name per line. A pattern core rejects (an unclosed ``[`` while typing, a stray
    ``]``, ``[]``) is not an error here: its brackets match literally and its wildcards still work."""
    from ...core.keys import translate_glob

    try:
        return translate_glob(pattern, any_char=_ANY)
    except PlanError:
        return "".join(re.escape(p) if p in "[]" else translate_glob(p, any_char=_ANY) for p in _BRACKETS.split(pattern) if p)


class TreeFilterProxy(QSortFilterProxyModel):
    """The module tree, filtered by ``set_filter``: matching parameters and their ancestors stay visible."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._vis: list[bool] | None = None  # by TreeItem.uid; None: show everything
        self._mask: np.ndarray | None = None  # by parameter (TreeIndex.params order)
        self._key: tuple[Any, Filter, int] | None = None
        self._count = 0
        self.setSortRole(SORT_ROLE)
        self.setRecursiveFilteringEnabled(False)  # ancestors are precomputed; no recursive Python walk
        self.setDynamicSortFilter(False)

    def setSourceModel(self, model: Any) -> None:  # type: ignore[override]
        super().setSourceModel(model)
        model.modelAboutToBeReset.connect(self._forget)

    def _forget(self) -> None:
        self._vis = self._mask = self._key = None

    def set_filter(self, flt: Filter) -> int:
        """Show the parameters matching ``flt`` (with their ancestors). Returns how many parameters match."""
        index = self.sourceModel().tree_index
        if self._key is not None and self._key[0] is index and self._key[1] == flt and self._key[2] == self.sourceModel().untrained_gen:
            return self._count
        model = self.sourceModel()
        mask = flt.mask(index.search, untrained=model.untrained_params)
        vis = index.visible(mask)
        # invalidate() drops every mapping at once (layout change) and re-maps only the persistent indexes
        # (expanded branches, selection); a filter change would diff every mapped branch, calling parent()
        # back into Python hundreds of thousands of times on a big MoE.
        self._vis = vis.tolist() if vis is not None else None
        self._mask = mask
        self.invalidate()
        self._key = (index, flt, self.sourceModel().untrained_gen)
        self._count = int(mask.sum()) if mask is not None else len(index.params)
        return self._count

    def first_matches(self, limit: int) -> list[TreeItem]:
        """The first ``limit`` matching parameters, in tree order (none when no filter is set)."""
        if self._mask is None:
            return []
        index = self.sourceModel().tree_index
        return [index.items[u] for u in index.params[np.flatnonzero(self._mask)[:limit]].tolist()]

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        vis = self._vis
        if vis is None:
            return True
        p = source_parent.internalPointer() if source_parent.isValid() else self.sourceModel().root
        uid = p.children[source_row].uid
        return 0 <= uid < len(vis) and vis[uid]

    def lessThan(self, left: QModelIndex | QPersistentModelIndex, right: QModelIndex | QPersistentModelIndex) -> bool:
        a, b = left.data(SORT_ROLE), right.data(SORT_ROLE)
        try:
            return a < b
        except TypeError:
            return str(a) < str(b)


class TableProxy(QIdentityProxyModel):
    """A pass-through for the tensor table: the model filters and sorts itself (``set_filter``, ``sort``)."""

    def set_filter(self, flt: Filter) -> int:
        """Show only the rows matching ``flt``; returns how many are shown."""
        return self.sourceModel().set_filter(flt)

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self.sourceModel().sort(column, order)


def FilterProxy(parent: Any = None, *, tree: bool = False) -> TreeFilterProxy | TableProxy:  # noqa: N802
    """The proxy for the module tree (``tree=True``) or the tensor table."""
    return TreeFilterProxy(parent) if tree else TableProxy(parent)
