"""GRIB sidecar indexes: NOAA's wgrib2 inventories (``.idx``) and ECMWF's ``.index``.

A wgrib2 inventory has one line per field::

    36.1:1781393:d=2026070200:UGRD:10 m above ground:6 hour fcst:
    36.2:1781393:d=2026070200:VGRD:10 m above ground:6 hour fcst:

-- message number (``36.1``/``36.2``: two fields in one GRIB2 message, at one offset), the
message's byte offset, the reference time, the variable (``var discipline=0 center=7 ...
parmcat=16 parm=201`` where wgrib2 has no name for it), the level, the forecast time, and
optional further fields (ensemble member, probability ...). A message's length is the
distance to the next message's offset, or to the end of the file for the last one.

ECMWF's open-data ``.index`` is JSON lines, one per message, with ``_offset`` and
``_length`` and the MARS keys (``param``, ``levtype``, ``levelist``, ``number``, ``step``
...). The control forecast has no ``number``.

Both parse to the same :class:`IndexEntry` list; nothing here reads the GRIB file itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zarrport.errors import CorruptSourceError, UnrecognizedFormatError

_UNNAMED = re.compile(r"var discipline=(\d+) .*?parmcat=(\d+) parm=(\d+)")

#: a wgrib2 line: message[.field]:offset:then at least d=date:param:level:forecast
_LINE = re.compile(r"^(\d+)(?:\.(\d+))?:(\d+):([^\r\n]*)", re.M)

#: ``select(name, level) -> bool``: which fields to return (every line still counts for the
#: message lengths). A GEFS file has ~70 lines and a cycle 2,015 files; building entries
#: only for the wanted fields is most of the manifest's speed.
Select = Callable[[str, str], bool]


def field_name(param: str) -> str:
    """``param``, or ``var_D_C_N`` for wgrib2's ``var discipline=D ... parmcat=C parm=N``."""
    if not param.startswith("var "):
        return param
    m = _UNNAMED.match(param)
    return f"var_{m.group(1)}_{m.group(2)}_{m.group(3)}" if m else param


@dataclass(frozen=True)
class IndexEntry:
    """One field of a GRIB file as its index describes it."""

    #: 1-based message number (wgrib2) or line number (ECMWF)
    message: int
    #: field within a multi-field GRIB2 message (``36.2`` -> 2), None for single fields
    field: int | None
    #: byte offset of the GRIB message holding the field, and the message's length
    offset: int
    length: int | None
    #: parameter as the index names it (``UGRD``, ``tp``, or ``var discipline=...``)
    param: str
    #: level (``10 m above ground``; ECMWF: levtype, with levelist when present)
    level: str
    #: wgrib2: reference time ``YYYYMMDDHH``, forecast text, further fields;
    #: ECMWF: every key of the line
    keys: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """A variable name: the parameter, or ``var_D_C_N`` (discipline, category, number)
        for fields wgrib2 has no name for."""
        return field_name(self.param)


def parse_wgrib2_idx(text: str, *, source: str, file_size: int | None = None,
                     select: Select | None = None) -> list[IndexEntry]:
    """Entries of a wgrib2 inventory; lengths need ``file_size`` for the last message.
    ``select(name, level)`` keeps only the fields it accepts (all lines are validated)."""
    # one regex pass in C over the whole text (a cycle has ~140,000 lines); only when a line
    # does not match is the text walked line by line, to name the bad line
    found = _LINE.findall(text)
    nonblank = sum(1 for line in text.splitlines() if line.strip())
    if len(found) != nonblank or any(rest.count(":") < 3 for *_, rest in found):
        for lineno, line in enumerate(text.splitlines(), 1):
            m = _LINE.fullmatch(line.strip("\r"))
            if line.strip() and (m is None or m.group(4).count(":") < 3):
                raise CorruptSourceError(
                    f"{source}: line {lineno} is not a wgrib2 inventory line "
                    f"(message:offset:d=date:param:level:forecast:): {line[:80]!r}",
                    source=source)
    rows = [(int(msg), int(sub) if sub else None, int(off), rest.split(":"))
            for msg, sub, off, rest in found]
    if not rows:
        raise UnrecognizedFormatError(f"{source}: empty index", source=source)
    offsets = [r[2] for r in rows]
    if any(b < a for a, b in zip(offsets, offsets[1:], strict=False)):
        k = next(i for i in range(1, len(rows)) if offsets[i] < offsets[i - 1])
        raise CorruptSourceError(
            f"{source}: message {rows[k][0]} starts at byte {offsets[k]}, before message "
            f"{rows[k - 1][0]} (byte {offsets[k - 1]}): the offsets must not decrease",
            source=source)
    starts = sorted(set(offsets))
    if file_size is not None and starts[-1] >= file_size:
        bad = next(r for r in rows if r[2] >= file_size)
        raise CorruptSourceError(
            f"{source}: message {bad[0]} starts at byte {bad[2]}, past the end of the GRIB "
            f"file ({file_size} bytes): the index is for another file", source=source)
    ends = dict(zip(starts, [*starts[1:], file_size], strict=True))
    out = []
    for msg, fld, offset, rest in rows:
        if select is not None and not select(field_name(rest[1]), rest[2]):
            continue
        end = ends[offset]
        keys: dict[str, Any] = {"date": rest[0].removeprefix("d="), "forecast": rest[3]}
        extra = [x for x in rest[4:] if x]
        if extra:
            keys["extra"] = extra
        out.append(IndexEntry(message=msg, field=fld, offset=offset,
                              length=None if end is None else end - offset,
                              param=rest[1], level=rest[2], keys=keys))
    return out


def parse_ecmwf_index(text: str, *, source: str, file_size: int | None = None,
                      select: Select | None = None) -> list[IndexEntry]:
    """Entries of an ECMWF open-data ``.index`` (JSON lines with ``_offset``/``_length``)."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            keys = json.loads(line)
            offset, length = int(keys.pop("_offset")), int(keys.pop("_length"))
            param = str(keys["param"])
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise CorruptSourceError(
                f"{source}: line {lineno} is not an ECMWF index entry with _offset, _length "
                f"and param ({type(err).__name__}: {err})", source=source) from err
        if file_size is not None and offset + length > file_size:
            raise CorruptSourceError(
                f"{source}: message {lineno} (param {param}) ends at byte {offset + length}, "
                f"past the end of the GRIB file ({file_size} bytes): the index is for another "
                "file", source=source)
        level = str(keys.get("levtype", ""))
        if "levelist" in keys:
            level = f"{level} {keys['levelist']}"
        if select is not None and not select(param, level):
            continue
        out.append(IndexEntry(message=lineno, field=None, offset=offset, length=length,
                              param=param, level=level, keys=keys))
    if not out and select is None:
        raise UnrecognizedFormatError(f"{source}: empty index", source=source)
    return out


def parse_index(data: bytes, *, source: str, file_size: int | None = None,
                select: Select | None = None) -> list[IndexEntry]:
    """Either kind, recognised from the content."""
    if data[:8] == b"!GFHDR!\x20" or b"GB1IX1" in data[:100]:
        raise UnrecognizedFormatError(
            f"{source}: a binary GRIB1 grbindex file, not a wgrib2 inventory or ECMWF index",
            source=source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UnrecognizedFormatError(f"{source}: not a text index ({err})",
                                      source=source) from err
    if text.lstrip().startswith("{"):
        return parse_ecmwf_index(text, source=source, file_size=file_size, select=select)
    return parse_wgrib2_idx(text, source=source, file_size=file_size, select=select)
