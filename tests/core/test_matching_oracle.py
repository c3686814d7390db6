"""Oracle tests: the report's missing/unexpected/mismatched sets equal what ``from_pretrained`` itself reports
on the same files (``output_loading_info=True, ignore_mismatched_sizes=True``)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from explorer.core.matching import report
from explorer.core.report import How, Status
from explorer.core.model import ModelSpec
from tests.helpers import save_tiny, tiny_config


def oracle(weights: Path | str, arch: str, *, config: Path | str | None = None, **kw) -> tuple[set, set, set]:
    """What from_pretrained reports, as (missing, unexpected, {(key, ckpt_shape, model_shape)})."""
    cls = getattr(transformers, arch)
    if config is not None:
        kw["config"] = transformers.AutoConfig.from_pretrained(config)
    _, info = cls.from_pretrained(str(weights), output_loading_info=True, ignore_mismatched_sizes=True, **kw)
    mism = {(k, tuple(a), tuple(b)) for k, a, b in info["mismatched_keys"]}
    return set(info["missing_keys"]), set(info["unexpected_keys"]), mism


def ours(weights: Path | str, arch: str, *, config: Path | str | None = None, **kw):
    rep = report(weights, ModelSpec(config=str(config or weights), arch=arch), **kw)
    return rep, (set(rep.missing), set(rep.unexpected), set(rep.mismatched))


def assert_parity(weights, arch, *, config=None, key_mapping=None):
    rep, got = ours(weights, arch, config=config, key_mapping=key_mapping)
    want = oracle(weights, arch, config=config, **({"key_mapping": key_mapping} if key_mapping else {}))
    assert got[0] == want[0], f"missing differs: ours-only {got[0] - want[0]}, theirs-only {want[0] - got[0]}"
    assert got[1] == want[1], f"unexpected differs: ours-only {got[1] - want[1]}, theirs-only {want[1] - got[1]}"
    assert got[2] == want[2], f"mismatched differs: ours {got[2]}, theirs {want[2]}"
    _check_consistency(rep)
    return rep


def _check_consistency(rep) -> None:
    """Per-key statuses agree with the three reported sets."""
    by_status = {s: {k for k, m in rep.model_keys.items() if m.status is s} for s in Status}
    assert by_status[Status.MISSING] == set(rep.missing)
    assert by_status[Status.MISMATCHED] == {k for k, _, _ in rep.mismatched}
    assert rep.counts()["matched"] == len(by_status[Status.MATCHED])
    for m in rep.model_keys.values():
        if m.status is Status.MATCHED and How.TIED not in m.how:
            assert m.sources, f"{m.key}: matched without a source"
            assert all(s in rep.index.tensors for s in m.sources)


def rewrite(folder: Path, fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]], *, out: Path | None = None) -> Path:
    """Copy a saved tiny model folder, passing its model.safetensors through ``fn``."""
    out = out or folder.with_name(folder.name + "_rw")
    shutil.copytree(folder, out)
    sd = load_file(out / "model.safetensors")
    save_file({k: v.contiguous() for k, v in fn(sd).items()}, out / "model.safetensors", metadata={"format": "pt"})
    return out


def with_config(folder: Path, out: Path, **changes) -> Path:
    """A config-only folder: ``folder``'s config.json with ``changes``."""
    out.mkdir()
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (out / "config.json").write_text(json.dumps(cfg))
    return out


# --------------------------------------------------------------------------------------------- BERT


@pytest.fixture(scope="module")
def bert_base(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bert_base")
    save_tiny("bert", "BertModel", d)
    return d


@pytest.fixture(scope="module")
def bert_mlm(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bert_mlm")
    save_tiny("bert", "BertForMaskedLM", d)
    return d


@pytest.mark.parametrize("arch", ["BertForSequenceClassification", "BertForMaskedLM", "BertForPreTraining", "BertModel"])
def test_bert_base_into_heads(bert_base, arch):
    rep = assert_parity(bert_base, arch)
    if arch != "BertModel":
        mk = rep.model_keys["bert.embeddings.word_embeddings.weight"]
        assert mk.status is Status.MATCHED and How.PREFIX_ADDED in mk.how
        assert mk.sources == ("embeddings.word_embeddings.weight",)
    else:
        mk = rep.model_keys["embeddings.word_embeddings.weight"]
        assert mk.how == (How.EXACT,) and mk.sources == ("embeddings.word_embeddings.weight",)


@pytest.mark.parametrize("arch", ["BertModel", "BertForSequenceClassification", "BertForMaskedLM"])
def test_bert_head_into_base_and_other_heads(bert_mlm, arch):
    rep = assert_parity(bert_mlm, arch)
    if arch == "BertModel":
        mk = rep.model_keys["encoder.layer.0.attention.self.query.weight"]
        assert How.PREFIX_STRIPPED in mk.how
        assert mk.sources == ("bert.encoder.layer.0.attention.self.query.weight",)


def test_bert_legacy_layernorm_gamma_beta(bert_base, tmp_path):
    def legacy(sd):
        return {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v for k, v in sd.items()}

    d = rewrite(bert_base, legacy, out=tmp_path / "legacy")
    rep = assert_parity(d, "BertForSequenceClassification")
    mk = rep.model_keys["bert.embeddings.LayerNorm.weight"]
    assert mk.status is Status.MATCHED
    assert How.RENAMED in mk.how and How.PREFIX_ADDED in mk.how
    assert mk.sources == ("embeddings.LayerNorm.gamma",)
    ck = rep.checkpoint_keys["embeddings.LayerNorm.beta"]
    assert ck.status is Status.MATCHED and ck.targets == ("bert.embeddings.LayerNorm.bias",)


def test_bert_gamma_and_weight_duplicate_dropped_silently(bert_base, tmp_path):
    def dup(sd):
        extra = {k.replace("LayerNorm.weight", "LayerNorm.gamma"): v.clone() for k, v in sd.items() if k.endswith("LayerNorm.weight")}
        return {**sd, **extra}

    d = rewrite(bert_base, dup, out=tmp_path / "dup")
    rep = assert_parity(d, "BertModel")
    assert rep.is_clean
    statuses = {rep.checkpoint_keys["embeddings.LayerNorm.gamma"].status, rep.checkpoint_keys["embeddings.LayerNorm.weight"].status}
    assert statuses == {Status.MATCHED, Status.IGNORED}
    dropped = [c for c in rep.checkpoint_keys.values() if How.DUPLICATE in c.how]
    assert len(dropped) == 1 + 2 * 2  # embeddings + two LayerNorms per layer, 2 layers
    assert rep.counts()["ignored"] >= len(dropped)


def test_num_labels_change_is_mismatched(tmp_path):
    src = tmp_path / "cls"
    save_tiny("bert", "BertForSequenceClassification", src, num_labels=2)
    cfg = with_config(src, tmp_path / "cfg5", id2label={str(i): f"L{i}" for i in range(5)}, label2id={f"L{i}": i for i in range(5)})
    rep = assert_parity(src, "BertForSequenceClassification", config=cfg)
    assert ("classifier.weight", (2, 32), (5, 32)) in set(rep.mismatched)
    assert rep.model_keys["classifier.weight"].newly_initialized


def test_vocab_change_is_mismatched_and_tied_decoder_follows(bert_mlm, tmp_path):
    cfg = with_config(bert_mlm, tmp_path / "cfgv", vocab_size=200)
    rep = assert_parity(bert_mlm, "BertForMaskedLM", config=cfg)
    assert "bert.embeddings.word_embeddings.weight" in {k for k, _, _ in rep.mismatched}
    assert rep.model_keys["bert.embeddings.word_embeddings.weight"].newly_initialized


# --------------------------------------------------------------------------------------------- prefixes


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "bert."])
def test_foreign_prefix_suggests_mapping(bert_base, tmp_path, prefix):
    # transformers strips one base-model prefix, so a doubled "bert.bert." loads into a head model but nothing
    # of it loads into BertModel
    pre = prefix if prefix != "bert." else "bert.bert."
    d = rewrite(bert_base, lambda sd: {pre + k: v for k, v in sd.items()}, out=tmp_path / "pref")
    arch = "BertForSequenceClassification" if prefix != "bert." else "BertModel"
    if prefix == "bert.":
        assert_parity(d, "BertForSequenceClassification")
    rep = assert_parity(d, arch)
    assert len(rep.unexpected) == len(rep.index.tensors)  # nothing loads
    assert rep.suggested_key_mapping is not None
    mapping = dict(rep.suggested_key_mapping)
    fixed, got = ours(d, arch, auto_fix=True)
    assert not got[1] and not got[2]
    assert got[0] == ({"classifier.weight", "classifier.bias"} if arch != "BertModel" else set())
    assert rep.suggestion_effect["unexpected"] == 0
    # from_pretrained with the suggested mapping gives the same sets
    assert_parity(d, arch, key_mapping=mapping)
    mk = fixed.model_keys[("bert." if arch != "BertModel" else "") + "encoder.layer.0.output.dense.weight"]
    assert How.KEY_MAPPING in mk.how and mk.sources == (pre + "encoder.layer.0.output.dense.weight",)


def test_model_model_double_prefix_llama(tmp_path):
    src = tmp_path / "llama"
    save_tiny("llama", "LlamaForCausalLM", src, tie_word_embeddings=False)
    d = rewrite(src, lambda sd: {("model." + k if k.startswith("model.") else k): v for k, v in sd.items()}, out=tmp_path / "mm")
    # transformers strips one "model." level, so this loads into the causal LM but not into LlamaModel
    assert assert_parity(d, "LlamaForCausalLM").is_clean
    rep = assert_parity(d, "LlamaModel")
    assert rep.suggested_key_mapping is not None
    fixed, got = ours(d, "LlamaModel", auto_fix=True)
    assert fixed.unexpected == ("lm_head.weight",) and not fixed.missing
    assert_parity(d, "LlamaModel", key_mapping=dict(rep.suggested_key_mapping))


def test_no_suggestion_for_a_few_unused_head_tensors(bert_mlm):
    rep = assert_parity(bert_mlm, "BertModel")
    assert rep.suggested_key_mapping is None
    rep2 = report(bert_mlm, ModelSpec(config=str(bert_mlm), arch="BertForSequenceClassification"))
    assert rep2.suggested_key_mapping is None


# --------------------------------------------------------------------------------------------- GPT-2


def test_gpt2_tied_lm_head_and_legacy_attn_bias(tmp_path):
    src = tmp_path / "gpt2"
    save_tiny("gpt2", "GPT2LMHeadModel", src)
    rep = assert_parity(src, "GPT2LMHeadModel")
    assert rep.is_clean
    lm = rep.model_keys["lm_head.weight"]
    assert lm.status is Status.MATCHED and How.TIED in lm.how and lm.tied_to == "transformer.wte.weight"
    assert rep.params_loaded() == (rep.index.total_params, 0)  # the tied pair counts once

    def legacy(sd):  # old GPT-2 checkpoints carry the causal-mask buffers
        extra = {}
        for i in range(2):
            extra[f"h.{i}.attn.bias"] = torch.tril(torch.ones(64, 64)).view(1, 1, 64, 64)
            extra[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
        return {k.removeprefix("transformer."): v for k, v in sd.items()} | extra

    d = rewrite(src, legacy, out=tmp_path / "legacy")
    for arch in ("GPT2LMHeadModel", "GPT2Model", "GPT2ForSequenceClassification"):
        assert_parity(d, arch)


def test_gpt2_base_into_lm_head(tmp_path):
    src = tmp_path / "gpt2base"
    save_tiny("gpt2", "GPT2Model", src)
    rep = assert_parity(src, "GPT2LMHeadModel")
    assert rep.model_keys["lm_head.weight"].status is Status.MATCHED
    assert rep.params_loaded() == (rep.index.total_params, 0)


# --------------------------------------------------------------------------------------------- Llama


@pytest.mark.parametrize("tie", [False, True])
def test_llama_tie_off_on(tmp_path, tie):
    src = tmp_path / "llama"
    save_tiny("llama", "LlamaForCausalLM", src, tie_word_embeddings=tie)
    rep = assert_parity(src, "LlamaForCausalLM")
    assert rep.is_clean
    assert assert_parity(src, "LlamaModel").unexpected == (() if tie else ("lm_head.weight",))
    # legacy rotary inv_freq buffers are ignored by rule; dropping lm_head from an untied checkpoint makes it missing
    d = rewrite(
        src,
        lambda sd: {k: v for k, v in sd.items() if k != "lm_head.weight"}
        | {f"model.layers.{i}.self_attn.rotary_emb.inv_freq": torch.ones(4) for i in range(2)},
        out=tmp_path / "rot",
    )
    rep = assert_parity(d, "LlamaForCausalLM")
    ck = rep.checkpoint_keys["model.layers.0.self_attn.rotary_emb.inv_freq"]
    assert ck.status is Status.IGNORED and How.IGNORED_RULE in ck.how
    assert rep.missing == (() if tie else ("lm_head.weight",))


# --------------------------------------------------------------------------------------------- Mixtral (legacy experts)


def _mixtral_legacy(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k.endswith("mlp.experts.gate_up_proj"):
            base = k.removesuffix("mlp.experts.gate_up_proj") + "block_sparse_moe.experts"
            inter = v.shape[1] // 2
            for e in range(v.shape[0]):
                out[f"{base}.{e}.w1.weight"] = v[e, :inter].clone()
                out[f"{base}.{e}.w3.weight"] = v[e, inter:].clone()
        elif k.endswith("mlp.experts.down_proj"):
            base = k.removesuffix("mlp.experts.down_proj") + "block_sparse_moe.experts"
            for e in range(v.shape[0]):
                out[f"{base}.{e}.w2.weight"] = v[e].clone()
        else:
            out[k.replace(".mlp.", ".block_sparse_moe.")] = v
    return out


@pytest.fixture(scope="module")
def mixtral_legacy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mixtral")
    save_tiny("mixtral", "MixtralForCausalLM", root / "fused")
    return rewrite(root / "fused", _mixtral_legacy, out=root / "legacy")


def test_mixtral_legacy_experts_converted(mixtral_legacy):
    assert "model.layers.0.block_sparse_moe.experts.3.w2.weight" in load_file(mixtral_legacy / "model.safetensors")
    rep = assert_parity(mixtral_legacy, "MixtralForCausalLM")
    assert rep.is_clean
    gu = rep.model_keys["model.layers.0.mlp.experts.gate_up_proj"]
    assert gu.status is Status.MATCHED and How.CONVERTED in gu.how
    assert set(gu.sources) == {f"model.layers.0.block_sparse_moe.experts.{e}.{w}.weight" for e in range(4) for w in ("w1", "w3")}
    dn = rep.model_keys["model.layers.1.mlp.experts.down_proj"]
    assert set(dn.sources) == {f"model.layers.1.block_sparse_moe.experts.{e}.w2.weight" for e in range(4)}
    gate = rep.model_keys["model.layers.0.mlp.gate.weight"]
    assert How.RENAMED in gate.how and gate.sources == ("model.layers.0.block_sparse_moe.gate.weight",)
    ck = rep.checkpoint_keys["model.layers.0.block_sparse_moe.experts.2.w3.weight"]
    assert ck.status is Status.MATCHED and ck.targets == ("model.layers.0.mlp.experts.gate_up_proj",)
    assert How.CONVERTED in ck.how
    loaded, fresh = rep.params_loaded()
    assert fresh == 0 and loaded == rep.index.total_params


def test_mixtral_legacy_into_base_model_and_fewer_experts(mixtral_legacy, tmp_path):
    assert_parity(mixtral_legacy, "MixtralModel")
    cfg = with_config(mixtral_legacy, tmp_path / "cfg8", num_local_experts=8)
    rep = assert_parity(mixtral_legacy, "MixtralForCausalLM", config=cfg)
    assert rep.mismatched


def test_mixtral_converter_targets_unexpected(mixtral_legacy, tmp_path):
    # experts of a layer the model does not have: transformers reports the converter's target names
    def extra(sd):
        out = dict(sd)
        for e in range(4):
            for w in ("w1", "w2", "w3"):
                out[f"model.layers.7.block_sparse_moe.experts.{e}.{w}.weight"] = sd[f"model.layers.0.block_sparse_moe.experts.{e}.{w}.weight"].clone()
        return out

    d = rewrite(mixtral_legacy, extra, out=tmp_path / "extra")
    rep = assert_parity(d, "MixtralForCausalLM")
    assert "model.layers.7.mlp.experts.gate_up_proj" in rep.unexpected
    ck = rep.checkpoint_keys["model.layers.7.block_sparse_moe.experts.1.w1.weight"]
    assert ck.status is Status.UNEXPECTED and ck.reported_as == "model.layers.7.mlp.experts.gate_up_proj"


# --------------------------------------------------------------------------------------------- T5, ViT


def test_t5_shared_and_embed_tokens(tmp_path):
    src = tmp_path / "t5"
    save_tiny("t5", "T5ForConditionalGeneration", src)
    for arch in ("T5ForConditionalGeneration", "T5Model", "T5EncoderModel"):
        assert_parity(src, arch)
    # old checkpoints store only `shared.weight`; the embed_tokens are tied to it
    d = rewrite(src, lambda sd: {k: v for k, v in sd.items() if not k.endswith("embed_tokens.weight")}, out=tmp_path / "shared")
    rep = assert_parity(d, "T5ForConditionalGeneration")
    et = rep.model_keys["encoder.embed_tokens.weight"]
    assert et.status is Status.MATCHED and How.TIED in et.how


@pytest.mark.parametrize("src_arch,dst_arch", [("ViTModel", "ViTForImageClassification"), ("ViTForImageClassification", "ViTModel")])
def test_vit(tmp_path, src_arch, dst_arch):
    save_tiny("vit", src_arch, tmp_path / "vit")
    assert_parity(tmp_path / "vit", dst_arch)


# --------------------------------------------------------------------------------------------- formats, dtypes


def test_pytorch_model_bin_and_sharded_safetensors(bert_base, tmp_path):
    model = transformers.BertModel.from_pretrained(bert_base)
    binf = tmp_path / "bin"
    model.save_pretrained(binf, safe_serialization=False) if "safe_serialization" in model.save_pretrained.__code__.co_varnames else None
    if not (binf / "pytorch_model.bin").exists():  # transformers 5 always writes safetensors: write the bin ourselves
        binf.mkdir(exist_ok=True)
        shutil.copy(bert_base / "config.json", binf / "config.json")
        torch.save(load_file(bert_base / "model.safetensors"), binf / "pytorch_model.bin")
    rep = assert_parity(binf, "BertForSequenceClassification")
    assert rep.index.format == "torch-zip"
    shard = tmp_path / "sharded"
    model.save_pretrained(shard, max_shard_size="20KB")
    assert (shard / "model.safetensors.index.json").exists()
    rep = assert_parity(shard, "BertForMaskedLM")
    assert rep.index.format == "safetensors-sharded" and len(rep.index.files) > 1


def test_bfloat16_config_and_dtype_annotation(tmp_path):
    src = tmp_path / "bf"
    m = save_tiny("llama", "LlamaForCausalLM", src, tie_word_embeddings=False)
    m.to(torch.bfloat16).save_pretrained(src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["dtype"] = "bfloat16"
    (src / "config.json").write_text(json.dumps(cfg))
    rep = assert_parity(src, "LlamaForCausalLM")
    assert rep.load_dtype == "bfloat16"
    mk = rep.model_keys["model.norm.weight"]
    assert mk.model_dtype == "bfloat16" and How.DTYPE_DIFFERS not in mk.how
    # a float32 config loading bf16 tensors: matched with a cast
    cfg32 = with_config(src, tmp_path / "cfg32", dtype="float32")
    rep = assert_parity(src, "LlamaForCausalLM", config=cfg32)
    mk = rep.model_keys["model.norm.weight"]
    assert How.DTYPE_DIFFERS in mk.how and mk.checkpoint_dtype == "bfloat16" and mk.model_dtype == "float32"


# --------------------------------------------------------------------------------------------- the real MiniLM


@pytest.mark.parametrize(
    "arch", ["BertModel", "BertForSequenceClassification", "BertForMaskedLM", "BertForPreTraining", "BertForTokenClassification", "BertForQuestionAnswering"]
)
def test_real_minilm_into_heads(minilm, arch):
    rep = assert_parity(minilm, arch)
    if arch == "BertModel":
        assert rep.is_clean
    else:
        assert rep.model_keys["bert.encoder.layer.5.output.dense.weight"].status is Status.MATCHED


# --------------------------------------------------------------------------------------------- instrumentation


def test_recorded_renames_equal_direct_computation(mixtral_legacy, bert_base, monkeypatch):
    """The annotation read from transformers' own calls equals recomputing it, and nothing stays patched."""
    import copy

    from transformers import core_model_loading as cml

    from explorer.core import matching

    fast = [report(d, ModelSpec(config=str(d), arch=a)) for d, a in ((mixtral_legacy, "MixtralForCausalLM"), (bert_base, "BertForMaskedLM"))]
    assert cml.deepcopy is copy.deepcopy and cml.rename_source_key.__module__ == cml.__name__

    class NoRecorder(matching._Recorder):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(matching, "_Recorder", NoRecorder)
    slow = [report(d, ModelSpec(config=str(d), arch=a)) for d, a in ((mixtral_legacy, "MixtralForCausalLM"), (bert_base, "BertForMaskedLM"))]
    for a, b in zip(fast, slow):
        assert a.checkpoint_keys == b.checkpoint_keys
        assert a.model_keys == b.model_keys
