"""Regional means: coverage fractions and means against hand computation and exactextract,
the antimeridian, curvilinear grids, NaNs, weights, Dask, outputs, the CLI and its errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import xarray as xr

from clirun import run_main
from zarrport.analysis.regions import (
    apply_weights,
    plot_regions,
    read_regions,
    region_weights,
    regional_means,
)
from zarrport.errors import InvalidArgumentError
from zarrport.testing.samples import write_cmip6_archive

R = 6378137.0


def cell_area(lat0: float, lat1: float, dlon: float = 1.0) -> float:
    """Area of a lat/lon box on the sphere, by hand."""
    return R * R * math.radians(dlon) * (math.sin(math.radians(lat1))
                                         - math.sin(math.radians(lat0)))


def grid(lon: np.ndarray, lat: np.ndarray | None = None) -> xr.Dataset:
    lat = np.arange(-4.5, 25) if lat is None else lat
    return xr.Dataset(coords={"lat": ("lat", lat, {"units": "degrees_north"}),
                              "lon": ("lon", lon, {"units": "degrees_east"})})


GRID_180 = grid(np.arange(-179.5, 180))  # 1-degree cells, lat -5..25
GRID_360 = grid(np.arange(0.5, 360))


def regions(*geoms, ids=None) -> gpd.GeoDataFrame:
    ids = ids or [f"r{i}" for i in range(len(geoms))]
    return gpd.GeoDataFrame({"id": ids}, geometry=list(geoms), crs="EPSG:4326")


def row(w, i: int, ds: xr.Dataset) -> dict[tuple[float, float], float]:
    """Non-zero weights of region i as {(lat centre, lon centre): weight}."""
    dense = w.matrix[[i]].toarray().reshape(w.shape)
    lat, lon = ds.lat.values, ds.lon.values
    return {(float(lat[a]), float(lon[b])): float(dense[a, b])
            for a, b in zip(*np.nonzero(dense), strict=True)}


def normalised(d: dict) -> dict:
    s = sum(d.values())
    return {k: v / s for k, v in d.items()}


def assert_weights(got: dict, want: dict) -> None:
    assert set(got) == set(want), (sorted(got), sorted(want))
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), k


# ------------------------------------------------------------------ hand-made polygons


def test_triangle_fractions_areas_and_mean():
    tri = shapely.Polygon([(0, 0), (3, 0), (0, 3)])  # the hypotenuse halves 3 cells
    frac = {(0.5, 0.5): 1, (0.5, 1.5): 1, (1.5, 0.5): 1,
            (0.5, 2.5): 0.5, (1.5, 1.5): 0.5, (2.5, 0.5): 0.5}
    w_none = region_weights(GRID_180, regions(tri), weights="none")
    assert_weights(row(w_none, 0, GRID_180), normalised(frac))
    w_area = region_weights(GRID_180, regions(tri))
    by_area = {k: f * cell_area(k[0] - 0.5, k[0] + 0.5) for k, f in frac.items()}
    assert_weights(row(w_area, 0, GRID_180), normalised(by_area))
    assert w_area.coverage[0] == pytest.approx(sum(by_area.values()), rel=1e-12)
    assert w_area.outside == [] and w_area.no_centre == []
    # the mean of a field: sum(w x) / sum(w) over the six cells, by hand
    lat, lon = np.meshgrid(GRID_180.lat, GRID_180.lon, indexing="ij")
    field = xr.DataArray(lat * 10 + lon, dims=("lat", "lon"), coords=GRID_180.coords)
    got = float(apply_weights(field, w_area).values[0])
    want = sum(v * (k[0] * 10 + k[1]) for k, v in by_area.items()) / sum(by_area.values())
    assert got == pytest.approx(want, rel=1e-12)


def _across_antimeridian():
    """A box 178.5..181.5 E x 10..11 N: half, whole, whole, half a cell."""
    as_east = shapely.box(178.5, 10, 181.5, 11)
    split = shapely.MultiPolygon([shapely.box(178.5, 10, 180, 11),
                                  shapely.box(-180, 10, -178.5, 11)])
    return as_east, split


@pytest.mark.parametrize("ds", [GRID_180, GRID_360], ids=["lon-180..180", "lon-0..360"])
def test_antimeridian_polygon_same_weights_on_both_grids(ds):
    as_east, split = _across_antimeridian()
    w = region_weights(ds, regions(as_east, split), weights="none")
    west = -179.5 if ds is GRID_180 else 180.5
    west2 = -178.5 if ds is GRID_180 else 181.5
    want = normalised({(10.5, 178.5): 0.5, (10.5, 179.5): 1.0,
                       (10.5, west): 1.0, (10.5, west2): 0.5})
    for i in (0, 1):
        assert_weights(row(w, i, ds), want)
    assert w.matrix.sum(axis=1) == pytest.approx([1, 1])


def test_region_in_180_frame_on_0_360_grid_and_no_double_count():
    """A box in -180..180 longitudes lands on the 0..360 grid's cells; a polygon wider than
    the grid's window (a whole latitude band given as -180..360) counts every cell once."""
    box = shapely.box(-20.5, 0, -18, 1)
    band = shapely.box(-180, 0, 360, 1)
    w = region_weights(GRID_360, regions(box, band), weights="none")
    assert_weights(row(w, 0, GRID_360),
                   normalised({(0.5, 339.5): 0.5, (0.5, 340.5): 1, (0.5, 341.5): 1}))
    assert_weights(row(w, 1, GRID_360), {(0.5, x): 1 / 360 for x in GRID_360.lon.values})


def test_polygon_smaller_than_a_cell_and_outside():
    small = shapely.box(10.2, 20.2, 10.4, 20.4)
    outside = shapely.box(10, 60, 12, 62)  # the grid stops at 25 N
    gdf = regions(small, outside, shapely.box(0, 0, 2, 2), ids=["small", "far", "ok"])
    w = region_weights(GRID_180, gdf)
    assert w.no_centre == ["small"]
    assert w.outside == ["far"]
    assert_weights(row(w, 0, GRID_180), {(20.5, 10.5): 1.0})
    assert w.coverage[0] == pytest.approx(0.04 * cell_area(20, 21), rel=1e-9)
    assert w.matrix[[1]].nnz == 0
    field = xr.DataArray(np.arange(GRID_180.lat.size * GRID_180.lon.size, dtype="f8")
                         .reshape(GRID_180.lat.size, -1), dims=("lat", "lon"),
                         coords=GRID_180.coords)
    got = apply_weights(field, w).values
    assert got[0] == field.sel(lat=20.5, lon=10.5).item()
    assert np.isnan(got[1])  # outside: a NaN row, kept so the table joins onto the file
    assert "1 region outside the grid (means are NaN): far" in w.report()
    d = w.to_dict()
    assert d["outside"] == ["far"] and d["no_centre"] == ["small"]


# ------------------------------------------------------------------ exactextract


def test_against_exactextract_coverage_and_means():
    import rioxarray  # noqa: F401  (the .rio accessor exactextract reads)
    from exactextract import exact_extract

    rng = np.random.default_rng(7)
    ds = grid(np.arange(-9.5, 20), np.arange(0.5, 20))
    ny, nx = ds.lat.size, ds.lon.size
    polys = []
    for _ in range(50):
        cx, cy, n = rng.uniform(-8, 18), rng.uniform(2, 18), rng.integers(3, 12)
        # star-shaped around (cx, cy): jittered even angles keep every polygon simple
        ang = (np.arange(n) + rng.uniform(0, 0.8, n)) * 2 * np.pi / n
        rad = rng.uniform(0.2, 2.5, n)
        polys.append(shapely.Polygon(np.c_[cx + rad * np.cos(ang), cy + rad * np.sin(ang)]))
    gdf = regions(*polys)
    values = rng.standard_normal((ny, nx))
    da = xr.DataArray(values, dims=("lat", "lon"), coords=ds.coords, name="v")
    rast = (da.rename(lat="y", lon="x").sortby("y", ascending=False)
            .rio.write_crs("EPSG:4326"))
    ee = exact_extract(rast, gdf, ["cell_id", "coverage",
                                   "mean(coverage_weight=area_spherical_m2)"],
                       strategy="raster-sequential", output="pandas")
    w_none = region_weights(ds, gdf, weights="none")
    w_area = region_weights(ds, gdf)
    means = apply_weights(da, w_area).values
    for i in range(len(gdf)):
        ids = np.asarray(ee["cell_id"][i], dtype=int)
        cov = np.asarray(ee["coverage"][i], dtype=float)
        rows = (ny - 1) - ids // nx  # exactextract counts rows from the north
        theirs = np.zeros((ny, nx))
        theirs[rows, ids % nx] = cov
        # exactextract keeps coverage fractions in float32 (its values are exactly
        # float32-representable): agreement is to float32 precision, ~5e-8 here
        got = w_none.matrix[[i]].toarray().reshape(ny, nx)
        np.testing.assert_allclose(got, theirs / theirs.sum(), atol=1e-7)
        assert means[i] == pytest.approx(ee["mean"][i], abs=1e-7)


# ------------------------------------------------------------------ grids and weights


def _as_2d(ds: xr.Dataset, with_bounds: bool) -> xr.Dataset:
    lat2, lon2 = np.meshgrid(ds.lat.values, ds.lon.values, indexing="ij")
    out = xr.Dataset(coords={
        "nav_lat": (("y", "x"), lat2, {"units": "degrees_north"}),
        "nav_lon": (("y", "x"), lon2, {"units": "degrees_east"})})
    if with_bounds:
        s, n = lat2 - 0.5, lat2 + 0.5
        w, e = lon2 - 0.5, lon2 + 0.5
        out["lat_b"] = (("y", "x", "v"), np.stack([s, s, n, n], -1))
        out["lon_b"] = (("y", "x", "v"), np.stack([w, e, e, w], -1))
        out["nav_lat"].attrs["bounds"] = "lat_b"
        out["nav_lon"].attrs["bounds"] = "lon_b"
    return out


@pytest.mark.parametrize("with_bounds", [False, True], ids=["midpoints", "cf-corners"])
def test_curvilinear_copy_of_a_regular_grid_gives_the_1d_weights(with_bounds):
    ds = grid(np.arange(-20.5, 20), np.arange(0.5, 20))
    gdf = regions(shapely.Polygon([(0, 0), (3, 0), (0, 3)]), shapely.box(-5.3, 2.2, 4.1, 9.7),
                  shapely.Point(8, 12).buffer(3.3))
    w1 = region_weights(ds, gdf)
    w2 = region_weights(_as_2d(ds, with_bounds), gdf)
    assert w2.dims == ("y", "x")
    np.testing.assert_allclose(w2.matrix.toarray(), w1.matrix.toarray(), atol=1e-12)
    np.testing.assert_allclose(w2.coverage, w1.coverage, rtol=1e-9)


def test_nan_cells_renormalise_and_all_nan_gives_nan():
    tri = shapely.Polygon([(0, 0), (3, 0), (0, 3)])
    w = region_weights(GRID_180, regions(tri))
    dense = w.matrix.toarray()[0]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, GRID_180.lat.size, GRID_180.lon.size))
    i0, j0 = int(np.argmax(GRID_180.lat.values == 0.5)), int(np.argmax(GRID_180.lon.values
                                                                       == 0.5))
    x[1, i0, j0] = np.nan  # one cell of the region missing at t=1
    x[2, i0:i0 + 3, j0:j0 + 3] = np.nan  # all of it missing at t=2
    da = xr.DataArray(x, dims=("time", "lat", "lon"), coords=GRID_180.coords)
    got = apply_weights(da, w).values[0]
    flat = x.reshape(3, -1)
    for t in range(2):  # numpy loop: the weights of cells with data, renormalised
        num = den = 0.0
        for c in np.flatnonzero(dense):
            if np.isfinite(flat[t, c]):
                num += dense[c] * flat[t, c]
                den += dense[c]
        assert got[t] == pytest.approx(num / den, rel=1e-12)
    assert np.isnan(got[2])
    # the same cell missing at every step (a mask): one renormalisation for all
    masked = rng.standard_normal(x.shape)
    masked[:, i0, j0] = np.nan
    got = apply_weights(xr.DataArray(masked, dims=da.dims, coords=da.coords), w).values[0]
    keep = [c for c in np.flatnonzero(dense) if np.isfinite(flat[1, c])]
    for t in range(3):
        want = sum(dense[c] * masked.reshape(3, -1)[t, c] for c in keep) / dense[keep].sum()
        assert got[t] == pytest.approx(want, rel=1e-12)


def test_weights_none_area_and_file(tmp_path):
    box = shapely.box(0, 0, 2, 20)  # 20 latitude rows: areas differ a lot
    ds = GRID_180
    lat, lon = np.meshgrid(ds.lat.values, ds.lon.values, indexing="ij")
    land = xr.DataArray(np.where(lon > 1, 0.25, 1.0), dims=("lat", "lon"),
                        coords=ds.coords, name="sftlf")
    land[0, 0] = np.nan
    path = tmp_path / "land.nc"
    land.to_dataset().to_netcdf(path)
    gdf = regions(box)
    cells = {(a, b): 1.0 for a in np.arange(0.5, 20) for b in (0.5, 1.5)}
    area = {k: cell_area(k[0] - 0.5, k[0] + 0.5) for k in cells}
    assert_weights(row(region_weights(ds, gdf, weights="none"), 0, ds), normalised(cells))
    assert_weights(row(region_weights(ds, gdf, weights="area"), 0, ds), normalised(area))
    want = normalised({k: a * (0.25 if k[1] > 1 else 1.0) for k, a in area.items()})
    assert_weights(row(region_weights(ds, gdf, weights=str(path)), 0, ds), want)
    assert_weights(row(region_weights(ds, gdf, weights=land), 0, ds), want)


def test_read_regions_presets_ids_and_crs(tmp_path):
    gdf = read_regions("CONUS,AK")
    assert list(gdf.index) == ["CONUS", "AK"]
    assert shapely.bounds(gdf.geometry.values[1]).tolist() == pytest.approx(
        [172.42, 51.21, -129.97 + 360, 71.40])
    # a projected file is brought to EPSG:4326; GEOID found as the id field
    f = gpd.GeoDataFrame({"GEOID": ["a", "b"], "name": ["x", "x"]},
                         geometry=[shapely.box(0, 0, 1, 1), shapely.box(1, 1, 2, 2)],
                         crs="EPSG:4326").to_crs("EPSG:3857")
    f.to_file(tmp_path / "r.gpkg")
    got = read_regions(str(tmp_path / "r.gpkg"))
    assert got.index.name == "GEOID" and list(got.index) == ["a", "b"]
    assert shapely.bounds(got.geometry.values[1]).tolist() == pytest.approx([1, 1, 2, 2])
    assert list(read_regions(str(tmp_path / "r.gpkg"), id_field="GEOID").index) == ["a", "b"]


# ------------------------------------------------------------------ Dask, outputs, CLI


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("regions-archive")
    write_cmip6_archive(d, years=range(2015, 2017), nlat=18, nlon=36)
    return d


@pytest.fixture(scope="module")
def counties(tmp_path_factory) -> Path:
    """Four polygons on the global grid: one across the antimeridian, one inside a cell."""
    path = tmp_path_factory.mktemp("regions-shapes") / "shapes.geojson"
    gpd.GeoDataFrame({"GEOID": ["A01", "B02", "C03", "D04"]}, geometry=[
        shapely.Polygon([(-120, 30), (-80, 25), (-100, 50)]),
        shapely.box(170, 50, 200, 70),
        shapely.box(10, -10, 40, 20),
        shapely.box(3, 3, 4, 4),
    ], crs="EPSG:4326").to_file(path)
    return path


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    return run_main(capsys, "analyze", "regional-means", *args)


def test_dask_cli_outputs_round_trip_and_plot(tmp_path, archive, counties, dask_cluster,
                                              capsys):
    from PIL import Image

    ds_in = xr.open_mfdataset(sorted(archive.glob("*.nc")), combine="by_coords",
                              use_cftime=True)
    tas = ds_in["tas"].values.astype("f8")
    ds_lazy, w = regional_means(str(archive / "*.nc"), str(counties), id_field="GEOID")
    dense = w.matrix.toarray()
    flat = tas.reshape(tas.shape[0], -1)
    valid = np.isfinite(flat)
    assert not valid.all()  # the sample's fill values exercise the renormalisation
    want = np.empty((len(dense), len(flat)))
    for t in range(len(flat)):  # numpy loop over time steps
        x = np.where(valid[t], flat[t], 0.0)
        with np.errstate(invalid="ignore"):  # D04's one cell is a fill value at times
            want[:, t] = (dense @ x) / (dense @ valid[t])

    png = tmp_path / "map.png"
    code, out, err = run_cli(capsys, str(archive / "*.nc"), "--regions", str(counties),
                             "--id-field", "GEOID", "-o", str(tmp_path / "m.nc"),
                             "--plot", str(png), "--scheduler", dask_cluster.address,
                             "--no-progress")
    assert code == 0, err
    assert "dask: cluster at" in err
    assert "regions: 4 (id: GEOID)" in out and "plot: " in out
    # D04 (1 degree) lies inside one 10-degree cell, between centres
    assert "1 region covering no cell centre (weighted by partial coverage): D04" in out
    nc = xr.open_dataset(tmp_path / "m.nc", use_cftime=True)
    assert nc["tas"].dims == ("region", "time") and nc["tas"].dtype == np.float64
    assert list(nc["region"].values) == ["A01", "B02", "C03", "D04"]
    np.testing.assert_allclose(nc["tas"].values, want, rtol=1e-12)
    img = np.asarray(Image.open(png).convert("L"))
    assert img.shape[0] > 100 and img.std() > 5  # not blank

    for ext in ("parquet", "csv"):
        target = tmp_path / f"m.{ext}"
        code, out, err = run_cli(capsys, str(archive / "*.nc"), "--regions", str(counties),
                                 "--id-field", "GEOID", "-o", str(target), "--json",
                                 "--scheduler", dask_cluster.address)
        assert code == 0, err
        summary = json.loads(out)
        assert summary["regions"] == 4 and summary["times"] == tas.shape[0]
        assert summary["output"] == str(target)
        df = pd.read_parquet(target) if ext == "parquet" else pd.read_csv(target)
        assert list(df.columns) == ["GEOID", "time", "tas"]
        table = df.pivot(index="GEOID", columns="time", values="tas")
        np.testing.assert_allclose(table.loc[["A01", "B02", "C03", "D04"]].values, want,
                                   rtol=1e-12)
    with pytest.raises(InvalidArgumentError, match="no variable 'nope' to plot"):
        plot_regions(nc, str(counties), str(tmp_path / "x.png"), variable="nope",
                     id_field="GEOID")


def test_bad_input_one_line_nothing_written(tmp_path, archive, counties, capsys):
    src = str(archive / "*.nc")
    points = tmp_path / "points.geojson"
    gpd.GeoDataFrame({"id": [1]}, geometry=[shapely.Point(0, 0)], crs="EPSG:4326").to_file(
        points)
    dup = tmp_path / "dup.geojson"
    gpd.GeoDataFrame({"code": ["a", "a"]}, geometry=[shapely.box(0, 0, 1, 1)] * 2,
                     crs="EPSG:4326").to_file(dup)
    nolatlon = tmp_path / "nolatlon.nc"
    xr.Dataset({"tas": (("t", "y", "x"), np.zeros((2, 3, 4), "f4"))}).to_netcdf(nolatlon)
    existing = tmp_path / "exists.csv"
    existing.write_text("keep")
    out = tmp_path / "o.csv"
    cases = [
        ([src, "--regions", str(tmp_path / "missing.gpkg"), "-o", str(out)],
         "no such regions file"),
        ([src, "--regions", str(counties), "--id-field", "FIPS", "-o", str(out)],
         "no field 'FIPS' (fields: GEOID)"),
        ([src, "--regions", str(dup), "--id-field", "code", "-o", str(out)],
         "'a' appears twice"),
        ([src, "--regions", str(points), "-o", str(out)], "no polygons"),
        ([str(nolatlon), "--regions", str(counties), "-o", str(out)],
         "no latitude/longitude"),
        ([src, "--regions", str(counties), "--variable", "pr", "-o", str(out)],
         "no variable 'pr'"),
        ([src, "--regions", str(counties), "-o", str(existing)], "exists"),
        ([src, "--regions", str(counties), "-o", str(tmp_path / "o.xlsx")],
         "must end in .parquet, .csv, .nc"),
        ([src, "--regions", "CONUS", "--weights", str(tmp_path / "nope.nc"), "-o", str(out)],
         "no such weights file"),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for args, needle in cases:
        code, stdout, err = run_cli(capsys, *args)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code != 0 and len(lines) == 1, (args, err)
        assert lines[0].startswith("zarrport: error: ") and needle in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert existing.read_text() == "keep"


# ---------------------------------------------------------- found in review (each failed)


def test_projected_regions_across_the_antimeridian_stay_one_piece(tmp_path):
    """A 170E..170W box in Alaska Albers (EPSG:3338): reprojected vertex by vertex it had
    longitudes +179 and -179 side by side, and make_valid turned it into the rest of the
    latitude band (2040 square degrees instead of 120)."""
    box = shapely.segmentize(shapely.box(170, 50, 190, 56), 0.25)
    path = tmp_path / "aleutians.gpkg"
    gpd.GeoDataFrame({"id": ["a"]}, geometry=[box], crs="EPSG:4326").to_crs(
        "EPSG:3338").to_file(path)
    g = read_regions(str(path)).geometry.iloc[0]
    assert g.area == pytest.approx(120.0, rel=1e-3)
    w0, s0, e0, n0 = g.bounds
    assert (w0 % 360, s0, e0 % 360, n0) == pytest.approx((170, 50, 190 % 360, 56), abs=1e-6)
    lonlat = region_weights(grid(np.arange(-179.5, 180), np.arange(40.5, 70)), regions(box))
    projected = region_weights(grid(np.arange(-179.5, 180), np.arange(40.5, 70)),
                               read_regions(str(path)))
    assert int(lonlat.cells[0]) == 20 * 6  # (cells beside it get ~1e-9 from the round trip)
    np.testing.assert_allclose(projected.matrix.toarray(), lonlat.matrix.toarray(),
                               atol=1e-6)


def test_a_sliver_part_does_not_break_the_rectangle_clipper():
    """GEOS's rectangle clipper raised "Invalid number of points in LinearRing found 3" on
    this valid MultiPolygon (a make_valid leftover): the general intersection takes over."""
    sliver = shapely.from_wkt(
        "POLYGON ((170.50000000000009 50.000000000000014, 171.00000000000006 "
        "50.00000000000001, 170 50.00000000000001, 170.50000000000009 50.000000000000014))")
    mp = shapely.MultiPolygon([shapely.box(-10, 40, 10, 60), sliver])
    assert mp.is_valid
    ds = grid(np.arange(-179.5, 180), np.arange(40.5, 75))
    ds["x"] = (("lat", "lon"), np.broadcast_to(ds.lon.values, (ds.sizes["lat"],
                                                                ds.sizes["lon"])).copy())
    out, w = regional_means(ds, regions(mp), variables=["x"])
    assert float(out["x"].values[0]) == pytest.approx(0.0, abs=1e-9)  # -10..10, symmetric
    assert int(w.cells[0]) == 20 * 20 + 1  # the box's cells and the sliver's one


def test_selecting_a_variable_keeps_the_grid_bounds():
    """--variable dropped lat_bnds/lon_bnds (data variables to xarray): the cell edges then
    came from midpoints and the weights changed silently."""
    lat = np.array([5.0, 15.0, 40.0])
    ds = xr.Dataset(
        {"x": (("lat", "lon"), np.array([[1.0], [2.0], [3.0]])),
         "lat_bnds": (("lat", "nv"), np.array([[0, 10], [10, 20], [20, 60]], "f8")),
         "lon_bnds": (("lon", "nv"), np.array([[0.0, 1.0]]))},
        coords={"lat": ("lat", lat, {"units": "degrees_north", "bounds": "lat_bnds"}),
                "lon": ("lon", [0.5], {"units": "degrees_east", "bounds": "lon_bnds"})})
    big = regions(shapely.box(0, 0, 1, 60))
    a = [cell_area(0, 10), cell_area(10, 20), cell_area(20, 60)]
    expected = (1 * a[0] + 2 * a[1] + 3 * a[2]) / sum(a)
    for variables in (None, ["x"]):
        out, _ = regional_means(ds, big, variables=variables)
        assert list(out.data_vars) == ["x"]
        assert float(out["x"].values[0]) == pytest.approx(expected, rel=1e-12)
