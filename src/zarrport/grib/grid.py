"""The grid of a GRIB message, as zarrport lays it out in Zarr.

One rule for every grid, documented in docs/grib.md:

* **Regular grids** (``regular_ll``, ``regular_gg``): dimensions ``(latitude, longitude)``,
  1-D coordinates, **latitude increasing (south to north)**, **longitude in -180..180 and
  increasing**. A global 0..360 grid (GEFS) is rolled so that -180 comes first; ECMWF's
  open data, whose first longitude is written as 180, comes out starting at -180.
* **Projected and rotated grids** (``lambert``, ``mercator``, ``polar_stereographic``,
  ``rotated_ll``, ``lambert_azimuthal_equal_area``, ``space_view``): dimensions ``(y, x)``,
  2-D ``latitude``/``longitude`` coordinates (longitude in -180..180), rows ordered so that
  ``y`` runs in the grid's positive j direction (south to north for the usual projections).
* **Reduced grids** (``reduced_gg``, ``reduced_ll``, ``reduced_rotated_gg``: rows of
  different lengths) and **HEALPix**: one dimension ``values``, the points in the
  message's order, with
  1-D ``latitude``/``longitude`` coordinates along it (longitude in -180..180), as cfgrib
  lays them out.
* **Alternative row scanning** (every other row stored in the opposite direction) on
  Lambert and Mercator grids scanned +i / +j: the reversed rows are put back in order
  (:attr:`Layout.alternate`), and the first message of each such grid is checked against
  ecCodes' geo-iterator, which applies the same rule; elsewhere (regular and rotated
  grids, where ecCodes ignores the flag, or other scanning modes) it is refused.
* **Everything else** (spherical harmonics; unstructured grids, whose coordinates ecCodes
  cannot compute without the model's grid file) is refused with
  :class:`~zarrport.errors.UnsupportedVariableError`: it is not an array of points zarrport
  can place.

The same :class:`Layout` is applied by the codec to every message, so values and
coordinates always agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from zarrport.errors import UnsupportedVariableError

REGULAR = {"regular_ll", "regular_gg"}
REDUCED = {"reduced_gg", "reduced_ll", "reduced_rotated_gg", "healpix"}
#: grids whose ecCodes geo-iterator applies alternative row scanning (``transform_iterator_
#: data``); checked on real NBM (lambert) and NWPS / NDFD (mercator) files, ecCodes 2.50
ALTERNATE_OK = {"lambert", "mercator"}
PROJECTED = {
    "lambert", "mercator", "polar_stereographic", "rotated_ll", "rotated_gg",
    "lambert_azimuthal_equal_area", "space_view", "albers", "lambert_lam",
    "mercator_lam", "polar_stereographic_lam",
}


@dataclass(frozen=True)
class Layout:
    """How a message's values (in storage order) become a 2-D array in zarrport's order.

    ``values.reshape(rows, cols)`` (``.T`` first if ``transpose``: j-consecutive scanning),
    then flip rows / columns, then roll columns by ``roll``. ``alternate`` (alternative row
    scanning) reverses every second stored row first; it applies to *values* only
    (:func:`zarrport.grib.codec.arrange`): ecCodes computes the coordinates of such grids
    row by row already. Reduced grids are one row of all their points.
    """

    rows: int
    cols: int
    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    roll: int = 0
    alternate: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    def apply(self, values: np.ndarray) -> np.ndarray:
        if self.transpose:
            out = values.reshape(self.cols, self.rows).T
        else:
            out = values.reshape(self.rows, self.cols)
        if self.flip_rows:
            out = out[::-1, :]
        if self.flip_cols:
            out = out[:, ::-1]
        if self.roll:
            out = np.roll(out, self.roll, axis=1)
        return np.ascontiguousarray(out)

    def to_config(self) -> dict[str, Any]:
        out = asdict(self)
        if not self.alternate:  # the metadata of every other grid stays as it was
            del out["alternate"]
        return out


@dataclass
class Grid:
    """Coordinates and layout of one GRIB grid."""

    grid_type: str
    #: (lat-like, lon-like) for 2-D grids; ("values",) for reduced grids
    dims: tuple[str, ...]
    layout: Layout
    #: 1-D (regular grids) or 2-D (projected) coordinates, in zarrport's order
    latitude: np.ndarray
    longitude: np.ndarray
    #: grid definition section digest: messages with equal keys share a grid
    key: str
    attrs: dict[str, Any]

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.layout.cols,) if len(self.dims) == 1 else self.layout.shape


def wrap_longitude(lon: np.ndarray) -> np.ndarray:
    """Longitudes into [-180, 180)."""
    return (np.asarray(lon, dtype=np.float64) + 180.0) % 360.0 - 180.0


def _get(h: Any, key: str, default: Any = None) -> Any:
    import eccodes

    try:
        if not eccodes.codes_is_defined(h, key):
            return default
        return eccodes.codes_get(h, key)
    except eccodes.GribInternalError:
        return default


def grid_key(h: Any) -> str:
    """A digest of the grid definition (eccodes ``md5GridSection``)."""
    key = _get(h, "md5GridSection")
    if key is None:  # GRIB1 without the computed key: fall back to the defining keys
        parts = [str(_get(h, k)) for k in (
            "gridType", "Ni", "Nj", "latitudeOfFirstGridPointInDegrees",
            "longitudeOfFirstGridPointInDegrees", "latitudeOfLastGridPointInDegrees",
            "longitudeOfLastGridPointInDegrees", "iScansNegatively", "jScansPositively",
            "jPointsAreConsecutive")]
        key = "|".join(parts)
    return str(key)


def _base_layout(h: Any, grid_type: str, source: str | None) -> tuple[int, int, bool]:
    ni, nj = _get(h, "Ni"), _get(h, "Nj")
    missing = (None, 0, 2147483647, 4294967295)
    if ni in missing or nj in missing:
        raise UnsupportedVariableError(
            f"unsupported grid: {grid_type} has no fixed Ni x Nj (not a rectangular array)",
            source=source)
    npoints = _get(h, "numberOfDataPoints") or _get(h, "numberOfPoints")
    if npoints is not None and int(npoints) != int(ni) * int(nj):
        raise UnsupportedVariableError(
            f"unsupported grid: {grid_type} has {npoints} points, not Ni x Nj = {ni * nj}",
            source=source)
    return int(nj), int(ni), bool(_get(h, "jPointsAreConsecutive", 0))


def grid_from_handle(h: Any, source: str | None = None) -> Grid:
    """The :class:`Grid` of an eccodes handle (one message header is enough)."""
    import eccodes

    grid_type = str(_get(h, "gridType", "unknown"))
    if grid_type in REDUCED:
        return _reduced(h, grid_type, source)
    if grid_type not in REGULAR and grid_type not in PROJECTED:
        raise UnsupportedVariableError(
            f"unsupported grid: {grid_type} (only regular, reduced, rotated and projected "
            "grids map to Zarr arrays)", source=source)
    rows, cols, transpose = _base_layout(h, grid_type, source)
    alternate = bool(_get(h, "alternativeRowScanning", 0))
    if alternate:
        _check_alternate_supported(h, grid_type, source)
    try:
        lats = np.asarray(eccodes.codes_get_array(h, "latitudes"), dtype=np.float64)
        lons = np.asarray(eccodes.codes_get_array(h, "longitudes"), dtype=np.float64)
    except eccodes.GribInternalError as e:
        raise UnsupportedVariableError(
            f"unsupported grid: eccodes cannot compute the coordinates of this {grid_type} "
            f"grid ({e})", source=source) from None
    base = Layout(rows, cols, transpose=transpose)
    lat2, lon2 = base.apply(lats), base.apply(lons)
    attrs = {"GRIB_gridType": grid_type}
    if grid_type in REGULAR:
        lat = lat2[:, 0]
        lon = wrap_longitude(lon2[0, :])
        flip_rows = bool(lat.size > 1 and lat[0] > lat[-1])
        if flip_rows:
            lat = lat[::-1]
        flip_cols = bool(lon.size > 1 and _decreasing_cyclic(lon))
        if flip_cols:
            lon = lon[::-1]
        roll = -int(np.argmin(lon)) % lon.size if lon.size > 1 else 0
        lon = np.roll(lon, roll)
        if lon.size > 1 and not np.all(np.diff(lon) > 0):
            raise UnsupportedVariableError(
                f"unsupported grid: {grid_type} longitudes repeat or are not monotonic after "
                "wrapping to -180..180", source=source)
        if lat.size > 1 and not np.all(np.diff(lat) > 0):
            raise UnsupportedVariableError(
                f"unsupported grid: {grid_type} latitudes are not monotonic", source=source)
        layout = Layout(rows, cols, transpose, flip_rows, flip_cols, roll)
        return Grid(grid_type, ("latitude", "longitude"), layout, lat, lon, grid_key(h), attrs)
    flip_rows = not bool(_get(h, "jScansPositively", 0))
    flip_cols = bool(_get(h, "iScansNegatively", 0))
    layout = Layout(rows, cols, transpose, flip_rows, flip_cols, 0, alternate)
    lat = layout.apply(lats)
    lon = wrap_longitude(layout.apply(lons))
    if alternate:
        _check_alternate(h, layout, grid_type, source)
    if not (np.all(np.isfinite(lat)) and np.all(np.isfinite(lon))):
        # space_view: points off the Earth's disk have no coordinates (eccodes gives NaN
        # or its missing value); keep them as NaN coordinates
        pass
    return Grid(grid_type, ("y", "x"), layout, lat, lon, grid_key(h), attrs)


def _decreasing_cyclic(lon: np.ndarray) -> bool:
    """True when longitudes run westward (iScansNegatively), allowing one wrap."""
    steps = np.diff(lon) % 360.0
    # eastward: most steps are small positive; westward: most steps are near 360
    return bool(np.median(steps) > 180.0)


def _reduced(h: Any, grid_type: str, source: str | None) -> Grid:
    """A reduced grid: one ``values`` dimension, the points in the message's order."""
    import eccodes

    try:
        lats = np.asarray(eccodes.codes_get_array(h, "latitudes"), dtype=np.float64)
        lons = np.asarray(eccodes.codes_get_array(h, "longitudes"), dtype=np.float64)
    except eccodes.GribInternalError as e:
        raise UnsupportedVariableError(
            f"unsupported grid: eccodes cannot compute the coordinates of this {grid_type} "
            f"grid ({e})", source=source) from None
    npoints = _get(h, "numberOfDataPoints")
    if npoints is not None and int(npoints) != lats.size:
        raise UnsupportedVariableError(
            f"unsupported grid: {grid_type} has {npoints} points but ecCodes gives "
            f"{lats.size} coordinates", source=source)
    layout = Layout(1, int(lats.size))
    return Grid(grid_type, ("values",), layout, lats, wrap_longitude(lons), grid_key(h),
                {"GRIB_gridType": grid_type})


def _check_alternate_supported(h: Any, grid_type: str, source: str | None) -> None:
    scan = {k: int(_get(h, k, 0) or 0) for k in (
        "iScansNegatively", "jScansPositively", "jPointsAreConsecutive")}
    if grid_type not in ALTERNATE_OK:
        raise UnsupportedVariableError(
            f"unsupported grid: {grid_type} with alternative row scanning (ecCodes applies "
            f"it only on {' and '.join(sorted(ALTERNATE_OK))} grids)", source=source)
    if scan != {"iScansNegatively": 0, "jScansPositively": 1, "jPointsAreConsecutive": 0}:
        raise UnsupportedVariableError(
            f"unsupported grid: {grid_type} with alternative row scanning and scanning mode "
            f"{scan}", source=source)


def _check_alternate(h: Any, layout: Layout, grid_type: str, source: str | None) -> None:
    """The rows put back in order must be ecCodes' geo-iterator order (decodes this one
    message; done once per grid)."""
    import eccodes

    from zarrport.grib.codec import arrange

    theirs = iterator_values(h)  # sets missingValue to NaN
    ours = arrange(np.asarray(eccodes.codes_get_values(h), dtype=np.float64), layout)
    if not np.array_equal(ours.ravel(), theirs, equal_nan=True):
        raise UnsupportedVariableError(
            f"unsupported grid: {grid_type} with alternative row scanning: its rows put "
            "back in order differ from ecCodes' geo-iterator", source=source)


def iterator_points(h: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(latitudes, longitudes, values) of every point from ecCodes' geo-iterator, absent
    points NaN. The iterator pairs each value with its point (it reorders the values of
    projected grids for their scanning mode, alternative row scanning included), which
    ``codes_get_values`` with the ``latitudes`` key does not. Through ``grib_get_data`` of
    ecCodes' C API: eccodes-python's ``codes_grib_get_data`` builds one Python object per
    point (minutes for a 2 M-point field); checked with eccodes-python 2.50."""
    import eccodes
    from gribapi import gribapi
    from gribapi.bindings import ffi, lib

    eccodes.codes_set(h, "missingValue", np.nan)
    n = int(eccodes.codes_get(h, "numberOfDataPoints"))
    bufs = [ffi.new("double[]", max(n, 1)) for _ in range(3)]
    gribapi.GRIB_CHECK(lib.grib_get_data(gribapi.get_handle(h), *bufs))
    lat, lon, values = (np.frombuffer(ffi.buffer(b), dtype=np.float64)[:n].copy()
                        for b in bufs)
    return lat, lon, values


def iterator_values(h: Any) -> np.ndarray:
    return iterator_points(h)[2]
