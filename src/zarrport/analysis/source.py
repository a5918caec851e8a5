"""The archive an analysis reads: one URL zarrport opens (virtual references, an Icechunk
repository, a batch output, a Zarr store, one NetCDF file) or several NetCDF files (paths or
globs, combined by their coordinates) -- always lazily with Dask, times as cftime dates in
the file's own calendar, and time chunks merged up to about :data:`TARGET_CHUNK_BYTES`
(one day per chunk, common in CMIP archives, would make graphs of millions of tasks)."""

from __future__ import annotations

import glob
import math

import xarray as xr

from zarrport.errors import InvalidArgumentError, SourceNotFoundError

#: Dask chunk size the time axis is merged up to (whole storage chunks only). Measured on
#: bench_analysis's 30-year archive (73-day chunks of 90 x 180): normals took 23 s at 128 MiB
#: (chunks of 5.6 years), 15 s at 32 MiB, 16 s unmerged, on one worker.
TARGET_CHUNK_BYTES = 32 * 2**20


def _expand(sources: str | list[str] | tuple[str, ...]) -> list[str]:
    items = [sources] if isinstance(sources, str) else list(sources)
    out: list[str] = []
    for item in items:
        if "://" not in item and glob.has_magic(item):
            hits = sorted(glob.glob(item))
            if not hits:
                raise SourceNotFoundError(f"{item}: no file matches")
            out += hits
        else:
            out.append(item)
    if not out:
        raise InvalidArgumentError("no source given")
    return out


def open_archive(sources: str | list[str] | tuple[str, ...] | xr.Dataset, *,
                 variables: list[str] | None = None, storage_options: dict | None = None,
                 collection: str | None = None) -> xr.Dataset:
    """The archive as one lazy dataset (Dask arrays), reduced to ``variables`` (and their
    coordinates) when given; a missing variable is an error naming those there are."""
    from zarrport.open import open_dataset

    if isinstance(sources, xr.Dataset):
        ds = sources
    else:
        paths = _expand(sources)
        coder = xr.coders.CFDatetimeCoder(use_cftime=True)
        if len(paths) == 1:
            ds = open_dataset(paths[0], storage_options=storage_options,
                              collection=collection, chunks={}, decode_times=coder)
        else:
            bad = [p for p in paths if not p.endswith((".nc", ".nc4", ".h5", ".hdf5"))]
            if bad:
                raise InvalidArgumentError(
                    f"{bad[0]}: several sources must all be NetCDF files (.nc); a reference "
                    "or store is one source")
            from zarrport.hdf5 import use_hdf5_plugins

            use_hdf5_plugins()
            try:
                ds = xr.open_mfdataset(paths, combine="by_coords", chunks={},
                                       decode_times=coder, data_vars="minimal",
                                       coords="minimal", compat="override",
                                       join="exact", engine="netcdf4")
            except (ValueError, OSError) as err:
                raise InvalidArgumentError(f"cannot combine the {len(paths)} files: "
                                           f"{str(err).splitlines()[0]}") from err
    if variables:
        missing = [v for v in variables if v not in ds.data_vars]
        if missing:
            raise InvalidArgumentError(
                f"no variable {missing[0]!r} (variables: "
                f"{', '.join(map(str, ds.data_vars)) or 'none'})")
        # the coordinates' CF bounds stay (they are data variables to xarray): the cell
        # edges of regional means come from them, not from midpoints between centres
        keep = list(variables)
        for name in variables:
            for c in ds[name].coords.values():
                b = c.attrs.get("bounds")
                if isinstance(b, str) and b in ds.data_vars and b not in keep:
                    keep.append(b)
        ds = ds[keep]
    return merge_time_chunks(ds)


def merge_time_chunks(ds: xr.Dataset, target: int = TARGET_CHUNK_BYTES) -> xr.Dataset:
    """Dask chunks along ``time`` merged to whole multiples of the current ones, up to
    ``target`` bytes per chunk (no chunk is split)."""
    if "time" not in ds.dims:
        return ds
    out = {}
    for name, var in ds.data_vars.items():
        if var.chunks is None or "time" not in var.dims:
            continue
        axis = var.dims.index("time")
        tchunk = max(var.chunks[axis])
        per_step = var.dtype.itemsize * math.prod(
            max(c) for i, c in enumerate(var.chunks) if i != axis)
        factor = max(1, target // max(1, per_step * tchunk))
        if factor > 1:
            out[name] = var.chunk({"time": min(var.sizes["time"], tchunk * factor)})
    return ds.assign(out) if out else ds
