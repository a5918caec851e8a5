"""Smoke check of bench/bench_analysis.py: ``--quick`` computes the normals of a 4-year
archive every way (zarrport over Icechunk, a converted Zarr and the NetCDF files; xarray with
its default and with yearly chunks) on 1 and 2 Dask workers, and regional means of 60
polygons with zarrport, exactextract, xagg and regionmask; every answer is checked; the
section goes between its markers exactly once, also when rendered again from ``--json``.
No timing is asserted. Also the harness's own pieces: the polygons, the grid and the
netCDF4 reference of the normals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from mdtables import tables as md_tables  # tests/mdtables.py

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "bench_analysis.py"
sys.path.insert(0, str(ROOT / "bench"))

import bench_analysis  # noqa: E402


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                      env.get("PYTHONPATH")]))
    return env


def test_quick_analysis_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nearlier sections\n")
    js = tmp_path / "analysis.json"
    cmd = [sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--json", str(js),
           "--data-dir", str(tmp_path / "data"), "--work-dir", str(tmp_path / "work")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env(),
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    section = proc.stdout
    assert section.startswith("## Analyses: climate normals and regional means "
                              "(bench_analysis.py) (--size quick)")
    assert "exactextract 0." in section and "nproc" in section and "flox " in section
    t = md_tables(section)
    (targets,) = [rows for name, rows in t.items() if name == "Targets"]
    assert all(r["status"] in ("**PASS**", "**MISS**", "--") for r in targets), targets
    # correctness is not timing: these hold on any machine
    by_target = {r["target"]: r for r in targets}
    exact = next(r for k, r in by_target.items() if k.startswith("regional means exact"))
    normals = next(r for k, r in by_target.items() if k.startswith("normals:"))
    assert exact["status"] == "**PASS**" and normals["status"] == "**PASS**", targets
    (nm,) = [rows for name, rows in t.items() if name.startswith("Normals")]
    assert len(nm) == 10, nm  # 5 ways x (1, 2) workers
    assert {(r["source"], r["workers"]) for r in nm} == {
        (label, w) for label, _ in bench_analysis.NORMALS_WAYS.values() for w in ("1", "2")}
    assert all(r["status"] == "ok" for r in nm), nm
    (rg,) = [rows for name, rows in t.items() if name.startswith("Regional means")]
    assert [r["tool"] for r in rg] == ["**zarrport, 1 worker**", "**zarrport, 2 workers**",
                                       "exactextract", "xagg", "regionmask"], rg
    assert all(r["status"] == "ok" for r in rg), rg
    data = json.loads(js.read_text())
    rows = {r["key"]: r for r in data["regions"]["rows"]}
    assert rows["zarrport-w1"]["steps"] == 365 and rows["zarrport-w2"]["diff_zarrport"] == 0
    for tool in ("exactextract", "xagg", "regionmask"):
        assert 0 < rows[tool]["steps"] <= rows[tool]["steps_total"] == 365, rows[tool]
    # regionmask's sub-sampled fractions are approximate; zarrport's coverage is exact
    assert rows["regionmask"]["diff_exact"] > 100 * rows["zarrport-w1"]["diff_exact"]
    text = out.read_text()
    assert text.startswith("# Benchmarks") and text.count("## Analyses: climate") == 1
    again = subprocess.run([sys.executable, str(SCRIPT), "--from-json", str(js), "--out",
                            str(out)], capture_output=True, text=True, timeout=60, env=_env(),
                           cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert out.read_text() == text
    assert text.count(bench_analysis.BEGIN) == 1 and text.count(bench_analysis.END) == 1


def test_voronoi_regions_partition_the_box(tmp_path: Path) -> None:
    import geopandas as gpd
    import shapely

    path = tmp_path / "r.gpkg"
    bench_analysis.voronoi_regions(50, path, seed=3)
    gdf = gpd.read_file(path)
    assert len(gdf) == 50 and gdf[bench_analysis.ID_FIELD].is_unique
    geoms = np.asarray(gdf.geometry.values)
    box = shapely.box(*bench_analysis.REGION_BOX)
    assert np.isclose(shapely.area(geoms).sum(), box.area)  # no overlap ...
    assert shapely.union_all(geoms).symmetric_difference(box).area < 1e-9  # ... no gap


def test_region_grid_cells_tile_the_grid_box() -> None:
    lat, lon = bench_analysis.region_grid(0.25)
    w, s, e, n = bench_analysis.REGION_GRID
    assert lat.size == 104 and lon.size == 236
    assert np.isclose(lat[0], s + 0.125) and np.isclose(lat[-1], n - 0.125)
    assert np.isclose(lon[0], w + 0.125) and np.isclose(lon[-1], e - 0.125)


def test_reference_normals_by_day_index(tmp_path: Path) -> None:
    """The netCDF4 reference against sums over fixed day ranges of the noleap year (DJF:
    days 334-364 of the year before and 0-58), read with xarray."""
    import xarray as xr

    from zarrport.testing.samples import write_cmip6_archive

    files = write_cmip6_archive(tmp_path, years=range(2000, 2004), nlat=6, nlon=8,
                                time_chunk=365, fill_fraction=0.02)
    cells = [(0, 0), (2, 5), (5, 7)]
    ref = bench_analysis.reference_normals(files, cells, 2001, 2003)
    x = np.concatenate([xr.open_dataset(f)["tas"].values for f in files])  # NaN at fill
    bounds = {"DJF": None, "MAM": (59, 151), "JJA": (151, 243), "SON": (243, 334)}
    for k, (r, c) in enumerate(cells):
        series = x[:, r, c].reshape(4, 365)
        assert np.isclose(ref["annual"][k], np.mean([np.nanmean(series[y])
                                                     for y in (1, 2, 3)]))
        for i, (_, b) in enumerate(bounds.items()):
            if b is None:
                means = [np.nanmean(np.r_[series[y - 1, 334:], series[y, :59]])
                         for y in (1, 2, 3)]
            else:
                means = [np.nanmean(series[y, b[0]:b[1]]) for y in (1, 2, 3)]
            assert np.isclose(ref["seasonal"][i, k], np.mean(means)), (k, i)
