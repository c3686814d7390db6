"""Checkpoint A vs B, tensor by tensor, streamed over mmap-backed chunks (peak memory about two chunks).

Values are read as float32 (float64 if either side is); every product and sum accumulates in float64, slice by slice,
so the figures do not depend on the summation order of a CPU's float32 kernels. Keys are paired by
:func:`pair_keys` (a key mapping, or an automatic common-prefix strip). Long work follows :mod:`explorer.core.jobs`.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable, Iterator, Mapping

from .checkpoint import TensorReader, open_reader
from .jobs import Cancel, Progress, Ticker
from .keys import apply_key_mapping, check_key_mapping, check_key_mapping_speed, layer_of, leading_prefixes
from .parallel import Executor, Part, Readers, Span, WorkItem, executor_for, run_pass, shareable, split_items
from .stats import DEFAULT_CHUNK, Source
from .stats_kernels import Scratch as _Scratch
from .stats_kernels import SLICE, c_kernels, fd_failed, fd_span, float_slices


class DiffStatus(str, Enum):
    """How one tensor compares between A and B."""

    SAME = "same"
    CHANGED = "changed"
    ONLY_A = "only_a"
    ONLY_B = "only_b"
    SHAPE_MISMATCH = "shape_mismatch"

    __hash__ = str.__hash__  # equal to its value, so it hashes like it too (counts keyed by "same" find it)

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


SAME, CHANGED, ONLY_A, ONLY_B, SHAPE_MISMATCH = DiffStatus  # short names for the statuses


@dataclass(frozen=True)
class DiffEntry:
    """One tensor compared between checkpoints A and B (values read as float32, or float64 if either is;
    products and sums in float64).

    ``rel_change`` = ‖B−A‖/‖A‖ (None when ‖A‖ = 0 and B ≠ A), ``cosine`` = A·B/(‖A‖‖B‖) (None when a norm
    is 0). Norms are kept so entries can be rolled up per module. Norms, cosine and sums cover the positions
    finite in both; ``nonfinite`` counts positions that differ where either side is NaN/Inf, and makes
    ``rel_change``, ``max_abs_diff`` and ``diff_norm`` infinite (a tensor that turned NaN has not "moved 0").
    """

    name: str  # common key (after key mapping)
    status: DiffStatus
    name_a: str | None = None
    name_b: str | None = None
    shape_a: tuple[int, ...] | None = None
    shape_b: tuple[int, ...] | None = None
    dtype_a: str | None = None
    dtype_b: str | None = None
    rel_change: float | None = None
    cosine: float | None = None
    max_abs_diff: float | None = None
    norm_a: float | None = None
    norm_b: float | None = None
    diff_norm: float | None = None
    nonfinite: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "name_a": self.name_a,
            "name_b": self.name_b,
            "shape_a": list(self.shape_a) if self.shape_a is not None else None,
            "shape_b": list(self.shape_b) if self.shape_b is not None else None,
            "dtype_a": self.dtype_a,
            "dtype_b": self.dtype_b,
            "rel_change": _fin(self.rel_change),
            "cosine": _fin(self.cosine),
            "max_abs_diff": _fin(self.max_abs_diff),
            "norm_a": _fin(self.norm_a),
            "norm_b": _fin(self.norm_b),
            "nonfinite": self.nonfinite,
        }


def _fin(v: float | None) -> float | None:
    return v if v is None or math.isfinite(v) else None


@dataclass(frozen=True)
class KeyPairing:
    """How keys of A and B were paired: the common key for each side's on-disk name."""

    a: Mapping[str, str]  # on-disk name in A -> common key
    b: Mapping[str, str]
    mapping_a: Mapping[str, str] = field(default_factory=dict)  # regex mapping applied to A's names
    mapping_b: Mapping[str, str] = field(default_factory=dict)


def pair_keys(
    names_a: Iterable[str], names_b: Iterable[str], *, key_mapping: Mapping[str, str] | None = None
) -> KeyPairing:
    """Pair the tensor names of two checkpoints.

    ``key_mapping`` (``{regex: replacement}``, as in from_pretrained) is applied to both sides. Without it,
    when few names match exactly, a common leading prefix on either or both sides (``module.``, ``bert.``,
    ``model.encoder.``) is stripped if that pairs more names; the chosen regexes are in the result.
    """
    la, lb = list(names_a), list(names_b)
    if key_mapping:
        key_mapping = check_key_mapping(key_mapping)
        check_key_mapping_speed(key_mapping, dict.fromkeys(la + lb))
        return KeyPairing({n: apply_key_mapping(n, key_mapping) for n in la}, {n: apply_key_mapping(n, key_mapping) for n in lb},
                          dict(key_mapping), dict(key_mapping))
    ident_a, ident_b = {n: n for n in la}, {n: n for n in lb}
    best = (len(set(la) & set(lb)), {}, {})
    if best[0] * 2 >= min(len(la), len(lb)):
        return KeyPairing(ident_a, ident_b)
    cand_a = [""] + leading_prefixes(la)
    cand_b = [""] + leading_prefixes(lb)
    for pa in cand_a:
        sa = {n[len(pa):] if pa and n.startswith(pa) else n for n in la}
        for pb in cand_b:
            if not pa and not pb:
                continue
            sb = {n[len(pb):] if pb and n.startswith(pb) else n for n in lb}
            score = len(sa & sb)
            if score > best[0]:
                ma = {"^" + re.escape(pa): ""} if pa else {}
                mb = {"^" + re.escape(pb): ""} if pb else {}
                best = (score, ma, mb)
    _, ma, mb = best
    return KeyPairing({n: apply_key_mapping(n, ma) for n in la}, {n: apply_key_mapping(n, mb) for n in lb}, ma, mb)


def diff_checkpoints(
    a: Source,
    b: Source,
    *,
    key_mapping: Mapping[str, str] | None = None,
    chunk_elems: int = DEFAULT_CHUNK,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    workers: int | Executor | None = None,
) -> list[DiffEntry]:
    """Compare two checkpoints tensor by tensor (paths, indexes or readers). Peak memory ≈ two chunks.

    Keys are paired with :func:`pair_keys`. ``progress(done, total)`` counts elements of A's tensors.
    Returns one entry per common key, in A's file order then B-only keys.
    """
    return list(iter_diff(a, b, key_mapping=key_mapping, chunk_elems=chunk_elems, progress=progress, cancel=cancel,
                          workers=workers))


def iter_diff(
    a: Source,
    b: Source,
    *,
    key_mapping: Mapping[str, str] | None = None,
    chunk_elems: int = DEFAULT_CHUNK,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    workers: int | Executor | None = None,
) -> Iterator[DiffEntry]:
    """Generator form of :func:`diff_checkpoints`: yields each entry in order, batch by batch (:data:`BATCH_ELEMS`
    elements of A compared on ``workers`` — default every core — at a time; the figures do not depend on either)."""
    ra, own_a = open_reader(a)
    try:
        rb, own_b = open_reader(b)
    except BaseException:
        if own_a:
            ra.close()
        raise
    try:
        ia, ib = ra.index.tensors, rb.index.tensors
        pairing = pair_keys(ia, ib, key_mapping=key_mapping)
        by_b: dict[str, str] = {}
        for nb, k in pairing.b.items():
            by_b.setdefault(k, nb)
        seen_b: set[str] = set()
        total = sum(ia[n].numel for n in ia if pairing.a[n] in by_b)
        tick = Ticker(total, progress, cancel)
        tick.check()
        shared = all(type(r) is TensorReader and shareable(r.index) for r in (ra, rb))
        sources = (ra.index, rb.index) if shared else (ra, rb)
        executor = executor_for(workers, local_only=not shared)
        batch: list[Any] = []  # DiffEntry, or (key, na, nb, ta, tb) to compare
        size = 0

        def run_batch() -> Iterator[DiffEntry]:
            todo = [(i, e) for i, e in enumerate(batch) if not isinstance(e, DiffEntry)]
            parts = [Part((Span(0, na, 0, ta.numel, ta.file, ta.dtype), Span(1, nb, 0, tb.numel, tb.file, tb.dtype)),
                          (i,)) for i, (_k, na, nb, ta, tb) in todo]
            items = split_items(diff_kernel, parts, chunk_elems=chunk_elems,
                                splittable=lambda sp: (ra, rb)[sp.source].splittable(sp.tensor))
            sums: dict[int, list[Any]] = {}
            for item, partials in run_pass(executor, sources, items, tick, chunk_elems=chunk_elems):
                for part, p in zip(item.parts, partials):
                    acc = sums.get(part.options[0])
                    sums[part.options[0]] = list(p) if acc is None else _merge(acc, p)
            for i, e in enumerate(batch):
                if isinstance(e, DiffEntry):
                    yield e
                else:
                    key, na, nb, ta, tb = e
                    yield _entry(key, na, nb, ta, tb, sums.get(i, [0.0, 0.0, 0.0, 0.0, 0.0, True, 0]))

        for na, key in pairing.a.items():
            ta = ia[na]
            nb = by_b.get(key)
            if nb is None:
                batch.append(DiffEntry(key, ONLY_A, na, None, ta.shape, None, ta.dtype, None))
                continue
            seen_b.add(nb)
            tb = ib[nb]
            if ta.shape != tb.shape:
                batch.append(DiffEntry(key, SHAPE_MISMATCH, na, nb, ta.shape, tb.shape, ta.dtype, tb.dtype))
                tick.step(ta.numel)
                continue
            if size + ta.numel > BATCH_ELEMS and size:
                yield from run_batch()
                batch, size = [], 0
            batch.append((key, na, nb, ta, tb))
            size += ta.numel
        yield from run_batch()
        for nb, key in pairing.b.items():
            if nb not in seen_b:
                tb = ib[nb]
                yield DiffEntry(key, ONLY_B, None, nb, None, tb.shape, None, tb.dtype)
    finally:
        if own_a:
            ra.close()
        if own_b:
            rb.close()


BATCH_ELEMS = 1 << 27  #: iter_diff compares about this many elements of A per batch


def _merge(acc: list[Any], p: tuple[Any, ...]) -> list[Any]:
    """Two partials of one tensor pair, in item order: (Σa², Σb², Σab, Σ(b−a)², max|b−a|, equal, nonfinite)."""
    return [acc[0] + p[0], acc[1] + p[1], acc[2] + p[2], acc[3] + p[3], max(acc[4], p[4]), acc[5] and p[5],
            acc[6] + p[6]]


def _entry(key: str, na: str, nb: str, ta: Any, tb: Any, sums: list[Any]) -> DiffEntry:
    aa, bb, ab, dd, mx, equal, nonfinite = sums
    na_, nb_, nd = math.sqrt(aa), math.sqrt(bb), math.sqrt(dd)
    if equal:
        return DiffEntry(key, SAME, na, nb, ta.shape, tb.shape, ta.dtype, tb.dtype, 0.0, 1.0 if na_ > 0 else None, 0.0,
                         na_, nb_, 0.0)
    rel = nd / na_ if na_ > 0 else (0.0 if nd == 0 else None)
    cos = ab / (na_ * nb_) if na_ > 0 and nb_ > 0 else None
    if cos is not None:
        cos = max(-1.0, min(1.0, cos))
    if nonfinite:
        rel = mx = nd = math.inf
    return DiffEntry(key, CHANGED, na, nb, ta.shape, tb.shape, ta.dtype, tb.dtype, rel, cos, mx, na_, nb_, nd, nonfinite)


def _paired(a: Any, b: Any) -> Any:
    """Equal-length flat pieces (numpy) of two streams of the same values cut differently (a DCP or ZeRO reader cuts
    at chunk and rank boundaries, a safetensors reader every ``chunk_elems``)."""
    xa = xb = None
    while True:
        if xa is None or not xa.size:
            xa = next(a, None)
        if xb is None or not xb.size:
            xb = next(b, None)
        if xa is None or xb is None:
            return
        n = min(xa.size, xb.size)
        if n:
            yield xa[:n], xb[:n]
        xa, xb = xa[n:], xb[n:]


def diff_kernel(readers: Readers, item: WorkItem) -> tuple[tuple[Any, ...], ...]:
    """Per part (A's span, B's span; ``options``: (entry,)): (Σa², Σb², Σab, Σ(b−a)², max|b−a|, equal,
    positions that differ as NaN/Inf), values as float32 (float64 if either side is), sums in float64 slice by
    slice (:mod:`explorer.core.stats_kernels`: numpy, single-threaded, so the figures never depend on threads)."""
    out = []
    sa_, sb_ = _Scratch(), _Scratch()
    lib = c_kernels()
    for part in item.parts:
        sa, sb = part.spans
        if lib is not None:
            got = _diff_fd(lib, readers, sa, sb)
            if got is not None:
                out.append(got)
                continue

        def side(span: Span, slot: int, scratch: Any) -> Iterator[Any]:
            for chunk in readers.chunks(span, slot):
                yield from float_slices(chunk, scratch)

        acc = [0.0, 0.0, 0.0, 0.0, 0.0, True, 0]
        for x, y in _paired(side(sa, 0, sa_), side(sb, 1, sb_)):
            acc = _merge(acc, _pair_sums64(x, y, sa_))
        out.append(tuple(acc))
    return tuple(out)


# --------------------------------------------------------------------------------------------- unrelated

UNRELATED_SHARE = 0.1  #: below this share of the smaller side's tensors paired with equal shapes, A and B look unrelated


def diff_counts(entries: Iterable[DiffEntry]) -> dict[str, int]:
    """Entries per status, every status present (fixed order)."""
    c = Counter(e.status for e in entries)
    return {s.value: c.get(s, 0) for s in DiffStatus}


def unrelated_warning(entries: Iterable[DiffEntry]) -> str | None:
    """"these look unrelated: ..." when fewer than :data:`UNRELATED_SHARE` of the smaller checkpoint's tensors have a
    same-named tensor of the same shape on the other side (a Llama against a MiniLM: 0 same, 723 only in A), else
    None. The value figures of such a diff say nothing about training."""
    c = diff_counts(entries)
    paired = c["same"] + c["changed"]
    n_a = paired + c["only_a"] + c["shape_mismatch"]
    n_b = paired + c["only_b"] + c["shape_mismatch"]
    smaller = min(n_a, n_b)
    if smaller == 0 or paired >= UNRELATED_SHARE * smaller:
        return None
    return (f"these look unrelated: only {paired} of {n_a} tensors in A have a same-named tensor of the same shape in B "
            f"({n_b} tensors); a checkpoint of another model? (names can be paired with --key-mapping)")


# --------------------------------------------------------------------------------------------- roll-up


@dataclass(frozen=True)
class ModuleDiff:
    """Entries of one module (or layer) pooled: rel_change = sqrt(Σ‖B−A‖²)/sqrt(Σ‖A‖²)."""

    prefix: str
    n_tensors: int
    n_changed: int  # entries not "same"
    rel_change: float | None  # over the tensors present on both sides with equal shapes
    max_abs_diff: float | None
    n_only_a: int = 0
    n_only_b: int = 0
    n_shape_mismatch: int = 0

    @property
    def one_sided(self) -> int:
        """Entries that have no value comparison (only in A, only in B, shape mismatch)."""
        return self.n_only_a + self.n_only_b + self.n_shape_mismatch

    def to_json(self) -> dict[str, Any]:
        return {"module": self.prefix, "n_tensors": self.n_tensors, "n_changed": self.n_changed,
                "rel_change": _fin(self.rel_change), "max_abs_diff": _fin(self.max_abs_diff),
                "only_a": self.n_only_a, "only_b": self.n_only_b, "shape_mismatch": self.n_shape_mismatch}


def module_rollup(entries: Iterable[DiffEntry], *, depth: int | None = None) -> list[ModuleDiff]:
    """Group diff entries by :func:`layer_of` and pool their norms, in first-seen order."""
    groups: dict[str, list[DiffEntry]] = {}
    for e in entries:
        groups.setdefault(layer_of(e.name, depth=depth), []).append(e)
    out = []
    for prefix, es in groups.items():
        sa = sum((e.norm_a or 0.0) ** 2 for e in es if e.status in (SAME, CHANGED))
        sd = sum((e.diff_norm or 0.0) ** 2 for e in es if e.status in (SAME, CHANGED))
        has_cmp = any(e.status in (SAME, CHANGED) for e in es)
        rel = (math.sqrt(sd) / math.sqrt(sa) if sa > 0 else (0.0 if sd == 0 else None)) if has_cmp else None
        mxs = [e.max_abs_diff for e in es if e.max_abs_diff is not None]
        n = Counter(e.status for e in es)
        out.append(ModuleDiff(prefix, len(es), sum(1 for e in es if e.status != SAME), rel, max(mxs) if mxs else None,
                              n[ONLY_A], n[ONLY_B], n[SHAPE_MISMATCH]))
    return out


def _pair_sums64(x: Any, y: Any, scratch: Any) -> tuple[Any, ...]:
    """The partial of one pair of equal-length numpy slices (see :func:`diff_kernel`): each sum numpy's pairwise sum
    of the float64 products (``np.add.reduce``, a fixed order, which the C kernel ``ck_diff_fd`` repeats)."""
    import numpy as np

    equal = bool(np.array_equal(x, y, equal_nan=True))
    da = scratch("fa", np.float64, x.size)
    db = scratch("fb", np.float64, y.size)
    t = scratch("ft", np.float64, x.size)
    np.copyto(da, x)
    np.copyto(db, y)

    def dot(u: Any, v: Any) -> float:
        w = t[: u.size]
        np.multiply(u, v, out=w)
        return float(np.add.reduce(w))

    aa, bb = dot(da, da), dot(db, db)
    nonfinite = 0
    if not math.isfinite(aa + bb):  # a NaN/Inf on either side (float32 squares never overflow float64)
        keep = np.isfinite(x) & np.isfinite(y)
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        nonfinite = int((~keep & ~same).sum())
        da, db = da[keep], db[keep]
        aa, bb = dot(da, da), dot(db, db)
    ab = dot(da, db)
    np.subtract(db, da, out=db)
    dd = dot(db, db)
    mx = float(np.abs(db, out=db).max()) if db.size else 0.0
    return aa, bb, ab, dd, mx, equal, nonfinite


def _diff_fd(lib: Any, readers: Readers, sa: Span, sb: Span) -> tuple[Any, ...] | None:
    """A part's partial in one C call that reads both spans itself (float32 / float64 / bf16 safetensors tensors;
    the slices of the numpy loop, so the same figures); None where it does not apply."""
    import numpy as np

    a, b = fd_span(readers, sa), fd_span(readers, sb)
    if a is None or b is None or sa.numel != sb.numel:
        return None
    (ka, fa, pa), (kb, fb, pb) = a, b
    item = {0: 4, 1: 8, 2: 2}
    buf_a = readers.buffer(SLICE * item[ka], 0)
    buf_b = readers.buffer(SLICE * item[kb], 1)
    scratch = readers.buffer(2 * SLICE * 8, 2)
    res = np.zeros(5, np.float64)
    flags = np.zeros(2, np.int64)
    err = np.zeros(2, np.int64)
    code = lib.ck_diff_fd(ka, fa, pa, kb, fb, pb, sa.numel, readers.chunk_elems, SLICE, buf_a.data_ptr(),
                          buf_b.data_ptr(), scratch.data_ptr(), res.ctypes.data, flags.ctypes.data, err.ctypes.data)
    if code != 0:
        fd_failed(readers, sb if err[1] else sa, int(code), int(err[0]))
    aa, bb, ab, dd, mx = (float(v) for v in res)
    return aa, bb, ab, dd, mx, bool(flags[0]), int(flags[1])
