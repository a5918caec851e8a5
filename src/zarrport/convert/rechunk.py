"""``zarrport rechunk``: a Zarr store (v2 or v3, or an Icechunk repository) copied to Zarr v3
with other chunks, in memory-bounded jobs -- in one pass where it can, in two where it cannot.

One pass (:func:`zarrport.convert.writer.convert` with the target plan) reads regions that
are whole multiples of the source chunks and of the target shards (or chunks). When the two
grids are "orthogonal" -- one-day source chunks that each hold a whole field, target chunks
that each hold a point's whole series -- one such region is the whole array, more than a
worker may hold. Then the copy goes through an *intermediate* store, as rechunker does
(its "push / pull consolidated" algorithm; rechunker itself needs zarr < 3): stage 1 copies
the source into intermediate chunks, stage 2 copies those into the target chunks, and the
intermediate chunks are chosen so that each stage's regions fit ``--max-memory``:

* per dimension, they start at the greatest common divisor of the source chunk and the
  target write unit, so that a stage-1 region is one source chunk and a stage-2 region one
  target shard (the least memory two stages can need);
* then they grow, one step at a time along the dimension that keeps the larger of the two
  stages' footprints smallest, through lengths that divide (or are multiples of) both
  neighbours' chunks, as long as both stages fit and a chunk stays under
  :data:`INTERMEDIATE_MAX_CHUNK`: larger intermediate chunks are fewer files and fewer,
  larger reads in both stages.

The intermediate store sits next to the output (``OUT.rechunk-tmp``), is written with a fast
codec (blosc-lz4, level 1) and removed at the end. Both stages are ordinary conversions:
they resume when the same command runs again, and what they measure (jobs, peak RSS per
worker process) is in the summary per stage.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zarrport import storage
from zarrport.convert.plan import (
    GB,
    MB,
    PATTERNS,
    STORAGE_DEFAULT,
    STORAGE_TARGETS,
    WORKER_BASELINE,
    Plan,
    PlanError,
    VariablePlan,
    check_plan,
    footprint,
    memory_limit,
    plan_variable,
    region_shape,
    source_chunking,
)
from zarrport.errors import (
    InvalidArgumentError,
    OutputExistsError,
    OutputNotWritableError,
    UnrecognizedFormatError,
)
from zarrport.inspect.guidelines import human_bytes

#: the store kinds rechunk reads (what :func:`zarrport.open.detect` says)
STORE_KINDS = ("zarr", "icechunk")
#: suffix of the intermediate store, a sibling of the output
TMP_SUFFIX = ".rechunk-tmp"
#: codec of the intermediate store: fast, not small
TMP_CODEC, TMP_LEVEL = "blosc-lz4", 1
#: intermediate chunks grow no further than this (fewer files; bounded codec buffers)
INTERMEDIATE_MAX_CHUNK = 16 * MB
#: the record of a finished stage 1 inside the intermediate store
STAGE1_RECORD = "zarrport-rechunk.json"


# --------------------------------------------------------------------------- the algorithm


def _divisors(n: int) -> set[int]:
    out = set()
    for i in range(1, math.isqrt(max(1, n)) + 1):
        if n % i == 0:
            out.update((i, n // i))
    return out


def _ladder(step: int, n: int) -> set[int]:
    """Multiples of ``step`` up to ``n``: every one of the first 16, then about 25% apart."""
    out, k = set(), 1
    while step * k <= n:
        out.add(step * k)
        k = k + 1 if k < 16 else int(k * 1.25)
    return out


def _candidates(n: int, s: int, u: int) -> list[int]:
    """Lengths an intermediate chunk may have along a dimension of length ``n`` between a
    source chunk ``s`` and a write unit ``u``: divisors of either (a region of one stage then
    stays one chunk of the other), multiples of either (the whole-dimension case: a
    multiple of ``s`` costs stage 2 nothing when ``u`` spans the dimension) and the whole
    dimension. Which of them fit is the footprints' to say."""
    out = {v for v in _divisors(s) | _divisors(u) | _ladder(s, n) | _ladder(u, n) if v <= n}
    out.add(n)
    return sorted(out)


@dataclass
class StageCosts:
    """Footprints (bytes of data a worker holds) of one pass and of the two stages."""

    single: int
    stage1: int | None = None
    stage2: int | None = None


def stage_footprints(shape: tuple[int, ...], src_chunks: tuple[int, ...],
                     inter: tuple[int, ...], unit: tuple[int, ...], chunks: tuple[int, ...],
                     src_isz: int, tgt_isz: int) -> tuple[int, int]:
    """(stage 1, stage 2) footprints through intermediate chunks ``inter``: source ->
    intermediate (no shards, source dtype), intermediate -> target write unit."""
    fp1 = footprint(region_shape(shape, src_chunks, inter), inter, src_isz, src_isz)
    fp2 = footprint(region_shape(shape, inter, unit), chunks, src_isz, tgt_isz)
    return fp1, fp2


def intermediate_chunks(shape: tuple[int, ...], src_chunks: tuple[int, ...],
                        unit: tuple[int, ...], chunks: tuple[int, ...], src_isz: int,
                        tgt_isz: int, budget: int, *, name: str = "",
                        max_memory: int | None = None,
                        max_chunk: int = INTERMEDIATE_MAX_CHUNK) -> tuple[int, ...]:
    """Intermediate chunks with which both stages fit ``budget`` (see the module docstring);
    a :class:`PlanError` saying how much memory two stages need at least when none do."""
    ndim = len(shape)
    cands = [_candidates(n, s, u) for n, s, u in zip(shape, src_chunks, unit, strict=True)]
    cur = [min(n, math.gcd(s, u)) for n, s, u in zip(shape, src_chunks, unit, strict=True)]
    fp = stage_footprints(shape, src_chunks, tuple(cur), unit, chunks, src_isz, tgt_isz)
    if max(fp) > budget:
        least = max(fp)
        which = ("one source chunk" if fp[0] >= fp[1] else
                 f"one target {'shard' if unit != chunks else 'chunk'} {unit}")
        raise PlanError(
            f"{name}: even in two stages, {which} needs {human_bytes(least)} of data per "
            f"worker, more than --max-memory {human_bytes(max_memory or 0)} leaves after a "
            f"worker's own {human_bytes(WORKER_BASELINE)}; raise --max-memory to at least "
            f"{human_bytes(least + WORKER_BASELINE)}"
            + ("" if fp[0] >= fp[1] else " or choose smaller chunks"), variable=name)
    while True:
        base = max(fp)
        best = None
        for d in range(ndim):
            for v in (v for v in cands[d] if v > cur[d]):
                trial = list(cur)
                trial[d] = v
                if math.prod(trial) * src_isz > max_chunk:
                    break
                f = stage_footprints(shape, src_chunks, tuple(trial), unit, chunks, src_isz,
                                     tgt_isz)
                if max(f) > budget:
                    continue
                # memory spent per growth of the chunk (free growth first, the most of it)
                gain = math.log(v / cur[d])
                score = (max(0, max(f) - base) / gain, -gain)
                if best is None or score < best[0]:
                    best = (score, trial, f)
        if best is None:
            return tuple(cur)
        cur, fp = best[1], best[2]


# --------------------------------------------------------------------------- the plan


@dataclass
class VariableRechunk:
    """How one variable is rechunked: ``target`` (its final plan) and, for two stages, the
    intermediate chunks and each stage's footprint."""

    name: str
    source_chunks: tuple[int, ...]
    target: VariablePlan
    costs: StageCosts
    intermediate: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        t = self.target
        return {"dims": list(t.dims), "shape": list(t.shape), "dtype": t.dtype,
                "source_chunks": list(self.source_chunks), "chunks": list(t.chunks),
                "shards": list(t.shards) if t.shards else None,
                "intermediate_chunks": list(self.intermediate) if self.intermediate else None,
                "single_pass_bytes": self.costs.single,
                "stage1_bytes": self.costs.stage1, "stage2_bytes": self.costs.stage2}


@dataclass
class RechunkPlan:
    source: str
    per_job_memory: int | None
    variables: dict[str, VariableRechunk]
    storage: str = "cloud"

    @property
    def two_stage(self) -> bool:
        return any(v.intermediate for v in self.variables.values())

    def target_plan(self, pattern: str = "rechunk") -> Plan:
        return Plan(source=self.source, pattern=pattern, storage=self.storage,
                    target_chunk_bytes=STORAGE_DEFAULT[self.storage],
                    shards=any(v.target.shards for v in self.variables.values()),
                    max_memory=self.per_job_memory or 0,
                    variables={n: v.target for n, v in self.variables.items()})

    def intermediate_plan(self, ds: Any) -> Plan:
        """Stage 1's plan: the intermediate chunks, or (for a variable one pass can copy)
        its target chunks and shards, so stage 2 reads it a shard at a time."""
        out = {}
        for n, v in self.variables.items():
            if v.intermediate:
                out[n] = plan_variable(ds, n, storage=self.storage, max_memory=None,
                                       chunks=v.intermediate)
                out[n].reasoning = [f"intermediate chunks between {v.source_chunks} and "
                                    f"{v.target.write_unit}"]
            else:  # as the target (a cast to its dtype included): the footprint one pass has
                out[n] = VariablePlan.from_dict(v.target.to_dict())
        return Plan(source=self.source, pattern="rechunk-intermediate", storage=self.storage,
                    target_chunk_bytes=INTERMEDIATE_MAX_CHUNK, shards=False,
                    max_memory=self.per_job_memory or 0, variables=out)


def parse_chunks(items: list[str] | tuple[str, ...] | None) -> dict[str, tuple[int, ...]]:
    """``['tas=365,32,32']`` -> {'tas': (365, 32, 32)}; -1 is a whole dimension."""
    out: dict[str, tuple[int, ...]] = {}
    for item in items or ():
        name, sep, rest = item.partition("=")
        name = name.strip()
        if not sep or not name or not re.fullmatch(r"\s*-?\d+(\s*,\s*-?\d+)*\s*", rest):
            raise InvalidArgumentError(
                f"--chunks wants VAR=N,N,... (one length per dimension, -1 for a whole "
                f"dimension), got {item!r}")
        values = tuple(int(x) for x in rest.split(","))
        if any(v == 0 or v < -1 for v in values):
            raise InvalidArgumentError(
                f"--chunks {item}: lengths must be positive (or -1 for a whole dimension)")
        if name in out:
            raise InvalidArgumentError(f"--chunks names {name!r} twice")
        out[name] = values
    return out


def make_rechunk_plan(ds: Any, source: str, *, plan: Plan | None = None,
                      chunks: dict[str, tuple[int, ...]] | None = None,
                      pattern: str | None = None, storage_kind: str = "cloud",
                      target_chunk_bytes: int | None = None, shards: bool = False,
                      per_job_memory: int | None = 2 * GB) -> RechunkPlan:
    """Target chunks from ``plan``, ``chunks`` or ``pattern`` (variables none of them names
    keep their source chunks) and, where one pass cannot fit ``per_job_memory``, the
    intermediate chunks of two stages."""
    if storage_kind not in STORAGE_TARGETS:
        raise InvalidArgumentError(f"--storage must be one of {', '.join(STORAGE_TARGETS)}")
    if pattern is not None and pattern not in PATTERNS:
        raise InvalidArgumentError(f"--pattern must be one of {', '.join(PATTERNS)}")
    names = [str(k) for k, v in ds.data_vars.items() if v.ndim >= 1]
    given = dict(chunks or {})
    unknown = [n for n in given if n not in names]
    if unknown:
        raise InvalidArgumentError(
            f"--chunks: no data variable {', '.join(map(repr, unknown))} in the source; it "
            f"has {', '.join(names) or 'no data variables'}")
    if plan is not None:
        check_plan(plan, ds, None)  # the plan's variables, dimensions and shapes
    budget = None if not per_job_memory else per_job_memory - WORKER_BASELINE
    out: dict[str, VariableRechunk] = {}
    for n in names:
        v = ds[n]
        shape = tuple(int(x) for x in v.shape)
        src_chunks, _ = source_chunking(v)
        if plan is not None and n in plan.variables:
            target = plan.variables[n]
        elif n in given:
            c = given[n]
            if len(c) != len(shape):
                raise InvalidArgumentError(
                    f"--chunks {n}: {len(c)} length(s) for its {len(shape)} dimensions "
                    f"{tuple(map(str, v.dims))}", variable=n)
            c = tuple(s if a == -1 else a for a, s in zip(c, shape, strict=True))
            target = plan_variable(ds, n, storage=storage_kind, shards=shards,
                                   max_memory=None, chunks=c)
        elif pattern is not None:
            target = plan_variable(ds, n, pattern=pattern, storage=storage_kind,
                                   target_chunk_bytes=target_chunk_bytes, shards=shards,
                                   max_memory=None)
        else:  # named by nothing: copied with the chunks (and shards) it has
            target = plan_variable(ds, n, storage=storage_kind, max_memory=None,
                                   chunks=src_chunks)
            src_shards = v.encoding.get("shards")
            if src_shards and len(src_shards) == len(shape):
                target.shards = tuple(int(x) for x in src_shards)
                target.region = region_shape(shape, src_chunks, target.shards)
            target.reasoning = ["not named: keeps its source chunks"]
        src_isz = np.dtype(v.dtype).itemsize
        unit, tchunks = tuple(target.write_unit), tuple(target.chunks)
        single = footprint(region_shape(shape, src_chunks, unit), tchunks, src_isz,
                           target.itemsize)
        vr = VariableRechunk(n, src_chunks, target, StageCosts(single))
        if budget is not None and single > budget:
            inter = intermediate_chunks(shape, src_chunks, unit, tchunks, src_isz,
                                        target.itemsize, budget, name=n,
                                        max_memory=per_job_memory)
            vr.intermediate = inter
            vr.costs.stage1, vr.costs.stage2 = stage_footprints(
                shape, src_chunks, inter, unit, tchunks, src_isz, target.itemsize)
        out[n] = vr
    if not out:
        raise InvalidArgumentError(f"{source} has no data variables to rechunk")
    if plan is not None:
        extra = [n for n in plan.variables if n not in out]
        if extra:
            raise InvalidArgumentError(f"the plan names {', '.join(map(repr, extra))}, which "
                                       "is not a data variable of the source")
    return RechunkPlan(source=source, per_job_memory=per_job_memory, variables=out,
                       storage=storage_kind)


# --------------------------------------------------------------------------- running it


def tmp_path_for(out: Path) -> Path:
    return out.with_name(out.name + TMP_SUFFIX)


def _inside(a: Path, b: Path) -> bool:
    try:
        a.relative_to(b)
        return True
    except ValueError:
        return False


def _check_output(out: Path, src_url: str, overwrite: bool) -> None:
    """Refuse, before anything is written, an output that is the source (or inside it, or
    holding it), that exists without ``overwrite`` (an unfinished zarrport conversion is
    resumed), or whose parent cannot take it."""
    from zarrport.convert.writer import _is_zarr_dir, is_incomplete

    if src_url.startswith("file://"):
        src = Path(src_url.removeprefix("file://")).resolve()
        o = out.resolve()
        if _inside(o, src) or _inside(src, o):
            raise InvalidArgumentError(
                f"{out}: the output cannot be the source, or be inside it or hold it; "
                "rechunk into a new store and swap them afterwards")
    if out.exists():
        ours = is_incomplete("file://" + str(out)) is not None
        if not overwrite and not ours:
            raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
        if out.is_dir() and any(out.iterdir()) and not _is_zarr_dir(out):
            raise OutputExistsError(
                f"{out} exists and is not a Zarr store; zarrport will not delete it")
        if not out.is_dir():
            raise OutputExistsError(f"{out} exists and is a file; zarrport will not delete it")
    if not out.parent.is_dir():
        raise OutputNotWritableError(f"cannot write {out}: {out.parent} is not a directory")
    import os

    if not os.access(out.parent, os.W_OK):
        raise OutputNotWritableError(f"cannot write {out}: {out.parent} is not writable")
    tmp = tmp_path_for(out)
    if tmp.exists() and not (tmp.is_dir() and (_is_zarr_dir(tmp) or not any(tmp.iterdir()))):
        raise OutputExistsError(
            f"{tmp} (where rechunk keeps its intermediate store) exists and is not a Zarr "
            "store; zarrport will not delete it")


def _stage1_key(src_url: str, fingerprint: list, plan: Plan) -> str:
    doc = {"source": src_url, "fingerprint": fingerprint, "plan": plan.to_dict(),
           "codec": [TMP_CODEC, TMP_LEVEL]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _stage1_done(tmp: Path, key: str) -> bool:
    try:
        return json.loads((tmp / STAGE1_RECORD).read_text()).get("key") == key
    except (OSError, ValueError, AttributeError):
        return False


@contextlib.contextmanager
def _client(scheduler: Any) -> Iterator[Any]:
    from zarrport.convert.writer import _dask_client

    with _dask_client(scheduler) as client:
        yield client


def _threads(client: Any) -> int:
    if client is None:
        return 1
    info = client.scheduler_info()["workers"].values()
    return max(1, max((w.get("nthreads", 1) for w in info), default=1))


def _stage_summary(s: dict[str, Any], name: str) -> dict[str, Any]:
    return {"stage": name, "output": s["output"], "jobs": s["jobs"],
            "resumed_from": s.get("resumed_from", 0), "bytes_read": s["bytes_read"],
            "bytes_written": s["bytes_written"], "seconds": s["seconds"],
            "peak_memory_per_worker": s["peak_memory_per_worker"]}


def _retag_output(out: Path, src_url: str, two_stage: bool) -> None:
    """The finished output's conversion record names the real source (stage 2 read the
    intermediate store), and its consolidated metadata says so too."""
    import zarr

    from zarrport.convert.writer import MARKER

    g = zarr.open_group(str(out), mode="r+", zarr_format=3)
    rec = dict(g.attrs.get(MARKER) or {})
    rec.update(source=src_url, method="two-stage" if two_stage else "single-pass")
    g.attrs[MARKER] = rec
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata is not in the v3 spec yet
        zarr.consolidate_metadata(str(out))


def rechunk(source: str, output: str, *, plan: Plan | str | Path | None = None,
            chunks: dict[str, tuple[int, ...]] | list[str] | None = None,
            pattern: str | None = None, storage_kind: str = "cloud",
            target_chunk_mb: float | None = None, shards: bool = False,
            codec: str = "zstd", level: int | None = None,
            max_memory: int | str | None = 2 * GB, workers: int | None = None,
            scheduler: Any = None, overwrite: bool = False,
            storage_options: dict | None = None,
            progress: Callable[[str, int, int, dict[str, Any]], None] | None = None
            ) -> dict[str, Any]:
    """Rechunk the Zarr store (or Icechunk repository) ``source`` into a Zarr v3 store at
    ``output`` with the chunks of ``plan``, ``chunks`` ({var: lengths}, or
    ``['VAR=a,b,c']``) or ``pattern``, every worker within ``max_memory``; in two stages
    through ``OUTPUT.rechunk-tmp`` where one pass would not fit. Returns the summary."""
    from zarrport.convert.writer import (
        _open_kwargs,
        _State,
        codec_chain,
        convert,
        is_incomplete,
        source_fingerprint,
    )
    from zarrport.open import detect, open_dataset

    t0 = time.perf_counter()
    if sum(x is not None and x != {} and x != [] for x in (plan, chunks, pattern)) != 1:
        raise InvalidArgumentError("give exactly one of --plan, --chunks or --pattern")
    if isinstance(chunks, (list, tuple)):
        chunks = parse_chunks(chunks)
    max_mem = memory_limit(max_memory)
    if target_chunk_mb is not None and target_chunk_mb * MB < 1024:
        raise InvalidArgumentError("--target-chunk-mb must be at least 0.001 (1 KB)")
    codec_chain(codec, level, 4)
    src_url = storage.normalize_url(source)
    out_url = storage.normalize_url(output)
    if not out_url.startswith("file://"):
        raise InvalidArgumentError(
            f"{output}: rechunk writes to a local directory; copy the store to object "
            "storage afterwards (e.g. with `aws s3 sync` or `azcopy`)")
    out = Path(out_url.removeprefix("file://"))
    kind = detect(src_url, storage_options)
    if kind not in STORE_KINDS:
        raise UnrecognizedFormatError(
            f"{source} is {kind}, not a Zarr store or Icechunk repository; use zarrport "
            "convert for NetCDF/GRIB/references", source=src_url)
    if plan is not None and not isinstance(plan, Plan):
        plan = Plan.load(plan)
    _check_output(out, src_url, overwrite)
    unfinished_out = out.exists() and is_incomplete("file://" + str(out)) is not None
    ds = open_dataset(src_url, storage_options=storage_options, **_open_kwargs(False))
    tmp = tmp_path_for(out)
    with _client(scheduler) as client:
        threads = _threads(client)
        per_job = None if not max_mem else WORKER_BASELINE + (max_mem - WORKER_BASELINE) // threads
        rp = make_rechunk_plan(ds, src_url, plan=plan, chunks=chunks, pattern=pattern,
                               storage_kind=storage_kind,
                               target_chunk_bytes=int(target_chunk_mb * MB)
                               if target_chunk_mb else None,
                               shards=shards, per_job_memory=per_job)
        common = {"max_memory": max_mem, "workers": workers, "scheduler": client,
                  "storage_options": None}
        stages: list[dict[str, Any]] = []

        def tick(stage: str) -> Callable[[int, int, dict[str, Any]], None] | None:
            if progress is None:
                return None
            return lambda done, total, r: progress(stage, done, total, r)

        def to_output(src: str, opts: dict | None, stage: str) -> dict[str, Any]:
            kw = dict(common, storage_options=opts, plan=rp.target_plan(), codec=codec,
                      level=level, progress=tick(stage))
            try:
                return convert(src, output, overwrite=overwrite, **kw)
            except OutputExistsError:
                if not unfinished_out:
                    raise
                # an unfinished zarrport output made with other options: replaced (checked
                # before anything was written that it is one)
                return convert(src, output, overwrite=True, **kw)

        if not rp.two_stage:
            if tmp.exists():  # a two-stage attempt with other chunks left it
                shutil.rmtree(tmp)
            final = to_output(source, storage_options, "single pass")
            stages.append(_stage_summary(final, "source -> output"))
        else:
            inter_plan = rp.intermediate_plan(ds)
            key = _stage1_key(src_url, source_fingerprint(src_url, kind, storage_options),
                              inter_plan)
            try:
                if not _stage1_done(tmp, key):
                    kw = dict(common, storage_options=storage_options, plan=inter_plan,
                              codec=TMP_CODEC, level=TMP_LEVEL, progress=tick("stage 1"))
                    resumable = tmp.exists() and _State.load(tmp) is not None
                    try:
                        s1 = convert(source, str(tmp), overwrite=not resumable, **kw)
                    except OutputExistsError:  # an unfinished stage 1 with other chunks
                        s1 = convert(source, str(tmp), overwrite=True, **kw)
                    (tmp / STAGE1_RECORD).write_text(json.dumps({"key": key}))
                    stages.append(_stage_summary(s1, "source -> intermediate"))
                else:
                    stages.append({"stage": "source -> intermediate", "output": str(tmp),
                                   "jobs": 0, "resumed_from": None, "bytes_read": 0,
                                   "bytes_written": 0, "seconds": 0.0,
                                   "peak_memory_per_worker": [], "skipped": "done before"})
                final = to_output("file://" + str(tmp), None, "stage 2")
                stages.append(_stage_summary(final, "intermediate -> output"))
            except KeyboardInterrupt:
                raise  # the intermediate store stays: the same command resumes
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    _retag_output(out, src_url, rp.two_stage)
    peaks = [p for st in stages for p in st["peak_memory_per_worker"]]
    return {"source": src_url, "output": str(out),
            "method": "two-stage" if rp.two_stage else "single-pass",
            "intermediate": str(tmp) if rp.two_stage else None,
            "max_memory": max_mem, "per_job_memory": per_job, "codec": codec, "level": level,
            "jobs": sum(st["jobs"] for st in stages),
            "bytes_read": sum(st["bytes_read"] for st in stages),
            "bytes_written": final["bytes_written"],
            "seconds": round(time.perf_counter() - t0, 3),
            "peak_memory_per_worker": sorted(peaks, reverse=True),
            "stages": stages,
            "variables": {n: dict(v.to_dict(), **{k: final["variables"][n][k] for k in (
                "bytes_written", "uncompressed_bytes", "compression_ratio")})
                for n, v in rp.variables.items()}}
