"""Regular expressions in adapter_config.json are run by peft with `re` over every module name of the base: a
catastrophic one is refused (one line naming the file) before peft runs it, instead of hanging the report."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("peft")

from peft import LoraConfig  # noqa: E402

from explorer.core import keys  # noqa: E402
from explorer.core.adapter_match import match_adapter  # noqa: E402
from explorer.core.errors import ConfigError, PatternTooSlow  # noqa: E402
from tests.core.test_adapter import make  # noqa: E402

BOTH_SLOW = r"^(?:[\w.]|[\w.][\w.])+\d$"  # exponential for `re` on a module name not ending in a digit
RE_SLOW = r"^([a-z_.]+)+\d$"  # the example, exponential for `re` on 'embeddings.word_embeddings'


@pytest.fixture
def lora(tmp_path):
    return make(tmp_path, "bert", "BertModel", LoraConfig(r=4, target_modules=["query", "value"]))


def rewrite(ad, **fields) -> None:
    cfg = json.loads((ad / "adapter_config.json").read_text())
    cfg.update(fields)
    (ad / "adapter_config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("fields, shown", [
    (dict(target_modules=BOTH_SLOW), BOTH_SLOW),
    (dict(exclude_modules=RE_SLOW), RE_SLOW),
    (dict(rank_pattern={RE_SLOW: 8}), RE_SLOW),
    (dict(modules_to_save=["(?:[\\w.]|[\\w.][\\w.])+\\d"]), "(?:[\\w.]|[\\w.][\\w.])+\\d"),
])
def test_catastrophic_adapter_patterns_are_refused(lora, monkeypatch, fields, shown):
    base, ad = lora
    rewrite(ad, **fields)
    monkeypatch.setattr(keys, "KEY_MAPPING_BUDGET", 1.0)
    with pytest.raises(PatternTooSlow) as ei:
        match_adapter(ad, base=base)
    msg = str(ei.value)
    assert msg.startswith(f"{ad / 'adapter_config.json'}: pattern '{shown}' is too slow") and "\n" not in msg


def test_ordinary_regex_target_modules_still_match_as_peft_does(lora):
    from tests.core.test_adapter import assert_same_as_peft

    base, ad = lora
    rewrite(ad, target_modules=r".*\.(query|value)")  # a string: peft's re.fullmatch, through the child first
    rep, _ = assert_same_as_peft(base, ad, "BertModel")
    assert not rep.missing and not rep.unexpected


def test_invalid_regex_in_adapter_config_is_one_line(lora):
    base, ad = lora
    rewrite(ad, target_modules="(query|value")
    with pytest.raises(ConfigError) as ei:
        match_adapter(ad, base=base)
    msg = str(ei.value)
    assert "\n" not in msg and "adapter_config.json" in msg and "(query|value" in msg
