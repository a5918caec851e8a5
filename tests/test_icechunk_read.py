"""zarrport's Icechunk reader (``zarrport.icechunk_read``): the same values, dtypes,
attributes and encodings as xarray's Zarr engine over the same Icechunk store, on
multi-file batch outputs with virtual and native chunks, missing chunks (fill values) and
several dtypes; sources changed since referencing and codecs it does not know go through
Icechunk / zarr unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr

import zarrport
from zarrport import icechunk_read
from zarrport.open import open_icechunk_store
from zarrport.pipeline import run_batch

icechunk = pytest.importorskip("icechunk")


def _write_year(path: Path, year: int, *, fill_gap: bool) -> None:
    """One yearly file, every variable above zarrport's 64 KiB inline size except ``flag``:
    float32 zlib+shuffle per-step chunks, int16 packed with scale_factor/_FillValue (zlib),
    float64 contiguous, int32 in chunks that straddle the files (5 of 12 steps: the
    combine writes native chunks), uint8 (inlined: a native chunk), a chunked variable
    whose chunks are never written (``fill_gap``: the fill value)."""
    rng = np.random.default_rng(year)
    nt, ny, nx = 12, 60, 80
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", nt)
        nc.createDimension("y", ny)
        nc.createDimension("x", nx)
        t = nc.createVariable("time", "f8", ("time",))
        t.units, t.calendar = "days since 2000-01-01", "noleap"
        t[:] = (year - 2000) * 365 + np.arange(nt) * 30.0
        y = nc.createVariable("y", "f8", ("y",))
        y[:] = np.arange(ny) * 1.5
        x = nc.createVariable("x", "f4", ("x",))
        x[:] = np.arange(nx) * 2.0
        tas = nc.createVariable("tas", "f4", ("time", "y", "x"), zlib=True, shuffle=True,
                                complevel=4, chunksizes=(1, ny, nx), fill_value=1e20)
        v = rng.normal(280, 5, (nt, ny, nx)).astype("f4")
        v[2, 1, 1:3] = 1e20  # fill points
        tas[:] = v
        tas.units = "K"
        pr = nc.createVariable("pr", "i2", ("time", "y", "x"), zlib=True,
                               chunksizes=(4, ny, 20), fill_value=-32767)
        pr.scale_factor, pr.add_offset = 0.01, 5.0
        pr.set_auto_maskandscale(False)
        p = rng.integers(-30000, 30000, (nt, ny, nx)).astype("i2")
        p[0, 0, 0] = -32767
        pr[:] = p
        flat = nc.createVariable("flat", "f8", ("time", "y", "x"), contiguous=True)
        flat[:] = rng.normal(0, 1, (nt, ny, nx))
        flag = nc.createVariable("flag", "u1", ("time", "y", "x"), chunksizes=(6, ny, nx))
        flag[:] = rng.integers(0, 255, (nt, ny, nx)).astype("u1")
        count = nc.createVariable("count", "i4", ("time", "y", "x"), chunksizes=(5, 30, 40))
        count[:] = rng.integers(-(2**31), 2**31 - 1, (nt, ny, nx)).astype("i4")
        gap = nc.createVariable("gap", "f4", ("time", "y", "x"), chunksizes=(2, ny, nx),
                                fill_value=-9.5, zlib=True)
        if not fill_gap:
            gap[4:6] = np.full((2, ny, nx), 7.25, dtype="f4")  # other chunks never written
        else:
            gap[:] = rng.normal(0, 1, (nt, ny, nx)).astype("f4")


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("icechunk-read")
    src = root / "src"
    src.mkdir()
    for i, year in enumerate(range(2000, 2004)):
        _write_year(src / f"v_{year}.nc", year, fill_gap=i % 2 == 1)
    result = run_batch(str(src / "*.nc"), str(root / "out"), workers=1)
    assert result.ok, result
    (repo,) = (root / "out" / "collections").glob("*.icechunk")
    return repo


def _standard(repo: Path, **kw) -> xr.Dataset:
    return xr.open_dataset(open_icechunk_store(repo.as_uri()), engine="zarr",
                           consolidated=False, zarr_format=3, **kw)


def _readers(ds: xr.Dataset) -> list[icechunk_read._Reader]:
    out = []
    for v in ds.variables.values():
        data = v._data
        while not isinstance(data, icechunk_read.IcechunkArrayWrapper):
            data = getattr(data, "array", None)
            if data is None:
                break
        else:
            out.append(data._reader)
    return out


def _assert_identical(fast: xr.Dataset, std: xr.Dataset) -> None:
    assert set(fast.variables) == set(std.variables)
    for name in std.variables:
        a, e = fast[name], std[name]
        assert a.dims == e.dims and a.attrs == e.attrs, name
        assert a.encoding.keys() == e.encoding.keys(), name
        assert {k: str(v) for k, v in a.encoding.items()} == {
            k: str(v) for k, v in e.encoding.items()}, name
        av, ev = a.values, e.values
        assert av.dtype == ev.dtype, (name, av.dtype, ev.dtype)
        np.testing.assert_array_equal(av, ev, err_msg=name)


@pytest.mark.parametrize("decode", [True, False], ids=["cf", "raw"])
def test_same_dataset_as_xarrays_zarr_engine(batch: Path, decode: bool) -> None:
    fast = zarrport.open_dataset(str(batch), decode_cf=decode)
    std = _standard(batch, decode_cf=decode)
    readers = {r.path: r for r in _readers(fast)}
    # the fast path is taken for the chunked numeric variables
    assert {"tas", "pr", "flat", "flag", "count", "gap"} <= set(readers), sorted(readers)
    _assert_identical(fast, std)
    how = {name: set(np.unique(r.how).tolist()) for name, r in readers.items()}
    assert icechunk_read._LOCAL in how["tas"]  # virtual chunks read with pread
    assert icechunk_read._MISSING in how["gap"]  # chunks never written: fill value
    assert how["flag"] == {icechunk_read._STORE}  # inlined: native chunks via Icechunk
    assert {icechunk_read._LOCAL, icechunk_read._STORE} <= how["count"]  # misaligned
    # selections across chunks and files: points, strided slices, fancy indices
    for sel in ({"y": 1, "x": 3}, {"time": slice(3, 40, 5)},
                {"time": [0, 13, 13, 47, 2], "x": [4, 0]}, {"time": -1},
                {"time": slice(None, None, -7), "y": slice(1, 3)}):
        for name in ("tas", "pr", "flat", "flag", "count", "gap", "time"):
            s = {k: v for k, v in sel.items() if k in std[name].dims}
            np.testing.assert_array_equal(fast[name].isel(s).values,
                                          std[name].isel(s).values, err_msg=f"{name} {sel}")
    # point-wise (vectorized) indexing is left to zarr and agrees too
    pts = {"time": xr.DataArray([1, 30, 45], dims="p"), "x": xr.DataArray([0, 2, 4], dims="p")}
    np.testing.assert_array_equal(fast.tas.isel(pts).values, std.tas.isel(pts).values)


def test_same_values_with_dask_chunks(batch: Path) -> None:
    fast = zarrport.open_dataset(str(batch), chunks={})
    std = _standard(batch)
    assert fast.tas.chunks is not None
    _assert_identical(fast.compute(), std)


def _assert_same_outcome(fast: xr.Dataset, std: xr.Dataset) -> None:
    """Both readers give the same values of ``tas``, or fail with the same error type."""
    outcome = []
    for ds in (fast, std):
        try:
            outcome.append(ds.tas.values)
        except Exception as err:  # noqa: BLE001 - Icechunk's error, whatever it is
            outcome.append(type(err).__name__)
    if isinstance(outcome[1], str):
        assert outcome[0] == outcome[1]
    else:
        np.testing.assert_array_equal(outcome[0], outcome[1])


def test_a_source_changed_since_referencing_goes_through_icechunk(batch: Path) -> None:
    """A local source whose modification time differs from the provenance's is not read
    directly: Icechunk's own checksum check decides, as with xarray's zarr engine."""
    fast0 = zarrport.open_dataset(str(batch))
    sources = sorted({p for r in _readers(fast0) for p in r.trusted})
    assert len(sources) == 4
    victim = Path(sources[1].removeprefix("file://"))
    st = victim.stat()
    try:
        os.utime(victim, (st.st_atime, st.st_mtime + 3600))
        fast = zarrport.open_dataset(str(batch))
        assert sources[1] not in _readers(fast)[0].trusted
        _assert_same_outcome(fast, _standard(batch))
    finally:
        os.utime(victim, (st.st_atime, st.st_mtime))
    assert sources[1] in _readers(zarrport.open_dataset(str(batch)))[0].trusted


def test_a_source_changed_after_open_is_checked_at_every_read(batch: Path) -> None:
    """Opened while the sources were unchanged, read after one changed: that file's chunks
    go through Icechunk (which decides), exactly as for xarray's zarr engine."""
    fast = zarrport.open_dataset(str(batch))
    sources = sorted({p for r in _readers(fast) for p in r.trusted})
    victim = Path(sources[1].removeprefix("file://"))
    st = victim.stat()
    try:
        os.utime(victim, (st.st_atime, st.st_mtime + 3600))
        _assert_same_outcome(fast, _standard(batch))
    finally:
        os.utime(victim, (st.st_atime, st.st_mtime))


def test_group_opens_that_group(tmp_path: Path) -> None:
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "r")))
    session = repo.writable_session("main")
    root = zarr.open_group(session.store, mode="w", zarr_format=3)
    a = root.create_array("top", shape=(3,), dtype="f4", dimension_names=["x"])
    a[:] = [1, 2, 3]
    g = root.create_group("g")
    b = g.create_array("inner", shape=(2,), dtype="i2", dimension_names=["y"])
    b[:] = [7, 8]
    session.commit("two groups")
    ds = zarrport.open_dataset(str(tmp_path / "r"), group="g")
    std = xr.open_dataset(open_icechunk_store((tmp_path / "r").as_uri()), engine="zarr",
                          consolidated=False, zarr_format=3, group="g")
    assert list(ds.data_vars) == list(std.data_vars) == ["inner"]
    assert list(ds.inner.values) == [7, 8]


def test_codecs_it_does_not_know_are_left_to_zarr(tmp_path: Path) -> None:
    """An Icechunk repository written by zarr with a transpose filter and sharding: those
    arrays are read by zarr; plain ones by this reader; values equal either way."""
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "r")))
    session = repo.writable_session("main")
    root = zarr.open_group(session.store, mode="w", zarr_format=3)
    data = np.arange(6 * 4 * 5, dtype="i8").reshape(6, 4, 5)
    kinds = {"plain": {}, "transposed": {"filters": [zarr.codecs.TransposeCodec(
        order=(2, 1, 0))]}, "sharded": {"shards": (6, 4, 5)},
        "zstd": {"compressors": [zarr.codecs.ZstdCodec(level=3)]},
        "gzip": {"compressors": [zarr.codecs.GzipCodec(level=2)]}}
    for name, kw in kinds.items():
        a = root.create_array(name, shape=data.shape, chunks=(2, 4, 5), dtype="i8",
                              dimension_names=("t", "y", "x"), fill_value=-1, **kw)
        a[:4] = data[:4]  # the last chunk stays missing: fill value
    session.commit("arrays")
    url = (tmp_path / "r").as_uri()
    fast = zarrport.open_dataset(url)
    read_here = {r.path for r in _readers(fast)}
    assert read_here == {"plain", "zstd", "gzip"}
    std = xr.open_dataset(open_icechunk_store(url), engine="zarr", consolidated=False,
                          zarr_format=3)
    _assert_identical(fast, std)
    np.testing.assert_array_equal(fast.plain.values[4:], -1)
    # no zarrport provenance: nothing is trusted, every chunk is read through Icechunk
    assert all(not r.trusted for r in _readers(fast))


def test_engine_zarr_reads_every_chunk_through_zarr(batch: Path) -> None:
    ds = zarrport.open_dataset(str(batch), engine="zarr")
    assert _readers(ds) == []
    _assert_identical(zarrport.open_dataset(str(batch)), ds)
