from __future__ import annotations

import os

import click

from zarrport.cli import cli


@cli.command("serve")
@click.option("--allow", "allow", multiple=True, metavar="ROOT",
              help="A directory or URL prefix (s3://bucket/archive/) the server may open; "
                   "repeat for more. Nothing outside them is opened.")
@click.option("--catalog", type=click.Path(file_okay=True, dir_okay=True), default=None,
              help="A static STAC catalog (from `batch --stac` or `catalog`) to serve as a "
                   "STAC API at /stac and browse in the viewer.")
@click.option("--token-env", default="ZARRPORT_API_TOKEN", show_default=True, metavar="VAR",
              help="Environment variable holding the bearer token of the write endpoint "
                   "(POST /api/references).")
@click.option("--cors-origin", "cors", multiple=True, metavar="ORIGIN",
              help="Allow browsers on ORIGIN (https://maps.example.org, or *) to call the "
                   "API; repeat for more. Off by default.")
@click.option("--cache-size", type=click.IntRange(1, 10_000), default=32, show_default=True,
              help="Opened datasets kept (least recently used closed first).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (0.0.0.0 exposes the service to the network).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port to listen on.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="info", show_default=True, help="uvicorn's log level.")
def serve_command(allow: tuple[str, ...], catalog: str | None, token_env: str,
                  cors: tuple[str, ...], cache_size: int, host: str, port: int,
                  log_level: str) -> None:
    """Serve map tiles, a STAC API and a web viewer (and the reference API) with uvicorn.

    \b
    Endpoints:
      /                     web viewer: collection, variable, time slider, colormap,
                            click a point for its time series
      /xarray/...           titiler.xarray: tilejson, tiles, info, point, statistics,
                            preview (?url=... or ?collection=...&variable=...&sel=time=...)
      /stac/...             STAC API (with --catalog): collections, items, search
      /api/references       POST with the bearer token: reference one NetCDF file
                            (when ZARRPORT_OUTPUT is set)
      /metrics, /docs       cache counters (Prometheus text); the OpenAPI page

    \b
    The reference API is on when ZARRPORT_OUTPUT is set; it then needs the token in
    $ZARRPORT_API_TOKEN (or --token-env) and takes ZARRPORT_ALLOWED_PREFIXES (default: the
    --allow roots) and ZARRPORT_STORAGE_OPTIONS from the environment.

    \b
    Example:
      zarrport serve --catalog demo-output/stac --allow demo-output
      open http://127.0.0.1:8000/
    """
    from zarrport.extras import require

    require("serve", what="zarrport serve")
    from zarrport.service.server import ServerConfig, create_server
    from zarrport.service.settings import ServiceSettings

    references = None
    env = dict(os.environ)
    if env.get("ZARRPORT_OUTPUT", "").strip():
        if token_env != "ZARRPORT_API_TOKEN":
            if env.get(token_env):
                env["ZARRPORT_API_TOKEN"] = env[token_env]
            else:
                env.pop("ZARRPORT_API_TOKEN", None)
        if not env.get("ZARRPORT_ALLOWED_PREFIXES", "").strip() and allow:
            env["ZARRPORT_ALLOWED_PREFIXES"] = ",".join(allow)
        references = ServiceSettings.from_env(env)  # a missing variable: one line
    storage_options = None
    if env.get("ZARRPORT_STORAGE_OPTIONS", "").strip():
        from zarrport.service.settings import _json_options

        storage_options = _json_options(env, "ZARRPORT_STORAGE_OPTIONS")
    app = create_server(ServerConfig(allow=list(allow), catalog=catalog, references=references,
                                     cors_origins=list(cors), cache_size=cache_size,
                                     storage_options=storage_options))

    import uvicorn

    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    click.echo(f"zarrport: serving on http://{shown}:{port}/ (viewer), /xarray (tiles), "
               f"{'/stac (STAC API), ' if catalog else ''}"
               f"{'/api/references, ' if references else ''}/docs", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)
