#!/usr/bin/env python
"""Run every real sample file through every output format and write docs/conformance.md.

Two tables: NetCDF (every output format, compared by ``zarrport verify``) and GRIB
(``GribParser`` through Icechunk and the ManifestStore, and cfgrib for comparison, each
compared with ecCodes; :mod:`zarrport.testing.grib_conformance`). ``--grib-only`` /
``--netcdf-only`` rerun one part and keep the other's table as it is in the output file.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from zarrport.conformance import real_files, run, to_markdown
from zarrport.testing import grib_conformance as grib


def _split(text: str) -> tuple[str, str]:
    """(NetCDF part, GRIB part) of an existing docs/conformance.md."""
    marker = "\n" + grib.GRIB_HEADING + "\n"
    if marker in text:
        head, tail = text.split(marker, 1)
        return head.rstrip() + "\n", grib.GRIB_HEADING + "\n" + tail
    return text, ""


VERSIONS_PREFIX = "Last run on "


def _with_versions(netcdf_md: str) -> str:
    """The NetCDF part with one line naming when and against which releases it ran (the
    oracles netCDF4 and ecCodes, and everything zarrport reads and writes through)."""
    import datetime as dt
    import platform
    from importlib import metadata

    names = ["zarrport", "netCDF4", "h5py", "zarr", "icechunk", "virtualizarr", "kerchunk",
             "xarray", "numcodecs", "fsspec", "eccodes", "eccodeslib", "gribberish", "cfgrib"]
    versions = []
    for name in names:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} not installed")
    line = (f"{VERSIONS_PREFIX}{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with Python "
            f"{platform.python_version()}, " + ", ".join(versions) + ".")
    lines = [ln for ln in netcdf_md.splitlines() if not ln.startswith(VERSIONS_PREFIX)]
    at = lines.index("Regenerate with `make conformance` (`scripts/conformance.py`).") + 1 \
        if "Regenerate with `make conformance` (`scripts/conformance.py`)." in lines else 1
    text = "\n".join(lines[:at] + ["", line] + lines[at:])
    while "\n\n\n" in text:  # rerunning one part must not pile up blank lines
        text = text.replace("\n\n\n", "\n\n")
    return text


def main() -> int:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=here.parent / "shared" / "data" / "real")
    parser.add_argument("--out", type=Path, default=here / "docs" / "conformance.md")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--grib-only", action="store_true", help="rerun the GRIB table only")
    only.add_argument("--netcdf-only", action="store_true",
                      help="rerun the NetCDF table only")
    parser.add_argument("--jobs", type=int, default=None,
                        help="GRIB files checked at once (default: one per CPU)")
    parser.add_argument("--timeout", type=float, default=grib.TIMEOUT,
                        help="seconds per GRIB file before it counts as a hang")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    old_netcdf, old_grib = _split(args.out.read_text()) if args.out.exists() else ("", "")
    bad: list[str] = []
    checks = 0

    netcdf_md = old_netcdf
    if not args.grib_only:
        t0 = time.perf_counter()
        outcomes = run(real_files(args.data))
        netcdf_md = to_markdown(outcomes, args.data)
        checks += len(outcomes)
        bad += [f"{o.outcome}: {o.file} [{o.format}]: {o.reason}" for o in outcomes
                if not o.acceptable]
        print(f"NetCDF: {len(outcomes)} checks in {time.perf_counter() - t0:.0f} s")

    grib_md = old_grib
    if not args.netcdf_only:
        t0 = time.perf_counter()
        results = grib.run(grib.grib_files(args.data), timeout=args.timeout, jobs=args.jobs)
        grib_md = grib.to_markdown(results)
        checks += len(results)
        bad += [f"{o.outcome} (idx: {o.idx}): {o.file} [grib]: {o.reason}" for o in results
                if not o.acceptable]
        print(f"GRIB: {len(results)} files in {time.perf_counter() - t0:.0f} s")

    text = _with_versions(netcdf_md.rstrip()) + "\n"
    if grib_md:
        text += "\n" + grib_md.rstrip() + "\n"
    args.out.write_text(text)
    for line in bad:
        print(line, file=sys.stderr)
    print(f"wrote {args.out}: {checks} checks, {len(bad)} not acceptable")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
