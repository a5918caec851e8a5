"""Build and write the STAC catalog of a zarrport output.

A batch output (``zarrport-batch.json``, see docs/batch.md) gets one Collection per
collection, one Item per referenced source file (assets ``netcdf`` and ``zarr_ref``) and one
Item for the combined dataset (asset ``icechunk``). A plain output of ``zarrport
virtualize`` (kerchunk JSON or Parquet, Icechunk, Zarr) gets one Collection with one Item.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pystac
from pystac.extensions.datacube import DatacubeExtension, Dimension, Variable

from zarrport import storage
from zarrport.catalog.describe import DatasetDescription, describe, merge_bboxes
from zarrport.catalog.validate import (
    DATACUBE_SCHEMA,
    XARRAY_ASSETS_SCHEMA,
    schemas_for,
    validate_catalog,
)
from zarrport.errors import (
    CorruptSourceError,
    InvalidArgumentError,
    OutputExistsError,
    SourceNotFoundError,
    UnrecognizedFormatError,
    VerificationError,
    ZarrportError,
)

MANIFEST = "zarrport-batch.json"

#: media types of the assets (Icechunk has no registered type: ``+icechunk`` marks the
#: repository format on top of Zarr's own ``application/vnd.zarr``)
MEDIA_TYPES = {
    "netcdf": "application/netcdf",
    "kerchunk-json": "application/json",
    "kerchunk-parquet": "application/vnd.apache.parquet",
    "icechunk": "application/vnd.zarr+icechunk",
    "zarr": "application/vnd.zarr",
}
#: asset key per kind of output
ASSET_KEYS = {"kerchunk-json": "zarr_ref", "kerchunk-parquet": "zarr_ref",
              "icechunk": "icechunk", "zarr": "zarr"}
#: storage option keys that are never written into a catalog
_SECRET = re.compile(r"(secret|key|token|password|passwd|credential|sas|connection|signature"
                     r"|session)", re.IGNORECASE)


@dataclass
class _Entry:
    """One Item to make: the dataset to describe and its assets."""

    item_id: str
    open_url: str
    open_kind: str
    sources: list[dict[str, Any]] = field(default_factory=list)
    combined: bool = False


def public_storage_options(options: dict | None) -> dict[str, Any]:
    """The storage options a reader needs (endpoint, anonymous access, region ...), without
    anything secret: credentials come from the reader's own environment."""
    return {k: v for k, v in (options or {}).items() if not _SECRET.search(k)}


def write_catalog(output: str, catalog_dir: str | os.PathLike[str], *,
                  storage_options: dict | None = None, title: str | None = None,
                  validate: bool = True) -> dict[str, Any]:
    """Write a static, self-contained STAC catalog of ``output`` into ``catalog_dir``.

    ``output`` is a batch output directory/prefix or a single output of ``zarrport
    virtualize``. The catalog is built beside ``catalog_dir``, validated offline against the
    shipped schemas and only then moved into place (an existing catalog there is replaced;
    any other non-empty directory is refused). Returns a summary dict.
    """
    t0 = time.perf_counter()
    out_url = storage.normalize_url(os.fspath(output)).rstrip("/")
    target = _catalog_path(catalog_dir)
    catalog = build_catalog(out_url, storage_options=storage_options, title=title)
    tmp = target.with_name(f".{target.name}.zarrport-{uuid.uuid4().hex[:8]}")
    try:
        # a file name, so pystac never mistakes a dotted directory name for one
        catalog.normalize_hrefs(str(tmp / "catalog.json"))
        catalog.make_all_asset_hrefs_relative()
        _check_inside(catalog, tmp)
        catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
        report = validate_catalog(tmp) if validate else {"checked": 0, "errors": []}
        if report["errors"]:
            first = report["errors"][0]
            more = len(report["errors"]) - 1
            raise VerificationError(
                f"the STAC catalog does not validate: {first}"
                + (f" (and {more} more)" if more else ""))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    collections = list(catalog.get_collections())
    items = sum(len(list(c.get_items())) for c in collections)
    return {
        "catalog": str(target / "catalog.json"),
        "output": out_url,
        "collections": [c.id for c in collections],
        "items": items,
        "validated": report["checked"],
        "schemas": _schemas_used(catalog),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _check_inside(catalog: pystac.Catalog, root: Path) -> None:
    """Every document is written where its self href points: all must be under ``root``."""
    prefix = str(root) + os.sep
    for parent, _children, items in catalog.walk():
        for obj in (parent, *items):
            href = obj.get_self_href() or ""
            if not href.startswith(prefix):
                raise RuntimeError(f"STAC document {obj.id} would be written to {href}, "
                                   f"outside {root}")


def _schemas_used(catalog: pystac.Catalog) -> list[str]:
    used = set(schemas_for(catalog.to_dict(include_self_link=False)))
    for col in catalog.get_collections():
        used.update(schemas_for(col.to_dict(include_self_link=False)))
        for item in col.get_items():
            used.update(schemas_for(item.to_dict(include_self_link=False)))
    return sorted(used)


def _catalog_path(catalog_dir: str | os.PathLike[str]) -> Path:
    text = os.fspath(catalog_dir)
    if not text or not text.strip():
        raise InvalidArgumentError("empty catalog directory")
    url = storage.normalize_url(text)
    if not url.startswith("file://"):
        raise InvalidArgumentError(
            f"the catalog directory must be local, not {text!r} (copy it afterwards)")
    path = Path(url.removeprefix("file://"))
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path} exists and is not a directory", source=str(path))
    if path.is_dir() and any(path.iterdir()) and not (path / "catalog.json").exists():
        raise OutputExistsError(
            f"{path} is a non-empty directory without a STAC catalog.json; refusing to "
            "replace it", source=str(path))
    if not path.parent.exists():
        raise SourceNotFoundError(f"the parent directory of {path} does not exist",
                                  source=str(path))
    return path


# -- building ------------------------------------------------------------------------------

def build_catalog(output: str, *, storage_options: dict | None = None,
                  title: str | None = None) -> pystac.Catalog:
    """The catalog of ``output`` as pystac objects (not yet written)."""
    out_url = storage.normalize_url(output).rstrip("/")
    manifest = _read_manifest(out_url, storage_options)
    name = out_url.rsplit("/", 1)[-1] or "zarrport"
    catalog = pystac.Catalog(
        id=_slug(name),
        title=title or f"zarrport: {name}",
        description=f"Virtual Zarr views of the NetCDF archive referenced by {out_url}, "
                    "written by zarrport.",
        catalog_type=pystac.CatalogType.SELF_CONTAINED,
    )
    if manifest is not None:
        for cid, info in sorted((manifest.get("collections") or {}).items()):
            entries = _batch_entries(out_url, manifest, cid, info, storage_options)
            if entries:
                catalog.add_child(_collection(cid, entries, storage_options,
                                              fields=info.get("fields") or {}))
    else:
        from zarrport.open import detect, read_provenance

        kind = detect(out_url, storage_options)
        if kind not in ASSET_KEYS:
            raise UnrecognizedFormatError(
                f"{out_url} is {kind}, not zarrport output: catalog a batch output or the "
                "references / Icechunk repository written by `zarrport virtualize`",
                source=out_url)
        record = read_provenance(out_url, kind, storage_options) or {}
        stem = _stem(out_url)
        entry = _Entry(item_id=_slug(stem), open_url=out_url, open_kind=kind,
                       sources=list(record.get("sources") or []),
                       combined=len(record.get("sources") or []) != 1)
        catalog.add_child(_collection(_slug(stem), [entry], storage_options, fields={}))
    return catalog


def _read_manifest(out_url: str, options: dict | None) -> dict[str, Any] | None:
    url = f"{out_url}/{MANIFEST}"
    try:
        fs, path = storage.filesystem(url, options)
        if not fs.exists(path):
            fs_root, root_path = storage.filesystem(out_url, options)
            if not fs_root.exists(root_path):
                raise SourceNotFoundError(f"{out_url} does not exist", source=out_url)
            return None
        raw = fs.cat_file(path)
    except ZarrportError:
        raise
    except Exception as err:
        raise SourceNotFoundError(f"cannot read {url}: {err}", source=url) from err
    try:
        doc = json.loads(raw)
    except ValueError as err:
        raise CorruptSourceError(f"{url}: damaged batch manifest ({err})", source=url) from err
    if not isinstance(doc, dict) or "collections" not in doc:
        raise CorruptSourceError(f"{url}: not a zarrport batch manifest (no collections)",
                                 source=url)
    return doc


def _batch_entries(out_url: str, manifest: dict[str, Any], cid: str, info: dict[str, Any],
                   options: dict | None) -> list[_Entry]:
    entries: list[_Entry] = []
    for refs in _source_refs(out_url, manifest, cid, options):
        from zarrport.open import read_provenance

        url = f"{out_url}/{refs}"
        record = read_provenance(url, "kerchunk-json", options) or {}
        stem = refs.split("/", 2)[-1].removesuffix(".json")
        entries.append(_Entry(item_id=_slug(_stem(stem)), open_url=url,
                              open_kind="kerchunk-json",
                              sources=list(record.get("sources") or [])))
    if info.get("icechunk"):
        url = f"{out_url}/{info['icechunk']}"
        entries.append(_Entry(item_id=_slug(f"{cid}-combined"), open_url=url,
                              open_kind="icechunk", combined=True))
    return entries


def _source_refs(out_url: str, manifest: dict[str, Any], cid: str,
                 options: dict | None) -> list[str]:
    """Relative paths of the per-source references of ``cid`` that are current: from the
    ledger when it can be read (status ``ok``), else every JSON under
    ``references/<cid>/``."""
    ledger = manifest.get("ledger")
    if ledger and os.path.exists(ledger):
        try:
            from zarrport.pipeline.ledger import Ledger

            with Ledger(ledger) as book:
                rows = book.rows(collection=cid, status="ok")
            return sorted(r["refs"] for r in rows if r.get("refs"))
        except Exception:
            pass
    fs, path = storage.filesystem(f"{out_url}/references/{cid}", options)
    if not fs.exists(path):
        return []
    base = path.rstrip("/")
    found = [p for p in fs.find(base) if p.endswith(".json")]
    return sorted(f"references/{cid}/{p[len(base) + 1:]}" for p in found)


def _collection(cid: str, entries: list[_Entry], options: dict | None,
                *, fields: dict[str, Any]) -> pystac.Collection:
    from zarrport.open import open_dataset

    items: list[pystac.Item] = []
    descriptions: list[DatasetDescription] = []
    combined: DatasetDescription | None = None
    for entry in entries:
        try:
            ds = open_dataset(entry.open_url, storage_options=options)
        except ZarrportError as err:
            raise type(err)(f"cannot catalog {entry.open_url}: {err}",
                            source=entry.open_url) from err
        with ds:
            info = describe(ds)
        item = _item(entry, info, options)
        item.collection_id = cid
        items.append(item)
        descriptions.append(info)
        if entry.combined:
            combined = info
    main = combined or descriptions[0]
    starts = [d.start for d in descriptions if d.start]
    ends = [d.end for d in descriptions if d.end]
    bbox = merge_bboxes([d.bbox for d in descriptions if d.bbox])
    collection = pystac.Collection(
        id=cid,
        title=main.title or cid,
        description=_collection_description(cid, main, entries),
        extent=pystac.Extent(
            pystac.SpatialExtent([bbox]),
            pystac.TemporalExtent([[min(starts) if starts else None,
                                    max(ends) if ends else None]]),
        ),
        license="other",
        summaries=pystac.Summaries(_summaries(main, fields)),
    )
    cube = DatacubeExtension.ext(collection, add_if_missing=True)
    cube.apply(dimensions={k: Dimension.from_dict(v) for k, v in main.dimensions.items()},
               variables={k: Variable(v) for k, v in main.variables.items()})
    for entry, item in zip(entries, items, strict=True):
        if entry.combined:
            asset = item.assets.get(ASSET_KEYS[entry.open_kind])
            if asset is not None:
                collection.add_asset(ASSET_KEYS[entry.open_kind], asset.clone())
    if collection.assets:
        collection.stac_extensions.append(XARRAY_ASSETS_SCHEMA)
    collection.add_items(items)
    return collection


def _collection_description(cid: str, info: DatasetDescription,
                            entries: list[_Entry]) -> str:
    n = sum(1 for e in entries if not e.combined)
    text = str(info.attrs.get("summary") or info.attrs.get("comment") or "").strip()
    parts = [text] if text else []
    if n:
        parts.append(f"{n} source file(s) referenced by zarrport, one Item each.")
    if any(e.combined for e in entries):
        parts.append("The combined dataset is the Item and collection asset `icechunk`.")
    return " ".join(parts) or f"zarrport collection {cid}"


def _summaries(info: DatasetDescription, fields: dict[str, Any]) -> dict[str, Any]:
    summaries: dict[str, Any] = {k: [v] for k, v in sorted(fields.items())
                                 if isinstance(v, str | int | float)}
    data = sorted(k for k, v in info.variables.items() if v.get("type") == "data")
    if data:
        summaries["variables"] = data
    for key in ("frequency", "source_id", "experiment_id", "variant_label", "grid_label",
                "institution_id"):
        value = info.attrs.get(key)
        if isinstance(value, str) and value and key not in summaries:
            summaries[key] = [value]
    return summaries


def _item(entry: _Entry, info: DatasetDescription, options: dict | None) -> pystac.Item:
    props: dict[str, Any] = {}
    urls = [s["url"] for s in entry.sources if s.get("url")]
    if len(urls) == 1 and not entry.combined:
        props["title"] = urls[0].rsplit("/", 1)[-1]
    elif info.title:
        props["title"] = f"{info.title} (combined)" if entry.combined else info.title
    when: dt.datetime | None = None
    start = end = None
    if info.start and info.end and info.start != info.end:
        start, end = info.start, info.end
    elif info.start:
        when = info.start
    else:
        # no time coordinate: the item is dated by when its references were written
        when = dt.datetime.now(dt.UTC).replace(microsecond=0)
    item = pystac.Item(
        id=entry.item_id,
        geometry=info.geometry,
        bbox=info.bbox,
        datetime=when,
        properties=props,
        start_datetime=start,
        end_datetime=end,
    )
    if info.calendar:
        item.properties["description"] = (
            f"Time coordinate in the {info.calendar} calendar."
            + ("" if info.calendar in ("standard", "gregorian", "proleptic_gregorian") else
               " Dates are given with the same year, month, day and time of day."))
    public = public_storage_options(options)
    key = ASSET_KEYS[entry.open_kind]
    open_kwargs: dict[str, Any]
    if entry.open_kind.startswith("kerchunk"):
        open_kwargs = {"engine": "zarrport"}
        roles = ["references", "data"]
        description = ("kerchunk references: xarray.open_dataset(href, engine='zarrport', "
                       "storage_options=...) or zarrport.open_dataset(href)")
    elif entry.open_kind == "icechunk":
        open_kwargs = {"engine": "zarr", "consolidated": False, "zarr_format": 3}
        roles = ["data", "references"]
        description = ("Icechunk repository (branch main): zarrport.open_dataset(href), or "
                       "icechunk.Repository.open(...).readonly_session('main').store")
    else:
        open_kwargs = {"engine": "zarr"}
        roles = ["data"]
        description = "Zarr store"
    asset = pystac.Asset(href=_href(entry.open_url), media_type=MEDIA_TYPES[entry.open_kind],
                         roles=roles, title=description.split(":")[0], description=description,
                         extra_fields={"xarray:open_kwargs": open_kwargs,
                                       "xarray:storage_options": public})
    item.add_asset(key, asset)
    for i, url in enumerate(urls):
        # one source: asset "netcdf"; a combined output of several: "netcdf-1", "netcdf-2" ...
        name = "netcdf" if len(urls) == 1 else f"netcdf-{i + 1}"
        item.add_asset(name, pystac.Asset(
            href=_href(url), media_type=MEDIA_TYPES["netcdf"], roles=["data", "source"],
            title="original NetCDF file",
            extra_fields={"xarray:storage_options": public}))
    cube = DatacubeExtension.ext(item, add_if_missing=True)
    cube.apply(dimensions={k: Dimension.from_dict(v) for k, v in info.dimensions.items()},
               variables={k: Variable(v) for k, v in info.variables.items()})
    assert DATACUBE_SCHEMA in item.stac_extensions
    return item


def _href(url: str) -> str:
    """Local files as plain absolute paths (made relative to the catalog when saved),
    everything else as its URL."""
    return url.removeprefix("file://") if url.startswith("file://") else url


def _stem(url: str) -> str:
    name = url.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".json", ".parquet", ".parq", ".icechunk", ".zarr", ".nc", ".nc4"):
        name = name.removesuffix(suffix)
    return name or "dataset"


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return slug or "dataset"
