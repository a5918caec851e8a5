"""Named boxes (``--region CONUS``) and cutting a box out of a grid.

Boxes are W,S,E,N in degrees; W > E crosses the antimeridian. Grids may have 1-D
``lat``/``lon`` (or ``latitude``/``longitude``, CF ``units``/``standard_name``) in either
order and in -180..180 or 0..360 longitude, or 2-D coordinates (a curvilinear grid: the box
then selects the smallest index window holding every cell centre inside it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from zarrport.errors import InvalidArgumentError

Box = tuple[float, float, float, float]

#: Named boxes (W, S, E, N): the US Census Bureau's extents of the states and territories,
#: rounded outward to 0.01 degree. AK crosses the antimeridian (the Aleutians reach 172 E);
#: HI is the main islands (the Northwestern Hawaiian Islands reach 178 W).
PRESETS: dict[str, Box] = {
    "CONUS": (-124.85, 24.39, -66.88, 49.39),
    "AK": (172.42, 51.21, -129.97, 71.40),
    "HI": (-160.25, 18.86, -154.75, 22.24),
    "PR": (-67.95, 17.88, -65.22, 18.53),
}


def parse_box(text: str | tuple[float, ...] | list[float] | None) -> Box | None:
    """``"W,S,E,N"`` (or four numbers) -> a box; None for None."""
    if text is None:
        return None
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        w, s, e, n = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"bbox {text!r} is not W,S,E,N in degrees") from None
    if not (-90 <= s < n <= 90):
        raise InvalidArgumentError(f"bbox {text!r}: south must be below north, within -90..90")
    if not (-180 <= w <= 360 and -180 <= e <= 360):
        raise InvalidArgumentError(f"bbox {text!r}: longitudes must be within -180..360")
    return w, s, e, n


def resolve_box(bbox: Any = None, region: str | None = None) -> Box | None:
    """The box of ``--bbox`` or of the preset ``--region`` (not both); None for neither."""
    if bbox is not None and region is not None:
        raise InvalidArgumentError("give --bbox or --region, not both")
    if region is not None:
        try:
            return PRESETS[region.upper()]
        except KeyError:
            raise InvalidArgumentError(f"unknown region {region!r}; the presets are "
                                       f"{', '.join(PRESETS)}") from None
    return parse_box(bbox)


def _is(var: xr.DataArray, names: tuple[str, ...], units: tuple[str, ...], std: str) -> bool:
    a = var.attrs
    return (str(var.name).lower() in names or a.get("standard_name") == std
            or str(a.get("units", "")).lower() in units)


def lat_lon(ds: xr.Dataset | xr.DataArray) -> tuple[str, str]:
    """Names of the latitude and longitude coordinates (1-D or 2-D), by name, CF
    ``standard_name`` or ``units``."""
    lat = lon = None
    for name, var in ds.coords.items():
        if lat is None and _is(var, ("lat", "latitude", "nav_lat"),
                               ("degrees_north", "degree_north", "degrees_n"), "latitude"):
            lat = str(name)
        elif lon is None and _is(var, ("lon", "longitude", "nav_lon"),
                                 ("degrees_east", "degree_east", "degrees_e"), "longitude"):
            lon = str(name)
    if lat is None or lon is None:
        raise InvalidArgumentError(
            "no latitude/longitude coordinates (by name lat/lon/latitude/longitude, CF "
            f"standard_name or units); coordinates: {', '.join(map(str, ds.coords)) or 'none'}")
    return lat, lon


def in_lon_range(lon: np.ndarray, w: float, e: float) -> np.ndarray:
    """Whether longitudes (any frame: -180..180 or 0..360) lie in [w, e] (w > e: across the
    antimeridian), compared modulo 360."""
    lon = np.asarray(lon, dtype="f8")
    if e - w >= 360:
        return np.ones(lon.shape, dtype=bool)
    span = (e - w) % 360 if e != w else 0.0
    return ((lon - w) % 360) <= span + 1e-9


def subset(ds: xr.Dataset | xr.DataArray, box: Box | None) -> Any:
    """The part of ``ds`` inside ``box``: label selection on 1-D coordinates (a box across
    the grid's longitude seam is two pieces joined, in the box's order), the smallest index
    window for 2-D coordinates. A box holding no cell centre is an error."""
    if box is None:
        return ds
    w, s, e, n = box
    lat, lon = lat_lon(ds)
    la, lo = ds[lat], ds[lon]
    if la.ndim == 1 and lo.ndim == 1:
        out = ds.isel({la.dims[0]: np.flatnonzero((la.values >= s) & (la.values <= n))})
        inside = in_lon_range(lo.values, w, e)
        idx = np.flatnonzero(inside)
        if idx.size and not np.all(np.diff(idx) == 1):
            # the box wraps the grid's seam: the eastern piece of the box comes second
            rel = (lo.values[idx] - w) % 360
            idx = idx[np.argsort(rel, kind="stable")]
        out = out.isel({lo.dims[0]: idx})
    else:
        la2, lo2 = xr.broadcast(la, lo)
        inside = ((la2.values >= s) & (la2.values <= n)
                  & in_lon_range(lo2.values, w, e))
        if not inside.any():
            raise InvalidArgumentError(f"box {_fmt(box)} holds no grid cell centre")
        sel = {}
        for axis, dim in enumerate(la2.dims):
            other = tuple(i for i in range(inside.ndim) if i != axis)
            hit = np.flatnonzero(inside.any(axis=other))
            sel[dim] = slice(int(hit[0]), int(hit[-1]) + 1)
        out = ds.isel(sel)
    if any(out.sizes[d] == 0 for d in (*ds[lat].dims, *ds[lon].dims)):
        raise InvalidArgumentError(f"box {_fmt(box)} holds no grid cell centre")
    return out


def _fmt(box: Box) -> str:
    return ",".join(f"{v:g}" for v in box)
