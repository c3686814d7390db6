"""What keeps the window responsive, checked by behaviour (never by timing): filtering a 20k-row report
inside the models, the tree keeping ancestors of matches, sorting by precomputed orders, selection look-ups
on filtered rows, and the one-line error when there is no display."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

N_LAYERS, N_EXPERTS = 20, 250  # 20 × 250 experts × 4 tensors = 20,000 rows


def _synthetic():
    """A 20k-entry report's display records: a MoE-like module tree and its table rows (no torch needed)."""
    from explorer.gui.models.entries import Row, TreeItem, index_rows, index_tree, rollup_kind, rollup_text
    from explorer.gui.palette import look

    root = TreeItem("(root)", "", False)
    model = TreeItem("Model", "", False, parent=root)
    root.children.append(model)
    rows: list[Row] = []
    for li in range(N_LAYERS):
        layer = TreeItem(str(li), f"layers.{li}", False, parent=model, row=len(model.children))
        model.children.append(layer)
        for e in range(N_EXPERTS):
            ex = TreeItem(str(e), f"layers.{li}.experts.{e}", False, parent=layer, row=len(layer.children))
            layer.children.append(ex)
            for p in ("gate", "up", "down", "norm"):
                key = f"layers.{li}.experts.{e}.{p}.weight"
                kind = "missing" if (li, e, p) == (3, 7, "down") else "unexpected" if p == "norm" and e == 0 else "matched"
                it = TreeItem(p, key, True, parent=ex, row=len(ex.children), kind=kind, search=key, numel=e + 1)
                it.status_text = look(kind).label
                it.counts[kind] += 1
                ex.children.append(it)
                name = "" if kind == "missing" else key
                rows.append(Row(name, "" if kind == "unexpected" else key, "4×4", "float32", 64 * (e + 1), 16, kind, "",
                                key, key))
            ex.counts = Counter()
            for c in ex.children:
                ex.counts.update(c.counts)
            layer.counts.update(ex.counts)
        model.counts.update(layer.counts)
    for node in (model, *model.children, *(x for ly in model.children for x in ly.children)):
        node.kind, node.status_text = rollup_kind(node.counts), rollup_text(node.counts)
    return root, rows, index_tree(root), index_rows(rows)


@pytest.fixture(scope="module")
def synthetic():
    return _synthetic()


@pytest.fixture
def models(qapp, synthetic):
    from explorer.gui.models.filtering import FilterProxy
    from explorer.gui.models.table_model import TensorTableModel
    from explorer.gui.models.tree_model import ModuleTreeModel

    root, rows, tindex, rindex = synthetic
    tree, table = ModuleTreeModel(), TensorTableModel()
    tree.set_root(root, tindex)
    table.set_rows(rows, rindex)
    tp, rp = FilterProxy(tree=True), FilterProxy()
    tp.setSourceModel(tree)
    rp.setSourceModel(table)
    return tree, table, tp, rp


def _shown_names(proxy) -> list[str]:
    return [proxy.index(i, 1).data() for i in range(proxy.rowCount())]


def test_filtering_20k_rows_in_the_table_model_gives_the_right_rows(models):
    from explorer.gui.models.filtering import Filter

    _tree, table, _tp, rp = models
    assert rp.rowCount() == N_LAYERS * N_EXPERTS * 4
    n = rp.set_filter(Filter("layers.3.experts.7.", "substring"))
    assert n == rp.rowCount() == 4
    assert sorted(_shown_names(rp)) == ["(not in checkpoint)", "layers.3.experts.7.gate.weight",
                                        "layers.3.experts.7.norm.weight", "layers.3.experts.7.up.weight"]
    # upper case and glob: * crosses dots, ? is one character, a name must match whole
    assert rp.set_filter(Filter("LAYERS.1?.EXPERTS.249.*", "glob")) == 10 * 4
    assert rp.set_filter(Filter("*.experts.24?.down.weight", "glob")) == N_LAYERS * 10
    assert rp.set_filter(Filter(r"^layers\.(0|19)\.experts\.1\d\d\.up", "regex")) == 2 * 100
    # statuses alone, and combined with text
    assert rp.set_filter(Filter("", "substring", frozenset({"missing"}))) == 1
    assert rp.index(0, 0).data() == "missing"
    assert rp.set_filter(Filter("layers.1", "substring", frozenset({"unexpected", "missing"}))) == 11
    assert all(rp.index(i, 0).data() == "unexpected" for i in range(rp.rowCount()))
    assert rp.set_filter(Filter()) == len(table.rows)


def test_tree_proxy_shows_ancestors_of_matches_only(models):
    from explorer.gui.models.filtering import Filter

    tree, _table, tp, _rp = models
    assert tp.set_filter(Filter("layers.3.experts.7.down", "substring")) == 1
    model_idx = tp.index(0, 0)
    assert model_idx.data() == "Model" and tp.rowCount(model_idx) == 1
    layer = tp.index(0, 0, model_idx)
    assert layer.data() == "3" and tp.rowCount(layer) == 1
    expert = tp.index(0, 0, layer)
    assert expert.data() == "7" and tp.rowCount(expert) == 1
    leaf = tp.index(0, 0, expert)
    assert leaf.data() == "down" and leaf.siblingAtColumn(1).data() == "missing"
    # a module's own roll-up still counts everything below it, filtered or not
    assert layer.siblingAtColumn(1).data() == "998/999 loaded, 1 missing, 1 unexpected"
    assert [it.path for it in tp.first_matches(5)] == ["layers.3.experts.7.down.weight"]
    # the filter can be cleared and every layer comes back
    tp.set_filter(Filter())
    assert tp.rowCount(tp.index(0, 0)) == N_LAYERS
    assert tp.first_matches(5) == []


def test_tree_proxy_filter_by_status_keeps_branches_with_that_status(models):
    from explorer.gui.models.filtering import Filter

    _tree, _table, tp, _rp = models
    assert tp.set_filter(Filter("", "substring", frozenset({"unexpected"}))) == N_LAYERS
    model_idx = tp.index(0, 0)
    assert tp.rowCount(model_idx) == N_LAYERS
    layer0 = tp.index(0, 0, model_idx)
    assert tp.rowCount(layer0) == 1 and tp.index(0, 0, layer0).data() == "0"


def test_sorting_uses_precomputed_orders_and_keeps_the_filter(models):
    from PySide6.QtCore import Qt

    from explorer.gui.models.filtering import Filter
    from explorer.gui.models.table_model import TensorTableModel

    _tree, table, _tp, rp = models
    rp.set_filter(Filter("experts.24", "substring"))  # experts 24 and 240..249
    rp.sort(TensorTableModel.SIZE, Qt.SortOrder.DescendingOrder)
    sizes = [table.row(i).nbytes for i in range(rp.rowCount())]
    assert sizes == sorted(sizes, reverse=True) and rp.rowCount() == N_LAYERS * 11 * 4
    rp.set_filter(Filter())
    rp.sort(TensorTableModel.STATUS, Qt.SortOrder.AscendingOrder)
    kinds = [rp.index(i, 0).data() for i in range(rp.rowCount())]
    assert kinds[: N_LAYERS + 1] == ["missing"] + ["unexpected"] * N_LAYERS and kinds[-1] == "matched"  # trouble first
    rp.set_filter(Filter("experts.24", "substring"))
    rp.sort(TensorTableModel.NAME, Qt.SortOrder.AscendingOrder)
    names = [n for n in _shown_names(rp) if n != "(not in checkpoint)"]
    from explorer.gui.models.entries import natural_key

    assert names == sorted(names, key=natural_key)  # natural order: layers.2 before layers.10 (issue 10 #8)
    assert names.index("layers.2.experts.24.down.weight") < names.index("layers.10.experts.24.down.weight")


def test_lookups_answer_in_display_positions_and_skip_hidden_rows(models):
    from explorer.gui.models.filtering import Filter

    _tree, table, _tp, rp = models
    rp.set_filter(Filter("layers.2.", "substring"))
    rows = table.rows_under("layers.2.experts.5")
    assert sorted(table.row(r).key for r in rows) == [f"layers.2.experts.5.{p}.weight" for p in ("down", "gate", "norm", "up")]
    assert table.rows_under("layers.2.experts.5") != table.rows_under("layers.2.experts.50")
    assert table.row_for_name("layers.2.experts.5.up.weight") is not None
    assert table.row_for_name("layers.3.experts.5.up.weight") is None  # filtered out
    assert table.rows_for_key("layers.4.experts.0.up.weight") == []
    r = table.rows_for_key("layers.2.experts.0.up.weight")
    assert len(r) == 1 and table.row(r[0]).name == "layers.2.experts.0.up.weight"


def test_models_pass_qtmodeltester_filtered_and_sorted(models, qtmodeltester):
    from PySide6.QtCore import Qt

    from explorer.gui.models.filtering import Filter

    tree, table, tp, rp = models
    flt = Filter("layers.1.experts.1", "substring")
    tp.set_filter(flt)
    rp.set_filter(flt)
    rp.sort(5, Qt.SortOrder.AscendingOrder)
    qtmodeltester.check(tp)
    qtmodeltester.check(rp)


def test_window_filter_is_debounced_and_reports_counts(qtbot, window, demo_dir):
    from tests.gui.conftest import open_and_wait

    open_and_wait(qtbot, window, demo=True)
    total = window.table_proxy.rowCount()
    window.search.setText("seq_rel")  # typing only starts the debounce timer
    assert window.table_proxy.rowCount() == total and window.filter_bar.timer.isActive()
    qtbot.waitUntil(lambda: window.table_proxy.rowCount() == 2)
    assert window.match_label.text() == f"2 of {len(window.table_model.rows)} rows"  # a row: an on-disk tensor or a model key with nothing on disk (issue 10 #10)
    assert "loaded in" in window.status_label.text()


def _env_without_display() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["HF_HUB_OFFLINE"] = "1"
    return env


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="no DISPLAY needed there")
def test_no_display_is_a_one_line_error(tmp_path):
    exe = Path(sys.executable).with_name("ckpt-explorer")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "explorer"]
    p = subprocess.run(cmd + ["open", "--demo"], env=_env_without_display(), capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip() == ("ckpt-explorer: error: no display found; run under a desktop session, xvfb-run, "
                                "or set QT_QPA_PLATFORM=offscreen with --screenshot")


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="no DISPLAY needed there")
def test_screenshot_without_display_falls_back_to_offscreen(qapp, monkeypatch):
    from explorer.gui.app import ensure_display

    for k in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(k, raising=False)
    assert ensure_display(screenshot=False) is False
    assert ensure_display(screenshot=True) is True
    assert os.environ["QT_QPA_PLATFORM"] == "offscreen"
