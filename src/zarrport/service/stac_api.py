"""STAC API over the static catalog that ``zarrport batch --stac`` / ``zarrport catalog`` write.

Mounted at ``/stac`` by ``zarrport serve --catalog DIR``:

==================================  =========================================================
``GET /stac/``                      landing page (a Catalog with ``conformsTo`` and links)
``GET /stac/conformance``           the conformance classes
``GET /stac/collections``           every collection
``GET /stac/collections/{id}``      one collection
``GET /stac/collections/{id}/items``  its items (``bbox``, ``datetime``, ``limit``, ``token``)
``GET /stac/collections/{id}/items/{item}``  one item
``GET|POST /stac/search``           STAC API - Item Search: ``bbox``, ``datetime``,
                                    ``collections``, ``ids``, ``limit``, paging by ``token``
==================================  =========================================================

The catalog is read from disk and re-read when one of its JSON files changes (checked at
most once a second), so a ``batch`` run that adds items shows up without a restart. Asset
hrefs come out absolute; each item and collection gets ``tilejson`` links to this server's
tiles of its data variables.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from zarrport.catalog.read import ASSET_PREFERENCE  # the order open_item tries assets in
from zarrport.errors import CorruptSourceError, InvalidArgumentError

__all__ = ["ASSET_PREFERENCE", "StaticCatalog", "stac_router"]

log = logging.getLogger("zarrport.service")

STAC_VERSION = "1.1.0"
CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0/item-search",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]
DEFAULT_LIMIT = 10
MAX_LIMIT = 1000
GEOJSON = "application/geo+json"


class NotInCatalogError(InvalidArgumentError):
    """A collection or item id the catalog does not have (404)."""

    code = "not_served"


@dataclass
class _Collection:
    doc: dict[str, Any]
    path: Path
    items: dict[str, tuple[dict[str, Any], Path]] = field(default_factory=dict)


class StaticCatalog:
    """The static catalog under ``directory`` (its ``catalog.json``), kept current."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        root = Path(directory)
        if root.is_file():
            root = root.parent
        if not (root / "catalog.json").is_file():
            raise InvalidArgumentError(f"--catalog {directory}: no catalog.json there (write one "
                                       "with `zarrport batch --stac` or `zarrport catalog`)")
        self.root = root.resolve()
        self._lock = threading.Lock()
        self._checked = 0.0
        self._signature: tuple = ()
        self.catalog: dict[str, Any] = {}
        self.collections: dict[str, _Collection] = {}
        self._load()

    # ------------------------------------------------------------------ reading

    def _files(self) -> list[Path]:
        return [self.root / "catalog.json", *sorted(self.root.glob("*/collection.json")),
                *sorted(self.root.glob("*/*/*.json"))]

    def _stat_signature(self) -> tuple:
        out = []
        for p in self._files():
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            out.append((str(p), st.st_mtime_ns, st.st_size))
        return tuple(out)

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return
        with self._lock:
            self._checked = now
            if self._stat_signature() != self._signature:
                try:
                    self._load()
                except (CorruptSourceError, KeyError, TypeError) as err:
                    # a catalog being rewritten (a batch run): keep serving the last one
                    # read whole, and try again at the next check
                    log.warning("the STAC catalog in %s could not be re-read (%s); serving "
                                "the previous one", self.root, err)

    def _load(self) -> None:
        signature = self._stat_signature()
        catalog = _read(self.root / "catalog.json")
        collections: dict[str, _Collection] = {}
        for link in catalog.get("links", []):
            if link.get("rel") != "child":
                continue
            if not isinstance(link.get("href"), str):
                raise CorruptSourceError(f"{self.root}/catalog.json: a child link has no href")
            path = (self.root / link["href"]).resolve()
            doc = _read(path)
            if doc.get("type") != "Collection":
                continue
            coll = _Collection(doc, path)
            for ilink in doc.get("links", []):
                if ilink.get("rel") != "item":
                    continue
                if not isinstance(ilink.get("href"), str):
                    raise CorruptSourceError(f"{path}: an item link has no href")
                ipath = (path.parent / ilink["href"]).resolve()
                idoc = _read(ipath)
                if not isinstance(idoc.get("id"), str):
                    raise CorruptSourceError(f"{ipath}: a STAC item without an id")
                coll.items[idoc["id"]] = (idoc, ipath)
            if not isinstance(doc.get("id"), str):
                raise CorruptSourceError(f"{path}: a STAC collection without an id")
            collections[doc["id"]] = coll
        self.catalog, self.collections, self._signature = catalog, collections, signature

    # ------------------------------------------------------------------ lookups

    def collection(self, cid: str) -> _Collection:
        self.refresh()
        coll = self.collections.get(cid)
        if coll is None:
            raise NotInCatalogError(f"no collection {cid!r} in the catalog")
        return coll

    def item(self, cid: str, iid: str) -> tuple[dict[str, Any], Path]:
        coll = self.collection(cid)
        found = coll.items.get(iid)
        if found is None:
            raise NotInCatalogError(f"collection {cid!r} has no item {iid!r}")
        return found

    def dataset_url(self, cid: str, iid: str | None = None) -> str:
        """The URL a collection (or item) opens as: its preferred asset's absolute href.
        A collection without a dataset asset of its own opens as its ``-combined`` item, or
        its only item."""
        coll = self.collection(cid)
        if iid is not None:
            doc, path = self.item(cid, iid)
            return _asset_url(doc, path, f"item {iid!r}")
        if any(k in coll.doc.get("assets", {}) for k in ASSET_PREFERENCE):
            return _asset_url(coll.doc, coll.path, f"collection {cid!r}")
        combined = [i for i in coll.items if i.endswith("-combined")]
        pick = combined or (list(coll.items) if len(coll.items) == 1 else [])
        if not pick:
            raise NotInCatalogError(f"collection {cid!r} has no dataset asset: name an item "
                                    "with item=")
        doc, path = coll.items[pick[0]]
        return _asset_url(doc, path, f"item {pick[0]!r}")


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            doc = json.load(fh)
    except FileNotFoundError as err:
        raise CorruptSourceError(f"the catalog links to {path}, which does not exist") from err
    except ValueError as err:
        raise CorruptSourceError(f"{path}: not JSON ({err})") from err
    if not isinstance(doc, dict):
        raise CorruptSourceError(f"{path}: not a STAC object")
    return doc


def _absolute(href: str, base: Path) -> str:
    if "://" in href:
        return href
    return "file://" + os.path.normpath(os.path.join(base.parent, href))


def _asset_url(doc: dict[str, Any], path: Path, what: str) -> str:
    assets = doc.get("assets", {})
    key = next((k for k in ASSET_PREFERENCE if k in assets), None)
    if key is None:
        raise NotInCatalogError(f"{what} has no asset {', '.join(ASSET_PREFERENCE)} to open")
    return _absolute(assets[key]["href"], path)


# --------------------------------------------------------------------------- filters

def parse_bbox(text: str | list[float] | None) -> list[float] | None:
    if text is None or text == "":
        return None
    try:
        values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"bbox {text!r}: four (or six) numbers, west,south,east,"
                                   "north") from None
    if len(values) == 6:
        values = [values[0], values[1], values[3], values[4]]
    if len(values) != 4 or not all(map(_finite, values)):
        raise InvalidArgumentError(f"bbox {text!r}: four (or six) numbers, west,south,east,"
                                   "north")
    if values[1] > values[3]:
        raise InvalidArgumentError(f"bbox {text!r}: south is north of north")
    return values


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")


def _instant(text: str) -> dt.datetime | None:
    if text in ("", ".."):
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidArgumentError(f"datetime {text!r}: not RFC 3339 (e.g. "
                                   "2015-01-01T00:00:00Z)") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def parse_datetime(text: str | None) -> tuple[dt.datetime | None, dt.datetime | None] | None:
    """``a``, ``a/b``, ``../b``, ``a/..`` -> (start, end), None for open ends."""
    if not text:
        return None
    if "/" in text:
        a, _, b = text.partition("/")
        start, end = _instant(a), _instant(b)
        if start is None and end is None:
            raise InvalidArgumentError(f"datetime {text!r}: both ends are open")
        if start and end and start > end:
            raise InvalidArgumentError(f"datetime {text!r}: the start is after the end")
        return start, end
    t = _instant(text)
    if t is None:
        raise InvalidArgumentError(f"datetime {text!r}: not RFC 3339")
    return t, t


def _item_interval(doc: dict[str, Any]) -> tuple[dt.datetime | None, dt.datetime | None]:
    props = doc.get("properties", {})
    start = props.get("start_datetime") or props.get("datetime")
    end = props.get("end_datetime") or props.get("datetime")
    return (_instant(start) if start else None, _instant(end) if end else None)


def _matches(doc: dict[str, Any], bbox: list[float] | None,
             interval: tuple[dt.datetime | None, dt.datetime | None] | None) -> bool:
    if bbox is not None:
        ib = doc.get("bbox")
        if not ib or len(ib) < 4:
            return False
        if len(ib) == 6:
            ib = [ib[0], ib[1], ib[3], ib[4]]
        if ib[1] > bbox[3] or ib[3] < bbox[1]:
            return False
        if not _lon_overlap(ib[0], ib[2], bbox[0], bbox[2]):
            return False
    if interval is not None:
        start, end = _item_interval(doc)
        lo, hi = interval
        if lo is not None and end is not None and end < lo:
            return False
        if hi is not None and start is not None and start > hi:
            return False
    return True


def _lon_overlap(a0: float, a1: float, b0: float, b1: float) -> bool:
    def spans(w: float, e: float) -> list[tuple[float, float]]:  # across the antimeridian
        return [(w, e)] if w <= e else [(w, 180.0), (-180.0, e)]

    return any(x0 <= y1 and y0 <= x1 for x0, x1 in spans(a0, a1) for y0, y1 in spans(b0, b1))


# --------------------------------------------------------------------------- the router

class SearchBody(BaseModel):
    """Body of ``POST /stac/search``."""

    model_config = ConfigDict(extra="forbid")

    bbox: list[float] | None = Field(None, min_length=4, max_length=6)
    datetime: str | None = Field(None, max_length=100)
    collections: list[Annotated[str, Field(max_length=256)]] | None = Field(None,
                                                                            max_length=100)
    ids: list[Annotated[str, Field(max_length=256)]] | None = Field(None, max_length=100)
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    token: str | None = Field(None, max_length=64)


def _offset(token: str | None) -> int:
    if not token:
        return 0
    kind, _, number = token.partition(":")
    if kind != "next" or not number.isdigit() or len(number) > 12:
        raise InvalidArgumentError(f"token {token!r}: not a paging token of this server")
    return int(number)


def stac_router(get_catalog: Any, tile_link: Any) -> APIRouter:
    """The STAC API routes; ``get_catalog(request)`` gives the :class:`StaticCatalog`,
    ``tile_link(request, query)`` a tilejson URL for the query parameters."""
    router = APIRouter()

    def base(request: Request) -> str:
        return str(request.url_for("stac_landing")).rstrip("/")

    def collection_out(request: Request, coll: _Collection) -> dict[str, Any]:
        doc = copy.deepcopy(coll.doc)
        b = base(request)
        cid = doc["id"]
        doc["links"] = [
            {"rel": "self", "href": f"{b}/collections/{quote(cid)}", "type": "application/json"},
            {"rel": "root", "href": f"{b}/", "type": "application/json"},
            {"rel": "parent", "href": f"{b}/", "type": "application/json"},
            {"rel": "items", "href": f"{b}/collections/{quote(cid)}/items", "type": GEOJSON},
            *_tile_links(request, doc, {"collection": cid}, tile_link),
        ]
        for asset in doc.get("assets", {}).values():
            asset["href"] = _absolute(asset["href"], coll.path)
        return doc

    def item_out(request: Request, cid: str, doc: dict[str, Any], path: Path) -> dict[str, Any]:
        doc = copy.deepcopy(doc)
        b = base(request)
        iid = doc["id"]
        doc["collection"] = cid
        doc["links"] = [
            {"rel": "self", "href": f"{b}/collections/{quote(cid)}/items/{quote(iid)}",
             "type": GEOJSON},
            {"rel": "parent", "href": f"{b}/collections/{quote(cid)}",
             "type": "application/json"},
            {"rel": "collection", "href": f"{b}/collections/{quote(cid)}",
             "type": "application/json"},
            {"rel": "root", "href": f"{b}/", "type": "application/json"},
            *_tile_links(request, doc.get("properties", {}), {"collection": cid, "item": iid},
                         tile_link),
        ]
        for asset in doc.get("assets", {}).values():
            asset["href"] = _absolute(asset["href"], path)
        return doc

    def page(request: Request, pairs: list[tuple[str, dict[str, Any], Path]], *,
             limit: int, offset: int, query: dict[str, Any], post: bool = False
             ) -> JSONResponse:
        chosen = pairs[offset: offset + limit]
        body: dict[str, Any] = {
            "type": "FeatureCollection",
            "features": [item_out(request, cid, d, p) for cid, d, p in chosen],
            "numberMatched": len(pairs),
            "numberReturned": len(chosen),
            "links": [{"rel": "root", "href": f"{base(request)}/",
                       "type": "application/json"}],
        }
        if offset + limit < len(pairs):
            token = f"next:{offset + limit}"
            if post:
                body["links"].append({"rel": "next", "href": str(request.url), "method": "POST",
                                      "type": GEOJSON, "body": {**query, "token": token},
                                      "merge": False})
            else:
                args = {k: v for k, v in query.items() if v is not None}
                args["token"] = token
                href = str(request.url.replace(query=urlencode(args, doseq=True)))
                body["links"].append({"rel": "next", "href": href, "type": GEOJSON})
        return JSONResponse(body, media_type=GEOJSON)

    def search(request: Request, *, bbox: Any, datetime: str | None,
               collections: list[str] | None, ids: list[str] | None,
               limit: int, token: str | None, query: dict[str, Any], post: bool
               ) -> JSONResponse:
        catalog = get_catalog(request)
        catalog.refresh()
        box = parse_bbox(bbox)
        interval = parse_datetime(datetime)
        offset = _offset(token)
        wanted = set(collections) if collections else None
        idset = set(ids) if ids else None
        found = []
        for cid in sorted(catalog.collections):
            if wanted is not None and cid not in wanted:
                continue
            for iid, (doc, path) in sorted(catalog.collections[cid].items.items()):
                if idset is not None and iid not in idset:
                    continue
                if _matches(doc, box, interval):
                    found.append((cid, doc, path))
        return page(request, found, limit=limit, offset=offset, query=query, post=post)

    @router.get("/", name="stac_landing", summary="STAC API landing page")
    def landing(request: Request) -> JSONResponse:
        catalog = get_catalog(request)
        catalog.refresh()
        b = base(request)
        doc = {
            "type": "Catalog",
            "stac_version": STAC_VERSION,
            "id": catalog.catalog.get("id", "zarrport"),
            "title": catalog.catalog.get("title", "zarrport"),
            "description": catalog.catalog.get("description", "zarrport STAC API"),
            "conformsTo": CONFORMANCE,
            "links": [
                {"rel": "self", "href": f"{b}/", "type": "application/json"},
                {"rel": "root", "href": f"{b}/", "type": "application/json"},
                {"rel": "conformance", "href": f"{b}/conformance", "type": "application/json"},
                {"rel": "data", "href": f"{b}/collections", "type": "application/json"},
                {"rel": "search", "href": f"{b}/search", "type": GEOJSON, "method": "GET"},
                {"rel": "search", "href": f"{b}/search", "type": GEOJSON, "method": "POST"},
                {"rel": "service-desc", "href": str(request.url_for("openapi")),
                 "type": "application/vnd.oai.openapi+json;version=3.0"},
                *[{"rel": "child", "href": f"{b}/collections/{quote(cid)}",
                   "type": "application/json", "title": c.doc.get("title", cid)}
                  for cid, c in sorted(catalog.collections.items())],
            ],
        }
        return JSONResponse(doc)

    @router.get("/conformance", summary="Conformance classes")
    def conformance() -> dict[str, list[str]]:
        return {"conformsTo": CONFORMANCE}

    @router.get("/collections", summary="Every collection")
    def collections(request: Request) -> JSONResponse:
        catalog = get_catalog(request)
        catalog.refresh()
        b = base(request)
        return JSONResponse({
            "collections": [collection_out(request, c)
                            for _, c in sorted(catalog.collections.items())],
            "links": [{"rel": "self", "href": f"{b}/collections", "type": "application/json"},
                      {"rel": "root", "href": f"{b}/", "type": "application/json"}],
        })

    @router.get("/collections/{collection_id}", summary="One collection")
    def collection(request: Request, collection_id: str) -> JSONResponse:
        return JSONResponse(collection_out(request,
                                           get_catalog(request).collection(collection_id)))

    @router.get("/collections/{collection_id}/items", summary="The items of a collection")
    def items(
        request: Request,
        collection_id: str,
        bbox: Annotated[str | None, Query(max_length=200, description="west,south,east,north")
                        ] = None,
        datetime: Annotated[str | None, Query(max_length=100,
                                              description="RFC 3339 instant or interval")
                            ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        token: Annotated[str | None, Query(max_length=64)] = None,
    ) -> JSONResponse:
        get_catalog(request).collection(collection_id)  # 404 for an unknown one
        query = {"bbox": bbox, "datetime": datetime, "limit": limit}
        return search(request, bbox=bbox, datetime=datetime, collections=[collection_id],
                      ids=None, limit=limit, token=token, query=query, post=False)

    @router.get("/collections/{collection_id}/items/{item_id}", summary="One item")
    def item(request: Request, collection_id: str, item_id: str) -> JSONResponse:
        doc, path = get_catalog(request).item(collection_id, item_id)
        return JSONResponse(item_out(request, collection_id, doc, path), media_type=GEOJSON)

    @router.get("/search", summary="Item search")
    def search_get(
        request: Request,
        bbox: Annotated[str | None, Query(max_length=200, description="west,south,east,north")
                        ] = None,
        datetime: Annotated[str | None, Query(max_length=100)] = None,
        collections: Annotated[str | None, Query(max_length=4096,
                                                 description="comma-separated ids")] = None,
        ids: Annotated[str | None, Query(max_length=4096,
                                         description="comma-separated ids")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        token: Annotated[str | None, Query(max_length=64)] = None,
    ) -> JSONResponse:
        cols = [c for c in collections.split(",") if c] if collections else None
        idl = [i for i in ids.split(",") if i] if ids else None
        query = {"bbox": bbox, "datetime": datetime, "collections": collections, "ids": ids,
                 "limit": limit}
        return search(request, bbox=bbox, datetime=datetime, collections=cols, ids=idl,
                      limit=limit, token=token, query=query, post=False)

    @router.post("/search", summary="Item search (JSON body)")
    def search_post(request: Request, body: SearchBody) -> JSONResponse:
        query = body.model_dump(exclude_none=True, exclude={"token"})
        return search(request, bbox=body.bbox, datetime=body.datetime,
                      collections=body.collections, ids=body.ids, limit=body.limit,
                      token=body.token, query=query, post=True)

    return router


def _tile_links(request: Request, holder: dict[str, Any], ident: dict[str, str],
                tile_link: Any) -> list[dict[str, Any]]:
    variables = holder.get("cube:variables") or {}
    first: dict[str, str] = {}  # the first time step: a map shows one
    for dim, meta in (holder.get("cube:dimensions") or {}).items():
        extent = meta.get("extent") or []
        if meta.get("type") == "temporal" and extent and extent[0]:
            first[dim] = str(extent[0])
    out = []
    for name, meta in sorted(variables.items()):
        if meta.get("type") != "data":
            continue
        dims = meta.get("dimensions") or []
        sel = [f"{d}={first[d]}" for d in dims if d in first]
        query: dict[str, Any] = {**ident, "variable": name}
        if sel:
            query["sel"] = sel
        out.append({"rel": "tilejson", "href": tile_link(request, query),
                    "type": "application/json", "title": f"{name}: map tiles (TileJSON)"})
    return out
