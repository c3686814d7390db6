"""The GUI's only state: what is open (checkpoint, model spec, key mapping), its Report and display records.

Loading runs in a worker (channel ``"load"``): open headers, build the model on meta, match, and build the
tree items / table rows. Widgets listen to the signals; they never hold their own copy of the state.
Other panels can keep per-session data in ``Session.extras`` and react to ``reportChanged``.
"""
from __future__ import annotations

import os
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from PySide6.QtCore import QObject, Signal

from .workers import Jobs, quiet_gc


@dataclass(frozen=True)
class Source:
    """What to open. ``checkpoint=None`` with ``demo=True`` opens the built-in demo."""

    checkpoint: str | None = None
    config: str | None = None
    arch: str | None = None
    model: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    wrapper: str | None = None
    key_mapping: dict[str, str] | None = None
    auto_fix: bool = False
    demo: bool = False

    def describe(self) -> str:
        name = "demo" if self.demo else os.path.basename(os.path.normpath(self.checkpoint or "")) or "?"
        return f"{name} → {self.arch or self.model or 'config architecture'}"


@dataclass(frozen=True)
class Loaded:
    source: Source
    report: Any  # explorer.core.matching.Report
    tree: Any  # entries.TreeItem
    rows: list  # list[entries.Row]
    tree_index: Any = None  # entries.TreeIndex (search, visibility, look-ups), built in the worker
    table_index: Any = None  # entries.TableIndex (search, sort orders, look-ups), built in the worker
    timings: dict[str, float] = field(default_factory=dict)  # seconds: imports, open, match, display, total

    def timing_text(self) -> str:
        """E.g. "loaded in 0.41 s (+2.9 s first-time import of torch/transformers)"."""
        t = self.timings
        if not t:
            return ""
        text = f"loaded in {t.get('total', 0.0) - t.get('imports', 0.0):.2f} s"
        if t.get("imports", 0.0) >= 0.05:
            text += f" (+{t['imports']:.1f} s first-time import of torch/transformers)"
        return text


def load(source: Source, progress: Callable[[int, int], None] | None = None) -> Loaded:
    """Open + match + build display records and their indexes. Runs in a worker; imports torch/transformers
    on first use (timed apart, so the status bar can say what the report itself cost). The cyclic GC is held
    off meanwhile (``workers.quiet_gc``): its full collections would stall the GUI thread for ~0.3 s each."""
    with quiet_gc():
        return _load(source, progress)


def _load(source: Source, progress: Callable[[int, int], None] | None) -> Loaded:
    t0 = time.perf_counter()
    imports = _import_heavy(source)
    from ..core.matching import report
    from ..core.target import TargetSpec
    from .entries import build_rows, build_tree, index_rows, index_tree

    if source.demo:
        from ..core.demo import build_demo

        demo = build_demo()
        source = replace(source, checkpoint=str(demo.folder), config=str(demo.folder), arch=source.arch or demo.arch)
    if not source.checkpoint:
        raise ValueError("no checkpoint given")
    if progress:
        progress(1, 4)
    target = TargetSpec(checkpoint=source.checkpoint, config=source.config, arch=source.arch, model=source.model,
                        model_kwargs=dict(source.model_kwargs), wrapper=source.wrapper, key_mapping=source.key_mapping,
                        auto_fix=source.auto_fix).resolve()
    if progress:
        progress(2, 4)
    rep = report(target)
    if progress:
        progress(3, 4)
    t1 = time.perf_counter()
    tree, rows = build_tree(rep), build_rows(rep)
    tree_index, table_index = index_tree(tree), index_rows(rows)
    t2 = time.perf_counter()
    return Loaded(source, rep, tree, rows, tree_index, table_index,
                  {"imports": imports, "report": t1 - t0 - imports, "display": t2 - t1, "total": t2 - t0})


def _import_heavy(source: Source) -> float:
    """Import torch (and transformers when a model is needed) if not yet imported; returns the seconds spent."""
    from ..core.target import config_beside

    names = ["torch"] + ([] if source.checkpoint and not (source.config or source.arch or source.model or source.demo)
                         and config_beside(source.checkpoint) is None else ["transformers"])
    todo = [n for n in names if n not in sys.modules]
    if not todo:
        return 0.0
    t = time.perf_counter()
    for n in todo:
        __import__(n)
    if "torch" in todo:
        # leave a core for the GUI thread: statistics run in workers, and torch's intra-op pool would
        # otherwise take every core and starve the event loop (stalls while browsing huge tensors)
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    if "transformers" in todo:
        import transformers.modeling_utils  # noqa: F401  (the lazy module behind every model class)
    return time.perf_counter() - t



class Session(QObject):
    """Holds the open checkpoint and its report; runs the background jobs."""

    loadingStarted = Signal(str)  # what is being opened
    loaded = Signal(object)  # Loaded
    loadFailed = Signal(str)  # one-line message
    busyChanged = Signal(bool)
    initChanged = Signal()  # init_results replaced (a check finished, or a new report cleared them)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.jobs = Jobs(self)
        self.source: Source | None = None
        self.current: Loaded | None = None
        self.reader: Any = None  # TensorReader of the current index
        self.extras: dict[str, Any] = {}
        self.init_results: dict[str, Any] = {}  # on-disk name -> core.fresh.InitResult of the last init check
        self._stats_cache: OrderedDict[tuple, Any] = OrderedDict()
        self.jobs.result.connect(self._on_result)
        self.jobs.error.connect(self._on_error)
        self.jobs.finished.connect(self._on_finished)

    @property
    def report(self) -> Any:
        return self.current.report if self.current else None

    @property
    def busy(self) -> bool:
        return self.jobs.busy("load")

    def open(self, source: Source) -> None:
        """Start loading ``source`` (drops any load in flight)."""
        self.source = source
        self.loadingStarted.emit(source.describe())
        self.jobs.start("load", lambda progress, cancelled: load(source, progress))
        self.busyChanged.emit(True)

    def reload(self, **changes: Any) -> None:
        """Open the current source again, optionally changed (e.g. ``key_mapping=...``, ``arch=...``)."""
        src = self.current.source if self.current else self.source
        if src is not None:
            self.open(replace(src, **changes))

    def set_init_results(self, results: Any) -> None:
        """Publish an init check of the current report (a list of InitResult); the tree, table, filter bar and
        the "Looks untrained" tab all read it from here."""
        self.init_results = {r.name: r for r in results}
        self.initChanged.emit()

    @property
    def untrained(self) -> frozenset[str]:
        """On-disk names the last init check flagged as looking untrained."""
        return frozenset(n for n, r in self.init_results.items() if r.init_like)

    def cached_stats(self, key: tuple) -> Any:
        v = self._stats_cache.get(key)
        if v is not None:
            self._stats_cache.move_to_end(key)
        return v

    def cache_stats(self, key: tuple, value: Any) -> None:
        self._stats_cache[key] = value
        while len(self._stats_cache) > 256:
            self._stats_cache.popitem(last=False)

    def close(self) -> None:
        """Cancel every job, wait for the pool, release the mmaps."""
        self.jobs.shutdown()
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def _on_result(self, channel: str, value: object) -> None:
        if channel != "load":
            return
        from ..core.checkpoint import TensorReader

        assert isinstance(value, Loaded)
        self.jobs.cancel("stats")
        if self.reader is not None:
            self.reader.close()
        self._stats_cache.clear()
        self.current = value
        self.source = value.source
        self.reader = TensorReader(value.report.index)
        self.init_results = {}
        self.loaded.emit(value)
        self.initChanged.emit()

    def _on_error(self, channel: str, msg: str) -> None:
        if channel == "load":
            self.loadFailed.emit(msg)

    def _on_finished(self, channel: str) -> None:
        if channel == "load":
            self.busyChanged.emit(False)
