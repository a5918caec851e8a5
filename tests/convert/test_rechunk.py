"""``zarrport rechunk``: Zarr (v2, v3, Icechunk) -> Zarr v3 with other chunks, in one pass or in
two through an intermediate store, every worker within ``--max-memory``.

The oracle is zarr-python reading the source and the output directly (and xarray for the
decoded view of fill values); sources are written here with zarr from seeded random data.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import zarr

from test_cli import assert_clean_failure, run
from zarrport.convert.plan import MB, WORKER_BASELINE

#: the smallest --max-memory zarrport takes leaves 2 MB for data: small arrays then need two
#: stages, and the tests stay fast
TIGHT = "386MB"
TIGHT_BUDGET = 386 * MB - WORKER_BASELINE


def write_v2(path: Path, shape: tuple[int, ...], chunks: tuple[int, ...], *, seed: int = 0,
             fill_value: float | None = None, skip: tuple[int, ...] = (),
             fill_steps: tuple[int, ...] = (), second: bool = False) -> dict[str, np.ndarray]:
    """A Zarr v2 store with ``tas`` (time, lat, lon) float32, uncompressed, and its
    coordinates; steps in ``skip`` are never written (zarr gives the fill value), steps in
    ``fill_steps`` hold the fill value. ``second`` adds ``pr`` with the same chunks. Returns
    what zarr reads back, per variable."""
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    rng = np.random.default_rng(seed)
    dims = ["time", "lat", "lon"]
    out = {}
    for name in ("tas", "pr") if second else ("tas",):
        a = g.create_array(name, shape=shape, chunks=chunks, dtype="f4", compressors=None,
                           fill_value=None if fill_value is None else np.float32(fill_value),
                           attributes={"_ARRAY_DIMENSIONS": dims, "units": "K"})
        for i in range(0, shape[0], 16):
            block = rng.standard_normal((min(16, shape[0] - i), *shape[1:]), dtype=np.float32)
            for t in fill_steps:
                if i <= t < i + len(block):
                    block[t - i] = fill_value
            keep = [t for t in range(i, i + len(block)) if t not in skip]
            for t in keep:
                a[t] = block[t - i]
        out[name] = a[...]
    for name, n in zip(dims, shape, strict=True):
        c = g.create_array(name, shape=(n,), chunks=(n,), dtype="f8", compressors=None,
                           attributes={"_ARRAY_DIMENSIONS": [name]})
        c[:] = np.arange(n, dtype="f8") * 0.5
    g["time"].attrs["units"] = "days since 2000-01-01"
    zarr.consolidate_metadata(str(path))
    return out


def assert_same(src: Path, out: Path, name: str = "tas", slab: int | None = None) -> None:
    a = zarr.open_array(str(src), path=name, mode="r")
    b = zarr.open_array(str(out), path=name, mode="r")
    assert b.metadata.zarr_format == 3
    assert a.shape == b.shape and a.dtype == b.dtype
    step = slab or a.shape[1]
    for i in range(0, a.shape[1], step):
        x, y = a[:, i:i + step], b[:, i:i + step]
        assert np.array_equal(x, y, equal_nan=True), f"{name}[:, {i}:{i + step}] differs"


def rechunk_json(*args: str) -> dict:
    proc = run("rechunk", *args, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def no_leftovers(out: Path) -> None:
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    assert not out.with_name(out.name + ".rechunk-tmp").exists()


# ------------------------------------------------------------------ memory bound, two stages


@pytest.mark.slow
def test_two_stage_keeps_every_worker_under_max_memory(tmp_path):
    """415 MB in whole-field chunks to whole-series chunks: one pass would hold all of it
    (its regions are whole multiples of both grids), so two stages, each worker < 700 MB."""
    shape = (200, 720, 720)
    src, out = tmp_path / "tas.zarr", tmp_path / "series.zarr"
    write_v2(src, shape, (1, 720, 720))
    nbytes = math.prod(shape) * 4
    # the setup needs two stages: one pass reads all of it and writes a buffer as large
    assert WORKER_BASELINE + nbytes > 700 * MB
    s = rechunk_json(str(src), "-o", str(out), "--chunks", "tas=-1,16,16",
                     "--max-memory", "700MB", "--workers", "2", "--codec", "blosc-lz4")
    assert s["method"] == "two-stage"
    v = s["variables"]["tas"]
    assert v["chunks"] == [200, 16, 16] and v["intermediate_chunks"]
    assert [st["stage"] for st in s["stages"]] == ["source -> intermediate",
                                                  "intermediate -> output"]
    for st in s["stages"]:
        assert st["jobs"] >= 2
        assert len(st["peak_memory_per_worker"]) == 2, st  # two worker processes per stage
        for peak in st["peak_memory_per_worker"]:
            assert 0 < peak < 700 * MB, (st["stage"], peak / MB)
    assert s["peak_memory_per_worker"] and max(s["peak_memory_per_worker"]) < 700 * MB
    assert zarr.open_array(str(out), path="tas").chunks == (200, 16, 16)
    assert not (tmp_path / "series.zarr.rechunk-tmp").exists()
    assert_same(src, out, slab=90)


def test_v2_fill_values_and_unnamed_variables_two_stage(tmp_path):
    """Zarr v2 with a fill value, never-written chunks and a step of fill values: the raw
    values (zarr) and the masked ones (xarray) are the source's; ``pr``, not named, keeps
    its chunks."""
    import xarray as xr

    src, out = tmp_path / "v2.zarr", tmp_path / "out.zarr"
    ref = write_v2(src, (40, 96, 96), (1, 96, 96), fill_value=-9999.0, skip=(3, 30, 31),
                   fill_steps=(7,), second=True)
    assert (ref["tas"] == -9999.0).sum() == 4 * 96 * 96
    s = rechunk_json(str(src), "-o", str(out), "--chunks", "tas=-1,8,8", "--max-memory",
                     TIGHT, "--workers", "1")
    assert s["method"] == "two-stage"
    inter = s["variables"]["tas"]["intermediate_chunks"]
    assert inter and inter != [40, 8, 8] and inter != [1, 96, 96]
    assert s["variables"]["pr"]["chunks"] == [1, 96, 96]
    assert s["variables"]["pr"]["intermediate_chunks"] is None
    for name in ("tas", "pr"):
        assert_same(src, out, name)
    assert zarr.open_array(str(out), path="tas").chunks == (40, 8, 8)
    assert zarr.open_array(str(out), path="pr").chunks == (1, 96, 96)
    a, b = xr.open_zarr(src), xr.open_zarr(out)
    assert int(b.tas.isnull().sum()) == int(a.tas.isnull().sum()) == 4 * 96 * 96
    xr.testing.assert_identical(a.tas.load(), b.tas.load())
    xr.testing.assert_equal(a.lat, b.lat)
    assert b.attrs["zarrport_conversion"]["source"] == src.as_uri()
    assert b.attrs["zarrport_conversion"]["method"] == "two-stage"


def test_v3_sharded_source_to_sharded_output_two_stage(tmp_path):
    src, out = tmp_path / "v3.zarr", tmp_path / "out.zarr"
    g = zarr.open_group(str(src), mode="w", zarr_format=3)
    a = g.create_array("tas", shape=(48, 256, 256), chunks=(1, 128, 256),
                       shards=(4, 256, 256), dtype="f4", dimension_names=("time", "y", "x"),
                       fill_value=np.float32("nan"))
    data = np.random.default_rng(3).standard_normal(a.shape, dtype=np.float32)
    data[5, :10] = np.nan
    a[...] = data
    s = rechunk_json(str(src), "-o", str(out), "--chunks", "tas=-1,128,128", "--shards",
                     "--max-memory", "400MB", "--workers", "1")
    assert s["method"] == "two-stage"
    v = s["variables"]["tas"]
    assert v["shards"] == [48, 128, 128] and v["intermediate_chunks"]
    arr = zarr.open_array(str(out), path="tas")
    assert arr.shards == (48, 128, 128)
    assert tuple(v["chunks"]) == arr.chunks and math.prod(arr.chunks) < 48 * 128 * 128
    assert_same(src, out)


def test_icechunk_source(tmp_path):
    import icechunk
    import xarray as xr

    from zarrport.convert.rechunk import rechunk

    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "r")))
    session = repo.writable_session("main")
    data = np.random.default_rng(4).standard_normal((40, 96, 96), dtype=np.float32)
    xr.Dataset({"tas": (("time", "lat", "lon"), data)}).to_zarr(
        session.store, zarr_format=3, consolidated=False,
        encoding={"tas": {"chunks": (1, 96, 96)}})
    session.commit("data")
    s = rechunk(str(tmp_path / "r"), str(tmp_path / "out.zarr"), chunks=["tas=-1,8,8"],
                max_memory=TIGHT, workers=1)
    assert s["method"] == "two-stage"
    assert np.array_equal(zarr.open_array(str(tmp_path / "out.zarr"), path="tas")[...], data)


# ------------------------------------------------------------------ one pass, plans, patterns


def test_single_pass_when_the_grids_agree(tmp_path):
    src, out = tmp_path / "v2.zarr", tmp_path / "out.zarr"
    write_v2(src, (40, 96, 96), (1, 96, 96))
    s = rechunk_json(str(src), "-o", str(out), "--chunks", "tas=10,-1,-1", "--workers", "1")
    assert s["method"] == "single-pass" and s["intermediate"] is None
    assert len(s["stages"]) == 1 and s["variables"]["tas"]["intermediate_chunks"] is None
    assert zarr.open_array(str(out), path="tas").chunks == (10, 96, 96)
    assert_same(src, out)
    assert not (tmp_path / "out.zarr.rechunk-tmp").exists()
    human = run("rechunk", str(src), "-o", str(out), "--chunks", "tas=20,-1,-1",
                "--overwrite", "--workers", "1")
    assert human.returncode == 0, human.stderr
    assert "single-pass" in human.stdout and "1x96x96 -> 20x96x96" in human.stdout
    assert zarr.open_array(str(out), path="tas").chunks == (20, 96, 96)


def test_plan_from_zarrport_plan_is_kept_in_two_stages(tmp_path):
    """A plan made for 2 GB, carried out under the tightest limit: its chunks are kept (not
    cut to fit, as convert would), the copy goes in two stages."""
    src, out, plan = tmp_path / "v2.zarr", tmp_path / "out.zarr", tmp_path / "plan.json"
    write_v2(src, (64, 96, 96), (1, 96, 96))
    made = run("plan", str(src), "--pattern", "timeseries", "--target-chunk-mb", "0.25",
               "--json")
    assert made.returncode == 0, made.stderr
    plan.write_text(made.stdout)
    want = json.loads(made.stdout)["variables"]["tas"]["chunks"]
    assert want[0] == 64  # whole series
    s = rechunk_json(str(src), "-o", str(out), "--plan", str(plan), "--max-memory", TIGHT,
                     "--workers", "1")
    assert s["method"] == "two-stage"
    assert list(zarr.open_array(str(out), path="tas").chunks) == want
    assert_same(src, out)


def test_pattern_plans_every_variable(tmp_path):
    from zarrport.convert.rechunk import rechunk

    src, out = tmp_path / "v2.zarr", tmp_path / "out.zarr"
    write_v2(src, (64, 96, 96), (1, 96, 96), second=True)
    s = rechunk(str(src), str(out), pattern="timeseries", target_chunk_mb=0.25,
                max_memory=TIGHT, workers=1)
    for name in ("tas", "pr"):
        assert s["variables"][name]["chunks"][0] == 64
        assert zarr.open_array(str(out), path=name).chunks[0] == 64
        assert_same(src, out, name)


def test_stage_one_is_not_repeated_after_an_interruption(tmp_path, monkeypatch):
    import zarrport.convert.writer as writer
    from zarrport.convert.rechunk import rechunk

    src, out = tmp_path / "v2.zarr", tmp_path / "out.zarr"
    write_v2(src, (40, 96, 96), (1, 96, 96))
    real = writer.convert

    def interrupted(source, output, **kw):
        if Path(output) == out:
            raise KeyboardInterrupt  # stage 2 starts: the user presses Ctrl-C
        return real(source, output, **kw)

    monkeypatch.setattr(writer, "convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rechunk(str(src), str(out), chunks=["tas=-1,8,8"], max_memory=TIGHT, workers=1)
    assert (tmp_path / "out.zarr.rechunk-tmp").is_dir()
    monkeypatch.setattr(writer, "convert", real)
    s = rechunk(str(src), str(out), chunks=["tas=-1,8,8"], max_memory=TIGHT, workers=1)
    assert s["stages"][0].get("skipped") == "done before"
    assert s["stages"][1]["jobs"] > 0
    assert_same(src, out)
    assert not (tmp_path / "out.zarr.rechunk-tmp").exists()


def test_scheduler_runs_both_stages_on_the_cluster(tmp_path, dask_cluster):
    src, out = tmp_path / "v2.zarr", tmp_path / "out.zarr"
    write_v2(src, (40, 96, 96), (1, 96, 96))
    s = rechunk_json(str(src), "-o", str(out), "--chunks", "tas=-1,8,8", "--max-memory",
                     "1GB", "--scheduler", dask_cluster.address)
    assert s["method"] == "single-pass"  # 1.4 MB fits one pass
    assert_same(src, out)
    s = rechunk_json(str(src), "-o", str(out), "--chunks", "tas=-1,8,8", "--max-memory",
                     TIGHT, "--scheduler", dask_cluster.address, "--overwrite")
    assert s["method"] == "two-stage"
    for st in s["stages"]:
        assert st["jobs"] > 0 and st["peak_memory_per_worker"]
        assert max(st["peak_memory_per_worker"]) < 386 * MB  # the Dask worker processes
    assert_same(src, out)


# ------------------------------------------------------------------ the planner alone


def test_intermediate_chunks_fit_both_stages():
    """Both stages' regions (whole multiples of each side's chunks, as the writer reads
    them) fit the budget, computed here from lcm independently of the planner."""
    from zarrport.convert.rechunk import intermediate_chunks

    def need(shape, a, b, chunks, isz=4):
        region = [min(n, math.lcm(x, y)) for n, x, y in zip(shape, a, b, strict=True)]
        elems = math.prod(region)
        n_chunks = math.prod(-(-r // c) for r, c in zip(region, chunks, strict=True))
        return 2 * elems * isz + min(n_chunks, 10) * math.prod(chunks) * isz * 2

    for shape, s, t, budget in [((3650, 720, 1440), (1, 720, 1440), (3650, 32, 32), 316 * MB),
                                ((3650, 720, 1440), (1, 720, 1440), (3650, 32, 32), 1664 * MB),
                                ((100, 1000, 1000), (10, 100, 1000), (100, 64, 64), 216 * MB),
                                ((365, 181, 360), (1, 181, 360), (365, 10, 10), 4 * MB)]:
        assert need(shape, s, t, t) > budget  # one pass does not fit
        inter = intermediate_chunks(shape, s, t, t, 4, 4, budget)
        assert need(shape, s, inter, inter) <= budget
        assert need(shape, inter, t, t) <= budget
        assert math.prod(inter) > math.prod(math.gcd(a, b) for a, b in zip(s, t, strict=True))


# ------------------------------------------------------------------ bad input


@pytest.fixture
def store(tmp_path) -> Path:
    src = tmp_path / "v2.zarr"
    write_v2(src, (8, 32, 32), (1, 32, 32))
    return src


@pytest.mark.parametrize("args,needle", [
    (["--chunks", "nope=1,2,3"], "no data variable 'nope'"),
    (["--chunks", "tas"], "--chunks wants VAR=N,N,..."),
    (["--chunks", "tas=0,8,8"], "must be positive"),
    (["--chunks", "tas=8,8"], "2 length(s) for its 3 dimensions"),
    (["--chunks", "tas=8,8,8", "--chunks", "tas=1,8,8"], "names 'tas' twice"),
    ([], "exactly one of --plan, --chunks or --pattern"),
    (["--chunks", "tas=8,8,8", "--pattern", "spatial"], "exactly one of"),
    (["--chunks", "lat=8"], "no data variable 'lat'"),
    (["--pattern", "spatial", "--max-memory", "100MB"], "below what a worker needs"),
    (["--pattern", "spatial", "--max-memory", "lots"], "--max-memory wants a size"),
    (["--plan", "missing.json"], "no such file"),
])
def test_bad_arguments_fail_cleanly_and_write_nothing(tmp_path, store, args, needle):
    out = tmp_path / "out.zarr"
    proc = run("rechunk", str(store), "-o", str(out), *args, cwd=tmp_path)
    assert_clean_failure(proc, needle)
    no_leftovers(out)


@pytest.mark.parametrize("item", ["tas", "tas=", "tas=a,8,8", "tas=1,,8", "=1,8,8",
                                  "tas=1.5,8,8", "tas=8;8;8", "tas=-2,8,8", "tas=0,8,8"])
def test_chunks_syntax(item):
    from zarrport.convert.rechunk import parse_chunks
    from zarrport.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="--chunks"):
        parse_chunks([item])
    assert parse_chunks([" tas = 8, -1 ,8", "pr=1"]) == {"tas": (8, -1, 8), "pr": (1,)}


def test_not_a_zarr_store(tmp_path):
    from zarrport.testing.samples import write_cmip6_year

    nc = write_cmip6_year(tmp_path / "tas.nc", 2015, nlat=4, nlon=8)
    out = tmp_path / "out.zarr"
    assert_clean_failure(run("rechunk", str(nc), "-o", str(out), "--pattern", "spatial"),
                         "not a Zarr store", "use zarrport convert")
    no_leftovers(out)
    (tmp_path / "plain").mkdir()
    assert_clean_failure(run("rechunk", str(tmp_path / "plain"), "-o", str(out), "--pattern",
                             "spatial"), "not a Zarr store")
    no_leftovers(out)


def test_impossible_memory(tmp_path):
    """One source chunk (4 MB of data) is more than 386 MB leaves: neither one pass nor two
    stages can copy it."""
    src, out = tmp_path / "big.zarr", tmp_path / "out.zarr"
    write_v2(src, (2, 1024, 1024), (1, 1024, 1024))
    proc = run("rechunk", str(src), "-o", str(out), "--chunks", "tas=-1,8,8",
               "--max-memory", TIGHT)
    assert_clean_failure(proc, "even in two stages", "one source chunk",
                         "raise --max-memory to at least")
    no_leftovers(out)


def test_plan_for_another_source(tmp_path, store):
    other, out = tmp_path / "other.zarr", tmp_path / "out.zarr"
    write_v2(other, (16, 32, 32), (1, 32, 32))
    made = run("plan", str(other), "--json")
    (tmp_path / "plan.json").write_text(made.stdout)
    proc = run("rechunk", str(store), "-o", str(out), "--plan", str(tmp_path / "plan.json"))
    assert_clean_failure(proc, "make the plan from this source")
    no_leftovers(out)


def test_existing_output_needs_overwrite(tmp_path, store):
    out = tmp_path / "out.zarr"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = run("rechunk", str(store), "-o", str(out), "--chunks", "tas=-1,8,8")
    assert_clean_failure(proc, "exists; pass --overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert not (tmp_path / "out.zarr.rechunk-tmp").exists()
    proc = run("rechunk", str(store), "-o", str(out), "--chunks", "tas=-1,8,8", "--overwrite")
    assert_clean_failure(proc, "is not a Zarr store; zarrport will not delete it")
    assert (out / "keep.txt").read_text() == "mine"


def test_output_cannot_be_the_source(tmp_path, store):
    for out in (store, store / "inner.zarr", store.parent):
        proc = run("rechunk", str(store), "-o", str(out), "--chunks", "tas=-1,8,8",
                   "--overwrite")
        assert_clean_failure(proc, "cannot be the source")
    assert zarr.open_array(str(store), path="tas")[...].shape == (8, 32, 32)  # untouched
    assert not (store / "inner.zarr").exists()
