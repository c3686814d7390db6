"""`ckpt-explorer open`: the main window."""
from __future__ import annotations

import argparse
import os

from .common import add_mapping_args, add_model_args, key_mapping, parse_json_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "open",
        help="open the explorer window (default command)",
        description="Open the explorer window on a checkpoint (file or Hugging Face folder): the module tree with "
        "what loads, what is missing, unexpected or mismatched, per-tensor statistics and histograms, an A-vs-B "
        "comparison (--compare), a \"looks untrained\" check, and a plan editor that exports a patched checkpoint. "
        "`ckpt-explorer PATH` is the same as `ckpt-explorer open PATH`; --demo opens a built-in tiny example.",
    )
    p.add_argument("checkpoint", nargs="?", help="checkpoint file or folder, or a PEFT adapter folder (adapter_config.json)")
    add_model_args(p)
    p.add_argument("--base", metavar="B", help="for a PEFT adapter: the base model folder (config.json + weights), shown "
                   "with the adapter's modules badged; default --config (no base weights), else the adapter's "
                   "base_model_name_or_path (local folder or local Hugging Face cache)")
    add_mapping_args(p)
    p.add_argument("--compare", metavar="OTHER", help="a second checkpoint to compare with")
    p.add_argument("--demo", action="store_true", help="open the built-in demo (built offline on first use); takes no checkpoint")
    p.add_argument("--screenshot", metavar="PNG", help="wait until loaded, save a PNG of the window and exit "
                   "(an existing file is replaced only if it is a PNG, never an input)")
    p.add_argument("--no-cache", action="store_true",
                   help="neither read nor write the report cache (a re-opened checkpoint is coloured from "
                   "~/.cache/ckpt-explorer/reports, as `report` answers a repeat)")
    p.add_argument("--force", action="store_true",
                   help="with --screenshot: replace an existing file even if it is not a PNG (never an input)")
    p.set_defaults(run=run)


def check_screenshot(args: argparse.Namespace) -> None:
    """Refuse a --screenshot path before the window starts: an input (the checkpoint, its folder's weights and
    config, --config, --compare, a --key-mapping or --model-kwargs file), something that is not a regular file,
    or — without --force — an existing file that is not a PNG."""
    from ..core.fsio import check_output
    from ..core.outputs import is_png, named_inputs

    inputs = named_inputs(args.checkpoint, args.config, args.compare, args.key_mapping, args.model_kwargs,
                          getattr(args, "base", None))
    check_output(args.screenshot, inputs=inputs, is_ours=is_png, force=args.force, what="screenshot PNG")


def open_request(args: argparse.Namespace):  # -> explorer.gui.request.OpenRequest (Qt-free)
    """The window's typed request from the parsed arguments; bad --key-mapping etc. fail here, as CLI errors."""
    from ..core.errors import ConfigError, ExplorerError
    from ..gui.request import OpenRequest, Source

    if args.demo and args.checkpoint:
        raise ExplorerError("--demo opens the built-in demo; do not also give a checkpoint")
    if args.screenshot:
        check_screenshot(args)
    elif args.force:
        raise ExplorerError("--force only applies to --screenshot")
    km = key_mapping(args)
    kwargs = parse_json_arg(getattr(args, "model_kwargs", None), "--model-kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ConfigError("--model-kwargs: expected a JSON object")
    source = None
    from ..core.adapter import is_adapter

    if args.checkpoint and is_adapter(args.checkpoint):
        for opt in ("model", "wrapper", "key_mapping", "auto_fix", "compare"):
            if getattr(args, opt, None):
                raise ConfigError(f"{args.checkpoint}: --{opt.replace('_', '-')} does not apply to an adapter "
                                  "(use --base / --config / --arch)")
        adapter = os.path.abspath(args.checkpoint)
        if os.path.basename(adapter) != "" and not os.path.isdir(adapter):
            adapter = os.path.dirname(adapter)  # adapter_config.json itself
        source = Source(checkpoint=os.path.abspath(args.base) if args.base else None,
                        config=args.config, arch=args.arch, adapter=adapter, use_cache=not args.no_cache)
    elif args.base:
        raise ConfigError("--base applies to a PEFT adapter folder (one with adapter_config.json)")
    elif args.demo or args.checkpoint:
        source = Source(checkpoint=None if args.demo else args.checkpoint, config=args.config, arch=args.arch,
                        model=args.model, model_kwargs=dict(kwargs), wrapper=args.wrapper, key_mapping=km,
                        auto_fix=bool(args.auto_fix), demo=bool(args.demo), use_cache=not args.no_cache)
    return OpenRequest(source=source, compare=os.path.abspath(args.compare) if args.compare else None,
                       screenshot=args.screenshot, force=bool(args.force))


def run(args: argparse.Namespace) -> int:
    request = open_request(args)
    from ..gui.app import main as gui_main  # Qt is imported only here

    return gui_main(request)
