"""Shortcuts work wherever focus is, the filter box too — which has it at start (issue 10 finding 9)."""
from __future__ import annotations

from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QKeyEvent

from tests.gui.conftest import open_and_wait


def _override(widget, key, mods) -> bool:
    """Whether ``widget`` claims the key for itself (Qt's ShortcutOverride: accepted = no shortcut fires)."""
    ev = QKeyEvent(QEvent.Type.ShortcutOverride, key, mods)
    ev.ignore()
    from PySide6.QtWidgets import QApplication

    QApplication.sendEvent(widget, ev)
    return ev.isAccepted()


def test_window_shortcuts_fire_while_the_filter_box_has_focus(qtbot, full_window, demo_dir) -> None:
    win = full_window
    open_and_wait(qtbot, win, checkpoint=str(demo_dir))
    win.search.setFocus()
    qtbot.keyClicks(win.search, "layer")  # typed: the line edit has an undo history of its own
    s = win.session
    s.set_plan(s.plan.with_rule("*.bias", action="reinit"), "Reinit biases")
    assert s.undo_stack.index() == 1
    # Ctrl+Z in the filter box is the plan's undo (the window's Edit › Undo), not the line edit's
    assert not _override(win.search, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClick(win.search, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert s.undo_stack.index() == 0 and win.search.text() == "layer"
    # Ctrl+E (Export), Ctrl+T, Ctrl+H ...: every window shortcut; on X11 the line edit would take Ctrl+E as End
    for key in (Qt.Key.Key_E, Qt.Key.Key_T, Qt.Key.Key_H, Qt.Key.Key_R):
        assert not _override(win.search, key, Qt.KeyboardModifier.ControlModifier), key
    # the filter box keeps the keys of text editing
    for key in (Qt.Key.Key_A, Qt.Key.Key_C, Qt.Key.Key_V, Qt.Key.Key_X):
        assert _override(win.search, key, Qt.KeyboardModifier.ControlModifier), key
    assert _override(win.search, Qt.Key.Key_Backspace, Qt.KeyboardModifier.NoModifier)
