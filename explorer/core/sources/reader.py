"""Reading tensor data: :class:`TensorReader` reads one tensor (or streams it in chunks) from an index, never the
whole checkpoint. safetensors tensors by offset (pread, or a mmap for big ones), torch pickles through
``torch.load(weights_only=True, mmap=True)``, and chunked formats (DCP, anything with an ``index.layout``) through
the layout's own reader.
"""
from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, NoReturn

from ..errors import CheckpointError
from ..fsio import open_regular
from .index import CheckpointIndex, TensorInfo, quoted, torch_dtype
from .torch_pickle import check_legacy_size, choose_state_dict, torch_load

if TYPE_CHECKING:
    import torch

SMALL_COPY_BYTES = 64 << 20  #: a safetensors tensor up to this size is read into memory, larger ones are mmapped


class TensorReader:
    """Reads single tensors lazily, never the whole checkpoint. Keep one per index and reuse it.

    Every read first checks the file against the index (size and mtime when it was opened, and that it still
    holds the tensor's bytes): a file changed or truncated on disk is a CheckpointError, never a SIGBUS from a
    mapping past the end of the file. Streamed reads (:meth:`iter_chunks`: statistics, diff, export) use
    ``pread`` and re-check on a short read, so even a truncation *during* a read is an error (the statistics' C
    passes pread a tensor themselves through :meth:`direct`, and report a short read through :meth:`read_failed`,
    the same way). Whole-tensor views
    (:meth:`flat`, :meth:`tensor`) of safetensors tensors up to ``SMALL_COPY_BYTES`` are read the same way; larger
    ones, and torch zip tensors, are memory-mapped after the check (a truncation while such a view is in use is
    the one case the check cannot cover)."""

    def __init__(self, index: CheckpointIndex) -> None:
        self.index = index
        self._maps: dict[str, mmap.mmap] = {}
        self._fds: dict[str, int] = {}
        self._torch_files: dict[str, dict[str, Any]] = {}
        self._chunked = index.layout.reader() if index.layout is not None else None

    def close(self) -> None:
        if self._chunked is not None:
            self._chunked.close()
        for m in self._maps.values():
            try:
                m.close()
            except BufferError:  # a view is still alive; the map is freed with it
                pass
        self._maps.clear()
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        self._torch_files.clear()

    def forget_loaded(self) -> None:
        """Drop the torch files loaded so far (their tensors are mappings of the file that was at the path then, with
        no descriptor :meth:`check_file` could compare): the next read loads the file now at the path, checked
        first. For a reader kept open between passes (cluster workers); descriptors and safetensors maps stay."""
        self._torch_files.clear()

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_file(self, file: str, *, need: int = 0) -> None:
        """Raise CheckpointError when ``file`` changed on disk since it was indexed, or holds fewer than ``need``
        bytes (a truncated file would be a SIGBUS through a mapping)."""
        try:
            st = os.fstat(self._fds[file]) if file in self._fds else os.stat(file)
            now = os.stat(file)
        except OSError as e:
            raise CheckpointError(f"{file}: cannot read: {e.strerror or e} (changed on disk since it was opened?)") from None
        stamp = self.index.stamps.get(file)
        if stamp is not None and ((st.st_size, st.st_mtime_ns) != stamp or (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev)):
            raise CheckpointError(
                f"{file}: changed on disk since it was opened (now {st.st_size} bytes, was {stamp[0]}); open it again"
            )
        if st.st_size < need:
            raise CheckpointError(
                f"{file}: changed on disk since it was opened: {st.st_size} bytes, the tensor needs {need}; open it again"
            )

    def _fd(self, file: str) -> int:
        fd = self._fds.get(file)
        if fd is None:
            with open_regular(file, what="checkpoint file", error=CheckpointError) as f:
                fd = os.dup(f.fileno())
            self._fds[file] = fd
        return fd

    def checked_fd(self, file: str, *, need: int = 0) -> int:
        """This reader's descriptor of ``file`` (a regular file, opened non-blocking), checked against the index
        first (:meth:`check_file`): for a caller that copies bytes by offset itself (export's kernel copies)."""
        fd = self._fd(file)
        self.check_file(file, need=need)
        return fd

    def _map(self, file: str, need: int) -> mmap.mmap:
        self._fd(file)
        self.check_file(file, need=need)
        m = self._maps.get(file)
        if m is None:
            # ACCESS_COPY: writable private view (torch.frombuffer wants one); the file is never modified
            m = mmap.mmap(self._fds[file], 0, access=mmap.ACCESS_COPY)
            self._maps[file] = m
        if len(m) < need:
            raise CheckpointError(f"{file}: changed on disk since it was opened: {len(m)} bytes mapped, the tensor needs {need}")
        return m

    def _pread(self, info: TensorInfo, start: int, nbytes: int, buf: torch.Tensor | None = None) -> torch.Tensor:
        """``nbytes`` bytes of ``info``'s data from byte ``start`` of it, as a uint8 tensor: ``buf`` (a contiguous
        uint8 tensor of ``nbytes``, reused by the caller) or a fresh one."""
        import torch

        assert info.offset is not None
        fd = self._fd(info.file)
        self.check_file(info.file, need=info.offset + info.nbytes)
        if buf is None:
            buf = torch.empty(nbytes, dtype=torch.uint8)
        view = memoryview(buf.numpy())
        got = 0
        failed: OSError | None = None
        try:
            while got < nbytes:
                n = os.preadv(fd, [view[got:]], info.offset + start + got)
                if n == 0:
                    break
                got += n
        except OSError as e:
            failed = e
        if failed is not None:
            self.read_failed(info.name, failed)
        if got < nbytes:
            self.read_failed(info.name)
        return buf

    def direct(self, name: str) -> tuple[int, int, str] | None:
        """(descriptor, byte offset of element 0, dtype name) of a tensor stored by offset in a regular file (safetensors), for a
        kernel that reads it with ``pread`` itself; the file checked against the index first (:meth:`check_file`).
        None where reads go through :meth:`iter_range` (other formats, empty or unreadable tensors). A failed or
        short read is then reported with :meth:`read_failed`."""
        if not self.splittable(name):
            return None
        info = self._info(name)
        if not info.numel or info.dtype == "float4_e2m1fn_x2":
            return None
        assert info.offset is not None
        return self.checked_fd(info.file, need=info.offset + info.nbytes), info.offset, info.dtype

    def read_failed(self, name: str, error: OSError | None = None) -> NoReturn:
        """Raise the CheckpointError of a failed read of ``name`` (``error``: what the read raised; None: the file
        ended early): "changed on disk" when the file no longer matches the index, else the read error."""
        info = self._info(name)
        self.check_file(info.file, need=(info.offset or 0) + info.nbytes)
        if error is not None:
            raise CheckpointError(f"{info.file}: cannot read tensor {quoted(name)}: {error.strerror or error}")
        raise CheckpointError(f"{info.file}: changed on disk since it was opened: tensor {quoted(name)} ends early")

    def _readable(self, info: TensorInfo) -> torch.dtype:
        if info.dtype == "float4_e2m1fn_x2":
            raise CheckpointError(f"{info.file}: tensor {quoted(info.name)}: packed float4 data cannot be read as numbers")
        return torch_dtype(info.dtype)

    def flat(self, name: str) -> torch.Tensor:
        """The tensor as a flat tensor: read into memory (safetensors up to ``SMALL_COPY_BYTES``) or a mmap view."""
        import torch

        info = self._info(name)
        if info.offset is not None:
            if info.numel == 0:
                return torch.empty(0, dtype=torch_dtype(info.dtype))
            dt = self._readable(info)
            if info.nbytes <= SMALL_COPY_BYTES:
                return self._pread(info, 0, info.nbytes).view(dt)
            m = self._map(info.file, info.offset + info.nbytes)
            return torch.frombuffer(m, dtype=dt, count=info.numel, offset=info.offset)
        return self.tensor(name).reshape(-1)

    def owned(self, name: str) -> torch.Tensor:
        """The tensor with its shape in fresh memory the caller owns and may change (a safetensors tensor read with
        ``pread`` whatever its size: no mmap view to copy out of; other formats: a copy of :meth:`tensor`)."""
        import torch

        info = self._info(name)
        if info.offset is not None and info.numel and info.dtype != "float4_e2m1fn_x2":
            return self._pread(info, 0, info.nbytes).view(self._readable(info)).reshape(info.shape)
        return self.tensor(name).clone()

    def tensor(self, name: str) -> torch.Tensor:
        """The tensor with its shape (see :meth:`flat` for how its data are read)."""
        info = self._info(name)
        if info.offset is not None:
            return self.flat(name).reshape(info.shape)
        if self._chunked is not None:
            return self._chunked.tensor(name)
        self.check_file(info.file)
        loaded = self._torch_files.get(info.file)
        if loaded is None:
            legacy = self.index.format == "torch-legacy"
            if legacy:
                check_legacy_size(Path(info.file))
            obj = torch_load(Path(info.file), map_location="cpu", mmap=not legacy)
            loaded, _, _ = choose_state_dict(obj, Path(info.file), self.index.wrapper_key)
            self._torch_files[info.file] = loaded
        try:
            return loaded[name]
        except KeyError:
            raise CheckpointError(f"{info.file}: changed on disk since it was opened: no tensor {quoted(name)} now") from None

    def release(self, name: str) -> None:
        """Drop this process's memory-mapped pages of ``name`` (a safetensors tensor over ``SMALL_COPY_BYTES`` read
        through :meth:`flat`): a scan over many big tensors (the init check of a 70B) then holds about one tensor's
        pages, not every page it ever touched. A view of ``name`` stays valid: its pages are read again on access."""
        info = self.index.tensors.get(name)
        m = self._maps.get(info.file) if info is not None and info.offset is not None else None
        if m is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = info.offset // mmap.PAGESIZE * mmap.PAGESIZE
        end = min(len(m), info.offset + info.nbytes)
        if end > start:
            try:  # the map is private and never written: dropped pages come back from the file unchanged
                m.madvise(mmap.MADV_DONTNEED, start, end - start)
            except (OSError, ValueError):
                pass

    def info(self, name: str) -> TensorInfo:
        """The header record of tensor ``name``; CheckpointError naming the checkpoint if it has none."""
        return self._info(name)

    def _info(self, name: str) -> TensorInfo:
        try:
            return self.index.tensors[name]
        except KeyError:
            raise CheckpointError(f"{self.index.path}: no tensor named {name!r}") from None

    def iter_chunks(self, name: str, *, chunk_elems: int = 1 << 24) -> Iterator[torch.Tensor]:
        """Flat chunks of a tensor, so huge tensors are streamed instead of copied whole. Safetensors chunks are
        read with ``pread`` into fresh buffers (the consumer may keep them)."""
        if self._chunked is not None:
            self._info(name)
            yield from self._chunked.iter_flat(name, chunk_elems=chunk_elems)
            return
        info = self._info(name)
        if info.offset is None or info.numel == 0:
            flat = self.flat(name)
            for start in range(0, flat.numel(), chunk_elems):
                yield flat[start : start + chunk_elems]
            return
        dt = self._readable(info)
        item = dt.itemsize
        for start in range(0, info.numel, chunk_elems):
            n = min(chunk_elems, info.numel - start)
            yield self._pread(info, start * item, n * item).view(dt)

    def iter_range(self, name: str, start: int, stop: int, *, chunk_elems: int = 1 << 24,
                   out: Callable[[int], torch.Tensor] | None = None) -> Iterator[torch.Tensor]:
        """Flat chunks of elements ``[start, stop)`` of a tensor (the work items of :mod:`explorer.core.parallel`).
        ``out(nbytes)`` hands a reusable uint8 buffer of at least ``nbytes`` to read a safetensors chunk into (the
        chunk is then valid until the next one is read); other formats stream through :meth:`iter_chunks` and skip
        to ``start``."""
        info = self.info(name)
        if not 0 <= start <= stop <= info.numel:
            raise CheckpointError(f"{info.file}: tensor {quoted(name)}: elements {start}..{stop} are outside its {info.numel}")
        if self._chunked is None and info.offset is not None and info.numel and type(self).iter_chunks is TensorReader.iter_chunks:
            dt = self._readable(info)
            item = dt.itemsize
            for s in range(start, stop, chunk_elems):
                n = min(chunk_elems, stop - s)
                buf = out(n * item)[: n * item] if out is not None else None
                yield self._pread(info, s * item, n * item, buf).view(dt)
            return
        pos = 0
        for c in self.iter_chunks(name, chunk_elems=chunk_elems):
            k = c.numel()
            lo, hi = max(start - pos, 0), min(stop - pos, k)
            if hi > lo:
                yield c[lo:hi]
            pos += k
            if pos >= stop:
                break

    def splittable(self, name: str) -> bool:
        """Whether a range of ``name`` is read without reading what comes before it (safetensors by offset)."""
        info = self.index.tensors.get(name)
        return (self._chunked is None and info is not None and info.offset is not None
                and type(self).iter_chunks is TensorReader.iter_chunks)
