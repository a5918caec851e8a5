#!/usr/bin/env python
"""Benchmark: one grid point's full time series from the archive of yearly files, through
Icechunk (zarrport's reader, ``zarrport.icechunk_read``), through zarrport's kerchunk JSON
reader, through xarray's Zarr engine over the same Icechunk store, and with netCDF4 on the
original files -- side by side in one run.

The archive is the one of ``bench_virtualize.py`` (200 CMIP6-like yearly files, ``tas`` in
one chunk per day: 73,000 chunks), referenced once into an Icechunk repository and a kerchunk
JSON file (untimed, reused). Each timed run opens, reads ``tas[:, 5, 8]`` and closes, in this
process, the contenders interleaved repetition by repetition after one warm-up round; every
result is compared with netCDF4 (fill value -> NaN) before its time counts. xarray's Zarr
engine is slow here (one zarr codec pipeline pass and one ``IcechunkStore.get`` per chunk),
so it runs ``--zarr-repeat`` times (default 1).

    python bench/bench_icechunk_read.py [--quick] [--files N] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _common import (  # noqa: E402
    fmt_load,
    loadavg,
    machine,
    package_versions,
    replace_section,
    short_error,
)

BEGIN = "<!-- bench_icechunk_read: begin -->"
END = "<!-- bench_icechunk_read: end -->"
LAT, LON = 5, 8


def make_inputs(files: int, data_dir: Path) -> tuple[list[Path], Path, Path]:
    """The archive's files (written once), and its Icechunk and JSON references."""
    import zarrport
    from zarrport.testing.samples import write_cmip6_archive

    directory = data_dir / "archive-16x32-1x16x32"  # the same files as bench_virtualize.py
    paths = write_cmip6_archive(directory, years=range(1850, 1850 + files), overwrite=False,
                                nlat=16, nlon=32, time_chunk=1, lat_chunk=16, lon_chunk=32)
    refs = data_dir / f"icechunk-read-{files}"
    refs.mkdir(parents=True, exist_ok=True)
    outs = refs / "archive.icechunk", refs / "archive.json"
    newest = max(p.stat().st_mtime for p in paths)
    for out in outs:
        if not out.exists() or out.stat().st_mtime < newest:
            zarrport.virtualize([str(p) for p in paths], str(out), concat_dim="time",
                                overwrite=True, workers=1)
    return paths, *outs


def netcdf4_series(paths: list[Path]) -> Callable[[], np.ndarray]:
    def run() -> np.ndarray:
        import netCDF4

        parts = []
        for p in paths:
            with netCDF4.Dataset(p) as nc:
                parts.append(np.ma.filled(nc["tas"][:, LAT, LON].astype("f4"), np.nan))
        return np.concatenate(parts)
    return run


def zarrport_series(url: Path, **kw) -> Callable[[], np.ndarray]:
    def run() -> np.ndarray:
        import zarrport

        with zarrport.open_dataset(str(url), **kw) as ds:
            return ds["tas"].isel(lat=LAT, lon=LON).values
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 files, 2 repetitions")
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--zarr-repeat", type=int, default=1,
                        help="timed runs of xarray's Zarr engine (slow)")
    parser.add_argument("--out", type=Path, help="replace this benchmark's section here")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "bench" / ".data")
    args = parser.parse_args(argv)
    files, repeat = (4, 2) if args.quick else (args.files, args.repeat)
    t0 = time.perf_counter()
    load0 = loadavg()
    paths, repo, json_refs = make_inputs(files, args.data_dir)
    contenders: dict[str, tuple[Callable[[], np.ndarray], str, int]] = {
        "netCDF4 (original files)": (
            netcdf4_series(paths), "netCDF4.Dataset (loop over the files), masked array",
            repeat),
        "**zarrport (open_dataset, Icechunk)**": (
            zarrport_series(repo), "open_dataset('x.icechunk').tas.isel(lat=5, lon=8).values "
            "(zarrport.icechunk_read)", repeat),
        "zarrport (open_dataset, JSON)": (
            zarrport_series(json_refs), "open_dataset('x.json').tas.isel(lat=5, lon=8).values "
            "(zarrport.references)", repeat),
        "*xarray Zarr engine over the Icechunk store*": (
            zarrport_series(repo, engine="zarr"),
            "open_dataset('x.icechunk', engine='zarr'): xr.open_dataset(store, engine='zarr')",
            min(args.zarr_repeat, repeat)),
    }
    want = contenders["netCDF4 (original files)"][0]()
    names = list(contenders)
    times: dict[str, list[float]] = {k: [] for k in names}
    status: dict[str, str] = dict.fromkeys(names, "ok")
    for rep in range(repeat + 1):  # the first round is a warm-up (not for the slow one)
        for name in names if rep % 2 else names[::-1]:
            run, _how, n = contenders[name]
            if (rep == 0 and n < repeat) or len(times[name]) >= n or status[name] != "ok":
                continue
            start = time.perf_counter()
            try:
                got = run()
            except Exception as err:  # noqa: BLE001 - reported in the table
                status[name] = short_error(err)
                continue
            took = time.perf_counter() - start
            if got.shape != want.shape or not np.array_equal(got, want, equal_nan=True):
                status[name] = "WRONG"
            elif rep:
                times[name].append(took)
    base = statistics.median(times[names[0]]) if times[names[0]] else float("nan")

    def fmt(s: float) -> str:
        return f"{s:.2f} s" if s >= 1 else f"{s * 1e3:.1f} ms"

    rows = ["| contender | median | min | max | n | ratio | values | how |",
            "|---|---:|---:|---:|---:|---:|---|---|"]
    med: dict[str, float] = {}
    for name in names:
        t = times[name]
        if not t:
            rows.append(f"| {name} | -- | -- | -- | 0 | -- | {status[name]} | "
                        f"{contenders[name][1]} |")
            continue
        med[name] = statistics.median(t)
        rows.append(f"| {name} | {fmt(med[name])} | {fmt(min(t))} | {fmt(max(t))} | {len(t)} "
                    f"| {med[name] / base:.2f} | {status[name]} | {contenders[name][1]} |")
    ice, js = names[1], names[2]
    ratio = med[ice] / med[js] if ice in med and js in med else float("nan")
    met = "**met**" if ratio <= 2.0 and status[ice] == "ok" else "**not met**"
    info = machine()
    versions = package_versions(["zarrport", "icechunk", "zarr", "xarray", "numcodecs",
                                 "numpy", "netCDF4"])
    chunks = len(want)
    section = "\n".join([
        "## Icechunk reads: one grid point's full time series",
        "",
        f"Generated by `bench/bench_icechunk_read.py`{' --quick' if args.quick else ''} on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC in {time.perf_counter() - t0:.0f} s. "
        f"The archive of {files} yearly files of `bench_virtualize.py` (`tas` in one chunk "
        f"per day: {chunks:,} chunks), referenced once into an Icechunk repository and a "
        "kerchunk JSON file; `tas[:, 5, 8]`, open + read + close each time, in one process, "
        "the contenders interleaved after a warm-up round; median of the repetitions, every "
        "result compared with netCDF4 (fill value -> NaN) before its time counted. The ratio "
        "is over netCDF4.",
        "",
        "### Target",
        "",
        "| target | zarrport / reference | status |",
        "|---|---|---|",
        f"| Icechunk reads within 2x of the kerchunk JSON reader (point series, open + read) "
        f"| {ratio:.2f}x of the JSON reader | {met} |",
        "",
        f"### Archive of {files} yearly files, {chunks:,} chunks of `tas`",
        "",
        *rows,
        "",
        f"- machine: {info.get('cpu', '?')}, nproc {info['nproc']}, RAM {info['ram']}, "
        f"Python {info['python']}; load average at start {fmt_load(load0)}, at end "
        f"{fmt_load(loadavg())} (shared machine: expect noise)",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
    ])
    print(section)
    if args.out:
        replace_section(args.out, BEGIN, END, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
