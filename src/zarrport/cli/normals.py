"""``zarrport analyze normals``: rolling climatological normals of a daily archive."""

from __future__ import annotations

import os

import click

from zarrport.cli.analyze import analyze
from zarrport.cli.options import (
    dask_options,
    echo_json,
    json_flag,
    parse_storage_options,
    storage_option,
)


@analyze.command("normals")
@click.argument("sources", nargs=-1, required=True)
@click.option("--variable", required=True, help="Daily variable, e.g. tas or pr.")
@click.option("--start-year", type=int, required=True, help="First year of the first window.")
@click.option("--end-year", type=int, required=True,
              help="Last year any window may reach (the data must cover start..end year).")
@click.option("--window", type=int, default=30, show_default=True, help="Years per window.")
@click.option("--step", type=int, default=1, show_default=True,
              help="Years between the starts of consecutive windows.")
@click.option("--freq", default="annual", show_default=True, metavar="FREQ",
              help="annual, seasonal (DJF/MAM/JJA/SON, December in the next year's DJF), "
              "monthly or dayofyear (calendar days as month-day).")
@click.option("--feb29", default="keep", show_default=True, metavar="HOW",
              help="dayofyear only: keep (Feb 29 from the leap years, see count), drop, or "
              "fold (Feb 29 values join Feb 28's sample).")
@click.option("--min-coverage", type=float, default=0.9, show_default=True,
              help="Share of a period's days a year needs, and share of its years a window "
              "needs.")
@click.option("--bbox", metavar="W,S,E,N", help="Box in degrees (W > E crosses the "
              "antimeridian). Default: the whole grid.")
@click.option("--region", metavar="NAME", help="A named box: CONUS, AK, HI or PR.")
@click.option("-o", "--output", "out", required=True,
              help="Result: .nc for NetCDF-4, otherwise a Zarr v3 store.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--plot", "png", metavar="PNG",
              help="Also draw the first window's normal and the change to the last window.")
@click.option("--collection", metavar="NAME",
              help="Collection of a `zarrport batch` output (needed when it has several).")
@storage_option
@dask_options
@json_flag
def normals_command(sources: tuple[str, ...], variable: str, start_year: int, end_year: int,
                    window: int, step: int, freq: str, feb29: str, min_coverage: float,
                    bbox: str | None, region: str | None, out: str, overwrite: bool,
                    png: str | None, collection: str | None,
                    storage_options: tuple[str, ...], scheduler: str | None,
                    workers: int | None, memory_limit: str | None, progress: bool | None,
                    as_json: bool) -> None:
    """Rolling WINDOW-year normals of the daily VARIABLE of SOURCE (an Icechunk repository,
    kerchunk references, a batch output, a Zarr store, or NetCDF files/globs): the mean of
    every window [y, y + WINDOW - 1], y = START, START + STEP, ..., per year, season, month
    or calendar day, written as a CF climatology (climatology_bounds; first_year, last_year
    and period along time; the count of years behind every value).

    \b
    Examples:
      zarrport analyze normals tas.icechunk --variable tas --start-year 2015 \\
          --end-year 2100 -o tas-normals.zarr --plot tas-normals.png
      zarrport analyze normals 'data/pr_day_*.nc' --variable pr --start-year 2015 \\
          --end-year 2060 --freq seasonal --step 5 --region CONUS -o pr-djf.nc
      zarrport analyze normals out/ --collection tas_day_ACCESS-CM2_ssp245_r1i1p1f1_gn \\
          --variable tas --start-year 2015 --end-year 2044 --freq dayofyear \\
          --feb29 fold -o doy.zarr --scheduler tcp://10.0.0.5:8786 --json
    """
    from zarrport.analysis.cluster import dask_client
    from zarrport.analysis.normals import normals, plot_normals, write_normals
    from zarrport.analysis.presets import resolve_box
    from zarrport.errors import OutputExistsError

    box = resolve_box(bbox, region)
    # everything is checked (lazily) before a cluster starts
    ds = normals(list(sources), variable=variable, start_year=start_year,
                 end_year=end_year, window=window, step=step, freq=freq, box=box,
                 feb29=feb29, min_coverage=min_coverage,
                 storage_options=parse_storage_options(storage_options),
                 collection=collection)
    if os.path.lexists(out) and not overwrite:
        raise OutputExistsError(f"{out} exists; remove it, choose another output or pass "
                                "--overwrite", source=out)
    if png and os.path.lexists(png) and not overwrite:
        raise OutputExistsError(f"{png} exists; remove it, choose another plot or pass "
                                "--overwrite", source=png)

    def echo(line: str) -> None:
        click.echo(line, err=True)

    with dask_client(scheduler, workers=workers, memory_limit=memory_limit,
                     echo=echo) as client:
        summary = write_normals(ds, out, client=client, progress=progress,
                                overwrite=overwrite)
    if png:
        import xarray as xr

        kw = ({"engine": "netcdf4"} if out.endswith((".nc", ".nc4"))
              else {"engine": "zarr", "consolidated": False})
        with xr.open_dataset(out, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True),
                             **kw) as done:
            summary["plot"] = plot_normals(done, png, variable=variable)
    if as_json:
        echo_json(summary)
        return
    wins = summary["windows"]
    lo, hi = summary["value_range"]
    rng = f"{lo:.6g} .. {hi:.6g} {summary['units'] or ''}".rstrip() if lo is not None \
        else "all missing"
    click.echo(f"{variable} {summary['freq']} normals: {len(wins)} window"
               f"{'s' * (len(wins) != 1)} of {summary['window']} years "
               f"({wins[0][0]}-{wins[0][1]} .. {wins[-1][0]}-{wins[-1][1]}), "
               f"{summary['periods']} period{'s' * (summary['periods'] != 1)} each")
    click.echo(f"values: {rng}")
    click.echo(f"output: {out} ({summary['seconds']:.1f} s)")
    if png:
        click.echo(f"plot: {png}")
