"""ΔW of LoRA adapters: per module ‖ΔW‖_F, ‖ΔW‖/‖W‖ and the singular values of ΔW = scaling·B·A from r×r
products (never the full ΔW), reading only A and B and streaming the base weight for its norm.
"""
from __future__ import annotations

import math
import re
from typing import Iterator

from .adapter import AdaptedModule, AdapterReport, DeltaStats, build_base
from .checkpoint import TensorReader

def lora_pair(m: AdaptedModule, adapter_name: str = "default") -> tuple[str, str] | None:
    """On-disk names of (A, B) of a LoRA module (Linear / Conv / Embedding), via the sources peft mapped."""
    a = b = None
    by_key = dict(zip((k for k in m.keys), m.sources)) if len(m.keys) == len(m.sources) else {}
    for k, s in by_key.items():
        if re.search(rf"\.lora_(embedding_)?A\.{re.escape(adapter_name)}(\.weight)?$", k):
            a = s
        elif re.search(rf"\.lora_(embedding_)?B\.{re.escape(adapter_name)}(\.weight)?$", k):
            b = s
    return (a, b) if a and b else None


def delta_stats(rep: AdapterReport, *, adapter_name: str = "default") -> Iterator[DeltaStats]:
    """Per LoRA module: ‖ΔW‖_F, ‖ΔW‖/‖W‖ (base weights present) and the singular values of ΔW = scaling·B·A,
    from r×r products: ‖BA‖_F² = trace((BᵀB)(AAᵀ)); BA = Q_B (R_B R_Aᵀ) Q_Aᵀ, so σ(BA) = σ(R_B R_Aᵀ).
    Reads each module's A and B (small) and streams the base weight in chunks for its norm."""
    import torch

    base_reader = None
    base_sources: dict[str, str] = {}
    if rep.base.index is not None:
        brep = rep.base_report
        if brep is None:
            from .matching import match as match_base

            brep = match_base(build_base(rep.adapter, rep.base, arch=rep.arch), rep.base.index, tree=rep.base_tree)
        base_sources = {k: mk.sources[0] for k, mk in brep.model_keys.items() if mk.sources and mk.status.value == "matched"}
        base_reader = TensorReader(rep.base.index)
    mm = {k for k, _, _ in rep.mismatched}
    try:
        with TensorReader(rep.adapter.index) as reader:
            for m in rep.adapted:
                if m.peft_type not in ("LORA", "ADALORA") or m.scaling is None:
                    continue
                pair = lora_pair(m, adapter_name)
                if pair is None or any(k in mm for k in m.keys):
                    continue
                A = reader.tensor(pair[0]).to(torch.float64)
                B = reader.tensor(pair[1]).to(torch.float64)
                A2 = A.reshape(A.shape[0], -1)
                B2 = B.reshape(B.shape[0], -1)
                if B2.shape[1] != A2.shape[0]:  # embedding layout (A: r×num, B: dim×r) is the same product
                    continue
                s = float(m.scaling)
                gram = (B2.T @ B2) @ (A2 @ A2.T)
                norm = abs(s) * math.sqrt(max(float(torch.trace(gram)), 0.0))
                untrained = not bool(torch.any(B2 != 0))
                if untrained:
                    sv: tuple[float, ...] = tuple(0.0 for _ in range(A2.shape[0]))
                else:
                    _, rb = torch.linalg.qr(B2)
                    _, ra = torch.linalg.qr(A2.T)
                    sv = tuple(float(abs(s) * x) for x in torch.linalg.svdvals(rb @ ra.T))
                base_norm = None
                if base_reader is not None and m.base_weight and m.base_weight in base_sources:
                    acc = 0.0
                    for chunk in base_reader.iter_chunks(base_sources[m.base_weight]):
                        c = chunk.to(torch.float64)
                        acc += float(torch.dot(c, c))
                    base_norm = math.sqrt(acc)
                yield DeltaStats(m.path, int(A2.shape[0]), s, norm, base_norm, sv, untrained)
    finally:
        if base_reader is not None:
            base_reader.close()
