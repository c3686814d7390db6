"""The built-in demo: a tiny real transformers checkpoint + config that shows every loading status.

Built offline in about a second from ``resources/demo_recipe.json`` (a tiny BERT, "trained" by a seeded
perturbation so that the one tensor left at its initialisation stands out) and cached under
``~/.cache/ckpt-explorer/demo/<hash>`` (``CKPT_EXPLORER_CACHE`` overrides the root).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import resources
from .errors import ExplorerError
from .fsio import cache_root


@dataclass(frozen=True)
class Demo:
    folder: Path  # holds model.safetensors + config.json
    arch: str  # the head class to compare against
    notes: dict[str, str]  # on-disk or model key -> what it demonstrates


def load_recipe() -> dict[str, Any]:
    return resources.read_json(resources.DEMO_RECIPE)


def demo_root() -> Path:
    return cache_root() / "demo"


def build_demo(*, cache: Path | None = None, force: bool = False) -> Demo:
    """The demo checkpoint folder (built on first use, then cached). Raises ExplorerError if it cannot be built."""
    import transformers

    recipe = load_recipe()
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode() + transformers.__version__.encode()).hexdigest()[:12]
    folder = (cache or demo_root()) / f"tiny-bert-{digest}"
    notes = {e["key"] if e["op"] != "rename" else e["to"]: e["why"] for e in recipe["edits"]}
    if not force and (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
        return Demo(folder, recipe["target_arch"], notes)
    from .fsio import fsync_path

    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
    except OSError as e:
        raise ExplorerError(f"{folder.parent}: cannot build the demo checkpoint: {e.strerror or e}") from e
    try:
        _write(recipe, tmp)
        for f in tmp.iterdir():
            fsync_path(f)
        fsync_path(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not ((folder / "model.safetensors").is_file() and (folder / "config.json").is_file()):
                raise
            # another process built the same demo meanwhile: use theirs
        fsync_path(folder.parent)
    except OSError as e:
        raise ExplorerError(f"{folder}: cannot build the demo checkpoint: {e.strerror or e}") from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Demo(folder, recipe["target_arch"], notes)


def _write(recipe: dict[str, Any], out: Path) -> None:
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import AutoConfig

    cfg = AutoConfig.for_model(recipe["model_type"], **recipe["config"])
    cfg.architectures = [recipe["target_arch"]]
    torch.manual_seed(recipe["seed"])
    model = getattr(transformers, recipe["target_arch"])(cfg)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    edits = recipe["edits"]
    keep = {e["key"] for e in edits if e["op"] == "keep_init"}
    g = torch.Generator().manual_seed(recipe["seed"] + 1)
    for k, v in sd.items():
        if v.is_floating_point() and k not in keep:
            sd[k] = _trained(v, g)
    for e in edits:
        op, k = e["op"], e["key"]
        if op == "drop":
            sd.pop(k, None)
        elif op == "resize":
            sd[k] = torch.randn(e["shape"], generator=g) * 0.05
        elif op == "rename":
            sd[e["to"]] = sd.pop(k)
        elif op == "add":
            sd[k] = torch.randn(e["shape"], generator=g) * 0.05
        elif op == "add_positions":
            sd[k] = torch.arange(e["shape"][-1], dtype=torch.int64).reshape(e["shape"])
        elif op == "dtype":
            sd[k] = sd[k].to(getattr(torch, e["dtype"]))
    sd = {k: v for k, v in sd.items() if not k.endswith("position_ids") or k in {e["key"] for e in edits}}
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg.to_json_file(str(out / "config.json"))


def _trained(v: Any, g: Any) -> Any:
    """A seeded stand-in for training: heavier tails and a low-rank component, unlike any init distribution."""
    import torch

    if v.dim() == 2 and min(v.shape) > 1:
        u = torch.randn(v.shape[0], 2, generator=g)
        w = torch.randn(2, v.shape[1], generator=g)
        noise = torch.distributions.StudentT(3.0).sample(v.shape) * 0.01
        return (v * 1.3 + 0.03 * (u @ w) / 2 + noise).to(v.dtype)
    if v.dim() == 1:
        return (v + torch.randn(v.shape, generator=g) * 0.05).to(v.dtype)
    return (v + torch.randn(v.shape, generator=g) * 0.01).to(v.dtype)
