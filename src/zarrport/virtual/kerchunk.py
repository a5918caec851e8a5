"""VirtualDataset -> kerchunk references (version 1), written as JSON or Parquet.

Written here rather than with VirtualiZarr's ``dataset_to_kerchunk_refs`` because that
writer keys 0-d arrays ``name/`` instead of ``name/0`` (JSON reads NaN, Parquet raises; no
upstream issue found, related zarr-developers/VirtualiZarr#966) and puts the HDF5 fill
value into ``.zarray``, where xarray turns it into a mask: every 0 of an integer variable
would become NaN (zarr-developers/VirtualiZarr#414, fsspec/kerchunk#177). Both checked with
virtualizarr 2.8.0.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numcodecs
import numpy as np
import ujson

from zarrport.errors import MisalignedChunksError, UnsupportedVariableError
from zarrport.virtual.model import MISSING, VirtualDataset, VirtualVariable, exact_fill


def _json_value(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, np.generic):
        return _json_value(value.item())
    return value


def _attrs_json(attrs: dict[str, Any]) -> str:
    return ujson.dumps(attrs, reject_bytes=False, escape_forward_slashes=False)


def _v2_dtype(var: VirtualVariable) -> str:
    if var.dtype.kind == "O":
        return "|O"
    return var.dtype.str


def _zarray(var: VirtualVariable, chunks: tuple[int, ...], filters: list[dict] | None,
            fill_value: Any, compressor: dict[str, Any] | None = None) -> str:
    meta = {
        "zarr_format": 2,
        "shape": list(var.shape),
        "chunks": list(chunks),
        "dtype": _v2_dtype(var),
        "fill_value": _json_value(fill_value),
        "order": "C",
        "filters": filters or None,
        "compressor": compressor,
        "dimension_separator": ".",
    }
    return ujson.dumps(meta)


def _inline_bytes(var: VirtualVariable) -> tuple[bytes, list[dict] | None]:
    data = var.data
    assert data is not None
    if var.dtype.kind == "O":
        codec = numcodecs.VLenUTF8()
        return bytes(codec.encode(np.asarray(data, dtype=object).ravel())), [codec.get_config()]
    return np.ascontiguousarray(data, dtype=var.dtype).tobytes(), None


def _v2_serializer(name: str, var: VirtualVariable) -> dict[str, Any]:
    """The numcodecs form of a Zarr v3 array->bytes codec (GRIB: each chunk one message,
    :mod:`zarrport.grib.numcodec`), as the v2 ``compressor``; refused for any other."""
    if (var.serializer or {}).get("name") != "zarrport.grib":
        raise UnsupportedVariableError(
            f"variable {name!r}: its chunks are decoded by the Zarr v3 codec "
            f"{(var.serializer or {}).get('name')!r}, which has no Zarr v2 form -- write "
            "Icechunk (--format icechunk)", variable=name)
    from zarrport.grib.numcodec import v2_config

    return v2_config(var.serializer, var.dtype)  # type: ignore[arg-type]


def _cf_fill(var: VirtualVariable) -> Any:
    """The ``.zarray`` fill_value: the CF _FillValue attribute when it is exactly one value
    of the variable's type (xarray's Zarr engine then masks with it, as netCDF does); else
    null, and xarray masks with the ``_FillValue`` attribute as written, as it does for the
    netCDF file (:func:`~zarrport.virtual.model.exact_fill`)."""
    fill = var.attrs.get("_FillValue")
    if fill is None or var.dtype.kind == "O":
        return fill
    return exact_fill(fill, var.dtype)


def _key(idx: tuple[int, ...]) -> str:
    return ".".join(map(str, idx)) if idx else "0"


def to_refs(vds: VirtualDataset) -> dict[str, Any]:
    """The kerchunk reference dict (``{"version": 1, "refs": {...}}``)."""
    refs: dict[str, Any] = {
        ".zgroup": ujson.dumps({"zarr_format": 2}),
        ".zattrs": _attrs_json(vds.attrs),
    }
    for name, var in vds.variables.items():
        if var.native_chunks is not None and var.native_chunks.any():
            # kerchunk's MultiZarrToZarr (fsspec/kerchunk#430) reads another file's values
            # here without error; checked with kerchunk 0.2.10
            n = int(var.native_chunks.sum())
            raise MisalignedChunksError(
                f"variable {name!r}: {n} chunk(s) of the combined array would hold data of two "
                f"files (a file's length along the concatenation dimension is not a multiple "
                f"of its chunk length {var.chunks[var.concat_axis or 0]}); kerchunk references "
                f"cannot express that -- write Icechunk (--format icechunk), which stores those "
                f"chunks natively beside the virtual ones",
                variable=name,
            )
        compressor = None
        if var.serializer is not None:
            compressor = _v2_serializer(name, var)
        attrs = dict(var.attrs)
        attrs["_ARRAY_DIMENSIONS"] = list(var.dims)
        refs[f"{name}/.zattrs"] = _attrs_json(attrs)
        fill = _cf_fill(var) if compressor is None else var.fill_value
        if var.data is not None:
            raw, filters = _inline_bytes(var)
            # a zero-length dimension still needs a chunk length of at least 1
            chunks = tuple(max(s, 1) for s in var.shape)
            refs[f"{name}/.zarray"] = _zarray(var, chunks, filters, fill)
            if math.prod(var.shape) > 0:
                refs[f"{name}/{_key((0,) * len(var.shape))}"] = (
                    "base64:" + base64.b64encode(raw).decode()
                )
            continue
        refs[f"{name}/.zarray"] = _zarray(var, var.chunks, var.codecs, fill, compressor)
        if var.refs is None:
            continue
        src, off, ln = var.refs.source, var.refs.offset, var.refs.length
        # Chunks never written read as the HDF5 fill value. A v2 reader would fill them
        # with the .zarray fill_value (the CF _FillValue, or null -> 0); where those differ,
        # store an encoded fill chunk inline instead.
        fill_chunk: str | None = None
        hdf_fill = var.fill_value if var.fill_value is not None else 0
        v2_fill = fill if fill is not None else 0
        if (src == MISSING).any() and not _same_fill(hdf_fill, v2_fill):
            blob = np.full(var.chunks, hdf_fill, dtype=var.dtype).tobytes()
            for cfg in var.codecs:
                blob = bytes(numcodecs.get_codec(dict(cfg)).encode(blob))
            fill_chunk = "base64:" + base64.b64encode(blob).decode()
        sources = vds.sources
        for idx in np.ndindex(*src.shape) if src.shape else [()]:
            s = int(src[idx])
            if s == MISSING:
                if fill_chunk is not None:
                    refs[f"{name}/{_key(idx)}"] = fill_chunk
                continue
            refs[f"{name}/{_key(idx)}"] = [_target(sources[s]), int(off[idx]), int(ln[idx])]
    return {"version": 1, "refs": refs}


def _same_fill(a: Any, b: Any) -> bool:
    try:
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return bool(a == b)
    except Exception:
        return False


def _target(url: str) -> str:
    # kerchunk's convention (and fsspec's ReferenceFileSystem): local targets as plain paths
    return url.removeprefix("file://") if url.startswith("file:///") else url
