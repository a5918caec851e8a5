"""zarrport analyze normals: values against plain loops over cftime dates for every calendar
and frequency, CF climatology bounds, Feb 29 handling, outputs, sources, clusters, the CLI."""

from __future__ import annotations

import json
import os
from collections import defaultdict

import cftime
import numpy as np
import pytest
import xarray as xr

from clirun import run_main
from zarrport.analysis.cluster import dask_client
from zarrport.analysis.normals import normals, plot_normals, write_normals

CALENDARS = ("standard", "proleptic_gregorian", "noleap", "all_leap", "360_day")
SEASON = {12: "DJF", 1: "DJF", 2: "DJF", 3: "MAM", 4: "MAM", 5: "MAM", 6: "JJA", 7: "JJA",
          8: "JJA", 9: "SON", 10: "SON", 11: "SON"}
COARSE = dict(start_year=2003, end_year=2012, window=5, step=2)  # windows 2003, 2005, 2007


def _dataset(cal: str, y0: int = 2000, y1: int = 2012, seed: int = 0) -> xr.Dataset:
    """Daily random values on a 4x5 grid, a NaN here and there, and one grid point missing
    all of January 2005 (that month and DJF 2005 fall below the coverage there)."""
    times = xr.date_range(f"{y0}-01-01", f"{y1 + 1}-01-01", freq="D", calendar=cal,
                          use_cftime=True, inclusive="left")
    rng = np.random.default_rng(seed)
    v = rng.normal(280.0, 8.0, (len(times), 4, 5)).astype("f4")
    v[rng.random(v.shape) < 0.003] = np.nan
    jan05 = [i for i, t in enumerate(times) if (t.year, t.month) == (2005, 1)]
    v[jan05, 0, 0] = np.nan
    ds = xr.Dataset(
        {"tas": (("time", "lat", "lon"), v, {"units": "K", "standard_name": "air_temperature"})},
        coords={"time": times,
                "lat": ("lat", np.array([-30.0, -10.0, 10.0, 30.0]), {"units": "degrees_north"}),
                "lon": ("lon", np.arange(5) * 20.0 + 5, {"units": "degrees_east"})})
    ds.time.encoding.update({"units": "days since 1850-01-01", "calendar": cal})
    return ds.chunk(time=400)


# --------------------------------------------------------------------------------- reference


def _key(t, freq: str, feb29: str):
    """(year the day counts in, period) of a date; None: left out."""
    if freq == "annual":
        return t.year, "ANN"
    if freq == "seasonal":
        return t.year + (t.month == 12), SEASON[t.month]
    if freq == "monthly":
        return t.year, t.month
    if (t.month, t.day) == (2, 29):
        if feb29 == "drop":
            return None
        if feb29 == "fold":
            return t.year, "02-28"
    return t.year, f"{t.month:02d}-{t.day:02d}"


def _calendar_days(cal: str, y0: int, y1: int):
    """Every date of the calendar in years y0..y1, by stepping one day at a time."""
    t = cftime.datetime(y0, 1, 1, calendar=cal)
    one = cftime.datetime(y0, 1, 2, calendar=cal) - t
    while t.year <= y1:
        yield t
        t = t + one


def reference(ds: xr.Dataset, cal: str, freq: str, *, start_year, end_year, window, step,
              min_coverage=0.9, feb29="keep"):
    """{(first_year, period): (normal[lat, lon], count[lat, lon])} by loops over days."""
    values = ds["tas"].values.astype("f8")
    groups = defaultdict(list)  # (year, period) -> daily fields
    for i, t in enumerate(ds.time.values):
        k = _key(t, freq, feb29)
        if k is not None:
            groups[k].append(values[i])
    expected = defaultdict(int)  # calendar days of (year, period)
    for t in _calendar_days(cal, start_year - 1, end_year + 1):
        k = _key(t, freq, feb29)
        if k is not None:
            expected[k] += 1
    periods = sorted({p for _, p in expected}, key=str)
    out = {}
    first = start_year
    while first + window - 1 <= end_year:
        yrs = range(first, first + window)
        for p in periods:
            exist = sum(1 for y in yrs if expected[(y, p)] > 0)
            years_in = np.zeros(values.shape[1:])  # years that count, per grid point
            total = np.zeros(values.shape[1:])  # of yearly means, or of days (dayofyear)
            days_in = np.zeros(values.shape[1:])
            for y in yrs:
                fields = np.array(groups.get((y, p), np.empty((0, *values.shape[1:]))))
                n = np.sum(~np.isnan(fields), axis=0)
                s = np.nansum(fields, axis=0)
                if freq == "dayofyear":
                    ok = n >= 1
                    total += np.where(ok, s, 0)
                    days_in += np.where(ok, n, 0)
                else:
                    ok = (n > 0) & (n >= min_coverage * expected[(y, p)])
                    total += np.where(ok, s / np.maximum(n, 1), 0)
                    days_in += ok
                years_in += ok
            enough = (exist > 0) & (years_in / max(exist, 1) >= min_coverage - 1e-12)
            with np.errstate(invalid="ignore", divide="ignore"):
                normal = np.where(enough, total / days_in, np.nan)
            out[(first, p)] = (normal, years_in.astype(int))
        first += step
    return out


def check(result: xr.Dataset, ref: dict) -> None:
    got = {(int(f), p.item() if hasattr(p, "item") else p): i for i, (f, p) in enumerate(
        zip(result.first_year.values, result.period.values, strict=True))}
    assert sorted(got, key=str) == sorted(ref, key=str)
    tas, count = result["tas"].values, result["count"].values
    for k, (normal, n) in ref.items():
        np.testing.assert_allclose(tas[got[k]], normal, rtol=2e-6, err_msg=str(k))
        np.testing.assert_array_equal(count[got[k]], n, err_msg=str(k))


CASES = [(cal, freq, "keep") for cal in CALENDARS for freq in ("annual", "seasonal", "monthly")]
CASES += [(cal, "dayofyear", "keep") for cal in CALENDARS]
# (in all_leap, 360_day and noleap feb29 does not apply: see the test below)
CASES += [(cal, "dayofyear", how) for cal in ("standard", "proleptic_gregorian")
          for how in ("drop", "fold")]


@pytest.mark.parametrize(("cal", "freq", "feb29"), CASES)
def test_against_loops(cal, freq, feb29):
    ds = _dataset(cal)
    result = normals(ds, variable="tas", freq=freq, feb29=feb29, **COARSE)
    assert result["tas"].chunks is not None  # lazy
    result = result.compute()
    check(result, reference(ds, cal, freq, feb29=feb29, **COARSE))
    assert result["tas"].dtype == np.float32
    nan_points = np.isnan(result["tas"].values)
    assert nan_points.sum() < nan_points.size  # values, not all gaps


def test_first_year_without_previous_december_and_coverage():
    """Data start in 2000: DJF 2000 has no December 1999, so it is incomplete; with
    min_coverage 0.9 the first window's DJF needs all 5 years (NaN), with 0.75 four do."""
    ds = _dataset("noleap")
    kw = dict(start_year=2000, end_year=2006, window=5, step=1)
    strict = normals(ds, variable="tas", freq="seasonal", **kw).compute()
    djf = (strict.period == "DJF") & (strict.first_year == 2000)
    assert np.isnan(strict["tas"].where(djf, drop=True)).all()
    assert (strict["count"].where(djf, drop=True) == 4).all()
    loose = normals(ds, variable="tas", freq="seasonal", min_coverage=0.75, **kw).compute()
    check(loose, reference(ds, "noleap", "seasonal", min_coverage=0.75, **kw))
    assert np.isfinite(loose["tas"].where(djf, drop=True)).all()


def test_climatology_bounds_time_and_attributes():
    ds = _dataset("standard")
    cases = {
        "annual": ("ANN", "2003-01-01", "2008-01-01", "2005-07-02 12:00"),
        "seasonal": ("DJF", "2002-12-01", "2007-03-01", "2005-01-15 00:00"),
        "monthly": (1, "2003-01-01", "2007-02-01", "2005-01-16 12:00"),
        "dayofyear": ("03-01", "2003-03-01", "2007-03-02", "2005-03-01 12:00"),
    }
    for freq, (period, lo, hi, mid) in cases.items():
        r = normals(ds, variable="tas", freq=freq, **COARSE)
        i = int(np.flatnonzero((r.period.values == period) & (r.first_year.values == 2003))[0])
        b = r.climatology_bounds.values[i]
        assert [x.strftime("%Y-%m-%d") for x in b] == [lo, hi], freq
        assert r.time.values[i].strftime("%Y-%m-%d %H:%M") == mid, freq
        assert r.time.attrs["climatology"] == "climatology_bounds"
        assert r.climatology_bounds.dims == ("time", "nv")
        assert r["tas"].attrs["units"] == "K"
        expected_cm = ("time: mean over years" if freq == "dayofyear"
                       else "time: mean within years time: mean over years")
        assert r["tas"].attrs["cell_methods"] == expected_cm
        assert r.time.encoding["units"] == r.climatology_bounds.encoding["units"]
        assert r.time.to_index().is_monotonic_increasing
        assert list(r.last_year.values - r.first_year.values) == [4] * r.sizes["time"]
    # Feb 29 kept: only 2004 is a leap year in 2003-2007
    r = normals(ds, variable="tas", freq="dayofyear", **COARSE)
    i = int(np.flatnonzero((r.period.values == "02-29") & (r.first_year.values == 2003))[0])
    assert [x.strftime("%Y-%m-%d") for x in r.climatology_bounds.values[i]] == [
        "2004-02-29", "2004-03-01"]
    # 360_day: February has 30 days, the year 360
    r = normals(_dataset("360_day"), variable="tas", freq="dayofyear", **COARSE)
    assert r.sizes["time"] == 3 * 360 and "02-30" in r.period.values
    r = normals(_dataset("360_day"), variable="tas", freq="annual", **COARSE)
    assert r.time.values[0].strftime("%Y-%m-%d %H:%M") == "2005-07-01 00:00"


def test_feb29_keep_drop_fold_by_hand():
    """Standard calendar, windows 2003-2007 (leap year 2004), 2005-2009 and 2007-2011 (2008)."""
    ds = _dataset("standard")
    v = ds["tas"].values.astype("f8")
    t = ds.time.values

    def days(m, d, years):
        return [v[i] for i, x in enumerate(t) if (x.month, x.day) == (m, d) and x.year in years]

    def pick(r, first, period):
        i = np.flatnonzero((r.period.values == period) & (r.first_year.values == first))
        return r["tas"].values[int(i[0])], r["count"].values[int(i[0])]

    keep = normals(ds, variable="tas", freq="dayofyear", feb29="keep", **COARSE).compute()
    assert keep.sizes["time"] == 3 * 366
    val, n = pick(keep, 2003, "02-29")
    np.testing.assert_allclose(val, days(2, 29, [2004])[0], rtol=1e-6, equal_nan=True)
    assert ((n == 1) | np.isnan(days(2, 29, [2004])[0])).all()
    val, n = pick(keep, 2003, "02-28")
    np.testing.assert_allclose(val, np.nanmean(days(2, 28, range(2003, 2008)), axis=0),
                               rtol=1e-6)
    assert n.max() == 5
    drop = normals(ds, variable="tas", freq="dayofyear", feb29="drop", **COARSE).compute()
    assert drop.sizes["time"] == 3 * 365 and "02-29" not in drop.period.values
    np.testing.assert_array_equal(pick(drop, 2003, "02-28")[0], pick(keep, 2003, "02-28")[0])
    fold = normals(ds, variable="tas", freq="dayofyear", feb29="fold", **COARSE).compute()
    assert fold.sizes["time"] == 3 * 365
    sample = days(2, 28, range(2007, 2012)) + days(2, 29, range(2007, 2012))
    assert len(sample) == 6  # five Feb 28s and 2008's Feb 29
    val, n = pick(fold, 2007, "02-28")
    np.testing.assert_allclose(val, np.nanmean(sample, axis=0), rtol=1e-6)
    assert n.max() == 5  # years, not days
    np.testing.assert_array_equal(pick(fold, 2007, "03-01")[0], pick(keep, 2007, "03-01")[0])
    assert "Feb 29" in fold.attrs["normals_days"]


# ------------------------------------------------------------------------ sources and outputs


@pytest.fixture(scope="module")
def client():
    with dask_client(workers=1) as c:
        yield c


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """CMIP6-like files 2000-2006 (noleap, fill values masked) and their Icechunk
    references from run_batch."""
    from zarrport.pipeline import run_batch
    from zarrport.testing.samples import write_cmip6_archive

    root = tmp_path_factory.mktemp("normals-archive")
    paths = write_cmip6_archive(root / "src", years=range(2000, 2007), nlat=6, nlon=8,
                                time_chunk=73, calendar="noleap")
    result = run_batch(str(root / "src" / "*.nc"), str(root / "refs"), workers=1)
    assert result.ok, result.failures
    return root, paths


ARCHIVE_KW = dict(variable="tas", start_year=2001, end_year=2006, window=3, step=2)


def test_sources_netcdf_glob_and_icechunk_agree_with_loops(archive):
    root, paths = archive
    from_files = normals(str(root / "src" / "*.nc"), freq="monthly", **ARCHIVE_KW).compute()
    from_refs = normals(str(root / "refs"), freq="monthly", **ARCHIVE_KW).compute()
    xr.testing.assert_identical(from_files.drop_attrs(), from_refs.drop_attrs())
    raw = xr.open_mfdataset(paths, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
    kw = {k: v for k, v in ARCHIVE_KW.items() if k != "variable"}
    check(from_files, reference(raw.load(), "noleap", "monthly", **kw))
    # 1 % fill values: the coverage holds nearly everywhere
    assert np.isfinite(from_files["tas"].values).mean() > 0.99


def test_write_netcdf_and_zarr_round_trip(tmp_path, client):
    ds = _dataset("360_day")
    r = normals(ds, variable="tas", freq="seasonal", **COARSE)
    expected = r.compute()
    coder = xr.coders.CFDatetimeCoder(use_cftime=True)
    written = []
    for name, engine in (("n.nc", "netcdf4"), ("n.zarr", "zarr")):
        kw = {"consolidated": False} if engine == "zarr" else {}
        out = str(tmp_path / name)
        summary = write_normals(r, out, client=client)
        assert summary["windows"] == [[2003, 2007], [2005, 2009], [2007, 2011]]
        assert summary["shape"] == {"time": 12, "lat": 4, "lon": 5}
        assert summary["cluster"]["workers"] == 1 and summary["freq"] == "seasonal"
        vals = expected["tas"].values
        assert summary["value_range"] == [float(np.nanmin(vals)), float(np.nanmax(vals))]
        back = xr.open_dataset(out, engine=engine, decode_times=coder, **kw)
        assert back.time.dt.calendar == "360_day"
        assert back.time.encoding["calendar"] == "360_day"
        assert back.time.attrs["climatology"] == "climatology_bounds"
        np.testing.assert_array_equal(back.climatology_bounds.values,
                                      expected.climatology_bounds.values)
        np.testing.assert_array_equal(back.time.values, expected.time.values)
        np.testing.assert_array_equal(back["tas"].values, vals)
        np.testing.assert_array_equal(back["count"].values, expected["count"].values)
        assert list(back.period.values) == list(expected.period.values)
        raw = xr.open_dataset(out, engine=engine, decode_times=False, **kw)
        assert raw.time.attrs["units"] == raw.climatology_bounds.attrs["units"] \
            == "days since 1850-01-01"
        assert raw.time.attrs["calendar"] == raw.climatology_bounds.attrs["calendar"]
        for coord in ("time", "climatology_bounds", "lat", "lon"):  # CF: no fill values
            assert "_FillValue" not in raw[coord].encoding, (engine, coord)
        back.close()
        raw.close()
        written.append(name)
        assert sorted(os.listdir(tmp_path)) == written  # no temporary sibling left
    with pytest.raises(Exception, match="exists"):
        write_normals(r, str(tmp_path / "n.nc"), client=client)
    write_normals(r, str(tmp_path / "n.nc"), client=client, overwrite=True)


def test_real_dask_cluster_equals_local_cluster(tmp_path, client, dask_cluster):
    src = _dataset("all_leap")
    r = normals(src, variable="tas", freq="dayofyear", **COARSE)
    write_normals(r, str(tmp_path / "local.zarr"), client=client)
    remote = dask_cluster.client()
    try:
        with dask_client(remote) as c:
            summary = write_normals(r, str(tmp_path / "remote.zarr"), client=c)
        assert summary["cluster"]["local"] is False and summary["cluster"]["workers"] == 2
    finally:
        remote.close()
    coder = xr.coders.CFDatetimeCoder(use_cftime=True)
    a = xr.open_zarr(tmp_path / "local.zarr", decode_times=coder, consolidated=False).load()
    b = xr.open_zarr(tmp_path / "remote.zarr", decode_times=coder, consolidated=False).load()
    xr.testing.assert_identical(a, b)
    check(a, reference(src, "all_leap", "dayofyear", **COARSE))


def test_plot(tmp_path):
    from PIL import Image

    r = normals(_dataset("noleap"), variable="tas", freq="monthly", **COARSE).compute()
    png = plot_normals(r, str(tmp_path / "p.png"))
    img = Image.open(png).convert("RGB")
    assert img.size[0] > img.size[1]  # two panels side by side
    assert len(set(img.getdata())) > 50
    one = r.where(r.first_year == 2003, drop=True)
    img1 = Image.open(plot_normals(one, str(tmp_path / "one.png"))).convert("RGB")
    assert img1.size[0] < img.size[0]  # one window: the map only
    with pytest.raises(Exception, match="no window starts in 2004"):
        plot_normals(r, str(tmp_path / "bad.png"), change=(2003, 2004))
    assert not (tmp_path / "bad.png").exists()


def test_plot_skips_a_period_without_values(tmp_path):
    """The first window's DJF has no December before the record: the map shows MAM, the
    first season with values in both windows, not an empty DJF."""
    from PIL import Image

    r = normals(_dataset("noleap"), variable="tas", freq="seasonal", start_year=2000,
                end_year=2006, window=5, step=2).compute()
    assert r["tas"].where((r.period == "DJF") & (r.first_year == 2000), drop=True
                          ).isnull().all()
    png = plot_normals(r, str(tmp_path / "s.png"))
    img = Image.open(png).convert("RGB")
    assert len(set(img.getdata())) > 50
    only_djf = r.where(r.period == "DJF", drop=True)
    blank = Image.open(plot_normals(only_djf, str(tmp_path / "djf.png"))).convert("RGB")
    assert len(set(blank.getdata())) < len(set(img.getdata()))


# ------------------------------------------------------------------------------------ CLI


def _cli(args, capsys):
    return run_main(capsys, *args)


def test_cli_success_json_and_plot(tmp_path, archive, dask_cluster, capsys):
    root, _ = archive
    out, png = tmp_path / "n.nc", tmp_path / "n.png"
    code, stdout, err = _cli([
        "analyze", "normals", str(root / "src" / "*.nc"), "--variable", "tas",
        "--start-year", "2001", "--end-year", "2006", "--window", "3", "--step", "2",
        "--freq", "seasonal", "--bbox", "0,-60,200,60", "-o", str(out), "--plot", str(png),
        "--scheduler", dask_cluster.address, "--json"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["windows"] == [[2001, 2003], [2003, 2005]]
    assert summary["plot"] == str(png) and summary["output"] == str(out)
    assert "dask: cluster at" in err
    back = xr.open_dataset(out)
    assert float(back.lon.max()) <= 200 and float(abs(back.lat).max()) <= 60
    assert back.sizes["time"] == 8
    back.close()
    from PIL import Image

    assert len(set(Image.open(png).convert("RGB").getdata())) > 20
    # human output
    code, stdout, _ = _cli([
        "analyze", "normals", str(root / "src" / "*.nc"), "--variable", "tas",
        "--start-year", "2001", "--end-year", "2006", "--window", "3", "-o", str(out),
        "--overwrite", "--scheduler", dask_cluster.address], capsys)
    assert code == 0
    assert "4 windows of 3 years (2001-2003 .. 2004-2006)" in stdout
    assert f"output: {out}" in stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--variable", "nope"], "no variable 'nope'"),
    (["--window", "10"], "no 10-year window fits in 2001-2006"),
    (["--start-year", "1990"], "the data cover 2000-2006"),
    (["--end-year", "2030"], "the data cover 2000-2006"),
    (["--freq", "weekly"], "freq 'weekly'"),
    (["--feb29", "twice"], "feb29 'twice'"),
    (["--bbox", "10,20,30"], "is not W,S,E,N"),
    (["--bbox", "10,70,30,60"], "south must be below north"),
    (["--region", "MARS"], "unknown region"),
])
def test_cli_bad_input(tmp_path, archive, capsys, args, message):
    root, _ = archive
    base = {"--variable": "tas", "--start-year": "2001", "--end-year": "2006",
            "--window": "3"}
    for k, v in zip(args[::2], args[1::2], strict=True):
        base[k] = v
    out = tmp_path / "out.zarr"
    argv = ["analyze", "normals", str(root / "src" / "*.nc"), "-o", str(out),
            "--plot", str(tmp_path / "p.png")]
    for k, v in base.items():
        argv += [k, v]
    code, stdout, err = _cli(argv, capsys)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zarrport: error:"), err
    assert message in lines[0]
    assert os.listdir(tmp_path) == []


def test_cli_existing_output(tmp_path, archive, capsys):
    root, _ = archive
    out = tmp_path / "out.nc"
    out.write_bytes(b"keep me")
    code, _, err = _cli(["analyze", "normals", str(root / "src" / "*.nc"), "--variable",
                         "tas", "--start-year", "2001", "--end-year", "2006", "--window", "3",
                         "-o", str(out)], capsys)
    assert code != 0
    assert err.strip().splitlines() == [
        f"zarrport: error: {out} exists; remove it, choose another output or pass --overwrite"]
    assert out.read_bytes() == b"keep me" and os.listdir(tmp_path) == ["out.nc"]


def test_window_math_independent():
    """windows for 2015-2100 by 30 years every 10: 2015, 2025, ..., 2065 (2071 ends 2100)."""
    from zarrport.analysis.normals import window_years

    got = window_years(2015, 2100, 30, 10)
    assert got == [(2015, 2044), (2025, 2054), (2035, 2064), (2045, 2074), (2055, 2084),
                   (2065, 2094)]
    assert window_years(2015, 2044, 30, 1) == [(2015, 2044)]
    assert window_years(2015, 2043, 30, 1) == []


@pytest.mark.parametrize("cal", ["360_day", "all_leap", "noleap"])
def test_feb29_does_not_apply_where_every_year_or_none_has_it(cal):
    """--feb29 drop/fold is about calendars where only some years have Feb 29; in 360_day
    and all_leap it dropped a day every year has (359 / 365 days), fold merged it."""
    ds = _dataset(cal, 2000, 2003)
    kw = dict(variable="tas", start_year=2000, end_year=2003, window=4, freq="dayofyear")
    keep = normals(ds, feb29="keep", **kw).compute()
    n = {"360_day": 360, "all_leap": 366, "noleap": 365}[cal]
    assert keep.sizes["time"] == n
    for how in ("drop", "fold"):
        other = normals(ds, feb29=how, **kw).compute()
        xr.testing.assert_identical(other["tas"], keep["tas"])
        assert "feb29 does not apply" in other.attrs["normals_days"]
