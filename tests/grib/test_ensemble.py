"""GEFS and ECMWF cycles: parsers from the indexes, Icechunk ingest, accumulation, exceedance.

The oracle is eccodes: every value read through zarrport is compared with eccodes'
decoding of the same message, placed on the grid by eccodes' own per-point latitudes and
longitudes (so the layout -- flips, longitude roll -- is checked independently).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import eccodes
import numpy as np
import pytest
import xarray as xr

import zarrport
from zarrport import storage
from zarrport.errors import CorruptSourceError, IncompatibleSourcesError, SourceNotFoundError
from zarrport.grib import ECMWFParser, GEFSParser
from zarrport.grib.analyze import exceedance
from zarrport.grib.ingest import ingest_cycle
from zarrport.testing.grib_synthetic import make_ecmwf_cycle, make_gefs_cycle, upload

STEPS = tuple(range(0, 25, 3))  # GEFS: 0, 3, ... 24
HOUR = np.timedelta64(1, "h")


# --------------------------------------------------------------------------- oracle


def _messages(path: Path) -> list[tuple[int, int, dict, np.ndarray, np.ndarray, np.ndarray]]:
    """Every message of a file: offset, length, keys, values (NaN missing), lats, lons."""
    out = []
    with open(path, "rb") as f:
        while True:
            h = eccodes.codes_grib_new_from_file(f)
            if h is None:
                break
            try:
                keys = {k: eccodes.codes_get(h, k) for k in (
                    "shortName", "stepRange", "endStep", "offset", "totalLength")}
                keys["number"] = (eccodes.codes_get(h, "perturbationNumber")
                                  if eccodes.codes_is_defined(h, "perturbationNumber") else 0)
                vals = eccodes.codes_get_values(h).astype(np.float64)
                if eccodes.codes_get(h, "bitmapPresent"):
                    vals[eccodes.codes_get_array(h, "bitmap") == 0] = np.nan
                lats = eccodes.codes_get_array(h, "latitudes")
                lons = eccodes.codes_get_array(h, "longitudes")
            finally:
                eccodes.codes_release(h)
            out.append((keys["offset"], keys["totalLength"], keys, vals, lats, lons))
    return out


def _place(vals: np.ndarray, lats: np.ndarray, lons: np.ndarray, lat: np.ndarray,
           lon: np.ndarray) -> np.ndarray:
    """eccodes' values put on zarrport's (lat, lon) axes by their own coordinates."""
    wrapped = (lons + 180.0) % 360.0 - 180.0
    i = np.searchsorted(lat, lats)
    j = np.searchsorted(lon, wrapped)
    assert np.allclose(lat[i], lats) and np.allclose(lon[j], wrapped)
    out = np.full((lat.size, lon.size), np.nan)
    out[i, j] = vals
    return out


def _gefs_oracle(root: Path, cycle: str, members: int, steps=STEPS) -> dict:
    """{(var, member, step_hours): values} decoded by eccodes from the GEFS files."""
    day, hh = cycle[:8], cycle[8:]
    folder = root / f"gefs.{day}" / hh / "atmos" / "pgrb2sp25"
    out = {}
    for m in range(members):
        for s in steps:
            path = folder / f"{'gec' if m == 0 else 'gep'}{m:02d}.t{hh}z.pgrb2s.0p25.f{s:03d}"
            if not path.exists():
                continue
            for _o, _n, keys, vals, lats, lons in _messages(path):
                out[(keys["shortName"], m, s)] = (vals, lats, lons)
    return out


def _gefs_url(root: Path, cycle: str) -> str:
    return f"file://{root}/gefs.{cycle[:8]}/{cycle[8:]}"


def _assert_equal_to_oracle(da: xr.DataArray, oracle: dict, short: str,
                            init_index: int = 0) -> int:
    lat, lon = da["latitude"].values, da["longitude"].values
    checked = 0
    for m in da["member"].values:
        for st in da["step"].values:
            key = (short, int(m), int(st / HOUR))
            got = da.sel(member=m, step=st).isel(init_time=init_index).values
            if key not in oracle:
                assert np.isnan(got).all(), f"{key}: no message, but values"
                continue
            want = _place(*oracle[key], lat, lon).astype(da.dtype)
            np.testing.assert_array_equal(got, want, err_msg=str(key))
            checked += 1
    return checked


# --------------------------------------------------------------------------- parsers


@pytest.fixture(scope="module")
def gefs_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gefs")
    make_gefs_cycle(root, "2025010100", members=3, steps=STEPS)
    make_gefs_cycle(root, "2025010106", members=3, steps=STEPS, seed=1)
    return root


@pytest.fixture(scope="module")
def ecmwf_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ecmwf")
    make_ecmwf_cycle(root, "2025010100", members=4, steps=range(0, 25, 6))
    make_ecmwf_cycle(root, "2025010112", members=4, steps=range(0, 25, 6), seed=2)
    return root


def test_gefs_parser_is_a_virtualizarr_parser(gefs_root):
    from virtualizarr.parsers.typing import Parser

    parser = GEFSParser(variables={"tp": "APCP:surface", "t2m": "TMP:2 m above ground"})
    assert isinstance(parser, Parser)
    url = _gefs_url(gefs_root, "2025010100")
    store = parser(url, storage.object_store_registry([url]))
    ds = xr.open_zarr(store, consolidated=False, zarr_format=3)
    assert ds["tp"].dims == ("init_time", "member", "step", "latitude", "longitude")
    assert ds.sizes == {"init_time": 1, "member": 3, "step": 9, "latitude": 37,
                        "longitude": 72}
    assert np.all(np.diff(ds["latitude"].values) > 0)  # south to north
    lon = ds["longitude"].values
    assert lon[0] == -180.0 and lon[-1] == 175.0 and np.all(np.diff(lon) > 0)
    assert ds["step"].dtype.kind == "m" and ds["step"].values[1] == 3 * HOUR
    assert ds["init_time"].values[0] == np.datetime64("2025-01-01T00:00")
    oracle = _gefs_oracle(gefs_root, "2025010100", 3)
    # stored buckets, exactly what eccodes decodes; no APCP at step 0 -> NaN
    assert _assert_equal_to_oracle(ds["tp"], oracle, "tp") == 3 * 8
    assert _assert_equal_to_oracle(ds["t2m"], oracle, "2t") == 3 * 9


def test_gefs_manifest_reads_nothing_but_indexes_and_one_message(gefs_root, monkeypatch):
    """The manifest comes from the .idx files; one message is read for the grid."""
    from zarrport.grib import fetch

    ranges = []
    real = fetch.Fetcher.get_range

    def counting(self, url, offset, length):
        ranges.append((url, offset, length))
        return real(self, url, offset, length)

    monkeypatch.setattr(fetch.Fetcher, "get_range", counting)
    url = _gefs_url(gefs_root, "2025010100")
    built = GEFSParser(members=3).build(url, storage.object_store_registry([url]))
    assert len(ranges) == 1
    assert built.dataset.variables["tp"].refs.count == 3 * 8


def test_ecmwf_parser_control_is_member_zero(ecmwf_root):
    url = f"file://{ecmwf_root}/20250101/00z/ifs/0p25/enfo"
    parser = ECMWFParser(params=("tp", "2t"))
    ds = xr.open_zarr(parser(url, storage.object_store_registry([url])), consolidated=False,
                      zarr_format=3)
    assert list(ds["member"].values) == [0, 1, 2, 3]
    assert ds["longitude"].values[0] == -180.0  # ECMWF writes it as 180
    assert np.all(np.diff(ds["latitude"].values) > 0)
    oracle = {}
    for path in sorted((ecmwf_root / "20250101/00z/ifs/0p25/enfo").glob("*.grib2")):
        for _o, _n, keys, vals, lats, lons in _messages(path):
            oracle[(keys["shortName"], keys["number"], int(keys["endStep"]))] = (
                vals, lats, lons)
    assert _assert_equal_to_oracle(ds["tp"], oracle, "tp") == 4 * 5
    assert _assert_equal_to_oracle(ds["2t"], oracle, "2t") == 4 * 5
    assert ds["tp"].attrs["units"] == "m"


# --------------------------------------------------------------------------- ingest


def test_gefs_two_cycles_from_s3_one_commit_each(s3_server, gefs_root, tmp_path):
    import icechunk

    bucket = s3_server.create_bucket("gefs-archive")
    upload(gefs_root, f"{bucket}mirror", s3_server.storage_options)
    so = s3_server.storage_options
    repo = str(tmp_path / "gefs.icechunk")
    variables = {"tp": "APCP:surface", "t2m": "TMP:2 m above ground"}
    r0 = ingest_cycle("gefs", f"{bucket}mirror/gefs.20250101/00", repo, variables=variables,
                      storage_options=so)
    r1 = ingest_cycle("gefs", f"{bucket}mirror/gefs.20250101/06", repo, variables=variables,
                      storage_options=so)
    again = ingest_cycle("gefs", f"{bucket}mirror/gefs.20250101/00", repo,
                         variables=variables, storage_options=so)
    assert (r0.status, r1.status, again.status) == ("created", "appended", "unchanged")
    assert again.snapshot is None and r0.chunks == 3 * 8 + 3 * 9
    ic = icechunk.Repository.open(storage.icechunk_storage(repo))
    assert set(ic.list_tags()) == {"cycle-2025010100", "cycle-2025010106"}
    history = list(ic.ancestry(branch="main"))
    assert len(history) == 3  # repository creation + one commit per cycle
    assert "2025-01-01T06Z" in history[0].message

    ds = zarrport.open_dataset(repo, storage_options=so, accumulate=False)
    assert ds["tp"].dims == ("init_time", "member", "step", "latitude", "longitude")
    assert ds.sizes["init_time"] == 2
    for k, cycle in enumerate(("2025010100", "2025010106")):
        oracle = _gefs_oracle(gefs_root, cycle, 3)
        assert _assert_equal_to_oracle(ds["tp"], oracle, "tp", k) == 24
        assert _assert_equal_to_oracle(ds["t2m"], oracle, "2t", k) == 27
    # the tag reads the repository as it was when that cycle landed
    first = xr.open_zarr(ic.readonly_session(tag="cycle-2025010100").store,
                         consolidated=False, zarr_format=3)
    assert first.sizes["init_time"] == 1
    # exceedance over S3, against numpy on eccodes' decoding: the 24 h total at 24 h is the
    # sum of the GEFS buckets 18-24, 12-18, 6-12, 0-6, in that order
    prob = exceedance(repo, bbox="-60,-40,60,40", storage_options=so).compute()["probability"]
    lat, lon = ds["latitude"].values, ds["longitude"].values
    for k, cycle in enumerate(("2025010100", "2025010106")):
        oracle = _gefs_oracle(gefs_root, cycle, 3)
        totals = []
        for m in range(3):
            b = {s: _place(*oracle[("tp", m, s)], lat, lon).astype(np.float32)
                 for s in (6, 12, 18, 24)}
            totals.append(((b[24] + b[18]) + b[12]) + b[6])
        box = np.stack(totals)[:, 10:27, 24:49]  # latitude -40..40, longitude -60..60
        want = (box > 50).sum(axis=0) / 3 * 100.0
        np.testing.assert_allclose(prob.values[k, -1], want.astype(np.float32), rtol=1e-6)
    assert float(prob.max()) == 100.0


def test_anonymous_public_bucket_through_the_cli(s3_server, tmp_path):
    """--anon: no credentials at all, as for noaa-gefs-pds; the repository's virtual chunk
    container is anonymous too, so a reader needs no credentials either."""
    src = tmp_path / "src"
    make_gefs_cycle(src, "2025010100", members=2, steps=range(0, 13, 6))
    bucket = s3_server.create_bucket("public-gefs")
    upload(src, bucket, s3_server.storage_options)
    client = s3_server.client()
    for obj in client.list_objects_v2(Bucket="public-gefs")["Contents"]:
        client.put_object_acl(Bucket="public-gefs", Key=obj["Key"], ACL="public-read")
    repo = str(tmp_path / "anon.icechunk")
    endpoint = f"endpoint_url={s3_server.endpoint_url}"
    out = _cli("grib", "ingest", "gefs", f"{bucket}gefs.20250101/00", "-o", repo, "--anon",
               "--storage-option", endpoint)
    assert out.returncode == 0, out.stderr
    ds = zarrport.open_dataset(repo, accumulate=False, storage_options={
        "anon": True, "endpoint_url": s3_server.endpoint_url})
    oracle = _gefs_oracle(src, "2025010100", 2, steps=(0, 6, 12))
    assert _assert_equal_to_oracle(ds["tp"], oracle, "tp") == 2 * 2


def test_gefs_accumulation_from_start_hand_computed(gefs_root, tmp_path):
    repo = str(tmp_path / "acc.icechunk")
    ingest_cycle("gefs", _gefs_url(gefs_root, "2025010100"), repo)
    ds = zarrport.open_dataset(repo)
    assert ds["tp"].chunks is not None  # lazy, with Dask
    oracle = _gefs_oracle(gefs_root, "2025010100", 3)
    lat, lon = ds["latitude"].values, ds["longitude"].values

    def bucket(m, s):
        return _place(*oracle[("tp", m, s)], lat, lon).astype(np.float32)

    # tp only: GEFS has no APCP at f000, so the steps start at 3 h
    assert list(ds["tp_window_start"].values) == [0, 0, 6, 6, 12, 12, 18, 18]
    for m in range(3):
        got = ds["tp"].isel(init_time=0, member=m)
        np.testing.assert_array_equal(got.sel(step=3 * HOUR).values, bucket(m, 3))
        np.testing.assert_array_equal(got.sel(step=6 * HOUR).values, bucket(m, 6))
        # 6-9 h bucket + 0-6 h bucket; 18-24 + 12-18 + 6-12 + 0-6
        np.testing.assert_array_equal(got.sel(step=9 * HOUR).values,
                                      bucket(m, 9) + bucket(m, 6))
        want24 = bucket(m, 24) + (bucket(m, 18) + (bucket(m, 12) + bucket(m, 6)))
        np.testing.assert_allclose(got.sel(step=24 * HOUR).values, want24, rtol=1e-6)
    # with a variable present at step 0, tp's step 0 is a zero accumulation, not NaN
    repo2 = str(tmp_path / "acc2.icechunk")
    ingest_cycle("gefs", _gefs_url(gefs_root, "2025010100"), repo2,
                 variables={"tp": "APCP:surface", "t2m": "TMP:2 m above ground"})
    raw = zarrport.open_dataset(repo2, accumulate=False)
    assert np.isnan(raw["tp"].isel(step=0).values).all()
    acc = zarrport.open_dataset(repo2)
    assert (acc["tp"].isel(step=0).values == 0).all()
    np.testing.assert_array_equal(acc["tp"].sel(step=24 * HOUR).values,
                                  ds["tp"].sel(step=24 * HOUR).values)


def test_ecmwf_two_cycles_from_s3_exceedance_matches_numpy(s3_server, ecmwf_root, tmp_path):
    bucket = s3_server.create_bucket("ecmwf-open-data")
    upload(ecmwf_root, bucket, s3_server.storage_options)
    so = s3_server.storage_options
    repo = str(tmp_path / "ens.icechunk")
    r0 = ingest_cycle("ecmwf", f"{bucket}20250101/00z/ifs/0p25/enfo", repo,
                      storage_options=so)
    r1 = ingest_cycle("ecmwf", f"{bucket}20250101/12z/ifs/0p25/enfo", repo,
                      storage_options=so)
    assert (r0.status, r1.status, r1.tag) == ("created", "appended", "cycle-2025010112")
    bbox = (-40.0, -30.0, 60.0, 50.0)
    result = exceedance(repo, var="tp", window="24h", threshold="50mm", bbox=bbox,
                        storage_options=so).compute()
    prob = result["probability"]
    assert prob.dims == ("init_time", "step", "latitude", "longitude")
    assert list(prob["step"].values) == [24 * HOUR]
    lat, lon = prob["latitude"].values, prob["longitude"].values
    assert lat[0] == -30 and lat[-1] == 50 and lon[0] == -40 and lon[-1] == 60
    # numpy on eccodes' decoding of the files: tp in metres from the start, so the 24 h
    # total is acc(24 h) - acc(0); 50 mm = 0.05 m
    for k, hh in enumerate(("00", "12")):
        folder = ecmwf_root / "20250101" / f"{hh}z" / "ifs" / "0p25" / "enfo"
        acc = {}
        for path in sorted(folder.glob("*.grib2")):
            for _o, _n, keys, vals, lats, lons in _messages(path):
                if keys["shortName"] == "tp":
                    grid = _place(vals, lats, lons, np.arange(-90.0, 90.1, 5.0),
                                  np.arange(-180.0, 180.0, 5.0))
                    acc[(keys["number"], int(keys["endStep"]))] = grid.astype(np.float32)
        members = sorted({m for m, _ in acc})
        total = np.stack([acc[(m, 24)] - acc[(m, 0)] for m in members])
        box = total[:, 12:29, 28:49]  # latitude -30..50, longitude -40..60 (5 degrees)
        want = (box > np.float32(0.05)).sum(axis=0) / len(members) * 100.0
        np.testing.assert_allclose(prob.values[k, 0], want.astype(np.float32), rtol=1e-6)
    assert prob.min() == 0 and prob.max() == 100  # not a trivial field
    assert ((prob > 0) & (prob < 100)).any()


def test_exceedance_reads_only_the_messages_it_needs(s3_server, gefs_root, tmp_path):
    """Through a recording proxy: reading P(24h tp > 50mm) over a box fetches exactly the
    tp messages of the two steps the window needs, per member -- no temperature, no other
    step."""
    from faultproxy import FaultProxy

    bucket = s3_server.create_bucket("gefs-region")
    upload(gefs_root / "gefs.20250101" / "00", f"{bucket}gefs.20250101/00",
           s3_server.storage_options)
    with FaultProxy(s3_server.endpoint_url, rate=0.0) as proxy:
        so = dict(s3_server.storage_options, endpoint_url=proxy.endpoint_url)
        repo = str(tmp_path / "region.icechunk")
        ingest_cycle("gefs", f"{bucket}gefs.20250101/00", repo, storage_options=so,
                     variables={"tp": "APCP:surface", "t2m": "TMP:2 m above ground"})
        proxy.reset_counters()
        exceedance(repo, bbox="-30,-20,30,20", storage_options=so).compute()
        reads = [(p, r) for m, p, r in proxy.log if m == "GET" and r]
    files = sorted({p.split("/")[-1].split("?")[0] for p, _ in reads})
    # acc(24h) = [18-24] + [12-18] + [6-12] + [0-6]; acc(0) is zero: 4 buckets x 3 members
    assert len(files) == 4 * 3, files
    assert {f.rsplit(".", 1)[-1] for f in files} == {"f006", "f012", "f018", "f024"}
    # every byte read lies inside the file's APCP message (Icechunk may split one message
    # into several range requests); the temperature message after it is never touched
    folder = gefs_root / "gefs.20250101" / "00" / "atmos" / "pgrb2sp25"
    for path, rng in reads:
        name = path.split("/")[-1].split("?")[0]
        lines = (folder / f"{name}.idx").read_text().splitlines()
        assert lines[0].split(":")[3] == "APCP"
        apcp_end = int(lines[1].split(":")[1])
        first, last = (int(x) for x in rng.split("=")[1].split("-"))
        assert 0 <= first <= last < apcp_end, (name, rng)


# --------------------------------------------------------------------------- bad input


def _copy_cycle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_idx_offsets_past_end_of_file(gefs_root, tmp_path):
    root = _copy_cycle(gefs_root / "gefs.20250101" / "00",
                       tmp_path / "g" / "gefs.20250101" / "00")
    idx = root / "atmos/pgrb2sp25/gep01.t00z.pgrb2s.0p25.f006.idx"
    lines = idx.read_text().splitlines()
    n, _off, rest = lines[-1].split(":", 2)
    lines[-1] = f"{n}:99999999:{rest}"
    idx.write_text("\n".join(lines) + "\n")
    url = f"file://{root}"
    with pytest.raises(CorruptSourceError, match=r"gep01.*f006\.idx: message 2 starts "
                       r"at byte 99999999, past the end"):
        GEFSParser().build(url, storage.object_store_registry([url]))


def test_index_for_another_file(gefs_root, ecmwf_root, tmp_path):
    root = _copy_cycle(gefs_root / "gefs.20250101" / "00",
                       tmp_path / "g" / "gefs.20250101" / "00")
    folder = root / "atmos/pgrb2sp25"
    shutil.copy(folder / "gep01.t00z.pgrb2s.0p25.f003.idx",
                folder / "gep01.t00z.pgrb2s.0p25.f009.idx")
    url = f"file://{root}"
    with pytest.raises(CorruptSourceError, match=r"f009\.idx: message 1 is for '0-3 hour acc "
                       r"fcst', the file name says f009 \(is the index for another file"):
        GEFSParser().build(url, storage.object_store_registry([url]))
    ens = _copy_cycle(ecmwf_root / "20250101" / "00z", tmp_path / "e" / "20250101" / "00z")
    enfo = ens / "ifs/0p25/enfo"
    shutil.copy(enfo / "20250101000000-6h-enfo-ef.index", enfo / "20250101000000-12h-enfo-ef.index")
    url = f"file://{enfo}"
    with pytest.raises(CorruptSourceError, match=r"12h-enfo-ef\.index: line 1 is for step 6"):
        ECMWFParser().build(url, storage.object_store_registry([url]))


def test_missing_member_reads_nan_only_there_and_is_reported(tmp_path):
    root = tmp_path / "src"
    make_gefs_cycle(root, "2025010100", members=3, steps=STEPS, missing_members=[1])
    repo = str(tmp_path / "m.icechunk")
    result = ingest_cycle("gefs", _gefs_url(root, "2025010100"), repo, members=3)
    assert result.missing == [f"member 1 step {s}h: no file in "
                              f"file://{root}/gefs.20250101/00/atmos/pgrb2sp25/" for s in STEPS]
    ds = zarrport.open_dataset(repo, accumulate=False)
    assert np.isnan(ds["tp"].sel(member=1).values).all()
    oracle = _gefs_oracle(root, "2025010100", 3)
    assert _assert_equal_to_oracle(ds["tp"].sel(member=[0, 2]), oracle, "tp") == 2 * 8
    # the probability counts the members that are there
    res = exceedance(repo, window="24h", threshold="50mm").compute()
    assert int(res["members"].max()) == 2


def test_corrupted_message_refused_naming_file_and_message(tmp_path):
    root = tmp_path / "src"
    make_gefs_cycle(root, "2025010100", members=3, steps=STEPS, corrupt=(2, 12, "APCP"))
    repo = tmp_path / "c.icechunk"
    with pytest.raises(CorruptSourceError, match=r"gep02\.t00z\.pgrb2s\.0p25\.f012: the "
                       r"message at bytes 0\.\.\d+ does not end with 7777"):
        ingest_cycle("gefs", _gefs_url(root, "2025010100"), str(repo))
    assert not repo.exists()  # nothing written


def test_incompatible_and_out_of_order_cycles_refused(gefs_root, tmp_path):
    import icechunk

    repo = str(tmp_path / "x.icechunk")
    ingest_cycle("gefs", _gefs_url(gefs_root, "2025010106"), repo)
    with pytest.raises(IncompatibleSourcesError, match="older than the newest"):
        ingest_cycle("gefs", _gefs_url(gefs_root, "2025010100"), repo)
    other = tmp_path / "other"
    make_gefs_cycle(other, "2025010112", members=2, steps=STEPS)
    with pytest.raises(IncompatibleSourcesError, match="member differs"):
        ingest_cycle("gefs", _gefs_url(other, "2025010112"), repo)
    ic = icechunk.Repository.open(storage.icechunk_storage(repo))
    assert len(list(ic.ancestry(branch="main"))) == 2  # nothing committed by the refusals
    with pytest.raises(SourceNotFoundError, match="no such directory: .*gefs.20250101/18"):
        ingest_cycle("gefs", _gefs_url(gefs_root, "2025010118"), repo)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zarrport", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_ingest_and_exceedance(gefs_root, tmp_path):
    repo = str(tmp_path / "cli.icechunk")
    out = _cli("grib", "ingest", "gefs", str(gefs_root / "gefs.20250101" / "00"), "-o", repo,
               "--members", "3", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["status"] == "created" and data["tag"] == "cycle-2025010100"
    text = _cli("grib", "ingest", "gefs", str(gefs_root / "gefs.20250101" / "06"), "-o", repo)
    assert text.returncode == 0 and "appended to" in text.stdout
    res = _cli("analyze", "exceedance", repo, "--bbox", "-60,-40,60,40", "-o",
               str(tmp_path / "p.nc"))
    assert res.returncode == 0, res.stderr
    assert "P(24h tp > 50mm) over 3 members" in res.stdout
    with xr.open_dataset(tmp_path / "p.nc") as p:
        assert p["probability"].dims == ("init_time", "step", "latitude", "longitude")
        assert float(p["probability"].max()) == 100.0


@pytest.mark.parametrize("args,code,message", [
    (["grib", "ingest", "gefs", "/nonexistent/gefs.20250101/00", "-o", "{tmp}/r"], 3,
     "no such directory"),
    (["grib", "ingest", "gefs", "{gefs}", "-o", "{tmp}/r", "--steps", "x-y"], 2,
     "--steps 'x-y'"),
    (["grib", "ingest", "gefs", "{gefs}", "-o", "{tmp}/r", "--var", "tp"], 2,
     "--var 'tp': use NAME=PARAM:level"),
    (["analyze", "exceedance", "{repo}", "--bbox", "10,20,30", "-o", "{tmp}/o.zarr"], 2,
     "bbox '10,20,30' is not W,S,E,N"),
    (["analyze", "exceedance", "{repo}", "--threshold", "50K", "-o", "{tmp}/o.zarr"], 2,
     "threshold in 'K' but tp is in 'kg m-2'"),
    (["analyze", "exceedance", "{repo}", "--window", "5h", "-o", "{tmp}/o.zarr"], 2,
     "no two steps are 5 h apart"),
    (["analyze", "exceedance", "{repo}", "--var", "nope", "-o", "{tmp}/o.zarr"], 2,
     "no variable 'nope'"),
    (["analyze", "exceedance", "{repo}", "-o", "{repo}"], 6, "exists"),
])
def test_cli_bad_input_one_line(gefs_root, tmp_path, args, code, message):
    repo = tmp_path / "repo.icechunk"
    ingest_cycle("gefs", _gefs_url(gefs_root, "2025010100"), str(repo))
    subs = {"{tmp}": str(tmp_path), "{gefs}": str(gefs_root / "gefs.20250101" / "00"),
            "{repo}": str(repo)}
    argv = []
    for a in args:
        for k, v in subs.items():
            a = a.replace(k, v)
        argv.append(a)
    out = _cli(*argv)
    assert out.returncode == code, (out.stdout, out.stderr)
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.zarr").exists() and not (tmp_path / "r").exists()


def test_source_rewritten_after_ingest_is_refused_not_read(tmp_path):
    """Icechunk records each file's modification time (ETag on object stores); a cycle
    file rewritten after ingest is named in one line, and no result is written."""
    import os

    src = tmp_path / "src"
    make_gefs_cycle(src, "2025010100", members=2, steps=range(0, 25, 6))
    repo = str(tmp_path / "r.icechunk")
    ingest_cycle("gefs", _gefs_url(src, "2025010100"), repo)
    rewritten = make_gefs_cycle(src, "2025010100", members=2, steps=range(0, 25, 6), seed=9)
    later = os.stat(rewritten[0]).st_mtime + 10
    for path in rewritten:
        os.utime(path, (later, later))
    # several runs: reads still in flight in Dask's threads when one fails must end before
    # the process exits (it once died at finalization now and then, exit -6)
    for _ in range(6):
        out = _cli("analyze", "exceedance", repo, "-o", str(tmp_path / "p.nc"))
        assert out.returncode == 7, out.stderr
        assert "changed after it was referenced" in out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "p.nc").exists()


def test_multi_field_message_in_an_index_is_refused(gefs_root, tmp_path):
    from zarrport.errors import UnsupportedVariableError

    root = _copy_cycle(gefs_root / "gefs.20250101" / "00",
                       tmp_path / "g" / "gefs.20250101" / "00")
    idx = root / "atmos/pgrb2sp25/gec00.t00z.pgrb2s.0p25.f006.idx"
    lines = idx.read_text().splitlines()
    assert lines[0].startswith("1:0:") and ":APCP:" in lines[0]
    lines[0] = "1.1" + lines[0][1:]
    lines.insert(1, "1.2" + lines[0][3:].replace(":APCP:", ":ACPCP:"))
    idx.write_text("\n".join(lines) + "\n")
    url = f"file://{root}"
    with pytest.raises(UnsupportedVariableError, match=r"gec00\.t00z\.pgrb2s\.0p25\.f006: "
                       r"APCP:surface is field 1 of the multi-field message 1"):
        GEFSParser().build(url, storage.object_store_registry([url]))
