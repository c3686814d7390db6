"""`ckpt-explorer init-check`: a freshly initialised tiny BERT is flagged, a "trained" one is not."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from explorer.cli import main
from tests.helpers import run_cli, save_tiny
import pytest


def _json(capsys, *argv: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["init-check", *argv, "--json"])
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    return code, json.loads(out)


def test_fresh_model_is_flagged_and_moved_weights_are_not(capsys, tmp_path: Path) -> None:
    save_tiny("bert", "BertModel", tmp_path)
    code, out = _json(capsys, str(tmp_path))
    by = {t["name"]: t for t in out["tensors"]}
    assert code == 1
    assert by["encoder.layer.0.attention.self.query.weight"]["init_like"] is True
    assert by["embeddings.LayerNorm.weight"]["init_like"] is True
    assert all(t["init_like"] for t in out["tensors"] if t["kind"] in ("random", "constant"))

    sd = load_file(tmp_path / "model.safetensors")
    g = torch.Generator().manual_seed(0)
    for k, v in sd.items():  # "training": every float tensor moved well away from its init
        if v.is_floating_point():
            sd[k] = v * 3 + torch.randn(v.shape, generator=g) * 0.05 + 0.01
    save_file(sd, tmp_path / "model.safetensors")
    code, out = _json(capsys, str(tmp_path))
    assert code == 0 and out["init_like"] == []
    assert {"name", "init_like", "score", "ks", "kind", "details"} <= set(out["tensors"][0])


def test_text_mode_and_errors(capsys, tmp_path: Path) -> None:
    save_tiny("bert", "BertModel", tmp_path)
    capsys.readouterr()
    assert main(["init-check", str(tmp_path), "--arch", "BertModel"]) == 1
    out = capsys.readouterr().out
    assert "look untrained" in out and "encoder.layer.1.output.dense.weight" in out
    (tmp_path / "config.json").unlink()
    assert main(["init-check", str(tmp_path)]) == 2
    assert "no config.json beside the checkpoint" in capsys.readouterr().err


def test_init_check_on_a_prefixed_checkpoint_warns_and_auto_fix_checks(capsys, bert: Path, tmp_path: Path) -> None:
    import shutil

    sd = load_file(bert / "model.safetensors")
    ddp = tmp_path / "ddp"
    ddp.mkdir()
    save_file({"module." + k: v for k, v in sd.items()}, str(ddp / "model.safetensors"))
    shutil.copy(bert / "config.json", ddp / "config.json")
    code, out, err = run_cli(capsys, "init-check", str(ddp), "--json")
    assert code == 1, err  # almost nothing checked is a finding, not an all-clear
    d = json.loads(out)
    assert d["key_mapping"] is None and d["not_checked"] == len(sd)
    assert any("do not load into the model and were not checked" in n and "--auto-fix" in n for n in d["notes"])
    code, out, err = run_cli(capsys, "init-check", str(ddp), "--auto-fix", "--json")
    d = json.loads(out)
    assert d["key_mapping"] == {r"^module\.": ""} and d["notes"] == [r'key mapping applied: {"^module\\.": ""}']
    checked = [t for t in d["tensors"] if t["kind"] in ("random", "constant")]
    assert len(checked) > len(sd) // 2
    assert code == 1  # save_tiny writes an untrained model: its tensors look like a fresh init
