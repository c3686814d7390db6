"""How names are shortened (``elide_key``: the one rule for dotted key paths, in every view and label) and the
small coloured badges drawn right-aligned in a cell (the plan's "↻ reinit", the init check's "? untrained"),
with the cell's own text shortened by that rule before them so the two never overlap.

A view column gets one ``BadgeDelegate``; features add providers: ``provider(index) -> [(text, colour), ...]``.
"""
from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QEvent, QModelIndex, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QFontMetricsF
from PySide6.QtWidgets import QAbstractItemView, QApplication, QLabel, QStyle, QStyledItemDelegate, QToolTip, QWidget

Provider = Callable[[QModelIndex], list[tuple[str, str]]]
GAP = 8
TEXT_SLACK = 7  # px: the item padding of style.qss (3 px a side) and sub-pixel widths


def badge_delegate(view: QAbstractItemView, column: int) -> BadgeDelegate:
    """The view's badge delegate for ``column`` (created on first use)."""
    d = view.itemDelegateForColumn(column)
    if not isinstance(d, BadgeDelegate):
        d = BadgeDelegate(view)
        view.setItemDelegateForColumn(column, d)
    return d


MIN_KEPT = 3  # characters a kept name component keeps when it is shortened inside ("dow…" of down_proj)


def elide_key(name: str, fits: Callable[[str], bool], *, elide_middle: Callable[[str], str] | None = None) -> str:
    """The one way a dotted key path is shortened, so rows stay apart: in full when it ``fits``; else

    1. components give way left to right (the shared model prefix says the least), each run of dropped components
       one "…" — every numeric index (layer, expert) and the last two named components (``down_proj.weight``,
       ``experts.gate_up_proj``, ``embed_tokens.weight``) are kept: ``…60.…252.down_proj.weight``;
    2. the kept names before the leaf are shortened inside, keeping their head (``…60.…252.dow….weight``: the
       head tells down_proj / gate_proj / up_proj apart), left to right, to ``MIN_KEPT`` characters;
    3. those names give way (``…60.…252.…weight``), then "…" + the leaf alone;
    4. ``elide_middle(name)`` (Qt's ElideMiddle) or a character-wise middle elision.

    A suffix after a space (`` (+1)``) is kept."""
    if fits(name):
        return name
    base, sp, rest = name.partition(" ")
    suffix = sp + rest
    parts = base.split(".")
    n = len(parts)
    named = [i for i, p in enumerate(parts) if not p.isdigit()]
    keep = {i for i, p in enumerate(parts) if p.isdigit()} | set(named[-2:])
    shown: list[str | None] = list(parts)  # None: dropped

    def render() -> str:
        out, prev_dropped = [], False
        for i, p in enumerate(shown):
            if p is None:
                if not prev_dropped:
                    out.append("…")
                prev_dropped = True
                continue
            out.append(p + ("." if i < n - 1 else ""))
            prev_dropped = False
        return "".join(out) + suffix

    for i in (i for i in range(n) if i not in keep):  # 1.
        shown[i] = None
        if fits(s := render()):
            return s
    inner = [i for i in named[-2:] if i != n - 1]
    for i in inner:  # 2.
        for k in range(len(parts[i]) - 1, MIN_KEPT - 1, -1):
            shown[i] = parts[i][:k] + "…"
            if fits(s := render()):
                return s
    for i in inner:  # 3.
        shown[i] = None
        if fits(s := render()):
            return s
    leaf = "…" + parts[-1] + suffix
    if n > 1 and fits(leaf):
        return leaf
    if elide_middle is not None:  # 4.
        return elide_middle(name)
    keep_tail = parts[-1] + suffix
    s = base[: len(base) - len(keep_tail)]
    while s and not fits(s + "…" + keep_tail):
        s = s[:-1]
    return s + "…" + keep_tail if s else "…" + keep_tail


def breakable(text: str) -> str:
    """``text`` (already escaped) with zero-width spaces after dots, underscores and slashes: a word-wrapped label
    breaks a long name there instead of growing as wide as the name (and its window with it)."""
    return text.replace(".", ".\u200b").replace("_", "_\u200b").replace("/", "/\u200b")


class KeyDelegate(QStyledItemDelegate):
    """Cell text (dotted key paths above all) shortened with ``elide_key`` to the room the style really draws
    text in (full text when it fits; the tooltip has it all)."""

    def reserved(self, option: Any, index: QModelIndex) -> int:
        """Pixels at the right of the cell the text must leave free (``BadgeDelegate``: its badges)."""
        return 0

    def initStyleOption(self, option: Any, index: QModelIndex) -> None:
        super().initStyleOption(option, index)
        text = option.text
        if text:
            fm = option.fontMetrics
            style = option.widget.style() if option.widget is not None else QApplication.style()
            # measure against the rectangle the style really draws text in (margins, icon), or Qt elides again
            r = style.subElementRect(QStyle.SubElement.SE_ItemViewItemText, option, option.widget)
            margin = 2 * (style.pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, option.widget) + 1)
            # the style sheet's item padding (3 px a side) is taken off the rect the text is really drawn in, and
            # Qt compares fractional widths: leave that much, or Qt elides the shortened name again ("…0.outpu…nse")
            avail = max(r.width() - margin - self.reserved(option, index) - TEXT_SLACK, 12)
            fmf = QFontMetricsF(option.font)
            if fmf.horizontalAdvance(text) > avail:
                option.text = elide_key(text, lambda s: fmf.horizontalAdvance(s) <= avail,
                                        elide_middle=lambda s: fm.elidedText(s, Qt.TextElideMode.ElideMiddle, avail))

    def helpEvent(self, event: Any, view: Any, option: Any, index: QModelIndex) -> bool:
        if event.type() == QEvent.Type.ToolTip and index.isValid() and not index.data(Qt.ItemDataRole.ToolTipRole):
            text = index.data()
            if isinstance(text, str) and text:
                QToolTip.showText(event.globalPos(), text, view)
                return True
        return super().helpEvent(event, view, option, index)


class BadgeDelegate(KeyDelegate):
    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.providers: list[Provider] = []

    def badges(self, index: QModelIndex) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for p in self.providers:
            out.extend(b for b in p(index) if b[0])
        return out

    @staticmethod
    def badge_font(option: Any) -> QFont:
        f = QFont(option.font)
        f.setPointSizeF(max(6.0, f.pointSizeF() * 0.85))
        return f

    def _width(self, option: Any, badges: list[tuple[str, str]]) -> int:
        fm = QFontMetrics(self.badge_font(option))
        return sum(fm.horizontalAdvance(t) + GAP for t, _c in badges)

    def reserved(self, option: Any, index: QModelIndex) -> int:
        badges = self.badges(index)
        return self._width(option, badges) + 8 if badges else 0

    def tooltip(self, index: QModelIndex) -> str:
        """The cell's own tooltip plus what each of its badges means."""
        tip = index.data(Qt.ItemDataRole.ToolTipRole)
        helps = "\n".join(h for h in (badge_help(t) for t, _c in self.badges(index)) if h)
        return "\n\n".join(x for x in (tip if isinstance(tip, str) else "", helps) if x)

    def helpEvent(self, event: Any, view: Any, option: Any, index: QModelIndex) -> bool:
        if event.type() == QEvent.Type.ToolTip and index.isValid() and self.badges(index):
            QToolTip.showText(event.globalPos(), self.tooltip(index), view)
            return True
        return super().helpEvent(event, view, option, index)

    def paint(self, painter: Any, option: Any, index: QModelIndex) -> None:
        super().paint(painter, option, index)
        badges = self.badges(index)
        if not badges:
            return
        painter.save()
        f = self.badge_font(option)
        painter.setFont(f)
        fm = QFontMetrics(f)
        right = option.rect.right() - 4
        for text, color in reversed(badges):
            w = fm.horizontalAdvance(text)
            painter.setPen(QColor(color))
            r = option.rect.adjusted(0, 0, 0, 0)
            r.setLeft(right - w)
            r.setRight(right)
            painter.drawText(r, int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), text)
            right -= w + GAP
        painter.restore()


class KeyLabel(QLabel):
    """A label showing one key path, shortened with ``elide_key`` to its width (full path in the tooltip)."""

    def __init__(self, key: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.key = key
        self.setToolTip(key)
        self.setText(key)

    def minimumSizeHint(self) -> Any:  # noqa: N802 (Qt API): never widens its panel
        h = super().minimumSizeHint()
        h.setWidth(12)
        return h

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        fm = self.fontMetrics()
        avail = max(self.contentsRect().width(), 1)
        self.setText(elide_key(self.key, lambda s: fm.horizontalAdvance(s) <= avail,
                               elide_middle=lambda s: fm.elidedText(s, Qt.TextElideMode.ElideMiddle, avail)))


# what each badge means (Help › Legend lists these too); a badge's text starts with its glyph
BADGE_HELP: tuple[tuple[str, str, str], ...] = (
    ("❄", "frozen", "plan: kept out of training (❄ 3/8 on a module: 3 of its 8 keys)"),
    ("↻", "reinit", "plan: re-initialised instead of loaded (↻ 4 on a module: 4 keys below)"),
    ("✕", "drop", "plan: dropped from the exported checkpoint (✕ 2 on a module: 2 tensors below)"),
    ("×", "LR scale", "plan: learning-rate multiplier (×0.1)"),
    ("?", "looks untrained", "init check: values look like a fresh initialisation (? 2 on a module: 2 tensors below)"),
)


def badge_help(text: str) -> str:
    """One line per badge in ``text`` (e.g. ``"↻ 4 ❄"``) saying what it means; '' when nothing is recognised."""
    lines = []
    for glyph, label, meaning in BADGE_HELP:
        for tok in _badge_tokens(text):
            if tok.startswith(glyph):
                lines.append(f"{tok}  {label} — {meaning}")
    return "\n".join(lines)


def _badge_tokens(text: str) -> list[str]:
    """``"↻ 4 ❄ ×0.1"`` -> ``["↻ 4", "❄", "×0.1"]`` (a number or "reinit"/"drop"/"a/b" belongs to the glyph before)."""
    out: list[str] = []
    for w in text.split():
        if out and not any(w.startswith(g) for g, _l, _m in BADGE_HELP):
            out[-1] += " " + w
        else:
            out.append(w)
    return out
