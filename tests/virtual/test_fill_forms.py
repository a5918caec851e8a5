"""Fill values and CF attributes that do not fit their variable's type.

Files written by other tools carry ``_FillValue``/``missing_value`` of another width or type
than their variable (NaN on an integer, 1000 on a byte, a double on a float), and
non-finite ``valid_range``. Whatever zarrport writes for them must (a) be metadata the
standard readers accept (zarr-python opens every array of the references / the Icechunk
store) and (b) decode through xarray's Zarr engine exactly as netCDF4's file decodes through
xarray -- which ``verify`` checks, with both readers for kerchunk outputs.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import zarrport
from zarrport.verify import verify

# name: (netCDF-3 type code for scipy, attributes); the data holds the "fill" where it can
NC3_CASES = {
    "i2_nan_fill": ("h", {"_FillValue": np.float64(np.nan)}),
    "i4_nan_missing": ("i", {"missing_value": np.float32(np.nan)}),
    "f4_inf_missing": ("f", {"missing_value": np.float32(-np.inf)}),
    "i1_out_of_range_fill": ("b", {"_FillValue": np.int32(1000)}),
    "i2_wide_fill": ("h", {"_FillValue": np.int32(-999)}),
    "i2_fractional_fill": ("h", {"_FillValue": np.float32(2.5)}),
    "i4_double_fill": ("i", {"_FillValue": np.float64(-999.0)}),
    "f4_double_fill": ("f", {"_FillValue": np.float64(-999.0)}),
    "f4_double_fill_inexact": ("f", {"_FillValue": np.float64(0.1)}),
    "f4_nan_missing": ("f", {"missing_value": np.float32(np.nan)}),
    "f8_inf_fill": ("d", {"_FillValue": np.float64(-np.inf)}),
    "i2_infinite_valid_range": ("h", {"valid_range": np.array([-np.inf, np.inf])}),
    "f4_nan_valid_range": ("f", {"valid_range": np.array([np.nan, 5.0], dtype="f4")}),
    "i2_two_fills": ("h", {"_FillValue": np.int16(-999), "missing_value": np.float64(np.nan)}),
    "char_numeric_fill": ("c", {"_FillValue": np.int16(-1)}),
}


def _data(code: str) -> np.ndarray:
    if code == "c":
        return np.array(list(b"abcdef"), dtype="S1")
    data = np.arange(6).astype(code)
    data[2] = {"b": -100, "f": -999.0, "d": -np.inf}.get(code, -999)
    if code == "f":
        data[3] = np.float32(0.1)
        data[4] = np.nan
        data[5] = -np.inf
    return data


def write_nc3(path) -> None:
    from scipy.io import netcdf_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = netcdf_file(str(path), "w", version=1)
        f.createDimension("x", 6)
        for name, (code, attrs) in NC3_CASES.items():
            v = f.createVariable(name, code, ("x",))
            v[:] = _data(code)
            for k, a in attrs.items():
                setattr(v, k, a)
        f.close()


def write_nc4(path) -> None:
    """The same cases in NetCDF-4 (HDF5 attributes written by h5py; netCDF-C reads any
    attribute type, as files from other HDF5 writers have them), chunked so that one chunk
    is never written and reads as the HDF5 fill value."""
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(12, dtype="i4"))
        f["x"].make_scale("x")
        for name, (code, attrs) in NC3_CASES.items():
            if code == "c":
                continue
            dtype = np.dtype(code)
            ds = f.create_dataset(name, shape=(12,), dtype=dtype, chunks=(6,))
            ds[:6] = _data(code)  # the second chunk is never written
            ds.dims[0].attach_scale(f["x"])
            for k, a in attrs.items():
                ds.attrs[k] = a


@pytest.fixture(scope="module", params=["nc3", "nc4"])
def odd_file(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("fills") / f"odd_fills.{request.param}.nc"
    (write_nc3 if request.param == "nc3" else write_nc4)(path)
    return path


def _zarr_opens_every_array(out, fmt) -> None:
    """zarr-python parses every array's metadata and decodes its chunks (an invalid fill
    value raises here); for kerchunk outputs ``verify`` reads through zarr's engine too."""
    import zarr

    from zarrport.open import open_dataset, open_icechunk_store

    if fmt == "icechunk":
        group = zarr.open_group(open_icechunk_store(str(out)), mode="r", zarr_format=3)
        for name, arr in group.arrays():
            assert arr[...].shape == arr.shape, name
    else:
        ds = open_dataset(str(out), engine="zarr", decode_cf=False)
        assert set(NC3_CASES) - {"char_numeric_fill"} <= set(ds.variables)
        ds.load()


@pytest.mark.parametrize("fmt", ["json", "parquet", "icechunk"])
def test_odd_fill_values_give_valid_metadata_and_netcdf4_values(tmp_path, odd_file, fmt):
    out = tmp_path / f"out.{fmt}"
    zarrport.virtualize(str(odd_file), str(out))
    _zarr_opens_every_array(out, fmt)
    report = verify(str(out))
    assert report.ok, [(p.kind, p.item, p.detail) for p in report.problems]
    assert report.variables_checked >= len(NC3_CASES) - 1


@pytest.mark.parametrize("attrs", [{"_FillValue": np.float64(np.inf)},
                                   {"missing_value": np.float32(-np.inf)},
                                   {"_FillValue": np.float32(1.0),
                                    "missing_value": np.float32(np.inf)}])
def test_fill_values_without_a_v3_form_are_refused_for_icechunk_only(tmp_path, attrs):
    from scipy.io import netcdf_file

    from zarrport.errors import UnsupportedVariableError

    code = "f" if "_FillValue" in attrs and "missing_value" in attrs else "h"
    path = tmp_path / "inf.nc"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = netcdf_file(str(path), "w", version=1)
        f.createDimension("x", 3)
        v = f.createVariable("v", code, ("x",))
        v[:] = np.arange(3)
        for k, a in attrs.items():
            setattr(v, k, a)
        f.close()
    with pytest.raises(UnsupportedVariableError, match="'v'.*no Zarr v3 form"):
        zarrport.virtualize(str(path), str(tmp_path / "out.icechunk"))
    assert not (tmp_path / "out.icechunk").exists()
    zarrport.virtualize(str(path), str(tmp_path / "out.json"))
    assert verify(str(tmp_path / "out.json")).ok
