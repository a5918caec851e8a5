"""The one place that maps a URL plus storage options to stores and filesystems.

Everything in zarrport that touches bytes outside the process goes through here: fsspec
filesystems (kerchunk references, ``ReferenceFileSystem``), obstore stores (VirtualiZarr
parsers, via an :class:`~obspec_utils.registry.ObjectStoreRegistry`), and Icechunk
(repository storage and virtual chunk containers).

URLs
----
:func:`normalize_url` gives every location one spelling:

* local paths (relative, absolute, ``~``) and ``file://`` URLs -> ``file:///abs/path``
  (not percent-decoded: fsspec's convention; a trailing ``/`` is kept, it marks a prefix);
* ``s3://bucket/key`` (``s3a://`` -> ``s3://``), ``gs://bucket/key`` (``gcs://`` -> ``gs://``);
* Azure Blob: **canonical form is** ``az://container/path``. ``abfs://``, ``abfss://`` and
  ``azure://`` are rewritten to ``az://``. The account comes from the storage options
  (``account_name``, a ``connection_string``) or the environment
  (``AZURE_STORAGE_ACCOUNT_NAME``). An account-qualified URL
  ``abfs[s]://container@account.dfs.core.windows.net/path`` keeps its ``container@host``
  part (``az://container@account.dfs.core.windows.net/path``) so the account is not lost;
  the account is then taken from the URL. Icechunk virtual references must use the plain
  ``az://container/path`` form (Icechunk reads the container from the URL host).
* ``http(s)://`` URLs are kept (query strings too: signed URLs).

Storage options
---------------
The user-facing names are fsspec's (s3fs / adlfs), so the same dict can be handed to any
zarrport function, whatever library ends up doing the I/O. They are translated here, and
only here, into obstore and Icechunk configuration:

S3 (s3fs names)
    ``key``, ``secret``, ``token`` (session token), ``anon``, ``endpoint_url``,
    ``region`` or ``client_kwargs={"region_name": ...}``, ``requester_pays``. With an
    ``endpoint_url`` (MinIO, moto, Ceph ...) path-style addressing is used and ``http://``
    endpoints are allowed; the region defaults to ``us-east-1`` there. Without key/secret
    and without ``anon`` the libraries' own environment chains are used (``AWS_*``
    variables, instance metadata ...). ``profile`` only works for fsspec (obstore and
    Icechunk have no profile support; checked with obstore 0.12.1, icechunk 2.3.0): for those
    it raises :class:`InvalidArgumentError`; set ``AWS_PROFILE``/credentials in the
    environment instead.
Azure Blob (adlfs names)
    ``account_name``, ``account_key``, ``sas_token``, ``connection_string`` (parsed for
    ``AccountName``, ``AccountKey``, ``SharedAccessSignature``, ``BlobEndpoint``,
    ``DefaultEndpointsProtocol``/``EndpointSuffix``, ``UseDevelopmentStorage=true``),
    ``anon``, ``client_id``/``client_secret``/``tenant_id`` (service principal),
    ``account_host`` (adlfs: ``https://{account_host}``). Emulators and other non-default
    endpoints: either a ``connection_string`` with ``BlobEndpoint=http://host:port/account``
    (works with adlfs unchanged), or zarrport's ``blob_endpoint="http://host:port/account"``
    (the full account URL; adlfs's ``account_host`` is https-only, checked with adlfs
    2026.8.0, so for fsspec ``blob_endpoint`` is turned into a connection string here).
    Without a key/SAS/connection string the libraries read the environment
    (``AZURE_STORAGE_*``).
GCS (gcsfs names; no emulator in the test suite)
    ``token`` (``"anon"`` or a service-account JSON file), ``anon``, ``project``,
    ``endpoint_url``.

One dict may mix backends (sources on S3, output on Azure): each backend takes its own keys
and ignores the others'. A key no backend knows raises :class:`InvalidArgumentError` (typos
must not silently fall back to other credentials).

Retries
-------
Transient failures (timeouts, 5xx, connection resets) are retried by each library's retry
machinery, configured explicitly from the constants below: obstore ``RetryConfig`` +
``ClientConfig`` timeouts; s3fs/botocore ``retries`` (standard mode) and timeouts;
Icechunk repository storage via :func:`icechunk_storage_settings` (put it in
``RepositoryConfig.storage``) and ``network_stream_timeout_seconds`` for S3. Not settable
(documented, library defaults apply): adlfs does not expose the Azure SDK retry policy
(azure-storage-blob's ``ExponentialRetry``, 3 retries), and Icechunk's virtual-chunk
fetchers use object_store's / the AWS SDK's built-in retry defaults.
"""

from __future__ import annotations

import functools
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from zarrport.errors import (
    InvalidArgumentError,
    NotAFileError,
    SourceNotFoundError,
    StorageError,
)

if TYPE_CHECKING:  # heavy imports stay lazy: the CLI imports this module on every run
    import fsspec
    import icechunk
    from obspec_utils.registry import ObjectStoreRegistry

__all__ = [
    "SourceStat",
    "filesystem",
    "fsspec_reference_options",
    "icechunk_storage",
    "icechunk_storage_settings",
    "icechunk_virtual_container",
    "normalize_url",
    "object_store_registry",
    "stat",
]

# --------------------------------------------------------------------------- constants

#: obstore / object_store retry policy (5xx, connection errors, timeouts of safe requests).
RETRY_MAX_RETRIES = 10
RETRY_TIMEOUT = timedelta(minutes=3)
RETRY_INIT_BACKOFF = timedelta(milliseconds=100)
RETRY_MAX_BACKOFF = timedelta(seconds=15)
RETRY_BACKOFF_BASE = 2
#: HTTP client timeouts (obstore: per request; botocore: connect/read).
CONNECT_TIMEOUT_S = 10
REQUEST_TIMEOUT_S = 120
#: botocore (s3fs) retries: standard mode retries throttling, 5xx and connection errors.
BOTO_MAX_ATTEMPTS = 10
#: Icechunk repository storage retries.
ICECHUNK_MAX_TRIES = 10
ICECHUNK_INITIAL_BACKOFF_MS = 100
ICECHUNK_MAX_BACKOFF_MS = 15_000
ICECHUNK_STREAM_TIMEOUT_S = 60

DEFAULT_S3_REGION = "us-east-1"

_SCHEME_ALIASES = {
    "s3a": "s3",
    "gcs": "gs",
    "abfs": "az",
    "abfss": "az",
    "azure": "az",
}
_REMOTE_SCHEMES = {"s3", "gs", "az", "http", "https"}
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")

# Option names per backend. "translated": understood by the obstore/Icechunk translation.
# "fsspec_only": valid for the fsspec filesystem, meaningless for obstore/Icechunk (ignored).
_S3_TRANSLATED = {
    "key", "secret", "token", "anon", "endpoint_url", "region", "client_kwargs",
    "requester_pays", "config_kwargs", "profile", "username", "password",
}  # fmt: skip
_S3_FSSPEC_ONLY = {
    "use_ssl", "s3_additional_kwargs", "default_block_size", "default_fill_cache",
    "default_cache_type", "version_aware", "cache_regions", "max_concurrency",
    "fixed_upload_size", "session",
}  # fmt: skip
_AZ_TRANSLATED = {
    "account_name", "account_key", "sas_token", "connection_string", "anon",
    "client_id", "client_secret", "tenant_id", "account_host", "blob_endpoint", "credential",
}  # fmt: skip
_AZ_FSSPEC_ONLY = {
    "location_mode", "default_fill_cache", "default_cache_type", "version_aware",
    "assume_container_exists", "max_concurrency", "timeout", "connection_timeout",
    "read_timeout", "blocksize", "socket_timeout", "request_session",
}  # fmt: skip
_GS_TRANSLATED = {"token", "anon", "project", "endpoint_url", "requester_pays"}
_GS_FSSPEC_ONLY = {"access", "consistency", "cache_timeout", "secure_serialize", "session_kwargs"}
_GENERIC_FSSPEC = {
    "skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths",
    "asynchronous", "loop", "auto_mkdir", "client_kwargs", "headers",
}  # fmt: skip
_ALL_KNOWN = (
    _S3_TRANSLATED | _S3_FSSPEC_ONLY | _AZ_TRANSLATED | _AZ_FSSPEC_ONLY
    | _GS_TRANSLATED | _GS_FSSPEC_ONLY | _GENERIC_FSSPEC
)  # fmt: skip

_AZURITE_ACCOUNT = "devstoreaccount1"
# Microsoft's published, public development-storage key (UseDevelopmentStorage=true).
_AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


# --------------------------------------------------------------------------- URLs


def normalize_url(url_or_path: str) -> str:
    """One spelling per location (see the module docstring for the forms).

    >>> normalize_url("/data/a.nc")
    'file:///data/a.nc'
    >>> normalize_url("abfs://container/dir/a.nc")
    'az://container/dir/a.nc'
    """
    s = os.fspath(url_or_path)
    if not isinstance(s, str):
        s = os.fsdecode(s)
    if not s or not s.strip():
        raise InvalidArgumentError("empty path or URL")
    m = _URL_RE.match(s)
    if m is None:
        return _file_url(os.path.expanduser(s))
    scheme = m.group(1).lower()
    rest = s[m.end() :]
    if scheme == "file":
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
        return _file_url(rest)  # a relative "file://rel/path" is relative to the cwd (fsspec)
    scheme = _SCHEME_ALIASES.get(scheme, scheme)
    if scheme not in _REMOTE_SCHEMES:
        raise InvalidArgumentError(
            f"unsupported URL scheme {m.group(1)!r} in {s!r}; use a local path, file://, "
            "s3://, gs://, az:// (abfs://), http:// or https://",
            source=s,
        )
    netloc, sep, path = rest.partition("/")
    if not netloc or netloc.startswith("@"):
        what = {"az": "container", "http": "host", "https": "host"}.get(scheme, "bucket")
        raise InvalidArgumentError(f"URL {s!r} has no {what}", source=s)
    if scheme == "az" and "@" in netloc:
        container, _, host = netloc.partition("@")
        netloc = f"{container}@{host.lower()}"
    elif scheme in ("http", "https"):
        netloc = netloc.lower()
    return f"{scheme}://{netloc}{sep}{path}"


def _file_url(path: str) -> str:
    trailing = path.endswith("/") or path.endswith(os.sep)
    p = os.path.normpath(os.path.abspath(path))
    if trailing and not p.endswith("/"):
        p += "/"
    return "file://" + p


@dataclass(frozen=True)
class _Location:
    """A normalized URL split into the parts the backends need."""

    url: str  # normalized
    scheme: str  # file | s3 | gs | az | http | https
    bucket: str  # bucket / container / host ("" for file)
    path: str  # key inside the bucket (no leading "/"); absolute path for file
    account: str | None = None  # Azure account from an account-qualified URL
    azure_host: str | None = None  # e.g. acct.dfs.core.windows.net

    @property
    def root(self) -> str:
        """The URL of the bucket/container/host (registry key)."""
        if self.scheme == "file":
            return "file://"
        if self.scheme == "az" and self.azure_host:
            return f"az://{self.bucket}@{self.azure_host}"
        return f"{self.scheme}://{self.bucket}"


_AZ_HOST_RE = re.compile(r"^(?P<account>[^.]+)\.(dfs|blob)\.")


def _locate(url: str) -> _Location:
    url = normalize_url(url)
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme == "file":
        return _Location(url, "file", "", url[len("file://") :])
    netloc, _, path = url[len(scheme) + 3 :].partition("/")
    if scheme in ("http", "https"):
        return _Location(url, scheme, netloc, path)
    if scheme == "az" and "@" in netloc:
        container, _, host = netloc.partition("@")
        m = _AZ_HOST_RE.match(host)
        return _Location(url, scheme, container, path, m.group("account") if m else None, host)
    return _Location(url, scheme, netloc, path)


# --------------------------------------------------------------------------- options


def _check_options(storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    # every store/filesystem zarrport makes starts here: its S3 clients must not go asking
    # the cloud metadata endpoint for credentials unless the user asked for that
    instance_metadata_disabled()
    opts = dict(storage_options or {})
    unknown = sorted(k for k in opts if k not in _ALL_KNOWN)
    if unknown:
        raise InvalidArgumentError(
            f"unknown storage option(s) {', '.join(unknown)}. Known: S3 (s3fs names) "
            f"{', '.join(sorted(_S3_TRANSLATED))}; Azure (adlfs names) "
            f"{', '.join(sorted(_AZ_TRANSLATED))}; plus other fsspec options"
        )
    return opts


#: what to do when no S3 credentials are found (the one-line error a user sees)
NO_S3_CREDENTIALS = (
    "no S3 credentials: pass --storage-option anon=true (public data) or key=...,secret=..., "
    "or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE "
    "(AWS_EC2_METADATA_DISABLED=false lets zarrport use an instance role)"
)


def instance_metadata_disabled() -> bool:
    """Keep S3 credential lookups away from the cloud metadata endpoint (169.254.169.254).

    Sets ``AWS_EC2_METADATA_DISABLED=true`` unless the user set it (to anything): botocore /
    s3fs and Icechunk's AWS SDK read it when they resolve credentials. object_store
    (obstore 0.12, checked) does not, so zarrport resolves credentials itself when they are
    not given (:func:`_s3_credentials_from_environment`) and hands obstore explicit ones.
    Returns True when metadata lookups are off.
    """
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    return os.environ["AWS_EC2_METADATA_DISABLED"].strip().lower() == "true"


def _aws_environment() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))


@functools.lru_cache(maxsize=8)
def _credentials_for(
    environment: tuple[tuple[str, str], ...],  # the cache key: AWS_* variables as they are
) -> tuple[str, str, str | None] | None:
    import botocore.exceptions
    import botocore.session

    try:
        found = botocore.session.Session().get_credentials()
        frozen = found.get_frozen_credentials() if found is not None else None
    except botocore.exceptions.BotoCoreError as e:  # a named profile that does not exist ...
        raise StorageError(f"AWS credentials: {_first_line(e)}") from e
    if frozen is None or not frozen.access_key:
        return None
    return frozen.access_key, frozen.secret_key, frozen.token


def _s3_credentials_from_environment() -> tuple[str, str, str | None] | None:
    """(key, secret, token) from the AWS chain without instance metadata -- environment
    variables, shared credentials/config files, SSO, web identity, container -- or None
    (also when botocore, which comes with the [cloud] extra, is not installed).

    Only meaningful while :func:`instance_metadata_disabled` (botocore then skips IMDS)."""
    try:
        import botocore  # noqa: F401
    except ImportError:
        return None
    return _credentials_for(_aws_environment())


def _no_s3_credentials() -> bool:
    """Nothing in the environment an S3 client could authenticate with (IMDS aside)."""
    try:
        import botocore  # noqa: F401
    except ImportError:  # no [cloud] extra: judge by what object_store and Icechunk read
        home = os.path.expanduser("~/.aws")
        files = [os.environ.get("AWS_SHARED_CREDENTIALS_FILE", f"{home}/credentials"),
                 os.environ.get("AWS_CONFIG_FILE", f"{home}/config")]
        return not (_object_store_finds_credentials() or os.environ.get("AWS_PROFILE")
                    or any(os.path.exists(f) for f in files))
    return _s3_credentials_from_environment() is None


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off", ""}:
        return False
    raise InvalidArgumentError(f"storage option {name}={value!r} is not a boolean")


@dataclass(frozen=True)
class _S3Settings:
    key: str | None
    secret: str | None
    token: str | None
    anon: bool
    endpoint_url: str | None
    region: str | None
    requester_pays: bool
    path_style: bool

    @property
    def allow_http(self) -> bool:
        return bool(self.endpoint_url and self.endpoint_url.lower().startswith("http://"))


def _s3_settings(opts: Mapping[str, Any], bucket: str | None, *, for_fsspec: bool) -> _S3Settings:
    client_kwargs = dict(opts.get("client_kwargs") or {})
    key = opts.get("key") or opts.get("username")
    secret = opts.get("secret") or opts.get("password")
    if bool(key) != bool(secret):
        raise InvalidArgumentError("S3 storage options need both 'key' and 'secret' (or neither)")
    if opts.get("profile") and not for_fsspec:
        # no profile option in obstore or Icechunk (checked with obstore 0.12.1, icechunk 2.3.0)
        raise InvalidArgumentError(
            "storage option 'profile' is only understood by s3fs; obstore and Icechunk cannot "
            "use AWS profiles from options. Set AWS_PROFILE (or key/secret) instead."
        )
    anon = _as_bool(opts.get("anon"), "anon")
    if not (anon or key or opts.get("profile")) and instance_metadata_disabled() \
            and _no_s3_credentials():
        # without this, every client would walk its credential chain to the end and fail
        # there with a traceback (s3fs) or a message about the metadata endpoint (obstore);
        # checked before the bucket-region lookup below, so nothing is sent at all
        raise StorageError(NO_S3_CREDENTIALS)
    endpoint = opts.get("endpoint_url") or client_kwargs.get("endpoint_url")
    region = opts.get("region") or client_kwargs.get("region_name")
    if not region and endpoint:
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        region = region or DEFAULT_S3_REGION
    if not region and not endpoint and bucket and not for_fsspec:
        region = (
            os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or _s3_bucket_region(bucket)
        )
    addressing = ((opts.get("config_kwargs") or {}).get("s3") or {}).get("addressing_style")
    path_style = addressing == "path" or (bool(endpoint) and addressing != "virtual")
    return _S3Settings(
        key=key or None,
        secret=secret or None,
        token=opts.get("token") or None,
        anon=anon,
        endpoint_url=endpoint or None,
        region=region or None,
        requester_pays=_as_bool(opts.get("requester_pays"), "requester_pays"),
        path_style=path_style,
    )


@functools.lru_cache(maxsize=256)
def _s3_bucket_region(bucket: str) -> str | None:
    """The region of an AWS bucket from the ``x-amz-bucket-region`` header (no credentials
    needed; AWS answers it even with 301/403). Used only when no region is configured
    anywhere, because obstore/Icechunk do not follow S3's region redirects."""
    req = urllib.request.Request(f"https://{bucket}.s3.amazonaws.com/", method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.headers.get("x-amz-bucket-region")
    except urllib.error.HTTPError as e:
        return e.headers.get("x-amz-bucket-region")
    except (urllib.error.URLError, OSError, ValueError):
        return None


@dataclass(frozen=True)
class _AzureSettings:
    account: str | None
    account_key: str | None
    sas_token: str | None
    endpoint: str | None  # full account URL, e.g. http://127.0.0.1:10000/devstoreaccount1
    anon: bool
    client_id: str | None
    client_secret: str | None
    tenant_id: str | None

    @property
    def allow_http(self) -> bool:
        return bool(self.endpoint and self.endpoint.lower().startswith("http://"))

    def require_account(self, url: str) -> str:
        if not self.account:
            raise InvalidArgumentError(
                f"no Azure storage account for {url}: give storage option 'account_name' (or "
                "a 'connection_string'), an account-qualified URL "
                "(abfs://container@ACCOUNT.dfs.core.windows.net/...), or set "
                "AZURE_STORAGE_ACCOUNT_NAME",
                source=url,
            )
        return self.account


def _parse_connection_string(cs: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in cs.split(";"):
        if not part.strip():
            continue
        k, sep, v = part.partition("=")
        if not sep:
            raise InvalidArgumentError("malformed Azure connection_string (expected Key=Value;...)")
        out[k.strip().lower()] = v.strip()
    return out


def _azure_settings(opts: Mapping[str, Any], loc: _Location | None) -> _AzureSettings:
    if opts.get("credential") is not None:
        raise InvalidArgumentError(
            "storage option 'credential' (an Azure credential object) only works with adlfs; "
            "obstore and Icechunk need account_key, sas_token, connection_string, "
            "client_id/client_secret/tenant_id, or credentials from the environment"
        )
    account = opts.get("account_name")
    key = opts.get("account_key")
    sas = opts.get("sas_token")
    endpoint = opts.get("blob_endpoint")
    if opts.get("connection_string"):
        cs = _parse_connection_string(opts["connection_string"])
        if _as_bool(cs.get("usedevelopmentstorage", "false"), "UseDevelopmentStorage"):
            proxy = cs.get("developmentstorageproxyuri", "http://127.0.0.1:10000").rstrip("/")
            cs.setdefault("accountname", _AZURITE_ACCOUNT)
            cs.setdefault("accountkey", _AZURITE_KEY)
            cs.setdefault("blobendpoint", f"{proxy}/{cs['accountname']}")
        account = cs.get("accountname") or account
        key = cs.get("accountkey") or key
        sas = cs.get("sharedaccesssignature") or sas
        if cs.get("blobendpoint"):
            endpoint = cs["blobendpoint"]
        elif cs.get("endpointsuffix") and account:
            proto = cs.get("defaultendpointsprotocol", "https")
            endpoint = f"{proto}://{account}.blob.{cs['endpointsuffix']}"
    if loc is not None and loc.account:
        account = account or loc.account
    account = account or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME") or None
    if not endpoint and opts.get("account_host"):
        endpoint = f"https://{opts['account_host']}"
    if sas:
        sas = sas.lstrip("?")
    return _AzureSettings(
        account=account,
        account_key=key or None,
        sas_token=sas or None,
        endpoint=endpoint.rstrip("/") if endpoint else None,
        anon=_as_bool(opts.get("anon"), "anon"),
        client_id=opts.get("client_id"),
        client_secret=opts.get("client_secret"),
        tenant_id=opts.get("tenant_id"),
    )


def _gcs_token_is_file(token: Any) -> bool:
    return isinstance(token, str) and token not in ("anon", "google_default", "cloud", "cache")


# --------------------------------------------------------------------------- fsspec


def _fsspec_options(loc: _Location, opts: Mapping[str, Any]) -> dict[str, Any]:
    """Storage options as the fsspec implementation for ``loc.scheme`` wants them."""
    if loc.scheme == "file":
        return {k: v for k, v in opts.items() if k in {"auto_mkdir"}}
    if loc.scheme == "s3":
        wanted = _S3_TRANSLATED | _S3_FSSPEC_ONLY | _GENERIC_FSSPEC
        out = {k: v for k, v in opts.items() if k in wanted}
        out.pop("region", None)
        s3 = _s3_settings(opts, loc.bucket, for_fsspec=True)
        client_kwargs = dict(out.get("client_kwargs") or {})
        if s3.region:
            client_kwargs.setdefault("region_name", s3.region)
        if client_kwargs:
            out["client_kwargs"] = client_kwargs
        config_kwargs = dict(out.get("config_kwargs") or {})
        config_kwargs.setdefault("retries", {"max_attempts": BOTO_MAX_ATTEMPTS, "mode": "standard"})
        config_kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        config_kwargs.setdefault("read_timeout", REQUEST_TIMEOUT_S)
        if s3.path_style and s3.endpoint_url:
            config_kwargs.setdefault("s3", {"addressing_style": "path"})
        out["config_kwargs"] = config_kwargs
        return out
    if loc.scheme == "az":
        out = {
            k: v for k, v in opts.items() if k in _AZ_TRANSLATED | _AZ_FSSPEC_ONLY | _GENERIC_FSSPEC
        }
        out.pop("client_kwargs", None)
        endpoint = out.pop("blob_endpoint", None)
        if loc.account and not out.get("account_name"):
            out["account_name"] = loc.account
        if endpoint and not out.get("connection_string"):
            # adlfs's account_host is https-only (checked with adlfs 2026.8.0); a connection
            # string carries any endpoint.
            az = _azure_settings(opts, loc)
            parts = [f"BlobEndpoint={endpoint.rstrip('/')}"]
            if az.account:
                parts.insert(0, f"AccountName={az.account}")
            account_key = az.account_key or os.environ.get("AZURE_STORAGE_ACCOUNT_KEY")
            if account_key:
                parts.append(f"AccountKey={account_key}")
            elif az.sas_token:
                parts.append(f"SharedAccessSignature={az.sas_token}")
            out["connection_string"] = ";".join(parts) + ";"
        return out
    if loc.scheme == "gs":
        return {
            k: v for k, v in opts.items() if k in _GS_TRANSLATED | _GS_FSSPEC_ONLY | _GENERIC_FSSPEC
        }
    # http(s): aiohttp client options only
    wanted = {"client_kwargs", "headers", "skip_instance_cache"}
    return {k: v for k, v in opts.items() if k in wanted}


def _fsspec_protocol(loc: _Location) -> str:
    return {"file": "file", "s3": "s3", "gs": "gcs", "az": "az"}.get(loc.scheme, loc.scheme)


#: fsspec protocols whose implementation comes with the [cloud] extra
_CLOUD_MODULES = {"s3": "s3fs", "az": "adlfs", "abfs": "adlfs"}


def filesystem(
    url: str, storage_options: dict | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """An fsspec filesystem for ``url`` and the path to use with it.

    ``file`` -> ``/abs/path``; ``s3``/``gs`` -> ``bucket/key``; ``az`` -> ``container/path``;
    ``http(s)`` -> the full URL.
    """
    import fsspec

    loc = _locate(url)
    protocol = _fsspec_protocol(loc)
    if protocol in _CLOUD_MODULES:
        from zarrport.extras import require

        require("cloud", _CLOUD_MODULES[protocol], what=f"{loc.scheme}:// ({loc.url})")
    opts = _check_options(storage_options)
    fs_opts = _fsspec_options(loc, opts)
    try:
        fs = fsspec.filesystem(protocol, **fs_opts)
    except ImportError as e:
        raise InvalidArgumentError(
            f"cannot open {loc.url}: the fsspec implementation for {loc.scheme}:// is not "
            f"installed ({e})",
            source=loc.url,
        ) from e
    except ValueError as e:  # adlfs: "unable to connect to account ..."
        raise InvalidArgumentError(f"cannot open {loc.url}: {e}", source=loc.url) from e
    if loc.scheme == "file":
        path = loc.path
    elif loc.scheme in ("http", "https"):
        path = loc.url
    else:
        path = f"{loc.bucket}/{loc.path}" if loc.path else loc.bucket
    return fs, path


def fsspec_reference_options(
    storage_options: dict | None = None, *, remote_url: str | None = None
) -> dict:
    """``remote_protocol``/``remote_options`` for fsspec's ``ReferenceFileSystem``.

    ``remote_url`` is any target URL (or prefix) of the references; it decides the protocol.
    Without it the protocol is guessed from the options (Azure keys -> ``az``, S3 keys ->
    ``s3``); with no options at all only ``remote_options={}`` is returned and
    ``ReferenceFileSystem`` infers the protocol from the references themselves.

    Usage::

        ref_opts = fsspec_reference_options(opts, remote_url=u)
        fs = fsspec.filesystem("reference", fo=refs, **ref_opts)
        xr.open_dataset("reference://", engine="zarr",
                        backend_kwargs={"storage_options": {"fo": refs, **ref_opts}})
    """
    opts = _check_options(storage_options)
    if remote_url is not None:
        loc = _locate(remote_url)
    elif any(k in opts for k in ("account_name", "connection_string", "blob_endpoint")):
        loc = _Location("az://x", "az", "x", "")
    elif any(k in opts for k in ("key", "secret", "endpoint_url", "region", "anon", "profile")):
        loc = _Location("s3://x", "s3", "x", "")
    else:
        return {"remote_options": {}}
    return {"remote_protocol": _fsspec_protocol(loc), "remote_options": _fsspec_options(loc, opts)}


# --------------------------------------------------------------------------- obstore


def _retry_config() -> dict:
    return {
        "max_retries": RETRY_MAX_RETRIES,
        "retry_timeout": RETRY_TIMEOUT,
        "backoff": {
            "init_backoff": RETRY_INIT_BACKOFF,
            "max_backoff": RETRY_MAX_BACKOFF,
            "base": RETRY_BACKOFF_BASE,
        },
    }


def _client_options(allow_http: bool = False) -> dict:
    out: dict[str, Any] = {
        "connect_timeout": timedelta(seconds=CONNECT_TIMEOUT_S),
        "timeout": timedelta(seconds=REQUEST_TIMEOUT_S),
    }
    if allow_http:
        out["allow_http"] = True
    return out


def _object_store_finds_credentials() -> bool:
    """Whether object_store's own chain (environment variables, web identity, container
    credentials) has something before it falls back to instance metadata."""
    env = os.environ
    return bool(
        (env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"))
        or env.get("AWS_WEB_IDENTITY_TOKEN_FILE")
        or env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    )


def _obstore_store(loc: _Location, opts: Mapping[str, Any]):
    """An obstore store for the bucket/container/host of ``loc`` (no prefix)."""
    from obstore.store import AzureStore, GCSStore, HTTPStore, LocalStore, S3Store

    try:
        if loc.scheme == "file":
            return LocalStore()
        if loc.scheme == "s3":
            s3 = _s3_settings(opts, loc.bucket, for_fsspec=False)
            config: dict[str, Any] = {}
            if s3.region:
                config["region"] = s3.region
            if s3.endpoint_url:
                config["endpoint"] = s3.endpoint_url
                config["virtual_hosted_style_request"] = not s3.path_style
            if s3.anon:
                config["skip_signature"] = True
            elif s3.key:
                config["access_key_id"] = s3.key
                config["secret_access_key"] = s3.secret
                if s3.token:
                    config["session_token"] = s3.token
            elif instance_metadata_disabled() and not _object_store_finds_credentials():
                # object_store ignores AWS_EC2_METADATA_DISABLED and reads neither shared
                # credential files nor SSO (obstore 0.12.1): it would ask the metadata
                # endpoint. Hand it what the AWS chain found instead.
                found = _s3_credentials_from_environment()
                if found is not None:
                    config["access_key_id"], config["secret_access_key"] = found[:2]
                    if found[2]:
                        config["session_token"] = found[2]
            if s3.requester_pays:
                config["request_payer"] = True
            return S3Store(
                loc.bucket,
                config=config,
                client_options=_client_options(s3.allow_http),
                retry_config=_retry_config(),
            )
        if loc.scheme == "az":
            az = _azure_settings(opts, loc)
            config = {"account_name": az.require_account(loc.url)}
            if az.endpoint:
                config["endpoint"] = az.endpoint
            if az.anon:
                config["skip_signature"] = True
            elif az.account_key:
                config["account_key"] = az.account_key
            elif az.sas_token:
                config["sas_key"] = az.sas_token
            elif az.client_id:
                config["client_id"] = az.client_id
                if az.client_secret:
                    config["client_secret"] = az.client_secret
                if az.tenant_id:
                    config["tenant_id"] = az.tenant_id
            return AzureStore(
                loc.bucket,
                config=config,
                client_options=_client_options(az.allow_http),
                retry_config=_retry_config(),
            )
        if loc.scheme == "gs":
            config = {}
            token = opts.get("token")
            if _as_bool(opts.get("anon"), "anon") or token == "anon":
                config["skip_signature"] = True
            elif _gcs_token_is_file(token):
                config["service_account"] = token
            if opts.get("endpoint_url"):
                config["base_url"] = opts["endpoint_url"]
            return GCSStore(
                loc.bucket,
                config=config,
                client_options=_client_options(
                    str(opts.get("endpoint_url", "")).startswith("http://")
                ),
                retry_config=_retry_config(),
            )
        return HTTPStore.from_url(
            loc.root,
            client_options=_client_options(loc.scheme == "http"),
            retry_config=_retry_config(),
        )
    except (InvalidArgumentError, StorageError):
        raise
    except Exception as e:  # obstore config errors (unknown key, bad value ...)
        raise InvalidArgumentError(
            f"cannot configure storage for {loc.url}: {e}", source=loc.url
        ) from e


def object_store_registry(
    urls: Iterable[str], storage_options: dict | None = None
) -> ObjectStoreRegistry:
    """An obstore registry covering every bucket/container/host of ``urls``.

    One store per bucket (container, host), registered at ``scheme://bucket`` under the
    normalized URL and, if it differs, under the spelling given (``abfs://`` ...), so
    ``registry.resolve(url)`` works for both. Local files resolve through one ``LocalStore``
    registered at ``file://``.
    """
    from obspec_utils.registry import ObjectStoreRegistry

    opts = _check_options(storage_options)
    registry: ObjectStoreRegistry = ObjectStoreRegistry()
    stores: dict[str, Any] = {}
    for url in urls:
        loc = _locate(url)
        store = stores.get(loc.root)
        if store is None:
            store = stores[loc.root] = _obstore_store(loc, opts)
            registry.register(loc.root, store)
        original = os.fspath(url)
        m = _URL_RE.match(original)
        if m and m.group(1).lower() not in ("file", loc.scheme):
            registry.register(f"{m.group(1)}://{urlsplit(original).netloc}", store)
    return registry


# --------------------------------------------------------------------------- stat


@dataclass(frozen=True)
class SourceStat:
    """What zarrport records about a source to notice later that it changed.

    ``mtime`` is seconds since the epoch (float); ``etag`` is as the server sends it
    (S3 includes the double quotes) and ``None`` for local files.
    """

    url: str
    size: int
    mtime: float | None
    etag: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SourceStat:
        try:
            return cls(
                url=str(data["url"]),
                size=int(data["size"]),
                mtime=None if data.get("mtime") is None else float(data["mtime"]),
                etag=None if data.get("etag") is None else str(data["etag"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidArgumentError(f"not a SourceStat record: {dict(data)!r} ({e})") from e


def stat(url: str, storage_options: dict | None = None) -> SourceStat:
    """Size, modification time and ETag of the object at ``url``.

    Raises :class:`SourceNotFoundError` if nothing is there, :class:`NotAFileError` for a
    directory / prefix / bucket root, :class:`StorageError` for other backend failures
    (after the retries).
    """
    loc = _locate(url)
    opts = _check_options(storage_options)
    if loc.scheme == "file":
        path = loc.path
        try:
            st = os.stat(path)
        except FileNotFoundError as e:
            raise SourceNotFoundError(f"no such file: {path}", source=loc.url) from e
        except NotADirectoryError as e:
            raise SourceNotFoundError(f"no such file: {path}", source=loc.url) from e
        except PermissionError as e:
            raise StorageError(f"cannot stat {path}: permission denied", source=loc.url) from e
        import stat as stat_mod

        if stat_mod.S_ISDIR(st.st_mode):
            raise NotAFileError(f"{path} is a directory, not a file", source=loc.url)
        return SourceStat(url=loc.url, size=st.st_size, mtime=st.st_mtime, etag=None)

    import obstore

    store = _obstore_store(loc, opts)
    key = loc.path
    if key and not key.endswith("/"):
        try:
            meta = obstore.head(store, key)
        except FileNotFoundError:
            pass  # maybe a prefix: decided below
        except Exception as e:
            raise _storage_error(e, loc) from e
        else:
            lm = meta.get("last_modified")
            return SourceStat(
                url=loc.url,
                size=int(meta["size"]),
                mtime=lm.timestamp() if lm is not None else None,
                etag=meta.get("e_tag"),
            )
    if loc.scheme in ("http", "https"):
        raise SourceNotFoundError(f"not found: {loc.url}", source=loc.url)
    # No object there: is it a prefix ("directory")? One listing page of at most one key.
    prefix = key.rstrip("/")
    try:
        stream = obstore.list(store, prefix=(prefix + "/") if prefix else None, chunk_size=1)
        first = next(iter(stream), None)
    except Exception as e:
        # Missing bucket/container (obstore reports a generic 404 for list), or no list
        # permission (GetObject-only credentials are common): the object itself was
        # already reported missing, so that is the answer.
        if prefix or isinstance(e, FileNotFoundError) or _is_http_404(e):
            raise SourceNotFoundError(
                f"not found: {loc.url} ({_first_line(e)})", source=loc.url
            ) from e
        raise _storage_error(e, loc) from e
    if first or not prefix:
        raise NotAFileError(
            f"{loc.url} is a {'prefix (directory)' if prefix else 'bucket/container root'}, "
            "not a file",
            source=loc.url,
        )
    raise SourceNotFoundError(f"not found: {loc.url}", source=loc.url)


def _is_http_404(e: BaseException) -> bool:
    text = str(e)
    return "404 Not Found" in text or "NoSuchBucket" in text or "ContainerNotFound" in text


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _storage_error(e: Exception, loc: _Location) -> Exception:
    if isinstance(e, FileNotFoundError):
        return SourceNotFoundError(f"not found: {loc.url} ({_first_line(e)})", source=loc.url)
    return StorageError(
        f"storage error on {loc.url}: {type(e).__name__}: {_first_line(e)}", source=loc.url
    )


# --------------------------------------------------------------------------- Icechunk


def icechunk_storage_settings() -> icechunk.StorageSettings:
    """Icechunk repository storage settings with zarrport's explicit retry policy.

    Use as ``icechunk.RepositoryConfig(storage=icechunk_storage_settings())`` (or
    ``config.storage = ...``) when creating/opening a repository.
    """
    import icechunk

    return icechunk.StorageSettings(
        retries=icechunk.StorageRetriesSettings(
            max_tries=ICECHUNK_MAX_TRIES,
            initial_backoff_ms=ICECHUNK_INITIAL_BACKOFF_MS,
            max_backoff_ms=ICECHUNK_MAX_BACKOFF_MS,
        )
    )


def icechunk_storage(url: str, storage_options: dict | None = None) -> icechunk.Storage:
    """Icechunk ``Storage`` for a repository at a local path, ``s3://``, ``az://`` or ``gs://``."""
    import icechunk

    loc = _locate(url)
    opts = _check_options(storage_options)
    prefix = loc.path.strip("/")
    try:
        if loc.scheme == "file":
            return icechunk.local_filesystem_storage(loc.path.rstrip("/") or "/")
        if loc.scheme == "s3":
            s3 = _s3_settings(opts, loc.bucket, for_fsspec=False)
            kwargs: dict[str, Any] = {}
            if s3.anon:
                kwargs["anonymous"] = True
            elif s3.key:
                kwargs.update(
                    access_key_id=s3.key, secret_access_key=s3.secret, session_token=s3.token
                )
            else:
                kwargs["from_env"] = True
            return icechunk.s3_storage(
                bucket=loc.bucket,
                prefix=prefix or None,
                region=s3.region,
                endpoint_url=s3.endpoint_url,
                allow_http=s3.allow_http,
                force_path_style=s3.path_style,
                network_stream_timeout_seconds=ICECHUNK_STREAM_TIMEOUT_S,
                requester_pays=s3.requester_pays,
                **kwargs,
            )
        if loc.scheme == "az":
            az = _azure_settings(opts, loc)
            config, creds = _icechunk_azure(az, loc)
            return icechunk.azure_storage(
                account=az.require_account(loc.url),
                container=loc.bucket,
                prefix=prefix,
                config=config or None,
                **creds,
            )
        if loc.scheme == "gs":
            token = opts.get("token")
            kwargs = {}
            if _as_bool(opts.get("anon"), "anon") or token == "anon":
                kwargs["anonymous"] = True
            elif _gcs_token_is_file(token):
                kwargs["service_account_file"] = token
            else:
                kwargs["from_env"] = True
            config = {"base_url": opts["endpoint_url"]} if opts.get("endpoint_url") else None
            return icechunk.gcs_storage(
                bucket=loc.bucket, prefix=prefix or None, config=config, **kwargs
            )
    except (InvalidArgumentError, StorageError):
        raise
    except Exception as e:
        raise InvalidArgumentError(
            f"cannot configure Icechunk storage for {loc.url}: {_first_line(e)}", source=loc.url
        ) from e
    raise InvalidArgumentError(
        f"Icechunk repositories cannot live at {loc.scheme}:// URLs ({loc.url}); use a local "
        "path, s3://, az:// or gs://",
        source=loc.url,
    )


def _icechunk_azure(az: _AzureSettings, loc: _Location) -> tuple[dict[str, str], dict[str, Any]]:
    """(object_store config, credential kwargs for icechunk.azure_credentials/_storage)."""
    config: dict[str, str] = {}
    if az.endpoint:
        config["endpoint"] = az.endpoint
    if az.allow_http:
        config["allow_http"] = "true"
    if az.anon:
        config["skip_signature"] = "true"
        return config, {"from_env": True}
    if az.account_key:
        return config, {"access_key": az.account_key}
    if az.sas_token:
        return config, {"sas_token": az.sas_token}
    if az.client_id:
        config["client_id"] = az.client_id
        if az.client_secret:
            config["client_secret"] = az.client_secret
        if az.tenant_id:
            config["tenant_id"] = az.tenant_id
    return config, {"from_env": True}


def icechunk_virtual_container(
    url_prefix: str, storage_options: dict | None = None
) -> tuple[icechunk.VirtualChunkContainer, Any]:
    """A virtual chunk container covering ``url_prefix`` and its credentials (or ``None``).

    ``url_prefix`` is normalized and given a trailing ``/``; it must name at least the
    bucket/container (``s3://bucket/``, ``az://container/``) or a directory
    (``file:///dir/``). Use the pair as::

        container, creds = icechunk_virtual_container("s3://bucket/", opts)
        config = icechunk.RepositoryConfig.default()
        config.set_virtual_chunk_container(container)
        access = icechunk.containers_credentials({container.url_prefix: creds})
        repo = icechunk.Repository.create(storage, config, authorize_virtual_chunk_access=access)
        # ... and pass the same ``access`` to Repository.open(...)

    ``creds`` is an Icechunk credential (``S3Credentials.*``, ``AzureCredentials.*``,
    ``GcsCredentials.*``), or the explicit no-credential sentinels ``LocalFileSystemAccess``
    / ``HttpAccess`` for local and HTTP containers (icechunk 2.3 deprecates ``None`` there:
    it would read credentials from the environment). Azure containers work through
    Icechunk's object_store backend (tested against Azurite, icechunk 2.3.0); Icechunk reads
    the container from the chunk URL's host, so references must be ``az://container/path``.
    """
    import icechunk

    loc = _locate(url_prefix)
    opts = _check_options(storage_options)
    if loc.scheme != "file" and not loc.bucket:
        raise InvalidArgumentError(f"virtual chunk container prefix {url_prefix!r} has no bucket")
    try:
        if loc.scheme == "file":
            directory = loc.path.rstrip("/") or "/"
            if directory == "/":
                # icechunk 2.3.0: "Url prefix for file:// containers must include a path"
                # (related earth-mover/icechunk#1416)
                raise InvalidArgumentError(
                    "Icechunk needs a directory in file:// virtual chunk prefixes (not file:///)"
                )
            store = icechunk.local_filesystem_store(directory)
            return (icechunk.VirtualChunkContainer(f"file://{directory}/", store),
                    icechunk.credentials.LocalFileSystemAccess)
        prefix = _container_prefix(loc)
        if loc.scheme == "s3":
            s3 = _s3_settings(opts, loc.bucket, for_fsspec=False)
            store = icechunk.s3_store(
                region=s3.region,
                endpoint_url=s3.endpoint_url,
                allow_http=s3.allow_http,
                anonymous=s3.anon,
                s3_compatible=bool(s3.endpoint_url),
                force_path_style=s3.path_style,
                network_stream_timeout_seconds=ICECHUNK_STREAM_TIMEOUT_S,
                requester_pays=s3.requester_pays,
            )
            if s3.anon:
                creds = icechunk.s3_anonymous_credentials()
            elif s3.key:
                creds = icechunk.s3_static_credentials(
                    access_key_id=s3.key, secret_access_key=s3.secret, session_token=s3.token
                )
            else:
                creds = icechunk.s3_from_env_credentials()
            return icechunk.VirtualChunkContainer(prefix, store), creds
        if loc.scheme == "az":
            az = _azure_settings(opts, loc)
            config, cred_kwargs = _icechunk_azure(az, loc)
            store = icechunk.ObjectStoreConfig.Azure(
                {"account": az.require_account(loc.url), **config}
            )
            return icechunk.VirtualChunkContainer(prefix, store), icechunk.azure_credentials(
                **cred_kwargs
            )
        if loc.scheme == "gs":
            token = opts.get("token")
            config = {"base_url": opts["endpoint_url"]} if opts.get("endpoint_url") else None
            store = icechunk.ObjectStoreConfig.Gcs(config)
            if _as_bool(opts.get("anon"), "anon") or token == "anon":
                creds = icechunk.gcs_credentials(anonymous=True)
            elif _gcs_token_is_file(token):
                creds = icechunk.gcs_credentials(service_account_file=token)
            else:
                creds = icechunk.gcs_from_env_credentials()
            return icechunk.VirtualChunkContainer(prefix, store), creds
        # http(s): icechunk.http_store(), not ObjectStoreConfig.Http({}), whose constructor
        # takes a positional argument since icechunk 2.x (TypeError; checked on 2.3.0)
        return (icechunk.VirtualChunkContainer(prefix, icechunk.http_store()),
                icechunk.credentials.HttpAccess)
    except (InvalidArgumentError, StorageError):
        raise
    except Exception as e:
        raise InvalidArgumentError(
            f"cannot configure an Icechunk virtual chunk container for {url_prefix}: "
            f"{_first_line(e)}",
            source=url_prefix,
        ) from e


def _container_prefix(loc: _Location) -> str:
    """``scheme://bucket/path/`` (account-qualified Azure hosts dropped: Icechunk wants the
    container as the URL host)."""
    path = loc.path.strip("/")
    return f"{loc.scheme}://{loc.bucket}/" + (f"{path}/" if path else "")


def filesystem_options(url: str, storage_options: dict | None = None) -> dict[str, Any]:
    """The fsspec storage options for ``url`` (e.g. ``target_options`` of a reference fs)."""
    return _fsspec_options(_locate(url), _check_options(storage_options))
