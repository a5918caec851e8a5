"""Inspect a NetCDF-3 file.

The NetCDF-3 virtualizer only reads the header (plus the few bytes of the variables it
inlines), so the report is built from :func:`parse_netcdf3`'s own result: its verdicts cannot
drift from what the parser does. The header is read once more for the dimensions and version.
"""

from __future__ import annotations

import math
from typing import Any, BinaryIO

from zarrport.inspect.guidelines import chunk_warnings, human_bytes
from zarrport.inspect.report import (
    INLINE,
    VIRTUALIZE,
    VIRTUALIZE_SUBCHUNKED,
    SourceReport,
    VariableReport,
    mb,
    reason_inline_coordinate,
    reason_inline_small,
    reason_subchunked,
)
from zarrport.virtual.netcdf3 import _read_header, parse_netcdf3
from zarrport.virtual.parse import ParseOptions

_VERSIONS = {1: "CDF-1 (classic)", 2: "CDF-2 (64-bit offset)", 5: "CDF-5 (64-bit data)"}
#: parse_netcdf3 inlines 1-D coordinate variables up to this size (fixed, not an option)
_COORD_INLINE_BYTES = 4 * 2**20




def _dtype_label(dtype: Any) -> str:
    return f"S{dtype.itemsize}" if dtype.kind == "S" else dtype.name


def inspect_netcdf3(f: BinaryIO, url: str, *, size: int, options: ParseOptions) -> SourceReport:
    vds = parse_netcdf3(
        f, url, file_size=size,
        subchunk_bytes=options.subchunk_bytes,
        inline_bytes=options.inline_bytes,
    )

    def read_at(offset: int, n: int) -> bytes:
        f.seek(offset)
        return f.read(n)

    numrecs, meta, gattrs, _raw = _read_header(read_at, url)
    f.seek(0)
    version = read_at(3, 1)[0]
    records = [v for v in vds.variables.values() if v.layout == "record"]
    if records:
        numrecs = records[0].shape[0]
    elif numrecs in (0xFFFFFFFF, 2**64 - 1):
        numrecs = 0
    dims = {name: (numrecs if length == 0 else length) for name, length in meta["dims"]}
    unlimited = [name for name, length in meta["dims"] if length == 0]

    variables = []
    for var in vds.variables.values():
        shape = var.shape
        itemsize = var.dtype.itemsize
        nbytes = math.prod(shape) * itemsize
        is_record = var.layout == "record"
        chunks = ((1,) + shape[1:]) if is_record else shape
        total = (shape[0] if is_record else (1 if nbytes else 0))
        warnings = []
        if var.is_inline:
            verdict = INLINE
            if nbytes <= options.inline_bytes:
                reason = reason_inline_small(nbytes, options.inline_bytes)
            else:
                reason = reason_inline_coordinate(nbytes, _COORD_INLINE_BYTES)
        elif is_record:
            verdict = VIRTUALIZE
            reason = (f"record variable: each of its {shape[0]} records is referenced in place "
                      f"({human_bytes(math.prod(chunks) * itemsize)} each)")
            warnings = chunk_warnings(layout="record", dims=var.dims, shape=shape,
                                      chunks=var.chunks, itemsize=itemsize,
                                      n_chunks=shape[0])
        else:
            verdict = VIRTUALIZE_SUBCHUNKED
            n = math.prod(var.grid)
            reason = reason_subchunked(shape, var.chunks, nbytes, options.subchunk_bytes)
            warnings = chunk_warnings(layout="contiguous", dims=var.dims, shape=shape,
                                      chunks=var.chunks, itemsize=itemsize, n_chunks=n,
                                      subchunked=True)
        variables.append(VariableReport(
            name=var.name,
            dims=var.dims,
            shape=shape,
            dtype=_dtype_label(var.dtype),
            layout=var.layout,
            chunks=chunks,
            chunk_mb=mb(math.prod(chunks) * itemsize),
            chunks_allocated=total,
            chunks_total=total,
            size_mb=mb(nbytes),
            stored_mb=mb(nbytes),
            filters=[],
            fill_value=var.fill_value,
            scale_factor=var.attrs.get("scale_factor"),
            add_offset=var.attrs.get("add_offset"),
            verdict=verdict,
            reason=reason,
            virtual_chunks=var.chunks,
            warnings=warnings,
        ))
    return SourceReport(
        url=url, format="netcdf3", format_version=_VERSIONS.get(version, f"CDF-{version}"),
        size=size, group=None, dims=dims, unlimited_dims=unlimited,
        global_attr_count=len(gattrs), variables=variables,
    )
