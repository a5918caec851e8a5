"""The README's Python example runs as written, against a public bucket on moto.

The example's ``s3://bucket`` is a moto bucket readable anonymously (a public-read bucket
policy, no credentials in the environment); the only change made to the code is the S3
endpoint added to its ``storage_options`` (the example talks to AWS), and its ``as_of``
date moved to now (the test's commits are made today). The GEFS and batch lines need
their outputs: the test makes both, under the names the example uses.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

README = Path(__file__).resolve().parents[1] / "README.md"
PUBLIC_READ = ('{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*",'
               '"Action":["s3:GetObject","s3:ListBucket"],'
               '"Resource":["arn:aws:s3:::bucket","arn:aws:s3:::bucket/*"]}]}')


def _python_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has a Python example"
    return blocks[0]


def test_readme_python_example_runs(tmp_path, s3_server, monkeypatch):
    pytest.importorskip("eccodes")
    from zarrport.grib.ingest import ingest_cycle
    from zarrport.pipeline.batch import run_batch
    from zarrport.testing.grib_synthetic import make_gefs_cycle
    from zarrport.testing.samples import write_cmip6_year

    client = s3_server.client()
    client.create_bucket(Bucket="bucket", ACL="public-read")
    client.put_bucket_policy(Bucket="bucket", Policy=PUBLIC_READ)
    local = []
    for year in (2015, 2016):
        path = tmp_path / f"tas_{year}.nc"
        write_cmip6_year(path, year, nlat=4, nlon=8)
        client.upload_file(str(path), "bucket", f"tas_{year}.nc",
                           ExtraArgs={"ACL": "public-read"})
        local.append(path)
    work = tmp_path / "work"
    work.mkdir()
    # gefs.icechunk with the cycle the example opens by tag
    make_gefs_cycle(tmp_path / "gefs", "2025010100", members=2, steps=(0, 6), seed=0)
    ingest_cycle("gefs", f"file://{tmp_path}/gefs/gefs.20250101/00",
                 str(work / "gefs.icechunk"))
    # refs/: a batch output holding the collection the example names
    archive = tmp_path / "archive"
    archive.mkdir()
    write_cmip6_year(archive / "tas_day_CESM2_ssp585_r1i1p1f1_gn_20150101-20151231.nc",
                     2015, nlat=4, nlon=8, source_id="CESM2", experiment_id="ssp585")
    run_batch(f"{archive}/*.nc", str(work / "refs"),
              collection_by="{variable}_{freq}_{model}_{scenario}_{member}_{grid}_{years}.nc")

    monkeypatch.chdir(work)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
                 "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    import datetime as dt

    now = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code = _python_block()
    assert 'as_of="2025-03-01"' in code
    code = code.replace(
        '{"anon": True}', f'{{"anon": True, "endpoint_url": "{s3_server.endpoint_url}"}}'
    ).replace('as_of="2025-03-01"', f'as_of="{now}"')
    namespace: dict = {}
    exec(compile(textwrap.dedent(code), "README.md", "exec"), namespace)  # noqa: S102
    assert "tas" in namespace["ds"]
    opened = xr.open_dataset(work / "tas.parquet", engine="zarrport",
                             storage_options={"anon": True,
                                              "endpoint_url": s3_server.endpoint_url})
    expected = xr.concat([xr.open_dataset(p) for p in local], dim="time")
    np.testing.assert_array_equal(opened.tas.values, expected.tas.values)
