"""The main window on real transformers checkpoints: models, roll-ups, colours, selection sync, filtering,
the one-click key mapping, error handling and the --screenshot path."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.gui.conftest import LOAD_TIMEOUT, open_and_wait, select_and_measure

MINILM_HEAD = "BertForSequenceClassification"


def test_item_models_pass_qtmodeltester(qapp, qtmodeltester, minilm):
    from PySide6.QtCore import Qt

    from explorer.gui.models.filtering import Filter, FilterProxy
    from explorer.gui.session import Source, load
    from explorer.gui.models.table_model import TensorTableModel
    from explorer.gui.models.tree_model import ModuleTreeModel

    loaded = load(Source(checkpoint=minilm, arch=MINILM_HEAD))
    tree, table = ModuleTreeModel(), TensorTableModel()
    tree.set_root(loaded.tree)
    table.set_rows(loaded.rows)
    qtmodeltester.check(tree)
    qtmodeltester.check(table)
    tp, rp = FilterProxy(tree=True), FilterProxy()
    tp.setSourceModel(tree)
    rp.setSourceModel(table)
    flt = Filter("attention", "substring")
    assert tp.set_filter(flt) > 0
    assert 0 < rp.set_filter(flt) < len(table.rows)
    rp.sort(0)
    qtmodeltester.check(tp)
    qtmodeltester.check(rp)
    rp.sort(5, Qt.SortOrder.DescendingOrder)
    tp.set_filter(Filter("", "substring", frozenset({"missing"})))
    rp.set_filter(Filter("", "substring", frozenset({"missing"})))
    qtmodeltester.check(tp)
    qtmodeltester.check(rp)


def test_minilm_into_classification_head_shows_two_missing(qtbot, window, minilm):
    from PySide6.QtCore import Qt

    from explorer.gui import palette
    from explorer.gui.models.tree_model import KIND_ROLE

    open_and_wait(qtbot, window, checkpoint=minilm, arch=MINILM_HEAD)
    m = window.tree_model
    root = m.index(0, 1)
    assert root.data() == "103/105 loaded, 2 missing"
    clf = m.index_for_key("classifier", 1)
    assert clf.data() == "0/2 loaded, 2 missing"
    assert m.index_for_key("bert", 1).data() == "103/103 loaded"
    w = m.index_for_key("classifier.weight", 1)
    assert w.data() == "missing"
    assert w.data(KIND_ROLE) == "missing"
    assert w.data(Qt.ItemDataRole.ForegroundRole) == palette.text_color("missing")  # the AA-readable text colour (issue 10 #16)
    assert w.data(Qt.ItemDataRole.BackgroundRole) == palette.tint("missing")
    assert not m.index_for_key("classifier.weight", 0).data(Qt.ItemDataRole.DecorationRole).isNull()
    assert "newly initialised" in m.index_for_key("classifier.weight", 0).data(Qt.ItemDataRole.ToolTipRole)
    q = m.index_for_key("bert.encoder.layer.0.attention.self.query.weight", 5)
    assert q.data() == "prefix 'bert.' added"
    assert m.index_for_key("bert.encoder.layer.0.attention.self.query.weight", 0).data(KIND_ROLE) == "matched"
    # the summary names them, the missing chip counts them; trouble is expanded
    assert "classifier.weight" in window.summary_label.text() and "classifier.bias" in window.summary_label.text()
    assert window.kind_buttons["missing"].text() == "missing 2"
    assert window.tree.isExpanded(window.tree_proxy.mapFromSource(m.index_for_key("classifier")))
    # the table lists the missing keys first (sorted by status)
    first = window.table_proxy.index(0, 2).data()
    assert first in ("classifier.weight", "classifier.bias")
    assert window.table_proxy.index(0, 1).data() == "(not in checkpoint)"


def test_selection_sync_between_tree_and_table(qtbot, window, demo_dir):
    open_and_wait(qtbot, window, demo=True)
    # module in the tree -> its on-disk tensors selected in the table
    assert window.select_key("cls.seq_relationship")
    rows = window.table.selectionModel().selectedRows()
    names = sorted(window.table_proxy.index(i.row(), 1).data() for i in rows)
    assert names == ["cls.seq_relationship.bias", "cls.seq_relationship.weight"]
    assert window.details.selection.is_module
    # a legacy-named tensor in the table -> its renamed model key in the tree
    r = window.table_model.row_for_name("bert.embeddings.LayerNorm.gamma")
    with qtbot.waitSignal(window.details.statsReady, timeout=LOAD_TIMEOUT):
        window.table.setCurrentIndex(window.table_proxy.mapFromSource(window.table_model.index(r, 0)))
    cur = window.tree_proxy.mapToSource(window.tree.currentIndex())
    assert cur.internalPointer().path == "bert.embeddings.LayerNorm.weight"
    assert cur.internalPointer().kind == "renamed"
    # a missing key has no data: the details say why instead of a histogram
    window.select_key("cls.predictions.transform.dense.weight")
    assert window.details.selection.names == ()
    assert "newly initialised" in window.details.status.text()


def test_demo_shows_every_status(qtbot, window, demo_dir):
    open_and_wait(qtbot, window, demo=True)
    kinds = {it.kind for it in window.tree_model.param_items()}
    assert {"matched", "renamed", "tied", "dtype", "missing", "mismatched", "unexpected", "ignored"} <= kinds
    tied = window.tree_model.index_for_key("cls.predictions.decoder.weight").internalPointer()
    assert tied.kind == "tied" and "bert.embeddings.word_embeddings.weight" in tied.how


def test_sizes_use_binary_units_like_the_cli(qtbot, window):
    from explorer.core.fmt import human_bytes

    open_and_wait(qtbot, window, demo=True)
    model = window.table_model
    sizes = {model.index(i, model.SIZE).data() for i in range(model.rowCount())} - {""}
    assert sizes and all(s.endswith((" B", " KiB", " MiB")) for s in sizes)
    row = next(r for r in model.rows if r.name)
    assert human_bytes(row.nbytes) in sizes


def test_apply_suggested_key_mapping_recolours(qtbot, window, tmp_path):
    from safetensors.torch import load_file, save_file

    from tests.helpers import save_tiny

    src = tmp_path / "src"
    save_tiny("bert", "BertModel", src)
    sd = load_file(src / "model.safetensors")
    ddp = tmp_path / "ddp"
    ddp.mkdir()
    save_file({f"module.{k}": v for k, v in sd.items()}, str(ddp / "model.safetensors"), metadata={"format": "pt"})
    (ddp / "config.json").write_text((src / "config.json").read_text())
    loaded = open_and_wait(qtbot, window, checkpoint=str(ddp))
    assert loaded.report.missing and loaded.report.suggested_key_mapping
    assert window.suggest_btn.isVisibleTo(window)
    with qtbot.waitSignal(window.session.loaded, timeout=LOAD_TIMEOUT):
        window.suggest_btn.click()
    rep = window.session.report
    assert not rep.missing and not rep.unexpected
    assert window.kind_buttons["missing"].text() == "missing 0"
    assert "key mapping" in window.summary_label.text()


def test_bad_file_shows_error_and_window_stays_usable(qtbot, window, monkeypatch, tmp_path, demo_dir):
    from PySide6.QtWidgets import QMessageBox

    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", staticmethod(lambda parent, title, text, *a, **k: shown.append(text)))
    window.interactive = True
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    from explorer.gui.session import Source

    with qtbot.waitSignal(window.session.loadFailed, timeout=LOAD_TIMEOUT) as blocker:
        window.open_source(Source(checkpoint=str(bad)))
    assert "broken.safetensors" in blocker.args[0] and "corrupt safetensors header" in blocker.args[0]
    assert shown == [blocker.args[0]]
    assert window.message_bar.isVisibleTo(window)
    # an unknown head class is no crash and no dead end: the config's own class loads, the banner names the typo
    loaded = open_and_wait(qtbot, window, checkpoint=str(demo_dir), arch="BertForNothing")
    assert loaded.report.has_model and "BertForNothing" in window.class_banner.label.text()
    assert shown == [blocker.args[0]]  # no second modal
    # and the window still opens the next file
    open_and_wait(qtbot, window, demo=True)
    assert not window.message_bar.isVisibleTo(window)
    assert window.tree_proxy.rowCount() == 2


