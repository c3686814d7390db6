"""Merge-export: base + adapter -> merged checkpoint; values equal peft's merge_and_unload(), loads clean."""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("peft")

from peft import LoKrConfig, LoraConfig, PeftModel, get_peft_model  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from explorer.cli import main  # noqa: E402
from explorer.core.errors import ExportError  # noqa: E402
from explorer.core.merge import export_merged  # noqa: E402
from tests.helpers import save_tiny  # noqa: E402


def _pair(tmp_path, model_type, arch, config, **overrides):
    base = tmp_path / "base"
    model = save_tiny(model_type, arch, base, **overrides)
    torch.manual_seed(3)
    get_peft_model(model, config).save_pretrained(tmp_path / "adapter")
    return base, tmp_path / "adapter"


def _merged_by_peft(base, adapter, arch):
    import transformers

    m = getattr(transformers, arch).from_pretrained(base)
    return PeftModel.from_pretrained(m, adapter).merge_and_unload().state_dict()


@pytest.mark.parametrize(
    "model_type, arch, config",
    [
        ("llama", "LlamaForCausalLM", LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)),
        ("llama", "LlamaForCausalLM", LoraConfig(r=4, target_modules=["q_proj", "o_proj"], init_lora_weights=False, use_dora=True)),
        ("gpt2", "GPT2LMHeadModel", LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)),
        ("bert", "BertForSequenceClassification",
         LoraConfig(r=4, target_modules=["query"], task_type="SEQ_CLS", init_lora_weights=False, use_rslora=True)),
        ("llama", "LlamaForCausalLM", LoKrConfig(r=4, target_modules=["q_proj"], init_weights=False)),
    ],
    ids=["lora", "dora", "gpt2-conv1d", "seqcls-modules-to-save", "lokr"],
)
def test_merged_values_equal_merge_and_unload(tmp_path, model_type, arch, config):
    base, adapter = _pair(tmp_path, model_type, arch, config)
    res = export_merged(base, adapter, tmp_path / "out")
    assert res.is_clean  # the written checkpoint loads clean into the base class
    ref = _merged_by_peft(base, adapter, arch)
    got = load_file(tmp_path / "out" / "model.safetensors")
    before = load_file(base / "model.safetensors")
    tied = {k for k in ref if k not in got}
    assert tied <= {"lm_head.weight"}  # a tied head is not written twice, as save_pretrained does
    changed = 0
    for k, v in got.items():
        assert torch.allclose(v.float(), ref[k].float(), rtol=1e-5, atol=1e-6), k
        changed += not torch.equal(v, before[k]) if k in before else 0
    assert changed >= 2  # the merge really changed the adapted weights
    assert "merged" in res.notes[0]


def test_refuses_an_adapter_that_does_not_load_clean(tmp_path):
    _, adapter = _pair(tmp_path, "llama", "LlamaForCausalLM", LoraConfig(r=4, target_modules=["q_proj"]))
    wide = tmp_path / "wide"
    save_tiny("llama", "LlamaForCausalLM", wide, hidden_size=48, head_dim=12)
    with pytest.raises(ExportError, match="does not load clean onto"):
        export_merged(wide, adapter, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_export_adapter(tmp_path, capsys):
    base, adapter = _pair(tmp_path, "llama", "LlamaForCausalLM", LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    capsys.readouterr()
    code = main(["export", str(base), "--adapter", str(adapter), "-o", str(tmp_path / "out"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    d = json.loads(out)
    assert d["clean"] and d["reload"]["missing"] == 0 and "merged 2 adapted modules" in d["notes"][0]
    # without --plan and --adapter: a plain conversion of the base, every tensor unchanged (issue 13)
    code = main(["export", str(base), "-o", str(tmp_path / "out2")])
    _, err = capsys.readouterr()
    assert code == 0, err
    from explorer.core.checkpoint import open_checkpoint

    assert set(open_checkpoint(tmp_path / "out2").tensors) == set(open_checkpoint(base).tensors)
