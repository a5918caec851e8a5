"""zarrport.storage against real servers: moto (S3) and Azurite (Azure Blob)."""

from __future__ import annotations

import os
import time
import uuid

import fsspec
import icechunk
import numpy as np
import obstore
import pytest
import zarr

import servers
from zarrport.errors import InvalidArgumentError, NotAFileError, SourceNotFoundError
from zarrport.storage import (
    SourceStat,
    filesystem,
    fsspec_reference_options,
    icechunk_storage,
    icechunk_storage_settings,
    icechunk_virtual_container,
    normalize_url,
    object_store_registry,
    stat,
)

BUCKET = "zarrport-test"
CONTAINER = "zarrport-test"
PAYLOAD = b"zarrport \x00\x01\x02 bytes" * 7


def _key(name: str) -> str:
    return f"{uuid.uuid4().hex[:12]}/{name}"


@pytest.fixture(scope="module")
def bucket(s3_server) -> str:
    s3_server.create_bucket(BUCKET)
    return BUCKET


@pytest.fixture(scope="module")
def container(azurite_server) -> str:
    azurite_server.create_container(CONTAINER)
    return CONTAINER


@pytest.fixture(params=["connection_string", "blob_endpoint"])
def az_options(request, azurite_server) -> dict:
    """Both ways of pointing at the emulator: adlfs's connection string, zarrport's
    blob_endpoint."""
    if request.param == "connection_string":
        return azurite_server.storage_options
    return azurite_server.endpoint_storage_options


# --------------------------------------------------------------------------- normalize_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/data/x/a.nc", "file:///data/x/a.nc"),
        ("/data/x/../y/a.nc", "file:///data/y/a.nc"),
        ("/data/dir/", "file:///data/dir/"),
        ("file:///data/a.nc", "file:///data/a.nc"),
        ("file://localhost/data/a.nc", "file:///data/a.nc"),
        ("file:///", "file:///"),
        ("s3://bucket/k/a.nc", "s3://bucket/k/a.nc"),
        ("S3://bucket/k/", "s3://bucket/k/"),
        ("s3a://bucket/k", "s3://bucket/k"),
        ("gs://bucket/o", "gs://bucket/o"),
        ("gcs://bucket/o", "gs://bucket/o"),
        ("az://cont/p/a.nc", "az://cont/p/a.nc"),
        ("abfs://cont/p/a.nc", "az://cont/p/a.nc"),
        ("abfss://cont/p/a.nc", "az://cont/p/a.nc"),
        ("azure://cont/p", "az://cont/p"),
        (
            "abfss://cont@MyAcct.dfs.core.windows.net/p/a.nc",
            "az://cont@myacct.dfs.core.windows.net/p/a.nc",
        ),
        ("https://Example.COM/a/b.nc?sig=AbC", "https://example.com/a/b.nc?sig=AbC"),
        ("http://127.0.0.1:9000/a", "http://127.0.0.1:9000/a"),
    ],
)
def test_normalize_url(given, expected):
    assert normalize_url(given) == expected
    assert normalize_url(expected) == expected  # idempotent


def test_normalize_url_relative_and_home(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert normalize_url("a.nc") == f"file://{tmp_path}/a.nc"
    assert normalize_url("sub/../b.nc") == f"file://{tmp_path}/b.nc"
    assert normalize_url("file://rel/c.nc") == f"file://{tmp_path}/rel/c.nc"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert normalize_url("~/d.nc") == f"file://{tmp_path}/d.nc"


@pytest.mark.parametrize("bad", ["", "ftp://host/x", "s3://", "az:///p", "hdfs://nn/x"])
def test_normalize_url_rejects(bad):
    with pytest.raises(InvalidArgumentError):
        normalize_url(bad)


# --------------------------------------------------------------------------- options


def test_unknown_option_is_rejected(tmp_path):
    with pytest.raises(InvalidArgumentError, match="acount_name"):
        object_store_registry(["az://c/x"], {"acount_name": "x"})


def test_profile_is_fsspec_only():
    with pytest.raises(InvalidArgumentError, match="AWS_PROFILE"):
        object_store_registry(["s3://b/x"], {"profile": "p", "endpoint_url": "http://h:1"})


def test_azure_needs_an_account(monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    with pytest.raises(InvalidArgumentError, match="account"):
        icechunk_storage("az://cont/repo", {})


def test_sourcestat_roundtrip():
    s = SourceStat(url="s3://b/k", size=12, mtime=1.5, etag='"abc"')
    assert SourceStat.from_dict(s.to_dict()) == s
    assert SourceStat.from_dict({"url": "file:///x", "size": 3}) == SourceStat(
        "file:///x", 3, None, None
    )
    with pytest.raises(InvalidArgumentError):
        SourceStat.from_dict({"url": "x"})
    with pytest.raises(AttributeError):
        s.size = 3  # frozen


# --------------------------------------------------------------------------- local


def test_local_stat_registry_and_fs(tmp_path):
    d = tmp_path / "with space"
    d.mkdir()
    f = d / "a.bin"
    f.write_bytes(PAYLOAD)
    url = normalize_url(str(f))

    st = stat(str(f))
    assert st == SourceStat(url=url, size=len(PAYLOAD), mtime=os.stat(f).st_mtime, etag=None)

    with pytest.raises(SourceNotFoundError):
        stat(str(d / "missing.bin"))
    with pytest.raises(NotAFileError):
        stat(str(d))

    registry = object_store_registry([url])
    store, path = registry.resolve(url)
    assert bytes(obstore.get_range(store, path, start=2, end=9)) == PAYLOAD[2:9]

    fs, p = filesystem(url)
    assert p == str(f)
    assert fs.cat_file(p) == PAYLOAD


# --------------------------------------------------------------------------- S3 (moto)


@pytest.mark.s3
def test_s3_stat(s3_server, bucket):
    key = _key("a.bin")
    before = time.time()
    url = s3_server.put_object(bucket, key, PAYLOAD)
    head = s3_server.client().head_object(Bucket=bucket, Key=key)

    st = stat(url, s3_server.storage_options)
    assert st.url == url
    assert st.size == len(PAYLOAD)
    assert st.etag == head["ETag"]
    assert st.mtime is not None and abs(st.mtime - before) < 120

    with pytest.raises(SourceNotFoundError):
        stat(f"s3://{bucket}/{key}.missing", s3_server.storage_options)
    with pytest.raises(NotAFileError):
        stat(f"s3://{bucket}/{key.split('/')[0]}", s3_server.storage_options)
    with pytest.raises(NotAFileError):
        stat(f"s3://{bucket}/", s3_server.storage_options)
    with pytest.raises(SourceNotFoundError):
        stat("s3://no-such-bucket-zarrport/x.nc", s3_server.storage_options)


@pytest.mark.s3
def test_s3_registry_and_fsspec(s3_server, bucket):
    url = s3_server.put_object(bucket, _key("b.bin"), PAYLOAD)
    registry = object_store_registry([url], s3_server.storage_options)
    store, path = registry.resolve(url)
    assert path == url.removeprefix(f"s3://{bucket}/")
    assert bytes(obstore.get(store, path).bytes()) == PAYLOAD
    assert bytes(obstore.get_range(store, path, start=3, length=5)) == PAYLOAD[3:8]

    # the s3a:// spelling resolves to the same store
    store2, _ = object_store_registry(["s3a://" + url[5:]], s3_server.storage_options).resolve(
        "s3a://" + url[5:]
    )
    assert bytes(obstore.get(store2, path).bytes()) == PAYLOAD

    fs, p = filesystem(url, s3_server.storage_options)
    assert p == url[len("s3://") :]
    assert fs.cat_file(p) == PAYLOAD


@pytest.mark.s3
def test_s3_region_option_forms(s3_server, bucket):
    """``region`` (top level) works like ``client_kwargs.region_name``."""
    url = s3_server.put_object(bucket, _key("r.bin"), PAYLOAD)
    opts = {
        "key": s3_server.key,
        "secret": s3_server.secret,
        "endpoint_url": s3_server.endpoint_url,
        "region": "us-east-1",
    }
    assert stat(url, opts).size == len(PAYLOAD)
    fs, p = filesystem(url, opts)
    assert fs.cat_file(p) == PAYLOAD


@pytest.mark.s3
def test_s3_kerchunk_reference_fs(s3_server, bucket):
    url = s3_server.put_object(bucket, _key("ref.bin"), PAYLOAD)
    refs = {"version": 1, "refs": {"x": [url, 4, 6]}}
    ref_fs = fsspec.filesystem(
        "reference", fo=refs, **fsspec_reference_options(s3_server.storage_options, remote_url=url)
    )
    assert ref_fs.cat_file("x") == PAYLOAD[4:10]
    # without remote_url the protocol comes from the option names
    assert fsspec_reference_options(s3_server.storage_options)["remote_protocol"] == "s3"


@pytest.mark.s3
def test_s3_icechunk_repository(s3_server, bucket):
    url = f"s3://{bucket}/{_key('repo.icechunk')}"
    storage = icechunk_storage(url, s3_server.storage_options)
    config = icechunk.RepositoryConfig(storage=icechunk_storage_settings())
    repo = icechunk.Repository.create(storage, config=config)
    session = repo.writable_session("main")
    zarr.create_group(session.store, attributes={"answer": 42})
    session.commit("first")

    reopened = icechunk.Repository.open(icechunk_storage(url, s3_server.storage_options))
    group = zarr.open_group(reopened.readonly_session("main").store, mode="r")
    assert group.attrs["answer"] == 42
    # the repository really is in the bucket
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=url.split("/", 3)[3])
    assert any(o["Key"].split("/")[-2] == "snapshots" for o in listed.get("Contents", []))


def _write_virtual_array(repo_storage, container, creds, location, offset, length, checksum=None):
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(container)
    access = icechunk.containers_credentials({container.url_prefix: creds})
    repo = icechunk.Repository.create(
        repo_storage, config=config, authorize_virtual_chunk_access=access
    )
    session = repo.writable_session("main")
    group = zarr.group(session.store)
    group.create_array(
        "v",
        shape=(10,),
        chunks=(10,),
        dtype="<i4",
        serializer=zarr.codecs.BytesCodec(endian="little"),
        compressors=None,
        filters=None,
        fill_value=-1,
    )
    session.store.set_virtual_ref(
        "v/c/0", location, offset=offset, length=length, checksum=checksum
    )
    session.commit("virtual")
    return access


def _read_virtual_array(repo_storage, access):
    repo = icechunk.Repository.open(repo_storage, authorize_virtual_chunk_access=access)
    return zarr.open_group(repo.readonly_session("main").store, mode="r")["v"][:]


@pytest.mark.s3
def test_s3_icechunk_virtual_chunks(s3_server, bucket, tmp_path):
    values = np.arange(10, dtype="<i4") * 3 - 7
    header = b"HDR:0123"
    key = _key("raw.bin")
    url = s3_server.put_object(bucket, key, header + values.tobytes())
    st = stat(url, s3_server.storage_options)

    container, creds = icechunk_virtual_container(f"s3://{bucket}", s3_server.storage_options)
    assert container.url_prefix == f"s3://{bucket}/"
    repo_storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    access = _write_virtual_array(
        repo_storage, container, creds, url, len(header), values.nbytes, checksum=st.etag
    )
    np.testing.assert_array_equal(_read_virtual_array(repo_storage, access), values)

    # The etag recorded by stat() is what Icechunk checks: a changed source is refused.
    s3_server.put_object(bucket, key, header + (values + 1).tobytes())
    with pytest.raises(Exception, match="(?i)checksum|modified|changed"):
        _read_virtual_array(repo_storage, access)


# --------------------------------------------------------------------------- Azure (Azurite)


@pytest.mark.azure
def test_azure_stat(azurite_server, container, az_options):
    path = _key("a.bin")
    before = time.time()
    url = azurite_server.put_blob(container, path, PAYLOAD)
    props = azurite_server.service_client().get_blob_client(container, path).get_blob_properties()

    st = stat(url, az_options)
    assert st.url == url
    assert st.size == len(PAYLOAD)
    assert st.etag is not None and st.etag.strip('"') == props.etag.strip('"')
    assert st.mtime is not None and abs(st.mtime - before) < 120

    with pytest.raises(SourceNotFoundError):
        stat(f"az://{container}/{path}.missing", az_options)
    with pytest.raises(NotAFileError):
        stat(f"az://{container}/{path.split('/')[0]}", az_options)
    with pytest.raises(NotAFileError):
        stat(f"abfs://{container}/", az_options)
    with pytest.raises(SourceNotFoundError):
        stat("az://no-such-container/x.nc", az_options)


@pytest.mark.azure
def test_azure_registry_and_fsspec(azurite_server, container, az_options):
    url = azurite_server.put_blob(container, _key("b.bin"), PAYLOAD)
    abfs_url = "abfs://" + url[len("az://") :]
    registry = object_store_registry([abfs_url], az_options)
    for u in (url, abfs_url):  # registered under the canonical and the given spelling
        store, path = registry.resolve(u)
        assert path == url.removeprefix(f"az://{container}/")
        assert bytes(obstore.get(store, path).bytes()) == PAYLOAD
        assert bytes(obstore.get_range(store, path, start=3, length=5)) == PAYLOAD[3:8]

    fs, p = filesystem(url, az_options)
    assert p == url[len("az://") :]
    assert fs.cat_file(p) == PAYLOAD


@pytest.mark.azure
def test_azure_kerchunk_reference_fs(azurite_server, container, az_options):
    url = azurite_server.put_blob(container, _key("ref.bin"), PAYLOAD)
    ref_opts = fsspec_reference_options(az_options, remote_url=url)
    assert ref_opts["remote_protocol"] == "az"
    assert "blob_endpoint" not in ref_opts["remote_options"]  # adlfs would ignore it
    refs = {"version": 1, "refs": {"x": [url, 4, 6]}}
    ref_fs = fsspec.filesystem("reference", fo=refs, **ref_opts)
    assert ref_fs.cat_file("x") == PAYLOAD[4:10]


@pytest.mark.azure
def test_azure_icechunk_repository(azurite_server, container, az_options):
    url = f"az://{container}/{_key('repo.icechunk')}"
    storage = icechunk_storage(url, az_options)
    repo = icechunk.Repository.create(
        storage, config=icechunk.RepositoryConfig(storage=icechunk_storage_settings())
    )
    session = repo.writable_session("main")
    zarr.create_group(session.store, attributes={"answer": 43})
    session.commit("first")

    reopened = icechunk.Repository.open(icechunk_storage(url, az_options))
    assert zarr.open_group(reopened.readonly_session("main").store, mode="r").attrs["answer"] == 43
    blobs = azurite_server.service_client().get_container_client(container).list_blobs(
        name_starts_with=url.split("/", 3)[3] + "/snapshots/"
    )
    assert any(True for _ in blobs)


@pytest.mark.azure
def test_azure_icechunk_virtual_chunks(azurite_server, container, az_options, tmp_path):
    values = np.arange(10, dtype="<i4") ** 2
    url = azurite_server.put_blob(container, _key("raw.bin"), b"HDR!" + values.tobytes())
    st = stat(url, az_options)

    container_cfg, creds = icechunk_virtual_container(f"abfs://{container}/", az_options)
    assert container_cfg.url_prefix == f"az://{container}/"
    repo_storage = icechunk.local_filesystem_storage(str(tmp_path / "repo"))
    access = _write_virtual_array(
        repo_storage, container_cfg, creds, url, 4, values.nbytes, checksum=st.etag
    )
    np.testing.assert_array_equal(_read_virtual_array(repo_storage, access), values)


# --------------------------------------------------------------------------- local Icechunk


def test_local_icechunk_virtual_chunks(tmp_path):
    values = np.linspace(-1, 1, 10).astype("<f4").view("<i4")
    src = tmp_path / "sources"
    src.mkdir()
    (src / "raw.bin").write_bytes(b"\xff" * 16 + values.tobytes())
    container, creds = icechunk_virtual_container(str(src))
    assert container.url_prefix == f"file://{src}/"
    # the explicit no-credential sentinel: icechunk 2.3 deprecates None (it would read
    # credentials from the environment)
    import icechunk

    assert creds is icechunk.credentials.LocalFileSystemAccess
    storage = icechunk_storage(str(tmp_path / "repo"))
    access = _write_virtual_array(
        storage, container, creds, normalize_url(str(src / "raw.bin")), 16, values.nbytes
    )
    np.testing.assert_array_equal(
        _read_virtual_array(icechunk_storage(str(tmp_path / "repo")), access), values
    )


def test_local_virtual_container_needs_a_directory():
    with pytest.raises(InvalidArgumentError):
        icechunk_virtual_container("file:///")


# --------------------------------------------------------------------------- fixtures


def test_azurite_missing_fails_with_make_test_hint(monkeypatch, tmp_path):
    monkeypatch.setattr(servers, "AZURITE_BIN", tmp_path / "nope" / "azurite-blob")
    with pytest.raises(servers.ServerStartError, match="make test"):
        with servers.run_azurite():
            pass


# --------------------------------------------------------------------------- VirtualiZarr


@pytest.fixture(scope="module")
def small_netcdf(tmp_path_factory) -> tuple[bytes, np.ndarray]:
    import xarray as xr

    values = np.arange(100.0).reshape(10, 10)
    path = tmp_path_factory.mktemp("nc") / "t.nc"
    xr.Dataset({"t": (("y", "x"), values)}).to_netcdf(path, engine="h5netcdf")
    return path.read_bytes(), values


@pytest.mark.parametrize("backend", ["s3", "azure"])
def test_virtualizarr_through_registry_into_icechunk(
    backend, request, small_netcdf, tmp_path
):
    """The registry serves VirtualiZarr's HDF parser; the container serves Icechunk reads."""
    import xarray as xr
    from virtualizarr import open_virtual_dataset
    from virtualizarr.parsers import HDFParser

    data, values = small_netcdf
    if backend == "s3":
        server = request.getfixturevalue("s3_server")
        request.getfixturevalue("bucket")
        url = server.put_object(BUCKET, _key("t.nc"), data)
        opts, prefix = server.storage_options, f"s3://{BUCKET}/"
    else:
        server = request.getfixturevalue("azurite_server")
        request.getfixturevalue("container")
        url = server.put_blob(CONTAINER, _key("t.nc"), data)
        opts, prefix = server.endpoint_storage_options, f"az://{CONTAINER}/"

    vds = open_virtual_dataset(
        url, registry=object_store_registry([url], opts), parser=HDFParser(), loadable_variables=[]
    )
    assert vds["t"].data.manifest.dict()["0.0"]["path"] == url

    container, creds = icechunk_virtual_container(prefix, opts)
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(container)
    access = icechunk.containers_credentials({container.url_prefix: creds})
    storage = icechunk_storage(str(tmp_path / "repo"))
    repo = icechunk.Repository.create(storage, config, authorize_virtual_chunk_access=access)
    session = repo.writable_session("main")
    vds.vz.to_icechunk(session.store)
    session.commit("virtual")

    repo = icechunk.Repository.open(storage, authorize_virtual_chunk_access=access)
    ds = xr.open_zarr(repo.readonly_session("main").store, consolidated=False)
    np.testing.assert_array_equal(ds["t"].values, values)


def test_icechunk_virtual_chunks_over_http(tmp_path):
    """NetCDF files served over http(s) virtualized into Icechunk and read back through the
    repository's http virtual chunk container (icechunk 2.3 refused its old constructor)."""
    import functools
    import http.server
    import threading

    import netCDF4
    import numpy as np

    import zarrport
    from zarrport.testing.samples import write_cmip6_year

    served = tmp_path / "www"
    served.mkdir()
    nc = served / "tas_2015.nc"
    write_cmip6_year(nc, 2015, nlat=6, nlon=12, time_chunk=73)
    class Ranged(http.server.SimpleHTTPRequestHandler):
        """Byte ranges, as object stores and web servers answer them."""

        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            path = served / self.path.lstrip("/")
            rng = self.headers.get("Range")
            if not rng or not path.is_file():
                return super().do_GET()
            data = path.read_bytes()
            start, _, end = rng.removeprefix("bytes=").partition("-")
            start = int(start)
            end = min(int(end), len(data) - 1) if end else len(data) - 1
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            self.wfile.write(data[start:end + 1])

    handler = functools.partial(Ranged, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/tas_2015.nc"
        container, _ = icechunk_virtual_container(url.rsplit("/", 1)[0] + "/", None)
        assert container.url_prefix.startswith("http://127.0.0.1:")
        repo = tmp_path / "tas.icechunk"
        zarrport.virtualize([url], str(repo))
        got = zarrport.open_dataset(str(repo))["tas"].values
        with netCDF4.Dataset(nc) as f:
            want = np.ma.filled(f["tas"][:].astype("float64"), np.nan)
        np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
    finally:
        server.shutdown()
        server.server_close()
