"""Smoke check of bench/bench_serve.py: ``--size tiny --servers titiler`` builds a one-year
32x64 archive with zarrport (batch, convert --pattern spatial), starts stock titiler.xarray
as a real uvicorn subprocess on 127.0.0.1 and loads it for about 2 s; every tile must come
back as a 256x256 PNG, the section goes between its markers exactly once (also when
rendered again from ``--json``), and zarrport's own rows say they were not run. No timing
is asserted. Also the harness's own pieces: the tile plan and the response check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mdtables import tables as md_tables  # tests/mdtables.py

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "bench_serve.py"
sys.path.insert(0, str(ROOT / "bench"))

import bench_serve  # noqa: E402


def test_tiny_serve_benchmark_against_stock_titiler(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nearlier sections\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                      env.get("PYTHONPATH")]))
    env.pop("ZARRPORT_BENCH_XPUBLISH_PY", None)
    js = tmp_path / "serve.json"
    cmd = [sys.executable, str(SCRIPT), "--size", "tiny", "--servers", "titiler",
           "--duration", "2", "--warmup", "0.5", "--single", "1", "--out", str(out),
           "--json", str(js), "--data-dir", str(tmp_path / "data"),
           "--work-dir", str(tmp_path / "work")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    section = proc.stdout
    assert section.startswith("## Serving tiles (bench_serve.py) (--size tiny)")
    assert "titiler.xarray 2.4" in section and "nproc" in section
    t = md_tables(section)
    (load,) = [rows for name, rows in t.items() if name.startswith("Warm load")]
    assert [r["server"] for r in load] == ["titiler.xarray (stock)"], load
    row = load[0]
    assert row["status"] == "ok" and row["data"] == "converted Zarr", row
    assert int(row["requests"].replace(",", "")) > 0 and row["errors"] == "0", row
    (single,) = [rows for name, rows in t.items() if name.startswith("One client")]
    assert single[0]["errors"] == "0" and int(single[0]["requests"]) > 0, single
    assert single[0]["first tile (cold)"].endswith("ms"), single
    (targets,) = [rows for name, rows in t.items() if name == "Targets"]
    assert targets[0]["measured"].startswith("zarrport: not run"), targets
    data = json.loads(js.read_text())
    (r,) = data["rows"]
    assert r["load"]["requests"] == int(row["requests"].replace(",", ""))
    assert r["cold_status"] == "ok" and all(r["check_tiles"].values()), r
    assert Path(data["inputs"]["forms"]["zarr"]).is_dir()
    text = out.read_text()
    assert text.startswith("# Benchmarks") and text.count("## Serving tiles") == 1
    again = subprocess.run([sys.executable, str(SCRIPT), "--from-json", str(js), "--out",
                            str(out)], capture_output=True, text=True, timeout=60, env=env,
                           cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert out.read_text() == text
    assert out.read_text().count("<!-- bench_serve: begin -->") == 1


def test_tile_plan_is_views_of_valid_tiles() -> None:
    plan = bench_serve.tile_plan(7, 500, range(2015, 2017))
    assert len(plan) == 500 and plan == bench_serve.tile_plan(7, 500, range(2015, 2017))
    assert {z for _, z, _, _ in plan} == set(bench_serve.ZOOMS)
    for date, z, x, y in plan:
        year, month, day = map(int, date.split("-"))
        assert 2015 <= year <= 2016 and 1 <= day <= bench_serve.NOLEAP_MONTHS[month - 1]
        assert 0 <= x < 2 ** z and 0 <= y < 2 ** z
    # the last day of a noleap year, and the first of the next
    assert bench_serve.noleap_date(2015, 364) == (2015, 12, 31)
    assert bench_serve.noleap_date(2015, 365) == (2016, 1, 1)


@pytest.mark.parametrize(("status", "ctype", "body", "ok"), [
    (200, "image/png", None, True),
    (500, "application/json", b'{"detail": "boom"}', False),
    (200, "application/json", b"{}", False),
    (200, "image/png", b"not a png", False),
])
def test_response_check(status: int, ctype: str, body: bytes | None, ok: bool) -> None:
    import numpy as np
    from rio_tiler.utils import render

    if body is None:  # a real 256x256 PNG, as a tile server encodes it
        body = render(np.zeros((1, 256, 256), dtype="uint8"), img_format="PNG")
    resp = httpx.Response(status, headers={"content-type": ctype}, content=body)
    assert (bench_serve._check(resp) is None) is ok
