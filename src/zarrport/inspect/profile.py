"""``zarrport inspect --profile``: how a dataset's chunks are stored and what reads cost.

For every variable of a Zarr v2/v3 store, an Icechunk repository, kerchunk references
(JSON or Parquet) or a NetCDF-4/HDF5 or NetCDF-3 file: the storage chunk shape, how many
chunks are stored, the distribution of their stored (compressed) sizes, the uncompressed
chunk size, the compression ratio and the wall time of reading one chunk through
:func:`zarrport.open_dataset`. Given a selection (``tas[:, 10, 20]``) it also counts the
chunks and bytes that read touches, and times it.

Where the stored sizes come from:

* Zarr stores: the size of each chunk object (of each shard for sharded v3 arrays);
* Icechunk: the manifest's chunk references (virtual: the referenced byte range; native and
  inline: the chunk's length), one columnar listing per array;
* kerchunk: the ``[url, offset, length]`` references, parsed by :mod:`zarrport.references`
  (``[url]``: the whole file's size; inline data: its decoded length);
* NetCDF-4/HDF5: the HDF5 chunk index (contiguous data is one chunk of its storage size);
* NetCDF-3: uncompressed, one chunk per record of a record variable, the whole variable
  otherwise (the bytes the values take, without the format's 4-byte padding).

GRIB files are not profiled (a one-line error).

>>> report = profile_source("tas.icechunk", read="tas[:, 10, 20]")   # doctest: +SKIP
>>> report.variable("tas").ratio, report.read.chunks_touched        # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zarrport import storage
from zarrport.errors import InvalidArgumentError
from zarrport.inspect.guidelines import human_bytes

#: reads timed per measurement; the median is reported
REPEATS = 3
#: bins of the stored chunk size histogram
HISTOGRAM_BINS = 8

_MISSING = -1


# ---------------------------------------------------------------------------- selections


@dataclass(frozen=True)
class ReadExpression:
    """A parsed ``VAR[index, ...]``: per given dimension an ``int`` or a ``(start, stop)``
    pair of ints or None (a step-1 slice); dimensions not given are whole (``:``)."""

    text: str
    variable: str
    items: tuple[int | tuple[int | None, int | None], ...]

    def resolve(self, shape: tuple[int, ...]) -> tuple[int | slice, ...]:
        """The selection on an array of ``shape`` as numpy indexes every dimension: ints
        in range (negative from the end), slices with their bounds clipped as numpy clips
        them (step 1). Too many indices or an int out of range: InvalidArgumentError."""
        if len(self.items) > len(shape):
            raise InvalidArgumentError(
                f"--read {self.text!r}: {len(self.items)} indices for {self.variable!r}, "
                f"which has {len(shape)} dimension(s) {tuple(shape)}")
        out: list[int | slice] = []
        for axis, (item, n) in enumerate(zip(self.items, shape, strict=False)):
            if isinstance(item, int):
                if not -n <= item < n:
                    raise InvalidArgumentError(
                        f"--read {self.text!r}: index {item} is out of range for dimension "
                        f"{axis} of {self.variable!r} (length {n})")
                out.append(item + n if item < 0 else item)
            else:
                start, stop, _ = slice(*item).indices(n)
                out.append(slice(start, max(start, stop)))
        out.extend(slice(0, n) for n in shape[len(self.items):])
        return tuple(out)


_NAME = re.compile(r"\s*([^\[\]]+?)\s*(?:\[(.*)\])?\s*")
_INT = r"[+-]?\s*\d+"
_PART = re.compile(rf"\s*(?:(?P<int>{_INT})|(?P<start>{_INT})?\s*:\s*(?P<stop>{_INT})?"
                   rf"\s*(?::\s*(?P<step>{_INT})?)?)\s*")


def _int(text: str) -> int:
    return int(text.replace(" ", "").replace("\t", ""))


def parse_read(text: str) -> ReadExpression:
    """``'tas[:, 10, 20]'`` -> :class:`ReadExpression`, parsed by hand (never evaluated):
    each index an int (negative from the end) or a slice ``a:b`` / ``a:b:1`` with optional
    bounds; fewer indices than dimensions leave the rest whole; ``tas`` alone is all of
    ``tas``. Anything else (steps other than 1, ``...``, arrays, names, expressions) is an
    InvalidArgumentError."""
    m = _NAME.fullmatch(text or "")
    if not m:
        raise InvalidArgumentError(
            f"--read {text!r}: expected VARIABLE[INDEX, ...], e.g. 'tas[:, 10, 20]'")
    name, body = m.group(1), m.group(2)
    if body is None:
        if "[" in text or "]" in text:
            raise InvalidArgumentError(f"--read {text!r}: unbalanced brackets")
        return ReadExpression(text, name, ())
    if not body.strip():
        raise InvalidArgumentError(f"--read {text!r}: empty index (write {name} or "
                                   f"{name}[:] for the whole variable)")
    items: list[int | tuple[int | None, int | None]] = []
    for part in body.split(","):
        p = _PART.fullmatch(part)
        if not p:
            raise InvalidArgumentError(
                f"--read {text!r}: {part.strip()!r} is not an integer or a slice a:b "
                "(simple indexing only: integers and step-1 slices)")
        if p.group("int") is not None:
            items.append(_int(p.group("int")))
            continue
        step = p.group("step")
        if step is not None and _int(step) != 1:
            raise InvalidArgumentError(
                f"--read {text!r}: step {_int(step)} in {part.strip()!r}: only steps of 1 "
                "are supported")
        start, stop = p.group("start"), p.group("stop")
        items.append((None if start is None else _int(start),
                      None if stop is None else _int(stop)))
    return ReadExpression(text, name, tuple(items))


def _format_key(key: tuple[int | slice, ...]) -> str:
    """``[0:25, 10, 20]``; empty for a 0-d variable (``VAR`` alone selects it)."""
    if not key:
        return ""
    return "[" + ", ".join(str(k) if isinstance(k, int) else f"{k.start}:{k.stop}"
                           for k in key) + "]"


# ---------------------------------------------------------------------------- storage


@dataclass
class _Storage:
    """One variable's storage: its chunk (or shard, or record) shape and the stored size of
    each chunk of the grid (``-1``: not stored, reads as the fill value)."""

    layout: str
    unit: str
    chunks: tuple[int, ...]
    sizes: np.ndarray
    dtype: np.dtype
    itemsize: int | None
    #: the inner chunk shape of a sharded array
    inner_chunks: tuple[int, ...] | None = None


def _grid(shape: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(math.ceil(s / c) if c else 0 for s, c in zip(shape, chunks, strict=True))


def _hdf5_storages(url: str, storage_options: dict | None,
                   group: str | None) -> dict[str, _Storage]:
    import h5py

    from zarrport.hdf5 import use_hdf5_plugins
    from zarrport.virtual.hdf5 import open_group
    from zarrport.virtual.parse import recognised_source

    use_hdf5_plugins()
    out: dict[str, _Storage] = {}
    with recognised_source(url, storage_options) as (_kind, target, _f, _st), \
            h5py.File(target, "r") as f:
        g = open_group(f, group, url)
        for key in g:
            try:
                dset = g.get(key)
            except (KeyError, OSError):  # dangling link
                continue
            if not isinstance(dset, h5py.Dataset):
                continue
            name = key.removeprefix("_nc4_non_coord_")
            st = _hdf5_storage(dset)
            if st is not None:
                out[name] = st
    return out


def _hdf5_storage(dset: Any) -> _Storage | None:
    import h5py

    shape = tuple(int(s) for s in dset.shape)
    dt = dset.dtype
    itemsize = None if (dt.kind == "O" or h5py.check_vlen_dtype(dt) is not None) \
        else dt.itemsize
    layout = dset.id.get_create_plist().get_layout()
    if layout == h5py.h5d.CHUNKED:
        chunks = tuple(int(c) for c in dset.chunks)
        grid = _grid(shape, chunks)
        sizes = np.full(grid, _MISSING, dtype=np.int64)

        def visit(info: Any) -> None:
            idx = tuple(int(o) // c for o, c in zip(info.chunk_offset, chunks, strict=True))
            if all(i < n for i, n in zip(idx, grid, strict=True)):
                sizes[idx] = int(info.size)

        if math.prod(grid):
            dset.id.chunk_iter(visit)
        return _Storage("chunked", "chunk", chunks, sizes, dt, itemsize)
    if layout in (h5py.h5d.CONTIGUOUS, h5py.h5d.COMPACT):
        grid = tuple(1 if s else 0 for s in shape)
        sizes = np.full(grid, _MISSING, dtype=np.int64)
        allocated = (dset.id.get_offset() is not None if layout == h5py.h5d.CONTIGUOUS
                     else True)
        if math.prod(grid) and allocated:
            sizes[...] = int(dset.id.get_storage_size())
        kind = "contiguous" if layout == h5py.h5d.CONTIGUOUS else "compact"
        return _Storage(kind, "chunk", shape, sizes, dt, itemsize)
    return None  # virtual datasets have no chunks of their own


def _netcdf3_storages(url: str, storage_options: dict | None,
                      group: str | None) -> dict[str, _Storage]:
    from zarrport.virtual.netcdf3 import parse_netcdf3
    from zarrport.virtual.parse import recognised_source

    if group not in (None, "", "/"):
        raise InvalidArgumentError(f"{url}: NetCDF-3 files have no groups (got "
                                   f"group={group!r})", source=url)
    out: dict[str, _Storage] = {}
    with recognised_source(url, storage_options) as (_kind, _target, f, st):
        vds = parse_netcdf3(f, url, file_size=st.size)
    for name, var in vds.variables.items():
        shape = tuple(int(s) for s in var.shape)
        if var.layout == "record":
            chunks, unit = (1, *shape[1:]), "record"
        else:
            chunks, unit = shape, "chunk"
        grid = _grid(shape, chunks) if chunks else ()
        itemsize = var.dtype.itemsize
        # uncompressed: every chunk is stored, as many bytes as its values take
        sizes = np.full(grid, math.prod(chunks) * itemsize, dtype=np.int64)
        out[name] = _Storage(var.layout, unit, chunks, sizes, var.dtype, itemsize)
    return out


def _zarr_members(root: Any, url: str, group: str | None) -> Any:
    """The arrays directly in ``group`` of an open zarr root group."""
    if group and group.strip("/"):
        try:
            g = root[group.strip("/")]
        except KeyError:
            g = None
        import zarr

        if not isinstance(g, zarr.Group):
            raise InvalidArgumentError(f"{url}: group {group!r} does not exist", source=url)
        root = g
    return root.arrays()


def _zarr_itemsize(dtype: np.dtype) -> int | None:
    return None if dtype.kind in "OUT" else dtype.itemsize


def _zarr_grid_chunks(arr: Any) -> tuple[tuple[int, ...], str, tuple[int, ...] | None]:
    """(shape of the stored objects' grid cells, unit, inner chunk shape if sharded)."""
    shards = getattr(arr, "shards", None)
    if shards is not None:
        return tuple(int(s) for s in shards), "shard", tuple(int(c) for c in arr.chunks)
    return tuple(int(c) for c in arr.chunks), "chunk", None


def _decode_chunk_key(key: str, meta: Any, grid: tuple[int, ...]) -> tuple[int, ...] | None:
    """The grid index of a chunk key, or None for a key zarr would never ask for."""
    body = key
    if body == "c":
        body = ""
    elif body[:2] in ("c/", "c."):
        body = body[2:]
    parts = re.split(r"[./]", body) if body else []
    if len(grid) == 0:
        idx: tuple[int, ...] = ()
    elif len(parts) != len(grid) or not all(p.isdigit() and p.isascii() for p in parts):
        return None
    else:
        idx = tuple(int(p) for p in parts)
        if any(i >= n for i, n in zip(idx, grid, strict=True)):
            return None
    return idx if meta.encode_chunk_key(idx) == key else None


def _zarr_storages(url: str, storage_options: dict | None,
                   group: str | None) -> dict[str, _Storage]:
    import zarr

    fs, path = storage.filesystem(url, storage_options)
    path = path.rstrip("/")
    if url.startswith("file://"):
        root = zarr.open_group(path, mode="r")
    else:
        root = zarr.open_group(url, mode="r",
                               storage_options=storage.filesystem_options(url, storage_options))
    out: dict[str, _Storage] = {}
    for name, arr in _zarr_members(root, url, group):
        shape = tuple(int(s) for s in arr.shape)
        chunks, unit, inner = _zarr_grid_chunks(arr)
        grid = _grid(shape, chunks)
        sizes = np.full(grid, _MISSING, dtype=np.int64)
        prefix = f"{path}/{arr.path}"
        try:
            listing = fs.find(prefix, detail=True)
        except FileNotFoundError:
            listing = {}
        for p, info in listing.items():
            rel = p[len(prefix) + 1:] if p.startswith(prefix + "/") else None
            if not rel:
                continue
            idx = _decode_chunk_key(rel, arr.metadata, grid)
            if idx is not None:
                sizes[idx] = int(info.get("size") or 0)
        dtype = np.dtype(arr.dtype)
        out[name] = _Storage("sharded" if inner else "chunked", unit, chunks, sizes, dtype,
                             _zarr_itemsize(dtype), inner)
    return out


def _icechunk_storages(url: str, storage_options: dict | None,
                       group: str | None) -> dict[str, _Storage]:
    import zarr
    from zarr.core.sync import sync

    from zarrport.open import open_icechunk_store

    store = open_icechunk_store(url, storage_options)
    root = zarr.open_group(store, mode="r", zarr_format=3)
    out: dict[str, _Storage] = {}
    for name, arr in _zarr_members(root, url, group):
        shape = tuple(int(s) for s in arr.shape)
        chunks, unit, inner = _zarr_grid_chunks(arr)
        grid = _grid(shape, chunks)
        sizes = np.full(grid, _MISSING, dtype=np.int64)

        async def batches(array_path: str = arr.path) -> list[Any]:
            found = []
            async for b in store.array_chunk_iterator(array_path):
                found.append(b)
            return found

        # the manifest's references in columnar batches: coords, kinds (native 1, virtual 2,
        # inline 3), paths, offsets, lengths (the stored bytes, whatever the kind), inlined
        for coords, _kinds, _paths, _offsets, lengths, _inlined in sync(batches()):
            if not len(lengths):
                continue
            if grid:
                c = np.asarray(coords, dtype=np.int64).reshape(len(lengths), len(grid))
                keep = (c < np.array(grid)).all(axis=1)
                sizes[tuple(c[keep].T)] = np.asarray(lengths, dtype=np.int64)[keep]
            else:
                sizes[()] = int(lengths[0])
        dtype = np.dtype(arr.dtype)
        out[name] = _Storage("sharded" if inner else "chunked", unit, chunks, sizes, dtype,
                             _zarr_itemsize(dtype), inner)
    return out


def _reference_storages(url: str, kind: str, storage_options: dict | None,
                        group: str | None) -> dict[str, _Storage]:
    import zarr
    from zarr.core.buffer import cpu

    from zarrport import references as refmod

    try:
        refs = (refmod._load_parquet if kind == "kerchunk-parquet" else refmod._load_json)(
            url, storage_options)
    except refmod.HandOver as err:
        raise InvalidArgumentError(f"{url}: --profile cannot read these references ({err})",
                                   source=url) from err
    meta = refs.meta
    if any(k.rpartition("/")[2] == "zarr.json" for k in meta):
        raise InvalidArgumentError(
            f"{url}: references with Zarr v3 metadata: --profile reads kerchunk references "
            "with Zarr v2 metadata", source=url)
    if any(k.endswith(".zarray") and b'"zarrport.grib"' in v for k, v in meta.items()):
        import zarrport.grib.numcodec  # noqa: F401 - registers the GRIB codec's v2 form
    mem = zarr.storage.MemoryStore({k: cpu.Buffer.from_bytes(v) for k, v in meta.items()
                                    if k.rpartition("/")[2] != ".zmetadata"})
    try:
        root = zarr.open_group(mem, mode="r", zarr_format=2)
    except Exception as err:  # noqa: BLE001 - damaged metadata
        raise InvalidArgumentError(f"{url}: the references' metadata does not open ({err})",
                                   source=url) from err
    whole_file: dict[int, int] = {}

    def file_size(source: int) -> int:
        if source not in whole_file:
            target = storage.normalize_url(refs.targets[source])
            fs, p = storage.filesystem(target, storage_options)
            try:
                whole_file[source] = int(fs.size(p))
            except FileNotFoundError:
                whole_file[source] = _MISSING
        return whole_file[source]

    out: dict[str, _Storage] = {}
    for name, arr in _zarr_members(root, url, group):
        dtype = np.dtype(arr.metadata.dtype.to_native_dtype())
        # the reader's own chunk table: which keys count, inline data, Parquet records
        table = refmod.ReferenceArray(refs, arr.path, arr, dtype)
        table._build_table()
        sizes = np.where(table.source == refmod._MISSING, _MISSING, table.length)
        sizes = np.asarray(sizes, dtype=np.int64)
        whole = (table.source != refmod._MISSING) & (table.length < 0)  # [url]: the file
        for idx in map(tuple, np.argwhere(whole)):
            sizes[idx] = file_size(int(table.source[idx]))
        for idx, blob in table.inline.items():
            sizes[idx] = len(blob)
        out[name] = _Storage("chunked", "chunk", tuple(int(c) for c in arr.chunks), sizes,
                             dtype, _zarr_itemsize(dtype))
    return out


def _storages(url: str, kind: str, storage_options: dict | None,
              group: str | None) -> dict[str, _Storage]:
    if kind == "netcdf4":
        return _hdf5_storages(url, storage_options, group)
    if kind == "netcdf3":
        return _netcdf3_storages(url, storage_options, group)
    if kind == "zarr":
        return _zarr_storages(url, storage_options, group)
    if kind == "icechunk":
        return _icechunk_storages(url, storage_options, group)
    return _reference_storages(url, kind, storage_options, group)


# ---------------------------------------------------------------------------- the model


@dataclass
class VariableProfile:
    name: str
    #: "data" or "coordinate"
    role: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    #: the stored data type
    dtype: str
    #: chunked, sharded, contiguous, compact (HDF5), record (NetCDF-3)
    layout: str
    #: what one cell of the grid is: "chunk", "shard" (sharded Zarr v3) or "record"
    unit: str
    #: shape of one chunk (shard, record) and how many there are along each dimension
    chunks: tuple[int, ...]
    grid: tuple[int, ...]
    chunks_total: int
    #: chunks that are stored (the others read as the fill value)
    chunks_stored: int
    #: stored (compressed) bytes of the stored chunks: min, median, max, total; None when none
    stored_min: int | None
    stored_median: float | None
    stored_max: int | None
    stored_total: int
    #: uncompressed bytes of one chunk, and of all stored chunks; None for strings/objects
    uncompressed_chunk_bytes: int | None
    uncompressed_bytes: int | None
    #: uncompressed / stored bytes of the stored chunks
    ratio: float | None
    #: stored chunk sizes: [{"min", "max", "count"}] in HISTOGRAM_BINS bins
    histogram: list[dict[str, Any]]
    #: the selection timed: exactly the first chunk
    read_chunk: str | None
    #: wall time of reading it through zarrport.open_dataset, ms (median of the samples)
    read_chunk_ms: float | None
    read_chunk_ms_samples: list[float] = field(default_factory=list)
    #: why read_chunk_ms is None, or what it means
    read_note: str | None = None
    inner_chunks: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        def tup(t: tuple[int, ...] | None) -> list[int] | None:
            return None if t is None else [int(x) for x in t]

        return {
            "name": self.name, "role": self.role, "dims": list(self.dims),
            "shape": tup(self.shape), "dtype": self.dtype, "layout": self.layout,
            "unit": self.unit, "chunks": tup(self.chunks), "inner_chunks": tup(self.inner_chunks),
            "grid": tup(self.grid), "chunks_total": self.chunks_total,
            "chunks_stored": self.chunks_stored,
            "stored_bytes": {"min": self.stored_min, "median": self.stored_median,
                             "max": self.stored_max, "total": self.stored_total},
            "uncompressed_chunk_bytes": self.uncompressed_chunk_bytes,
            "uncompressed_bytes": self.uncompressed_bytes,
            "ratio": self.ratio,
            "histogram": self.histogram,
            "read_chunk": self.read_chunk,
            "read_chunk_ms": self.read_chunk_ms,
            "read_chunk_ms_samples": self.read_chunk_ms_samples,
            "read_note": self.read_note,
        }


@dataclass
class ReadProfile:
    """What one selection touches, and how long it takes to read."""

    expression: str
    variable: str
    #: the selection, every dimension resolved: "[0:25, 10, 20]"
    selection: str
    #: shape and bytes (stored dtype) of the values selected
    shape: tuple[int, ...]
    selection_bytes: int | None
    #: chunks touched along each dimension, and in all (stored or not)
    grid_touched: tuple[int, ...]
    chunks_touched: int
    #: of those, the stored ones, their stored bytes and their uncompressed bytes
    chunks_touched_stored: int
    stored_bytes: int
    uncompressed_bytes: int | None
    unit: str
    read_ms: float
    read_ms_samples: list[float]
    read_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "expression": self.expression, "variable": self.variable,
            "selection": self.selection, "shape": [int(s) for s in self.shape],
            "selection_bytes": self.selection_bytes,
            "grid_touched": [int(g) for g in self.grid_touched],
            "chunks_touched": self.chunks_touched,
            "chunks_touched_stored": self.chunks_touched_stored,
            "stored_bytes": self.stored_bytes,
            "uncompressed_bytes": self.uncompressed_bytes,
            "unit": self.unit,
            "read_ms": self.read_ms, "read_ms_samples": self.read_ms_samples,
            "read_note": self.read_note,
        }


@dataclass
class ProfileReport:
    url: str
    #: what zarrport.open.detect calls it: zarr, icechunk, kerchunk-json, kerchunk-parquet,
    #: netcdf4, netcdf3
    kind: str
    group: str | None
    variables: list[VariableProfile]
    read: ReadProfile | None = None
    repeats: int = REPEATS
    #: variables of the dataset without storage of their own (e.g. derived), not profiled
    skipped: list[str] = field(default_factory=list)

    def variable(self, name: str) -> VariableProfile:
        for v in self.variables:
            if v.name == name:
                return v
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url, "kind": self.kind, "group": self.group, "repeats": self.repeats,
            "variables": [v.to_dict() for v in self.variables],
            "skipped": list(self.skipped),
            "read": None if self.read is None else self.read.to_dict(),
        }


def histogram(sizes: np.ndarray, bins: int = HISTOGRAM_BINS) -> list[dict[str, Any]]:
    """Stored sizes counted in ``bins`` equal-width bins from the smallest to the largest
    (one bin when all are equal); each bin holds sizes >= min and < max, the last <= max."""
    if not sizes.size:
        return []
    lo, hi = int(sizes.min()), int(sizes.max())
    if lo == hi:
        return [{"min": lo, "max": hi, "count": int(sizes.size)}]
    counts, edges = np.histogram(sizes, bins=bins, range=(lo, hi))
    return [{"min": round(float(a), 1), "max": round(float(b), 1), "count": int(n)}
            for a, b, n in zip(edges[:-1], edges[1:], counts, strict=True)]


def _timed(read: Any, repeats: int) -> tuple[float, list[float]]:
    """(median, samples) of ``repeats`` timed calls of ``read``, in ms, after one untimed
    call: that one pays for what a dataset does once per variable (kerchunk and Icechunk
    readers build their chunk tables, HDF5 reads its chunk index), not per chunk."""
    read()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        read()
        samples.append(round((time.perf_counter() - t0) * 1e3, 3))
    return round(statistics.median(samples), 3), samples


def _dtype_name(dtype: np.dtype) -> str:
    """float32 for any byte order; the numpy spelling (S1, <U4, object, ...) otherwise."""
    if dtype.kind in "biufc" and dtype.fields is None:
        return dtype.newbyteorder("=").name
    return dtype.name if dtype.kind == "O" else dtype.str.lstrip("<>|=")


def _variable_profile(name: str, role: str, var: Any, st: _Storage, *, indexed: bool,
                      repeats: int) -> VariableProfile:
    shape = tuple(int(s) for s in var.shape)
    grid = tuple(int(g) for g in st.sizes.shape)
    stored = st.sizes[st.sizes >= 0]
    n_stored = int(stored.size)
    total = int(stored.sum()) if n_stored else 0
    unc_chunk = math.prod(st.chunks) * st.itemsize if st.itemsize is not None else None
    unc = unc_chunk * n_stored if unc_chunk is not None else None
    ratio = round(unc / total, 4) if unc is not None and total else None

    key = tuple(slice(0, min(c, n)) for c, n in zip(st.chunks, shape, strict=True))
    read_chunk = _format_key(key) if math.prod(grid) else None
    ms, samples, note = None, [], None
    if read_chunk is None:
        note = "no chunks: the variable is empty"
    elif indexed:
        note = "an index coordinate: in memory once the dataset is open"
    else:
        ms, samples = _timed(lambda: var[key].values, repeats)
    return VariableProfile(
        name=name, role=role, dims=tuple(str(d) for d in var.dims), shape=shape,
        dtype=_dtype_name(st.dtype), layout=st.layout, unit=st.unit, chunks=st.chunks, grid=grid,
        chunks_total=math.prod(grid), chunks_stored=n_stored,
        stored_min=int(stored.min()) if n_stored else None,
        stored_median=float(np.median(stored)) if n_stored else None,
        stored_max=int(stored.max()) if n_stored else None,
        stored_total=total, uncompressed_chunk_bytes=unc_chunk, uncompressed_bytes=unc,
        ratio=ratio, histogram=histogram(stored), read_chunk=read_chunk,
        read_chunk_ms=ms, read_chunk_ms_samples=samples, read_note=note,
        inner_chunks=st.inner_chunks,
    )


def touched(key: tuple[int | slice, ...], chunks: tuple[int, ...]) -> list[range]:
    """The chunk indices a resolved selection touches along each dimension."""
    out = []
    for k, c in zip(key, chunks, strict=True):
        if not c:
            out.append(range(0))
        elif isinstance(k, int):
            out.append(range(k // c, k // c + 1))
        elif k.stop <= k.start:
            out.append(range(0))
        else:
            out.append(range(k.start // c, (k.stop - 1) // c + 1))
    return out


def _read_profile(expr: ReadExpression, var: Any, st: _Storage, *, indexed: bool,
                  repeats: int) -> ReadProfile:
    shape = tuple(int(s) for s in var.shape)
    key = expr.resolve(shape)
    ranges = touched(key, st.chunks)
    n_touched = math.prod(len(r) for r in ranges)
    if n_touched:
        sub = st.sizes[np.ix_(*[np.arange(r.start, r.stop) for r in ranges])] if ranges \
            else st.sizes
        hit = sub[sub >= 0]
    else:
        hit = np.zeros(0, dtype=np.int64)
    out_shape = tuple(k.stop - k.start for k in key if isinstance(k, slice))
    unc_chunk = math.prod(st.chunks) * st.itemsize if st.itemsize is not None else None
    ms, samples = _timed(lambda: var[key].values, repeats)
    return ReadProfile(
        expression=expr.text, variable=expr.variable, selection=_format_key(key),
        shape=out_shape,
        selection_bytes=math.prod(out_shape) * st.itemsize if st.itemsize is not None else None,
        grid_touched=tuple(len(r) for r in ranges), chunks_touched=n_touched,
        chunks_touched_stored=int(hit.size), stored_bytes=int(hit.sum()),
        uncompressed_bytes=unc_chunk * int(hit.size) if unc_chunk is not None else None,
        unit=st.unit, read_ms=ms, read_ms_samples=samples,
        read_note="an index coordinate: in memory once the dataset is open" if indexed else None,
    )


def profile_source(url: str, *, storage_options: dict | None = None, group: str | None = None,
                   read: str | None = None, repeats: int = REPEATS) -> ProfileReport:
    """The chunk profile of every variable of ``url`` (a Zarr store, Icechunk repository,
    kerchunk JSON/Parquet references, a NetCDF-4/HDF5 or NetCDF-3 file, or a ``zarrport
    batch`` output with one collection) and, given ``read="VAR[sel]"``, what that selection
    touches. Reads are timed through :func:`zarrport.open_dataset`, ``repeats`` times each.

    Raises InvalidArgumentError for a GRIB file, a bad ``read`` expression, an unknown
    variable or an index out of range, and what ``open_dataset`` raises for bad sources.
    """
    from zarrport.open import detect, open_dataset

    if repeats < 1:
        raise InvalidArgumentError(f"repeats must be at least 1 (got {repeats})")
    expr = parse_read(read) if read is not None else None
    url = storage.normalize_url(url)
    kind = detect(url, storage_options)
    if kind == "batch":
        from zarrport.pipeline.output import collection_url

        url = collection_url(url, None, storage_options)
        kind = detect(url, storage_options)
    if kind == "grib":
        raise InvalidArgumentError(
            f"{url}: --profile does not profile GRIB files (one message per chunk); "
            "`zarrport inspect` without --profile lists every message", source=url)
    storages = _storages(url, kind, storage_options, group)
    kwargs: dict[str, Any] = {"cache": False}  # xarray must not keep what it read
    if group and group.strip("/"):
        kwargs["group"] = group
    with _no_chunk_cache(kind == "netcdf4"):
        return _profile(url, kind, group, storages, expr, repeats,
                        open_dataset(url, storage_options=storage_options, **kwargs))


@contextmanager
def _no_chunk_cache(active: bool) -> Iterator[None]:
    """netCDF-C's chunk cache (64 MB by default) off for the files opened meanwhile: a
    repeated read would otherwise come decompressed from memory (0.3 ms instead of 5 ms for
    a 3 MB zlib chunk), not from the file. Restored after."""
    if not active:
        yield
        return
    import netCDF4

    before = netCDF4.get_chunk_cache()
    netCDF4.set_chunk_cache(0, 0)
    try:
        yield
    finally:
        netCDF4.set_chunk_cache(*before)


def _profile(url: str, kind: str, group: str | None, storages: dict[str, _Storage],
             expr: ReadExpression | None, repeats: int, ds: Any) -> ProfileReport:
    with ds:
        if expr is not None and expr.variable not in ds.variables:
            names = ", ".join(map(str, ds.variables)) or "none"
            raise InvalidArgumentError(
                f"--read {expr.text!r}: no variable {expr.variable!r} in {url} "
                f"(variables: {names})")
        if expr is not None and expr.variable not in storages:
            raise InvalidArgumentError(
                f"--read {expr.text!r}: {expr.variable!r} has no chunks of its own to "
                "profile")
        if expr is not None:  # a bad index fails before anything is timed
            expr.resolve(tuple(int(s) for s in ds[expr.variable].shape))
        indexes = set(ds.xindexes)
        order = [(str(n), "data") for n in ds.data_vars] + [(str(n), "coordinate")
                                                          for n in ds.coords]
        variables, skipped = [], []
        for name, role in order:
            st = storages.get(name)
            if st is None or len(st.chunks) != ds[name].ndim:
                skipped.append(name)
                continue
            variables.append(_variable_profile(name, role, ds[name].variable, st,
                                               indexed=name in indexes, repeats=repeats))
        result = None
        if expr is not None:
            result = _read_profile(expr, ds[expr.variable].variable, storages[expr.variable],
                                   indexed=expr.variable in indexes, repeats=repeats)
    return ProfileReport(url=url, kind=kind, group=group or None, variables=variables,
                         read=result, repeats=repeats, skipped=skipped)


# ---------------------------------------------------------------------------- text


def _shape(t: tuple[int, ...] | None) -> str:
    if t is None:
        return "-"
    return "(" + ", ".join(str(x) for x in t) + ("," if len(t) == 1 else "") + ")"


def _bytes(n: float | None) -> str:
    return "-" if n is None else human_bytes(n)


def _ms(x: float | None) -> str:
    return "-" if x is None else (f"{x:.3g}" if x < 1000 else f"{x:.0f}")


_COLUMNS = ("name", "role", "shape", "dtype", "layout", "chunk shape", "stored/total",
            "min", "median", "max", "total", "raw/chunk", "ratio", "ms/chunk")


def _row(v: VariableProfile) -> tuple[str, ...]:
    unit = "" if v.unit == "chunk" else f" {v.unit}s"
    return (v.name, v.role[:5], _shape(v.shape), v.dtype, v.layout, _shape(v.chunks),
            f"{v.chunks_stored}/{v.chunks_total}{unit}", _bytes(v.stored_min),
            _bytes(v.stored_median), _bytes(v.stored_max), _bytes(v.stored_total),
            _bytes(v.uncompressed_chunk_bytes),
            "-" if v.ratio is None else f"{v.ratio:.2f}", _ms(v.read_chunk_ms))


def _histogram_lines(v: VariableProfile, width: int = 30) -> list[str]:
    peak = max(b["count"] for b in v.histogram)
    edges = [b["min"] for b in v.histogram] + [v.histogram[-1]["max"]]
    fmt = _bytes
    if len({_bytes(e) for e in edges}) < len(set(edges)):  # narrow bins: exact bytes
        def fmt(n: float | None) -> str:
            return f"{n:,.0f} B"
    labels = [fmt(b["min"]) if b["min"] == b["max"] else f"{fmt(b['min'])} - {fmt(b['max'])}"
              for b in v.histogram]
    pad = max(len(s) for s in labels)
    return [f"  {label.rjust(pad)}  {'#' * math.ceil(width * b['count'] / peak):<{width}}  "
            f"{b['count']}" for label, b in zip(labels, v.histogram, strict=True)]


def render_profile(report: ProfileReport) -> str:
    """The profile as ``zarrport inspect --profile`` prints it (ends with a newline)."""
    lines = [report.url, f"  kind     {report.kind}"
             + (f", group {report.group}" if report.group else ""),
             f"  timing   median of {report.repeats} reads through zarrport.open_dataset", ""]
    if report.variables:
        rows = [_COLUMNS] + [_row(v) for v in report.variables]
        widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        lines.append("(min/median/max/total: stored bytes of the stored chunks; raw/chunk: "
                     "uncompressed; ratio = uncompressed/stored)")
    else:
        lines.append("(no variables)")
    if report.skipped:
        lines.append(f"not profiled (no storage of their own): {', '.join(report.skipped)}")
    notes = [v for v in report.variables if v.read_note]
    if notes:
        lines += ["", "not timed:"] + [f"  {v.name}: {v.read_note}" for v in notes]
    for v in report.variables:
        if v.chunks_stored > 1 and v.role == "data":
            lines += ["", f"{v.name}: stored {v.unit} sizes ({v.chunks_stored} {v.unit}s)"]
            lines += _histogram_lines(v)
    if report.read is not None:
        r = report.read
        of = report.variable(r.variable).chunks_total if any(
            v.name == r.variable for v in report.variables) else None
        grid = " x ".join(str(g) for g in r.grid_touched) or "1"
        amplification = ""
        if r.selection_bytes and r.uncompressed_bytes is not None:
            x = r.uncompressed_bytes / r.selection_bytes
            amplification = f" ({x:,.0f}x" if x >= 100 else f" ({x:.3g}x"
            amplification += " the bytes selected)"
        lines += [
            "", f"read {r.expression}",
            f"  selection  {r.variable}{r.selection}: shape {_shape(r.shape)}, "
            f"{_bytes(r.selection_bytes)}",
            f"  touches    {r.chunks_touched}" + (f" of {of}" if of is not None else "")
            + f" {r.unit}s ({grid}), {r.chunks_touched_stored} stored: "
            f"{_bytes(r.stored_bytes)} stored, {_bytes(r.uncompressed_bytes)} uncompressed"
            + amplification,
            f"  read time  {_ms(r.read_ms)} ms (median of {len(r.read_ms_samples)})"
            + (f" - {r.read_note}" if r.read_note else ""),
        ]
    return "\n".join(lines) + "\n"
