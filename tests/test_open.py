"""open_dataset recognises every kind of store from its content, not its name."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import xarray as xr

import zarrport
from zarrport.errors import SourceNotFoundError, UnrecognizedFormatError
from zarrport.open import detect
from zarrport.testing.samples import write_cmip6_year


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    d = tmp_path_factory.mktemp("open")
    return write_cmip6_year(d / "tas_2015.nc", 2015, nlat=4, nlon=8)


@pytest.fixture(scope="module")
def expected(source):
    return xr.open_dataset(source, engine="netcdf4")


def check(ds: xr.Dataset, expected: xr.Dataset) -> None:
    np.testing.assert_array_equal(ds["tas"].values, expected["tas"].values)
    assert ds["time"].values[0] == expected["time"].values[0]  # decoded, same calendar
    assert ds["tas"].attrs["units"] == "K"


@pytest.mark.parametrize(("fmt", "kind"), [("json", "kerchunk-json"),
                                           ("parquet", "kerchunk-parquet"),
                                           ("icechunk", "icechunk")])
def test_opens_what_virtualize_writes(tmp_path, source, expected, fmt, kind):
    out = tmp_path / f"tas.{fmt}"
    zarrport.virtualize(str(source), str(out))
    assert detect(str(out)) == kind
    ds = zarrport.open_dataset(str(out))
    assert isinstance(ds, xr.Dataset)
    assert not isinstance(ds["tas"].variable._data, np.ndarray)  # lazy
    check(ds, expected)
    # the name does not matter: the content decides
    renamed = tmp_path / "references-without-suffix"
    (shutil.copytree if out.is_dir() else shutil.copy)(out, renamed)
    assert detect(str(renamed)) == kind
    check(zarrport.open_dataset(str(renamed)), expected)
    check(zarrport.open_dataset(renamed.as_uri()), expected)


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("consolidated", [True, False])
def test_opens_zarr_stores(tmp_path, expected, zarr_format, consolidated):
    store = tmp_path / "tas.zarr"
    expected.to_zarr(store, zarr_format=zarr_format, consolidated=consolidated)
    assert detect(str(store)) == "zarr"
    check(zarrport.open_dataset(str(store)), expected)


def test_opens_netcdf_files(tmp_path, source, expected):
    assert detect(str(source)) == "netcdf4"
    check(zarrport.open_dataset(str(source)), expected)
    nc3 = tmp_path / "tas3.nc"
    expected.to_netcdf(nc3, format="NETCDF3_CLASSIC")
    assert detect(str(nc3)) == "netcdf3"
    check(zarrport.open_dataset(str(nc3)), expected)


@pytest.mark.s3
def test_opens_netcdf_files_on_object_stores(tmp_path, source, expected, s3_server):
    """Remote NetCDF files are read as file objects: NetCDF-4 by h5netcdf, NetCDF-3 by
    xarray's scipy engine (scipy is a base dependency for it)."""
    nc3 = tmp_path / "tas3.nc"
    expected.to_netcdf(nc3, format="NETCDF3_CLASSIC")
    s3_server.create_bucket("open-netcdf")
    for kind, path in (("netcdf4", source), ("netcdf3", nc3)):
        url = s3_server.put_object("open-netcdf", path.name, path.read_bytes())
        assert detect(url, s3_server.storage_options) == kind
        check(zarrport.open_dataset(url, storage_options=s3_server.storage_options), expected)


def test_chunks_give_dask_arrays(tmp_path, source):
    out = tmp_path / "tas.json"
    zarrport.virtualize(str(source), str(out))
    ds = zarrport.open_dataset(str(out), chunks={})
    assert ds["tas"].chunks is not None


def test_unrecognised_and_missing(tmp_path):
    noise = tmp_path / "noise.bin"
    noise.write_bytes(os.urandom(100))
    with pytest.raises(UnrecognizedFormatError):
        zarrport.open_dataset(str(noise))
    other_json = tmp_path / "other.json"
    other_json.write_text('{"hello": 1}')
    with pytest.raises(UnrecognizedFormatError, match="not kerchunk"):
        zarrport.open_dataset(str(other_json))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(UnrecognizedFormatError, match="directory"):
        zarrport.open_dataset(str(tmp_path / "emptydir"))
    with pytest.raises(SourceNotFoundError):
        zarrport.open_dataset(str(tmp_path / "nothing-here"))
