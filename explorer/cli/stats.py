"""`ckpt-explorer stats`: streamed per-tensor statistics and histograms."""
from __future__ import annotations

import argparse
import difflib

from ..core.fmt import safe_text
from . import EXIT_OK
from .common import Style, add_adapter_args, add_json_arg, add_source_args, add_workers_arg, pass_workers, print_json, stderr_progress

MAX_BINS = 1_000_000  # the histogram is one float64 per bin; a typo like 10**9 must not allocate 8 GB
JSON_BINS = 256  # the window's histogram
TEXT_BINS = 32  # one sparkline character per bin fits beside the table
MAX_COLS = 64
_BLOCKS = "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"
_ASCII = ".:-=+*#%"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stats",
        help="per-tensor statistics and histograms (streamed over mmap)",
        description="Mean, std, min/max, zeros, NaN/Inf, L2 norm and a histogram for each tensor (default: all), "
        "streamed chunk by chunk on every core (--workers). Exit 0 ok, 2 error.",
    )
    p.add_argument("checkpoint", help="a .safetensors/.bin/.pt file, a *.index.json, or a Hugging Face folder")
    p.add_argument("keys", nargs="*", metavar="KEY", help="tensor names as on disk (default: every tensor)")
    p.add_argument(
        "--bins",
        type=int,
        default=None,
        metavar="N",
        help=f"histogram bins (default: {JSON_BINS} with --json, as in the window; {TEXT_BINS} in text, drawn as a "
        f"one-line sparkline under each tensor, one character per bin, bins merged to at most {MAX_COLS} characters)",
    )
    p.add_argument("--wrapper", metavar="KEY", help="sub-dict to use in a wrapper checkpoint")
    add_source_args(p)
    add_adapter_args(p, what="ΔW per LoRA module (ΔW:<module> in KEY) needs the base's peft layers")
    add_workers_arg(p)
    add_json_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..core.checkpoint import TensorReader
    from .common import open_index
    from ..core.errors import CheckpointError, ExplorerError
    from ..core.stats import stats_many

    if args.bins is None:
        args.bins = JSON_BINS if args.json else TEXT_BINS
    if not 1 <= args.bins <= MAX_BINS:
        raise ExplorerError(f"--bins must be between 1 and {MAX_BINS}, found {args.bins}")
    from ..core.adapter import is_adapter

    if is_adapter(args.checkpoint):
        return run_adapter(args)
    if args.base or args.adapter_name or args.config or args.arch:
        raise ExplorerError(f"{args.checkpoint}: --base / --config / --arch / --adapter-name apply to a PEFT adapter folder (one with adapter_config.json)")
    index = open_index(args)
    for k in args.keys:  # unknown names fail before any work
        if k not in index.tensors:
            close = difflib.get_close_matches(k, list(index.tensors), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CheckpointError(f"{index.path}: no tensor named {k!r}{hint}")
    with TensorReader(index) as reader, pass_workers(args) as workers:
        results = list(stats_many(reader, args.keys or None, bins=args.bins, progress=stderr_progress("stats"),
                                  workers=workers))
    if args.json:
        print_json({"checkpoint": index.path, "tensors": [s.to_json() for s in results]})
        return EXIT_OK
    print_results(index.path, results)
    return EXIT_OK


def print_results(path: str, results: list) -> None:
    """The text table: one line per tensor, its histogram as a sparkline under it."""
    s = Style()
    print(s(path, "1"))
    head = (f"{'name':<52} {'dtype':<13} {'numel':>10} {'mean':>10} {'std':>10} {'min':>10} {'max':>10} {'zeros':>6} "
            f"{'nan/inf':>8} flags")
    print(s(head, "2"))
    blocks = _BLOCKS if _can_encode(_BLOCKS) else _ASCII
    for st in results:
        flags = ",".join(f for f, on in (("constant", st.constant), ("integer", st.integer)) if on) or "-"
        print(
            f"{_short(safe_text(st.name), 52):<52} {st.dtype:<13} {st.numel:>10} {_g(st.mean):>10} {_g(st.std):>10} {_g(st.min):>10} "
            f"{_g(st.max):>10} {st.zeros:>6.1%} {f'{st.nan}/{st.inf}':>8} {flags}"
        )
        if st.counts:
            line = sparkline(st.counts, blocks=blocks)
            merged = f", {len(st.counts)} bins in {len(line)} columns" if len(line) < len(st.counts) else ""
            note = f" ({st.bins_note})" if st.bins_note else ""
            print(s(f"  |{line}|  [{_g(st.edges[0])}, {_g(st.edges[-1])}]{merged}{note}", "2"))


def sparkline(counts: tuple[int, ...] | list[int], *, blocks: str = _BLOCKS, width: int = MAX_COLS) -> str:
    """One character per bin (adjacent bins summed down to ``width``): empty bins are blank, the rest scale
    from the lowest block (any count) to the full block (the tallest bin)."""
    vals = list(counts)
    if len(vals) > width:
        n = len(vals)
        vals = [sum(vals[i * n // width : (i + 1) * n // width]) for i in range(width)]
    top = max(vals) if vals else 0
    if top <= 0:
        return " " * len(vals)
    k = len(blocks)
    return "".join(" " if v <= 0 else blocks[min(k - 1, int((v / top) * (k - 1) + 0.5))] for v in vals)


def _can_encode(text: str) -> bool:
    import sys

    try:
        text.encode(getattr(sys.stdout, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _g(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _short(name: str, width: int) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def run_adapter(args: argparse.Namespace) -> int:
    """Statistics of the adapter's tensors and of ΔW per LoRA module (``ΔW:<module>``; needs the base's config to
    know peft's scaling: --base, --config or base_model_name_or_path). Exit 0 ok, 2 error."""
    import difflib

    from ..core.adapter import open_adapter
    from ..core.adapter_view import DeltaReader, adapter_view, lora_pairs
    from ..core.checkpoint import TensorReader
    from ..core.errors import CheckpointError, ConfigError
    from ..core.stats import stats_many
    from .adapter import adapter_report, print_deltas

    af = open_adapter(args.checkpoint)
    notes: list[str] = []
    rep = None
    try:
        rep = adapter_report(args, deltas=True)
    except ConfigError as e:
        if args.base or args.config:
            raise
        notes.append(f"no ΔW: {e} (the adapter's own tensors only)")
    if rep is not None and not rep.loads:
        notes.append("no ΔW: peft does not load this adapter onto this base (see `ckpt-explorer report`)")
    pairs = lora_pairs(rep) if rep is not None and rep.loads else {}
    reader = DeltaReader(adapter_view(rep).index, pairs) if pairs else TensorReader(af.index)
    with reader:
        known = list(af.index.tensors) + list(getattr(reader, "pairs", {}))
        for k in args.keys:
            if k not in known:
                close = difflib.get_close_matches(k, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise CheckpointError(f"{af.weights}: no tensor named {k!r}{hint}")
        names = list(args.keys) or known
        results = list(stats_many(reader, names, bins=args.bins, progress=stderr_progress("stats"), workers=args.workers))
    deltas = {f"ΔW:{d.module}": d for d in (rep.deltas if rep is not None else ())}
    if args.json:
        print_json({"checkpoint": af.folder, "adapter": True, "notes": notes,
                    "tensors": [s.to_json() | ({"delta": deltas[s.name].to_json()} if s.name in deltas else {})
                                for s in results]})
        return EXIT_OK
    for n in notes:
        print(Style()(f"note: {safe_text(n)}", "33"))
    print_results(af.folder, results)
    shown = [deltas[s.name] for s in results if s.name in deltas]
    if shown:
        print()
        print_deltas(shown)
    return EXIT_OK
