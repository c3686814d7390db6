"""`ckpt-explorer report`: what will load, from headers alone."""
from __future__ import annotations

import argparse

from ..core import report_cache
from ..core.errors import ConfigError
from ..core.fmt import safe_text
from ..core.jobs import quiet_gc
from ..core.naming import TORCHTITAN_REASON
from ..core.report import Status
from . import EXIT_FINDINGS, EXIT_OK
from .common import (
    Style,
    add_json_arg,
    add_mapping_args,
    add_model_args,
    collapse_indices,
    counts_line,
    human_bytes,
    human_count,
    mapping_json,
    print_json,
    print_key_sections,
    rerun_command,
    stderr_progress,
    target_spec,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="classify every key: matched / missing / unexpected / mismatched (header-only)",
        description="Compare a checkpoint with a model exactly as from_pretrained / load_state_dict would, "
        "reading only headers. Exit 0 clean, 1 findings, 2 error.",
    )
    p.add_argument("checkpoint", help="a .safetensors/.bin/.pt file, a *.index.json, a Hugging Face folder, or a PEFT adapter folder")
    add_model_args(p)
    a = p.add_argument_group("PEFT adapter (CHECKPOINT is a folder with adapter_config.json)")
    a.add_argument("--base", metavar="B", help="the base model folder (config.json + weights); default: --config, "
                   "else the adapter's base_model_name_or_path (local folder or local Hugging Face cache)")
    a.add_argument("--delta", action="store_true", help="also measure ΔW = scaling·B·A per LoRA module (reads the adapter tensors)")
    a.add_argument("--adapter-name", metavar="NAME", default=None,
                   help="peft's adapter_name (default 'default'): keys are named ….lora_A.NAME.weight, as "
                   "PeftModel.from_pretrained(..., adapter_name=NAME) names them")
    add_mapping_args(p)
    p.add_argument("--no-model", action="store_true", help="list the tensors only, even if a config.json is beside the checkpoint")
    p.add_argument(
        "--quantization",
        choices=("auto", "quantized", "off"),
        default="auto",
        help="pre-quantized checkpoints (config quantization_config): 'auto' = what from_pretrained does on this "
        "machine (e.g. FP8 dequantised on a CPU), 'quantized' = the quantized layout a GPU gets, 'off' = the "
        "unquantized model",
    )
    add_json_arg(p)
    p.add_argument("--no-cache", action="store_true",
                   help="neither read nor write the report cache (a repeat report is answered from "
                   f"{report_cache.reports_dir()}: keyed by the headers, files, config, options and library versions; "
                   "CKPT_EXPLORER_CACHE moves it)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..core.adapter import is_adapter

    if is_adapter(args.checkpoint):
        from .adapter import run_report

        return run_report(args)
    if args.base or args.delta or args.adapter_name:
        raise ConfigError(f"{args.checkpoint}: --base / --delta / --adapter-name apply to a PEFT adapter folder (one with adapter_config.json)")
    # no automatic cyclic GC while the report and its output are made: ~1M objects, no garbage cycles. When the
    # process ends after the command they are frozen at the end, so the first collection after the block does not
    # walk them all on the way out (0.2 s on the MoE); a caller of main(argv) keeps a collectable heap (jobs.quiet_gc)
    renames = [o for o, on in (("--key-mapping", args.key_mapping is not None), ("--auto-fix", args.auto_fix)) if on]
    verb = "rename" if len(renames) > 1 else "renames"
    if renames and args.no_model:
        raise ConfigError(f"{' / '.join(renames)} {verb} checkpoint keys to a model's; with --no-model there is none")
    with quiet_gc(freeze=getattr(args, "program", False)):
        target = target_spec(args, need_model=False if args.no_model else None).resolve(progress=stderr_progress("headers"))
        if renames and not target.has_model:  # the mapping would be silently unused
            raise ConfigError(f"{args.checkpoint}: {' / '.join(renames)} {verb} checkpoint keys to a model's, and there "
                              "is no model: pass --config / --arch / --model, or put a config.json beside the checkpoint")
        # a repeat report is answered from the cache without importing torch or transformers (core.report_cache)
        rep, _hit = report_cache.report_of(target, use_cache=not args.no_cache)
        if args.json:
            print_json(rep.to_json())
        else:
            print_text(rep, args=args)
    return EXIT_OK if rep.is_clean else EXIT_FINDINGS


def print_text(rep, *, args: argparse.Namespace | None = None) -> None:  # rep: Report
    s = Style()
    idx = rep.index
    print(s(f"{idx.path}", "1"))
    print(f"  {idx.format}, {len(idx.files)} file(s), {len(idx.tensors)} tensors, "
          f"{human_count(idx.total_params)} params, {human_bytes(idx.total_bytes)}")
    if idx.wrapper_key:
        print(f"  wrapper dict: {idx.wrapper_text()}")
    for n in rep.notes:
        print(s(f"  note: {n}", "2"))
    if not rep.has_model:
        print(s("  no model: every tensor as stored (in checkpoint); pass --config/--arch, or put a config.json beside "
                "it, to see what would load", "2"))
        if rep.disk is not None and rep.disk.children:
            print()
            print(s("modules (from the dotted names): tensors, values, bytes, dtypes", "1"))
            for depth, label, n in disk_lines(rep.disk):
                tensors = f"{n.n_tensors} tensor{'s' if n.n_tensors != 1 else ''}"
                print(f"  {'  ' * depth}{safe_text(label):<{max(8, 46 - 2 * depth)}} {tensors:>13} {human_count(n.n_params):>8} "
                      f"{human_bytes(n.nbytes):>10}  {n.dtype_text()}")
            print()
        for t in idx.tensors.values():
            print(f"  {safe_text(t.name):60s} {str(list(t.shape)):>20s} {t.dtype}")
        return
    src = rep.spec.model if rep.spec.model else f"config {rep.spec.config}"
    print(f"  model: {rep.arch} ({src}), loads in {rep.load_dtype or 'its own dtypes'}")
    c = rep.counts()
    if rep.family is not None:
        f = rep.family
        keys = sum(1 for k in rep.model_keys.values() if k.status is not Status.COMPUTED)
        print(s(f"  wrong model family: {f.message()}; {c['matched']} of {keys} model keys load", "1;31"))
        if f.heads:
            print(f"  re-run with --arch {f.heads[0]} (or another class for {f.config_type!r})")
    loaded, fresh = rep.params_loaded()
    print(counts_line(c, s, f", {c['ignored']} ignored  |  {human_count(loaded)} params loaded, {human_count(fresh)} newly initialised"))
    if rep.key_mapping:
        print(f"  key mapping applied: {mapping_json(rep.key_mapping)}")

    print_key_sections(s, ("MISSING — newly initialised", list(rep.missing)),
                       ("UNEXPECTED — in the checkpoint, not used", list(rep.unexpected)),
                       ("SHAPE MISMATCH — newly initialised", list(rep.mismatched)), "checkpoint")
    hows: dict[str, int] = {}
    for mk in rep.model_keys.values():
        if mk.status is Status.MATCHED:
            for h in mk.how:
                hows[h.value] = hows.get(h.value, 0) + 1
    if hows:
        print()
        print("how keys matched: " + ", ".join(f"{v} {k}" for k, v in sorted(hows.items(), key=lambda x: -x[1])))
    if rep.suggested_key_mapping and not rep.key_mapping:
        e = rep.suggestion_effect or {}
        text = mapping_json(rep.suggested_key_mapping)
        print()
        print(s(f"{rep.suggestion_reason or 'prefix trouble'} detected. Suggested key_mapping: ", "1") + text)
        print(f"  with it: {e.get('matched')} matched, {e.get('missing')} missing, {e.get('unexpected')} unexpected, "
              f"{e.get('mismatched')} mismatched")
        if args is not None and getattr(args, "checkpoint", None):
            print(f"  re-run with --auto-fix, or: {rerun_command(args, rep.suggested_key_mapping)}")
        else:
            print("  re-run with --auto-fix or --key-mapping")
        print(f"  in Python: from_pretrained(..., key_mapping={text})")
        if rep.suggestion_reason == TORCHTITAN_REASON:
            print("  to write Hugging Face safetensors with the q/k rows permuted for HF's RoPE: "
                  "ckpt-explorer export CKPT -o OUT --auto-fix")


def disk_lines(root, *, depth: int = 3):  # root: core.disk_tree.DiskNode -> [(depth, label, node)]
    """The modules of a checkpoint-only tree down to ``depth``, numbered siblings (layer.0 ... layer.11) in one
    line with their totals summed (``encoder.layer.{0..11}``)."""
    from ..core.disk_tree import DiskNode

    out = []

    def visit(node, level: int) -> None:
        if level >= depth:
            return
        numbered = [c for c in node.children if c.name.isdigit()]
        for c in node.children:
            if c.name.isdigit():
                if c is not numbered[0]:
                    continue
                if len(numbered) > 1:
                    total = DiskNode(node.path)
                    for m in numbered:
                        total.n_tensors += m.n_tensors
                        total.n_params += m.n_params
                        total.nbytes += m.nbytes
                        total.dtypes.update(m.dtypes)
                    label = collapse_indices([m.path for m in numbered])
                    out.append((level, label[0] if len(label) == 1 else f"{node.path}.* ({len(numbered)})", total))
                    continue
            out.append((level, c.path, c))
            visit(c, level + 1)

    visit(root, 0)
    return out
