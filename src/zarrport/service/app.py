"""The FastAPI app: ``POST /api/references`` (and ``GET /healthz``).

Build it with :func:`create_app` (tests pass :class:`ServiceSettings` directly; ``zarrport
serve`` reads them from the environment). Every error answer is JSON
``{"error": {"code": ..., "message": ...}}`` with the status from
:data:`zarrport.service.errors.HTTP_STATUS`; no traceback ever reaches a client.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from zarrport import __version__
from zarrport.errors import InvalidArgumentError, ZarrportError
from zarrport.service.auth import check_bearer
from zarrport.service.errors import Unauthorized, error_payload, status_and_payload
from zarrport.service.references import reference_file
from zarrport.service.settings import ServiceSettings

__all__ = ["ReferenceRequest", "add_reference_routes", "create_app", "install_error_handlers"]


class ReferenceRequest(BaseModel):
    """Body of ``POST /api/references``."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        description="The one NetCDF-4/HDF5 or NetCDF-3 file to reference: a local path, "
        "file://, s3://, az:// (abfs://), gs:// or http(s):// URL below one of the "
        "service's allowed prefixes.",
        examples=["s3://bucket/archive/tas_day_2015.nc"],
    )


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class VariableInfo(BaseModel):
    dtype: str
    dims: list[str]
    shape: list[int]
    attrs: dict[str, Any]


class ReferenceAnswer(BaseModel):
    url: str = Field(description="The source, normalised.")
    reference: str = Field(description="Where the kerchunk JSON references are.")
    format: str
    created: bool = Field(description="False when an up-to-date reference already existed.")
    source: dict[str, Any] = Field(description="Size, mtime and ETag of the referenced file.")
    dims: dict[str, int]
    variables: dict[str, VariableInfo]
    attributes: dict[str, Any]


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "No or bad `url`, or a URL outside the allowed prefixes."),
        (401, "Missing or wrong bearer token."),
        (422, "The file cannot be referenced (missing, not NetCDF, damaged, unsupported)."),
        (502, "The storage backend failed."),
    )
}

_bearer = HTTPBearer(auto_error=False, description="ZARRPORT_API_TOKEN")


def create_app(settings: ServiceSettings) -> FastAPI:
    """The reference service for ``settings`` (which must carry an ``api_token``)."""
    if not settings.api_token:
        raise InvalidArgumentError("the reference API needs a bearer token (ZARRPORT_API_TOKEN)")
    app = FastAPI(
        title="zarrport",
        version=__version__,
        summary="Virtual Zarr references for NetCDF files, on request.",
    )
    add_reference_routes(app, settings)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    install_error_handlers(app)
    return app


def add_reference_routes(app: FastAPI, settings: ServiceSettings) -> None:
    """``POST /api/references`` on ``app``, behind the bearer token of ``settings``."""
    if not settings.api_token:
        raise InvalidArgumentError("the reference API needs a bearer token (ZARRPORT_API_TOKEN)")
    app.state.settings = settings

    def authorized(
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],  # for OpenAPI
    ) -> None:
        check_bearer(request.headers.get("authorization"), settings.api_token)

    @app.post(
        "/api/references",
        status_code=201,
        response_model=ReferenceAnswer,
        responses={200: {"model": ReferenceAnswer,
                         "description": "An up-to-date reference already existed."}, **_ERRORS},
        dependencies=[Depends(authorized)],
        summary="Reference one NetCDF file as kerchunk JSON",
        tags=["References"],
    )
    def post_reference(body: ReferenceRequest) -> JSONResponse:
        """Write (or find) the references to the file at `url` in the service's output and
        describe the dataset they open as. 201 when written now, 200 when an up-to-date
        reference was already there; `Location` names the reference."""
        result = reference_file(body.url, settings)
        return JSONResponse(result.to_dict(), status_code=201 if result.created else 200,
                            headers={"Location": result.reference})


def _error_response(status: int, payload: dict[str, Any],
                    headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(payload, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ZarrportError)
    async def zarrport_error(request: Request, exc: ZarrportError) -> JSONResponse:
        return _error_response(*status_and_payload(exc))

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        return _error_response(401, error_payload(exc.code, exc.message), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(400, error_payload("invalid_argument", _validation_message(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_response(exc.status_code, error_payload(code, str(exc.detail)),
                               dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _error_response(*status_and_payload(exc))


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        kind = err.get("type", "")
        if kind == "missing" and not loc:
            parts.append('the request body is empty: send a JSON object {"url": "..."}')
        elif kind == "missing":
            parts.append(f"the request body has no {loc[-1]!r}")
        elif kind == "extra_forbidden" and loc:
            parts.append(f"unknown field {loc[-1]!r} in the request body")
        elif kind == "json_invalid":
            parts.append("the request body is not JSON")
        elif kind == "model_attributes_type" or not loc:
            parts.append('the request body must be a JSON object {"url": "..."}')
        else:
            parts.append(f"{'.'.join(loc)}: {err.get('msg', 'invalid')}")
    return "; ".join(dict.fromkeys(parts)) or "invalid request body"
