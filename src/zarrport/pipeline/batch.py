"""``run_batch``: reference a whole archive, one combined Icechunk dataset per collection.

A batch lists its sources (a glob or a prefix, on disk, S3 or Azure), compares each with the
status ledger, and references only what is new, changed, or failed transiently before. Each
source is parsed by a worker -- a process pool on one machine, or the workers of an existing
Dask cluster -- which writes the source's own kerchunk JSON and returns its model. The
driver records every result in the ledger as it arrives, then combines each collection that
changed from the ledger's models (ordered by decoded coordinate) and commits it to the
collection's Icechunk repository: one commit per collection per run, listing what was added,
changed and removed. Nothing half-written is ever visible: per-source files are written aside
and moved, a new repository is created aside and moved, and an Icechunk commit is atomic.
A ``kill -9`` at any moment leaves the previous state readable, and a re-run resumes.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as dt
import fnmatch
import os
import random
import re
import socket
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zarrport import storage
from zarrport.errors import (
    InvalidArgumentError,
    OutputNotWritableError,
    SourceNotFoundError,
    StorageError,
    ZarrportError,
)
from zarrport.pipeline import layout
from zarrport.pipeline.collections import CollectionPattern, safe_id
from zarrport.pipeline.ledger import FAILED, MISSING, OK, SKIPPED, Ledger
from zarrport.virtual.parse import ParseOptions

#: file names a prefix listing picks up (a glob picks what it matches)
DEFAULT_INCLUDE = ("*.nc", "*.nc4", "*.h5", "*.hdf5", "*.he5", "*.cdf", "*.netcdf",
                   "*.grib", "*.grib1", "*.grib2", "*.grb", "*.grb2")

#: error codes worth trying again on the next run (the file itself may be fine)
RETRY_NEXT_RUN = frozenset({"storage_error", "internal_error"})

#: how long to try reaching a Dask scheduler given by address
SCHEDULER_TIMEOUT_S = 10

#: called as sources finish: (done, total, url, outcome)
Progress = Callable[[int, int, str, str], None]

_TRANSIENT_TEXT = re.compile(
    r"time(d)? ?out|timeout|connection (reset|aborted|refused|closed|error)|reset by peer|"
    r"broken pipe|server ?disconnected|incomplete ?read|payload|"
    r"\b50[0-9]\b|slow ?down|internal ?error|service ?unavailable|temporar|"
    r"try again|throttl|too many requests|\b429\b|eof occurred|remote end closed|"
    r"connection was closed|error sending request|operation timed out",
    re.IGNORECASE,
)


@dataclass
class Source:
    url: str
    relpath: str
    stat: dict[str, Any]


@dataclass
class BatchResult:
    output: str
    ledger: str
    root: str
    seconds: float = 0.0
    #: sources per outcome of this run: new, changed, unchanged, failed, skipped, missing
    counts: dict[str, int] = field(default_factory=dict)
    #: sources that needed more than one attempt in this run and then succeeded
    retried: int = 0
    collections: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: sources whose names do not match the collection pattern: {"url", "reason"}
    skipped: list[dict[str, Any]] = field(default_factory=list)
    #: bytes of source chunks the collections reference, and bytes of references written
    referenced_bytes: int = 0
    reference_bytes: int = 0
    #: tasks per worker (host:pid, or the Dask worker address)
    workers: dict[str, int] = field(default_factory=dict)
    stac: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.failures and not any(c.get("error") for c in self.collections.values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


# --------------------------------------------------------------------------- listing


def _etag(value: Any) -> str | None:
    return None if value in (None, "") else str(value).strip('"')


def _stat_from_info(url: str, info: dict[str, Any]) -> dict[str, Any]:
    mtime = info.get("mtime")
    if mtime is None:
        for key in ("LastModified", "last_modified", "updated"):
            value = info.get(key)
            if isinstance(value, dt.datetime):
                mtime = value.timestamp()
                break
    etag = _etag(info.get("ETag") or info.get("etag"))
    return {"url": url, "size": int(info.get("size") or 0),
            "mtime": float(mtime) if mtime is not None else None, "etag": etag}


def same_stat(row: dict[str, Any], stat: dict[str, Any]) -> bool:
    """True when a listing says the source is what the ledger recorded: same size, and the
    same ETag where both have one, else a modification time within a second (object stores
    report whole seconds)."""
    if row.get("size") != stat.get("size"):
        return False
    a, b = _etag(row.get("etag")), _etag(stat.get("etag"))
    if a and b:
        return a == b
    ma, mb = row.get("mtime"), stat.get("mtime")
    if ma is None or mb is None:
        return ma is None and mb is None
    return abs(float(ma) - float(mb)) < 1.0


def _join(scheme: str, path: str) -> str:
    return storage.normalize_url(path) if scheme == "file" else f"{scheme}://{path}"


def discover(spec: str, storage_options: dict | None = None,
             include: Iterable[str] = DEFAULT_INCLUDE) -> tuple[str, list[Source]]:
    """(root URL, sources) of a glob or a prefix. The root is the directory the relative
    paths are taken from: the part of a glob before its first wildcard, or the prefix."""
    url = storage.normalize_url(spec)
    scheme, rest = url.split("://", 1)
    fs, path = storage.filesystem(url, storage_options)
    fs.invalidate_cache()  # a cached listing from an earlier run in this process is stale
    include = tuple(include)
    if any(ch in rest for ch in "*?["):
        static = re.split(r"[*?\[]", path, maxsplit=1)[0]
        root_path = static.rsplit("/", 1)[0] if "/" in static else static
        try:
            found = fs.glob(path, detail=True)
        except Exception as err:  # endpoint unreachable, access denied ...: one line
            raise StorageError(f"cannot list {spec}: {_one_line(err)}",
                               source=url) from err
        infos = {p: i for p, i in found.items() if i.get("type", "file") == "file"}
    else:
        try:
            info = fs.info(path)
        except FileNotFoundError as err:
            raise SourceNotFoundError(f"nothing at {spec}", source=url) from err
        except Exception as err:
            raise StorageError(f"cannot list {spec}: {type(err).__name__}: {err}",
                               source=url) from err
        if info.get("type") == "directory":
            root_path = path.rstrip("/")
            found = fs.find(path, detail=True)
            infos = {p: i for p, i in found.items()
                     if any(fnmatch.fnmatch(p.rsplit("/", 1)[-1], pat) for pat in include)}
        else:
            root_path = path.rsplit("/", 1)[0]
            infos = {path: info}
    root = _join(scheme, root_path.rstrip("/") or "/")
    out = []
    for p in sorted(infos):
        name = p.rsplit("/", 1)[-1]
        if name.startswith("."):  # hidden / temporary files of writers in progress
            continue
        src_url = _join(scheme, p)
        rel = p[len(root_path):].lstrip("/") if p.startswith(root_path) else name
        out.append(Source(src_url, rel, _stat_from_info(src_url, infos[p])))
    return root, out


def _nothing_found(spec: str, include: Iterable[str]) -> str:
    if any(ch in spec.split("://", 1)[-1] for ch in "*?["):
        return f"no file matches {spec}"
    return (f"no source files under {spec} (looked for {', '.join(include)}; see --include)")


def explicit_sources(urls: Iterable[str], root: str | None,
                     storage_options: dict | None) -> tuple[str, list[Source], list[tuple]]:
    """Sources named one by one (e.g. by a trigger): each is stat-ed; those that cannot be
    are returned as (url, error) failures."""
    norm = [storage.normalize_url(u) for u in urls]
    if not norm:
        raise InvalidArgumentError("no sources given")
    if root is None:
        root = os.path.commonpath([u.split("://", 1)[1].rsplit("/", 1)[0] for u in norm])
        root = _join(norm[0].split("://", 1)[0], root)
    out, failed = [], []
    for u in norm:
        try:
            st = storage.stat(u, storage_options).to_dict()
        except ZarrportError as err:
            failed.append((u, err))
            continue
        st["etag"] = _etag(st.get("etag"))
        rel = u[len(root):].lstrip("/") if u.startswith(root) else u.rsplit("/", 1)[-1]
        out.append(Source(u, rel, st))
    return root, out, failed


# --------------------------------------------------------------------------- worker


def is_transient(err: BaseException) -> bool:
    """Could trying again help? Timeouts, dropped connections, 5xx, throttling: yes. A file
    that is not NetCDF, truncated, unsupported, missing or forbidden: no."""
    seen = 0
    e: BaseException | None = err
    while e is not None and seen < 10:
        if isinstance(e, ZarrportError) and e.code not in ("storage_error", "zarrport_error"):
            return False
        if isinstance(e, PermissionError | FileNotFoundError | IsADirectoryError):
            return False
        if isinstance(e, TimeoutError | ConnectionError):
            return True
        text = f"{type(e).__name__}: {e}"
        if re.search(r"\b40[134]\b|AccessDenied|Forbidden|NoSuchKey|NoSuchBucket", text):
            return False
        if _TRANSIENT_TEXT.search(text):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def _error_code(err: BaseException, transient: bool) -> str:
    if transient:
        return "storage_error"
    if isinstance(err, ZarrportError):
        return err.code
    if isinstance(err, PermissionError):
        return "permission_denied"
    return "internal_error"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, PermissionError):
        return f"permission denied ({text})"
    if not isinstance(err, ZarrportError):
        text = f"{type(err).__name__}: {text}"
    return text[:500]


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def reference_source(task: dict[str, Any]) -> dict[str, Any]:
    """Parse one source and write its kerchunk JSON; runs in a worker process.

    Transient storage errors are retried with exponential backoff and jitter (the storage
    clients retry single requests underneath; this retries the whole file). Returns the
    model as compressed pickle bytes so the driver stores it in the ledger unchanged.
    """
    import pickle

    from zarrport.virtual.api import provenance, write
    from zarrport.virtual.parse import parse_source

    url = task["url"]
    attempts = 0
    t0 = time.perf_counter()
    while True:
        attempts += 1
        try:
            vds = parse_source(url, task["storage_options"], task["options"])
            if task.get("refs_url"):
                write(vds, task["refs_url"], "json", storage_options=task["storage_options"],
                      output_storage_options=task["output_storage_options"], overwrite=True,
                      provenance=provenance(vds, None, task["options"].group))
            summary = vds.summary()
            return {
                "url": url, "ok": True, "attempts": attempts, "worker": _worker_name(),
                "seconds": time.perf_counter() - t0,
                "referenced_bytes": summary["referenced_bytes"],
                "model": zlib.compress(pickle.dumps(vds, protocol=pickle.HIGHEST_PROTOCOL), 1),
            }
        except Exception as err:
            transient = is_transient(err)
            if transient and attempts <= task["retries"]:
                delay = min(task["backoff"] * 2 ** (attempts - 1), 30.0)
                time.sleep(delay * (0.5 + random.random()))
                continue
            return {"url": url, "ok": False, "attempts": attempts, "worker": _worker_name(),
                    "transient": transient, "code": _error_code(err, transient),
                    "reason": _one_line(err).removeprefix(f"{url}: ")}


def _run_tasks(tasks: list[dict[str, Any]], workers: int | None, scheduler: Any
               ) -> Iterator[dict[str, Any]]:
    """Results of ``reference_source`` over ``tasks`` as they complete."""
    if not tasks:
        return
    if scheduler is not None:
        yield from _run_on_dask(tasks, scheduler)
        return
    n = workers or min(os.cpu_count() or 1, 8)
    if n <= 1 or len(tasks) < 4:
        for t in tasks:
            yield reference_source(t)
        return
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    pool = cf.ProcessPoolExecutor(max_workers=min(n, len(tasks)), mp_context=ctx,
                                  initializer=_ignore_stop_signals)
    try:
        futures = [pool.submit(reference_source, t) for t in tasks]
        for fut in cf.as_completed(futures):
            yield fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ignore_stop_signals() -> None:
    """Pool workers leave Ctrl-C / SIGTERM to the driver, which stops them cleanly (a
    terminal's Ctrl-C and ``kill -TERM -PGID`` reach the whole process group)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextlib.contextmanager
def _dask_client(scheduler: Any) -> Iterator[Any]:
    """The ``distributed.Client`` for a scheduler address (closed at the end) or the one
    passed in (left open); None without a scheduler."""
    if scheduler is None:
        yield None
        return
    from zarrport.extras import require

    require("dask", what="a batch on a Dask scheduler")
    from distributed import Client

    if isinstance(scheduler, Client):
        yield scheduler
        return
    try:
        client = Client(scheduler, timeout=SCHEDULER_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as err:
        raise InvalidArgumentError(f"cannot reach the Dask scheduler at {scheduler}: {err}") \
            from err
    try:
        yield client
    finally:
        client.close()


def _run_on_dask(tasks: list[dict[str, Any]], client: Any) -> Iterator[dict[str, Any]]:
    from distributed import as_completed

    futures = client.map(reference_source, tasks, pure=False, retries=1)
    # the client's own loop: as_completed otherwise looks for a *default* client, which a
    # Client(..., set_as_default=False) passed in is not ("No clients found")
    for fut in as_completed(futures, loop=client.loop):
        yield fut.result()


# --------------------------------------------------------------------------- the run


def _ledger_path(output: str, ledger: str | None) -> Path:
    if ledger:
        return Path(ledger).expanduser().resolve()
    if not output.startswith("file://"):
        raise InvalidArgumentError(
            f"{output} is remote: pass --ledger PATH (a local file) for the status ledger"
        )
    return Path(output.removeprefix("file://")) / layout.LEDGER


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """One batch at a time per ledger (a second run, or a watch, waits its turn no more
    than a moment: it fails with a clear message instead)."""
    import fcntl

    with open(path.with_name(path.name + ".lock"), "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise OutputNotWritableError(
                f"another zarrport batch or watch is running on {path.parent} (lock "
                f"{fh.name}); wait for it to finish"
            ) from err
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _prepare_output(output: str, options: dict | None) -> None:
    if output.startswith("file://"):
        path = Path(output.removeprefix("file://"))
        if path.exists() and not path.is_dir():
            raise OutputNotWritableError(f"{path} exists and is not a directory")
        if not path.exists():
            if not path.parent.is_dir():
                raise OutputNotWritableError(
                    f"cannot create {path}: {path.parent} is not a directory")
            try:
                path.mkdir()
            except OSError as err:
                raise OutputNotWritableError(f"cannot create {path}: {err}") from err
        if not os.access(path, os.W_OK):
            raise OutputNotWritableError(f"cannot write {path}: permission denied")
        if path.is_dir() and any(path.iterdir()) and not (path / layout.MANIFEST).exists() \
                and not (path / layout.LEDGER).exists():
            raise OutputNotWritableError(
                f"{path} is a non-empty directory that is not a zarrport batch output; "
                "choose a new or empty directory")


def _config(output: str, options: dict | None, pattern: str | None, concat_dim: str | None
            ) -> tuple[dict[str, Any], str | None, str | None]:
    """The existing manifest, and the pattern / concat dim to use (from the manifest when not
    given; a different one than the output was made with is refused)."""
    manifest = layout.read_manifest(output, options) or {}
    for name, given, key in (("--collection-by", pattern, "pattern"),
                             ("--concat-dim", concat_dim, "concat_dim")):
        have = manifest.get(key)
        if manifest and given is not None and have is not None and given != have:
            raise InvalidArgumentError(
                f"{output} was made with {name} {have!r}, not {given!r}; use another output "
                "or the same option")
    pattern = pattern if pattern is not None else manifest.get("pattern")
    concat_dim = concat_dim if concat_dim is not None else manifest.get("concat_dim", "time")
    return manifest, pattern, concat_dim


def run_batch(
    sources: str | Iterable[str],
    output: str,
    *,
    collection_by: str | None = None,
    concat_dim: str | None = None,
    workers: int | None = None,
    scheduler: Any = None,
    ledger: str | None = None,
    storage_options: dict | None = None,
    output_storage_options: dict | None = None,
    include: Iterable[str] = DEFAULT_INCLUDE,
    retries: int = 4,
    backoff: float = 0.5,
    per_source_refs: bool = True,
    progress: Progress | None = None,
    stac: str | None = None,
    options: ParseOptions | None = None,
    allow_empty: bool = False,
) -> BatchResult:
    """Reference every source under ``sources`` into the batch output ``output``.

    ``sources`` is a glob or a prefix (a full listing: sources that disappeared are dropped
    from their collection and reported ``missing``) or a list of URLs (only those are added
    or updated). ``collection_by`` groups files by a name pattern (see
    :mod:`zarrport.pipeline.collections`); without it all files form one collection.
    ``workers`` sizes the local process pool; ``scheduler`` (an address or a
    ``distributed.Client``) runs the same work on a Dask cluster. The ledger is
    ``OUTPUT/ledger.sqlite`` unless ``ledger`` is given (required for remote outputs).
    ``retries`` is per source and run, with exponential backoff from ``backoff`` seconds.
    Failures never raise: they are in ``result.failures``; ``result.ok`` says if all held.
    A glob that matches no file or a prefix without source files raises
    :class:`~zarrport.errors.SourceNotFoundError` before the output is created, unless
    ``allow_empty`` (``watch``: files may land later).
    """
    t0 = time.perf_counter()
    if retries < 0 or backoff < 0:
        raise InvalidArgumentError("--retries and the backoff must be >= 0")
    if workers is not None and workers < 1:
        raise InvalidArgumentError("--workers must be >= 1")
    out_opts = output_storage_options if output_storage_options is not None else storage_options
    out_url = storage.normalize_url(output).rstrip("/")
    explicit = not isinstance(sources, str | os.PathLike)
    pattern_obj = CollectionPattern.compile(collection_by) if collection_by else None
    ledger_path = _ledger_path(out_url, ledger)
    # sources are found before the output is touched: a glob that matches nothing or an
    # empty / missing prefix is an error that leaves no output directory behind
    listing: tuple[str, list[Source]] | None = None
    if explicit:
        sources = list(sources)
        if not sources:
            raise InvalidArgumentError("no sources given")
    else:
        listing = discover(str(sources), storage_options, include)
        if not listing[1] and not allow_empty:
            raise SourceNotFoundError(_nothing_found(str(sources), include), source=str(sources))
    with _dask_client(scheduler) as client:  # reached before anything is written
        _prepare_output(out_url, out_opts)
        manifest, pattern, concat_dim = _config(out_url, out_opts, collection_by, concat_dim)
        if pattern and pattern_obj is None:
            pattern_obj = CollectionPattern.compile(pattern)
        options = options or ParseOptions()

        with _lock(ledger_path), Ledger(ledger_path) as book:
            if out_url.startswith("file://"):
                layout.remove_stale_temporaries(Path(out_url.removeprefix("file://")))
            failures_pre: list[tuple[str, BaseException]] = []
            if explicit:
                root, found, failures_pre = explicit_sources(list(sources), manifest.get("root"),
                                                             storage_options)
            else:
                assert listing is not None
                root, found = listing
                if manifest.get("root") and manifest["root"] != root:
                    raise InvalidArgumentError(
                        f"{out_url} references sources under {manifest['root']}, not {root}; use "
                        "another output")
            result = BatchResult(output=out_url, ledger=str(ledger_path), root=root)
            counts: Counter[str] = Counter()
            default_cid = safe_id(root.rstrip("/").rsplit("/", 1)[-1])
            tasks: list[dict[str, Any]] = []
            kinds: dict[str, str] = {}
            touched: set[str] = set()
            collection_fields: dict[str, dict[str, str]] = {}

            for url, err in failures_pre:
                code = err.code if isinstance(err, ZarrportError) else "storage_error"
                book.record_failure(url, None, None, 1, code, _one_line(err))
                result.failures.append({"url": url, "code": code, "reason": _one_line(err),
                                        "attempts": 1})
                counts["failed"] += 1

            for src in found:
                if pattern_obj is not None:
                    fields = pattern_obj.match(src.relpath)
                    if fields is None:
                        book.record_failure(src.url, None, src.stat, 0, "no_match",
                                            f"name does not match {pattern_obj.pattern!r}",
                                            status=SKIPPED)
                        counts["skipped"] += 1
                        result.skipped.append({"url": src.url, "reason": "name does not match "
                                               f"{pattern_obj.pattern!r}"})
                        continue
                    cid = pattern_obj.collection_id(fields)
                    collection_fields[cid] = pattern_obj.key(fields)
                else:
                    cid = default_cid
                    collection_fields.setdefault(cid, {})
                row = book.get(src.url)
                if row is None or row["status"] in (MISSING, SKIPPED):
                    kind = "new"
                elif not same_stat(row, src.stat):
                    kind = "changed"
                elif row["status"] == OK and row["collection"] == cid:
                    counts["unchanged"] += 1
                    continue
                elif row["status"] == FAILED and row["error_code"] not in RETRY_NEXT_RUN \
                        and not (options.on_unsupported == "drop"
                                 and row["error_code"] == "unsupported_variable"):
                    # (refused for an unsupported variable: tried again with --skip-unsupported)
                    # bad in itself: recorded once with its reason, not tried again until it changes
                    counts["failed"] += 1
                    result.failures.append({"url": src.url, "code": row["error_code"],
                                            "reason": row["last_error"],
                                            "attempts": row["attempts"], "retried": False})
                    continue
                else:
                    kind = "retry" if row["status"] == FAILED else "changed"
                if row is not None and row["status"] == OK and row["collection"] != cid:
                    touched.add(row["collection"])
                kinds[src.url] = kind
                refs_rel = layout.source_refs(cid, src.relpath) if per_source_refs else None
                tasks.append({
                    "url": src.url, "collection": cid, "stat": src.stat,
                    "refs_rel": refs_rel,
                    "refs_url": f"{out_url}/{refs_rel}" if refs_rel else None,
                    "storage_options": storage_options, "output_storage_options": out_opts,
                    "options": options, "retries": retries, "backoff": backoff,
                })
            if per_source_refs and out_url.startswith("file://"):
                for t in tasks:
                    Path(t["refs_url"].removeprefix("file://")).parent.mkdir(parents=True,
                                                                             exist_ok=True)

            by_url = {t["url"]: t for t in tasks}
            done = 0
            for res in _run_tasks(tasks, workers, client):
                task = by_url[res["url"]]
                done += 1
                result.workers[res["worker"]] = result.workers.get(res["worker"], 0) + 1
                if res["ok"]:
                    book.record_ok(res["url"], task["collection"], task["stat"], res["attempts"],
                                   task["refs_rel"], res["model"])
                    outcome = "changed" if kinds[res["url"]] == "changed" else "new"
                    counts[outcome] += 1
                    if res["attempts"] > 1:
                        result.retried += 1
                    touched.add(task["collection"])
                else:
                    prev = book.get(res["url"])
                    book.record_failure(res["url"], task["collection"], task["stat"],
                                        res["attempts"] + (prev["attempts"] if prev and
                                                           prev["status"] == FAILED else 0),
                                        res["code"], res["reason"])
                    counts["failed"] += 1
                    outcome = "failed"
                    result.failures.append({"url": res["url"], "code": res["code"],
                                            "reason": res["reason"], "attempts": res["attempts"]})
                    if prev is not None and prev["status"] == OK:
                        touched.add(prev["collection"])
                if progress:
                    progress(done, len(tasks), res["url"], outcome)

            if not explicit:
                listed = {s.url for s in found}
                gone = [r for r in book.rows() if r["url"] not in listed
                        and r["status"] != MISSING and r["url"].startswith(root.rstrip("/") + "/")]
                book.mark_missing(r["url"] for r in gone)
                counts["missing"] += len(gone)
                touched.update(r["collection"] for r in gone if r["status"] == OK)

            # collections with referenced sources not yet in a commit (also after a crash)
            for (cid,) in book.db.execute(
                    "SELECT DISTINCT collection FROM sources WHERE status = ? AND snapshot IS NULL",
                    (OK,)):
                touched.add(cid)
            known = dict(manifest.get("collections") or {})
            for cid in sorted(c for c in touched if c):
                fields = collection_fields.get(cid) or known.get(cid, {}).get("fields", {})
                entry = _commit_collection(book, cid, out_url, root, concat_dim, storage_options,
                                           out_opts, kinds)
                entry["fields"] = fields
                known[cid] = {**known.get(cid, {}), **entry}
            result.collections = known
            result.counts = {k: counts.get(k, 0) for k in
                             ("new", "changed", "unchanged", "failed", "skipped", "missing")}
            result.referenced_bytes = sum(int(c.get("referenced_bytes") or 0)
                                          for c in known.values())
            layout.write_manifest(out_url, out_opts, {
                "zarrport_batch": 1,
                "zarrport_version": _version(),
                "root": root,
                "pattern": pattern_obj.pattern if pattern_obj else None,
                "concat_dim": concat_dim,
                "ledger": str(ledger_path),
                "updated": _now(),
                "collections": {k: {kk: vv for kk, vv in v.items()
                                    if kk not in ("error", "added", "changed", "removed")}
                                for k, v in known.items()},
            })
            result.reference_bytes = layout.size_of(out_url, out_opts)
        if stac:
            from zarrport.catalog import write_catalog

            result.stac = write_catalog(out_url, stac, storage_options=out_opts)
        result.seconds = round(time.perf_counter() - t0, 3)
        return result


def _commit_collection(book: Ledger, cid: str, out_url: str, root: str, concat_dim: str | None,
                       storage_options: dict | None, out_opts: dict | None,
                       kinds: dict[str, str]) -> dict[str, Any]:
    """Combine the collection's referenced sources and commit them; returns its manifest
    entry plus what changed (added / changed / removed) or the error that stopped it."""
    from zarrport.virtual.api import provenance, write
    from zarrport.virtual.combine import combine
    from zarrport.virtual.icechunk import head_snapshot, update_icechunk

    repo_rel = layout.collection_repo(cid)
    repo_url = f"{out_url}/{repo_rel}"
    rows, models = [], []
    for row, vds in book.models(cid):
        rows.append(row)
        models.append(vds)
    entry: dict[str, Any] = {"icechunk": repo_rel, "sources": len(rows)}
    exists = layout.exists(repo_url, out_opts)
    before: set[str] = set()
    if exists:
        try:
            _snap, record = head_snapshot(repo_url, out_opts)
            before = {s["url"] for s in record.get("sources") or []}
        except Exception:
            before = set()
    if not rows:
        entry["error"] = "no source of this collection can be referenced any more; its " \
                         "repository keeps its last commit"
        return entry
    urls = [r["url"] for r in rows]
    added = [u for u in urls if u not in before]
    changed = [u for u in urls if u in before and kinds.get(u) == "changed"]
    removed = sorted(before - set(urls))
    try:
        vds = combine(models, concat_dim) if len(models) > 1 or concat_dim else models[0]
    except ZarrportError as err:
        entry["error"] = str(err)
        return entry
    record = provenance(vds, concat_dim)
    message = _message(cid, added, changed, removed)
    prefixes = [root.rstrip("/") + "/"] if root.startswith("file://") else None
    if exists:
        _counts, snapshot = update_icechunk(vds, repo_url, storage_options=storage_options,
                                            output_storage_options=out_opts, message=message,
                                            provenance=record, prefixes=prefixes)
    else:
        if out_url.startswith("file://"):
            Path(repo_url.removeprefix("file://")).parent.mkdir(parents=True, exist_ok=True)
        write(vds, repo_url, "icechunk", storage_options=storage_options,
              output_storage_options=out_opts, overwrite=False, provenance=record,
              prefixes=prefixes)
        snapshot, _ = head_snapshot(repo_url, out_opts)
    book.mark_committed(urls, snapshot)
    summary = vds.summary()
    entry.update({
        "snapshot": snapshot, "updated": _now(), "dims": summary["dims"],
        "variables": summary["variables"], "referenced_bytes": summary["referenced_bytes"],
        "added": added, "changed": changed, "removed": removed,
    })
    if summary["skipped"]:
        entry["skipped"] = summary["skipped"]  # left out by --skip-unsupported, with reasons
    return entry


def _message(cid: str, added: list[str], changed: list[str], removed: list[str]) -> str:
    def names(urls: list[str]) -> str:
        short = [u.rsplit("/", 1)[-1] for u in urls]
        return ", ".join(short[:20]) + (f" and {len(short) - 20} more" if len(short) > 20
                                         else "")

    parts = [f"zarrport batch: {cid}:"]
    if added:
        parts.append(f"added {len(added)} ({names(added)})")
    if changed:
        parts.append(f"re-referenced {len(changed)} changed ({names(changed)})")
    if removed:
        parts.append(f"removed {len(removed)} ({names(removed)})")
    if len(parts) == 1:
        parts.append("re-committed unchanged sources")
    return " ".join(parts)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _version() -> str:
    from zarrport import __version__

    return __version__


__all__ = ["BatchResult", "DEFAULT_INCLUDE", "discover", "is_transient", "run_batch",
           "same_stat"]
