"""Qt-free display records built from a core Report (in a worker): the module tree items and the tensor rows.

Everything the item models show is precomputed here, so ``data()`` is a lookup, filtering is a vectorised
pass over a ``SearchIndex`` and sorting picks a precomputed permutation (``TableIndex``/``TreeIndex``, built
in the worker by ``index_rows``/``index_tree``).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ...core.fmt import human_bytes, human_count
from ...core.fmt import safe_text as _t  # names in the multi-line tooltips: a newline in a name stays on its line
from ..kinds import LOADED, NOT_MODEL_KEYS, TROUBLE, Kind, kind_of
from ...core.matching import How, Status
from ..palette import look

LOADED_KINDS = LOADED
_HOW_TEXT = {
    "exact": "exact name",
    "renamed": "renamed",
    "key_mapping": "key mapping",
    "converted": "converted",
    "prefix_added": "prefix added",
    "prefix_stripped": "prefix stripped",
    "tied": "tied",
    "ignored_by_rule": "ignore rule",
    "duplicate": "duplicate",
    "dtype_differs": "cast",
}


def fmt_shape(shape: tuple[int, ...] | None) -> str:
    if shape is None:
        return ""
    return "×".join(map(str, shape)) if shape else "scalar"


def how_text(how: tuple[str, ...], *, sources: tuple[str, ...] = (), key: str = "", tied_to: str | None = None,
             ck_dtype: str | None = None, model_dtype: str | None = None) -> str:
    parts = []
    for h in how:
        if h == "tied" and tied_to:
            parts.append(f"tied to {tied_to}")
        elif h == "prefix_added" and sources and key.endswith("." + sources[0]):
            parts.append(f"prefix '{key[: -len(sources[0])]}' added")
        elif h == "prefix_stripped" and sources and sources[0].endswith("." + key):
            parts.append(f"prefix '{sources[0][: -len(key)]}' stripped")
        elif h in ("renamed", "key_mapping", "converted", "prefix_added", "prefix_stripped") and sources and sources[0] != key:
            parts.append(f"{_HOW_TEXT[h]} from {sources[0]}" + (f" (+{len(sources) - 1})" if len(sources) > 1 else ""))
            sources = ()  # say the source once
        elif h == "dtype_differs" and ck_dtype and model_dtype:
            parts.append(f"cast {ck_dtype}→{model_dtype}")
        else:
            parts.append(_HOW_TEXT.get(h, h))
    return ", ".join(parts)


@dataclass(eq=False)
class TreeItem:
    """A module (``is_param=False``) or a parameter/buffer/unplaced tensor in the tree."""

    name: str
    path: str  # module path, or the model key; for unplaced tensors the on-disk name
    is_param: bool
    parent: TreeItem | None = None
    row: int = 0
    children: list[TreeItem] = field(default_factory=list)
    kind: Kind | None = Kind.MATCHED  # None: a module with nothing below it
    status_text: str = ""
    shape: str = ""
    dtype: str = ""
    numel: int = 0
    how: str = ""
    tooltip: str = ""
    search: str = ""
    class_name: str = ""
    ckpt_names: tuple[str, ...] = ()  # on-disk tensors behind this entry
    counts: Counter = field(default_factory=Counter)  # modules: kind -> number of params below
    fresh: int = 0  # of ``numel``: values newly initialised (missing, mismatched); ``numel - fresh`` load
    tied_to: str = ""  # a key that shares its partner's tensor: shown, but counted once (with the partner)
    uid: int = -1  # pre-order number, set by index_tree
    group: bool = False  # the "(not in model)" branch: checkpoint tensors that load into no model key

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()


@dataclass(eq=False)
class Row:
    """One line of the tensor table: an on-disk tensor, or a model key that the checkpoint lacks."""

    name: str  # on-disk name ("" when missing)
    key: str  # mapped model key ("" when unexpected/ignored); the first when it loads into several
    shape: str
    dtype: str
    nbytes: int
    numel: int
    kind: Kind
    how: str
    tooltip: str
    search: str
    more_keys: int = 0  # further model keys it loads into (shown as "key (+N)")

    @property
    def key_text(self) -> str:
        """The Model key as shown: ``key (+N)`` when it loads into several."""
        return f"{self.key} (+{self.more_keys})" if self.more_keys else self.key

    @property
    def target(self) -> str:
        """The tree key of this row: its model key, or the on-disk name when it has none."""
        return self.key or self.name


UNPLACED = "(not in model)"


def fmt_percent(p: float) -> str:
    """A percentage without exponent form: ``100%``, ``38%``, ``3.8%``, ``0.0034%`` (two significant digits)."""
    if p >= 10 or p == 0:
        return f"{p:.0f}%"
    return np.format_float_positional(float(p), precision=2, unique=True, fractional=False, trim="-") + "%"


def counted(k: Any) -> tuple[int, int]:
    """(values, of which newly initialised) a model key adds to the totals — the rule of
    ``Report.params_loaded``: computed buffers and keys loaded through a tie (their partner holds the
    tensor) add nothing, so a tied decoder weight is counted once."""
    if k is None or k.status is Status.COMPUTED or How.TIED in k.how:
        return 0, 0
    n = math.prod(k.model_shape)
    return n, (n if k.newly_initialized else 0)


def rollup_text(counts: Counter) -> str:
    total = sum(v for k, v in counts.items() if k not in NOT_MODEL_KEYS)
    loaded = sum(counts.get(k, 0) for k in LOADED)
    parts = []
    if total:
        parts.append(f"{loaded}/{total} loaded")
    for k in TROUBLE:
        if counts.get(k):
            parts.append(f"{counts[k]} {k.value}")
    if not parts and counts.get(Kind.IGNORED):
        parts.append(f"{counts[Kind.IGNORED]} ignored")
    return ", ".join(parts)


def rollup_kind(counts: Counter) -> Kind | None:
    for k in TROUBLE:
        if counts.get(k):
            return k
    if any(counts.get(k) for k in LOADED):
        return Kind.MATCHED
    if counts.get(Kind.IGNORED):
        return Kind.IGNORED
    return Kind.COMPUTED if counts.get(Kind.COMPUTED) else None  # a module with nothing below it


def build_tree(report: Any) -> TreeItem:
    """The module tree of a Report (with an extra branch for checkpoint tensors that have no place in it); without a
    model, the tree the on-disk names imply (``report.disk``), every tensor "in checkpoint"."""
    root = TreeItem("(root)", "", False)
    if report.disk is not None:
        for child in report.disk.children:
            _disk_item(child, report, root)
        for name in report.disk.tensors:
            _disk_tensor(name, report, root)
        for c in root.children:
            root.counts.update(c.counts)
        return root
    mk = report.model_keys
    if report.tree is not None:
        top = _module_item(report.tree, mk, root)
        top.row = 0
        root.children.append(top)
        root.counts.update(top.counts)
    unplaced = sorted((c for c in report.checkpoint_keys.values() if not c.targets), key=lambda c: natural_key(c.name))
    if unplaced:
        node = TreeItem(UNPLACED, UNPLACED, False, parent=root, row=len(root.children), class_name="", group=True)
        node.tooltip = "Checkpoint tensors that load into no model key: unexpected (dropped) or ignored"
        for c in unplaced:
            kind = kind_of(c.status, c.how)
            it = TreeItem(c.name, c.name, True, parent=node, row=len(node.children), kind=kind,
                          shape=fmt_shape(c.info.shape), dtype=c.info.dtype, numel=c.info.numel,
                          ckpt_names=(c.name,))
            it.status_text = look(kind).label
            it.how = how_text(tuple(h.value for h in c.how)) or ("no model key" if kind is Kind.UNEXPECTED else "")
            if c.reported_as != c.name:
                it.how = (it.how + ", " if it.how else "") + f"reported as {c.reported_as}"
            it.tooltip = f"{_t(c.name)}\n{look(kind).label}: {look(kind).meaning}"
            it.search = c.name
            it.counts[kind] += 1
            node.children.append(it)
            node.counts[kind] += 1
            node.numel += c.info.numel
        node.kind = rollup_kind(node.counts)
        node.status_text = rollup_text(node.counts)
        root.children.append(node)
        root.counts.update(node.counts)
    return root


def disk_rollup_text(node: Any) -> str:
    """A module's roll-up without a model: ``12 tensors · 1.2M values · 4.7 MiB · float32``."""
    n = node.n_tensors
    return (f"{n:,} tensor{'s' if n != 1 else ''} · {human_count(node.n_params, digits=1)} values · "
            f"{human_bytes(node.nbytes)} · {node.dtype_text()}")


def _disk_item(node: Any, report: Any, parent: TreeItem) -> TreeItem:
    """A module implied by the names (core ``DiskNode``) and everything below it, iteratively (names may nest deep)."""
    top = None
    stack = [(node, parent)]
    while stack:
        n, par = stack.pop()
        it = TreeItem(n.name, n.path, False, parent=par, row=len(par.children), kind=Kind.IN_CHECKPOINT,
                      numel=n.n_params)
        it.status_text = disk_rollup_text(n)
        it.tooltip = f"{_t(n.path)}\n{it.status_text}\n{look(Kind.IN_CHECKPOINT).meaning}"
        it.search = n.path
        it.counts[Kind.IN_CHECKPOINT] = n.n_tensors
        par.children.append(it)
        top = top or it
        for name in n.tensors:
            _disk_tensor(name, report, it)
        stack.extend((c, it) for c in reversed(n.children))
    return top


def _disk_tensor(name: str, report: Any, parent: TreeItem) -> TreeItem:
    info = report.index.tensors[name]
    it = TreeItem(name.rsplit(".", 1)[-1], name, True, parent=parent, row=len(parent.children), kind=Kind.IN_CHECKPOINT,
                  shape=fmt_shape(info.shape), dtype=info.dtype, numel=info.numel, ckpt_names=(name,))
    it.status_text = look(Kind.IN_CHECKPOINT).label
    it.tooltip = f"{_t(name)}\n{look(Kind.IN_CHECKPOINT).label}: {look(Kind.IN_CHECKPOINT).meaning}"
    it.search = name
    it.counts[Kind.IN_CHECKPOINT] += 1
    parent.children.append(it)
    return it


def _module_item(node: Any, mk: Any, parent: TreeItem) -> TreeItem:
    # numel/fresh are summed from the keys below (``counted``), never taken from the module's own total, so the
    # tree, the header and the CLI agree (a tied weight is in the tree once, with the tensor that holds it)
    it = TreeItem(node.name if node.path else node.class_name, node.path, False, parent=parent,
                  class_name=node.class_name)
    for c in node.children:
        child = _module_item(c, mk, it)
        child.row = len(it.children)
        it.children.append(child)
        it.counts.update(child.counts)
        it.numel += child.numel
        it.fresh += child.fresh
    for p in node.params:
        k = mk.get(p.key)
        if k is None:
            kind, how, status = (Kind.COMPUTED if not p.persistent else Kind.IGNORED), "", None
            sources: tuple[str, ...] = ()
        else:
            hv = tuple(h.value for h in k.how)
            kind = kind_of(k.status, k.how)
            how = how_text(hv, sources=k.sources, key=p.key, tied_to=k.tied_to, ck_dtype=k.checkpoint_dtype, model_dtype=k.model_dtype)
            sources = k.sources
            status = k
        n, fresh = counted(k)
        pi = TreeItem(p.key.rsplit(".", 1)[-1], p.key, True, parent=it, row=len(it.children), kind=kind,
                      shape=fmt_shape(p.shape), dtype=p.dtype, numel=p.numel, how=how, ckpt_names=sources,
                      fresh=fresh if n else 0, tied_to=(k.tied_to or "") if k is not None and not n and kind is Kind.TIED else "")
        it.numel += n
        it.fresh += fresh
        lbl = look(kind).label
        if status is not None and kind is Kind.MISMATCHED and status.checkpoint_shape is not None:
            # short (the status column stays narrow); the tooltip and the details panel's How say it in full
            lbl = f"mismatch {fmt_shape(status.checkpoint_shape)} ≠ {fmt_shape(p.shape)}"
            pi.how = f"checkpoint has {fmt_shape(status.checkpoint_shape)}, model wants {fmt_shape(p.shape)}" + (f"; {pi.how}" if pi.how else "")
        if kind is Kind.DTYPE and status is not None:
            pi.dtype = f"{status.checkpoint_dtype}→{p.dtype}"
        if p.kind == "buffer":
            pi.class_name = "buffer" if p.persistent else "buffer (non-persistent)"
        pi.status_text = lbl
        tip = [_t(p.key), f"{look(kind).label}: {look(kind).meaning}"]
        if kind is Kind.MISMATCHED and status is not None and status.checkpoint_shape is not None:
            tip.append(f"checkpoint {fmt_shape(status.checkpoint_shape)}, model {fmt_shape(p.shape)}")
        if sources and sources[0] != p.key:
            tip.append("on disk: " + ", ".join(map(_t, sources[:4])) + (" …" if len(sources) > 4 else ""))
        if pi.tied_to:
            tip.append(f"shares the tensor of {_t(pi.tied_to)}: its {human_count(p.numel, digits=1)} values are counted "
                       "once, there (module totals and the header)")
        pi.tooltip = "\n".join(tip)
        pi.search = p.key if not sources else p.key + "\n" + "\n".join(sources)
        pi.counts[kind] += 1
        it.children.append(pi)
        it.counts[kind] += 1
    it.kind = rollup_kind(it.counts)
    it.status_text = rollup_text(it.counts)
    tied = sum(c.numel for c in it.walk() if c.is_param and c.tied_to)
    it.tooltip = (f"{_t(it.path or '(model)')}: {_t(node.class_name)}\n{it.status_text}\n{human_count(it.numel, digits=1)} values"
                  f" ({human_count(it.numel - it.fresh, digits=1)} loaded, {human_count(it.fresh, digits=1)} newly initialised)"
                  + (f"\n+ {human_count(tied, digits=1)} tied (shared with another key, counted once)" if tied else ""))
    it.search = it.path
    return it


def build_rows(report: Any) -> list[Row]:
    """Every on-disk tensor, then the model keys the checkpoint lacks (missing, computed excluded)."""
    rows: list[Row] = []
    mk = report.model_keys
    for c in report.checkpoint_keys.values():
        hv = tuple(h.value for h in c.how)
        kind = kind_of(c.status, c.how)
        key = c.targets[0] if c.targets else ""
        m = mk.get(key) if key else None
        if m is not None and c.status is Status.MATCHED:
            mh = tuple(h.value for h in m.how)
            kind = kind_of(m.status, set(c.how) | set(m.how))
            how = how_text(mh, sources=(c.name,), key=key, ck_dtype=m.checkpoint_dtype, model_dtype=m.model_dtype)
        else:
            how = how_text(hv, sources=(c.name,), key=key)
        shape = fmt_shape(c.info.shape)
        if kind is Kind.MISMATCHED and m is not None:
            shape += f" ≠ {fmt_shape(m.model_shape)}"  # on disk ≠ model, as in the tree: short, so names keep room
        if kind is Kind.UNEXPECTED and not how:
            how = "no model key" + (f", reported as {c.reported_as}" if c.reported_as != c.name else "")
        tip = f"{_t(c.name)}\n{look(kind).label}: {look(kind).meaning}"
        if c.targets:
            tip += "\nloads into: " + ", ".join(map(_t, c.targets[:4]))
        rows.append(Row(c.name, key, shape, c.info.dtype, c.info.nbytes, c.info.numel, kind, how, tip,
                        c.name + "\n" + "\n".join(c.targets), more_keys=max(len(c.targets) - 1, 0)))
    for m in mk.values():
        if m.sources or m.status not in (Status.MISSING, Status.MATCHED):
            continue  # on-disk keys are listed above; computed buffers are never in a checkpoint
        hv = tuple(h.value for h in m.how)
        kind = kind_of(m.status, m.how)
        n = math.prod(m.model_shape)
        how = how_text(hv, key=m.key, tied_to=m.tied_to) or ("newly initialised" if kind is Kind.MISSING else "")
        rows.append(Row("", m.key, fmt_shape(m.model_shape), m.model_dtype, 0, n, kind, how,
                        f"{_t(m.key)}\n{look(kind).label}: {look(kind).meaning}", m.key))
    return rows


# ---------------------------------------------------------------------------------------------- indexes
KIND_CODES = {k: i for i, k in enumerate((Kind.MATCHED, Kind.RENAMED, Kind.TIED, Kind.DTYPE, Kind.MISSING, Kind.MISMATCHED,
                                          Kind.UNEXPECTED, Kind.IGNORED, Kind.COMPUTED, Kind.IN_CHECKPOINT))}
KIND_ORDER = {k: i for i, k in enumerate((Kind.MISSING, Kind.MISMATCHED, Kind.UNEXPECTED, Kind.DTYPE, Kind.RENAMED, Kind.TIED,
                                          Kind.MATCHED, Kind.IGNORED, Kind.COMPUTED, Kind.IN_CHECKPOINT))}


@dataclass(frozen=True, eq=False)
class SearchIndex:
    """Columnar search data for a list of entries: lower-cased search texts and a kind code per entry."""

    texts: list[str]
    kinds: np.ndarray  # int8 KIND_CODES

    @classmethod
    def build(cls, searches: Sequence[str], kinds: Sequence[str]) -> SearchIndex:
        return cls([s.lower() for s in searches], np.fromiter((KIND_CODES.get(k, 99) for k in kinds), np.int16, len(kinds)))

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(eq=False)
class TableIndex:
    """The table's rows plus their search index and one sort permutation per column (computed on demand)."""

    rows: list[Row]
    search: SearchIndex
    by_name: dict[str, int] = field(default_factory=dict)  # on-disk name -> row number
    by_key: dict[str, list[int]] = field(default_factory=dict)  # model key -> row numbers
    keys_sorted: list[str] = field(default_factory=list)  # by_key's keys, sorted (prefix look-ups)
    orders: dict[int, np.ndarray] = field(default_factory=dict)
    _nat: np.ndarray | None = field(default=None, repr=False)

    def order(self, column: int) -> np.ndarray:
        """Row numbers in ascending order of ``column`` (0 status … 6 how); stable; names in natural order."""
        o = self.orders.get(column)
        if o is None:
            o = self.orders[column] = _table_order(self.rows, column, self._natural_names)
        return o

    def _natural_names(self) -> np.ndarray:
        """Each row's on-disk name (or model key when it has none) as a natural-order sort string, made once."""
        if self._nat is None:
            self._nat = _natural(r.name or r.key for r in self.rows)
        return self._nat

    def warm(self) -> TableIndex:
        for c in range(7):
            self.order(c)
        return self


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key of a dotted name in natural order: ``layers.2`` before ``layers.10`` (digit runs compare as numbers;
    text parts and numbers alternate, so two keys never compare a number with text)."""
    return tuple(int(p) if i % 2 else p for i, p in enumerate(_DIGITS.split(name)))


def _natural(xs: Any) -> np.ndarray:
    """``xs`` as strings that sort (as numpy strings, vectorised) in ``natural_key`` order: every digit run is
    prefixed by its length (``layers.2`` -> ``layers.012``, ``layers.10`` -> ``layers.0210``), for ``np.lexsort``."""
    return _strs(_DIGITS.sub(lambda m: f"{len(m.group()):02d}{m.group()}", x) for x in xs)


def _strs(xs: Any) -> np.ndarray:
    a = np.array(list(xs), dtype=str)
    return a if a.size else np.zeros(0, dtype="<U1")


def _table_order(rows: list[Row], column: int, natural_names: Any) -> np.ndarray:
    if not rows:
        return np.zeros(0, np.int64)
    if column == 0:
        return np.lexsort((natural_names(), np.array([KIND_ORDER.get(r.kind, 99) for r in rows])))
    if column == 1:  # rows with nothing on disk last, by their model key
        return np.lexsort((natural_names(), np.array([not r.name for r in rows])))
    if column == 2:
        return np.lexsort((_natural(r.key for r in rows), np.array([not r.key for r in rows])))
    if column == 3:
        return np.lexsort((_strs(r.shape for r in rows), np.array([r.numel for r in rows], dtype=np.float64)))
    if column == 4:
        return np.argsort(_strs(r.dtype for r in rows), kind="stable")
    if column == 5:
        return np.argsort(np.array([r.nbytes for r in rows], dtype=np.int64), kind="stable")
    return np.argsort(_strs(r.how for r in rows), kind="stable")


def index_rows(rows: list[Row], *, warm: bool = True) -> TableIndex:
    """The table index of ``rows`` (every sort order precomputed when ``warm``: do it in the worker)."""
    by_key: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.key:
            by_key.setdefault(r.key, []).append(i)
    t = TableIndex(rows, SearchIndex.build([r.search for r in rows], [r.kind for r in rows]),
                   {r.name: i for i, r in enumerate(rows) if r.name}, by_key, sorted(by_key))
    return t.warm() if warm else t


@dataclass(eq=False)
class TreeIndex:
    """Pre-order numbering of a tree: ``parent[uid]`` (-1 for the root), the parameter uids and their search index."""

    items: list[TreeItem]  # by uid
    parent: np.ndarray
    params: np.ndarray  # uids of the parameter/tensor items, in pre-order
    search: SearchIndex
    by_key: dict[str, TreeItem] = field(default_factory=dict)  # model key (or unplaced on-disk name) -> item
    modules: dict[str, TreeItem] = field(default_factory=dict)  # module path -> item
    widest_status: str = ""  # the longest module roll-up ("44/48 loaded, 2 missing, 2 mismatched"), for sizing
    longest_names: tuple[str, ...] = ()  # per depth 1, 2, ...: the longest name at that depth, for sizing

    def visible(self, param_mask: np.ndarray | None) -> np.ndarray | None:
        """Per uid: the item is a matching parameter or an ancestor of one (None: everything is visible)."""
        if param_mask is None:
            return None
        vis = np.zeros(len(self.items), dtype=bool)
        cur = self.params[param_mask]
        while cur.size:
            vis[cur] = True
            cur = self.parent[cur]
            cur = cur[cur >= 0]
            cur = np.unique(cur[~vis[cur]])
        return vis


def index_tree(root: TreeItem) -> TreeIndex:
    """Number the items of ``root`` (sets ``uid``) and index its parameters for searching."""
    items: list[TreeItem] = []
    parent: list[int] = []
    longest: list[str] = []  # by depth - 1
    stack: list[tuple[TreeItem, int, int]] = [(root, -1, 0)]
    while stack:
        it, p, depth = stack.pop()
        it.uid = len(items)
        items.append(it)
        parent.append(p)
        if depth:
            if depth > len(longest):
                longest.append(it.name)
            elif len(it.name) > len(longest[depth - 1]):
                longest[depth - 1] = it.name
        stack.extend((c, it.uid, depth + 1) for c in reversed(it.children))
    params = [it for it in items if it.is_param]
    return TreeIndex(items, np.array(parent, dtype=np.int64), np.array([it.uid for it in params], dtype=np.int64),
                     SearchIndex.build([it.search for it in params], [it.kind for it in params]),
                     {it.path: it for it in params},
                     {it.path: it for it in items if not it.is_param and it is not root},
                     max((it.status_text for it in items if not it.is_param), key=len, default=""), tuple(longest))


# ---------------------------------------------------------------------------------------------- init check
def untrained_rows(rows: Sequence[Row], flagged: frozenset[str] | set[str]) -> np.ndarray:
    """Per table row: its on-disk tensor looks untrained (``flagged`` holds on-disk names)."""
    return np.fromiter((bool(r.name) and r.name in flagged for r in rows), dtype=bool, count=len(rows))


def untrained_tree(index: TreeIndex, flagged: frozenset[str] | set[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(per parameter in index.params order: looks untrained, per uid: how many parameters at or below it
    look untrained)`` — the roll-up that lets a collapsed module say "3 look untrained"."""
    items = index.items
    params = index.params.tolist()
    pmask = np.fromiter((any(n in flagged for n in (items[u].ckpt_names or (items[u].path,))) for u in params),
                        dtype=bool, count=len(params))
    counts = np.zeros(len(items), dtype=np.int64)
    cur = index.params[pmask]
    while cur.size:
        np.add.at(counts, cur, 1)
        cur = index.parent[cur]
        cur = cur[cur >= 0]
    return pmask, counts
