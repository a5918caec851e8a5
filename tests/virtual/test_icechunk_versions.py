"""Icechunk 2 everywhere: zarrport creates Icechunk 2 repositories, reads an Icechunk 1
repository written by its previous release (tests/fixtures/icechunk1, made by build.py
there with zarrport 0.1.0 and icechunk 1.1.21) as it is, refuses to write to it, and
`zarrport migrate` upgrades it in place with Icechunk's own migration."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import icechunk
import netCDF4
import numpy as np
import pytest

import zarrport
from zarrport.errors import NeedsMigrationError
from zarrport.testing.samples import write_cmip6_year
from zarrport.virtual.api import build, provenance
from zarrport.virtual.icechunk import spec_version, update_icechunk

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "icechunk1"
BUCKET = "zarrport-icechunk1"  # the bucket the fixture's virtual chunks live in

pytestmark = pytest.mark.s3


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zarrport", *args], capture_output=True,
                          text=True, timeout=300)


def expected(paths: list[Path]) -> np.ndarray:
    """The sources read by netCDF4, concatenated along time, missing values as NaN."""
    parts = []
    for p in paths:
        with netCDF4.Dataset(p) as nc:
            parts.append(np.ma.filled(nc["tas"][:].astype(np.float64), np.nan))
    return np.concatenate(parts)


@pytest.fixture
def icechunk1(s3_server, tmp_path):
    """A copy of the Icechunk 1 repository, its sources served by this test's moto."""
    s3_server.create_bucket(BUCKET)
    sources = sorted((FIXTURE / "sources").glob("*.nc"))
    for f in sources:
        s3_server.put_object(BUCKET, f"archive/{f.name}", f.read_bytes())
    repo = tmp_path / "tas.icechunk"
    shutil.copytree(FIXTURE / "tas.icechunk", repo)
    return repo, sources, s3_server.storage_options


def options_args(options: dict) -> list[str]:
    return [a for k, v in options.items()
            for a in ("--storage-option", f"{k}={json.dumps(v) if isinstance(v, dict) else v}")]


def test_new_repositories_are_icechunk_2(tmp_path):
    src = write_cmip6_year(tmp_path / "tas_2015.nc", 2015, nlat=4, nlon=8)
    out = tmp_path / "tas.icechunk"
    zarrport.virtualize([str(src)], str(out))
    assert spec_version(str(out)) == 2
    got = zarrport.open_dataset(str(out))["tas"].values.astype(np.float64)
    np.testing.assert_array_equal(got, expected([src]))


def test_icechunk_1_opens_read_only(icechunk1):
    repo, sources, options = icechunk1
    assert spec_version(str(repo)) == 1
    info = run("info", str(repo), *options_args(options))
    assert info.returncode == 0, info.stderr
    assert "Icechunk 1: read-only for zarrport; `zarrport migrate` upgrades it" in info.stdout
    described = json.loads(run("info", str(repo), "--json", *options_args(options)).stdout)
    assert described["icechunk_spec_version"] == 1 and described["dims"]["time"] == 3 * 365
    verified = run("verify", str(repo), *options_args(options))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    ds = zarrport.open_dataset(str(repo), storage_options=options)
    # three years, the second commit; the chunks straddling two files are native chunks
    np.testing.assert_array_equal(ds["tas"].values.astype(np.float64), expected(sources))
    assert ds["time"].size == 3 * 365


def test_writing_to_icechunk_1_is_refused_untouched(icechunk1):
    repo, sources, options = icechunk1
    before = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*"))
    urls = [f"s3://{BUCKET}/archive/{p.name}" for p in sources[:2]]
    vds = build(urls, concat_dim="time", storage_options=options)
    with pytest.raises(NeedsMigrationError, match="zarrport migrate"):
        update_icechunk(vds, str(repo), storage_options=options, message="x",
                        provenance=provenance(vds, "time", None))
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*")) == before


def test_migrate_upgrades_in_place_keeping_history(icechunk1):
    repo, sources, options = icechunk1
    dry = run("migrate", str(repo), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert (report["spec_version_before"], report["spec_version_after"]) == (1, 1)
    assert report["dry_run"] and not report["migrated"]
    assert spec_version(str(repo)) == 1

    done = run("migrate", str(repo), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["spec_version_before"], report["spec_version_after"]) == (1, 2)
    assert report["migrated"] and report["tags"] == ["two-years"]
    assert report["branches"] == ["main"] and report["snapshots"] == 3
    assert spec_version(str(repo)) == 2

    # the same values from the migrated tip, and the tagged first commit still there
    ds = zarrport.open_dataset(str(repo), storage_options=options)
    np.testing.assert_array_equal(ds["tas"].values.astype(np.float64), expected(sources))
    r = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    assert [s.message for s in r.ancestry(branch="main")][0] == "three years"
    import zarr

    first = zarr.open_group(r.readonly_session(tag="two-years").store, mode="r")
    assert first["tas"].shape[0] == 2 * 365

    # and it is writable now
    vds = build([f"s3://{BUCKET}/archive/{p.name}" for p in sources], concat_dim="time",
                storage_options=options)
    update_icechunk(vds, str(repo), storage_options=options, message="after migration",
                    provenance=provenance(vds, "time", None))

    again = run("migrate", str(repo))
    assert again.returncode == 0, again.stderr
    assert "already Icechunk 2" in again.stdout


def test_migrate_bad_input_is_one_line(tmp_path):
    proc = run("migrate", str(tmp_path / "nothing.icechunk"))
    assert proc.returncode == 3
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("zarrport: error: "), proc.stderr
    assert "no Icechunk repository" in lines[0]


def test_batch_output_in_icechunk_1_is_refused_then_resumed_after_migrate(tmp_path,
                                                                          monkeypatch):
    """A batch output whose collection is an Icechunk 1 repository (written here by
    icechunk 2 in spec version 1, as zarrport 0.1 left them): the next run that would
    commit stops with one line naming `zarrport migrate`; after it, a rerun commits the
    file the refused run had referenced, and the collection reads back right."""
    from zarrport.pipeline.batch import run_batch
    from zarrport.virtual import icechunk as writer

    data = tmp_path / "data"
    monkeypatch.setattr(writer, "SPEC_VERSION", 1)
    sources = [write_cmip6_year(data / f"tas_{y}.nc", y, nlat=4, nlon=8) for y in (2015, 2016)]
    out = tmp_path / "out"
    run_batch(str(data / "*.nc"), str(out), workers=1)
    monkeypatch.undo()
    (repo,) = (out / "collections").glob("*.icechunk")
    assert spec_version(str(repo)) == 1

    sources.append(write_cmip6_year(data / "tas_2017.nc", 2017, nlat=4, nlon=8))
    proc = run("batch", str(data / "*.nc"), "-o", str(out))
    assert proc.returncode == 10, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "zarrport migrate" in lines[0], proc.stderr
    assert zarrport.open_dataset(str(repo))["time"].size == 2 * 365  # untouched

    assert run("migrate", str(repo)).returncode == 0
    again = run("batch", str(data / "*.nc"), "-o", str(out), "--json")
    assert again.returncode == 0, again.stderr
    np.testing.assert_array_equal(
        zarrport.open_dataset(str(repo))["tas"].values.astype(np.float64), expected(sources))
    assert run("verify", str(out)).returncode == 0
