"""Plan files are untrusted data: bounded reads, strict JSON, finite LR scales, time-bounded rules."""
from __future__ import annotations

import json
import os
import threading

import pytest

from explorer.core import keys as keys_module
from explorer.core.errors import PlanError
from explorer.core.fsio import MAX_JSON_BYTES
from explorer.core.plan import Plan, Rule, load_plan


def plan_text(**extra) -> str:
    return json.dumps({"version": 1, **extra})


def load_error(path) -> str:
    with pytest.raises(PlanError) as ei:
        load_plan(path)
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_fifo_plan_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "plan.json"
    os.mkfifo(fifo)
    box: dict[str, str] = {}
    t = threading.Thread(target=lambda: box.setdefault("msg", load_error(fifo)), daemon=True)
    t.start()
    t.join(60)  # a generous guard so a regression fails instead of hanging the suite (no writer ever opens it)
    assert not t.is_alive(), "load_plan blocked on a FIFO"
    assert box["msg"] == f"{fifo}: expected a plan file, found not a regular file (a FIFO, socket or device)"


def test_deeply_nested_plan_is_one_line(tmp_path):
    p = tmp_path / "deep.json"
    p.write_text('{"version": 1, "source": {"model_kwargs": ' + "[" * 100_000 + "]" * 100_000 + "}}")
    assert load_error(p).endswith("invalid JSON: nested deeper than 64 levels")


def test_huge_plan_is_refused_before_reading(tmp_path):
    p = tmp_path / "huge.json"
    with open(p, "wb") as f:  # sparse: nothing is written, the size alone must stop it
        f.truncate(MAX_JSON_BYTES + 1)
    assert load_error(p) == f"{p}: plan file is {(MAX_JSON_BYTES + 1) / (1 << 20):.0f} MiB, over the 64 MiB limit"


@pytest.mark.parametrize("lr, message", [
    ("Infinity", "invalid JSON: Infinity is not JSON"),
    ("-Infinity", "invalid JSON: -Infinity is not JSON"),
    ("NaN", "invalid JSON: NaN is not JSON"),
    ("1e999", r"rules\[0\]: rule 'x': lr_scale must be a finite number > 0, found inf"),
    ("0", r"rules\[0\]: rule 'x': lr_scale must be a finite number > 0, found 0"),
    ("-0.5", "lr_scale must be a finite number > 0, found -0.5"),
])
def test_non_finite_or_non_positive_lr_scale_is_refused(tmp_path, lr, message):
    p = tmp_path / "plan.json"
    p.write_text('{"version": 1, "rules": [{"pattern": "x", "lr_scale": %s}]}' % lr)
    import re

    assert re.search(message, load_error(p))


def test_saved_plans_stay_strict_json(tmp_path):
    from explorer.core.plan import save_plan

    plan = Plan().with_rule("encoder", lr_scale=1e-300)
    save_plan(plan, tmp_path / "p.json")
    text = (tmp_path / "p.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert load_plan(tmp_path / "p.json").rules[0].lr_scale == 1e-300


def test_key_mapping_in_plan_is_checked_and_named(tmp_path):
    p = tmp_path / "plan.json"
    p.write_text(plan_text(key_mapping={"^emb": "\\9"}))
    assert load_error(p) == f"{p}: key_mapping: invalid replacement '\\\\9' for '^emb': invalid group reference 9 at position 1"
    p.write_text(plan_text(key_mapping={r"^(module)\.": ""}))
    assert load_plan(p).key_mapping.label == f"{p}: key_mapping"


def test_custom_model_plan_names_no_code_to_run(tmp_path):
    p = tmp_path / "plan.json"
    p.write_text(plan_text(source={"model": "os:system", "model_kwargs": {"command": "touch x"}}))
    plan = load_plan(p)  # reading it is fine: it is data
    with pytest.raises(PlanError) as ei:
        plan.spec()
    assert str(ei.value).startswith(f"{p}: made with --model os:system --model-kwargs")
    spec = Plan(config="/x", arch="BertModel").spec()
    assert (spec.config, spec.arch, spec.model) == ("/x", "BertModel", None)


def test_catastrophic_rule_is_a_plan_error_not_a_hang(monkeypatch):
    keys = [f"bert.encoder.layer.{i}.attention.self.query.weight" for i in range(4)]
    rule = Rule(r"^(?:[\w.]|[\w.][\w.])+\d$", "regex", trainable=False)
    with pytest.raises(PlanError, match=r"^regex rule: pattern .* is too slow"):
        rule.select(keys)
    with pytest.raises(PlanError, match="too slow"):
        Plan().with_rule(rule).resolve_keys(keys)
    # the example is catastrophic only for `re`; rules run on `regex`, where it is instant
    assert Rule(r"^([a-z_.]+)+\d$", "regex", trainable=False).select(keys) == []
    # globs run under the same bound (each `*` is a `.*`: polynomial backtracking, ~0.3 s CPU for this key)
    monkeypatch.setattr(keys_module, "REGEX_BUDGET", 0.01)
    glob = Rule("*.*.*.*.*.*.*.*.*.*.*.*x", "glob", trainable=False)
    with pytest.raises(PlanError, match=r"^glob rule '\*\.\*\..*too slow"):
        glob.select(["a." * 200 + "xb"])


def test_too_many_rules_are_refused_before_matching(tmp_path):
    from explorer.core.plan import MAX_PLAN_RULES

    p = tmp_path / "plan.json"
    p.write_text(plan_text(rules=[{"pattern": f"layer.{i}", "trainable": False} for i in range(MAX_PLAN_RULES + 1)]))
    assert load_error(p) == f"{p}: 4,097 rules, over the 4,096 limit"
