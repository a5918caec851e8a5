"""Any GRIB1/GRIB2 file without a sidecar index, as virtual Zarr: :class:`GribParser`.

How a file is read
------------------

1. **Locate the messages from the bytes** (:func:`locate_messages`): find ``GRIB``, read
   the edition (octet 8) and the total length (GRIB2: octets 9-16; GRIB1: octets 5-7, with
   ecCodes' rule for GRIB1 messages over 8 MB: a flagged length counts 120-byte blocks when
   section 4's length is < 120), check that the sections fit in that length and that the
   message ends with ``7777``, and jump to its end -- so ``GRIB`` bytes inside packed data
   are never taken for a message, and since a length below the smallest message is refused
   the walk always advances and terminates. Bytes between messages (WMO bulletin headers,
   padding) are skipped. Refused here, naming the file, the message number and its offset:
   a length past the end of the file (truncated), a message that does not end with
   ``7777`` or whose sections overrun it (corrupt), and an edition other than 1 or 2. A
   GRIB2 message holding several fields (sections 4-7 repeated) is read field by field:
   each is cut out as a message of its own (:func:`zarrport.grib.codec.grib2_field`), is
   its own chunk (the message's byte range) and is picked by the codec's ``message_field``.
2. **Read each message's header keys with ecCodes** (``codes_new_from_message``; no values
   are decoded): ``shortName``, ``typeOfLevel``, ``stepType``, ``level``, ``dataDate`` /
   ``dataTime``, ``number``, ``endStep`` / ``startStep`` (in minutes, so sub-hourly steps
   work) and the grid section's digest. Descriptive keys (``name``, ``units``, ``cfName``,
   ``paramId`` ...) are read once per variable, from its first message. gribberish is not
   used for the scan: its ``parse_grib_mapping`` is fast (ERA5 UK, 744 messages: 8 ms) but
   it silently drops every message it cannot parse (0 of 168 in a GRIB1 UKMO file, of 1 in
   a rotated or space-view GRIB2 file), keys its result by name so duplicates collapse,
   panics on some grids (``OblateM``), and names parameters from NCEP tables (ECMWF's
   ``tp`` is "CFRZR"); checked with gribberish 1.9.0, no upstream issue found. Names and
   coordinates here always come from ecCodes.
3. **One grid per distinct grid section** (:func:`~zarrport.grib.grid.grid_from_handle`, one
   message each); grids whose layout and coordinates are equal are merged (a GRIB1 and a
   GRIB2 message on the same grid share ``latitude``/``longitude``).
4. **Group into variables** by (name, ``typeOfLevel``, ``stepType``, grid) and build with
   :func:`~zarrport.grib.build.build_dataset`: dimensions ``(init_time, member, step,
   level, <grid>)``, each only where its key varies within the variable; one chunk per
   message.

Names
-----

A variable is named by ecCodes' ``shortName``; where that is ``unknown`` or ``~``, by
``cfVarName``; where that is unknown too, ``var_<discipline>_<category>_<number>`` (GRIB2)
or ``var_<table2Version>_<indicatorOfParameter>`` (GRIB1), as for wgrib2 indexes. When one
name has fields on several level types, step types or grids, every one of its variables
gets a suffix for what differs, in this order: ``_<typeOfLevel>`` (``t_isobaricInhPa``,
``t_hybrid``), ``_<stepType>`` (``cfrzr_instant``, ``cfrzr_avg``), ``_<gridType>`` or, for
grids of one type, ``_grid<k>`` (``k``: the grid's number, as in ``latitude_<k>``; the first
grid is 0). A name that would still collide gets ``_2``, ``_3`` ... in file order.

Coordinates that do not vary within a variable are not dimensions; they are kept as the
attributes ``GRIB_init_time`` (ISO), ``GRIB_member``, ``GRIB_step_minutes``, ``GRIB_level``
and, for accumulations, ``GRIB_window_start_minutes``.

Reduced grids and HEALPix are one ``values`` dimension, alternative row scanning is put in
order on the grids where ecCodes applies it (:mod:`zarrport.grib.grid`). Also refused
(typed errors naming the file and messages): spherical harmonics, unstructured grids and
alternative row scanning ecCodes ignores (:func:`~zarrport.grib.grid.grid_from_handle`),
a message ecCodes cannot read, two messages
of one variable at the same coordinates (the error names the keys that differ, e.g. two
accumulation windows ending at one step: select with ``filter_by_keys``), and a variable
whose messages mix an ensemble ``number`` with none (ECMWF GRIB1 always has one).

Speed (xrdata_era5-2mt-2019-03-uk.grib, 744 GRIB1 messages, warm): the byte walk takes
2 ms (ecCodes' own walk 130 ms, gribberish 8 ms), the whole ``build`` 0.26 s, about 2,800
messages/s; ecCodes creating each handle and evaluating ``shortName`` is most of it.
Parameters ecCodes has no name for are slow to look up (0.2-0.5 s per concept key for
MRMS's local discipline 209). Local files are memory-mapped; a remote object is read
whole through the registry (a scan needs every message's header anyway).
"""

from __future__ import annotations

import mmap
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from zarrport.errors import (
    CorruptSourceError,
    IncompatibleSourcesError,
    InvalidArgumentError,
    NotAFileError,
    SourceNotFoundError,
    StorageError,
    UnrecognizedFormatError,
    UnsupportedVariableError,
    ZarrportError,
)
from zarrport.grib.build import Built, Field, build_dataset, to_manifest_store
from zarrport.grib.grid import Grid, grid_from_handle, grid_key

SCANS = ("auto", "bytes", "eccodes")

#: smallest possible messages: indicator + sections + "7777"
_MIN_LENGTH = {1: 8 + 28 + 11 + 4, 2: 16 + 21 + 5 + 5 + 4}
_UNKNOWN = {"", "unknown", "~", None}
_SAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


@dataclass(frozen=True)
class Located:
    """Where one message is in the file."""

    #: 1-based message number in the file
    number: int
    offset: int
    length: int
    edition: int
    #: fields in the message (GRIB2 multi-field messages: more than one)
    fields: int = 1


@dataclass
class _Header:
    """What the scan reads from one message."""

    loc: Located
    name: str
    short_name: str
    type_of_level: str | None
    step_type: str | None
    level: float | None
    init_time: np.datetime64
    member: int | None
    step: np.timedelta64 | None
    window_start: np.timedelta64 | None
    grid_digest: str
    float64: bool
    group: tuple[Any, ...] = ()
    grid: str = ""
    #: multi-field message: the field's number in it (0-based)
    message_field: int | None = None


# --------------------------------------------------------------------------- locating


def _where(source: str, number: int, offset: int) -> str:
    return f"{source}: message {number} (byte {offset})"


def locate_messages(data: bytes | bytearray | memoryview | mmap.mmap, source: str
                    ) -> list[Located]:
    """Every GRIB message in ``data``: number, offset, length, edition (see the module
    docstring for what is refused). Raises :class:`UnrecognizedFormatError` if there is no
    GRIB message at all."""
    size = len(data)
    out: list[Located] = []
    pos = 0
    while True:
        i = data.find(b"GRIB", pos)
        if i < 0:
            break
        number = len(out) + 1
        where = _where(source, number, i)
        if i + 16 > size:
            raise CorruptSourceError(
                f"{where}: truncated: the file ends {size - i} bytes into the message's "
                "indicator section", source=source)
        edition = data[i + 7]
        if edition == 2:
            length = int.from_bytes(data[i + 8:i + 16], "big")
        elif edition == 1:
            length = _grib1_length(data, i, where, source)
        else:
            raise CorruptSourceError(
                f"{where}: GRIB edition {edition} (only editions 1 and 2 exist); damaged "
                "file", source=source)
        if length < _MIN_LENGTH[edition]:
            raise CorruptSourceError(
                f"{where}: its length field says {length} bytes, less than the smallest "
                f"GRIB{edition} message; damaged file", source=source)
        if i + length > size:
            raise CorruptSourceError(
                f"{where}: truncated: the message is {length} bytes long but the file ends "
                f"{size - i} bytes after its start", source=source)
        if data[i + length - 4:i + length] != b"7777":
            raise CorruptSourceError(
                f"{where}: corrupt: no '7777' at the end of its {length} bytes (the length "
                "field or the message is damaged)", source=source)
        fields = 1
        if edition == 2:
            fields = _check_grib2_sections(data, i, length, where, source)
        else:
            _check_grib1_sections(data, i, length, where, source)
        out.append(Located(number, i, length, edition, fields))
        pos = i + length
    if not out:
        raise UnrecognizedFormatError(
            f"{source}: not a GRIB file (no 'GRIB' message in {size} bytes)", source=source)
    return out


def _u24(data: Any, at: int) -> int:
    return int.from_bytes(data[at:at + 3], "big")


def _grib1_length(data: Any, i: int, where: str, source: str) -> int:
    """GRIB1 total length, with ecCodes' large-message rule (``grib_io.c``): a length with
    the 0x800000 bit set counts 120-byte blocks when section 4's length is below 120."""
    length = _u24(data, i + 4)
    if not length & 0x800000:
        return length
    size = len(data)
    p = i + 8
    if p + 8 > size:
        raise CorruptSourceError(f"{where}: truncated inside section 1", source=source)
    s1 = _u24(data, p)
    flags = data[p + 7]
    p += s1
    for present in (flags & 0x80, flags & 0x40):  # sections 2 (grid) and 3 (bitmap)
        if present:
            if p + 3 > size:
                raise CorruptSourceError(f"{where}: truncated inside the message",
                                         source=source)
            p += max(_u24(data, p), 1)
    if p + 3 > size:
        raise CorruptSourceError(f"{where}: truncated inside the message", source=source)
    s4 = _u24(data, p)
    if s4 < 120:
        return (length & 0x7FFFFF) * 120 - s4 + 4
    return length


def _check_grib1_sections(data: Any, i: int, length: int, where: str, source: str) -> None:
    end = i + length - 4
    p = i + 8
    s1 = _u24(data, p)
    if s1 < 28 or p + s1 > end:
        raise CorruptSourceError(
            f"{where}: corrupt: section 1 ({s1} bytes) does not fit in the message",
            source=source)
    flags = data[p + 7]
    p += s1
    for sec, present in ((2, flags & 0x80), (3, flags & 0x40)):
        if present:
            n = _u24(data, p) if p + 3 <= end else 0
            if n < 6 or p + n > end:
                raise CorruptSourceError(
                    f"{where}: corrupt: section {sec} ({n} bytes) does not fit in the message",
                    source=source)
            p += n
    if p + 11 > end:
        raise CorruptSourceError(f"{where}: corrupt: no room for section 4 (data)",
                                 source=source)


def _check_grib2_sections(data: Any, i: int, length: int, where: str, source: str) -> int:
    """Walk sections 1-7: they must tile the message exactly. Returns the number of fields
    (section 7s): more than one is a multi-field message (several fields sharing sections
    1-3), whose fields are read one by one (:func:`zarrport.grib.codec.grib2_field`)."""
    end = i + length - 4
    p = i + 16
    fields = 0
    seen = []
    while p < end:
        if p + 5 > end:
            raise CorruptSourceError(
                f"{where}: corrupt: {end - p} stray bytes before '7777'", source=source)
        n = int.from_bytes(data[p:p + 4], "big")
        sec = data[p + 4]
        if n < 5 or p + n > end or sec not in (1, 2, 3, 4, 5, 6, 7):
            raise CorruptSourceError(
                f"{where}: corrupt: section at byte {p - i} of the message (number {sec}, "
                f"{n} bytes) does not fit in it", source=source)
        seen.append(sec)
        fields += sec == 7
        p += n
    missing = [what for sec, what in ((1, "identification"), (3, "grid definition"),
                                      (7, "data")) if sec not in seen]
    if missing:
        raise CorruptSourceError(
            f"{where}: corrupt: no {' / '.join(missing)} section (sections found: {seen})",
            source=source)
    return fields


# --------------------------------------------------------------------------- keys


def _get(h: Any, key: str, default: Any = None) -> Any:
    import eccodes

    try:
        if not eccodes.codes_is_defined(h, key):
            return default
        value = eccodes.codes_get(h, key)
    except eccodes.GribInternalError:
        return default
    return default if value is None else value


def _minutes(h: Any, key: str, where: str, source: str) -> int | None:
    import eccodes

    if not eccodes.codes_is_defined(h, key):
        return None
    try:
        return int(eccodes.codes_get_long(h, key))
    except eccodes.GribInternalError as e:
        raise UnsupportedVariableError(
            f"{where}: its {key} cannot be expressed in minutes ({_first_line(e)})",
            source=source) from None


def _name(h: Any, short: str, edition: int) -> str:
    if short not in _UNKNOWN:
        return _SAFE.sub("_", short)
    cf = _get(h, "cfVarName")
    if cf not in _UNKNOWN:
        return _SAFE.sub("_", str(cf))
    if edition == 2:
        return "var_{}_{}_{}".format(*(_get(h, k, "x") for k in (
            "discipline", "parameterCategory", "parameterNumber")))
    return "var_{}_{}".format(*(_get(h, k, "x") for k in (
        "table2Version", "indicatorOfParameter")))


def _read_header(h: Any, loc: Located, source: str) -> _Header:
    import eccodes

    from zarrport.grib.build import init_time_of

    where = _where(source, loc.number, loc.offset)
    short = str(_get(h, "shortName", "unknown"))
    name = _name(h, short, loc.edition)
    date, time = _get(h, "dataDate"), _get(h, "dataTime")
    try:
        init = init_time_of(int(date), int(time), int(_get(h, "second", 0) or 0))
    except (TypeError, ValueError):
        raise UnsupportedVariableError(
            f"{where}: reference date/time {date!r} {time!r} is not a calendar date",
            source=source) from None
    if eccodes.codes_is_defined(h, "stepUnits"):
        try:
            eccodes.codes_set(h, "stepUnits", "m")
        except eccodes.GribInternalError as e:
            raise UnsupportedVariableError(
                f"{where}: its forecast step cannot be expressed in minutes "
                f"({_first_line(e)})", source=source) from None
    end = _minutes(h, "endStep", where, source)
    step_type = _get(h, "stepType")
    start = _minutes(h, "startStep", where, source) if step_type == "accum" else None
    minute = np.timedelta64(60, "s")
    # as a double: GRIB2 layers 0-0.1, 0.1-0.4 m have the (long) level 0 for both
    level = eccodes.codes_get_double(h, "level") if eccodes.codes_is_defined(h, "level") \
        else None
    number = _get(h, "number")
    packing = str(_get(h, "packingType", "unknown"))
    if packing == "unknown":
        template = _get(h, "dataRepresentationTemplateNumber",
                        _get(h, "dataRepresentationType"))
        raise UnsupportedVariableError(
            f"{where} ({name}): unsupported packing: ecCodes does not know data "
            f"representation template {template}", source=source)
    float64 = packing == "grid_ieee" and int(_get(h, "precision", 1)) >= 2
    return _Header(
        loc=loc, name=name, short_name=short,
        type_of_level=None if _get(h, "typeOfLevel") is None else str(_get(h, "typeOfLevel")),
        step_type=None if step_type is None else str(step_type),
        level=None if level is None else float(level),
        init_time=init,
        member=None if number is None else int(number),
        step=None if end is None else end * minute,
        window_start=None if start is None else start * minute,
        grid_digest=grid_key(h), float64=float64)


def _describe(h: Any, head: _Header) -> dict[str, Any]:
    """Attributes of a variable, from its first message."""
    attrs: dict[str, Any] = {}
    long_name = _get(h, "name")
    attrs["long_name"] = str(long_name) if long_name not in _UNKNOWN else head.name
    units = _get(h, "units")
    if units not in _UNKNOWN:
        attrs["units"] = str(units)
    cf = _get(h, "cfName")
    if cf not in _UNKNOWN:
        attrs["standard_name"] = str(cf)
    attrs["GRIB_shortName"] = head.short_name
    attrs["GRIB_paramId"] = int(_get(h, "paramId", 0))
    if head.loc.edition == 2:
        for k in ("discipline", "parameterCategory", "parameterNumber"):
            attrs[f"GRIB_{k}"] = int(_get(h, k, -1))
    else:
        for k in ("table2Version", "indicatorOfParameter"):
            attrs[f"GRIB_{k}"] = int(_get(h, k, -1))
    attrs["GRIB_centre"] = str(_get(h, "centre", ""))
    attrs["GRIB_typeOfLevel"] = head.type_of_level or ""
    attrs["GRIB_stepType"] = head.step_type or ""
    attrs["GRIB_gridType"] = str(_get(h, "gridType", ""))
    attrs["GRIB_packingType"] = str(_get(h, "packingType", ""))
    attrs["GRIB_edition"] = head.loc.edition
    return attrs


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:200]


# --------------------------------------------------------------------------- the parser


class GribParser:
    """Any GRIB1/GRIB2 file, without a sidecar index (see the module docstring).

    Parameters
    ----------
    filter_by_keys
        Only messages whose ecCodes keys have these values (a value or a list of accepted
        values), as in cfgrib: ``{"typeOfLevel": "isobaricInhPa"}``,
        ``{"shortName": ["t", "u"]}``. Messages left out are not checked for their grid.
    decoder_scan
        How messages are located: ``auto`` / ``bytes`` walk the indicator sections (fast,
        works on any byte source); ``eccodes`` lets ecCodes walk the file
        (``codes_grib_new_from_file``, local files only) and cross-checks it with the byte
        walk -- slower, for diagnosis.
    """

    def __init__(self, filter_by_keys: Mapping[str, Any] | None = None,
                 decoder_scan: str = "auto") -> None:
        if decoder_scan not in SCANS:
            raise InvalidArgumentError(
                f"decoder_scan={decoder_scan!r}: one of {', '.join(SCANS)}")
        self.filter_by_keys = {str(k): _accepted(v) for k, v in (filter_by_keys or {}).items()}
        self.decoder_scan = decoder_scan

    def __call__(self, url: str, registry: Any) -> Any:
        """VirtualiZarr's parser protocol: the file as a ``ManifestStore``."""
        built = self.build(url, registry)
        return to_manifest_store(built, registry)

    # -- reading the file
    def _read(self, url: str, registry: Any) -> tuple[Any, dict[str, Any]]:
        if url.startswith("file://"):
            path = url.removeprefix("file://")
            if os.path.isdir(path):
                raise NotAFileError(f"{url}: a directory, not a GRIB file", source=url)
            try:
                st = os.stat(path)
                if st.st_size == 0:
                    raise UnrecognizedFormatError(f"{url}: empty file, not GRIB", source=url)
                with open(path, "rb") as f:
                    data: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except FileNotFoundError:
                raise SourceNotFoundError(f"no such file: {url}", source=url) from None
            except PermissionError as e:
                raise StorageError(f"cannot read {url}: {e}", source=url) from None
            return data, {"url": url, "size": st.st_size, "etag": None, "mtime": st.st_mtime}
        from zarrport.grib.fetch import Fetcher

        got = Fetcher(registry).get_many([url])
        if url not in got:
            raise SourceNotFoundError(f"no such object: {url}", source=url)
        data = got[url]
        if not data:
            raise UnrecognizedFormatError(f"{url}: empty object, not GRIB", source=url)
        return data, {"url": url, "size": len(data), "etag": None, "mtime": None,
                      **_head(url, registry)}

    def locate(self, data: Any, url: str) -> list[Located]:
        located = locate_messages(data, url)
        if self.decoder_scan == "eccodes":
            _cross_check(located, url)
        return located

    def build(self, url: str, registry: Any) -> Built:
        """Scan ``url`` and build zarrport's model (coordinates inlined)."""
        import eccodes

        from zarrport import storage

        url = storage.normalize_url(url)
        data, stat = self._read(url, registry)
        try:
            located = self.locate(data, url)
            heads: list[_Header] = []
            grids: dict[str, Grid] = {}
            canonical: dict[str, str] = {}  # grid digest -> canonical grid key
            first_of_grid: dict[tuple[Any, ...], str] = {}
            described: dict[tuple[Any, ...], dict[str, Any]] = {}
            for loc, k, message in _messages(data, located, url):
                where = _where(url, loc.number, loc.offset) + (
                    f" field {k + 1}" if k is not None else "")
                try:
                    h = eccodes.codes_new_from_message(message)
                except Exception as e:  # noqa: BLE001 - eccodes raises many types
                    raise CorruptSourceError(
                        f"{where}: corrupt: ecCodes cannot read it ({_first_line(e)})",
                        source=url) from None
                try:
                    if not self._wanted(h):
                        continue
                    try:
                        head = _read_header(h, loc, url)
                        head.message_field = k
                        if head.grid_digest not in canonical:
                            grid = self._grid(h, head, url)
                            same = (grid.grid_type, grid.layout, grid.latitude.tobytes(),
                                    grid.longitude.tobytes())
                            key = first_of_grid.setdefault(same, grid.key)
                            grids.setdefault(key, grid)
                            canonical[head.grid_digest] = key
                        head.grid = canonical[head.grid_digest]
                        head.group = (head.name, head.type_of_level, head.step_type,
                                      head.grid)
                        if head.group not in described:
                            described[head.group] = _describe(h, head)
                    except ZarrportError:
                        raise
                    except Exception as e:  # noqa: BLE001 - a key ecCodes cannot compute
                        raise CorruptSourceError(
                            f"{where}: corrupt: ecCodes cannot read its header "
                            f"({type(e).__name__}: {_first_line(e)})", source=url) from None
                finally:
                    eccodes.codes_release(h)
                heads.append(head)
        finally:
            if isinstance(data, mmap.mmap):
                data.close()
        if not heads:
            raise InvalidArgumentError(
                f"{url}: none of its {len(located)} messages matches filter_by_keys="
                f"{self.filter_by_keys}", source=url)
        return self._assemble(url, heads, grids, described, stat)

    def _wanted(self, h: Any) -> bool:
        for key, accepted in self.filter_by_keys.items():
            value = _get(h, key)
            if value is None or not any(value == a or str(value) == str(a) for a in accepted):
                return False
        return True

    @staticmethod
    def _grid(h: Any, head: _Header, url: str) -> Grid:
        where = _where(url, head.loc.number, head.loc.offset)
        what = f"{head.name} on {head.type_of_level or 'no level type'}"
        grid_type = str(_get(h, "gridType", "unknown"))
        if grid_type == "sh":
            raise UnsupportedVariableError(
                f"{where} ({what}): unsupported grid: sh (spherical harmonics: spectral "
                "coefficients, not values on a grid)", source=url)
        try:
            return grid_from_handle(h, source=url)
        except UnsupportedVariableError as e:
            raise UnsupportedVariableError(f"{where} ({what}): {e}", source=url) from None

    # -- variables
    def _assemble(self, url: str, heads: list[_Header], grids: dict[str, Grid],
                  described: dict[tuple[Any, ...], dict[str, Any]],
                  stat: dict[str, Any]) -> Built:
        groups: dict[tuple[Any, ...], list[_Header]] = {}
        for head in heads:
            groups.setdefault(head.group, []).append(head)
        names = _variable_names(list(groups), grids, heads)
        fields: list[Field] = []
        for group, members in groups.items():
            name = names[group]
            attrs = dict(described[group])
            editions = sorted({m.loc.edition for m in members})
            attrs["GRIB_edition"] = editions[0] if len(editions) == 1 else editions
            attrs.update(_constant_attrs(members))
            dtype = "float64" if any(m.float64 for m in members) else "float32"
            _check_duplicates(name, members, url)
            for m in members:
                fields.append(Field(
                    url=url, offset=m.loc.offset, length=m.loc.length, name=name,
                    grid=m.grid, init_time=m.init_time, member=m.member, step=m.step,
                    level=m.level, level_type=m.type_of_level, window_start=m.window_start,
                    dtype=dtype, attrs=attrs, message_field=m.message_field))
        # file order: grid numbering follows the file
        fields.sort(key=lambda f: (f.offset, f.message_field or 0))
        centres = {a.get("GRIB_centre") for a in described.values()}
        attrs: dict[str, Any] = {"source": url}
        if len(centres) == 1:
            attrs["GRIB_centre"] = next(iter(centres))
        try:
            return build_dataset(fields, grids, attrs=attrs, source_stats={url: stat})
        except IncompatibleSourcesError as e:
            raise IncompatibleSourcesError(f"{url}: {e}", source=url) from None


def _messages(data: Any, located: list[Located], url: str) -> Any:
    """(location, field number or None, bytes) of every field: a multi-field message gives
    each of its fields as a message of its own."""
    from zarrport.grib.codec import grib2_field

    for loc in located:
        message = bytes(data[loc.offset:loc.offset + loc.length])
        if loc.fields == 1:
            yield loc, None, message
            continue
        for k in range(loc.fields):
            try:
                yield loc, k, grib2_field(message, k)
            except CorruptSourceError as e:
                raise CorruptSourceError(f"{_where(url, loc.number, loc.offset)}: {e}",
                                         source=url) from None


def _accepted(value: Any) -> list[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return [value]
    return list(value)


def _head(url: str, registry: Any) -> dict[str, Any]:
    """ETag and modification time of a remote object (for Icechunk's change checks)."""
    try:
        import obstore

        store, path = registry.resolve(url)
        meta = obstore.head(store, str(path))
    except Exception:  # noqa: BLE001 - best effort: stats only guard against rewrites
        return {}
    mtime = meta.get("last_modified")
    return {"etag": meta.get("e_tag"),
            "mtime": mtime.timestamp() if mtime is not None else None}


def _cross_check(located: list[Located], url: str) -> None:
    """ecCodes' own walk must find the same messages as the byte walk."""
    import eccodes

    if not url.startswith("file://"):
        raise InvalidArgumentError(
            f"{url}: decoder_scan='eccodes' reads local files only", source=url)
    found = []
    with open(url.removeprefix("file://"), "rb") as f:
        while True:
            try:
                h = eccodes.codes_grib_new_from_file(f, headers_only=True)
            except Exception as e:  # noqa: BLE001
                raise CorruptSourceError(
                    f"{url}: message {len(found) + 1}: ecCodes cannot read it "
                    f"({_first_line(e)})", source=url) from None
            if h is None:
                break
            try:
                found.append((int(eccodes.codes_get(h, "offset")),
                              int(eccodes.codes_get(h, "totalLength"))))
            finally:
                eccodes.codes_release(h)
    ours = [(m.offset, m.length) for m in located]
    if found != ours:
        k = next((k for k, (x, y) in enumerate(zip(found, ours, strict=False)) if x != y),
                 min(len(found), len(ours)))
        raise CorruptSourceError(
            f"{url}: ecCodes finds {len(found)} messages, the byte walk {len(ours)}; they "
            f"differ from message {k + 1} on", source=url)


def _variable_names(groups: list[tuple[Any, ...]], grids: dict[str, Grid],
                    heads: list[_Header]) -> dict[tuple[Any, ...], str]:
    """Deterministic names (module docstring): suffixes only where a name is shared."""
    grid_number = {k: n for n, k in enumerate(dict.fromkeys(
        h.grid for h in sorted(heads, key=lambda h: h.loc.offset)))}
    by_name: dict[str, list[tuple[Any, ...]]] = {}
    for g in groups:
        by_name.setdefault(g[0], []).append(g)
    out: dict[tuple[Any, ...], str] = {}
    for name, gs in by_name.items():
        if len(gs) == 1:
            out[gs[0]] = name
            continue
        levels = len({g[1] for g in gs}) > 1
        steps = len({g[2] for g in gs}) > 1
        grid_types = {grids[g[3]].grid_type for g in gs}
        grids_vary = len({g[3] for g in gs}) > 1
        for g in gs:
            parts = [name]
            if levels:
                parts.append(g[1] or "nolevel")
            if steps:
                parts.append(g[2] or "nosteptype")
            if grids_vary:
                parts.append(grids[g[3]].grid_type if len(grid_types) > 1
                             else f"grid{grid_number[g[3]]}")
            out[g] = _SAFE.sub("_", "_".join(parts))
    taken: set[str] = set()
    for g in groups:  # groups are in file order
        base, k = out[g], 2
        while out[g] in taken:
            out[g] = f"{base}_{k}"
            k += 1
        taken.add(out[g])
    return out


def _constant_attrs(members: list[_Header]) -> dict[str, Any]:
    """Coordinates with one value in the variable (not dimensions) as attributes."""
    out: dict[str, Any] = {}
    minute = np.timedelta64(60, "s")
    inits = {m.init_time for m in members}
    if len(inits) == 1:
        out["GRIB_init_time"] = str(np.datetime64(next(iter(inits)), "s"))
    for attr, values, conv in (
        ("GRIB_member", {m.member for m in members}, int),
        ("GRIB_step_minutes", {m.step for m in members}, lambda v: int(v // minute)),
        ("GRIB_level", {m.level for m in members}, float),
        ("GRIB_window_start_minutes", {m.window_start for m in members},
         lambda v: int(v // minute)),
    ):
        if len(values) == 1 and None not in values:
            out[attr] = conv(next(iter(values)))
    return out


def _check_duplicates(name: str, members: list[_Header], url: str) -> None:
    """Two messages of one variable at the same coordinates: refuse, naming both and the
    keys that tell them apart (build_dataset would refuse too, less precisely)."""
    with_member = next((m for m in members if m.member is not None), None)
    without = next((m for m in members if m.member is None), None)
    if with_member is not None and without is not None:
        a, b = with_member.loc, without.loc
        raise IncompatibleSourcesError(
            f"{url}: variable {name!r}: message {a.number} (byte {a.offset}, GRIB{a.edition}) "
            f"has the ensemble member number {with_member.member}, message {b.number} (byte "
            f"{b.offset}, GRIB{b.edition}) has none; select one kind with filter_by_keys "
            f"(e.g. {{'edition': {b.edition}}})", source=url)
    seen: dict[tuple[Any, ...], _Header] = {}
    for m in members:
        key = (m.init_time, m.member, m.step, m.level)
        other = seen.setdefault(key, m)
        if other is m:
            continue
        a, b = other.loc, m.loc
        raise IncompatibleSourcesError(
            f"{url}: variable {name!r}: messages {a.number} (byte {a.offset}) and {b.number} "
            f"(byte {b.offset}) are at the same init_time/member/step/level and differ in "
            f"{_differing_keys(url, a, b)}; select one with filter_by_keys", source=url)


def _differing_keys(url: str, a: Located, b: Located) -> str:
    """The ecCodes keys (of a few tens worth naming) whose values differ between two
    messages, for the duplicate error."""
    import eccodes

    candidates = ("stepRange", "startStep", "typeOfStatisticalProcessing",
                  "productDefinitionTemplateNumber", "probabilityType",
                  "scaledValueOfLowerLimit", "scaledValueOfUpperLimit",
                  "typeOfFirstFixedSurface", "typeOfSecondFixedSurface", "bottomLevel",
                  "topLevel", "scaledValueOfSecondFixedSurface", "perturbationNumber",
                  "typeOfGeneratingProcess", "generatingProcessIdentifier",
                  "typeOfProcessedData", "dataType", "paramId", "parameterNumber",
                  "timeRangeIndicator", "derivedForecast", "percentileValue",
                  "aerosolType", "constituentType", "bitsPerValue")
    if not url.startswith("file://"):
        return "keys zarrport does not map to a dimension"
    values = []
    try:
        with open(url.removeprefix("file://"), "rb") as f:
            for loc in (a, b):
                f.seek(loc.offset)
                h = eccodes.codes_new_from_message(f.read(loc.length))
                try:
                    values.append({k: _get(h, k) for k in candidates})
                finally:
                    eccodes.codes_release(h)
    except Exception:  # noqa: BLE001 - only for the error message
        return "keys zarrport does not map to a dimension"
    diff = [f"{k} ({values[0][k]} / {values[1][k]})" for k in candidates
            if values[0][k] != values[1][k]]
    return ", ".join(diff[:4]) if diff else "keys zarrport does not map to a dimension"


__all__ = ["GribParser", "Located", "locate_messages"]
