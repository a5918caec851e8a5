"""The Azure Functions adapter (deploy/azure-functions/function_app.py): its handlers called
with constructed trigger inputs (azure.functions' own HttpRequest, InputStream and
EventGridEvent types) against a real Azurite; the references land in Azurite and read back
what netCDF4 reads from the file."""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path

import azure.functions as func
import numpy as np
import pytest
import xarray as xr

import zarrport
from zarrport.testing.samples import write_cmip6_year

pytestmark = pytest.mark.azure

FUNCTION_APP = Path(__file__).resolve().parents[2] / "deploy" / "azure-functions" / \
    "function_app.py"
CONTAINER = "zarrport-functions"
TOKEN = "fn-token-" + "y" * 24
SAMPLE = {"nlat": 6, "nlon": 12, "time_chunk": 73}


def _load_function_app():
    spec = importlib.util.spec_from_file_location("zarrport_function_app", FUNCTION_APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fa = _load_function_app()
#: what the Functions host indexes (``get_functions`` may be called once per app)
FUNCTIONS = {fn.get_function_name(): fn for fn in fa.app.get_functions()}


class UnreadableStream(func.blob.InputStream):
    """A trigger input whose bytes must not be touched: referencing goes by URL."""

    def read(self, size: int = -1) -> bytes:
        raise AssertionError("the blob trigger handler read the blob content")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def az(azurite_server):
    azurite_server.create_container(CONTAINER)
    return azurite_server


@pytest.fixture
def run(az) -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def sample(tmp_path) -> Path:
    return write_cmip6_year(tmp_path / "tas_day_2018.nc", 2018, **SAMPLE)


@pytest.fixture
def env(az, run, monkeypatch) -> dict[str, str]:
    """App settings as a deployment would have them (the decorated functions read the
    process environment; the plain handlers are also given the dict)."""
    values = {
        "ZARRPORT_API_TOKEN": TOKEN,
        "ZARRPORT_OUTPUT": f"az://{CONTAINER}/{run}/refs/",
        "ZARRPORT_ALLOWED_PREFIXES": f"az://{CONTAINER}/{run}/incoming/",
        "ZARRPORT_SOURCE_CONTAINER": CONTAINER,
        "ZARRPORT_SOURCE_STORAGE": az.connection_string,
    }
    for key in ("ZARRPORT_STORAGE_OPTIONS", "ZARRPORT_OUTPUT_STORAGE_OPTIONS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def upload(az, run: str, path: Path, name: str | None = None) -> str:
    return az.put_blob(CONTAINER, f"{run}/incoming/{name or path.name}", path.read_bytes())


def blob_names(az, prefix: str) -> list[str]:
    client = az.service_client().get_container_client(CONTAINER)
    return sorted(b.name for b in client.list_blobs(name_starts_with=prefix))


def assert_same_as_netcdf4(reference: str, path: Path, storage_options: dict) -> None:
    with zarrport.open_dataset(reference, storage_options=storage_options) as actual, \
            xr.open_dataset(path, engine="netcdf4") as expected:
        assert set(actual.variables) == set(expected.variables)
        assert dict(actual.sizes) == dict(expected.sizes)
        for name, ev in expected.variables.items():
            a, e = np.asarray(actual[name].values), np.asarray(ev.values)
            assert a.dtype == e.dtype, name
            np.testing.assert_array_equal(a, e, err_msg=name)
        assert actual.attrs == expected.attrs


def http_request(body: bytes, token: str | None = TOKEN) -> func.HttpRequest:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return func.HttpRequest(method="POST", url="http://localhost:7071/api/references",
                            headers=headers, body=body)


def registered(name: str):
    """The user function behind a decorated trigger, and its bindings."""
    fn = FUNCTIONS[name]
    return fn.get_user_function(), fn.get_bindings_dict()["bindings"]


# --------------------------------------------------------------------------- blob trigger


def test_the_app_registers_three_triggers():
    assert set(FUNCTIONS) == {"on_new_netcdf", "on_blob_created", "post_references"}


def test_blob_trigger_references_new_netcdf_blob_by_url(az, run, env, sample):
    url = upload(az, run, sample)
    stream = UnreadableStream(data=b"", name=f"{CONTAINER}/{run}/incoming/{sample.name}",
                              uri=f"{az.blob_endpoint}/{CONTAINER}/{run}/incoming/{sample.name}",
                              length=sample.stat().st_size)

    result = fa.reference_new_blob(stream, env)

    assert result["url"] == url and result["created"] is True
    assert result["reference"].startswith(f"az://{CONTAINER}/{run}/refs/tas_day_2018-")
    assert result["variables"]["tas"]["dims"] == ["time", "lat", "lon"]
    assert blob_names(az, f"{run}/refs/") == [
        result["reference"].removeprefix(f"az://{CONTAINER}/")]
    assert_same_as_netcdf4(result["reference"], sample, az.storage_options)

    # the registered trigger (what the Functions host calls) does the same: up to date now
    on_new_netcdf, bindings = registered("on_new_netcdf")
    assert bindings[0]["type"] == "blobTrigger"
    assert bindings[0]["path"] == "%ZARRPORT_SOURCE_CONTAINER%/{name}.nc"
    assert bindings[0]["connection"] == "ZARRPORT_SOURCE_STORAGE"
    assert on_new_netcdf(stream) is None
    assert fa.reference_new_blob(stream, env)["created"] is False
    assert len(blob_names(az, f"{run}/refs/")) == 1


def test_blob_trigger_with_blob_endpoint_storage_options(az, run, env, sample):
    """ZARRPORT_STORAGE_OPTIONS (zarrport's ``blob_endpoint`` spelling) wins over the
    trigger's connection string."""
    upload(az, run, sample)
    settings = {**env, "ZARRPORT_SOURCE_STORAGE": "",
                "ZARRPORT_STORAGE_OPTIONS": json.dumps(az.endpoint_storage_options)}
    stream = UnreadableStream(data=b"", name=f"{CONTAINER}/{run}/incoming/{sample.name}")
    result = fa.reference_new_blob(stream, settings)
    assert result["created"] is True
    assert_same_as_netcdf4(result["reference"], sample, az.endpoint_storage_options)


def test_blob_trigger_logs_and_skips_a_file_it_cannot_reference(az, run, env, sample, caplog):
    name = f"{run}/incoming/broken.nc"
    az.put_blob(CONTAINER, name, sample.read_bytes()[:3000])
    stream = UnreadableStream(data=b"", name=f"{CONTAINER}/{name}")
    result = fa.reference_new_blob(stream, env)  # no exception: a retry would not help
    assert result["error"]["code"] == "corrupt_source"
    assert "cannot reference" in caplog.text
    assert blob_names(az, f"{run}/refs/") == []


def test_event_grid_trigger_references_created_blob(az, run, env, sample):
    url = upload(az, run, sample)
    path = f"{run}/incoming/{sample.name}"

    def event(event_type: str, subject: str) -> func.EventGridEvent:
        return func.EventGridEvent(
            id=uuid.uuid4().hex, data={"url": f"{az.blob_endpoint}/{CONTAINER}/{path}"},
            topic="/subscriptions/x/resourceGroups/y/providers/Microsoft.Storage/"
                  "storageAccounts/devstoreaccount1",
            subject=subject, event_type=event_type, event_time=None, data_version="1")

    subject = f"/blobServices/default/containers/{CONTAINER}/blobs/{path}"
    assert fa.reference_blob_event(event("Microsoft.Storage.BlobDeleted", subject), env) is None
    assert fa.reference_blob_event(event("Microsoft.Storage.BlobCreated",
                                         subject + ".json"), env) is None
    result = fa.reference_blob_event(event("Microsoft.Storage.BlobCreated", subject), env)
    assert result is not None and result["url"] == url and result["created"] is True
    assert_same_as_netcdf4(result["reference"], sample, az.storage_options)


# --------------------------------------------------------------------------- HTTP trigger


def test_http_trigger_201_then_200(az, run, env, sample):
    url = upload(az, run, sample)
    post_references, bindings = registered("post_references")
    assert bindings[0]["route"] == "references"
    assert [str(getattr(m, "value", m)) for m in bindings[0]["methods"]] == ["POST"]

    response = post_references(http_request(json.dumps({"url": url}).encode()))
    assert response.status_code == 201, response.get_body()
    assert response.mimetype == "application/json"
    body = json.loads(response.get_body())
    assert body["url"] == url and body["created"] is True
    assert response.headers["Location"] == body["reference"]
    assert body["dims"] == {"time": 365, "lat": 6, "lon": 12, "bnds": 2}
    assert body["variables"]["tas"]["attrs"]["units"] == "K"
    assert blob_names(az, f"{run}/refs/") == [body["reference"].removeprefix(f"az://{CONTAINER}/")]
    assert_same_as_netcdf4(body["reference"], sample, az.storage_options)

    again = fa.answer_http(http_request(json.dumps({"url": f"abfs://{CONTAINER}/{run}/incoming/"
                                                           f"{sample.name}"}).encode()), env)
    assert again.status_code == 200
    assert json.loads(again.get_body())["reference"] == body["reference"]


def test_http_trigger_errors(az, run, env, sample):
    url = upload(az, run, sample)
    junk = az.put_blob(CONTAINER, f"{run}/incoming/junk.nc", b"not a netcdf file" * 100)
    cases = [
        (http_request(json.dumps({"url": url}).encode(), token=None), 401, "unauthorized"),
        (http_request(json.dumps({"url": url}).encode(), token="wrong"), 401, "unauthorized"),
        (http_request(b"{}"), 400, "invalid_argument"),
        (http_request(b"not json"), 400, "invalid_argument"),
        (http_request(json.dumps({"url": f"az://{CONTAINER}/{run}/other/a.nc"}).encode()),
         400, "invalid_argument"),
        (http_request(json.dumps({"url": junk}).encode()), 422, "unrecognized_format"),
        (http_request(json.dumps({"url": url.replace("2018", "1999")}).encode()),
         422, "not_found"),
    ]
    for request, status, code in cases:
        response = fa.answer_http(request, env)
        assert response.status_code == status, response.get_body()
        body = json.loads(response.get_body())
        assert body["error"]["code"] == code, body
        assert "Traceback" not in response.get_body().decode()
        if status == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert blob_names(az, f"{run}/refs/") == []


def test_http_trigger_without_token_setting_is_500_not_configured(env, sample, caplog):
    settings = {k: v for k, v in env.items() if k != "ZARRPORT_API_TOKEN"}
    response = fa.answer_http(http_request(b'{"url": "az://c/a.nc"}'), settings)
    assert response.status_code == 500
    assert json.loads(response.get_body())["error"]["code"] == "not_configured"
    assert "ZARRPORT_API_TOKEN" in caplog.text
    assert "ZARRPORT_API_TOKEN" not in response.get_body().decode()
