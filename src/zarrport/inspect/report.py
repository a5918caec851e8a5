"""``inspect_source``: the pre-flight report of one NetCDF-4/HDF5 or NetCDF-3 file.

For every variable it reports the storage (layout, chunks, filters), the CF packing
attributes, warnings from the chunking guidelines (:mod:`zarrport.inspect.guidelines`) and a
verdict that says what ``zarrport virtualize`` will do with it:

``virtualize``
    its chunks are referenced in place (chunked data whose filters all map to Zarr codecs,
    a NetCDF-3 record variable, or a never-written contiguous variable);
``virtualize_subchunked``
    uncompressed contiguous data, referenced as byte-range sub-chunks;
``inline``
    its values are copied into the output (small, or small and not referenceable);
``convert``
    the virtualizer refuses it (``UnsupportedVariableError``): it cannot be referenced
    faithfully and is too large to inline, or its type or attributes have no Zarr form.

The verdicts come from the parser's own decision rules
(:func:`zarrport.virtual.hdf5.plan_variable` for HDF5,
:func:`zarrport.virtual.netcdf3.parse_netcdf3` itself for NetCDF-3), so they agree with what
:func:`zarrport.virtual.parse.parse_source` does with the same settings.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zarrport import storage
from zarrport.errors import (
    InvalidArgumentError,
)
from zarrport.inspect.guidelines import GuidelineWarning, human_bytes
from zarrport.virtual.parse import ParseOptions, check_sizes, recognised_source

VIRTUALIZE = "virtualize"
VIRTUALIZE_SUBCHUNKED = "virtualize_subchunked"
INLINE = "inline"
CONVERT = "convert"
VERDICTS = (VIRTUALIZE, VIRTUALIZE_SUBCHUNKED, INLINE, CONVERT)

_MB = 2**20


def mb(nbytes: float | None) -> float | None:
    """Bytes as MB (2**20), rounded to 6 decimals (a byte is ~1e-6 MB)."""
    return None if nbytes is None else round(nbytes / _MB, 6)


def jsonable(value: Any) -> Any:
    """A value as plain JSON: numpy scalars unwrapped, bytes decoded, NaN/inf as strings
    ("NaN", "Infinity", "-Infinity", as Zarr writes them)."""
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


# reasons shared by the HDF5 and NetCDF-3 reports


def reason_inline_small(nbytes: int, inline_bytes: int) -> str:
    return (f"small ({human_bytes(nbytes)}, inline threshold {human_bytes(inline_bytes)}): "
            "values stored in the output")


def reason_inline_coordinate(nbytes: int, limit: int) -> str:
    return (f"1-D coordinate ({human_bytes(nbytes)}, up to {human_bytes(limit)}): values "
            "stored in the output so it opens without a request per chunk")


def reason_subchunked(shape: tuple[int, ...], chunks: tuple[int, ...], nbytes: int,
                      target: int) -> str:
    if tuple(chunks) == tuple(shape):
        return (f"uncompressed contiguous: referenced as one byte range ({human_bytes(nbytes)}"
                f", within the {human_bytes(target)} sub-chunk target)")
    n = math.prod(math.ceil(s / c) for s, c in zip(shape, chunks, strict=True))
    return (f"uncompressed contiguous: referenced as {n} byte-range sub-chunks of shape "
            f"{tuple(chunks)} (target {human_bytes(target)})")


@dataclass(frozen=True)
class FilterReport:
    """One HDF5 filter of a variable's pipeline."""

    id: int
    name: str
    #: numcodecs id of the Zarr codec the virtualizer maps it to; None when it has none
    zarr_codec: str | None

    @property
    def has_zarr_codec(self) -> bool:
        return self.zarr_codec is not None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "has_zarr_codec": self.has_zarr_codec,
                "zarr_codec": self.zarr_codec}


@dataclass
class VariableReport:
    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    #: float32, int16, S1, str (variable-length text), enum(int8), compound, opaque(...), ...
    dtype: str
    #: contiguous, chunked, compact, virtual (HDF5); contiguous, record (NetCDF-3)
    layout: str
    #: the storage chunk shape in the source (contiguous/compact: the whole shape;
    #: NetCDF-3 record variables: one record); None for virtual datasets
    chunks: tuple[int, ...] | None
    #: uncompressed size of one storage chunk, MB; None for strings/objects
    chunk_mb: float | None
    #: storage chunks written in the file / in the chunk grid
    chunks_allocated: int | None
    chunks_total: int | None
    #: uncompressed size of the variable / bytes it occupies in the file, MB
    size_mb: float | None
    stored_mb: float | None
    filters: list[FilterReport]
    fill_value: Any
    scale_factor: Any
    add_offset: Any
    verdict: str
    reason: str
    #: chunk shape of the virtual variable (sub-chunks for virtualize_subchunked, the whole
    #: shape when inlined); None when refused
    virtual_chunks: tuple[int, ...] | None
    warnings: list[GuidelineWarning] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def tup(t: tuple[int, ...] | None) -> list[int] | None:
            return None if t is None else [int(x) for x in t]

        return {
            "name": self.name,
            "dims": list(self.dims),
            "shape": tup(self.shape),
            "dtype": self.dtype,
            "layout": self.layout,
            "chunks": tup(self.chunks),
            "chunk_mb": self.chunk_mb,
            "chunks_allocated": self.chunks_allocated,
            "chunks_total": self.chunks_total,
            "size_mb": self.size_mb,
            "stored_mb": self.stored_mb,
            "filters": [f.to_dict() for f in self.filters],
            "fill_value": jsonable(self.fill_value),
            "scale_factor": jsonable(self.scale_factor),
            "add_offset": jsonable(self.add_offset),
            "verdict": self.verdict,
            "reason": self.reason,
            "virtual_chunks": tup(self.virtual_chunks),
            "warnings": [w.to_dict() for w in self.warnings],
        }


@dataclass
class SourceReport:
    url: str
    #: netcdf4, hdf5 (HDF5 without netCDF-4 conventions) or netcdf3
    format: str
    #: NETCDF4 / NETCDF4_CLASSIC / HDF5 (with the superblock version), CDF-1/2/5 for NetCDF-3
    format_version: str
    size: int
    group: str | None
    dims: dict[str, int]
    unlimited_dims: list[str]
    global_attr_count: int
    variables: list[VariableReport]
    #: file-level reasons the virtualizer refuses the file (e.g. an unreadable global attribute)
    problems: list[str] = field(default_factory=list)
    #: the settings the verdicts were computed with
    settings: dict[str, Any] = field(default_factory=dict)
    #: GRIB files only: ``messages`` (one entry per message), ``grids``, ``codec``
    grib: dict[str, Any] | None = None

    def variable(self, name: str) -> VariableReport:
        for v in self.variables:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def summary(self) -> dict[str, Any]:
        """Counts per verdict, and the verdict for the whole file with its reason."""
        counts = Counter(v.verdict for v in self.variables)
        refused = [v.name for v in self.variables if v.verdict == CONVERT]
        n_warn = sum(1 for v in self.variables if v.warnings)
        if refused or self.problems:
            verdict = CONVERT
            why = []
            if refused:
                why.append(f"{len(refused)} variable(s) cannot be virtualized: "
                           + ", ".join(refused))
            why.extend(self.problems)
            if self.problems:
                hint = "convert it"
            else:
                hint = ("convert it, or leave those variables out (virtualize --drop NAME, "
                        "drop_variables=[...])")
            reason = f"the virtualizer refuses this file ({'; '.join(why)}); {hint}"
        else:
            verdict = VIRTUALIZE
            reason = (f"all {len(self.variables)} variable(s) can be virtualized"
                      + (f"; {n_warn} with chunking warnings" if n_warn else ""))
        return {
            "counts": {k: counts.get(k, 0) for k in VERDICTS},
            "verdict": verdict,
            "reason": reason,
            "warnings": sum(len(v.warnings) for v in self.variables),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "format": self.format,
            "format_version": self.format_version,
            "size": self.size,
            "size_mb": mb(self.size),
            "group": self.group,
            "dims": dict(self.dims),
            "unlimited_dims": list(self.unlimited_dims),
            "global_attr_count": self.global_attr_count,
            "settings": jsonable(self.settings),
            "summary": self.summary,
            "problems": list(self.problems),
            "variables": [v.to_dict() for v in self.variables],
            **({"grib": jsonable(self.grib)} if self.grib is not None else {}),
        }


def inspect_source(
    url: str,
    *,
    storage_options: dict | None = None,
    group: str | None = None,
    subchunk_mb: float = 16,
    inline_limit_mb: float = 4,
) -> SourceReport:
    """The pre-flight report of one NetCDF-4/HDF5, NetCDF-3 or GRIB file (GRIB:
    :func:`zarrport.inspect._grib.inspect_grib`, with the messages and grids).

    ``subchunk_mb`` / ``inline_limit_mb`` are the virtualizer's sub-chunk target and the
    size up to which variables that cannot be referenced are inlined (``ParseOptions``'
    ``subchunk_bytes`` / ``inline_limit_bytes``, in MB); the verdicts assume the same values
    are used to virtualize. Raises what :func:`zarrport.virtual.parse.parse_source` raises for
    bad input: :class:`~zarrport.errors.SourceNotFoundError`, ``NotAFileError``,
    ``UnrecognizedFormatError`` (empty / not NetCDF or HDF5), ``CorruptSourceError``
    (truncated, damaged), ``StorageError``, ``InvalidArgumentError`` (bad sizes, a group
    that is not there: the message lists the file's groups).
    """
    from zarrport.inspect import _grib, _hdf5, _netcdf3

    check_sizes(subchunk_mb, inline_limit_mb)
    defaults = ParseOptions()
    options = ParseOptions(
        group=group,
        subchunk_bytes=max(1, int(subchunk_mb * _MB)),
        inline_bytes=defaults.inline_bytes,
        inline_limit_bytes=int(inline_limit_mb * _MB),
    )
    url = storage.normalize_url(url)
    with recognised_source(url, storage_options) as (kind, h5target, f, st):
        if kind == "grib":
            if group not in (None, "", "/"):
                raise InvalidArgumentError(
                    f"{url}: GRIB files have no groups (got group={group!r})", source=url)
            report = _grib.inspect_grib(url, size=st.size, storage_options=storage_options)
        elif kind == "hdf5":
            report = _hdf5.inspect_hdf5(h5target, url, size=st.size, options=options)
        else:
            if group not in (None, "", "/"):
                raise InvalidArgumentError(
                    f"{url}: NetCDF-3 files have no groups (got group={group!r})",
                    source=url,
                )
            report = _netcdf3.inspect_netcdf3(f, url, size=st.size, options=options)
    report.settings = {
        "subchunk_mb": subchunk_mb,
        "inline_kb": options.inline_bytes / 2**10,
        "inline_limit_mb": inline_limit_mb,
    }
    return report
