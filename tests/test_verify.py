"""verify: values against netCDF4, byte ranges inside the sources, sources unchanged."""

from __future__ import annotations

import json

import pytest

import zarrport
from zarrport.errors import InvalidArgumentError
from zarrport.testing.samples import write_cmip6_archive
from zarrport.verify import verify


@pytest.fixture
def archive(tmp_path):
    return write_cmip6_archive(tmp_path / "src", years=[2015, 2016], nlat=8, nlon=8)


@pytest.mark.parametrize("fmt", ["json", "parquet", "icechunk"])
def test_fresh_references_verify(tmp_path, archive, fmt):
    out = tmp_path / f"tas.{fmt}"
    zarrport.virtualize([str(p) for p in archive], str(out), concat_dim="time")
    report = verify(str(out))
    assert report.ok, report.problems
    assert report.sources == 2
    assert report.variables_checked >= 8
    if fmt != "icechunk":
        assert report.ranges_checked == 730 + 0  # one reference per daily chunk of tas


@pytest.mark.parametrize("fmt", ["json", "icechunk"])
def test_rewritten_source_is_reported(tmp_path, archive, fmt):
    out = tmp_path / f"tas.{fmt}"
    zarrport.virtualize([str(p) for p in archive], str(out), concat_dim="time")
    # rewrite the second year with other values, same size and layout
    write_cmip6_archive(tmp_path / "src", years=[2016], nlat=8, nlon=8, seed=7)
    report = verify(str(out))
    assert not report.ok
    changed = [p for p in report.problems if p.kind == "changed"]
    assert [p.item for p in changed] == [archive[1].as_uri()]


def test_deleted_source_is_reported(tmp_path, archive):
    out = tmp_path / "tas.json"
    zarrport.virtualize([str(p) for p in archive], str(out), concat_dim="time")
    archive[0].unlink()
    report = verify(str(out))
    assert [(p.kind, p.item) for p in report.problems] == [("missing", archive[0].as_uri())]


def test_range_outside_source_is_reported(tmp_path, archive):
    out = tmp_path / "tas.json"
    zarrport.virtualize([str(archive[0])], str(out))
    doc = json.loads(out.read_text())
    key = "tas/3.0.0"
    target, offset, length = doc["refs"][key]
    doc["refs"][key] = [target, offset + 10**9, length]
    out.write_text(json.dumps(doc))
    report = verify(str(out))
    assert [(p.kind, p.item) for p in report.problems] == [("range", key)]


def test_corrupted_reference_is_a_value_problem(tmp_path, archive):
    out = tmp_path / "tas.json"
    zarrport.virtualize([str(archive[0])], str(out))
    doc = json.loads(out.read_text())
    # point day 3 at day 4's bytes: a silently different value that only reading catches
    doc["refs"]["tas/3.0.0"] = doc["refs"]["tas/4.0.0"]
    out.write_text(json.dumps(doc))
    report = verify(str(out))
    # caught through both readers: zarrport's and xarray's Zarr backend
    assert [(p.kind, p.item) for p in report.problems] == [("values", "tas")] * 2
    assert {p.detail.rsplit("(read by ", 1)[1] for p in report.problems} == {"zarrport)",
                                                                             "zarr)"}


def test_foreign_references_need_sources(tmp_path, archive):
    out = tmp_path / "tas.json"
    zarrport.virtualize([str(archive[0])], str(out))
    doc = json.loads(out.read_text())
    del doc["zarrport"]  # as if kerchunk had written it
    out.write_text(json.dumps(doc))
    with pytest.raises(InvalidArgumentError, match="--sources"):
        verify(str(out))
    assert verify(str(out), sources=[str(archive[0])]).ok
