"""Configuration of the reference service, from the environment.

==============================  ==========================================================
``ZARRPORT_API_TOKEN``          bearer token every ``POST /api/references`` must carry
                                (required by ``zarrport serve``; the HTTP API refuses to
                                start without it)
``ZARRPORT_OUTPUT``             where references go: a local directory or an ``s3://``,
                                ``az://``, ``gs://`` prefix (required)
``ZARRPORT_ALLOWED_PREFIXES``   comma-separated URL prefixes a request may reference, each
                                a directory (``s3://bucket/archive/``, ``/data/nc/``);
                                ``*`` allows any URL (required)
``ZARRPORT_STORAGE_OPTIONS``    JSON object of fsspec-style storage options for the sources
                                and, unless the next one is set, the output (optional)
``ZARRPORT_OUTPUT_STORAGE_OPTIONS``  JSON object of storage options for the output only
                                (optional)
==============================  ==========================================================
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zarrport import storage
from zarrport.errors import InvalidArgumentError

__all__ = ["ENV", "ServiceSettings"]

#: the environment variables, by setting name
ENV = {
    "api_token": "ZARRPORT_API_TOKEN",
    "output": "ZARRPORT_OUTPUT",
    "allowed_prefixes": "ZARRPORT_ALLOWED_PREFIXES",
    "storage_options": "ZARRPORT_STORAGE_OPTIONS",
    "output_storage_options": "ZARRPORT_OUTPUT_STORAGE_OPTIONS",
}

#: the ``ZARRPORT_ALLOWED_PREFIXES`` entry that allows every URL
ALLOW_ANY = "*"


@dataclass(frozen=True)
class ServiceSettings:
    """What the reference service needs; build it with :meth:`from_env` or directly (tests).

    ``allowed_prefixes`` are normalised URLs ending in ``/`` (or ``("*",)``): a request may
    only reference a URL below one of them. ``storage_options`` apply to the sources and,
    unless ``output_storage_options`` is given, to the output.
    """

    output: str
    allowed_prefixes: tuple[str, ...]
    api_token: str | None = field(default=None, repr=False)
    storage_options: dict[str, Any] | None = None
    output_storage_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.output or not str(self.output).strip():
            raise InvalidArgumentError("the reference output location is empty")
        object.__setattr__(self, "output", _directory_url(str(self.output)))
        raw = self.allowed_prefixes
        prefixes = (raw,) if isinstance(raw, str) else tuple(raw)
        if not prefixes:
            raise InvalidArgumentError(
                f"no allowed URL prefixes: set {ENV['allowed_prefixes']} (comma-separated; "
                f"'{ALLOW_ANY}' allows any URL)"
            )
        object.__setattr__(
            self,
            "allowed_prefixes",
            tuple(p if p == ALLOW_ANY else _directory_url(p) for p in prefixes),
        )
        if self.api_token is not None and not self.api_token.strip():
            raise InvalidArgumentError(f"{ENV['api_token']} is empty")

    @property
    def out_options(self) -> dict[str, Any] | None:
        """Storage options for the output."""
        if self.output_storage_options is not None:
            return self.output_storage_options
        return self.storage_options

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 require_token: bool = True) -> ServiceSettings:
        """Settings from ``ZARRPORT_*`` variables; a missing or bad one raises
        :class:`~zarrport.errors.InvalidArgumentError` with a one-line message."""
        env = os.environ if environ is None else environ
        token = env.get(ENV["api_token"]) or None
        if require_token and token is None:
            raise InvalidArgumentError(
                f"{ENV['api_token']} is not set: the reference API needs a bearer token "
                "(e.g. export ZARRPORT_API_TOKEN=$(openssl rand -hex 32))"
            )
        output = env.get(ENV["output"], "").strip()
        if not output:
            raise InvalidArgumentError(
                f"{ENV['output']} is not set: name a local directory or an s3://, az:// or "
                "gs:// prefix where references are written"
            )
        raw_prefixes = env.get(ENV["allowed_prefixes"], "")
        prefixes = tuple(p.strip() for p in raw_prefixes.split(",") if p.strip())
        if not prefixes:
            raise InvalidArgumentError(
                f"{ENV['allowed_prefixes']} is not set: list the URL prefixes requests may "
                f"reference, comma-separated ('{ALLOW_ANY}' allows any URL)"
            )
        return cls(
            output=output,
            allowed_prefixes=prefixes,
            api_token=token,
            storage_options=_json_options(env, ENV["storage_options"]),
            output_storage_options=_json_options(env, ENV["output_storage_options"]),
        )


def _directory_url(location: str) -> str:
    url = storage.normalize_url(location)
    return url if url.endswith("/") else url + "/"


def _json_options(env: Mapping[str, str], name: str) -> dict[str, Any] | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError as err:
        raise InvalidArgumentError(f"{name} is not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value
