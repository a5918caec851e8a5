"""``zarrport plan`` / ``zarrport convert``: plans, source-aware jobs, the written store
against netCDF4's reading of the sources, resume, validation, clusters and bad input."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr

import zarrport
from zarrport.cli import main
from zarrport.convert.jobs import make_jobs, regions
from zarrport.convert.plan import (
    WORKER_BASELINE,
    Plan,
    PlanError,
    footprint,
    make_plan,
    plan_variable,
    region_shape,
)
from zarrport.convert.writer import convert, is_incomplete
from zarrport.errors import (
    IncompleteOutputError,
    OutputExistsError,
    SourceChangedError,
    VerificationError,
)
from zarrport.testing.samples import write_cmip6_archive, write_cmip6_span

MB = 2**20


def run_cli(*args: str) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "zarrport", *args], capture_output=True,
                          text=True, timeout=300, env=_env())
    return proc.returncode, proc.stdout, proc.stderr


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(zarrport.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def oracle(paths: list[Path], var: str) -> np.ndarray:
    """``var`` over ``paths`` (concatenated in time) as netCDF4 decodes it: NaN where masked."""
    parts = []
    for p in paths:
        with netCDF4.Dataset(p) as nc:
            parts.append(np.ma.filled(nc[var][:].astype("f8"), np.nan))
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("archive")
    return write_cmip6_archive(d, years=range(2015, 2017), nlat=24, nlon=48, time_chunk=1)


@pytest.fixture(scope="module")
def repo(archive, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("repo") / "tas.icechunk"
    main(["virtualize", *map(str, archive), "-o", str(out), "--concat-dim", "time"])
    return str(out)


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    """A NetCDF-4 file of int16 packed with scale_factor/add_offset and a _FillValue,
    chunked (5, 8, 16): what the default (encoded) conversion must carry over as it is."""
    p = tmp_path_factory.mktemp("packed") / "packed.nc"
    rng = np.random.default_rng(3)
    with netCDF4.Dataset(p, "w") as nc:
        nc.createDimension("time", 40)
        nc.createDimension("lat", 16)
        nc.createDimension("lon", 32)
        t = nc.createVariable("time", "f8", ("time",))
        t.units, t.calendar, t.axis = "days since 2000-01-01", "360_day", "T"
        t[:] = np.arange(40)
        la = nc.createVariable("lat", "f4", ("lat",))
        la.units, la[:] = "degrees_north", np.linspace(-75, 75, 16)
        lo = nc.createVariable("lon", "f4", ("lon",))
        lo.units, lo[:] = "degrees_east", np.linspace(0, 348.75, 32)
        v = nc.createVariable("pr", "i2", ("time", "lat", "lon"), chunksizes=(5, 8, 16),
                              zlib=True, fill_value=np.int16(-32767))
        v.scale_factor, v.add_offset, v.units = np.float32(0.01), np.float32(100.0), "mm"
        v.set_auto_maskandscale(False)
        raw = rng.integers(-3000, 3000, size=(40, 16, 32)).astype("i2")
        raw[raw % 17 == 0] = -32767
        v[:] = raw
    return p


# --------------------------------------------------------------------------- the planner


def _counts(shape, chunks, sel):
    return math.prod(-(-s // c) for s, c in zip(sel, chunks, strict=True))


@pytest.mark.parametrize("pattern", ["timeseries", "spatial", "balanced", "auto"])
@pytest.mark.parametrize("shards", [False, True])
def test_plan_geometry_and_read_costs(repo, pattern, shards):
    ds = zarrport.open_dataset(repo, decode_times=False, mask_and_scale=False)
    plan = make_plan(ds, repo, pattern=pattern, shards=shards, target_chunk_bytes=2 * MB,
                     variables=["tas"])
    vp = plan.variables["tas"]
    nt, ny, nx = ds.tas.shape
    assert vp.source_chunks == (1, ny, nx)
    unit = vp.shards or vp.chunks
    if vp.shards:  # inner chunks divide the shard
        assert all(s % c == 0 or s == n for s, c, n in zip(vp.shards, vp.chunks, ds.tas.shape,
                                                            strict=True))
    # regions are whole multiples of both grids (or the whole dimension)
    for r, s, u, n in zip(vp.region, vp.source_chunks, unit, ds.tas.shape, strict=True):
        assert r == n or (r % s == 0 and r % u == 0)
    if pattern == "timeseries":
        assert vp.chunks[0] == nt and vp.chunks[1] * vp.chunks[2] < ny * nx
    if pattern == "spatial":
        assert vp.chunks[1:] == (ny, nx) or shards
    # the read costs, counted independently
    before, after = vp.reads["point_series"]["before"], vp.reads["point_series"]["after"]
    assert before.chunks == nt
    assert after.chunks == _counts(ds.tas.shape, vp.chunks, (nt, 1, 1))
    assert vp.reads["full_map"]["after"].chunks == _counts(ds.tas.shape, vp.chunks, (1, ny, nx))
    assert vp.reads["tile_256"]["after"].chunks == _counts(
        ds.tas.shape, vp.chunks, (1, min(256, ny), min(256, nx)))
    assert after.bytes == after.chunks * math.prod(vp.chunks) * 4
    # JSON round trip
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again.variables["tas"].chunks == vp.chunks and again.variables["tas"].shards == \
        vp.shards


def test_plan_fits_memory_by_shortening_the_driving_dimension():
    """Full-length series from one-day fields need every field at once; under a limit the
    planner shortens the time chunk until a region fits, and says so."""
    shape = (3650, 180, 360)
    ds = xr.Dataset({"tas": (("time", "lat", "lon"), np.zeros(shape, "f4"))})
    ds["tas"].encoding["preferred_chunks"] = {"time": 1, "lat": 180, "lon": 360}
    limit = 1024 * MB
    vp = plan_variable(ds, "tas", pattern="timeseries", max_memory=limit)
    assert vp.footprint_bytes <= limit - WORKER_BASELINE
    assert vp.chunks[0] < 3650
    assert vp.footprint_bytes == footprint(vp.region, vp.chunks, 4, 4)
    assert vp.region == region_shape(shape, (1, 180, 360), vp.chunks)
    assert any("max-memory" in r for r in vp.reasoning)
    unlimited = plan_variable(ds, "tas", pattern="timeseries", max_memory=None)
    assert unlimited.chunks[0] == 3650


def test_plan_cli_json_is_the_model(repo):
    code, out, err = run_cli("plan", repo, "--pattern", "timeseries", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["pattern"] == "timeseries"
    assert doc["variables"]["tas"]["chunks"][0] == 730
    code, out, err = run_cli("plan", repo, "--pattern", "spatial", "--shards")
    assert code == 0, err
    assert "point series" in out and "shards" in out


# --------------------------------------------------------------------------- jobs


@pytest.mark.parametrize("seed", range(12))
def test_jobs_tile_the_array_and_never_share_a_source_chunk_or_shard(seed):
    rng = np.random.default_rng(seed)
    nd = int(rng.integers(1, 4))
    src_shape = tuple(int(rng.integers(5, 40)) for _ in range(nd))
    src_chunks = tuple(int(rng.integers(1, n + 1)) for n in src_shape)
    start = tuple(int(rng.integers(0, n // 2 + 1)) for n in src_shape)
    shape = tuple(n - s for n, s in zip(src_shape, start, strict=True))
    unit = tuple(int(rng.integers(1, n + 1)) for n in shape)
    chunks = tuple(max(1, u // int(rng.integers(1, 3))) for u in unit)
    budget = int(rng.choice([10**9, 2000, 200]))
    try:
        jobs = make_jobs("v", shape, src_chunks, start, unit, chunks, 4, 4, budget,
                         min_jobs=3)
    except PlanError:  # refused only when not even one shard fits
        assert footprint(tuple(min(u, n) for u, n in zip(unit, shape, strict=True)), chunks,
                         4, 4) > budget
        return
    # where the two grids share edges close enough for the budget, each source chunk is
    # read by one job; otherwise jobs are cut on the shard grid (edge chunks read twice)
    aligned = regions(shape, src_chunks, start, unit)
    largest = tuple(int(max(np.diff(b))) for b in aligned)
    read_once = footprint(largest, chunks, 4, 4) <= budget
    for j in jobs:
        assert footprint(tuple(b - a for a, b in j.out), chunks, 4, 4) <= budget \
            or len(jobs) == 1 or not read_once
    cover = np.zeros(shape, dtype=int)
    src_owner: dict = {}
    unit_owner: dict = {}
    for j in jobs:
        cover[j.out_slices()] += 1
        assert j.src == tuple((a + o, b + o) for (a, b), o in zip(j.out, start, strict=True))
        for idx in itertools.product(*(range(a, b) for a, b in j.src)):
            key = tuple(i // c for i, c in zip(idx, src_chunks, strict=True))
            if read_once:
                assert src_owner.setdefault(key, j.index) == j.index, "source chunk read twice"
        for idx in itertools.product(*(range(a, b) for a, b in j.out)):
            key = tuple(i // u for i, u in zip(idx, unit, strict=True))
            assert unit_owner.setdefault(key, j.index) == j.index, "shard written twice"
    assert (cover == 1).all()


# --------------------------------------------------------------------------- convert


def test_convert_icechunk_on_processes_equals_netcdf4(repo, archive, tmp_path):
    out = tmp_path / "series.zarr"
    code, stdout, err = run_cli("convert", repo, "-o", str(out), "--pattern", "timeseries",
                                "--shards", "--workers", "2", "--target-chunk-mb", "3",
                                "--json")
    assert code == 0, err
    s = json.loads(stdout)
    assert s["variables"]["tas"]["shards"] is not None
    assert s["peak_memory_per_worker"] and max(s["peak_memory_per_worker"]) < 2 * 2**30
    ds = xr.open_dataset(out, engine="zarr", consolidated=True)
    np.testing.assert_array_equal(ds.tas.values.astype("f8"), oracle(archive, "tas"))
    a = zarr.open_array(out, path="tas", mode="r")
    assert a.metadata.zarr_format == 3 and a.shards is not None
    assert ds.time.encoding["calendar"] == "noleap"
    assert ds.time.encoding["units"] == xr.open_dataset(archive[0], decode_times=False).time.units
    assert ds.tas.attrs["units"] == "K"
    assert is_incomplete("file://" + str(out)) is None
    assert "consolidated_metadata" in json.loads((out / "zarr.json").read_text())
    assert not (out / ".zarrport").exists()


def test_convert_keeps_packing_or_decodes(packed, tmp_path):
    with netCDF4.Dataset(packed) as nc:
        raw = nc["pr"][:].data if hasattr(nc["pr"][:], "data") else nc["pr"][:]
        nc.set_auto_maskandscale(False)
        raw = nc["pr"][:]
    with netCDF4.Dataset(packed) as nc:
        decoded = np.ma.filled(nc["pr"][:].astype("f8"), np.nan)
    out = tmp_path / "packed.zarr"
    s = convert(str(packed), str(out), pattern="spatial", validate=True, workers=1)
    assert s["validated"]["values"] >= raw.size
    stored = zarr.open_array(out, path="pr", mode="r")
    assert stored.dtype == np.int16
    np.testing.assert_array_equal(stored[:], raw)  # the packed values themselves
    ds = xr.open_dataset(out, engine="zarr")
    np.testing.assert_allclose(ds.pr.values.astype("f8"), decoded, rtol=0, atol=1e-4)
    assert ds.pr.encoding["scale_factor"] == pytest.approx(0.01)
    assert str(ds.time.values[0].calendar) == "360_day"
    out2 = tmp_path / "decoded.zarr"
    convert(str(packed), str(out2), pattern="spatial", decoded=True, validate=True, workers=1)
    stored2 = zarr.open_array(out2, path="pr", mode="r")
    assert stored2.dtype.kind == "f"
    ds2 = xr.open_dataset(out2, engine="zarr")
    assert "scale_factor" not in ds2.pr.encoding
    np.testing.assert_allclose(ds2.pr.values.astype("f8"), decoded, rtol=1e-6, equal_nan=True)


def test_select_and_bbox_keep_the_right_values(archive, repo, tmp_path):
    out = tmp_path / "sub.zarr"
    convert(repo, str(out), select=["time=2016-01-01:2016-12-31"], bbox="10,-30,100,30",
            workers=1)
    ds = xr.open_dataset(out, engine="zarr")
    full = zarrport.open_dataset(repo)
    want = full.tas.sel(time=slice("2016-01-01", "2016-12-31"), lat=slice(-30, 30),
                        lon=slice(10, 100))
    assert ds.tas.shape == want.shape and ds.tas.shape[0] == 365
    np.testing.assert_array_equal(ds.tas.values, want.values)
    np.testing.assert_array_equal(ds.lat.values, want.lat.values)


def test_selection_cutting_source_chunks_warns_or_refuses(packed, tmp_path):
    warned: list[str] = []
    convert(str(packed), str(tmp_path / "a.zarr"), select=["time=2000-01-04:2000-01-21"], workers=1,
            warn=warned.append)
    # chunks of 5 along time: days 3..20 -> 0..24
    assert len(warned) == 1 and "time[3:21]" in warned[0] and "time[0:25]" in warned[0]
    assert "time=2000-01-01:2000-01-25" in warned[0]
    code, _, err = run_cli("convert", str(packed), "-o", str(tmp_path / "b.zarr"),
                           "--select", "time=2000-01-04:2000-01-21", "--strict")
    assert code == 2 and "cuts pr's source chunks" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b.zarr").exists()


def test_convert_on_a_dask_cluster(dask_cluster, repo, archive, tmp_path):
    out = tmp_path / "dask.zarr"
    s = convert(repo, str(out), pattern="spatial", target_chunk_mb=0.5,
                scheduler=dask_cluster.address)
    assert s["jobs"] > 2
    ds = xr.open_dataset(out, engine="zarr")
    np.testing.assert_array_equal(ds.tas.values.astype("f8"), oracle(archive, "tas"))


# --------------------------------------------------------------------------- resume, validate


def _many_jobs_source(tmp_path: Path) -> Path:
    return write_cmip6_span(tmp_path / "many.nc", range(2000, 2003), nlat=48, nlon=96,
                            time_chunk=1)


def test_kill_9_then_resume(tmp_path):
    src = _many_jobs_source(tmp_path)
    out = tmp_path / "resume.zarr"
    args = [sys.executable, "-m", "zarrport", "convert", str(src), "-o", str(out),
            "--pattern", "spatial", "--target-chunk-mb", "0.001", "--workers", "1"]
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    done = out / ".zarrport" / "done"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if done.exists() and len(done.read_text().splitlines()) >= 2:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the conversion ended before it was killed"
    n_done = len(done.read_text().splitlines())
    with pytest.raises(IncompleteOutputError, match="unfinished zarrport convert"):
        zarrport.open_dataset(str(out))
    code, _, err = run_cli("info", str(out))
    assert code == 12 and "unfinished" in err
    # resumed with another worker count: the jobs do not depend on it
    resumed = subprocess.run(args[:-1] + ["2", "--json"], env=_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    s = json.loads(resumed.stdout)
    assert s["resumed_from"] >= n_done - 1 and s["resumed_from"] > 0
    ds = xr.open_dataset(out, engine="zarr")
    np.testing.assert_array_equal(ds.tas.values.astype("f8"), oracle([src], "tas"))


def test_validate_fails_on_any_difference(packed, tmp_path):
    out = tmp_path / "tampered.zarr"

    def tamper(done, total, result):
        if done == total:  # every job written: spoil one value behind the writer's back
            a = zarr.open_array(out, path="pr", mode="r+")
            a[7, 3, 2] = a[7, 3, 2] + 1
    with pytest.raises(VerificationError, match=r"1 values differ.*\(7, 3, 2\)"):
        convert(str(packed), str(out), variables=["pr"], validate=True, workers=1,
                pattern="spatial", target_chunk_mb=0.005, progress=tamper)


def test_a_source_changing_during_conversion_stops_it(tmp_path):
    src = _many_jobs_source(tmp_path)
    out = tmp_path / "changed.zarr"

    def touch(done, total, result):
        if done == 2:
            st = src.stat()
            os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(SourceChangedError, match="changed"):
        convert(str(src), str(out), pattern="spatial", target_chunk_mb=0.001, workers=1,
                progress=touch)
    with pytest.raises(IncompleteOutputError):
        zarrport.open_dataset(str(out))
    with pytest.raises(OutputExistsError, match="source changed"):  # no silent resume
        convert(str(src), str(out), pattern="spatial", target_chunk_mb=0.001, workers=1)
    convert(str(src), str(out), pattern="spatial", target_chunk_mb=0.001, workers=1,
            overwrite=True)
    assert zarrport.open_dataset(str(out)).tas.shape[0] == 3 * 365


# --------------------------------------------------------------------------- bad input


def _one_line_error(code: int, err: str, status: int | None = None) -> None:
    assert code != 0
    if status is not None:
        assert code == status, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("zarrport: error:"), err


@pytest.mark.parametrize("args,status,needle", [
    (["--max-memory", "100MB"], 2, "below what a worker needs"),
    (["--max-memory", "lots"], 2, "wants a size"),
    (["--variables", "nope"], 2, "no variable 'nope'"),
    (["--select", "time"], 2, "DIM=START:STOP"),
    (["--select", "height=0:1"], 2, "no dimension 'height'"),
    (["--bbox", "1,2,3"], 2, "W,S,E,N"),
    (["--codec", "zstd", "--level", "99"], 2, "--level for zstd"),
    (["--workers", "0"], 2, "at least 1"),
])
def test_bad_options(packed, tmp_path, args, status, needle):
    out = tmp_path / "bad.zarr"
    code, _, err = run_cli("convert", str(packed), "-o", str(out), *args)
    _one_line_error(code, err, status)
    assert needle in err
    assert not out.exists()


def test_region_that_cannot_fit_is_refused_with_a_chunking_that_would(tmp_path):
    p = tmp_path / "fields.nc"
    with netCDF4.Dataset(p, "w") as nc:
        nc.createDimension("time", 4)
        nc.createDimension("lat", 600)
        nc.createDimension("lon", 1200)
        v = nc.createVariable("tas", "f4", ("time", "lat", "lon"), chunksizes=(4, 600, 1200))
        v[:] = 1.0
    plan_file = tmp_path / "plan.json"
    ds = zarrport.open_dataset(str(p), decode_times=False, mask_and_scale=False)
    plan = make_plan(ds, str(p), pattern="spatial", max_memory=None)
    plan.variables["tas"].chunks = (1, 64, 64)  # fine, but one source chunk is 11 MB x 4
    plan.save(plan_file)
    code, _, err = run_cli("convert", str(p), "-o", str(tmp_path / "o.zarr"), "--plan",
                           str(plan_file), "--max-memory", "400MB")
    _one_line_error(code, err, 2)
    assert "raise --max-memory to at least" in err
    assert not (tmp_path / "o.zarr").exists()


def test_plan_naming_a_missing_variable(packed, tmp_path):
    ds = zarrport.open_dataset(str(packed), decode_times=False, mask_and_scale=False)
    plan = make_plan(ds, str(packed))
    doc = plan.to_dict()
    doc["variables"]["ghost"] = dict(doc["variables"]["pr"], name="ghost")
    (tmp_path / "plan.json").write_text(json.dumps(doc))
    code, _, err = run_cli("convert", str(packed), "-o", str(tmp_path / "o.zarr"), "--plan",
                           str(tmp_path / "plan.json"))
    _one_line_error(code, err, 2)
    assert "'ghost'" in err and not (tmp_path / "o.zarr").exists()
    (tmp_path / "junk.json").write_text("{not json")
    code, _, err = run_cli("convert", str(packed), "-o", str(tmp_path / "o.zarr"), "--plan",
                           str(tmp_path / "junk.json"))
    _one_line_error(code, err, 2)


def test_existing_output_needs_overwrite(packed, tmp_path):
    out = tmp_path / "o.zarr"
    assert run_cli("convert", str(packed), "-o", str(out))[0] == 0
    before = sorted(p.name for p in out.iterdir())
    code, _, err = run_cli("convert", str(packed), "-o", str(out))
    _one_line_error(code, err, 6)
    assert sorted(p.name for p in out.iterdir()) == before
    other = tmp_path / "notzarr"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    code, _, err = run_cli("convert", str(packed), "-o", str(other), "--overwrite")
    _one_line_error(code, err, 6)
    assert (other / "precious.txt").read_text() == "keep me"


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_is_one_line_and_never_a_complete_looking_store(packed, tmp_path,
                                                                   small_disk):
    src = tmp_path / "noise.nc"
    with netCDF4.Dataset(src, "w") as nc:
        nc.createDimension("time", 64)
        nc.createDimension("lat", 32)
        nc.createDimension("lon", 64)
        v = nc.createVariable("tas", "f8", ("time", "lat", "lon"), chunksizes=(1, 32, 64))
        v[:] = np.random.default_rng(0).random((64, 32, 64))  # 1 MB, incompressible
    out = small_disk / "o.zarr"
    code, _, err = run_cli("convert", str(src), "-o", str(out), "--pattern", "spatial",
                           "--target-chunk-mb", "0.1", "--workers", "1")
    _one_line_error(code, err, 8)
    assert "no space left" in err.lower()
    if out.exists():
        assert is_incomplete("file://" + str(out)) is not None
        with pytest.raises(IncompleteOutputError):
            zarrport.open_dataset(str(out))


# --------------------------------------------------------------------------- object storage


@pytest.mark.s3
def test_convert_a_netcdf_file_on_s3(s3_server, packed, tmp_path):
    """Workers read the source from S3 (moto on 127.0.0.1) with the storage options."""
    s3_server.create_bucket("convert-src")
    url = s3_server.put_object("convert-src", "cmip/packed.nc", packed.read_bytes())
    out = tmp_path / "from-s3.zarr"
    s = convert(url, str(out), pattern="spatial", target_chunk_mb=0.001, workers=2,
                validate=True, storage_options=s3_server.storage_options)
    assert s["jobs"] > 2
    with netCDF4.Dataset(packed) as nc:
        nc.set_auto_maskandscale(False)
        raw = nc["pr"][:]
    np.testing.assert_array_equal(zarr.open_array(out, path="pr", mode="r")[:], raw)


# --------------------------------------------------------------------------- regressions


class _Stop(Exception):
    pass


def _stop_after(n):
    def progress(done, total, result):
        if done >= n:
            raise _Stop
    return progress


def test_resume_refuses_jobs_cut_elsewhere(tmp_path):
    """Same plan, another --max-memory: as many jobs (28), cut elsewhere (36 or 37 fields
    each); resuming by job number would skip blocks and call the store complete."""
    src = tmp_path / "r.nc"
    with netCDF4.Dataset(src, "w") as nc:
        nc.createDimension("time", 1000)
        nc.createDimension("lat", 32)
        nc.createDimension("lon", 32)
        v = nc.createVariable("tas", "f4", ("time", "lat", "lon"), chunksizes=(1, 32, 32))
        v[:] = np.random.default_rng(2).random((1000, 32, 32), dtype="f4")
    ds = zarrport.open_dataset(str(src), decode_times=False, mask_and_scale=False)
    plan = make_plan(ds, str(src), pattern="spatial", target_chunk_bytes=4096,
                     max_memory=None)
    # a field read + written is 8 KB, plus the codec's 10 chunks in flight: 36 or 37 fields
    a, b = (WORKER_BASELINE + 8192 * (n + 10) for n in (36, 37))
    from zarrport.convert.jobs import make_jobs
    cuts = [make_jobs("tas", (1000, 32, 32), (1, 32, 32), (0, 0, 0), (1, 32, 32),
                      (1, 32, 32), 4, 4, m - WORKER_BASELINE, min_jobs=16) for m in (a, b)]
    assert len(cuts[0]) == len(cuts[1]) and cuts[0][1].out != cuts[1][1].out
    out = tmp_path / "o.zarr"
    with pytest.raises(_Stop):
        convert(str(src), str(out), plan=plan, max_memory=a, workers=1,
                progress=_stop_after(10))
    with pytest.raises(OutputExistsError, match="unfinished conversion with other options"):
        convert(str(src), str(out), plan=plan, max_memory=b, workers=1)
    s = convert(str(src), str(out), plan=plan, max_memory=a, workers=1, validate=True)
    assert s["resumed_from"] == 10


def test_second_conversion_in_one_process_uses_fresh_handles(packed, tmp_path):
    out = tmp_path / "o.zarr"
    convert(str(packed), str(out), pattern="spatial", target_chunk_mb=0.002, workers=1)
    convert(str(packed), str(out), pattern="timeseries", target_chunk_mb=0.01, workers=1,
            overwrite=True, validate=True)
    with netCDF4.Dataset(packed) as nc:
        nc.set_auto_maskandscale(False)
        raw = nc["pr"][:]
    np.testing.assert_array_equal(zarr.open_array(out, path="pr", mode="r")[:], raw)


def test_validate_with_a_selection(packed, tmp_path):
    s = convert(str(packed), str(tmp_path / "o.zarr"), select=["time=2000-01-06:2000-01-20"],
                validate=True, workers=1)
    assert s["validated"]["values"] >= 15 * 16 * 32


def test_selection_off_the_chunk_grid_keeps_jobs_within_memory(tmp_path):
    src = tmp_path / "o.nc"
    with netCDF4.Dataset(src, "w") as nc:
        nc.createDimension("time", 800)
        nc.createDimension("lat", 64)
        nc.createDimension("lon", 64)
        t = nc.createVariable("time", "f8", ("time",))
        t.units, t.calendar = "days since 2000-01-01", "noleap"
        t[:] = np.arange(800)
        v = nc.createVariable("tas", "f4", ("time", "lat", "lon"), chunksizes=(8, 64, 64))
        v[:] = np.random.default_rng(1).random((800, 64, 64), dtype="f4")
    sizes: list[int] = []
    budget = 4 * MB
    convert(str(src), str(tmp_path / "o.zarr"), select=["time=2000-01-05:2002-03-09"],
            pattern="spatial", target_chunk_mb=0.25, max_memory=WORKER_BASELINE + budget,
            workers=1, validate=True, warn=lambda m: None,
            progress=lambda d, t, r: sizes.append(r["nbytes"]))
    assert len(sizes) > 1 and max(sizes) <= budget


def test_plan_dtype_must_match_how_the_source_is_read(packed, tmp_path):
    ds = zarrport.open_dataset(str(packed), decode_times=False, mask_and_scale=False)
    plan = make_plan(ds, str(packed))  # packed: int16
    with pytest.raises(zarrport.errors.InvalidArgumentError, match="--decoded"):
        convert(str(packed), str(tmp_path / "o.zarr"), plan=plan, decoded=True, workers=1)
    assert not (tmp_path / "o.zarr").exists()


def test_output_over_the_source_is_refused(packed, tmp_path):
    copy = tmp_path / "same.nc"
    copy.write_bytes(packed.read_bytes())
    code, _, err = run_cli("convert", str(copy), "-o", str(copy), "--overwrite")
    _one_line_error(code, err, 2)
    assert copy.read_bytes() == packed.read_bytes()
    other = tmp_path / "file.txt"
    other.write_text("keep")
    code, _, err = run_cli("convert", str(packed), "-o", str(other), "--overwrite")
    _one_line_error(code, err, 6)
    assert other.read_text() == "keep"


def test_grid_mapping_and_other_referenced_variables_come_along(packed, tmp_path):
    src = tmp_path / "crs.nc"
    src.write_bytes(packed.read_bytes())
    with netCDF4.Dataset(src, "a") as nc:
        crs = nc.createVariable("crs", "i4")
        crs.grid_mapping_name = "latitude_longitude"
        nc["pr"].grid_mapping = "crs"
    out = tmp_path / "o.zarr"
    convert(str(src), str(out), variables=["pr"], workers=1, validate=True)
    ds = xr.open_dataset(out, engine="zarr")
    assert ds.pr.attrs.get("grid_mapping") == "crs" or ds.pr.encoding.get("grid_mapping") \
        == "crs"
    assert ds["crs"].attrs["grid_mapping_name"] == "latitude_longitude"


def test_corrupt_chunk_and_bad_plans_are_one_line(packed, tmp_path):
    import h5py

    bad = tmp_path / "rot.nc"
    bad.write_bytes(packed.read_bytes())
    with h5py.File(bad) as f:
        info = f["pr"].id.get_chunk_info(1)
    with open(bad, "r+b") as fh:  # bit rot inside one compressed chunk
        fh.seek(info.byte_offset + 4)
        fh.write(b"\xff" * 16)
    code, _, err = run_cli("convert", str(bad), "-o", str(tmp_path / "a.zarr"), "--pattern",
                           "spatial", "--target-chunk-mb", "0.002", "--workers", "1")
    _one_line_error(code, err, 4)
    assert "pr[" in err
    ds = zarrport.open_dataset(str(packed), decode_times=False, mask_and_scale=False)
    doc = make_plan(ds, str(packed)).to_dict()
    for chunks, shards, needle in (([5, 8], None, "3 positive lengths"),
                                   ([0, 8, 16], None, "3 positive lengths"),
                                   ([5, 8, 16], [12, 8, 16], "whole multiples")):
        doc["variables"]["pr"]["chunks"], doc["variables"]["pr"]["shards"] = chunks, shards
        (tmp_path / "p.json").write_text(json.dumps(doc))
        code, _, err = run_cli("convert", str(packed), "-o", str(tmp_path / "b.zarr"),
                               "--plan", str(tmp_path / "p.json"))
        _one_line_error(code, err, 2)
        assert needle in err and not (tmp_path / "b.zarr").exists()
