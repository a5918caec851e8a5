"""The cache of rendered tiles: served again only while the dataset is unchanged, keyed so
that two different tiles never share an entry, one rendering for concurrent requests,
bounded in bytes, and nothing but tile images kept.

Oracles: the values the test writes into an Icechunk repository, netCDF4 on the source."""

from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path

import numpy as np
import pytest

from .data import GRID, client, icechunk_repo, nc_var

TILE = "/xarray/tiles/WebMercatorQuad/0/0/0"


@pytest.fixture
def archive(tmp_path) -> list[Path]:
    from zarrport.testing.samples import write_cmip6_archive

    return write_cmip6_archive(tmp_path / "archive", years=range(2015, 2016), **GRID)


def _npy(content: bytes) -> np.ndarray:
    return np.load(io.BytesIO(content))


def test_a_commit_turns_cached_tiles_into_misses(tmp_path, archive):
    import zarr

    repo = icechunk_repo(tmp_path / "r.icechunk", archive[0])
    api = client([tmp_path])
    params = {"url": str(tmp_path / "r.icechunk"), "variable": "tas",
              "sel": "time=2015-01-01T12:00"}
    first = api.get(f"{TILE}.npy", params=params)
    second = api.get(f"{TILE}.npy", params=params)
    assert first.headers["X-Zarrport-Tile-Cache"] == "miss"
    assert second.headers["X-Zarrport-Tile-Cache"] == "hit"
    assert second.content == first.content
    values, _, _ = nc_var(archive[0])
    got = _npy(first.content)[0]
    assert np.isin(got[np.isfinite(got) & (np.abs(got) < 1e30)],
                   values[0][np.isfinite(values[0])]).all()

    session = repo.writable_session("main")
    tas = zarr.open_array(session.store, path="tas", mode="r+")
    tas[0] = np.full(tas.shape[1:], 1234.0, dtype="float32")
    session.commit("day 1 = 1234")

    after = api.get(f"{TILE}.npy", params=params)
    assert after.headers["X-Zarrport-Tile-Cache"] == "miss"
    assert after.headers["X-Zarrport-Cache"] == "stale"
    data, mask = _npy(after.content)[0], _npy(after.content)[-1]
    assert set(data[mask > 0].tolist()) == {1234.0}
    assert api.get(f"{TILE}.npy", params=params).headers["X-Zarrport-Tile-Cache"] == "hit"


def test_order_of_repeated_values_is_another_tile(tmp_path, archive):
    api = client([tmp_path])
    base = {"url": str(archive[0]), "variable": "tas",
            "sel": ["time=2015-01-01T12:00", "time=2015-06-01T12:00"]}
    a = api.get(f"{TILE}.npy", params={**base, "bidx": ["1", "2"]})
    b = api.get(f"{TILE}.npy", params={**base, "bidx": ["2", "1"]})
    assert a.status_code == b.status_code == 200
    assert b.headers["X-Zarrport-Tile-Cache"] == "miss"  # not a's tile
    ta, tb = _npy(a.content), _npy(b.content)
    np.testing.assert_array_equal(ta[0], tb[1])
    np.testing.assert_array_equal(ta[1], tb[0])
    assert not np.array_equal(ta[0], ta[1])
    # the same values in the same order, parameters in another order: the same tile
    c = api.get(f"{TILE}.npy?bidx=1&bidx=2&variable=tas&url={archive[0]}"
                "&sel=time=2015-01-01T12:00&sel=time=2015-06-01T12:00")
    assert c.headers["X-Zarrport-Tile-Cache"] == "hit" and c.content == a.content


def test_only_tile_images_are_kept(tmp_path, archive):
    api = client([tmp_path])
    params = {"url": str(archive[0]), "variable": "tas", "sel": "time=2015-01-01T12:00"}
    for _ in range(2):  # the tileset page names the Host it was asked through
        page = api.get("/xarray/tiles/WebMercatorQuad", params=params,
                       headers={"Host": "evil.example", "Accept": "application/json"})
        assert page.status_code == 200
        assert "x-zarrport-tile-cache" not in page.headers
    honest = api.get("/xarray/tiles/WebMercatorQuad", params=params,
                     headers={"Accept": "application/json"})
    assert "evil.example" not in honest.text


def test_concurrent_requests_render_a_tile_once(tmp_path, archive, monkeypatch):
    import httpx

    from zarrport.service.server import ServerConfig, create_server
    from zarrport.service.tiles import ServeReader

    calls = []
    real = ServeReader.tile

    def counting(self, *args, **kwargs):
        calls.append(threading.get_ident())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ServeReader, "tile", counting)
    app = create_server(ServerConfig(allow=[str(tmp_path)]))
    params = {"url": str(archive[0]), "variable": "tas", "sel": "time=2015-02-01T12:00",
              "rescale": "200,320"}
    bad = {**params, "colormap_name": "no-such-map"}

    async def go() -> tuple[list, list]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            ok = await asyncio.wait_for(asyncio.gather(
                *(c.get(f"{TILE}.png", params=params) for _ in range(8))), 60)
            # a rendering that fails: the waiting requests go on (no hang), each answered
            failed = await asyncio.wait_for(asyncio.gather(
                *(c.get(f"{TILE}.png", params=bad) for _ in range(4))), 60)
            return ok, failed

    ok, failed = asyncio.run(go())
    assert all(r.status_code == 200 for r in ok)
    assert len({r.content for r in ok}) == 1
    assert len(calls) == 1, calls  # one rendering for eight requests
    assert sorted(r.headers["X-Zarrport-Tile-Cache"] for r in ok).count("miss") == 1
    assert all(r.status_code == 400 for r in failed)


def test_bounded_in_bytes(tmp_path, archive):
    api = client([tmp_path], tile_cache_bytes=10_000)
    for day in range(1, 25):
        r = api.get(f"{TILE}.png", params={"url": str(archive[0]), "variable": "tas",
                                           "sel": f"time=2015-01-{day:02d}T12:00",
                                           "rescale": "200,320"})
        assert r.status_code == 200
    cache = api.app.state.tile_cache
    assert 0 < cache.size <= 10_000
    assert len(cache.tiles) < 24  # the oldest were dropped
    assert cache.size == sum(e["size"] for e in cache.tiles.values())
