"""`ckpt-explorer diff`: JSON contract and exit codes on tiny BERT variants."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from explorer.cli import main
from tests.helpers import save_tiny

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
