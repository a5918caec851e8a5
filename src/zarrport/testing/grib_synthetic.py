"""Deterministic synthetic ensemble forecast cycles, in NOAA GEFS and ECMWF open-data layouts.

Tests, ``make demo`` and the benchmarks need GRIB2 archives that look like the real ones to a
reader -- directory layout, file names, sidecar indexes, GRIB2 keys -- but are small and made
on the spot. Every message is encoded by ecCodes from its bundled ``regular_ll_sfc_grib2``
sample; the values come from a numpy generator seeded by ``seed``, so the same arguments
always give the same fields (and, for a given ecCodes, the same bytes).

**NOAA GEFS** (:func:`make_gefs_cycle`), one file per member and step, with a wgrib2
inventory beside it (same name + ``.idx``)::

    gefs.YYYYMMDD/HH/atmos/pgrb2sp25/gec00.tHHz.pgrb2s.0p25.fFFF      control (member 0)
    gefs.YYYYMMDD/HH/atmos/pgrb2sp25/gepNN.tHHz.pgrb2s.0p25.fFFF      perturbed member NN
    1:0:d=2025010100:APCP:surface:6-9 hour acc fcst:ENS=+1
    2:5534:d=2025010100:TMP:2 m above ground:9 hour fcst:ENS=+1

- centre 7 (kwbc), sub-centre 2 (NCEP ensemble products), GRIB master tables 2, generating
  process 107, shape of the earth 6; product template 4.1 (instantaneous) / 4.11
  (accumulation); ``typeOfEnsembleForecast`` 1 with ``perturbationNumber`` 0 for the
  control (wgrib2: ``ENS=low-res ctl``), 3 with the member number for the others
  (``ENS=+N``); ``typeOfProcessedData`` 3 (control) / 4 (perturbed);
  ``numberOfForecastsInEnsemble`` is the number of perturbed members, as GEFS writes 30 for
  its 31 members.
- Grid: regular lat/lon, latitudes north to south (``jScansPositively=0``), longitudes
  eastward in 0..360 (a global grid starts at 0, so readers must roll it to -180..180).
- ``APCP:surface`` (kg m-2) in GEFS's **alternating buckets**: the window of step ``s`` starts
  at the largest multiple of 6 below ``s`` (``0-3``, ``0-6``, ``6-9``, ``6-12``, ``12-15`` ...),
  encoded as ``forecastTime`` = window start, ``lengthOfTimeRange`` = window length, so
  ecCodes reads ``stepRange`` ``"6-9"``. There is no APCP at step 0.
- ``TMP:2 m above ground`` (K) at every step; wgrib2 writes step 0 as ``anl``.

**ECMWF open data ENS** (:func:`make_ecmwf_cycle`), one file per step holding every member,
with an ``.index`` of JSON lines beside it (``.grib2`` replaced by ``.index``)::

    YYYYMMDD/HHz/ifs/0p25/enfo/YYYYMMDDHH0000-{step}h-enfo-ef.grib2
    {"domain": "g", "date": "20250101", "time": "0000", "expver": "0001", "class": "od",
     "type": "pf", "stream": "enfo", "step": "12", "levtype": "sfc", "number": "1",
     "param": "tp", "_offset": 5551, "_length": 5551}

- centre 98 (ecmf) with the local section (definition 1: class ``od``, stream ``enfo``, type
  ``cf``/``pf``, expver ``0001``); the control forecast is ``type=cf`` with no ``number`` in
  the index (``typeOfEnsembleForecast`` 0, ``perturbationNumber`` 0 in the GRIB), perturbed
  members are ``type=pf`` with ``number`` 1..members-1.
- Grid: global regular lat/lon, latitudes 90 to -90, the first longitude written as 180 (the
  grid runs 180, 180+dx, ... 360-dx, 0, ... 180-dx, i.e. -180..180-dx).
- ``tp`` (paramId 228, metres) **accumulated from the start** (``stepRange`` ``"0-12"``; ``"0"``
  at step 0, where it is zero) and ``2t`` (paramId 167, K).

**Values**: precipitation (the default grid: 0 to ~200 mm in 24 hours) is a light drizzle
plus six Gaussian storm cells per forecast day whose position, timing and total are drawn from
``seed``; perturbed members move, retime and rescale each cell (the control is unperturbed).
The accumulation from the start is non-decreasing in time and non-negative, GEFS buckets are
differences of it. Each day's first cell is a big, well-predicted storm (over 100 mm within
the day in every member, barely moved), the others spread more, so a 50 mm 24-hour
exceedance probability has points at 0 % (most of the grid), at 100 % and in between, for
seeds 0-5 with 3, 5 and 31 members. 2 m temperature is a latitude profile
with a diurnal cycle and a smooth per-member perturbation. The fields are functions of
latitude, longitude, member and hour only: GEFS and ECMWF cycles with the same seed and grid
window agree wherever they share points and steps (ECMWF's ``tp`` in m = GEFS mm / 1000).
:func:`synthetic_fields` returns the intended (unpacked) values.

**Packing** (``packing=``): ``grid_simple`` (default), ``grid_complex``,
``grid_complex_spatial_differencing`` (what GEFS uses), ``grid_ccsds`` (ECMWF open data),
``grid_jpeg``, ``grid_png`` and ``grid_ieee`` (32-bit floats, exact to float32) all encode
and decode with the bundled ecCodes; ``bits_per_value`` (16) sets the precision of the
others. (gribberish 1.9.0 cannot read ``grid_ieee``; 0.30.3 also panicked on ``grid_complex``.)

**Broken cycles** for bad-input tests: ``missing_members`` leaves those members out (GEFS: no
files; ECMWF: no messages), ``corrupt`` cuts one message short in the middle of its data
section (section 0 still claims the full length; the indexes give the true offset and the
shortened length), so ecCodes -- and gribberish -- refuse to decode it.

:func:`upload` copies a generated tree to object storage (any fsspec URL).

**Single messages of any grid ecCodes has a sample for** (:func:`grib_message`): regular
and reduced Gaussian (``reduced_gg_pl_32_grib2``, GRIB1 ``reduced_gg_pl_32_grib1``),
reduced lat/lon (``reduced_ll_sfc_grib2``, 313,362 points), rotated reduced Gaussian
(``reduced_rotated_gg_sfc_grib2``),
spherical harmonics (``sh_ml_grib2``), rotated, polar stereographic and Lambert samples;
``alternativeRowScanning=1`` can be set on the regular samples. :func:`multi_field_message`
joins several GRIB2 messages on one grid into one message (sections 4-7 repeated), as
NCEP's wind files do; ecCodes reads each field of it with ``multi-field support``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import eccodes
import numpy as np

__all__ = [
    "grib_message",
    "multi_field_message",
    "ECMWF_PARAMS",
    "GEFS_VARIABLES",
    "PACKINGS",
    "Fields",
    "Grid",
    "ecmwf_index_path",
    "ecmwf_path",
    "encode_field",
    "gefs_apcp_window",
    "gefs_idx_path",
    "gefs_path",
    "make_ecmwf_cycle",
    "make_gefs_cycle",
    "synthetic_fields",
    "upload",
]

#: ``packing=`` values ecCodes can encode here (GRIB2 data representation templates).
PACKINGS = (
    "grid_simple",
    "grid_complex",
    "grid_complex_spatial_differencing",
    "grid_ccsds",
    "grid_ieee",
    "grid_jpeg",
    "grid_png",
)
#: GEFS variables (wgrib2 names) and ECMWF parameters (MARS short names) the generators write.
GEFS_VARIABLES = ("APCP", "TMP")
ECMWF_PARAMS = ("tp", "2t")

_SAMPLE = "regular_ll_sfc_grib2"


# --------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class Grid:
    """A regular lat/lon grid, stored north to south.

    ``lat`` is the (south, north) window; ``lon`` the (first, last) longitude of a regional
    window, eastward, in degrees (taken modulo 360 in the GRIB), or None for a global grid
    (``360 / resolution`` columns, whose first longitude the generator chooses: 0 for GEFS,
    180 for ECMWF).
    """

    resolution: float = 5.0
    lat: tuple[float, float] = (-90.0, 90.0)
    lon: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        res = float(self.resolution)
        south, north = (float(v) for v in self.lat)
        if not res > 0:
            raise ValueError(f"grid resolution must be positive, not {self.resolution}")
        if not -90 <= south < north <= 90:
            raise ValueError(f"latitude window must be south < north within -90..90: {self.lat}")
        _whole((north - south) / res, "latitude window / resolution")
        if self.lon is None:
            _whole(360 / res, "360 / resolution")
        else:
            west, east = (float(v) for v in self.lon)
            if not 0 < east - west < 360:
                raise ValueError(f"longitude window must be first < last, < 360 apart: {self.lon}")
            _whole((east - west) / res, "longitude window / resolution")

    @property
    def is_global(self) -> bool:
        return self.lon is None

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) = (latitudes, longitudes)."""
        south, north = self.lat
        rows = round((north - south) / self.resolution) + 1
        if self.lon is None:
            return rows, round(360 / self.resolution)
        return rows, round((self.lon[1] - self.lon[0]) / self.resolution) + 1

    @property
    def latitudes(self) -> np.ndarray:
        """Row latitudes, north to south."""
        return self.lat[1] - self.resolution * np.arange(self.shape[0])

    def longitudes(self, start: float = 0.0) -> np.ndarray:
        """Column longitudes in storage order, in 0..360; ``start`` is a global grid's first."""
        first = start if self.lon is None else self.lon[0]
        return np.round((first + self.resolution * np.arange(self.shape[1])) % 360, 9)

    def _domain(self) -> tuple[float, float, float, float]:
        west, east = (0.0, 360.0) if self.lon is None else self.lon
        return float(self.lat[0]), float(self.lat[1]), float(west), float(east)


#: a :class:`Grid`, a resolution (global grid), or ``(resolution, (south, north),
#: (first, last))`` with the longitude window optional
GridSpec = Grid | float | int | tuple


def _whole(x: float, what: str) -> int:
    if abs(x - round(x)) > 1e-6:
        raise ValueError(f"{what} must be a whole number, not {x}")
    return round(x)


def _as_grid(spec: GridSpec | None) -> Grid:
    if spec is None:
        return Grid()
    if isinstance(spec, Grid):
        return spec
    if isinstance(spec, int | float):
        return Grid(float(spec))
    res, *windows = spec
    lat = tuple(windows[0]) if windows else (-90.0, 90.0)
    lon = tuple(windows[1]) if len(windows) > 1 and windows[1] is not None else None
    return Grid(float(res), lat, lon)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- values


class _Weather:
    """Drizzle + Gaussian storm cells (precipitation) and a temperature profile, from a seed.

    Storms of forecast day ``d`` start in hours ``[24 d, 24 d + 18)``; the cells of a day and
    each member's perturbation of them come from generators seeded by ``(seed, d)`` and
    ``(seed, d, member)``, so a value never depends on which steps or members are asked for.
    """

    CELLS_PER_DAY = 6

    def __init__(self, grid: Grid, seed: int, cycle_hour: int) -> None:
        self.south, self.north, self.west, self.east = grid._domain()
        extent = min(self.north - self.south, self.east - self.west)
        self.sigma = max(2.0 * grid.resolution, 0.08 * extent)
        self.seed = seed
        self.cycle_hour = cycle_hour
        self._cells: dict[tuple[int, int], np.ndarray] = {}

    def cells(self, day: int, member: int) -> np.ndarray:
        """(lat, lon, total mm, start h, duration h) of each cell of a day, for a member."""
        key = (day, member)
        if key not in self._cells:
            rng = np.random.default_rng([self.seed, day])
            n = self.CELLS_PER_DAY
            lat_margin = 0.1 * (self.north - self.south)
            lat = rng.uniform(self.south + lat_margin, self.north - lat_margin, n)
            lon = rng.uniform(self.west, self.east, n)
            total = np.concatenate([[140.0], rng.uniform(15.0, 80.0, n - 1)])
            start = 24.0 * day + rng.uniform(0.0, 6.0, n)
            start[1:] += rng.uniform(0.0, 12.0, n - 1)
            duration = np.concatenate([[rng.uniform(6.0, 12.0)], rng.uniform(6.0, 18.0, n - 1)])
            if member > 0:  # the control is unperturbed; the first cell is well predicted
                p = np.random.default_rng([self.seed, day, member])
                spread = np.full(n, 0.5 * self.sigma)
                spread[0] = 0.2 * self.sigma
                lat = lat + p.normal(0.0, 1.0, n) * spread
                lon = lon + p.normal(0.0, 1.0, n) * spread
                factor = np.clip(np.exp(p.normal(0.0, 0.35, n)), 0.6, 1.6)
                factor[0] = min(max(factor[0], 0.75), 1.4)
                total = total * factor
                start = np.maximum(start + p.normal(0.0, 1.5, n), 24.0 * day)
            self._cells[key] = np.stack([lat, lon, total, start, duration], axis=1)
        return self._cells[key]

    def precip(self, member: int, hour: float, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Precipitation (mm) accumulated from the start to ``hour``, on ``lat`` x ``lon``."""
        lat2, lon2 = lat[:, None], lon[None, :]
        drizzle = 0.04 * np.cos(np.radians(lat2)) ** 2 * np.ones_like(lon2)
        out = np.clip(drizzle, 0.0, None) * hour
        for day in range(math.ceil(hour / 24)):
            for clat, clon, total, start, duration in self.cells(day, member):
                frac = min(max((hour - start) / duration, 0.0), 1.0)
                if frac <= 0.0:
                    continue
                dlon = (lon2 - clon + 180.0) % 360.0 - 180.0
                dist2 = (lat2 - clat) ** 2 + dlon**2
                out = out + frac * total * np.exp(-dist2 / (2.0 * self.sigma**2))
        return out

    def t2m(self, member: int, hour: float, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """2 m temperature (K): latitude profile, diurnal cycle, per-member perturbation."""
        phi = np.radians(lat)[:, None]
        lam = np.radians(lon)[None, :]
        local_hour = self.cycle_hour + hour + np.degrees(lam) / 15.0
        out = 300.0 - 45.0 * np.sin(phi) ** 2
        out = out + 5.0 * np.cos(phi) * np.cos(2 * np.pi * (local_hour - 15.0) / 24.0)
        if member > 0:
            a, b, c = np.random.default_rng([self.seed, 1000 + member]).uniform(0, 2 * np.pi, 3)
            out = out + 1.5 * np.sin(3 * phi + a) * np.cos(2 * lam + b + 0.05 * hour + c)
        return out


@dataclass(frozen=True)
class Fields:
    """The intended (unpacked) values of a synthetic cycle, in storage order.

    ``precip_mm[m, s]`` is member ``m``'s precipitation accumulated from the start to
    ``steps[s]`` (mm = kg m-2; ECMWF's ``tp`` is this / 1000); ``t2m_k[m, s]`` its 2 m
    temperature. Arrays are ``(members, steps, latitudes, longitudes)``.
    """

    latitude: np.ndarray
    longitude: np.ndarray
    steps: tuple[int, ...]
    precip_mm: np.ndarray
    t2m_k: np.ndarray

    def precip_between(self, member: int, start: int, end: int) -> np.ndarray:
        """Precipitation (mm) of ``member`` between two of ``steps``."""
        s0 = self.steps.index(start) if start else None
        total = self.precip_mm[member, self.steps.index(end)]
        return total if s0 is None else total - self.precip_mm[member, s0]


def synthetic_fields(
    grid: GridSpec | None = None,
    *,
    members: int = 3,
    steps: Iterable[int] = range(0, 25, 3),
    seed: int = 0,
    cycle: str = "2025010100",
    lon_start: float = 0.0,
) -> Fields:
    """The values :func:`make_gefs_cycle` (``lon_start=0``) or :func:`make_ecmwf_cycle`
    (``lon_start=180``) write for these arguments, before packing."""
    g = _as_grid(grid)
    steps_t = _check_steps(steps)
    weather = _Weather(g, seed, _parse_cycle(cycle).hour)
    lat, lon = g.latitudes, g.longitudes(lon_start)
    precip = np.stack([np.stack([weather.precip(m, s, lat, lon) for s in steps_t])
                       for m in range(members)])
    t2m = np.stack([np.stack([weather.t2m(m, s, lat, lon) for s in steps_t])
                    for m in range(members)])
    return Fields(lat, lon, steps_t, precip, t2m)


# --------------------------------------------------------------------------- encoding


def _check_steps(steps: Iterable[int]) -> tuple[int, ...]:
    out = tuple(int(s) for s in steps)
    if any(s < 0 for s in out) or list(out) != sorted(set(out)):
        raise ValueError(f"steps must be increasing, distinct and >= 0: {out}")
    return out


def _parse_cycle(cycle: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(str(cycle), "%Y%m%d%H")
    except ValueError as err:
        raise ValueError(f"cycle must be YYYYMMDDHH, not {cycle!r}") from err


def _set(handle: Any, **keys: Any) -> None:
    """Set keys in the given order (ecCodes cares: e.g. the product template first)."""
    for key, value in keys.items():
        if isinstance(value, str):
            eccodes.codes_set_string(handle, key, value)
        else:
            eccodes.codes_set(handle, key, value)


def _new_message(grid: Grid, when: dt.datetime, lon_start: float) -> Any:
    """A handle from ecCodes' sample with the grid and the reference time set."""
    h = eccodes.codes_grib_new_from_samples(_SAMPLE)
    lon = grid.longitudes(lon_start)
    _set(h, Ni=grid.shape[1], Nj=grid.shape[0],
         latitudeOfFirstGridPointInDegrees=float(grid.lat[1]),
         latitudeOfLastGridPointInDegrees=float(grid.lat[0]),
         longitudeOfFirstGridPointInDegrees=float(lon[0]),
         longitudeOfLastGridPointInDegrees=float(lon[-1]),
         iDirectionIncrementInDegrees=float(grid.resolution),
         jDirectionIncrementInDegrees=float(grid.resolution),
         iScansNegatively=0, jScansPositively=0, jPointsAreConsecutive=0,
         dataDate=int(when.strftime("%Y%m%d")), dataTime=when.hour * 100,
         significanceOfReferenceTime=1, productionStatusOfProcessedData=0)
    return h


def _encode(handle: Any, values: np.ndarray, packing: str, bits: int) -> bytes:
    """Pack ``values`` and return the message.

    Order matters: packing type, then bits, then values (so ``grid_ieee`` gets the floats,
    not a 16-bit round trip). ``grid_png`` refuses to re-pack a constant field over the
    sample's values, so it packs simple first and converts (checked with ecCodes 2.50).
    """
    flat = np.ascontiguousarray(values, dtype=np.float64).ravel()
    if packing == "grid_png":
        _set(handle, packingType="grid_simple", bitsPerValue=bits)
        eccodes.codes_set_values(handle, flat)
        _set(handle, packingType=packing)
    else:
        _set(handle, packingType=packing)
        if packing != "grid_ieee":
            _set(handle, bitsPerValue=bits)
        eccodes.codes_set_values(handle, flat)
    return bytes(eccodes.codes_get_message(handle))


def encode_field(values: np.ndarray, packing: str = "grid_simple", bits_per_value: int = 16,
                 grid: GridSpec | None = None, *, bitmap: bool | None = None) -> bytes:
    """One GRIB2 message holding ``values`` (shape ``grid.shape``, north to south), packed
    as ``packing``; NaN values are absent points of a bitmap. ``bitmap``: None writes one
    only if some value is NaN, True writes one even when every point is present (a bitmap
    of all ones), False refuses NaN values. Degenerate fields come out as ecCodes writes
    them: constant fields with 0 bits per value, an all-NaN field with a bitmap of zeros and
    no packed values (section 7 empty)."""
    _check_packing(packing, bits_per_value)
    g = _as_grid(grid)
    flat = np.asarray(values, dtype=np.float64)
    if flat.shape != g.shape:
        raise ValueError(f"values have shape {flat.shape}, the grid {g.shape}")
    absent = np.isnan(flat)
    if bitmap is None:
        bitmap = bool(absent.any())
    elif not bitmap and absent.any():
        raise ValueError("NaN values need a bitmap")
    h = _new_message(g, dt.datetime(2025, 1, 1), 0.0)
    try:
        if bitmap:
            # a missingValue no value equals marks the absent points for ecCodes
            _set(h, bitmapPresent=1, missingValue=9999.0 if not (flat == 9999.0).any()
                 else float(np.nanmax(flat)) + 1.0)
            flat = np.where(absent, eccodes.codes_get_double(h, "missingValue"), flat)
        if absent.all():
            # ecCodes refuses to pack no values for some packings ("Unable to code a field
            # without values", ecCodes 2.50) yet writes the bitmap and an empty section 7
            # through simple packing; the empty field then converts to any packing
            _set(h, packingType="grid_simple", bitsPerValue=bits_per_value)
            eccodes.codes_set_values(h, flat.ravel())
            _set(h, packingType=packing)
            return bytes(eccodes.codes_get_message(h))
        return _encode(h, flat, packing, bits_per_value)
    finally:
        eccodes.codes_release(h)


def _check_packing(packing: str, bits: int) -> None:
    if packing not in PACKINGS:
        raise ValueError(f"packing must be one of {', '.join(PACKINGS)}, not {packing!r}")
    if not 1 <= bits <= 32:
        raise ValueError(f"bits_per_value must be 1..32, not {bits}")


def _corrupt(message: bytes) -> bytes:
    """The GRIB2 message cut in the middle of its data section (section 7).

    Section 0 still gives the full length, so every decoder refuses it; merely overwriting
    the ``7777`` end marker is not enough (ecCodes decodes such a message from memory;
    checked with ecCodes 2.50).
    """
    pos = 16  # section 0
    while pos < len(message) - 4:
        length, number = int.from_bytes(message[pos:pos + 4], "big"), message[pos + 4]
        if number == 7:
            return message[:pos + 5 + (length - 5) // 2]
        pos += length
    raise AssertionError("no section 7 in the message")  # pragma: no cover


def _write(path: Path, messages: Sequence[bytes]) -> list[tuple[int, int]]:
    """Write messages back to back; their (offset, length)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    spans, offset = [], 0
    with open(path, "wb") as f:
        for msg in messages:
            f.write(msg)
            spans.append((offset, len(msg)))
            offset += len(msg)
    return spans


def _normalize_corrupt(corrupt: Sequence[Any] | None) -> tuple[int, int, str | None] | None:
    if corrupt is None:
        return None
    if len(corrupt) not in (2, 3):
        raise ValueError(f"corrupt must be (member, step) or (member, step, variable): {corrupt}")
    return int(corrupt[0]), int(corrupt[1]), (str(corrupt[2]) if len(corrupt) == 3 else None)


# --------------------------------------------------------------------------- GEFS


def gefs_apcp_window(step: int) -> tuple[int, int]:
    """GEFS's APCP accumulation window for a step: from the largest multiple of 6 below it.

    >>> [gefs_apcp_window(s) for s in (3, 6, 9, 12)]
    [(0, 3), (0, 6), (6, 9), (6, 12)]
    """
    if step <= 0:
        raise ValueError("GEFS has no APCP at step 0")
    return 6 * ((step - 1) // 6), step


def gefs_path(root: str | os.PathLike[str], cycle: str, member: int, step: int) -> Path:
    """``root/gefs.YYYYMMDD/HH/atmos/pgrb2sp25/{gec00|gepNN}.tHHz.pgrb2s.0p25.fFFF``."""
    when = _parse_cycle(cycle)
    name = f"{'gec' if member == 0 else 'gep'}{member:02d}.t{when:%H}z.pgrb2s.0p25.f{step:03d}"
    return Path(root) / f"gefs.{when:%Y%m%d}" / f"{when:%H}" / "atmos" / "pgrb2sp25" / name


def gefs_idx_path(grib: str | os.PathLike[str]) -> Path:
    """The wgrib2 inventory of a GEFS file: the same name + ``.idx``."""
    return Path(f"{os.fspath(grib)}.idx")


_GEFS_PRODUCT = {
    # wgrib2 name: (wgrib2 level, section-4 keys)
    "APCP": ("surface", dict(productDefinitionTemplateNumber=11, parameterCategory=1,
                             parameterNumber=8, typeOfFirstFixedSurface=1,
                             typeOfStatisticalProcessing=1, typeOfTimeIncrement=2)),
    "TMP": ("2 m above ground", dict(productDefinitionTemplateNumber=1, parameterCategory=0,
                                     parameterNumber=0, typeOfFirstFixedSurface=103,
                                     scaleFactorOfFirstFixedSurface=0,
                                     scaledValueOfFirstFixedSurface=2)),
}


def make_gefs_cycle(
    root: str | os.PathLike[str],
    cycle: str = "2025010100",
    members: int = 3,
    steps: Iterable[int] = range(0, 25, 3),
    grid: GridSpec | None = None,
    seed: int = 0,
    variables: Sequence[str] = GEFS_VARIABLES,
    packing: str = "grid_simple",
    *,
    bits_per_value: int = 16,
    missing_members: Iterable[int] = (),
    corrupt: Sequence[Any] | None = None,
) -> list[Path]:
    """Write a GEFS ``pgrb2sp25`` cycle under ``root``; return the GRIB files written.

    ``members`` counts the control (``gec00``) and the perturbed members ``gep01`` ...
    ``grid`` defaults to a global 5-degree grid (37 x 72), longitudes 0..355. Each file holds
    ``variables`` in order (APCP is skipped at step 0) and has its ``.idx`` beside it.
    ``missing_members``: members whose files are not written. ``corrupt=(member, step[,
    variable])``: that message (default the file's first) is cut short.
    """
    unknown = set(variables) - set(GEFS_VARIABLES)
    if unknown:
        raise ValueError(f"unknown GEFS variables {sorted(unknown)}; known: {GEFS_VARIABLES}")
    if members < 1:
        raise ValueError("members must be >= 1 (the control)")
    _check_packing(packing, bits_per_value)
    g = _as_grid(grid)
    steps_t = _check_steps(steps)
    when = _parse_cycle(cycle)
    skip = {int(m) for m in missing_members}
    bad = _normalize_corrupt(corrupt)
    weather = _Weather(g, seed, when.hour)
    lat, lon = g.latitudes, g.longitudes(0.0)

    protos = {}
    for var in variables:
        h = _new_message(g, when, 0.0)
        _set(h, centre=7, subCentre=2, tablesVersion=2, localTablesVersion=1,
             shapeOfTheEarth=6, discipline=0)
        _set(h, **_GEFS_PRODUCT[var][1])
        _set(h, typeOfGeneratingProcess=4, backgroundProcess=0,
             generatingProcessIdentifier=107, stepUnits=1,
             numberOfForecastsInEnsemble=members - 1)
        protos[var] = h

    written: list[Path] = []
    try:
        for member in range(members):
            if member in skip:
                continue
            ens = "ENS=low-res ctl" if member == 0 else f"ENS=+{member}"
            for step in steps_t:
                messages: list[bytes] = []
                lines: list[str] = []
                for var in variables:
                    if var == "APCP" and step == 0:
                        continue
                    h = eccodes.codes_clone(protos[var])
                    try:
                        _set(h, typeOfProcessedData=3 if member == 0 else 4,
                             typeOfEnsembleForecast=1 if member == 0 else 3,
                             perturbationNumber=member)
                        if var == "APCP":
                            start, end = gefs_apcp_window(step)
                            _set(h, startStep=start, endStep=end)
                            values = (weather.precip(member, end, lat, lon)
                                      - weather.precip(member, start, lat, lon))
                            values = np.clip(values, 0.0, None)
                            forecast = f"{start}-{end} hour acc fcst"
                        else:
                            _set(h, forecastTime=step)
                            values = weather.t2m(member, step, lat, lon)
                            forecast = "anl" if step == 0 else f"{step} hour fcst"
                        msg = _encode(h, values, packing, bits_per_value)
                    finally:
                        eccodes.codes_release(h)
                    if bad is not None and bad[:2] == (member, step) and (
                            bad[2] == var or (bad[2] is None and not messages)):
                        msg = _corrupt(msg)
                    messages.append(msg)
                    lines.append(f"{cycle}:{var}:{_GEFS_PRODUCT[var][0]}:{forecast}:{ens}")
                if not messages:
                    continue
                path = gefs_path(root, cycle, member, step)
                spans = _write(path, messages)
                gefs_idx_path(path).write_text("".join(
                    f"{n}:{offset}:d={line}\n"
                    for n, ((offset, _), line) in enumerate(zip(spans, lines, strict=True), 1)))
                written.append(path)
    finally:
        for h in protos.values():
            eccodes.codes_release(h)
    return written


# --------------------------------------------------------------------------- ECMWF


def ecmwf_path(root: str | os.PathLike[str], cycle: str, step: int) -> Path:
    """``root/YYYYMMDD/HHz/ifs/0p25/enfo/YYYYMMDDHH0000-{step}h-enfo-ef.grib2``."""
    when = _parse_cycle(cycle)
    name = f"{when:%Y%m%d%H}0000-{step}h-enfo-ef.grib2"
    return Path(root) / f"{when:%Y%m%d}" / f"{when:%H}z" / "ifs" / "0p25" / "enfo" / name


def ecmwf_index_path(grib: str | os.PathLike[str]) -> Path:
    """The ``.index`` of an ECMWF open-data file: ``.grib2`` replaced by ``.index``."""
    p = Path(grib)
    return p.with_name(p.name.removesuffix(".grib2") + ".index")


_ECMWF_PARAM_ID = {"tp": 228, "2t": 167}


def make_ecmwf_cycle(
    root: str | os.PathLike[str],
    cycle: str = "2025010100",
    members: int = 3,
    steps: Iterable[int] = range(0, 25, 6),
    params: Sequence[str] = ECMWF_PARAMS,
    seed: int = 0,
    grid: GridSpec | None = None,
    packing: str = "grid_simple",
    *,
    bits_per_value: int = 16,
    control: bool = True,
    missing_members: Iterable[int] = (),
    missing_steps: Iterable[int] = (),
    corrupt: Sequence[Any] | None = None,
) -> list[Path]:
    """Write an ECMWF open-data ENS (``enfo``) cycle under ``root``; return the GRIB files.

    ``members`` counts the control (``type=cf``) and the perturbed members (``type=pf``,
    ``number`` 1 ..); each step's file holds, per param, the control then the perturbed
    members. ``grid`` defaults to global 5 degrees (37 x 72) and must be global in longitude
    (first longitude 180). ``control=False`` leaves the control out, as the 2026 open-data
    feed does; ``missing_members`` / ``missing_steps`` leave out members / whole files;
    ``corrupt=(member, step[, param])`` cuts that message short (default param: the first of
    ``params``).
    """
    unknown = set(params) - set(ECMWF_PARAMS)
    if unknown:
        raise ValueError(f"unknown ECMWF params {sorted(unknown)}; known: {ECMWF_PARAMS}")
    if members < 1:
        raise ValueError("members must be >= 1 (the control)")
    _check_packing(packing, bits_per_value)
    g = _as_grid(grid)
    if not g.is_global:
        raise ValueError("ECMWF open data grids are global in longitude: give no lon window")
    steps_t = _check_steps(steps)
    when = _parse_cycle(cycle)
    skip = {int(m) for m in missing_members} | ({0} if not control else set())
    skip_steps = {int(s) for s in missing_steps}
    bad = _normalize_corrupt(corrupt)
    weather = _Weather(g, seed, when.hour)
    lat, lon = g.latitudes, g.longitudes(180.0)

    protos = {}
    for param in params:
        h = _new_message(g, when, 180.0)
        _set(h, centre=98, subCentre=0, tablesVersion=31, localTablesVersion=0,
             setLocalDefinition=1, localDefinitionNumber=1, marsClass="od",
             marsStream="enfo", experimentVersionNumber="0001")
        _set(h, productDefinitionTemplateNumber=11 if param == "tp" else 1)
        _set(h, paramId=_ECMWF_PARAM_ID[param], typeOfGeneratingProcess=4,
             stepUnits=1, numberOfForecastsInEnsemble=members)
        protos[param] = h

    base = {"domain": "g", "date": f"{when:%Y%m%d}", "time": f"{when:%H}00", "expver": "0001",
            "class": "od"}
    written: list[Path] = []
    try:
        for step in steps_t:
            if step in skip_steps:
                continue
            messages: list[bytes] = []
            entries: list[dict[str, Any]] = []
            for param in params:
                for member in range(members):
                    if member in skip:
                        continue
                    h = eccodes.codes_clone(protos[param])
                    try:
                        kind = "cf" if member == 0 else "pf"
                        _set(h, marsType=kind, typeOfProcessedData=3 if member == 0 else 4,
                             typeOfEnsembleForecast=0 if member == 0 else 3,
                             perturbationNumber=member)
                        if param == "tp":
                            _set(h, startStep=0, endStep=step)
                            values = weather.precip(member, step, lat, lon) / 1000.0
                        else:
                            _set(h, forecastTime=step)
                            values = weather.t2m(member, step, lat, lon)
                        msg = _encode(h, values, packing, bits_per_value)
                    finally:
                        eccodes.codes_release(h)
                    if bad is not None and bad[:2] == (member, step) and (
                            bad[2] or params[0]) == param:
                        msg = _corrupt(msg)
                    messages.append(msg)
                    entry: dict[str, Any] = {**base, "type": kind, "stream": "enfo",
                                             "step": str(step), "levtype": "sfc"}
                    if member:
                        entry["number"] = str(member)
                    entry["param"] = param
                    entries.append(entry)
            if not messages:
                continue
            path = ecmwf_path(root, cycle, step)
            spans = _write(path, messages)
            ecmwf_index_path(path).write_text("".join(
                json.dumps({**entry, "_offset": offset, "_length": length}) + "\n"
                for entry, (offset, length) in zip(entries, spans, strict=True)))
            written.append(path)
    finally:
        for h in protos.values():
            eccodes.codes_release(h)
    return written


# --------------------------------------------------------------------------- upload


def upload(root: str | os.PathLike[str], s3_url_prefix: str,
           storage_options: dict[str, Any] | None = None) -> int:
    """Copy every file under ``root`` to ``s3_url_prefix`` (any fsspec URL), keeping the
    relative paths; return the number of files copied."""
    from fsspec.core import url_to_fs

    base = Path(root)
    files = sorted(p for p in base.rglob("*") if p.is_file())
    if not files:
        return 0
    fs, prefix = url_to_fs(s3_url_prefix, **(storage_options or {}))
    prefix = prefix.rstrip("/")
    fs.put([os.fspath(p) for p in files],
           [f"{prefix}/{p.relative_to(base).as_posix()}" for p in files])
    return len(files)


# --------------------------------------------------------------------------- single messages


def grib_message(sample: str = "regular_ll_sfc_grib2", values: Any = None,
                 **keys: Any) -> bytes:
    """One message from an ecCodes sample with ``keys`` set (in order), then ``values``
    (default: a ramp over every point, for grids with points)."""
    h = eccodes.codes_grib_new_from_samples(sample)
    try:
        for k, v in keys.items():
            if isinstance(v, float):
                eccodes.codes_set_double(h, k, v)
            elif isinstance(v, list | tuple | np.ndarray):
                eccodes.codes_set_array(h, k, list(v))
            else:
                eccodes.codes_set(h, k, v)
        if values is None and not sample.startswith("sh_"):
            n = eccodes.codes_get(h, "numberOfDataPoints")
            values = 200.0 + np.arange(n) * (100.0 / max(n, 1)) + (np.arange(n) % 7) * 0.25
        if values is not None:
            eccodes.codes_set_values(h, np.asarray(values, dtype=np.float64).ravel())
        return bytes(eccodes.codes_get_message(h))
    finally:
        eccodes.codes_release(h)


def _grib2_sections(msg: bytes) -> list[bytes]:
    out, p = [], 16
    while p < len(msg) - 4:
        n = int.from_bytes(msg[p:p + 4], "big")
        out.append(msg[p:p + n])
        p += n
    return out


def multi_field_message(*messages: bytes) -> bytes:
    """GRIB2 messages on one grid as one multi-field message: the first message's sections
    1-7, then sections 4-7 of each other one."""
    if len(messages) < 2:
        raise ValueError("a multi-field message needs at least two messages")
    first = _grib2_sections(messages[0])
    body = b"".join(first)
    for msg in messages[1:]:
        body += b"".join(s for s in _grib2_sections(msg) if s[4] in (4, 5, 6, 7))
    total = 16 + len(body) + 4
    return messages[0][:8] + total.to_bytes(8, "big") + body + b"7777"
