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
    cfgrib_outcome,
    cfgrib_problems,
    check_isolated,
    compare,
    grib_files,
    run,
    summary,
    tally,
)

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
FILES = grib_files(REAL) if REAL.exists() else []
try:  # the comparison with cfgrib needs it (the [bench] extra; `make install` has it)
    import cfgrib  # noqa: F401

    HAVE_CFGRIB = True
except ImportError:
    HAVE_CFGRIB = False
needs_cfgrib = pytest.mark.skipif(not HAVE_CFGRIB, reason="cfgrib is not installed")

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


#: what cfgrib (0.9.15.1) is known to get wrong, and the reason the check must give: each
#: one a difference checked by hand against ecCodes
CFGRIB_KNOWN = {
    "iris_jpeg2000_file.grib2": ("refused", "ValueError: unable to decode time units"),
    # three probability thresholds, one field
    "gribberish_nbm-asnow-prob-thresholds.grib2": ("MISMATCH", "one field for both"),
    # two accumulation windows of tp, one field
    "herbie_subset_20201214_hrrr.t00z.wrfsfcf12.grib2": ("MISMATCH", "one field for both"),
    # ring and nested HEALPix orderings of one field
    "eccodes_gridspec_healpix.grib": ("MISMATCH", "one field for both"),
    "pygrib_dspr.temp.bin": ("MISMATCH", "alternative row scanning"),
    "gribberish_MRMS_MergedReflectivityQCComposite_00.50_20220704-110040.grib2": (
        "MISMATCH", "time is 2022-07-04T11:00:00, ecCodes says 2022-07-04T11:00:40"),
    "eccodes_gridspec_icon.grib": ("MISMATCH", "no latitude/longitude coordinates"),
    "kerchunk_hrrr.t11z.wrfsfcf12.grib2": ("MISMATCH", "a damaged message is skipped"),
    "cfgrib_era5-levels-corrupted.grib": ("MISMATCH", "a damaged message is skipped"),
    "cfgrib_ds.waveh.5.grib": ("MISMATCH", "alternative row scanning"),
    # two msl fields of one size on grids with different poles: one kept
    "eccodes_gridspec_reduced_rotated_gg.grib": (
        "MISMATCH", "message 2 (msl surface 0 step 0 min): not found: msl[0]: latitude/"),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, GribOutcome]:
    """One run for every test here: zarrport's check and cfgrib's, each file in its own
    process."""
    results = run(FILES, workdir=tmp_path_factory.mktemp("grib-conformance"),
                  cfgrib=HAVE_CFGRIB)
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
@needs_cfgrib
def test_zarrport_is_exact_on_at_least_as_many_files_as_cfgrib(outcomes):
    """The rule in docs/conformance.md: no MISMATCH/CRASH/HANG for zarrport, and at least
    as many files read exactly as cfgrib reads exactly (judged by the same oracle)."""
    t = tally(list(outcomes.values()))
    assert sum(t["cfgrib"].values()) == len(FILES), t  # cfgrib was judged on every file
    assert set(t["zarrport"]) <= {"identical", "refused"}, t
    assert t["zarrport"].get("identical", 0) >= t["cfgrib"].get("identical", 0), t
    md = "\n".join(summary(list(outcomes.values())))
    assert f"| zarrport | {t['zarrport'].get('identical', 0)} |" in md


@pytest.mark.skipif(not FILES, reason="shared/data/real is not beside the checkout")
@needs_cfgrib
@pytest.mark.parametrize("name", sorted(CFGRIB_KNOWN))
def test_what_cfgrib_gets_wrong_is_reported(name, outcomes):
    outcome, why = CFGRIB_KNOWN[name]
    o = outcomes[name]
    assert (o.cfgrib, why in o.cfgrib_reason) == (outcome, True), o.cfgrib_reason
    assert "\n" not in o.cfgrib_reason


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


# --------------------------------------------------------------------------- cfgrib


@pytest.mark.skipif(not FILES, reason="shared/data/real is not beside the checkout")
@needs_cfgrib
def test_cfgrib_writes_nothing_beside_the_file(tmp_path):
    """cfgrib writes an index beside what it opens unless told not to: the check leaves
    both the data folder and its work folder as they were."""
    import shutil

    data, work = tmp_path / "data", tmp_path / "work"
    data.mkdir()
    work.mkdir()
    shutil.copy(REAL / "grib" / "cfgrib_regular_ll_sfc.grib", data)
    assert cfgrib_outcome(data / "cfgrib_regular_ll_sfc.grib", work) == ("identical", "")
    assert [p.name for p in data.iterdir()] == ["cfgrib_regular_ll_sfc.grib"]
    assert list(work.iterdir()) == []


@pytest.mark.skipif(not FILES, reason="shared/data/real is not beside the checkout")
@needs_cfgrib
def test_the_cfgrib_check_catches_what_would_be_wrong(tmp_path):
    """cfgrib_problems() is what makes cfgrib's "identical" mean something: each kind of
    damage to cfgrib's correct reading is reported."""
    import cfgrib
    import numpy as np

    name = "cfgrib_multi_param_on_multi_dims.grib"
    link = tmp_path / name
    link.symlink_to(REAL / "grib" / name)
    (ds,) = [d.load() for d in cfgrib.open_datasets(str(link),
                                                   backend_kwargs={"indexpath": ""})]
    oracle = Oracle(REAL / "grib" / name)
    assert cfgrib_problems([ds], oracle) == []

    def problems(damage):
        bad = ds.copy(deep=True)
        bad = damage(bad) or bad
        return " | ".join(cfgrib_problems([bad], oracle))

    def one_value(d):
        d["t"].values[1, 2, 10, 20] += 0.5

    def swapped(d):
        d["u"].values[[0, 1]] = d["u"].values[[1, 0]]

    assert "1 of 2664 values differ" in problems(one_value)
    assert "values differ" in problems(swapped)
    # cfgrib's own convention (latitude decreasing, longitude 0..360) is no problem, but
    # points that move are
    assert problems(lambda d: d.isel(latitude=slice(None, None, -1))) == ""
    assert problems(lambda d: d.assign_coords(longitude=d.longitude - 360)) == ""
    assert "latitude/longitude differ" in problems(
        lambda d: d.assign_coords(longitude=d.longitude + 1))
    hour = np.timedelta64(1, "h")
    assert "step 0 min found 0 times" in problems(lambda d: d.assign_coords(step=d.step + hour))
    assert "step 2160 min found 0 times" in problems(lambda d: d.isel(step=[0, 1, 2]))
    assert "no such variable" in problems(lambda d: d.drop_vars("z"))
    assert "no isobaricInhPa coordinate" in problems(lambda d: d.drop_vars("isobaricInhPa"))
    # a message given twice (two variables hold it)
    assert "fits 2 variables (t[0], t[1]), 2 of them equal" in " | ".join(
        cfgrib_problems([ds, ds], oracle))
    assert "positions without a message hold values" in problems(
        lambda d: d.isel(step=[0, 1, 2, 3, 3]).assign_coords(step=np.r_[d.step.values, hour]))
