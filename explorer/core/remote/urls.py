"""Plain http(s) URLs through fsspec's HTTP filesystem (aiohttp underneath; ``pip install checkpoint-explorer[remote]``).

``fs.info`` (a HEAD, redirects followed) gives the size and ETag; byte ranges are read on fsspec's own aiohttp
session and event loop, streamed and stopped at the bytes asked for (fsspec's ``cat_file`` reads whole responses,
and its file object reads a server's whole 200 answer into memory when Range is ignored). No token is ever sent."""
from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

from ..errors import CheckpointError
from . import cache
from .fetch import RemoteFile, Transfer, headers_lower, is_network_failure, network_error, status_error, timeout
from .source import redact_url

_FS: dict[float, Any] = {}


def filesystem() -> Any:
    """fsspec's HTTPFileSystem with our timeouts (connect and each read bounded), one per timeout setting."""
    t = timeout()
    fs = _FS.get(t)
    if fs is None:
        try:
            import aiohttp
            import fsspec
        except ImportError as e:
            raise CheckpointError(
                f"reading http(s) URLs needs fsspec and aiohttp ({e.name} is missing): pip install 'checkpoint-explorer[remote]'"
            ) from None
        fs = fsspec.filesystem("http", skip_instance_cache=True,
                               client_kwargs={"timeout": aiohttp.ClientTimeout(total=None, connect=t, sock_read=t)})
        _FS[t] = fs
    return fs


class UrlFile(RemoteFile):
    hub = False

    def __init__(self, url: str, transfer: Transfer) -> None:
        super().__init__(redact_url(url), None, None, transfer)
        self.url = url
        self.offline: str | None = None  # why the server could not be reached (then size/ETag are the cached ones)

    def stat(self) -> None:
        """Size and ETag from a HEAD request; CheckpointError naming the URL on 404, 401/403 or network trouble."""
        fs = filesystem()
        try:
            try:
                info = fs.info(self.url)
            except FileNotFoundError as e:  # fsspec says so for any failure; its cause tells which
                cause = e.__cause__
                if cause is not None and getattr(cause, "status", None) != 404:
                    raise cause from None
                raise CheckpointError(f"{self.label}: not found (404)") from None
        except CheckpointError:
            raise
        except Exception as e:
            known = cache.get_url_etag(self.cache_key)
            if is_network_failure(e) and known is not None:  # offline: what we saw last time, if we keep its header
                self.etag, self.size = known
                self.offline = network_error(self.label, e).args[0].split(": ", 1)[-1]
                return
            raise _error(self.label, e) from None
        finally:
            self.transfer.add(requests=1)
        size = info.get("size")
        self.size = size if isinstance(size, int) else None
        etag = info.get("ETag")
        self.etag = etag.strip('"') if isinstance(etag, str) else None
        if self.etag and self.size is not None:
            cache.put_url_etag(self.cache_key, self.etag, self.size)

    @property
    def cache_key(self) -> str:
        return self.url.split("?", 1)[0]

    def _fetch(self, start, end, take, sink) -> None:  # type: ignore[no-untyped-def]
        from fsspec.asyn import sync

        fs = filesystem()

        async def go() -> None:
            session = await fs.set_session()
            headers = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}
            async with session.get(fs.encode_url(self.url), headers=headers) as r:
                take(r.status, headers_lower(r.headers))
                async for chunk in r.content.iter_chunked(1 << 16):
                    if not sink(chunk):
                        break

        try:
            sync(fs.loop, go, timeout=None)
        except CheckpointError:
            raise
        except Exception as e:
            raise _error(self.label, e) from None


def _error(label: str, e: BaseException) -> CheckpointError:
    status = getattr(e, "status", None) or getattr(e, "code", None)
    if isinstance(status, int) and status >= 400:
        return status_error(label, status, {}, hub=False)
    return network_error(label, e)


def sibling(url: str, name: str) -> str:
    """The URL of ``name`` in the same folder as ``url`` (query dropped: a signed URL's signature is per file)."""
    base = url.split("?", 1)[0].split("#", 1)[0]
    return urljoin(base, name)
