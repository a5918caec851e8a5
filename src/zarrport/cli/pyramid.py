"""``zarrport pyramid``: multiscale levels by 2x coarsening, for maps and tile servers."""

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


@cli.command("pyramid")
@click.argument("store")
@click.option("-o", "--output", required=True, metavar="OUT.zarr",
              help="The Zarr v3 group to write (a local directory).")
@click.option("--levels", metavar="N",
              help="Number of levels, level 0 (full resolution) included. Default: halve until "
              "the larger spatial side is at most 256.")
@click.option("--method", default="mean", show_default=True, metavar="mean|nearest|mode",
              help="How a 2x2 block becomes one cell: mean (continuous data; NaN and fill "
              "values ignored, on decoded values), nearest (its top-left cell) or mode (its "
              "most frequent valid value, ties to the smallest; for categories). nearest and "
              "mode keep the stored dtype and fill value.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@storage_option
@json_flag
def pyramid_cmd(store: str, output: str, levels: str | None, method: str, overwrite: bool,
                storage_options: tuple[str, ...], as_json: bool) -> None:
    """Write multiscale levels of STORE: level 0 at full resolution, level k coarser by
    a factor of 2^k along the spatial dimensions (2x2 blocks of level k-1).

    STORE is anything zarrport opens (a Zarr store from `zarrport convert`, an Icechunk
    repository, a NetCDF file ...). OUT is a Zarr v3 group with the levels in groups 0, 1,
    ... (each a CF dataset chunked 256x256 in space, one step along other dimensions) and
    the zarr-conventions `multiscales` metadata (with `spatial:` where the grid is regular)
    on its root. Each level is computed from the one before, in Dask chunks. Variables
    without both a y and an x dimension are left out (listed in the summary). Until the last
    level is written the store says it is incomplete and zarrport refuses to open it; a
    re-run replaces an unfinished pyramid. See docs/pyramid.md.

    \b
    Examples:
      zarrport pyramid tas.zarr -o tas-pyramid.zarr
      zarrport pyramid landcover.nc -o lc-pyramid.zarr --method mode --levels 4 --json
    """
    from zarrport.convert.pyramid import pyramid

    show = not as_json and sys.stderr.isatty()

    def progress(k: int, n: int) -> None:
        if show:
            click.echo(f"level {k}/{n - 1} ...", err=True)

    summary = pyramid(store, output, levels=levels, method=method, overwrite=overwrite,
                      storage_options=parse_storage_options(storage_options), progress=progress)
    if as_json:
        echo_json(summary)
    else:
        print_summary(summary)


def print_summary(s: dict[str, Any]) -> None:
    n = len(s["levels"])
    click.echo(f"pyramid {s['source']} -> {s['output']}: {n} level{'s' if n != 1 else ''} "
               f"({s['method']}, odd edges padded) in {s['seconds']:.1f} s, "
               f"{human_bytes(s['bytes_written'])} written")
    for lv in s["levels"]:
        sides = " x ".join(f"{d} {m}" for d, m in lv["sizes"].items())
        click.echo(f"  level {lv['level']:<3} {sides:<28} scale {lv['scale']:<6} "
                   f"{human_bytes(lv['bytes_written'])}")
    click.echo(f"  variables: {', '.join(s['variables'])}")
    if s.get("bounds"):
        click.echo(f"  bounds: {', '.join(s['bounds'])} (those of spatial coordinates at "
                   "level 0 only)")
    for item in s.get("left_out") or ():
        click.echo(f"  left out: {item['variable']} ({item['reason']})")
