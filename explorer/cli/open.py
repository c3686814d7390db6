"""`ckpt-explorer open`: the main window."""
from __future__ import annotations

import argparse

from .common import add_mapping_args, add_model_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("open", help="open the explorer window (default command)")
    p.add_argument("checkpoint", nargs="?", help="checkpoint file or folder")
    add_model_args(p)
    add_mapping_args(p)
    p.add_argument("--compare", metavar="OTHER", help="a second checkpoint to compare with")
    p.add_argument("--demo", action="store_true", help="open the built-in demo (built offline on first use)")
    p.add_argument("--screenshot", metavar="PNG", help="wait until loaded, save a PNG of the window and exit")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..gui.app import main as gui_main  # Qt is imported only here

    return gui_main(args)
