"""zarrport.testing.grib_synthetic: GEFS and ECMWF open-data cycles, checked with ecCodes."""

from __future__ import annotations

import json
from pathlib import Path

import eccodes
import numpy as np
import pytest

from zarrport.grib import parse_index
from zarrport.testing.grib_synthetic import (
    PACKINGS,
    Grid,
    ecmwf_index_path,
    ecmwf_path,
    gefs_apcp_window,
    gefs_idx_path,
    gefs_path,
    make_ecmwf_cycle,
    make_gefs_cycle,
    synthetic_fields,
    upload,
)

CYCLE = "2025010100"
GEFS_STEPS = range(0, 25, 3)
ECMWF_STEPS = range(0, 25, 6)


def scan(path: Path) -> list[dict]:
    """Every message ecCodes finds in a file: offset, length, a few keys, the values."""
    out = []
    with open(path, "rb") as f:
        while (h := eccodes.codes_grib_new_from_file(f)) is not None:
            try:
                keys = {k: eccodes.codes_get_string(h, k) for k in (
                    "shortName", "stepRange", "stepType", "typeOfLevel", "level", "dataType",
                    "packingType", "jScansPositively")}
                keys.update({k: eccodes.codes_get(h, k, ktype=float) for k in (
                    "longitudeOfFirstGridPointInDegrees", "longitudeOfLastGridPointInDegrees",
                    "latitudeOfFirstGridPointInDegrees")})
                keys.update({k: eccodes.codes_get(h, k, ktype=int) for k in (
                    "Ni", "Nj", "perturbationNumber", "typeOfEnsembleForecast",
                    "numberOfForecastsInEnsemble", "centre", "productDefinitionTemplateNumber")})
                keys["marsType"] = (eccodes.codes_get_string(h, "mars.type")
                                    if eccodes.codes_is_defined(h, "mars.type") else None)
                keys["offset"] = int(eccodes.codes_get(h, "offset"))
                keys["length"] = int(eccodes.codes_get(h, "totalLength"))
                ni, nj = keys["Ni"], keys["Nj"]
                keys["values"] = eccodes.codes_get_values(h).reshape(nj, ni)
                keys["lats"] = eccodes.codes_get_array(h, "distinctLatitudes")
                keys["lons"] = eccodes.codes_get_array(h, "distinctLongitudes")
            finally:
                eccodes.codes_release(h)
            out.append(keys)
    return out


def index_of(grib: Path, sidecar: Path):
    return parse_index(sidecar.read_bytes(), source=sidecar.name, file_size=grib.stat().st_size)


def decode(data: bytes) -> np.ndarray:
    h = eccodes.codes_new_from_message(data)
    try:
        return eccodes.codes_get_values(h)
    finally:
        eccodes.codes_release(h)


@pytest.fixture(scope="module")
def gefs(tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("gefs")
    return root, make_gefs_cycle(root, CYCLE, members=3, steps=GEFS_STEPS, seed=0)


@pytest.fixture(scope="module")
def ecmwf(tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("ecmwf")
    return root, make_ecmwf_cycle(root, CYCLE, members=3, steps=ECMWF_STEPS, seed=0)


def gefs_apcp(root: Path, member: int, step: int) -> np.ndarray:
    (apcp,) = [m for m in scan(gefs_path(root, CYCLE, member, step)) if m["shortName"] == "tp"]
    return apcp["values"]


# --------------------------------------------------------------------------- GEFS


def test_gefs_layout(gefs):
    root, files = gefs
    base = root / "gefs.20250101" / "00" / "atmos" / "pgrb2sp25"
    expected = {base / f"{p}{m:02d}.t00z.pgrb2s.0p25.f{s:03d}"
                for p, m in (("gec", 0), ("gep", 1), ("gep", 2)) for s in GEFS_STEPS}
    assert set(files) == expected
    on_disk = {p for p in root.rglob("*") if p.is_file()}
    assert on_disk == expected | {gefs_idx_path(p) for p in expected}
    assert gefs_idx_path(files[0]).name == files[0].name + ".idx"


def test_gefs_idx_lines_match_the_messages(gefs):
    root, files = gefs
    for path in files:
        entries = index_of(path, gefs_idx_path(path))
        messages = scan(path)
        assert [(e.offset, e.length) for e in entries] == [
            (m["offset"], m["length"]) for m in messages]
        assert [e.message for e in entries] == list(range(1, len(messages) + 1))
        step = int(path.name[-3:])
        member = int(path.name[3:5])
        ens = "ENS=low-res ctl" if member == 0 else f"ENS=+{member}"
        expected = [] if step == 0 else [("APCP", "surface", "tp")]
        expected.append(("TMP", "2 m above ground", "2t"))
        assert [(e.param, e.level, m["shortName"]) for e, m in zip(entries, messages,
                                                                    strict=True)] == expected
        for e, m in zip(entries, messages, strict=True):
            assert e.keys["date"] == CYCLE and e.keys["extra"] == [ens]
            assert m["perturbationNumber"] == member
            assert m["typeOfEnsembleForecast"] == (1 if member == 0 else 3)
            assert m["dataType"] == ("cf" if member == 0 else "pf")
            assert m["numberOfForecastsInEnsemble"] == 2
            assert m["centre"] == 7
            if e.param == "TMP":
                assert e.keys["forecast"] == ("anl" if step == 0 else f"{step} hour fcst")
                assert (m["stepRange"], m["typeOfLevel"], m["level"]) == (
                    str(step), "heightAboveGround", "2")
                assert m["productDefinitionTemplateNumber"] == 1
            else:
                start = 6 * ((step - 1) // 6)
                assert e.keys["forecast"] == f"{start}-{step} hour acc fcst"
                assert (m["stepRange"], m["stepType"]) == (f"{start}-{step}", "accum")
                assert m["productDefinitionTemplateNumber"] == 11


def test_gefs_idx_text_is_wgrib2s(gefs):
    root, _ = gefs
    text = gefs_idx_path(gefs_path(root, CYCLE, 2, 9)).read_text()
    lines = text.splitlines()
    assert lines[0] == "1:0:d=2025010100:APCP:surface:6-9 hour acc fcst:ENS=+2"
    assert lines[1].startswith("2:") and lines[1].endswith(
        ":d=2025010100:TMP:2 m above ground:9 hour fcst:ENS=+2")
    assert gefs_idx_path(gefs_path(root, CYCLE, 0, 0)).read_text() == (
        "1:0:d=2025010100:TMP:2 m above ground:anl:ENS=low-res ctl\n")


def test_apcp_windows_alternate():
    assert [gefs_apcp_window(s) for s in (3, 6, 9, 12, 15, 18, 21, 24)] == [
        (0, 3), (0, 6), (6, 9), (6, 12), (12, 15), (12, 18), (18, 21), (18, 24)]
    with pytest.raises(ValueError):
        gefs_apcp_window(0)


def test_gefs_grid_is_stored_north_to_south_0_to_360(gefs):
    root, _ = gefs
    (msg,) = scan(gefs_path(root, CYCLE, 0, 0))
    assert (msg["Ni"], msg["Nj"], msg["jScansPositively"]) == (72, 37, "0")
    assert msg["longitudeOfFirstGridPointInDegrees"] == 0
    assert msg["longitudeOfLastGridPointInDegrees"] == 355
    assert msg["latitudeOfFirstGridPointInDegrees"] == 90
    fields = synthetic_fields(members=1, steps=[0])
    np.testing.assert_allclose(msg["lats"], fields.latitude)
    np.testing.assert_allclose(msg["lons"], fields.longitude)
    np.testing.assert_allclose(msg["values"], fields.t2m_k[0, 0], atol=0.01)


def test_gefs_buckets_add_up_to_the_accumulation(gefs):
    root, _ = gefs
    fields = synthetic_fields(members=3, steps=GEFS_STEPS, seed=0)
    for member in range(3):
        total = np.zeros(fields.precip_mm.shape[2:])
        for step in (6, 12, 18, 24):  # the 6-hour buckets tile 0-24
            total += gefs_apcp(root, member, step)
            np.testing.assert_allclose(total, fields.precip_mm[member, step // 3], atol=0.01)
        # a 3-hour bucket plus the next 3 hours make the 6-hour bucket
        np.testing.assert_allclose(
            gefs_apcp(root, member, 9) + fields.precip_between(member, 9, 12),
            gefs_apcp(root, member, 12), atol=0.01)
        assert fields.precip_between(member, 9, 12).max() > 1  # ... and that says something


def test_precipitation_is_plausible_and_exceeds_50mm_in_some_members(gefs):
    root, _ = gefs
    totals = []
    for member in range(3):
        buckets = [gefs_apcp(root, member, s) for s in GEFS_STEPS if s]
        assert min(b.min() for b in buckets) >= 0
        totals.append(sum(gefs_apcp(root, member, s) for s in (6, 12, 18, 24)))
    probability = (np.stack(totals) > 50).mean(axis=0)
    assert (probability == 0).any()
    assert (probability == 1).any()
    assert ((probability > 0) & (probability < 1)).any()
    assert 50 < np.stack(totals).max() < 400


def test_regional_grid_window(tmp_path):
    grid = (1.0, (-10, 60), (350, 370))  # crosses the prime meridian
    (path,) = make_gefs_cycle(tmp_path, members=1, steps=[0], grid=grid)
    (msg,) = scan(path)
    assert (msg["Nj"], msg["Ni"]) == (71, 21)
    assert msg["longitudeOfFirstGridPointInDegrees"] == 350
    assert msg["longitudeOfLastGridPointInDegrees"] == 10
    assert Grid(1.0, (-10, 60), (350, 370)).longitudes()[[0, 9, 10, 20]].tolist() == [
        350, 359, 0, 10]


def test_same_arguments_same_bytes_other_seed_other_values(tmp_path):
    a = make_gefs_cycle(tmp_path / "a", members=2, steps=[0, 6])
    b = make_gefs_cycle(tmp_path / "b", members=2, steps=[0, 6])
    c = make_gefs_cycle(tmp_path / "c", members=2, steps=[0, 6], seed=1)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert [p.read_bytes() for p in a] != [p.read_bytes() for p in c]


@pytest.mark.parametrize("packing", PACKINGS)
def test_packings_decode_to_the_intended_values(tmp_path, packing):
    gefs_files = make_gefs_cycle(tmp_path / "g", members=2, steps=[6], packing=packing)
    ecmwf_files = make_ecmwf_cycle(tmp_path / "e", members=2, steps=[6], packing=packing)
    fields = synthetic_fields(members=2, steps=[0, 6])
    atol = 1e-4 if packing == "grid_ieee" else 0.01
    for member, path in enumerate(gefs_files):
        apcp, tmp = scan(path)
        assert apcp["packingType"] == tmp["packingType"] == packing
        np.testing.assert_allclose(apcp["values"], fields.precip_mm[member, 1], atol=atol)
        np.testing.assert_allclose(tmp["values"], fields.t2m_k[member, 1], atol=atol)
    tp = [m for m in scan(ecmwf_files[0]) if m["shortName"] == "tp"]
    assert [m["packingType"] for m in tp] == [packing, packing]
    np.testing.assert_allclose(np.roll(tp[1]["values"], 36, axis=1) * 1000,
                               fields.precip_mm[1, 1], atol=atol)


def test_gefs_corrupt_message_fails_to_decode_but_the_index_holds(tmp_path):
    files = make_gefs_cycle(tmp_path, members=2, steps=[9], corrupt=(1, 9))
    good, bad = files
    data = bad.read_bytes()
    first, second = index_of(bad, gefs_idx_path(bad))
    assert (first.param, second.param) == ("APCP", "TMP")
    assert first.offset == 0 and second.offset + second.length == len(data)
    assert data[first.offset:first.offset + 4] == data[second.offset:second.offset + 4] == b"GRIB"
    with pytest.raises(eccodes.CodesInternalError):
        decode(data[first.offset:first.offset + first.length])
    assert decode(data[second.offset:second.offset + second.length]).min() > 200
    # the same message, intact, in the other member's file decodes
    assert decode(good.read_bytes()[:index_of(good, gefs_idx_path(good))[0].length]).max() > 0


def test_gefs_missing_member_leaves_no_files(tmp_path):
    files = make_gefs_cycle(tmp_path, members=3, steps=[0, 3], missing_members=[2])
    names = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 4 and not [n for n in names if n.startswith("gep02")]
    assert "gep01.t00z.pgrb2s.0p25.f003.idx" in names
    assert not gefs_path(tmp_path, CYCLE, 2, 3).exists()


# --------------------------------------------------------------------------- ECMWF


def test_ecmwf_layout(ecmwf):
    root, files = ecmwf
    base = root / "20250101" / "00z" / "ifs" / "0p25" / "enfo"
    assert files == [base / f"20250101000000-{s}h-enfo-ef.grib2" for s in ECMWF_STEPS]
    assert files == [ecmwf_path(root, CYCLE, s) for s in ECMWF_STEPS]
    on_disk = {p for p in root.rglob("*") if p.is_file()}
    assert on_disk == set(files) | {base / f"20250101000000-{s}h-enfo-ef.index"
                                    for s in ECMWF_STEPS}


def test_ecmwf_index_lines_match_the_messages(ecmwf):
    root, files = ecmwf
    for step, path in zip(ECMWF_STEPS, files, strict=True):
        sidecar = ecmwf_index_path(path)
        entries = index_of(path, sidecar)
        messages = scan(path)
        assert [(e.offset, e.length) for e in entries] == [
            (m["offset"], m["length"]) for m in messages]
        assert [(e.param, e.keys["type"], e.keys.get("number")) for e in entries] == [
            (p, t, n) for p in ("tp", "2t")
            for t, n in (("cf", None), ("pf", "1"), ("pf", "2"))]
        for e, m in zip(entries, messages, strict=True):
            assert (m["shortName"], m["marsType"], m["dataType"]) == (
                e.param, e.keys["type"], e.keys["type"])
            assert m["perturbationNumber"] == int(e.keys.get("number", 0))
            assert m["centre"] == 98 and e.level == "sfc"
            assert e.keys["step"] == str(step)
            assert {k: e.keys[k] for k in ("domain", "date", "time", "expver", "class",
                                           "stream")} == {
                "domain": "g", "date": "20250101", "time": "0000", "expver": "0001",
                "class": "od", "stream": "enfo"}
            if e.param == "tp":
                assert m["stepRange"] == (f"0-{step}" if step else "0")
                assert m["stepType"] == "accum"
            else:
                assert m["stepRange"] == str(step)
        # key order, exactly as ECMWF writes it
        lines = [json.loads(line) for line in sidecar.read_text().splitlines()]
        assert list(lines[0]) == ["domain", "date", "time", "expver", "class", "type",
                                  "stream", "step", "levtype", "param", "_offset", "_length"]
        assert list(lines[1])[8:10] == ["levtype", "number"]


def test_ecmwf_grid_starts_at_180_and_tp_starts_at_zero(ecmwf):
    root, files = ecmwf
    messages = scan(files[0])
    m = messages[0]
    assert (m["Ni"], m["Nj"], m["jScansPositively"]) == (72, 37, "0")
    assert m["longitudeOfFirstGridPointInDegrees"] == 180
    assert m["longitudeOfLastGridPointInDegrees"] == 175
    assert m["lats"][0] == 90 and m["lats"][-1] == -90
    assert all(not msg["values"].any() for msg in messages if msg["shortName"] == "tp")


def test_ecmwf_tp_is_the_gefs_accumulation_in_metres(ecmwf, gefs):
    root, files = ecmwf
    tp = [m for m in scan(files[2]) if m["shortName"] == "tp"]  # step 12
    assert tp[0]["stepRange"] == "0-12"
    gefs_root, _ = gefs
    for member in range(3):
        gefs_total = gefs_apcp(gefs_root, member, 6) + gefs_apcp(gefs_root, member, 12)
        # ECMWF's grid starts at 180 degrees, GEFS's at 0: 36 columns of 5 degrees apart
        np.testing.assert_allclose(np.roll(tp[member]["values"], 36, axis=1) * 1000,
                                   gefs_total, atol=0.01)
        assert gefs_total.max() > 10


def test_ecmwf_without_control_missing_members_and_corruption(tmp_path):
    files = make_ecmwf_cycle(tmp_path, members=4, steps=[0, 6], params=("tp",),
                             control=False, missing_members=[2], missing_steps=[0],
                             corrupt=(3, 6))
    (path,) = files
    assert path.name == "20250101000000-6h-enfo-ef.grib2"
    entries = index_of(path, ecmwf_index_path(path))
    assert [(e.keys["type"], e.keys["number"]) for e in entries] == [("pf", "1"), ("pf", "3")]
    data = path.read_bytes()
    ok, bad = (data[e.offset:e.offset + e.length] for e in entries)
    assert decode(ok).max() > 0
    with pytest.raises(eccodes.CodesInternalError):
        decode(bad)
    assert entries[1].offset + entries[1].length == len(data)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown GEFS"):
        make_gefs_cycle(tmp_path, variables=("UGRD",))
    with pytest.raises(ValueError, match="packing"):
        make_gefs_cycle(tmp_path, packing="grid_second_order")
    with pytest.raises(ValueError, match="whole number"):
        make_gefs_cycle(tmp_path, grid=7.0)
    with pytest.raises(ValueError, match="global"):
        make_ecmwf_cycle(tmp_path, grid=(1.0, (0, 10), (0, 10)))
    with pytest.raises(ValueError, match="YYYYMMDDHH"):
        make_ecmwf_cycle(tmp_path, cycle="2025-01-01")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- upload


@pytest.mark.s3
def test_upload_to_s3(s3_server, tmp_path):
    make_gefs_cycle(tmp_path, members=2, steps=[0, 3])
    make_ecmwf_cycle(tmp_path, members=2, steps=[0])
    local = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    s3_server.create_bucket("synthetic-grib")
    count = upload(tmp_path, "s3://synthetic-grib/cycles/", s3_server.storage_options)
    assert count == len(local) == 10
    listed = s3_server.client().list_objects_v2(Bucket="synthetic-grib", Prefix="cycles/")
    remote = {o["Key"]: o["Size"] for o in listed["Contents"]}
    assert remote == {f"cycles/{p.relative_to(tmp_path).as_posix()}": p.stat().st_size
                      for p in local}
    key = "cycles/gefs.20250101/00/atmos/pgrb2sp25/gep01.t00z.pgrb2s.0p25.f003.idx"
    body = s3_server.client().get_object(Bucket="synthetic-grib", Key=key)["Body"].read()
    assert body == (tmp_path / key.removeprefix("cycles/")).read_bytes()
