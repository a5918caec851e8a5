"""``zarrport inspect``: the pre-flight check of one source."""

from __future__ import annotations

import click

from zarrport.cli import cli
from zarrport.cli.options import echo_json, json_flag, parse_storage_options, storage_option


@cli.command("inspect")
@click.argument("source")
@json_flag
@click.option("--group", default=None, metavar="PATH",
              help="Inspect this HDF5/NetCDF-4 group instead of the root group (with "
                   "--profile: a group of any SOURCE).")
@storage_option
@click.option("--subchunk-mb", type=float, default=16.0, show_default=True,
              help="Sub-chunk target for uncompressed contiguous variables (as virtualize).")
@click.option("--inline-limit-mb", type=float, default=4.0, show_default=True,
              help="Variables that cannot be referenced are inlined up to this size "
                   "(as virtualize).")
@click.option("--profile", is_flag=True,
              help="Profile the chunks instead: per variable the chunk shape and count, the "
                   "stored chunk sizes (min/median/max/total, histogram), the compression "
                   "ratio and the time to read one chunk. SOURCE may then also be a Zarr "
                   "store, an Icechunk repository or kerchunk references (not GRIB).")
@click.option("--read", "read", metavar="'VAR[SEL]'",
              help="With the profile (implies --profile): how many chunks and bytes this "
                   "selection touches, and how long it takes to read, e.g. 'tas[:, 10, 20]' "
                   "(integers, negative from the end, and step-1 slices a:b; missing "
                   "trailing indices mean ':').")
@click.pass_context
def inspect_command(ctx: click.Context, source: str, as_json: bool, group: str | None,
                    storage_options: tuple[str, ...], subchunk_mb: float,
                    inline_limit_mb: float, profile: bool, read: str | None) -> None:
    """Pre-flight check: what virtualize will do with each variable of SOURCE.

    SOURCE is one NetCDF-4/HDF5, NetCDF-3 or GRIB file (recognised by its bytes): a local
    path or an s3://, gs://, az://, http(s):// URL. For GRIB the header also gives the
    message count and each grid, and --json lists every message. One line per variable:
    name, shape, dtype, storage layout, chunk shape, MB per chunk (uncompressed),
    allocated/total chunks, HDF5 filters or GRIB packing (a trailing ! marks a filter with
    no Zarr codec) and the verdict:

    \b
      virtualize              chunks referenced in place
      virtualize_subchunked   uncompressed contiguous: byte-range sub-chunks
      inline                  small: its values are copied into the output
      convert                 virtualize refuses it (not referenceable and
                              too large to inline, or a type Zarr cannot hold)

    Then the chunking warnings (contiguous data; single-pixel spatial chunks; spatial
    chunks over 1000; more than 1000 chunks under 64 KiB), the reason for every verdict and
    a summary. Exits 0 whenever the file could be inspected, whatever the verdicts (a GRIB
    file zarrport refuses, e.g. a spectral field, is the file problem of a convert
    verdict); bad input (missing, empty, not NetCDF/HDF5/GRIB, truncated) exits non-zero
    with one line on stderr.

    With --profile (or --read, which implies it) inspect profiles SOURCE's chunks instead:
    SOURCE is then a Zarr v2/v3 store, an Icechunk repository, kerchunk JSON/Parquet
    references or a NetCDF-4/HDF5 or NetCDF-3 file (not GRIB), --group a group of any of
    them, and --subchunk-mb/--inline-limit-mb do not apply. Reads are timed through
    zarrport.open_dataset (median of 3, after one untimed read).

    \b
    Examples:
      zarrport inspect data/tas_day_2015.nc
      zarrport inspect data/tas_day_2015.nc --json | jq .summary
      zarrport inspect data/era5_t2m.grib2 --json | jq .grib.grids
      zarrport inspect s3://bucket/tas.nc --storage-option anon=true
      zarrport inspect tas.icechunk --profile
      zarrport inspect tas.json --read 'tas[:, 10, 20]' --json | jq .read
    """
    if profile or read is not None:
        from click.core import ParameterSource

        from zarrport.errors import InvalidArgumentError
        from zarrport.inspect.profile import profile_source, render_profile

        for param in ("subchunk_mb", "inline_limit_mb"):
            if ctx.get_parameter_source(param) is not ParameterSource.DEFAULT:
                raise InvalidArgumentError(
                    f"--{param.replace('_', '-')} sets up the pre-flight report; it does not "
                    "apply to --profile")
        result = profile_source(source, storage_options=parse_storage_options(storage_options),
                                group=group, read=read)
        if as_json:
            echo_json(result.to_dict())
        else:
            click.echo(render_profile(result), nl=False)
        return

    from zarrport.inspect import inspect_source, render_text

    report = inspect_source(
        source,
        storage_options=parse_storage_options(storage_options),
        group=group,
        subchunk_mb=subchunk_mb,
        inline_limit_mb=inline_limit_mb,
    )
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(render_text(report), nl=False)
