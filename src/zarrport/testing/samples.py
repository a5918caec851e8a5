"""Deterministic synthetic CMIP6-like NetCDF-4 archives.

Used by ``make demo``, the tests and the benchmarks. Every file is written with
netCDF4-python (the reference writer, so the bytes on disk are what real CMIP6 files look
like to HDF5 readers) and follows the CMIP6 data-request layout of a daily near-surface
variable::

    dimensions:  time = UNLIMITED, lat, lon, bnds = 2
    variables:   double time(time)            "days since 1850-01-01", calendar, bounds
                 double time_bnds(time, bnds)
                 double lat(lat), lat_bnds(lat, bnds), lon(lon), lon_bnds(lon, bnds)
                 double height                 0-d, 2.0 m (near-surface temperatures only)
                 float  tas(time, lat, lon)    _FillValue = missing_value = 1e20

The values are a smooth field (latitude gradient, seasonal cycle, a planetary wave) plus
noise, drawn from a generator seeded by ``(seed, year)``: the same arguments always give the
same bytes, and a multi-year file holds exactly the concatenation of the one-year files.
A fraction of points is set to the fill value so readers' masking is exercised.

Public functions:

- :func:`write_cmip6_year` -- one file, one year of daily data.
- :func:`write_cmip6_span` -- one file holding several consecutive years (large chunk counts).
- :func:`write_cmip6_archive` -- one file per year, CMIP6 file names.
- :func:`cmip6_filename` -- the CMIP6 file name for a variable and a span of years.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cftime

from zarrport.hdf5 import use_hdf5_plugins

use_hdf5_plugins()  # before netCDF4's HDF5 starts

import netCDF4  # noqa: E402
import numpy as np  # noqa: E402

__all__ = [
    "FILL_VALUE",
    "VARIABLES",
    "cmip6_filename",
    "days_in_year",
    "write_cmip6_archive",
    "write_cmip6_span",
    "write_cmip6_year",
]

#: CMIP6's ``_FillValue`` and ``missing_value`` for float32 data variables.
FILL_VALUE = np.float32(1.0e20)

_CALENDARS = {
    "noleap",
    "365_day",
    "360_day",
    "all_leap",
    "366_day",
    "standard",
    "gregorian",
    "proleptic_gregorian",
    "julian",
}
_COMPRESSIONS = {"zlib", None}
#: Fixed so that files are byte-for-byte reproducible.
_CREATION_DATE = "2019-06-15T12:00:00Z"


@dataclass(frozen=True)
class _VariableSpec:
    standard_name: str
    long_name: str
    units: str
    cell_methods: str
    near_surface: bool  # carries the 0-d ``height`` coordinate
    mean: float  # global mean of the smooth field
    equator_to_pole: float  # drop from equator to pole
    seasonal: float  # amplitude of the seasonal cycle (hemisphere-antisymmetric)
    wave: float  # amplitude of the planetary wave
    noise: float  # standard deviation of the day-to-day noise
    floor: float | None  # values are clipped below at this (precipitation >= 0)


#: Variables :func:`write_cmip6_year` knows, with their CMIP6 ``day`` table metadata.
VARIABLES: dict[str, _VariableSpec] = {
    "tas": _VariableSpec(
        "air_temperature", "Near-Surface Air Temperature", "K", "area: mean time: mean",
        True, 288.0, 45.0, 12.0, 3.0, 2.0, None,
    ),
    "tasmax": _VariableSpec(
        "air_temperature", "Daily Maximum Near-Surface Air Temperature", "K",
        "area: mean time: maximum", True, 294.0, 45.0, 13.0, 3.0, 2.5, None,
    ),
    "tasmin": _VariableSpec(
        "air_temperature", "Daily Minimum Near-Surface Air Temperature", "K",
        "area: mean time: minimum", True, 282.0, 45.0, 11.0, 3.0, 2.5, None,
    ),
    "pr": _VariableSpec(
        "precipitation_flux", "Precipitation", "kg m-2 s-1", "area: time: mean",
        False, 3.0e-5, 2.0e-5, 1.0e-5, 1.0e-5, 2.0e-5, 0.0,
    ),
}


# --------------------------------------------------------------------------------------------
# calendar helpers


def _check_calendar(calendar: str) -> None:
    if calendar not in _CALENDARS:
        raise ValueError(f"unknown calendar {calendar!r}; expected one of {sorted(_CALENDARS)}")


def _day_offset(year: int, calendar: str, units: str) -> float:
    """Days from the units' origin to 1 January of ``year``."""
    return float(cftime.date2num(cftime.datetime(year, 1, 1, calendar=calendar), units, calendar))


def days_in_year(year: int, calendar: str = "noleap") -> int:
    """Number of days of ``year`` in ``calendar`` (365 noleap, 360 360_day, 365/366 standard)."""
    _check_calendar(calendar)
    units = "days since 0001-01-01"
    return round(_day_offset(year + 1, calendar, units) - _day_offset(year, calendar, units))


def _last_day(year: int, calendar: str) -> str:
    """``YYYYMMDD`` of the last day of ``year`` (``YYYY1230`` in the 360-day calendar)."""
    units = "days since 0001-01-01"
    last = cftime.num2date(_day_offset(year + 1, calendar, units) - 1, units, calendar)
    return f"{last.year:04d}{last.month:02d}{last.day:02d}"


def cmip6_filename(
    variable: str = "tas",
    first_year: int = 2015,
    last_year: int | None = None,
    *,
    calendar: str = "noleap",
    source_id: str = "ZP-SAMPLE",
    experiment_id: str = "ssp245",
    variant_label: str = "r1i1p1f1",
    grid_label: str = "gn",
) -> str:
    """CMIP6 file name, e.g. ``tas_day_ZP-SAMPLE_ssp245_r1i1p1f1_gn_20150101-20151231.nc``."""
    _check_calendar(calendar)
    last_year = first_year if last_year is None else last_year
    span = f"{first_year:04d}0101-{_last_day(last_year, calendar)}"
    return f"{variable}_day_{source_id}_{experiment_id}_{variant_label}_{grid_label}_{span}.nc"


# --------------------------------------------------------------------------------------------
# values


def _grid(nlat: int, nlon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Regular global grid: cell centres and bounds (lat -90..90, lon 0..360)."""
    lat_edges = np.linspace(-90.0, 90.0, nlat + 1)
    lon_edges = np.linspace(0.0, 360.0, nlon + 1)
    lat = 0.5 * (lat_edges[:-1] + lat_edges[1:])
    lon = 0.5 * (lon_edges[:-1] + lon_edges[1:])
    lat_bnds = np.stack([lat_edges[:-1], lat_edges[1:]], axis=1)
    lon_bnds = np.stack([lon_edges[:-1], lon_edges[1:]], axis=1)
    return lat, lat_bnds, lon, lon_bnds


def _year_values(
    spec: _VariableSpec,
    year: int,
    ndays: int,
    lat: np.ndarray,
    lon: np.ndarray,
    *,
    seed: int,
    fill_fraction: float,
) -> np.ndarray:
    """One year of float32 values, shape ``(ndays, nlat, nlon)``, fill points set to 1e20."""
    rng = np.random.default_rng([seed, year])
    phi = np.deg2rad(lat)[None, :, None]
    lam = np.deg2rad(lon)[None, None, :]
    doy = (np.arange(ndays, dtype=np.float64) + 0.5)[:, None, None]
    season = np.cos(2.0 * np.pi * (doy - 0.55 * ndays) / ndays)  # NH summer near day 200
    drift = 0.02 * (year - 2015)  # a gentle warming trend, so years differ smoothly
    field = (
        spec.mean
        + drift * (spec.equator_to_pole / 45.0)
        + spec.equator_to_pole * (1.0 / 3.0 - np.sin(phi) ** 2)
        + spec.seasonal * np.sin(phi) * season
        + spec.wave * np.cos(phi) * np.cos(3.0 * lam + 2.0 * np.pi * doy / ndays)
    )
    values = field + spec.noise * rng.standard_normal((ndays, lat.size, lon.size))
    if spec.floor is not None:
        np.maximum(values, spec.floor, out=values)
    values = values.astype(np.float32)

    if fill_fraction > 0.0:
        mask = rng.random(values.shape) < fill_fraction
        if not mask.any() and values.size:
            mask.flat[int(rng.integers(values.size))] = True
        values[mask] = FILL_VALUE
    return values


def _tracking_id(*parts: object) -> str:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return f"hdl:21.14100/{uuid.UUID(digest[:32])}"


# --------------------------------------------------------------------------------------------
# writers


def write_cmip6_span(
    path: str | os.PathLike[str],
    years: Iterable[int],
    *,
    variable: str = "tas",
    nlat: int = 32,
    nlon: int = 64,
    time_chunk: int = 1,
    lat_chunk: int | None = None,
    lon_chunk: int | None = None,
    compression: str | None = "zlib",
    complevel: int = 4,
    contiguous: bool = False,
    fill_fraction: float = 0.01,
    calendar: str = "noleap",
    units_since: str = "1850-01-01",
    seed: int = 42,
    source_id: str = "ZP-SAMPLE",
    experiment_id: str = "ssp245",
    variant_label: str = "r1i1p1f1",
) -> Path:
    """Write one CMIP6-like file holding consecutive ``years`` of daily data.

    The data variable is chunked ``(time_chunk, lat_chunk or nlat, lon_chunk or nlon)``
    (chunk sizes are clipped to the dimension lengths) and compressed with zlib level
    ``complevel`` + shuffle, or not compressed (``compression=None``). ``contiguous=True``
    stores every variable contiguously and uncompressed (``compression`` is then ignored and
    ``time`` is a fixed-size dimension, as HDF5 cannot store unlimited dimensions
    contiguously); otherwise ``time`` is unlimited as in CMIP6 files.

    The file is written next to ``path`` and renamed into place, so a file that exists is
    complete. Returns ``path`` as a :class:`~pathlib.Path`.
    """
    years = list(years)
    if not years:
        raise ValueError("years is empty")
    if years != list(range(years[0], years[0] + len(years))):
        raise ValueError(f"years must be consecutive and increasing, got {years}")
    if variable not in VARIABLES:
        raise ValueError(f"unknown variable {variable!r}; expected one of {sorted(VARIABLES)}")
    if compression not in _COMPRESSIONS:
        raise ValueError(f"compression must be 'zlib' or None, got {compression!r}")
    if nlat < 1 or nlon < 1:
        raise ValueError(f"grid must be at least 1x1, got {nlat}x{nlon}")
    if not 0.0 <= fill_fraction < 1.0:
        raise ValueError(f"fill_fraction must be in [0, 1), got {fill_fraction}")
    for name, size in (("time_chunk", time_chunk), ("lat_chunk", lat_chunk),
                       ("lon_chunk", lon_chunk)):
        if size is not None and size < 1:
            raise ValueError(f"{name} must be >= 1, got {size}")
    _check_calendar(calendar)
    spec = VARIABLES[variable]

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    units = f"days since {units_since}"
    ndays = [days_in_year(y, calendar) for y in years]
    ntime = sum(ndays)
    lat, lat_bnds, lon, lon_bnds = _grid(nlat, nlon)

    chunks = (min(time_chunk, ntime), min(lat_chunk or nlat, nlat), min(lon_chunk or nlon, nlon))
    if contiguous:
        layout: dict[str, object] = {"contiguous": True}
        coord_layout: dict[str, object] = {"contiguous": True}
        bnds_layout: dict[str, object] = {"contiguous": True}
    else:
        layout = {"chunksizes": chunks}
        if compression == "zlib":
            layout.update(compression="zlib", complevel=complevel, shuffle=True)
        # time is unlimited, so its variables must be chunked: the coordinate in one chunk,
        # the bounds like the data variable along time (as CMOR writes them).
        coord_layout = {"chunksizes": (ntime,)}
        bnds_layout = {"chunksizes": (chunks[0], 2)}

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
            nc.createDimension("time", ntime if contiguous else None)
            nc.createDimension("lat", nlat)
            nc.createDimension("lon", nlon)
            nc.createDimension("bnds", 2)

            time = nc.createVariable("time", "f8", ("time",), **coord_layout)
            time.setncatts({
                "bounds": "time_bnds", "units": units, "calendar": calendar, "axis": "T",
                "long_name": "time", "standard_name": "time",
            })
            time_bnds = nc.createVariable("time_bnds", "f8", ("time", "bnds"), **bnds_layout)

            v = nc.createVariable("lat", "f8", ("lat",))
            v.setncatts({
                "bounds": "lat_bnds", "units": "degrees_north", "axis": "Y",
                "long_name": "Latitude", "standard_name": "latitude",
            })
            v[:] = lat
            nc.createVariable("lat_bnds", "f8", ("lat", "bnds"))[:] = lat_bnds
            v = nc.createVariable("lon", "f8", ("lon",))
            v.setncatts({
                "bounds": "lon_bnds", "units": "degrees_east", "axis": "X",
                "long_name": "Longitude", "standard_name": "longitude",
            })
            v[:] = lon
            nc.createVariable("lon_bnds", "f8", ("lon", "bnds"))[:] = lon_bnds
            if spec.near_surface:
                v = nc.createVariable("height", "f8", ())
                v.setncatts({
                    "units": "m", "axis": "Z", "positive": "up", "long_name": "height",
                    "standard_name": "height",
                })
                v.assignValue(2.0)

            data = nc.createVariable(
                variable, "f4", ("time", "lat", "lon"), fill_value=FILL_VALUE, **layout
            )
            attrs: dict[str, object] = {
                "standard_name": spec.standard_name,
                "long_name": spec.long_name,
                "comment": "synthetic values from zarrport.testing.samples (not model output)",
                "units": spec.units,
                "cell_methods": spec.cell_methods,
                "cell_measures": "area: areacella",
                "history": f"{_CREATION_DATE} altered by CMOR: replaced missing value flag.",
                "missing_value": FILL_VALUE,
            }
            if spec.near_surface:
                attrs["coordinates"] = "height"
            data.setncatts(attrs)
            data.set_auto_maskandscale(False)  # write 1e20 as is; fill points are raw values

            start = 0
            for year, n in zip(years, ndays, strict=True):
                offset = _day_offset(year, calendar, units)
                day = offset + np.arange(n, dtype=np.float64)
                time[start:start + n] = day + 0.5
                time_bnds[start:start + n, :] = np.stack([day, day + 1.0], axis=1)
                data[start:start + n, :, :] = _year_values(
                    spec, year, n, lat, lon, seed=seed, fill_fraction=fill_fraction
                )
                start += n

            nc.setncatts(_global_attrs(
                variable, years, calendar, nlat, nlon, seed,
                source_id=source_id, experiment_id=experiment_id, variant_label=variant_label,
            ))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_cmip6_year(
    path: str | os.PathLike[str],
    year: int,
    *,
    variable: str = "tas",
    nlat: int = 32,
    nlon: int = 64,
    time_chunk: int = 1,
    lat_chunk: int | None = None,
    lon_chunk: int | None = None,
    compression: str | None = "zlib",
    complevel: int = 4,
    contiguous: bool = False,
    fill_fraction: float = 0.01,
    calendar: str = "noleap",
    units_since: str = "1850-01-01",
    seed: int = 42,
    source_id: str = "ZP-SAMPLE",
    experiment_id: str = "ssp245",
    variant_label: str = "r1i1p1f1",
) -> Path:
    """Write one year of daily CMIP6-like data to ``path`` (see :func:`write_cmip6_span`).

    365 days in ``noleap``, 360 in ``360_day``, 365 or 366 in ``standard`` /
    ``proleptic_gregorian``. Values depend only on ``seed``, ``year``, the variable and the
    grid, never on the chunking or compression.
    """
    return write_cmip6_span(
        path, [year], variable=variable, nlat=nlat, nlon=nlon, time_chunk=time_chunk,
        lat_chunk=lat_chunk, lon_chunk=lon_chunk, compression=compression,
        complevel=complevel, contiguous=contiguous, fill_fraction=fill_fraction,
        calendar=calendar, units_since=units_since, seed=seed, source_id=source_id,
        experiment_id=experiment_id, variant_label=variant_label,
    )


def write_cmip6_archive(
    directory: str | os.PathLike[str],
    *,
    years: Iterable[int] = range(2015, 2018),
    overwrite: bool = True,
    **kw: object,
) -> list[Path]:
    """Write one file per year into ``directory`` under CMIP6 file names.

    ``kw`` is passed to :func:`write_cmip6_year` (variable, grid, chunking, calendar, seed,
    source/experiment/variant ids). With ``overwrite=False`` files that already exist are
    kept (writes are atomic, so an existing file is complete). Returns the paths in year
    order.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name_kw = {k: kw[k] for k in ("variable", "calendar", "source_id", "experiment_id",
                                  "variant_label") if k in kw}
    paths = []
    for year in years:
        path = directory / cmip6_filename(first_year=year, **name_kw)  # type: ignore[arg-type]
        if overwrite or not path.exists():
            write_cmip6_year(path, year, **kw)  # type: ignore[arg-type]
        paths.append(path)
    return paths


def _global_attrs(
    variable: str,
    years: Sequence[int],
    calendar: str,
    nlat: int,
    nlon: int,
    seed: int,
    *,
    source_id: str,
    experiment_id: str,
    variant_label: str,
) -> dict[str, object]:
    resolution = 180.0 / nlat
    nominal = "100 km" if resolution <= 1.5 else "250 km" if resolution <= 3.5 else "500 km"
    return {
        "Conventions": "CF-1.7 CMIP-6.2",
        "activity_id": "ScenarioMIP",
        "branch_method": "standard",
        "calendar": calendar,
        "contact": "zarrport developers",
        "creation_date": _CREATION_DATE,
        "data_specs_version": "01.00.30",
        "experiment": "update of RCP4.5 based on SSP2",
        "experiment_id": experiment_id,
        "forcing_index": np.int32(1),
        "frequency": "day",
        "further_info_url": f"https://furtherinfo.es-doc.org/CMIP6.ZP.{source_id}."
                            f"{experiment_id}.none.{variant_label}",
        "grid": f"synthetic regular lat-lon grid, {nlat} x {nlon}",
        "grid_label": "gn",
        "initialization_index": np.int32(1),
        "institution": "zarrport synthetic samples",
        "institution_id": "ZP",
        "license": "CC BY 4.0; synthetic data, not model output.",
        "mip_era": "CMIP6",
        "nominal_resolution": nominal,
        "parent_activity_id": "CMIP",
        "parent_experiment_id": "historical",
        "physics_index": np.int32(1),
        "product": "model-output",
        "realization_index": np.int32(1),
        "realm": "atmos",
        "source": f"{source_id}: deterministic synthetic field (seed {seed})",
        "source_id": source_id,
        "source_type": "AGCM",
        "sub_experiment": "none",
        "sub_experiment_id": "none",
        "table_id": "day",
        "table_info": "Creation Date:(15 June 2019) MD5:synthetic",
        "title": f"{source_id} output prepared for CMIP6 (synthetic sample)",
        "tracking_id": _tracking_id(variable, years[0], years[-1], calendar, nlat, nlon, seed,
                                    source_id, experiment_id, variant_label),
        "variable_id": variable,
        "variant_label": variant_label,
    }
