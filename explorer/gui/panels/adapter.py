"""The "Adapter" tab: a PEFT adapter shown on its base, as peft loads it, and ΔW of the selected module.

The session's report is then the adapter's view (``core.adapter_view.adapter_view``): the base's tree with each
adapted module holding its adapter keys under peft's names, coloured by what ``load_adapter`` does with them. This
tab adds:

- badges in the tree: an adapted module gets ``LoRA r8 α16`` (its peft type, r, alpha; "DoRA" when it has a
  magnitude vector; the colour of its worst adapter key: matched, missing or mismatched), a ``modules_to_save``
  module ``saved``, and every module above them the roll-up ``LoRA ×12``;
- the summary: peft type, r / alpha / targets, counts coloured as the tree, peft's findings, adapter parameters
  vs the base;
- a table of the adapted modules with ‖ΔW‖_F, ‖ΔW‖/‖W‖, σ₁, the numerical rank and "untrained" (lora_B all
  zeros); choosing a row selects the module in the tree;
- for the selected adapted module: its singular values and a histogram of ΔW = scaling·B·A streamed block by
  block (``core.adapter_view.DeltaReader`` through ``core.stats``) in a job (purpose ``"delta"``).

A dropped adapter folder (``adapter_config.json``) opens on the base the window shows.
"""
from __future__ import annotations

import html
import os
from typing import Any, Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QSplitter, QVBoxLayout, QWidget

from ...core.fmt import human_count, safe_text
from ...core.fmt import short_float as _num
from .. import palette
from ..kinds import Kind
from ..request import Source
from ..widgets.badges import KeyDelegate
from ..widgets.histogram import HistogramWidget
from ..widgets.records import RecordProxy, RecordTable, RecordTableModel, sortable
from .base import DropChoice, Panel, PanelHost

PEFT_PREFIX = "base_model.model."
_SHORT = {"LORA": "LoRA", "ADALORA": "AdaLoRA", "IA3": "IA³", "LOHA": "LoHa", "LOKR": "LoKr", "OFT": "OFT",
          "BOFT": "BOFT", "VERA": "VeRA", "FOURIERFT": "FourierFT"}
UNTRAINED = "✗ untrained"


def type_label(m: Any) -> str:
    t = _SHORT.get(m.peft_type, m.peft_type.title())
    return "DoRA" if m.use_dora else t


def module_badge(m: Any) -> str:
    """``LoRA r8 α16`` (what the tree shows beside an adapted module)."""
    parts = [type_label(m)]
    if m.r is not None:
        parts.append(f"r{m.r}")
    if m.alpha is not None:
        parts.append(f"α{m.alpha:g}")
    return " ".join(parts)


class AdapterPanel(Panel):
    title = "Adapter"

    deltaReady = Signal(object)  # (module path, TensorStats of ΔW) drawn in the histogram

    def __init__(self, host: PanelHost) -> None:
        super().__init__(host)
        self._badges: dict[str, tuple[str, str]] = {}
        self._by_path: dict[str, Any] = {}  # module path -> AdaptedModule
        self._deltas: dict[str, Any] = {}  # module path -> DeltaStats
        self.current: str | None = None  # the adapted module shown below the table

        self.summary = QLabel("Open a PEFT adapter folder (adapter_config.json) — or drop one on a window showing its base.")
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        def bg(m: Any, col: int) -> Any:
            d = self._deltas.get(m.path)
            if col == 4 and d is not None and d.untrained:
                return palette.tint(Kind.MISSING)
            kind = self._kind_of(m)
            return palette.tint(kind) if kind is not Kind.MATCHED and col == 0 else None

        def rel(m: Any) -> float | None:
            d = self._deltas.get(m.path)
            return d.relative if d is not None else None

        def dv(attr: str) -> Callable[[Any], Any]:
            return lambda m: getattr(self._deltas[m.path], attr) if m.path in self._deltas else None

        def sigma1(m: Any) -> float | None:
            d = self._deltas.get(m.path)
            return d.singular_values[0] if d is not None and d.singular_values else None

        self.model = RecordTableModel([
            ("module", lambda m: m.path, lambda m: m.path),
            ("adapter", lambda m: module_badge(m), lambda m: module_badge(m)),
            ("‖ΔW‖", lambda m: _num(dv("norm")(m)), lambda m: sortable(dv("norm")(m))),
            ("‖ΔW‖/‖W‖", lambda m: _pct(rel(m)), lambda m: sortable(rel(m))),
            ("rank", lambda m: _rank(self._deltas.get(m.path)), lambda m: sortable(dv("effective_rank")(m))),
        ], self, background=bg)
        self.table = RecordTable(self.model, RecordProxy(self))
        self.table.fit_columns(("e.layer.0.attention.self.query", "LoRA r16 α32", "1.25e-2", "0.0012%", "16/16 ✗"))
        self._key_delegate = KeyDelegate(self)
        self.table.setItemDelegateForColumn(0, self._key_delegate)
        self.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # the base's module order
        self.table.recordChosen.connect(lambda m: host.select(m.path))

        self.delta_title = QLabel("")
        self.delta_title.setTextFormat(Qt.TextFormat.RichText)
        self.delta_title.setWordWrap(True)
        self.histogram = HistogramWidget(inputs=host.inputs, value_label="ΔW entry")  # its plot: built when shown
        self.histogram.set_message("select an adapted module")
        self.histogram.binsChanged.connect(lambda _b: self._show_module(self.current, force=True))
        lower = QWidget()
        ll = QVBoxLayout(lower)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.delta_title)
        ll.addWidget(self.histogram, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.table)
        split.addWidget(lower)
        split.setSizes([600, 400])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.summary)
        lay.addWidget(split, 1)

        self.session.loaded.connect(self._on_loaded)
        self.session.selectionChanged.connect(self._on_selection)

    # ------------------------------------------------------------------ protocol
    def badges(self, key: str, is_leaf: bool) -> list[tuple[str, str]]:
        b = self._badges.get(key)
        return [b] if b is not None and not is_leaf else []

    def drop_choices(self, path: str) -> list[DropChoice]:
        from ..opening import adapter_folder

        folder = adapter_folder(path)
        if folder is None:
            return []
        src = self.session.current.source if self.session.current is not None else None
        if src is not None and src.adapter is None and src.checkpoint:
            base = src.checkpoint
            run = lambda: self.host.open_source(Source(checkpoint=base, arch=src.arch, adapter=folder))  # noqa: E731
            return [DropChoice("Open as adapter on this base", run, only=True)]
        if src is not None and src.adapter is not None:
            base, cfg = src.checkpoint, src.config
            run = lambda: self.host.open_source(Source(checkpoint=base, config=cfg, arch=src.arch, adapter=folder))  # noqa: E731
            return [DropChoice("Open as adapter on the same base", run, only=True)]
        return [DropChoice("Open as adapter", lambda: self.host.open_source(Source(adapter=folder)), only=True)]

    def prepare_screenshot(self) -> Callable[[], bool] | None:
        """An adapter's shot shows this tab and ΔW of the first adapted module."""
        def pick() -> bool:
            rep = self.session.adapter
            if rep is None or not rep.adapted:
                return False
            self.host.raise_panel(self)
            m = next((m for m in rep.adapted if m.path in self._deltas), rep.adapted[0])
            return bool(self.host.select(m.path))

        return pick

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        self.histogram.ensure_plot()  # the tab opened: its plot is built now (not at start-up)

    # ------------------------------------------------------------------ slots
    def _on_loaded(self, loaded: Any) -> None:
        self.session.jobs.cancel("delta")
        rep = loaded.adapter
        self.current = None
        self._badges, self._by_path, self._deltas = {}, {}, {}
        if rep is None:
            self.model.set_records([])
            self.summary.setText("Not an adapter: open a PEFT adapter folder (adapter_config.json) to see it on its base.")
            self.histogram.clear("select an adapted module")
            self.delta_title.setText("")
            return
        self._by_path = {m.path: m for m in rep.adapted}
        self._deltas = {d.module: d for d in rep.deltas}
        self._build_badges(rep)
        self.model.set_records(list(rep.adapted))
        self.summary.setText(summary_html(rep))
        self.histogram.clear("select an adapted module (here or in the tree)")
        self.delta_title.setText("")
        self.host.raise_panel(self)

    def _kind_of(self, m: Any) -> Kind:
        rep = self.session.adapter
        if rep is None:
            return Kind.MATCHED
        keys = set(m.keys)
        if keys & {k for k, _, _ in rep.mismatched}:
            return Kind.MISMATCHED
        if keys & set(rep.missing):
            return Kind.MISSING
        return Kind.MATCHED

    def _build_badges(self, rep: Any) -> None:
        roll: dict[str, dict[str, int]] = {}
        for m in rep.adapted:
            kind = self._kind_of(m)
            d = self._deltas.get(m.path)
            text = module_badge(m) + (" · untrained" if d is not None and d.untrained else "")
            self._badges[m.path] = (text, palette.look(kind if kind is not Kind.MATCHED else Kind.RENAMED).color)
            parts = m.path.split(".")
            for i in range(len(parts)):
                anc = ".".join(parts[:i])
                c = roll.setdefault(anc, {})
                c[type_label(m)] = c.get(type_label(m), 0) + 1
        for s in rep.modules_to_save:
            self._badges[s.path] = ("saved" if s.replaces_base else "saved (new)", palette.look(Kind.RENAMED).color)
        for anc, c in roll.items():
            if anc not in self._badges:
                self._badges[anc] = (" ".join(f"{t} ×{n}" for t, n in c.items()), palette.MUTED_TEXT)

    def _on_selection(self, sel: Any) -> None:
        if sel is None or self.session.adapter is None:
            return
        path = self._module_for(sel.title)
        if path is not None:
            self.table.follow(lambda m: m.path == path)
            self._show_module(path)

    def _module_for(self, key: str) -> str | None:
        k = key.removeprefix(PEFT_PREFIX)
        while k:
            if k in self._by_path:
                return k
            k = k.rpartition(".")[0]
        return None

    def _show_module(self, path: str | None, *, force: bool = False) -> None:
        if path is None or (path == self.current and not force):
            return
        self.current = path
        m = self._by_path[path]
        d = self._deltas.get(path)
        self.delta_title.setText(delta_html(m, d))
        reader = self.session.reader
        from ...core.adapter_view import delta_name

        name = delta_name(path)
        if d is None or not hasattr(reader, "pairs") or name not in reader.pairs:
            self.histogram.clear("no ΔW for this module (not a LoRA pair that loaded)")
            return
        bins = self.histogram.bins.value()
        self.histogram.clear("streaming ΔW…")

        def job(progress: Any, cancelled: Any) -> Any:
            from ...core.stats import aggregate_stats

            return aggregate_stats(reader, [name], label=name, bins=bins, progress=progress, cancel=cancelled, fit=True)

        h = self.session.jobs.start(job, purpose="delta")
        h.returned.connect(lambda st, p=path: self._draw(p, st))
        h.errored.connect(lambda msg: self.histogram.clear(f"ΔW: {msg}"))
        self.host.ready.wait_for(h)

    def _draw(self, path: str, st: Any) -> None:
        if path != self.current:
            return
        if d := self._deltas.get(path):
            if d.untrained:
                self.histogram.clear("ΔW = 0: lora_B is all zeros (peft's initialisation) — untrained")
                self.deltaReady.emit((path, st))
                return
        self.histogram.set_data(st.edges, st.counts, label="ΔW")
        m = self._by_path[path]
        self.delta_title.setText(delta_html(m, self._deltas.get(path)) + f"<br><span style='color:{palette.MUTED_TEXT}'>ΔW "
                                 f"entries: {human_count(st.numel)} · mean {_num(st.mean)} · std {_num(st.std)} · "
                                 f"min {_num(st.min)} · max {_num(st.max)}</span>")
        self.deltaReady.emit((path, st))


# --------------------------------------------------------------------------------------------- text


def _pct(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{100 * v:.3g}%"


def _rank(d: Any) -> str:
    if d is None:
        return "—"
    return f"{d.effective_rank}/{d.r}" + (f" {UNTRAINED}" if d.untrained else "")


def _c(kind: Kind, text: str, n: int) -> str:
    col = palette.look(kind).color if n else palette.MUTED_TEXT
    return f"<b style='color:{col}'>{n} {text}</b>" if n else f"<span style='color:{col}'>{n} {text}</span>"


def summary_html(rep: Any) -> str:
    e = lambda s: html.escape(safe_text(str(s)))  # noqa: E731
    s = rep.summary()
    c = rep.counts()
    head = (f"<b>{e(_SHORT.get(rep.peft_type, rep.peft_type))}</b> adapter <b>{e(os.path.basename(rep.adapter.folder))}</b>"
            f" on <b>{e(rep.arch)}</b> "
            + (f"(weights {e(os.path.basename(os.path.normpath(rep.base.config)))})" if rep.base.index is not None
               else "(config only: no base weights)")
            + f" · {e(rep.peft_class)}")
    cfg = []
    if s.get("r") is not None:
        cfg.append(f"r={e(s['r'])}")
    if s.get("lora_alpha") is not None:
        cfg.append(f"α={e(s['lora_alpha'])}")
    if s.get("target_modules") is not None:
        tm = s["target_modules"]
        cfg.append("targets " + e(", ".join(tm) if isinstance(tm, list) else tm))
    for flag, name in (("use_dora", "DoRA"), ("use_rslora", "rsLoRA")):
        if s.get(flag):
            cfg.append(name)
    pct = s.get("percent_of_base")
    params = f"{human_count(rep.adapter_params)} params" + (f" ({pct:.3g}% of the base)" if pct is not None else "")
    counts = " · ".join([
        _c(Kind.MATCHED, "loaded", c["matched"]), _c(Kind.MISSING, "missing", c["missing"]),
        _c(Kind.UNEXPECTED, "unexpected", c["unexpected"]), _c(Kind.MISMATCHED, "mismatched", c["mismatched"]),
    ])
    untrained = sum(1 for d in rep.deltas if d.untrained)
    lines = [head, " · ".join(cfg + [params]),
             f"peft's load_adapter: {counts} · {len(rep.adapted)} modules adapted"
             + (f", {len(rep.modules_to_save)} saved whole" if rep.modules_to_save else "")
             + (f" · <b style='color:{palette.look(Kind.MISSING).color}'>{untrained} untrained (lora_B all zeros)</b>"
                if untrained else "")]
    for f in rep.findings[:4]:
        lines.append(f"<b style='color:{palette.look(Kind.MISSING).color}'>⚠ {e(f.message)}</b>")
    return "<br>".join(lines)


def delta_html(m: Any, d: Any) -> str:
    e = lambda s: html.escape(safe_text(str(s)))  # noqa: E731
    head = f"<b>{e(m.path)}</b> · {e(m.layer)} · {e(module_badge(m))}" + (
        f" · scaling {_num(m.scaling)}" if m.scaling is not None else "")
    if d is None:
        return head + f"<br><span style='color:{palette.MUTED_TEXT}'>no ΔW statistics for this {e(m.peft_type)} module</span>"
    if d.untrained:
        return head + (f"<br><b style='color:{palette.look(Kind.MISSING).color}'>lora_B all zeros: untrained</b> "
                       "(peft's initialisation: ΔW = 0)")
    rel = f" · ‖ΔW‖/‖W‖ {_pct(d.relative)}" if d.relative is not None else " · no base weights for ‖W‖"
    sv = ", ".join(_num(x) for x in d.singular_values[:8]) + (" …" if len(d.singular_values) > 8 else "")
    dora = (" · DoRA: ΔW is scaling·B·A, before the magnitude vector rescales W + ΔW (the merge applies it)"
            if m.use_dora else "")
    return (head + f"<br>‖ΔW‖<sub>F</sub> {_num(d.norm)}{rel} · rank {d.effective_rank}/{d.r}"
            + f"<br><span style='color:{palette.MUTED_TEXT}'>σ(ΔW): {sv}{dora}</span>")
