"""Read stored (not CF-decoded) values through a VirtualDataset's own references.

Used to fill the native chunks of a combined dataset and by ``verify`` to read a reference
exactly as a Zarr reader would: fetch the byte range, undo the codecs, place the chunk.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numcodecs
import numpy as np

from zarrport import storage
from zarrport.virtual.model import MISSING, VirtualVariable


class ByteFetcher:
    """Byte ranges of the sources, one filesystem per source URL scheme."""

    def __init__(self, sources: list[str], storage_options: dict | None = None) -> None:
        self.sources = sources
        self.storage_options = storage_options
        self._fs: dict[int, tuple[Any, str]] = {}

    def __call__(self, source: int, offset: int, length: int) -> bytes:
        if source not in self._fs:
            self._fs[source] = storage.filesystem(self.sources[source], self.storage_options)
        fs, path = self._fs[source]
        return fs.cat_file(path, start=offset, end=offset + length)


def decode_chunk(var: VirtualVariable, raw: bytes) -> np.ndarray:
    buf: Any = raw
    for cfg in reversed(var.codecs):
        buf = numcodecs.get_codec(dict(cfg)).decode(buf)
    arr = np.frombuffer(memoryview(buf), dtype=var.dtype)
    n = math.prod(var.chunks)
    if arr.size != n:
        raise ValueError(f"chunk of {var.name!r} decodes to {arr.size} values, expected {n}")
    return arr.reshape(var.chunks)


def _fill(var: VirtualVariable, shape: tuple[int, ...]) -> np.ndarray:
    fill = var.fill_value if var.fill_value is not None else 0
    return np.full(shape, fill, dtype=var.dtype)


def read_region(var: VirtualVariable, region: tuple[slice, ...], fetch: ByteFetcher) -> np.ndarray:
    """Stored values of ``var[region]`` (slices with step 1, within bounds)."""
    region = tuple(slice(*s.indices(n)[:2]) for s, n in zip(region, var.shape, strict=True))
    out_shape = tuple(s.stop - s.start for s in region)
    if var.data is not None:
        return np.asarray(var.data[region])
    if var.parts:
        axis = var.concat_axis
        assert axis is not None
        out = np.empty(out_shape, dtype=var.dtype)
        lo, hi = region[axis].start, region[axis].stop
        for part in var.parts:
            n = part.variable.shape[axis]
            a, b = max(lo, part.start), min(hi, part.start + n)
            if a >= b:
                continue
            sub = list(region)
            sub[axis] = slice(a - part.start, b - part.start)
            dst = [slice(None)] * len(region)
            dst[axis] = slice(a - lo, b - lo)
            out[tuple(dst)] = read_region(part.variable, tuple(sub), fetch)
        return out
    out = _fill(var, out_shape)
    if var.refs is None or math.prod(out_shape) == 0:
        return out
    ranges = [range(s.start // c, (s.stop - 1) // c + 1) for s, c in zip(region, var.chunks,
                                                                          strict=True)]
    for idx in itertools.product(*ranges):
        src = int(var.refs.source[idx])
        if src == MISSING:
            continue
        chunk = decode_chunk(
            var, fetch(src, int(var.refs.offset[idx]), int(var.refs.length[idx]))
        )
        # intersection of this chunk with the region, in chunk and output coordinates
        csel, osel = [], []
        for i, (s, c) in zip(idx, zip(region, var.chunks, strict=True), strict=True):
            c0 = i * c
            a, b = max(s.start, c0), min(s.stop, c0 + c)
            csel.append(slice(a - c0, b - c0))
            osel.append(slice(a - s.start, b - s.start))
        out[tuple(osel)] = chunk[tuple(csel)]
    return out
