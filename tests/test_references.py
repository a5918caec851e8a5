"""zarrport's reader of kerchunk references returns what xarray's Zarr backend returns."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import xarray as xr

import zarrport
from zarrport.testing.samples import write_cmip6_archive

SELECTIONS = [
    (slice(None), 3, 5),  # one point's series across every chunk
    (400,),  # one time step
    (slice(10, 700, 9), slice(1, 7), [0, 5, 2]),  # strided, partial, unordered
    (-1, slice(None, None, -1), 0),  # negative index, reversed
    ([3, 3, 800], 2, slice(None)),  # repeated indices, across files
]


@pytest.fixture(scope="module", params=["json", "parquet"])
def refs(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("refs")
    paths = write_cmip6_archive(d / "src", years=[2015, 2016, 2017], nlat=8, nlon=12,
                                time_chunk=5, lat_chunk=3, lon_chunk=5)
    out = d / f"tas.{request.param}"
    zarrport.virtualize([str(p) for p in paths], str(out), concat_dim="time")
    return out


@pytest.mark.parametrize("sel", SELECTIONS)
def test_reader_matches_zarr_backend(refs, sel):
    ours = zarrport.open_dataset(str(refs))
    theirs = zarrport.open_dataset(str(refs), engine="zarr")
    a = ours["tas"][sel].values
    b = theirs["tas"][sel].values
    assert a.shape == b.shape
    np.testing.assert_array_equal(a, b)
    assert np.isnan(ours["tas"].values).any()  # fill values decoded as NaN, like zarr's


def test_registered_xarray_engine_and_dask(refs):
    ds = xr.open_dataset(str(refs), engine="zarrport", chunks={})
    assert ds["tas"].chunks is not None
    expected = zarrport.open_dataset(str(refs), engine="zarr")["tas"].values
    # Dask reads chunks from several threads at once: the lazily built chunk table must be
    # complete before any of them uses it (a race here read chunks as missing -> NaN)
    for _ in range(3):
        fresh = xr.open_dataset(str(refs), engine="zarrport", chunks={})
        np.testing.assert_array_equal(fresh["tas"].values, expected)
    # the lazy array survives pickling (what a Dask cluster does with it)
    backend = ds["tas"].variable._data
    clone = pickle.loads(pickle.dumps(backend))
    assert clone is not None


def test_missing_chunks_read_as_fill(tmp_path):
    import h5py

    src = tmp_path / "sparse.h5"
    with h5py.File(src, "w") as f:
        d = f.create_dataset("v", shape=(100, 1000), chunks=(10, 1000), dtype="i4",
                             fillvalue=-7)
        d[20:30] = 5  # only one chunk is ever written
    out = tmp_path / "sparse.json"
    zarrport.virtualize(str(src), str(out))
    for engine in ("zarrport", "zarr"):
        values = zarrport.open_dataset(str(out), engine=engine)["v"].values
        assert (values[20:30] == 5).all() and (values[:20] == -7).all(), engine
