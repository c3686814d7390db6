"""--key-mapping, --regex rules and --lr-scale from the command line: checked up front, time-bounded, one line."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from explorer.cli import main
from explorer.core import keys
from tests.helpers import save_tiny

RE_SLOW = r"^([a-z_.]+)+\d$"  # the example: hours for `re` on 'embeddings.word_embeddings.weight'
BOTH_SLOW = r"^(?:[\w.]|[\w.][\w.])+\d$"  # slow for `regex` too


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pat") / "bert"
    save_tiny("bert", "BertModel", d)
    return d


def one_line_error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0].removeprefix("ckpt-explorer: error: ")


def test_diff_key_mapping_bad_group_reference(capsys, bert):
    f = str(bert / "model.safetensors")
    err = one_line_error(capsys, ["diff", f, f, "--key-mapping", '{"^emb": "\\\\9"}'])
    assert err == "--key-mapping: invalid replacement '\\9' for '^emb': invalid group reference 9 at position 1"


@pytest.mark.parametrize("command", ["report", "init-check", "diff", "plan"])
def test_catastrophic_key_mapping_is_refused_not_run(capsys, bert, tmp_path, monkeypatch, command):
    monkeypatch.setattr(keys, "KEY_MAPPING_BUDGET", 1.0)
    km = '{"%s": "x"}' % RE_SLOW.replace("\\", "\\\\")
    f = str(bert / "model.safetensors")
    argv = {"report": ["report", str(bert)], "init-check": ["init-check", str(bert)], "diff": ["diff", f, f],
            "plan": ["plan", str(bert), "-o", str(tmp_path / "p.json")]}[command]
    err = one_line_error(capsys, [*argv, "--key-mapping", km])
    assert err.startswith("--key-mapping: pattern '^([a-z_.]+)+\\d$' is too slow: applying it to the checkpoint's")
    assert not (tmp_path / "p.json").exists()


def test_key_mapping_from_a_fifo_is_never_opened(capsys, bert, tmp_path):
    fifo = tmp_path / "km.json"
    os.mkfifo(fifo)
    err = one_line_error(capsys, ["report", str(bert), "--key-mapping", str(fifo)])
    assert err == f"--key-mapping {fifo}: not a regular file (expected a JSON file or inline JSON)"


def test_plan_regex_rules_are_time_bounded(capsys, bert, tmp_path):
    out = tmp_path / "p.json"
    err = one_line_error(capsys, ["plan", str(bert), "--regex", "--freeze", BOTH_SLOW, "-o", str(out)])
    assert err.startswith("regex rule: pattern '^(?:[\\w.]|[\\w.][\\w.])+\\d$' is too slow")
    # the pattern is instant for the engine rules run on: an ordinary "selects no key"
    err = one_line_error(capsys, ["plan", str(bert), "--regex", "--freeze", RE_SLOW, "-o", str(out)])
    assert err == "rule regex '^([a-z_.]+)+\\d$': freeze selects no key of BertModel"
    assert not out.exists()


def test_export_refuses_a_plan_whose_rule_is_catastrophic(capsys, bert, tmp_path):
    import json

    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"version": 1, "source": {"config": str(bert), "arch": "BertModel"},
                                "rules": [{"match": "regex", "pattern": BOTH_SLOW, "trainable": False}]}))
    err = one_line_error(capsys, ["export", str(bert), "--plan", str(plan), "-o", str(tmp_path / "out")])
    assert err.startswith("regex rule: pattern ") and "too slow" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value, found", [("pooler*=inf", "inf"), ("pooler*=nan", "nan"), ("pooler*=0", "0.0"),
                                          ("pooler*=-1", "-1.0"), ("pooler*=1e999", "inf")])
def test_lr_scale_option_must_be_finite_and_positive(capsys, bert, tmp_path, value, found):
    err = one_line_error(capsys, ["plan", str(bert), "--lr-scale", value, "-o", str(tmp_path / "p.json")])
    assert err == f"--lr-scale {value!r}: rule 'pooler*': lr_scale must be a finite number > 0, found {found}"
    assert not (tmp_path / "p.json").exists()


def test_plan_key_mapping_is_time_bounded_and_names_the_plan(capsys, bert, tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(keys, "KEY_MAPPING_BUDGET", 1.0)
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"version": 1, "source": {"config": str(bert), "arch": "BertModel"},
                                "key_mapping": {RE_SLOW: "x"}}))
    err = one_line_error(capsys, ["export", str(bert), "--plan", str(plan), "-o", str(tmp_path / "out")])
    assert err.startswith(f"{plan}: key_mapping: pattern '^([a-z_.]+)+\\d$' is too slow")
    assert not (tmp_path / "out").exists()
