"""`ckpt-explorer stats`: JSON contract, exit codes, text table."""
from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from explorer.cli import main
import math
from pathlib import Path
import pytest
from tests.helpers import run_cli
import re


def test_stats_json_for_selected_keys(capsys, tmp_path) -> None:
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    save_file({"w": t, "ln": torch.ones(5), "ids": torch.arange(4)}, tmp_path / "m.safetensors")
    capsys.readouterr()
    assert main(["stats", str(tmp_path / "m.safetensors"), "w", "ln", "--bins", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    w, ln = out["tensors"]
    assert w["name"] == "w" and w["shape"] == [3, 4] and w["mean"] == 5.5 and w["min"] == 0 and w["max"] == 11
    assert w["histogram"]["counts"] == [3, 3, 3, 3] and len(w["histogram"]["edges"]) == 5
    assert ln["constant"] and ln["histogram"]["counts"] == [5]


def test_stats_text_lists_every_tensor_and_unknown_key_is_exit_2(capsys, minilm) -> None:
    capsys.readouterr()
    assert main(["stats", minilm, "embeddings.position_ids", "pooler.dense.bias"]) == 0
    out = capsys.readouterr().out
    assert "embeddings.position_ids" in out and "int64" in out and "constant" in out  # pooler bias is all zeros
    assert main(["stats", minilm, "nope.weight"]) == 2
    assert "no tensor named 'nope.weight'" in capsys.readouterr().err


def test_stats_json_is_valid_with_nan_and_inf_tensors(capsys, tmp_path: Path) -> None:
    f = tmp_path / "odd.safetensors"
    save_file({"nan": torch.full((4,), math.nan), "inf": torch.tensor([math.inf, -math.inf]), "ok": torch.ones(3)}, str(f))
    code, out, err = run_cli(capsys, "stats", str(f), "--json")
    assert code == 0, err
    rows = {t["name"]: t for t in json.loads(out)["tensors"]}
    assert rows["nan"]["nan"] == 4 and rows["nan"]["mean"] is None
    assert rows["inf"]["inf"] == 2 and rows["ok"]["mean"] == 1.0


def test_stats_unknown_key_suggests_the_close_one(capsys, bert: Path) -> None:
    code, out, err = run_cli(capsys, "stats", str(bert), "embeddings.LayerNorm.weigth")
    assert code == 2 and out == ""
    assert err == (f"ckpt-explorer: error: {bert}: no tensor named 'embeddings.LayerNorm.weigth'; "
                   "did you mean 'embeddings.LayerNorm.weight'?\n")


def test_stats_text_draws_the_histogram_and_bins_change_it(capsys, tmp_path):
    f = tmp_path / "m.safetensors"
    save_file({"w": torch.arange(16, dtype=torch.float32), "ln": torch.ones(4)}, f)
    capsys.readouterr()
    assert main(["stats", str(f), "w", "--bins", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "|████|  [0, 15]" in out[-1]  # 4 equal bins: 4 full blocks, and the range
    assert main(["stats", str(f), "w", "--bins", "8"]) == 0
    assert "|████████|" in capsys.readouterr().out
    assert main(["stats", str(f), "w"]) == 0  # text default: 32 bins
    assert re.search(r"\|[ ▁▂▃▄▅▆▇█]{32}\|", capsys.readouterr().out)
    assert main(["stats", str(f), "w", "--bins", "1000"]) == 0  # merged to at most 64 columns
    last = capsys.readouterr().out.splitlines()[-1]
    assert re.search(r"\|[ ▁▂▃▄▅▆▇█]{64}\|", last) and "1000 bins in 64 columns" in last


def test_stats_json_default_bins_match_the_window(capsys, tmp_path):
    f = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(1000)}, f)
    capsys.readouterr()
    assert main(["stats", str(f), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["tensors"][0]["histogram"]["counts"]) == 256


def test_stats_table_every_value_has_a_header(capsys, tmp_path):
    f = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(10), "ln": torch.ones(4), "ids": torch.arange(3)}, f)
    capsys.readouterr()
    assert main(["stats", str(f)]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = lines[1].split()
    assert head[-1] == "flags"
    rows = {ln.split()[0]: ln.split() for ln in lines[2:] if not ln.startswith("  ")}
    assert all(len(r) == len(head) for r in rows.values()), rows
    assert rows["ln"][-1] == "constant" and rows["ids"][-1] == "integer" and rows["w"][-1] == "-"
