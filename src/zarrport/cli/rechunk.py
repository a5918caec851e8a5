"""``zarrport rechunk``: a Zarr store copied to Zarr v3 with other chunks, memory-bounded, in
one pass or two (through an intermediate store)."""

from __future__ import annotations

import sys
from typing import Any

import click

from zarrport.cli import cli
from zarrport.cli.options import (
    echo_json,
    human_bytes,
    json_flag,
    parse_storage_options,
    storage_option,
)


def _shape(t: Any) -> str:
    return "x".join(str(n) for n in t) if t else "scalar"


@cli.command("rechunk")
@click.argument("store")
@click.option("-o", "--output", required=True, metavar="OUT.zarr",
              help="The Zarr v3 store to write (a local directory).")
@click.option("--plan", "plan_file", metavar="FILE",
              help="A plan from `zarrport plan STORE --json`: its chunks (and shards).")
@click.option("--chunks", "chunks", multiple=True, metavar="VAR=N,N,...",
              help="Chunk lengths for a variable, one per dimension, -1 for a whole dimension "
              "(repeatable). With --shards they are the shard, split into ~1 MB inner chunks. "
              "Variables not named keep their chunks.")
@click.option("--pattern", type=click.Choice(["timeseries", "spatial", "balanced", "auto"]),
              help="Plan the chunks of every variable for this access pattern (as `zarrport "
              "plan` does, but not cut to fit memory: two stages do that).")
@click.option("--storage", "storage_kind", type=click.Choice(["cloud", "ssd", "hpc"]),
              default="cloud", show_default=True,
              help="With --pattern: object sizes of 10-100 MB (cloud), 1-10 MB (ssd) or "
              "100-500 MB (hpc).")
@click.option("--target-chunk-mb", type=float, metavar="MB",
              help="With --pattern: chunk (or shard) size to aim for.")
@click.option("--shards", is_flag=True,
              help="Group chunks into shards (Zarr v3 sharding codec).")
@click.option("--codec", type=click.Choice(["zstd", "blosc-lz4", "blosc-zstd", "gzip"]),
              default="zstd", show_default=True, help="Compressor of the output.")
@click.option("--level", type=int, help="Compression level (zstd -7..22, blosc and gzip 0..9).")
@click.option("--max-memory", default="2GB", show_default=True, metavar="SIZE",
              help="Memory limit per worker process (Python and libraries included). When "
              "one pass cannot fit it, the copy goes through an intermediate store in two "
              "stages that each do; when even that cannot, nothing is written.")
@click.option("--workers", type=int, help="Local worker processes (default: the CPU count).")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run on this Dask scheduler (tcp://host:port) instead of local processes "
              "(the output and the intermediate store must be on a file system the workers "
              "share).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@storage_option
@json_flag
def rechunk_cmd(store: str, output: str, plan_file: str | None, chunks: tuple[str, ...],
                pattern: str | None, storage_kind: str, target_chunk_mb: float | None,
                shards: bool, codec: str, level: int | None, max_memory: str,
                workers: int | None, scheduler: str | None, overwrite: bool,
                storage_options: tuple[str, ...], as_json: bool) -> None:
    """Rechunk a Zarr store (v2 or v3) or an Icechunk repository into a Zarr v3 store.

    Give the new chunks with exactly one of --plan, --chunks or --pattern. Where one pass
    would need more than --max-memory per worker (e.g. one-day chunks of whole fields into
    chunks holding whole series), the copy goes through an intermediate store next to the
    output (OUT.rechunk-tmp, removed at the end) in two stages, with intermediate chunks
    chosen so that each stage fits (rechunker's algorithm). Values and attributes are
    copied as stored. A killed run resumes when the same command runs again.

    \b
      zarrport rechunk tas.zarr -o tas-series.zarr --chunks tas=-1,32,32 --max-memory 2GB
      zarrport rechunk tas.zarr -o tas-maps.zarr --pattern spatial --shards
      zarrport rechunk tas.zarr -o tas.v3.zarr --plan plan.json --json
    """
    from zarrport.convert.rechunk import rechunk

    bar = _Progress(enabled=not as_json and sys.stderr.isatty())
    summary = rechunk(
        store, output, plan=plan_file, chunks=list(chunks) or None, pattern=pattern,
        storage_kind=storage_kind, target_chunk_mb=target_chunk_mb, shards=shards,
        codec=codec, level=level, max_memory=max_memory, workers=workers,
        scheduler=scheduler, overwrite=overwrite,
        storage_options=parse_storage_options(storage_options), progress=bar)
    bar.close()
    if as_json:
        echo_json(summary)
        return
    print_summary(summary)


class _Progress:
    """Jobs done per stage on stderr when it is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.stage: str | None = None

    def __call__(self, stage: str, done: int, total: int, result: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.stage is not None and stage != self.stage:
            sys.stderr.write("\n")
        self.stage = stage
        fill = int(30 * done / max(1, total))
        sys.stderr.write(f"\r{stage}: [{'#' * fill}{'.' * (30 - fill)}] {done}/{total} jobs ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.stage is not None:
            sys.stderr.write("\n")


def print_summary(s: dict[str, Any]) -> None:
    click.echo(f"rechunked {s['source']} -> {s['output']} in {s['seconds']:.1f} s, "
               f"{s['method']} ({s['jobs']} jobs, {human_bytes(s['bytes_read'])} read, "
               f"{human_bytes(s['bytes_written'])} written, {s['codec']})")
    for name, v in s["variables"].items():
        shards = f" in shards {_shape(v['shards'])}" if v.get("shards") else ""
        line = f"  {name:<14} {_shape(v['source_chunks'])} -> {_shape(v['chunks'])}{shards}"
        if v.get("intermediate_chunks"):
            line += f" via {_shape(v['intermediate_chunks'])}"
        click.echo(line)
    limit = f" (limit {human_bytes(s['max_memory'])})" if s.get("max_memory") else ""
    for st in s["stages"]:
        if st.get("skipped"):
            click.echo(f"  {st['stage']}: {st['skipped']}")
            continue
        peaks = ", ".join(human_bytes(p) for p in st["peak_memory_per_worker"]) or "-"
        click.echo(f"  {st['stage']}: {st['jobs']} jobs in {st['seconds']:.1f} s; peak "
                   f"memory per worker {peaks}{limit}")
