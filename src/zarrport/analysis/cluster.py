"""Dask for the analyses: one code path on a local cluster sized from the machine or on an
existing scheduler, with a progress bar and the dashboard link on stderr.

``dask_client()`` starts a ``distributed.LocalCluster`` on 127.0.0.1 -- one single-threaded
worker process per core (at most 8) and an equal share of the machine's memory each (90 %
of what ``distributed`` sees, cgroup limits included) -- or connects to
``scheduler="tcp://host:8786"`` (or uses a ``Client`` passed in). ``compute()`` runs a Dask
collection or delayed object on it and draws the progress bar.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from zarrport.errors import InvalidArgumentError
from zarrport.extras import require

#: how long connecting to an existing scheduler may take
SCHEDULER_TIMEOUT_S = 30.0  # (distributed retries until then)
#: share of the machine's memory given to the local workers
MEMORY_FRACTION = 0.9
#: at most this many local workers by default
MAX_LOCAL_WORKERS = 8


@dataclass(frozen=True)
class ClusterInfo:
    """What the analyses run on (printed once, and in ``--json`` summaries)."""

    address: str
    local: bool
    workers: int
    threads: int  # per worker
    memory_limit: int  # bytes per worker (0: none)
    dashboard: str | None

    def describe(self) -> str:
        from zarrport.cli.options import human_bytes

        where = "local cluster" if self.local else f"cluster at {self.address}"
        mem = f", {human_bytes(self.memory_limit)} per worker" if self.memory_limit else ""
        dash = f"; dashboard {self.dashboard}" if self.dashboard else ""
        return (f"dask: {where}, {self.workers} worker{'s' * (self.workers != 1)} x "
                f"{self.threads} thread{'s' * (self.threads != 1)}{mem}{dash}")

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "local": self.local, "workers": self.workers,
                "threads_per_worker": self.threads, "memory_limit": self.memory_limit,
                "dashboard": self.dashboard}


def local_cluster_size(workers: int | None = None, memory_limit: int | str | None = None
                       ) -> tuple[int, int]:
    """(worker processes, memory limit in bytes per worker) for a local cluster: one worker
    per core available to this process (at most :data:`MAX_LOCAL_WORKERS`) and an equal share
    of :data:`MEMORY_FRACTION` of the memory, unless given."""
    from dask.utils import parse_bytes
    from distributed.system import MEMORY_LIMIT

    if workers is not None and workers < 1:
        raise InvalidArgumentError("--workers must be at least 1")
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    n = workers or max(1, min(cores, MAX_LOCAL_WORKERS))
    if memory_limit is None:
        per = int(MEMORY_LIMIT * MEMORY_FRACTION / n)
    else:
        try:
            per = parse_bytes(memory_limit) if isinstance(memory_limit, str) else int(
                memory_limit)
        except ValueError as err:
            raise InvalidArgumentError(f"--memory-limit {memory_limit!r}: not a size such "
                                       "as 4GB or 512MiB") from err
        if per <= 0:
            raise InvalidArgumentError("--memory-limit must be positive")
    return n, per


def _dashboard_available() -> bool:
    try:
        import bokeh  # noqa: F401  (the dashboard needs it; without it there is no link)
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def dask_client(scheduler: Any = None, *, workers: int | None = None,
                memory_limit: int | str | None = None,
                echo: Callable[[str], None] | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: on ``scheduler`` (an address, or a ``Client`` left open) or
    on a new local cluster (closed at the end). ``echo`` receives the one-line description
    (workers, memory, dashboard link); the client's :class:`ClusterInfo` is on
    ``client.zarrport_info``."""
    require("analysis", "distributed", what="an analysis on Dask")
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        scheduler.zarrport_info = cluster_info(scheduler, local=False)
        if echo:
            echo(scheduler.zarrport_info.describe())
        yield scheduler
        return
    cluster = None
    if scheduler is not None:
        if workers is not None or memory_limit is not None:
            raise InvalidArgumentError("--workers and --memory-limit size a local cluster; "
                                       "with --scheduler the cluster is already sized")
        try:
            client = Client(scheduler, timeout=SCHEDULER_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as err:
            raise InvalidArgumentError(
                f"cannot reach the Dask scheduler at {scheduler}: {err}") from err
    else:
        n, per = local_cluster_size(workers, memory_limit)
        dash = "127.0.0.1:0" if _dashboard_available() else None
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               memory_limit=per, host="127.0.0.1", dashboard_address=dash,
                               silence_logs=logging.ERROR)
        client = Client(cluster, set_as_default=False)
    try:
        client.zarrport_info = cluster_info(client, local=cluster is not None)
        if echo:
            echo(client.zarrport_info.describe())
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def cluster_info(client: Any, *, local: bool) -> ClusterInfo:
    workers = list(client.scheduler_info(n_workers=-1)["workers"].values())
    threads = max((w.get("nthreads", 1) for w in workers), default=1)
    mem = max((w.get("memory_limit") or 0 for w in workers), default=0)
    dashboard = None
    if local and _dashboard_available():
        dashboard = client.dashboard_link
    elif not local:
        with contextlib.suppress(Exception):
            dashboard = client.dashboard_link if client.scheduler_info().get(
                "services", {}).get("dashboard") else None
    return ClusterInfo(address=str(client.scheduler.address), local=local,
                       workers=len(workers), threads=threads, memory_limit=int(mem),
                       dashboard=dashboard)


def _progress_bar(label: str, stream: TextIO) -> type:
    from distributed.diagnostics.progressbar import TextProgressBar

    class _Bar(TextProgressBar):
        """distributed's text bar, on ``stream`` with a label and a final line."""

        def _draw_bar(self, remaining: int, all: int, **kwargs: Any) -> None:  # noqa: A002
            frac = (1 - remaining / all) if all else 1.0
            bar = "#" * int(self.width * frac)
            stream.write(f"\r{label} [{bar:<{self.width}}] {int(100 * frac):3d}% "
                         f"{all - remaining}/{all} tasks")
            stream.flush()

        def _draw_stop(self, **kwargs: Any) -> None:
            stream.write("\n")
            stream.flush()

    return _Bar


def compute(client: Any, obj: Any, *, label: str = "computing",
            progress: bool | None = None, stream: TextIO | None = None) -> Any:
    """The result of computing the Dask collection or delayed object ``obj`` (or a list of
    them: a list of results, one computation) on ``client``,
    with a progress bar on ``stream`` (stderr) when ``progress`` (default: when stderr is a
    terminal). A failed task raises its exception here."""
    stream = stream or sys.stderr
    if progress is None:
        progress = stream.isatty()
    fut = client.compute(obj)  # a list of futures for a list of objects
    futs = list(fut) if isinstance(fut, (list, tuple)) else [fut]
    if progress:
        t0 = time.perf_counter()
        bar = _progress_bar(label, stream)(futs, scheduler=client.scheduler.address,
                                          width=30, complete=True, start=False,
                                          loop=client.loop)
        with contextlib.suppress(Exception):  # a courtesy: the result (or its error) decides
            client.sync(bar.listen)
        stream.write(f"{label}: {time.perf_counter() - t0:.1f} s\n")
    if isinstance(fut, (list, tuple)):
        return type(fut)(client.gather(futs))
    return fut.result()
