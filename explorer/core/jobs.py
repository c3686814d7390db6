"""The one protocol for long work (statistics, diff, init check, export): progress and cancel callbacks.

A long job takes ``progress`` and ``cancel`` keyword arguments:

* ``progress(done, total)`` is called as work is done (units are the job's: elements, tensors or bytes). A job that
  names the item it is on (export: the tensor being written) calls ``progress(done, total, what)``; a progress
  that accepts the optional third argument shows it, see ``cli.common.StderrProgress``.
* ``cancel`` is a callable returning True to stop, or anything with ``is_set()`` (a ``threading.Event``). It is
  polled between chunks; the job then raises :class:`Cancelled` (or a subclass, e.g. ``ExportCancelled``) and
  leaves nothing behind.

Generator forms (``iter_diff``, ``iter_init_check``) yield results as they are computed, so a caller can also stop
between yields by closing the generator.
"""
from __future__ import annotations

import contextlib
import gc
import threading
from typing import Any, Callable, Iterator, Protocol

from .errors import Cancelled

__all__ = ["Cancel", "Cancelled", "Progress", "Ticker", "is_cancelled", "quiet_gc"]


class Progress(Protocol):
    """``progress(done, total)``, or ``progress(done, total, what)`` from jobs that name their current item."""

    def __call__(self, done: int, total: int, /, *what: str) -> Any: ...


Cancel = Callable[[], bool]  # or an object with is_set() (threading.Event)


def is_cancelled(cancel: Any) -> bool:
    """Whether ``cancel`` (None, a callable, or an Event-like with ``is_set``) asks to stop."""
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


class Ticker:
    """Counts work done, reports it to ``progress`` and raises ``error`` when ``cancel`` asks to stop."""

    def __init__(
        self,
        total: int,
        progress: Progress | None = None,
        cancel: Any = None,
        *,
        error: Callable[[], BaseException] = lambda: Cancelled("cancelled"),
    ) -> None:
        self.total, self.done, self.progress, self.cancel, self.error = total, 0, progress, cancel, error

    def check(self) -> None:
        """Raise the job's Cancelled when asked to stop."""
        if is_cancelled(self.cancel):
            raise self.error()

    def report(self, done: int | None = None, what: str | None = None) -> None:
        """Tell ``progress`` the current count (``done`` sets it), without the cancel check."""
        if done is not None:
            self.done = done
        if self.progress is not None:
            if what is None:
                self.progress(self.done, self.total)
            else:
                self.progress(self.done, self.total, what)

    def step(self, n: int, what: str | None = None) -> None:
        """``n`` more units done: report, then stop if cancelled."""
        self.done += n
        self.report(what=what)
        self.check()


_gc_lock = threading.Lock()
_gc_depth = 0
_gc_was_enabled = True
_gc_freeze = False


@contextlib.contextmanager
def quiet_gc(*, freeze: bool = False) -> Iterator[None]:
    """No automatic cyclic garbage collection inside the block: process-wide, nesting across threads (the first
    block to enter switches it off, the last to leave restores it as it was).

    Work that makes hundreds of thousands of objects and no garbage cycles (headers of 46k tensors, importing
    torch and transformers, a report of 46k keys) otherwise triggers full collections that walk every object of
    the process, torch's and transformers' modules included: 1.3 of 5.4 CPU seconds of the MoE report
    (benchmarks/results/report.md). Reference counting still frees acyclic garbage at once. ``freeze``: when the
    last block ends, move every object alive to the permanent generation (``gc.freeze``) before collection is
    switched back on, so no later collection scans that long-lived data again (the window: its GUI thread never
    stalls behind a collection); a library call leaves that to its caller."""
    global _gc_depth, _gc_was_enabled, _gc_freeze
    with _gc_lock:
        if _gc_depth == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_depth += 1
        _gc_freeze = _gc_freeze or freeze
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0:
                if _gc_freeze:
                    gc.freeze()
                _gc_freeze = False
                if _gc_was_enabled:
                    gc.enable()
