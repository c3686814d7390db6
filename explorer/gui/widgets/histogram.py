"""The histogram panel: one step-filled pyqtgraph curve, log-y, bin count, hover read-out, PNG/CSV export.

Extension point for other panels (pretrained vs fresh init, checkpoint A vs B)::

    hist.set_data(edges, counts, label="checkpoint")      # the main series
    hist.set_overlay("fresh init", edges2, counts2)        # a second series drawn on top (outline)
    hist.clear_overlay()

``edges`` has ``len(counts) + 1`` entries (pyqtgraph ``stepMode="center"``). Items are created once and
updated with ``setData``; nothing is recreated per selection.

The plot is built, and pyqtgraph imported (``plot_axes``), when first needed (``ensure_plot``): data to draw, a part of
the plot asked for, or the owner's first idle moment (the window's after its first paint, a tab's when first shown).
Until then a stand-in of the plot's colour shows the message ("select a tensor"); the bar under it (log y, bins, PNG,
CSV) is there from the start, so settings restore into it.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Sequence

import numpy as np
from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .. import palette

PLOT_MIN_HEIGHT = 160
EXPORT_WIDTH = 1200  # px: an exported histogram is readable on a slide
LEGEND_HEADROOM = 1.45  # the y range over the tallest bar when a legend is shown (its top ~30% is free)


class HistogramWidget(QWidget):
    """Histogram of one tensor (or an aggregate) with an optional overlay series."""

    binsChanged = Signal(int)

    def __init__(self, parent: QWidget | None = None, *, inputs: Callable[[], Sequence[str]] | None = None,
                 value_label: str = "value") -> None:
        super().__init__(parent)
        # the files of the window this histogram is in (``Session.input_files``): its PNG/CSV never replace one
        self.inputs: Callable[[], Sequence[str]] = inputs or (lambda: [])
        self._plot: Any = None  # pg.PlotWidget, built by ensure_plot
        self._value_label = value_label
        self.stand_in = QLabel("")  # where the plot goes, until it is built: the message on the plot's colour
        self.stand_in.setObjectName("muted")
        self.stand_in.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.stand_in.setWordWrap(True)
        self.stand_in.setMinimumHeight(PLOT_MIN_HEIGHT)
        self.stand_in.setStyleSheet(f"color: {palette.MUTED_TEXT}; background: {palette.PLOT_BACKGROUND}; "
                                    "font-size: 11pt;")
        self._message = ""

        self.log_y = QCheckBox("log y")
        self.log_y.setToolTip("Logarithmic count axis: shows the tails")
        self.log_y.toggled.connect(self._redraw)
        self.bins = QSpinBox()
        self.bins.setRange(8, 4096)
        self.bins.setValue(256)
        self.bins.setPrefix("bins ")
        self.bins.setKeyboardTracking(False)
        self.bins.setToolTip("Number of histogram bins (integer tensors get one bin per value when the range is small)")
        self.bins.valueChanged.connect(self.binsChanged.emit)
        self.readout = QLabel(" ")
        self.readout.setObjectName("readout")
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # a long read-out (bin, count, overlay count) never widens the panel: it is cut at the panel's edge
        self.readout.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.readout.setMinimumWidth(0)
        png = QToolButton(text="PNG")
        png.setToolTip("Export the plot as PNG")
        png.clicked.connect(lambda: self._export_dialog("png"))
        csv = QToolButton(text="CSV")
        csv.setToolTip("Export bin edges and counts as CSV")
        csv.clicked.connect(lambda: self._export_dialog("csv"))
        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(self.readout, 1)
        bar.addWidget(self.log_y)
        bar.addWidget(self.bins)
        bar.addWidget(png)
        bar.addWidget(csv)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.stand_in, 1)
        lay.addLayout(bar)
        self._layout = lay

        self._edges = np.array([0.0, 1.0])
        self._counts = np.array([0.0])
        self._integer = False
        self._label = ""
        self._title, self._bins_note = "", ""  # see set_caption / set_subject
        self._ov: tuple[str, np.ndarray, np.ndarray] | None = None
        self.set_message("select a tensor")

    def ensure_plot(self) -> HistogramWidget:
        """Build the plot (importing pyqtgraph) if not yet built, showing the current state; returns self."""
        if self._plot is not None:
            return self
        from . import plot_axes

        pg = plot_axes.pg
        self.value_axis = plot_axes.ValueAxis("bottom")
        self.value_axis.integer = self._integer
        plot = pg.PlotWidget(axisItems={"left": plot_axes.CountAxis("left"), "bottom": self.value_axis})
        plot.setMinimumHeight(PLOT_MIN_HEIGHT)
        pi = plot.getPlotItem()
        pi.showGrid(x=True, y=True, alpha=0.15)
        pi.setMenuEnabled(False)
        pi.hideButtons()
        pi.setLabel("left", "count")
        pi.setLabel("bottom", self._value_label)
        for ax in ("bottom", "left"):
            pi.getAxis(ax).enableAutoSIPrefix(False)
        self.legend = pi.addLegend(offset=(-10, 10), labelTextColor=palette.PLOT_FOREGROUND)
        self.curve = pg.PlotDataItem(
            [0.0, 1.0], [0.0], stepMode="center", fillLevel=0, fillOutline=True,
            pen=pg.mkPen(palette.HIST_COLOR, width=1.2), brush=pg.mkBrush(*palette.HIST_FILL), name="checkpoint",
        )
        self.overlay = pg.PlotDataItem(
            [0.0, 1.0], [0.0], stepMode="center", pen=pg.mkPen(palette.OVERLAY_COLOR, width=2), name="overlay",
        )
        pi.addItem(self.curve)
        pi.addItem(self.overlay)
        self.overlay.hide()
        self.legend.hide()
        self.marker = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#999999", style=Qt.PenStyle.DashLine))
        self.marker.hide()
        pi.addItem(self.marker, ignoreBounds=True)
        # a widget over the plot, centred on it (not a TextItem in data coordinates: with no data the view range
        # is arbitrary and the text landed on the y-axis)
        self.placeholder = QLabel("", plot)
        self.placeholder.setObjectName("muted")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.placeholder.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.placeholder.setStyleSheet(f"color: {palette.MUTED_TEXT}; background: transparent; font-size: 11pt;")
        plot.installEventFilter(self)
        # the axes are laid out lazily (after a range change, new tick labels): follow their geometry, or the note
        # keeps margins measured before the layout settled and runs over an axis
        for name in ("left", "bottom"):
            pi.getAxis(name).geometryChanged.connect(self._place_placeholder)
        self._proxy = pg.SignalProxy(plot.scene().sigMouseMoved, rateLimit=30, slot=self._on_mouse)
        self._plot = plot
        self._layout.replaceWidget(self.stand_in, plot)
        plot.show()  # now, not at the layout's next turn of the event loop (a grab right after shows it)
        self.stand_in.hide()
        self.stand_in.deleteLater()
        self.stand_in = None
        self.set_message(self._message)
        self._redraw()
        return self

    @property
    def plot(self) -> Any:
        """The pyqtgraph PlotWidget (built now if it was not)."""
        return self.ensure_plot()._plot

    @property
    def built(self) -> bool:
        return self._plot is not None

    _PLOT_PARTS = frozenset({"value_axis", "legend", "curve", "overlay", "marker", "placeholder", "_proxy"})

    def __getattr__(self, name: str) -> Any:  # only for attributes not set yet: the plot's parts build it
        if name in HistogramWidget._PLOT_PARTS and self.__dict__.get("_plot", 0) is None:
            self.ensure_plot()
            return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ---- public API
    @property
    def edges(self) -> np.ndarray:
        return self._edges

    @property
    def counts(self) -> np.ndarray:
        return self._counts

    def set_data(self, edges: Sequence[float], counts: Sequence[float], *, label: str = "checkpoint",
                 integer: bool = False) -> None:
        """Show a histogram (``len(edges) == len(counts) + 1``); empty counts show 'no finite values'.
        ``integer``: an integer tensor's values (integer ticks on the value axis)."""
        self.ensure_plot()
        self._integer = self.value_axis.integer = integer
        self.value_axis.picture = None  # ticks redone with the new rule
        e = np.asarray(edges, dtype=np.float64)
        c = np.asarray(counts, dtype=np.float64)
        if c.size == 0 or e.size != c.size + 1:
            self._edges, self._counts = np.array([0.0, 1.0]), np.array([0.0])
            self.set_message("no finite values")
        else:
            self._edges, self._counts = e, c
            self.set_message("")
        self._label = label
        self._redraw()

    def set_overlay(self, label: str, edges: Sequence[float], counts: Sequence[float]) -> None:
        """Draw a second series (outline) over the main one, e.g. a fresh-init or checkpoint-B distribution."""
        e = np.asarray(edges, dtype=np.float64)
        c = np.asarray(counts, dtype=np.float64)
        if e.size != c.size + 1 or c.size == 0:
            self.clear_overlay()
            return
        self.ensure_plot()
        self._ov = (label, e, c)
        self._redraw()

    def clear_overlay(self) -> None:
        self._ov = None
        self._redraw()

    def clear(self, message: str = "") -> None:
        self._edges, self._counts = np.array([0.0, 1.0]), np.array([0.0])
        self._ov = None
        self.set_message(message)
        self._redraw()
        if message and self.built:  # the hidden curve does not count for auto-range: no stale axes behind the note
            self.plot.getPlotItem().getViewBox().setRange(xRange=(0.0, 1.0), yRange=(0.0, 1.0), padding=0.05)

    def set_subject(self, name: str) -> None:
        """Name what the plot shows (the exported PNG's title and default file name, the CSV's title line)."""
        self._title = name

    @property
    def subject(self) -> str:
        return self._title

    def set_message(self, text: str) -> None:
        """A placeholder centred over the plot ("select a tensor", "no finite values"); '' hides it. Its text is
        laid out inside the axes (margins as wide as the left axis and as tall as the bottom one): a long note never
        runs over the tick labels."""
        self._message = text
        if not self.built:
            self.stand_in.setText(text)
            return
        self.placeholder.setText(text)
        self.placeholder.setVisible(bool(text))
        self.curve.setVisible(not text)  # no flat line at zero under the placeholder
        self._place_placeholder()

    def _place_placeholder(self) -> None:
        if not self.built:
            return
        pi = self.plot.getPlotItem()
        left, bottom = pi.getAxis("left"), pi.getAxis("bottom")
        # the axes' layout rectangles (their bounding rects span the whole plot: the grid lines are theirs)
        lw = int(pi.mapRectToScene(left.geometry()).right()) + 4 if left.isVisible() else 0
        bh = int(self.plot.height() - pi.mapRectToScene(bottom.geometry()).top()) + 4 if bottom.isVisible() else 0
        self.placeholder.setGeometry(self.plot.rect())
        self.placeholder.setContentsMargins(max(lw, 0), 0, 0, max(bh, 0))
        self.placeholder.raise_()

    @property
    def message_text(self) -> str:
        if not self.built:
            return self._message
        return self.placeholder.text() if not self.placeholder.isHidden() else ""

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt API)
        if obj is self._plot and event.type() == QEvent.Type.Resize:
            self._place_placeholder()
        return False

    def export_csv(self, path: str, *, force: bool = False) -> None:
        """Write a ``# histogram of NAME: N bins (...)`` line (the bins asked for, or why there are fewer), then
        ``left,right,count`` rows of plain numbers (atomically). Never over an input of the window or anything but a regular
        file; over an existing file that is not such a CSV only with ``force``. Raises ExplorerError or OSError."""
        lines = [self.csv_title(), CSV_HEADER]
        lines += [f"{float(a)!r},{float(b)!r},{int(n)}" for a, b, n in zip(self._edges[:-1], self._edges[1:], self._counts)]
        if self._ov is not None:
            lab, e, c = self._ov
            lines.append(f"# overlay: {lab}")
            lines += [f"{float(a)!r},{float(b)!r},{int(n)}" for a, b, n in zip(e[:-1], e[1:], c)]
        from ...core.fsio import atomic_write_bytes, check_output  # on demand: keeps core.export off the start-up path

        check_output(path, inputs=list(self.inputs()), is_ours=is_histogram_csv, force=force, what="histogram CSV")
        atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())

    def set_caption(self, title: str, bins_note: str = "") -> None:
        """What the main series is (a tensor or module name) and why it has fewer bins than asked ("" if it has
        them): the CSV's first line says both."""
        self._title, self._bins_note = title, bins_note

    def csv_title(self) -> str:
        """``# histogram of NAME: 27 bins, 256 asked: 768 values get about √n bins ...`` (the stats' ``bins_note``),
        or ``# histogram of NAME: 256 bins, as asked``."""
        from ...core.fmt import safe_text

        n = int(self._counts.size)
        bins = safe_text(self._bins_note) if self._bins_note else f"{n} bin{'s' if n != 1 else ''}, as asked"
        return f"# histogram of {safe_text(self._title or self._label or 'tensor')}: {bins}"

    def export_png(self, path: str, *, force: bool = False) -> None:
        """Save the plot as a PNG (atomically), with the same refusals as :meth:`export_csv`."""
        from ...core.fsio import check_output
        from ...core.outputs import is_png

        check_output(path, inputs=list(self.inputs()), is_ours=is_png, force=force, what="histogram PNG")
        save_png(self.render_image(), path)

    def render_image(self, width: int = EXPORT_WIDTH) -> Any:
        """The plot as an image at least ``width`` px wide (the widget is often ~400 px), titled with the subject."""
        from pyqtgraph.exporters import ImageExporter

        from ...core.fmt import safe_text

        pi = self.plot.getPlotItem()
        pi.setTitle(safe_text(self.subject) if self.subject else None)
        try:
            ex = ImageExporter(pi)
            ex.parameters()["width"] = max(width, self.plot.width())
            return ex.export(toBytes=True)
        finally:
            pi.setTitle(None)

    def default_export_name(self, ext: str) -> str:
        """The file name the export dialog offers: the subject's name ("histogram" when none), safe as a file name."""
        import re

        return (re.sub(r"[^\w.+-]+", "_", self.subject).strip("._") or "histogram") + f".{ext}"

    # ---- drawing
    def _redraw(self) -> None:
        if not self.built:  # drawn when built (ensure_plot)
            return
        log = self.log_y.isChecked()
        pi = self.plot.getPlotItem()
        pi.setLogMode(False, log)
        # log axis: empty bins sit on the floor (0.5 counts) instead of -inf
        c = np.where(self._counts > 0, self._counts, 0.5) if log else self._counts
        self.curve.setData(self._edges, c)
        self.curve.setFillLevel(math.log10(0.5) if log else 0.0)
        self.curve.opts["name"] = self._label
        if self._ov is not None:
            lab, e, oc = self._ov
            self.overlay.setData(e, np.where(oc > 0, oc, 0.5) if log else oc)
            self.overlay.opts["name"] = lab
            self.overlay.show()
            self.legend.clear()
            self.legend.addItem(self.curve, self._label)
            self.legend.addItem(self.overlay, lab)
            self.legend.show()
        else:
            self.overlay.hide()
            self.legend.hide()
        pi.setLabel("left", "count (log)" if log else "count")
        pi.enableAutoRange()
        if self._ov is not None:  # headroom above the data for the legend (top right): it never covers a bar
            top = float(max(np.max(c) if c.size else 1.0, np.max(self._ov[2]) if self._ov[2].size else 1.0, 1.0))
            pi.enableAutoRange(axis="y", enable=False)
            if log:
                lo, hi = math.log10(0.5), math.log10(top)
                pi.setYRange(lo, hi + (LEGEND_HEADROOM - 1.0) * (hi - lo) + 0.1, padding=0)
            else:
                pi.setYRange(0.0, top * LEGEND_HEADROOM, padding=0)

    def _on_mouse(self, evt: tuple) -> None:
        pos = evt[0]
        vb = self.plot.getPlotItem().getViewBox()
        if not self.plot.sceneBoundingRect().contains(pos) or self._counts.size == 0:
            return
        x = vb.mapSceneToView(pos).x()
        e = self._edges
        i = int(np.searchsorted(e, x, side="right")) - 1
        if 0 <= i < self._counts.size and not self.message_text:
            total = self._counts.sum() or 1
            txt = f"[{e[i]:.4g}, {e[i + 1]:.4g}): {int(self._counts[i]):,}  ({100 * self._counts[i] / total:.2f}%)"
            if self._ov is not None:
                lab, oe, oc = self._ov
                j = int(np.searchsorted(oe, x, side="right")) - 1
                if 0 <= j < oc.size:
                    txt += f"   {lab}: {int(oc[j]):,}"
            self.readout.setText(txt)
            self.marker.setPos(x)
            self.marker.show()
        else:
            self.readout.setText(" ")
            self.marker.hide()

    def _export_dialog(self, ext: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Export histogram as {ext.upper()}", self.default_export_name(ext),
                                              f"{ext.upper()} (*.{ext})")
        if not path:
            return
        from ...core.errors import ExplorerError

        try:  # the save dialog has already asked whether to replace an existing file: that is the user's --force
            self.export_png(path, force=True) if ext == "png" else self.export_csv(path, force=True)
        except (OSError, ExplorerError) as e:
            from PySide6.QtWidgets import QMessageBox

            QMessageBox.warning(self, "Export failed", str(e))


CSV_HEADER = "left,right,count"


def is_histogram_csv(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a regular file starting the way :meth:`HistogramWidget.export_csv` writes: its
    ``# histogram of`` line (or, from older versions, the ``left,right,count`` header)."""
    from ...core.outputs import starts_with

    return starts_with(path, b"# histogram of ") or starts_with(path, (CSV_HEADER + "\n").encode())


def save_png(pix: Any, path: str) -> None:
    """Write a QPixmap/QImage to ``path`` as PNG via core's atomic temp + fsync + rename. Raises OSError."""
    from ...core.fsio import atomic_output

    with atomic_output(path, suffix=".png") as tmp:
        if not pix.save(tmp, "PNG"):
            raise OSError(f"{path}: could not write the PNG")
