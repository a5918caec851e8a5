from __future__ import annotations

import click

from zarrport.cli import cli
from zarrport.cli.options import (
    describe_skipped,
    echo_json,
    human_bytes,
    json_flag,
    parse_storage_options,
    skip_unsupported_flag,
    storage_option,
)


@cli.command("virtualize")
@click.argument("sources", nargs=-1, required=True)
@click.option("-o", "--output", required=True,
              help="Where to write the references: *.json, *.parquet or *.icechunk "
              "(local path or s3://, az://, gs:// URL).")
@click.option("--format", "fmt", type=click.Choice(["json", "parquet", "icechunk"]),
              help="Output format (default: from the output name; one that contradicts "
              "the name's suffix is refused).")
@click.option("--concat-dim", help="Combine several files along this dimension (e.g. time).")
@click.option("--subchunk-mb", type=float, default=16, show_default=True,
              help="Split uncompressed contiguous variables into byte ranges of about this "
              "size (at least 0.01).")
@click.option("--inline-limit-mb", type=float, default=4, show_default=True,
              help="Variables that cannot be referenced are copied into the output up to "
              "this size and refused above it.")
@click.option("--group", help="HDF5/NetCDF-4 group to virtualize (default: the root).")
@click.option("--drop", "drop", multiple=True, metavar="VAR",
              help="Leave this variable out (repeatable).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--workers", type=int, help="Parallel workers for parsing many files.")
@skip_unsupported_flag
@storage_option
@json_flag
def virtualize_command(sources: tuple[str, ...], output: str, fmt: str | None,
                       concat_dim: str | None, subchunk_mb: float, inline_limit_mb: float,
                       group: str | None, drop: tuple[str, ...], overwrite: bool,
                       workers: int | None, skip_unsupported: bool,
                       storage_options: tuple[str, ...], as_json: bool) -> None:
    """Write references to SOURCES so they open as one Zarr dataset, without copying data.

    \b
    Examples:
      zarrport virtualize tas_day_2015.nc -o tas_2015.json
      zarrport virtualize 'data/tas_day_*.nc' -o tas.icechunk --concat-dim time
      zarrport virtualize s3://bucket/tas_*.nc -o s3://bucket/refs/tas.parquet \\
          --concat-dim time --storage-option anon=true
      zarrport virtualize era5_t2m.grib2 -o t2m.icechunk

    SOURCES are NetCDF-4/HDF5, NetCDF-3 or GRIB files (recognised by their bytes). GRIB
    files are referenced one chunk per message, decoded by the zarrport.grib codec (in
    kerchunk references: its numcodecs form, the arrays' compressor); several combine
    along --concat-dim time (their reference time), step, member or level.

    A combine whose chunks do not line up with the file boundaries is written natively for
    the straddling chunks with Icechunk, and refused with kerchunk formats.
    """
    import sys

    from zarrport.virtual.api import virtualize

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if total < 2 or as_json or not sys.stderr.isatty():
            return
        if bar is None:
            bar = click.progressbar(length=total, label="parsing sources", file=sys.stderr)
            bar.__enter__()
        bar.update(done - bar.pos)

    try:
        result = virtualize(
            list(sources), output, format=fmt, concat_dim=concat_dim,
            storage_options=parse_storage_options(storage_options), subchunk_mb=subchunk_mb,
            inline_limit_mb=inline_limit_mb, group=group, drop_variables=drop,
            overwrite=overwrite, workers=workers, progress=progress,
            skip_unsupported=skip_unsupported,
        )
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if as_json:
        echo_json(result.to_dict())
        return
    dims = ", ".join(f"{k}={v}" for k, v in result.dims.items())
    click.echo(f"wrote {result.output} ({result.format}, {human_bytes(result.output_bytes)})")
    click.echo(f"  {result.sources} source(s), dims: {dims}")
    click.echo(f"  {result.referenced_chunks} chunk references covering "
               f"{human_bytes(result.referenced_bytes)} of source data")
    if result.inlined_variables:
        click.echo(f"  inlined: {', '.join(result.inlined_variables)}")
    if result.native_chunks:
        click.echo(f"  {result.native_chunks} chunk(s) straddling file boundaries written "
                   "natively")
    for name, note in result.notes.items():
        if not note.startswith("inlined: small"):
            click.echo(f"  {name}: {note}")
    if result.skipped:
        click.echo(f"  skipped ({len(result.skipped)}, --skip-unsupported):")
        for item in result.skipped:
            click.echo(f"    {describe_skipped(item)}")
    click.echo(f"  {result.seconds:.2f} s")
