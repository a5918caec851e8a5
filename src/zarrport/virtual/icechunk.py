"""VirtualDataset -> an Icechunk repository (virtual chunks, plus native ones where needed).

Repositories are created in the Icechunk 2 format (spec version 2). Arrays are created
with zarr (v3 metadata: ``bytes`` serializer with the source's endianness, the HDF5 filters
as ``numcodecs.*`` codecs), references are set in bulk from numpy arrays with
``IcechunkStore.set_virtual_refs_arr`` (one call per source file), inlined variables and the
native chunks of a misaligned combine are written as ordinary Icechunk chunks, and the whole
is one commit.

The repository records, per virtual chunk, the source's ETag (object stores) or modification
time (files), so Icechunk itself refuses to serve a chunk whose file was rewritten after
referencing.

Icechunk 1 repositories (spec version 1, written by zarrport before it moved to Icechunk 2,
or by anyone else) are read as they are but not written to: :func:`migrate` upgrades them in
place with Icechunk's own migration.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from typing import Any

import numpy as np

from zarrport import storage
from zarrport.errors import NeedsMigrationError, StorageError, UnsupportedVariableError
from zarrport.virtual.model import MISSING, VirtualDataset, VirtualVariable, exact_fill
from zarrport.virtual.read import ByteFetcher, read_region

#: metadata key of the commit that records sources and their stats
PROVENANCE_KEY = "zarrport"
#: the Icechunk format zarrport writes (icechunk.SpecVersion.v2, Icechunk 2.x)
SPEC_VERSION = 2


def source_prefixes(urls: list[str]) -> list[str]:
    """Virtual chunk container prefixes covering ``urls``: the bucket/container of remote
    sources, the deepest common directory of local ones (Icechunk wants a directory)."""
    import os.path

    out: set[str] = set()
    local = [u.removeprefix("file://") for u in urls if u.startswith("file://")]
    if local:
        common = os.path.commonpath([os.path.dirname(p) for p in local])
        out.add(f"file://{common.rstrip('/')}/")
    for url in urls:
        if not url.startswith("file://"):
            scheme, rest = url.split("://", 1)
            out.add(f"{scheme}://{rest.split('/', 1)[0]}/")
    return sorted(out)


def _codecs_v3(var: VirtualVariable) -> tuple[Any, list[Any]]:
    from zarr.codecs import BytesCodec
    from zarr.registry import get_codec_class

    if var.serializer is not None:
        cfg = var.serializer
        return get_codec_class(cfg["name"]).from_dict(cfg), []
    if var.dtype.kind == "O":
        from zarr.codecs import VLenUTF8Codec

        return VLenUTF8Codec(), []
    endian = {"<": "little", ">": "big"}.get(var.dtype.byteorder)
    if endian is None and var.dtype.byteorder == "=":
        endian = "little" if np.little_endian else "big"
    serializer = BytesCodec(endian=endian) if var.dtype.itemsize > 1 else BytesCodec(endian=None)
    compressors = []
    for cfg in var.codecs:
        cfg = dict(cfg)
        cls = get_codec_class(f"numcodecs.{cfg.pop('id')}")
        compressors.append(cls(**cfg))
    return serializer, compressors


def _fill_value(var: VirtualVariable) -> Any:
    if var.dtype.kind == "O":
        return ""
    return exact_fill(var.fill_value, var.dtype)


def _mtime(stat: dict[str, Any]) -> dt.datetime | None:
    mtime = stat.get("mtime")
    if mtime is None:
        return None
    # Icechunk compares "modified after": allow the second it was read in (Icechunk compares
    # whole seconds, by design; icechunk 2.3.0)
    return dt.datetime.fromtimestamp(math.ceil(float(mtime)) + 1, tz=dt.UTC)


def quiet_icechunk() -> None:
    """Icechunk warns on every local repository that local storage is not safe for
    concurrent commits (icechunk 2.3.0 still warns); zarrport commits from one process.
    ICECHUNK_LOG still wins."""
    import os

    import icechunk

    if "ICECHUNK_LOG" not in os.environ:
        icechunk.set_logs_filter("error")


def v3_attrs(var: VirtualVariable) -> dict[str, Any]:
    """Attributes for a Zarr v3 array, so that xarray's Zarr engine decodes them as it
    decodes the netCDF file's.

    xarray reads a v3 ``_FillValue`` in its own encoding (``FillValueCoder``: base64 of a
    float64 for floats, an integer for integers), so it is written that way; other
    non-finite floats must be strings in v3's strict JSON, which xarray does not decode.
    What those encodings cannot hold is rewritten to what decodes the same, or refused
    (xarray 2026.9.0, ``_check_fill_values``):

    - a NaN ``_FillValue``/``missing_value`` on an integer variable is left out: xarray
      drops it when decoding ("non-conforming ... dropping");
    - a fractional ``_FillValue`` on an integer variable masks like a ``missing_value``
      and is written as one; an out-of-range one stays an integer;
    - a NaN ``missing_value`` on a float variable masks NaN with NaN and is left out; an
      infinite one becomes the ``_FillValue`` when there is none;
    - an infinite ``_FillValue``/``missing_value`` on an integer variable, or an infinite
      ``missing_value`` beside a ``_FillValue``, has no v3 form: the variable is refused.
    """
    from xarray.backends.zarr import FillValueCoder

    src = dict(var.attrs)
    kind = var.dtype.kind
    if kind in "iuf" and src.get("missing_value") is not None:
        values = np.ravel(np.asarray(src["missing_value"], dtype="f8"))
        if not np.isfinite(values).all():
            finite = [float(v) for v in values if np.isfinite(v)]
            infinite = [float(v) for v in values if np.isinf(v)]
            if infinite and (kind in "iu" or "_FillValue" in src or len(infinite) > 1
                             or finite):
                _refuse_v3(var, "missing_value", src["missing_value"])
            if infinite:
                src.pop("missing_value")
                src["_FillValue"] = infinite[0]
            elif finite:
                src["missing_value"] = finite if len(finite) > 1 else finite[0]
            else:
                src.pop("missing_value")
    fill = src.get("_FillValue")
    if fill is not None and kind in "iu" and exact_fill(fill, var.dtype) is None:
        value = float(np.ravel(np.asarray(fill, dtype="f8"))[0])
        src.pop("_FillValue")
        if math.isinf(value):
            _refuse_v3(var, "_FillValue", fill)
        elif math.isfinite(value) and value != int(value):
            extra = list(np.ravel(src["missing_value"])) if "missing_value" in src else []
            src["missing_value"] = [*extra, value] if extra else value
        elif math.isfinite(value):
            src["_FillValue"] = int(value)  # out of range: decodes as in netCDF
    attrs = strict_json(src)
    fill = src.get("_FillValue")
    if fill is not None and kind in "biuf":
        attrs["_FillValue"] = FillValueCoder.encode(fill, var.dtype)
    elif fill is not None:
        # xarray cannot decode a v3 _FillValue of a byte-string dtype (it raises
        # "Unsupported dtype |S1"; pydata/xarray#11332, checked with xarray 2026.9.0);
        # netCDF char fill values mask nothing xarray decodes
        attrs.pop("_FillValue")
    return attrs


def _refuse_v3(var: VirtualVariable, attr: str, value: Any) -> None:
    raise UnsupportedVariableError(
        f"variable {var.name!r}: {attr} {value!r} on a {var.dtype} variable has no Zarr v3 "
        "form that xarray decodes as it decodes the netCDF file; write kerchunk "
        "(--format json or parquet), or leave the variable out (--drop VAR)",
        variable=var.name)


def strict_json(value: Any) -> Any:
    """Zarr v3 metadata must be strict JSON: NaN/Infinity become strings, as zarr does for
    fill values. (zarr-python writes bare NaN tokens, which Icechunk rejects:
    earth-mover/icechunk#1238; checked with zarr 3.4.2, icechunk 2.3.0.)"""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strict_json(v) for v in value]
    return value


def _checksum(stat: dict[str, Any]) -> str | dt.datetime | None:
    # An ETag changes on every rewrite; a modification time only has one-second
    # resolution on object stores, so a quick rewrite would slip through it.
    return stat.get("etag") or _mtime(stat)


def set_virtual_refs(store: Any, name: str, vds: VirtualDataset, var: VirtualVariable, *,
                     first_index: int | None = None) -> int:
    """Set every referenced chunk of ``var`` on array ``name`` of ``store``; returns how many.

    One ``set_virtual_refs_arr`` call per source file (Icechunk takes one checksum per
    call): the block of the chunk grid holding that file's chunks, other positions left
    empty (Icechunk skips empty locations). ``first_index`` places the chunks at that index
    along the first dimension (appending one step of it).
    """
    src = np.atleast_1d(var.refs.source)  # type: ignore[union-attr]
    off = np.atleast_1d(var.refs.offset)  # type: ignore[union-attr]
    ln = np.atleast_1d(var.refs.length)  # type: ignore[union-attr]
    scalar = np.ndim(var.refs.source) == 0  # type: ignore[union-attr]
    stats = vds.source_stats
    present = src != MISSING
    count = 0
    for s in np.unique(src[present]).tolist():
        where = np.nonzero(src == s)
        lo = [int(i.min()) for i in where]
        block = tuple(slice(a, int(i.max()) + 1) for a, i in zip(lo, where, strict=True))
        mine = src[block] == s
        locations = np.where(mine, vds.sources[s], "").ravel().tolist()
        if scalar:
            lo, shape = [], ()
        else:
            shape = mine.shape
            if first_index is not None:
                lo[0] += first_index
        failed = store.set_virtual_refs_arr(
            f"/{name}", shape, locations,
            np.ascontiguousarray(off[block], dtype=np.uint64).ravel(),
            np.ascontiguousarray(ln[block], dtype=np.uint64).ravel(),
            validate_containers=True, arr_offset=tuple(lo) if lo else None,
            checksum=_checksum(stats[s] if s < len(stats) else {}))
        if failed:
            raise StorageError(f"{name}: {len(failed)} references outside the repository's "
                               f"virtual chunk containers (first: {vds.sources[s]})",
                               variable=name, source=vds.sources[s])
        count += int(mine.sum())
    return count


def write_arrays(store: Any, vds: VirtualDataset, *,
                 storage_options: dict | None = None) -> dict[str, int]:
    """Create every array in ``store`` and fill it; returns counts of what was written."""
    import zarr

    root = zarr.open_group(store=store, mode="w", zarr_format=3,
                           attributes=strict_json(vds.attrs))
    fetch = ByteFetcher(vds.sources, storage_options)
    counts: dict[str, int] = defaultdict(int)
    for name, var in vds.variables.items():
        serializer, compressors = _codecs_v3(var)
        dtype: Any = str if var.dtype.kind == "O" else var.dtype
        arr = root.create_array(
            name,
            shape=var.shape,
            chunks=var.chunks if math.prod(var.chunks) > 0 else tuple(max(c, 1) for c in
                                                                        var.chunks),
            dtype=dtype,
            serializer=serializer,
            compressors=compressors,
            filters=[],
            fill_value=_fill_value(var),
            dimension_names=var.dims,
            attributes=v3_attrs(var),
        )
        if var.data is not None:
            if var.data.size:
                arr[...] = var.data
            counts["inlined_variables"] += 1
            continue
        if var.refs is None:
            continue
        counts["virtual_chunks"] += set_virtual_refs(store, name, vds, var)
        if var.native_chunks is not None:
            for idx in zip(*np.nonzero(var.native_chunks), strict=True):
                region = tuple(
                    slice(i * c, min((i + 1) * c, n))
                    for i, c, n in zip(idx, var.chunks, var.shape, strict=True)
                )
                arr[region] = read_region(var, region, fetch)
                counts["native_chunks"] += 1
    return dict(counts)


def _containers(config: Any, prefixes: list[str], storage_options: dict | None,
                credentials: dict[str, Any]) -> bool:
    """Add a virtual chunk container per prefix not yet in ``config``; True if any was."""
    added = False
    known = set(config.virtual_chunk_containers or {})
    for prefix in prefixes:
        container, creds = storage.icechunk_virtual_container(prefix, storage_options)
        credentials[prefix] = creds
        if prefix not in known:
            config.set_virtual_chunk_container(container)
            added = True
    return added


def write_icechunk(vds: VirtualDataset, url: str, *, storage_options: dict | None = None,
                   output_storage_options: dict | None = None, message: str,
                   provenance: dict[str, Any],
                   prefixes: list[str] | None = None) -> dict[str, int]:
    """Create the repository at ``url`` and commit the dataset on ``main``.

    ``prefixes`` are the virtual chunk containers to declare (default: the ones covering
    the dataset's sources); a batch declares its root so later files stay covered.
    """
    import icechunk

    quiet_icechunk()
    config = icechunk.RepositoryConfig.default()
    credentials: dict[str, Any] = {}
    _containers(config, sorted(set(source_prefixes(vds.sources)) | set(prefixes or [])),
                storage_options, credentials)
    repo = icechunk.Repository.create(
        storage.icechunk_storage(url, output_storage_options),
        config=config,
        authorize_virtual_chunk_access=icechunk.containers_credentials(credentials),
        spec_version=SPEC_VERSION,
    )
    session = repo.writable_session("main")
    counts = write_arrays(session.store, vds, storage_options=storage_options)
    session.commit(message, metadata={PROVENANCE_KEY: provenance})
    return counts


def update_icechunk(vds: VirtualDataset, url: str, *, storage_options: dict | None = None,
                    output_storage_options: dict | None = None, message: str,
                    provenance: dict[str, Any],
                    prefixes: list[str] | None = None) -> tuple[dict[str, int], str]:
    """Replace the dataset in the existing repository at ``url`` with ``vds`` as one new
    commit on ``main`` (earlier commits stay readable); returns (counts, snapshot id).

    A commit is atomic: readers see the previous snapshot until it lands.
    """
    repo = open_for_writing(url, sorted(set(source_prefixes(vds.sources)) | set(prefixes or [])),
                            storage_options=storage_options,
                            output_storage_options=output_storage_options)
    session = repo.writable_session("main")
    counts = write_arrays(session.store, vds, storage_options=storage_options)
    snapshot = session.commit(message, metadata={PROVENANCE_KEY: provenance})
    return counts, snapshot


def open_for_writing(url: str, prefixes: list[str], *, storage_options: dict | None = None,
                     output_storage_options: dict | None = None) -> Any:
    """The existing repository at ``url``, authorized for its virtual chunk containers;
    containers for ``prefixes`` it does not have yet are added and saved."""
    import icechunk

    quiet_icechunk()
    st = storage.icechunk_storage(url, output_storage_options)
    config = icechunk.Repository.fetch_config(st) or icechunk.RepositoryConfig.default()
    credentials: dict[str, Any] = {}
    added = _containers(config, sorted(set(prefixes)), storage_options, credentials)
    _refuse_old_format(url, st)
    repo = icechunk.Repository.open(
        st, config=config,
        authorize_virtual_chunk_access=icechunk.containers_credentials(credentials))
    if added:
        repo.save_config()
    return repo


def head_snapshot(url: str, storage_options: dict | None = None) -> tuple[str, dict[str, Any]]:
    """(snapshot id, zarrport provenance) of the tip of ``main``."""
    import icechunk

    quiet_icechunk()
    repo = icechunk.Repository.open(storage.icechunk_storage(url, storage_options))
    info = next(iter(repo.ancestry(branch="main")))
    return info.id, dict((info.metadata or {}).get(PROVENANCE_KEY) or {})


def spec_version(url: str, storage_options: dict | None = None, *, st: Any = None) -> int:
    """The Icechunk format version (1 or 2) of the repository at ``url``."""
    import icechunk

    quiet_icechunk()
    st = st if st is not None else storage.icechunk_storage(url, storage_options)
    return int(icechunk.Repository.fetch_spec_version(st))


def _refuse_old_format(url: str, st: Any) -> None:
    version = spec_version(url, st=st)
    if version < SPEC_VERSION:
        raise NeedsMigrationError(
            f"{url} is an Icechunk {version} repository: zarrport reads it but writes only "
            f"Icechunk {SPEC_VERSION}; upgrade it in place with `zarrport migrate {url}` "
            "(readers need icechunk >= 2 afterwards)", source=url)


def migrate(url: str, storage_options: dict | None = None, *,
            dry_run: bool = False) -> dict[str, Any]:
    """Upgrade the Icechunk 1 repository at ``url`` to Icechunk 2 in place, with Icechunk's
    own ``upgrade_icechunk_repository`` (all snapshots, branches and tags are kept; the
    Icechunk 1 files it no longer needs are deleted). Run it with no other reader or writer
    on the repository. A repository already at Icechunk 2 is left alone.

    Returns what was done: versions before and after, snapshots, branches and tags.
    """
    import time

    import icechunk

    t0 = time.perf_counter()
    quiet_icechunk()
    st = storage.icechunk_storage(url, storage_options)
    if not icechunk.Repository.exists(st):
        from zarrport.errors import SourceNotFoundError

        raise SourceNotFoundError(f"{url}: no Icechunk repository there", source=url)
    before = spec_version(url, st=st)
    repo = icechunk.Repository.open(st)
    branches = sorted(repo.list_branches())
    tags = sorted(repo.list_tags())
    snapshots = len({s.id for b in branches for s in repo.ancestry(branch=b)})
    if before < SPEC_VERSION:
        try:
            repo = icechunk.upgrade_icechunk_repository(repo, dry_run=dry_run)
        except icechunk.IcechunkError as err:
            raise StorageError(f"{url}: Icechunk could not migrate the repository: "
                               f"{' '.join(str(err).split())[:300]}", source=url) from err
    after = before if dry_run else spec_version(url, st=st)
    if not dry_run and (sorted(repo.list_branches()) != branches
                        or sorted(repo.list_tags()) != tags):
        raise StorageError(f"{url}: branches or tags differ after the migration", source=url)
    return {
        "url": url,
        "spec_version_before": before,
        "spec_version_after": after,
        "migrated": before < SPEC_VERSION and not dry_run,
        "dry_run": dry_run,
        "snapshots": snapshots,
        "branches": branches,
        "tags": tags,
        "seconds": round(time.perf_counter() - t0, 3),
    }
