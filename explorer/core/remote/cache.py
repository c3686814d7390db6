"""The on-disk cache of fetched headers, Hub listings and revision -> commit refs, so reopening a remote
checkpoint is instant and works offline.

Root: ``CKPT_EXPLORER_CACHE``, else ``$XDG_CACHE_HOME/ckpt-explorer``, else ``~/.cache/ckpt-explorer``. Every entry
is one file named by the SHA-256 of its key (``headers/``: repo or URL, commit sha, file, ETag; ``listings/``: repo,
sha; ``refs/``: repo, revision), so nothing a server sends chooses a path: the cache never writes outside its root.
An entry holds its key, which is compared on reading; what it holds is still untrusted data, parsed with the same
caps as a fresh download. Writes are atomic; a cache that cannot be written is skipped, never an error.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

from ..fsio import MAX_JSON_BYTES, atomic_write_bytes, cache_root

_MAGIC = b"CKXH1\n"


def _path(kind: str, key: tuple[str, ...]) -> Path:
    digest = hashlib.sha256("\0".join((kind, *key)).encode("utf-8", "surrogatepass")).hexdigest()
    return cache_root() / kind / digest[:2] / digest


def _write(kind: str, key: tuple[str, ...], meta: dict[str, Any], payload: bytes = b"") -> None:
    p = _path(kind, key)
    blob = json.dumps({"key": list(key), **meta}).encode()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(p, _MAGIC + struct.pack("<Q", len(blob)) + blob + payload)
    except OSError:
        pass  # a read-only or full cache: the next open fetches again


def _read(kind: str, key: tuple[str, ...], *, max_payload: int) -> tuple[dict[str, Any], bytes] | None:
    p = _path(kind, key)
    try:
        with open(p, "rb") as f:
            if not os.path.isfile(p) or os.fstat(f.fileno()).st_size > len(_MAGIC) + 8 + MAX_JSON_BYTES + max_payload:
                return None
            if f.read(len(_MAGIC)) != _MAGIC:
                return None
            (n,) = struct.unpack("<Q", f.read(8))
            if n > MAX_JSON_BYTES:
                return None
            meta = json.loads(f.read(n))
            payload = f.read(max_payload + 1)
    except (OSError, ValueError, struct.error):
        return None
    if not isinstance(meta, dict) or meta.get("key") != list(key) or len(payload) > max_payload:
        return None
    return meta, payload


# -- safetensors headers: (source, sha, file) -> the 8-byte length + header, with the file's size and ETag


def get_header(source: str, sha: str, file: str, *, max_header: int) -> tuple[bytes, int, str | None] | None:
    """(raw header, file size, etag) cached for this file at this commit (a URL's "sha" is its ETag)."""
    got = _read("headers", (source, sha, file), max_payload=8 + max_header)
    if got is None:
        return None
    meta, raw = got
    size = meta.get("size")
    if type(size) is not int or len(raw) < 8:
        return None
    return raw, size, meta.get("etag")


def put_header(source: str, sha: str, file: str, raw: bytes, size: int, etag: str | None) -> None:
    _write("headers", (source, sha, file), {"size": size, "etag": etag}, raw)


# -- Hub repos: revision -> commit, commit -> listing {path: size}


def put_ref(repo: str, revision: str, sha: str) -> None:
    _write("refs", (repo, revision), {"sha": sha})


def get_ref(repo: str, revision: str) -> str | None:
    got = _read("refs", (repo, revision), max_payload=0)
    sha = got[0].get("sha") if got else None
    return sha if isinstance(sha, str) else None


def put_listing(repo: str, sha: str, files: dict[str, int | None]) -> None:
    _write("listings", (repo, sha), {"files": files})


def get_listing(repo: str, sha: str) -> dict[str, int | None] | None:
    got = _read("listings", (repo, sha), max_payload=0)
    files = got[0].get("files") if got else None
    if not isinstance(files, dict):
        return None
    return {str(k): (v if type(v) is int else None) for k, v in files.items()}


def put_url_etag(url: str, etag: str, size: int) -> None:
    _write("urls", (url,), {"etag": etag, "size": size})


def get_url_etag(url: str) -> tuple[str, int] | None:
    got = _read("urls", (url,), max_payload=0)
    if not got:
        return None
    etag, size = got[0].get("etag"), got[0].get("size")
    return (etag, size) if isinstance(etag, str) and type(size) is int else None


# -- small files fetched by range (a sharded index): (repo, sha, path) -> bytes


def put_file(repo: str, sha: str, path: str, raw: bytes) -> None:
    _write("files", (repo, sha, path), {"size": len(raw)}, raw)


def get_file(repo: str, sha: str, path: str, *, max_bytes: int) -> bytes | None:
    got = _read("files", (repo, sha, path), max_payload=max_bytes)
    return None if got is None or got[0].get("size") != len(got[1]) else got[1]
