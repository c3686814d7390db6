"""Streamed statistics and histograms of tensors, on every core.

A statistics pass reads each tensor twice, through the work items of :mod:`explorer.core.parallel` (so on
``workers`` threads, processes or a cluster, with bit-identical figures for any of them): pass 1 finds the finite
range and counts NaN/Inf, pass 2 the finite count, mean, M2 (float64, Chan's combination), exact zeros and the
histogram over pass 1's range, binned with torch.histc's own arithmetic. A constant tensor needs pass 1 only. A
16- or 8-bit float tensor (bf16, fp16, fp8) takes one pass instead: the counts of its at most 65,536 bit patterns
give every figure exactly. The
kernels are in :mod:`explorer.core.stats_kernels`; memory is about one chunk (``chunk_elems``) per worker.
NaN/Inf are counted and excluded from every moment and from the range.

Long jobs take the :mod:`explorer.core.jobs` callbacks: ``progress(done, total)`` (elements processed, twice: two
passes) and ``cancel``, polled between work items (raises :class:`Cancelled`). The A-vs-B comparison is
:mod:`explorer.core.diff`, the "looks untrained" check :mod:`explorer.core.fresh`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from .checkpoint import TensorReader, open_reader
from .errors import CheckpointError, ExplorerError
from .jobs import Cancel, Cancelled, Progress, Ticker  # noqa: F401  (Cancelled: what cancel raises here)
from .parallel import Executor, Part, Span, executor_for, memory_source, run_pass, shareable, split_items
from .stats_kernels import VALUE_DTYPES, Moments, from_values, is_integer_dtype, moments_kernel, range_kernel, values_kernel

if TYPE_CHECKING:
    import torch

DEFAULT_CHUNK = 1 << 22  # 4M elements: 16 MB as float32, big enough that per-chunk overhead is noise
#: a value-count work item (16/8-bit floats) holds this many chunks: its partial is small (the patterns present), and
#: fewer hand-offs between the workers and the caller's thread keep the workers busy
VALUE_ITEMS = 4


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
    bins_asked: int = 0  # the bins the caller asked for (0: not recorded); ``bins_note`` says why fewer were drawn

    @property
    def finite(self) -> int:
        return self.numel - self.nan - self.inf

    @property
    def bins_note(self) -> str:
        """Why the histogram has another number of bins than was asked for ("" when it has what was asked):
        a constant tensor gets one bin, a small integer range one bin per value, a small tensor about √n bins
        (:func:`fit_bins`)."""
        n, asked = len(self.counts), self.bins_asked
        if not asked or not n or n == asked:
            return ""
        head = f"{n} bin{'s' if n != 1 else ''}, {asked} asked: "
        if self.constant:
            return head + "every finite value is the same"
        if self.integer and self.min is not None and self.max is not None and n == int(self.max) - int(self.min) + 1:
            return head + f"one bin per integer value from {int(self.min)} to {int(self.max)}"
        if n == fit_bins(self.numel, asked):
            return head + f"{self.numel:,} values get about √n bins (at least 8), so the shape is not sampling noise"
        return head + "the range holds fewer distinct bins"

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
            "bins_asked": self.bins_asked or None,
            "bins_note": self.bins_note or None,
        }


def fit_bins(numel: int, asked: int) -> int:
    """The bins a histogram of ``numel`` values gets when ``asked`` is the most wanted: about √n (at least 8), so
    a small tensor (a 768-value bias) shows its shape rather than noise; never more than ``asked``."""
    return max(1, min(asked, max(8, math.isqrt(max(numel, 0)))))


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
class _Input:
    """What a statistics pass reads: its sources (see :mod:`explorer.core.parallel`), the header facts of a name
    (numel, dtype, shape, file), whether a name can be read from an offset, and whether only the caller's thread
    may read it (a reader the workers cannot reopen by index: an adapter's ΔW, a torch legacy pickle, a chunked
    or remote format)."""

    sources: tuple[Any, ...]
    info: Callable[[str], tuple[int, str, tuple[int, ...], str]]
    splittable: Callable[[str], bool]
    local_only: bool
    close: Callable[[], None]


def _open_input(obj: Any, names: Sequence[str] | None) -> _Input:
    t = _as_tensor(obj)
    if t is not None:
        fact = (t.numel(), str(t.dtype).removeprefix("torch."), tuple(t.shape), "")
        mem = memory_source(names[0] if names else "tensor", t)
        return _Input((mem,), lambda n: fact, lambda n: True, True, lambda: None)
    reader, owned = open_reader(obj)

    def info(n: str) -> tuple[int, str, tuple[int, ...], str]:
        i = reader.info(n)
        return i.numel, i.dtype, i.shape, i.file

    shared = type(reader) is TensorReader and shareable(reader.index)
    return _Input((reader.index if shared else reader,), info, reader.splittable, not shared,
                  reader.close if owned else (lambda: None))


# --------------------------------------------------------------------------------------------- statistics


def tensor_stats(
    source: Source,
    name: str | None = None,
    *,
    bins: int = 256,
    hist_range: tuple[float, float] | None = None,
    chunk_elems: int = DEFAULT_CHUNK,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    workers: int | Executor | None = None,
) -> TensorStats:
    """Streamed statistics and histogram of one tensor.

    ``source`` is a TensorReader (preferred: reuse one per checkpoint), a CheckpointIndex or path plus the
    tensor ``name``; or a torch tensor / numpy array (``name`` is then only a label). Peak memory is about
    one chunk of ``chunk_elems`` elements per worker. ``hist_range=(lo, hi)`` fixes the histogram range (values
    outside are not binned), so two histograms can be overlaid bin for bin. ``workers``: threads to use (default:
    every core; 1: the caller's thread), or an :class:`~explorer.core.parallel.Executor`; the figures are the same
    for any. Raises CheckpointError for unknown names, Cancelled on cancel.
    """
    t = _as_tensor(source)
    if t is None and name is None:
        raise CheckpointError("tensor_stats: a tensor name is needed when reading from a checkpoint")
    return aggregate_stats(source, [name or "tensor"], label=name or "tensor", bins=bins, hist_range=hist_range,
                           chunk_elems=chunk_elems, progress=progress, cancel=cancel, workers=workers)


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
    fit: bool = False,
    workers: int | Executor | None = None,
) -> TensorStats:
    """Statistics of several tensors pooled together (e.g. a module's weights), one shared histogram range.

    ``label`` names the result (default: the common prefix of ``names``). dtype is the tensors' dtype, or
    ``"mixed"``. Same memory bound, callbacks and ``workers`` as :func:`tensor_stats`. ``fit``: ``bins`` is the most
    wanted and a small tensor gets fewer (:func:`fit_bins`); the result's ``bins_note`` says why it has fewer than
    ``bins``.
    """
    if bins < 1:
        raise ExplorerError(f"bins must be at least 1, found {bins}")
    inp = _open_input(source, names)
    try:
        g = _group(inp, label if label is not None else _common_prefix(names), list(names), bins, fit)
        tick = Ticker(2 * g.numel, progress, cancel)
        (st,) = _compute(inp, [g], executor_for(workers, local_only=inp.local_only), chunk_elems, tick, hist_range)
        tick.report(tick.total)
        return st
    finally:
        inp.close()


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


@dataclass
class _Group:
    """One result: a tensor, or tensors pooled under one label and one histogram range."""

    label: str
    names: list[str]
    facts: list[tuple[int, str, tuple[int, ...], str]]
    bins: int
    bins_asked: int

    @property
    def numel(self) -> int:
        return sum(f[0] for f in self.facts)

    @property
    def integer(self) -> bool:
        return bool(self.facts) and all(is_integer_dtype(f[1]) for f in self.facts)


def _group(inp: _Input, label: str, names: list[str], bins: int, fit: bool) -> _Group:
    facts = [inp.info(n) for n in names]
    used = fit_bins(sum(f[0] for f in facts), bins) if fit else bins
    return _Group(label, names, facts, used, bins)


def _compute(inp: _Input, groups: list[_Group], executor: Executor, chunk_elems: int, tick: Ticker,
             hist_range: tuple[float, float] | None = None) -> list[TensorStats]:
    """Both passes over ``groups`` (pass 1: range and NaN/Inf; pass 2: moments, zeros, histogram), each split into
    work items run by ``executor``; partials merged in item order."""
    fixed = hist_range is not None and hist_range[1] > hist_range[0]

    by_values = [_is_values(g) for g in groups]

    def parts(opts: Callable[[int, _Group], tuple[Any, ...] | None], values: bool = False) -> list[Part]:
        out = []
        for gi, g in enumerate(groups):
            o = opts(gi, g) if by_values[gi] == values else None
            if o is None:
                continue
            for n, (numel, dtype, _shape, file) in zip(g.names, g.facts):
                if numel:
                    out.append(Part((Span(0, n, 0, numel, file, dtype),), o))
        return out

    def run(kernel: Any, ps: list[Part]) -> Iterator[tuple[Part, Any]]:
        items = split_items(kernel, ps, chunk_elems=chunk_elems, splittable=lambda sp: inp.splittable(sp.tensor))
        if not items:  # nothing to read: no workers to start
            return
        for item, partials in run_pass(executor, inp.sources, items, tick, chunk_elems=chunk_elems):
            yield from zip(item.parts, partials)

    tick.check()
    rng = [[math.inf, -math.inf, 0, 0] for _ in groups]
    moments = [Moments() for _ in groups]
    counts: list[Any] = [None] * len(groups)
    fixed_range = (float(hist_range[0]), float(hist_range[1])) if fixed and hist_range else None
    for gi, r, mo, c in _values_stream(inp, groups, [gi for gi in range(len(groups)) if by_values[gi]], executor,
                                       chunk_elems, tick, fixed_range):
        rng[gi], moments[gi], counts[gi] = r, mo, c
    for part, (lo, hi, nan, inf) in run(range_kernel, parts(lambda gi, g: (gi, g.integer))):
        r = rng[part.options[0]]
        r[0], r[1], r[2], r[3] = min(r[0], lo), max(r[1], hi), r[2] + nan, r[3] + inf

    def pass2(gi: int, g: _Group) -> tuple[Any, ...] | None:
        lo, hi, nan, inf = rng[gi]
        if lo > hi or (lo == hi and not fixed):  # nothing finite, or constant: pass 1 says it all
            tick.step(g.numel)
            return None
        if fixed:
            assert hist_range is not None
            return (gi, g.integer, "fixed", float(hist_range[0]), float(hist_range[1]), g.bins, bool(nan or inf))
        if g.integer:
            mode = "ivals" if hi - lo + 1 <= max(g.bins, 2) else "ibins"
            return (gi, True, mode, lo, hi, g.bins, False)
        return (gi, False, "range", lo, hi, g.bins, bool(nan or inf))

    for part, (k, mean, m2, zeros, c) in run(moments_kernel, parts(pass2)):
        gi = part.options[0]
        moments[gi].add(k, mean, m2, zeros)
        counts[gi] = c if counts[gi] is None else counts[gi] + c
    return [_finish(g, rng[gi], moments[gi], counts[gi], fixed, hist_range) for gi, g in enumerate(groups)]


def _is_values(g: _Group) -> bool:
    """Whether the group is measured by one pass of value counts: every tensor of one 16/8-bit float dtype."""
    return len({f[1] for f in g.facts}) == 1 and g.facts[0][1] in VALUE_DTYPES


def _values_stream(inp: _Input, groups: list[_Group], gis: list[int], executor: Executor, chunk_elems: int,
                   tick: Ticker, fixed_range: tuple[float, float] | None) -> Iterator[tuple[int, list[Any], Moments, Any]]:
    """(group index, [min, max, NaN, Inf], Moments, histogram counts) of the 16/8-bit groups ``gis``, in that order:
    one pass of value counts gives every figure, so a group is finished as soon as its last part is in, while the
    workers count the next ones (no pass waits on another)."""
    import numpy as np

    parts = [Part((Span(0, n, 0, numel, file, dtype),), (gi,))
             for gi in gis for n, (numel, dtype, _shape, file) in zip(groups[gi].names, groups[gi].facts) if numel]
    items = split_items(values_kernel, parts, chunk_elems=VALUE_ITEMS * chunk_elems,
                        splittable=lambda sp: inp.splittable(sp.tensor))
    left = dict.fromkeys(gis, 0)  # parts still to come per group (a big tensor is cut into several)
    for item in items:
        for p in item.parts:
            left[p.options[0]] += 1
    seen: dict[int, list[Any]] = {}
    todo = iter(gis)

    def finish(gi: int) -> tuple[int, list[Any], Moments, Any]:
        got = seen.pop(gi, [])
        keys = np.concatenate([k for k, _ in got]) if got else np.zeros(0, np.int64)
        cts = np.concatenate([c for _, c in got]) if got else np.zeros(0, np.int64)
        g = groups[gi]
        tick.step(g.numel)  # no second pass
        return (gi, *from_values(keys, cts, g.facts[0][1], g.bins, fixed_range))

    def ready(upto: int | None) -> Iterator[tuple[int, list[Any], Moments, Any]]:
        for gi in todo:  # the groups before ``upto`` are complete (or empty), in order
            yield finish(gi)
            if gi == upto:
                return

    if items:
        for item, partials in run_pass(executor, inp.sources, items, tick, chunk_elems=chunk_elems):
            for part, vc in zip(item.parts, partials):
                gi = part.options[0]
                seen.setdefault(gi, []).append(vc)
                left[gi] -= 1
                if not left[gi]:
                    yield from ready(gi)
    yield from ready(None)


def _finish(g: _Group, rng: list[Any], mo: Moments, counts: Any, fixed: bool,
            hist_range: tuple[float, float] | None) -> TensorStats:
    lo, hi, nan, inf = rng
    numel, integer = g.numel, g.integer
    dtypes = {f[1] for f in g.facts}
    dtype = dtypes.pop() if len(dtypes) == 1 else "mixed"
    shape = g.facts[0][2] if len(g.facts) == 1 else (numel,)
    n_fin = numel - nan - inf
    common = dict(integer=integer, n_tensors=len(g.names), bins_asked=g.bins_asked)
    if n_fin == 0:
        return TensorStats(g.label, numel, dtype, shape, zeros=0.0, nan=nan, inf=inf, **common)
    if counts is None:  # constant (pass 1 only)
        mo = Moments(n_fin, float(lo), 0.0, n_fin if lo == 0 else 0)
    n, mean = mo.n, mo.mean
    var = max(mo.m2 / n, 0.0)
    l2 = math.sqrt(max(mo.m2 + n * mean * mean, 0.0))
    if lo == hi and not fixed:
        w = 0.5 if integer else max(abs(lo) * 1e-2, 1e-6)
        edges: tuple[float, ...] = (lo - w, lo + w)
        cts: tuple[int, ...] = (n,)
    else:
        cts = tuple(int(c) for c in counts.tolist())
        if fixed:
            assert hist_range is not None
            a, b = float(hist_range[0]), float(hist_range[1])
        elif integer and hi - lo + 1 <= max(g.bins, 2):
            a = b = None  # one bin per integer
        else:
            a, b = lo, (hi + 1 if integer else hi)
        if a is None:
            edges = tuple(float(v) - 0.5 for v in range(int(lo), int(hi) + 2))
        else:
            step = (b - a) / g.bins
            edges = tuple(a + i * step for i in range(g.bins)) + (b,)
    return TensorStats(
        g.label, numel, dtype, shape, mean, math.sqrt(var), lo, hi, max(abs(lo), abs(hi)), mo.zeros / numel if numel else 0.0,
        nan, inf, l2, edges, cts, lo == hi, **common,
    )


BATCH_ELEMS = 1 << 27  #: stats_many measures tensors in batches of about this many elements (both passes per batch)


def stats_many(
    source: Source,
    names: Sequence[str] | None = None,
    *,
    bins: int = 256,
    chunk_elems: int = DEFAULT_CHUNK,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    workers: int | Executor | None = None,
) -> Iterator[TensorStats]:
    """:func:`tensor_stats` for each name (default: every tensor in file order), yielded in order.

    Tensors are measured in batches (:data:`BATCH_ELEMS`): small tensors share work items, big ones are cut into
    ranges, and every item of a batch runs on ``workers`` (default: every core); a run of consecutive 16/8-bit float
    tensors is one streamed pass of value counts instead (no batches: each tensor is yielded as its counts are in).
    The figures do not depend on the batch or the workers. ``progress(done, total)`` counts elements over all the tensors (twice: two passes).
    """
    reader, owned = open_reader(source)
    try:
        inp = _open_input(reader, None)
        todo = list(names) if names else list(reader.index.tensors)
        groups = [_group(inp, n, [n], bins, False) for n in todo]
        tick = Ticker(2 * sum(g.numel for g in groups), progress, cancel)
        executor = executor_for(workers, local_only=inp.local_only)
        tick.check()
        batch: list[_Group] = []
        size = 0
        i = 0
        while i < len(groups) or batch:
            g = groups[i] if i < len(groups) else None
            if g is not None and not _is_values(g) and (not batch or size + g.numel <= BATCH_ELEMS):
                batch.append(g)
                size += g.numel
                i += 1
                continue
            if batch:
                yield from _compute(inp, batch, executor, chunk_elems, tick)
                batch, size = [], 0
                continue
            # a run of 16/8-bit tensors: one streamed pass of value counts, each tensor yielded as it is done
            j = i
            while j < len(groups) and _is_values(groups[j]):
                j += 1
            run = groups[i:j]
            for gi, r, mo, c in _values_stream(inp, run, list(range(len(run))), executor, chunk_elems, tick, None):
                yield _finish(run[gi], r, mo, c, False, None)
            i = j
        tick.report(tick.total)  # every pass steps by what it read: the count is at the total here
    finally:
        if owned:
            reader.close()
