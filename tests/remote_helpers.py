"""A loopback stand-in for the Hugging Face Hub (and a plain HTTP file server), serving real files from disk.

It implements what huggingface_hub 2.x calls for a model repo: ``GET /api/models/{repo}[/revision/{rev}]`` (model
info: sha + siblings), ``GET /api/models/{repo}/tree/{rev}[/{path}]``, ``POST /api/models/{repo}/paths-info/{rev}``,
``HEAD``/``GET /{repo}/resolve/{rev}/{file}`` (``X-Repo-Commit``, ``ETag``; weight files answer with a 302 to a
"CDN" on another host name, ``localhost`` vs ``127.0.0.1``, carrying ``X-Linked-Size`` / ``X-Linked-Etag`` as the Hub
does) and the CDN itself, which honours single ``Range`` requests (206 + ``Content-Range``). Errors carry the Hub's
``X-Error-Code`` so huggingface_hub raises its own exception types. ``/plain/{name}/{file}`` serves a folder as a
plain HTTP server would (HEAD, Range, ETag).

Every body byte sent is counted (``bytes_served``, per path in ``served``) and every request logged (``requests``),
so tests assert how little was transferred. ``faults`` switch on misbehaviour per file name: ``ignore_range``
(200 with the whole body), ``truncate`` (Content-Length promised, connection closed early), ``reset`` (connection
dropped after a few bytes), ``stall`` (sleep before answering), ``status`` (answer this code).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

_LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass
class Repo:
    files: dict[str, Path]  # path in repo -> file on disk
    refs: dict[str, str] = field(default_factory=lambda: {"main": "0" * 40})
    token: str | None = None  # gated: this token (Bearer) is required


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def folder_files(folder: Path, prefix: str = "") -> dict[str, Path]:
    """Every regular file under ``folder`` by its path in a repo (``prefix`` + relative path)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            out[prefix + p.relative_to(folder).as_posix()] = p
    return out


class HubStandIn:
    """``with HubStandIn() as hub: hub.add_repo("org/name", folder)`` then point ``HF_ENDPOINT`` at ``hub.endpoint``."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.plain: dict[str, Path] = {}
        self.faults: dict[str, dict[str, Any]] = {}  # file name (basename) -> fault settings
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.served: dict[str, int] = {}
        self.bare_info = False  # model info without sizes, or without siblings at all ("no_siblings")
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"hub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- set-up
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn(self) -> str:  # another host name for the same server: a cross-host redirect, as to the Hub's CDN
        return f"http://localhost:{self.port}/cdn"

    def add_repo(self, repo_id: str, folder: Path | None = None, *, files: dict[str, Path] | None = None,
                 revision: str = "main", token: str | None = None) -> str:
        """Serve ``folder`` (or ``files``) as ``repo_id`` at ``revision``; returns the commit sha."""
        sha = _sha(f"{repo_id}@{revision}")
        fmap = dict(files or {}) if folder is None else folder_files(folder)
        repo = self.repos.get(repo_id)
        if repo is None:
            repo = self.repos[repo_id] = Repo({}, {}, token)
        repo.refs[revision] = sha
        repo.refs[sha] = sha
        repo.files.update({f"{sha}/{k}": v for k, v in fmap.items()})
        return sha

    def add_plain(self, name: str, folder: Path) -> str:
        """Serve ``folder`` at ``/plain/{name}/``; returns that base URL (ending in /)."""
        self.plain[name] = folder
        return f"{self.endpoint}/plain/{name}/"

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.served.clear()

    @property
    def bytes_served(self) -> int:
        return sum(self.served.values())

    def ranges(self) -> list[str | None]:
        return [r for m, _, r in self.requests if m == "GET"]

    def __enter__(self) -> HubStandIn:
        if not self.thread.is_alive():
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- lookups used by the handler
    def etag(self, p: Path) -> str:
        st = p.stat()
        return _sha(f"{p}:{st.st_size}:{st.st_mtime_ns}")

    def count(self, path: str, n: int) -> None:
        with self._lock:
            self.served[path] = self.served.get(path, 0) + n


class _Handler(BaseHTTPRequestHandler):
    hub: HubStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    # -- plumbing
    def _log(self) -> None:
        with self.hub._lock:
            self.hub.requests.append((self.command, self.path, self.headers.get("Range")))

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None, *, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
            self.hub.count(self.path, len(body))

    def _error(self, code: int, error_code: str | None = None, message: str = "") -> None:
        h = {"X-Error-Code": error_code} if error_code else {}
        if message:
            h["X-Error-Message"] = message
        self._send(code, json.dumps({"error": message or error_code or str(code)}).encode(), h)

    def _json(self, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(200, json.dumps(obj).encode(), headers)

    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    # -- routes
    def _route(self) -> None:
        self._log()
        path = unquote(urlsplit(self.path).path)
        try:
            if path.startswith("/api/models/"):
                return self._api(path[len("/api/models/"):])
            if path.startswith("/cdn/"):
                sha, _, rest = path[len("/cdn/"):].partition("/")
                repo_id, _, fname = rest.partition("::")
                return self._serve_file(self._repo_file(repo_id, sha, fname), {"X-Repo-Commit": sha})
            if path.startswith("/moved/"):  # a plain server's redirect (301) to the same file under /plain/
                return self._send(301, b"", {"Location": "/plain/" + path[len("/moved/"):]})
            if path.startswith("/plain/"):
                name, _, rel = path[len("/plain/"):].partition("/")
                folder = self.hub.plain.get(name)
                p = folder / rel if folder is not None and rel and ".." not in rel.split("/") else None
                if p is None or not p.is_file():
                    return self._error(404, message="not found")
                return self._serve_file(p, {})
            m = re.fullmatch(r"/(?:models/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if m:
                return self._resolve(*m.groups())
            self._error(404, message="no such route")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if repo.token is not None and self.headers.get("Authorization") != f"Bearer {repo.token}":
            self._error(401, "GatedRepo", "Access to model is restricted. You must have access to it and be authenticated.")
            return None
        return repo

    def _sha_of(self, repo: Repo, rev: str) -> str | None:
        sha = repo.refs.get(rev)
        if sha is None:
            self._error(404, "RevisionNotFound", "Invalid rev id")
        return sha

    def _repo_file(self, repo_id: str, sha: str, fname: str) -> Path | None:
        repo = self.hub.repos.get(repo_id)
        return None if repo is None else repo.files.get(f"{sha}/{fname}")

    def _entries(self, repo: Repo, sha: str) -> list[dict[str, Any]]:
        out = []
        for key, p in sorted(repo.files.items()):
            s, _, rel = key.partition("/")
            if s != sha:
                continue
            size = p.stat().st_size
            e: dict[str, Any] = {"type": "file", "path": rel, "size": size, "oid": self.hub.etag(p)}
            if rel.endswith(_LFS_SUFFIXES):
                e["lfs"] = {"oid": self.hub.etag(p), "size": size, "pointerSize": 134}
            out.append(e)
        return out

    def _api(self, rest: str) -> None:
        parts = rest.split("/")
        repo_id = "/".join(parts[:2])
        repo = self._repo(repo_id)
        if repo is None:
            return
        tail = parts[2:]
        if not tail or tail[0] == "revision":
            sha = self._sha_of(repo, tail[1] if len(tail) > 1 else "main")
            if sha is None:
                return
            entries = self._entries(repo, sha)
            blobs = urlsplit(self.path).query.find("blobs") >= 0 and not self.hub.bare_info
            siblings = [{"rfilename": e["path"], **({"size": e["size"], "blobId": e["oid"],
                         **({"lfs": {"size": e["size"], "sha256": e["oid"], "pointerSize": 134}} if "lfs" in e else {})}
                         if blobs else {})} for e in entries]
            info = {"_id": sha[:24], "id": repo_id, "modelId": repo_id, "sha": sha, "private": False,
                    "gated": repo.token is not None, "disabled": False, "downloads": 0, "likes": 0,
                    "tags": [], "siblings": siblings, "lastModified": "2026-01-01T00:00:00.000Z"}
            if self.hub.bare_info == "no_siblings":
                del info["siblings"]
            return self._json(info)
        if tail[0] in ("tree", "paths-info") and len(tail) > 1:
            sha = self._sha_of(repo, tail[1])
            if sha is None:
                return
            entries = self._entries(repo, sha)
            if tail[0] == "tree":
                sub = "/".join(tail[2:]).strip("/")
                entries = [e for e in entries if not sub or e["path"].startswith(sub + "/")]
                return self._json(entries)
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n).decode()
            wanted = set(re.findall(r"paths=([^&]+)", unquote(body.replace("+", " "))))
            try:
                wanted |= set(json.loads(body).get("paths", []))
            except (ValueError, AttributeError):
                pass
            return self._json([e for e in entries if e["path"] in wanted])
        self._error(404, message="no such api route")

    def _resolve(self, repo_id: str, rev: str, fname: str) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        sha = self._sha_of(repo, unquote(rev))
        if sha is None:
            return
        p = repo.files.get(f"{sha}/{fname}")
        if p is None:
            return self._error(404, "EntryNotFound", "Entry not found")
        etag = self.hub.etag(p)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"'}
        if fname.endswith(_LFS_SUFFIXES):
            location = f"{self.hub.cdn}/{sha}/{quote(repo_id)}::{quote(fname)}"
            headers.update({"Location": location, "X-Linked-Size": str(p.stat().st_size), "X-Linked-Etag": f'"{etag}"'})
            return self._send(302, b"", headers)
        self._serve_file(p, headers)

    def _serve_file(self, p: Path | None, extra: dict[str, str]) -> None:
        if p is None:
            return self._error(404, message="not found")
        fault = self.hub.faults.get(p.name, {})
        if "status" in fault:
            return self._error(int(fault["status"]), fault.get("error_code"), fault.get("message", ""))
        if "stall" in fault:
            time.sleep(float(fault["stall"]))
        size = p.stat().st_size
        start, end = 0, size - 1
        rng = self.headers.get("Range")
        partial = False
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if m and not fault.get("ignore_range"):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            if start >= size:
                return self._send(416, b"", {"Content-Range": f"bytes */{size}"})
            partial = True
        n = end - start + 1
        self.send_response(206 if partial else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.send_header("Accept-Ranges", "none" if fault.get("ignore_range") else "bytes")
        self.send_header("ETag", f'"{self.hub.etag(p)}"')
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        limit = n
        if "truncate" in fault:
            limit = min(n, int(fault["truncate"]))
        if "reset" in fault:
            limit = min(n, int(fault["reset"]))
        with open(p, "rb") as f:
            f.seek(start)
            left = limit
            while left > 0:
                chunk = f.read(min(left, 1 << 16))
                if not chunk:
                    break
                try:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    self.hub.count(self.path, limit - left)
                    self.close_connection = True
                    return
                left -= len(chunk)
        self.hub.count(self.path, limit - left)
        if limit < n:
            self.close_connection = True
            if "reset" in fault:  # RST instead of FIN
                try:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                except OSError:
                    pass
            self.connection.shutdown(socket.SHUT_RDWR) if "truncate" in fault else None


def hub_env(monkeypatch, hub: HubStandIn, tmp_path: Path, *, token: str | None = None) -> None:
    """Point huggingface_hub (already imported) and our header cache at ``hub`` and fresh folders under tmp_path."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("CKPT_EXPLORER_CACHE", str(tmp_path / "ckpt-cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    if token is None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    os.environ.pop("HF_HUB_ETAG_TIMEOUT", None)


MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"

try:
    import pytest

    @pytest.fixture
    def minilm_hub(monkeypatch, tmp_path, minilm):
        """A running stand-in with the real MiniLM as MINILM_REPO, huggingface_hub and our cache pointed at it."""
        with HubStandIn() as h:
            hub_env(monkeypatch, h, tmp_path)
            h.add_repo(MINILM_REPO, Path(minilm))
            yield h
except ImportError:  # the benchmark imports this module without pytest
    pass
