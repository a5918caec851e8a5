"""The pre-flight report of a GRIB file: its messages, grids and the variables
:class:`~zarrport.grib.scan.GribParser` makes of them (what ``virtualize`` will write).

Every variable is ``virtualize`` (one chunk per GRIB message, decoded by the
``zarrport.grib`` codec) and its coordinates ``inline``; a file the parser refuses (an
unsupported grid, multi-field messages it cannot split, duplicate fields ...) has no
variables and the refusal as its file problem, so the summary verdict is ``convert``.
Damaged files (truncated, no ``7777``) raise, as ``virtualize`` does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from zarrport import storage
from zarrport.errors import IncompatibleSourcesError, UnsupportedVariableError
from zarrport.inspect.report import (
    INLINE,
    VIRTUALIZE,
    FilterReport,
    SourceReport,
    VariableReport,
    mb,
)


def _minutes(v: Any) -> int | None:
    return None if v is None else int(v // np.timedelta64(60, "s"))


def inspect_grib(url: str, *, size: int, storage_options: dict | None = None) -> SourceReport:
    from zarrport.grib.codec import CODEC_NAME
    from zarrport.grib.scan import GribParser, locate_messages

    registry = storage.object_store_registry([url], storage_options)
    parser = GribParser()
    problems: list[str] = []
    try:
        built = parser.build(url, registry)
    except (UnsupportedVariableError, IncompatibleSourcesError) as err:
        built = None
        problems.append(str(err))
    if built is None:
        data, _ = parser._read(url, registry)
        try:
            located = locate_messages(data, url)
        finally:
            if hasattr(data, "close"):
                data.close()
        messages = [{"number": m.number, "offset": m.offset, "length": m.length,
                     "edition": m.edition} for m in located]
        return SourceReport(
            url=url, format="grib", format_version=_editions({m.edition for m in located}),
            size=size, group=None, dims={}, unlimited_dims=[], global_attr_count=0,
            variables=[], problems=problems,
            grib={"messages": messages, "grids": [], "codec": CODEC_NAME})
    vds = built.dataset
    editions: set[int] = set()
    variables: list[VariableReport] = []
    for name, var in vds.variables.items():
        itemsize = np.dtype(var.dtype).itemsize
        if var.refs is not None:
            n_total = math.prod(var.refs.grid)
            chunk_bytes = math.prod(var.chunks) * itemsize
            ed = var.attrs.get("GRIB_edition")
            editions.update(ed if isinstance(ed, list) else [ed])
            packing = str(var.attrs.get("GRIB_packingType", ""))
            reason = (f"{var.refs.count} GRIB message(s), one chunk each, referenced in place "
                      f"and decoded by the {CODEC_NAME} codec (packing {packing})")
            if var.refs.count < n_total:
                reason += f"; {n_total - var.refs.count} field(s) absent, read as NaN"
            variables.append(VariableReport(
                name=name, dims=var.dims, shape=var.shape, dtype=str(var.dtype),
                layout="grib", chunks=var.chunks, chunk_mb=mb(chunk_bytes),
                chunks_allocated=var.refs.count, chunks_total=n_total,
                size_mb=mb(math.prod(var.shape) * itemsize),
                stored_mb=mb(var.refs.nbytes_referenced()),
                filters=[FilterReport(id=-1, name=packing or "grib", zarr_codec=CODEC_NAME)],
                fill_value=var.fill_value, scale_factor=None, add_offset=None,
                verdict=VIRTUALIZE, reason=reason, virtual_chunks=var.chunks))
        else:
            nbytes = int(np.asarray(var.data).nbytes)
            variables.append(VariableReport(
                name=name, dims=var.dims, shape=var.shape, dtype=str(var.dtype),
                layout="coordinate", chunks=var.shape, chunk_mb=mb(nbytes),
                chunks_allocated=None, chunks_total=None, size_mb=mb(nbytes), stored_mb=None,
                filters=[], fill_value=var.fill_value, scale_factor=None, add_offset=None,
                verdict=INLINE, reason="coordinate read from the GRIB headers by ecCodes: "
                "values stored in the output", virtual_chunks=var.shape))
    messages = []
    for f in sorted(built.fields, key=lambda f: f.offset):
        messages.append({
            "offset": f.offset, "length": f.length, "variable": f.name,
            "init_time": None if f.init_time is None else str(np.datetime64(f.init_time, "s")),
            "member": f.member, "step_minutes": _minutes(f.step), "level": f.level,
            "level_type": f.level_type, "message_field": f.message_field})
    numbers = {off: k for k, off in enumerate(dict.fromkeys(m["offset"] for m in messages), 1)}
    for m in messages:
        m["number"] = numbers[m["offset"]]
    grids = []
    for key, g in built.grids.items():
        lat, lon = np.asarray(g.latitude), np.asarray(g.longitude)
        grids.append({
            "key": key, "grid_type": g.grid_type, "dims": list(g.dims),
            "shape": [int(x) for x in g.shape],
            "latitude": [float(np.nanmin(lat)), float(np.nanmax(lat))] if lat.size else None,
            "longitude": [float(np.nanmin(lon)), float(np.nanmax(lon))] if lon.size else None})
    return SourceReport(
        url=url, format="grib", format_version=_editions(editions), size=size, group=None,
        dims=dict(vds.dims), unlimited_dims=[], global_attr_count=len(vds.attrs),
        variables=variables, problems=problems,
        grib={"messages": messages, "grids": grids, "codec": CODEC_NAME})


def _editions(editions: set[Any]) -> str:
    eds = sorted(e for e in editions if e is not None)
    return "+".join(f"GRIB{e}" for e in eds) or "GRIB"
