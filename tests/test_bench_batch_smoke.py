"""Smoke check of bench/bench_batch.py: ``--quick`` runs every contender in its own subprocess
and writes a section with a time and a memory row per size for all three tools."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mdtables import tables as md_tables  # tests/mdtables.py

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "bench_batch.py"

try:
    from zarrport.pipeline import run_batch  # noqa: F401

    MISSING = None
except Exception as err:  # noqa: BLE001 - any import failure means "not ready yet"
    MISSING = f"zarrport.pipeline.run_batch not importable yet ({err})"


@pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
def test_quick_batch_benchmark_has_rows_for_all_three_tools(tmp_path: Path) -> None:
    out = tmp_path / "batch.md"
    docs = tmp_path / "benchmarks.md"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                      env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out),
         "--data-dir", str(tmp_path / "data"), "--work-dir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=180, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    section = out.read_text()
    assert proc.stdout.strip() == section.strip()
    assert section.startswith("## Batch: 1,000 yearly files into one dataset")
    assert "shared machine" in section and "nproc" in section

    tables = md_tables(section)
    # wall time: one row per quick size, a time in every tool's column, both ratios
    times = tables["Wall time"]
    assert [r["files"] for r in times] == ["20", "40"]
    for row in times:
        for tool in ("**zarrport**", "VirtualiZarr", "kerchunk"):
            cell = row[tool]
            assert cell.split(" (")[0].endswith(("ms", " s")), (tool, row)
            assert "WRONG" not in cell and "failed" not in cell, (tool, row)
        for ratio in ("VirtualiZarr / zarrport", "kerchunk / zarrport"):
            assert float(row[ratio]) > 0, row
    # peak memory: every tool has a figure at every size
    memory = tables["Peak memory"]
    assert [r["files"] for r in memory][:2] == ["20", "40"]
    for row in memory[:2]:
        for tool in ("**zarrport**", "VirtualiZarr", "kerchunk"):
            assert "MiB" in row[tool], (tool, row)
    # every output was read back and matched netCDF4
    checks = {r["contender"]: r["output check"] for r in tables["Contenders and output check"]}
    assert checks == {"**zarrport**": "ok at every size", "VirtualiZarr": "ok at every size",
                      "kerchunk": "ok at every size"}
    # three targets, each with a verdict
    verdicts = [r["status"].strip("*") for r in tables["Targets"]]
    assert len(verdicts) == 3 and set(verdicts) <= {"met", "not met"}, verdicts

    # --write-docs puts the section between markers and replaces it on the next run
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_batch
    finally:
        sys.path.remove(str(ROOT / "bench"))
    docs.write_text("# Benchmarks\n\nearlier sections\n")
    bench_batch.write_docs(section, docs)
    bench_batch.write_docs(section, docs)
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nearlier sections\n")
    assert text.count(bench_batch.BEGIN) == 1 and text.count(bench_batch.END) == 1
    assert text.count("## Batch: 1,000 yearly files") == 1
