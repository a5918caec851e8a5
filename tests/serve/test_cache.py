"""The tile server's dataset cache: hits, changes to a store seen on the next request, the LRU
bound (and the files of evicted datasets closed), one opening for concurrent requests, and
pyramid levels picked by zoom.

Oracles: netCDF4 on the source files, the values written into a store by the test itself.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from .data import (
    GRID,
    client,
    icechunk_repo,
    mercator_pixel,
    nc_var,
    nearest_cell,
    npy_tile,
)

LON, LAT = -10.0, 10.0
POINT = f"/xarray/point/{LON},{LAT}"
T0 = "time=2015-01-01T12:00"


def _metric(api, name: str) -> float:
    text = api.get("/metrics").text
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, text
    return float(m.group(1))


def _cell(path: Path, t: int = 0) -> float:
    values, lat, lon = nc_var(path)
    i, j = nearest_cell(lat, lon, LAT, LON)
    return float(values[t, i, j])


@pytest.fixture
def archive(tmp_path) -> list[Path]:
    from zarrport.testing.samples import write_cmip6_archive

    return write_cmip6_archive(tmp_path / "archive", years=range(2015, 2017), **GRID)


def test_second_request_is_a_hit(stores):
    api = client([stores.root])
    params = {"url": stores.urls["kerchunk-json"], "variable": "tas", "sel": T0}
    outcomes = [api.get(POINT, params=params).headers["X-Zarrport-Cache"] for _ in range(3)]
    assert outcomes == ["miss", "hit", "hit"]
    assert 'outcome="hit"} 2' in api.get("/metrics").text


def test_icechunk_commit_seen_on_next_request_tag_stays(tmp_path, archive):
    import zarr

    repo = icechunk_repo(tmp_path / "r.icechunk", archive[0])
    repo.create_tag("v1", repo.lookup_branch("main"))
    api = client([tmp_path])
    url = str(tmp_path / "r.icechunk")
    first = api.get(POINT, params={"url": url, "variable": "tas", "sel": T0})
    assert first.headers["X-Zarrport-Cache"] == "miss"
    assert first.json()["values"] == [_cell(archive[0])]
    tagged = api.get(POINT, params={"url": url, "variable": "tas", "sel": T0, "tag": "v1"})
    assert tagged.json()["values"] == [_cell(archive[0])]

    # a new commit on main, written with icechunk directly: tas = 1000 + t everywhere
    session = repo.writable_session("main")
    tas = zarr.open_array(session.store, path="tas", mode="r+")
    new = (1000.0 + np.arange(tas.shape[0], dtype="float32"))[:, None, None]
    tas[:] = np.broadcast_to(new, tas.shape)
    session.commit("new values")

    again = api.get(POINT, params={"url": url, "variable": "tas", "sel": T0})
    assert again.headers["X-Zarrport-Cache"] == "stale"
    assert again.json()["values"] == [1000.0]
    assert api.get(POINT, params={"url": url, "variable": "tas", "sel": T0}
                   ).headers["X-Zarrport-Cache"] == "hit"
    tile = npy_tile(api.get("/xarray/tiles/WebMercatorQuad/0/0/0.npy", params={
        "url": url, "variable": "tas", "sel": "time=2015-01-05T12:00"}))
    assert set(tile.compressed().tolist()) == {1004.0}
    # the tag still shows the old values (a tag is never re-read)
    tagged = api.get(POINT, params={"url": url, "variable": "tas", "sel": T0, "tag": "v1"})
    assert tagged.headers["X-Zarrport-Cache"] == "hit"
    assert tagged.json()["values"] == [_cell(archive[0])]
    assert _metric(api, 'zarrport_dataset_cache_requests_total{outcome="stale"}') == 1


def test_rewritten_kerchunk_json_is_seen(tmp_path, archive):
    from zarrport.virtual.api import virtualize

    refs = tmp_path / "tas.json"
    virtualize(str(archive[0]), str(refs))
    api = client([tmp_path])
    params = {"url": str(refs), "variable": "tas", "sel": T0}
    assert api.get(POINT, params=params).json()["values"] == [_cell(archive[0])]
    time.sleep(0.01)
    virtualize(str(archive[1]), str(refs), overwrite=True)  # now 2016's file
    r = api.get(POINT, params={**params, "sel": "time=2016-01-01T12:00"})
    assert r.headers["X-Zarrport-Cache"] == "stale"
    assert r.json()["values"] == [_cell(archive[1])]
    assert _cell(archive[0]) != _cell(archive[1])


def test_rewritten_zarr_store_is_seen(tmp_path, archive):
    import xarray as xr

    store = tmp_path / "tas.zarr"
    with xr.open_dataset(archive[0], engine="netcdf4") as ds:
        ds.to_zarr(store, zarr_format=3)
    api = client([tmp_path])
    params = {"url": str(store), "variable": "tas", "sel": T0}
    assert api.get(POINT, params=params).json()["values"] == [_cell(archive[0])]
    time.sleep(0.01)
    with xr.open_dataset(archive[1], engine="netcdf4") as ds:  # same shape, new values
        ds.to_zarr(store, zarr_format=3, mode="w")
    r = api.get(POINT, params={**params, "sel": "time=2016-01-01T12:00"})
    assert r.headers["X-Zarrport-Cache"] == "stale"
    assert r.json()["values"] == [_cell(archive[1])]


def _open_paths() -> set[str]:
    import psutil

    return {os.path.realpath(f.path) for f in psutil.Process().open_files()}


def test_lru_bound_closes_evicted_files(tmp_path, archive, monkeypatch):
    from zarrport.service.datasets import DatasetCache
    from zarrport.testing.samples import write_cmip6_year

    monkeypatch.setattr(DatasetCache, "GRACE_S", 0.0)  # closed at once (see the next test)

    third = write_cmip6_year(tmp_path / "archive" / "tas_360.nc", 2015, calendar="360_day",
                             **GRID)
    files = [*archive, third]
    api = client([tmp_path], cache_size=2)
    for k, f in enumerate(files):
        r = api.get(POINT, params={"url": str(f), "variable": "tas", "sel": T0})
        assert r.status_code == 200 and r.json()["values"] == [_cell(f)], r.text
        assert r.headers["X-Zarrport-Cache"] == "miss"
        if k == 1:  # two open datasets: both files held open
            assert {str(p.resolve()) for p in files[:2]} <= _open_paths()
    assert _metric(api, "zarrport_dataset_cache_evictions_total") == 1
    assert _metric(api, "zarrport_dataset_cache_size") == 2
    assert _metric(api, "zarrport_dataset_cache_capacity") == 2
    still = _open_paths()
    assert str(files[0].resolve()) not in still  # the least recently used, closed
    assert {str(p.resolve()) for p in files[1:]} <= still
    # the evicted one opens again (a miss), evicting the next least recently used
    r = api.get(POINT, params={"url": str(files[0]), "variable": "tas", "sel": T0})
    assert r.headers["X-Zarrport-Cache"] == "miss" and r.json()["values"] == [_cell(files[0])]
    assert _metric(api, "zarrport_dataset_cache_evictions_total") == 2
    assert str(files[1].resolve()) not in _open_paths()


def test_evicted_dataset_stays_open_for_a_grace_period(tmp_path, archive, monkeypatch):
    """A request that got a dataset just before it was evicted can still read it: the
    evicted dataset is closed only after GRACE_S, at a later opening."""
    import time

    from zarrport.service.datasets import DatasetCache
    from zarrport.testing.samples import write_cmip6_year

    monkeypatch.setattr(DatasetCache, "GRACE_S", 0.5)
    third = write_cmip6_year(tmp_path / "archive" / "tas_grace.nc", 2015, calendar="360_day",
                             **GRID)
    files = [*archive, third]
    api = client([tmp_path], cache_size=1)
    for f in files[:2]:
        assert api.get(POINT, params={"url": str(f), "variable": "tas",
                                      "sel": T0}).status_code == 200
    assert _metric(api, "zarrport_dataset_cache_evictions_total") == 1
    assert str(files[0].resolve()) in _open_paths()  # evicted, still open
    time.sleep(0.6)
    r = api.get(POINT, params={"url": str(files[2]), "variable": "tas", "sel": T0})
    assert r.status_code == 200 and r.json()["values"] == [_cell(files[2])]
    assert str(files[0].resolve()) not in _open_paths()  # closed after the grace


def test_concurrent_first_requests_open_once(stores, monkeypatch):
    import zarrport

    real = zarrport.open_dataset
    calls: list[str] = []

    def counting(url, **kw):
        calls.append(url)
        time.sleep(0.3)  # keep the door open for the other requests
        return real(url, **kw)

    monkeypatch.setattr(zarrport, "open_dataset", counting)
    api = client([stores.root])
    params = {"url": stores.urls["zarr-v2"], "variable": "tas", "sel": T0}
    results: list = []
    barrier = threading.Barrier(6)

    def one() -> None:
        barrier.wait()
        r = api.get(POINT, params=params)
        results.append((r.status_code, r.headers.get("X-Zarrport-Cache"), r.json()))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 6
    assert len(calls) == 1, calls
    assert sorted(o for _, o, _ in results) == ["hit"] * 5 + ["miss"]
    assert all(s == 200 and b["values"] == [_cell(stores.nc4)] for s, _, b in results)


# --------------------------------------------------------------------------- pyramids


@pytest.fixture(scope="module")
def pyramid_store(tmp_path_factory):
    """A converted 1-step 512 x 1024 (0.35 degree) store and its 3-level pyramid
    (`zarrport pyramid`): levels of 0.35, 0.70 and 1.41 degrees -- z=0's pixel is 1.41."""
    import pandas as pd
    import xarray as xr

    from zarrport.convert import convert
    from zarrport.convert.pyramid import pyramid

    root = tmp_path_factory.mktemp("pyramid")
    ny, nx = 512, 1024
    lat = -90 + (np.arange(ny) + 0.5) * 180 / ny
    lon = (np.arange(nx) + 0.5) * 360 / nx
    rng = np.random.default_rng(7)
    tas = (250 + 50 * rng.random((1, ny, nx))).astype("float32")
    ds = xr.Dataset({"tas": (("time", "lat", "lon"), tas, {"units": "K"})},
                    coords={"time": pd.to_datetime(["2015-01-01T12:00"]),
                            "lat": ("lat", lat, {"units": "degrees_north"}),
                            "lon": ("lon", lon, {"units": "degrees_east"})})
    ds.to_netcdf(root / "fine.nc", engine="netcdf4")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        convert(str(root / "fine.nc"), str(root / "tas.zarr"))
        summary = pyramid(str(root / "tas.zarr"), str(root / "pyr.zarr"), levels=3)
    return root, root / "fine.nc", root / "pyr.zarr", summary


def test_pyramid_levels_by_zoom(pyramid_store):
    import zarr

    root, nc, pyr, _ = pyramid_store
    api = client([root])
    group = zarr.open_group(str(pyr), mode="r")
    levels = {name: (group[f"{name}/tas"][0], group[f"{name}/lat"][:], group[f"{name}/lon"][:])
              for name in ("0", "1", "2")}
    assert levels["2"][0].shape == (128, 256) and levels["0"][0].shape == (512, 1024)
    # the levels are the source (netCDF4) and its 2x2 (4x4) block means
    source, _, _ = nc_var(nc)
    source = np.asarray(source[0], dtype="float64")
    np.testing.assert_array_equal(levels["0"][0], source.astype("float32"))
    for name, k in (("1", 2), ("2", 4)):
        blocks = source.reshape(512 // k, k, 1024 // k, k).mean(axis=(1, 3))
        np.testing.assert_allclose(levels[name][0], blocks, rtol=1e-6)
    seen = {}
    for z in (0, 1, 2, 3):
        r = api.get(f"/xarray/tiles/WebMercatorQuad/{z}/0/0.npy", params={
            "url": str(pyr), "variable": "tas", "sel": T0})
        seen[z] = r.headers["X-Zarrport-Level"]
        tile = npy_tile(r)
        data, lat, lon = levels[seen[z]]
        # every pixel is a value of the level the header names
        assert np.isin(tile.compressed(), data.ravel()).all(), z
        for row, col in ((77, 77), (181, 40), (30, 200)):
            # the pixel's centre, and the cell under it
            at_lon = -180.0 + (col + 0.5) / 256 * 360.0 / 2 ** z
            at_lat = math.degrees(math.atan(math.sinh(
                math.pi * (1 - 2 * (row + 0.5) / 256 / 2 ** z))))
            assert mercator_pixel(at_lon, at_lat, z, 0, 0) == (row, col)
            i, j = nearest_cell(lat, lon, at_lat, at_lon)
            assert tile[0, row, col] == data[i, j], (z, seen[z], row, col)
    # coarse at low zoom, full resolution where a pixel is as fine as level 0's cells
    assert seen == {0: "2", 1: "1", 2: "0", 3: "0"}
