"""The command line as a user meets it: bad input gets one clear line, a non-zero exit and
no partial output; good input prints what the library returns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zarrport.testing.samples import write_cmip6_archive, write_cmip6_year


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zarrport", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def assert_clean_failure(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("zarrport: error: ")
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if "zarrport" in p.name)


@pytest.fixture
def good(tmp_path) -> Path:
    return write_cmip6_year(tmp_path / "tas_2015.nc", 2015, nlat=4, nlon=8)


@pytest.mark.parametrize("fmt", ["json", "parquet", "icechunk"])
def test_bad_sources_fail_cleanly(tmp_path, fmt):
    empty = tmp_path / "empty.nc"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.nc"
    noise.write_bytes(os.urandom(4096))
    cases = {
        str(tmp_path / "missing.nc"): ("no such file", 3),
        str(empty): ("empty", 4),
        str(noise): ("not a NetCDF-4/HDF5 or NetCDF-3 file", 4),
        str(tmp_path): ("directory", 3),
    }
    for source, (needle, code) in cases.items():
        out = tmp_path / f"out.{fmt}"
        proc = run("virtualize", source, "-o", str(out))
        assert_clean_failure(proc, needle)
        assert proc.returncode == code
        assert not out.exists()
        assert leftovers(tmp_path) == []


def test_truncated_hdf5_fails_cleanly(tmp_path):
    src = write_cmip6_year(tmp_path / "full.nc", 2015, nlat=32, nlon=64)
    data = src.read_bytes()
    for fraction in (0.5, 0.9, 0.02):
        cut = tmp_path / f"cut{fraction}.nc"
        cut.write_bytes(data[: int(len(data) * fraction)])
        out = tmp_path / "cut.json"
        proc = run("virtualize", str(cut), "-o", str(out))
        assert_clean_failure(proc, cut.name)
        assert any(w in proc.stderr for w in ("truncated", "damaged", "not a readable"))
        assert not out.exists()


def test_truncated_netcdf3_fails_cleanly(tmp_path):
    real = (Path(__file__).parents[2] / "shared/data/real/nc3"
            / "xclim_tas_Amon_HadGEM2-ES_rcp85_r1i1p1_200512-203011.nc")
    if not real.exists():
        pytest.skip("shared real data not present")
    cut = tmp_path / "cut.nc"
    data = real.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    proc = run("virtualize", str(cut), "-o", str(tmp_path / "cut.json"))
    assert_clean_failure(proc, "truncated")


def test_existing_output_needs_overwrite(tmp_path, good):
    out = tmp_path / "out.json"
    out.write_text("precious")
    proc = run("virtualize", str(good), "-o", str(out))
    assert_clean_failure(proc, "exists", "--overwrite")
    assert proc.returncode == 6
    assert out.read_text() == "precious"
    proc = run("virtualize", str(good), "-o", str(out), "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["version"] == 1


def test_existing_icechunk_output_needs_overwrite(tmp_path, good):
    out = tmp_path / "out.icechunk"
    assert run("virtualize", str(good), "-o", str(out)).returncode == 0
    proc = run("virtualize", str(good), "-o", str(out))
    assert_clean_failure(proc, "exists")
    assert run("virtualize", str(good), "-o", str(out), "--overwrite").returncode == 0
    assert leftovers(tmp_path) == []


def test_unwritable_output_fails_cleanly(tmp_path, good):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out in (blocker / "out.json", tmp_path / "no" / "such" / "dir" / "out.json"):
        proc = run("virtualize", str(good), "-o", str(out))
        assert_clean_failure(proc, "cannot write")
        assert proc.returncode == 6


def test_unknown_output_format_and_missing_concat_dim(tmp_path, good):
    proc = run("virtualize", str(good), "-o", str(tmp_path / "out.zip"))
    assert_clean_failure(proc, "*.json, *.parquet or *.icechunk")
    second = write_cmip6_year(tmp_path / "tas_2016.nc", 2016, nlat=4, nlon=8)
    proc = run("virtualize", str(good), str(second), "-o", str(tmp_path / "o.json"))
    assert_clean_failure(proc, "--concat-dim")
    proc = run("virtualize", str(good), str(second), "-o", str(tmp_path / "o.json"),
               "--concat-dim", "nope")
    assert_clean_failure(proc, "'nope'")


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    import zarrport
    from zarrport.virtual import icechunk as writer

    paths = write_cmip6_archive(tmp_path / "src", years=[2015, 2016], nlat=4, nlon=4)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(writer, "write_arrays", boom)
    with pytest.raises(OSError, match="disk full"):
        zarrport.virtualize([str(p) for p in paths], str(tmp_path / "out.icechunk"),
                            concat_dim="time")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_virtualize_json_output_is_the_library_result(tmp_path):
    paths = write_cmip6_archive(tmp_path / "src", years=[2015, 2016], nlat=4, nlon=4)
    out = tmp_path / "tas.icechunk"
    proc = run("virtualize", *map(str, paths), "-o", str(out), "--concat-dim", "time", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["format"] == "icechunk"
    assert result["sources"] == 2
    assert result["dims"]["time"] == 730
    assert result["output"] == out.as_uri()
    assert "height" in result["inlined_variables"]


def test_virtualize_human_output_and_info(tmp_path):
    write_cmip6_archive(tmp_path / "src", years=[2015, 2016], nlat=4, nlon=4)
    out = tmp_path / "tas.parquet"
    proc = run("virtualize", str(tmp_path / "src" / "*.nc"), "-o", str(out), "--concat-dim",
               "time")
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "2 source(s)" in proc.stdout
    info = run("info", str(out), "--json")
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["kind"] == "kerchunk-parquet"
    assert described["dims"]["time"] == 730
    assert described["data_vars"]["tas"]["units"] == "K"
    text = run("info", str(out))
    assert "tas" in text.stdout and "kerchunk-parquet" in text.stdout


def test_verify_exit_status(tmp_path, good):
    out = tmp_path / "tas.json"
    assert run("virtualize", str(good), "-o", str(out)).returncode == 0
    proc = run("verify", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("OK")
    with open(good, "ab") as f:  # the source changes after referencing
        f.write(b"\0" * 16)
    proc = run("verify", str(out), "--json")
    assert proc.returncode == 7
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    assert any(p["kind"] == "changed" and p["item"] == good.as_uri()
               for p in report["problems"])


def test_help_texts():
    for cmd in ("virtualize", "inspect", "verify", "info", "batch", "watch", "serve", "catalog",
                "grib ingest", "analyze exceedance"):
        proc = run(*cmd.split(), "--help")
        assert proc.returncode == 0
        assert "Example" in proc.stdout
