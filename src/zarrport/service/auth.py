"""Bearer-token check shared by the FastAPI app and the Azure Functions adapter."""

from __future__ import annotations

import hmac

from zarrport.service.errors import Unauthorized

__all__ = ["check_bearer"]


def check_bearer(authorization: str | None, token: str | None) -> None:
    """Raise :class:`Unauthorized` unless ``authorization`` is ``Bearer <token>``.

    The comparison is constant-time (:func:`hmac.compare_digest` on bytes). A service
    without a configured token refuses every request.
    """
    if not token:
        raise Unauthorized("the service has no API token configured", invalid_token=False)
    if not authorization:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'",
                           invalid_token=True)
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized("invalid bearer token", invalid_token=True)
