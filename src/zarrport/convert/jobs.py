"""Cutting a variable into jobs that never share a source chunk or a target shard.

Along each dimension, region boundaries are the positions (in output coordinates) where a
source chunk boundary and a target write-unit boundary (shard, or chunk without shards)
coincide, plus both ends. A selection that starts inside a source chunk shifts the source
grid by its offset; the rule is the same. Regions are then merged along one dimension into
jobs as large as the memory budget allows (fewer, larger reads), while keeping enough jobs
for every worker.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from zarrport.convert.plan import footprint


@dataclass(frozen=True)
class Job:
    """One unit of work: ``out`` (start, stop) per dimension in the output, ``src`` the same
    block in the source's own coordinates."""

    var: str
    index: int
    out: tuple[tuple[int, int], ...]
    src: tuple[tuple[int, int], ...]
    nbytes: int  # source bytes read (decompressed)

    @property
    def key(self) -> str:
        return f"{self.var}:{self.index}"

    def out_slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in self.out)

    def src_slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in self.src)


def boundaries(n: int, src_chunk: int, src_offset: int, unit: int) -> list[int]:
    """Positions 0..n where both grids have a boundary (always 0 and n)."""
    if n <= 0:
        return [0]
    p = np.arange(0, n + 1, max(1, unit), dtype=np.int64)
    p = p[((p + src_offset) % max(1, src_chunk)) == 0]
    out = sorted({0, n, *(int(x) for x in p)})
    return out


def regions(shape: tuple[int, ...], src_chunks: tuple[int, ...], offsets: tuple[int, ...],
            unit: tuple[int, ...]) -> list[list[int]]:
    """Boundaries per dimension (see :func:`boundaries`)."""
    return [boundaries(n, s, o, u)
            for n, s, o, u in zip(shape, src_chunks, offsets, unit, strict=True)]


def make_jobs(var: str, shape: tuple[int, ...], src_chunks: tuple[int, ...],
              offsets: tuple[int, ...], unit: tuple[int, ...], chunks: tuple[int, ...],
              src_itemsize: int, tgt_itemsize: int, budget: int | None,
              min_jobs: int = 1, max_job_bytes: int = 512 * 2**20) -> list[Job]:
    """The jobs for one variable. Each holds one or more consecutive regions along the
    dimension with the most regions, as many as fit ``budget`` (and ``max_job_bytes`` of
    source data, so progress stays visible), leaving at least ``min_jobs`` jobs where there
    are that many regions."""
    if not shape:
        return [Job(var, 0, (), (), src_itemsize)]
    if 0 in shape:  # an empty array: its metadata is all there is
        return []
    bounds = regions(shape, src_chunks, offsets, unit)
    if budget is not None:
        bounds = _within_budget(bounds, shape, unit, chunks, src_itemsize, tgt_itemsize,
                                budget, var)
    counts = [len(b) - 1 for b in bounds]
    n_regions = math.prod(counts)
    # merge along the dimension with the most regions
    axis = max(range(len(shape)), key=lambda i: counts[i])
    b = bounds[axis]
    other = [max(np.diff(bounds[i])) if i != axis else 1 for i in range(len(shape))]
    per_pos = math.prod(other)
    limit = budget if budget is not None else float("inf")
    cap_groups = max(1, math.ceil(min_jobs / max(1, n_regions // max(1, counts[axis]))))
    max_width = max(1, (counts[axis] // cap_groups)) if counts[axis] >= cap_groups else 1
    groups: list[tuple[int, int]] = []
    i = 0
    while i < counts[axis]:
        j = i + 1
        while j < counts[axis] and j - i < max_width:
            width = b[j + 1] - b[i]
            block = list(other)
            block[axis] = width
            if (footprint(tuple(block), chunks, src_itemsize, tgt_itemsize) > limit
                    or width * per_pos * src_itemsize > max_job_bytes):
                break
            j += 1
        groups.append((b[i], b[j]))
        i = j
    axes = [list(zip(bounds[k][:-1], bounds[k][1:], strict=True)) if k != axis else groups
            for k in range(len(shape))]
    jobs = []
    for idx, block in enumerate(itertools.product(*axes)):
        src = tuple((a + o, z + o) for (a, z), o in zip(block, offsets, strict=True))
        nbytes = math.prod(z - a for a, z in block) * src_itemsize
        jobs.append(Job(var, idx, tuple(block), src, nbytes))
    return jobs


def _largest(bounds: list[list[int]]) -> tuple[int, ...]:
    return tuple(int(max(np.diff(b))) for b in bounds)


def _within_budget(bounds: list[list[int]], shape: tuple[int, ...], unit: tuple[int, ...],
                   chunks: tuple[int, ...], src_isz: int, tgt_isz: int, budget: int,
                   var: str) -> list[list[int]]:
    """Where a selection starting inside a source chunk leaves the two grids no common edge
    for a long stretch (one region the whole dimension, over the memory budget), cut that
    dimension on the write-unit grid instead: source chunks at those edges are read by two
    jobs, but no two jobs write one shard."""
    bounds = [list(b) for b in bounds]
    while footprint(_largest(bounds), chunks, src_isz, tgt_isz) > budget:
        grid = [sorted({0, n, *range(0, n, max(1, u))}) for n, u in zip(shape, unit,
                                                                          strict=True)]
        cands = [i for i in range(len(shape)) if len(bounds[i]) < len(grid[i])]
        if not cands:
            from zarrport.convert.plan import PlanError
            from zarrport.inspect.guidelines import human_bytes

            raise PlanError(
                f"{var}: one block of {_largest(bounds)} needs "
                f"{human_bytes(footprint(_largest(bounds), chunks, src_isz, tgt_isz))}, over "
                f"the {human_bytes(budget)} a worker has for data; choose smaller chunks "
                "(zarrport plan ... --max-memory) or raise --max-memory", variable=var)
        i = max(cands, key=lambda k: max(np.diff(bounds[k])) / max(1, unit[k]))
        bounds[i] = grid[i]
    return bounds


def cuts_source_chunks(start: int, stop: int, n: int, src_chunk: int) -> tuple[int, int] | None:
    """For a selection ``start:stop`` of a dimension of length ``n`` chunked by
    ``src_chunk``: the aligned (wider) selection when it cuts chunks, else None."""
    a = (start // src_chunk) * src_chunk
    z = min(n, -(-stop // src_chunk) * src_chunk)
    return None if (a, z) == (start, stop) else (a, z)
