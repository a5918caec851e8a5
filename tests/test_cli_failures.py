"""Clean failures found by a user (issue 10): each is one line on stderr, a non-zero exit,
nothing written -- or, for ``verify``, a verdict and exit 7 without teardown noise."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_cli import assert_clean_failure, run
from zarrport.testing.samples import write_cmip6_year

NOISE = ("Traceback", "Task was destroyed", "Event loop is closed", "never retrieved",
         "Exception ignored", "panicked", "RuntimeError")


def assert_quiet(stderr: str) -> None:
    for needle in NOISE:
        assert needle not in stderr, stderr[:2000]


@pytest.fixture
def small(tmp_path) -> Path:
    """A file whose ``tas`` chunks are referenced (not inlined), so reads go to the source."""
    return write_cmip6_year(tmp_path / "tas_2015.nc", 2015, nlat=8, nlon=16)


# ------------------------------------------------------------------ 1. verify, Icechunk


def test_verify_icechunk_touched_source_exits_7_quietly_every_time(tmp_path, small):
    out = tmp_path / "tas.icechunk"
    made = run("virtualize", str(small), "-o", str(out), "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["referenced_chunks"] > 0
    st = small.stat()
    os.utime(small, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched
    for _ in range(20):
        proc = run("verify", str(out))
        assert proc.returncode == 7, (proc.returncode, proc.stderr[-2000:])
        assert proc.stderr == "", proc.stderr[:2000]
        assert proc.stdout.startswith("FAILED")
        assert f"changed: {small.as_uri()}: modification time changed" in proc.stdout


def test_failed_icechunk_read_settles_before_exit(tmp_path, small):
    """A read that fails part-way leaves sibling reads running on zarr's loop; after
    settle_zarr_tasks the process exits quietly instead of spewing (or crashing)."""
    out = tmp_path / "tas.icechunk"
    assert run("virtualize", str(small), "-o", str(out)).returncode == 0
    st = small.stat()
    os.utime(small, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    script = (
        "import sys, zarrport\n"
        "from zarrport.eventloop import settle_zarr_tasks\n"
        f"ds = zarrport.open_dataset({str(out)!r})\n"
        "try:\n"
        "    ds.tas.values\n"
        "except Exception as err:\n"
        "    print(type(err).__name__)\n"
        "settle_zarr_tasks()\n"
    )
    for _ in range(5):
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
        assert proc.stdout.strip() == "StorageError"
        assert_quiet(proc.stderr)
        assert proc.stderr == ""


# ------------------------------------------------------------------ 4. format vs name


@pytest.mark.parametrize("fmt,name", [("json", "x.parquet"), ("parquet", "x.json"),
                                      ("icechunk", "x.json"), ("json", "x.icechunk")])
def test_format_that_contradicts_the_output_name_is_refused(tmp_path, small, fmt, name):
    out = tmp_path / name
    proc = run("virtualize", str(small), "-o", str(out), "--format", fmt)
    assert_clean_failure(proc, f"--format {fmt}", name)
    assert proc.returncode == 2
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [small.name]


def test_format_names_an_output_without_a_known_suffix(tmp_path, small):
    out = tmp_path / "refs"
    proc = run("virtualize", str(small), "-o", str(out), "--format", "json", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["format"] == "json"
    assert json.loads(out.read_text())["version"] == 1
    # and without --format the suffix decides
    proc = run("virtualize", str(small), "-o", str(tmp_path / "r.parquet"), "--json")
    assert json.loads(proc.stdout)["format"] == "parquet"


# ------------------------------------------------------------------ 5. sizes


@pytest.mark.parametrize("option,value", [
    ("--subchunk-mb", "inf"), ("--subchunk-mb", "nan"), ("--subchunk-mb", "0.000001"),
    ("--subchunk-mb", "0"), ("--subchunk-mb", "-3"), ("--inline-limit-mb", "inf"),
    ("--inline-limit-mb", "-1"),
])
def test_unusable_sizes_are_refused(tmp_path, small, option, value):
    out = tmp_path / "o.json"
    proc = run("virtualize", str(small), "-o", str(out), option, value)
    assert_clean_failure(proc, option)
    assert proc.returncode == 2
    assert not out.exists()


def test_smallest_subchunk_is_accepted(tmp_path, small):
    from zarrport.virtual.parse import MIN_SUBCHUNK_MB

    proc = run("virtualize", str(small), "-o", str(tmp_path / "o.json"), "--subchunk-mb",
               str(MIN_SUBCHUNK_MB))
    assert proc.returncode == 0, proc.stderr
    proc = run("inspect", str(small), "--subchunk-mb", "inf")
    assert_clean_failure(proc, "--subchunk-mb")


# ------------------------------------------------------------------ 2. batch of nothing


def test_batch_of_nothing_is_an_error_and_creates_no_output(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a source")
    cases = [
        (str(tmp_path / "nomatch*.nc"), "no file matches"),
        (str(tmp_path / "missing") + "/", "nothing at"),
        (str(empty) + "/", "no source files under"),
    ]
    for source, needle in cases:
        out = tmp_path / "out"
        proc = run("batch", source, "-o", str(out))
        assert_clean_failure(proc, needle)
        assert proc.returncode == 3
        assert not out.exists(), sorted(p.name for p in out.iterdir())
    ledger = tmp_path / "elsewhere.sqlite"
    proc = run("batch", str(tmp_path / "nomatch*.nc"), "-o", str(tmp_path / "o2"), "--ledger",
               str(ledger))
    assert_clean_failure(proc, "no file matches")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_watch_of_an_empty_prefix_still_polls(tmp_path):
    from zarrport.pipeline.watch import watch

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    seen = []
    n = watch(str(incoming), str(tmp_path / "out"), interval=0, max_polls=1,
              on_poll=lambda i, result, error: seen.append((result.counts["new"], error)))
    assert n == 1 and seen == [(0, None)]


# ------------------------------------------------------------------ 3. S3 without credentials


@pytest.fixture
def metadata_endpoint():
    """A stand-in for the cloud metadata endpoint on 127.0.0.1 that records every request:
    pointed at by AWS_EC2_METADATA_SERVICE_ENDPOINT (botocore, AWS SDK) and
    AWS_METADATA_ENDPOINT (object_store), so nothing could reach 169.254.169.254 anyway."""
    import http.server
    import threading

    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _any(self) -> None:
            hits.append(f"{self.command} {self.path}")
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_PUT = _any

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def _no_credentials_env(tmp_path: Path, metadata_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        HOME=str(tmp_path),  # no ~/.aws
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        AWS_EC2_METADATA_SERVICE_ENDPOINT=metadata_url + "/",
        AWS_METADATA_ENDPOINT=metadata_url,
        **extra,
    )
    return env


def test_s3_without_credentials_is_one_line_and_never_asks_instance_metadata(
        tmp_path, small, s3_server, metadata_endpoint):
    url, hits = metadata_endpoint
    s3_server.create_bucket("nocreds")
    s3_server.put_object("nocreds", "a/tas_2015.nc", small.read_bytes())
    env = _no_credentials_env(tmp_path, url)
    endpoint = f"endpoint_url={s3_server.endpoint_url}"
    commands = [
        ["virtualize", "s3://nocreds/a/*.nc", "-o", str(tmp_path / "o.json")],
        ["virtualize", "s3://nocreds/a/tas_2015.nc", "-o", str(tmp_path / "o.json")],
        ["virtualize", "s3://nocreds/a/tas_2015.nc", "-o", str(tmp_path / "o.icechunk")],
        ["batch", "s3://nocreds/a/", "-o", str(tmp_path / "batch")],
        ["inspect", "s3://nocreds/a/tas_2015.nc"],
    ]
    for args in commands:
        proc = subprocess.run([sys.executable, "-m", "zarrport", *args, "--storage-option",
                               endpoint], capture_output=True, text=True, env=env, timeout=120)
        assert_clean_failure(proc, "no S3 credentials", "anon=true", "AWS_")
        assert "169.254" not in proc.stderr and "api/token" not in proc.stderr
    assert hits == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [small.name]

    # credentials from a shared credentials file work, and still nothing asks the endpoint
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = {s3_server.key}\n"
                     f"aws_secret_access_key = {s3_server.secret}\n")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(creds)
    for out in ("o.json", "o.icechunk"):
        proc = subprocess.run([sys.executable, "-m", "zarrport", "virtualize",
                               "s3://nocreds/a/*.nc", "-o", str(tmp_path / out),
                               "--storage-option", endpoint], capture_output=True, text=True,
                              env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
    assert hits == []


def test_s3_instance_metadata_only_when_the_user_asks(tmp_path, s3_server, metadata_endpoint):
    url, hits = metadata_endpoint
    env = _no_credentials_env(tmp_path, url, AWS_EC2_METADATA_DISABLED="false")
    s3_server.create_bucket("nocreds")
    proc = subprocess.run([sys.executable, "-m", "zarrport", "inspect",
                           "s3://nocreds/none.nc", "--storage-option",
                           f"endpoint_url={s3_server.endpoint_url}"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert hits, "AWS_EC2_METADATA_DISABLED=false set by the user is respected"


# ------------------------------------------------------------------ 6. a group that is not there


def _grouped(path: Path) -> Path:
    import netCDF4
    import numpy as np

    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("x", 4)
        for name in ("forecast", "analysis"):
            g = ds.createGroup(name)
            g.createVariable("v", "f4", ("x",))[:] = np.arange(4)
        ds["forecast"].createGroup("members")
    return path


@pytest.mark.parametrize("command", ["virtualize", "inspect"])
def test_missing_group_is_named_with_the_groups_there_are(tmp_path, command):
    src = _grouped(tmp_path / "grouped.nc")
    out = tmp_path / "o.json"
    args = ["-o", str(out)] if command == "virtualize" else []
    proc = run(command, str(src), *args, "--group", "/nope")
    assert_clean_failure(proc, "'/nope' does not exist",
                         "/, /analysis, /forecast, /forecast/members")
    assert "damaged" not in proc.stderr
    assert proc.returncode == 2
    proc = run(command, str(src), *args, "--group", "/forecast/v")
    assert_clean_failure(proc, "is a variable, not a group")
    assert not out.exists()
    proc = run(command, str(src), *args, "--group", "/forecast")
    assert proc.returncode == 0, proc.stderr


def test_group_of_a_netcdf3_file_is_refused(tmp_path):
    import numpy as np
    import xarray as xr

    src = tmp_path / "classic.nc"
    xr.Dataset({"v": ("x", np.arange(3.0))}).to_netcdf(src, format="NETCDF3_CLASSIC")
    proc = run("virtualize", str(src), "-o", str(tmp_path / "o.json"), "--group", "g")
    assert_clean_failure(proc, "NetCDF-3 files have no groups")


# ------------------------------------------------------------------ 7. library warnings


def _warning_file(path: Path) -> Path:
    """Times past 2262 (xarray: SerializationWarning, cftime) and a char variable (zarr:
    UnstableSpecificationWarning for NullTerminatedBytes in Icechunk)."""
    import netCDF4
    import numpy as np

    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", 3)
        ds.createDimension("n", 1)
        t = ds.createVariable("time", "f8", ("time",))
        t.units, t.calendar = "days since 2300-01-01", "standard"
        t[:] = [0, 1, 2]
        ds.createVariable("v", "f4", ("time",))[:] = [1, 2, 3]
        ds.createVariable("flag", "S1", ("n",))[:] = np.array([b"a"])
    return path


def test_library_warnings_are_hidden_or_one_zarrport_line(tmp_path):
    src = _warning_file(tmp_path / "warn.nc")
    proc = run("virtualize", str(src), "-o", str(tmp_path / "w.icechunk"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("zarrport: note: data type NullTerminatedBytes(length=1) has "
                               "no Zarr v3 specification")
    assert run("virtualize", str(src), "-o", str(tmp_path / "w.json")).returncode == 0
    for out in ("w.json", "w.icechunk"):
        for command in ("verify", "info"):
            proc = run(command, str(tmp_path / out))
            assert proc.returncode == 0, proc.stderr
            assert "Warning" not in proc.stderr and "site-packages" not in proc.stderr
            assert proc.stderr == "", proc.stderr
    # asked for with -W / PYTHONWARNINGS, warnings are the libraries' own again
    proc = subprocess.run([sys.executable, "-W", "default", "-m", "zarrport", "verify",
                           str(tmp_path / "w.json")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "SerializationWarning" in proc.stderr


def test_importing_zarrport_leaves_warnings_alone(tmp_path):
    src = _warning_file(tmp_path / "warn.nc")
    script = (
        "import warnings, xarray as xr\n"
        "filters, show = list(warnings.filters), warnings.showwarning\n"
        "import zarrport, zarrport.open, zarrport.verify, zarrport.cli\n"
        "assert warnings.filters == filters and warnings.showwarning is show\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always')\n"
        f"    xr.open_dataset({str(src)!r}).load()\n"
        "print(sorted({w.category.__name__ for w in seen}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "SerializationWarning" in proc.stdout


def test_unknown_warnings_are_one_line():
    from zarrport.cli.library_warnings import one_line

    assert one_line(FutureWarning, "x will change\n  in version 2") == \
        "warning: x will change (FutureWarning)"
    assert one_line(type("SerializationWarning", (UserWarning,), {}),
                    "Unable to decode time axis") is None


# ------------------------------------------------------------------ 8. --skip-unsupported


def _with_unsupported(path: Path) -> Path:
    """A CMIP6-like year plus what cannot be referenced faithfully: a compound variable, a
    compound attribute on ``tas`` and a compound global attribute."""
    import h5py
    import numpy as np

    comp = np.dtype([("a", "<i4"), ("b", "<f8")])
    with h5py.File(path, "a") as f:
        f.create_dataset("pairs", data=np.zeros(10, dtype=comp))
        f["tas"].attrs["calib"] = np.zeros(1, dtype=comp)
        f.attrs["gcomp"] = np.zeros(1, dtype=comp)
    return path


EXPECTED_SKIPS = {("pairs", None), ("tas", "calib"), (None, "gcomp")}


def _skips(items: list[dict]) -> set[tuple]:
    assert all(i["reason"] for i in items)
    return {(i["variable"], i["attribute"]) for i in items}


@pytest.mark.parametrize("fmt", ["json", "icechunk"])
def test_skip_unsupported_virtualize(tmp_path, fmt):
    import zarrport

    src = _with_unsupported(write_cmip6_year(tmp_path / "tas_2015.nc", 2015, nlat=4, nlon=8))
    out = tmp_path / f"o.{fmt}"
    proc = run("virtualize", str(src), "-o", str(out))  # off by default: refused
    assert_clean_failure(proc, "cannot be virtualized")
    assert proc.returncode == 5 and not out.exists()

    proc = run("virtualize", str(src), "-o", str(out), "--skip-unsupported", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert _skips(result["skipped"]) == EXPECTED_SKIPS
    assert "pairs" not in result["variables"] and "tas" in result["variables"]
    ds = zarrport.open_dataset(str(out))
    assert "pairs" not in ds.variables and "calib" not in ds.tas.attrs
    assert ds.tas.attrs["units"] == "K" and "gcomp" not in ds.attrs
    from zarrport.open import detect, read_provenance

    url = out.as_uri()
    record = read_provenance(url, detect(url, None), None)
    assert _skips(record["skipped"]) == EXPECTED_SKIPS
    # verify compares everything else, and expects what was left out to be missing
    check = run("verify", str(out))
    assert check.returncode == 0, check.stdout + check.stderr

    proc = run("virtualize", str(src), "-o", str(out), "--skip-unsupported", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert "skipped (3, --skip-unsupported):" in proc.stdout
    for line in ("variable pairs: compound", "attribute tas.calib: ",
                 "global attribute gcomp: "):
        assert line in proc.stdout, proc.stdout


def test_skip_unsupported_batch(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for year in (2015, 2016):
        _with_unsupported(write_cmip6_year(src / f"tas_{year}.nc", year, nlat=4, nlon=8))
    out = tmp_path / "out"
    proc = run("batch", str(src) + "/", "-o", str(out), "--json")
    assert proc.returncode == 9
    assert {f["code"] for f in json.loads(proc.stdout)["failures"]} == {"unsupported_variable"}
    # the same files, refused before, are tried again with --skip-unsupported
    proc = run("batch", str(src) + "/", "-o", str(out), "--skip-unsupported", "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    result = json.loads(proc.stdout)
    assert result["counts"]["failed"] == 0
    (col,) = result["collections"].values()
    assert col["dims"]["time"] == 730
    assert _skips(col["skipped"]) == EXPECTED_SKIPS
    text = run("batch", str(src) + "/", "-o", str(out), "--skip-unsupported")
    assert text.returncode == 0
    assert "skipped (--skip-unsupported): variable pairs: compound" in text.stdout
    import zarrport

    repo = out / col["icechunk"]
    ds = zarrport.open_dataset(str(repo))
    assert "pairs" not in ds.variables and ds.sizes["time"] == 730
    check = run("verify", str(repo))
    assert check.returncode == 0, check.stdout + check.stderr


def test_no_credentials_judged_without_botocore(tmp_path, monkeypatch):
    """Without the [cloud] extra (no botocore) the check reads what object_store/Icechunk
    would: environment variables, AWS_PROFILE, the shared files."""
    from zarrport import storage

    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_REGION", "us-east-1")  # never a bucket-region lookup
    monkeypatch.setitem(sys.modules, "botocore", None)  # import botocore -> ImportError
    assert storage._no_s3_credentials()
    assert storage._s3_credentials_from_environment() is None
    with pytest.raises(storage.StorageError, match="no S3 credentials"):
        storage._s3_settings({}, "bucket", for_fsspec=False)
    monkeypatch.setenv("AWS_PROFILE", "work")
    assert not storage._no_s3_credentials()
    monkeypatch.delenv("AWS_PROFILE")
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[default]\n")
    assert not storage._no_s3_credentials()


@pytest.fixture
def denying_s3():
    """An S3 endpoint on 127.0.0.1 that answers every request 403 AccessDenied."""
    import http.server
    import threading

    body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
            b"<Message>Access Denied</Message></Error>")

    class Handler(http.server.BaseHTTPRequestHandler):
        def _deny(self) -> None:
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_PUT = do_POST = _deny

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("command", ["virtualize", "batch"])
def test_s3_listing_refused_is_one_line(tmp_path, denying_s3, command):
    out = tmp_path / ("o.json" if command == "virtualize" else "out")
    proc = run(command, "s3://bkt/*.nc", "-o", str(out), "--storage-option", "key=k",
               "--storage-option", "secret=s", "--storage-option", f"endpoint_url={denying_s3}")
    assert_clean_failure(proc, "cannot list s3://bkt/*.nc")
    assert proc.returncode == 8
    assert not out.exists()


def test_dask_still_computes_after_the_cli_ran_in_process():
    """main() settles Dask's thread pool on the way out; a process that goes on computing
    (tests, notebooks calling main()) must get a working pool, not "cannot schedule new
    futures after shutdown"."""
    import dask.array as da

    from zarrport.cli import main

    assert float(da.ones(10, chunks=2).sum().compute()) == 10.0  # the pool exists
    with contextlib.suppress(SystemExit):
        main(["--version"])
    assert float(da.ones(10, chunks=2).sum().compute()) == 10.0
