"""The details panel under the tabs: what it shows follows the open report."""
from __future__ import annotations

from tests.gui.conftest import LOAD_TIMEOUT, open_and_wait


def test_reload_clears_the_details_of_the_old_selection(qtbot, minilm_head, minilm):
    win, _ed, _ip = minilm_head
    with qtbot.waitSignal(win.details.statsReady, timeout=LOAD_TIMEOUT):
        assert win.select_key("bert.encoder.layer.3")
    assert "16 tensors pooled" in win.details.status.text()
    vb = win.details.histogram.plot.getPlotItem().getViewBox()
    vb.updateAutoRange()  # pyqtgraph applies auto-range lazily (on the next paint)
    assert vb.viewRange()[1][1] > 1000
    open_and_wait(qtbot, win, checkpoint=minilm, arch="BertForTokenClassification")
    d = win.details
    assert d.selection is None and d.title.text() == "Select a module or tensor"
    assert d.status.text() == "" and not d.histogram_note.isVisible()
    assert d.histogram.message_text == "select a tensor"
    vb.updateAutoRange()
    assert vb.viewRange()[1][1] <= 1.1  # no stale axes from the old histogram behind the placeholder
