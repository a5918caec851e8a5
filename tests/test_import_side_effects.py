"""Installing zarrport changes nothing for other xarray users (issue: import side effects).

xarray imports every backend entry point when it guesses an engine, so ``zarrport.backend``
must be light, and importing zarrport must set no environment variable and no warning
filter. Each check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import xarray as xr


def _run(code: str, env: dict | None = None) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != "HDF5_PLUGIN_PATH"}
    environ.update(env or {})
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=environ, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_guessing_an_engine_imports_only_the_light_backend(tmp_path):
    path = tmp_path / "plain.nc"
    xr.Dataset({"a": ("x", np.arange(3.0))}).to_netcdf(path, engine="scipy")
    code = f"""
import json, os, sys, warnings
if os.environ.get("BLOCK_ZARRPORT"):
    sys.modules["zarrport"] = None  # as if zarrport were not installed
import xarray as xr
ds = xr.open_dataset({str(path)!r})  # xarray asks every installed backend
print(json.dumps({{
    "engine_loaded": "zarrport.backend" in sys.modules,
    "heavy": sorted(m for m in ("zarrport.references", "zarrport.open", "zarrport.virtual",
                                "zarrport.storage", "icechunk", "zarrport.grib")
                    if m in sys.modules),
    "hdf5_plugin_path": os.environ.get("HDF5_PLUGIN_PATH"),
    "filters": [repr(f) for f in warnings.filters],
}}))
"""
    with_zarrport = _run(code)
    without = _run(code, {"BLOCK_ZARRPORT": "1"})
    assert with_zarrport["engine_loaded"]  # the entry point is real and was asked
    assert with_zarrport["heavy"] == []
    # the same environment and warning filters as without zarrport installed
    assert with_zarrport["hdf5_plugin_path"] == without["hdf5_plugin_path"]
    assert with_zarrport["filters"] == without["filters"]


def test_import_zarrport_has_no_side_effects():
    result = _run("""
import json, os, sys, warnings
filters = list(warnings.filters)
import zarrport
print(json.dumps({"hdf5_plugin_path": os.environ.get("HDF5_PLUGIN_PATH"),
                  "filters_changed": list(warnings.filters) != filters,
                  "open_loaded": "zarrport.open" in sys.modules}))
""")
    assert result == {"hdf5_plugin_path": None, "filters_changed": False,
                      "open_loaded": False}


def test_public_api_is_there_on_first_use():
    result = _run("""
import json, zarrport
print(json.dumps({"open": callable(zarrport.open_dataset),
                  "virtualize": callable(zarrport.virtualize),
                  "error": zarrport.ZarrportError.__name__}))
""")
    assert result == {"open": True, "virtualize": True, "error": "ZarrportError"}


def test_opening_a_netcdf_file_through_zarrport_sets_the_plugin_path(tmp_path):
    path = tmp_path / "plain.nc"
    xr.Dataset({"a": ("x", np.arange(3.0))}).to_netcdf(path, engine="netcdf4")
    result = _run(f"""
import json, os, zarrport
zarrport.open_dataset({str(path)!r}).load()
print(json.dumps({{"hdf5_plugin_path": os.environ.get("HDF5_PLUGIN_PATH")}}))
""")
    import hdf5plugin

    assert result["hdf5_plugin_path"].split(os.pathsep)[0] == hdf5plugin.PLUGIN_PATH
