"""``make demo``: the main job on local, embedded defaults.

Makes a small CMIP6-like archive (yearly daily files of two variables, noleap calendar, fill
values), inspects one file, ingests the archive with ``batch`` -- one combined Icechunk
dataset per collection, a status ledger and a STAC catalog -- verifies it against netCDF4,
lets a new year land and re-runs (only that file is read; one new commit), and opens the
result, and converts the hot variable (tas) into a physical Zarr v3 copy chunked for point
series, timing one point's series read both ways. Then forecasts: two synthetic GEFS-like
cycles are ingested from their ``.idx`` files into one Icechunk repository (a commit and a tag
per cycle) and the probability that 24-hour precipitation exceeds 50 mm is computed over a
box and printed as a table and map. ``zarrport run examples/pipeline.yaml`` then runs the
chain from one YAML file (batch, normals and regional means per variable, with pictures) and
again (everything fresh, skipped). Last, ``zarrport serve`` puts the archive on a map: one
tile is fetched and the viewer's and a tile's URLs are printed; ``--serve`` keeps serving.

Run: ``python -m zarrport.demo [--dir demo-output] [--years 3] [--serve [--port 8000]]``
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from zarrport.cli.options import human_bytes

CMIP6 = "{variable}_{freq}_{model}_{scenario}_{member}_{grid}_{years}.nc"


def main(argv: list[str] | None = None) -> int:
    import warnings

    import zarrport
    from zarrport.cli.batch import print_summary
    from zarrport.inspect import inspect_source
    from zarrport.pipeline import run_batch
    from zarrport.testing.samples import write_cmip6_archive
    from zarrport.verify import verify_batch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("demo-output"))
    parser.add_argument("--years", type=int, default=3)
    parser.add_argument("--serve", action="store_true",
                        help="keep serving the viewer and tiles at the end (Ctrl-C stops)")
    parser.add_argument("--port", type=int, default=8000,
                        help="port of the viewer with --serve (default 8000)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    out = args.dir
    if out.exists():
        shutil.rmtree(out)
    src_dir = out / "archive"
    t0 = time.perf_counter()
    grid = {"nlat": 90, "nlon": 180, "time_chunk": 1}
    years = range(2015, 2015 + args.years)
    paths = write_cmip6_archive(src_dir, years=years, **grid)
    paths += write_cmip6_archive(src_dir, years=years, variable="pr", **grid)
    data_bytes = sum(p.stat().st_size for p in paths)
    print(f"1. archive: {len(paths)} CMIP6-like daily files ({human_bytes(data_bytes)}) in "
          f"{src_dir}")
    for p in paths:
        print(f"     {p.name}")

    report = inspect_source(str(paths[0]))
    print(f"\n2. inspect {paths[0].name}:")
    for v in report.variables:
        warn = f"  [{', '.join(w.code for w in v.warnings)}]" if v.warnings else ""
        print(f"     {v.name:10s} {str(v.shape):16s} {v.layout:10s} -> {v.verdict}{warn}")

    refs = out / "refs"
    stac = out / "stac"
    print(f"\n3. zarrport batch '{src_dir}/*.nc' -o {refs} --collection-by '{CMIP6}' "
          f"--stac {stac}")
    result = run_batch(str(src_dir / "*.nc"), str(refs), collection_by=CMIP6, stac=str(stac))
    print_summary(result)
    if not result.ok:
        return 1

    check = verify_batch(str(refs))
    print(f"\n4. verify against netCDF4: {'OK' if check.ok else 'FAILED'} - "
          f"{check.sources} sources unchanged, {check.variables_checked} variables compared")
    if not check.ok:
        for p in check.problems[:5]:
            print(f"     {p.kind}: {p.item}: {p.detail}")
        return 1

    new = write_cmip6_archive(src_dir, years=range(years.stop, years.stop + 1), **grid)
    print(f"\n5. a new year lands ({new[0].name}); the same command again:")
    again = run_batch(str(src_dir / "*.nc"), str(refs), stac=str(stac))
    print_summary(again)

    tas_id = next(c for c in again.collections if c.startswith("tas_"))
    repo = refs / again.collections[tas_id]["icechunk"]
    ds = zarrport.open_dataset(str(repo))
    tas = ds["tas"]
    point = tas.isel(lat=45, lon=90)
    print(f"\n6. zarrport.open_dataset({repo.relative_to(out)}):")
    print(f"     dims {dict(ds.sizes)}; time {ds.time.values[0]} .. {ds.time.values[-1]} "
          f"({ds.time.values[0].calendar})")
    print(f"     tas at the equator, 0E: mean {float(point.mean()):.2f} K over "
          f"{point.size} days; {int(tas.isel(time=0).isnull().sum())} fill points on day 1 "
          "read as NaN")
    ref_bytes = again.reference_bytes
    print(f"\nsummary: {human_bytes(data_bytes + new[0].stat().st_size)} of NetCDF read as "
          f"Zarr through {human_bytes(ref_bytes)} of references (per-file JSON and Icechunk), "
          f"no data copied; STAC catalog in {stac}; {time.perf_counter() - t0:.1f} s in all.")
    print(f"try: .venv/bin/zarrport info {repo}")
    print(f"     .venv/bin/zarrport verify {refs}")
    if convert_demo(out, repo) != 0:
        return 1
    if grib_demo(out) != 0:
        return 1
    if pipeline_demo(out, years) != 0:
        return 1
    return serve_demo(out, stac, tas_id, keep=args.serve, port=args.port)


def convert_demo(out: Path, repo: Path) -> int:
    """The hottest variable (tas, read as point series by most users) converted to
    time-series chunks, and what that does to a point series read."""
    import statistics

    import xarray as xr

    import zarrport
    from zarrport.cli.convert import print_summary
    from zarrport.convert import convert

    target = out / "tas-series.zarr"
    print(f"\n7. the hot variable as a physical copy: zarrport convert {repo.relative_to(out)} "
          f"-o {target.name} --variables tas --pattern timeseries --validate")
    summary = convert(str(repo), str(target), variables=["tas"], pattern="timeseries",
                      validate=True)
    print_summary(summary)
    virtual = zarrport.open_dataset(str(repo))
    physical = xr.open_dataset(target, engine="zarr")

    def timed(ds: xr.Dataset) -> tuple[float, np.ndarray]:
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            values = ds["tas"].isel(lat=45, lon=90).values
            runs.append(time.perf_counter() - t)
        return statistics.median(runs), values

    t_virtual, a = timed(virtual)
    t_physical, b = timed(physical)
    if not np.array_equal(a, b, equal_nan=True):
        print("     the converted series differs from the virtual one")
        return 1
    print(f"     one point's {a.size}-day series: {t_virtual * 1e3:.1f} ms through the "
          f"references ({a.size} chunks), {t_physical * 1e3:.1f} ms from the copy: "
          f"{t_virtual / t_physical:.0f}x faster")
    return 0


def grib_demo(out: Path) -> int:
    """GEFS-like forecast cycles as one versioned Icechunk repository, and an ensemble
    exceedance probability computed from it."""
    from zarrport.grib.analyze import exceedance, report, summarize, write
    from zarrport.grib.ingest import ingest_cycle
    from zarrport.testing.grib_synthetic import make_gefs_cycle

    t0 = time.perf_counter()
    gefs = out / "gefs"
    for k, cycle in enumerate(("2025010100", "2025010106")):
        make_gefs_cycle(gefs, cycle, members=5, steps=range(0, 25, 3), seed=k)
    n = sum(1 for p in gefs.rglob("*") if p.is_file() and not p.name.endswith(".idx"))
    print(f"\n8. forecasts: two synthetic GEFS-like cycles (5 members x 9 steps, global 5-degree "
          f"grid, {n} GRIB2 files with wgrib2 .idx) in {gefs}")
    repo = out / "gefs.icechunk"
    for cycle in ("2025010100", "2025010106"):
        url = gefs / f"gefs.{cycle[:8]}" / cycle[8:]
        print(f"   zarrport grib ingest gefs {url} -o {repo}")
        r = ingest_cycle("gefs", str(url), str(repo))
        print(f"     {r.status}: cycle {r.cycle[:13]}Z, {r.members} members x {r.steps} steps, "
              f"{r.chunks} messages referenced from their .idx, tag {r.tag}")
    again = ingest_cycle("gefs", str(gefs / "gefs.20250101" / "00"), str(repo))
    print(f"     the 00Z cycle again: {again.status} (no new commit)")
    bbox = "-180,-60,180,60"
    result_path = out / "tp24_gt50mm.nc"
    print(f"\n9. zarrport analyze exceedance {repo.name} --var tp --window 24h --threshold 50mm "
          f"--bbox {bbox} -o {result_path.name}")
    computed = write(exceedance(str(repo), var="tp", window="24h", threshold="50mm",
                                bbox=bbox), str(result_path))
    print(report(summarize(computed), computed, str(result_path)))
    print(f"\nforecasts: {time.perf_counter() - t0:.1f} s; open with "
          f"zarrport.open_dataset('{repo}')")
    return 0


def pipeline_demo(out: Path, years: range) -> int:
    """The whole chain from one YAML file (``examples/pipeline.yaml``): batch, then normals
    and regional means per variable with their pictures, on one local Dask cluster; run
    again, every stage is fresh and skipped."""
    import shlex

    from zarrport.errors import ZarrportError
    from zarrport.workflow import load_pipeline, run_pipeline

    example = Path(__file__).resolve().parents[2] / "examples" / "pipeline.yaml"
    if not example.exists():  # an installed zarrport without the repository's examples/
        print(f"\n10. pipelines: {example} is not here (run the demo from a checkout)")
        return 0
    t0 = time.perf_counter()
    # pr has the first years only (the new year above is tas): normals must fit them
    end = years.stop - 1
    sets = [f"root={out}", f"years.end={end}", f"window={min(2, len(years))}"]
    only = ["refs", "normals", "regions"]  # tas was converted above (step 7)
    args = [a for s in sets for a in ("--set", s)] + [a for o in only for a in ("--only", o)]
    command = shlex.join(["zarrport", "run", str(example), *args])
    print(f"\n10. the chain from one YAML file: {command}")
    try:
        pipe = load_pipeline(example, sets)
        run_pipeline(pipe, only=only)
        again = run_pipeline(pipe, only=only)
    except ZarrportError as err:
        print(f"     zarrport: error: {err}")
        return 1
    fresh = sum(s.action == "skip" for s in again)
    print(f"     run again: {fresh} of {len([s for s in again if s.action != 'unselected'])} "
          "stage instances fresh, skipped")
    result = out / "pipeline"
    tables = sorted(p.name for p in result.glob("regional-means-*.parquet"))
    normals = sorted(p.name for p in result.glob("normals-*.nc"))
    pictures = sorted(p.name for p in result.glob("*.png"))
    print(f"     in {result}: tables {', '.join(tables)}; normals {', '.join(normals)}")
    print(f"     pictures: {', '.join(pictures)}")
    print(f"     pipeline: {time.perf_counter() - t0:.1f} s")
    return 0


def serve_demo(out: Path, stac: Path, collection: str, *, keep: bool, port: int) -> int:
    """The archive on a map: ``zarrport serve`` over the STAC catalog, one tile fetched to
    show it works, the viewer's URL printed; with ``keep``, serving goes on until Ctrl-C."""
    import socket
    import threading
    import urllib.request
    from urllib.parse import urlencode

    import uvicorn

    from zarrport.service.server import ServerConfig, create_server

    app = create_server(ServerConfig(allow=[str(out)], catalog=str(stac)))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a run just before
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        if keep:
            print(f"     port {port} is taken: give another with --port")
            return 1
        sock.bind(("127.0.0.1", 0))  # the check runs anywhere; the URLs name `port`
    served = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", server_header=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    print(f"\n11. the archive on a map: zarrport serve --catalog {stac} --allow {out}")
    thread.start()
    base = f"http://127.0.0.1:{served}"
    query = urlencode({"collection": collection, "variable": "tas", "sel": "time=2015-07-01",
                       "rescale": "230,310", "colormap_name": "rdbu_r"})
    tile = f"{base}/xarray/tiles/WebMercatorQuad/1/1/0.png?{query}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        t = time.perf_counter()
        with opener.open(tile, timeout=60) as response:
            png = response.read()
            cache = response.headers.get("X-Zarrport-Cache")
        first = time.perf_counter() - t
        t = time.perf_counter()
        with opener.open(tile.replace("/1/1/0.png", "/1/0/0.png"), timeout=60) as response:
            response.read()
        warm = time.perf_counter() - t
        print(f"     a tile of tas on 2015-07-01: {len(png)} bytes PNG, {first * 1e3:.0f} ms "
              f"(dataset opened: cache {cache}), the next tile {warm * 1e3:.0f} ms")
        shown = f"http://127.0.0.1:{port}"
        if not keep:
            print(f"     serve it: .venv/bin/zarrport serve --catalog {stac} --allow {out} "
                  f"--port {port}")
            print("     (or make demo DEMO_ARGS=--serve), then open")
        print(f"     viewer:   {shown}/")
        print(f"     tiles:    {tile.replace(base, shown)}")
        print(f"     STAC API: {shown}/stac/   OpenAPI: {shown}/docs")
        if not keep:
            return 0
        print("     serving until Ctrl-C")
        while thread.is_alive():
            thread.join(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    except OSError as err:  # urllib's URLError/HTTPError too: one line, not a traceback
        print(f"     the server did not answer: {err}")
        return 1
    finally:
        server.should_exit = True
        thread.join(10)


if __name__ == "__main__":
    raise SystemExit(main())
