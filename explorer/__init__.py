"""Checkpoint Explorer: see what a checkpoint will load into a model before you train.

The public Python API (imports are lazy so ``import explorer`` stays cheap)::

    from explorer import open_checkpoint, report, ModelSpec
    rep = report("ckpt/", ModelSpec(config="ckpt/", arch="BertForSequenceClassification"))
    rep.missing, rep.unexpected, rep.mismatched

    from explorer import load_plan, apply_plan
    groups = apply_plan(model, load_plan("plan.json"))
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "open_checkpoint": ("explorer.core.checkpoint", "open_checkpoint"),
    "TensorReader": ("explorer.core.checkpoint", "TensorReader"),
    "CheckpointIndex": ("explorer.core.checkpoint", "CheckpointIndex"),
    "ModelSpec": ("explorer.core.model", "ModelSpec"),
    "build_model": ("explorer.core.model", "build_model"),
    "report": ("explorer.core.matching", "report"),
    "Report": ("explorer.core.matching", "Report"),
    "Status": ("explorer.core.matching", "Status"),
    "ExplorerError": ("explorer.core.errors", "ExplorerError"),
    # stats / init / diff
    "tensor_stats": ("explorer.core.stats", "tensor_stats"),
    "init_check": ("explorer.core.stats", "init_check"),
    "diff_checkpoints": ("explorer.core.stats", "diff_checkpoints"),
    # plans / export
    "Plan": ("explorer.core.plan", "Plan"),
    "load_plan": ("explorer.core.plan", "load_plan"),
    "apply_plan": ("explorer.core.plan", "apply_plan"),
    "export_checkpoint": ("explorer.core.export", "export_checkpoint"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        mod, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'explorer' has no attribute {name!r}") from None
    import importlib

    return getattr(importlib.import_module(mod), attr)
