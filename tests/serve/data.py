"""Small datasets of every kind the tile server opens, and oracles that read the sources
directly (netCDF4 for NetCDF, eccodes for GRIB) -- never through the server's own path.

:func:`build_stores` writes one of each kind into a directory; the fixtures in
``conftest.py`` build them once per session (``stores``) or per test (``fresh_stores``, for
tests that change them). :func:`client` gives a FastAPI TestClient on ``create_server``.
"""

from __future__ import annotations

import io
import math
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cftime
import numpy as np

from zarrport.hdf5 import use_hdf5_plugins

use_hdf5_plugins()  # before netCDF4's HDF5 starts

import netCDF4  # noqa: E402

with warnings.catch_warnings():  # Starlette >= 1.x warns that httpx is deprecated for it
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

#: grid of the NetCDF samples: 6 x 12 cells of 30 degrees, lon 0..360
GRID = {"nlat": 6, "nlon": 12, "time_chunk": 73}
YEAR = 2015
#: the GRIB sample's grid (ecCodes regular_ll_sfc_grib2: 31 x 16, 2 degrees, lat 60..0)
GRIB_SAMPLE = "regular_ll_sfc_grib2"


@dataclass
class Stores:
    """Where each kind of store is, and the NetCDF file they all hold."""

    root: Path
    nc4: Path  # noleap, tas, YEAR
    urls: dict[str, str] = field(default_factory=dict)  # kind -> path (same values as nc4)
    extra: dict[str, Path] = field(default_factory=dict)  # other calendars, GRIB, forecast


def build_stores(root: Path, *, grib: bool = True, batch: bool = True) -> Stores:
    """One store of each kind under ``root``; all but the GRIB ones hold ``nc4``'s values."""
    import xarray as xr

    from zarrport.convert import convert
    from zarrport.testing.samples import write_cmip6_archive, write_cmip6_year
    from zarrport.virtual.api import virtualize

    root.mkdir(parents=True, exist_ok=True)
    archive = root / "archive"
    paths = write_cmip6_archive(archive, years=range(YEAR, YEAR + 2), **GRID)
    nc4 = paths[0]
    s = Stores(root, nc4)
    s.extra["archive"] = archive
    s.urls["netcdf4"] = str(nc4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        virtualize(str(nc4), str(root / "refs.json"))
        virtualize(str(nc4), str(root / "refs.parquet"))
        s.urls["kerchunk-json"] = str(root / "refs.json")
        s.urls["kerchunk-parquet"] = str(root / "refs.parquet")
        with xr.open_dataset(nc4, engine="netcdf4") as ds:
            ds.to_zarr(root / "v2.zarr", zarr_format=2)
            ds.to_zarr(root / "v3.zarr", zarr_format=3)
            ds.to_netcdf(root / "classic.nc", format="NETCDF3_64BIT")
        s.urls["zarr-v2"] = str(root / "v2.zarr")
        s.urls["zarr-v3"] = str(root / "v3.zarr")
        s.urls["netcdf3"] = str(root / "classic.nc")
        convert(str(nc4), str(root / "converted.zarr"))
        s.urls["converted"] = str(root / "converted.zarr")
        if batch:
            from zarrport.pipeline import run_batch

            result = run_batch(str(archive / "*.nc"), str(root / "batch"), workers=1,
                               stac=str(root / "stac"))
            assert result.ok, result
            (cid, info), = result.collections.items()
            s.extra["batch"] = root / "batch"
            s.extra["stac"] = root / "stac"
            s.extra["icechunk"] = root / "batch" / info["icechunk"]
            s.extra["collection"] = Path(cid)
        for cal in ("360_day", "standard"):
            s.extra[cal] = write_cmip6_year(root / "calendars" / f"tas_{cal}.nc", YEAR,
                                            calendar=cal, **GRID)
        if grib:
            _grib(root, s)
    return s


def _grib(root: Path, s: Stores) -> None:
    from zarrport.grib.ingest import ingest_cycle
    from zarrport.testing.grib_synthetic import grib_message, make_gefs_cycle

    one = root / "one.grib2"
    one.write_bytes(grib_message(GRIB_SAMPLE))
    s.extra["grib"] = one
    make_gefs_cycle(root / "gefs", "2025010100", members=2, steps=range(0, 7, 3))
    ingest_cycle("gefs", str(root / "gefs" / "gefs.20250101" / "00"),
                 str(root / "forecast.icechunk"))
    s.extra["gefs"] = root / "gefs"
    s.extra["forecast"] = root / "forecast.icechunk"


def client(allow: list[str | Path], **config: Any) -> TestClient:
    from zarrport.service.server import ServerConfig, create_server

    app = create_server(ServerConfig(allow=[str(a) for a in allow], **config))
    return TestClient(app, raise_server_exceptions=False)


def assert_error(response: Any, status: int, code: str) -> dict:
    """A JSON error with this status and code (never a traceback)."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert "Traceback" not in response.text
    return body


# --------------------------------------------------------------------------- oracles


def nc_var(path: Path, name: str = "tas") -> tuple[np.ma.MaskedArray, np.ndarray, np.ndarray]:
    """(values, lat, lon) as netCDF4 reads them (masked where the fill value is)."""
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_maskandscale(True)
        return nc[name][:], np.asarray(nc["lat"][:]), np.asarray(nc["lon"][:])


def nc_times(path: Path) -> list[Any]:
    with netCDF4.Dataset(path) as nc:
        t = nc["time"]
        return list(cftime.num2date(t[:], t.units, t.calendar))


def nc_calendar(path: Path) -> str:
    with netCDF4.Dataset(path) as nc:
        return nc["time"].calendar


def nearest_time(path: Path, text: str) -> int:
    """Index of the time nearest ``text`` (ISO) in the file's calendar, computed by cftime."""
    with netCDF4.Dataset(path) as nc:
        t = nc["time"]
        values = np.asarray(t[:])
        d = cftime.datetime.strptime(text, "%Y-%m-%dT%H:%M", calendar=t.calendar)
        wanted = cftime.date2num(d, t.units, t.calendar)
    return int(np.argmin(np.abs(values - wanted)))


def nearest_cell(lat: np.ndarray, lon: np.ndarray, at_lat: float, at_lon: float
                 ) -> tuple[int, int]:
    """Indices of the cell centre nearest (at_lat, at_lon), longitudes compared mod 360."""
    dlon = np.abs(((lon - at_lon) + 180.0) % 360.0 - 180.0)
    return int(np.argmin(np.abs(lat - at_lat))), int(np.argmin(dlon))


def grib_field(path: Path, index: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values[nj, ni], lats, lons) of message ``index`` as eccodes decodes it."""
    import eccodes

    with open(path, "rb") as f:
        for _ in range(index + 1):
            h = eccodes.codes_grib_new_from_file(f)
        try:
            ni, nj = eccodes.codes_get(h, "Ni"), eccodes.codes_get(h, "Nj")
            values = eccodes.codes_get_values(h).reshape(nj, ni)
            lats = eccodes.codes_get_array(h, "distinctLatitudes")
            lons = eccodes.codes_get_array(h, "distinctLongitudes")
            if eccodes.codes_get(h, "jScansPositively") == 0:
                lats = np.sort(lats)[::-1]
            missing = eccodes.codes_get(h, "missingValue")
            bitmap = eccodes.codes_get(h, "bitmapPresent")
        finally:
            eccodes.codes_release(h)
    values = np.where(values == missing, np.nan, values) if bitmap else values
    return values, np.asarray(lats), np.asarray(lons)


# --------------------------------------------------------------------------- tiles


def npy_tile(response: Any) -> np.ma.MaskedArray:
    """A ``.npy`` tile: data bands, then the mask band last, rescaled by rio-tiler to the
    data type's range (uint8: 255 valid, 0 masked; float32: +max valid, -max masked)."""
    assert response.status_code == 200, response.text
    arr = np.load(io.BytesIO(response.content))
    data, mask = arr[:-1], arr[-1]
    return np.ma.MaskedArray(data, mask=np.broadcast_to(~(mask > 0), data.shape))


def mercator_pixel(lon: float, lat: float, z: int = 0, x: int = 0, y: int = 0,
                   size: int = 256) -> tuple[int, int]:
    """(row, col) of (lon, lat) in WebMercatorQuad tile z/x/y."""
    n = 2 ** z
    fx = (lon + 180.0) / 360.0 * n - x
    fy = (1.0 - math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) / math.pi) / 2 * n - y
    return int(fy * size), int(fx * size)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def icechunk_repo(path: Path, nc: Path):
    """A native Icechunk repository holding ``nc``'s dataset (written by xarray), one
    commit on main."""
    import warnings

    import icechunk
    import xarray as xr

    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)))
    session = repo.writable_session("main")
    with warnings.catch_warnings(), xr.open_dataset(nc, engine="netcdf4") as ds:
        warnings.simplefilter("ignore")
        ds.to_zarr(session.store, zarr_format=3, consolidated=False)
    session.commit(f"the dataset of {nc.name}")
    return repo
