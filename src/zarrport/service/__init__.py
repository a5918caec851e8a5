"""zarrport's HTTP service: ``POST /api/references`` (reference one file on request).

:func:`create_app` builds the FastAPI app from :class:`ServiceSettings` (``zarrport serve``
reads them from ``ZARRPORT_*`` environment variables); :func:`reference_file` is the library
call behind it, shared with the Azure Functions adapter in ``deploy/azure-functions``.
HTTP statuses per error code live in :data:`zarrport.service.errors.HTTP_STATUS`.
"""

from zarrport.service.app import create_app
from zarrport.service.errors import HTTP_STATUS
from zarrport.service.references import ReferenceResult, handle_reference_request, reference_file
from zarrport.service.settings import ServiceSettings

__all__ = [
    "HTTP_STATUS",
    "ReferenceResult",
    "ServiceSettings",
    "create_app",
    "handle_reference_request",
    "reference_file",
]
