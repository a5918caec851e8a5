"""Open a STAC Item written by :func:`zarrport.catalog.write_catalog` as a dataset."""

from __future__ import annotations

import json
import os
from typing import Any

import pystac
import xarray as xr

from zarrport import storage
from zarrport.errors import CorruptSourceError, InvalidArgumentError, SourceNotFoundError

#: asset keys in the order :func:`open_item` tries them
ASSET_PREFERENCE = ("zarr_ref", "icechunk", "zarr", "netcdf")


def open_item(item: pystac.Item | dict[str, Any] | str | os.PathLike[str], *,
              asset: str | None = None, storage_options: dict | None = None,
              **xarray_kwargs: Any) -> xr.Dataset:
    """Open the Item's best asset lazily: ``zarr_ref`` (kerchunk references) if it has one,
    else ``icechunk``, ``zarr``, ``netcdf`` -- or the asset named by ``asset``.

    ``item`` is a :class:`pystac.Item`, its dict, or the path/URL of its JSON. Relative asset
    hrefs are resolved against the Item's own location. ``storage_options`` are merged over
    the asset's ``xarray:storage_options`` (credentials are never in the catalog).
    """
    stac_item = _load(item, storage_options)
    key = asset or next((k for k in ASSET_PREFERENCE if k in stac_item.assets), None)
    if key is None or key not in stac_item.assets:
        have = ", ".join(sorted(stac_item.assets)) or "none"
        wanted = repr(asset) if asset else ", ".join(ASSET_PREFERENCE)
        raise InvalidArgumentError(
            f"STAC item {stac_item.id!r} has no asset {wanted} to open (it has: {have})")
    chosen = stac_item.assets[key]
    href = chosen.get_absolute_href() or chosen.href
    options = {**(chosen.extra_fields.get("xarray:storage_options") or {}),
               **(storage_options or {})}
    from zarrport.open import open_dataset

    return open_dataset(href, storage_options=options or None, **xarray_kwargs)


def _load(item: Any, storage_options: dict | None) -> pystac.Item:
    if isinstance(item, pystac.Item):
        return item
    if isinstance(item, dict):
        try:
            return pystac.Item.from_dict(item)
        except Exception as err:
            raise CorruptSourceError(f"not a STAC item: {err}") from err
    url = storage.normalize_url(os.fspath(item))
    fs, path = storage.filesystem(url, storage_options)
    try:
        raw = fs.cat_file(path)
    except FileNotFoundError as err:
        raise SourceNotFoundError(f"{url} does not exist", source=url) from err
    try:
        doc = json.loads(raw)
    except ValueError as err:
        raise CorruptSourceError(f"{url}: not JSON ({err})", source=url) from err
    if not isinstance(doc, dict) or doc.get("type") != "Feature":
        raise CorruptSourceError(f"{url}: not a STAC item (type {doc.get('type')!r})"
                                 if isinstance(doc, dict) else f"{url}: not a STAC item",
                                 source=url)
    try:
        stac_item = pystac.Item.from_dict(doc)
    except Exception as err:
        raise CorruptSourceError(f"{url}: not a STAC item ({err})", source=url) from err
    stac_item.set_self_href(url.removeprefix("file://") if url.startswith("file://") else url)
    return stac_item
