"""Fast reads of Icechunk repositories: chunk references resolved in bulk, bytes read like
:mod:`zarrport.references` reads kerchunk references.

Why: reading one grid point's series of the 200-file benchmark archive touches 73,000 small
chunks; through zarr-python's codec pipeline and one ``IcechunkStore.get`` per chunk that
costs ~0.5-0.7 ms a chunk (zarr 3.4.2, icechunk 2.3.0: 35-52 s, ``bench_icechunk_read.py``;
73,000 concurrent ``get`` calls alone took 12 s). Here each array's references come out of
the session in one columnar call (``IcechunkStore.array_chunk_iterator``, icechunk >= 2.3),
local virtual chunks are read with ``os.pread`` and decoded with numcodecs -- the codecs
zarr itself uses -- and xarray's own zarr backend does everything else (metadata,
attributes, CF decoding, Dask chunks), so the dataset is the one ``xr.open_zarr(store)``
gives.

What is read through Icechunk itself (``store.get``, in one concurrent batch per read),
exactly as zarr would: native and inline chunks, virtual chunks on object stores, and
virtual chunks of any local file that is not byte for byte the one referenced -- zarrport
trusts a local source only if the snapshot's provenance (written by zarrport with every
commit) records it with the size and modification time it has now; Icechunk's own
checksum check then decides about the others. Arrays whose codecs this reader does not
know (sharding, transposes, array-to-array filters, strings ...) and vectorized
(point-wise) indexing go through zarr unchanged. GRIB messages (the ``zarrport.grib``
serializer) are fetched like any other chunk and decoded by that codec in the reading
thread, so Dask threads decode messages in parallel instead of queueing on zarr's loop.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from typing import Any

import numcodecs
import numpy as np
from xarray.backends.zarr import ZarrArrayWrapper, ZarrStore
from xarray.core import indexing

from zarrport.errors import CorruptSourceError
from zarrport.references import read_outer  # one chunk assembly for both readers

_MISSING, _LOCAL, _STORE = 0, 1, 2


def _is_grib_codec(codec: Any) -> bool:
    return type(codec).__name__ == "GribCodec" and type(codec).__module__ == (
        "zarrport.grib.codec")


def _numcodecs_chain(zarr_array: Any) -> tuple[np.dtype, list[Any]] | None:
    """(the on-disk dtype, the bytes-to-bytes codecs as numcodecs codecs, applied in this
    order on write) for an array this reader decodes exactly as zarr does; None otherwise."""
    from zarr.codecs import BytesCodec, GzipCodec, ZstdCodec

    try:
        if zarr_array.metadata.zarr_format != 3 or zarr_array.filters:
            return None
        chunks = zarr_array.chunks
        if zarr_array.shards is not None:
            return None
    except (NotImplementedError, AttributeError):  # rectilinear grids, zarr v2 ...
        return None
    serializer = zarr_array.serializer
    dtype = np.dtype(zarr_array.dtype)
    if _is_grib_codec(serializer):
        # one GRIB message a chunk, decoded by zarrport.grib itself in the reading (Dask)
        # thread, not in zarr's event loop: messages decode in parallel
        return (dtype, [serializer]) if not zarr_array.compressors else None
    if not isinstance(serializer, BytesCodec) or dtype.kind not in "biufc" or not chunks:
        return None
    if dtype.itemsize > 1:
        endian = getattr(serializer.endian, "value", serializer.endian)
        dtype = dtype.newbyteorder("<" if endian == "little" else ">")
    codecs: list[Any] = []
    for c in zarr_array.compressors:
        name = type(c).__module__
        if isinstance(c, GzipCodec):
            codecs.append(numcodecs.GZip(level=c.level))
        elif isinstance(c, ZstdCodec):
            codecs.append(numcodecs.Zstd(level=c.level, checksum=c.checksum))
        elif name.startswith("zarr.codecs.numcodecs") and getattr(c, "codec_name", "").startswith(
                "numcodecs."):
            try:
                codecs.append(numcodecs.get_codec(
                    {"id": c.codec_name.removeprefix("numcodecs."), **c.codec_config}))
            except (KeyError, ValueError, TypeError):
                return None
        else:
            return None
    return dtype, codecs


class _Reader:
    """One array's chunk table and reads (see the module docstring)."""

    def __init__(self, zarr_array: Any, trusted: dict[str, tuple[str, int, float]],
                 dtype: np.dtype,
                 codecs: list[Any]) -> None:
        self.store = zarr_array.store
        self.path = zarr_array.path
        self.metadata = zarr_array.metadata
        self.shape = tuple(zarr_array.shape)
        self.chunk_shape = tuple(zarr_array.chunks)
        self.disk_dtype = dtype
        self.dtype = np.dtype(zarr_array.dtype)
        self.codecs = codecs
        fill = zarr_array.metadata.fill_value
        self.fill = fill if fill is not None else self.dtype.type(0)
        self.grid = tuple(math.ceil(s / c) for s, c in zip(self.shape, self.chunk_shape,
                                                            strict=True))
        self.trusted = trusted
        self._table_built = False
        self._lock = threading.Lock()
        self._fds: dict[int, int] = {}

    def __getstate__(self) -> dict[str, Any]:  # picklable for Dask: no descriptors
        state = self.__dict__.copy()
        state["_fds"], state["_lock"] = {}, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass

    # -- the chunk table: how (local pread / through Icechunk / missing), file, offset,
    # length per chunk, from one columnar listing of the array's references
    def _build_table(self) -> None:
        from zarr.core.sync import sync

        n = math.prod(self.grid)
        self.how = np.zeros(n, dtype=np.uint8)
        self.source = np.zeros(n, dtype=np.int32)
        self.offset = np.zeros(n, dtype=np.int64)
        self.length = np.zeros(n, dtype=np.int64)
        self.files: list[str] = []
        virtual = np.zeros(n, dtype=bool)

        async def batches() -> list[Any]:
            out = []
            async for b in self.store.array_chunk_iterator(self.path):
                out.append(b)
            return out

        index: dict[str, int] = {}
        for coords, kinds, paths, offsets, lengths, _inlined in sync(batches()):
            if not len(kinds):
                continue
            flat = (np.ravel_multi_index(tuple(np.asarray(coords, dtype=np.int64).T), self.grid)
                    if self.grid else np.zeros(len(kinds), dtype=np.int64))
            src = np.fromiter((index.setdefault(p, len(index)) for p in paths),
                              dtype=np.int32, count=len(paths))
            self.how[flat] = _STORE
            self.source[flat] = src
            self.offset[flat] = offsets
            self.length[flat] = lengths
            # icechunk.ChunkType: native 1, virtual 2, inline 3
            virtual[flat[np.asarray(kinds) == 2]] = True
        self.files = [""] * len(index)
        for p, i in index.items():
            self.files[i] = p
        local = np.array([p in self.trusted for p in self.files] or [False])
        self.how[(self.how == _STORE) & virtual & local[self.source]] = _LOCAL
        self.local_paths = [self.trusted.get(p, ("", 0, 0.0))[0] for p in self.files]
        self.local_stats = [self.trusted.get(p, ("", 0, 0.0))[1:] for p in self.files]

    # -- bytes
    def _pread(self, s: int, offset: int, length: int) -> bytes | None:
        """The bytes, or None when the file is no longer the one referenced (size or
        modification time changed since the snapshot's provenance recorded it, checked at
        every read): then the chunk goes through Icechunk, which decides (it refuses a
        source modified after the commit)."""
        fd = self._fds.get(s)
        if fd is None:
            with self._lock:
                fd = self._fds.get(s)
                if fd is None:
                    try:
                        fd = self._fds[s] = os.open(self.local_paths[s], os.O_RDONLY)
                    except OSError:
                        return None  # gone or unreadable: Icechunk says what is wrong
        st = os.fstat(fd)
        if (st.st_size, st.st_mtime) != tuple(self.local_stats[s]):
            return None
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise CorruptSourceError(
                f"{self.files[s]}: {length} bytes at {offset} referenced, only {len(data)} "
                "there", source=self.files[s])
        return data

    def _fetch(self, flat: list[int]) -> list[bytes | None]:
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        out: list[bytes | None] = [None] * len(flat)
        through: list[int] = []
        how, source, offset, length = self.how, self.source, self.offset, self.length
        for i, f in enumerate(flat):
            h = how[f]
            if h == _LOCAL:
                out[i] = self._pread(int(source[f]), int(offset[f]), int(length[f]))
                if out[i] is None:
                    through.append(i)
            elif h == _STORE:
                through.append(i)
        if through:
            proto = default_buffer_prototype()
            keys = [f"{self.path}/" + self.metadata.encode_chunk_key(
                np.unravel_index(flat[i], self.grid) if self.grid else ()) for i in through]

            async def get_all() -> list[Any]:
                return await asyncio.gather(*(self.store.get(k, proto) for k in keys))

            for i, buf in zip(through, sync(get_all()), strict=True):
                out[i] = None if buf is None else buf.to_bytes()
        return out

    def _decode(self, raw: bytes) -> np.ndarray:
        if self.codecs and _is_grib_codec(self.codecs[0]):
            from types import SimpleNamespace

            spec = SimpleNamespace(dtype=self.metadata.data_type, shape=self.chunk_shape)
            return self.codecs[0]._decode_array(raw, spec)
        buf: Any = raw
        for codec in reversed(self.codecs):
            buf = codec.decode(buf)
        arr = np.frombuffer(memoryview(buf).cast("B"), dtype=self.disk_dtype)
        if arr.size != math.prod(self.chunk_shape):
            raise CorruptSourceError(
                f"{self.path}: a chunk decodes to {arr.size} values, not "
                f"{math.prod(self.chunk_shape)}", source=self.path)
        return arr.reshape(self.chunk_shape)

    # -- outer indexing: each key element an int, a slice or a 1-D integer array
    def read(self, key: tuple[Any, ...]) -> np.ndarray:
        if not self._table_built:
            with self._lock:
                if not self._table_built:
                    self._build_table()
                    self._table_built = True  # only now: never a half-built table
        grid = self.grid

        def fetch(wanted: list[tuple[int, ...]]) -> list[bytes | None]:
            return self._fetch([int(np.ravel_multi_index(i, grid)) if grid else 0
                                for i in wanted])

        return read_outer(key, self.shape, self.chunk_shape, self.fill, self.dtype, fetch,
                          lambda blob, _idx: self._decode(blob))


class IcechunkArrayWrapper(ZarrArrayWrapper):
    """xarray's wrapper of a zarr array, basic and outer indexing read by :class:`_Reader`
    (vectorized indexing and async reads stay zarr's)."""

    __slots__ = ("_reader",)

    def __init__(self, zarr_array: Any, reader: _Reader) -> None:
        super().__init__(zarr_array)
        self._reader = reader

    def _getitem(self, key: Any) -> np.ndarray:
        return self._reader.read(key)

    def _oindex(self, key: Any) -> np.ndarray:
        return self._reader.read(key)


class IcechunkZarrStore(ZarrStore):
    """xarray's ZarrStore whose variables read through :class:`IcechunkArrayWrapper`."""

    _zp_trusted: dict[str, tuple[str, int, float]]

    def open_store_variable(self, name: str) -> Any:
        var = super().open_store_variable(name)
        zarr_array = self.members[name]
        chain = _numcodecs_chain(zarr_array)
        if chain is None:
            return var
        wrapper = IcechunkArrayWrapper(zarr_array, _Reader(zarr_array, self._zp_trusted, *chain))
        var._data = indexing.LazilyIndexedArray(wrapper)
        return var


def trusted_sources(store: Any, url: str, storage_options: dict | None
                    ) -> dict[str, tuple[str, int, float]]:
    """Source URL -> (local path, size, modification time), for the local files the store's
    snapshot references that are unchanged since zarrport referenced them (same size and
    modification time as its provenance records for this very snapshot; checked again at
    every read). Empty without such provenance."""
    import icechunk

    from zarrport import storage
    from zarrport.virtual.icechunk import PROVENANCE_KEY

    try:
        repo = icechunk.Repository.open(storage.icechunk_storage(url, storage_options))
        meta = repo.lookup_snapshot(store.session.snapshot_id).metadata or {}
    except Exception:  # noqa: BLE001 - no provenance: everything through Icechunk
        return {}
    out: dict[str, tuple[str, int, float]] = {}
    for src in (meta.get(PROVENANCE_KEY) or {}).get("sources") or []:
        u = src.get("url") or ""
        if not u.startswith("file://") or src.get("mtime") is None or src.get("size") is None:
            continue
        path = u.removeprefix("file://")
        try:
            st = os.stat(path)
        except OSError:
            continue
        if st.st_size == int(src["size"]) and st.st_mtime == float(src["mtime"]):
            out[u] = (path, st.st_size, st.st_mtime)
    return out


def open_dataset(store: Any, url: str, storage_options: dict | None = None,
                 **xarray_kwargs: Any) -> Any:
    """``xr.open_dataset(store, engine="zarr", consolidated=False, zarr_format=3)`` with
    chunks read by this module where it can (see the module docstring)."""
    import xarray as xr

    # xarray ignores group= when given a store object: the store opens at the group
    group = xarray_kwargs.pop("group", None)
    zstore = IcechunkZarrStore.open_group(store, mode="r", group=group, consolidated=False,
                                          zarr_format=3)
    zstore._zp_trusted = trusted_sources(store, url, storage_options)
    return xr.open_dataset(store, engine="zarr", store=zstore, consolidated=False,
                           zarr_format=3, **xarray_kwargs)
