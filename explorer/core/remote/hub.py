"""The Hugging Face Hub through huggingface_hub: its endpoint (``HF_ENDPOINT``), its auth (``HF_TOKEN`` / the
stored login, via ``build_hf_headers``), its offline switch (``HF_HUB_OFFLINE``), its cache (``HF_HUB_CACHE``) and
its HTTP session. ``HfApi.model_info`` gives the commit and the file list with sizes in one request; config and
index files are fetched with ``hf_hub_download`` (so they land in, and are found offline in, the HF cache); the
weights' headers are read with Range requests on huggingface_hub's session, streamed and stopped at the bytes
needed (its own ``parse_safetensors_file_metadata`` reads whole responses: a server ignoring Range would send the
whole file)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from ..errors import CheckpointError, one_line
from ..fmt import human_bytes, safe_text
from . import cache
from .fetch import RemoteFile, Transfer, headers_lower, is_network_failure, network_error, status_error, timeout
from .settings import endpoint, hub_cache, offline
from .source import HubSource

LOGIN_HELP = "log in with `hf auth login` or set HF_TOKEN"


def repo_cache_folder(repo_id: str) -> Path:
    return hub_cache() / ("models--" + repo_id.replace("/", "--"))


def hub_error(label: str, e: BaseException) -> CheckpointError:
    """huggingface_hub's exception as one line naming ``label``, with how to log in for 401/403."""
    from huggingface_hub import errors as he

    if isinstance(e, he.GatedRepoError):
        return CheckpointError(f"{label}: gated repo: access denied (401/403); request access on the Hub, then {LOGIN_HELP}")
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, he.RevisionNotFoundError):
        return CheckpointError(f"{label}: no such revision on the Hub (404)")
    if isinstance(e, he.RemoteEntryNotFoundError):
        return CheckpointError(f"{label}: no such file in the repo (404)")
    if isinstance(e, he.RepositoryNotFoundError):
        if status in (401, 403):
            return CheckpointError(f"{label}: repo not found or private ({status}); if it is private, {LOGIN_HELP}")
        return CheckpointError(f"{label}: no such repo on the Hub ({status or 404})")
    if isinstance(e, he.LocalEntryNotFoundError) or isinstance(e, he.OfflineModeIsEnabled):
        return CheckpointError(f"{label}: offline (HF_HUB_OFFLINE=1 or no network) and not in the local cache")
    if isinstance(e, he.HfHubHTTPError) and status is not None:
        return status_error(label, status, headers_lower(e.response.headers))
    if is_network_failure(e) or (type(e).__module__ or "").startswith(("httpx", "aiohttp")):
        return network_error(label, e)
    return CheckpointError(f"{label}: {safe_text(one_line(e))}")


class HubFile(RemoteFile):
    """A file of a repo at a commit, read with Range GETs on huggingface_hub's session (redirects to the CDN followed;
    the Authorization header is dropped off-host by the client)."""

    def __init__(self, src: HubSource, sha: str, path: str, size: int | None, transfer: Transfer) -> None:
        super().__init__(src.file_label(path), size, None, transfer)
        from huggingface_hub import hf_hub_url

        self.url = hf_hub_url(src.repo_id, path, revision=sha, endpoint=endpoint())

    def _fetch(self, start, end, take, sink) -> None:  # type: ignore[no-untyped-def]
        from huggingface_hub.utils import build_hf_headers, get_session

        headers = build_hf_headers()
        headers.update({"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"})
        t = timeout()
        try:
            with get_session().stream("GET", self.url, headers=headers, timeout=t,
                                      follow_redirects=True) as r:
                h = headers_lower(r.headers)
                take(r.status_code, h)
                if self.etag is None:
                    self.etag = (h.get("x-linked-etag") or h.get("etag") or "").strip('"') or None
                for chunk in r.iter_raw(1 << 16):
                    if not sink(chunk):
                        break
        except CheckpointError:
            raise
        except Exception as e:  # httpx2 transport errors, huggingface_hub's OfflineModeIsEnabled
            raise hub_error(self.label, e) from None


@dataclass(frozen=True)
class RepoState:
    """A repo at a commit: its files (path -> size) and how we know (online, or which cache)."""

    sha: str
    files: Mapping[str, int | None]
    note: str


def repo_state(src: HubSource) -> RepoState:
    """The commit ``src.revision`` names and the repo's files: one ``model_info`` request, or offline (or when the
    Hub cannot be reached) the refs and listing we cached, else the HF cache's snapshot."""
    why = "HF_HUB_OFFLINE=1" if offline() else None
    if why is None:
        from huggingface_hub import HfApi

        try:
            info = HfApi(endpoint=endpoint()).model_info(src.repo_id, revision=src.revision, files_metadata=True,
                                                         timeout=timeout())
        except Exception as e:
            if not is_network_failure(e):
                raise hub_error(src.label, e) from None
            why = f"the Hub cannot be reached ({network_error(endpoint(), e).args[0].split(': ', 1)[-1]})"
        else:
            sha = str(info.sha or "")
            if not sha:
                raise CheckpointError(f"{src.label}: the Hub did not say which commit {safe_text(src.revision)} is")
            if info.siblings is not None:
                files = {s.rfilename: (s.size if isinstance(s.size, int) else None) for s in info.siblings}
            else:  # an endpoint whose model info lists no files: the tree listing has them (with sizes)
                files = _tree(src, sha)
            cache.put_ref(src.repo_id, src.revision, sha)
            cache.put_listing(src.repo_id, sha, files)
            return RepoState(sha, files, f"Hub {safe_text(endpoint())}, {safe_text(src.revision)} = commit {sha[:12]}")
    sha = cache.get_ref(src.repo_id, src.revision) or _hf_cache_ref(src)
    if sha is None:
        raise CheckpointError(f"{src.label}: offline ({why}) and no cached copy of revision {safe_text(src.revision)}")
    files = cache.get_listing(src.repo_id, sha)
    snap = repo_cache_folder(src.repo_id) / "snapshots" / sha
    if files is None and snap.is_dir():
        files = {p.relative_to(snap).as_posix(): None for p in snap.rglob("*") if p.is_file()}
    if files is None:
        raise CheckpointError(f"{src.label}: offline ({why}) and no cached listing of commit {sha[:12]}")
    return RepoState(sha, files, f"offline ({why}): cached commit {sha[:12]} of {safe_text(src.revision)}")


def _tree(src: HubSource, sha: str) -> dict[str, int | None]:
    from huggingface_hub import HfApi

    try:
        entries = HfApi(endpoint=endpoint()).list_repo_tree(src.repo_id, revision=sha, recursive=True)
        return {e.path: getattr(e, "size", None) for e in entries if type(e).__name__ == "RepoFile"}
    except Exception as e:
        raise hub_error(src.label, e) from None


def _hf_cache_ref(src: HubSource) -> str | None:
    folder = repo_cache_folder(src.repo_id)
    if len(src.revision) == 40 and (folder / "snapshots" / src.revision).is_dir():
        return src.revision
    ref = folder / "refs" / src.revision
    try:
        text = ref.read_text()[:100].strip() if ref.is_file() else ""
    except OSError:
        return None
    return text if len(text) == 40 and all(c in "0123456789abcdef" for c in text) else None


def snapshot_file(src: HubSource, sha: str, path: str) -> Path | None:
    """``path`` in the HF cache snapshot of commit ``sha`` when it is there in full, else None."""
    p = repo_cache_folder(src.repo_id) / "snapshots" / sha / path
    return p if p.is_file() else None


def download(src: HubSource, sha: str, path: str, size: int | None, *, max_bytes: int | None,
             progress: Callable[[int, int], object] | None = None) -> Path:
    """``path`` at commit ``sha`` into the HF cache with ``hf_hub_download`` (or found there offline); refused when
    its listed size is over ``max_bytes``. Returns the snapshot path."""
    from huggingface_hub import hf_hub_download

    label = src.file_label(path)
    if max_bytes is not None and size is not None and size > max_bytes:
        raise CheckpointError(f"{label}: {human_bytes(size)}, over the {human_bytes(max_bytes)} limit for this kind of file")
    try:
        got = hf_hub_download(src.repo_id, path, revision=sha, endpoint=endpoint(), local_files_only=offline(),
                              etag_timeout=timeout())
    except Exception as e:
        raise hub_error(label, e) from None
    p = Path(got)
    if max_bytes is not None and p.stat().st_size > max_bytes:
        raise CheckpointError(f"{label}: {human_bytes(p.stat().st_size)}, over the {human_bytes(max_bytes)} limit for this kind of file")
    return p


def cached_repo_ids() -> list[str]:
    """Model repo ids with a folder in the HF cache (for completion in the window's Open from Hub dialog)."""
    out = []
    try:
        for p in hub_cache().iterdir():
            name = p.name
            if name.startswith("models--") and p.is_dir():
                parts = name[len("models--"):].split("--")
                if len(parts) == 2:
                    out.append("/".join(parts))
    except OSError:
        return []
    return sorted(out)


def token_source() -> str | None:
    """Where huggingface_hub would take a token from ("HF_TOKEN", "the stored login"), None without one. Never the
    token itself."""
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return "HF_TOKEN"
    try:
        from huggingface_hub import get_token

        return "the stored login" if get_token() else None
    except Exception:
        return None
