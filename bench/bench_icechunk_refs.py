"""Icechunk 2: setting virtual references in bulk from numpy arrays vs one object per chunk.

zarrport 0.1 (Icechunk 1) built one ``icechunk.VirtualChunkSpec`` per chunk and called
``IcechunkStore.set_virtual_refs``; Icechunk 2 takes the chunk grid's locations, offsets
and lengths as arrays (``set_virtual_refs_arr``), which zarrport now calls once per source
file (one checksum per call). This benchmark times both on the same combined archive (the
200 yearly files of ``bench_virtualize.py``, 73,000 chunks of ``tas``), into fresh
in-memory repositories whose arrays were created beforehand (untimed), interleaved
repetition by repetition; each result is read back and compared before its time counts.

    python bench/bench_icechunk_refs.py [--quick] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _common import fmt_load, loadavg, machine, package_versions, replace_section  # noqa: E402

BEGIN = "<!-- bench_icechunk_refs: begin -->"
END = "<!-- bench_icechunk_refs: end -->"


def make_vds(files: int, data_dir: Path):
    from zarrport.testing.samples import write_cmip6_archive
    from zarrport.virtual.api import build

    directory = data_dir / "archive-16x32-1x16x32"  # the same files as bench_virtualize.py
    paths = write_cmip6_archive(directory, years=range(1850, 1850 + files), overwrite=False,
                                nlat=16, nlon=32, time_chunk=1, lat_chunk=16, lon_chunk=32)
    return build([str(p) for p in paths], concat_dim="time")


def fresh_session(vds):
    """A new in-memory repository with every array created, no reference set yet."""
    import icechunk

    from zarrport import storage
    from zarrport.virtual.icechunk import source_prefixes, write_arrays

    config = icechunk.RepositoryConfig.default()
    creds = {}
    for prefix in source_prefixes(vds.sources):
        container, creds[prefix] = storage.icechunk_virtual_container(prefix, None)
        config.set_virtual_chunk_container(container)
    repo = icechunk.Repository.create(
        icechunk.in_memory_storage(), config=config,
        authorize_virtual_chunk_access=icechunk.containers_credentials(creds))
    session = repo.writable_session("main")
    bare = replace(vds, variables={n: replace(v, refs=None) for n, v in vds.variables.items()})
    write_arrays(session.store, bare)
    return session


def per_chunk_specs(store, vds) -> int:
    """zarrport 0.1's way: one VirtualChunkSpec per chunk, one set_virtual_refs per array."""
    import icechunk

    from zarrport.virtual.icechunk import _checksum
    from zarrport.virtual.model import MISSING

    n = 0
    for name, var in vds.variables.items():
        if var.refs is None or var.data is not None:
            continue
        src, off, ln = (np.atleast_1d(a) for a in (var.refs.source, var.refs.offset,
                                                   var.refs.length))
        specs = []
        for idx in zip(*np.nonzero(src != MISSING), strict=True):
            s = int(src[idx])
            specs.append(icechunk.VirtualChunkSpec(
                index=[int(i) for i in idx] if np.ndim(var.refs.source) else [],
                location=vds.sources[s], offset=int(off[idx]), length=int(ln[idx]),
                **_spec_checksum(_checksum(vds.source_stats[s]))))
        assert not store.set_virtual_refs(f"/{name}", specs, validate_containers=True)
        n += len(specs)
    return n


def _spec_checksum(value):
    return ({"etag_checksum": value} if isinstance(value, str)
            else {"last_updated_at_checksum": value})


def bulk_arrays(store, vds) -> int:
    """zarrport now: set_virtual_refs_arr, one call per source file."""
    from zarrport.virtual.icechunk import set_virtual_refs

    return sum(set_virtual_refs(store, name, vds, var) for name, var in vds.variables.items()
               if var.refs is not None and var.data is None)


CONTENDERS = {
    "per chunk: `VirtualChunkSpec` list + `set_virtual_refs` (zarrport 0.1)": per_chunk_specs,
    "**bulk: `set_virtual_refs_arr` per source file (zarrport)**": bulk_arrays,
}


def check(session, vds) -> None:
    """The tas chunks read back through the session equal the sources (first/last steps)."""
    import netCDF4
    import zarr

    arr = zarr.open_group(session.store, mode="r")["tas"]
    for path, t in ((vds.sources[0], 0), (vds.sources[-1], -1)):
        with netCDF4.Dataset(path.removeprefix("file://")) as nc:
            want = np.ma.filled(nc["tas"][t], np.nan)
        index = t if t == 0 else arr.shape[0] - 1
        np.testing.assert_array_equal(np.where(arr[index] == 1e20, np.nan, arr[index]), want)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 files, 2 repetitions")
    parser.add_argument("--out", type=Path, help="replace this benchmark's section here")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "bench" / ".data")
    args = parser.parse_args(argv)
    files, repeat = (4, 2) if args.quick else (200, 7)
    t0 = time.perf_counter()
    load0 = loadavg()
    vds = make_vds(files, args.data_dir)
    chunks = vds.variables["tas"].refs.count
    times: dict[str, list[float]] = {k: [] for k in CONTENDERS}
    counts: dict[str, int] = {}
    names = list(CONTENDERS)
    for rep in range(repeat + 1):  # the first round is a warm-up
        for name in names if rep % 2 else names[::-1]:
            session = fresh_session(vds)
            start = time.perf_counter()
            counts[name] = CONTENDERS[name](session.store, vds)
            took = time.perf_counter() - start
            check(session, vds)
            if rep:
                times[name].append(took)
    base = statistics.median(times[names[0]])
    rows = ["| how | median | min | max | n | ratio | chunks set |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        t = times[name]
        rows.append(f"| {name} | {statistics.median(t) * 1e3:.1f} ms | {min(t) * 1e3:.1f} ms "
                    f"| {max(t) * 1e3:.1f} ms | {len(t)} | {statistics.median(t) / base:.2f} "
                    f"| {counts[name]:,} |")
    info = machine()
    versions = package_versions(["icechunk", "zarr", "numpy", "zarrport"])
    section = "\n".join([
        "## Icechunk: setting virtual references",
        "",
        f"Generated by `bench/bench_icechunk_refs.py`{' --quick' if args.quick else ''} on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC in {time.perf_counter() - t0:.0f} s. "
        f"The archive of {files} yearly files combined along time ({chunks:,} chunks of `tas` "
        "plus `time`/`time_bnds`), every reference set into a fresh in-memory Icechunk 2 "
        "repository whose arrays exist already; each source's mtime is the checksum. "
        "Median of the repetitions after one warm-up, the two ways interleaved; every result "
        "was read back and compared with netCDF4 before its time counted. The ratio is over "
        "the per-chunk way (below 1 = faster).",
        "",
        f"### Archive of {files} yearly files, {chunks:,} chunks of `tas`",
        "",
        *rows,
        "",
        f"- machine: {info.get('cpu', '?')}, nproc {info['nproc']}, RAM {info['ram']}, "
        f"Python {info['python']}; load average at start {fmt_load(load0)}, at end "
        f"{fmt_load(loadavg())}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
    ])
    print(section)
    if args.out:
        replace_section(args.out, BEGIN, END, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
