"""The window's layout under real content: numbers and shapes are never clipped (names give way instead), and the
right-hand side never grows past the window — not on hover, not for long names, not for a long key-mapping
suggestion (issue 10, findings 2 and 7)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.gui.conftest import LOAD_TIMEOUT, open_and_wait, select_and_measure

HEAD = "BertForSequenceClassification"
EMBED = "embeddings.word_embeddings.weight"  # MiniLM: 30522×384, 11,720,448 elements


def drawn_text(view, index) -> str:
    """The text a view really paints in a cell: the delegate's own shortening, then Qt's elision to the text rect."""
    from PySide6.QtWidgets import QStyle, QStyleOptionViewItem

    opt = QStyleOptionViewItem()
    view.initViewItemOption(opt)  # what the view's own paint starts from (font, widget, decoration size)
    opt.rect = view.visualRect(index)
    delegate = view.itemDelegateForIndex(index)
    delegate.initStyleOption(opt, index)
    style = view.style()
    r = style.subElementRect(QStyle.SubElement.SE_ItemViewItemText, opt, view)
    margin = style.pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, view) + 1
    return opt.fontMetrics.elidedText(opt.text, opt.textElideMode, r.width() - 2 * margin)


def fully_visible(label) -> bool:
    """A label's whole text is on screen: the label is wide enough and no ancestor clips it."""
    need = label.fontMetrics().horizontalAdvance(label.text())
    return label.width() >= need and label.visibleRegion().boundingRect().width() >= need


@pytest.mark.parametrize("size", [(1300, 800), (1000, 700), (1920, 1080)])
def test_numbers_and_shapes_are_never_clipped(qtbot, window, minilm, size):
    from explorer.gui.models.table_model import TensorTableModel as T

    window.resize(*size)
    open_and_wait(qtbot, window, checkpoint=minilm, arch=HEAD)
    qtbot.wait(50)
    tm, table = window.table_model, window.table
    shapes = {tm.row(i).shape for i in range(tm.rowCount())}
    assert "30522×384" in shapes
    for i in range(tm.rowCount()):
        idx = window.table_proxy.mapFromSource(tm.index(i, T.SHAPE))
        assert drawn_text(table, idx) == tm.row(i).shape  # never "…522×384"
    st = select_and_measure(qtbot, window, EMBED)
    assert st.numel == 11_720_448
    labels = window.details.stat_labels
    assert labels["elements"].text() == "11,720,448"
    for name, lab in labels.items():
        assert fully_visible(lab), (name, lab.text(), lab.width(), lab.visibleRegion().boundingRect().width())
    # the names give way instead: the title wraps, the key fields elide
    assert window.width() <= size[0] + 1


def hover(qtbot, hist, steps: int = 12) -> None:
    from PySide6.QtCore import QPoint
    from PySide6.QtTest import QTest

    vp = hist.plot.viewport()
    for i in list(range(steps)) + [steps // 2]:  # across the plot, ending over the data in the middle
        QTest.mouseMove(vp, QPoint(int(vp.width() * (i + 0.5) / steps), vp.height() // 2))
        qtbot.wait(40)


def no_horizontal_overflow(window) -> bool:
    """The right side ends inside the window and holds its content (nothing beyond its right edge)."""
    right, split = window.right, window.split
    inside = right.x() + right.width() <= split.width() and split.mapTo(window, split.rect().topRight()).x() < window.width()
    return inside and right.width() >= right.minimumSizeHint().width() and right.width() == split.sizes()[1]


def test_hovering_the_histogram_never_widens_the_right_side(qtbot, window, demo_dir):
    window.resize(1300, 800)
    open_and_wait(qtbot, window, demo=True)
    select_and_measure(qtbot, window, "bert.encoder.layer.1.attention.output.dense.weight")
    hist = window.details.histogram
    hist.set_overlay("a fresh initialisation drawn for comparison", hist.edges, hist.counts)  # a long read-out
    w0 = window.width()
    hover(qtbot, hist)
    assert hist.readout.text().strip()  # the read-out did show
    assert no_horizontal_overflow(window)
    assert window.width() == w0
    for b in (hist.bins, hist.log_y):
        assert b.visibleRegion().boundingRect().width() >= b.sizeHint().width() - 1  # controls not clipped


@pytest.fixture
def long_names(tmp_path, minilm) -> Path:
    """MiniLM saved under a long wrapper prefix (so a key-mapping suggestion shows) plus one tensor whose name is a
    long single component: long tree names and a long suggestion, both on load."""
    from safetensors.torch import load_file, save_file

    d = tmp_path / "wrapped"
    d.mkdir()
    prefix = "a_training_framework_wrapper_that_names_its_module_very_verbosely.inner_model_with_long_name."
    sd = {prefix + k: v for k, v in load_file(Path(minilm) / "model.safetensors").items()}
    sd["an_extra_tensor_whose_single_name_component_is_much_longer_than_any_sensible_column_width"] = sd[prefix + "pooler.dense.bias"].clone()
    save_file(sd, d / "model.safetensors")
    shutil.copy(Path(minilm) / "config.json", d / "config.json")
    return d


def test_long_names_and_suggestions_never_widen_the_window(qtbot, window, long_names):
    window.resize(1300, 800)
    rep = open_and_wait(qtbot, window, checkpoint=str(long_names)).report
    qtbot.wait(50)
    assert rep.suggested_key_mapping  # the long suggestion is shown
    assert window.summary_box.suggest_label.isVisible()
    assert window.width() <= 1300 and window.minimumSizeHint().width() <= 1300
    assert no_horizontal_overflow(window)
    name = "an_extra_tensor_whose_single_name_component_is_much_longer_than_any_sensible_column_width"
    select_and_measure(qtbot, window, name)
    qtbot.wait(50)
    assert no_horizontal_overflow(window) and window.width() <= 1300


def test_the_right_side_is_laid_out_not_scrolled(qtbot, window, demo_dir):
    """No dead scroll area around the tabs and details: the right side is sized to its content (it never scrolled
    since its minimum became what the content needs), so nothing between it and the window can scroll."""
    from PySide6.QtWidgets import QAbstractScrollArea

    open_and_wait(qtbot, window, demo=True)
    assert window.split.widget(1) is window.right
    w = window.tabs.parentWidget()
    while w is not None:
        assert not isinstance(w, QAbstractScrollArea), w
        w = w.parentWidget()
    window.resize(1000, 700)
    qtbot.wait(20)
    assert no_horizontal_overflow(window)
