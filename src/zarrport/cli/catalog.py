from __future__ import annotations

import click

from zarrport.cli import cli
from zarrport.cli.options import echo_json, json_flag, parse_storage_options, storage_option


@cli.command("catalog")
@click.argument("output")
@click.option("-o", "--catalog-dir", "catalog_dir", required=True,
              help="Local directory to write the STAC catalog into (an existing catalog "
              "there is replaced).")
@click.option("--title", help="Title of the root catalog.")
@storage_option
@json_flag
def catalog_command(output: str, catalog_dir: str, title: str | None,
                    storage_options: tuple[str, ...], as_json: bool) -> None:
    """Write a static, self-contained STAC catalog of OUTPUT into CATALOG_DIR.

    OUTPUT is a batch output (with zarrport-batch.json: one Collection per collection, one
    Item per source file plus one for the combined Icechunk dataset) or one output of
    `zarrport virtualize` (one Collection with one Item). The catalog is validated offline
    against the STAC core, datacube and xarray-assets schemas shipped with zarrport before
    it is moved into place.

    \b
    Examples:
      zarrport catalog batch-out/ -o stac/
      zarrport catalog tas.icechunk -o stac/ --json
    """
    from zarrport.catalog import write_catalog

    summary = write_catalog(output, catalog_dir,
                            storage_options=parse_storage_options(storage_options),
                            title=title)
    if as_json:
        echo_json(summary)
        return
    click.echo(f"wrote {summary['catalog']}")
    click.echo(f"  {len(summary['collections'])} collection(s), {summary['items']} item(s); "
               f"{summary['validated']} document(s) valid against {len(summary['schemas'])} "
               "schema(s), checked offline")
    click.echo(f"  {summary['seconds']:.2f} s")
