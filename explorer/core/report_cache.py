"""An on-disk cache of finished reports: a report is a pure function of the checkpoint's headers, the config, the
class and options, the versions of the libraries whose loading code decides it, and this program's own code, so a
repeat ``report`` can answer from the cache without importing torch or transformers.

The key (:func:`report_key`) is a SHA-256 over all of these, each taken so that any change is seen:

- the checkpoint: its index (every tensor's name, shape, dtype, size, file, offset; the metadata, wrapper choice
  and notes, all from headers) and each file's identity (size, mtime, inode, device) — a rewritten file is a new
  key even when its headers read the same;
- the config: the bytes of the config.json the report would read, and its identity;
- the options that change the report or its printing (given by the caller: class, key mapping text and the bytes
  of a key-mapping file, auto-fix, quantization, wrapper, output mode, colour);
- the versions of transformers, torch, peft, safetensors and huggingface_hub (distribution metadata: nothing
  imported), Python's, and this program's version plus the size and mtime of every module of its core and CLI
  (an edited checkout never serves an answer an older code made).

The root is ``$CKPT_EXPLORER_CACHE`` (as for the demo), else ``$XDG_CACHE_HOME/ckpt-explorer``, else
``~/.cache/ckpt-explorer``; entries live in ``reports/`` under it. ``CKPT_EXPLORER_REPORT_CACHE=off`` (or
``report --no-cache``) switches the cache off. Entries are written atomically (temp file,
fsync, rename), so concurrent runs never see half an entry (the last writer of a key wins; both wrote the same
answer); the folder is kept under :data:`MAX_CACHE_BYTES` (oldest entries removed first). A damaged or foreign
entry is a miss, never an error. A class given as code (``--model``) is never cached: its code is not ours to
fingerprint.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from .fsio import MAX_JSON_BYTES, atomic_write_bytes, parse_json, read_bounded

FORMAT = 1
MAX_CACHE_BYTES = 256 << 20  #: the reports/ folder is pruned to 3/4 of this when a write takes it over
MAX_ENTRY_BYTES = 16 << 20  #: a bigger output (a 47k-tensor --json) is not cached
LIBRARIES = ("transformers", "torch", "peft", "safetensors", "huggingface_hub")


def enabled() -> bool:
    """False when ``CKPT_EXPLORER_REPORT_CACHE`` is ``off`` (or ``0``, ``no``, ``false``)."""
    return os.environ.get("CKPT_EXPLORER_REPORT_CACHE", "on").strip().lower() not in ("off", "0", "no", "false")


def cache_root() -> Path:
    """Where the program caches things: ``$CKPT_EXPLORER_CACHE``, else ``$XDG_CACHE_HOME/ckpt-explorer``, else
    ``~/.cache/ckpt-explorer``."""
    env = os.environ.get("CKPT_EXPLORER_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "ckpt-explorer"
    return Path.home() / ".cache" / "ckpt-explorer"


def reports_dir() -> Path:
    return cache_root() / "reports"


def library_versions() -> dict[str, Any]:
    """The installed version of each library a report depends on, as import would find it: the first
    ``<name>-<version>.dist-info`` (or ``.egg-info``) along ``sys.path`` — what ``importlib.metadata.version``
    answers, read from the folder names (one listing per path entry, nothing imported) — with that folder's mtime,
    so a reinstall of the same version is a new key too. Plus Python's version."""
    want = {n.replace("-", "_").lower(): n for n in LIBRARIES}
    out: dict[str, Any] = {n: None for n in LIBRARIES}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for fn in names:
            if not fn.endswith((".dist-info", ".egg-info")):
                continue
            dist, _, ver = fn.rsplit(".", 1)[0].partition("-")
            lib = want.get(dist.replace("-", "_").replace(".", "_").lower())
            if lib is not None and out[lib] is None:
                try:
                    mtime = os.stat(os.path.join(entry or ".", fn)).st_mtime_ns
                except OSError:
                    mtime = None
                out[lib] = [ver, mtime]
    out["python"] = ".".join(map(str, sys.version_info[:3]))
    return out


def code_identity() -> list[Any]:
    """This program's version and (name, size, mtime) of every module of its core and CLI."""
    from .version import __version__

    pkg = Path(__file__).resolve().parents[1]
    files = []
    for sub in ("core", "cli"):
        for p in sorted((pkg / sub).rglob("*.py")):
            try:
                st = p.stat()
            except OSError:
                continue
            files.append([str(p.relative_to(pkg)), st.st_size, st.st_mtime_ns])
    return [__version__, files]


def file_identity(path: str | os.PathLike[str]) -> list[Any] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [os.fspath(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]


def index_digest(index: Any) -> str:
    """SHA-256 of everything a CheckpointIndex holds (headers only) and of its files' identities."""
    import dataclasses

    h = hashlib.sha256()
    # every field of the record (a field added later is covered too), the tensors below, the layout object aside
    rest = {f.name: getattr(index, f.name) for f in dataclasses.fields(index) if f.name not in ("tensors", "layout")}
    h.update(json.dumps(rest, sort_keys=True, default=lambda o: dict(o) if isinstance(o, Mapping) else str(o)).encode())
    for t in index.tensors.values():
        h.update(json.dumps([t.name, list(t.shape), t.dtype, t.nbytes, t.file, t.offset]).encode())
    files = set(index.files) | {t.file for t in index.tensors.values()}
    h.update(json.dumps([file_identity(f) for f in sorted(files)]).encode())
    return h.hexdigest()


def file_digest(path: str | os.PathLike[str] | None) -> list[Any] | None:
    """(identity, SHA-256 of the bytes) of a small input file (a config, a key-mapping file); None if absent.
    Raises OSError / ExplorerError when it cannot be read (the caller then does not cache)."""
    if path is None:
        return None
    raw = read_bounded(path, max_bytes=MAX_JSON_BYTES, what="file")
    return [file_identity(path), hashlib.sha256(raw).hexdigest()]


def report_key(index: Any, config_file: str | os.PathLike[str] | None, options: Mapping[str, Any]) -> str:
    """The cache key of a report of ``index`` with the config read from ``config_file`` and ``options``."""
    parts = {
        "format": FORMAT,
        "index": index_digest(index),
        "config": file_digest(config_file),
        "options": dict(options),
        "libraries": library_versions(),
        "code": code_identity(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _entry(key: str) -> Path:
    return reports_dir() / key[:2] / f"{key}.json"


def get(key: str) -> dict[str, Any] | None:
    """The cached answer for ``key`` ({"exit": int, "stdout": [str], "stderr": [str]}), or None."""
    p = _entry(key)
    try:
        raw = read_bounded(p, max_bytes=MAX_ENTRY_BYTES, what="cache entry")
        data = parse_json(raw, source=str(p), what="cache entry")
    except Exception:  # noqa: BLE001 - absent, damaged, foreign: a miss
        return None
    ok = (isinstance(data, dict) and data.get("format") == FORMAT and data.get("key") == key
          and type(data.get("exit")) is int
          and all(isinstance(data.get(s), list) and all(isinstance(w, str) for w in data[s]) for s in ("stdout", "stderr")))
    if not ok:
        return None
    try:
        os.utime(p)  # recently used: pruned last
    except OSError:
        pass
    return data


def put(key: str, exit_code: int, stdout: list[str], stderr: list[str]) -> bool:
    """Store an answer atomically; False when it is too big or the cache folder cannot be written (never raises)."""
    data = json.dumps({"format": FORMAT, "key": key, "exit": exit_code, "stdout": stdout, "stderr": stderr}).encode()
    if len(data) > MAX_ENTRY_BYTES:
        return False
    p = _entry(key)
    try:
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_bytes(p, data)
    except OSError:
        return False
    prune()
    return True


def prune(max_bytes: int | None = None) -> None:
    """Keep the reports folder under ``max_bytes`` (default :data:`MAX_CACHE_BYTES`): when over, the least
    recently used entries go until it is at 3/4 of it."""
    limit = MAX_CACHE_BYTES if max_bytes is None else max_bytes
    entries = []
    total = 0
    try:
        for sub in reports_dir().iterdir():
            if not sub.is_dir():
                continue
            for f in sub.iterdir():
                if f.suffix != ".json":
                    continue
                try:
                    st = f.stat()
                except OSError:
                    continue
                entries.append((st.st_mtime_ns, st.st_size, f))
                total += st.st_size
    except OSError:
        return
    if total <= limit:
        return
    for _, size, f in sorted(entries):
        if total <= limit * 3 // 4:
            break
        try:
            f.unlink()
            total -= size
        except OSError:
            pass
