"""``make demo``: the main job on local, embedded defaults.

Makes a small CMIP6-like archive (yearly daily files, noleap calendar, fill values),
inspects it, virtualizes it into kerchunk JSON, kerchunk Parquet and Icechunk, verifies each
against netCDF4, opens one and prints a summary with sizes (references vs data).

Run: ``python -m zarrport.demo [--dir demo-output] [--years 3]``
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from zarrport.cli.options import human_bytes


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    import warnings

    import zarrport
    from zarrport.inspect import inspect_source
    from zarrport.samples import write_cmip6_archive
    from zarrport.verify import verify

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("demo-output"))
    parser.add_argument("--years", type=int, default=3)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    out = args.dir
    if out.exists():
        shutil.rmtree(out)
    src_dir = out / "archive"
    t0 = time.perf_counter()
    paths = write_cmip6_archive(src_dir, years=range(2015, 2015 + args.years), nlat=90,
                                nlon=180, time_chunk=1)
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

    print("\n3. virtualize along time into three formats, then verify against netCDF4:")
    outputs = {}
    for fmt in ("json", "parquet", "icechunk"):
        target = out / f"tas_day.{fmt}"
        result = zarrport.virtualize([str(p) for p in paths], str(target), concat_dim="time")
        check = verify(str(target))
        outputs[fmt] = target
        status = "verified" if check.ok else f"FAILED: {check.problems[:2]}"
        print(f"     {fmt:8s} {human_bytes(_size(target)):>9s} of references for "
              f"{human_bytes(result.referenced_bytes)} of chunks "
              f"({result.referenced_chunks} refs, {result.seconds:.2f} s) - {status}")
        if not check.ok:
            return 1

    ds = zarrport.open_dataset(str(outputs["icechunk"]))
    tas = ds["tas"]
    point = tas.isel(lat=45, lon=90)
    print("\n4. open the Icechunk repository with zarrport.open_dataset:")
    print(f"     dims {dict(ds.sizes)}; time {ds.time.values[0]} .. {ds.time.values[-1]} "
          f"({ds.time.values[0].calendar})")
    print(f"     tas at the equator, 0E: mean {float(point.mean()):.2f} K over "
          f"{point.size} days; {int(tas.isel(time=0).isnull().sum())} fill points on day 1 "
          "read as NaN")
    ratio = data_bytes / max(_size(outputs["json"]), 1)
    print(f"\nsummary: {human_bytes(data_bytes)} of NetCDF read as Zarr through "
          f"{human_bytes(_size(outputs['json']))} of JSON references ({ratio:.0f}x smaller), "
          f"no data copied; {time.perf_counter() - t0:.1f} s in all.")
    print(f"try: .venv/bin/zarrport info {outputs['icechunk']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
