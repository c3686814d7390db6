"""The model side: a config or class path -> a model on the meta device -> a module tree with per-subtree totals."""
from __future__ import annotations

import contextlib
import importlib
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .classes import config_for_class, family_mismatch, head_classes, resolve_class  # noqa: F401 (head_classes: re-exported)
from .errors import Cancelled, ConfigError, one_line
from .jobs import is_cancelled
from .fmt import safe_text
from .fsio import check_regular, link_stays_inside, load_json

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """What model to compare against: a transformers config (+ head class) or a plain ``pkg.module:Class``."""

    config: str | None = None  # a directory holding config.json, or the file itself
    arch: str | None = None  # transformers class name; default: config's architectures[0]
    model: str | None = None  # "pkg.module:Class" for a plain nn.Module
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_transformers(self) -> bool:
        return self.model is None

    def describe(self) -> str:
        if self.model:
            return self.model
        return f"{self.arch or '(architectures[0])'} from {self.config}"

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "arch": self.arch, "model": self.model, "model_kwargs": self.model_kwargs}


@dataclass(frozen=True)
class ParamEntry:
    """One parameter or buffer of the model, by its state-dict key."""

    key: str
    shape: tuple[int, ...]
    dtype: str
    kind: str  # "parameter" | "buffer"
    persistent: bool = True  # non-persistent buffers are never in a state dict

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        import torch

        return self.numel * getattr(torch, self.dtype).itemsize


@dataclass(frozen=True)
class ModuleNode:
    """A module with its own parameters and its children; totals cover the whole subtree."""

    path: str  # "" for the root
    class_name: str
    params: tuple[ParamEntry, ...]
    children: tuple[ModuleNode, ...]
    n_params: int
    nbytes: int

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1] if self.path else "(model)"

    def walk(self) -> Iterator[ModuleNode]:
        yield self
        for c in self.children:
            yield from c.walk()

    def all_params(self) -> Iterator[ParamEntry]:
        for n in self.walk():
            yield from n.params


@dataclass
class BuiltModel:
    """A model instantiated on the meta device plus what is needed to match against it."""

    module: nn.Module
    spec: ModelSpec
    dtype: torch.dtype
    config: Any = None  # transformers config or None
    class_name: str = ""
    hf_quantizer: Any = None  # transformers HfQuantizer whose layers were swapped in (pre-quantized checkpoint)
    notes: tuple[str, ...] = ()  # how quantization was handled
    family: tuple[str, str] | None = None  # (config's model_type, class's model_type) when they differ

    @property
    def is_transformers(self) -> bool:
        return self.config is not None


# --------------------------------------------------------------------------------------------- quiet


class _Quiet:
    """See :func:`quiet_transformers`."""

    _lock = threading.Lock()
    _depth = 0
    _saved: tuple[str | None, int, bool] | None = None

    def __enter__(self) -> None:
        from transformers.utils import logging as hf_logging

        cls = type(self)
        with cls._lock:
            if cls._depth == 0:
                cls._saved = (
                    os.environ.get("HF_DEACTIVATE_ASYNC_LOAD"),
                    hf_logging.get_verbosity(),
                    hf_logging.is_progress_bar_enabled(),
                )
                os.environ["HF_DEACTIVATE_ASYNC_LOAD"] = "1"
                hf_logging.set_verbosity_error()
                hf_logging.disable_progress_bar()
            cls._depth += 1

    def __exit__(self, *exc: object) -> None:
        from transformers.utils import logging as hf_logging

        cls = type(self)
        with cls._lock:
            cls._depth -= 1
            if cls._depth or cls._saved is None:
                return
            env, verbosity, bar = cls._saved
            cls._saved = None
            if env is None:
                os.environ.pop("HF_DEACTIVATE_ASYNC_LOAD", None)
            else:
                os.environ["HF_DEACTIVATE_ASYNC_LOAD"] = env
            hf_logging.set_verbosity(verbosity)
            if bar:
                hf_logging.enable_progress_bar()


def quiet_transformers() -> _Quiet:
    """A block that silences transformers (warnings become our notes; no load report, no progress bar) and forces
    synchronous loading; everything is restored after. The settings are process-wide and the block is entered from
    several worker threads at once (GUI): the first block to enter saves them and the last to leave restores them,
    so one thread never turns the bar back on under another. The one way the core quiets transformers."""
    return _Quiet()


# --------------------------------------------------------------------------------------------- config


# Bounds on what a config may make us build (SECURITY.md lists them). A config is data from a stranger: a
# ``num_hidden_layers`` of a million would build for hours (and some config classes allocate a list per layer
# before any module exists), so counts are checked before transformers sees the config, and the build itself
# counts the tensors and modules it creates. Generous for real models: the largest published MoEs have ~100
# layers, <= 512 experts, ~100k tensors in transformers' layout and ~2T parameters.
MAX_CONFIG_LAYERS = 10_000        #: any integer config value whose key mentions "layer" (num_hidden_layers, n_layer, ...)
MAX_CONFIG_EXPERTS = 65_536       #: num_*/n_* config values whose key mentions "expert" (num_experts, n_routed_experts, ...)
MAX_MODEL_TENSORS = 200_000       #: parameters + buffers registered while the model is built
MAX_MODEL_MODULES = 400_000       #: submodules registered while the model is built
MAX_MODEL_PARAMS = 10**14         #: elements of those parameters and buffers (100T; meta tensors cost no memory)


def config_path(config: str | os.PathLike[str]) -> Path:
    p = Path(config)
    if p.is_dir():
        p = p / "config.json"
    if not p.exists():
        raise ConfigError(f"{p}: config not found")
    check_regular(p, what="config.json", error=ConfigError)
    if not link_stays_inside(p, p.parent):
        raise ConfigError(f"{p}: a symbolic link to {safe_text(p.resolve())}, outside its folder; refusing to read it")
    return p


def check_config_counts(raw: Any, source: str) -> None:
    """Refuse layer/expert counts past :data:`MAX_CONFIG_LAYERS` / :data:`MAX_CONFIG_EXPERTS`, in the config and
    its sub-configs (text_config, vision_config, ...), before any config class turns them into lists or modules."""
    stack: list[tuple[str, Any]] = [("", raw)]
    while stack:
        where, o = stack.pop()
        if not isinstance(o, dict):
            continue
        for k, v in o.items():
            key = str(k)
            if isinstance(v, dict):
                stack.append((f"{where}{key}.", v))
                continue
            if type(v) is not int:
                continue
            low = key.lower()
            if "layer" in low and abs(v) > MAX_CONFIG_LAYERS:
                limit, what = MAX_CONFIG_LAYERS, "layers"
            elif "expert" in low and low.startswith(("num_", "n_", "moe_num_", "moe_n_")) and abs(v) > MAX_CONFIG_EXPERTS:
                limit, what = MAX_CONFIG_EXPERTS, "experts"
            else:
                continue
            raise ConfigError(
                f"{source}: {safe_text(where + key)} is {v}, over the limit of {limit:,} {what} this tool builds "
                "(no real model comes close); refusing to build it"
            )


def load_config(config: str | os.PathLike[str]) -> Any:
    """Read a Hugging Face config.json (a directory or the file) into its transformers config class.

    The file is read bounded (a regular file of at most ``fsio.MAX_JSON_BYTES``, nesting capped) and its counts
    checked (:func:`check_config_counts`) before transformers parses it."""
    p = config_path(config)
    raw = load_json(p, what="config.json", error=ConfigError)
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: invalid config.json: expected a JSON object")
    check_config_counts(raw, str(p))
    model_type = raw.get("model_type")
    if not model_type:
        raise ConfigError(f"{p}: config.json has no \"model_type\"; cannot tell which transformers model it is")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise ConfigError(f"{p}: unknown model_type {_clip(model_type)} (not in this transformers version)")
    try:
        # the same reader as from_pretrained / AutoConfig.from_pretrained (from_dict), not the bare constructor
        return CONFIG_MAPPING[model_type].from_pretrained(str(p), local_files_only=True)
    except Exception as e:  # config classes raise many types on bad values
        raise ConfigError(f"{p}: invalid config for model_type {model_type!r}: {one_line(e)}") from e


def _clip(value: Any, limit: int = 80) -> str:
    """repr of a value from a file, cut to ``limit`` characters: a 10 MB model_type must not become a 10 MB line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# --------------------------------------------------------------------------------------------- building


def load_dtype(config: Any, checkpoint_dtype: str | None) -> torch.dtype:
    """The dtype ``from_pretrained(dtype="auto")`` loads in: config.dtype, else the checkpoint's first float dtype."""
    import torch

    dt = getattr(config, "dtype", None) if config is not None else None
    if isinstance(dt, str):
        dt = getattr(torch, dt, None)
    if isinstance(dt, torch.dtype):
        return dt
    if checkpoint_dtype:
        return getattr(torch, checkpoint_dtype)
    return torch.get_default_dtype()


QUANTIZATION_MODES = ("auto", "quantized", "off")


def build_model(
    spec: ModelSpec,
    *,
    checkpoint_dtype: str | None = None,
    default_config: str | None = None,
    checkpoint_files: tuple[str, ...] | list[str] | None = None,
    quantization: str | None = None,
    cancel: Any = None,
) -> BuiltModel:
    """Instantiate the model on the meta device (no memory, milliseconds even for 70B).

    A config with a ``quantization_config`` gets transformers' own HfQuantizer, as from_pretrained builds it
    (see :func:`prepare_quantizer`): ``quantization="auto"`` decides as from_pretrained would on this machine,
    ``"quantized"`` keeps the pre-quantized layout whatever this machine supports, ``"off"`` ignores it (with a
    note). ``None`` (the default, for callers that want the plain float model, e.g. fresh init) ignores it silently.
    ``cancel`` (the :mod:`explorer.core.jobs` protocol) is polled as modules are registered: a build of a 70B stops
    within a module, raising Cancelled.
    """
    if spec.model:
        return _build_custom(spec, cancel=cancel)
    if quantization is not None and quantization not in QUANTIZATION_MODES:
        raise ConfigError(f"quantization: expected one of {', '.join(QUANTIZATION_MODES)}, found {quantization!r}")
    cfg_src = spec.config or default_config
    if cfg_src is None:
        raise ConfigError("no model given: pass --config (a folder with config.json) or --model pkg.module:Class")
    config = load_config(cfg_src)
    source = str(config_path(cfg_src))
    cls = resolve_class(config, spec.arch, source=source)
    family = family_mismatch(cls, config)
    with quiet_transformers():  # its "model of type bert to instantiate gpt2" warning is the report's `family`
        config = config_for_class(cls, config, source)
    out_spec = ModelSpec(config=str(cfg_src), arch=cls.__name__, model=None, model_kwargs=spec.model_kwargs)
    quantizer, notes = prepare_quantizer(config, mode=quantization) if quantization else (None, ())
    if quantizer is not None:
        try:
            dtype = quantizer.update_dtype(load_dtype(config, checkpoint_dtype))
            set_config_dtype(config, dtype)
            with quiet_transformers():  # e.g. "we will dequantize": the notes say it
                module = instantiate_meta(
                    cls, config, dtype, source=source, hf_quantizer=quantizer, checkpoint_files=checkpoint_files,
                    cancel=cancel,
                )
            return BuiltModel(module, out_spec, dtype, config, cls.__name__, quantizer, notes, family)
        except (ConfigError, Cancelled):
            raise  # a build past the limits: no fallback would be smaller
        except Exception as e:  # noqa: BLE001 - a quantizer needing a missing package: fall back, say so
            notes = (_fallback_note(_quant_method(config), e),)
            config = config_for_class(cls, load_config(cfg_src), source)
    dtype = load_dtype(config, checkpoint_dtype)
    set_config_dtype(config, dtype)
    module = instantiate_meta(cls, config, dtype, source=source, cancel=cancel)
    return BuiltModel(module, out_spec, dtype, config, cls.__name__, None, notes, family)


def _quant_method(config: Any) -> str:
    qc = _quantization_config(config)
    method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    if isinstance(qc, dict) and (qc.get("load_in_4bit") or qc.get("load_in_8bit")):
        method = f"bitsandbytes {'4' if qc.get('load_in_4bit') else '8'}-bit"
    return str(getattr(method, "value", method) or "unknown method")


def _quantization_config(config: Any) -> Any:
    """The config's quantization_config, or its text config's, where from_pretrained looks (get_hf_quantizer)."""
    qc = getattr(config, "quantization_config", None)
    if qc is None:
        try:
            qc = getattr(config.get_text_config(decoder=True), "quantization_config", None)
        except Exception:  # noqa: BLE001 - configs without a text config
            qc = None
    return qc


def prepare_quantizer(config: Any, *, mode: str = "auto") -> tuple[Any, tuple[str, ...]]:
    """The HfQuantizer ``from_pretrained`` makes for this config (``get_hf_quantizer``), or None, and notes.

    Same sequence as transformers: ``supports_quant_method`` -> ``merge_quantization_configs`` ->
    ``AutoHfQuantizer.from_config(pre_quantized=True)`` -> ``validate_environment`` -> ``update_attn_implementation``.
    ``validate_environment`` only checks this machine (GPU, packages) and may switch to dequantizing on load (FP8
    without a GPU); in ``"auto"`` mode it runs and a failure is noted instead of stopping the report (the layout is
    then the one on a machine where loading works); in ``"quantized"`` mode it is skipped. ``"off"``: no quantizer.
    A quantizer transformers cannot even create here (a package it needs is missing) gives None and a note.
    """
    qc = _quantization_config(config)
    if qc is None:
        return None, ()
    method = _quant_method(config)
    if mode == "off":
        return None, (f"quantization_config ({method}) ignored on request: matched against the unquantized model",)
    with quiet_transformers():  # transformers' warnings become notes
        return _prepare_quantizer(config, qc, method, mode)


def _fallback_note(method: str, e: BaseException) -> str:
    hint = " (a package it needs is not installed here)" if isinstance(e, (ImportError, NameError)) else ""
    return (
        f"quantization_config ({method}): transformers cannot set up its quantizer here{hint}: {type(e).__name__}: "
        f"{one_line(e)}; matched against the unquantized model, so quantization tensors (scales, zero points, packed "
        "weights) show as unexpected"
    )


def _prepare_quantizer(config: Any, qc: Any, method: str, mode: str) -> tuple[Any, tuple[str, ...]]:
    from transformers.quantizers.auto import AutoHfQuantizer

    try:
        raw = qc if isinstance(qc, dict) else qc.to_dict()
        supported = AutoHfQuantizer.supports_quant_method(raw)
    except Exception as e:  # noqa: BLE001 - e.g. no quant_method: from_pretrained fails, the report goes on
        return None, (f"quantization_config ({method}): from_pretrained would fail on it ({one_line(e)}); matched against the unquantized model",)
    if not supported:
        # from_pretrained warns and loads as if unquantized: that is also what we match against
        return None, (f"quantization_config ({method}) unknown to this transformers version: from_pretrained skips it",)
    try:
        merged = AutoHfQuantizer.merge_quantization_configs(qc, None)
        quantizer = AutoHfQuantizer.from_config(merged, pre_quantized=True)
    except Exception as e:  # noqa: BLE001 - a package the config class or quantizer imports is missing
        return None, (_fallback_note(method, e),)
    config.quantization_config = merged
    notes = [f"quantization_config ({method}): matched as from_pretrained loads it, through transformers' {type(quantizer).__name__}"]
    if getattr(quantizer.quantization_config, "dequantize", False):
        notes.append("dequantize=True: quantized tensors are converted into the plain model's weights on load")
    if mode == "auto":
        before = getattr(quantizer.quantization_config, "dequantize", None)
        try:
            quantizer.validate_environment(device_map=None, weights_only=True)
        except Exception as e:  # noqa: BLE001 - GPU / package checks must not block a header-only report
            notes.append(
                f"from_pretrained would refuse on this machine ({type(e).__name__}: {one_line(e)}); "
                "matched as on a machine where it loads"
            )
        if getattr(quantizer.quantization_config, "dequantize", None) and not before:
            notes.append(
                "this machine cannot run the quantized layers, so from_pretrained dequantizes on load (weights and "
                "scales folded into plain weights); pass quantization='quantized' for the layout on a supported GPU"
            )
    else:
        notes.append("environment checks skipped: the pre-quantized layout, as on a machine that supports it")
    try:
        quantizer.update_attn_implementation(config)
    except Exception:  # noqa: BLE001 - only the attention default; irrelevant to keys
        pass
    return quantizer, tuple(notes)


def set_config_dtype(config: Any, dtype: torch.dtype) -> None:
    """As from_pretrained does before building: the load dtype goes on the config and its sub-configs."""
    try:
        config.dtype = dtype
        for key in getattr(config, "sub_configs", None) or {}:
            sub = getattr(config, key, None)
            if sub is not None:
                sub.dtype = dtype
    except Exception:  # a config that refuses the attribute builds as it is  # noqa: BLE001
        pass


class TransformersLock:
    """transformers keeps loading state in module globals: its init context switches weight tying and init functions
    off process-wide, and a match patches its renaming functions. A model built in one thread while another ties
    weights (the window's report beside its init check) would silently lose the tie, so every section that builds or
    matches through transformers holds this lock exclusively (``with transformers_lock:``, re-entrant in its thread).

    Fresh inits share it (:meth:`shared`): any number at once, none while a build or match runs. The first one in
    enters transformers' ``guard_torch_init_functions`` (it patches ``torch.nn.init`` process-wide, the same patch
    for every fresh init), the last one out leaves it, so the patch is never entered or left under another thread.
    A waiting exclusive holder goes first (new shared holders wait for it). A thread holding it exclusively gets
    :meth:`shared` as a no-op (``shared()`` yields False: the caller then enters the guard itself)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._shared = 0
        self._waiting = 0
        self._guard: Any = None
        self._local = threading.local()

    # exclusive
    def __enter__(self) -> TransformersLock:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return self
            if getattr(self._local, "shared", 0):
                raise RuntimeError("a fresh init may not build or match a model (it holds the transformers lock shared)")
            self._waiting += 1
            try:
                while self._owner is not None or self._shared:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._owner, self._depth = me, 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._depth -= 1
            if not self._depth:
                self._owner = None
                self._cond.notify_all()

    def owned(self) -> bool:
        """Whether this thread holds the lock exclusively."""
        return self._owner == threading.get_ident()

    @contextlib.contextmanager
    def shared(self, guard: bool = True) -> Iterator[bool]:
        """Held with other fresh inits, never with a build or match; transformers' init guard entered meanwhile
        (``guard``). Yields True, or False when this thread holds the lock exclusively (nothing shared, no guard)."""
        if self.owned():
            yield False
            return
        with self._cond:
            while self._owner is not None or (self._waiting and not getattr(self._local, "shared", 0)):
                self._cond.wait()
            if not self._shared and guard:
                self._enter_guard()
            self._shared += 1
            self._local.shared = getattr(self._local, "shared", 0) + 1
        try:
            yield True
        finally:
            with self._cond:
                self._local.shared -= 1
                self._shared -= 1
                if not self._shared:
                    self._exit_guard()
                    self._cond.notify_all()

    def _enter_guard(self) -> None:
        try:
            from transformers import initialization as hf_init
        except ImportError:  # pragma: no cover - transformers is a dependency
            return
        g = hf_init.guard_torch_init_functions()
        g.__enter__()
        self._guard = g

    def _exit_guard(self) -> None:
        g, self._guard = self._guard, None
        if g is not None:
            g.__exit__(None, None, None)

    def guarded(self) -> bool:
        """Whether transformers' init guard is entered (by the shared holders)."""
        return self._guard is not None


transformers_lock = TransformersLock()


def instantiate_meta(
    cls: type,
    config: Any,
    dtype: torch.dtype,
    *,
    source: str = "config",
    hf_quantizer: Any = None,
    checkpoint_files: tuple[str, ...] | list[str] | None = None,
    cancel: Any = None,
) -> nn.Module:
    """``cls(config)`` under the class's own init context, exactly as from_pretrained builds it (meta device);
    with a quantizer, its ``preprocess_model`` swaps in the quantized layers inside that context, as there."""
    import copy

    from transformers.utils.generic import ContextManagers

    config = copy.deepcopy(config)
    drop_remote_code(config)
    quantized = hf_quantizer is not None
    try:
        init = ContextManagers(cls.get_init_context(dtype, quantized, False, False))
        with transformers_lock, build_budget(source, cancel=cancel), init:
            model = cls(config)
            if quantized:
                hf_quantizer.preprocess_model(
                    model=model,
                    dtype=dtype,
                    device_map=None,
                    checkpoint_files=list(checkpoint_files) if checkpoint_files else None,
                    use_kernels=False,
                )
            return model
    except (ConfigError, Cancelled):
        raise
    except RecursionError as e:
        raise ConfigError(f"{source}: cannot build {cls.__name__} from this config: it nests modules too deeply") from e
    except Exception as e:
        if quantized:
            raise
        raise ConfigError(f"{source}: cannot build {cls.__name__} from this config: {one_line(e)}") from e


def drop_remote_code(config: Any) -> None:
    """Remove ``auto_map`` from a config and all its sub-configs, in place.

    ``auto_map`` names Python files in the checkpoint's folder (or a Hub repo) for transformers' Auto classes. A
    composite model's ``__init__`` builds its parts with ``AutoModel.from_config``, which for a sub-config with an
    ``auto_map`` asks on stdin whether to run that code (or runs it with ``trust_remote_code=True``, which nothing
    here ever passes). Without the entry it builds transformers' own class, as ``from_pretrained`` does without
    ``trust_remote_code``. A checkpoint's own code is never run."""
    from transformers import PretrainedConfig

    stack, seen = [config], set()
    while stack:
        c = stack.pop()
        if id(c) in seen:
            continue
        seen.add(id(c))
        if "auto_map" in vars(c):
            del c.auto_map
        for v in vars(c).values():
            if isinstance(v, PretrainedConfig):
                stack.append(v)
            elif isinstance(v, (list, tuple)):
                stack.extend(x for x in v if isinstance(x, PretrainedConfig))
            elif isinstance(v, dict):
                stack.extend(x for x in v.values() if isinstance(x, PretrainedConfig))


@contextlib.contextmanager
def build_budget(source: str, *, cancel: Any = None) -> Iterator[None]:
    """Count the tensors, modules and elements registered on this thread while the block runs (torch's global
    registration hooks), and stop the build with a ConfigError naming ``source`` past :data:`MAX_MODEL_TENSORS`,
    :data:`MAX_MODEL_MODULES` or :data:`MAX_MODEL_PARAMS`, or with Cancelled as soon as ``cancel`` asks. Builds on
    other threads are not counted."""
    from torch.nn.modules import module as torch_module

    owner = threading.get_ident()
    counts = {"tensors": 0, "modules": 0, "elements": 0}

    def stop(what: str, limit: int) -> ConfigError:
        return ConfigError(
            f"{source}: the model would have more than {limit:,} {what}; refusing to build it (a config this large is "
            "not a real model; the limits are in explorer.core.model)"
        )

    def on_tensor(module: Any, name: str, t: Any) -> None:
        if t is None or threading.get_ident() != owner:
            return
        counts["tensors"] += 1
        counts["elements"] += t.numel()
        if counts["tensors"] > MAX_MODEL_TENSORS:
            raise stop("tensors (parameters and buffers)", MAX_MODEL_TENSORS)
        if counts["elements"] > MAX_MODEL_PARAMS:
            raise stop("parameter elements", MAX_MODEL_PARAMS)

    def on_module(module: Any, name: str, sub: Any) -> None:
        if sub is None or threading.get_ident() != owner:
            return
        counts["modules"] += 1
        if counts["modules"] > MAX_MODEL_MODULES:
            raise stop("modules", MAX_MODEL_MODULES)
        if cancel is not None and is_cancelled(cancel):  # between modules: a 70B's build stops within a layer
            raise Cancelled("cancelled")

    handles = [
        torch_module.register_module_parameter_registration_hook(on_tensor),
        torch_module.register_module_buffer_registration_hook(on_tensor),
        torch_module.register_module_module_registration_hook(on_module),
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _build_custom(spec: ModelSpec, *, cancel: Any = None) -> BuiltModel:
    import torch

    assert spec.model is not None
    mod_name, sep, qual = spec.model.partition(":")
    if not sep or not mod_name or not qual:
        raise ConfigError(f"{spec.model}: expected a class path like pkg.module:Class")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"{spec.model}: cannot import module {mod_name!r}: {one_line(e)}") from e
    obj: Any = mod
    for part in qual.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"{spec.model}: module {mod_name!r} has no attribute {qual!r}")
    if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module)):
        # checked before the call: `--model os:system` must not run os.system(**model_kwargs)
        raise ConfigError(f"{spec.model}: not a torch.nn.Module class (found {type(obj).__name__}); "
                          "--model names a class like pkg.module:Class")
    try:
        with build_budget(spec.model, cancel=cancel), torch.device("meta"):
            module = obj(**spec.model_kwargs)
    except (ConfigError, Cancelled):
        raise
    except Exception as e:
        raise ConfigError(f"{spec.model}: cannot construct with kwargs {spec.model_kwargs}: {one_line(e)}") from e
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"{spec.model}: returned {type(module).__name__}, expected a torch.nn.Module")
    return BuiltModel(module, spec, torch.get_default_dtype(), None, type(module).__name__)


# --------------------------------------------------------------------------------------------- tree


def module_tree(module: nn.Module) -> ModuleNode:
    """Every submodule with its own parameters and buffers (state-dict keys), and subtree totals."""
    sd_keys = set(module.state_dict(keep_vars=True).keys())
    own: dict[str, list[ParamEntry]] = {}
    classes: dict[str, str] = {}
    for path, m in module.named_modules(remove_duplicate=False):
        if path in classes:
            continue
        classes[path] = type(m).__name__
        entries = own.setdefault(path, [])
        pre = f"{path}." if path else ""
        for n, p in m._parameters.items():
            if p is not None:
                entries.append(ParamEntry(pre + n, tuple(p.shape), _dt(p.dtype), "parameter"))
        for n, b in m._buffers.items():
            if b is not None:
                key = pre + n
                entries.append(ParamEntry(key, tuple(b.shape), _dt(b.dtype), "buffer", key in sd_keys))
    children: dict[str, list[str]] = {p: [] for p in classes}
    for p in classes:
        if p:
            parent = p.rsplit(".", 1)[0] if "." in p else ""
            while parent not in classes:  # a ModuleDict/Sequential in between is always registered, but be safe
                parent = parent.rsplit(".", 1)[0] if "." in parent else ""
            children[parent].append(p)

    def build(path: str) -> ModuleNode:
        kids = tuple(build(c) for c in children[path])
        params = tuple(own[path])
        n = sum(e.numel for e in params if e.kind == "parameter") + sum(k.n_params for k in kids)
        b = sum(e.nbytes for e in params if e.persistent) + sum(k.nbytes for k in kids)
        return ModuleNode(path, classes[path], params, kids, n, b)

    import sys

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 10000))
    try:
        return build("")
    finally:
        sys.setrecursionlimit(old)


def _dt(dt: Any) -> str:
    return str(dt).removeprefix("torch.")
