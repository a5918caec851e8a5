"""Area-weighted means per region (counties, states, boxes) and time step, with the exact
fraction of every grid cell a polygon covers.

The weights are computed once per grid as a sparse matrix ``W`` (regions x cells) and applied
to every time step as one matrix product on Dask::

    mean[r, t] = sum_c W[r, c] * x[t, c] * valid[t, c] / sum_c W[r, c] * valid[t, c]

so cells without data (fill values, land/sea masks) renormalise the remaining weights, and a
region with no valid cell at a time step is NaN.

``W[r, c] = fraction(r, c) * area(c) [* user weight(c)]``, row-normalised:

- ``fraction`` is the share of the cell's area (planar, in the longitude/latitude plane, as
  exactextract's coverage fraction) inside the polygon: 1 for cells the polygon contains
  properly, ``area(cell & polygon) / area(cell)`` for cells on its edge (shapely).
- ``area`` is the cell's area on the sphere of radius 6378137 m: ``R^2 dlon (sin lat2 -
  sin lat1)`` for lat/lon boxes (exactextract's ``area_spherical_m2``). Curvilinear cells
  (2-D ``lat``/``lon``) are polygons from their CF corner bounds or from the midpoints of
  neighbouring centres; their area is that of the polygon drawn with straight edges in the
  Lambert cylindrical equal-area projection on that sphere -- the same formula, exact for
  lat/lon boxes (a 2-D copy of a regular grid gets the 1-D weights), within (cell size)^2
  of the geodesic-edge area otherwise.
- Longitudes: polygons are matched to the grid's longitude frame (-180..180 or 0..360) by
  shifting them by 0 and +-360 degrees; a polygon that needs more than one shift (across the
  antimeridian, or across the grid's seam) is cut to one 360-degree window and its pieces
  joined, so no part of a cell is counted twice.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from zarrport.errors import (
    InvalidArgumentError,
    OutputExistsError,
    SourceNotFoundError,
    UnrecognizedFormatError,
)

#: radius of the sphere cell areas are computed on (exactextract's ``area_spherical_m2``)
EARTH_RADIUS_M = 6378137.0
#: output file types of :func:`write_means`
OUTPUT_SUFFIXES = (".parquet", ".csv", ".nc")
#: field names taken as the region id when no ``id_field`` is given (first unique one wins)
ID_FIELDS = ("id", "geoid", "fid", "code", "region")
_REGION_FILES = (".geojson", ".json", ".gpkg", ".shp", ".fgb", ".parquet", ".geoparquet",
                 ".zip")


# ------------------------------------------------------------------------------- regions


def _require_geo() -> None:
    from zarrport.extras import require

    require("analysis", "geopandas", what="regional means")


def read_regions(spec: Any, *, id_field: str | None = None) -> Any:
    """Regions as a GeoDataFrame in EPSG:4326, indexed by their ids.

    ``spec`` is a file GeoPandas reads (GeoJSON, GeoPackage, Shapefile, FlatGeobuf,
    GeoParquet; no CRS means EPSG:4326), a GeoDataFrame, or preset names such as
    ``"CONUS"`` or ``"CONUS,AK,HI,PR"`` (boxes of :data:`zarrport.analysis.presets.PRESETS`;
    a box across the antimeridian is drawn with its eastern longitude + 360). The ids come
    from ``id_field`` (must exist and be unique), else from the first unique field named like
    an id (:data:`ID_FIELDS`, any case), else the row number; the index is named after
    the field (``"region"`` for row numbers)."""
    _require_geo()
    import geopandas as gpd
    import shapely

    from zarrport.analysis.presets import PRESETS

    if isinstance(spec, gpd.GeoDataFrame):
        gdf, name = spec.copy(), "regions"
    else:
        spec = str(spec)
        names = [p.strip().upper() for p in spec.split(",")]
        if not os.path.exists(spec) and all(n in PRESETS for n in names):
            boxes = []
            for n in names:
                w, s, e, north = PRESETS[n]
                boxes.append(shapely.box(w, s, e + 360 if e < w else e, north))
            gdf = gpd.GeoDataFrame({"id": names}, geometry=boxes, crs="EPSG:4326")
            name = spec
        else:
            gdf, name = _read_region_file(spec), spec
    if gdf.crs is None:
        gdf = gdf.set_crs("EPSG:4326")
    elif not gdf.crs.equals("EPSG:4326"):
        gdf = _to_lonlat(gdf)
    geoms = gdf.geometry.values
    bad = ~shapely.is_valid(np.asarray(geoms))
    if bad.any():  # self-touching rings etc., common in real boundary files
        fixed = shapely.make_valid(np.asarray(geoms)[bad])
        gdf.loc[bad, gdf.geometry.name] = [_polygonal(g) for g in fixed]
        geoms = gdf.geometry.values
    polygonal = np.array([g is not None and not g.is_empty
                          and g.geom_type in ("Polygon", "MultiPolygon") for g in geoms],
                         dtype=bool)
    if len(gdf) == 0 or not polygonal.any():
        raise InvalidArgumentError(f"{name}: no polygons (regions must be Polygon or "
                                   "MultiPolygon features)")
    if not polygonal.all():
        bad = int(np.flatnonzero(~polygonal)[0])
        kind = "empty" if geoms[bad] is None or geoms[bad].is_empty else geoms[bad].geom_type
        raise InvalidArgumentError(
            f"{name}: {int((~polygonal).sum())} of {len(gdf)} features are not polygons "
            f"(row {bad}: {kind})")
    fields = [str(c) for c in gdf.columns if c != gdf.geometry.name]
    if id_field is not None:
        if id_field not in gdf.columns or id_field == gdf.geometry.name:
            raise InvalidArgumentError(f"{name}: no field {id_field!r} (fields: "
                                       f"{', '.join(fields) or 'none'})")
        dup = gdf[id_field][gdf[id_field].duplicated()]
        if len(dup) or gdf[id_field].isna().any():
            what = f"{dup.iloc[0]!r} appears twice" if len(dup) else "has empty values"
            raise InvalidArgumentError(f"{name}: field {id_field!r} is not a unique id "
                                       f"({what})")
        ids, id_name = gdf[id_field].to_numpy(), id_field
    else:
        ids, id_name = np.arange(len(gdf)), "region"
        for cand in fields:
            if cand.lower() in ID_FIELDS and gdf[cand].is_unique and not gdf[cand].isna().any():
                ids, id_name = gdf[cand].to_numpy(), cand
                break
    gdf = gdf.drop(columns=[id_name], errors="ignore")
    gdf.index = ids
    gdf.index.name = id_name
    return gdf


def _polygonal(g: Any) -> Any:
    """The polygonal part of a repaired geometry (make_valid may add lines and points)."""
    import shapely

    if g.geom_type in ("Polygon", "MultiPolygon") or g.is_empty:
        return g
    parts = [p for p in getattr(g, "geoms", [g]) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else g


def _read_region_file(path: str) -> Any:
    import geopandas as gpd

    if "://" not in path and not os.path.exists(path):
        raise SourceNotFoundError(f"{path}: no such regions file")
    if os.path.isdir(path) and not path.endswith(".gdb"):
        raise InvalidArgumentError(f"{path}: a directory, not a regions file")
    try:
        if path.endswith((".parquet", ".geoparquet")):
            return gpd.read_parquet(path)
        return gpd.read_file(path)
    except Exception as err:  # pyogrio/pyarrow raise many kinds; one line for the user
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UnrecognizedFormatError(f"{path}: cannot read regions ({first})") from err


# ------------------------------------------------------------------------------- the grid


@dataclass
class _Grid:
    dims: tuple[str, ...]  # spatial dims of the data, in order
    shape: tuple[int, ...]
    cells: np.ndarray  # shapely polygons in lon/lat, flattened in ``dims`` order (C order)
    cx: np.ndarray  # cell centres
    cy: np.ndarray
    area: np.ndarray  # m^2
    lon_lo: float  # the grid's longitude extent (cell edges)
    lon_hi: float
    boxes: np.ndarray | None = None  # (n, 4) xmin, ymin, xmax, ymax when cells are boxes


def _bounds_var(ds: Any, name: str) -> xr.DataArray | None:
    if not isinstance(ds, xr.Dataset):
        return None
    var = ds[name]
    for cand in (var.attrs.get("bounds"), var.encoding.get("bounds"), f"{name}_bnds",
                 f"{name}_bounds"):
        if cand and cand in ds.variables:
            return ds[cand]
    return None


def _edges_1d(centres: np.ndarray, bnds: xr.DataArray | None) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) edge of every cell: CF bounds, else midpoints between centres (the
    outer edges mirrored)."""
    if bnds is not None and bnds.ndim == 2 and bnds.shape == (centres.size, 2):
        b = np.asarray(bnds.values, dtype="f8")
        return b[:, 0], b[:, 1]
    c = np.asarray(centres, dtype="f8")
    if c.size == 1:
        raise InvalidArgumentError("a grid of one cell along an axis needs CF bounds")
    mid = 0.5 * (c[:-1] + c[1:])
    edges = np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])
    return edges[:-1], edges[1:]


def _pad_extrapolate(a: np.ndarray) -> np.ndarray:
    """``a`` (ny, nx) with one linearly extrapolated row/column on every side."""
    a = np.concatenate([2 * a[:1] - a[1:2], a, 2 * a[-1:] - a[-2:-1]], axis=0)
    return np.concatenate([2 * a[:, :1] - a[:, 1:2], a, 2 * a[:, -1:] - a[:, -2:-1]], axis=1)


def _corners_2d(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Corners (ny, nx, 4) counter-clockwise in index space, from the midpoints of the four
    centres around each grid node (extrapolated at the edges)."""
    if min(lat.shape) < 2:
        raise InvalidArgumentError("a curvilinear grid needs at least 2 cells along each "
                                   "axis (or CF corner bounds)")
    lon = np.unwrap(np.unwrap(lon, period=360, axis=1), period=360, axis=0)
    nodes = []
    for a in (lat, lon):
        p = _pad_extrapolate(a)
        nodes.append(0.25 * (p[:-1, :-1] + p[1:, :-1] + p[:-1, 1:] + p[1:, 1:]))
    nlat, nlon = nodes
    nlat = np.clip(nlat, -90, 90)

    def corners(n: np.ndarray) -> np.ndarray:
        return np.stack([n[:-1, :-1], n[:-1, 1:], n[1:, 1:], n[1:, :-1]], axis=-1)

    return corners(nlat), corners(nlon)


def _grid(grid: Any) -> _Grid:
    import shapely

    from zarrport.analysis.presets import lat_lon

    lat, lon = lat_lon(grid)
    la, lo = grid[lat], grid[lon]
    if la.ndim == 1 and lo.ndim == 1:
        if la.dims == lo.dims:
            raise InvalidArgumentError(f"{lat} and {lon} share the dimension {la.dims[0]}: "
                                       "an unstructured grid is not supported")
        y0, y1 = _edges_1d(la.values, _bounds_var(grid, lat))
        x0, x1 = _edges_1d(lo.values, _bounds_var(grid, lon))
        y0, y1 = np.clip(np.minimum(y0, y1), -90, 90), np.clip(np.maximum(y0, y1), -90, 90)
        x0, x1 = np.minimum(x0, x1), np.maximum(x0, x1)
        ydim, xdim = la.dims[0], lo.dims[0]
        # the data's own order of the two dims decides the flattening
        dims = (ydim, xdim)
        if isinstance(grid, xr.DataArray) and grid.dims.index(xdim) < grid.dims.index(ydim):
            dims = (xdim, ydim)
        Y0, X0 = np.meshgrid(y0, x0, indexing="ij")
        Y1, X1 = np.meshgrid(y1, x1, indexing="ij")
        CY, CX = np.meshgrid(np.asarray(la.values, "f8"), np.asarray(lo.values, "f8"),
                             indexing="ij")
        area = (EARTH_RADIUS_M ** 2 * np.deg2rad(X1 - X0)
                * (np.sin(np.deg2rad(Y1)) - np.sin(np.deg2rad(Y0))))
        if dims[0] == xdim:
            Y0, X0, Y1, X1, CY, CX, area = (a.T for a in (Y0, X0, Y1, X1, CY, CX, area))
        cells = shapely.box(X0.ravel(), Y0.ravel(), X1.ravel(), Y1.ravel())
        shape = Y0.shape
        lon_lo, lon_hi = float(x0.min()), float(x1.max())
        cx, cy, area = CX.ravel(), CY.ravel(), area.ravel()
    else:
        la2, lo2 = xr.broadcast(la, lo)
        lo2 = lo2.transpose(*la2.dims)
        dims, shape = tuple(la2.dims), la2.shape
        if len(dims) != 2:
            raise InvalidArgumentError(f"{lat}/{lon} must be 1-D or 2-D, not {len(dims)}-D")
        blat, blon = _bounds_var(grid, lat), _bounds_var(grid, lon)
        if (blat is not None and blon is not None and blat.shape == (*shape, 4)
                and blon.shape == (*shape, 4)):
            clat = np.asarray(blat.values, "f8")
            clon = np.asarray(blon.values, "f8")
        else:
            clat, clon = _corners_2d(np.asarray(la2.values, "f8"),
                                     np.asarray(lo2.values, "f8"))
        clat, clon = clat.reshape(-1, 4), clon.reshape(-1, 4)
        # a cell's corners in one longitude frame (no cell jumps across the seam)
        clon = clon[:, :1] + (clon - clon[:, :1] + 180.0) % 360.0 - 180.0
        cx = np.asarray(lo2.values, "f8").ravel()
        cx = clon.mean(axis=1) + (cx - clon.mean(axis=1) + 180.0) % 360.0 - 180.0
        cy = np.asarray(la2.values, "f8").ravel()
        cells = shapely.polygons(np.stack([clon, clat], axis=-1))
        # planar area in the Lambert cylindrical equal-area projection (x = R lon, y = R sin lat)
        ea = shapely.polygons(np.stack([np.deg2rad(clon), np.sin(np.deg2rad(clat))], axis=-1))
        area = EARTH_RADIUS_M ** 2 * shapely.area(ea)
        lon_lo, lon_hi = float(clon.min()), float(clon.max())
    return _Grid(dims=tuple(map(str, dims)), shape=tuple(shape), cells=cells, cx=cx, cy=cy,
                 area=np.asarray(area, "f8"), lon_lo=lon_lo, lon_hi=lon_hi,
                 boxes=shapely.bounds(cells) if la.ndim == 1 and lo.ndim == 1 else None)


# ------------------------------------------------------------------------------- weights


@dataclass
class RegionWeights:
    """The sparse weight matrix of a set of regions on one grid, and what it covers.

    ``matrix`` (``scipy.sparse.csr_array``, regions x cells, cells flattened in ``dims``
    order) has rows summing to 1, or all zeros for a region outside the grid.
    ``coverage``: covered area per region in m^2 (sum of fraction x cell area).
    ``outside``: ids of regions that overlap no cell (their means are NaN).
    ``no_centre``: ids of regions containing no cell centre -- weighted by their exact
    partial coverage all the same (reported, not dropped)."""

    matrix: Any
    ids: np.ndarray
    id_name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    coverage: np.ndarray
    cells: np.ndarray  # cells touched per region
    outside: list = field(default_factory=list)
    no_centre: list = field(default_factory=list)
    weights: str = "area"

    @property
    def n_regions(self) -> int:
        return len(self.ids)

    def to_dict(self) -> dict[str, Any]:
        touched = int(np.unique(self.matrix.indices).size)
        return {"regions": self.n_regions, "id_field": self.id_name,
                "grid": dict(zip(self.dims, self.shape, strict=True)),
                "cells_touched": touched, "nonzero_weights": int(self.matrix.nnz),
                "weights": self.weights,
                "outside": [_plain(i) for i in self.outside],
                "no_centre": [_plain(i) for i in self.no_centre]}

    def report(self, first: int = 5) -> str:
        d = self.to_dict()
        grid = " x ".join(f"{n} {k}" for k, n in d["grid"].items())
        lines = [f"regions: {d['regions']} (id: {d['id_field']}) on a grid of {grid}; "
                 f"{d['cells_touched']} cells touched, weights: {d['weights']}"]
        for key, what in (("outside", "outside the grid (means are NaN)"),
                          ("no_centre", "covering no cell centre (weighted by partial "
                           "coverage)")):
            ids = d[key]
            if ids:
                more = f" and {len(ids) - first} more" if len(ids) > first else ""
                lines.append(f"{len(ids)} region{'s' * (len(ids) != 1)} {what}: "
                             f"{', '.join(map(str, ids[:first]))}{more}")
        return "\n".join(lines)


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _shifted(polys: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """(region index, geometry in the grid's longitude frame [lo, hi]) pairs: every polygon
    shifted by 0 and +-360 degrees where that overlaps the frame; a polygon overlapping it
    under several shifts is the union of those copies (a cell meets the union once, so
    nothing counts twice, also where the grid's cells span more than 360 degrees: the
    cells of an ORCA ocean grid, each in its own vertices' frame, span -107..433 in CanESM5)."""
    import shapely

    b = shapely.bounds(polys)
    shifts = np.array([0.0, 360.0, -360.0, 720.0, -720.0])
    hit = ((b[:, 0:1] + shifts <= hi) & (b[:, 2:3] + shifts >= lo))  # (n, 5)
    index, geoms = [], []
    for i in np.flatnonzero(hit.any(axis=1)):
        use = shifts[hit[i]]
        if use.size == 1 and (b[i, 2] - b[i, 0]) < 360:
            g = polys[i] if use[0] == 0 else shapely.transform(
                polys[i], lambda c, s=use[0]: c + [s, 0.0])
        else:
            pieces = [shapely.transform(polys[i], lambda c, s=s: c + [s, 0.0]) for s in use]
            g = shapely.union_all(pieces)
            if g.is_empty:
                continue
        index.append(i)
        geoms.append(g)
    return np.asarray(index, dtype=np.int64), np.asarray(geoms, dtype=object)


def _user_weights(spec: Any, grid: Any, g: _Grid) -> tuple[np.ndarray, bool]:
    if isinstance(spec, (str, os.PathLike)):
        path = str(spec)
        if "://" not in path and not os.path.exists(path):
            raise SourceNotFoundError(f"{path}: no such weights file")
        from zarrport.open import open_dataset

        ds = open_dataset(path)
        names = [v for v in ds.data_vars
                 if set(g.dims) <= set(map(str, ds[v].dims)) and ds[v].ndim == len(g.dims)]
        areas = [v for v in names if _is_cell_area(ds[v])]
        names = areas if len(areas) == 1 else names  # a CMIP file with areacello and more
        if len(names) != 1:
            raise InvalidArgumentError(
                f"{path}: weights need exactly one variable with the dimensions "
                f"{', '.join(g.dims)}; found {', '.join(names) or 'none'}")
        da = ds[names[0]]
    elif isinstance(spec, xr.DataArray):
        da = spec
    else:
        raise InvalidArgumentError(f"weights {spec!r}: area, none, a file or a DataArray")
    missing = [d for d in g.dims if d not in da.dims]
    if missing or da.ndim != len(g.dims):
        raise InvalidArgumentError(f"weights have dimensions {', '.join(map(str, da.dims))}; "
                                   f"the grid's are {', '.join(g.dims)}")
    da = da.transpose(*g.dims)
    if da.shape != g.shape:
        raise InvalidArgumentError(f"weights have shape {da.shape}; the grid's is {g.shape}")
    w = np.asarray(da.values, dtype="f8").ravel()
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
    return w, _is_cell_area(da)


def _is_cell_area(da: xr.DataArray) -> bool:
    """A CF cell measure of area (``standard_name: cell_area``: CMIP's areacella/o)."""
    return da.attrs.get("standard_name") == "cell_area"


def region_weights(grid: xr.Dataset | xr.DataArray, regions: Any, *,
                   id_field: str | None = None, weights: Any = "area") -> RegionWeights:
    """The :class:`RegionWeights` of ``regions`` (anything :func:`read_regions` takes) on
    the grid of ``grid`` (its lat/lon coordinates and, if present, CF bounds).

    ``weights``: ``"area"`` (cell area on the sphere), ``"none"`` (coverage fraction only),
    or a file / DataArray of per-cell weights on the grid (a land fraction, say; NaN counts
    as 0), multiplied with the cell area."""
    import scipy.sparse
    import shapely

    gdf = regions if _is_read(regions) else read_regions(regions, id_field=id_field)
    g = _grid(grid)
    if isinstance(weights, str) and weights in ("area", "none"):
        cell_w = g.area if weights == "area" else np.ones_like(g.area)
        label = weights
    else:
        user, is_area = _user_weights(weights, grid, g)
        # a CF cell_area (CMIP's areacella/areacello) is the area itself; anything else (a
        # land fraction ...) weighs the computed area
        cell_w = user if is_area else g.area * user
        label = ("" if is_area else "area x ") + (
            str(weights) if isinstance(weights, (str, os.PathLike))
            else str(getattr(weights, "name", None) or "weights"))
    polys = np.asarray(gdf.geometry.values, dtype=object)
    ridx, geoms = _shifted(polys, g.lon_lo, g.lon_hi)
    tree = shapely.STRtree(g.cells)
    pg, ci = tree.query(geoms, predicate="intersects")
    ri = ridx[pg]
    shapely.prepare(geoms)
    frac = np.ones(pg.size)
    inner = shapely.contains_properly(geoms[pg], g.cells[ci])
    edge = ~inner
    if edge.any():
        cell_area = shapely.area(g.cells[ci[edge]])
        if g.boxes is not None:  # rectangle clipping: several times faster than overlay
            part = shapely.area(_clip_by_rects(geoms[pg[edge]], g.boxes[ci[edge]]))
        else:
            part = shapely.area(shapely.intersection(g.cells[ci[edge]], geoms[pg[edge]]))
        with np.errstate(invalid="ignore", divide="ignore"):
            frac[edge] = np.where(cell_area > 0, part / cell_area, 0.0)
    centre = shapely.contains_xy(geoms[pg], g.cx[ci], g.cy[ci])
    keep = frac > 0
    ri, ci, frac, centre = ri[keep], ci[keep], frac[keep], centre[keep]
    n, ncell = len(gdf), g.cells.size
    # a cell reached through two pieces of one region adds up (the pieces are disjoint)
    covered = scipy.sparse.csr_array((frac * g.area[ci], (ri, ci)), shape=(n, ncell))
    covered.sum_duplicates()
    raw = scipy.sparse.csr_array((frac * cell_w[ci], (ri, ci)), shape=(n, ncell))
    raw.sum_duplicates()
    raw.eliminate_zeros()
    total = np.asarray(raw.sum(axis=1)).ravel()
    scale = np.divide(1.0, total, out=np.zeros_like(total), where=total > 0)
    matrix = scipy.sparse.csr_array(scipy.sparse.diags_array(scale) @ raw)
    has_centre = np.zeros(n, dtype=bool)
    has_centre[ri[centre]] = True
    touched = np.bincount(covered.nonzero()[0], minlength=n)
    ids = gdf.index.to_numpy()
    outside = total <= 0
    return RegionWeights(
        matrix=matrix, ids=ids, id_name=str(gdf.index.name or "region"), dims=g.dims,
        shape=g.shape, coverage=np.asarray(covered.sum(axis=1)).ravel(), cells=touched,
        outside=list(ids[outside]), no_centre=list(ids[~outside & ~has_centre]),
        weights=label)


def _clip_by_rects(geoms: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Each geometry clipped to its own rectangle (xmin, ymin, xmax, ymax)."""
    import shapely

    # shapely.clip_by_rect accepts only scalar bounds (shapely 2.2.0) though the ufunc it
    # wraps, shapely.lib.clip_by_rect, broadcasts arrays; a loop where that is missing
    ufunc = getattr(getattr(shapely, "lib", None), "clip_by_rect", None)
    if isinstance(ufunc, np.ufunc):
        try:
            return ufunc(geoms, boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])
        except shapely.errors.GEOSException:
            pass  # GEOS's rectangle clipper fails on near-zero-area parts: the pair by pair
    out = np.empty(len(geoms), dtype=object)
    for i, (gm, b) in enumerate(zip(geoms, boxes, strict=True)):
        try:
            out[i] = shapely.clip_by_rect(gm, *b)
        except shapely.errors.GEOSException:
            # "Invalid number of points in LinearRing found 3" on a valid polygon with a
            # sliver (GEOS 3.14.1, shapely 2.2.0): the general intersection has no such limit
            out[i] = shapely.intersection(gm, shapely.box(*b))
    return out


def _to_lonlat(gdf: Any) -> Any:
    """Regions in another CRS reprojected to longitude/latitude: edges densified first (a
    straight edge in Albers is a curve in lon/lat), and every geometry's longitudes
    unwrapped along its rings, so that a region across the antimeridian (Alaska in EPSG:3338)
    stays one piece with longitudes beyond 180 rather than becoming its complement around the
    globe (:func:`_shifted` matches such longitudes to the grid)."""
    import shapely

    geoms = np.asarray(gdf.geometry.values, dtype=object)
    b = shapely.bounds(geoms)
    size = np.nanmax(np.c_[b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
    step = np.where(np.isfinite(size) & (size > 0), size / 64.0, 0.0)
    dense = np.array([shapely.segmentize(g, s) if s > 0 else g
                      for g, s in zip(geoms, step, strict=True)], dtype=object)
    import geopandas as gpd

    out = gdf.set_geometry(gpd.GeoSeries(dense, index=gdf.index, crs=gdf.crs)
                           ).to_crs("EPSG:4326")

    def unwrap(coords: np.ndarray) -> np.ndarray:
        if len(coords) < 2:
            return coords
        x = np.unwrap(coords[:, 0], period=360.0)
        return np.c_[x, coords[:, 1:]]

    fixed = [_unwrap_geometry(g, unwrap) for g in out.geometry.values]
    return out.set_geometry(gpd.GeoSeries(fixed, index=out.index, crs="EPSG:4326"))


def _unwrap_geometry(g: Any, unwrap: Any) -> Any:
    """``g`` with each ring's longitudes unwrapped, rings and parts kept in one frame (each
    part's first vertex brought within 180 degrees of the previous part's)."""
    import shapely

    if g is None or g.is_empty:
        return g
    parts = list(g.geoms) if g.geom_type == "MultiPolygon" else [g]
    out, ref = [], None
    for p in parts:
        shell = np.asarray(p.exterior.coords)
        if ref is not None and len(shell):
            shell = shell + [360.0 * np.round((ref - shell[0, 0]) / 360.0), 0.0]
        shell = unwrap(shell)
        ref = float(shell[0, 0]) if len(shell) else ref
        holes = []
        for h in p.interiors:
            hc = np.asarray(h.coords)
            hc = hc + [360.0 * np.round((shell[0, 0] - hc[0, 0]) / 360.0), 0.0]
            holes.append(unwrap(hc))
        out.append(shapely.Polygon(shell, holes))
    return out[0] if g.geom_type == "Polygon" else shapely.MultiPolygon(out)


def _is_read(regions: Any) -> bool:
    """Whether ``regions`` came from :func:`read_regions` (an indexed GeoDataFrame)."""
    try:
        import geopandas as gpd
    except ImportError:
        return False
    return isinstance(regions, gpd.GeoDataFrame) and regions.index.name is not None


# ------------------------------------------------------------------------------- means


def _apply_block(x: np.ndarray, *, matrix: Any, ncore: int) -> np.ndarray:
    """``(..., *spatial)`` -> ``(..., region)``: weighted means renormalised over the cells
    with data."""
    lead = x.shape[: x.ndim - ncore]
    flat = np.asarray(x, dtype="f8").reshape(-1, int(np.prod(x.shape[x.ndim - ncore:])))
    valid = np.isfinite(flat)
    if valid.all():
        num = (matrix @ flat.T).T
        den = np.broadcast_to(np.asarray(matrix.sum(axis=1)).ravel(), num.shape)
    else:
        num = (matrix @ np.where(valid, flat, 0.0).T).T
        if (valid == valid[:1]).all():  # the same cells missing throughout (a land mask)
            den = np.broadcast_to(matrix @ valid[0].astype("f8"), num.shape)
        else:
            den = (matrix @ valid.T.astype("f8")).T
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out.reshape(*lead, matrix.shape[0])


def apply_weights(da: xr.DataArray, w: RegionWeights) -> xr.DataArray:
    """Weighted means of ``da`` per region (lazy if ``da`` is): dims ``region`` then the
    other dims of ``da``, float64. The spatial dims are made one Dask chunk."""
    missing = [d for d in w.dims if d not in da.dims]
    if missing:
        raise InvalidArgumentError(f"{da.name}: no dimension {missing[0]!r} of the grid")
    if da.chunks is not None:
        da = da.chunk(dict.fromkeys(w.dims, -1))
    out = xr.apply_ufunc(
        _apply_block, da, input_core_dims=[list(w.dims)], output_core_dims=[["region"]],
        dask="parallelized", output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"region": w.n_regions}},
        kwargs={"matrix": w.matrix, "ncore": len(w.dims)})
    out = out.assign_coords(region=("region", w.ids))
    out = out.transpose("region", ...)
    out.attrs = {k: v for k, v in da.attrs.items()
                 if k in ("units", "long_name", "standard_name")}
    out.attrs["cell_methods"] = f"area: mean where region (weights: {w.weights})"
    return out


def regional_means(source: Any, regions: Any, *, id_field: str | None = None,
                   variables: list[str] | None = None, weights: Any = "area",
                   storage_options: dict | None = None,
                   collection: str | None = None) -> tuple[xr.Dataset, RegionWeights]:
    """Lazy area-weighted means of ``variables`` (default: every data variable on the
    lat/lon grid) of ``source`` (anything :func:`zarrport.analysis.source.open_archive`
    opens, or a Dataset) per region: a Dataset with dims ``region`` (the ids as its
    coordinate, ``covered_area`` in m^2 beside it) and the variables' other dims (time),
    float64; and the :class:`RegionWeights`. Regions outside the grid stay, as NaN rows."""
    from zarrport.analysis.source import open_archive

    gdf = read_regions(regions, id_field=id_field) if not _is_read(regions) else regions
    ds = open_archive(source, variables=variables, storage_options=storage_options,
                      collection=collection)
    w = region_weights(ds, gdf, weights=weights)
    # by default every numeric variable on the grid, except cell measures (areacello) and
    # CF bounds
    bounds = {str(v.attrs.get("bounds")) for v in ds.variables.values()}
    names = variables or [str(v) for v in ds.data_vars
                          if set(w.dims) <= set(map(str, ds[v].dims))
                          and np.issubdtype(ds[v].dtype, np.number)
                          and not _is_cell_area(ds[v]) and str(v) not in bounds]
    if not names:
        raise InvalidArgumentError(
            f"no data variable on the grid ({', '.join(w.dims)}); variables: "
            f"{', '.join(map(str, ds.data_vars)) or 'none'}")
    out = xr.Dataset({n: apply_weights(ds[n], w) for n in names})
    out = out.assign_coords(covered_area=("region", w.coverage,
                                          {"units": "m2", "long_name": "area of the region "
                                           "on the grid (sum of covered cell fractions x "
                                           "cell area)"}))
    out["region"].attrs = {"id_field": w.id_name, "long_name": "region id"}
    out.attrs = {"title": "area-weighted regional means", "weights": w.weights,
                 "source": source if isinstance(source, str) else ", ".join(source)
                 if isinstance(source, (list, tuple)) else "dataset"}
    return out, w


# ------------------------------------------------------------------------------- output


@contextlib.contextmanager
def _replacing(path: str, suffix: str) -> Iterator[str]:
    """A temporary sibling of ``path`` to write, renamed over ``path`` when the block ends
    (with the permissions a plain ``open(..., "w")`` gives, not mkstemp's 0600), removed if
    it raises: nothing half written."""
    parent = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix,
                               dir=parent)
    os.close(fd)
    try:
        yield tmp
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def check_output(out: str, overwrite: bool) -> str:
    """The output's suffix, after checking it is one :func:`write_means` writes and that
    it does not exist (unless ``overwrite``)."""
    suffix = Path(out).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise InvalidArgumentError(f"{out}: the output must end in "
                                   f"{', '.join(OUTPUT_SUFFIXES)}")
    if os.path.exists(out):
        if not overwrite:
            raise OutputExistsError(f"{out} exists (give --overwrite to replace it)")
        if os.path.isdir(out):
            raise InvalidArgumentError(f"{out} is a directory")
    return suffix


def _table(ds: xr.Dataset) -> Any:
    """The long table: region id, time (datetime64 where the calendar allows, else ISO
    strings), other dims, one column per variable."""
    import pandas as pd

    ds = ds.drop_vars([c for c in ("covered_area",) if c in ds.coords])
    if "time" in ds.indexes and not isinstance(ds.indexes["time"], pd.DatetimeIndex):
        idx = ds.indexes["time"]
        try:
            with warnings.catch_warnings():  # noleap etc.: every date exists in pandas'
                warnings.simplefilter("ignore", RuntimeWarning)
                times = idx.to_datetimeindex(time_unit="ns")
        except Exception:  # 360_day and other calendars pandas cannot hold
            times = pd.Index([t.isoformat() for t in idx], name="time")
        ds = ds.assign_coords(time=times)
    df = ds.to_dataframe().reset_index()
    id_name = str(ds["region"].attrs.get("id_field", "region"))
    if id_name != "region" and id_name not in df.columns:
        df = df.rename(columns={"region": id_name})
    keep = [c for c in df.columns if c in ds.dims or c == id_name or c in ds.data_vars]
    return df[keep]


def write_means(ds: xr.Dataset, out: str, *, client: Any, progress: bool | None = None,
                overwrite: bool = False) -> dict[str, Any]:
    """Compute ``ds`` (from :func:`regional_means`) on ``client`` and write it: ``.parquet``
    or ``.csv`` (a long table: the region id column -- named after the id field -- time,
    one column per variable) or ``.nc`` (dims region, time; ids as the ``region``
    coordinate). Written to a temporary sibling and renamed: nothing is left on failure.
    Returns a summary, the computed dataset under ``"dataset"``."""
    from zarrport.analysis.cluster import compute

    suffix = check_output(out, overwrite)
    computed = compute(client, ds, label="regional means", progress=progress)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)  # after the computation: nothing made if it fails
    with _replacing(out, suffix) as tmp:
        if suffix == ".nc":
            computed.to_netcdf(tmp, mode="w")
        else:
            df = _table(computed)
            if suffix == ".csv":
                df.to_csv(tmp, index=False)
            else:
                df.to_parquet(tmp, index=False)
    valid = {str(v): int(np.isfinite(computed[v].values).sum()) for v in computed.data_vars}
    return {"output": out, "format": suffix[1:], "regions": int(computed.sizes["region"]),
            "times": int(computed.sizes.get("time", 1)),
            "variables": list(map(str, computed.data_vars)), "values": valid,
            "dataset": computed}


def plot_regions(data: Any, regions: Any, png: str, *, variable: str | None = None,
                 time: Any = None, id_field: str | None = None) -> str:
    """A choropleth of one variable (default: the first) per region, at ``time`` (an index
    or a date string; default: the mean over time), written to ``png``. ``data`` is a
    Dataset from :func:`regional_means` (computed or lazy) or its long table."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import pandas as pd

    gdf = regions if _is_read(regions) else read_regions(regions, id_field=id_field)
    if isinstance(data, pd.DataFrame):
        id_col = gdf.index.name if gdf.index.name in data.columns else "region"
        data = data.set_index([c for c in (id_col, "time") if c in data.columns]).to_xarray()
        data = data.rename({id_col: "region"}) if id_col != "region" else data
    names = [str(v) for v in data.data_vars]
    variable = variable or (names[0] if names else None)
    if variable not in names:
        raise InvalidArgumentError(f"no variable {variable!r} to plot (variables: "
                                   f"{', '.join(names) or 'none'})")
    da = data[variable]
    what = "mean over time"
    if "time" in da.dims:
        if time is None:
            da = da.mean("time")
        elif isinstance(time, (int, np.integer)):
            what = str(da["time"].values[int(time)])
            da = da.isel(time=int(time))
        else:
            da = da.sel(time=time, method="nearest")
            what = str(da["time"].values)
    else:
        what = ""
    values = pd.Series(np.asarray(da.values, "f8"), index=da["region"].values)
    plot = gdf.assign(_value=values.reindex(gdf.index).to_numpy())
    # one map around the regions: shapes drawn east of 180 (AK's box) moved to -180..180
    import shapely

    geoms = plot.geometry.values
    east = shapely.get_x(shapely.centroid(np.asarray(geoms))) > 180
    if east.any():
        moved = shapely.transform(np.asarray(geoms)[east], lambda c: c - [360.0, 0.0])
        plot.loc[east, plot.geometry.name] = moved
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    plot.boundary.plot(ax=ax, linewidth=0.2, color="0.6")
    plot.plot(column="_value", ax=ax, legend=True, cmap="viridis",
              missing_kwds={"color": "0.9", "label": "no data"},
              legend_kwds={"label": f"{variable} ({da.attrs['units']})"
                           if da.attrs.get("units") else variable,
                           "shrink": 0.7})
    ax.set_title(re.sub(r"\s+", " ", f"{variable}: area-weighted mean per region, {what}"))
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    try:
        with _replacing(png, ".png") as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return png

