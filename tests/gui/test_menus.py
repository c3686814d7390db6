"""Menus and Help: every action has its shortcut, and Help lists them."""
from __future__ import annotations


def test_shortcuts_are_set_and_listed(full_window):
    win = full_window
    keys = {text: k for _menu, text, k in win.shortcuts()}
    assert keys["Open checkpoint…"] == "Ctrl+O"
    assert keys["Find…"] == "Ctrl+F"
    assert keys["Reload"] == "F5"
    assert keys["Clear filter"] == "Esc"
    assert keys["Quit"] == "Ctrl+Q"
    assert keys["Compare with…"] == "Ctrl+Shift+C"
    assert keys["Save plan…"] == "Ctrl+S"
    assert keys["Export patched checkpoint…"] == "Ctrl+E"
    assert keys["Keyboard shortcuts"] == "F1"
    assert keys["Check for untrained tensors"] == "Ctrl+Shift+U"
    assert "Ctrl+Shift+Z" in keys["Redo"] and keys["Undo"] == "Ctrl+Z"
    every = [k for _m, _t, ks in win.shortcuts() for k in ks.split(", ")]
    assert len(every) == len(set(every)), "a shortcut is bound twice"
    html = win.show_shortcuts().text()
    assert "Ctrl+Shift+C" in html and "Compare with" in html and "drop a file" in html
    assert "Ctrl+O" in win.show_about().text()
    menus = [a.text() for a in win.menuBar().actions()]
    assert menus[-1] == "&Help"  # panels' menus go before Help
