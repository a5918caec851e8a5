"""The correctness rules of virtualization, each against netCDF4 reading the sources.

Every test here fails if the corresponding fix is removed: the 0-d key, contiguous
sub-chunking, inlining/refusal of what cannot be referenced, the chunk-alignment check of
combines, and the encoding comparison across files.
"""

from __future__ import annotations

import json

import h5py
import hdf5plugin
import netCDF4
import numpy as np
import pytest
import xarray as xr

import zarrport
from zarrport.errors import (
    IncompatibleSourcesError,
    MisalignedChunksError,
    UnsupportedVariableError,
)
from zarrport.testing.samples import write_cmip6_archive, write_cmip6_year
from zarrport.verify import compare_datasets, verify
from zarrport.virtual.api import build, write
from zarrport.virtual.parse import ParseOptions, parse_source

FORMATS = ["json", "parquet", "icechunk"]


def oracle(*paths):
    datasets = [xr.open_dataset(p, engine="netcdf4") for p in paths]
    if len(datasets) == 1:
        return datasets[0]
    return xr.concat(datasets, dim="time", data_vars="minimal", coords="minimal",
                     compat="override", join="override", combine_attrs="override")


def assert_same(expected: xr.Dataset, actual: xr.Dataset) -> None:
    problems = compare_datasets(expected, actual)
    assert not problems, problems


# ------------------------------------------------------------------ 0-d variables


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("inline_bytes", [0, 64 * 1024], ids=["referenced", "inlined"])
def test_scalar_variable_reads_back(tmp_path, fmt, inline_bytes):
    src = write_cmip6_year(tmp_path / "tas_2015.nc", 2015, nlat=4, nlon=8)
    vds = build([str(src)], options=ParseOptions(inline_bytes=inline_bytes))
    height = vds.variables["height"]
    assert height.shape == ()
    assert height.is_inline == (inline_bytes > 0)
    out = tmp_path / f"out.{fmt}"
    write(vds, out.as_uri(), fmt, storage_options=None, output_storage_options=None,
          overwrite=False, provenance={"sources": vds.source_stats})
    ds = zarrport.open_dataset(str(out))
    # VirtualiZarr's kerchunk writer keys 0-d arrays "height/" (NaN in JSON, error in
    # Parquet); the reference must be "height/0"
    assert float(ds["height"].values) == 2.0
    assert_same(oracle(src), ds)


def test_scalar_key_is_chunk_zero(tmp_path):
    src = write_cmip6_year(tmp_path / "tas_2015.nc", 2015, nlat=4, nlon=8)
    vds = build([str(src)], options=ParseOptions(inline_bytes=0))
    out = tmp_path / "out.json"
    write(vds, out.as_uri(), "json", storage_options=None, output_storage_options=None,
          overwrite=False, provenance={})
    refs = json.loads(out.read_text())["refs"]
    assert "height/0" in refs and isinstance(refs["height/0"], list)
    assert "height/" not in refs


# ------------------------------------------------------------------ contiguous sub-chunks


def test_contiguous_variable_is_split_into_byte_ranges(tmp_path):
    src = write_cmip6_year(tmp_path / "tas_2015.nc", 2015, nlat=64, nlon=128, contiguous=True)
    with h5py.File(src) as f:
        assert f["tas"].chunks is None  # really contiguous
        whole = f["tas"].id.get_storage_size()
    out = tmp_path / "tas.json"
    zarrport.virtualize(str(src), str(out), subchunk_mb=1)
    refs = json.loads(out.read_text())["refs"]
    zarray = json.loads(refs["tas/.zarray"])
    step = 64 * 128 * 4
    k = zarray["chunks"][0]
    assert zarray["chunks"][1:] == [64, 128]
    assert 1 <= k and k * step <= 2**20 and 365 % k == 0
    keys = [key for key in refs if key.startswith("tas/") and not key.startswith("tas/.")]
    assert len(keys) == 365 // k
    # reading one time step fetches one sub-chunk, not the whole variable
    first = refs["tas/0.0.0"]
    assert first[2] == k * step < whole
    assert_same(oracle(src), zarrport.open_dataset(str(out)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_contiguous_subchunks_read_back_in_every_format(tmp_path, fmt):
    src = write_cmip6_year(tmp_path / "tas_2015.nc", 2015, nlat=16, nlon=32, contiguous=True)
    out = tmp_path / f"tas.{fmt}"
    result = zarrport.virtualize(str(src), str(out), subchunk_mb=0.01)
    assert result.referenced_chunks > 1
    assert_same(oracle(src), zarrport.open_dataset(str(out)))


def test_contiguous_files_of_different_lengths_combine(tmp_path):
    # 365 and 366 days: the per-file sub-chunk lengths must be made equal (a divisor of both)
    paths = [
        write_cmip6_year(tmp_path / "a.nc", 2015, nlat=32, nlon=32, contiguous=True,
                         calendar="standard"),
        write_cmip6_year(tmp_path / "b.nc", 2016, nlat=32, nlon=32, contiguous=True,
                         calendar="standard"),
    ]
    out = tmp_path / "tas.json"
    # the smallest sub-chunk accepted (MIN_SUBCHUNK_MB): 2 time steps of 4 KiB each
    result = zarrport.virtualize([str(p) for p in paths], str(out), concat_dim="time",
                                 subchunk_mb=0.01)
    assert result.native_chunks == 0
    assert_same(oracle(*paths), zarrport.open_dataset(str(out)))


# ------------------------------------------------------------------ inline or refuse


def _lz4_file(path, n):
    with h5py.File(path, "w") as f:
        f.create_dataset("packed", data=np.arange(n, dtype="f4"), chunks=(min(n, 1024),),
                         **hdf5plugin.LZ4())
        f.create_dataset("plain", data=np.arange(10, dtype="i4"))
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_small_unreferenceable_variable_is_inlined(tmp_path, fmt):
    src = _lz4_file(tmp_path / "small.h5", 2000)
    out = tmp_path / f"small.{fmt}"
    result = zarrport.virtualize(str(src), str(out))
    assert "packed" in result.inlined_variables
    assert "lz4" in result.notes["packed"]
    ds = zarrport.open_dataset(str(out))
    np.testing.assert_array_equal(ds["packed"].values, np.arange(2000, dtype="f4"))


def test_large_unreferenceable_variable_is_refused_by_name(tmp_path):
    src = _lz4_file(tmp_path / "large.h5", 200_000)
    out = tmp_path / "large.json"
    with pytest.raises(UnsupportedVariableError, match="'packed'.*lz4.*too large") as err:
        zarrport.virtualize(str(src), str(out), inline_limit_mb=0.1)
    assert err.value.variable == "packed"
    assert not out.exists()


def test_vlen_strings_and_compact_layout_are_inlined(tmp_path):
    src = tmp_path / "mixed.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("names", data=np.array(["alpha", "béta", "gamma"], dtype=object),
                         dtype=h5py.string_dtype())
        space = h5py.h5s.create_simple((4,))
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_layout(h5py.h5d.COMPACT)
        dsid = h5py.h5d.create(f.id, b"compact", h5py.h5t.NATIVE_INT32, space, dcpl=plist)
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array([1, 2, 3, 4], dtype="i4"))
    vds = parse_source(str(src))
    assert vds.variables["names"].is_inline
    assert vds.variables["compact"].is_inline and vds.variables["compact"].layout == "compact"
    for fmt in FORMATS:
        out = tmp_path / f"mixed.{fmt}"
        zarrport.virtualize(str(src), str(out))
        ds = zarrport.open_dataset(str(out))
        assert [str(s) for s in ds["names"].values] == ["alpha", "béta", "gamma"]
        np.testing.assert_array_equal(ds["compact"].values, [1, 2, 3, 4])


def test_compound_variable_is_refused_by_name(tmp_path):
    src = tmp_path / "compound.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("obs", data=np.zeros(3, dtype=[("a", "i4"), ("b", "f8")]))
    with pytest.raises(UnsupportedVariableError, match="'obs'.*compound"):
        zarrport.virtualize(str(src), str(tmp_path / "c.json"))


# ------------------------------------------------------------------ misaligned combine


@pytest.fixture
def misaligned_archive(tmp_path):
    # 365-day files with a time chunk of 30: the second file starts mid-chunk
    return write_cmip6_archive(tmp_path / "src", years=range(2015, 2018), nlat=6, nlon=8,
                               time_chunk=30)


def test_misaligned_combine_writes_native_chunks_in_icechunk(tmp_path, misaligned_archive):
    out = tmp_path / "tas.icechunk"
    result = zarrport.virtualize([str(p) for p in misaligned_archive], str(out),
                                 concat_dim="time")
    # chunks 12 (days 360-390) onward straddle files: native; the first file's 12 are virtual
    assert result.native_chunks > 0
    assert result.referenced_chunks >= 12
    ds = zarrport.open_dataset(str(out))
    assert_same(oracle(*misaligned_archive), ds)
    assert verify(str(out)).ok


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_misaligned_combine_is_refused_for_kerchunk(tmp_path, misaligned_archive, fmt):
    out = tmp_path / f"tas.{fmt}"
    with pytest.raises(MisalignedChunksError, match="'tas'.*Icechunk"):
        zarrport.virtualize([str(p) for p in misaligned_archive], str(out), concat_dim="time")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "src"]  # no temporary leftovers


@pytest.mark.parametrize("fmt", FORMATS)
def test_aligned_combine_is_fully_virtual(tmp_path, fmt):
    paths = write_cmip6_archive(tmp_path / "src", years=range(2015, 2018), nlat=6, nlon=8,
                                time_chunk=73)  # 365 = 5 * 73
    out = tmp_path / f"tas.{fmt}"
    result = zarrport.virtualize([str(p) for p in paths], str(out), concat_dim="time")
    assert result.native_chunks == 0
    assert result.referenced_chunks == 15
    assert_same(oracle(*paths), zarrport.open_dataset(str(out)))


def test_combine_orders_files_by_time_not_name(tmp_path):
    a = write_cmip6_year(tmp_path / "z_first.nc", 2015, nlat=4, nlon=4)
    b = write_cmip6_year(tmp_path / "a_second.nc", 2016, nlat=4, nlon=4)
    out = tmp_path / "tas.json"
    zarrport.virtualize([str(b), str(a)], str(out), concat_dim="time")
    ds = zarrport.open_dataset(str(out))
    assert bool((ds.time.diff("time") > np.timedelta64(0)).all()) if ds.time.dtype.kind == "M" \
        else all(ds.time.values[i] < ds.time.values[i + 1] for i in range(len(ds.time) - 1))
    assert_same(oracle(a, b), ds)


# ------------------------------------------------------------------ differing encodings


def _packed_file(path, year, *, scale=0.01, offset=0.0, fill=-9999, dtype="i2",
                 zlib=True, chunk=10):
    # 20 x 2000 int16 = 80 KB: above the inline threshold, so "pr" is referenced
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", 20)
        nc.createDimension("x", 2000)
        t = nc.createVariable("time", "f8", ("time",))
        t.units = "days since 2000-01-01"
        t[:] = np.arange(20) + 20 * (year - 2000)
        v = nc.createVariable("pr", dtype, ("time", "x"), zlib=zlib,
                              chunksizes=(chunk, 2000), fill_value=fill)
        v.scale_factor = scale
        v.add_offset = offset
        v.set_auto_maskandscale(False)
        v[:] = (np.arange(40000).reshape(20, 2000) % 50).astype(dtype)
    return path


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"scale": 0.1}, "scale_factor"),
        ({"offset": 5.0}, "add_offset"),
        ({"fill": -1}, "fill value"),
        ({"dtype": "i4"}, "dtype"),
        ({"zlib": False}, "codecs"),
        ({"chunk": 5}, "chunk shape"),
    ],
)
def test_differing_encodings_are_refused(tmp_path, change, what):
    a = _packed_file(tmp_path / "a.nc", 2000)
    b = _packed_file(tmp_path / "b.nc", 2001, **change)
    with pytest.raises(IncompatibleSourcesError, match=f"'pr'.*{what}") as err:
        zarrport.virtualize([str(a), str(b)], str(tmp_path / "out.json"), concat_dim="time")
    assert "a.nc" in str(err.value) and "b.nc" in str(err.value)
    assert err.value.variable == "pr"


def test_same_encodings_combine_packed_values(tmp_path):
    a = _packed_file(tmp_path / "a.nc", 2000)
    b = _packed_file(tmp_path / "b.nc", 2001)
    out = tmp_path / "out.json"
    zarrport.virtualize([str(a), str(b)], str(out), concat_dim="time")
    assert_same(oracle(a, b), zarrport.open_dataset(str(out)))


def test_time_units_that_differ_are_reencoded(tmp_path):
    paths = []
    for i, since in enumerate(["2000-01-01", "2001-01-01"]):
        p = tmp_path / f"f{i}.nc"
        with netCDF4.Dataset(p, "w") as nc:
            nc.createDimension("time", 3)
            t = nc.createVariable("time", "f8", ("time",))
            t.units = f"days since {since}"
            t.calendar = "noleap"
            t[:] = [0, 1, 2]
            v = nc.createVariable("x", "f4", ("time",))
            v[:] = [i, i, i]
        paths.append(p)
    out = tmp_path / "out.json"
    zarrport.virtualize([str(p) for p in paths], str(out), concat_dim="time")
    ds = zarrport.open_dataset(str(out))
    assert [d.year for d in ds.time.values] == [2000, 2000, 2000, 2001, 2001, 2001]


def test_progress_is_reported_per_source(tmp_path):
    paths = write_cmip6_archive(tmp_path / "src", years=range(2015, 2024), nlat=4, nlon=4)
    seen = []
    zarrport.virtualize([str(p) for p in paths], str(tmp_path / "tas.json"), concat_dim="time",
                        progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 9) for i in range(1, 10)]  # 9 files: parsed in the process pool


def test_dropping_a_refused_variable_lets_the_rest_through(tmp_path):
    src = tmp_path / "mixed.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("obs", data=np.zeros(3, dtype=[("a", "i4"), ("b", "f8")]))
        f.create_dataset("temp", data=np.arange(5, dtype="f4"))
    out = tmp_path / "mixed.json"
    result = zarrport.virtualize(str(src), str(out), drop_variables=["obs"])
    assert result.variables == ["temp"]
    np.testing.assert_array_equal(zarrport.open_dataset(str(out))["temp"].values,
                                  np.arange(5, dtype="f4"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_group_is_virtualized_on_its_own(tmp_path, fmt):
    src = tmp_path / "grouped.nc"
    with netCDF4.Dataset(src, "w") as nc:
        nc.createDimension("x", 3)
        nc.createVariable("top", "i4", ("x",))[:] = [1, 2, 3]
        g = nc.createGroup("forecast")
        g.createDimension("y", 2)
        v = g.createVariable("t2m", "f4", ("y",))
        v[:] = [280.5, 281.5]
        v.units = "K"
    out = tmp_path / f"forecast.{fmt}"
    zarrport.virtualize(str(src), str(out), group="forecast")
    ds = zarrport.open_dataset(str(out))
    assert list(ds.data_vars) == ["t2m"]
    assert_same(xr.open_dataset(src, group="forecast", engine="netcdf4"), ds)
    assert verify(str(out)).ok  # the recorded group is what verify compares against
