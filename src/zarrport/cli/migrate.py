from __future__ import annotations

import click

from zarrport.cli import cli
from zarrport.cli.options import echo_json, json_flag, parse_storage_options, storage_option


@cli.command("migrate")
@click.argument("repo")
@click.option("--dry-run", is_flag=True,
              help="Check that the repository can be migrated; change nothing.")
@storage_option
@json_flag
def migrate_command(repo: str, dry_run: bool, storage_options: tuple[str, ...],
                    as_json: bool) -> None:
    """Upgrade the Icechunk 1 repository REPO to Icechunk 2, in place.

    zarrport writes Icechunk 2 and reads Icechunk 1 repositories (its own earlier output,
    or anyone's) as they are, but refuses to write to them: `batch`, `watch` and
    `grib ingest` ask for this command first. The upgrade is Icechunk's own
    (upgrade_icechunk_repository): every snapshot, branch and tag is kept, the Icechunk 1
    files no longer needed are deleted. Run it while nothing else reads or writes REPO;
    afterwards readers need icechunk >= 2. A repository already at Icechunk 2 is left alone.

    \b
    Examples:
      zarrport migrate tas.icechunk --dry-run
      zarrport migrate s3://bucket/refs/tas.icechunk --json
    """
    from zarrport import storage
    from zarrport.virtual.icechunk import migrate

    result = migrate(storage.normalize_url(repo), parse_storage_options(storage_options),
                     dry_run=dry_run)
    if as_json:
        echo_json(result)
        return
    history = (f"{result['snapshots']} snapshot(s), branches {', '.join(result['branches'])}"
               + (f", tags {', '.join(result['tags'])}" if result["tags"] else ""))
    before, after = result["spec_version_before"], result["spec_version_after"]
    if result["migrated"]:
        click.echo(f"{repo}: migrated Icechunk {before} -> {after} in {result['seconds']} s "
                   f"({history} kept)")
    elif dry_run and before < 2:
        click.echo(f"{repo}: Icechunk {before}, can be migrated to Icechunk 2 ({history}); "
                   "dry run, nothing changed")
    else:
        click.echo(f"{repo}: already Icechunk {before}, nothing to do ({history})")
