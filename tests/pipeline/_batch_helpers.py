"""Shared checks of batch outputs (``zarrport.pipeline.run_batch``) for the fault, cluster
and kill tests: open a collection, compare two collections, the netCDF4 oracle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from zarrport.open import open_dataset, read_provenance


def manifest(out: Path) -> dict:
    return json.loads((out / "zarrport-batch.json").read_text())


def only_collection(out: Path) -> str:
    """The file:// URL of the single collection repository of a local batch output."""
    cols = manifest(out)["collections"]
    assert len(cols) == 1, cols
    (entry,) = cols.values()
    repo = out / entry["icechunk"]
    assert repo.is_dir(), repo
    return repo.as_uri()


def load(url: str, storage_options: dict | None = None) -> xr.Dataset:
    with open_dataset(url, storage_options=storage_options) as ds:
        return ds.load()


def provenance_sources(repo_url: str, storage_options: dict | None = None) -> list[dict]:
    record = read_provenance(repo_url, "icechunk", storage_options)
    assert record is not None, f"no zarrport provenance in {repo_url}"
    return record["sources"]


def per_source_refs(out: Path) -> dict[str, dict]:
    """relative path -> the kerchunk ``refs`` of every per-source JSON under OUT/references."""
    root = out / "references"
    return {str(p.relative_to(root)): json.loads(p.read_text())["refs"]
            for p in sorted(root.rglob("*.json"))}


def assert_same_dataset(actual: xr.Dataset, expected: xr.Dataset) -> None:
    """Same variables, dims, dtypes and values (NaN == NaN), same tas/global attributes."""
    assert set(actual.variables) == set(expected.variables)
    assert dict(actual.sizes) == dict(expected.sizes)
    for name, ev in expected.variables.items():
        av = actual[name].variable
        assert av.dims == ev.dims, name
        a, e = np.asarray(av.values), np.asarray(ev.values)
        assert a.dtype == e.dtype, (name, a.dtype, e.dtype)
        if e.dtype.kind in "fc":
            np.testing.assert_array_equal(a, e, err_msg=name)
        else:
            assert np.array_equal(a, e), name
    for attr in ("units", "standard_name", "cell_methods"):
        assert actual["tas"].attrs.get(attr) == expected["tas"].attrs.get(attr), attr


def netcdf_oracle(paths: list[Path]) -> xr.Dataset:
    """The files as netCDF4 decodes them, concatenated along time (loaded)."""
    parts = [xr.open_dataset(p, engine="netcdf4") for p in paths]
    try:
        ds = parts[0] if len(parts) == 1 else xr.concat(
            parts, dim="time", data_vars="minimal", coords="minimal", compat="override",
            join="override", combine_attrs="override")
        return ds.load()
    finally:
        for p in parts:
            p.close()
