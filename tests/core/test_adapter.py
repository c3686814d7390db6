"""Adapter reports against peft itself: adapters written by peft (get_peft_model + save_pretrained) on real tiny
models and the real all-MiniLM-L6-v2; our header-only sets must equal what PeftModel.from_pretrained / load_adapter
report on the same files."""
from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")

from peft import IA3Config, LoHaConfig, LoKrConfig, LoraConfig, get_peft_model  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from explorer.core.adapter import FindingKind, open_adapter  # noqa: E402
from explorer.core.adapter_match import match_adapter  # noqa: E402
from explorer.core.errors import CheckpointError, ConfigError  # noqa: E402
from tests.core.adapter_oracle import peft_sets  # noqa: E402
from tests.helpers import save_tiny  # noqa: E402


def make(tmp: Path, model_type: str, arch: str, config, *, name: str = "ad", seed: int = 1, safe: bool = True, **overrides):
    """A tiny real base saved with save_pretrained, and a peft adapter trained on it (saved by peft)."""
    base = tmp / f"base_{name}"
    model = save_tiny(model_type, arch, base, **overrides)
    torch.manual_seed(seed)
    pm = get_peft_model(model, config)
    ad = tmp / name
    pm.save_pretrained(ad, safe_serialization=safe)
    return base, ad


def assert_same_as_peft(base: Path, ad: Path, arch: str, **kw):
    oracle = peft_sets(str(base), str(ad), arch)
    rep = match_adapter(ad, base=base, **kw)
    assert "error" not in oracle, oracle
    assert set(rep.missing) == oracle["missing"]
    assert set(rep.unexpected) == oracle["unexpected"]
    assert set(rep.mismatched) == oracle["mismatched"]
    assert set(rep.missing) == oracle["from_pretrained_missing"]  # what from_pretrained warns about
    # the keys named as PeftModel.state_dict() names them
    sd = oracle["model"].state_dict()
    assert all(k in sd for k in rep.loaded)
    return rep, oracle


LLAMA_ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_bert_lora_attention_and_mlp(tmp_path):
    base, ad = make(tmp_path, "bert", "BertModel", LoraConfig(r=4, target_modules=["query", "value", "intermediate.dense", "output.dense"]))
    rep, oracle = assert_same_as_peft(base, ad, "BertModel")
    assert rep.is_clean and len(rep.loaded) == len(rep.adapter.index.tensors) == 20
    paths = {m.path for m in rep.adapted}
    assert "encoder.layer.0.attention.self.query" in paths and "encoder.layer.1.output.dense" in paths
    assert "encoder.layer.0.attention.output.dense" in paths  # "output.dense" also matches the attention output
    assert all(m.r == 4 and m.scaling == 2.0 for m in rep.adapted)
    assert rep.loaded[0].startswith("base_model.model.encoder.layer.0.") and ".lora_A.default.weight" in rep.loaded[0]
    trainable = sum(p.numel() for n, p in oracle["model"].named_parameters() if "lora_" in n)
    assert rep.adapter_params == trainable == sum(m.n_params for m in rep.adapted)


def test_llama_dora_all_linear(tmp_path):
    cfg = LoraConfig(r=4, target_modules=LLAMA_ALL, use_dora=True, task_type="CAUSAL_LM")
    base, ad = make(tmp_path, "llama", "LlamaForCausalLM", cfg)
    rep, _ = assert_same_as_peft(base, ad, "LlamaForCausalLM")
    assert rep.is_clean and rep.peft_class == "PeftModelForCausalLM"
    assert len(rep.adapted) == 14 and all(m.use_dora for m in rep.adapted)
    q = next(m for m in rep.adapted if m.path == "model.layers.0.self_attn.q_proj")
    assert any(k.endswith("lora_magnitude_vector.default.weight") for k in q.keys)
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector" in q.sources


def test_wrong_base_other_hidden_size(tmp_path):
    _, ad = make(tmp_path, "llama", "LlamaForCausalLM", LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]))
    wide = tmp_path / "wide"
    save_tiny("llama", "LlamaForCausalLM", wide, hidden_size=48, head_dim=12)
    rep, _ = assert_same_as_peft(wide, ad, "LlamaForCausalLM")
    assert rep.mismatched and not rep.is_clean
    k, a, b = next(m for m in rep.mismatched if m[0].endswith("layers.0.self_attn.q_proj.lora_A.default.weight"))
    assert a == (4, 32) and b == (4, 48)
    # peft deletes mismatched tensors before loading, so load_adapter also lists them as missing
    assert {m[0] for m in rep.mismatched} <= set(rep.missing)


def test_gpt2_conv1d_fan_in_fan_out(tmp_path):
    base, ad = make(tmp_path, "gpt2", "GPT2LMHeadModel", LoraConfig(r=4, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True))
    rep, _ = assert_same_as_peft(base, ad, "GPT2LMHeadModel")
    assert rep.is_clean and {m.path for m in rep.adapted} >= {"transformer.h.0.attn.c_attn", "transformer.h.1.mlp.c_proj"}


def test_modules_to_save_classifier(tmp_path):
    cfg = LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS", modules_to_save=["classifier"])
    base, ad = make(tmp_path, "bert", "BertForSequenceClassification", cfg, num_labels=3)
    rep, _ = assert_same_as_peft(base, ad, "BertForSequenceClassification")
    assert rep.is_clean
    (saved,) = rep.modules_to_save
    assert saved.path == "classifier" and saved.replaces_base
    assert set(saved.sources) == {"base_model.model.classifier.weight", "base_model.model.classifier.bias"}
    # the same adapter onto a head with another number of labels: the saved classifier no longer fits
    other = tmp_path / "other_labels"
    save_tiny("bert", "BertForSequenceClassification", other, num_labels=5)
    rep2, _ = assert_same_as_peft(other, ad, "BertForSequenceClassification")
    assert {k for k, _, _ in rep2.mismatched} == {
        "base_model.model.classifier.modules_to_save.default.weight",
        "base_model.model.classifier.modules_to_save.default.bias",
    }
    assert not rep2.modules_to_save[0].replaces_base


def test_rank_pattern_alpha_pattern_layers_to_transform_rslora(tmp_path):
    cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], rank_pattern={"v_proj": 2}, alpha_pattern={"q_proj": 16},
        layers_to_transform=[1], use_rslora=True,
    )
    base, ad = make(tmp_path, "llama", "LlamaForCausalLM", cfg)
    rep, oracle = assert_same_as_peft(base, ad, "LlamaForCausalLM")
    got = {m.path: (m.r, m.alpha, m.scaling) for m in rep.adapted}
    assert set(got) == {"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"}
    assert got["model.layers.1.self_attn.q_proj"] == (4, 16.0, 16 / math.sqrt(4))
    assert got["model.layers.1.self_attn.v_proj"][:2] == (2, 8.0)
    assert got["model.layers.1.self_attn.v_proj"][2] == pytest.approx(8 / math.sqrt(2))
    peft_layer = oracle["model"].base_model.model.model.layers[1].self_attn.v_proj
    assert got["model.layers.1.self_attn.v_proj"][2] == peft_layer.scaling["default"]


def test_bin_adapter(tmp_path):
    base, ad = make(tmp_path, "bert", "BertModel", LoraConfig(r=4, target_modules=["query", "key"]), safe=False)
    assert (ad / "adapter_model.bin").is_file() and not (ad / "adapter_model.safetensors").exists()
    rep, _ = assert_same_as_peft(base, ad, "BertModel")
    assert rep.is_clean and rep.adapter.index.format.startswith("torch")


def test_adapter_name_inside_keys(tmp_path):
    """Keys saved with the adapter name in them (model.state_dict() of an adapter named 'lora'): nothing loads."""
    base, ad = make(tmp_path, "bert", "BertModel", LoraConfig(r=4, target_modules=["query", "value"]))
    sd = load_file(ad / "adapter_model.safetensors")
    save_file({k.replace(".lora_A.weight", ".lora_A.lora.weight").replace(".lora_B.weight", ".lora_B.lora.weight"): v
               for k, v in sd.items()}, ad / "adapter_model.safetensors")
    rep, _ = assert_same_as_peft(base, ad, "BertModel")
    assert len(rep.unexpected) == len(rep.missing) == len(sd)
    (f,) = [f for f in rep.findings if f.kind is FindingKind.ADAPTER_NAME_IN_KEYS]
    assert "'lora'" in f.message and "peft#2699" in f.message


def test_adapter_name_in_peft_prefix_is_a_finding(tmp_path):
    base, ad = make(tmp_path, "bert", "BertModel", LoraConfig(r=4, target_modules=["query"]))
    rep = match_adapter(ad, base=base, adapter_name="lora")
    assert any(f.kind is FindingKind.ADAPTER_NAME_IN_PREFIX for f in rep.findings)
    assert not rep.missing and all(".lora_A.lora." in k or ".lora_B.lora." in k for k in rep.loaded)


def test_missing_and_extra_tensors(tmp_path):
    base, ad = make(tmp_path, "llama", "LlamaForCausalLM", LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    sd = load_file(ad / "adapter_model.safetensors")
    dropped = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
    sd.pop(dropped)
    sd["base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"] = torch.zeros(4, 32)
    save_file(sd, ad / "adapter_model.safetensors")
    rep, _ = assert_same_as_peft(base, ad, "LlamaForCausalLM")
    assert rep.missing == ("base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight",)
    assert rep.unexpected == ("base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight",)


def test_r_in_config_disagrees_with_tensors(tmp_path):
    base, ad = make(tmp_path, "llama", "LlamaForCausalLM", LoraConfig(r=4, target_modules=["q_proj"]))
    cfg = json.loads((ad / "adapter_config.json").read_text())
    cfg["r"] = 8
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    rep, _ = assert_same_as_peft(base, ad, "LlamaForCausalLM")
    (f,) = [f for f in rep.findings if f.kind is FindingKind.RANK_DISAGREES]
    assert "r = 8" in f.message and "rank 4" in f.message


def test_embedding_lora(tmp_path):
    base, ad = make(tmp_path, "llama", "LlamaForCausalLM", LoraConfig(r=4, target_modules=["embed_tokens", "q_proj"]))
    rep, _ = assert_same_as_peft(base, ad, "LlamaForCausalLM")
    emb = next(m for m in rep.adapted if m.path == "model.embed_tokens")
    assert emb.layer == "Embedding" and rep.is_clean


@pytest.mark.parametrize(
    "config",
    [
        IA3Config(target_modules=["q_proj", "down_proj"], feedforward_modules=["down_proj"]),
        LoHaConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]),
        LoKrConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]),
    ],
    ids=["ia3", "loha", "lokr"],
)
def test_other_peft_types_listed_and_matched(tmp_path, config):
    base, ad = make(tmp_path, "llama", "LlamaForCausalLM", config)
    rep, _ = assert_same_as_peft(base, ad, "LlamaForCausalLM")
    assert rep.is_clean and rep.peft_type == str(config.peft_type.value)
    assert {m.path for m in rep.adapted} >= {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"}
    # and onto a wider base: peft's mismatches, exactly
    wide = tmp_path / "wide"
    save_tiny("llama", "LlamaForCausalLM", wide, hidden_size=48, head_dim=12)
    rep2, _ = assert_same_as_peft(wide, ad, "LlamaForCausalLM")
    assert rep2.mismatched


def test_target_modules_matching_nothing(tmp_path):
    base, ad = make(tmp_path, "bert", "BertModel", LoraConfig(r=4, target_modules=["query"]))
    cfg = json.loads((ad / "adapter_config.json").read_text())
    cfg["target_modules"] = ["q_proj", "v_proj"]
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    oracle = peft_sets(str(base), str(ad), "BertModel")
    assert oracle["error"] == "NoMatchingPeftModuleError"  # peft refuses the adapter outright
    rep = match_adapter(ad, base=base)
    (f,) = [f for f in rep.findings if f.kind is FindingKind.TARGETS_NOT_FOUND]
    assert "q_proj" in f.message and not rep.loads and not rep.is_clean
    assert any("closest base module names" in d and "query" in d for d in f.details)


def test_adapter_for_another_model_family(tmp_path):
    _, ad = make(tmp_path, "llama", "LlamaForCausalLM", LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    bert = tmp_path / "bert"
    save_tiny("bert", "BertModel", bert)
    assert peft_sets(str(bert), str(ad), "BertModel")["error"] == "NoMatchingPeftModuleError"
    rep = match_adapter(ad, base=bert)
    kinds = {f.kind for f in rep.findings}
    assert {FindingKind.TARGETS_NOT_FOUND, FindingKind.OTHER_FAMILY} <= kinds
    fam = next(f for f in rep.findings if f.kind is FindingKind.OTHER_FAMILY)
    assert "model.layers.0.self_attn.q_proj" in " ".join(fam.details)


def test_real_minilm_base(tmp_path, minilm):
    import transformers

    base = transformers.AutoModel.from_pretrained(minilm)
    torch.manual_seed(0)
    pm = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["query", "key", "value", "dense"], init_lora_weights=False))
    ad = tmp_path / "minilm_lora"
    pm.save_pretrained(ad)
    rep, oracle = assert_same_as_peft(Path(minilm), ad, "BertModel", deltas=True)
    assert rep.is_clean and rep.base.index is not None
    assert 0 < 100 * rep.adapter_params / rep.base_params < 10
    # ΔW from the r×r products equals peft's own delta weight, computed in full
    d = next(x for x in rep.deltas if x.module == "encoder.layer.2.attention.self.key")
    layer = oracle["model"].base_model.model.encoder.layer[2].attention.self.key
    full = layer.get_delta_weight("default").double()
    assert d.norm == pytest.approx(float(full.norm()), rel=1e-6)
    assert list(d.singular_values) == pytest.approx(torch.linalg.svdvals(full)[: d.r].tolist(), rel=1e-6, abs=1e-9)
    assert d.base_norm == pytest.approx(float(layer.base_layer.weight.double().norm()), rel=1e-6)
    assert d.relative == pytest.approx(d.norm / d.base_norm) and not d.untrained and d.effective_rank == 8
    # a tiny-BERT adapter onto the real MiniLM (hidden 384): peft's mismatches, exactly
    _, small = make(tmp_path, "bert", "BertModel", LoraConfig(r=4, target_modules=["query", "value"]), name="small")
    rep2, _ = assert_same_as_peft(Path(minilm), small, "BertModel")
    assert rep2.mismatched and not rep2.is_clean


def test_untrained_lora_b_flagged(tmp_path):
    base, ad = make(tmp_path, "bert", "BertModel", LoraConfig(r=4, target_modules=["query"]))  # peft init: B = 0
    rep = match_adapter(ad, base=base, deltas=True)
    assert rep.deltas and all(d.untrained and d.norm == 0.0 and d.effective_rank == 0 for d in rep.deltas)


def test_gpt2_delta_matches_peft_fan_in_fan_out(tmp_path):
    cfg = LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)
    base, ad = make(tmp_path, "gpt2", "GPT2LMHeadModel", cfg)
    rep = match_adapter(ad, base=base, deltas=True)
    oracle = peft_sets(str(base), str(ad), "GPT2LMHeadModel")
    layer = oracle["model"].base_model.model.transformer.h[1].attn.c_attn
    full = layer.get_delta_weight("default").double()
    d = next(x for x in rep.deltas if x.module == "transformer.h.1.attn.c_attn")
    assert d.norm == pytest.approx(float(full.norm()), rel=1e-6)
    assert d.singular_values[0] == pytest.approx(float(torch.linalg.svdvals(full)[0]), rel=1e-6)


# --------------------------------------------------------------------------------------------- bad input


def _adapter(tmp_path) -> tuple[Path, Path]:
    return make(tmp_path, "bert", "BertModel", LoraConfig(r=4, target_modules=["query"]))


def test_invalid_adapter_config_json(tmp_path):
    _, ad = _adapter(tmp_path)
    (ad / "adapter_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"adapter_config\.json: invalid adapter_config\.json"):
        open_adapter(ad)
    (ad / "adapter_config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        open_adapter(ad)


def test_unknown_peft_type(tmp_path):
    _, ad = _adapter(tmp_path)
    cfg = json.loads((ad / "adapter_config.json").read_text())
    cfg["peft_type"] = "LORRA"
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"unknown peft_type 'LORRA'.*did you mean LORA\?"):
        open_adapter(ad)


def test_adapter_weights_missing(tmp_path):
    _, ad = _adapter(tmp_path)
    (ad / "adapter_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no adapter weights: expected adapter_model.safetensors or adapter_model.bin"):
        open_adapter(ad)


def test_bad_config_value_is_one_line(tmp_path):
    base, ad = _adapter(tmp_path)
    cfg = json.loads((ad / "adapter_config.json").read_text())
    cfg["r"] = "eight"
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"adapter_config\.json: invalid adapter_config\.json: 'r' must be a positive number, found 'eight'"):
        match_adapter(ad, base=base)
    cfg["r"] = 4
    cfg["lora_dropout"] = "lots"  # a value only peft's own code rejects: still one line, never a traceback
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    try:
        rep = match_adapter(ad, base=base)
    except ConfigError as e:
        assert "\n" not in str(e)
    else:
        assert rep.findings and all("\n" not in f.message for f in rep.findings)


def test_nothing_named_in_the_config_is_imported(tmp_path, monkeypatch):
    """auto_mapping / megatron_core name modules; a module on sys.path with that name must never be imported."""
    base, ad = _adapter(tmp_path)
    evil = tmp_path / "evil_pkg"
    evil.mkdir()
    marker = tmp_path / "imported"
    (evil / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = json.loads((ad / "adapter_config.json").read_text())
    cfg["auto_mapping"] = {"base_model_class": "Evil", "parent_library": "evil_pkg"}
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    rep = match_adapter(ad, base=base)
    assert rep.is_clean and not marker.exists() and "evil_pkg" not in sys.modules
    cfg["megatron_config"] = {"x": 1}
    cfg["megatron_core"] = "evil_pkg"
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="megatron_core"):
        match_adapter(ad, base=base)
    assert not marker.exists() and "evil_pkg" not in sys.modules


def test_base_from_base_model_name_or_path_and_config_only(tmp_path, monkeypatch):
    base, ad = _adapter(tmp_path)
    cfg = json.loads((ad / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(base)
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    rep = match_adapter(ad)
    assert rep.base.origin == "base_model_name_or_path" and rep.base.index is not None and rep.is_clean
    # a config alone: header-only base, same sets, no base weights
    only_cfg = tmp_path / "cfg_only"
    only_cfg.mkdir()
    shutil.copy(base / "config.json", only_cfg / "config.json")
    rep2 = match_adapter(ad, config=only_cfg)
    assert rep2.base.index is None and rep2.loaded == rep.loaded
    cfg["base_model_name_or_path"] = "someone/not-cached-model"
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(ConfigError, match="neither a local model folder nor in the local Hugging Face cache"):
        match_adapter(ad)


def test_base_from_hf_cache(tmp_path, monkeypatch):
    """base_model_name_or_path naming a model in the local HF cache (snapshot layout), offline."""
    base, ad = _adapter(tmp_path)
    cache = tmp_path / "hub"
    snap = cache / "models--acme--tiny-bert" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    for f in base.iterdir():
        shutil.copy(f, snap / f.name)
    (cache / "models--acme--tiny-bert" / "refs").mkdir()
    (cache / "models--acme--tiny-bert" / "refs" / "main").write_text("a" * 40)
    cfg = json.loads((ad / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "acme/tiny-bert"
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    rep = match_adapter(ad)
    assert rep.base.origin == "hf-cache" and Path(rep.base.config) == snap and rep.is_clean
