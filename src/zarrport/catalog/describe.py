"""What a STAC Item says about an ``xarray.Dataset``: footprint, time range and datacube.

Everything here reads coordinates only (the decoded ``lat``/``lon``/``time`` values and
their CF bounds), never data variables.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

_LON_NAMES = ("lon", "longitude", "nav_lon", "x_lon")
_LAT_NAMES = ("lat", "latitude", "nav_lat", "y_lat")


@dataclass
class DatasetDescription:
    """The STAC-relevant facts of one dataset."""

    bbox: list[float] | None = None
    geometry: dict[str, Any] | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    calendar: str | None = None
    dimensions: dict[str, dict[str, Any]] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    title: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


def describe(ds: xr.Dataset) -> DatasetDescription:
    lon = _find_coord(ds, "lon")
    lat = _find_coord(ds, "lat")
    time = _find_coord(ds, "time")
    out = DatasetDescription(title=_text(ds.attrs.get("title")), attrs=dict(ds.attrs))
    if lon is not None and lat is not None:
        out.bbox, out.geometry = footprint(_edges(ds, lon), _edges(ds, lat))
    if time is not None:
        values = _edges(ds, time)
        if values.size:
            out.start, out.end = to_datetime(values.min()), to_datetime(values.max())
        out.calendar = _calendar(ds[time])
    out.dimensions = cube_dimensions(ds, lon=lon, lat=lat, time=time)
    out.variables = cube_variables(ds)
    return out


# -- coordinates ---------------------------------------------------------------------------

def _find_coord(ds: xr.Dataset, kind: str) -> str | None:
    """The coordinate holding longitudes / latitudes / times, by CF attributes first, then
    by name."""
    std = {"lon": "longitude", "lat": "latitude", "time": "time"}[kind]
    units = {"lon": ("degrees_east", "degree_east", "degrees_E", "degreeE"),
             "lat": ("degrees_north", "degree_north", "degrees_N", "degreeN"),
             "time": ()}[kind]
    axis = {"lon": "X", "lat": "Y", "time": "T"}[kind]
    names = {"lon": _LON_NAMES, "lat": _LAT_NAMES, "time": ("time", "t")}[kind]
    candidates = list(ds.coords) + [v for v in ds.data_vars if v not in ds.coords]
    for test in (
        lambda v: v.attrs.get("standard_name") == std,
        lambda v: v.attrs.get("units") in units,
        lambda v: kind == "time" and np.issubdtype(v.dtype, np.datetime64),
        lambda v: kind == "time" and v.dtype == object and v.size
        and hasattr(v.values.flat[0], "calendar"),
        lambda v: v.attrs.get("axis") == axis and kind != "time",
        lambda v: v.name.lower() in names,
    ):
        for name in candidates:
            var = ds[name]
            if var.ndim >= 1 and "bnds" not in str(name) and "bounds" not in str(name) \
                    and test(var):
                return str(name)
    return None


def _edges(ds: xr.Dataset, name: str) -> np.ndarray:
    """The coordinate's CF cell bounds if it has them (the true extent), else its values."""
    bounds = ds[name].attrs.get("bounds") or ds[name].encoding.get("bounds")
    if bounds and bounds in ds.variables:
        values = ds[bounds].values
    else:
        values = ds[name].values
    values = np.asarray(values).ravel()
    if values.dtype.kind == "f":
        values = values[np.isfinite(values)]
    return values


def _wrap(x: float) -> float:
    return ((x + 180.0) % 360.0) - 180.0


def footprint(lon: np.ndarray, lat: np.ndarray) -> tuple[list[float], dict[str, Any]]:
    """bbox and GeoJSON geometry (WGS84, longitudes in [-180, 180]) from longitude and
    latitude values or cell edges in any convention (-180..180 or 0..360).

    A grid spanning 360 degrees is global; a region crossing the antimeridian gets a bbox
    with west > east (as RFC 7946 and STAC prescribe) and a MultiPolygon split at 180.
    """
    lon = np.asarray(lon, dtype="f8")
    lat = np.asarray(lat, dtype="f8")
    south = max(-90.0, float(lat.min()))
    north = min(90.0, float(lat.max()))
    west, east = float(lon.min()), float(lon.max())
    if east - west >= 360.0 - 1e-6:
        west, east = -180.0, 180.0
    else:
        # a region given in 0..360 may cross 180: the wrapped edges then come out reversed
        w, e = _wrap(west), _wrap(east)
        if e == -180.0 and east > west:
            e = 180.0
        if w == 180.0:
            w = -180.0
        west, east = w, e
        if west > east and east - west + 360.0 >= 360.0 - 1e-6:
            west, east = -180.0, 180.0
    west, south, east, north = (round(v, 9) for v in (west, south, east, north))
    bbox = [west, south, east, north]
    if west <= east:
        geometry: dict[str, Any] = {"type": "Polygon", "coordinates": [_ring(west, south,
                                                                              east, north)]}
    else:
        geometry = {"type": "MultiPolygon", "coordinates": [
            [_ring(west, south, 180.0, north)], [_ring(-180.0, south, east, north)]]}
    return bbox, geometry


def _ring(w: float, s: float, e: float, n: float) -> list[list[float]]:
    # counter-clockwise exterior ring (RFC 7946)
    return [[w, s], [e, s], [e, n], [w, n], [w, s]]


# -- time ----------------------------------------------------------------------------------

def to_datetime(value: Any) -> dt.datetime:
    """A decoded time value (numpy datetime64, pandas/cftime datetime) as an aware UTC
    datetime. cftime dates of non-standard calendars keep their year, month, day and time
    of day; a day that does not exist in the Gregorian calendar (30 February in
    ``360_day``) becomes the last day of that month."""
    if isinstance(value, np.datetime64):
        ns = value.astype("datetime64[us]").astype("int64")
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(ns))
    if isinstance(value, dt.datetime) and type(value) is dt.datetime:
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(
            dt.UTC)
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp
        return to_datetime(np.datetime64(value.to_datetime64()))
    if hasattr(value, "year") and hasattr(value, "month"):  # cftime
        year = min(max(int(value.year), 1), 9999)
        month = int(value.month)
        last = (dt.date(year + (month == 12), month % 12 + 1, 1) - dt.timedelta(days=1)).day \
            if year < 9999 or month < 12 else 31
        return dt.datetime(year, month, min(int(value.day), last), int(value.hour),
                           int(value.minute), int(value.second),
                           int(getattr(value, "microsecond", 0)), tzinfo=dt.UTC)
    raise TypeError(f"not a time value: {value!r}")


def iso(value: dt.datetime) -> str:
    text = value.astimezone(dt.UTC).isoformat()
    return text.replace("+00:00", "Z")


def _calendar(var: xr.DataArray) -> str | None:
    cal = var.encoding.get("calendar") or var.attrs.get("calendar")
    if cal is None and var.dtype == object and var.size:
        cal = getattr(var.values.flat[0], "calendar", None)
    return str(cal) if cal else None


def time_step(values: np.ndarray) -> str | None:
    """The ISO 8601 duration between regularly spaced times (``P1D``, ``PT6H``, ``P1M``,
    ``P1Y``), or ``None`` when irregular or fewer than two."""
    if values.size < 2:
        return None
    if np.issubdtype(values.dtype, np.datetime64):
        seconds = np.diff(values.astype("datetime64[s]").astype("int64"))
        items = [np.datetime64(v, "s").astype(object) for v in values]
    else:
        seconds = np.array([(b - a).total_seconds() for a, b in zip(values[:-1], values[1:],
                                                                    strict=True)])
        items = list(values)
    # months and years (whose length varies, or not, with the calendar): from the fields
    months = [(v.year * 12 + v.month - 1) for v in items]
    same_rest = len({(v.day, v.hour, v.minute, v.second) for v in items}) == 1
    steps = set(np.diff(months).tolist())
    if same_rest and len(steps) == 1:
        step = steps.pop()
        if step > 0 and step % 12 == 0:
            return f"P{step // 12}Y"
        if step > 0:
            return f"P{step}M"
    if seconds.size and np.all(seconds == seconds[0]) and seconds[0] > 0:
        return _duration(int(seconds[0]))
    return None


def _duration(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"P{seconds // 86400}D"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = "PT"
    if hours:
        text += f"{hours}H"
    if minutes:
        text += f"{minutes}M"
    if secs:
        text += f"{secs}S"
    return text


# -- datacube ------------------------------------------------------------------------------

def _number(x: Any) -> float | int:
    """A numpy scalar as the plain Python number JSON wants."""
    return x.item() if hasattr(x, "item") else x


def _regular_step(values: np.ndarray) -> float | None:
    if values.size < 2 or values.dtype.kind not in "iuf":
        return None
    diffs = np.diff(values.astype("f8"))
    if np.allclose(diffs, diffs[0], rtol=1e-6, atol=1e-9) and diffs[0] != 0:
        return float(round(diffs[0], 12))
    return None


def cube_dimensions(ds: xr.Dataset, *, lon: str | None, lat: str | None,
                    time: str | None) -> dict[str, dict[str, Any]]:
    """``cube:dimensions``: spatial x/y (extent in the coordinate's own values, step when
    regular, EPSG:4326), spatial z for a vertical axis, temporal (ISO 8601 extent and step),
    everything else ``other`` (its coordinate's extent, or the index range)."""
    dims: dict[str, dict[str, Any]] = {}
    for name, size in ds.sizes.items():
        coord = ds[name] if name in ds.coords and ds[name].ndim == 1 else None
        entry: dict[str, Any]
        if coord is not None and name in (lon, lat):
            values = coord.values.astype("f8")
            entry = {"type": "spatial", "axis": "x" if name == lon else "y",
                     "extent": [_number(values.min()), _number(values.max())],
                     "step": _regular_step(values), "reference_system": 4326}
            if coord.attrs.get("long_name"):
                entry["description"] = str(coord.attrs["long_name"])
        elif coord is not None and name == time:
            values = coord.values
            entry = {"type": "temporal",
                     "extent": [iso(to_datetime(values.min())), iso(to_datetime(values.max()))],
                     "step": time_step(values)}
            cal = _calendar(coord)
            if cal and cal not in ("standard", "gregorian", "proleptic_gregorian"):
                entry["description"] = (f"{cal} calendar: dates are given with the same year, "
                                        "month, day and time of day")
        elif coord is not None and coord.attrs.get("axis") == "Z" or (
                coord is not None and coord.attrs.get("positive") in ("up", "down")):
            assert coord is not None
            values = coord.values
            entry = {"type": "spatial", "axis": "z",
                     "extent": [_number(values.min()), _number(values.max())],
                     "step": _regular_step(values)}
            if coord.attrs.get("units"):
                entry["unit"] = str(coord.attrs["units"])
        elif coord is not None and coord.dtype.kind in "iuf":
            values = coord.values
            entry = {"type": "other", "extent": [_number(values.min()), _number(values.max())],
                     "step": _regular_step(values)}
            if coord.attrs.get("units"):
                entry["unit"] = str(coord.attrs["units"])
        elif coord is not None and coord.dtype.kind in "US":
            entry = {"type": "other", "values": [str(v) for v in coord.values.tolist()]}
        else:
            entry = {"type": "other", "extent": [0, int(size) - 1], "step": 1,
                     "description": "index (no coordinate variable)"}
        dims[str(name)] = entry
    return dims


def cube_variables(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """``cube:variables``: every variable that is not a dimension coordinate; data variables
    are ``data`` unless they are a CF ``bounds`` of another; coordinates are
    ``auxiliary``."""
    bounds = {str(ds[v].attrs.get("bounds") or ds[v].encoding.get("bounds"))
              for v in ds.variables}
    out: dict[str, dict[str, Any]] = {}
    for name in ds.variables:
        var = ds[name]
        if name in ds.dims and var.ndim == 1:
            continue
        is_data = name in ds.data_vars and str(name) not in bounds
        entry: dict[str, Any] = {"dimensions": [str(d) for d in var.dims],
                                 "type": "data" if is_data else "auxiliary"}
        units = var.attrs.get("units")
        if units is None and not _is_time(var):
            units = var.encoding.get("units")
        if units:
            entry["unit"] = str(units)
        description = var.attrs.get("long_name") or var.attrs.get("standard_name")
        if description:
            entry["description"] = str(description)
        out[str(name)] = entry
    return out


def _is_time(var: xr.DataArray) -> bool:
    """Decoded times: their encoding's ``units`` ("days since ...") no longer apply."""
    return bool(np.issubdtype(var.dtype, np.datetime64) or (
        var.dtype == object and var.size and hasattr(var.values.flat[0], "calendar")))


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def merge_bboxes(boxes: list[list[float]]) -> list[float]:
    """One bbox covering all; any antimeridian-crossing box makes the union span 360."""
    if not boxes:
        return [-180.0, -90.0, 180.0, 90.0]
    south = min(b[1] for b in boxes)
    north = max(b[3] for b in boxes)
    if any(b[0] > b[2] for b in boxes):
        return [-180.0, south, 180.0, north]
    return [min(b[0] for b in boxes), south, max(b[2] for b in boxes), north]
