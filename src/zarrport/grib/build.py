"""GRIB fields -> zarrport's :class:`~zarrport.virtual.model.VirtualDataset` and
VirtualiZarr's ``ManifestStore``.

Every parser (``GEFSParser``, ``ECMWFParser``, ``GribParser``) reduces its input to a list
of :class:`Field` -- one GRIB field: where its message is, which variable it belongs to and
its coordinates (init time, member, step, level) -- plus the :class:`~zarrport.grib.grid.Grid`
of each grid. :func:`build_dataset` turns that into arrays:

* one variable per name, dimensions ``(init_time, member, step, <level>, <grid dims>)``:
  ``always`` dimensions are kept even with one value (the ensemble parsers keep all three),
  others only where the key varies within the variable;
* one chunk per field (``(1, ..., 1, ny, nx)``), its bytes the whole GRIB message, decoded
  by the ``zarrport.grib`` codec; a field absent from the input is a missing chunk and
  reads as NaN -- nowhere else does NaN appear except where the message's bitmap says so;
* a dimension shared by several variables takes the union of their values;
* coordinates are inlined (the Icechunk writer stores them natively), and for a
  ``ManifestStore`` -- which can only hold references -- they are read through the same
  codec from a message that carries them (``field="latitude"``, ``"key:endStep"`` ...).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zarrport.errors import IncompatibleSourcesError
from zarrport.grib.codec import CODEC_NAME
from zarrport.grib.grid import Grid
from zarrport.virtual.model import ChunkRefs, VirtualDataset, VirtualVariable

#: the order of the non-grid dimensions
DIM_ORDER = ("init_time", "member", "step", "level")

EPOCH_UNITS = "seconds since 1970-01-01T00:00:00"


@dataclass
class Field:
    """One GRIB field: the message holding it and its coordinates."""

    url: str
    offset: int
    length: int
    name: str
    grid: str  # Grid.key
    init_time: np.datetime64 | None = None  # reference time (datetime64[s])
    member: int | None = None  # ensemble member, 0 for the control
    step: np.timedelta64 | None = None  # end of the forecast / accumulation window
    level: float | None = None
    level_type: str | None = None
    #: start of the accumulation window (GEFS buckets 6-9 h: 6 h), None if instantaneous
    window_start: np.timedelta64 | None = None
    dtype: str = "float32"
    attrs: dict[str, Any] = field(default_factory=dict)
    #: multi-field GRIB2 message: the field's number in it (0-based); None otherwise
    message_field: int | None = None

    def coord(self, dim: str) -> Any:
        return getattr(self, dim)


@dataclass
class Built:
    """What :func:`build_dataset` produced, plus the messages carrying each coordinate
    value (for a ManifestStore, which reads coordinates through the codec)."""

    dataset: VirtualDataset
    grids: dict[str, Grid]
    #: (dim, value) -> index of a field carrying it, in ``fields``
    carriers: dict[tuple[str, Any], int]
    fields: list[Field]
    #: every (variable, coordinates) expected but absent: "tp member=2 step=9h"
    missing: list[str]


def _step_units(steps: list[np.timedelta64]) -> tuple[str, np.timedelta64]:
    hours = np.timedelta64(1, "h")
    if all(s % hours == np.timedelta64(0, "s") for s in steps):
        return "hours", hours
    return "minutes", np.timedelta64(1, "m")


def coordinate_variables(values: dict[str, list[Any]], level_type: str | None,
                         level_units: str | None) -> dict[str, VirtualVariable]:
    """Inlined 1-D coordinates for the non-grid dimensions."""
    out: dict[str, VirtualVariable] = {}
    for dim, vals in values.items():
        if dim == "init_time":
            data = np.array([np.datetime64(v, "s").astype(np.int64) for v in vals], np.int64)
            attrs = {"units": EPOCH_UNITS, "calendar": "proleptic_gregorian",
                     "standard_name": "forecast_reference_time",
                     "long_name": "initial time of forecast"}
        elif dim == "member":
            data = np.array(vals, dtype=np.int32)
            attrs = {"standard_name": "realization",
                     "long_name": "ensemble member numerical id (0: control)"}
        elif dim == "step":
            units, unit = _step_units(vals)
            data = np.array([v // unit for v in vals], dtype=np.int64)
            attrs = {"units": units, "dtype": "timedelta64[ns]",
                     "standard_name": "forecast_period",
                     "long_name": "time since forecast reference time"}
        else:
            data = np.array(vals, dtype=np.float64)
            attrs = {"long_name": f"level ({level_type})" if level_type else "level",
                     "GRIB_typeOfLevel": level_type or ""}
            if level_units:
                attrs["units"] = level_units
        out[dim] = VirtualVariable(dim, (dim,), data.shape, data.dtype, data.shape or (1,),
                                   data=data, attrs=attrs)
    return out


def grid_variables(grid: Grid, suffix: str = "") -> dict[str, VirtualVariable]:
    """Inlined latitude/longitude of a grid (1-D for regular grids, 2-D otherwise)."""
    out = {}
    if len(grid.dims) == 1:  # reduced grid: both along its points
        lat_dims = lon_dims = (grid.dims[0] + suffix,)
    else:
        lat_dims = (grid.dims[0] + suffix,) if grid.latitude.ndim == 1 else tuple(
            d + suffix for d in grid.dims)
        lon_dims = (grid.dims[1] + suffix,) if grid.longitude.ndim == 1 else tuple(
            d + suffix for d in grid.dims)
    for name, data, dims, attrs in (
        ("latitude", grid.latitude, lat_dims,
         {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude"}),
        ("longitude", grid.longitude, lon_dims,
         {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude"}),
    ):
        data = np.ascontiguousarray(data, dtype=np.float64)
        out[name + suffix] = VirtualVariable(name + suffix, dims, data.shape, data.dtype,
                                             data.shape, data=data, attrs=attrs)
    return out


def serializer(grid: Grid, what: str = "values",
               message_field: int | None = None) -> dict[str, Any]:
    # reduced grids and alternative row scanning: ecCodes only (gribberish's handling of
    # them is not checked)
    special = len(grid.dims) == 1 or grid.layout.alternate
    config: dict[str, Any] = {"layout": grid.layout.to_config(), "field": what,
                              "decoder": "eccodes" if special else "auto"}
    if message_field is not None:
        config["message_field"] = message_field
    return {"name": CODEC_NAME, "configuration": config}


def build_dataset(fields: list[Field], grids: dict[str, Grid], *,
                  always: tuple[str, ...] = (), attrs: dict[str, Any] | None = None,
                  source_stats: dict[str, dict[str, Any]] | None = None,
                  expect: dict[str, list[Any]] | None = None) -> Built:
    """Arrays of ``fields`` (see the module docstring).

    ``expect`` forces the values of a dimension (e.g. every member and step asked for), so a
    missing file is a missing chunk, not a shorter dimension.
    """
    if not fields:
        raise IncompatibleSourcesError("no GRIB fields to build a dataset from")
    sources: list[str] = []
    source_index: dict[str, int] = {}
    for f in fields:
        if f.url not in source_index:
            source_index[f.url] = len(sources)
            sources.append(f.url)
    by_var: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(fields):
        by_var[f.name].append(i)

    # grids: the first one keeps plain dimension names, later ones get a suffix
    grid_order = list(dict.fromkeys(f.grid for f in fields))
    suffix = {key: "" if n == 0 else f"_{n}" for n, key in enumerate(grid_order)}

    # dimensions of each variable
    var_dims: dict[str, list[str]] = {}
    for name, idx in by_var.items():
        dims = []
        for dim in DIM_ORDER:
            vals = {_hashable(fields[i].coord(dim)) for i in idx}
            if dim in always or len(vals) > 1:
                if None in vals and len(vals) > 1:
                    raise IncompatibleSourcesError(
                        f"variable {name!r}: some fields have a {dim} and some have none")
                dims.append(dim)
        var_dims[name] = dims
        types = {fields[i].level_type for i in idx}
        if "level" in dims and len(types) > 1:
            raise IncompatibleSourcesError(
                f"variable {name!r} has fields on several level types {sorted(map(str, types))}")

    # the values of each dimension: union over the variables using it
    dim_values: dict[str, list[Any]] = {}
    for dim in DIM_ORDER:
        users = [n for n, d in var_dims.items() if dim in d]
        if not users:
            continue
        vals = {fields[i].coord(dim) for n in users for i in by_var[n]}
        if expect and dim in expect:
            vals |= set(expect[dim])
        vals.discard(None)
        dim_values[dim] = sorted(vals)
    level_types = {fields[i].level_type for n, d in var_dims.items() if "level" in d
                   for i in by_var[n]}
    if len(level_types) > 1:  # one shared "level" dimension means one kind of level
        raise IncompatibleSourcesError(
            f"fields on several level types vary in level: {sorted(map(str, level_types))}; "
            "open them separately (filter by level type)")
    level_type = next(iter(level_types), None)
    index_of = {dim: {_hashable(v): k for k, v in enumerate(vals)}
                for dim, vals in dim_values.items()}

    variables: dict[str, VirtualVariable] = {}
    missing: list[str] = []
    for name, idx in by_var.items():
        dims = var_dims[name]
        first = fields[idx[0]]
        grid = grids[first.grid]
        if any(fields[i].grid != first.grid for i in idx):
            raise IncompatibleSourcesError(f"variable {name!r} has fields on different grids")
        positions = {fields[i].message_field for i in idx}
        if len(positions) > 1:
            raise IncompatibleSourcesError(
                f"variable {name!r}: its fields sit at different positions of multi-field "
                f"messages ({sorted(map(str, positions))}); one array reads one position")
        lead = tuple(len(dim_values[d]) for d in dims)
        tail = (0,) * len(grid.dims)
        refs = ChunkRefs.empty(lead + (1,) * len(grid.dims))
        seen: dict[tuple[int, ...], int] = {}
        for i in idx:
            f = fields[i]
            pos = tuple(index_of[d][_hashable(f.coord(d))] for d in dims)
            if pos in seen:
                other = fields[seen[pos]]
                if (other.url, other.offset, other.message_field) == (
                        f.url, f.offset, f.message_field):
                    continue
                where = ", ".join(f"{d}={_show(f.coord(d))}" for d in dims) or "no dimensions"
                raise IncompatibleSourcesError(
                    f"variable {name!r}: two fields at the same coordinates ({where}) -- "
                    f"{_msg(other)} and {_msg(f)} differ in keys zarrport does not map to a "
                    "dimension")
            seen[pos] = i
            refs.source[pos + tail] = source_index[f.url]
            refs.offset[pos + tail] = f.offset
            refs.length[pos + tail] = f.length
        if len(seen) < int(np.prod(lead, dtype=np.int64)):
            for pos in np.ndindex(*lead):
                if pos not in seen:
                    missing.append(name + "".join(
                        f" {d}={_show(dim_values[d][k])}" for d, k in zip(dims, pos,
                                                                         strict=True)))
        dtype = np.dtype(first.dtype)
        vattrs = dict(first.attrs)
        gdims = tuple(d + suffix[first.grid] for d in grid.dims)
        if grid.latitude.ndim == 2 or len(grid.dims) == 1:
            vattrs["coordinates"] = " ".join(
                ("latitude" + suffix[first.grid], "longitude" + suffix[first.grid]))
        variables[name] = VirtualVariable(
            name=name, dims=tuple(dims) + gdims, shape=lead + grid.shape, dtype=dtype,
            chunks=(1,) * len(lead) + grid.shape, fill_value=np.nan, attrs=vattrs,
            refs=refs, serializer=serializer(grid, message_field=first.message_field))
        starts = [fields[i].window_start for i in idx]
        if "step" in dims and any(s is not None for s in starts):
            variables.update(_window_start(name, idx, fields, dim_values["step"]))

    variables.update(coordinate_variables(
        dim_values, level_type, _level_units(level_type)))
    for key in grid_order:
        variables.update(grid_variables(grids[key], suffix[key]))
    # each coordinate value's carrier message (ManifestStore coordinates)
    carriers: dict[tuple[str, Any], int] = {}
    # a message's first field first: ecCodes reads it from the whole message, so the codec
    # needs no message_field to read its keys and coordinates
    for i, f in sorted(enumerate(fields), key=lambda t: bool(t[1].message_field)):
        for dim in dim_values:
            carriers.setdefault((dim, _hashable(f.coord(dim))), i)
        carriers.setdefault(("grid", f.grid), i)
    stats = [dict((source_stats or {}).get(u, {})) for u in sources]
    vds = VirtualDataset(variables=variables, attrs=dict(attrs or {}), sources=sources,
                         source_stats=stats)
    return Built(vds, {k: grids[k] for k in grid_order}, carriers, fields, missing)


def _window_start(name: str, idx: list[int], fields: list[Field],
                  steps: list[np.timedelta64]) -> dict[str, VirtualVariable]:
    """``<name>_window_start(step)``: where each step's accumulation window starts (hours)."""
    start_of: dict[Any, np.timedelta64] = {}
    for i in idx:
        f = fields[i]
        if f.window_start is None:
            continue
        known = start_of.setdefault(_hashable(f.step), f.window_start)
        if known != f.window_start:
            raise IncompatibleSourcesError(
                f"variable {name!r}: step {_show(f.step)} accumulates from {_show(known)} in "
                f"one message and from {_show(f.window_start)} in another")
    units, unit = _step_units(steps + list(start_of.values()))
    data = np.array([start_of[_hashable(s)] // unit if _hashable(s) in start_of else -1
                     for s in steps], dtype=np.int64)
    vname = f"{name}_window_start"
    return {vname: VirtualVariable(
        vname, ("step",), data.shape, data.dtype, data.shape, data=data, fill_value=-1,
        attrs={"units": units, "long_name": f"start of the accumulation window of {name} "
               "(-1: no field at this step)", "_FillValue": -1})}


def _level_units(level_type: str | None) -> str | None:
    return {"isobaricInhPa": "hPa", "isobaricInPa": "Pa", "heightAboveGround": "m",
            "heightAboveSea": "m", "depthBelowLand": "cm", "depthBelowLandLayer": "m",
            "hybrid": "1", "surface": None}.get(level_type or "")


def _hashable(v: Any) -> Any:
    if isinstance(v, np.datetime64 | np.timedelta64):
        return v.astype("m8[s]" if isinstance(v, np.timedelta64) else "M8[s]")
    return v


def _show(v: Any) -> str:
    if isinstance(v, np.timedelta64):
        hours = v / np.timedelta64(1, "h")
        return f"{hours:g}h"
    if isinstance(v, np.datetime64):
        return str(np.datetime64(v, "s")).replace("T", " ")
    return str(v)


def _msg(f: Field) -> str:
    return f"{f.url.rsplit('/', 1)[-1]} @{f.offset}"


def init_time_of(date: int, time: int, second: int = 0) -> np.datetime64:
    """``dataDate``/``dataTime`` (YYYYMMDD, HHMM) and ``second`` as datetime64[s]."""
    t = dt.datetime(date // 10000, date // 100 % 100, date % 100, time // 100, time % 100,
                    second)
    return np.datetime64(t, "s")


# --------------------------------------------------------------------------- ManifestStore


def to_manifest_store(built: Built, registry: Any) -> Any:
    """The dataset as VirtualiZarr's ``ManifestStore``: every array a ``ManifestArray``,
    coordinates read through the ``zarrport.grib`` codec from a message that carries them."""
    from virtualizarr.manifests import (
        ChunkManifest,
        ManifestArray,
        ManifestGroup,
        ManifestStore,
    )
    from virtualizarr.manifests.utils import create_v3_array_metadata

    vds, fields = built.dataset, built.fields
    arrays: dict[str, ManifestArray] = {}

    def manifest(paths: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> ChunkManifest:
        return ChunkManifest.from_arrays(
            paths=paths.astype(np.dtypes.StringDType()), offsets=offsets.astype(np.uint64),
            lengths=lengths.astype(np.uint64), validate_paths=False)

    def carrier_array(name: str, var: VirtualVariable, dim: str, keys: list[Any],
                      codec_field: str, grid: Grid, dtype: np.dtype) -> ManifestArray:
        idx = [built.carriers[(dim, k)] for k in keys]
        paths = np.array([fields[i].url for i in idx], dtype=object)
        meta = create_v3_array_metadata(
            shape=var.shape, data_type=dtype, chunk_shape=(1,) * len(var.shape),
            fill_value=None, codecs=[serializer(grid, codec_field,
                                                _one_position(name, fields, idx))],
            attributes=_codec_attrs(var.attrs, dtype), dimension_names=var.dims)
        return ManifestArray(metadata=meta, chunkmanifest=manifest(
            paths.reshape(var.shape),
            np.array([fields[i].offset for i in idx]).reshape(var.shape),
            np.array([fields[i].length for i in idx]).reshape(var.shape)))

    any_grid = next(iter(built.grids.values()))
    for name, var in vds.variables.items():
        if var.refs is not None:
            src = var.refs.source
            paths = np.where(src >= 0, np.array(vds.sources + [""], dtype=object)[src], "")
            meta = create_v3_array_metadata(
                shape=var.shape, data_type=var.dtype, chunk_shape=var.chunks,
                fill_value=var.fill_value, codecs=[var.serializer],
                attributes=var.attrs, dimension_names=var.dims)
            arrays[name] = ManifestArray(metadata=meta, chunkmanifest=manifest(
                paths, var.refs.offset, var.refs.length))
            continue
        if name in DIM_ORDER:
            key = {"init_time": "key:init_seconds", "member": "key:number",
                   "step": "key:end_step_minutes", "level": "key:level"}[name]
            values = [_hashable(v) for v in _decoded(name, var)]
            dtype = np.dtype(np.int64 if name != "level" else np.float64)
            arr = carrier_array(name, var, name, values, key, any_grid, dtype)
            arrays[name] = arr
            continue
        for n, (gkey, grid) in enumerate(built.grids.items()):
            base = name.split("_")[0]
            sfx = name[len(base):]
            # grid n's coordinates carry build_dataset's suffix "_n" (none for the first):
            # match on it, not on the dimension names, which grids of one type share
            if base in ("latitude", "longitude") and sfx == ("" if n == 0 else f"_{n}"):
                i = built.carriers[("grid", gkey)]
                meta = create_v3_array_metadata(
                    shape=var.shape, data_type=np.dtype(np.float64), chunk_shape=var.shape,
                    fill_value=None, codecs=[serializer(grid, base, _one_position(
                        name, fields, [i]))], attributes=var.attrs,
                    dimension_names=var.dims)
                one = (1,) * len(var.shape)
                arrays[name] = ManifestArray(metadata=meta, chunkmanifest=manifest(
                    np.array([fields[i].url], dtype=object).reshape(one),
                    np.array([fields[i].offset]).reshape(one),
                    np.array([fields[i].length]).reshape(one)))
                break
    # <name>_window_start has no message of its own (it is read from the index): a
    # ManifestStore, which holds only references, carries it as an attribute instead
    for name, var in vds.variables.items():
        if name.endswith("_window_start") and name.removesuffix("_window_start") in arrays:
            owner = arrays[name.removesuffix("_window_start")]
            owner.metadata.attributes[f"GRIB_{name}"] = [int(v) for v in var.data]
    return ManifestStore(ManifestGroup(arrays=arrays, attributes=vds.attrs), registry=registry)


def _one_position(name: str, fields: list[Field], idx: list[int]) -> int | None:
    """The message_field the codec needs to read a coordinate from these carriers."""
    positions = {fields[i].message_field or None for i in idx}
    if len(positions) > 1:
        raise IncompatibleSourcesError(
            f"coordinate {name!r}: its values are only found in fields at different "
            "positions of multi-field messages; a ManifestStore cannot read them (write "
            "Icechunk, which stores coordinates)")
    return next(iter(positions))


def _decoded(name: str, var: VirtualVariable) -> list[Any]:
    data = var.data
    if name == "init_time":
        return [np.datetime64(int(v), "s") for v in data]
    if name == "step":
        unit = np.timedelta64(1, "h" if var.attrs["units"] == "hours" else "m")
        return [int(v) * unit for v in data]
    return [v.item() for v in data]


def _codec_attrs(attrs: dict[str, Any], dtype: np.dtype) -> dict[str, Any]:
    """Coordinates read through the codec come out as seconds / minutes / numbers."""
    out = dict(attrs)
    if "units" in out and out["units"] in ("hours", "minutes"):
        out["units"] = "minutes"
    return out
