"""Azure Functions adapter for zarrport's reference service (Python v2 programming model).

Three thin triggers over the same library code as ``zarrport serve``
(:mod:`zarrport.service.references`):

* ``on_new_netcdf`` -- blob trigger on ``%ZARRPORT_SOURCE_CONTAINER%/{name}.nc``: references
  each new or updated ``.nc`` blob by its URL (``az://container/path``); the handler never
  reads the blob's bytes (only the ranges zarrport needs, through its own Azure client);
* ``on_blob_created`` -- Event Grid trigger for ``Microsoft.Storage.BlobCreated`` events: the
  same, for large archives (the Functions host does not fetch the blob content at all);
* ``post_references`` -- HTTP ``POST /api/references`` with ``{"url": "..."}`` and
  ``Authorization: Bearer $ZARRPORT_API_TOKEN``; the same statuses and JSON bodies as the
  FastAPI app.

Configuration is the service's (``ZARRPORT_OUTPUT``, ``ZARRPORT_ALLOWED_PREFIXES``,
``ZARRPORT_API_TOKEN``, ``ZARRPORT_STORAGE_OPTIONS`` ...; see docs/service.md) plus
``ZARRPORT_SOURCE_CONTAINER`` (the watched container) and ``ZARRPORT_SOURCE_STORAGE`` (the
watched account's connection string, used by the trigger and, when
``ZARRPORT_STORAGE_OPTIONS`` is not set, by zarrport to read the blobs). Settings are read
per invocation, so a bad setting is reported in the log and the HTTP answer instead of
stopping the worker from indexing its functions.

The decorated functions only call :func:`reference_new_blob`, :func:`reference_blob_event`
and :func:`answer_http`, plain functions that the tests call with constructed inputs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import azure.functions as func

from zarrport.errors import InvalidArgumentError, ZarrportError
from zarrport.service.errors import error_payload, http_status
from zarrport.service.references import handle_reference_request, reference_file
from zarrport.service.settings import ServiceSettings

#: app setting holding the watched storage account's connection string
SOURCE_CONNECTION = "ZARRPORT_SOURCE_STORAGE"
#: blob path the trigger watches (``ZARRPORT_SOURCE_CONTAINER`` is an app setting)
SOURCE_PATH = "%ZARRPORT_SOURCE_CONTAINER%/{name}.nc"

log = logging.getLogger("zarrport.azure_functions")

# The bearer token is checked by zarrport itself (constant-time, same as `zarrport serve`);
# add a function key on top with func.AuthLevel.FUNCTION if wanted.
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


# --------------------------------------------------------------------------- plain handlers


def load_settings(*, require_token: bool,
                  environ: Mapping[str, str] | None = None) -> ServiceSettings:
    """The service settings from the app settings; the watched account's connection string
    doubles as the storage options when ``ZARRPORT_STORAGE_OPTIONS`` is not set."""
    env = os.environ if environ is None else environ
    settings = ServiceSettings.from_env(env, require_token=require_token)
    connection = env.get(SOURCE_CONNECTION, "")
    if settings.storage_options is None and "=" in connection:
        settings = dataclasses.replace(settings,
                                       storage_options={"connection_string": connection})
    return settings


def blob_url(name: str) -> str:
    """``az://container/path`` for a trigger's blob name ``container/path``."""
    container, _, path = name.strip().lstrip("/").partition("/")
    if not container or not path:
        raise InvalidArgumentError(f"blob name {name!r} is not 'container/path'")
    return f"az://{container}/{path}"


def reference_new_blob(blob: func.InputStream,
                       environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Reference the blob a blob trigger fired for, by URL (its content is not read)."""
    return _reference(blob_url(blob.name or ""), environ)


def reference_blob_event(event: func.EventGridEvent,
                         environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """Reference the blob of a ``Microsoft.Storage.BlobCreated`` event (subject
    ``/blobServices/default/containers/<container>/blobs/<path>``); other events and
    blobs not named ``*.nc`` are ignored (``None``)."""
    if event.event_type != "Microsoft.Storage.BlobCreated":
        return None
    _, sep, rest = (event.subject or "").partition("/containers/")
    container, sep2, path = rest.partition("/blobs/")
    if not sep or not sep2 or not path.lower().endswith(".nc"):
        log.info("zarrport: ignoring event for %s", event.subject)
        return None
    return _reference(f"az://{container}/{path}", environ)


def _reference(url: str, environ: Mapping[str, str] | None) -> dict[str, Any]:
    settings = load_settings(require_token=False, environ=environ)
    try:
        result = reference_file(url, settings)
    except ZarrportError as err:
        if http_status(err.code) >= 500:
            raise  # storage trouble: let the host retry the trigger (then the poison queue)
        # the file itself cannot be referenced: retrying will not help
        log.error("zarrport: cannot reference %s: [%s] %s", url, err.code, err)
        return {"url": url, **error_payload(err.code, str(err))}
    log.info("zarrport: %s %s -> %s", "referenced" if result.created else "up to date",
             url, result.reference)
    return result.to_dict()


def answer_http(req: func.HttpRequest,
                environ: Mapping[str, str] | None = None) -> func.HttpResponse:
    """``POST /api/references``: the same answers as the FastAPI app."""
    try:
        settings: ServiceSettings | None = load_settings(require_token=True, environ=environ)
    except ZarrportError as err:
        log.error("zarrport: the reference service is not configured: %s", err)
        settings = None
    status, headers, payload = handle_reference_request(dict(req.headers), req.get_body(),
                                                        settings)
    return func.HttpResponse(json.dumps(payload), status_code=status, headers=headers,
                             mimetype="application/json")


# --------------------------------------------------------------------------- triggers


@app.blob_trigger(arg_name="blob", path=SOURCE_PATH, connection=SOURCE_CONNECTION)
def on_new_netcdf(blob: func.InputStream) -> None:
    reference_new_blob(blob)


@app.event_grid_trigger(arg_name="event")
def on_blob_created(event: func.EventGridEvent) -> None:
    reference_blob_event(event)


@app.route(route="references", methods=["POST"])
def post_references(req: func.HttpRequest) -> func.HttpResponse:
    return answer_http(req)
