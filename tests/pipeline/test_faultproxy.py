"""The fault-injecting proxy (tests/faultproxy.py) in front of moto's S3 server.

With rate 0 it must be invisible: objects, byte ranges, HEAD, listings and writes read the
same through it as directly, for botocore, s3fs and obstore, also under concurrency. With a
fault rate, faults of every kind really happen, are counted, and look to clients the way they
would from S3 (throttling / internal error codes, connection errors, truncated bodies).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import os
import time
import uuid

import pytest

from faultproxy import KINDS, FaultProxy

pytestmark = pytest.mark.s3

BUCKET = "zarrport-faultproxy"


def _boto(endpoint: str, s3_server, *, attempts: int = 1):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=s3_server.key,
        aws_secret_access_key=s3_server.secret,
        region_name=s3_server.region,
        config=Config(s3={"addressing_style": "path"},
                      retries={"total_max_attempts": attempts, "mode": "standard"},
                      connect_timeout=5, read_timeout=10),
    )


@pytest.fixture(scope="module")
def data(s3_server):
    """Objects of various sizes, uploaded straight to moto."""
    s3_server.create_bucket(BUCKET)
    prefix = uuid.uuid4().hex[:8]
    objs = {f"{prefix}/obj{i}.bin": os.urandom(n)
            for i, n in enumerate([0, 1, 1000, 70_000, 1_500_000])}
    for key, body in objs.items():
        s3_server.put_object(BUCKET, key, body)
    return prefix, objs


@pytest.fixture
def proxy(s3_server):
    with FaultProxy(s3_server.endpoint_url, rate=0.0, seed=1) as p:
        yield p


def _raw(port: int, method: str, path: str, headers: dict | None = None):
    """One SigV4-signed request over a fresh connection: status, headers, body."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from servers import S3_KEY, S3_REGION, S3_SECRET

    req = AWSRequest(method=method, url=f"http://127.0.0.1:{port}{path}",
                     headers=dict(headers or {}))
    S3SigV4Auth(Credentials(S3_KEY, S3_SECRET), "s3", S3_REGION).add_auth(req)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=dict(req.headers.items()))
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def test_rate_zero_is_transparent_raw_http(s3_server, data, proxy):
    """Status, ETag, Content-Range, Content-Length and body equal moto's own answers."""
    prefix, objs = data
    moto_port = int(s3_server.endpoint_url.rsplit(":", 1)[1])
    key = f"{prefix}/obj4.bin"
    cases = [
        ("GET", f"/{BUCKET}/{key}", {}),
        ("HEAD", f"/{BUCKET}/{key}", {}),
        ("GET", f"/{BUCKET}/{key}", {"Range": "bytes=100-70099"}),
        ("GET", f"/{BUCKET}/{key}", {"Range": "bytes=-500"}),
        ("GET", f"/{BUCKET}/{key}", {"Range": "bytes=1499000-"}),
        ("GET", f"/{BUCKET}/{prefix}/obj0.bin", {}),
        ("GET", f"/{BUCKET}/{prefix}/missing.bin", {}),
        ("GET", f"/{BUCKET}?list-type=2&prefix={prefix}/", {}),
    ]
    expected_status = [200, 200, 206, 206, 206, 200, 404, 200]
    for (method, path, headers), status in zip(cases, expected_status, strict=True):
        direct = _raw(moto_port, method, path, headers)
        via = _raw(proxy.port, method, path, headers)
        assert direct[0] == status, (method, path, headers, direct)
        assert via[0] == direct[0], (method, path, headers)
        for h in ("etag", "content-range", "content-length", "content-type", "last-modified",
                  "accept-ranges"):
            assert via[1].get(h) == direct[1].get(h), (h, method, path, headers)
        if "list-type" in path:  # listings carry no per-request ids
            assert via[2] == direct[2]
        elif direct[0] < 300:
            assert via[2] == direct[2], (method, path, headers)
    body = objs[key]
    assert _raw(proxy.port, "GET", f"/{BUCKET}/{key}", {"Range": "bytes=100-70099"})[2] == \
        body[100:70100]
    assert _raw(proxy.port, "GET", f"/{BUCKET}/{key}", {"Range": "bytes=-500"})[2] == body[-500:]
    assert proxy.counters["forwarded"] == len(cases) + 2
    assert proxy.faults == 0


def test_rate_zero_is_transparent_clients(s3_server, data, proxy):
    """botocore, s3fs and obstore read (ranges included), list and write via the proxy."""
    import obstore

    from zarrport.storage import _locate, _obstore_store, filesystem

    prefix, objs = data
    via_opts = {**s3_server.storage_options, "endpoint_url": proxy.endpoint_url}

    # botocore: GET, ranged GET, HEAD, list, PUT.
    c = _boto(proxy.endpoint_url, s3_server)
    for key, body in objs.items():
        assert c.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
        head = c.head_object(Bucket=BUCKET, Key=key)
        assert head["ContentLength"] == len(body)
        assert head["ETag"] == s3_server.client().head_object(Bucket=BUCKET, Key=key)["ETag"]
        if len(body) > 10:
            r = c.get_object(Bucket=BUCKET, Key=key, Range="bytes=3-9")
            assert r["Body"].read() == body[3:10]
            assert r["ContentRange"] == f"bytes 3-9/{len(body)}"
    listed = c.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/")
    assert {o["Key"]: o["Size"] for o in listed["Contents"]} == {
        k: len(v) for k, v in objs.items()}
    new = os.urandom(300_000)
    c.put_object(Bucket=BUCKET, Key=f"{prefix}/put/botocore.bin", Body=new)
    direct = s3_server.client().get_object(Bucket=BUCKET, Key=f"{prefix}/put/botocore.bin")
    assert direct["Body"].read() == new

    # s3fs (aiohttp): cat, ranges, ls, put.
    fs, _ = filesystem(f"s3://{BUCKET}/{prefix}/", via_opts)
    big = objs[f"{prefix}/obj4.bin"]
    assert fs.cat_file(f"{BUCKET}/{prefix}/obj4.bin") == big
    assert fs.cat_file(f"{BUCKET}/{prefix}/obj4.bin", start=1000, end=900_000) == big[1000:900_000]
    assert sorted(fs.ls(f"{BUCKET}/{prefix}/", detail=False, refresh=True)) >= sorted(
        f"{BUCKET}/{k}" for k in objs)
    fs.pipe_file(f"{BUCKET}/{prefix}/put/s3fs.bin", new)
    assert s3_server.client().get_object(
        Bucket=BUCKET, Key=f"{prefix}/put/s3fs.bin")["Body"].read() == new

    # obstore (Rust, reqwest): get, get_range(s), head, list, put.
    store = _obstore_store(_locate(f"s3://{BUCKET}/"), via_opts)
    assert obstore.get(store, f"{prefix}/obj4.bin").bytes() == big
    assert bytes(obstore.get_range(store, f"{prefix}/obj4.bin", start=5, end=70_005)) == big[
        5:70_005]
    ranges = obstore.get_ranges(store, f"{prefix}/obj4.bin", starts=[0, 500_000, 1_400_000],
                                ends=[10, 600_000, 1_500_000])
    assert [bytes(r) for r in ranges] == [big[:10], big[500_000:600_000], big[1_400_000:]]
    assert obstore.head(store, f"{prefix}/obj3.bin")["size"] == 70_000
    keys = {m["path"] for batch in obstore.list(store, prefix=f"{prefix}/") for m in batch}
    assert set(objs) <= keys
    obstore.put(store, f"{prefix}/put/obstore.bin", new)
    assert s3_server.client().get_object(
        Bucket=BUCKET, Key=f"{prefix}/put/obstore.bin")["Body"].read() == new

    assert proxy.faults == 0
    assert proxy.counters["GET"] > 0 and proxy.counters["PUT"] >= 3
    assert proxy.counters["HEAD"] > 0


def test_rate_zero_concurrent_clients(s3_server, data, proxy):
    """Many keep-alive clients at once: every ranged read returns exactly its bytes."""
    prefix, objs = data
    big = objs[f"{prefix}/obj4.bin"]
    c = _boto(proxy.endpoint_url, s3_server)  # botocore clients are thread-safe

    def read(i: int) -> bool:
        start = (i * 37_123) % (len(big) - 50_000)
        r = c.get_object(Bucket=BUCKET, Key=f"{prefix}/obj4.bin",
                         Range=f"bytes={start}-{start + 49_999}")
        return r["Body"].read() == big[start:start + 50_000]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        assert all(pool.map(read, range(200)))
    assert proxy.counters["forwarded"] == 200


@pytest.mark.parametrize("kind", KINDS)
def test_each_fault_kind(s3_server, data, proxy, kind):
    """Every request gets the fault: what a client without retries sees."""
    from botocore.exceptions import ClientError

    prefix, objs = data
    key = f"{prefix}/obj3.bin"
    c = _boto(proxy.endpoint_url, s3_server, attempts=1)
    proxy.kinds = [kind]
    proxy.delay_range = (0.2, 0.3)
    proxy.rate = 1.0
    t0 = time.monotonic()
    if kind == "delay":
        assert c.get_object(Bucket=BUCKET, Key=key)["Body"].read() == objs[key]
        assert time.monotonic() - t0 >= 0.2
    elif kind in ("503", "500"):
        with pytest.raises(ClientError) as err:
            c.get_object(Bucket=BUCKET, Key=key)
        expected = {"503": ("SlowDown", 503), "500": ("InternalError", 500)}[kind]
        got = err.value.response
        assert (got["Error"]["Code"], got["ResponseMetadata"]["HTTPStatusCode"]) == expected
        with pytest.raises(ClientError) as err:  # HEAD: status only, no body
            c.head_object(Bucket=BUCKET, Key=key)
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == expected[1]
    else:  # drop / truncate: a connection error, now or while reading the body
        with pytest.raises(Exception) as err:  # noqa: B017 - botocore/urllib3 types vary
            c.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert not isinstance(err.value, ClientError)
    assert proxy.counters[kind] >= 1
    assert proxy.faults == proxy.counters[kind]


def test_faults_at_rate(s3_server, data, proxy):
    """rate 0.3: ~30% of requests fail in mixed ways; counters match what clients saw;
    a retrying client (botocore standard mode) still reads every byte right."""
    prefix, objs = data
    key = f"{prefix}/obj3.bin"
    proxy.rate = 0.3
    proxy.delay_range = (0.05, 0.1)
    proxy.kinds = {"503": 1, "500": 1, "drop": 1, "truncate": 1, "delay": 1}

    no_retry = _boto(proxy.endpoint_url, s3_server, attempts=1)
    n, failed = 150, 0
    for _ in range(n):
        try:
            assert no_retry.get_object(Bucket=BUCKET, Key=key)["Body"].read() == objs[key]
        except AssertionError:
            raise
        except Exception:
            failed += 1
    counts = proxy.fault_counts()
    assert 0.15 * n < proxy.faults < 0.45 * n, counts
    assert set(counts) == set(KINDS), counts  # every kind happened at this sample size
    assert failed == proxy.faults - counts["delay"], (failed, counts)

    # Retrying clients recover. botocore retries requests, not body reads (a truncated body
    # surfaces as ResponseStreamingError to the caller); s3fs and obstore retry both.
    from zarrport.storage import _locate, _obstore_store, filesystem

    big = objs[f"{prefix}/obj4.bin"]
    via_opts = {**s3_server.storage_options, "endpoint_url": proxy.endpoint_url}
    fs, _ = filesystem(f"s3://{BUCKET}/", via_opts)
    store = _obstore_store(_locate(f"s3://{BUCKET}/"), via_opts)
    starts = [(i * 37_123) % (len(big) - 50_000) for i in range(40)]

    def s3fs_read(start: int) -> bool:
        data = fs.cat_file(f"{BUCKET}/{prefix}/obj4.bin", start=start, end=start + 50_000)
        return data == big[start:start + 50_000]

    def obstore_read(start: int) -> bool:
        import obstore

        data = obstore.get_range(store, f"{prefix}/obj4.bin", start=start, end=start + 50_000)
        return bytes(data) == big[start:start + 50_000]

    for reader in (s3fs_read, obstore_read):
        proxy.reset_counters()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert all(pool.map(reader, starts)), reader.__name__
        assert proxy.faults > 0, reader.__name__


def test_seeded_sequence_and_bounded_stop(s3_server, data):
    """The same seed draws the same faults for the same (serial) requests; stop() returns
    promptly even with keep-alive clients connected."""
    prefix, objs = data
    seqs = []
    for _ in range(2):
        with FaultProxy(s3_server.endpoint_url, rate=0.5, seed=42,
                        kinds=["503", "500"]) as p:
            seq = []
            for _ in range(30):
                status, _, _ = _raw(p.port, "GET", f"/{BUCKET}/{prefix}/obj2.bin")
                seq.append(status)
            seqs.append(seq)
            p.rate = 0
            c = _boto(p.endpoint_url, s3_server)
            c.list_objects_v2(Bucket=BUCKET, Prefix=prefix)  # leaves a keep-alive connection
            t0 = time.monotonic()
        assert time.monotonic() - t0 < 3
    assert seqs[0] == seqs[1]
    assert set(seqs[0]) == {200, 500, 503}
