"""``zarrport inspect --profile``: chunk counts and stored sizes of every kind of source,
checked against independent oracles (h5py's chunk index, the files of a Zarr store, the
kerchunk JSON, netCDF4's view of a NetCDF-3 file), and the chunks a selection touches,
checked against the chunks of every selected element."""

from __future__ import annotations

import base64
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr

import zarrport
from zarrport.errors import InvalidArgumentError
from zarrport.inspect.profile import (
    REPEATS,
    ProfileReport,
    parse_read,
    profile_source,
    render_profile,
)

SHAPE = (25, 30, 40)
CHUNKS = (10, 16, 16)
PR_CHUNKS = (5, 30, 40)
PR_WRITTEN = 10  # time steps of pr written: its later chunks are never allocated


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zarrport", *args], capture_output=True,
                          text=True, timeout=120)


def assert_clean_failure(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("zarrport: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert proc.stdout == ""


# --------------------------------------------------------------------------- sources


def write_nc4(path: Path, group: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    with netCDF4.Dataset(path, "w") as root:
        ds = root.createGroup(group) if group else root
        for d, n in zip(("time", "y", "x"), SHAPE, strict=True):
            ds.createDimension(d, n)
        ds.createVariable("time", "f8", ("time",))[:] = np.arange(SHAPE[0])
        tas = ds.createVariable("tas", "f4", ("time", "y", "x"), zlib=True,
                                chunksizes=CHUNKS)
        # rounded noise: chunks of different compressed sizes
        tas[:] = rng.normal(280, 5, SHAPE).round(1).astype("f4")
        pr = ds.createVariable("pr", "f4", ("time", "y", "x"), zlib=True,
                               chunksizes=PR_CHUNKS, fill_value=np.float32(-1))
        pr[:PR_WRITTEN] = rng.random((PR_WRITTEN, *SHAPE[1:])).astype("f4")
        ds.createVariable("orog", "f8", ("y", "x"), contiguous=True)[:] = rng.random(SHAPE[1:])
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("profile")
    nc4 = write_nc4(d / "a.nc")
    with xr.open_dataset(nc4) as ds:
        ds.to_zarr(d / "a.zarr", mode="w", zarr_format=3, consolidated=False,
                   encoding={"tas": {"chunks": CHUNKS}, "pr": {"chunks": PR_CHUNKS}})
        ds.to_zarr(d / "sharded.zarr", mode="w", zarr_format=3, consolidated=False,
                   encoding={"tas": {"chunks": (5, 8, 8), "shards": CHUNKS}})
    out = {"netcdf4": nc4, "zarr": d / "a.zarr", "sharded": d / "sharded.zarr"}
    for kind, name in (("kerchunk-json", "a.json"), ("kerchunk-parquet", "a.parquet"),
                       ("icechunk", "a.icechunk")):
        zarrport.virtualize([str(nc4)], str(d / name))
        out[kind] = d / name
    nc3 = d / "c.nc"
    with netCDF4.Dataset(nc3, "w", format="NETCDF3_64BIT_OFFSET") as ds:
        ds.createDimension("time", None)
        ds.createDimension("y", 7)
        ds.createDimension("x", 9)
        ds.createVariable("time", "f8", ("time",))[:] = np.arange(12)
        ds.createVariable("tas", "f4", ("time", "y", "x"))[:] = np.ones((12, 7, 9))
        ds.createVariable("orog", "i2", ("y", "x"))[:] = np.ones((7, 9))
    out["netcdf3"] = nc3
    return out


@pytest.fixture(scope="module")
def profiles(sources: dict[str, Path]) -> dict[str, ProfileReport]:
    return {kind: profile_source(str(path)) for kind, path in sources.items()}


# --------------------------------------------------------------------------- oracles


def hdf5_chunk_sizes(path: Path, name: str, group: str | None = None
                     ) -> dict[tuple[int, ...], int]:
    """Chunk grid index -> stored bytes, from h5py's get_chunk_info (one call per chunk)."""
    with h5py.File(path, "r") as f:
        dset = f[group][name] if group else f[name]
        if dset.chunks is None:
            return {(0,) * dset.ndim: dset.id.get_storage_size()}
        out = {}
        for i in range(dset.id.get_num_chunks()):
            info = dset.id.get_chunk_info(i)
            idx = tuple(o // c for o, c in zip(info.chunk_offset, dset.chunks, strict=True))
            out[idx] = info.size
        return out


def zarr_chunk_files(store: Path, name: str) -> dict[tuple[int, ...], int]:
    """Chunk (shard) index -> file size, from the files under ``name/c/`` (Zarr v3)."""
    base = store / name / "c"
    return {tuple(int(p) for p in f.relative_to(base).parts): f.stat().st_size
            for f in base.rglob("*") if f.is_file()}


def kerchunk_sizes(path: Path, name: str) -> dict[tuple[int, ...], int]:
    refs = json.loads(path.read_text())["refs"]
    out = {}
    for key, value in refs.items():
        var, _, leaf = key.rpartition("/")
        if var != name or leaf.startswith("."):
            continue
        idx = tuple(int(p) for p in leaf.split("."))
        if isinstance(value, list):
            out[idx] = value[2]
        else:
            out[idx] = len(base64.b64decode(value.removeprefix("base64:"))
                           if value.startswith("base64:") else value.encode())
    return out


def touched_chunks(shape: tuple[int, ...], chunks: tuple[int, ...],
                   index: tuple) -> set[tuple[int, ...]]:
    """The chunk of every selected element: numpy selects the elements' flat positions."""
    positions = np.arange(math.prod(shape)).reshape(shape)[index].ravel()
    coords = np.unravel_index(positions, shape)
    return {tuple(int(c[i]) // k for c, k in zip(coords, chunks, strict=True))
            for i in range(positions.size)}


def check_stats(v, sizes: dict[tuple[int, ...], int], shape: tuple[int, ...],
                chunks: tuple[int, ...], itemsize: int) -> None:
    values = np.array(list(sizes.values()))
    assert v.chunks == chunks
    assert v.chunks_total == math.prod(math.ceil(s / c) for s, c in zip(shape, chunks,
                                                                        strict=True))
    assert v.chunks_stored == len(sizes)
    assert v.stored_total == values.sum()
    assert v.stored_min == values.min() and v.stored_max == values.max()
    assert v.stored_median == pytest.approx(np.median(values))
    assert v.uncompressed_chunk_bytes == math.prod(chunks) * itemsize
    assert v.ratio == pytest.approx(len(sizes) * math.prod(chunks) * itemsize / values.sum(),
                                    rel=1e-3)
    assert sum(b["count"] for b in v.histogram) == len(sizes)


# --------------------------------------------------------------------------- per kind


@pytest.mark.parametrize("kind", ["netcdf4", "kerchunk-json", "kerchunk-parquet",
                                  "icechunk"])
def test_chunk_sizes_are_the_hdf5_chunk_index(kind, sources, profiles) -> None:
    """The NetCDF-4 file and the references to it: the same chunks, as h5py lists them."""
    report = profiles[kind]
    assert report.kind == kind
    nc4 = sources["netcdf4"]
    for name, chunks in (("tas", CHUNKS), ("pr", PR_CHUNKS)):
        v = report.variable(name)
        assert (v.role, v.dims, v.shape, v.dtype) == ("data", ("time", "y", "x"), SHAPE,
                                                      "float32")
        check_stats(v, hdf5_chunk_sizes(nc4, name), SHAPE, chunks, 4)
        assert v.read_chunk_ms is not None and v.read_chunk_ms > 0
        assert len(v.read_chunk_ms_samples) == REPEATS
        assert v.read_chunk == "[" + ", ".join(f"0:{c}" for c in chunks) + "]"
    pr = report.variable("pr")
    assert pr.chunks_stored == math.ceil(PR_WRITTEN / PR_CHUNKS[0]) < pr.chunks_total
    assert report.variable("tas").ratio > 1.5  # zlib on one-decimal values
    assert report.variable("time").role == "coordinate"
    assert report.variable("time").read_chunk_ms is None  # an index: in memory


def test_netcdf4_contiguous_is_one_chunk(sources, profiles) -> None:
    v = profiles["netcdf4"].variable("orog")
    assert v.layout == "contiguous" and v.grid == (1, 1)
    check_stats(v, hdf5_chunk_sizes(sources["netcdf4"], "orog"), SHAPE[1:], SHAPE[1:], 8)
    assert v.ratio == 1


def test_kerchunk_sizes_are_the_references(sources, profiles) -> None:
    """Every array of the JSON references, inline ones (base64) included."""
    report = profiles["kerchunk-json"]
    for v in report.variables:
        sizes = kerchunk_sizes(sources["kerchunk-json"], v.name)
        with netCDF4.Dataset(sources["netcdf4"]) as ds:
            itemsize = ds[v.name].dtype.itemsize
        check_stats(v, sizes, v.shape, v.chunks, itemsize)
    assert {v.name for v in report.variables} == {"tas", "pr", "orog", "time"}


def test_zarr_sizes_are_the_chunk_files(sources, profiles) -> None:
    report = profiles["zarr"]
    assert report.kind == "zarr"
    for name, chunks in (("tas", CHUNKS), ("pr", PR_CHUNKS)):
        v = report.variable(name)
        assert v.unit == "chunk" and v.layout == "chunked"
        check_stats(v, zarr_chunk_files(sources["zarr"], name), SHAPE, chunks, 4)


def test_sharded_zarr_counts_shards(sources, profiles) -> None:
    v = profiles["sharded"].variable("tas")
    assert (v.unit, v.layout, v.inner_chunks) == ("shard", "sharded", (5, 8, 8))
    check_stats(v, zarr_chunk_files(sources["sharded"], "tas"), SHAPE, CHUNKS, 4)
    assert "18/18 shards" in render_profile(profiles["sharded"])


def test_netcdf3_records_uncompressed(sources, profiles) -> None:
    report = profiles["netcdf3"]
    with netCDF4.Dataset(sources["netcdf3"]) as ds:
        for v in report.variables:
            var = ds[v.name]
            record = var.dimensions and ds.dimensions[var.dimensions[0]].isunlimited()
            chunks = (1, *var.shape[1:]) if record else var.shape
            n = var.shape[0] if record else 1
            size = math.prod(chunks) * var.dtype.itemsize
            check_stats(v, {(i,): size for i in range(n)}, var.shape, chunks,
                        var.dtype.itemsize)
            assert v.ratio == 1
            assert v.unit == ("record" if record else "chunk")
            assert v.layout == ("record" if record else "contiguous")


def test_group(tmp_path: Path) -> None:
    path = write_nc4(tmp_path / "g.nc", group="forecast")
    report = profile_source(str(path), group="forecast")
    assert report.group == "forecast"
    check_stats(report.variable("tas"), hdf5_chunk_sizes(path, "tas", "forecast"), SHAPE,
                CHUNKS, 4)
    with pytest.raises(InvalidArgumentError, match="'nope' does not exist"):
        profile_source(str(path), group="nope")


# --------------------------------------------------------------------------- selections


SELECTIONS = [
    ("tas[:, 10, 20]", (slice(None), 10, 20)),
    ("tas[0]", (0,)),
    ("tas[-1, -5:, 3:33]", (-1, slice(-5, None), slice(3, 33))),
    ("tas[9:11, 15:17, 15:17]", (slice(9, 11), slice(15, 17), slice(15, 17))),
    ("tas[ 3 : 20 : 1 , : , 39 ]", (slice(3, 20), slice(None), 39)),
    ("tas[5:5]", (slice(5, 5),)),
    ("tas[:100, -100:2]", (slice(None, 100), slice(-100, 2))),
    ("tas", ()),
    ("pr[4:16, 0]", (slice(4, 16), 0)),
    ("orog[29, 0:1]", (29, slice(0, 1))),
]


def test_parse_read_selects_what_numpy_selects() -> None:
    arr = np.arange(math.prod(SHAPE)).reshape(SHAPE)
    for text, index in SELECTIONS:
        expr = parse_read(text)
        shape = SHAPE if expr.variable != "orog" else SHAPE[1:]
        a = arr if expr.variable != "orog" else arr[0]
        np.testing.assert_array_equal(a[expr.resolve(shape)], a[index], err_msg=text)


@pytest.mark.parametrize("kind", ["netcdf4", "kerchunk-json", "icechunk", "zarr",
                                  "sharded"])
def test_selection_touches_the_chunks_of_its_elements(kind, sources) -> None:
    path = sources[kind]
    for text, index in SELECTIONS:
        report = profile_source(str(path), read=text, repeats=1)
        r = report.read
        v = report.variable(r.variable)
        shape = v.shape
        if kind == "netcdf4":
            sizes = hdf5_chunk_sizes(path, v.name)
        elif kind in ("zarr", "sharded"):
            sizes = zarr_chunk_files(path, v.name)
        elif kind == "kerchunk-json":
            sizes = kerchunk_sizes(path, v.name)
        else:  # the Icechunk repository references the NetCDF-4 file's chunks
            sizes = hdf5_chunk_sizes(sources["netcdf4"], v.name)
        expected = touched_chunks(shape, v.chunks, index)
        assert r.chunks_touched == len(expected), (kind, text)
        stored = [sizes[c] for c in expected if c in sizes]
        assert r.chunks_touched_stored == len(stored), (kind, text)
        assert r.stored_bytes == sum(stored), (kind, text)
        itemsize = np.dtype(v.dtype).itemsize
        assert r.uncompressed_bytes == len(stored) * math.prod(v.chunks) * itemsize
        selected = np.zeros(shape)[index]
        assert r.shape == selected.shape and r.selection_bytes == selected.size * itemsize
        assert len(r.read_ms_samples) == 1 and r.read_ms >= 0


def test_selection_on_netcdf3_and_parquet(sources) -> None:
    r = profile_source(str(sources["netcdf3"]), read="tas[3:7, 2]").read
    assert (r.chunks_touched, r.chunks_touched_stored, r.unit) == (4, 4, "record")
    assert r.stored_bytes == 4 * 7 * 9 * 4
    r = profile_source(str(sources["kerchunk-parquet"]), read="pr[:, 0, 0]").read
    sizes = hdf5_chunk_sizes(sources["netcdf4"], "pr")
    assert r.chunks_touched == 5 and r.chunks_touched_stored == len(sizes) == 2
    assert r.stored_bytes == sum(sizes.values())


@pytest.mark.parametrize("text, needle", [
    ("tas[0:10:2]", "step 2"),
    ("tas[::-1]", "step -1"),
    ("tas[...]", "'...' is not an integer"),
    ("tas[1.5]", "'1.5' is not an integer"),
    ("tas[a]", "'a' is not an integer"),
    ("tas[[1, 2]]", "is not an integer"),
    ("tas[0", "expected VARIABLE[INDEX, ...]"),
    ("tas[]", "empty index"),
    ("tas[0,]", "'' is not an integer"),
    ("[0]", "expected VARIABLE[INDEX, ...]"),
])
def test_bad_expressions(text: str, needle: str) -> None:
    with pytest.raises(InvalidArgumentError, match=None) as err:
        parse_read(text)
    assert needle in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- CLI


def test_cli_json_and_text(sources) -> None:
    path = str(sources["kerchunk-json"])
    proc = run("inspect", path, "--read", "tas[:, 10, 20]", "--json")  # --read implies it
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    want = profile_source(path, read="tas[:, 10, 20]").to_dict()

    def untimed(d):
        if isinstance(d, dict):
            return {k: untimed(v) for k, v in d.items() if not k.startswith("read_ms")
                    and not k.startswith("read_chunk_ms")}
        return [untimed(x) for x in d] if isinstance(d, list) else d

    # the variables in any order: the order of the kerchunk reader's variables changes
    # with the hash seed (PYTHONHASHSEED), in this process and the command's alike
    by_name = {v["name"]: v for v in untimed(got.pop("variables"))}
    assert by_name == {v["name"]: v for v in untimed(want.pop("variables"))}
    assert untimed(got) == untimed(want)
    assert got["read"]["chunks_touched"] == 3

    proc = run("inspect", str(sources["netcdf4"]), "--profile")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    header = next(ln for ln in out.splitlines() if ln.startswith("name "))
    for col in ("chunk shape", "stored/total", "median", "raw/chunk", "ratio", "ms/chunk"):
        assert col in header
    tas = next(ln for ln in out.splitlines() if ln.startswith("tas "))
    assert "(10, 16, 16)" in tas and "18/18" in tas
    assert "tas: stored chunk sizes (18 chunks)" in out and "#" in out
    assert "read " not in out  # no selection asked for

    proc = run("inspect", str(sources["netcdf4"]), "--read", "pr[-1]")
    assert proc.returncode == 0, proc.stderr
    assert "selection  pr[24, 0:30, 0:40]" in proc.stdout
    assert "touches    1 of 5 chunks (1 x 1 x 1), 0 stored" in proc.stdout


def test_cli_without_profile_is_the_preflight_report(sources) -> None:
    from zarrport.inspect import inspect_source

    proc = run("inspect", str(sources["netcdf4"]), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == inspect_source(str(sources["netcdf4"])).to_dict()
    assert_clean_failure(run("inspect", str(sources["zarr"])), "directory")


@pytest.mark.parametrize("kind, args, needles", [
    ("netcdf4", ["--read", "nope[0]"], ["no variable 'nope'", "variables: "]),
    ("icechunk", ["--read", "tas[25]"], ["index 25 is out of range", "length 25"]),
    ("zarr", ["--read", "tas[0, -31]"], ["index -31 is out of range", "dimension 1"]),
    ("kerchunk-json", ["--read", "tas[1, 2, 3, 4]"], ["4 indices", "3 dimension(s)"]),
    ("kerchunk-parquet", ["--read", "tas[0:4:2]"], ["only steps of 1"]),
    ("netcdf3", ["--read", "tas[...]"], ["not an integer or a slice"]),
    ("netcdf4", ["--read", "__import__('os').system('true')"], ["no variable"]),
    ("netcdf4", ["--profile", "--subchunk-mb", "2"], ["--subchunk-mb", "--profile"]),
    ("netcdf4", ["--read", "tas[0]", "--inline-limit-mb", "1"], ["--inline-limit-mb"]),
    ("netcdf3", ["--profile", "--group", "g"], ["no groups"]),
    ("zarr", ["--profile", "--group", "g"], ["group 'g' does not exist"]),
])
def test_cli_bad_input(kind, args, needles, sources) -> None:
    assert_clean_failure(run("inspect", str(sources[kind]), *args), *needles)


def test_cli_bad_sources(tmp_path: Path) -> None:
    from zarrport.testing.grib_synthetic import grib_message

    grib = tmp_path / "t.grib2"
    grib.write_bytes(grib_message())
    proc = run("inspect", str(grib), "--profile")
    assert_clean_failure(proc, "does not profile GRIB")
    assert proc.returncode == 2
    assert_clean_failure(run("inspect", str(tmp_path / "missing.zarr"), "--profile"),
                         "does not exist")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x").write_text("x")
    assert_clean_failure(run("inspect", str(tmp_path / "junk"), "--profile"),
                         "not a Zarr store")


def test_help_says_read_implies_profile() -> None:
    proc = run("inspect", "--help")
    assert proc.returncode == 0
    assert "--profile" in proc.stdout and "implies --profile" in proc.stdout


def test_selection_combinations_small_grid(tmp_path: Path) -> None:
    """Every int/slice combination on a 2-D variable with uneven edge chunks."""
    path = tmp_path / "s.nc"
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("y", 7)
        ds.createDimension("x", 5)
        ds.createVariable("v", "i4", ("y", "x"), zlib=True,
                          chunksizes=(3, 2))[:] = np.arange(35).reshape(7, 5)
    sizes = hdf5_chunk_sizes(path, "v")
    per_dim = {7: ["0", "-1", "2:6", ":3", "5:", "3:3"], 5: ["4", "-5", "1:4", ":"]}
    for a, b in itertools.product(per_dim[7], per_dim[5]):
        text = f"v[{a}, {b}]"
        expr = parse_read(text)
        key = expr.resolve((7, 5))
        r = profile_source(str(path), read=text, repeats=1).read
        expected = touched_chunks((7, 5), (3, 2), key)
        assert r.chunks_touched == len(expected), text
        assert r.stored_bytes == sum(sizes[c] for c in expected), text


def test_batch_output_profiles_its_collection(tmp_path: Path) -> None:
    """A batch output is its one collection's Icechunk repository; the small inlined or
    native chunks there are sized as Icechunk returns their bytes (store.get)."""
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    from zarrport.open import open_icechunk_store
    from zarrport.pipeline.batch import run_batch
    from zarrport.testing.samples import write_cmip6_year

    for year in (2015, 2016):
        write_cmip6_year(tmp_path / "src" / f"tas_day_M_ssp585_r1i1p1f1_gn_{year}0101-"
                         f"{year}1231.nc", year, nlat=4, nlon=8)
    run_batch(f"{tmp_path}/src/*.nc", str(tmp_path / "out"), concat_dim="time")
    report = profile_source(str(tmp_path / "out"), read="tas[:, 1, 2]")
    assert report.kind == "icechunk" and "/collections/" in report.url
    store = open_icechunk_store(report.url)
    group = zarr.open_group(store, mode="r", zarr_format=3)
    for v in report.variables:
        arr = group[v.name]
        sizes = {}
        for idx in itertools.product(*(range(g) for g in v.grid)):
            key = f"{arr.path}/" + arr.metadata.encode_chunk_key(idx)
            buf = sync(store.get(key, default_buffer_prototype()))
            if buf is not None:
                sizes[idx] = len(buf.to_bytes())
        check_stats(v, sizes, v.shape, v.chunks, np.dtype(v.dtype).itemsize)
    assert report.read.chunks_touched == report.variable("tas").chunks_total == 1
