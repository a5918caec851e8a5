from __future__ import annotations

from typing import Any

import click

from zarrport.cli import cli
from zarrport.cli.options import (
    echo_json,
    json_flag,
    parse_storage_options,
    storage_option,
    version_options,
)


def describe(url: str, storage_options: dict | None, *, collection: str | None = None,
             **version: Any) -> dict:
    """The dataset at ``url`` (at a version / collection given as in
    :func:`zarrport.open_dataset`): kind, dims, coordinates, variables, attributes."""
    from zarrport.open import detect, open_dataset

    kind = detect(url, storage_options)
    ds = open_dataset(url, storage_options=storage_options, collection=collection, **version)
    extra: dict[str, Any] = {}
    target = url
    if kind == "batch":
        from zarrport.pipeline.output import collection as find_collection

        col = find_collection(url, collection, storage_options)
        target = col.url
        extra["collection"] = col.name
        extra["collection_url"] = target
        kind = detect(target, storage_options)
        extra["collection_kind"] = kind
    if kind == "icechunk":
        from zarrport import storage
        from zarrport.history import Version, resolve
        from zarrport.virtual.icechunk import spec_version

        extra["icechunk_spec_version"] = spec_version(storage.normalize_url(target),
                                                      storage_options)
        extra["commit"] = resolve(target, Version.of(**version), storage_options).to_dict()
    return {
        "url": url,
        "kind": detect(url, storage_options),
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


def _dims(dims: dict[str, int] | None) -> str:
    return ", ".join(f"{k}: {v}" for k, v in (dims or {}).items()) or "-"


def _commit_line(commit: dict | None) -> str:
    if not commit:
        return "no commit"
    tags = f" [{', '.join(commit['tags'])}]" if commit.get("tags") else ""
    return f"{commit['id']} at {commit['written_at']}{tags}: {commit['message']}"


@cli.command("info")
@click.argument("url")
@version_options
@storage_option
@json_flag
def info_command(url: str, collection: str | None, branch: str | None, tag: str | None,
                 snapshot: str | None, as_of: str | None, storage_options: tuple[str, ...],
                 as_json: bool) -> None:
    """Open URL (references, Icechunk, Zarr, NetCDF, GRIB or a batch output -- detected
    from the content) and describe the dataset. A GRIB file is scanned (headers only) and
    opened lazily: one message per chunk, decoded when read.

    An Icechunk repository is read at the tip of main, or at --branch, --tag, --snapshot or
    --as-of (the last commit at or before a time; combines with --branch). A batch output
    lists its collections with their dimensions and last commit; --collection NAME (or a
    version option, when it has one collection) describes one.

    \b
    Examples:
      zarrport info tas.icechunk
      zarrport info data/era5_t2m.grib2
      zarrport info gefs.icechunk --tag cycle-2025010106
      zarrport info tas.icechunk --as-of 2025-01-01T06:00:00Z
      zarrport info batch-out --collection tas_day_CanESM5_ssp245_r1i1p1f1_gn
    """
    from zarrport.history import Version
    from zarrport.open import detect, open_dataset

    opts = parse_storage_options(storage_options)
    version = Version.of(branch, tag, snapshot, as_of)
    kind = detect(url, opts)
    if kind == "batch" and collection is None and not version.given:
        from zarrport.pipeline.output import describe as describe_batch

        listed = describe_batch(url, opts)
        if as_json:
            echo_json(listed)
            return
        cols = listed["collections"]
        click.echo(f"{url}: zarrport batch output, {len(cols)} collection"
                   f"{'' if len(cols) == 1 else 's'}")
        for name, item in cols.items():
            sources = f" ({item['sources']} sources)" if item.get("sources") is not None else ""
            click.echo(f"  {name}{sources}")
            click.echo(f"    dims: {_dims(item['dims'])}")
            click.echo(f"    last commit: {_commit_line(item['last_commit'])}")
        return
    if as_json:
        echo_json(describe(url, opts, collection=collection, **version.to_kwargs()))
        return
    ds = open_dataset(url, storage_options=opts, collection=collection, **version.to_kwargs())
    target = url
    label = kind
    if kind == "batch":
        from zarrport.pipeline.output import collection as find_collection

        col = find_collection(url, collection, opts)
        target = col.url
        kind = detect(target, opts)
        label = f"batch output, collection {col.name}: {kind}"
    if kind == "icechunk":
        from zarrport import storage
        from zarrport.history import resolve
        from zarrport.virtual.icechunk import spec_version

        v = spec_version(storage.normalize_url(target), opts)
        label = label.removesuffix("icechunk") + f"icechunk (Icechunk {v}" + (
            ": read-only for zarrport; `zarrport migrate` upgrades it)" if v < 2 else ")")
        click.echo(f"{url}: {label}")
        click.echo(f"{version.describe()}: commit "
                   f"{_commit_line(resolve(target, version, opts).to_dict())}")
    else:
        click.echo(f"{url}: {label}")
    click.echo(str(ds))
