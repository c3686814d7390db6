"""The "Compare" tab: checkpoint A (the one open) vs checkpoint B, tensor by tensor.

B is ``session.compare_path``: ``--compare OTHER``, a drop, the menu or the tab's button. The diff runs in a job
(purpose ``"diff"``, ``explorer.core.diff.diff_checkpoints``, streamed, progress + cancel) and is published as
``session.comparison``. Shown: a sortable table (status,
relative change, cosine, max abs diff) | a bar chart of relative change by layer (hover: the layer's name and
figures; click: select the layer) over a per-layer roll-up, in splitters.

Selecting a row selects that tensor in the session (tree, tensor table, details panel). While this tab is open the
overlay choice is ``Overlay.CHECKPOINT_B``: the details histogram shows A and B over one shared range (a job,
purpose ``"diff_hist"``) with the A-vs-B figures under it; elsewhere the fresh-init overlay shows as usual.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from ...core.fmt import safe_text
from ...core.fmt import short_float as _num
from ...core.diff import CHANGED, ONLY_A, ONLY_B, SAME, SHAPE_MISMATCH, unrelated_warning
from .. import palette
from ..widgets.badges import KeyDelegate
from ..widgets.records import JobProgress, RecordProxy, RecordTable, RecordTableModel, sortable
from ..session import Comparison, Overlay, Selection
from ..workers import JobHandle
from .base import DropChoice, Panel, PanelHost

# status -> palette kind (colour + glyph live in the palette)
STATUS_KIND = {SAME: "matched", CHANGED: "dtype", ONLY_A: "missing", ONLY_B: "unexpected", SHAPE_MISMATCH: "mismatched"}
STATUS_LABEL = {SAME: "= same", CHANGED: "≈ changed", ONLY_A: "✗ only in A", ONLY_B: "+ only in B",
                SHAPE_MISMATCH: "≠ shape mismatch"}


class ComparePanel(Panel):
    """A-vs-B table, roll-up and bar chart; the A/B histogram goes to the details panel. State: the session."""

    title = "Compare A/B"
    menu_title = "&Compare"
    overlay = Overlay.CHECKPOINT_B

    diffReady = Signal(object)  # list[DiffEntry]
    diffFailed = Signal(str)  # the diff's one-line error
    histReady = Signal(object)  # (name, stats A, stats B) drawn in the details histogram

    def __init__(self, host: PanelHost) -> None:
        super().__init__(host)
        self.details = host.details
        self.error: str | None = None  # the last diff's failure (also in the window's message bar)
        self.unrelated: str | None = None  # "these look unrelated: ..." (core.diff.unrelated_warning) for the last diff
        self.entries: list[Any] = []
        self.rollup: list[Any] = []
        self.index_b: Any = None  # CheckpointIndex of B (from the diff job)
        self._layers: list[Any] = []  # roll-up records drawn as bars (bar i is self._layers[i])
        self.diff_job: JobHandle | None = None

        self.btn_open = QPushButton("Compare with…")
        self.btn_open.setToolTip("Choose checkpoint B to compare with the open checkpoint A")
        self.btn_open.clicked.connect(self.open_dialog)
        self.path_label = QLabel("no checkpoint B: use “Compare with…” or --compare OTHER")
        self.path_label.setObjectName("muted")
        self.job_progress = JobProgress(on_cancel=self.cancel)
        self.only_diff = QCheckBox("only differences")
        self.only_diff.setChecked(True)
        self.only_diff.toggled.connect(self._refilter)
        top = QHBoxLayout()
        top.addWidget(self.btn_open)
        top.addWidget(self.path_label, 1)
        top.addWidget(self.job_progress)
        top.addWidget(self.only_diff)
        self.summary = QLabel("")
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setWordWrap(True)  # a long "moved most" list must not set the tab's (and window's) minimum width
        self.path_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        def bg(rec: Any, col: int) -> QColor | None:
            return palette.tint(STATUS_KIND.get(rec.status, "ignored")) if col == 1 else None

        self.model = RecordTableModel([
            ("tensor", lambda e: e.name, lambda e: e.name),
            ("status", lambda e: STATUS_LABEL.get(e.status, e.status), lambda e: e.status),
            ("rel. change", lambda e: _num(e.rel_change), lambda e: sortable(e.rel_change)),
            ("cosine", lambda e: _num(e.cosine, digits=6), lambda e: sortable(e.cosine)),
            ("max |B−A|", lambda e: _num(e.max_abs_diff), lambda e: sortable(e.max_abs_diff)),
            ("shape", lambda e: _pair(_shape_text(e.shape_a), _shape_text(e.shape_b)),
             lambda e: math.prod(e.shape_a or e.shape_b or ())),
            ("dtype", lambda e: _pair(e.dtype_a, e.dtype_b), lambda e: _pair(e.dtype_a, e.dtype_b)),
        ], self, background=bg)
        self.table = RecordTable(self.model, RecordProxy(self))
        self.proxy = self.table.proxy
        # the figures fit without scrolling in the tab's first ~560 px; shape and dtype ("A → B" when they differ)
        # are further right
        self.table.fit_columns(("encoder.layer.0.attention.self.query", "✗ only in A", "", "0.999999", "", "1536×384",
                                "float32"))
        self.table.sortByColumn(2, Qt.SortOrder.DescendingOrder)
        self.table.recordChosen.connect(self._select_entry)

        self.roll_model = RecordTableModel([
            ("layer", lambda m: m.prefix, lambda m: m.prefix),
            ("rel. change", lambda m: _num(m.rel_change), lambda m: sortable(m.rel_change)),
            ("differ", lambda m: f"{m.n_changed}/{m.n_tensors}", lambda m: m.n_changed),
        ], self)  # max |B−A| per layer: in the bar chart's hover read-out
        self.roll_table = RecordTable(self.roll_model, RecordProxy(self))
        self.roll_proxy = self.roll_table.proxy
        # the layer name takes what is left (its tail tells layers apart); the figures keep their width
        self.roll_table.setTextElideMode(Qt.TextElideMode.ElideLeft)
        self.roll_table.fit_columns(("", "0.04347", "0.04347"), stretch_first=True)
        # room for a layer's name in full ("encoder.layer.10") beside the figures, however the splitter moves
        self.roll_table.setMinimumWidth(self.roll_table.columnWidth(1) + self.roll_table.columnWidth(2)
                                        + self.roll_table.fontMetrics().horizontalAdvance("encoder.layer.10") + 20)
        # dotted names shrink component-wise (e.l.5.attention.self.query.weight), layer numbers kept
        self._key_delegate = KeyDelegate(self)
        self.table.setItemDelegateForColumn(0, self._key_delegate)
        self.roll_table.setItemDelegateForColumn(0, self._key_delegate)
        self.roll_table.sortByColumn(1, Qt.SortOrder.DescendingOrder)
        self.roll_table.recordChosen.connect(self._on_roll_chosen)
        self.table.model().setHeaderData(2, Qt.Orientation.Horizontal, "‖B−A‖/‖A‖", Qt.ItemDataRole.ToolTipRole)

        self._bars_plot: Any = None  # the bar chart (pyqtgraph), built by ensure_chart: shown or drawn into
        self._bars_stand_in = QWidget()
        self._bars_stand_in.setMinimumHeight(50)
        self._bars_stand_in.setStyleSheet(f"background: {palette.PLOT_BACKGROUND};")
        self.bar_readout = QLabel(BAR_HINT)
        self.bar_readout.setObjectName("muted")
        self.bar_readout.setTextFormat(Qt.TextFormat.RichText)
        self.bar_readout.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # hover text: never widens the tab
        bars_box = QWidget()
        bl = QVBoxLayout(bars_box)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.setSpacing(0)
        bl.addWidget(self.bar_readout)
        bl.addWidget(self._bars_stand_in, 1)
        self._bars_layout = bl

        # the chart spans the tab's width (one readable label per layer); under it the diff table | roll-up
        self.split = QSplitter(Qt.Orientation.Horizontal)
        self.split.setChildrenCollapsible(False)
        self.split.addWidget(self.table)
        self.split.addWidget(self.roll_table)
        self.split.setStretchFactor(0, 3)
        self.split.setStretchFactor(1, 2)
        self.split.setSizes([600, 330])
        self.outer = QSplitter(Qt.Orientation.Vertical)
        self.outer.setChildrenCollapsible(False)
        self.outer.addWidget(bars_box)
        self.outer.addWidget(self.split)
        self.outer.setStretchFactor(0, 2)
        self.outer.setStretchFactor(1, 3)
        self.outer.setSizes([135, 200])
        split = self.outer
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.summary)
        lay.addWidget(split, 1)
        self._refilter()

        self.session.compareChanged.connect(self._on_compare_changed)
        self.session.comparisonChanged.connect(self._on_comparison)
        self.details.statsReady.connect(self._on_stats)
        self.session.selectionChanged.connect(self._on_selection_changed)

    def ensure_chart(self) -> None:
        """Build the bar chart (importing pyqtgraph) if not yet built: when the tab is first shown or bars are drawn."""
        if self._bars_plot is not None:
            return
        from ..widgets import plot_axes

        pg = plot_axes.pg
        self.axis = plot_axes.LayerAxis()
        plot = pg.PlotWidget(axisItems={"bottom": self.axis})
        plot.setMinimumHeight(50)  # the tab must not force the tensor table taller than it needs
        pi = plot.getPlotItem()
        pi.setMenuEnabled(False)
        pi.hideButtons()
        pi.setMouseEnabled(x=False, y=False)
        pi.setLabel("left", "‖B−A‖/‖A‖")
        pi.getAxis("left").enableAutoSIPrefix(False)
        pi.showGrid(y=True, alpha=0.15)
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.8, brush=pg.mkBrush(palette.HIST_COLOR), pen=pg.mkPen(None))
        pi.addItem(self.bars)
        plot.setToolTip("relative change ‖B−A‖/‖A‖ per layer (pooled over its tensors); click a bar to select the layer")
        self._hover = pg.SignalProxy(plot.scene().sigMouseMoved, rateLimit=30, slot=self._on_bar_hover)
        plot.scene().sigMouseClicked.connect(self._on_bar_click)
        self._bars_plot = plot
        self._bars_layout.replaceWidget(self._bars_stand_in, plot)
        plot.show()  # now, not at the layout's next turn of the event loop
        self._bars_stand_in.hide()
        self._bars_stand_in.deleteLater()
        self._draw_bars()

    @property
    def bars_plot(self) -> Any:
        """The bar chart's PlotWidget (built now if it was not)."""
        self.ensure_chart()
        return self._bars_plot

    def __getattr__(self, name: str) -> Any:  # the chart's parts, before it is built: build it
        if name in ("axis", "bars", "_hover") and self.__dict__.get("_bars_plot", 0) is None:
            self.ensure_chart()
            return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        self.ensure_chart()  # the tab opened: its chart is built now (not at start-up)

    # ------------------------------------------------------------------ protocol
    def fill_menu(self, menu: QMenu) -> None:
        a = QAction("Compare &with…", menu)
        a.setShortcut("Ctrl+Shift+C")
        a.triggered.connect(lambda _c=False: (self.host.raise_panel(self), self.open_dialog()))
        menu.addAction(a)

    def drop_choices(self, path: str) -> list[DropChoice]:
        return [DropChoice("Compare with current", lambda: (self.host.raise_panel(self), self.compare_with(path)))]

    def prepare_screenshot(self) -> Callable[[], bool] | None:
        """With a checkpoint B: wait for the diff, then show this tab with the most-changed tensor selected and
        its A/B overlay drawn."""
        gate = self.host.ready

        def on_loaded() -> None:
            if self.diff_job is not None and self.diff_job.running:
                gate.wait_for(self.diff_job, before_pick=True)

        def pick() -> bool:
            e = self.most_changed()
            if e is None:
                return False
            self.host.raise_panel(self)
            return self.select_name(e.name)

        gate.loaded.connect(on_loaded)
        return pick

    @property
    def other(self) -> str | None:
        """Checkpoint B's path (the session's)."""
        return self.session.compare_path

    # ------------------------------------------------------------------ public
    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Compare with checkpoint B", os.path.dirname(self.other or "") or os.getcwd(),
            "Checkpoints (*.safetensors *.bin *.pt *.pth *.ckpt *.index.json);;All files (*)")
        if path:
            self.compare_with(path)

    def compare_with(self, path: str) -> None:
        """Diff the open checkpoint (A) against ``path`` (B) in the background."""
        self.session.compare_with(path)

    def _on_compare_changed(self, path: str | None) -> None:
        if path is None:
            return
        a = self.session.report.index.path if self.session.report else None
        self.path_label.setTextFormat(Qt.TextFormat.PlainText)
        self.path_label.setText(safe_text(f"A: {ckpt_label(a)}   vs   B: {ckpt_label(path)}"))
        self.path_label.setToolTip(f"A: {safe_text(os.path.abspath(a) if a else '?')}\nB: {safe_text(path)}")
        self.run()

    def run(self) -> JobHandle | None:
        rep, other = self.session.report, self.other
        if rep is None or other is None:
            return None
        index_a = rep.index
        self.error = None
        self.summary.setText("comparing…")

        def job(progress: Any, cancelled: Any) -> Any:
            from ...core.checkpoint import open_checkpoint
            from ...core.diff import diff_checkpoints, module_rollup

            index_b = open_checkpoint(other)
            entries = diff_checkpoints(index_a, index_b, progress=progress, cancel=cancelled)
            return Comparison(other, tuple(entries), tuple(module_rollup(entries)), index_b)

        h = self.diff_job = self.session.jobs.start(job, purpose="diff")
        h.returned.connect(lambda cmp: self.session.set_comparison(cmp) if rep is self.session.report else None)
        h.errored.connect(self._on_diff_failed)
        self.job_progress.track(h)
        return h

    def cancel(self) -> None:
        self.session.jobs.cancel("diff")
        self.session.jobs.cancel("diff_hist")
        self.job_progress.set_busy(False)
        self.summary.setText("cancelled")

    def select_name(self, name: str) -> bool:
        """Select the row of ``name`` (common key or either side's on-disk name), and so the tensor."""
        for r, e in enumerate(self.model.records):
            if name in (e.name, e.name_a, e.name_b):
                idx = self.proxy.mapFromSource(self.model.index(r, 0))
                if not idx.isValid():
                    self.only_diff.setChecked(False)
                    idx = self.proxy.mapFromSource(self.model.index(r, 0))
                if idx == self.table.currentIndex():
                    self._select_entry(e)
                else:
                    self.table.setCurrentIndex(idx)
                self.table.scrollTo(idx)
                return True
        return False

    def most_changed(self) -> Any:
        """The entry present on both sides that moved most (largest finite relative change), or None."""
        moved = [e for e in self.entries if e.status == CHANGED and e.name_a and e.name_b
                 and e.rel_change is not None and math.isfinite(e.rel_change)]
        return max(moved, key=lambda e: (e.rel_change, e.name)) if moved else None

    def entry_for(self, sel: Any) -> Any:
        """The diff entry whose A/B overlay the details histogram shows for ``sel`` (``Session.ab_entry``)."""
        return self.session.ab_entry(sel)

    # ------------------------------------------------------------------ slots
    def _on_comparison(self, cmp: Comparison | None) -> None:
        if cmp is None:
            self._set_entries([], [], None)
            return
        self._set_entries(list(cmp.entries), list(cmp.rollup), cmp.index_b)
        self._summarise()
        self.diffReady.emit(self.entries)
        if self.entry_for(self.details.selection) is not None:
            self.details.redraw()  # the diff arrived while a tensor was shown: overlay B now

    def _on_diff_failed(self, msg: str) -> None:
        self.error = f"compare with checkpoint B failed: {msg}"
        self.summary.setText(f"<span style='color:{palette.look('missing').text}'>⚠ {_esc(self.error)}</span>")
        self.host.show_error(self.error)
        self.diffFailed.emit(msg)

    def _on_roll_chosen(self, m: Any) -> None:
        self._draw_bars(highlight=m.prefix)
        self.host.select(m.prefix)  # the module: its pooled histogram in the details panel

    def _on_selection_changed(self, sel: Any) -> None:
        """Follow a selection made elsewhere (tree, tensor table): highlight its row and layer, if shown."""
        if sel is None or len(sel.names) != 1 or not self.entries:
            return
        e = self.session.comparison.entry_for_a(sel.names[0]) if self.session.comparison else None
        if e is None:
            return
        from ...core.keys import layer_of

        self._draw_bars(highlight=layer_of(e.name))
        self.table.follow(lambda r: r is e)

    def _on_stats(self, st: Any) -> None:
        """The details panel drew A's histogram: measure B over a range shared with A, then overlay it."""
        sel = self.details.selection
        e = self.entry_for(sel)
        if e is None or self.index_b is None or not st.counts:
            return
        self.details.set_note(f"<span style='color:{palette.MUTED_TEXT}'>reading checkpoint B…</span>")
        reader_a, index_b, names, bins = self.session.reader, self.index_b, sel.names, len(st.counts)
        edges = (float(st.edges[0]), float(st.edges[-1]))
        na, nb = e.name_a, e.name_b

        def job(progress: Any, cancelled: Any) -> Any:
            from ...core.checkpoint import TensorReader
            from ...core.stats import tensor_stats

            with TensorReader(index_b) as rb:
                sb = tensor_stats(rb, nb, bins=bins, hist_range=edges, cancel=cancelled)
                lo, hi = edges
                if sb.min is not None and sb.max is not None:
                    lo, hi = min(lo, sb.min), max(hi, sb.max)
                sa = tensor_stats(reader_a, na, bins=bins, hist_range=(lo, hi), cancel=cancelled)
                if (lo, hi) != edges:
                    sb = tensor_stats(rb, nb, bins=bins, hist_range=(lo, hi), cancel=cancelled)
            return names, e, sa, sb

        h = self.session.jobs.start(job, purpose="diff_hist")
        h.returned.connect(lambda v: self._show_hist(*v))
        h.errored.connect(lambda msg: self.details.set_note(f"checkpoint B: {_esc(msg)}"))
        self.host.ready.wait_for(h)  # a screenshot waits for the overlay too

    def _on_bar_hover(self, evt: tuple) -> None:
        self.show_bar_readout(evt[0])

    def show_bar_readout(self, scene_pos: Any) -> None:
        """What hovering the bar chart at ``scene_pos`` shows: the bar's layer and figures, else the hint."""
        i = self._bar_at(scene_pos)
        if i is None:
            self.bar_readout.setText(BAR_HINT)
            return
        m = self._layers[i]
        self.bar_readout.setText(
            f"<b>{_esc(m.prefix)}</b> · rel. change {_num(m.rel_change, digits=3)} · {m.n_changed}/{m.n_tensors} tensors differ"
            f" · max |B−A| {_num(m.max_abs_diff, digits=3)}")

    def _on_bar_click(self, evt: Any) -> None:
        i = self._bar_at(evt.scenePos())
        if i is None:
            return
        prefix = self._layers[i].prefix
        for r, m in enumerate(self.roll_model.records):
            if m.prefix == prefix:
                self.roll_table.setCurrentIndex(self.roll_proxy.mapFromSource(self.roll_model.index(r, 0)))
                return

    # ------------------------------------------------------------------ helpers
    def _a_name(self) -> str:
        rep = self.session.report
        return ckpt_label(rep.index.path) if rep is not None else "?"

    def _set_entries(self, entries: list[Any], rollup: list[Any], index_b: Any) -> None:
        self.entries, self.rollup, self.index_b = list(entries), list(rollup), index_b
        self.model.set_records(self.entries)
        self.roll_model.set_records(self.rollup)
        self._draw_bars()

    def _select_entry(self, e: Any) -> None:
        """Select ``e``'s tensor in the session (A's on-disk name); a B-only tensor is described on its own."""
        from ...core.keys import layer_of

        self._draw_bars(highlight=layer_of(e.name))
        if e.name_a is not None and self.host.select(e.name_a):
            return

        side = "B" if e.name_a is None else "A"
        facts = [("Status", STATUS_LABEL.get(e.status, e.status)), ("In A", e.name_a or "—"), ("In B", e.name_b or "—"),
                 ("A", _shape(e.shape_a, e.dtype_a)), ("B", _shape(e.shape_b, e.dtype_b))]
        self.host.show_selection(Selection(e.name, STATUS_KIND.get(e.status, "ignored"), (), tuple(facts),
                                           empty_reason=f"only in checkpoint {side}" if e.status in (ONLY_A, ONLY_B)
                                             else STATUS_LABEL.get(e.status, e.status)))

    def _refilter(self) -> None:
        only = self.only_diff.isChecked()
        self.proxy.accept = (lambda e: e.status != SAME) if only else None
        self.proxy.invalidate()
        self.roll_proxy.accept = (lambda m: m.n_changed > 0) if only else None
        self.roll_proxy.invalidate()

    def _summarise(self) -> None:
        counts: dict[str, int] = {}
        for e in self.entries:
            counts[e.status] = counts.get(e.status, 0) + 1
        parts = []
        for st in (SAME, CHANGED, ONLY_A, ONLY_B, SHAPE_MISMATCH):
            n = counts.get(st, 0)
            lk = palette.look(STATUS_KIND[st])
            parts.append(f"<span style='color:{lk.text if n else palette.MUTED_TEXT}'><b>{n}</b> {STATUS_LABEL[st]}</span>")
        moved = sorted((m for m in self.rollup if m.rel_change), key=lambda m: -m.rel_change)[:3]
        most = ", ".join(f"{_esc(m.prefix)} ({_num(m.rel_change, digits=3)})" for m in moved)
        text = " · ".join(parts) + (f" &nbsp;|&nbsp; moved most: {most}" if most else "")
        self.unrelated = unrelated_warning(self.entries)  # a Llama against a MiniLM: say so before any figure
        if self.unrelated:
            text = (f"<span style='color:{palette.look('missing').color}'><b>⚠ {_esc(self.unrelated)}</b></span><br>"
                    + text)
        self.summary.setText(text)

    def _draw_bars(self, *, highlight: str | None = None) -> None:
        self._layers = [m for m in self.rollup if m.rel_change is not None]
        if not self._layers and self._bars_plot is None:
            return  # nothing to draw into a chart not built yet
        self.ensure_chart()
        from ..widgets.plot_axes import pg

        xs = list(range(len(self._layers)))
        hs = [m.rel_change for m in self._layers]
        base, hi = pg.mkBrush(palette.HIST_COLOR), pg.mkBrush(palette.OVERLAY_COLOR)
        brushes = [hi if m.prefix == highlight else base for m in self._layers]
        self.bars.setOpts(x=xs, height=hs, width=0.8, brushes=brushes or None, brush=base)
        self.axis.set_labels([_tick(m.prefix) for m in self._layers])
        pi = self.bars_plot.getPlotItem()
        if self._layers:
            pi.setXRange(-0.6, len(self._layers) - 0.4, padding=0)
            pi.enableAutoRange(axis="y")
        else:
            pi.enableAutoRange()

    def _bar_at(self, scene_pos: Any) -> int | None:
        if not self._layers or not self.bars_plot.sceneBoundingRect().contains(scene_pos):
            return None
        x = self.bars_plot.getPlotItem().getViewBox().mapSceneToView(scene_pos).x()
        i = int(round(x))
        return i if 0 <= i < len(self._layers) and abs(x - i) <= 0.45 else None

    def _show_hist(self, names: Any, e: Any, sa: Any, sb: Any) -> None:
        details = self.details
        if details.selection is None or details.selection.names != names or self.entry_for(details.selection) is not e:
            return
        hist = details.histogram
        if sa.counts:
            hist.set_data(sa.edges, sa.counts, label="A")
        if sb.counts:
            hist.set_overlay("B", sb.edges, sb.counts)
        else:
            hist.clear_overlay()
        lk = palette.look(STATUS_KIND.get(e.status, "ignored"))
        self.details.set_note(
            f"<span style='color:{lk.text}'><b>{STATUS_LABEL.get(e.status, e.status)}</b></span> · "
            f"rel. change <b>{_num(e.rel_change)}</b> · cosine <b>{_num(e.cosine, digits=6)}</b> · "
            f"max |B−A| <b>{_num(e.max_abs_diff)}</b><br>"
            f"<span style='color:{palette.OVERLAY_COLOR}'><b>B</b></span> mean {_num(sb.mean)} · std {_num(sb.std)} · "
            f"min {_num(sb.min)} · max {_num(sb.max)}"
            f"{'' if e.dtype_a == e.dtype_b else f' · {_esc(e.dtype_b)} (A: {_esc(e.dtype_a)})'}")
        self.histReady.emit((e.name, sa, sb))


BAR_HINT = "relative change by layer · hover a bar for its name, click to select it"


def _esc(s: Any) -> str:
    """Text from a file for a rich-text label: control/bidi characters escaped visibly, then HTML-escaped."""
    import html

    return html.escape(safe_text(s))


def ckpt_label(path: str | None) -> str:
    """How a checkpoint is named in the Compare tab: its folder name (``model``), or ``folder/file`` for a file
    (``run3/pytorch_model.bin``); the full path goes in the tooltip."""
    if not path:
        return "?"
    p = os.path.normpath(os.path.abspath(path))
    if os.path.isdir(p):
        return os.path.basename(p) or p
    folder, name = os.path.basename(os.path.dirname(p)) or os.path.dirname(p), os.path.basename(p)
    return folder if name in DEFAULT_FILES else f"{folder}/{name}"


DEFAULT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _pair(a: str | None, b: str | None) -> str:
    """One value for A and B: ``x`` when equal, ``x → y`` when not, ``—`` for a side that lacks the tensor."""
    a, b = a or "—", b or "—"
    return a if a == b else f"{a} → {b}"


def _shape_text(shape: Any) -> str | None:
    return None if shape is None else ("×".join(map(str, shape)) if len(shape) else "scalar")


def _shape(shape: Any, dtype: Any) -> str:
    return "—" if shape is None else f"{list(shape)} {dtype or ''}".strip()


def _tick(prefix: str) -> str:
    """A short axis label (the hover read-out has the full name): the layer index (``3``), the capitals of a
    CamelCase name (``LN``), else the first word, cut to 5 characters (``word``, ``posit``, ``embed``)."""
    last = prefix.rsplit(".", 1)[-1]
    if last.isdigit():
        return last
    caps = "".join(c for c in last if c.isupper())
    if len(caps) >= 2 and last[0].isupper():
        return caps
    return last.split("_", 1)[0][:5] or last[:5]
