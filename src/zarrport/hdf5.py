"""HDF5 filter plugins for netCDF-C, set only where zarrport opens data with netCDF4."""

from __future__ import annotations

import importlib.util
import os


def _netcdf4_plugin_dir() -> str | None:
    """The plugin directory netCDF4's wheels ship (found without importing netCDF4)."""
    spec = importlib.util.find_spec("netCDF4")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(next(iter(spec.submodule_search_locations)), "plugins")
    return path if os.path.isdir(path) else None


def use_hdf5_plugins() -> None:
    """Let netCDF-C (the oracle reader) find the HDF5 filters hdf5plugin ships (lz4,
    bitshuffle, blosc2, ... beside netCDF4's own bzip2/zstd/blosc/szip).

    netCDF-C's HDF5 reads ``HDF5_PLUGIN_PATH`` when it starts, so this runs before zarrport
    first opens a file with netCDF4 (``verify``, ``open_dataset`` on a NetCDF file, the
    CLI). netCDF4 itself sets the variable to its own plugin directory when imported and
    it is unset; zarrport puts hdf5plugin's directory first and keeps netCDF4's. A path the
    user set is kept as it is.
    """
    try:
        import hdf5plugin
    except ImportError:
        return
    ours = hdf5plugin.PLUGIN_PATH
    theirs = _netcdf4_plugin_dir()
    current = os.environ.get("HDF5_PLUGIN_PATH")
    if current is None:
        os.environ["HDF5_PLUGIN_PATH"] = os.pathsep.join(p for p in (ours, theirs) if p)
    elif current == theirs:  # set by netCDF4's import, not by the user
        os.environ["HDF5_PLUGIN_PATH"] = os.pathsep.join((ours, theirs))
