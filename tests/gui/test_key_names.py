"""Key names in the views: shortened one way on dot boundaries, the Model key column says how a key relates to the on-disk name."""
from __future__ import annotations

from tests.gui.conftest import open_and_wait


def test_key_paths_in_views_shorten_one_way(qtbot, window, demo_dir):
    from PySide6.QtCore import QRect, Qt
    from PySide6.QtWidgets import QStyleOptionViewItem

    from explorer.gui.models.table_model import TensorTableModel

    open_and_wait(qtbot, window, demo=True)
    name = "bert.encoder.layer.1.attention.output.dense.weight"
    r = window.table_model.row_for_name(name)
    idx = window.table_proxy.mapFromSource(window.table_model.index(r, TensorTableModel.NAME))
    d = window.table.itemDelegateForColumn(TensorTableModel.NAME)
    fm = window.table.fontMetrics()

    def shown(width: int) -> str:
        opt = QStyleOptionViewItem()
        opt.initFrom(window.table)
        opt.rect = QRect(0, 0, width, 22)
        d.initStyleOption(opt, idx)
        return opt.text

    assert shown(fm.horizontalAdvance(name) + 40) == name  # room to spare: never shortened
    mid = shown(fm.horizontalAdvance("…1.attention.output.dense.weight") + 20)
    # leading components give way first; the layer index stays so rows of different layers never look alike
    assert mid.startswith("…") and mid.endswith(".output.dense.weight") and name.endswith(mid[1:]) and ".1." in "." + mid[1:]
    tiny = shown(fm.horizontalAdvance("weight") + 16)
    assert tiny.startswith("…") and "bert" not in tiny  # Qt's ElideLeft only when nothing else fits
    assert name in idx.data(Qt.ItemDataRole.ToolTipRole)  # the full name
    # the details panel's key fields shorten the same way (they used to be clipped at the edge)
    from explorer.gui.widgets.badges import KeyLabel

    assert window.select_key(name)
    lab = next(w for w in window.details.findChildren(KeyLabel) if w.key == name)
    qtbot.waitUntil(lab.isVisible)
    qtbot.waitUntil(lambda: lab.width() > 20)
    assert lab.text() == name or (lab.text().startswith("…") and name.endswith(lab.text()[1:]))  # as it sits in the panel
    lab.resize(fm.horizontalAdvance("bert.…output.dense.weight") + 8, lab.height())
    assert lab.text().startswith("…1.") and lab.text().endswith("dense.weight") and lab.toolTip() == name


def test_key_paths_shorten_one_way_on_dot_boundaries():
    from explorer.gui.widgets.badges import elide_key

    n = "bert.encoder.layer.5.attention.self.query.weight"
    assert elide_key(n, lambda s: True) == n  # room to spare: the full name
    assert elide_key(n, lambda s: len(s) <= 45) == "…encoder.layer.5.attention.self.query.weight"
    assert elide_key(n, lambda s: len(s) <= 30) == "…5.attention.self.query.weight"
    assert elide_key(n, lambda s: len(s) <= 21) == "…5.…self.query.weight"  # the layer index survives
    # not even the index and the last component fit: Qt's ElideLeft (here a stand-in)
    assert elide_key(n, lambda s: len(s) <= 9, elide_left=lambda s: "…" + s[-9:]) == "…ry.weight"
    assert elide_key("a.b.c.d.e (+1)", lambda s: len(s) <= 12) == "…c.d.e (+1)"  # the tied-count suffix stays


def test_key_note():
    from explorer.gui.models.table_model import key_note

    assert key_note("encoder.w", "encoder.w") == "= on-disk"
    assert key_note("encoder.w", "bert.encoder.w") == "+ bert."
    assert key_note("module.encoder.w", "encoder.w") == "− module."
    assert key_note("gamma", "weight") is None
    assert key_note("", "classifier.weight") is None
    assert key_note("a.w", "a.w (+1)") is None


def test_model_key_column_gives_way_to_the_on_disk_name(minilm_head):
    from PySide6.QtCore import Qt

    from explorer.gui.models.table_model import TensorTableModel as T

    win, _ed, _ip = minilm_head
    model, view = win.table_model, win.table
    r = model.row_for_name("encoder.layer.0.attention.self.query.bias")
    key = model.index(r, T.KEY)
    assert key.data() == "+ bert."
    assert "bert.encoder.layer.0.attention.self.query.bias" in key.data(Qt.ItemDataRole.ToolTipRole)
    assert key.data(Qt.ItemDataRole.ForegroundRole).name().lower() != "#000000"
    assert model.index(model.rows_for_key("classifier.weight")[0], T.KEY).data() == "classifier.weight"
    assert model.index(r, T.STATUS).data() == "matched"
    assert view.columnWidth(T.NAME) > 2 * view.columnWidth(T.KEY)
    fm = view.fontMetrics()
    assert view.columnWidth(T.NAME) >= fm.horizontalAdvance("layer.0.attention.self.query.bias")


def test_demo_keys_equal_to_their_names_say_so(qtbot, window, demo_dir):
    from explorer.gui.models.table_model import TensorTableModel as T

    open_and_wait(qtbot, window, checkpoint=str(demo_dir))
    model = window.table_model
    texts = [model.index(i, T.KEY).data() for i in range(model.rowCount())]
    assert texts.count("= on-disk") > len(texts) // 2
    mism = [i for i in range(model.rowCount()) if model.row(i).kind == "mismatched"]
    assert mism and model.index(mism[0], T.STATUS).data() == "mismatch"
    assert window.table.columnWidth(T.NAME) > window.table.columnWidth(T.KEY)
