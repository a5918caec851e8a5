"""``zarrport analyze``: the command group, and ``exceedance`` (ensemble probabilities over a
box). ``normals`` and ``regional-means`` are in their own modules."""

from __future__ import annotations

import click

from zarrport.cli import cli
from zarrport.cli.options import echo_json, json_flag, parse_storage_options, storage_option


@cli.group()
def analyze() -> None:
    """Analyses, lazy and on Dask: climate normals, regional means, ensemble exceedance.

    \b
    Examples:
      zarrport analyze normals tas.icechunk --variable tas --start-year 2015 \\
          --end-year 2100 --freq seasonal -o normals.zarr --plot normals.png
      zarrport analyze regional-means tas.icechunk --regions counties.gpkg \\
          --id-field GEOID -o county-means.parquet --plot counties.png
      zarrport analyze exceedance gefs.icechunk --window 24h --threshold 50mm -o p.nc
    """


@analyze.command("exceedance")
@click.argument("repo")
@click.option("--var", default="tp", show_default=True, help="Accumulated variable.")
@click.option("--window", default="24h", show_default=True,
              help="Accumulation window (24h, 6h, 2d).")
@click.option("--threshold", default="50mm", show_default=True,
              help="Threshold with units (50mm, 0.05m, 50 kg m-2); converted to the "
              "variable's units.")
@click.option("--bbox", metavar="W,S,E,N", help="Box in degrees (longitudes -180..180 or "
              "0..360; W > E crosses the antimeridian). Default: the whole grid.")
@click.option("-o", "--output", "out", required=True,
              help="Result: .nc for NetCDF-4, otherwise a Zarr v3 store. Must not exist.")
@storage_option
@json_flag
def exceedance_command(repo: str, var: str, window: str, threshold: str, bbox: str | None,
                       out: str, storage_options: tuple[str, ...], as_json: bool) -> None:
    """Probability (%) that the WINDOW accumulation of VAR exceeds THRESHOLD, over the
    ensemble members, per init time, window end and grid point, for the box only.

    Windows come from the accumulation since the forecast start (GEFS buckets are summed),
    acc(step) - acc(step - WINDOW); members without data do not count.

    \b
    Examples:
      zarrport analyze exceedance gefs.icechunk --bbox -10,35,30,60 -o p24.nc
      zarrport analyze exceedance ens.icechunk --window 6h --threshold 20mm -o p6.zarr --json
    """
    from zarrport.grib.analyze import exceedance, report, summarize, write

    result = exceedance(repo, var=var, window=window, threshold=threshold, bbox=bbox,
                        storage_options=parse_storage_options(storage_options))
    computed = write(result, out)
    summary = summarize(computed)
    summary["output"] = out
    if as_json:
        echo_json(summary)
        return
    click.echo(report(summary, computed, out))
