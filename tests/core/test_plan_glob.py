"""One glob translation (plan rules and any other glob user): component-bounded rules, line-bounded bodies."""
from __future__ import annotations

import re

import pytest

from explorer.core.errors import PlanError
from explorer.core.keys import glob_to_regex, translate_glob


def test_rule_globs_are_component_bounded() -> None:
    rx = re.compile(glob_to_regex("encoder.layer.[0-2]"))
    assert rx.search("bert.encoder.layer.1.attention.self.query.weight")
    assert not rx.search("bert.encoder.layer.10.attention.self.query.weight")
    assert re.compile(glob_to_regex("layer.1")).search("layer.10.x") is None
    assert re.compile(glob_to_regex("*embeddings*")).search("bert.embeddings.word_embeddings.weight")


def test_translate_glob_body_with_a_line_bounded_any_char() -> None:
    body = translate_glob("enc*.w?ight", any_char="[^\n]")
    rx = re.compile("^" + body + "$", re.MULTILINE)
    assert rx.search("x\nencoder.layer.0.weight\ny")
    assert not rx.search("encoder.\nweight")
    assert translate_glob("a[!0-5]b") == "a[^0-5]b"
    with pytest.raises(PlanError, match=r"bad glob 'a\[b': unclosed '\[' at position 1"):
        translate_glob("a[b")
