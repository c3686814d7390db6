"""File input and output with the checks an inspection tool for untrusted files needs.

Reading: only regular files (a FIFO, a device or ``/dev/zero`` behind a link is refused before any byte is
read), at most a documented number of bytes, JSON with a nesting cap. Writing: atomic (temp file beside the
target, fsync, rename), and never over something that is not a regular file, never over an input.
The caps below are generous for real checkpoints; SECURITY.md lists them.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from .errors import ExplorerError
from .fmt import safe_text

MiB = 1 << 20
MAX_JSON_BYTES = 64 * MiB        #: config.json, plan files, adapter configs
MAX_INDEX_BYTES = 256 * MiB      #: a sharded checkpoint's *.index.json (the 46k-tensor MoE's is ~5 MB)
MAX_HEADER_BYTES = 100_000_000  #: a safetensors header: safetensors' own MAX_HEADER_SIZE (decimal bytes)
MAX_JSON_DEPTH = 64              #: nesting of any JSON document we parse (configs nest ~4 levels)
# torch zip checkpoints (``torch.load`` inflates a member into memory at its declared size, before unpickling):
MAX_PICKLE_BYTES = 256 * MiB     #: declared uncompressed size of a zip's data.pkl (a 100k-tensor one is ~20 MB)
MAX_ZIP_RATIO = 100              #: declared uncompressed / compressed size of any compressed member (torch.save
                                 #: stores members uncompressed; a deflate bomb of zeros reaches ~1000x)
LEGACY_MEMORY_SHARE = 0.5        #: a legacy (non-zip) pickle has no header and is read whole into memory: at most
                                 #: this share of the memory available when it is opened


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (Linux ``MemAvailable``), or None where it is unknown."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f.read(65536).splitlines():
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _fmt_size(n: int) -> str:
    return f"{n / MiB:.0f} MiB" if n >= MiB else f"{n} bytes"


#: the folder the files being read now came from, and the path the user named (see :func:`confined_to`)
_CONFINED: contextvars.ContextVar[tuple[Path, Path, Path | None] | None] = contextvars.ContextVar("confined", default=None)


@contextlib.contextmanager
def confined_to(folder: str | os.PathLike[str], named: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """While indexing a checkpoint (or an adapter) found in ``folder``: every file :func:`check_regular` admits —
    hence every one read — must lie inside ``folder`` once its links are followed (a shard, a rank file or
    ``.metadata`` linked to ``/etc/passwd`` or another user's folder is refused before a byte is read), or in the
    folder's Hugging Face cache blob store (every cache snapshot is made of links into it). ``named``: the path the
    user gave, read wherever it points (as ``cat`` would). Scopes nest: the inner folder rules."""
    root = Path(folder)
    token = _CONFINED.set((root, Path(os.path.realpath(root)), Path(named) if named is not None else None))
    try:
        yield
    finally:
        _CONFINED.reset(token)


def check_inside(path: str | os.PathLike[str], *, what: str = "file", error: type[ExplorerError] = ExplorerError) -> None:
    """Refuse ``path`` when a :func:`confined_to` scope is active and ``path`` (not the named one) leads outside its
    folder; one line naming the path and where it leads."""
    scope = _CONFINED.get()
    if scope is None:
        return
    root, real_root, named = scope
    p = Path(path)
    if named is not None and (p == named or os.path.abspath(p) == os.path.abspath(named)):
        return
    if _leads_inside(p, root, real_root):
        return
    real = os.path.realpath(p)
    raise error(f"{p}: {what} is a link to {safe_text(real)}, outside {safe_text(str(root))}; refusing to read it")


def check_regular(path: str | os.PathLike[str], *, what: str = "file",
                  error: type[ExplorerError] = ExplorerError, max_bytes: int | None = None) -> os.stat_result:
    """stat ``path`` (following links) and refuse anything but a regular file, or one over ``max_bytes``, or —
    inside a :func:`confined_to` scope — one that leads outside the scope's folder.

    Raises ``error`` with a one-line message naming the path. Returns the stat result."""
    p = Path(path)
    check_inside(p, what=what, error=error)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise error(f"{p}: no such file") from None
    except OSError as e:
        raise error(f"{p}: cannot read {what}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, socket or device)"
        raise error(f"{p}: expected a {what}, found {kind}")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{p}: {what} is {_fmt_size(st.st_size)}, over the {_fmt_size(max_bytes)} limit")
    return st


def open_regular(path: str | os.PathLike[str], *, what: str = "file",
                 error: type[ExplorerError] = ExplorerError) -> BinaryIO:
    """A regular file opened for binary reading: non-blocking open (a FIFO never hangs us), type checked on the
    open descriptor (the name may have been swapped after any earlier stat). Raises ``error`` naming the path."""
    p = Path(path)
    check_regular(p, what=what, error=error)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise error(f"{p}: cannot read {what}: {e.strerror or e}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{p}: expected a {what}, found not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: str | os.PathLike[str], *, max_bytes: int, what: str = "file",
                 error: type[ExplorerError] = ExplorerError) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``. Opened non-blocking, so a FIFO never hangs us,
    and checked again on the open descriptor (the name may have been swapped after the stat)."""
    p = Path(path)
    check_regular(p, what=what, error=error, max_bytes=max_bytes)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise error(f"{p}: cannot read {what}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{p}: expected a {what}, found not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise error(f"{p}: {what} grew past the {_fmt_size(max_bytes)} limit while being read")
    return data


def json_depth_ok(obj: Any, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """True when ``obj`` (parsed JSON) nests at most ``max_depth`` containers deep. Iterative: no recursion."""
    if not isinstance(obj, (dict, list)):
        return True
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > max_depth:
            return False
        # only containers are pushed: a 46k-entry index of strings costs one pass, not 46k stack entries
        stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o) if isinstance(v, (dict, list)))
    return True


def json_error_text(e: ValueError) -> str:
    """What ``json.loads`` objected to, for a one-line error: Python's digit limit is named without its hint
    (``sys.set_int_max_str_digits`` is the interpreter's setting, not something the user of a file can change)."""
    if "integer string conversion" in str(e):
        return f"an integer longer than {sys.get_int_max_str_digits()} digits"
    return str(e)[:200]


def parse_json(raw: bytes | str, *, source: str, what: str = "JSON", error: type[ExplorerError] = ExplorerError,
               max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that names ``source`` in its errors, refuses NaN/Infinity and nesting past ``max_depth``."""
    def _no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        obj = json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise error(f"{source}: invalid {what}: nested deeper than {max_depth} levels") from None
    except UnicodeDecodeError as e:
        raise error(f"{source}: invalid {what}: not UTF-8 text (byte {e.start})") from None
    except ValueError as e:
        raise error(f"{source}: invalid {what}: {json_error_text(e)}") from None
    if not json_depth_ok(obj, max_depth):
        raise error(f"{source}: invalid {what}: nested deeper than {max_depth} levels")
    return obj


def load_json(path: str | os.PathLike[str], *, max_bytes: int = MAX_JSON_BYTES, what: str = "JSON file",
              error: type[ExplorerError] = ExplorerError, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Read a bounded regular file and parse it with :func:`parse_json`."""
    raw = read_bounded(path, max_bytes=max_bytes, what=what, error=error)
    return parse_json(raw, source=str(path), what=what, error=error, max_depth=max_depth)


def cache_root() -> Path:
    """Where the program caches things (reports, Hub headers and configs, the demo): ``$CKPT_EXPLORER_CACHE``, else
    ``$XDG_CACHE_HOME/ckpt-explorer`` (an absolute one, as the XDG spec says), else ``~/.cache/ckpt-explorer``."""
    env = os.environ.get("CKPT_EXPLORER_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "ckpt-explorer"
    return Path.home() / ".cache" / "ckpt-explorer"


def hf_blob_store(folder: Path) -> Path | None:
    """The Hugging Face cache blob store of the repo a snapshot folder belongs to
    (``.../models--org--name/snapshots/<sha>[/sub]`` -> ``.../models--org--name/blobs``), else None."""
    for a in (folder, *folder.parents):
        if a.parent.name == "snapshots" and a.parent.parent.name.startswith("models--"):
            return a.parent.parent / "blobs"
    return None


def link_stays_inside(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """False when ``path`` is a symbolic link whose target leaves ``folder`` (other than into the folder's Hugging
    Face cache blob store, where every cache snapshot links its files). Not a link: True."""
    p = Path(path)
    return not p.is_symlink() or _leads_inside(p, Path(folder))


def _leads_inside(path: Path, folder: Path, real_folder: Path | None = None) -> bool:
    """Whether ``path``, its links followed, lies inside ``folder`` (``real_folder``: its real path, if known) or
    in the folder's Hugging Face cache blob store."""
    real = Path(os.path.realpath(path))
    real_folder = real_folder or Path(os.path.realpath(folder))
    if real.is_relative_to(real_folder):
        return True
    for snapshot in (real_folder, Path(os.path.abspath(folder))):  # the folder as found, or as named
        blobs = hf_blob_store(snapshot)
        if blobs is not None and real.parent == Path(os.path.realpath(blobs)):
            return True
    return False


# --------------------------------------------------------------------------------------------- output


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def check_output(path: str | os.PathLike[str], *, inputs: Iterable[str | os.PathLike[str]] = (),
                 is_ours: Callable[[Path], bool] | None = None, force: bool = False, what: str = "output",
                 error: type[ExplorerError] = ExplorerError) -> Path:
    """Refuse to write ``path`` when it exists and is not a regular file, is (a link to) one of ``inputs``,
    or — unless ``force`` — is not a file this command writes (``is_ours(path)`` false, e.g. not a PNG).

    Returns the path. Raises ``error`` naming the path and the reason."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise error(f"{p}: cannot write {what}: {e.strerror or e}") from None
    if st is None:
        if os.path.lexists(p):  # a dangling link: renaming over it is harmless, but say nothing was there
            return p
        if not p.parent.is_dir():
            raise error(f"{p}: cannot write {what}: folder {p.parent} does not exist")
        return p
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{p}: is a folder; give a file name for the {what}")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{p}: refusing to write the {what} over something that is not a regular file (a FIFO, socket or device)")
    for i in inputs:
        try:
            if _same_file(st, os.stat(i)):
                raise error(f"{p}: refusing to write the {what} over an input of this command ({i})")
        except FileNotFoundError:
            continue
    if not force and is_ours is not None and st.st_size > 0 and not is_ours(p):
        raise error(f"{p}: exists and is not a {what} this command wrote; refusing to replace it (--force to overwrite)")
    return p


def umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temp path beside ``path`` for any writer (bytes, ``QPixmap.save``, ...); on success it is fsynced
    and renamed over ``path`` (normal permissions), on any error removed. Refuses (OSError) to replace anything
    but a regular file, whatever the caller checked before."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=suffix)
    try:
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes 0600; give the file normal permissions
        os.close(fd)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)  # errors here (a full disk on NFS, EIO) must fail the write
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            st = None
        if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            raise IsADirectoryError(0, "refusing to replace something that is not a regular file", str(p))
        if st is not None and stat.S_ISLNK(st.st_mode):
            try:
                tst = os.stat(p)
            except FileNotFoundError:
                tst = None
            if tst is not None and not stat.S_ISREG(tst.st_mode):
                raise IsADirectoryError(0, "refusing to replace a link to something that is not a regular file", str(p))
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_path(p.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync, rename. Raises OSError."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_all(fd: int, buf: Any) -> None:
    """Write every byte of ``buf`` (any buffer) to ``fd``, however many ``os.write`` calls that takes."""
    mv = memoryview(buf).cast("B")
    while mv:
        n = os.write(fd, mv)
        mv = mv[n:]


def fsync_path(d: str | os.PathLike[str]) -> None:
    """fsync a file or folder by path (a folder's fsync makes renames inside it durable); best effort."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_SYNC_FILE_RANGE: Any = None  # libc's sync_file_range (Linux), False where there is none


#: bytes handed to the disk between two ``fdatasync`` calls of the :class:`Writeback` thread
FLUSH_EVERY = 64 << 20


class Writeback:
    """:func:`start_writeback` off the caller's threads: ranges handed to :meth:`submit` are passed to the kernel one
    after the other by one background thread, so a worker that has just written a big tensor goes on at once
    (``sync_file_range`` blocks while it queues the I/O of a 100 MB range: 0.1 s here, with both export workers
    stalled on it). Every ``FLUSH_EVERY`` bytes of a descriptor that thread also ``fdatasync``s it: a virtual disk
    holds written data in its host's cache until a flush, and the one final ``fsync`` of a 640 MB export then took
    0.3-0.9 s with the workers done (0.03-0.09 s with the flushes spread over the run). A flush that fails is kept
    and raised by :meth:`close` (the kernel reports a write error to one ``fsync`` only: the final one would pass).
    :meth:`close` waits until every range submitted was passed on (before the descriptor's fsync and close). A
    context manager."""

    def __init__(self) -> None:
        import queue
        import threading

        self._q: Any = queue.SimpleQueue()
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="ckpt-writeback", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        unflushed: dict[int, int] = {}
        while True:
            job = self._q.get()
            if job is None:
                return
            fd, _offset, nbytes = job
            try:
                start_writeback(*job)
            except Exception:  # noqa: BLE001 - an advice: never an error
                pass
            unflushed[fd] = unflushed.get(fd, 0) + nbytes
            if FLUSH_EVERY and unflushed[fd] >= FLUSH_EVERY and self._error is None:
                unflushed[fd] = 0
                try:
                    getattr(os, "fdatasync", os.fsync)(fd)  # macOS has no fdatasync
                except OSError as e:
                    self._error = e

    def submit(self, fd: int, offset: int, nbytes: int) -> None:
        if nbytes > 0:
            self._q.put((fd, offset, nbytes))

    def close(self, *, check: bool = True) -> None:
        """Wait for the thread; then raise the OSError of a failed flush (``check``: the caller is about to call
        the file done)."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        if check and self._error is not None:
            raise self._error

    def __enter__(self) -> Writeback:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(check=exc[0] is None)


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start writing ``nbytes`` at ``offset`` of ``fd`` to disk now, without waiting
    (``sync_file_range(SYNC_FILE_RANGE_WRITE)`` on Linux; nothing elsewhere): the final ``fsync`` of a big output
    then waits only for the tail instead of the whole file. Never an error (an advice)."""
    global _SYNC_FILE_RANGE
    if _SYNC_FILE_RANGE is None:
        _SYNC_FILE_RANGE = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                libc = ctypes.CDLL(None, use_errno=True)
                f = libc.sync_file_range
                f.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
                f.restype = ctypes.c_int
                _SYNC_FILE_RANGE = f
            except (OSError, AttributeError):
                pass
    if _SYNC_FILE_RANGE and nbytes > 0:
        _SYNC_FILE_RANGE(fd, offset, nbytes, 2)  # SYNC_FILE_RANGE_WRITE
