"""The "Compare" tab: checkpoint A (the one open) vs checkpoint B, tensor by tensor.

Install with ``install_compare_panel(window)``: adds a "Compare" tab and menu. B comes from ``--compare OTHER``
(``session.extras["compare"]``), the menu, or the tab's button. The diff runs in a worker on the ``"diff"``
channel (``explorer.core.stats.iter_diff``, streamed, progress + cancel). Shown: a sortable table (status,
relative change, cosine, max abs diff), a per-layer roll-up, a bar chart of relative change by layer, and the
A/B histograms of the selected tensor over one shared range (channel ``"diff_hist"``).
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Sequence

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QAction, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

import pyqtgraph as pg  # after PySide6

from . import palette
from .histogram import HistogramWidget

# status -> palette kind (colour + glyph live in the palette)
STATUS_KIND = {"same": "matched", "changed": "dtype", "only_a": "missing", "only_b": "unexpected",
               "shape_mismatch": "mismatched"}
STATUS_LABEL = {"same": "= same", "changed": "≈ changed", "only_a": "✗ only in A", "only_b": "+ only in B",
                "shape_mismatch": "≠ shape mismatch"}
SORT_ROLE = Qt.ItemDataRole.UserRole + 1


def _num(v: float | None, digits: int = 4) -> str:
    if v is None:
        return "—"
    if not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    return f"{v:.{digits}g}" if 1e-3 <= abs(v) < 1e5 else f"{v:.3e}"


class RecordTableModel(QAbstractTableModel):
    """A read-only table over a list of records; columns are (header, display fn, sort-key fn)."""

    def __init__(self, columns: Sequence[tuple[str, Callable[[Any], str], Callable[[Any], Any]]],
                 parent: Any = None, *, background: Callable[[Any, int], QColor | None] | None = None) -> None:
        super().__init__(parent)
        self.columns = list(columns)
        self.records: list[Any] = []
        self._background = background

    def set_records(self, records: list[Any]) -> None:
        self.beginResetModel()
        self.records = list(records)
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.records)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.columns)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole and 0 <= section < len(self.columns):
            return self.columns[section][0]
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not (0 <= index.row() < len(self.records)):
            return None
        rec = self.records[index.row()]
        _h, disp, key = self.columns[index.column()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return disp(rec)
        if role == SORT_ROLE:
            return key(rec)
        if role == Qt.ItemDataRole.BackgroundRole and self._background is not None:
            return self._background(rec, index.column())
        if role == Qt.ItemDataRole.UserRole:
            return rec
        return None


def _sortable(v: float | None) -> float:
    return -1.0 if v is None or not math.isfinite(v) else float(v)


class _Proxy(QSortFilterProxyModel):
    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.accept: Callable[[Any], bool] | None = None

    def filterAcceptsRow(self, row: int, parent: QModelIndex) -> bool:
        if self.accept is None:
            return True
        m = self.sourceModel()
        return self.accept(m.records[row])  # type: ignore[attr-defined]


def make_table(model: QAbstractTableModel, proxy: QSortFilterProxyModel) -> QTableView:
    proxy.setSourceModel(model)
    t = QTableView()
    t.setModel(proxy)
    t.setSortingEnabled(True)
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    t.setWordWrap(False)
    t.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    t.setShowGrid(False)
    t.verticalHeader().setVisible(False)
    t.verticalHeader().setDefaultSectionSize(22)
    t.horizontalHeader().setStretchLastSection(True)
    return t


class ComparePanel(QWidget):
    """A-vs-B table, roll-up, bar chart and histograms. All state comes from the window's session."""

    diffReady = Signal(object)  # list[DiffEntry]
    histReady = Signal(object)  # (name, stats A, stats B)

    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self.window = window
        self.session = window.session
        self.other: str | None = None
        self.entries: list[Any] = []
        self.rollup: list[Any] = []
        self._pending: list[Any] = []

        self.btn_open = QPushButton("Compare with…")
        self.btn_open.setToolTip("Choose checkpoint B to compare with the open checkpoint A")
        self.btn_open.clicked.connect(self.open_dialog)
        self.path_label = QLabel("no checkpoint B: use “Compare with…” or --compare OTHER")
        self.path_label.setObjectName("muted")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.setFixedHeight(8)
        self.progress.setMaximumWidth(180)
        self.cancel_btn = QToolButton(text="Cancel")
        self.cancel_btn.clicked.connect(self.cancel)
        self.only_diff = QCheckBox("only differences")
        self.only_diff.setChecked(True)
        self.only_diff.toggled.connect(self._refilter)
        top = QHBoxLayout()
        top.addWidget(self.btn_open)
        top.addWidget(self.path_label, 1)
        top.addWidget(self.progress)
        top.addWidget(self.cancel_btn)
        top.addWidget(self.only_diff)
        self.summary = QLabel("")
        self.summary.setTextFormat(Qt.TextFormat.RichText)

        def bg(rec: Any, col: int) -> QColor | None:
            return palette.tint(STATUS_KIND.get(rec.status, "ignored")) if col == 1 else None

        self.model = RecordTableModel([
            ("tensor", lambda e: e.name, lambda e: e.name),
            ("status", lambda e: STATUS_LABEL.get(e.status, e.status), lambda e: e.status),
            ("rel. change", lambda e: _num(e.rel_change), lambda e: _sortable(e.rel_change)),
            ("cosine", lambda e: _num(e.cosine, 6), lambda e: _sortable(e.cosine)),
            ("max |B−A|", lambda e: _num(e.max_abs_diff), lambda e: _sortable(e.max_abs_diff)),
            ("A", lambda e: _shape(e.shape_a, e.dtype_a), lambda e: str(e.shape_a)),
            ("B", lambda e: _shape(e.shape_b, e.dtype_b), lambda e: str(e.shape_b)),
        ], self, background=bg)
        self.proxy = _Proxy(self)
        self.table = make_table(self.model, self.proxy)
        for col, w in enumerate((300, 120, 140, 90, 90, 140)):
            self.table.setColumnWidth(col, w)
        self.table.sortByColumn(2, Qt.SortOrder.DescendingOrder)
        self.table.selectionModel().currentChanged.connect(self._on_current)

        self.roll_model = RecordTableModel([
            ("module / layer", lambda m: m.prefix, lambda m: m.prefix),
            ("rel. change", lambda m: _num(m.rel_change), lambda m: _sortable(m.rel_change)),
            ("differ", lambda m: f"{m.n_changed}/{m.n_tensors}", lambda m: m.n_changed),
            ("max |B−A|", lambda m: _num(m.max_abs_diff), lambda m: _sortable(m.max_abs_diff)),
        ], self)
        self.roll_proxy = _Proxy(self)
        self.roll_table = make_table(self.roll_model, self.roll_proxy)
        self.roll_table.setColumnWidth(0, 200)
        self.roll_table.sortByColumn(1, Qt.SortOrder.DescendingOrder)
        self.table.model().setHeaderData(2, Qt.Orientation.Horizontal, "‖B−A‖/‖A‖", Qt.ItemDataRole.ToolTipRole)

        self.bars_plot = pg.PlotWidget()
        self.bars_plot.setMinimumHeight(50)  # the tab must not force the tensor table taller than it needs
        pi = self.bars_plot.getPlotItem()
        pi.setMenuEnabled(False)
        pi.hideButtons()
        pi.setLabel("left", "rel. change")
        pi.getAxis("left").enableAutoSIPrefix(False)
        pi.showGrid(y=True, alpha=0.15)
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.8, brush=pg.mkBrush(palette.ACCENT), pen=pg.mkPen(None))
        pi.addItem(self.bars)

        self.hist = HistogramWidget()
        self.hist.plot.setMinimumHeight(80)
        self.hist.bins.setValue(128)
        self.hist.binsChanged.connect(lambda _b: self._measure_current())
        self.hist_label = QLabel("select a tensor to see A and B")
        self.hist_label.setObjectName("muted")
        self.hist_label.setWordWrap(True)

        right = QSplitter(Qt.Orientation.Vertical)
        self.bars_plot.setToolTip("relative change ‖B−A‖/‖A‖ per layer (pooled over its tensors)")
        right.addWidget(self.bars_plot)
        right.addWidget(self.roll_table)
        hw = QWidget()
        hl = QVBoxLayout(hw)
        hl.setContentsMargins(0, 0, 0, 0)
        hl.addWidget(self.hist_label)
        hl.addWidget(self.hist, 1)
        right.addWidget(hw)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.table)
        split.addWidget(right)
        right.setSizes([170, 140, 260])
        split.setSizes([560, 480])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.summary)
        lay.addWidget(split, 1)
        self._set_busy(False)
        self._refilter()

        jobs = self.session.jobs
        jobs.result.connect(self._on_result)
        jobs.error.connect(self._on_error)
        jobs.progress.connect(self._on_progress)
        jobs.finished.connect(self._on_finished)
        self.session.loaded.connect(self._on_loaded)

    # ------------------------------------------------------------------ public
    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Compare with checkpoint B", os.path.dirname(self.other or "") or os.getcwd(),
            "Checkpoints (*.safetensors *.bin *.pt *.pth *.ckpt *.index.json);;All files (*)")
        if path:
            self.compare_with(path)

    def compare_with(self, path: str) -> None:
        """Diff the open checkpoint (A) against ``path`` (B) in the background."""
        self.other = os.path.abspath(path)
        self.session.extras["compare"] = self.other
        self.path_label.setText(f"A: {self._a_name()}   vs   B: {self.other}")
        self.run()

    def run(self) -> None:
        rep = self.session.report
        if rep is None or self.other is None:
            return
        index_a, other = rep.index, self.other
        self._pending = []
        self.entries, self.rollup = [], []
        self.model.set_records([])
        self.roll_model.set_records([])
        self._draw_bars()
        self.summary.setText("comparing…")
        self._set_busy(True)

        def job(progress: Any, cancelled: Any) -> Any:
            from ..core.checkpoint import open_checkpoint
            from ..core.stats import diff_checkpoints, module_rollup

            entries = diff_checkpoints(index_a, open_checkpoint(other), progress=progress, cancel=cancelled)
            return entries, module_rollup(entries)

        self.session.jobs.start("diff", job)

    def cancel(self) -> None:
        self.session.jobs.cancel("diff")
        self.session.jobs.cancel("diff_hist")
        self._set_busy(False)
        self.summary.setText("cancelled")

    def select_name(self, name: str) -> bool:
        for r, e in enumerate(self.model.records):
            if e.name == name:
                idx = self.proxy.mapFromSource(self.model.index(r, 0))
                if not idx.isValid():
                    self.only_diff.setChecked(False)
                    idx = self.proxy.mapFromSource(self.model.index(r, 0))
                self.table.setCurrentIndex(idx)
                return True
        return False

    # ------------------------------------------------------------------ slots
    def _on_loaded(self, _loaded: Any) -> None:
        other = self.session.extras.get("compare")
        if other:
            self.compare_with(other)

    def _on_result(self, channel: str, value: object) -> None:
        if channel == "diff":
            self.entries, self.rollup = value  # type: ignore[misc]
            self.model.set_records(self.entries)
            self.roll_model.set_records(self.rollup)
            self._draw_bars()
            self._summarise()
            self.diffReady.emit(self.entries)
        elif channel == "diff_hist":
            name, sa, sb = value  # type: ignore[misc]
            self._show_hist(name, sa, sb)

    def _on_error(self, channel: str, msg: str) -> None:
        if channel == "diff":
            self.summary.setText(f"<span style='color:{palette.look('missing').color}'>⚠ {msg}</span>")
        elif channel == "diff_hist":
            self.hist.clear("cannot read this tensor")
            self.hist_label.setText(msg)

    def _on_progress(self, channel: str, done: int, total: int) -> None:
        if channel == "diff" and total:
            self.progress.setValue(int(1000 * done / total))

    def _on_finished(self, channel: str) -> None:
        if channel == "diff":
            self._set_busy(False)

    def _on_current(self, cur: QModelIndex, _prev: QModelIndex) -> None:
        if cur.isValid():
            self._measure(self.proxy.mapToSource(cur).row())

    # ------------------------------------------------------------------ helpers
    def _a_name(self) -> str:
        rep = self.session.report
        return os.path.basename(os.path.normpath(rep.index.path)) if rep is not None else "?"

    def _refilter(self) -> None:
        only = self.only_diff.isChecked()
        self.proxy.accept = (lambda e: e.status != "same") if only else None
        self.proxy.invalidate()

    def _summarise(self) -> None:
        counts: dict[str, int] = {}
        for e in self.entries:
            counts[e.status] = counts.get(e.status, 0) + 1
        parts = []
        for st in ("same", "changed", "only_a", "only_b", "shape_mismatch"):
            n = counts.get(st, 0)
            lk = palette.look(STATUS_KIND[st])
            parts.append(f"<span style='color:{lk.color if n else palette.MUTED_TEXT}'><b>{n}</b> {STATUS_LABEL[st]}</span>")
        moved = sorted((m for m in self.rollup if m.rel_change), key=lambda m: -m.rel_change)[:3]
        most = ", ".join(f"{m.prefix} ({_num(m.rel_change, 3)})" for m in moved)
        self.summary.setText(" · ".join(parts) + (f" &nbsp;|&nbsp; moved most: {most}" if most else ""))

    def _draw_bars(self) -> None:
        layers = [m for m in self.rollup if m.rel_change is not None]
        xs = list(range(len(layers)))
        hs = [m.rel_change for m in layers]
        self.bars.setOpts(x=xs, height=hs, width=0.8)
        ax = self.bars_plot.getPlotItem().getAxis("bottom")
        step = max(1, math.ceil(len(layers) / 8))
        ax.setTicks([[(i, _tick(m.prefix)) for i, m in enumerate(layers) if i % step == 0], []])
        self.bars_plot.getPlotItem().enableAutoRange()

    def _measure_current(self) -> None:
        cur = self.table.currentIndex()
        if cur.isValid():
            self._measure(self.proxy.mapToSource(cur).row())

    def _measure(self, row: int) -> None:
        e = self.model.records[row]
        rep = self.session.report
        if rep is None or self.other is None:
            return
        if e.name_a is None or e.name_b is None:
            self.hist.clear("only in " + ("A" if e.name_a else "B"))
            self.hist_label.setText(f"{e.name}: {STATUS_LABEL[e.status]}")
            return
        index_a, other, bins = rep.index, self.other, self.hist.bins.value()
        na, nb = e.name_a, e.name_b

        def job(progress: Any, cancelled: Any) -> Any:
            from ..core.checkpoint import TensorReader, open_checkpoint
            from ..core.stats import tensor_stats

            with TensorReader(index_a) as ra, TensorReader(open_checkpoint(other)) as rb:
                sa = tensor_stats(ra, na, bins=bins, cancel=cancelled)
                sb = tensor_stats(rb, nb, bins=bins, cancel=cancelled)
                if sa.min is None or sb.min is None:
                    return e.name, sa, sb
                lo, hi = min(sa.min, sb.min), max(sa.max, sb.max)
                if hi > lo:
                    sa = tensor_stats(ra, na, bins=bins, hist_range=(lo, hi), cancel=cancelled)
                    sb = tensor_stats(rb, nb, bins=bins, hist_range=(lo, hi), cancel=cancelled)
                return e.name, sa, sb

        self.hist.set_message("computing…")
        self.session.jobs.start("diff_hist", job)

    def _show_hist(self, name: str, sa: Any, sb: Any) -> None:
        if not sa.counts:
            self.hist.clear("no finite values in A")
        else:
            self.hist.set_data(sa.edges, sa.counts, label="A")
            if sb.counts:
                self.hist.set_overlay("B", sb.edges, sb.counts)
        self.hist_label.setText(
            f"<b>{name}</b><br>A: mean {_num(sa.mean)}, std {_num(sa.std)}, min {_num(sa.min)}, max {_num(sa.max)}"
            f"<br>B: mean {_num(sb.mean)}, std {_num(sb.std)}, min {_num(sb.min)}, max {_num(sb.max)}")
        self.histReady.emit((name, sa, sb))

    def _set_busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.cancel_btn.setVisible(busy)
        if busy:
            self.progress.setValue(0)


def _shape(shape: Any, dtype: Any) -> str:
    return "—" if shape is None else f"{list(shape)} {dtype or ''}".strip()


def _tick(prefix: str) -> str:
    """A short axis label: the layer index (``3``) or the last component (``word_embeddings``)."""
    last = prefix.rsplit(".", 1)[-1]
    return last if last.isdigit() else last[:10]


def install_compare_panel(window: Any) -> ComparePanel:
    """Add the "Compare" tab and menu to a MainWindow."""
    panel = ComparePanel(window)
    window.add_panel("Compare A/B", panel)
    window.compare_panel = panel
    menu = window.add_menu("&Compare")
    a = QAction("Compare &with…", window)
    a.setShortcut("Ctrl+Shift+C")
    a.triggered.connect(lambda _c=False: (window.tabs.setCurrentWidget(panel), panel.open_dialog()))
    menu.addAction(a)
    return panel
