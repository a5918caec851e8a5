"""Every real GRIB file: opens through GribParser (Icechunk and ManifestStore) with every
value equal to ecCodes' decoding, or is refused with a typed error naming the reason.

The files are checked once per session, each in its own process (a segfault or a hang is
a failure of that file, not of the run), as many at a time as there are CPUs; each test
then asserts one file's outcome. See :mod:`zarrport.testing.grib_conformance` for the oracle.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from zarrport import errors
from zarrport.testing.grib_conformance import (
    GribOutcome,
    Oracle,
    check_isolated,
    compare,
    grib_files,
    run,
)

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
FILES = grib_files(REAL) if REAL.exists() else []

#: files zarrport must refuse, and the reason it must give; every other file must open
#: identical to ecCodes
REFUSED = {
    "cfgrib_era5-levels-corrupted.grib": ("CorruptSourceError", r"message 1 \(byte 0\).*7777"),
    "eccodes_gridspec_icon.grib": ("UnsupportedVariableError", "unstructured_grid"),
    "eccodes_gridspec_orca.grib": ("UnsupportedVariableError", "unstructured_grid"),
    "eccodes_ifs_sh_ml_grib2.tmpl": ("UnsupportedVariableError", "unsupported grid: sh"),
    # its alternative row scanning is read; three probability thresholds of one field
    # share every coordinate zarrport maps
    "gribberish_nbm-asnow-prob-thresholds.grib2": (
        "IncompatibleSourcesError", r"messages 1 \(byte 0\) and 2 .*scaledValueOfUpperLimit"),
    "herbie_subset_20201214_hrrr.t00z.wrfsfcf12.grib2": (
        "IncompatibleSourcesError", r"messages 1 \(byte 0\) and 2 .*startStep"),
    "kerchunk_hrrr.t11z.wrfsfcf12.grib2": ("CorruptSourceError",
                                           r"message 5 \(byte 1971449\): truncated"),
}
#: files with a real wgrib2 .idx beside them: the index manifest is checked too
WITH_IDX = {"g2c_gdaswave.t00z.wcoast.0p16.f000.grib2",
            "gribberish_gfswave.t18z.atlocn.0p16.f001.grib2"}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, GribOutcome]:
    results = run(FILES, workdir=tmp_path_factory.mktemp("grib-conformance"))
    return {o.file: o for o in results}


@pytest.mark.skipif(not FILES, reason="shared/data/real is not beside the checkout")
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_real_grib_file(path, outcomes):
    o = outcomes[path.name]
    assert o.acceptable, f"{o.file}: {o.outcome} (idx: {o.idx}): {o.reason}"
    if path.name in REFUSED:
        kind, why = REFUSED[path.name]
        assert o.outcome == "refused", f"{o.file} should be refused ({why}), got {o.outcome}"
        error, _, text = o.reason.partition(": ")
        assert error == kind and issubclass(getattr(errors, error), errors.ZarrportError)
        assert re.search(why, text), o.reason
        assert "\n" not in o.reason
    else:
        assert o.outcome == "identical", f"{o.file}: {o.outcome}: {o.reason}"
        assert (o.icechunk, o.manifest) == ("identical", "identical")
        assert o.messages > 0 and o.variables
    assert o.idx == ("identical" if path.name in WITH_IDX else "-"), o.reason


@pytest.mark.skipif(not FILES, reason="shared/data/real is not beside the checkout")
def test_every_file_is_checked():
    names = {p.name for p in FILES}
    assert not any(n.endswith(".idx") for n in names)
    assert set(REFUSED) <= names and WITH_IDX <= names


# --------------------------------------------------------------------------- isolation


def _segfault(path, workdir, conn):
    import ctypes

    ctypes.string_at(0)  # dereferences NULL: SIGSEGV


def _hang(path, workdir, conn):
    import time

    time.sleep(60)


def _raise(path, workdir, conn):
    raise SystemExit(3)


@pytest.mark.parametrize(("target", "outcome", "why"), [
    (_segfault, "CRASH", "SIGSEGV"), (_hang, "HANG", "no result within 2 s"),
    (_raise, "CRASH", "exit status 3")])
def test_a_crash_or_hang_is_reported_not_fatal(tmp_path, target, outcome, why):
    """A check that kills its process or never returns is reported for that file."""
    o = check_isolated(tmp_path / "x.grib", tmp_path, timeout=2, target=target)
    assert (o.file, o.outcome) == ("x.grib", outcome) and why in o.reason
    assert not o.acceptable


# --------------------------------------------------------------------------- the oracle


def _opened(name: str):
    import xarray as xr

    from zarrport import storage
    from zarrport.grib.scan import GribParser

    path = REAL / "grib" / name
    url = storage.normalize_url(str(path))
    store = GribParser()(url, storage.object_store_registry([url]))
    ds = xr.open_dataset(store, engine="zarr", consolidated=False, zarr_format=3,
                         chunks=None).load()
    return ds, Oracle(path)


@pytest.mark.skipif(not FILES, reason="shared/data/real is not beside the checkout")
def test_the_oracle_catches_what_would_be_wrong():
    """compare() is what makes "identical" mean something: each kind of damage to a
    correct dataset is reported."""
    import numpy as np

    ds, oracle = _opened("cfgrib_multi_param_on_multi_dims.grib")
    assert compare(ds, oracle) == []

    def problems(damage):
        bad = ds.copy(deep=True)
        bad = damage(bad) or bad
        return " | ".join(compare(bad, oracle))

    def one_value(d):
        d["t"].values[1, 2, 10, 20] += 0.5

    def missing_chunk(d):
        d["z"].values[0, 0] = np.nan

    def swapped(d):
        d["u"].values[[0, 1]] = d["u"].values[[1, 0]]

    assert "1 of 2664 values differ" in problems(one_value)
    assert "values differ" in problems(missing_chunk)
    assert "values differ" in problems(swapped)
    assert "latitude not increasing" in problems(lambda d: d.isel(latitude=slice(None, None, -1)))
    assert "on the grid of 0" in problems(lambda d: d.assign_coords(longitude=d.longitude + 1))
    hour = np.timedelta64(1, "h")
    assert "has no step" in problems(lambda d: d.assign_coords(step=d.step + hour))
    assert "expected 1" in problems(lambda d: d.drop_vars("z"))
    assert "dtype float64" in problems(lambda d: d.assign(t=d.t.astype("float64")))

    ds, oracle = _opened("cfgrib_t_on_different_level_types.grib")
    assert compare(ds, oracle) == []
    ds["t_hybrid"].attrs["GRIB_level"] = 99.0
    assert "GRIB_level=99.0" in " ".join(compare(ds, oracle))
