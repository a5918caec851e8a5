"""STAC catalogs of zarrport outputs: built from a real batch run and from single outputs,
validated offline against the shipped schemas, opened back through the reader helper."""

from __future__ import annotations

import copy
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import cftime
import numpy as np
import pytest
import xarray as xr

import zarrport
from zarrport.catalog import (
    ASSET_PREFERENCE,
    open_item,
    validate_catalog,
    validate_object,
    write_catalog,
)
from zarrport.catalog.build import public_storage_options
from zarrport.catalog.describe import footprint, time_step, to_datetime
from zarrport.catalog.validate import DATACUBE_SCHEMA, SHIPPED
from zarrport.errors import (
    CorruptSourceError,
    InvalidArgumentError,
    OutputExistsError,
    SourceNotFoundError,
    UnrecognizedFormatError,
    VerificationError,
)
from zarrport.testing.samples import write_cmip6_archive

YEARS = range(2015, 2018)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> list[Path]:
    return write_cmip6_archive(tmp_path_factory.mktemp("archive"), years=YEARS, nlat=6,
                               nlon=12, time_chunk=73)


@pytest.fixture(scope="module")
def batch(archive, tmp_path_factory) -> tuple[Path, Path, dict]:
    """A real batch output (run_batch) and the catalog it wrote with ``stac=``."""
    from zarrport.pipeline import run_batch

    base = tmp_path_factory.mktemp("batch")
    out, stac = base / "out", base / "stac.v1"  # a dotted name must stay a directory
    result = run_batch(str(archive[0].parent / "*.nc"), str(out), workers=1, stac=str(stac))
    assert result.ok, result.to_dict()["failures"]
    return out, stac, result.to_dict()["stac"]


def _docs(stac: Path) -> dict[str, dict]:
    return {str(p.relative_to(stac)): json.loads(p.read_text()) for p in stac.rglob("*.json")}


def _items(stac: Path) -> dict[str, tuple[Path, dict]]:
    out = {}
    for p in stac.rglob("*.json"):
        doc = json.loads(p.read_text())
        if doc["type"] == "Feature":
            out[doc["id"]] = (p, doc)
    return out


# -- end to end: batch output ----------------------------------------------------------------

def test_batch_catalog_has_a_collection_an_item_per_file_and_a_combined_item(batch, archive):
    out, stac, summary = batch
    assert summary["collections"] == [archive[0].parent.name]
    assert summary["items"] == len(archive) + 1
    assert summary["validated"] == len(archive) + 3  # catalog + collection + items
    items = _items(stac)
    per_file = {k: v for k, v in items.items() if not k.endswith("-combined")}
    assert sorted(per_file) == sorted(p.name.removesuffix(".nc") for p in archive)
    for item_id, (path, doc) in per_file.items():
        assert set(doc["assets"]) == {"zarr_ref", "netcdf"}
        ref, nc = doc["assets"]["zarr_ref"], doc["assets"]["netcdf"]
        assert ref["type"] == "application/json" and "references" in ref["roles"]
        assert ref["xarray:open_kwargs"] == {"engine": "zarrport"}
        assert nc["type"] == "application/netcdf"
        # local assets are relative to the item and point at the real files
        assert not Path(nc["href"]).is_absolute()
        assert (path.parent / nc["href"]).resolve() == \
            next(p for p in archive if p.name.startswith(item_id)).resolve()
        assert (path.parent / ref["href"]).resolve().is_file()
    combined = items[f"{archive[0].parent.name}-combined"][1]
    assert set(combined["assets"]) == {"icechunk"}
    assert combined["assets"]["icechunk"]["type"] == "application/vnd.zarr+icechunk"
    collection = json.loads((stac / archive[0].parent.name / "collection.json").read_text())
    assert "icechunk" in collection["assets"]
    assert collection["summaries"]["variables"] == ["tas"]
    assert collection["extent"]["temporal"]["interval"] == [
        ["2015-01-01T00:00:00Z", "2018-01-01T00:00:00Z"]]


def test_batch_catalog_is_self_contained_with_relative_links(batch):
    _out, stac, _ = batch
    root = json.loads((stac / "catalog.json").read_text())
    assert root["type"] == "Catalog" and root["stac_version"] == "1.1.0"
    for name, doc in _docs(stac).items():
        rels = {link["rel"] for link in doc["links"]}
        assert "self" not in rels, name  # self-contained catalogs carry no self links
        for link in doc["links"]:
            assert not link["href"].startswith(("/", "file:")), (name, link)
            assert (stac / name).parent.joinpath(link["href"]).resolve().is_file()


def test_item_datacube_and_times_come_from_the_dataset(batch, archive):
    _out, stac, _ = batch
    doc = _items(stac)[archive[0].name.removesuffix(".nc")][1]
    props = doc["properties"]
    # noleap times from the time bounds: the file covers the whole year 2015
    assert props["datetime"] is None
    assert props["start_datetime"] == "2015-01-01T00:00:00Z"
    assert props["end_datetime"] == "2016-01-01T00:00:00Z"
    assert doc["bbox"] == [-180.0, -90.0, 180.0, 90.0]  # 0..360 grid, global
    dims = props["cube:dimensions"]
    with xr.open_dataset(archive[0], engine="netcdf4") as ds:
        lon, lat = ds.lon.values, ds.lat.values
    assert dims["lon"] == {"type": "spatial", "axis": "x", "reference_system": 4326,
                           "extent": [float(lon.min()), float(lon.max())],
                           "step": float(lon[1] - lon[0]), "description": "Longitude"}
    assert dims["lat"]["axis"] == "y" and dims["lat"]["extent"] == [float(lat.min()),
                                                                    float(lat.max())]
    assert dims["time"]["type"] == "temporal" and dims["time"]["step"] == "P1D"
    assert dims["time"]["extent"] == ["2015-01-01T12:00:00Z", "2015-12-31T12:00:00Z"]
    assert dims["bnds"]["type"] == "other"
    tas = props["cube:variables"]["tas"]
    assert tas == {"dimensions": ["time", "lat", "lon"], "type": "data", "unit": "K",
                   "description": "Near-Surface Air Temperature"}
    assert props["cube:variables"]["lat_bnds"]["type"] == "auxiliary"
    assert "unit" not in props["cube:variables"]["time_bnds"]  # decoded: no "days since"


def test_open_item_reads_the_same_values_as_the_netcdf(batch, archive):
    _out, stac, _ = batch
    items = _items(stac)
    for path in archive:
        item_path, _doc = items[path.name.removesuffix(".nc")]
        with open_item(item_path) as ds, xr.open_dataset(path, engine="netcdf4") as ref:
            np.testing.assert_array_equal(ds.tas.values, ref.tas.values)
            assert list(ds.time.values) == list(ref.time.values)
        with open_item(item_path, asset="netcdf") as ds:
            assert ds.sizes["time"] == 365
    combined_path = next(p for k, (p, _) in items.items() if k.endswith("-combined"))
    with open_item(combined_path) as ds:
        assert ds.sizes["time"] == 365 * len(archive)


def test_catalog_without_ledger_lists_the_reference_files(batch, tmp_path):
    out, _stac, summary = batch
    copy_out = tmp_path / "out"
    shutil.copytree(out, copy_out)
    manifest = json.loads((copy_out / "zarrport-batch.json").read_text())
    manifest["ledger"] = str(tmp_path / "gone.sqlite")
    (copy_out / "zarrport-batch.json").write_text(json.dumps(manifest))
    again = write_catalog(copy_out, tmp_path / "stac")
    assert again["items"] == summary["items"]


def test_rewriting_replaces_the_catalog_and_leaves_nothing_aside(batch, tmp_path):
    out, _stac, _ = batch
    target = tmp_path / "cat"
    write_catalog(out, target)
    (target / "stale.json").write_text("{}")
    write_catalog(out, target)
    assert not (target / "stale.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat"]


# -- single outputs of `zarrport virtualize` -------------------------------------------------

@pytest.mark.parametrize("name,key,media_type", [
    ("tas.json", "zarr_ref", "application/json"),
    ("tas.parquet", "zarr_ref", "application/vnd.apache.parquet"),
    ("tas.icechunk", "icechunk", "application/vnd.zarr+icechunk"),
])
def test_single_output_is_one_collection_with_one_item(archive, tmp_path, name, key,
                                                       media_type):
    output = tmp_path / name
    zarrport.virtualize([str(p) for p in archive], str(output), concat_dim="time")
    summary = write_catalog(output, tmp_path / "stac")
    assert summary["collections"] == ["tas"] and summary["items"] == 1
    (item_path, doc), = _items(tmp_path / "stac").values()
    assert doc["assets"][key]["type"] == media_type
    assert sorted(k for k in doc["assets"] if k.startswith("netcdf")) == \
        [f"netcdf-{i}" for i in range(1, len(archive) + 1)]
    assert doc["properties"]["start_datetime"] == "2015-01-01T00:00:00Z"
    assert doc["properties"]["end_datetime"] == "2018-01-01T00:00:00Z"
    assert validate_catalog(tmp_path / "stac")["errors"] == []
    with open_item(item_path) as ds, zarrport.open_dataset(str(output)) as ref:
        np.testing.assert_array_equal(ds.tas.values, ref.tas.values)


# -- validation -------------------------------------------------------------------------------

def test_validation_is_offline(batch, monkeypatch):
    _out, stac, _ = batch

    def no_network(*args, **kwargs):
        raise AssertionError("validation tried to open a socket")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    report = validate_catalog(stac)
    assert report["errors"] == [] and report["checked"] > 0
    # a schema that is not shipped is an error naming it, not a download
    item = next(doc for _p, doc in _items(stac).values())
    eo = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
    other = {**copy.deepcopy(item), "stac_extensions": [*item["stac_extensions"], eo]}
    problems = validate_object(other)
    assert len(problems) == 1 and eo in problems[0] and "not shipped" in problems[0]


def test_every_shipped_schema_resolves_all_its_refs_locally():
    from referencing.exceptions import Unresolvable

    from zarrport.catalog.validate import _validator, registry

    for uri in SHIPPED:
        validator = _validator(uri)
        # walk every $ref of the schema through the registry: none may need the network
        resolver = registry().resolver(base_uri=uri)
        stack = [validator.schema]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if isinstance(node.get("$ref"), str):
                    try:
                        resolver.lookup(node["$ref"])
                    except Unresolvable as err:  # pragma: no cover - the failure message
                        pytest.fail(f"{uri}: {node['$ref']} does not resolve: {err}")
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)


def test_a_ref_to_an_unshipped_url_fails_loudly():
    from zarrport.catalog.validate import registry

    with pytest.raises(Exception, match="example.org"):
        registry().resolver().lookup("https://example.org/not-shipped.json")


def test_invalid_datacube_dimension_is_rejected(batch):
    _out, stac, _ = batch
    item = copy.deepcopy(next(doc for _p, doc in _items(stac).values()))
    assert validate_object(item) == []
    del item["properties"]["cube:dimensions"]["time"]["type"]
    problems = validate_object(item)
    assert problems and all(DATACUBE_SCHEMA in p for p in problems)
    assert any("cube:dimensions/time" in p for p in problems)
    broken = copy.deepcopy(next(doc for _p, doc in _items(stac).values()))
    broken["bbox"] = [0, 0]
    assert any("bbox" in p and "item.json" in p for p in validate_object(broken))


# -- geometry and time ------------------------------------------------------------------------

@pytest.mark.parametrize("lon,bbox,geom", [
    (np.arange(0, 361, 22.5), [-180.0, -10.0, 180.0, 10.0], "Polygon"),   # 0..360, global
    (np.array([200.0, 250.0]), [-160.0, -10.0, -110.0, 10.0], "Polygon"),  # 0..360 west
    (np.array([170.0, 190.0]), [170.0, -10.0, -170.0, 10.0], "MultiPolygon"),  # crosses 180
    (np.array([0.0, 180.0]), [0.0, -10.0, 180.0, 10.0], "Polygon"),
    (np.array([-30.0, 40.0]), [-30.0, -10.0, 40.0, 10.0], "Polygon"),     # -180..180
])
def test_footprint_handles_0_to_360_longitudes(lon, bbox, geom):
    got_bbox, got_geom = footprint(lon, np.array([-10.0, 10.0]))
    assert got_bbox == bbox
    assert got_geom["type"] == geom
    if geom == "MultiPolygon":
        xs = [x for poly in got_geom["coordinates"] for x, _y in poly[0]]
        assert min(xs) == -180.0 and max(xs) == 180.0


def test_cftime_dates_convert_to_utc_datetimes_and_steps():
    assert to_datetime(cftime.DatetimeNoLeap(2015, 2, 28, 12)).isoformat() == \
        "2015-02-28T12:00:00+00:00"
    # 30 February of a 360-day calendar is the last day of February
    assert to_datetime(cftime.Datetime360Day(2016, 2, 30)).isoformat() == \
        "2016-02-29T00:00:00+00:00"
    assert to_datetime(np.datetime64("2020-01-01T06:00")).isoformat() == \
        "2020-01-01T06:00:00+00:00"
    monthly = np.array([cftime.DatetimeNoLeap(2015, m, 15) for m in range(1, 13)])
    assert time_step(monthly) == "P1M"
    yearly = np.array([cftime.Datetime360Day(y, 7, 1) for y in range(2000, 2005)])
    assert time_step(yearly) == "P1Y"
    six_hourly = np.arange("2020-01-01", "2020-01-03", np.timedelta64(6, "h"),
                           dtype="datetime64[ns]")
    assert time_step(six_hourly) == "PT6H"
    assert time_step(np.array([cftime.DatetimeNoLeap(2015, 1, d) for d in (1, 2, 4)])) is None


# -- reader helper ----------------------------------------------------------------------------

def test_open_item_prefers_zarr_ref_then_icechunk_then_zarr_then_netcdf(monkeypatch):
    opened: list[str] = []

    def fake_open(href, storage_options=None, **kw):
        opened.append(href)
        return xr.Dataset()

    monkeypatch.setattr("zarrport.open.open_dataset", fake_open)
    assets = {k: {"href": f"s3://bucket/{k}"} for k in reversed(ASSET_PREFERENCE)}
    item = {"type": "Feature", "stac_version": "1.1.0", "id": "x", "geometry": None,
            "properties": {"datetime": "2015-01-01T00:00:00Z"}, "links": [],
            "assets": assets}
    for key in ASSET_PREFERENCE:
        open_item(item)
        assert opened[-1] == f"s3://bucket/{key}"
        del item["assets"][key]
    with pytest.raises(InvalidArgumentError, match="no asset"):
        open_item(item)


def test_credentials_are_never_written():
    options = {"anon": False, "endpoint_url": "http://127.0.0.1:9000", "key": "AKIA",
               "secret": "s", "account_key": "k", "sas_token": "t", "client_kwargs": {}}
    assert public_storage_options(options) == {
        "anon": False, "endpoint_url": "http://127.0.0.1:9000", "client_kwargs": {}}


# -- errors -----------------------------------------------------------------------------------

def test_missing_output_is_source_not_found(tmp_path):
    with pytest.raises(SourceNotFoundError, match="does not exist"):
        write_catalog(tmp_path / "nope", tmp_path / "stac")


def test_a_netcdf_file_is_not_an_output(archive, tmp_path):
    with pytest.raises(UnrecognizedFormatError, match="not zarrport output"):
        write_catalog(archive[0], tmp_path / "stac")


def test_damaged_manifest_is_corrupt(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "zarrport-batch.json").write_text("{not json")
    with pytest.raises(CorruptSourceError, match="damaged batch manifest"):
        write_catalog(tmp_path / "out", tmp_path / "stac")


def test_catalog_dir_that_holds_something_else_is_refused(batch, tmp_path):
    out, _stac, _ = batch
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="without a STAC catalog.json"):
        write_catalog(out, tmp_path / "docs")
    assert (tmp_path / "docs" / "notes.txt").read_text() == "mine"
    with pytest.raises(InvalidArgumentError, match="must be local"):
        write_catalog(out, "s3://bucket/stac")


def test_open_item_on_something_else_is_corrupt(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"type": "Catalog"}))
    with pytest.raises(CorruptSourceError, match="not a STAC item"):
        open_item(tmp_path / "c.json")
    with pytest.raises(SourceNotFoundError):
        open_item(tmp_path / "missing.json")


def test_a_catalog_that_does_not_validate_is_not_written(batch, tmp_path, monkeypatch):
    out, _stac, _ = batch
    import zarrport.catalog.build as build

    real = build.describe

    def broken(ds):
        info = real(ds)
        info.dimensions["time"].pop("type")
        return info

    monkeypatch.setattr(build, "describe", broken)
    monkeypatch.setattr("pystac.extensions.datacube.Dimension.from_dict",
                        lambda d: build.Dimension(d))
    with pytest.raises(VerificationError, match="does not validate"):
        write_catalog(out, tmp_path / "stac")
    assert list(tmp_path.iterdir()) == []


# -- command line -----------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zarrport", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_writes_the_catalog_and_prints_json(batch, tmp_path):
    out, _stac, _ = batch
    proc = _cli("catalog", str(out), "-o", str(tmp_path / "stac"), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["items"] == len(YEARS) + 1 and summary["validated"] == len(YEARS) + 3
    assert DATACUBE_SCHEMA in summary["schemas"]


def test_cli_bad_input_is_one_line_and_an_exit_status(tmp_path):
    proc = _cli("catalog", str(tmp_path / "nope"), "-o", str(tmp_path / "stac"))
    assert proc.returncode == 3
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("zarrport: error: ")
    assert "does not exist" in lines[0]
