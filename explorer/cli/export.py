"""`ckpt-explorer export`: write the checkpoint patched by a plan, streamed and atomic, then re-check it."""
from __future__ import annotations

import argparse

from . import EXIT_FINDINGS, EXIT_OK
from ..core.errors import ConfigError
from .common import Style, add_json_arg, add_mapping_args, human_bytes, key_mapping, model_spec, print_json, stderr_progress, workers_type


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..core.export_options import DTYPES_HELP  # nothing heavy: the parser is built for every command

    p = sub.add_parser(
        "export",
        help="write a patched checkpoint from a plan that loads with nothing missing/unexpected/mismatched",
        description="Apply a plan (from `ckpt-explorer plan` or the GUI) and write a new Hugging Face folder: "
        "kept tensors byte-identical, fresh ones from the model's own init (seeded); tokenizer, generation and processor "
        "files beside the source are copied unchanged (the source's weights and config.json never are: a new config.json "
        "is written). Streamed tensor by tensor, "
        "written to a staging folder and renamed at the end. Exit 0 when the result loads clean, 1 if not, 2 on error.",
    )
    p.add_argument("checkpoint", help="the source checkpoint (file, *.index.json or folder)")
    p.add_argument("--plan", metavar="plan.json", help="the plan to apply; without --plan and --adapter every tensor is "
                   "written unchanged (a plain conversion to safetensors from any input format, e.g. DCP rank shards)")
    p.add_argument("--adapter", metavar="ADAPTER", help="a PEFT adapter folder to merge into the checkpoint (W + scaling·B·A "
                   "by peft's own merge; modules_to_save replace their base); --plan then applies on top")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="a new (or empty) folder for the result")
    p.add_argument("--config", metavar="C", help="override the config recorded in the plan")
    m = p.add_mutually_exclusive_group()
    m.add_argument("--arch", metavar="A", help="override the transformers class recorded in the plan")
    m.add_argument("--model", metavar="pkg.module:Class",
                   help="a plain torch.nn.Module class: imported and run (a plan never names code to import)")
    p.add_argument("--model-kwargs", metavar="JSON", default=None, help="keyword arguments for --model, as a JSON object")
    p.add_argument("--resize", action="store_true", help="mismatched tensors keep the overlapping slice, the rest is initialised")
    p.add_argument("--dtype", metavar="D", help=f"cast floating tensors: {DTYPES_HELP}")
    p.add_argument("--max-shard-size", metavar="S", help="shard the output, e.g. 2GB or 500MiB (adds model.safetensors.index.json)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the fresh init (default 0)")
    p.add_argument("--wrapper", metavar="KEY", help="plain conversion: the sub-dict / DCP sub-tree to write (default as report picks it)")
    add_mapping_args(p)  # plain conversion: rename (torchtitan q/k weights renamed to HF names are also permuted)
    p.add_argument("--workers", type=workers_type, default=None, metavar="N",
                   help="with --plan or --adapter: cores for the casts, fresh inits and merged modules made ahead "
                   "of the writer — N threads, each running torch on one intra-op thread (1: one core, torch's own "
                   "threads capped for the export and restored after; default: every core this process may use; the "
                   "written files are the same for any N)")
    add_json_arg(p)
    p.set_defaults(run=run)


def _spec(args: argparse.Namespace, plan):  # -> ModelSpec | None
    """The model from the command line; the plan's own transformers class and config fill what is not given. A
    custom class comes only from --model (and its arguments only from --model-kwargs): never from the plan."""
    from ..core.model import ModelSpec

    if args.model:
        return model_spec(args)
    if args.model_kwargs is not None:
        raise ConfigError("--model-kwargs needs --model pkg.module:Class")
    if args.config or args.arch:
        return ModelSpec(config=args.config or plan.config, arch=args.arch or plan.arch)
    return None


def run(args: argparse.Namespace) -> int:
    from ..core.export import export_checkpoint
    from ..core.export_options import parse_size
    from ..core.plan import load_plan

    max_shard_size = parse_size(args.max_shard_size, what="--max-shard-size")  # before anything is read
    if args.adapter is None and args.plan is None:
        return _convert(args)
    if args.key_mapping or args.auto_fix:
        raise ConfigError("export --plan/--adapter: the plan's own key_mapping applies; --key-mapping / --auto-fix are "
                          "for a plain conversion (no --plan)")
    plan = load_plan(args.plan) if args.plan else None
    bar = stderr_progress("export", show_bytes=True)
    try:
        if args.adapter is not None:
            from ..core.merge import export_merged

            if args.model or args.config:
                from ..core.errors import ConfigError

                raise ConfigError("export --adapter: the base's own config is used; --config / --model do not apply")
            res = export_merged(args.checkpoint, args.adapter, args.output, plan=plan, arch=args.arch, dtype=args.dtype,
                                max_shard_size=max_shard_size, seed=args.seed, progress=bar, workers=args.workers)
        else:
            res = export_checkpoint(
            args.checkpoint,
            plan,
            args.output,
            resize=args.resize,
            dtype=args.dtype,
            max_shard_size=max_shard_size,
            seed=args.seed,
            spec=_spec(args, plan),
            progress=bar,
            workers=args.workers,
            )
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print_json(res.to_json())
    else:
        s = Style()
        c = res.counts
        print(s(f"wrote {res.out_dir}", "1") + f": {len(res.files)} file(s), {res.n_tensors} tensors, "
              f"{human_bytes(res.total_bytes)} in {res.seconds:.1f} s")
        merged = f"{c['merged']} merged with the adapter, " if "merged" in c else ""
        print(f"  {merged}{c['keep']} kept, {c['reinit']} re-initialised, {c['resized']} resized, {c['dropped']} dropped, "
              f"{c['tied']} tied (not duplicated), {c['unexpected_dropped']} unexpected dropped")
        if res.copied:
            print(f"  copied unchanged from the source folder: {', '.join(res.copied)}")
        for n in res.notes:
            print(s(f"  note: {n}", "33"))
        r = res.report
        if res.is_clean:
            print(s(f"  reload check: clean — {r.counts()['matched']} keys load into {r.arch}, nothing missing, unexpected or mismatched", "32"))
        else:
            print(s(f"  reload check: {len(r.missing)} missing, {len(r.unexpected)} unexpected, {len(r.mismatched)} mismatched", "31"))
    return EXIT_OK if res.is_clean else EXIT_FINDINGS


def _convert(args: argparse.Namespace) -> int:
    from ..core.convert import convert_checkpoint
    from ..core.errors import ConfigError

    if args.model or args.arch or args.resize:
        raise ConfigError("export without --plan is a plain conversion: --arch / --model / --resize need a plan")
    if args.workers is not None:
        raise ConfigError("export without --plan or --adapter is a plain conversion, written in one thread: --workers "
                          "applies to --plan / --adapter exports")
    bar = stderr_progress("export", show_bytes=True)
    try:
        res = convert_checkpoint(args.checkpoint, args.output, wrapper=args.wrapper, dtype=args.dtype,
                                 max_shard_size=args.max_shard_size, config=args.config, key_mapping=key_mapping(args),
                                 auto_fix=args.auto_fix, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print_json(res.to_json())
        return EXIT_OK
    s = Style()
    print(s(f"wrote {res.out_dir}", "1") + f": {len(res.files)} file(s), {res.n_tensors} tensors, "
          f"{human_bytes(res.total_bytes)} in {res.seconds:.1f} s (every tensor of the {res.source_format} checkpoint)")
    if res.copied:
        print(f"  copied unchanged from the source folder: {', '.join(res.copied)}")
    for n in res.notes:
        print(s(f"  note: {n}", "33"))
    return EXIT_OK
