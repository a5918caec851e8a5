"""Tests for zarrport.testing.samples: the synthetic CMIP6-like files of demos and benchmarks."""

from __future__ import annotations

import sys
from pathlib import Path

import cftime
import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr

try:
    from zarrport.testing import samples
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from zarrport.testing import samples

SMALL = {"nlat": 8, "nlon": 16}


@pytest.fixture(scope="module")
def tas_2015(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return samples.write_cmip6_year(tmp_path_factory.mktemp("s") / "tas.nc", 2015, **SMALL)


def _raw_chunks(path: Path, name: str) -> list[bytes]:
    """The stored (filtered) bytes of every chunk of ``name``, in file order of their offsets."""
    with h5py.File(path) as f:
        dsid = f[name].id
        out = []
        for i in range(dsid.get_num_chunks()):
            info = dsid.get_chunk_info(i)
            out.append(dsid.read_direct_chunk(info.chunk_offset)[1])
        return out


# ------------------------------------------------------------------------------------------
# structure and conventions


def test_opens_with_netcdf4_and_has_cmip6_layout(tas_2015: Path) -> None:
    with netCDF4.Dataset(tas_2015) as nc:
        assert nc.data_model == "NETCDF4"
        assert set(nc.dimensions) == {"time", "lat", "lon", "bnds"}
        assert nc.dimensions["time"].isunlimited()
        assert len(nc.dimensions["time"]) == 365
        assert len(nc.dimensions["lat"]) == 8 and len(nc.dimensions["lon"]) == 16
        assert set(nc.variables) == {
            "time", "time_bnds", "lat", "lat_bnds", "lon", "lon_bnds", "height", "tas"
        }
        for name in ("time", "time_bnds", "lat", "lat_bnds", "lon", "lon_bnds", "height"):
            assert nc[name].dtype == np.float64, name
        assert nc["height"].shape == ()
        assert float(nc["height"][...]) == 2.0
        assert nc["time_bnds"].dimensions == ("time", "bnds")

        tas = nc["tas"]
        assert tas.dtype == np.float32
        assert tas.dimensions == ("time", "lat", "lon")
        assert tas._FillValue == np.float32(1e20)
        assert tas.missing_value == np.float32(1e20)
        assert tas.units == "K"
        assert tas.standard_name == "air_temperature"
        assert tas.long_name == "Near-Surface Air Temperature"
        assert tas.cell_methods == "area: mean time: mean"
        assert tas.coordinates == "height"

        attrs = nc.__dict__
        expected = {
            "activity_id": "ScenarioMIP", "source_id": "ZP-SAMPLE", "experiment_id": "ssp245",
            "variant_label": "r1i1p1f1", "frequency": "day", "table_id": "day",
            "grid_label": "gn", "variable_id": "tas", "mip_era": "CMIP6",
        }
        for key, value in expected.items():
            assert attrs[key] == value, key
        assert attrs["Conventions"].startswith("CF-")
        assert attrs["tracking_id"].startswith("hdl:21.14100/")


def test_time_units_calendar_and_bounds(tas_2015: Path) -> None:
    with netCDF4.Dataset(tas_2015) as nc:
        time = nc["time"]
        assert time.units == "days since 1850-01-01"
        assert time.calendar == "noleap"
        assert time.bounds == "time_bnds"
        values = time[:]
        bnds = nc["time_bnds"][:]
    # 165 noleap years after 1850, at noon
    assert values[0] == 165 * 365 + 0.5
    assert np.all(np.diff(values) == 1.0)
    np.testing.assert_array_equal(bnds[:, 0], values - 0.5)
    np.testing.assert_array_equal(bnds[:, 1], values + 0.5)
    dates = cftime.num2date(values, "days since 1850-01-01", "noleap")
    assert (dates[0].year, dates[0].month, dates[0].day) == (2015, 1, 1)
    assert (dates[-1].year, dates[-1].month, dates[-1].day) == (2015, 12, 31)


@pytest.mark.parametrize(
    ("calendar", "year", "ndays", "last"),
    [
        ("noleap", 2016, 365, "20161231"),
        ("360_day", 2016, 360, "20161230"),
        ("standard", 2016, 366, "20161231"),
        ("standard", 2015, 365, "20151231"),
        ("proleptic_gregorian", 2000, 366, "20001231"),
    ],
)
def test_calendars(tmp_path: Path, calendar: str, year: int, ndays: int, last: str) -> None:
    assert samples.days_in_year(year, calendar) == ndays
    name = samples.cmip6_filename("tas", year, calendar=calendar)
    assert name.endswith(f"_{year}0101-{last}.nc")
    path = samples.write_cmip6_year(tmp_path / name, year, calendar=calendar, nlat=4, nlon=8)
    ds = xr.open_dataset(path, use_cftime=True)
    assert ds.sizes["time"] == ndays
    assert ds.time.encoding["calendar"] == calendar
    first, final = ds.time.values[0], ds.time.values[-1]
    assert (first.year, first.month, first.day, first.hour) == (year, 1, 1, 12)
    assert f"{final.year:04d}{final.month:02d}{final.day:02d}" == last


def test_units_since_is_honoured(tmp_path: Path) -> None:
    path = samples.write_cmip6_year(tmp_path / "t.nc", 2015, units_since="2015-01-01", **SMALL)
    with netCDF4.Dataset(path) as nc:
        assert nc["time"].units == "days since 2015-01-01"
        assert nc["time"][0] == 0.5


# ------------------------------------------------------------------------------------------
# values


def test_values_are_realistic_and_fill_points_decode_to_nan(tas_2015: Path) -> None:
    with netCDF4.Dataset(tas_2015) as nc:
        nc.set_auto_mask(False)
        raw = nc["tas"][:]
    fill = raw == np.float32(1e20)
    fraction = fill.mean()
    assert 0.005 < fraction < 0.02  # default fill_fraction=0.01
    good = raw[~fill]
    assert 200.0 < good.min() and good.max() < 330.0
    assert 280.0 < good.mean() < 290.0

    ds = xr.open_dataset(tas_2015)
    tas = ds["tas"].values
    assert tas.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(tas), fill)
    np.testing.assert_array_equal(tas[~fill], good)


def test_no_fill_points_when_fill_fraction_is_zero(tmp_path: Path) -> None:
    path = samples.write_cmip6_year(tmp_path / "t.nc", 2015, fill_fraction=0.0, **SMALL)
    assert not np.isnan(xr.open_dataset(path)["tas"].values).any()


def test_tiny_fill_fraction_still_has_a_fill_point(tmp_path: Path) -> None:
    path = samples.write_cmip6_year(tmp_path / "t.nc", 2015, fill_fraction=1e-9, nlat=2, nlon=2)
    assert np.isnan(xr.open_dataset(path)["tas"].values).sum() == 1


def test_other_variables(tmp_path: Path) -> None:
    path = samples.write_cmip6_year(tmp_path / "pr.nc", 2015, variable="pr", **SMALL)
    ds = xr.open_dataset(path)
    assert "height" not in ds.variables
    assert ds["pr"].attrs["units"] == "kg m-2 s-1"
    assert float(ds["pr"].min()) >= 0.0 and float(ds["pr"].max()) < 1e-3
    with pytest.raises(ValueError, match="unknown variable"):
        samples.write_cmip6_year(tmp_path / "x.nc", 2015, variable="nope")


# ------------------------------------------------------------------------------------------
# layout


def test_default_chunking_and_compression(tas_2015: Path) -> None:
    with h5py.File(tas_2015) as f:
        tas = f["tas"]
        assert tas.chunks == (1, 8, 16)
        assert tas.compression == "gzip"
        assert tas.compression_opts == 4
        assert tas.shuffle
        assert tas.id.get_num_chunks() == 365
        assert f["time"].maxshape == (None,)


def test_spatial_chunks_and_no_compression(tmp_path: Path) -> None:
    path = samples.write_cmip6_year(
        tmp_path / "t.nc", 2015, nlat=12, nlon=20, time_chunk=5, lat_chunk=6, lon_chunk=8,
        compression=None,
    )
    with h5py.File(path) as f:
        tas = f["tas"]
        assert tas.chunks == (5, 6, 8)
        assert tas.compression is None
        assert not tas.shuffle
        assert tas.id.get_num_chunks() == 73 * 2 * 3


def test_chunks_are_clipped_to_dimensions(tmp_path: Path) -> None:
    path = samples.write_cmip6_year(
        tmp_path / "t.nc", 2015, time_chunk=1000, lat_chunk=100, lon_chunk=100, **SMALL
    )
    with h5py.File(path) as f:
        assert f["tas"].chunks == (365, 8, 16)


def test_contiguous(tmp_path: Path) -> None:
    path = samples.write_cmip6_year(tmp_path / "t.nc", 2015, contiguous=True, **SMALL)
    with h5py.File(path) as f:
        for name in ("tas", "time", "time_bnds"):
            assert f[name].chunks is None, name
            assert f[name].compression is None, name
    with netCDF4.Dataset(path) as nc:
        assert not nc.dimensions["time"].isunlimited()
        assert nc["tas"].chunking() == "contiguous"


def test_values_do_not_depend_on_layout(tmp_path: Path, tas_2015: Path) -> None:
    other = samples.write_cmip6_year(
        tmp_path / "t.nc", 2015, contiguous=True, **SMALL
    )
    a = xr.open_dataset(tas_2015)["tas"].values
    b = xr.open_dataset(other)["tas"].values
    np.testing.assert_array_equal(a, b)


def test_span_is_concatenation_of_years(tmp_path: Path) -> None:
    span = samples.write_cmip6_span(tmp_path / "span.nc", range(2015, 2018), **SMALL)
    years = samples.write_cmip6_archive(tmp_path / "arch", years=range(2015, 2018), **SMALL)
    combined = xr.concat([xr.open_dataset(p) for p in years], dim="time", data_vars="minimal")
    whole = xr.open_dataset(span)
    assert whole.sizes["time"] == 3 * 365
    np.testing.assert_array_equal(whole["tas"].values, combined["tas"].values)
    np.testing.assert_array_equal(whole["time"].values, combined["time"].values)


def test_span_rejects_gaps(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="consecutive"):
        samples.write_cmip6_span(tmp_path / "t.nc", [2015, 2017], **SMALL)


# ------------------------------------------------------------------------------------------
# determinism


def test_same_seed_gives_same_bytes(tmp_path: Path, tas_2015: Path) -> None:
    again = samples.write_cmip6_year(tmp_path / "again.nc", 2015, **SMALL)
    assert _raw_chunks(again, "tas") == _raw_chunks(tas_2015, "tas")
    assert again.read_bytes() == tas_2015.read_bytes()


def test_different_seed_or_year_gives_different_values(tmp_path: Path, tas_2015: Path) -> None:
    other_seed = samples.write_cmip6_year(tmp_path / "s.nc", 2015, seed=7, **SMALL)
    other_year = samples.write_cmip6_year(tmp_path / "y.nc", 2017, **SMALL)
    base = _raw_chunks(tas_2015, "tas")
    assert _raw_chunks(other_seed, "tas") != base
    assert _raw_chunks(other_year, "tas") != base


def test_archive_names_and_reuse(tmp_path: Path) -> None:
    paths = samples.write_cmip6_archive(tmp_path, years=range(2015, 2018), **SMALL)
    assert [p.name for p in paths] == [
        f"tas_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn_{y}0101-{y}1231.nc" for y in (2015, 2016, 2017)
    ]
    assert sorted(tmp_path.iterdir()) == paths  # no temporary files left behind
    mtimes = [p.stat().st_mtime_ns for p in paths]
    again = samples.write_cmip6_archive(
        tmp_path, years=range(2015, 2018), overwrite=False, **SMALL
    )
    assert again == paths
    assert [p.stat().st_mtime_ns for p in paths] == mtimes


def test_default_demo_archive_is_small(tmp_path: Path) -> None:
    paths = samples.write_cmip6_archive(tmp_path)
    assert len(paths) == 3
    total = sum(p.stat().st_size for p in paths)
    assert 1e6 < total < 20e6
    with h5py.File(paths[0]) as f:
        assert f["tas"].shape == (365, 32, 64)
