"""Smoke check of bench/bench_virtualize.py: ``--quick`` runs and writes the expected table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "bench_virtualize.py"

try:
    from zarrport import open_dataset, virtualize  # noqa: F401

    MISSING = None
except Exception as err:  # noqa: BLE001 - any import failure means "not ready yet"
    MISSING = f"zarrport.virtualize / open_dataset not importable yet ({err})"


@pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
def test_quick_benchmark_writes_the_expected_table(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                      env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out),
         "--data-dir", str(tmp_path / "data"), "--work-dir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = out.read_text()
    assert proc.stdout.strip() == report.strip()

    # table columns: contender | median | min | max | n | ratio | [output size |] values | how
    # header facts
    assert "(quick sizes)" in report
    assert "nproc" in report and "RAM" in report
    for lib in ("kerchunk", "virtualizarr", "zarr", "netCDF4", "zarrport"):
        assert f"{lib} " in report

    # one section per registered case, in order
    sections = [line[3:] for line in report.splitlines() if line.startswith("## ")]
    assert sections[:3] == ["Machine and versions", "Inputs", "Targets"]
    assert sections[-1] == "Notes"
    cases = sections[3:-1]
    assert cases == [
        "Generate references: one file",
        "Generate references: archive combined along time",
        "Read one grid point's full time series: one multi-year file",
        "Read one full spatial slice (one time step): one multi-year file",
        "Read one grid point's full time series: archive of yearly files",
        "Read one full spatial slice (one time step): archive of yearly files",
        "Read one grid point's full time series: one multi-year file (already open)",
        "Read one full spatial slice (one time step): one multi-year file (already open)",
        "Read one grid point's full time series: archive of yearly files (already open)",
        "Read one full spatial slice (one time step): archive of yearly files (already open)",
        "Open only (no data read): archive of yearly files",
    ]

    rows = _rows_by_section(report)
    for section in cases[:2]:
        names = list(rows[section])
        assert names[0] == "kerchunk"
        assert "VirtualiZarr" in names
        assert "**zarrport (JSON)**" in names
        assert "*zarrport (Parquet)*" in names and "*zarrport (Icechunk)*" in names
    for section in cases[2:10]:
        assert list(rows[section]) == [
            "netCDF4 (original files)",
            "**zarrport (open_dataset, JSON)**",
            "*zarrport (open_dataset, Parquet)*",
            "*zarrport (open_dataset, Icechunk)*",
            "*zarrport (open_dataset, JSON, engine='zarr')*",
        ]
        for name, cells in rows[section].items():
            assert cells[0].endswith("ms") or cells[0].endswith(" s"), (section, name, cells)
            assert cells[3].isdigit() and int(cells[3]) >= 1, (section, name, cells)  # n
            assert cells[5] == "ok", (section, name, cells)  # values column

    # zarrport's own outputs must read back exactly
    for section in cases[:2]:
        for name, cells in rows[section].items():
            if "zarrport" in name:
                assert cells[6] == "ok", (section, name, cells)  # values column

    # two generation targets, eight read targets (open + read, already open), each a verdict
    targets = rows["Targets"]
    assert len(targets) == 10
    for cells in targets.values():
        assert cells[-1].strip("*") in {"met", "not met", "not met (wrong values)"}, cells


def _rows_by_section(report: str) -> dict[str, dict[str, list[str]]]:
    """section title -> first cell -> remaining cells, for every markdown table row."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in report.splitlines():
        if line.startswith("## "):
            section = line[3:]
            out[section] = {}
        elif line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] in {"contender", "target", "dataset"}:
                continue
            out[section][cells[0]] = cells[1:]
    return out
