"""``zarrport pyramid``: multiscale levels by 2x coarsening of the spatial dimensions.

What a pyramid is:

- Group ``OUT/0`` is the full-resolution copy, ``OUT/1`` halves each spatial dimension, and so
  on: level *k* is level *k-1* coarsened by 2x2 blocks, read back from the store (never from
  level 0), so each level is a Dask computation over 256x256 chunks and memory stays bounded.
- Every level is a CF dataset of its own (variables, coordinates, attributes; times stay
  encoded with their units and calendar), chunked ``(1, ..., 256, 256)``, compressed with
  zstd.
- The root group carries the ``multiscales`` metadata of the zarr-conventions proposal
  (``layout`` with ``asset``/``derived_from``/``transform`` per level) and, where the grid is
  regular, the ``spatial:`` convention's ``transform``/``bbox``/``dimensions``.
- Until the last level is written the root (and every level group) says
  ``zarrport_conversion: {"status": "incomplete"}``; :func:`zarrport.open_dataset` refuses
  such a store.

Resampling per 2x2 block (``method``):

- ``mean``: the mean of the values that are not NaN, on decoded values (scale/offset
  applied, fill values as NaN); an all-NaN block is NaN. Written as float32 (float64 when the
  source decodes to float64 or to an integer wider than 16 bits).
- ``mode``: the most frequent value that is neither NaN nor the fill value, ties going to the
  smallest; stored dtype and fill value kept. A block with no valid value is the fill value.
- ``nearest``: the top-left sample of the block (whatever it is, fill value included); stored
  dtype and fill value kept.

Odd sizes: blocks are padded at the far end (xarray's ``boundary="pad"``), so the last row or
column of a level summarises the one or two cells that exist and no data is dropped; a level
of ``n`` cells has ``ceil(n/2)`` cells at the next. Coordinates of a block are the mean of
the centres of its cells that exist (pairs for 1-D coordinates).
"""

from __future__ import annotations

import datetime as _dt
import math
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zarrport import storage
from zarrport.convert.plan import _TIME_NAMES, dim_roles, source_chunking
from zarrport.convert.writer import MARKER, _is_zarr_dir, local_output
from zarrport.errors import (
    InvalidArgumentError,
    OutputExistsError,
    OutputNotWritableError,
    StorageError,
)

METHODS = ("mean", "nearest", "mode")
#: spatial chunk edge of every level (the tile size of the tile server)
TILE = 256
#: the multiscales convention's name for each method
RESAMPLING = {"mean": "average", "nearest": "nearest", "mode": "mode"}
ZSTD_LEVEL = 3

MULTISCALES_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/multiscales/refs/tags/"
                  "v1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/multiscales/blob/v1/README.md",
    "uuid": "d35379db-88df-4056-af3a-620245f8e347",
    "name": "multiscales",
    "description": "Multiscale layout of zarr datasets",
}
SPATIAL_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/spatial/refs/tags/"
                  "v0.1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/spatial/blob/v0.1/README.md",
    "uuid": "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4",
    "name": "spatial",
    "description": "Spatial coordinate information",
}
# attributes that describe packed values; the mean writes unpacked floats
_PACKED_ATTRS = ("valid_range", "valid_min", "valid_max")


# --------------------------------------------------------------------------- block reductions


def _blocks(a: np.ndarray, axes: tuple[int, ...], pad_value: Any
            ) -> tuple[np.ndarray, np.ndarray]:
    """``a`` with ``axes`` cut into pairs: shape ``rest + coarse + (2**len(axes),)`` and the
    mask of cells that exist (the far end of an odd axis is padded)."""
    m = len(axes)
    nl = a.ndim - m
    a = np.moveaxis(a, axes, tuple(range(nl, a.ndim)))
    valid = np.ones(a.shape, dtype=bool)
    pads = [(0, 0)] * nl + [(0, n % 2) for n in a.shape[nl:]]
    if any(p[1] for p in pads):
        a = np.pad(a, pads, constant_values=pad_value)
        valid = np.pad(valid, pads, constant_values=False)
    shape = list(a.shape[:nl])
    for n in a.shape[nl:]:
        shape += [n // 2, 2]
    pair_axes = [nl + 2 * i + 1 for i in range(m)]
    last = tuple(range(len(shape) - m, len(shape)))
    out = []
    for x in (a, valid):
        x = np.moveaxis(x.reshape(shape), pair_axes, last)
        out.append(x.reshape(x.shape[:nl + m] + (2 ** m,)))
    return out[0], out[1]


def _restore(r: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    nl = r.ndim - len(axes)
    return np.moveaxis(r, tuple(range(nl, r.ndim)), axes)


def mean_dtype(dtype: Any) -> np.dtype:
    """float32 for float32 and integers up to 16 bits, else float64."""
    dt = np.dtype(dtype)
    if dt == np.float32 or (dt.kind in "iub" and dt.itemsize <= 2):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def coarsen_block(a: np.ndarray, axes: tuple[int, ...], method: str, *,
                  fill: Any = None, period: float | None = None) -> np.ndarray:
    """One 2x coarsening step of a numpy array along ``axes`` (see the module docstring).

    ``fill``: the stored fill value(s) ``mode`` ignores (a value or a tuple). ``period``: for
    longitudes (360), block means are taken around the block's first cell so a block that
    straddles the seam is not averaged across the globe."""
    if method == "nearest":
        return a[tuple(slice(None, None, 2) if i in axes else slice(None)
                       for i in range(a.ndim))]
    if method == "mean":
        out_dtype = mean_dtype(a.dtype)
        v, ok = _blocks(a.astype(np.float64), axes, np.nan)
        ok = ok & ~np.isnan(v)
        if period:
            ref = v[..., :1]
            half = period / 2
            unwrapped = ref + ((v - ref + half) % period - half)
            v = np.where(np.isnan(ref), v, unwrapped)
        n = ok.sum(axis=-1)
        s = np.where(ok, v, 0.0).sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(n > 0, s / np.maximum(n, 1), np.nan)
        if period and np.isfinite(a).any():
            # back into the range the values use (-180..180 or 0..360), ends included
            lo = -period / 2 if np.nanmin(a) < 0 else 0.0
            out = (r < lo) | (r > lo + period)
            r = np.where(out, (r - lo) % period + lo, r)
        return _restore(r.astype(out_dtype), axes)
    if method == "mode":
        v, ok = _blocks(a, axes, 0)
        if v.dtype.kind in "fc":
            ok = ok & ~np.isnan(v)
        fills = fill if isinstance(fill, tuple) else (() if fill is None else (fill,))
        for f in fills:
            f = np.array(f).astype(v.dtype)  # 1e20 as float32, -1 as it is stored
            if not (f.dtype.kind in "fc" and np.isnan(f)):
                ok = ok & (v != f)
        width = v.shape[-1]
        counts = [np.where(ok[..., j], sum(((v[..., k] == v[..., j]) & ok[..., k])
                                         for k in range(width)), -1)
                  for j in range(width)]
        best, best_n = v[..., 0].copy(), counts[0]
        for j in range(1, width):
            c, x = counts[j], v[..., j]
            better = (c > best_n) | ((c == best_n) & (c > 0) & (x < best))
            best = np.where(better, x, best)
            best_n = np.where(better, c, best_n)
        if fills:
            missing = np.asarray(fills[0], dtype=v.dtype)
        elif v.dtype.kind in "fc":
            missing = np.asarray(np.nan, dtype=v.dtype)
        else:  # no fill value: a block always has its top-left cell
            missing = v[..., 0]
        return _restore(np.where(best_n > 0, best, missing).astype(v.dtype), axes)
    raise InvalidArgumentError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")


def coarsen_dask(arr: Any, axes: tuple[int, ...], method: str, *, fill: Any = None,
                 period: float | None = None) -> Any:
    """:func:`coarsen_block` over a Dask array, block by block (blocks are first made even
    along ``axes``, except the last, so no 2x2 block straddles two chunks)."""
    chunks = list(arr.chunks)
    fixed = False
    for ax in axes:
        c = chunks[ax]
        if any(n % 2 for n in c[:-1]):
            size = max(2, (max(c) // 2) * 2)
            chunks[ax] = size
            fixed = True
    if fixed:
        arr = arr.rechunk(tuple(chunks))
    out_chunks = tuple(tuple((n + 1) // 2 for n in c) if i in axes else c
                       for i, c in enumerate(arr.chunks))
    dtype = mean_dtype(arr.dtype) if method == "mean" else arr.dtype
    return arr.map_blocks(coarsen_block, axes=axes, method=method, fill=fill, period=period,
                          dtype=dtype, chunks=out_chunks)


# --------------------------------------------------------------------------- the source


@dataclass
class Layout:
    """What of the source goes into the pyramid."""

    names: list[str]  # data variables with both a y and an x dimension
    ydim: str
    xdim: str
    spatial_dims: list[str]  # every dimension that is coarsened
    bounds: dict[str, str] = field(default_factory=dict)  # coordinate -> its bounds variable
    aux: list[str] = field(default_factory=list)  # grid_mapping variables
    left_out: list[dict[str, str]] = field(default_factory=list)


def _time_like(ds: Any, dim: str) -> bool:
    c = ds.variables.get(dim)
    attrs = dict(getattr(c, "attrs", {}) or {}) if c is not None else {}
    return (str(attrs.get("axis", "")).upper() == "T" or " since " in str(attrs.get("units", ""))
            or attrs.get("standard_name") == "time" or dim.lower() in _TIME_NAMES
            or (c is not None and np.dtype(c.dtype).kind == "M"))


def plan_layout(ds: Any, source: str) -> Layout:
    """The variables to coarsen (both spatial dimensions, by
    :func:`~zarrport.convert.plan.dim_roles`), the bounds and grid mappings that come along,
    and what is left out."""
    bounds: dict[str, str] = {}
    for name, var in ds.variables.items():
        for key in ("bounds", "climatology"):
            b = var.attrs.get(key)
            if isinstance(b, str) and b in ds.variables and b != name:
                bounds[str(name)] = b
    names: list[str] = []
    left_out: list[dict[str, str]] = []
    pairs: list[tuple[str, str]] = []
    for name, var in ds.data_vars.items():
        name = str(name)
        if name in bounds.values():
            continue
        if np.dtype(var.dtype).kind not in "biuf":
            left_out.append({"variable": name, "reason": f"not numeric ({var.dtype})"})
            continue
        roles = dim_roles(ds, name)
        ys = [d for d in var.dims if roles.get(d) == "y" and not _time_like(ds, d)]
        xs = [d for d in var.dims if roles.get(d) == "x" and not _time_like(ds, d)]
        if len(ys) != 1 or len(xs) != 1:
            left_out.append({"variable": name, "reason": "no y and x dimensions "
                             f"({', '.join(map(str, var.dims)) or 'scalar'})"})
            continue
        names.append(name)
        pairs.append((str(ys[0]), str(xs[0])))
    if not names:
        have = ", ".join(f"{n}({', '.join(map(str, v.dims))})" for n, v in ds.data_vars.items())
        hint = "; it is a pyramid already (its levels are the groups 0, 1, ...)" \
            if "multiscales" in ds.attrs else ""
        raise InvalidArgumentError(
            f"{source} has no variable with both a y and an x dimension to coarsen "
            f"(it has {have or 'no data variables'}){hint}")
    aux = []
    for n in names:
        gm = ds[n].attrs.get("grid_mapping")
        if isinstance(gm, str) and gm in ds.variables and gm not in aux and gm not in names:
            aux.append(gm)
    left_out = [x for x in left_out if x["variable"] not in aux]
    spatial = sorted({d for p in pairs for d in p}, key=lambda d: list(ds.dims).index(d))
    return Layout(names=names, ydim=pairs[0][0], xdim=pairs[0][1], spatial_dims=spatial,
                  bounds={c: b for c, b in bounds.items()}, aux=aux, left_out=left_out)


def possible_levels(sizes: dict[str, int], spatial_dims: list[str]) -> int:
    """Levels until every spatial dimension is one cell (level 0 included)."""
    biggest = max(sizes[d] for d in spatial_dims)
    return 1 + max(0, math.ceil(math.log2(biggest))) if biggest > 1 else 1


def default_levels(sizes: dict[str, int], spatial_dims: list[str]) -> int:
    """Levels until the larger spatial side is at most :data:`TILE` (level 0 included)."""
    biggest = max(sizes[d] for d in spatial_dims)
    n = 1
    while biggest > TILE:
        biggest = (biggest + 1) // 2
        n += 1
    return n


def level_sizes(size: int, k: int) -> int:
    for _ in range(k):
        size = (size + 1) // 2
    return size


# --------------------------------------------------------------------------- writing


def _target_chunks(dims: tuple, shape: tuple, spatial: list[str]) -> tuple[int, ...]:
    return tuple(min(TILE, n) if d in spatial else 1 for d, n in zip(dims, shape, strict=True))


def _aligned_chunks(var: Any, target: tuple[int, ...]) -> tuple[int, ...]:
    """Dask chunks for reading the source (a DataArray): whole multiples of its chunks near
    the target (the target itself for contiguous data)."""
    src, layout = source_chunking(var)
    if layout == "contiguous":
        return target
    return tuple(min(n, s * max(1, t // s))
                 for s, t, n in zip(src, target, var.shape, strict=True))


def _period(var: Any) -> float | None:
    a = var.attrs
    if a.get("standard_name") == "longitude" or str(a.get("units", "")).lower() in (
            "degrees_east", "degree_east", "degree_e", "degrees_e", "degreee", "degreese"):
        return 360.0
    return None


def _fills(attrs: dict[str, Any]) -> tuple | None:
    out = []
    for key in ("_FillValue", "missing_value"):
        v = attrs.get(key)
        if v is None:
            continue
        out += [x.item() if hasattr(x, "item") else x for x in np.atleast_1d(v)]
    return tuple(out) or None


def _coarsen_coord(var: Any, spatial: list[str]) -> Any:
    """A coordinate one level coarser: the (seam-aware) mean of the centres in each block
    for numbers, the top-left label otherwise."""
    import dask.array as da
    import xarray as xr

    axes = tuple(i for i, d in enumerate(var.dims) if d in spatial)
    attrs = {k: v for k, v in var.attrs.items() if k not in ("bounds", "_FillValue")}
    method = "mean" if np.dtype(var.dtype).kind in "biuf" else "nearest"
    data = var.data
    if isinstance(data, da.Array):
        out = coarsen_dask(data, axes, method, period=_period(var))
    else:
        out = coarsen_block(np.asarray(var.values), axes, method, period=_period(var))
    if method == "mean" and np.dtype(var.dtype).kind == "f":
        out = out.astype(var.dtype)
    return xr.Variable(var.dims, out, attrs)


def _level_dataset(k: int, data: dict[str, Any], coords: dict[str, Any], extra: dict[str, Any],
                   global_attrs: dict[str, Any], marker: dict[str, Any], method: str,
                   spatial: list[str]) -> tuple[Any, dict[str, dict[str, Any]]]:
    import xarray as xr
    from zarr.codecs import ZstdCodec

    encoding: dict[str, dict[str, Any]] = {}
    for name, var in data.items():
        enc: dict[str, Any] = {"chunks": _target_chunks(var.dims, var.shape, spatial),
                               "compressors": [ZstdCodec(level=ZSTD_LEVEL)]}
        if method == "mean":
            enc["_FillValue"] = np.nan
        else:
            fills = _fills(var.attrs)
            if fills:  # the Zarr fill_value too, which web readers take as "no data"
                enc["fill_value"] = np.asarray(fills[0]).astype(var.dtype)[()]
        encoding[name] = enc
    for name, var in list(coords.items()) + list(extra.items()):
        enc = {"compressors": [ZstdCodec(level=ZSTD_LEVEL)]}
        if "_FillValue" not in var.attrs:
            enc["_FillValue"] = None
        if var.ndim >= 2 and any(d in spatial for d in var.dims):
            enc["chunks"] = _target_chunks(var.dims, var.shape, spatial)
        elif var.ndim:
            enc["chunks"] = tuple(max(1, n) for n in var.shape)
        encoding[name] = enc
    attrs = dict(global_attrs)
    attrs[MARKER] = dict(marker, level=k)
    ds = xr.Dataset(data_vars={**data, **extra}, coords=coords, attrs=attrs)
    return ds, encoding


def _write(ds: Any, encoding: dict, out: Path, group: str | None) -> None:
    import dask

    try:
        with warnings.catch_warnings(), dask.config.set(scheduler="threads"):
            warnings.simplefilter("ignore")
            ds.to_zarr(str(out), group=group, mode="w", zarr_format=3, consolidated=False,
                       encoding=encoding)
    except OSError as err:
        raise StorageError(f"cannot write {out}/{group}: {err.strerror or err}") from err


def _dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _clear(out: Path, overwrite: bool) -> None:
    if out.exists() or out.is_symlink():
        if not overwrite and not _ours_unfinished(out):
            raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
        if out.is_dir() and any(out.iterdir()) and not _is_zarr_dir(out):
            raise OutputExistsError(
                f"{out} exists and is not a Zarr store; zarrport will not delete it")
    if not out.parent.is_dir():
        raise OutputNotWritableError(f"cannot write {out}: {out.parent} is not a directory")


def _ours_unfinished(out: Path) -> bool:
    """An unfinished pyramid (killed run): rerunning replaces it without --overwrite."""
    from zarrport.convert.writer import is_incomplete

    rec = is_incomplete("file://" + str(out))
    return bool(rec) and rec.get("command") == "pyramid"


def _remove(out: Path) -> None:
    if out.is_dir() and not out.is_symlink():
        shutil.rmtree(out)
    elif out.exists() or out.is_symlink():
        out.unlink()


def _regular(values: np.ndarray) -> float | None:
    """The step of an evenly spaced 1-D coordinate, else None."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size < 2 or not np.all(np.isfinite(v)):
        return None
    step = (v[-1] - v[0]) / (v.size - 1)
    if step == 0 or np.max(np.abs(np.diff(v) - step)) > 1e-4 * abs(step):
        return None
    return float(step)


def multiscales_attrs(n_levels: int, method: str, ds0: Any, lay: Layout) -> dict[str, Any]:
    """The root attributes: zarr-conventions ``multiscales`` (and ``spatial:`` where the
    grid is regular)."""
    resampling = RESAMPLING[method]
    sizes = {d: int(ds0.sizes[d]) for d in (lay.ydim, lay.xdim)}
    transform0 = None
    ny, nx = sizes[lay.ydim], sizes[lay.xdim]
    if lay.ydim in ds0.variables and lay.xdim in ds0.variables \
            and ds0[lay.ydim].ndim == 1 and ds0[lay.xdim].ndim == 1:
        y = np.asarray(ds0[lay.ydim].values, dtype=np.float64)
        x = np.asarray(ds0[lay.xdim].values, dtype=np.float64)
        dy, dx = _regular(y), _regular(x)
        if dy is not None and dx is not None:
            # pixel registration: the transform's origin is the outer corner of cell (0, 0)
            transform0 = [dx, 0.0, float(x[0]) - dx / 2, 0.0, dy, float(y[0]) - dy / 2]
    layout = []
    for k in range(n_levels):
        f = 2.0 ** k
        entry: dict[str, Any] = {"asset": str(k)}
        if k:
            entry["derived_from"] = "0"
        entry["transform"] = {"scale": [f, f], "translation": [0.0, 0.0]}
        if k:
            entry["resampling_method"] = resampling
        if transform0 is not None:
            a, _, c, _, e, fo = transform0
            entry["spatial:transform"] = [a * f, 0.0, c, 0.0, e * f, fo]
        # OpenLayers' GeoZarr source (ol/source/GeoZarr.js, configureLevels_) takes a store
        # whose layout levels all declare spatial:shape next to a spatial:bbox to be
        # north-up; a south-up grid (ascending y) then draws upside down, so its levels do
        # not declare spatial:shape (readers take the shape from the arrays instead).
        if transform0 is None or transform0[4] < 0:
            entry["spatial:shape"] = [level_sizes(ny, k), level_sizes(nx, k)]
        layout.append(entry)
    attrs: dict[str, Any] = {
        "zarr_conventions": [MULTISCALES_CONVENTION, SPATIAL_CONVENTION],
        "multiscales": {"layout": layout, "resampling_method": resampling},
        "spatial:dimensions": [lay.ydim, lay.xdim],
    }
    if transform0 is not None:
        a, _, c, _, e, fo = transform0
        xs, ys = (c, c + a * nx), (fo, fo + e * ny)
        attrs["spatial:transform"] = transform0
        attrs["spatial:bbox"] = [min(xs), min(ys), max(xs), max(ys)]
        attrs["spatial:registration"] = "pixel"
    return attrs


# --------------------------------------------------------------------------- the command


def pyramid(source: str, output: str, *, levels: int | str | None = None, method: str = "mean",
            overwrite: bool = False, storage_options: dict | None = None,
            progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write a multiscale pyramid of ``source`` (anything :func:`zarrport.open_dataset`
    opens) to ``output`` (a local directory, Zarr v3). Returns the summary (also what
    ``--json`` prints). ``levels`` counts level 0; by default levels are added until the
    larger spatial side is at most 256. ``progress(k, n)`` is called as each level starts."""
    from zarrport.open import detect, open_dataset

    t0 = time.perf_counter()
    if method not in METHODS:
        raise InvalidArgumentError(
            f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    n_wanted = _parse_levels(levels)
    src_url = storage.normalize_url(source)
    out = local_output(src_url, output, "pyramid")
    _clear(out, overwrite)  # refuse early, before reading anything
    kind = detect(src_url, storage_options)
    if kind == "batch":
        raise InvalidArgumentError(
            f"{source} is a batch output: make a pyramid of one of its collections (zarrport "
            f"info {source} lists them)")

    opts = {"decode_times": False, "decode_timedelta": False}
    ds = open_dataset(src_url, storage_options=storage_options, mask_and_scale=method == "mean",
                      **opts)
    ds_dec = ds if method == "mean" else open_dataset(
        src_url, storage_options=storage_options, mask_and_scale=True, **opts)
    lay = plan_layout(ds, source)
    sizes = {str(d): int(n) for d, n in ds.sizes.items()}
    most = possible_levels(sizes, lay.spatial_dims)
    if n_wanted is None:
        n_levels = default_levels(sizes, lay.spatial_dims)
    elif n_wanted > most:
        sides = " x ".join(f"{d} {sizes[d]}" for d in lay.spatial_dims)
        raise InvalidArgumentError(
            f"--levels {n_wanted}: a grid of {sides} makes at most {most} level"
            f"{'s' if most != 1 else ''} (the last one cell wide)")
    else:
        n_levels = n_wanted

    _clear(out, overwrite)
    _remove(out)
    marker = {"status": "incomplete", "command": "pyramid", "source": src_url,
              "method": method, "levels": n_levels}
    global_attrs = {k: v for k, v in ds.attrs.items() if k != MARKER}
    summary_levels = []
    try:
        import xarray as xr

        root = xr.Dataset(attrs={**global_attrs, MARKER: marker})
        _write(root, {}, out, group=None)
        for k in range(n_levels):
            if progress is not None:
                progress(k, n_levels)
            if k == 0:
                data, coords, extra = _level0(ds, ds_dec, lay, method)
            else:
                data, coords, extra = _next_level(out, k, lay, method)
            lds, enc = _level_dataset(k, data, coords, extra, global_attrs, marker, method,
                                      lay.spatial_dims)
            _write(lds, enc, out, group=str(k))
            summary_levels.append({
                "level": k, "path": str(k), "scale": 2 ** k,
                "sizes": {d: int(lds.sizes[d]) for d in lay.spatial_dims},
                "variables": {n: list(lds[n].shape) for n in lay.names},
                "chunks": {n: list(enc[n]["chunks"]) for n in lay.names},
                "bytes_written": _dir_bytes(out / str(k))})
        ds0 = xr.open_zarr(str(out), group="0", consolidated=False, decode_times=False)
        ms = multiscales_attrs(n_levels, method, ds0, lay)
        _finish(out, n_levels, ms)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return {
        "source": src_url, "output": str(out), "method": method,
        "resampling_method": RESAMPLING[method], "boundary": "pad",
        "levels": summary_levels, "variables": lay.names,
        "spatial_dimensions": [lay.ydim, lay.xdim],
        "bounds": sorted(set(lay.bounds.values()) & set(ds.variables)),
        "left_out": lay.left_out,
        "bytes_written": _dir_bytes(out),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _parse_levels(levels: int | str | None) -> int | None:
    if levels is None:
        return None
    try:
        n = int(str(levels).strip())
    except ValueError as err:
        raise InvalidArgumentError(f"--levels must be a whole number, got {levels!r}") from err
    if n < 1:
        raise InvalidArgumentError(f"--levels must be at least 1 (level 0 is the full "
                                   f"resolution), got {n}")
    return n


def _level0(ds: Any, ds_dec: Any, lay: Layout, method: str
            ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Level 0: the source, read in whole source chunks, in target chunks."""
    import xarray as xr

    data = {}
    for n in lay.names:
        v = ds[n].variable
        target = _target_chunks(v.dims, v.shape, lay.spatial_dims)
        arr = v.chunk(dict(zip(v.dims, _aligned_chunks(ds[n], target), strict=True))).data
        attrs = dict(v.attrs)
        if method == "mean":
            arr = arr.astype(mean_dtype(arr.dtype))
            if "scale_factor" in v.encoding or "add_offset" in v.encoding:
                attrs = {a: x for a, x in attrs.items() if a not in _PACKED_ATTRS}
        data[n] = xr.Variable(v.dims, arr.rechunk(target), attrs)
    coords = {}
    for c in ds_dec.coords:
        v = ds_dec[c].variable
        if v.ndim >= 2 and any(d in lay.spatial_dims for d in v.dims):
            target = _target_chunks(v.dims, v.shape, lay.spatial_dims)
            v = v.chunk(dict(zip(v.dims, _aligned_chunks(ds_dec[c], target), strict=True)))
            v = xr.Variable(v.dims, v.data.rechunk(target), v.attrs)
        else:
            v = xr.Variable(v.dims, v.values, v.attrs)
        coords[str(c)] = v
    extra = {}
    for b in sorted(set(lay.bounds.values())):
        if b in ds_dec.data_vars:
            v = ds_dec[b].variable
            if v.ndim >= 2 and sum(d in lay.spatial_dims for d in v.dims) >= 2:
                # curvilinear bounds are as big as the grid: in chunks, like the data
                target = _target_chunks(v.dims, v.shape, lay.spatial_dims)
                v = v.chunk(dict(zip(v.dims, _aligned_chunks(ds_dec[b], target), strict=True)))
                extra[b] = xr.Variable(v.dims, v.data.rechunk(target), v.attrs)
            else:
                extra[b] = xr.Variable(v.dims, v.values, v.attrs)
    for a in lay.aux:
        v = ds[a].variable
        extra[a] = xr.Variable(v.dims, v.values, v.attrs)
    return data, coords, extra


def _next_level(out: Path, k: int, lay: Layout, method: str
                ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Level ``k`` from level ``k-1`` as written (chunks of 256 along the spatial dims)."""
    import xarray as xr

    kw = {"consolidated": False, "decode_times": False, "decode_timedelta": False,
          "chunks": {}}
    prev_dec = xr.open_zarr(str(out), group=str(k - 1), **kw)
    prev = prev_dec if method == "mean" else xr.open_zarr(
        str(out), group=str(k - 1), mask_and_scale=False, **kw)
    spatial = lay.spatial_dims
    data = {}
    for n in lay.names:
        v = prev[n].variable
        axes = tuple(i for i, d in enumerate(v.dims) if d in spatial)
        fill = _fills(v.attrs) if method == "mode" else None
        arr = coarsen_dask(v.data, axes, method, fill=fill)
        target = _target_chunks(v.dims, arr.shape, spatial)
        data[n] = xr.Variable(v.dims, arr.rechunk(target), dict(v.attrs))
    spatial_bounds = set()
    coords = {}
    for c in prev_dec.coords:
        v = prev_dec[c].variable
        if any(d in spatial for d in v.dims):
            if c in lay.bounds.values():  # bounds would be wrong coarsened: dropped
                continue
            if c in lay.bounds:
                spatial_bounds.add(lay.bounds[str(c)])
            coords[str(c)] = _coarsen_coord(v, spatial)
        else:
            coords[str(c)] = xr.Variable(v.dims, v.values, v.attrs)
    extra = {}
    for b in sorted(set(lay.bounds.values()) - spatial_bounds):
        if b in prev_dec.data_vars and not any(d in spatial for d in prev_dec[b].dims):
            v = prev_dec[b].variable
            extra[b] = xr.Variable(v.dims, v.values, v.attrs)
    for a in lay.aux:
        if a in prev.variables:
            v = prev[a].variable
            # GDAL's GeoTransform describes level 0's cells
            attrs = {x: y for x, y in v.attrs.items() if x != "GeoTransform"}
            extra[a] = xr.Variable(v.dims, v.values, attrs)
    return data, coords, extra


def _finish(out: Path, n_levels: int, ms: dict[str, Any]) -> None:
    import zarr

    finished = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    for k in range(n_levels):
        g = zarr.open_group(str(out), path=str(k), mode="r+", zarr_format=3)
        g.attrs[MARKER] = dict(g.attrs.get(MARKER) or {}, status="complete", finished=finished)
    root = zarr.open_group(str(out), mode="r+", zarr_format=3)
    rec = dict(root.attrs.get(MARKER) or {}, status="complete", finished=finished)
    root.attrs.update({**ms, MARKER: rec})  # the multiscales and the marker in one write
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata is not in the v3 spec yet
        for k in range(n_levels):  # each level opens on its own too (xarray, zarrport)
            zarr.consolidate_metadata(str(out), path=str(k))
        zarr.consolidate_metadata(str(out))
