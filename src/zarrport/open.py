"""``open_dataset``: anything zarrport writes or reads, as a lazy CF-decoded xarray.Dataset.

The kind is detected from the content, not the name: kerchunk JSON (a JSON object with
``refs``/``version``), kerchunk Parquet (a directory whose ``.zmetadata`` has
``record_size``), an Icechunk repository (``repo``/``refs``/``snapshots`` entries), a Zarr
v2/v3 store (``.zgroup``/``.zmetadata``/``zarr.json``), NetCDF-4/HDF5, NetCDF-3 and GRIB
files (magic bytes), and a ``zarrport batch`` output (its ``zarrport-batch.json`` manifest, see
:mod:`zarrport.pipeline.output`), which opens as one of its collections.

Icechunk repositories open at any version: a branch, a tag, a snapshot id, or the last
commit at or before a time (:mod:`zarrport.history`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import xarray as xr

from zarrport import storage
from zarrport.errors import (
    CorruptSourceError,
    InvalidArgumentError,
    SourceNotFoundError,
    UnrecognizedFormatError,
)
from zarrport.virtual.parse import sniff

KINDS = ("kerchunk-json", "kerchunk-parquet", "icechunk", "zarr", "netcdf4", "netcdf3",
         "batch", "grib")


def detect(url: str, storage_options: dict | None = None) -> str:
    """The kind of thing at ``url`` (one of :data:`KINDS`), from its content."""
    url = storage.normalize_url(url)
    fs, path = storage.filesystem(url, storage_options)
    path = path.rstrip("/")
    try:
        is_dir = fs.isdir(path)
        exists = is_dir or fs.exists(path)
    except Exception as err:
        raise SourceNotFoundError(f"cannot reach {url}: {err}", source=url) from err
    if not exists:
        raise SourceNotFoundError(f"{url} does not exist", source=url)
    if is_dir:
        names = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)}
        from zarrport.pipeline.output import looks_like_batch

        if looks_like_batch(names):
            return "batch"
        if ".zmetadata" in names:
            try:
                meta = json.loads(fs.cat_file(f"{path}/.zmetadata"))
            except Exception:
                meta = {}
            if "record_size" in meta:
                return "kerchunk-parquet"
            return "zarr"
        if {"refs", "snapshots"} & names or "repo" in names or "config.yaml" in names:
            return "icechunk"
        if {".zgroup", ".zarray", "zarr.json"} & names:
            return "zarr"
        raise UnrecognizedFormatError(
            f"{url} is a directory but not a Zarr store, kerchunk Parquet, Icechunk "
            "repository or zarrport batch output",
            source=url,
        )
    with fs.open(path, "rb") as f:
        head = f.read(4104)
    if not head:
        raise UnrecognizedFormatError(f"{url}: the file is empty", source=url)
    kind = sniff(head)
    if kind == "hdf5":
        return "netcdf4"
    if kind in ("netcdf3", "grib"):
        return kind
    if head.lstrip()[:1] == b"{":
        # kerchunk writes "version"/"refs" (or v0 metadata keys) first: no need to parse
        # megabytes of references just to recognise them
        if any(k in head[:512] for k in (b'"version"', b'"refs"', b'.zgroup"', b'.zattrs"')):
            return "kerchunk-json"
        try:
            doc = json.loads(fs.cat_file(path))
        except ValueError as err:
            raise CorruptSourceError(f"{url}: damaged JSON ({err})", source=url) from err
        if isinstance(doc, dict) and ("refs" in doc or "version" in doc):
            return "kerchunk-json"
        if isinstance(doc, dict) and any(k.endswith((".zarray", ".zgroup")) for k in doc):
            return "kerchunk-json"  # version-0 references: keys at the top level
        raise UnrecognizedFormatError(
            f"{url}: JSON, but not kerchunk references", source=url
        )
    raise UnrecognizedFormatError(
        f"{url}: not a format zarrport opens (starts with {head[:8]!r})", source=url
    )


def open_dataset(url: str, *, storage_options: dict | None = None, engine: str | None = None,
                 accumulate: bool = True, collection: str | None = None,
                 branch: str | None = None, tag: str | None = None,
                 snapshot: str | None = None, as_of: str | datetime | None = None,
                 **xarray_kwargs: Any) -> xr.Dataset:
    """Open ``url`` lazily as an ``xarray.Dataset`` with CF decoding.

    ``storage_options`` (fsspec-style, see :mod:`zarrport.storage`) are used both for the
    output and for the source files it references. kerchunk references are read by
    zarrport's own reader (:mod:`zarrport.references`, many times faster than zarr-python
    on small chunks); ``engine="zarr"`` reads them through fsspec's ReferenceFileSystem and
    xarray's Zarr backend instead. Icechunk repositories open with xarray's Zarr backend,
    chunk references resolved in bulk by :mod:`zarrport.icechunk_read` (same dataset, many
    times faster on small chunks); ``engine="zarr"`` leaves every read to zarr. Extra
    keyword arguments go to ``xarray.open_dataset``
    (``chunks={}`` gives Dask arrays).

    Forecast cycles ingested by ``zarrport grib ingest`` open with Dask arrays of one GRIB
    message per chunk, and accumulated variables (GEFS's alternating precipitation
    buckets) come out accumulated from the start of the forecast, derived lazily
    (:mod:`zarrport.grib.accumulate`); ``accumulate=False`` gives the stored windows.

    Icechunk repositories open at the tip of ``main`` unless given a ``branch``, a ``tag``,
    a ``snapshot`` id, or ``as_of`` (a datetime or ISO 8601 string, naive meaning UTC: the
    last commit at or before it on ``branch``, default ``main``). At most one of tag,
    snapshot and branch; as_of combines only with a branch. A version that does not exist
    is a :class:`~zarrport.errors.SourceNotFoundError` naming those that do.

    A ``zarrport batch`` output opens as its collection: the only one, or the one named by
    ``collection`` (the versions above then apply to that collection's repository).
    """
    from zarrport.history import Version

    url = storage.normalize_url(url)
    version = Version.of(branch, tag, snapshot, as_of)
    kind = detect(url, storage_options)
    if kind == "batch":
        from zarrport.pipeline.output import collection_url

        target = collection_url(url, collection, storage_options)
        return open_dataset(target, storage_options=storage_options, engine=engine,
                            accumulate=accumulate, **version.to_kwargs(), **xarray_kwargs)
    if collection is not None:
        raise InvalidArgumentError(
            f"{url} is {kind}, not a batch output: collection= names a collection of a "
            "`zarrport batch` output", source=url)
    if version.given and kind != "icechunk":
        raise InvalidArgumentError(
            f"{url} is {kind}: only Icechunk repositories have versions (branch, tag, "
            "snapshot, as_of)", source=url)
    user_chunks = "chunks" in xarray_kwargs
    xarray_kwargs.setdefault("chunks", None)
    if kind in ("kerchunk-json", "kerchunk-parquet") and engine in (None, "zarrport"):
        from zarrport.backend import ZarrportBackendEntrypoint

        return xr.open_dataset(url, engine=ZarrportBackendEntrypoint,
                               storage_options=storage_options, kind=kind, **xarray_kwargs)
    if kind in ("kerchunk-json", "kerchunk-parquet"):
        return open_references_standard(url, kind, storage_options, **xarray_kwargs)
    if kind == "icechunk":
        store = open_icechunk_store(url, storage_options, **version.to_kwargs())
        grib = _is_grib(store)
        if grib and xarray_kwargs.get("chunks") is None and not user_chunks:
            xarray_kwargs["chunks"] = {}  # forecast cycles are read lazily, with Dask
        if engine == "zarr":
            ds = xr.open_dataset(store, engine="zarr", consolidated=False, zarr_format=3,
                                 **xarray_kwargs)
        else:  # the same dataset, chunk references resolved in bulk (many times faster)
            from zarrport import icechunk_read

            ds = icechunk_read.open_dataset(store, url, storage_options, **xarray_kwargs)
        if grib and accumulate:
            from zarrport.grib.accumulate import derive

            ds = derive(ds)
        return ds
    if kind == "grib":
        return _open_grib(url, storage_options, **xarray_kwargs)
    if kind == "zarr":
        from zarrport.convert.writer import is_incomplete

        unfinished = is_incomplete(url)
        if unfinished is not None:
            from zarrport.errors import IncompleteOutputError

            raise IncompleteOutputError(
                f"{url} is an unfinished zarrport {unfinished.get('command') or 'convert'} "
                f"of {unfinished.get('source')}: run the same `zarrport "
                f"{unfinished.get('command') or 'convert'}` command again to finish it",
                source=url)
        fs_opts = None if url.startswith("file://") else storage.filesystem_options(
            url, storage_options)
        target = url.removeprefix("file://") if url.startswith("file://") else url
        return xr.open_dataset(target, engine="zarr", storage_options=fs_opts,
                               **xarray_kwargs)
    # plain NetCDF: h5netcdf / scipy read file objects, so remote files work too
    fs, path = storage.filesystem(url, storage_options)
    engine = "h5netcdf" if kind == "netcdf4" else "scipy"
    if url.startswith("file://"):
        from zarrport.hdf5 import use_hdf5_plugins

        use_hdf5_plugins()
        return xr.open_dataset(path, engine="netcdf4", **xarray_kwargs)
    return xr.open_dataset(fs.open(path, "rb"), engine=engine, **xarray_kwargs)


def _open_grib(url: str, storage_options: dict | None, **xarray_kwargs: Any) -> xr.Dataset:
    """A plain GRIB file, scanned by :class:`~zarrport.grib.scan.GribParser` (headers only)
    and opened from its ``ManifestStore``: values are decoded on access, one message per
    chunk, by the ``zarrport.grib`` codec (ecCodes, or gribberish where it is exact)."""
    from zarrport.grib.scan import GribParser

    store = GribParser()(url, storage.object_store_registry([url], storage_options))
    return xr.open_dataset(store, engine="zarr", consolidated=False, zarr_format=3,
                           **xarray_kwargs)
def open_references_standard(url: str, kind: str | None, storage_options: dict | None,
                             **xarray_kwargs: Any) -> xr.Dataset:
    """kerchunk references through the standard path: fsspec's ReferenceFileSystem and
    xarray's Zarr engine (what ``engine="zarr"`` means here, and where zarrport's own
    reader hands over what it does not implement)."""
    url = storage.normalize_url(url)
    if kind is None:
        kind = detect(url, storage_options)
    fo = url.removeprefix("file://") if url.startswith("file://") else url
    remote = _first_target(url, kind, storage_options)
    ref_opts = storage.fsspec_reference_options(storage_options, remote_url=remote)
    if remote is None and "remote_protocol" not in ref_opts:
        # every chunk inline: name a protocol so that fsspec does not scan the references
        # for one (with kerchunk Parquet it trips over the null paths of inline rows:
        # "argument of type 'float' is not iterable"; fsspec 2026.9.0)
        ref_opts["remote_protocol"] = "file"
    _async_remote(ref_opts)
    so: dict[str, Any] = {"fo": fo, **ref_opts}
    if not url.startswith("file://"):
        so["target_options"] = storage.filesystem_options(url, storage_options)
    if kind == "kerchunk-parquet":
        so["lazy"] = True
    elif _has_gen(url, storage_options):
        # fsspec expands kerchunk ``gen`` entries only with simple_templates=False
        # (ReferenceFileSystem._process_gen returns nothing otherwise; fsspec 2026.9.0)
        so["simple_templates"] = False
    return xr.open_dataset(
        "reference://",
        engine="zarr",
        backend_kwargs={"consolidated": False, "storage_options": so, "zarr_format": 2},
        **xarray_kwargs,
    )


def _has_gen(url: str, storage_options: dict | None) -> bool:
    fs, path = storage.filesystem(url, storage_options)
    try:
        doc = json.loads(fs.cat_file(path))
    except Exception:  # noqa: BLE001 - the reader reports damaged references
        return False
    return isinstance(doc, dict) and bool(doc.get("gen"))


def _is_grib(store: Any) -> bool:
    """True for a repository of forecast cycles written by ``zarrport grib ingest``."""
    import zarr

    try:
        return bool(zarr.open_group(store, mode="r", zarr_format=3).attrs.get("zarrport_grib"))
    except Exception:  # noqa: BLE001 - not a group: let xarray report it
        return False


def read_provenance(url: str, kind: str, storage_options: dict | None = None) -> dict | None:
    """The record zarrport wrote beside its references (sources, sizes, mtimes), if any."""
    fs, path = storage.filesystem(url, storage_options)
    try:
        if kind == "kerchunk-json":
            doc = json.loads(fs.cat_file(path))
            return doc.get("zarrport")
        if kind == "kerchunk-parquet":
            return json.loads(fs.cat_file(f"{path.rstrip('/')}/zarrport.json"))
        if kind == "icechunk":
            import icechunk

            from zarrport.virtual.icechunk import quiet_icechunk

            quiet_icechunk()
            repo = icechunk.Repository.open(storage.icechunk_storage(url, storage_options))
            for snap in repo.ancestry(branch="main"):
                if snap.metadata and "zarrport" in snap.metadata:
                    return snap.metadata["zarrport"]
    except Exception:
        return None
    return None


def _async_remote(ref_opts: dict[str, Any]) -> None:
    """zarr 3 opens ``reference://`` with ``asynchronous=True``, and fsspec's
    ReferenceFileSystem refuses an async target filesystem (s3fs, adlfs, gcsfs, http) that
    was made synchronous ("target filesystem must have same value of asynchronous"): ask for
    an asynchronous one. Sync targets (local files) are wrapped by fsspec itself. (The check
    came with fsspec/filesystem_spec#1795; checked with fsspec 2026.9.0.)"""
    import fsspec

    protocol = ref_opts.get("remote_protocol")
    if protocol and getattr(fsspec.get_filesystem_class(protocol), "async_impl", False):
        ref_opts["remote_options"] = {**ref_opts.get("remote_options", {}),
                                      "asynchronous": True}


def _first_target(url: str, kind: str, storage_options: dict | None) -> str | None:
    """A URL the references point into: from zarrport's provenance record, else from the
    references themselves (fsspec otherwise scans them and trips over kerchunk Parquet's
    null paths of inline chunks: "argument of type 'float' is not iterable")."""
    record = read_provenance(url, kind, storage_options)
    if record and record.get("sources"):
        return record["sources"][0]["url"]
    try:
        from zarrport.references import first_target

        return first_target(url, kind, storage_options)
    except Exception:  # noqa: BLE001 - fsspec infers the protocol itself
        return None


def open_icechunk_store(url: str, storage_options: dict | None = None,
                        *, branch: str | None = None, tag: str | None = None,
                        snapshot: str | None = None,
                        as_of: str | datetime | None = None) -> Any:
    """A read-only store of an Icechunk repository, virtual chunk access authorized, at the
    tip of ``main`` or the version given (see :func:`open_dataset`)."""
    import icechunk

    from zarrport.history import Version
    from zarrport.virtual.icechunk import quiet_icechunk

    version = Version.of(branch, tag, snapshot, as_of)
    quiet_icechunk()
    st = storage.icechunk_storage(url, storage_options)
    try:
        config = icechunk.Repository.fetch_config(st)
    except Exception as err:
        raise CorruptSourceError(f"{url}: not a readable Icechunk repository ({err})",
                                 source=url) from err
    credentials: dict[str, Any] = {}
    override = False
    if config is not None:
        for prefix in config.virtual_chunk_containers or {}:
            container, creds = storage.icechunk_virtual_container(prefix, storage_options)
            credentials[prefix] = creds
            # A repository keeps the S3 endpoint its chunks were referenced through; a
            # reader that names another one (a different gateway to the same bucket) gets
            # it for this session, not the one stored.
            if prefix.startswith("s3://") and (storage_options or {}).get("endpoint_url"):
                config.set_virtual_chunk_container(container)
                override = True
    repo = icechunk.Repository.open(
        st, config=config if override else None,
        authorize_virtual_chunk_access=icechunk.containers_credentials(credentials)
    )
    return version.session(repo, url).store
