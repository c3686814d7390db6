"""Training-time surgery on a live model: :func:`apply_plan` (freeze, re-initialise, optimizer parameter groups) and
:func:`reinit_keys` (a key's fresh values from the model's own init, the same values export and init-check use).
The plan itself (data, rules, files) is :mod:`explorer.core.plan`.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Sequence

from .errors import PlanError
from .plan import Action, Entry, Plan

if TYPE_CHECKING:
    from torch import nn


def apply_plan(
    model: nn.Module,
    plan: Plan,
    *,
    reinit: bool = False,
    lr: float | None = None,
    seed: int | None = None,
) -> list[dict[str, Any]]:
    """Freeze, optionally re-initialise, and group parameters for an optimizer.

    Sets ``requires_grad=False`` on frozen parameters; with ``reinit=True`` re-initialises the plan's ``reinit``
    keys with the model's own init (transformers ``_init_weights`` on the owning module, ``reset_parameters``
    for plain modules; ``seed`` makes it reproducible). Returns parameter groups, one per LR scale, each
    ``{"params", "param_names", "lr_scale"}`` plus ``"lr": lr * lr_scale`` when ``lr`` is given; frozen
    parameters are in no group. Raises PlanError when the plan names keys (or rules select nothing) the model lacks.
    """
    import torch

    sd_keys = list(model.state_dict(keep_vars=True).keys())
    key_set = set(sd_keys)
    named = list(model.named_parameters(remove_duplicate=False))
    keys = list(dict.fromkeys([n for n, _ in named] + sd_keys))
    lacking = [k for k in plan.default_reinit if k not in key_set]
    lacking += [r.pattern for r in plan.rules if r.match == "key" and not r.select(keys)]
    if lacking:
        more = f" (+{len(lacking) - 5} more)" if len(lacking) > 5 else ""
        raise PlanError(
            f"plan does not fit {type(model).__name__}: the model has no key {', '.join(map(repr, lacking[:5]))}{more}"
        )
    hits = plan.rule_hits(keys)
    empty = [plan.rules[i].describe() for i, h in enumerate(hits) if h == 0]
    if empty:
        raise PlanError(f"plan does not fit {type(model).__name__}: rule {empty[0]} selects no key of the model")
    entries = plan.resolve_keys(keys)
    if reinit:
        targets = [k for k, e in entries.items() if e.action is Action.REINIT]
        reinit_keys(model, targets, seed=seed)

    by_id: dict[int, tuple[str, torch.nn.Parameter, list[Entry]]] = {}
    for name, p in named:
        slot = by_id.setdefault(id(p), (name, p, []))
        slot[2].append(entries[name])
    groups: dict[float, dict[str, Any]] = {}
    for name, p, ents in by_id.values():
        if any(not e.trainable for e in ents):  # a tied parameter frozen under any of its names is frozen
            p.requires_grad_(False)
            continue
        p.requires_grad_(True)
        scale = next((e.lr_scale for e in ents if e.lr_scale is not None), None)
        scale = 1.0 if scale is None else scale
        g = groups.get(scale)
        if g is None:
            g = groups[scale] = {"params": [], "param_names": [], "lr_scale": scale}
            if lr is not None:
                g["lr"] = lr * scale
        g["params"].append(p)
        g["param_names"].append(name)
    return sorted(groups.values(), key=lambda g: -g["lr_scale"])


def owning_module(model: nn.Module, key: str) -> tuple[str, nn.Module]:
    path = key.rsplit(".", 1)[0] if "." in key else ""
    return path, model.get_submodule(path)


def init_module(model: nn.Module, path: str, module: nn.Module) -> None:
    """Initialise one module's own parameters the way the model does (``_init_weights`` of the nearest
    PreTrainedModel owning it; else ``reset_parameters``)."""
    import torch

    owner = None
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        PreTrainedModel = ()  # type: ignore[assignment]
    parts = path.split(".") if path else []
    for i in range(len(parts), -1, -1):
        m = model.get_submodule(".".join(parts[:i]))
        if PreTrainedModel and isinstance(m, PreTrainedModel):
            owner = m
            break
    with torch.no_grad():
        if owner is not None:
            for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
                if getattr(t, "_is_hf_initialized", False):
                    t._is_hf_initialized = False
            owner._init_weights(module)
        elif hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            raise PlanError(f"cannot re-initialise {path or type(model).__name__}: {type(module).__name__} has no reset_parameters()")


def key_seed(seed: int, name: str) -> int:
    """A per-module seed so a tensor's fresh init does not depend on which other keys are re-initialised."""
    return (seed * 1_000_003 + int.from_bytes(hashlib.sha256(name.encode()).digest()[:6], "little")) % (2**63)


def reinit_keys(model: nn.Module, keys: Sequence[str], *, seed: int | None = None) -> None:
    """Re-initialise ``keys`` of a live model in place with the model's own init.

    Transformers models get exactly the values that export, init-check and the GUI overlay use for the same
    seed (:class:`explorer.core.fresh.FreshInit` on a meta twin built from ``model.config``, one module at a time);
    plain modules run ``reset_parameters`` of each owning module. Raises PlanError for a tensor no init sets.
    """
    import torch

    twin = _meta_twin(model)
    if twin is None:
        done: set[str] = set()
        for k in keys:
            path, mod = owning_module(model, k)
            if path in done:
                continue
            done.add(path)
            if seed is None:
                init_module(model, path, mod)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(key_seed(seed, path))
                    init_module(model, path, mod)
        return
    from .fresh import FreshInit

    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
    fresh = FreshInit(twin, seed=seed, cache_modules=1)
    live = dict(model.named_parameters(remove_duplicate=False))
    live.update(model.named_buffers(remove_duplicate=False))
    with torch.no_grad():
        for k in sorted(keys, key=lambda k: k.rpartition(".")[0]):  # one materialisation per module
            t = fresh.tensor(k)
            if t is None:
                raise PlanError(f"{k}: the model's initialisation does not set this tensor; it cannot be re-initialised")
            live[k].copy_(t)


def _meta_twin(model: nn.Module):  # -> BuiltModel | None
    """The same transformers class and config on the meta device (None for plain modules)."""
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        return None
    if not isinstance(model, PreTrainedModel):
        return None
    import torch

    from .model import BuiltModel, ModelSpec, instantiate_meta

    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    meta = instantiate_meta(type(model), model.config, dtype, source=type(model).__name__)
    return BuiltModel(meta, ModelSpec(), dtype, meta.config, type(model).__name__)
