"""The model class is not the one meant: an --arch typo (issue 10 finding 12) or a class of another family than the
config (finding 4). The window loads what it can, says why in a banner and offers the config's own classes."""
from __future__ import annotations

from tests.gui.conftest import LOAD_TIMEOUT, open_and_wait


def test_an_arch_typo_loads_the_configs_class_and_offers_the_right_one(qtbot, window, minilm) -> None:
    loaded = open_and_wait(qtbot, window, checkpoint=minilm, arch="BertForMaskedLMM")
    # not a modal over an empty window: the report is there, with the config's own class
    assert loaded.report.arch == "BertModel" and window.tree_model.rowCount() > 0
    assert not window.errors and window.message_bar.isHidden()
    b = window.class_banner
    assert b.isVisible()
    assert "--arch BertForMaskedLMM: unknown transformers model class; did you mean BertForMaskedLM?" in b.label.text()
    assert "loaded with the config's own class BertModel" in b.label.text()
    assert b.classes.currentText() == "BertForMaskedLM" and b.classes.itemText(0) == "BertModel"
    with qtbot.waitSignal(window.session.loaded, timeout=LOAD_TIMEOUT):
        b.load_btn.click()
    assert window.session.report.arch == "BertForMaskedLM" and b.isHidden()


def test_another_family_is_said_with_the_configs_classes(qtbot, window, minilm) -> None:
    loaded = open_and_wait(qtbot, window, checkpoint=minilm, arch="GPT2LMHeadModel")
    assert loaded.report.family is not None
    b = window.class_banner
    text = b.label.text()
    assert b.isVisible() and "Wrong model family: GPT2LMHeadModel is a 'gpt2' model but the config is 'bert'" in text
    assert "almost nothing loads (0 of " in text
    heads = [b.classes.itemText(i) for i in range(b.classes.count())]
    assert heads[0] == "BertModel" and "BertForSequenceClassification" in heads
    with qtbot.waitSignal(window.session.loaded, timeout=LOAD_TIMEOUT):
        b.load_btn.click()
    assert window.session.report.arch == "BertModel" and window.session.report.is_clean and b.isHidden()
