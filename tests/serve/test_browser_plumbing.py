"""The browser-test plumbing works: headless chromium renders the VENDORED MapLibre GL with
WebGL, drawing raster tiles served from loopback, and nothing leaves 127.0.0.1.

The map shows the whole world at zoom 1 in a 512x512 canvas: exactly the four zoom-1 tiles,
each a solid color, so each canvas quadrant must be its tile's color. A map that does not draw
(no WebGL, a script that did not load, tiles not fetched or misplaced) fails.
"""

from __future__ import annotations

import re
import time

import pytest

from .browser import count_pixels, is_loopback_url, serve_static, solid_png, static_dir
from .conftest import LAUNCH_SECONDS

SIZE = 512  # the map canvas, CSS px = device px (device_scale_factor 1)
# zoom-1 tile (x, y) -> color; x grows east, y grows south
TILE_COLORS = {
    (0, 0): (220, 30, 30),
    (1, 0): (30, 160, 60),
    (0, 1): (40, 60, 220),
    (1, 1): (240, 200, 20),
}

PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8">
<link rel="stylesheet" href="/static/vendor/maplibre-gl/maplibre-gl.css">
<script src="/static/vendor/maplibre-gl/maplibre-gl.js"></script>
<style>html, body {{ margin: 0; background: #fff; }}
#map {{ width: {SIZE}px; height: {SIZE}px; }}</style>
</head><body><div id="map"></div>
<script>
window.mapErrors = [];
window.mapIdle = false;
// a map that cannot start (no WebGL: "Failed to initialize WebGL") throws: end the wait
window.addEventListener("error", (e) => window.mapErrors.push(String(e.message)));
const map = new maplibregl.Map({{
  container: "map",
  style: {{
    version: 8,
    sources: {{
      tiles: {{type: "raster", tiles: [location.origin + "/tiles/{{z}}/{{x}}/{{y}}.png"],
              tileSize: 256, minzoom: 1, maxzoom: 1}}
    }},
    layers: [{{id: "tiles", type: "raster", source: "tiles",
               paint: {{"raster-fade-duration": 0}}}}]
  }},
  center: [0, 0], zoom: 1, renderWorldCopies: false,
  attributionControl: false, fadeDuration: 0, interactive: false,
}});
map.on("error", (e) => window.mapErrors.push(String(e.error && e.error.message || e)));
map.once("idle", () => {{ window.mapIdle = true; }});
</script></body></html>
"""

TILE = re.compile(r"^/tiles/(\d+)/(\d+)/(\d+)\.png$")


def _routes(tiles: dict[tuple[int, int], bytes]):
    static = static_dir()

    def route(path: str):
        if path == "/":
            return PAGE.encode(), "text/html; charset=utf-8"
        if path.startswith("/static/"):
            file = (static / path.removeprefix("/static/")).resolve()
            if file.is_file() and file.is_relative_to(static.resolve()):
                kind = {".js": "text/javascript", ".css": "text/css"}.get(file.suffix)
                return file.read_bytes(), kind or "application/octet-stream"
            return None
        m = TILE.match(path)
        if m and int(m[1]) == 1 and (int(m[2]), int(m[3])) in tiles:
            return tiles[int(m[2]), int(m[3])], "image/png"
        return None

    return route


def test_maplibre_draws_loopback_raster_tiles(offline_page, screenshot):
    tiles = {xy: solid_png(rgb) for xy, rgb in TILE_COLORS.items()}
    page = offline_page.page
    with serve_static(_routes(tiles)) as (base, served):
        started = time.perf_counter()
        page.goto(base + "/")
        page.wait_for_function("window.mapIdle || window.mapErrors.length > 0", timeout=20_000)
        render_s = time.perf_counter() - started
        map_errors = page.evaluate("window.mapErrors")
        png = screenshot(page.locator("#map canvas"), "map")

    assert map_errors == [], map_errors
    assert offline_page.errors == [], offline_page.errors
    # the page loaded the vendored MapLibre, not some other copy
    assert "/static/vendor/maplibre-gl/maplibre-gl.js" in served
    assert sorted(p for p in served if p.startswith("/tiles/")) == sorted(
        f"/tiles/1/{x}/{y}.png" for x, y in TILE_COLORS
    )
    # nothing tried to leave loopback (the fixture fails the test too if something did)
    assert offline_page.blocked == []
    assert all(u.startswith((base, "data:", "blob:")) for u in offline_page.requested)

    half = SIZE // 2
    inset = 8  # stay off the seams between tiles
    area = (half - 2 * inset) ** 2
    for (x, y), rgb in TILE_COLORS.items():
        box = (x * half + inset, y * half + inset, (x + 1) * half - inset, (y + 1) * half - inset)
        hits = count_pixels(png, color=rgb, box=box)
        assert hits >= 0.98 * area, f"tile {(x, y)}: {hits}/{area} pixels of {rgb} in {box}"
    assert count_pixels(png) >= 0.98 * SIZE * SIZE  # no blank canvas anywhere

    print(f"browser launch {LAUNCH_SECONDS.get('browser', 0):.2f}s, render {render_s:.2f}s")


GUARD_PAGE = """<!doctype html><html><body><script>
window.done = fetch("http://tiles.example.invalid/1/0/0.png")
  .then(() => "fetched", (e) => "refused: " + e);
</script></body></html>"""


def test_requests_off_loopback_are_blocked(offline_page):
    """The guard aborts a request to a non-loopback host (before any DNS or socket: the
    .invalid name never resolves, and the resolver rule maps it to NOTFOUND as well)."""
    page = offline_page.page
    routes = {"/": (GUARD_PAGE.encode(), "text/html")}
    with serve_static(routes.get) as (base, served):
        page.goto(base + "/")
        outcome = page.evaluate("window.done")
    assert outcome.startswith("refused"), outcome
    assert offline_page.blocked == ["http://tiles.example.invalid/1/0/0.png"]
    assert served == ["/"]
    offline_page.blocked.clear()  # expected here; the fixture fails any other test that blocks


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8000/tiles/1/0/0.png", True),
        ("http://127.3.2.1/", True),
        ("http://localhost:5/", True),
        ("http://[::1]:9/x", True),
        ("data:image/png;base64,AAAA", True),
        ("blob:http://127.0.0.1:1/0d8e", True),
        ("https://demotiles.maplibre.org/style.json", False),
        ("http://10.0.0.1/", False),
        ("http://127.0.0.1.example.com/", False),
        ("file:///etc/passwd", False),
    ],
)
def test_is_loopback_url(url, loopback):
    assert is_loopback_url(url) is loopback
