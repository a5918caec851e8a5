"""zarrport watch: new files land as new commits; stop and restart at any moment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import icechunk
import netCDF4
import numpy as np

import zarrport
from zarrport.pipeline.watch import watch
from zarrport.testing.samples import write_cmip6_archive

ZARRPORT = str(Path(sys.executable).parent / "zarrport")
SMALL = {"nlat": 4, "nlon": 8, "time_chunk": 73}


def _values(paths: list[Path]) -> np.ndarray:
    parts = []
    for p in paths:
        with netCDF4.Dataset(p) as nc:
            parts.append(np.ma.filled(nc["tas"][:].astype("f8"), np.nan))
    return np.concatenate(parts)


def _messages(repo: Path) -> list[str]:
    r = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    return [s.message for s in r.ancestry(branch="main")]


def test_watch_appends_each_new_file_as_a_commit(tmp_path):
    src = tmp_path / "incoming"
    out = tmp_path / "out"
    paths = write_cmip6_archive(src, years=range(2000, 2002), **SMALL)
    polls = []

    def on_poll(n, result, error):
        polls.append(result.counts)
        if n == 1:  # a file lands between polls
            paths.extend(write_cmip6_archive(src, years=range(2002, 2003), **SMALL))

    n = watch(str(src), str(out), interval=0.1, max_polls=3, on_poll=on_poll, workers=1)
    assert n == 3
    assert [p["new"] for p in polls] == [2, 1, 0]
    repo = out / "collections" / "incoming.icechunk"
    msgs = _messages(repo)
    assert len(msgs) == 3 and "added 1" in msgs[0] and paths[-1].name in msgs[0]
    ds = zarrport.open_dataset(str(repo))
    np.testing.assert_array_equal(ds.tas.values.astype("f8"), _values(paths))


def test_watch_stops_on_event():
    stop = threading.Event()
    stop.set()
    assert watch("/nonexistent", "/nonexistent-out", stop=stop) == 0


def test_watch_cli_sigterm_then_restart_nothing_twice_nothing_lost(tmp_path):
    src = tmp_path / "incoming"
    out = tmp_path / "out"
    paths = write_cmip6_archive(src, years=range(2000, 2002), **SMALL)
    cmd = [ZARRPORT, "watch", str(src), "-o", str(out), "--interval", "0.2", "--json",
           "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        first = json.loads(proc.stdout.readline())
        assert first["poll"] == 1 and first["counts"]["new"] == 2
        paths.extend(write_cmip6_archive(src, years=range(2002, 2003), **SMALL))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = json.loads(proc.stdout.readline())
            if line["counts"]["new"]:
                break
        assert line["counts"]["new"] == 1
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    paths.extend(write_cmip6_archive(src, years=range(2003, 2004), **SMALL))
    again = subprocess.run([*cmd, "--max-polls", "1"], capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    counts = json.loads(again.stdout.splitlines()[0])["counts"]
    assert counts["new"] == 1 and counts["unchanged"] == 3
    ds = zarrport.open_dataset(str(out / "collections" / "incoming.icechunk"))
    np.testing.assert_array_equal(ds.tas.values.astype("f8"), _values(paths))
    assert ds.sizes["time"] == 4 * 365
