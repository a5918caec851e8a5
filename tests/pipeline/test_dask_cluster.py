"""``run_batch`` on a real Dask cluster (a ``dask scheduler`` and two ``dask worker``
processes, see the ``dask_cluster`` fixture): the combined dataset equals a local run's, and
the per-source work really ran on the cluster's workers."""

from __future__ import annotations

import pytest
from _batch_helpers import (
    assert_same_dataset,
    load,
    netcdf_oracle,
    only_collection,
    per_source_refs,
    provenance_sources,
)

from zarrport.pipeline import run_batch
from zarrport.pipeline.ledger import Ledger
from zarrport.testing.samples import write_cmip6_archive

#: tas at 6 x 12 is ~105 kB a year: referenced (not inlined), 5 chunks per file.
SAMPLE = {"nlat": 6, "nlon": 12, "time_chunk": 73}
YEARS = range(1990, 2000)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_cmip6_archive(tmp_path_factory.mktemp("archive"), years=YEARS, **SAMPLE)


@pytest.fixture(scope="module")
def local_run(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    result = run_batch(str(archive[0].parent / "*.nc"), str(out), workers=2)
    assert result.ok, result.failures
    return out, result


def test_cluster_fixture(dask_cluster):
    """Two registered single-threaded workers that import this checkout's zarrport."""
    with dask_cluster.client() as client:
        info = client.scheduler_info()
        assert len(info["workers"]) == 2
        assert all(w["nthreads"] == 1 for w in info["workers"].values())
        files = client.run(lambda: __import__("zarrport").__file__)
        assert len(set(files.values())) == 1


@pytest.mark.parametrize("how", ["address", "client"])
def test_batch_on_cluster_equals_local(dask_cluster, archive, local_run, tmp_path, how):
    local_out, local_result = local_run
    out = tmp_path / "out"
    with dask_cluster.client() as client:
        workers = set(client.scheduler_info()["workers"])
        # "client": the caller's own Client, not registered as the default client (as with
        # several clients, or Client(set_as_default=False)): run_batch must use that one.
        scheduler = dask_cluster.address if how == "address" else client
        result = run_batch(str(archive[0].parent / "*.nc"), str(out), scheduler=scheduler)
        assert result.ok, result.failures
        # the client given is the caller's: run_batch must leave it usable
        assert client.status == "running"

    # the work ran on the cluster's workers, every file exactly once, both workers busy
    assert sum(result.workers.values()) == len(archive), result.workers
    assert set(result.workers) <= workers, (result.workers, workers)
    assert len(result.workers) == 2, result.workers
    assert result.counts["new"] == len(archive)

    # the same combined dataset, sources and per-source references as the local run
    repo, local_repo = only_collection(out), only_collection(local_out)
    ds, local_ds = load(repo), load(local_repo)
    assert_same_dataset(ds, local_ds)
    assert_same_dataset(ds, netcdf_oracle(archive))
    assert [s["url"] for s in provenance_sources(repo)] == [
        s["url"] for s in provenance_sources(local_repo)] == [p.as_uri() for p in archive]
    assert per_source_refs(out) == per_source_refs(local_out)
    assert len(per_source_refs(out)) == len(archive)

    rows = Ledger(out / "ledger.sqlite").rows()
    assert {r["status"] for r in rows} == {"ok"} and len(rows) == len(archive)
    assert len({r["snapshot"] for r in rows}) == 1 and rows[0]["snapshot"]
    assert result.collections == {
        k: {**v, "updated": result.collections[k]["updated"],
            "snapshot": result.collections[k]["snapshot"]}
        for k, v in local_result.collections.items()}
