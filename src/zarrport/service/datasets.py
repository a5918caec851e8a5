"""Opened datasets of ``zarrport serve``: a bounded LRU that knows when a store changed.

stock ``titiler.xarray`` (2.4) keeps every dataset it ever opened in an unbounded
``functools.cache``: memory grows with every URL and a new Icechunk commit or a rewritten
reference file is never seen (titiler#1071). Here each entry is keyed by URL + group + the
version asked for, and carries a *version token* read cheaply on every request:

==================  =================================================================
Icechunk            the snapshot id at the tip of the branch (one small ref read); a
                    tag or snapshot id is fixed and never re-read. The dataset is
                    opened *at that snapshot*, so token and data always agree.
kerchunk JSON       size, mtime (ETag remotely) of the file
kerchunk Parquet    the same, of its ``.zmetadata``
Zarr (and pyramid)  the same, of the root ``zarr.json`` (``.zmetadata``/``.zgroup``)
NetCDF, GRIB        the same, of the file
==================  =================================================================

A token that differs from the entry's reopens the dataset (counted as ``stale``). When more
than ``capacity`` datasets are open the least recently used one is closed. Concurrent
requests for a dataset not yet open wait for one opening, not one each.

Opening also checks what a dataset *reads from* against the server's allow list: the chunk
targets of kerchunk references, the virtual chunk containers of an Icechunk repository.

Pyramids written by ``zarrport pyramid`` (root ``multiscales`` attributes) open as all their
levels, each with its resolution, so the tiler can read the level that matches a zoom.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zarrport import storage
from zarrport.errors import (
    CorruptSourceError,
    InvalidArgumentError,
    SourceNotFoundError,
    ZarrportError,
)
from zarrport.service.allow import AllowList

__all__ = ["CacheStats", "DatasetCache", "Level", "Opened", "cache_outcome"]

log = logging.getLogger("zarrport.service")

#: per-request record of what the cache did ({"cache": "hit"|"miss"|"stale"}); the
#: middleware puts a dict in, the (threadpool) endpoint fills it, the middleware reads it
cache_outcome: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "zarrport_cache_outcome", default=None)

_METADATA_FILES = ("zarr.json", ".zmetadata", ".zgroup")
#: arrays (and Parquet record files per array) a token looks at, at most
_MAX_ARRAYS = 256


@dataclass
class Level:
    """One resolution of a dataset: level 0 is full resolution."""

    ds: Any  # xarray.Dataset
    name: str  # the pyramid group ("" for a plain dataset)
    resolution: float | None  # |dx| of the x coordinate, in its units; None if unknown


@dataclass
class Opened:
    """A dataset as the server holds it."""

    url: str
    kind: str
    token: str
    levels: list[Level]
    repo: Any = field(default=None, repr=False)  # icechunk.Repository, for the token
    meta: tuple[str, ...] = field(default=(), repr=False)  # files the token looks at
    #: per (level, variable, sel): the selected array and what rio-tiler derives from it
    memo: OrderedDict = field(default_factory=OrderedDict, repr=False)
    memo_size: int = 256

    def memo_get(self, key: Any) -> Any:
        return self.memo.get(key)

    def memo_put(self, key: Any, value: Any) -> None:
        self.memo[key] = value
        while len(self.memo) > self.memo_size:
            try:
                self.memo.popitem(last=False)
            except KeyError:  # another thread emptied it first
                break

    @property
    def ds(self) -> Any:
        return self.levels[0].ds

    @property
    def is_pyramid(self) -> bool:
        return len(self.levels) > 1

    def close(self) -> None:
        for level in self.levels:
            try:
                level.ds.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


@dataclass
class _Probe:
    """What a token is read from before the dataset is open."""

    repo: Any = None
    meta: tuple[str, ...] = ()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    stale: int = 0
    evictions: int = 0


@dataclass(frozen=True)
class _Key:
    url: str
    group: str | None
    branch: str | None
    tag: str | None
    snapshot: str | None


class DatasetCache:
    """At most ``capacity`` open datasets, least recently used closed first."""

    #: seconds a dataset dropped from the cache stays open for requests still reading it
    GRACE_S = 30.0

    def __init__(self, allow: AllowList, *, capacity: int = 32,
                 storage_options: dict | None = None) -> None:
        if capacity < 1:
            raise InvalidArgumentError("the dataset cache needs room for at least 1 dataset")
        self.allow = allow
        self.capacity = capacity
        self.storage_options = storage_options
        self.stats = CacheStats()
        self._entries: OrderedDict[_Key, Opened] = OrderedDict()
        self._lock = threading.Lock()
        self._opening: dict[_Key, threading.Lock] = {}
        self._kinds: dict[str, str] = {}
        self._retired: list[tuple[float, Opened]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, url: str, *, group: str | None = None, branch: str | None = None,
            tag: str | None = None, snapshot: str | None = None) -> Opened:
        """The dataset at ``url`` (already checked against the allow list), current."""
        key = _Key(url, group or None, branch, tag, snapshot)
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and self._token(entry.kind, key, entry) == entry.token:
            return self._hit(key, entry)
        with self._lock:
            key_lock = self._opening.setdefault(key, threading.Lock())
        try:
            with key_lock:  # one opening per key; the others wait and then hit
                with self._lock:
                    entry = self._entries.get(key)
                if entry is not None and self._token(entry.kind, key, entry) == entry.token:
                    return self._hit(key, entry)
                outcome = "stale" if entry is not None else "miss"
                try:
                    opened = self._open(key)
                except Exception:
                    self._kinds.pop(url, None)  # it may have become another kind
                    raise
                with self._lock:
                    old = self._entries.pop(key, None)
                    self._entries[key] = opened
                    evicted = []
                    while len(self._entries) > self.capacity:
                        _, lru = self._entries.popitem(last=False)
                        evicted.append(lru)
                    if outcome == "stale":
                        self.stats.stale += 1
                    self.stats.misses += 1
                    self.stats.evictions += len(evicted)
                self._retire(([old] if old is not None else []) + evicted)
                _record(outcome)
                return opened
        finally:
            with self._lock:  # no lock kept per key ever asked for
                if self._opening.get(key) is key_lock and not key_lock.locked():
                    del self._opening[key]

    def _retire(self, gone: list[Opened]) -> None:
        """Close datasets dropped from the cache once no request can still be reading them
        (a request that got one just before holds it for one response: a grace period)."""
        now = time.monotonic()
        with self._lock:
            self._retired.extend((now, g) for g in gone)
            due = [g for t, g in self._retired if now - t >= self.GRACE_S]
            self._retired = [(t, g) for t, g in self._retired if now - t < self.GRACE_S]
        for g in due:
            g.close()

    def peek_token(self, url: str, *, group: str | None = None, branch: str | None = None,
                   tag: str | None = None, snapshot: str | None = None) -> str | None:
        """The current version token of an open dataset, None when it is not open (or the
        token cannot be read): what a cached rendering of it is checked against."""
        key = _Key(url, group or None, branch, tag, snapshot)
        entry = self._entries.get(key)
        if entry is None:
            return None
        try:
            return self._token(entry.kind, key, entry)
        except Exception:  # noqa: BLE001 - the request itself will say what is wrong
            return None

    def _hit(self, key: _Key, entry: Opened) -> Opened:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
            self.stats.hits += 1
        _record("hit")
        return entry

    def clear(self) -> None:
        with self._lock:
            entries = list(self._entries.values()) + [g for _, g in self._retired]
            self._entries.clear()
            self._retired = []
        for entry in entries:
            entry.close()

    # ------------------------------------------------------------------ opening

    def kind(self, url: str) -> str:
        kind = self._kinds.get(url)
        if kind is None:
            from zarrport.open import detect

            kind = detect(url, self.storage_options)
            if kind == "batch":
                raise InvalidArgumentError(
                    f"{url} is a zarrport batch output: name one of its collections' "
                    "repositories (collections/<id>.icechunk) or use collection=<id>",
                    source=url)
            self._kinds[url] = kind
        return kind

    def _open(self, key: _Key) -> Opened:
        import zarrport

        url = key.url
        kind = self.kind(url)
        if kind != "icechunk" and (key.branch or key.tag or key.snapshot):
            raise InvalidArgumentError(
                f"{url} is {kind}: only Icechunk repositories have versions (branch, tag, "
                "snapshot)", source=url)
        repo = None
        version: dict[str, str] = {}
        meta: tuple[str, ...] = ()
        if kind == "icechunk":
            repo = self._repository(url)
            token = self._token(kind, key, _Probe(repo=repo))
            version = {"snapshot": token}
        else:
            meta = self._metadata_files(kind, url)
            token = self._token(kind, key, _Probe(meta=meta))
        self._check_targets(url, kind)
        kwargs: dict[str, Any] = {"decode_coords": "all"}
        if key.group and kind in ("zarr", "icechunk", "netcdf4"):
            kwargs["group"] = key.group
        elif key.group:
            raise InvalidArgumentError(f"{url} is {kind}: it has no groups", source=url)
        if kind == "zarr" and not key.group:
            levels = self._pyramid_levels(url)
            if levels is not None:
                return Opened(url, kind, token, levels, meta=meta)
        try:
            ds = zarrport.open_dataset(url, storage_options=self.storage_options, **version,
                                       **kwargs)
        except OSError as err:  # xarray's netCDF4 backend: OSError("group not found: ...")
            if not key.group or isinstance(err, ZarrportError):
                raise
            from zarrport.service.tiles import NotServedError

            raise NotServedError(f"{url} has no group {key.group!r} ({err})") from err
        return Opened(url, kind, token, [Level(ds, "", _resolution(ds))], repo=repo, meta=meta)

    def _repository(self, url: str) -> Any:
        import icechunk

        from zarrport.virtual.icechunk import quiet_icechunk

        quiet_icechunk()
        st = storage.icechunk_storage(url, self.storage_options)
        try:
            return icechunk.Repository.open(st)
        except Exception as err:  # noqa: BLE001 - icechunk's errors are one type
            raise CorruptSourceError(f"{url}: not a readable Icechunk repository ({err})",
                                     source=url) from err

    def _token(self, kind: str, key: _Key, probe: Any) -> str:
        """The version token of the dataset at ``key`` now; ``probe`` (an :class:`Opened`
        or :class:`_Probe`) holds the repository or the metadata files to look at."""
        if kind == "icechunk":
            if key.snapshot:
                return key.snapshot
            try:
                if key.tag:
                    return probe.repo.lookup_tag(key.tag)
                return probe.repo.lookup_branch(key.branch or "main")
            except Exception as err:  # noqa: BLE001
                what = f"tag {key.tag!r}" if key.tag else f"branch {key.branch or 'main'!r}"
                raise SourceNotFoundError(f"{key.url} has no {what}", source=key.url) from err
        fs, path = storage.filesystem(key.url, self.storage_options)
        if kind in ("zarr", "kerchunk-parquet"):
            parts = []
            for name in probe.meta:
                try:
                    parts.append(_info_token(fs.info(name)))
                except FileNotFoundError:
                    parts.append("-")  # gone since: a change too
            if not any(p != "-" for p in parts):
                raise SourceNotFoundError(f"{key.url}: no Zarr metadata", source=key.url)
            return ";".join(parts)
        try:
            return _info_token(fs.info(path))
        except FileNotFoundError as err:
            raise SourceNotFoundError(f"{key.url} does not exist", source=key.url) from err

    def _metadata_files(self, kind: str, url: str) -> tuple[str, ...]:
        """What a Zarr store's (or kerchunk Parquet's) token looks at: the root metadata and
        each array's (an append or a new array rewrites them), and for Parquet each record
        file. Chunks rewritten in place do not change them: see docs/serve.md."""
        if kind not in ("zarr", "kerchunk-parquet"):
            return ()
        fs, path = storage.filesystem(url, self.storage_options)
        root = path.rstrip("/")
        files = []
        for name in _METADATA_FILES:
            if fs.exists(f"{root}/{name}"):
                files.append(f"{root}/{name}")
                break
        if not files:
            raise SourceNotFoundError(f"{url}: no Zarr metadata", source=url)
        try:
            children = [c["name"] for c in fs.ls(root, detail=True) if c["type"] == "directory"]
        except (FileNotFoundError, NotADirectoryError):
            children = []
        for child in sorted(children)[:_MAX_ARRAYS]:
            child = child.rstrip("/")
            if kind == "kerchunk-parquet":
                files.extend(sorted(fs.glob(f"{child}/refs.*.parq"))[:_MAX_ARRAYS])
                continue
            for name in ("zarr.json", ".zarray", ".zgroup"):
                if fs.exists(f"{child}/{name}"):
                    files.append(f"{child}/{name}")
                    break
        return tuple(files)

    def _check_targets(self, url: str, kind: str) -> None:
        """Refuse a dataset whose chunks live outside the allow list."""
        if kind in ("kerchunk-json", "kerchunk-parquet"):
            from zarrport.references import HandOver, all_targets

            try:
                targets = all_targets(url, kind, self.storage_options)
            except HandOver as err:
                raise CorruptSourceError(f"{url}: its chunk targets cannot be listed ({err})",
                                         source=url) from err
            base = url.rsplit("/", 1)[0] + "/"
            for target in sorted(targets):
                self.allow.check_target(_absolute(target, base), dataset=url)
                # and as the reader opens it: zarrport.references resolves a relative target
                # against the working directory and expands "~" (storage.normalize_url), so
                # "~/.aws/credentials" or "secret.txt" must not pass as "<ref dir>/..."
                self.allow.check_target(target, dataset=url)
        elif kind == "icechunk":
            import icechunk

            st = storage.icechunk_storage(url, self.storage_options)
            config = icechunk.Repository.fetch_config(st)
            for prefix in sorted((config.virtual_chunk_containers or {}) if config else {}):
                self.allow.check_target(prefix, dataset=url)

    def _pyramid_levels(self, url: str) -> list[Level] | None:
        import xarray as xr
        import zarr

        target = url.removeprefix("file://") if url.startswith("file://") else url
        opts = None if url.startswith("file://") else storage.filesystem_options(
            url, self.storage_options)
        try:
            root = zarr.open_group(target, mode="r", storage_options=opts)
        except Exception:  # noqa: BLE001 - not a group: a plain dataset
            return None
        ms = root.attrs.get("multiscales")
        if not isinstance(ms, dict) or not isinstance(ms.get("layout"), list):
            return None
        levels = []
        for entry in ms["layout"]:
            name = str(entry.get("asset", ""))
            if not name or name.startswith("/") or ".." in name.split("/"):
                raise CorruptSourceError(f"{url}: a multiscales level names {name!r}",
                                         source=url)
            ds = xr.open_dataset(target, group=name, engine="zarr", storage_options=opts,
                                 decode_coords="all", chunks=None)
            levels.append(Level(ds, name, _resolution(ds)))
        if not levels:
            return None
        levels.sort(key=lambda lv: lv.resolution or 0.0)
        return levels


def _record(outcome: str) -> None:
    box = cache_outcome.get()
    if box is not None:
        box["cache"] = outcome


def _info_token(info: dict[str, Any]) -> str:
    parts = [str(info.get("size"))]
    for k in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created"):
        if info.get(k) is not None:
            parts.append(str(info[k]))
    return "|".join(parts)


def _absolute(target: str, base: str) -> str:
    """A reference target as a URL: relative ones are relative to the reference file."""
    import re

    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", target) or target.startswith("/"):
        return target
    return base + target


#: names of the x (longitude) dimension, for the level resolution here and the tiler
_X_NAMES = ("x", "lon", "longitude", "LON", "LONGITUDE", "Lon", "Longitude", "rlon")


def _resolution(ds: Any) -> float | None:
    for name in _X_NAMES:
        if name in ds.coords and ds[name].ndim == 1 and ds[name].size > 1:
            values = np.asarray(ds[name].values, dtype="float64")
            step = np.abs(np.diff(values))
            return float(np.median(step)) if step.size else None
    return None
