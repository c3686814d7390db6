"""PEFT adapters: the records (findings, adapted modules, the report), opening an adapter folder and its
``adapter_config.json`` (data only), deciding and building its base. Matching is :mod:`explorer.core.adapter_match`
(peft's own loading code on meta tensors), ΔW :mod:`explorer.core.adapter_delta`.

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

import difflib
import os
import re
import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .checkpoint import CheckpointIndex, open_checkpoint
from .errors import CheckpointError, ConfigError
from .fsio import check_regular, confined_to, load_json
from .model import BuiltModel, ModelSpec, ModuleNode, build_model
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
    with confined_to(folder, named=None if folder is p else p):  # its config and weights stay inside the folder
        return _open_adapter(folder)


def _open_adapter(folder: Path) -> AdapterFolder:
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
        raise ConfigError(f"{cfg_file}: unknown peft_type {short(pt)!r} (not a type this peft version knows){hint}")
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
            raise ConfigError(f"{af.config_file}: invalid {ADAPTER_CONFIG}: {fld!r} must be a positive number, found {short(v)!r}")
    if raw.get("megatron_config"):
        # peft would import the module named in megatron_core: never import anything named in a file
        raise ConfigError(
            f"{af.config_file}: megatron_config is set: peft would import the module named in megatron_core "
            f"({short(raw.get('megatron_core'))!r}); refused"
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
            raise ConfigError(f"{af.config_file}: invalid {ADAPTER_CONFIG} for {af.peft_type}: {one_message(e)}") from e
    notes += [one_text(str(w.message)) for w in caught]
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
        f"{af.config_file}: base_model_name_or_path {short(name)!r} is neither a local model folder nor in the local "
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


def build_base(af: AdapterFolder, src: BaseSource, *, arch: str | None = None) -> BuiltModel:
    """The base on the meta device, as from_pretrained builds it (its load dtype from config / weights)."""
    spec = ModelSpec(config=src.config, arch=arch)
    return build_model(
        spec,
        checkpoint_dtype=src.index.first_float_dtype() if src.index is not None else None,
        checkpoint_files=src.index.files if src.index is not None else None,
    )


def meta_tensors(index: CheckpointIndex) -> dict[str, Any]:
    """The adapter file's tensors on the meta device (:meth:`CheckpointIndex.meta_tensors`)."""
    return index.meta_tensors()


def one_message(e: BaseException) -> str:
    """An exception's whole message on one line (its type name if empty), at most 400 characters."""
    return one_text(str(e)) or type(e).__name__


def one_text(s: str) -> str:
    """Text joined onto one line, at most 400 characters."""
    lines = [ln.strip() for ln in s.strip().splitlines() if ln.strip()]
    return " ".join(lines)[:400]


def short(v: Any, n: int = 120) -> str:
    """``str(v)``, cut to ``n`` characters."""
    s = str(v)
    return s if len(s) <= n else s[: n - 3] + "..."
