from __future__ import annotations

import click

from zarrport.cli import cli
from zarrport.cli.options import echo_json, json_flag, parse_storage_options, storage_option


def _lines(commits: list[dict], indent: str = "") -> list[str]:
    out = []
    for c in commits:
        tags = f"  [{', '.join(c['tags'])}]" if c["tags"] else ""
        out.append(f"{indent}{c['id']}  {c['written_at']}{tags}  {c['message']}")
    return out


@cli.command("history")
@click.argument("url")
@click.option("--branch", metavar="NAME", help="Branch to list (default: main).")
@click.option("--collection", metavar="NAME",
              help="Only this collection of a `zarrport batch` output (default: all).")
@storage_option
@json_flag
def history_command(url: str, branch: str | None, collection: str | None,
                    storage_options: tuple[str, ...], as_json: bool) -> None:
    """List the commits of the Icechunk repository at URL, newest first: snapshot id, time
    (UTC), the tags pointing at it, and its message. On a batch output, the commits of each
    collection (or of --collection NAME).

    Any of them opens with `zarrport info URL --snapshot ID` (or --tag, --as-of) and
    `zarrport.open_dataset(URL, snapshot=ID)`.

    \b
    Examples:
      zarrport history gefs.icechunk
      zarrport history batch-out --collection tas_day_CanESM5_ssp245_r1i1p1f1_gn --json
    """
    from zarrport.history import history

    model = history(url, branch=branch, collection=collection,
                    storage_options=parse_storage_options(storage_options))
    if as_json:
        echo_json(model)
        return
    if "collections" in model:
        cols = model["collections"]
        click.echo(f"{url}: zarrport batch output, {len(cols)} collection"
                   f"{'' if len(cols) == 1 else 's'} (branch {model['branch']})")
        for name, item in cols.items():
            if item["kind"] is None:
                click.echo(f"  {name}: no repository yet")
                continue
            if item["kind"] != "icechunk":
                click.echo(f"  {name}: {item['kind']}, no history")
                continue
            n = len(item["commits"])
            click.echo(f"  {name}: {n} commit{'' if n == 1 else 's'}")
            for line in _lines(item["commits"], indent="    "):
                click.echo(line)
        return
    n = len(model["commits"])
    click.echo(f"{url}: branch {model['branch']}, {n} commit{'' if n == 1 else 's'}")
    for line in _lines(model["commits"]):
        click.echo(line)
