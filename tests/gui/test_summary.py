"""The summary line and the counts it shows: one source for every count, percentages never in exponent form."""
from __future__ import annotations

import shutil
from pathlib import Path

from tests.gui.conftest import open_and_wait


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


def test_counts_say_what_they_count(qtbot, window, demo_dir, small_moe):
    """Issue 10 #10: "44/48 keys load", "47 tensors" and "16 of 50 tensors" side by side read as a contradiction;
    each number now says what it counts (model keys, on-disk tensors, table rows), and the title names the
    folder of a sharded checkpoint, not its index file."""
    import re

    open_and_wait(qtbot, window, demo=True)
    rep = window.session.report
    text = window.summary_label.text()
    assert re.search(r"\d+/\d+ model keys load", text), text
    n = len(rep.index.tensors)
    assert window.status_label.text().startswith(f"{n:,} on-disk tensors in 1 file ·")
    rows = len(window.table_model.rows)
    assert rows > n  # the table also lists model keys with nothing on disk
    window.search.setText("attention")
    window.apply_filter()
    shown = window.table_model.rowCount()
    assert window.match_label.text() == f"{shown:,} of {rows:,} rows"
    tip = window.match_label.toolTip()
    assert f"{n:,} on-disk tensors" in tip and f"{rows - n:,} model keys" in tip
    # chips count model keys (or checkpoint tensors for unexpected/ignored) and say so
    assert "model keys" in window.kind_buttons["matched"].toolTip()

    # a per-expert MoE: many on-disk tensors load into one fused model key; the count says both
    open_and_wait(qtbot, window, checkpoint=str(small_moe))
    assert window.windowTitle().startswith("DeepSeek-V3-small →")
    assert window.summary_label.text().startswith("DeepSeek-V3-small →")
    tm = window.table_model
    window.search.setText("")
    window.kind_buttons["renamed"].setChecked(True)  # the per-expert tensors, fused on load ("converted")
    window.apply_filter()
    rows_shown = tm.rowCount()
    keys = {tm.row(i).key for i in range(rows_shown)}
    assert rows_shown == 2 * 12 * 3 and len(keys) == 2 * 2  # 72 on-disk tensors into 4 fused model keys
    assert window.match_label.text() == f"{rows_shown:,} of {len(tm.rows):,} rows · {len(keys):,} model keys"
    assert window.kind_buttons["renamed"].text().endswith(" 4")  # the chip counts model keys
    window.clear_filter()
    # opening the index file itself names the folder too
    open_and_wait(qtbot, window, checkpoint=str(small_moe / "model.safetensors.index.json"))
    assert window.windowTitle().startswith("DeepSeek-V3-small →")
