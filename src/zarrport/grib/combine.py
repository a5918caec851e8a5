"""Several GRIB files as one dataset: hourly analyses along ``init_time``, the steps of one
forecast along ``step`` ... (``virtualize --concat-dim``, ``batch``).

:func:`zarrport.virtual.combine.combine` concatenates the files' arrays along one
dimension. A GRIB file has a dimension only where its key varies *within* the file; a
coordinate with one value is the variable attribute ``GRIB_init_time``,
``GRIB_member``, ``GRIB_step_minutes`` or ``GRIB_level``. :func:`prepare` turns that
attribute into a dimension of length 1 (one chunk per message stays one chunk), so the
files concatenate chunk for chunk and never need a native chunk. ``time`` names the
reference time, as cfgrib's ``time`` coordinate does.

Refused, naming both files: a coordinate other than the concatenation dimension that
differs between files (it would silently keep the first file's value), a dimension
value present in two files (:func:`check_unique`), and a variable without one value of
the concatenation coordinate in a file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zarrport.errors import IncompatibleSourcesError
from zarrport.grib.build import DIM_ORDER, _level_units, coordinate_variables
from zarrport.grib.codec import CODEC_NAME
from zarrport.virtual.model import ChunkRefs, VirtualDataset, VirtualVariable

#: coordinate -> the variable attribute holding it when it does not vary within a file
CONSTANT_ATTRS = {"init_time": "GRIB_init_time", "member": "GRIB_member",
                  "step": "GRIB_step_minutes", "level": "GRIB_level"}
#: also a per-file constant that must agree across files (accumulation window start)
_ALSO = ("GRIB_window_start_minutes",)


def is_grib(vds: VirtualDataset) -> bool:
    return any((v.serializer or {}).get("name") == CODEC_NAME for v in vds.variables.values())


def grib_dim(dim: str) -> str:
    """``time`` means the reference time (cfgrib's name for it)."""
    return "init_time" if dim == "time" else dim


def prepare(datasets: list[VirtualDataset], dim: str) -> tuple[list[VirtualDataset], str]:
    """The datasets with ``dim`` a dimension of every data variable, and the dimension name
    to combine along (see the module docstring)."""
    dim = grib_dim(dim)
    if dim not in DIM_ORDER:
        raise IncompatibleSourcesError(
            f"GRIB files combine along init_time (or time), member, step or level, not "
            f"{dim!r}")
    out = [_promote(vds, dim) for vds in datasets]
    _check_constants(out, dim)
    return out, dim


def _data_vars(vds: VirtualDataset) -> dict[str, VirtualVariable]:
    return {n: v for n, v in vds.variables.items() if v.refs is not None}


def _promote(vds: VirtualDataset, dim: str) -> VirtualDataset:
    attr = CONSTANT_ATTRS[dim]
    src = vds.sources[0]
    data = _data_vars(vds)
    have = {n for n, v in data.items() if dim in v.dims}
    if have and len(have) != len(data):
        # some variables vary along dim, others hold one value: the one-value ones take
        # the shared coordinate only if their value is in it (rare; refused for clarity)
        lacking = sorted(set(data) - have)
        raise IncompatibleSourcesError(
            f"{src}: variables {lacking} have one {dim} while {sorted(have)} vary along it; "
            "virtualize them separately", source=src)
    if have:
        return vds
    values = {n: v.attrs.get(attr) for n, v in data.items()}
    if None in values.values():
        name = next(n for n, x in values.items() if x is None)
        raise IncompatibleSourcesError(
            f"{src}: variable {name!r} has no {dim} to combine along", variable=name,
            source=src)
    if len({_hashable(x) for x in values.values()}) > 1:
        raise IncompatibleSourcesError(
            f"{src}: its variables have different {dim} values ({_show(values)}); combine "
            f"them along another dimension or virtualize them separately", source=src)
    value = next(iter(values.values()))
    variables: dict[str, VirtualVariable] = {}
    level_type = None
    for name, var in vds.variables.items():
        if var.refs is None:
            variables[name] = var
            continue
        pos = sum(1 for d in var.dims if d in DIM_ORDER[:DIM_ORDER.index(dim)])
        attrs = {k: v for k, v in var.attrs.items() if k != attr}
        level_type = level_type or var.attrs.get("GRIB_typeOfLevel") or None
        refs = ChunkRefs(np.expand_dims(var.refs.source, pos),
                         np.expand_dims(var.refs.offset, pos),
                         np.expand_dims(var.refs.length, pos))
        variables[name] = var.with_(
            dims=var.dims[:pos] + (dim,) + var.dims[pos:],
            shape=var.shape[:pos] + (1,) + var.shape[pos:],
            chunks=var.chunks[:pos] + (1,) + var.chunks[pos:], attrs=attrs, refs=refs)
    coord = {"init_time": lambda v: np.datetime64(v, "s"),
             "step": lambda v: np.timedelta64(int(v), "m").astype("m8[s]"),
             "member": int, "level": float}[dim](value)
    variables.update(coordinate_variables({dim: [coord]}, level_type,
                                          _level_units(level_type)))
    return VirtualDataset(variables=variables, attrs=dict(vds.attrs), sources=vds.sources,
                          source_stats=vds.source_stats)


def _check_constants(datasets: list[VirtualDataset], dim: str) -> None:
    """Per-file constants other than ``dim`` must be equal in every file."""
    first = datasets[0]
    attrs = [a for d, a in CONSTANT_ATTRS.items() if d != dim] + list(_ALSO)
    for vds in datasets[1:]:
        for name, var in _data_vars(first).items():
            other = vds.variables.get(name)
            if other is None:
                continue  # combine names the missing variable
            for attr in attrs:
                a, b = var.attrs.get(attr), other.attrs.get(attr)
                if _hashable(a) != _hashable(b):
                    raise IncompatibleSourcesError(
                        f"variable {name!r}: {attr.removeprefix('GRIB_')} is {a!r} in "
                        f"{first.sources[0]} but {b!r} in {vds.sources[0]}; only "
                        f"{dim} may differ between files combined along it",
                        variable=name, source=vds.sources[0])


def check_unique(vds: VirtualDataset, dim: str) -> None:
    """After combining: every value of ``dim`` once (two files holding the same init time
    would otherwise both be referenced at different indexes of one coordinate value)."""
    coord = vds.variables.get(dim)
    if coord is None or coord.data is None:
        return
    values = np.asarray(coord.data)
    if values.size > 1 and not np.all(np.diff(values) > 0):
        uniq, counts = np.unique(values, return_counts=True)
        dup = uniq[counts > 1]
        what = (f"{_decoded(dim, coord, dup[0])} is in {int(counts[counts > 1][0])} files"
                if dup.size else "the files' values interleave")
        raise IncompatibleSourcesError(
            f"combining along {dim}: {what}; each file must add new {dim} values")


def _decoded(dim: str, coord: VirtualVariable, value: Any) -> str:
    if dim == "init_time":
        return str(np.datetime64(int(value), "s")).replace("T", " ")
    if dim == "step":
        return f"step {int(value)} {coord.attrs.get('units', '')}".strip()
    return f"{dim} {value.item() if hasattr(value, 'item') else value}"


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(v)
    return v


def _show(values: dict[str, Any]) -> str:
    return ", ".join(f"{n}: {v}" for n, v in list(values.items())[:4])
