"""HTTP statuses for zarrport errors: the service's one table.

Library code raises :class:`~zarrport.errors.ZarrportError` subclasses with a stable
``code``; every HTTP answer of the service (the FastAPI app and the Azure Functions adapter)
takes its status from :data:`HTTP_STATUS` and its body from :func:`error_payload`::

    {"error": {"code": "corrupt_source", "message": "file:///data/a.nc: not a readable ..."}}

A source that does not exist is **422**, not 404: the endpoint exists, the URL in the request
body names nothing that can be referenced (the ``code`` says ``not_found``). Anything that is
not a ``ZarrportError`` is a bug or an outage: 500 ``internal_error`` with a generic message,
the traceback goes to the server log only.
"""

from __future__ import annotations

import logging
from typing import Any

from zarrport.errors import ZarrportError

__all__ = [
    "HTTP_STATUS",
    "Unauthorized",
    "error_payload",
    "http_status",
    "status_and_payload",
]

log = logging.getLogger("zarrport.service")

#: HTTP status per error code. Codes of :mod:`zarrport.errors` plus the service's own
#: (``unauthorized``, ``internal_error``, ``not_configured``, ``method_not_allowed``).
HTTP_STATUS: dict[str, int] = {
    # the request is wrong
    "invalid_argument": 400,
    "unauthorized": 401,
    "forbidden": 403,  # a URL outside the roots `zarrport serve --allow` opens
    "too_large": 400,  # a tile, image or query beyond the service's bounds
    "not_served": 404,  # a collection, item or variable the service does not have
    "outside_bounds": 404,  # a tile or point outside the dataset
    "method_not_allowed": 405,
    # the URL is fine but names nothing zarrport can reference faithfully
    "not_found": 422,
    "not_a_file": 422,
    "unrecognized_format": 422,
    "corrupt_source": 422,
    "unsupported_variable": 422,
    "misaligned_chunks": 422,
    "incompatible_sources": 422,
    "partial_failure": 422,  # a batch run (service in batch mode) failed on the source
    "source_changed": 422,  # the source changed while it was being read
    # the service's side
    "output_exists": 409,
    "needs_migration": 409,  # the service's output is an Icechunk 1 repository
    "incomplete_output": 409,  # an unfinished `zarrport convert` store
    "missing_extra": 500,  # the service was installed without an extra it needs
    "output_not_writable": 500,
    "verification_failed": 500,
    "zarrport_error": 500,
    "internal_error": 500,
    "not_configured": 500,
    "storage_error": 502,
}

#: message of a 500 for an unexpected exception (details only in the server log)
INTERNAL_MESSAGE = "internal error while referencing; see the service log"


class Unauthorized(Exception):
    """A request without the configured bearer token (401)."""

    code = "unauthorized"

    def __init__(self, message: str, *, invalid_token: bool = False):
        super().__init__(message)
        self.message = message
        challenge = 'Bearer realm="zarrport"'
        if invalid_token:
            challenge += ', error="invalid_token"'
        self.headers = {"WWW-Authenticate": challenge}


def http_status(code: str) -> int:
    """The HTTP status for an error ``code`` (500 for codes this table does not know)."""
    return HTTP_STATUS.get(code, 500)


def error_payload(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": " ".join(str(message).split())}}


def status_and_payload(error: BaseException) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) for any exception; unexpected ones are logged with traceback."""
    if isinstance(error, ZarrportError):
        return http_status(error.code), error_payload(error.code, str(error))
    if isinstance(error, Unauthorized):
        return 401, error_payload(error.code, error.message)
    log.error("unexpected error while serving a request", exc_info=error)
    return 500, error_payload("internal_error", INTERNAL_MESSAGE)
