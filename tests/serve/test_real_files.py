"""``zarrport serve --allow ../shared/data/real``: every real sample file (NetCDF-3/4, HDF5,
GRIB 1/2, inventories, broken ones) answers ``/xarray/info`` with 200 or a 4xx JSON error
-- never a 5xx, never a hang -- for each data variable netCDF4 / ecCodes sees in it, and
for a made-up one.

A real ``zarrport serve`` process on 127.0.0.1 (the CLI path), requests with a timeout. The
directory is read-only for these tests: its listing and mtimes are compared before and
after.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
if not REAL.is_dir():
    REAL = Path("/work/shared/data/real")
MAX_BYTES = 200 * 1024 * 1024
MAX_VARIABLES = 8  # per file (plus the made-up one)
TIMEOUT = 60.0  # seconds per request
MADE_UP = "zz_no_such_variable"

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"no real sample files at {REAL}")


def _files() -> list[Path]:
    if not REAL.is_dir():
        return []
    return sorted(p for p in REAL.rglob("*") if p.is_file())


def _snapshot() -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(REAL)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in REAL.rglob("*")}


def _netcdf_variables(path: Path) -> list[str]:
    import netCDF4

    try:
        with netCDF4.Dataset(path) as ds:
            return [name for name, var in ds.variables.items()
                    if name not in ds.dimensions or var.ndim != 1]
    except Exception:  # noqa: BLE001 - not a file netCDF4 reads: only the made-up name
        return []


def _grib_variables(path: Path) -> list[str]:
    import eccodes

    names: list[str] = []
    try:
        with open(path, "rb") as fh:
            while True:
                gid = eccodes.codes_grib_new_from_file(fh)
                if gid is None:
                    break
                try:
                    name = eccodes.codes_get(gid, "shortName")
                finally:
                    eccodes.codes_release(gid)
                if name not in names:
                    names.append(name)
    except Exception:  # noqa: BLE001 - a broken file: what was read so far
        pass
    return names


def variables_of(path: Path) -> list[str]:
    head = path.read_bytes()[:8]
    if head.startswith((b"CDF", b"\x89HDF")):
        names = _netcdf_variables(path)
    elif b"GRIB" in path.read_bytes()[:4096] or path.suffix in (".grib", ".grib2", ".grb"):
        names = _grib_variables(path)
    else:
        names = []
    return names[:MAX_VARIABLES] + [MADE_UP]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    port = _free_port()
    log = tmp_path_factory.mktemp("real-serve") / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZARRPORT_")}
    if env.get("PYTHONPATH"):  # PYTHONPATH=src: the same source in another directory
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p)
                                            for p in env["PYTHONPATH"].split(os.pathsep))
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    before = _snapshot()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zarrport", "serve", "--allow", str(REAL), "--host",
             "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(log.parent))
    import httpx

    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, timeout=TIMEOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"zarrport serve did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        tally: dict[int, int] = {}
        yield {"client": client, "log": log, "proc": proc, "tally": tally}
        print(f"\nreal files: /xarray/info answers by status {dict(sorted(tally.items()))}")
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert _snapshot() == before, "serving changed the real sample directory"


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(REAL)))
def test_real_file_info_is_200_or_a_4xx_json_error(real_server, path):
    import httpx

    if path.stat().st_size > MAX_BYTES:
        pytest.skip(f"{path.name} is larger than {MAX_BYTES >> 20} MB")
    client: httpx.Client = real_server["client"]
    problems = []
    for variable in variables_of(path):
        started = time.monotonic()
        try:
            r = client.get("/xarray/info", params={"url": str(path), "variable": variable})
        except httpx.TimeoutException:
            problems.append(f"{variable}: no answer within {TIMEOUT:.0f} s")
            continue
        took = time.monotonic() - started
        real_server["tally"][r.status_code] = real_server["tally"].get(r.status_code, 0) + 1
        if r.status_code == 200:
            body = r.json()
            assert body["name"] == variable, body
            continue
        if not 400 <= r.status_code < 500:
            problems.append(f"{variable}: {r.status_code} {r.text[:300]} ({took:.1f} s)")
            continue
        body = r.json()
        assert set(body) == {"error"} and body["error"]["code"], (variable, body)
        assert body["error"]["message"], (variable, body)
        if variable == MADE_UP:
            assert r.status_code in (400, 404, 422), (r.status_code, body)
    if problems:
        log = real_server["log"].read_text(errors="replace")[-4000:]
        pytest.fail(f"{path.relative_to(REAL)}:\n" + "\n".join(problems) + f"\n--- log:\n{log}")
