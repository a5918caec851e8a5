"""``zarrport run PIPELINE.yaml``: a chain of zarrport commands from one YAML file."""

from __future__ import annotations

import sys
import time

import click

from zarrport.cli import cli
from zarrport.cli.options import echo_json, json_flag


@cli.command("run")
@click.argument("pipeline", metavar="PIPELINE.yaml")
@click.option("--dry-run", is_flag=True,
              help="Print every stage instance's command line and whether it would run or "
              "be skipped as fresh (and why); run nothing.")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE",
              help="Override a var (years.start=2016), a matrix (matrix.variable=tas,pr) or "
              "the Dask settings (dask.scheduler=tcp://host:8786); repeatable.")
@click.option("--force", is_flag=True, help="Run every (selected) stage, fresh or not.")
@click.option("--only", multiple=True, metavar="STAGE",
              help="Run only this stage's instances (repeatable); the others are left as "
              "they are.")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run every Dask-capable stage on this existing scheduler (same as --set "
              "dask.scheduler=ADDRESS).")
@json_flag
def run_command(pipeline: str, dry_run: bool, sets: tuple[str, ...], force: bool,
                only: tuple[str, ...], scheduler: str | None, as_json: bool) -> None:
    """Run the stages of PIPELINE.yaml in order, each an existing zarrport command with its
    command-line options, skipping stage instances whose outputs are fresh.

    A stage instance is fresh when its record (OUT.zarrport-run.json beside its first
    output) shows the same parameters and the same inputs, its outputs exist and none of
    its inputs is newer; and no stage it needs runs. A failed stage stops the run; stages
    that completed keep their records, so the same command resumes.

    \b
    Examples:
      zarrport run examples/pipeline.yaml --dry-run
      zarrport run examples/pipeline.yaml --set root=/data/out --set years.end=2020
      zarrport run pipeline.yaml --scheduler tcp://10.0.0.5:8786 --only normals
    """
    from zarrport.extras import require
    from zarrport.workflow import load_pipeline, plan, run_pipeline

    require("analysis", "yaml", what="zarrport run (YAML pipelines)")
    all_sets = [*sets, *([f"dask.scheduler={scheduler}"] if scheduler else [])]
    pipe = load_pipeline(pipeline, all_sets)
    if dry_run:
        steps = plan(pipe, only=only, force=force)
        if as_json:
            echo_json({"pipeline": pipeline, "dry_run": True,
                       "stages": [s.to_dict(pipe) for s in steps]})
            return
        n_run = sum(s.action == "run" for s in steps)
        n_skip = sum(s.action == "skip" for s in steps)
        click.echo(f"{pipeline}: {len(steps)} stage instance(s): {n_run} to run, {n_skip} "
                   "fresh (dry run: nothing runs)")
        for i, s in enumerate(steps, 1):
            verdict = {"run": "run", "skip": "skip", "unselected": "skip"}[s.action]
            click.echo(f"[{i}] {s.instance.id}: {verdict} ({s.reason})")
            click.echo(f"    {s.instance.command_line}")
        return
    t0 = time.perf_counter()
    # with --json stdout carries the summary only: the stages' own output goes to stderr
    steps = run_pipeline(pipe, only=only, force=force,
                         out=sys.stderr if as_json else sys.stdout)
    seconds = time.perf_counter() - t0
    n_ran = sum(s.action == "run" for s in steps)
    n_skip = sum(s.action == "skip" for s in steps)
    if as_json:
        echo_json({"pipeline": pipeline, "dry_run": False, "ran": n_ran, "skipped": n_skip,
                   "seconds": round(seconds, 3), "stages": [s.to_dict(pipe) for s in steps]})
        return
    click.echo(f"{pipeline}: {n_ran} stage instance(s) ran, {n_skip} fresh and skipped "
               f"({seconds:.1f} s)")
