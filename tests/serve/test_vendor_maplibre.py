"""The vendored MapLibre GL (committed under zarrport/service/static/vendor/maplibre-gl, so a
clone or wheel without npm serves the viewer offline) is the npm package package.json pins."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from .browser import static_dir

ROOT = Path(__file__).resolve().parents[2]
VENDOR = static_dir() / "vendor" / "maplibre-gl"
# vendored name -> path inside node_modules/maplibre-gl (what the Makefile's npm step copies)
FILES = {
    "maplibre-gl.js": "dist/maplibre-gl.js",
    "maplibre-gl.css": "dist/maplibre-gl.css",
    "LICENSE.txt": "LICENSE.txt",
}


def _pinned() -> str:
    pin = json.loads((ROOT / "package.json").read_text())["devDependencies"]["maplibre-gl"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pin), f"pin an exact version, not {pin!r}"
    return pin


def test_vendored_maplibre_is_the_pinned_release():
    pin = _pinned()
    assert sorted(p.name for p in VENDOR.iterdir()) == sorted(FILES)
    head = (VENDOR / "maplibre-gl.js").read_text(encoding="utf-8")[:400]
    # the bundle's banner names its release: "...maplibre-gl-js/blob/v5.24.1/LICENSE.txt"
    assert f"/blob/v{pin}/LICENSE.txt" in head, head
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/maplibre-gl"]["version"] == pin


def test_vendored_maplibre_equals_node_modules():
    installed = ROOT / "node_modules" / "maplibre-gl"
    if not installed.is_dir():
        pytest.skip("node_modules/maplibre-gl absent (npm not run): `make install` installs it")
    version = json.loads((installed / "package.json").read_text())["version"]
    assert version == _pinned(), "node_modules is stale: run `make install`"
    for name, source in FILES.items():
        assert (VENDOR / name).read_bytes() == (installed / source).read_bytes(), (
            f"{name} differs from node_modules/maplibre-gl/{source}: run `make install` "
            "and commit the copy"
        )


def test_static_files_are_package_data():
    """pyproject's package-data ships every static file (the wheel's viewer works)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["zarrport"]
    package = ROOT / "src" / "zarrport"
    shipped = {p for g in globs for p in package.glob(g) if p.is_file()}
    static = {p for p in (package / "service" / "static").rglob("*") if p.is_file()}
    assert static and static <= shipped, sorted(str(p) for p in static - shipped)
