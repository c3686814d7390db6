"""Background jobs on a QThreadPool. Workers never touch widgets: they report through queued signals.

A job is a function ``fn(progress, cancelled) -> result`` where ``progress(done, total)`` reports and
``cancelled()`` says when to stop (raise ``Cancelled``). Every job carries a generation number per channel;
``Jobs.is_current`` tells a slot whether its result is stale (a newer job on the same channel started).

``quiet_gc()`` keeps Python's cyclic garbage collector from stalling the GUI thread while a worker builds
millions of objects (imports, a 46k-tensor report): a full collection holds the GIL for ~0.3 s.
"""
from __future__ import annotations

import contextlib
import gc
import os
import threading
import traceback
from typing import Any, Callable, Iterator

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal


_gc_lock = threading.Lock()
_gc_depth = 0
_gc_was_enabled = True


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """No automatic cyclic GC inside the block (process-wide; nests across threads). When the last block
    ends, every object alive is moved to the permanent generation (``gc.freeze``) and GC is re-enabled:
    long-lived data (modules, the report, display records) is never scanned again, so no later collection
    stalls the GUI thread either. Reference counting still frees acyclic garbage at once."""
    global _gc_depth, _gc_was_enabled
    with _gc_lock:
        if _gc_depth == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0:
                gc.freeze()
                if _gc_was_enabled:
                    gc.enable()


from ..core.errors import Cancelled  # noqa: E402  (one cancel exception for core and GUI)


def _yield_cpu_to_gui() -> None:
    """Run this worker thread at a lower priority (Linux: per-thread nice), so on a busy machine the GUI
    thread gets a core first and never waits behind a worker streaming a multi-GB tensor."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not permitted: only a scheduling hint
        pass


class _Signals(QObject):
    result = Signal(str, int, object)  # channel, generation, value
    error = Signal(str, int, str)  # channel, generation, one-line message
    progress = Signal(str, int, int, int)  # channel, generation, done, total
    done = Signal(str, int)


class _Job(QRunnable):
    def __init__(self, channel: str, gen: int, fn: Callable[..., Any], signals: _Signals, flag: threading.Event) -> None:
        super().__init__()
        self.setAutoDelete(True)
        self.channel, self.gen, self.fn, self.signals, self.flag = channel, gen, fn, signals, flag

    def run(self) -> None:
        ch, gen, s = self.channel, self.gen, self.signals
        _yield_cpu_to_gui()

        def progress(done: int, total: int) -> None:
            if self.flag.is_set():
                raise Cancelled()
            s.progress.emit(ch, gen, int(done), int(total))

        try:
            value = self.fn(progress, self.flag.is_set)
        except Cancelled:
            pass
        except Exception as e:  # reported as one line; the GUI stays up
            from ..core.errors import ExplorerError

            if isinstance(e, ExplorerError):
                msg = str(e)
            else:
                lines = str(e).strip().splitlines()
                msg = f"{type(e).__name__}: {lines[0] if lines else ''}"
                if os.environ.get("CKPT_EXPLORER_DEBUG"):
                    traceback.print_exc()
            if not self.flag.is_set():
                s.error.emit(ch, gen, msg)
        else:
            if not self.flag.is_set():
                s.result.emit(ch, gen, value)
        finally:
            s.done.emit(ch, gen)


class Jobs(QObject):
    """Starts jobs per channel, cancels the previous job of a channel, drops stale results."""

    result = Signal(str, object)  # channel, value (current generation only)
    error = Signal(str, str)
    progress = Signal(str, int, int)
    finished = Signal(str)  # the current job of a channel ended (ok, error or cancelled)

    def __init__(self, parent: QObject | None = None, *, pool: QThreadPool | None = None) -> None:
        super().__init__(parent)
        self.pool = pool or QThreadPool(self)
        if pool is None:
            self.pool.setMaxThreadCount(3)
        self._gen: dict[str, int] = {}
        self._flags: dict[str, threading.Event] = {}
        self._running: dict[str, int] = {}
        self._signals = _Signals(self)  # lives in the GUI thread; queued emissions from workers
        self._signals.result.connect(self._on_result)
        self._signals.error.connect(self._on_error)
        self._signals.progress.connect(self._on_progress)
        self._signals.done.connect(self._on_done)

    def start(self, channel: str, fn: Callable[..., Any]) -> int:
        """Run ``fn(progress, cancelled)`` in the pool; cancels the channel's previous job. Returns its generation."""
        self.cancel(channel)
        gen = self._gen.get(channel, 0) + 1
        self._gen[channel] = gen
        flag = threading.Event()
        self._flags[channel] = flag
        self._running[channel] = self._running.get(channel, 0) + 1
        self.pool.start(_Job(channel, gen, fn, self._signals, flag))
        return gen

    def cancel(self, channel: str) -> None:
        flag = self._flags.pop(channel, None)
        if flag is not None:
            flag.set()

    def cancel_all(self) -> None:
        for ch in list(self._flags):
            self.cancel(ch)

    def is_current(self, channel: str, gen: int) -> bool:
        return self._gen.get(channel) == gen and channel in self._flags

    def busy(self, channel: str) -> bool:
        return channel in self._flags

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Cancel everything and wait for the pool (call on close)."""
        self.cancel_all()
        return self.pool.waitForDone(timeout_ms)

    def _on_result(self, ch: str, gen: int, value: object) -> None:
        if self.is_current(ch, gen):
            self.result.emit(ch, value)

    def _on_error(self, ch: str, gen: int, msg: str) -> None:
        if self.is_current(ch, gen):
            self.error.emit(ch, msg)

    def _on_progress(self, ch: str, gen: int, done: int, total: int) -> None:
        if self.is_current(ch, gen):
            self.progress.emit(ch, done, total)

    def _on_done(self, ch: str, gen: int) -> None:
        if self._gen.get(ch) == gen:
            # finished after result/error were delivered (same queue, same order)
            self._flags.pop(ch, None)
            self.finished.emit(ch)
