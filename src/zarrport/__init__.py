"""zarrport: NetCDF-4/HDF5 and NetCDF-3 archives as cloud-native Zarr, without copying them."""

import os as _os


def _hdf5_plugin_path() -> None:
    """Let netCDF-C (the oracle reader) find the HDF5 filters hdf5plugin ships (bzip2, lz4,
    bitshuffle, zstd, blosc). netCDF-C reads HDF5_PLUGIN_PATH once, when its HDF5 starts, so
    this must happen before netCDF4 is first used."""
    if "HDF5_PLUGIN_PATH" not in _os.environ:
        try:
            import hdf5plugin

            _os.environ["HDF5_PLUGIN_PATH"] = hdf5plugin.PLUGIN_PATH
        except ImportError:
            pass


_hdf5_plugin_path()

from importlib.metadata import PackageNotFoundError  # noqa: E402
from importlib.metadata import version as _version  # noqa: E402

try:
    __version__ = _version("zarrport")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

from zarrport.errors import ZarrportError  # noqa: E402
from zarrport.open import open_dataset  # noqa: E402
from zarrport.virtual.api import VirtualizeResult, virtualize  # noqa: E402

__all__ = [
    "VirtualizeResult",
    "ZarrportError",
    "__version__",
    "open_dataset",
    "virtualize",
]
