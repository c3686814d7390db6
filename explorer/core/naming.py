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
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

if TYPE_CHECKING:
    import torch

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
TORCHTITAN_REASON = "torchtitan naming"
TORCHTITAN_ROPE_NOTE = (
    "the suggested key mapping renames torchtitan's keys to Hugging Face Llama names. torchtitan "
    "keeps the q/k projection rows in Meta's interleaved RoPE order: `ckpt-explorer export CKPT -o OUT --auto-fix` "
    "(or with this --key-mapping) permutes them as torchtitan's Llama3StateDictAdapter.to_hf does; "
    "from_pretrained(key_mapping=...) alone only renames, and the model would compute wrong logits"
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


# --------------------------------------------------------------------------------------------- RoPE layout

_TITAN_QK = re.compile(r"^layers\.\d+\.attention\.(?:qkv_linear\.)?(wq|wk)\.weight$")
_HF_QK = re.compile(r"(?:^|\.)self_attn\.(q_proj|k_proj)\.weight$")


def rope_permutes(renames: Mapping[str, str], config: Mapping[str, Any] | None, *, where: str = "") -> dict[str, int]:
    """The torchtitan q/k weights that a key mapping turns into Hugging Face ``q_proj`` / ``k_proj`` weights, with
    the head count each is permuted over (``num_attention_heads`` for q, ``num_key_value_heads`` for k), as
    torchtitan's ``Llama3StateDictAdapter.to_hf`` permutes them. ``renames``: source name -> written name.
    Raises ValueError when such renames exist but the config does not give the head counts."""
    hits = {src: m.group(1) for src, dst in renames.items() if (m := _TITAN_QK.match(src)) and _HF_QK.search(dst)}
    if not hits:
        return {}
    cfg = dict(config or {})
    cfg = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    heads = cfg.get("num_attention_heads")
    kv = cfg.get("num_key_value_heads") or heads
    if not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in (heads, kv)):
        raise ValueError(f"{where}torchtitan q/k weights renamed to Hugging Face names need the model's head counts "
                         "(num_attention_heads, num_key_value_heads in config.json) to be permuted; pass --config")
    return {src: (heads if w == "wq" else kv) for src, w in hits.items()}


def permute_to_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """torchtitan / Meta interleaved RoPE rows -> Hugging Face's half-split rows (torchtitan's ``_permute``)."""
    dim1, dim2 = w.shape[0], w.shape[1] if w.dim() > 1 else 1
    if w.dim() != 2 or dim1 % (2 * n_heads):
        raise ValueError(f"a q/k weight of shape {list(w.shape)} cannot be split into {n_heads} RoPE heads")
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2).contiguous()


def rope_computed(index: Any, renames: Mapping[str, tuple[str, str]], config: Mapping[str, Any] | None,
                  notes: list[str]) -> dict[str, Callable[[], torch.Tensor]]:
    """For a plan export: ``{model key: () -> permuted tensor}`` for the torchtitan q/k weights among ``renames``
    (source name -> (written name, model key)), read from ``index`` when called. Raises ValueError (see
    :func:`rope_permutes`)."""
    perm = rope_permutes({src: dst for src, (dst, _) in renames.items()}, config, where=f"{index.path}: ")
    if not perm:
        return {}

    def make(src: str, heads: int) -> Callable[[], torch.Tensor]:
        def read() -> torch.Tensor:
            from .checkpoint import TensorReader

            with TensorReader(index) as r:
                return permute_to_hf(r.tensor(src).reshape(index.tensors[src].shape), heads)
        return read

    notes.append(f"{len(perm)} torchtitan q/k weights permuted from Meta's interleaved RoPE rows to Hugging Face's "
                 "layout (as torchtitan's Llama3StateDictAdapter.to_hf)")
    return {renames[src][1]: make(src, h) for src, h in perm.items()}
