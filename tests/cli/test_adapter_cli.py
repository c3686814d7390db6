"""`ckpt-explorer report ADAPTER`: the JSON contract (the adapter's sets + the adapter object), exit codes, text, errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")

from peft import LoraConfig, get_peft_model  # noqa: E402

from explorer.cli import main  # noqa: E402
from tests.core.adapter_oracle import peft_sets  # noqa: E402
from tests.helpers import save_tiny  # noqa: E402


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["report", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("lora")
    base = d / "base"
    model = save_tiny("llama", "LlamaForCausalLM", base)
    torch.manual_seed(0)
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                                          init_lora_weights=False))
    pm.save_pretrained(d / "adapter")
    return base, d / "adapter"


def test_json_contract_clean(capsys, pair):
    base, ad = pair
    code, out, err = run(capsys, str(ad), "--base", str(base), "--json")
    assert code == 0, err
    d = json.loads(out)
    oracle = peft_sets(str(base), str(ad), "LlamaForCausalLM")
    assert set(d["missing"]) == oracle["missing"] == set()
    assert set(d["unexpected"]) == oracle["unexpected"] == set()
    assert d["mismatched"] == []
    a = d["adapter"]
    assert (a["peft_type"], a["r"], a["lora_alpha"], a["target_modules"]) == ("LORA", 4, 8, ["q_proj", "v_proj"])
    assert a["adapted"] == [f"model.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("q_proj", "v_proj")]
    assert a["modules_to_save"] == []
    assert d["counts"]["matched"] == d["counts"]["tensors"] == 8
    assert d["matched"][0]["key"].startswith("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight")


def test_json_wrong_base_exit_1_with_peft_sets(capsys, pair, tmp_path):
    _, ad = pair
    wide = tmp_path / "wide"
    save_tiny("llama", "LlamaForCausalLM", wide, hidden_size=48, head_dim=12)
    code, out, _ = run(capsys, str(ad), "--base", str(wide), "--json")
    assert code == 1
    d = json.loads(out)
    oracle = peft_sets(str(wide), str(ad), "LlamaForCausalLM")
    assert set(d["missing"]) == oracle["missing"]
    assert {(k, tuple(a), tuple(b)) for k, a, b in d["mismatched"]} == oracle["mismatched"]
    assert ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", [4, 32], [4, 48]] in d["mismatched"]


def test_config_only_base_and_delta(capsys, pair):
    base, ad = pair
    code, out, err = run(capsys, str(ad), "--config", str(base / "config.json"), "--json", "--delta")
    assert code == 0, err
    d = json.loads(out)
    assert d["base"]["weights"] is None and d["base"]["origin"] == "--config"
    assert len(d["deltas"]) == 4 and all(x["base_norm"] is None and x["norm"] > 0 and x["effective_rank"] == 4 for x in d["deltas"])
    code, out, _ = run(capsys, str(ad), "--base", str(base), "--delta")
    assert code == 0 and "ΔW = scaling·B·A (4 modules)" in out and "model.layers.1.self_attn.v_proj" in out


def test_text_output(capsys, pair):
    base, ad = pair
    code, out, _ = run(capsys, str(ad), "--base", str(base))
    assert code == 0
    assert "LORA adapter, safetensors, 8 tensors" in out
    assert "8 matched, 0 missing, 0 unexpected, 0 mismatched" in out
    assert "[Linear r=4 alpha=8 scaling=2]" in out and "model.layers.{0..1}.self_attn.q_proj" in out


def test_targets_matching_nothing_is_a_finding(capsys, pair, tmp_path):
    _, ad = pair
    bert = tmp_path / "bert"
    save_tiny("bert", "BertModel", bert)
    code, out, _ = run(capsys, str(ad), "--base", str(bert), "--json")
    assert code == 1
    d = json.loads(out)
    kinds = [f["kind"] for f in d["findings"]]
    assert "target_modules_not_found" in kinds and "adapter_for_other_model" in kinds
    assert d["adapter"]["loads"] is False and d["adapter"]["adapted"] == []
    code, out, _ = run(capsys, str(ad), "--base", str(bert))
    assert code == 1 and "q_proj: closest base module names query" in out


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: (d / "adapter_config.json").write_text("{oops"), "adapter_config.json: invalid adapter_config.json"),
        (lambda d: (d / "adapter_config.json").write_text(json.dumps({"peft_type": "NOPE"})), "unknown peft_type 'NOPE'"),
        (lambda d: (d / "adapter_model.safetensors").unlink(), "no adapter weights"),
        (lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{bad"), "adapter_model.safetensors"),
    ],
    ids=["invalid-json", "unknown-type", "no-weights", "truncated-weights"],
)
def test_bad_input_one_line_exit_2(capsys, pair, tmp_path, mutate, message):
    import shutil

    base, ad = pair
    bad = tmp_path / "bad"
    shutil.copytree(ad, bad)
    mutate(bad)
    code, out, err = run(capsys, str(bad), "--base", str(base))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_options_that_do_not_apply(capsys, pair):
    base, ad = pair
    code, _, err = run(capsys, str(ad), "--base", str(base), "--model", "torch.nn:Linear")
    assert code == 2 and "--model does not apply to an adapter" in err
    code, _, err = run(capsys, str(ad), "--base", str(base), "--config", str(base))
    assert code == 2 and "--base and --config" in err
    code, _, err = run(capsys, str(base), "--base", str(base))
    assert code == 2 and "--base / --delta / --adapter-name apply to a PEFT adapter folder" in err
