"""``zarrport serve`` as a real process: tiles, the STAC API and the reference API in one
server on 127.0.0.1, and its one-line refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from servers import ManagedProcess, free_port
from zarrport.errors import EXIT_CODES
from zarrport.testing.samples import write_cmip6_year

TOKEN = "serve-cli-token-" + "y" * 20
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


def _get(url: str, **kw) -> tuple[int, dict[str, str], bytes]:
    try:
        with _OPENER.open(urllib.request.Request(url, **kw), timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve-cli")
    (root / "data").mkdir()
    write_cmip6_year(root / "data" / "tas_2015.nc", 2015, nlat=18, nlon=36, time_chunk=1)
    return root


def test_serve_process_tiles_stac_and_references(archive, tmp_path, monkeypatch):
    """One server: a tile of the NetCDF file, its point series equal to netCDF4's, the
    reference API behind the token named by --token-env, and the reference it wrote mapped
    by the same server."""
    from zarrport.pipeline import run_batch

    stac = tmp_path / "stac"
    run_batch(str(archive / "data" / "*.nc"), str(tmp_path / "refs"), stac=str(stac))
    monkeypatch.setenv("MY_TOKEN", TOKEN)
    monkeypatch.setenv("ZARRPORT_OUTPUT", str(tmp_path / "served-refs"))
    monkeypatch.delenv("ZARRPORT_API_TOKEN", raising=False)
    monkeypatch.delenv("ZARRPORT_ALLOWED_PREFIXES", raising=False)
    monkeypatch.delenv("ZARRPORT_STORAGE_OPTIONS", raising=False)
    port = free_port()
    server = ManagedProcess(
        "zarrport-serve-tiles",
        [sys.executable, "-m", "zarrport", "serve", "--allow", str(archive / "data"),
         "--allow", str(tmp_path / "refs"), "--catalog", str(stac), "--token-env", "MY_TOKEN",
         "--port", str(port), "--log-level", "warning"],
        tmp_path / "serve.log",
    )
    server.start()
    base = f"http://127.0.0.1:{port}"
    nc = archive / "data" / "tas_2015.nc"
    try:
        server.wait_until_ready(f"{base}/healthz", timeout=90)
        status, headers, body = _get(f"{base}/xarray/tiles/WebMercatorQuad/1/1/0.png?url={nc}"
                                     "&variable=tas&sel=time=2015-03-01&rescale=220,310")
        assert status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n", body[:200]
        assert headers["x-zarrport-cache"] == "miss"

        status, _, body = _get(f"{base}/xarray/point/20.5,-5.5?url={nc}&variable=tas")
        assert status == 200, body
        got = np.array(json.loads(body)["values"], dtype="float64")
        with netCDF4.Dataset(nc) as f:
            lat, lon = f["lat"][:], f["lon"][:]
            i, j = int(np.abs(lat - -5.5).argmin()), int(np.abs(lon - 20.5).argmin())
            want = np.ma.filled(f["tas"][:, i, j].astype("float64"), np.nan)
        np.testing.assert_allclose(got, want, rtol=1e-6)

        status, _, body = _get(f"{base}/stac/collections")
        assert status == 200 and json.loads(body)["collections"]

        # the write endpoint: the token comes from --token-env
        req = {"method": "POST", "data": json.dumps({"url": str(nc)}).encode(),
               "headers": {"Content-Type": "application/json"}}
        status, _, body = _get(f"{base}/api/references", **req)
        assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
        req["headers"]["Authorization"] = f"Bearer {TOKEN}"
        status, _, body = _get(f"{base}/api/references", **req)
        assert status == 201, body
        reference = json.loads(body)["reference"]
        status, _, png = _get(f"{base}/xarray/tiles/WebMercatorQuad/0/0/0.png?url={reference}"
                              "&variable=tas&sel=time=2015-03-01&rescale=220,310")
        assert status == 200 and png[:4] == b"\x89PNG"

        status, _, body = _get(f"{base}/metrics")
        text = body.decode()
        assert 'zarrport_dataset_cache_requests_total{outcome="hit"} 1' in text, text
        assert 'zarrport_dataset_cache_requests_total{outcome="miss"} 2' in text, text
    finally:
        server.stop()


@pytest.mark.parametrize("args, message", [
    ([], "nothing to serve: name the directories"),
    (["--allow", "/does/not/exist"], "--allow /does/not/exist: not an existing directory"),
    (["--allow", ".", "--catalog", "."], "no catalog.json there"),
])
def test_serve_refuses_a_bad_configuration_in_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.delenv("ZARRPORT_OUTPUT", raising=False)
    proc = subprocess.run([sys.executable, "-m", "zarrport", "serve", *args, "--port", "0"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == EXIT_CODES["invalid_argument"], proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("zarrport: error: "), proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr


def test_serve_help_names_the_endpoints():
    proc = subprocess.run([sys.executable, "-m", "zarrport", "serve", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for text in ("--allow", "--catalog", "--token-env", "--cors-origin", "/xarray", "/stac",
                 "/api/references"):
        assert text in proc.stdout
