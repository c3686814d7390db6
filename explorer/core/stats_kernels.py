"""The kernels of a statistics pass (:mod:`explorer.core.stats`): pure functions ``kernel(readers, item)`` -> one
partial per part, run by any :mod:`explorer.core.parallel` executor.

Pass 1 (:func:`range_kernel`): finite min/max and the NaN/Inf counts. Pass 2 (:func:`moments_kernel`): finite count,
mean and M2, exact zeros, and the histogram over pass 1's range.

How they are fast and exact:

* A chunk is worked on in slices of :data:`SLICE` elements (1 MB of float32, inside a core's L2 cache) with numpy,
  into reused buffers: no temporary the size of a chunk, no page faults.
* bf16 is widened by a 16-bit shift (exact), fp16/fp8 by torch in pieces of :data:`PIECE`.
* Every torch call works on at most :data:`PIECE` elements, under torch's parallel grain: torch never starts an
  OpenMP team for them (one crawls when the cores are busy, as they are with a worker per core) and never reorders
  a sum by thread count. numpy's reductions are single-threaded. So a slice's figures are a pure function of its
  values.
* Sums are float64: a slice's mean (numpy's pairwise sum), then Σ(x − mean)² (the same pairwise sum of the squares), combined across slices
  with Chan's formula in item order.
* Histogram bins use torch.histc's own arithmetic in the values' dtype — bin = trunc((x − lo)·bins / (hi − lo)),
  the top edge in the last bin — so the counts equal ``torch.histc`` of the whole tensor, bin for bin. Where the
  float32 width hi − lo overflows (values near ±3.4e38) histc's float32 arithmetic drops every value; such a range
  is binned in float64 instead (``torch.histc`` of the float64 values).

The fast path: an optional C extension (``explorer/core/_kernels.c``, built by ``setup.py`` when a compiler is
there, loaded with ctypes, which releases the GIL for each call) runs pass 1 and pass 2 over float32, float64 and
bf16 chunks in single sweeps per slice (reading a safetensors tensor itself, :func:`fd_span`; a 16/8-bit tensor's
bit patterns counted the same way; a diff's sums too, :mod:`explorer.core.diff`), with the same arithmetic in the same order (numpy's pairwise summation, the
squares summed the same way, histc's bins), so its figures equal the numpy code's bit for bit; tests pin that.
The numpy code is the fallback (no compiler, another dtype, a fixed histogram range, integers) and is forced by
``CKPT_EXPLORER_NO_C_KERNEL=1``. :func:`c_kernels` says which one runs.
"""
from __future__ import annotations

import functools
import math
import os
import threading
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError

if TYPE_CHECKING:
    from .parallel import Readers, Span, WorkItem

SLICE = 1 << 18  #: elements of one slice (numpy work)
#: elements read at a time (a multiple of SLICE, so the slices are those of whole chunks): the read buffer stays in
#: the core's cache while the kernel works on it, instead of a chunk-sized buffer written and read back from memory
READ = SLICE
PIECE = 32_000  #: elements of one torch call (below torch's parallel grain of 32768, a multiple of 64)


NO_C_ENV = "CKPT_EXPLORER_NO_C_KERNEL"  #: set to 1: the numpy kernels even where the C extension is built
_LIB: Any = None  # the loaded C kernels, False when there are none


def _load() -> Any:
    import ctypes
    import importlib.machinery
    from pathlib import Path

    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_kernels{suffix}"
        if not path.is_file():
            continue
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        if not hasattr(lib, "ck_version") or lib.ck_version() != 3:
            continue
        vp, i64, dbl, ci = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
        lib.ck_range_fd.argtypes = [ci, ci, i64, i64, i64, i64, vp, vp, vp, vp]
        lib.ck_range_fd.restype = i64
        lib.ck_moments_fd.argtypes = [ci, ci, i64, i64, i64, i64, vp, i64, ci, vp, dbl, dbl, i64, vp, vp, vp, vp, vp, vp]
        lib.ck_moments_fd.restype = i64
        lib.ck_values_fd.argtypes = [ci, ci, i64, i64, i64, vp, vp, vp, vp, vp, vp]
        lib.ck_values_fd.restype = i64
        lib.ck_diff_fd.argtypes = [ci, ci, i64, ci, ci, i64, i64, i64, i64, vp, vp, vp, vp, vp, vp]
        lib.ck_diff_fd.restype = i64
        lib.ck_range.argtypes = [ctypes.c_int, vp, i64, vp, vp]
        lib.ck_range.restype = ctypes.c_int
        lib.ck_moments.argtypes = [ctypes.c_int, vp, i64, i64, ctypes.c_int, vp, dbl, dbl, i64, vp, vp, vp, vp, vp]
        lib.ck_moments.restype = i64
        lib.ck_pairwise_f64.argtypes = [vp, i64]
        lib.ck_pairwise_f64.restype = dbl
        return lib
    return False


def c_kernels() -> Any:
    """The C kernels (a ctypes library) when built and not turned off by ``CKPT_EXPLORER_NO_C_KERNEL=1``, else None."""
    global _LIB
    if os.environ.get(NO_C_ENV, "") not in ("", "0"):
        return None
    if _LIB is None:
        _LIB = _load()
    return _LIB or None


_KINDS: dict[Any, int] = {}


def _c_kind(x: Any) -> int:
    """The C kernels' element kind of a flat chunk (0 float32, 1 float64, 2 bf16), -1 where they do not apply."""
    if not _KINDS:
        import torch

        _KINDS.update({torch.float32: 0, torch.float64: 1, torch.bfloat16: 2})
    return _KINDS.get(x.dtype, -1) if x.is_contiguous() else -1


def is_integer_dtype(name: str) -> bool:
    return name == "bool" or name.startswith(("int", "uint"))


class Scratch:
    """Reused buffers of one kernel call, by role."""

    def __init__(self) -> None:
        self._b: dict[tuple[str, Any], Any] = {}

    def __call__(self, role: str, dtype: Any, k: int) -> Any:
        import numpy as np

        b = self._b.get((role, dtype))
        if b is None:
            b = self._b[(role, dtype)] = np.empty(SLICE, dtype=dtype)
        return b[:k]


def _flat(chunk: Any) -> Any:
    import torch

    if chunk.is_complex():
        chunk = torch.view_as_real(chunk).reshape(-1)
    return chunk


def float_slices(chunk: Any, scratch: Scratch) -> Any:
    """numpy float32/float64 views of any chunk (integers and bool widened to float32, as a diff reads them)."""
    return _slices(chunk, False, scratch)


def _slices(chunk: Any, integer: bool, scratch: Scratch) -> Any:
    """numpy views of the chunk, :data:`SLICE` at a time: float32/float64 for floats (bf16, fp16, fp8 widened exactly
    into a scratch buffer), the native integer (or bool) type for integers. A slice is valid until the next."""
    import numpy as np
    import torch

    x = _flat(chunk)
    n = x.numel()
    if integer or x.dtype in (torch.float32, torch.float64):
        a = x.numpy()
        for i in range(0, n, SLICE):
            yield a[i : i + SLICE]
        return
    if x.dtype == torch.bfloat16:
        u16 = x.view(torch.int16).numpy().view(np.uint16)
        for i in range(0, n, SLICE):
            s = u16[i : i + SLICE]
            w = scratch("widen", np.uint32, s.size)
            np.copyto(w, s)
            np.left_shift(w, 16, out=w)
            yield w.view(np.float32)
        return
    for i in range(0, n, SLICE):
        s = x[i : i + SLICE]
        k = s.numel()
        w = scratch("widen", np.float32, k)
        wt = torch.from_numpy(w)
        for j in range(0, k, PIECE):
            wt[j : j + PIECE].copy_(s[j : j + PIECE])
        yield w


class Moments:
    """Finite count, mean, M2 and exact zeros, combined part by part with Chan's formula (in item order)."""

    __slots__ = ("n", "mean", "m2", "zeros")

    def __init__(self, n: int = 0, mean: float = 0.0, m2: float = 0.0, zeros: int = 0) -> None:
        self.n, self.mean, self.m2, self.zeros = n, mean, m2, zeros

    def add(self, k: int, mean: float, m2: float, zeros: int = 0) -> None:
        self.zeros += zeros
        if not k:
            return
        if self.n == 0:
            self.n, self.mean, self.m2 = k, mean, m2
            return
        tot = self.n + k
        delta = mean - self.mean
        self.mean += delta * k / tot
        self.m2 += m2 + delta * delta * self.n * k / tot
        self.n = tot


def range_kernel(readers: Readers, item: WorkItem) -> tuple[tuple[float, float, int, int], ...]:
    """Pass 1, per part: (finite min, finite max, NaN count, Inf count); min > max when nothing is finite.
    ``part.options``: (group, integer)."""
    import numpy as np

    out = []
    scratch = Scratch()
    lib = c_kernels()
    if lib is not None:
        res = np.empty(2, np.float64)
        cnt = np.empty(2, np.int64)
    for part in item.parts:
        (span,), integer = part.spans, part.options[1]
        if lib is not None and not integer:
            got = _range_fd(lib, readers, span, res, cnt)
            if got is not None:
                out.append(got)
                continue
        lo, hi, nan, inf = math.inf, -math.inf, 0, 0
        for raw in readers.chunks(span, piece=READ):
            if lib is not None and not integer:
                x = _flat(raw)
                kind = _c_kind(x)
                if kind >= 0:
                    if x.numel():
                        lib.ck_range(kind, x.data_ptr(), x.numel(), res.ctypes.data, cnt.ctypes.data)
                        lo, hi = min(lo, float(res[0])), max(hi, float(res[1]))
                        nan, inf = nan + int(cnt[0]), inf + int(cnt[1])
                    continue
            for a in _slices(raw, integer, scratch):
                if not a.size:
                    continue
                cmin, cmax = a.min(), a.max()
                if not integer and not (math.isfinite(cmin) and math.isfinite(cmax)):  # rare: NaN/Inf here
                    fin = np.isfinite(a)
                    c_nan = int(np.isnan(a).sum())
                    nan += c_nan
                    inf += a.size - int(fin.sum()) - c_nan
                    a = a[fin]
                    if not a.size:
                        continue
                    cmin, cmax = a.min(), a.max()
                # + 0.0: a zero min or max is +0 whichever zero numpy picked (the C kernel does the same)
                lo, hi = min(lo, float(cmin) + 0.0), max(hi, float(cmax) + 0.0)
        out.append((lo, hi, nan, inf))
    return tuple(out)


def moments_kernel(readers: Readers, item: WorkItem) -> tuple[tuple[int, float, float, int, Any], ...]:
    """Pass 2, per part: (finite count, mean, M2, zeros, histogram counts as an int64 tensor).
    ``part.options``: (group, integer, mode, lo, hi, bins, any NaN/Inf); modes in :func:`_hist`."""
    import numpy as np
    import torch

    out = []
    scratch = Scratch()
    lib = c_kernels()
    for part in item.parts:
        (span,) = part.spans
        _g, integer, mode, lo, hi, bins, nonfinite = part.options
        n_counts = int(hi) - int(lo) + 1 if mode == "ivals" else bins
        counts = torch.zeros(n_counts, dtype=torch.int64)
        acc = Moments()
        c_counts = None
        use_c = lib is not None and mode == "range" and not integer
        width_ok = None
        if use_c and _moments_fd(lib, readers, span, nonfinite, lo, hi, bins, acc, scratch, counts):
            out.append((acc.n, acc.mean, acc.m2, acc.zeros, counts))
            continue
        for raw in readers.chunks(span, piece=READ):
            if use_c:
                x = _flat(raw)
                kind = _c_kind(x)
                if kind == 0 or kind == 2:
                    if width_ok is None:
                        width_ok = _f32_width_finite(lo, hi)
                    if not width_ok:
                        kind = -1
                if kind >= 0:
                    if c_counts is None:
                        c_counts = np.zeros(bins + 1, np.int64)
                    _c_moments(lib, kind, x, nonfinite, lo, hi, bins, c_counts, acc, scratch)
                    continue
            for a in _slices(raw, integer, scratch):
                if nonfinite:
                    a = a[np.isfinite(a)]
                k = a.size
                if not k:
                    continue
                d = scratch("f64", np.float64, k)
                np.copyto(d, a)
                m = float(np.add.reduce(d)) / k
                np.subtract(d, m, out=d)
                np.multiply(d, d, out=d)
                q = float(np.add.reduce(d))  # pairwise, as the C kernel sums the squares
                acc.add(k, m, q, k - _nonzero(a, scratch))
                counts += _hist(a, mode, lo, hi, bins, n_counts, scratch)
        if c_counts is not None:
            c_counts[bins - 1] += c_counts[bins]  # the top edge (x == hi) belongs to the last bin
            counts += torch.from_numpy(c_counts[:bins])
        out.append((acc.n, acc.mean, acc.m2, acc.zeros, counts))
    return tuple(out)


_FD_KINDS = {"float32": 0, "float64": 1, "bfloat16": 2}  #: header dtypes the C passes read from the file themselves
_ITEM = {0: 4, 1: 8, 2: 2}


def fd_span(readers: Readers, span: Span) -> tuple[int, int, int] | None:
    """(C kind, descriptor, byte offset of the span's first element) where a C pass can pread the span itself: a
    float32/float64/bf16 safetensors tensor (:meth:`Readers.direct`); else None (the chunk loop reads it)."""
    if span.dtype not in _FD_KINDS or span.stop <= span.start:
        return None
    d = readers.direct(span)
    if d is None or d[2] not in _FD_KINDS:
        return None
    fd, offset, dtype = d
    kind = _FD_KINDS[dtype]
    return kind, fd, offset + span.start * _ITEM[kind]


def fd_failed(readers: Readers, span: Span, code: int, err: int) -> None:
    """Raise the error of a C pass's failed direct read of ``span`` (code -4: errno ``err``; -5: the file ended)."""
    if code == -4:
        readers.read_failed(span, OSError(err, os.strerror(err)))
    if code == -5:
        readers.read_failed(span)
    raise RuntimeError(f"C statistics kernel failed ({code})")


def _range_fd(lib: Any, readers: Readers, span: Span, res: Any, cnt: Any) -> tuple[float, float, int, int] | None:
    """Pass 1 of a span in one C call that reads it too (the pieces of the chunk loop, so the same figures)."""
    import numpy as np

    d = fd_span(readers, span)
    if d is None:
        return None
    kind, fd, pos = d
    err = np.zeros(1, np.int64)
    buf = readers.buffer(READ * _ITEM[kind])
    code = lib.ck_range_fd(kind, fd, pos, span.stop - span.start, readers.chunk_elems, READ, buf.data_ptr(),
                           res.ctypes.data, cnt.ctypes.data, err.ctypes.data)
    if code != 0:
        fd_failed(readers, span, int(code), int(err[0]))
    return float(res[0]), float(res[1]), int(cnt[0]), int(cnt[1])


def _moments_fd(lib: Any, readers: Readers, span: Span, nonfinite: bool, lo: float, hi: float, bins: int,
                acc: Moments, scratch: Scratch, counts: Any) -> bool:
    """Pass 2 of a span in one C call that reads it too: per slice (one per piece of the chunk loop, as
    :func:`_c_moments` sees them) count, mean, M2 and nonzeros added to ``acc`` in order, the bins to ``counts``.
    False where it does not apply (the chunk loop runs instead)."""
    import numpy as np
    import torch

    d = fd_span(readers, span)
    if d is None:
        return False
    kind, fd, pos = d
    if kind != 1 and not _f32_width_finite(lo, hi):
        return False
    n, ce = span.stop - span.start, readers.chunk_elems
    full, rest = divmod(n, ce)
    ns = full * -(-ce // READ) + -(-rest // READ)  # pieces of READ (= SLICE) per chunk: one slice each
    k, nz = np.empty(ns, np.int64), np.empty(ns, np.int64)
    mean, m2 = np.empty(ns, np.float64), np.empty(ns, np.float64)
    c_counts = np.zeros(bins + 1, np.int64)
    comp = scratch("ck_compact", np.float64 if kind == 1 else np.float32, SLICE) if nonfinite else None
    err = np.zeros(1, np.int64)
    buf = readers.buffer(READ * _ITEM[kind])
    got = lib.ck_moments_fd(kind, fd, pos, n, ce, READ, buf.data_ptr(), SLICE, int(bool(nonfinite)),
                            0 if comp is None else comp.ctypes.data, lo, hi, bins, c_counts.ctypes.data, k.ctypes.data,
                            mean.ctypes.data, m2.ctypes.data, nz.ctypes.data, err.ctypes.data)
    if got == -2:
        raise CheckpointError("values outside the range found by the first pass: the data changed during the pass")
    if got < 0:
        fd_failed(readers, span, int(got), int(err[0]))
    if got != ns:
        raise RuntimeError(f"C statistics kernel failed ({got} slices, {ns} expected)")
    for kk, mm, qq, zz in zip(k.tolist(), mean.tolist(), m2.tolist(), nz.tolist()):
        if kk:
            acc.add(kk, mm, qq, kk - zz)
    c_counts[bins - 1] += c_counts[bins]  # the top edge (x == hi) belongs to the last bin
    counts += torch.from_numpy(c_counts[:bins])
    return True


def _f32_width_finite(lo: float, hi: float) -> bool:
    """Whether histc's float32 width float32(hi) − float32(lo) is finite (else the numpy code bins it, as it does)."""
    import numpy as np

    with np.errstate(over="ignore"):
        return bool(np.isfinite(np.float32(hi) - np.float32(lo)))


def _c_moments(lib: Any, kind: int, x: Any, nonfinite: bool, lo: float, hi: float, bins: int, counts: Any,
               acc: Moments, scratch: Scratch) -> None:
    """Pass 2 of one chunk in C: per slice of :data:`SLICE` (as the numpy code slices it) the finite count, mean,
    M2 and nonzeros, added to ``acc`` in slice order; the bins added to ``counts`` (``bins`` + 1: the top edge last)."""
    import numpy as np

    n = x.numel()
    if not n:
        return
    ns = -(-n // SLICE)
    k = scratch("ck_k", np.int64, ns)
    nz = scratch("ck_nz", np.int64, ns)
    mean = scratch("ck_mean", np.float64, ns)
    m2 = scratch("ck_m2", np.float64, ns)
    buf = scratch("ck_compact", np.float64 if kind == 1 else np.float32, SLICE) if nonfinite else None
    got = lib.ck_moments(kind, x.data_ptr(), n, SLICE, int(bool(nonfinite)), 0 if buf is None else buf.ctypes.data,
                         lo, hi, bins, counts.ctypes.data, k.ctypes.data, mean.ctypes.data, m2.ctypes.data, nz.ctypes.data)
    if got == -2:
        raise CheckpointError("values outside the range found by the first pass: the data changed during the pass")
    if got != ns:
        raise RuntimeError(f"C statistics kernel failed ({got})")
    for kk, mm, qq, zz in zip(k.tolist(), mean.tolist(), m2.tolist(), nz.tolist()):
        if kk:
            acc.add(kk, mm, qq, kk - zz)


def _nonzero(a: Any, scratch: Scratch) -> int:
    """Values of ``a`` that are not ±0 (a float's bits without the sign bit are zero only for ±0)."""
    import numpy as np

    if a.dtype == np.float32 or a.dtype == np.float64:
        iv = a.view(np.int32 if a.dtype == np.float32 else np.int64)
        sh = scratch("bits", iv.dtype, a.size)
        np.left_shift(iv, 1, out=sh)
        return int(np.count_nonzero(sh))
    return int(np.count_nonzero(a))


def _bincount(idx: Any, n: int) -> Any:
    import torch

    t = torch.from_numpy(idx)
    c = torch.zeros(n, dtype=torch.int64)
    for j in range(0, t.numel(), PIECE):
        c += torch.bincount(t[j : j + PIECE], minlength=n)
    return c


def _histc(a: Any, bins: int, lo: float, hi: float) -> Any:
    import torch

    t = torch.from_numpy(a)
    c = torch.zeros(bins, dtype=torch.int64)
    for j in range(0, t.numel(), PIECE):
        c += torch.histc(t[j : j + PIECE], bins=bins, min=lo, max=hi).to(torch.int64)
    return c


def _hist(a: Any, mode: str, lo: float, hi: float, bins: int, n_counts: int, scratch: Scratch) -> Any:
    """Histogram counts (int64 tensor) of one slice. "range": ``bins`` bins over the data's own [lo, hi] with
    torch.histc's arithmetic in the slice's dtype. "fixed": torch.histc over a caller's range (values outside are not
    counted; integers as float64). "ivals": one bin per integer from lo. "ibins": integers in ``bins`` bins over
    [lo, hi + 1), as float64."""
    import numpy as np

    if mode == "range":
        if a.dtype == np.float32 and not _f32_width_finite(lo, hi):
            # float32 hi - lo overflows (values near ±3.4e38): torch.histc's float32 arithmetic then drops every
            # value (NaN bins); bin in float64 instead, where the width is finite, so the histogram stays true
            f = scratch("wide", np.float64, a.size)
            np.copyto(f, a)
            a = f
        t = scratch("hist", a.dtype, a.size)
        width = float(np.float32(hi) - np.float32(lo)) if a.dtype == np.float32 else hi - lo
        np.subtract(a, lo, out=t)
        np.multiply(t, bins, out=t)
        np.divide(t, width, out=t)
        idx = scratch("bin", np.int16 if bins < 32767 else np.int32, a.size)
        np.copyto(idx, t, casting="unsafe")  # truncation toward zero, as histc's cast (t >= 0)
        c = _bincount(idx, n_counts + 1)
        c[n_counts - 1] += c[n_counts]  # the top edge (x == hi) belongs to the last bin
        return c[:n_counts]
    if mode == "ivals":
        v = scratch("ival", np.int64, a.size)
        np.subtract(a, int(lo), out=v, casting="unsafe")
        return _bincount(v, n_counts)
    if a.dtype != np.float32 and a.dtype != np.float64:  # integers are binned as float64
        f = scratch("ifloat", np.float64, a.size)
        np.copyto(f, a)
        a = f
    return _histc(a, bins, lo, hi + 1 if mode == "ibins" else hi)


# --------------------------------------------------------------------------------------------- value counts
# A 16- or 8-bit float tensor has at most 65,536 (256) distinct bit patterns: one pass counting them gives every
# figure exactly (min/max, NaN/Inf, zeros, moments summed exactly with math.fsum, the histogram with histc's
# arithmetic applied to each distinct value), whatever the split.

VALUE_DTYPES = frozenset({"bfloat16", "float16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
                          "float8_e8m0fnu"})


def values_kernel(readers: Readers, item: WorkItem) -> tuple[tuple[Any, Any], ...]:
    """Per part: (bit patterns present, ascending; their counts) of a 16/8-bit float span, sparse (two int64 numpy
    arrays)."""
    import numpy as np

    out = []
    lib = c_kernels()
    for part in item.parts:
        (span,) = part.spans
        sparse = _values_fd(lib, readers, span) if lib is not None else None
        if sparse is None:
            wide = _values_loop(readers, span)
            if wide is None:
                sparse = (np.zeros(0, np.int64), np.zeros(0, np.int64))
            else:
                keys = np.flatnonzero(wide)
                sparse = (keys, wide[keys])
        out.append(sparse)
    return tuple(out)


#: bytes per piece of the C value count: the piece and the four sub-histograms (1 MB) stay in the core's cache
VALUES_PIECE_BYTES = 1 << 19
_DENSE = threading.local()  # per thread: the C value count's all-zero scratch (int64 per bit pattern, sub-histograms)


def _values_fd(lib: Any, readers: Readers, span: Span) -> tuple[Any, Any] | None:
    """The sparse counts of a 16/8-bit span's bit patterns in one C call that reads the span too (None where it does
    not apply: not a safetensors tensor)."""
    import numpy as np

    from .sources.index import torch_dtype

    if span.dtype not in VALUE_DTYPES or span.stop <= span.start:
        return None
    d = readers.direct(span)
    if d is None or d[2] != span.dtype:
        return None
    fd, offset, dtype = d
    width = torch_dtype(dtype).itemsize
    size = 1 << (8 * width)
    dense = getattr(_DENSE, "w%d" % width, None)
    if dense is None:
        dense = np.zeros(size, np.int64)
        setattr(_DENSE, "w%d" % width, dense)
    subs = getattr(_DENSE, "subs", None)
    if subs is None and width == 2:
        subs = _DENSE.subs = np.zeros(4 * 65536, np.uint32)
    keys, vals = np.empty(size, np.int64), np.empty(size, np.int64)
    err = np.zeros(1, np.int64)
    piece = VALUES_PIECE_BYTES // width
    buf = readers.buffer(VALUES_PIECE_BYTES)
    m = lib.ck_values_fd(width, fd, offset + span.start * width, span.stop - span.start, piece, buf.data_ptr(),
                         dense.ctypes.data, subs.ctypes.data if width == 2 else None, keys.ctypes.data,
                         vals.ctypes.data, err.ctypes.data)
    if m < 0:
        fd_failed(readers, span, int(m), int(err[0]))
    return keys[:m].copy(), vals[:m].copy()


def _values_loop(readers: Readers, span: Span) -> Any:
    """The dense counts of a span's bit patterns, chunk by chunk in numpy (None for an empty span)."""
    import numpy as np
    import torch

    wide = None
    for raw in readers.chunks(span):
        bits = (raw.view(torch.int16).numpy().view(np.uint16) if raw.element_size() == 2
                else raw.view(torch.uint8).numpy())
        size = 1 << (8 * raw.element_size())
        for i in range(0, bits.size, SLICE):
            c = np.bincount(bits[i : i + SLICE], minlength=size)
            wide = c if wide is None else wide + c
    return wide


@functools.lru_cache(maxsize=None)
def _value_table(dtype: str) -> tuple[Any, Any]:
    """(every bit pattern of the 16/8-bit ``dtype`` as float32, its class: 0 finite, 1 NaN, 2 ±Inf), read-only."""
    import numpy as np
    import torch

    from .sources.index import torch_dtype

    if dtype == "bfloat16":  # the top half of a float32 (numpy: no first torch call on the pass's critical path)
        vals32 = (np.arange(65536, dtype=np.uint32) << 16).view(np.float32)
    elif dtype == "float16":
        vals32 = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    else:
        size = 65536 if torch_dtype(dtype).itemsize == 2 else 256
        pat = torch.arange(size, dtype=torch.int32).to(torch.int16 if size == 65536 else torch.uint8)
        vals32 = pat.view(torch_dtype(dtype)).to(torch.float32).numpy()
    kind = np.where(np.isnan(vals32), 1, np.where(np.isinf(vals32), 2, 0)).astype(np.int8)
    vals32.flags.writeable = False
    kind.flags.writeable = False
    return vals32, kind


def from_values(keys: Any, counts: Any, dtype: str, bins: int, fixed: tuple[float, float] | None
                ) -> tuple[list[Any], Moments, Any]:
    """([finite min, max, NaN, Inf], Moments, histogram counts or None for a constant) from value counts."""
    import numpy as np
    import torch

    vals32, kind = _value_table(dtype)
    nz = counts > 0
    if not nz.all():
        keys, counts = keys[nz], counts[nz]
    if keys.size > 1 and not bool((keys[1:] > keys[:-1]).all()):  # several parts: merge repeated keys
        keys, inv = np.unique(keys, return_inverse=True)
        counts = np.bincount(inv, weights=counts).astype(np.int64)
    k = kind[keys]
    nan = int(counts[k == 1].sum())
    inf = int(counts[k == 2].sum())
    fin = k == 0
    if not fin.any():
        return [math.inf, -math.inf, nan, inf], Moments(), None
    v, c = vals32[keys[fin]], counts[fin]
    lo, hi = float(v.min()), float(v.max())
    n = int(c.sum())
    v64 = v.astype(np.float64)
    mean = math.fsum((v64 * c).tolist()) / n  # each product is exact (≤ 11 significant bits × counts < 2^42)
    m2 = math.fsum((c * (v64 - mean) ** 2).tolist())
    mo = Moments(n, mean, m2, int(c[v == 0].sum()))
    if fixed is None and lo == hi:
        return [lo, hi, nan, inf], mo, None
    a, b = (np.float32(fixed[0]), np.float32(fixed[1])) if fixed is not None else (np.float32(lo), np.float32(hi))
    keep = (v >= a) & (v <= b)
    if _f32_width_finite(float(a), float(b)):
        t = ((v[keep] - a) * np.float32(bins)) / (b - a)  # torch.histc's arithmetic, in float32
    else:  # the float32 width overflows (values near ±3.4e38): in float64, as _hist bins such a range
        t = ((v[keep].astype(np.float64) - float(a)) * bins) / (float(b) - float(a))
    idx = np.minimum(t.astype(np.int64), bins - 1)
    hist = torch.from_numpy(np.bincount(idx, weights=c[keep], minlength=bins).astype(np.int64))
    return [lo, hi, nan, inf], mo, hist
