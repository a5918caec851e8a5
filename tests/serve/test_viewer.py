"""The web viewer at ``/`` of ``zarrport serve``, in a real headless browser against a real
server (uvicorn on 127.0.0.1) over a small CMIP6-like archive ingested with ``run_batch``
(two yearly daily files per variable, 36x72, a STAC catalog).

What the page shows is checked against independent oracles: the collections in the catalog
files, netCDF4 reading the source files (times, the series at the clicked grid cell, the
missing values), and pixels of the rendered map canvas.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from .browser import count_pixels

CMIP6 = "{variable}_{freq}_{model}_{scenario}_{member}_{grid}_{years}.nc"
YEARS = range(2015, 2017)
GRID = {"nlat": 36, "nlon": 72, "time_chunk": 1}
BACKGROUND = (232, 236, 239)  # #e8ecef, the map's background layer


@dataclass
class Archive:
    root: Path
    stac: Path
    files: dict[str, list[Path]]  # variable -> its yearly files, in time order
    collections: dict[str, str]  # variable -> collection id
    repos: dict[str, Path]  # variable -> its Icechunk repository


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    from zarrport.pipeline import run_batch
    from zarrport.testing.samples import write_cmip6_archive

    root = tmp_path_factory.mktemp("viewer")
    files = {v: write_cmip6_archive(root / "archive", years=YEARS, variable=v, **GRID)
             for v in ("tas", "pr")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_batch(str(root / "archive" / "*.nc"), str(root / "refs"),
                           collection_by=CMIP6, stac=str(root / "stac"), workers=1)
    assert result.ok
    collections = {c.split("_", 1)[0]: c for c in result.collections}
    repos = {v: root / "refs" / result.collections[c]["icechunk"]
             for v, c in collections.items()}
    return Archive(root, root / "stac", files, collections, repos)


class _Server:
    """``zarrport serve``'s app under uvicorn in a thread, on a free 127.0.0.1 port."""

    def __init__(self, **config: object) -> None:
        import uvicorn

        from zarrport.service.server import ServerConfig, create_server

        app = create_server(ServerConfig(**config))  # type: ignore[arg-type]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="zarrport-serve", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("zarrport serve did not start", pytrace=False)
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture(scope="module")
def server(archive: Archive) -> Iterator[str]:
    with _Server(allow=[str(archive.root)], catalog=str(archive.stac)) as url:
        yield url


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


# --------------------------------------------------------------------------- oracles


def nc_times(paths: list[Path]) -> list[str]:
    import netCDF4

    out: list[str] = []
    for p in paths:
        with netCDF4.Dataset(p) as nc:
            t = nc["time"]
            out += [str(d) for d in netCDF4.num2date(t[:], t.units, t.calendar)]
    return out


def nc_series(paths: list[Path], variable: str, lon: float, lat: float) -> np.ndarray:
    """The values of the grid cell nearest (lon, lat), NaN where missing, over all files."""
    import netCDF4

    parts = []
    for p in paths:
        with netCDF4.Dataset(p) as nc:
            lats = nc["lat"][:]
            lons = nc["lon"][:]
            i = int(np.argmin(np.abs(lats - lat)))
            j = int(np.argmin(np.abs((lons - lon + 180.0) % 360.0 - 180.0)))
            parts.append(np.ma.filled(nc[variable][:, i, j].astype("f8"), np.nan))
    return np.concatenate(parts)


# --------------------------------------------------------------------------- page helpers


def open_viewer(guarded, base: str, query: str = "") -> object:
    page = guarded.page
    page.goto(f"{base}/{query}")
    wait_settled(page)
    return page


def wait_settled(page, timeout: float = 30_000) -> None:
    page.wait_for_function(
        "window.zarrportViewer && (zarrportViewer.errors.length > 0 || "
        "(zarrportViewer.ready && zarrportViewer.settled()))", timeout=timeout)
    errors = page.evaluate("zarrportViewer.errors")
    assert errors == [], errors


def rerendered(page, action, wanted: str) -> None:
    """Do ``action`` and wait until a tile whose URL contains ``wanted`` has loaded and
    the map has no tile left to draw."""
    with page.expect_response(lambda r: "/xarray/tiles/" in r.url and wanted in r.url,
                              timeout=20_000) as info:
        action()
    assert info.value.status == 200, info.value.text()
    wait_settled(page)


def tile_queries(requested: list[str]) -> list[dict[str, list[str]]]:
    return [parse_qs(urlsplit(u).query) for u in requested if "/xarray/tiles/" in u]


def changed_fraction(a: bytes, b: bytes) -> float:
    import io

    from PIL import Image

    x, y = (np.asarray(Image.open(io.BytesIO(p)).convert("RGB"), dtype=np.int16)
            for p in (a, b))
    assert x.shape == y.shape
    return float((np.abs(x - y).max(axis=-1) > 8).mean())


def canvas_area(page) -> int:
    box = page.locator("#map canvas").bounding_box()
    return int(round(box["width"])) * int(round(box["height"]))


# --------------------------------------------------------------------------- tests


def test_page_loads_fills_controls_and_renders_tiles(offline_page, screenshot, server, archive):
    page = open_viewer(offline_page, server)

    # the collections of the catalog files (not the STAC API's answer)
    on_disk = sorted(json.loads(p.read_text())["id"]
                     for p in archive.stac.glob("*/collection.json"))
    options = page.locator("#collection option").evaluate_all("os => os.map(o => o.value)")
    assert options == on_disk == sorted(archive.collections.values())
    first = options[0]
    variable = first.split("_", 1)[0]
    assert page.locator("#variable option").evaluate_all("os => os.map(o => o.value)") == [
        variable]

    times = nc_times(archive.files[variable])
    slider = page.locator("#time")
    assert slider.get_attribute("max") == str(len(times) - 1)
    assert page.evaluate("zarrportViewer.state.times") == times
    assert page.locator("#time-label").text_content() in times[0]
    assert page.locator("label[for=time]").is_visible()
    for control in ("collection", "variable", "time", "colormap", "vmin", "vmax"):
        assert page.locator(f"label[for={control}]").count() == 1, control

    png = screenshot(page.locator("#map canvas"), "map")
    area = canvas_area(page)
    drawn = count_pixels(png, blank=BACKGROUND, tolerance=3)
    # the whole world is in view: the data covers nearly all the canvas
    assert drawn >= 0.9 * area, f"{drawn} of {area} pixels drawn"
    queries = tile_queries(offline_page.requested)
    assert queries and all(q["collection"] == [first] and q["variable"] == [variable]
                           for q in queries)
    assert {q["sel"][0] for q in queries} == {f"time={times[0]}"}
    assert offline_page.errors == []


def test_time_slider_changes_tiles_and_pixels(offline_page, screenshot, server, archive):
    tas = archive.collections["tas"]
    page = open_viewer(offline_page, server, f"?collection={tas}")
    times = nc_times(archive.files["tas"])
    before = screenshot(page.locator("#map canvas"), "t0")

    def step() -> None:
        page.focus("#time")
        for _ in range(3):
            page.keyboard.press("ArrowRight")

    rerendered(page, step, f"sel=time%3D{times[3][:10]}")
    after = screenshot(page.locator("#map canvas"), "t3")
    assert page.locator("#time").input_value() == "3"
    assert times[3].startswith(page.locator("#time-label").text_content())
    assert page.locator("#time").get_attribute("aria-valuetext") in times[3]
    sels = [q["sel"][0] for q in tile_queries(offline_page.requested)]
    assert f"time={times[3]}" in sels and f"time={times[0]}" in sels
    # a different day of noisy data: most cells change colour
    assert changed_fraction(before, after) > 0.3

    # fill() on the slider (mouse drags set the value the same way) to the last day
    rerendered(page, lambda: page.fill("#time", str(len(times) - 1)),
               f"sel=time%3D{times[-1][:10]}")
    assert times[-1].startswith(page.locator("#time-label").text_content())
    assert offline_page.errors == []


def test_click_plots_the_series_of_the_point(offline_page, screenshot, server, archive):
    tas = archive.collections["tas"]
    page = open_viewer(offline_page, server, f"?collection={tas}")
    box = page.locator("#map canvas").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.62, box["y"] + box["height"] * 0.4)
    page.wait_for_function("zarrportViewer.series !== null || zarrportViewer.errors.length",
                           timeout=20_000)
    series = page.evaluate("zarrportViewer.series")
    lon, lat = series["lon"], series["lat"]
    assert 0 < lon < 180 and 0 < lat < 85  # right of and above the centre
    assert page.locator(".maplibregl-marker").count() == 1

    # the page's series is the point endpoint's answer ...
    api = get_json(f"{server}/xarray/point/{lon:.5f},{lat:.5f}?collection={tas}&variable=tas")
    path = page.locator("#series")
    plotted = json.loads(path.get_attribute("data-values"))
    assert plotted == series["values"] == api["values"]
    assert series["times"] == api["band_descriptions"]

    # ... and netCDF4's, at the nearest grid cell of the source files
    times = nc_times(archive.files["tas"])
    expected = nc_series(archive.files["tas"], "tas", lon, lat)
    assert series["times"] == times
    got = np.array([np.nan if v is None else v for v in plotted], dtype="f8")
    np.testing.assert_allclose(got, expected, rtol=1e-6, equal_nan=True)

    # the drawn line: one vertex per present value, y a decreasing affine map of the value
    d = path.get_attribute("d")
    vertices = np.array([[float(x), float(y)] for x, y in
                         re.findall(r"[ML](-?[\d.]+),(-?[\d.]+)", d)])
    present = ~np.isnan(expected)
    assert int(path.get_attribute("data-points")) == len(vertices) == int(present.sum())
    assert len(vertices) + int((~present).sum()) == len(times)
    runs = int(present[0]) + int(np.sum(present[1:] & ~present[:-1]))  # a gap lifts the pen
    assert d.count("M") == runs
    slope, intercept = np.polyfit(expected[present], vertices[:, 1], 1)
    assert slope < 0
    assert np.abs(slope * expected[present] + intercept - vertices[:, 1]).max() < 0.02
    assert np.all(np.diff(vertices[:, 0]) > 0)
    title = page.locator("#plot .title").text_content()
    assert f"{abs(lat):.2f}°N" in title and f"{abs(lon):.2f}°E" in title and "(K)" in title

    screenshot(page, "viewer")  # docs/images/viewer.png is a copy of one of these
    assert offline_page.errors == []


def test_colormap_changes_pixels_and_the_legend(offline_page, screenshot, server, archive):
    tas = archive.collections["tas"]
    page = open_viewer(offline_page, server, f"?collection={tas}")
    before = screenshot(page.locator("#map canvas"), "viridis")
    assert "viridis" in page.locator("#legend-bar").get_attribute("src")
    rerendered(page, lambda: page.select_option("#colormap", "magma"),
               "colormap_name=magma")
    after = screenshot(page.locator("#map canvas"), "magma")
    assert changed_fraction(before, after) > 0.5

    legend = page.locator("#legend-bar")
    assert "magma" in legend.get_attribute("src")
    page.wait_for_function("document.getElementById('legend-bar').complete")
    assert legend.evaluate("img => img.naturalWidth") == 256
    bar = screenshot(legend, "legend")
    assert count_pixels(bar, blank=(255, 255, 255)) > 0.9 * 256 * 12
    lo, hi = page.input_value("#vmin"), page.input_value("#vmax")
    assert page.locator("#legend-min").text_content() == str(float(lo)).removesuffix(".0")
    assert page.locator("#legend-max").text_content() == str(float(hi)).removesuffix(".0")
    assert page.locator("#legend-units").text_content() == "K"

    # the default range is the 2nd..98th percentile of the day shown (netCDF4's values)
    day = nc_series_day(archive.files["tas"][0], "tas", 0)
    p2, p98 = np.nanpercentile(day, [2, 98])
    assert float(lo) == pytest.approx(p2, rel=2e-3) and float(hi) == pytest.approx(p98, rel=2e-3)

    # a narrower range: the tiles ask for it and the picture changes again
    page.fill("#vmin", "280")
    rerendered(page, lambda: page.fill("#vmax", "290") or page.press("#vmax", "Enter"),
               "rescale=280%2C290")
    narrow = screenshot(page.locator("#map canvas"), "range")
    assert changed_fraction(after, narrow) > 0.3
    assert page.locator("#legend-max").text_content() == "290"
    assert offline_page.errors == []


def nc_series_day(path: Path, variable: str, index: int) -> np.ndarray:
    import netCDF4

    with netCDF4.Dataset(path) as nc:
        return np.ma.filled(nc[variable][index].astype("f8"), np.nan)


def test_api_errors_show_in_the_status_line(offline_page, server, archive):
    page = offline_page.page
    page.goto(f"{server}/?collection=nope")
    status = page.locator("#status.error")
    status.wait_for(timeout=20_000)
    assert "no collection 'nope'" in status.text_content()

    tas = archive.collections["tas"]
    page.goto(f"{server}/?collection={tas}&variable=tas")
    wait_settled(page)
    # a bad range is refused in the page ...
    page.fill("#vmin", "300")
    page.fill("#vmax", "200")
    page.press("#vmax", "Enter")
    assert "min must be a number below max" in page.locator("#status.error").text_content()
    # ... an error from the API (a variable the dataset lacks) reaches the status line
    page.evaluate("""() => {
        const o = document.createElement('option'); o.value = o.textContent = 'nosuch';
        const s = document.getElementById('variable'); s.append(o); s.value = 'nosuch';
        s.dispatchEvent(new Event('change'));
    }""")
    page.wait_for_function("document.getElementById('status').classList.contains('error') && "
                           "document.getElementById('status').textContent.includes('nosuch')")
    assert page.locator("#status").text_content().startswith("not_served: ")


def test_url_mode_without_a_catalog(offline_page, screenshot, archive):
    repo = archive.repos["tas"]
    with _Server(allow=[str(archive.root)]) as base:
        assert _status(f"{base}/stac/") == 404
        listed = get_json(f"{base}/xarray/variables?url={repo}")["variables"]
        assert [v["name"] for v in listed] == ["tas"] and listed[0]["unit"] == "K"
        assert _status(f"{base}/xarray/variables?url=/etc") == 403

        page = offline_page.page
        page.goto(f"{base}/")
        page.locator("#url").wait_for(state="visible", timeout=20_000)
        assert page.locator("#collection-field").is_hidden()
        assert "no STAC catalog" in page.locator("#status").text_content()
        page.fill("#url", str(repo))
        page.press("#url", "Enter")
        wait_settled(page)
        assert page.locator("#variable option").evaluate_all(
            "os => os.map(o => o.value)") == ["tas"]
        png = screenshot(page.locator("#map canvas"), "url")
        assert count_pixels(png, blank=BACKGROUND, tolerance=3) >= 0.9 * canvas_area(page)
        queries = tile_queries(offline_page.requested)
        assert queries and all(q["url"] == [str(repo)] for q in queries)

        # the same from the page's query string; a url outside --allow is an error shown
        page.goto(f"{base}/?url={repo}&variable=tas")
        wait_settled(page)
        assert page.input_value("#url") == str(repo)
        page.goto(f"{base}/?url=/etc/passwd")
        page.locator("#status.error").wait_for(timeout=20_000)
        assert page.locator("#status").text_content().startswith("forbidden: ")


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
