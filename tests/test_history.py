"""Versions and batch outputs: open_dataset at a branch / tag / snapshot / time, opening a
batch output's collections, ``zarrport history`` and ``zarrport info`` on both.

The repositories are real: a batch output grown by three runs (one commit each), checked at
every version against netCDF4's reading of the files it held then.
"""

from __future__ import annotations

import datetime as dt
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
from zarrport.errors import InvalidArgumentError, SourceNotFoundError
from zarrport.history import Version, commits, history, resolve
from zarrport.open import detect, open_dataset
from zarrport.pipeline import run_batch
from zarrport.testing.samples import cmip6_filename, write_cmip6_archive, write_cmip6_year

CMIP6 = "{variable}_{freq}_{model}_{scenario}_{member}_{grid}_{years}.nc"
SMALL = {"nlat": 4, "nlon": 8, "time_chunk": 73}
YEARS = (2000, 2001, 2002)


def _oracle(paths: list[Path], var: str = "tas") -> np.ndarray:
    parts = []
    for p in paths:
        with netCDF4.Dataset(p) as nc:
            parts.append(np.ma.filled(nc[var][:].astype("f8"), np.nan))
    return np.concatenate(parts)


def _values(url: str, var: str = "tas", **kw) -> np.ndarray:
    with open_dataset(url, **kw) as ds:
        return ds[var].values.astype("f8")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zarrport", *args], capture_output=True,
                          text=True, timeout=300)


def assert_clean_failure(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("zarrport: error: ") and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """A batch output of one collection, grown by three runs (one year each), plus a tag
    on the first commit and a branch ``first`` at it. Returns (output, repo, files per
    version oldest first, commits newest first)."""
    base = tmp_path_factory.mktemp("grown")
    src, out = base / "src", base / "out"
    files: list[list[Path]] = []
    for year in YEARS:
        write_cmip6_archive(src, years=[year], **SMALL)
        result = run_batch(str(src / "*.nc"), str(out), workers=1)
        assert result.ok, result.failures
        files.append(sorted(src.glob("*.nc")))
    (cid,) = json.loads((out / "zarrport-batch.json").read_text())["collections"]
    repo = out / "collections" / f"{cid}.icechunk"
    ic = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    history_ = list(ic.ancestry(branch="main"))
    assert len(history_) == 4  # creation + one commit per run
    ic.create_tag("first-year", history_[2].id)
    ic.create_branch("first", history_[2].id)
    return out, repo, files, commits(str(repo))


# --------------------------------------------------------------------------- versions


def test_history_newest_first_with_messages_and_tags(grown):
    _out, repo, _files, listed = grown
    assert [c.message for c in listed][-1] == "Repository initialized"
    assert "added 1 (tas_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn_20020101-20021231.nc)" \
        in listed[0].message
    assert "added 1" in listed[1].message and "2001" in listed[1].message
    times = [c.written_at for c in listed]
    assert times == sorted(times, reverse=True)
    assert [c.tags for c in listed] == [[], [], ["first-year"], []]
    assert [c.parent_id for c in listed[:-1]] == [c.id for c in listed[1:]]
    ic = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    assert [c.id for c in listed] == [s.id for s in ic.ancestry(branch="main")]
    assert [c.id for c in commits(str(repo), branch="first")] == [c.id for c in listed[2:]]


def test_every_version_reads_what_it_held(grown):
    _out, repo, files, listed = grown
    url = str(repo)
    by_version = {listed[2 - k].id: _oracle(files[k]) for k in range(3)}
    for snapshot_id, want in by_version.items():
        np.testing.assert_array_equal(_values(url, snapshot=snapshot_id), want)
    np.testing.assert_array_equal(_values(url), _oracle(files[2]))  # tip of main
    np.testing.assert_array_equal(_values(url, branch="main"), _oracle(files[2]))
    np.testing.assert_array_equal(_values(url, tag="first-year"), _oracle(files[0]))
    np.testing.assert_array_equal(_values(url, branch="first"), _oracle(files[0]))
    with open_dataset(url, snapshot=listed[1].id) as ds:
        assert ds.sizes["time"] == 730 and str(ds["time"].values[-1])[:10] == "2001-12-31"


def test_as_of_picks_the_last_commit_at_or_before(grown):
    _out, repo, files, listed = grown
    url = str(repo)
    for k in range(3):
        commit = listed[2 - k]
        want = _oracle(files[k])
        # exactly at the commit, and just before the next one
        np.testing.assert_array_equal(_values(url, as_of=commit.written_at), want)
        if k < 2:
            later = listed[1 - k].written_at - dt.timedelta(microseconds=1)
            np.testing.assert_array_equal(_values(url, as_of=later), want)
    # naive means UTC; strings are ISO 8601, any offset
    t = listed[1].written_at
    naive = t.astimezone(dt.UTC).replace(tzinfo=None)
    np.testing.assert_array_equal(_values(url, as_of=naive), _oracle(files[1]))
    np.testing.assert_array_equal(_values(url, as_of=naive.isoformat()), _oracle(files[1]))
    plus2 = t.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
    np.testing.assert_array_equal(_values(url, as_of=plus2), _oracle(files[1]))
    # a branch and a time combine
    np.testing.assert_array_equal(_values(url, branch="first", as_of=listed[0].written_at),
                                  _oracle(files[0]))
    assert resolve(url, Version.of(as_of=t)).id == listed[1].id


@pytest.mark.parametrize(("kwargs", "error", "needles"), [
    ({"tag": "nope"}, SourceNotFoundError, ["no tag 'nope'", "first-year"]),
    ({"branch": "dev"}, SourceNotFoundError, ["no branch 'dev'", "first, main"]),
    ({"snapshot": "AAAAAAAAAAAAAAAAAAAA"}, SourceNotFoundError, ["no snapshot", "history"]),
    ({"snapshot": "not-an-id"}, SourceNotFoundError, ["no snapshot 'not-an-id'"]),
    ({"as_of": "1999-01-01"}, SourceNotFoundError,
     ["at or before 1999-01-01T00:00:00Z", "first commit is"]),
    ({"as_of": "yesterday"}, InvalidArgumentError, ["not an ISO 8601 time"]),
    ({"tag": "first-year", "snapshot": "X"}, InvalidArgumentError, ["tag and snapshot"]),
    ({"tag": "first-year", "branch": "main"}, InvalidArgumentError, ["tag and branch"]),
    ({"tag": "first-year", "as_of": "2020-01-01"}, InvalidArgumentError,
     ["does not combine with tag"]),
    ({"snapshot": "X", "as_of": "2020-01-01"}, InvalidArgumentError,
     ["does not combine with snapshot"]),
    ({"branch": ""}, InvalidArgumentError, ["non-empty"]),
    ({"collection": "x"}, InvalidArgumentError, ["not a batch output"]),
])
def test_bad_versions_are_one_line_errors(grown, kwargs, error, needles):
    _out, repo, _files, _listed = grown
    with pytest.raises(error) as info:
        open_dataset(str(repo), **kwargs)
    text = str(info.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, text


def test_the_first_commit_error_names_it(grown):
    _out, repo, _files, listed = grown
    with pytest.raises(SourceNotFoundError, match=listed[-1].id):
        open_dataset(str(repo), as_of=listed[-1].written_at - dt.timedelta(seconds=1))


def test_versions_of_what_has_none_are_refused(tmp_path):
    src = write_cmip6_year(tmp_path / "tas_2015.nc", 2015, nlat=4, nlon=8)
    refs = tmp_path / "tas.json"
    zarrport.virtualize(str(src), str(refs))
    for target, kind in ((refs, "kerchunk-json"), (src, "netcdf4")):
        with pytest.raises(InvalidArgumentError, match=f"is {kind}: only Icechunk"):
            open_dataset(str(target), tag="x")
    with pytest.raises(InvalidArgumentError, match="only Icechunk repositories"):
        history(str(refs))


def test_open_icechunk_store_at_a_version(grown):
    import xarray as xr

    from zarrport.open import open_icechunk_store

    _out, repo, files, _listed = grown
    store = open_icechunk_store(str(repo), tag="first-year")
    ds = xr.open_dataset(store, engine="zarr", consolidated=False, zarr_format=3)
    np.testing.assert_array_equal(ds["tas"].values.astype("f8"), _oracle(files[0]))


# --------------------------------------------------------------------------- batch outputs


@pytest.fixture(scope="module")
def two_collections(tmp_path_factory):
    base = tmp_path_factory.mktemp("two")
    src = base / "src"
    tas = write_cmip6_archive(src, years=range(2000, 2002), **SMALL)
    pr = write_cmip6_archive(src, years=range(2000, 2001), variable="pr", **SMALL)
    result = run_batch(str(src / "*.nc"), str(base / "out"), collection_by=CMIP6, workers=1)
    assert result.ok and len(result.collections) == 2
    return base / "out", {"tas_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn": ("tas", tas),
                          "pr_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn": ("pr", pr)}


def test_a_batch_output_opens_as_its_only_collection(grown):
    out, _repo, files, listed = grown
    assert detect(str(out)) == "batch"
    np.testing.assert_array_equal(_values(str(out)), _oracle(files[2]))
    # versions apply to the collection's repository
    np.testing.assert_array_equal(_values(str(out), tag="first-year"), _oracle(files[0]))
    np.testing.assert_array_equal(_values(str(out), snapshot=listed[1].id), _oracle(files[1]))
    np.testing.assert_array_equal(_values(str(out), collection="src", as_of=listed[1].written_at),
                                  _oracle(files[1]))


def test_batch_outputs_are_detected_by_content_not_name(grown, tmp_path):
    out, _repo, files, _listed = grown
    copy = tmp_path / "renamed.zarr"
    shutil.copytree(out, copy)
    assert detect(str(copy)) == "batch"
    np.testing.assert_array_equal(_values(str(copy)), _oracle(files[2]))
    # stopped after a commit but before the manifest: the ledger and collections/ remain
    (copy / "zarrport-batch.json").unlink()
    assert detect(str(copy)) == "batch"
    np.testing.assert_array_equal(_values(str(copy), collection="src"), _oracle(files[2]))
    # an ordinary directory named like one is not
    plain = tmp_path / "out"
    (plain / "collections").mkdir(parents=True)
    with pytest.raises(zarrport.ZarrportError, match="not a Zarr store"):
        detect(str(plain))


def test_each_collection_opens_by_name(two_collections):
    out, expected = two_collections
    for name, (var, paths) in expected.items():
        np.testing.assert_array_equal(_values(str(out), var, collection=name),
                                      _oracle(paths, var))


def test_several_collections_need_a_name(two_collections):
    out, expected = two_collections
    with pytest.raises(InvalidArgumentError) as info:
        open_dataset(str(out))
    assert "2 collections" in str(info.value)
    for name in expected:
        assert name in str(info.value)
    with pytest.raises(SourceNotFoundError) as info:
        open_dataset(str(out), collection="tas")
    assert "no collection 'tas'" in str(info.value)
    for name in expected:
        assert name in str(info.value)


def test_a_batch_output_without_a_collection(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "broken.nc").write_bytes(b"CDF\x01" + b"\x00" * 20)
    result = run_batch(str(src / "*.nc"), str(tmp_path / "out"), workers=1)
    assert not result.ok and not result.collections
    assert detect(str(tmp_path / "out")) == "batch"
    with pytest.raises(SourceNotFoundError, match="no collection yet"):
        open_dataset(str(tmp_path / "out"))


def test_a_collection_whose_first_commit_failed(tmp_path):
    src = tmp_path / "src"
    write_cmip6_archive(src, years=range(2000, 2001), **SMALL)
    # same collection, another grid: cannot be concatenated, so no repository is made
    write_cmip6_year(src / cmip6_filename(first_year=2001), 2001, nlat=6, nlon=8,
                     time_chunk=73)
    pr = write_cmip6_archive(src, years=range(2000, 2001), variable="pr", **SMALL)
    out = tmp_path / "out"
    result = run_batch(str(src / "*.nc"), str(out), collection_by=CMIP6, workers=1)
    assert result.collections["tas_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn"].get("error")
    with pytest.raises(SourceNotFoundError, match="'tas_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn' "
                       "has no repository yet"):
        open_dataset(str(out), collection="tas_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn")
    np.testing.assert_array_equal(
        _values(str(out), "pr", collection="pr_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn"),
        _oracle(pr, "pr"))
    text = run("info", str(out))
    assert text.returncode == 0, text.stderr
    assert "last commit: no commit" in text.stdout
    listed = run("history", str(out))
    assert listed.returncode == 0, listed.stderr
    assert "tas_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn: no repository yet" in listed.stdout
    assert "pr_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn: 2 commits" in listed.stdout


def test_history_of_a_batch_output(two_collections):
    out, expected = two_collections
    model = history(str(out))
    assert model["kind"] == "batch" and set(model["collections"]) == set(expected)
    for item in model["collections"].values():
        assert item["kind"] == "icechunk"
        assert [c["id"] for c in item["commits"]] == [c.id for c in commits(item["url"])]
        assert len(item["commits"]) == 2
    one = history(str(out), collection="pr_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn")
    assert list(one["collections"]) == ["pr_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn"]
    with pytest.raises(SourceNotFoundError, match="no collection 'nope'"):
        history(str(out), collection="nope")
    with pytest.raises(SourceNotFoundError, match="no branch 'dev'; its branches: main"):
        history(str(out), branch="dev")


# --------------------------------------------------------------------------- the CLI


def test_cli_info_lists_collections(two_collections):
    out, expected = two_collections
    proc = run("info", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    model = json.loads(proc.stdout)
    assert model["kind"] == "batch" and set(model["collections"]) == set(expected)
    for name, (_var, paths) in expected.items():
        item = model["collections"][name]
        assert item["dims"]["time"] == 365 * len(paths)
        with open_dataset(str(out), collection=name) as ds:
            assert item["dims"] == {str(k): int(v) for k, v in ds.sizes.items()}
        assert item["dims"]["lat"] == 4 and item["sources"] == len(paths)
        assert item["last_commit"]["id"] == commits(item["url"])[0].id
    text = run("info", str(out))
    assert text.returncode == 0, text.stderr
    assert "zarrport batch output, 2 collections" in text.stdout
    for name, item in model["collections"].items():
        assert name in text.stdout
        assert f"last commit: {item['last_commit']['id']}" in text.stdout
    assert "time: 730" in text.stdout and "time: 365" in text.stdout
    one = run("info", str(out), "--collection", "pr_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn",
              "--json")
    assert one.returncode == 0, one.stderr
    described = json.loads(one.stdout)
    assert described["collection"] == "pr_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn"
    assert "pr" in described["data_vars"] and described["dims"]["time"] == 365


def test_cli_info_at_versions(grown):
    _out, repo, _files, listed = grown
    for args, commit in ((["--tag", "first-year"], listed[2]),
                         (["--snapshot", listed[1].id], listed[1]),
                         (["--as-of", listed[1].written_at.isoformat()], listed[1]),
                         (["--branch", "first"], listed[2]),
                         ([], listed[0])):
        proc = run("info", str(repo), *args, "--json")
        assert proc.returncode == 0, proc.stderr
        model = json.loads(proc.stdout)
        assert model["commit"]["id"] == commit.id, args
        assert model["dims"]["time"] == 365 * (3 - listed.index(commit)), args
    text = run("info", str(repo), "--tag", "first-year")
    assert text.returncode == 0, text.stderr
    assert f"tag 'first-year': commit {listed[2].id}" in text.stdout
    assert "[first-year]" in text.stdout


def test_cli_history(grown, two_collections):
    out, repo, _files, listed = grown
    proc = run("history", str(repo), "--json")
    assert proc.returncode == 0, proc.stderr
    model = json.loads(proc.stdout)
    assert [c["id"] for c in model["commits"]] == [c.id for c in listed]
    assert model["commits"][2]["tags"] == ["first-year"]
    text = run("history", str(repo))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert "branch main, 4 commits" in lines[0]
    assert [ln.split()[0] for ln in lines[1:]] == [c.id for c in listed]
    assert "[first-year]" in lines[3]
    first = run("history", str(out), "--branch", "first")
    assert first.returncode == 0, first.stderr
    assert "src: 2 commits" in first.stdout and listed[2].id in first.stdout
    two, expected = two_collections
    both = run("history", str(two))
    assert both.returncode == 0, both.stderr
    for name in expected:
        assert f"{name}: 2 commits" in both.stdout


@pytest.mark.parametrize(("args", "code", "needles"), [
    (["info", "{repo}", "--tag", "nope"], 3, ["no tag 'nope'", "first-year"]),
    (["info", "{repo}", "--branch", "dev"], 3, ["no branch 'dev'"]),
    (["info", "{repo}", "--snapshot", "AAAAAAAAAAAAAAAAAAAA"], 3, ["no snapshot"]),
    (["info", "{repo}", "--as-of", "1990-01-01"], 3, ["first commit is"]),
    (["info", "{repo}", "--as-of", "soon"], 2, ["not an ISO 8601 time"]),
    (["info", "{repo}", "--tag", "first-year", "--snapshot", "X"], 2, ["tag and snapshot"]),
    (["info", "{repo}", "--tag", "first-year", "--as-of", "2020-01-01"], 2,
     ["does not combine"]),
    (["info", "{two}"], None, []),  # lists the collections: not an error
    (["info", "{two}", "--tag", "x"], 2, ["2 collections", "--collection"]),
    (["info", "{two}", "--collection", "nope"], 3, ["no collection 'nope'",
                                                    "tas_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn"]),
    (["history", "{two}", "--collection", "nope"], 3, ["no collection 'nope'"]),
    (["history", "{repo}", "--branch", "dev"], 3, ["no branch 'dev'"]),
    (["history", "{repo}", "--collection", "x"], 2, ["not a batch output"]),
    (["history", "{missing}"], 3, ["does not exist"]),
])
def test_cli_bad_input_one_line(grown, two_collections, tmp_path, args, code, needles):
    _out, repo, _files, _listed = grown
    two, _expected = two_collections
    args = [a.format(repo=repo, two=two, missing=tmp_path / "missing") for a in args]
    proc = run(*args)
    if code is None:
        assert proc.returncode == 0, proc.stderr
        return
    assert_clean_failure(proc, code, *needles)


def test_cli_help_texts():
    for cmd in ("history", "info"):
        proc = run(cmd, "--help")
        assert proc.returncode == 0 and "Example" in proc.stdout
    info = run("info", "--help").stdout
    for opt in ("--branch", "--tag", "--snapshot", "--as-of", "--collection"):
        assert opt in info


@pytest.mark.s3
def test_a_batch_output_on_s3_at_each_version(s3_server, tmp_path):
    so = s3_server.storage_options
    s3_server.create_bucket("versions")
    out = "s3://versions/refs"
    src = tmp_path / "src"
    files = []
    for year in (2000, 2001):
        write_cmip6_archive(src, years=[year], **SMALL)
        result = run_batch(str(src / "*.nc"), out, workers=1, ledger=str(tmp_path / "l.db"),
                           output_storage_options=so)
        assert result.ok, result.failures
        files.append(sorted(src.glob("*.nc")))
    assert detect(out, so) == "batch"
    np.testing.assert_array_equal(_values(out, storage_options=so), _oracle(files[1]))
    model = history(out, storage_options=so)
    (item,) = model["collections"].values()
    assert item["url"] == f"{out}/collections/src.icechunk"
    newest, older = item["commits"][:2]
    assert "added 1" in newest["message"]
    np.testing.assert_array_equal(_values(out, storage_options=so, snapshot=older["id"]),
                                  _oracle(files[0]))
    np.testing.assert_array_equal(
        _values(out, storage_options=so, as_of=older["written_at"]), _oracle(files[0]))
    with pytest.raises(SourceNotFoundError, match="no tag 'x'; its tags: none"):
        open_dataset(out, storage_options=so, tag="x")


def test_collections_held_as_kerchunk_references(grown, tmp_path):
    """A collection may be kerchunk JSON or Parquet (named in the manifest, or found as
    collections/<name>.json|.parquet): it opens by its content, without versions."""
    out, _repo, files, _listed = grown
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    source = files[0][0]
    zarrport.virtualize(str(source), str(copy / "collections" / "refs.json"))
    zarrport.virtualize(str(source), str(copy / "collections" / "pq.parquet"))
    manifest = json.loads((copy / "zarrport-batch.json").read_text())
    manifest["collections"]["pq"] = {"references": "collections/pq.parquet", "sources": 1}
    (copy / "zarrport-batch.json").write_text(json.dumps(manifest))
    want = _oracle([source])
    for name in ("refs", "pq"):
        np.testing.assert_array_equal(_values(str(copy), collection=name), want)
    with pytest.raises(InvalidArgumentError, match="is kerchunk-json: only Icechunk"):
        open_dataset(str(copy), collection="refs", tag="first-year")
    np.testing.assert_array_equal(_values(str(copy), collection="src", tag="first-year"), want)
    proc = run("info", str(copy), "--json")
    assert proc.returncode == 0, proc.stderr
    cols = json.loads(proc.stdout)["collections"]
    assert {n: c["kind"] for n, c in cols.items()} == {
        "pq": "kerchunk-parquet", "refs": "kerchunk-json", "src": "icechunk"}
    assert cols["refs"]["dims"]["time"] == 365 and cols["refs"]["last_commit"] is None
    listed = run("history", str(copy))
    assert listed.returncode == 0, listed.stderr
    assert "refs: kerchunk-json, no history" in listed.stdout
    assert "src: 4 commits" in listed.stdout


def test_verify_of_a_batch_output_checks_its_collections(grown):
    from zarrport.verify import verify

    out, _repo, _files, _listed = grown
    report = verify(str(out))
    assert report.ok, report.problems
    assert report.sources == 3 and report.variables_checked > 0


@pytest.mark.s3
def test_an_icechunk_1_repository_at_each_version(s3_server, tmp_path):
    """zarrport 0.1's output (tests/fixtures/icechunk1: commit 1 years 2015-2016 tagged
    ``two-years``, commit 2 years 2015-2017), read as it is at each commit."""
    fixture = Path(__file__).resolve().parent / "fixtures" / "icechunk1"
    s3_server.create_bucket("zarrport-icechunk1")
    sources = sorted((fixture / "sources").glob("*.nc"))
    for f in sources:
        s3_server.put_object("zarrport-icechunk1", f"archive/{f.name}", f.read_bytes())
    repo = tmp_path / "tas.icechunk"
    shutil.copytree(fixture / "tas.icechunk", repo)
    so = s3_server.storage_options
    listed = commits(str(repo))
    assert [c.tags for c in listed] == [[], ["two-years"], []]
    assert listed[0].message == "three years"
    np.testing.assert_array_equal(_values(str(repo), storage_options=so), _oracle(sources))
    for kw in ({"tag": "two-years"}, {"snapshot": listed[1].id},
               {"as_of": listed[1].written_at}):
        np.testing.assert_array_equal(_values(str(repo), storage_options=so, **kw),
                                      _oracle(sources[:2]))
    with pytest.raises(SourceNotFoundError, match="its tags: two-years"):
        open_dataset(str(repo), storage_options=so, tag="three-years")
