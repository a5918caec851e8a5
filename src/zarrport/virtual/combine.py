"""Combine per-file VirtualDatasets along one dimension -- without ever misplacing a value.

Zarr has one regular chunk grid per array. A file's chunks can only be referenced as they
are if they land on that grid: the file must start at a multiple of the chunk length along
the concatenation dimension, and only the last file may end with a partial chunk. kerchunk's
``MultiZarrToZarr`` (fsspec/kerchunk#430) and VirtualiZarr's Icechunk append do not check the
second condition and read back another file's values without error (e.g. 365-day files with
a time chunk of 30); VirtualiZarr's ``xr.concat`` now raises (zarr-developers/VirtualiZarr#38).
Checked with kerchunk 0.2.10, virtualizarr 2.8.0. Here every chunk of the combined grid is
either a whole chunk of exactly one file (referenced) or marked *native*: its values must be
written into the output (Icechunk does; kerchunk cannot and the kerchunk writer refuses).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from zarrport.errors import IncompatibleSourcesError
from zarrport.virtual.hdf5 import contiguous_refs, subchunk_shape
from zarrport.virtual.model import MISSING, ChunkRefs, Part, VirtualDataset, VirtualVariable

#: attributes that change what the stored numbers mean; they must agree across files
ENCODING_ATTRS = ("scale_factor", "add_offset", "_FillValue", "missing_value", "_Unsigned",
                  "units", "calendar", "valid_min", "valid_max", "valid_range")


def _time_decoder(attrs: dict) -> Any:
    units = attrs.get("units")
    if isinstance(units, str) and " since " in units:
        import cftime

        calendar = attrs.get("calendar", "standard")
        return lambda values: cftime.num2date(values, units, calendar=calendar)
    return None


def _sort_key(vds: VirtualDataset, dim: str) -> Any:
    coord = vds.variables.get(dim)
    if coord is None or coord.data is None or coord.data.size == 0:
        return None
    first = coord.data.ravel()[0]
    decode = _time_decoder(coord.attrs)
    if decode is not None:
        try:
            return decode(np.asarray([first], dtype="f8"))[0]
        except Exception:
            return float(first)
    return first.item() if hasattr(first, "item") else first


def order_by_coordinate(datasets: list[VirtualDataset], dim: str) -> list[VirtualDataset]:
    """Files in the order of their first decoded coordinate value (stable when absent)."""
    keys = [_sort_key(d, dim) for d in datasets]
    if any(k is None for k in keys):
        return list(datasets)
    try:
        order = sorted(range(len(datasets)), key=lambda i: keys[i])
    except TypeError:  # mixed calendars cannot be compared: keep the given order
        return list(datasets)
    return [datasets[i] for i in order]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _encoding(var: VirtualVariable, skip_units: bool) -> dict[str, Any]:
    enc = {
        "dtype": str(var.dtype),
        "codecs": var.codecs,
        "fill value": var.fill_value,
        "dimensions": var.dims,
    }
    if not var.is_inline:
        enc["chunk shape"] = var.chunks if var.contiguous_at is None else "contiguous"
    for key in ENCODING_ATTRS:
        if skip_units and key == "units":
            continue
        enc[key] = var.attrs.get(key)
    return enc


def _check_compatible(name: str, variables: list[VirtualVariable], sources: list[str],
                      skip_units: bool) -> None:
    first = _encoding(variables[0], skip_units)
    for var, src in zip(variables[1:], sources[1:], strict=True):
        enc = _encoding(var, skip_units)
        for key, value in first.items():
            if not _same(value, enc[key]):
                raise IncompatibleSourcesError(
                    f"variable {name!r} is encoded differently: {key} is {value!r} in "
                    f"{sources[0]} but {enc[key]!r} in {src}",
                    variable=name,
                    source=src,
                )


def _reencode_times(variables: list[VirtualVariable]) -> list[np.ndarray]:
    """Inlined time values of every file expressed in the first file's units."""
    import cftime

    units = variables[0].attrs["units"]
    calendar = variables[0].attrs.get("calendar", "standard")
    out = []
    for var in variables:
        data = var.data
        assert data is not None
        if var.attrs.get("units") != units:
            dates = cftime.num2date(data, var.attrs["units"], calendar=calendar)
            data = np.asarray(cftime.date2num(dates, units, calendar=calendar), dtype=data.dtype)
        out.append(data)
    return out


def combine(datasets: list[VirtualDataset], dim: str) -> VirtualDataset:
    """One VirtualDataset of all files along ``dim``, ordered by their coordinate values."""
    if not datasets:
        raise IncompatibleSourcesError("nothing to combine")
    grib = all(_is_grib(d) for d in datasets)
    if grib:  # one-value GRIB coordinates become length-1 dimensions first
        from zarrport.grib.combine import prepare

        datasets, dim = prepare(datasets, dim)
    datasets = order_by_coordinate(datasets, dim)
    if not any(dim in v.dims for v in datasets[0].variables.values()):
        raise IncompatibleSourcesError(
            f"dimension {dim!r} is not in {datasets[0].sources[0]} "
            f"(its dimensions: {', '.join(datasets[0].dims) or 'none'})"
        )
    sources: list[str] = []
    stats: list[dict] = []
    bases: list[int] = []
    for d in datasets:
        bases.append(len(sources))
        sources.extend(d.sources)
        stats.extend(d.source_stats)
    names = list(datasets[0].variables)
    for d in datasets[1:]:
        if set(d.variables) != set(names):
            missing = set(names) ^ set(d.variables)
            raise IncompatibleSourcesError(
                f"{d.sources[0]} and {datasets[0].sources[0]} have different variables "
                f"({', '.join(sorted(missing))})",
                variable=sorted(missing)[0],
                source=d.sources[0],
            )
    lengths = [d.dims.get(dim, 0) for d in datasets]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
    first_sources = [d.sources[0] for d in datasets]

    variables: dict[str, VirtualVariable] = {}
    for name in names:
        per_file = [d.variables[name] for d in datasets]
        is_time = _time_decoder(per_file[0].attrs) is not None and all(
            v.is_inline for v in per_file
        )
        _check_compatible(name, per_file, first_sources, skip_units=is_time)
        if dim not in per_file[0].dims:
            variables[name] = _combine_constant(name, per_file, first_sources)
            continue
        axis = per_file[0].dims.index(dim)
        if all(v.is_inline for v in per_file):
            values = _reencode_times(per_file) if is_time else [v.data for v in per_file]
            data = np.concatenate(values, axis=axis)  # type: ignore[arg-type]
            variables[name] = per_file[0].with_(shape=data.shape, chunks=data.shape, data=data)
            continue
        if any(v.is_inline for v in per_file):
            raise IncompatibleSourcesError(
                f"variable {name!r} is inlined in some files and referenced in others; "
                "raise --inline-limit-mb or lower the inline threshold so all files agree",
                variable=name,
            )
        shifted = [v.with_(refs=v.refs.shifted(b)) for v, b in zip(per_file, bases, strict=True)]
        if per_file[0].contiguous_at is not None:
            shifted = _common_subchunks(shifted, axis, bases)
        variables[name] = _concat_refs(name, shifted, axis, starts, first_sources)
    attrs = dict(datasets[0].attrs)
    skipped: dict[tuple, dict[str, Any]] = {}
    for d in datasets:  # what --skip-unsupported left out of any file, listed once
        for item in getattr(d, "skipped", []):
            skipped.setdefault((item.get("variable"), item.get("attribute")), item)
    out = VirtualDataset(variables=variables, attrs=attrs, sources=sources, source_stats=stats,
                         skipped=list(skipped.values()))
    if grib:
        from zarrport.grib.combine import check_unique

        check_unique(out, dim)
    return out


def _is_grib(vds: VirtualDataset) -> bool:
    return any((v.serializer or {}).get("name") == "zarrport.grib"
               for v in vds.variables.values())


def _combine_constant(name: str, per_file: list[VirtualVariable],
                      sources: list[str]) -> VirtualVariable:
    """A variable without the concatenation dimension: the same in every file, kept once."""
    first = per_file[0]
    for var, src in zip(per_file[1:], sources[1:], strict=True):
        if var.shape != first.shape:
            raise IncompatibleSourcesError(
                f"variable {name!r} has shape {first.shape} in {sources[0]} but {var.shape} "
                f"in {src}",
                variable=name,
                source=src,
            )
        if first.is_inline and var.is_inline and first.data is not None and var.data is not None:
            a, b = first.data, var.data
            equal = (np.array_equal(a, b, equal_nan=True) if a.dtype.kind == "f"
                     else np.array_equal(a, b))
            if not equal:
                raise IncompatibleSourcesError(
                    f"variable {name!r} does not depend on the concatenation dimension but "
                    f"differs between {sources[0]} and {src}",
                    variable=name,
                    source=src,
                )
    return first


def _common_subchunks(variables: list[VirtualVariable], axis: int,
                      bases: list[int]) -> list[VirtualVariable]:
    """Re-split contiguous variables so that every file uses the same sub-chunk shape."""
    first = variables[0]
    lengths = [v.shape[axis] for v in variables]
    common = math.gcd(*lengths) or 1
    chunk_bytes = math.prod(first.chunks) * first.dtype.itemsize
    probe = list(first.shape)
    probe[axis] = common
    chunks = subchunk_shape(tuple(probe), first.dtype.itemsize, max(chunk_bytes, 1))
    out = []
    for var, _base in zip(variables, bases, strict=True):
        assert var.contiguous_at is not None and var.refs is not None
        src_local, offset = var.contiguous_at
        src = int(var.refs.source.ravel()[0]) if var.refs.count else src_local
        refs = contiguous_refs(var.shape, chunks, var.dtype.itemsize, src, offset)
        out.append(var.with_(chunks=chunks, refs=refs))
    return out


def _concat_refs(name: str, variables: list[VirtualVariable], axis: int, starts: list[int],
                 sources: list[str]) -> VirtualVariable:
    first = variables[0]
    c = first.chunks[axis]
    total = sum(v.shape[axis] for v in variables)
    shape = list(first.shape)
    shape[axis] = total
    grid = list(first.grid)
    grid[axis] = math.ceil(total / c) if c else 0
    refs = ChunkRefs.empty(tuple(grid))
    native = np.zeros(tuple(grid), dtype=bool)
    for var, start in zip(variables, starts, strict=True):
        assert var.refs is not None
        n = var.shape[axis]
        for j in range(var.grid[axis]):
            lo = start + j * c
            hi = min(start + (j + 1) * c, start + n)
            gj, rem = divmod(lo, c)
            whole = (hi - lo == c) or hi == total
            sel_src = [slice(None)] * len(grid)
            sel_src[axis] = j  # type: ignore[call-overload]
            if rem == 0 and whole:
                sel_dst = [slice(None)] * len(grid)
                sel_dst[axis] = gj  # type: ignore[call-overload]
                refs.source[tuple(sel_dst)] = var.refs.source[tuple(sel_src)]
                refs.offset[tuple(sel_dst)] = var.refs.offset[tuple(sel_src)]
                refs.length[tuple(sel_dst)] = var.refs.length[tuple(sel_src)]
            else:
                for g in range(lo // c, (hi - 1) // c + 1):
                    sel_dst = [slice(None)] * len(grid)
                    sel_dst[axis] = g  # type: ignore[call-overload]
                    native[tuple(sel_dst)] = True
    # a native chunk must not keep a reference placed by a neighbouring whole chunk
    refs.source[native] = MISSING
    return first.with_(
        shape=tuple(shape),
        refs=refs,
        native_chunks=native if native.any() else None,
        parts=[Part(start, v) for v, start in zip(variables, starts, strict=True)],
        concat_axis=axis,
    )
