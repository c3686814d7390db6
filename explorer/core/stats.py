"""Streamed statistics and histograms, and checkpoint A-vs-B comparison, over mmap-backed chunks.

Nothing here holds more than one chunk per tensor in a wide dtype: a tensor is read through
``TensorReader.iter_chunks`` (mmap), each chunk is cast to float32 (bf16/fp16/fp8) or int64 (integer
and bool tensors) and reduced. Every sum (of values, squares, products) accumulates in float64, slice by
slice (``_F64_SLICE``): a product of two float32 values is exact in float64, so the figures do not depend on
the summation order a CPU's float32 kernels pick (a float32 dot of 147k values put the cosine of x and 1.1·x
at 0.9999987 on some machines).

Statistics take two passes: pass 1 gives counts, moments, min/max; pass 2 bins the finite values into a
histogram over pass 1's range. NaN/Inf are counted and excluded from every moment and from the range.

Long jobs take ``progress(done, total)`` (elements processed) and ``cancel() -> bool`` callbacks; cancel
is polled between chunks and raises :class:`Cancelled`. The fresh-init and "looks untrained" check lives
in :mod:`explorer.core.fresh` (re-exported here as ``init_check``/``fresh_tensor``).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

from .checkpoint import CheckpointIndex, TensorReader, open_checkpoint
from .errors import Cancelled, CheckpointError, ExplorerError

if TYPE_CHECKING:
    import torch

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]

DEFAULT_CHUNK = 1 << 22  # 4M elements: 16 MB as float32, big enough that per-chunk overhead is noise


# --------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class TensorStats:
    """Statistics of one tensor (or of a set of tensors sharing one histogram range).

    Moments, min/max and the histogram cover finite values only; ``nan``/``inf`` count the rest.
    ``edges`` has ``len(counts) + 1`` entries. Integer and bool tensors get integer-centred bins when the
    range is small enough. A constant tensor gets a single bin around its value.
    """

    name: str
    numel: int
    dtype: str
    shape: tuple[int, ...] = ()
    mean: float | None = None
    std: float | None = None  # population std (correction=0) of the finite values
    min: float | None = None
    max: float | None = None
    absmax: float | None = None
    zeros: float = 0.0  # fraction of all elements that are exactly zero
    nan: int = 0
    inf: int = 0
    l2: float = 0.0  # norm of the finite values
    edges: tuple[float, ...] = ()
    counts: tuple[int, ...] = ()
    constant: bool = False
    integer: bool = False
    n_tensors: int = 1

    @property
    def finite(self) -> int:
        return self.numel - self.nan - self.inf

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "numel": self.numel,
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "absmax": self.absmax,
            "zeros": self.zeros,
            "nan": self.nan,
            "inf": self.inf,
            "l2": self.l2,
            "constant": self.constant,
            "integer": self.integer,
            "histogram": {"edges": list(self.edges), "counts": list(self.counts)},
        }


# --------------------------------------------------------------------------------------------- sources


Source = Any  # TensorReader | CheckpointIndex | str path | torch.Tensor | numpy array


def _as_tensor(obj: Any) -> torch.Tensor | None:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return None
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    return None


@dataclass
class _Src:
    """One tensor to stream: its name, dtype name, shape, and a chunk iterator factory."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    numel: int
    chunks: Callable[[int], Iterator[Any]]


def _reader_of(obj: Any) -> tuple[TensorReader, bool]:
    if isinstance(obj, TensorReader):
        return obj, False
    if isinstance(obj, CheckpointIndex):
        return TensorReader(obj), True
    return TensorReader(open_checkpoint(obj)), True


def _sources(obj: Any, names: Sequence[str] | None) -> tuple[list[_Src], Callable[[], None]]:
    t = _as_tensor(obj)
    if t is not None:
        flat = t.detach().reshape(-1)

        def chunks(n: int, flat: Any = flat) -> Iterator[Any]:
            for s in range(0, flat.numel(), n):
                yield flat[s : s + n]

        name = names[0] if names else "tensor"
        return [_Src(name, str(t.dtype).removeprefix("torch."), tuple(t.shape), t.numel(), chunks)], lambda: None
    reader, owned = _reader_of(obj)
    out = []
    for n in names or ():
        info = reader._info(n)
        out.append(_Src(n, info.dtype, info.shape, info.numel, lambda c, n=n: reader.iter_chunks(n, chunk_elems=c)))
    return out, (reader.close if owned else (lambda: None))


_F64_SLICE = 1 << 20  # elements widened to float64 at a time: 8 MB per operand, whatever the chunk size


def _sq_dev64(x: Any, center: float) -> float:
    """Σ (x − center)² in float64 (x: a flat float tensor)."""
    import torch

    total = 0.0
    for i in range(0, x.numel(), _F64_SLICE):
        d = x[i : i + _F64_SLICE].to(torch.float64) - center
        total += float(torch.dot(d, d))
    return total


def _pair_sums64(x: Any, y: Any) -> tuple[float, float, float, float, float]:
    """(Σx², Σy², Σxy, Σ(y−x)², max|y−x|) of two flat float tensors of one length, in float64."""
    import torch

    aa = bb = ab = dd = mx = 0.0
    for i in range(0, x.numel(), _F64_SLICE):
        xs = x[i : i + _F64_SLICE].to(torch.float64)
        ys = y[i : i + _F64_SLICE].to(torch.float64)
        d = ys - xs
        aa += float(torch.dot(xs, xs))
        bb += float(torch.dot(ys, ys))
        ab += float(torch.dot(xs, ys))
        dd += float(torch.dot(d, d))
        mx = max(mx, float(d.abs().max()))
    return aa, bb, ab, dd, mx


def _is_integer_dtype(name: str) -> bool:
    return name == "bool" or name.startswith(("int", "uint"))


def _prep(chunk: Any, integer: bool) -> Any:
    """Chunk -> float32/float64 (floats) or int64 (integers/bool) tensor, flat."""
    import torch

    if chunk.is_complex():
        chunk = torch.view_as_real(chunk).reshape(-1)
    if integer:
        return chunk.to(torch.int64)
    if chunk.dtype in (torch.float32, torch.float64):
        return chunk
    return chunk.to(torch.float32)


# --------------------------------------------------------------------------------------------- statistics


class _Ticker:
    def __init__(self, total: int, progress: Progress | None, cancel: Cancel | None) -> None:
        self.total, self.done, self.progress, self.cancel = total, 0, progress, cancel

    def check(self) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled("cancelled")

    def step(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)
        self.check()


def tensor_stats(
    source: Source,
    name: str | None = None,
    *,
    bins: int = 256,
    hist_range: tuple[float, float] | None = None,
    chunk_elems: int = DEFAULT_CHUNK,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> TensorStats:
    """Streamed statistics and histogram of one tensor.

    ``source`` is a TensorReader (preferred: reuse one per checkpoint), a CheckpointIndex or path plus the
    tensor ``name``; or a torch tensor / numpy array (``name`` is then only a label). Peak memory is about
    one chunk of ``chunk_elems`` elements. ``hist_range=(lo, hi)`` fixes the histogram range (values outside
    are not binned), so two histograms can be overlaid bin for bin. Raises CheckpointError for unknown
    names, Cancelled on cancel.
    """
    t = _as_tensor(source)
    if t is None and name is None:
        raise CheckpointError("tensor_stats: a tensor name is needed when reading from a checkpoint")
    return aggregate_stats(source, [name or "tensor"], label=name or "tensor", bins=bins, hist_range=hist_range,
                           chunk_elems=chunk_elems, progress=progress, cancel=cancel)


def aggregate_stats(
    source: Source,
    names: Sequence[str],
    *,
    label: str | None = None,
    bins: int = 256,
    hist_range: tuple[float, float] | None = None,
    chunk_elems: int = DEFAULT_CHUNK,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> TensorStats:
    """Statistics of several tensors pooled together (e.g. a module's weights), one shared histogram range.

    ``label`` names the result (default: the common prefix of ``names``). dtype is the tensors' dtype, or
    ``"mixed"``. Same memory bound and callbacks as :func:`tensor_stats`.
    """
    if bins < 1:
        raise ExplorerError(f"bins must be at least 1, found {bins}")
    srcs, close = _sources(source, names)
    try:
        return _stats(srcs, label if label is not None else _common_prefix(names), bins, chunk_elems, progress, cancel,
                      hist_range)
    finally:
        close()


def _common_prefix(names: Sequence[str]) -> str:
    if not names:
        return ""
    parts = [n.split(".") for n in names]
    out = []
    for seg in zip(*parts):
        if all(s == seg[0] for s in seg):
            out.append(seg[0])
        else:
            break
    return ".".join(out)


def _stats(srcs: list[_Src], label: str, bins: int, chunk_elems: int, progress: Progress | None, cancel: Cancel | None,
           hist_range: tuple[float, float] | None = None) -> TensorStats:
    import torch

    dtypes = {s.dtype for s in srcs}
    dtype = dtypes.pop() if len(dtypes) == 1 else "mixed"
    integer = all(_is_integer_dtype(s.dtype) for s in srcs) and bool(srcs)
    numel = sum(s.numel for s in srcs)
    shape = srcs[0].shape if len(srcs) == 1 else (numel,)
    tick = _Ticker(2 * numel, progress, cancel)
    tick.check()

    # pass 1: counts, moments (Chan's parallel combination of per-chunk mean/M2), min/max
    n = 0  # finite count
    mean = m2 = 0.0
    lo, hi = math.inf, -math.inf
    zeros = nan = inf = 0
    for s in srcs:
        for raw in s.chunks(chunk_elems):
            x = _prep(raw, integer)
            k = x.numel()
            if k == 0:
                continue
            if not integer:
                total = float(x.sum(dtype=torch.float64))
                if not math.isfinite(total):  # rare path: some NaN/Inf in this chunk
                    fin = torch.isfinite(x)
                    c_nan = int(torch.isnan(x).sum())
                    nan += c_nan
                    inf += k - int(fin.sum()) - c_nan
                    x = x[fin]
                    k = x.numel()
                    if k == 0:
                        tick.step(raw.numel())
                        continue
                    total = float(x.sum(dtype=torch.float64))
            else:
                total = float(x.sum(dtype=torch.float64))
            zeros += k - int(torch.count_nonzero(x))
            cmin, cmax = torch.aminmax(x)
            lo, hi = min(lo, float(cmin)), max(hi, float(cmax))
            cmean = total / k
            cm2 = _sq_dev64(x, cmean)
            if n == 0:
                mean, m2, n = cmean, cm2, k
            else:
                tot = n + k
                delta = cmean - mean
                mean += delta * k / tot
                m2 += cm2 + delta * delta * n * k / tot
                n = tot
            tick.step(raw.numel())
    tick.done = numel  # pass 1 complete even if some chunks were skipped
    if n == 0:
        if progress is not None:
            progress(2 * numel, 2 * numel)
        return TensorStats(label, numel, dtype, shape, zeros=0.0, nan=nan, inf=inf, integer=integer, n_tensors=len(srcs))
    var = max(m2 / n, 0.0)
    l2 = math.sqrt(max(m2 + n * mean * mean, 0.0))
    constant = lo == hi
    if hist_range is not None and hist_range[1] > hist_range[0]:
        edges, counts = _histogram(srcs, False, float(hist_range[0]), float(hist_range[1]), bins, chunk_elems, tick, n,
                                   bool(nan or inf), as_float=integer)
    else:
        edges, counts = _histogram(srcs, integer, lo, hi, bins, chunk_elems, tick, n, bool(nan or inf))
    if progress is not None:
        progress(2 * numel, 2 * numel)
    return TensorStats(
        label, numel, dtype, shape, mean, math.sqrt(var), lo, hi, max(abs(lo), abs(hi)), zeros / numel if numel else 0.0,
        nan, inf, l2, edges, counts, constant, integer, len(srcs),
    )


def _histogram(srcs: list[_Src], integer: bool, lo: float, hi: float, bins: int, chunk_elems: int, tick: _Ticker,
               n_finite: int, has_nonfinite: bool, *, as_float: bool = False) -> tuple[tuple[float, ...], tuple[int, ...]]:
    import torch

    if lo == hi:  # constant: one bin around the value, no second pass needed
        w = 0.5 if integer else max(abs(lo) * 1e-2, 1e-6)
        tick.step(tick.total - tick.done)
        return (lo - w, lo + w), (n_finite,)
    if integer and hi - lo + 1 <= max(bins, 2):
        ilo, ihi = int(lo), int(hi)
        counts = torch.zeros(ihi - ilo + 1, dtype=torch.int64)
        for s in srcs:
            for raw in s.chunks(chunk_elems):
                x = _prep(raw, True)
                if x.numel():
                    counts += torch.bincount(x - ilo, minlength=counts.numel())
                tick.step(raw.numel())
        return tuple(float(v) - 0.5 for v in range(ilo, ihi + 2)), tuple(int(c) for c in counts)
    if integer:
        hi = hi + 1  # half-open integer range
    counts64 = torch.zeros(bins, dtype=torch.float64)
    for s in srcs:
        for raw in s.chunks(chunk_elems):
            x = _prep(raw, integer or as_float)
            if integer or as_float:
                x = x.to(torch.float64)
            elif has_nonfinite:
                x = x[torch.isfinite(x)]
            if x.numel():
                counts64 += torch.histc(x, bins=bins, min=lo, max=hi).to(torch.float64)
            tick.step(raw.numel())
    step = (hi - lo) / bins
    edges = tuple(lo + i * step for i in range(bins)) + (hi,)
    return edges, tuple(int(c) for c in counts64)


def stats_many(
    source: Source,
    names: Sequence[str] | None = None,
    *,
    bins: int = 256,
    chunk_elems: int = DEFAULT_CHUNK,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> Iterator[TensorStats]:
    """:func:`tensor_stats` for each name (default: every tensor in file order), yielded one at a time.

    ``progress(done, total)`` counts elements over all the tensors.
    """
    reader, owned = _reader_of(source)
    try:
        todo = list(names) if names else list(reader.index.tensors)
        sizes = [reader._info(n).numel for n in todo]
        total = 2 * sum(sizes)
        base = 0
        for n, size in zip(todo, sizes):
            cb = None if progress is None else (lambda d, t, base=base: progress(base + d, total))
            yield tensor_stats(reader, n, bins=bins, chunk_elems=chunk_elems, progress=cb, cancel=cancel)
            base += 2 * size
    finally:
        if owned:
            reader.close()


# --------------------------------------------------------------------------------------------- A vs B


SAME, CHANGED, ONLY_A, ONLY_B, SHAPE_MISMATCH = "same", "changed", "only_a", "only_b", "shape_mismatch"


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
    status: str  # same | changed | only_a | only_b | shape_mismatch
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
            "status": self.status,
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


def _leading_prefixes(keys: Iterable[str], depth: int = 2) -> list[str]:
    """Leading module paths (with their trailing dot) shared by at least half of ``keys``."""
    from .matching import _prefixes

    keys = list(keys)
    return [p + "." for p, c in _prefixes(keys, depth).items() if c * 2 >= len(keys)]


def pair_keys(
    names_a: Iterable[str], names_b: Iterable[str], *, key_mapping: Mapping[str, str] | None = None
) -> KeyPairing:
    """Pair the tensor names of two checkpoints.

    ``key_mapping`` (``{regex: replacement}``, as in from_pretrained) is applied to both sides. Without it,
    when few names match exactly, a common leading prefix on either or both sides (``module.``, ``bert.``,
    ``model.encoder.``) is stripped if that pairs more names; the chosen regexes are in the result.
    """
    from .keys import apply_key_mapping, check_key_mapping, check_key_mapping_speed

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
    cand_a = [""] + _leading_prefixes(la)
    cand_b = [""] + _leading_prefixes(lb)
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
) -> list[DiffEntry]:
    """Compare two checkpoints tensor by tensor (paths, indexes or readers). Peak memory ≈ two chunks.

    Keys are paired with :func:`pair_keys`. ``progress(done, total)`` counts elements of A's tensors.
    Returns one entry per common key, in A's file order then B-only keys.
    """
    return list(iter_diff(a, b, key_mapping=key_mapping, chunk_elems=chunk_elems, progress=progress, cancel=cancel))


def iter_diff(
    a: Source,
    b: Source,
    *,
    key_mapping: Mapping[str, str] | None = None,
    chunk_elems: int = DEFAULT_CHUNK,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> Iterator[DiffEntry]:
    """Generator form of :func:`diff_checkpoints`: yields each entry as soon as it is computed."""
    ra, own_a = _reader_of(a)
    try:
        rb, own_b = _reader_of(b)
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
        tick = _Ticker(total, progress, cancel)
        tick.check()
        for na, key in pairing.a.items():
            ta = ia[na]
            nb = by_b.get(key)
            if nb is None:
                yield DiffEntry(key, ONLY_A, na, None, ta.shape, None, ta.dtype, None)
                continue
            seen_b.add(nb)
            tb = ib[nb]
            if ta.shape != tb.shape:
                yield DiffEntry(key, SHAPE_MISMATCH, na, nb, ta.shape, tb.shape, ta.dtype, tb.dtype)
                tick.step(ta.numel)
                continue
            yield _compare(ra, rb, na, nb, key, ta, tb, chunk_elems, tick)
        for nb, key in pairing.b.items():
            if nb not in seen_b:
                tb = ib[nb]
                yield DiffEntry(key, ONLY_B, None, nb, None, tb.shape, None, tb.dtype)
    finally:
        if own_a:
            ra.close()
        if own_b:
            rb.close()


def _compare(ra: TensorReader, rb: TensorReader, na: str, nb: str, key: str, ta: Any, tb: Any, chunk_elems: int,
             tick: _Ticker) -> DiffEntry:
    import torch

    wide = "float64" in (ta.dtype, tb.dtype)
    target = torch.float64 if wide else torch.float32
    aa = bb = ab = dd = 0.0
    mx = 0.0
    equal = True
    nonfinite = 0
    for ca, cb in zip(ra.iter_chunks(na, chunk_elems=chunk_elems), rb.iter_chunks(nb, chunk_elems=chunk_elems)):
        x = ca.to(target) if ca.dtype != target else ca
        y = cb.to(target) if cb.dtype != target else cb
        if x.is_complex() or y.is_complex():
            x, y = torch.view_as_real(x).reshape(-1), torch.view_as_real(y).reshape(-1)
        if equal and not torch.equal(x, y):
            eq = (x == y) | (torch.isnan(x) & torch.isnan(y))
            equal = bool(eq.all())
        keep = torch.isfinite(x) & torch.isfinite(y)
        if not bool(keep.all()):
            same = (x == y) | (torch.isnan(x) & torch.isnan(y))
            nonfinite += int((~keep & ~same).sum())
            x, y = x[keep], y[keep]
        if x.numel():
            caa, cbb, cab, cdd, cmx = _pair_sums64(x, y)
            aa, bb, ab, dd, mx = aa + caa, bb + cbb, ab + cab, dd + cdd, max(mx, cmx)
        tick.step(ca.numel())
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


_INDEX = re.compile(r"^\d+$")


def layer_of(key: str, *, depth: int | None = None) -> str:
    """The module group of a key: its first ``depth`` components, or by default the path up to the first
    numeric component (``encoder.layer.3``), else the parent module (``embeddings``)."""
    parts = key.split(".")
    if depth is not None:
        return ".".join(parts[: min(depth, max(len(parts) - 1, 1))])
    for i, p in enumerate(parts[:-1]):
        if _INDEX.match(p):
            return ".".join(parts[: i + 1])
    return ".".join(parts[:-1]) if len(parts) > 1 else parts[0]


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


# --------------------------------------------------------------------------------------------- fresh init


def __getattr__(name: str) -> Any:  # init_check & co live in fresh.py (imports transformers)
    if name in ("init_check", "fresh_tensor", "InitResult", "FreshInit", "iter_init_check"):
        from . import fresh

        return getattr(fresh, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
