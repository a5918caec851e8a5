"""``zarrport convert``: a physical Zarr v3 copy, written in source-aware, memory-bounded jobs.

How a conversion runs:

1. The source is opened lazily through :func:`zarrport.open_dataset` with times and packing
   left encoded (``decode_times=False``; ``mask_and_scale=False`` unless ``decoded=True``),
   so the values written are the stored values and every CF attribute (units, calendar,
   ``_FillValue``, ``scale_factor``/``add_offset``) is carried over as it is.
2. A :class:`~zarrport.convert.plan.Plan` gives chunks (and shards) per variable; the jobs
   (:mod:`zarrport.convert.jobs`) are blocks whose edges lie on both the source chunk grid
   and the target shard grid, so every source chunk is read once and every shard is written
   by exactly one job.
3. xarray writes the metadata (and the small coordinates) of the whole store with
   ``to_zarr(compute=False)``; the root attributes say ``incomplete`` and
   :func:`zarrport.open_dataset` refuses such a store by name.
4. Jobs run on a process pool (or a Dask cluster): each reads its block from the source and
   writes it with zarr-python into whole shards. The driver records each finished job in
   ``OUT/.zarrport/done`` (fsync'd): a re-run of the same command continues from there.
5. The last job written, the root attributes say ``complete``, metadata is consolidated and
   the progress files go.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import resource
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zarrport import storage
from zarrport.convert.jobs import Job, cuts_source_chunks, make_jobs
from zarrport.convert.plan import (
    GB,
    WORKER_BASELINE,
    Plan,
    check_plan,
    convertible_variables,
    dim_roles,
    make_plan,
    memory_limit,
    source_chunking,
)
from zarrport.errors import (
    CorruptSourceError,
    InvalidArgumentError,
    OutputExistsError,
    OutputNotWritableError,
    SourceChangedError,
    StorageError,
    UnsupportedVariableError,
    VerificationError,
    ZarrportError,
)
from zarrport.inspect.guidelines import human_bytes

#: jobs a variable is cut into at least (where it has that many regions): work spreads over
#: the workers, progress moves, and a killed run loses little. Not tied to the worker count,
#: so a conversion resumed with other --workers has the same jobs.
MIN_JOBS = 16
#: root attribute of a store zarrport is writing / has written
MARKER = "zarrport_conversion"
STATE_DIR = ".zarrport"
CODECS = ("zstd", "blosc-lz4", "blosc-zstd", "gzip", "none")
_LEVELS = {"zstd": (-7, 22, 3), "blosc-lz4": (0, 9, 5), "blosc-zstd": (0, 9, 3),
           "gzip": (0, 9, 5), "none": (0, 0, 0)}


def codec_chain(name: str, level: int | None, itemsize: int) -> list[Any]:
    """zarr-python codecs for ``--codec``/``--level``."""
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    if name not in _LEVELS:
        raise InvalidArgumentError(f"--codec must be one of {', '.join(CODECS)}, got {name!r}")
    lo, hi, default = _LEVELS[name]
    if level is None:
        level = default
    if not lo <= level <= hi:
        raise InvalidArgumentError(f"--level for {name} must be {lo}..{hi}, got {level}")
    if name == "none":  # uncompressed (intermediate stores, fast local scratch)
        return []
    if name == "zstd":
        return [ZstdCodec(level=level)]
    if name == "gzip":
        return [GzipCodec(level=level)]
    return [BloscCodec(cname=name.split("-")[1], clevel=level, shuffle="shuffle",
                       typesize=itemsize)]


# --------------------------------------------------------------------------- selection


def parse_select(items: list[str] | tuple[str, ...] | None) -> dict[str, tuple[str, str]]:
    """``['time=2015:2044']`` -> {'time': ('2015', '2044')} (either end may be empty)."""
    out = {}
    for item in items or ():
        dim, sep, rng = item.partition("=")
        a, colon, b = rng.partition(":")
        if not sep or not dim or not colon:
            raise InvalidArgumentError(f"--select wants DIM=START:STOP, got {item!r}")
        out[dim.strip()] = (a.strip(), b.strip())
    return out


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if not text:
        return None
    try:
        w, s, e, n = (float(x) for x in text.split(","))
    except ValueError as err:
        raise InvalidArgumentError(f"--bbox wants W,S,E,N in degrees, got {text!r}") from err
    if s > n:
        raise InvalidArgumentError(f"--bbox {text}: south {s} is north of north {n}")
    return w, s, e, n


def _label(v: str, index: Any) -> Any:
    """A label as the index compares it: text for times (``2015`` is a year), numbers for
    numeric coordinates."""
    if v == "":
        return None
    if index.dtype.kind in "iuf":
        try:
            return float(v)
        except ValueError:
            pass
    return v


def _positions(index: Any, a: Any, b: Any, what: str) -> tuple[int, int]:
    """Label range -> positions ``start:stop`` on a (monotonic) index."""
    try:
        if not index.is_monotonic_increasing and index.is_monotonic_decreasing:
            sl = index.slice_indexer(b, a)
        else:
            sl = index.slice_indexer(a, b)
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidArgumentError(f"{what}: {err}") from err
    start, stop, _ = sl.indices(len(index))
    if stop <= start:
        raise InvalidArgumentError(f"{what} selects nothing")
    return start, stop


def selection_slices(ds_decoded: Any, select: dict[str, tuple[str, str]],
                     bbox: tuple[float, float, float, float] | None) -> dict[str, tuple[int, int]]:
    """Positions per dimension for ``--select`` and ``--bbox`` (labels read on the decoded
    coordinates)."""
    out: dict[str, tuple[int, int]] = {}
    for dim, (a, b) in select.items():
        if dim not in ds_decoded.dims:
            raise InvalidArgumentError(
                f"--select {dim}=...: no dimension {dim!r}; the source has "
                f"{', '.join(map(str, ds_decoded.dims))}")
        if dim in ds_decoded.indexes:
            index = ds_decoded.indexes[dim]
            out[dim] = _positions(index, _label(a, index), _label(b, index),
                                  f"--select {dim}={a}:{b}")
        else:  # no coordinate: positions
            n = ds_decoded.sizes[dim]
            try:
                lo, hi = (int(a) if a else None), (int(b) if b else None)
            except ValueError as err:
                raise InvalidArgumentError(
                    f"--select {dim}={a}:{b}: {dim} has no coordinate, so give positions "
                    "(integers)") from err
            out[dim] = slice(lo, hi).indices(n)[:2]
            if out[dim][1] <= out[dim][0]:
                raise InvalidArgumentError(f"--select {dim}={a}:{b} selects nothing")
    if bbox is not None:
        w, s, e, n = bbox
        # the largest field names the spatial dimensions (not a bounds variable)
        name = max(ds_decoded.data_vars, key=lambda k: (ds_decoded[k].ndim,
                                                        ds_decoded[k].size), default=None)
        roles = dim_roles(ds_decoded, name) if name else {}
        ydim = next((d for d, r in roles.items() if r == "y"), None)
        xdim = next((d for d, r in roles.items() if r == "x"), None)
        if ydim is None or xdim is None or ydim not in ds_decoded.indexes \
                or xdim not in ds_decoded.indexes:
            raise InvalidArgumentError("--bbox needs 1-D latitude and longitude coordinates")
        out[ydim] = _positions(ds_decoded.indexes[ydim], s, n, f"--bbox latitude {s}..{n}")
        lon = ds_decoded.indexes[xdim]
        if float(np.nanmax(lon.values)) > 180 and w < 0:  # 0..360 grid, -180..180 box
            w, e = w % 360, e % 360
        if w > e:
            raise InvalidArgumentError(
                f"--bbox {bbox}: it crosses the longitude seam of this grid "
                f"({float(lon.min()):g}..{float(lon.max()):g}); convert the two sides apart")
        out[xdim] = _positions(lon, w, e, f"--bbox longitude {w}..{e}")
    return out


# --------------------------------------------------------------------------- fingerprint


def source_fingerprint(url: str, kind: str, storage_options: dict | None) -> list[list[Any]]:
    """(path, size, mtime_ns) of the local files a source reads: the file itself, the
    metadata documents of a Zarr store or a repository's refs, and the files references
    point at (from zarrport's provenance record). Remote sources: their listing's size and
    ETag/mtime where the store gives them."""
    from zarrport.open import read_provenance

    paths: list[str] = []
    if url.startswith("file://"):
        p = Path(url.removeprefix("file://"))
        if p.is_file():
            paths.append(str(p))
        elif p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = [d for d in dirs if d != STATE_DIR and not (
                    kind == "icechunk" and d in ("chunks", "manifests", "transactions"))]
                for f in files:
                    if kind == "icechunk" or f in ("zarr.json", ".zarray", ".zattrs",
                                                   ".zgroup", ".zmetadata", "zarrport.json"):
                        paths.append(os.path.join(root, f))
    if kind in ("icechunk", "kerchunk-json", "kerchunk-parquet"):
        prov = read_provenance(url, kind, storage_options) or {}
        for s in prov.get("sources") or ():
            u = str(s.get("url", ""))
            if u.startswith("file://"):
                paths.append(u.removeprefix("file://"))
    out = []
    for p in sorted(set(paths)):
        try:
            st = os.stat(p)
            out.append([p, st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([p, None, None])
    if not url.startswith("file://"):
        try:
            fs, path = storage.filesystem(url, storage_options)
            info = fs.info(path)
            out.append([url, info.get("size"), str(info.get("ETag") or info.get("mtime")
                                                   or info.get("LastModified") or "")])
        except Exception:  # listing not allowed: nothing to compare
            pass
    return out


def _changed(before: list[list[Any]], after: list[list[Any]]) -> list[str]:
    a = {r[0]: r[1:] for r in before}
    b = {r[0]: r[1:] for r in after}
    return sorted(p for p in set(a) | set(b) if a.get(p) != b.get(p))


# --------------------------------------------------------------------------- workers

_CACHE: dict[Any, Any] = {}


def _open_source(spec: dict[str, Any]) -> Any:
    """The source, opened once per run and process (the run id keeps a later conversion in
    the same process -- a notebook, a long-lived Dask worker -- from reading an old handle;
    validation opens its own)."""
    key = ("src", spec.get("run"), bool(spec.get("validate")), spec["source"],
           json.dumps(spec.get("storage_options"), sort_keys=True, default=str),
           spec["decoded"])
    ds = _CACHE.get(key)
    if ds is None:
        from zarrport.hdf5 import use_hdf5_plugins
        from zarrport.open import open_dataset

        use_hdf5_plugins()
        ds = open_dataset(spec["source"], storage_options=spec.get("storage_options"),
                          **_open_kwargs(spec["decoded"], spec.get("group"),
                                         spec.get("version")))
        for k in [k for k in _CACHE if k[0] == "src" or k[1] != spec.get("run")]:
            del _CACHE[k]  # one source (and one run's output arrays) per process at a time
        _CACHE[key] = ds
    return ds


def _open_kwargs(decoded: bool, group: str | None = None,
                 version: dict[str, Any] | None = None) -> dict[str, Any]:
    kw: dict[str, Any] = {"decode_times": False, "decode_timedelta": False,
                          "mask_and_scale": decoded, **(version or {})}
    if group:
        kw["group"] = group
    return kw


def open_source(url: str, storage_options: dict | None, decoded: bool = False,
                group: str | None = None, skip_unsupported: bool = False,
                skipped: list[str] | None = None,
                version: dict[str, Any] | None = None) -> Any:
    """The source as a conversion reads it (values as stored, CF attributes as they are);
    what xarray cannot open is one line naming the source. Variables the reader leaves out
    (netCDF4 skips opaque, compound and some VLEN types with a warning) are an error unless
    ``skip_unsupported``; their names go to ``skipped``."""
    import re

    from zarrport.open import open_dataset

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = open_dataset(url, storage_options=storage_options,
                              **_open_kwargs(decoded, group, version))
        left_out = []
        for w in caught:
            text = str(w.message)
            m = re.search(r"variable '([^']+)' has unsupported.*skipping", text)
            if m or re.search(r"unsupported .*type, skipping", text):
                left_out.append(m.group(1) if m else text.removeprefix("WARNING: ").strip(" ."))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if left_out and not skip_unsupported:
            raise UnsupportedVariableError(
                f"{url}: the reader cannot read {', '.join(left_out)} (unsupported data type);"
                " pass --skip-unsupported to convert the rest", source=url)
        if skipped is not None:
            skipped.extend(left_out)
    except ZarrportError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, NotImplementedError) as err:
        raise UnsupportedVariableError(
            f"{url}{f' group {group}' if group else ''} cannot be opened for conversion: "
            f"{type(err).__name__}: {err}", source=url) from err
    if not any(v.ndim >= 1 for v in ds.data_vars.values()):
        raise InvalidArgumentError(
            f"nothing to convert: {url} has no data variables"
            f"{f' in group {group}' if group else ' at its root'}{_groups_hint(url)}",
            source=url)
    return ds


def _groups_hint(url: str) -> str:
    """'; its groups: /a, /b (pass --group)' for a local NetCDF-4/HDF5 file with groups."""
    if not url.startswith("file://"):
        return ""
    try:
        import h5py

        names: list[str] = []
        with h5py.File(url.removeprefix("file://"), "r") as f:
            f.visit(lambda n: names.append("/" + n) if isinstance(f[n], h5py.Group) else None)
    except Exception:
        return ""
    return f"; its groups: {', '.join(names[:10])} (pass --group)" if names else ""


def _out_array(path: str, var: str, run: str | None, fresh: bool = False) -> Any:
    import zarr

    if fresh:  # validation reads what is on disk, through a new handle
        return zarr.open_array(path, path=var, mode="r")
    key = ("out", run, path, var)
    arr = _CACHE.get(key)
    if arr is None:
        # every chunk is written, all-fill ones too: zarr's check for empty chunks compares
        # each one with the fill value first, a quarter of the CPU a write costs on daily
        # fields (zarr 3.4.2); a job writes whole chunks anyway, and readers see the same
        arr = zarr.open_array(path, path=var, mode="r+",
                              config={"write_empty_chunks": True})
        _CACHE[key] = arr
    return arr


def _read_block(spec: dict[str, Any], var: str, slices: tuple[slice, ...]) -> np.ndarray:
    ds = _open_source(spec)
    v = ds[var].variable
    data = v[slices].values if slices else v.values
    return np.asarray(data)


def _check_unchanged(spec: dict[str, Any]) -> None:
    fp = spec.get("fingerprint")
    if not fp:
        return
    local = [r for r in fp if r[0].startswith("/")]
    now = []
    for p, *_ in local:
        try:
            st = os.stat(p)
            now.append([p, st.st_size, st.st_mtime_ns])
        except OSError:
            now.append([p, None, None])
    changed = _changed(local, now)
    if changed:
        raise SourceChangedError(
            f"the source changed during the conversion ({changed[0]}"
            f"{f' and {len(changed) - 1} more' if len(changed) > 1 else ''}); the output is "
            "left incomplete: run the conversion again with --overwrite")


def run_job(spec: dict[str, Any], job: Job) -> dict[str, Any]:
    """Convert (or, with ``spec['validate']``, check) one job; returns what the driver
    records. Runs in a worker process (pool or Dask) or in the driver."""
    t0 = time.perf_counter()
    try:
        if spec.get("single_file"):
            _check_unchanged(spec)
        data = _read_block(spec, job.var, job.src_slices())
        arr = _out_array(spec["output"], job.var, spec.get("run"),
                         fresh=bool(spec.get("validate")))
        if spec.get("validate"):
            stored = arr[job.out_slices()] if job.out else arr[...]
            diff = _difference(data, np.asarray(stored))
            if diff:
                return {"key": job.key, "ok": False, "error": "verification_failed",
                        "message": f"{job.var}[{_fmt_block(job.out)}]: {diff}"}
        else:
            want = np.dtype(arr.dtype)
            if data.dtype != want:
                data = data.astype(want)
            if job.out:
                arr[job.out_slices()] = data
            else:
                arr[...] = data
        del data
    except ZarrportError as err:
        return {"key": job.key, "ok": False, "error": err.code, "message": str(err)}
    except MemoryError:
        return {"key": job.key, "ok": False, "error": "storage_error",
                "message": f"{job.var}[{_fmt_block(job.out)}]: out of memory; lower "
                           "--max-memory or --workers"}
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as err:
        # what the source's reader raises on damaged data (netCDF4's "HDF error", a codec's
        # error on a corrupt chunk): one line naming the block
        return {"key": job.key, "ok": False, "error": "corrupt_source",
                "message": f"{job.var}[{_fmt_block(job.out)}] of {spec['source']}: "
                           f"{type(err).__name__}: {err}"}
    except OSError as err:
        import errno

        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            return {"key": job.key, "ok": False, "error": "storage_error",
                    "message": f"no space left writing {spec['output']} "
                               f"({_free(spec['output'])} free)"}
        return {"key": job.key, "ok": False, "error": "storage_error",
                "message": f"{job.var}: {err}"}
    return {"key": job.key, "ok": True, "var": job.var, "nbytes": job.nbytes,
            "seconds": time.perf_counter() - t0, "pid": os.getpid(),
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _run_job_payload(payload: tuple[dict[str, Any], Job]) -> dict[str, Any]:
    return run_job(*payload)


def _free(path: str) -> str:
    try:
        return human_bytes(shutil.disk_usage(Path(path)).free)
    except OSError:
        return "?"


def _fmt_block(block: tuple[tuple[int, int], ...]) -> str:
    return ", ".join(f"{a}:{b}" for a, b in block)


def _difference(a: np.ndarray, b: np.ndarray) -> str | None:
    if a.shape != b.shape:
        return f"shape {b.shape} where the source has {a.shape}"
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        same = (a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind in "fc" else (a == b)
    else:
        same = a == b
    if np.all(same):
        return None
    same = np.asarray(same)
    n_bad = int(same.size - np.count_nonzero(same))
    first = tuple(int(i) for i in np.unravel_index(int(np.argmin(same)), same.shape))
    return (f"{n_bad} values differ from the source, first at {first}: "
            f"{a[first]!r} in the source, {b[first]!r} written")


def _ignore_stop_signals() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


# --------------------------------------------------------------------------- the driver


@dataclass
class _State:
    path: Path
    doc: dict[str, Any]
    done: set[str] = field(default_factory=set)

    @property
    def done_path(self) -> Path:
        return self.path / "done"

    def record(self, key: str) -> None:
        with open(self.done_path, "a") as fh:
            fh.write(key + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.done.add(key)

    @classmethod
    def load(cls, out: Path) -> _State | None:
        p = out / STATE_DIR
        try:
            doc = json.loads((p / "convert.json").read_text())
        except (OSError, ValueError):
            return None
        done = set()
        with contextlib.suppress(OSError):
            text = (p / "done").read_text()
            lines = text.split("\n")[:-1]  # a last line without its newline was torn
            done = {line.strip() for line in lines if line.strip()}
        return cls(p, doc, done)


def _options_hash(doc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _is_zarr_dir(p: Path) -> bool:
    return (p / "zarr.json").is_file() or (p / ".zgroup").is_file() or (p / ".zarray").is_file()


def _store_sizes(out: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for child in out.iterdir():
        if child.is_dir() and child.name != STATE_DIR:
            sizes[child.name] = sum(f.stat().st_size for f in child.rglob("*") if f.is_file())
    return sizes


def is_incomplete(url: str) -> dict[str, Any] | None:
    """The conversion record of a Zarr store zarrport has not finished writing, else None."""
    if not url.startswith("file://"):
        return None
    p = Path(url.removeprefix("file://")) / "zarr.json"
    try:
        attrs = json.loads(p.read_text()).get("attributes") or {}
    except (OSError, ValueError):
        return None
    rec = attrs.get(MARKER)
    if isinstance(rec, dict) and rec.get("status") != "complete":
        return rec
    return None


def convert(source: str, output: str, *, plan: Plan | str | Path | None = None,
            pattern: str = "auto", storage_kind: str = "cloud",
            target_chunk_mb: float | None = None, shards: bool = False,
            codec: str = "zstd", level: int | None = None,
            max_memory: int | str | None = 2 * GB, workers: int | None = None,
            scheduler: Any = None, select: dict[str, tuple[str, str]] | list[str] | None = None,
            bbox: tuple[float, float, float, float] | str | None = None,
            variables: list[str] | None = None, validate: bool = False,
            overwrite: bool = False, strict: bool = False, decoded: bool = False,
            group: str | None = None, skip_unsupported: bool = False,
            storage_options: dict | None = None,
            progress: Callable[[int, int, dict[str, Any]], None] | None = None,
            warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Convert ``source`` (anything :func:`zarrport.open_dataset` opens) into a Zarr v3 store
    at ``output`` (a local path). Returns the summary (also what ``--json`` prints).

    ``plan`` is a :class:`Plan` or the path of one saved by ``zarrport plan --json``;
    without it one is made from ``pattern``/``storage_kind``/``target_chunk_mb``/``shards``.
    ``max_memory`` bounds each worker (the whole process, ``WORKER_BASELINE`` included).
    ``progress(done, total, result)`` is called after every job.
    """
    from zarrport.open import detect, open_dataset

    t_start = time.perf_counter()
    run_id = os.urandom(8).hex()  # this call's worker caches (see _open_source)
    warn = warn or (lambda msg: warnings.warn(msg, stacklevel=2))
    max_mem = memory_limit(max_memory)
    src_url = storage.normalize_url(source)
    out = local_output(src_url, output, "convert")
    kind = detect(src_url, storage_options)
    if kind == "batch":
        raise InvalidArgumentError(
            f"{source} is a batch output: convert one of its collections (zarrport info "
            f"{source} lists them)")
    if isinstance(select, (list, tuple)):
        select = parse_select(select)
    if isinstance(bbox, str):
        bbox = parse_bbox(bbox)
    codec_chain(codec, level, 4)  # a bad codec or level fails before anything is opened

    skipped: list[str] = []
    # an Icechunk source is read at one snapshot by the driver and every worker: a commit
    # landing meanwhile cannot mix two versions into the copy
    version = _pin_snapshot(src_url, kind, storage_options)
    ds = open_source(src_url, storage_options, decoded, group, skip_unsupported, skipped,
                     version)
    sel: dict[str, tuple[int, int]] = {}
    ds_dec = None
    if select or bbox:
        ds_dec = open_dataset(src_url, storage_options=storage_options,
                              **({"group": group} if group else {}))
        sel = selection_slices(ds_dec, select or {}, bbox)
    names = convertible_variables(ds, variables)
    # what kept variables point at comes along: bounds, grid mappings (often scalar),
    # ancillary variables, climatology bounds, cell measures
    for c in list(ds.coords.values()) + [ds[n] for n in list(names)]:
        for key in ("bounds", "grid_mapping", "ancillary_variables", "climatology",
                    "cell_measures"):
            for ref in _named(c.attrs.get(key)):
                if ref in ds.data_vars and ref not in names:
                    names.append(ref)
    full = ds
    ds = ds[names]
    if sel:
        ds = ds.isel({d: slice(a, b) for d, (a, b) in sel.items()})
        _alignment_check(full, ds_dec, names, sel, strict, warn)

    # the plan
    if plan is not None and not isinstance(plan, Plan):
        plan = Plan.load(plan)
    n_workers = _worker_count(workers, scheduler)
    threads = 1
    client_ctx = _dask_client(scheduler)
    client = client_ctx.__enter__()
    pool = None
    try:
        big = sum(ds[n].size * ds[n].dtype.itemsize for n in ds.data_vars)
        if client is None and n_workers > 1 and big > EARLY_POOL_BYTES:
            pool = _Pool(n_workers, warm={"source": src_url, "group": group, "run": run_id,
                                          "version": version,
                                          "storage_options": storage_options,
                                          "decoded": decoded})
        if client is not None:
            threads = max(1, max((w.get("nthreads", 1) for w in
                                  client.scheduler_info()["workers"].values()), default=1))
            n_workers = max(1, len(client.scheduler_info()["workers"]))
        per_job_mem = None if not max_mem else WORKER_BASELINE + (
            max_mem - WORKER_BASELINE) // threads
        if plan is None:
            plan = make_plan(ds, src_url, pattern=pattern, storage=storage_kind,
                             target_chunk_bytes=int(target_chunk_mb * 2**20)
                             if target_chunk_mb is not None else None,
                             shards=shards, max_memory=per_job_mem, variables=names)
        else:
            plan = _select_plan(plan, names, variables)
            # what the plan leaves out is left out (not loaded whole into the template)
            ds = ds[[n for n in plan.variables if n in ds.data_vars]]
            check_plan(plan, ds, per_job_mem)
        for n in plan.variables:
            if n not in ds.variables:
                raise InvalidArgumentError(f"the plan names variable {n!r}, which the "
                                           f"source does not have")
        codecs_for = {n: codec_chain(codec, level, np.dtype(vp.dtype).itemsize)
                      for n, vp in plan.variables.items()}

        # the jobs
        budget = None if not per_job_mem else per_job_mem - WORKER_BASELINE
        jobs: list[Job] = []
        inline = _inline_variables(plan)
        for n, vp in plan.variables.items():
            if n in inline:
                continue
            v = ds[n]
            src_chunks, _ = source_chunking(full[n])
            offsets = tuple(sel.get(d, (0, 0))[0] for d in v.dims)
            jobs += make_jobs(n, tuple(v.shape), src_chunks, offsets, vp.write_unit, vp.chunks,
                              np.dtype(v.dtype).itemsize, vp.itemsize, budget,
                              min_jobs=MIN_JOBS)
        fingerprint = source_fingerprint(src_url, kind, storage_options)
        doc = {"source": src_url, "plan": plan.to_dict(), "codec": codec, "level": level,
               "select": {k: list(v) for k, v in sel.items()}, "decoded": decoded,
               "group": group,
               "jobs": len(jobs), "inline": sorted(inline),
               # the blocks themselves: a resume must mean the same job keys cover the same
               # blocks (a --plan with another --max-memory can give as many, cut elsewhere)
               "blocks": hashlib.sha256(json.dumps(
                   [(j.var, j.out) for j in jobs]).encode()).hexdigest()}
        options = _options_hash(doc)
        state = _prepare(out, options, fingerprint, overwrite)
        if state is None:  # a fresh start: the metadata of the whole store, then the state
            try:
                _write_template(ds, plan, codecs_for, out, doc)
                state = _start_state(out, options, fingerprint)
            except BaseException:
                shutil.rmtree(out, ignore_errors=True)
                raise
        spec = {"source": src_url, "storage_options": storage_options, "decoded": decoded,
                "group": group, "run": run_id, "version": version,
                "output": str(out), "fingerprint": fingerprint,
                "single_file": kind in ("netcdf4", "netcdf3", "grib")}
        todo = [j for j in jobs if j.key not in state.done]
        stats = _Stats()
        done0 = len(jobs) - len(todo)
        _run(todo, spec, client, n_workers, state, stats, progress, done0, len(jobs),
             src_url, kind, storage_options, fingerprint, pool=pool)
        if _changed(fingerprint, source_fingerprint(src_url, kind, storage_options)):
            raise SourceChangedError(
                f"{source} changed during the conversion; {output} is left incomplete: run "
                "it again with --overwrite")
        _finish(out, doc)
        summary = _summary(out, plan, jobs, stats, t_start, src_url, done0, codec, level)
        summary["skipped"] = skipped
        for n in inline:
            summary["variables"][n]["bytes_read"] = summary["variables"][n]["uncompressed_bytes"]
            summary["bytes_read"] += summary["variables"][n]["uncompressed_bytes"]
        if validate:
            t_v = time.perf_counter()
            vstats = _Stats()
            vspec = dict(spec, validate=True)
            _run(jobs, vspec, client, n_workers, None, vstats, None, 0, len(jobs), src_url,
                 kind, storage_options, fingerprint, what="validating", pool=pool)
            _validate_metadata(src_url, str(out), storage_options, decoded, plan, group,
                               inline, sel, version)
            summary["validated"] = {"jobs": len(jobs), "values": int(sum(
                math.prod(b - a for a, b in j.out) for j in jobs) + sum(
                math.prod(plan.variables[n].shape) for n in inline)),
                "seconds": round(time.perf_counter() - t_v, 3)}
        return summary
    finally:
        if pool is not None:
            pool.close()
        client_ctx.__exit__(None, None, None)


def _select_plan(plan: Plan, names: list[str], variables: list[str] | None) -> Plan:
    if variables:
        missing = [v for v in variables if v not in plan.variables]
        if missing:
            raise InvalidArgumentError(f"the plan has no variable {', '.join(missing)}; it "
                                       f"plans {', '.join(plan.variables)}")
        plan.variables = {k: v for k, v in plan.variables.items() if k in variables}
    return plan


def local_output(src_url: str, output: str, command: str) -> Path:
    """The local directory ``output`` names; refused when remote (``command`` writes local
    stores), or when it is, holds or sits inside the source."""
    out_url = storage.normalize_url(output)
    if not out_url.startswith("file://"):
        raise InvalidArgumentError(
            f"{output}: {command} writes to a local directory; copy the store to object "
            "storage afterwards (e.g. with `aws s3 sync` or `azcopy`)")
    out = Path(out_url.removeprefix("file://"))
    if src_url.startswith("file://"):
        src_path = Path(src_url.removeprefix("file://")).resolve()
        o = out.resolve()
        if o == src_path or src_path in o.parents or o in src_path.parents:
            raise InvalidArgumentError(
                f"the output {output} is, holds or sits inside the source "
                f"{src_url.removeprefix('file://')}; write it elsewhere")
    return out


def _pin_snapshot(url: str, kind: str, storage_options: dict | None) -> dict[str, Any]:
    """``{"snapshot": id}`` of the tip of ``main`` for an Icechunk source, else {}."""
    if kind != "icechunk":
        return {}
    from zarrport.history import open_repository

    return {"snapshot": open_repository(url, storage_options).lookup_branch("main")}


def _named(value: Any) -> list[str]:
    """Variable names in a CF attribute: 'crs', 'a b', 'area: cell_area', 'crs: x y'."""
    if not isinstance(value, str):
        return []
    return [w for w in value.replace(":", " ").split() if w]


def _alignment_check(ds: Any, ds_dec: Any, names: list[str], sel: dict[str, tuple[int, int]],
                     strict: bool, warn: Callable[[str], None]) -> None:
    """A selection whose edges fall inside source chunks reads those chunks whole and keeps
    part of them: a warning (an error with ``strict``) naming the aligned selection."""
    seen = set()
    big = sorted(names, key=lambda n: -ds[n].size)[:1] + [
        n for n in names if ds[n].size >= 2**20]
    for n in dict.fromkeys(big):
        src_chunks, layout = source_chunking(ds[n])
        if layout == "contiguous":
            continue
        for d, (a, b) in sel.items():
            if d not in ds[n].dims:
                continue
            sc = src_chunks[ds[n].dims.index(d)]
            wider = cuts_source_chunks(a, b, ds.sizes[d], sc)
            if wider is None or (d, sc) in seen:
                continue
            seen.add((d, sc))
            labels = ""
            if d in ds_dec.indexes:
                idx = ds_dec.indexes[d]
                labels = f", i.e. {d}={_fmt_label(idx[wider[0]])}:" \
                         f"{_fmt_label(idx[wider[1] - 1])}"
            msg = (f"the selection {d}[{a}:{b}] cuts {n}'s source chunks of {sc} along {d}: "
                   f"their edges are read but not kept; the aligned selection is "
                   f"{d}[{wider[0]}:{wider[1]}]{labels}")
            if strict:
                raise InvalidArgumentError(msg + " (--strict)")
            warn(msg)


def _fmt_label(v: Any) -> str:
    if hasattr(v, "strftime"):
        midnight = (getattr(v, "hour", 0), getattr(v, "minute", 0), getattr(v, "second", 0))
        return v.strftime("%Y-%m-%d" if midnight == (0, 0, 0) else "%Y-%m-%dT%H:%M:%S")
    return f"{v:g}" if isinstance(v, float | np.floating) else str(v)


def _worker_count(workers: int | None, scheduler: Any) -> int:
    if workers is not None and workers < 1:
        raise InvalidArgumentError("--workers must be at least 1")
    return workers or min(os.cpu_count() or 1, 8)


@contextlib.contextmanager
def _dask_client(scheduler: Any) -> Iterator[Any]:
    from zarrport.pipeline.batch import _dask_client as batch_client

    with batch_client(scheduler) as client:
        yield client


def _prepare(out: Path, options: str, fingerprint: list, overwrite: bool
             ) -> _State | None:
    """The state of an unfinished conversion of the same job (to resume), or None after
    clearing the way for a fresh one (refusing to replace what exists unless ``overwrite``;
    an unfinished zarrport conversion that never recorded its state is replaced)."""
    if out.exists():
        state = _State.load(out)
        if state is not None and not overwrite:
            if state.doc.get("options") != options:
                raise OutputExistsError(
                    f"{out} holds an unfinished conversion with other options or another "
                    "source; run that command again to finish it, or pass --overwrite")
            if _changed(state.doc.get("fingerprint") or [], fingerprint):
                raise OutputExistsError(
                    f"{out} holds an unfinished conversion, but the source changed since it "
                    "started; pass --overwrite to start again")
            return state
        ours = state is None and is_incomplete("file://" + str(out)) is not None
        if not overwrite and not ours:
            raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
        if out.is_file() or (out.is_dir() and any(out.iterdir()) and not _is_zarr_dir(out)):
            raise OutputExistsError(
                f"{out} exists and is not a Zarr store; zarrport will not delete it")
        shutil.rmtree(out)
    if not out.parent.is_dir():
        raise OutputNotWritableError(f"cannot write {out}: {out.parent} is not a directory")
    if not os.access(out.parent, os.W_OK):
        raise OutputNotWritableError(f"cannot write {out}: {out.parent} is not writable")
    return None


def _start_state(out: Path, options: str, fingerprint: list) -> _State:
    state_doc = {"options": options, "fingerprint": fingerprint,
                 "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    tmp = out / STATE_DIR / "convert.json.tmp"
    tmp.write_text(json.dumps(state_doc))
    tmp.replace(out / STATE_DIR / "convert.json")
    return _State(out / STATE_DIR, state_doc)


#: variables of at most this size that fit one chunk are written with the metadata, from the
#: driver, instead of one job each (a file of 2,000 ten-value variables is 2,000 jobs else)
INLINE_VARIABLE_BYTES = 8 * 2**20
INLINE_TOTAL_BYTES = 128 * 2**20


def _inline_variables(plan: Plan) -> set[str]:
    out, total = set(), 0
    for n, vp in sorted(plan.variables.items(), key=lambda kv: math.prod(kv[1].shape)):
        nbytes = math.prod(vp.shape) * vp.itemsize
        if (nbytes <= INLINE_VARIABLE_BYTES and tuple(vp.chunks) == tuple(vp.shape)
                and total + nbytes <= INLINE_TOTAL_BYTES):
            out.add(n)
            total += nbytes
    return out


def _write_template(ds: Any, plan: Plan, codecs_for: dict[str, list], out: Path,
                    doc: dict[str, Any]) -> None:
    import dask.array as da
    import xarray as xr

    inline = set(doc.get("inline") or ())
    encoding: dict[str, dict[str, Any]] = {}
    variables: dict[str, Any] = {}
    # built from variables in one go: assigning 2,000 variables one by one to a Dataset
    # realigns it each time (minutes)
    for name, var in ds.variables.items():
        vp = plan.variables.get(name)
        if vp is None:
            v = var.copy(deep=False)
            v.encoding = {}
            variables[name] = v.load()  # coordinates: small, written now
            continue
        if name in inline:  # written now, with the metadata
            data = np.asarray(var.values).astype(vp.dtype, copy=False)
        else:
            # one Dask chunk: never computed (compute=False), and a graph of one task
            # however small the Zarr chunks are
            data = da.empty(var.shape, dtype=vp.dtype, chunks=-1)
        variables[name] = xr.Variable(var.dims, data, attrs=dict(var.attrs))
        enc: dict[str, Any] = {"chunks": vp.chunks, "compressors": codecs_for[name]}
        if vp.shards:
            enc["shards"] = vp.shards
        if doc["decoded"] and np.dtype(vp.dtype).kind == "f" and "_FillValue" not in var.attrs:
            enc["_FillValue"] = np.nan
        encoding[name] = enc
    tmpl = xr.Dataset({n: variables[n] for n in ds.data_vars},
                      coords={n: variables[n] for n in ds.coords}, attrs=dict(ds.attrs))
    tmpl.attrs[MARKER] = {"status": "incomplete", "command": "convert", "jobs": doc["jobs"],
                          "source": doc["source"]}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tmpl.to_zarr(str(out), mode="w", compute=False, zarr_format=3,
                         consolidated=False, encoding=encoding)
    except OSError as err:
        shutil.rmtree(out, ignore_errors=True)
        raise StorageError(f"cannot write the metadata of {out}: {err.strerror or err}") \
            from err


class _Stats:
    def __init__(self) -> None:
        self.bytes_read: dict[str, int] = {}
        self.peak: dict[int, int] = {}

    def add(self, r: dict[str, Any]) -> None:
        v = r["var"]
        self.bytes_read[v] = self.bytes_read.get(v, 0) + r["nbytes"]
        self.peak[r["pid"]] = max(self.peak.get(r["pid"], 0), r["peak_rss"])


def _results(jobs: list[Job], spec: dict[str, Any], client: Any, n_workers: int,
             pool: _Pool | None = None) -> Iterator[dict[str, Any]]:
    if client is not None:
        from distributed import as_completed

        futures = client.map(run_job, [spec] * len(jobs), jobs, pure=False)
        try:
            for fut in as_completed(futures, loop=client.loop):
                yield fut.result()
        finally:
            client.cancel(futures)
        return
    if pool is None and (n_workers <= 1 or len(jobs) < 2):
        for j in jobs:
            yield run_job(spec, j)
        return
    import concurrent.futures as cf

    own = pool is None
    if own:
        pool = _Pool(min(n_workers, len(jobs)))
    try:
        futures = [pool.executor.submit(run_job, spec, j) for j in jobs]
        try:
            for fut in cf.as_completed(futures):
                try:
                    result = fut.result()
                except cf.process.BrokenProcessPool as err:
                    raise StorageError(
                        "a worker process died (killed, or out of memory?); lower "
                        "--max-memory or --workers, then run the same command again to "
                        "resume") from err
                yield result
        finally:
            for f in futures:
                f.cancel()
    finally:
        if own:
            pool.close()


class _Pool:
    """The local worker processes (forkserver). Started early on large conversions, each
    worker importing its libraries and opening the source while the driver plans and writes
    the metadata; the same workers then convert and validate."""

    def __init__(self, n: int, warm: dict[str, Any] | None = None) -> None:
        import concurrent.futures as cf
        import multiprocessing

        ctx = multiprocessing.get_context("forkserver")
        self.n = n
        self.executor = cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx,
                                               initializer=_ignore_stop_signals)
        self.warming = [self.executor.submit(_warm, warm) for _ in range(n)] if warm else []

    def close(self) -> None:
        for f in self.warming:
            f.cancel()
        self.executor.shutdown(wait=True, cancel_futures=True)


def _warm(spec: dict[str, Any]) -> None:
    """In a new worker: import and open the source now (errors surface in the jobs)."""
    with contextlib.suppress(Exception):
        _open_source(spec)
        import zarr  # noqa: F401


#: sources holding more than this start their worker pool before planning
EARLY_POOL_BYTES = 256 * 2**20


def _run(jobs: list[Job], spec: dict[str, Any], client: Any, n_workers: int,
         state: _State | None, stats: _Stats, progress: Any, done0: int, total: int,
         src_url: str, kind: str, storage_options: dict | None, fingerprint: list,
         what: str = "converting", pool: _Pool | None = None) -> None:
    done = done0
    last_check = time.monotonic()
    for r in _results(jobs, spec, client, n_workers, pool):
        if not r["ok"]:
            cls = {"verification_failed": VerificationError, "source_changed": SourceChangedError,
                   "storage_error": StorageError,
                   "corrupt_source": CorruptSourceError}.get(r["error"], ZarrportError)
            raise cls(r["message"])
        if state is not None:
            state.record(r["key"])
        stats.add(r)
        done += 1
        if progress is not None:
            progress(done, total, r)
        if state is not None and time.monotonic() - last_check > 2.0:
            last_check = time.monotonic()
            changed = _changed(fingerprint, source_fingerprint(src_url, kind,
                                                               storage_options))
            if changed:
                raise SourceChangedError(
                    f"the source changed during the conversion ({changed[0]}); the output is "
                    "left incomplete: run the conversion again with --overwrite")


def _finish(out: Path, doc: dict[str, Any]) -> None:
    import zarr

    g = zarr.open_group(str(out), mode="r+", zarr_format=3)
    rec = dict(g.attrs.get(MARKER) or {})
    rec.update(status="complete",
               finished=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    g.attrs[MARKER] = rec
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata is not in the v3 spec yet
        zarr.consolidate_metadata(str(out))


def _summary(out: Path, plan: Plan, jobs: list[Job], stats: _Stats, t0: float, src: str,
             resumed: int, codec: str, level: int | None) -> dict[str, Any]:
    sizes = _store_sizes(out)
    per_var = {}
    for n, vp in plan.variables.items():
        raw = math.prod(vp.shape) * vp.itemsize
        written = sizes.get(n, 0)
        per_var[n] = {"chunks": list(vp.chunks), "shards": list(vp.shards) if vp.shards else None,
                      "jobs": sum(1 for j in jobs if j.var == n),
                      "bytes_read": stats.bytes_read.get(n, 0), "bytes_written": written,
                      "uncompressed_bytes": raw,
                      "compression_ratio": round(raw / written, 3) if written else None}
    return {"source": src, "output": str(out), "codec": codec, "level": level,
            "jobs": len(jobs), "resumed_from": resumed,
            "bytes_read": sum(stats.bytes_read.values()),
            "bytes_written": sum(sizes.values()),
            "seconds": round(time.perf_counter() - t0, 3),
            "peak_memory_per_worker": sorted(stats.peak.values(), reverse=True),
            "variables": per_var}


def _validate_metadata(src: str, out: str, storage_options: dict | None, decoded: bool,
                       plan: Plan, group: str | None, inline: set[str],
                       sel: dict[str, tuple[int, int]], version: dict[str, Any]) -> None:
    """Coordinates and attributes of the output match the source's (values are checked by
    the validation jobs)."""
    from zarrport.open import open_dataset

    a = open_dataset(src, storage_options=storage_options,
                     **_open_kwargs(decoded, group, version))
    if sel:  # the part converted
        a = a.isel({d: slice(lo, hi) for d, (lo, hi) in sel.items()})
    b = open_dataset("file://" + out, **_open_kwargs(decoded))
    for name in b.variables:
        if name not in a.variables:
            raise VerificationError(f"{out} has {name}, which the source does not")
        av, bv = a[name].variable, b[name].variable
        for k, val in av.attrs.items():
            got = bv.attrs.get(k)
            if k == "_FillValue" and got is None:
                got = bv.encoding.get("_FillValue")
            if not _same_attr(val, got):
                raise VerificationError(f"{name}: attribute {k} is {got!r} in the output, "
                                        f"{val!r} in the source")
        if name not in plan.variables or name in inline:
            diff = _difference(np.asarray(av.values), np.asarray(bv.values))
            if diff:
                raise VerificationError(f"{name}: {diff}")


def _same_attr(a: Any, b: Any) -> bool:
    if isinstance(a, (np.ndarray, list, tuple)) or isinstance(b, (np.ndarray, list, tuple)):
        try:
            return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
        except TypeError:
            return bool(np.all(np.asarray(a) == np.asarray(b)))
    if isinstance(a, float | np.floating) and isinstance(b, float | np.floating):
        return a == b or (np.isnan(a) and np.isnan(b))
    return a == b or str(a) == str(b)
