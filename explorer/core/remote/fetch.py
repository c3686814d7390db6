"""Bounded byte-range reads of one remote file, whatever library does the HTTP: the checks every response gets
(206 with the asked range, a server ignoring Range, truncation, a file that changed), the two-request header fetch,
and the timeout setting. :mod:`.hub` (huggingface_hub's session) and :mod:`.urls` (fsspec's HTTP filesystem) each
provide :meth:`RemoteFile._fetch`; nothing here opens a connection itself."""
from __future__ import annotations

import os
import re
import struct
import threading
from typing import Any, Callable, Iterator, Mapping

from ..errors import CheckpointError
from ..fmt import human_bytes

#: first request per shard: the 8-byte length and the header when it fits (97% of Hub headers are under 100 kB)
HEAD_BYTES = 100_000
#: the most a server ignoring Range may send us before we stop (we read only the prefix we asked for)
MAX_SKIP = 64 << 20
#: one request of a tensor's values: streamed reads are split into requests of at most this many bytes
VALUE_REQUEST_BYTES = 16 << 20
DEFAULT_TIMEOUT = 10.0

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def timeout() -> float:
    """Seconds to wait for a connection or for data (``CKPT_EXPLORER_TIMEOUT``, default 10): every request is bounded."""
    raw = os.environ.get("CKPT_EXPLORER_TIMEOUT", "")
    try:
        t = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        t = DEFAULT_TIMEOUT
    return t if 0 < t <= 3600 else DEFAULT_TIMEOUT


class Transfer:
    """Requests made and body bytes received, shared by the files of one source (thread-safe)."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.ignored_range = False
        self._lock = threading.Lock()

    def add(self, requests: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.bytes += nbytes

    def summary(self) -> str:
        return f"{self.requests} request(s), {human_bytes(self.bytes)} transferred"


class RemoteFile:
    """One remote file: ``label`` (shown, never a token), ``size`` (bytes, None until known) and ``etag``.
    Subclasses implement :meth:`_fetch`; ``hub``: errors say how to log in to the Hub."""

    hub = True

    def __init__(self, label: str, size: int | None = None, etag: str | None = None, transfer: Transfer | None = None) -> None:
        self.label, self.size, self.etag = label, size, etag
        self.transfer = transfer or Transfer()

    def _fetch(self, start: int, end: int, take: Callable[[int, Mapping[str, str]], int], sink: Callable[[bytes], bool]) -> None:
        """GET bytes [start, end) with a Range header. Call ``take(status, headers)`` once with the response
        (returns how many leading body bytes to discard), then ``sink(chunk)`` per body chunk until it returns
        False (then close the response: nothing more is read). Library errors become CheckpointError naming
        ``label`` (see :func:`network_error`)."""
        raise NotImplementedError

    def read(self, start: int, end: int, *, max_skip: int = 0) -> bytes:
        """Bytes [start, end) of the file, exactly (CheckpointError otherwise). A server answering 200 (ignoring
        Range) is read only up to ``end``, and only when ``start <= max_skip``: never the whole file."""
        if end - start <= 0:
            return b""
        parts: list[bytes] = []
        state = {"skip": 0, "got": 0, "want": end - start}
        size_known = self.size is not None

        def take(status: int, headers: Mapping[str, str]) -> int:
            state["skip"] = self._check_response(status, headers, start, end, max_skip)
            if not size_known and self.size is not None:  # a listing without sizes: the response told us
                state["want"] = max(0, min(end, self.size) - start)
            return state["skip"]

        def sink(chunk: bytes) -> bool:
            self.transfer.add(nbytes=len(chunk))
            skip = state["skip"]
            if skip:
                cut = min(skip, len(chunk))
                chunk, state["skip"] = chunk[cut:], skip - cut
            if chunk:
                room = state["want"] - state["got"]
                parts.append(chunk[:room])
                state["got"] += min(room, len(chunk))
            return state["got"] < state["want"]

        self._fetch(start, end, take, sink)
        self.transfer.add(requests=1)
        if state["got"] < state["want"]:
            raise CheckpointError(
                f"{self.label}: truncated response: received {state['got']} of the {state['want']} bytes asked for "
                f"(bytes {start}..{start + state['want'] - 1}); the connection ended early"
            )
        return b"".join(parts)

    def _check_response(self, status: int, headers: Mapping[str, str], start: int, end: int, max_skip: int) -> int:
        if status == 206:
            m = _CONTENT_RANGE.fullmatch((headers.get("content-range") or "").strip())
            total = None if m is None or m.group(3) == "*" else int(m.group(3))
            known = total if total is not None else self.size
            if m is None or int(m.group(1)) != start or int(m.group(2)) < min(end, known or end) - 1:
                raise CheckpointError(
                    f"{self.label}: the server answered bytes {headers.get('content-range')!r} to a request for "
                    f"{start}..{end - 1}"
                )
            self._check_size(total)
            return 0
        if status == 200:
            self.transfer.ignored_range = True
            cl = headers.get("content-length")
            self._check_size(int(cl) if cl and cl.isdigit() else None)
            if start > max_skip:
                raise CheckpointError(
                    f"{self.label}: the server ignores Range requests (it answered 200 with the whole "
                    f"{human_bytes(self.size) if self.size else 'file'}); reading bytes {start}..{end - 1} would mean "
                    "downloading everything before them: download the file and open it locally"
                )
            return start
        if status == 416:
            raise CheckpointError(f"{self.label}: the server has no bytes {start}..{end - 1} (416): the file is shorter than its listing says")
        raise status_error(self.label, status, headers, hub=self.hub)

    def _check_size(self, total: int | None) -> None:
        if total is None:
            return
        if self.size is None:
            self.size = total
        elif total != self.size:
            raise CheckpointError(
                f"{self.label}: the server's file is {total} bytes, its listing said {self.size}: it changed; open it again"
            )

    def read_header(self, max_header: int) -> bytes:
        """The 8-byte length and the safetensors header: one Range request of ``HEAD_BYTES``, a second for the
        rest when the header is longer. The length is checked against the cap and the file size before asking."""
        size = self.size
        first_end = HEAD_BYTES if size is None else min(HEAD_BYTES, size)
        if size is not None and size < 8:
            raise CheckpointError(f"{self.label}: truncated safetensors file: {size} bytes, expected at least an 8-byte header length")
        first = self.read(0, first_end, max_skip=0) if first_end > 0 else b""
        size = self.size
        if len(first) < 8:
            raise CheckpointError(f"{self.label}: truncated safetensors file: {len(first)} bytes, expected at least an 8-byte header length")
        (n,) = struct.unpack("<Q", first[:8])
        if size is not None and n > size - 8:
            raise CheckpointError(f"{self.label}: safetensors header length {n} is larger than the file ({size} bytes): not a safetensors file?")
        if n > max_header:
            raise CheckpointError(f"{self.label}: safetensors header length {n} exceeds safetensors' limit of {max_header} bytes")
        if 8 + n <= len(first):
            return first[: 8 + n]
        return first + self.read(len(first), 8 + n, max_skip=MAX_SKIP)

    def iter_range(self, start: int, end: int, *, request_bytes: int = VALUE_REQUEST_BYTES) -> Iterator[bytes]:
        """Bytes [start, end) in requests of at most ``request_bytes`` (a consumer stops between them)."""
        pos = start
        while pos < end:
            stop = min(end, pos + request_bytes)
            yield self.read(pos, stop)
            pos = stop


_HELP_LOGIN = "log in with `hf auth login` or set HF_TOKEN"


def status_error(label: str, status: int, headers: Mapping[str, str], *, hub: bool = True) -> CheckpointError:
    """A one-line error for an HTTP error status (X-Error-Code as the Hub sends it), never quoting a token."""
    code = headers.get("x-error-code") or ""
    if not hub and status in (401, 403):
        return CheckpointError(f"{label}: access denied ({status}): the server wants credentials (none are sent to plain URLs)")
    if code == "GatedRepo" or status in (401, 403):
        what = "gated" if code == "GatedRepo" else "private or gated"
        return CheckpointError(f"{label}: access denied ({status}): the repo is {what} or your token lacks access; {_HELP_LOGIN}")
    if status == 404:
        what = {"RepoNotFound": "no such repo", "RevisionNotFound": "no such revision",
                "EntryNotFound": "no such file in the repo"}.get(code, "not found")
        return CheckpointError(f"{label}: {what} (404)")
    if status == 429:
        return CheckpointError(f"{label}: the server is rate limiting requests (429); try again later")
    return CheckpointError(f"{label}: the server answered HTTP {status}")


def network_error(label: str, e: BaseException) -> CheckpointError:
    """A one-line error for a failed connection or transfer (timeout, refused, reset, incomplete body)."""
    name = type(e).__name__
    text = str(e).splitlines()[0][:200] if str(e) else ""
    low = f"{name} {text}".lower()
    if "timeout" in low or "timed out" in low:
        why = f"timed out after {timeout():g} s (set CKPT_EXPLORER_TIMEOUT to wait longer)"
    elif "refused" in low or "connecterror" in low or "cannot connect" in low or "name or service" in low:
        why = "cannot connect to the server"
    elif "reset" in low or "disconnected" in low or "closed" in low or "incomplete" in low or "payload" in low:
        why = "the connection was closed before the response was complete (truncated)"
    else:
        why = f"network error ({name})"
    return CheckpointError(f"{label}: {why}")


def is_network_failure(e: BaseException) -> bool:
    """True for errors meaning "the server cannot be reached" (a reason to use the cache), not an HTTP status."""
    mod = type(e).__module__ or ""
    name = type(e).__name__
    if isinstance(e, (ConnectionError, TimeoutError)):
        return True
    return mod.startswith(("httpx", "aiohttp")) and any(w in name for w in ("Connect", "Timeout", "Network"))


def header_note(transfer: Transfer, files: int) -> str:
    extra = "; the server ignored Range requests, only the header bytes were read" if transfer.ignored_range else ""
    return f"header-only over HTTP: {files} file(s), {transfer.summary()}{extra}"


def headers_lower(h: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in dict(h).items()}
