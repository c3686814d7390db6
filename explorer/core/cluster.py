"""Whole-checkpoint passes on a Dask distributed cluster: an :class:`~explorer.core.parallel.Executor` whose work items
run on the cluster's workers (``pip install checkpoint-explorer[cluster]``).

The pass is the same as on local cores (:mod:`explorer.core.parallel`): the same work items, split by tensor ranges
independently of who runs them, and partials merged in item order, so the figures are bit-identical to a local run.
Dask does the scheduling; nothing here schedules beyond keeping a window of items in flight.

What travels to a worker is our own data: each item (its kernel, a module-level function of this package, pickled
by reference) and the pass's index cut to the records the item reads (:func:`~explorer.core.parallel.item_sources`:
names, shapes, dtypes, byte offsets and the files' size/mtime stamps, all from the already-validated headers). A
worker opens those paths and nothing else — nothing named inside a file is imported or called — so **the workers
must see the same files at the same paths** (a shared file system), and must have this package installed (the same
version). A file that changed on a worker's side is refused by its stamps, as locally.

A worker process keeps its open readers between items (:data:`READER_CACHE` idle ones, least recently used
dropped), keyed by the files' identity as indexed (paths, sizes, mtimes, format); before one is used again, each
file it holds open is compared with the file now at its path (inode, device, size, mtime), and a reader over a file
replaced or rewritten since is closed, never read through. A torch file's loaded tensors (mappings through torch, no
descriptor to compare) are dropped on reuse and loaded again from the file now at its path.
"""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from typing import Any, Iterator, Sequence

from .errors import Cancelled, ExplorerError
from .jobs import is_cancelled
from .parallel import DEFAULT_ITEM, Readers, WorkItem, item_sources

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
CONNECT_TIMEOUT = 10.0  #: seconds to reach a scheduler before giving up (one line naming it, exit 2)
EXTRA = "checkpoint-explorer[cluster]"


class ClusterError(ExplorerError):
    """The cluster cannot be used: no dask installed, a scheduler that does not answer, a worker that failed."""


def scheduler_address(given: str | None = None) -> str | None:
    """``--scheduler`` if given, else ``$DASK_SCHEDULER_ADDRESS``, else None (run on local cores)."""
    if given:
        return given
    return os.environ.get(SCHEDULER_ENV) or None


def run_item(sources: tuple[Any, ...], item: WorkItem, chunk_elems: int) -> tuple[Any, ...]:
    """What a cluster worker runs for one item: readers over the item's indexed paths (kept open between items in
    this worker process: :func:`_lease`), the item's kernel."""
    leased = [_lease(s) for s in sources]
    readers = Readers([r if r is not None else s for r, s in zip(leased, sources)], chunk_elems)
    ok = False
    try:
        out = item.kernel(readers, item)
        ok = True
        return out
    finally:
        readers.close()
        for r, s in zip(leased, sources):
            if r is not None:
                _give_back(s, r, keep=ok)


# --------------------------------------------------------------------------------------------- open readers

READER_CACHE = 8  #: open readers a cluster worker process keeps between items (idle ones; least recently used go)
#: an idle reader is closed after this long, or as soon as a sweep finds one of its files deleted: its descriptors
#: would keep a deleted checkpoint's disk space in use for as long as the worker process lives
READER_IDLE_SECONDS = 30.0
_idle: OrderedDict[tuple, list[tuple[Any, float]]] = OrderedDict()  # per identity: (reader, idle since)
_idle_lock = threading.Lock()
_counts = {"opened": 0, "reused": 0, "stale": 0, "swept": 0}
_sweeper: list[threading.Timer] = []  # the pending sweep, if any


def _identity(index: Any) -> tuple | None:
    """What an open reader over ``index`` may serve again: the same files with the same size and mtime (the
    indexed stamps), the same format and sub-dict. None for what is not read by offsets (nothing cached)."""
    if getattr(index, "layout", None) is not None or not getattr(index, "stamps", None):
        return None
    return (index.path, index.format, index.wrapper_key, tuple(sorted(index.stamps.items())))


def _same_files(reader: Any) -> bool:
    """Whether every file the reader has open is still the file at its path, unchanged (inode, device, size,
    mtime): a file replaced or rewritten since is never read through the old handle."""
    for file, fd in list(reader._fds.items()):
        try:
            a, b = os.fstat(fd), os.stat(file)
        except OSError:
            return False
        if (a.st_ino, a.st_dev, a.st_size, a.st_mtime_ns) != (b.st_ino, b.st_dev, b.st_size, b.st_mtime_ns):
            return False
    return True


def _lease(index: Any) -> Any:
    """A TensorReader over ``index`` for one item: an idle one of the same files if it is still valid, else a new
    one; None when ``index`` is not a source to cache (the item's Readers then open and close their own)."""
    from .checkpoint import CheckpointIndex, TensorReader

    key = _identity(index) if isinstance(index, CheckpointIndex) else None
    if key is None:
        return None
    with _idle_lock:
        pool = _idle.get(key)
        r = pool.pop()[0] if pool else None
        if pool is not None and not pool:
            del _idle[key]
    if r is not None:
        if _same_files(r):
            r.index = index  # the item's cut of the same files' index (names, offsets: what this item reads)
            r.forget_loaded()  # torch files hold no descriptor to compare: loaded again from the file now there
            _count("reused")
            return r
        r.close()
        _count("stale")
    _count("opened")
    return TensorReader(index)


def _count(what: str) -> None:
    with _idle_lock:  # a worker process runs items on several threads at once
        _counts[what] += 1


def _give_back(index: Any, reader: Any, *, keep: bool) -> None:
    """Return a leased reader to the idle pool (closed instead after a failed item); at most READER_CACHE idle."""
    if not keep:
        reader.close()
        return
    key = _identity(index)
    drop = []
    with _idle_lock:
        _idle.setdefault(key, []).append((reader, time.monotonic()))
        _idle.move_to_end(key)
        while sum(len(v) for v in _idle.values()) > READER_CACHE:
            old_key, pool = next(iter(_idle.items()))
            drop.append(pool.pop(0)[0])
            if not pool:
                del _idle[old_key]
        if not _sweeper:
            _schedule_sweep()
    for r in drop:
        r.close()


def _deleted(reader: Any) -> bool:
    """Whether a file the reader holds open has been deleted (no name left: only the descriptor keeps it)."""
    for fd in list(reader._fds.values()):
        try:
            if os.fstat(fd).st_nlink == 0:
                return True
        except OSError:
            return True
    return False


def sweep_idle_readers(now: float | None = None) -> int:
    """Close the idle readers idle for :data:`READER_IDLE_SECONDS` or holding a deleted file; how many were closed.
    Runs on a timer in a worker process while readers are idle (and may be called directly)."""
    now = time.monotonic() if now is None else now
    drop = []
    with _idle_lock:
        for key in list(_idle):
            keep = []
            for r, since in _idle[key]:
                (drop if now - since >= READER_IDLE_SECONDS or _deleted(r) else keep).append((r, since))
            if keep:
                _idle[key] = keep
            else:
                del _idle[key]
        _counts["swept"] += len(drop)
    for r, _ in drop:
        r.close()
    return len(drop)


def _schedule_sweep() -> None:
    """Start the sweep timer (call with ``_idle_lock`` held); it sweeps, then starts again while readers are idle."""
    t = threading.Timer(min(READER_IDLE_SECONDS, 5.0), _sweep_and_reschedule)
    t.daemon = True
    _sweeper.append(t)
    t.start()


def _sweep_and_reschedule() -> None:
    sweep_idle_readers()
    with _idle_lock:
        _sweeper.clear()
        if _idle:
            _schedule_sweep()


def reader_cache_info() -> dict[str, int]:
    """This worker process's reader cache: readers opened, reused, dropped as stale, closed by a sweep (idle too long,
    or a file deleted), idle now (for tests/logs)."""
    with _idle_lock:
        return {**_counts, "idle": sum(len(v) for v in _idle.values())}


class DaskExecutor:
    """Work items on the Dask cluster whose scheduler is at ``address`` (``tcp://host:8786``, or anything
    ``distributed.Client`` takes). Connects on creation (a one-line :class:`ClusterError` naming the address if it
    cannot within ``timeout`` seconds); ``close()`` (or the end of a ``with`` block) disconnects, leaving the cluster
    running. ``workers`` is the cluster's total worker threads when connected; at most ``2 × workers`` items are in
    flight, so a worker's memory stays about one item per thread."""

    def __init__(self, address: str, *, timeout: float | None = None, client: Any = None) -> None:
        self.address = address
        if client is None:
            client = connect(address, timeout=timeout)
        self.client = client
        self.workers = max(1, sum(self.client.nthreads().values()))

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        c, self.client = self.client, None
        if c is not None:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - a scheduler already gone: nothing left to close
                pass

    def map(self, sources: Sequence[Any], items: Sequence[WorkItem], *, cancel: Any = None,
            chunk_elems: int = DEFAULT_ITEM) -> Iterator[Any]:
        """Partials in item order. ``cancel`` is polled while waiting (every 50 ms): the items in flight are
        cancelled on the cluster (``Client.cancel``) and :class:`~explorer.core.errors.Cancelled` is raised; closing
        the iterator cancels what is still queued or running."""
        from distributed import as_completed

        from .checkpoint import CheckpointIndex

        if self.client is None:
            raise ClusterError(f"{self.address}: this cluster executor is closed")
        if not all(isinstance(s, CheckpointIndex) for s in sources):
            raise ClusterError("cluster workers read checkpoints by index only (not readers or in-memory tensors)")
        client = self.client
        window = 2 * self.workers
        order: list[Any] = []  # futures in item order, not yet yielded
        done: dict[str, Any] = {}  # results by future key, as they complete (in any order)
        ac = as_completed(loop=client.loop)
        it = iter(items)
        more = True
        try:
            while True:
                while more and len(order) < window:  # keep the window full
                    item = next(it, None)
                    if item is None:
                        more = False
                        break
                    f = client.submit(run_item, item_sources(sources, item), item, chunk_elems, pure=False)
                    order.append(f)
                    ac.add(f)
                while order and order[0].key in done:  # results go out in item order
                    yield done.pop(order.pop(0).key)
                if not order:
                    if more:
                        continue
                    break
                if is_cancelled(cancel):
                    raise Cancelled("cancelled")
                batch = ac.next_batch(block=False) if ac.has_ready() else []
                if not batch:
                    time.sleep(0.05)
                for f in batch:
                    done[f.key] = _result(f, self.address)
        finally:
            if order:
                client.cancel(order)


def _result(future: Any, address: str) -> Any:
    """A finished future's value; a worker's failure as one line (an ExplorerError from the kernel keeps its text)."""
    try:
        return future.result()
    except ExplorerError:
        raise
    except Exception as e:  # noqa: BLE001 - a lost worker, a killed task: name the cluster
        from .errors import one_line

        raise ClusterError(f"{address}: a cluster worker failed: {type(e).__name__}: {one_line(e)}") from e


def connect(address: str, *, timeout: float | None = None) -> Any:
    """A ``distributed.Client`` on the scheduler at ``address``, or a one-line :class:`ClusterError` (after
    ``timeout`` seconds, default :data:`CONNECT_TIMEOUT`: Dask retries a refused connection until then)."""
    if timeout is None:
        timeout = CONNECT_TIMEOUT
    try:
        from distributed import Client
    except ImportError as e:
        raise ClusterError(f"{address}: running on a Dask cluster needs dask.distributed: pip install '{EXTRA}'") from e
    start = time.monotonic()
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except Exception as e:  # noqa: BLE001 - OSError, TimeoutError, a bad address: one line, never a traceback
        from .errors import one_line

        waited = time.monotonic() - start
        # "within N s" only when the time limit is what ended it; a bad address fails at once
        when = f" within {timeout:g} s" if waited >= 0.9 * timeout else ""
        raise ClusterError(f"{address}: cannot reach a Dask scheduler there{when}: {one_line(e)}") from e
