"""The analyses on real files written by others (../shared/data/real): a CMIP6 daily
365_day record, a CMIP5 monthly 360_day record (refused: normals need daily data) and a
CMIP6 sea-ice field on a curvilinear ocean grid with its north fold. Oracles: netCDF4 and
plain loops over the files' own cells (CF vertices, shapely one cell at a time, the model's
own cell areas)."""

from __future__ import annotations

import json
from pathlib import Path

import cftime
import netCDF4
import numpy as np
import pandas as pd
import pytest
import shapely

from clirun import run_main
from zarrport.analysis.normals import normals

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
PRSN = REAL / "nc4" / "xclim_prsn_day_CanESM5_historical_r1i1p1f1_gn_19910101-20101231.nc"
TAS_MON = REAL / "nc3" / "xclim_tas_Amon_HadGEM2-ES_rcp85_r1i1p1_200512-203011.nc"
SIC = REAL / "nc4" / "xclim_sic_SImon_CCCma-CanESM5_ssp245_r13i1p2f1_2020.nc"

pytestmark = pytest.mark.skipif(not SIC.exists(), reason="the real sample files are absent")

REGIONS = {"type": "FeatureCollection", "features": [
    {"type": "Feature", "properties": {"name": "labrador"}, "geometry": {
        "type": "Polygon", "coordinates": [[[-65, 50], [-45, 50], [-45, 65], [-65, 65],
                                            [-65, 50]]]}},
    # across the antimeridian, written with longitudes beyond 180
    {"type": "Feature", "properties": {"name": "bering"}, "geometry": {
        "type": "Polygon", "coordinates": [[[170, 55], [200, 55], [200, 66], [170, 66],
                                            [170, 55]]]}},
    # around the pole, over the grid's north fold
    {"type": "Feature", "properties": {"name": "arctic"}, "geometry": {
        "type": "Polygon", "coordinates": [[[-180, 80], [180, 80], [180, 90], [-180, 90],
                                            [-180, 80]]]}}]}


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    return run_main(capsys, *args)


def _oracle_region_means(poly: shapely.Geometry) -> np.ndarray:
    """Means per month over the cells of ``poly``: each cell from its own CF vertices
    (unwrapped around its first vertex), its covered fraction from shapely (tried at 0 and
    +-360 degrees), weighted by the model's areacello; land (masked) cells left out."""
    with netCDF4.Dataset(SIC) as f:
        vla, vlo = f["vertices_latitude"][:], f["vertices_longitude"][:].astype("f8")
        area = np.ma.filled(f["areacello"][:].astype("f8"), 0.0)
        sic = f["siconc"][:]
    _, miny, _, maxy = poly.bounds
    w = np.zeros(area.shape)
    near = (vla.max(axis=-1) >= miny) & (vla.min(axis=-1) <= maxy)
    for j, i in zip(*np.nonzero(near), strict=True):
        lo = vlo[j, i]
        lo = lo[0] + ((lo - lo[0] + 180) % 360) - 180
        cell = shapely.Polygon(np.c_[lo, vla[j, i]])
        if not cell.is_valid or cell.area == 0:
            continue
        covered = sum(shapely.affinity.translate(cell, s).intersection(poly).area
                      for s in (-360, 0, 360))
        w[j, i] = covered / cell.area * area[j, i]
    out = []
    for t in range(sic.shape[0]):
        valid = ~np.ma.getmaskarray(sic[t])
        x = np.where(valid, np.ma.filled(sic[t], 0.0), 0.0)
        out.append((w * x).sum() / (w * valid).sum())
    return np.array(out)


@pytest.fixture(scope="module")
def oracle() -> dict[str, np.ndarray]:
    return {f["properties"]["name"]: _oracle_region_means(shapely.geometry.shape(f["geometry"]))
            for f in REGIONS["features"]}


@pytest.mark.parametrize(("weights", "tol"), [
    # the model's own areas: only the coverage fractions can differ
    ("areacello", 1e-6),
    # areas computed from the vertices (sphere): within the ratio of the two areas
    ("area", 0.02)])
def test_sea_ice_on_a_curvilinear_grid(tmp_path, capsys, oracle, weights, tol):
    regions = tmp_path / "regions.geojson"
    regions.write_text(json.dumps(REGIONS))
    out = tmp_path / "sic.csv"
    code, stdout, err = _cli(
        ["analyze", "regional-means", str(SIC), "--regions", str(regions), "--id-field",
         "name", "--weights", str(SIC) if weights == "areacello" else "area",
         "-o", str(out), "--workers", "1", "--no-progress"], capsys)
    assert code == 0, err
    table = pd.read_csv(out)
    assert set(table.columns) == {"name", "time", "siconc"}  # not areacello or vertices
    for name, expected in oracle.items():
        got = table[table["name"] == name]["siconc"].to_numpy()
        assert got.shape == (12,)
        np.testing.assert_allclose(got, expected, rtol=0, atol=tol, err_msg=name)


def _prsn_oracle(freq: str, first_years: list[int], window: int) -> dict:
    """Normals by loops over the file as netCDF4 reads it: per year (and month) the mean of
    the days, then the mean over the window's years."""
    with netCDF4.Dataset(PRSN) as f:
        t = f["time"]
        dates = cftime.num2date(t[:], t.units, t.calendar)
        x = np.ma.filled(f["prsn"][:].astype("f8"), np.nan)
    years = np.array([d.year for d in dates])
    months = np.array([d.month for d in dates])
    out = {}
    for y0 in first_years:
        keys = [None] if freq == "annual" else range(1, 13)
        for k in keys:
            per_year = []
            for y in range(y0, y0 + window):
                sel = (years == y) if k is None else (years == y) & (months == k)
                per_year.append(x[sel].mean(axis=0))
            out[(y0, k)] = np.mean(per_year, axis=0)
    return out


@pytest.mark.parametrize("freq", ["annual", "monthly"])
def test_normals_of_a_cmip6_daily_record(freq):
    """1991-2010, 365_day: 10-year windows every 5 years."""
    expected = _prsn_oracle(freq, [1991, 1996, 2001], 10)
    result = normals(str(PRSN), variable="prsn", start_year=1991, end_year=2010, window=10,
                     step=5, freq=freq).compute()
    assert result.time.values[0].calendar == "noleap"
    assert sorted(set(result.first_year.values.tolist())) == [1991, 1996, 2001]
    for i in range(result.sizes["time"]):
        key = (int(result.first_year[i]), None if freq == "annual"
               else int(result.period[i]))
        np.testing.assert_allclose(result["prsn"].isel(time=i).values, expected[key],
                                   rtol=1e-5, err_msg=str(key))
    assert len(expected) == result.sizes["time"]


def test_normals_through_references_equal_the_file(tmp_path):
    import zarrport

    refs = tmp_path / "prsn.json"
    zarrport.virtualize([str(PRSN)], str(refs))
    kw = dict(variable="prsn", start_year=2001, end_year=2010, window=10, freq="annual")
    a = normals(str(PRSN), **kw).compute()
    b = normals(str(refs), **kw).compute()
    np.testing.assert_array_equal(a["prsn"].values, b["prsn"].values)


def test_monthly_data_are_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "n.nc"
    code, _, err = _cli(["analyze", "normals", str(TAS_MON), "--variable", "tas",
                         "--start-year", "2006", "--end-year", "2010", "--window", "2",
                         "-o", str(out)], capsys)
    assert code != 0
    assert err.strip().splitlines() == [
        "zarrport: error: normals need daily data; the time step of 'tas' is 30 days"]
    assert not out.exists()
