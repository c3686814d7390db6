"""Generate huge, realistic sharded safetensors checkpoints whose tensor data are sparse-file holes.

Only the headers are written; each shard is then ``truncate``d to its full size, so a 131 GiB checkpoint
takes a few MB on disk. Tensor names and shapes come from the transformers model itself, built on the meta
device from a real config, so they are exactly what ``from_pretrained`` expects (before any conversion).

    python benchmarks/make_sparse_checkpoints.py llama70b /tmp/llama70b
    python benchmarks/make_sparse_checkpoints.py moe /tmp/moe      # DeepSeek-V3 shapes, per-expert layout
"""
from __future__ import annotations

import argparse
import json
import math
import re
import struct
import sys
from pathlib import Path

SHARD_BYTES = 5 * 1024**3

LLAMA2_70B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "dtype": "bfloat16",
}

# DeepSeek-V3's published config (671B, 61 layers, 256 routed experts + 1 shared, first 3 layers dense)
DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "vocab_size": 129280,
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "num_hidden_layers": 61,
    "num_attention_heads": 128,
    "num_key_value_heads": 128,
    "n_shared_experts": 1,
    "n_routed_experts": 256,
    "routed_scaling_factor": 2.5,
    "kv_lora_rank": 512,
    "q_lora_rank": 1536,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "qk_nope_head_dim": 128,
    "n_group": 8,
    "topk_group": 4,
    "num_experts_per_tok": 8,
    "first_k_dense_replace": 3,
    "norm_topk_prob": True,
    "max_position_embeddings": 163840,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "dtype": "bfloat16",
}

_DTYPE_CODE = {"bfloat16": "BF16", "float16": "F16", "float32": "F32", "int64": "I64", "int32": "I32"}
_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "I64": 8, "I32": 4}


def model_tensors(config: dict) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of every persistent tensor of the config's architecture, built on meta."""
    import torch
    import transformers
    from transformers.utils.generic import ContextManagers

    cfg = transformers.AutoConfig.for_model(**config)
    cls = getattr(transformers, config["architectures"][0])
    with ContextManagers(cls.get_init_context(torch.bfloat16, False, False, False)):
        model = cls(cfg)
    return [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]


def unfuse_experts(tensors: list[tuple[str, tuple[int, ...], str]]) -> list[tuple[str, tuple[int, ...], str]]:
    """Fused ``mlp.experts.gate_up_proj [E, 2I, H]`` / ``down_proj [E, H, I]`` -> the per-expert on-disk layout
    (``mlp.experts.N.gate_proj.weight [I, H]`` ...), which transformers fuses back on load."""
    out = []
    for name, shape, dt in tensors:
        if re.search(r"mlp\.experts\.gate_up_proj$", name):
            base = name.removesuffix("gate_up_proj")
            e, two_i, h = shape
            for n in range(e):
                out.append((f"{base}{n}.gate_proj.weight", (two_i // 2, h), dt))
                out.append((f"{base}{n}.up_proj.weight", (two_i // 2, h), dt))
        elif re.search(r"mlp\.experts\.down_proj$", name):
            base = name.removesuffix("down_proj")
            e, h, i = shape
            for n in range(e):
                out.append((f"{base}{n}.down_proj.weight", (h, i), dt))
        else:
            out.append((name, shape, dt))
    return out


def write_sparse_sharded(folder: Path, config: dict, tensors: list[tuple[str, tuple[int, ...], str]]) -> dict:
    """Write config.json, headers-only shards (data = holes) and model.safetensors.index.json."""
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[list[tuple[str, tuple[int, ...], str]]] = [[]]
    size = 0
    for t in tensors:
        nb = math.prod(t[1]) * _BYTES[_DTYPE_CODE[t[2]]]
        if shards[-1] and size + nb > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += nb
    n = len(shards)
    weight_map: dict[str, str] = {}
    total = 0
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{n:05d}.safetensors"
        header: dict = {"__metadata__": {"format": "pt"}}
        off = 0
        for name, shape, dt in shard:
            code = _DTYPE_CODE[dt]
            nb = math.prod(shape) * _BYTES[code]
            header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [off, off + nb]}
            off += nb
            weight_map[name] = fname
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(folder / fname, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            f.truncate(8 + len(raw) + off)  # the data region is a hole: no disk blocks
        total += off
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1)
    )
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return {"files": n, "tensors": len(tensors), "apparent_bytes": total}


def make_llama70b(folder: Path) -> dict:
    return write_sparse_sharded(folder, LLAMA2_70B, model_tensors(LLAMA2_70B))


def mtp_layer(tensors: list[tuple[str, tuple[int, ...], str]], config: dict) -> list[tuple[str, tuple[int, ...], str]]:
    """DeepSeek-V3 ships a multi-token-prediction layer after the last one (``model.layers.61``): a copy of the
    last decoder layer plus its own norms/projection. transformers drops it by its ignore rule."""
    last, mtp = config["num_hidden_layers"] - 1, config["num_hidden_layers"]
    h, v = config["hidden_size"], config["vocab_size"]
    pre = f"model.layers.{last}."
    out = [(f"model.layers.{mtp}." + n[len(pre):], s, d) for n, s, d in tensors if n.startswith(pre)]
    extra = {"enorm.weight": (h,), "hnorm.weight": (h,), "eh_proj.weight": (h, 2 * h), "embed_tokens.weight": (v, h),
             "shared_head.norm.weight": (h,), "shared_head.head.weight": (v, h)}
    return out + [(f"model.layers.{mtp}.{n}", s, "bfloat16") for n, s in extra.items()]


def make_moe(folder: Path) -> dict:
    tensors = unfuse_experts(model_tensors(DEEPSEEK_V3))
    return write_sparse_sharded(folder, DEEPSEEK_V3, tensors + mtp_layer(tensors, DEEPSEEK_V3))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["llama70b", "moe"])
    p.add_argument("folder", type=Path)
    a = p.parse_args(argv)
    info = (make_llama70b if a.kind == "llama70b" else make_moe)(a.folder)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
