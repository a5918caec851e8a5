from __future__ import annotations

import sys

import click

from zarrport.cli import cli
from zarrport.cli.options import echo_json, json_flag, parse_storage_options, storage_option


@cli.command("verify")
@click.argument("output")
@click.option("--sources", multiple=True,
              help="Source files to check against (default: those recorded in OUTPUT).")
@click.option("--ledger", type=click.Path(dir_okay=False),
              help="Batch outputs: the ledger, when not where the output's manifest says.")
@click.option("--quick", is_flag=True,
              help="Batch outputs: only check that no source changed; do not compare values.")
@storage_option
@json_flag
def verify_command(output: str, sources: tuple[str, ...], ledger: str | None, quick: bool,
                   storage_options: tuple[str, ...], as_json: bool) -> None:
    """Check that OUTPUT still reads exactly what its sources hold.

    Compares every variable with the sources read by netCDF4, checks every referenced byte
    range lies inside its file, and that no source changed size or modification time (or
    ETag) since the references were made. Exits 0 only when all holds, 7 otherwise.

    For a batch output (``zarrport batch``), every source its ledger records is checked:
    one deleted, truncated or rewritten since is reported by name; then each collection's
    values are compared (unless --quick).

    \b
    Examples:
      zarrport verify tas.icechunk
      zarrport verify refs/ --quick
    """
    from zarrport.errors import EXIT_CODES
    from zarrport.pipeline.layout import is_batch_output
    from zarrport.verify import verify, verify_batch

    opts = parse_storage_options(storage_options)
    if is_batch_output(output, opts):
        report = verify_batch(output, ledger=ledger, storage_options=opts, values=not quick)
    else:
        report = verify(output, sources=list(sources) or None, storage_options=opts)
    if as_json:
        echo_json(report.to_dict())
    else:
        status = "OK" if report.ok else "FAILED"
        click.echo(f"{status}: {report.output} ({report.kind}): {report.sources} source(s), "
                   f"{report.variables_checked} variable(s) compared, "
                   f"{report.ranges_checked} byte range(s) checked")
        for p in report.problems:
            click.echo(f"  {p.kind}: {p.item}: {p.detail}")
    if not report.ok:
        sys.exit(EXIT_CODES["verification_failed"])
