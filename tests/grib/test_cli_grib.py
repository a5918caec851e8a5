"""GRIB through every command: bad input to ``grib ingest``; ``inspect``, ``info``,
``virtualize``, ``verify`` and ``batch`` on plain GRIB files."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_cli import assert_clean_failure, leftovers, run
from zarrport.testing.grib_synthetic import make_gefs_cycle

REAL = Path(__file__).resolve().parents[3] / "shared/data/real/grib"


@pytest.fixture(scope="module")
def gefs_cycle(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("gefs")
    return make_gefs_cycle(root, "2025010100", members=1, steps=(0, 3))


@pytest.mark.parametrize("kind", ["gefs", "ecmwf"])
def test_grib_ingest_of_a_file_fails_cleanly(tmp_path, gefs_cycle, kind):
    grib = gefs_cycle[0]
    out = tmp_path / "out.icechunk"
    proc = run("grib", "ingest", kind, str(grib), "-o", str(out))
    assert_clean_failure(proc, grib.name, "is a file, not a forecast cycle folder",
                         "zarrport virtualize")
    assert proc.returncode == 2
    assert not out.exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["gefs", "ecmwf"])
def test_grib_ingest_of_wrong_folders_fails_cleanly(tmp_path, kind):
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a forecast")
    cases = {
        str(tmp_path / "missing"): ("no such directory", 3),
        str(empty): (f"no {kind.upper()}", 3),
        str(other): (f"no {kind.upper()}", 3),
    }
    for source, (needle, code) in cases.items():
        out = tmp_path / "out.icechunk"
        proc = run("grib", "ingest", kind, source, "-o", str(out))
        assert_clean_failure(proc, needle)
        assert proc.returncode == code
        assert not out.exists()
