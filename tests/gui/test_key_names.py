"""Key names in the views: shortened one way on dot boundaries, the Model key column says how a key relates to the on-disk name."""
from __future__ import annotations

import re

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
    tiny = shown(fm.horizontalAdvance("…weight") + 16)
    assert tiny.startswith("…") and tiny.endswith("weight") and "bert" not in tiny  # the leaf survives
    assert name in idx.data(Qt.ItemDataRole.ToolTipRole)  # the full name
    # the details panel's key fields shorten the same way (they used to be clipped at the edge)
    from explorer.gui.widgets.badges import KeyLabel

    assert window.select_key(name)
    lab = next(w for w in window.details.findChildren(KeyLabel) if w.key == name)
    qtbot.waitUntil(lab.isVisible)
    qtbot.waitUntil(lambda: lab.width() > 20)
    assert lab.text() == name or ("1" in re.split(r"[.…]+", lab.text()) and lab.text().endswith("dense.weight"))
    lab.resize(fm.horizontalAdvance("bert.…output.dense.weight") + 8, lab.height())
    assert lab.text().startswith("…1.") and lab.text().endswith("dense.weight") and lab.toolTip() == name


def test_key_paths_shorten_one_way_on_dot_boundaries():
    from explorer.gui.widgets.badges import elide_key

    n = "bert.encoder.layer.5.attention.self.query.weight"
    assert elide_key(n, lambda s: True) == n  # room to spare: the full name
    assert elide_key(n, lambda s: len(s) <= 45) == "…encoder.layer.5.attention.self.query.weight"
    assert elide_key(n, lambda s: len(s) <= 30) == "…5.attention.self.query.weight"
    assert elide_key(n, lambda s: len(s) <= 21) == "…5.…self.query.weight"  # the layer index survives
    assert elide_key(n, lambda s: len(s) <= 16) == "…5.…query.weight"  # the middle gives way, index and leaf stay
    assert elide_key(n, lambda s: len(s) <= 11) == "…5.…weight"
    assert elide_key(n, lambda s: len(s) <= 9) == "…weight"  # then the leaf alone
    # not even the leaf fits: Qt's ElideMiddle (here a stand-in)
    assert elide_key(n, lambda s: len(s) <= 6, elide_middle=lambda s: s[:2] + "…" + s[-3:]) == "be…ght"
    assert elide_key("a.b.c.d.e (+1)", lambda s: len(s) <= 12) == "…c.d.e (+1)"  # the tied-count suffix stays
    # MoE rows: the layer and the expert both stay, whatever the width
    moe = "model.layers.3.mlp.experts.17.w2.weight"
    for w in range(17, len(moe)):
        s = elide_key(moe, lambda s, w=w: len(s) <= w)
        parts = re.split(r"[.…]+", s)
        assert "3" in parts and "17" in parts and s.endswith("w2.weight") and len(s) <= w, (w, s)
    assert elide_key("model.layers.0.mlp.experts.down_proj", lambda s: len(s) <= 22) == "…0.…experts.down_proj"


def test_shortened_names_keep_what_tells_rows_apart():
    """The leaf's parent (down_proj / gate_proj / up_proj, w1 / w2 / w3) matters more than "weight": the last two
    named components stay, then they shorten inside, keeping their heads (issue 10 #8: on the 47k-tensor MoE at
    1440 px three rows read "…60.…252.…weight")."""
    from explorer.gui.widgets.badges import elide_key

    names = [f"model.layers.60.mlp.experts.252.{p}.weight" for p in ("down_proj", "gate_proj", "up_proj")]
    for w in range(len("…60.…252.dow….weight"), len(names[0])):
        shown = [elide_key(n, lambda s, w=w: len(s) <= w) for n in names]
        assert len(set(shown)) == 3 and all(len(s) <= w for s in shown), (w, shown)
        for n, s in zip(names, shown):
            parts = re.split(r"[.…]+", s)
            assert "60" in parts and "252" in parts and s.endswith(".weight"), s
            assert n.split(".")[6][:3] in s, s  # the projection's head
    assert elide_key(names[0], lambda s: len(s) <= 25) == "…60.…252.down_proj.weight"
    assert elide_key(names[0], lambda s: len(s) <= 22) == "…60.…252.down_….weight"
    # a short name: the model prefix gives way, the embedding's own name never (it used to become "…weight")
    emb = "model.embed_tokens.weight"
    assert elide_key(emb, lambda s: len(s) <= 20) == "…embed_tokens.weight"
    assert elide_key(emb, lambda s: len(s) <= 16) == "…embed_t….weight"
    assert elide_key(emb, lambda s: len(s) <= 12) == "…emb….weight"
    # fused experts: the model key keeps "experts" and the whole leaf
    assert elide_key("model.layers.3.mlp.experts.gate_up_proj", lambda s: len(s) <= 25) == "…3.…experts.gate_up_proj"
    assert elide_key("model.layers.3.mlp.experts.gate_up_proj", lambda s: len(s) <= 22) == "…3.…expe….gate_up_proj"
    w = "model.layers.7.mlp.experts.3.w1.weight"
    assert [elide_key(w.replace("w1", x), lambda s: len(s) <= 16) for x in ("w1", "w2", "w3")] == [
        "…7.…3.w1.weight", "…7.…3.w2.weight", "…7.…3.w3.weight"]


def test_moe_rows_stay_apart_when_names_are_shortened(qtbot, window, small_moe):
    """Filtering a per-expert MoE for one expert's projection: every row still shows its layer (they used to be
    identical "…experts.11.down_proj.weight" rows), and the experts sort 0, 1, 2, …, 10, 11."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QHeaderView

    from explorer.gui.models.table_model import TensorTableModel as T
    from tests.gui.test_layout import drawn_text

    open_and_wait(qtbot, window, checkpoint=str(small_moe))
    tm, table = window.table_model, window.table
    table.horizontalHeader().setSectionResizeMode(T.NAME, QHeaderView.ResizeMode.Interactive)
    table.setColumnWidth(T.NAME, table.fontMetrics().horizontalAdvance("…1.…experts.11.down_proj.weight"))
    window.search.setText("experts.11.down_proj")
    window.apply_filter()
    names = [tm.row(i).name for i in range(tm.rowCount())]
    assert sorted(names) == ["model.layers.1.mlp.experts.11.down_proj.weight",
                             "model.layers.2.mlp.experts.11.down_proj.weight",
                             "model.layers.3.mlp.experts.11.down_proj.weight"]
    shown = [drawn_text(table, window.table_proxy.index(i, T.NAME)) for i in range(tm.rowCount())]
    assert len(set(shown)) == len(shown), shown
    for name, s in zip(names, shown):
        parts = re.split(r"[.…]+", s)
        assert name.split(".")[2] in parts and "11" in parts and s.endswith("down_proj.weight"), (name, s)
    # natural order of dotted names: by on-disk name, expert 2 comes before expert 10
    window.mode.setCurrentText("regex")
    window.search.setText(r"layers\.1\.mlp\.experts\.\d+\.down_proj")
    window.apply_filter()
    table.sortByColumn(T.NAME, Qt.SortOrder.AscendingOrder)
    experts = [int(tm.row(i).name.split(".")[5]) for i in range(tm.rowCount())]
    assert experts == list(range(12))


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


def test_moe_rows_keep_their_projection_at_window_width(qtbot, window, small_moe):
    """At 1440 px the table gives the names the room an empty Plan column and a wide Status column took, and a
    row filtered to one expert shows which projection it is (down / gate / up), in the table and in the tree's
    "(not in model)" branch (the MTP layer's full names), which elides by the same rule."""
    from PySide6.QtCore import QModelIndex

    from explorer.gui.models.entries import UNPLACED
    from explorer.gui.models.table_model import TensorTableModel as T
    from tests.gui.test_layout import drawn_text

    window.resize(1440, 900)
    open_and_wait(qtbot, window, checkpoint=str(small_moe))
    table, fm = window.table, window.table.fontMetrics()
    assert table.isColumnHidden(T.PLAN)  # nothing planned: no empty column
    assert table.columnWidth(T.STATUS) < fm.horizontalAdvance("unexpected") + 54  # sized to "renamed"/"matched"
    window.search.setText("experts.11.")
    window.apply_filter()
    # the layout settles (the window's resize, the columns' fit) before the cells are read
    qtbot.waitUntil(lambda: table.columnWidth(T.NAME) >= fm.horizontalAdvance("…3.…11.down_proj.weight") + 24,
                    timeout=10_000)
    rows = window.table_proxy.rowCount()
    assert rows >= 9
    shown = [drawn_text(table, window.table_proxy.index(i, T.NAME)) for i in range(rows)]
    assert len(set(shown)) == rows, shown
    for s in shown:
        assert re.search(r"(dow|gat|up_)[^.]*\.weight$", s) and "11" in re.split(r"[.…]+", s), s
    # the tree: the unplaced MTP layer's rows carry whole dotted names; narrow, they stay apart the same way
    tree, proxy = window.tree, window.tree_proxy
    group = next(proxy.index(i, 0) for i in range(proxy.rowCount()) if proxy.index(i, 0).data() == UNPLACED)
    tree.expand(group)
    kids = [proxy.index(i, 0, group) for i in range(proxy.rowCount(group))]
    tree.scrollTo(kids[-1])
    qtbot.waitUntil(lambda: all(tree.visualRect(k).isValid() for k in kids), timeout=10_000)  # laid out
    assert len(kids) >= 3 and all(k.data().count(".") > 4 for k in kids)
    tree.setColumnWidth(0, tree.indentation() * 2 + fm.horizontalAdvance("…3.…11.gate_proj.weight") + 40)
    drawn = [drawn_text(tree, k) for k in kids]
    assert len(set(drawn)) == len(drawn) and all(d != k.data() for d, k in zip(drawn, kids)), drawn
    for d in drawn:
        assert re.search(r"(dow|gat|up_)[^.]*\.weight$", d), d
    assert isinstance(group.parent(), QModelIndex)
