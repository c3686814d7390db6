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
    assert w.data(Qt.ItemDataRole.ForegroundRole) == palette.color("missing")
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


def test_filter_substring_glob_regex_and_status(qtbot, window, demo_dir):
    open_and_wait(qtbot, window, demo=True)
    total = window.table_proxy.rowCount()

    def shown() -> list[str]:
        return sorted(window.table_proxy.index(i, 1).data() for i in range(window.table_proxy.rowCount()))

    window.search.setText("seq_relationship")
    window.apply_filter()
    assert shown() == ["cls.seq_relationship.bias", "cls.seq_relationship.weight"]
    # the tree keeps the ancestors of matches
    assert window.tree_proxy.rowCount() == 1
    window.mode.setCurrentText("glob")
    window.search.setText("bert.embeddings.LayerNorm.*")
    window.apply_filter()
    assert shown() == ["bert.embeddings.LayerNorm.beta", "bert.embeddings.LayerNorm.gamma"]
    window.mode.setCurrentText("regex")
    window.search.setText(r"layer\.1\..*output\.dense\.weight$")
    window.apply_filter()
    assert shown() == ["bert.encoder.layer.1.attention.output.dense.weight", "bert.encoder.layer.1.output.dense.weight"]
    window.search.setText("([bad")  # a half-typed regex keeps the last result and says so
    window.apply_filter()
    assert "bad regex" in window.match_label.text()
    window.search.setText("")
    window.mode.setCurrentText("substring")
    window.kind_buttons["missing"].setChecked(True)
    assert window.table_proxy.rowCount() == 2
    assert [window.table_proxy.index(i, 0).data() for i in range(2)] == ["missing", "missing"]
    window.kind_buttons["unexpected"].setChecked(True)
    assert window.table_proxy.rowCount() == 3
    window.clear_filter()
    assert window.table_proxy.rowCount() == total


def test_glob_uses_core_translation_and_forgives_half_typed_brackets(qapp):
    from explorer.gui.models.entries import SearchIndex
    from explorer.gui.models.filtering import Filter

    names = ["layer.0.weight", "layer.1.weight", "layer.10.weight", "layer.[1.weight", "layer.1].weight", "head.weight"]
    index = SearchIndex.build(names, ["matched"] * len(names))

    def hits(glob: str) -> list[str]:
        mask = Filter(glob, "glob").mask(index)
        return [n for n, m in zip(names, mask) if m]

    # the same glob language as plan rules (explorer.core.keys.translate_glob): classes, negation, * crosses dots
    assert hits("layer.[0-1].weight") == ["layer.0.weight", "layer.1.weight"]
    assert hits("layer.[!0].weight") == ["layer.1.weight"]
    assert hits("LAYER.1*") == ["layer.1.weight", "layer.10.weight", "layer.1].weight"]
    # what core rejects (an unclosed '[' while typing, a stray ']') matches its brackets literally, wildcards still work
    assert hits("layer.[1*") == ["layer.[1.weight"]
    assert hits("*1].w?ight") == ["layer.1].weight"]


def test_sizes_use_binary_units_like_the_cli(qtbot, window):
    from explorer.core.fmt import human_bytes

    open_and_wait(qtbot, window, demo=True)
    model = window.table_model
    sizes = {model.index(i, model.SIZE).data() for i in range(model.rowCount())} - {""}
    assert sizes and all(s.endswith((" B", " KiB", " MiB")) for s in sizes)
    row = next(r for r in model.rows if r.name)
    assert human_bytes(row.nbytes) in sizes


def test_tree_shows_deep_names_in_full_and_status_gives_way_first(qtbot, window):
    from explorer.gui.widgets.tree_view import tree_widths

    window.resize(1440, 900)
    window.show()
    qtbot.waitExposed(window)
    window.tabs.setCurrentIndex(window.tabs.count() - 1)  # a wide tab (Compare, when installed) must not squeeze the tree
    open_and_wait(qtbot, window, demo=True)
    tree = window.tree
    names, status, status_min = tree_widths(tree)
    fm = tree.fontMetrics()
    # six dotted levels below the model row: bert.encoder.layer.1.attention.output
    assert names >= tree.indentation() * 7 + fm.horizontalAdvance("output")
    assert names >= tree.indentation() * 2 + fm.horizontalAdvance("contrastive_proj.weight")
    assert tree.columnWidth(0) >= names and tree.columnWidth(1) == status
    # the spare width goes to the names, not the status
    window.split.setSizes([window.split.sizes()[0] + 120, window.split.sizes()[1] - 120])
    assert tree.columnWidth(0) > names and tree.columnWidth(1) == status
    # short of room, the status column shrinks (its text elides on the right) before the names are cut
    window.split.setSizes([names + status_min + 150, sum(window.split.sizes()) - names - status_min - 150])
    assert tree.columnWidth(1) < status and tree.columnWidth(0) >= names - 1


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
    # an unknown head class is an error too, not a crash
    with qtbot.waitSignal(window.session.loadFailed, timeout=LOAD_TIMEOUT) as blocker:
        window.open_source(Source(checkpoint=str(demo_dir), arch="BertForNothing"))
    assert "BertForNothing" in blocker.args[0]
    # and the window still opens the next file
    open_and_wait(qtbot, window, demo=True)
    assert not window.message_bar.isVisibleTo(window)
    assert window.tree_proxy.rowCount() == 2


def test_screenshot_cli_writes_png(qtbot, tmp_path, demo_dir):
    import os
    import subprocess
    import sys

    from PySide6.QtGui import QImage

    png = tmp_path / "shot.png"
    png.write_text("not a PNG")  # a file of another kind: replaced only because --force is given
    # a real process: the CLI creates its own QApplication and exits when the PNG is written
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "explorer", "open", "--demo", "--screenshot", str(png), "--force"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    img = QImage(str(png))
    assert not img.isNull()
    assert img.width() >= 1200 and img.height() >= 750


def test_settings_and_recent_files_are_remembered(qtbot, tmp_path, minilm):
    from PySide6.QtCore import QSettings

    from explorer.gui.main_window import MainWindow

    ini = str(tmp_path / "s.ini")
    win = MainWindow(settings=QSettings(ini, QSettings.Format.IniFormat), interactive=False)
    qtbot.addWidget(win)
    win.persist = True
    win.show()
    open_and_wait(qtbot, win, checkpoint=minilm, arch=MINILM_HEAD)
    win.details.histogram.log_y.setChecked(True)
    win.close()
    again = MainWindow(settings=QSettings(ini, QSettings.Format.IniFormat), interactive=False)
    qtbot.addWidget(again)
    assert again.details.histogram.log_y.isChecked()
    assert [a.text() for a in again.recent_menu.actions()] == [str(Path(minilm).resolve())]
    again.session.close()
