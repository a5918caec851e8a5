"""The ``zarrport.grib`` codec for Zarr v2 metadata (kerchunk JSON / Parquet references).

kerchunk's references are Zarr v2: a chunk's decoder can only be a numcodecs codec named
in ``.zarray``. :class:`GribNumcodec` is that codec -- the chunk is a whole GRIB message,
``decode`` gives the field's values in zarrport's layout (the same functions as the Zarr
v3 codec, :mod:`zarrport.grib.codec`), as the array's dtype. It is the ``compressor`` of
the array (filters none), so xarray's Zarr engine over fsspec's ``reference://`` and
zarrport's own reference reader both use it. Registered with numcodecs through the
``numcodecs.codecs`` entry point (pyproject.toml), so any process with zarrport installed
finds it, and on import of this module.

Configuration: ``{"id": "zarrport.grib", "layout": {...}, "decoder": "auto",
"dtype": "<f4"}`` plus ``message_field`` for a field of a multi-field message.
"""

from __future__ import annotations

from typing import Any

import numcodecs
import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray

from zarrport.grib.codec import CODEC_NAME, DECODERS, decode, grib2_field
from zarrport.grib.grid import Layout


class GribNumcodec(Codec):
    """Decode a chunk that is one GRIB message (read-only; see the module docstring)."""

    codec_id = CODEC_NAME

    def __init__(self, layout: dict[str, Any] | None = None, decoder: str = "auto",
                 dtype: str = "<f4", message_field: int | None = None) -> None:
        try:
            self.layout = Layout(**(layout or {"rows": 1, "cols": 1}))
        except TypeError as e:
            raise ValueError(f"invalid GRIB codec layout {layout!r}: {e}") from None
        if decoder not in DECODERS:
            raise ValueError(
                f"unknown GRIB decoder {decoder!r} (one of {', '.join(DECODERS)})")
        if message_field is not None and (not isinstance(message_field, int)
                                          or isinstance(message_field, bool)
                                          or message_field < 0):
            raise ValueError(f"GRIB codec message_field must be an integer >= 0, not "
                             f"{message_field!r}")
        self.decoder = decoder
        self.dtype = np.dtype(dtype)
        self.message_field = message_field

    def decode(self, buf: Any, out: Any = None) -> np.ndarray:
        message = ensure_contiguous_ndarray(buf).tobytes()
        if self.message_field is not None:
            message = grib2_field(message, self.message_field)
        values = np.ascontiguousarray(decode(message, self.layout, self.decoder, self.dtype))
        if out is not None:
            target = ensure_contiguous_ndarray(out).view(self.dtype)
            target[...] = values.ravel()
            return out
        return values.ravel()

    def encode(self, buf: Any) -> Any:
        raise NotImplementedError(
            "zarrport.grib is a read-only codec: chunks are GRIB messages referenced in place")

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"id": self.codec_id, "layout": self.layout.to_config(),
                                  "decoder": self.decoder, "dtype": self.dtype.str}
        if self.message_field is not None:
            config["message_field"] = self.message_field
        return config


def v2_config(serializer: dict[str, Any], dtype: np.dtype) -> dict[str, Any]:
    """The numcodecs config for a variable whose Zarr v3 serializer is ``zarrport.grib``."""
    cfg = dict(serializer.get("configuration") or {})
    if cfg.get("field", "values") != "values":
        raise ValueError("only GRIB values are referenced through kerchunk; coordinates are "
                         "inlined")
    out = {"id": CODEC_NAME, "layout": cfg["layout"], "decoder": cfg.get("decoder", "auto"),
           "dtype": np.dtype(dtype).str}
    if cfg.get("message_field") is not None:
        out["message_field"] = cfg["message_field"]
    return out


numcodecs.register_codec(GribNumcodec)
