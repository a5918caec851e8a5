"""STAC catalogs of zarrport outputs: build, validate offline, open.

- :func:`write_catalog` writes a static, self-contained catalog of a batch output or a
  single output of ``zarrport virtualize`` (docs/catalog.md);
- :func:`validate_catalog` / :func:`validate_object` check STAC JSON against the core,
  datacube and xarray-assets schemas shipped in ``zarrport/catalog/schemas``, offline;
- :func:`open_item` opens an Item as an ``xarray.Dataset``, preferring the asset
  ``zarr_ref`` (kerchunk), then ``icechunk``, ``zarr`` and ``netcdf``.
"""

from zarrport.catalog.build import build_catalog, write_catalog
from zarrport.catalog.read import ASSET_PREFERENCE, open_item
from zarrport.catalog.validate import validate_catalog, validate_object

__all__ = [
    "ASSET_PREFERENCE",
    "build_catalog",
    "open_item",
    "validate_catalog",
    "validate_object",
    "write_catalog",
]
