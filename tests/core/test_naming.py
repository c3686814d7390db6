"""torchtitan's Llama names in a DCP checkpoint: detected, the key mapping suggested and verified by the match, and
accepted by transformers' own from_pretrained(key_mapping=...)."""
from __future__ import annotations

import re

import pytest
import torch

from explorer.core.matching import report
from explorer.core.model import ModelSpec
from explorer.core.naming import TORCHTITAN_LLAMA, TORCHTITAN_ROPE_NOTE
from tests.dcp_helpers import save_no_dist, tiny_llama

HF_TO_TITAN_OLD = [  # torchtitan < 0.3 (and torchtitan's from_hf_map with the older attention names)
    (r"^model\.embed_tokens\.", "tok_embeddings."), (r"^model\.norm\.", "norm."), (r"^lm_head\.", "output."),
    (r"^model\.layers\.", "layers."), (r"\.self_attn\.q_proj\.", ".attention.wq."), (r"\.self_attn\.k_proj\.", ".attention.wk."),
    (r"\.self_attn\.v_proj\.", ".attention.wv."), (r"\.self_attn\.o_proj\.", ".attention.wo."),
    (r"\.mlp\.gate_proj\.", ".feed_forward.w1."), (r"\.mlp\.down_proj\.", ".feed_forward.w2."),
    (r"\.mlp\.up_proj\.", ".feed_forward.w3."), (r"\.input_layernorm\.", ".attention_norm."),
    (r"\.post_attention_layernorm\.", ".ffn_norm."),
]


def _titan(sd, new_style: bool):
    out = {}
    for k, v in sd.items():
        for a, b in HF_TO_TITAN_OLD:
            if new_style and b == "output.":
                b = "lm_head."
            if new_style and b.startswith(".attention.w") and b != ".attention.wo.":
                b = b.replace(".attention.", ".attention.qkv_linear.")
            k = re.sub(a, b, k)
        out[k] = v
    return out


@pytest.mark.parametrize("new_style", [False, True])
def test_torchtitan_dcp_gets_a_verified_mapping(tmp_path, new_style):
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    m = tiny_llama()
    sd = m.state_dict()
    titan = _titan(sd, new_style)
    assert "layers.0.attention.wo.weight" in titan and "tok_embeddings.weight" in titan
    ck = save_no_dist(tmp_path / "ck", titan)
    m.config.save_pretrained(tmp_path / "cfg")
    rep = report(ck, ModelSpec(config=str(tmp_path / "cfg")))
    assert not rep.is_clean
    assert dict(rep.suggested_key_mapping) == TORCHTITAN_LLAMA
    assert rep.suggestion_effect == {"matched": len(sd), "missing": 0, "unexpected": 0, "mismatched": 0}
    assert TORCHTITAN_ROPE_NOTE in rep.notes
    fixed = report(ck, ModelSpec(config=str(tmp_path / "cfg")), auto_fix=True)
    assert fixed.is_clean
    # the oracle: transformers' own from_pretrained takes the same mapping and loads everything
    d = tmp_path / "st"
    d.mkdir()
    save_file({k: v.contiguous() for k, v in titan.items()}, d / "model.safetensors")
    m.config.save_pretrained(d)
    loaded, info = LlamaForCausalLM.from_pretrained(d, key_mapping=dict(rep.suggested_key_mapping), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert all(torch.equal(v, sd[k]) for k, v in loaded.state_dict().items())


def test_hf_names_get_no_torchtitan_suggestion(tmp_path):
    m = tiny_llama()
    ck = save_no_dist(tmp_path / "ck", m.state_dict())
    m.config.save_pretrained(tmp_path / "cfg")
    rep = report(ck, ModelSpec(config=str(tmp_path / "cfg")))
    assert rep.is_clean and rep.suggested_key_mapping is None and TORCHTITAN_ROPE_NOTE not in rep.notes
