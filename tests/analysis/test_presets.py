"""Named boxes, box subsets of 1-D and 2-D grids in either longitude frame, and the archive
opener of the analyses."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from zarrport.analysis.presets import PRESETS, in_lon_range, lat_lon, resolve_box, subset
from zarrport.analysis.source import merge_time_chunks, open_archive
from zarrport.errors import InvalidArgumentError, SourceNotFoundError
from zarrport.testing.samples import write_cmip6_archive


def grid(lon0: float) -> xr.Dataset:
    lat = np.arange(-89.5, 90)
    lon = np.arange(lon0 + 0.5, lon0 + 360)
    return xr.Dataset({"v": (("lat", "lon"), np.add.outer(lat * 1000, lon))},
                      coords={"lat": lat, "lon": lon})


def curvilinear(ds: xr.Dataset) -> xr.Dataset:
    la, lo = xr.broadcast(ds.lat, ds.lon)
    out = xr.Dataset({"v": (("y", "x"), ds.v.values)},
                     coords={"nav_lat": (("y", "x"), la.values, {"units": "degrees_north"}),
                             "nav_lon": (("y", "x"), lo.values, {"units": "degrees_east"})})
    return out


@pytest.mark.parametrize("lon0", [-180, 0])
@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_select_the_same_cells_in_both_frames(name, lon0):
    w, s, e, n = PRESETS[name]
    out = subset(grid(lon0), resolve_box(region=name.lower()))
    # every selected centre in the box, every centre in the box selected (counted by hand)
    lats = [y for y in np.arange(-89.5, 90) if s <= y <= n]
    lons = [x for x in np.arange(-179.5, 180) if (x - w) % 360 <= (e - w) % 360]
    assert out.sizes == {"lat": len(lats), "lon": len(lons)}
    assert list(out.lat.values) == lats
    # longitudes in the box's own order (west to east, across the seam for AK)
    rel = (out.lon.values - w) % 360
    assert np.all(np.diff(rel) > 0)
    np.testing.assert_array_equal(out.v.values, np.add.outer(out.lat.values * 1000,
                                                             out.lon.values))


def test_a_box_across_the_seam_of_a_0_360_grid():
    out = subset(grid(0), resolve_box("-2,0,2,1"))
    assert list(out.lon.values) == [358.5, 359.5, 0.5, 1.5]


def test_curvilinear_grids_take_the_index_window():
    ds = curvilinear(grid(-180))
    assert lat_lon(ds) == ("nav_lat", "nav_lon")
    out = subset(ds, PRESETS["PR"])
    assert out.sizes == {"y": 1, "x": 3}
    assert set(np.round(out.nav_lon.values.ravel(), 1)) == {-67.5, -66.5, -65.5}


def test_in_lon_range_compares_modulo_360():
    lon = np.array([-179.5, 179.5, 180.5, 0.0, 359.9])
    assert list(in_lon_range(lon, 170, -170)) == [True, True, True, False, False]
    assert in_lon_range(lon, -180, 180).all()


@pytest.mark.parametrize(("kw", "message"), [
    ({"bbox": "1,2,3"}, "not W,S,E,N"),
    ({"bbox": "0,10,5,5"}, "south must be below north"),
    ({"bbox": "-200,0,5,5"}, "within -180..360"),
    ({"region": "Texas"}, "unknown region 'Texas'; the presets are CONUS, AK, HI, PR"),
    ({"bbox": "0,0,1,1", "region": "AK"}, "not both")])
def test_bad_boxes(kw, message):
    with pytest.raises(InvalidArgumentError, match=message):
        resolve_box(**kw)


def test_a_box_without_cells_is_an_error():
    with pytest.raises(InvalidArgumentError, match="holds no grid cell centre"):
        subset(grid(0), (10.1, 10.1, 10.2, 10.2))
    with pytest.raises(InvalidArgumentError, match="holds no grid cell centre"):
        subset(curvilinear(grid(0)), (10.1, 10.1, 10.2, 10.2))
    with pytest.raises(InvalidArgumentError, match="no latitude/longitude"):
        subset(xr.Dataset(coords={"x": [1, 2]}), (0, 0, 1, 1))


def test_open_archive_files_or_one_url(tmp_path):
    paths = write_cmip6_archive(tmp_path, years=range(2015, 2017), nlat=4, nlon=8,
                                time_chunk=1)
    many = open_archive(str(tmp_path / "*.nc"), variables=["tas"])
    assert many.sizes["time"] == 730 and many.tas.chunks[0] == (730,)
    assert many.time.values[0].calendar == "noleap"
    one = open_archive(str(paths[0]), variables=["tas"])
    xr.testing.assert_identical(one.tas.compute(), many.tas.isel(time=slice(0, 365)).compute())
    with pytest.raises(SourceNotFoundError, match="no file matches"):
        open_archive(str(tmp_path / "none*.nc"))
    with pytest.raises(InvalidArgumentError, match="no variable 'zz'"):
        open_archive(str(paths[0]), variables=["zz"])


def test_time_chunks_merge_to_whole_multiples():
    ds = xr.Dataset({"v": (("time", "x"), np.zeros((100, 1000)))}).chunk({"time": 3})
    out = merge_time_chunks(ds, target=3 * 8000 * 4)  # four chunks of three steps
    assert out.v.chunks[0][:2] == (12, 12)
    assert merge_time_chunks(ds, target=1).v.chunks == ds.v.chunks
