"""Helpers for the tests that drive a real headless browser (fixtures in ``conftest.py``).

The browser is Debian's ``chromium`` (``make install`` installs it), driven by Playwright;
Playwright never downloads a browser here. WebGL (MapLibre GL) renders through SwiftShader,
Chromium's CPU implementation, so no GPU or display is needed.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import ipaddress
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"

# WebGL in a headless container without a GPU: ANGLE on SwiftShader. Playwright passes
# --enable-unsafe-swiftshader too (since Chromium stopped falling back to it silently,
# https://issues.chromium.org/issues/40277080); it is named here so the set does not depend on
# Playwright's defaults. The resolver rule makes every host but localhost and 127.0.0.1
# unresolvable (IP literals included): nothing reaches past loopback even if a request
# escaped the route guard (the test servers listen on 127.0.0.1).
CHROMIUM_ARGS = [
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
]


def find_chromium() -> str | None:
    """The system Chromium (Debian's ``chromium`` package), or None."""
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def static_dir() -> Path:
    """``zarrport/service/static`` of the zarrport being tested (a checkout's or a wheel's)."""
    return Path(str(resources.files("zarrport") / "service" / "static"))


# --------------------------------------------------------------------------- network guard


def is_loopback_url(url: str) -> bool:
    """True for URLs that stay on this machine: http(s)/ws(s) to 127.0.0.0/8, ::1 or
    localhost, and the browser-internal data:, blob: and about: URLs."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    if parts.scheme not in ("http", "https", "ws", "wss"):
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class OfflinePage:
    """A Playwright page whose context aborts every request that leaves loopback.

    ``blocked``: the URLs aborted (a test asserts it is empty); ``requested``: every URL
    let through; ``errors``: uncaught page errors and console errors, as text.
    """

    page: object  # playwright.sync_api.Page
    blocked: list[str] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def open_offline_page(context, viewport: tuple[int, int] = (800, 600)) -> OfflinePage:
    """A new page in ``context`` (a BrowserContext) with the loopback-only route guard.

    The guard is a context route, so requests from the page's workers go through it too.
    """
    guarded = OfflinePage(page=None)

    def guard(route) -> None:
        url = route.request.url
        if is_loopback_url(url):
            guarded.requested.append(url)
            route.continue_()
        else:
            guarded.blocked.append(url)
            route.abort("blockedbyclient")

    context.route("**/*", guard)
    page = context.new_page()
    page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    page.on("pageerror", lambda exc: guarded.errors.append(f"pageerror: {exc}"))

    def console(msg) -> None:
        if msg.type == "error":
            guarded.errors.append(f"console.error: {msg.text}")

    page.on("console", console)
    guarded.page = page
    return guarded


# --------------------------------------------------------------------------- pixels


def count_pixels(
    png: bytes | Path,
    *,
    color: tuple[int, int, int] | None = None,
    blank: tuple[int, int, int] = (255, 255, 255),
    tolerance: int = 8,
    box: tuple[int, int, int, int] | None = None,
) -> int:
    """Pixels of a PNG (screenshot) in ``box`` = (left, top, right, bottom), right/bottom
    exclusive, whose RGB is within ``tolerance`` (per channel) of ``color``; without
    ``color``, the pixels that are NOT within ``tolerance`` of ``blank`` (non-blank pixels).
    """
    import numpy as np
    from PIL import Image

    data = png.read_bytes() if isinstance(png, Path) else png
    with Image.open(io.BytesIO(data)) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
    if box is not None:
        left, top, right, bottom = box
        rgb = rgb[top:bottom, left:right]
    near = lambda c: (np.abs(rgb - np.asarray(c, dtype=np.int16)) <= tolerance).all(axis=-1)  # noqa: E731
    mask = near(color) if color is not None else ~near(blank)
    return int(mask.sum())


def solid_png(rgb: tuple[int, int, int], size: int = 256) -> bytes:
    """A ``size`` x ``size`` opaque PNG of one color (a test raster tile)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- static server


@contextlib.contextmanager
def serve_static(
    routes: Callable[[str], tuple[bytes, str] | None],
) -> Iterator[tuple[str, list[str]]]:
    """A threaded HTTP server on 127.0.0.1 (a free port) for a test page and its files.

    ``routes(path)`` returns ``(body, content_type)`` or None (404). Yields the base URL
    (``http://127.0.0.1:PORT``) and the list of paths requested so far (in order).
    """
    requested: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            path = self.path.split("?", 1)[0]
            requested.append(path)
            found = routes(path)
            if found is None:
                self.send_error(404)
                return
            body, content_type = found
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args) -> None:  # noqa: A002 - quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="static-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
