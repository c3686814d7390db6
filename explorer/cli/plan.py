"""`ckpt-explorer plan`: build a plan (keep/reinit/drop, freeze/train, LR scales) from a match report and rules."""
from __future__ import annotations

import argparse
from typing import Any

from . import EXIT_OK
from .common import Style, add_json_arg, add_mapping_args, add_model_args, mapping_json, print_json, target_spec

_RULE_FLAGS = {
    "freeze": dict(trainable=False),
    "train": dict(trainable=True),
    "keep": dict(action="keep"),
    "reinit": dict(action="reinit"),
    "drop": dict(action="drop"),
}


class _RuleAction(argparse.Action):
    """Collect every rule flag into one list so command-line order (later wins) is kept."""

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, value: Any, option: str | None = None) -> None:
        rules = list(getattr(ns, "rules", None) or [])
        rules.append((self.dest.removeprefix("rule_"), value))
        ns.rules = rules


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="write a plan: defaults from the report (missing/mismatched reinit, unexpected drop) plus your rules",
        description="Build a plan JSON for `export` and apply_plan(). Globs match model keys on whole dot-separated "
        "components ('*' also crosses dots, [0-5] classes work): --freeze 'encoder.layer.[0-2]'. Rules apply in "
        "command-line order; later ones win.",
    )
    p.add_argument("checkpoint", help="a .safetensors/.bin/.pt file, a *.index.json, or a Hugging Face folder")
    add_model_args(p)
    add_mapping_args(p)
    for flag, what in (
        ("freeze", "frozen (requires_grad=False)"),
        ("train", "trainable"),
        ("keep", "kept from the checkpoint"),
        ("reinit", "re-initialised with the model's own init"),
        ("drop", "left out of the exported checkpoint"),
    ):
        p.add_argument(f"--{flag}", dest=f"rule_{flag}", metavar="GLOB", action=_RuleAction, help=f"keys matching GLOB are {what}")
    p.add_argument("--lr-scale", dest="rule_lr_scale", metavar="GLOB=F", action=_RuleAction,
                   help="learning-rate multiplier for keys matching GLOB, e.g. 'encoder*=0.01'")
    p.add_argument("--regex", action="store_true", help="rule patterns are regular expressions (re syntax, searched in the key under a time limit), not globs")
    p.add_argument("-o", "--output", required=True, metavar="plan.json",
                   help="where to write the plan (atomically); an existing file is replaced only if it is a plan")
    p.add_argument("--force", action="store_true",
                   help="replace an existing -o file even if it is not a plan (never an input of this command)")
    add_json_arg(p)
    p.set_defaults(run=run, rules=[])


def build_plan(args: argparse.Namespace):  # -> tuple[Plan, Report]
    from ..core.errors import PlanError
    from .common import open_index
    from ..core.matching import report
    from ..core.plan import Plan

    index = open_index(args)
    ts = target_spec(args, need_model=True)
    nothing_given = PlanError(f"{index.path}: a plan needs a model: pass --config/--arch or --model")
    target = ts.resolve(index=index, missing=nothing_given if ts.model_spec() is None else None)
    rep = report(target)
    if args.auto_fix and rep.suggested_key_mapping and not rep.key_mapping:
        rep = report(target, key_mapping=rep.suggested_key_mapping, suggest=False)
    plan = Plan.from_report(rep)
    match = "regex" if args.regex else "glob"
    for kind, value in args.rules:
        if kind == "lr_scale":
            pat, sep, num = value.rpartition("=")
            try:
                scale = float(num)
            except ValueError:
                scale = None
            if not sep or not pat or scale is None:
                raise PlanError(f"--lr-scale {value!r}: expected GLOB=FACTOR, e.g. 'encoder*=0.01'")
            try:
                plan = plan.with_rule(pat, match=match, lr_scale=scale)
            except PlanError as e:  # inf, nan, 0, negative: name the option
                raise PlanError(f"--lr-scale {value!r}: {e}") from None
        else:
            plan = plan.with_rule(value, match=match, **_RULE_FLAGS[kind])  # type: ignore[arg-type]
    keys = list(plan.resolve(rep))
    for rule, hits in zip(plan.rules, plan.rule_hits(keys)):
        if hits == 0:
            raise PlanError(f"rule {rule.describe()} selects no key of {rep.arch}")
    return plan, rep


def summary(plan, rep) -> dict[str, Any]:  # plan: Plan, rep: Report
    entries = plan.resolve(rep)
    actions: dict[str, int] = {"keep": 0, "reinit": 0, "drop": 0}
    frozen = 0
    scales: dict[str, int] = {}
    for e in entries.values():
        actions[e.action.value] += 1
        if e.is_model_key and not e.trainable:
            frozen += 1
        if e.lr_scale is not None and e.trainable:
            scales[f"{e.lr_scale:g}"] = scales.get(f"{e.lr_scale:g}", 0) + 1
    return {
        "arch": rep.arch,
        "checkpoint": rep.index.path,
        "key_mapping": dict(plan.key_mapping) if plan.key_mapping else None,
        "rules": [r.to_json() for r in plan.rules],
        "rule_hits": plan.rule_hits(list(entries)),
        "actions": actions,
        "frozen": frozen,
        "trainable": sum(1 for e in entries.values() if e.is_model_key and e.trainable),
        "lr_scales": scales,
        "plan_sha256": plan.sha256(),
    }


def named_inputs(args: argparse.Namespace) -> list:
    """The files this command reads, from the paths on its command line (before anything is read)."""
    from ..core.outputs import named_inputs as named

    return named(args.checkpoint, args.config, getattr(args, "key_mapping", None), getattr(args, "model_kwargs", None))


def run(args: argparse.Namespace) -> int:
    from ..core.outputs import report_inputs
    from ..core.plan import check_plan_output, save_plan

    check_plan_output(args.output, inputs=named_inputs(args), force=args.force)  # before the report is built
    plan, rep = build_plan(args)
    path = save_plan(plan, args.output, inputs=[*named_inputs(args), *report_inputs(rep)], force=args.force)
    s = summary(plan, rep)
    s["output"] = str(path)
    if args.json:
        print_json(s)
        return EXIT_OK
    st = Style()
    print(st(f"plan for {rep.arch} <- {rep.index.path}", "1"))
    if plan.key_mapping:
        print(f"  key mapping: {mapping_json(plan.key_mapping)}")
    a = s["actions"]
    print(f"  {a['keep']} keep, {a['reinit']} reinit, {a['drop']} drop; {s['trainable']} trainable, {s['frozen']} frozen")
    for rule, hits in zip(plan.rules, s["rule_hits"]):
        print(f"  rule {rule.describe()}: {hits} key(s)")
    if s["lr_scales"]:
        print("  lr scales: " + ", ".join(f"×{k} ({v} keys)" for k, v in s["lr_scales"].items()))
    print(f"wrote {path}")
    return EXIT_OK
