"""The analyses' Dask: a local cluster sized from the machine, an existing scheduler, the
progress bar and the one-line errors."""

from __future__ import annotations

import io
import os

import dask
import dask.array as da
import numpy as np
import pytest

from zarrport.analysis.cluster import (
    MEMORY_FRACTION,
    compute,
    dask_client,
    local_cluster_size,
)
from zarrport.errors import InvalidArgumentError


def _divide(a: int, b: int) -> float:
    return a / b


def test_local_size_follows_the_machine():
    from distributed.system import MEMORY_LIMIT

    n, per = local_cluster_size()
    assert n == min(len(os.sched_getaffinity(0)), 8)
    assert per == int(MEMORY_LIMIT * MEMORY_FRACTION / n)
    assert local_cluster_size(3, "2GB") == (3, 2_000_000_000)


@pytest.mark.parametrize(("workers", "memory", "message"), [
    (0, None, "--workers must be at least 1"),
    (None, "lots", "not a size"),
    (None, "-1GB", "must be positive")])
def test_bad_sizes_are_refused(workers, memory, message):
    with pytest.raises(InvalidArgumentError, match=message):
        local_cluster_size(workers, memory)


def test_local_cluster_computes_with_progress_and_a_dashboard():
    lines: list[str] = []
    with dask_client(workers=1, memory_limit="1GB", echo=lines.append) as client:
        info = client.zarrport_info
        assert (info.local, info.workers, info.threads, info.memory_limit) == (
            True, 1, 1, 1_000_000_000)
        assert info.address.startswith("tcp://127.0.0.1:")
        assert info.dashboard and info.dashboard.startswith("http://127.0.0.1:")
        x = da.arange(10_000, chunks=1_000)
        bar = io.StringIO()
        assert compute(client, (x * 2).sum(), label="doubling", progress=True,
                       stream=bar) == 2 * np.arange(10_000).sum()
        # a list of collections: one computation, a list of results
        bar2 = io.StringIO()
        assert compute(client, [x.sum(), x.max()], label="both", progress=True,
                       stream=bar2) == [np.arange(10_000).sum(), 9_999]
        assert "both [" in bar2.getvalue() and "100%" in bar2.getvalue()
    assert lines == [info.describe()]
    assert "1 worker x 1 thread" in lines[0] and "dashboard http://127.0.0.1:" in lines[0]
    text = bar.getvalue()
    assert "doubling [" in text and "100%" in text and text.rstrip().endswith(" s")


def test_no_progress_bar_unless_asked():
    bar = io.StringIO()
    with dask_client(workers=1, memory_limit="1GB") as client:
        assert compute(client, da.ones(10, chunks=5).sum(), progress=False, stream=bar) == 10
        # a task's error reaches the caller as itself
        with pytest.raises(ZeroDivisionError):
            compute(client, dask.delayed(_divide)(1, 0), stream=bar)
    assert bar.getvalue() == ""


def test_an_existing_scheduler(dask_cluster):
    lines: list[str] = []
    with dask_client(dask_cluster.address, echo=lines.append) as client:
        assert client.zarrport_info.local is False
        assert client.zarrport_info.workers == 2
        assert compute(client, da.ones(100, chunks=10).sum(), progress=False) == 100
    assert lines[0].startswith(f"dask: cluster at {dask_cluster.address}, 2 workers")
    with pytest.raises(InvalidArgumentError, match="already sized"):
        with dask_client(dask_cluster.address, workers=2):
            pass


def test_an_unreachable_scheduler_is_one_error():
    with pytest.raises(InvalidArgumentError, match="cannot reach the Dask scheduler at "
                       "tcp://127.0.0.1:9"):
        with dask_client("tcp://127.0.0.1:9"):
            pass
