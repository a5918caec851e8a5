"""Smoke check of bench/bench_grib.py: ``--quick`` runs all three parts (local manifest vs
kerchunk, S3 manifest on moto, regional read vs cfgrib) and writes its section, with
figures and passed checks, between its markers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "bench_grib.py"
BEGIN = "<!-- grib-manifest:start -->"
END = "<!-- grib-manifest:end -->"
TIME = re.compile(r"^~?\d[\d,]*(\.\d+)? (ms|s)\b")
RATIO = re.compile(r"^\d[\d,]*(\.\d+)?x$")


def test_quick_grib_benchmark_writes_its_section(tmp_path: Path) -> None:
    for module in ("cfgrib", "kerchunk", "eccodes", "icechunk"):
        pytest.importorskip(module)
    out = tmp_path / "benchmarks.md"
    other = ("<!-- grib-decode:start -->\n\n## GRIB decode\n\nsomeone else's\n\n"
             "<!-- grib-decode:end -->\n")
    out.write_text("# Benchmarks\n\nearlier sections\n\n" + other)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                      env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(SCRIPT), "--quick", "--out", str(out),
           "--data-dir", str(tmp_path / "data"), "--work-dir", str(tmp_path / "work")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]

    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nearlier sections\n")
    assert other in text  # the other section is untouched
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    section = text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip()
    assert section == proc.stdout.strip()
    assert section.startswith("## GRIB: manifests and regional reads")
    assert "nproc" in section and "messages per file" in section

    summary = _table(section, "| what |")
    rows = {r["what"].split(" (")[0]: r for r in summary}
    manifest = rows["Manifest of one GEFS cycle"]
    s3 = rows["The same manifest from S3"]
    read = rows["Regional read of tp"]
    for row in (manifest, s3, read):
        assert TIME.match(row["zarrport"]), row
        assert "WRONG" not in str(row) and "failed" not in str(row), row
    for row in (manifest, read):
        assert TIME.match(row["alternative"].split(": ", 1)[1]), row
        assert RATIO.match(row["ratio"]), row
        assert row["met?"].strip("*") in ("met", "not met"), row
    assert "requests/s" in s3["zarrport"]
    assert rows["... against cfgrib with a warm index"]["ratio"] != "-"
    threads = rows["... zarrport with 2 Dask threads against 1"]
    assert RATIO.match(threads["ratio"]) and "2 processes of pure CPU work" in threads["what"]
    assert threads["met?"].strip("*") in ("met", "not met"), threads

    # every contender ran, and every result passed its check
    details = _table(section, "| part |")
    assert {r["part"] for r in details} == {"manifest", "s3", "read"}
    assert any("two Dask threads" in r["contender"] for r in details)
    for r in details:
        assert TIME.match(r["median"]), r
        assert r["check"].startswith(("ok", "reference")), r

    # a second write replaces the section instead of adding one
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_grib
    finally:
        sys.path.remove(str(ROOT / "bench"))
    bench_grib.write_section("## GRIB: manifests and regional reads\n\nnew\n", out)
    again = out.read_text()
    assert again.count(BEGIN) == 1 and other in again and "\nnew\n" in again
    assert "| what |" not in again


def _table(section: str, header_start: str) -> list[dict[str, str]]:
    """The rows of the markdown table whose header line starts with ``header_start``."""
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    header = _cells(lines[start])
    out = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        out.append(dict(zip(header, _cells(line), strict=True)))
    return out


def _cells(line: str) -> list[str]:
    # split on | outside backticks (the "how" cells quote code)
    cells, cur, code = [], "", False
    for ch in line.strip().strip("|"):
        if ch == "`":
            code = not code
        if ch == "|" and not code:
            cells.append(cur.strip())
            cur = ""
        else:
            cur += ch
    cells.append(cur.strip())
    return cells
