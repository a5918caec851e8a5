"""Smoke check of bench/bench_convert.py: ``--size small`` converts a 2-year archive with
zarrport (with and without shards) and with xarray + Dask, reports zarr-parallel (not
available without its own venv, which the temporary data directory lacks), storage per
codec and reads against netCDF4, every output checked against the source; ``--out`` puts
the section between its markers exactly once and ``--json`` holds the same rows. No timing
is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mdtables import tables as md_tables  # tests/mdtables.py

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "bench_convert.py"


def test_small_convert_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nearlier sections\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                      env.get("PYTHONPATH")]))
    env.pop("ZARRPORT_BENCH_ZARR_PARALLEL_PY", None)
    cmd = [sys.executable, str(SCRIPT), "--size", "small", "--out", str(out),
           "--json", str(tmp_path / "bench.json"), "--data-dir", str(tmp_path / "data"),
           "--work-dir", str(tmp_path / "work")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    section = proc.stdout
    assert section.startswith("## Convert: daily archive to time-series chunks (--size small)")
    assert "zarr 3." in section and "dask " in section and "nproc" in section
    tables = md_tables(section)
    (targets,) = [rows for name, rows in tables.items() if name == "Targets"]
    assert len(targets) == 4, targets
    assert all(r["status"] in ("**PASS**", "**MISS**") for r in targets[1:]), targets
    (through,) = [rows for name, rows in tables.items() if name.startswith("Throughput")]
    by = {r["contender"]: r for r in through}
    assert set(by) == {"**zarrport convert**", "*zarrport convert --shards*", "xarray + Dask",
                       "zarr-parallel 0.5.0"}, by
    for name in ("**zarrport convert**", "*zarrport convert --shards*", "xarray + Dask"):
        assert by[name]["status"].startswith("ok"), by[name]
    # at this size zarrport writes the variable from its own process (no worker pool)
    assert by["xarray + Dask"]["peak RSS per worker (sampled)"] != "--", by["xarray + Dask"]
    assert by["**zarrport convert**"]["process tree peak"] != "--", by["**zarrport convert**"]
    assert by["zarr-parallel 0.5.0"]["status"].startswith("not available"), by
    (storage,) = [rows for name, rows in tables.items() if name.startswith("Storage")]
    codecs = {(r["codec"], r["shards"]) for r in storage if r["status"] == "ok"}
    assert codecs >= {(c, s) for c in ("zstd", "blosc-lz4", "gzip") for s in ("no", "yes")}
    assert all(float(r["ratio"]) > 1 for r in storage), storage  # the values compress a bit
    (reads,) = [rows for name, rows in tables.items() if name.startswith("Reads")]
    assert {(r["read"], r["values"]) for r in reads} == {("point series", "ok"),
                                                         ("full map", "ok")}, reads
    assert {r["contender"] for r in reads} >= {"netCDF4 (source files)", "**converted store**"}
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["plan"]["chunks"][0] == 730  # 2 years, whole series per chunk
    assert [r["key"] for r in data["throughput"]["rows"]] == [
        "zarrport", "zarrport-shards", "xarray-dask", "zarr-parallel"]
    text = out.read_text()
    assert text.startswith("# Benchmarks") and text.count("## Convert: daily archive") == 1
    assert text.count("<!-- bench_convert: begin -->") == 1
