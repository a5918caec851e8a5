"""Smoke check of bench/bench_icechunk_read.py: ``--quick`` reads a point series of a small
archive through Icechunk (zarrport's reader and xarray's Zarr engine), the kerchunk JSON
reader and netCDF4, each result checked against netCDF4, and ``--out`` puts the section
between its markers exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mdtables import tables as md_tables  # tests/mdtables.py

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "bench_icechunk_read.py"


def test_quick_icechunk_read_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nearlier sections\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                      env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(SCRIPT), "--quick", "--out", str(out),
           "--data-dir", str(tmp_path / "data")]
    for _ in range(2):  # a second run replaces the section instead of appending one
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env,
                              cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-4000:]
    section = proc.stdout
    assert section.startswith("## Icechunk reads: one grid point's full time series")
    assert "icechunk 2." in section and "nproc" in section
    tables = md_tables(section)
    assert len(tables) == 2, tables
    targets, rows = tables["Target"], tables["Archive of 4 yearly files, 1,460 chunks of `tas`"]
    assert len(rows) == 4 and all(r["values"] == "ok" for r in rows), rows
    assert all(float(r["ratio"]) > 0 for r in rows)
    (target,) = targets
    assert target["status"] in ("**met**", "**not met**")
    assert "1,460 chunks" in section  # 4 years x 365 one-day chunks of tas
    text = out.read_text()
    assert text.startswith("# Benchmarks") and text.count("## Icechunk reads") == 1
