"""`ckpt-explorer diff`: checkpoint A vs B, tensor by tensor (streamed)."""
from __future__ import annotations

import argparse

from ..core.fmt import safe_text
from . import EXIT_FINDINGS, EXIT_OK
from .common import Style, add_json_arg, add_workers_arg, key_mapping, pass_workers, mapping_json, print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diff",
        help="compare two checkpoints: same / changed / only_a / only_b / shape_mismatch",
        description="Per tensor: status, relative change |B-A|/|A|, cosine similarity, max abs diff (values read as "
        "float32, sums in float64), streamed on every core (--workers). Different prefixes (module., bert.) are paired automatically or with "
        "--key-mapping (applied to both sides). Exit 0 identical, 1 differences, 2 error.",
    )
    p.add_argument("a", help="checkpoint A (file or Hugging Face folder, or a Hub repo org/name[@rev], hf://..., https://...)")
    p.add_argument("b", help="checkpoint B (e.g. the Hub base of a local fine-tune: only the tensors' byte ranges are read)")
    p.add_argument("--key-mapping", metavar="JSON", help='rename keys of both sides, e.g. \'{"^module\\\\.": ""}\'')
    p.add_argument("--revision-a", metavar="REV", default=None, help="branch, tag or commit when A is a Hub repo (default: main; or A as org/name@REV)")
    p.add_argument("--revision-b", metavar="REV", default=None, help="branch, tag or commit when B is a Hub repo (default: main; or B as org/name@REV)")
    p.add_argument("--download", action="store_true", help="a remote torch pickle: download it into the Hugging Face cache first")
    p.add_argument("--all", action="store_true", help="text mode: list unchanged tensors too")
    p.add_argument("--depth", type=int, default=None, help="roll-up depth in key components (default: per layer)")
    add_workers_arg(p, "the comparison")
    add_json_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..core.errors import ExplorerError
    from ..core.diff import DiffStatus, diff_checkpoints, diff_counts, module_rollup, pair_keys, unrelated_warning
    from .common import open_index
    from .common import stderr_progress

    if args.depth is not None and args.depth < 1:
        raise ExplorerError(f"--depth must be at least 1 (key components per roll-up group), found {args.depth}")
    ia, ib = open_index(args, args.a, revision=args.revision_a), open_index(args, args.b, revision=args.revision_b)
    km = key_mapping(args)
    pairing = pair_keys(ia.tensors, ib.tensors, key_mapping=km)
    with pass_workers(args) as workers:
        entries = diff_checkpoints(ia, ib, key_mapping=km, progress=stderr_progress("diff"), workers=workers)
    roll = module_rollup(entries, depth=args.depth)
    differ = [e for e in entries if e.status is not DiffStatus.SAME]
    counts = diff_counts(entries)  # fixed order, zeros included
    unrelated = unrelated_warning(entries)
    if args.json:
        print_json({
            "a": ia.path, "b": ib.path,
            "counts": counts,
            "unrelated": unrelated,
            "key_mapping": {"a": dict(pairing.mapping_a), "b": dict(pairing.mapping_b)},
            "tensors": [e.to_json() for e in entries],
            "modules": [m.to_json() for m in roll],
        })
        return EXIT_FINDINGS if differ else EXIT_OK
    s = Style()
    print(s(f"A: {ia.path}", "1"))
    print(s(f"B: {ib.path}", "1"))
    if pairing.mapping_a or pairing.mapping_b:
        print(f"  keys paired through: A {mapping_json(pairing.mapping_a or {})}, B {mapping_json(pairing.mapping_b or {})}")
    print("  " + ", ".join(f"{v} {k}" for k, v in counts.items()))  # fixed order, zeros included
    if unrelated:
        print(s(f"  warning: {unrelated}", "1;33"))
    rows = entries if args.all else differ
    if rows:
        print()
        print(s(f"  {'name':<56} {'status':<14} {'rel_change':>10} {'cosine':>9} {'max_abs':>10}", "2"))
    for e in rows:
        print(f"  {safe_text(e.name):<56} {e.status.value:<14} {_f(e.rel_change):>10} {_cos(e.cosine):>9} {_f(e.max_abs_diff):>10}"
              + (f"  {list(e.shape_a)} vs {list(e.shape_b)}" if e.status is DiffStatus.SHAPE_MISMATCH else "")
              + (f"  {e.nonfinite} value(s) differ as NaN/Inf" if e.nonfinite else "")
              + (f"  {e.dtype_a} vs {e.dtype_b}" if e.dtype_a and e.dtype_b and e.dtype_a != e.dtype_b else ""))
    moved = [m for m in roll if m.n_changed]
    if moved:
        print()
        print(s("  per module (relative change, most moved first):", "2"))
        for m in sorted(moved, key=lambda m: -(m.rel_change or 0.0)):
            # a module whose only differences are one-sided has no value change to show: "—", not 0
            values_changed = m.n_changed - m.one_sided
            rel = "—" if m.rel_change is None or (values_changed == 0 and m.one_sided) else _f(m.rel_change)
            sides = [f"{n} {what}" for n, what in ((m.n_only_a, "only in A"), (m.n_only_b, "only in B"),
                                                    (m.n_shape_mismatch, "shape mismatch")) if n]
            print(f"  {safe_text(m.prefix):<40} {rel:>10}  {m.n_changed}/{m.n_tensors} tensors differ"
                  + (f" ({', '.join(sides)})" if sides else ""))
    return EXIT_FINDINGS if differ else EXIT_OK


def _f(v: float | None) -> str:
    """Relative change, max abs diff: 4 significant figures."""
    return "-" if v is None else f"{v:.4g}"


def _cos(v: float | None) -> str:
    """Cosine similarity: fixed 6 decimals (1.000000 vs 0.969415 line up)."""
    return "-" if v is None else f"{v:.6f}"
