"""Fixtures for tests in a real headless browser (Debian's chromium driven by Playwright).

``browser`` (session): the launched Chromium, WebGL on SwiftShader (``browser.CHROMIUM_ARGS``).
``offline_page``: a fresh context and page that can reach loopback only (``OfflinePage``).
``screenshot``: saves a PNG under ``tests/serve/screenshots/`` (git-ignored) and returns it.
Helpers (pixel counts, a static server, test tiles) live in ``browser.py``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator

import pytest

from .browser import CHROMIUM_ARGS, SCREENSHOTS, OfflinePage, find_chromium, open_offline_page

# seconds Playwright's driver + the browser took to start (the plumbing test prints it)
LAUNCH_SECONDS: dict[str, float] = {}


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Debian chromium. Missing chromium FAILS the test (``make test`` runs these).

    Per module, not per session: Playwright's sync API keeps an asyncio loop running in the
    main thread while it is started, and every later ``asyncio.run()`` in the session
    (kerchunk's MultiZarrToZarr, an httpx ASGI test) would fail with "cannot be called from
    a running event loop"."""
    executable = find_chromium()
    if executable is None:
        pytest.fail(
            "chromium not found (looked for `chromium` on PATH and /usr/bin/chromium): "
            "`make install` installs Debian's chromium package",
            pytrace=False,
        )
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    started = time.perf_counter()
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(
                executable_path=executable,
                headless=True,
                args=CHROMIUM_ARGS,
                # Chromium's sandbox cannot start as root; Playwright then adds --no-sandbox
                chromium_sandbox=os.geteuid() != 0,
            )
        except PlaywrightError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
            pytest.fail(f"chromium ({executable}) did not start: {first}", pytrace=False)
        LAUNCH_SECONDS["browser"] = time.perf_counter() - started
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def offline_page(browser) -> Iterator[OfflinePage]:
    """A page (800x600, device scale 1) in its own context; requests that would leave
    loopback are aborted and listed in ``.blocked``, and a test that left any fails."""
    context = browser.new_context(device_scale_factor=1, service_workers="block")
    try:
        guarded = open_offline_page(context)
        yield guarded
    finally:
        context.close()
    if guarded.blocked:
        pytest.fail(f"the page tried to leave loopback: {guarded.blocked[:5]}", pytrace=False)


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Callable[..., bytes]:
    """``screenshot(target, name="page") -> bytes``: a PNG of a Page or Locator, also saved as
    ``tests/serve/screenshots/<test>-<name>.png`` to look at after the run."""

    def take(target, name: str = "page") -> bytes:
        SCREENSHOTS.mkdir(exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{request.node.name}-{name}")
        path = SCREENSHOTS / f"{stem}.png"
        return target.screenshot(path=str(path))

    return take


# --------------------------------------------------------------------------- tile server data


@pytest.fixture(scope="session")
def stores(tmp_path_factory: pytest.TempPathFactory):
    """One store of every kind the tile server opens (``data.build_stores``), shared: tests
    must not change them (use ``data.build_stores`` into ``tmp_path`` for that)."""
    from .data import build_stores

    return build_stores(tmp_path_factory.mktemp("stores"))
