"""A :class:`~explorer.core.report.Report` as plain JSON data and back, without torch or transformers: what the
report cache stores (``report_cache``) for the CLI and the window alike.

``to_data(rep)`` keeps everything matching decided — the model keys, the checkpoint keys' statuses and targets,
the module tree, the model spec, suggestions, notes, the family mismatch — but not the checkpoint's index: the
reader of an entry opens the headers anyway (the cache key is computed from them), and ``from_data(data, index)``
puts that index back in. A checkpoint-only report's ``disk`` tree is rebuilt from the index (``disk_tree``: a
function of the names alone). ``from_data(to_data(r), r.index) == r`` for every report ``to_data`` accepts
(``tests/core/test_report_data.py``); anything it cannot restore exactly makes ``to_data`` return None (the report
is then not cached) and any malformed data makes ``from_data`` raise ValueError (a cache miss).

The module tree is stored flat (pre-order, each node with its parent's position), so no entry nests deeper than
a few levels whatever the model's depth.
"""
from __future__ import annotations

from typing import Any

from .model import ModelSpec, ModuleNode, ParamEntry
from .report import CheckpointKey, FamilyMismatch, How, ModelKey, Report, Status

FORMAT = 1
_STATUS = {s.value: s for s in Status}
_HOW = {h.value: h for h in How}


def _hows(values: Any) -> tuple[How, ...]:
    return tuple(_HOW[h] for h in values) if values else ()


def _shape(s: Any) -> tuple[int, ...]:
    out = tuple(s)
    if not all(type(d) is int for d in out):
        raise ValueError("a shape holds a non-integer")
    return out


def to_data(rep: Report) -> dict[str, Any] | None:
    """The report as JSON-ready data (lists, dicts, strings, numbers), or None when it cannot be stored exactly."""
    index = rep.index
    ck = []
    for name, c in rep.checkpoint_keys.items():
        if c.name != name or index.tensors.get(name) != c.info:
            return None  # a record that is not the index's own (an adapter's merged view): not ours to restore
        ck.append([name, c.status.value, [h.value for h in c.how], list(c.targets), c.reported_as])
    mk = []
    for key, k in rep.model_keys.items():
        if k.key != key:
            return None
        mk.append([key, k.status.value, [h.value for h in k.how], [int(d) for d in k.model_shape], k.model_dtype,
                   list(k.sources), None if k.checkpoint_shape is None else [int(d) for d in k.checkpoint_shape],
                   k.checkpoint_dtype, k.tied_to, k.newly_initialized, k.tied_if_equal])
    tree = None
    if rep.tree is not None:
        tree = []
        stack: list[tuple[ModuleNode, int]] = [(rep.tree, -1)]
        while stack:
            node, parent = stack.pop()
            here = len(tree)
            tree.append([parent, node.path, node.class_name, node.n_params, node.nbytes,
                         [[p.key, [int(d) for d in p.shape], p.dtype, p.kind, p.persistent] for p in node.params]])
            stack.extend((c, here) for c in reversed(node.children))
    spec = rep.spec
    if spec is not None and spec.model:
        return None  # a class given as code: not ours to fingerprint, never cached
    fam = rep.family
    if rep.disk is not None and rep.has_model:
        return None  # not a shape matching produces
    return {
        "format": FORMAT,
        "spec": None if spec is None else {"config": spec.config, "arch": spec.arch, "model_kwargs": dict(spec.model_kwargs)},
        "tree": tree,
        "model_keys": mk,
        "checkpoint_keys": ck,
        "missing": list(rep.missing),
        "unexpected": list(rep.unexpected),
        "mismatched": [[k, [int(d) for d in a], [int(d) for d in b]] for k, a, b in rep.mismatched],
        "key_mapping": None if rep.key_mapping is None else dict(rep.key_mapping),
        "suggested_key_mapping": None if rep.suggested_key_mapping is None else dict(rep.suggested_key_mapping),
        "suggestion_effect": None if rep.suggestion_effect is None else dict(rep.suggestion_effect),
        "suggestion_reason": rep.suggestion_reason,
        "load_dtype": rep.load_dtype,
        "arch": rep.arch,
        "base_model_prefix": rep.base_model_prefix,
        "notes": list(rep.notes),
        "disk": rep.disk is not None,
        "family": None if fam is None else [fam.config_type, fam.class_type, fam.arch, list(fam.heads)],
    }


def _str_map(v: Any) -> dict[str, Any] | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise ValueError("expected a mapping")
    return dict(v)


def from_data(data: Any, index: Any) -> Report:
    """The Report ``data`` holds, on ``index`` (the CheckpointIndex it was computed from). Raises ValueError (or
    KeyError / TypeError, all meaning "not a report of this index") on anything malformed."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("not report data of this format")
    tensors = index.tensors
    ck = {}
    for name, status, how, targets, reported_as in data["checkpoint_keys"]:
        ck[name] = CheckpointKey(name, _STATUS[status], _hows(how), tuple(targets), reported_as, tensors[name])
    if len(ck) != len(data["checkpoint_keys"]):
        raise ValueError("duplicate checkpoint keys")
    mk = {}
    for key, status, how, mshape, mdtype, sources, cshape, cdtype, tied_to, fresh, tied_eq in data["model_keys"]:
        mk[key] = ModelKey(key, _STATUS[status], _hows(how), _shape(mshape), mdtype, tuple(sources),
                           None if cshape is None else _shape(cshape), cdtype, tied_to, bool(fresh), tied_eq)
    tree = None
    if data["tree"] is not None:
        flat = data["tree"]
        kids: list[list[ModuleNode]] = [[] for _ in flat]
        node = None
        for i in range(len(flat) - 1, -1, -1):
            parent, path, cls, n_params, nbytes, params = flat[i]
            node = ModuleNode(path, cls, tuple(ParamEntry(k, _shape(s), d, kind, bool(pers)) for k, s, d, kind, pers in params),
                              tuple(reversed(kids[i])), n_params, nbytes)
            if i:
                if not (type(parent) is int and 0 <= parent < i):
                    raise ValueError("a module's parent comes after it")
                kids[parent].append(node)
            elif parent != -1:
                raise ValueError("the root has a parent")
        tree = node
    spec = data["spec"]
    if spec is not None:
        spec = ModelSpec(config=spec["config"], arch=spec["arch"], model_kwargs=dict(spec["model_kwargs"]))
    fam = data["family"]
    if fam is not None:
        fam = FamilyMismatch(fam[0], fam[1], fam[2], tuple(fam[3]))
    disk = None
    if data["disk"]:
        from .disk_tree import disk_tree

        disk = disk_tree(index)
    return Report(
        index=index, spec=spec, tree=tree, model_keys=mk, checkpoint_keys=ck,
        missing=tuple(data["missing"]), unexpected=tuple(data["unexpected"]),
        mismatched=tuple((k, _shape(a), _shape(b)) for k, a, b in data["mismatched"]),
        key_mapping=_str_map(data["key_mapping"]), suggested_key_mapping=_str_map(data["suggested_key_mapping"]),
        suggestion_effect=_str_map(data["suggestion_effect"]), suggestion_reason=data["suggestion_reason"],
        load_dtype=data["load_dtype"], arch=data["arch"], base_model_prefix=data["base_model_prefix"],
        notes=tuple(data["notes"]), disk=disk, family=fam,
    )
