"""Chunking guidelines: warnings about how a referenced variable will read.

The checks look at the chunks a reader of the *virtual* dataset fetches one request at a
time: the source's own chunks for a referenced chunked variable, one record for a NetCDF-3
record variable, the byte-range sub-chunks for an uncompressed contiguous variable. Inlined
variables are read whole from the output and refused ones are not read at all, so they get
no warnings.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

#: a chunk this many elements or more along a spatial (last two) dimension is a "large tile"
LARGE_SPATIAL_CHUNK = 1000
#: chunks smaller than this (uncompressed) are "tiny" ...
TINY_CHUNK_BYTES = 64 * 2**10
#: ... when there are more than this many of them
TINY_CHUNK_COUNT = 1000

CONTIGUOUS = "contiguous"
SINGLE_PIXEL = "single_pixel_chunks"
LARGE_SPATIAL = "large_spatial_chunks"
TINY = "tiny_chunks"


@dataclass(frozen=True)
class GuidelineWarning:
    """One guideline a variable's chunking breaks: a stable ``code`` and a sentence."""

    code: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KB' (powers of 1024)."""
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def chunk_warnings(
    *,
    layout: str,
    dims: tuple[str, ...],
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    itemsize: int | None,
    n_chunks: int,
    subchunked: bool = False,
) -> list[GuidelineWarning]:
    """Warnings for a variable read through ``chunks`` (``n_chunks`` of them).

    ``itemsize`` None (strings, objects): the byte-size check is skipped.
    ``subchunked``: ``chunks`` are byte-range pieces of a contiguous variable.
    """
    out: list[GuidelineWarning] = []
    chunk_bytes = math.prod(chunks) * itemsize if itemsize is not None else None
    if layout == "contiguous":
        if subchunked and tuple(chunks) != tuple(shape):
            how = (f"the references split it into {n_chunks} byte-range pieces of shape "
                   f"{tuple(chunks)}, so every read pulls at least one whole piece"
                   + (f" ({human_bytes(chunk_bytes)})" if chunk_bytes is not None else ""))
        else:
            how = "the references keep it as one piece, so every read pulls the whole variable"
            if chunk_bytes is not None:
                how += f" ({human_bytes(chunk_bytes)})"
        out.append(GuidelineWarning(CONTIGUOUS, f"contiguous layout (not chunked): {how}"))
    if len(shape) >= 2:
        sy, sx = shape[-2], shape[-1]
        cy, cx = chunks[-2], chunks[-1]
        if cy == 1 and cx == 1 and sy > 1 and sx > 1:
            out.append(GuidelineWarning(
                SINGLE_PIXEL,
                f"single-pixel spatial chunks (1 x 1 over {dims[-2]} x {dims[-1]}): reading a "
                f"map takes {sy * sx} requests, very slow",
            ))
        big = [f"{d}={c}" for d, c in zip(dims[-2:], (cy, cx), strict=True)
               if c > LARGE_SPATIAL_CHUNK]
        if big:
            out.append(GuidelineWarning(
                LARGE_SPATIAL,
                f"spatial chunks over {LARGE_SPATIAL_CHUNK} ({', '.join(big)}): reading a "
                "small region pulls a large tile, slow",
            ))
    if chunk_bytes is not None and chunk_bytes < TINY_CHUNK_BYTES and n_chunks > TINY_CHUNK_COUNT:
        out.append(GuidelineWarning(
            TINY,
            f"{n_chunks} chunks of {human_bytes(chunk_bytes)} (under "
            f"{human_bytes(TINY_CHUNK_BYTES)}, more than {TINY_CHUNK_COUNT}): many small "
            "requests, slow to read and to list",
        ))
    return out
