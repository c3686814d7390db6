"""The filter bar: substring, glob and regex search and the status chips, in the tree and the table."""
from __future__ import annotations

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

