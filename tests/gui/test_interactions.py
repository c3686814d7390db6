"""QA of the window's interactive parts on the real MiniLM: the rule dialog's OK adds its rule (undoable), the
Model key column says how a key relates to the on-disk name instead of repeating it, and closing the window
while a job runs cancels it."""
from __future__ import annotations

from explorer.gui.panels import PANELS  # noqa: F401  (the window fixture builds these)

import pytest

from tests.gui.conftest import LOAD_TIMEOUT, open_and_wait

HEAD = "BertForSequenceClassification"


@pytest.fixture
def full(qtbot, window, minilm):
    from explorer.gui.panels import InitPanel, PlanPanel

    window.resize(1440, 900)
    ed = window.panel(PlanPanel)
    ip = window.panel(InitPanel)
    open_and_wait(qtbot, window, checkpoint=minilm, arch=HEAD)
    return window, ed, ip


def test_rule_dialog_ok_adds_the_rule(qtbot, full):
    from PySide6.QtWidgets import QDialogButtonBox

    _win, ed, _ip = full
    dlg = ed.rule_dialog()
    dlg.pattern.setText("bert.encoder.layer.[0-2].*")
    dlg.trainable.setCurrentText("frozen")
    assert dlg.preview.text().startswith("hits 48 key(s)")
    with qtbot.waitSignal(ed.planChanged):
        dlg.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    assert sum(1 for e in ed.entries.values() if e.is_model_key and not e.trainable) == 48
    assert "48 frozen" in ed.summary.text() and ed.rules.count() == 1
    ed.undo_stack.undo()
    assert "0 frozen" in ed.summary.text()
    ed.undo_stack.redo()
    assert "48 frozen" in ed.summary.text()
    cancelled = ed.rule_dialog()
    cancelled.pattern.setText("classifier")
    cancelled.action.setCurrentText("drop")
    cancelled.buttons.button(QDialogButtonBox.StandardButton.Cancel).click()
    assert ed.rules.count() == 1


def test_key_note():
    from explorer.gui.models.table_model import key_note

    assert key_note("encoder.w", "encoder.w") == "= on-disk"
    assert key_note("encoder.w", "bert.encoder.w") == "+ bert."
    assert key_note("module.encoder.w", "encoder.w") == "− module."
    assert key_note("gamma", "weight") is None
    assert key_note("", "classifier.weight") is None
    assert key_note("a.w", "a.w (+1)") is None


def test_model_key_column_gives_way_to_the_on_disk_name(full):
    from PySide6.QtCore import Qt

    from explorer.gui.models.table_model import TensorTableModel as T

    win, _ed, _ip = full
    model, view = win.table_model, win.table
    r = model.row_for_name("encoder.layer.0.attention.self.query.bias")
    key = model.index(r, T.KEY)
    assert key.data() == "+ bert."
    assert "bert.encoder.layer.0.attention.self.query.bias" in key.data(Qt.ItemDataRole.ToolTipRole)
    assert key.data(Qt.ItemDataRole.ForegroundRole).name().lower() != "#000000"
    assert model.index(model.rows_for_key("classifier.weight")[0], T.KEY).data() == "classifier.weight"
    assert model.index(r, T.STATUS).data() == "matched"
    assert view.columnWidth(T.NAME) > 2 * view.columnWidth(T.KEY)
    fm = view.fontMetrics()
    assert view.columnWidth(T.NAME) >= fm.horizontalAdvance("layer.0.attention.self.query.bias")


def test_demo_keys_equal_to_their_names_say_so(qtbot, window, demo_dir):
    from explorer.gui.models.table_model import TensorTableModel as T

    open_and_wait(qtbot, window, checkpoint=str(demo_dir))
    model = window.table_model
    texts = [model.index(i, T.KEY).data() for i in range(model.rowCount())]
    assert texts.count("= on-disk") > len(texts) // 2
    mism = [i for i in range(model.rowCount()) if model.row(i).kind == "mismatched"]
    assert mism and model.index(mism[0], T.STATUS).data() == "mismatch"
    assert window.table.columnWidth(T.NAME) > window.table.columnWidth(T.KEY)


def test_closing_while_the_init_check_runs_cancels_it(qtbot, full):
    win, _ed, ip = full
    with qtbot.waitSignal(ip.checkFinished, timeout=LOAD_TIMEOUT):
        ip.run()
        assert win.session.jobs.busy("init_check")
        win.close()
    assert not win.session.jobs.busy("init_check")


def test_reload_clears_the_details_of_the_old_selection(qtbot, full, minilm):
    win, _ed, _ip = full
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
