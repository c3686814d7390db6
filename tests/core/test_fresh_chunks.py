"""A big tensor's fresh init runs in pieces that cancel can stop between (issue 10 finding 6: the 70B's 128256×8192
embedding was one uninterruptible torch call), with exactly the values of transformers' own init; and one expert
of a fused MoE tensor is compared with a fresh init of one expert, never the fused whole."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import torch

from explorer.core import fresh
from explorer.core.fresh import FreshInit, init_check
from explorer.core.jobs import Cancelled
from explorer.core.model import ModelSpec, build_model

LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 1003, "hidden_size": 40,
         "intermediate_size": 56, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
         "max_position_embeddings": 64, "tie_word_embeddings": False, "pad_token_id": 0}
EMB, GATE = "model.embed_tokens.weight", "model.layers.0.mlp.gate_proj.weight"


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny_llama")
    (d / "config.json").write_text(json.dumps(LLAMA))
    return d


def transformers_own(llama: Path, key: str, seed: int) -> torch.Tensor:
    """The oracle: the module built by torch (its constructor's reset_parameters) and initialised by the real
    model's own ``_init_weights``, in one call each, seeded as FreshInit seeds the module."""
    from transformers import AutoConfig, LlamaForCausalLM

    cfg = AutoConfig.from_pretrained(llama)
    torch.manual_seed(0)
    real = LlamaForCausalLM(cfg)  # a real model: its _init_weights, nothing patched
    path = key.rpartition(".")[0]
    template = real.get_submodule(path)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed((seed * 1_000_003 + zlib.crc32(path.encode())) & 0x7FFF_FFFF)
        if isinstance(template, torch.nn.Embedding):
            mod = torch.nn.Embedding(template.num_embeddings, template.embedding_dim, template.padding_idx)
        else:
            mod = torch.nn.Linear(template.in_features, template.out_features, bias=template.bias is not None)
        real._init_weights(mod)
    return mod.weight.detach()


@pytest.mark.parametrize("chunk", [16 * 61, 1 << 22])  # 40,120 values: 42 pieces (the last with the 8-value tail); one
def test_pieces_give_transformers_own_values(llama, monkeypatch, chunk):
    monkeypatch.setattr(fresh, "INIT_CHUNK", chunk)
    fi = FreshInit(build_model(ModelSpec(config=str(llama))), seed=3)
    for key in (EMB, GATE):  # normal_ twice (nn.Embedding, then _init_weights); kaiming_uniform_ then normal_
        polls: list[int] = []
        got = fi.tensor(key, cancel=lambda: bool(polls.append(1)))
        assert torch.equal(got, transformers_own(llama, key, seed=3)), key
        pieces = -(-got.numel() // chunk)
        # the pre-fill and both random inits went piece by piece (one poll per piece), or in one call each
        assert len(polls) >= 3 * pieces if pieces > 1 else len(polls) <= 4, (key, len(polls), pieces)


def test_cancel_stops_inside_one_tensors_init(llama, monkeypatch):
    monkeypatch.setattr(fresh, "INIT_CHUNK", 16 * 61)
    built = build_model(ModelSpec(config=str(llama)))
    polls = []

    def cancel() -> bool:
        polls.append(1)
        return len(polls) > 60  # the pre-fill is 42 pieces: this is inside the first normal_ (42 more)

    with pytest.raises(Cancelled):
        FreshInit(built, seed=3).tensor(EMB, cancel=cancel)
    assert len(polls) == 61  # stopped at the first poll after the cancel, inside the init call, not after it
    assert built.module.get_submodule("model.embed_tokens").weight.is_meta  # the shared meta model is restored
    assert torch.equal(FreshInit(built, seed=3).tensor(EMB), transformers_own(llama, EMB, seed=3))  # and works on


def test_one_expert_of_a_fused_tensor_is_checked(tmp_path):
    """DeepSeek-V3 in its per-expert on-disk layout (transformers fuses the experts on load): an expert saved at its
    fresh init looks untrained, a trained one (other scale) does not; each is compared with a fresh init of one
    expert's shape (checked before: skipped, "its fresh init would be the whole fused tensor")."""
    from safetensors.torch import save_file
    from transformers import AutoConfig, DeepseekV3ForCausalLM

    cfg = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "vocab_size": 128,
           "hidden_size": 64, "intermediate_size": 96, "moe_intermediate_size": 48, "num_hidden_layers": 2,
           "num_attention_heads": 2, "num_key_value_heads": 2, "n_shared_experts": 1, "n_routed_experts": 4,
           "n_group": 2, "topk_group": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 1, "kv_lora_rank": 16,
           "q_lora_rank": 16, "qk_rope_head_dim": 8, "v_head_dim": 8, "qk_nope_head_dim": 8,
           "max_position_embeddings": 64, "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    sd = DeepseekV3ForCausalLM(AutoConfig.from_pretrained(tmp_path)).state_dict()
    out = {}
    for k, v in sd.items():
        base = k.removesuffix("gate_up_proj").removesuffix("down_proj")
        if k.endswith("mlp.experts.gate_up_proj"):
            i = v.shape[1] // 2
            for e in range(v.shape[0]):
                out[f"{base}{e}.gate_proj.weight"], out[f"{base}{e}.up_proj.weight"] = v[e, :i].clone(), v[e, i:].clone()
        elif k.endswith("mlp.experts.down_proj"):
            for e in range(v.shape[0]):
                out[f"{base}{e}.down_proj.weight"] = v[e].clone()
        else:
            out[k] = v.clone()
    trained = "model.layers.1.mlp.experts.2.down_proj.weight"
    out[trained] = out[trained] * 3
    save_file(out, str(tmp_path / "model.safetensors"))
    res = {r.name: r for r in init_check(str(tmp_path))}
    experts = {n: r for n, r in res.items() if ".mlp.experts." in n and n.split(".")[5].isdigit()}
    assert len(experts) == 12
    for n, r in experts.items():
        assert r.kind == "random" and r.key.endswith(("experts.gate_up_proj", "experts.down_proj")), (n, r.details)
        assert r.init_like is (n != trained), (n, r.details)
    assert res[trained].ckpt_std == pytest.approx(3 * res[trained].init_std, rel=0.15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.int32, torch.bool])
def test_untouched_sees_a_single_written_value_anywhere(dtype):
    """A tensor counts as not set by the init only when every value is still the sentinel: one written value at
    the start, inside a later (doubled) chunk, or at the very end makes it written, and so does a short tail."""
    n = 3 * (1 << 14) + 17  # past several of the growing chunks, with a ragged tail
    sentinel = fresh._sentinel(torch.empty(0, dtype=dtype))
    base = torch.full((n,), sentinel, dtype=dtype)
    assert fresh._untouched(base, chunk=1 << 13)
    written = True if dtype == torch.bool else 1
    for at in (0, 4095, 4096, 12287, 12288, n // 2, n - 1):
        t = base.clone()
        t[at] = written
        assert not fresh._untouched(t.reshape(-1, 1), chunk=1 << 13), at
    assert not fresh._untouched(torch.empty(0, dtype=dtype))
