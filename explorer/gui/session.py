"""The GUI's typed state and its signals (napari-style: widgets and item models adapt it, never copy it).

State: the open ``source`` and its ``current`` report (``Loaded``), the ``selection`` shown in the details panel,
the ``plan`` with its undo stack, the last init check (``init_results``), the A-vs-B ``comparison`` and which
histogram ``overlay`` is shown. Loading runs in a job (purpose ``"load"``): open headers, build the model on meta,
match, build the tree items / table rows. Panels change state through the methods here; everyone else listens.
"""
from __future__ import annotations

import os
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Callable

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from .request import OpenRequest, Source
from .workers import JobHandle, Jobs, quiet_gc

__all__ = ["ClassProblem", "Comparison", "Loaded", "OpenRequest", "Overlay", "Selection", "Session", "Source", "load"]


@dataclass(frozen=True)
class ClassProblem:
    """``--arch`` named no transformers class: what was wrong, the closest name and the config family's classes."""

    message: str  # "--arch BertForMaskedLMM: unknown transformers model class; did you mean BertForMaskedLM?"
    arch: str
    suggestion: str | None
    heads: tuple[str, ...]


@dataclass(frozen=True)
class Loaded:
    source: Source
    report: Any  # explorer.core.matching.Report
    tree: Any  # entries.TreeItem
    rows: list  # list[entries.Row]
    tree_index: Any = None  # entries.TreeIndex (search, visibility, look-ups), built in the worker
    table_index: Any = None  # entries.TableIndex (search, sort orders, look-ups), built in the worker
    timings: dict[str, float] = field(default_factory=dict)  # seconds: imports, report, display, total; cached: 1.0
    class_problem: ClassProblem | None = None  # the class asked for (--arch) does not exist: loaded with the config's
    adapter: Any = None  # explorer.core.adapter.AdapterReport when an adapter is shown (``report`` is its view)

    def timing_text(self) -> str:
        """E.g. "loaded in 0.41 s (+2.9 s first-time import of torch/transformers)"."""
        t = self.timings
        if not t:
            return ""
        text = f"loaded in {t.get('total', 0.0) - t.get('imports', 0.0):.2f} s"
        if t.get("cached"):
            text += " (report from the cache)"
        elif t.get("imports", 0.0) >= 0.05:
            text += f" (+{t['imports']:.1f} s first-time import of torch/transformers)"
        return text


@dataclass(frozen=True)
class Selection:
    """What the details panel shows: a title, the on-disk tensors to measure, and description rows."""

    title: str
    kind: str
    names: tuple[str, ...]  # on-disk tensors (empty: nothing to measure)
    facts: tuple[tuple[str, str], ...]
    is_module: bool = False
    empty_reason: str = ""


class Overlay(str, Enum):
    """What the details histogram draws over a single tensor's own histogram."""

    FRESH_INIT = "fresh init"  # the owning module's own initialisation (init panel)
    CHECKPOINT_B = "checkpoint B"  # the same tensor in the compared checkpoint (compare panel)


@dataclass(frozen=True)
class Comparison:
    """A finished A-vs-B diff of the current report's checkpoint against ``path``."""

    path: str
    entries: tuple  # core.diff DiffEntry
    rollup: tuple  # core.diff ModuleDiff
    index_b: Any  # CheckpointIndex of B

    def entry_for_a(self, name: str) -> Any:
        by = self.__dict__.get("_by_a")
        if by is None:
            by = {e.name_a: e for e in self.entries if e.name_a}
            object.__setattr__(self, "_by_a", by)
        return by.get(name)


class _PlanCommand(QUndoCommand):
    """One plan edit: swap the session's plan between ``before`` and ``after``."""

    def __init__(self, session: Session, before: Any, after: Any, text: str) -> None:
        super().__init__(text)
        self.session, self.before, self.after = session, before, after

    def redo(self) -> None:
        self.session._show_plan(self.after)

    def undo(self) -> None:
        self.session._show_plan(self.before)


def load(source: Source, progress: Callable[[int, int], None] | None = None, cancel: Any = None,
         status: Callable[[str], Any] | None = None, preview: Callable[[Loaded], Any] | None = None) -> Loaded:
    """Open + match + build display records and their indexes. Runs in a worker.

    A report the cache holds (``core.report_cache``: same headers, files, config, options, library versions) is
    read from it without importing torch or transformers. Otherwise ``preview`` (if given) first gets the
    checkpoint's tensors as read from the headers (a checkpoint-only ``Loaded``, before torch is imported), then
    torch/transformers are imported (timed apart, so the status bar can say what the report itself cost), the
    report is made and stored. The cyclic GC is held off meanwhile (``workers.quiet_gc``): its full collections
    would stall the GUI thread for ~0.3 s each."""
    with quiet_gc():
        return _load(source, progress, cancel, status, preview)


def _load(source: Source, progress: Callable[[int, int], None] | None, cancel: Any = None,
          status: Callable[[str], Any] | None = None, preview: Callable[[Loaded], Any] | None = None) -> Loaded:
    t0 = time.perf_counter()
    imports = 0.0
    cached = False
    from ..core import report_cache

    if source.demo:
        from ..core.demo import build_demo

        demo = build_demo()
        source = replace(source, checkpoint=str(demo.folder), config=str(demo.folder), arch=source.arch or demo.arch)
    adapter = problem = None
    if source.adapter:
        imports = _import_heavy(source)
        from ..core.adapter_match import match_adapter
        from ..core.adapter_view import adapter_view

        if progress:
            progress(1, 4)
        adapter = match_adapter(source.adapter, base=source.checkpoint, config=None if source.checkpoint else source.config,
                                arch=source.arch, deltas=True)
        rep = adapter_view(adapter)
    elif not source.checkpoint:
        raise ValueError("no checkpoint given")
    else:
        if progress:
            progress(1, 4)

        def headers(done: int, total: int, what: str = "") -> None:  # a remote source's header fetch, file by file
            if status is not None:
                status(f"fetching headers: {done}/{total} file(s), {what}")

        target = target_spec(source).resolve(progress=headers, cancel=cancel)  # cancelled: stops between shards
        key, rep = report_cache.lookup(target, use_cache=source.use_cache)
        cached = rep is not None
        if rep is None:
            from ..core.matching import checkpoint_only

            if preview is not None and target.has_model:  # the tensors as on disk while torch is imported
                t = time.perf_counter()
                preview(_display(source, checkpoint_only(target.index), {"open": t - t0}, t))
            imports = _import_heavy(source)
            from ..core.classes import UnknownClass
            from ..core.matching import report

            if progress:
                progress(2, 4)
            try:
                rep = report(target)
                report_cache.store(key, rep)
            except UnknownClass as e:  # a typo in --arch: load with the config's own class, the banner offers the right one
                problem = ClassProblem(str(e), e.arch, e.suggestion, e.heads)
                source = replace(source, arch=None)
                rep = report(target_spec(source).resolve(index=target.index))
    if progress:
        progress(3, 4)
    t1 = time.perf_counter()
    timings = {"imports": imports, "report": t1 - t0 - imports}
    if cached:
        timings["cached"] = 1.0
    return _display(source, rep, timings, t0, problem, adapter)


def _display(source: Source, rep: Any, timings: dict[str, float], t0: float, problem: ClassProblem | None = None,
             adapter: Any = None) -> Loaded:
    """``rep`` with its tree items, table rows and their indexes (``timings`` + display and total seconds)."""
    from .models.entries import build_rows, build_tree, index_rows, index_tree

    t1 = time.perf_counter()
    tree, rows = build_tree(rep), build_rows(rep)
    tree_index, table_index = index_tree(tree), index_rows(rows)
    t2 = time.perf_counter()
    return Loaded(source, rep, tree, rows, tree_index, table_index,
                  {**timings, "display": t2 - t1, "total": t2 - t0}, problem, adapter)


def target_spec(source: Source) -> Any:
    """The core ``TargetSpec`` of ``source`` (resolving it applies the "config.json beside the checkpoint" rule,
    in core only)."""
    from ..core.target import TargetSpec

    return TargetSpec(checkpoint=source.checkpoint, config=source.config, arch=source.arch, model=source.model,
                      model_kwargs=dict(source.model_kwargs), wrapper=source.wrapper, key_mapping=source.key_mapping,
                      auto_fix=source.auto_fix)


def _import_heavy(source: Source | None) -> float:
    """Import torch (and transformers when a model is needed) if not yet imported; returns the seconds spent.
    ``source`` None: torch alone."""
    from ..core.target import config_beside

    names = ["torch"] + ([] if source is None or source.checkpoint and not source.adapter
                         and not (source.config or source.arch or source.model or source.demo)
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
    """Holds the open checkpoint and everything derived from it; runs the background jobs."""

    loadingStarted = Signal(str)  # what is being opened
    loaded = Signal(object)  # Loaded
    previewed = Signal(object)  # Loaded, checkpoint only: the tensors from the headers while the report is made
    _previewReady = Signal(int, object)  # (load generation, Loaded), from the worker
    loadFailed = Signal(str)  # one-line message
    loadStatus = Signal(str)  # what a load is doing now (a remote source: "headers 3/27 files, 1.2 MiB transferred")
    busyChanged = Signal(bool)
    selectionChanged = Signal(object)  # Selection | None
    planChanged = Signal(object)  # Plan | None
    initChanged = Signal()  # init_results replaced (a check finished, or a new report cleared them)
    initCheckRequested = Signal()  # someone (the filter chip) wants an init check run
    compareChanged = Signal(object)  # the path of checkpoint B (str) or None: a comparison should (re)start
    comparisonChanged = Signal(object)  # Comparison | None
    overlayChanged = Signal(object)  # Overlay

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.jobs = Jobs(self)
        self.source: Source | None = None
        self.current: Loaded | None = None
        self.reader: Any = None  # TensorReader of the current index
        self.selection: Selection | None = None
        self.plan: Any = None  # core.plan.Plan (None: no model to plan for)
        self.plan_entries: dict[str, Any] = {}  # Plan.resolve(report)
        self.undo_stack = QUndoStack(self)
        self.init_results: dict[str, Any] = {}  # on-disk name -> core.fresh.InitResult of the last init check
        self.compare_path: str | None = None  # checkpoint B (kept across reports: --compare, drops, the menu)
        self.comparison: Comparison | None = None
        self.overlay = Overlay.FRESH_INIT
        self._fresh: tuple[Any, Any] | None = None  # (report, core.fresh.FreshInit), built by a worker
        self._stats_cache: OrderedDict[tuple, Any] = OrderedDict()
        self._load_job: JobHandle | None = None
        self._generation = 0  # of the last load started: a preview of an earlier one is not shown
        self._previewReady.connect(self._on_preview)

    @property
    def report(self) -> Any:
        return self.current.report if self.current else None

    @property
    def adapter(self) -> Any:
        """The AdapterReport shown (None: a plain checkpoint)."""
        return self.current.adapter if self.current else None

    @property
    def busy(self) -> bool:
        return self._load_job is not None and self._load_job.running

    # ------------------------------------------------------------------ opening
    def open(self, source: Source) -> None:
        """Start loading ``source`` (cancels any load in flight)."""
        self.source = source
        self.loadingStarted.emit(source.describe())
        status = self.loadStatus.emit
        self._generation += 1
        gen = self._generation
        h = self._load_job = self.jobs.start(
            lambda progress, cancelled: load(source, progress, cancelled, status,
                                             lambda value: self._previewReady.emit(gen, value)),
            purpose="load")
        h.returned.connect(self._on_loaded)
        h.errored.connect(self.loadFailed.emit)
        h.finished.connect(lambda: self.busyChanged.emit(False) if h is self._load_job else None)
        self.busyChanged.emit(True)

    def reload(self, **changes: Any) -> None:
        """Open the current source again, optionally changed (e.g. ``key_mapping=...``, ``arch=...``)."""
        src = self.current.source if self.current else self.source
        if src is not None:
            self.open(replace(src, **changes))

    def _on_preview(self, generation: int, value: Loaded) -> None:
        if generation == self._generation and self.busy:  # not a load since replaced, or finished
            self.previewed.emit(value)

    def _on_loaded(self, value: Loaded) -> None:
        from ..core.checkpoint import TensorReader

        self.jobs.cancel("stats")
        if self.reader is not None:
            self.reader.close()
        self._stats_cache.clear()
        self.current = value
        self.source = value.source
        if value.adapter is not None:  # also serves ΔW:<module> of each LoRA module, streamed
            from ..core.adapter_view import DeltaReader, lora_pairs

            self.reader = DeltaReader(value.report.index, lora_pairs(value.adapter))
        else:
            self.reader = TensorReader(value.report.index)
        self.init_results = {}
        self.comparison = None
        self._fresh = None
        self.selection = None
        self.undo_stack.clear()
        from ..core.plan import Plan

        # an adapter's view is not a checkpoint to patch (merge-export it from the CLI: export BASE --adapter)
        plannable = value.report.has_model and value.adapter is None
        self._show_plan(Plan.from_report(value.report) if plannable else None, emit=False)
        self.loaded.emit(value)
        self.planChanged.emit(self.plan)
        self.initChanged.emit()
        self.comparisonChanged.emit(None)
        if self.compare_path:
            self.compareChanged.emit(self.compare_path)
        if value.timings.get("cached") and not {"torch", "transformers"} <= sys.modules.keys():
            # the report came from the cache: import torch now, in the background and as a load would (its threads
            # leave a core to the GUI), before the first histogram asks for it; and transformers when a model is
            # in play (2-4 s of imports, torch.distributed and sympy among them: an import cannot be cancelled, so
            # it is done here rather than inside the first fresh-init overlay or "Looks untrained" check)
            source = value.source
            self.jobs.start(lambda progress, cancelled: _import_heavy(source), purpose="imports")

    # ------------------------------------------------------------------ selection and overlay
    def select(self, sel: Selection | None) -> None:
        """Show ``sel`` in the details panel (and follow it in every panel)."""
        self.selection = sel
        self.selectionChanged.emit(sel)

    def set_overlay(self, overlay: Overlay) -> None:
        if overlay is not self.overlay:
            self.overlay = overlay
            self.overlayChanged.emit(overlay)

    def ab_entry(self, sel: Selection | None) -> Any:
        """The diff entry whose A/B overlay the histogram shows for ``sel``: when the overlay choice is checkpoint B,
        for a single tensor present in both checkpoints with the same shape. Else None."""
        cmp = self.comparison
        if cmp is None or self.overlay is not Overlay.CHECKPOINT_B or sel is None or sel.is_module or len(sel.names) != 1:
            return None
        from ..core.diff import CHANGED, SAME

        e = cmp.entry_for_a(sel.names[0])
        return e if e is not None and e.name_b is not None and e.status in (SAME, CHANGED) else None

    def overlay_for(self, sel: Selection | None) -> Overlay:
        """Which overlay the histogram shows for ``sel``: checkpoint B where it applies, else the fresh init."""
        return Overlay.CHECKPOINT_B if self.ab_entry(sel) is not None else Overlay.FRESH_INIT

    # ------------------------------------------------------------------ plan
    def set_plan(self, plan: Any, text: str) -> None:
        """Replace the plan as one undoable step (nothing without a model, or when unchanged)."""
        if self.plan is None or plan == self.plan:
            return
        self.undo_stack.push(_PlanCommand(self, self.plan, plan, text))

    def load_plan(self, path: str) -> None:
        """Load a plan file as one undoable step. Raises ExplorerError naming the file."""
        from ..core.plan import load_plan

        plan = load_plan(path)
        if self.report is not None:
            plan.resolve(self.report)  # a rule too slow for these keys fails here (PlanError), before it is pushed
        self.set_plan(plan, f"Load plan {os.path.basename(path)}")

    def _show_plan(self, plan: Any, *, emit: bool = True) -> None:
        rep = self.report
        self.plan = plan
        self.plan_entries = plan.resolve(rep) if plan is not None and rep is not None else {}
        if emit:
            self.planChanged.emit(plan)

    def input_files(self) -> list[str]:
        """Every file the window read or was asked to read (checkpoint and config, checkpoint B): whatever the
        window writes (screenshot, histogram PNG/CSV, plan) never replaces one of them."""
        from ..core.outputs import named_inputs, report_inputs

        src = self.current.source if self.current is not None else self.source
        out: list[str] = []
        if src is not None:
            out += map(str, named_inputs(src.checkpoint, src.config, src.adapter))
        if self.current is not None:
            out += report_inputs(self.current.report)
            if self.current.adapter is not None:
                out += [self.current.adapter.adapter.config_file, self.current.adapter.adapter.weights]
        out += map(str, named_inputs(self.compare_path))
        if self.comparison is not None:
            out += [self.comparison.index_b.path, *self.comparison.index_b.files]
        return list(dict.fromkeys(out))

    # ------------------------------------------------------------------ init check
    def set_init_results(self, results: Any) -> None:
        """Publish an init check of the current report (a list of InitResult); the tree, table, filter bar and
        the "Looks untrained" tab all read it from here."""
        self.init_results = {r.name: r for r in results}
        self.initChanged.emit()

    def request_init_check(self) -> None:
        self.initCheckRequested.emit()

    @property
    def untrained(self) -> frozenset[str]:
        """On-disk names the last init check flagged as looking untrained."""
        return frozenset(n for n, r in self.init_results.items() if r.init_like)

    def fresh_init(self) -> Any:
        """The current report's FreshInit if a worker built one (pass it to the next job), else None."""
        return self._fresh[1] if self._fresh is not None and self._fresh[0] is self.report else None

    def keep_fresh_init(self, report: Any, fi: Any) -> None:
        """Remember a FreshInit a job built for ``report`` (GUI thread, from the job's result)."""
        if report is self.report:
            self._fresh = (report, fi)

    # ------------------------------------------------------------------ comparison
    def compare_with(self, path: str | None) -> None:
        """Compare the open checkpoint with ``path`` (B); the compare panel runs the diff."""
        self.compare_path = os.path.abspath(path) if path else None
        self.comparison = None
        self.comparisonChanged.emit(None)
        self.compareChanged.emit(self.compare_path)

    def set_comparison(self, cmp: Comparison | None) -> None:
        self.comparison = cmp
        self.comparisonChanged.emit(cmp)

    # ------------------------------------------------------------------ statistics cache
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
        """Cancel every job and release the mmaps; returns at once (at most ~0.3 s): a job in a long step stops at
        its next cancel check, and then keeps the reader it holds until it ends."""
        idle = self.jobs.shutdown()
        if self.reader is not None:
            if idle:
                self.reader.close()
            self.reader = None
