from __future__ import annotations

import signal
import threading
from typing import Any

import click

from zarrport.cli import cli
from zarrport.cli.batch import _kwargs, batch_options, print_summary


@cli.command("watch")
@click.argument("prefix")
@batch_options
@click.option("--interval", type=float, default=60, show_default=True,
              help="Seconds between polls of PREFIX.")
@click.option("--max-polls", type=int, help="Stop after this many polls (default: never).")
def watch_command(prefix: str, as_json: bool, allow_failures: bool, interval: float,
                  max_polls: int | None, **p: Any) -> None:
    """Poll PREFIX and add each new or changed file to its collection as a new commit.

    Safe to stop (Ctrl-C, SIGTERM) and restart at any moment: the ledger remembers what
    was referenced. Options as for ``batch``; a poll whose listing fails on storage is
    retried at the next interval.

    \b
    Example:
      zarrport watch s3://bucket/incoming/ -o s3://bucket/refs/ --ledger refs.sqlite \
          --collection-by '{variable}_{freq}_{model}_{scenario}_{member}_{grid}_{years}.nc' \
          --interval 300
    """
    import json

    from zarrport.pipeline.watch import watch

    if interval <= 0:
        raise click.BadParameter("must be > 0", param_hint="--interval")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def on_poll(n: int, result: Any, error: Exception | None) -> None:
        if error is not None:
            click.echo(f"zarrport: poll {n}: {error}; trying again in {interval:g} s", err=True)
            return
        if as_json:
            click.echo(json.dumps({"poll": n, **result.to_dict()}, default=str))
        elif any(result.counts[k] for k in ("new", "changed", "failed", "missing")) or n == 1:
            click.echo(f"poll {n}:")
            print_summary(result)

    kwargs = _kwargs(p)
    polls = watch(prefix, p["output"], interval=interval, max_polls=max_polls, stop=stop,
                  on_poll=on_poll, **kwargs)
    if not as_json:
        click.echo(f"stopped after {polls} poll(s)")
