"""Listing and reading many small objects at once, through an obstore registry.

The ensemble parsers read a whole cycle's sidecar indexes (GEFS: 31 members x 65 steps =
2,015 ``.idx`` files) and one message per grid. Remote reads go through obstore with many
requests in flight; local files are read directly, which is faster than any async layer.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from zarrport.errors import InvalidArgumentError, SourceNotFoundError, StorageError

#: requests in flight at once against an object store
CONCURRENCY = 64


@dataclass(frozen=True)
class Entry:
    url: str
    size: int
    etag: str | None = None
    mtime: float | None = None

    def stat(self) -> dict[str, Any]:
        return {"url": self.url, "size": self.size, "etag": self.etag, "mtime": self.mtime}


def run[T](coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion, also from inside a running event loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Fetcher:
    """List a prefix and read objects or byte ranges of ``file://``, ``s3://``, ``az://``
    ... URLs, resolved through a VirtualiZarr/obspec ``ObjectStoreRegistry``."""

    def __init__(self, registry: Any):
        self.registry = registry

    # -- listing
    def list(self, prefix: str) -> dict[str, Entry]:
        """Every object under the directory ``prefix`` (not recursive), by URL."""
        prefix = prefix.rstrip("/") + "/"
        if prefix.startswith("file://"):
            path = prefix.removeprefix("file://")
            try:
                names = os.listdir(path)
            except FileNotFoundError:
                raise SourceNotFoundError(f"no such directory: {path}", source=prefix) from None
            except NotADirectoryError:
                raise InvalidArgumentError(f"{path.rstrip('/')} is a file, not a directory",
                                           source=prefix) from None
            out = {}
            for name in names:
                st = os.stat(path + name)
                if not os.path.isdir(path + name):
                    out[prefix + name] = Entry(prefix + name, st.st_size, None, st.st_mtime)
            return out
        import obstore

        store, path = self.registry.resolve(prefix)
        root = prefix[: len(prefix) - len(str(path).rstrip("/")) - 1] if str(path) else prefix
        try:
            result = obstore.list_with_delimiter(store, prefix=str(path).rstrip("/") + "/")
        except Exception as e:  # noqa: BLE001 - obstore raises its own hierarchy
            raise StorageError(f"cannot list {prefix}: {_first_line(e)}", source=prefix) from e
        out = {}
        for meta in result["objects"]:
            url = root.rstrip("/") + "/" + meta["path"]
            mtime = meta.get("last_modified")
            out[url] = Entry(url, int(meta["size"]), meta.get("e_tag"),
                             mtime.timestamp() if mtime is not None else None)
        return out

    # -- reading
    def get_many(self, urls: Iterable[str]) -> dict[str, bytes]:
        """The whole content of each URL; a URL with no object is left out."""
        urls = list(urls)
        local = [u for u in urls if u.startswith("file://")]
        out: dict[str, bytes] = {}
        for url in local:
            try:
                with open(url.removeprefix("file://"), "rb") as f:
                    out[url] = f.read()
            except FileNotFoundError:
                pass
        remote = [u for u in urls if not u.startswith("file://")]
        if remote:
            out.update(run(self._get_many(remote)))
        return out

    async def _get_many(self, urls: list[str]) -> dict[str, bytes]:
        import obstore

        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(url: str) -> tuple[str, bytes | None]:
            store, path = self.registry.resolve(url)
            async with sem:
                try:
                    result = await obstore.get_async(store, str(path))
                    return url, bytes(await result.bytes_async())
                except FileNotFoundError:
                    return url, None
                except Exception as e:  # noqa: BLE001
                    if "not found" in str(e).lower() or "404" in str(e):
                        return url, None
                    raise StorageError(f"cannot read {url}: {_first_line(e)}",
                                       source=url) from e

        pairs = await asyncio.gather(*(one(u) for u in urls))
        return {u: b for u, b in pairs if b is not None}

    def get_range(self, url: str, offset: int, length: int) -> bytes:
        """``length`` bytes of ``url`` from ``offset``."""
        if url.startswith("file://"):
            try:
                with open(url.removeprefix("file://"), "rb") as f:
                    f.seek(offset)
                    return f.read(length)
            except FileNotFoundError:
                raise SourceNotFoundError(f"no such file: {url}", source=url) from None
        import obstore

        store, path = self.registry.resolve(url)
        try:
            return bytes(obstore.get_range(store, str(path), start=offset, length=length))
        except FileNotFoundError:
            raise SourceNotFoundError(f"no such object: {url}", source=url) from None
        except Exception as e:  # noqa: BLE001
            raise StorageError(f"cannot read {url}: {_first_line(e)}", source=url) from e


    def ends(self, spans: dict[str, list[tuple[int, int]]]) -> dict[str, list[bytes]]:
        """For each URL and (offset, length) span: the span's first 4 and last 4 bytes
        concatenated (b"GRIB" + b"7777" for an intact message), read concurrently."""
        out: dict[str, list[bytes]] = {}
        remote = {u: v for u, v in spans.items() if not u.startswith("file://")}
        for url, items in spans.items():
            if url in remote:
                continue
            got = []
            try:
                with open(url.removeprefix("file://"), "rb") as f:
                    for offset, length in items:
                        f.seek(offset)
                        head = f.read(4)
                        f.seek(offset + max(length - 4, 0))
                        got.append(head + f.read(4))
            except FileNotFoundError:
                raise SourceNotFoundError(f"no such file: {url}", source=url) from None
            out[url] = got
        if remote:
            out.update(run(self._ends(remote)))
        return out

    async def _ends(self, spans: dict[str, list[tuple[int, int]]]) -> dict[str, list[bytes]]:
        import obstore

        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(url: str, items: list[tuple[int, int]]) -> tuple[str, list[bytes]]:
            store, path = self.registry.resolve(url)
            starts = [o for o, _ in items] + [o + max(n - 4, 0) for o, n in items]
            async with sem:
                try:
                    parts = await obstore.get_ranges_async(
                        store, str(path), starts=starts, lengths=[4] * len(starts))
                except Exception as e:  # noqa: BLE001
                    raise StorageError(f"cannot read {url}: {_first_line(e)}",
                                       source=url) from e
            k = len(items)
            return url, [bytes(parts[i]) + bytes(parts[k + i]) for i in range(k)]

        pairs = await asyncio.gather(*(one(u, v) for u, v in spans.items()))
        return dict(pairs)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
