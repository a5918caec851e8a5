"""zarrport: NetCDF-4/HDF5 and NetCDF-3 archives as cloud-native Zarr, without copying them.

Importing zarrport changes nothing for anyone else: xarray loads its backend entry point
(:mod:`zarrport.backend`, light) whenever it guesses an engine, so this package imports its
heavy parts on first use, sets no warning filters and no environment variables.
``HDF5_PLUGIN_PATH`` is set only where zarrport itself opens data with netCDF4
(:func:`zarrport.hdf5.use_hdf5_plugins`), and ``AWS_EC2_METADATA_DISABLED=true`` (unless
set) only once zarrport makes its first storage client, so that it never asks a cloud
metadata endpoint for credentials (``docs/storage.md``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from typing import Any

try:
    __version__ = _version("zarrport")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "VirtualizeResult",
    "ZarrportError",
    "__version__",
    "open_dataset",
    "virtualize",
]

_LAZY = {
    "ZarrportError": "zarrport.errors",
    "open_dataset": "zarrport.open",
    "VirtualizeResult": "zarrport.virtual.api",
    "virtualize": "zarrport.virtual.api",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zarrport' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
