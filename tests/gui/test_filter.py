"""The filter bar: substring, glob and regex search and the status chips, in the tree and the table."""
from __future__ import annotations

from pathlib import Path

from tests.gui.conftest import open_and_wait


def test_filter_substring_glob_regex_and_status(qtbot, window, demo_dir):
    open_and_wait(qtbot, window, demo=True)
    total = window.table_proxy.rowCount()

    def shown() -> list[str]:
        return sorted(window.table_proxy.index(i, 1).data() for i in range(window.table_proxy.rowCount()))

    window.search.setText("seq_relationship")
    window.apply_filter()
    assert shown() == ["cls.seq_relationship.bias", "cls.seq_relationship.weight"]
    # the tree keeps the ancestors of matches
    assert window.tree_proxy.rowCount() == 1
    window.mode.setCurrentText("glob")
    window.search.setText("bert.embeddings.LayerNorm.*")
    window.apply_filter()
    assert shown() == ["bert.embeddings.LayerNorm.beta", "bert.embeddings.LayerNorm.gamma"]
    window.mode.setCurrentText("regex")
    window.search.setText(r"layer\.1\..*output\.dense\.weight$")
    window.apply_filter()
    assert shown() == ["bert.encoder.layer.1.attention.output.dense.weight", "bert.encoder.layer.1.output.dense.weight"]
    window.search.setText("([bad")  # a half-typed regex keeps the last result and says so
    window.apply_filter()
    assert "bad regex" in window.match_label.text()
    window.search.setText("")
    window.mode.setCurrentText("substring")
    window.kind_buttons["missing"].setChecked(True)
    assert window.table_proxy.rowCount() == 2
    assert [window.table_proxy.index(i, 0).data() for i in range(2)] == ["missing", "missing"]
    window.kind_buttons["unexpected"].setChecked(True)
    assert window.table_proxy.rowCount() == 3
    window.clear_filter()
    assert window.table_proxy.rowCount() == total


def test_glob_uses_core_translation_and_forgives_half_typed_brackets(qapp):
    from explorer.gui.models.entries import SearchIndex
    from explorer.gui.models.filtering import Filter

    names = ["layer.0.weight", "layer.1.weight", "layer.10.weight", "layer.[1.weight", "layer.1].weight", "head.weight"]
    index = SearchIndex.build(names, ["matched"] * len(names))

    def hits(glob: str) -> list[str]:
        mask = Filter(glob, "glob").mask(index)
        return [n for n, m in zip(names, mask) if m]

    # the same glob language as plan rules (explorer.core.keys.translate_glob): classes, negation, * crosses dots
    assert hits("layer.[0-1].weight") == ["layer.0.weight", "layer.1.weight"]
    assert hits("layer.[!0].weight") == ["layer.1.weight"]
    assert hits("LAYER.1*") == ["layer.1.weight", "layer.10.weight", "layer.1].weight"]
    # what core rejects (an unclosed '[' while typing, a stray ']') matches its brackets literally, wildcards still work
    assert hits("layer.[1*") == ["layer.[1.weight"]
    assert hits("*1].w?ight") == ["layer.1].weight"]


def chip_geometry(window) -> dict[str, tuple[int, int]]:
    return {k: (b.x(), b.width()) for k, b in window.kind_buttons.items() if b.isVisible()}


def test_chips_never_move_or_shrink_when_the_count_or_an_error_appears(qtbot, window, demo_dir):
    """Issue 10 #13/#15: the "N of M rows" label and a regex error used to push the chips sideways (a click landed
    on the wrong chip) and squeeze them ("unexp…ted 1")."""
    window.resize(1300, 800)
    open_and_wait(qtbot, window, demo=True)
    qtbot.wait(20)
    before = chip_geometry(window)
    assert before
    for k, b in window.kind_buttons.items():
        if b.isVisible():
            assert b.width() >= b.sizeHint().width(), k
    window.search.setText("attention")
    window.apply_filter()
    qtbot.wait(20)
    assert window.match_label.text().endswith("rows")
    assert chip_geometry(window) == before
    window.mode.setCurrentText("regex")
    window.search.setText("([bad")
    window.apply_filter()
    qtbot.wait(20)
    assert window.match_label.text().startswith("bad regex")
    tip = window.match_label.toolTip()  # the whole message, where there is room for it
    assert tip.startswith("bad regex: ") and "unterminated character set" in tip, tip
    assert chip_geometry(window) == before
    lab = window.match_label
    assert lab.visibleRegion().boundingRect().width() >= lab.fontMetrics().horizontalAdvance(lab.text())


def test_chips_combine_and_help_and_readme_say_so(qtbot, window, demo_dir):
    """One behaviour for chip selection: each chip adds its status (rows of any checked status are shown), and the
    Help and the README say exactly that."""
    from explorer.gui import help as help_text

    open_and_wait(qtbot, window, demo=True)
    tm = window.table_model
    window.kind_buttons["missing"].setChecked(True)
    window.apply_filter()
    assert {tm.row(i).kind for i in range(tm.rowCount())} == {"missing"}
    window.kind_buttons["mismatched"].setChecked(True)
    window.apply_filter()
    assert {tm.row(i).kind for i in range(tm.rowCount())} == {"missing", "mismatched"}
    window.kind_buttons["missing"].setChecked(False)
    window.apply_filter()
    assert {tm.row(i).kind for i in range(tm.rowCount())} == {"mismatched"}
    rule = help_text.CHIPS_HELP
    assert "any of them" in rule
    assert rule in window.filter_bar.kind_buttons["matched"].toolTip()
    assert rule in help_text.shortcuts_html(window.menuBar())
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert rule in " ".join(readme.split())
    assert "one status at a time" not in readme
