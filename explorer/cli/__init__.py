"""`ckpt-explorer`: a thin argparse front-end over explorer.core. Imports no Qt.

Exit codes: 0 clean, 1 findings (missing/unexpected/mismatched, init-like tensors, differences), 2 error.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Callable, Sequence

from ..core.errors import ExplorerError
from ..core.fmt import safe_text
from .terminal import excepthook, guarded

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2

# name -> module under explorer.cli that defines add_parser(subparsers) and run(args) -> int
_COMMANDS = ("report", "open", "stats", "init_check", "diff", "plan", "export")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line (no usage block), exit 2 as argparse does
        # the message may quote what was typed (a path with a control character in it): shown escaped
        self.exit(EXIT_ERROR, f"ckpt-explorer: error: {safe_text(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    p = _Parser(
        prog="ckpt-explorer",
        description="See what a checkpoint will load into a model before you train: header-only, exactly as "
        "from_pretrained / load_state_dict would do it.",
    )
    from ..core.version import __version__

    p.add_argument("--version", action="version", version=f"ckpt-explorer {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMANDS:
        try:
            mod = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue  # command not built yet
            raise
        mod.add_parser(sub)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so it unwinds like Ctrl-C: staging folders and temp files go."""


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM during clean-up ends the process at once
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit 0 / 1 / 2. Outside the window, SIGTERM is handled like Ctrl-C (clean up, exit 143).

    Called as the program (no ``argv``: the console script, ``python -m explorer``), a command other than
    ``open`` ends the process once its output is flushed and the atexit handlers have run (:func:`_leave`)."""
    if argv is None:
        huge_pages_for_torch()
    ran: list[str] = []
    code = _main(argv, ran, program=argv is None)
    if argv is None and ran and ran[0] != "open":
        _leave(code)
    return code


def huge_pages_for_torch() -> None:
    """Let torch back its tensors of 2 MB and more with transparent huge pages (PyTorch's own
    ``THP_MEM_ALLOC_ENABLE``: 2 MB-aligned, ``madvise(MADV_HUGEPAGE)``; read before torch's first big tensor, so
    set before torch is imported), unless the user's environment says otherwise. A whole-checkpoint pass makes
    tensors as big as a weight again and again, and on a virtual machine each fresh 4 KB page is a fault the host
    serves too: a LoRA merge of a 2 GB Llama spent 8-9 s of its 11 s in the kernel here, 4-5 s with huge pages
    (``benchmarks/results/passes.md``). The values written do not change. No-op where the kernel has no THP or
    has them off (``never``)."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def _leave(code: int) -> None:
    """End the process now, skipping the interpreter's teardown: it frees every object one by one (the meta model
    of a 47k-tensor MoE, its report, torch's and transformers' modules), 1-2.7 s on this machine after the last byte
    is written. Everything a normal exit does for the user still happens first: stdout and stderr are flushed and
    the atexit handlers run (temp files, logging, weakref finalizers). Not while another non-daemon thread is
    still running (a normal exit waits for it)."""
    if any(t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return
    import atexit

    def flush() -> None:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()

    try:
        flush()
        atexit._run_exitfuncs()
        flush()  # whatever the handlers wrote
    except BrokenPipeError:  # a reader that went away, as a normal exit would ignore
        pass
    except Exception:  # noqa: BLE001 - anything odd: leave the usual way
        return
    os._exit(code)


def _main(argv: Sequence[str] | None, ran: list[str], *, program: bool = False) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # `ckpt-explorer` alone and `ckpt-explorer PATH` open the window
    known = {name.replace("_", "-") for name in _COMMANDS}
    if argv and argv[0] not in known and not argv[0].startswith("-") and not os.path.exists(argv[0]) \
            and not argv[0].startswith(("hf://", "https://", "http://")):
        # a mistyped command must not open a window on a path that does not exist (hf:// and URLs are sources)
        print(f"ckpt-explorer: error: {safe_text(argv[0])}: neither a command ({', '.join(sorted(known))}) nor an existing "
              "checkpoint path (a Hub repo: ckpt-explorer open org/name, or hf://org/name)", file=sys.stderr)
        return EXIT_ERROR
    if not argv or (argv[0] not in known and argv[0] not in ("-h", "--help", "--version")):
        argv = ["open", *argv]
    args = parser.parse_args(argv)
    args.argv = argv  # for "re-run with ..." hints
    args.program = program and args.command != "open"  # the process ends after the command (_leave)
    ran.append(args.command)
    run: Callable[[argparse.Namespace], int] = args.run
    previous = None  # the window quits on SIGTERM as before; a handler would wait for Qt's loop to run Python
    if args.command != "open" and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    with guarded():  # from here on every character written to stdout/stderr is escaped as needed (terminal.py)
        try:
            return run(args)
        except ExplorerError as e:
            print(f"ckpt-explorer: error: {e}", file=sys.stderr)
            return EXIT_ERROR
        except Terminated:
            print("ckpt-explorer: terminated", file=sys.stderr)
            return 143
        except KeyboardInterrupt:
            print("ckpt-explorer: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            return EXIT_OK
        except Exception as e:  # never a traceback for a user; CKPT_EXPLORER_DEBUG=1 shows it
            if os.environ.get("CKPT_EXPLORER_DEBUG"):
                sys.excepthook = excepthook  # the interpreter prints it after main(): escaped, line by line
                raise
            msg = str(e).strip().splitlines()
            print(f"ckpt-explorer: error: {type(e).__name__}: {msg[0] if msg else ''} "
                  "(unexpected; CKPT_EXPLORER_DEBUG=1 shows the traceback)", file=sys.stderr)
            return EXIT_ERROR
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
