"""The tile server gives the values of the sources, through every kind of store it opens.

Oracles: netCDF4 reading the NetCDF files, eccodes decoding the GRIB messages -- never the
server's own opening path. FastAPI's TestClient on ``create_server`` (no network).
"""

from __future__ import annotations

import numpy as np
import pytest

from .data import (
    assert_error,
    client,
    grib_field,
    mercator_pixel,
    nc_times,
    nc_var,
    nearest_cell,
    nearest_time,
    npy_tile,
)

SHARED_KINDS = ("netcdf4", "netcdf3", "kerchunk-json", "kerchunk-parquet", "zarr-v2", "zarr-v3",
                "converted")
TILE = "/xarray/tiles/WebMercatorQuad/{z}/{x}/{y}.npy"
# a point west of Greenwich: the sources store it at lon 350 (0..360 grid)
LON, LAT = -10.0, 10.0


@pytest.fixture(scope="module")
def api(stores):
    return client([stores.root])


def _series(stores, url_kind: str) -> np.ma.MaskedArray:
    """The oracle series at (LAT, LON) for a store: netCDF4 on the file(s) it holds."""
    files = sorted(stores.extra["archive"].glob("*.nc")) if url_kind == "icechunk" \
        else [stores.nc4]
    parts = []
    for f in files:
        values, lat, lon = nc_var(f)
        i, j = nearest_cell(lat, lon, LAT, LON)
        parts.append(values[:, i, j])
    return np.ma.concatenate(parts)


def _check_series(got: list, expected: np.ma.MaskedArray) -> None:
    assert len(got) == expected.size
    got_mask = np.array([v is None for v in got])
    np.testing.assert_array_equal(got_mask, np.ma.getmaskarray(expected))
    assert got_mask.any()  # the sample's fill values come out as null
    np.testing.assert_array_equal(np.array([v for v in got if v is not None], "float32"),
                                  expected.compressed())


def _url(stores, kind: str) -> str:
    return str(stores.extra["icechunk"]) if kind == "icechunk" else stores.urls[kind]


@pytest.mark.parametrize("kind", [*SHARED_KINDS, "icechunk"])
def test_point_series_equals_netcdf4(api, stores, kind):
    r = api.get(f"/xarray/point/{LON},{LAT}", params={"url": _url(stores, kind),
                                                     "variable": "tas"})
    assert r.status_code == 200, r.text
    assert r.json()["coordinates"] == [LON, LAT]
    _check_series(r.json()["values"], _series(stores, kind))


@pytest.mark.parametrize("kind", [*SHARED_KINDS, "icechunk"])
def test_tile_npy_shows_the_selected_field(api, stores, kind):
    """z=0 (nearest resampling): every valid source cell shows up and nothing else; the
    pixels at known places hold their cells' values (lon 350 is drawn west of Greenwich);
    fill values are masked."""
    values = nc_var(stores.nc4)[0]
    # a day with a fill value where a tile shows it (row 1..4: inside Web Mercator)
    day = next(t for t in range(values.shape[0]) if values.mask[t, 1:5].any())
    when = f"{nc_times(stores.nc4)[day]:%Y-%m-%d}T20:00"
    t = nearest_time(stores.nc4, when)
    assert t == day
    field = values[t]
    r = api.get(TILE.format(z=0, x=0, y=0), params={
        "url": _url(stores, kind), "variable": "tas", "sel": f"time={when}"})
    tile = npy_tile(r)
    assert tile.shape == (1, 256, 256)
    assert set(tile.compressed().tolist()) == set(field.compressed().tolist())
    _, lat, lon = nc_var(stores.nc4)
    i, j = np.argwhere(field.mask[1:5])[0]
    fill_at = (float(lon[j]) - 360.0 * (lon[j] > 180), float(lat[i + 1]))
    for at_lon, at_lat in ((LON, LAT), (10.0, 10.0), (-100.0, -40.0), (100.0, 50.0),
                           fill_at):
        i, j = nearest_cell(lat, lon, at_lat, at_lon)
        row, col = mercator_pixel(at_lon, at_lat)
        if field.mask[i, j]:
            assert tile.mask[0, row, col]
        else:
            assert tile[0, row, col] == field[i, j], (at_lon, at_lat)


def test_tile_at_higher_zoom(api, stores):
    """z=2 tile 1/1 (lon -90..0, lat 0..66.5): its pixels are the cells under them."""
    values, lat, lon = nc_var(stores.nc4)
    field = values[0]
    r = api.get(TILE.format(z=2, x=1, y=1), params={
        "url": stores.urls["zarr-v3"], "variable": "tas", "sel": "time=2015-01-01T12:00"})
    tile = npy_tile(r)
    for at_lon, at_lat in ((-80.0, 5.0), (-10.0, 20.0), (-50.0, 60.0)):
        i, j = nearest_cell(lat, lon, at_lat, at_lon)
        row, col = mercator_pixel(at_lon, at_lat, 2, 1, 1)
        assert not field.mask[i, j] and tile[0, row, col] == field[i, j]


def test_icechunk_versions(api, stores):
    import icechunk

    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(
        str(stores.extra["icechunk"])))
    tip = repo.lookup_branch("main")
    url = str(stores.extra["icechunk"])
    expected = _series(stores, "icechunk")
    for version in ({"snapshot": tip}, {"branch": "main"}):
        r = api.get(f"/xarray/point/{LON},{LAT}", params={"url": url, "variable": "tas",
                                                         **version})
        assert r.status_code == 200, r.text
        _check_series(r.json()["values"], expected)
    for version, code in (({"tag": "nope"}, "not_found"), ({"branch": "nope"}, "not_found"),
                          ({"snapshot": "1" * 20}, None)):
        r = api.get(f"/xarray/point/{LON},{LAT}", params={"url": url, "variable": "tas",
                                                         **version})
        assert 400 <= r.status_code < 500, r.text
        if code:
            assert r.json()["error"]["code"] == code
    r = api.get(f"/xarray/point/{LON},{LAT}", params={
        "url": stores.urls["zarr-v3"], "variable": "tas", "tag": "v1"})
    assert_error(r, 400, "invalid_argument")


def test_grib_file(api, stores):
    values, lats, lons = grib_field(stores.extra["grib"])
    url = str(stores.extra["grib"])
    for at_lon, at_lat in ((10.3, 30.3), (0.2, 59.8), (29.7, 0.4)):
        i, j = nearest_cell(lats, lons, at_lat, at_lon)
        r = api.get(f"/xarray/point/{at_lon},{at_lat}", params={"url": url, "variable": "t"})
        assert r.status_code == 200, r.text
        assert r.json()["values"] == [pytest.approx(values[i, j], rel=1e-6)]
    tile = npy_tile(api.get(TILE.format(z=0, x=0, y=0), params={"url": url, "variable": "t"}))
    shown = tile.compressed()
    assert shown.size > 50
    assert np.isin(shown.astype("float32"), values.astype("float32")).all()
    # the ramp grows from the first point (60N, 0E) on: north-west corner < south-east
    nw = tile[0][mercator_pixel(0.5, 59.5)]
    se = tile[0][mercator_pixel(29.5, 0.5)]
    assert nw < se


def test_forecast_repository(api, stores):
    """`zarrport grib ingest` output: member 0 at step 3 h equals the GEFS file's message."""
    from zarrport.testing.grib_synthetic import gefs_path

    path = gefs_path(stores.extra["gefs"], "2025010100", 0, 3)
    values, lats, lons = grib_field(path, _message_index(path, "tp"))
    url = str(stores.extra["forecast"])
    sel = ["init_time=2025-01-01T00:00", "member=0", "step=3h"]
    for at_lon, at_lat in ((LON, LAT), (120.0, -30.0)):
        i, j = nearest_cell(lats, lons, at_lat, at_lon)
        r = api.get(f"/xarray/point/{at_lon},{at_lat}", params={"url": url, "variable": "tp",
                                                               "sel": sel})
        assert r.status_code == 200, r.text
        assert r.json()["values"] == [pytest.approx(values[i, j], rel=1e-6, abs=1e-6)]
    tile = npy_tile(api.get(TILE.format(z=0, x=0, y=0), params={
        "url": url, "variable": "tp", "sel": sel}))
    assert np.isin(tile.compressed().astype("float32"), values.astype("float32")).all()
    # 4-D without enough sel
    r = api.get(TILE.format(z=0, x=0, y=0), params={"url": url, "variable": "tp",
                                                    "sel": "member=0"})
    assert_error(r, 400, "invalid_argument")


def _message_index(path, short_name: str) -> int:
    import eccodes

    with open(path, "rb") as f:
        k = 0
        while (h := eccodes.codes_grib_new_from_file(f)) is not None:
            try:
                if eccodes.codes_get(h, "shortName") == short_name:
                    return k
            finally:
                eccodes.codes_release(h)
            k += 1
    raise AssertionError(f"{path} has no {short_name}")


# --------------------------------------------------------------------------- calendars


def _value_at(api, url: str, sel: str):
    return api.get(f"/xarray/point/{LON},{LAT}", params={"url": url, "variable": "tas",
                                                        "sel": sel})


@pytest.mark.parametrize("calendar", ["noleap", "360_day", "standard"])
def test_sel_time_nearest_in_the_calendar(api, stores, calendar):
    path = stores.nc4 if calendar == "noleap" else stores.extra[calendar]
    values, lat, lon = nc_var(path)
    i, j = nearest_cell(lat, lon, LAT, LON)
    for when in ("2015-03-01T20:00", "2015-07-15T03:00", "2015-12-30T23:00"):
        t = nearest_time(path, when)
        r = _value_at(api, str(path), f"time={when}")
        assert r.status_code == 200, r.text
        expected = values[t, i, j]
        assert r.json()["values"] == [None if expected is np.ma.masked else float(expected)]
    # an exact time that exists, one that does not
    t = nearest_time(path, "2015-05-10T12:00")
    r = _value_at(api, str(path), "time=exact::2015-05-10T12:00:00")
    assert r.status_code == 200 and r.json()["values"] == [float(values[t, i, j])]
    assert_error(_value_at(api, str(path), "time=exact::2015-05-10"), 400,
                 "invalid_argument")


def test_feb_30(api, stores):
    """Feb 30 exists in the 360-day calendar only."""
    assert_error(_value_at(api, stores.urls["netcdf4"], "time=2015-02-30"), 400,
                 "invalid_argument")
    assert_error(_value_at(api, str(stores.extra["standard"]), "time=2015-02-30"), 400,
                 "invalid_argument")
    path = stores.extra["360_day"]
    values, lat, lon = nc_var(path)
    i, j = nearest_cell(lat, lon, LAT, LON)
    r = _value_at(api, str(path), "time=2015-02-30T12:00")
    assert r.status_code == 200, r.text
    assert r.json()["values"] == [float(values[nearest_time(path, "2015-02-30T12:00"), i, j])]


def test_longitudes_come_out_west_of_greenwich(api, stores):
    """The sources' lon 0..360: the dataset is served at -180..180 (info bounds) and the
    point at -10 is the source at 350."""
    url = stores.urls["zarr-v3"]
    info = api.get("/xarray/info", params={"url": url, "variable": "tas"})
    assert info.status_code == 200, info.text
    west, south, east, north = info.json()["bounds"]
    assert west == pytest.approx(-180) and east == pytest.approx(180)
    values, lat, lon = nc_var(stores.nc4)
    i = int(np.argmin(np.abs(lat - LAT)))
    j = int(np.argmin(np.abs(lon - 345.0)))  # the cell 330..360 holds 350
    r = _value_at(api, url, "time=2015-01-01T12:00")
    assert r.json()["values"] == [float(values[0, i, j])]
    east_r = api.get("/xarray/point/350,10", params={"url": url, "variable": "tas",
                                                    "sel": "time=2015-01-01T12:00"})
    assert_error(east_r, 404, "outside_bounds")


# --------------------------------------------------------------------------- errors


def test_errors_are_4xx_with_a_code(api, stores):
    url = stores.urls["zarr-v3"]
    one = {"url": url, "variable": "tas", "sel": "time=2015-01-01T12:00"}
    cases = [
        (("/xarray/point/0,0", {"url": url, "variable": "nope"}), 404, "not_served"),
        ((TILE.format(z=0, x=0, y=0), {"url": url, "variable": "tas"}), 400,
         "invalid_argument"),
        ((TILE.format(z=1, x=5, y=0), one), 404, "outside_bounds"),
        ((TILE.format(z=1, x=0, y=-1), one), 404, "outside_bounds"),
        ((TILE.format(z=3, x=0, y=7), {"url": str(stores.extra["grib"]), "variable": "t"}),
         404, "outside_bounds"),  # the GRIB sample covers 0..30E, 0..60N only
        (("/xarray/point/-20,30", {"url": str(stores.extra["grib"]), "variable": "t"}),
         404, "outside_bounds"),
        ((TILE.format(z=0, x=0, y=0).replace(".npy", ".png"),
          {**one, "colormap_name": "no_such_map"}), 400, None),
        ((TILE.format(z=0, x=0, y=0).replace(".npy", ".png"), {**one, "rescale": "a,b"}),
         400, None),
        ((TILE.format(z=0, x=0, y=0).replace(".npy", ".png"), {**one, "rescale": "1"}),
         400, None),
        ((TILE.format(z=0, x=0, y=0), {"collection": "nope", "variable": "tas"}), 400,
         "invalid_argument"),  # this server has no catalog
        ((TILE.format(z=0, x=0, y=0), {**one, "collection": "x"}), 400, "invalid_argument"),
        ((TILE.format(z=0, x=0, y=0), {"variable": "tas"}), 400, "invalid_argument"),
        ((TILE.format(z=0, x=0, y=0), {**one, "url": "/etc/passwd"}), 403, "forbidden"),
        ((TILE.format(z=0, x=0, y=0), {**one, "sel": "time=not-a-time"}), 400,
         "invalid_argument"),
        ((TILE.format(z=0, x=0, y=0), {**one, "sel": "plev=3"}), 400, "invalid_argument"),
        ((TILE.format(z=0, x=0, y=0), {**one, "sel": "time=bogus::2015-01-01"}), 400,
         "invalid_argument"),
        (("/xarray/point/500,0", one), 404, "outside_bounds"),
        ((TILE.format(z=0, x=0, y=0), {**one, "url": url + "/missing"}), 422, "not_found"),
    ]
    for (path, params), status, code in cases:
        r = api.get(path, params=params)
        assert r.status_code == status, (path, params, r.status_code, r.text)
        body = r.json()
        assert set(body) == {"error"}, (path, params, body)
        if code is not None:
            assert body["error"]["code"] == code, (path, params, body)


def test_error_with_catalog_server(stores):
    """collection= on a server with a catalog: unknown -> 404, with url= -> 400."""
    api = client([stores.root], catalog=str(stores.extra["stac"]))
    r = api.get(TILE.format(z=0, x=0, y=0), params={"collection": "nope", "variable": "tas",
                                                    "sel": "time=2015-01-01T12:00"})
    assert_error(r, 404, "not_served")
    r = api.get(TILE.format(z=0, x=0, y=0), params={
        "collection": str(stores.extra["collection"]), "url": stores.urls["zarr-v3"],
        "variable": "tas"})
    assert_error(r, 400, "invalid_argument")
    r = api.get(f"/xarray/point/{LON},{LAT}", params={
        "collection": str(stores.extra["collection"]), "variable": "tas"})
    assert r.status_code == 200, r.text
    _check_series(r.json()["values"], _series(stores, "icechunk"))


def test_real_server_process(stores, tmp_path):
    """`zarrport serve` as a process (uvicorn on loopback): a tile and the cache header."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from servers import free_port

    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(p) for p in (os.path.dirname(os.path.dirname(__import__("zarrport").__file__)),)]
        + [os.environ.get("PYTHONPATH", "")])}
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "zarrport", "serve", "--allow",
                             str(stores.root), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((tmp_path / "serve.log").read_text()) from None
                time.sleep(0.2)
        from urllib.parse import urlencode

        q = urlencode({"url": stores.urls["zarr-v3"], "variable": "tas",
                       "sel": "time=2015-03-01T20:00"})
        caches = []
        for _ in range(2):
            with urllib.request.urlopen(f"{base}{TILE.format(z=0, x=0, y=0)}?{q}",
                                        timeout=30) as r:
                caches.append(r.headers["X-Zarrport-Cache"])
                body = r.read()

        class R:
            status_code = 200
            content = body
        tile = npy_tile(R)
        field = nc_var(stores.nc4)[0][nearest_time(stores.nc4, "2015-03-01T20:00")]
        assert set(tile.compressed().tolist()) == set(field.compressed().tolist())
        assert caches == ["miss", "hit"]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_regional_longitudes_east_of_180_or_across_it(tmp_path):
    """A grid wholly east of 180 (190..350) is served shifted to -170..-10 with its values;
    a regional grid across 180 (100..260) is refused with a 400 rather than drawn in two
    misplaced blocks."""
    import xarray as xr

    from .data import client

    lat = np.arange(-20.0, 21.0, 10.0)
    rng = np.random.default_rng(3)
    stores = {}
    for name, lon in (("east", np.arange(190.0, 351.0, 20.0)),
                      ("across", np.arange(100.0, 261.0, 20.0))):
        values = rng.normal(280, 5, (lat.size, lon.size)).astype("float32")
        ds = xr.Dataset({"tas": (("lat", "lon"), values)},
                        coords={"lat": ("lat", lat, {"units": "degrees_north"}),
                                "lon": ("lon", lon, {"units": "degrees_east"})})
        path = tmp_path / f"{name}.nc"
        ds.to_netcdf(path)
        stores[name] = (path, values, lon)
    api = client([tmp_path])
    path, values, lon = stores["east"]
    r = api.get("/xarray/point/-50,0", params={"url": str(path), "variable": "tas"})
    assert r.status_code == 200, r.text
    j = int(np.argmin(np.abs(lon - 310.0)))  # -50 is 310
    assert r.json()["values"] == [float(values[2, j])]
    path, _, _ = stores["across"]
    r = api.get("/xarray/tiles/WebMercatorQuad/0/0/0.png", params={"url": str(path),
                                                                   "variable": "tas"})
    assert_error(r, 400, "invalid_argument")
    assert "cross 180" in r.json()["error"]["message"]
