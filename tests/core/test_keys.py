"""Key names (explorer.core.keys): user patterns under a time bound (plan rules, key mappings, the window's filter)
and the one glob translation."""
from __future__ import annotations

import re
import subprocess

import pytest

from explorer.core import keys
from explorer.core.errors import ConfigError, ExplorerError, PatternTooSlow, PlanError
from explorer.core.keys import (
    KeyMapping,
    UserPattern,
    apply_key_mapping,
    cannot_backtrack,
    check_key_mapping,
    check_key_mapping_speed,
)
from explorer.core.errors import PlanError
from explorer.core.keys import glob_to_regex, translate_glob


# keys as real models have them
KEYS = [f"bert.encoder.layer.{i}.attention.self.{p}.{w}" for i in range(12) for p in ("query", "key", "value")
        for w in ("weight", "bias")] + ["embeddings.word_embeddings.weight", "pooler.dense.weight"]
# catastrophic in both `re` and `regex` on any key that does not end in a digit
BOTH_SLOW = r"^(?:[\w.]|[\w.][\w.])+\d$"
# the issue's example: catastrophic in `re` (what transformers applies key mappings with), instant in `regex`
RE_SLOW = r"^([a-z_.]+)+\d$"


@pytest.mark.parametrize("pattern", [r"layer\.1[0-1]\.", r"(query|key)\.weight$", r"^embeddings", r"self\.(?!value)", "BIAS"])
def test_user_pattern_selects_what_re_selects(pattern):
    got = UserPattern(pattern, label="x").select(KEYS)
    assert got == [k for k in KEYS if re.search(pattern, k)]


def test_catastrophic_pattern_is_an_error_naming_the_rule():
    with pytest.raises(PatternTooSlow) as ei:
        UserPattern(BOTH_SLOW, label="regex rule").select(KEYS)
    msg = str(ei.value)
    assert msg.startswith("regex rule: pattern ") and BOTH_SLOW in msg.replace("\\\\", "\\") and "too slow" in msg
    assert "\n" not in msg
    with pytest.raises(PlanError, match="too slow"):  # the class callers ask for
        UserPattern(BOTH_SLOW, label="regex rule", slow_error=PlanError).search(KEYS[0])


def test_issue_pattern_runs_fine_under_regex():
    assert UserPattern(RE_SLOW, label="x").select(KEYS) == []


def test_bad_user_patterns_are_one_line_errors():
    with pytest.raises(ExplorerError, match=r"^bad regex '\(': missing \)"):
        UserPattern("(", label="x", invalid="bad regex '('")
    with pytest.raises(PlanError, match="non-empty"):
        UserPattern("", label="x", error=PlanError)
    with pytest.raises(ExplorerError, match="over the 10,000 limit"):
        UserPattern("a" * 10_001, label="x")


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({"^emb": "\\9"}, r"^--key-mapping: invalid replacement '\\9' for '\^emb': invalid group reference 9"),
        ({"^(emb)": "\\2"}, "invalid group reference 2"),
        ({"^x": "\\q"}, r"invalid replacement '\\q' for '\^x': bad escape \\q"),
        ({"^x": "\\g<name>"}, "unknown group name 'name'"),
        ({"(": ""}, r"^--key-mapping: invalid regex '\(': missing \)"),
        ({"^x": 1}, "pattern and replacement must be strings"),
        ([["^x", ""]], "expected a JSON object"),
        ({f"^k{i}": "" for i in range(257)}, "257 entries, over the 256 limit"),
    ],
)
def test_key_mapping_checked_up_front(mapping, message):
    with pytest.raises(ConfigError, match=message) as ei:
        check_key_mapping(mapping, label="--key-mapping")
    assert "\n" not in str(ei.value)


def test_key_mapping_keeps_its_label():
    km = check_key_mapping({r"^module\.": "", r"^(bert)\.": r"\1."}, label="plan.json: key_mapping")
    assert isinstance(km, KeyMapping) and km.label == "plan.json: key_mapping" and km == {r"^module\.": "", r"^(bert)\.": r"\1."}
    assert check_key_mapping(km) is km
    assert apply_key_mapping("module.bert.x", km) == "bert.x"


@pytest.mark.parametrize("pattern, linear", [
    (r"^module\.", True), ("^", True), (r"^bert\.encoder\.", True), (r"[abc]\.x", True),
    (r"a+", False), (r"(x)", False), ("a|b", False), (r"x{2}", False), (r"\d*", False), (r"[*]", False),
])
def test_cannot_backtrack(pattern, linear):
    assert cannot_backtrack(pattern) is linear


def test_re_slow_key_mapping_is_refused_by_the_child(monkeypatch):
    km = check_key_mapping({RE_SLOW: "x"}, label="--key-mapping")
    with pytest.raises(PatternTooSlow) as ei:
        check_key_mapping_speed(km, KEYS, budget=1.0)
    msg = str(ei.value)
    assert msg.startswith("--key-mapping: pattern '^([a-z_.]+)+\\d$' is too slow") and "1 s" in msg
    # the entry the child was on is the one named
    km2 = check_key_mapping({r"^(module)\.": "", RE_SLOW: "x"}, label="--key-mapping")
    with pytest.raises(PatternTooSlow, match=re.escape(f"'{RE_SLOW}'")):
        check_key_mapping_speed(km2, KEYS, budget=1.0)


def test_fast_key_mapping_passes_once_and_is_remembered(monkeypatch):
    km = check_key_mapping({r"^(bert)\.encoder\.": r"\1.enc.", r"layer\.(\d+)\.": r"h.\1."})
    check_key_mapping_speed(km, KEYS)

    def no_child(*a, **k):
        raise AssertionError("child started again")

    monkeypatch.setattr(subprocess, "run", no_child)
    check_key_mapping_speed(km, KEYS)  # same mapping, same keys
    check_key_mapping_speed({r"^module\.": ""}, KEYS)  # cannot backtrack: no child at all


def test_key_mapping_that_grows_keys_is_refused():
    km = check_key_mapping({"(?:)": "x" * 16, "()": "y" * 16})  # 50 chars -> ~870 -> ~15,000
    with pytest.raises(ConfigError, match=r"entry '\(\)' grows keys past 4,096 characters"):
        check_key_mapping_speed(km, KEYS)
    with pytest.raises(ConfigError, match="over the 4,096 limit"):
        apply_key_mapping("a.b", {"": "z" * 3000})


def test_report_refuses_a_re_slow_key_mapping_before_transformers_runs_it(tmp_path, monkeypatch):
    """transformers compiles user renamings with `re`: the mapping is tried in the child first, so this fails in
    about the budget instead of running for hours inside convert_and_load_state_dict_in_model."""
    from explorer.core.matching import report
    from explorer.core.model import ModelSpec
    from tests.helpers import save_tiny

    save_tiny("bert", "BertModel", tmp_path / "bert")
    monkeypatch.setattr(keys, "KEY_MAPPING_BUDGET", 1.0)
    with pytest.raises(PatternTooSlow, match=r"^key mapping: pattern .* too slow: applying it to the checkpoint's"):
        report(tmp_path / "bert", ModelSpec(), key_mapping={RE_SLOW: "x"})
    # a custom label survives into the error
    with pytest.raises(PatternTooSlow, match="^plan.json: key_mapping: pattern"):
        report(tmp_path / "bert", ModelSpec(), key_mapping=KeyMapping({RE_SLOW: "x"}, label="plan.json: key_mapping"))
    # an ordinary mapping with groups still works, through the child (a generous budget: a loaded machine)
    monkeypatch.setattr(keys, "KEY_MAPPING_BUDGET", 30.0)
    rep = report(tmp_path / "bert", ModelSpec(), key_mapping={r"^(embeddings)\.": r"\1."})
    assert not rep.missing and not rep.unexpected


# ---- One glob translation (plan rules and any other glob user): component-bounded rules, line-bounded bodies.

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
