"""Compare A/B tab and the "looks untrained" tab + fresh-init overlay, on tiny real BERT checkpoints."""
from __future__ import annotations

from explorer.gui.panels import PANELS  # noqa: F401  (the window fixture builds these)

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.gui.conftest import LOAD_TIMEOUT, open_and_wait, select_and_measure
from tests.helpers import save_tiny

Q = "encoder.layer.0.attention.self.query.weight"


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    a = tmp_path_factory.mktemp("a")
    save_tiny("bert", "BertModel", a)
    b = tmp_path_factory.mktemp("b")
    shutil.copy(a / "config.json", b / "config.json")
    sd = load_file(a / "model.safetensors")
    sd[Q] = sd[Q] * 1.1
    del sd["pooler.dense.bias"]
    sd = {"module." + k: v for k, v in sd.items()}  # DDP prefix: paired automatically
    save_file(sd, b / "model.safetensors")
    return a, b


@pytest.fixture
def panels(window):
    from explorer.gui.panels import ComparePanel, InitPanel

    return window.panel(InitPanel), window.panel(ComparePanel)


def legend(hist) -> list[str]:
    """The series names the histogram's legend shows (empty when hidden)."""
    return [label.text for _sample, label in hist.legend.items] if hist.legend.isVisible() else []


def csv_series(hist, tmp_path) -> tuple[list[float], tuple[str, list[float]] | None]:
    """(main series' bin edges, (overlay label, overlay edges) or None) from the histogram's CSV export."""
    path = tmp_path / "hist.csv"
    hist.export_csv(str(path))
    series: list[tuple[str, list[tuple[float, float]]]] = [("", [])]
    for line in path.read_text().splitlines()[2:]:  # after "# histogram of ..." and "left,right,count"
        if line.startswith("# overlay: "):
            series.append((line[len("# overlay: "):], []))
        else:
            a, b, _n = line.split(",")
            series[-1][1].append((float(a), float(b)))

    def edges(rows):
        return [r[0] for r in rows] + [rows[-1][1]]

    over = (series[1][0], edges(series[1][1])) if len(series) > 1 else None
    return edges(series[0][1]), over


def test_compare_table_rollup_bars_and_ab_histogram(qtbot, window, panels, pair, qtmodeltester, tmp_path) -> None:
    _init, cmp = panels
    a, b = pair
    open_and_wait(qtbot, window, checkpoint=str(a))
    with qtbot.waitSignal(cmp.diffReady, timeout=LOAD_TIMEOUT) as blocker:
        cmp.compare_with(str(b / "model.safetensors"))
    by = {e.name: e for e in blocker.args[0]}
    assert by[Q].status == "changed" and by[Q].rel_change == pytest.approx(0.1, rel=1e-5)
    assert by["pooler.dense.bias"].status == "only_a"
    qtmodeltester.check(cmp.model)
    assert cmp.proxy.rowCount() == 2  # only differences by default
    cmp.only_diff.setChecked(False)
    assert cmp.proxy.rowCount() == len(by)
    # roll-up and bars: layer 0 moved, layer 1 did not
    roll = {m.prefix: m for m in cmp.rollup}
    assert roll["encoder.layer.0"].rel_change > 0 and roll["encoder.layer.1"].rel_change == 0
    assert len(cmp.bars.opts["height"]) == len([m for m in cmp.rollup if m.rel_change is not None])
    assert "moved most: encoder.layer.0" in cmp.summary.text()
    # the tab's own histogram is gone: selecting a row selects the tensor in the session, and the details
    # histogram shows A and B over one shared range with the A-vs-B figures under it
    window.tabs.setCurrentWidget(cmp)
    with qtbot.waitSignal(cmp.histReady, timeout=LOAD_TIMEOUT) as hb:
        assert cmp.select_name(Q)
    name, sa, sb = hb.args[0]
    assert name == Q and sa.edges == sb.edges and sum(sa.counts) == sum(sb.counts) == 32 * 32
    assert sb.std == pytest.approx(sa.std * 1.1, rel=1e-5)
    details = window.details
    assert details.selection.names == (Q,)
    assert window.table_model.row(window.table_proxy.mapToSource(window.table.currentIndex()).row()).name == Q
    hist = details.histogram
    assert hist.overlay.isVisible() and legend(hist) == ["A", "B"]
    main, (label, over) = csv_series(hist, tmp_path)
    assert label == "B" and main == list(sa.edges) and over == list(sb.edges)
    note = details.histogram_note.text()
    assert details.histogram_note.isVisibleTo(window) and "rel. change" in note and "cosine" in note and "max |B−A|" in note
    assert "0.1" in note  # the relative change of the query weight
    assert cmp.bars.opts["brushes"] is not None  # the selected tensor's layer is highlighted


def test_compare_overlay_belongs_to_the_compare_tab(qtbot, window, panels, pair, tmp_path) -> None:
    init, cmp = panels
    a, b = pair
    open_and_wait(qtbot, window, checkpoint=str(a))
    with qtbot.waitSignal(cmp.diffReady, timeout=LOAD_TIMEOUT):
        cmp.compare_with(str(b / "model.safetensors"))
    # a tensor selected in the tree while the Compare tab is open gets the A/B overlay, and its row follows
    window.tabs.setCurrentWidget(cmp)
    with qtbot.waitSignal(cmp.histReady, timeout=LOAD_TIMEOUT):
        select_and_measure(qtbot, window, Q)
    assert cmp.model.records[cmp.proxy.mapToSource(cmp.table.currentIndex()).row()].name == Q
    # back on the Tensors tab the same tensor is overlaid with its fresh init again
    with qtbot.waitSignal(init.overlayReady, timeout=LOAD_TIMEOUT):
        window.tabs.setCurrentIndex(0)
    assert legend(window.details.histogram) == ["checkpoint", "fresh init"]
    assert csv_series(window.details.histogram, tmp_path)[1][0] == "fresh init"
    # a tensor only in A: shown in the details panel, no B to overlay
    window.tabs.setCurrentWidget(cmp)
    with qtbot.waitSignal(window.details.statsReady, timeout=LOAD_TIMEOUT):
        assert cmp.select_name("pooler.dense.bias")
    assert window.details.selection.names == ("pooler.dense.bias",)
    # no B to overlay (its fresh init may be overlaid instead, once that worker is done: not a race to pin)
    ov = csv_series(window.details.histogram, tmp_path)[1]
    assert cmp.entry_for(window.details.selection) is None and (ov is None or ov[0] == "fresh init")


def test_bar_labels_never_overlap_and_hover_names_the_layer(qtbot, window, panels, pair) -> None:
    from PySide6.QtGui import QFontMetrics

    _init, cmp = panels
    a, b = pair
    open_and_wait(qtbot, window, checkpoint=str(a))
    window.tabs.setCurrentWidget(cmp)
    with qtbot.waitSignal(cmp.diffReady, timeout=LOAD_TIMEOUT):
        cmp.compare_with(str(b / "model.safetensors"))
    ax = cmp.axis
    ax.set_labels(["embed", "LN", "posit", "token", "word"] + [str(i) for i in range(24)] + ["dense"])
    fm = QFontMetrics(ax.style.get("tickFont") or ax.font())
    n = len(ax.labels)
    for width in (120, 300, 900, 3000):
        shown = ax.placed(-0.6, n - 0.4, width)
        assert shown and shown == sorted(shown)
        px = width / n
        spans = [((i + 0.6) * px - fm.horizontalAdvance(ax.labels[i]) / 2,
                  (i + 0.6) * px + fm.horizontalAdvance(ax.labels[i]) / 2) for i in shown]
        assert all(r1 < l2 for (_l1, r1), (l2, _r2) in zip(spans, spans[1:]))
    assert len(ax.placed(-0.6, n - 0.4, 3000)) == n  # room for all: all shown
    # hovering the middle of a bar names its layer in full (bars: the roll-up's layers with a relative change)
    bars = [m for m in cmp.rollup if m.rel_change is not None]
    assert len(cmp.bars.opts["height"]) == len(bars)
    i = next(k for k, m in enumerate(bars) if m.prefix == "encoder.layer.0")
    vb = cmp.bars_plot.getPlotItem().getViewBox()
    cmp.bars_plot.resize(600, 200)
    qtbot.waitUntil(lambda: vb.width() > 100)
    pos = vb.mapViewToScene(__import__("PySide6.QtCore", fromlist=["QPointF"]).QPointF(i, 0.0))
    cmp.show_bar_readout(pos)  # what the (rate-limited) mouse-move handler shows there
    assert "encoder.layer.0" in cmp.bar_readout.text() and "tensors differ" in cmp.bar_readout.text()


def test_compare_from_command_line_extra(qtbot, window, panels, pair) -> None:
    _init, cmp = panels
    a, b = pair
    window.session.compare_path = str(b)  # as --compare OTHER sets it: compared once the report is loaded
    with qtbot.waitSignal(cmp.diffReady, timeout=LOAD_TIMEOUT):
        open_and_wait(qtbot, window, checkpoint=str(a))
    assert cmp.other == str(b) and any(e.status == "changed" for e in cmp.entries)


def test_init_check_flags_a_fresh_model_and_overlays_its_init(qtbot, window, panels, pair, tmp_path, qtmodeltester) -> None:
    init, _cmp = panels
    a, _b = pair
    open_and_wait(qtbot, window, checkpoint=str(a))
    with qtbot.waitSignal(init.checkReady, timeout=LOAD_TIMEOUT) as blocker:
        init.run()
    res = {r.name: r for r in blocker.args[0]}
    assert res[Q].init_like and res["embeddings.LayerNorm.weight"].init_like  # save_tiny = a fresh init
    qtmodeltester.check(init.model)
    init.only_flagged.setChecked(True)
    assert init.proxy.rowCount() == len(init.flagged())
    assert "look untrained" in init.summary.text()
    with qtbot.waitSignal(init.overlayReady, timeout=LOAD_TIMEOUT) as ob:
        select_and_measure(qtbot, window, Q)
    names, fst, verdict = ob.args[0]
    assert names == (Q,) and verdict.init_like and fst.std == pytest.approx(0.02, rel=0.1)
    assert window.details.histogram.overlay.isVisible()
    assert "fresh init" in window.details.histogram_note.text() and "looks untrained" in window.details.histogram_note.text()
    # a row of the "Looks untrained" table selects its tensor in the session, and back
    window.tabs.setCurrentWidget(init)
    other = "encoder.layer.1.attention.self.key.weight"
    row = next(i for i, r in enumerate(init.model.records) if r.name == other)
    with qtbot.waitSignal(window.details.statsReady, timeout=LOAD_TIMEOUT):
        init.table.setCurrentIndex(init.proxy.mapFromSource(init.model.index(row, 0)))
    assert window.details.selection.names == (other,)
    assert window.table_model.row(window.table_proxy.mapToSource(window.table.currentIndex()).row()).name == other
    with qtbot.waitSignal(window.details.statsReady, timeout=LOAD_TIMEOUT):
        assert window.select_key(Q)
    assert init.model.records[init.proxy.mapToSource(init.table.currentIndex()).row()].name == Q
    window.tabs.setCurrentWidget(init)
    window.grab().save(str(tmp_path / "init.png"))
    assert (tmp_path / "init.png").stat().st_size > 0


def test_compare_failure_shows_in_the_message_bar(qtbot, full_window, demo_dir, tmp_path):
    window = full_window
    from explorer.gui.panels import ComparePanel

    panel = window.panel(ComparePanel)
    open_and_wait(qtbot, window, demo=True)
    with qtbot.waitSignal(panel.diffFailed, timeout=LOAD_TIMEOUT):
        panel.compare_with(str(tmp_path / "nope2"))
    assert window.message_bar.isVisibleTo(window)
    assert "compare with checkpoint B failed" in window.message_label.text() and "nope2" in window.message_label.text()
    assert panel.error and window.errors[-1] == panel.error


@pytest.fixture
def edited_pair(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from tests.helpers import save_tiny

    a, b = tmp_path / "run-a", tmp_path / "run-b"
    a.mkdir()
    b.mkdir()
    save_tiny("bert", "BertModel", a)
    shutil.copy(a / "config.json", b / "config.json")
    sd = load_file(a / "model.safetensors")
    for k in list(sd):
        if k.startswith("encoder.layer.1."):
            sd[k] = (sd[k] * 1.05).contiguous()
    sd["encoder.layer.0.attention.self.query.weight"] = sd["encoder.layer.0.attention.self.query.weight"] + 0.01 * torch.ones(1)
    del sd["pooler.dense.bias"]
    save_file(sd, b / "model.safetensors")
    return a, b


def test_compare_tab_filters_rollup_names_alike_and_keeps_the_tree(qtbot, full_window, edited_pair):
    window = full_window
    from PySide6.QtCore import Qt

    from explorer.gui.panels import ComparePanel
    from explorer.gui.widgets.tree_view import tree_width_needed

    a, b = edited_pair
    panel = window.panel(ComparePanel)
    window.resize(1300, 800)
    open_and_wait(qtbot, window, checkpoint=str(a))
    window.tabs.setCurrentWidget(panel)
    with qtbot.waitSignal(panel.diffReady, timeout=LOAD_TIMEOUT):
        panel.compare_with(str(b))
    # both sides named the same way (folder), full paths in the tooltip
    assert panel.path_label.text() == "A: run-a   vs   B: run-b"
    assert str(a) in panel.path_label.toolTip() and str(b) in panel.path_label.toolTip()
    # shape and dtype in their own columns, no combined "[384, 3…float32" cell
    heads = [panel.model.headerData(c, Qt.Orientation.Horizontal) for c in range(panel.model.columnCount())]
    assert "shape" in heads and "dtype" in heads and "A" not in heads and "B" not in heads
    e = next(e for e in panel.entries if e.name == "encoder.layer.1.output.dense.weight")
    row = panel.model.records.index(e)
    assert panel.model.index(row, heads.index("shape")).data() == "×".join(map(str, e.shape_a))
    assert panel.model.index(row, heads.index("dtype")).data() == "float32"
    # "only differences" filters the per-layer roll-up too
    assert panel.only_diff.isChecked()
    shown = [panel.roll_proxy.index(r, 0).data() for r in range(panel.roll_proxy.rowCount())]
    assert shown and all(m.n_changed > 0 for m in panel.rollup if m.prefix in shown)
    assert len(shown) < len(panel.rollup)
    panel.only_diff.setChecked(False)
    assert panel.roll_proxy.rowCount() == len(panel.rollup)
    # the tree keeps the width its names need on this (wide) tab; the right side scrolls instead
    qtbot.waitUntil(lambda: window.tree.width() > 0)
    assert window.tree.width() >= tree_width_needed(window.tree, names_only=True) - 2
    assert window.tree.minimumWidth() >= tree_width_needed(window.tree, names_only=True) - 2
