"""A command that needs an extra the installation lacks says which one, in one line.

A missing package is simulated as Python sees one: ``sys.modules[name] = None`` makes
``import name`` raise ModuleNotFoundError and ``importlib.util.find_spec(name)`` return None
(what xarray and dask check), in a fresh interpreter running zarrport's CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zarrport.extras import EXTRAS
from zarrport.testing.samples import write_cmip6_year

MAIN = ("import sys; sys.modules.update(dict.fromkeys(sys.argv[1].split(','))); "
        "from zarrport.cli import main; main(sys.argv[2:])")
# an S3 URL must never send a request off this machine, even one that fails
S3_LOOPBACK = ["--storage-option", "endpoint_url=http://127.0.0.1:9",
               "--storage-option", "key=x", "--storage-option", "secret=y"]


def run_without(tmp_path: Path, modules: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", MAIN, modules, *args], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)


def assert_names_extra(proc: subprocess.CompletedProcess, extra: str, module: str) -> None:
    assert proc.returncode == 11, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("zarrport: error: ")
    assert f"[{extra}] extra" in lines[0] and f"pip install 'zarrport[{extra}]'" in lines[0]
    assert module in lines[0]


@pytest.mark.parametrize("module", EXTRAS["grib"][1])
def test_grib_needs_the_grib_extra(tmp_path, module):
    proc = run_without(tmp_path, module, "grib", "ingest", "gefs",
                       str(tmp_path / "gefs.20250101/00"),
                       "-o", str(tmp_path / "gefs.icechunk"))
    assert_names_extra(proc, "grib", module)
    assert not (tmp_path / "gefs.icechunk").exists()


def test_serve_needs_the_serve_extra(tmp_path):
    proc = run_without(tmp_path, "fastapi", "serve")
    assert_names_extra(proc, "serve", "fastapi")


@pytest.mark.parametrize(("url", "module", "options"), [
    ("s3://bucket/tas.icechunk", "s3fs", S3_LOOPBACK),
    ("az://container/tas.icechunk", "adlfs", ["--storage-option", "account_name=acct"])])
def test_object_stores_need_the_cloud_extra(tmp_path, url, module, options):
    proc = run_without(tmp_path, module, "info", url, *options)
    assert_names_extra(proc, "cloud", module)


def test_a_dask_cluster_needs_the_dask_extra(tmp_path):
    write_cmip6_year(tmp_path / "data" / "tas_2015.nc", 2015, nlat=4, nlon=8)
    out = tmp_path / "refs"
    proc = run_without(tmp_path, "distributed", "batch", str(tmp_path / "data" / "*.nc"),
                       "-o", str(out), "--scheduler", "tcp://127.0.0.1:1")
    assert_names_extra(proc, "dask", "distributed")
    assert not out.exists()


@pytest.mark.parametrize(("command", "module"), [
    (["normals", "--variable", "tas", "--start-year", "2015", "--end-year", "2015",
      "--window", "1"], "flox"),
    (["normals", "--variable", "tas", "--start-year", "2015", "--end-year", "2015",
      "--window", "1", "--plot", "n.png"], "matplotlib"),
    (["regional-means", "--regions", "CONUS"], "shapely"),
    (["regional-means", "--regions", "CONUS"], "distributed")])
def test_analyses_need_the_analysis_extra(tmp_path, command, module):
    src = write_cmip6_year(tmp_path / "tas_2015.nc", 2015, nlat=4, nlon=8)
    out = tmp_path / ("n.nc" if command[0] == "normals" else "m.csv")
    proc = run_without(tmp_path, module, "analyze", command[0], str(src), *command[1:],
                       "-o", str(out))
    assert_names_extra(proc, "analysis", module)
    assert not out.exists() and not (tmp_path / "n.png").exists()


def test_netcdf_works_without_any_extra(tmp_path):
    """The base install's job with every extra's packages missing at once."""
    src = write_cmip6_year(tmp_path / "tas_2015.nc", 2015, nlat=4, nlon=8)
    every = ",".join(m for _, modules in EXTRAS.values() for m in modules)
    for args in (["virtualize", str(src), "-o", str(tmp_path / "tas.icechunk")],
                 ["virtualize", str(src), "-o", str(tmp_path / "tas.json")],
                 ["info", str(tmp_path / "tas.icechunk"), "--json"],
                 ["verify", str(tmp_path / "tas.icechunk")],
                 ["verify", str(tmp_path / "tas.json")]):
        proc = run_without(tmp_path, every, *args)
        assert proc.returncode == 0, (args, proc.stderr)
