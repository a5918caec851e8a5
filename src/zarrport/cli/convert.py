"""``zarrport plan`` and ``zarrport convert``: physical Zarr v3 copies chunked for how they
are read."""

from __future__ import annotations

import math
import sys
from typing import Any

import click

from zarrport.cli import cli
from zarrport.cli.options import (
    echo_json,
    human_bytes,
    json_flag,
    parse_storage_options,
    skip_unsupported_flag,
    storage_option,
)
from zarrport.errors import InvalidArgumentError

_PATTERN = click.option(
    "--pattern", type=click.Choice(["timeseries", "spatial", "balanced", "auto"]),
    default="auto", show_default=True,
    help="How the copy will be read: timeseries (long time, small space), spatial (one or a "
    "few steps, whole fields or 256x256-multiple tiles), balanced, or auto (from the shape).")
_STORAGE = click.option(
    "--storage", "storage_kind", type=click.Choice(["cloud", "ssd", "hpc"]), default="cloud",
    show_default=True,
    help="Where the copy lives: object sizes of 10-100 MB (cloud), 1-10 MB (ssd) or "
    "100-500 MB (hpc).")
_TARGET = click.option("--target-chunk-mb", type=float, metavar="MB",
                       help="Chunk (or shard) size to aim for instead of the storage default.")
_SHARDS = click.option("--shards", is_flag=True,
                       help="Group chunks into shards (Zarr v3 sharding codec): the shard gets "
                       "the storage size, reads fetch ~1 MB inner chunks.")
_MEMORY = click.option("--max-memory", default="2GB", show_default=True, metavar="SIZE",
                       help="Memory limit per worker process (Python and libraries included); "
                       "regions that cannot fit are refused before anything is written.")
_GROUP = click.option("--group", metavar="PATH",
                      help="NetCDF-4/HDF5 group (or Zarr/Icechunk group) to convert; default "
                      "the root.")
_VARIABLES = click.option("--variables", "variables", multiple=True, metavar="NAME",
                          help="Only these variables (repeatable, or comma-separated); their "
                          "coordinates' bounds come along.")


def _names(values: tuple[str, ...]) -> list[str] | None:
    out = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return out or None


def _shape(t: Any) -> str:
    return "x".join(str(n) for n in t) if t else "scalar"


def print_plan(plan: Any) -> None:
    for name, vp in plan.variables.items():
        isz = vp.itemsize
        click.echo(f"{name}  ({', '.join(vp.dims)})  {_shape(vp.shape)}  {vp.dtype}")
        src = ("contiguous" if vp.source_layout == "contiguous" else
               f"{_shape(vp.source_chunks)} ({human_bytes(math.prod(vp.source_chunks) * isz)})")
        click.echo(f"  source chunks  {src}")
        line = f"  chunks         {_shape(vp.chunks)} ({human_bytes(math.prod(vp.chunks) * isz)})"
        if vp.shards:
            line += f" in shards {_shape(vp.shards)} " \
                    f"({human_bytes(math.prod(vp.shards) * isz)})"
        click.echo(line)
        click.echo(f"  jobs read      regions of {_shape(vp.region)} "
                   f"({human_bytes(vp.region_bytes)}); {human_bytes(vp.footprint_bytes)} of "
                   "data per worker")
        for why in vp.reasoning:
            click.echo(f"  - {why}")
        click.echo(f"  {'read':<16}{'before':>26}{'after':>26}")
        for read, label in (("point_series", "point series"), ("full_map", "full map"),
                            ("tile_256", "256x256 tile")):
            cost = vp.reads[read]
            cells = [f"{c.chunks} chunk{'s' if c.chunks != 1 else ''}, {human_bytes(c.bytes)}"
                     for c in (cost["before"], cost["after"])]
            click.echo(f"  {label:<16}{cells[0]:>26}{cells[1]:>26}")
        click.echo("")


@cli.command("plan")
@click.argument("source")
@_PATTERN
@_STORAGE
@_TARGET
@_SHARDS
@_MEMORY
@_VARIABLES
@_GROUP
@click.option("--decoded", is_flag=True,
              help="Plan for `convert --decoded` (decoded floats instead of packed values).")
@storage_option
@json_flag
def plan_cmd(source: str, pattern: str, storage_kind: str, target_chunk_mb: float | None,
             shards: bool, max_memory: str, variables: tuple[str, ...], group: str | None,
             decoded: bool, storage_options: tuple[str, ...], as_json: bool) -> None:
    """Plan target chunks (and shards) per variable for an access pattern.

    Shows, per variable, the chunks chosen and why, the source chunks a conversion reads,
    and how many chunks and bytes (uncompressed) a point's full series, a full map and a
    256x256 tile touch before and after. `--json` prints the plan, which `zarrport convert
    --plan FILE` takes.

    \b
      zarrport plan tas.icechunk --pattern timeseries
      zarrport plan tas.icechunk --pattern spatial --storage ssd --shards --json > plan.json
    """
    from zarrport import storage
    from zarrport.convert.plan import make_plan, parse_size
    from zarrport.convert.writer import open_source

    opts = parse_storage_options(storage_options)
    url = storage.normalize_url(source)
    ds = open_source(url, opts, decoded=decoded, group=group)
    plan = make_plan(ds, url, pattern=pattern, storage=storage_kind,
                     target_chunk_bytes=int(target_chunk_mb * 2**20)
                     if target_chunk_mb is not None else None,
                     shards=shards, max_memory=parse_size(max_memory), variables=_names(variables))
    if as_json:
        echo_json(plan.to_dict())
    else:
        print_plan(plan)


@cli.command("convert")
@click.argument("source")
@click.option("-o", "--output", metavar="OUT.zarr",
              help="The Zarr v3 store to write (a local directory).")
@click.option("--into", "into", metavar="REPO.icechunk",
              help="Instead of a new store, write the selected variables/range as native "
              "chunks into this Icechunk repository (the one holding the virtual "
              "references), keeping its chunking and codecs, in one commit (--workers are "
              "then threads of one process, bounded as a whole by --max-memory).")
@click.option("--branch", metavar="NAME", help="With --into: the branch to commit on "
              "(default: main).")
@click.option("--plan", "plan_file", metavar="FILE",
              help="A plan from `zarrport plan --json` (else one is made from --pattern).")
@_PATTERN
@_STORAGE
@_TARGET
@_SHARDS
@click.option("--codec", type=click.Choice(["zstd", "blosc-lz4", "blosc-zstd", "gzip", "none"]),
              default="zstd", show_default=True,
              help="Compressor (zarr-python's codecs); none stores raw bytes.")
@click.option("--level", type=int, help="Compression level (zstd -7..22, blosc and gzip 0..9).")
@_MEMORY
@click.option("--workers", type=int, help="Local worker processes (default: the CPU count).")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run on this Dask scheduler (tcp://host:port) instead of local processes.")
@click.option("--select", "select", multiple=True, metavar="DIM=START:STOP",
              help="Labels to keep along a dimension, e.g. time=2015:2044 (repeatable).")
@click.option("--bbox", metavar="W,S,E,N", help="Longitude/latitude box to keep (degrees).")
@_VARIABLES
@_GROUP
@skip_unsupported_flag
@click.option("--decoded", is_flag=True,
              help="Write decoded floats (scale/offset applied, fill values as NaN) instead of "
              "the stored packed values with their scale_factor/add_offset.")
@click.option("--validate", is_flag=True,
              help="Afterwards compare every value with the source, read by its own reader.")
@click.option("--strict", is_flag=True,
              help="A --select/--bbox that cuts source chunks is an error, not a warning.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@storage_option
@json_flag
def convert_cmd(source: str, output: str | None, into: str | None, branch: str | None,
                plan_file: str | None, pattern: str,
                storage_kind: str, target_chunk_mb: float | None, shards: bool, codec: str,
                level: int | None, max_memory: str, workers: int | None,
                scheduler: str | None, select: tuple[str, ...], bbox: str | None,
                variables: tuple[str, ...], group: str | None, skip_unsupported: bool,
                decoded: bool,
                validate: bool, strict: bool, overwrite: bool,
                storage_options: tuple[str, ...], as_json: bool) -> None:
    """Convert SOURCE into a Zarr v3 store chunked for an access pattern.

    SOURCE is anything zarrport opens: NetCDF files, kerchunk references, Icechunk
    repositories, Zarr stores, GRIB files. Jobs are regions that are whole multiples of the
    source chunks and the target shards, so each source chunk is read once and no two jobs
    write one shard; they are sized to --max-memory per worker. A killed conversion resumes
    when the same command runs again; until the last job is written the store says it is
    incomplete and zarrport refuses to open it.

    \b
      zarrport convert tas.icechunk -o tas-series.zarr --pattern timeseries --shards
      zarrport convert tas.icechunk -o tas.zarr --plan plan.json --max-memory 2GB --validate
      zarrport convert data/*.nc ... (virtualize first: zarrport virtualize, then convert)

    With --into REPO.icechunk, the chunks of the selected variables and range become native
    chunks of that repository, so hot data no longer depends on the source files while the
    rest stays virtual (a hybrid store; SOURCE is usually the repository itself):

    \b
      zarrport convert tas.icechunk --into tas.icechunk --select time=2015-01-01:2016-12-31
    """
    from zarrport.convert.writer import convert

    if (output is None) == (into is None):
        raise InvalidArgumentError(
            "give -o/--output OUT.zarr (a new Zarr store) or --into REPO.icechunk (a hybrid "
            f"store){', not both' if output else ''}")
    if into is not None:
        _convert_into(source, into, branch=branch, max_memory=max_memory, workers=workers,
                      select=select, bbox=bbox, variables=variables, validate=validate,
                      strict=strict, storage_options=storage_options, as_json=as_json)
        return
    if branch is not None:
        raise InvalidArgumentError("--branch goes with --into (the branch to commit on)")
    bar = _Progress(enabled=not as_json and sys.stderr.isatty())
    summary = convert(
        source, output, plan=plan_file, pattern=pattern, storage_kind=storage_kind,
        target_chunk_mb=target_chunk_mb, shards=shards, codec=codec, level=level,
        max_memory=max_memory, workers=workers, scheduler=scheduler, select=list(select),
        bbox=bbox, variables=_names(variables), validate=validate, overwrite=overwrite,
        strict=strict, decoded=decoded, group=group, skip_unsupported=skip_unsupported,
        storage_options=parse_storage_options(storage_options),
        progress=bar, warn=lambda m: click.echo(f"zarrport: warning: {m}", err=True))
    bar.close()
    if as_json:
        echo_json(summary)
        return
    print_summary(summary)


#: options of a new store that --into does not take: the repository keeps its own
_NOT_WITH_INTO = ("plan_file", "pattern", "storage_kind", "target_chunk_mb", "shards", "codec",
                  "level", "scheduler", "decoded", "overwrite")


def _convert_into(source: str, into: str, *, branch: str | None, max_memory: str,
                  workers: int | None, select: tuple[str, ...], bbox: str | None,
                  variables: tuple[str, ...], validate: bool, strict: bool,
                  storage_options: tuple[str, ...], as_json: bool) -> None:
    from click.core import ParameterSource

    from zarrport.convert.hybrid import convert_into

    ctx = click.get_current_context()
    given = [p for p in ctx.command.params if p.name in _NOT_WITH_INTO
             and ctx.get_parameter_source(p.name) != ParameterSource.DEFAULT]
    if given:
        opt = max(given[0].opts, key=len)
        raise InvalidArgumentError(
            f"{opt} does not go with --into: the repository's chunking and codecs are kept "
            "(materialized chunks are written exactly as the virtual ones were stored)")
    bar = _Progress(enabled=not as_json and sys.stderr.isatty())
    summary = convert_into(
        source, into, branch=branch or "main", max_memory=max_memory, workers=workers,
        select=list(select), bbox=bbox, variables=_names(variables), validate=validate,
        strict=strict, storage_options=parse_storage_options(storage_options), progress=bar,
        warn=lambda m: click.echo(f"zarrport: warning: {m}", err=True))
    bar.close()
    if as_json:
        echo_json(summary)
        return
    if not summary["snapshot"]:
        click.echo(f"nothing to materialize in {summary['repository']}: every selected chunk "
                   "is already native or inline; nothing committed")
        return
    click.echo(f"materialized {summary['chunks']} chunks into {summary['repository']} "
               f"({human_bytes(summary['bytes_read'])} read, "
               f"{human_bytes(summary['bytes_written'])} written, "
               f"{summary['seconds']:.1f} s)")
    click.echo(f"  commit {summary['snapshot']} on {summary['branch']}: {summary['message']}")
    for name, v in summary["variables"].items():
        where = ", ".join(f"{d} {a}..{b}" for d, (a, b) in v["labels"].items()) or "all"
        click.echo(f"  {name:<14} {v['chunks']} chunks ({where}); "
                   f"{v['already_native']} already native")
    if summary.get("validated"):
        click.echo("  validated: every materialized value equals the virtual one")


class _Progress:
    """A progress bar on stderr when it is a terminal (jobs done, MB read, rate)."""

    def __init__(self, enabled: bool) -> None:
        import time

        self.enabled = enabled
        self.t0 = time.perf_counter()
        self.bytes = 0
        self.shown = False

    def __call__(self, done: int, total: int, result: dict[str, Any]) -> None:
        import time

        self.bytes += result.get("nbytes", 0)
        if not self.enabled:
            return
        width = 30
        fill = int(width * done / max(1, total))
        rate = self.bytes / max(1e-6, time.perf_counter() - self.t0)
        sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{total} jobs, "
                         f"{human_bytes(self.bytes)} read, {human_bytes(rate)}/s ")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def print_summary(s: dict[str, Any]) -> None:
    resumed = f" ({s['resumed_from']} done before, resumed)" if s.get("resumed_from") else ""
    click.echo(f"converted {s['source']} -> {s['output']} in {s['seconds']:.1f} s: "
               f"{s['jobs']} jobs{resumed}, {human_bytes(s['bytes_read'])} read, "
               f"{human_bytes(s['bytes_written'])} written ({s['codec']})")
    for name, v in s["variables"].items():
        shards = f" in shards {_shape(v['shards'])}" if v.get("shards") else ""
        ratio = f"{v['compression_ratio']:.2f}x" if v.get("compression_ratio") else "-"
        click.echo(f"  {name:<14} chunks {_shape(v['chunks'])}{shards}; "
                   f"{human_bytes(v['uncompressed_bytes'])} -> "
                   f"{human_bytes(v['bytes_written'])} ({ratio})")
    if s.get("skipped"):
        click.echo(f"  left out (unsupported data types): {', '.join(s['skipped'])}")
    peaks = s.get("peak_memory_per_worker") or []
    if peaks:
        click.echo(f"  peak memory per worker: {', '.join(human_bytes(p) for p in peaks)}")
    if s.get("validated"):
        v = s["validated"]
        click.echo(f"  validated: {v['values']:,} values equal to the source's "
                   f"({v['seconds']:.1f} s)")
