"""Options shared by several commands."""

from __future__ import annotations

import json
from typing import Any

import click

from zarrport.errors import InvalidArgumentError
from zarrport.inspect.guidelines import human_bytes

__all__ = ["dask_options", "describe_skipped", "echo_json", "human_bytes", "json_flag",
           "parse_storage_options", "skip_unsupported_flag", "storage_option", "version_options"]


def parse_storage_options(pairs: tuple[str, ...]) -> dict[str, Any] | None:
    """``KEY=VALUE`` pairs -> dict; values are parsed as JSON when they are JSON."""
    if not pairs:
        return None
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"--storage-option wants KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


storage_option = click.option(
    "--storage-option",
    "storage_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="fsspec-style storage option (repeatable), e.g. endpoint_url=http://127.0.0.1:9000 "
    "or anon=true. Credentials otherwise come from the environment.",
)
json_flag = click.option("--json", "as_json", is_flag=True,
                         help="Print the result as JSON (the model the library returns).")


skip_unsupported_flag = click.option(
    "--skip-unsupported", is_flag=True,
    help="Leave out variables and attributes that cannot be referenced faithfully (listed "
    "with their reasons in the summary and the output's provenance record) instead of "
    "refusing the whole file.")


def describe_skipped(item: dict[str, Any]) -> str:
    """One line for what --skip-unsupported left out."""
    var, attr = item.get("variable"), item.get("attribute")
    what = (f"attribute {var}.{attr}" if var and attr else f"global attribute {attr}" if attr
            else f"variable {var}")
    return f"{what}: {item.get('reason')}"


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def version_options(f: Any) -> Any:
    """``--branch/--tag/--snapshot/--as-of`` (which commit of an Icechunk repository) and
    ``--collection`` (which collection of a batch output)."""
    for opt in reversed([
        click.option("--collection", metavar="NAME",
                     help="Collection of a `zarrport batch` output (needed when it has "
                     "several)."),
        click.option("--branch", metavar="NAME",
                     help="Icechunk branch to read (default: main)."),
        click.option("--tag", metavar="NAME",
                     help="Icechunk tag to read, e.g. cycle-2025010100 (`zarrport grib "
                     "ingest` tags every cycle)."),
        click.option("--snapshot", metavar="ID",
                     help="Icechunk snapshot id to read (`zarrport history` lists them)."),
        click.option("--as-of", "as_of", metavar="TIME",
                     help="Read the last commit at or before TIME on the branch (ISO 8601, "
                     "e.g. 2025-01-01T06:00:00Z; no time zone means UTC)."),
    ]):
        f = opt(f)
    return f


def dask_options(f: Any) -> Any:
    """``--scheduler/--workers/--memory-limit/--progress`` of the analyses, passed on as
    ``scheduler``, ``workers``, ``memory_limit`` and ``progress``
    (:func:`zarrport.analysis.cluster.dask_client`)."""
    for opt in reversed([
        click.option("--scheduler", metavar="ADDRESS",
                     help="An existing Dask scheduler (tcp://host:8786). Default: a local "
                     "cluster sized from this machine, one worker per core."),
        click.option("--workers", type=int, metavar="N",
                     help="Worker processes of the local cluster (default: one per core, at "
                     "most 8)."),
        click.option("--memory-limit", metavar="SIZE",
                     help="Memory limit per local worker, e.g. 4GB (default: 90% of the "
                     "machine's memory shared out)."),
        click.option("--progress/--no-progress", default=None,
                     help="Progress bar on stderr (default: when stderr is a terminal)."),
    ]):
        f = opt(f)
    return f
