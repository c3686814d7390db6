"""`ckpt-explorer plan` and `ckpt-explorer export` through main(argv): JSON summaries, exit codes, one-line errors."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from explorer.cli import main
from tests.helpers import cli_error_line, cli_help


def checksums(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def ddp(minilm, tmp_path) -> Path:
    """The real MiniLM saved from a DDP wrapper: every key prefixed with `module.`."""
    from safetensors.torch import load_file, save_file

    d = tmp_path / "ddp"
    d.mkdir()
    sd = load_file(Path(minilm) / "model.safetensors")
    save_file({"module." + k: v for k, v in sd.items()}, d / "model.safetensors", metadata={"format": "pt"})
    shutil.copy(Path(minilm) / "config.json", d / "config.json")
    return d


def run_json(capsys, argv: list[str]) -> tuple[int, dict]:
    rc = main(argv)
    out = capsys.readouterr().out
    return rc, json.loads(out)


def test_plan_then_export_ddp_into_classifier(ddp, tmp_path, capsys):
    before = checksums(ddp)
    plan_path = tmp_path / "plan.json"
    rc, s = run_json(capsys, [
        "plan", str(ddp), "--arch", "BertForSequenceClassification", "--auto-fix",
        "--freeze", "encoder.layer.[0-2]", "--lr-scale", "embeddings=0.01", "--reinit", "pooler",
        "--train", "encoder.layer.2", "-o", str(plan_path), "--json",
    ])
    assert rc == 0
    assert s["key_mapping"] == {r"^module\.": "bert."}
    assert s["actions"] == {"keep": 101, "reinit": 4, "drop": 0}
    assert s["frozen"] == 32 and s["rule_hits"] == [48, 5, 2, 16]
    assert s["lr_scales"] == {"0.01": 5}
    plan = json.loads(plan_path.read_text())
    assert [r["pattern"] for r in plan["rules"]] == ["encoder.layer.[0-2]", "embeddings", "pooler", "encoder.layer.2"]

    out = tmp_path / "out"
    rc, r = run_json(capsys, ["export", str(ddp), "--plan", str(plan_path), "-o", str(out), "--seed", "1", "--json"])
    assert rc == 0 and r["clean"]
    assert r["counts"]["keep"] == 101 and r["counts"]["reinit"] == 4
    assert r["reload"] == {"matched": 105, "missing": 0, "unexpected": 0, "mismatched": 0}
    from transformers import BertForSequenceClassification

    _, info = BertForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
    assert checksums(ddp) == before


def test_export_text_output_sharded_and_resize(minilm, tmp_path, capsys):
    before = checksums(Path(minilm))
    cfg = json.loads((Path(minilm) / "config.json").read_text())
    cfg["vocab_size"] = 30530
    cdir = tmp_path / "cfg"
    cdir.mkdir()
    (cdir / "config.json").write_text(json.dumps(cfg))
    plan_path = tmp_path / "p.json"
    assert main(["plan", minilm, "--config", str(cdir), "--arch", "BertModel", "-o", str(plan_path)]) == 0
    text = capsys.readouterr().out
    assert "102 keep, 1 reinit, 0 drop" in text and f"wrote {plan_path}" in text
    out = tmp_path / "out"
    rc = main(["export", minilm, "--plan", str(plan_path), "-o", str(out), "--resize", "--max-shard-size", "30MB"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "1 resized" in text and "reload check: clean" in text
    assert (out / "model.safetensors.index.json").is_file() and len(list(out.glob("model-0000*-of-*.safetensors"))) >= 3
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 30530
    assert checksums(Path(minilm)) == before


def test_export_overrides_arch_recorded_in_plan(minilm, tmp_path, capsys):
    plan_path = tmp_path / "p.json"
    assert main(["plan", minilm, "-o", str(plan_path), "--json"]) == 0
    capsys.readouterr()
    rc, r = run_json(capsys, ["export", minilm, "--plan", str(plan_path), "--arch", "BertForSequenceClassification",
                              "-o", str(tmp_path / "o"), "--json"])
    # the plan (made for BertModel) has no classifier rules; defaults come from the new report: classifier reinit
    assert rc == 0 and r["clean"] and r["counts"]["reinit"] == 2


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["--lr-scale", "encoder"], "--lr-scale 'encoder': expected GLOB=FACTOR, e.g. 'encoder*=0.01'"),
        (["--freeze", "layer.[0-"], "bad glob 'layer.[0-': unclosed '[' at position 6"),
        (["--freeze", "decoder"], "rule glob 'decoder': freeze selects no key of BertModel"),
    ],
)
def test_plan_errors(minilm, tmp_path, capsys, argv_tail, message):
    rc = main(["plan", minilm, "-o", str(tmp_path / "p.json"), *argv_tail])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().splitlines() == [f"ckpt-explorer: error: {message}"]
    assert not (tmp_path / "p.json").exists()


def test_export_errors(minilm, tmp_path, capsys):
    before = checksums(Path(minilm))
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 7}')
    assert main(["export", minilm, "--plan", str(bad), "-o", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"ckpt-explorer: error: {bad}: unsupported plan version 7, expected 1"
    good = tmp_path / "good.json"
    assert main(["plan", minilm, "-o", str(good)]) == 0
    capsys.readouterr()
    assert main(["export", minilm, "--plan", str(good), "-o", minilm]) == 2
    assert "refusing to write into the source checkpoint's folder" in capsys.readouterr().err
    assert main(["export", minilm, "--plan", str(good), "-o", str(tmp_path / "o"), "--dtype", "int4"]) == 2
    assert "dtype: expected float32, float16, bfloat16 or float64" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert checksums(Path(minilm)) == before


def test_export_dtype_help_and_error_list_the_same_dtypes(capsys, bert, tmp_path):
    help_text = cli_help(capsys, "export")
    capsys.readouterr()
    assert main(["plan", str(bert), "-o", str(tmp_path / "plan.json")]) in (0, 1)
    line = cli_error_line(capsys, ["export", str(bert), "--plan", str(tmp_path / "plan.json"), "-o", str(tmp_path / "o"), "--dtype", "int3"])
    listed = line.split("expected ", 1)[1].split(", found")[0]
    assert listed in help_text and "float64" in help_text
