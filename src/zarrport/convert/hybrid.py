"""``zarrport convert SOURCE --into REPO.icechunk``: hybrid stores.

An Icechunk repository made by ``zarrport virtualize`` holds virtual references into the
source files. Materializing part of it -- some variables, a time range -- turns the virtual
chunks there into native Icechunk chunks with exactly the same chunk grid and codec chain
(the source file's HDF5 filters as Zarr codecs), so one dataset mixes physical hot data and
virtual cold data and ``zarrport.open_dataset(REPO)`` reads it as one.

How it runs:

1. One writable session on the branch (default ``main``). The variables and the selection
   are resolved on that session's snapshot; a ``--select``/``--bbox`` that cuts chunks is
   widened to whole chunks, with a warning (an error with ``strict``).
2. Values are the stored values: read from the repository itself through zarr (raw: a packed
   int16 stays int16, fill values stay as they are), or, when SOURCE is something else (a
   NetCDF file, kerchunk references over the same files), through zarrport's readers with CF
   decoding off; such a source must store the variable the same way (dtype, packing, fill,
   units) and may cover a part of the repository along a dimension (one file of several),
   found by its coordinate labels.
3. Blocks of whole chunks, sized to ``max_memory``, run on a thread pool; each writes its
   values through ``zarr.open_array(session.store, path=var)[block] = values``, which encodes
   them with the array's own codecs -- Icechunk stores the result as a native chunk. Only
   chunks that are virtual are written (already native or inline ones are left alone, so
   running the same command again commits nothing).
4. One commit, carrying the repository's provenance record forward (zarrport's fast reader
   trusts the unchanged local sources of a snapshot by it) and a record of what was
   materialized. Nothing is visible before that commit: a failure leaves the branch where
   it was (native chunks already uploaded stay unreferenced; Icechunk's garbage collection
   removes them).
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as _dt
import math
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zarrport import storage
from zarrport.convert.jobs import Job, cuts_source_chunks, make_jobs
from zarrport.convert.plan import GB, WORKER_BASELINE, footprint, memory_limit
from zarrport.errors import (
    IncompatibleSourcesError,
    InvalidArgumentError,
    SourceChangedError,
    SourceNotFoundError,
    StorageError,
    VerificationError,
    ZarrportError,
)
from zarrport.inspect.guidelines import human_bytes

#: commit metadata key of the record of what a commit materialized
MATERIALIZED_KEY = "zarrport_materialized"

# icechunk.ChunkType values in ``IcechunkStore.array_chunk_iterator`` (icechunk 2.3)
_NATIVE, _VIRTUAL, _INLINE = 1, 2, 3

#: attributes that say how values are stored; a SOURCE other than the repository must agree
_STORAGE_ATTRS = ("scale_factor", "add_offset", "_FillValue", "missing_value", "units",
                  "calendar")


@dataclass
class _Var:
    """One variable to materialize: its region (repository positions), chunk grid, and
    where its values come from."""

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    region: tuple[tuple[int, int], ...]
    # where SOURCE's copy of the variable starts in the repository (per dimension)
    src_offset: tuple[int, ...]
    kinds: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))
    jobs: list[Job] = field(default_factory=list)
    labels: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # warnings, given if there is work
    error: str | None = None  # the error, raised if there is work

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(math.ceil(n / c) for n, c in zip(self.shape, self.chunks, strict=True))


def convert_into(source: str, repo_url: str, *, variables: list[str] | None = None,
                 select: dict[str, tuple[str, str]] | list[str] | None = None,
                 bbox: tuple[float, float, float, float] | str | None = None,
                 branch: str = "main", max_memory: int | str | None = 2 * GB,
                 workers: int | None = None, strict: bool = False, validate: bool = False,
                 storage_options: dict | None = None, message: str | None = None,
                 progress: Callable[[int, int, dict[str, Any]], None] | None = None,
                 warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Materialize ``variables`` (default: every data variable with the selected
    dimensions) in the ``select``/``bbox`` range as native chunks of the Icechunk repository
    at ``repo_url``, in one commit on ``branch``. ``source`` is the repository itself (the
    usual case) or anything :func:`zarrport.open_dataset` opens that stores the same values
    (see the module docstring). ``validate`` compares every written value with the parent
    commit's before committing. Returns the summary (also what ``--json`` prints); with no
    virtual chunk in the range nothing is committed (``snapshot`` is None)."""
    from zarrport.convert.writer import parse_bbox, parse_select, selection_slices
    from zarrport.open import detect

    t0 = time.perf_counter()
    warn = warn or (lambda msg: warnings.warn(msg, stacklevel=2))
    repo_url = storage.normalize_url(repo_url)
    src_url = storage.normalize_url(source)
    kind = detect(repo_url, storage_options)
    if kind != "icechunk":
        raise InvalidArgumentError(
            f"{repo_url} is {kind}, not an Icechunk repository: --into writes into a "
            "repository made by `zarrport virtualize ... -o REPO.icechunk`", source=repo_url)
    if isinstance(select, (list, tuple)):
        select = parse_select(select)
    if isinstance(bbox, str):
        bbox = parse_bbox(bbox)
    max_mem = memory_limit(max_memory, who="the process")
    if workers is not None and workers < 1:
        raise InvalidArgumentError("--workers must be at least 1")
    n_workers = workers or min(os.cpu_count() or 1, 8)

    repo = _open_repository(repo_url, storage_options)
    if branch not in set(repo.list_branches()):
        raise SourceNotFoundError(
            f"{repo_url} has no branch {branch!r}; its branches: "
            f"{', '.join(sorted(repo.list_branches()))}", source=repo_url)
    session = repo.writable_session(branch)
    parent = session.snapshot_id
    decoded = _open_session(session.store, decode=True)
    same = _same_place(src_url, repo_url)
    src = None if same else _Source(src_url, storage_options)

    sel = selection_slices(decoded, select or {}, bbox) if (select or bbox) else {}
    names = _variables(decoded, session.store, variables, sel, repo_url)
    raw = _open_session(session.store, decode=False)
    # the largest variables first: a selection that cuts chunks is reported (and with
    # --strict refused) by the main field, whatever order the store lists variables in
    names = sorted(names, key=lambda n: (-decoded[n].ndim, -decoded[n].size, n))
    planned = [_plan_variable(name, raw, decoded, sel, src, strict, repo_url, src_url)
               for name in names]
    todo: list[_Var] = []
    physical: list[str] = []  # nothing virtual in the range: nothing to do
    for v in planned:
        if v is None:
            continue
        v.kinds = _chunk_kinds(session.store, v)
        if not np.any((v.kinds == _VIRTUAL) & _region_mask(v)):
            physical.append(v.name)
            continue
        if v.error:
            raise InvalidArgumentError(v.error, variable=v.name)
        for msg in v.notes:
            warn(msg)
        todo.append(v)

    # memory-bounded blocks of whole chunks; as many threads as the budget has room for
    total_budget = None if max_mem is None else max_mem - WORKER_BASELINE
    largest = max(((footprint(v.chunks, v.chunks, v.dtype.itemsize, v.dtype.itemsize), v)
                   for v in todo), key=lambda fv: fv[0], default=None)
    if total_budget is not None and largest is not None:
        one, v = largest
        if one > total_budget:
            raise InvalidArgumentError(
                f"{v.name}: one chunk needs {human_bytes(one)} to rewrite, more than "
                f"--max-memory leaves ({human_bytes(total_budget)} after "
                f"{human_bytes(WORKER_BASELINE)} for the process); raise --max-memory",
                variable=v.name)
        n_workers = max(1, min(n_workers, total_budget // one))
    budget = None if total_budget is None else total_budget // n_workers
    for v in todo:
        item = v.dtype.itemsize
        starts = tuple(a for a, _ in v.region)
        shape = tuple(b - a for a, b in v.region)
        v.jobs = [j for j in make_jobs(v.name, shape, v.chunks, starts, v.chunks, v.chunks,
                                       item, item, budget, min_jobs=2 * n_workers)
                  if _count(v, j, _VIRTUAL)]
    jobs = [(v, j) for v in todo for j in v.jobs]

    counts: dict[str, int] = {v.name: 0 for v in todo}
    read_bytes: dict[str, int] = {v.name: 0 for v in todo}

    def work(v: _Var, job: Job) -> dict[str, Any]:
        data = _read_block(session.store, v, job, src, repo_url, src_url)
        n = _write_block(session.store, v, job, data)
        return {"var": v.name, "chunks": n, "nbytes": int(data.nbytes)}

    def record_result(done: int, r: dict[str, Any]) -> None:
        counts[r["var"]] += r["chunks"]
        read_bytes[r["var"]] += r["nbytes"]
        if progress is not None:
            progress(done, len(jobs), r)

    _run(jobs, work, n_workers, record_result)

    total = sum(counts.values())
    written: dict[str, int] = {}
    for v in todo:  # every chunk meant to be native is now native
        after = _chunk_kinds(session.store, v, lengths=True)
        kinds_after, lengths = after
        wanted = (v.kinds == _VIRTUAL) & _region_mask(v)
        if np.any(kinds_after[wanted] != _NATIVE):
            raise StorageError(
                f"{v.name}: {int(np.sum(kinds_after[wanted] != _NATIVE))} chunk(s) are not "
                "native after writing; nothing was committed", variable=v.name)
        written[v.name] = int(lengths[wanted].sum())
    if validate and total:
        _validate(repo, parent, session.store, jobs, repo_url)

    record = {
        "source": src_url, "branch": branch, "parent": parent,
        "at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "variables": {v.name: {"chunks": counts[v.name],
                               "region": {d: [a, b] for d, (a, b) in zip(v.dims, v.region,
                                                                         strict=True)},
                               "labels": v.labels,
                               "already_native": int(np.sum((v.kinds == _NATIVE)
                                                            & _region_mask(v))),
                               "inline": int(np.sum((v.kinds == _INLINE) & _region_mask(v))),
                               "bytes_written": written.get(v.name, 0)}
                      for v in todo},
    }
    snapshot = None
    msg = message or _message(todo, counts)
    if total:
        metadata = {MATERIALIZED_KEY: record}
        prov = _provenance(repo, parent)
        if prov is not None:
            from zarrport.virtual.icechunk import PROVENANCE_KEY

            metadata[PROVENANCE_KEY] = prov
        snapshot = _commit(session, msg, metadata, repo_url, branch)
    return {
        "repository": repo_url, "branch": branch, "source": src_url,
        "parent": parent, "snapshot": snapshot, "message": msg if total else None,
        "chunks": total, "jobs": len(jobs), "workers": n_workers,
        "bytes_read": sum(read_bytes.values()), "bytes_written": sum(written.values()),
        "seconds": round(time.perf_counter() - t0, 3),
        "validated": bool(validate and total),
        "already_physical": physical,
        "variables": {n: {**rec, "bytes_read": read_bytes[n]}
                      for n, rec in record["variables"].items()},
    }


# --------------------------------------------------------------------------- opening


def _open_repository(url: str, storage_options: dict | None) -> Any:
    """The repository, writable, authorized for every virtual chunk container it declares
    (reading the virtual chunks being materialized needs them)."""
    import icechunk

    from zarrport.errors import CorruptSourceError
    from zarrport.virtual.icechunk import open_for_writing, quiet_icechunk

    quiet_icechunk()
    try:
        config = icechunk.Repository.fetch_config(storage.icechunk_storage(url,
                                                                            storage_options))
    except Exception as err:
        raise CorruptSourceError(f"{url}: not a readable Icechunk repository "
                                 f"({_first_line(err)})", source=url) from err
    prefixes = sorted((config.virtual_chunk_containers or {}) if config is not None else {})
    return open_for_writing(url, prefixes, storage_options=storage_options,
                            output_storage_options=storage_options)


def _open_session(store: Any, *, decode: bool) -> Any:
    import xarray as xr

    from zarrport.convert.writer import _open_kwargs

    kw = {} if decode else _open_kwargs(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.open_dataset(store, engine="zarr", consolidated=False, zarr_format=3,
                               chunks=None, **kw)


def _same_place(a: str, b: str) -> bool:
    if a == b:
        return True
    if a.startswith("file://") and b.startswith("file://"):
        return os.path.realpath(a[7:]) == os.path.realpath(b[7:])
    return a.rstrip("/") == b.rstrip("/")


class _Source:
    """SOURCE when it is not the repository: opened raw (values as stored) and decoded (for
    its coordinate labels)."""

    def __init__(self, url: str, storage_options: dict | None) -> None:
        from zarrport.convert.writer import _open_kwargs
        from zarrport.hdf5 import use_hdf5_plugins
        from zarrport.open import open_dataset

        use_hdf5_plugins()
        self.url = url
        self.raw = open_dataset(url, storage_options=storage_options, **_open_kwargs(False))
        self.decoded = open_dataset(url, storage_options=storage_options)
        self.lock = threading.Lock()  # netCDF4/HDF5 reads are not thread-safe


def _variables(decoded: Any, store: Any, variables: list[str] | None,
               select: dict[str, Any], repo_url: str) -> list[str]:
    import zarr

    arrays = sorted(zarr.open_group(store, mode="r", zarr_format=3).array_keys())
    data_vars = [str(n) for n, v in decoded.data_vars.items() if v.ndim >= 1]
    if variables:
        missing = [v for v in variables if v not in arrays]
        if missing:
            raise InvalidArgumentError(
                f"no variable {', '.join(map(repr, missing))} in {repo_url}; it has "
                f"{', '.join(data_vars) or 'no data variables'}")
        for name in variables:
            lacking = [d for d in select if d not in decoded[name].dims]
            if lacking:
                raise InvalidArgumentError(
                    f"{name} has no dimension {lacking[0]!r} to --select on; its dimensions: "
                    f"{', '.join(map(str, decoded[name].dims)) or 'none'}", variable=name)
        return list(dict.fromkeys(variables))
    names = [n for n in data_vars if all(d in decoded[n].dims for d in select)]
    if not names:
        raise InvalidArgumentError(
            f"no data variable of {repo_url} has the dimensions "
            f"{', '.join(select)} selected on")
    return names


def _plan_variable(name: str, raw: Any, decoded: Any, sel: dict[str, tuple[int, int]],
                   src: _Source | None, strict: bool, repo_url: str, src_url: str
                   ) -> _Var | None:
    var = raw[name]
    dims = tuple(str(d) for d in var.dims)
    shape = tuple(int(n) for n in var.shape)
    if not shape:
        return None  # a scalar: nothing to chunk (and inlined anyway)
    enc_chunks = var.encoding.get("chunks") or var.encoding.get("preferred_chunks")
    if isinstance(enc_chunks, dict):
        enc_chunks = tuple(enc_chunks[d] for d in dims)
    chunks = tuple(int(c) for c in enc_chunks) if enc_chunks else shape
    offset, cover = (0,) * len(dims), tuple((0, n) for n in shape)
    if src is not None:
        offset, cover = _source_cover(name, raw, decoded, src, repo_url, src_url)
    region, notes = [], []
    v_err = None
    for d, n, c, (lo, hi) in zip(dims, shape, chunks, cover, strict=True):
        a, b = sel.get(d, (lo, hi))
        if a < lo or b > hi:
            raise InvalidArgumentError(
                f"the selection {d}[{a}:{b}] reaches outside what {src_url} covers of "
                f"{name} ({d}[{lo}:{hi}]{_label_range(decoded, d, lo, hi)})", variable=name)
        wider = cuts_source_chunks(a, b, n, c)
        if wider is not None:
            msg = (f"the selection {d}[{a}:{b}] cuts {name}'s chunks of {c} along {d}: "
                   f"whole chunks are materialized, {d}[{wider[0]}:{wider[1]}]"
                   f"{_label_range(decoded, d, *wider)}")
            if strict:
                raise InvalidArgumentError(msg + " (--strict)", variable=name)
            if wider[0] < lo or wider[1] > hi:  # raised if there is anything to do
                v_err = (f"{msg}, but {src_url} covers only {d}[{lo}:{hi}]: materialize "
                         "from the repository itself")
            notes.append(msg)
            a, b = wider
        region.append((a, b))
    v = _Var(name, dims, shape, chunks, np.dtype(var.dtype), tuple(region), offset,
             notes=notes, error=v_err)
    for d, (a, b) in zip(dims, region, strict=True):
        if d in decoded.indexes and (a, b) != (0, decoded.sizes[d]):
            idx = decoded.indexes[d]
            v.labels[d] = [_fmt(idx[a]), _fmt(idx[b - 1])]
    return v


def _source_cover(name: str, raw: Any, decoded: Any, src: _Source, repo_url: str,
                  src_url: str) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    """Where SOURCE's ``name`` lies in the repository's (offset and range per dimension),
    after checking it stores the values the same way."""
    if name not in src.raw.variables:
        raise InvalidArgumentError(f"{src_url} has no variable {name!r}", variable=name)
    mine, theirs = raw[name], src.raw[name]
    if tuple(theirs.dims) != tuple(mine.dims):
        raise IncompatibleSourcesError(
            f"{name} has dimensions ({', '.join(map(str, theirs.dims))}) in {src_url}, "
            f"({', '.join(map(str, mine.dims))}) in {repo_url}", variable=name)
    if np.dtype(theirs.dtype) != np.dtype(mine.dtype):
        raise IncompatibleSourcesError(
            f"{name} is stored as {theirs.dtype} in {src_url}, {mine.dtype} in {repo_url}",
            variable=name)
    for k in _STORAGE_ATTRS:
        a = mine.attrs.get(k, mine.encoding.get(k))
        b = theirs.attrs.get(k, theirs.encoding.get(k))
        if not _same(a, b):
            raise IncompatibleSourcesError(
                f"{name}: {k} is {b!r} in {src_url}, {a!r} in {repo_url}; the values would "
                "not mean the same", variable=name)
    offset, cover = [], []
    for d, n_repo, n_src in zip(mine.dims, mine.shape, theirs.shape, strict=True):
        ri = decoded.indexes.get(d)
        si = src.decoded.indexes.get(d)
        if ri is not None and si is not None:
            pos = ri.get_indexer(si)
            if len(pos) and np.all(pos >= 0) and np.all(np.diff(pos) == 1):
                offset.append(int(pos[0]))
                cover.append((int(pos[0]), int(pos[0]) + len(pos)))
                continue
            raise IncompatibleSourcesError(
                f"{name}: the {d} labels of {src_url} are not a run of {repo_url}'s "
                f"{d} labels", variable=name)
        if n_repo != n_src:
            raise IncompatibleSourcesError(
                f"{name}: {d} has {n_src} values in {src_url}, {n_repo} in {repo_url}, and "
                "no coordinate to place one in the other", variable=name)
        offset.append(0)
        cover.append((0, int(n_repo)))
    return tuple(offset), tuple(cover)


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
    except TypeError:
        return str(a) == str(b)


def _fmt(label: Any) -> str:
    text = str(label.isoformat() if hasattr(label, "isoformat") else label)
    return text.replace("T", " ").removesuffix(" 00:00:00")


def _label_range(decoded: Any, d: str, a: int, b: int) -> str:
    if d not in decoded.indexes or b <= a:
        return ""
    idx = decoded.indexes[d]
    return f", values {_fmt(idx[a])}..{_fmt(idx[b - 1])}"


# --------------------------------------------------------------------------- chunks


def _chunk_kinds(store: Any, v: _Var, lengths: bool = False) -> Any:
    """Per chunk of ``v`` (flat, C order): 0 none, 1 native, 2 virtual, 3 inline (and the
    stored lengths with ``lengths``), from one listing of the array's references."""
    from zarr.core.sync import sync

    n = math.prod(v.grid)
    kinds = np.zeros(n, dtype=np.uint8)
    sizes = np.zeros(n, dtype=np.int64)

    async def batches() -> list[Any]:
        return [b async for b in store.array_chunk_iterator(v.name)]

    for coords, k, _paths, _offsets, lens, _inline in sync(batches()):
        if not len(k):
            continue
        flat = np.ravel_multi_index(tuple(np.asarray(coords, dtype=np.int64).T), v.grid)
        kinds[flat] = np.asarray(k, dtype=np.uint8)
        sizes[flat] = np.asarray(lens, dtype=np.int64)
    return (kinds, sizes) if lengths else kinds


def _chunk_ranges(v: _Var, block: tuple[tuple[int, int], ...]) -> list[range]:
    return [range(a // c, -(-b // c)) for (a, b), c in zip(block, v.chunks, strict=True)]


def _flat(v: _Var, block: tuple[tuple[int, int], ...]) -> np.ndarray:
    rngs = _chunk_ranges(v, block)
    mesh = np.meshgrid(*[np.arange(r.start, r.stop) for r in rngs], indexing="ij")
    return np.ravel_multi_index(tuple(m.ravel() for m in mesh), v.grid)


def _region_mask(v: _Var) -> np.ndarray:
    mask = np.zeros(math.prod(v.grid), dtype=bool)
    mask[_flat(v, v.region)] = True
    return mask


def _count(v: _Var, job: Job, kind: int) -> int:
    return int(np.sum(v.kinds[_flat(v, job.src)] == kind))


def _read_block(store: Any, v: _Var, job: Job, src: _Source | None, repo_url: str,
                src_url: str) -> np.ndarray:
    """The stored values of ``job``'s block (repository positions ``job.src``)."""
    where = f"{v.name}[{', '.join(f'{a}:{b}' for a, b in job.src)}]"
    if src is None:
        import zarr

        try:
            arr = zarr.open_array(store, path=v.name, mode="r", zarr_format=3)
            data = np.asarray(arr[job.src_slices()])
        except Exception as err:
            raise _read_error(err, where, repo_url) from err
    else:
        sl = tuple(slice(a - o, b - o) for (a, b), o in zip(job.src, v.src_offset,
                                                            strict=True))
        try:
            with src.lock:
                data = np.asarray(src.raw[v.name].variable[sl].values)
        except ZarrportError:
            raise
        except Exception as err:
            raise _read_error(err, where, src_url) from err
    if data.dtype != v.dtype:
        raise IncompatibleSourcesError(
            f"{where}: read as {data.dtype}, stored as {v.dtype}", variable=v.name)
    return data


def _read_error(err: Exception, where: str, url: str) -> ZarrportError:
    text = _first_line(err)
    tail = "; nothing was committed"
    if "checksum" in text and "changed" in text:
        return SourceChangedError(f"cannot read {where} of {url}: {text}{tail}", source=url)
    if "not found" in text or isinstance(err, FileNotFoundError):
        return SourceNotFoundError(f"cannot read {where} of {url}: {text}{tail}", source=url)
    return StorageError(f"cannot read {where} of {url}: {text}{tail}", source=url)


def _first_line(err: BaseException) -> str:
    return next((ln.strip() for ln in str(err).splitlines() if ln.strip()),
                type(err).__name__)


def _write_block(store: Any, v: _Var, job: Job, data: np.ndarray) -> int:
    """Write the virtual chunks of ``job``'s block as native chunks (through zarr, with the
    array's own codecs); returns how many were written."""
    import zarr

    # every chunk is stored, even one that equals the fill value: zarr would otherwise
    # delete it, and a read would give the fill value without a chunk behind it
    arr = zarr.open_array(store, path=v.name, mode="r+", zarr_format=3,
                          config={"write_empty_chunks": True})
    flat = _flat(v, job.src)
    virtual = v.kinds[flat] == _VIRTUAL
    try:
        if np.all(virtual):
            arr[job.src_slices()] = data
            return int(virtual.size)
        origin = tuple(a for a, _ in job.src)
        for f in flat[virtual]:
            idx = np.unravel_index(int(f), v.grid)
            chunk = tuple(slice(i * c, min((i + 1) * c, n))
                          for i, c, n in zip(idx, v.chunks, v.shape, strict=True))
            local = tuple(slice(s.start - o, s.stop - o)
                          for s, o in zip(chunk, origin, strict=True))
            arr[chunk] = data[local]
        return int(np.sum(virtual))
    except ZarrportError:
        raise
    except Exception as err:
        raise StorageError(f"cannot write {v.name}[{', '.join(f'{a}:{b}' for a, b in job.src)}]"
                           f": {_first_line(err)}; nothing was committed",
                           variable=v.name) from err


# --------------------------------------------------------------------------- running

def _run(jobs: list[tuple[_Var, Job]], work: Callable[[_Var, Job], dict[str, Any]],
         n_workers: int, on_result: Callable[[int, dict[str, Any]], None]) -> None:
    """Run every job on threads (one session, one process), ``on_result`` called in this
    thread as each finishes; the first failure cancels the rest and is raised."""
    if n_workers <= 1 or len(jobs) < 2:
        for i, (v, j) in enumerate(jobs, 1):
            on_result(i, work(v, j))
        return
    with cf.ThreadPoolExecutor(max_workers=min(n_workers, len(jobs))) as pool:
        futures = [pool.submit(work, v, j) for v, j in jobs]
        try:
            for i, fut in enumerate(cf.as_completed(futures), 1):
                on_result(i, fut.result())
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _validate(repo: Any, parent: str, store: Any, jobs: list[tuple[_Var, Job]],
              repo_url: str) -> None:
    """Every materialized block, read back from the session (native chunks now), equals the
    parent commit's (virtual chunks), read through a separate read-only session."""
    import zarr

    before = repo.readonly_session(snapshot_id=parent).store
    for v, job in jobs:
        old = zarr.open_array(before, path=v.name, mode="r", zarr_format=3)
        new = zarr.open_array(store, path=v.name, mode="r", zarr_format=3)
        try:
            a = np.asarray(old[job.src_slices()])
        except Exception as err:
            raise _read_error(err, v.name, repo_url) from err
        b = np.asarray(new[job.src_slices()])
        same = (a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind in "fc" else a == b
        if not np.all(same):
            first = tuple(int(i) for i in np.argwhere(~same)[0])
            raise VerificationError(
                f"{v.name}: {int(np.sum(~same))} materialized values differ from the virtual "
                f"ones, first at {first}: {a[first]!r} virtual, {b[first]!r} native; nothing "
                "was committed", variable=v.name)


def _provenance(repo: Any, snapshot: str) -> dict[str, Any] | None:
    """The provenance record of ``snapshot`` (or of its nearest ancestor that has one)."""
    from zarrport.virtual.icechunk import PROVENANCE_KEY

    for info in repo.ancestry(snapshot_id=snapshot):
        meta = info.metadata or {}
        if PROVENANCE_KEY in meta:
            return meta[PROVENANCE_KEY]
    return None


def _message(todo: list[_Var], counts: dict[str, int]) -> str:
    parts = []
    for v in todo:
        if not counts[v.name]:
            continue
        ranges = [f"{d} {a}..{b}" for d, (a, b) in v.labels.items()]
        parts.append(" ".join([v.name, *ranges]))
    total = sum(counts.values())
    return (f"zarrport convert --into: materialized {'; '.join(parts)} "
            f"({total} chunk{'' if total == 1 else 's'})")


def _commit(session: Any, message: str, metadata: dict[str, Any], repo_url: str,
            branch: str) -> str:
    import icechunk

    try:
        return session.commit(message, metadata=metadata)
    except icechunk.ConflictError as err:
        raise StorageError(
            f"{repo_url}: branch {branch!r} moved on while materializing (another commit "
            f"landed); nothing was committed: run it again ({_first_line(err)})",
            source=repo_url) from err
