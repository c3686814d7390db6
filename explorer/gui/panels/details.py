"""The details panel: what a selected tensor (or module) is, how it matched, its statistics and histogram.

It shows ``session.selection``. Statistics come from ``explorer.core.stats.aggregate_stats`` (streamed over mmap)
in a job (purpose ``"stats"``), with progress and cancel; a newer selection cancels the older job. Results are cached
per (tensors, bins) in the session. ``statsReady`` is emitted after the histogram was drawn.
"""
from __future__ import annotations

import math

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ...core.fmt import human_bytes, human_count, safe_text
from ...core.fmt import short_float as _fmt
from ..kinds import Kind
from .. import palette
from ..widgets.badges import KeyLabel, breakable
from ..models.entries import Row, TreeItem
from ..widgets.histogram import HistogramWidget
from ..widgets.records import JobProgress
from ..session import Selection, Session
from ..models.tree_model import plain_tooltip

__all__ = ["DetailsPanel", "Selection", "selection_for_item", "selection_for_row"]

MAX_AGGREGATE = 4096  # tensors pooled for a module histogram


KEY_FACTS = ("Model key", "On disk", "In A", "In B")


class DetailsPanel(QWidget):
    statsReady = Signal(object)  # TensorStats drawn in the histogram
    statsFailed = Signal(str)

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.selection: Selection | None = None
        self.last_stats: Any = None

        self.title = QLabel("Nothing selected")
        self.title.setObjectName("detailsTitle")
        self.title.setWordWrap(True)  # dotted names break after their dots (zero-width spaces; see show_selection)
        self.badge = QLabel("")
        self.badge.setObjectName("badge")
        head = QHBoxLayout()
        head.addWidget(self.badge, 0, Qt.AlignmentFlag.AlignTop)
        head.addWidget(self.title, 1)

        self.facts = QGridLayout()
        self.facts.setHorizontalSpacing(10)
        self.facts.setVerticalSpacing(2)
        self.facts.setColumnStretch(1, 1)
        facts_w = QWidget()
        facts_w.setLayout(self.facts)

        self.stats_grid = QGridLayout()
        self.stats_grid.setHorizontalSpacing(12)
        self.stats_grid.setVerticalSpacing(1)
        self.stat_labels: dict[str, QLabel] = {}  # the figures, by name ("mean", "elements", ...)
        names = ["mean", "std", "min", "max", "abs-max", "zeros", "NaN", "Inf", "L2 norm", "elements"]
        for i, n in enumerate(names):
            r, c = divmod(i, 2)
            k = QLabel(n)
            k.setObjectName("statKey")
            v = QLabel("—")
            v.setObjectName("statValue")
            v.setMinimumWidth(_widest_figure(v, n))  # never clipped: the widest figure always fits (issue 10 #2)
            v.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.stats_grid.addWidget(k, r, 2 * c)
            self.stats_grid.addWidget(v, r, 2 * c + 1)
            self.stat_labels[n] = v
        self.stats_grid.setColumnStretch(1, 1)
        self.stats_grid.setColumnStretch(3, 1)
        stats_w = QFrame()
        stats_w.setObjectName("statsBox")
        stats_w.setLayout(self.stats_grid)

        self.job_progress = JobProgress(on_cancel=self.cancel, tooltip="Stop computing statistics", height=6, max_width=None)
        self.status = QLabel("")
        self.status.setObjectName("muted")
        self.status.setTextFormat(Qt.TextFormat.PlainText)  # error messages quote names from files
        self.status.setWordWrap(True)  # "27 bins, 256 asked: ..." wraps instead of widening the panel
        prow = QHBoxLayout()
        prow.addWidget(self.status, 1)
        prow.addWidget(self.job_progress, 2)

        self.histogram = HistogramWidget(inputs=session.input_files)
        self.histogram.binsChanged.connect(lambda _b: self._measure())

        info = QWidget()
        info.setObjectName("detailsInfo")
        info.setMaximumWidth(470)
        left = QVBoxLayout(info)
        left.setContentsMargins(0, 0, 0, 0)
        left.setSpacing(6)
        left.addLayout(head)
        left.addWidget(facts_w)
        left.addWidget(stats_w)
        left.addLayout(prow)
        left.addStretch(1)
        # the facts scroll when the panel is short, instead of forcing the window taller
        scroll = QScrollArea()
        scroll.setWidget(info)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # as wide as the stats box needs (figures never clip), at most 490 px: the names in it wrap or elide
        scroll.setMinimumWidth(max(310, info.minimumSizeHint().width() + 4))
        scroll.setMaximumWidth(max(490, scroll.minimumWidth()))
        lay = QHBoxLayout(self)
        lay.setContentsMargins(8, 6, 8, 6)
        lay.setSpacing(10)
        lay.addWidget(scroll, 0)
        # a line under the histogram for what an overlay means (the fresh-init verdict, set by the init panel)
        self.histogram_note = QLabel("")
        self.histogram_note.setObjectName("histNote")
        self.histogram_note.setWordWrap(True)
        self.histogram_note.setTextFormat(Qt.TextFormat.RichText)
        self.histogram_note.hide()
        right = QVBoxLayout()
        right.setSpacing(2)
        right.addWidget(self.histogram, 1)
        right.addWidget(self.histogram_note)
        lay.addLayout(right, 1)
        facts_w.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)

        session.selectionChanged.connect(self.show_selection)
        session.loaded.connect(lambda _l: self.show_selection(None))

    # ---- public
    def show_selection(self, sel: Selection | None) -> None:
        """Describe ``sel`` and start measuring its tensors (cancels the previous measurement)."""
        self.selection = sel
        self.session.jobs.cancel("stats")
        self.job_progress.set_busy(False)
        self.last_stats = None
        self._fill_stats(None)
        self.status.setText("")  # no "16 tensors pooled" or overlay note left from the previous selection
        self.set_note("")
        while self.facts.count():
            w = self.facts.takeAt(0).widget()
            if w is not None:
                # hidden now: a deferred delete waits for the event loop it was posted in, so while a context menu
                # runs its own loop (a right-click selects, then opens the menu) the old facts stayed drawn under
                # the new ones
                w.hide()
                w.deleteLater()
        if sel is None:
            self.title.setText("Select a module or tensor")
            self.badge.clear()
            self.histogram.set_subject("")
            self.histogram.clear("select a tensor")
            return
        lk = palette.look(sel.kind)
        self.histogram.set_subject(sel.title)
        # names come from files: shown with control/bidi characters escaped, as plain text (never rich text)
        title = safe_text(sel.title)
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.title.setText(breakable(title))  # after escaping: these zero-width spaces are ours
        self.title.setToolTip(plain_tooltip(title))
        self.badge.setPixmap(palette.icon(sel.kind, 18).pixmap(18, 18))
        self.badge.setToolTip(f"{lk.label}: {lk.meaning}")
        for i, (k, v) in enumerate(sel.facts):
            v = safe_text(v)
            kl = QLabel(k)
            kl.setObjectName("factKey")
            if k in KEY_FACTS and "." in v and " " not in v:
                vl = KeyLabel(v)  # a key path: shortened like everywhere else (bert.…layer.5.attention.…)
            else:
                vl = QLabel(v)
                vl.setWordWrap(True)
            vl.setTextFormat(Qt.TextFormat.PlainText)
            vl.setToolTip(plain_tooltip(v))
            vl.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # long keys clip, never widen
            vl.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            if k == "Status":
                vl.setStyleSheet(f"color: {lk.text}; font-weight: 600;")
            self.facts.addWidget(kl, i, 0, Qt.AlignmentFlag.AlignTop)
            self.facts.addWidget(vl, i, 1)
        self.histogram.clear_overlay()
        self._measure()

    def redraw(self) -> None:
        """Draw the current selection again (from the stats cache): its overlay and note are redone by whoever
        listens to ``statsReady`` (e.g. after the open tab changed what the overlay should be)."""
        if self.selection is None:
            return
        self.histogram.clear_overlay()
        self.histogram_note.hide()
        self._measure()

    def stat_text(self, name: str) -> str:
        """The figure shown for ``name`` ("mean", "NaN", ...) in the stats box."""
        return self.stat_labels[name].text()

    def set_note(self, html: str) -> None:
        """The line under the histogram saying what its overlay is (fresh init, checkpoint B); "" hides it."""
        self.histogram_note.setText(html)
        self.histogram_note.setVisible(bool(html))

    def cancel(self) -> None:
        self.session.jobs.cancel("stats")
        self.job_progress.set_busy(False)
        self.status.setText("cancelled")

    # ---- measuring
    def _measure(self) -> None:
        sel = self.selection
        if sel is None:
            return
        if not sel.names:
            self.histogram.clear(sel.empty_reason or "no data on disk")
            self.status.setText(sel.empty_reason)
            return
        reader = self.session.reader
        if reader is None:
            return
        # small tensors get fewer bins (about sqrt(n), core.stats.fit_bins) so the shape is not noise; the spin box
        # is the most wanted, and the result's bins_note says why there are fewer (status line, CSV's first line)
        bins = self.histogram.bins.value()
        key = (sel.names, bins)
        hit = self.session.cached_stats(key)
        if hit is not None:
            self._show(hit)
            return
        names, label = sel.names, sel.title

        def job(progress: Any, cancelled: Any) -> Any:
            from ...core.stats import aggregate_stats

            return aggregate_stats(reader, list(names), label=label, bins=bins, progress=progress, cancel=cancelled,
                                   fit=True)

        self.histogram.set_message("computing…")
        self.status.setText(f"reading {len(names)} tensor{'s' if len(names) > 1 else ''}…")
        h = self.session.jobs.start(job, purpose="stats")
        h.returned.connect(lambda st: self._on_measured(key, st))
        h.errored.connect(self._on_measure_failed)
        self.job_progress.track(h)

    def _on_measured(self, key: tuple, st: Any) -> None:
        self.session.cache_stats(key, st)
        if self.selection is not None and key[0] == self.selection.names:
            self._show(st)

    def _on_measure_failed(self, msg: str) -> None:
        self.histogram.clear("cannot read this tensor")
        self.status.setText(safe_text(msg))
        self.statsFailed.emit(msg)

    def _show(self, st: Any) -> None:
        self.last_stats = st
        self.job_progress.set_busy(False)
        self._fill_stats(st)
        if st.numel == 0:
            self.histogram.clear("empty tensor (0 elements)")
            self.status.setText("")
        elif not st.counts or st.finite == 0:
            self.histogram.clear("no finite values (all NaN/Inf)")
        else:
            self.histogram.set_data(st.edges, st.counts, label="checkpoint", integer=st.integer)
            self.histogram.set_caption(self.selection.title if self.selection else st.name, st.bins_note)
            notes = [st.bins_note] if st.bins_note and not st.constant else []  # constant: said just below
            if st.constant:
                notes.append(f"constant tensor: every finite value is {_fmt(st.min)}")
            if st.n_tensors > 1:
                notes.append(f"{st.n_tensors} tensors pooled")
            if st.integer:
                notes.append("integer values")
            self.status.setText("; ".join(notes))
        self.statsReady.emit(st)

    def _fill_stats(self, st: Any) -> None:
        L = self.stat_labels
        if st is None:
            for v in L.values():
                v.setText("—")
            return
        L["mean"].setText(_fmt(st.mean))
        L["std"].setText(_fmt(st.std))
        # integer tensors (num_batches_tracked, position ids): their extremes as the integers they are, not 2.53e+04
        ext = (lambda v: f"{int(v):,}" if v is not None and math.isfinite(v) else _fmt(v)) if st.integer else _fmt
        L["min"].setText(ext(st.min))
        L["max"].setText(ext(st.max))
        L["abs-max"].setText(ext(st.absmax))
        L["zeros"].setText(f"{100 * st.zeros:.2f}%")
        for k, n in (("NaN", st.nan), ("Inf", st.inf)):
            L[k].setText(f"{n:,}")
            L[k].setStyleSheet(f"color: {palette.look('missing').text}; font-weight: 600;" if n else "")
        L["L2 norm"].setText(_fmt(st.l2))
        L["elements"].setText(f"{st.numel:,}")



def _widest_figure(label: QLabel, name: str) -> int:
    """The width the figure ``name`` needs at most in practice: a signed exponent number ("-1.178e-05"), a count
    up to billions ("11,720,448"), a percentage. A wider figure still widens its label (never clipped)."""
    sample = {"zeros": "100.00%", "NaN": "8,888,888,888", "Inf": "8,888,888,888",
              "elements": "8,888,888,888"}.get(name, "-8.888e-88")
    return label.fontMetrics().horizontalAdvance(sample) + 2


# --------------------------------------------------------------------------------------------- selections


def selection_for_row(report: Any, r: Row) -> Selection:
    facts = [("Status", palette.look(r.kind).label)] + ([("How", r.how)] if r.how else [])
    if r.name:
        info = report.index.tensors[r.name]
        facts += [("On disk", r.name)]
        if r.key != r.name:
            facts.append(("Model key", r.key or "— (no place in the model)"))
        facts += [("Tensor", f"{r.shape} · {r.dtype} · {human_bytes(info.nbytes)}"), ("File", _short(info.file))]
        return Selection(r.name, r.kind, (r.name,), tuple(facts))
    facts += [("Model key", r.key), ("Tensor", f"{r.shape} · {r.dtype}"), ("Meaning", palette.look(r.kind).meaning)]
    return Selection(r.key, r.kind, (), tuple(facts), empty_reason=_empty_reason(r.kind))


def _short(path: str) -> str:
    import os

    parent = os.path.basename(os.path.dirname(path))
    return f"{parent}/{os.path.basename(path)}" if parent else os.path.basename(path)


def _empty_reason(kind: str) -> str:
    if kind is Kind.MISSING:
        return "not in the checkpoint: newly initialised"
    if kind is Kind.TIED:
        return "not stored: tied to another weight"
    if kind is Kind.COMPUTED:
        return "computed at init, never saved"
    return "no data on disk"


def selection_for_item(report: Any, it: TreeItem) -> Selection:
    lk = palette.look(it.kind)
    if it.is_param:
        facts = [("Status", it.status_text)] + ([("How", it.how)] if it.how else [])
        unplaced = (it.parent is not None and it.parent.group) or it.kind is Kind.IN_CHECKPOINT  # no model key
        facts.append(("On disk" if unplaced else "Model key", it.path))  # "How" already says "no model key"
        if it.ckpt_names and it.ckpt_names != (it.path,):
            facts.append(("On disk", ", ".join(it.ckpt_names[:3]) + (" …" if len(it.ckpt_names) > 3 else "")))
        names = tuple(n for n in it.ckpt_names if n in report.index.tensors)
        size = f" · {human_bytes(sum(report.index.tensors[n].nbytes for n in names))}" if names else ""
        facts.append(("Tensor", f"{it.shape} · {it.dtype}{size} · {it.numel:,} elements"))
        if names:
            facts.append(("File", _short(report.index.tensors[names[0]].file)))
        return Selection(it.path, it.kind, names, tuple(facts), empty_reason=_empty_reason(it.kind))
    # a module: pool its floating-point weights from disk
    names: list[str] = []
    floats: list[str] = []
    for sub in it.walk():
        if sub.is_param:
            for n in sub.ckpt_names:
                info = report.index.tensors.get(n)
                if info is not None and n not in names:
                    names.append(n)
                    if info.is_floating:
                        floats.append(n)
    pooled = tuple((floats or names)[:MAX_AGGREGATE])
    nbytes = sum(report.index.tensors[n].nbytes for n in pooled)
    facts = [("Status", it.status_text or lk.label), ("Module", f"{it.path or '(model)'} · {it.class_name}" if it.class_name else it.path),
             ("Parameters", f"{human_count(it.numel, digits=1)} ({it.numel:,})"),
             ("Histogram", f"{len(pooled)} on-disk tensors pooled ({human_bytes(nbytes)})" if pooled else "no tensors on disk")]
    return Selection(it.path or it.name, it.kind, pooled, tuple(facts), is_module=True,
                     empty_reason="nothing from the checkpoint loads here")
