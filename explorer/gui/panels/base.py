"""The panel protocol: a tab beside "Tensors" with its own menu, built from the session and a few typed hooks.

A panel never reaches into the window: it reads and changes ``host.session`` (typed state with signals), draws
on ``host.details`` (the details panel under the tabs), and calls the ``PanelHost`` hooks. The window asks each
panel, through this protocol, for its menu, its capabilities (``Capability``), its badges beside names, its context-menu entries, what a dropped
file can mean to it, and its part of a screenshot (``prepare_screenshot``). Panels are listed in
``panels.PANELS``; adding one is a new module plus one line there.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from PySide6.QtWidgets import QMenu, QWidget

if TYPE_CHECKING:
    from ..request import Source
    from ..screenshot import ReadyGate
    from ..session import Overlay, Selection, Session
    from .details import DetailsPanel


class Capability(Enum):
    """What a panel adds to the window's own views (``Panel.capabilities``); the window shows the matching
    column or chip only when some panel in ``PANELS`` has it."""

    TABLE_BADGES = "table badges"  # its badges also fill the tensor table's Plan column
    INIT_CHECK = "init check"  # it answers ``session.request_init_check()``: the filter bar's "untrained?" chip


@dataclass(frozen=True)
class DropChoice:
    """What a dropped file can be to a panel: menu text and the action. ``only``: the one sensible meaning."""

    text: str
    run: Callable[[], Any]
    only: bool = False


@dataclass(frozen=True)
class PanelHost:
    """What the window gives a panel."""

    session: Session
    details: DetailsPanel
    ready: ReadyGate  # screenshot readiness: hold / release while drawing what a screenshot should show
    select: Callable[[str], bool]  # an on-disk name, model key or module path, as if clicked; True if found
    show_selection: Callable[[Selection], None]  # something with no row in the tree or table
    show_error: Callable[[str], None]  # message bar (and a dialog when interactive)
    open_source: Callable[[Source], None]
    raise_panel: Callable[[QWidget], None]  # make this panel the open tab
    interactive: bool  # False: no modal dialogs (tests, screenshots)
    inputs: Callable[[], list[str]]  # every file the window read: what it writes never replaces one


class Panel(QWidget):
    """Base class of the tabs. Override what applies; the defaults do nothing."""

    title: ClassVar[str] = ""  # tab text
    menu_title: ClassVar[str] = ""  # top-level menu ("" = none)
    overlay: ClassVar[Overlay | None] = None  # the histogram overlay chosen while this tab is open (None: default)
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init__(self, host: PanelHost) -> None:
        super().__init__()
        self.host = host
        self.session = host.session

    def fill_menu(self, menu: QMenu) -> None:
        """Add this panel's actions (with shortcuts) to its menu."""

    def badges(self, key: str, is_leaf: bool) -> list[tuple[str, str]]:
        """(text, colour) badges drawn right of a tree name (``key``: model key or module path)."""
        return []

    def context_menu(self, paths: list[str], menu: QMenu) -> None:
        """Add entries to the right-click menu of tree/table rows (``paths``: their keys or module paths)."""

    def drop_choices(self, path: str) -> list[DropChoice]:
        return []

    def prepare_screenshot(self) -> Callable[[], bool] | None:
        """Called when a screenshot run starts. May return a picker: called once the report is ready, it selects
        what the shot should show (and returns True) or returns False to leave it to the window."""
        return None
