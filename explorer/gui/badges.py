"""Small coloured badges drawn right-aligned in a cell (the plan's "↻ reinit", the init check's "? untrained"),
with the cell's own text elided before them so the two never overlap.

A view column gets one ``BadgeDelegate``; features add providers: ``provider(index) -> [(text, colour), ...]``.
"""
from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics
from PySide6.QtWidgets import QAbstractItemView, QStyledItemDelegate, QWidget

Provider = Callable[[QModelIndex], list[tuple[str, str]]]
GAP = 8


class BadgeDelegate(QStyledItemDelegate):
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

    def initStyleOption(self, option: Any, index: QModelIndex) -> None:
        super().initStyleOption(option, index)
        badges = self.badges(index)
        if badges and option.text:
            icon_w = option.decorationSize.width() + 6 if not option.icon.isNull() else 0
            avail = option.rect.width() - icon_w - self._width(option, badges) - 8
            option.text = option.fontMetrics.elidedText(option.text, Qt.TextElideMode.ElideRight, max(avail, 12))

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


def badge_delegate(view: QAbstractItemView, column: int) -> BadgeDelegate:
    """The view's badge delegate for ``column`` (created on first use)."""
    d = view.itemDelegateForColumn(column)
    if not isinstance(d, BadgeDelegate):
        d = BadgeDelegate(view)
        view.setItemDelegateForColumn(column, d)
    return d


def abbreviate(name: str, fits: Callable[[str], bool]) -> str:
    """Shorten a dotted key until ``fits``: leading components shrink to their first letter (numbers stay, so
    layer indices survive), left to right; the last two components are kept; as a last resort the start is
    elided. ``bert.encoder.layer.10.attention.self.query.weight`` → ``b.e.layer.10.attention.self.query.weight``
    → … → ``b.e.l.10.a.s.query.weight`` → ``…10.a.s.query.weight``."""
    if fits(name):
        return name
    parts = name.split(".")
    for i in range(len(parts) - 2):
        if not parts[i].isdigit() and len(parts[i]) > 1:
            parts[i] = parts[i][0]
            s = ".".join(parts)
            if fits(s):
                return s
    s = ".".join(parts)
    while len(s) > 2 and not fits("…" + s):
        s = s[1:]
    return "…" + s


class KeyDelegate(QStyledItemDelegate):
    """Dotted names shortened component-wise (``abbreviate``) instead of cut in the middle."""

    def initStyleOption(self, option: Any, index: QModelIndex) -> None:
        super().initStyleOption(option, index)
        text = option.text
        if text and "." in text:
            fm = option.fontMetrics
            avail = option.rect.width() - 10
            option.text = abbreviate(text, lambda s: fm.horizontalAdvance(s) <= avail)
