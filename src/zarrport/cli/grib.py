"""``zarrport grib ingest``: forecast cycles into a versioned Icechunk repository."""

from __future__ import annotations

from typing import Any

import click

from zarrport.cli import cli
from zarrport.cli.options import echo_json, json_flag, parse_storage_options, storage_option
from zarrport.errors import InvalidArgumentError


@cli.group()
def grib() -> None:
    """GRIB forecasts: GEFS and ECMWF ensemble cycles as virtual Zarr."""


def parse_steps(text: str | None) -> list[int] | None:
    """``0-240:3`` (start-end:every), ``3,6,9`` or a mix; None for every step found."""
    if not text:
        return None
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                span, _, every = part.partition(":")
                a, b = (int(x) for x in span.split("-", 1))
                out.update(range(a, b + 1, int(every or 1)))
            else:
                out.add(int(part))
        except ValueError:
            raise InvalidArgumentError(
                f"--steps {text!r}: use hours like 0-240:3 or 6,12,24") from None
    return sorted(out)


def parse_members(text: str | None) -> Any:
    if not text:
        return None
    try:
        if "," in text or "-" in text:
            return parse_steps(text)
        return int(text)
    except ValueError:
        raise InvalidArgumentError(f"--members {text!r}: a count (31) or a list (0,1,5 or "
                                   "0-10)") from None


def parse_variables(pairs: tuple[str, ...]) -> dict[str, str] | None:
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        name, sep, spec = pair.partition("=")
        if not sep or not name or ":" not in spec:
            raise InvalidArgumentError(
                f"--var {pair!r}: use NAME=PARAM:level, e.g. tp=APCP:surface")
        out[name] = spec
    return out


@grib.command("ingest")
@click.argument("kind", type=click.Choice(["gefs", "ecmwf"]))
@click.argument("cycle_url")
@click.option("-o", "--output", "repo", required=True,
              help="Icechunk repository (local path, s3://, az://); created on first use.")
@click.option("--members", metavar="N|LIST",
              help="Member count (31 = control + 30) or list (0,3,7 / 0-10); default: all "
              "found. Members asked for but absent read as NaN and are reported.")
@click.option("--steps", metavar="HOURS", help="Forecast hours, e.g. 0-240:3 or 24,48; "
              "default: all found.")
@click.option("--var", "variables", multiple=True, metavar="NAME=PARAM:LEVEL",
              help="GEFS: variable from the .idx (repeatable), default tp=APCP:surface.")
@click.option("--param", "params", multiple=True, metavar="NAME",
              help="ECMWF: parameter short name (repeatable), default tp.")
@click.option("--anon", is_flag=True, help="Read the source bucket anonymously (public "
              "buckets such as noaa-gefs-pds); also recorded for readers of the repository.")
@storage_option
@click.option("--output-storage-option", "output_storage_options", multiple=True,
              metavar="KEY=VALUE", help="Storage option for the repository, if it differs.")
@json_flag
def ingest_command(kind: str, cycle_url: str, repo: str, members: str | None,
                   steps: str | None, variables: tuple[str, ...], params: tuple[str, ...],
                   anon: bool, storage_options: tuple[str, ...],
                   output_storage_options: tuple[str, ...], as_json: bool) -> None:
    """Reference one forecast cycle into REPO as one commit, tagged cycle-YYYYMMDDHH.

    \b
    CYCLE_URL  GEFS:  .../gefs.YYYYMMDD/HH   (files atmos/pgrb2sp25/gepNN.tHHz.pgrb2s.0p25.fFFF)
               ECMWF: .../YYYYMMDD/HHz/ifs/0p25/enfo   (YYYYMMDDHH0000-<step>h-enfo-ef.grib2)

    The manifest is built from the .idx/.index files alone. A cycle already in REPO
    changes nothing; cycles must share variables, members, steps and grid, in time order.
    Read back with zarrport.open_dataset(REPO): (init_time, member, step, latitude,
    longitude), precipitation accumulated from the start of the forecast.

    \b
    Examples:
      zarrport grib ingest gefs s3://noaa-gefs-pds/gefs.20250101/00 -o gefs.icechunk \\
          --anon --members 31 --steps 0-384:6 --var tp=APCP:surface
      zarrport grib ingest ecmwf data/20250101/00z/ifs/0p25/enfo -o ens.icechunk --param tp
    """
    from zarrport.grib.ingest import ingest_cycle

    so = parse_storage_options(storage_options) or {}
    if anon:
        so["anon"] = True
    out_so = parse_storage_options(output_storage_options)
    if kind == "gefs" and params:
        raise InvalidArgumentError("--param is for ECMWF; GEFS variables are --var "
                                   "NAME=PARAM:LEVEL")
    if kind == "ecmwf" and variables:
        raise InvalidArgumentError("--var is for GEFS; ECMWF parameters are --param NAME")
    result = ingest_cycle(
        kind, cycle_url, repo, members=parse_members(members), steps=parse_steps(steps),
        variables=parse_variables(variables), params=list(params) or None,
        storage_options=so or None,
        output_storage_options=out_so if out_so is not None else (None if anon else so or None))
    if as_json:
        echo_json(result.to_dict())
        return
    verb = {"created": "created", "appended": "appended to",
            "unchanged": "already in"}[result.status]
    click.echo(f"{kind.upper()} cycle {result.cycle[:13]}Z {verb} {result.repository}: "
               f"{', '.join(result.variables)}; {result.members} members x {result.steps} "
               f"steps; {result.chunks} chunks referenced"
               + (f"; tag {result.tag}" if result.status != "unchanged" else "")
               + f" ({result.seconds:.2f} s)")
    if result.missing:
        click.echo(f"{len(result.missing)} missing (read as NaN):")
        for line in result.missing[:20]:
            click.echo(f"  {line}")
        if len(result.missing) > 20:
            click.echo(f"  ... and {len(result.missing) - 20} more (--json lists all)")
