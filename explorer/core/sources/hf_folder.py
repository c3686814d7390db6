"""A Hugging Face model folder: which weights file ``from_pretrained`` would pick in it (same priority, and a
``transformers_weights`` entry in config.json followed only inside the folder).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError
from ..fmt import safe_text
from ..fsio import load_json
from .index import name_inside, quoted

# Priority used by from_pretrained for a local directory.
HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def resolve_weights_in_dir(folder: Path) -> Path:
    """The weights file ``from_pretrained`` would pick in a local directory (same priority).

    A ``transformers_weights`` entry in config.json is followed only inside the folder (transformers refuses
    anything else, and so do we, naming the config and the entry)."""
    cfg = folder / "config.json"
    tw = None
    if cfg.is_file():
        try:
            raw = load_json(cfg, what="config.json", error=CheckpointError)
        except CheckpointError:
            raw = None  # an unreadable config is reported by whoever needs the model; the weights still open
        tw = raw.get("transformers_weights") if isinstance(raw, dict) else None
    if tw is not None:
        if not isinstance(tw, str) or not name_inside(folder, tw):
            raise CheckpointError(
                f"{cfg}: transformers_weights {quoted(tw)} must name a file inside {folder} "
                "(transformers refuses it too); refusing to read outside the folder"
            )
        if not (tw.endswith((".safetensors", ".safetensors.index.json")) or tw == "adapter_model.bin"):
            raise CheckpointError(
                f"{cfg}: transformers_weights {quoted(tw)} is neither a *.safetensors file nor a "
                "*.safetensors.index.json index (from_pretrained refuses it)"
            )
        if not (folder / tw).is_file():
            raise CheckpointError(f"{cfg}: transformers_weights names {quoted(tw)}, which is not a file in {folder}")
        return folder / tw
    for fname in HF_WEIGHT_FILES:
        if (folder / fname).is_file():
            return folder / fname
    candidates = sorted(
        q for q in folder.iterdir() if q.is_file() and (q.name.endswith(_WEIGHT_SUFFIXES) or q.name.endswith(".index.json"))
    )
    indexes = [q for q in candidates if q.name.endswith(".index.json")]
    if len(indexes) == 1:
        return indexes[0]
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(safe_text(q.name) for q in candidates[:5]) or "none"
    raise CheckpointError(
        f"{folder}: no weights found: expected one of {', '.join(HF_WEIGHT_FILES)} (weight files present: {found})"
    )
