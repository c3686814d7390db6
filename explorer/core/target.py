"""What a command or the window works on, resolved once: checkpoint + model spec + wrapper + key mapping + quantization.

A front-end turns what the user gave (CLI arguments, the window's open request, a plan's recorded source) into a
:class:`TargetSpec`; :meth:`TargetSpec.resolve` opens the checkpoint's headers and decides the model, giving a frozen
:class:`Target` that report, plan, export, init check and the window consume. The rule "no config given: use the
config.json beside the checkpoint" lives here only (:func:`config_beside`, :func:`resolve_model`); which transformers
class a config builds (``--arch``, else ``architectures[0]``) is :func:`explorer.core.model.build_model`'s.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .checkpoint import CheckpointIndex
from .errors import ConfigError, ExplorerError
from .keys import check_key_mapping
from .model import QUANTIZATION_MODES, ModelSpec

CONFIG_NAME = "config.json"


def config_beside(path: str | os.PathLike[str]) -> str | None:
    """The folder of ``path`` (itself if a folder) when it holds a config.json, else None: the checkpoint's own config."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    # lexists, not is_file: a FIFO, device or outside link named config.json is the checkpoint's config, and
    # reading it is refused in one line (model.config_path), never silently taken for "no config"
    return str(folder) if os.path.lexists(folder / CONFIG_NAME) else None


def resolve_model(
    index: CheckpointIndex,
    spec: ModelSpec | None,
    *,
    required: bool = False,
    missing: ExplorerError | None = None,
) -> ModelSpec | None:
    """The model to match ``index`` against, with its config decided.

    A class path (``model``) or a ``config`` is used as given. Otherwise (no spec, or only ``arch``) the config.json
    beside the checkpoint is the config. Without one: ``spec=None`` gives None (a checkpoint-only report) unless
    ``required``; then ``missing`` is raised, or a ConfigError naming the checkpoint and what to pass."""
    if spec is not None and (spec.model or spec.config):
        return spec
    from .remote import config_of, is_remote

    folder = config_of(index) if is_remote(index) else config_beside(index.folder)
    if folder is not None:
        return ModelSpec(config=folder) if spec is None else dataclasses.replace(spec, config=folder)
    if spec is None and not required:
        return None
    if missing is not None:
        raise missing
    if spec is not None and spec.arch:
        raise ConfigError(f"{index.path}: --arch {spec.arch} needs a config: no config.json beside the checkpoint; pass --config")
    raise ConfigError(f"{index.path}: no model given and no config.json beside the checkpoint; pass --config or --model")


@dataclass(frozen=True)
class TargetSpec:
    """What to open, as given: nothing here has been read yet.

    ``need_model``: None = match against a model when one is known (given, or a config.json beside the checkpoint),
    True = a model is required (plan, init check), False = the checkpoint alone (``--no-model``)."""

    checkpoint: str
    config: str | None = None  # a folder holding config.json, or the file
    arch: str | None = None  # transformers class name
    model: str | None = None  # "pkg.module:Class" for a plain nn.Module
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    wrapper: str | None = None  # the sub-dict of a wrapper checkpoint (state_dict, model, ...)
    key_mapping: Mapping[str, str] | None = None
    auto_fix: bool = False  # apply the suggested key mapping when prefix trouble is found
    quantization: str = "auto"  # see explorer.core.model.build_model
    need_model: bool | None = None
    revision: str | None = None  # of a Hub checkpoint (``--revision``; default main)
    download: bool = False  # a remote torch pickle: download it into the HF cache (``--download``)

    def model_spec(self) -> ModelSpec | None:
        """The model as given (before the config.json-beside rule), None when nothing was given. A ``config``
        spelled as a Hub repo id that is not a local path is that repo's config.json (downloaded into the HF cache)."""
        if self.model:
            return ModelSpec(model=self.model, model_kwargs=dict(self.model_kwargs))
        if self.config or self.arch:
            config = self.config
            if config:
                from .remote import config_source

                config = config_source(config)
            return ModelSpec(config=config, arch=self.arch)
        return None

    def resolve(self, *, index: CheckpointIndex | None = None, missing: ExplorerError | None = None,
                progress: Any = None, cancel: Any = None) -> Target:
        """Open the checkpoint's headers (or use ``index``) and decide the model. ``missing`` replaces the error
        raised when a required model cannot be found. ``progress`` / ``cancel`` (core.jobs) reach a remote source's
        header fetch (per shard). Raises ExplorerError subclasses with one-line messages."""
        if index is None:
            from .remote import open_source

            index = open_source(self.checkpoint, revision=self.revision, wrapper=self.wrapper, download=self.download,
                                progress=progress, cancel=cancel)
        if self.quantization not in QUANTIZATION_MODES:
            raise ConfigError(f"quantization: expected one of {', '.join(QUANTIZATION_MODES)}, found {self.quantization!r}")
        km = check_key_mapping(self.key_mapping) if self.key_mapping else None
        spec = None
        if self.need_model is not False:
            spec = resolve_model(index, self.model_spec(), required=bool(self.need_model), missing=missing)
        return Target(index, spec, km, self.auto_fix, self.quantization)


@dataclass(frozen=True)
class Target:
    """A checkpoint's index and the model it is matched against, decided once (``spec`` None: checkpoint only).
    ``explorer.core.matching.report(target)`` matches it."""

    index: CheckpointIndex
    spec: ModelSpec | None
    key_mapping: Mapping[str, str] | None = None
    auto_fix: bool = False
    quantization: str = "auto"

    @property
    def has_model(self) -> bool:
        return self.spec is not None
