"""Key names: prefix-safe tests, key mappings, globs, layer groups, and user patterns with bounded time.

Every key test is prefix-safe: ``layers.1`` selects ``layers.1.x`` and never ``layers.10.x``. Natural order is
transformers' own ``dot_natural_key`` (matching must sort exactly as from_pretrained does).

User patterns (plan rules, the window's filter and key mappings) run with bounded time:

A pattern a user types or a file supplies can be catastrophic: nested repeats such as ``^([a-z_.]+)+\\d$``
backtrack exponentially on a plain key. Every such pattern is matched here with a time budget and a
too-slow one ends in a one-line error naming the option or rule, never in a hang.

- Our own matching (plan rules, the window's filter) runs on the ``regex`` package (``re``-compatible
  syntax) with its ``timeout=``, against one budget for the whole pass (:class:`UserPattern`).
- Key mappings are applied by transformers' loading code, which uses Python's ``re``. ``re`` cannot be
  stopped from a worker thread, and ``regex`` does not predict its speed (``regex`` answers
  ``^([a-z_.]+)+\\d$`` in microseconds where ``re`` needs hours). So before a key mapping is handed on,
  :func:`check_key_mapping_speed` runs it with ``re`` itself over the checkpoint's keys, in a child process
  that is killed past :data:`KEY_MAPPING_BUDGET`. Patterns without repeats, groups or alternation
  (``^module\\.``: every suggested mapping) cannot backtrack and skip the child.
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter, OrderedDict
from typing import Any, Iterable, Mapping, Sequence

from .errors import ConfigError, ExplorerError, PatternTooSlow, PlanError, one_line
from .fmt import pattern_text

# budgets are CPU seconds of this process (``time.process_time``, the clock ``regex``'s timeout counts), except
# the child's, which is wall-clock time
REGEX_BUDGET = 2.0  #: one user pattern (a plan rule) over all keys in one pass
FILTER_BUDGET = 0.5  #: the window's filter, on the GUI thread (per pass over the tree or the table; a 46k-tensor
#: MoE takes ~0.2 s)
KEY_MAPPING_BUDGET = 3.0  #: the child process running a key mapping over every key
MAX_PATTERN_CHARS = 10_000  #: longer patterns are refused (keys are a few hundred characters)
MAX_KEY_MAPPING_ENTRIES = 256  #: entries of one key mapping (real ones have a handful)
MAX_MAPPED_KEY_CHARS = 4096  #: a key mapping may not grow a key past this (``{"": "xx"}`` chained)

_HINT = "nested repeats such as (a+)+ backtrack exponentially; simplify the pattern"


# --------------------------------------------------------------------------------------------- prefixes


def under(key: str, prefix: str) -> bool:
    """``key`` is ``prefix`` itself or lies inside the module ``prefix`` (dot boundary: never ``layers.10`` for
    ``layers.1``). An empty prefix holds every key."""
    return not prefix or key == prefix or key.startswith(prefix + ".")


def prefix_counts(keys: Iterable[str], depth: int = 3) -> Counter[str]:
    """How many keys lie under each leading module path of up to ``depth`` components (the leaf name excluded)."""
    c: Counter[str] = Counter()
    for k in keys:
        parts = k.split(".")
        for d in range(1, min(depth, len(parts) - 1) + 1):
            c[".".join(parts[:d])] += 1
    return c


def leading_prefixes(keys: Iterable[str], depth: int = 2) -> list[str]:
    """Leading module paths (with their trailing dot) shared by at least half of ``keys``."""
    keys = list(keys)
    return [p + "." for p, c in prefix_counts(keys, depth).items() if c * 2 >= len(keys)]


# --------------------------------------------------------------------------------------------- timed matching


class UserPattern:
    """A user's regular expression, compiled with ``regex`` and matched under a time budget.

    ``label`` names it in errors (``regex rule``, ``filter``). A bad pattern raises ``error`` (message ``invalid``
    and the reason; default ``label: invalid regex``), a slow one ``slow_error`` (default :class:`PatternTooSlow`)."""

    __slots__ = ("source", "label", "slow_error", "_rx")

    def __init__(self, source: str, *, label: str, flags: int = 0, error: type[ExplorerError] = ExplorerError,
                 slow_error: type[ExplorerError] = PatternTooSlow, invalid: str | None = None) -> None:
        import regex

        self.source, self.label, self.slow_error = source, label, slow_error
        if not isinstance(source, str) or not source:
            raise error(f"{label}: pattern must be a non-empty string, found {source!r}")
        if len(source) > MAX_PATTERN_CHARS:
            raise error(f"{label}: pattern is {len(source):,} characters, over the {MAX_PATTERN_CHARS:,} limit")
        try:
            self._rx = regex.compile(source, flags | regex.VERSION0)
        except (regex.error, ValueError, OverflowError) as e:
            raise error(f"{invalid or label + ': invalid regex'}: {one_line(e)}") from None

    def search(self, text: str, *, deadline: float | None = None) -> bool:
        """Whether the pattern occurs in ``text``; ``deadline`` (``time.process_time()``) defaults to one
        :data:`REGEX_BUDGET` from now. Raises ``error`` when the deadline passes."""
        if deadline is None:
            deadline = time.process_time() + REGEX_BUDGET
        left = deadline - time.process_time()
        try:
            if left <= 0:
                raise TimeoutError
            return self._rx.search(text, timeout=left) is not None
        except TimeoutError:
            raise self.slow_error(self._slow_message(f"over its time budget on {_short(text)}")) from None

    def hits(self, texts: Iterable[str], *, budget: float | None = None) -> list[bool]:
        """``search`` over every text, all within one ``budget``. The clock is read every 32 texts (reading it costs
        about as much as a typical match) and no single text may take more than 1/64 of the budget, so a pass
        ends within about 1.5 budgets."""
        budget = REGEX_BUDGET if budget is None else budget
        deadline = time.process_time() + budget
        per_text = budget / 64
        search, clock = self._rx.search, time.process_time
        out: list[bool] = []
        append = out.append
        text, left = "", budget
        try:
            for i, text in enumerate(texts):
                if not i & 31:
                    left = deadline - clock()
                    if left <= 0:
                        raise TimeoutError
                append(search(text, timeout=min(left, per_text)) is not None)
        except TimeoutError:
            if left > per_text:  # one text alone took too long
                raise self.slow_error(self._slow_message(f"over {per_text * 1000:.0f} ms on {_short(text)}")) from None
            raise self.slow_error(self._slow_message(f"over {budget:g} s for {len(out):,} of the keys")) from None
        return out

    def select(self, keys: Iterable[str], *, budget: float | None = None) -> list[str]:
        """The keys the pattern occurs in, all within one ``budget``."""
        keys = list(keys)
        return [k for k, hit in zip(keys, self.hits(keys, budget=budget)) if hit]

    def _slow_message(self, what: str) -> str:
        return f"{self.label}: pattern {pattern_text(self.source)} is too slow ({what}); {_HINT}"


def _short(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[: n - 1] + "…")


# --------------------------------------------------------------------------------------------- key mappings


class KeyMapping(dict):
    """A checked ``{regex: replacement}`` (insertion order is the order they apply in). ``label`` names where
    it came from (``--key-mapping``, ``plan.json: key_mapping``) in later errors."""

    label: str = "key mapping"

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = (), *, label: str = "key mapping") -> None:
        super().__init__(items)
        self.label = label


def check_key_mapping(obj: Any, *, label: str | None = None, error: type[ExplorerError] = ConfigError) -> KeyMapping:
    """Validate a key mapping's form and return it as a :class:`KeyMapping` (one already checked is returned as it
    is unless ``label`` renames it).

    Patterns must compile with ``re`` (the engine transformers applies them with) and each replacement must be
    a valid template for its pattern (``\\9`` without nine groups, a bad escape), so a mistake is one line naming
    ``label`` and the entry, not an error from deep inside a regex engine. Raises ``error``."""
    if isinstance(obj, KeyMapping) and (label is None or obj.label == label):
        return obj
    label = label or "key mapping"
    if not isinstance(obj, Mapping):
        raise error(f"{label}: expected a JSON object {{regex: replacement}}, found {type(obj).__name__}")
    if len(obj) > MAX_KEY_MAPPING_ENTRIES:
        raise error(f"{label}: {len(obj):,} entries, over the {MAX_KEY_MAPPING_ENTRIES} limit")
    for pat, repl in obj.items():
        if not isinstance(pat, str) or not isinstance(repl, str):
            raise error(f"{label}: {pattern_text(pat)}: pattern and replacement must be strings, found {repl!r}")
        if len(pat) > MAX_PATTERN_CHARS or len(repl) > MAX_PATTERN_CHARS:
            raise error(f"{label}: entry {_short(pat)} is longer than {MAX_PATTERN_CHARS:,} characters")
        try:
            rx = re.compile(pat)
        except (re.error, OverflowError, RecursionError) as e:
            raise error(f"{label}: invalid regex {pattern_text(pat)}: {one_line(e)}") from None
        try:
            rx.sub(repl, "")  # re parses the whole template up front, even when nothing matches
        except (re.error, IndexError) as e:
            raise error(f"{label}: invalid replacement {pattern_text(repl)} for {pattern_text(pat)}: {one_line(e)}") from None
    return KeyMapping(obj, label=label)


def apply_key_mapping(name: str, key_mapping: Mapping[str, str] | None) -> str:
    """Apply ``{regex: replacement}`` in order with ``re.sub`` (each may chain). Run
    :func:`check_key_mapping_speed` on the keys first: this is plain ``re``."""
    if key_mapping:
        for pat, rep in key_mapping.items():
            name = re.sub(pat, rep, name)
        if len(name) > MAX_MAPPED_KEY_CHARS:
            label = getattr(key_mapping, "label", "key mapping")
            raise ConfigError(f"{label}: turns a key into {len(name):,} characters, over the {MAX_MAPPED_KEY_CHARS:,} limit")
    return name


def strip_prefix_mapping(prefix: str, replacement: str = "") -> dict[str, str]:
    """The key mapping that replaces a leading module path (``"module"``) with ``replacement`` (``""`` strips it)."""
    return {("^" + re.escape(prefix) + r"\." if prefix else "^"): (replacement + "." if replacement else "")}


_LINEAR = re.compile(r"[*+?{|(]")


def cannot_backtrack(pattern: str) -> bool:
    """True for a pattern with no repeat, group or alternation (escaped characters aside): matching it is
    linear in the key's length, so it needs no time check. Conservative: ``[*]`` counts as a repeat."""
    return _LINEAR.search(re.sub(r"\\.", "", pattern, flags=re.DOTALL)) is None


_CHILD = r"""
import json, re, sys
try:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
except Exception:
    pass
d = json.loads(sys.stdin.buffer.read())
out, limit = sys.stdout, d["limit"]
for stage in ("sub", "search"):
    texts = d["keys"]
    for i, (p, r) in enumerate(d[stage]):
        out.write("%s %d\n" % (stage, i)); out.flush()
        rx = re.compile(p)
        if stage == "sub":
            texts = [rx.sub(r, t) for t in texts]
        else:
            new = []
            for t in texts:
                m = rx.search(t)
                new.append(t if m is None else t[:m.start()] + r + t[m.end():])
            texts = new
        if any(len(t) > limit for t in texts):
            out.write("long %d\n" % i); out.flush()
            sys.exit(0)
for i, (p, method) in enumerate(d["each"]):
    out.write("each %d\n" % i); out.flush()
    f = getattr(re.compile(p), method)
    for t in d["keys"]:
        f(t)
out.write("ok\n")
"""

_SPEED_OK: OrderedDict[tuple[Any, ...], None] = OrderedDict()  # pattern sets already run over these names
_SPEED_LOCK = threading.Lock()  # the window's workers check mappings concurrently


def check_key_mapping_speed(
    key_mapping: Mapping[str, str] | None,
    names: Iterable[str],
    *,
    forms: Sequence[str | None] | None = None,
    budget: float | None = None,
) -> None:
    """Refuse a key mapping that ``re`` cannot apply to ``names`` within ``budget`` seconds.

    Runs, in a child Python (``-I -S``: nothing but the standard library), ``re.sub`` of each entry in order over
    every name (as :func:`apply_key_mapping`), then ``re.search`` of ``forms`` (the patterns as transformers
    compiled them, one per entry) chained the same way. The child is killed at the deadline and the error names
    the entry it was on. Mappings whose patterns :func:`cannot_backtrack` are not run; a passing check is
    remembered for the same mapping and names. ``budget`` defaults to :data:`KEY_MAPPING_BUDGET`. Raises
    :class:`PatternTooSlow` (or ConfigError for a key grown past :data:`MAX_MAPPED_KEY_CHARS`)."""
    if not key_mapping:
        return
    km = key_mapping if isinstance(key_mapping, KeyMapping) else check_key_mapping(key_mapping)
    items = list(km.items())
    form_items = [(f or p, r) for (p, r), f in zip(items, forms)] if forms else []
    if all(cannot_backtrack(p) for p, _ in items + form_items):
        return
    _run_child({"sub": items, "search": form_items, "each": []}, [p for p, _ in items], names,
               label=km.label, budget=budget)


def check_patterns_speed(
    patterns: Sequence[tuple[str, str, str]], names: Iterable[str], *, label: str, budget: float | None = None
) -> None:
    """Refuse patterns a library will run with ``re`` over ``names`` when they cannot finish within ``budget``.

    Each pattern is ``(shown, source, method)``: ``source`` as the library compiles it, ``method`` ``"search"``,
    ``"match"`` or ``"fullmatch"`` as it calls it on every name, ``shown`` what the user wrote (named in the error).
    Run as :func:`check_key_mapping_speed` runs a mapping (child process, deadline, memo). A pattern whose ``shown``
    part :func:`cannot_backtrack` is not run (a library's fixed wrapper around it, such as peft's
    ``(.*\\.)?(NAME)$``, is at worst quadratic in a name's length). Raises :class:`PatternTooSlow`."""
    patterns = [p for p in patterns if not cannot_backtrack(p[0])]
    if patterns:
        _run_child({"sub": [], "search": [], "each": [(src, method) for _, src, method in patterns]},
                   [shown for shown, _, _ in patterns], names, label=label, budget=budget)


def _run_child(job: dict[str, Any], shown: Sequence[str], names: Iterable[str], *, label: str,
               budget: float | None) -> None:
    """Run ``job`` (see ``_CHILD``) over ``names`` in a child Python killed after ``budget`` seconds; ``shown[i]``
    names entry ``i`` of whichever stage the child was on."""
    budget = KEY_MAPPING_BUDGET if budget is None else budget
    names = list(names)
    digest = hashlib.blake2b("\n".join(names).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    memo = (json.dumps(job), digest, len(names))
    with _SPEED_LOCK:
        if memo in _SPEED_OK:
            _SPEED_OK.move_to_end(memo)
            return
    payload = json.dumps({"keys": names, "limit": MAX_MAPPED_KEY_CHARS, **job}).encode()
    try:
        done = subprocess.run([sys.executable, "-I", "-S", "-c", _CHILD], input=payload, capture_output=True,
                              timeout=budget, check=False)
    except subprocess.TimeoutExpired as e:
        raise PatternTooSlow(
            f"{label}: pattern {pattern_text(shown[_last_entry(e.stdout)])} is too slow: applying it to the checkpoint's "
            f"{len(names):,} keys did not finish in {budget:g} s; {_HINT}"
        ) from None
    except OSError as e:
        raise ConfigError(f"{label}: cannot check how fast its patterns run ({e.strerror or e})") from None
    lines = done.stdout.decode(errors="replace").splitlines()
    last = lines[-1] if lines else ""
    if last.startswith("long "):
        raise ConfigError(f"{label}: entry {shown[_last_entry(done.stdout)]!r} grows keys past "
                          f"{MAX_MAPPED_KEY_CHARS:,} characters")
    if done.returncode != 0 or last != "ok":
        why = done.stderr.decode(errors="replace").strip().splitlines()
        raise ConfigError(f"{label}: pattern {shown[_last_entry(done.stdout)]!r} could not be applied to the "
                          f"checkpoint's keys: {why[-1] if why else f'exit {done.returncode}'}")
    with _SPEED_LOCK:
        _SPEED_OK[memo] = None
        while len(_SPEED_OK) > 64:
            _SPEED_OK.popitem(last=False)


def _last_entry(out: bytes | None) -> int:
    """The entry the child was on (its last "sub I" / "search I" / "each I" / "long I" line); 0 if none."""
    for line in reversed((out or b"").decode(errors="replace").splitlines()):
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            return int(parts[1])
    return 0


# --------------------------------------------------------------------------------------------- globs


def translate_glob(glob: str, *, any_char: str = ".") -> str:
    """The unanchored regex body of a glob: ``*`` -> ``{any_char}*``, ``?`` -> ``any_char``, ``[0-5]``/``[!0-5]``
    classes, everything else literal. ``any_char="[^\\n]"`` keeps matches within one line. Raises PlanError."""
    if not glob:
        raise PlanError("empty glob")
    out = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if c == "*":
            while i + 1 < n and glob[i + 1] == "*":
                i += 1
            out.append(any_char + "*")
        elif c == "?":
            out.append(any_char)
        elif c == "[":
            j = glob.find("]", i + 2 if i + 1 < n and glob[i + 1] in "!^" else i + 1)
            if j < 0:
                raise PlanError(f"bad glob {glob!r}: unclosed '[' at position {i}")
            body = glob[i + 1 : j]
            neg = body[:1] in ("!", "^")
            body = body[1:] if neg else body
            if not body:
                raise PlanError(f"bad glob {glob!r}: empty character class at position {i}")
            body = body.replace("\\", "\\\\")
            out.append("[" + ("^" if neg else "") + body + "]")
            i = j
        elif c == "]":
            raise PlanError(f"bad glob {glob!r}: unmatched ']' at position {i}")
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def glob_to_regex(glob: str) -> str:
    """Glob -> regex matching a whole run of dot-separated components (``*`` crosses dots)."""
    return r"(?:^|\.)" + translate_glob(glob) + r"(?:\.|$)"


# --------------------------------------------------------------------------------------------- groups

_INDEX = re.compile(r"^\d+$")


def layer_of(key: str, *, depth: int | None = None) -> str:
    """The module group of a key: its first ``depth`` components, or by default the path up to the first
    numeric component (``encoder.layer.3``), else the parent module (``embeddings``)."""
    parts = key.split(".")
    if depth is not None:
        return ".".join(parts[: min(depth, max(len(parts) - 1, 1))])
    for i, p in enumerate(parts[:-1]):
        if _INDEX.match(p):
            return ".".join(parts[: i + 1])
    return ".".join(parts[:-1]) if len(parts) > 1 else parts[0]
