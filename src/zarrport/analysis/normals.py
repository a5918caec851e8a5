"""Rolling climatological normals (e.g. 30-year means, every year) of daily data, as CF
climatologies, lazily on Dask.

The daily series is first reduced to the frequency with one grouped (flox) reduction per
(year, period) -- sums and counts of valid values -- then to every window with one
cumulative-sum pass over the years (each window's sum is the difference of two cumulative
sums; xarray's ``rolling`` on Dask without bottleneck materialises ``window`` copies of
every chunk).

Semantics (also in the output's attributes and in ``docs/analysis.md``):

- windows: [y, y + window - 1] for y = start_year, start_year + step, ... while
  y + window - 1 <= end_year;
- a normal is the mean over the window's years of each year's mean of the period (each year
  weighs the same); ``dayofyear`` normals are the mean of that calendar day's values;
- seasons are DJF/MAM/JJA/SON with December counted in the NEXT year's DJF (WMO);
- a (year, period) with fewer than ``min_coverage`` of its calendar days present (per grid
  point) is left out, and a window needs ``min_coverage`` of its years (rounded up);
- ``dayofyear`` keys are (month, day) of the calendar, never the day number: 365 keys in
  noleap, 366 in all_leap and the Gregorian calendars (Feb 29 from the leap years only, or
  dropped, or folded into Feb 28 by ``feb29``), 360 in 360_day (Feb 29 and 30 exist);
- the output has one ``time`` entry per (window, period), ``time`` being the middle of the
  period in the window's middle year (``first_year + window // 2``), with CF
  ``climatology_bounds`` (CF 1.11 section 7.4) and ``first_year``/``last_year``/``period``
  coordinates along ``time``, and a ``count`` of the years behind every value.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time as _time
from typing import Any

import cftime
import numpy as np
import xarray as xr

from zarrport.errors import InvalidArgumentError, OutputExistsError

FREQS = ("annual", "seasonal", "monthly", "dayofyear")
FEB29 = ("keep", "drop", "fold")
SEASONS = ("DJF", "MAM", "JJA", "SON")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: time units of the output when the input's are unknown
DEFAULT_UNITS = "days since 1850-01-01"

_CELL_METHODS = {
    "annual": "time: mean within years time: mean over years",
    "seasonal": "time: mean within years time: mean over years",
    "monthly": "time: mean within years time: mean over years",
    # one daily value per year and calendar day: only the mean over the years is taken
    "dayofyear": "time: mean over years",
}


def _date(cal: str, y: int, m: int, d: int = 1) -> cftime.datetime:
    return cftime.datetime(y, m, d, calendar=cal)


def _exists(cal: str, y: int, m: int, d: int) -> bool:
    try:
        _date(cal, y, m, d)
    except ValueError:
        return False
    return True


def _leap_years_vary(cal: str) -> bool:
    """Whether Feb 29 is in some years of ``cal`` and not in others (the calendars
    ``feb29`` is about)."""
    return len({_exists(cal, y, 2, 29) for y in range(2000, 2004)}) == 2


def _next_month(y: int, m: int) -> tuple[int, int]:
    return (y + 1, 1) if m == 12 else (y, m + 1)


class _Periods:
    """The periods of a frequency in a calendar: their names, the key of every day, and the
    date range of (year, period)."""

    def __init__(self, freq: str, cal: str, feb29: str):
        self.freq, self.cal, self.feb29 = freq, cal, feb29
        if freq == "annual":
            self.names: list[Any] = ["ANN"]
        elif freq == "seasonal":
            self.names = list(SEASONS)
        elif freq == "monthly":
            self.names = list(range(1, 13))
        else:
            # every (month, day) of the calendar: year 2000 is a leap year in all calendars
            # that have leap years
            start, stop = _date(cal, 2000, 1, 1), _date(cal, 2001, 1, 1)
            step = stop - stop  # a zero timedelta
            one = _date(cal, 2000, 1, 2) - start
            days = []
            while start + step < stop:
                t = start + step
                days.append((t.month, t.day))
                step += one
            if feb29 != "keep":
                days = [md for md in days if md != (2, 29)]
            self.days = days
            self.index = {md: i for i, md in enumerate(days)}
            self.names = [f"{m:02d}-{d:02d}" for m, d in days]
        self.n = len(self.names)

    def keys(self, years: np.ndarray, months: np.ndarray, days: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
        """(year the day counts in, period index; -1: left out) of every day."""
        if self.freq == "annual":
            return years, np.zeros_like(years)
        if self.freq == "seasonal":
            return years + (months == 12), (months % 12) // 3
        if self.freq == "monthly":
            return years, months - 1
        md = list(zip(months.tolist(), days.tolist(), strict=True))
        if self.feb29 == "fold":
            md = [(2, 28) if x == (2, 29) else x for x in md]
        idx = np.array([self.index.get(x, -1) for x in md], dtype=np.int64)
        return years, idx

    def span(self, y: int, p: int) -> tuple[cftime.datetime, cftime.datetime] | None:
        """[start, end) of period ``p`` in year ``y`` (None: the day is not in that year)."""
        cal = self.cal
        if self.freq == "annual":
            return _date(cal, y, 1), _date(cal, y + 1, 1)
        if self.freq == "seasonal":
            m0 = 3 * p  # DJF: December of the year before
            start = _date(cal, y - 1, 12) if p == 0 else _date(cal, y, m0)
            return start, _date(cal, y, m0 + 3)
        if self.freq == "monthly":
            return _date(cal, y, p + 1), _date(cal, *_next_month(y, p + 1))
        m, d = self.days[p]
        if not _exists(cal, y, m, d):
            return None
        start = _date(cal, y, m, d)
        end = start + (_date(cal, 2000, 1, 2) - _date(cal, 2000, 1, 1))
        if self.feb29 == "fold" and (m, d) == (2, 28) and _exists(cal, y, 2, 29):
            end = _date(cal, y, 3, 1)
        return start, end

    def ndays(self, y: int, p: int) -> int:
        s = self.span(y, p)
        return 0 if s is None else round((s[1] - s[0]).total_seconds() / 86400)


def window_years(start_year: int, end_year: int, window: int, step: int
                 ) -> list[tuple[int, int]]:
    """The (first, last) years of every window."""
    return [(y, y + window - 1) for y in range(start_year, end_year - window + 2, step)]


def _time_coord(ds: xr.Dataset) -> xr.Dataset:
    if "time" not in ds.coords:
        raise InvalidArgumentError("the data have no time coordinate")
    if np.issubdtype(ds["time"].dtype, np.datetime64):
        ds = ds.convert_calendar("proleptic_gregorian", use_cftime=True)
    if ds.indexes["time"].size and not ds.indexes["time"].is_monotonic_increasing:
        ds = ds.sortby("time")
    return ds


def normals(source: Any, *, variable: str, start_year: int, end_year: int, window: int = 30,
            step: int = 1, freq: str = "annual", box: Any = None, feb29: str = "keep",
            min_coverage: float = 0.9, storage_options: dict | None = None,
            collection: str | None = None) -> xr.Dataset:
    """Rolling ``window``-year normals of the daily ``variable`` of ``source`` (anything
    :func:`zarrport.analysis.source.open_archive` opens, or a dataset), lazily: a CF
    climatology with one ``time`` entry per (window, period). See the module docstring."""
    from zarrport.analysis.presets import subset
    from zarrport.analysis.source import open_archive

    if freq not in FREQS:
        raise InvalidArgumentError(f"freq {freq!r}: expected one of {', '.join(FREQS)}")
    if feb29 not in FEB29:
        raise InvalidArgumentError(f"feb29 {feb29!r}: expected one of {', '.join(FEB29)}")
    if window < 1 or step < 1:
        raise InvalidArgumentError("window and step must be at least 1 year")
    if not 0 < min_coverage <= 1:
        raise InvalidArgumentError(f"min_coverage {min_coverage}: must be in (0, 1]")
    if start_year > end_year:
        raise InvalidArgumentError(f"start year {start_year} is after end year {end_year}")
    wins = window_years(start_year, end_year, window, step)
    if not wins:
        raise InvalidArgumentError(f"no {window}-year window fits in {start_year}-{end_year}")

    ds = open_archive(source, variables=[variable], storage_options=storage_options,
                      collection=collection)
    ds = _time_coord(ds)
    if box is not None:
        ds = subset(ds, box)
    da = ds[variable]
    if "time" not in da.dims:
        raise InvalidArgumentError(f"variable {variable!r} has no time dimension")
    if not np.issubdtype(da.dtype, np.number):
        raise InvalidArgumentError(f"variable {variable!r} is not numeric ({da.dtype})")
    tvar = ds["time"]
    cal = str(tvar.encoding.get("calendar") or tvar.attrs.get("calendar")
              or tvar.dt.calendar)
    times = tvar.values
    if times.size == 0:
        raise InvalidArgumentError("the data have no time steps")
    years = tvar.dt.year.values.astype(np.int64)
    months = tvar.dt.month.values.astype(np.int64)
    days = tvar.dt.day.values.astype(np.int64)
    y0, y1 = int(years.min()), int(years.max())
    if start_year < y0 or end_year > y1:
        raise InvalidArgumentError(
            f"the data cover {y0}-{y1}; {start_year}-{end_year} is not inside (the years "
            f"asked for must all be in the data)")
    if times.size > 1:
        step_days = np.median(np.diff(cftime.date2num(times[: min(times.size, 400)],
                                                      DEFAULT_UNITS, cal)))
        if abs(step_days - 1) > 1e-6:
            raise InvalidArgumentError(f"normals need daily data; the time step of "
                                       f"{variable!r} is {step_days:g} days")

    if not _leap_years_vary(cal):
        # noleap, all_leap, 360_day: Feb 29 is in every year or in none, a day like any other
        feb29 = "keep"
    per = _Periods(freq, cal, feb29)
    nyears, P = end_year - start_year + 1, per.n
    key_year, pidx = per.keys(years, months, days)
    keep = (key_year >= start_year) & (key_year <= end_year) & (pidx >= 0)
    sel = np.flatnonzero(keep)
    if sel.size and sel[-1] - sel[0] + 1 == sel.size:
        # the usual case, a run of days: a slice (an index array is a Dask "take", 3x the
        # cost of reading the data on a 30-year archive)
        da = da.isel(time=slice(int(sel[0]), int(sel[-1]) + 1))
    else:
        da = da.isel(time=sel)
    key = (key_year[sel] - start_year) * P + pidx[sel]

    # 1. (year, period) sums and counts of valid values, one flox reduction each; sums in
    # float64 by flox's dtype= (converting the input first costs 4x on a float32 archive)
    # (xarray 2026 + flox: UniqueGrouper(labels=...) with absent labels fails in flox's
    # reindex with "fill_value cannot be None"; reindexing afterwards is equivalent)
    da = da.assign_coords(key=("time", key))
    allkeys = np.arange(nyears * P)
    sums = da.groupby("key").sum(dtype="f8").reindex(key=allkeys, fill_value=0.0)
    counts = da.groupby("key").count().reindex(key=allkeys, fill_value=0)
    space = [d for d in sums.dims if d != "key"]
    sums = sums.transpose("key", *space)
    counts = counts.transpose("key", *space)

    # 2. per year: contribution to the window sums (value, weight, 1 if the year counts)
    expected = np.array([[per.ndays(start_year + i, p) for p in range(P)]
                         for i in range(nyears)], dtype="f8")  # (year, period)
    exists = expected > 0
    chunks = {"key": -1, **dict.fromkeys(space, "auto")}
    s = sums.chunk(chunks).data
    n = counts.chunk(chunks).data
    shape = (nyears, P, *s.shape[1:])
    s, n = s.reshape(shape), n.reshape(shape)
    extra = (None,) * len(space)
    exp = expected[(..., *extra)]
    if freq == "dayofyear":
        ok = (n >= 1) & exists[(..., *extra)]
        a = np.where(ok, s, 0.0)
        b = np.where(ok, n, 0.0)
    else:
        ok = (n >= min_coverage * exp - 1e-9) & (n > 0) & exists[(..., *extra)]
        a = np.where(ok, s / np.where(n > 0, n, 1), 0.0)
        b = ok.astype("f8")
    c = ok.astype("f8")

    # 3. the windows: one cumulative sum over the years
    starts = np.array([f - start_year for f, _ in wins], dtype=np.int64)
    A, B, C = (_window_sums(x, starts, window) for x in (a, b, c))
    need = np.array([[math.ceil(min_coverage * sum(exists[i + st, p] for i in range(window))
                                - 1e-9) for p in range(P)] for st in starts])  # (window, P)
    need_b = need[(..., *extra)]
    good = (C >= need_b) & (need_b > 0)
    src_dtype = ds[variable].dtype
    out_dtype = src_dtype if np.issubdtype(src_dtype, np.floating) else np.dtype("f8")
    value = np.where(good, A / np.where(B > 0, B, 1), np.nan).astype(out_dtype)
    W = len(wins)
    value = value.reshape((W * P, *value.shape[2:]))
    count = C.astype("i2").reshape((W * P, *C.shape[2:]))

    return _assemble(ds, variable, sums, space, value, count, wins, per, window, step, freq,
                     feb29, min_coverage, cal, need)


def _window_sums(x: Any, starts: np.ndarray, window: int) -> Any:
    """Sums over axis 0 of ``x[s:s + window]`` for every s of ``starts`` (axis 0 of ``x``
    is one Dask chunk)."""
    import dask.array as dsa

    def f(block: np.ndarray) -> np.ndarray:
        cs = np.concatenate([np.zeros_like(block[:1]), np.cumsum(block, axis=0)], axis=0)
        return cs[starts + window] - cs[starts]

    x = dsa.asarray(x)
    return x.map_blocks(f, chunks=((len(starts),), *x.chunks[1:]), dtype=x.dtype)


def _assemble(ds: xr.Dataset, variable: str, template: xr.DataArray, space: list[str],
              value: Any, count: Any, wins: list[tuple[int, int]], per: _Periods,
              window: int, step: int, freq: str, feb29: str, min_coverage: float, cal: str,
              need: np.ndarray) -> xr.Dataset:
    """The CF climatology dataset around the lazy arrays (time = window x period)."""
    P = per.n
    times, bounds, firsts, lasts, periods = [], [], [], [], []
    for f, last in wins:
        ref = f + window // 2
        for p in range(P):
            times.append(_representative(per, ref, p))
            have = [y for y in range(f, last + 1) if per.span(y, p) is not None]
            lo = per.span(have[0], p)[0] if have else _date(cal, f, 3, 1)
            hi = per.span(have[-1], p)[1] if have else _date(cal, last, 3, 1)
            bounds.append([lo, hi])
            firsts.append(f)
            lasts.append(last)
            periods.append(per.names[p])
    src_t = ds["time"]
    units = str(src_t.encoding.get("units") or DEFAULT_UNITS)
    if " since " not in units:
        units = DEFAULT_UNITS
    tattrs = {"standard_name": "time", "long_name": "representative time of the normal: the "
              "middle of the period in the middle year of the window", "axis": "T",
              "climatology": "climatology_bounds"}
    coords: dict[str, Any] = {
        "time": xr.Variable("time", np.array(times, dtype=object), tattrs),
        "first_year": ("time", np.array(firsts, dtype="i4"),
                       {"long_name": "first year of the window"}),
        "last_year": ("time", np.array(lasts, dtype="i4"),
                      {"long_name": "last year of the window"}),
        "period": ("time", np.array(periods, dtype=object if freq != "monthly" else "i4"),
                   {"long_name": _PERIOD_NAMES[freq]}),
    }
    for name in space:
        if name in template.coords:
            coords[name] = template.coords[name].variable
    for name, c in template.coords.items():
        if name not in coords and "key" not in c.dims and all(d in space for d in c.dims):
            coords[name] = c.variable
    src = ds[variable]
    vattrs = {k: src.attrs[k] for k in ("standard_name", "long_name", "units") if k in
              src.attrs}
    vattrs["cell_methods"] = _CELL_METHODS[freq]
    dims = ("time", *space)
    out = xr.Dataset(
        {variable: xr.Variable(dims, value, vattrs),
         "count": xr.Variable(dims, count, {
             "long_name": f"number of years behind each value of {variable}",
             "units": "1"}),
         "climatology_bounds": xr.Variable(("time", "nv"), np.array(bounds, dtype=object))},
        coords=coords,
    )
    enc = {"units": units, "calendar": cal, "dtype": "f8", "_FillValue": None}
    out["time"].encoding.update(enc)
    out["climatology_bounds"].encoding.update(enc)
    for name in out.coords:  # CF: no fill values on coordinates (nor on bounds, above)
        if name != "time" and out[name].dtype.kind == "f":
            out[name].encoding = {"_FillValue": None}
    attrs = {k: v for k, v in ds.attrs.items()
             if k not in ("Conventions", "title", "history", "tracking_id", "creation_date")}
    attrs.update({
        "Conventions": "CF-1.11",
        "title": f"{window}-year rolling climatological normals of {variable} ({freq})",
        "normals_freq": freq,
        "normals_window": window,
        "normals_step": step,
        "normals_min_coverage": min_coverage,
        "normals_calendar": cal,
        "normals_method": (
            "mean over the window's years of each year's mean of the period (each year "
            "weighs the same); a (year, period) with fewer than min_coverage of its calendar "
            "days present at a grid point is left out; a window needs min_coverage of its "
            "years (rounded up); DJF holds the December of the year before"
            if freq != "dayofyear" else
            "mean of the values of each calendar day (month, day) over the window's years; "
            "a window needs min_coverage of the years that have that day (rounded up)"),
        "normals_time": "middle of the period in the window's middle year "
                        "(first_year + window // 2)" + (
                            "; Feb 29 in a year without one: 00:00 of Mar 1"
                            if freq == "dayofyear" else ""),
    })
    if freq == "dayofyear":
        attrs["normals_feb29"] = feb29
        attrs["normals_days"] = _feb29_text(per, feb29)
    out.attrs = attrs
    return out


_PERIOD_NAMES = {
    "annual": "period: ANN (the calendar year)",
    "seasonal": "season: DJF (December of the year before), MAM, JJA, SON",
    "monthly": "month 1..12",
    "dayofyear": "calendar day MM-DD",
}


def _feb29_text(per: _Periods, feb29: str) -> str:
    n = per.n
    if not _leap_years_vary(per.cal):
        which = "in every year" if _exists(per.cal, 2001, 2, 29) else "in no year"
        return f"{n} calendar days ({per.cal} has Feb 29 {which}; feb29 does not apply)"
    if feb29 == "keep":
        return (f"{n} calendar days; Feb 29 is its own day, from the years that have one "
                "(count says how many)")
    if feb29 == "drop":
        return f"{n} calendar days; Feb 29 values are left out"
    return f"{n} calendar days; Feb 29 values join Feb 28's sample"


def _representative(per: _Periods, year: int, p: int) -> cftime.datetime:
    span = per.span(year, p)
    if span is None:  # Feb 29 in a year without one: the midnight ending Feb 28
        return _date(per.cal, year, 3, 1)
    lo, hi = span
    return lo + (hi - lo) / 2


# ------------------------------------------------------------------------------- writing


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def write_normals(ds: xr.Dataset, out: str, *, client: Any, progress: bool | None = None,
                  overwrite: bool = False) -> dict[str, Any]:
    """Compute ``ds`` (from :func:`normals`) on the distributed ``client`` and write it to
    ``out``: ``.nc`` -> NetCDF-4 (computed, then written here), anything else -> a Zarr v3
    store (written by the workers). Written to a temporary sibling and renamed, so a failure
    leaves nothing. Returns a summary."""
    import dask

    from zarrport.analysis.cluster import compute

    if os.path.lexists(out) and not overwrite:
        raise OutputExistsError(f"{out} exists; remove it, choose another output or pass "
                                "--overwrite", source=out)
    variable = next(str(v) for v in ds.data_vars if v not in ("count", "climatology_bounds"))
    parent = os.path.dirname(os.path.abspath(out))
    made = None if os.path.isdir(parent) else parent
    os.makedirs(parent, exist_ok=True)  # (removed again if the computation fails)
    tmp = os.path.join(parent, f".{os.path.basename(out)}.partial-{os.getpid()}")
    _remove(tmp)
    t0 = _time.perf_counter()
    var = ds[variable].data
    try:
        if out.endswith((".nc", ".nc4")):
            done = compute(client, ds, label="normals", progress=progress)
            done.to_netcdf(tmp, engine="netcdf4")
            vals = done[variable].values
            lo, hi = (float(np.nanmin(vals)), float(np.nanmax(vals))) if np.isfinite(
                vals).any() else (None, None)
        else:
            import dask.array as dsa

            delayed = ds.to_zarr(tmp, mode="w-", zarr_format=3, consolidated=False,
                                 compute=False)
            lo, hi = compute(client, dask.delayed(list)([delayed, dsa.nanmin(var),
                                                         dsa.nanmax(var)]),
                             label="normals", progress=progress)[1:]
            lo, hi = (None, None) if np.isnan(lo) else (float(lo), float(hi))
        if os.path.lexists(out):
            _remove(out)
        os.replace(tmp, out)
    except BaseException:
        _remove(tmp)  # nothing half written
        if made:
            with contextlib.suppress(OSError):
                os.removedirs(made)
        raise
    firsts, lasts = ds["first_year"].values, ds["last_year"].values
    wins = sorted({(int(f), int(la)) for f, la in zip(firsts, lasts, strict=True)})
    return {
        "output": out,
        "variable": variable,
        "freq": ds.attrs.get("normals_freq"),
        "window": ds.attrs.get("normals_window"),
        "windows": [list(w) for w in wins],
        "periods": len(ds["time"]) // max(1, len(wins)),
        "shape": dict(ds[variable].sizes),
        "units": ds[variable].attrs.get("units"),
        "seconds": round(_time.perf_counter() - t0, 3),
        "cluster": client.zarrport_info.to_dict() if hasattr(client, "zarrport_info")
        else None,
        "value_range": [lo, hi],
    }


# ------------------------------------------------------------------------------- plotting


def plot_normals(ds: xr.Dataset, png: str, *, variable: str | None = None,
                 change: tuple[int, int] | None = None) -> str:
    """A PNG: the map of the first window's normal and, with two windows or more, the change
    from the first window to the last (or between the windows starting in
    ``change = (y1, y2)``), for the same period: the first with values in both windows.
    Returns ``png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zarrport.analysis.presets import lat_lon

    if variable is None:
        variable = next(str(v) for v in ds.data_vars
                        if v not in ("count", "climatology_bounds"))
    if variable not in ds.data_vars:
        raise InvalidArgumentError(f"no variable {variable!r} to plot")
    da = ds[variable]
    lat, lon = lat_lon(ds)
    firsts = ds["first_year"].values.astype(int)
    lasts = ds["last_year"].values.astype(int)
    order = sorted(set(firsts.tolist()))
    if change is not None:
        for y in change:
            if y not in order:
                raise InvalidArgumentError(f"no window starts in {y} (windows start in "
                                           f"{order[0]}..{order[-1]})")
        y1, y2 = change
    else:
        y1, y2 = order[0], order[-1]
    # the first period with values in both windows (a first DJF without the December
    # before the record is empty: a blank map says nothing)
    periods = list(dict.fromkeys(ds["period"].values.tolist()))
    for period0 in periods:
        same = ds["period"].values == period0
        i1 = int(np.flatnonzero(same & (firsts == y1))[0])
        i2 = int(np.flatnonzero(same & (firsts == y2))[0])
        if bool(da.isel(time=i1).notnull().any()) and bool(
                da.isel(time=i2).notnull().any()):
            break
    else:
        period0 = periods[0]
        same = ds["period"].values == period0
        i1 = int(np.flatnonzero(same & (firsts == y1))[0])
        i2 = int(np.flatnonzero(same & (firsts == y2))[0])
    units = da.attrs.get("units", "")
    if ds.attrs.get("normals_freq") == "annual" or period0 == "ANN":
        label = ""
    elif isinstance(period0, (int, np.integer)):  # a month
        label = f" ({_MONTHS[int(period0) - 1]})"
    else:
        label = f" ({period0})"

    def window(i: int) -> str:
        return f"{firsts[i]}-{lasts[i]}"

    base = da.isel(time=i1).compute()
    panels = [(base, f"{variable} normal {window(i1)}{label}", "viridis", None)]
    if y1 != y2:
        diff = (da.isel(time=i2) - da.isel(time=i1)).compute()
        m = float(np.nanmax(np.abs(diff.values))) if np.isfinite(diff.values).any() else 1
        panels.append((diff, f"change {window(i2)} minus {window(i1)}{label}", "RdBu_r",
                       m or 1.0))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.2),
                             squeeze=False)
    for ax, (field, title, cmap, sym) in zip(axes[0], panels, strict=True):
        # rows along latitude, columns along longitude (1-D), or the 2-D grid's own order
        order = (*ds[lat].dims, *[d for d in ds[lon].dims if d not in ds[lat].dims])
        values = field.squeeze().transpose(*order).values
        kw = {"vmin": -sym, "vmax": sym} if sym else {}
        mesh = ax.pcolormesh(ds[lon].values, ds[lat].values, values, cmap=cmap,
                             shading="auto", **kw)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("longitude (degrees east)")
        ax.set_ylabel("latitude (degrees north)")
        fig.colorbar(mesh, ax=ax, label=units, shrink=0.85)
    fig.tight_layout()
    tmp = png + ".partial.png"
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, png)
    finally:
        plt.close(fig)
        _remove(tmp)
    return png
