"""A fast, representative slice of benchmarks/parity_sweep.py: for diverse model types (encoder-only,
encoder-decoder, vision, audio, multimodal/composite, MoE with weight converters, models with ignore rules), a tiny
real checkpoint written by save_pretrained is matched in several scenarios and the missing / unexpected /
mismatched sets must equal ``from_pretrained(..., output_loading_info=True, ignore_mismatched_sizes=True)``.

Scenarios per type (see the sweep's docstring): same class (original on-disk layout, i.e. legacy MoE experts where
transformers converts), fused layout, head -> base, head -> other head, base -> head, ``module.`` prefix, a grown
vocabulary (mismatched + tied heads) and, for composite configs, a sub-model class (CLIPVisionModel from CLIP).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from explorer.core.errors import ExplorerError
from explorer.core.matching import report
from explorer.core.model import ModelSpec
from tests.helpers import save_tiny

_SWEEP = Path(__file__).resolve().parents[2] / "benchmarks" / "parity_sweep.py"


def _sweep():
    spec = importlib.util.spec_from_file_location("parity_sweep", _SWEEP)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


sweep = _sweep()

TYPES = [
    "bert",  # encoder, legacy LayerNorm renames, tied MLM decoder
    "gpt2",  # _keys_to_ignore_on_load_unexpected (attn.bias), tied lm_head, "transformer" prefix
    "t5",  # encoder-decoder, shared embeddings tied three ways
    "bart",  # encoder-decoder with _keys_to_ignore_on_load_missing / final_logits_bias
    "whisper",  # audio encoder-decoder
    "vit",  # vision
    "clip",  # composite text+vision; sub-model classes read their sub-config (failed before: config_for_class)
    "siglip",  # composite; SiglipVisionModel from a SigLIP checkpoint (failed before)
    "llava",  # multimodal with a legacy-layout conversion (language_model prefix moves)
    "mixtral",  # MoE: per-expert w1/w2/w3 on disk, fused by a WeightConverter
    "qwen2_moe",  # MoE with shared expert, per-expert gate/up/down on disk
    "deepseek_v3",  # MoE + MLA
    "falcon_h1",  # hybrid mamba; config.json only valid through from_dict (failed before: AutoConfig.for_model)
    "gemma3",  # composite multimodal with its own conversion mapping
]


@pytest.mark.parametrize("model_type", TYPES)
def test_parity_with_from_pretrained(model_type, tmp_path):
    res = sweep.run_type(model_type, tmp_path)
    assert res["status"] != "skip", res.get("reason")
    bad = [s for s in res["scenarios"] if not s["ok"]]
    assert not bad, json.dumps(bad, indent=1, default=str)[:3000]
    names = {s["scenario"] for s in res["scenarios"]}
    assert {"same", "module"} <= names
    if model_type != "vit":  # every other type here has a vocabulary to grow
        assert "resized" in names
    if model_type in ("mixtral", "qwen2_moe", "deepseek_v3"):
        assert res.get("legacy_layout") and "fused" in names  # converters really ran
    if model_type in ("clip", "siglip"):
        assert "sub_model" in names


def test_sub_model_class_reads_its_sub_config(tmp_path):
    save_tiny("clip", "CLIPModel", tmp_path, text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                                           "num_attention_heads": 4, "vocab_size": 99},
              vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                             "image_size": 32, "patch_size": 8}, projection_dim=16)
    rep = report(tmp_path, ModelSpec(config=str(tmp_path), arch="CLIPVisionModel"))
    mk = rep.model_keys["embeddings.patch_embedding.weight"]
    assert mk.status.value == "matched" and mk.sources == ("vision_model.embeddings.patch_embedding.weight",)
    assert not rep.missing
    assert "text_model.embeddings.token_embedding.weight" in rep.unexpected


def test_load_dtype_follows_from_pretrained_key_order(tmp_path):
    """Without a config dtype, from_pretrained uses the first floating tensor in *sorted-name* order of the first
    file (safe_open's order), not the order of the data in the file."""
    import transformers

    m = save_tiny("llama", "LlamaForCausalLM", tmp_path, tie_word_embeddings=False)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("dtype", None)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    sd = {k: v.to(torch.float16) if k.startswith("lm_head") else v.to(torch.bfloat16) for k, v in m.state_dict().items()}
    sd["a_first_by_name"] = torch.zeros(3, dtype=torch.float32)  # sorts first; stored after the 2-byte tensors
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path)
    rep = report(tmp_path, ModelSpec(config=str(tmp_path)))
    assert rep.load_dtype == str(loaded.dtype).removeprefix("torch.") == "float32"


def test_unexpected_exception_becomes_one_line_explorer_error(tmp_path, monkeypatch):
    import transformers

    save_tiny("bert", "BertModel", tmp_path)

    def boom(self, *a, **k):
        raise RuntimeError("weird model\nwith a second line")

    monkeypatch.setattr(transformers.PreTrainedModel, "tie_weights", boom)
    with pytest.raises(ExplorerError) as ei:
        report(tmp_path, ModelSpec(config=str(tmp_path), arch="BertModel"))
    msg = str(ei.value)
    assert "\n" not in msg and "weird model" in msg and str(tmp_path) in msg
