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
"""
from __future__ import annotations

import os
import time
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
    """What a cluster worker runs for one item: its own readers over the item's indexed paths, the item's kernel."""
    readers = Readers(sources, chunk_elems)
    try:
        return item.kernel(readers, item)
    finally:
        readers.close()


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
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except Exception as e:  # noqa: BLE001 - OSError, TimeoutError, a bad address: one line, never a traceback
        from .errors import one_line

        raise ClusterError(f"{address}: cannot reach a Dask scheduler there within {timeout:g} s: {one_line(e)}") from e
