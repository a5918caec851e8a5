"""schemathesis over ``zarrport serve``'s ``/openapi.json``: no request the schema allows (or
nearly allows) makes the server answer 5xx.

Every operation is fuzzed in-process through schemathesis' ASGI transport, over a server
with a tiny NetCDF dataset, a tiny STAC catalog and the reference API (writing into
``tmp_path``). Part of the examples pin the dataset parameters to valid ones (``url`` or
``collection``, ``variable``, one ``sel``) so that generation reaches the tiler, not only
the parameter validation; part are schemathesis' negative (schema-violating) cases. Every
5xx is collected (with the request that caused it) and reported at once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from zarrport.service.server import ServerConfig, create_server
from zarrport.service.settings import ServiceSettings

from .secdata import TIMES, VARIABLE, NetworkGuard, write_catalog, write_tiny_nc

TOKEN = "fuzz-token"
#: ZARRPORT_FUZZ_SCALE=10 runs ten times the examples, with a random seed (exploring);
#: the default run is bounded and repeatable (derandomized)
SCALE = float(os.environ.get("ZARRPORT_FUZZ_SCALE", "1"))
#: examples per operation and mode (random / pinned to the dataset / negative)
EXAMPLES = {k: max(1, int(v * SCALE)) for k, v in
            {"random": 12, "url": 20, "collection": 8, "negative": 8}.items()}
BUDGET_SECONDS = 80 * SCALE


@pytest.fixture
def fuzz_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict[str, Any]]:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    root = tmp_path / "root"
    tiny = write_tiny_nc(root / "tiny.nc")
    catalog = write_catalog(tmp_path / "stac", {"tiny": str(tiny)})
    settings = ServiceSettings(output=str(tmp_path / "refs-out"),
                               allowed_prefixes=(str(root),), api_token=TOKEN)
    app = create_server(ServerConfig(allow=[str(root)], catalog=str(catalog),
                                     references=settings))
    return app, {"root": root, "tiny": tiny, "tmp": tmp_path}


def _pins(op: Any, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The fixed query parameters of each mode, for the parameters ``op`` has."""
    names = {p.name for p in op.iter_parameters() if p.location == "query"}
    if "variable" not in names:
        return {}
    sel = [f"time={TIMES[0]}"]
    pins = {"url": {"url": str(data["tiny"]), "variable": VARIABLE, "sel": sel},
            "collection": {"collection": "tiny", "variable": VARIABLE, "sel": sel}}
    return pins


def test_no_server_error_over_the_openapi_schema(fuzz_app, monkeypatch):
    import psutil
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode

    app, data = fuzz_app
    guard = NetworkGuard(opening_allowed=True).install(monkeypatch)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    errors: dict[tuple[str, int, str], str] = {}
    calls = {"n": 0, "by_status": {}}
    started = time.perf_counter()
    process = psutil.Process()
    rss_before = process.memory_info().rss

    def run(op: Any, mode: str, strategy: Any, examples: int) -> None:
        @given(case=strategy)
        @settings(max_examples=examples, deadline=None, database=None, derandomize=SCALE == 1,
                  suppress_health_check=list(HealthCheck),
                  phases=[Phase.explicit, Phase.generate])
        def one(case: Any) -> None:
            headers = {}
            if op.path == "/api/references" and mode != "random":
                headers["Authorization"] = f"Bearer {TOKEN}"
            try:
                response = case.call(headers=headers)
            except Exception as err:  # noqa: BLE001 - the test client re-raises a 500's cause
                calls["n"] += 1
                key = (op.label, 500, type(err).__name__ + str(err)[:80])
                errors.setdefault(key, f"{case.method} {case.formatted_path} "
                                       f"query={case.query!r} body={case.body!r:.200} -> "
                                       f"{type(err).__name__}: {str(err)[:200]}")
                return
            calls["n"] += 1
            status = response.status_code
            by = calls["by_status"]
            by[status] = by.get(status, 0) + 1
            # MemoryError is answered 400 too_large, but reaching it means a bound is missing
            text = response.content[:300].decode("utf-8", "replace")
            if status >= 500 or "more memory than the server has" in text:
                key = (op.label, status, text[:120])
                if key not in errors:
                    errors[key] = (f"{case.method} {case.formatted_path} "
                                   f"query={case.query!r} body={case.body!r:.200} -> {text}")
            else:  # every refusal is JSON with the one error shape
                if status >= 400 and status != 405:
                    body = response.json()
                    assert set(body) == {"error"}, (op.label, body)

        try:
            one()
        except Unsatisfiable:  # no negative case exists for an operation without inputs
            assert mode == "negative", (op.label, mode)

    for op in operations:
        if time.perf_counter() - started > BUDGET_SECONDS:
            pytest.fail(f"fuzzing took longer than {BUDGET_SECONDS} s (at {op.label})")
        pins = _pins(op, data)
        run(op, "random", op.as_strategy(), EXAMPLES["random"])
        for mode, query in pins.items():
            run(op, mode, op.as_strategy(query=query), EXAMPLES[mode])
        run(op, "negative", op.as_strategy(generation_mode=GenerationMode.NEGATIVE),
            EXAMPLES["negative"])

    elapsed = time.perf_counter() - started
    print(f"\nschemathesis: {calls['n']} requests over {len(operations)} operations in "
          f"{elapsed:.1f} s; statuses {dict(sorted(calls['by_status'].items()))}")
    assert not errors, "server errors:\n" + "\n".join(errors.values())
    grown = (process.memory_info().rss - rss_before) / 2**20
    assert grown < 500, f"the server's memory grew by {grown:.0f} MiB while fuzzing"
    # the pinned modes went deep: some 200s beyond the STAC and TMS documents
    assert calls["by_status"].get(200, 0) > 50, calls["by_status"]
    guard.assert_clean()
    # the reference API wrote only into tmp_path
    written = [p for p in (data["tmp"] / "refs-out").rglob("*") if p.is_file()]
    assert all(str(p).startswith(str(data["tmp"])) for p in written)


# ------------------------------------------------- what the fuzzer (and real files) found

POINT = {"type": "Feature", "properties": {},
         "geometry": {"type": "Point", "coordinates": [0.0, 0.0]}}
FAR = {"type": "Feature", "properties": {},
       "geometry": {"type": "MultiLineString",
                    "coordinates": [[[6378137.0, 5.49e16], [0.0, 0.0]]]}}
HUGE = {"type": "Feature", "properties": {},
        "geometry": {"type": "LineString",
                     "coordinates": [[0.0, 0.0], [5.6e16, 1.7976931348623155e308]]}}
#: (method, path, extra query, JSON body, status, code): each was a 5xx (or an OOM kill)
FOUND = {
    "missing_netcdf_group": ("get", "/xarray/info", {"group": "nope"}, None, 404,
                             "not_served"),
    "deep_zoom_overflow": ("get", "/xarray/tiles/WebMercatorQuad/598575/6635/325", {}, None,
                           404, "outside_bounds"),
    "zoom_past_the_scheme": ("get", "/xarray/tiles/WebMercatorQuad/25/0/0.png", {}, None, 404,
                             "outside_bounds"),
    "variable_scale_zoom": ("get", "/xarray/tiles/CanadianNAD83_LCC/1313/2194565/28411.png",
                            {}, None, 404, "outside_bounds"),
    "utm_zoom_100": ("get", "/xarray/tiles/UTM31WGS84Quad/100/127/1210.tif", {}, None, 404,
                     "outside_bounds"),
    "preview_path_size": ("get", "/xarray/preview/5000x5000.png", {}, None, 400, "too_large"),
    "preview_path_huge": ("get", "/xarray/preview/100000x100000.png", {}, None, 400,
                          "too_large"),
    "histogram_bins": ("post", "/xarray/statistics", {"histogram_bins": 10**9}, POINT, 400,
                       "too_large"),
    "statistics_of_a_point": ("post", "/xarray/statistics", {}, POINT, 400,
                              "invalid_argument"),
    "statistics_far_outside": ("post", "/xarray/statistics", {}, FAR, 400,
                               "invalid_argument"),
    "statistics_huge_numbers": ("post", "/xarray/statistics", {}, HUGE, 400,
                                "invalid_argument"),
    "negative_bidx": ("get", "/xarray/preview.png", {"bidx": [-2, 1]}, None, 400,
                      "invalid_argument"),
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_found_by_fuzzing_is_a_4xx(fuzz_app, name):
    from fastapi.testclient import TestClient

    app, data = fuzz_app
    method, path, extra, body, status, code = FOUND[name]
    client = TestClient(app, raise_server_exceptions=False)
    params = {"url": str(data["tiny"]), "variable": VARIABLE, "sel": f"time={TIMES[0]}",
              **extra}
    if method == "post":
        r = client.post(path, params=params, json=body)
    else:
        r = client.get(path, params=params)
    assert r.status_code == status, r.text[:500]
    assert r.json()["error"]["code"] == code, r.json()


def test_projected_grid_without_coordinates_is_a_400(tmp_path):
    """GRIB on a Lambert or Mercator grid opens with ``y``/``x`` dimensions and 2-D
    latitude/longitude only (as ``grib/cfgrib_ds.waveh.5.grib`` does): not mappable, 400."""
    import numpy as np
    import xarray as xr
    from fastapi.testclient import TestClient

    path = tmp_path / "proj.nc"
    lat2d, lon2d = np.meshgrid(np.linspace(20, 50, 4), np.linspace(-120, -70, 5),
                               indexing="ij")
    xr.Dataset({"t": (("y", "x"), np.ones((4, 5), "f4"))},
               coords={"latitude": (("y", "x"), lat2d),
                       "longitude": (("y", "x"), lon2d)}).to_netcdf(path)
    client = TestClient(create_server(ServerConfig(allow=[str(tmp_path)])),
                        raise_server_exceptions=False)
    r = client.get("/xarray/info", params={"url": str(path), "variable": "t"})
    assert r.status_code == 400, r.text
    assert "no coordinates" in r.json()["error"]["message"]
