"""An on-disk cache of finished reports: a report is a pure function of the checkpoint's headers, the config, the
class and options, the versions of the libraries whose loading code decides it, and this program's own code, so a
repeat ``report`` or a re-opened checkpoint in the window is answered from the cache without importing torch or
transformers. One cache, one key (:func:`target_key`), one entry per report: the CLI prints text or ``--json`` from
the cached :class:`~explorer.core.report.Report` as it prints a fresh one, the window builds its tree from it.

The key is a SHA-256 over all of these, each taken so that any change is seen:

- the checkpoint: its index (every tensor's name, shape, dtype, size, file, offset; the metadata, wrapper choice
  and notes, all from headers) and each file's identity (size, mtime, inode, device) — a rewritten file is a new
  key even when its headers read the same;
- the config: the bytes of the config.json the report would read, and its identity;
- what the report is asked for (:class:`~explorer.core.target.Target`): the class, the key mapping, auto-fix,
  quantization, with or without a model;
- the versions of transformers, torch, peft, safetensors and huggingface_hub (distribution metadata: nothing
  imported), Python's, and this program's version plus the size and mtime of every module of its core (an edited
  checkout never serves an answer an older code made);
- the environment variables transformers reads while it builds and loads a model (:data:`ENVIRONMENT`).

Not cached: a class given as code (``--model``: its code is not ours to fingerprint), a checkpoint or config that
is not local files (a Hub repo, a URL: the remote header cache serves those, and so ``HF_HUB_OFFLINE`` and the Hub
settings need no place in the key), a pre-quantized config (what 'auto' does depends on the machine's devices),
a PEFT adapter.

The root is ``$CKPT_EXPLORER_CACHE`` (as for the demo), else ``$XDG_CACHE_HOME/ckpt-explorer``, else
``~/.cache/ckpt-explorer``; entries live in ``reports/`` under it, zlib-compressed JSON (``report_data``), each at
most :data:`MAX_ENTRY_BYTES` on disk and :data:`MAX_ENTRY_JSON_BYTES` unpacked (a 47k-tensor MoE's report is
~2 MB on disk). ``CKPT_EXPLORER_REPORT_CACHE=off`` (or ``--no-cache``) switches the cache off. Entries are written
atomically (temp file, fsync, rename), so concurrent runs never see half an entry (the last writer of a key wins;
both wrote the same answer); the folder is kept under :data:`MAX_CACHE_BYTES` (least recently used entries removed
first). A damaged or foreign entry is a miss, never an error.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import zlib
from pathlib import Path
from typing import Any, Mapping

from .fsio import MAX_JSON_BYTES, atomic_write_bytes, cache_root, read_bounded

FORMAT = 2
MAGIC = b"ckpt-explorer report cache 2\n"
MAX_CACHE_BYTES = 256 << 20  #: the reports/ folder is pruned to 3/4 of this when a write takes it over
MAX_ENTRY_BYTES = 32 << 20  #: one entry on disk (compressed); a bigger report is not cached
MAX_ENTRY_JSON_BYTES = 512 << 20  #: one entry unpacked: a bound on memory whatever the file claims
LIBRARIES = ("transformers", "torch", "peft", "safetensors", "huggingface_hub")
#: what transformers reads from the environment while building and loading a model that can change what loads:
#: XLA availability and its bf16 switches (the load dtype), the distributed world (tensor-parallel plans)
ENVIRONMENT = ("USE_TORCH_XLA", "XLA_USE_BF16", "XLA_DOWNCAST_BF16", "WORLD_SIZE", "LOCAL_RANK", "RANK")


def enabled() -> bool:
    """False when ``CKPT_EXPLORER_REPORT_CACHE`` is ``off`` (or ``0``, ``no``, ``false``)."""
    return os.environ.get("CKPT_EXPLORER_REPORT_CACHE", "on").strip().lower() not in ("off", "0", "no", "false")


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
    """This program's version and (name, size, mtime) of every module of its core (the code that computes a
    report; the CLI and the window only show one)."""
    from .version import __version__

    core = Path(__file__).resolve().parent
    files = []
    for p in sorted(core.rglob("*.py")):
        try:
            st = p.stat()
        except OSError:
            continue
        files.append([str(p.relative_to(core)), st.st_size, st.st_mtime_ns])
    return [__version__, files]


def environment() -> dict[str, str | None]:
    """The values of :data:`ENVIRONMENT` (unset: None)."""
    return {name: os.environ.get(name) for name in ENVIRONMENT}


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
    h.update(json.dumps([[t.name, t.shape, t.dtype, t.nbytes, t.file, t.offset] for t in index.tensors.values()]).encode())
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
        "environment": environment(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def target_key(target: Any) -> str | None:
    """The cache key of ``matching.report(target)`` (a ``core.target.Target``), or None when that report is not
    cached: a class given as code, files that are not local (a Hub repo, a URL), a pre-quantized config, or inputs
    that cannot be read (the report itself then says what is wrong)."""
    from .errors import ExplorerError

    index, spec = target.index, target.spec
    try:
        files = set(index.files) | {t.file for t in index.tensors.values()}
        if not files or not all(os.path.isfile(f) for f in files):
            return None  # not local files (a remote source)
        config_file = None
        if spec is not None:
            if spec.model or not spec.config:
                return None
            from .model import config_path

            config_file = config_path(spec.config)
            if not config_file.is_file():
                return None
            if b"quantization_config" in read_bounded(config_file, max_bytes=MAX_JSON_BYTES, what="config"):
                return None
        options = {
            "model": spec is not None,
            "arch": spec.arch if spec is not None else None,
            "config": str(spec.config) if spec is not None else None,
            "key_mapping": None if target.key_mapping is None else list(dict(target.key_mapping).items()),
            "auto_fix": bool(target.auto_fix),
            "quantization": target.quantization,
        }
        return report_key(index, config_file, options)
    except (ExplorerError, OSError, ValueError):
        return None


def lookup(target: Any, *, use_cache: bool = True) -> tuple[str | None, Any]:
    """(key, cached Report or None) for ``target``; key None: this report is not cached (or the cache is off)."""
    key = target_key(target) if use_cache and enabled() else None
    if key is None:
        return None, None
    data = get(key)
    if data is None:
        return key, None
    from .report_data import from_data

    try:
        return key, from_data(data, target.index)
    except (ValueError, KeyError, TypeError, IndexError):  # written by another code, damaged: a miss
        return key, None


def store(key: str | None, report: Any) -> bool:
    """Cache ``report`` under ``key`` (from :func:`lookup`); False when not stored (never raises)."""
    if key is None:
        return False
    from .report_data import to_data

    data = to_data(report)
    return data is not None and put(key, data)


def report_of(target: Any, *, use_cache: bool = True) -> tuple[Any, bool]:
    """``matching.report(target)``, answered from the cache when it holds it (nothing heavy imported then), else
    computed and stored. Returns (Report, whether it came from the cache)."""
    key, rep = lookup(target, use_cache=use_cache)
    if rep is not None:
        return rep, True
    from .matching import report

    rep = report(target)
    store(key, rep)
    return rep, False


def _entry(key: str) -> Path:
    return reports_dir() / key[:2] / f"{key}.z"


def get(key: str) -> dict[str, Any] | None:
    """The report data cached under ``key`` (``report_data.to_data``'s form), or None."""
    p = _entry(key)
    try:
        raw = read_bounded(p, max_bytes=MAX_ENTRY_BYTES, what="cache entry")
        if not raw.startswith(MAGIC):
            return None
        z = zlib.decompressobj()
        text = z.decompress(memoryview(raw)[len(MAGIC):], MAX_ENTRY_JSON_BYTES)
        if z.unconsumed_tail or not z.eof:
            return None  # bigger than the bound, or truncated
        data = json.loads(text)
    except Exception:  # noqa: BLE001 - absent, damaged, foreign: a miss
        return None
    if not (isinstance(data, dict) and data.get("format") == FORMAT and data.get("key") == key
            and isinstance(data.get("report"), dict)):
        return None
    try:
        os.utime(p)  # recently used: pruned last
    except OSError:
        pass
    return data["report"]


def put(key: str, report: Mapping[str, Any]) -> bool:
    """Store report data atomically; False when it is too big or the cache folder cannot be written (never raises)."""
    try:
        text = json.dumps({"format": FORMAT, "key": key, "report": report}, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        return False
    if len(text) > MAX_ENTRY_JSON_BYTES:
        return False
    data = MAGIC + zlib.compress(text, 1)
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
                if f.suffix not in (".z", ".json"):  # .json: entries of the first format
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
