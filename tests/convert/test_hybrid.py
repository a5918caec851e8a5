"""Hybrid stores: ``zarrport convert SOURCE --into REPO.icechunk`` materializes variables or
time ranges of a virtual Icechunk repository as native chunks, in one commit.

Oracles: the NetCDF files read by netCDF4 (values), Icechunk's own ``Session.chunk_type``
(which chunks are native / virtual), the repository's files (unchanged after a failure)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import icechunk
import netCDF4
import numpy as np
import pytest

import zarrport
from test_cli import assert_clean_failure, run
from zarrport.convert.hybrid import MATERIALIZED_KEY, convert_into
from zarrport.errors import InvalidArgumentError, SourceNotFoundError, StorageError
from zarrport.testing.samples import write_cmip6_archive
from zarrport.virtual.icechunk import PROVENANCE_KEY

YEARS = range(2015, 2017)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> dict[str, list[Path]]:
    """Two yearly files, daily chunks (one step each) and 5-day chunks."""
    base = tmp_path_factory.mktemp("hybrid-archive")
    return {
        "daily": write_cmip6_archive(base / "daily", years=YEARS, nlat=16, nlon=32),
        "fiveday": write_cmip6_archive(base / "fiveday", years=YEARS, nlat=8, nlon=16,
                                       time_chunk=5),
    }


def _virtual(tmp_path: Path, files: list[Path]) -> tuple[Path, list[Path]]:
    """A private copy of the files (tests move them) and a repository referencing them."""
    src = tmp_path / "src"
    src.mkdir()
    copies = [Path(shutil.copy2(f, src / f.name)) for f in files]
    repo = tmp_path / "tas.icechunk"
    zarrport.virtualize([str(p) for p in copies], str(repo), concat_dim="time")
    return repo, copies


@pytest.fixture
def daily(tmp_path, archive) -> tuple[Path, list[Path]]:
    return _virtual(tmp_path, archive["daily"])


def oracle(files: list[Path], var: str = "tas", raw: bool = False) -> np.ndarray:
    parts = []
    for f in files:
        with netCDF4.Dataset(f) as nc:
            v = nc.variables[var]
            if raw:
                v.set_auto_maskandscale(False)
                parts.append(np.asarray(v[:]))
            else:
                parts.append(np.ma.filled(v[:].astype("f8"), np.nan))
    return np.concatenate(parts)


def kinds(repo: Path, var: str = "tas") -> np.ndarray:
    """Icechunk's chunk type of every chunk along time (the other axes are one chunk)."""
    r = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    s = r.readonly_session(branch="main")
    import zarr

    arr = zarr.open_array(s.store, path=var, mode="r")
    n = -(-arr.shape[0] // arr.chunks[0])
    rest = [0] * (arr.ndim - 1)
    return np.array([_kind(s.chunk_type(f"/{var}", [i, *rest])) for i in range(n)])


def _kind(t) -> str:
    ct = icechunk.ChunkType
    names = {"Native": ct.native, "Virtual": ct.virtual, "Inline": ct.inline}
    return next((name for name, v in names.items() if t == v), "None")


def tree(path: Path) -> dict[str, str]:
    """Every file of a directory with its content hash."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def tip(repo: Path) -> str:
    r = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    return r.lookup_branch("main")


def values(repo: Path, **kw) -> np.ndarray:
    ds = zarrport.open_dataset(str(repo), **kw)
    return np.asarray(ds.tas.values, dtype="f8")


# --------------------------------------------------------------------------- success


def test_materialized_year_reads_the_same_and_no_longer_needs_its_file(daily):
    repo, files = daily
    want = oracle(files)
    before = values(repo)
    assert np.array_equal(before, want, equal_nan=True)
    parent = tip(repo)
    proc = run("convert", str(repo), "--into", str(repo), "--select",
               "time=2015-01-01:2015-12-31", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    with netCDF4.Dataset(files[0]) as nc:
        n_2015 = nc.dimensions["time"].size // nc.variables["tas"].chunking()[0]
    assert summary["chunks"] == n_2015 == 365
    assert summary["parent"] == parent and summary["snapshot"] == tip(repo) != parent

    k = kinds(repo)
    assert set(k[:365]) == {"Native"} and set(k[365:]) == {"Virtual"}
    assert np.array_equal(values(repo), want, equal_nan=True)
    assert np.array_equal(values(repo, engine="zarr"), want, equal_nan=True)

    # the 2015 file goes away: 2015 is read from the native chunks, 2016 still from its file
    files[0].rename(files[0].with_suffix(".moved"))
    ds = zarrport.open_dataset(str(repo))
    assert np.array_equal(np.asarray(ds.tas[:365].values, "f8"), want[:365], equal_nan=True)
    assert np.array_equal(np.asarray(ds.tas[365:].values, "f8"), want[365:], equal_nan=True)
    # ... the fast reader still trusts the unchanged 2016 file (provenance carried forward)
    # and reads the native chunks through Icechunk
    from zarrport import icechunk_read

    data = ds.tas.variable._data
    while not isinstance(data, icechunk_read.IcechunkArrayWrapper):
        data = data.array  # xarray's lazy wrappers around the reader's
    reader = data._reader
    assert set(reader.how[:365]) == {icechunk_read._STORE}
    assert set(reader.how[365:]) == {icechunk_read._LOCAL}
    # and the parent commit still reads 2016, but not the moved 2015
    old = zarrport.open_dataset(str(repo), snapshot=parent)
    assert np.array_equal(np.asarray(old.tas[365:].values, "f8"), want[365:], equal_nan=True)
    with pytest.raises(Exception, match="not found|No such file"):
        old.tas[:3].values  # noqa: B018


def test_commit_shows_in_history_and_info_with_its_record(daily):
    repo, _ = daily
    summary = convert_into(str(repo), str(repo), variables=["tas"],
                           select=["time=2016-03-01:2016-03-31"])
    hist = json.loads(run("history", str(repo), "--json").stdout)
    head = hist["commits"][0]
    assert head["id"] == summary["snapshot"]
    assert head["message"].startswith("zarrport convert --into: materialized tas time "
                                      "2016-03-01 12:00:00..2016-03-31 12:00:00 (31 chunks)")
    info = json.loads(run("info", str(repo), "--json").stdout)
    assert info["commit"]["id"] == summary["snapshot"]
    meta = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo))) \
        .lookup_snapshot(summary["snapshot"]).metadata
    rec = meta[MATERIALIZED_KEY]["variables"]["tas"]
    assert rec["chunks"] == 31 and rec["region"]["time"] == [365 + 59, 365 + 90]
    assert meta[PROVENANCE_KEY]["sources"]  # carried forward from the virtualize commit


def test_running_it_again_commits_nothing(daily):
    repo, files = daily
    first = convert_into(str(repo), str(repo), select=["time=2015-06-01:2015-06-10"])
    assert first["chunks"] == 10
    head = tip(repo)
    again = convert_into(str(repo), str(repo), select=["time=2015-06-01:2015-06-10"])
    assert again["chunks"] == 0 and again["snapshot"] is None and tip(repo) == head
    # a wider range writes only the chunks still virtual
    wider = convert_into(str(repo), str(repo), select=["time=2015-05-31:2015-06-11"])
    assert wider["chunks"] == 2 and wider["variables"]["tas"]["already_native"] == 10
    assert np.array_equal(values(repo), oracle(files), equal_nan=True)


def test_a_whole_variable_with_validation(daily):
    repo, files = daily
    want = oracle(files)
    s = convert_into(str(repo), str(repo), variables=["tas"], validate=True, workers=2)
    assert s["validated"] and s["chunks"] == 730
    assert set(kinds(repo)) == {"Native"}
    for f in files:
        f.unlink()
    assert np.array_equal(values(repo), want, equal_nan=True)


def test_one_netcdf_file_as_source_fills_its_own_range(daily):
    repo, files = daily
    s = convert_into(str(files[1]), str(repo), variables=["tas"], validate=True)
    assert s["variables"]["tas"]["region"]["time"] == [365, 730]
    k = kinds(repo)
    assert set(k[:365]) == {"Virtual"} and set(k[365:]) == {"Native"}
    assert np.array_equal(values(repo), oracle(files), equal_nan=True)


def test_a_selection_that_cuts_chunks_is_widened_with_a_warning(tmp_path, archive):
    repo, files = _virtual(tmp_path, archive["fiveday"])
    assert set(kinds(repo)) == {"Virtual"}
    warnings_seen: list[str] = []
    s = convert_into(str(repo), str(repo), select=["time=2015-01-03:2015-01-12"],
                     warn=warnings_seen.append)
    assert s["variables"]["tas"]["region"]["time"] == [0, 15]
    assert len(warnings_seen) == 1 and "time[0:15]" in warnings_seen[0]
    k = kinds(repo)
    assert list(k[:3]) == ["Native"] * 3 and set(k[3:]) == {"Virtual"}
    assert np.array_equal(values(repo), oracle(files), equal_nan=True)
    proc = run("convert", str(repo), "--into", str(repo), "--strict",
               "--select", "time=2015-02-05:2015-02-25")
    assert_clean_failure(proc, "cuts tas's chunks of 5", "--strict")


def test_packed_int16_stays_int16(tmp_path):
    path = tmp_path / "src" / "packed.nc"
    path.parent.mkdir()
    rng = np.random.default_rng(3)
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", 400)  # 80 KB: referenced, not inlined
        nc.createDimension("x", 100)
        t = nc.createVariable("time", "f8", ("time",))
        t.units, t.calendar = "days since 2000-01-01", "standard"
        t[:] = np.arange(400)
        v = nc.createVariable("ps", "i2", ("time", "x"), chunksizes=(20, 100), zlib=True,
                              shuffle=True, fill_value=np.int16(-32767))
        v.scale_factor, v.add_offset = 0.01, 1000.0
        v.set_auto_maskandscale(False)
        raw = rng.integers(-30000, 30000, size=(400, 100)).astype("i2")
        raw[0, :5] = -32767
        v[:] = raw
    repo = tmp_path / "ps.icechunk"
    zarrport.virtualize([str(path)], str(repo))
    decoded_before = np.asarray(zarrport.open_dataset(str(repo)).ps.values)
    s = convert_into(str(repo), str(repo), select=["time=2000-01-01:2000-02-29"],
                     validate=True)
    assert s["chunks"] == 3
    import zarr

    from zarrport.open import open_icechunk_store

    r = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    arr = zarr.open_array(open_icechunk_store(repo.as_uri()), path="ps", mode="r")
    assert arr.dtype == np.dtype("i2")
    assert np.array_equal(arr[:], raw)
    assert [_kind(r.readonly_session(branch="main").chunk_type("/ps", [i, 0]))
            for i in range(20)] == ["Native"] * 3 + ["Virtual"] * 17
    after = np.asarray(zarrport.open_dataset(str(repo)).ps.values)
    assert np.array_equal(after, decoded_before, equal_nan=True)
    assert np.isnan(after[0, :5]).all()


def test_each_block_fits_the_memory_budget(daily):
    from zarrport.convert.plan import WORKER_BASELINE

    repo, files = daily
    seen: list[int] = []
    s = convert_into(str(repo), str(repo), select=["time=2015-01-01:2015-02-28"],
                     max_memory=WORKER_BASELINE + 64 * 2**10, workers=1,
                     progress=lambda done, total, r: seen.append(r["nbytes"]))
    chunk = 16 * 32 * 4
    assert s["chunks"] == 59 and len(seen) == s["jobs"] > 1
    assert max(seen) <= 64 * 2**10 and max(seen) % chunk == 0
    assert np.array_equal(values(repo), oracle(files), equal_nan=True)


# --------------------------------------------------------------------------- failures


def test_a_fault_midway_commits_nothing(daily, monkeypatch):
    from zarrport.convert import hybrid
    from zarrport.convert.plan import WORKER_BASELINE

    repo, files = daily
    head = tip(repo)
    real = hybrid._write_block
    calls = []

    def faulty(store, v, job, data):
        calls.append(job)
        if len(calls) == 3:
            raise StorageError("disk on fire")
        return real(store, v, job, data)

    monkeypatch.setattr(hybrid, "_write_block", faulty)
    with pytest.raises(StorageError, match="disk on fire"):
        convert_into(str(repo), str(repo), variables=["tas"], workers=1,
                     max_memory=WORKER_BASELINE + 64 * 2**10)  # many blocks
    assert len(calls) == 3 and tip(repo) == head
    assert set(kinds(repo)) == {"Virtual"}
    assert np.array_equal(values(repo), oracle(files), equal_nan=True)


def test_a_missing_source_file_midway_commits_nothing(daily):
    repo, files = daily
    head = tip(repo)
    want = oracle(files)
    moved = files[1].rename(files[1].with_suffix(".moved"))
    proc = run("convert", str(repo), "--into", str(repo), "--workers", "1")
    assert_clean_failure(proc, "cannot read tas[", "nothing was committed")
    assert tip(repo) == head and set(kinds(repo)) == {"Virtual"}
    moved.rename(files[1])
    assert np.array_equal(values(repo), want, equal_nan=True)


@pytest.mark.parametrize("args,needles", [
    (["--into", "{nc}"], ["not an Icechunk repository"]),
    (["--into", "{zarr}"], ["not an Icechunk repository"]),
    (["--into", "{repo}", "--variables", "pr"], ["no variable 'pr'", "tas"]),
    (["--into", "{repo}", "--select", "time=2030-01-01:2040-01-01"], ["selects nothing"]),
    (["--into", "{repo}", "--select", "depth=0:3"], ["no dimension 'depth'"]),
    (["--into", "{repo}", "-o", "{out}"], ["not both"]),
    ([], ["-o/--output", "--into"]),
    (["--into", "{repo}", "--codec", "gzip"], ["--codec", "chunking and codecs are kept"]),
    (["--into", "{repo}", "--shards"], ["--shards", "chunking and codecs are kept"]),
    (["--into", "{repo}", "--pattern", "spatial"], ["--pattern", "codecs are kept"]),
    (["--into", "{repo}", "--plan", "{nc}"], ["--plan", "codecs are kept"]),
    (["--into", "{repo}", "--branch", "dev"], ["no branch 'dev'", "main"]),
])
def test_bad_input_fails_in_one_line_and_changes_nothing(daily, tmp_path, args, needles):
    repo, files = daily
    zdir = tmp_path / "plain.zarr"
    import zarr

    zarr.open_group(str(zdir), mode="w", zarr_format=3)
    fill = {"nc": str(files[0]), "zarr": str(zdir), "repo": str(repo),
            "out": str(tmp_path / "out.zarr")}
    before = tree(repo)
    proc = run("convert", str(repo), *[a.format(**fill) for a in args])
    assert_clean_failure(proc, *needles)
    assert tree(repo) == before
    assert not (tmp_path / "out.zarr").exists()


def test_api_errors_are_zarrport_errors(daily, tmp_path):
    repo, files = daily
    with pytest.raises(SourceNotFoundError):
        convert_into(str(repo), str(tmp_path / "nope.icechunk"))
    with pytest.raises(InvalidArgumentError, match="max-memory"):
        convert_into(str(repo), str(repo), max_memory="100MB")
    # a NetCDF source that does not cover the selection
    with pytest.raises(InvalidArgumentError, match="reaches outside"):
        convert_into(str(files[0]), str(repo), variables=["tas"],
                     select=["time=2016-01-01:2016-01-31"])


def test_a_commit_landing_meanwhile_refuses_ours(daily):
    repo, files = daily
    other: list[str] = []

    def someone_else_commits(done, total, r):
        if other:
            return
        r2 = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
        s = r2.writable_session("main")
        import zarr

        zarr.open_group(s.store, mode="r+").attrs["note"] = "meanwhile"
        other.append(s.commit("someone else"))

    with pytest.raises(StorageError, match="moved on.*nothing was committed"):
        convert_into(str(repo), str(repo), select=["time=2015-01-01:2015-01-31"],
                     progress=someone_else_commits)
    assert tip(repo) == other[0]
    assert set(kinds(repo)) == {"Virtual"}


def test_a_chunk_larger_than_the_budget_is_refused(daily):
    from zarrport.convert.plan import WORKER_BASELINE

    repo, _ = daily
    head = tip(repo)
    with pytest.raises(InvalidArgumentError, match="one chunk needs"):
        convert_into(str(repo), str(repo), max_memory=WORKER_BASELINE + 2**10, workers=1)
    assert tip(repo) == head


def test_a_bbox_inside_whole_field_chunks_materializes_those_fields(daily):
    repo, files = daily
    seen: list[str] = []
    s = convert_into(str(repo), str(repo), bbox="0,0,90,45",
                     select=["time=2016-12-30:2016-12-31"], warn=seen.append)
    assert s["chunks"] == 2
    assert s["variables"]["tas"]["region"] == {"time": [728, 730], "lat": [0, 16],
                                               "lon": [0, 32]}
    assert len(seen) == 2  # the box cuts the (whole-field) chunks along lat and lon
    assert "lat[0:16]" in seen[0] + seen[1] and "lon[0:32]" in seen[0] + seen[1]
    assert list(kinds(repo)[-3:]) == ["Virtual", "Native", "Native"]
    assert np.array_equal(values(repo), oracle(files), equal_nan=True)
