"""``verify`` for outputs referencing plain GRIB files: every message of every source,
decoded by ecCodes, must read back through the output with the same values at the same
coordinates.

The oracle is ecCodes alone: it walks each source file itself (``codes_grib_new_from_file``,
every field of a multi-field message on its own) and its geo-iterator gives every point's
latitude, longitude and value together (``grib_get_data``; absent points NaN), so each value
is paired with its point by ecCodes, scanning modes included. Which variable holds a
message comes from :class:`~zarrport.grib.scan.GribParser`'s naming; *where* in it comes
from ecCodes' keys (reference time, forecast step in minutes, level, ensemble number), and
the comparison is of the sets of (latitude, longitude, value) triples, so it does not trust
zarrport's grid layout (flips, rolls, transposes, row order) at all. Values are compared
exactly at the variable's dtype (float32 unless the message holds 64-bit IEEE floats);
NaN only where ecCodes has a missing point.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import xarray as xr

from zarrport import storage

_DIMS = ("init_time", "member", "step", "level")


@contextlib.contextmanager
def _local_path(url: str, storage_options: dict | None) -> Iterator[str]:
    if url.startswith("file://"):
        yield url.removeprefix("file://")
        return
    fs, path = storage.filesystem(url, storage_options)
    with tempfile.TemporaryDirectory(prefix="zarrport-verify-") as tmp:
        local = os.path.join(tmp, "source.grib")
        fs.get_file(path, local)
        yield local


def _keys(h: Any) -> dict[str, Any]:
    import eccodes

    from zarrport.grib.build import init_time_of

    def get(key: str) -> Any:
        return eccodes.codes_get(h, key) if eccodes.codes_is_defined(h, key) else None

    out: dict[str, Any] = {"offset": int(eccodes.codes_get(h, "offset"))}
    second = int(get("second") or 0)
    out["init_time"] = init_time_of(int(get("dataDate")), int(get("dataTime")), second)
    if eccodes.codes_is_defined(h, "stepUnits"):
        eccodes.codes_set(h, "stepUnits", "m")
    end = (eccodes.codes_get_long(h, "endStep") if eccodes.codes_is_defined(h, "endStep")
           else None)
    out["step"] = None if end is None else np.timedelta64(int(end), "m")
    out["level"] = (eccodes.codes_get_double(h, "level")
                    if eccodes.codes_is_defined(h, "level") else None)
    out["member"] = get("number")
    return out


def eccodes_points(h: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ecCodes' geo-iterator: (latitudes, longitudes, values), absent points NaN."""
    from zarrport.grib.grid import iterator_points

    return iterator_points(h)


def _triples(lat: np.ndarray, lon: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, ...]:
    lat = np.round(np.asarray(lat, dtype=np.float64).ravel(), 6)
    lon = np.round((np.asarray(lon, dtype=np.float64).ravel() + 180.0) % 360.0 - 180.0, 6)
    values = np.asarray(values).ravel()
    order = np.lexsort((values, lon, lat))
    return lat[order], lon[order], values[order]


def compare_field(da: xr.DataArray, lat: np.ndarray, lon: np.ndarray,
                  values: np.ndarray) -> str | None:
    """Why ``da`` (one field, read through the output) differs from ecCodes' points, or
    None when it holds exactly the same (latitude, longitude, value) triples."""
    da = da.load()
    lat_c, lon_c = (_coord(da, which) for which in ("latitude", "longitude"))
    if lat_c is None or lon_c is None:
        return "no latitude/longitude coordinates on its grid"
    ours_lat, ours_lon, ours = xr.broadcast(lat_c, lon_c, da)
    dims = da.dims
    a = _triples(ours_lat.transpose(*dims).values, ours_lon.transpose(*dims).values,
                 ours.transpose(*dims).values)
    b = _triples(lat, lon, np.asarray(values).astype(da.dtype))
    if a[0].size != b[0].size:
        return f"{a[0].size} points, ecCodes {b[0].size}"
    if not (np.array_equal(a[0], b[0], equal_nan=True)
            and np.array_equal(a[1], b[1], equal_nan=True)):
        return "the points' latitudes/longitudes differ from ecCodes'"
    same = (a[2] == b[2]) | (np.isnan(a[2]) & np.isnan(b[2]))
    if not same.all():
        k = int(np.argmin(same))
        return (f"{int((~same).sum())} of {same.size} values differ from ecCodes' (e.g. at "
                f"latitude {a[0][k]}, longitude {a[1][k]}: {a[2][k]} vs {b[2][k]})")
    return None


def _coord(da: xr.DataArray, which: str) -> xr.DataArray | None:
    """``latitude`` / ``longitude`` of the variable's grid (``latitude_1`` ... for the
    second and later grids of a file), among its coordinates on its own dimensions."""
    for name, c in da.coords.items():
        base, _, suffix = str(name).partition("_")
        if base == which and (not suffix or suffix.isdigit()) and set(c.dims) <= set(da.dims):
            return c
    return None


def verify_grib(sources: list[str], actual: xr.Dataset, storage_options: dict | None
                ) -> tuple[int, list[tuple[str, str, str]]]:
    """(fields checked, problems as (kind, item, detail)) for every message of ``sources``."""
    import eccodes

    from zarrport.grib.scan import GribParser

    checked = 0
    problems: list[tuple[str, str, str]] = []
    for url in sources:
        registry = storage.object_store_registry([url], storage_options)
        built = GribParser().build(url, registry)
        names: dict[int, list[str]] = {}
        for f in sorted(built.fields, key=lambda f: f.offset):
            names.setdefault(f.offset, []).append(f.name)
        seen: dict[int, int] = {}
        with _local_path(url, storage_options) as path, open(path, "rb") as fh:
            eccodes.codes_grib_multi_support_on()
            try:
                while (h := eccodes.codes_grib_new_from_file(fh)) is not None:
                    try:
                        keys = _keys(h)
                        lat, lon, values = eccodes_points(h)
                    finally:
                        eccodes.codes_release(h)
                    off = keys["offset"]
                    k = seen.get(off, 0)
                    seen[off] = k + 1
                    item = f"{url} message at byte {off}" + (f" field {k + 1}" if k else "")
                    candidates = names.get(off, [])
                    if k >= len(candidates):
                        problems.append(("variables", item, "no variable references it"))
                        continue
                    name = candidates[k]
                    if name not in actual.data_vars:
                        problems.append(("variables", item,
                                         f"its variable {name!r} is not in the output"))
                        continue
                    da = actual[name]
                    sel = {d: keys[d] for d in _DIMS if d in da.dims}
                    try:
                        field = da.sel(sel)
                    except KeyError as err:
                        problems.append(("values", item, f"{name}: no {err} in the output"))
                        continue
                    why = compare_field(field, lat, lon, values)
                    checked += 1
                    if why is not None:
                        problems.append(("values", item, f"{name} at {_show(sel)}: {why}"))
            finally:
                eccodes.codes_grib_multi_support_off()
    return checked, problems


def _show(sel: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sel.items()) or "its only field"
