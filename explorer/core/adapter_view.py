"""An adapter as a checkpoint: the window's view, ΔW as a streamed tensor, and peft's init check.

:func:`adapter_view` turns an :class:`~explorer.core.adapter.AdapterReport` into an ordinary
:class:`~explorer.core.report.Report`, so every front-end that shows a checkpoint shows an adapter too: the base's
module tree (with the base weights' own statuses when they are given), each adapted module holding its adapter
parameters under peft's own names (``base_model.model.….lora_A.default.weight``) coloured by what peft's
``load_adapter`` does with them (loaded, missing, mismatched), the adapter tensors peft does not use under
"(not in model)" (unexpected). Its index holds the adapter's tensors and the base's, so statistics read either.

:class:`DeltaReader` is a TensorReader over that index that also serves, per LoRA module, the virtual tensor
``ΔW:<module>`` = scaling·B·A streamed in blocks of rows (never the whole ΔW at once unless it is one block), so
:func:`explorer.core.stats.aggregate_stats` gives its moments and histogram like any tensor's.

:func:`adapter_init_check`: each adapter tensor against a fresh initialisation made by peft's own
``reset_lora_parameters`` (lora_B: zeros; lora_A: kaiming-uniform, or gaussian, as the config says); a module whose
ΔW is still zero (lora_B all zeros) is untrained.
"""
from __future__ import annotations

import dataclasses
import math
import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from .checkpoint import CheckpointIndex, TensorInfo, TensorReader
from .errors import CheckpointError
from .model import ModuleNode, ParamEntry
from .report import CheckpointKey, How, ModelKey, Report, Status

if TYPE_CHECKING:
    import torch

    from .adapter import AdaptedModule, AdapterReport
    from .fresh import InitResult
    from .jobs import Progress

DELTA_PREFIX = "ΔW:"  # virtual tensor names served by DeltaReader
PEFT_PREFIX = "base_model.model."
_ADAPTER_NAME_SEG = re.compile(r"^(?P<head>[^.]+)\.(?P<name>[^.]+)\.(?P<tail>.+)$")


def delta_name(module: str) -> str:
    return DELTA_PREFIX + module


# --------------------------------------------------------------------------------------------- the view


def adapter_view(rep: AdapterReport) -> Report:
    """The adapter as a Report over the base's module tree (see the module docstring). ``missing`` /
    ``unexpected`` / ``mismatched`` are peft's sets for the adapter, plus the base weights' own when they do not load
    clean into the base class."""
    brep = rep.base_report
    a_idx = rep.adapter.index
    tensors: dict[str, TensorInfo] = {}
    files: list[str] = []
    stamps: dict[str, tuple[int, int]] = {}
    if brep is not None:
        tensors.update(brep.index.tensors)
        files += brep.index.files
        stamps.update(brep.index.stamps)
    for n, t in a_idx.tensors.items():
        if n in tensors:
            raise CheckpointError(f"{rep.adapter.weights}: tensor {n!r} is also in the base weights; cannot show both")
        tensors[n] = t
    files += [f for f in a_idx.files if f not in files]
    stamps.update(a_idx.stamps)
    index = CheckpointIndex(rep.adapter.folder, "peft-adapter", tuple(files), tensors, dict(a_idx.metadata),
                            notes=tuple(a_idx.notes), stamps=stamps)

    model_keys: dict[str, ModelKey] = dict(brep.model_keys) if brep is not None else {}
    ck: dict[str, CheckpointKey] = dict(brep.checkpoint_keys) if brep is not None else {}
    info = dict(rep.key_info or {})
    mm = {k: (a, b) for k, a, b in rep.mismatched}
    for k in rep.loaded:
        shape, dt = info.get(k, (tuple(a_idx.tensors[rep.sources[k]].shape), a_idx.tensors[rep.sources[k]].dtype))
        src = rep.sources.get(k)
        sinfo = a_idx.tensors[src] if src else None
        how = (How.EXACT,) if src == k else (How.RENAMED,)
        if sinfo is not None and sinfo.dtype != dt:
            how += (How.DTYPE_DIFFERS,)
        model_keys[k] = ModelKey(k, Status.MATCHED, how, shape, dt, (src,) if src else (), sinfo.shape if sinfo else None,
                                 sinfo.dtype if sinfo else None)
    for k in rep.missing:
        shape, dt = info.get(k, ((), "float32"))
        model_keys[k] = ModelKey(k, Status.MISSING, (), shape, dt, newly_initialized=True)
    by_target = {v: k for k, v in rep.sources.items() if k in model_keys}  # unexpected ones are sources too
    for k, (a, b) in mm.items():
        dt = info.get(k, (b, "float32"))[1]
        src = rep.sources.get(k) or next((n for n, t in a_idx.tensors.items() if n.endswith(_strip_name(k)) and t.shape == a), None)
        model_keys[k] = ModelKey(k, Status.MISMATCHED, (), tuple(b), dt, (src,) if src else (), tuple(a),
                                 a_idx.tensors[src].dtype if src else None, newly_initialized=True)
        if src:
            by_target[src] = k
    unexpected: list[str] = []  # on-disk names, as the tree shows them (peft reports these names too)
    for n, t in a_idx.tensors.items():
        tgt = by_target.get(n)
        if tgt is not None:
            st = model_keys[tgt].status
            ck[n] = CheckpointKey(n, st, model_keys[tgt].how, (tgt,), n, t)
        else:
            ck[n] = CheckpointKey(n, Status.UNEXPECTED, (), (), n, t)
            unexpected.append(n)
    tree = _tree_with_adapter(rep.base_tree, [k for k in model_keys if k.startswith(PEFT_PREFIX)], model_keys,
                              keep_base=brep is not None)
    missing = tuple(rep.missing) + (tuple(brep.missing) if brep is not None else ())
    mism = tuple(rep.mismatched) + (tuple(brep.mismatched) if brep is not None else ())
    unexp = tuple(unexpected) + (tuple(brep.unexpected) if brep is not None else ())
    from .model import ModelSpec

    notes = tuple(rep.notes) + (() if brep is not None else (
        "no base weights (--config): the base's own tensors are not shown; the adapter is matched header-only",))
    return Report(index, ModelSpec(config=rep.base.config, arch=rep.arch), tree, model_keys, ck, missing, unexp, mism,
                  load_dtype=rep.load_dtype, arch=rep.arch, notes=tuple(dict.fromkeys(notes)))


def _strip_name(key: str) -> str:
    """``…query.lora_A.default.weight`` -> ``query.lora_A.weight`` (how peft saves it without the adapter name)."""
    k = key.removeprefix(PEFT_PREFIX)
    return re.sub(r"\.(lora_[A-Za-z_]+|modules_to_save|hada_[a-z0-9_]+|lokr_[a-z0-9_]+|ia3_l)\.[^.]+\.", r".\1.", k)


def _tree_with_adapter(base: ModuleNode | None, keys: list[str], model_keys: dict[str, ModelKey], *,
                       keep_base: bool) -> ModuleNode | None:
    """The base's module tree with each adapter key as a parameter of a node ``<module>.<lora_A|…>`` under the
    module it adapts (the base's own parameters dropped when there are no base weights)."""
    if base is None:
        return None
    paths = {n.path for n in base.walk()}
    extra: dict[str, dict[str, list[ParamEntry]]] = {}
    for k in keys:
        rel = k.removeprefix(PEFT_PREFIX)
        mod, part = _owner(rel, paths)
        mk = model_keys[k]
        extra.setdefault(mod, {}).setdefault(part, []).append(ParamEntry(k, tuple(mk.model_shape), mk.model_dtype, "parameter"))

    def build(node: ModuleNode) -> ModuleNode:
        kids = [build(c) for c in node.children]
        for part, entries in sorted(extra.get(node.path, {}).items()):
            p = f"{node.path}.{part}" if node.path else part
            n = sum(e.numel for e in entries)
            kids.append(ModuleNode(p, "peft " + part.split(".")[0], tuple(entries), (), n, 0))
        params = node.params if keep_base else ()
        n = sum(e.numel for e in params if e.kind == "parameter") + sum(k.n_params for k in kids)
        return ModuleNode(node.path, node.class_name, params, tuple(kids), n, node.nbytes if keep_base else 0)

    return build(base)


def _owner(rel: str, paths: set[str]) -> tuple[str, str]:
    """(base module, adapter part) of an adapter key without peft's prefix: the longest base module path it starts
    with; the part is the next name (``lora_A``, ``modules_to_save``, ``lora_magnitude_vector``...)."""
    parts = rel.split(".")
    for i in range(len(parts) - 1, 0, -1):
        mod = ".".join(parts[:i])
        if mod in paths:
            return mod, parts[i]
    return "", parts[0]


# --------------------------------------------------------------------------------------------- ΔW as a tensor


@dataclass(frozen=True)
class LoraPair:
    module: str
    a: str  # on-disk names
    b: str
    scaling: float
    shape: tuple[int, int]  # of B·A: (rows of B, columns of A)


def lora_pairs(rep: AdapterReport, *, adapter_name: str | None = None) -> dict[str, LoraPair]:
    """Per LoRA module whose A and B loaded: the on-disk names of A and B and peft's scaling."""
    adapter_name = adapter_name or rep.adapter_name
    from .adapter_delta import lora_pair  # the one rule for finding A and B

    mm = {k for k, _, _ in rep.mismatched}
    out: dict[str, LoraPair] = {}
    idx = rep.adapter.index.tensors
    for m in rep.adapted:
        if m.peft_type not in ("LORA", "ADALORA") or m.scaling is None or any(k in mm for k in m.keys):
            continue
        pair = lora_pair(m, adapter_name)
        if pair is None:
            continue
        a, b = idx[pair[0]].shape, idx[pair[1]].shape
        rows, cols = b[0], math.prod(a[1:])
        if math.prod(b[1:]) != a[0]:
            continue
        out[m.path] = LoraPair(m.path, pair[0], pair[1], float(m.scaling), (rows, cols))
    return out


class DeltaReader(TensorReader):
    """The view's tensors (adapter + base) plus ``ΔW:<module>`` = scaling·B·A per LoRA module, streamed in blocks
    of rows of at most ``chunk_elems`` values (A and B themselves are small: r × in, out × r)."""

    def __init__(self, index: CheckpointIndex, pairs: dict[str, LoraPair]) -> None:
        super().__init__(index)
        self.pairs = {delta_name(p.module): p for p in pairs.values()}

    def info(self, name: str) -> TensorInfo:
        p = self.pairs.get(name)
        if p is None:
            return super().info(name)
        n = p.shape[0] * p.shape[1]
        return TensorInfo(name, p.shape, "float32", 4 * n, self.index.tensors[p.b].file)

    def iter_chunks(self, name: str, *, chunk_elems: int = 1 << 24) -> Iterator[torch.Tensor]:
        p = self.pairs.get(name)
        if p is None:
            yield from super().iter_chunks(name, chunk_elems=chunk_elems)
            return
        import torch

        a = self.tensor(p.a).to(torch.float32).reshape(self.tensor(p.a).shape[0], -1)
        b = self.tensor(p.b).to(torch.float32).reshape(p.shape[0], -1)
        rows = max(1, chunk_elems // max(1, a.shape[1]))
        for i in range(0, b.shape[0], rows):
            yield (b[i : i + rows] @ a).mul_(p.scaling).reshape(-1)

    def tensor(self, name: str) -> torch.Tensor:
        p = self.pairs.get(name)
        if p is None:
            return super().tensor(name)
        import torch

        return torch.cat(list(self.iter_chunks(name))).reshape(p.shape)


def delta_histograms(rep: AdapterReport, *, bins: int = 256, modules: list[str] | None = None,
                     progress: Progress | None = None, cancel: Any = None) -> list[Any]:
    """Statistics and histogram of ΔW for each LoRA module (or those named), streamed (core.stats.TensorStats,
    named ``ΔW:<module>``)."""
    from .stats import aggregate_stats

    view = adapter_view(rep)
    pairs = lora_pairs(rep)
    todo = [m for m in (modules if modules is not None else list(pairs)) if m in pairs]
    with DeltaReader(view.index, pairs) as reader:
        return [aggregate_stats(reader, [delta_name(m)], label=delta_name(m), bins=bins, progress=progress, cancel=cancel)
                for m in todo]


# --------------------------------------------------------------------------------------------- init check


def adapter_init_check(rep: AdapterReport, *, seed: int = 0, progress: Progress | None = None) -> list[InitResult]:
    """Every loaded LoRA tensor against peft's own fresh initialisation of its layer (``reset_lora_parameters`` with
    the config's ``init_lora_weights``, seeded). ``init_like`` is set on the tensor whose peft init makes ΔW zero
    (lora_B; lora_embedding_A for embeddings) when it still equals that init — the module is untrained — and on
    its partner only then (a trained lora_A often still looks like its kaiming init: that is no finding)."""
    import torch

    from .adapter import build_base, peft_config
    from .adapter_match import peft_model_on_meta
    from .fresh import InitResult, compare_to_init

    adapter_name = rep.adapter_name
    pcfg, _ = peft_config(rep.adapter)
    init = getattr(pcfg, "init_lora_weights", True)
    init = True if not isinstance(init, (bool, str)) or init is False or (isinstance(init, str) and init.lower() != "gaussian") else init
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft_model_on_meta(build_base(rep.adapter, rep.base, arch=rep.arch), pcfg, adapter_name=adapter_name,
                                source=rep.adapter.config_file)
    loaded = set(rep.loaded)
    out: list[InitResult] = []
    mods = [m for m in rep.adapted if m.peft_type == "LORA"]
    with TensorReader(rep.adapter.index) as reader:
        for i, m in enumerate(mods):
            if progress:
                progress(i, len(mods))
            layer = pm.get_submodule(PEFT_PREFIX + m.path)
            holders = [getattr(layer, n) for n in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B")
                       if hasattr(layer, n) and adapter_name in getattr(layer, n)]
            for h in holders:
                h[adapter_name] = h[adapter_name].to_empty(device="cpu") if isinstance(h[adapter_name], torch.nn.Module) \
                    else torch.nn.Parameter(torch.empty_like(h[adapter_name], device="cpu"), requires_grad=False)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + i)
                with torch.no_grad():
                    layer.reset_lora_parameters(adapter_name, init)
            fresh = {PEFT_PREFIX + m.path + "." + k: v for k, v in layer.state_dict().items()
                     if f".{adapter_name}" in "." + k and not k.startswith("base_layer.") and v.device.type == "cpu"}
            res = []
            for k in m.keys:
                if k not in loaded or k not in fresh:
                    continue
                name = rep.sources[k]
                r = compare_to_init(name, k, reader.tensor(name).reshape(-1), fresh[k], seed=seed)
                res.append((k, r))
            zero_side = [r for k, r in res if r.kind == "constant"]
            untrained = bool(zero_side) and all(r.init_like for r in zero_side)
            for k, r in res:
                if r.kind == "constant":
                    det = ("all zeros: peft's initialisation, ΔW = 0 (untrained)" if r.init_like
                           else f"trained ({r.details})")
                    out.append(dataclasses.replace(r, details=det, status=Status.MATCHED))
                else:
                    like = r.init_like and untrained
                    det = r.details + ("; its partner is still at peft's init: untrained" if like else
                                       ("; looks like peft's init, as lora_A often does after training" if r.init_like else ""))
                    out.append(dataclasses.replace(r, init_like=like, details=det, status=Status.MATCHED))
            for h in holders:
                h[adapter_name] = h[adapter_name].to_empty(device="meta") if isinstance(h[adapter_name], torch.nn.Module) \
                    else torch.nn.Parameter(torch.empty_like(h[adapter_name], device="meta"), requires_grad=False)
    for n in rep.unexpected:
        if n in rep.adapter.index.tensors:
            out.append(InitResult(n, None, False, None, None, "skipped", "unexpected: peft does not load it",
                                  status=Status.UNEXPECTED))
    if progress:
        progress(len(mods), len(mods))
    return out


def init_check_view(rep: AdapterReport, *, seed: int = 0, progress: Progress | None = None, cancel: Any = None) -> list[InitResult]:
    """The init check of everything the adapter's view shows: the base weights against the base class's own fresh
    init (when given), then the adapter's tensors against peft's (:func:`adapter_init_check`)."""
    from .fresh import init_check
    from .jobs import is_cancelled

    out: list[InitResult] = []
    if rep.base_report is not None:
        out += init_check(rep.base_report.index, rep.base_report.spec, seed=seed, progress=progress, cancel=cancel)
    if is_cancelled(cancel):
        from .errors import Cancelled

        raise Cancelled("init check cancelled")
    return out + adapter_init_check(rep, seed=seed)
