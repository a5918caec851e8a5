"""Let I/O left running on zarr's event loop finish before anything else happens.

zarr runs every synchronous read on one background event loop (``zarr.core.sync``). When one
chunk of a concurrent read fails (an Icechunk virtual chunk whose source changed, a storage
error), ``asyncio.gather`` raises at once but leaves its sibling tasks running on that loop,
each awaiting an Icechunk (tokio) future. If the process then exits, zarr's ``atexit`` hook
closes the loop under them: hundreds of "Task was destroyed but it is pending!",
"Future exception was never retrieved" and "Event loop is closed" lines follow, and now and
then tokio calls back into a finalizing interpreter and the process dies (SIGSEGV/SIGABRT)
instead of exiting with its status. Checked with zarr 3.4.2 (``zarr.core.common.concurrent_map``
gathers without cancelling or awaiting the siblings of a failed task) and icechunk 2.3.0; no
upstream issue found for it when this was written.

:func:`settle_zarr_tasks` waits (bounded) for those tasks, so their exceptions are retrieved
on a live loop. zarrport calls it after a failed read it handles, and the CLI calls it before
the process exits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys

__all__ = ["settle_dask_threads", "settle_zarr_tasks"]


def settle_dask_threads() -> None:
    """Before the process exits: let the tasks still running in Dask's default thread pool
    finish (those not started are cancelled). When one task of a threaded ``compute`` fails,
    Dask raises at once while its sibling tasks keep reading and decoding (GRIB messages in
    ecCodes, Icechunk fetches) in the pool's threads; exiting under them ends in a fatal
    "PyGILState_Release" at interpreter finalization instead of the command's exit status
    (dask 2026, icechunk 2.3.0). The pool is shut down; Dask starts a new one if the process
    computes again."""
    threaded = sys.modules.get("dask.threaded")
    pool = getattr(threaded, "default_pool", None)
    if pool is None:
        return
    try:
        pool.shutdown(wait=True, cancel_futures=True)
    except Exception:  # noqa: BLE001 - exiting anyway
        pass
    # a caller that goes on (the CLI's main() called in-process, as tests and notebooks do)
    # gets a fresh pool on its next compute instead of "cannot schedule new futures after
    # shutdown" (dask.threaded makes one when default_pool is None; dask 2026.8)
    if getattr(threaded, "default_pool", None) is pool:
        threaded.default_pool = None


async def _wait_for_others() -> None:
    me = asyncio.current_task()
    while True:
        pending = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        if not pending:
            return
        await asyncio.wait(pending)


def settle_zarr_tasks(timeout: float = 30.0) -> None:
    """Wait up to ``timeout`` seconds for every task still running on zarr's event loop.

    Does nothing when zarr was never imported or its loop is not running. Never raises: a
    loop that does not settle in time is left as it is.
    """
    zsync = sys.modules.get("zarr.core.sync")
    if zsync is None:
        return
    loop = zsync.loop[0]
    if loop is None or loop.is_closed() or not loop.is_running():
        return
    try:
        asyncio.run_coroutine_threadsafe(_wait_for_others(), loop).result(timeout)
    except (concurrent.futures.TimeoutError, RuntimeError):
        pass
