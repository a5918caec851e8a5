from __future__ import annotations

import sys
from typing import Any

import click

from zarrport.cli import cli
from zarrport.cli.options import (
    describe_skipped,
    echo_json,
    human_bytes,
    json_flag,
    parse_storage_options,
    skip_unsupported_flag,
    storage_option,
)
from zarrport.errors import PartialFailureError


def batch_options(f: Any) -> Any:
    """Options shared by ``batch`` and ``watch``."""
    for opt in reversed([
        click.option("-o", "--output", required=True,
                     help="Batch output directory or prefix (local path, s3://, az://)."),
        click.option("--collection-by", metavar="PATTERN",
                     help="Group files into collections by this name pattern, e.g. "
                     "'{variable}_{freq}_{model}_{scenario}_{member}_{grid}_{years}.nc'. Fields "
                     "like {years}/{time_range} and {_any} do not split collections. "
                     "Default: one collection."),
        click.option("--concat-dim", help="Dimension the files of a collection are combined "
                     "along, ordered by its decoded values (default: time)."),
        click.option("--workers", type=int, help="Local worker processes (default: cores)."),
        click.option("--scheduler", metavar="ADDRESS",
                     help="Run on an existing Dask cluster, e.g. tcp://10.0.0.5:8786."),
        click.option("--ledger", type=click.Path(dir_okay=False),
                     help="Status ledger (SQLite) path; default OUTPUT/ledger.sqlite, required "
                     "for remote outputs."),
        click.option("--include", multiple=True, metavar="GLOB",
                     help="File names a prefix listing takes (repeatable; default *.nc, *.nc4, "
                     "*.h5, *.hdf5, *.he5, *.cdf, *.netcdf, *.grib, *.grib1, *.grib2, *.grb, "
                     "*.grb2)."),
        click.option("--retries", type=int, default=4, show_default=True,
                     help="Attempts after a transient storage error, per file, with "
                     "exponential backoff."),
        click.option("--stac", metavar="DIR",
                     help="Also write a static STAC catalog of the output to DIR."),
        click.option("--allow-failures", is_flag=True,
                     help="Exit 0 even when some files failed (they are still listed)."),
        skip_unsupported_flag,
        storage_option,
        json_flag,
    ]):
        f = opt(f)
    return f


def _kwargs(p: dict[str, Any]) -> dict[str, Any]:
    from zarrport.pipeline.batch import DEFAULT_INCLUDE
    from zarrport.virtual.parse import ParseOptions

    return dict(
        options=ParseOptions(on_unsupported="drop" if p["skip_unsupported"] else "raise"),
        collection_by=p["collection_by"], concat_dim=p["concat_dim"], workers=p["workers"],
        scheduler=p["scheduler"], ledger=p["ledger"], retries=p["retries"], stac=p["stac"],
        include=p["include"] or DEFAULT_INCLUDE,
        storage_options=parse_storage_options(p["storage_options"]),
    )


class _Bar:
    """A progress bar on a terminal's stderr; nothing otherwise (pipes, --json)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.bar: Any = None
        self.failed = 0

    def __call__(self, done: int, total: int, url: str, outcome: str) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label="referencing", file=sys.stderr,
                                         show_pos=True, show_eta=True)
            self.bar.__enter__()
        self.failed += outcome == "failed"
        if self.failed:
            self.bar.label = f"referencing ({self.failed} failed)"
        self.bar.update(done - self.bar.pos)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def print_summary(result: Any) -> None:
    c = result.counts
    click.echo(f"{result.output}: {c['new']} new, {c['changed']} changed, {c['unchanged']} "
               f"unchanged, {c['failed']} failed, {c['skipped']} skipped, {c['missing']} missing"
               f" ({result.seconds:.1f} s)")
    if result.retried:
        click.echo(f"  {result.retried} file(s) succeeded after retrying transient errors")
    click.echo(f"  references: {human_bytes(result.reference_bytes)} for "
               f"{human_bytes(result.referenced_bytes)} of source chunks")
    for cid, col in sorted(result.collections.items()):
        dims = ", ".join(f"{k}={v}" for k, v in (col.get("dims") or {}).items())
        change = ""
        if "added" in col:
            change = f"; commit {str(col.get('snapshot'))[:8]}: +{len(col['added'])}"
            if col.get("changed"):
                change += f" ~{len(col['changed'])}"
            if col.get("removed"):
                change += f" -{len(col['removed'])}"
        click.echo(f"  {cid}: {col.get('sources', 0)} file(s) [{dims}] -> "
                   f"{col.get('icechunk')}{change}")
        if col.get("error"):
            click.echo(f"    not committed: {col['error']}")
        for item in col.get("skipped") or []:
            click.echo(f"    skipped (--skip-unsupported): {describe_skipped(item)}")
    if result.skipped:
        shown = ", ".join(s["url"].rsplit("/", 1)[-1] for s in result.skipped[:10])
        more = f" and {len(result.skipped) - 10} more" if len(result.skipped) > 10 else ""
        click.echo(f"  skipped ({len(result.skipped)}): {shown}{more}: "
                   f"{result.skipped[0]['reason']}")
    if result.failures:
        click.echo(f"  failures ({len(result.failures)}):")
        for f in result.failures:
            click.echo(f"    {f['url']}: [{f['code']}] {f['reason']}")
    if result.stac:
        click.echo(f"  STAC catalog: {result.stac.get('catalog', result.stac)}")


def _finish(result: Any, as_json: bool, allow_failures: bool) -> None:
    if as_json:
        echo_json(result.to_dict())
    else:
        print_summary(result)
    if not result.ok and not allow_failures:
        n = len(result.failures) + sum(1 for c in result.collections.values() if c.get("error"))
        raise PartialFailureError(f"{n} failure(s); listed above (--allow-failures to accept)")


@cli.command("batch")
@click.argument("source")
@batch_options
def batch_command(source: str, as_json: bool, allow_failures: bool, **p: Any) -> None:
    """Reference every file under SOURCE (a glob or a prefix) into one combined Icechunk
    dataset per collection, resumably.

    \b
    Examples:
      zarrport batch 'archive/*.nc' -o refs/ --collection-by \\
          '{variable}_{freq}_{model}_{scenario}_{member}_{grid}_{years}.nc'
      zarrport batch s3://bucket/cmip6/ -o s3://bucket/refs/ --ledger cmip6.sqlite \\
          --scheduler tcp://10.0.0.5:8786 --stac catalog/

    A re-run skips unchanged files, retries failed ones, picks up new ones and re-references
    changed ones. Exit status 9 when a file or collection failed (see --allow-failures).
    """
    from zarrport.pipeline import run_batch

    bar = _Bar(not as_json)
    try:
        result = run_batch(source, p.pop("output"), progress=bar, **_kwargs(p))
    finally:
        bar.close()
    _finish(result, as_json, allow_failures)
