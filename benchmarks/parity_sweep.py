"""Parity sweep: ``report()`` vs ``from_pretrained(..., output_loading_info=True, ignore_mismatched_sizes=True)``
over (nearly) every model type transformers knows.

For each entry of ``CONFIG_MAPPING`` the default config is shrunk generically (hidden sizes, layers, heads, vocab,
experts, also inside sub-configs), a main head class and the base model are built with real random init and
``save_pretrained`` into a temp dir, and these scenarios are compared (missing / unexpected / mismatched sets):

* ``same``     main head checkpoint -> main head (written by save_pretrained in the *original* on-disk format,
               i.e. with transformers' weight conversions reverted: legacy MoE per-expert layouts etc.)
* ``fused``    the same model saved with ``save_original_format=False`` -> main head (only when it differs)
* ``to_base``  main head checkpoint -> base model (prefix stripped)
* ``to_other`` main head checkpoint -> another head class (e.g. ForSequenceClassification)
* ``from_base`` base checkpoint -> main head (prefix added)
* ``module``   main head checkpoint with ``module.`` before every key -> main head
* ``sub_model`` main head checkpoint -> the base class of a sub-config (e.g. CLIPVisionModel from CLIP)
* ``resized``  main head checkpoint with a config whose vocab_size grew -> main head (mismatched, tied heads)

A report() exception that is not an ExplorerError is a failure ("crash"); when from_pretrained itself raises,
the case passes only if report() raises an ExplorerError too. Each model type runs in a worker subprocess under
a per-type time limit; a hung or crashed worker is replaced. Writes benchmarks/results/parity.md.

    python benchmarks/parity_sweep.py [--budget 900] [--workers 2] [--per-type 40] [--types llama,t5] [--limit N]
                                      [--resume benchmarks/results/parity.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# ------------------------------------------------------------------------------------------------ shrinking

HIDDEN = {"hidden_size", "d_model", "n_embd", "embed_dim", "embedding_size", "hidden_dim", "model_dim", "dim",
          "text_embed_dim", "vision_embed_dim", "word_embed_proj_dim", "projection_dim", "n_embed"}
INTER = {"intermediate_size", "d_ff", "ffn_dim", "n_inner", "encoder_ffn_dim", "decoder_ffn_dim", "mlp_dim",
         "ffn_hidden_size", "decoder_intermediate_size", "inner_dim"}
INTER_SMALL = {"moe_intermediate_size", "shared_expert_intermediate_size", "expert_intermediate_size",
               "moe_ffn_hidden_size"}
LAYERS = {"num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers", "decoder_layers",
          "num_decoder_layers", "num_encoder_layers", "decoder_num_layers", "num_text_layers", "num_vision_layers"}
HEADS = {"num_attention_heads", "n_head", "num_heads", "encoder_attention_heads", "decoder_attention_heads",
         "n_heads", "decoder_num_attention_heads", "num_decoder_attention_heads"}
KV_HEADS = {"num_key_value_heads", "n_kv_heads", "num_kv_heads", "multi_query_group_num", "decoder_num_key_value_heads"}
EXPERTS = {"num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", "num_routed_experts"}
TOPK = {"num_experts_per_tok", "moe_k", "moe_topk", "num_selected_experts"}
DROP = {"layer_types", "mlp_only_layers", "full_attention_idx", "sliding_window_pattern_list", "block_types",
        "attn_layer_indices", "no_rope_layers", "moe_layers", "layers_block_type", "hybrid_override_pattern"}


DROP_ALWAYS = {"out_features", "out_indices"}  # backbone stage selections that name the original depth


def shrink_dict(d: dict, depth: int = 0, level: int = 0) -> dict:
    """Shrink a config dict. level 0: everything; 1: keep the layer counts; 2: only vocab and experts
    (level 3, in tiny_config: the default config untouched)."""
    out = {}
    layer_counts = set()
    for k, v in d.items():
        if isinstance(v, dict) and depth < 3 and ("model_type" in v or k.endswith("_config")):
            out[k] = shrink_dict(v, depth + 1, level)
            continue
        if k in DROP_ALWAYS and level < 2:
            continue
        if not isinstance(v, int) or isinstance(v, bool):
            out[k] = v
            continue
        w = v
        if level >= 2:
            if k == "vocab_size":
                w = min(v, 512)
            elif k in EXPERTS:
                w = min(v, 4)
            elif k in TOPK:
                w = min(v, 2)
            out[k] = w
            continue
        if k in HIDDEN:
            w = min(v, 32)
        elif k in INTER:
            w = min(v, 64)
        elif k in INTER_SMALL:
            w = min(v, 32)
        elif k in LAYERS and level == 0:
            w = min(v, 2)
            if w != v:
                layer_counts.add(v)
        elif k in HEADS:
            w = min(v, 4)
        elif k in KV_HEADS:
            w = min(v, 2)
        elif k == "head_dim" or k.endswith("_head_dim") or k == "d_kv" or k == "kv_channels":
            w = min(v, 8)
        elif k.endswith("_lora_rank"):
            w = min(v, 16)
        elif k in EXPERTS:
            w = min(v, 4)
        elif k in TOPK:
            w = min(v, 2)
        elif k in ("n_group", "topk_group", "num_expert_group"):
            w = min(v, 1)
        elif k in ("first_k_dense_replace", "num_dense_layers"):
            w = min(v, 1)
        elif k == "vocab_size":
            w = min(v, 512)
        out[k] = w
    # per-layer lists (layer_types, mlp_layer_types, ...) follow the new layer count
    if layer_counts:
        for k, v in list(out.items()):
            if isinstance(v, list) and len(v) in layer_counts:
                out[k] = v[:2]
            elif k in DROP and isinstance(v, list):
                out.pop(k)
    vocab = out.get("vocab_size")
    if isinstance(vocab, int):
        for k in ("pad_token_id", "padding_idx"):
            if isinstance(out.get(k), int) and out[k] >= vocab:
                out[k] = vocab - 1
    return out


def tiny_config(model_type: str, level: int = 0):
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    if level >= 3:  # the default config as it is (only used when small enough)
        return cls()
    d = cls().to_dict()
    d = shrink_dict(d, level=level)
    d.pop("transformers_version", None)
    d.pop("architectures", None)
    d.pop("model_type", None)
    return cls(**d)


PREFERRED = ("ForCausalLM", "ForConditionalGeneration", "ForMaskedLM", "LMHeadModel", "WithLMHead", "ForPreTraining",
             "ForImageTextToText", "ForSpeechSeq2Seq", "ForMaskedImageModeling", "ForObjectDetection",
             "ForSemanticSegmentation", "ForCTC")
OTHER = ("ForSequenceClassification", "ForImageClassification", "ForTokenClassification", "ForQuestionAnswering",
         "ForAudioClassification", "ForMultipleChoice", "ForUniversalSegmentation")


def pick_classes(config) -> tuple[str | None, str | None, str | None]:
    """(base, main head, other head) class names from explorer's head chooser."""
    from explorer.core.model import head_classes
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    names = head_classes(config) or classes_for_config(type(config))
    base = MODEL_MAPPING_NAMES.get(config.model_type)
    base = base if isinstance(base, str) and base in names else (names[0] if names and names[0].endswith("Model") else None)
    heads = [n for n in names if n != base]
    main = next((n for suf in PREFERRED for n in heads if n.endswith(suf)), heads[0] if heads else None)
    other = next((n for suf in OTHER for n in heads if n.endswith(suf) and n != main), None)
    if other is None:
        other = next((n for n in heads if n != main), None)
    return base, main, other


def classes_for_config(config_cls: type) -> list[str]:
    """Public model classes whose config_class is ``config_cls`` (for sub-configs without an auto mapping, e.g.
    bridgetower_text_model), found in the config's sibling modeling module."""
    import importlib

    import transformers

    mod = config_cls.__module__.replace(".configuration_", ".modeling_")
    try:
        m = importlib.import_module(mod)
    except Exception:  # noqa: BLE001
        return []
    out = []
    for name, obj in vars(m).items():
        if (isinstance(obj, type) and getattr(obj, "config_class", None) is config_cls and hasattr(transformers, name)
                and issubclass(obj, transformers.PreTrainedModel) and not name.endswith("PreTrainedModel")):
            out.append(name)
    out.sort(key=lambda n: (not n.endswith("Model"), len(n)))  # a bare "...Model" first: the base
    return out


def sub_model_classes(config) -> list[str]:
    """Base classes of the sub-configs (text/vision/audio) of a composite config, when transformers has them."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    out = []
    for key, sub_cls in (getattr(config, "sub_configs", None) or {}).items():
        mt = getattr(sub_cls, "model_type", None)
        name = MODEL_MAPPING_NAMES.get(mt) if mt and mt != config.model_type else None
        if isinstance(name, str) and hasattr(transformers, name) and name not in out:
            out.append(name)
    return out


# ------------------------------------------------------------------------------------------------ one type


def _oracle(folder: str, arch: str):
    import transformers

    cls = getattr(transformers, arch)
    # a few classes override from_pretrained and break output_loading_info (JevForDecision returns into a
    # tuple): their key report is the base implementation's
    fp = transformers.PreTrainedModel.from_pretrained.__func__.__get__(cls)
    _, info = fp(folder, output_loading_info=True, ignore_mismatched_sizes=True)
    return (set(info["missing_keys"]), set(info["unexpected_keys"]),
            {(k, tuple(a), tuple(b)) for k, a, b in info["mismatched_keys"]})


def _ours(folder: str, arch: str):
    from explorer.core.matching import report
    from explorer.core.model import ModelSpec

    rep = report(folder, ModelSpec(config=folder, arch=arch))
    return set(rep.missing), set(rep.unexpected), set(rep.mismatched)


def _short(s: set, n: int = 6) -> list[str]:
    return sorted(map(str, s))[:n] + ([f"... (+{len(s) - n})"] if len(s) > n else [])


def compare(folder: str, arch: str) -> dict:
    from explorer.core.errors import ExplorerError

    out: dict = {"arch": arch}
    ours_err = theirs_err = None
    try:
        ours = _ours(folder, arch)
    except ExplorerError as e:
        ours, ours_err = None, f"ExplorerError: {str(e)[:200]}"
        if "\n" in str(e):
            out.update(ok=False, kind="multiline-error", detail=ours_err)
            return out
    except Exception as e:  # noqa: BLE001 - a crash is what we look for
        out.update(ok=False, kind="crash", detail=f"{type(e).__name__}: {str(e)[:200]}",
                   tb=traceback.format_exc()[-1500:])
        return out
    try:
        theirs = _oracle(folder, arch)
    except Exception as e:  # noqa: BLE001
        theirs, theirs_err = None, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    if theirs is None:
        out.update(ok=ours is None, kind="both-error" if ours is None else "oracle-error-only",
                   detail=f"from_pretrained: {theirs_err}; ours: {ours_err or 'no error'}")
        return out
    if ours is None:
        out.update(ok=False, kind="ours-error-only", detail=ours_err)
        return out
    diff = {}
    for name, a, b in zip(("missing", "unexpected", "mismatched"), ours, theirs):
        if a != b:
            diff[name] = {"ours_only": _short(a - b), "theirs_only": _short(b - a)}
    out.update(ok=not diff, kind="diff" if diff else "equal", diff=diff,
               counts=[len(theirs[0]), len(theirs[1]), len(theirs[2])])
    return out


def run_type(model_type: str, tmp: Path) -> dict:
    import torch
    import transformers
    from safetensors.torch import load_file, save_file

    t0 = time.time()
    res: dict = {"type": model_type, "scenarios": []}
    folder = tmp / model_type
    level = 0

    def err(e: BaseException) -> str:
        return f"{type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}"

    def save(arch: str, sub: str, **kw) -> str | None:
        try:
            torch.manual_seed(0)
            c = tiny_config(model_type, level)
            c.architectures = [arch]
            if level:  # a mildly shrunk config may still be big: measure on meta first
                with torch.device("meta"):
                    n = sum(p.numel() for p in getattr(transformers, arch)(c).parameters())
                if n > 30_000_000:
                    raise RuntimeError(f"{n / 1e6:.0f}M parameters at this shrink level: too big for the sweep")
            m = getattr(transformers, arch)(c)
            d = folder / sub
            m.save_pretrained(d, **kw)
            return str(d)
        except Exception as e:  # noqa: BLE001
            res.setdefault("build_errors", []).append(f"{arch} (shrink level {level}): {err(e)}")
            return None

    main_dir = None
    reasons = []
    for level in (0, 1, 2, 3):  # milder shrinking when the generic one breaks the config
        try:
            cfg = tiny_config(model_type, level)
        except Exception as e:  # noqa: BLE001
            reasons.append(f"config (level {level}): {err(e)}")
            continue
        base, main, other = pick_classes(cfg)
        if main is None and base is None:
            return {**res, "status": "skip", "reason": "no model class in transformers' auto mappings"}
        main = main or base
        main_dir = save(main, "main")
        if main_dir is None and base and base != main:  # a head that needs more config: fall back to the base
            main, other = base, main
            main_dir = save(main, "main")
        if main_dir is not None:
            break
    if main_dir is None:
        return {**res, "status": "skip", "reason": "; ".join(reasons + res.get("build_errors", []))[:400]}
    res["shrink_level"] = level
    scen = []
    scen.append(("same", main_dir, main))
    fused_dir = save(main, "fused", save_original_format=False)
    if fused_dir:
        a, b = load_file(Path(main_dir) / "model.safetensors"), load_file(Path(fused_dir) / "model.safetensors")
        res["legacy_layout"] = set(a) != set(b)
        if set(a) != set(b):
            scen.append(("fused", fused_dir, main))
    if base and base != main:
        scen.append(("to_base", main_dir, base))
    if other:
        scen.append(("to_other", main_dir, other))
    if base and base != main:
        base_dir = save(base, "base")
        if base_dir:
            scen.append(("from_base", base_dir, main))
    mod = folder / "module"
    mod.mkdir(parents=True)
    for f in Path(main_dir).iterdir():
        if f.name != "model.safetensors":
            (mod / f.name).write_bytes(f.read_bytes())
    sd = load_file(Path(main_dir) / "model.safetensors")
    save_file({"module." + k: v for k, v in sd.items()}, mod / "model.safetensors", metadata={"format": "pt"})
    scen.append(("module", str(mod), main))
    # a config with a bigger vocabulary (top level or in sub-configs): embeddings (and tied heads) mismatched
    cfg_json = json.loads((Path(main_dir) / "config.json").read_text())

    def grow(d: dict) -> bool:
        hit = False
        for k, v in d.items():
            if k == "vocab_size" and isinstance(v, int):
                d[k] = v + 16
                hit = True
            elif isinstance(v, dict):
                hit = grow(v) or hit
        return hit

    if grow(cfg_json):
        rs = folder / "resized"
        rs.mkdir()
        (rs / "config.json").write_text(json.dumps(cfg_json))
        # a hard link (a file of this folder, not a link leading out of it, which the explorer refuses to follow)
        try:
            os.link(Path(main_dir) / "model.safetensors", rs / "model.safetensors")
        except OSError:
            shutil.copyfile(Path(main_dir) / "model.safetensors", rs / "model.safetensors")
        scen.append(("resized", str(rs), main))
    # a composite checkpoint into a sub-model class (CLIPVisionModel from a CLIP checkpoint): transformers picks
    # the sub-config out of config.json by the config class's base_config_key
    for sub in sub_model_classes(cfg)[:2]:
        scen.append(("sub_model", main_dir, sub))
    for name, d, arch in scen:
        r = compare(d, arch)
        r["scenario"] = name
        res["scenarios"].append(r)
    fails = [s for s in res["scenarios"] if not s["ok"]]
    res["status"] = "fail" if fails else "pass"
    res["seconds"] = round(time.time() - t0, 2)
    return res


class _Timeout(BaseException):  # not an Exception: must get through the per-scenario handlers
    pass


def worker(types: list[str], per_type: int) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import warnings

    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)
    sys.path.insert(0, str(ROOT))

    def alarm(*_):
        raise _Timeout()

    signal.signal(signal.SIGALRM, alarm)
    for t in types:
        print(json.dumps({"start": t}), flush=True)
        with tempfile.TemporaryDirectory(prefix="parity_") as tmp:
            signal.alarm(per_type)
            try:
                res = run_type(t, Path(tmp))
            except _Timeout:
                res = {"type": t, "status": "skip", "reason": f"timeout after {per_type}s (in-process)", "scenarios": []}
            except Exception as e:  # noqa: BLE001
                res = {"type": t, "status": "skip", "reason": f"sweep error: {type(e).__name__}: {str(e)[:150]}", "scenarios": []}
            finally:
                signal.alarm(0)
        print(json.dumps(res, default=str), flush=True)


# ------------------------------------------------------------------------------------------------ driver


def drive(types: list[str], workers: int, per_type: int, budget: float) -> list[dict]:
    results: dict[str, dict] = {}
    queue = list(types)
    lock = threading.Lock()
    deadline = time.time() + budget

    def take(n: int) -> list[str]:
        with lock:
            batch, queue[:] = queue[:n], queue[n:]
            return batch

    def run_worker() -> None:
        while time.time() < deadline:
            batch = take(25)
            if not batch:
                return
            pending = list(batch)
            while pending and time.time() < deadline:
                p = subprocess.Popen(
                    ["nice", "-n", "5", sys.executable, __file__, "--worker", ",".join(pending), "--per-type", str(per_type)],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=str(ROOT),
                )
                current, last = None, time.time()
                buf = ""
                while True:
                    r, _, _ = select.select([p.stdout], [], [], 1.0)
                    if r:
                        line = p.stdout.readline()
                        if not line:
                            break
                        buf = line.strip()
                        if not buf:
                            continue
                        msg = json.loads(buf)
                        if "start" in msg:
                            current, last = msg["start"], time.time()
                        else:
                            with lock:
                                results[msg["type"]] = msg
                            pending.remove(msg["type"])
                            current = None
                            print(f"{msg['type']:<32} {msg['status']:<5} {msg.get('seconds', '')}", flush=True)
                    # hard limit: import time + per-type limit + slack
                    if current and time.time() - last > per_type + 30:
                        p.kill()
                        break
                    if time.time() > deadline:
                        p.kill()
                        break
                p.wait()
                if current is not None:  # died or hung on `current`
                    with lock:
                        results[current] = {"type": current, "status": "skip", "scenarios": [],
                                            "reason": f"worker died or hung (exit {p.returncode})"}
                    pending.remove(current)
                    print(f"{current:<32} skip  (worker died/hung)", flush=True)
            if pending:
                with lock:
                    queue[:0] = pending
                return

    threads = [threading.Thread(target=run_worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for t in types:
        results.setdefault(t, {"type": t, "status": "not run", "reason": "sweep time budget", "scenarios": []})
    return [results[t] for t in types]


FIRST = ["bert", "gpt2", "llama", "t5", "bart", "mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3", "olmoe", "vit", "clip",
         "llava", "whisper", "siglip", "gemma3", "roberta", "mistral", "qwen2", "phi", "falcon", "gpt_neox", "bloom",
         "electra", "deberta_v2", "albert", "distilbert", "xlm_roberta", "mt5", "pegasus", "marian", "wav2vec2",
         "detr", "swin", "convnext", "blip_2", "idefics3", "paligemma", "mamba", "jamba", "qwen2_vl", "encoder-decoder"]


FIXED = [
    "- `falcon_h1` (every scenario): the config was read with `AutoConfig.for_model(**json)`, whose strict "
    "validation rejects JSON lists where the class wants tuples (`time_step_limit`); now read with the config "
    "class's `from_pretrained` (`from_dict`), as from_pretrained does.",
    "- `clip`, `siglip` (`sub_model`: CLIPVisionModel / CLIPTextModel / SiglipVisionModel from the composite "
    "checkpoint): we built the sub-model from the composite config and failed; now the class's own `config_class` "
    "reads config.json, which picks the sub-config by `base_config_key`, as from_pretrained does.",
    "- Load dtype without a config dtype (not a key-set difference, but `dtype_differs` annotations): we took "
    "the first float tensor in data order; transformers takes it in `safe_open` key order (sorted names) of the "
    "first file, skips fp8/fp4, and honours a sharded index's `metadata.dtype`. The load dtype is also set on "
    "the config and its sub-configs before building, as `_get_dtype` does.",
    "- Robustness: any non-ExplorerError raised while building/matching an unusual model (e.g. `inkling_audio`, "
    "whose model lacks `all_tied_weights_keys`; from_pretrained fails there too) is now a one-line ExplorerError.",
]


NOT_COVERED = [
    "- Quantized checkpoints (`quantization_config`) are not in this sweep (its tiny models are unquantized); "
    "fine-grained FP8 is covered by tests/core/test_quantized.py (see the section below); bitsandbytes, GPTQ, AWQ "
    "and compressed-tensors need packages not installed here, and report() then matches the unquantized model "
    "with a note.",
    "- `config.extra_files` (extra weight files per config class): no model in this transformers version sets it.",
    "- Adapters (PEFT folders), GGUF files, distributed checkpoints: outside the report's inputs.",
]


def write_md(results: list[dict], seconds: float, path: Path, workers: int | None = None) -> None:
    import transformers

    from collections import Counter

    c = Counter(r["status"] for r in results)
    nscen = sum(len(r["scenarios"]) for r in results)
    okscen = sum(1 for r in results for s in r["scenarios"] if s["ok"])
    kinds = Counter(s["kind"] for r in results for s in r["scenarios"])
    legacy = [r["type"] for r in results if r.get("legacy_layout")]
    lines = [
        "# Parity sweep: report() vs from_pretrained(output_loading_info=True, ignore_mismatched_sizes=True)",
        "",
        f"transformers {transformers.__version__}; {len(results)} model types from CONFIG_MAPPING; "
        f"sweep wall time {seconds:.0f} s on 2 shared cores"
        f"{f', {workers} worker(s)' if workers else ''}. Generated by `python benchmarks/parity_sweep.py`.",
        "",
        "| model types | pass | fail | skip | not run | scenarios compared | scenarios equal |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {len(results)} | {c.get('pass', 0)} | {c.get('fail', 0)} | {c.get('skip', 0)} | {c.get('not run', 0)} | {nscen} | {okscen} |",
        "",
        "Scenario outcomes: " + ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())) + ".",
        "`both-error` means from_pretrained raised and report() raised a one-line ExplorerError too.",
        "",
        f"Types whose save_pretrained writes a legacy (converted-back) layout, so that `same` exercises "
        f"transformers' weight converters: {len(legacy)} ({', '.join(legacy)}).",
        "",
        "## Failures",
        "",
    ]
    fails = [r for r in results if r["status"] == "fail"]
    if not fails:
        lines.append("None.")
    for r in fails:
        for s in r["scenarios"]:
            if s["ok"]:
                continue
            lines.append(f"- **{r['type']}** `{s['scenario']}` into {s['arch']}: {s['kind']}")
            if s.get("detail"):
                lines.append(f"  - {s['detail']}")
            for k, d in (s.get("diff") or {}).items():
                lines.append(f"  - {k}: ours-only {d['ours_only']}, theirs-only {d['theirs_only']}")
    import re

    why = Counter()
    for r in results:
        if r["status"] == "skip":
            m = re.findall(r"(\w+Error|timeout|no model class|died|too big)", r.get("reason", ""))
            why[m[-1] if m else "other"] += 1
    lines += ["", "## Found by this sweep and fixed in the core", "", *FIXED, "",
              "## Not covered", "", *NOT_COVERED, "",
              "## Skipped (could not build a tiny model generically)", "",
              "By last reason: " + ", ".join(f"{k}: {v}" for k, v in why.most_common()) + ". `no model class`: a "
              "sub-config type with no public model class of its own (it is covered through its composite's "
              "`sub_model` scenario where transformers has one); `too big`: the generic shrink broke the config and "
              "the unshrunk model is over 30M parameters; `ImportError`: an optional dependency (timm, ...) is "
              "missing here.", ""]
    for r in results:
        if r["status"] in ("skip", "not run"):
            lines.append(f"- {r['type']}: {r.get('reason', '')[:200]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker")
    ap.add_argument("--types")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--per-type", type=int, default=40)
    ap.add_argument("--budget", type=float, default=900)
    ap.add_argument("--resume", help="an earlier --json output: run only the types it did not reach, merge")
    ap.add_argument("--json", default=os.path.join(tempfile.gettempdir(), "parity_sweep.json"))
    ap.add_argument("--render", help="only rewrite the markdown from a saved --json")
    ap.add_argument("--out", default=str(HERE / "results" / "parity.md"))
    a = ap.parse_args()
    if a.worker:
        worker(a.worker.split(","), a.per_type)
        return
    if a.render:  # rewrite the markdown from a saved --json
        old = json.loads(Path(a.render).read_text())
        write_md(old["results"], old["seconds"], Path(a.out), old.get("workers"))
        return
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if a.types:
        types = a.types.split(",")
    else:
        rest = sorted(t for t in CONFIG_MAPPING_NAMES if t not in FIRST)
        types = [t for t in FIRST if t in CONFIG_MAPPING_NAMES] + rest
    if a.limit:
        types = types[: a.limit]
    previous: dict[str, dict] = {}
    prev_secs = 0.0
    if a.resume:  # continue an earlier sweep: run what it did not reach (or --types), keep the rest
        old = json.loads(Path(a.resume).read_text())
        prev_secs = old.get("seconds", 0.0)
        previous = {r["type"]: r for r in old["results"]}
        if not a.types:
            types = [t for t in types if previous.get(t, {}).get("status", "not run") == "not run"]
    t0 = time.time()
    results = drive(types, a.workers, a.per_type, a.budget)
    secs = time.time() - t0 + prev_secs
    if previous:
        previous.update({r["type"]: r for r in results})
        results = list(previous.values())
    Path(a.json).write_text(json.dumps({"seconds": secs, "workers": a.workers, "results": results}, indent=1, default=str))
    write_md(results, secs, Path(a.out), a.workers)
    from collections import Counter

    print(Counter(r["status"] for r in results), f"{secs:.0f}s")


if __name__ == "__main__":
    main()
