"""Smoke check of bench/bench_icechunk_refs.py: ``--quick`` times both ways of setting
Icechunk virtual references on a small archive, each result checked against netCDF4, and
``--out`` puts the section between its markers exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mdtables import tables as md_tables  # tests/mdtables.py

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "bench_icechunk_refs.py"


def test_quick_icechunk_refs_benchmark(tmp_path: Path) -> None:
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
    assert section.startswith("## Icechunk: setting virtual references")
    assert "icechunk 2." in section and "nproc" in section
    (rows,) = md_tables(section).values()
    assert len(rows) == 2
    chunks = {r["chunks set"] for r in rows}
    assert chunks == {"1,460"}, rows  # 4 years x 365 one-day chunks of tas, both ways
    assert all(float(r["ratio"]) > 0 for r in rows)
    text = out.read_text()
    assert text.startswith("# Benchmarks") and text.count("## Icechunk: setting") == 1
