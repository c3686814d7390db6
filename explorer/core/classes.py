"""Which transformers class a config builds, and whether it fits: ``--arch`` or the config's ``architectures[0]``
(:func:`resolve_class`, looked up by bare name on the transformers package, never imported from a path), the classes
of a config's family for a head chooser (:func:`head_classes`), "did you mean" for a typo (:class:`UnknownClass`
carries the hint and the family's classes), a class of another family than the config (:func:`family_mismatch`) and
the config the class reads (:func:`config_for_class`)."""
from __future__ import annotations

from typing import Any

from .errors import ConfigError, one_line


class UnknownClass(ConfigError):
    """``--arch`` names no transformers model class. ``suggestion``: the closest name ("did you mean"), ``heads``:
    the config family's classes (base model first); a front-end can load the config's own class instead."""

    def __init__(self, message: str, *, arch: str, suggestion: str | None, heads: tuple[str, ...]) -> None:
        super().__init__(message)
        self.arch, self.suggestion, self.heads = arch, suggestion, heads


def head_classes(config: Any) -> list[str]:
    """transformers classes that accept this config's model_type (base model first), for a head chooser."""
    return family_classes(config.model_type)


def family_classes(mt: str) -> list[str]:
    """transformers classes of the model family ``mt`` (a config's model_type), base model first."""
    import transformers
    from transformers.models.auto import modeling_auto

    names: list[str] = []
    for attr in dir(modeling_auto):
        if attr.startswith("MODEL_") and attr.endswith("_MAPPING_NAMES"):
            v = getattr(modeling_auto, attr).get(mt)
            for n in v if isinstance(v, (list, tuple)) else [v]:
                if isinstance(n, str) and n not in names and hasattr(transformers, n):
                    names.append(n)
    base = modeling_auto.MODEL_MAPPING_NAMES.get(mt)
    if isinstance(base, str) and base in names:
        names.remove(base)
        names.insert(0, base)
    return names


def resolve_class(config: Any, arch: str | None, *, source: str = "config") -> type:
    import transformers
    from transformers import PreTrainedModel

    given = arch is not None  # from the user (--arch), not from the config: blame the option
    if arch is None:
        archs = getattr(config, "architectures", None) or []
        if archs:
            arch = archs[0]
        else:
            from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

            arch = MODEL_MAPPING_NAMES.get(config.model_type)
            if not isinstance(arch, str):
                raise ConfigError(f"{source}: no \"architectures\" in config and no base model for {config.model_type!r}; pass --arch")
    if not isinstance(arch, str) or not arch.isidentifier() or arch.startswith("_"):
        # a class is only ever looked up by its bare name on the transformers package: never a path to import
        if given:
            raise ConfigError(f"--arch {arch}: expected a transformers class name such as BertModel (a custom class "
                              "is --model pkg.module:Class)")
        raise ConfigError(f"{source}: architectures names {arch!r}, not a transformers class name")
    try:
        cls = getattr(transformers, arch)
    except (AttributeError, ImportError, RuntimeError) as e:
        if given:
            raise _unknown(arch, config, "unknown transformers model class") from e
        raise ConfigError(f"{source}: unknown class {arch!r}: not a transformers model class") from e
    if not (isinstance(cls, type) and issubclass(cls, PreTrainedModel)):
        if given:
            raise _unknown(arch, config, "not a transformers model class")
        raise ConfigError(f"{source}: {arch!r} is not a transformers model class")
    return cls


def _unknown(arch: str, config: Any, what: str) -> UnknownClass:
    """``--arch X: <what>; did you mean Y?`` (from the classes for this config's model_type, else from every
    transformers name), or the family's classes when nothing is close."""
    import difflib

    import transformers

    try:
        heads = head_classes(config)
    except Exception:  # noqa: BLE001 - only a hint
        heads = []
    close = difflib.get_close_matches(arch, heads, n=1, cutoff=0.8)
    if not close:
        models = [n for n in dir(transformers) if n[:1].isupper() and ("Model" in n or "For" in n) and n != arch]
        close = difflib.get_close_matches(arch, models, n=1, cutoff=0.8)
    mt = getattr(config, "model_type", None)
    hint = f"; did you mean {close[0]}?" if close else ""
    if not close and heads:
        hint = f"; classes for model_type {mt!r}: {', '.join(heads[:8])}{', ...' if len(heads) > 8 else ''}"
    return UnknownClass(f"--arch {arch}: {what}{hint}", arch=arch, suggestion=close[0] if close else None,
                        heads=tuple(heads))


def family_mismatch(cls: type, config: Any) -> tuple[str, str] | None:
    """(the config's model_type, the class's) when ``cls`` belongs to another model family than ``config`` —
    transformers' own test in ``PretrainedConfig.from_pretrained`` (the "You are using a model of type bert to
    instantiate a model of type gpt2" warning): a sub-model whose config is a part of the composite config
    (``base_config_key``, or any sub-config of the class's type) is not a mismatch. None when they agree."""
    from transformers import PretrainedConfig

    config_class = getattr(cls, "config_class", None)
    want = getattr(config_class, "model_type", "") if config_class is not None else ""
    have = getattr(config, "model_type", "")
    if not want or not have or want == have:
        return None
    key = getattr(config_class, "base_config_key", "")
    subs = [getattr(config, key, None)] if key else []
    subs += [v for v in vars(config).values() if isinstance(v, PretrainedConfig)]
    if any(isinstance(v, PretrainedConfig) and v.model_type == want for v in subs):
        return None
    return str(have), str(want)


def config_for_class(cls: type, config: Any, source: str) -> Any:
    """The config ``cls.from_pretrained`` would build: read by the class's own ``config_class``, which for a
    sub-model (CLIPVisionModel from a CLIP config.json) picks its sub-config out by ``base_config_key``."""
    config_class = getattr(cls, "config_class", None)
    if config_class is None or type(config) is config_class:
        return config
    try:
        return config_class.from_pretrained(source, local_files_only=True)
    except Exception as e:  # config classes raise many types on bad values
        raise ConfigError(f"{source}: cannot read this config as {config_class.__name__} for {cls.__name__}: {one_line(e)}") from e


