"""Round trips against real storage emulators (moto S3, Azurite): virtualize remote NetCDF
sources, write the references remotely (or locally), read them back through zarrport and
compare with the local files as netCDF4 reads them. No mocks."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
import xarray as xr

from zarrport.errors import OutputExistsError, SourceNotFoundError
from zarrport.open import detect, open_dataset
from zarrport.storage import stat
from zarrport.testing.samples import write_cmip6_archive, write_cmip6_year
from zarrport.verify import verify
from zarrport.virtual.api import virtualize

BUCKET = "zarrport-remote"
CONTAINER = "zarrport-remote"
FORMATS = ["json", "parquet", "icechunk"]
#: small grid, few chunks: every chunk is one ranged GET against the emulator. tas (105 kB a
#: year) stays above the 64 KiB under which variables are inlined rather than referenced.
SAMPLE = {"nlat": 6, "nlon": 12, "time_chunk": 73}
KINDS = {"json": "kerchunk-json", "parquet": "kerchunk-parquet", "icechunk": "icechunk"}


# --------------------------------------------------------------------------- helpers


def _prefix() -> str:
    return uuid.uuid4().hex[:10]


def _open_local(paths: list[Path]) -> xr.Dataset:
    """The oracle: the local files as netCDF4 decodes them, concatenated along time."""
    parts = [xr.open_dataset(p, engine="netcdf4") for p in paths]
    if len(parts) == 1:
        return parts[0]
    return xr.concat(parts, dim="time", data_vars="minimal", coords="minimal",
                     compat="override", join="override", combine_attrs="override")


def assert_same(actual: xr.Dataset, expected: xr.Dataset) -> None:
    assert set(actual.variables) == set(expected.variables)
    assert dict(actual.sizes) == dict(expected.sizes)
    for name, ev in expected.variables.items():
        av = actual[name].variable
        assert av.dims == ev.dims, name
        a, e = np.asarray(av.values), np.asarray(ev.values)
        assert a.dtype == e.dtype, (name, a.dtype, e.dtype)
        if e.dtype.kind in "fc":
            np.testing.assert_array_equal(a, e, err_msg=name)  # NaN == NaN here
        else:
            assert np.array_equal(a, e), name
    for attr in ("units", "standard_name", "cell_methods"):
        assert actual["tas"].attrs[attr] == expected["tas"].attrs[attr]
    assert actual.attrs["tracking_id"] == expected.attrs["tracking_id"]


def _upload_dir(put, files: list[Path], prefix: str) -> list[str]:
    return [put(f"{prefix}/{p.name}", p.read_bytes()) for p in files]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> list[Path]:
    return write_cmip6_archive(tmp_path_factory.mktemp("archive"), years=range(2015, 2018),
                               **SAMPLE)


@pytest.fixture(scope="module")
def expected(archive) -> xr.Dataset:
    return _open_local(archive).load()


@pytest.fixture(scope="module")
def s3(s3_server):
    s3_server.create_bucket(BUCKET)
    return s3_server


@pytest.fixture(scope="module")
def s3_sources(s3, archive) -> tuple[str, list[str]]:
    """(prefix, URLs) of the archive uploaded once to S3."""
    prefix = f"{_prefix()}/src"
    urls = _upload_dir(lambda k, d: s3.put_object(BUCKET, k, d), archive, prefix)
    return prefix, urls


@pytest.fixture(scope="module")
def az(azurite_server):
    azurite_server.create_container(CONTAINER)
    return azurite_server


@pytest.fixture(scope="module")
def az_sources(az, archive) -> tuple[str, list[str]]:
    prefix = f"{_prefix()}/src"
    urls = _upload_dir(lambda k, d: az.put_blob(CONTAINER, k, d), archive, prefix)
    return prefix, urls


# --------------------------------------------------------------------------- S3


@pytest.mark.s3
@pytest.mark.parametrize("fmt", FORMATS)
def test_s3_round_trip(s3, s3_sources, expected, fmt):
    """A glob over the bucket (explicit lists: the local-output and staleness tests)."""
    prefix, _ = s3_sources
    opts = s3.storage_options
    sources = [f"s3://{BUCKET}/{prefix}/tas_*.nc"]
    out = f"s3://{BUCKET}/{_prefix()}/refs/tas.{fmt}"

    result = virtualize(sources, out, concat_dim="time", storage_options=opts)
    assert result.format == fmt
    assert result.sources == 3
    assert result.dims["time"] == 3 * 365
    assert result.output_bytes > 0
    assert "tas" not in result.inlined_variables  # its chunks really are remote byte ranges

    assert detect(out, opts) == KINDS[fmt]
    with open_dataset(out, storage_options=opts) as ds:
        assert_same(ds, expected)
    report = verify(out, storage_options=opts)
    assert report.ok, report.problems
    assert report.sources == 3
    assert report.variables_checked == len(expected.variables)


@pytest.mark.s3
@pytest.mark.parametrize("fmt", FORMATS)
def test_s3_single_file_scalar(s3, tmp_path, fmt):
    """One file, no concatenation; the 0-d ``height`` must read back as 2.0."""
    path = write_cmip6_year(tmp_path / "tas_2020.nc", 2020, **SAMPLE)
    src = s3.put_object(BUCKET, f"{_prefix()}/one/tas_2020.nc", path.read_bytes())
    out = f"s3://{BUCKET}/{_prefix()}/refs/one.{fmt}"
    opts = s3.storage_options

    virtualize(src, out, storage_options=opts)
    with pytest.raises(OutputExistsError):
        virtualize(src, out, storage_options=opts)
    virtualize(src, out, storage_options=opts, overwrite=True)
    with open_dataset(out, storage_options=opts) as ds:
        assert ds["height"].shape == ()
        assert float(ds["height"]) == 2.0
        assert_same(ds, _open_local([path]).load())
    report = verify(out, storage_options=opts)
    assert report.ok, report.problems


@pytest.mark.s3
@pytest.mark.parametrize("fmt", FORMATS)
def test_s3_sources_local_output(s3, s3_sources, expected, tmp_path, fmt):
    """Sources on S3, references written to a local path, read with the S3 options."""
    _, urls = s3_sources
    opts = s3.storage_options
    out = tmp_path / f"tas.{fmt}"

    result = virtualize(urls, str(out), concat_dim="time", storage_options=opts,
                        output_storage_options={})
    assert result.output == out.as_uri()
    assert out.exists()
    with open_dataset(str(out), storage_options=opts) as ds:
        assert_same(ds, expected)
    report = verify(str(out), storage_options=opts)
    assert report.ok, report.problems


@pytest.fixture(scope="module")
def stale(s3, tmp_path_factory) -> dict:
    """An archive referenced in every format, then one source object rewritten."""
    opts = s3.storage_options
    tmp = tmp_path_factory.mktemp("stale")
    # uncompressed, so the rewritten file has the very same size: only ETag/mtime tell
    uncompressed = {**SAMPLE, "compression": None}
    archive = write_cmip6_archive(tmp / "orig", years=range(2015, 2018), **uncompressed)
    prefix = f"{_prefix()}/src"
    urls = _upload_dir(lambda k, d: s3.put_object(BUCKET, k, d), archive, prefix)
    outs = {fmt: f"s3://{BUCKET}/{_prefix()}/refs/tas.{fmt}" for fmt in FORMATS}
    before = {}
    for fmt, out in outs.items():
        virtualize(urls, out, concat_dim="time", storage_options=opts)
        before[fmt] = verify(out, storage_options=opts)

    # same layout and size, different values: only the metadata can tell
    changed = write_cmip6_year(tmp / archive[1].name, 2016, seed=7, **uncompressed)
    assert changed.stat().st_size == archive[1].stat().st_size
    # Icechunk compares modification times (S3: whole seconds, plus zarrport's one second of
    # slack): rewrite clearly later. The quick rewrite is test_s3_icechunk_quick_rewrite.
    mtime = stat(urls[1], opts).mtime
    time.sleep(max(0.0, mtime + 2.2 - time.time()))
    s3.put_object(BUCKET, f"{prefix}/{archive[1].name}", changed.read_bytes())
    return {"urls": urls, "outs": outs, "before": before, "changed": changed}


@pytest.mark.s3
@pytest.mark.parametrize("fmt", FORMATS)
def test_s3_stale_source(s3, stale, fmt):
    """A source object rewritten after referencing is named by verify, and Icechunk refuses
    to serve its chunks instead of returning the new bytes."""
    opts = s3.storage_options
    out = stale["outs"][fmt]
    assert stale["before"][fmt].ok, stale["before"][fmt].problems

    report = verify(out, storage_options=opts)
    assert not report.ok
    changed = [p for p in report.problems if p.kind == "changed"]
    assert [p.item for p in changed] == [stale["urls"][1]], report.problems
    assert not any(p.kind == "missing" for p in report.problems)

    if fmt == "icechunk":
        new = xr.open_dataset(stale["changed"], engine="netcdf4")["tas"].values
        with open_dataset(out, storage_options=opts) as ds:
            assert ds["tas"].isel(time=slice(0, 365)).notnull().any()  # untouched year reads
            year = ds["tas"].isel(time=slice(365, 730))
            try:
                values = year.values
            except Exception as err:  # Icechunk refuses modified objects: the wanted outcome
                assert "changed" in str(err).lower() or "modified" in str(err).lower(), err
            else:
                pytest.fail("Icechunk served chunks of a modified object" + (
                    " (the new data)" if np.array_equal(values, new, equal_nan=True) else ""))


@pytest.mark.s3
def test_s3_icechunk_quick_rewrite(s3, tmp_path):
    """Rewriting a source right after referencing it must not let Icechunk serve new bytes.
    verify must name it in any case (ETag)."""
    opts = s3.storage_options
    kw = {**SAMPLE, "compression": None}
    old = write_cmip6_year(tmp_path / "old.nc", 2015, **kw)
    new = write_cmip6_year(tmp_path / "new.nc", 2015, seed=7, **kw)
    key = f"{_prefix()}/quick/tas_2015.nc"
    out = f"s3://{BUCKET}/{_prefix()}/refs/quick.icechunk"
    while time.time() % 1 > 0.2:  # start early in a second: the rewrite lands in the same/next
        time.sleep(0.01)
    src = s3.put_object(BUCKET, key, old.read_bytes())
    virtualize(src, out, storage_options=opts)
    s3.put_object(BUCKET, key, new.read_bytes())

    report = verify(out, storage_options=opts)
    assert [(p.kind, p.item) for p in report.problems][:1] == [("changed", src)], report.problems
    with open_dataset(out, storage_options=opts) as ds:
        try:
            ds["tas"].load()  # must raise: the object changed
        except Exception as err:
            assert "changed" in str(err).lower(), err
            return  # refused: what we want
    # the references carry the ETag, so Icechunk must refuse the rewritten object
    pytest.fail("Icechunk served chunks of an object rewritten after referencing")


@pytest.mark.s3
@pytest.mark.parametrize("fmt", FORMATS)
def test_s3_missing_source(s3, fmt):
    opts = s3.storage_options
    out = f"s3://{BUCKET}/{_prefix()}/refs/nope.{fmt}"
    with pytest.raises(SourceNotFoundError):
        virtualize([f"s3://{BUCKET}/nope.nc"], out, storage_options=opts)
    fs = fsspec.filesystem("s3", key=opts["key"], secret=opts["secret"],
                           endpoint_url=opts["endpoint_url"], skip_instance_cache=True)
    assert not fs.exists(out.removeprefix("s3://"))
    assert not fs.find(out.removeprefix("s3://").rsplit("/", 1)[0])


@pytest.mark.s3
def test_s3_missing_glob(s3):
    with pytest.raises(SourceNotFoundError):
        virtualize([f"s3://{BUCKET}/{_prefix()}/tas_*.nc"], f"s3://{BUCKET}/x/out.json",
                   concat_dim="time", storage_options=s3.storage_options)


# --------------------------------------------------------------------------- Azure


@pytest.mark.azure
@pytest.mark.parametrize("fmt", FORMATS)
def test_azure_round_trip(az, az_sources, expected, fmt):
    prefix, _ = az_sources
    opts = az.storage_options
    out = f"az://{CONTAINER}/{_prefix()}/refs/tas.{fmt}"

    result = virtualize([f"az://{CONTAINER}/{prefix}/tas_*.nc"], out, concat_dim="time",
                        storage_options=opts)
    assert result.sources == 3
    assert detect(out, opts) == KINDS[fmt]
    with open_dataset(out, storage_options=opts) as ds:
        assert_same(ds, expected)
    report = verify(out, storage_options=opts)
    assert report.ok, report.problems


@pytest.mark.azure
@pytest.mark.parametrize("fmt", FORMATS)
def test_azure_single_file_endpoint_options(az, tmp_path, fmt):
    """One blob, explicit URL, the ``blob_endpoint`` spelling of the options."""
    path = write_cmip6_year(tmp_path / "tas_2020.nc", 2020, **SAMPLE)
    src = az.put_blob(CONTAINER, f"{_prefix()}/one/tas_2020.nc", path.read_bytes())
    opts = az.endpoint_storage_options
    out = f"az://{CONTAINER}/{_prefix()}/refs/one.{fmt}"

    virtualize([src], out, storage_options=opts)
    with open_dataset(out, storage_options=opts) as ds:
        assert float(ds["height"]) == 2.0
        assert_same(ds, _open_local([path]).load())
    assert verify(out, storage_options=opts).ok
