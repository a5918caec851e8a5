"""``make demo`` runs end to end: batch, STAC, verify, a new year as one new commit."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_runs(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "zarrport.demo", "--dir", str(out),
                           "--years", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 new, 0 changed" in proc.stdout
    assert "1 new, 0 changed, 2 unchanged" in proc.stdout
    assert "verify against netCDF4: OK" in proc.stdout
    catalog = json.loads((out / "stac" / "catalog.json").read_text())
    assert catalog["type"] == "Catalog"
    tas = next(out.glob("stac/tas_*/collection.json"))
    # rewritten after the new year landed: the extent covers both years (to the end bound)
    interval = json.loads(tas.read_text())["extent"]["temporal"]["interval"][0]
    assert interval[0].startswith("2015") and interval[1].startswith("2017")  # bounds end Jan 1
    # the hot variable converted to time-series chunks, validated, and the read speed-up
    assert "validated:" in proc.stdout and "faster" in proc.stdout
    assert (out / "tas-series.zarr" / "zarr.json").exists()
    # forecasts: two cycles, one commit each, the same cycle again changes nothing
    assert "created: cycle 2025-01-01T00Z, 5 members x 8 steps" in proc.stdout
    assert "appended: cycle 2025-01-01T06Z" in proc.stdout
    assert "the 00Z cycle again: unchanged" in proc.stdout
    assert "P(24h tp > 50mm) over 5 members" in proc.stdout
    assert (out / "tp24_gt50mm.nc").exists()
    # the chain from one YAML file: tables and pictures per variable, then all fresh
    assert "10. the chain from one YAML file: zarrport run " in proc.stdout
    assert "run again: 5 of 5 stage instances fresh, skipped" in proc.stdout
    for v in ("tas", "pr"):
        assert (out / "pipeline" / f"regional-means-{v}.parquet").stat().st_size > 0
        assert (out / "pipeline" / f"normals-{v}.nc").stat().st_size > 0
        for png in (f"normals-{v}.png", f"regional-means-{v}.png"):
            assert (out / "pipeline" / png).read_bytes()[:4] == b"\x89PNG"
    assert "pictures: normals-pr.png, normals-tas.png" in proc.stdout
    # the archive on a map: a tile was fetched and the URLs are printed
    assert "a tile of tas on 2015-07-01:" in proc.stdout and "bytes PNG" in proc.stdout
    assert "viewer:   http://127.0.0.1:" in proc.stdout
    assert "/xarray/tiles/WebMercatorQuad/1/1/0.png?collection=tas_" in proc.stdout
