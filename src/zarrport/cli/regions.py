"""``zarrport analyze regional-means``: exact area-weighted means per region and time step."""

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


@analyze.command("regional-means")
@click.argument("sources", nargs=-1, required=True)
@click.option("--regions", "regions", required=True, metavar="FILE|PRESETS",
              help="Polygons: GeoJSON, GeoPackage, Shapefile, FlatGeobuf or GeoParquet "
              "(reprojected to EPSG:4326; none given means 4326), or preset boxes such as "
              "CONUS or CONUS,AK,HI,PR.")
@click.option("--id-field", metavar="FIELD",
              help="Field holding unique region ids (e.g. GEOID). Default: a field named "
              "id/geoid/fid/code/region if unique, else the row number.")
@click.option("--variable", "variables", multiple=True, metavar="NAME",
              help="Variable to average (repeatable). Default: every data variable on the "
              "lat/lon grid.")
@click.option("--weights", default="area", show_default=True, metavar="area|none|FILE",
              help="Cell weights: area on the sphere, none (coverage fraction only), or a "
              "NetCDF/Zarr file with one variable on the grid (e.g. land fraction) "
              "multiplied with the area.")
@click.option("-o", "--output", "out", required=True,
              help="Result: .parquet or .csv (long table: region id, time, one column per "
              "variable) or .nc (dims region, time).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--plot", "plot", metavar="PNG",
              help="Also draw a choropleth of the first variable's mean over time.")
@click.option("--collection", metavar="NAME",
              help="Collection of a `zarrport batch` output (needed when it has several).")
@storage_option
@dask_options
@json_flag
def regional_means_command(sources: tuple[str, ...], regions: str, id_field: str | None,
                           variables: tuple[str, ...], weights: str, out: str,
                           overwrite: bool, plot: str | None, collection: str | None,
                           storage_options: tuple[str, ...], scheduler: str | None,
                           workers: int | None, memory_limit: str | None,
                           progress: bool | None, as_json: bool) -> None:
    """Area-weighted means of SOURCE's variables per region and time step, with the exact
    fraction of every grid cell each polygon covers (cells on a region's edge count with
    the share inside it). The weights are one sparse matrix per grid; every time step is
    one matrix product on Dask. Cells without data renormalise the weights.

    SOURCE is an archive zarrport opens (virtual references, Icechunk, batch output, Zarr,
    NetCDF) or several NetCDF files.

    \b
    Examples:
      zarrport analyze regional-means tas.icechunk --regions counties.gpkg \\
          --id-field GEOID -o county-means.parquet --plot counties.png
      zarrport analyze regional-means 'tas_day_*.nc' --regions CONUS,AK,HI,PR -o us.csv
    """
    from zarrport.analysis.cluster import dask_client
    from zarrport.analysis.regions import (
        check_output,
        plot_regions,
        read_regions,
        regional_means,
        write_means,
    )
    from zarrport.errors import InvalidArgumentError, OutputExistsError

    check_output(out, overwrite)
    if plot is not None:
        if not plot.lower().endswith(".png"):
            raise InvalidArgumentError(f"--plot {plot}: the plot must end in .png")
        if os.path.exists(plot) and not overwrite:
            raise OutputExistsError(f"{plot} exists (give --overwrite to replace it)")
    gdf = read_regions(regions, id_field=id_field)
    ds, w = regional_means(list(sources) if len(sources) > 1 else sources[0], gdf,
                           variables=list(variables) or None, weights=weights,
                           storage_options=parse_storage_options(storage_options),
                           collection=collection)
    report = w.report()
    if not as_json:
        click.echo(report)

    def echo(line: str) -> None:
        click.echo(line, err=True)

    with dask_client(scheduler, workers=workers, memory_limit=memory_limit,
                     echo=echo) as client:
        summary = write_means(ds, out, client=client, progress=progress, overwrite=overwrite)
        info = client.zarrport_info.to_dict()
    computed = summary.pop("dataset")
    if plot is not None:
        plot_regions(computed, gdf, plot)
    summary.update(w.to_dict())
    summary.update({"output": out, "plot": plot, "cluster": info})
    if as_json:
        echo_json(summary)
        return
    click.echo(f"wrote {out}: {summary['regions']} regions x {summary['times']} time steps, "
               f"{', '.join(summary['variables'])}")
    if plot is not None:
        click.echo(f"plot: {plot}")
