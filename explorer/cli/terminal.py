"""Everything a command writes to the terminal passes through one guard.

Names, config values, paths and error messages come from files a stranger may have written: an OSC/CSI escape in
a tensor name could retitle or clear the terminal or write the clipboard (OSC 52), a newline could forge a
``MISSING (0)`` line, U+202E could reorder what a reader sees. While ``guarded()`` is active (around every command,
see ``explorer.cli.main``) sys.stdout and sys.stderr are ``SafeStream``s that write every such character escaped
(``explorer.core.fmt.safe_text``: ``\\x1b``, ``\\x0a``, ``\\u202e``). Raw control characters reach the terminal
only as

- print()'s line end: print() writes it apart from its arguments, as a write of exactly "\\n". A chunk that ends
  in "\\n" itself (a line from logging, warnings or a traceback) ends its line too, unless print()'s own "\\n"
  follows at once: then that newline was part of the printed value and is shown as ``\\x0a``;
- a write of exactly "\\r" (the progress line);
- the colours ``Style`` asks for (``sgr``): markers holding a per-process secret that no file can contain.

So a command prints one line per print() call, with the values in one f-string: a "\\n" inside it is shown as
``\\x0a``, never as a line break.
"""
from __future__ import annotations

import contextlib
import re
import secrets
import sys
import threading
import traceback
import warnings
from typing import Any, Iterator

from ..core.fmt import needs_escape, safe_lines, safe_text

_SECRET = secrets.token_hex(8)
_MARK = re.compile("\x00" + _SECRET + r"\[([0-9;]{1,16})m")


def sgr(code: str) -> str:
    """The marker a SafeStream writes as the terminal colour sequence ``ESC [ code m``."""
    return f"\x00{_SECRET}[{code}m"


class _Shared:
    """State both streams share: the stream holding back a chunk's final newline (see the module docstring)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pending: SafeStream | None = None

    def release(self) -> None:
        """Write the held-back newline as a line end."""
        p, self.pending = self.pending, None
        if p is not None:
            p.raw.write("\n")


class SafeStream:
    """A text stream that writes control, bidi and invisible format characters escaped; everything else (encoding,
    isatty, fileno, ...) is the wrapped stream's."""

    def __init__(self, raw: Any, shared: _Shared | None = None) -> None:
        self.raw = raw
        self._shared = shared or _Shared()

    def write(self, s: str) -> int:
        sh = self._shared
        with sh.lock:
            if sh.pending is not None:
                if sh.pending is self and s == "\n":  # print()'s end right after a value that ended in a newline
                    sh.pending = None
                    self.raw.write("\\x0a\n")
                    return len(s)
                sh.release()
            if s == "\n" or s == "\r":
                self.raw.write(s)
                return len(s)
            body = s
            if s.endswith("\n"):
                body = s[:-1]
                sh.pending = self
            if needs_escape(body):
                body = _render(body)
            try:
                self.raw.write(body)
            except UnicodeEncodeError:  # a name in a script the terminal's encoding lacks: \uXXXX, not a crash
                enc = getattr(self.raw, "encoding", None) or "ascii"
                self.raw.write(body.encode(enc, "backslashreplace").decode(enc))
        return len(s)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def write_lines(self, text: str) -> None:
        """Multi-line text from elsewhere (a traceback): each line escaped, the line breaks kept."""
        for line in text.rstrip("\n").split("\n"):
            self.write(line)
            self.write("\n")

    def flush(self) -> None:
        with self._shared.lock:
            self._shared.release()
            self.raw.flush()

    def isatty(self) -> bool:
        f = getattr(self.raw, "isatty", None)
        return bool(f is not None and f())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


def _render(s: str) -> str:
    out, pos = [], 0
    for m in _MARK.finditer(s):
        out.append(safe_text(s[pos:m.start()]))
        out.append(f"\x1b[{m.group(1)}m")
        pos = m.end()
    out.append(safe_text(s[pos:]))
    return "".join(out)


def _write_text(stream: Any, text: str) -> None:
    if isinstance(stream, SafeStream):
        stream.write_lines(text)
    elif stream is not None:
        stream.write(safe_lines(text.rstrip("\n")) + "\n")


def _formatwarning(message: Any, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
    # one line (no source line): a newline in the message is the message's, shown escaped
    return f"{filename}:{lineno}: {category.__name__}: {message}\n"


def excepthook(etype: type[BaseException], value: BaseException, tb: Any) -> None:
    """sys.excepthook that prints the traceback one escaped line at a time (``guarded`` installs it for its
    duration; install it yourself for a traceback the interpreter prints after ``guarded`` ended)."""
    _write_text(sys.stderr, "".join(traceback.format_exception(etype, value, tb)))


def _guarded_excepthook(etype: type[BaseException], value: BaseException, tb: Any) -> None:
    excepthook(etype, value, tb)


def _thread_excepthook(args: Any) -> None:
    if args.exc_type is SystemExit:
        return
    name = getattr(args.thread, "name", None) or "?"
    _write_text(sys.stderr, f"Exception in thread {name}:\n"
                + "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)))


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """sys.stdout/sys.stderr as SafeStreams (and warnings and tracebacks one escaped line each) for the duration."""
    out, err = sys.stdout, sys.stderr
    if isinstance(out, SafeStream) or isinstance(err, SafeStream):  # already guarded (a nested call)
        yield
        return
    shared = _Shared()
    saved = (warnings.formatwarning, sys.excepthook, threading.excepthook)
    if out is not None:
        sys.stdout = SafeStream(out, shared)  # type: ignore[assignment]
    if err is not None:
        sys.stderr = SafeStream(err, shared)  # type: ignore[assignment]
    warnings.formatwarning = _formatwarning  # type: ignore[assignment]
    sys.excepthook = _guarded_excepthook
    threading.excepthook = _thread_excepthook
    try:
        yield
    finally:
        with shared.lock:
            try:
                shared.release()
            except (OSError, ValueError):  # a closed pipe (`| head`) or stream: nothing left to end
                pass
        sys.stdout, sys.stderr = out, err
        warnings.formatwarning, threading.excepthook = saved[0], saved[2]
        if sys.excepthook is _guarded_excepthook:  # not replaced meanwhile (CKPT_EXPLORER_DEBUG installs excepthook)
            sys.excepthook = saved[1]
