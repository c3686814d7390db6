"""PEFT adapters: open an adapter folder, match it against its base exactly as peft loads it, measure ΔW.

The match runs peft's own code on the meta device: the base is built as from_pretrained builds it
(:func:`explorer.core.model.build_model`), wrapped in the PeftModel class ``PeftModel.from_pretrained`` picks
(peft injects its layers), and the adapter's tensors, as meta tensors of the shapes in the file's header, go
through ``PeftModel.load_adapter`` -> ``set_peft_model_state_dict`` with ``ignore_mismatched_sizes=True``. So
missing / unexpected / mismatched are peft's own sets, named as ``PeftModel.state_dict()`` names them.

Nothing named in ``adapter_config.json`` is imported: the config is read with :func:`fsio.load_json` and only
its values reach peft's config class; fields that would make peft import a module or read another file
(``megatron_core``, tokenizer / state-dict paths of prompt methods) are refused or neutralised.
Verified against peft 0.21 (after peft#3490's structural key remapping): see pyproject's ``adapters`` extra.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import threading
import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from .checkpoint import CheckpointIndex, TensorReader, open_checkpoint
from .errors import CheckpointError, ConfigError, ExplorerError
from .fsio import check_regular, load_json
from .model import BuiltModel, ModelSpec, ModuleNode, build_model, module_tree
from .target import config_beside

if TYPE_CHECKING:
    import torch

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # peft's order (load_peft_weights)
PEFT_PREFIX = "base_model.model."
# peft types whose loading reads other files or runs code paths we do not reproduce header-only
_REFUSED_TYPES = {
    "XLORA": "X-LoRA loads its sub-adapters from other folders",
}


class FindingKind(str, Enum):
    """A problem peft would hit (or hide) when loading this adapter onto this base."""

    TARGETS_NOT_FOUND = "target_modules_not_found"  # peft raises: nothing to inject into
    PEFT_REFUSES = "peft_refuses"  # peft raises another error while injecting or loading
    OTHER_FAMILY = "adapter_for_other_model"  # the adapter's module paths do not exist in this base
    ADAPTER_NAME_IN_KEYS = "adapter_name_in_keys"  # keys saved with an adapter name in them (peft#2699)
    ADAPTER_NAME_IN_PREFIX = "adapter_name_in_prefix"  # the adapter name is part of peft's parameter prefix
    RANK_DISAGREES = "rank_disagrees"  # r in adapter_config.json is not the rank of the tensors
    MODULES_TO_SAVE_MISSING = "modules_to_save_missing"  # a modules_to_save entry without tensors


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    message: str
    details: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "message": self.message, "details": list(self.details)}


@dataclass(frozen=True)
class AdaptedModule:
    """A base module peft wrapped with an adapter layer, with the values peft computed for it."""

    path: str  # base module name, e.g. model.layers.0.self_attn.q_proj
    layer: str  # peft layer class, e.g. Linear, Embedding, Conv2d
    peft_type: str
    r: int | None
    alpha: float | None
    scaling: float | None
    use_dora: bool
    base_weight: str | None  # base state-dict key of the weight it adapts
    base_shape: tuple[int, ...] | None
    keys: tuple[str, ...]  # PeftModel.state_dict() keys of its adapter parameters
    sources: tuple[str, ...]  # on-disk adapter tensor names that load into them
    n_params: int

    def to_json(self) -> dict[str, Any]:
        return {
            "module": self.path,
            "layer": self.layer,
            "peft_type": self.peft_type,
            "r": self.r,
            "alpha": self.alpha,
            "scaling": self.scaling,
            "use_dora": self.use_dora,
            "base_weight": self.base_weight,
            "base_shape": list(self.base_shape) if self.base_shape is not None else None,
            "keys": list(self.keys),
            "sources": list(self.sources),
            "params": self.n_params,
        }


@dataclass(frozen=True)
class SavedModule:
    """A ``modules_to_save`` module: a full trained copy that replaces the base module's weights."""

    path: str
    keys: tuple[str, ...]  # PeftModel.state_dict() keys (…modules_to_save.default.weight)
    sources: tuple[str, ...]  # on-disk names that load into them
    replaces: tuple[tuple[str, bool], ...]  # (base key, same shape as the adapter's tensor)
    n_params: int

    @property
    def replaces_base(self) -> bool:
        return bool(self.replaces) and all(same for _, same in self.replaces)

    def to_json(self) -> dict[str, Any]:
        return {
            "module": self.path,
            "keys": list(self.keys),
            "sources": list(self.sources),
            "replaces": [{"key": k, "same_shape": s} for k, s in self.replaces],
            "replaces_base": self.replaces_base,
            "params": self.n_params,
        }


@dataclass(frozen=True)
class AdapterFolder:
    """An adapter folder as read from disk: its config (plain JSON data) and its weights' header-only index."""

    folder: str
    config_file: str
    raw: Mapping[str, Any]
    peft_type: str
    weights: str
    index: CheckpointIndex


@dataclass(frozen=True)
class BaseSource:
    """Where the base model comes from: a config (always) and, when present, its weights (header-only)."""

    config: str  # folder holding config.json
    origin: str  # "--base", "--config", "base_model_name_or_path", "hf-cache"
    index: CheckpointIndex | None = None


@dataclass(frozen=True)
class DeltaStats:
    """ΔW = scaling·B·A of one LoRA module, from the small r×r products (never the full ΔW)."""

    module: str
    r: int
    scaling: float
    norm: float  # ‖ΔW‖_F
    base_norm: float | None  # ‖W‖_F when the base weights are present
    singular_values: tuple[float, ...]  # of ΔW (scaling included), descending
    untrained: bool  # lora_B all zeros: peft's initialisation, ΔW = 0

    @property
    def relative(self) -> float | None:
        return self.norm / self.base_norm if self.base_norm else None

    @property
    def effective_rank(self) -> int:
        """Singular values above 1e-6 of the largest (numerical rank of the update)."""
        if not self.singular_values or self.singular_values[0] == 0:
            return 0
        return sum(1 for s in self.singular_values if s > 1e-6 * self.singular_values[0])

    def to_json(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "r": self.r,
            "scaling": self.scaling,
            "norm": self.norm,
            "base_norm": self.base_norm,
            "relative": self.relative,
            "singular_values": list(self.singular_values),
            "effective_rank": self.effective_rank,
            "untrained": self.untrained,
        }


@dataclass(frozen=True)
class AdapterReport:
    """The immutable result of matching an adapter against a base, as peft's ``load_adapter`` sees it."""

    adapter: AdapterFolder
    base: BaseSource
    arch: str
    load_dtype: str
    peft_type: str
    task_type: str | None
    peft_class: str  # the PeftModel subclass from_pretrained builds
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]
    loaded: tuple[str, ...]  # PeftModel.state_dict() keys that receive a tensor
    sources: Mapping[str, str]  # loaded model key -> on-disk adapter tensor name
    adapted: tuple[AdaptedModule, ...]
    modules_to_save: tuple[SavedModule, ...]
    findings: tuple[Finding, ...]
    adapter_params: int
    base_params: int
    base_tree: ModuleNode | None = None
    base_counts: Mapping[str, int] | None = None  # the base weights' own transformers report, when present
    notes: tuple[str, ...] = ()
    deltas: tuple[DeltaStats, ...] = ()
    base_report: Any = None  # explorer.core.report.Report of the base weights against the base class, when present
    key_info: Mapping[str, tuple[tuple[int, ...], str]] | None = None  # adapter keys peft built -> (shape, dtype)
    adapter_name: str = "default"  # peft's adapter_name: keys are named ….lora_A.<adapter_name>.weight

    @property
    def loads(self) -> bool:
        """False when peft raises before any tensor is loaded (see findings)."""
        return not any(f.kind in (FindingKind.TARGETS_NOT_FOUND, FindingKind.PEFT_REFUSES) for f in self.findings)

    @property
    def is_clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.findings)

    def counts(self) -> dict[str, int]:
        return {
            "matched": len(self.loaded),
            "missing": len(self.missing),
            "unexpected": len(self.unexpected),
            "mismatched": len(self.mismatched),
            "tensors": len(self.adapter.index.tensors),
            "findings": len(self.findings),
        }

    def summary(self) -> dict[str, Any]:
        """The ``adapter`` object of the CLI contract."""
        raw = self.adapter.raw
        tm = raw.get("target_modules")
        return {
            "peft_type": self.peft_type,
            "task_type": self.task_type,
            "r": raw.get("r"),
            "lora_alpha": raw.get("lora_alpha"),
            "target_modules": sorted(tm) if isinstance(tm, list) else tm,
            "adapted": [m.path for m in self.adapted],
            "modules_to_save": [m.path for m in self.modules_to_save],
            "use_dora": bool(raw.get("use_dora")),
            "use_rslora": bool(raw.get("use_rslora")),
            "rank_pattern": raw.get("rank_pattern") or {},
            "alpha_pattern": raw.get("alpha_pattern") or {},
            "layers_to_transform": raw.get("layers_to_transform"),
            "base_model_name_or_path": raw.get("base_model_name_or_path"),
            "peft_class": self.peft_class,
            "params": self.adapter_params,
            "base_params": self.base_params,
            "percent_of_base": (100.0 * self.adapter_params / self.base_params) if self.base_params else None,
            "loads": self.loads,
        }

    def to_json(self) -> dict[str, Any]:
        idx = self.adapter.index
        return {
            "checkpoint": self.adapter.folder,
            "format": idx.format,
            "files": list(idx.files),
            "model": {"config": self.base.config, "arch": self.arch, "model": None, "model_kwargs": {}},
            "arch": self.arch,
            "load_dtype": self.load_dtype,
            "counts": self.counts(),
            "tensors": [t.to_json() for t in idx.tensors.values()],
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "mismatched": [[k, list(a), list(b)] for k, a, b in self.mismatched],
            "matched": [{"key": k, "source": [self.sources[k]] if k in self.sources else []} for k in self.loaded],
            "findings": [f.to_json() for f in self.findings],
            "notes": list(self.notes),
            "adapter": self.summary(),
            "adapted_modules": [m.to_json() for m in self.adapted],
            "saved_modules": [m.to_json() for m in self.modules_to_save],
            "base": {
                "config": self.base.config,
                "origin": self.base.origin,
                "weights": self.base.index.path if self.base.index is not None else None,
                "counts": dict(self.base_counts) if self.base_counts is not None else None,
            },
            "deltas": [d.to_json() for d in self.deltas],
        }


# --------------------------------------------------------------------------------------------- opening


def require_peft() -> None:
    """peft is an optional dependency (the ``adapters`` extra): a one-line error when it is absent."""
    try:
        import peft  # noqa: F401
    except ImportError as e:
        raise ConfigError("adapters need peft: pip install 'checkpoint-explorer[adapters]'") from e


def is_adapter(path: str | os.PathLike[str]) -> bool:
    """A folder holding adapter_config.json, or that file itself."""
    p = Path(path)
    return (p.is_dir() and (p / ADAPTER_CONFIG).is_file()) or (p.name == ADAPTER_CONFIG and p.is_file())


def open_adapter(path: str | os.PathLike[str]) -> AdapterFolder:
    """Read adapter_config.json (bounded JSON, nothing imported) and index the adapter weights' header.

    Raises ConfigError / CheckpointError with one line naming the file and the problem."""
    p = Path(path)
    folder = p.parent if p.name == ADAPTER_CONFIG and not p.is_dir() else p
    cfg_file = folder / ADAPTER_CONFIG
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such adapter folder")
    if not cfg_file.exists():
        raise ConfigError(f"{folder}: not an adapter folder: no {ADAPTER_CONFIG}")
    raw = load_json(cfg_file, what=ADAPTER_CONFIG, error=ConfigError)
    if not isinstance(raw, dict):
        raise ConfigError(f"{cfg_file}: invalid {ADAPTER_CONFIG}: expected a JSON object, found {type(raw).__name__}")
    pt = raw.get("peft_type")
    if not isinstance(pt, str) or not pt:
        raise ConfigError(f"{cfg_file}: invalid {ADAPTER_CONFIG}: no \"peft_type\"")
    require_peft()
    from peft import PEFT_TYPE_TO_CONFIG_MAPPING

    known = sorted(str(getattr(k, "value", k)) for k in PEFT_TYPE_TO_CONFIG_MAPPING)
    if pt not in known:
        close = difflib.get_close_matches(pt.upper(), known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"{cfg_file}: unknown peft_type {_short(pt)!r} (not a type this peft version knows){hint}")
    weights = None
    for name in ADAPTER_WEIGHTS:
        if (folder / name).exists():
            weights = folder / name
            break
    if weights is None:
        raise CheckpointError(f"{folder}: no adapter weights: expected {' or '.join(ADAPTER_WEIGHTS)}")
    check_regular(weights, what="adapter weights file", error=CheckpointError)
    index = open_checkpoint(weights)
    if index.wrapper_key is not None:
        raise CheckpointError(
            f"{weights}: a wrapper dict (tensors under {index.wrapper_key!r}), not a flat state dict: peft would load none of it"
        )
    return AdapterFolder(str(folder), str(cfg_file), raw, pt, str(weights), index)


def peft_config(af: AdapterFolder) -> tuple[Any, tuple[str, ...]]:
    """peft's config object for this adapter, built from the JSON values as ``PeftConfig.from_pretrained`` does
    (``check_kwargs`` -> ``from_peft_type``), plus notes on what was neutralised."""
    from peft import PEFT_TYPE_TO_CONFIG_MAPPING

    raw = dict(af.raw)
    notes: list[str] = []
    if af.peft_type in _REFUSED_TYPES:
        raise ConfigError(f"{af.config_file}: peft_type {af.peft_type} not supported: {_REFUSED_TYPES[af.peft_type]}")
    raw.pop("runtime_config", None)  # peft drops it too (from_json_file)
    for fld, kind in (("r", int), ("lora_alpha", (int, float)), ("alpha", (int, float))):
        v = raw.get(fld)
        if v is not None and (isinstance(v, bool) or not isinstance(v, kind) or v <= 0):
            raise ConfigError(f"{af.config_file}: invalid {ADAPTER_CONFIG}: {fld!r} must be a positive number, found {_short(v)!r}")
    if raw.get("megatron_config"):
        # peft would import the module named in megatron_core: never import anything named in a file
        raise ConfigError(
            f"{af.config_file}: megatron_config is set: peft would import the module named in megatron_core "
            f"({_short(raw.get('megatron_core'))!r}); refused"
        )
    init = raw.get("init_lora_weights")
    if isinstance(init, str):
        # data-dependent initialisations (pissa, olora, corda, eva, loftq, ...) change values, never keys or shapes
        notes.append(f"init_lora_weights={init!r}: not run (it changes values, not which keys load)")
        raw["init_lora_weights"] = True
    cls = PEFT_TYPE_TO_CONFIG_MAPPING[af.peft_type]
    if getattr(cls, "is_prompt_learning", False) is True or af.peft_type in (
        "PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "MULTITASK_PROMPT_TUNING", "CPT", "ADAPTION_PROMPT",
    ):
        raise ConfigError(f"{af.config_file}: peft_type {af.peft_type}: prompt-learning adapters are not supported yet")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            kwargs = cls.check_kwargs(**raw)
            config = cls.from_peft_type(**kwargs)
        except Exception as e:  # peft's config classes raise ValueError/TypeError on bad values
            raise ConfigError(f"{af.config_file}: invalid {ADAPTER_CONFIG} for {af.peft_type}: {_one(e)}") from e
    notes += [_one_text(str(w.message)) for w in caught]
    config.inference_mode = True  # as PeftModel.from_pretrained(is_trainable=False)
    return config, tuple(notes)


# --------------------------------------------------------------------------------------------- the base

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$")


def resolve_base(
    af: AdapterFolder, *, base: str | os.PathLike[str] | None = None, config: str | os.PathLike[str] | None = None
) -> BaseSource:
    """The base: ``base`` (a checkpoint folder with its config), else ``config`` (header-only, no weights), else
    ``base_model_name_or_path`` when it names a local folder or a model in the local Hugging Face cache (offline)."""
    if base is not None and config is not None:
        raise ConfigError("--base and --config: give one (--base is a folder with its config.json and weights)")
    if base is not None:
        b = Path(base)
        folder = config_beside(b)  # the one config-beside rule (a FIFO named config.json is refused when read)
        if folder is None:
            raise ConfigError(f"{b}: --base needs a model folder with config.json (for a config alone use --config)")
        return BaseSource(folder, "--base", open_checkpoint(b))
    if config is not None:
        c = Path(config)
        folder = c if c.is_dir() else c.parent
        return BaseSource(str(folder), "--config", None)
    name = af.raw.get("base_model_name_or_path")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{af.config_file}: no base_model_name_or_path; pass --base DIR or --config C")
    p = Path(name).expanduser()
    if p.is_dir() and config_beside(p) is not None:
        return BaseSource(str(p), "base_model_name_or_path", _weights_if_any(p))
    if _REPO_ID.match(name):
        snap = _hf_cache_snapshot(name, af.raw.get("revision"))
        if snap is not None:
            return BaseSource(str(snap), "hf-cache", _weights_if_any(snap))
    raise ConfigError(
        f"{af.config_file}: base_model_name_or_path {_short(name)!r} is neither a local model folder nor in the local "
        "Hugging Face cache; pass --base DIR or --config C"
    )


def _weights_if_any(folder: Path) -> CheckpointIndex | None:
    try:
        return open_checkpoint(folder)
    except CheckpointError:
        return None  # a config-only folder: header-only base


def _hf_cache_snapshot(repo_id: str, revision: Any) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a transformers dependency
        return None
    rev = revision if isinstance(revision, str) and revision else None
    try:
        hit = try_to_load_from_cache(repo_id, "config.json", revision=rev)
    except Exception:  # noqa: BLE001 - an odd name or cache layout: not found
        return None
    if isinstance(hit, str) and os.path.isfile(hit):
        return Path(hit).parent
    return None


# --------------------------------------------------------------------------------------------- matching

_PATCH_LOCK = threading.RLock()


class PeftLoadRecorder:
    """While ``load_adapter`` runs: hand peft meta tensors for the adapter file instead of reading it, and record
    the state dict peft passes to its mismatch check (model keys -> our tensors) and the mismatches it finds.

    Patches two loaders and one helper in ``peft.utils.save_and_load``; restored on exit (process-wide: under a lock)."""

    def __init__(self, weights_file: str, tensors: dict[str, Any]) -> None:
        self.weights_file = os.path.realpath(weights_file)
        self.tensors = tensors
        self.remapped: dict[str, Any] | None = None
        self.mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] | None = None
        self.served = False

    def __enter__(self) -> PeftLoadRecorder:
        import peft.utils.save_and_load as sl

        _PATCH_LOCK.acquire()
        self._sl = sl
        self._saved = (sl.safe_load_file, sl.torch_load, sl._find_mismatched_keys)
        orig_safe, orig_torch, orig_find = self._saved

        def serve(filename: Any) -> dict[str, Any] | None:
            try:
                same = os.path.realpath(os.fspath(filename)) == self.weights_file
            except TypeError:
                same = False
            if same:
                self.served = True
                return dict(self.tensors)
            return None

        def safe_load_file(filename, *a, **k):
            out = serve(filename)
            return out if out is not None else orig_safe(filename, *a, **k)

        def torch_load(f, *a, **k):
            out = serve(f)
            return out if out is not None else orig_torch(f, *a, **k)

        def find_mismatched(model, state_dict, ignore_mismatched_sizes=False):
            self.remapped = dict(state_dict)
            sd, mm = orig_find(model, state_dict, ignore_mismatched_sizes=ignore_mismatched_sizes)
            self.mismatched = [(k, tuple(a), tuple(b)) for k, a, b in mm]
            return sd, mm

        sl.safe_load_file, sl.torch_load, sl._find_mismatched_keys = safe_load_file, torch_load, find_mismatched
        return self

    def __exit__(self, *exc: object) -> None:
        sl = self._sl
        try:
            sl.safe_load_file, sl.torch_load, sl._find_mismatched_keys = self._saved
        finally:
            _PATCH_LOCK.release()


def meta_tensors(index: CheckpointIndex) -> dict[str, Any]:
    import torch

    out = {}
    for name, t in index.tensors.items():
        dt = getattr(torch, t.dtype, None) or torch.uint8
        out[name] = torch.empty(t.shape, dtype=dt, device="meta")
    return out


def build_base(af: AdapterFolder, src: BaseSource, *, arch: str | None = None) -> BuiltModel:
    """The base on the meta device, as from_pretrained builds it (its load dtype from config / weights)."""
    spec = ModelSpec(config=src.config, arch=arch)
    return build_model(
        spec,
        checkpoint_dtype=src.index.first_float_dtype() if src.index is not None else None,
        checkpoint_files=src.index.files if src.index is not None else None,
    )


def peft_model_on_meta(built: BuiltModel, config: Any, *, adapter_name: str = "default",
                       source: str = ADAPTER_CONFIG) -> Any:
    """The PeftModel ``PeftModel.from_pretrained`` builds around ``built`` (class by task_type), on meta.
    peft's own injection code runs; every tensor it creates is on the meta device. The config's regular
    expressions are tried first (:func:`check_peft_patterns`); ``source`` names the config file in errors."""
    import torch
    from peft import MODEL_TYPE_TO_PEFT_MODEL_MAPPING, PeftModel

    check_peft_patterns(config, built, source=source)

    cls = MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(config.task_type, PeftModel) if config.task_type else PeftModel
    with torch.device("meta"):
        return cls(built.module, config, adapter_name, autocast_adapter_dtype=True, low_cpu_mem_usage=False)


def check_peft_patterns(config: Any, built: BuiltModel, *, source: str = ADAPTER_CONFIG) -> None:
    """peft matches several adapter_config.json fields with ``re`` against every module name of the base (a
    string ``target_modules`` / ``exclude_modules``: fullmatch; ``modules_to_save``, ``layers_pattern``, the keys of
    ``rank_pattern`` / ``alpha_pattern``: inside its own templates). ``re`` cannot be stopped once started, so these
    run first in a child process with a deadline (:func:`explorer.core.keys.check_patterns_speed`): a catastrophic
    pattern is a one-line error naming the file, not a hang. Raises PatternTooSlow / ConfigError."""
    from .keys import check_patterns_speed

    jobs: list[tuple[str, str, str]] = []
    for fld in ("target_modules", "exclude_modules"):
        v = getattr(config, fld, None)
        if isinstance(v, str):
            jobs.append((v, v, "fullmatch"))
    for m in getattr(config, "modules_to_save", None) or ():
        if isinstance(m, str):
            jobs.append((m, rf"(^|.*\.){m}($|\..*)", "match"))
    lp = getattr(config, "layers_pattern", None)
    for pat in [lp] if isinstance(lp, str) else (lp or ()):
        if isinstance(pat, str):
            jobs.append((pat, rf"(?:^|.*?\.){pat}\.(?P<idx>\d+)\.", "match"))
    for fld in ("rank_pattern", "alpha_pattern"):
        for k in getattr(config, fld, None) or {}:
            if isinstance(k, str):
                jobs.append((k, rf"(.*\.)?({k})$", "match"))
    if jobs:
        check_patterns_speed(jobs, [n for n, _ in built.module.named_modules()], label=source)


def load_on_meta(pm: Any, af: AdapterFolder, rec: PeftLoadRecorder, *, adapter_name: str = "default",
                 key_mapping: Mapping[str, str] | None = None) -> Any:
    """``pm.load_adapter`` as ``PeftModel.from_pretrained`` calls it, fed the meta tensors of ``rec``; its load_result."""
    with rec:
        return pm.load_adapter(
            af.folder, adapter_name, is_trainable=False, torch_device="cpu", autocast_adapter_dtype=True,
            low_cpu_mem_usage=False, key_mapping=dict(key_mapping) if key_mapping else None, ignore_mismatched_sizes=True,
        )


def match_adapter(
    adapter: str | os.PathLike[str] | AdapterFolder,
    *,
    base: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    arch: str | None = None,
    adapter_name: str = "default",
    deltas: bool = False,
) -> AdapterReport:
    """Match an adapter against its base as ``PeftModel.from_pretrained(base, adapter, ignore_mismatched_sizes=True)``
    does, from headers only. ``deltas=True`` also measures ΔW per LoRA module (reads the adapter tensors, and the
    base weights when present). Raises ExplorerError subclasses with one-line messages."""
    try:
        af = adapter if isinstance(adapter, AdapterFolder) else open_adapter(adapter)
        src = resolve_base(af, base=base, config=config)
        rep = _match(af, src, arch=arch, adapter_name=adapter_name)
        if deltas and rep.loads:

            rep = dataclasses.replace(rep, deltas=tuple(delta_stats(rep, adapter_name=adapter_name)))
        return rep
    except ExplorerError:
        raise
    except Exception as e:  # noqa: BLE001 - never a traceback for an odd adapter or base
        raise ExplorerError(f"{os.fspath(adapter) if not isinstance(adapter, AdapterFolder) else adapter.folder}: "
                            f"cannot match this adapter: {type(e).__name__}: {_one(e)}") from e


def _match(af: AdapterFolder, src: BaseSource, *, arch: str | None, adapter_name: str) -> AdapterReport:
    from peft import PeftType
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING

    pcfg, notes_cfg = peft_config(af)
    notes = list(af.index.notes) + list(notes_cfg)
    built = build_base(af, src, arch=arch)
    notes += list(built.notes)
    base_tree = module_tree(built.module)
    base_entries = {e.key: e for e in base_tree.all_params()}
    base_params = base_tree.n_params
    base_counts = brep = None
    if src.index is not None:
        import copy

        from .matching import match as match_base

        # matching consumes a model: it gets a copy of the one built (a meta deepcopy costs ~0.5 s on the 70B,
        # a second build ~15 s); peft injects into the original below
        brep = match_base(dataclasses.replace(built, module=copy.deepcopy(built.module)), src.index, tree=base_tree)
        base_counts = {k: v for k, v in brep.counts().items() if k in ("matched", "missing", "unexpected", "mismatched")}
        if not brep.is_clean:
            notes.append(
                f"the base weights themselves do not load clean into {built.class_name}: {base_counts['missing']} missing, "
                f"{base_counts['unexpected']} unexpected, {base_counts['mismatched']} mismatched (ckpt-explorer report {src.index.path})"
            )
    base_modules = [n for n, _ in built.module.named_modules() if n]
    weight_modules = [n for n, m in built.module.named_modules() if n and any(p is not None for p in m._parameters.values())]
    if getattr(built.config, "quantization_config", None) is not None:
        notes.append("the base config has a quantization_config: matched against the unquantized layers (same adapter keys for LoRA)")
    adapter_params = af.index.total_params
    pt = af.peft_type
    findings: list[Finding] = []
    prefix = PEFT_TYPE_TO_PREFIX_MAPPING.get(PeftType(pt), "") if pt in PeftType.__members__ else ""
    if prefix and adapter_name in prefix:
        findings.append(Finding(
            FindingKind.ADAPTER_NAME_IN_PREFIX,
            f"adapter name {adapter_name!r} is contained in peft's parameter prefix {prefix!r}: peft warns it may "
            "re-initialise the adapter weights on load",
        ))

    key_info: dict[str, tuple[tuple[int, ...], str]] = {}

    def result(missing=(), unexpected=(), mismatched=(), loaded=(), sources=None, adapted=(), saved=(), extra=()):
        return AdapterReport(
            adapter=af, base=src, arch=built.class_name, load_dtype=str(built.dtype).removeprefix("torch."),
            peft_type=pt, task_type=str(getattr(pcfg.task_type, "value", pcfg.task_type)) if pcfg.task_type else None,
            peft_class=peft_class, missing=tuple(missing), unexpected=tuple(unexpected), mismatched=tuple(mismatched),
            loaded=tuple(loaded), sources=dict(sources or {}), adapted=tuple(adapted), modules_to_save=tuple(saved),
            findings=tuple(findings) + tuple(extra), adapter_params=adapter_params, base_params=base_params,
            base_tree=base_tree, base_counts=base_counts, notes=tuple(dict.fromkeys(notes)), base_report=brep,
            key_info=key_info, adapter_name=adapter_name,
        )

    from peft import MODEL_TYPE_TO_PEFT_MODEL_MAPPING, PeftModel

    peft_class = (MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(pcfg.task_type, PeftModel) if pcfg.task_type else PeftModel).__name__
    # --- 1. peft injects its layers (its own target matching), on meta; a catastrophic pattern is an error first
    check_peft_patterns(pcfg, built, source=af.config_file)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pm = peft_model_on_meta(built, pcfg, adapter_name=adapter_name, source=af.config_file)
        except Exception as e:  # noqa: BLE001 - peft's hard failures are findings about this pair
            notes += _peft_warnings(caught)
            return result(extra=_injection_findings(e, af, pcfg, base_modules, weight_modules))
    notes += _peft_warnings(caught)
    key_mapping = getattr(built.module, "_checkpoint_conversion_mapping", None) or {}  # as from_pretrained does

    # --- 2. peft loads the adapter's tensors (meta, shapes from the header) through load_adapter
    tensors = meta_tensors(af.index)
    rec = PeftLoadRecorder(af.weights, tensors)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            load_result = load_on_meta(pm, af, rec, adapter_name=adapter_name, key_mapping=key_mapping)
        except Exception as e:  # noqa: BLE001
            notes += _peft_warnings(caught)
            return result(extra=(Finding(FindingKind.PEFT_REFUSES, f"peft's load_adapter raises {type(e).__name__}: {_one(e)}"),))
    notes += [n for n in _peft_warnings(caught) if "were not initialized from the model checkpoint" not in n]
    if not rec.served:
        raise ExplorerError(f"{af.folder}: peft did not read {af.weights} (another peft version?); cannot match header-only")
    missing = list(load_result.missing_keys)
    unexpected = list(load_result.unexpected_keys)
    mismatched = list(rec.mismatched or [])
    ids = {id(t): n for n, t in tensors.items()}
    remapped = rec.remapped or {}
    mm_keys = {k for k, _, _ in mismatched}
    sources = {k: ids[id(v)] for k, v in remapped.items() if id(v) in ids}
    model_sd = pm.state_dict()
    loaded = [k for k in remapped if k in model_sd and k not in mm_keys]

    # --- 3. what peft built, per module
    adapted, saved = _describe(pm, adapter_name, pt, model_sd, sources, base_entries, af)
    for k in {*(k for m in adapted for k in m.keys), *(k for m in saved for k in m.keys), *missing}:
        if k in model_sd:
            key_info[k] = (tuple(model_sd[k].shape), str(model_sd[k].dtype).removeprefix("torch."))
    extra = _key_findings(af, pcfg, missing, unexpected, mismatched, saved, adapter_name, base_modules)
    return result(missing, unexpected, mismatched, loaded, sources, adapted, saved, extra)


def _peft_warnings(caught: list[Any]) -> list[str]:
    out = []
    for w in caught:
        fn = str(getattr(w, "filename", ""))
        if f"{os.sep}peft{os.sep}" in fn and not issubclass(w.category, (DeprecationWarning, FutureWarning)):
            out.append("peft: " + _one_text(str(w.message)))
    return out


def _injection_findings(
    e: BaseException, af: AdapterFolder, pcfg: Any, base_modules: list[str], weight_modules: list[str]
) -> tuple[Finding, ...]:
    from peft import NoMatchingPeftModuleError

    if isinstance(e, NoMatchingPeftModuleError):
        tm = pcfg.target_modules
        targets = sorted(tm) if isinstance(tm, (set, list, tuple)) else [str(tm)]
        leaves = sorted({n.rsplit(".", 1)[-1] for n in weight_modules if not n.rsplit(".", 1)[-1].isdigit()})
        details = []
        for t in targets[:20]:
            close = closest_module_names(t, leaves)
            details.append(f"{t}: closest base module names {', '.join(close) if close else '(none)'}")
        found = [Finding(
            FindingKind.TARGETS_NOT_FOUND,
            f"peft raises: target_modules {_short(targets)} match no module of this base ({_one(e)})",
            tuple(details),
        )]
        fam = _family_finding(af, base_modules)
        if fam is not None:
            found.append(fam)
        return tuple(found)
    return (Finding(FindingKind.PEFT_REFUSES, f"peft raises while injecting the adapter: {type(e).__name__}: {_one(e)}"),)


# the same role under the names different model families use (a hint only: peft matches names, not roles)
_ROLES = (
    ("q_proj", "query", "q", "q_lin", "c_attn", "qkv_proj", "query_key_value", "Wqkv"),
    ("k_proj", "key", "k", "k_lin", "c_attn", "qkv_proj", "query_key_value", "Wqkv"),
    ("v_proj", "value", "v", "v_lin", "c_attn", "qkv_proj", "query_key_value", "Wqkv"),
    ("o_proj", "out_proj", "dense", "o", "out_lin", "c_proj", "wo"),
    ("gate_proj", "w1", "fc1", "c_fc", "intermediate", "wi_0", "gate_up_proj"),
    ("up_proj", "w3", "fc1", "c_fc", "intermediate", "wi_1", "gate_up_proj", "dense_h_to_4h"),
    ("down_proj", "w2", "fc2", "c_proj", "output", "wo", "dense_4h_to_h"),
)


def closest_module_names(target: str, leaves: list[str], *, n: int = 3) -> list[str]:
    """Base module names closest to a target_modules entry: the same role in another family first, then difflib."""
    leaf = target.rsplit(".", 1)[-1]
    have = set(leaves)
    out = [name for role in _ROLES if leaf in role for name in role if name != leaf and name in have]
    out += difflib.get_close_matches(leaf, leaves, n=n, cutoff=0.3)
    return list(dict.fromkeys(out))[:n]


_PARAM_TAIL = re.compile(r"\.(lora_|hada_|lokr_|ia3_|oft_|boft_|vera_|modules_to_save|trainable_tokens|base_layer)")


def _module_of(key: str) -> str:
    """The base module an adapter tensor belongs to: the key without peft's prefix and its parameter tail."""
    k = key.removeprefix(PEFT_PREFIX)
    m = _PARAM_TAIL.search(k)
    return k[: m.start()] if m else k.rsplit(".", 1)[0]


def _family_finding(af: AdapterFolder, base_modules: list[str]) -> Finding | None:
    mods = sorted({_module_of(k) for k in af.index.tensors})
    if not mods:
        return None
    have = set(base_modules)
    absent = [m for m in mods if m not in have]
    if len(absent) < max(1, len(mods) // 2):
        return None
    name = af.raw.get("base_model_name_or_path")
    top = sorted({n.split(".")[0] for n in base_modules if "." not in n})
    trained = f" (trained on {_short(name)!r})" if isinstance(name, str) and name else ""
    return Finding(
        FindingKind.OTHER_FAMILY,
        f"adapter for another model{trained}: {len(absent)} of {len(mods)} adapted module paths do not exist in this base",
        (f"adapter module: {absent[0]}", f"base top-level modules: {', '.join(top[:8])}"),
    )


def _key_findings(af, pcfg, missing, unexpected, mismatched, saved, adapter_name, base_modules) -> list[Finding]:
    out: list[Finding] = []
    # keys saved with an adapter name inside them (e.g. from model.state_dict() of an adapter named "lora"): peft
    # passes them through unchanged, so each stays unexpected while its "default" twin stays missing (peft#2699)
    miss = set(missing)
    names: dict[str, int] = {}
    for u in unexpected:
        parts = u.split(".")
        for i in range(1, len(parts)):
            cand = parts[:i] + [adapter_name] + parts[i + 1 :]
            cand2 = parts[:i] + [adapter_name] + parts[i:]
            if ".".join(cand) in miss and parts[i] != adapter_name:
                names[parts[i]] = names.get(parts[i], 0) + 1
                break
            if ".".join(cand2) in miss:
                break
    if names:
        nm, n = max(names.items(), key=lambda x: x[1])
        out.append(Finding(
            FindingKind.ADAPTER_NAME_IN_KEYS,
            f"{n} adapter tensors carry the adapter name {nm!r} inside their keys: peft loads none of them (they are "
            f"unexpected, their {adapter_name!r} keys missing); rename the keys without '.{nm}' (peft#2699)",
        ))
    # r in the config vs the tensors' rank: a mismatch only in the rank dimension
    rank_dis: dict[tuple[int, int], int] = {}
    for k, a, b in mismatched:
        if ".lora_A." in k or ".lora_embedding_A." in k:
            if len(a) == len(b) and a[1:] == b[1:] and a[0] != b[0]:
                rank_dis[(b[0], a[0])] = rank_dis.get((b[0], a[0]), 0) + 1
        elif ".lora_B." in k or ".lora_embedding_B." in k:
            if len(a) == len(b) >= 2 and a[0] == b[0] and a[1] != b[1]:
                rank_dis[(b[1], a[1])] = rank_dis.get((b[1], a[1]), 0) + 1
    for (cfg_r, t_r), n in sorted(rank_dis.items()):
        out.append(Finding(
            FindingKind.RANK_DISAGREES,
            f"r = {cfg_r} (adapter_config.json, with rank_pattern) but the tensors have rank {t_r}: {n} lora tensors mismatched",
        ))
    for s in saved:
        if not s.sources:
            out.append(Finding(FindingKind.MODULES_TO_SAVE_MISSING, f"modules_to_save {s.path!r}: no tensors in the adapter file"))
    if unexpected and not (miss or mismatched) or (unexpected and len(unexpected) >= max(1, len(af.index.tensors) // 2)):
        fam = _family_finding(af, base_modules)
        if fam is not None:
            out.append(fam)
    return out


def _describe(pm, adapter_name, pt, model_sd, sources, base_entries, af):
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import ModulesToSaveWrapper

    adapted: list[AdaptedModule] = []
    saved: list[SavedModule] = []
    shapes = {k: tuple(v.shape) for k, v in model_sd.items()}
    for name, mod in pm.named_modules():
        base_path = name.removeprefix(PEFT_PREFIX)
        pre = name + "."
        if isinstance(mod, ModulesToSaveWrapper):
            mkeys = tuple(k for k in model_sd if k.startswith(f"{pre}modules_to_save.{adapter_name}."))
            srcs = tuple(sources[k] for k in mkeys if k in sources)
            replaces = []
            for k in mkeys:
                rest = k[len(f"{pre}modules_to_save.{adapter_name}.") :]
                bk = f"{base_path}.{rest}"
                if bk in base_entries:
                    src_name = sources.get(k)
                    ck_shape = tuple(af.index.tensors[src_name].shape) if src_name else None
                    replaces.append((bk, ck_shape == base_entries[bk].shape))
            saved.append(SavedModule(base_path, mkeys, srcs, tuple(replaces), sum(math.prod(shapes[k]) for k in mkeys)))
            continue
        if not isinstance(mod, BaseTunerLayer) or adapter_name not in getattr(mod, "active_adapters", [adapter_name]):
            continue
        own = tuple(
            k for k in model_sd
            if k.startswith(pre) and f".{adapter_name}" in k[len(pre):] and ".base_layer." not in k[len(pre):]
        )
        if not own:
            continue
        r = _adapter_value(mod, "r", adapter_name)
        alpha = _adapter_value(mod, "lora_alpha", adapter_name)
        if alpha is None:
            alpha = _adapter_value(mod, "alpha", adapter_name)
        scaling = _adapter_value(mod, "scaling", adapter_name)
        dora = bool(_adapter_value(mod, "use_dora", adapter_name))
        try:
            bl = mod.get_base_layer()
            w = getattr(bl, "weight", None)
        except Exception:  # noqa: BLE001
            w = None
        bw = f"{base_path}.weight" if w is not None and f"{base_path}.weight" in base_entries else None
        adapted.append(AdaptedModule(
            path=base_path,
            layer=type(mod).__name__,
            peft_type=pt,
            r=int(r) if isinstance(r, (int, float)) else None,
            alpha=float(alpha) if isinstance(alpha, (int, float)) else None,
            scaling=float(scaling) if isinstance(scaling, (int, float)) else None,
            use_dora=dora,
            base_weight=bw,
            base_shape=base_entries[bw].shape if bw else None,
            keys=own,
            sources=tuple(sources[k] for k in own if k in sources),
            n_params=sum(math.prod(shapes[k]) for k in own),
        ))
    return adapted, saved


def _adapter_value(mod: Any, attr: str, adapter_name: str) -> Any:
    v = getattr(mod, attr, None)
    if isinstance(v, Mapping):
        v = v.get(adapter_name)
    if hasattr(v, "item") and getattr(v, "numel", lambda: 2)() == 1 and getattr(v, "device", None) is not None and v.device.type != "meta":
        v = v.item()
    return v if isinstance(v, (int, float, bool)) or v is None else None


# --------------------------------------------------------------------------------------------- ΔW


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


# --------------------------------------------------------------------------------------------- helpers


def _one(e: BaseException) -> str:
    return _one_text(str(e)) or type(e).__name__


def _one_text(s: str) -> str:
    lines = [ln.strip() for ln in s.strip().splitlines() if ln.strip()]
    return " ".join(lines)[:400]


def _short(v: Any, n: int = 120) -> str:
    s = str(v)
    return s if len(s) <= n else s[: n - 3] + "..."
