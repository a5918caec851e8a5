"""Real storage servers for the test suite: moto's S3 server and Azurite (blob).

Both listen on 127.0.0.1 only, on a free port, and are started as child processes in their
own process group so that stopping them (terminate, then kill) never leaves anything behind.
Every wait is bounded. The pytest fixtures that use these helpers live in ``conftest.py``
(``s3_server``, ``azurite_server``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

#: How long a server may take to answer after it was started.
STARTUP_TIMEOUT_S = 30.0
#: How long a server may take to exit after SIGTERM before it is killed.
SHUTDOWN_TIMEOUT_S = 10.0

S3_REGION = "us-east-1"
S3_KEY = "testing"
S3_SECRET = "testing"

#: Azurite's well-known development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"


class ServerStartError(RuntimeError):
    """A test server could not be started (missing binary, crashed, never answered)."""


# --------------------------------------------------------------------------- processes


#: Processes started by this module and not yet stopped (stopped at interpreter exit too).
_LIVE: set[ManagedProcess] = set()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: have the kernel SIGTERM the server if the test process dies without teardown."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_proxy_for_localhost() -> None:
    """Make sure no HTTP(S)_PROXY from the environment captures requests to 127.0.0.1."""
    for var in ("NO_PROXY", "no_proxy"):
        current = [p for p in os.environ.get(var, "").split(",") if p]
        for host in ("127.0.0.1", "localhost"):
            if host not in current:
                current.append(host)
        os.environ[var] = ",".join(current)


def _http_answers(url: str) -> bool:
    """True if something speaks HTTP at ``url`` (any status code counts)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True  # a 4xx/5xx answer still proves the server is up
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "<no log>"
    return "\n".join(lines[-n:])


@dataclass(eq=False)
class ManagedProcess:
    """A child process in its own process group, with its output in a log file."""

    name: str
    argv: list[str]
    log_path: Path
    cwd: Path | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log = log
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
                start_new_session=True,  # own process group: stop() reaches any children
                preexec_fn=_die_with_parent,
            )
        except OSError as e:
            log.close()
            raise ServerStartError(f"cannot start {self.name} ({self.argv[0]}): {e}") from e
        _LIVE.add(self)

    def wait_until_ready(self, probe_url: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with status {self.proc.returncode} before answering "
                    f"at {probe_url}. Log ({self.log_path}):\n{_tail(self.log_path)}"
                )
            if _http_answers(probe_url):
                return
            time.sleep(0.1)
        raise ServerStartError(
            f"{self.name} did not answer at {probe_url} within {timeout:.0f} s. "
            f"Log ({self.log_path}):\n{_tail(self.log_path)}"
        )

    def stop(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Terminate the process group, then kill it if it does not exit in time."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self._signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=timeout)
        if proc is not None:
            # Children that outlived the leader (same group) must not survive either.
            self._signal_group(proc, signal.SIGKILL)
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()
        _LIVE.discard(self)

    @staticmethod
    def _signal_group(proc: subprocess.Popen, sig: int) -> None:
        # The group id is the child's pid (start_new_session=True): this only reaches
        # processes this helper started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


@atexit.register
def _stop_all() -> None:
    for mp in list(_LIVE):
        mp.stop(timeout=5)


def _start_with_retries(
    name: str, make_argv, probe_path: str, log_dir: Path, attempts: int = 3
) -> tuple[ManagedProcess, int]:
    """Start a server on a free port; retry on another port if it dies (port race)."""
    last: Exception | None = None
    for attempt in range(attempts):
        port = free_port()
        mp = ManagedProcess(name, make_argv(port), log_dir / f"{name}-{attempt}.log", cwd=REPO_ROOT)
        mp.start()
        try:
            mp.wait_until_ready(f"http://127.0.0.1:{port}{probe_path}")
            return mp, port
        except ServerStartError as e:
            died = mp.proc is not None and mp.proc.poll() is not None
            mp.stop()
            last = e
            if not died:
                break  # it was running but never answered: another port will not help
    raise ServerStartError(f"could not start {name}: {last}")


# --------------------------------------------------------------------------- S3 (moto)


@dataclass
class S3Server:
    """A running moto S3 server."""

    endpoint_url: str
    process: ManagedProcess = field(repr=False)
    region: str = S3_REGION
    key: str = S3_KEY
    secret: str = S3_SECRET

    @property
    def storage_options(self) -> dict:
        """fsspec/s3fs-style options (zarrport's user-facing convention)."""
        return {
            "key": self.key,
            "secret": self.secret,
            "endpoint_url": self.endpoint_url,
            "client_kwargs": {"region_name": self.region},
        }

    def client(self):
        """A boto3 S3 client for arranging test data."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (if missing); returns ``s3://name/``."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        return f"s3://{name}/"

    def put_object(self, bucket: str, key: str, data: bytes) -> str:
        """Write ``data`` to ``s3://bucket/key``; returns the URL."""
        self.client().put_object(Bucket=bucket, Key=key, Body=data)
        return f"s3://{bucket}/{key}"


def moto_argv(port: int) -> list[str]:
    exe = VENV_BIN / "moto_server"
    if not exe.exists():
        raise ServerStartError(
            f"{exe} not found: install the test extras (pip install -e '.[test]') "
            "or run `make test`"
        )
    return [str(exe), "-H", "127.0.0.1", "-p", str(port)]


@contextlib.contextmanager
def run_s3_server(log_dir: Path | None = None) -> Iterator[S3Server]:
    """Start moto's S3 server on 127.0.0.1, yield it, always stop it."""
    _no_proxy_for_localhost()
    with tempfile.TemporaryDirectory(prefix="zarrport-moto-") as tmp:
        logs = Path(log_dir or tmp)
        mp, port = _start_with_retries("moto_server", moto_argv, "/", logs)
        try:
            yield S3Server(endpoint_url=f"http://127.0.0.1:{port}", process=mp)
        finally:
            mp.stop()


# --------------------------------------------------------------------------- Azurite


@dataclass
class AzuriteServer:
    """A running Azurite blob service."""

    blob_endpoint: str  # http://127.0.0.1:PORT/devstoreaccount1
    process: ManagedProcess = field(repr=False)
    account_name: str = AZURITE_ACCOUNT
    account_key: str = AZURITE_KEY

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={self.account_name};AccountKey={self.account_key};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    @property
    def storage_options(self) -> dict:
        """adlfs-style options (zarrport's user-facing convention).

        ``connection_string`` carries the emulator's endpoint in the one form adlfs itself
        understands (``account_host`` is https-only there), so these options also work when
        handed to ``fsspec.filesystem("az", ...)`` directly.
        """
        return {
            "account_name": self.account_name,
            "account_key": self.account_key,
            "connection_string": self.connection_string,
        }

    @property
    def endpoint_storage_options(self) -> dict:
        """The same account, with the endpoint as zarrport's ``blob_endpoint`` option."""
        return {
            "account_name": self.account_name,
            "account_key": self.account_key,
            "blob_endpoint": self.blob_endpoint,
        }

    def service_client(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def create_container(self, name: str) -> str:
        """Create container ``name`` (if missing); returns ``az://name/``."""
        from azure.core.exceptions import ResourceExistsError

        try:
            self.service_client().create_container(name)
        except ResourceExistsError:
            pass
        return f"az://{name}/"

    def put_blob(self, container: str, path: str, data: bytes) -> str:
        """Write ``data`` to ``az://container/path``; returns the URL."""
        client = self.service_client().get_blob_client(container, path)
        client.upload_blob(data, overwrite=True)
        return f"az://{container}/{path}"


def azurite_missing_message(path: Path) -> str:
    return (
        f"Azurite is not installed ({path} is missing). Run `make test`, which installs it "
        "(or `npm install --no-audit --no-fund` in the repository root)."
    )


def azurite_argv(location: Path):
    if not AZURITE_BIN.exists():
        raise ServerStartError(azurite_missing_message(AZURITE_BIN))

    def argv(port: int) -> list[str]:
        return [
            str(AZURITE_BIN),
            "--blobHost", "127.0.0.1",
            "--blobPort", str(port),
            "--location", str(location),
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
        ]  # fmt: skip

    return argv


@contextlib.contextmanager
def run_azurite(log_dir: Path | None = None) -> Iterator[AzuriteServer]:
    """Start Azurite's blob service on 127.0.0.1, yield it, always stop it."""
    _no_proxy_for_localhost()
    with tempfile.TemporaryDirectory(prefix="zarrport-azurite-") as tmp:
        location = Path(tmp) / "data"
        location.mkdir()
        logs = Path(log_dir or tmp)
        mp, port = _start_with_retries(
            "azurite-blob", azurite_argv(location), f"/{AZURITE_ACCOUNT}?comp=list", logs
        )
        try:
            yield AzuriteServer(
                blob_endpoint=f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}", process=mp
            )
        finally:
            mp.stop()


# --------------------------------------------------------------------------- Dask cluster


#: How long the scheduler and the workers may take to come up (imports dominate).
DASK_STARTUP_TIMEOUT_S = 90.0


@dataclass
class DaskCluster:
    """A running ``dask scheduler`` and its ``dask worker`` processes (all local)."""

    address: str  # tcp://127.0.0.1:PORT
    scheduler: ManagedProcess = field(repr=False)
    workers: list[ManagedProcess] = field(repr=False)
    scheduler_file: Path = field(repr=False)

    def client(self, timeout: float = 30.0):
        """A ``distributed.Client`` connected to the scheduler (close it when done)."""
        from distributed import Client

        return Client(self.address, timeout=timeout, set_as_default=False)


def _dask_exe() -> Path:
    exe = VENV_BIN / "dask"
    if not exe.exists():
        raise ServerStartError(f"{exe} not found: install dask[distributed] into the venv")
    return exe


def _wait_for_scheduler_file(mp: ManagedProcess, path: Path, deadline: float) -> str:
    import json

    assert mp.proc is not None
    while time.monotonic() < deadline:
        if mp.proc.poll() is not None:
            raise ServerStartError(
                f"dask scheduler exited with status {mp.proc.returncode}. "
                f"Log ({mp.log_path}):\n{_tail(mp.log_path)}"
            )
        try:
            address = json.loads(path.read_text())["address"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.1)
            continue
        return address
    raise ServerStartError(
        f"dask scheduler wrote no {path} within the timeout. Log ({mp.log_path}):\n"
        f"{_tail(mp.log_path)}"
    )


@contextlib.contextmanager
def run_dask_cluster(
    log_dir: Path | None = None, n_workers: int = 2, timeout: float = DASK_STARTUP_TIMEOUT_S
) -> Iterator[DaskCluster]:
    """Start ``dask scheduler`` + ``n_workers`` ``dask worker`` processes on 127.0.0.1
    (each in its own process group, one single-threaded worker process each), wait until all
    workers are registered, yield the cluster, always stop everything (terminate, then kill).

    The processes run from this venv, so they import this zarrport (checked here).
    """
    exe = _dask_exe()
    with tempfile.TemporaryDirectory(prefix="zarrport-dask-") as tmp:
        tmp_path = Path(tmp)
        logs = Path(log_dir or tmp)
        sched_file = tmp_path / "scheduler.json"
        procs: list[ManagedProcess] = []
        try:
            sched = ManagedProcess(
                "dask-scheduler",
                [str(exe), "scheduler", "--host", "127.0.0.1", "--port", "0",
                 "--scheduler-file", str(sched_file), "--no-dashboard"],
                logs / "dask-scheduler.log",
                cwd=tmp_path,
            )
            sched.start()
            procs.append(sched)
            deadline = time.monotonic() + timeout
            address = _wait_for_scheduler_file(sched, sched_file, deadline)
            workers = []
            for i in range(n_workers):
                local = tmp_path / f"worker-{i}"
                local.mkdir()
                w = ManagedProcess(
                    f"dask-worker-{i}",
                    [str(exe), "worker", address, "--nworkers", "1", "--nthreads", "1",
                     "--host", "127.0.0.1", "--no-dashboard", "--local-directory", str(local),
                     "--name", f"zarrport-test-worker-{i}"],
                    logs / f"dask-worker-{i}.log",
                    cwd=tmp_path,
                )
                w.start()
                procs.append(w)
                workers.append(w)
            cluster = DaskCluster(address, sched, workers, sched_file)
            _wait_for_workers(cluster, n_workers, deadline)
            yield cluster
        finally:
            for mp in reversed(procs):  # workers first: they would try to reconnect
                mp.stop()


def _wait_for_workers(cluster: DaskCluster, n: int, deadline: float) -> None:
    for mp in [cluster.scheduler, *cluster.workers]:
        assert mp.proc is not None
        if mp.proc.poll() is not None:
            raise ServerStartError(
                f"{mp.name} exited with status {mp.proc.returncode}. "
                f"Log ({mp.log_path}):\n{_tail(mp.log_path)}"
            )
    remaining = max(1.0, deadline - time.monotonic())
    try:
        client = cluster.client(timeout=remaining)
    except OSError as e:
        raise ServerStartError(
            f"cannot connect to the dask scheduler at {cluster.address}: {e}. Log:\n"
            f"{_tail(cluster.scheduler.log_path)}"
        ) from e
    try:
        try:
            client.wait_for_workers(n, timeout=max(1.0, deadline - time.monotonic()))
        except TimeoutError as e:
            logs = "\n".join(f"--- {mp.name}:\n{_tail(mp.log_path, 15)}" for mp in cluster.workers)
            raise ServerStartError(
                f"{n} dask workers did not register with {cluster.address} in time.\n{logs}"
            ) from e
        # A lambda is pickled by value: the workers need not import this module.
        files = client.run(lambda: __import__("zarrport").__file__)
        bad = {w: f for w, f in files.items() if not f.startswith(str(REPO_ROOT))}
        if bad:
            raise ServerStartError(f"dask workers import another zarrport: {bad}")
    finally:
        client.close()
