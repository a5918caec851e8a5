"""zarrport: NetCDF-4/HDF5 and NetCDF-3 archives as cloud-native Zarr, without copying them."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("zarrport")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

from zarrport.errors import ZarrportError
from zarrport.open import open_dataset
from zarrport.virtual.api import VirtualizeResult, virtualize

__all__ = [
    "VirtualizeResult",
    "ZarrportError",
    "__version__",
    "open_dataset",
    "virtualize",
]
