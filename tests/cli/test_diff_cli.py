"""`ckpt-explorer diff`: JSON contract and exit codes on tiny BERT variants."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from explorer.cli import main
from tests.helpers import run_cli, save_tiny
import math
import re

Q = "encoder.layer.0.attention.self.query.weight"


def _json(capsys, *argv: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["diff", *argv, "--json"])
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    return code, json.loads(out)


@pytest.fixture(scope="module")
def a(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("a")
    save_tiny("bert", "BertModel", d)
    return d / "model.safetensors"


def test_identical_is_exit_0(capsys, a: Path) -> None:
    code, out = _json(capsys, str(a), str(a))
    assert code == 0 and {t["status"] for t in out["tensors"]} == {"same"}


def test_statuses_and_figures(capsys, a: Path, tmp_path: Path) -> None:
    sd = load_file(a)
    sd["module." + Q] = sd.pop(Q) * 2  # DDP-prefixed copy with one tensor doubled
    sd = {("module." + k if not k.startswith("module.") else k): v for k, v in sd.items()}
    sd["module.classifier.weight"] = torch.zeros(2, 32)
    sd["module.pooler.dense.weight"] = torch.zeros(3, 3)
    del sd["module.pooler.dense.bias"]
    save_file(sd, tmp_path / "b.safetensors")
    code, out = _json(capsys, str(a), str(tmp_path / "b.safetensors"))
    by = {t["name"]: t for t in out["tensors"]}
    assert code == 1
    assert out["key_mapping"]["b"] == {"^module\\.": ""}
    q = by[Q]
    assert q["status"] == "changed" and q["rel_change"] == pytest.approx(1.0) and q["cosine"] == pytest.approx(1.0)
    assert q["max_abs_diff"] == pytest.approx(float(load_file(a)[Q].abs().max()), rel=1e-6)
    assert by["pooler.dense.bias"]["status"] == "only_a"
    assert by["classifier.weight"]["status"] == "only_b"
    assert by["pooler.dense.weight"]["status"] == "shape_mismatch"
    assert {t["status"] for t in out["tensors"]} == {"same", "changed", "only_a", "only_b", "shape_mismatch"}
    assert {"name", "status", "rel_change", "cosine", "max_abs_diff"} <= set(q)
    capsys.readouterr()
    assert main(["diff", str(a), str(tmp_path / "b.safetensors")]) == 1
    text = capsys.readouterr().out
    assert "per module" in text and "encoder.layer.0" in text and "only_b" in text


def test_bad_inputs_are_exit_2(capsys, a: Path, tmp_path: Path) -> None:
    assert main(["diff", str(a), str(tmp_path / "missing.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["diff", str(a), str(a), "--key-mapping", '{"(": ""}']) == 2
    assert "invalid regex" in capsys.readouterr().err


def test_diff_reports_tensors_turned_nan_or_inf_as_changed_not_zero(capsys, bert: Path, tmp_path: Path) -> None:
    sd = load_file(bert / "model.safetensors")
    w = "embeddings.LayerNorm.weight"
    b = "encoder.layer.0.output.dense.bias"
    sd[w] = sd[w].clone()
    sd[w][0] = math.nan
    sd[b] = torch.full_like(sd[b], math.inf)
    save_file(sd, str(tmp_path / "b.safetensors"))
    code, out, err = run_cli(capsys, "diff", str(bert / "model.safetensors"), str(tmp_path / "b.safetensors"), "--json")
    assert code == 1, err
    assert "NaN" not in out and "Infinity" not in out
    rows = {t["name"]: t for t in json.loads(out)["tensors"]}
    assert rows[w]["status"] == "changed" and rows[w]["nonfinite"] == 1
    assert rows[b]["status"] == "changed" and rows[b]["nonfinite"] == sd[b].numel()
    # not finite, so not representable in JSON: null rather than a misleading 0
    assert rows[b]["rel_change"] is None and rows[b]["max_abs_diff"] is None
    assert rows["embeddings.word_embeddings.weight"]["nonfinite"] == 0
    code, out, _ = run_cli(capsys, "diff", str(bert / "model.safetensors"), str(tmp_path / "b.safetensors"))
    line = next(l for l in out.splitlines() if l.strip().startswith(b))
    assert "inf" in line and f"{sd[b].numel()} value(s) differ as NaN/Inf" in line


def test_diff_text_shows_dtype_differences(capsys, bert: Path, tmp_path: Path) -> None:
    sd = load_file(bert / "model.safetensors")
    save_file({k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}, str(tmp_path / "h.safetensors"))
    code, out, _ = run_cli(capsys, "diff", str(bert / "model.safetensors"), str(tmp_path / "h.safetensors"))
    assert code == 1
    line = next(l for l in out.splitlines() if l.strip().startswith("embeddings.word_embeddings.weight"))
    assert line.endswith("float32 vs float16")


@pytest.fixture
def ab(tmp_path, bert) -> tuple[Path, Path]:
    a = bert / "model.safetensors"
    sd = load_file(a)
    q = "encoder.layer.0.attention.self.query.weight"
    sd[q] = sd[q] * 1.1 + 0.05 * torch.randn(sd[q].shape, generator=torch.Generator().manual_seed(0))
    del sd["pooler.dense.bias"]  # the pooler loses a tensor, its other tensor is unchanged
    save_file(sd, tmp_path / "b.safetensors")
    return a, tmp_path / "b.safetensors"


def test_diff_text_figures_and_one_sided_module(capsys, ab):
    a, b = ab
    capsys.readouterr()
    assert main(["diff", str(a), str(b), "--all"]) == 1
    out = capsys.readouterr().out
    assert "same, 1 changed, 1 only_a, 0 only_b, 0 shape_mismatch" in out  # fixed order, zeros shown
    assert re.search(r"  \d+ same, 1 changed", out)
    cosines = re.findall(r"(?:same|changed)\s+\S+\s+(\S+)\s+\S+$", out, re.M)
    assert cosines and all(re.fullmatch(r"-?\d\.\d{6}", c) for c in cosines if c != "-"), cosines  # "-": zero tensor
    assert "1.000000" in cosines
    pooler = next(ln for ln in out.splitlines() if ln.strip().startswith("pooler.dense ") and "tensors differ" in ln)
    assert pooler.split()[1] == "—" and "(1 only in A)" in pooler


def test_diff_json_counts(capsys, ab):
    a, b = ab
    capsys.readouterr()
    assert main(["diff", str(a), str(b), "--json"]) == 1
    js = json.loads(capsys.readouterr().out)
    assert list(js["counts"]) == ["same", "changed", "only_a", "only_b", "shape_mismatch"]
    assert js["counts"]["changed"] == 1 and js["counts"]["only_a"] == 1 and js["counts"]["only_b"] == 0
    assert sum(js["counts"].values()) == len(js["tensors"])
    pooler = next(m for m in js["modules"] if m["module"] == "pooler.dense")
    assert pooler["only_a"] == 1 and pooler["only_b"] == 0 and pooler["shape_mismatch"] == 0


def test_unrelated_checkpoints_are_called_so(capsys, a: Path, tmp_path: Path) -> None:
    # issue 10 finding 14: a Llama against a MiniLM gave "0 same, 723 only in A" and no word of warning
    llama = tmp_path / "llama"
    save_tiny("llama", "LlamaForCausalLM", llama)
    capsys.readouterr()
    code = main(["diff", str(llama / "model.safetensors"), str(a)])
    out, _ = capsys.readouterr()
    assert code == 1 and "warning: these look unrelated: only 0 of " in out
    code, j = _json(capsys, str(llama / "model.safetensors"), str(a))
    assert j["unrelated"].startswith("these look unrelated")
    code, j = _json(capsys, str(a), str(a))
    assert j["unrelated"] is None
