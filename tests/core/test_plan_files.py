"""Plan files: reading untrusted ones (bounded, strict JSON, hostile patterns) and saving
(explorer.core.plan). save_plan never overwrites an input: `plan -o config.json` (or the checkpoint) is refused even with --force;
plans (and empty files) are replaced; any other file only with --force; never a FIFO, a device or a link to one."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from explorer.cli import main
from explorer.core.errors import PlanError
from explorer.core.plan import Plan, load_plan, save_plan
from tests.helpers import save_tiny
import json
import os
import threading
from explorer.core import keys as keys_module
from explorer.core.fsio import MAX_JSON_BYTES
from explorer.core.plan import Plan, Rule, load_plan


def _sums(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_refuses_non_plan_files_and_folders(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text('{"model_type": "bert"}')
    with pytest.raises(PlanError, match=r"config.json: exists and is not a plan file this command wrote; "
                       r"refusing to replace it \(--force to overwrite\)$"):
        save_plan(Plan(), cfg)
    assert cfg.read_text() == '{"model_type": "bert"}'
    save_plan(Plan(arch="F"), cfg, force=True)  # not an input of this plan: the user may insist
    assert load_plan(cfg).arch == "F"
    with pytest.raises(PlanError, match=r": is a folder; give a file name such as .*plan.json$"):
        save_plan(Plan(), tmp_path)


def test_replaces_an_existing_plan_or_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "plan.json"
    save_plan(Plan(arch="A"), p)
    save_plan(Plan(arch="B"), p)
    assert load_plan(p).arch == "B"
    e = tmp_path / "empty.json"
    e.touch()
    save_plan(Plan(arch="C"), e)
    assert load_plan(e).arch == "C"


def test_cli_plan_output_over_the_config_is_refused(tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    src.mkdir()
    save_tiny("bert", "BertModel", src)
    before = _sums(src)
    for target in ("config.json", "model.safetensors"):
        capsys.readouterr()
        code = main(["plan", str(src), "--arch", "BertForSequenceClassification", "-o", str(src / target)])
        err = capsys.readouterr().err
        assert code == 2
        assert err == f"ckpt-explorer: error: {src / target}: refusing to write the plan file over an input of this command ({src / target})\n"
        # --force replaces files of another kind, never an input
        code = main(["plan", str(src), "--arch", "BertForSequenceClassification", "-o", str(src / target), "--force"])
        assert code == 2 and "over an input of this command" in capsys.readouterr().err
    assert _sums(src) == before


def test_an_input_named_by_the_plan_is_refused_even_with_force(tmp_path: Path) -> None:
    """The API: the plan's own checkpoint and config are inputs, whatever the caller passes."""
    src = tmp_path / "src"
    src.mkdir()
    save_tiny("bert", "BertModel", src)
    before = _sums(src)
    plan = Plan(checkpoint=str(src), config=str(src))
    for name in ("config.json", "model.safetensors"):
        with pytest.raises(PlanError, match=r"refusing to write the plan file over an input of this command"):
            save_plan(plan, src / name, force=True)
    assert _sums(src) == before


def test_a_plan_file_that_links_to_the_checkpoint_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    save_tiny("bert", "BertModel", src)
    link = tmp_path / "plan.json"
    link.symlink_to(src / "model.safetensors")
    before = _sums(src)
    with pytest.raises(PlanError, match="over an input of this command"):
        save_plan(Plan(), link, inputs=[src / "model.safetensors"], force=True)
    assert _sums(src) == before and link.is_symlink()


def test_fifo_and_device_targets_are_refused_before_any_write(tmp_path: Path) -> None:
    """A FIFO or a character device (here a link to /dev/null: stat says size 0) was "an empty plan" and the
    atomic rename replaced it. Never touches the real /dev/null: the link is refused before anything opens it."""
    import os
    import stat

    fifo = tmp_path / "plan.json"
    os.mkfifo(fifo)
    dev = tmp_path / "null.json"
    dev.symlink_to(os.devnull)
    for target in (fifo, dev):
        for force in (False, True):
            with pytest.raises(PlanError, match=r": refusing to write the plan file over something that is not a regular file"):
                save_plan(Plan(), target, force=force)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and dev.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null.json", "plan.json"]  # no temp file left


def test_is_plan_file_is_strict_and_never_blocks(tmp_path: Path) -> None:
    import os

    from explorer.core.plan import is_plan_file

    good = tmp_path / "plan.json"
    save_plan(Plan(arch="A"), good)
    assert is_plan_file(good)
    empty = tmp_path / "empty.json"
    empty.touch()
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # opened non-blocking: no writer never hangs the check
    cfg = tmp_path / "config.json"
    cfg.write_text('{"version": 1, "model_type": "bert"}')
    deep = tmp_path / "deep.json"
    deep.write_text('{"version": 1, "rules": ' + "[" * 100_000 + "]" * 100_000 + "}")
    for p in (empty, fifo, cfg, deep, tmp_path, tmp_path / "absent.json"):
        assert not is_plan_file(p), p


def test_cli_plan_refuses_a_fifo_up_front(tmp_path: Path, capsys) -> None:
    import os

    src = tmp_path / "src"
    src.mkdir()
    save_tiny("bert", "BertModel", src)
    fifo = tmp_path / "p.json"
    os.mkfifo(fifo)
    capsys.readouterr()
    assert main(["plan", str(src), "-o", str(fifo), "--force"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == (f"ckpt-explorer: error: {fifo}: refusing to write the plan file over something "
                                         "that is not a regular file (a FIFO, socket or device)\n")


# ---- Plan files are untrusted data: bounded reads, strict JSON, finite LR scales, time-bounded rules.

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
    assert load_error(p) == f"{p}: key_mapping: invalid replacement '\\9' for '^emb': invalid group reference 9 at position 1"
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
