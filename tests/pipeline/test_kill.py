"""``kill -9`` in the middle of ``zarrport batch``, then a re-run.

The CLI runs in its own process group over 60 local files; once the ledger shows some (not
all) sources referenced, the whole group (driver, forkserver, worker processes) gets
SIGKILL. What is visible at OUT then must be consistent: a collection repository, if there
is one, opens and has no duplicate time values; every file with a final-looking name is
complete; every source the ledger calls ``ok`` has its per-source reference. A re-run exits
0, resumes (does not parse again what was recorded), and the combined dataset holds every
file exactly once, equal to what netCDF4 reads.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _batch_helpers import (
    assert_same_dataset,
    load,
    manifest,
    netcdf_oracle,
    only_collection,
    provenance_sources,
)

from zarrport.pipeline.ledger import Ledger
from zarrport.testing.samples import write_cmip6_archive

ZARRPORT = Path(sys.executable).parent / "zarrport"
SAMPLE = {"nlat": 4, "nlon": 8, "time_chunk": 73}
YEARS = range(1940, 2000)  # 60 files
#: Kill once at least this many sources are recorded (and not all of them).
KILL_AFTER = 8
WAIT_S = 60.0


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_cmip6_archive(tmp_path_factory.mktemp("archive"), years=YEARS, **SAMPLE)


def _ok_count(ledger: Path) -> int:
    """Sources the ledger records as referenced (0 while it does not exist yet)."""
    if not ledger.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT count(*) FROM sources WHERE status = 'ok'").fetchone()[0]
        finally:
            db.close()
    except sqlite3.OperationalError:  # table not created yet
        return 0


def _start(archive: list[Path], out: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [str(ZARRPORT), "batch", str(archive[0].parent / "*.nc"), "-o", str(out),
             "--concat-dim", "time", "--workers", "2"],
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: killpg reaches its workers
        )


def _group_gone(pgid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _check_visible_state(out: Path, n_files: int) -> dict:
    """What a reader sees at OUT after the kill is consistent; returns a few facts."""
    facts: dict = {"repo": False, "temporaries": []}
    for p in out.rglob("*"):
        if any(part.endswith(".icechunk") for part in p.relative_to(out).parts[:-1]):
            continue  # Icechunk's own files: checked by opening the repository
        name = p.name
        if name.startswith(".") and ".zarrport-" in name:
            facts["temporaries"].append(str(p.relative_to(out)))  # aside: removed by a re-run
            continue
        if p.is_file() and name.endswith(".json"):
            json.loads(p.read_text())  # complete, not a half-written file under a final name
    manifest_path = out / "zarrport-batch.json"
    if manifest_path.exists():
        for entry in manifest(out)["collections"].values():
            assert (out / entry["icechunk"]).is_dir()
    repos = list((out / "collections").glob("*.icechunk")) if (out / "collections").exists() \
        else []
    for repo in repos:
        ds = load(repo.as_uri())
        t = ds["time"].values
        assert len(set(t.tolist())) == len(t), "duplicate time values"
        assert all(a < b for a, b in zip(t[:-1], t[1:], strict=True)), "time not increasing"
        facts["repo"] = ds
    ledger = out / "ledger.sqlite"
    if ledger.exists():
        rows = Ledger(ledger).rows()
        assert len(rows) <= n_files
        for r in rows:
            if r["status"] == "ok":  # recorded => its per-source reference is there, whole
                refs = out / r["refs"]
                assert refs.is_file(), r
                json.loads(refs.read_text())
        facts["ok"] = sum(r["status"] == "ok" for r in rows)
    return facts


@pytest.mark.parametrize(("prefill", "kill_at"), [(0, KILL_AFTER), (20, 20 + KILL_AFTER),
                                                  (20, len(YEARS))],
                         ids=["fresh", "existing-repo", "at-commit"])
def test_kill_then_rerun(archive, tmp_path, prefill, kill_at):
    """fresh: killed during the first run (no repository yet). existing-repo: a first run
    committed 20 files, then 40 more arrive and the second run is killed while referencing
    them: the repository must still show exactly the first commit. at-commit: the second
    run is killed once every source is recorded, i.e. while it combines and commits: the
    repository shows the first commit or the complete second one, nothing in between."""
    out = tmp_path / "out"
    log = tmp_path / "batch.log"
    src = tmp_path / "src"
    src.mkdir()
    files = [src / p.name for p in archive]
    n = len(files)
    for p in archive[:prefill]:
        shutil.copy2(p, src / p.name)
    if prefill:
        first = subprocess.run(
            [str(ZARRPORT), "batch", str(src / "*.nc"), "-o", str(out), "--concat-dim",
             "time", "--workers", "2"], capture_output=True, text=True, timeout=120,
            stdin=subprocess.DEVNULL)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for p in archive[prefill:]:
        shutil.copy2(p, src / p.name)
    archive = files

    proc = _start(archive, out, log)
    try:
        deadline = time.monotonic() + WAIT_S
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            done = _ok_count(out / "ledger.sqlite")
            if done >= kill_at:
                break
            time.sleep(0.01)
        assert proc.poll() is None, (
            f"the batch ended (status {proc.returncode}) before it could be killed:\n"
            f"{log.read_text()[-3000:]}")
        assert kill_at <= done <= n, done
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert _group_gone(proc.pid), "processes of the killed batch survived"

    facts = _check_visible_state(out, n)
    recorded = facts["ok"]
    assert kill_at <= recorded <= n, facts
    print(f"\nkilled with {recorded}/{n} recorded; repository visible: "
          f"{facts['repo'] is not False}; temporaries left aside: {len(facts['temporaries'])}")
    committed = 0 if facts["repo"] is False else facts["repo"].sizes["time"] // 365
    if kill_at < n:  # killed while referencing: the committed state is the first run's
        assert committed == prefill, facts
    else:  # killed while combining/committing: the old commit or the whole new one
        assert committed in (prefill, n), facts
    print(f"committed before the kill: {committed} files")
    if committed:
        assert_same_dataset(facts["repo"], netcdf_oracle(archive[:committed]))

    # re-run to completion
    t0 = time.monotonic()
    rerun = subprocess.run(
        [str(ZARRPORT), "batch", str(archive[0].parent / "*.nc"), "-o", str(out),
         "--concat-dim", "time", "--workers", "2", "--json"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    print(f"re-run: {time.monotonic() - t0:.1f} s")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout)
    assert summary["ok"] and summary["failures"] == []
    # resumed: what the killed run recorded was not parsed again
    assert summary["counts"]["unchanged"] == recorded, summary["counts"]
    assert summary["counts"]["new"] == n - recorded, summary["counts"]
    (col,) = summary["collections"].values()
    assert len(col["added"]) == n - committed, col  # lists all that were not committed

    # every file exactly once, in order, equal to netCDF4's reading of the whole archive
    repo = only_collection(out)
    ds = load(repo)
    expected = netcdf_oracle(archive)
    assert ds.sizes["time"] == sum(_time_lengths(archive)) == 365 * n
    t = ds["time"].values
    assert all(a < b for a, b in zip(t[:-1], t[1:], strict=True)), "time not strictly increasing"
    assert_same_dataset(ds, expected)
    sources = [s["url"] for s in provenance_sources(repo)]
    assert sources == [p.as_uri() for p in archive]

    rows = Ledger(out / "ledger.sqlite").rows()
    assert len(rows) == n and {r["status"] for r in rows} == {"ok"}
    assert {r["snapshot"] for r in rows} == {manifest(out)["collections"][
        next(iter(manifest(out)["collections"]))]["snapshot"]}
    leftovers = [str(p) for p in out.rglob("*") if ".zarrport-" in p.name]
    assert leftovers == [], leftovers
    assert len(list((out / "references").rglob("*.json"))) == n


def _time_lengths(paths: list[Path]) -> list[int]:
    import netCDF4

    lengths = []
    for p in paths:
        with netCDF4.Dataset(p) as nc:
            lengths.append(len(nc.dimensions["time"]))
    return lengths
