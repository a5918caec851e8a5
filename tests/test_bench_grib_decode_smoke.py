"""Smoke check of bench/bench_grib_decode.py: ``--quick`` prints the section with a row for
every packing, checked results, and ``--out`` puts it between its markers exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mdtables import tables as md_tables  # tests/mdtables.py

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "bench_grib_decode.py"
PACKINGS = ("simple", "complex", "complex + spatial differencing", "JPEG 2000", "PNG",
            "CCSDS", "IEEE 32-bit", "IEEE 64-bit")


def test_quick_grib_decode_benchmark_has_every_packing(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nearlier sections\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                      env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    section = proc.stdout
    assert section.startswith("## GRIB decoding")
    assert "nproc" in section and "gribberish 1." in section and "eccodes 2." in section

    tables = md_tables(section)
    synthetic = next(rows for heading, rows in tables.items()
                     if heading.startswith("Synthetic"))
    assert [r["packing"] for r in synthetic] == (
        list(PACKINGS) + [f"{p} + bitmap" for p in PACKINGS])
    for row in synthetic:
        for column in ("eccodes", "codec `auto`", "codec `auto`, decode only"):
            assert "msg/s" in row[column] and "MB/s" in row[column], (column, row)
            assert "WRONG" not in row[column], row
        assert float(row["decode only / faster"]) > 0, row
    results = {r["packing"]: r["gribberish result"] for r in synthetic}
    assert results["IEEE 32-bit"] == "error"  # gribberish 1.9 cannot read 5.4
    assert results["simple"] == results["PNG"] == "exact"

    per_packing = tables["Decoder per packing (`FASTEST` in `src/zarrport/grib/codec.py`)"]
    assert {r["template"] for r in per_packing} >= {"5.0", "5.2", "5.3", "5.4", "5.40",
                                                    "5.41", "5.42"}
    small = next(rows for heading, rows in tables.items() if heading.startswith("Small"))
    assert len(small) == 5

    # a second write replaces the section between the markers
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import bench_grib_decode
    finally:
        sys.path.remove(str(SCRIPT.parent))
    bench_grib_decode.write_section(section, out)
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nearlier sections\n")
    assert text.count("<!-- grib-decode:start -->") == 1
    assert text.count("<!-- grib-decode:end -->") == 1
    assert text.count("## GRIB decoding") == 1
    assert section.strip() in text
