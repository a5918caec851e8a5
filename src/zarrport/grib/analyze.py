"""Ensemble exceedance probabilities: "probability that 24-hour rain exceeds 50 mm".

:func:`exceedance` opens a repository of forecast cycles (or takes a Dataset), cuts the
box out first, takes each window's accumulation from the accumulated-from-start variable
(``acc(s) - acc(s - window)``), and returns the percentage of members above the threshold,
per init time, step (the window's end), latitude and longitude -- all lazily with Dask, so
only the messages of the variable and of the steps the windows need are read.

Members whose value is missing (a member file absent from the cycle) do not count: the
probability is over the members present, and ``members`` gives how many that was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from zarrport.errors import InvalidArgumentError

#: precipitation-like units, as millimetres of water
_TO_MM = {"mm": 1.0, "kg m-2": 1.0, "kg m**-2": 1.0, "kg/m2": 1.0, "m": 1000.0,
          "cm": 10.0, "m of water equivalent": 1000.0}


@dataclass(frozen=True)
class Threshold:
    value: float
    units: str | None

    def in_units(self, units: str | None, var: str) -> float:
        if self.units is None or units is None:
            return self.value
        a, b = _TO_MM.get(self.units), _TO_MM.get(units)
        if a is None or b is None:
            if self.units == units:
                return self.value
            raise InvalidArgumentError(
                f"threshold in {self.units!r} but {var} is in {units!r}: give the threshold "
                f"in {units!r}")
        return self.value * a / b


def parse_threshold(text: str) -> Threshold:
    m = re.fullmatch(r"\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*([A-Za-z].*)?", str(text))
    if not m:
        raise InvalidArgumentError(f"threshold {text!r} is not a number with optional units "
                                   "(e.g. 50mm, 0.05m, 273.15K)")
    units = (m.group(2) or "").strip() or None
    return Threshold(float(m.group(1)), units)


def parse_window(text: str) -> np.timedelta64:
    m = re.fullmatch(r"\s*(\d+)\s*(h|hours?|d|days?)\s*", str(text))
    if not m or int(m.group(1)) <= 0:
        raise InvalidArgumentError(f"window {text!r} is not a duration like 24h or 2d")
    hours = int(m.group(1)) * (24 if m.group(2).startswith("d") else 1)
    return np.timedelta64(hours, "h").astype("m8[s]")


def parse_bbox(text: str | tuple[float, ...] | None) -> tuple[float, float, float, float] | None:
    from zarrport.analysis.presets import parse_box

    return parse_box(text)


def select_box(ds: xr.Dataset | xr.DataArray, bbox: tuple[float, float, float, float] | None
               ) -> Any:
    """The box out of a regular (latitude increasing, longitude -180..180) grid; a box
    across the antimeridian (W > E) is two pieces joined."""
    if bbox is None:
        return ds
    w, s, e, n = bbox
    w, e = ((w + 180) % 360) - 180, ((e + 180) % 360) - 180 if e != 180 else 180.0
    if "latitude" not in ds.dims or "longitude" not in ds.dims:
        raise InvalidArgumentError("--bbox needs a regular latitude/longitude grid")
    out = ds.sel(latitude=slice(s, n))
    if w <= e:
        out = out.sel(longitude=slice(w, e))
    else:
        out = xr.concat([out.sel(longitude=slice(w, 180)), out.sel(longitude=slice(-180, e))],
                        dim="longitude")
    if out.sizes["latitude"] == 0 or out.sizes["longitude"] == 0:
        raise InvalidArgumentError(f"bbox {bbox} holds no grid point")
    return out


def window_sums(acc: xr.DataArray, window: np.timedelta64) -> xr.DataArray:
    """``acc(s) - acc(s - window)`` for every step whose window start is available
    (step 0 counts as zero accumulation)."""
    steps = acc["step"].values.astype("m8[s]")
    index = {s: i for i, s in enumerate(steps)}
    zero = np.timedelta64(0, "s")
    pieces = []
    for i, s in enumerate(steps):
        start = s - window
        if start < zero:
            continue
        end = acc.isel(step=i)
        if start == zero and start not in index:
            pieces.append(end)
        elif start in index:
            pieces.append(end - acc.isel(step=index[start]).drop_vars("step"))
    if not pieces:
        hour = np.timedelta64(1, "h")
        listed = ", ".join(f"{x / hour:g}h" for x in steps)
        raise InvalidArgumentError(
            f"no two steps are {window / hour:g} h apart (steps: {listed})")
    return xr.concat(pieces, dim="step").transpose(*acc.dims)


def exceedance(source: str | xr.Dataset, var: str = "tp", window: str = "24h",
               threshold: str = "50mm", bbox: Any = None, *,
               storage_options: dict | None = None) -> xr.Dataset:
    """Percentage of ensemble members whose ``window`` accumulation of ``var`` exceeds
    ``threshold``, per init time, window end (``step``) and grid point (lazy)."""
    if isinstance(source, xr.Dataset):
        ds = source
    else:
        from zarrport.open import open_dataset

        ds = open_dataset(source, storage_options=storage_options)
    if var not in ds:
        raise InvalidArgumentError(
            f"no variable {var!r} (variables: {', '.join(map(str, ds.data_vars))})")
    if "member" not in ds[var].dims or "step" not in ds[var].dims:
        raise InvalidArgumentError(f"{var} has no member and step dimensions")
    win = parse_window(window)
    thr = parse_threshold(threshold)
    acc = select_box(ds[var], parse_bbox(bbox))
    limit = thr.in_units(acc.attrs.get("units"), var)
    sums = window_sums(acc, win)
    valid = sums.notnull()
    above = (sums > limit).where(valid)
    members = valid.sum("member")
    prob = (above.sum("member") / members.where(members > 0) * 100.0).astype(np.float32)
    hours = win / np.timedelta64(1, "h")
    prob.attrs = {
        "long_name": f"probability that the {hours:g}-hour {acc.attrs.get('long_name', var)} "
                     f"exceeds {thr.value:g} {thr.units or acc.attrs.get('units', '')}".strip(),
        "units": "%", "window_hours": hours, "threshold": limit,
        "threshold_units": str(acc.attrs.get("units", "")),
        "step_meaning": "end of the window",
    }
    out = xr.Dataset({"probability": prob, "members": members.astype(np.int16)})
    out["members"].attrs = {"long_name": "ensemble members with data in the window"}
    out.attrs = {"source_variable": var, "window": f"{hours:g}h",
                 "threshold": f"{thr.value:g}{thr.units or ''}",
                 "bbox": "" if bbox is None else ",".join(f"{v:g}" for v in parse_bbox(bbox)),
                 "history": "zarrport analyze exceedance"}
    return out


def summarize(result: xr.Dataset) -> dict[str, Any]:
    """Per init time and window end: the highest probability and the share of grid points
    at or above 50 % (the text summary and ``--json``)."""
    prob = result["probability"]
    rows = []
    for it in prob["init_time"].values:
        for st in prob["step"].values:
            p = prob.sel(init_time=it, step=st).values
            finite = p[np.isfinite(p)]
            rows.append({
                "init_time": str(np.datetime64(it, "m")),
                "step_hours": float(st / np.timedelta64(1, "h")),
                "max_percent": float(finite.max()) if finite.size else None,
                "mean_percent": round(float(finite.mean()), 2) if finite.size else None,
                "points_ge_50_percent": int((finite >= 50).sum()),
                "points": int(finite.size),
            })
    return {"variable": result.attrs.get("source_variable"),
            "window": result.attrs.get("window"), "threshold": result.attrs.get("threshold"),
            "bbox": result.attrs.get("bbox"),
            "grid": {k: int(v) for k, v in prob.sizes.items() if k in ("latitude",
                                                                         "longitude")},
            "members": int(result["members"].max()) if result["members"].size else 0,
            "windows": rows}


def report(summary: dict[str, Any], computed: xr.Dataset, out: str | None = None) -> str:
    """The text summary: a row per init time and window end, then the last window's map."""
    var = summary["variable"]
    lines = [
        f"P({summary['window']} {var} > {summary['threshold']}) over {summary['members']} "
        f"members, box {summary['bbox'] or 'whole grid'} ({summary['grid'].get('latitude')} x "
        f"{summary['grid'].get('longitude')} points)" + (f" -> {out}" if out else ""),
        f"{'init':<17} {'window end':>10} {'max %':>7} {'mean %':>7} {'>=50 %':>8}",
    ]
    for row in summary["windows"]:
        mx = "-" if row["max_percent"] is None else f"{row['max_percent']:.0f}"
        mean = "-" if row["mean_percent"] is None else f"{row['mean_percent']:.1f}"
        lines.append(f"{row['init_time']:<17} {row['step_hours']:>9g}h {mx:>7} {mean:>7} "
                     f"{row['points_ge_50_percent']:>4}/{row['points']}")
    lines.append("last window, north up (' ' 0%  . <25  : <50  o <75  O <100  # 100%):")
    lines.append(render_map(computed))
    return "\n".join(lines)


def render_map(result: xr.Dataset, init_index: int = -1, step_index: int = -1,
               width: int = 60) -> str:
    """A character map of one window's probability (north up): ' ' 0 %, '.' <25, ':' <50,
    'o' <75, 'O' <100, '#' 100 %."""
    prob = result["probability"].isel(init_time=init_index, step=step_index).values
    ny, nx = prob.shape
    stride = max(1, int(np.ceil(nx / width)))
    rows = []
    for j in range(ny - 1, -1, -stride):
        line = []
        for i in range(0, nx, stride):
            v = prob[j, i]
            line.append("?" if not np.isfinite(v) else " " if v <= 0 else "." if v < 25
                        else ":" if v < 50 else "o" if v < 75 else "O" if v < 100 else "#")
        rows.append("|" + "".join(line) + "|")
    edge = "+" + "-" * (len(rows[0]) - 2) + "+" if rows else ""
    return "\n".join([edge, *rows, edge])


def compute(result: xr.Dataset) -> xr.Dataset:
    """``result.compute()``, with Icechunk's refusals as one-line zarrport errors: a source
    rewritten since it was referenced (Icechunk checks its ETag / modification time) is
    named, never read."""
    import icechunk

    from zarrport.errors import StorageError, VerificationError

    try:
        return result.compute()
    except icechunk.IcechunkError as e:
        text = str(e)
        # Icechunk names the changed source on one line (checked with icechunk 2.3.0);
        # a URL holds no whitespace or "|", so stripping them is harmless
        m = re.search(r"has changed \(([^)]*)\)", text)
        if m:
            url = re.sub(r"[\s|]+", "", m.group(1))
            raise VerificationError(
                f"{url} changed after it was referenced; ingest its cycle again into a new "
                "repository (or restore the file)", source=url) from None
        lines = [ln.strip(" |`->x") for ln in text.splitlines() if ln.strip(" |")]
        why = lines[0] if lines else type(e).__name__
        raise StorageError(f"reading the repository failed: {why}") from None


def write(result: xr.Dataset, out: str) -> xr.Dataset:
    """Compute and write the result (``.nc``: NetCDF-4, anything else: Zarr v3), atomically;
    returns the computed result."""
    import os

    from zarrport.errors import OutputExistsError

    if os.path.exists(out):
        raise OutputExistsError(f"{out} exists; remove it or choose another output",
                                source=out)
    computed = compute(result)
    tmp = out + ".partial"
    try:
        if out.endswith(".nc"):
            computed.to_netcdf(tmp)
        else:
            computed.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)
        os.replace(tmp, out)
    except BaseException:
        # nothing half written: the partial output goes
        import shutil

        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
        raise
    return computed
