"""Small CLI issues a newcomer found: each test is what they would have checked."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from explorer.cli import build_parser, main
from tests.helpers import save_tiny


def _err_line(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bert")
    save_tiny("bert", "BertModel", d)
    return d


# --------------------------------------------------------------------------------------------- open


def test_open_demo_with_a_checkpoint_is_an_error(capsys, bert):
    line = _err_line(capsys, ["open", str(bert), "--demo"])
    assert line == "ckpt-explorer: error: --demo opens the built-in demo; do not also give a checkpoint"


def test_open_help_has_a_description():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    desc = sub.choices["open"].description
    assert desc and "window" in desc and "--demo" in desc


# --------------------------------------------------------------------------------------------- stats


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


# --------------------------------------------------------------------------------------------- diff


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


# --------------------------------------------------------------------------------------------- --arch, --dtype


def test_mistyped_arch_blames_the_option_and_suggests(capsys, bert):
    line = _err_line(capsys, ["report", str(bert), "--arch", "BertForMaskdLM"])
    assert line == "ckpt-explorer: error: --arch BertForMaskdLM: unknown transformers model class; did you mean BertForMaskedLM?"
    assert "config.json" not in line
    line = _err_line(capsys, ["report", str(bert), "--arch", "LlamaForCausalLMM"])
    assert "did you mean LlamaForCausalLM?" in line  # not a bert class: found among all transformers names


def test_arch_without_a_config_says_so(capsys, tmp_path, bert):
    (tmp_path / "nocfg").mkdir()
    (tmp_path / "nocfg" / "model.safetensors").write_bytes((bert / "model.safetensors").read_bytes())
    for cmd in ("report", "init-check"):
        line = _err_line(capsys, [cmd, str(tmp_path / "nocfg"), "--arch", "BertModel"])
        assert "--arch BertModel needs a config: no config.json beside the checkpoint; pass --config" in line
        assert "no model given" not in line


def test_export_dtype_help_and_error_list_the_same_dtypes(capsys, bert, tmp_path):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    help_text = next(a.help for a in sub.choices["export"]._actions if a.dest == "dtype")
    capsys.readouterr()
    assert main(["plan", str(bert), "-o", str(tmp_path / "plan.json")]) in (0, 1)
    line = _err_line(capsys, ["export", str(bert), "--plan", str(tmp_path / "plan.json"), "-o", str(tmp_path / "o"), "--dtype", "int3"])
    listed = line.split("expected ", 1)[1].split(", found")[0]
    assert listed in help_text and "float64" in help_text
