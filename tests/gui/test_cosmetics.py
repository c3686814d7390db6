"""The small things that decide whether the window looks finished (issue 10, finding 15): dialogs that keep their
fields, titles that fit, summary labels that never dangle, notes that never run over an axis, integers shown as
integers, a legend that never covers the data, a progress figure beside its bar, a histogram PNG worth keeping."""
from __future__ import annotations

from explorer.gui.panels import PANELS  # noqa: F401  (the window fixture builds these)

from pathlib import Path

import numpy as np
import pytest

from tests.gui.conftest import open_and_wait, select_and_measure, write_safetensors

HEAD = "BertForSequenceClassification"


@pytest.fixture
def editor(qtbot, window, minilm):
    from explorer.gui.panels import PlanPanel

    open_and_wait(qtbot, window, checkpoint=minilm, arch=HEAD)
    return window.panel(PlanPanel)


def test_rule_dialog_keeps_its_fields_as_the_preview_grows(qtbot, editor):
    dlg = editor.rule_dialog()
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.waitExposed(dlg)
    fields = (dlg.pattern, dlg.kind, dlg.action, dlg.trainable, dlg.lr)
    width = dlg.width()
    dlg.kind.setCurrentText("regex")
    dlg.pattern.setText(r"bert\.encoder\.layer\.\d+\.(attention|intermediate|output)\..*_long_enough_to_wrap|.*")
    dlg.action.setCurrentText("reinit")
    qtbot.wait(50)
    assert "hits" in dlg.preview.text()
    for f in fields:
        assert f.height() >= f.sizeHint().height(), (f, f.height(), f.sizeHint().height())
    assert dlg.width() == width  # the preview wraps; the dialog does not widen
    assert dlg.preview.height() >= dlg.preview.heightForWidth(dlg.preview.width())  # and shows all of it


def test_lr_dialog_title_fits(qtbot, editor):
    dlg = editor.lr_dialog(["bert.encoder.layer.0.attention.self.query.weight"])
    qtbot.addWidget(dlg)
    fm = dlg.fontMetrics()
    assert fm.horizontalAdvance(dlg.windowTitle()) + 160 <= dlg.sizeHint().width()  # never "Learnin… te scale"
    assert dlg.labelText().startswith("Learning-rate multiplier for")


def lines(html: str, font, width: int) -> list[str]:
    from PySide6.QtGui import QTextDocument

    doc = QTextDocument()
    doc.setDefaultFont(font)
    doc.setHtml(html)
    doc.setTextWidth(width)
    out = []
    block = doc.begin()
    while block.isValid():
        lay = block.layout()
        for i in range(lay.lineCount()):
            ln = lay.lineAt(i)
            out.append(block.text()[ln.textStart(): ln.textStart() + ln.textLength()])
        block = block.next()
    return out


def test_summary_labels_never_dangle_at_a_line_end(qtbot, window, demo_dir):
    open_and_wait(qtbot, window, demo=True)
    html, font = window.summary_label.text(), window.summary_label.font()
    for width in range(300, 1400, 20):
        for ln in lines(html, font, width):
            s = ln.replace("\u200b", "").strip()
            assert not s.endswith(":") and not s.endswith("+") and not s.endswith("✗"), (width, ln)


def test_a_note_over_the_plot_never_runs_over_an_axis(qtbot, window, demo_dir):
    open_and_wait(qtbot, window, demo=True)
    h = window.details.histogram
    pi = h.plot.getPlotItem()
    assert window.select_key("cls.predictions.transform.dense.weight")  # missing: nothing on disk
    qtbot.waitUntil(lambda: h.message_text.startswith("not in the checkpoint"))
    qtbot.wait(50)
    lab = h.placeholder
    text_area = lab.contentsRect()  # where the wrapped text is laid out (the label covers the whole plot)
    left_axis = pi.mapRectToScene(pi.getAxis("left").geometry())  # tick labels and title
    bottom_axis = pi.mapRectToScene(pi.getAxis("bottom").geometry())
    assert text_area.left() >= left_axis.right() and text_area.bottom() <= bottom_axis.top(), (text_area, left_axis, bottom_axis)
    need = lab.fontMetrics().boundingRect(text_area, int(lab.alignment()) | 0x1000, lab.text())  # 0x1000: word wrap
    assert need.height() <= text_area.height()  # and the note fits in it


def test_integer_tensors_show_integers(qtbot, window, tmp_path):
    import struct

    d = tmp_path / "bn"
    d.mkdir()
    write_safetensors(d / "model.safetensors", {
        "bn.num_batches_tracked": ("I64", [], struct.pack("<q", 25300)),
        "bn.weight": ("F32", [4], np.ones(4, np.float32).tobytes()),
    })
    open_and_wait(qtbot, window, checkpoint=str(d))
    select_and_measure(qtbot, window, "bn.num_batches_tracked")
    assert window.details.stat_text("max") == "25,300" and window.details.stat_text("min") == "25,300"  # not 2.53e+04
    assert_integer_ticks(qtbot, window.details.histogram, must_show=25300)


def assert_integer_ticks(qtbot, hist, *, must_show: int | None = None) -> None:
    """The value axis's ticks as pyqtgraph draws them: integers, labelled as integers, never overlapping."""
    from PySide6.QtGui import QFontMetricsF
    from PySide6.QtWidgets import QApplication

    qtbot.wait(30)
    ax = hist.plot.getPlotItem().getAxis("bottom")
    lo, hi = ax.range
    size = ax.geometry().width()
    fm = QFontMetricsF(ax.style.get("tickFont") or QApplication.font())
    shown = []
    for spacing, values in ax.tickValues(lo, hi, size):
        values = [v for v in values if lo <= v <= hi]
        labels = ax.tickStrings(values, 1.0, spacing)
        assert all(float(v).is_integer() for v in values), values
        assert all(lab.replace(",", "").lstrip("-").isdigit() for lab in labels), labels
        px = spacing / (hi - lo) * size
        assert px >= max(fm.horizontalAdvance(t) for t in labels) + 4 if len(values) > 1 else True, (labels, px)
        shown += values
    if must_show is not None:
        assert must_show in shown


@pytest.mark.parametrize("lo, hi, width", [(0, 511, 300), (-128, 127, 260), (0, 30_000_000, 320), (7, 7, 300)])
def test_integer_ticks_never_overlap(qtbot, window, lo, hi, width):
    """position_ids (0..511), an int8 weight (-128..127), large counts in a narrow panel, a constant: integer
    ticks with room between their labels (pyqtgraph's own put 0.2-steps and wide labels on top of each other)."""
    h = window.details.histogram
    h.resize(width, 240)
    n = min(hi - lo + 1, 256)
    edges = np.linspace(lo - 0.5, hi + 0.5, n + 1)
    h.set_data(edges, np.ones(n), integer=True)
    assert_integer_ticks(qtbot, h)


def test_the_legend_never_covers_the_data(qtbot, window):
    from PySide6.QtCore import QPointF

    h = window.details.histogram
    qtbot.waitExposed(window)
    rng = np.random.default_rng(0)
    for log in (False, True):
        h.log_y.setChecked(log)
        # a wide, flat-topped distribution: the tallest bars reach the right side, under the legend
        counts, edges = np.histogram(rng.uniform(-1, 1, 20000), bins=64)
        h.set_data(edges, counts)
        h.set_overlay("fresh init", edges, counts * 1.1)
        qtbot.wait(50)
        vb = h.plot.getPlotItem().getViewBox()
        legend = h.legend.sceneBoundingRect()
        centres = (edges[:-1] + edges[1:]) / 2
        for x, c in zip(centres, np.maximum(counts, counts * 1.1)):
            y = np.log10(c) if log else c
            p = vb.mapViewToScene(QPointF(float(x), float(y)))  # the top of this bar, in scene coordinates
            if legend.left() <= p.x() <= legend.right():
                assert p.y() > legend.bottom(), (log, x, c)


def test_export_progress_figure_sits_beside_its_bar(qtbot, editor):
    dlg = editor.export_dialog()
    qtbot.addWidget(dlg)
    dlg.show()
    editor.exportProgress.emit(10, 1000)
    assert not dlg.progress.isTextVisible()
    assert dlg.percent.text() == "1%"
    assert not dlg.percent.geometry().intersects(dlg.progress.geometry())


def test_histogram_png_is_large_titled_and_named_after_the_tensor(qtbot, window, demo_dir, tmp_path):
    from PySide6.QtGui import QImage

    open_and_wait(qtbot, window, demo=True)
    name = "bert.encoder.layer.1.attention.output.dense.weight"
    select_and_measure(qtbot, window, name)
    h = window.details.histogram
    assert h.default_export_name("png") == f"{name}.png" and h.default_export_name("csv") == f"{name}.csv"
    out = tmp_path / "h.png"
    h.export_png(str(out))
    img = QImage(str(out))
    assert img.width() >= 1200 and img.height() >= 600  # it was the widget's 385×261
    assert not h.plot.getPlotItem().titleLabel.isVisible()  # the title is for the file; the window's plot has none
