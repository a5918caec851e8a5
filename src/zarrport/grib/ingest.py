"""Forecast cycles into one Icechunk repository: one commit and one tag per cycle.

``ingest_cycle("gefs", "s3://noaa-gefs-pds/gefs.20250101/00", "gefs.icechunk")``

* the first cycle creates the repository: arrays ``(init_time, member, step, latitude,
  longitude)`` whose chunks are virtual references to the GRIB messages (decoded by the
  ``zarrport.grib`` codec), and a virtual chunk container covering the source bucket (or,
  for local files, the archive root above the cycle folders), anonymous access included;
* each later cycle appends one ``init_time``: the arrays grow by one along it, the new
  chunks are referenced, and the snapshot is committed and tagged ``cycle-YYYYMMDDHH``;
* a cycle that is already in the repository changes nothing (no commit);
* cycles must have the same variables, members, steps and grid as the repository, and come
  in time order; anything else is refused before a byte is written.

Fields absent from a cycle (a missing member file, a step not yet published) are missing
chunks: they read as NaN, and the result lists them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from zarrport import storage
from zarrport.errors import IncompatibleSourcesError, InvalidArgumentError
from zarrport.grib.build import Built

KINDS = ("gefs", "ecmwf")


@dataclass
class IngestResult:
    repository: str
    kind: str
    cycle: str  # ISO reference time
    status: str  # "created" | "appended" | "unchanged"
    snapshot: str | None
    tag: str
    variables: list[str]
    members: int
    steps: int
    chunks: int  # virtual chunks referenced by this cycle
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parser_for(kind: str, *, members: Any = None, steps: Any = None,
               variables: dict[str, str] | None = None,
               params: list[str] | None = None) -> Any:
    from zarrport.grib.ensemble import ECMWFParser, GEFSParser

    if kind == "gefs":
        return GEFSParser(members=members, steps=steps, variables=variables)
    if kind == "ecmwf":
        return ECMWFParser(members=members, steps=steps, params=params or ("tp",))
    raise InvalidArgumentError(f"unknown forecast kind {kind!r} (choose from {KINDS})")


def archive_root(kind: str, cycle_url: str) -> str:
    """The folder above the cycle folders (``.../`` before ``gefs.YYYYMMDD``), so one
    virtual chunk container covers every cycle of the archive."""
    pattern = r"/gefs\.\d{8}/" if kind == "gefs" else r"/\d{8}/\d{2}z/"
    m = re.search(pattern, cycle_url.rstrip("/") + "/")
    if m:
        return cycle_url[: m.start() + 1]
    return cycle_url.rstrip("/") + "/"


def cycle_tag(init: np.datetime64) -> str:
    text = str(np.datetime64(init, "h")).replace("-", "").replace("T", "")
    return f"cycle-{text}"


def ingest_cycle(kind: str, cycle_url: str, repo_url: str, *,
                 members: Any = None, steps: Any = None,
                 variables: dict[str, str] | None = None, params: list[str] | None = None,
                 storage_options: dict | None = None,
                 output_storage_options: dict | None = None) -> IngestResult:
    """Reference one forecast cycle into the Icechunk repository at ``repo_url``."""
    import time

    t0 = time.perf_counter()
    cycle_url = storage.normalize_url(cycle_url)
    repo_url = storage.normalize_url(repo_url)
    parser = parser_for(kind, members=members, steps=steps, variables=variables,
                        params=params)
    _refuse_single_file(kind, cycle_url, storage_options)
    registry = storage.object_store_registry([cycle_url], storage_options)
    built = parser.build(cycle_url, registry)
    check_messages(built, registry)
    vds = built.dataset
    init = np.datetime64(int(vds.variables["init_time"].data[0]), "s")
    tag = cycle_tag(init)
    data_vars = [n for n, v in vds.variables.items() if v.refs is not None]
    result = IngestResult(
        repository=repo_url, kind=kind, cycle=str(init), status="", snapshot=None, tag=tag,
        variables=data_vars, members=int(vds.variables["member"].shape[0]),
        steps=int(vds.variables["step"].shape[0]),
        chunks=sum(vds.variables[n].refs.count for n in data_vars),  # type: ignore[union-attr]
        missing=list(built.missing))
    prefixes = [archive_root(kind, cycle_url)]
    vds.attrs["source"] = prefixes[0]  # the archive, not the first cycle
    provenance = {"kind": "grib-cycles", "forecast": kind, "cycle": str(init),
                  "source": cycle_url}
    if not _exists(repo_url, output_storage_options):
        from zarrport.virtual.icechunk import head_snapshot, write_icechunk

        vds.variables["init_time"].chunks = (1024,)
        write_icechunk(vds, repo_url, storage_options=storage_options,
                       output_storage_options=output_storage_options,
                       message=_message(kind, init, result), provenance=provenance,
                       prefixes=prefixes)
        result.status = "created"
        result.snapshot = head_snapshot(repo_url, output_storage_options)[0]
    else:
        snapshot = _append(built, repo_url, init, kind, result, prefixes, provenance,
                           storage_options, output_storage_options)
        result.status = "appended" if snapshot else "unchanged"
        result.snapshot = snapshot
    if result.status != "unchanged":
        repo = _open_repo(repo_url, output_storage_options, storage_options, prefixes)
        repo.create_tag(tag, result.snapshot)
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


def _refuse_single_file(kind: str, cycle_url: str, options: dict | None) -> None:
    """A GRIB file given where a cycle folder is expected: say so, and what to use."""
    try:
        fs, path = storage.filesystem(cycle_url, options)
        is_file = bool(fs.isfile(path))
    except Exception:  # noqa: BLE001 - unreachable or absent: the listing reports it
        return
    if is_file:
        example = ("gefs.YYYYMMDD/HH" if kind == "gefs" else "YYYYMMDD/HHz/ifs/0p25/enfo")
        raise InvalidArgumentError(
            f"{cycle_url} is a file, not a forecast cycle folder: grib ingest {kind} takes "
            f"a folder such as .../{example} holding the GRIB files and their indexes; to "
            "reference one GRIB file use `zarrport virtualize FILE -o OUT.icechunk`",
            source=cycle_url)


def check_messages(built: Built, registry: Any) -> None:
    """Every referenced message starts with ``GRIB`` and ends with ``7777`` where its index
    says (8 bytes per message, read concurrently): a corrupted message or an index that does
    not match its file is refused here, naming both, before anything is written."""
    from zarrport.errors import CorruptSourceError
    from zarrport.grib.fetch import Fetcher

    spans: dict[str, list[tuple[int, int]]] = {}
    for f in built.fields:
        spans.setdefault(f.url, []).append((f.offset, f.length))
    got = Fetcher(registry).ends(spans)
    for url, items in spans.items():
        for (offset, length), marks in zip(items, got[url], strict=True):
            if marks != b"GRIB7777":
                name = url.rsplit("/", 1)[-1]
                what = ("does not start with GRIB" if marks[:4] != b"GRIB"
                        else "does not end with 7777")
                raise CorruptSourceError(
                    f"{name}: the message at bytes {offset}..{offset + length} {what} "
                    "(a corrupted or truncated message, or an index for another file); "
                    "nothing was written", source=url)


def _exists(url: str, options: dict | None) -> bool:
    import icechunk

    from zarrport.virtual.icechunk import quiet_icechunk

    quiet_icechunk()
    return bool(icechunk.Repository.exists(storage.icechunk_storage(url, options)))


def _open_repo(url: str, options: dict | None, source_options: dict | None,
               prefixes: list[str]) -> Any:
    from zarrport.virtual.icechunk import open_for_writing

    return open_for_writing(url, prefixes, storage_options=source_options,
                            output_storage_options=options)


def _message(kind: str, init: np.datetime64, r: IngestResult) -> str:
    text = (f"zarrport grib ingest {kind}: cycle {np.datetime64(init, 'h')}Z, "
            f"{r.members} members x {r.steps} steps, {r.chunks} chunks referenced")
    if r.missing:
        text += f", {len(r.missing)} missing"
    return text


def _append(built: Built, repo_url: str, init: np.datetime64, kind: str, result: IngestResult,
            prefixes: list[str], provenance: dict[str, Any], storage_options: dict | None,
            output_storage_options: dict | None) -> str | None:
    import zarr

    from zarrport.virtual.icechunk import set_virtual_refs

    vds = built.dataset
    repo = _open_repo(repo_url, output_storage_options, storage_options, prefixes)
    session = repo.writable_session("main")
    root = zarr.open_group(session.store, mode="r+", zarr_format=3)
    if root.attrs.get("zarrport_grib") != vds.attrs.get("zarrport_grib"):
        raise IncompatibleSourcesError(
            f"{repo_url} holds {root.attrs.get('zarrport_grib') or 'no'} forecast cycles, not "
            f"{kind}", source=repo_url)
    have = np.asarray(root["init_time"][:]).astype(np.int64)
    new = int(vds.variables["init_time"].data[0])
    if new in have:
        return None
    if have.size and new < have.max():
        raise IncompatibleSourcesError(
            f"cycle {init} is older than the newest in {repo_url} "
            f"({np.datetime64(int(have.max()), 's')}); cycles are appended in time order",
            source=repo_url)
    _check_same(root, built, repo_url)
    n = int(have.size)
    for name, var in vds.variables.items():
        if var.refs is None:
            continue
        arr = root[name]
        arr.resize((n + 1,) + tuple(arr.shape[1:]))
        set_virtual_refs(session.store, name, vds, var, first_index=n)
    times = root["init_time"]
    times.resize((n + 1,))
    times[n] = new
    return session.commit(_message(kind, init, result),
                          metadata={"zarrport": provenance})


def _check_same(root: Any, built: Built, repo_url: str) -> None:
    """Same variables, members, steps and grid as the repository, or a clear refusal."""
    vds = built.dataset
    have_vars = sorted(k for k, a in root.arrays() if "init_time" in (a.metadata.dimension_names
                                                                       or ()) and k != "init_time")
    want_vars = sorted(n for n, v in vds.variables.items() if v.refs is not None)
    if have_vars != want_vars:
        raise IncompatibleSourcesError(
            f"this cycle has variables {want_vars}, the repository {have_vars}", source=repo_url)
    for coord, var in vds.variables.items():
        if var.data is None or coord == "init_time":
            continue
        want = np.asarray(vds.variables[coord].data)
        have = np.asarray(root[coord][...]) if coord in root else None
        if have is None or have.shape != want.shape or not np.array_equal(have, want):
            raise IncompatibleSourcesError(
                f"this cycle's {coord} differs from the repository's "
                f"({_brief(want)} vs {_brief(have)}); ingest it into its own repository, or "
                "ask for the repository's members/steps", source=repo_url)


def _brief(a: np.ndarray | None) -> str:
    if a is None:
        return "absent"
    if a.size <= 6:
        return str(a.tolist())
    return f"{a.size} values {a.flat[0]}..{a.flat[-1]}"
