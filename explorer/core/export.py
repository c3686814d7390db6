"""Streamed, atomic export of a patched checkpoint that the target class loads with nothing missing,
unexpected or mismatched.

Tensors are written one by one into safetensors files we lay out ourselves (header first, then data), so the
peak memory is about one tensor: kept tensors are copied byte for byte (``copy_file_range`` from the source
file, never through Python), fresh ones come from the model's own init on just the owning module. Everything
is written into a hidden staging folder beside the output, fsynced, and renamed into place at the end; an
error or a cancel removes the staging folder, so there is never a half checkpoint.
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import stat
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .checkpoint import CheckpointIndex, TensorInfo, TensorReader, safetensors_dtype_code
from .errors import Cancelled, ExplorerError, ExportError
from .fsio import atomic_output, atomic_write_bytes, check_output, fsync_path, link_stays_inside, load_json, umask  # noqa: F401
from .fmt import human_bytes, safe_text
from .fresh import FreshInit
from .jobs import Progress, Ticker, is_cancelled
from .plan import Action, Entry, Plan

if TYPE_CHECKING:
    import torch

    from .report import Report
    from .model import ModelSpec

_CHUNK = 64 << 20
_DTYPE_ALIASES = {
    "fp32": "float32", "float": "float32", "f32": "float32", "float32": "float32",
    "fp16": "float16", "half": "float16", "f16": "float16", "float16": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp64": "float64", "float64": "float64", "double": "float64",
}


DTYPES_HELP = "float32, float16, bfloat16 or float64 (aliases fp32, fp16, bf16, fp64)"


class ExportCancelled(ExportError, Cancelled):
    """The export was cancelled; nothing was left behind."""


@dataclass(frozen=True)
class ExportResult:
    """What was written, and the match report of the written checkpoint against the target class."""

    out_dir: str
    files: tuple[str, ...]
    n_tensors: int
    total_bytes: int
    counts: Mapping[str, int]  # keep / reinit / resized / dropped / tied (not written, as save_pretrained)
    plan_sha256: str
    report: Report
    seconds: float
    notes: tuple[str, ...] = ()
    copied: tuple[str, ...] = ()  # tokenizer/processor files copied unchanged from the source folder (names)

    @property
    def is_clean(self) -> bool:
        return self.report.is_clean

    def to_json(self) -> dict[str, Any]:
        c = self.report.counts()
        return {
            "out_dir": self.out_dir,
            "files": list(self.files),
            "tensors": self.n_tensors,
            "bytes": self.total_bytes,
            "counts": dict(self.counts),
            "plan_sha256": self.plan_sha256,
            "seconds": round(self.seconds, 3),
            "clean": self.is_clean,
            "reload": {k: c[k] for k in ("matched", "missing", "unexpected", "mismatched")},
            "missing": list(self.report.missing),
            "unexpected": list(self.report.unexpected),
            "mismatched": [[k, list(a), list(b)] for k, a, b in self.report.mismatched],
            "notes": list(self.notes),
            "copied": list(self.copied),
        }


@dataclass(frozen=True)
class _Out:
    """One tensor to write."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name of the written data
    kind: str  # "copy" | "cast" | "init" | "resize"
    source: TensorInfo | None = None
    model_key: str | None = None

    @property
    def nbytes(self) -> int:
        import torch

        return math.prod(self.shape) * getattr(torch, self.dtype).itemsize


# --------------------------------------------------------------------------------------------- helpers


SIZE_HELP = "a positive size such as 500MB, 2GiB or 1000000 (bytes)"
MAX_SHARD_BYTES = 1 << 62  # far past any disk; keeps offsets in safetensors' u64 with room to add
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_SIZE_RE = re.compile(r"([0-9]{1,40}(?:\.[0-9]{0,40})?|\.[0-9]{1,40})(?:[eE]([+-]?[0-9]{1,4}))? *([A-Za-z]*)", re.ASCII)


def parse_size(size: int | float | str | None, *, what: str = "max_shard_size") -> int | None:
    """'500MB' -> 500_000_000, '2GiB' -> 2**31 (transformers' convention); an int is bytes. None stays None.

    Refuses (ExportError naming ``what``, e.g. ``--max-shard-size``) anything but a finite positive number of
    bytes up to :data:`MAX_SHARD_BYTES` with an optional unit: 'inf', 'nan', '-1', '0', '1e400GB', '0.1B'."""
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, (int, float, str)) or (isinstance(size, float) and not math.isfinite(size)):
        raise ExportError(f"{what}: expected {SIZE_HELP}, found {size!r}")
    if isinstance(size, (int, float)):
        n = int(size)
    else:
        m = _SIZE_RE.fullmatch(size.strip())
        unit = m.group(3).upper() if m else ""
        if m is None or unit not in _SIZE_UNITS:
            raise ExportError(f"{what}: expected {SIZE_HELP}, found {size!r}")
        # exact decimal arithmetic: '1e400GB' is too large, not an OverflowError; '0.5GB' is 500000000
        from fractions import Fraction

        n = int(Fraction(m.group(1)) * _SIZE_UNITS[unit] * Fraction(10) ** int(m.group(2) or 0))  # |exp| < 10**4
    if n <= 0:
        raise ExportError(f"{what}: expected {SIZE_HELP}, found {size!r} (at least 1 byte)")
    if n > MAX_SHARD_BYTES:
        raise ExportError(f"{what}: {size!r} is too large (at most {MAX_SHARD_BYTES} bytes)")
    return n


def parse_dtype(dtype: str | None) -> str | None:
    if dtype is None:
        return None
    name = _DTYPE_ALIASES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise ExportError(f"dtype: expected {DTYPES_HELP}, found {dtype!r}")
    return name


# --------------------------------------------------------------------------------------------- export


def export_checkpoint(
    checkpoint: str | os.PathLike[str] | CheckpointIndex,
    plan: Plan,
    out_dir: str | os.PathLike[str],
    *,
    resize: bool = False,
    dtype: str | None = None,
    max_shard_size: int | str | None = None,
    seed: int = 0,
    spec: ModelSpec | None = None,
    progress: Progress | None = None,
    cancel: Any = None,
    computed: Mapping[str, Callable[[], torch.Tensor]] | None = None,
) -> ExportResult:
    """Write ``checkpoint`` patched by ``plan`` into the new folder ``out_dir``, then re-match it.

    ``spec`` overrides the model recorded in the plan. ``resize`` keeps the overlapping slice of mismatched
    tensors (vocabularies, classifiers) and initialises the rest. ``dtype`` casts floating tensors. ``progress`` and
    ``cancel`` follow :mod:`explorer.core.jobs`: ``progress(bytes done, bytes total, tensor being written)``, ``cancel``
    (a callable or an Event) checked between chunks. ``computed`` maps kept model keys to a function returning the
    tensor to write instead of the stored one (same shape; e.g. a merged adapter), called when it is written. Raises ExportError (ExportCancelled when cancelled);
    on any failure nothing is left in ``out_dir``.
    """
    from .keys import apply_key_mapping
    from .matching import report
    from .model import ModelSpec, build_model, config_path
    from .target import resolve_model

    t0 = time.perf_counter()
    dtype = parse_dtype(dtype)
    shard_limit = parse_size(max_shard_size)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ExportError(f"seed: expected an integer from 0 to 2**64-1 (torch's seed range), found {seed!r}")
    from .remote import is_remote, open_source

    index = checkpoint if isinstance(checkpoint, CheckpointIndex) else open_source(checkpoint, wrapper=plan.wrapper)
    remote = is_remote(index)  # a Hub repo or URL: its tensors are streamed by byte range; no companion files
    spec = spec or plan.spec()
    cfg_src: str | None = None
    if spec.is_transformers:
        spec = resolve_model(index, ModelSpec(config=spec.config, arch=spec.arch), missing=ExportError(
            f"{index.path}: the plan records no config and there is no config.json beside the checkpoint; pass --config"))
        cfg_src = spec.config

    out = Path(out_dir).expanduser().absolute()
    inputs = [] if remote else [Path(f).resolve() for f in index.files]
    if cfg_src:
        inputs.append(config_path(cfg_src).resolve())
    # a model folder (HF directory or shards) is the checkpoint: nothing goes inside it. A single weights file
    # only protects its own folder (export would write config.json there), not new sibling sub-folders.
    is_model_folder = Path(index.path).is_dir() or index.format.endswith("sharded")
    out = check_target(out, Path(index.folder).resolve(), inputs, refuse_inside=is_model_folder and not remote)

    rep = report(index, spec, key_mapping=plan.key_mapping, suggest=False)
    entries = plan.resolve(rep)
    built = build_model(spec, checkpoint_dtype=index.first_float_dtype())
    model = built.module
    tie_map: dict[str, str] = dict(getattr(model, "all_tied_weights_keys", {}) or {}) if built.is_transformers else {}

    outs, counts, notes = _layout(rep, entries, tie_map, index, plan, dtype=dtype, resize=resize,
                                  rename=lambda n: apply_key_mapping(n, plan.key_mapping))
    if not outs:
        raise ExportError(f"{index.path}: the plan leaves no tensor to write")
    if plan.key_mapping and cfg_src:  # torchtitan q/k weights renamed to HF names: permuted for HF's RoPE
        from .naming import rope_computed

        try:
            rope = rope_computed(index, {o.source.name: (o.name, o.model_key) for o in outs if o.source is not None
                                         and o.model_key and o.kind in ("copy", "cast")},
                                 load_json(config_path(cfg_src), what="config.json", error=ExportError), notes)
        except ValueError as e:
            raise ExportError(str(e)) from None
        computed = {**rope, **(computed or {})}
    if computed:
        import dataclasses

        outs = [dataclasses.replace(o, kind="computed") if o.kind in ("copy", "cast") and o.model_key in computed else o for o in outs]
        state_computed = dict(computed)
    else:
        state_computed = {}
    if plan.checkpoint and not remote and Path(plan.checkpoint).resolve() != Path(index.path).resolve():
        # allowed (rules are patterns; defaults come from this checkpoint's report), but worth saying
        notes.insert(0, f"the plan was made for {plan.checkpoint}, applied to {Path(index.path).absolute()}")
    shards = _shard(outs, shard_limit)
    plan_hash = plan.sha256()
    from .. import __version__

    metadata = {
        "format": "pt",
        "explorer_source": index.path if remote else str(Path(index.path).absolute()),
        "explorer_plan_sha256": plan_hash,
        "explorer_version": __version__,
        "explorer_arch": built.class_name,
        "explorer_seed": str(seed),
    }
    if dtype:
        metadata["explorer_dtype"] = dtype

    total = sum(o.nbytes for o in outs)
    parent = out.parent
    if not parent.is_dir():
        raise ExportError(f"{out}: parent folder {parent} does not exist")
    staging = make_staging(out, notes)
    written: list[str] = []
    try:
        state = _WriteState(total, progress, cancel)
        state.computed = state_computed
        with TensorReader(index) as reader:
            fresh = FreshInit(built, seed=seed, cache_modules=1)
            names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
            if len(shards) == 1:
                names = ["model.safetensors"]
            for fname, shard in zip(names, shards):
                _write_safetensors(staging / fname, shard, metadata, reader, fresh, state)
                written.append(fname)
        if len(shards) > 1:
            idx = {
                "metadata": {"total_size": total, "explorer_plan_sha256": plan_hash},
                "weight_map": {o.name: fname for fname, shard in zip(names, shards) for o in shard},
            }
            atomic_write_bytes(staging / "model.safetensors.index.json", json.dumps(idx, indent=2).encode() + b"\n")
            written.append("model.safetensors.index.json")
        if cfg_src:
            cfg = load_json(config_path(cfg_src), what="config.json", error=ExportError)
            cfg["architectures"] = [built.class_name]
            if dtype:
                cfg["dtype"] = dtype
                cfg.pop("torch_dtype", None)
            atomic_write_bytes(staging / "config.json", json.dumps(cfg, indent=2, sort_keys=True).encode() + b"\n")
            written.append("config.json")
        copied = [] if remote else copy_companions(Path(index.folder), staging, skip={Path(f).resolve() for f in index.files} | set(inputs), notes=notes)
        if is_cancelled(cancel):
            raise ExportCancelled(f"{out}: export cancelled; nothing was written")
        finish_staging(staging, out)
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, ExplorerError):
            raise
        if isinstance(e, OSError):
            hint = " (is it a mount point?)" if e.errno == errno.EBUSY else ""
            raise ExportError(f"{out}: write failed: {e.strerror or e}{hint}; nothing was written") from e
        raise

    out_spec = ModelSpec(config=str(out), arch=built.class_name) if spec.is_transformers else spec
    after = report(str(out), out_spec, suggest=False)
    if not after.is_clean:
        notes.append(
            f"the written checkpoint does not load clean: {len(after.missing)} missing, "
            f"{len(after.unexpected)} unexpected, {len(after.mismatched)} mismatched"
        )
    return ExportResult(
        str(out), tuple(str(out / n) for n in written), len(outs), total, counts, plan_hash, after,
        time.perf_counter() - t0, tuple(notes), tuple(copied),
    )


def check_target(out: Path, source_folder: Path, inputs: list[Path], *, refuse_inside: bool = True) -> Path:
    """Refuse an output folder that is an input, the source's folder (or inside it), anything but a new or empty,
    writable folder — a file, a FIFO, a device or a link to one is never replaced. Returns the folder to write:
    ``out`` itself, or the folder a link named ``out`` points to."""
    real = out.resolve()
    for f in inputs:
        if real == f:
            raise ExportError(f"{out}: refusing to write over an input file ({f})")
    if real == source_folder:
        raise ExportError(f"{out}: refusing to write into the source checkpoint's folder; choose a new folder")
    if refuse_inside and real.is_relative_to(source_folder):
        # a folder inside the source would be picked up by tools that scan it, and a later export "next to"
        # the source could land in it; keep outputs outside
        raise ExportError(
            f"{out}: refusing to write inside the source checkpoint's folder {source_folder}; choose a folder outside it"
        )
    try:
        lst = os.lstat(out)
    except FileNotFoundError:
        return out
    except OSError as e:
        raise ExportError(f"{out}: cannot write there: {e.strerror or e}") from None
    if stat.S_ISLNK(lst.st_mode):
        if not real.exists():
            raise ExportError(f"{out}: is a symbolic link to nothing; give a new folder name")
        if real.is_dir():
            out = real  # the folder the user's link names; the rename happens there, not over the link
    if not out.is_dir():
        # a file, a FIFO, a device or a link to one: say which (an input is named), never replace it
        check_output(out, inputs=inputs, what="export folder", error=ExportError)
        raise ExportError(f"{out}: exists and is not a folder")
    if any(out.iterdir()):
        raise ExportError(f"{out}: exists and is not empty; choose a new or empty folder")
    if not os.access(out, os.W_OK):  # renaming over it would succeed and silently replace a read-only folder
        raise ExportError(f"{out}: the folder is read-only; choose a writable folder")
    return out


# --------------------------------------------------------------------------------------------- staging folders

STAGING_INFIX = ".partial-"  # staging folder: ".<out name>.partial-<pid>-<random>" beside the output
STAGING_MARKER = ".ckpt-explorer-staging"  # inside it: who made it (JSON: tool, pid, host, boot, start)
_STAGING_RE = re.compile(r"\..+\.partial-([0-9]{1,10})-[A-Za-z0-9_]+", re.ASCII)


def _proc_start(pid: int) -> str | None:
    """A process's start time (clock ticks after boot, Linux ``/proc``), None where unknown; with the pid it
    tells a live exporter from an unrelated process that was given a recycled pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read(4096)
        return raw[raw.rindex(b")") + 2:].split()[19].decode()
    except (OSError, ValueError, IndexError):
        return None


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read(64).decode().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _write_marker(staging: Path) -> None:
    import socket

    me = {"tool": "ckpt-explorer export", "pid": os.getpid(), "host": socket.gethostname(), "boot": _boot_id(),
          "start": _proc_start(os.getpid())}
    fd = os.open(staging / STAGING_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        _write_all(fd, json.dumps(me).encode())
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return True
    return True


def _stale_owner(entry: os.DirEntry[str]) -> int | None:
    """The pid of the dead export that left staging folder ``entry``, or None when it is not provably ours and
    dead (not a real folder, no marker, another host, the process still running)."""
    import socket

    m = _STAGING_RE.fullmatch(entry.name)
    if m is None or not entry.is_dir(follow_symlinks=False):
        return None
    pid = int(m.group(1))
    marker = Path(entry.path) / STAGING_MARKER
    try:
        st = os.lstat(marker)
    except FileNotFoundError:
        st = None
    except OSError:
        return None
    if st is None:  # killed between creating the folder and writing the marker: only an empty folder goes
        try:
            empty = not any(os.scandir(entry.path))
        except OSError:
            return None
        return pid if empty and not _alive(pid) else None
    if not stat.S_ISREG(st.st_mode):
        return None
    try:
        info = load_json(marker, max_bytes=4096, what="staging marker")
    except ExplorerError:
        return None
    if not isinstance(info, dict) or info.get("tool") != "ckpt-explorer export" or info.get("pid") != pid:
        return None
    if info.get("host") != socket.gethostname():
        return None  # a shared folder: that machine's processes are not ours to judge
    boot = _boot_id()
    if boot is not None and info.get("boot") not in (None, boot):
        return pid  # made before the last reboot: its process is gone
    if not _alive(pid):
        return pid
    start = _proc_start(pid)
    if start is not None and info.get("start") is not None and start != info.get("start"):
        return pid  # the pid now belongs to another process
    return None


def remove_stale_staging(parent: str | os.PathLike[str]) -> list[str]:
    """Remove the staging folders in ``parent`` that exports killed before they could clean up (SIGKILL, a
    crash, a power cut) left behind. Only folders named like ours that carry our marker (or are empty) and whose
    process is gone are removed — never anything else. Returns one note per folder removed."""
    notes: list[str] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return notes
    for e in entries:
        pid = _stale_owner(e)
        if pid is None:
            continue
        size = 0
        try:
            size = sum(f.stat(follow_symlinks=False).st_size for f in os.scandir(e.path))
        except OSError:
            pass
        shutil.rmtree(e.path, ignore_errors=True)
        if not os.path.lexists(e.path):
            notes.append(f"removed {safe_text(e.path)}: left by an interrupted export (pid {pid}, "
                         f"{human_bytes(size)})")
    return notes


def make_staging(out: Path, notes: list[str]) -> Path:
    """A new hidden staging folder beside ``out`` (``.<name>.partial-<pid>-<random>`` with a marker inside), after
    removing the stale ones dead exports left there (noted in ``notes``). Raises ExportError."""
    parent = out.parent
    notes.extend(remove_stale_staging(parent))
    try:
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}{STAGING_INFIX}{os.getpid()}-"))
    except OSError as e:
        raise ExportError(f"{out}: cannot write into {parent}: {e.strerror or e} (read-only location?)") from e
    try:
        _write_marker(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def finish_staging(staging: Path, out: Path) -> None:
    """Drop the marker, fsync, give the folder normal permissions and rename it to ``out`` (an existing empty
    folder is replaced atomically). Raises OSError; the caller removes the staging folder on any error."""
    os.unlink(staging / STAGING_MARKER)  # the result carries no trace of staging
    fsync_path(staging)
    os.chmod(staging, 0o755 & ~umask())
    os.rename(staging, out)
    fsync_path(out.parent)


# Files from_pretrained users expect beside the weights (tokenizer, generation, processor); matched by name.
COMPANION_NAMES = frozenset({
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "merges.txt", "vocab.json", "special_tokens_map.json",
    "added_tokens.json", "generation_config.json", "preprocessor_config.json",
})
COMPANION_MAX_BYTES = 256 << 20  # a tokenizer.json is a few MB; anything this big is not a companion file


def companion_files(folder: Path, *, skip: set[Path] | frozenset[Path] = frozenset()) -> list[Path]:
    """The tokenizer/processor files in ``folder`` that export copies unchanged (never weights or config.json),
    by name; whether each may be read (links, file type, size) is :func:`copy_companions`'s check."""
    out: list[Path] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return out
    for f in entries:
        n = f.name
        if not (n in COMPANION_NAMES or n.endswith(".model") or n.startswith("chat_template")):
            continue
        if n == "config.json" or not os.path.lexists(f) or f.resolve() in skip:
            continue
        out.append(f)
    return out


def _companion_source(f: Path, folder: Path) -> tuple[Path | None, str]:
    """Where companion ``f`` may be read from — itself, or the target of a link that stays inside the source
    folder or its Hugging Face cache blob store — or None and why not (``folder`` is resolved)."""
    real = f.resolve()
    if not link_stays_inside(f, folder):
        return None, f"a symbolic link to {safe_text(real)}, outside the source folder"
    try:
        st = os.stat(real)
    except OSError as e:
        return None, f"cannot read it: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        return None, "not a regular file"
    if st.st_size > COMPANION_MAX_BYTES:
        return None, f"{st.st_size} bytes: too large for a tokenizer/processor file"
    return real, ""


def _copy_file_as_is(src: Path, name_st: os.stat_result, dst: Path) -> None:
    """Copy regular file ``src`` to the new file ``dst`` with the source's permission bits (the umask may narrow
    them, nothing widens them). Refuses if ``src`` is no longer the file the name pointed to when checked."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (name_st.st_dev, name_st.st_ino):
            raise ExportError(f"{src}: changed while exporting (not the file that was checked); nothing was written")
        mode = st.st_mode & 0o777 & ~umask()
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)
        try:
            os.fchmod(out, mode)
            left = min(st.st_size, COMPANION_MAX_BYTES)
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                _write_all(out, chunk)
                left -= len(chunk)
            os.fsync(out)
        finally:
            os.close(out)
    finally:
        os.close(fd)


def copy_companions(folder: Path, staging: Path, *, skip: set[Path], notes: list[str]) -> list[str]:
    """Copy the companion files byte for byte into the staging folder (fsynced; renamed with it). A symbolic link
    is followed only inside the source folder or its Hugging Face cache blob store (every cache snapshot links
    there); any other link (``vocab.txt -> /etc/shadow``) is skipped and noted. Returns the names copied."""
    copied: list[str] = []
    real_folder = folder.resolve()
    for f in companion_files(folder, skip=skip):
        src, why = _companion_source(f, real_folder)
        if src is None:
            notes.append(f"{safe_text(f)}: not copied ({why})")
            continue
        try:
            name_st = os.stat(f)
        except OSError as e:
            notes.append(f"{safe_text(f)}: not copied (cannot read it: {e.strerror or e})")
            continue
        _copy_file_as_is(src, name_st, staging / f.name)
        copied.append(f.name)
    return copied


# --------------------------------------------------------------------------------------------- layout


def _layout(
    rep: Report,
    entries: Mapping[str, Entry],
    tie_map: Mapping[str, str],
    index: CheckpointIndex,
    plan: Plan,
    *,
    dtype: str | None,
    resize: bool,
    rename: Callable[[str], str],
) -> tuple[list[_Out], dict[str, int], list[str]]:
    """Decide what to write, under which name, from where."""
    from .report import How, Status

    counts = {"keep": 0, "reinit": 0, "resized": 0, "dropped": 0, "tied": 0, "unexpected_dropped": 0}
    notes: list[str] = []
    mk = rep.model_keys

    def is_written(k: str) -> bool:
        e = entries.get(k)
        return e is not None and e.action is not Action.DROP

    def own_tie_target(key: str, m: Any, e: Entry, src_tie: str) -> bool:
        """A kept tie target with its own tensor on disk whose bytes differ from the tie source's: from_pretrained
        does not tie such a pair (it compares values), so dropping the target would change the model."""
        if e.action is not Action.KEEP or m.status is not Status.MATCHED or How.TIED in m.how or not m.sources:
            return False
        if How.CONVERTED in m.how:
            return False
        src = mk.get(src_tie)
        if src is None or not src.sources or How.TIED in src.how or How.CONVERTED in src.how:
            return True  # nothing on disk to tie to: keep its own value
        return not _same_bytes(index, m.sources[0], src.sources[0], reader_box)

    reader_box: list[TensorReader] = []
    outs: list[_Out] = []
    converted_done: set[str] = set()
    for key, m in mk.items():
        if m.status is Status.COMPUTED:
            continue
        e = entries[key]
        if e.action is Action.DROP:
            counts["dropped"] += 1
            continue
        src_tie = tie_map.get(key)
        if src_tie is not None and is_written(src_tie) and not own_tie_target(key, m, e, src_tie):
            counts["tied"] += 1  # save_pretrained writes only the tie source
            continue
        srcs = m.sources
        if not srcs and m.tied_to and mk.get(m.tied_to) and mk[m.tied_to].sources:
            srcs = mk[m.tied_to].sources  # tie source absent on disk, loaded from its present target
        converted = How.CONVERTED in m.how
        want_keep = e.action is Action.KEEP
        if m.status is Status.MISMATCHED:
            src = index.tensors[srcs[0]] if srcs else None
            can_resize = src is not None and not converted and len(src.shape) == len(m.model_shape)
            if resize and can_resize and (want_keep or e.rule is None):
                out_dt = dtype if (dtype and src.is_floating) else src.dtype
                outs.append(_Out(key, m.model_shape, out_dt, "resize", src, key))
                counts["resized"] += 1
                continue
            if want_keep:
                notes.append(f"{key}: kept is impossible (checkpoint {list(m.checkpoint_shape or ())} vs model "
                             f"{list(m.model_shape)}); re-initialised (use resize to keep the overlap)")
            want_keep = False
        if want_keep and not srcs:
            if m.status is not Status.IGNORED:
                notes.append(f"{key}: keep requested but the checkpoint has no tensor for it; re-initialised")
            want_keep = False
        if not want_keep:
            if converted:
                _check_converted_group(key, m, mk, entries)
            outs.append(_Out(key, m.model_shape, dtype if dtype and _is_float(m.model_dtype) else m.model_dtype, "init", None, key))
            counts["reinit"] += 1
            continue
        if converted:
            _check_converted_group(key, m, mk, entries)
            for s in srcs:
                if s in converted_done:
                    continue
                converted_done.add(s)
                info = index.tensors[s]
                outs.append(_copy_out(rename(s), info, dtype, key))
            counts["keep"] += 1
            continue
        info = index.tensors[srcs[0]]
        outs.append(_copy_out(key, info, dtype, key))
        counts["keep"] += 1
    for r in reader_box:
        r.close()
    counts["unexpected_dropped"] = sum(1 for e in entries.values() if not e.is_model_key)
    names = [o.name for o in outs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ExportError(f"two tensors would be written as {dup!r}; the plan's renames collide")
    return outs, counts, notes


def _same_bytes(index: CheckpointIndex, a: str, b: str, reader_box: list[TensorReader]) -> bool:
    """Whether two checkpoint tensors hold identical bytes (same dtype and shape). Reads them only if needed."""
    import torch

    ta, tb = index.tensors[a], index.tensors[b]
    if ta.dtype != tb.dtype or tuple(ta.shape) != tuple(tb.shape):
        return False
    if not reader_box:
        reader_box.append(TensorReader(index))
    reader = reader_box[0]
    fa, fb = reader.flat(a), reader.flat(b)
    if fa.numel() == 0:
        return True
    return bool(torch.equal(fa.contiguous().view(torch.uint8), fb.contiguous().view(torch.uint8)))


def _copy_out(name: str, info: TensorInfo, dtype: str | None, key: str) -> _Out:
    if dtype and info.is_floating and info.dtype != dtype:
        return _Out(name, info.shape, dtype, "cast", info, key)
    return _Out(name, info.shape, info.dtype, "copy", info, key)


def _is_float(dt: str) -> bool:
    return dt.startswith(("float", "bfloat"))


def _check_converted_group(key: str, m: Any, mk: Mapping[str, Any], entries: Mapping[str, Entry]) -> None:
    """Fused/split tensors come from shared sources: all their targets must be kept, or none."""
    srcs = set(m.sources)
    group = [k for k, o in mk.items() if srcs & set(o.sources)]
    actions = {entries[k].action is Action.KEEP for k in group}
    if len(actions) > 1:
        raise ExportError(
            f"{key}: its checkpoint tensors are converted by transformers together with "
            f"{', '.join(k for k in group if k != key)[:200]}; keep or re-initialise them together"
        )


def _shard(outs: list[_Out], limit: int | None) -> list[list[_Out]]:
    if not limit:
        return [outs]
    shards: list[list[_Out]] = [[]]
    size = 0
    for o in outs:
        if shards[-1] and size + o.nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(o)
        size += o.nbytes
    return shards


# --------------------------------------------------------------------------------------------- writing


class _WriteState(Ticker):
    """Bytes written (the job's progress), the cancel check, and the ``computed`` tensors to write."""

    def __init__(self, total: int, progress: Progress | None, cancel: Any) -> None:
        super().__init__(total, progress, cancel, error=lambda: ExportCancelled("export cancelled; nothing was written"))
        self.computed: dict[str, Callable[[], torch.Tensor]] = {}


def _fresh(fi: FreshInit, key: str) -> torch.Tensor:
    """The model's own seeded fresh init of ``key`` (the same values init_check and the GUI overlay use)."""
    t = fi.tensor(key)
    if t is None:
        why = f" ({'; '.join(fi.notes)})" if fi.notes else ""
        raise ExportError(f"{key}: the model's initialisation does not set this tensor{why}; keep it from the checkpoint or drop it")
    return t


def _header(shard: list[_Out], metadata: Mapping[str, str]) -> bytes:
    h: dict[str, Any] = {"__metadata__": dict(metadata)}
    off = 0
    for o in shard:
        n = o.nbytes
        h[o.name] = {"dtype": safetensors_dtype_code(o.dtype), "shape": list(o.shape), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(h, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data aligned to 8 bytes, as safetensors writes it
    return struct.pack("<Q", len(raw)) + raw


def _write_all(fd: int, buf: Any) -> None:
    mv = memoryview(buf).cast("B")
    while mv:
        n = os.write(fd, mv)
        mv = mv[n:]


def _write_tensor(fd: int, t: torch.Tensor, state: _WriteState, name: str) -> None:
    import torch

    flat = t.detach().contiguous().reshape(-1)
    if flat.numel() == 0:
        return
    raw = flat.view(torch.uint8).numpy()
    for start in range(0, raw.size, _CHUNK):
        part = raw[start : start + _CHUNK]
        _write_all(fd, part)
        state.step(part.size, name)


def _copy_range(src_fd: int, dst_fd: int, offset: int, count: int, state: _WriteState, name: str) -> None:
    """Kernel-side copy of a byte range (no user-space buffer); falls back to pread/write."""
    left = count
    pos = offset
    use_cfr = hasattr(os, "copy_file_range")
    while left:
        n = min(left, _CHUNK)
        done = 0
        if use_cfr:
            try:
                done = os.copy_file_range(src_fd, dst_fd, n, pos)
            except OSError:
                use_cfr = False
                done = 0
        if not use_cfr or done == 0:
            data = os.pread(src_fd, n, pos)
            if not data:
                raise ExportError(f"{name}: source ended early (file changed while exporting?)")
            _write_all(dst_fd, data)
            done = len(data)
        pos += done
        left -= done
        state.step(done, name)


def _write_safetensors(
    path: Path, shard: list[_Out], metadata: Mapping[str, str], reader: TensorReader, fresh: FreshInit, state: _WriteState
) -> None:
    import torch

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    src_fds: dict[str, int] = {}
    try:
        _write_all(fd, _header(shard, metadata))
        for o in shard:
            if o.kind == "copy" and o.source is not None and o.source.offset is not None:
                sfd = src_fds.get(o.source.file)
                if sfd is None:
                    sfd = src_fds[o.source.file] = os.open(o.source.file, os.O_RDONLY)
                _copy_range(sfd, fd, o.source.offset, o.source.nbytes, state, o.name)
            elif o.kind in ("copy", "cast"):
                assert o.source is not None
                if o.source.offset is not None:  # safetensors: cast chunk by chunk from the mmap
                    for chunk in reader.iter_chunks(o.source.name, chunk_elems=_CHUNK // 8):
                        _write_tensor(fd, chunk.to(getattr(torch, o.dtype)), state, o.name)
                else:
                    _write_tensor(fd, reader.tensor(o.source.name).to(getattr(torch, o.dtype)), state, o.name)
            elif o.kind == "computed":
                t = state.computed[o.model_key or o.name]()
                if tuple(t.shape) != o.shape:
                    raise ExportError(f"{o.name}: computed tensor has shape {list(t.shape)}, expected {list(o.shape)}")
                _write_tensor(fd, t.to(getattr(torch, o.dtype)).contiguous(), state, o.name)
                del t
            elif o.kind == "init":
                _write_tensor(fd, _fresh(fresh, o.model_key or o.name).to(getattr(torch, o.dtype)), state, o.name)
            elif o.kind == "resize":
                assert o.source is not None
                t = _fresh(fresh, o.model_key or o.name).to(getattr(torch, o.dtype), copy=True)  # the cache stays clean
                src = reader.tensor(o.source.name)
                sl = tuple(slice(0, min(a, b)) for a, b in zip(src.shape, t.shape))
                t[sl] = src[sl].to(t.dtype)
                _write_tensor(fd, t, state, o.name)
                del t, src
            else:  # pragma: no cover
                raise ExportError(f"{o.name}: unknown write kind {o.kind!r}")
        os.fsync(fd)
    finally:
        os.close(fd)
        for s in src_fds.values():
            os.close(s)
