"""``zarrport serve`` under attack: one test per attack.

Every refused URL is decided *before* anything is opened: :class:`~.secdata.NetworkGuard`
makes the test fail if the server opened a dataset or a filesystem, connected to (or looked
up) a non-loopback address, or opened a secret file. Each refusal is 403 with
``{"error": {"code": "forbidden", ...}}`` unless stated otherwise.
"""

from __future__ import annotations

import hmac
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from zarrport.service.server import LIMITS, ServerConfig, create_server
from zarrport.service.settings import ServiceSettings
from zarrport.service.tiles import MAX_PIXELS

from .secdata import (
    VARIABLE,
    NetworkGuard,
    kerchunk_like_dataset,
    write_catalog,
    write_icechunk_virtual,
    write_kerchunk,
    write_tiny_nc,
)

REMOTE_ROOT = "s3://allowed-bucket/prefix/"
TOKEN = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def _no_aws_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    """A root with a dataset, a subdirectory and symlinks out of it; a secret outside."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    write_tiny_nc(root / "tiny.nc")
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = write_tiny_nc(outside / "secret.nc")  # a valid dataset: only the check stops it
    os.symlink(secret, root / "link.nc")  # file symlink out
    os.symlink(outside, root / "dirlink")  # directory symlink out
    os.symlink(root / "link.nc", root / "chain1.nc")  # chain: chain2 -> chain1 -> link -> out
    os.symlink(root / "chain1.nc", root / "chain2.nc")
    os.symlink(root / "tiny.nc", root / "inside-link.nc")  # a link that stays inside
    return {"root": root, "secret": secret, "outside": outside, "tmp": tmp_path}


def make_client(**config: Any) -> TestClient:
    return TestClient(create_server(ServerConfig(**config)), raise_server_exceptions=False)


@pytest.fixture
def client(site: dict[str, Path]) -> TestClient:
    return make_client(allow=[str(site["root"]), REMOTE_ROOT])


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch, site: dict[str, Path]) -> NetworkGuard:
    return NetworkGuard(secrets=[str(site["secret"]), "/etc/passwd"]).install(monkeypatch)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body


def assert_forbidden(response: Any) -> dict[str, Any]:
    return assert_error(response, 403, "forbidden")


def info(client: TestClient, url: str, **params: Any) -> Any:
    return client.get("/xarray/info", params={"url": url, "variable": VARIABLE, **params})


# ----------------------------------------------------------------- control: the data is fine


def test_control_dataset_inside_the_root_is_served(client, site):
    import xarray as xr

    response = info(client, str(site["root"] / "tiny.nc"))
    assert response.status_code == 200, response.text
    with xr.open_dataset(site["root"] / "tiny.nc") as ds:  # the oracle
        assert response.json()["count"] == ds[VARIABLE].sizes["time"]
        assert [response.json()["width"], response.json()["height"]] == [
            ds.sizes["lon"], ds.sizes["lat"]]
    assert info(client, str(site["root"] / "inside-link.nc")).status_code == 200
    # the secret is a readable dataset: a refusal below is the allow list's doing
    assert make_client(allow=[str(site["outside"])]).get(
        "/xarray/info", params={"url": str(site["secret"]), "variable": VARIABLE}
    ).status_code == 200


# ----------------------------------------------------------------- local paths

LOCAL_ATTACKS = {
    "dotdot": "{root}/../outside/secret.nc",
    "dotdot_sub": "{root}/sub/../../outside/secret.nc",
    "dotdot_deep": "{root}/sub/../../../../../../etc/passwd",
    "encoded_dotdot_literal": "{root}/%2e%2e%2foutside%2fsecret.nc",
    "encoded_dotdot_upper": "{root}/%2E%2E/outside/secret.nc",
    "double_encoded": "{root}/%252e%252e%252foutside/secret.nc",
    "backslashes": "{root}\\..\\outside\\secret.nc",
    "backslashes_inside": "{root}/sub\\..\\..\\outside\\secret.nc",
    "double_slashes": "{root}//..//outside//secret.nc",
    "absolute_outside": "{secret}",
    "etc_passwd": "/etc/passwd",
    "file_url": "file:///etc/passwd",
    "file_localhost": "file://localhost/etc/passwd",
    "file_one_slash": "file:/etc/passwd",
    "file_url_dotdot": "file://{root}/../outside/secret.nc",
    "file_uppercase": "FILE:///etc/passwd",
    "tilde": "~/secret.nc",
    "tilde_user": "~root/.ssh/id_rsa",
    "nul_byte": "{root}/tiny.nc\x00../../outside/secret.nc",
    "newline": "{root}/tiny.nc\n/etc/passwd",
    "carriage_return": "{root}/tiny.nc\r",
    "file_symlink_out": "{root}/link.nc",
    "dir_symlink_out": "{root}/dirlink/secret.nc",
    "symlink_chain": "{root}/chain2.nc",
    "root_itself_parent": "{root}/..",
    "encoded_nul": "{root}/tiny.nc%00/../../outside/secret.nc",
    "encoded_question_mark": "{root}/tiny.nc%3f/../../outside/secret.nc",
    "encoded_hash": "{root}/tiny.nc%23x",
    "chained_inside_root": "{root}/simplecache::file:///etc/passwd",
}


@pytest.mark.parametrize("attack", sorted(LOCAL_ATTACKS))
def test_local_attack_is_forbidden(client, site, guard, attack):
    url = LOCAL_ATTACKS[attack].format(root=site["root"], secret=site["secret"])
    assert_forbidden(info(client, url))
    guard.assert_clean()


def test_percent_encoded_traversal_in_the_raw_query(client, site, guard):
    """``%2e%2e%2f`` in the query string itself: decoded once to ``../`` by the server."""
    raw = f"/xarray/info?variable={VARIABLE}&url={site['root']}/%2e%2e%2foutside%2fsecret.nc"
    assert_forbidden(client.get(raw))
    guard.assert_clean()


ENDPOINTS = [
    ("get", "/xarray/info", {}),
    ("get", "/xarray/WebMercatorQuad/tilejson.json", {}),
    ("get", "/xarray/tiles/WebMercatorQuad/0/0/0.png", {"sel": "time=2015-01-01"}),
    ("get", "/xarray/tiles/WebMercatorQuad/0/0/0.npy", {}),
    ("get", "/xarray/point/0,0", {}),
    ("get", "/xarray/preview.png", {"sel": "time=2015-01-01"}),
    ("post", "/xarray/statistics", {"sel": "time=2015-01-01"}),
]
FEATURE = {"type": "Feature", "properties": {},
           "geometry": {"type": "Polygon", "coordinates": [[[-10, -10], [10, -10], [10, 10],
                                                            [-10, 10], [-10, -10]]]}}


@pytest.mark.parametrize(("method", "path", "extra"), ENDPOINTS,
                         ids=[f"{m}{p}" for m, p, _ in ENDPOINTS])
def test_every_dataset_endpoint_refuses(client, guard, method, path, extra):
    params = {"url": "file:///etc/passwd", "variable": VARIABLE, **extra}
    if method == "post":
        response = client.post(path, params=params, json=FEATURE)
    else:
        response = client.get(path, params=params)
    assert_forbidden(response)
    guard.assert_clean()


# ----------------------------------------------------------------- schemes and hosts

REMOTE_ATTACKS = {
    "metadata_service": "http://169.254.169.254/latest/meta-data/",
    "metadata_ipv6_mapped": "http://[::ffff:169.254.169.254]/",
    "metadata_decimal": "http://2852039166/latest/meta-data/",
    "metadata_uppercase_scheme": "HTTP://169.254.169.254/latest/meta-data/",
    "loopback_not_allowed": "http://127.0.0.1:1/",
    "localhost_not_allowed": "http://localhost:1/x.nc",
    "https_host": "https://example.com/x.nc",
    "userinfo_host": "https://allowed-bucket@evil.example.com/prefix/x.nc",
    "other_bucket": "s3://other-bucket/x",
    "other_bucket_uppercase_scheme": "S3://other-bucket/x",
    "s3a_alias": "s3a://other-bucket/x",
    "gcs": "gs://bucket/x.nc",
    "gcs_alias": "gcs://bucket/x.nc",
    "azure": "az://container/x.nc",
    "abfs": "abfs://container/x.nc",
    "ftp": "ftp://example.com/x.nc",
    "sftp": "sftp://example.com/x.nc",
    "data_url": "data:application/octet-stream;base64,AAAA",
    "memory": "memory://x.nc",
    "reference": "reference://x.nc",
    "zip_chain": "zip::file://{root}/x.zip",
    "simplecache_chain": "simplecache::file:///etc/passwd",
    "filecache_chain": "filecache::s3://allowed-bucket/prefix/x.nc",
    "blockcache_chain": "blockcache::http://169.254.169.254/",
    "s3_dotdot": "s3://allowed-bucket/prefix/../other",
    "s3_encoded_dotdot": "s3://allowed-bucket/prefix/%2e%2e/other",
    "s3_encoded_slash": "s3://allowed-bucket/prefix%2f..%2fother/x",
    "s3_backslash": "s3://allowed-bucket/prefix\\..\\other",
    "s3_prefix_boundary": "s3://allowed-bucket/prefix-evil/x",
    "s3_bucket_case": "s3://ALLOWED-BUCKET/prefix/x",
    "s3_bucket_suffix": "s3://allowed-bucket-evil/prefix/x",
    "s3_bucket_root": "s3://allowed-bucket/",
}


@pytest.mark.parametrize("attack", sorted(REMOTE_ATTACKS))
def test_remote_attack_is_forbidden(client, site, guard, attack):
    url = REMOTE_ATTACKS[attack].format(root=site["root"])
    assert_forbidden(info(client, url))
    guard.assert_clean()


def test_allowed_loopback_root_does_not_open_other_ports_or_paths(site, monkeypatch):
    client = make_client(allow=["http://127.0.0.1:9/data/"])
    guard = NetworkGuard().install(monkeypatch)
    for url in ("http://127.0.0.1:1/data/x.nc", "http://127.0.0.1:9/other/x.nc",
                "http://127.0.0.1/data/x.nc", "https://127.0.0.1:9/data/x.nc",
                "http://127.0.0.1:9/data/../x.nc", "http://127.0.0.1:9/datax/x.nc"):
        assert_forbidden(info(client, url))
    guard.assert_clean()


# ----------------------------------------------------------------- what a dataset points to


KERCHUNK_TARGETS = {
    "etc_passwd": "/etc/passwd",
    "file_url": "file:///etc/passwd",
    "absolute_secret": "{secret}",
    "relative_out": "../../outside/secret.nc",  # relative to the reference file
    "metadata_service": "http://169.254.169.254/latest/meta-data/iam/",
    "https_host": "https://example.com/x.nc",
    "other_bucket": "s3://other-bucket/x.nc",
    "encoded_dotdot": "{root}/%2e%2e/outside/secret.nc",
    "templated_metadata": "templated:http://169.254.169.254/latest/meta-data/",
    "templated_passwd": "templated:/etc/passwd",
    # inside the root as seen from the reference file, but the reader expands "~" and
    # resolves a relative path against the working directory: both are outside here
    "tilde": "~/secret.nc",
    "relative_to_cwd": "secret.nc",
}


@pytest.mark.parametrize("name", sorted(KERCHUNK_TARGETS))
def test_kerchunk_reference_with_targets_outside_is_forbidden(site, monkeypatch, name):
    root = site["root"]
    monkeypatch.setenv("HOME", str(site["outside"]))  # "~" is outside the root
    monkeypatch.chdir(site["outside"])  # so is the working directory
    target = KERCHUNK_TARGETS[name]
    templated = target.startswith("templated:")
    target = target.removeprefix("templated:").format(root=root, secret=site["secret"])
    ref = write_kerchunk(root / "refs" / "evil.json", target, templated=templated)
    client = make_client(allow=[str(root), REMOTE_ROOT])
    opened: list[Any] = []
    import zarrport

    real = zarrport.open_dataset
    monkeypatch.setattr(zarrport, "open_dataset",
                        lambda *a, **k: opened.append(a) or real(*a, **k))
    guard = NetworkGuard(secrets=[str(site["secret"]), "/etc/passwd"],
                         opening_allowed=True).install(monkeypatch)
    for path in ("/xarray/info", "/xarray/point/-90,-45"):
        body = assert_forbidden(client.get(path, params={"url": str(ref), "variable": "v"}))
        assert "reads data from" in body["error"]["message"]
    assert opened == [], "the dataset was opened before its targets were checked"
    guard.assert_clean()


def test_kerchunk_reference_with_targets_inside_is_opened(site, monkeypatch):
    """Control for the test above: the same reference pointing inside the root is read."""
    root = site["root"]
    expected = kerchunk_like_dataset()
    (root / "data.bin").write_bytes(expected["v"].values.astype("<f4").tobytes())
    ref = write_kerchunk(root / "refs" / "good.json", str(root / "data.bin"))
    client = make_client(allow=[str(root)])
    guard = NetworkGuard(opening_allowed=True).install(monkeypatch)
    for lon, lat in ((-90, -45), (90, 45), (90, -45)):
        r = client.get(f"/xarray/point/{lon},{lat}", params={"url": str(ref), "variable": "v"})
        assert r.status_code == 200, r.text
        want = float(expected["v"].sel(lat=lat, lon=lon))
        assert r.json()["values"] == [want]
    guard.assert_clean()


@pytest.mark.parametrize("prefix", ["file:///etc/", "http://169.254.169.254/"])
def test_icechunk_virtual_container_outside_is_forbidden(site, monkeypatch, prefix):
    repo = write_icechunk_virtual(site["root"] / "evil.icechunk", prefix)
    client = make_client(allow=[str(site["root"])])
    opened: list[Any] = []
    import zarrport

    real = zarrport.open_dataset
    monkeypatch.setattr(zarrport, "open_dataset",
                        lambda *a, **k: opened.append(a) or real(*a, **k))
    guard = NetworkGuard(secrets=["/etc/passwd"], opening_allowed=True).install(monkeypatch)
    body = assert_forbidden(info(client, str(repo), variable="v"))
    assert prefix in body["error"]["message"]
    assert opened == []
    guard.assert_clean()


def test_icechunk_virtual_container_inside_is_opened(site, monkeypatch):
    repo = write_icechunk_virtual(site["root"] / "ok.icechunk", f"file://{site['root']}/")
    client = make_client(allow=[str(site["root"])])
    guard = NetworkGuard(opening_allowed=True).install(monkeypatch)
    response = client.get("/xarray/point/90,45", params={"url": str(repo), "variable": "v"})
    assert response.status_code == 200, response.text
    assert response.json()["values"] == [float(kerchunk_like_dataset()["v"].sel(lat=45,
                                                                                 lon=90))]
    guard.assert_clean()


# ----------------------------------------------------------------- STAC


@pytest.fixture
def stac_client(site: dict[str, Path]) -> TestClient:
    catalog = write_catalog(site["tmp"] / "stac", {
        "good": str(site["root"] / "tiny.nc"),
        "absolute": str(site["secret"]),
        "relative": "../../outside/secret.nc",
        "passwd": "file:///etc/passwd",
        "metadata": "http://169.254.169.254/latest/meta-data/",
        "symlink": str(site["root"] / "link.nc"),
    })
    return make_client(allow=[str(site["root"])], catalog=str(catalog))


def test_stac_collection_inside_is_served(stac_client):
    assert stac_client.get("/stac/collections/good").status_code == 200
    r = stac_client.get("/xarray/info", params={"collection": "good", "variable": VARIABLE})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("collection", ["absolute", "relative", "passwd", "metadata",
                                        "symlink"])
@pytest.mark.parametrize("with_item", [False, True], ids=["collection", "item"])
def test_stac_asset_outside_is_forbidden(stac_client, monkeypatch, site, collection,
                                         with_item):
    guard = NetworkGuard(secrets=[str(site["secret"]), "/etc/passwd"]).install(monkeypatch)
    params = {"collection": collection, "variable": VARIABLE}
    if with_item:
        params["item"] = f"{collection}-item"
    assert_forbidden(stac_client.get("/xarray/info", params=params))
    assert_forbidden(stac_client.get("/xarray/WebMercatorQuad/tilejson.json", params=params))
    guard.assert_clean()


# ----------------------------------------------------------------- the write endpoint


@pytest.fixture
def ref_client(site: dict[str, Path]) -> tuple[TestClient, Path]:
    out = site["tmp"] / "refs-out"
    settings = ServiceSettings(output=str(out), allowed_prefixes=(str(site["root"]),),
                               api_token=TOKEN)
    return make_client(allow=[str(site["root"])], references=settings), out


def _post_ref(client: TestClient, url: str, token: str | None = None, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post("/api/references", json={"url": url}, headers=headers, **kw)


@pytest.fixture
def compare_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    return calls


def test_references_without_token_is_401(ref_client, site):
    client, out = ref_client
    r = _post_ref(client, str(site["root"] / "tiny.nc"))
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("header", ["Bearer wrong", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}",
                                    f"Basic {TOKEN}", TOKEN, "Bearer ", f"bearer  {TOKEN}z"])
def test_references_wrong_token_is_401(ref_client, site, compare_calls, header):
    client, out = ref_client
    r = client.post("/api/references", json={"url": str(site["root"] / "tiny.nc")},
                    headers={"Authorization": header})
    assert_error(r, 401, "unauthorized")
    assert list(out.iterdir()) == []


def test_references_token_is_compared_in_constant_time(ref_client, site, compare_calls):
    client, _ = ref_client
    assert_error(_post_ref(client, str(site["root"] / "tiny.nc"), "wrong"), 401,
                 "unauthorized")
    assert compare_calls == [(b"wrong", TOKEN.encode())]


def test_references_right_token_is_not_401(ref_client, site, compare_calls):
    import xarray as xr

    client, out = ref_client
    r = _post_ref(client, str(site["root"] / "tiny.nc"), TOKEN)
    assert r.status_code == 201, r.text
    assert compare_calls, "the token was not compared with hmac.compare_digest"
    body = r.json()
    with xr.open_dataset(site["root"] / "tiny.nc") as ds:
        assert body["variables"][VARIABLE]["shape"] == list(ds[VARIABLE].shape)
    assert Path(body["reference"].removeprefix("file://")).is_file()
    assert str(out) in body["reference"]


def test_references_right_token_still_cannot_reference_outside(ref_client, site,
                                                               monkeypatch):
    client, out = ref_client
    guard = NetworkGuard(secrets=[str(site["secret"]), "/etc/passwd"]).install(monkeypatch)
    for url in (str(site["secret"]), "file:///etc/passwd", str(site["root"] / "link.nc"),
                f"{site['root']}/../outside/secret.nc",
                "http://169.254.169.254/latest/meta-data/"):
        r = _post_ref(client, url, TOKEN)
        assert 400 <= r.status_code < 500, (url, r.status_code, r.text)
        assert r.json()["error"]["code"] in ("invalid_argument", "forbidden")
    guard.assert_clean()
    assert list(out.iterdir()) == []


# ----------------------------------------------------------------- bounds


def _tiny(site: dict[str, Path]) -> dict[str, str]:
    return {"url": str(site["root"] / "tiny.nc"), "variable": VARIABLE,
            "sel": "time=2015-01-01"}


def test_tilesize_too_large(client, site):
    r = client.get("/xarray/tiles/WebMercatorQuad/0/0/0.png",
                   params={**_tiny(site), "tilesize": 10000})
    assert_error(r, 400, "too_large")
    ok = client.get("/xarray/tiles/WebMercatorQuad/0/0/0.png",
                    params={**_tiny(site), "tilesize": LIMITS["tilesize"]})
    assert ok.status_code == 200, ok.text  # the bound itself is allowed


@pytest.mark.parametrize("params", [{"max_size": 10000}, {"width": 10000, "height": 10000},
                                    {"width": 10000}, {"height": 4097}],
                         ids=["max_size", "width_height", "width", "height"])
def test_preview_too_large(client, site, params):
    r = client.get("/xarray/preview.png", params={**_tiny(site), **params})
    assert_error(r, 400, "too_large")


def test_too_many_sel_values(client, site):
    sel = [f"time=2015-01-0{1 + i % 3}" for i in range(200)]
    r = client.get("/xarray/info", params={**_tiny(site), "sel": sel})
    assert_error(r, 400, "too_large")


def test_query_string_of_20_kb(client, site):
    r = client.get("/xarray/info", params={**_tiny(site), "colormap_name": "x" * 20_000})
    assert_error(r, 400, "too_large")


FIVE_MB = 5 * 1024 * 1024


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
def test_statistics_body_of_5_mb_is_413(client, site, chunked):
    body = b'{"type": "Feature", "properties": {"x": "' + b"a" * FIVE_MB + b'"}}'
    content: Any = body
    if chunked:  # no Content-Length: the body is counted as it arrives
        content = (body[i:i + 65536] for i in range(0, len(body), 65536))
    r = client.post("/xarray/statistics", params=_tiny(site), content=content,
                    headers={"content-type": "application/json"})
    assert_error(r, 413, "too_large")


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
def test_references_body_of_5_mb_is_413(ref_client, site, chunked):
    client, out = ref_client
    body = b'{"url": "' + b"a" * FIVE_MB + b'"}'
    content: Any = body
    if chunked:
        content = (body[i:i + 65536] for i in range(0, len(body), 65536))
    r = client.post("/api/references", content=content,
                    headers={"content-type": "application/json",
                             "Authorization": f"Bearer {TOKEN}"})
    assert_error(r, 413, "too_large")
    assert list(out.iterdir()) == []


def _write_huge_grid(path: Path, n: int) -> Path:
    """A Zarr store ``big(lat=n, lon=n)`` with no chunk written (reads as NaN): a few KB
    on disk, ``4 n^2`` bytes once read."""
    import xarray as xr
    import zarr

    lat = np.linspace(-89.99, 89.99, n)
    lon = np.linspace(-179.99, 179.99, n)
    xr.Dataset(coords={"lat": ("lat", lat), "lon": ("lon", lon)}).to_zarr(
        path, consolidated=False, zarr_format=3)
    group = zarr.open_group(path, mode="a")
    group.create_array("big", shape=(n, n), chunks=(1000, 1000), dtype="f4",
                       fill_value=float("nan"), dimension_names=("lat", "lon"))
    return path


def test_statistics_over_a_huge_grid_needs_max_size(site, tmp_path):
    import psutil

    n = 9000
    assert n * n > MAX_PIXELS
    store = _write_huge_grid(site["root"] / "big.zarr", n)
    client = make_client(allow=[str(site["root"])])
    process = psutil.Process()
    before = process.memory_info().rss
    whole = {"type": "Feature", "properties": {},
             "geometry": {"type": "Polygon", "coordinates": [[[-179, -89], [179, -89],
                                                              [179, 89], [-179, 89],
                                                              [-179, -89]]]}}
    r = client.post("/xarray/statistics", params={"url": str(store), "variable": "big"},
                    json=whole)
    body = assert_error(r, 400, "too_large")
    assert "max_size" in body["error"]["message"]
    grown = (process.memory_info().rss - before) / 2**20
    assert grown < 200, f"RSS grew by {grown:.0f} MiB for a refused request"
    # with max_size it is read resampled, and still within bounds
    ok = client.post("/xarray/statistics",
                     params={"url": str(store), "variable": "big", "max_size": 256},
                     json=whole)
    assert ok.status_code == 200, ok.text[:500]
    grown = (process.memory_info().rss - before) / 2**20
    assert grown < 200 + 4 * n * n / 2**20 / 2, f"RSS grew by {grown:.0f} MiB"


# ----------------------------------------------------------------- CORS

ORIGIN = "https://maps.example.org"


def test_cors_is_off_by_default(client, site):
    r = client.get("/xarray/info", params=_tiny(site), headers={"Origin": ORIGIN})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    pre = client.options("/xarray/info", headers={"Origin": ORIGIN,
                                                 "Access-Control-Request-Method": "GET"})
    assert pre.status_code >= 400, pre.status_code
    assert "access-control-allow-origin" not in pre.headers


def test_cors_only_for_the_configured_origin(site):
    client = make_client(allow=[str(site["root"])], cors_origins=[ORIGIN])
    r = client.get("/xarray/info", params=_tiny(site), headers={"Origin": ORIGIN})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "x-zarrport-cache" in r.headers.get("access-control-expose-headers", "").lower()
    pre = client.options("/xarray/info", headers={"Origin": ORIGIN,
                                                 "Access-Control-Request-Method": "GET"})
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == ORIGIN
    for other in ("https://evil.example.org", "https://maps.example.org.evil.com",
                  "http://maps.example.org", "null"):
        r = client.get("/xarray/info", params=_tiny(site), headers={"Origin": other})
        assert "access-control-allow-origin" not in r.headers, other
        pre = client.options("/xarray/info", headers={"Origin": other,
                                                     "Access-Control-Request-Method": "GET"})
        assert pre.status_code >= 400, (other, pre.status_code)
        assert "access-control-allow-origin" not in pre.headers, other


def test_cors_headers_on_errors_too(site):
    """A browser must be able to read a 403's reason on the configured origin only."""
    client = make_client(allow=[str(site["root"])], cors_origins=[ORIGIN])
    r = info(client, "/etc/passwd")
    assert r.status_code == 403
    assert "access-control-allow-origin" not in r.headers  # no Origin: no CORS
    r = client.get("/xarray/info", params={"url": "/etc/passwd", "variable": VARIABLE},
                   headers={"Origin": ORIGIN})
    assert_forbidden(r)
    assert r.headers["access-control-allow-origin"] == ORIGIN
    # the guard's own refusals (before any endpoint) too
    r = client.get("/xarray/info", params={"url": "x", "variable": VARIABLE,
                                           "sel": [f"time={i}" for i in range(40)]},
                   headers={"Origin": ORIGIN})
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_large"
    assert r.headers["access-control-allow-origin"] == ORIGIN


# ----------------------------------------------------------------- the CLI


def _serve(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZARRPORT_")}
    if env.get("PYTHONPATH"):  # PYTHONPATH=src: the same source in another directory
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p)
                                            for p in env["PYTHONPATH"].split(os.pathsep))
    return subprocess.run([sys.executable, "-m", "zarrport", "serve", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def _assert_one_line_failure(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("zarrport: error: "), lines[0]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_cli_serve_without_allow_fails_in_one_line():
    _assert_one_line_failure(_serve("--port", "0"), "--allow")


def test_cli_serve_allow_missing_directory_fails_in_one_line(tmp_path):
    _assert_one_line_failure(_serve("--allow", str(tmp_path / "does" / "not" / "exist"),
                                    "--port", "0"), "not an existing directory")


# ----------------------------------------------------------------- the guard itself


def test_the_guard_catches_what_it_should(monkeypatch, tmp_path):
    """The guard used above can fail a test: each trap fires (nothing leaves the machine:
    the patched calls raise before any packet)."""
    import socket

    import fsspec

    import zarrport

    secret = tmp_path / "secret"
    secret.write_text("s")
    guard = NetworkGuard(secrets=[str(secret)]).install(monkeypatch)
    attempts = [
        lambda: socket.create_connection(("169.254.169.254", 80), timeout=0.01),
        lambda: socket.getaddrinfo("example.com", 443),
        lambda: socket.socket().connect(("10.0.0.1", 80)),
        lambda: fsspec.filesystem("file"),
        lambda: zarrport.open_dataset(str(secret)),
        lambda: open(secret),  # noqa: SIM115
    ]
    for attempt in attempts:
        with pytest.raises(AssertionError):
            attempt()
    assert len(guard.calls) == len(attempts), guard.calls
    with pytest.raises(AssertionError):
        guard.assert_clean()
    # loopback stays usable
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=1):
            pass
