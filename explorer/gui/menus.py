"""The window's menus and toolbar: File, View, one menu per panel (``Panel.menu_title``, in ``PANELS`` order), Help.

``build_menus`` takes the window's slots as a typed ``MenuSlots`` record (no reaching into the window) and
returns the actions the window and the toolbar keep.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMenu

from . import window_settings
from .panels.base import Panel


@dataclass(frozen=True)
class MenuSlots:
    """What the menus call."""

    open_dialog: Callable[[], Any]
    open_config_dialog: Callable[[], Any]
    open_hub_dialog: Callable[[], Any]
    choose_head: Callable[[], Any]
    open_demo: Callable[[], Any]
    open_source: Callable[[Any], Any]  # a recent entry (a Source, opened as it was before)
    reload: Callable[[], Any]
    quit: Callable[[], Any]
    find: Callable[[], Any]
    clear_filter: Callable[[], Any]
    expand_trouble: Callable[[], Any]
    collapse_all: Callable[[], Any]
    show_shortcuts: Callable[[], Any]
    show_legend: Callable[[], Any]
    show_about: Callable[[], Any]


@dataclass(frozen=True)
class Actions:
    open: QAction
    config: QAction
    head: QAction
    demo: QAction
    reload: QAction
    quit: QAction
    recent_menu: QMenu
    recent: window_settings.RecentFiles


def action(parent: QMainWindow, text: str, shortcut: Any, slot: Callable[[], Any], menu: QMenu) -> QAction:
    a = QAction(text, parent)
    if shortcut is not None:
        a.setShortcut(QKeySequence(shortcut))
    a.triggered.connect(lambda _c=False: slot())
    menu.addAction(a)
    return a


def build_menus(window: QMainWindow, slots: MenuSlots, panels: Sequence[Panel], settings: QSettings) -> Actions:
    m = window.menuBar()
    fm = m.addMenu("&File")
    act_open = action(window, "&Open checkpoint…", QKeySequence.StandardKey.Open, slots.open_dialog, fm)
    action(window, "Open from &Hub…", "Ctrl+Shift+H", slots.open_hub_dialog, fm)
    act_config = action(window, "Open &config…", "Ctrl+Shift+O", slots.open_config_dialog, fm)
    act_head = action(window, "Choose &head class…", "Ctrl+H", slots.choose_head, fm)
    act_demo = action(window, "Open &demo", None, slots.open_demo, fm)
    recent_menu = fm.addMenu("&Recent")
    recent = window_settings.RecentFiles(settings, recent_menu, slots.open_source)
    fm.addSeparator()
    act_reload = action(window, "&Reload", "F5", slots.reload, fm)
    fm.addSeparator()
    act_quit = action(window, "&Quit", "Ctrl+Q", slots.quit, fm)
    vm = m.addMenu("&View")
    action(window, "&Find…", QKeySequence.StandardKey.Find, slots.find, vm)
    action(window, "Clear &filter", "Esc", slots.clear_filter, vm)
    action(window, "Expand &trouble", "Ctrl+T", slots.expand_trouble, vm)
    action(window, "&Collapse all", "Ctrl+Shift+T", slots.collapse_all, vm)
    for p in panels:
        if p.menu_title:
            p.fill_menu(m.addMenu(p.menu_title))
    hm = m.addMenu("&Help")
    action(window, "&Keyboard shortcuts", "F1", slots.show_shortcuts, hm)
    action(window, "&Legend", None, slots.show_legend, hm)
    action(window, "&About Checkpoint Explorer", None, slots.show_about, hm)
    tb = window.addToolBar("Main")
    tb.setObjectName("mainToolbar")
    tb.setMovable(False)
    tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
    for a in (act_open, act_config, act_head, act_reload, act_demo):
        tb.addAction(a)
        if not a.shortcut().isEmpty():
            keys = a.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
            a.setToolTip(f"{a.text().replace('&', '').rstrip('…')} ({keys})")
    return Actions(act_open, act_config, act_head, act_demo, act_reload, act_quit, recent_menu, recent)
