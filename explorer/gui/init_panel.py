"""The "Looks untrained" tab and the fresh-init overlay in the details histogram.

Install with ``install_init_panel(window)``.

- Overlay: when the details panel has drawn a single tensor's histogram, the tensor's owning module is
  materialised with the model's own init (``explorer.core.fresh.FreshInit``, one module, seeded) in a worker on
  the ``"fresh"`` channel; its histogram over the same range is drawn as an overlay ("fresh init"), and the
  two distributions' figures and the KS verdict are shown side by side under the stats.
- Init check: the whole checkpoint against fresh inits (``iter_init_check``), in a worker on the
  ``"init_check"`` channel with progress and cancel; a sortable table with a "looks untrained" column, a
  filter, and a per-layer roll-up. Selecting a row selects the tensor in the session (tree, table and details
  panel, with its fresh-init overlay); selecting a tensor elsewhere selects its row here.
- On the "Compare A/B" tab the details histogram overlays checkpoint B instead (``ComparePanel.entry_for``).
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from ..core.fmt import safe_text
from ..core.fmt import short_float as _num
from . import palette
from .badges import KeyDelegate
from .records import JobProgress, RecordProxy, RecordTable, RecordTableModel, sortable

UNTRAINED = "✗ looks untrained"


class InitPanel(QWidget):
    """Init-check results for the open checkpoint, and the fresh-init overlay of the details histogram."""

    checkReady = Signal(object)  # list[InitResult]
    overlayReady = Signal(object)  # (names, fresh TensorStats, InitResult)

    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self.window = window
        self.session = window.session
        self.details = window.details
        self.results: list[Any] = []
        self._fresh: Any = None  # (report id, FreshInit)

        self.btn_run = QPushButton("Check for untrained tensors")
        self.btn_run.setToolTip("Compare every tensor with the model's own fresh initialisation (one module at a time)")
        self.btn_run.clicked.connect(self.run)
        self.job_progress = JobProgress(self.session.jobs, "init_check", on_cancel=self.cancel)
        self.only_flagged = QCheckBox("only “looks untrained”")
        self.only_flagged.toggled.connect(self._refilter)
        self.summary = QLabel("not run yet")
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        top = QHBoxLayout()
        top.addWidget(self.btn_run)
        top.addWidget(self.summary, 1)
        top.addWidget(self.job_progress)
        top.addWidget(self.only_flagged)

        def bg(rec: Any, col: int) -> QColor | None:
            return palette.tint("missing") if col == 1 and rec.init_like else None

        self.model = RecordTableModel([
            ("tensor", lambda r: r.name, lambda r: r.name),
            ("looks untrained", lambda r: UNTRAINED if r.init_like else ("✓ trained" if r.kind in ("random", "constant") else "—"),
             lambda r: (0 if r.init_like else 1 if r.kind in ("random", "constant") else 2)),
            ("score", lambda r: _score(r.score), lambda r: sortable(r.score)),
            ("KS D", lambda r: _num(r.ks), lambda r: sortable(r.ks)),
            ("kind", lambda r: r.kind, lambda r: r.kind),
            ("details", lambda r: r.details, lambda r: r.details),
        ], self, background=bg)
        self.table = RecordTable(self.model, RecordProxy(self))
        self.proxy = self.table.proxy
        self.table.fit_columns(("e.l.0.attention.self.query.weight", UNTRAINED, "1.5e-85", "0.04425", "constant",
                                "init is constant 0; 100.0% of values equal it"))
        self._key_delegate = KeyDelegate(self)  # dotted names shrink component-wise, layer numbers kept
        self.table.sortByColumn(1, Qt.SortOrder.AscendingOrder)
        # on-disk name: the table row, the tree item, the details panel
        self.table.recordChosen.connect(lambda r: self.window.select_tensor(r.name))
        self.table.doubleClicked.connect(lambda idx: self.window.select_tensor(self.table.record_at(idx).name))

        self.roll_model = RecordTableModel([
            ("module / layer", lambda m: m[0], lambda m: m[0]),
            ("look untrained", lambda m: f"{m[1]}/{m[2]}", lambda m: m[1]),
        ], self, background=lambda m, c: palette.tint("missing") if m[1] else None)
        self.roll_table = RecordTable(self.roll_model, RecordProxy(self))
        # the module: its pooled histogram in the details panel
        self.roll_table.recordChosen.connect(lambda m: self.window.select_key(m[0]))
        self.roll_table.fit_columns(("", "16/16"), stretch_first=True)
        for view in (self.table, self.roll_table):
            view.setItemDelegateForColumn(0, self._key_delegate)
        self.roll_table.sortByColumn(1, Qt.SortOrder.DescendingOrder)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.table)
        split.addWidget(self.roll_table)
        split.setSizes([640, 280])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(split, 1)
        self._set_busy(False)

        # the fresh-init figures and verdict, under the details histogram
        self.overlay_label = self.details.histogram_note

        jobs = self.session.jobs
        jobs.result.connect(self._on_result)
        jobs.error.connect(self._on_error)
        jobs.finished.connect(self._on_finished)
        self.session.loaded.connect(self._on_loaded)
        self.details.statsReady.connect(self._on_stats)
        window.selectionChanged.connect(self._on_selection_changed)

    # ------------------------------------------------------------------ init check
    def run(self) -> None:
        rep = self.session.report
        if rep is None:
            return
        if rep.spec is None:
            self.summary.setText("needs a model: open a checkpoint with a config.json (or choose one)")
            return
        index, spec, km = rep.index, rep.spec, rep.key_mapping
        self.results = []
        self.model.set_records([])
        self.roll_model.set_records([])
        self.summary.setText("checking…")
        self._set_busy(True)

        def job(progress: Any, cancelled: Any) -> Any:
            from ..core.fresh import init_check, rollup_init

            res = init_check(index, spec, key_mapping=dict(km) if km else None, progress=progress, cancel=cancelled)
            return res, rollup_init(res)

        self.session.jobs.start("init_check", job)

    def run_before_ready(self, *, max_values: int = 200_000_000) -> None:
        """For screenshots: run the init check on a newly loaded report (when a model is known and the checkpoint
        is small enough to check in seconds) before the window reports ready, so badges and chip are in the shot."""
        def prepare() -> None:
            rep = self.session.report
            if rep is not None and rep.spec is not None and rep.index.total_params <= max_values:
                self.window.hold_ready("prepare")
                self.run()

        self.window.readyLoaded.connect(prepare)

    def cancel(self) -> None:
        self.session.jobs.cancel("init_check")
        self._set_busy(False)
        self.summary.setText("cancelled")

    def flagged(self) -> list[str]:
        return [r.name for r in self.results if r.init_like]

    # ------------------------------------------------------------------ overlay
    def _fresh_init(self, rep: Any) -> Any:
        """One FreshInit per report (built lazily in the worker; the meta model is cheap)."""
        from ..core.fresh import FreshInit
        from ..core.model import build_model

        cached = self._fresh
        if cached is not None and cached[0] is rep:
            return cached[1]
        default = rep.index.folder if not (rep.spec.config or rep.spec.model) else None
        fi = FreshInit(build_model(rep.spec, checkpoint_dtype=rep.index.first_float_dtype(), default_config=default), seed=0)
        self._fresh = (rep, fi)
        return fi

    def _compare_owns(self, sel: Any) -> bool:
        cmp = getattr(self.window, "compare_panel", None)
        return cmp is not None and cmp.entry_for(sel) is not None

    def _on_stats(self, st: Any) -> None:
        sel = self.details.selection
        if self._compare_owns(sel):
            return  # the A/B overlay is drawn instead
        self.details.set_note("")
        rep = self.session.report
        if sel is None or rep is None or rep.spec is None or sel.is_module or len(sel.names) != 1 or not st.counts:
            return
        name = sel.names[0]
        ck = rep.checkpoint_keys.get(name)
        if ck is None or ck.status.value != "matched" or len(ck.targets) != 1:
            return
        key = ck.targets[0]
        reader = self.session.reader
        names, edges, bins = sel.names, (st.edges[0], st.edges[-1]), len(st.counts)

        def job(progress: Any, cancelled: Any) -> Any:
            from ..core.fresh import compare_to_init
            from ..core.stats import tensor_stats

            fi = self._fresh_init(rep)
            fresh = fi.tensor(key)
            if fresh is None:
                return names, None, None
            fst = tensor_stats(fresh, key, bins=bins, hist_range=edges if edges[1] > edges[0] else None)
            res = compare_to_init(name, key, reader.flat(name), fresh, is_buffer=fi.is_buffer(key))
            return names, fst, res

        self.window.hold_ready("overlay")  # a screenshot waits for the overlay too
        self.session.jobs.start("fresh", job)

    def _show_overlay(self, names: Any, fst: Any, res: Any) -> None:
        sel = self.details.selection
        if sel is None or sel.names != names or self._compare_owns(sel):
            return
        if fst is None:
            self.details.set_note("fresh init: no initialisation known for this tensor")
            return
        if fst.counts:
            self.details.histogram.set_overlay("fresh init", fst.edges, fst.counts)
        st = self.details.last_stats
        verdict = (f"<b style='color:{palette.look('missing').color}'>{UNTRAINED}</b>" if res.init_like
                   else "✓ differs from a fresh init" if res.kind in ("random", "constant") else res.details)
        del st  # the checkpoint's own figures are in the stats box beside the histogram
        self.details.set_note(
            f"{verdict} <span style='color:{palette.MUTED_TEXT}'>({_short_details(res)})</span><br>"
            f"<span style='color:{palette.OVERLAY_COLOR}'><b>fresh init</b></span> mean {_num(fst.mean)} · "
            f"std {_num(fst.std)} · min {_num(fst.min)} · max {_num(fst.max)}")
        self.overlayReady.emit((names, fst, res))

    # ------------------------------------------------------------------ slots
    def _on_loaded(self, _loaded: Any) -> None:
        self.session.jobs.cancel("init_check")
        self.results = []
        self.model.set_records([])
        self.roll_model.set_records([])
        self._fresh = None
        self.summary.setText("not run yet" if self.session.report.spec is not None else "needs a model (config.json)")

    def _on_result(self, channel: str, value: object) -> None:
        if channel == "init_check":
            self.results, roll = value  # type: ignore[misc]
            self.model.set_records(self.results)
            self.roll_model.set_records([(k, a, b) for k, (a, b) in roll.items() if b])
            n = len(self.flagged())
            checked = sum(r.kind in ("random", "constant") for r in self.results)
            col = palette.look("missing").color if n else palette.look("matched").color
            self.summary.setText(f"{checked} tensors checked · <b style='color:{col}'>{n} look untrained</b>")
            self._refilter()
            self.session.set_init_results(self.results)  # badges, column and filter chip in the main views
            self.checkReady.emit(self.results)
        elif channel == "fresh":
            try:
                self._show_overlay(*value)  # type: ignore[misc]
            finally:
                self.window.release_ready("overlay")

    def _on_error(self, channel: str, msg: str) -> None:
        if channel == "init_check":
            import html

            self.summary.setText(f"⚠ {html.escape(safe_text(msg))}")  # rich-text label; the message quotes names
        elif channel == "fresh":
            self.details.set_note(f"fresh init: {msg}")
            self.window.release_ready("overlay")

    def _on_finished(self, channel: str) -> None:
        if channel == "init_check":
            self._set_busy(False)
            self.window.release_ready("prepare")
        elif channel == "fresh":
            self.window.release_ready("overlay")

    def _on_selection_changed(self, sel: Any) -> None:
        """Follow a selection made elsewhere (tree, table, compare tab): highlight its row, if shown."""
        if sel is None or len(sel.names) != 1 or not self.results:
            return
        name = sel.names[0]
        self.table.follow(lambda r: r.name == name)

    def _refilter(self) -> None:
        self.proxy.accept = (lambda r: r.init_like) if self.only_flagged.isChecked() else None
        self.proxy.invalidate()

    def _set_busy(self, busy: bool) -> None:
        self.job_progress.set_busy(busy)
        self.btn_run.setEnabled(not busy)


def _score(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.3g}" if v >= 1e-3 or v == 0 else f"{v:.1e}"


def _short_details(res: Any) -> str:
    if res.kind == "random" and res.ks is not None:
        return f"KS D={res.ks:.3f}, p={res.score:.2g}"
    return res.details


def install_init_panel(window: Any) -> InitPanel:
    """Add the "Looks untrained" tab, its menu action and the fresh-init overlay to a MainWindow."""
    panel = InitPanel(window)
    window.add_panel("Looks untrained", panel)
    window.init_panel = panel
    menu = window.add_menu("&Init")
    a = QAction("Check for &untrained tensors", window)
    a.setShortcut("Ctrl+Shift+U")
    a.triggered.connect(lambda _c=False: (window.tabs.setCurrentWidget(panel), panel.run()))
    menu.addAction(a)
    return panel
