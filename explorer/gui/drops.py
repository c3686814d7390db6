"""Files dropped on the window: what each can be (open, compare, config, plan) and acting on the choice.

The window offers "Open as checkpoint" and "Open as config"; panels add their own meanings (``Panel.drop_choices``:
compare with it, load it as a plan). A choice marked ``only`` is the one sensible meaning and runs at once.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from PySide6.QtCore import QPoint
from PySide6.QtWidgets import QMenu, QWidget

from .panels.base import DropChoice


def is_config_like(path: str) -> bool:
    name = os.path.basename(path)
    return path.lower().endswith(".json") and os.path.isfile(path) and not (
        name == "model.safetensors.index.json" or name.endswith(".index.json"))


def drop_choices(path: str, *, open_checkpoint: Callable[[], Any], open_config: Callable[[], Any],
                 panels: Sequence[Any]) -> list[DropChoice]:
    """What ``path`` can be, first the default: panels' ``only`` choices alone when there are any."""
    theirs = [c for p in panels for c in p.drop_choices(path)]
    only = [c for c in theirs if c.only]
    if only:
        return only
    is_json = path.lower().endswith(".json") and os.path.isfile(path)
    out: list[DropChoice] = []
    if not is_config_like(path):
        out.append(DropChoice("Open as checkpoint", open_checkpoint))
        out += theirs
    if is_json or os.path.isfile(os.path.join(path, "config.json")):
        out.append(DropChoice("Open as config", open_config))
    return out


def choice_menu(parent: QWidget, path: str, choices: Sequence[DropChoice]) -> QMenu:
    menu = QMenu(parent)
    title = menu.addAction(os.path.basename(os.path.normpath(path)) or path)
    title.setEnabled(False)
    menu.addSeparator()
    for c in choices:
        menu.addAction(c.text).triggered.connect(lambda _c=False, f=c.run: f())
    return menu


def show_menu(menu: QMenu, parent: QWidget, pos: QPoint | None) -> None:
    menu.exec(parent.mapToGlobal(pos if pos is not None else QPoint(parent.width() // 2, parent.height() // 2)))


def route_drop(paths: Sequence[str], *, nothing_open: bool, open_path: Callable[[str], Any],
               choices: Callable[[str], list[DropChoice]], parent: QWidget, pos: QPoint | None,
               interactive: bool) -> Any:
    """Act on dropped files. Nothing open yet: open the first. Otherwise a menu at the drop position offers what it
    can be (a plan JSON goes to the plan at once). Returns the menu (shown only when ``interactive``), None when
    acted at once, False when there was nothing to drop."""
    if not paths:
        return False
    path = paths[0]
    if nothing_open and not (path.lower().endswith(".json") and os.path.basename(path) == "config.json"):
        open_path(path)
        return None
    offered = choices(path)
    if len(offered) == 1 and offered[0].only:
        offered[0].run()
        return None
    menu = choice_menu(parent, path, offered)
    if interactive:
        show_menu(menu, parent, pos)
    return menu
