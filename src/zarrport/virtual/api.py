"""``virtualize``: sources in, one reference output (kerchunk JSON / Parquet / Icechunk) out."""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zarrport import storage
from zarrport.errors import (
    InvalidArgumentError,
    OutputExistsError,
    OutputNotWritableError,
    SourceNotFoundError,
    StorageError,
)
from zarrport.virtual.combine import combine
from zarrport.virtual.model import VirtualDataset
from zarrport.virtual.parse import ParseOptions, check_sizes, parse_source

FORMATS = ("json", "parquet", "icechunk")
#: name of the provenance record inside a kerchunk JSON file / Parquet directory
PROVENANCE_FILE = "zarrport.json"


@dataclass
class VirtualizeResult:
    output: str
    format: str
    sources: int
    dims: dict[str, int]
    variables: list[str]
    referenced_chunks: int
    referenced_bytes: int
    inlined_variables: list[str]
    native_chunks: int
    output_bytes: int
    seconds: float
    notes: dict[str, str] = field(default_factory=dict)
    #: with ``skip_unsupported``: the variables / attributes left out and why
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SUFFIXES = (("json", (".json",)), ("parquet", (".parquet", ".parq")),
             ("icechunk", (".icechunk", ".ic")))


def output_format(output: str, format: str | None) -> str:
    """The output format: ``format`` when given, else from the output's name.

    A name that says one format while ``format`` says another (``--format json -o
    x.parquet``) is refused: a reader would take the output for what its name says."""
    name = output.rstrip("/").lower()
    named = next((fmt for fmt, suffixes in _SUFFIXES if name.endswith(suffixes)), None)
    if format:
        if format not in FORMATS:
            raise InvalidArgumentError(
                f"unknown format {format!r}; choose one of {', '.join(FORMATS)}"
            )
        if named is not None and named != format:
            raise InvalidArgumentError(
                f"--format {format} does not match the output name {output!r} (a {named} "
                f"name); rename the output or drop --format"
            )
        return format
    if named is not None:
        return named
    raise InvalidArgumentError(
        f"cannot tell the output format from {output!r}: name it *.json, *.parquet or "
        "*.icechunk, or pass --format"
    )


def expand_sources(sources: str | Iterable[str], storage_options: dict | None) -> list[str]:
    """Normalised URLs; glob patterns are expanded (sorted) on their own filesystem."""
    items = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    out: list[str] = []
    for item in items:
        url = storage.normalize_url(str(item))
        if any(ch in url.split("://", 1)[1] for ch in "*?["):
            fs, path = storage.filesystem(url, storage_options)
            try:
                matches = sorted(fs.glob(path))
            except Exception as err:  # endpoint unreachable, access denied ...: one line
                first = (str(err).strip().splitlines() or [""])[0]
                raise StorageError(f"cannot list {item}: {type(err).__name__}: {first}",
                                   source=str(item)) from err
            if not matches:
                raise SourceNotFoundError(f"no file matches {item}", source=str(item))
            scheme = url.split("://", 1)[0]
            out.extend(
                storage.normalize_url(m) if scheme == "file" else f"{scheme}://{m}"
                for m in matches
            )
        else:
            out.append(url)
    if not out:
        raise InvalidArgumentError("no sources given")
    return out


#: called with (files parsed so far, total) while sources are parsed
Progress = Callable[[int, int], None]


def _parse_all(urls: list[str], storage_options: dict | None, options: ParseOptions,
               workers: int | None, progress: Progress | None = None) -> list[VirtualDataset]:
    total = len(urls)
    if len(urls) < 8 or workers == 1:
        out = []
        for i, u in enumerate(urls):
            out.append(parse_source(u, storage_options, options))
            if progress:
                progress(i + 1, total)
        return out
    n = workers or min(os.cpu_count() or 1, 8)
    local = all(u.startswith("file://") for u in urls)
    # h5py serialises on a global lock: local files parse in processes, remote ones are
    # I/O-bound and parse in threads
    pool_cls = cf.ProcessPoolExecutor if local else cf.ThreadPoolExecutor
    kwargs: dict[str, Any] = {}
    if local:
        import multiprocessing

        kwargs["mp_context"] = multiprocessing.get_context("forkserver")
    with pool_cls(max_workers=n, **kwargs) as pool:
        chunksize = max(1, len(urls) // (n * 4)) if local else 1
        results = []
        for i, vds in enumerate(pool.map(parse_source, urls, [storage_options] * total,
                                         [options] * total, chunksize=chunksize)):
            results.append(vds)
            if progress:
                progress(i + 1, total)
        return results


def build(sources: str | Iterable[str], *, concat_dim: str | None = None,
          storage_options: dict | None = None, options: ParseOptions | None = None,
          workers: int | None = None, progress: Progress | None = None) -> VirtualDataset:
    """Parse the sources and, when there are several, combine them along ``concat_dim``."""
    urls = expand_sources(sources, storage_options)
    options = options or ParseOptions()
    if len(urls) > 1 and not concat_dim:
        raise InvalidArgumentError(
            f"{len(urls)} sources need a dimension to combine them along (--concat-dim)"
        )
    datasets = _parse_all(urls, storage_options, options, workers, progress)
    if concat_dim:
        return combine(datasets, concat_dim)
    return datasets[0]


def provenance(vds: VirtualDataset, concat_dim: str | None,
               group: str | None = None) -> dict[str, Any]:
    from zarrport import __version__

    return {
        "zarrport_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "concat_dim": concat_dim,
        "group": group,
        "sources": vds.source_stats,
        # left out by --skip-unsupported: verify does not expect them
        "skipped": list(getattr(vds, "skipped", [])),
    }


def virtualize(
    sources: str | Iterable[str],
    output: str,
    *,
    format: str | None = None,
    concat_dim: str | None = None,
    storage_options: dict | None = None,
    output_storage_options: dict | None = None,
    subchunk_mb: float = 16,
    inline_limit_mb: float = 4,
    group: str | None = None,
    drop_variables: Iterable[str] = (),
    overwrite: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
    skip_unsupported: bool = False,
) -> VirtualizeResult:
    """Write references to ``sources`` so that the output opens as one Zarr dataset.

    ``format`` is ``json``, ``parquet`` or ``icechunk`` (default: from the output name).
    Several sources are combined along ``concat_dim``, ordered by its coordinate values.
    Uncompressed contiguous variables are split into byte-range sub-chunks of about
    ``subchunk_mb``; variables that cannot be referenced are inlined up to
    ``inline_limit_mb`` and refused above. ``storage_options`` apply to the sources and,
    unless ``output_storage_options`` is given, to the output. ``progress(done, total)`` is
    called as sources are parsed. ``skip_unsupported``: variables and attributes that cannot
    be referenced faithfully are left out instead of refusing the file; each is listed with
    its reason in ``result.skipped`` and in the output's provenance record.
    """
    t0 = time.perf_counter()
    fmt = output_format(output, format)
    check_sizes(subchunk_mb, inline_limit_mb)
    out_opts = output_storage_options if output_storage_options is not None else storage_options
    out_url = storage.normalize_url(output)
    _check_output(out_url, out_opts, overwrite)
    options = ParseOptions(
        group=group,
        subchunk_bytes=int(subchunk_mb * 2**20),
        inline_limit_bytes=int(inline_limit_mb * 2**20),
        drop_variables=tuple(drop_variables),
        on_unsupported="drop" if skip_unsupported else "raise",
    )
    vds = build(sources, concat_dim=concat_dim, storage_options=storage_options,
                options=options, workers=workers, progress=progress)
    record = provenance(vds, concat_dim, group)
    counts = write(vds, out_url, fmt, storage_options=storage_options,
                   output_storage_options=out_opts, overwrite=overwrite, provenance=record)
    summary = vds.summary()
    return VirtualizeResult(
        output=out_url,
        format=fmt,
        sources=summary["sources"],
        dims=summary["dims"],
        variables=summary["variables"],
        referenced_chunks=summary["referenced_chunks"],
        referenced_bytes=summary["referenced_bytes"],
        inlined_variables=summary["inlined_variables"],
        native_chunks=counts.get("native_chunks", 0),
        output_bytes=_size_of(out_url, out_opts),
        seconds=round(time.perf_counter() - t0, 3),
        notes={n: v.note for n, v in vds.variables.items() if v.note},
        skipped=summary["skipped"],
    )


def _check_output(url: str, options: dict | None, overwrite: bool) -> None:
    if url.startswith("file://"):
        path = Path(url.removeprefix("file://"))
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
        parent = path.parent
        if not parent.is_dir():
            raise OutputNotWritableError(f"cannot write {path}: {parent} is not a directory")
        if not os.access(parent, os.W_OK):
            raise OutputNotWritableError(f"cannot write {path}: {parent} is not writable")
        return
    fs, path_ = storage.filesystem(url, options)
    try:
        exists = fs.exists(path_)
    except Exception as err:
        raise OutputNotWritableError(f"cannot reach output {url}: {err}") from err
    if exists and not overwrite:
        raise OutputExistsError(f"{url} exists; pass --overwrite to replace it")


def write(vds: VirtualDataset, url: str, fmt: str, *, storage_options: dict | None,
          output_storage_options: dict | None, overwrite: bool,
          provenance: dict[str, Any], prefixes: list[str] | None = None) -> dict[str, int]:
    """Write aside, then move into place (local) / write then clean up on failure (remote).

    ``prefixes``: Icechunk virtual chunk containers to declare beyond the sources' own."""
    from zarrport.virtual import kerchunk

    refs = None
    if fmt in ("json", "parquet"):
        refs = kerchunk.to_refs(vds)  # raises MisalignedChunksError before anything is written
    if url.startswith("file://"):
        final = Path(url.removeprefix("file://"))
        tmp = final.with_name(f".{final.name}.zarrport-{uuid.uuid4().hex[:8]}")
        try:
            counts = _write_to(vds, tmp.as_uri(), fmt, refs, storage_options,
                               output_storage_options, provenance, prefixes)
            _replace(tmp, final, overwrite)
        except BaseException:
            _remove_local(tmp)
            raise
        return counts
    fs, path = storage.filesystem(url, output_storage_options)
    if overwrite and fs.exists(path):
        fs.rm(path, recursive=True)
    try:
        return _write_to(vds, url, fmt, refs, storage_options, output_storage_options,
                         provenance, prefixes)
    except BaseException:
        try:
            if fs.exists(path):
                fs.rm(path, recursive=True)
        except Exception:
            pass
        raise


def _write_to(vds: VirtualDataset, url: str, fmt: str, refs: dict | None,
              storage_options: dict | None, out_opts: dict | None,
              record: dict[str, Any], prefixes: list[str] | None = None) -> dict[str, int]:
    if fmt == "json":
        assert refs is not None
        doc = dict(refs)
        doc[PROVENANCE_FILE.removesuffix(".json")] = record
        data = json.dumps(doc, separators=(",", ":")).encode()
        fs, path = storage.filesystem(url, out_opts)
        fs.pipe_file(path, data)
        return {}
    if fmt == "parquet":
        assert refs is not None
        from kerchunk.df import refs_to_dataframe

        fs, path = storage.filesystem(url, out_opts)
        target = path if url.startswith("file://") else url
        refs_to_dataframe(refs, target, storage_options=None if url.startswith("file://")
                          else _fsspec_options(url, out_opts), record_size=100_000)
        fs.pipe_file(f"{path}/{PROVENANCE_FILE}", json.dumps(record).encode())
        return {}
    from zarrport.virtual.icechunk import write_icechunk

    message = _commit_message(vds, record)
    return write_icechunk(vds, url, storage_options=storage_options, message=message,
                          provenance=record, output_storage_options=out_opts,
                          prefixes=prefixes)


def _fsspec_options(url: str, options: dict | None) -> dict:
    # kerchunk makes its own fsspec filesystem from these: they must be translated like
    # every other fsspec use (zarrport's ``blob_endpoint`` means nothing to adlfs, which
    # then talks to the public Azure endpoint instead of the configured one)
    return storage.filesystem_options(url, options)


def _commit_message(vds: VirtualDataset, record: dict[str, Any]) -> str:
    names = [s.rsplit("/", 1)[-1] for s in vds.sources]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"zarrport: reference {len(names)} file(s): {shown}"


def _replace(tmp: Path, final: Path, overwrite: bool) -> None:
    if final.exists():
        if not overwrite:
            raise OutputExistsError(f"{final} exists; pass --overwrite to replace it")
        trash = final.with_name(f".{final.name}.zarrport-old-{uuid.uuid4().hex[:8]}")
        os.replace(final, trash)
        os.replace(tmp, final)
        _remove_local(trash)
    else:
        os.replace(tmp, final)


def _remove_local(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _size_of(url: str, options: dict | None) -> int:
    try:
        fs, path = storage.filesystem(url, options)
        if fs.isdir(path):
            return int(sum(fs.du(path, total=False).values()))
        return int(fs.size(path))
    except Exception:
        return 0

