"""Command-line interface: thin commands that parse arguments and call the library.

Every command module registers itself on :data:`cli`. Errors raised by the library as
:class:`~zarrport.errors.ZarrportError` are printed as one line on stderr and mapped to an exit
status by :func:`zarrport.errors.exit_code` -- the only place exit statuses are decided.
"""

from __future__ import annotations

import sys

import click

from zarrport.errors import ZarrportError, exit_code


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="zarrport")
def cli() -> None:
    """zarrport: read NetCDF/HDF5 and GRIB archives as Zarr without copying them.

    \b
    Typical session:
      zarrport inspect data/tas_day_2015.nc
      zarrport virtualize data/tas_day_*.nc -o tas.icechunk --concat-dim time
      zarrport verify tas.icechunk
      zarrport info tas.icechunk
    \b
    Physical copies where the source chunking fights the reads:
      zarrport plan tas.icechunk --pattern timeseries
      zarrport convert tas.icechunk -o tas-series.zarr --pattern timeseries --validate
    \b
    Forecasts:
      zarrport grib ingest gefs s3://noaa-gefs-pds/gefs.20250101/00 -o gefs.icechunk --anon
      zarrport analyze exceedance gefs.icechunk --window 24h --threshold 50mm -o p.nc
    \b
    Analyses on Dask, and whole pipelines:
      zarrport analyze normals tas.icechunk --variable tas --start-year 2015 \\
          --end-year 2100 --freq seasonal -o normals.zarr --plot normals.png
      zarrport analyze regional-means tas.icechunk --regions counties.gpkg \\
          --id-field GEOID -o county-means.parquet
      zarrport run examples/pipeline.yaml --dry-run
    """


def _register() -> None:
    # Imported for their side effect of adding commands to ``cli``.
    import importlib
    import pkgutil

    import zarrport.cli as package

    # every module of this package except the shared helpers is a command
    for mod in pkgutil.iter_modules(package.__path__):
        if mod.name not in ("options", "library_warnings"):
            importlib.import_module(f"zarrport.cli.{mod.name}")


def main(argv: list[str] | None = None) -> None:
    from zarrport.cli.library_warnings import cli_warnings
    from zarrport.hdf5 import use_hdf5_plugins

    use_hdf5_plugins()  # before any command opens a file with netCDF4
    _register()
    try:
        with cli_warnings():  # library warnings: hidden, or one zarrport line each
            cli.main(args=argv, prog_name="zarrport", standalone_mode=False)
    except ZarrportError as err:
        click.echo(f"zarrport: error: {err}", err=True)
        sys.exit(exit_code(err))
    except click.exceptions.Abort:
        click.echo("zarrport: aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("zarrport: interrupted", err=True)
        sys.exit(130)
    finally:
        # reads left in flight by a failed one must end before zarr's atexit hook closes
        # its event loop under them (teardown noise, or a crash instead of our exit status)
        from zarrport.eventloop import settle_dask_threads, settle_zarr_tasks

        settle_dask_threads()  # reads still running in Dask's threads first, then zarr's loop

        settle_zarr_tasks(timeout=10.0)  # bounded: exiting must not hang on a stuck read
