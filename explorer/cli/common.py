"""Arguments and output helpers shared by the subcommands."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
from typing import Any, Iterator

from ..core.errors import ConfigError
from ..core.fmt import human_bytes, human_count, json_safe, safe_text  # noqa: F401  (re-exported for the subcommands)
from .terminal import SafeStream, sgr


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--config", metavar="C", help="config.json or its folder (default: the checkpoint's folder)")
    m = g.add_mutually_exclusive_group()
    m.add_argument("--arch", metavar="A", help="transformers class, e.g. BertForSequenceClassification (default: architectures[0])")
    m.add_argument("--model", metavar="pkg.module:Class", help="a plain torch.nn.Module class instead of a transformers config")
    g.add_argument("--model-kwargs", metavar="JSON", default=None, help="keyword arguments for --model, as a JSON object")
    p.add_argument("--wrapper", metavar="KEY", help="sub-dict to use in a wrapper checkpoint (state_dict, model, state_dict_ema, ...)")
    add_source_args(p)


def add_source_args(p: argparse.ArgumentParser) -> None:
    """``--revision`` / ``--download`` for a checkpoint given as a Hub repo id (``org/name``, ``hf://...``)."""
    g = p.add_argument_group("remote checkpoints (a Hub repo id org/name, hf://org/name[/subfolder], an https:// URL)")
    g.add_argument("--revision", metavar="REV", default=None, help="branch, tag or commit of a Hub repo (default: main)")
    g.add_argument("--download", action="store_true",
                   help="a remote torch pickle (no header to read): download it into the Hugging Face cache first")


def open_index(args: argparse.Namespace, path: str | None = None, *, revision: str | None = None):  # -> CheckpointIndex
    """The checkpoint ``path`` (default ``args.checkpoint``), local or remote (``revision``, else ``--revision``;
    ``--download``)."""
    from ..core.remote import open_source

    return open_source(args.checkpoint if path is None else path, revision=revision or getattr(args, "revision", None),
                       wrapper=getattr(args, "wrapper", None), download=bool(getattr(args, "download", False)),
                       progress=stderr_progress("headers"))


def add_adapter_args(p: argparse.ArgumentParser, *, what: str = "", config: bool = True) -> None:
    """--base / --adapter-name (and --config / --arch when the command has no model arguments) for a PEFT adapter."""
    a = p.add_argument_group("PEFT adapter (CHECKPOINT is a folder with adapter_config.json)" + (f"; {what}" if what else ""))
    a.add_argument("--base", metavar="B", help="the base model folder (config.json + weights); default: --config, "
                   "else the adapter's base_model_name_or_path (local folder or local Hugging Face cache)")
    if config:
        a.add_argument("--config", metavar="C", help="the base's config.json or its folder (header-only base, no weights)")
        a.add_argument("--arch", metavar="A", help="the base class (default: the base config's architectures[0])")
    a.add_argument("--adapter-name", metavar="NAME", default=None,
                   help="peft's adapter_name (default 'default'): the adapter's keys are named ….lora_A.NAME.weight, as "
                   "PeftModel.from_pretrained(..., adapter_name=NAME) names them")


def add_mapping_args(p: argparse.ArgumentParser) -> None:
    k = p.add_mutually_exclusive_group()
    k.add_argument("--key-mapping", metavar="JSON", help='rename checkpoint keys first, e.g. \'{"^module\\\\.": ""}\' (a JSON object or a file)')
    k.add_argument("--auto-fix", action="store_true", help="apply the suggested key mapping when prefix trouble or torchtitan naming is detected")


def add_workers_arg(p: argparse.ArgumentParser, what: str = "the whole-checkpoint pass") -> None:
    p.add_argument("--workers", type=_workers, default=None, metavar="N",
                   help=f"cores for {what}: N threads, each running torch on one intra-op thread (so 1 means one "
                   "core, torch's own threads capped for the pass and restored after; default: every core this "
                   "process may use; the figures are the same for any N)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help=f"run {what} on the Dask cluster whose scheduler is at ADDRESS (tcp://host:8786; default: "
                   "$DASK_SCHEDULER_ADDRESS if set, else this machine): the same figures as a local run; the workers "
                   "must see the checkpoint at the same path (pip install 'checkpoint-explorer[cluster]')")


@contextlib.contextmanager
def pass_workers(args: argparse.Namespace) -> Iterator[Any]:
    """What a command's whole-checkpoint pass runs on: a Dask cluster (``--scheduler``, else
    ``$DASK_SCHEDULER_ADDRESS`` unless ``--workers`` was given), connected for the block and closed after, or
    ``--workers`` (None: every core)."""
    given = getattr(args, "scheduler", None)
    if given and args.workers is not None:
        raise ConfigError("--scheduler and --workers: give one (the cluster's workers do the work)")
    from ..core.cluster import DaskExecutor, scheduler_address

    address = scheduler_address(given) if args.workers is None else None
    if address is None:
        yield args.workers
        return
    with DaskExecutor(address) as executor:
        yield executor


def workers_type(text: str) -> int:
    """``--workers N``'s argparse type: a whole number from 1 to MAX_WORKERS, else one line (exit 2)."""
    return _workers(text)


def _workers(text: str) -> int:
    from ..core.parallel import MAX_WORKERS

    try:
        n = int(text, 10)
    except ValueError:
        n = None
    if n is None or not 1 <= n <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_WORKERS}, found {text!r}")
    return n


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def parse_json_arg(text: str | None, what: str) -> Any:
    """``text`` is inline JSON or the path of a JSON file (a regular file, size- and depth-capped as every JSON we
    read: :func:`explorer.core.fsio.load_json`). Raises ConfigError naming the option (and file)."""
    from ..core.fsio import MAX_JSON_BYTES, parse_json, read_bounded

    if text is None:
        return None
    src: str | bytes = text
    where = what
    if os.path.isfile(text):
        where = f"{what} {text}"
        src = read_bounded(text, max_bytes=MAX_JSON_BYTES, what="JSON file", error=ConfigError)
    elif text.lstrip()[:1] not in ("{", "[", '"'):
        if os.path.lexists(text):  # a FIFO, a device, a folder: never opened
            raise ConfigError(f"{what} {text}: not a regular file (expected a JSON file or inline JSON)")
        if text.endswith(".json"):
            raise ConfigError(f"{what} {text}: no such file (expected a JSON file or inline JSON)")
    return parse_json(src, source=where, what="JSON", error=ConfigError)


def _model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs = parse_json_arg(getattr(args, "model_kwargs", None), "--model-kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ConfigError("--model-kwargs: expected a JSON object")
    return kwargs


def model_spec(args: argparse.Namespace):  # -> ModelSpec | None
    """The model arguments alone (``--config/--arch/--model/--model-kwargs``), None when none is given."""
    from ..core.target import TargetSpec

    return TargetSpec(checkpoint="", config=getattr(args, "config", None), arch=getattr(args, "arch", None),
                      model=getattr(args, "model", None), model_kwargs=_model_kwargs(args)).model_spec()


def target_spec(args: argparse.Namespace, *, need_model: bool | None = None):  # -> TargetSpec
    """The TargetSpec of the model arguments (``add_model_args``, ``add_mapping_args``, ``--quantization``)."""
    from ..core.target import TargetSpec

    kwargs = _model_kwargs(args)
    return TargetSpec(
        checkpoint=args.checkpoint,
        config=getattr(args, "config", None),
        arch=getattr(args, "arch", None),
        model=getattr(args, "model", None),
        model_kwargs=kwargs,
        wrapper=getattr(args, "wrapper", None),
        key_mapping=key_mapping(args),
        auto_fix=bool(getattr(args, "auto_fix", False)),
        quantization=getattr(args, "quantization", None) or "auto",
        need_model=need_model,
        revision=getattr(args, "revision", None),
        download=bool(getattr(args, "download", False)),
    )


def key_mapping(args: argparse.Namespace):  # -> KeyMapping | None
    """``--key-mapping`` checked (patterns compile, replacements are valid templates); errors name the option."""
    from ..core.keys import check_key_mapping

    km = parse_json_arg(getattr(args, "key_mapping", None), "--key-mapping")
    if km is None:
        return None
    if not isinstance(km, dict):
        raise ConfigError("--key-mapping: expected a JSON object {regex: replacement}")
    return check_key_mapping(km, label="--key-mapping")


def mapping_json(km: Any) -> str:
    """A key mapping as the JSON text ``--key-mapping`` accepts (also a valid Python dict literal); characters
    ``safe_text`` would escape are JSON escapes, so the text stays pasteable when printed."""
    return json_safe(json.dumps(dict(km), ensure_ascii=False))


def rerun_command(args: argparse.Namespace, km: Any) -> str:
    """The command line the user ran, with ``--key-mapping 'JSON'`` in place of any --auto-fix/--key-mapping."""
    import shlex

    argv = list(getattr(args, "argv", None) or [getattr(args, "command_name", None) or args.command, args.checkpoint])
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--auto-fix", "--json"):
            continue
        if a == "--key-mapping":
            skip = True
            continue
        if a.startswith("--key-mapping="):
            continue
        out.append(a)
    return "ckpt-explorer " + shlex.join([*out, "--key-mapping", mapping_json(km)])


def print_json(obj: Any) -> None:
    """One JSON object on stdout. NaN/Infinity (not JSON) become null; control, bidi and invisible format
    characters in strings are written as \\uXXXX escapes (``json_safe``), so the text is safe on a terminal and
    ``json.loads`` gives the exact names."""
    # no indent: the C encoder is ~10x faster, which matters for 50k-tensor checkpoints (pipe through jq to read)
    try:
        text = json.dumps(obj, default=_default, ensure_ascii=False, allow_nan=False)
    except ValueError:  # rare: a non-finite float somewhere; clean it and encode again
        text = json.dumps(_finite(json.loads(json.dumps(obj, default=_default))), ensure_ascii=False, allow_nan=False)
    sys.stdout.write(json_safe(text))
    sys.stdout.write("\n")


def _finite(o: Any) -> Any:
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_finite(v) for v in o]
    return o


def _default(o: Any) -> Any:
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if hasattr(o, "to_json"):
        return o.to_json()
    return str(o)


class StderrProgress:
    """A throttled one-line progress indicator on stderr; the line is cleared when done (or on close())."""

    def __init__(self, label: str, *, show_bytes: bool = False) -> None:
        self.label, self.show_bytes = label, show_bytes
        self._last, self._width = -1, 0

    def __call__(self, done: int, total: int, name: str = "") -> None:
        if not total:
            return
        pct = int(100 * done / total)
        if pct == self._last:
            return
        self._last = pct
        text = f"{self.label}: {pct:3d}%"
        if self.show_bytes:
            text += f"  {human_bytes(done)} / {human_bytes(total)}"
        if name:
            text += f"  {safe_text(name[:50])}"
        sys.stderr.write("\r")  # a write of its own: the one control character a guarded stream passes
        sys.stderr.write(text.ljust(self._width))
        self._width = len(text)
        if done >= total:
            self.close()
        sys.stderr.flush()

    def close(self) -> None:
        if self._width:
            for part in ("\r", " " * self._width, "\r"):
                sys.stderr.write(part)
            sys.stderr.flush()
            self._width = 0


def stderr_progress(label: str, *, show_bytes: bool = False) -> StderrProgress | None:
    """Progress on stderr when it is a terminal, else None (pipes and CI logs stay clean)."""
    return StderrProgress(label, show_bytes=show_bytes) if sys.stderr.isatty() else None


class Style:
    """ANSI colours only when stdout is a terminal guarded by ``terminal.guarded()`` (and NO_COLOR is unset)."""

    def __init__(self, stream=None) -> None:
        stream = sys.stdout if stream is None else stream  # looked up now: sys.stdout may have been replaced
        # the colour markers mean something only to a SafeStream, which escapes everything else on the line
        self.on = isinstance(stream, SafeStream) and stream.isatty() and not os.environ.get("NO_COLOR")

    def __call__(self, text: str, code: str) -> str:
        return f"{sgr(code)}{text}{sgr('0')}" if self.on else text


def counts_line(c, style, tail: str = "") -> str:  # c: Report.counts(); style: a Style
    """The report's counts line: matched, then missing / unexpected / mismatched coloured when non-zero."""
    return ("  " + style(f"{c['matched']} matched", "32")
            + ", " + style(f"{c['missing']} missing", "31" if c["missing"] else "2")
            + ", " + style(f"{c['unexpected']} unexpected", "33" if c["unexpected"] else "2")
            + ", " + style(f"{c['mismatched']} mismatched", "35" if c["mismatched"] else "2") + tail)


def print_key_sections(s: Style, missing: tuple[str, list[str]], unexpected: tuple[str, list[str]],
                       mismatched: tuple[str, list[tuple[str, Any, Any]]], side: str) -> None:
    """The MISSING / UNEXPECTED / SHAPE MISMATCH sections of a report (``report``, ``adapter``), each a titled
    count and its keys (layer indices collapsed); ``side`` names what the mismatch's first shape comes from."""
    for (title, keys), code in ((missing, "31"), (unexpected, "33")):
        if keys:
            print()
            print(s(f"{title} ({len(keys)}):", code))
            for k in collapse_indices(keys):
                print(f"  {safe_text(k)}")
    title, rows = mismatched
    if rows:
        print()
        print(s(f"{title} ({len(rows)}):", "35"))
        for k, a, b in rows:
            print(f"  {safe_text(k)}: {side} {list(a)} vs model {list(b)}")


_NUM = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)")


def collapse_indices(keys: list[str]) -> list[str]:
    """Group keys that differ only in layer indices: layers.{0..31}.mlp.weight."""
    groups: dict[str, list[list[int]]] = {}
    order: list[str] = []
    for k in keys:
        nums = [int(m.group()) for m in _NUM.finditer(k)]
        tmpl = _NUM.sub("{}", k)
        if tmpl not in groups:
            groups[tmpl] = [[] for _ in nums]
            order.append(tmpl)
        for i, n in enumerate(nums):
            if n not in groups[tmpl][i]:
                groups[tmpl][i].append(n)
    out = []
    for tmpl in order:
        parts = [_fmt_set(s) for s in groups[tmpl]]
        out.append(tmpl.format(*parts) if parts else tmpl)
    return out


def _fmt_set(vals: list[int]) -> str:
    if len(vals) == 1:
        return str(vals[0])
    s = sorted(vals)
    if s == list(range(s[0], s[-1] + 1)):
        return "{%d..%d}" % (s[0], s[-1])
    return "{" + ",".join(map(str, s)) + "}"
