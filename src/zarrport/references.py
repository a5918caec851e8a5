"""A fast xarray backend for kerchunk references (JSON and Parquet).

Why not only zarr-python: reading through ``ReferenceFileSystem`` + zarr 3 costs about
0.2 ms per chunk in zarr's async codec pipeline in zarr 3.4.2, as a native local zarr store
does (zarr-developers/zarr-python#2710); zarrport's reader is about 4x faster on the 3,650
small chunks of one grid point's daily series. Climate archives are often chunked per time
step, so point series touch tens of thousands of chunks. This backend keeps the references
as numpy arrays (file, offset, length per chunk), reads byte ranges with ``os.pread``
(local) or one concurrent ``cat_ranges`` call (object stores), undoes the codecs with
numcodecs -- the same codecs zarr uses -- and lets xarray do the CF decoding exactly as for
any store. The references stay plain kerchunk:
``xr.open_dataset("reference://", engine="zarr", ...)`` reads the same values (the
conformance suite checks both readers).

Use it as ``zarrport.open_dataset(refs)`` (the default for kerchunk outputs) or
``xr.open_dataset(refs, engine="zarrport")``.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import os
import threading
from typing import Any

import numcodecs
import numpy as np
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.backends.common import AbstractDataStore
from xarray.backends.store import StoreBackendEntrypoint
from xarray.core import indexing
from xarray.core.utils import FrozenDict

from zarrport import storage
from zarrport.errors import CorruptSourceError

_MISSING = -1


def _fill_from_json(value: Any, dtype: np.dtype) -> Any:
    if value is None:
        return None
    if dtype.kind == "S" and isinstance(value, str):
        return base64.b64decode(value)
    if isinstance(value, str) and dtype.kind in "fc":
        return {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}.get(value, value)
    return value


def _decode_inline(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    if value.startswith("base64:"):
        return base64.b64decode(value[7:])
    return value.encode()


class _Refs:
    """The references of one store: metadata by key, and per array its chunk table."""

    def __init__(self, url: str, storage_options: dict | None) -> None:
        self.url = url
        self.storage_options = storage_options
        self.meta: dict[str, Any] = {}
        self.targets: list[str] = []
        self._target_index: dict[str, int] = {}
        self.chunks: dict[str, dict[str, Any]] = {}  # array -> {"keys"/"inline"/...}

    def target(self, path: str) -> int:
        i = self._target_index.get(path)
        if i is None:
            i = self._target_index[path] = len(self.targets)
            self.targets.append(path)
        return i


def _load_json(url: str, storage_options: dict | None) -> _Refs:
    import ujson

    fs, path = storage.filesystem(url, storage_options)
    doc = ujson.loads(fs.cat_file(path))
    refs = doc.get("refs", doc) if doc.get("version") == 1 else doc
    out = _Refs(url, storage_options)
    per_array: dict[str, list[tuple[str, Any]]] = {}
    for key, value in refs.items():
        name, _, leaf = key.rpartition("/")
        if leaf.startswith("."):
            out.meta[key] = json.loads(value) if isinstance(value, str) else value
        elif name:
            per_array.setdefault(name, []).append((leaf, value))
    for name, entries in per_array.items():
        out.chunks[name] = {"entries": entries}
    return out


def _load_parquet(url: str, storage_options: dict | None) -> _Refs:
    fs, path = storage.filesystem(url, storage_options)
    path = path.rstrip("/")
    zmeta = json.loads(fs.cat_file(f"{path}/.zmetadata"))
    out = _Refs(url, storage_options)
    for key, value in zmeta["metadata"].items():
        out.meta[key] = json.loads(value) if isinstance(value, str) else value
    out.record_size = int(zmeta["record_size"])  # type: ignore[attr-defined]
    out.fs, out.path = fs, path  # type: ignore[attr-defined]
    return out


def _parquet_table(refs: _Refs, name: str, nchunks: int) -> dict[str, Any]:
    import pyarrow.parquet as pq

    fs, path = refs.fs, refs.path  # type: ignore[attr-defined]
    nrec = math.ceil(nchunks / refs.record_size) if nchunks else 0  # type: ignore[attr-defined]
    paths, offsets, sizes, raws = [], [], [], []
    for i in range(nrec):
        f = f"{path}/{name}/refs.{i}.parq"
        if not fs.exists(f):
            continue
        with fs.open(f, "rb") as fh:
            table = pq.read_table(fh)
        cols = {c: table.column(c).to_pylist() for c in table.column_names}
        n = table.num_rows
        paths.extend(cols.get("path", [None] * n))
        offsets.extend(cols.get("offset", [0] * n))
        sizes.extend(cols.get("size", [0] * n))
        raws.extend(cols.get("raw", [None] * n))
    return {"paths": paths, "offsets": offsets, "sizes": sizes, "raws": raws}


class ReferenceArray(BackendArray):
    """One array read straight from its chunks' byte ranges."""

    def __init__(self, refs: _Refs, name: str, zarray: dict[str, Any]) -> None:
        self.refs = refs
        self.name = name
        self.shape = tuple(zarray["shape"])
        self.chunk_shape = tuple(max(c, 1) for c in zarray["chunks"])
        self.vlen = zarray["dtype"] in ("|O", "O")
        self.dtype = np.dtype(object) if self.vlen else np.dtype(zarray["dtype"])
        fill = _fill_from_json(zarray.get("fill_value"), self.dtype)
        self.fill = fill if fill is not None else (b"" if self.dtype.kind == "S" else 0)
        filters = list(zarray.get("filters") or [])
        compressor = zarray.get("compressor")
        if (compressor or {}).get("id") == "zarrport.grib":
            # registered by its numcodecs.codecs entry point once installed; importing it
            # registers it too (a checkout run from source has no entry points)
            import zarrport.grib.numcodec  # noqa: F401
        self.codecs = [numcodecs.get_codec(dict(c)) for c in filters]
        if compressor:
            self.codecs.append(numcodecs.get_codec(dict(compressor)))
        self.grid = tuple(math.ceil(s / c) for s, c in zip(self.shape, self.chunk_shape,
                                                            strict=True))
        self._table_built = False
        self._fs_cache: dict[int, tuple[Any, str]] = {}
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()

    # -- the chunk table: source index / offset / length per chunk, inline bytes aside;
    # built on the first read, so opening a dataset only parses what it must
    def _build_table(self) -> None:
        grid = self.grid if self.grid else ()
        self.source = np.full(grid, _MISSING, dtype=np.int32)
        self.offset = np.zeros(grid, dtype=np.int64)
        self.length = np.zeros(grid, dtype=np.int64)
        self.inline: dict[tuple[int, ...], bytes] = {}
        info = self.refs.chunks.get(self.name)
        if info is None and hasattr(self.refs, "record_size"):
            info = _parquet_table(self.refs, self.name, math.prod(grid))
        if info is None:
            return
        if "entries" in info:
            ndim = len(grid)
            target = self.refs.target
            leaves: list[str] = []
            srcs: list[int] = []
            offs: list[int] = []
            lens: list[int] = []
            for leaf, value in info["entries"]:
                if leaf.count(".") != max(ndim - 1, 0) or (not ndim and leaf != "0"):
                    continue
                if isinstance(value, list) and len(value) == 3:
                    leaves.append(leaf)
                    srcs.append(target(value[0]))
                    offs.append(value[1])
                    lens.append(value[2])
                else:
                    self._set(tuple(map(int, leaf.split("."))) if ndim else (), value)
            if leaves and ndim:
                # all keys parsed in one split, placed with one fancy assignment per table
                idx = np.array(".".join(leaves).split("."), dtype=np.int64).reshape(-1, ndim)
                flat = np.ravel_multi_index(tuple(idx.T), grid)
                self.source.flat[flat] = srcs
                self.offset.flat[flat] = offs
                self.length.flat[flat] = lens
            elif leaves:
                self.source[()], self.offset[()], self.length[()] = srcs[0], offs[0], lens[0]
            return
        total = math.prod(grid)
        for n, (p, o, s, raw) in enumerate(zip(info["paths"], info["offsets"], info["sizes"],
                                               info["raws"], strict=True)):
            if n >= total:  # records are padded to record_size rows
                break
            idx = np.unravel_index(n, grid) if grid else ()
            if raw is not None:
                self.inline[tuple(int(i) for i in idx)] = bytes(raw)
            elif p:
                self._set(tuple(int(i) for i in idx), [p, o, s])

    def _set(self, idx: tuple[int, ...], value: Any) -> None:
        if isinstance(value, list):
            path = value[0]
            if len(value) == 1:
                self.source[idx] = self.refs.target(path)
                self.offset[idx] = 0
                self.length[idx] = -1  # whole file
            else:
                self.source[idx] = self.refs.target(path)
                self.offset[idx] = int(value[1])
                self.length[idx] = int(value[2])
        else:
            self.inline[idx] = _decode_inline(value)

    def __getstate__(self) -> dict[str, Any]:  # picklable for Dask: no open descriptors
        state = self.__dict__.copy()
        state["_fds"] = {}
        state["_fs_cache"] = {}
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- bytes
    def _fetch_many(self, wanted: list[tuple[int, ...]]) -> list[bytes | None]:
        out: list[bytes | None] = [None] * len(wanted)
        remote: list[int] = []
        for i, idx in enumerate(wanted):
            if idx in self.inline:
                out[i] = self.inline[idx]
                continue
            s = int(self.source[idx])
            if s == _MISSING:
                continue
            target = self.refs.targets[s]
            if target.startswith("/") or target.startswith("file://"):
                out[i] = self._pread(s, target, int(self.offset[idx]), int(self.length[idx]))
            else:
                remote.append(i)
        if remote:
            # one concurrent cat_ranges per filesystem (object stores: requests in flight)
            by_fs: dict[int, list[int]] = {}
            for i in remote:
                fs, _path = self._remote(int(self.source[wanted[i]]))
                by_fs.setdefault(id(fs), []).append(i)
            for members in by_fs.values():
                fs = self._remote(int(self.source[wanted[members[0]]]))[0]
                paths = [self._remote(int(self.source[wanted[i]]))[1] for i in members]
                starts = [int(self.offset[wanted[i]]) for i in members]
                ends = [s + int(self.length[wanted[i]]) for s, i in zip(starts, members,
                                                                         strict=True)]
                for i, blob in zip(members, fs.cat_ranges(paths, starts, ends), strict=True):
                    if isinstance(blob, Exception):
                        raise blob
                    out[i] = blob
        return out

    def _remote(self, s: int) -> tuple[Any, str]:
        """(filesystem, path) of remote source ``s``, resolved once per source."""
        cached = self._fs_cache.get(s)
        if cached is None:
            url = storage.normalize_url(self.refs.targets[s])
            cached = self._fs_cache[s] = storage.filesystem(url, self.refs.storage_options)
        return cached

    def _pread(self, s: int, target: str, offset: int, length: int) -> bytes:
        fd = self._fds.get(s)
        if fd is None:
            with self._lock:
                fd = self._fds.get(s)
                if fd is None:
                    fd = os.open(target.removeprefix("file://"), os.O_RDONLY)
                    self._fds[s] = fd
        if length < 0:
            length = os.fstat(fd).st_size - offset
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise CorruptSourceError(
                f"{target}: {length} bytes at {offset} referenced, only {len(data)} there",
                source=target,
            )
        return data

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass

    # -- decoding
    def _decode(self, raw: bytes) -> np.ndarray:
        buf: Any = raw
        for codec in reversed(self.codecs):
            buf = codec.decode(buf)
        if self.vlen:
            return np.asarray(buf, dtype=object).reshape(self.chunk_shape)
        arr = np.frombuffer(memoryview(buf), dtype=self.dtype) if not isinstance(
            buf, np.ndarray) else buf.view(self.dtype).ravel()
        n = math.prod(self.chunk_shape)
        if arr.size != n:  # a short last chunk written unpadded
            full = np.full(n, self.fill, dtype=self.dtype)
            full[: arr.size] = arr[:n]
            arr = full
        return arr.reshape(self.chunk_shape)

    # -- xarray
    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._read
        )

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        if not self._table_built:
            with self._lock:
                if not self._table_built:
                    self._build_table()
                    # only now: another thread must never see a half-filled table
                    self._table_built = True
        # outer indexing: each element is an int, a slice or a 1-D integer array
        per_dim: list[np.ndarray] = []
        squeeze: list[int] = []
        for axis, (k, n) in enumerate(zip(key, self.shape, strict=True)):
            if isinstance(k, slice):
                per_dim.append(np.arange(n)[k])
            elif isinstance(k, int | np.integer):
                per_dim.append(np.array([int(k) % n if n else 0]))
                squeeze.append(axis)
            else:
                per_dim.append(np.asarray(k, dtype=np.int64) % max(n, 1))
        out_shape = tuple(len(ix) for ix in per_dim)
        out = np.full(out_shape, self.fill if not self.vlen else "", dtype=self.dtype)
        if math.prod(out_shape):
            # group the wanted positions of each dimension by chunk: (chunk index, where in
            # the output, where in the chunk) -- slices when contiguous (cheap basic indexing)
            groups = [_group_by_chunk(ix, c) for ix, c in zip(per_dim, self.chunk_shape,
                                                                strict=True)]
            combos = list(itertools.product(*groups))
            wanted = [tuple(g[0] for g in combo) for combo in combos]
            blobs = self._fetch_many(wanted)
            fancy = any(not isinstance(g[1], slice) for grp in groups for g in grp)
            for combo, blob in zip(combos, blobs, strict=True):
                if blob is None:
                    continue
                chunk = self._decode(blob)
                if fancy:
                    osel: Any = np.ix_(*[_as_index(g[1]) for g in combo]) if combo else ()
                    csel: Any = np.ix_(*[_as_index(g[2]) for g in combo]) if combo else ()
                else:
                    osel = tuple(g[1] for g in combo)
                    csel = tuple(g[2] for g in combo)
                out[osel] = chunk[csel]
        if squeeze:
            out = out.reshape(tuple(s for i, s in enumerate(out_shape) if i not in squeeze))
        return out


def _group_by_chunk(ix: np.ndarray, c: int) -> list[tuple[int, Any, Any]]:
    """Positions ``ix`` along one dimension grouped by chunk of length ``c``."""
    if ix.size and np.all(np.diff(ix) == 1):  # a contiguous run: pure slices
        first, last = int(ix[0]), int(ix[-1])
        out = []
        for u in range(first // c, last // c + 1):
            a, b = max(first, u * c), min(last + 1, (u + 1) * c)
            out.append((u, slice(a - first, b - first), slice(a - u * c, b - u * c)))
        return out
    cidx = ix // c
    return [(int(u), np.nonzero(cidx == u)[0], ix[cidx == u] - u * c)
            for u in np.unique(cidx)]


def _as_index(sel: Any) -> np.ndarray:
    return np.arange(sel.start, sel.stop) if isinstance(sel, slice) else sel


class ReferenceStore(AbstractDataStore):
    """kerchunk references as an xarray data store (variables, attributes, dimensions)."""

    def __init__(self, url: str, storage_options: dict | None = None,
                 kind: str | None = None) -> None:
        url = storage.normalize_url(url)
        if kind is None:
            from zarrport.open import detect

            kind = detect(url, storage_options)
        self.refs = (_load_parquet if kind == "kerchunk-parquet" else _load_json)(
            url, storage_options)
        self._variables: FrozenDict | None = None

    def get_variables(self) -> FrozenDict:
        if self._variables is None:
            self._variables = self._make_variables()
        return self._variables

    def _make_variables(self) -> FrozenDict:
        import xarray as xr

        names = sorted({k.rpartition("/")[0] for k in self.refs.meta
                        if k.endswith("/.zarray")})
        variables = {}
        for name in names:
            zarray = self.refs.meta[f"{name}/.zarray"]
            attrs = dict(self.refs.meta.get(f"{name}/.zattrs", {}))
            dims = attrs.pop("_ARRAY_DIMENSIONS", [f"dim_{i}" for i in
                                                   range(len(zarray["shape"]))])
            array = ReferenceArray(self.refs, name, zarray)
            # as xarray's zarr backend does for Zarr v2: fill_value means _FillValue
            if zarray.get("fill_value") is not None and "_FillValue" not in attrs:
                attrs["_FillValue"] = _fill_from_json(zarray["fill_value"], array.dtype)
            encoding = {"chunks": array.chunk_shape, "preferred_chunks":
                        dict(zip(dims, array.chunk_shape, strict=True)),
                        "dtype": array.dtype}
            data = indexing.LazilyIndexedArray(array)
            variables[name] = xr.Variable(dims, data, attrs, encoding)
        return FrozenDict(variables)

    def get_attrs(self) -> FrozenDict:
        return FrozenDict(self.refs.meta.get(".zattrs", {}))

    def get_dimensions(self) -> FrozenDict:
        dims: dict[str, int] = {}
        for v in self.get_variables().values():
            dims.update(zip(v.dims, v.shape, strict=True))
        return FrozenDict(dims)


class ZarrportBackendEntrypoint(BackendEntrypoint):
    """``xr.open_dataset(refs, engine="zarrport")`` for kerchunk JSON / Parquet references."""

    description = "kerchunk references (JSON/Parquet) read directly by zarrport"
    url = "https://github.com/zarrport"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "storage_options")

    def open_dataset(self, filename_or_obj: Any, *, drop_variables: Any = None,
                     storage_options: dict | None = None, kind: str | None = None,
                     mask_and_scale: bool = True, decode_times: Any = True,
                     concat_characters: bool = True, decode_coords: Any = True,
                     use_cftime: Any = None, decode_timedelta: Any = None) -> Any:
        store = ReferenceStore(str(filename_or_obj), storage_options, kind)
        return StoreBackendEntrypoint().open_dataset(
            store, mask_and_scale=mask_and_scale, decode_times=decode_times,
            concat_characters=concat_characters, decode_coords=decode_coords,
            drop_variables=drop_variables, use_cftime=use_cftime,
            decode_timedelta=decode_timedelta,
        )

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        return isinstance(filename_or_obj, str) and filename_or_obj.endswith(
            (".json", ".parquet"))
