"""Inspect a NetCDF-4/HDF5 file: the same walk as ``parse_hdf5``, without reading data."""

from __future__ import annotations

import math
from typing import Any

from zarrport.errors import CorruptSourceError
from zarrport.inspect.guidelines import chunk_warnings, human_bytes
from zarrport.inspect.report import (
    CONVERT,
    INLINE,
    VIRTUALIZE,
    VIRTUALIZE_SUBCHUNKED,
    FilterReport,
    SourceReport,
    VariableReport,
    mb,
    reason_inline_coordinate,
    reason_inline_small,
    reason_subchunked,
)

# the virtualizer's own per-variable decision: inspect reports exactly what virtualize does
from zarrport.virtual import hdf5 as hdf5_plan
from zarrport.virtual.hdf5 import (
    FILTER_NAMES,
    UnreadableAttribute,
    _is_dimension_only,
    dataset_filters,
    extract_attrs,
    filter_codec,
    open_group,
    phony_dimension_names,
)
from zarrport.virtual.parse import ParseOptions

_NC4_VAR_ATTRS = ("_Netcdf4Dimid", "_Netcdf4Coordinates")




def dtype_label(dset: Any, plan: hdf5_plan.VariablePlan) -> str:
    """A short name of the variable's type: float32, S1, str, enum(int8), compound, ..."""
    import h5py

    dt = dset.dtype
    string_info = h5py.check_string_dtype(dt)
    if string_info is not None:
        return "str" if string_info.length is None or string_info.length > 1 \
            else f"S{string_info.length}"
    enum = h5py.check_enum_dtype(dt)
    if enum is not None:
        return f"enum({plan.dtype.name if plan.dtype is not None else dt.name})"
    vlen = h5py.check_vlen_dtype(dt)
    if vlen is not None:
        return f"vlen({vlen})"
    if dt.names:
        return "compound"
    if h5py.check_ref_dtype(dt) is not None:
        return "reference"
    if dt.kind == "V":
        return f"opaque({dt.itemsize} B)"
    if dt.kind == "S":
        return f"S{dt.itemsize}"
    return dt.name


def _itemsize(dset: Any, plan: hdf5_plan.VariablePlan) -> int | None:
    import h5py

    if plan.dtype is not None:
        return None if plan.dtype.kind == "O" else plan.dtype.itemsize
    dt = dset.dtype
    if dt.kind == "O" or h5py.check_vlen_dtype(dt) is not None:
        return None
    return dt.itemsize


def _grid_count(shape: tuple[int, ...], chunks: tuple[int, ...]) -> int:
    return math.prod(math.ceil(s / c) if c else 0 for s, c in zip(shape, chunks, strict=True))


def _chunk_stats(dset: Any, want_ranges: bool) -> tuple[int, int | None]:
    """(allocated chunks, end of the last chunk's bytes or None) of a chunked dataset."""
    dsid = dset.id
    n = int(dsid.get_num_chunks())
    if not want_ranges or n == 0:
        return n, None
    end = 0

    def visit(info: Any) -> None:
        nonlocal end
        end = max(end, int(info.byte_offset) + int(info.size))

    dsid.chunk_iter(visit)
    return n, end


def inspect_hdf5(target: Any, url: str, *, size: int, options: ParseOptions) -> SourceReport:
    import h5py
    import hdf5plugin  # noqa: F401  (registers bzip2/lz4/bitshuffle/zstd/blosc filters)

    try:
        f = h5py.File(target, "r")
    except OSError as err:
        raise CorruptSourceError(f"{url}: not a readable HDF5 file ({err})", source=url) from err
    with f:
        group = options.group
        g = open_group(f, group, url)
        dim_names = phony_dimension_names(f)
        is_netcdf = "_NCProperties" in f.attrs or "_nc3_strict" in f.attrs
        variables = []
        dims: dict[str, int] = {}
        unlimited: list[str] = []
        truncated: tuple[str, int] | None = None
        for name in g:
            try:
                obj = g.get(name)
            except (KeyError, OSError):  # dangling soft/external link
                continue
            if not isinstance(obj, h5py.Dataset):
                continue
            if _is_dimension_only(obj):
                is_netcdf = True
                continue
            is_netcdf = is_netcdf or any(a in obj.attrs for a in _NC4_VAR_ATTRS)
            var_dims = dim_names[str(obj.name)]
            var_plan = hdf5_plan.plan_variable(
                obj, name, var_dims,
                subchunk_bytes=options.subchunk_bytes,
                inline_bytes=options.inline_bytes,
                inline_limit_bytes=options.inline_limit_bytes,
                strict_attrs=options.on_unsupported != "drop",
            )
            report, end = _variable_report(obj, name, var_dims, var_plan, size=size,
                                           options=options)
            variables.append(report)
            dims.update(zip(report.dims, report.shape, strict=True))
            maxshape = obj.maxshape or obj.shape
            for d, mx in zip(report.dims, maxshape, strict=True):
                if mx is None and d not in unlimited:
                    unlimited.append(d)
            if (truncated is None and end is not None and end > size
                    and report.verdict in (VIRTUALIZE, VIRTUALIZE_SUBCHUNKED)):
                truncated = (report.name, end)

        problems: list[str] = []
        try:
            extract_attrs(g, strict=True)
        except UnreadableAttribute as err:
            problems.append(f"group {g.name!r}: {err}")
        n_attrs = len(extract_attrs(g, strict=False))

        superblock = f.id.get_create_plist().get_version()[0]
        if is_netcdf:
            fmt = "netcdf4"
            version = "NETCDF4_CLASSIC" if "_nc3_strict" in f.attrs else "NETCDF4"
            props = f.attrs.get("_NCProperties") if "_NCProperties" in f.attrs else None
            extra = f"HDF5 superblock v{superblock}"
            if props is not None:
                props = props.decode("utf-8", "replace") if isinstance(props, bytes) \
                    else str(props)
                extra += f"; {props.rstrip(chr(0))}"
            version = f"{version} ({extra})"
        else:
            fmt, version = "hdf5", f"HDF5 (superblock v{superblock})"

    if truncated is not None:  # what parse_source's range check raises
        name, end = truncated
        raise CorruptSourceError(
            f"{url}: truncated: variable {name!r} references bytes up to {end} "
            f"but the file has {size}",
            variable=name, source=url,
        )
    return SourceReport(
        url=url, format=fmt, format_version=version, size=size, group=group or None,
        dims=dims, unlimited_dims=unlimited, global_attr_count=n_attrs,
        variables=variables, problems=problems,
    )


def _variable_report(
    dset: Any, name: str, dims: tuple[str, ...], plan: hdf5_plan.VariablePlan, *, size: int,
    options: ParseOptions,
) -> tuple[VariableReport, int | None]:
    """The variable's report, and where its referenced/inlined bytes end in the file."""
    shape = plan.shape
    layout = plan.layout
    itemsize = _itemsize(dset, plan)
    nbytes = math.prod(shape) * itemsize if itemsize is not None else None

    # storage chunks in the source, how many are written, where their bytes end
    end: int | None = None
    wants_bytes = plan.action in (hdf5_plan.REFERENCE, hdf5_plan.SUBCHUNK, hdf5_plan.INLINE)
    if layout == "chunked":
        chunks: tuple[int, ...] | None = tuple(int(c) for c in dset.chunks)
        allocated, end = _chunk_stats(dset, wants_bytes)
    elif layout == "contiguous":
        chunks = shape
        offset = dset.id.get_offset()
        allocated = 0 if offset is None or not math.prod(shape) else 1
        if offset is not None and wants_bytes:
            end = int(offset) + int(dset.id.get_storage_size())
    elif layout == "compact":
        chunks, allocated = shape, (1 if math.prod(shape) else 0)
    else:  # virtual / unknown: no chunks of its own
        chunks, allocated = None, None
    total = _grid_count(shape, chunks) if chunks is not None else None

    filt_dtype = plan.dtype if plan.dtype is not None else dset.dtype
    filters = []
    for fid, props in dataset_filters(dset):
        codec = filter_codec(fid, props, filt_dtype)
        filters.append(FilterReport(fid, FILTER_NAMES.get(fid, f"filter {fid}"),
                                    codec["id"] if codec else None))

    attrs = plan.attrs
    if plan.action == hdf5_plan.REFUSE:
        try:
            attrs = extract_attrs(dset, strict=False)
        except Exception:
            attrs = {}
    fill_value = attrs.get("_FillValue", plan.fill_value)

    verdict, reason = _verdict(plan, options)
    if verdict == INLINE and end is not None and end > size:
        # _read_inline fails on bytes past the end of the file: _variable refuses it
        verdict = CONVERT
        reason = (f"{plan.reason or 'inlining'} failed: the data cannot be read (its bytes "
                  f"run to {end}, past the end of the {size}-byte file)")

    warnings = []
    if plan.action in (hdf5_plan.REFERENCE, hdf5_plan.SUBCHUNK) and plan.chunks is not None:
        subchunked = plan.action == hdf5_plan.SUBCHUNK
        n_read = _grid_count(shape, plan.chunks) if subchunked else allocated
        warnings = chunk_warnings(
            layout=layout, dims=dims, shape=shape, chunks=plan.chunks, itemsize=itemsize,
            n_chunks=int(n_read or 0), subchunked=subchunked,
        )

    report = VariableReport(
        name=name.removeprefix("_nc4_non_coord_"),
        dims=dims,
        shape=shape,
        dtype=dtype_label(dset, plan),
        layout=layout,
        chunks=chunks,
        chunk_mb=mb(math.prod(chunks) * itemsize) if chunks is not None and itemsize else None,
        chunks_allocated=allocated,
        chunks_total=total,
        size_mb=mb(nbytes),
        stored_mb=mb(int(dset.id.get_storage_size())),
        filters=filters,
        fill_value=fill_value,
        scale_factor=attrs.get("scale_factor"),
        add_offset=attrs.get("add_offset"),
        verdict=verdict,
        reason=reason,
        virtual_chunks=plan.chunks if verdict != CONVERT else None,
        warnings=warnings,
    )
    return report, end


def _verdict(plan: hdf5_plan.VariablePlan, options: ParseOptions) -> tuple[str, str]:
    shape = plan.shape
    if plan.action == hdf5_plan.REFUSE:
        return CONVERT, plan.message or "cannot be virtualized"
    if plan.action == hdf5_plan.INLINE:
        if plan.reason is not None:
            return INLINE, (f"{plan.reason}; at {human_bytes(plan.nbytes)} it is small enough "
                            f"to inline (limit {human_bytes(options.inline_limit_bytes)})")
        if plan.nbytes <= options.inline_bytes:
            return INLINE, reason_inline_small(plan.nbytes, options.inline_bytes)
        return INLINE, reason_inline_coordinate(plan.nbytes, options.inline_limit_bytes)
    if plan.action == hdf5_plan.UNALLOCATED:
        return VIRTUALIZE, ("contiguous and never written: every value is the fill value, "
                            "nothing to reference")
    if plan.action == hdf5_plan.SUBCHUNK:
        assert plan.chunks is not None
        return VIRTUALIZE_SUBCHUNKED, reason_subchunked(shape, plan.chunks, plan.nbytes,
                                                        options.subchunk_bytes)
    if not plan.codecs:
        return VIRTUALIZE, "chunked, no filters: chunks referenced in place"
    codecs = ", ".join(c["id"] for c in plan.codecs)
    return VIRTUALIZE, (f"chunked, every filter maps to a Zarr codec ({codecs}): "
                        "chunks referenced in place")
