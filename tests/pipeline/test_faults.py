"""``run_batch`` over an S3 archive (moto) through a fault-injecting proxy: 503 SlowDown /
500 InternalError answers, dropped connections, connections reset mid-body and delays on
about 10% of requests. The batch must complete without failures and produce exactly what a
fault-free batch straight to moto produces: the same combined dataset, the same sources in
the collection's provenance, the same per-source references."""

from __future__ import annotations

import time
import uuid

import pytest
from _batch_helpers import (
    assert_same_dataset,
    load,
    netcdf_oracle,
    only_collection,
    per_source_refs,
    provenance_sources,
)

from faultproxy import FaultProxy
from zarrport.pipeline import run_batch
from zarrport.pipeline.ledger import Ledger
from zarrport.testing.samples import write_cmip6_archive

pytestmark = pytest.mark.s3

BUCKET = "zarrport-faults"
#: tas at 6 x 12 is ~105 kB a year: referenced (not inlined), 5 chunks per file.
SAMPLE = {"nlat": 6, "nlon": 12, "time_chunk": 73}
YEARS = range(1950, 2000)  # 50 files
FAULT_RATE = 0.1


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_cmip6_archive(tmp_path_factory.mktemp("archive"), years=YEARS, **SAMPLE)


@pytest.fixture(scope="module")
def s3_archive(s3_server, archive):
    """The archive uploaded straight to moto: s3://BUCKET/<prefix>/<name>."""
    s3_server.create_bucket(BUCKET)
    prefix = f"{uuid.uuid4().hex[:8]}/cmip6"
    client = s3_server.client()
    for p in archive:
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{p.name}", Body=p.read_bytes())
    return f"s3://{BUCKET}/{prefix}/"


def test_batch_through_faults_equals_fault_free(s3_server, archive, s3_archive, tmp_path):
    direct_opts = s3_server.storage_options
    t0 = time.monotonic()
    clean = run_batch(s3_archive, str(tmp_path / "clean"), workers=2,
                      storage_options=direct_opts, output_storage_options={})
    print(f"\nstraight to moto: {time.monotonic() - t0:.1f} s")

    with FaultProxy(s3_server.endpoint_url, rate=FAULT_RATE, seed=20240611,
                    delay_range=(0.2, 1.0)) as proxy:
        proxy_opts = {**direct_opts, "endpoint_url": proxy.endpoint_url}
        t0 = time.monotonic()
        faulty = run_batch(s3_archive, str(tmp_path / "faulty"), workers=2,
                           storage_options=proxy_opts, output_storage_options={})
        faulty_s = time.monotonic() - t0
        injected = proxy.fault_counts()
        requests = proxy.counters["requests"]
        print(f"through the proxy: {faulty_s:.1f} s, {requests} requests, faults {injected}, "
              f"sources retried by the batch: {faulty.retried}")

        # Read back through the proxy, now fault-free, with the options it was written with
        proxy.rate = 0
        repo_f = only_collection(tmp_path / "faulty")
        ds_f = load(repo_f, proxy_opts)
    repo_c = only_collection(tmp_path / "clean")
    ds_c = load(repo_c, direct_opts)
    # with the proxy gone, a reader naming moto's endpoint reads the repository that was
    # referenced through the proxy (the stored endpoint is overridden for the session)
    assert_same_dataset(load(repo_f, direct_opts), ds_f)

    # the faults really happened, in several kinds, at about the configured rate
    assert sum(injected.values()) >= 10, injected
    assert len(injected) >= 3, injected
    assert sum(injected.values()) <= 3 * FAULT_RATE * requests, (injected, requests)

    # both batches complete, every file referenced once
    for result in (faulty, clean):
        assert result.ok, result.failures
        assert result.failures == []
        assert result.counts["new"] == len(archive)
        assert result.counts["failed"] == 0
    for name in ("faulty", "clean"):
        rows = Ledger(tmp_path / name / "ledger.sqlite").rows()
        assert len(rows) == len(archive)
        assert {r["status"] for r in rows} == {"ok"}
        assert all(r["snapshot"] for r in rows)

    # identical outputs: dataset values, provenance sources, per-source references
    assert_same_dataset(ds_f, ds_c)
    assert_same_dataset(ds_c, netcdf_oracle(archive))
    assert ds_c.sizes["time"] == 365 * len(archive)
    src_f, src_c = provenance_sources(repo_f), provenance_sources(repo_c)
    assert [s["url"] for s in src_c] == [f"{s3_archive}{p.name}" for p in archive]
    assert [(s["url"], s["size"], s["etag"]) for s in src_f] == [
        (s["url"], s["size"], s["etag"]) for s in src_c]
    refs_f, refs_c = per_source_refs(tmp_path / "faulty"), per_source_refs(tmp_path / "clean")
    assert len(refs_c) == len(archive)
    assert refs_f == refs_c
    # the combined dataset really references the S3 objects (not inlined copies)
    assert faulty.referenced_bytes == clean.referenced_bytes > 0


def test_outage_beyond_the_clients_retries_is_retried_by_the_batch(s3_server, archive,
                                                                   s3_archive, tmp_path):
    """One object answers 500 to its first reads, more often than the storage client retries
    (one attempt here): the batch's own retry with backoff references it, and says so."""
    direct_opts = s3_server.storage_options
    target = archive[7].name
    budget = {"left": 6}

    def first_reads_of_target(method: str, path: str) -> bool:
        if method == "GET" and path.split("?")[0].endswith(target) and budget["left"] > 0:
            budget["left"] -= 1
            return True
        return False

    with FaultProxy(s3_server.endpoint_url, rate=1.0, kinds=("500",), seed=7,
                    should_fault=first_reads_of_target) as proxy:
        opts = {**direct_opts, "endpoint_url": proxy.endpoint_url,
                # botocore: one attempt; s3fs itself retries only SlowDown, not a 500
                "config_kwargs": {"retries": {"max_attempts": 1, "mode": "standard"}}}
        result = run_batch(s3_archive, str(tmp_path / "out"), workers=1, retries=6,
                           backoff=0.05, storage_options=opts, output_storage_options={})
        injected = proxy.fault_counts()
    assert injected.get("500", 0) == 6
    assert result.ok, result.failures
    assert result.retried == 1
    row = next(r for r in Ledger(tmp_path / "out" / "ledger.sqlite").rows()
               if r["url"].endswith(target))
    assert row["status"] == "ok" and row["attempts"] >= 2
