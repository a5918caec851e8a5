"""Batches over prefixes on S3 (moto) and Azure Blob (Azurite): listing stats survive a
re-run (nothing re-referenced), a rewritten object is re-referenced, a deleted one is reported
by verify and dropped by the next run."""

from __future__ import annotations

import time
import uuid

import netCDF4
import numpy as np
import pytest

import zarrport
from zarrport.pipeline import run_batch
from zarrport.testing.samples import write_cmip6_archive, write_cmip6_year
from zarrport.verify import verify_batch

SMALL = {"nlat": 6, "nlon": 12, "time_chunk": 73}


def _values(files: dict[str, bytes], tmp_path) -> np.ndarray:
    parts = []
    for name in sorted(files):
        p = tmp_path / f"oracle-{name}"
        p.write_bytes(files[name])
        with netCDF4.Dataset(p) as nc:
            parts.append(np.ma.filled(nc["tas"][:].astype("f8"), np.nan))
    return np.concatenate(parts)


@pytest.fixture(params=[pytest.param("s3", marks=pytest.mark.s3),
                        pytest.param("az", marks=pytest.mark.azure)])
def remote(request):
    """(prefix URL, put(name, data), delete(name), storage options) on a real server."""
    prefix = f"batch-{uuid.uuid4().hex[:8]}"
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        server.create_bucket("zarrport-batch")
        client = server.client()
        return (f"s3://zarrport-batch/{prefix}/",
                lambda n, d: server.put_object("zarrport-batch", f"{prefix}/{n}", d),
                lambda n: client.delete_object(Bucket="zarrport-batch", Key=f"{prefix}/{n}"),
                server.storage_options)
    server = request.getfixturevalue("azurite_server")
    server.create_container("zarrport-batch")
    container = server.service_client().get_container_client("zarrport-batch")
    return (f"az://zarrport-batch/{prefix}/",
            lambda n, d: server.put_blob("zarrport-batch", f"{prefix}/{n}", d),
            lambda n: container.delete_blob(f"{prefix}/{n}"),
            server.endpoint_storage_options)


def test_remote_prefix_batch_rerun_change_delete(remote, tmp_path):
    url, put, delete, opts = remote
    paths = write_cmip6_archive(tmp_path / "gen", years=range(2000, 2004), **SMALL)
    files = {p.name: p.read_bytes() for p in paths}
    for name, data in files.items():
        put(name, data)
    put("README.txt", b"not listed: not a NetCDF name")
    out = tmp_path / "out"

    first = run_batch(url, str(out), workers=2, storage_options=opts,
                      output_storage_options={})
    assert first.ok, first.failures
    assert first.counts["new"] == 4
    (cid,) = first.collections
    repo = str(out / first.collections[cid]["icechunk"])
    ds = zarrport.open_dataset(repo, storage_options=opts)
    np.testing.assert_array_equal(ds.tas.values.astype("f8"), _values(files, tmp_path))

    # the listing's size/ETag/mtime match what the ledger recorded: nothing re-referenced
    again = run_batch(url, str(out), storage_options=opts, output_storage_options={})
    assert again.counts["unchanged"] == 4 and again.counts["new"] == again.counts["changed"] == 0

    # rewrite one object with other values: re-referenced, new values read back
    rewritten = tmp_path / "rewritten.nc"
    write_cmip6_year(rewritten, 2001, seed=5, **SMALL)
    time.sleep(1.1)  # a new second: object stores report whole-second modification times
    files[paths[1].name] = rewritten.read_bytes()
    put(paths[1].name, files[paths[1].name])
    third = run_batch(url, str(out), storage_options=opts, output_storage_options={})
    assert third.counts["changed"] == 1, (third.counts, third.failures)
    ds = zarrport.open_dataset(repo, storage_options=opts)
    np.testing.assert_array_equal(ds.tas.values.astype("f8"), _values(files, tmp_path))
    assert verify_batch(str(out), storage_options=opts, values=False).ok

    # delete one: verify names it, the next run drops it from the collection
    delete(paths[0].name)
    report = verify_batch(str(out), storage_options=opts, values=False)
    assert [(p.kind, p.item.rsplit("/", 1)[-1]) for p in report.problems] == [
        ("missing", paths[0].name)]
    fourth = run_batch(url, str(out), storage_options=opts, output_storage_options={})
    assert fourth.counts["missing"] == 1
    del files[paths[0].name]
    ds = zarrport.open_dataset(repo, storage_options=opts)
    np.testing.assert_array_equal(ds.tas.values.astype("f8"), _values(files, tmp_path))
