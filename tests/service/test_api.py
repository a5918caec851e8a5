"""``POST /api/references`` as a client meets it: FastAPI's TestClient against real files on
disk and in moto's S3, and ``zarrport serve`` as a real process. No mocks of zarrport."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

with warnings.catch_warnings():  # Starlette >= 1.x warns that httpx is deprecated for it
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

import zarrport
from servers import ManagedProcess, free_port
from zarrport.errors import EXIT_CODES, InvalidArgumentError
from zarrport.service import HTTP_STATUS, ServiceSettings, create_app
from zarrport.service.references import reference_url
from zarrport.testing.samples import write_cmip6_year

TOKEN = "test-token-" + "x" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SAMPLE = {"nlat": 6, "nlon": 12, "time_chunk": 73}


# --------------------------------------------------------------------------- helpers


def assert_same_as_netcdf4(reference: str, path: Path, storage_options=None) -> None:
    """The references read back exactly what netCDF4 reads from the file."""
    with zarrport.open_dataset(reference, storage_options=storage_options) as actual, \
            xr.open_dataset(path, engine="netcdf4") as expected:
        assert set(actual.variables) == set(expected.variables)
        assert dict(actual.sizes) == dict(expected.sizes)
        for name, ev in expected.variables.items():
            a, e = np.asarray(actual[name].values), np.asarray(ev.values)
            assert a.dtype == e.dtype, name
            np.testing.assert_array_equal(a, e, err_msg=name)
        assert actual.attrs["tracking_id"] == expected.attrs["tracking_id"]


def assert_error(response, status: int, code: str, *needles: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert "Traceback" not in response.text
    for needle in needles:
        assert needle in body["error"]["message"], body
    return body


@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def sample(data_dir) -> Path:
    return write_cmip6_year(data_dir / "tas_day_2020.nc", 2020, **SAMPLE)


@pytest.fixture
def settings(tmp_path, data_dir) -> ServiceSettings:
    return ServiceSettings(output=str(tmp_path / "refs"), allowed_prefixes=(str(data_dir),),
                           api_token=TOKEN)


@pytest.fixture
def client(settings) -> TestClient:
    return TestClient(create_app(settings))


# --------------------------------------------------------------------------- 201 / 200


def test_post_writes_reference_and_describes_it(client, settings, sample):
    r = client.post("/api/references", json={"url": str(sample)}, headers=AUTH)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["url"] == sample.as_uri()
    assert body["format"] == "json" and body["created"] is True
    assert body["reference"] == reference_url(sample.as_uri(), settings.output)
    assert body["reference"].startswith(settings.output)
    assert r.headers["location"] == body["reference"]
    assert body["source"]["size"] == sample.stat().st_size
    assert body["dims"] == {"time": 365, "lat": 6, "lon": 12, "bnds": 2}
    tas = body["variables"]["tas"]
    assert tas["dtype"] == "float32" and tas["dims"] == ["time", "lat", "lon"]
    assert tas["shape"] == [365, 6, 12]
    assert tas["attrs"]["units"] == "K" and tas["attrs"]["standard_name"] == "air_temperature"
    assert tas["attrs"]["_FillValue"] == pytest.approx(1e20)
    time_ = body["variables"]["time"]
    assert time_["dtype"] == "float64"
    assert time_["attrs"]["units"].startswith("days since") and time_["attrs"]["calendar"]
    with xr.open_dataset(sample, engine="netcdf4") as ds:
        assert body["attributes"]["tracking_id"] == ds.attrs["tracking_id"]
    assert_same_as_netcdf4(body["reference"], sample)


def test_repost_unchanged_is_200_and_changed_source_is_rewritten(client, sample):
    first = client.post("/api/references", json={"url": str(sample)}, headers=AUTH)
    assert first.status_code == 201
    ref = Path(first.json()["reference"].removeprefix("file://"))
    written = ref.stat().st_mtime_ns

    again = client.post("/api/references", json={"url": sample.as_uri()}, headers=AUTH)
    assert again.status_code == 200, again.text
    assert again.json()["created"] is False
    assert again.json()["reference"] == first.json()["reference"]
    assert ref.stat().st_mtime_ns == written  # not rewritten

    # the file changes (another year, other values): the reference follows it
    write_cmip6_year(sample, 2021, seed=7, **SAMPLE)
    os.utime(sample, (time.time() + 5, time.time() + 5))
    changed = client.post("/api/references", json={"url": str(sample)}, headers=AUTH)
    assert changed.status_code == 201, changed.text
    assert changed.json()["reference"] == first.json()["reference"]
    assert changed.json()["source"]["mtime"] != first.json()["source"]["mtime"]
    assert_same_as_netcdf4(changed.json()["reference"], sample)


def test_same_name_in_other_directories_gets_other_references(client, settings, data_dir):
    a = write_cmip6_year(data_dir / "a" / "tas.nc", 2015, **SAMPLE)
    b = write_cmip6_year(data_dir / "b" / "tas.nc", 2016, **SAMPLE)
    refs = [client.post("/api/references", json={"url": str(p)}, headers=AUTH).json()
            ["reference"] for p in (a, b)]
    assert refs[0] != refs[1]
    assert_same_as_netcdf4(refs[0], a)
    assert_same_as_netcdf4(refs[1], b)


# --------------------------------------------------------------------------- 400


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{}", "no 'url'"),
        (b'{"uri": "x.nc"}', "'uri'"),
        (b"not json", "not JSON"),
        (b"", "empty"),
        (b"[]", "JSON object"),
        (b'{"url": 5}', "url"),
        (b'{"url": ""}', "non-empty"),
        (b'{"url": "   "}', "non-empty"),
        (b'{"url": "ftp://host/a.nc"}', "unsupported URL scheme"),
    ],
)
def test_missing_or_bad_url_is_400(client, body, needle):
    r = client.post("/api/references", content=body,
                    headers={**AUTH, "Content-Type": "application/json"})
    assert_error(r, 400, "invalid_argument", needle)


def test_url_outside_the_allowed_prefixes_is_400(client, tmp_path, data_dir, sample):
    outside = write_cmip6_year(tmp_path / "private" / "tas.nc", 2020, **SAMPLE)
    sibling = write_cmip6_year(tmp_path / "data-private" / "tas.nc", 2020, **SAMPLE)
    link = data_dir / "link.nc"
    link.symlink_to(outside)
    cases = [
        str(outside),
        str(sibling),  # shares the prefix string "…/data" but is another directory
        f"{data_dir}/../private/tas.nc",
        f"file://{data_dir}/%2e%2e/private/tas.nc",
        str(link),  # a symlink inside the allowed directory pointing outside
        "s3://bucket/data/tas.nc",
        f"{data_dir}/*.nc",
        str(data_dir) + "/",
    ]
    for url in cases:
        r = client.post("/api/references", json={"url": url}, headers=AUTH)
        assert_error(r, 400, "invalid_argument")
    assert not (tmp_path / "refs").exists() or not any((tmp_path / "refs").iterdir())


# --------------------------------------------------------------------------- 401


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
        {"Authorization": TOKEN},
    ],
)
def test_no_or_wrong_token_is_401(client, sample, settings, headers):
    r = client.post("/api/references", json={"url": str(sample)}, headers=headers)
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    # before the body is looked at: a bad body is 401 too, and nothing was written
    r = client.post("/api/references", content=b"junk", headers=headers)
    assert r.status_code == 401
    assert not Path(settings.output.removeprefix("file://")).exists()


def test_create_app_and_settings_refuse_a_missing_token(tmp_path):
    base = ServiceSettings(output=str(tmp_path), allowed_prefixes=("*",))
    with pytest.raises(InvalidArgumentError, match="token"):
        create_app(base)
    env = {"ZARRPORT_OUTPUT": str(tmp_path), "ZARRPORT_ALLOWED_PREFIXES": "*"}
    with pytest.raises(InvalidArgumentError, match="ZARRPORT_API_TOKEN"):
        ServiceSettings.from_env(env)
    with pytest.raises(InvalidArgumentError, match="ZARRPORT_ALLOWED_PREFIXES"):
        ServiceSettings.from_env({"ZARRPORT_API_TOKEN": "t", "ZARRPORT_OUTPUT": "x"})
    with pytest.raises(InvalidArgumentError, match="ZARRPORT_STORAGE_OPTIONS"):
        ServiceSettings.from_env({**env, "ZARRPORT_API_TOKEN": "t",
                                  "ZARRPORT_STORAGE_OPTIONS": "{bad"})
    ok = ServiceSettings.from_env({**env, "ZARRPORT_API_TOKEN": "t",
                                   "ZARRPORT_STORAGE_OPTIONS": '{"anon": true}'})
    assert ok.storage_options == {"anon": True} and ok.output == tmp_path.as_uri() + "/"


# --------------------------------------------------------------------------- 422


def test_files_that_cannot_be_referenced_are_422(client, data_dir, sample):
    empty = data_dir / "empty.nc"
    empty.write_bytes(b"")
    text = data_dir / "notes.nc"
    text.write_text("this is not a NetCDF file\n" * 50)
    noise = data_dir / "noise.nc"
    noise.write_bytes(os.urandom(8192))
    truncated = data_dir / "truncated.nc"
    truncated.write_bytes(sample.read_bytes()[: sample.stat().st_size // 3])
    cases = {
        empty: ("unrecognized_format", "empty"),
        text: ("unrecognized_format", "not a NetCDF"),
        noise: ("unrecognized_format", "not a NetCDF"),
        truncated: ("corrupt_source", "truncated"),
        data_dir / "missing.nc": ("not_found", "no such file"),
        data_dir / "sub": ("not_a_file", "directory"),
    }
    (data_dir / "sub").mkdir()
    for path, (code, needle) in cases.items():
        r = client.post("/api/references", json={"url": str(path)}, headers=AUTH)
        assert_error(r, 422, code, needle)


def test_unexpected_failure_is_500_without_details(settings, sample, monkeypatch):
    import zarrport.service.app as app_module

    def boom(url, settings):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(app_module, "reference_file", boom)
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    r = client.post("/api/references", json={"url": str(sample)}, headers=AUTH)
    body = assert_error(r, 500, "internal_error")
    assert "secret" not in r.text and "RuntimeError" not in r.text
    assert body["error"]["message"]


def test_every_error_code_has_an_http_status():
    assert set(EXIT_CODES) <= set(HTTP_STATUS)
    assert HTTP_STATUS["invalid_argument"] == 400
    assert HTTP_STATUS["not_found"] == 422
    for code in ("unrecognized_format", "corrupt_source", "unsupported_variable"):
        assert HTTP_STATUS[code] == 422
    assert HTTP_STATUS["storage_error"] == 502


def test_openapi_documents_the_endpoint_and_health_needs_no_token(client):
    schema = client.get("/openapi.json").json()
    post = schema["paths"]["/api/references"]["post"]
    assert {"201", "200", "400", "401", "422"} <= set(post["responses"])
    assert post["security"]  # the bearer scheme shows in the docs
    assert client.get("/healthz").json()["status"] == "ok"


def test_unknown_route_and_method_answer_json(client):
    assert_error(client.get("/api/nothing"), 404, "not_found")
    assert_error(client.get("/api/references", headers=AUTH), 405, "method_not_allowed")


# --------------------------------------------------------------------------- S3


@pytest.mark.s3
def test_s3_source_and_output(s3_server, tmp_path):
    bucket = "zarrport-service"
    s3_server.create_bucket(bucket)
    run = uuid.uuid4().hex[:8]
    path = write_cmip6_year(tmp_path / "tas_day_2019.nc", 2019, **SAMPLE)
    url = s3_server.put_object(bucket, f"{run}/archive/tas_day_2019.nc", path.read_bytes())
    opts = s3_server.storage_options
    settings = ServiceSettings(output=f"s3://{bucket}/{run}/refs/",
                               allowed_prefixes=(f"s3://{bucket}/{run}/archive",),
                               api_token=TOKEN, storage_options=opts)
    client = TestClient(create_app(settings))

    r = client.post("/api/references", json={"url": url}, headers=AUTH)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["reference"].startswith(f"s3://{bucket}/{run}/refs/tas_day_2019-")
    assert body["source"]["etag"]
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(
        Bucket=bucket, Prefix=f"{run}/refs/")["Contents"]]
    assert keys == [body["reference"].removeprefix(f"s3://{bucket}/")]
    assert_same_as_netcdf4(body["reference"], path, storage_options=opts)

    again = client.post("/api/references", json={"url": url}, headers=AUTH)
    assert again.status_code == 200 and again.json()["created"] is False

    missing = client.post("/api/references", json={"url": url.replace("2019", "1999")},
                          headers=AUTH)
    assert_error(missing, 422, "not_found")
    outside = client.post("/api/references", json={"url": f"s3://{bucket}/{run}/x.nc"},
                          headers=AUTH)
    assert_error(outside, 400, "invalid_argument", "allowed prefix")


# --------------------------------------------------------------------------- zarrport serve


def _serve_env(tmp_path: Path, data_dir: Path, token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZARRPORT_")}
    env.update(ZARRPORT_OUTPUT=str(tmp_path / "served-refs"),
               ZARRPORT_ALLOWED_PREFIXES=str(data_dir))
    if token:
        env["ZARRPORT_API_TOKEN"] = token
    return env


def test_zarrport_serve_answers_a_real_request(tmp_path, data_dir, sample, monkeypatch):
    for key, value in _serve_env(tmp_path, data_dir, TOKEN).items():
        monkeypatch.setenv(key, value)  # inherited by the server process
    monkeypatch.delenv("ZARRPORT_STORAGE_OPTIONS", raising=False)
    port = free_port()
    server = ManagedProcess(
        "zarrport-serve",
        [sys.executable, "-m", "zarrport", "serve", "--port", str(port), "--log-level",
         "warning"],
        tmp_path / "serve.log",
    )
    server.start()
    try:
        server.wait_until_ready(f"http://127.0.0.1:{port}/healthz", timeout=60)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/references", method="POST",
            data=json.dumps({"url": str(sample)}).encode(),
            headers={**AUTH, "Content-Type": "application/json"},
        )
        with opener.open(request, timeout=120) as response:
            assert response.status == 201
            body = json.loads(response.read())
        assert body["variables"]["tas"]["dims"] == ["time", "lat", "lon"]
        assert_same_as_netcdf4(body["reference"], sample)

        bad = urllib.request.Request(f"http://127.0.0.1:{port}/api/references", method="POST",
                                     data=b'{"url": "x.nc"}',
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as info:
            opener.open(bad, timeout=30)
        assert info.value.code == 401
        assert json.loads(info.value.read())["error"]["code"] == "unauthorized"
    finally:
        server.stop()
    assert server.proc is not None and server.proc.poll() is not None


def test_zarrport_serve_without_token_fails_in_one_line(tmp_path, data_dir):
    proc = subprocess.run([sys.executable, "-m", "zarrport", "serve", "--port", "0"],
                          capture_output=True, text=True, timeout=120,
                          env=_serve_env(tmp_path, data_dir, token=None))
    assert proc.returncode == EXIT_CODES["invalid_argument"], proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("zarrport: error: ZARRPORT_API_TOKEN is not set")
    assert "Traceback" not in proc.stderr


def test_serve_listens_on_localhost_by_default():
    from zarrport.cli.serve import serve_command

    defaults = {p.name: p.default for p in serve_command.params}
    assert defaults["host"] == "127.0.0.1" and defaults["port"] == 8000
