"""Whole-checkpoint passes on every core: a pass is a list of pure work items, an executor maps them to partial
results, and the partials merge in item order.

The interface (the one a new backend implements; the local threads and processes are here, a Dask cluster plugs in
the same way):

* :class:`Span` — where one piece of values is: ``source`` (which checkpoint of the pass: 0, or 0/1 for A/B in a
  diff), ``tensor`` (its on-disk name), the element range ``[start, stop)``, and, for locality and logs, the
  ``file`` and ``dtype`` from the already-validated index.
* :class:`Part` — spans read together (one for statistics, A's and B's of one length for a diff) and the kernel's
  ``options`` for them (plain picklable data: a group number, a histogram's range and bins, ...).
* :class:`WorkItem` — ``kernel`` (a module-level function, so it pickles by reference), ``parts`` (small tensors are
  packed into one item, a big one is cut into ranges) and item-level ``options``. ``kernel(readers, item)`` returns
  one partial per part. Items are pure: the same item on any worker gives the same partial.
* :class:`Readers` — what a kernel reads through, one per worker: a :class:`~explorer.core.checkpoint.TensorReader`
  per source, reopening files **only** by the paths of the index the pass was given (nothing new from a file), and
  reusable read buffers, so a worker holds about ``chunk_elems`` elements per span it reads at a time.
* :class:`Executor` — ``workers`` and ``map(sources, items, *, cancel) -> iterator of partials, in item order``.
  ``sources`` is a tuple of :class:`~explorer.core.checkpoint.CheckpointIndex` (picklable; a process or cluster
  worker builds its own readers from it, the parent's file descriptors never travel) — or, for the serial
  executor only, readers (an adapter's ``DeltaReader``) or in-memory tensors. ``cancel`` (the :mod:`explorer.core.jobs`
  protocol) is polled before each item starts; closing the iterator cancels what has not started.
  :class:`SerialExecutor` (the caller's thread), :class:`ThreadExecutor` (torch and numpy release the GIL in
  every kernel used here; each of its threads runs torch's ops on itself alone, :func:`one_intra_op_thread`),
  :class:`ProcessExecutor` (spawned workers, for kernels that hold the GIL; each runs torch on one thread too).
  ``workers=N`` means N cores: with one worker the caller's thread is capped at one intra-op thread while an item
  runs (:func:`intra_op_threads`, restored after), as each of N threads is. ``readers.cancel`` is the pass's
  cancel for a kernel that polls inside a long item (None on process and cluster workers).
* :func:`run_pass` drives a pass with progress and cancel (a :class:`~explorer.core.jobs.Ticker` counting
  elements), :func:`split_items` cuts tensors into items, :func:`executor_for` turns ``workers=`` (an int, None for
  every core, or an Executor) into an executor, :func:`default_workers` is the cores this process may use.

Results do not depend on the number of workers: the split depends only on the tensors and the chunk size (never on
``workers``), each item's partial is computed the same way wherever it runs (kernels keep every torch reduction
under torch's parallel grain size, so intra-op threads never reorder a sum), and partials are merged in item order.
So 1, 2 or N threads, processes or a cluster give bit-identical figures.

Memory: at most ``workers`` items run at once and at most ``WINDOW × workers`` are in flight (submitted, or done with
their small partials not yet consumed); each running item reads through its worker's buffers (about ``chunk_elems``
elements per span).
"""
from __future__ import annotations

import os
import queue
import threading
from contextlib import contextmanager
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Protocol, Sequence

from .errors import Cancelled, ExplorerError
from .jobs import Ticker, is_cancelled

if TYPE_CHECKING:
    import torch

DEFAULT_ITEM = 1 << 22  #: elements per work item (4M: 16 MB of float32): per-item overhead is noise, memory stays small
#: items in flight per thread worker: enough queued that a worker never waits while the caller's thread is busy
#: merging (a partial is a few KB; 2 per worker left the workers idle 15-25 % of a bf16 stats pass)
WINDOW = 8
MAX_WORKERS = 512


@dataclass(frozen=True)
class Span:
    """``[start, stop)`` elements of tensor ``tensor`` of the pass's source ``source`` (file and dtype as indexed)."""

    source: int
    tensor: str
    start: int
    stop: int
    file: str = ""
    dtype: str = ""

    @property
    def numel(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Part:
    """Spans read together (one for statistics; A's and B's, of one length, for a diff) and the kernel's options for
    them (plain data: a group number, a histogram's range and bins, ...)."""

    spans: tuple[Span, ...]
    options: tuple[Any, ...] = ()

    @property
    def numel(self) -> int:
        return self.spans[0].numel if self.spans else 0


@dataclass(frozen=True)
class WorkItem:
    """A pure unit of work: ``kernel(readers, item)`` -> one partial per part."""

    kernel: Callable[[Readers, WorkItem], tuple[Any, ...]]
    parts: tuple[Part, ...]
    options: tuple[Any, ...] = ()

    @property
    def size(self) -> int:
        """Elements of the item (its parts' first spans): the unit of progress."""
        return sum(p.numel for p in self.parts)


# --------------------------------------------------------------------------------------------- reading


class _MemoryReader:
    """An in-memory tensor as a one-tensor source (``tensor_stats(torch_tensor)``)."""

    def __init__(self, name: str, flat: Any) -> None:
        self.name, self.flat = name, flat

    def iter_range(self, name: str, start: int, stop: int, *, chunk_elems: int, out: Any = None) -> Iterator[Any]:
        for s in range(start, stop, chunk_elems):
            yield self.flat[s : min(stop, s + chunk_elems)]

    def close(self) -> None:
        pass


def memory_source(name: str, tensor: Any) -> _MemoryReader:
    """A source for the serial executor holding one in-memory tensor (flattened)."""
    return _MemoryReader(name, tensor.detach().reshape(-1))


class Readers:
    """One worker's readers: a TensorReader per source (opened lazily, only over the given index's files) and one
    reusable byte buffer per span slot, so reading a chunk allocates nothing."""

    def __init__(self, sources: Sequence[Any], chunk_elems: int = DEFAULT_ITEM, cancel: Any = None) -> None:
        self.sources = tuple(sources)
        self.chunk_elems = chunk_elems
        #: the pass's cancel (the :mod:`explorer.core.jobs` protocol) for kernels that poll it inside a long item;
        #: None on process and cluster workers (a cancel there stops the items that have not started)
        self.cancel = cancel
        self._readers: dict[int, Any] = {}
        self._owned: list[Any] = []
        self._buffers: dict[int, Any] = {}

    def reader(self, source: int) -> Any:
        r = self._readers.get(source)
        if r is None:
            from .checkpoint import CheckpointIndex, TensorReader

            src = self.sources[source]
            if isinstance(src, CheckpointIndex):
                r = TensorReader(src)
                self._owned.append(r)
            else:
                r = src  # a reader (or memory source) the caller owns
            self._readers[source] = r
        return r

    def _buffer(self, slot: int, nbytes: int) -> Any:
        import torch

        b = self._buffers.get(slot)
        if b is None or b.numel() < nbytes:
            b = torch.empty(nbytes, dtype=torch.uint8)
            self._buffers[slot] = b
        return b

    def chunks(self, span: Span, slot: int = 0, *, piece: int = 0) -> Iterator[torch.Tensor]:
        """The span's values, flat, in chunks of at most ``chunk_elems`` (a chunk is valid until the next one of the
        same slot is read). ``piece``: where the span can be read from any offset, each chunk is delivered as
        consecutive reads of at most ``piece`` elements from the chunk's start (the chunks' boundaries are kept, so
        a kernel that slices in steps dividing ``piece`` sees the same slices), small enough that the read buffer
        stays in the core's cache while a kernel works on it."""
        r = self.reader(span.source)
        out = lambda nbytes: self._buffer(slot, nbytes)  # noqa: E731
        ce = self.chunk_elems
        split = getattr(r, "splittable", None)
        if 0 < piece < ce and (isinstance(r, _MemoryReader) or (split is not None and split(span.tensor))):
            return self._pieces(r, span, piece, out)
        return r.iter_range(span.tensor, span.start, span.stop, chunk_elems=ce, out=out)

    def direct(self, span: Span) -> tuple[int, int, str] | None:
        """(descriptor, byte offset of the tensor's element 0, its dtype) where the span's reader lets a C kernel ``pread`` it
        itself (:meth:`TensorReader.direct <explorer.core.sources.reader.TensorReader.direct>`), else None."""
        direct = getattr(self.reader(span.source), "direct", None)
        return direct(span.tensor) if direct is not None else None

    def read_failed(self, span: Span, error: OSError | None = None) -> Any:
        """Raise the reader's CheckpointError for a failed direct read of the span (None: the file ended early)."""
        self.reader(span.source).read_failed(span.tensor, error)

    def buffer(self, nbytes: int, slot: int = 0) -> Any:
        """A reusable uint8 tensor of at least ``nbytes`` (the one :meth:`chunks` reads slot ``slot`` into)."""
        return self._buffer(slot, nbytes)

    def _pieces(self, r: Any, span: Span, piece: int, out: Callable[[int], Any]) -> Iterator[torch.Tensor]:
        for cs in range(span.start, span.stop, self.chunk_elems):
            yield from r.iter_range(span.tensor, cs, min(span.stop, cs + self.chunk_elems), chunk_elems=piece, out=out)

    def close(self) -> None:
        for r in self._owned:
            r.close()
        self._owned.clear()
        self._readers.clear()
        self._buffers.clear()


# --------------------------------------------------------------------------------------------- executors


class Executor(Protocol):
    """Maps work items to their partials, in item order (see the module docstring)."""

    workers: int

    def map(self, sources: Sequence[Any], items: Sequence[WorkItem], *, cancel: Any = None,
            chunk_elems: int = DEFAULT_ITEM) -> Iterator[Any]: ...


def _run(readers: Readers, item: WorkItem) -> tuple[Any, ...]:
    return item.kernel(readers, item)


class SerialExecutor:
    """Every item in the caller's thread (``workers=1``); also takes readers and in-memory sources. ``threads``: the
    cores the items may use — torch's intra-op threads in the caller's thread are capped at it while an item runs
    (``workers=1`` means one core; None: torch's own setting, for a pass that is serial only because its sources
    are the caller's)."""

    workers = 1

    def __init__(self, threads: int | None = None) -> None:
        self.threads = None if threads is None else check_workers(threads)

    def map(self, sources: Sequence[Any], items: Sequence[WorkItem], *, cancel: Any = None,
            chunk_elems: int = DEFAULT_ITEM) -> Iterator[Any]:
        readers = Readers(sources, chunk_elems, cancel)
        try:
            for item in items:
                if is_cancelled(cancel):
                    raise Cancelled("cancelled")
                with intra_op_threads(self.threads):
                    out = _run(readers, item)
                yield out
        finally:
            readers.close()


class ThreadExecutor:
    """``workers`` threads, each with its own :class:`Readers`; partials yielded in item order."""

    def __init__(self, workers: int) -> None:
        self.workers = check_workers(workers)

    def map(self, sources: Sequence[Any], items: Sequence[WorkItem], *, cancel: Any = None,
            chunk_elems: int = DEFAULT_ITEM) -> Iterator[Any]:
        pool_readers: queue.SimpleQueue[Readers] = queue.SimpleQueue()
        stop = threading.Event()

        def stopped() -> bool:  # what a kernel polls inside a long item: the pass's cancel, or the iterator closed
            return stop.is_set() or is_cancelled(cancel)

        all_readers = [Readers(sources, chunk_elems, stopped) for _ in range(self.workers)]
        for r in all_readers:
            pool_readers.put(r)

        def task(item: WorkItem) -> tuple[Any, ...]:
            if stop.is_set() or is_cancelled(cancel):
                raise Cancelled("cancelled")
            r = pool_readers.get()
            try:
                return _run(r, item)
            finally:
                pool_readers.put(r)

        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ckpt-pass", initializer=one_intra_op_thread)
        try:
            yield from _ordered(pool.submit, task, items, WINDOW * self.workers, cancel)
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            for r in all_readers:
                r.close()


def one_intra_op_thread() -> None:
    """This thread's torch ops run on this thread only (OpenMP's thread count is a per-thread setting): ``workers``
    threads each starting a team of torch's intra-op threads would put ``workers × cores`` threads on the cores, and
    OpenMP's spinning teams then cost more CPU than they save (measured: 8 CPU s instead of 3 for one init check on
    a busy 2-core machine). Other threads keep torch's setting. No-op where torch does not use OpenMP."""
    global _OMP
    import torch

    torch.get_num_threads()  # torch's own once-per-thread setup first: it would otherwise reset what follows
    if _OMP is None:
        _OMP = _find_openmp()
    if _OMP:
        _OMP.omp_set_num_threads(1)


_OMP: Any = None


@contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Within the block, torch's ops in this thread use at most ``n`` threads (its intra-op OpenMP team: a per-thread
    setting, other threads keep theirs); restored afterwards. None, or ``n`` at least torch's setting: no change.
    Results do not change (kernels keep every reduction under torch's grain size); only the cores used do."""
    if n is None:
        yield
        return
    global _OMP
    import torch

    before = torch.get_num_threads()  # torch's once-per-thread setup first; then this thread's team size
    if n >= before:
        yield
        return
    if _OMP is None:
        _OMP = _find_openmp()
    if not _OMP:
        yield
        return
    _OMP.omp_set_num_threads(n)
    try:
        yield
    finally:
        _OMP.omp_set_num_threads(before)


def _find_openmp() -> Any:
    """The OpenMP runtime torch loaded (libgomp / libiomp), or False."""
    import ctypes
    import re

    try:
        with open("/proc/self/maps") as f:
            libs = sorted(set(re.findall(r"(/\S*lib(?:gomp|iomp5)[^/\s]*\.so[.\d]*)$", f.read(), re.M)))
    except OSError:
        return False
    for lib in libs:
        try:
            h = ctypes.CDLL(lib)
        except OSError:
            continue
        if hasattr(h, "omp_set_num_threads"):
            h.omp_set_num_threads.argtypes = [ctypes.c_int]
            return h
    return False


def _process_task(sources: tuple[Any, ...], item: WorkItem, chunk_elems: int) -> tuple[Any, ...]:
    readers = Readers(sources, chunk_elems)
    try:
        return _run(readers, item)
    finally:
        readers.close()


def item_sources(sources: Sequence[Any], item: WorkItem) -> tuple[Any, ...]:
    """The pass's indexes cut down to what ``item`` reads (its tensors' records and their files' stamps): what a
    process or cluster worker is sent with the item, so a 47k-tensor index does not travel with every item."""
    import dataclasses

    names: dict[int, set[str]] = {}
    for part in item.parts:
        for sp in part.spans:
            names.setdefault(sp.source, set()).add(sp.tensor)
    out = []
    for i, src in enumerate(sources):
        want = names.get(i)
        if not want:
            out.append(None)
            continue
        tensors = {n: src.tensors[n] for n in src.tensors if n in want} if len(want) * 4 < len(src.tensors) else None
        if tensors is None:
            out.append(src)
            continue
        files = {t.file for t in tensors.values()}
        out.append(dataclasses.replace(src, tensors=tensors, files=tuple(f for f in src.files if f in files),
                                       stamps={f: st for f, st in src.stamps.items() if f in files}))
    return tuple(out)


class ProcessExecutor:
    """``workers`` spawned processes (for kernels that hold the GIL), started on first use and kept until
    :meth:`close` (or the end of a ``with`` block). Each item travels with :func:`item_sources` (our own index
    records, pickled by this process: nothing from a file is unpickled) and the worker opens its own readers over
    those indexed paths only. Start-up costs an import of torch per worker; like any ``multiprocessing`` user, a
    script needs the ``if __name__ == "__main__":`` guard."""

    def __init__(self, workers: int) -> None:
        self.workers = check_workers(workers)
        self._pool: Any = None

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def map(self, sources: Sequence[Any], items: Sequence[WorkItem], *, cancel: Any = None,
            chunk_elems: int = DEFAULT_ITEM) -> Iterator[Any]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from .checkpoint import CheckpointIndex

        if not all(isinstance(s, CheckpointIndex) for s in sources):
            raise ExplorerError("process workers read checkpoints by index only (not readers or in-memory tensors)")
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=one_intra_op_thread)
        pool = self._pool

        def submit(fn: Any, item: WorkItem) -> Future:
            return pool.submit(fn, item_sources(sources, item), item, chunk_elems)

        yield from _ordered(submit, _process_task, items, 2 * self.workers, cancel)


def _ordered(submit: Callable[..., Future], fn: Callable[[WorkItem], Any], items: Iterable[WorkItem], window: int,
             cancel: Any) -> Iterator[Any]:
    """Submit items keeping at most ``window`` in flight; yield their results in item order."""
    pending: list[Future] = []
    it = iter(items)
    try:
        for item in it:
            if is_cancelled(cancel):
                raise Cancelled("cancelled")
            pending.append(submit(fn, item))
            while len(pending) >= window:
                yield pending.pop(0).result()
        while pending:
            yield pending.pop(0).result()
    finally:
        for f in pending:
            f.cancel()


def ordered_map(fn: Callable[[Any], Any], jobs: Iterable[Any], *, workers: int, cost: Callable[[Any], int] = lambda j: 1,
                budget: int = 0, cancel: Any = None, threads: int | None = 0, window: int = 2) -> Iterator[Any]:
    """``fn(job)`` for each job on ``workers`` threads (1: in the caller's thread, one at a time), results yielded in
    job order, for a pass whose results are consumed in order in the caller's thread. Jobs start in order while the
    jobs queued or running cost at most ``budget`` (e.g. the bytes they make; always at least one job), and at most
    ``window × workers`` results are not yet consumed: a finished job's result is taken to hold nothing much (export's
    jobs write their own bytes and return a count), so a long first job does not stop the others from running on.
    ``cancel`` is polled before each job starts. Closing the iterator cancels the jobs that have not started and waits
    for the running ones. ``threads``: with one worker, the cores a job may use (torch's intra-op threads in the
    caller's thread are capped at it while it runs; default ``workers``; None: torch's own setting, for jobs kept in
    the caller's thread for another reason); each of several workers uses one."""
    workers = check_workers(workers)
    if workers == 1:
        cap = workers if threads == 0 else threads
        for job in jobs:
            if is_cancelled(cancel):
                raise Cancelled("cancelled")
            with intra_op_threads(cap):
                out = fn(job)
            yield out
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="ckpt-pass", initializer=one_intra_op_thread)
    pending: list[Future] = []
    changed = threading.Condition()
    held = [0]  # the cost of the jobs queued or running

    def run(job: Any, c: int) -> Any:
        try:
            return fn(job)
        finally:
            with changed:
                held[0] -= c
                changed.notify_all()

    try:
        for job in jobs:
            c = cost(job)
            while len(pending) >= window * workers:
                yield pending.pop(0).result()
            with changed:
                while held[0] > 0 and held[0] + c > budget:
                    changed.wait(0.1)
                    if is_cancelled(cancel):
                        break
                if is_cancelled(cancel):
                    raise Cancelled("cancelled")
                held[0] += c
            pending.append(pool.submit(run, job, c))
        while pending:
            yield pending.pop(0).result()
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def default_workers() -> int:
    """The cores this process may run on (its CPU affinity; ``os.process_cpu_count`` where there is one)."""
    count = getattr(os, "process_cpu_count", None)
    if count is not None:
        n = count()
    else:
        try:
            n = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            n = os.cpu_count()
    return max(1, min(MAX_WORKERS, n or 1))


def check_workers(n: Any) -> int:
    """``n`` as a worker count (1 .. MAX_WORKERS), else ExplorerError with one line."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_WORKERS:
        raise ExplorerError(f"workers must be a whole number from 1 to {MAX_WORKERS}, found {n!r}")
    return n


def executor_for(workers: int | Executor | None = None, *, local_only: bool = False) -> Executor:
    """``workers``: an Executor (used as is), an int (1: the caller's thread; more: threads), or None (every core).
    ``workers=N`` means N cores: one worker runs torch on one intra-op thread, as each of N threads does.
    ``local_only``: the sources are readers or in-memory tensors that only the caller's thread may use (the serial
    executor, whatever was asked, with torch's intra-op threads capped at the ``workers`` asked)."""
    if local_only:
        if isinstance(workers, int):
            return SerialExecutor(check_workers(workers))
        return SerialExecutor()
    if workers is not None and not isinstance(workers, int):
        return workers
    n = default_workers() if workers is None else check_workers(workers)
    return SerialExecutor(1) if n == 1 else ThreadExecutor(n)


def shareable(index: Any) -> bool:
    """Whether workers may each open their own reader over ``index`` (by its indexed paths): safetensors and torch zip
    files. Not a legacy torch pickle (each worker would load it whole) nor a chunked or remote layout (its reader
    stays in the caller's thread)."""
    return getattr(index, "layout", None) is None and getattr(index, "format", "") != "torch-legacy"


def split_items(kernel: Callable[[Readers, WorkItem], tuple[Any, ...]], parts: Iterable[Part], *,
                chunk_elems: int = DEFAULT_ITEM, options: tuple[Any, ...] = (), splittable: Callable[[Span], bool] = lambda s: True
                ) -> list[WorkItem]:
    """Work items over ``parts`` (their spans usually whole tensors): a part longer than
    ``chunk_elems`` is cut into ranges of ``chunk_elems`` (when ``splittable`` says its spans can be read from an
    offset), and consecutive small parts are packed into one item of at most ``chunk_elems`` elements. Depends only
    on the parts and ``chunk_elems``, never on the workers."""
    items: list[WorkItem] = []
    pack: list[Part] = []
    packed = 0

    def flush() -> None:
        nonlocal pack, packed
        if pack:
            items.append(WorkItem(kernel, tuple(pack), options))
        pack, packed = [], 0

    for part in parts:
        n = part.numel
        if n > chunk_elems and all(splittable(s) for s in part.spans):
            flush()
            for s in range(0, n, chunk_elems):
                e = min(n, s + chunk_elems)
                items.append(WorkItem(kernel, (Part(tuple(_sub(sp, s, e) for sp in part.spans), part.options),), options))
            continue
        if packed + n > chunk_elems:
            flush()
        pack.append(part)
        packed += n
    flush()
    return items


def _sub(span: Span, s: int, e: int) -> Span:
    return Span(span.source, span.tensor, span.start + s, span.start + e, span.file, span.dtype)


def run_pass(executor: Executor, sources: Sequence[Any], items: Sequence[WorkItem], tick: Ticker | None = None, *,
             cancel: Any = None, chunk_elems: int = DEFAULT_ITEM) -> Iterator[tuple[WorkItem, tuple[Any, ...]]]:
    """(item, partials) for each item, in item order; ``tick`` steps by each item's size (progress, and Cancelled
    when its cancel asks). Closing the iterator stops the pass."""
    if tick is not None:
        tick.check()
        cancel = tick.cancel if cancel is None else cancel
    results = executor.map(sources, items, cancel=cancel, chunk_elems=chunk_elems)
    try:
        for item, partial in zip(items, results):
            yield item, partial
            if tick is not None:
                tick.step(item.size)
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()


__all__ = ["DEFAULT_ITEM", "Executor", "Part", "ProcessExecutor", "Readers", "SerialExecutor", "Span", "ThreadExecutor",
           "WorkItem", "check_workers", "default_workers", "executor_for", "intra_op_threads", "item_sources", "memory_source",
           "one_intra_op_thread",
           "ordered_map", "run_pass", "shareable", "split_items"]
