"""A remote source -> a :class:`CheckpointIndex`, header-only: the Hub (:mod:`.hub`) or a plain URL (:mod:`.urls`).

The weights are chosen as ``from_pretrained`` chooses them in a folder (``HF_WEIGHT_FILES`` order), each safetensors
header is fetched with at most two Range requests (shards in parallel) or taken from the header cache, and parsed
by the same validator as a local file; a sharded index is assembled by the same code as a local one. The index's
tensors have no file offset: their values are read through the index's ``layout`` (:class:`RemoteLayout`), which
fetches only a tensor's byte range, in requests of bounded size."""
from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..checkpoint import CheckpointIndex, TensorInfo, open_checkpoint
from ..sources.hf_folder import HF_WEIGHT_FILES
from ..errors import Cancelled, CheckpointError
from ..fmt import human_bytes, safe_text
from ..fsio import MAX_HEADER_BYTES, MAX_INDEX_BYTES, MAX_JSON_BYTES, atomic_write_bytes, parse_json
from ..jobs import is_cancelled
from . import cache
from .fetch import RemoteFile, Transfer, header_note
from .source import HubSource, RemoteSource, UrlSource

MAX_PARALLEL = 8
#: a remote tensor up to this size is fetched once and kept by its reader (until the next one)
KEEP_BYTES = 256 << 20
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".bin.index.json")


class RemoteLayout:
    """Where a remote index's tensors live: file label -> RemoteFile, tensor -> (file label, absolute offset).
    ``config``: a local copy of the config.json beside the weights (None when the repo or folder has none)."""

    remote = True

    def __init__(self, source: str, files: Mapping[str, RemoteFile], offsets: Mapping[str, tuple[str, int]],
                 tensors: Mapping[str, TensorInfo], config: str | None, transfer: Transfer) -> None:
        self.source, self.files, self.offsets, self.tensors = source, dict(files), dict(offsets), tensors
        self.config, self.transfer = config, transfer
        self.note = ""  # where the headers came from (Hub commit, cache, bytes transferred): also in index.notes

    def reader(self) -> RemoteReader:
        return RemoteReader(self)


class RemoteReader:
    """A tensor's values from its byte range only: ``iter_flat`` streams it in requests of bounded size."""

    def __init__(self, layout: RemoteLayout) -> None:
        self.layout = layout
        self._kept: tuple[str, Any] | None = None

    def close(self) -> None:
        self._kept = None

    def _where(self, name: str) -> tuple[TensorInfo, RemoteFile, int]:
        try:
            info = self.layout.tensors[name]
            label, off = self.layout.offsets[name]
        except KeyError:
            raise CheckpointError(f"{self.layout.source}: no tensor named {name!r}") from None
        return info, self.layout.files[label], off

    def _dtype(self, info: TensorInfo) -> Any:
        import torch

        dt = getattr(torch, info.dtype, None)
        if dt is None or info.dtype == "float4_e2m1fn_x2":
            raise CheckpointError(f"{info.file}: tensor {info.name!r}: {info.dtype} data cannot be read as numbers")
        return dt

    def iter_flat(self, name: str, *, chunk_elems: int = 1 << 24) -> Iterator[Any]:
        import torch

        info, f, off = self._where(name)
        dt = self._dtype(info)
        item = dt.itemsize
        if info.nbytes <= KEEP_BYTES:  # statistics make two passes: a small tensor is fetched once and kept
            if self._kept is None or self._kept[0] != name:
                self._kept = None
                data = bytearray()
                for part in f.iter_range(off, off + info.nbytes):
                    data += part
                self._kept = (name, torch.frombuffer(data, dtype=torch.uint8).view(dt) if info.numel else torch.empty(0, dtype=dt))
            flat = self._kept[1]
            for start in range(0, info.numel, chunk_elems):
                yield flat[start : start + chunk_elems].clone()
            return
        for start in range(0, info.numel, chunk_elems):
            n = min(chunk_elems, info.numel - start)
            data = bytearray()
            for part in f.iter_range(off + start * item, off + (start + n) * item):
                data += part
            yield torch.frombuffer(data, dtype=torch.uint8).view(dt) if n else torch.empty(0, dtype=dt)

    def tensor(self, name: str) -> Any:
        import torch

        info = self._where(name)[0]
        parts = list(self.iter_flat(name))
        flat = torch.cat(parts) if parts else torch.empty(0, dtype=self._dtype(info))
        return flat.reshape(info.shape)


def is_remote(index: CheckpointIndex) -> bool:
    return bool(getattr(index.layout, "remote", False))


def remote_note(index: CheckpointIndex) -> str | None:
    """Where a remote index's headers came from, one line (None for a local index)."""
    return index.layout.note if is_remote(index) else None


def config_of(index: CheckpointIndex) -> str | None:
    """The local copy of a remote index's config.json (None for a local index or a remote one without)."""
    return index.layout.config if is_remote(index) else None


# --------------------------------------------------------------------------------------------- choosing files


def choose_weights(names: Mapping[str, int | None], where: str) -> str:
    """The weights file ``from_pretrained`` would pick among ``names`` (one folder's files)."""
    for fname in HF_WEIGHT_FILES:
        if fname in names:
            return fname
    cands = sorted(n for n in names if n.endswith((".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".index.json")))
    indexes = [n for n in cands if n.endswith(".index.json")]
    if len(indexes) == 1:
        return indexes[0]
    if len(cands) == 1:
        return cands[0]
    found = ", ".join(safe_text(n) for n in cands[:5]) or "none"
    raise CheckpointError(f"{where}: no weights found: expected one of {', '.join(HF_WEIGHT_FILES)} (weight files present: {found})")


def _pickle_error(label: str, size: int | None, what: str = "a torch pickle") -> CheckpointError:
    shown = human_bytes(size) if size else "its full size"
    return CheckpointError(
        f"{label}: {what} has no header to read over HTTP: it must be downloaded in full ({shown}); pass --download "
        "to fetch it into the Hugging Face cache and open it there"
    )


# --------------------------------------------------------------------------------------------- headers -> index


def _header_index(label: str, raw: bytes, size: int) -> tuple[dict[str, TensorInfo], dict[str, str], tuple[str, ...]]:
    from ..sources.safetensors import parse_safetensors_bytes

    return parse_safetensors_bytes(raw, size, label)


def _fetch_headers(jobs: list[tuple[RemoteFile, Callable[[], tuple[bytes, int] | None], Callable[[bytes, int], None]]],
                   progress: Any, cancel: Any, transfer: Transfer) -> list[tuple[bytes, int]]:
    """Each job: (file, cached() -> (raw, size) | None, store(raw, size)). Fetched in parallel, in order;
    ``progress(files done, files, "N kB transferred")`` after each, ``cancel`` checked before each."""

    def tell(done: int) -> None:
        if progress is not None:
            progress(done, len(jobs), f"{human_bytes(transfer.bytes)} transferred")

    def one(job):  # type: ignore[no-untyped-def]
        f, cached, store = job
        if is_cancelled(cancel):
            raise Cancelled("opening cancelled")
        hit = cached()
        if hit is not None:
            return hit
        raw = f.read_header(MAX_HEADER_BYTES)
        assert f.size is not None
        store(raw, f.size)
        return raw, f.size

    out: list[tuple[bytes, int]] = []
    tell(0)
    if len(jobs) == 1:
        out.append(one(jobs[0]))
        tell(1)
    else:
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(jobs))) as ex:
            futs = [ex.submit(one, j) for j in jobs]
            try:
                for i, fu in enumerate(futs):
                    out.append(fu.result())
                    tell(i + 1)
            except BaseException:
                for fu in futs:
                    fu.cancel()
                raise
    return out


def _build(label: str, files: list[tuple[str, RemoteFile]], heads: list[tuple[bytes, int]], config: str | None,
           transfer: Transfer, note: str, index_obj: Any = None) -> CheckpointIndex:
    tensors: dict[str, TensorInfo] = {}
    offsets: dict[str, tuple[str, int]] = {}
    per_file = {}
    for (flabel, _), (raw, size) in zip(files, heads):
        ts, meta, notes = _header_index(flabel, raw, size)
        per_file[flabel] = (ts, meta, notes)
    fmap = {flabel: f for flabel, f in files}
    for flabel, (ts, _, _) in per_file.items():
        for n, t in ts.items():
            offsets[n] = (flabel, int(t.offset or 0))
    if index_obj is None:
        flabel = files[0][0]
        ts, meta, notes = per_file[flabel]
        tensors = {n: dataclasses.replace(t, offset=None) for n, t in ts.items()}
        lay = RemoteLayout(label, fmap, offsets, tensors, config, transfer)
        lay.note = note
        return CheckpointIndex(label, "safetensors", (flabel,), tensors, meta, notes=(*notes, note), layout=lay)
    from ..sources.sharded import assemble_sharded

    def shard(name: str) -> CheckpointIndex:
        flabel = _shard_label(label, name)
        ts, meta, notes = per_file[flabel]
        return CheckpointIndex(flabel, "safetensors", (flabel,), {n: dataclasses.replace(t, offset=None) for n, t in ts.items()},
                               meta, notes=notes)

    idx = assemble_sharded(label, index_obj, shard)
    lay = RemoteLayout(label, fmap, offsets, idx.tensors, config, transfer)
    lay.note = note
    return dataclasses.replace(idx, notes=(*idx.notes, note), layout=lay)


def _shard_label(index_label: str, name: str) -> str:
    return index_label.rsplit("/", 1)[0] + "/" + name


def _index_shards(label: str, raw: bytes, listing: Mapping[str, int | None] | None) -> tuple[Any, list[str]]:
    from ..sources.sharded import sharded_names
    from ..fsio import parse_json

    obj = parse_json(raw, source=label, what="index file", error=CheckpointError)
    names = sharded_names(label, obj)  # validated: inside the folder, no other index
    if listing is not None:
        for s in names:
            if s not in listing:
                raise CheckpointError(f"{label}: index names shard {safe_text(s)!r}, which the repo does not have")
    return obj, names


# --------------------------------------------------------------------------------------------- the Hub


def open_hub(src: HubSource, *, download: bool = False, progress: Any = None, cancel: Any = None) -> CheckpointIndex:
    from . import hub

    state = hub.repo_state(src)
    prefix = f"{src.subfolder}/" if src.subfolder else ""
    here = {p[len(prefix):]: s for p, s in state.files.items() if p.startswith(prefix) and "/" not in p[len(prefix):]}
    if src.filename is not None:
        if src.filename not in here:
            raise CheckpointError(f"{src.label}: no such file in the repo at commit {state.sha[:12]}")
        chosen = src.filename
    else:
        if not here and src.subfolder:
            raise CheckpointError(f"{src.label}: no folder {safe_text(src.subfolder)!r} in the repo at commit {state.sha[:12]}")
        chosen = choose_weights(here, src.label)
    path = prefix + chosen
    config = None
    if "config.json" in here:
        config = str(_hub_json(src, state.sha, prefix + "config.json", here["config.json"]).parent)
    note = f"{src.label}: {state.note}"
    # a full copy in the HF cache snapshot (downloaded before, or --download): open it locally, say which
    local = _download_all(src, state, path, here, prefix) if download else _full_snapshot(src, state.sha, path, prefix)
    if local is not None or chosen.endswith(_PICKLE_SUFFIXES):
        if local is None:
            size = here.get(chosen)
            if chosen.endswith(".index.json"):
                size = sum(v or 0 for k, v in here.items() if k.endswith(".bin")) or None
            raise _pickle_error(src.file_label(path), size)
        idx = open_checkpoint(local)
        return dataclasses.replace(idx, notes=(*idx.notes, f"{note}; opened the downloaded copy {local}"))
    transfer = Transfer()
    if chosen.endswith(".index.json"):
        raw = _small_file(src, state.sha, path, here.get(chosen), transfer)
        obj, shards = _index_shards(src.file_label(path), raw, here)
        files = [(src.file_label(prefix + s), hub.HubFile(src, state.sha, prefix + s, here.get(s), transfer)) for s in shards]
    else:
        obj, shards = None, [chosen]
        files = [(src.file_label(path), hub.HubFile(src, state.sha, path, here.get(chosen), transfer))]
    jobs = []
    for (flabel, f), s in zip(files, shards):
        key = (src.repo_id, state.sha, prefix + s)
        jobs.append((f, _cached(key, f), _store(key, f)))
    heads = _fetch_headers(jobs, progress, cancel, transfer)
    how = header_note(transfer, len(files)) if transfer.requests else f"headers from the cache ({cache.cache_root()})"
    return _build(src.file_label(path), files, heads, config, transfer, f"{note}; {how}", obj)


def _small_file(src: HubSource, sha: str, path: str, size: int | None, transfer: Transfer, *,
                cap: int = MAX_INDEX_BYTES, what: str = "index file") -> bytes:
    """A sharded index or a config: read by range, exactly its listed size and at most ``cap`` bytes (a server cannot
    make us download more than that), kept in our cache for offline use."""
    from . import hub

    got = cache.get_file(src.repo_id, sha, path, max_bytes=cap)
    if got is not None:
        return got
    label = src.file_label(path)
    over = CheckpointError(f"{label}: {what} of {human_bytes(size or cap + 1)}, over the {human_bytes(cap)} limit")
    if size is not None and size > cap:
        raise over
    # size unknown (the listing has none): ask for one byte more than the cap; the answer says how long it is
    raw = hub.HubFile(src, sha, path, size, transfer).read(0, cap + 1 if size is None else size) if size != 0 else b""
    if len(raw) > cap:
        raise over
    cache.put_file(src.repo_id, sha, path, raw)
    return raw


def _hub_json(src: HubSource, sha: str, path: str, size: int | None) -> Path:
    """A repo's config.json (or another small JSON file ``--config`` names): the HF cache snapshot's copy when there
    is one, else read by range under the JSON cap (never an unbounded download: a server that lies about the size
    cannot fill the disk), checked, and kept as a file in our cache. Returns the file's path."""
    import hashlib

    from . import hub

    label = src.file_label(path)
    snap = hub.snapshot_file(src, sha, path)
    if snap is not None:
        if snap.stat().st_size > MAX_JSON_BYTES:
            raise CheckpointError(f"{label}: {human_bytes(snap.stat().st_size)}, over the {human_bytes(MAX_JSON_BYTES)} limit for this kind of file")
        return snap
    raw = _small_file(src, sha, path, size, Transfer(), cap=MAX_JSON_BYTES, what="JSON file")
    parse_json(raw, source=label, what=path.rsplit("/", 1)[-1], error=CheckpointError)  # size/depth caps
    key = hashlib.sha256("\0".join((src.repo_id, sha, path)).encode()).hexdigest()
    folder = cache.cache_root() / "configs" / key
    out = folder / path.rsplit("/", 1)[-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, raw)
    except OSError as e:
        raise CheckpointError(f"{label}: cannot keep a copy in the cache {folder}: {e.strerror or e}") from None
    return out


def _cached(key: tuple[str, str, str], f: RemoteFile) -> Callable[[], tuple[bytes, int] | None]:
    def get() -> tuple[bytes, int] | None:
        hit = cache.get_header(*key, max_header=MAX_HEADER_BYTES)
        if hit is None:
            return None
        raw, size, etag = hit
        f.size, f.etag = size, etag
        return raw, size

    return get


def _store(key: tuple[str, str, str], f: RemoteFile) -> Callable[[bytes, int], None]:
    return lambda raw, size: cache.put_header(*key, raw, size, f.etag)


def _full_snapshot(src: HubSource, sha: str, path: str, prefix: str) -> Path | None:
    """``path`` (and every shard its index names) complete in the HF cache snapshot of ``sha``, else None."""
    from . import hub

    local = hub.snapshot_file(src, sha, path)
    if local is None or not path.endswith(".index.json"):
        return local
    try:
        _, shards = _index_shards(src.file_label(path), _read_index(local), None)
    except (CheckpointError, OSError):
        return None
    return local if all(hub.snapshot_file(src, sha, prefix + s) for s in shards) else None


def _read_index(p: Path) -> bytes:
    from ..fsio import read_bounded

    return read_bounded(p, max_bytes=MAX_INDEX_BYTES, what="index file", error=CheckpointError)


def _download_all(src: HubSource, state: Any, path: str, here: Mapping[str, int | None], prefix: str) -> Path:
    """``--download``: the weights (every shard an index names) into the HF cache; the snapshot path of ``path``."""
    from . import hub

    local = hub.download(src, state.sha, path, here.get(path[len(prefix):]), max_bytes=None)
    if path.endswith(".index.json"):
        raw = _read_index(local)
        _, shards = _index_shards(src.file_label(path), raw, here)
        for s in shards:
            hub.download(src, state.sha, prefix + s, here.get(s), max_bytes=None)
    return local


def hub_config(src: HubSource) -> str:
    """``--config org/name``: the repo's config.json (in the subfolder), downloaded into the HF cache."""
    from . import hub

    state = hub.repo_state(src)
    path = f"{src.subfolder}/config.json" if src.subfolder else "config.json"
    if src.filename is not None:
        path = f"{src.subfolder}/{src.filename}" if src.subfolder else src.filename
    if path not in state.files:
        raise CheckpointError(f"{src.label}: the repo has no {safe_text(path)} at commit {state.sha[:12]}")
    return str(_hub_json(src, state.sha, path, state.files[path]))


# --------------------------------------------------------------------------------------------- plain URLs


def open_url(src: UrlSource, *, download: bool = False, progress: Any = None, cancel: Any = None) -> CheckpointIndex:
    from . import urls

    label = src.label
    path = src.url.split("?", 1)[0]
    if path.endswith(_PICKLE_SUFFIXES):
        f = urls.UrlFile(src.url, Transfer())
        f.stat()
        raise CheckpointError(f"{label}: a torch pickle has no header to read over HTTP: it must be downloaded in full "
                              f"({human_bytes(f.size) if f.size else 'size unknown'}); download it and open the file")
    if not path.endswith((".safetensors", ".safetensors.index.json")):
        raise CheckpointError(f"{label}: expected a URL of a *.safetensors file or a *.safetensors.index.json index")
    transfer = Transfer()
    config = _url_config(src.url, transfer)
    if path.endswith(".index.json"):
        f = urls.UrlFile(src.url, transfer)
        f.stat()
        if f.size is not None and f.size > MAX_INDEX_BYTES:
            raise CheckpointError(f"{label}: index file of {human_bytes(f.size)}, over the {human_bytes(MAX_INDEX_BYTES)} limit")
        raw = _url_small(f, MAX_INDEX_BYTES)
        obj, shards = _index_shards(label, raw, None)
        files = [(_shard_label(label, s), urls.UrlFile(urls.sibling(src.url, s), transfer)) for s in shards]
    else:
        obj, files = None, [(label, urls.UrlFile(src.url, transfer))]
    jobs = []
    for flabel, f in files:
        jobs.append((f, _url_cached(f), _url_store(f)))
    heads = _fetch_headers(jobs, progress, cancel, transfer)
    offline = next((f.offline for _, f in files if f.offline), None)
    how = f"offline ({offline}): headers from the cache ({cache.cache_root()})" if offline else header_note(transfer, len(files))
    return _build(label, files, heads, config, transfer, f"{label}: {how}", obj)


def _url_small(f: Any, cap: int) -> bytes:
    """A small file (an index, a config) read whole by range (at most ``cap`` bytes), kept in the cache by URL
    and ETag so it opens offline."""
    if f.size is not None and f.size > cap:
        raise CheckpointError(f"{f.label}: {human_bytes(f.size)}, over the {human_bytes(cap)} limit for this file")
    hit = cache.get_file(f.cache_key, f.etag, "", max_bytes=cap) if f.etag else None
    if hit is not None:
        return hit
    if f.offline:
        raise CheckpointError(f"{f.label}: offline ({f.offline}) and not in the cache")
    raw = f.read(0, f.size if f.size is not None else cap + 1, max_skip=0) if f.size != 0 else b""
    if len(raw) > cap:
        raise CheckpointError(f"{f.label}: over the {human_bytes(cap)} limit for this file")
    if f.etag:
        cache.put_file(f.cache_key, f.etag, "", raw)
    return raw


def _url_cached(f: Any) -> Callable[[], tuple[bytes, int] | None]:
    def get() -> tuple[bytes, int] | None:
        f.stat()  # the ETag says whether a cached header is still this file's
        if not f.etag or f.size is None:
            return None
        hit = cache.get_header(f.cache_key, f.etag, "", max_header=MAX_HEADER_BYTES)
        if hit is None and f.offline:
            raise CheckpointError(f"{f.label}: offline ({f.offline}) and its header is not in the cache")
        return None if hit is None or hit[1] != f.size else (hit[0], hit[1])

    return get


def _url_store(f: Any) -> Callable[[bytes, int], None]:
    def put(raw: bytes, size: int) -> None:
        if f.etag:
            cache.put_header(f.cache_key, f.etag, "", raw, size, f.etag)

    return put


def _url_config(url: str, transfer: Transfer) -> str | None:
    """config.json beside the URL, copied into our cache (None when the server has none)."""
    import hashlib

    from . import urls

    f = urls.UrlFile(urls.sibling(url, "config.json"), transfer)
    try:
        f.stat()
    except CheckpointError as e:
        if "(404)" in str(e):
            return None
        raise
    raw = _url_small(f, MAX_JSON_BYTES)
    parse_json(raw, source=f.label, what="config.json", error=CheckpointError)  # size/depth caps; ModelSpec parses it again
    folder = cache.cache_root() / "configs" / hashlib.sha256(f.url.encode()).hexdigest()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / "config.json", raw)
    except OSError as e:
        raise CheckpointError(f"{f.label}: cannot keep a copy in the cache {folder}: {e.strerror or e}") from None
    return str(folder)


# --------------------------------------------------------------------------------------------- entry point


def open_remote(src: RemoteSource, *, download: bool = False, progress: Any = None, cancel: Any = None) -> CheckpointIndex:
    if isinstance(src, HubSource):
        return open_hub(src, download=download, progress=progress, cancel=cancel)
    return open_url(src, download=download, progress=progress, cancel=cancel)


def local_note(path: str) -> str | None:
    """When a local path is spelled like a repo id: say the local one was used."""
    from .source import looks_remote

    s = os.fspath(path)
    if looks_remote(s) and not s.startswith(("hf://", "http://", "https://")):
        return f"{safe_text(s)}: the local path was used (a Hub repo of that name would be hf://{safe_text(s)})"
    return None
