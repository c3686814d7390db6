"""The window's regex filter runs on the GUI thread under a time budget: a catastrophic pattern says
"regex too slow" and keeps the last filter instead of freezing the window."""
from __future__ import annotations

import pytest

from tests.gui.conftest import open_and_wait

BOTH_SLOW = r"^(?:[\w.]|[\w.][\w.])+\d$"  # exponential for `re` and `regex` on a key not ending in a digit
RE_SLOW = r"^([a-z_.]+)+\d$"  # the example: exponential for `re`, instant for `regex`


def test_filter_mask_is_bounded(qapp):
    from explorer.core.errors import PatternTooSlow
    from explorer.gui.models.entries import SearchIndex
    from explorer.gui.models.filtering import Filter

    names = [f"bert.encoder.layer.{i}.attention.self.query.weight" for i in range(50)]
    index = SearchIndex.build(names, ["matched"] * len(names))
    with pytest.raises(PatternTooSlow, match="^filter: pattern .* is too slow"):
        Filter(BOTH_SLOW, "regex").mask(index)
    assert not Filter(RE_SLOW, "regex").mask(index).any()
    assert Filter(r"layer\.4\d?\.", "regex").mask(index).sum() == 11


def test_window_says_regex_too_slow_and_keeps_the_last_filter(qtbot, window, minilm):
    open_and_wait(qtbot, window, checkpoint=minilm, arch="BertForSequenceClassification")
    window.search.setText("attention.output")
    window.apply_filter()
    rows, tree_rows = window.table_proxy.rowCount(), window.tree_proxy.rowCount()
    label = window.match_label.text()
    assert rows == 24 and label == f"24 of {len(window.table_model.rows):,} rows"  # issue 10 #10: rows, not tensors

    window.mode.setCurrentText("regex")
    window.search.setText(BOTH_SLOW)
    window.apply_filter()
    assert window.match_label.text() == "regex too slow"
    assert "too slow" in window.match_label.toolTip()
    assert window.table_proxy.rowCount() == rows and window.tree_proxy.rowCount() == tree_rows

    window.search.setText(RE_SLOW)  # instant for the engine the filter runs on
    window.apply_filter()
    assert window.table_proxy.rowCount() == 0 and window.match_label.text().startswith("0 of ")
    assert "too slow" not in window.match_label.toolTip()  # the error is gone (the tooltip says what a row is)


def test_plan_editor_refuses_a_catastrophic_rule(qtbot, full_window, minilm, tmp_path):
    """The rule dialog's live preview runs on the GUI thread under the filter's budget; a loaded plan whose rule
    is too slow for these keys is refused before it replaces the current plan."""
    import json

    from explorer.gui.panels import PlanPanel

    window = full_window
    ed = window.panel(PlanPanel)
    open_and_wait(qtbot, window, checkpoint=minilm, arch="BertForSequenceClassification")
    dlg = ed.rule_dialog()
    dlg.kind.setCurrentText("regex")
    dlg.trainable.setCurrentText("frozen")
    dlg.pattern.setText(BOTH_SLOW)
    assert dlg.preview.text().startswith("⚠ regex rule: pattern ") and "too slow" in dlg.preview.text()
    assert dlg.rule is None
    dlg.reject()

    ed.freeze(["bert.encoder.layer.2"])
    before = ed.plan
    bad = tmp_path / "slow.json"
    bad.write_text(json.dumps({"version": 1, "rules": [{"match": "regex", "pattern": BOTH_SLOW, "trainable": False}]}))
    from explorer.core.errors import PlanError

    with pytest.raises(PlanError, match="too slow"):
        ed.load_plan(str(bad))
    assert ed.plan is before and ed.undo_stack.count() == 1
