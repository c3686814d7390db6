"""Model x checkpoint -> Report: per key, what ``from_pretrained`` / ``load_state_dict`` would do, from headers only.

For transformers models the classification is done by transformers' own loading code
(``convert_and_load_state_dict_in_model``, ``tie_weights``, ``_adjust_missing_and_unexpected_keys``) run on a
meta-device model with meta tensors of the checkpoint's shapes, so renames, converters, prefixes, tied weights
and ignore rules are exactly those of ``from_pretrained``. For plain ``nn.Module``s it is
``load_state_dict(strict=False)`` plus the shape check.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from .checkpoint import CheckpointIndex, open_checkpoint
from .errors import ExplorerError, one_line
from .jobs import quiet_gc
from .keys import apply_key_mapping, check_key_mapping, check_key_mapping_speed, prefix_counts, strip_prefix_mapping, under
from .model import BuiltModel, ModelSpec, ModuleNode, build_model, module_tree, quiet_transformers, transformers_lock
from .report import CheckpointKey, FamilyMismatch, How, ModelKey, Report, Status, new_checkpoint_key
from .target import Target, resolve_model


# --------------------------------------------------------------------------------------------- public entry


def report(
    checkpoint: str | os.PathLike[str] | CheckpointIndex | Target,
    spec: ModelSpec | None = None,
    *,
    key_mapping: Mapping[str, str] | None = None,
    auto_fix: bool = False,
    wrapper: str | None = None,
    suggest: bool = True,
    quantization: str = "auto",
) -> Report:
    """Open a checkpoint (headers only), build the model on meta, and classify every key.

    A :class:`~explorer.core.target.Target` brings its own index, model, key mapping, auto-fix and quantization
    (``key_mapping`` given here overrides its mapping and its auto-fix).

    ``spec=None`` gives a checkpoint-only report (the tensor list). If ``spec`` has neither a config nor a class
    path, the checkpoint's folder is used as config when it holds a config.json. ``auto_fix`` applies the
    suggested key mapping when one is found. A config with a ``quantization_config`` is matched against the model
    with transformers' quantized layers (``quantization``: "auto" as from_pretrained decides on this machine,
    "quantized" the pre-quantized layout whatever this machine supports, "off" the unquantized model; see
    :func:`explorer.core.model.prepare_quantizer`). Raises ExplorerError subclasses with one-line messages.
    """
    if isinstance(checkpoint, Target):
        t = checkpoint
        km = key_mapping if key_mapping is not None else t.key_mapping
        return report(t.index, t.spec, key_mapping=km, auto_fix=t.auto_fix and key_mapping is None, suggest=suggest,
                      quantization=t.quantization)
    try:
        # building, importing torch and transformers the first time, and 47k keys' records make ~1M objects and
        # no garbage cycles: without automatic collection (jobs.quiet_gc) a quarter less CPU on the MoE
        with quiet_gc():
            return _report(
                checkpoint, spec, key_mapping=key_mapping, auto_fix=auto_fix, wrapper=wrapper, suggest=suggest,
                quantization=quantization,
            )
    except ExplorerError:
        raise
    except Exception as e:  # noqa: BLE001 - a weird model or file never ends in a traceback
        what = checkpoint.path if isinstance(checkpoint, CheckpointIndex) else os.fspath(checkpoint)
        raise ExplorerError(f"{what}: cannot report on this checkpoint: {type(e).__name__}: {one_line(e)}") from e


def _report(
    checkpoint: str | os.PathLike[str] | CheckpointIndex,
    spec: ModelSpec | None,
    *,
    key_mapping: Mapping[str, str] | None,
    auto_fix: bool,
    wrapper: str | None,
    suggest: bool,
    quantization: str = "auto",
) -> Report:
    index = checkpoint if isinstance(checkpoint, CheckpointIndex) else open_checkpoint(checkpoint, wrapper=wrapper)
    if spec is None:
        return checkpoint_only(index)
    spec = resolve_model(index, spec, required=True)

    def factory() -> BuiltModel:
        return build_model(
            spec,
            checkpoint_dtype=index.first_float_dtype(),
            checkpoint_files=index.files,
            quantization=quantization,
        )

    key_mapping = check_key_mapping(key_mapping) if key_mapping else None
    built = factory()
    tree = module_tree(built.module)
    rep = match(built, index, key_mapping=key_mapping, tree=tree)
    if not suggest or key_mapping:
        return rep
    sugg = suggest_key_mapping(rep, factory, index)
    extra: tuple[str, ...] = ()
    reason = "prefix trouble"
    if sugg is None and (rep.missing or rep.unexpected):  # a known foreign naming (torchtitan), verified by a match
        from .naming import TORCHTITAN_REASON, suggest_known_naming

        known = suggest_known_naming(index.tensors, len(rep.missing) + len(rep.unexpected) + len(rep.mismatched),
                                     lambda km: match(factory(), index, key_mapping=km, tree=tree))
        if known is not None:
            sugg, extra, reason = known[:2], (known[2],), TORCHTITAN_REASON
    if sugg is None:
        return rep
    mapping, effect = sugg
    kw = dict(suggested_key_mapping=mapping, suggestion_effect=effect, suggestion_reason=reason)
    if auto_fix:
        fixed = match(factory(), index, key_mapping=mapping, tree=tree)
        return _replace(fixed, notes=fixed.notes + extra, **kw)
    return _replace(rep, notes=rep.notes + extra, **kw)


def checkpoint_only(index: CheckpointIndex) -> Report:
    """No model: every tensor as it is on disk (``Status.IN_CHECKPOINT``, neither loaded nor dropped) and the module
    tree its dotted names imply, with per-module roll-ups (``Report.disk``)."""
    from .disk_tree import disk_tree

    ck = {n: CheckpointKey(n, Status.IN_CHECKPOINT, (), (), n, t) for n, t in index.tensors.items()}
    return Report(index, None, None, {}, ck, (), (), (), notes=index.notes, disk=disk_tree(index))


def _replace(rep: Report, **kw: Any) -> Report:
    import dataclasses

    return dataclasses.replace(rep, **kw)


def match(
    built: BuiltModel,
    index: CheckpointIndex,
    *,
    key_mapping: Mapping[str, str] | None = None,
    tree: ModuleNode | None = None,
) -> Report:
    """Classify every key. Consumes ``built`` (loading mutates the meta model): build a fresh one per call.

    Whatever an unusual model raises on the way comes out as a one-line ExplorerError naming the checkpoint and class.
    """
    try:
        if tree is None:
            tree = module_tree(built.module)
        if built.is_transformers:
            return _match_transformers(built, index, key_mapping, tree)
        return _match_plain(built, index, key_mapping, tree)
    except ExplorerError:
        raise
    except Exception as e:  # noqa: BLE001 - never a traceback for a weird model
        raise ExplorerError(
            f"{index.path}: cannot match this checkpoint against {built.class_name or 'the model'}: {type(e).__name__}: {one_line(e)}"
        ) from e


# --------------------------------------------------------------------------------------------- transformers


def _match_transformers(
    built: BuiltModel, index: CheckpointIndex, key_mapping: Mapping[str, str] | None, tree: ModuleNode
) -> Report:
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import (
        WeightConverter,
        WeightRenaming,
        apply_renamings,
        convert_and_load_state_dict_in_model,
        dot_natural_key,
        rename_source_key,
    )
    from transformers.modeling_utils import LoadStateDictConfig

    model = built.module
    dtype = built.dtype
    expected = model.state_dict()
    prefix = model.base_model_prefix
    quantizer = built.hf_quantizer
    weight_mapping = get_model_conversion_mapping(model, dict(key_mapping) if key_mapping else None, quantizer)
    renamings = [e for e in weight_mapping if isinstance(e, WeightRenaming)]
    converters = [e for e in weight_mapping if isinstance(e, WeightConverter)]
    # the user's own renamings, to tell KEY_MAPPING from RENAMED (a quantizer may put its renames before them)
    user_renamings = [WeightRenaming(source_patterns=k, target_patterns=v) for k, v in key_mapping.items()] if key_mapping else []
    # transformers runs these with `re`, which nothing can stop once started: try them on these keys first, in a
    # child process with a deadline, as transformers compiled them (keys.check_key_mapping_speed)
    check_key_mapping_speed(key_mapping, index.tensors,
                            forms=[getattr(getattr(r, "compiled_sources", None), "pattern", None) for r in user_renamings])
    tie_map = dict(getattr(model, "all_tied_weights_keys", {}) or {})
    tie_reverse: dict[str, str] = {}
    tie_targets: dict[str, list[str]] = {}
    for t, src in tie_map.items():
        tie_reverse.setdefault(src, t)
        tie_targets.setdefault(src, []).append(t)
    both_present: list[tuple[str, str]] = []  # (tie target, tie source), both loaded from their own tensors

    # --- 1. transformers' own classification, on meta tensors
    load_config = LoadStateDictConfig(
        device_map={"": "meta"},
        dtype=dtype,
        dtype_plan=model._get_dtype_plan(dtype),
        weight_mapping=weight_mapping,
        ignore_mismatched_sizes=True,
        hf_quantizer=quantizer,
    )
    recorder = _Recorder()
    with transformers_lock, quiet_transformers():
        try:
            with recorder:
                info, _ = convert_and_load_state_dict_in_model(model, index.meta_tensors(shared=quantizer is None), load_config)
        except Exception as e:  # a converter failing on unexpected shapes is a finding about the checkpoint
            raise ExplorerError(f"{index.path}: transformers could not map this checkpoint onto {built.class_name}: {one_line(e)}") from e
        missing_before_tie = set(info.missing_keys)
        mismatched_set = {k for k, _, _ in info.mismatched_keys}
        model.tie_weights(missing_keys=info.missing_keys, recompute_mapping=False)
        missing_after_tie = set(info.missing_keys)
        unexpected_before_ignore = set(info.unexpected_keys)
        model._adjust_missing_and_unexpected_keys(info)
    missing = set(info.missing_keys)
    unexpected = set(info.unexpected_keys)
    mismatched = {k: (tuple(a), tuple(b)) for k, a, b in info.mismatched_keys}
    tied_now = missing_before_tie - missing_after_tie  # loaded by tying to a present partner

    # --- 2. per-key annotation from the renames transformers itself computed during step 1
    sources: dict[str, list[str]] = {}
    ck_how: dict[str, list[How]] = {}
    ck_targets: dict[str, tuple[str, ...]] = {}
    ck_reported: dict[str, str] = {}
    ck_converted: dict[str, bool] = {}
    converter_by_pattern = {p: c for c in converters for p in c.source_patterns}
    conv_targets: dict[tuple[str, str], tuple[str, ...]] = {}
    seen = recorder.seen
    # transformers visited the keys in natural order: reuse its order instead of sorting 50k keys again
    order = list(seen) if len(seen) == len(index.tensors) else sorted(index.tensors, key=dot_natural_key)
    for name in order:
        rec = seen.get(name)
        if rec is None:  # not recorded (another transformers version): recompute the same way
            rec = _rename_record(name, renamings, converters, prefix, expected, rename_source_key)
        after_renamings, plain, renamed, pattern = rec
        hows: list[How] = []
        if after_renamings != name:
            user_only = apply_renamings(name, user_renamings) if user_renamings else name
            if user_only != name:
                hows.append(How.KEY_MAPPING)
            if after_renamings != user_only:
                hows.append(How.RENAMED)
        if pattern is not None:
            hows.append(How.CONVERTED)
        if renamed != plain:
            hows.append(How.PREFIX_ADDED if len(renamed) > len(plain) else How.PREFIX_STRIPPED)
        if renamed in expected:
            if pattern is not None:
                targets = conv_targets.get((renamed, pattern))
                if targets is None:  # the 256 experts of a layer share theirs
                    conv = converter_by_pattern[pattern]
                    targets = tuple(renamed.replace(conv.target_patterns[0], t) for t in conv.target_patterns)
                    conv_targets[(renamed, pattern)] = targets
            else:
                targets = (renamed,)
            for t in targets:
                sources.setdefault(t, []).append(name)
        else:
            targets = ()
        ck_how[name] = hows
        ck_targets[name] = targets
        ck_reported[name] = renamed
        ck_converted[name] = pattern is not None

    # --- 3. model keys
    model_keys: dict[str, ModelKey] = {}
    persistent_entries = {e.key: e for e in tree.all_params()}
    fresh_base = missing_after_tie | set(mismatched)  # before ignore-filtering: still randomly initialised
    for key, pe in persistent_entries.items():
        if not pe.persistent:
            model_keys[key] = ModelKey(key, Status.COMPUTED, (), pe.shape, pe.dtype, newly_initialized=True)
            continue
        if key not in expected:
            continue
        srcs = tuple(sources.get(key, ()))
        first = index.tensors[srcs[0]] if srcs else None
        hows: list[How] = []
        tied_to = None
        if key in mismatched:
            status = Status.MISMATCHED
            ck_shape = mismatched[key][0]
        elif key in missing:
            status, ck_shape = Status.MISSING, None
        elif key in missing_after_tie:  # missing, silenced by _keys_to_ignore_on_load_missing
            status, ck_shape = Status.IGNORED, None
            hows.append(How.IGNORED_RULE)
        elif key in tied_now:
            status, ck_shape = Status.MATCHED, None
            hows.append(How.TIED)
            tied_to = _tie_partner(key, tie_map, tie_reverse)
        else:
            status = Status.MATCHED
            # a converted key's on-disk pieces have other shapes; once matched its shape is the model's
            ck_shape = (pe.shape if ck_converted[srcs[0]] else first.shape) if first is not None else None
        if srcs and status is not Status.MISSING:
            hows = list(dict.fromkeys(h for s in srcs[:1] for h in ck_how[s])) + hows
            if not ck_how[srcs[0]]:
                hows.insert(0, How.EXACT)
        if first is not None and status is Status.MATCHED and first.dtype != pe.dtype and How.CONVERTED not in hows:
            hows.append(How.DTYPE_DIFFERS)
        tied_if_equal = None
        if srcs and key not in tied_now:
            # both halves of a tie on disk: transformers compares the values and ties only if they are equal,
            # which headers cannot tell; never claim the tie
            for partner in (tie_map.get(key), *tie_targets.get(key, ())):
                if partner and partner in expected and sources.get(partner) and partner not in tied_now:
                    tied_if_equal = partner
                    if key in tie_map:
                        both_present.append((key, partner))
                    break
        newly = key in fresh_base or (key in tied_now and _tie_partner(key, tie_map, tie_reverse) in fresh_base)
        model_keys[key] = ModelKey(
            key,
            status,
            tuple(hows),
            pe.shape,
            pe.dtype,
            srcs,
            ck_shape,
            first.dtype if first is not None else None,
            tied_to,
            newly,
            tied_if_equal,
        )

    # --- 4. checkpoint keys
    checkpoint_keys: dict[str, CheckpointKey] = {}
    for name, t in index.tensors.items():
        targets = ck_targets[name]
        hows = list(ck_how[name])
        reported = ck_reported[name]
        if targets:
            # a converter gathers all its sources; a plain rename keeps the first key in natural order
            dup = not ck_converted[name] and any(sources[x][0] != name for x in targets)
            if dup:
                status = Status.IGNORED
                hows.append(How.DUPLICATE)
            elif mismatched and any(x in mismatched for x in targets):
                status = Status.MISMATCHED
            else:
                status = Status.MATCHED
        elif reported in unexpected:
            status = Status.UNEXPECTED
        elif reported in unexpected_before_ignore:
            status = Status.IGNORED
            hows.append(How.IGNORED_RULE)
        else:
            # a converter source whose targets are reported as unexpected under their target names
            status = Status.UNEXPECTED
        if not hows and status is not Status.UNEXPECTED:
            hows.append(How.EXACT)
        checkpoint_keys[name] = new_checkpoint_key(name, status, tuple(hows), targets, reported, t)

    notes = list(index.notes) + list(built.notes)
    for tgt, src in both_present[:5]:
        notes.append(
            f"{tgt} and {src} are tied in the model but both are in the checkpoint: from_pretrained ties them only "
            "if their values are equal (otherwise each keeps its own value)"
        )
    if len(both_present) > 5:
        notes.append(f"... and {len(both_present) - 5} more tied pairs present on both sides (tied only if values are equal)")
    if getattr(info, "conversion_errors", None):
        notes.append(
            f"from_pretrained raises a RuntimeError after loading: {len(info.conversion_errors)} weight conversion(s) "
            "failed (their targets are reported missing)"
        )
        notes += [f"conversion error: {k}: {_error_line(v)}" for k, v in list(info.conversion_errors.items())[:20]]
    return Report(
        index=index,
        spec=built.spec,
        tree=tree,
        model_keys=model_keys,
        checkpoint_keys=checkpoint_keys,
        missing=tuple(sorted(missing, key=dot_natural_key)),
        unexpected=tuple(sorted(unexpected, key=dot_natural_key)),
        mismatched=tuple(sorted(((k, a, b) for k, (a, b) in mismatched.items()), key=lambda x: dot_natural_key(x[0]))),
        key_mapping=dict(key_mapping) if key_mapping else None,
        load_dtype=str(dtype).removeprefix("torch."),
        arch=built.class_name,
        base_model_prefix=prefix,
        notes=tuple(notes),
        family=_family(built),
    )


def _family(built: BuiltModel) -> FamilyMismatch | None:
    if built.family is None:
        return None
    from .classes import family_classes

    have, want = built.family
    return FamilyMismatch(have, want, built.class_name, tuple(family_classes(have)))


class _Recorder:
    """While transformers classifies the checkpoint, record what its own renaming produced for each key, and
    skip the deep copy of a weight converter per source key that it throws away unless the target is new.

    Records ``{on-disk name: (after renamings, after the converter, final name with prefix rule, converter
    pattern)}`` for the call whose result was used. Everything patched is restored on exit.
    """

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str, str, str, str | None]] = {}

    def __enter__(self) -> _Recorder:
        from transformers import core_model_loading as cml

        self._cml = cml
        self._saved = (cml.rename_source_key, cml.apply_converters, cml.deepcopy)
        orig_rename, orig_convert, orig_deepcopy = self._saved
        seen = self.seen
        last: dict[str, str] = {}
        spare: dict[int, Any] = {}
        converter_type = cml.WeightConverter

        def rename_source_key(source_key, weight_renamings, weight_converters, base_model_prefix=None, meta_state_dict=None, reverse=False):
            last.clear()
            out = orig_rename(source_key, weight_renamings, weight_converters, base_model_prefix, meta_state_dict, reverse)
            if meta_state_dict is not None and not reverse:
                seen[source_key] = (last.get("in", source_key), last.get("out", source_key), out[0], out[1])
            return out

        def apply_converters(source_key, weight_converters):
            out = orig_convert(source_key, weight_converters)
            last["in"], last["out"] = source_key, out[0]
            return out

        def deepcopy(obj, memo=None):
            # transformers deep-copies the converter for every source key, then keeps the copy only for the
            # first key of each target (setdefault); a copy that received no tensors was discarded: reuse it
            if isinstance(obj, converter_type):
                prev = spare.get(id(obj))
                if prev is not None and not prev.collected_tensors:
                    return prev
                spare[id(obj)] = new = orig_deepcopy(obj)
                return new
            return orig_deepcopy(obj, memo)

        cml.rename_source_key, cml.apply_converters, cml.deepcopy = rename_source_key, apply_converters, deepcopy
        return self

    def __exit__(self, *exc: object) -> None:
        cml = self._cml
        cml.rename_source_key, cml.apply_converters, cml.deepcopy = self._saved


def _rename_record(name, renamings, converters, prefix, expected, rename_source_key) -> tuple[str, str, str, str | None]:
    """The same record as _Recorder, computed directly (fallback)."""
    from transformers.core_model_loading import apply_converters, apply_renamings

    renamed, pattern = rename_source_key(name, renamings, converters, prefix, expected)
    if renamed not in expected and name in expected:
        renamed, pattern = rename_source_key(name, [], [], prefix, expected)
        return name, name, renamed, pattern
    after = apply_renamings(name, renamings)
    plain, _ = apply_converters(after, converters)
    return after, plain, renamed, pattern


def _tie_partner(key: str, tie_map: Mapping[str, str], reverse: Mapping[str, str]) -> str | None:
    """The other key of ``key``'s tie: its source if it is a tie target, else the first target tied to it."""
    return tie_map.get(key) or reverse.get(key)


def _error_line(text: Any) -> str:
    """The message line of a traceback transformers stored as text (one line for a note)."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    msgs = [ln for ln in lines if not ln.startswith(("Traceback", "File ", "^", "~")) and ": " in ln and ln.split(":", 1)[0].isidentifier()]
    return (msgs[0] if msgs else (lines[-1] if lines else ""))[:300]


# --------------------------------------------------------------------------------------------- plain nn.Module


def _match_plain(built: BuiltModel, index: CheckpointIndex, key_mapping: Mapping[str, str] | None, tree: ModuleNode) -> Report:
    check_key_mapping_speed(key_mapping, index.tensors)  # apply_key_mapping below is plain `re`
    entries = {e.key: e for e in tree.all_params()}
    expected = {k for k, e in entries.items() if e.persistent}
    sources: dict[str, list[str]] = {}
    checkpoint_keys: dict[str, CheckpointKey] = {}
    unexpected: list[str] = []
    for name, t in index.tensors.items():  # file order: with duplicates, the last one wins, as in a dict
        target = apply_key_mapping(name, key_mapping)
        how = (How.KEY_MAPPING,) if target != name else ()
        if target in expected:
            owners = sources.setdefault(target, [])
            owners.append(name)
            if len(owners) > 1:  # load_state_dict: the last one wins; report the earlier as dropped
                pass
            status = Status.MISMATCHED if tuple(t.shape) != entries[target].shape else Status.MATCHED
            checkpoint_keys[name] = CheckpointKey(name, status, how or (How.EXACT,), (target,), target, t)
        else:
            unexpected.append(target)
            checkpoint_keys[name] = CheckpointKey(name, Status.UNEXPECTED, how, (), target, t)
    model_keys: dict[str, ModelKey] = {}
    missing: list[str] = []
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    for key, e in entries.items():
        if not e.persistent:
            model_keys[key] = ModelKey(key, Status.COMPUTED, (), e.shape, e.dtype, newly_initialized=True)
            continue
        srcs = tuple(sources.get(key, ()))
        if not srcs:
            missing.append(key)
            model_keys[key] = ModelKey(key, Status.MISSING, (), e.shape, e.dtype, newly_initialized=True)
            continue
        src = index.tensors[srcs[-1]]
        hows = list(checkpoint_keys[srcs[-1]].how)
        if tuple(src.shape) != e.shape:
            mismatched.append((key, tuple(src.shape), e.shape))
            status = Status.MISMATCHED
        else:
            status = Status.MATCHED
            if src.dtype != e.dtype:
                hows.append(How.DTYPE_DIFFERS)
        model_keys[key] = ModelKey(
            key, status, tuple(hows), e.shape, e.dtype, srcs, tuple(src.shape), src.dtype, None, status is Status.MISMATCHED
        )
    # earlier duplicates of the same target are overwritten by load_state_dict: mark them
    for key, srcs in sources.items():
        for s in srcs[:-1]:
            c = checkpoint_keys[s]
            checkpoint_keys[s] = CheckpointKey(s, Status.IGNORED, c.how + (How.DUPLICATE,), c.targets, c.reported_as, c.info)
    return Report(
        index=index,
        spec=built.spec,
        tree=tree,
        model_keys=model_keys,
        checkpoint_keys=checkpoint_keys,
        missing=tuple(missing),
        unexpected=tuple(unexpected),
        mismatched=tuple(mismatched),
        key_mapping=dict(key_mapping) if key_mapping else None,
        load_dtype=None,
        arch=built.class_name,
        notes=index.notes,
    )


# --------------------------------------------------------------------------------------------- prefix trouble


def suggest_key_mapping(
    rep: Report, factory: Callable[[], BuiltModel], index: CheckpointIndex
) -> tuple[dict[str, str], dict[str, int]] | None:
    """Find a ``{regex: replacement}`` that turns missing+unexpected pairs into matches (``module.``,
    ``_orig_mod.``, doubled or foreign prefixes). Verified by re-running the full match; None if nothing helps.
    Returns (mapping, counts after applying it)."""
    unexpected_names = [c.name for c in rep.checkpoint_keys.values() if c.status is Status.UNEXPECTED]
    if not unexpected_names or not (rep.missing or rep.mismatched):
        return None
    # Prefix trouble turns a large share of the checkpoint unexpected; a couple of unused head tensors is not it.
    if len(unexpected_names) < max(2, len(index.tensors) // 4):
        return None
    expected = [k for k, m in rep.model_keys.items() if m.status is not Status.COMPUTED]
    exp_set = set(expected)
    base = rep.base_model_prefix
    strip = prefix_counts(unexpected_names)
    add = prefix_counts(rep.missing)
    cands: list[tuple[str, str]] = [(p, "") for p, _ in strip.most_common(6)]
    cands += [(p, q) for p, _ in strip.most_common(4) for q, _ in add.most_common(4) if p != q]
    cands += [("", q) for q, _ in add.most_common(4)]

    def naive_hits(p: str, q: str) -> tuple[int, int]:
        """(keys it would match, of them the ones renamed to the model's own names, without transformers adding or
        stripping its base-model prefix)."""
        hits = exact = 0
        for n in unexpected_names:
            if not under(n, p):
                continue
            rest = n[len(p) + 1 :] if p else n
            t = f"{q}.{rest}" if q else rest
            if t in exp_set:
                hits += 1
                exact += 1
            elif base and (f"{base}.{t}" in exp_set or (t.startswith(base + ".") and t[len(base) + 1 :] in exp_set)):
                hits += 1
        return hits, exact

    # most keys matched first; of equals, the one writing the model's own names (a DDP ``module.`` stripped to
    # nothing, not renamed to ``model.`` that only from_pretrained's prefix stripping undoes), then the shortest
    scored = sorted(((*naive_hits(p, q), p, q) for p, q in dict.fromkeys(cands)),
                    key=lambda s: (-s[0], -s[1], len(s[3]), len(s[2]), s[2], s[3]))
    scored = [s for s in scored if s[0] > 0][:3]
    if not scored:
        return None
    before = len(rep.missing) + len(rep.unexpected) + len(rep.mismatched)
    best: tuple[int, dict[str, str], dict[str, int]] | None = None
    for _, _, p, q in scored:
        mapping = strip_prefix_mapping(p, q)
        trial = match(factory(), index, key_mapping=mapping, tree=rep.tree)
        after = len(trial.missing) + len(trial.unexpected) + len(trial.mismatched)
        if after < before and (best is None or after < best[0]):
            c = trial.counts()
            best = (after, mapping, {k: c[k] for k in ("matched", "missing", "unexpected", "mismatched")})
    if best is None:
        return None
    return best[1], best[2]
