"""`stats`, `init-check` and `--adapter-name` on PEFT adapters, against peft itself (adapters written by peft)."""
from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("peft")

from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from explorer.cli import main  # noqa: E402
from tests.helpers import save_tiny  # noqa: E402

Q = "encoder.layer.0.attention.self.query"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A tiny real BERT, an adapter trained on it (lora_B moved off zero) and one straight from peft's init."""
    root = tmp_path_factory.mktemp("pair")
    base = root / "base"
    save_tiny("bert", "BertModel", base)
    import transformers

    out = {}
    for name, trained in (("trained", True), ("untrained", False)):
        torch.manual_seed(2)
        pm = get_peft_model(transformers.BertModel.from_pretrained(base), LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"]))
        if trained:
            with torch.no_grad():
                for n, p in pm.named_parameters():
                    if "lora_B" in n:
                        p.normal_(0, 0.05)
        pm.save_pretrained(root / name)
        out[name] = root / name
    return base, out["trained"], out["untrained"]


def _peft(base, adapter, **kw):
    import transformers

    return PeftModel.from_pretrained(transformers.BertModel.from_pretrained(base), str(adapter), **kw)


def test_stats_of_adapter_tensors_and_delta_per_module(capsys, pair):
    base, trained, _ = pair
    code, out, err = run(capsys, "stats", str(trained), "--base", str(base), "--json")
    assert code == 0, err
    d = json.loads(out)
    by = {t["name"]: t for t in d["tensors"]}
    sd = load_file(trained / "adapter_model.safetensors")
    for name, t in sd.items():  # every adapter tensor, its figures as torch computes them
        assert math.isclose(by[name]["mean"], float(t.double().mean()), rel_tol=1e-6, abs_tol=1e-12)
    pm = _peft(base, trained)
    deltas = [t for t in d["tensors"] if t["name"].startswith("ΔW:")]
    assert len(deltas) == 4
    for t in deltas:
        layer = pm.base_model.model.get_submodule(t["name"].removeprefix("ΔW:"))
        dw = layer.get_delta_weight("default").double()
        assert t["numel"] == dw.numel() and sum(t["histogram"]["counts"]) == dw.numel()
        assert math.isclose(t["l2"], float(dw.norm()), rel_tol=1e-5)
        assert math.isclose(t["delta"]["norm"], float(dw.norm()), rel_tol=1e-6)
        assert math.isclose(t["delta"]["relative"], float(dw.norm() / layer.base_layer.weight.double().norm()), rel_tol=1e-5)
        assert not t["delta"]["untrained"]
    code, out, err = run(capsys, "stats", str(trained), f"ΔW:{Q}", "--base", str(base))
    assert code == 0 and f"ΔW:{Q}" in out and "‖ΔW‖/‖W‖" in out and "lora_A" not in out


def test_stats_without_a_base_lists_the_tensors_and_says_why_no_delta(capsys, pair, tmp_path):
    import shutil

    _, trained, _ = pair
    ad = tmp_path / "ad"
    shutil.copytree(trained, ad)
    cfg = json.loads((ad / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "nobody/not-in-the-cache"
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    code, out, err = run(capsys, "stats", str(ad), "--json")
    assert code == 0
    d = json.loads(out)
    assert len(d["tensors"]) == 8 and not any(t["name"].startswith("ΔW:") for t in d["tensors"])
    assert "no ΔW" in d["notes"][0]
    code, out, err = run(capsys, "stats", str(ad), "ΔW:nothing", "--config", str(pair[0]))
    assert code == 2 and "no tensor named 'ΔW:nothing'" in err and len(err.strip().splitlines()) == 1


def test_init_check_flags_lora_b_at_peft_init_as_untrained(capsys, pair):
    base, trained, untrained = pair
    code, out, err = run(capsys, "init-check", str(untrained), "--config", str(base), "--json")
    assert code == 1, err
    d = json.loads(out)
    b = {n for n in load_file(untrained / "adapter_model.safetensors") if ".lora_B." in n}
    assert b <= set(d["init_like"])
    assert sorted(d["untrained_modules"]) == sorted(f"encoder.layer.{i}.attention.self.{t}" for i in range(2) for t in ("query", "value"))
    code, out, err = run(capsys, "init-check", str(trained), "--base", str(base), "--json")
    assert code == 0 and json.loads(out)["init_like"] == []
    code, out, err = run(capsys, "init-check", str(untrained), "--config", str(base))
    assert code == 1 and "4 of 4 adapted modules untrained (lora_B all zeros)" in out


def test_adapter_name_names_the_keys_as_peft_does(capsys, pair):
    base, trained, _ = pair
    code, out, err = run(capsys, "report", str(trained), "--base", str(base), "--adapter-name", "sft", "--json")
    assert code == 0, err
    d = json.loads(out)
    pm = _peft(base, trained, adapter_name="sft")
    want = {k for k in pm.state_dict() if ".lora_" in k}
    assert {m["key"] for m in d["matched"]} == want
    assert all(".sft." in k for k in want)
    code, out, err = run(capsys, "report", str(base), "--adapter-name", "sft")
    assert code == 2 and "apply to a PEFT adapter folder" in err
