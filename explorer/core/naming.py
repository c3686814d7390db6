"""Known foreign namings of checkpoint keys, and the ``key_mapping`` that turns them into Hugging Face names.

torchtitan saves its own Llama-family names (``tok_embeddings.weight``, ``layers.N.attention.wq.weight`` — or
``attention.qkv_linear.wq`` in torchtitan >= 0.3 — ``feed_forward.w1/w2/w3``, ``attention_norm``, ``ffn_norm``,
``norm.weight``, ``output.weight`` / ``lm_head.weight``). torchtitan's own state-dict adapters need its model
configs and imports, so they are not used here: the renames below are exactly its ``Llama3StateDictAdapter``
``from_hf_map``, written as the ``{regex: replacement}`` that ``from_pretrained(key_mapping=...)`` accepts, and
every suggestion is verified by re-running the match.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping

# applied in order, each on the result of the previous (as transformers applies a key_mapping)
TORCHTITAN_LLAMA: dict[str, str] = {
    r"^tok_embeddings\.": "model.embed_tokens.",
    r"^layers\.(\d+)\.attention\.(?:qkv_linear\.)?wq\.": r"model.layers.\1.self_attn.q_proj.",
    r"^layers\.(\d+)\.attention\.(?:qkv_linear\.)?wk\.": r"model.layers.\1.self_attn.k_proj.",
    r"^layers\.(\d+)\.attention\.(?:qkv_linear\.)?wv\.": r"model.layers.\1.self_attn.v_proj.",
    r"^layers\.(\d+)\.attention\.wo\.": r"model.layers.\1.self_attn.o_proj.",
    r"^layers\.(\d+)\.feed_forward\.w1\.": r"model.layers.\1.mlp.gate_proj.",
    r"^layers\.(\d+)\.feed_forward\.w2\.": r"model.layers.\1.mlp.down_proj.",
    r"^layers\.(\d+)\.feed_forward\.w3\.": r"model.layers.\1.mlp.up_proj.",
    r"^layers\.(\d+)\.attention_norm\.": r"model.layers.\1.input_layernorm.",
    r"^layers\.(\d+)\.ffn_norm\.": r"model.layers.\1.post_attention_layernorm.",
    r"^norm\.": "model.norm.",
    r"^output\.": "lm_head.",
}
TORCHTITAN_ROPE_NOTE = (
    "torchtitan naming detected: the suggested key mapping renames its keys to Hugging Face Llama names; note that "
    "torchtitan keeps q/k projection rows in Meta's interleaved RoPE order, which torchtitan's "
    "Llama3StateDictAdapter.to_hf permutes for Hugging Face: a key mapping renames, it does not permute"
)
_TITAN = re.compile(r"^(tok_embeddings\.weight$|layers\.\d+\.(attention\.(qkv_linear\.)?w[qkvo]|feed_forward\.w[123]|attention_norm|ffn_norm)\.)")


def looks_torchtitan(names: Iterable[str]) -> bool:
    """Whether at least a quarter of the keys (and at least two) carry torchtitan's Llama-family names."""
    names = list(names)
    hits = sum(1 for n in names if _TITAN.match(n))
    return hits >= max(2, len(names) // 4)


def suggest_known_naming(names: Iterable[str], findings_before: int,
                         trial: Callable[[Mapping[str, str]], Any]) -> tuple[dict[str, str], dict[str, int], str] | None:
    """A known naming's mapping when it lowers the findings: (mapping, counts after it, note), else None.
    ``trial(mapping)`` re-runs the match with the mapping and returns its report."""
    if not looks_torchtitan(names):
        return None
    rep = trial(TORCHTITAN_LLAMA)
    after = len(rep.missing) + len(rep.unexpected) + len(rep.mismatched)
    if after >= findings_before:
        return None
    c = rep.counts()
    return dict(TORCHTITAN_LLAMA), {k: c[k] for k in ("matched", "missing", "unexpected", "mismatched")}, TORCHTITAN_ROPE_NOTE
