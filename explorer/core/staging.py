"""The output folder of an export or a conversion: refused unless new or empty and writable (:func:`check_target`);
written into a hidden staging folder beside it (:func:`staged`: removed on any error or cancel, renamed into
place at the end, so there is never a half checkpoint; folders left by killed runs are recognised by their
marker and removed); the tokenizer/processor files beside the source copied as they are (:func:`copy_companions`).
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import ExplorerError, ExportError
from .fmt import human_bytes, safe_text
from .fsio import atomic_write_bytes, check_output, fsync_path, link_stays_inside, load_json, umask, write_all


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


@contextmanager
def staged(out: Path, notes: list[str]) -> Iterator[Path]:
    """A fresh staging folder beside ``out`` (stale ones of killed runs removed first, noted), renamed to ``out``
    when the block ends; on any error or cancel it is removed and nothing is left behind (an OSError becomes a
    one-line ExportError naming ``out``)."""
    staging = make_staging(out, notes)
    try:
        yield staging
        finish_staging(staging, out)
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, ExplorerError):
            raise
        if isinstance(e, OSError):
            hint = " (is it a mount point?)" if e.errno == errno.EBUSY else ""
            raise ExportError(f"{out}: write failed: {e.strerror or e}{hint}; nothing was written") from e
        raise


def shard_names(n: int) -> list[str]:
    """The weight file names of ``n`` shards, as save_pretrained names them."""
    return ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


def write_shard_index(staging: Path, metadata: dict[str, Any], weight_map: dict[str, str]) -> str:
    """Write the staged ``model.safetensors.index.json``; returns its name."""
    name = "model.safetensors.index.json"
    atomic_write_bytes(staging / name, json.dumps({"metadata": metadata, "weight_map": weight_map}, indent=2).encode() + b"\n")
    return name


def write_config(staging: Path, cfg: dict[str, Any], dtype: str | None) -> str:
    """Write ``cfg`` as the staged config.json, its ``dtype`` set to the cast one (``torch_dtype`` dropped)."""
    if dtype:
        cfg["dtype"] = dtype
        cfg.pop("torch_dtype", None)
    atomic_write_bytes(staging / "config.json", json.dumps(cfg, indent=2, sort_keys=True).encode() + b"\n")
    return "config.json"  # the name written


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
        write_all(fd, json.dumps(me).encode())
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
                write_all(out, chunk)
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


def weights_mode(sources: Iterable[str]) -> int:
    """The permissions of a written weights file: the usual ``0o666`` less the umask, less any group / other bit
    that a source weights file lacks (a private ``0600`` checkpoint stays private once exported); the owner's read
    and write are kept."""
    mode = 0o666 & ~umask()
    for f in sources:
        try:
            mode &= stat.S_IMODE(os.stat(f).st_mode) | 0o600
        except (OSError, ValueError):  # not a local file (a Hub source): nothing to follow
            pass
    return mode
