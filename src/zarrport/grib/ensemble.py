"""Ensemble forecast cycles from their index files: NOAA GEFS and ECMWF open-data ENS.

Both parsers follow VirtualiZarr's parser protocol -- options in ``__init__``,
``parser(url, registry) -> ManifestStore`` -- and also offer :meth:`build`, which returns
zarrport's own model for the Icechunk ingest (coordinates inlined).

The manifest comes from the sidecar indexes alone: one listing of the cycle directory gives
every file's size (the last message of a wgrib2 ``.idx`` ends at the end of the file), the
indexes are read concurrently, and only one message per grid is read, for its coordinates.

Layouts::

    GEFS   gefs.YYYYMMDD/HH/atmos/pgrb2sp25/gepNN.tHHz.pgrb2s.0p25.fFFF (+ .idx), control gec00
    ECMWF  YYYYMMDD/HHz/ifs/0p25/enfo/YYYYMMDDHH0000-{step}h-enfo-ef.grib2 (+ .index)

Variables are named by the caller (``{"tp": "APCP:surface"}`` for GEFS, ECMWF parameter
short names as they are) with attributes from a small table of the usual parameters,
never from a decoder's guess.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from zarrport.errors import (
    CorruptSourceError,
    InvalidArgumentError,
    SourceNotFoundError,
    UnrecognizedFormatError,
    UnsupportedVariableError,
)
from zarrport.grib.build import Built, Field, build_dataset, to_manifest_store
from zarrport.grib.fetch import Entry, Fetcher
from zarrport.grib.grid import Grid, grid_from_handle
from zarrport.grib.index import IndexEntry, parse_index

#: NCEP parameter -> (long name, units); wgrib2 names it, this only adds attributes
NCEP_PARAMS = {
    "APCP": ("Total precipitation", "kg m-2"),
    "TMP": ("Temperature", "K"),
    "UGRD": ("U component of wind", "m s-1"),
    "VGRD": ("V component of wind", "m s-1"),
    "PRMSL": ("Pressure reduced to MSL", "Pa"),
    "PRES": ("Pressure", "Pa"),
    "HGT": ("Geopotential height", "gpm"),
    "RH": ("Relative humidity", "%"),
    "SPFH": ("Specific humidity", "kg kg-1"),
    "TCDC": ("Total cloud cover", "%"),
    "CAPE": ("Convective available potential energy", "J kg-1"),
    "DSWRF": ("Downward short-wave radiation flux", "W m-2"),
    "DLWRF": ("Downward long-wave radiation flux", "W m-2"),
    "WEASD": ("Water equivalent of accumulated snow depth", "kg m-2"),
    "SNOD": ("Snow depth", "m"),
    "TMAX": ("Maximum temperature", "K"),
    "TMIN": ("Minimum temperature", "K"),
    "GUST": ("Wind speed (gust)", "m s-1"),
    "SOILW": ("Volumetric soil moisture content", "1"),
}

#: ECMWF parameter -> (long name, units, accumulated from the start of the forecast)
ECMWF_PARAMS = {
    "tp": ("Total precipitation", "m", True),
    "sf": ("Snowfall", "m of water equivalent", True),
    "ro": ("Runoff", "m", True),
    "ssrd": ("Surface short-wave radiation downwards", "J m-2", True),
    "strd": ("Surface long-wave radiation downwards", "J m-2", True),
    "ssr": ("Surface net short-wave radiation", "J m-2", True),
    "str": ("Surface net long-wave radiation", "J m-2", True),
    "2t": ("2 metre temperature", "K", False),
    "2d": ("2 metre dewpoint temperature", "K", False),
    "10u": ("10 metre U wind component", "m s-1", False),
    "10v": ("10 metre V wind component", "m s-1", False),
    "msl": ("Mean sea level pressure", "Pa", False),
    "sp": ("Surface pressure", "Pa", False),
    "tcc": ("Total cloud cover", "1", False),
    "t": ("Temperature", "K", False),
    "gh": ("Geopotential height", "gpm", False),
    "u": ("U component of wind", "m s-1", False),
    "v": ("V component of wind", "m s-1", False),
    "r": ("Relative humidity", "%", False),
    "q": ("Specific humidity", "kg kg-1", False),
    "10fg": ("10 metre wind gust", "m s-1", False),
}

_GEFS_NAME = re.compile(r"^ge(c|p)(\d{2})\.t(\d{2})z\.pgrb2s\.0p25\.f(\d{3})$")
_ECMWF_NAME = re.compile(r"^(\d{14})-(\d+)h-enfo-ef\.grib2$")
_FCST = re.compile(r"^(?:(\d+)-)?(\d+) (min|hour|day) (acc |ave |max |min )?fcst$")
_UNIT = {"min": np.timedelta64(1, "m"), "hour": np.timedelta64(1, "h"),
         "day": np.timedelta64(24, "h")}


def _as_list(value: int | Iterable[int] | None) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return list(range(value))
    return sorted({int(v) for v in value})


def _hours(value: Iterable[int] | None) -> list[np.timedelta64] | None:
    if value is None:
        return None
    return sorted({np.timedelta64(int(v), "h").astype("m8[s]") for v in value})


@dataclass
class _Message:
    entry: IndexEntry
    url: str
    name: str
    member: int
    step: np.timedelta64
    window_start: np.timedelta64 | None


class _EnsembleParser:
    """What the two ensemble parsers share: reading indexes, one header per grid, build."""

    kind = ""
    members: list[int] | None = None
    steps: list[np.timedelta64] | None = None

    def __call__(self, url: str, registry: Any) -> Any:
        """VirtualiZarr's parser protocol: the cycle as a ``ManifestStore``."""
        return to_manifest_store(self.build(url, registry), registry)

    def build(self, url: str, registry: Any) -> Built:
        raise NotImplementedError

    def _build(self, fetch: Fetcher, fields: list[Field], init_times: list[np.datetime64],
               *, source_stats: dict[str, dict[str, Any]], attrs: dict[str, Any]) -> Built:
        """The dataset of one cycle: every member and step asked for is a position, present
        or not (absent ones read as NaN)."""
        expect: dict[str, list[Any]] = {"init_time": init_times}
        if self.members is not None:
            expect["member"] = self.members
        if self.steps is not None:
            expect["step"] = self.steps
        return build_dataset(fields, self._grids(fetch, fields),
                             always=("init_time", "member", "step"), attrs=attrs,
                             source_stats=source_stats, expect=expect)

    def _grids(self, fetch: Fetcher, fields: list[Field]) -> dict[str, Grid]:
        """Read the first message of each distinct grid (all share one grid in practice:
        the first message stands for all, and its length is checked against the index)."""
        import eccodes

        first = fields[0]
        data = fetch.get_range(first.url, first.offset, first.length)
        if data[:4] != b"GRIB" or data[-4:] != b"7777":
            raise CorruptSourceError(
                f"{first.url}: the index says a GRIB message is at bytes {first.offset}.."
                f"{first.offset + first.length}, but there is none (is the index for "
                "another file?)", source=first.url)
        try:
            h = eccodes.codes_new_from_message(data)
        except Exception as e:  # noqa: BLE001
            raise CorruptSourceError(f"{first.url} @{first.offset}: not a readable GRIB "
                                     f"message ({e})", source=first.url) from None
        try:
            grid = grid_from_handle(h, source=first.url)
        finally:
            eccodes.codes_release(h)
        for f in fields:
            f.grid = grid.key
        return {grid.key: grid}


class GEFSParser(_EnsembleParser):
    """One NOAA GEFS cycle (``.../gefs.YYYYMMDD/HH``, or its ``atmos/pgrb2sp25`` folder).

    Parameters
    ----------
    members
        How many members (``31``: control ``gec00`` and ``gep01..gep30``) or which ones;
        default: every member found. A member asked for but absent reads as NaN.
    variables
        Output name -> ``"PARAM:level"`` as in the ``.idx`` (``{"tp": "APCP:surface",
        "t2m": "TMP:2 m above ground"}``). Default ``{"tp": "APCP:surface"}``.
    steps
        Forecast hours to include; default every step found.
    product
        The folder under ``atmos`` (``pgrb2sp25``: the 0.25-degree "s" files).
    """

    kind = "gefs"

    def __init__(self, members: int | Iterable[int] | None = None,
                 variables: dict[str, str] | None = None,
                 steps: Iterable[int] | None = None, product: str = "pgrb2sp25"):
        self.members = _as_list(members)
        self.variables = dict(variables or {"tp": "APCP:surface"})
        for name, spec in self.variables.items():
            if ":" not in spec:
                raise InvalidArgumentError(
                    f"variable {name!r}: {spec!r} is not 'PARAM:level' (e.g. 'APCP:surface')")
        self.steps = _hours(steps)
        self.product = product

    def folder(self, url: str) -> str:
        url = url.rstrip("/")
        if re.search(r"/\d{2}$", url):
            url = f"{url}/atmos/{self.product}"
        return url + "/"

    def build(self, url: str, registry: Any) -> Built:
        fetch = Fetcher(registry)
        folder = self.folder(url)
        listing = fetch.list(folder)
        gribs: dict[str, tuple[int, np.timedelta64]] = {}
        for u in listing:
            m = _GEFS_NAME.match(u.rsplit("/", 1)[-1])
            if m:
                member, step = int(m.group(2)), np.timedelta64(int(m.group(4)), "h").astype(
                    "m8[s]")
                if self.members is not None and member not in self.members:
                    continue
                if self.steps is not None and step not in self.steps:
                    continue
                gribs[u] = (member, step)
        if not gribs:
            raise SourceNotFoundError(
                f"no GEFS files (gepNN.tHHz.pgrb2s.0p25.fFFF) in {folder}", source=folder)
        no_index = sorted(u for u in gribs if u + ".idx" not in listing)
        idx_data = fetch.get_many(u + ".idx" for u in gribs if u + ".idx" in listing)
        messages: list[_Message] = []
        init_times = set()
        wanted = {tuple(spec.split(":", 1)) for spec in self.variables.values()}
        for u, (member, step) in sorted(gribs.items()):
            data = idx_data.get(u + ".idx")
            if data is None:
                continue
            entries = parse_index(data, source=u + ".idx", file_size=listing[u].size,
                                  select=lambda name, level: (name, level) in wanted)
            for name, spec in self.variables.items():
                found = self._select(entries, spec, u)
                if found is None:
                    continue
                entry, start = found
                _, idx_step = _forecast(str(entry.keys.get("forecast", "")), u + ".idx")
                if idx_step != step:
                    raise CorruptSourceError(
                        f"{u.rsplit('/', 1)[-1]}.idx: message {entry.message} is for "
                        f"{entry.keys.get('forecast')!r}, the file name says "
                        f"f{int(step / np.timedelta64(1, 'h')):03d} (is the index for another "
                        "file?)", source=u + ".idx")
                init_times.add(entry.keys.get("date"))
                messages.append(_Message(entry, u, name, member, step, start))
        if not messages:
            raise SourceNotFoundError(
                f"none of {sorted(self.variables.values())} is in the indexes of {folder}",
                source=folder)
        if len(init_times) > 1:
            raise CorruptSourceError(
                f"{folder}: the indexes name several reference times {sorted(init_times)} "
                "(is an index for another cycle?)", source=folder)
        init = _wgrib2_time(next(iter(init_times)), folder)
        m = re.search(r"gefs\.(\d{8})/(\d{2})/", folder)
        if m and str(np.datetime64(init, "h")).replace("-", "").replace("T", "") != (
                m.group(1) + m.group(2)):
            raise CorruptSourceError(
                f"{folder}: the indexes are for the cycle {init}, the folder is "
                f"{m.group(1)} {m.group(2)}Z (indexes of another cycle?)", source=folder)
        fields = []
        for msg in messages:
            param = self.variables[msg.name].split(":", 1)[0]
            long_name, units = NCEP_PARAMS.get(param, (param, None))
            attrs = {"long_name": long_name, "GRIB_wgrib2_name": param,
                     "GRIB_level": msg.entry.level}
            if units:
                attrs["units"] = units
            if msg.window_start is not None:
                attrs["GRIB_accumulation"] = (
                    "alternating buckets in the files (0-3, 0-6, 6-9, 6-12 h ...); see "
                    f"{msg.name}_window_start")
            fields.append(Field(
                url=msg.url, offset=msg.entry.offset, length=int(msg.entry.length or 0),
                name=msg.name, grid="", init_time=init,
                member=msg.member, step=msg.step, window_start=msg.window_start, attrs=attrs))
        built = self._build(fetch, fields, [init], source_stats={
            u: e.stat() for u, e in listing.items()}, attrs={
            "zarrport_grib": "gefs", "source": folder, "institution": "NOAA NCEP",
            "title": "GEFS ensemble forecast"})
        built.missing[:] = _gefs_missing(gribs, no_index, self.members, self.steps, folder)
        return built

    @staticmethod
    def _select(entries: list[IndexEntry], spec: str,
                url: str) -> tuple[IndexEntry, np.timedelta64 | None] | None:
        param, level = spec.split(":", 1)
        hits = []
        for e in entries:
            if e.name != param or e.level != level:
                continue
            if e.field is not None:
                raise UnsupportedVariableError(
                    f"{url}: {param}:{level} is field {e.field} of the multi-field message "
                    f"{e.message}; multi-field messages are not supported", source=url)
            fc = str(e.keys.get("forecast", ""))
            start, step = _forecast(fc, url)
            hits.append((start if start is not None else np.timedelta64(0, "s"), e, start))
        if not hits:
            return None
        # GFS writes both the bucket (18-21 h) and the total (0-21 h) at some steps: take
        # the one accumulated from the earliest start
        hits.sort(key=lambda h: h[0])
        return hits[0][1], hits[0][2]


def _gefs_missing(gribs: dict[str, tuple[int, np.timedelta64]], no_index: list[str],
                  members: list[int] | None, steps: list[np.timedelta64] | None,
                  folder: str) -> list[str]:
    """Member files asked for (or present at other steps) but absent, and files whose
    ``.idx`` is absent: what reads as NaN because it is not there."""
    have = set(gribs.values())
    all_members = members if members is not None else sorted({m for m, _ in have})
    all_steps = steps if steps is not None else sorted({s for _, s in have})
    hour = np.timedelta64(1, "h")
    out = [f"member {m} step {int(s / hour)}h: no file in {folder}"
           for m in all_members for s in all_steps if (m, s) not in have]
    out += [f"{u.rsplit('/', 1)[-1]}: no .idx beside it" for u in no_index]
    return out


def _forecast(text: str, source: str) -> tuple[np.timedelta64 | None, np.timedelta64]:
    """wgrib2's forecast text -> (accumulation window start or None, step)."""
    if text == "anl":
        return None, np.timedelta64(0, "s")
    m = _FCST.match(text)
    if not m:
        raise UnrecognizedFormatError(f"{source}: forecast time {text!r} is not one "
                                      "zarrport understands", source=source)
    unit = _UNIT[m.group(3)]
    end = (int(m.group(2)) * unit).astype("m8[s]")
    if m.group(1) is None:
        return None, end
    start = (int(m.group(1)) * unit).astype("m8[s]")
    return (start if (m.group(4) or "").strip() == "acc" else None), end


def _wgrib2_time(d: Any, source: str) -> np.datetime64:
    text = str(d or "")
    if not re.fullmatch(r"\d{10}", text):
        raise UnrecognizedFormatError(f"{source}: reference time d={text!r} is not "
                                      "YYYYMMDDHH", source=source)
    return np.datetime64(f"{text[:4]}-{text[4:6]}-{text[6:8]}T{text[8:10]}:00:00", "s")


class ECMWFParser(_EnsembleParser):
    """One ECMWF open-data ENS cycle (``.../YYYYMMDD/HHz/ifs/0p25/enfo``).

    Parameters
    ----------
    members
        How many (``51``: control and 50 perturbed) or which; the control forecast
        (``type=cf``, no ``number``) is member 0. Default: all found.
    params
        ECMWF short names (``tp``, ``2t`` ...); default ``("tp",)``.
    steps
        Forecast hours; default every step found.
    levtype
        Level type of the fields (``sfc``; ``pl`` with ``levelist`` for pressure levels).
    """

    kind = "ecmwf"

    def __init__(self, members: int | Iterable[int] | None = None,
                 params: Iterable[str] = ("tp",), steps: Iterable[int] | None = None,
                 levtype: str = "sfc"):
        self.members = _as_list(members)
        self.params = list(params)
        self.steps = _hours(steps)
        self.levtype = levtype

    def build(self, url: str, registry: Any) -> Built:
        fetch = Fetcher(registry)
        folder = url.rstrip("/") + "/"
        listing = fetch.list(folder)
        gribs: dict[str, np.timedelta64] = {}
        for u in listing:
            m = _ECMWF_NAME.match(u.rsplit("/", 1)[-1])
            if m:
                step = np.timedelta64(int(m.group(2)), "h").astype("m8[s]")
                if self.steps is None or step in self.steps:
                    gribs[u] = step
        if not gribs:
            raise SourceNotFoundError(
                f"no ECMWF ENS files (YYYYMMDDHH0000-<step>h-enfo-ef.grib2) in {folder}",
                source=folder)
        index_of = {u: u.removesuffix(".grib2") + ".index" for u in gribs}
        no_index = sorted(u for u, i in index_of.items() if i not in listing)
        idx_data = fetch.get_many(i for i in index_of.values() if i in listing)
        fields: list[Field] = []
        init_times = set()
        for u, step in sorted(gribs.items()):
            data = idx_data.get(index_of[u])
            if data is None:
                continue
            for e in parse_index(data, source=index_of[u], file_size=listing[u].size,
                                 select=lambda param, _level: param in self.params):
                k = e.keys
                if k.get("levtype") != self.levtype:
                    continue
                member = 0 if k.get("type") == "cf" else int(k.get("number", 0))
                if self.members is not None and member not in self.members:
                    continue
                init = _ecmwf_time(k, index_of[u])
                init_times.add(init)
                fstep = _ecmwf_step(k.get("step"), index_of[u])
                if fstep != step:
                    raise CorruptSourceError(
                        f"{index_of[u]}: line {e.message} is for step {k.get('step')}, the "
                        f"file name says {int(step / np.timedelta64(1, 'h'))}h (is the "
                        "index for another file?)", source=index_of[u])
                name = str(k["param"])
                long_name, units, accum = ECMWF_PARAMS.get(name, (name, None, False))
                attrs = {"long_name": long_name, "GRIB_shortName": name,
                         "GRIB_levtype": self.levtype}
                if units:
                    attrs["units"] = units
                level = float(k["levelist"]) if "levelist" in k else None
                fields.append(Field(
                    url=u, offset=e.offset, length=int(e.length or 0), name=name, grid="",
                    init_time=init, member=member, step=fstep, level=level,
                    level_type={"pl": "isobaricInhPa"}.get(self.levtype, self.levtype)
                    if level is not None else None,
                    window_start=np.timedelta64(0, "s") if accum else None, attrs=attrs))
        if not fields:
            raise SourceNotFoundError(
                f"none of the parameters {self.params} (levtype {self.levtype}) is in the "
                f"indexes of {folder}", source=folder)
        if len(init_times) > 1:
            raise CorruptSourceError(
                f"{folder}: the indexes name several reference times (is an index for "
                "another cycle?)", source=folder)
        built = self._build(fetch, fields, list(init_times), source_stats={
            u: listing[u].stat() for u in gribs}, attrs={
            "zarrport_grib": "ecmwf", "source": folder, "institution": "ECMWF",
            "title": "ECMWF ENS forecast (open data)"})
        have = {(f.member, f.step) for f in fields}
        hour = np.timedelta64(1, "h")
        members = self.members if self.members is not None else sorted(
            {m for m, _ in have})
        built.missing[:] = [
            f"member {m} step {int(s / hour)}h: not in {folder}"
            for m in members for s in sorted(set(gribs.values()))
            if (m, s) not in have and gribs_index_ok(gribs, index_of, listing, s)]
        built.missing.extend(f"{u.rsplit('/', 1)[-1]}: no .index beside it" for u in no_index)
        return built


def gribs_index_ok(gribs: dict[str, np.timedelta64], index_of: dict[str, str],
                   listing: dict[str, Entry], step: np.timedelta64) -> bool:
    """True if the step's file and its index exist (their absence is reported apart)."""
    return any(s == step and index_of[u] in listing for u, s in gribs.items())


def _ecmwf_time(keys: dict[str, Any], source: str) -> np.datetime64:
    date, time = str(keys.get("date", "")), str(keys.get("time", "")).zfill(4)
    if not (re.fullmatch(r"\d{8}", date) and re.fullmatch(r"\d{4}", time)):
        raise UnrecognizedFormatError(f"{source}: date/time {date!r} {time!r} are not "
                                      "YYYYMMDD / HHMM", source=source)
    return np.datetime64(f"{date[:4]}-{date[4:6]}-{date[6:]}T{time[:2]}:{time[2:]}:00", "s")


def _ecmwf_step(step: Any, source: str) -> np.timedelta64:
    text = str(step)
    m = re.fullmatch(r"(?:\d+-)?(\d+)", text)
    if not m:
        raise UnrecognizedFormatError(f"{source}: step {text!r} is not hours", source=source)
    return np.timedelta64(int(m.group(1)), "h").astype("m8[s]")


__all__ = ["ECMWFParser", "GEFSParser"]
