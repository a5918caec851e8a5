"""zarrport batch: collections, ordering, the ledger's re-run rules, bad files, verify."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import icechunk
import netCDF4
import numpy as np
import pytest
import xarray as xr

import zarrport
from zarrport.errors import InvalidArgumentError, OutputNotWritableError, StorageError
from zarrport.pipeline import Ledger, run_batch
from zarrport.pipeline.batch import is_transient
from zarrport.pipeline.collections import CollectionPattern
from zarrport.testing.samples import cmip6_filename, write_cmip6_archive, write_cmip6_year
from zarrport.verify import verify_batch

CMIP6 = "{variable}_{freq}_{model}_{scenario}_{member}_{grid}_{years}.nc"
ZARRPORT = [str(Path(sys.executable).parent / "zarrport")]
SMALL = {"nlat": 4, "nlon": 8, "time_chunk": 73}


def _archive(directory: Path, years: range, **kw) -> list[Path]:
    return write_cmip6_archive(directory, years=years, **SMALL, **kw)


def _oracle(paths: list[Path], var: str) -> np.ndarray:
    """Values by netCDF4, files in time order."""
    parts = []
    for p in paths:
        with netCDF4.Dataset(p) as nc:
            parts.append(np.ma.filled(nc[var][:].astype("f8"), np.nan))
    return np.concatenate(parts)


def _repo(out: Path, cid: str) -> Path:
    return out / "collections" / f"{cid}.icechunk"


def _commits(repo: Path) -> list[str]:
    r = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    return [s.message for s in r.ancestry(branch="main")]


def test_collections_by_pattern_ordered_by_time_equal_netcdf4(tmp_path):
    src = tmp_path / "src"
    tas = _archive(src, range(2000, 2004))
    pr = _archive(src, range(2000, 2002), variable="pr")
    result = run_batch(str(src / "*.nc"), str(tmp_path / "out"), collection_by=CMIP6, workers=2)
    assert result.ok and result.counts["new"] == 6
    cids = sorted(result.collections)
    assert cids == ["pr_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn", "tas_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn"]
    assert result.collections[cids[1]]["fields"]["variable"] == "tas"
    assert len(result.workers) == 2  # two pool processes did the parsing
    for cid, paths, var in ((cids[0], pr, "pr"), (cids[1], tas, "tas")):
        ds = zarrport.open_dataset(str(_repo(tmp_path / "out", cid)))
        np.testing.assert_array_equal(ds[var].values.astype("f8"), _oracle(paths, var))
    report = verify_batch(str(tmp_path / "out"))
    assert report.ok, report.problems
    # each source's own kerchunk JSON opens and equals its file
    rows = Ledger(tmp_path / "out" / "ledger.sqlite").rows()
    assert {r["status"] for r in rows} == {"ok"}
    row = next(r for r in rows if r["url"].endswith(tas[1].name))
    one = zarrport.open_dataset(str(tmp_path / "out" / row["refs"]))
    np.testing.assert_array_equal(one["tas"].values.astype("f8"), _oracle([tas[1]], "tas"))
    assert row["size"] == tas[1].stat().st_size and row["attempts"] == 1
    manifest = json.loads((tmp_path / "out" / "zarrport-batch.json").read_text())
    assert manifest["pattern"] == CMIP6 and set(manifest["collections"]) == set(cids)


def test_files_ordered_by_decoded_time_not_by_name(tmp_path):
    src = tmp_path / "src"
    paths = _archive(tmp_path / "gen", range(2000, 2004))
    src.mkdir()
    # names sort in the reverse of time order
    named = []
    for i, p in enumerate(paths):
        target = src / f"{chr(ord('z') - i)}.nc"
        shutil.copy(p, target)
        named.append(target)
    result = run_batch(str(src / "*.nc"), str(tmp_path / "out"), workers=1)
    ds = zarrport.open_dataset(str(_repo(tmp_path / "out", "src")))
    assert list(dict.fromkeys(ds.time.dt.year.values)) == [2000, 2001, 2002, 2003]
    np.testing.assert_array_equal(ds.tas.values.astype("f8"), _oracle(paths, "tas"))
    assert result.collections["src"]["sources"] == 4


def test_rerun_skips_unchanged_picks_new_rereferences_changed_drops_removed(tmp_path):
    src = tmp_path / "src"
    paths = _archive(src, range(2000, 2003))
    out = tmp_path / "out"
    first = run_batch(str(src), str(out), workers=1)  # a prefix, not a glob
    repo = _repo(out, "src")
    assert first.counts["new"] == 3 and len(_commits(repo)) == 2  # initial + ours

    again = run_batch(str(src), str(out), workers=1)
    assert again.counts == {"new": 0, "changed": 0, "unchanged": 3, "failed": 0, "skipped": 0,
                            "missing": 0}
    assert len(_commits(repo)) == 2  # nothing changed: no commit

    new = _archive(src, range(2003, 2004))
    third = run_batch(str(src), str(out), workers=1)
    assert third.counts["new"] == 1 and third.counts["unchanged"] == 3
    msgs = _commits(repo)
    assert len(msgs) == 3 and new[0].name in msgs[0] and "added 1" in msgs[0]

    # rewrite one file with other values (same name): it is re-referenced and reads new values
    write_cmip6_year(paths[1], 2001, seed=99, **SMALL)
    fourth = run_batch(str(src), str(out), workers=1)
    assert fourth.counts["changed"] == 1
    ds = zarrport.open_dataset(str(repo))
    np.testing.assert_array_equal(ds.tas.values.astype("f8"), _oracle(paths + new, "tas"))
    assert "re-referenced 1 changed" in _commits(repo)[0]

    # remove one: reported missing and dropped from the collection, the rest still reads right
    paths[0].unlink()
    fifth = run_batch(str(src), str(out), workers=1)
    assert fifth.counts["missing"] == 1
    ds = zarrport.open_dataset(str(repo))
    np.testing.assert_array_equal(ds.tas.values.astype("f8"), _oracle(paths[1:] + new, "tas"))
    assert "removed 1" in _commits(repo)[0]
    # older commits stay readable: the first snapshot still has the first three files
    r = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    first_snap = list(r.ancestry(branch="main"))[-2].id
    old = xr.open_zarr(r.readonly_session(snapshot_id=first_snap).store, consolidated=False)
    assert old.sizes["time"] == 3 * 365


def _bad_files(directory: Path, good: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    bad = {
        "empty": directory / "empty.nc",
        "truncated": directory / "truncated.nc",
        "not_netcdf": directory / "notes.nc",
        "denied": directory / "denied.nc",
    }
    bad["empty"].write_bytes(b"")
    bad["truncated"].write_bytes(good.read_bytes()[:20_000])
    bad["not_netcdf"].write_text("station,temp\n1,2\n")
    shutil.copy(good, bad["denied"])
    os.chmod(bad["denied"], 0)
    return bad


def _unprivileged() -> list[str]:
    """A command prefix under which file permissions apply (root ignores them)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop root's file-permission override"
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


def test_bad_files_listed_with_reasons_good_ones_referenced(tmp_path):
    src = tmp_path / "src"
    good = _archive(src, range(2000, 2003))
    bad = _bad_files(src, good[0])
    out = tmp_path / "out"
    proc = subprocess.run([*_unprivileged(), *ZARRPORT, "batch", str(src / "*.nc"), "-o",
                           str(out), "--workers", "2", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "zarrport: error: 4 failure(s); listed above (--allow-failures to accept)"]
    summary = json.loads(proc.stdout)
    reasons = {Path(f["url"]).name: (f["code"], f["reason"]) for f in summary["failures"]}
    assert reasons["empty.nc"] == ("unrecognized_format", "the file is empty")
    assert reasons["truncated.nc"][0] == "corrupt_source"
    assert reasons["notes.nc"][0] == "unrecognized_format"
    assert reasons["denied.nc"][0] == "permission_denied"
    assert "permission denied" in reasons["denied.nc"][1]
    assert summary["counts"]["new"] == 3 and summary["counts"]["failed"] == 4
    ds = zarrport.open_dataset(str(_repo(out, "src")))
    np.testing.assert_array_equal(ds.tas.values.astype("f8"), _oracle(good, "tas"))

    # bad in themselves: not retried on the next run (attempts stay), still reported
    rows = {Path(r["url"]).name: r for r in Ledger(out / "ledger.sqlite").rows()}
    again = run_batch(str(src / "*.nc"), str(out), workers=1)
    assert again.counts["failed"] == 4 and again.counts["unchanged"] == 3
    rows2 = {Path(r["url"]).name: r for r in Ledger(out / "ledger.sqlite").rows()}
    assert rows2["empty.nc"]["attempts"] == rows["empty.nc"]["attempts"] == 1
    assert all(f.get("retried") is False for f in again.failures)
    # ... until they change: a repaired file is referenced
    _archive(tmp_path / "fix", range(2003, 2004))
    shutil.copy(next((tmp_path / "fix").glob("*.nc")), bad["empty"])
    third = run_batch(str(src / "*.nc"), str(out), workers=1)
    assert third.counts["changed"] == 1 and third.counts["failed"] == 3

    # --allow-failures: exit 0, failures still listed
    proc = subprocess.run([*ZARRPORT, "batch", str(src / "*.nc"), "-o", str(out),
                           "--allow-failures"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "failures (3):" in proc.stdout and "notes.nc: [unrecognized_format]" in proc.stdout


def test_transient_errors_classified():
    from zarrport.errors import CorruptSourceError

    assert is_transient(ConnectionResetError(104, "Connection reset by peer"))
    assert is_transient(TimeoutError("read timed out"))
    assert is_transient(StorageError("storage error on s3://b/k: Generic S3 error: "
                                     "503 Service Unavailable SlowDown"))
    wrapped = StorageError("s3://b/k: reading failed")
    wrapped.__cause__ = OSError("Server disconnected")
    assert is_transient(wrapped)
    assert not is_transient(CorruptSourceError("damaged"))
    assert not is_transient(PermissionError(13, "Permission denied"))
    assert not is_transient(StorageError("storage error: 403 Forbidden AccessDenied"))
    assert not is_transient(FileNotFoundError("gone"))


def test_collection_pattern():
    p = CollectionPattern.compile(CMIP6)
    fields = p.match("tas_day_CESM2_ssp585_r1i1p1f1_gn_20150101-20241231.nc")
    assert fields == {"variable": "tas", "freq": "day", "model": "CESM2", "scenario": "ssp585",
                      "member": "r1i1p1f1", "grid": "gn", "years": "20150101-20241231"}
    assert p.collection_id(fields) == "tas_day_CESM2_ssp585_r1i1p1f1_gn"
    assert p.match("sub/dir/tas_day_CESM2_ssp585_r1i1p1f1_gn_2015-2024.nc") is not None
    assert p.match("README.nc") is None
    q = CollectionPattern.compile("{model}/{variable}_{_version}.nc")
    assert q.collection_id(q.match("CESM2/tas_v2.nc")) == "CESM2_tas"
    with pytest.raises(InvalidArgumentError, match="no {field} placeholders"):
        CollectionPattern.compile("tas.nc")
    with pytest.raises(InvalidArgumentError, match="repeats"):
        CollectionPattern.compile("{a}_{a}.nc")


def test_unmatched_names_skipped_and_listed(tmp_path):
    src = tmp_path / "src"
    _archive(src, range(2000, 2002))
    (src / "README.nc").write_bytes(b"not data")
    result = run_batch(str(src / "*.nc"), str(tmp_path / "out"), collection_by=CMIP6,
                       workers=1)
    assert result.ok and result.counts["skipped"] == 1
    assert result.skipped[0]["url"].endswith("README.nc")


def test_output_guards(tmp_path):
    src = tmp_path / "src"
    _archive(src, range(2000, 2002))
    out = tmp_path / "out"
    run_batch(str(src / "*.nc"), str(out), collection_by=CMIP6, workers=1)
    with pytest.raises(InvalidArgumentError, match="was made with --collection-by"):
        run_batch(str(src / "*.nc"), str(out), collection_by="{variable}_{_rest}.nc")
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(OutputNotWritableError, match="not a zarrport batch output"):
        run_batch(str(src / "*.nc"), str(other))
    with pytest.raises(InvalidArgumentError, match="pass --ledger"):
        run_batch(str(src / "*.nc"), "s3://bucket/refs")
    # a second run while one holds the lock is refused, not interleaved
    import fcntl

    with open(out / "ledger.sqlite.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(OutputNotWritableError, match="another zarrport batch"):
            run_batch(str(src / "*.nc"), str(out))
    # CLI: one line, exit code of the error
    proc = subprocess.run([*ZARRPORT, "batch", str(src / "*.nc"), "-o", str(other)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 6 and len(proc.stderr.strip().splitlines()) == 1
    # a damaged manifest: one line naming it, exit 4, the output left as it was
    (out / "zarrport-batch.json").write_text("{not json")
    proc = subprocess.run([*ZARRPORT, "batch", str(src / "*.nc"), "-o", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.count("\n") == 1 and "damaged batch manifest" in proc.stderr
    assert (out / "zarrport-batch.json").read_text() == "{not json"
    proc = subprocess.run([*ZARRPORT, "batch", str(tmp_path / "none" / "*.nc"), "-o",
                           str(tmp_path / "o2")], capture_output=True, text=True, timeout=60)
    # a glob that matches nothing is an error (issue 10), and no output is created
    assert proc.returncode == 3 and "no file matches" in proc.stderr
    assert not (tmp_path / "o2").exists()


def test_incompatible_file_fails_its_collection_only(tmp_path):
    src = tmp_path / "src"
    _archive(src, range(2000, 2002))
    # same collection name, another grid: cannot be concatenated
    write_cmip6_year(src / cmip6_filename(first_year=2002), 2002, nlat=6, nlon=8,
                     time_chunk=73)
    _archive(src, range(2000, 2002), variable="pr")
    result = run_batch(str(src / "*.nc"), str(tmp_path / "out"), collection_by=CMIP6,
                       workers=1)
    assert not result.ok
    tas = result.collections["tas_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn"]
    assert "lat" in tas["error"] or "shape" in tas["error"] or "incompatible" in tas["error"]
    assert not _repo(tmp_path / "out", "tas_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn").exists()
    assert "error" not in result.collections["pr_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn"]


def test_stale_temporaries_of_a_killed_run_removed(tmp_path):
    src = tmp_path / "src"
    _archive(src, range(2000, 2002))
    out = tmp_path / "out"
    run_batch(str(src / "*.nc"), str(out), workers=1)
    leftover = out / "collections" / ".src.icechunk.zarrport-deadbeef"
    leftover.mkdir()
    (leftover / "junk").write_text("x")
    run_batch(str(src / "*.nc"), str(out), workers=1)
    assert not leftover.exists()


def test_ledger_schema_readable_with_sqlite(tmp_path):
    src = tmp_path / "src"
    _archive(src, range(2000, 2001))
    run_batch(str(src / "*.nc"), str(tmp_path / "out"), workers=1)
    with sqlite3.connect(tmp_path / "out" / "ledger.sqlite") as db:
        (url, status, refs, snapshot), = db.execute(
            "SELECT url, status, refs, snapshot FROM sources")
    assert url.startswith("file://") and status == "ok" and snapshot
    assert (tmp_path / "out" / refs).is_file()


def test_verify_batch_reports_deleted_truncated_rewritten_by_name(tmp_path):
    src = tmp_path / "src"
    paths = _archive(src, range(2000, 2004))
    out = tmp_path / "out"
    run_batch(str(src / "*.nc"), str(out), workers=1)
    proc = subprocess.run([*ZARRPORT, "verify", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    paths[0].unlink()
    paths[1].write_bytes(paths[1].read_bytes()[:30_000])
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, rewritten
    os.utime(paths[2], (1e9, 1e9))
    proc = subprocess.run([*ZARRPORT, "verify", str(out), "--json"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 7
    problems = {(p["kind"], Path(p["item"]).name) for p in json.loads(proc.stdout)["problems"]}
    assert problems == {("missing", paths[0].name), ("truncated", paths[1].name),
                        ("rewritten", paths[2].name)}


def test_unreachable_scheduler_and_bad_options_are_one_line_errors(tmp_path):
    import socket

    src = tmp_path / "src"
    _archive(src, range(2000, 2004))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cases = [
        (["--scheduler", f"tcp://127.0.0.1:{port}"], 2, "cannot reach the Dask scheduler"),
        (["--workers", "0"], 2, "--workers must be >= 1"),
        (["--collection-by", "plain.nc"], 2, "no {field} placeholders"),
        (["--retries", "-1"], 2, "--retries"),
    ]
    for i, (args, code, text) in enumerate(cases):
        out = tmp_path / f"out{i}"
        proc = subprocess.run([*ZARRPORT, "batch", str(src / "*.nc"), "-o", str(out), *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == code, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and text in proc.stderr, proc.stderr
        assert not out.exists()  # refused before anything was written
