"""Regression tests for what a newcomer's QA pass found in the window: silent screenshot errors, exponent
percentages, counts that disagreed, unexplained badges, mixed name shortening, a squeezed tree, a placeholder
drawn over the axis, and the Compare tab's filter and naming."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gui.conftest import LOAD_TIMEOUT, open_and_wait


def _shot(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "explorer", "open", *args, "--screenshot", str(tmp_path / "x.png")],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_screenshot_mode_says_why_it_failed_on_stderr(tmp_path, demo_dir):
    r = _shot(tmp_path, "nope/")
    assert r.returncode == 2
    assert "ckpt-explorer: error: nope: no such file or directory" in r.stderr.splitlines()
    # a failed compare is not a success: message on stderr, exit 2 (and the PNG shows it in the message bar)
    r = _shot(tmp_path, str(demo_dir), "--compare", "nope2/")
    assert r.returncode == 2, r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("ckpt-explorer: error:")]
    assert len(err) == 1 and "compare with checkpoint B failed" in err[0] and "nope2" in err[0]
    assert (tmp_path / "x.png").is_file()


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


def test_percentages_never_use_exponent_form():
    from explorer.gui.models.entries import fmt_percent

    assert fmt_percent(100.0) == "100%"
    assert fmt_percent(99.98) == "100%"
    assert fmt_percent(38.2) == "38%"
    assert fmt_percent(3.8) == "3.8%"
    assert fmt_percent(0.0034) == "0.0034%"
    assert fmt_percent(0.0) == "0%"
    assert "e" not in fmt_percent(1.2e-7)


def test_all_fresh_header_says_100_percent(qtbot, window, minilm, tmp_path):
    """A ``module.``-prefixed copy against a head it does not fit: everything newly initialised is "100%"."""
    from safetensors.torch import load_file, save_file

    d = tmp_path / "ddp"
    d.mkdir()
    save_file({"module." + k: v for k, v in load_file(Path(minilm) / "model.safetensors").items()}, d / "model.safetensors")
    shutil.copy(Path(minilm) / "config.json", d / "config.json")
    loaded = open_and_wait(qtbot, window, checkpoint=str(d), arch="BertForSequenceClassification")
    text = window.summary_label.text()
    assert loaded.report.params_loaded()[0] == 0
    assert "newly initialised (100%)" in text
    assert "e+" not in text and "e-" not in text


def test_counts_come_from_one_place_and_tied_weights_count_once(qtbot, window, demo_dir):
    from PySide6.QtCore import Qt

    from explorer.core.fmt import human_count

    loaded = open_and_wait(qtbot, window, demo=True)
    rep = loaded.report
    n_loaded, n_fresh = rep.params_loaded()
    top = window.tree_model.index(0, 0)
    item = window.tree_proxy.mapToSource(top).internalPointer() if top.model() is window.tree_proxy else top.internalPointer()
    # the tree's root total is the header's loaded + newly initialised (the tied decoder weight once)
    assert item.numel == n_loaded + n_fresh and item.fresh == n_fresh
    assert window.tree_model.index(0, 4).data() == human_count(n_loaded + n_fresh, digits=1)
    text = window.summary_label.text()
    assert f"{human_count(n_loaded, digits=1)} params loaded" in text and f"{human_count(n_fresh, digits=1)}</b> newly" in text
    # the loading chips add up to the tree's "N/M loaded"; each chip says what it counts
    c = {k: int(b.text().rsplit(" ", 1)[1].replace(",", "")) for k, b in window.kind_buttons.items() if b.isVisible()}
    n_load = sum(c.get(k, 0) for k in ("matched", "renamed", "tied", "dtype"))
    rollup = window.tree_model.index(0, 1).data()
    assert rollup.startswith(f"{n_load}/") and "loaded" in rollup and f"{n_load}/" in text
    assert "model keys" in window.kind_buttons["matched"].toolTip() and f"= {n_load:,} of" in window.kind_buttons["matched"].toolTip()
    assert "checkpoint tensor" in window.kind_buttons["unexpected"].toolTip()
    # the tied key: listed with its size, counted once, and its tooltip says so
    tied = [it for it in window.tree_model.param_items() if it.tied_to]
    assert tied, "the demo ties a decoder weight"
    idx = window.tree_model.index_for_key(tied[0].path)
    assert "counted once" in idx.data(Qt.ItemDataRole.ToolTipRole)


def test_badges_are_explained_in_tooltips_and_the_legend(qtbot, full_window, demo_dir):
    window = full_window
    from explorer.gui.widgets.badges import BADGE_HELP, badge_delegate, badge_help
    from explorer.gui.panels import PlanPanel

    editor = window.panel(PlanPanel)
    open_and_wait(qtbot, window, demo=True)
    key = "bert.encoder.layer.0.attention.self.query.weight"
    editor.reinit([key])
    d = badge_delegate(window.tree, 0)
    leaf = window.tree_proxy.mapFromSource(window.tree_model.index_for_key(key))
    tip = d.tooltip(leaf)
    assert key in tip and "↻ reinit  reinit — plan: re-initialised" in tip
    module = window.tree_proxy.mapFromSource(window.tree_model.index_for_key("bert.encoder"))
    assert "↻ 1  reinit" in d.tooltip(module)
    assert "2 tensors below" in badge_help("? 2") and "looks untrained" in badge_help("?")  # init-check badges
    html = window.legend_html()
    for glyph, label, _m in BADGE_HELP:
        assert glyph in html and label in html
    assert {"❄", "↻", "✕", "×", "?"} <= {g for g, _l, _m in BADGE_HELP}
    box = window.show_legend()  # not interactive: built, not shown
    assert "looks untrained" in box.text()


def test_key_paths_in_views_shorten_one_way(qtbot, window, demo_dir):
    from PySide6.QtCore import QRect, Qt
    from PySide6.QtWidgets import QStyleOptionViewItem

    from explorer.gui.models.table_model import TensorTableModel

    open_and_wait(qtbot, window, demo=True)
    name = "bert.encoder.layer.1.attention.output.dense.weight"
    r = window.table_model.row_for_name(name)
    idx = window.table_proxy.mapFromSource(window.table_model.index(r, TensorTableModel.NAME))
    d = window.table.itemDelegateForColumn(TensorTableModel.NAME)
    fm = window.table.fontMetrics()

    def shown(width: int) -> str:
        opt = QStyleOptionViewItem()
        opt.initFrom(window.table)
        opt.rect = QRect(0, 0, width, 22)
        d.initStyleOption(opt, idx)
        return opt.text

    assert shown(fm.horizontalAdvance(name) + 40) == name  # room to spare: never shortened
    mid = shown(fm.horizontalAdvance("…1.attention.output.dense.weight") + 20)
    # leading components give way first; the layer index stays so rows of different layers never look alike
    assert mid.startswith("…") and mid.endswith(".output.dense.weight") and name.endswith(mid[1:]) and ".1." in "." + mid[1:]
    tiny = shown(fm.horizontalAdvance("weight") + 16)
    assert tiny.startswith("…") and "bert" not in tiny  # Qt's ElideLeft only when nothing else fits
    assert name in idx.data(Qt.ItemDataRole.ToolTipRole)  # the full name
    # the details panel's key fields shorten the same way (they used to be clipped at the edge)
    from explorer.gui.widgets.badges import KeyLabel

    assert window.select_key(name)
    lab = next(w for w in window.details.findChildren(KeyLabel) if w.key == name)
    qtbot.waitUntil(lab.isVisible)
    qtbot.waitUntil(lambda: lab.width() > 20)
    assert lab.text() == name or (lab.text().startswith("…") and name.endswith(lab.text()[1:]))  # as it sits in the panel
    lab.resize(fm.horizontalAdvance("bert.…output.dense.weight") + 8, lab.height())
    assert lab.text().startswith("…1.") and lab.text().endswith("dense.weight") and lab.toolTip() == name


@pytest.fixture
def pair(tmp_path):
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


def test_compare_tab_filters_rollup_names_alike_and_keeps_the_tree(qtbot, full_window, pair):
    window = full_window
    from PySide6.QtCore import Qt

    from explorer.gui.panels import ComparePanel
    from explorer.gui.widgets.tree_view import tree_width_needed

    a, b = pair
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


def test_histogram_placeholder_is_centred_over_the_plot(qtbot, window):
    h = window.details.histogram
    qtbot.waitExposed(window)
    assert h.message_text == "select a tensor"
    assert h.placeholder.geometry() == h.plot.rect()  # centred over the whole plot, not at a data point
    assert not h.curve.isVisible()  # no flat line at zero under it
    h.set_data([0.0, 1.0, 2.0], [3.0, 4.0])
    assert h.message_text == "" and h.curve.isVisible()
