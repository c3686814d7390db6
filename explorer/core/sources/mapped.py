"""Rank files mapped read-only (private, never written), one mapping per file, whose pages a streaming reader drops
once it has used a range: a conversion's RSS stays about one piece, not the whole checkpoint. Used by the chunked
readers (DCP, DeepSpeed ZeRO)."""
from __future__ import annotations

import mmap
import os

from ..errors import CheckpointError


class MappedFiles:
    def __init__(self, what: str = "rank file") -> None:
        self.what = what
        self._maps: dict[str, mmap.mmap] = {}

    def map(self, file: str) -> mmap.mmap:
        m = self._maps.get(file)
        if m is None:
            with open(file, "rb") as f:
                if os.fstat(f.fileno()).st_size == 0:
                    raise CheckpointError(f"{file}: empty {self.what}")
                # ACCESS_COPY: a writable private view (torch.frombuffer wants one); the file is never modified
                m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            self._maps[file] = m
        return m

    def size_now(self, file: str) -> int:
        """The bytes safely readable through the mapping now: the file's size, not the mapping's (a rank file
        truncated after it was mapped would be a SIGBUS past its end)."""
        m = self.map(file)
        try:
            return min(len(m), os.stat(file).st_size)
        except OSError:
            return 0

    def release(self, file: str, offset: int, length: int) -> None:
        """Drop the pages of ``[offset, offset + length)`` from this process (a later read faults them in again)."""
        m = self._maps.get(file)
        if m is None or not hasattr(m, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = offset - offset % mmap.PAGESIZE
        end = min(len(m), offset + length)
        end -= (end % mmap.PAGESIZE) if end < len(m) else 0
        if end > start:
            try:
                m.madvise(mmap.MADV_DONTNEED, start, end - start)
            except OSError:
                pass

    def close(self) -> None:
        for m in self._maps.values():
            try:
                m.close()
            except BufferError:  # a view is still alive; the map is freed with it
                pass
        self._maps.clear()
