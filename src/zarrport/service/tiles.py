"""Map tiles, info, point and statistics: titiler.xarray's ``TilerFactory`` over
:func:`zarrport.open_dataset`.

What differs from stock titiler.xarray 2.4 (whose ``Reader`` opens only Zarr, through obstore):

- **Any store zarrport opens**: Zarr v2/v3, kerchunk JSON/Parquet, Icechunk at a
  ``branch``/``tag``/``snapshot``, NetCDF, GRIB files and forecast repositories -- named by
  ``url`` (checked against the allow list before anything is opened) or by a STAC
  ``collection`` (and ``item``) of the served catalog.
- **Opened datasets are cached** in :class:`~zarrport.service.datasets.DatasetCache`, bounded
  and invalidated when the store changes (titiler's is an unbounded ``functools.cache``,
  titiler#1071); ``X-Zarrport-Cache`` says hit/miss/stale.
- **Pyramids** (``zarrport pyramid``): the coarsest level still as fine as the requested
  tile's pixels is read (``X-Zarrport-Level`` names it).
- ``sel=dim=value`` matches the **nearest** label unless a method is given
  (``sel=time=exact::2015-01-16``); times parse in the dataset's calendar (cftime too).
- A variable with more than one layer left after ``sel`` renders only with ``bidx``; an
  image needs one layer, a ``sel`` on a dimension the variable lacks is a 400 -- errors are
  the library's and map to 4xx in one table, never a 500.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import attr
import numpy as np
import pandas as pd
from fastapi import Depends, Query, Request
from morecantile import TileMatrixSet
from rio_tiler.constants import WEB_MERCATOR_TMS
from rio_tiler.io.xarray import XarrayReader
from titiler.core.dependencies import DefaultDependency

from zarrport.errors import InvalidArgumentError
from zarrport.service.datasets import _X_NAMES, DatasetCache, Opened, cache_outcome

__all__ = ["MAX_PIXELS", "DatasetSource", "NotServedError", "ServeReader", "ServeXarrayParams",
           "TooLargeError", "select_variable"]

#: the ``sel`` methods (titiler's, plus ``exact``)
METHODS = ("nearest", "pad", "ffill", "backfill", "bfill", "exact")
_METERS_PER_DEGREE = 2 * math.pi * 6378137.0 / 360.0
_Y_NAMES = ("y", "lat", "latitude", "LAT", "LATITUDE", "Lat", "Latitude", "rlat")


#: features of one statistics request (each is a read)
MAX_FEATURES = 100
#: cells one statistics or part request may read at full resolution
MAX_PIXELS = 64_000_000


class TooLargeError(InvalidArgumentError):
    """A tile, image, query or selection beyond the server's bounds (400)."""

    code = "too_large"


class NotServedError(InvalidArgumentError):
    """A collection, item or variable that the server does not have (404)."""

    code = "not_served"


@dataclass(frozen=True)
class DatasetSource:
    """What the path dependency resolved: an allowed URL and the cache to open it from."""

    url: str
    cache: DatasetCache

    def __str__(self) -> str:  # titiler logs and formats src_path
        return self.url


def source_dependency(resolve: Callable[[Request, str | None, str | None, str | None], str]
                      ) -> Callable[..., DatasetSource]:
    """The ``path_dependency`` of the factory: ``url`` or ``collection`` (+ ``item``)."""

    def dataset_source(
        request: Request,
        url: Annotated[str | None, Query(
            description="The dataset: a path or URL under one of the server's --allow roots "
                        "(Zarr, kerchunk JSON/Parquet, Icechunk, NetCDF, GRIB).",
            max_length=2048)] = None,
        collection: Annotated[str | None, Query(
            description="A STAC collection of the served catalog (instead of `url`): its "
                        "dataset asset (zarr_ref > icechunk > zarr > netcdf).",
            max_length=256)] = None,
        item: Annotated[str | None, Query(
            description="An item of `collection`: its dataset asset.", max_length=256)] = None,
    ) -> DatasetSource:
        checked = resolve(request, url, collection, item)
        return DatasetSource(checked, request.app.state.cache)

    return dataset_source


def add_variables_route(router: Any, dataset_source: Callable[..., DatasetSource]) -> None:
    """``GET /variables`` on ``router``: the variables of a dataset that can be mapped (those
    with a latitude/longitude or y/x pair), for the viewer when a dataset is named by ``url``
    (titiler.xarray 2.4 has no such endpoint; its ``/info`` needs a variable)."""

    dependency = Depends(dataset_source)  # a closure: not in an annotation string

    @router.get("/variables", summary="The variables of a dataset that can be mapped.")
    def variables(
        source: DatasetSource = dependency,
        group: Annotated[str | None, Query(description="A group of the store.",
                                           max_length=256)] = None,
        branch: Annotated[str | None, Query(description="Icechunk: a branch (default main).",
                                            max_length=256)] = None,
        tag: Annotated[str | None, Query(description="Icechunk: a tag.", max_length=256)] = None,
        snapshot: Annotated[str | None, Query(description="Icechunk: a snapshot id.",
                                              max_length=64)] = None,
    ) -> dict[str, Any]:
        opened = source.cache.get(source.url, group=group, branch=branch, tag=tag,
                                  snapshot=snapshot)
        out = []
        for name, da in opened.ds.data_vars.items():
            dims = [str(d) for d in da.dims]
            if any(d in dims for d in _Y_NAMES) and any(d in dims for d in _X_NAMES):
                out.append({"name": str(name), "dimensions": dims,
                            "unit": str(da.attrs.get("units", "")) or None,
                            "description": str(da.attrs.get("long_name", "")) or None})
        return {"variables": out}


@dataclass
class ServeXarrayParams(DefaultDependency):
    """Which variable, layer and version to read."""

    variable: Annotated[str, Query(description="The variable to read.", max_length=256)]
    sel: Annotated[list[str] | None, Query(
        description="Select along a dimension: `{dim}={value}` (nearest label) or "
                    "`{dim}={method}::{value}` with method exact, nearest, pad/ffill, "
                    "backfill/bfill. Times are ISO 8601 in the dataset's calendar.",
    )] = None
    group: Annotated[str | None, Query(description="A group of the store.",
                                       max_length=256)] = None
    branch: Annotated[str | None, Query(description="Icechunk: a branch (default main).",
                                        max_length=256)] = None
    tag: Annotated[str | None, Query(description="Icechunk: a tag.", max_length=256)] = None
    snapshot: Annotated[str | None, Query(description="Icechunk: a snapshot id.",
                                          max_length=64)] = None


def parse_sel(sel: list[str] | None) -> list[tuple[str, list[str], str]]:
    """``["time=2015-01-16", "plev=exact::85000"]`` -> ``[(dim, values, method)]``."""
    by_dim: dict[str, tuple[list[str], set[str]]] = {}
    for text in sel or []:
        dim, eq, value = text.partition("=")
        if not eq or not dim or not value:
            raise InvalidArgumentError(f"sel={text!r}: write it as dim=value")
        method = "nearest"
        if "::" in value:
            method, _, value = value.partition("::")
            if method not in METHODS:
                raise InvalidArgumentError(f"sel={text!r}: method {method!r} is not one of "
                                           f"{', '.join(METHODS)}")
        values, methods = by_dim.setdefault(dim, ([], set()))
        values.append(value)
        methods.add(method)
    out = []
    for dim, (values, methods) in by_dim.items():
        if len(methods) > 1:
            raise InvalidArgumentError(f"sel on {dim!r} mixes methods {sorted(methods)}")
        out.append((dim, values, methods.pop()))
    return out


_ISO = re.compile(r"^\s*(-?\d{1,4})-(\d{1,2})(?:-(\d{1,2}))?"
                  r"(?:[T ](\d{1,2})(?::(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?)?"
                  r"\s*(?:Z|[+-]00:?00)?\s*$", re.IGNORECASE)


def _cftime(date_type: Any, text: str) -> Any:
    """An ISO 8601 date in a cftime calendar: ``2015-02-30`` is a day of ``360_day``
    (pandas would refuse it), ``2015-02-29`` is not one of ``noleap`` (ValueError)."""
    m = _ISO.match(text)
    if m is None:
        raise ValueError("not an ISO 8601 date (YYYY-MM-DD[THH:MM[:SS]])")
    y, mo, d, h, mi, sec, frac = m.groups()
    return date_type(int(y), int(mo), int(d or 1), int(h or 0), int(mi or 0), int(sec or 0),
                     int((frac or "0").ljust(6, "0")))


def _labels(index: pd.Index, dim: str, values: list[str]) -> list[Any]:
    """The strings of a ``sel`` as labels of ``index``'s type."""
    out: list[Any] = []
    for v in values:
        try:
            if isinstance(index, pd.DatetimeIndex):
                ts = pd.Timestamp(v)
                out.append(ts.tz_convert(None) if ts.tzinfo else ts)
            elif type(index).__name__ == "CFTimeIndex":
                out.append(_cftime(index.date_type, v))
            elif index.dtype.kind in "iuf":
                out.append(float(v))
            elif index.dtype.kind == "M":
                out.append(np.datetime64(v))
            elif index.dtype.kind == "m":  # forecast steps: 12h, 1 days 06:00:00, PT6H
                out.append(pd.Timedelta(v))
            else:
                out.append(v)
        except (ValueError, TypeError, OverflowError) as err:
            raise InvalidArgumentError(f"sel {dim}={v!r}: not a value of {dim} ({err})"
                                       ) from None
    return out


def select_variable(ds: Any, variable: str, sel: list[str] | None, *, url: str = "") -> Any:
    """``ds[variable]`` after ``sel``, dims arranged ``(band, y, x)`` with a CRS, as rio-tiler
    reads it."""
    if variable not in ds.data_vars:
        names = ", ".join(sorted(str(v) for v in ds.data_vars)[:20])
        raise NotServedError(f"{url or 'the dataset'} has no variable {variable!r} "
                             f"(it has: {names})")
    da = ds[variable]
    selected = []
    for dim, values, method in parse_sel(sel):
        selected.append(dim)
        if dim not in da.dims:
            raise InvalidArgumentError(f"sel on {dim!r}: {variable} has dimensions "
                                       f"{', '.join(map(str, da.dims))}")
        if dim in da.indexes:
            index = da.indexes[dim]
            labels = _labels(index, dim, values)
            try:
                if method == "exact":
                    positions = [index.get_loc(label) for label in labels]
                else:
                    positions = list(index.get_indexer(labels, method=method))
            except (KeyError, TypeError, ValueError, NotImplementedError,
                    pd.errors.InvalidIndexError) as err:  # a label twice in the index
                raise InvalidArgumentError(f"sel {dim}={values!r}: no such {dim} in "
                                           f"{variable} ({err})") from None
            if any(not isinstance(p, (int, np.integer)) or p < 0 for p in positions):
                raise InvalidArgumentError(f"sel {dim}={values!r}: no {dim} matches "
                                           f"({method})")
        else:  # a dimension without a coordinate: positions
            try:
                positions = [int(v) for v in values]
            except ValueError:
                raise InvalidArgumentError(f"sel {dim}={values!r}: {dim} has no coordinate; "
                                           "give positions (integers)") from None
            if any(not 0 <= p < da.sizes[dim] for p in positions):
                raise InvalidArgumentError(f"sel {dim}={values!r}: {dim} has "
                                           f"{da.sizes[dim]} positions")
        da = da.isel({dim: positions[0] if len(positions) == 1 else positions})
    # scalar coordinates other than the ones selected (CMIP6's height = 2 m) would become
    # rio-tiler's band name; the band is the selected time
    scalars = [c for c in da.coords if da[c].ndim == 0 and c not in selected]
    return _arrange(da.drop_vars(scalars), variable)


def _arrange(da: Any, variable: str) -> Any:
    y = next((d for d in _Y_NAMES if d in da.dims), None)
    x = next((d for d in _X_NAMES if d in da.dims), None)
    if y is None or x is None:
        raise InvalidArgumentError(f"{variable} has dimensions {', '.join(map(str, da.dims))}: "
                                   "no latitude/longitude (or y/x) pair to map")
    if (y, x) != ("y", "x"):
        da = da.rename({y: "y", x: "x"})
    extra = [d for d in da.dims if d not in ("x", "y")]
    if len(extra) > 1:
        raise InvalidArgumentError(
            f"{variable} has dimensions {', '.join(map(str, da.dims))} after sel: pick a "
            f"value of all but one of {', '.join(map(str, extra))} with sel={extra[0]}=...")
    if "x" not in da.coords or "y" not in da.coords:  # e.g. GRIB on a projected grid
        raise InvalidArgumentError(
            f"{variable}: its {x}/{y} dimensions have no coordinates (a projected grid with "
            "2-D latitude/longitude): it cannot be mapped")
    if da["x"].ndim != 1 or da["y"].ndim != 1:
        raise InvalidArgumentError(f"{variable}: its x/y coordinates are not 1-D")
    da = da.transpose(*extra, "y", "x")
    vmin, vmax = da.attrs.get("valid_min"), da.attrs.get("valid_max")
    if "valid_range" in da.attrs and (vmin is None or vmax is None):
        lo, hi = np.asarray(da.attrs["valid_range"]).ravel()[:2]
        da.attrs.update({"valid_min": lo, "valid_max": hi})
    crs = da.rio.crs or "epsg:4326"
    da = da.rio.write_crs(crs)
    if da.rio.crs.is_geographic and da.sizes["x"] > 1 and float(da["x"].max()) > 180:
        x = np.asarray(da["x"].values, dtype="float64")
        step = float(np.median(np.abs(np.diff(x))))
        if float(x.min()) >= 180 - step / 2 or float(x.max() - x.min()) >= 360 - 1.5 * step:
            # a global grid (0..360) or one wholly east of 180: to -180..180, rotated
            da = da.assign_coords(x=(da["x"] + 180) % 360 - 180).sortby("x")
        else:  # a regional grid across the antimeridian would split into two blocks
            raise InvalidArgumentError(
                f"{variable}: its longitudes {x.min():g}..{x.max():g} cross 180 on a "
                "regional grid, which the tiler cannot place")
    return da


#: what rio-tiler's XarrayReader derives from its array (kept per selection)
_READER_STATE = ("input", "bounds", "crs", "transform", "height", "width", "_dims",
                 "_minzoom", "_maxzoom")


@attr.s
class ServeReader(XarrayReader):
    """rio-tiler's XarrayReader over a dataset from the server's cache."""

    src_path: DatasetSource = attr.ib()
    variable: str = attr.ib()
    sel: list[str] | None = attr.ib(default=None)
    group: str | None = attr.ib(default=None)
    branch: str | None = attr.ib(default=None)
    tag: str | None = attr.ib(default=None)
    snapshot: str | None = attr.ib(default=None)

    tms: TileMatrixSet = attr.ib(default=WEB_MERCATOR_TMS)
    options: dict = attr.ib(factory=dict)

    input: Any = attr.ib(init=False)
    opened: Opened = attr.ib(init=False)
    level: int = attr.ib(init=False, default=0)
    _features: int = attr.ib(init=False, default=0)
    _dims: list = attr.ib(init=False, factory=list)

    def __attrs_post_init__(self) -> None:
        self.opened = self.src_path.cache.get(self.src_path.url, group=self.group,
                                              branch=self.branch, tag=self.tag,
                                              snapshot=self.snapshot)
        self._use_level(0)

    def _use_level(self, i: int) -> None:
        """Read level ``i``: the selected array and rio-tiler's view of it (bounds, crs,
        transform, bands) come from the opened dataset's memo when this selection was made
        before -- they are a third of a warm tile's time otherwise."""
        level = self.opened.levels[i]
        self.level = i
        key = (i, self.variable, tuple(self.sel or ()), self.tms.id)
        state = self.opened.memo_get(key)
        if state is None:
            self.input = select_variable(level.ds, self.variable, self.sel,
                                         url=self.src_path.url)
            super().__attrs_post_init__()  # bounds, crs, transform, bands
            state = {k: getattr(self, k) for k in _READER_STATE if hasattr(self, k)}
            self.opened.memo_put(key, state)
        else:
            for k, v in state.items():
                setattr(self, k, v)
        box = cache_outcome.get()
        if box is not None:
            box["token"] = self.opened.token  # the version this answer was made from
            box["url"] = self.src_path.url
            if self.opened.is_pyramid:
                box["level"] = level.name

    def _sel_indexes(self, indexes: Any = None) -> Any:
        from rio_tiler.utils import cast_to_sequence

        wanted = cast_to_sequence(indexes)
        if wanted and any(int(v) < 1 for v in wanted):  # rio-tiler asserts it (a 500)
            raise InvalidArgumentError(f"bidx={list(wanted)}: band indexes start at 1")
        return super()._sel_indexes(indexes)

    def close(self) -> None:  # the cache owns the dataset
        return None

    def __exit__(self, *exc: Any) -> None:
        return None

    # ------------------------------------------------------------ images need one layer

    def _one_layer(self, indexes: Any) -> None:
        if indexes is None and self._dims:
            n = int(self.input.sizes[self._dims[0]])
            if n > 1:
                dim = self._dims[0]
                raise InvalidArgumentError(
                    f"{self.variable} has {n} values of {dim}: pick one with sel={dim}=... "
                    "(or bidx=)")

    def _level_for(self, wanted: float | None) -> int:
        """The coarsest level whose cells are no larger than ``wanted`` (CRS units)."""
        if wanted is None or not self.opened.is_pyramid:
            return 0
        best = 0
        for i, level in enumerate(self.opened.levels):
            if level.resolution is not None and level.resolution <= wanted * 1.0001:
                best = i
        return best

    def _check_tile_index(self, x: int, y: int, z: int) -> None:
        """A tile the matrix does not have is outside (rio-tiler's bounds test transforms
        a tile east of the matrix back onto the globe and draws it)."""
        from rio_tiler.errors import TileOutsideBounds

        try:
            matrix = self.tms.matrix(z)
        except Exception as err:  # noqa: BLE001 - morecantile: no such zoom
            raise TileOutsideBounds(f"Tile(x={x}, y={y}, z={z}): no zoom {z}") from err
        if z < 0 or not (0 <= x < matrix.matrixWidth and 0 <= y < matrix.matrixHeight):
            raise TileOutsideBounds(f"Tile(x={x}, y={y}, z={z}) is outside the tile matrix "
                                    f"({matrix.matrixWidth}x{matrix.matrixHeight} at z={z})")

    def _tile_cell(self, z: int, tilesize: int | None) -> float | None:
        try:
            matrix = self.tms.matrix(z)
        except Exception:  # noqa: BLE001 - rio-tiler reports the zoom itself
            return None
        cell = float(matrix.cellSize) * matrix.tileWidth / (tilesize or matrix.tileWidth)
        tms_geographic = self.tms.rasterio_crs.is_geographic
        data_geographic = self.crs is None or self.crs.is_geographic
        if tms_geographic and not data_geographic:
            return cell * _METERS_PER_DEGREE
        if data_geographic and not tms_geographic:
            return cell / _METERS_PER_DEGREE
        return cell

    def tile(self, tile_x: int, tile_y: int, tile_z: int, tilesize: int | None = None,
             **kwargs: Any) -> Any:
        if not 0 <= tile_z <= self.tms.maxzoom:  # morecantile would extrapolate matrices
            # deeper than the scheme defines; at z=10^5 its arithmetic overflows (500s)
            from rio_tiler.errors import TileOutsideBounds

            raise TileOutsideBounds(f"zoom {tile_z} is outside {self.tms.id}'s levels "
                                    f"0-{self.tms.maxzoom}")
        self._check_tile_index(tile_x, tile_y, tile_z)
        self._one_layer(kwargs.get("indexes"))
        level = self._level_for(self._tile_cell(tile_z, tilesize))
        if level != self.level:
            self._use_level(level)
        return super().tile(tile_x, tile_y, tile_z, tilesize=tilesize, **kwargs)

    def preview(self, *args: Any, **kwargs: Any) -> Any:
        _check_edges(kwargs)
        self._one_layer(kwargs.get("indexes"))
        size = kwargs.get("max_size") or max(kwargs.get("width") or 0,
                                             kwargs.get("height") or 0) or 1024
        if self.opened.is_pyramid:
            level = 0
            for i, lv in enumerate(self.opened.levels):
                da = select_variable(lv.ds, self.variable, self.sel)
                if max(da.sizes["x"], da.sizes["y"]) >= size:
                    level = i
            if level != self.level:
                self._use_level(level)
        return super().preview(*args, **kwargs)

    def _bounded(self, kwargs: dict[str, Any]) -> None:
        if any(kwargs.get(k) for k in ("max_size", "width", "height")):
            return
        if int(self.width) * int(self.height) > MAX_PIXELS:
            raise TooLargeError(f"{self.variable} has {self.width}x{self.height} cells: give "
                                "max_size= (or width=/height=) to read it resampled")

    def part(self, *args: Any, **kwargs: Any) -> Any:
        _check_edges(kwargs)
        self._one_layer(kwargs.get("indexes"))
        self._bounded(kwargs)
        return super().part(*args, **kwargs)

    def feature(self, shape: dict, *args: Any, **kwargs: Any) -> Any:
        from rasterio.features import bounds as feature_bounds

        self._features += 1  # one reader per request: a FeatureCollection's features
        if self._features > MAX_FEATURES:
            raise TooLargeError(f"more than {MAX_FEATURES} features in one statistics "
                                "request: split it")

        try:
            west, south, east, north = (float(v) for v in feature_bounds(shape))
        except Exception as err:  # noqa: BLE001 - whatever the GeoJSON lacks
            raise InvalidArgumentError(f"the feature has no usable geometry ({err})") from None
        if not all(map(math.isfinite, (west, south, east, north))) or not (
                west < east and south < north):
            # GDAL: "Cannot invert geotransform" on a point or a line along one axis (500s)
            raise InvalidArgumentError(
                f"the feature's bounds {[west, south, east, north]} enclose no area: "
                "statistics need a polygon (or a line or points spanning both axes)")
        crs = kwargs.get("shape_crs")
        if (crs is None or getattr(crs, "is_geographic", False)) and not (
                -360 <= west and east <= 360 and -90 <= south and north <= 90):
            raise InvalidArgumentError(  # GDAL again: "Cannot invert geotransform"
                f"the feature's bounds {[west, south, east, north]} are not longitudes and "
                "latitudes (give coord_crs= for other coordinates)")
        _check_edges(kwargs)
        self._one_layer(kwargs.get("indexes"))
        self._bounded(kwargs)
        return super().feature(shape, *args, **kwargs)


def _check_edges(kwargs: dict[str, Any]) -> None:
    """``max_size``, ``width``, ``height`` within ``LIMITS["image_edge"]``: the query is
    checked by the server's middleware, but ``/preview/{width}x{height}.{format}`` takes
    them from the path (a 100000x100000 preview was 40 GB)."""
    from zarrport.service.server import LIMITS

    bound = LIMITS["image_edge"]
    for name in ("max_size", "width", "height"):
        value = kwargs.get(name)
        if value is not None and value > bound:
            raise TooLargeError(f"{name}={value}: at most {bound} pixels")
