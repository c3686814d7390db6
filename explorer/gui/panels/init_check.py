"""The "Looks untrained" tab and the fresh-init overlay in the details histogram.

- Overlay (``Overlay.FRESH_INIT``, the session's default overlay choice): when the details panel has drawn a single
  tensor's histogram, the tensor's owning module is materialised with the model's own init
  (``explorer.core.fresh.FreshInit``, one module, seeded) in a job (purpose ``"fresh"``); its histogram over the same
  range is drawn as an overlay ("fresh init") with the figures and the KS verdict under it.
- Init check: the whole checkpoint against fresh inits (``init_check``) in a job with progress and cancel; a sortable
  table with a "looks untrained" column, a filter and a per-layer roll-up. The results are published to the session
  (badges, column and filter chip in the main views). Rows follow the session's selection and select it.
"""
from __future__ import annotations

import html
from typing import Any, Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QColor
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QMenu, QPushButton, QSplitter, QVBoxLayout

from ...core.fmt import safe_text
from ...core.fmt import short_float as _num
from ..kinds import Kind
from ...core.matching import How, Status
from .. import palette
from ..widgets.badges import KeyDelegate
from ..widgets.records import JobProgress, RecordProxy, RecordTable, RecordTableModel, sortable
from ..session import Overlay
from ..workers import JobHandle
from .base import Capability, Panel, PanelHost

UNTRAINED = "✗ looks untrained"
CHECKED = ("random", "constant")  # InitResult kinds that were compared (the others say why not)


class InitPanel(Panel):
    """Init-check results for the open checkpoint, and the fresh-init overlay of the details histogram."""

    title = "Looks untrained"
    menu_title = "&Init"
    capabilities = frozenset({Capability.INIT_CHECK})
    overlay = None  # the default overlay (fresh init) stays

    checkReady = Signal(object)  # list[InitResult]
    checkFinished = Signal()  # the check ended: results, error or cancelled
    overlayReady = Signal(object)  # (names, fresh TensorStats, InitResult)

    def __init__(self, host: PanelHost) -> None:
        super().__init__(host)
        self.details = host.details
        self.results: list[Any] = []
        self.job: JobHandle | None = None  # the running init check

        self.btn_run = QPushButton("Check for untrained tensors")
        self.btn_run.setToolTip("Compare every tensor with the model's own fresh initialisation (one module at a time)")
        self.btn_run.clicked.connect(self.run)
        self.job_progress = JobProgress(on_cancel=self.cancel)
        self.only_flagged = QCheckBox("only “looks untrained”")
        self.only_flagged.toggled.connect(self._refilter)
        self.summary = QLabel("not run yet")
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.group: str | None = None  # the roll-up row chosen: only its tensors are listed
        self.group_label = QLabel("")
        self.group_label.setObjectName("muted")
        self.show_all = QPushButton("Show all")
        self.show_all.setToolTip("List the tensors of every module again")
        self.show_all.clicked.connect(lambda _c=False: self.choose_group(None))
        self.show_all.hide()
        top = QHBoxLayout()
        top.addWidget(self.btn_run)
        top.addWidget(self.summary, 1)
        top.addWidget(self.job_progress)
        top.addWidget(self.group_label)
        top.addWidget(self.show_all)
        top.addWidget(self.only_flagged)

        def bg(rec: Any, col: int) -> QColor | None:
            return palette.tint(Kind.MISSING) if col == 1 and rec.init_like else None

        self.model = RecordTableModel([
            ("tensor", lambda r: r.name, lambda r: r.name),
            ("looks untrained", lambda r: UNTRAINED if r.init_like else ("✓ trained" if r.kind in CHECKED else "—"),
             lambda r: (0 if r.init_like else 1 if r.kind in CHECKED else 2)),
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
        self.table.recordChosen.connect(lambda r: host.select(r.name))
        self.table.doubleClicked.connect(lambda idx: host.select(self.table.record_at(idx).name))

        self.roll_model = RecordTableModel([
            ("module / layer", lambda m: m[0], lambda m: m[0]),
            ("look untrained", lambda m: f"{m[1]}/{m[2]}", lambda m: m[1]),
        ], self, background=lambda m, c: palette.tint(Kind.MISSING) if m[1] else None)
        self.roll_table = RecordTable(self.roll_model, RecordProxy(self))
        # a module row: the table shows that module's tensors, the tree selects the module (its pooled histogram)
        self.roll_table.recordChosen.connect(lambda m: self.choose_group(m[0]))
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

        self.session.loaded.connect(self._on_loaded)
        self.session.selectionChanged.connect(self._on_selection_changed)
        self.session.initCheckRequested.connect(self.run)
        self.details.statsReady.connect(self._on_stats)

    # ------------------------------------------------------------------ protocol
    def fill_menu(self, menu: QMenu) -> None:
        a = QAction("Check for &untrained tensors", menu)
        a.setShortcut("Ctrl+Shift+U")
        a.triggered.connect(lambda _c=False: (self.host.raise_panel(self), self.run()))
        menu.addAction(a)

    def prepare_screenshot(self, *, max_values: int = 200_000_000) -> Callable[[], bool] | None:
        """Small checkpoints with a model: run the init check before choosing the tensor, so the badges, the chip
        and a flagged tensor's overlay are in the shot."""
        gate = self.host.ready

        def on_loaded() -> None:
            rep = self.session.report
            if rep is not None and rep.spec is not None and rep.index.total_params <= max_values:
                h = self.run()
                if h is not None:
                    gate.wait_for(h, before_pick=True)

        gate.loaded.connect(on_loaded)
        return None

    # ------------------------------------------------------------------ init check
    def run(self) -> JobHandle | None:
        rep = self.session.report
        if rep is None:
            return None
        if rep.spec is None:
            self.summary.setText("needs a model: open a checkpoint with a config.json (or choose one)")
            return None
        index, spec, km = rep.index, rep.spec, rep.key_mapping
        self.results = []
        self.model.set_records([])
        self.roll_model.set_records([])
        self.summary.setText("checking…")

        adapter = self.session.adapter

        def job(progress: Any, cancelled: Any) -> Any:
            from ...core.fresh import init_check, rollup_init

            if adapter is not None:  # base weights against the base's init, adapter tensors against peft's
                from ...core.adapter_view import init_check_view

                res = init_check_view(adapter, progress=progress, cancel=cancelled)
            else:
                res = init_check(index, spec, key_mapping=dict(km) if km else None, progress=progress, cancel=cancelled,
                                 report=rep)  # the window's own report: not matched again
            return res, rollup_init(res)

        h = self.job = self.session.jobs.start(job, purpose="init_check")
        h.returned.connect(lambda v: self._on_checked(rep, *v))
        h.errored.connect(lambda msg: self.summary.setText(f"⚠ {html.escape(safe_text(msg))}"))  # rich text; quotes names
        h.finished.connect(lambda: self._on_check_finished(h))
        self._set_busy(True)
        self.job_progress.track(h)
        return h

    def cancel(self) -> None:
        self.session.jobs.cancel("init_check")
        self._set_busy(False)
        self.summary.setText("cancelled")

    def flagged(self) -> list[str]:
        return [r.name for r in self.results if r.init_like]

    def _on_checked(self, rep: Any, results: list[Any], roll: dict) -> None:
        if rep is not self.session.report:
            return
        self.results = results
        self.model.set_records(self.results)
        self.roll_model.set_records([(k, a, b) for k, (a, b) in roll.items() if b])
        n = len(self.flagged())
        checked = sum(r.kind in CHECKED for r in self.results)
        col = palette.look(Kind.MISSING if n else Kind.MATCHED).text
        self.summary.setText(f"{checked} tensors checked · <b style='color:{col}'>{n} look untrained</b>")
        self._refilter()
        self.session.set_init_results(self.results)  # badges, column and filter chip in the main views
        self.checkReady.emit(self.results)

    def _on_check_finished(self, h: JobHandle) -> None:
        if h is self.job:
            self.job = None
            self._set_busy(False)
        self.checkFinished.emit()

    # ------------------------------------------------------------------ overlay
    def _on_stats(self, st: Any) -> None:
        sel = self.details.selection
        if self.session.overlay_for(sel) is not Overlay.FRESH_INIT:
            return  # another overlay (checkpoint B) is drawn instead
        self.details.set_note("")
        rep = self.session.report
        if sel is None or rep is None or rep.spec is None or sel.is_module or len(sel.names) != 1 or not st.counts:
            return
        name = sel.names[0]
        ck = rep.checkpoint_keys.get(name)
        if ck is None or ck.status is not Status.MATCHED or len(ck.targets) != 1:
            return
        key = ck.targets[0]
        piece = How.CONVERTED in ck.how  # one expert of a fused tensor: a fresh init of one expert, not the whole
        numel = rep.index.tensors[name].numel
        reader, cached = self.session.reader, self.session.fresh_init()
        names, edges, bins = sel.names, (st.edges[0], st.edges[-1]), len(st.counts)

        def job(progress: Any, cancelled: Any) -> Any:
            from ...core.errors import Cancelled
            from ...core.fresh import FreshInit, compare_to_init, converted_note
            from ...core.model import build_model
            from ...core.stats import tensor_stats

            def check() -> None:  # between the steps: a newer selection's job replaces this one
                if cancelled():
                    raise Cancelled("cancelled")

            fi = cached
            if fi is None:  # one FreshInit per report (the meta model is cheap); kept by the GUI thread
                default = rep.index.folder if not (rep.spec.config or rep.spec.model) else None
                fi = FreshInit(build_model(rep.spec, checkpoint_dtype=rep.index.first_float_dtype(),
                                           default_config=default, cancel=cancelled), seed=0, cache_modules=1)
            check()
            fresh = fi.piece(key, numel, cancel=cancelled) if piece else fi.tensor(key, cancel=cancelled)
            if fresh is None:
                return fi, None, converted_note(key) if piece else None
            check()
            fst = tensor_stats(fresh, key, bins=bins, hist_range=edges if edges[1] > edges[0] else None, cancel=cancelled)
            res = compare_to_init(name, key, reader.flat(name), fresh, is_buffer=fi.is_buffer(key), cancel=cancelled,
                                  piece=piece)
            return fi, fst, res

        h = self.session.jobs.start(job, purpose="fresh")
        h.returned.connect(lambda v: self._show_overlay(rep, names, *v))
        h.errored.connect(lambda msg: self.details.set_note(f"fresh init: {msg}"))
        self.host.ready.wait_for(h)  # a screenshot waits for the overlay too

    def _show_overlay(self, rep: Any, names: Any, fi: Any, fst: Any, res: Any) -> None:
        self.session.keep_fresh_init(rep, fi)
        sel = self.details.selection
        if sel is None or sel.names != names or self.session.overlay_for(sel) is not Overlay.FRESH_INIT:
            return
        if fst is None:
            why = res if isinstance(res, str) else "no initialisation known for this tensor"
            self.details.set_note(f"fresh init: {html.escape(safe_text(why))}")
            return
        if fst.counts:
            self.details.histogram.set_overlay("fresh init", fst.edges, fst.counts)
        verdict = (f"<b style='color:{palette.look(Kind.MISSING).text}'>{UNTRAINED}</b>" if res.init_like
                   else "✓ differs from a fresh init" if res.kind in CHECKED else res.details)
        self.details.set_note(
            f"{verdict} <span style='color:{palette.MUTED_TEXT}'>({_short_details(res)})</span><br>"
            f"<span style='color:{palette.OVERLAY_COLOR}'><b>fresh init</b></span> mean {_num(fst.mean)} · "
            f"std {_num(fst.std)} · min {_num(fst.min)} · max {_num(fst.max)}")
        self.overlayReady.emit((names, fst, res))

    # ------------------------------------------------------------------ slots
    def _on_loaded(self, _loaded: Any) -> None:
        self.session.jobs.cancel("init_check")
        self.group = None
        self.group_label.setText("")
        self.results = []
        self.model.set_records([])
        self.roll_model.set_records([])
        self.summary.setText("not run yet" if self.session.report.spec is not None else "needs a model (config.json)")

    def _on_selection_changed(self, sel: Any) -> None:
        """Follow a selection made elsewhere (tree, table, compare tab): highlight its row, if shown."""
        if sel is None or len(sel.names) != 1 or not self.results:
            return
        name = sel.names[0]
        self.table.follow(lambda r: r.name == name)

    def choose_group(self, group: str | None) -> None:
        """List only the tensors of roll-up row ``group`` (None: all) and select its module in the tree."""
        self.group = group
        self.group_label.setText(f"showing {safe_text(group)}" if group else "")
        self._refilter()
        if group is None:
            return
        self.host.select(self.module_of(group))

    def module_of(self, group: str) -> str:
        """The model module of a roll-up group (on-disk names, e.g. ``bert.encoder.layer.0``): the common module of
        the model keys its tensors load into (``encoder.layer.0``), else the group itself."""
        from ...core.keys import layer_of

        mods = [r.key.rpartition(".")[0].split(".") for r in self.results if r.key and layer_of(r.name) == group]
        if not mods:
            return group
        common = mods[0]
        for m in mods[1:]:
            n = 0
            while n < min(len(common), len(m)) and common[n] == m[n]:
                n += 1
            common = common[:n]
        return ".".join(common) or group

    def _refilter(self) -> None:
        from ...core.keys import layer_of

        only, group = self.only_flagged.isChecked(), self.group
        if not only and group is None:
            self.proxy.accept = None
        else:
            self.proxy.accept = lambda r: (not only or r.init_like) and (group is None or layer_of(r.name) == group)
        self.proxy.invalidate()
        self.show_all.setVisible(group is not None)

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
