"""The tabs beside "Tensors", in tab order. A new panel is one module here plus one line in ``PANELS``.

Each is a ``base.Panel`` built from a ``base.PanelHost`` (the session and a few typed hooks). The details panel
under the tabs is not one of them: it is the window's fixed view of ``session.selection``.
"""
from __future__ import annotations

from .adapter import AdapterPanel
from .base import Capability, DropChoice, Panel, PanelHost
from .compare import ComparePanel
from .files import FilesPanel
from .init_check import InitPanel
from .plan import PlanPanel

PANELS: tuple[type[Panel], ...] = (PlanPanel, InitPanel, ComparePanel, AdapterPanel, FilesPanel)

__all__ = ["PANELS", "AdapterPanel", "Capability", "ComparePanel", "DropChoice", "InitPanel", "Panel", "PanelHost", "PlanPanel"]
