"""Chunk plans: what chunking a physical copy should have for how it will be read.

A :class:`Plan` holds one :class:`VariablePlan` per variable: the target chunk (and shard)
shape, why it was chosen, the source chunks a conversion reads, the *aligned region* -- the
smallest block that is a whole multiple of both the source chunks and the target shards (or
chunks) along every dimension, so that each source chunk is read once and each shard is
written by one job -- and what three typical reads cost before and after: one point's full
series, one full map and one 256x256 tile.

The planner works on metadata only (``xarray.Dataset`` variables with their ``encoding``);
nothing is read. It is memory-aware: a region must fit a worker's ``--max-memory``, counting
the decompressed source reads, the target buffer and the codec's working copies, so where the
access pattern asks for more (a full-length time series from one-day source chunks that each
hold a whole field needs every field at once) it shortens the chunk along the dimension that
drives the region and says so in the reasoning.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zarrport.errors import InvalidArgumentError, ZarrportError
from zarrport.inspect.guidelines import human_bytes

MB = 2**20
GB = 2**30

PATTERNS = ("timeseries", "spatial", "balanced", "auto")

#: target object size range per storage kind (bytes): what one GET / one file should hold
STORAGE_TARGETS: dict[str, tuple[int, int]] = {
    "cloud": (10 * MB, 100 * MB),
    "ssd": (1 * MB, 10 * MB),
    "hpc": (100 * MB, 500 * MB),
}
#: the size aimed for inside that range, unless --target-chunk-mb says otherwise
STORAGE_DEFAULT: dict[str, int] = {"cloud": 32 * MB, "ssd": 4 * MB, "hpc": 200 * MB}
#: with shards, the shard takes the storage size and inner chunks are this much smaller
#: (each at least 1 MB on cloud and HPC, 256 KB on SSD): a read fetches an inner chunk
SHARD_INNER: dict[str, int] = {"cloud": 1 * MB, "ssd": 256 * 2**10, "hpc": 4 * MB}

#: what a worker process holds before it reads anything (Python, numpy, xarray, zarr, HDF5,
#: netCDF4; measured around 250-350 MB RSS on CPython 3.13): --max-memory minus this is
#: the budget for data
WORKER_BASELINE = 384 * MB
#: how many chunks zarr-python encodes at once (``async.concurrency``): each holds a raw and
#: a compressed copy while the codec works
CODEC_CONCURRENCY = 10

TILE = 256
#: the most time steps a chunk planned for maps holds (without shards)
MAX_MAP_STEPS = 8

_TIME_NAMES = {"time", "t", "valid_time", "init_time", "forecast_time", "date", "step"}
_Y_NAMES = {"lat", "latitude", "y", "rlat", "nlat", "j", "yc", "south_north", "rows"}
_X_NAMES = {"lon", "longitude", "x", "rlon", "nlon", "i", "xc", "west_east", "cols", "values"}


class PlanError(ZarrportError, ValueError):
    """A plan that cannot be carried out (a region larger than the memory limit)."""

    code = "invalid_argument"


def parse_size(text: str | int | float | None, *, what: str = "--max-memory") -> int | None:
    """'2GB', '512MB', '1.5 GiB', 2e9 -> bytes (powers of 1024 for the units)."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)i?b?\s*", str(text), re.IGNORECASE)
    if not m:
        raise InvalidArgumentError(f"{what} wants a size such as 2GB or 512MB, got {text!r}")
    scale = {"": 1, "k": 2**10, "m": MB, "g": GB, "t": 2**40}[m.group(2).lower()]
    size = int(float(m.group(1)) * scale)
    if size <= 0:
        raise InvalidArgumentError(f"{what} must be more than 0, got {text!r}")
    return size


def memory_limit(value: str | int | None, *, who: str = "a worker") -> int | None:
    """``--max-memory`` in bytes, refused when it leaves nothing beyond what ``who`` (a
    worker process) holds before reading anything (:data:`WORKER_BASELINE`)."""
    limit = parse_size(value)
    if limit is not None and limit <= WORKER_BASELINE:
        raise InvalidArgumentError(
            f"--max-memory {human_bytes(limit)} is below what {who} needs before reading "
            f"anything ({human_bytes(WORKER_BASELINE)}); give at least "
            f"{human_bytes(WORKER_BASELINE + 64 * MB)}")
    return limit


# --------------------------------------------------------------------------- the model


@dataclass
class ReadCost:
    chunks: int
    bytes: int


@dataclass
class VariablePlan:
    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    source_chunks: tuple[int, ...]
    source_layout: str  # "chunked" | "contiguous" | "dask"
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    region: tuple[int, ...]
    region_bytes: int
    footprint_bytes: int
    reasoning: list[str] = field(default_factory=list)
    reads: dict[str, dict[str, ReadCost]] = field(default_factory=dict)

    @property
    def write_unit(self) -> tuple[int, ...]:
        return self.shards or self.chunks

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reads"] = {k: {w: asdict(c) if isinstance(c, ReadCost) else c for w, c in v.items()}
                      for k, v in self.reads.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VariablePlan:
        kw = dict(d)
        for k in ("dims", "shape", "source_chunks", "chunks", "region"):
            kw[k] = tuple(kw[k])
        kw["shards"] = tuple(kw["shards"]) if kw.get("shards") else None
        kw["reads"] = {k: {w: ReadCost(**c) for w, c in v.items()}
                       for k, v in (kw.get("reads") or {}).items()}
        return cls(**kw)


@dataclass
class Plan:
    source: str
    pattern: str
    storage: str
    target_chunk_bytes: int
    shards: bool
    max_memory: int
    variables: dict[str, VariablePlan]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "pattern": self.pattern, "storage": self.storage,
                "target_chunk_bytes": self.target_chunk_bytes, "shards": self.shards,
                "max_memory": self.max_memory,
                "variables": {k: v.to_dict() for k, v in self.variables.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        try:
            return cls(source=d["source"], pattern=d["pattern"], storage=d["storage"],
                       target_chunk_bytes=int(d["target_chunk_bytes"]),
                       shards=bool(d["shards"]), max_memory=int(d["max_memory"]),
                       variables={k: VariablePlan.from_dict(v)
                                  for k, v in d["variables"].items()})
        except (KeyError, TypeError, ValueError) as err:
            raise InvalidArgumentError(f"not a zarrport plan (missing or bad {err})") from err

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        p = Path(path)
        if not p.is_file():
            raise InvalidArgumentError(f"--plan {path}: no such file")
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except ValueError as err:
            if isinstance(err, ZarrportError):
                raise InvalidArgumentError(f"--plan {path}: {err}") from err
            raise InvalidArgumentError(f"--plan {path}: not JSON ({err})") from err


# --------------------------------------------------------------------------- roles of dims


def dim_roles(ds: Any, var: str) -> dict[str, str]:
    """'time', 'y', 'x' or 'other' per dimension of ``var`` (CF axis, units, names)."""
    v = ds[var]
    roles: dict[str, str] = {}
    for d in v.dims:
        c = ds.variables.get(d)
        attrs = dict(getattr(c, "attrs", {}) or {}) if c is not None else {}
        axis = str(attrs.get("axis", "")).upper()
        units = str(attrs.get("units", ""))
        std = str(attrs.get("standard_name", ""))
        name = re.sub(r"_\d+$", "", d.lower())  # values_4, latitude_1: numbered copies
        if axis == "T" or " since " in units or std == "time" or name in _TIME_NAMES or (
                c is not None and np.dtype(c.dtype).kind == "M"):
            roles[d] = "time"
        elif axis == "Y" or std in ("latitude", "projection_y_coordinate", "grid_latitude") \
                or units.startswith("degrees_n") or name in _Y_NAMES:
            roles[d] = "y"
        elif axis == "X" or std in ("longitude", "projection_x_coordinate", "grid_longitude") \
                or units.startswith("degrees_e") or name in _X_NAMES:
            roles[d] = "x"
        else:
            roles[d] = "other"
    # without names to go by, the last two dimensions of a >=2-D field are its space
    spatial = [d for d in v.dims if roles[d] in ("y", "x")]
    if not spatial and v.ndim >= 2:
        roles[v.dims[-2]], roles[v.dims[-1]] = "y", "x"
    if "time" not in roles.values() and v.ndim >= 3 and roles[v.dims[0]] == "other":
        roles[v.dims[0]] = "time"
    return roles


def source_chunking(var: Any) -> tuple[tuple[int, ...], str]:
    """The source's chunk shape and layout from xarray's ``encoding`` (any backend)."""
    enc = var.encoding
    shape = tuple(int(n) for n in var.shape)
    pref = enc.get("preferred_chunks")
    if pref:
        chunks = tuple(int(pref.get(d, n)) for d, n in zip(var.dims, shape, strict=True))
        return tuple(max(1, min(c, n)) for c, n in zip(chunks, shape, strict=True)), "chunked"
    for key in ("chunksizes", "chunks"):
        c = enc.get(key)
        if c and len(c) == len(shape):
            return tuple(max(1, min(int(a), n)) for a, n in zip(c, shape, strict=True)), \
                "chunked"
    data = var.variable._data
    dchunks = getattr(data, "chunks", None)
    if dchunks and isinstance(dchunks[0], tuple):
        return tuple(int(c[0]) if c else 1 for c in dchunks), "dask"
    # no chunks recorded: contiguous storage, any block of which reads only its own bytes
    return tuple(1 for _ in shape), "contiguous"


# --------------------------------------------------------------------------- geometry


def region_shape(shape: tuple[int, ...], source_chunks: tuple[int, ...],
                 unit: tuple[int, ...]) -> tuple[int, ...]:
    """Per dimension, the least common multiple of source chunk and write unit (capped at
    the dimension's length): the smallest block both grids agree on."""
    return tuple(max(1, min(n, math.lcm(max(1, s), max(1, u))))
                 for n, s, u in zip(shape, source_chunks, unit, strict=True))


def footprint(region: tuple[int, ...], chunks: tuple[int, ...], src_itemsize: int,
              tgt_itemsize: int) -> int:
    """Bytes a worker holds while converting one region: the decompressed source reads, the
    target buffer, and the codec's working copies (raw + compressed per chunk in flight)."""
    elems = math.prod(region)
    chunk_elems = math.prod(chunks)
    n_chunks = math.prod(-(-r // max(1, c)) for r, c in zip(region, chunks, strict=True))
    codec = min(n_chunks, CODEC_CONCURRENCY) * chunk_elems * tgt_itemsize * 2
    return elems * src_itemsize + elems * tgt_itemsize + codec


def read_costs(shape: tuple[int, ...], roles: dict[str, str], dims: tuple[str, ...],
               chunks: tuple[int, ...], itemsize: int, contiguous: bool = False
               ) -> dict[str, ReadCost]:
    """Chunks (and their uncompressed bytes) touched by a point's full series, a full map
    (one step, all space) and a 256x256 tile (one step), for a chunk grid."""
    out: dict[str, ReadCost] = {}
    for read in ("point_series", "full_map", "tile_256"):
        sel = []
        for d, n in zip(dims, shape, strict=True):
            role = roles[d]
            if read == "point_series":
                sel.append(n if role == "time" else 1)
            elif role in ("y", "x"):
                sel.append(n if read == "full_map" else min(TILE, n))
            else:
                sel.append(1)
        if contiguous:  # reads exactly what is selected, in runs
            out[read] = ReadCost(chunks=1, bytes=math.prod(sel) * itemsize)
            continue
        n_chunks = math.prod(-(-s // max(1, c)) for s, c in zip(sel, chunks, strict=True))
        out[read] = ReadCost(chunks=n_chunks, bytes=n_chunks * math.prod(chunks) * itemsize)
    return out


def _nice(n: int, limit: int) -> int:
    """A round chunk length near ``n``: a power of two, or a divisor-friendly multiple."""
    n = max(1, min(n, limit))
    if n >= limit:
        return limit
    p = 2 ** int(math.log2(n))
    return p if n - p < p // 2 else min(limit, p + p // 2 if n < p + p // 2 else 2 * p)


# --------------------------------------------------------------------------- the planner


def _pattern_chunks(pattern: str, shape: tuple[int, ...], dims: tuple[str, ...],
                    roles: dict[str, str], itemsize: int, target: int
                    ) -> tuple[tuple[int, ...], str]:
    elems = max(1, target // itemsize)
    spatial = [i for i, d in enumerate(dims) if roles[d] in ("y", "x")]
    times = [i for i, d in enumerate(dims) if roles[d] == "time"]
    chunks = [1] * len(shape)
    if not spatial and not times:
        pattern = "balanced"  # nothing to read along: cut evenly
    if pattern == "spatial" and len(spatial) == 1:  # unstructured / HEALPix: one dimension
        i = spatial[0]
        chunks[i] = min(shape[i], elems)
        steps = max(1, min(MAX_MAP_STEPS, elems // max(1, shape[i])))
        for t in times:
            chunks[t] = _nice(steps, shape[t]) if steps > 1 else 1
        return tuple(chunks), (f"maps on one spatial dimension: {chunks[i]} points per chunk")
    if pattern == "timeseries":
        for i in times:
            chunks[i] = shape[i]
        per_point = math.prod(shape[i] for i in times) or 1
        area = max(1, elems // per_point)
        side = max(1, int(math.sqrt(area)))
        for i in spatial:
            chunks[i] = _nice(side, shape[i])
        # a dimension smaller than the side gives its share to the other
        if len(spatial) == 2:
            a, b = spatial
            if chunks[a] == shape[a]:
                chunks[b] = _nice(max(1, area // shape[a]), shape[b])
            elif chunks[b] == shape[b]:
                chunks[a] = _nice(max(1, area // shape[b]), shape[a])
        why = (f"time series: whole {', '.join(dims[i] for i in times) or 'leading'} "
               f"axis per chunk, space split to about {human_bytes(target)}")
    elif pattern == "spatial":
        field_elems = math.prod(shape[i] for i in spatial) or 1
        if field_elems <= elems:
            for i in spatial:
                chunks[i] = shape[i]
            # a map read fetches every step in its chunk: a few, however small the field
            steps = max(1, min(MAX_MAP_STEPS, elems // field_elems))
            for i in times:
                chunks[i] = _nice(steps, shape[i]) if steps > 1 else 1
            why = (f"maps: whole fields per chunk ({human_bytes(field_elems * itemsize)} "
                   f"each), {chunks[times[0]] if times else 1} step(s) per chunk")
        else:
            side = max(TILE, TILE * int(math.sqrt(elems) // TILE))
            for i in spatial:
                chunks[i] = min(shape[i], side)
            why = f"maps: one step per chunk, space in {side}x{side} tiles (multiples of 256)"
    else:  # balanced
        frac = (elems / max(1, math.prod(shape))) ** (1 / max(1, len(shape)))
        for i, n in enumerate(shape):
            chunks[i] = max(1, min(n, math.ceil(n * frac)))
        why = "balanced: every dimension cut by the same fraction"
    return tuple(chunks), why


def _auto_pattern(shape: tuple[int, ...], dims: tuple[str, ...], roles: dict[str, str]) -> tuple[
        str, str]:
    n_time = math.prod(n for d, n in zip(dims, shape, strict=True) if roles[d] == "time")
    has_space = any(roles[d] in ("y", "x") for d in dims)
    if not has_space:
        return "timeseries", "auto: no spatial dimensions, so whole series"
    if n_time <= 1:
        return "spatial", "auto: a single time step, so chunked for maps"
    if n_time < 32:
        return "spatial", f"auto: only {n_time} steps, so chunked for maps"
    return "balanced", f"auto: {n_time} steps and a spatial grid, so balanced between series " \
        "and maps"


def _shard_split(chunks: tuple[int, ...], shape: tuple[int, ...], dims: tuple[str, ...],
                 roles: dict[str, str], itemsize: int, inner: int, pattern: str
                 ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shards take the planned shape; inner chunks split it down to about ``inner`` bytes,
    each dividing the shard evenly (as the sharding codec requires). The split keeps whole
    what the pattern reads at once: the time axis for series, the field for maps."""
    shard = list(chunks)
    inner_c = list(chunks)
    keep = {"timeseries": {"time"}, "spatial": {"y", "x"}}.get(pattern, set())

    def rank(i: int) -> tuple[int, int]:
        return (roles[dims[i]] in keep, -inner_c[i])

    while math.prod(inner_c) * itemsize > 2 * inner:
        for i in sorted(range(len(shape)), key=rank):
            d = next((d for d in range(inner_c[i] // 2, 0, -1) if shard[i] % d == 0), None)
            if inner_c[i] > 1 and d:
                inner_c[i] = d
                break
        else:
            break
    return tuple(inner_c), tuple(shard)


def plan_variable(ds: Any, name: str, *, pattern: str = "auto", storage: str = "cloud",
                  target_chunk_bytes: int | None = None, shards: bool = False,
                  max_memory: int | None = 2 * GB, chunks: tuple[int, ...] | None = None,
                  target_dtype: Any = None) -> VariablePlan:
    """The plan for one variable of ``ds`` (opened lazily; encodings as backends give them).
    ``chunks`` forces the chunk shape (then only alignment and memory are checked)."""
    v = ds[name]
    dims = tuple(str(d) for d in v.dims)
    shape = tuple(int(n) for n in v.shape)
    dtype = np.dtype(v.dtype)
    tgt = np.dtype(target_dtype) if target_dtype is not None else dtype
    roles = dim_roles(ds, name)
    src_chunks, layout = source_chunking(v)
    target = target_chunk_bytes or STORAGE_DEFAULT[storage]
    reasoning: list[str] = []
    lo, hi = STORAGE_TARGETS[storage]
    nbytes = math.prod(shape) * tgt.itemsize
    pat = pattern
    if chunks is None and nbytes <= target:
        c = tuple(max(1, n) for n in shape)  # bounds and other small variables: one chunk
        reasoning.append(f"small ({human_bytes(nbytes)}): one chunk")
    elif chunks is None:
        if pattern == "auto":
            pat, why = _auto_pattern(shape, dims, roles)
            reasoning.append(why)
        c, why = _pattern_chunks(pat, shape, dims, roles, tgt.itemsize, target)
        reasoning.append(why)
        reasoning.append(f"{storage}: objects of {human_bytes(lo)}-{human_bytes(hi)}; aiming "
                         f"at {human_bytes(target)}")
    else:
        if len(chunks) != len(shape):
            raise InvalidArgumentError(
                f"{name}: chunks {chunks} do not match its dimensions {dims}", variable=name)
        c = tuple(max(1, min(int(a), n)) for a, n in zip(chunks, shape, strict=True))
        if not reasoning:
            reasoning.append("chunks given")
    shard_shape = None
    if shards and math.prod(c) * tgt.itemsize > 2 * SHARD_INNER[storage]:
        inner, shard_shape = _shard_split(c, shape, dims, roles, tgt.itemsize,
                                          SHARD_INNER[storage], pat)
        c = inner
        reasoning.append(f"shards of {human_bytes(math.prod(shard_shape) * tgt.itemsize)} "
                         f"hold inner chunks of {human_bytes(math.prod(c) * tgt.itemsize)}")
    unit = shard_shape or c
    budget = None if max_memory is None else max_memory - WORKER_BASELINE
    region = region_shape(shape, src_chunks, unit)
    fp = footprint(region, c, dtype.itemsize, tgt.itemsize)
    if budget is not None and fp > budget:
        c, shard_shape, region, fp, note = _fit(shape, dims, src_chunks, c, shard_shape,
                                                dtype.itemsize, tgt.itemsize, budget, name,
                                                max_memory)
        reasoning.append(note)
        if shard_shape is not None:  # inner chunks split again from the fitted shard
            c, shard_shape = _shard_split(shard_shape, shape, dims, roles, tgt.itemsize,
                                          SHARD_INNER[storage], pat)
            fp = footprint(region, c, dtype.itemsize, tgt.itemsize)
    if layout == "contiguous":
        reasoning.append("source is contiguous: any block reads only its own bytes")
    else:
        src_bytes = human_bytes(math.prod(src_chunks) * dtype.itemsize)
        reasoning.append(f"source chunks {src_chunks} ({src_bytes}); regions of {region} "
                         "are whole multiples of them and of the "
                         f"{'shards' if shard_shape else 'chunks'}")
    reads = {
        "before": read_costs(shape, roles, dims, src_chunks, dtype.itemsize,
                             contiguous=layout == "contiguous"),
        "after": read_costs(shape, roles, dims, c, tgt.itemsize),
    }
    return VariablePlan(
        name=name, dims=dims, shape=shape, dtype=str(tgt), source_chunks=src_chunks,
        source_layout=layout, chunks=tuple(c), shards=tuple(shard_shape) if shard_shape else None,
        region=region, region_bytes=math.prod(region) * dtype.itemsize, footprint_bytes=fp,
        reasoning=reasoning,
        reads={k: {"before": reads["before"][k], "after": reads["after"][k]}
               for k in reads["before"]})


def _fit(shape, dims, src_chunks, chunks, shard_shape, src_isz, tgt_isz, budget, name,
         max_memory):
    """Shorten the write unit along the dimension that makes the region large until the
    region fits ``budget``; a PlanError when even one source chunk does not fit."""
    c = list(chunks)
    sh = list(shard_shape) if shard_shape else None
    before = tuple(shard_shape or chunks)
    while True:
        unit = tuple(sh or c)
        region = region_shape(shape, src_chunks, unit)
        fp = footprint(region, tuple(c), src_isz, tgt_isz)
        if fp <= budget:
            break
        # the dimension whose region reaches furthest beyond one source chunk
        cands = [i for i in range(len(shape)) if unit[i] > 1 and region[i] > src_chunks[i]]
        cands = cands or [i for i in range(len(shape)) if unit[i] > 1 and region[i] > 1]
        if not cands:
            smallest = footprint(tuple(src_chunks), tuple(min(a, b) for a, b in zip(
                c, src_chunks, strict=True)), src_isz, tgt_isz)
            raise PlanError(
                f"{name}: one source chunk {tuple(src_chunks)} already needs "
                f"{human_bytes(smallest)} to convert, more than --max-memory "
                f"{human_bytes(max_memory)} leaves for data after a worker's own "
                f"{human_bytes(WORKER_BASELINE)}; raise --max-memory to at least "
                f"{human_bytes(smallest + WORKER_BASELINE)}", variable=name)
        i = max(cands, key=lambda k: region[k] / max(1, src_chunks[k]))
        # twice as many pieces along i, evenly sized: 10950 days become 2 x 5475, then
        # 4 x 2738 (not 4 x 2737 and a fifth piece of 2)
        u = sh if sh is not None else c
        pieces = 2 * -(-shape[i] // u[i])
        new = max(1, -(-shape[i] // pieces))
        if sh is not None:
            if c[i] >= sh[i] or new % c[i]:  # inner chunks must divide the shard
                c[i] = next(d for d in range(min(c[i], new), 0, -1) if new % d == 0)
            sh[i] = new
        else:
            c[i] = new
    after = tuple(sh or c)
    need = footprint(region_shape(shape, src_chunks, before), tuple(chunks), src_isz, tgt_isz)
    note = (f"a {'shard' if sh else 'chunk'} of {before} would need regions over "
            f"{human_bytes(need)}"
            f" with these source chunks; cut to {after} to stay within --max-memory "
            f"{human_bytes(max_memory)}")
    return tuple(c), tuple(sh) if sh else None, region, fp, note


def convertible_variables(ds: Any, variables: list[str] | None = None) -> list[str]:
    """The data variables a conversion plans (by default every data variable with at least
    one dimension); an unknown name is an error listing the variables."""
    names = [str(k) for k, v in ds.data_vars.items() if v.ndim >= 1]
    if not variables:
        return names
    missing = [v for v in variables if v not in ds.variables]
    if missing:
        raise InvalidArgumentError(
            f"no variable {', '.join(map(repr, missing))} in the source; it has "
            f"{', '.join(names) or 'no data variables'}")
    return list(variables)


def make_plan(ds: Any, source: str, *, pattern: str = "auto", storage: str = "cloud",
              target_chunk_bytes: int | None = None, shards: bool = False,
              max_memory: int | None = 2 * GB, variables: list[str] | None = None,
              target_dtypes: dict[str, Any] | None = None) -> Plan:
    """The :class:`Plan` for ``ds`` (a lazily opened source)."""
    if pattern not in PATTERNS:
        raise InvalidArgumentError(f"--pattern must be one of {', '.join(PATTERNS)}")
    if storage not in STORAGE_TARGETS:
        raise InvalidArgumentError(f"--storage must be one of {', '.join(STORAGE_TARGETS)}")
    memory_limit(max_memory)
    if target_chunk_bytes is not None and target_chunk_bytes < 1024:
        raise InvalidArgumentError("--target-chunk-mb must be at least 0.001 (1 KB)")
    names = convertible_variables(ds, variables)
    plans = {n: plan_variable(ds, n, pattern=pattern, storage=storage,
                              target_chunk_bytes=target_chunk_bytes, shards=shards,
                              max_memory=max_memory,
                              target_dtype=(target_dtypes or {}).get(n))
             for n in names}
    return Plan(source=source, pattern=pattern, storage=storage,
                target_chunk_bytes=target_chunk_bytes or STORAGE_DEFAULT[storage],
                shards=shards, max_memory=max_memory or 0, variables=plans)


def _check_shapes(name: str, vp: VariablePlan) -> None:
    """Chunks and shards of a plan given by hand: one positive length per dimension, shards
    whole multiples of the chunks (the sharding codec's rule)."""
    n = len(vp.dims)
    for what, t in (("chunks", vp.chunks), ("shards", vp.shards)):
        if t is None:
            continue
        if len(t) != n or any(int(c) < 1 for c in t):
            raise InvalidArgumentError(
                f"the plan's {what} for {name}, {list(t)}, must be {n} positive lengths, one "
                f"per dimension {vp.dims}", variable=name)
    if vp.shards is not None:
        bad = [d for d, s, c, m in zip(vp.dims, vp.shards, vp.chunks, vp.shape, strict=True)
               if s % c and s < m]
        if bad:
            raise InvalidArgumentError(
                f"the plan's shards for {name} {list(vp.shards)} are not whole multiples of "
                f"its chunks {list(vp.chunks)} along {', '.join(bad)}", variable=name)


def check_plan(plan: Plan, ds: Any, max_memory: int | None) -> None:
    """A plan given with --plan must name variables of this source with their shapes, and
    each of its regions must fit ``max_memory`` (an error saying which chunking would)."""
    for name, vp in plan.variables.items():
        _check_shapes(name, vp)
        if name not in ds.variables:
            raise InvalidArgumentError(
                f"the plan names variable {name!r}, which the source does not have; it has "
                f"{', '.join(map(str, ds.data_vars)) or 'no data variables'}", variable=name)
        shape = tuple(int(n) for n in ds[name].shape)
        if shape != tuple(vp.shape) or tuple(ds[name].dims) != tuple(vp.dims):
            raise InvalidArgumentError(
                f"the plan's {name} is {vp.dims} {vp.shape}, the source's is "
                f"{tuple(ds[name].dims)} {shape}: make the plan from this source "
                "(zarrport plan SOURCE --json > plan.json)", variable=name)
        have = np.dtype(ds[name].dtype)
        if np.dtype(vp.dtype) != have:
            raise InvalidArgumentError(
                f"the plan writes {name} as {vp.dtype}, but the source reads as {have} here "
                "(a plan made without --decoded used with --decoded, or the other way round); "
                "make the plan with the same --decoded, or edit its dtype", variable=name)
        if max_memory is None:
            continue
        src_chunks, _ = source_chunking(ds[name])
        region = region_shape(shape, src_chunks, vp.write_unit)
        fp = footprint(region, vp.chunks, np.dtype(ds[name].dtype).itemsize, vp.itemsize)
        if fp > max_memory - WORKER_BASELINE:
            fitted = plan_variable(ds, name, storage=plan.storage, shards=vp.shards is not None,
                                   max_memory=max_memory, chunks=vp.shards or vp.chunks,
                                   target_dtype=vp.dtype)
            raise PlanError(
                f"{name}: the plan's {'shards' if vp.shards else 'chunks'} {vp.write_unit} "
                f"over source chunks {src_chunks} make regions of {region} needing "
                f"{human_bytes(fp)} per worker, over --max-memory {human_bytes(max_memory)}; "
                f"{'shards' if fitted.shards else 'chunks'} {fitted.write_unit} would fit",
                variable=name)
