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
