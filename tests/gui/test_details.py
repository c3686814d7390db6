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


def test_old_facts_are_gone_while_a_context_menu_is_open(qtbot, window, demo_dir):
    """A right-click selects its row and then opens the context menu, which runs an event loop of its own: the old
    selection's facts (deleted later) stayed drawn under the new ones until the menu closed (issue 10 #15, seen
    under Xvfb: "matched" and "missing" printed over each other)."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QLabel, QMenu

    open_and_wait(qtbot, window, demo=True)
    with qtbot.waitSignal(window.details.statsReady, timeout=LOAD_TIMEOUT):
        assert window.select_key("bert.pooler.dense.weight")
    box = window.details.facts.parentWidget()
    seen: list[str] = []
    menu = QMenu(window)
    menu.addAction("Reinit")

    def look() -> None:  # inside the menu's own event loop
        seen.extend(w.text() for w in box.findChildren(QLabel) if w.isVisible())
        menu.close()

    def right_click() -> None:  # an event handler of the running loop, as the view's mouse press is
        assert window.select_key("cls.predictions.transform.dense.bias")
        QTimer.singleShot(100, look)
        menu.exec(window.table.viewport().mapToGlobal(window.table.viewport().rect().center()))

    QTimer.singleShot(0, right_click)
    qtbot.waitUntil(lambda: bool(seen), timeout=10_000)
    assert "missing" in seen and "dtype differs" not in seen, seen  # only the new selection's Status
    assert sum(t == "Status" for t in seen) == 1, seen
