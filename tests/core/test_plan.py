"""Plans: defaults from the report, rule semantics (globs, regexes, subtrees, later wins), JSON and its errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from explorer.core.errors import PlanError
from explorer.core.matching import report
from explorer.core.model import ModelSpec
from explorer.core.keys import glob_to_regex
from explorer.core.plan import Action, Plan, Rule, load_plan, plan_schema, save_plan
from tests.helpers import save_tiny

KEYS = [
    "bert.encoder.layer.0.attention.self.query.weight",
    "bert.encoder.layer.1.output.dense.bias",
    "bert.encoder.layer.10.output.dense.bias",
    "bert.encoder.layer.6.output.dense.bias",
    "bert.embeddings.word_embeddings.weight",
    "classifier.weight",
    "classifier.bias",
]


@pytest.mark.parametrize(
    "glob, hits",
    [
        ("encoder.layer.[0-5]", KEYS[0:2]),  # a class; and layer.1 does not hit layer.10
        ("encoder.layer.1", KEYS[1:2]),
        ("encoder.layer.1*", KEYS[1:3]),
        ("*.bias", [KEYS[1], KEYS[2], KEYS[3], KEYS[6]]),
        ("bert*weight", [KEYS[0], KEYS[4]]),  # * crosses dots
        ("classifier", KEYS[5:7]),  # a module name selects its subtree
        ("class", []),  # whole components only
        ("encoder.layer.[!0-5]", [KEYS[3]]),
        ("layer.?.output", [KEYS[1], KEYS[3]]),
        ("*", KEYS),
    ],
)
def test_glob_semantics(glob, hits):
    assert Rule(glob, trainable=False).select(KEYS) == hits


def test_regex_and_key_rules():
    assert Rule(r"layer\.1\d\.", match="regex", action="reinit").select(KEYS) == [KEYS[2]]
    assert Rule("bert.encoder.layer.1", match="key", trainable=False).select(KEYS) == [KEYS[1]]
    assert Rule("classifier.bias", match="key", trainable=False).select(KEYS) == [KEYS[6]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pattern="layer.[0-5", trainable=False), r"bad glob 'layer\.\[0-5': unclosed '\[' at position 6"),
        (dict(pattern="a]", trainable=False), "unmatched '\\]'"),
        (dict(pattern="(", match="regex", trainable=False), "bad regex '\\('"),
        (dict(pattern="x", action="freeze"), "unknown action 'freeze', expected one of keep, reinit, drop"),
        (dict(pattern="x"), "sets nothing"),
        (dict(pattern="x", lr_scale=-1), "lr_scale must be a finite number > 0, found -1"),
        (dict(pattern="x", lr_scale=0), "lr_scale must be a finite number > 0, found 0"),
        (dict(pattern="x", lr_scale=float("inf")), "lr_scale must be a finite number > 0, found inf"),
        (dict(pattern="x", lr_scale=float("nan")), "lr_scale must be a finite number > 0, found nan"),
        (dict(pattern="x", match="fuzzy", trainable=False), "unknown match kind 'fuzzy'"),
    ],
)
def test_bad_rules(kwargs, message):
    with pytest.raises(PlanError, match=message):
        Rule(**kwargs)


def test_glob_to_regex_anchors_on_components():
    import re

    rx = re.compile(glob_to_regex("layer.1"))
    assert rx.search("a.layer.1.b") and rx.search("layer.1") and not rx.search("a.layer.10.b") and not rx.search("xlayer.1")


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    """A tiny BERT classifier checkpoint with 3 labels matched against a 5-label model plus a stray tensor."""
    import torch
    from safetensors.torch import load_file, save_file

    d = tmp_path_factory.mktemp("tiny")
    save_tiny("bert", "BertForSequenceClassification", d, num_labels=3)
    sd = load_file(d / "model.safetensors")
    sd["extra.stray"] = torch.zeros(2)
    save_file(sd, d / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((d / "config.json").read_text())
    cfg["id2label"] = {str(i): f"L{i}" for i in range(5)}
    cfg["label2id"] = {f"L{i}": i for i in range(5)}
    target = tmp_path_factory.mktemp("target")
    (target / "config.json").write_text(json.dumps(cfg))
    return report(str(d), ModelSpec(config=str(target), arch="BertForSequenceClassification"))


def test_defaults_from_report(tiny_report):
    rep = tiny_report
    assert {m[0] for m in rep.mismatched} == {"classifier.weight", "classifier.bias"}
    plan = Plan.from_report(rep)
    e = plan.resolve(rep)
    assert e["classifier.weight"].action is Action.REINIT and e["classifier.weight"].status == "mismatched"
    assert e["extra.stray"].action is Action.DROP and not e["extra.stray"].is_model_key
    assert e["bert.pooler.dense.weight"].action is Action.KEEP and e["bert.pooler.dense.weight"].trainable
    assert "bert.embeddings.position_ids" not in e  # non-persistent buffer: nothing to plan
    assert plan.default_reinit == ("classifier.weight", "classifier.bias")
    assert plan.default_drop == ("extra.stray",)
    assert plan.arch == "BertForSequenceClassification" and plan.checkpoint == rep.index.path


def test_later_rules_win_attribute_by_attribute(tiny_report):
    plan = (
        Plan.from_report(tiny_report)
        .with_rule("encoder", trainable=False, lr_scale=0.1)
        .with_rule("encoder.layer.1", trainable=True)
        .with_rule("layer.1.output.dense", action="reinit")
        .with_rule("extra.stray", action="keep")  # an unexpected key cannot be loaded: stays dropped
    )
    e = plan.resolve(tiny_report)
    k0 = "bert.encoder.layer.0.output.dense.weight"
    k1 = "bert.encoder.layer.1.output.dense.weight"
    assert (e[k0].trainable, e[k0].lr_scale, e[k0].action) == (False, 0.1, Action.KEEP)
    assert (e[k1].trainable, e[k1].lr_scale, e[k1].action, e[k1].rule) == (True, 0.1, Action.REINIT, 2)
    assert e["extra.stray"].action is Action.DROP
    assert plan.rule_hits(e) == [32, 16, 2, 1]
    assert plan.without_rule(1).resolve(tiny_report)[k1].trainable is False


def test_json_round_trip_keeps_rules_not_expansion(tiny_report, tmp_path):
    plan = (
        Plan.from_report(tiny_report)
        .with_key_mapping({r"^module\.": ""})
        .with_rule("encoder.layer.[0-1]", trainable=False)
        .with_rule(r"pooler\.", match="regex", action="reinit", lr_scale=2)
    )
    p = save_plan(plan, tmp_path / "plan.json")
    data = json.loads(p.read_text())
    assert data["version"] == 1
    assert data["rules"] == [
        {"match": "glob", "pattern": "encoder.layer.[0-1]", "trainable": False},
        {"match": "regex", "pattern": r"pooler\.", "action": "reinit", "lr_scale": 2.0},
    ]
    assert data["key_mapping"] == {r"^module\.": ""}
    assert data["source"]["arch"] == "BertForSequenceClassification"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["plan.json"]  # no temp file left
    back = load_plan(p)
    assert back == plan and back.sha256() == plan.sha256()
    assert back.resolve(tiny_report) == plan.resolve(tiny_report)


def test_schema_describes_what_we_write(tiny_report):
    schema = plan_schema()
    assert schema["properties"]["version"] == {"const": 1, "description": "Plan format version."}
    data = Plan.from_report(tiny_report).with_rule("encoder", trainable=False, action="keep", lr_scale=1).to_json()
    assert set(data) <= set(schema["properties"])
    assert set(data["source"]) <= set(schema["properties"]["source"]["properties"])
    assert set(data["rules"][0]) <= set(schema["properties"]["rules"]["items"]["properties"])
    assert schema["properties"]["rules"]["items"]["properties"]["action"]["enum"] == [a.value for a in Action]
    import jsonschema  # in the test extra: this test must never pass without validating

    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(data, schema)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "invalid JSON"),
        ("[]", "expected a JSON object, found list"),
        ('{"rules": []}', 'no "version"; expected 1'),
        ('{"version": 2}', "unsupported plan version 2, expected 1"),
        ('{"version": 1, "rules": [{"pattern": "x", "action": "explode"}]}', r"rules\[0\]: unknown action 'explode'"),
        ('{"version": 1, "rules": [{"pattern": "layer.[0-", "trainable": false}]}', r"rules\[0\]: bad glob"),
        ('{"version": 1, "rules": [{"pattern": "x", "match": "fuzzy", "trainable": false}]}', "unknown match 'fuzzy'"),
        ('{"version": 1, "rules": [{"pattern": "x", "trainable": "no"}]}', "trainable must be true or false"),
        ('{"version": 1, "rules": [{"pattern": "x", "frozen": true}]}', "unknown field 'frozen'"),
        ('{"version": 1, "key_mapping": {"(": ""}}', "key_mapping: invalid regex"),
        ('{"version": 1, "colour": "red"}', "unknown field 'colour'"),
    ],
)
def test_load_plan_errors_are_one_line(tmp_path, text, message):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(PlanError, match=message) as ei:
        load_plan(p)
    assert "\n" not in str(ei.value) and str(p) in str(ei.value)


def test_missing_plan_file(tmp_path):
    with pytest.raises(PlanError, match="plan file not found"):
        load_plan(tmp_path / "nope.json")
