"""Matching a PEFT adapter against its base exactly as peft loads it, header-only: the base built as
from_pretrained builds it (:func:`explorer.core.adapter.build_base`), wrapped in the PeftModel class
``PeftModel.from_pretrained`` picks (peft injects its layers), the adapter's tensors as meta tensors of the header's
shapes through ``PeftModel.load_adapter`` with ``ignore_mismatched_sizes=True``: missing / unexpected / mismatched
are peft's own sets.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import threading
import warnings
from typing import Any, Mapping

from .adapter import (
    ADAPTER_CONFIG,
    PEFT_PREFIX,
    AdaptedModule,
    AdapterFolder,
    AdapterReport,
    BaseSource,
    Finding,
    FindingKind,
    SavedModule,
    build_base,
    meta_tensors,
    one_message,
    one_text,
    open_adapter,
    peft_config,
    resolve_base,
    short,
)
from .adapter_delta import delta_stats
from .errors import ExplorerError
from .model import BuiltModel, module_tree

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
    keep: list[Any] | None = None,
) -> AdapterReport:
    """Match an adapter against its base as ``PeftModel.from_pretrained(base, adapter, ignore_mismatched_sizes=True)``
    does, from headers only. ``deltas=True`` also measures ΔW per LoRA module (reads the adapter tensors, and the
    base weights when present). ``keep``: a list that receives the PeftModel on meta the match built, its adapter
    loaded (for a caller that goes on to use it, as the merge does, instead of building it again). Raises
    ExplorerError subclasses with one-line messages."""
    try:
        af = adapter if isinstance(adapter, AdapterFolder) else open_adapter(adapter)
        src = resolve_base(af, base=base, config=config)
        rep = _match(af, src, arch=arch, adapter_name=adapter_name, keep=keep)
        if deltas and rep.loads:

            rep = dataclasses.replace(rep, deltas=tuple(delta_stats(rep, adapter_name=adapter_name)))
        return rep
    except ExplorerError:
        raise
    except Exception as e:  # noqa: BLE001 - never a traceback for an odd adapter or base
        raise ExplorerError(f"{os.fspath(adapter) if not isinstance(adapter, AdapterFolder) else adapter.folder}: "
                            f"cannot match this adapter: {type(e).__name__}: {one_message(e)}") from e


def _match(af: AdapterFolder, src: BaseSource, *, arch: str | None, adapter_name: str,
           keep: list[Any] | None = None) -> AdapterReport:
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
            return result(extra=(Finding(FindingKind.PEFT_REFUSES, f"peft's load_adapter raises {type(e).__name__}: {one_message(e)}"),))
    notes += [n for n in _peft_warnings(caught) if "were not initialized from the model checkpoint" not in n]
    if not rec.served:
        raise ExplorerError(f"{af.folder}: peft did not read {af.weights} (another peft version?); cannot match header-only")
    if keep is not None:
        keep.append(pm)
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
            out.append("peft: " + one_text(str(w.message)))
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
            f"peft raises: target_modules {short(targets)} match no module of this base ({one_message(e)})",
            tuple(details),
        )]
        fam = _family_finding(af, base_modules)
        if fam is not None:
            found.append(fam)
        return tuple(found)
    return (Finding(FindingKind.PEFT_REFUSES, f"peft raises while injecting the adapter: {type(e).__name__}: {one_message(e)}"),)


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
    trained = f" (trained on {short(name)!r})" if isinstance(name, str) and name else ""
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
