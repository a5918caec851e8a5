#!/usr/bin/env python
"""Benchmark: zarrport's analyses against what a user would run instead, side by side in one
run, on the same files.

1. Normals: the 30-year annual and seasonal normal of a 30-year daily CMIP6-like archive,
   with ``zarrport.analysis.normals`` over virtual references (the Icechunk repository
   ``zarrport batch`` writes), over a ``zarrport convert`` Zarr v3 copy and over the NetCDF
   files, against plain ``xarray.open_mfdataset`` + ``groupby``/``resample`` on the same
   Dask cluster; on 1 and on 2 local workers. Every answer is checked against a netCDF4 +
   numpy computation at sample cells and against the others over the whole grid.
2. Regional means: area-weighted means of >= 1,000 Voronoi polygons ("counties") over a
   CONUS box, every day of 10 years, with ``zarrport.analysis.regions`` against
   exactextract, xagg and regionmask; weights and apply phases apart; agreement with the
   exact answer (exactextract with spherical cell areas).

    python bench/bench_analysis.py --out docs/benchmarks.md    # full (~14 min on 2 cores)
    python bench/bench_analysis.py --quick                     # smoke check (~25 s)
    python bench/bench_analysis.py --size medium --parts regions

Each measured run is its own subprocess (``--child``): one per Dask worker count (the
cluster is started once and shared by every way of computing), one per competitor. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _common import (  # noqa: E402
    fmt_load,
    git_commit,
    loadavg,
    machine,
    nproc,
    package_versions,
    replace_section,
    short_error,
)

BEGIN = "<!-- bench_analysis: begin -->"
END = "<!-- bench_analysis: end -->"
#: the grid the regional data cover (cell edges, W S E N) and the box the polygons fill
#: (zarrport.analysis.presets.PRESETS["CONUS"], inside the grid)
REGION_GRID = (-125.0, 24.0, -66.0, 50.0)
REGION_BOX = (-124.85, 24.39, -66.88, 49.39)
ID_FIELD = "GEOID"
SEASONS = ("DJF", "MAM", "JJA", "SON")
#: largest difference (K) from the reference that still counts as the same answer
NORMALS_TOL = 1e-3
EXACT_TOL = 1e-3
#: regions of the untimed warm-up run of each competitor
WARM_REGIONS = 20
#: exactextract's mean with spherical cell areas (its "exact" area-weighted mean)
EE_OP = "mean(coverage_weight=area_spherical_m2)"

SIZES: dict[str, dict[str, Any]] = {
    # normals: 31 yearly files (the first for the December of the first DJF) of 365 x 90 x
    # 180 float32 (0.73 GB of tas), 73 days (4.7 MB) per chunk: tens of seconds per way and
    # worker count; regions: 2,000 polygons on 104 x 236 cells (0.25 degree), 3,650 days
    "full": {"normals": {"years": range(1984, 2015), "nlat": 90, "nlon": 180,
                         "time_chunk": 73},
             "regions": {"res": 0.25, "years": range(2005, 2015), "polygons": 2000,
                         "time_chunk": 73, "block": 73, "budget": 120.0},
             "workers": (1, 2), "prep_workers": 2, "timeout": 1800},
    "medium": {"normals": {"years": range(1984, 2015), "nlat": 45, "nlon": 90,
                           "time_chunk": 73},
               "regions": {"res": 0.25, "years": range(2005, 2008), "polygons": 2000,
                           "time_chunk": 73, "block": 73, "budget": 60.0},
               "workers": (1, 2), "prep_workers": 2, "timeout": 1200},
    "quick": {"normals": {"years": range(2000, 2004), "nlat": 18, "nlon": 36,
                          "time_chunk": 73},
              "regions": {"res": 1.0, "years": range(2005, 2006), "polygons": 60,
                          "time_chunk": 73, "block": 73, "budget": 0.3},
              "workers": (1, 2), "prep_workers": 1, "timeout": 300},
}
NORMALS_WAYS = {
    # key: (label, how)
    "virtual": ("**zarrport, virtual (Icechunk)**",
                "`normals(repo)` on the repository `zarrport batch` wrote"),
    "converted": ("**zarrport, converted Zarr**",
                  "`normals(store)` on a `zarrport convert --pattern timeseries` copy"),
    "netcdf": ("*zarrport, NetCDF files*", "`normals([files])` (open_archive's "
               "`open_mfdataset`)"),
    "xarray": ("xarray baseline", "`xr.open_mfdataset(files, parallel=True)`, "
               "`groupby('time.year').mean().mean('year')`, `resample(time='QS-DEC')` + "
               "`groupby('time.season')`"),
    "xarray-chunked": ("*xarray, chunks={'time': 365}*", "the same with one Dask chunk per "
                       "file (`chunks={'time': 365}`)"),
}
TOOLS = {
    "exactextract": ("exactextract", "`exact_extract(rast, gdf, ['" + EE_OP + "'], "
                     "strategy='raster-sequential', output='pandas')`, one band per day "
                     "(rioxarray CRS)"),
    "xagg": ("xagg", "`pixel_overlaps(ds, gdf, subset_bbox=True)` + `aggregate(ds, wm)` "
             "(impl 'for_loop', the default), silent"),
    "regionmask": ("regionmask", "`from_geopandas(gdf).mask_3D_frac_approx(lon, lat)`, "
                   "`tas.weighted(mask * cos(lat)).mean(('lat', 'lon'))`"),
}


def log(msg: str) -> None:
    print(f"[bench_analysis {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fmt_s(s: float | None) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "--"
    if s >= 100:
        return f"{s:.0f} s"
    return f"{s:.2f} s" if s >= 1 else f"{s * 1e3:.0f} ms"


def fmt_k(x: float | None) -> str:
    """A difference in kelvin."""
    if x is None:
        return "--"
    if isinstance(x, float) and math.isnan(x):
        return "NaN"
    return "0" if x == 0 else f"{x:.1e} K"


def fmt_x(x: float | None) -> str:
    return "--" if x is None or not math.isfinite(x) else f"{x:.2f}x"


def status_word(ok: bool) -> str:
    return "**PASS**" if ok else "**MISS**"


# --------------------------------------------------------------------------- inputs


def data_root(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    env = os.environ.get("ZARRPORT_BENCH_DATA")
    return Path(env) if env else ROOT / "bench" / ".data"


def make_normals_archive(cfg: dict[str, Any], data_dir: Path) -> tuple[list[Path], dict]:
    """Yearly files of daily ``tas`` (noleap, 1 % fill values), written once: the normal's
    years and the year before (its December starts the first DJF)."""
    from zarrport.testing.samples import write_cmip6_archive

    years = cfg["years"]
    directory = (data_dir / "analysis" / f"normals-{cfg['nlat']}x{cfg['nlon']}-"
                 f"t{cfg['time_chunk']}-{years[0]}-{years[-1]}")
    t0 = time.perf_counter()
    missing = not directory.is_dir() or len(list(directory.glob("*.nc"))) < len(years)
    paths = write_cmip6_archive(directory, years=years, overwrite=False, nlat=cfg["nlat"],
                                nlon=cfg["nlon"], time_chunk=cfg["time_chunk"])
    raw = len(years) * 365 * cfg["nlat"] * cfg["nlon"] * 4
    return paths, {"dir": str(directory), "files": len(paths), "tas_bytes": raw,
                   "disk_bytes": sum(p.stat().st_size for p in paths),
                   "generated_s": round(time.perf_counter() - t0, 1) if missing else None}


def region_grid(res: float) -> tuple[Any, Any]:
    """Cell centres (lat, lon) of the regional grid: ``res`` degrees over REGION_GRID."""
    import numpy as np

    w, s, e, n = REGION_GRID
    lon = w + res * (np.arange(round((e - w) / res)) + 0.5)
    lat = s + res * (np.arange(round((n - s) / res)) + 0.5)
    return lat, lon


def write_region_year(path: Path, year: int, res: float, time_chunk: int = 73) -> None:
    """One noleap year of daily float32 ``tas`` on the regional grid (a smooth field,
    seasonal cycle, a moving wave and 2 K noise; no missing values), ``time_chunk`` days
    per chunk, zlib 4, CF bounds; written to a temporary name and renamed."""
    import numpy as np
    import xarray as xr

    lat, lon = region_grid(res)
    rng = np.random.default_rng([11, year])
    doy = (np.arange(365) + 0.5)[:, None, None]
    phi, lam = np.deg2rad(lat)[None, :, None], np.deg2rad(lon)[None, None, :]
    field = (300.0 - 40.0 * np.sin(phi) ** 2
             + 12.0 * np.sin(phi) * np.cos(2 * np.pi * (doy - 200) / 365)
             + 3.0 * np.cos(5 * lam + 2 * np.pi * doy / 365))
    tas = (field + 2.0 * rng.standard_normal((365, lat.size, lon.size))).astype("f4")
    t = (year - 1850) * 365 + np.arange(365) + 0.5
    half = res / 2
    ds = xr.Dataset(
        {"tas": (("time", "lat", "lon"), tas,
                 {"standard_name": "air_temperature", "units": "K"}),
         "lat_bnds": (("lat", "bnds"), np.stack([lat - half, lat + half], axis=1)),
         "lon_bnds": (("lon", "bnds"), np.stack([lon - half, lon + half], axis=1))},
        coords={"time": ("time", t, {"units": "days since 1850-01-01", "calendar": "noleap",
                                     "standard_name": "time", "axis": "T"}),
                "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude",
                                     "bounds": "lat_bnds", "axis": "Y"}),
                "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude",
                                     "bounds": "lon_bnds", "axis": "X"})})
    tmp = path.with_suffix(".tmp")
    ds.to_netcdf(tmp, engine="netcdf4", encoding={
        "tas": {"zlib": True, "complevel": 4, "chunksizes": (time_chunk, lat.size, lon.size)}})
    tmp.rename(path)


def voronoi_regions(n: int, path: Path, seed: int = 1) -> None:
    """``n`` Voronoi polygons of random points in REGION_BOX, clipped to it (a county-like
    partition), with a unique ``GEOID``; a GeoPackage."""
    import geopandas as gpd
    import numpy as np
    import shapely

    rng = np.random.default_rng(seed)
    w, s, e, north = REGION_BOX
    pts = shapely.points(rng.uniform(w, e, n), rng.uniform(s, north, n))
    box = shapely.box(w, s, e, north)
    cells = shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=box)
    # one polygon per point, in the points' order
    polys = np.asarray(cells.geoms, dtype=object)
    tree = shapely.STRtree(polys)
    pi, ci = tree.query(pts, predicate="within")
    order = np.full(n, -1)
    order[pi] = ci
    geoms = shapely.intersection(polys[order], box)
    gdf = gpd.GeoDataFrame({ID_FIELD: [f"R{i:05d}" for i in range(n)]}, geometry=geoms,
                           crs="EPSG:4326")
    tmp = path.with_name(path.stem + ".tmp.gpkg")
    gdf.to_file(tmp, driver="GPKG")
    tmp.rename(path)


def make_region_inputs(cfg: dict[str, Any], data_dir: Path) -> tuple[list[Path], Path, dict]:
    years, res, tc = cfg["years"], cfg["res"], cfg["time_chunk"]
    directory = data_dir / "analysis" / f"conus-{res:g}deg-t{tc}-{years[0]}-{years[-1]}"
    directory.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = []
    for y in years:
        p = directory / f"tas_day_conus_{y}0101-{y}1231.nc"
        if not p.exists():
            write_region_year(p, y, res, tc)
        paths.append(p)
    regions = data_dir / "analysis" / f"voronoi-{cfg['polygons']}.gpkg"
    if not regions.exists():
        voronoi_regions(cfg["polygons"], regions)
    lat, lon = region_grid(res)
    return paths, regions, {
        "dir": str(directory), "files": len(paths), "regions": str(regions),
        "polygons": cfg["polygons"], "nlat": int(lat.size), "nlon": int(lon.size),
        "steps": 365 * len(years), "res": res, "time_chunk": tc,
        "prepared_s": round(time.perf_counter() - t0, 1)}


def warm_cache(paths: list[Path]) -> None:
    """Read every file once so all contenders find them in the OS page cache."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass


# --------------------------------------------------------------------------- reference


def _masked(a: Any) -> Any:
    import numpy as np

    a = np.asarray(a, dtype="f8")
    return np.where(a >= 1e19, np.nan, a)


def sample_cells(nlat: int, nlon: int) -> list[tuple[int, int]]:
    """A few cells spread over the grid (poles, equator, both hemispheres)."""
    return sorted({(0, 0), (nlat - 1, nlon - 1), (nlat // 2, nlon // 3),
                   (nlat // 4, 2 * nlon // 3), (3 * nlat // 4, nlon // 5),
                   (nlat // 3, nlon - 2)})


def reference_normals(files: list[Path], cells: list[tuple[int, int]], start: int, end: int,
                      min_coverage: float = 0.9) -> dict[str, Any]:
    """The annual and seasonal normals at ``cells`` from netCDF4 reads and numpy loops:
    per year (DJF: the December before), the mean of the valid days if at least
    ``min_coverage`` of the period's days are valid; the normal, the mean of those yearly
    means if at least ``ceil(min_coverage * years)`` years have one."""
    import cftime
    import netCDF4
    import numpy as np

    rows = sorted({r for r, _ in cells})
    cols = sorted({c for _, c in cells})
    series: list[Any] = []
    dates: list[Any] = []
    for f in files:
        with netCDF4.Dataset(f) as nc:
            v = nc["tas"]
            v.set_auto_maskandscale(False)
            block = _masked(v[:, rows, cols])
            t = nc["time"]
            dates += list(cftime.num2date(t[:], t.units, t.calendar))
        series.append(np.stack([block[:, rows.index(r), cols.index(c)] for r, c in cells],
                               axis=1))
    x = np.concatenate(series)  # (time, cell)
    year = np.array([d.year for d in dates])
    month = np.array([d.month for d in dates])
    nyears = end - start + 1
    need = math.ceil(min_coverage * nyears - 1e-9)

    def normal(select: Any, key_year: Any, ndays: int, years: range) -> Any:
        means = []
        for y in years:
            sel = select & (key_year == y)
            if sel.sum() == 0:
                means.append(np.full(len(cells), np.nan))
                continue
            vals = x[sel]
            n = np.isfinite(vals).sum(axis=0)
            with np.errstate(invalid="ignore"):
                m = np.nansum(vals, axis=0) / np.where(n > 0, n, 1)
            means.append(np.where((n >= min_coverage * ndays - 1e-9) & (n > 0), m, np.nan))
        means = np.array(means)
        have = np.isfinite(means).sum(axis=0)
        return np.where(have >= need, np.nanmean(means, axis=0), np.nan)

    yrs = range(start, end + 1)
    annual = normal(np.ones_like(year, dtype=bool), year, 365, yrs)
    season_year = year + (month == 12)
    days = {"DJF": 90, "MAM": 92, "JJA": 92, "SON": 91}  # noleap
    seasonal = np.array([normal((month % 12) // 3 == i, season_year, days[s], yrs)
                         for i, s in enumerate(SEASONS)])
    return {"cells": cells, "annual": annual, "seasonal": seasonal}


# --------------------------------------------------------------------------- children


def _warm_worker() -> str:
    """Imports on a Dask worker before anything is timed."""
    import h5py  # noqa: F401
    import icechunk  # noqa: F401
    import netCDF4  # noqa: F401
    import scipy.sparse  # noqa: F401
    import xarray  # noqa: F401
    import zarr  # noqa: F401

    import zarrport.analysis.normals  # noqa: F401
    import zarrport.analysis.regions  # noqa: F401
    return "ok"


def _ntasks(objs: list[Any]) -> int | None:
    """Tasks in the graph of ``objs`` (after optimisation is not counted)."""
    import dask

    try:
        return len(dask.base.collections_to_expr(objs).__dask_graph__())
    except Exception:  # noqa: BLE001 - a courtesy figure
        return None


def _normals_zarrport(client: Any, source: Any, a: dict[str, Any]) -> tuple[dict, Any]:
    import numpy as np

    from zarrport.analysis.normals import normals
    from zarrport.analysis.source import open_archive

    t0 = time.perf_counter()
    ds = open_archive(source, variables=["tas"])
    lazy = [normals(ds, variable="tas", start_year=a["start"], end_year=a["end"],
                    window=a["window"], freq=f) for f in ("annual", "seasonal")]
    t_graph = time.perf_counter() - t0
    t0 = time.perf_counter()
    ann, sea = client.compute(lazy, sync=True)
    t_compute = time.perf_counter() - t0
    tasks = _ntasks(lazy)
    order = [list(map(str, sea["period"].values)).index(s) for s in SEASONS]
    out = {"annual": np.asarray(ann["tas"].values[0], dtype="f8"),
           "seasonal": np.asarray(sea["tas"].values[order], dtype="f8")}
    return {"graph_s": t_graph, "compute_s": t_compute, "tasks": tasks}, out


def _normals_xarray(client: Any, files: list[str], a: dict[str, Any],
                    chunks: dict | None = None) -> tuple[dict, Any]:
    """What a user writes: open_mfdataset (xarray's default chunks, or ``chunks``), the
    mean of yearly means, WMO seasons (December in the next year's DJF: quarters from the
    December before the first year to the autumn of the last)."""
    import dask
    import numpy as np
    import xarray as xr

    s, e = a["start"], a["end"]
    with client.as_current():
        t0 = time.perf_counter()
        if chunks is None:
            ds = xr.open_mfdataset(files, parallel=True)
        else:
            ds = xr.open_mfdataset(files, parallel=True, chunks=chunks)
        tas = ds["tas"].sel(time=slice(f"{s}-01-01", f"{e}-12-31"))
        annual = tas.groupby("time.year").mean().mean("year")
        quarters = ds["tas"].resample(time="QS-DEC").mean()
        quarters = quarters.sel(time=slice(f"{s - 1}-12-01", f"{e}-09-30"))
        seasonal = quarters.groupby("time.season").mean()
        t_graph = time.perf_counter() - t0
        lazy = [annual, seasonal]
        t0 = time.perf_counter()
        annual, seasonal = dask.compute(annual, seasonal)
        t_compute = time.perf_counter() - t0
        tasks = _ntasks(lazy)
    seasonal = seasonal.sel(season=list(SEASONS))
    out = {"annual": np.asarray(annual.values, dtype="f8"),
           "seasonal": np.asarray(seasonal.transpose("season", ...).values, dtype="f8")}
    return {"graph_s": t_graph, "compute_s": t_compute, "tasks": tasks}, out


def child_dask(a: dict[str, Any]) -> dict[str, Any]:
    """A local cluster of each size in ``workers`` in turn (one process: the imports are
    paid once, before anything is timed)."""
    _warm_worker()
    import geopandas  # noqa: F401
    import pyogrio  # noqa: F401
    import shapely  # noqa: F401

    return {"runs": [_one_cluster(n, a) for n in a["workers"]]}


def _one_cluster(n: int, a: dict[str, Any]) -> dict[str, Any]:
    """One local cluster of ``n`` workers; every way of computing the normals, then
    zarrport's regional means, each timed (the cluster start apart)."""
    import numpy as np

    from zarrport.analysis.cluster import compute, dask_client

    res: dict[str, Any] = {"workers": n, "normals": [], "regions": None}
    t0 = time.perf_counter()
    with dask_client(workers=n) as client:
        res["cluster_start_s"] = time.perf_counter() - t0
        res["cluster"] = client.zarrport_info.to_dict()
        client.run(_warm_worker)
        nm = a.get("normals")
        rg = a.get("regions")
        _warm_runs(client, nm, rg)
        for rep in range(nm["repeat"] if nm else 0):
            for key in nm["ways"]:
                row: dict[str, Any] = {"key": key, "rep": rep}
                try:
                    if key == "xarray":
                        timing, out = _normals_xarray(client, nm["files"], nm)
                    elif key == "xarray-chunked":
                        timing, out = _normals_xarray(client, nm["files"], nm,
                                                      chunks={"time": 365})
                    else:
                        timing, out = _normals_zarrport(client, nm["sources"][key], nm)
                    row.update(timing, ok=True)
                    if rep == 0:
                        path = Path(nm["out_dir"]) / f"normals-{key}-w{n}.npz"
                        np.savez(path, **out)
                        row["result"] = str(path)
                except Exception as err:  # noqa: BLE001 - reported in the table
                    row.update(ok=False, error=short_error(err))
                log(f"normals {key} on {n} worker(s): "
                    f"{fmt_s(row.get('compute_s'))} {row.get('error', '')}")
                res["normals"].append(row)
        if rg:
            from zarrport.analysis.regions import regional_means

            row = {"ok": False}
            try:
                t0 = time.perf_counter()
                means, w = regional_means(rg["files"], rg["regions"], id_field=ID_FIELD,
                                          variables=["tas"])
                row["weights_s"] = time.perf_counter() - t0
                row["weights"] = w.to_dict()
                t0 = time.perf_counter()
                done = compute(client, means, label="regional means", progress=False)
                row["apply_s"] = time.perf_counter() - t0
                vals = done["tas"].transpose("region", "time").values
                path = Path(rg["out_dir"]) / f"means-zarrport-w{n}.npz"
                np.savez(path, means=vals, ids=np.asarray(done["region"].values, dtype=str))
                row.update(ok=True, result=str(path), steps=int(vals.shape[1]))
            except Exception as err:  # noqa: BLE001 - reported in the table
                row["error"] = short_error(err)
            log(f"regional means on {n} worker(s): weights "
                f"{fmt_s(row.get('weights_s'))}, apply {fmt_s(row.get('apply_s'))} "
                f"{row.get('error', '')}")
            res["regions"] = row
    return res


def _warm_runs(client: Any, nm: dict[str, Any] | None, rg: dict[str, Any] | None) -> None:
    """Untimed first runs on a new cluster (first-call costs on its workers): every normals
    way over its first year only, and the regional means of the first file."""
    if nm:
        one = {**nm, "end": nm["start"], "window": 1}
        for key in nm["ways"]:
            with contextlib.suppress(Exception):  # the timed run reports errors
                if key.startswith("xarray"):
                    _normals_xarray(client, nm["files"], one, chunks=(
                        {"time": 365} if key == "xarray-chunked" else None))
                else:
                    _normals_zarrport(client, nm["sources"][key], one)
    if rg:
        from zarrport.analysis.regions import regional_means

        with contextlib.suppress(Exception):
            means, _ = regional_means(rg["files"][:1], rg["regions"], id_field=ID_FIELD,
                                      variables=["tas"])
            client.compute(means, sync=True)


def _blocks(n: int, size: int) -> list[slice]:
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def child_tools(a: dict[str, Any]) -> dict[str, Any]:
    """Every competitor of ``tools`` in turn (one process; a failure is reported in its row
    and the next one runs)."""
    import warnings

    warnings.simplefilter("ignore")
    rows = []
    for tool in a["tools"]:
        log(f"competitor {tool}")
        try:
            _one_tool(tool, a, warm=True)
            row = _one_tool(tool, a)
            log(f"{tool}: read {fmt_s(row['read_s'])}, weights {fmt_s(row['weights_s'])}, "
                f"apply {fmt_s(row['apply_s'])} for {row['steps']} of {row['steps_total']} "
                "days")
        except Exception as err:  # noqa: BLE001 - reported in the table
            row = {"tool": tool, "ok": False, "error": short_error(err)}
            log(f"{tool}: {row['error']}")
        rows.append(row)
    return {"rows": rows}


def _one_tool(tool: str, a: dict[str, Any], *, warm: bool = False) -> dict[str, Any]:
    """One competitor: read the data (xarray, loaded), its weights, then its means in blocks
    of ``block`` days until done or past ``budget`` seconds (then extrapolated). ``warm``:
    the same on the first file, first block and first :data:`WARM_REGIONS` regions, nothing
    kept (first-call costs)."""
    import geopandas as gpd
    import numpy as np
    import xarray as xr

    res: dict[str, Any] = {"tool": tool, "ok": False}
    if tool == "exactextract":  # imports before anything is timed
        import rioxarray  # noqa: F401  (the .rio accessor exactextract reads)
        from exactextract import exact_extract
    elif tool == "xagg":
        import xagg as xa
    elif tool == "regionmask":
        import regionmask
    else:
        raise ValueError(tool)
    gdf = gpd.read_file(a["regions"])
    files = a["files"][:1] if warm else a["files"]
    if warm:
        gdf = gdf.iloc[:WARM_REGIONS]
    t0 = time.perf_counter()
    da = xr.open_mfdataset(files)["tas"]
    da = (da.isel(time=slice(0, a["block"])) if warm else da).load()
    res["read_s"] = time.perf_counter() - t0
    n = da.sizes["time"]
    t0 = time.perf_counter()
    if tool == "exactextract":
        rast = da.rio.set_spatial_dims(x_dim="lon", y_dim="lat").rio.write_crs("EPSG:4326")

        def apply(sl: slice) -> Any:
            df = exact_extract(rast.isel(time=sl), gdf, [EE_OP],
                               strategy="raster-sequential", output="pandas")
            return df[[c for c in df.columns if str(c).endswith("mean")]].to_numpy("f8")
    elif tool == "xagg":
        ds = da.to_dataset()
        wm = xa.pixel_overlaps(ds, gdf, subset_bbox=True, silent=True)

        def apply(sl: slice) -> Any:
            agg = xa.aggregate(ds.isel(time=sl), wm, silent=True)
            return agg.to_dataset()["tas"].transpose("poly_idx", "time").values.astype("f8")
    else:
        reg = regionmask.from_geopandas(gdf, names=ID_FIELD, overlap=False)
        mask = reg.mask_3D_frac_approx(da["lon"], da["lat"])
        weights = mask * np.cos(np.deg2rad(da["lat"]))
        numbers = mask["region"].values
        res["regions_in_mask"] = int(numbers.size)

        def apply(sl: slice) -> Any:
            m = da.isel(time=sl).weighted(weights).mean(("lat", "lon"))
            full = np.full((len(gdf), sl.stop - sl.start), np.nan)
            full[numbers] = m.transpose("region", "time").values
            return full
    res["weights_s"] = time.perf_counter() - t0
    parts = []
    t0 = time.perf_counter()
    for sl in _blocks(n, a["block"]):
        parts.append(apply(sl))
        if time.perf_counter() - t0 > a["budget"] and sl.stop < n:
            break
    res["apply_s"] = time.perf_counter() - t0
    vals = np.concatenate(parts, axis=1)
    res["steps"], res["steps_total"] = int(vals.shape[1]), int(n)
    if warm:
        return res
    res["apply_full_s"] = res["apply_s"] * n / vals.shape[1]
    path = Path(a["out_dir"]) / f"means-{tool}.npz"
    np.savez(path, means=vals, ids=gdf[ID_FIELD].to_numpy(dtype=str))
    res.update(ok=True, result=str(path))
    return res


def run_child(kind: str, args: dict[str, Any], *, work: Path, name: str,
              timeout: float) -> dict[str, Any]:
    """``bench_analysis.py --child kind ARGS.json`` in a fresh interpreter (its own session:
    killed with its Dask workers after ``timeout``); its last stdout line is its result
    (JSON). Its arguments, output and errors are ``work/logs/name.*``."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                      env.get("PYTHONPATH")]))
    env.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    spec = logs / f"{name}.args.json"
    spec.write_text(json.dumps(args, default=str))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(spec)]
    out_path, err_path = logs / f"{name}.stdout", logs / f"{name}.stderr"
    t0 = time.perf_counter()
    with open(out_path, "w") as out_f, open(err_path, "w") as err_f:
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, env=env, cwd=ROOT,
                                start_new_session=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for sig in (signal.SIGTERM, signal.SIGKILL):  # the child's whole session
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
                    break
            return {"ok": False, "error": f"timed out after {timeout:.0f} s (killed)"}
    for ln in err_path.read_text().splitlines():  # the child's progress lines
        if ln.startswith("[bench_analysis "):
            print(ln, file=sys.stderr)
    lines = [ln for ln in out_path.read_text().splitlines() if ln.strip()]
    try:
        out = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = [ln for ln in err_path.read_text().splitlines() if ln.strip()]
        last = next((ln for ln in reversed(tail) if "Error" in ln), tail[-1] if tail else "")
        return {"ok": False, "error": f"failed (exit {proc.returncode}): "
                f"{' '.join(last.split())[:220]}"}
    out["wall_s"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------- parts


def prepare_normals(cfg: dict[str, Any], size: dict[str, Any], data_dir: Path,
                    work: Path) -> dict[str, Any]:
    """The archive, its netCDF4 reference at sample cells, the Icechunk repository (batch)
    and the converted store, each timed."""
    import glob as _glob
    import shutil

    import numpy as np

    from zarrport.convert import convert
    from zarrport.pipeline import run_batch

    files, info = make_normals_archive(cfg, data_dir)
    years = cfg["years"]
    start, end = years[1], years[-1]
    log(f"normals archive: {len(files)} files under {info['dir']}")
    warm_cache(files)
    ref_path = Path(info["dir"]) / f"reference-normals-{start}-{end}.npz"
    cells = sample_cells(cfg["nlat"], cfg["nlon"])
    if ref_path.exists():
        z = np.load(ref_path)
        ref = {"cells": [tuple(c) for c in z["cells"]], "annual": z["annual"],
               "seasonal": z["seasonal"]}
    else:
        log("netCDF4 reference at sample cells")
        ref = reference_normals(files, cells, start, end)
        np.savez(ref_path, cells=np.array(ref["cells"]), annual=ref["annual"],
                 seasonal=ref["seasonal"])
    batch = work / "batch"
    if batch.exists():
        shutil.rmtree(batch)
    log("zarrport batch (virtual references, Icechunk)")
    t0 = time.perf_counter()
    result = run_batch(str(Path(info["dir"]) / "*.nc"), str(batch),
                       workers=size["prep_workers"])
    batch_s = time.perf_counter() - t0
    if not result.ok:
        raise RuntimeError(f"batch failed: {result.failures[:1]}")
    (repo,) = _glob.glob(str(batch / "collections" / "*.icechunk"))
    converted = work / "converted.zarr"
    if converted.exists():
        shutil.rmtree(converted)
    log("zarrport convert --pattern timeseries")
    t0 = time.perf_counter()
    summary = convert(repo, str(converted), pattern="timeseries",
                      workers=size["prep_workers"], variables=["tas"])
    convert_s = time.perf_counter() - t0
    chunks = (((summary.get("variables") or {}).get("tas") or {}).get("chunks"))
    return {"files": [str(p) for p in files], "inputs": info, "reference": ref,
            "sources": {"virtual": repo, "converted": str(converted),
                        "netcdf": [str(p) for p in files]},
            "batch_s": batch_s, "convert_s": convert_s, "converted_chunks": chunks,
            "start": start, "end": end, "window": end - start + 1}


def normals_agreement(prep: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Each result against the netCDF4 reference at the sample cells and against the
    xarray baseline (same workers) over the whole grid; in place."""
    import numpy as np

    ref = prep["reference"]
    rr, cc = zip(*ref["cells"], strict=True)
    base = {r["workers"]: r for r in rows if r["key"] == "xarray" and r.get("result")}
    for r in rows:
        if not r.get("result"):
            continue
        z = np.load(r["result"])
        got_a, got_s = z["annual"][rr, cc], z["seasonal"][:, rr, cc]
        d = max(float(np.nanmax(np.abs(got_a - ref["annual"]))),
                float(np.nanmax(np.abs(got_s - ref["seasonal"]))))
        same_nan = (np.array_equal(np.isnan(got_a), np.isnan(ref["annual"]))
                    and np.array_equal(np.isnan(got_s), np.isnan(ref["seasonal"])))
        r["diff_ref"] = d if same_nan else float("nan")
        b = base.get(r["workers"])
        if b is not None:
            zb = np.load(b["result"])
            r["diff_base"] = max(float(np.nanmax(np.abs(z[k] - zb[k])))
                                 for k in ("annual", "seasonal"))
        r["agrees"] = bool(same_nan and d <= NORMALS_TOL)


def regions_agreement(rows: list[dict[str, Any]]) -> None:
    """Max |difference| of every tool's means against zarrport's (1 worker) and against
    exactextract's, over the regions and days both have; in place."""
    import numpy as np

    loaded = {}
    for r in rows:
        if r.get("result"):
            z = np.load(r["result"])
            loaded[r["key"]] = (list(z["ids"]), z["means"])
    zp = next((k for k in ("zarrport-w1", "zarrport-w2") if k in loaded), None)

    def diff(a: str, b: str | None) -> float | None:
        if b is None or b not in loaded or a not in loaded or a == b:
            return None
        (ia, ma), (ib, mb) = loaded[a], loaded[b]
        idx = [ib.index(i) for i in ia]
        n = min(ma.shape[1], mb.shape[1])
        x, y = ma[:, :n], mb[idx, :n]
        both = np.isfinite(x) & np.isfinite(y)
        return float(np.abs(x - y)[both].max()) if both.any() else float("nan")

    for r in rows:
        if r["key"] in loaded:
            r["diff_zarrport"] = diff(r["key"], zp)
            r["diff_exact"] = diff(r["key"], "exactextract")
            r["nan_regions"] = int(np.isnan(loaded[r["key"]][1]).all(axis=1).sum())


# --------------------------------------------------------------------------- render


def render(res: dict[str, Any]) -> str:
    size = res["size_name"]
    title = "## Analyses: climate normals and regional means (bench_analysis.py)"
    lines = [title + ("" if size == "full" else f" (--size {size})"), "",
             f"Measured {res['date']} on commit {res['commit']}, in "
             f"{fmt_s(res['elapsed_s'])} (`python bench/bench_analysis.py"
             f"{'' if size == 'full' else ' --size ' + size}`). Each run is its own "
             "process; ratios use the same run's figures.", ""]
    nm, rg = res.get("normals"), res.get("regions")
    # targets
    t_rows = []
    if rg:
        by = {r["key"]: r for r in rg["rows"]}
        zp = by.get("zarrport-w1")
        for key in TOOLS:
            r = by.get(key)
            if not zp or not zp.get("total_s") or not r or not r.get("total_full_s"):
                t_rows.append(f"| regional means: zarrport faster than {key} | not measured "
                              "| **MISS** |")
                continue
            ratio = r["total_full_s"] / zp["total_s"]
            est = " (extrapolated)" if r["steps"] < r["steps_total"] else ""
            t_rows.append(
                f"| regional means: zarrport faster than {key} | {fmt_x(ratio)}: "
                f"{fmt_s(zp['total_s'])} (1 worker) vs {fmt_s(r['total_full_s'])}{est} | "
                f"{status_word(ratio > 1 and zp.get('ok', False))} |")
        d = zp.get("diff_exact") if zp else None
        t_rows.append(f"| regional means exact: max abs difference from exactextract with "
                      f"spherical areas <= {EXACT_TOL:g} K | {fmt_k(d)} | "
                      f"{status_word(d is not None and d <= EXACT_TOL)} |")
        rm = by.get("regionmask")
        if rm and rm.get("diff_exact") is not None:
            t_rows.append(f"| (context) regionmask's approximate fractions, same comparison "
                          f"| {fmt_k(rm['diff_exact'])} | -- |")
    if nm:
        bad = [r for r in nm["rows"] if not r.get("agrees")]
        t_rows.append(f"| normals: every way and worker count within {NORMALS_TOL:g} K of "
                      f"the netCDF4 reference | {len(nm['rows']) - len(bad)} of "
                      f"{len(nm['rows'])} agree | {status_word(not bad)} |")
    lines += ["### Targets", "", "| target | measured | status |", "|---|---|---|",
              *t_rows, ""]
    if nm:
        inp = nm["inputs"]
        lines += [f"### Normals: {nm['window']}-year annual + seasonal normal, "
                  f"{inp['files']} yearly files {nm['grid']} daily ({nm['start']}-{nm['end']})",
                  "",
                  "| source | workers | open + graph | compute | total | time / xarray "
                  "(same workers) | 2 workers vs 1 | tasks | max abs diff vs netCDF4 "
                  "reference | max abs diff vs xarray | status | how |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for r in nm["rows"]:
            label, how = NORMALS_WAYS[r["key"]]
            st = ("ok" if r.get("agrees") else "WRONG") if r.get("ok") else r.get(
                "error", "failed")
            lines.append(
                f"| {label} | {r['workers']} | {fmt_s(r.get('graph_s'))} | "
                f"{fmt_s(r.get('compute_s'))} | {fmt_s(r.get('total_s'))} | "
                f"{fmt_x(r.get('vs_xarray'))} | {fmt_x(r.get('speedup'))} | "
                f"{r.get('tasks', '--'):,} | {fmt_k(r.get('diff_ref'))} | "
                f"{fmt_k(r.get('diff_base'))} | {st} | {how} |".replace("| --, |", "| -- |"))
        chunks = nm.get("converted_chunks")
        tc = nm["time_chunk"]
        lines += ["", f"Inputs: `write_cmip6_archive(years={nm['start'] - 1}..{nm['end']}, "
                  f"nlat, nlon = {nm['grid']}, time_chunk={tc})` ({nm['start'] - 1} for the "
                  "December of the first DJF): `tas` float32, "
                  f"{'one day' if tc == 1 else f'{tc} days'} per chunk (zlib), noleap, 1 % "
                  f"fill values; {inp['tas_bytes'] / 1e9:.2f} GB "
                  f"uncompressed, {inp['disk_bytes'] / 1e9:.2f} GB on disk, in the page cache "
                  "for everyone. Prepared once per run, not in the times above: `zarrport "
                  f"batch` (virtual references) {fmt_s(nm['batch_s'])}, `zarrport convert "
                  f"--pattern timeseries` {fmt_s(nm['convert_s'])} (chunks "
                  f"{tuple(chunks) if chunks else '?'}). Each way computes both normals in one "
                  "Dask computation (zarrport: the archive opened once with `open_archive`, "
                  "then `normals(ds, freq=...)` twice; xarray: `dask.compute(annual, "
                  "seasonal)`), on a local cluster of single-threaded workers "
                  "(`dask_client(workers=N)`), started once per worker count (start-up "
                  f"{', '.join(fmt_s(s) for s in nm['cluster_start_s'])}, not counted), "
                  "after the workers' imports and an untimed run of every way over the "
                  "first year (first-call costs). *open + graph*: opening and "
                  "building the lazy result; *compute*: the Dask computation to numpy. The "
                  "reference: netCDF4 reads of the files and numpy loops at "
                  f"{len(nm['cells'])} cells (the mean of yearly means, WMO seasons with "
                  "December in the next year's DJF, 90 % coverage per year and of the "
                  "years); the xarray baseline computes the same definition (seasons from "
                  "`resample(time='QS-DEC')` without the incomplete first and last).", ""]
    if rg:
        inp = rg["inputs"]
        lines += [f"### Regional means: {inp['polygons']:,} polygons x {inp['steps']:,} daily "
                  f"steps ({inp['nlat']} x {inp['nlon']} cells, {inp['res']:g} degree)", "",
                  "| tool | read | weights | apply | total | time / zarrport (1 worker) | days "
                  "run | max abs diff vs zarrport | vs exactextract (spherical) | NaN regions "
                  "| status | how |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for r in rg["rows"]:
            partial = r.get("steps", 0) < r.get("steps_total", 0)
            apply_s = fmt_s(r.get("apply_s"))
            total = fmt_s(r.get("total_full_s"))
            if partial:
                apply_s += f" ({fmt_s(r['apply_full_s'])} for all)"
                total += " (extrapolated)"
            days = (f"{r['steps']:,} of {r['steps_total']:,}" if r.get("steps_total")
                    else "--")
            lines.append(
                f"| {r['label']} | {fmt_s(r.get('read_s'))} | {fmt_s(r.get('weights_s'))} | "
                f"{apply_s} | {total} | {fmt_x(r.get('vs_zarrport'))} | {days} | "
                f"{fmt_k(r.get('diff_zarrport'))} | {fmt_k(r.get('diff_exact'))} | "
                f"{r.get('nan_regions', '--')} | {'ok' if r.get('ok') else r.get('error')} | "
                f"{r['how']} |")
        zw = rg.get("weights_info") or {}
        tc = inp["time_chunk"]
        lines += ["", f"Inputs: {inp['files']} yearly NetCDF files of daily `tas` (float32, "
                  f"{tc} day{'s' * (tc > 1)} per chunk, zlib, noleap, no missing values) on a "
                  f"{inp['res']:g}-degree grid over {REGION_GRID} (W, S, E, N), and "
                  f"{inp['polygons']:,} Voronoi polygons of random points clipped to the CONUS "
                  f"box {REGION_BOX} (a GeoPackage, id field `{ID_FIELD}`). zarrport: "
                  "`regional_means(files, gpkg, id_field=...)` (*weights*: opening, reading "
                  "the regions and the sparse weight matrix, "
                  f"{zw.get('nonzero_weights', '?'):,} non-zero weights) then `compute(client, "
                  "means)` (*apply*: reading the files and the product, on a local cluster "
                  "started beforehand, "
                  f"{', '.join(fmt_s(s) for s in rg['cluster_start_s'])}, not counted). The "
                  "others, in one process after an untimed run on 20 regions x "
                  f"{rg['block']} days: *read* is `xr.open_mfdataset(files)['tas'].load()`, "
                  f"then their own weights, then their means in calls of {rg['block']} days "
                  "until done or "
                  f"past {fmt_s(rg['budget'])}; a tool that stops early is extrapolated "
                  "linearly to all days (marked). exactextract computes its coverage inside "
                  "every call (no weights phase of its own); its default strategy, "
                  "feature-sequential, is much slower on a raster of many bands and is not "
                  "run. xagg's `impl='dot_product'` broadcasts regions x cells x days (it asked "
                  "for 25.6 GiB at 2,000 regions and 73 days) and `'numba'` needs numba (not "
                  "installed); `'for_loop'` is the default. xagg intersects in EASE-Grid 2.0 "
                  "North (EPSG:6931, Lambert azimuthal) when all polygons are north of the "
                  "equator, reprojecting corners only: straight lon/lat edges become chords "
                  "there, so cells next to a polygon get slivers of weight (a box of two "
                  "1-degree cells gave its two northern neighbours 0.25 % each) -- the source "
                  "of its differences. regionmask's fractions come from "
                  "10 x 10 sub-samples of every cell (approximate); its weights are the "
                  "fraction x cos(latitude), as in its documentation. *NaN regions*: regions "
                  "with no value (regionmask drops regions that cover no sub-sample).", ""]
    m = res["machine"]
    lines += [f"- machine: {m.get('cpu', '?')}, nproc {m['nproc']}, RAM {m['ram']}, "
              f"Python {m['python']}; load average at start {res['load_start']}, at end "
              f"{res['load_end']} (shared machine: expect noise)",
              "- versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items())]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def part_normals(size: dict[str, Any], data_dir: Path, work: Path, repeat: int,
                 ways: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Prepare the normals inputs; returns (the args of the dask children, the part's
    result skeleton)."""
    cfg = size["normals"]
    prep = prepare_normals(cfg, size, data_dir, work)
    (work / "results").mkdir(exist_ok=True)
    args = {"files": prep["files"], "sources": prep["sources"], "start": prep["start"],
            "end": prep["end"], "window": prep["window"], "ways": ways, "repeat": repeat,
            "out_dir": str(work / "results")}
    part = {"inputs": prep["inputs"], "start": prep["start"], "end": prep["end"],
            "window": prep["window"], "grid": f"{cfg['nlat']} x {cfg['nlon']}",
            "time_chunk": cfg["time_chunk"],
            "batch_s": prep["batch_s"], "convert_s": prep["convert_s"],
            "converted_chunks": prep["converted_chunks"], "cells": prep["reference"]["cells"],
            "rows": [], "cluster_start_s": [], "_prep": prep}
    return args, part


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--quick", action="store_true", help="= --size quick (smoke check)")
    parser.add_argument("--parts", action="append", choices=["normals", "regions"],
                        help="only these parts (repeatable; default both)")
    parser.add_argument("--ways", action="append", choices=list(NORMALS_WAYS),
                        help="normals: only these ways (repeatable; default all)")
    parser.add_argument("--tools", action="append", choices=list(TOOLS),
                        help="regional means: only these competitors (default all)")
    parser.add_argument("--workers", action="append", type=int,
                        help="Dask worker counts (repeatable; default 1 and 2)")
    parser.add_argument("--budget", type=float, help="seconds of apply per competitor "
                        "before it is stopped and extrapolated")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs of each normals way")
    parser.add_argument("--out", type=Path, help="replace this benchmark's section here")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="render the section from an earlier --json (no measuring)")
    parser.add_argument("--data-dir", type=Path,
                        help="inputs (default $ZARRPORT_BENCH_DATA or bench/.data)")
    parser.add_argument("--work-dir", type=Path, help="outputs (default bench/.work/analysis)")
    parser.add_argument("--child", choices=["dask", "tools"], help=argparse.SUPPRESS)
    parser.add_argument("child_args", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        fn = child_dask if args.child == "dask" else child_tools
        print(json.dumps(fn(json.loads(Path(args.child_args).read_text())), default=str))
        return 0
    if args.from_json:
        section = render(json.loads(args.from_json.read_text()))
        print(section)
        if args.out:
            replace_section(args.out, BEGIN, END, section)
        return 0
    size_name = "quick" if args.quick else args.size
    size = SIZES[size_name]
    parts = set(args.parts or ["normals", "regions"])
    workers = args.workers or list(size["workers"])
    data_dir = data_root(args.data_dir)
    work = args.work_dir or ROOT / "bench" / ".work" / (
        "analysis" if size_name == "full" else f"analysis-{size_name}")
    (work / "results").mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    load0 = loadavg()
    res: dict[str, Any] = {"size_name": size_name, "commit": git_commit()}
    dask_args: dict[str, Any] = {}
    if "normals" in parts:
        dask_args["normals"], res["normals"] = part_normals(
            size, data_dir, work, args.repeat, args.ways or list(NORMALS_WAYS))
    if "regions" in parts:
        rcfg = dict(size["regions"])
        if args.budget is not None:
            rcfg["budget"] = args.budget
        files, regions, inputs = make_region_inputs(rcfg, data_dir)
        warm_cache(files)
        log(f"regional inputs: {len(files)} files, {inputs['polygons']} polygons")
        dask_args["regions"] = {"files": [str(p) for p in files], "regions": str(regions),
                                "out_dir": str(work / "results")}
        res["regions"] = {"inputs": inputs, "block": rcfg["block"], "budget": rcfg["budget"],
                          "rows": [], "cluster_start_s": []}
    log(f"Dask child: clusters of {', '.join(map(str, workers))} worker(s) in turn")
    child = run_child("dask", {"workers": workers, **dask_args}, work=work, name="dask",
                      timeout=size["timeout"] * len(workers))
    if child.get("error"):
        log(f"dask child failed: {child['error']}")
    runs = {r["workers"]: r for r in child.get("runs") or []}
    for n in workers:
        out = runs.get(n) or {"error": child.get("error", "failed")}
        if "normals" in res:
            res["normals"]["cluster_start_s"].append(out.get("cluster_start_s"))
            rows = out.get("normals") or [{"key": k, "ok": False,
                                           "error": out.get("error", "failed")}
                                          for k in dask_args["normals"]["ways"]]
            for r in rows:
                r["workers"] = n
            res["normals"]["rows"] += rows
        if "regions" in res:
            res["regions"]["cluster_start_s"].append(out.get("cluster_start_s"))
            r = out.get("regions") or {"ok": False, "error": out.get("error", "failed")}
            label, how = (f"**zarrport, {n} worker{'s' * (n > 1)}**",
                          "`regional_means(files, gpkg)` + `compute(client, means)`, "
                          "exact coverage x spherical cell area, sparse product per time "
                          "chunk")
            r.update(key=f"zarrport-w{n}", label=label, how=how)
            if r.get("ok"):
                r["total_s"] = r["total_full_s"] = r["weights_s"] + r["apply_s"]
                res["regions"]["weights_info"] = r.get("weights")
            res["regions"]["rows"].append(r)
    if "regions" in res:
        tools = args.tools or list(TOOLS)
        out = run_child("tools", {"tools": tools, **dask_args["regions"],
                                  "block": res["regions"]["block"],
                                  "budget": res["regions"]["budget"]},
                        work=work, name="tools", timeout=size["timeout"] * len(tools))
        got = {r["tool"]: r for r in out.get("rows") or []}
        for tool in tools:
            r = got.get(tool) or {"ok": False, "error": out.get("error", "failed")}
            label, how = TOOLS[tool]
            r.update(key=tool, label=label, how=how)
            if r.get("ok"):
                r["total_full_s"] = r["read_s"] + r["weights_s"] + r["apply_full_s"]
            res["regions"]["rows"].append(r)
        regions_agreement(res["regions"]["rows"])
        zp = next((r for r in res["regions"]["rows"] if r["key"] == "zarrport-w1"), None)
        for r in res["regions"]["rows"]:
            if zp and zp.get("total_s") and r.get("total_full_s"):
                r["vs_zarrport"] = r["total_full_s"] / zp["total_s"]
    if "normals" in res:
        nm = res["normals"]
        for r in nm["rows"]:
            if r.get("ok"):
                r["total_s"] = r["graph_s"] + r["compute_s"]
        normals_agreement(nm.pop("_prep"), nm["rows"])
        first = {(r["key"], r["workers"]): r for r in nm["rows"] if r.get("rep", 0) == 0}
        for r in nm["rows"]:
            b = first.get(("xarray", r["workers"]))
            if r.get("total_s") and b and b.get("total_s"):
                r["vs_xarray"] = r["total_s"] / b["total_s"]
            one = first.get((r["key"], 1))
            if r["workers"] != 1 and r.get("total_s") and one and one.get("total_s"):
                r["speedup"] = one["total_s"] / r["total_s"]
    res.update(date=f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
               elapsed_s=time.perf_counter() - t_start, machine=machine(),
               load_start=fmt_load(load0), load_end=fmt_load(loadavg()),
               versions={**package_versions(
                   ["zarrport", "xarray", "dask", "distributed", "flox", "zarr", "icechunk",
                    "numpy", "scipy", "shapely", "geopandas", "exactextract", "xagg",
                    "regionmask", "rioxarray", "netCDF4"]),
                   "python": sys.version.split()[0], "nproc": str(nproc())})
    section = render(res)
    print(section)
    if args.out:
        replace_section(args.out, BEGIN, END, section)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
