"""Offline validation of STAC objects against the JSON schemas shipped in this package.

Every ``$ref`` resolves through one :class:`referencing.Registry` built from the files in
``zarrport/catalog/schemas`` (see ``schemas/NOTICE.md`` for where each came from). The
registry's ``retrieve`` refuses every URI it does not hold, so validation never touches the
network: a schema or extension that is not shipped is reported as an error, by URI.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable
from referencing.jsonschema import DRAFT7

STAC_VERSION = "1.1.0"
_STAC = f"https://schemas.stacspec.org/v{STAC_VERSION}"
ITEM_SCHEMA = f"{_STAC}/item-spec/json-schema/item.json"
COLLECTION_SCHEMA = f"{_STAC}/collection-spec/json-schema/collection.json"
CATALOG_SCHEMA = f"{_STAC}/catalog-spec/json-schema/catalog.json"
DATACUBE_SCHEMA = "https://stac-extensions.github.io/datacube/v2.2.0/schema.json"
XARRAY_ASSETS_SCHEMA = "https://stac-extensions.github.io/xarray-assets/v1.0.0/schema.json"
PROJJSON_SCHEMA = "https://proj.org/schemas/v0.4/projjson.schema.json"
DRAFT7_METASCHEMA = "http://json-schema.org/draft-07/schema"

#: schema URI -> file inside ``zarrport/catalog/schemas``
SHIPPED: dict[str, str] = {
    **{f"{_STAC}/item-spec/json-schema/{name}.json": f"stac/v{STAC_VERSION}/{name}.json"
       for name in ("item", "bands", "basics", "common", "data-values", "datetime",
                    "instrument", "licensing", "provider")},
    COLLECTION_SCHEMA: f"stac/v{STAC_VERSION}/collection.json",
    CATALOG_SCHEMA: f"stac/v{STAC_VERSION}/catalog.json",
    "https://geojson.org/schema/Feature.json": "geojson/Feature.json",
    "https://geojson.org/schema/Geometry.json": "geojson/Geometry.json",
    DATACUBE_SCHEMA: "datacube/v2.2.0/schema.json",
    XARRAY_ASSETS_SCHEMA: "xarray-assets/v1.0.0/schema.json",
    PROJJSON_SCHEMA: "projjson/v0.4/projjson.schema.json",
}

_CORE = {"Feature": ITEM_SCHEMA, "Collection": COLLECTION_SCHEMA, "Catalog": CATALOG_SCHEMA}


def _refuse(uri: str) -> Resource:
    """The registry's retrieve: nothing outside the package, ever."""
    raise NoSuchResource(ref=uri)


def _read(relpath: str) -> dict[str, Any]:
    return json.loads(files("zarrport.catalog").joinpath("schemas", relpath).read_text())


@cache
def registry() -> Registry:
    """Every shipped schema under its canonical URI (and under its own ``$id`` where that
    differs, as STAC 1.1.0's ``common.json`` does), plus the draft-07 meta-schema
    (``collection.json`` refers to it) from jsonschema itself."""
    resources: list[tuple[str, Resource]] = []
    for uri, relpath in SHIPPED.items():
        contents = _read(relpath)
        resource = Resource.from_contents(contents, default_specification=DRAFT7)
        resources.append((uri, resource))
        own = str(contents.get("$id", "")).rstrip("#")
        if own and own != uri:
            resources.append((own, resource))
    meta = Resource.from_contents(Draft7Validator.META_SCHEMA, default_specification=DRAFT7)
    resources.append((DRAFT7_METASCHEMA, meta))
    resources.append((DRAFT7_METASCHEMA + "#", meta))
    return Registry(retrieve=_refuse).with_resources(resources)  # type: ignore[call-arg]


@cache
def _validator(uri: str) -> Draft7Validator:
    schema = registry().contents(uri)
    return Draft7Validator(schema, registry=registry(),
                           format_checker=Draft7Validator.FORMAT_CHECKER)


def schemas_for(obj: dict[str, Any]) -> list[str]:
    """The schema URIs ``obj`` must satisfy: its core schema, then every extension it
    declares."""
    kind = obj.get("type")
    if kind not in _CORE:
        return []
    return [_CORE[kind], *[str(u) for u in obj.get("stac_extensions") or []]]


def validate_object(obj: dict[str, Any]) -> list[str]:
    """Problems of one STAC object (empty when valid), one line each, naming the schema and
    the place in the document. Never uses the network."""
    if not isinstance(obj, dict) or obj.get("type") not in _CORE:
        got = obj.get("type") if isinstance(obj, dict) else type(obj).__name__
        return [f"not a STAC Item, Collection or Catalog (type {got!r})"]
    name = obj.get("id", "?")
    problems: list[str] = []
    for uri in schemas_for(obj):
        if uri.rstrip("#") not in SHIPPED:
            problems.append(f"{name}: schema {uri} is not shipped with zarrport; refusing to "
                            "fetch it")
            continue
        try:
            errors = sorted(_validator(uri.rstrip("#")).iter_errors(obj),
                            key=lambda e: list(e.absolute_path))
            for err in errors:
                best = _deepest(err)
                where = "/".join(str(p) for p in best.absolute_path) or "(root)"
                message = " ".join(best.message.split())[:300]
                problems.append(f"{name}: {where}: {message} [{uri}]")
        except Unresolvable as err:
            problems.append(f"{name}: {uri} refers to {err.ref}, which is not shipped; "
                            "refusing to fetch it")
    return problems


def _deepest(err: Any) -> Any:
    """The most specific error under a jsonschema error. ``oneOf``/``anyOf`` failures nest
    the real reason in their context: branches for another object type (a ``type`` const
    mismatch) are skipped; a missing required field wins, deepest first, else the deepest
    error in the document."""
    leaves: list[Any] = []
    stack = [err]
    while stack:
        node = stack.pop()
        if node.validator == "const" and list(node.relative_path)[-1:] == ["type"]:
            continue
        if node.context:
            stack.extend(node.context)
        else:
            leaves.append(node)
    if not leaves:
        return err
    return max(leaves, key=lambda e: (e.validator == "required", len(e.absolute_path),
                                      -len(e.message)))


def validate_catalog(catalog_dir: str | Path) -> dict[str, Any]:
    """Validate every STAC JSON document under ``catalog_dir``: ``{"checked": n,
    "errors": [...]}``."""
    root = Path(catalog_dir)
    checked = 0
    problems: list[str] = []
    for path in sorted(root.rglob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except ValueError as err:
            problems.append(f"{path.relative_to(root)}: not JSON ({err})")
            continue
        checked += 1
        problems.extend(f"{path.relative_to(root)}: {p}" for p in validate_object(doc))
    return {"checked": checked, "errors": problems}
