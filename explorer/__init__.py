"""Checkpoint Explorer: see what a checkpoint will load into a model before you train.

The public Python API (imports are lazy so ``import explorer`` stays cheap)::

    from explorer import open_checkpoint, report, ModelSpec
    rep = report("ckpt/", ModelSpec(config="ckpt/", arch="BertForSequenceClassification"))
    rep.missing, rep.unexpected, rep.mismatched

    from explorer import load_plan, apply_plan
    groups = apply_plan(model, load_plan("plan.json"))
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "__version__": ("explorer.core.version", "__version__"),  # from pyproject.toml / the installed metadata
    "open_checkpoint": ("explorer.core.checkpoint", "open_checkpoint"),
    "TensorReader": ("explorer.core.checkpoint", "TensorReader"),
    "CheckpointIndex": ("explorer.core.checkpoint", "CheckpointIndex"),
    "ModelSpec": ("explorer.core.model", "ModelSpec"),
    "build_model": ("explorer.core.model", "build_model"),
    "module_tree": ("explorer.core.model", "module_tree"),
    "report": ("explorer.core.matching", "report"),
    "Report": ("explorer.core.report", "Report"),
    "Status": ("explorer.core.report", "Status"),
    # errors
    "ExplorerError": ("explorer.core.errors", "ExplorerError"),
    "CheckpointError": ("explorer.core.errors", "CheckpointError"),
    "ConfigError": ("explorer.core.errors", "ConfigError"),
    "PlanError": ("explorer.core.errors", "PlanError"),
    "ExportError": ("explorer.core.errors", "ExportError"),
    "Cancelled": ("explorer.core.errors", "Cancelled"),
    # stats / init / diff
    "tensor_stats": ("explorer.core.stats", "tensor_stats"),
    "stats_many": ("explorer.core.stats", "stats_many"),
    "init_check": ("explorer.core.fresh", "init_check"),
    "fresh_tensor": ("explorer.core.fresh", "fresh_tensor"),
    "diff_checkpoints": ("explorer.core.diff", "diff_checkpoints"),
    # plans / export
    "Plan": ("explorer.core.plan", "Plan"),
    "load_plan": ("explorer.core.plan", "load_plan"),
    "save_plan": ("explorer.core.plan", "save_plan"),
    "apply_plan": ("explorer.core.surgery", "apply_plan"),
    "export_checkpoint": ("explorer.core.export", "export_checkpoint"),
}

__all__ = sorted(k for k in _EXPORTS if not k.startswith("_"))

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names resolve lazily below
    from .core.checkpoint import CheckpointIndex, TensorReader, open_checkpoint
    from .core.diff import diff_checkpoints
    from .core.errors import Cancelled, CheckpointError, ConfigError, ExplorerError, ExportError, PlanError
    from .core.export import export_checkpoint
    from .core.fresh import fresh_tensor, init_check
    from .core.matching import report
    from .core.model import ModelSpec, build_model, module_tree
    from .core.plan import Plan, load_plan, save_plan
    from .core.surgery import apply_plan
    from .core.version import __version__
    from .core.report import Report, Status
    from .core.stats import stats_many, tensor_stats


def __getattr__(name: str) -> Any:
    try:
        mod, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'explorer' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(mod), attr)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
