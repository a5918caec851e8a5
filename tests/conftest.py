"""Shared pytest fixtures.

Storage servers (this block): ``s3_server`` (moto) and ``azurite_server`` (Azurite blob),
both session-scoped, listening on 127.0.0.1, started on first use and always stopped.
Helpers live in ``tests/servers.py``. Other fixtures go below, in their own sections.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# S3 clients (boto, s3fs, icechunk, obstore) never ask a cloud metadata endpoint for
# credentials: every test gives its own, and no traffic leaves 127.0.0.1
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

_TESTS = Path(__file__).resolve().parent
_SRC = _TESTS.parent / "src"
# Run from a checkout without `pip install -e .`: make `import zarrport` find src/.
try:  # pragma: no cover - depends on how the venv was set up
    import zarrport  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(_SRC))
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from zarrport.hdf5 import use_hdf5_plugins  # noqa: E402

# the tests read files with netCDF4 directly (the oracle): its HDF5 must find the filters
use_hdf5_plugins()

from servers import (  # noqa: E402
    AzuriteServer,
    DaskCluster,
    S3Server,
    ServerStartError,
    run_azurite,
    run_dask_cluster,
    run_s3_server,
)

# --------------------------------------------------------------------------- storage servers


def _serve(cm: contextlib.AbstractContextManager) -> Iterator:
    """Enter a server context manager; a failure to start fails the test (never skips)."""
    with contextlib.ExitStack() as stack:
        error: ServerStartError | None = None
        try:
            server = stack.enter_context(cm)
        except ServerStartError as e:
            error = e
        if error is not None:
            pytest.fail(str(error), pytrace=False)
        yield server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server: ``.endpoint_url``, ``.storage_options`` (s3fs-style key/secret/
    endpoint_url/client_kwargs.region_name), ``.create_bucket(name)``, ``.put_object(...)``,
    ``.client()`` (boto3)."""
    yield from _serve(run_s3_server(log_dir=tmp_path_factory.mktemp("moto-logs")))


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """Azurite's blob service: ``.account_name``, ``.account_key``, ``.blob_endpoint``
    (``http://127.0.0.1:PORT/devstoreaccount1``), ``.connection_string``,
    ``.storage_options`` (adlfs-style, endpoint in ``connection_string``),
    ``.endpoint_storage_options`` (endpoint as ``blob_endpoint``),
    ``.create_container(name)``, ``.put_blob(...)``, ``.service_client()``.

    Fails (does not skip) if ``node_modules/.bin/azurite-blob`` is missing: run ``make test``.
    """
    yield from _serve(run_azurite(log_dir=tmp_path_factory.mktemp("azurite-logs")))


# --------------------------------------------------------------------------- dask cluster


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A real ``dask scheduler`` and two single-threaded ``dask worker`` processes on
    127.0.0.1, from this venv (they import this zarrport). ``.address`` (``tcp://...``),
    ``.client()`` (a ``distributed.Client``; close it), ``.workers`` (the processes).
    Started on first use, always stopped (terminate, then kill, per process group)."""
    yield from _serve(run_dask_cluster(log_dir=tmp_path_factory.mktemp("dask-logs")))



def pytest_sessionfinish(session, exitstatus):
    """Close adlfs clients while fsspec's event loop still runs.

    adlfs registers ``weakref.finalize(fs, sync, loop, close_service_client, fs)``; left to
    interpreter exit, those run after fsspec's loop has stopped and print "RuntimeError: Loop
    is not running" (fsspec/adlfs #495, #253). Running them here closes the clients cleanly.
    """
    import weakref

    registry = getattr(weakref.finalize, "_registry", {})
    for finalizer, info in list(registry.items()):
        if getattr(info.func, "__module__", "") == "fsspec.asyn" and finalizer.alive:
            try:
                finalizer()
            except Exception:  # a client already closed: nothing to do
                pass
