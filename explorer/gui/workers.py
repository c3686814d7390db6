"""Background jobs as handles (superqt's worker shape, on a QThreadPool). Workers never touch widgets.

``handle = jobs.start(fn, purpose="stats")`` runs ``fn(progress, cancelled)`` in the pool and returns a
``JobHandle`` with its own ``returned(value)`` / ``errored(message)`` / ``progress(done, total)`` / ``finished()``
signals, delivered in the GUI thread. ``progress(done, total)`` raises ``Cancelled`` once the job is cancelled and
``cancelled()`` is the flag core's long functions poll between chunks (their ``cancel=`` callback); a generator
``fn`` is stopped between its yields (each yield is ``(done, total)``; its ``return`` value is the result).

Latest-only per purpose: starting a job CANCELS the running job of the same purpose. A cancelled handle emits
``finished`` at once and nothing after it, so a slot never sees a stale result.

``quiet_gc()`` keeps Python's cyclic garbage collector from stalling the GUI thread while a worker builds
millions of objects (imports, a 46k-tensor report): a full collection holds the GIL for ~0.3 s.
"""
from __future__ import annotations

import contextlib
import inspect
import os
import threading
import traceback
from collections import Counter
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from ..core.errors import Cancelled, ExplorerError
from ..core.errors import one_line as core_one_line
from ..core.jobs import quiet_gc as core_quiet_gc

def quiet_gc() -> contextlib.AbstractContextManager[None]:
    """No automatic cyclic GC inside the block (process-wide; nests across threads, and with the core's own
    blocks). When the last block ends, every object alive is moved to the permanent generation (``gc.freeze``) and
    GC is re-enabled: long-lived data (modules, the report, display records) is never scanned again, so no later
    collection stalls the GUI thread either (``core.jobs.quiet_gc``)."""
    return core_quiet_gc(freeze=True)


def _yield_cpu_to_gui() -> None:
    """Run this worker thread at a lower priority (Linux: per-thread nice), so on a busy machine the GUI
    thread gets a core first and never waits behind a worker streaming a multi-GB tensor."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not permitted: only a scheduling hint
        pass


def one_line(e: BaseException) -> str:
    """A job's failure as the one line the window shows (an ExplorerError's own message, else type: first line)."""
    if isinstance(e, ExplorerError):
        return str(e)
    return f"{type(e).__name__}: {core_one_line(e)}" if str(e).strip() else type(e).__name__


class JobHandle(QObject):
    """One background job. Signals arrive in the GUI thread; none fire after ``cancel()`` except ``finished``
    (emitted once: when the job ends, or at once when it is cancelled)."""

    returned = Signal(object)
    errored = Signal(str)  # one-line message
    progress = Signal(int, int)  # done, total
    finished = Signal()

    # emitted from the worker thread; queued to the slots below (this object lives in the GUI thread)
    _w_returned = Signal(object)
    _w_errored = Signal(str)
    _w_progress = Signal(int, int)
    _w_done = Signal()

    def __init__(self, purpose: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.purpose = purpose
        self._flag = threading.Event()
        self._ended = False
        self._w_returned.connect(self._on_returned)
        self._w_errored.connect(self._on_errored)
        self._w_progress.connect(self._on_progress)
        self._w_done.connect(self._on_done)

    @property
    def running(self) -> bool:
        """Neither finished nor cancelled."""
        return not self._ended

    def is_cancelled(self) -> bool:
        """The flag the job polls (thread-safe)."""
        return self._flag.is_set()

    def cancel(self) -> None:
        """Ask the job to stop at its next progress call or yield; ``finished`` is emitted now."""
        if self._ended:
            return
        self._flag.set()
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self.finished.emit()

    def _on_returned(self, value: object) -> None:
        if not self._ended:
            self.returned.emit(value)

    def _on_errored(self, msg: str) -> None:
        if not self._ended:
            self.errored.emit(msg)

    def _on_progress(self, done: int, total: int) -> None:
        if not self._ended:
            self.progress.emit(done, total)

    def _on_done(self) -> None:
        self._end()
        self.deleteLater()  # the worker has let go of it (cancelled handles linger until their worker ends)


class _Runnable(QRunnable):
    def __init__(self, handle: JobHandle, fn: Callable[..., Any], on_start: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.setAutoDelete(True)
        self.handle, self.fn, self.on_start = handle, fn, on_start

    def run(self) -> None:
        h, flag = self.handle, self.handle._flag
        if flag.is_set():  # cancelled while queued (a newer job of its purpose started): never run it
            h._w_done.emit()
            return
        if self.on_start is not None:
            self.on_start()
        _yield_cpu_to_gui()

        def progress(done: int, total: int) -> None:
            if flag.is_set():
                raise Cancelled("cancelled")
            h._w_progress.emit(int(done), int(total))

        try:
            out = self.fn(progress, flag.is_set)
            if inspect.isgenerator(out):
                out = _drain(out, progress, flag)
        except Cancelled:
            pass
        except Exception as e:  # reported as one line; the GUI stays up
            if os.environ.get("CKPT_EXPLORER_DEBUG"):
                traceback.print_exc()
            if not flag.is_set():
                h._w_errored.emit(one_line(e))
        else:
            if not flag.is_set():
                h._w_returned.emit(out)
        finally:
            h._w_done.emit()


def _drain(gen: Any, progress: Callable[[int, int], None], flag: threading.Event) -> Any:
    """Run a generator job: each yield is ``(done, total)`` (or None); stop between yields once cancelled."""
    try:
        while True:
            step = next(gen)
            if flag.is_set():
                gen.close()
                raise Cancelled("cancelled")
            if step is not None:
                progress(*step)
    except StopIteration as stop:
        return stop.value


class Jobs(QObject):
    """Starts job handles; one running job per purpose (a new one cancels the old)."""

    def __init__(self, parent: QObject | None = None, *, pool: QThreadPool | None = None) -> None:
        super().__init__(parent)
        self.pool = pool or QThreadPool(self)
        if pool is None:
            self.pool.setMaxThreadCount(3)
        self._current: dict[str, JobHandle] = {}
        self._count_lock = threading.Lock()
        self.started: Counter[str] = Counter()  # per purpose: jobs whose function ran (a cancelled queued one never does)

    def start(self, fn: Callable[..., Any], *, purpose: str) -> JobHandle:
        """Run ``fn(progress, cancelled)`` in the pool; cancels the running job of ``purpose`` first (a job still
        queued then never runs)."""
        self.cancel(purpose)
        h = JobHandle(purpose, self)
        self._current[purpose] = h
        h.finished.connect(lambda h=h: self._forget(h))
        self.pool.start(_Runnable(h, fn, on_start=lambda: self._count(purpose)))
        return h

    def _count(self, purpose: str) -> None:
        with self._count_lock:
            self.started[purpose] += 1

    def current(self, purpose: str) -> JobHandle | None:
        """The running job of ``purpose`` (None when idle)."""
        return self._current.get(purpose)

    def busy(self, purpose: str) -> bool:
        return purpose in self._current

    def cancel(self, purpose: str) -> None:
        h = self._current.pop(purpose, None)
        if h is not None:
            h.cancel()

    def cancel_all(self) -> None:
        for p in list(self._current):
            self.cancel(p)

    def shutdown(self, timeout_ms: int = 300) -> bool:
        """Cancel everything (queued jobs never run) and wait at most ``timeout_ms`` for the running ones, which stop
        at their next cancel check (between chunks); True when the pool is idle. Closing the window never waits
        longer: a job in a long step ends on its own, its results unseen."""
        self.cancel_all()
        self.pool.clear()
        return self.pool.waitForDone(timeout_ms)

    def _forget(self, h: JobHandle) -> None:
        if self._current.get(h.purpose) is h:
            del self._current[h.purpose]
