"""Dropped files: open, compare, use as config, load as plan."""
from __future__ import annotations

from pathlib import Path

from explorer.gui.panels import ComparePanel, PlanPanel
from tests.gui.conftest import LOAD_TIMEOUT
from tests.helpers import save_tiny


def _mime(path: Path):
    from PySide6.QtCore import QMimeData, QUrl

    m = QMimeData()
    m.setUrls([QUrl.fromLocalFile(str(path))])
    return m


def test_drop_menu_open_compare_config_and_plan(qtbot, full_window, trained_but_one, tmp_path):
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QDropEvent

    win = full_window
    other = tmp_path / "other"
    save_tiny("bert", "BertModel", other)
    # nothing open: a drop opens the checkpoint at once
    with qtbot.waitSignal(win.session.loaded, timeout=LOAD_TIMEOUT):
        assert win.handle_drop(_mime(trained_but_one)) is None
    # something open: a menu offers what the file can be
    menu = win.handle_drop(_mime(other / "model.safetensors"), QPoint(10, 10))
    texts = [a.text() for a in menu.actions() if a.isEnabled() and not a.isSeparator()]
    assert texts == ["Open as checkpoint", "Compare with current"]
    act = {a.text(): a for a in menu.actions()}
    with qtbot.waitSignal(win.panel(ComparePanel).diffReady, timeout=LOAD_TIMEOUT):
        act["Compare with current"].trigger()
    assert win.tabs.currentWidget() is win.panel(ComparePanel)
    assert win.session.report.index.folder == str(trained_but_one)  # A stays open
    # a folder with a config.json can also be the config
    menu = win.handle_drop(_mime(other))
    assert [a.text() for a in menu.actions()][-1] == "Open as config"
    with qtbot.waitSignal(win.session.loaded, timeout=LOAD_TIMEOUT) as blocker:
        {a.text(): a for a in menu.actions()}["Open as checkpoint"].trigger()
    assert blocker.args[0].report.index.folder == str(other)
    # config.json: only "Open as config"
    menu = win.handle_drop(_mime(trained_but_one / "config.json"))
    assert [a.text() for a in menu.actions() if a.isEnabled() and not a.isSeparator()] == ["Open as config"]
    with qtbot.waitSignal(win.session.loaded, timeout=LOAD_TIMEOUT) as blocker:
        menu.actions()[-1].trigger()
    assert blocker.args[0].source.config == str(trained_but_one / "config.json")
    # a plan JSON goes straight to the plan editor
    ed = win.panel(PlanPanel)
    ed.freeze(["encoder"])
    plan_path = tmp_path / "plan.json"
    ed.save_plan(str(plan_path))
    ed.undo_stack.undo()
    assert ed.badge("encoder") == ""
    assert win.handle_drop(_mime(plan_path)) is None
    assert win.tabs.currentWidget() is ed and ed.badge("encoder") == "❄"
    # a real QDropEvent takes the same path (and is accepted)
    mime = _mime(plan_path)  # the event does not own its mime data: keep it alive
    ev = QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                    Qt.KeyboardModifier.NoModifier)
    win.dropEvent(ev)
    assert ev.isAccepted()
