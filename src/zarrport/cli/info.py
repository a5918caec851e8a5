from __future__ import annotations

import click

from zarrport.cli import cli
from zarrport.cli.options import echo_json, json_flag, parse_storage_options, storage_option


def describe(url: str, storage_options: dict | None) -> dict:
    from zarrport.open import detect, open_dataset

    kind = detect(url, storage_options)
    ds = open_dataset(url, storage_options=storage_options)
    extra = {}
    if kind == "icechunk":
        from zarrport import storage
        from zarrport.virtual.icechunk import spec_version

        extra["icechunk_spec_version"] = spec_version(storage.normalize_url(url),
                                                      storage_options)
    return {
        "url": url,
        "kind": kind,
        **extra,
        "dims": {str(k): int(v) for k, v in ds.sizes.items()},
        "coords": [str(c) for c in ds.coords],
        "data_vars": {
            str(n): {"dims": list(v.dims), "dtype": str(v.dtype),
                     "units": v.attrs.get("units"), "long_name": v.attrs.get("long_name")}
            for n, v in ds.data_vars.items()
        },
        "attrs": {str(k): (v if isinstance(v, str | int | float) else str(v))
                  for k, v in ds.attrs.items()},
    }


@cli.command("info")
@click.argument("url")
@storage_option
@json_flag
def info_command(url: str, storage_options: tuple[str, ...], as_json: bool) -> None:
    """Open URL (references, Icechunk, Zarr, NetCDF or GRIB -- detected from the content)
    and describe the dataset. A GRIB file is scanned (headers only) and opened lazily: one
    message per chunk, decoded when read.

    \b
    Example:
      zarrport info tas.icechunk
      zarrport info data/era5_t2m.grib2
    """
    from zarrport.open import detect, open_dataset

    opts = parse_storage_options(storage_options)
    if as_json:
        echo_json(describe(url, opts))
        return
    kind = detect(url, opts)
    if kind == "icechunk":
        from zarrport import storage
        from zarrport.virtual.icechunk import spec_version

        version = spec_version(storage.normalize_url(url), opts)
        kind = f"icechunk (Icechunk {version}" + (
            ": read-only for zarrport; `zarrport migrate` upgrades it)" if version < 2 else ")")
    click.echo(f"{url}: {kind}")
    click.echo(str(open_dataset(url, storage_options=opts)))
