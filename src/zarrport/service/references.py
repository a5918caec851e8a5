"""Reference one source file on request: the library code behind ``POST /api/references``
(FastAPI, :mod:`zarrport.service.app`) and the Azure Functions triggers
(``deploy/azure-functions``).

:func:`reference_file` writes kerchunk JSON references for one NetCDF/HDF5 file into the
configured output, under a name derived from the source URL alone
(``<file stem>-<16 hex digits of sha256(url)>.json``), so the same URL always lands at the
same place. If a reference is already there and its recorded source (size, mtime, ETag)
matches the file as it is now, it is returned as is (``created=False``); if the source
changed, the reference is rewritten. Then the reference is opened with
:func:`zarrport.open_dataset` and described: dimensions, variables (stored dtype, dims,
shape, attributes including the CF encoding ones) and global attributes.

:func:`handle_reference_request` is the same endpoint without a web framework (headers and
body in, status, headers and JSON body out), for adapters such as Azure Functions.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from zarrport import storage
from zarrport.errors import InvalidArgumentError, OutputExistsError
from zarrport.service.auth import check_bearer
from zarrport.service.errors import error_payload, status_and_payload
from zarrport.service.settings import ALLOW_ANY, ServiceSettings

__all__ = [
    "ReferenceResult",
    "allowed_url",
    "handle_reference_request",
    "parse_request_body",
    "reference_file",
    "reference_url",
]

#: longest URL a request may name
MAX_URL_LENGTH = 4096
#: encoding attributes reported with a variable's attributes (as the file stores them)
_ENCODING_ATTRS = ("units", "calendar", "_FillValue", "missing_value", "scale_factor",
                   "add_offset")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_DOT_SEGMENT = re.compile(r"(^|/)(\.|\.\.|%2e|%2e%2e|\.%2e|%2e\.)(/|$)", re.IGNORECASE)


@dataclass
class ReferenceResult:
    """What ``POST /api/references`` answers (``to_dict``)."""

    url: str  # the source, normalised
    reference: str  # URL of the kerchunk JSON references
    format: str
    created: bool  # False: an up-to-date reference was already there
    source: dict[str, Any]  # size, mtime, etag of the source when referenced
    dims: dict[str, int]
    variables: dict[str, dict[str, Any]]
    attributes: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- URLs


def allowed_url(url: Any, settings: ServiceSettings) -> str:
    """The normalised URL if a request may reference it; :class:`InvalidArgumentError`
    (400) otherwise: not a string, empty, a pattern, dot segments, or outside every
    ``allowed_prefixes`` entry."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidArgumentError("'url' must be a non-empty string")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise InvalidArgumentError(f"'url' is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise InvalidArgumentError("'url' contains control characters")
    if any(c in url for c in "*?["):
        raise InvalidArgumentError(
            "'url' must name one file: patterns and query strings (*, ?, [) are not accepted"
        )
    normalized = storage.normalize_url(url)
    rest = normalized.split("://", 1)[1]
    if _DOT_SEGMENT.search(rest) or "%2f" in rest.lower():
        raise InvalidArgumentError("'url' must not contain '.'/'..' segments or encoded '/'")
    if normalized.endswith("/"):
        raise InvalidArgumentError(f"{normalized} is a prefix (ends with '/'), not a file")
    if ALLOW_ANY in settings.allowed_prefixes:
        return normalized
    check = _resolved(normalized)
    for prefix in settings.allowed_prefixes:
        if check.startswith(_resolved(prefix)):
            return normalized
    raise InvalidArgumentError(
        f"{normalized} is not under an allowed prefix of this service"
    )


def _resolved(url: str) -> str:
    """Local paths with symlinks resolved (a link inside an allowed directory must not
    reach outside it); other URLs unchanged."""
    if not url.startswith("file://"):
        return url
    path = url.removeprefix("file://")
    real = os.path.realpath(path)
    return "file://" + real + ("/" if path.endswith("/") and not real.endswith("/") else "")


def reference_url(source: str, output: str) -> str:
    """Where the references to ``source`` go below ``output`` (both normalised URLs):
    ``<output>/<stem>-<sha256(source)[:16]>.json``."""
    name = source.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".nc", ".nc4", ".h5", ".hdf5", ".he5"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    stem = _UNSAFE_NAME.sub("_", name).strip("._")[:100] or "source"
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    return f"{output.rstrip('/')}/{stem}-{digest}.json"


# --------------------------------------------------------------------------- referencing


def reference_file(url: str, settings: ServiceSettings) -> ReferenceResult:
    """Reference the one file at ``url`` into ``settings.output`` (kerchunk JSON) and
    describe it. Raises :class:`~zarrport.errors.ZarrportError` subclasses for anything a
    request can cause (see :mod:`zarrport.service.errors` for the HTTP statuses)."""
    from zarrport.virtual.api import virtualize

    source = allowed_url(url, settings)
    ref = reference_url(source, settings.output)
    out_opts = settings.out_options
    current = storage.stat(source, settings.storage_options)
    created = False
    if not _up_to_date(ref, current, out_opts):
        exists = _exists(ref, out_opts)
        if settings.output.startswith("file://"):
            os.makedirs(settings.output.removeprefix("file://"), exist_ok=True)
        try:
            virtualize(source, ref, format="json", storage_options=settings.storage_options,
                       output_storage_options=settings.output_storage_options,
                       overwrite=exists)
            created = True
        except OutputExistsError:
            # another request for the same URL wrote it in between: use theirs if current
            if not _up_to_date(ref, current, out_opts):
                raise
    record = _provenance(ref, out_opts) or {}
    recorded = (record.get("sources") or [current.to_dict()])[0]
    description = describe(ref, _open_options(settings))
    return ReferenceResult(
        url=source,
        reference=ref,
        format="json",
        created=created,
        source={k: recorded.get(k) for k in ("size", "mtime", "etag")},
        **description,
    )


def _exists(url: str, options: dict | None) -> bool:
    fs, path = storage.filesystem(url, options)
    try:
        return bool(fs.exists(path))
    except Exception:
        return False


def _provenance(ref: str, options: dict | None) -> dict | None:
    from zarrport.open import read_provenance

    return read_provenance(ref, "kerchunk-json", options)


def _up_to_date(ref: str, current: storage.SourceStat, options: dict | None) -> bool:
    if not _exists(ref, options):
        return False
    record = _provenance(ref, options)
    sources = (record or {}).get("sources") or []
    if len(sources) != 1:
        return False
    try:
        recorded = storage.SourceStat.from_dict(sources[0])
    except InvalidArgumentError:
        return False
    return recorded == current


def _open_options(settings: ServiceSettings) -> dict[str, Any] | None:
    """Options to read the reference back: the output's, with the sources' over them (one
    dict may mix backends; see :mod:`zarrport.storage`)."""
    if settings.output_storage_options is None or settings.output.startswith("file://"):
        return settings.storage_options
    return {**settings.output_storage_options, **(settings.storage_options or {})}


def describe(ref: str, storage_options: dict | None) -> dict[str, Any]:
    """Dimensions, variables and attributes of the dataset at ``ref``, JSON-ready.

    Variables carry the dtype the file stores and its attributes including the CF encoding
    ones (``units``/``calendar`` of times, ``_FillValue``, ``scale_factor`` ...), as a
    netCDF reader would list them.
    """
    from zarrport.open import open_dataset

    with open_dataset(ref, storage_options=storage_options) as ds:
        variables: dict[str, dict[str, Any]] = {}
        for name, var in ds.variables.items():
            attrs = dict(var.attrs)
            for key in _ENCODING_ATTRS:
                if key in var.encoding and key not in attrs:
                    attrs[key] = var.encoding[key]
            variables[str(name)] = {
                "dtype": str(np.dtype(var.encoding.get("dtype", var.dtype))),
                "dims": [str(d) for d in var.dims],
                "shape": [int(n) for n in var.shape],
                "attrs": jsonable(attrs),
            }
        return {
            "dims": {str(k): int(v) for k, v in ds.sizes.items()},
            "variables": variables,
            "attributes": jsonable(dict(ds.attrs)),
        }


def jsonable(value: Any) -> Any:
    """Attribute values as strict JSON: NumPy scalars and arrays to Python, bytes to text,
    non-finite floats to the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()] if value.ndim else jsonable(value.item())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


# --------------------------------------------------------------------------- plain HTTP


def parse_request_body(body: bytes) -> str:
    """The ``url`` of a ``{"url": "..."}`` request body (400 otherwise)."""
    try:
        doc = json.loads(body or b"")
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidArgumentError(f"the request body is not JSON ({err})") from err
    if not isinstance(doc, dict):
        raise InvalidArgumentError('the request body must be a JSON object {"url": "..."}')
    unknown = sorted(set(doc) - {"url"})
    if unknown:
        raise InvalidArgumentError(f"unknown field(s) in the request body: {', '.join(unknown)}")
    if "url" not in doc:
        raise InvalidArgumentError("the request body has no 'url'")
    if not isinstance(doc["url"], str):
        raise InvalidArgumentError("'url' must be a string")
    return doc["url"]


def handle_reference_request(
    headers: Mapping[str, str], body: bytes, settings: ServiceSettings | None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """``POST /api/references`` without a web framework: (status, headers, JSON body).

    ``settings`` ``None`` (the adapter could not load its configuration) answers 500
    ``not_configured``. Statuses as in the FastAPI app: 201 created, 200 already current,
    400, 401, 422, 5xx from :data:`~zarrport.service.errors.HTTP_STATUS`.
    """
    if settings is None:
        return 500, {}, error_payload("not_configured", "the reference service is not configured")
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        check_bearer(lowered.get("authorization"), settings.api_token)
        result = reference_file(parse_request_body(body), settings)
    except Exception as err:  # mapped, never a traceback in the answer
        status, payload = status_and_payload(err)
        extra = dict(getattr(err, "headers", {}) or {}) if status == 401 else {}
        return status, extra, payload
    return (201 if result.created else 200), {"Location": result.reference}, result.to_dict()
