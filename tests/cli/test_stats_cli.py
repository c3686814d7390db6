"""`ckpt-explorer stats`: JSON contract, exit codes, text table."""
from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from explorer.cli import main


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
