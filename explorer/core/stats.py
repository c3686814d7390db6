"""Streamed statistics and histograms of tensors, over mmap-backed chunks.

Nothing here holds more than one chunk per tensor in a wide dtype: a tensor is read through
``TensorReader.iter_chunks`` (mmap), each chunk is cast to float32 (bf16/fp16/fp8) or int64 (integer
and bool tensors) and reduced. Every sum (of values, squares, products) accumulates in float64, slice by
slice (``_F64_SLICE``): a product of two float32 values is exact in float64, so the figures do not depend on
the summation order a CPU's float32 kernels pick (a float32 dot of 147k values put the cosine of x and 1.1·x
at 0.9999987 on some machines).

Statistics take two passes: pass 1 gives counts, moments, min/max; pass 2 bins the finite values into a
histogram over pass 1's range. NaN/Inf are counted and excluded from every moment and from the range.

Long jobs take the :mod:`explorer.core.jobs` callbacks: ``progress(done, total)`` (elements processed) and
``cancel``, polled between chunks (raises :class:`Cancelled`). The A-vs-B comparison is :mod:`explorer.core.diff`,
the "looks untrained" check :mod:`explorer.core.fresh`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from .checkpoint import open_reader
from .errors import CheckpointError, ExplorerError
from .jobs import Cancel, Cancelled, Progress, Ticker  # noqa: F401  (Cancelled: what cancel raises here)

if TYPE_CHECKING:
    import torch

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
class _Src:
    """One tensor to stream: its name, dtype name, shape, and a chunk iterator factory."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    numel: int
    chunks: Callable[[int], Iterator[Any]]


def _sources(obj: Any, names: Sequence[str] | None) -> tuple[list[_Src], Callable[[], None]]:
    t = _as_tensor(obj)
    if t is not None:
        flat = t.detach().reshape(-1)

        def chunks(n: int, flat: Any = flat) -> Iterator[Any]:
            for s in range(0, flat.numel(), n):
                yield flat[s : s + n]

        name = names[0] if names else "tensor"
        return [_Src(name, str(t.dtype).removeprefix("torch."), tuple(t.shape), t.numel(), chunks)], lambda: None
    reader, owned = open_reader(obj)
    out = []
    for n in names or ():
        info = reader.info(n)
        out.append(_Src(n, info.dtype, info.shape, info.numel, lambda c, n=n: reader.iter_chunks(n, chunk_elems=c)))
    return out, (reader.close if owned else (lambda: None))


_F64_SLICE = 1 << 20  # elements widened to float64 at a time: 8 MB per operand, whatever the chunk size


def _sq_dev64(x: Any, center: float) -> float:
    """Σ (x − center)² in float64 (x: a flat float tensor)."""
    import torch

    total = 0.0
    for i in range(0, x.numel(), _F64_SLICE):
        d = x[i : i + _F64_SLICE].to(torch.float64).sub_(center)
        total += float(torch.dot(d, d))
    return total


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
    fit: bool = False,
) -> TensorStats:
    """Statistics of several tensors pooled together (e.g. a module's weights), one shared histogram range.

    ``label`` names the result (default: the common prefix of ``names``). dtype is the tensors' dtype, or
    ``"mixed"``. Same memory bound and callbacks as :func:`tensor_stats`. ``fit``: ``bins`` is the most wanted and a
    small tensor gets fewer (:func:`fit_bins`); the result's ``bins_note`` says why it has fewer than ``bins``.
    """
    if bins < 1:
        raise ExplorerError(f"bins must be at least 1, found {bins}")
    srcs, close = _sources(source, names)
    try:
        used = fit_bins(sum(s.numel for s in srcs), bins) if fit else bins
        st = _stats(srcs, label if label is not None else _common_prefix(names), used, chunk_elems, progress, cancel,
                    hist_range)
        return replace(st, bins_asked=bins)
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
    tick = Ticker(2 * numel, progress, cancel)
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


def _histogram(srcs: list[_Src], integer: bool, lo: float, hi: float, bins: int, chunk_elems: int, tick: Ticker,
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
    reader, owned = open_reader(source)
    try:
        todo = list(names) if names else list(reader.index.tensors)
        sizes = [reader.info(n).numel for n in todo]
        total = 2 * sum(sizes)
        base = 0
        for n, size in zip(todo, sizes):
            cb = None if progress is None else (lambda d, t, base=base: progress(base + d, total))
            yield tensor_stats(reader, n, bins=bins, chunk_elems=chunk_elems, progress=cb, cancel=cancel)
            base += 2 * size
    finally:
        if owned:
            reader.close()
