"""``zarrport serve``: one FastAPI app with map tiles, a STAC API, a web viewer and the
reference API.

================================  ===========================================================
``/``                             the web viewer (MapLibre GL, shipped in the package)
``/xarray/...``                   titiler.xarray's endpoints over :func:`zarrport.open_dataset`
                                  (tilejson, tiles, info, point, statistics, preview); see
                                  :mod:`zarrport.service.tiles`
``/stac/...``                     STAC API over ``--catalog`` (:mod:`zarrport.service.stac_api`)
``/api/references``               POST, bearer token: reference one NetCDF file (when
                                  ``ZARRPORT_OUTPUT`` is set; :mod:`zarrport.service.app`)
``/metrics``                      Prometheus text: dataset cache and requests
``/healthz``                      liveness
================================  ===========================================================

Safety, decided before anything is opened: only URLs under the ``--allow`` roots
(:class:`~zarrport.service.allow.AllowList`), bounded queries, images and bodies
(:data:`LIMITS`), CORS off unless origins are given, every error a JSON
``{"error": {"code", "message"}}`` with its status from one table
(:data:`zarrport.service.errors.HTTP_STATUS`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse

from zarrport import __version__
from zarrport.errors import InvalidArgumentError, ZarrportError
from zarrport.service.allow import AllowList
from zarrport.service.datasets import DatasetCache, cache_outcome
from zarrport.service.errors import error_payload, status_and_payload
from zarrport.service.settings import ServiceSettings

__all__ = ["CONFIG_ENV", "LIMITS", "ServerConfig", "app_from_env", "config_to_env",
           "create_server"]

log = logging.getLogger("zarrport.service")

#: bounds on what one request may ask for (400 ``too_large`` beyond them; bodies 413)
LIMITS = {
    "query_bytes": 8192,  # the whole query string
    "tilesize": 1024,  # pixels per tile edge
    "image_edge": 4096,  # max_size, width, height of previews and parts
    "repeats": 32,  # values of one repeated parameter (sel, bidx, ...)
    "body_bytes": 1 << 20,  # a POST body
    "histogram_bins": 10_000,  # statistics: equal-width bins (numpy allocates them all)
}
_IMAGE_PARAMS = ("max_size", "width", "height")
STATIC = Path(str(resources.files("zarrport.service") / "static"))


@dataclass
class ServerConfig:
    """What ``zarrport serve`` serves."""

    allow: list[str] = field(default_factory=list)
    catalog: str | None = None
    references: ServiceSettings | None = None
    cors_origins: list[str] = field(default_factory=list)
    cache_size: int = 32
    tile_cache_bytes: int = 128 << 20
    storage_options: dict | None = None


#: the environment variable worker processes read their configuration from
CONFIG_ENV = "ZARRPORT_SERVE_CONFIG"


def config_to_env(config: ServerConfig) -> str:
    """``config`` as JSON for :data:`CONFIG_ENV` (the reference API's token is not in it:
    workers read it from ``ZARRPORT_API_TOKEN``)."""
    return json.dumps({"allow": config.allow, "catalog": config.catalog,
                       "references": config.references is not None,
                       "cors_origins": config.cors_origins, "cache_size": config.cache_size,
                       "tile_cache_bytes": config.tile_cache_bytes,
                       "storage_options": config.storage_options})


def app_from_env() -> FastAPI:
    """The app of a ``zarrport serve --workers N`` worker process."""
    raw = json.loads(os.environ[CONFIG_ENV])
    references = ServiceSettings.from_env() if raw.pop("references") else None
    return create_server(ServerConfig(references=references, **raw))


def create_server(config: ServerConfig) -> FastAPI:
    """The app for ``config``; a bad configuration raises a one-line ZarrportError."""
    from zarrport.service.stac_api import StaticCatalog, stac_router

    catalog = StaticCatalog(config.catalog) if config.catalog else None
    roots = list(config.allow)
    if config.references is not None:  # what it writes can be mapped too
        out = config.references.output
        if out.startswith("file://"):
            os.makedirs(out.removeprefix("file://"), exist_ok=True)
        roots.append(out)
    if not roots:
        raise InvalidArgumentError(
            "nothing to serve: name the directories or URL prefixes the server may open "
            "with --allow ROOT (e.g. --allow demo-output)")
    allow = AllowList(roots)
    _preload()
    _quiet()
    app = FastAPI(
        title="zarrport",
        version=__version__,
        summary="Map tiles, STAC browsing and virtual Zarr references over NetCDF, GRIB, "
                "kerchunk, Icechunk and Zarr archives.",
        docs_url="/docs",
    )
    app.state.allow = allow
    app.state.catalog = catalog
    app.state.cache = DatasetCache(allow, capacity=config.cache_size,
                                   storage_options=config.storage_options)
    app.state.requests = {}

    def resolve(request: Request, url: str | None, collection: str | None,
                item: str | None) -> str:
        if url is not None and (collection is not None or item is not None):
            raise InvalidArgumentError("give either url= or collection= (and item=), not both")
        if url is None and collection is None:
            raise InvalidArgumentError("name the dataset: url=<path or URL> or "
                                       "collection=<STAC collection id>")
        if url is None:
            if catalog is None:
                raise InvalidArgumentError("this server has no STAC catalog (--catalog): "
                                           "name the dataset with url=")
            url = catalog.dataset_url(collection, item)  # type: ignore[arg-type]
        return allow.check(url)

    def tile_link(request: Request, query: dict[str, Any]) -> str:
        base = str(request.base_url).rstrip("/")
        return f"{base}/xarray/WebMercatorQuad/tilejson.json?{urlencode(query, doseq=True)}"

    app.state.resolve = resolve
    _mount_tiles(app, resolve)
    if catalog is not None:
        app.include_router(stac_router(lambda request: catalog, tile_link), prefix="/stac",
                           tags=["STAC API"])
    if config.references is not None:
        from zarrport.service.app import add_reference_routes

        add_reference_routes(app, config.references)
    _mount_viewer(app)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> PlainTextResponse:
        cache: DatasetCache = app.state.cache
        s = cache.stats
        tiles = getattr(app.state, "tile_cache", None)
        lines = [
            "# HELP zarrport_dataset_cache_requests_total Dataset lookups by outcome.",
            "# TYPE zarrport_dataset_cache_requests_total counter",
            f'zarrport_dataset_cache_requests_total{{outcome="hit"}} {s.hits}',
            f'zarrport_dataset_cache_requests_total{{outcome="miss"}} {s.misses - s.stale}',
            f'zarrport_dataset_cache_requests_total{{outcome="stale"}} {s.stale}',
            "# HELP zarrport_dataset_cache_evictions_total Datasets closed to make room.",
            "# TYPE zarrport_dataset_cache_evictions_total counter",
            f"zarrport_dataset_cache_evictions_total {s.evictions}",
            "# HELP zarrport_dataset_cache_size Datasets open now.",
            "# TYPE zarrport_dataset_cache_size gauge",
            f"zarrport_dataset_cache_size {len(cache)}",
            "# HELP zarrport_dataset_cache_capacity Datasets kept open at most.",
            "# TYPE zarrport_dataset_cache_capacity gauge",
            f"zarrport_dataset_cache_capacity {cache.capacity}",
            "# HELP zarrport_tile_cache_requests_total Rendered tiles served again or not.",
            "# TYPE zarrport_tile_cache_requests_total counter",
            f'zarrport_tile_cache_requests_total{{outcome="hit"}} {tiles.hits if tiles else 0}',
            f'zarrport_tile_cache_requests_total{{outcome="miss"}} {tiles.misses if tiles else 0}',
            "# HELP zarrport_tile_cache_bytes Bytes of rendered tiles kept.",
            "# TYPE zarrport_tile_cache_bytes gauge",
            f"zarrport_tile_cache_bytes {tiles.size if tiles else 0}",
            "# HELP zarrport_http_responses_total Responses by status.",
            "# TYPE zarrport_http_responses_total counter",
            *(f'zarrport_http_responses_total{{status="{k}"}} {v}'
              for k, v in sorted(app.state.requests.items())),
        ]
        return PlainTextResponse("\n".join(lines) + "\n",
                                 media_type="text/plain; version=0.0.4")

    _install_tile_error_handlers(app)
    if config.tile_cache_bytes > 0:
        app.add_middleware(_TileCache, capacity=config.tile_cache_bytes)
    app.add_middleware(_Guard)  # bounds first, and the per-request record
    if config.cors_origins:  # outermost: the guard's refusals carry CORS headers too
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["X-Zarrport-Cache", "X-Zarrport-Level",
                                           "X-Zarrport-Tile-Cache"])
    return app


def _quiet() -> None:
    """Warnings a map user cannot act on, once per tile otherwise, out of the server log:
    rio-tiler's "Adjusting dataset latitudes" for grids that reach the poles (cells are
    clipped to Web Mercator's +-85.06), rasterio's NotGeoreferencedWarning for the arrays
    rio-tiler warps, and cell_measures naming a variable kept in another file (CMIP6's
    areacella)."""
    from rasterio.errors import NotGeoreferencedWarning

    warnings.filterwarnings("ignore", message="Adjusting dataset latitudes",
                            category=UserWarning)
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    warnings.filterwarnings("ignore", message=r"Variable\(s\) referenced in cell_measures",
                            category=UserWarning)


def _preload() -> None:
    """Import what opening a dataset needs now, not on the first request of a user (a
    tenth of a second and more of the first tile otherwise)."""
    import importlib

    for name in ("icechunk", "rioxarray", "zarrport.backend", "zarrport.icechunk_read",
                 "zarrport.pipeline", "zarrport.references", "zarrport.virtual.icechunk"):
        try:
            importlib.import_module(name)
        except ImportError:  # an optional part: its datasets fail on their own
            log.debug("not preloading %s", name)


def _mount_tiles(app: FastAPI, resolve: Any) -> None:
    from titiler.core.dependencies import BidxParams
    from titiler.core.factory import ColorMapFactory, TMSFactory
    from titiler.xarray.dependencies import DatasetParams, PartFeatureParams, PreviewParams
    from titiler.xarray.factory import TilerFactory

    from zarrport.service.tiles import (
        ServeReader,
        ServeXarrayParams,
        add_variables_route,
        source_dependency,
    )

    with warnings.catch_warnings():  # "MultiDim dataset might not be suitable for preview":
        warnings.simplefilter("ignore", UserWarning)  # previews here need one layer
        tiler = _factory(TilerFactory, ServeReader, source_dependency(resolve),
                         ServeXarrayParams, BidxParams, DatasetParams, PartFeatureParams,
                         PreviewParams)
    add_variables_route(tiler.router, source_dependency(resolve))
    app.include_router(tiler.router, prefix="/xarray", tags=["Tiles"])
    app.include_router(TMSFactory().router, tags=["Tiling Schemes"])
    # /colorMaps[/{name}]: the names colormap_name= takes, and a colour bar (the viewer's legend)
    app.include_router(ColorMapFactory().router, tags=["ColorMaps"])


def _factory(factory: Any, reader: Any, path: Any, params: Any, layer: Any, dataset: Any,
             part: Any, preview: Any) -> Any:
    return factory(
        reader=reader,
        path_dependency=path,
        reader_dependency=params,
        layer_dependency=layer,
        dataset_dependency=dataset,
        img_part_dependency=part,
        img_preview_dependency=preview,
        router_prefix="/xarray",
        add_viewer=False,  # the viewer is at /
        add_part=False,
        add_preview=True,
    )


def _mount_viewer(app: FastAPI) -> None:
    from fastapi.staticfiles import StaticFiles

    index = STATIC / "index.html"
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")

    @app.get("/", include_in_schema=False)
    def viewer() -> Any:
        if not index.is_file():
            return JSONResponse(error_payload("not_served", "the viewer is not installed"),
                                status_code=404)
        return FileResponse(index, media_type="text/html")


def _install_tile_error_handlers(app: FastAPI) -> None:
    """The library's errors and rio-tiler's map to 4xx; anything else is a logged 500."""
    from morecantile.errors import InvalidZoomError, MorecantileError
    from rasterio.errors import CRSError, WindowError
    from rio_tiler.errors import PointOutsideBounds, RioTilerError, TileOutsideBounds
    from rioxarray.exceptions import NoDataInBounds, RioXarrayError
    from titiler.core.errors import BadRequestError, TileNotFoundError

    from zarrport.service.app import install_error_handlers

    install_error_handlers(app)

    def respond(code: str, message: str) -> JSONResponse:
        from zarrport.service.errors import http_status

        return JSONResponse(error_payload(code, message), status_code=http_status(code))

    @app.exception_handler(TileOutsideBounds)
    @app.exception_handler(PointOutsideBounds)
    @app.exception_handler(TileNotFoundError)
    @app.exception_handler(InvalidZoomError)  # a zoom the tiling scheme has no matrix for
    @app.exception_handler(NoDataInBounds)  # a statistics feature beside the data
    async def outside(request: Request, exc: Exception) -> JSONResponse:
        return respond("outside_bounds", str(exc) or "outside the dataset")

    @app.exception_handler(RioTilerError)
    @app.exception_handler(BadRequestError)
    @app.exception_handler(CRSError)
    @app.exception_handler(MorecantileError)  # a tiling scheme id, quadkey or zoom
    @app.exception_handler(OverflowError)  # a number in the request too large to compute with
    @app.exception_handler(WindowError)  # a window from a geometry far outside any transform
    @app.exception_handler(RioXarrayError)  # a variable rioxarray cannot map (no coordinates)
    async def bad(request: Request, exc: Exception) -> JSONResponse:
        return respond("invalid_argument", str(exc) or type(exc).__name__)

    @app.exception_handler(ValueError)
    @app.exception_handler(TypeError)
    @app.exception_handler(KeyError)
    @app.exception_handler(IndexError)
    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, ZarrportError):  # pragma: no cover - its own handler matches first
            return JSONResponse(*reversed(status_and_payload(exc)))
        # a parameter titiler or rio-tiler could not use (a colormap, an expression, a
        # rescale ...): the request is wrong, but log where it failed
        log.warning("request %s rejected: %s", request.url.path, exc, exc_info=exc)
        return respond("invalid_argument", f"invalid request: {exc}")

    @app.exception_handler(MemoryError)
    async def memory(request: Request, exc: Exception) -> JSONResponse:
        return respond("too_large", "the request needs more memory than the server has")


class _Guard:
    """Pure ASGI middleware: bounds on the query and the body, the cache outcome in
    ``X-Zarrport-Cache`` (and the pyramid level in ``X-Zarrport-Level``), a response count
    per status for ``/metrics``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.counts: dict[str, int] | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counts = scope["app"].state.requests if "app" in scope else {}
        problem = _check_query(scope.get("query_string", b""))
        if problem is None:
            problem = _check_length(scope)
        if problem is not None:
            status, code, message = problem
            await _send_json(send, status, error_payload(code, message))
            counts[str(status)] = counts.get(str(status), 0) + 1
            return
        box: dict[str, str] = {}
        token = cache_outcome.set(box)
        received = 0
        overflow = False  # the body grew past the bound (no or a false Content-Length)
        started = False

        async def bounded_receive() -> Any:
            nonlocal received, overflow
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > LIMITS["body_bytes"]:
                    overflow = True
                    raise _BodyTooLarge()
            return message

        async def send_with_headers(message: dict) -> None:
            nonlocal started
            if overflow and not started:
                # FastAPI turns any error while reading a body into 400 "There was an
                # error parsing the body" (fastapi 0.165): answer 413 below instead
                return
            if message["type"] == "http.response.start":
                started = True
                status = str(message["status"])
                counts[status] = counts.get(status, 0) + 1
                extra = []
                if "cache" in box:
                    extra.append((b"x-zarrport-cache", box["cache"].encode()))
                if "level" in box:
                    extra.append((b"x-zarrport-level", box["level"].encode()))
                if extra:
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, bounded_receive, send_with_headers)
        except _BodyTooLarge:
            pass
        finally:
            cache_outcome.reset(token)
        if overflow and not started:
            counts["413"] = counts.get("413", 0) + 1
            await _send_json(send, 413, error_payload(
                "too_large", f"the request body is larger than {LIMITS['body_bytes']} bytes"))


class _BodyTooLarge(Exception):
    pass


class _TileCache:
    """Rendered tiles, kept by request (path + query, values in their order) with the
    dataset URL and version token they were drawn from; served again only while the
    dataset's current token is the same. Only tile images are kept (not the tileset
    pages, whose links follow the Host header). Bounded in bytes (bodies, keys and
    headers), least recently used dropped first. ``X-Zarrport-Tile-Cache`` says hit or
    miss; a request for a tile being drawn waits for that drawing."""

    TILE = re.compile(r"^/xarray/tiles/[^/]+/\d+/\d+/\d+(@\d+x)?(\.\w+)?$")
    MAX_TILE = 4 << 20
    OVERHEAD = 256  # bytes per entry beyond what is counted

    def __init__(self, app: Any, capacity: int) -> None:
        import threading
        from collections import OrderedDict

        self.app = app
        self.capacity = capacity
        self.size = 0
        self.tiles: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self.lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.inflight: dict[tuple, Any] = {}  # key -> asyncio.Event of the render under way

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if (scope["type"] != "http" or scope.get("method") != "GET"
                or not self.TILE.match(scope.get("path", ""))):
            await self.app(scope, receive, send)
            return
        import asyncio

        import anyio

        app = scope["app"]
        app.state.tile_cache = self
        # sorted by name only: the order of a parameter's values matters (bidx=3&bidx=1)
        pairs = sorted(parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                                 keep_blank_values=True), key=lambda kv: kv[0])
        key = (scope["path"], tuple(pairs))
        query = dict(pairs)  # the last value of a repeated name, as the endpoint takes it
        while True:
            entry = self.tiles.get(key)
            if entry is None:
                cached = None
            elif entry["url"].startswith("file://") and "collection" not in query:
                cached = self._lookup(key, app, query)  # a stat: microseconds
            else:  # a remote token is a request, a catalog refresh reads files
                cached = await anyio.to_thread.run_sync(self._lookup, key, app, query)
            if cached is not None or key not in self.inflight:
                break
            await self.inflight[key].wait()
        with self.lock:
            if cached is not None:
                self.hits += 1
            else:
                self.misses += 1
        box = cache_outcome.get()
        if cached is not None:
            if box is not None:
                box["cache"] = "hit"
                if cached["level"] is not None:
                    box["level"] = cached["level"]
            await send({"type": "http.response.start", "status": 200,
                        "headers": [*cached["headers"], (b"x-zarrport-tile-cache", b"hit")]})
            await send({"type": "http.response.body", "body": cached["body"]})
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-zarrport-tile-cache", b"miss")]}
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        done = asyncio.Event()
        mine = key not in self.inflight
        if mine:
            self.inflight[key] = done
        try:
            await self.app(scope, receive, capture)
            self._store(key, start, chunks, box or {})
        finally:
            if mine and self.inflight.get(key) is done:
                del self.inflight[key]
            done.set()

    def _lookup(self, key: tuple, app: Any, query: dict[str, str]) -> dict[str, Any] | None:
        """The cached tile if its dataset is unchanged."""
        with self.lock:
            entry = self.tiles.get(key)
        if entry is None:
            return None
        url = _dataset_url(app, query)
        if url is None or url != entry["url"]:
            return None
        if _current_token(app, url, query) != entry["token"]:
            return None
        with self.lock:
            if key in self.tiles:
                self.tiles.move_to_end(key)
        return entry

    def _store(self, key: tuple, start: dict[str, Any], chunks: list[bytes],
               box: dict[str, str]) -> None:
        token, url = box.get("token"), box.get("url")
        body = b"".join(chunks)
        if (start.get("status") != 200 or token is None or url is None
                or len(body) > self.MAX_TILE):
            return
        headers = [(k, v) for k, v in start.get("headers", [])
                   if k.lower() not in (b"x-zarrport-cache", b"x-zarrport-level",
                                        b"content-length")]
        headers.append((b"content-length", str(len(body)).encode()))
        size = (len(body) + len(key[0]) + sum(len(k) + len(v) for k, v in key[1])
                + sum(len(k) + len(v) for k, v in headers) + self.OVERHEAD)
        entry = {"url": url, "token": token, "level": box.get("level"), "headers": headers,
                 "body": body, "size": size}
        with self.lock:
            old = self.tiles.pop(key, None)
            if old is not None:
                self.size -= old["size"]
            self.tiles[key] = entry
            self.size += size
            while self.size > self.capacity and self.tiles:
                _, dropped = self.tiles.popitem(last=False)
                self.size -= dropped["size"]


def _dataset_url(app: Any, query: dict[str, str]) -> str | None:
    """The allowed URL a tile query names, None when it names none (the endpoint then
    answers as usual: not allowed, bad parameters ...)."""
    try:
        return app.state.resolve(None, query.get("url"), query.get("collection"),
                                 query.get("item"))
    except Exception:  # noqa: BLE001 - the endpoint reports it
        return None


def _current_token(app: Any, url: str, query: dict[str, str]) -> str | None:
    """The dataset's current version token, None if it is not open."""
    return app.state.cache.peek_token(url, group=query.get("group"),
                                      branch=query.get("branch"), tag=query.get("tag"),
                                      snapshot=query.get("snapshot"))


def _check_query(raw: bytes) -> tuple[int, str, str] | None:
    if len(raw) > LIMITS["query_bytes"]:
        return 400, "too_large", f"the query string is longer than {LIMITS['query_bytes']} bytes"
    try:
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return 400, "invalid_argument", "the query string cannot be parsed"
    seen: dict[str, int] = {}
    for key, value in pairs:
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > LIMITS["repeats"]:
            return 400, "too_large", f"more than {LIMITS['repeats']} values of {key!r}"
        if key == "histogram_bins":
            if "," in value:  # bin edges: their number counts, not their values
                bins = value.count(",")
            else:
                try:
                    bins = float(value)
                except ValueError:
                    continue
            if bins > LIMITS["histogram_bins"]:
                return 400, "too_large", (f"histogram_bins={value[:40]}: at most "
                                          f"{LIMITS['histogram_bins']} bins")
        if key == "tilesize" or key in _IMAGE_PARAMS:
            bound = LIMITS["tilesize"] if key == "tilesize" else LIMITS["image_edge"]
            try:
                number = float(value)
            except ValueError:
                continue  # the endpoint's own validation says what is wrong
            if number > bound:
                return 400, "too_large", f"{key}={value}: at most {bound} pixels"
    return None


def _check_length(scope: dict) -> tuple[int, str, str] | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                n = int(value)
            except ValueError:
                return 400, "invalid_argument", "Content-Length is not a number"
            if n > LIMITS["body_bytes"]:
                return 413, "too_large", (f"the request body is larger than "
                                          f"{LIMITS['body_bytes']} bytes")
    return None


async def _send_json(send: Any, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
