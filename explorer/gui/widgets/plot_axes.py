"""The pyqtgraph axis items of the window's plots: the histogram's count and value axes, the Compare tab's layer axis.

Importing this module imports pyqtgraph (~0.15 s, with its Qt shims) and sets its options; the plots import it
when they are first built, after the window's first paint (``HistogramWidget.ensure_plot``,
``ComparePanel.ensure_chart``), never at start-up.
"""
from __future__ import annotations

import math
from typing import Any

from PySide6.QtGui import QFontMetrics

import pyqtgraph as pg  # after PySide6: pyqtgraph uses the binding already imported

from .. import palette

pg.setConfigOptions(antialias=True, background=palette.PLOT_BACKGROUND, foreground=palette.PLOT_FOREGROUND)


class CountAxis(pg.AxisItem):
    """A left axis whose title never touches its tick labels ("count (log)" next to 10³).

    pyqtgraph reserves only 0.8 × the rotated title's height and draws it 5 px outside the axis, so the widest
    tick label ends up flush with (or over) the title; this reserves the full height plus a small gap."""

    GAP = 6

    def _updateWidth(self) -> None:  # pyqtgraph hook, called whenever tick text or the label changes
        super()._updateWidth()
        if self.fixedWidth is None and self.isVisible() and self.style["showValues"] and self.label.isVisible():
            w = self.maximumWidth() + 0.2 * self.label.boundingRect().height() + self.GAP
            self.setMaximumWidth(w)
            self.setMinimumWidth(w)


class ValueAxis(pg.AxisItem):
    """The value (bottom) axis. For an integer tensor (``integer``) its ticks are integers, one level, spaced so
    that no two labels overlap (pyqtgraph's own spacing put 25299.8, 25300, 25300.2 under a constant
    ``num_batches_tracked`` and ran wide labels into each other)."""

    GAP = 14  # px between two labels

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        self.integer = False

    def label_width(self, lo: float, hi: float) -> float:
        from PySide6.QtGui import QFontMetricsF
        from PySide6.QtWidgets import QApplication

        fm = QFontMetricsF(self.style.get("tickFont") or QApplication.font())
        return max(fm.horizontalAdvance(_int_label(v)) for v in (math.floor(lo), math.ceil(hi)))  # the widest ends

    def tickSpacing(self, minVal: float, maxVal: float, size: float) -> list[tuple[float, float]]:  # noqa: N802
        if not self.integer or not (maxVal > minVal) or size <= 0:
            return super().tickSpacing(minVal, maxVal, size)
        fits = max(1, int(size // (self.label_width(minVal, maxVal) + self.GAP)))  # labels the axis holds
        span, spacing = maxVal - minVal, 1.0
        while span / spacing >= fits:  # 1, 2, 5, 10, 20, 50, ...
            for m in (2.0, 2.5, 2.0):
                spacing *= m
                if span / spacing < fits:
                    break
        return [(spacing, 0.0)]

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:  # noqa: N802
        if not self.integer:
            return super().tickStrings(values, scale, spacing)
        return [_int_label(v * scale) for v in values]


def _int_label(v: float) -> str:
    return f"{int(round(v)):,}"


class LayerAxis(pg.AxisItem):
    """A bottom axis with one label per bar; labels that would overlap their left neighbour are left out (the
    hover read-out names every bar)."""

    def __init__(self) -> None:
        super().__init__("bottom")
        self.labels: list[str] = []
        self.enableAutoSIPrefix(False)

    def set_labels(self, labels: list[str]) -> None:
        self.labels = list(labels)
        self.picture = None
        self.update()

    def placed(self, minVal: float, maxVal: float, size: float) -> list[int]:  # noqa: N803
        """Indices whose labels are drawn: left to right, each one that does not overlap the last one drawn."""
        n = len(self.labels)
        lo, hi = max(0, math.ceil(minVal)), min(n - 1, math.floor(maxVal))
        if n == 0 or hi < lo or size <= 0 or maxVal <= minVal:
            return []
        fm = QFontMetrics(self.style.get("tickFont") or self.font())
        px = size / (maxVal - minVal)
        out, right = [], -math.inf
        for i in range(lo, hi + 1):
            half = fm.horizontalAdvance(self.labels[i]) / 2
            x = (i - minVal) * px
            if x - half >= right + 6 and x - half >= -2 and x + half <= size + 2:
                out.append(i)
                right = x + half
        return out

    def tickValues(self, minVal: float, maxVal: float, size: float) -> list:  # noqa: N802, N803 (pyqtgraph API)
        return [(1.0, [float(i) for i in self.placed(minVal, maxVal, size)])]

    def tickStrings(self, values: list, scale: float, spacing: float) -> list[str]:  # noqa: N802
        out = []
        for v in values:
            i = int(round(v))
            out.append(self.labels[i] if 0 <= i < len(self.labels) else "")
        return out
