"""Status -> colour, glyph icon and label. The only place in the project with colours.

Colours are the Okabe-Ito set (distinguishable with the common colour-vision deficiencies), and every status
also carries a glyph and a word, so colour is never the only cue.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from PySide6.QtCore import QByteArray, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtSvg import QSvgRenderer

from explorer.core import resources
from .kinds import TROUBLE  # noqa: F401  (re-exported: the kinds drawn on a tinted background)


@dataclass(frozen=True)
class Look:
    kind: str
    label: str
    glyph: str
    color: str  # strong colour: icon background, histogram pen, bars (not for text: several fail WCAG AA)
    tint: str  # light background for rows
    meaning: str  # tooltip: what loading does
    text: str = ""  # the same hue darkened for text: >= 4.5:1 (WCAG AA) on white, its tint and the selection


# Display kinds, in legend order. A kind is a core Status refined by its How (tied, renamed, dtype).
LOOKS: dict[str, Look] = {
    "matched": Look("matched", "matched", "✓", "#009E73", "#E3F4EE", "loaded from the checkpoint as is", text="#007052"),
    "renamed": Look("renamed", "renamed", "↻", "#0072B2", "#E0ECF6", "loaded under another name (legacy name, prefix or key mapping)", text="#0067A0"),
    "tied": Look("tied", "tied", "⇄", "#56B4E9", "#E6F4FC", "not stored: shares the weight it is tied to", text="#146897"),
    "dtype": Look("dtype", "dtype differs", "≈", "#8A7A00", "#FBF8D9", "loaded, but cast to the model's dtype", text="#6E6100"),
    "missing": Look("missing", "missing", "✗", "#D55E00", "#FBE5D6", "not in the checkpoint: newly initialised", text="#A24700"),
    "mismatched": Look("mismatched", "shape mismatch", "≠", "#CC79A7", "#F7E6F0", "in the checkpoint with another shape: newly initialised", text="#A23D75"),
    "unexpected": Look("unexpected", "unexpected", "+", "#E69F00", "#FCF0D6", "in the checkpoint but the model has no place for it: dropped", text="#835A00"),
    "ignored": Look("ignored", "ignored", "∅", "#7F7F7F", "#EFEFEF", "silenced by the model's ignore rules or a duplicate: not loaded, not reported", text="#626262"),
    "computed": Look("computed", "computed", "ƒ", "#A0A0A0", "#F5F5F5", "non-persistent buffer: never saved, computed at init", text="#626262"),
    # no model to match against: neither good nor bad, a tensor as stored (slate: apart from every loading colour)
    "in_checkpoint": Look("in_checkpoint", "in checkpoint", "•", "#56606B", "#EEF0F2",
                          "no model to match against: the tensor as stored on disk (open a config to see what loads)", text="#56606B"),
    # not a loading status: the init check's verdict, shown beside the status (Tol's wine: apart from the above)
    "untrained": Look("untrained", "looks untrained", "?", "#882255", "#F3E1EA",
                      "statistically indistinguishable from the model's fresh initialisation: probably never trained", text="#882255"),
}
MODULE_COLOR = "#222222"
MUTED_TEXT = "#595959"  # 4.5:1 also on the trouble tints and the selection
ACCENT = "#0067A0"  # text (plan badges, suggestions): the renamed hue darkened to AA
OVERLAY_COLOR = "#D55E00"
HIST_COLOR = "#0072B2"
HIST_FILL = (0, 114, 178, 90)
PLOT_BACKGROUND = "#FFFFFF"
PLOT_FOREGROUND = "#333333"


def look(kind: str) -> Look:
    return LOOKS.get(kind, LOOKS["ignored"])


def color(kind: str) -> QColor:
    return QColor(look(kind).color)


def text_color(kind: str) -> QColor:
    """The colour of a status's text (item views, summary, legend, details): AA-readable on every row background."""
    lk = look(kind)
    return QColor(lk.text or lk.color)


def tint(kind: str) -> QColor:
    return QColor(look(kind).tint)


@lru_cache(maxsize=None)
def icon(kind: str, size: int = 16) -> QIcon:
    """The status icon (resources/icons/status/<kind>.svg: the status colour with a white glyph), drawn
    at 1x and 2x so it is crisp on any screen. Paths, not font glyphs: the same on every system font."""
    renderer = QSvgRenderer(QByteArray(resources.read_bytes(resources.status_icon(look(kind).kind))))
    ic = QIcon()
    for scale in (1, 2):
        px = QPixmap(size * scale, size * scale)
        px.fill(Qt.GlobalColor.transparent)
        p = QPainter(px)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(p, QRectF(0, 0, size * scale, size * scale))
        p.end()
        px.setDevicePixelRatio(scale)
        ic.addPixmap(px)
    return ic


DESKTOP_FILE_NAME = resources.APP_ID


@lru_cache(maxsize=None)
def app_icon() -> QIcon:
    """The application icon (resources/icons/app.svg) at the sizes window managers ask for."""
    renderer = QSvgRenderer(QByteArray(resources.read_bytes(resources.APP_ICON)))
    ic = QIcon()
    for size in (16, 24, 32, 48, 64, 128, 256):
        px = QPixmap(size, size)
        px.fill(Qt.GlobalColor.transparent)
        p = QPainter(px)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(p, QRectF(0, 0, size, size))
        p.end()
        ic.addPixmap(px)
    return ic


def stylesheet() -> str:
    """The application stylesheet from resources/style.qss."""
    try:
        return resources.read_text(resources.STYLESHEET)
    except OSError:
        return ""
