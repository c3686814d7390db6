"""The "Looks untrained" roll-up answers a click, and a comparison of unrelated checkpoints says so (issue 10
finding 14)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt

from tests.gui.conftest import FRESH_KEY, LOAD_TIMEOUT, open_and_wait
from tests.helpers import save_tiny


def _click_row(qtbot, table, pred) -> None:
    for row in range(table.proxy.rowCount()):
        idx = table.proxy.index(row, 0)
        if pred(table.record_at(idx)):
            qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=table.visualRect(idx).center())
            return
    raise AssertionError("no such row")


def test_a_module_row_of_the_untrained_summary_selects_and_filters_it(qtbot, full_window, trained_but_one) -> None:
    from explorer.gui.panels import InitPanel

    win = full_window
    open_and_wait(qtbot, win, checkpoint=str(trained_but_one))
    ip = win.panel(InitPanel)
    win.tabs.setCurrentWidget(ip)
    with qtbot.waitSignal(ip.checkReady, timeout=LOAD_TIMEOUT):
        ip.run()
    _click_row(qtbot, ip.roll_table, lambda m: m[0] == "encoder.layer.0")
    assert ip.group == "encoder.layer.0" and ip.show_all.isVisible()
    shown = {ip.table.record_at(ip.proxy.index(r, 0)).name for r in range(ip.proxy.rowCount())}
    assert FRESH_KEY in shown and shown and all(n.startswith("encoder.layer.0.") for n in shown)
    assert win.details.selection is not None and win.details.selection.title == "encoder.layer.0"
    assert win.details.selection.is_module
    # elsewhere, then the same row again: it answers every click, not only a change of row
    win.select_key("embeddings")
    assert win.details.selection.title == "embeddings"
    _click_row(qtbot, ip.roll_table, lambda m: m[0] == "encoder.layer.0")
    assert win.details.selection.title == "encoder.layer.0"
    ip.show_all.click()
    assert ip.proxy.rowCount() == len(ip.results) and ip.group is None


def test_comparing_unrelated_checkpoints_warns(qtbot, full_window, tmp_path: Path) -> None:
    from explorer.gui.panels import ComparePanel

    win = full_window
    llama, bert = tmp_path / "llama", tmp_path / "bert"
    save_tiny("llama", "LlamaForCausalLM", llama)
    save_tiny("bert", "BertModel", bert)
    open_and_wait(qtbot, win, checkpoint=str(llama))
    cp = win.panel(ComparePanel)
    with qtbot.waitSignal(cp.diffReady, timeout=LOAD_TIMEOUT):
        cp.compare_with(str(bert))
    assert cp.unrelated is not None and "these look unrelated: only 0 of" in cp.summary.text()
    with qtbot.waitSignal(cp.diffReady, timeout=LOAD_TIMEOUT):
        cp.compare_with(str(llama))  # itself: related
    assert cp.unrelated is None and "unrelated" not in cp.summary.text()
