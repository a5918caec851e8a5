"""The one in-memory model every parser produces and every writer consumes.

A :class:`VirtualDataset` is a flat group of :class:`VirtualVariable` objects. A variable is
either *referenced* (``refs``: where each chunk's bytes already are, in which source file) or
*inlined* (``data``: the stored values, not CF-decoded, written into the output itself). A
combined dataset may also mark chunks as *native* (``native_chunks``): chunks that straddle two
sources and therefore cannot be a single byte range; the Icechunk writer writes those from
the sources' decoded values, the kerchunk writers refuse them.

Chunk references are kept as three numpy arrays shaped like the chunk grid (source index,
offset, length), so combining thousands of files is array concatenation, not dict merging.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

MISSING = -1  # source index of a chunk that was never written (reads as the fill value)


@dataclass
class ChunkRefs:
    """Byte ranges of every chunk of one variable, arrays shaped like its chunk grid."""

    source: np.ndarray  # int32 index into VirtualDataset.sources, MISSING where unwritten
    offset: np.ndarray  # uint64
    length: np.ndarray  # uint64

    @classmethod
    def empty(cls, grid: tuple[int, ...]) -> ChunkRefs:
        return cls(
            source=np.full(grid, MISSING, dtype=np.int32),
            offset=np.zeros(grid, dtype=np.uint64),
            length=np.zeros(grid, dtype=np.uint64),
        )

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(self.source.shape)

    @property
    def count(self) -> int:
        return int(np.count_nonzero(self.source != MISSING))

    def nbytes_referenced(self) -> int:
        return int(self.length[self.source != MISSING].sum())

    def shifted(self, by: int) -> ChunkRefs:
        """The same references with source indices moved by ``by`` (for concatenation)."""
        src = np.where(self.source == MISSING, MISSING, self.source + by).astype(np.int32)
        return ChunkRefs(src, self.offset, self.length)


@dataclass
class Part:
    """Where one file's piece of a combined variable sits along the concatenation axis."""

    start: int
    variable: VirtualVariable  # the file's own variable, refs indexing the combined sources


@dataclass
class VirtualVariable:
    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...]
    #: numcodecs configs in encode order (HDF5 filter order); empty = raw bytes
    codecs: list[dict[str, Any]] = field(default_factory=list)
    #: a Zarr v3 array->bytes codec config replacing ``bytes`` (GRIB: each chunk is one
    #: message decoded by ``zarrport.grib``); None for raw little/big-endian bytes
    serializer: dict[str, Any] | None = None
    #: value of chunks never written (HDF5 fill value); None lets Zarr pick its default
    fill_value: Any = None
    #: attributes as stored in the source (CF encoding attributes included)
    attrs: dict[str, Any] = field(default_factory=dict)
    refs: ChunkRefs | None = None
    data: np.ndarray | None = None
    #: chunk-grid mask of chunks that must be written natively (combined datasets only)
    native_chunks: np.ndarray | None = None
    #: storage layout in the source: chunked, contiguous, compact, virtual
    layout: str = "chunked"
    #: for uncompressed contiguous variables: (source index, byte offset) of the whole array,
    #: so the writer/combiner can re-split it into byte-range sub-chunks
    contiguous_at: tuple[int, int] | None = None
    #: why the variable is inlined / sub-chunked (shown by inspect and summaries)
    note: str | None = None
    #: combined variables: each file's own variable and where it starts along concat_axis,
    #: so native chunks can be filled from the sources
    parts: list[Part] | None = None
    concat_axis: int | None = None

    @property
    def is_inline(self) -> bool:
        return self.data is not None

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(
            math.ceil(s / c) if c else 0 for s, c in zip(self.shape, self.chunks, strict=True)
        )

    def with_(self, **changes: Any) -> VirtualVariable:
        return replace(self, **changes)


@dataclass
class VirtualDataset:
    variables: dict[str, VirtualVariable]
    attrs: dict[str, Any]
    #: normalised URLs of the source files; ChunkRefs.source indexes into this list
    sources: list[str]
    #: per source: size / mtime / etag when the references were made (see storage.SourceStat)
    source_stats: list[dict[str, Any]] = field(default_factory=list)
    #: what ``on_unsupported="drop"`` (--skip-unsupported) left out, one entry per variable
    #: or attribute: {"variable": name or None (global), "attribute": name or None, "reason"}
    skipped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def dims(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for var in self.variables.values():
            out.update(zip(var.dims, var.shape, strict=True))
        return out

    def summary(self) -> dict[str, Any]:
        referenced = sum(v.refs.nbytes_referenced() for v in self.variables.values() if v.refs)
        n_refs = sum(v.refs.count for v in self.variables.values() if v.refs)
        inline = [n for n, v in self.variables.items() if v.is_inline]
        native = sum(
            int(v.native_chunks.sum()) for v in self.variables.values()
            if v.native_chunks is not None
        )
        return {
            "sources": len(self.sources),
            "dims": self.dims,
            "variables": list(self.variables),
            "referenced_chunks": n_refs,
            "referenced_bytes": referenced,
            "inlined_variables": inline,
            "native_chunks": native,
            # models pickled (batch ledger) before ``skipped`` existed have no such attribute
            "skipped": list(getattr(self, "skipped", [])),
        }


def exact_fill(value: Any, dtype: np.dtype) -> Any:
    """``value`` as one value of ``dtype`` when it is exactly one, else None.

    Files written by other tools carry ``_FillValue`` of another type or width than their
    variable (NaN or 2.5 on an integer, 1000 on a byte, a double on a float, a number on a
    char). Such a value must never become a Zarr ``fill_value``, which zarr-python (rightly)
    refuses to parse; where it is not exact, the caller leaves the Zarr fill value to its
    default and keeps the attribute for xarray's CF decoding, which then decides as it does
    for the netCDF file.
    """
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return None
        value = value.reshape(()).item()
    elif isinstance(value, np.generic):
        value = value.item()
    kind = dtype.kind
    if kind == "S":
        if isinstance(value, str):
            try:
                value = value.encode("ascii")
            except UnicodeEncodeError:
                return None
        return value if isinstance(value, bytes) and len(value) <= dtype.itemsize else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return bool(value) if kind == "b" and isinstance(value, bool) else None
    if kind in "iu":
        if not math.isfinite(value) or value != int(value):
            return None
        info = np.iinfo(dtype)
        return int(value) if info.min <= int(value) <= info.max else None
    if kind == "f":
        if math.isnan(value):
            return float("nan")
        with np.errstate(over="ignore"):
            cast = dtype.type(value)
        return float(cast) if float(cast) == value else None
    return None
