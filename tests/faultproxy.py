"""A fault-injecting HTTP reverse proxy for S3 tests (in front of moto's S3 server).

``FaultProxy(upstream)`` listens on 127.0.0.1 (free port) in a background thread and
forwards every request to ``upstream`` (``http://127.0.0.1:PORT``) faithfully: method, path
and query, headers (``Host`` included, so SigV4 signatures stay as the client made them),
body; the answer's status, headers (ETag, Content-Range, Content-Length, ...) and body.
With probability ``rate`` (a seeded RNG) a request is instead answered with a fault:

``"503"``       503 SlowDown with an S3 XML error body (throttling)
``"500"``       500 InternalError with an S3 XML error body
``"drop"``      the connection is closed without an answer (request not forwarded)
``"truncate"``  the request is forwarded, the answer's headers and about half of its body are
                sent, then the connection is closed (a reset mid-body); answers without a
                body are dropped after forwarding instead (the request took effect, the
                client never hears it did)
``"delay"``     the request is forwarded after a pause of ``delay_range`` seconds (below the
                clients' timeouts), then answered normally

``log`` lists every request (method, path, Range header): with ``rate=0`` the proxy is a
faithful recorder of what a client read.

``kinds`` chooses among them (a sequence, or a mapping kind -> weight). ``counters`` records
what happened (``requests``, ``forwarded``, ``faults``, one entry per kind, per method);
tests assert on them to prove that faults really were injected. ``rate`` and ``kinds`` can be
changed while the proxy runs (e.g. ``proxy.rate = 0`` while arranging data).

With concurrent clients the order in which requests draw from the RNG is not deterministic:
the seed fixes the fault sequence, not which request gets which fault.

Use it as a context manager (``with FaultProxy(url, rate=0.1) as proxy: proxy.endpoint_url``)
or ``start()`` / ``stop()``. ``stop()`` is bounded: it closes the listening socket and every
open client connection.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KINDS = ("503", "500", "drop", "truncate", "delay")

#: Hop-by-hop headers: never forwarded (RFC 9110 7.6.1). ``Expect`` is answered by the proxy.
_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "proxy-connection", "expect",
}  # fmt: skip

_S3_ERRORS = {
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
}

#: Upstream timeouts: generous, the upstream is a local moto server.
_UPSTREAM_TIMEOUT_S = 60.0


def s3_error_body(code: str, message: str, resource: str, request_id: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{resource}</Resource><RequestId>{request_id}</RequestId></Error>"
    ).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, proxy: FaultProxy):
        self.proxy = proxy
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address):
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):  # pragma: no cover - diagnostics only
        # Clients that hang up (after a drop, at exit) are routine here: no tracebacks.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: _Server
    timeout = 120  # an idle keep-alive connection is closed after this

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    # -- plumbing

    def setup(self):
        super().setup()
        self._upstream: http.client.HTTPConnection | None = None

    def finish(self):
        with contextlib.suppress(Exception):
            super().finish()
        if self._upstream is not None:
            self._upstream.close()

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after the chunk
            return b"".join(parts)
        length = self.headers.get("Content-Length")
        if length is not None:
            return self.rfile.read(int(length))
        return None

    def _forward(self, body: bytes | None) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """Send the request upstream; (status, reason, headers, body) of the answer."""
        proxy = self.server.proxy
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP]
        if body is not None and not any(k.lower() == "content-length" for k, _ in headers):
            headers.append(("Content-Length", str(len(body))))
        for attempt in (0, 1):
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=_UPSTREAM_TIMEOUT_S
                )
            conn = self._upstream
            try:
                conn.putrequest(self.command, self.path, skip_host=True,
                                skip_accept_encoding=True)
                for k, v in headers:
                    conn.putheader(k, v)
                conn.endheaders(body)
                resp = conn.getresponse()
                data = resp.read()
                out_headers = [(k, v) for k, v in resp.getheaders()
                               if k.lower() not in _HOP_BY_HOP]
                if resp.will_close:
                    conn.close()
                    self._upstream = None
                return resp.status, resp.reason, out_headers, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A stale upstream keep-alive connection: reconnect once.
                conn.close()
                self._upstream = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _send(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes,
              *, truncate: bool = False) -> None:
        self.send_response_only(status, reason)
        has_length = False
        for k, v in headers:
            if k.lower() == "content-length":
                has_length = True
            self.send_header(k, v)
        no_body = self.command == "HEAD" or status in (204, 304) or 100 <= status < 200
        if not has_length and not no_body:
            self.send_header("Content-Length", str(len(body)))
        if truncate:
            self.send_header("Connection", "close")
        self.end_headers()
        if no_body:
            return
        if truncate:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self._abort()
            return
        self.wfile.write(body)

    def _abort(self) -> None:
        """Close the client connection now, without a clean HTTP ending."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            # RST rather than FIN where possible: a hard reset, as a dying server gives.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       b"\x01\x00\x00\x00\x00\x00\x00\x00")
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # -- the proxy

    def _handle(self) -> None:
        proxy = self.server.proxy
        with proxy._lock:
            proxy.log.append((self.command, self.path, self.headers.get("Range")))
        fault = proxy._draw(self.command, self.path)
        if fault == "drop":
            proxy._count(self.command, fault)
            self._abort()
            return
        body = self._read_body()
        if fault in _S3_ERRORS:
            status, code, message = _S3_ERRORS[fault]
            proxy._count(self.command, fault)
            resource = urllib.parse.urlsplit(self.path).path
            payload = s3_error_body(code, message, resource, f"faultproxy-{proxy._next_id()}")
            hdrs = [("Content-Type", "application/xml"),
                    ("x-amz-request-id", f"faultproxy-{proxy._next_id()}")]
            if self.command == "HEAD":
                hdrs.append(("Content-Length", str(len(payload))))
            self._send(status, code, hdrs, payload)
            return
        if fault == "delay":
            proxy._count(self.command, fault)
            time.sleep(proxy._delay())
        try:
            status, reason, headers, data = self._forward(body)
        except (OSError, http.client.HTTPException):
            proxy._count(self.command, "upstream_error")
            self._send(502, "Bad Gateway", [("Content-Type", "text/plain")], b"upstream error")
            return
        proxy._count(self.command, None)
        if fault == "truncate":
            proxy._count(self.command, fault)
            if data and self.command != "HEAD":
                self._send(status, reason, headers, data, truncate=True)
            else:
                self._abort()  # forwarded (took effect), never answered
            return
        self._send(status, reason, headers, data)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_OPTIONS = do_PATCH = _handle


class FaultProxy:
    """See the module docstring."""

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.1,
        kinds: Sequence[str] | Mapping[str, float] = KINDS,
        seed: int = 0,
        delay_range: tuple[float, float] = (0.2, 1.0),
        methods: Sequence[str] | None = None,
        should_fault: Callable[[str, str], bool] | None = None,
    ):
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, not {upstream!r}")
        self.upstream_host: str = parts.hostname
        self.upstream_port: int = parts.port
        self.rate = rate
        self.kinds = kinds
        self.delay_range = delay_range
        #: Only requests with these methods get faults (None: all).
        self.methods = None if methods is None else {m.upper() for m in methods}
        #: Optional ``(method, path) -> bool``: False exempts a request from faults.
        self.should_fault = should_fault
        self.counters: Counter[str] = Counter()
        #: every request as (method, path with query, Range header or None)
        self.log: list[tuple[str, str, str | None]] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._ids = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- configuration / state

    @property
    def kinds(self) -> dict[str, float]:
        return dict(self._kinds)

    @kinds.setter
    def kinds(self, value: Sequence[str] | Mapping[str, float]) -> None:
        weights = dict(value) if isinstance(value, Mapping) else {k: 1.0 for k in value}
        unknown = set(weights) - set(KINDS)
        if unknown or not weights:
            raise ValueError(f"fault kinds must be a non-empty subset of {KINDS}: {value!r}")
        self._kinds = weights

    @property
    def faults(self) -> int:
        """How many requests got a fault so far."""
        return self.counters["faults"]

    def fault_counts(self) -> dict[str, int]:
        """Faults injected so far, per kind (kinds never drawn are absent)."""
        return {k: self.counters[k] for k in KINDS if self.counters[k]}

    def reset_counters(self) -> None:
        with self._lock:
            self.counters.clear()
            self.log.clear()

    @property
    def port(self) -> int:
        assert self._server is not None, "proxy not started"
        return self._server.server_address[1]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _draw(self, method: str, path: str) -> str | None:
        with self._lock:
            self.counters["requests"] += 1
            self.counters[method] += 1
            if self.methods is not None and method not in self.methods:
                return None
            if self.should_fault is not None and not self.should_fault(method, path):
                return None
            if self.rate <= 0 or self._rng.random() >= self.rate:
                return None
            kinds, weights = zip(*self._kinds.items(), strict=True)
            return self._rng.choices(kinds, weights)[0]

    def _delay(self) -> float:
        with self._lock:
            return self._rng.uniform(*self.delay_range)

    def _count(self, method: str, fault: str | None) -> None:
        with self._lock:
            if fault is None:
                self.counters["forwarded"] += 1
            elif fault == "upstream_error":
                self.counters[fault] += 1
            else:
                self.counters["faults"] += 1
                self.counters[fault] += 1
                self.counters[f"{method} {fault}"] += 1

    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    # -- lifecycle

    def start(self) -> FaultProxy:
        if self._server is not None:
            return self
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
            name=f"faultproxy:{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        done = threading.Event()

        def _shutdown() -> None:
            server.shutdown()
            done.set()

        threading.Thread(target=_shutdown, daemon=True).start()
        done.wait(timeout)
        with server.connections_lock:
            conns = list(server.connections)
        for conn in conns:  # keep-alive clients: end their connections (threads then exit)
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.endpoint_url if self._server is not None else "stopped"
        return (f"FaultProxy({where} -> http://{self.upstream_host}:{self.upstream_port}, "
                f"rate={self.rate}, faults={self.fault_counts()})")
