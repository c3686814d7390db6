"""What matching found, as immutable records: per key a :class:`Status` and the :class:`How` behind it, the
:class:`Report` of a checkpoint against a model, and the :class:`DisplayKind` a front-end shows for a key
(a status refined by its how: tied, renamed, dtype). Colours and icons for the kinds live in the GUI palette.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .sources.index import frozen_record

if TYPE_CHECKING:
    from .checkpoint import CheckpointIndex, TensorInfo
    from .disk_tree import DiskNode
    from .model import ModelSpec, ModuleNode


class Status(str, Enum):
    """What loading does with a key. (Colours live in the GUI palette, not here.)"""

    MATCHED = "matched"  # loaded
    MISSING = "missing"  # model key not in the checkpoint: freshly initialised
    UNEXPECTED = "unexpected"  # checkpoint key the model has no place for: dropped, reported
    MISMATCHED = "mismatched"  # found but the shape differs: freshly initialised
    IGNORED = "ignored"  # silenced by the model's ignore rules or dropped as a duplicate: not reported
    COMPUTED = "computed"  # non-persistent buffer: never saved, computed at init
    IN_CHECKPOINT = "in_checkpoint"  # no model to match against: the tensor as it is on disk (neither good nor bad)


class How(str, Enum):
    """Why a key matched (or not) the way it did. A key may carry several."""

    EXACT = "exact"
    RENAMED = "renamed"  # by a WeightRenaming (legacy names, model-specific renames)
    KEY_MAPPING = "key_mapping"  # by the user's key_mapping
    CONVERTED = "converted"  # by a WeightConverter (fused/split tensors, e.g. MoE experts)
    PREFIX_ADDED = "prefix_added"  # base-model checkpoint into a head model
    PREFIX_STRIPPED = "prefix_stripped"  # head checkpoint into a base model
    TIED = "tied"  # not in the checkpoint but tied to a loaded weight
    IGNORED_RULE = "ignored_by_rule"  # _keys_to_ignore_on_load_missing/unexpected
    DUPLICATE = "duplicate"  # another checkpoint key loaded into the same target first
    DTYPE_DIFFERS = "dtype_differs"  # loaded with a cast


@dataclass(frozen=True)
class ModelKey:
    """A model state-dict key and what loading does to it."""

    key: str
    status: Status
    how: tuple[How, ...]
    model_shape: tuple[int, ...]
    model_dtype: str
    sources: tuple[str, ...] = ()  # on-disk names that feed it
    checkpoint_shape: tuple[int, ...] | None = None
    checkpoint_dtype: str | None = None
    tied_to: str | None = None  # only for a key loaded through a tie (How.TIED)
    newly_initialized: bool = False
    # a tie partner that is also in the checkpoint: from_pretrained ties the pair only if their values are equal
    tied_if_equal: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "status": self.status.value,
            "how": [h.value for h in self.how],
            "sources": list(self.sources),
            "model_shape": list(self.model_shape),
            "model_dtype": self.model_dtype,
            "checkpoint_shape": list(self.checkpoint_shape) if self.checkpoint_shape is not None else None,
            "checkpoint_dtype": self.checkpoint_dtype,
            "tied_to": self.tied_to,
            "tied_if_equal": self.tied_if_equal,
            "newly_initialized": self.newly_initialized,
        }


@dataclass(frozen=True)
class CheckpointKey:
    """A tensor as stored on disk and where loading puts it."""

    name: str
    status: Status
    how: tuple[How, ...]
    targets: tuple[str, ...]  # model keys it loads into (after renames/converters/prefix)
    reported_as: str  # the name transformers reports it under when unexpected (its renamed form)
    info: TensorInfo


def new_checkpoint_key(name: str, status: Status, how: tuple[How, ...], targets: tuple[str, ...], reported_as: str,
                       info: TensorInfo) -> CheckpointKey:
    """``CheckpointKey(name, status, how, targets, reported_as, info)`` through ``frozen_record`` (a report makes one
    per tensor: 47k for a large MoE)."""
    return frozen_record(CheckpointKey, name=name, status=status, how=how, targets=targets, reported_as=reported_as,
                         info=info)


@dataclass(frozen=True)
class FamilyMismatch:
    """The config is of one model family (its ``model_type``) and the class built from it of another (``--arch
    GPT2LMHeadModel`` with a BERT config): transformers reads the config as the class's own config type, with
    defaults for whatever it lacks, so almost nothing loads. ``heads``: classes of the config's own family."""

    config_type: str  # the config.json's model_type
    class_type: str  # the model_type of the class's config class
    arch: str  # the class built
    heads: tuple[str, ...] = ()  # the config family's classes, base model first (a head chooser)

    def message(self, *, classes: bool = True) -> str:
        """One line; ``classes``: end with the first classes of the config's family."""
        return (f"{self.arch} is a {self.class_type!r} model but the config is {self.config_type!r}: transformers reads "
                f"the config as a {self.class_type} config (defaults for the rest), so almost nothing loads"
                + (f"; classes for {self.config_type!r}: {', '.join(self.heads[:6])}{', ...' if len(self.heads) > 6 else ''}"
                   if self.heads and classes else ""))

    def to_json(self) -> dict[str, Any]:
        return {"config_model_type": self.config_type, "class_model_type": self.class_type, "arch": self.arch,
                "classes": list(self.heads)}


@dataclass(frozen=True)
class Report:
    """The immutable result of matching a checkpoint against a model."""

    index: CheckpointIndex
    spec: ModelSpec | None
    tree: ModuleNode | None
    model_keys: Mapping[str, ModelKey]
    checkpoint_keys: Mapping[str, CheckpointKey]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]
    key_mapping: Mapping[str, str] | None = None
    suggested_key_mapping: Mapping[str, str] | None = None
    suggestion_effect: Mapping[str, int] | None = None  # counts after applying the suggestion
    suggestion_reason: str | None = None  # what the suggestion fixes: "prefix trouble", "torchtitan naming"
    load_dtype: str | None = None
    arch: str | None = None
    base_model_prefix: str | None = None
    notes: tuple[str, ...] = ()
    disk: DiskNode | None = None  # no model: the module tree the on-disk names imply, with roll-ups
    family: FamilyMismatch | None = None  # the class is of another model family than the config

    @property
    def has_model(self) -> bool:
        return self.spec is not None

    @property
    def is_clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def counts(self) -> dict[str, int]:
        c = Counter(k.status._value_ for k in self.model_keys.values())
        return {
            "matched": c.get("matched", 0),
            "missing": len(self.missing),
            "unexpected": len(self.unexpected),
            "mismatched": len(self.mismatched),
            "ignored": c.get("ignored", 0) + sum(1 for k in self.checkpoint_keys.values() if k.status is Status.IGNORED),
            "tensors": len(self.index.tensors),
        }

    def params_loaded(self) -> tuple[int, int]:
        """(parameters loaded from the checkpoint, parameters newly initialised)."""
        loaded = fresh = 0
        for k in self.model_keys.values():
            n = math.prod(k.model_shape)
            # a key loaded by tying shares its partner's tensor: counted once, with the partner
            if k.status is Status.COMPUTED or How.TIED in k.how:
                continue
            if k.newly_initialized:
                fresh += n
            else:
                loaded += n
        return loaded, fresh

    def to_json(self) -> dict[str, Any]:
        # ``_value_`` (enum's documented member attribute) rather than the ``value`` property: 100k look-ups here
        matched = [
            {
                "key": k.key,
                "how": [h._value_ for h in k.how],
                "source": list(k.sources),
                "tied_to": k.tied_to,
                "tied_if_equal": k.tied_if_equal,
                "checkpoint_dtype": k.checkpoint_dtype,
                "model_dtype": k.model_dtype,
            }
            for k in self.model_keys.values()
            if k.status is Status.MATCHED
        ]
        return {
            "checkpoint": self.index.path,
            "format": self.index.format,
            "files": list(self.index.files),
            "wrapper_key": self.index.wrapper_key,
            "wrapper_candidates": list(self.index.wrapper_candidates),
            "wrapper_others": list(self.index.wrapper_others),
            "model": self.spec.to_json() if self.spec else None,
            "arch": self.arch,
            "load_dtype": self.load_dtype,
            "counts": self.counts(),
            "tensors": [t.to_json() for t in self.index.tensors.values()],
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "mismatched": [[k, list(a), list(b)] for k, a, b in self.mismatched],
            "matched": matched,
            "ignored": sorted(
                [k.key for k in self.model_keys.values() if k.status is Status.IGNORED]
                + [k.name for k in self.checkpoint_keys.values() if k.status is Status.IGNORED]
            ),
            "newly_initialized": sorted(k.key for k in self.model_keys.values() if k.newly_initialized),
            "checkpoint_keys": [
                {
                    "name": c.name,
                    "status": c.status._value_,
                    "how": [h._value_ for h in c.how],
                    "targets": list(c.targets),
                    "reported_as": c.reported_as,
                }
                for c in self.checkpoint_keys.values()
            ],
            "key_mapping": dict(self.key_mapping) if self.key_mapping else None,
            "suggested_key_mapping": dict(self.suggested_key_mapping) if self.suggested_key_mapping else None,
            "suggestion_effect": dict(self.suggestion_effect) if self.suggestion_effect else None,
            "suggestion_reason": self.suggestion_reason,
            "notes": list(self.notes),
            "family_mismatch": self.family.to_json() if self.family else None,
            "modules": [n.to_json() for n in self.disk.walk() if n.path] if self.disk is not None else None,
        }


class DisplayKind(str, Enum):
    """What a front-end shows for a key: its Status, refined by its How (legend order)."""

    MATCHED = "matched"
    RENAMED = "renamed"  # loaded under another name: a rename, key mapping or converter
    TIED = "tied"  # not stored: shares the weight it is tied to
    DTYPE = "dtype"  # loaded with a cast
    MISSING = "missing"
    MISMATCHED = "mismatched"
    UNEXPECTED = "unexpected"
    IGNORED = "ignored"
    COMPUTED = "computed"
    IN_CHECKPOINT = "in_checkpoint"  # no model: a tensor shown as it is on disk
    UNTRAINED = "untrained"  # not a loading status: the init check's verdict, shown beside the status


_RENAMED = frozenset({How.RENAMED, How.KEY_MAPPING, How.CONVERTED})


def display_kind(status: Status, how: Iterable[How] = ()) -> DisplayKind:
    """The display kind of a key: a matched key shows how it matched (tied before renamed before dtype); any other
    status is its own kind."""
    if status is Status.MATCHED:
        hv = set(how)
        if How.TIED in hv:
            return DisplayKind.TIED
        if hv & _RENAMED:
            return DisplayKind.RENAMED
        if How.DTYPE_DIFFERS in hv:
            return DisplayKind.DTYPE
        return DisplayKind.MATCHED
    return DisplayKind(status.value)
