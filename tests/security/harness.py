"""Run the real CLI on hostile inputs as a child process and check the bad-input contract.

Every run is a subprocess (``python -m explorer ...``) under a memory cap (RLIMIT_AS) and a wall-clock timeout,
so a hang or a memory blow-up fails the test instead of the machine. Runs of one module are started together
(one worker per core) and the tests then assert on the recorded results, so the suite stays fast.
"""
from __future__ import annotations

import hashlib
import os
import re
import resource
import signal
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from tests.security.builders import SECRET

MEMORY_LIMIT = 4 << 30  # address space of one child: tiny models need ~1 GB; a 2 GB string must not fit twice
TIMEOUT_S = float(os.environ.get("SEC_TIMEOUT", 120))  # per run; the heaviest legitimate one (the window on a 1 MB tensor name) takes ~12 s of CPU; a green suite never waits for it
ROOT = Path(__file__).resolve().parents[2]

TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s+File \".*\", line \d+", re.M)
# C0/C1 controls other than newline and tab, and the bidi overrides/isolates, must never reach a terminal raw
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _limit() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", NO_COLOR="1", EXPLORER_TEST_SECRET=SECRET)
    env.pop("CKPT_EXPLORER_DEBUG", None)
    env.update(extra)
    return env


@dataclass
class Run:
    argv: list[str]
    cwd: Path
    returncode: int | None = None  # None: killed at the timeout
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0

    def describe(self) -> str:
        return (f"ckpt-explorer {' '.join(self.argv)}\n  rc={self.returncode} in {self.seconds:.1f}s\n"
                f"  stderr: {self.stderr[-2000:]!r}\n  stdout: {self.stdout[-1000:]!r}")


def run_cli(argv: Sequence[str], *, cwd: Path, timeout: float = TIMEOUT_S, stdin: bytes | None = None,
            env: dict[str, str] | None = None) -> Run:
    """``python -m explorer ARGV`` in ``cwd`` under the memory cap; killed (with its process group) at ``timeout``."""
    cwd.mkdir(parents=True, exist_ok=True)
    r = Run(list(map(str, argv)), cwd)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "explorer", *r.argv], cwd=cwd, env=env or child_env(),
                            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_limit,
                            start_new_session=True)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
        r.returncode = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        r.returncode = None
    r.seconds = time.monotonic() - t0
    r.stdout, r.stderr = out.decode("utf-8", "backslashreplace"), err.decode("utf-8", "backslashreplace")
    return r


def run_all(jobs: dict[object, tuple[Sequence[str], Path]], *, timeout: float = TIMEOUT_S) -> dict[object, Run]:
    """Run every job (key -> (argv, cwd)) with one worker per core; returns key -> Run."""
    workers = max(2, min(4, os.cpu_count() or 2))
    with ThreadPoolExecutor(workers) as ex:
        futs = {k: ex.submit(run_cli, argv, cwd=cwd, timeout=timeout) for k, (argv, cwd) in jobs.items()}
        return {k: f.result() for k, f in futs.items()}


# --------------------------------------------------------------------------------------------- the tree


def snapshot(root: Path, *, skip: Iterable[Path] = ()) -> dict[str, tuple]:
    """Every entry under ``root`` (not following links): kind, mode and, for regular files, sha256."""
    skip = {Path(s) for s in skip}
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        dirnames[:] = [n for n in dirnames if d / n not in skip]
        for n in dirnames + filenames:
            p = d / n
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if stat.S_ISREG(st.st_mode):
                out[rel] = ("file", stat.S_IMODE(st.st_mode), sha256(p))
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            else:
                out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode))
    return out


def sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    keys = sorted(set(before) | set(after))
    return [f"{k}: {before.get(k)} -> {after.get(k)}" for k in keys if before.get(k) != after.get(k)]


# --------------------------------------------------------------------------------------------- the contract


def error_lines(r: Run) -> list[str]:
    """stderr lines, minus the screenshot's own "screenshot: PATH" line (the window's picture of the error)."""
    return [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("screenshot: ")]


def assert_refused(r: Run, *, names: str | Sequence[str], says: str) -> str:
    """Exit 2, exactly one stderr line naming ``names`` (any of) that matches the regex ``says``, no traceback,
    not an 'unexpected' error, not killed at the timeout. Returns the line."""
    assert r.returncode is not None, f"timed out (hang or unbounded work):\n{r.describe()}"
    assert r.returncode == 2, r.describe()
    assert not TRACEBACK.search(r.stderr) and not TRACEBACK.search(r.stdout), r.describe()
    lines = error_lines(r)
    assert len(lines) == 1, f"expected one line on stderr:\n{r.describe()}"
    line = lines[0]
    assert "(unexpected;" not in line, f"an unexpected exception is not an answer to bad input:\n{r.describe()}"
    assert "MemoryError" not in line and "RecursionError" not in line, r.describe()
    names = [names] if isinstance(names, str) else list(names)
    assert any(n in line for n in names), f"the line names none of {names}:\n{r.describe()}"
    assert re.search(says, line, re.I), f"the line does not say /{says}/:\n{r.describe()}"
    assert not RAW_CONTROL.search(line), f"raw control characters in the error line:\n{r.describe()}"
    return line


def assert_ran_clean(r: Run, *, codes: Iterable[int] = (0, 1)) -> None:
    """A valid input: the command ran to an answer (no error, no traceback, no raw control characters)."""
    assert r.returncode in tuple(codes), r.describe()
    assert not TRACEBACK.search(r.stderr), r.describe()
    assert not RAW_CONTROL.search(r.stdout), f"raw control characters on stdout:\n{r.describe()}"
    assert not RAW_CONTROL.search(r.stderr), f"raw control characters on stderr:\n{r.describe()}"


@dataclass
class Case:
    """One hostile input: ``build(dir)`` makes it and returns the path to open; the error must name ``names``
    (a substring; default the path's file name) and match ``says``."""

    id: str
    build: Callable[[Path], Path]
    says: str
    names: str | Sequence[str] | None = None
    commands: tuple[str, ...] = ("report", "stats", "init-check", "diff", "plan", "export", "open")
    fifo: bool = False  # builds a FIFO: never read it from the test process itself
    extra: dict = field(default_factory=dict)
