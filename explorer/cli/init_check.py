"""`ckpt-explorer init-check`: which tensors look like the model's fresh initialisation (untrained)."""
from __future__ import annotations

import argparse

from ..core.fmt import safe_text
from . import EXIT_FINDINGS, EXIT_OK
from .common import (
    Style,
    add_adapter_args,
    add_json_arg,
    add_mapping_args,
    add_model_args,
    add_workers_arg,
    mapping_json,
    pass_workers,
    print_json,
    rerun_command,
    target_spec,
)


def _seed(text: str) -> int:
    """``--seed``: a whole number >= 0 (a negative one reached numpy's sampler as an unexpected ValueError)."""
    try:
        n = int(text, 10)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, found {text!r}")
    return n


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init-check",
        help='flag tensors that look like a fresh init ("looks untrained")',
        description="Compare every tensor with the model's own fresh initialisation of its module (seeded, one "
        "module at a time, every module a work item on every core: --workers): a KS test for random inits, an exact "
        "check for constants; the verdicts are the same for any workers. "
        "Exit 0 none init-like, 1 some init-like or most tensors not checked (prefix trouble: use --auto-fix), 2 error.",
    )
    p.add_argument("checkpoint", help="a .safetensors/.bin/.pt file, a *.index.json, or a Hugging Face folder")
    add_model_args(p)
    add_mapping_args(p)
    add_adapter_args(p, config=False)
    p.add_argument("--seed", type=_seed, default=0, help="seed of the fresh initialisation (default 0)")
    p.add_argument("--all", action="store_true", help="text mode: list every tensor, not only init-like ones")
    add_workers_arg(p, "the fresh inits and comparisons")
    add_json_arg(p)
    p.set_defaults(run=run, command_name="init-check")


def run(args: argparse.Namespace) -> int:
    from ..core.fresh import init_check
    from ..core.matching import report
    from ..core.report import Status
    from .common import stderr_progress

    from ..core.adapter import is_adapter

    if is_adapter(args.checkpoint):
        return run_adapter(args)
    if args.base or args.adapter_name:
        from ..core.errors import ConfigError

        raise ConfigError(f"{args.checkpoint}: --base / --adapter-name apply to a PEFT adapter folder (one with adapter_config.json)")
    target = target_spec(args, need_model=True).resolve()
    index, spec, km = target.index, target.spec, target.key_mapping
    if args.auto_fix:
        km = report(target).key_mapping
    with pass_workers(args) as workers:
        results = init_check(index, spec, key_mapping=km, seed=args.seed, progress=stderr_progress("init-check"),
                             workers=workers)
    flagged = [r for r in results if r.init_like]
    notes = []
    if km:
        notes.append(f"key mapping applied: {mapping_json(km)}")
    unplaced = sum(1 for r in results if r.status is Status.UNEXPECTED)
    prefix_trouble = unplaced >= max(2, len(results) // 4)
    if prefix_trouble and km:
        notes.append(f"{unplaced} of {len(results)} tensors do not load into the model even with this key mapping "
                     "and were not checked; check it with `ckpt-explorer report`")
    elif prefix_trouble:
        # a DDP/compile prefix leaves nothing to check; "0 look untrained" would be a false all-clear
        sugg = report(index, spec).suggested_key_mapping
        how = f"re-run with --auto-fix, or: {rerun_command(args, sugg)}" if sugg else "re-run with --auto-fix or --key-mapping"
        notes.append(f"{unplaced} of {len(results)} tensors do not load into the model and were not checked "
                     f"(prefix trouble?); {how}")
    code = EXIT_FINDINGS if flagged or prefix_trouble else EXIT_OK
    if args.json:
        print_json({"checkpoint": index.path, "key_mapping": dict(km) if km else None, "notes": notes,
                    "not_checked": unplaced, "prefix_trouble": prefix_trouble,
                    "tensors": [r.to_json() for r in results], "init_like": [r.name for r in flagged]})
        return code
    print_results(index.path, results, flagged, notes, all_rows=args.all)
    return code


def print_results(path: str, results: list, flagged: list, notes: list[str], *, all_rows: bool) -> None:
    s = Style()
    print(s(path, "1"))
    for n in notes:
        print(s(f"  note: {n}", "33"))
    checked = sum(r.kind in ("random", "constant") for r in results)
    print(f"  {checked} tensors checked against a fresh init, "
          + s(f"{len(flagged)} look untrained", "31" if flagged else "32"))
    rows = results if all_rows else flagged
    if rows:
        print(s(f"  {'name':<56} {'init-like':<9} {'score':>9} {'KS D':>7}  details", "2"))
    for r in rows:
        mark = s(f"{'YES':<9}", "31") if r.init_like else f"{'no':<9}"
        score = "-" if r.score is None else f"{r.score:.3g}"
        ks = "-" if r.ks is None else f"{r.ks:.4f}"
        print(f"  {safe_text(r.name):<56} {mark} {score:>9} {ks:>7}  {r.details}")


def run_adapter(args: argparse.Namespace) -> int:
    """Each loaded LoRA tensor against peft's own fresh init; exit 1 when a module is untrained (lora_B all zeros)."""
    from ..core.adapter_view import adapter_init_check
    from ..core.errors import ConfigError
    from .common import stderr_progress
    from .adapter import adapter_report

    rep = adapter_report(args, deltas=False)
    if not rep.loads:
        raise ConfigError(f"{rep.adapter.folder}: peft does not load this adapter onto this base: "
                          + "; ".join(f.message for f in rep.findings[:1]))
    results = adapter_init_check(rep, seed=args.seed, progress=stderr_progress("init-check"))
    flagged = [r for r in results if r.init_like]
    untrained = sorted({r.key.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] for r in flagged if r.key})
    notes = ["compared with peft's own initialisation (reset_lora_parameters); a module whose lora_B is still all zeros "
             "has ΔW = 0: untrained"]
    code = EXIT_FINDINGS if flagged else EXIT_OK
    if args.json:
        print_json({"checkpoint": rep.adapter.folder, "adapter": True, "notes": notes, "untrained_modules": untrained,
                    "tensors": [r.to_json() for r in results], "init_like": [r.name for r in flagged]})
        return code
    print_results(rep.adapter.folder, results, flagged, notes, all_rows=args.all)
    if untrained:
        print(Style()(f"  {len(untrained)} of {len(rep.adapted)} adapted modules untrained (lora_B all zeros)", "31"))
    return code
