"""Every status text the window draws is readable: WCAG 2.x AA (contrast ratio >= 4.5:1 for normal text) against
every background it is drawn on (white rows, the status's own row tint, the selection, the summary box) —
computed from the colours the item models really hand the views, not from a list kept beside them."""
from __future__ import annotations

import re

from explorer.core import resources
from tests.gui.conftest import open_and_wait

AA = 4.5


def luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG relative luminance of an sRGB colour."""
    def lin(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = rgb
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def hex_rgb(h: str) -> tuple[int, int, int]:
    h = h.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def test_contrast_ratio_is_the_wcag_formula():
    assert round(contrast((0, 0, 0), (255, 255, 255)), 1) == 21.0
    assert round(contrast(hex_rgb("#777777"), (255, 255, 255)), 2) == 4.48  # the well-known just-failing grey
    # what the issue measured: tied (light blue on white) and unexpected (amber on its cream tint) fail AA
    assert contrast(hex_rgb("#56B4E9"), (255, 255, 255)) < AA
    assert contrast(hex_rgb("#E69F00"), hex_rgb("#FCF0D6")) < AA


def test_every_status_text_colour_meets_wcag_aa(qtbot, window, demo_dir, minilm):
    from PySide6.QtCore import Qt

    from explorer.gui import palette
    from explorer.gui.models.table_model import TensorTableModel as T

    qss = resources.read_text(resources.STYLESHEET)
    selection = re.search(r"selection-background-color:\s*(#[0-9a-fA-F]{6})", qss).group(1)
    summary_bg = re.search(r"QFrame#summary\s*{[^}]*background:\s*(#[0-9a-fA-F]{6})", qss).group(1)
    backgrounds = {"white": "#ffffff", "selection": selection, "summary": summary_bg}

    seen: set[str] = set()
    for source in ({"demo": True}, {"checkpoint": minilm, "arch": "BertForSequenceClassification"}):
        open_and_wait(qtbot, window, **source)
        tm = window.table_model
        for i in range(tm.rowCount()):
            kind = tm.row(i).kind
            fg = tm.index(i, T.STATUS).data(Qt.ItemDataRole.ForegroundRole)
            bg = tm.index(i, T.STATUS).data(Qt.ItemDataRole.BackgroundRole)
            assert fg is not None, kind
            on = dict(backgrounds, row=bg.name() if bg is not None else "#ffffff")
            for where, b in on.items():
                ratio = contrast(fg.getRgb()[:3], hex_rgb(b))
                assert ratio >= AA, f"{kind} text {fg.name()} on {where} {b}: {ratio:.2f}:1"
            seen.add(kind)
    assert {"matched", "renamed", "tied", "missing", "mismatched", "unexpected", "ignored"} <= seen
    # every kind the palette knows (the tree, the summary, the legend use the same text colour), on its tint too
    for kind, lk in palette.LOOKS.items():
        for where, b in dict(backgrounds, tint=lk.tint).items():
            ratio = contrast(palette.text_color(kind).getRgb()[:3], hex_rgb(b))
            assert ratio >= AA, f"{kind} text on {where}: {ratio:.2f}:1"
    # the tree's status column draws the same colour as the table
    it = next(it for it in window.tree_model.param_items() if it.kind == "matched")
    idx = window.tree_model.index_for_key(it.path, 1)
    assert idx.data(Qt.ItemDataRole.ForegroundRole) == palette.text_color("matched")
