"""Help menu texts: keyboard shortcuts (read from the menus), the legend (statuses and badges), About."""
from __future__ import annotations

import html
from typing import Any

from PySide6.QtGui import QKeySequence

from ..core.fmt import safe_text
from . import palette
from .widgets.badges import BADGE_HELP
from .widgets.filter_bar import CHIPS_HELP  # noqa: F401  (re-exported: the chips' one rule)


def _esc(s: Any) -> str:
    """Text from a file for a rich-text label: control/bidi characters escaped visibly, then HTML-escaped."""
    return html.escape(safe_text(s))


def shortcuts(menu_bar: Any) -> list[tuple[str, str, str]]:
    """(menu, action, shortcut) for every menu action that has a shortcut, in menu order."""
    out = []

    def walk(menu: Any, where: str) -> None:
        for a in menu.actions():
            if a.menu() is not None:
                walk(a.menu(), where)
            elif not a.isSeparator() and a.shortcuts():
                keys = ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in a.shortcuts())
                out.append((where, a.text().replace("&", "").split("\t")[0], keys))

    for top in menu_bar.actions():
        if top.menu() is not None:
            walk(top.menu(), top.text().replace("&", ""))
    return out


def shortcuts_html(menu_bar: Any) -> str:
    rows, last = [], None
    for where, text, keys in shortcuts(menu_bar):
        if where != last:
            rows.append(f"<tr><td colspan=2 style='padding-top:6px'><b>{_esc(where)}</b></td></tr>")
            last = where
        rows.append(f"<tr><td style='padding-right:18px'><code>{_esc(keys)}</code></td><td>{_esc(text)}</td></tr>")
    extra = ("<tr><td colspan=2 style='padding-top:6px'><b>Elsewhere</b></td></tr>"
             "<tr><td><code>right-click</code></td><td>plan menu on a module or tensor; column menu on a header</td></tr>"
             "<tr><td><code>drop a file</code></td><td>open it, compare with it, use it as the config, or load a plan</td></tr>"
             f"<tr><td><code>status chips</code></td><td>{_esc(CHIPS_HELP)}</td></tr>")
    return f"<table cellspacing=2>{''.join(rows)}{extra}</table>"


def about_html(menu_bar: Any) -> str:
    from .. import __version__ as ver

    return (f"<h3>Checkpoint Explorer {ver}</h3>"
            "<p>Does this checkpoint load into this model, and is what loads actually trained?<br>"
            "Module tree and tensors colour-coded by how they load, histograms beside a fresh initialisation, "
            "checkpoint A vs B, and a plan to export a patched checkpoint.</p>"
            "<p>The same answers from the command line: <code>ckpt-explorer report | init-check | diff | stats | plan | export</code>.</p>"
            f"<p><b>Shortcuts</b></p>{shortcuts_html(menu_bar)}")


def legend_html() -> str:
    """Help › Legend: every status (colour, glyph, meaning) and every badge drawn beside names."""
    rows = "".join(
        f"<tr><td style='color:{lk.text};font-weight:bold'>{lk.glyph}</td><td><b>{lk.label}</b></td><td>{lk.meaning}</td></tr>"
        for lk in palette.LOOKS.values()
    )
    rows += "<tr><td colspan=3 style='padding-top:8px'><b>Badges</b> (right of a name; on a module they count what is below)</td></tr>"
    rows += "".join(f"<tr><td style='font-weight:bold'>{_esc(g)}</td><td><b>{_esc(label)}</b></td><td>{_esc(meaning)}</td></tr>"
                    for g, label, meaning in BADGE_HELP)
    return f"<table cellspacing=6>{rows}</table>"
