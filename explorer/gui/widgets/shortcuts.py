"""The window's shortcuts win over a text field's own use of the same keys (issue 10 finding 9).

A QLineEdit claims Ctrl+Z (its undo) and, with X11 key bindings, Ctrl+E (end of line) and others through Qt's
ShortcutOverride, so with the filter box focused — as it is at start — Export, Undo & co. did nothing. This event
filter declines the override for every key sequence one of the window's actions has, except the keys of text
editing itself (copy, cut, paste, select all, deleting and moving the cursor), which stay the field's.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QWidget

_S = QKeySequence.StandardKey
EDITING_KEYS = (
    _S.Copy, _S.Cut, _S.Paste, _S.SelectAll, _S.Delete, _S.Backspace, _S.DeleteStartOfWord, _S.DeleteEndOfWord,
    _S.MoveToNextChar, _S.MoveToPreviousChar, _S.MoveToNextWord, _S.MoveToPreviousWord, _S.MoveToStartOfLine,
    _S.SelectNextChar, _S.SelectPreviousChar, _S.SelectNextWord, _S.SelectPreviousWord, _S.SelectStartOfLine,
    _S.SelectEndOfLine, _S.Deselect,
)  # MoveToEndOfLine is not here: X11 binds it to Ctrl+E (Export); End still moves there


class WindowShortcutsFirst(QObject):
    """Install on a text field of ``window``: its ShortcutOverride is declined for the window's shortcuts."""

    def __init__(self, window: QWidget) -> None:
        super().__init__(window)
        self.window = window

    def shortcuts(self) -> set[QKeySequence]:
        """Every key sequence of an enabled action in the window (menus, toolbars, panels), looked up live."""
        out: set[QKeySequence] = set()
        for a in self.window.findChildren(QAction):
            if a.isEnabled():
                out.update(s for s in a.shortcuts() if not s.isEmpty())
        return out

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt API)
        if event.type() == QEvent.Type.ShortcutOverride:
            if not any(event.matches(k) for k in EDITING_KEYS):
                if QKeySequence(event.keyCombination()) in self.shortcuts():
                    event.ignore()  # not overridden: Qt's shortcut map runs the window's action
                    return True
        return False
