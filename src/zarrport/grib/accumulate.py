"""Accumulated fields as one consistent variable: accumulated from the start of the forecast.

GEFS writes precipitation in alternating buckets -- the file at 3 h holds 0-3 h, at 6 h
0-6 h, at 9 h 6-9 h, at 12 h 6-12 h ... -- while ECMWF's ``tp`` accumulates from the start.
The stored arrays are the messages as they are; ``<name>_window_start(step)`` records where
each step's window starts (-1 where a step has no field). :func:`from_start` derives,
lazily, the total since the start of the forecast:

    acc(s) = bucket(s) + acc(start(s)),   acc(0) = 0

so acc(9 h) = [6-9 h] + [0-6 h], acc(12 h) = [6-12 h] + [0-6 h]. For ECMWF every window
starts at 0 and the values pass through unchanged. A step whose chain reaches a step that
is not in the dataset is NaN, never a silently partial sum.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

SUFFIX = "_window_start"


def chains(steps: np.ndarray, starts: np.ndarray) -> list[list[int] | None]:
    """Per step, the indices of the stored steps whose sum is the accumulation from the
    start; ``[]`` for step 0 without a field (zero), None where it cannot be derived."""
    steps = np.asarray(steps).astype("m8[s]")
    index = {s: i for i, s in enumerate(steps)}
    out: list[list[int] | None] = []
    zero = np.timedelta64(0, "s")
    for i, s in enumerate(steps):
        start = starts[i]
        if start is None:
            out.append([] if s == zero else None)
            continue
        chain = [i]
        seen = {i}
        ok = True
        while start != zero:
            j = index.get(start)
            if j is None or j in seen or starts[j] is None:
                ok = False
                break
            chain.append(j)
            seen.add(j)
            start = starts[j]
        out.append(chain if ok else None)
    return out


def _starts(ds: xr.Dataset, name: str) -> np.ndarray:
    var = ds[name + SUFFIX]
    unit = np.timedelta64(1, "h" if var.attrs.get("units", "hours") == "hours" else "m")
    raw = np.asarray(var.values)
    if np.issubdtype(raw.dtype, np.timedelta64):
        return np.array([None if np.isnat(v) else v.astype("m8[s]") for v in raw], dtype=object)
    return np.array([None if (v < 0 or (isinstance(v, float) and np.isnan(v))) else
                     (int(v) * unit).astype("m8[s]") for v in raw], dtype=object)


def from_start(da: xr.DataArray, steps: np.ndarray, starts: np.ndarray) -> xr.DataArray:
    """``da`` (stored windows along ``step``) as accumulated from the forecast start."""
    plan = chains(steps, starts)
    if all(c == [i] for i, c in enumerate(plan)):
        return da  # every window already starts at 0 (ECMWF)
    pieces = []
    for i, chain in enumerate(plan):
        here = da.isel(step=i)
        if chain is None:
            pieces.append(xr.full_like(here, np.nan))
        elif not chain:
            pieces.append(xr.zeros_like(here))
        else:
            total = da.isel(step=chain[0])
            for j in chain[1:]:
                total = total + da.isel(step=j).drop_vars("step")
            pieces.append(total.assign_coords(step=here.step))
    out = xr.concat(pieces, dim="step", coords="minimal", compat="override", join="override")
    out = out.transpose(*da.dims)
    out.attrs = dict(da.attrs)
    out.attrs["cell_methods"] = "step: sum (accumulated from the start of the forecast)"
    out.attrs.pop("GRIB_accumulation", None)
    out.encoding = dict(da.encoding)
    return out


def derive(ds: xr.Dataset) -> xr.Dataset:
    """Replace every accumulated variable that has a ``<name>_window_start`` by its
    accumulation from the forecast start (lazy); the window starts become a coordinate."""
    out = ds
    for name in list(ds.data_vars):
        if not (name + SUFFIX in ds and "step" in ds[name].dims):
            continue
        starts = _starts(ds, name)
        out = out.assign({name: from_start(ds[name], ds["step"].values, starts)})
        out = out.set_coords(name + SUFFIX)
    return out


def summary(ds: xr.Dataset, name: str) -> dict[str, Any]:
    """How each step of ``name`` is derived (for docs and ``--json``)."""
    plan = chains(ds["step"].values, _starts(ds, name))
    hours = ds["step"].values / np.timedelta64(1, "h")
    return {f"{h:g}h": (None if c is None else [f"{hours[j]:g}h" for j in c])
            for h, c in zip(hours, plan, strict=True)}
