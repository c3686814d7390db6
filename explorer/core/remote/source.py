"""What a remote source string means: a Hub repo id, ``hf://`` path, or an http(s) URL. Pure parsing, no I/O
except the one rule "a local path that exists always wins" (:func:`parse_source`)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from ..errors import CheckpointError
from ..fmt import safe_text

#: a Hub repo id: "org/name" (letters, digits, "-", "_", "."; each part at most 96 characters)
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"({_REPO_PART})/({_REPO_PART})")
_FILE_SUFFIXES = (".safetensors", ".json", ".bin", ".pt", ".pth", ".ckpt")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")
DEFAULT_REVISION = "main"


@dataclass(frozen=True)
class HubSource:
    """A model repo on a Hugging Face Hub endpoint: ``repo_id`` at ``revision``, optionally one ``subfolder`` and
    one ``filename`` in it (else the weights ``from_pretrained`` would pick)."""

    repo_id: str
    revision: str = DEFAULT_REVISION
    subfolder: str = ""
    filename: str | None = None

    @property
    def label(self) -> str:
        rev = "" if self.revision == DEFAULT_REVISION else f"@{self.revision}"
        tail = "/".join(x for x in (self.subfolder, self.filename or "") if x)
        return f"hf://{self.repo_id}{rev}" + (f"/{tail}" if tail else "")

    def file_label(self, path_in_repo: str) -> str:
        rev = "" if self.revision == DEFAULT_REVISION else f"@{self.revision}"
        return f"hf://{self.repo_id}{rev}/{path_in_repo}"

    def in_repo(self, name: str) -> str:
        return f"{self.subfolder}/{name}" if self.subfolder else name


@dataclass(frozen=True)
class UrlSource:
    """A file on a plain HTTP(S) server: ``model.safetensors`` or ``model.safetensors.index.json``."""

    url: str

    @property
    def label(self) -> str:
        return redact_url(self.url)


RemoteSource = HubSource | UrlSource


def redact_url(url: str) -> str:
    """``url`` without user:password and without its query (signed URLs carry tokens there), escaped."""
    try:
        u = urlsplit(url)
        host = u.hostname or ""
        if u.port:
            host += f":{u.port}"
        return safe_text(urlunsplit((u.scheme, host, u.path, "", "")))
    except ValueError:
        return "<unparseable URL>"


def _check_revision(rev: str, where: str) -> str:
    if not _REVISION.fullmatch(rev) or ".." in rev:
        raise CheckpointError(f"{where}: revision {safe_text(rev)!r} is not a branch, tag or commit name")
    return rev


def looks_remote(text: str) -> bool:
    """True when ``text`` is spelled as a remote source (whether or not a local path of that name exists)."""
    return _parse(text, DEFAULT_REVISION) is not None


def parse_source(text: str | os.PathLike[str], *, revision: str | None = None) -> RemoteSource | None:
    """The remote source ``text`` names, or None for a local path. A path that exists locally always wins
    (``hf://`` and URLs are never local). ``revision`` (``--revision``) applies to Hub sources; a revision in the
    text itself (``hf://org/name@v1``) must agree with it."""
    s = os.fspath(text)
    if not s.startswith(("hf://", "http://", "https://")) and os.path.lexists(s):
        return None
    return _parse(s, revision)


def _parse(s: str, revision: str | None) -> RemoteSource | None:
    if s.startswith(("http://", "https://")):
        hub = _hub_url(s, revision)
        return hub if hub is not None else UrlSource(s)
    if s.startswith("hf://"):
        rest = s[len("hf://"):].strip("/")
        for prefix in ("models/",):
            rest = rest.removeprefix(prefix)
        if rest.startswith(("datasets/", "spaces/")):
            raise CheckpointError(f"{safe_text(s)}: only model repos hold checkpoints (not datasets or spaces)")
        parts = rest.split("/")
        if len(parts) < 2:
            raise CheckpointError(f"{safe_text(s)}: expected hf://org/name[/subfolder][/file]")
        org, name = parts[0], parts[1]
        rev_in = None
        if "@" in name:
            name, rev_in = name.split("@", 1)
        if not _REPO_ID.fullmatch(f"{org}/{name}"):
            raise CheckpointError(f"{safe_text(s)}: {safe_text(org)}/{safe_text(name)} is not a valid repo id")
        rev = _revision(rev_in, revision, s)
        tail = [p for p in parts[2:] if p]
        if any(p in (".", "..") or "\\" in p for p in tail):
            raise CheckpointError(f"{safe_text(s)}: path in the repo must not contain '.', '..' or backslashes")
        filename = None
        if tail and tail[-1].endswith(_FILE_SUFFIXES):
            filename = tail.pop()
        return HubSource(f"{org}/{name}", rev, "/".join(tail), filename)
    m = _REPO_ID.fullmatch(s.split("@", 1)[0])
    if m is None or s.startswith((".", "~")) or s.endswith(_FILE_SUFFIXES):
        return None  # a local path that does not exist: open_checkpoint says so
    rev_in = s.split("@", 1)[1] if "@" in s else None
    return HubSource(m.group(0), _revision(rev_in, revision, s))


def _revision(in_text: str | None, given: str | None, s: str) -> str:
    if in_text is not None and given is not None and in_text != given:
        raise CheckpointError(f"{safe_text(s)}: revision {safe_text(in_text)!r} in the name and --revision {safe_text(given)!r} disagree")
    return _check_revision(in_text or given or DEFAULT_REVISION, safe_text(s))


def _hub_url(s: str, revision: str | None) -> HubSource | None:
    """A ``{endpoint}/{org}/{name}/resolve|blob/{rev}/{file}`` URL on the configured Hub endpoint, as a HubSource."""
    from .settings import endpoint

    u, e = urlsplit(s), urlsplit(endpoint())
    if (u.hostname, u.port) != (e.hostname, e.port) and u.hostname not in ("huggingface.co", "hf.co"):
        return None
    m = re.fullmatch(r"/(?:models/)?([^/]+/[^/]+)/(?:resolve|blob)/([^/]+)/(.+)", u.path)
    if m is None or not _REPO_ID.fullmatch(m.group(1)):
        return None
    parts = m.group(3).split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return HubSource(m.group(1), _revision(m.group(2), revision, s), "/".join(parts[:-1]), parts[-1])
