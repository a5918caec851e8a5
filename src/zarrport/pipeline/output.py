"""Reading a batch output: its collections and where each one is.

A batch output (see :mod:`zarrport.pipeline.layout`) is recognised by its content: the
manifest ``zarrport-batch.json``, or -- when a run was stopped after committing a collection
but before writing the manifest -- a ``collections/`` directory beside the ``ledger.sqlite``.
Collections are those the manifest lists plus any ``collections/<name>.icechunk``
repository (or kerchunk ``<name>.json`` / ``<name>.parquet``) it does not (yet) list; each
opens with :func:`zarrport.open_dataset` like any other output -- an Icechunk one at any
version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zarrport import storage
from zarrport.errors import InvalidArgumentError, SourceNotFoundError
from zarrport.pipeline import layout


def looks_like_batch(names: set[str]) -> bool:
    """True for the entries of a batch output's top directory."""
    return layout.MANIFEST in names or {layout.LEDGER, layout.COLLECTIONS} <= names


@dataclass
class Collection:
    """One collection of a batch output."""

    name: str
    url: str  # of its repository (or references)
    exists: bool
    entry: dict[str, Any] = field(default_factory=dict)  # the manifest's record, if any


#: what a collection can be, by the suffix of its entry under ``collections/``
SUFFIXES = (".icechunk", ".parquet", ".json")


def _listed_collections(out_url: str, options: dict | None) -> dict[str, str]:
    """name -> relative path of every ``collections/<name>.icechunk`` (or kerchunk
    ``.parquet`` / ``.json``) present."""
    target = f"{out_url}/{layout.COLLECTIONS}"
    fs, path = storage.filesystem(target, options)
    try:
        entries = fs.ls(path, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    out = {}
    for p in entries:
        base = p.rstrip("/").rsplit("/", 1)[-1]
        if base.startswith("."):  # a writer's temporary
            continue
        for suffix in SUFFIXES:
            if base.endswith(suffix) and base != suffix:
                out.setdefault(base.removesuffix(suffix), f"{layout.COLLECTIONS}/{base}")
    return out


def _target(entry: dict[str, Any]) -> str | None:
    """Where a manifest entry says the collection's dataset is (relative to the output).
    Batch writes an Icechunk repository per collection (``icechunk``); an entry naming
    kerchunk ``references`` (JSON or Parquet) is read too -- the kind is detected from the
    content, as for any output."""
    for key in ("icechunk", "references", "kerchunk", "parquet", "path"):
        value = entry.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def collections(url: str, storage_options: dict | None = None) -> dict[str, Collection]:
    """The collections of the batch output at ``url``, by name."""
    out_url = storage.normalize_url(url).rstrip("/")
    manifest = layout.read_manifest(out_url, storage_options) or {}
    found: dict[str, Collection] = {}
    on_disk = _listed_collections(out_url, storage_options)
    for name, entry in sorted((manifest.get("collections") or {}).items()):
        rel = _target(entry or {}) or layout.collection_repo(name)
        target = f"{out_url}/{rel}"
        found[name] = Collection(name, target, layout.exists(target, storage_options),
                                 dict(entry or {}))
    for name, rel in sorted(on_disk.items()):
        if name not in found:
            found[name] = Collection(name, f"{out_url}/{rel}", True, {})
    return found


def collection(url: str, name: str | None = None,
               storage_options: dict | None = None) -> Collection:
    """One collection of a batch output: the one named, or the only one; it must have a
    repository (a collection whose first commit failed has none)."""
    out_url = storage.normalize_url(url).rstrip("/")
    cols = collections(out_url, storage_options)
    names = sorted(cols)
    if name is None:
        if not cols:
            raise SourceNotFoundError(f"{out_url} is a batch output with no collection yet",
                                      source=out_url)
        if len(cols) > 1:
            raise InvalidArgumentError(
                f"{out_url} is a batch output of {len(cols)} collections; name one with "
                f"collection=NAME (--collection NAME): {', '.join(names)}")
        name = names[0]
    elif name not in cols:
        raise SourceNotFoundError(
            f"{out_url} has no collection {name!r}; its collections: "
            f"{', '.join(names) or 'none'}", source=out_url)
    col = cols[name]
    if not col.exists:
        raise SourceNotFoundError(
            f"{out_url}: collection {name!r} has no repository yet (no commit of it "
            "succeeded; `zarrport batch` reported why)", source=out_url)
    return col


def collection_url(url: str, name: str | None = None,
                   storage_options: dict | None = None) -> str:
    """The URL of one collection of a batch output (see :func:`collection`)."""
    return collection(url, name, storage_options).url


def _icechunk_dims(url: str, storage_options: dict | None) -> dict[str, int]:
    """Dimension sizes of the dataset at the tip of ``main``, from the arrays' metadata
    alone: no chunk (and so no source file) is read."""
    import zarr

    from zarrport.open import open_icechunk_store

    group = zarr.open_group(open_icechunk_store(url, storage_options), mode="r",
                            zarr_format=3)
    dims: dict[str, int] = {}
    for _name, array in sorted(group.arrays()):
        names = getattr(array.metadata, "dimension_names", None) or ()
        for dim, size in zip(names, array.shape, strict=False):
            if dim is not None:
                dims.setdefault(str(dim), int(size))
    return dims


def describe(url: str, storage_options: dict | None = None) -> dict[str, Any]:
    """The collections of a batch output with their dimensions and last commit (the model
    ``zarrport info OUTPUT --json`` prints)."""
    from zarrport.history import commits
    from zarrport.open import detect, open_dataset

    out_url = storage.normalize_url(url).rstrip("/")
    described: dict[str, Any] = {}
    for name, col in collections(out_url, storage_options).items():
        item: dict[str, Any] = {"url": col.url, "kind": None, "sources": col.entry.get("sources"),
                                "fields": col.entry.get("fields") or {}, "dims": None,
                                "last_commit": None}
        if col.exists:
            item["kind"] = detect(col.url, storage_options)
            if item["kind"] == "icechunk":
                item["dims"] = _icechunk_dims(col.url, storage_options)
            else:
                with open_dataset(col.url, storage_options=storage_options) as ds:
                    item["dims"] = {str(k): int(v) for k, v in ds.sizes.items()}
            if item["kind"] == "icechunk":
                item["last_commit"] = commits(col.url, storage_options=storage_options)[0] \
                    .to_dict()
        described[name] = item
    return {"url": out_url, "kind": "batch", "collections": described}


__all__ = ["Collection", "collection", "collection_url", "collections", "describe",
           "looks_like_batch"]
