"""Pre-quantized checkpoints (config.json with ``quantization_config``): the report runs transformers' own
HfQuantizer on the meta model, so scales such as ``weight_scale_inv`` are matched, not unexpected.

Oracles, both real ``from_pretrained(..., output_loading_info=True, ignore_mismatched_sizes=True)`` on the same files
(``accelerate`` must be installed; FP8 needs it):
- ``quantization="auto"``: plain from_pretrained on this machine. Without a GPU the FP8 quantizer's
  ``validate_environment`` switches to dequantizing on load (weight + scale -> one bf16 weight), so that is the layout
  compared here.
- ``quantization="quantized"``: the pre-quantized layout a GPU gets (FP8Linear with ``weight_scale_inv``
  parameters). from_pretrained cannot take that path on this CPU, so the oracle is from_pretrained with
  ``FineGrainedFP8HfQuantizer.validate_environment`` replaced by a no-op: transformers' own quantizer then builds the
  FP8 layers and classifies the keys exactly as on a GPU (loading FP8 tensors into FP8 parameters needs no GPU).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from explorer.core.matching import report
from explorer.core.report import How, Status
from explorer.core.model import ModelSpec, build_model
from tests.helpers import save_tiny, tiny_config

pytest.importorskip("accelerate")  # from_pretrained refuses FP8 checkpoints without it

FP8_DTYPE = torch.float8_e4m3fn


def fp8_qwen3(folder: Path, *, block: int = 16, drop_scale: str | None = None, extra: bool = False, dequantize: bool = False,
              hidden: int = 64) -> Path:
    """A tiny Qwen3 saved as a fine-grained FP8 release (like Qwen3-*-FP8): every ``*_proj.weight`` as float8_e4m3fn
    plus a float32 ``*.weight_scale_inv`` per ``block x block`` tile; norms and embeddings in bf16."""
    torch.manual_seed(0)
    cfg = tiny_config("qwen3", hidden_size=hidden, intermediate_size=2 * hidden, head_dim=hidden // 4, num_attention_heads=4,
                      num_key_value_heads=4 if block > 16 else 2)
    cfg.architectures = ["Qwen3ForCausalLM"]
    model = transformers.Qwen3ForCausalLM(cfg)
    sd: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        if k.endswith("proj.weight"):
            sd[k] = v.to(FP8_DTYPE)
            sd[k.removesuffix("weight") + "weight_scale_inv"] = torch.rand(v.shape[0] // block, v.shape[1] // block) + 0.5
        else:
            sd[k] = v.to(torch.bfloat16)
    if drop_scale:
        del sd[drop_scale]
    if extra:
        sd["model.layers.0.mlp.extra_thing.weight"] = torch.zeros(3)
    folder.mkdir(parents=True)
    save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})
    c = cfg.to_dict()
    c["dtype"] = "bfloat16"
    c["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [block, block], "activation_scheme": "dynamic"}
    if dequantize:
        c["quantization_config"]["dequantize"] = True
    (folder / "config.json").write_text(json.dumps(c))
    return folder


def fp8_deepseek_v3(folder: Path, *, drop_scale_suffix: str | None = None) -> Path:
    """A tiny DeepSeek-V3 (MLA + MoE, experts per-expert on disk as released) in fine-grained FP8. Only
    ``*_proj.weight`` are FP8 (``kv_a_proj_with_mqa`` stays bf16 without a scale: an imperfect release)."""
    save_tiny("deepseek_v3", "DeepseekV3ForCausalLM", folder, hidden_size=64, intermediate_size=64, moe_intermediate_size=32,
              n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1, q_lora_rank=32,
              kv_lora_rank=32, qk_rope_head_dim=16, qk_nope_head_dim=16, v_head_dim=16, num_attention_heads=4,
              num_key_value_heads=4, n_group=1, topk_group=1)
    sd = load_file(folder / "model.safetensors")
    out = {}
    for k, v in sd.items():
        if k.endswith("proj.weight") and v.ndim == 2:
            out[k] = v.to(FP8_DTYPE)
            out[k.removesuffix("weight") + "weight_scale_inv"] = torch.ones(v.shape[0] // 16, v.shape[1] // 16)
        else:
            out[k] = v
    if drop_scale_suffix:
        del out[next(k for k in out if k.endswith(drop_scale_suffix))]
    save_file(out, folder / "model.safetensors", metadata={"format": "pt"})
    c = json.loads((folder / "config.json").read_text())
    c["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [16, 16], "activation_scheme": "dynamic"}
    (folder / "config.json").write_text(json.dumps(c))
    return folder


def oracle(folder: Path, arch: str) -> tuple[set, set, set]:
    _, info = getattr(transformers, arch).from_pretrained(str(folder), output_loading_info=True, ignore_mismatched_sizes=True)
    return set(info["missing_keys"]), set(info["unexpected_keys"]), {(k, tuple(a), tuple(b)) for k, a, b in info["mismatched_keys"]}


@pytest.fixture
def gpu_layout_oracle(monkeypatch):
    """from_pretrained as on a GPU: the FP8 quantizer's environment check (which dequantizes on CPU) is a no-op."""
    from transformers.quantizers.quantizer_finegrained_fp8 import FineGrainedFP8HfQuantizer

    monkeypatch.setattr(FineGrainedFP8HfQuantizer, "validate_environment", lambda self, *a, **k: None)
    return oracle


def ours(folder: Path, **kw):
    rep = report(folder, ModelSpec(), **kw)
    return rep, (set(rep.missing), set(rep.unexpected), set(rep.mismatched))


def assert_consistent(rep) -> None:
    by_status = {s: {k for k, m in rep.model_keys.items() if m.status is s} for s in Status}
    assert by_status[Status.MISSING] == set(rep.missing)
    assert by_status[Status.MISMATCHED] == {k for k, _, _ in rep.mismatched}
    for m in rep.model_keys.values():
        if m.status is Status.MATCHED and How.TIED not in m.how:
            assert m.sources and all(s in rep.index.tensors for s in m.sources), m.key


SCENARIOS = {
    "clean": {},
    "scale_missing": {"drop_scale": "model.layers.0.mlp.down_proj.weight_scale_inv"},
    "extra_tensor": {"extra": True},
    "both": {"drop_scale": "model.layers.1.self_attn.q_proj.weight_scale_inv", "extra": True},
    "block_128": {"block": 128, "hidden": 128},
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fp8_gpu_layout_equals_from_pretrained(name, tmp_path, gpu_layout_oracle):
    folder = fp8_qwen3(tmp_path / name, **SCENARIOS[name])
    rep, got = ours(folder, quantization="quantized")
    assert got == gpu_layout_oracle(folder, "Qwen3ForCausalLM")
    assert_consistent(rep)
    # the scales are model keys of the FP8 layers, loaded exactly: no scale is unexpected
    mk = rep.model_keys["model.layers.0.self_attn.k_proj.weight_scale_inv"]
    assert mk.status is Status.MATCHED and mk.how == (How.EXACT,) and mk.model_dtype == "float32"
    w = rep.model_keys["model.layers.0.self_attn.k_proj.weight"]
    assert w.model_dtype == "float8_e4m3fn" and How.DTYPE_DIFFERS not in w.how
    assert not any(n.endswith("scale_inv") for n in rep.unexpected)
    drop = SCENARIOS[name].get("drop_scale")
    if drop:
        assert rep.model_keys[drop].status is Status.MISSING and drop not in rep.checkpoint_keys
    if SCENARIOS[name].get("extra"):
        assert rep.checkpoint_keys["model.layers.0.mlp.extra_thing.weight"].status is Status.UNEXPECTED


@pytest.mark.parametrize("name", ["clean", "scale_missing", "both"])
def test_fp8_on_this_cpu_equals_from_pretrained(name, tmp_path):
    """Here from_pretrained dequantizes (no GPU): the scales are folded into the weights by a converter."""
    folder = fp8_qwen3(tmp_path / name, **SCENARIOS[name])
    rep, got = ours(folder)  # quantization="auto"
    assert got == oracle(folder, "Qwen3ForCausalLM")
    assert_consistent(rep)
    assert "model.layers.0.mlp.up_proj.weight_scale_inv" not in rep.model_keys  # plain Linear layers
    ck = rep.checkpoint_keys["model.layers.0.mlp.up_proj.weight_scale_inv"]
    assert ck.status is Status.MATCHED and How.CONVERTED in ck.how and ck.targets == ("model.layers.0.mlp.up_proj.weight",)
    w = rep.model_keys["model.layers.0.mlp.up_proj.weight"]
    assert w.model_dtype == "bfloat16" and set(w.sources) == {"model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.up_proj.weight_scale_inv"}
    assert any("dequantizes on load" in n for n in rep.notes)


def test_fp8_dequantize_in_config_equals_from_pretrained(tmp_path, gpu_layout_oracle):
    """``dequantize: true`` in the config: dequantized on any machine, in both modes."""
    folder = fp8_qwen3(tmp_path / "deq", dequantize=True, extra=True)
    want = gpu_layout_oracle(folder, "Qwen3ForCausalLM")
    for mode in ("auto", "quantized"):
        rep, got = ours(folder, quantization=mode)
        assert got == want, mode
        assert not any(k.endswith("scale_inv") for k in rep.model_keys)
        assert any("dequantize=True" in n for n in rep.notes)


def test_fp8_off_is_the_unquantized_match(tmp_path):
    """quantization="off" (the old behaviour): every scale is unexpected, and the note says why."""
    folder = fp8_qwen3(tmp_path / "off")
    rep, (missing, unexpected, _) = ours(folder, quantization="off")
    scales = {k for k in rep.index.tensors if k.endswith("weight_scale_inv")}
    assert unexpected == scales and not missing
    assert any("ignored on request" in n for n in rep.notes)


@pytest.mark.parametrize("drop", [None, "experts.1.down_proj.weight_scale_inv"])
def test_fp8_deepseek_v3_moe_gpu_layout(drop, tmp_path, gpu_layout_oracle):
    """Per-expert FP8 weights + scales fused into ``experts.gate_up_proj`` / ``gate_up_proj_scale_inv`` by the
    model's converters, copied for the scales by the quantizer (``update_weight_conversions``)."""
    folder = fp8_deepseek_v3(tmp_path / "ds", drop_scale_suffix=drop)
    rep, got = ours(folder, quantization="quantized")
    assert got == gpu_layout_oracle(folder, "DeepseekV3ForCausalLM")
    assert_consistent(rep)
    mk = rep.model_keys["model.layers.1.mlp.experts.gate_up_proj_scale_inv"]
    assert mk.status is Status.MATCHED and How.CONVERTED in mk.how and len(mk.sources) == 8  # 4 experts x gate/up
    # an FP8 layer whose weight the release left in bf16 without a scale: its scale is missing
    assert "model.layers.1.self_attn.kv_a_proj_with_mqa.weight_scale_inv" in rep.missing
    if drop:
        assert [k for k, _, _ in rep.mismatched] == ["model.layers.1.mlp.experts.down_proj_scale_inv"]


def test_fp8_deepseek_v3_scale_missing_on_cpu_is_a_conversion_error(tmp_path):
    """Dequantizing a fused expert with one scale short fails in transformers' converter: from_pretrained raises
    after its load report; we report the target missing and say so in a note."""
    folder = fp8_deepseek_v3(tmp_path / "ds", drop_scale_suffix="experts.1.down_proj.weight_scale_inv")
    with pytest.raises(RuntimeError, match="conversion"):
        oracle(folder, "DeepseekV3ForCausalLM")
    rep, (missing, unexpected, mismatched) = ours(folder)
    assert missing == {"model.layers.1.mlp.experts.down_proj"} and not unexpected and not mismatched
    assert any("RuntimeError" in n for n in rep.notes)
    assert any(n.startswith("conversion error: model.layers.1.mlp.experts.down_proj: ValueError: Fp8Dequantize") for n in rep.notes)
    assert all("\n" not in n for n in rep.notes)


def test_fp8_environment_check_failing_does_not_block(tmp_path, monkeypatch):
    """Without accelerate from_pretrained refuses; the report goes on with the pre-quantized layout and says so."""
    import transformers.quantizers.quantizer_finegrained_fp8 as q

    monkeypatch.setattr(q, "is_accelerate_available", lambda: False)
    folder = fp8_qwen3(tmp_path / "noacc", drop_scale="model.layers.0.mlp.down_proj.weight_scale_inv")
    rep, (missing, unexpected, _) = ours(folder)
    assert missing == {"model.layers.0.mlp.down_proj.weight_scale_inv"} and not unexpected
    assert any("would refuse on this machine" in n and "accelerate" in n for n in rep.notes)


@pytest.mark.parametrize(
    "qc, needs",
    [
        ({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}, "bitsandbytes"),
        ({"quant_method": "gptq", "bits": 4, "group_size": 16}, "optimum"),
        ({"quant_method": "awq", "bits": 4, "group_size": 16}, "gptqmodel"),
        ({"quant_method": "compressed-tensors", "format": "float-quantized", "config_groups": {}}, "compressed_tensors"),
    ],
)
def test_quant_method_needing_a_missing_package_falls_back(qc, needs, tmp_path):
    """The quantizer's layers cannot be built without its package: the unquantized match, with a note."""
    import importlib.util

    if importlib.util.find_spec(needs) is not None:
        pytest.skip(f"{needs} is installed: the fallback is not exercised")
    folder = fp8_qwen3(tmp_path / "q")
    c = json.loads((folder / "config.json").read_text())
    c["quantization_config"] = qc
    (folder / "config.json").write_text(json.dumps(c))
    rep, got = ours(folder)
    _, off = ours(folder, quantization="off")
    assert got == off
    assert any("cannot set up its quantizer here" in n and "unquantized model" in n for n in rep.notes)


def test_unknown_quant_method_is_skipped_as_from_pretrained_does(tmp_path):
    folder = fp8_qwen3(tmp_path / "weird")
    c = json.loads((folder / "config.json").read_text())
    c["quantization_config"] = {"quant_method": "weird"}
    (folder / "config.json").write_text(json.dumps(c))
    rep, got = ours(folder)
    assert got == oracle(folder, "Qwen3ForCausalLM")
    assert any("unknown to this transformers version" in n for n in rep.notes)


def test_build_model_swaps_in_fp8_layers(tmp_path):
    folder = fp8_qwen3(tmp_path / "b")
    built = build_model(ModelSpec(config=str(folder)), quantization="quantized")
    kinds = {type(m).__name__ for m in built.module.modules()}
    assert "FP8Linear" in kinds and built.hf_quantizer is not None
    assert next(p for p in built.module.parameters()).device.type == "meta"
    plain = build_model(ModelSpec(config=str(folder)), quantization="off")
    assert "FP8Linear" not in {type(m).__name__ for m in plain.module.modules()} and plain.hf_quantizer is None
    default = build_model(ModelSpec(config=str(folder)))  # other callers (fresh init, export) keep the float model
    assert default.hf_quantizer is None and not default.notes


def test_bad_quantization_mode_is_a_one_line_error(tmp_path):
    from explorer.core.errors import ConfigError

    folder = fp8_qwen3(tmp_path / "m")
    with pytest.raises(ConfigError, match="quantization: expected one of auto, quantized, off"):
        report(folder, ModelSpec(), quantization="gpu")


def test_cli_quantization_flag_shows_the_gpu_layout(tmp_path, capsys):
    """`report --quantization quantized` lists a missing FP8 scale; `off` shows the scales as unexpected."""
    import json

    from explorer.cli import main

    folder = fp8_qwen3(tmp_path / "q", drop_scale="model.layers.0.mlp.down_proj.weight_scale_inv")
    assert main(["report", str(folder), "--quantization", "quantized", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert "model.layers.0.mlp.down_proj.weight_scale_inv" in out["missing"]
    assert not any(k.endswith("weight_scale_inv") for k in out["unexpected"])
    assert main(["report", str(folder), "--quantization", "off", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert any(k.endswith("weight_scale_inv") for k in out["unexpected"])
