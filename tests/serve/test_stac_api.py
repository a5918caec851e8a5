"""The STAC API over a catalog written by ``run_batch(..., stac=...)``.

Oracles: the static catalog's JSON files on disk (what the API must serve), the STAC JSON
schemas zarrport ships (``validate_object``) and the tiles the tilejson links lead to.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import xarray as xr

from zarrport.catalog.validate import validate_object

from .data import assert_error, client

CMIP6 = "{variable}_{freq}_{model}_{scenario}_{member}_{grid}_{years}.nc"
REGION = [100.0, 10.0, 130.0, 40.0]  # the regional collection's cells' extent


def _regional(path: Path) -> Path:
    """Ten days of 2020 on a 1-degree grid over 100..130E, 10..40N (standard calendar)."""
    rng = np.random.default_rng(3)
    lat = np.arange(10.5, 40, 1.0)
    lon = np.arange(100.5, 130, 1.0)
    time_ = np.array(["2020-01-01T12:00"], "datetime64[ns]") + np.arange(10) * np.timedelta64(
        1, "D")
    ds = xr.Dataset(
        {"tas": (("time", "lat", "lon"), (280 + rng.random((10, 30, 30))).astype("float32"),
                 {"units": "K", "standard_name": "air_temperature"})},
        coords={"time": time_, "lat": ("lat", lat, {"units": "degrees_north",
                                                    "standard_name": "latitude"}),
                "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"})})
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, engine="netcdf4")
    return path


def _batch(root: Path, years: range) -> tuple[Path, Path]:
    from zarrport.pipeline import run_batch
    from zarrport.testing.samples import write_cmip6_archive

    archive = root / "archive"
    write_cmip6_archive(archive, years=years, nlat=6, nlon=12, time_chunk=73)
    _regional(archive / "tas_day_REGIONAL_ssp245_r1i1p1f1_gn_20200101-20200110.nc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_batch(str(archive / "*.nc"), str(root / "out"), collection_by=CMIP6,
                           workers=1, stac=str(root / "stac"))
    assert result.ok, result
    return root / "out", root / "stac"


def _on_disk(stac: Path) -> dict[str, dict[str, dict]]:
    """collection id -> item id -> item document, read from the static catalog."""
    out: dict[str, dict[str, dict]] = {}
    for cpath in stac.glob("*/collection.json"):
        coll = json.loads(cpath.read_text())
        items = out.setdefault(coll["id"], {})
        for link in coll["links"]:
            if link["rel"] == "item":
                doc = json.loads((cpath.parent / link["href"]).resolve().read_text())
                items[doc["id"]] = doc
    return out


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("stac-api")
    out, stac = _batch(root, range(2015, 2018))
    api = client([root], catalog=str(stac))
    disk = _on_disk(stac)
    assert len(disk) == 2 and sum(map(len, disk.values())) >= 6
    return api, disk, root


def _path(href: str) -> str:
    parts = urlsplit(href)
    assert parts.scheme == "http" and parts.netloc == "testserver", href
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _all_ids(disk) -> set[str]:
    return {iid for items in disk.values() for iid in items}


def _interval(doc: dict) -> tuple[dt.datetime, dt.datetime]:
    p = doc["properties"]

    def parse(s: str) -> dt.datetime:
        return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))

    return parse(p.get("start_datetime") or p["datetime"]), \
        parse(p.get("end_datetime") or p["datetime"])


def _follow(api, first, *, post_body: dict | None = None) -> list[str]:
    """Item ids over every page, following ``next`` links until there is none."""
    ids: list[str] = []
    r = first
    for _ in range(100):
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["type"] == "FeatureCollection"
        assert body["numberReturned"] == len(body["features"])
        ids += [f["id"] for f in body["features"]]
        nxt = [link for link in body["links"] if link["rel"] == "next"]
        if not nxt:
            return ids
        if nxt[0].get("method") == "POST":
            r = api.post(_path(nxt[0]["href"]), json=nxt[0]["body"])
        else:
            r = api.get(_path(nxt[0]["href"]))
    raise AssertionError("paging did not end")


def test_landing_page_and_conformance(catalog):
    api, disk, _ = catalog
    r = api.get("/stac/")
    assert r.status_code == 200
    doc = r.json()
    assert doc["type"] == "Catalog" and validate_object(doc) == []
    for cls in ("https://api.stacspec.org/v1.0.0/core",
                "https://api.stacspec.org/v1.0.0/item-search",
                "https://api.stacspec.org/v1.0.0/collections"):
        assert cls in doc["conformsTo"]
    rels = [link["rel"] for link in doc["links"]]
    for rel in ("self", "root", "conformance", "data", "search", "service-desc"):
        assert rel in rels, rel
    assert {link.get("method") for link in doc["links"] if link["rel"] == "search"} == {
        "GET", "POST"}
    children = {link["href"].rsplit("/", 1)[-1] for link in doc["links"]
                if link["rel"] == "child"}
    assert children == set(disk)
    for link in doc["links"]:  # every link answers
        assert api.get(_path(link["href"])).status_code == 200, link
    assert api.get("/stac/conformance").json()["conformsTo"] == doc["conformsTo"]


def test_collections_are_valid_stac_with_absolute_assets(catalog):
    api, disk, _ = catalog
    body = api.get("/stac/collections").json()
    assert {c["id"] for c in body["collections"]} == set(disk)
    for coll in body["collections"]:
        assert validate_object(coll) == [], coll["id"]
        assert coll == api.get(f"/stac/collections/{coll['id']}").json()
        for asset in coll.get("assets", {}).values():
            _check_absolute(asset["href"])
        for item_id, on_disk in disk[coll["id"]].items():
            item = api.get(f"/stac/collections/{coll['id']}/items/{item_id}").json()
            assert validate_object(item) == [], item_id
            assert item["bbox"] == on_disk["bbox"]
            assert item["properties"] == on_disk["properties"]
            assert set(item["assets"]) == set(on_disk["assets"])
            for asset in item["assets"].values():
                _check_absolute(asset["href"])


def _check_absolute(href: str) -> None:
    assert "://" in href, href
    if href.startswith("file://"):
        assert Path(href[len("file://"):]).exists(), href


def test_items_paging_sees_every_item_once(catalog):
    api, disk, _ = catalog
    for cid, items in disk.items():
        ids = _follow(api, api.get(f"/stac/collections/{cid}/items", params={"limit": 1}))
        assert sorted(ids) == sorted(items)
        assert len(ids) == len(set(ids))
    ids = _follow(api, api.get("/stac/search", params={"limit": 2}))
    assert sorted(ids) == sorted(_all_ids(disk))
    ids = _follow(api, api.post("/stac/search", json={"limit": 2}))
    assert sorted(ids) == sorted(_all_ids(disk))


def test_bbox_and_datetime_filters(catalog):
    api, disk, _ = catalog
    regional = next(c for c, items in disk.items()
                    if all(d["bbox"][0] >= 99 for d in items.values()))
    everything = _all_ids(disk)
    only_regional = set(disk[regional])
    global_ids = everything - only_regional
    # a box far from the region: the global items only; one inside it: all
    for params, expected in (
        ({"bbox": "-60,-40,-50,-30"}, global_ids),
        ({"bbox": "110,20,111,21"}, everything),
        ({"bbox": "110,20,111,21", "collections": regional}, only_regional),
    ):
        got = _follow(api, api.get("/stac/search", params={**params, "limit": 3}))
        assert set(got) == expected, params
        body = {k: v for k, v in params.items() if k != "bbox"}
        body["bbox"] = [float(v) for v in params["bbox"].split(",")]
        if "collections" in body:
            body["collections"] = [body["collections"]]
        got = _follow(api, api.post("/stac/search", json={**body, "limit": 3}))
        assert set(got) == expected, body
    got = _follow(api, api.get(f"/stac/collections/{regional}/items",
                               params={"bbox": "-60,-40,-50,-30"}))
    assert got == []

    def overlapping(lo: str | None, hi: str | None) -> set[str]:
        lo_t = dt.datetime.fromisoformat(lo.replace("Z", "+00:00")) if lo else None
        hi_t = dt.datetime.fromisoformat(hi.replace("Z", "+00:00")) if hi else None
        out = set()
        for items in disk.values():
            for iid, doc in items.items():
                start, end = _interval(doc)
                if (lo_t is None or end >= lo_t) and (hi_t is None or start <= hi_t):
                    out.add(iid)
        return out

    for lo, hi in (("2016-03-01T00:00:00Z", "2016-04-01T00:00:00Z"),
                   (None, "2015-06-01T00:00:00Z"), ("2019-06-01T00:00:00Z", None),
                   ("2020-01-05T00:00:00Z", "2020-01-05T00:00:00Z")):
        text = f"{lo or '..'}/{hi or '..'}" if lo != hi else lo
        expected = overlapping(lo, hi)
        assert expected and expected != everything, text  # the filter matters
        got = _follow(api, api.get("/stac/search", params={"datetime": text, "limit": 2}))
        assert set(got) == expected, text
        got = _follow(api, api.post("/stac/search", json={"datetime": text, "limit": 2}))
        assert set(got) == expected, text


def test_search_ids_collections_limit_token(catalog):
    api, disk, _ = catalog
    everything = sorted(_all_ids(disk))
    some = everything[:2]
    r = api.get("/stac/search", params={"ids": ",".join(some)})
    assert sorted(f["id"] for f in r.json()["features"]) == some
    r = api.post("/stac/search", json={"ids": some})
    assert sorted(f["id"] for f in r.json()["features"]) == some
    cid = sorted(disk)[0]
    r = api.get("/stac/search", params={"collections": cid, "limit": 1000})
    assert sorted(f["id"] for f in r.json()["features"]) == sorted(disk[cid])
    assert all(f["collection"] == cid for f in r.json()["features"])
    r = api.get("/stac/search", params={"limit": 1})
    body = r.json()
    assert body["numberReturned"] == 1 and body["numberMatched"] == len(everything)
    token = next(link for link in body["links"] if link["rel"] == "next")["href"]
    token = parse_qs(urlsplit(token).query)["token"][0]
    second = api.get("/stac/search", params={"limit": 1, "token": token}).json()
    assert second["features"][0]["id"] != body["features"][0]["id"]
    post = api.post("/stac/search", json={"limit": 1, "token": token}).json()
    assert post["features"][0]["id"] == second["features"][0]["id"]
    r = api.get("/stac/search", params={"ids": "no-such-item"})
    assert r.status_code == 200 and r.json()["features"] == []


def test_bad_requests(catalog):
    api, disk, _ = catalog
    cid = sorted(disk)[0]
    for params in ({"bbox": "1,2,3"}, {"bbox": "0,10,5,-10"}, {"bbox": "a,b,c,d"},
                   {"bbox": "0,0,nan,1"}, {"datetime": "yesterday"},
                   {"datetime": "../.."}, {"datetime": "2020-01-02T00:00:00Z/2020-01-01"},
                   {"token": "bogus"}, {"token": "next:-1"}, {"limit": "0"},
                   {"limit": "100000"}):
        assert_error(api.get("/stac/search", params=params), 400, "invalid_argument")
        assert_error(api.get(f"/stac/collections/{cid}/items", params=params), 400,
                     "invalid_argument")
    for body in ({"bbox": [1, 2, 3]}, {"bbox": [0, 10, 5, -10]}, {"datetime": "nope"},
                 {"token": "bogus"}, {"limit": 0}, {"unknown": 1}, {"ids": "a"}):
        assert_error(api.post("/stac/search", json=body), 400, "invalid_argument")
    r = api.post("/stac/search", content=b"{not json", headers={"content-type":
                                                                "application/json"})
    assert r.status_code == 400, r.text
    assert_error(api.get("/stac/collections/nope"), 404, "not_served")
    assert_error(api.get("/stac/collections/nope/items"), 404, "not_served")
    assert_error(api.get(f"/stac/collections/{cid}/items/nope"), 404, "not_served")


def test_tilejson_links_lead_to_tiles(catalog):
    api, disk, _ = catalog
    checked = 0
    for cid, items in disk.items():
        docs = [api.get(f"/stac/collections/{cid}").json()]
        docs += [api.get(f"/stac/collections/{cid}/items/{iid}").json() for iid in items]
        for doc in docs:
            links = [link for link in doc["links"] if link["rel"] == "tilejson"]
            assert [link["title"].split(":")[0] for link in links] == ["tas"], doc["id"]
            tj = api.get(_path(links[0]["href"]))
            assert tj.status_code == 200, tj.text
            template = tj.json()["tiles"][0]
            west, south, east, north = tj.json()["bounds"]
            assert west < east and south < north
            tile = api.get(_path(template.format(z=0, x=0, y=0)))
            assert tile.status_code == 200, tile.text
            # titiler: PNG where some pixel is masked, JPEG otherwise
            assert tile.headers["content-type"] in ("image/png", "image/jpeg")
            assert len(tile.content) > 100
            checked += 1
    assert checked == sum(len(i) + 1 for i in disk.values())


def test_new_item_shows_up_without_restart(tmp_path):
    out, stac = _batch(tmp_path, range(2015, 2016))
    api = client([tmp_path], catalog=str(stac))
    before = set(_follow(api, api.get("/stac/search")))
    assert before == _all_ids(_on_disk(stac))
    from zarrport.pipeline import run_batch
    from zarrport.testing.samples import write_cmip6_archive

    new = write_cmip6_archive(tmp_path / "archive", years=range(2016, 2017), nlat=6, nlon=12,
                              time_chunk=73)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run_batch(str(tmp_path / "archive" / "*.nc"), str(out), workers=1,
                         stac=str(stac)).ok
    time.sleep(1.1)  # the catalog is re-checked at most once a second
    after = set(_follow(api, api.get("/stac/search")))
    added = after - before
    assert added == {new.stem}
    assert after == _all_ids(_on_disk(stac))
    cid = next(c for c, items in _on_disk(stac).items() if new.stem in items)
    r = api.get(f"/stac/collections/{cid}/items/{new.stem}")
    assert r.status_code == 200 and validate_object(r.json()) == []
