from __future__ import annotations

import click

from zarrport.cli import cli


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (0.0.0.0 exposes the service to the network).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port to listen on.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="info", show_default=True, help="uvicorn's log level.")
def serve_command(host: str, port: int, log_level: str) -> None:
    """Serve the reference API (POST /api/references) with uvicorn.

    \b
    Configuration comes from the environment:
      ZARRPORT_API_TOKEN          bearer token clients must send (required)
      ZARRPORT_OUTPUT             directory or s3://, az://, gs:// prefix for references
                                  (required)
      ZARRPORT_ALLOWED_PREFIXES   comma-separated URL prefixes requests may reference
                                  (required; '*' allows any)
      ZARRPORT_STORAGE_OPTIONS    JSON storage options for sources (and output)
      ZARRPORT_OUTPUT_STORAGE_OPTIONS  JSON storage options for the output only

    \b
    Example:
      ZARRPORT_API_TOKEN=secret ZARRPORT_OUTPUT=refs ZARRPORT_ALLOWED_PREFIXES=data/ \\
          zarrport serve --port 8000
      curl -H 'Authorization: Bearer secret' -d '{"url": "data/tas.nc"}' \\
          -H 'Content-Type: application/json' http://127.0.0.1:8000/api/references
    """
    from zarrport.extras import require

    require("serve", what="zarrport serve")
    from zarrport.service.settings import ServiceSettings

    settings = ServiceSettings.from_env()  # a missing variable: one line, non-zero exit

    import uvicorn

    from zarrport.service.app import create_app

    click.echo(f"zarrport: serving references into {settings.output} on "
               f"http://{host}:{port}/api/references", err=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level,
                server_header=False)
