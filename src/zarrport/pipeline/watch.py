"""``watch``: poll a prefix and fold each new or changed file into its collection.

Each poll is a :func:`~zarrport.pipeline.batch.run_batch` over the prefix: the ledger says
what is new or changed, and each collection that changed gets one new Icechunk commit. So
stopping (Ctrl-C, SIGTERM, ``kill -9``) at any moment and starting again is safe: a file is
referenced once per version of it, and nothing referenced is lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from zarrport.errors import StorageError
from zarrport.pipeline.batch import BatchResult, run_batch


def watch(prefix: str, output: str, *, interval: float = 60.0, max_polls: int | None = None,
          stop: threading.Event | None = None,
          on_poll: Callable[[int, BatchResult | None, Exception | None], None] | None = None,
          **batch_options: Any) -> int:
    """Poll ``prefix`` every ``interval`` seconds until ``stop`` is set or ``max_polls``
    polls were made; returns the number of polls. ``batch_options`` go to ``run_batch``.

    A poll whose listing fails on storage (network down) is reported through ``on_poll``
    and tried again at the next interval; other errors (bad options, an output made with a
    different pattern) end the watch.
    """
    stop = stop or threading.Event()
    polls = 0
    while not stop.is_set():
        started = time.monotonic()
        polls += 1
        try:
            result = run_batch(prefix, output, allow_empty=True, **batch_options)
        except StorageError as err:
            if on_poll:
                on_poll(polls, None, err)
        else:
            if on_poll:
                on_poll(polls, result, None)
        if max_polls is not None and polls >= max_polls:
            break
        stop.wait(max(0.0, interval - (time.monotonic() - started)))
    return polls
