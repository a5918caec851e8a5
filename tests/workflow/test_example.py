"""examples/pipeline.yaml end to end on a tiny CMIP6-like archive, on a real Dask cluster
(scheduler + 2 worker processes): batch -> convert -> normals -> regional means; a re-run
skips everything; a changed --set reruns only the stages it reaches."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import xarray as xr

from clirun import run_main
from zarrport.testing.samples import write_cmip6_archive

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline.yaml"


zp = run_main


def actions(out: str) -> dict[str, str]:
    return {s["id"]: s["action"] for s in json.loads(out)["stages"]}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    for variable in ("tas", "pr"):
        write_cmip6_archive(root / "archive", years=range(2015, 2018), nlat=18, nlon=36,
                            variable=variable)
    return root


def test_example_pipeline_on_a_cluster(root, dask_cluster, capsys):
    sets = ["--set", f"root={root}", "--set", f"dask.scheduler={dask_cluster.address}"]
    code, out, err = zp(capsys, "run", str(EXAMPLE), *sets, "--json")
    assert code == 0, err
    ids = ["refs", "tas-copy", "normals[variable=tas]", "normals[variable=pr]",
           "regions[variable=tas]", "regions[variable=pr]"]
    assert actions(out) == dict.fromkeys(ids, "run")
    # every Dask stage ran on the given cluster (their own "dask:" line names it)
    assert err.count(f"dask: cluster at {dask_cluster.address}") == 4, err

    out_dir = root / "pipeline"
    regions = json.loads((EXAMPLE.parent / "regions.geojson").read_text())
    region_ids = sorted(f["properties"]["region_id"] for f in regions["features"])
    for v in ("tas", "pr"):
        for name in (f"normals-{v}.png", f"regional-means-{v}.png"):
            assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        table = pd.read_parquet(out_dir / f"regional-means-{v}.parquet")
        assert sorted(table["region_id"].astype(str).unique()) == region_ids
        assert table[v].notna().any()
        # the pipeline's window (2) over 2015..2017: windows 2015-2016 and 2016-2017
        with xr.open_dataset(out_dir / f"normals-{v}.nc", decode_times=False) as ds:
            assert sorted(map(int, ds["first_year"].values)) == [2015, 2016]
            assert sorted(map(int, ds["last_year"].values)) == [2016, 2017]
    assert (out_dir / "tas-series.zarr" / "zarr.json").exists()
    assert (out_dir / "stac" / "catalog.json").exists()

    # nothing changed: every stage instance is skipped
    code, out, err = zp(capsys, "run", str(EXAMPLE), *sets, "--json")
    assert code == 0, err
    assert actions(out) == dict.fromkeys(ids, "skip")

    # another window reaches the normals only
    code, out, err = zp(capsys, "run", str(EXAMPLE), *sets, "--set", "window=1", "--json")
    assert code == 0, err
    assert actions(out) == {**dict.fromkeys(ids, "skip"), "normals[variable=tas]": "run",
                            "normals[variable=pr]": "run"}
    with xr.open_dataset(out_dir / "normals-tas.nc", decode_times=False) as ds:
        assert sorted(map(int, ds["first_year"].values)) == [2015, 2016, 2017]
