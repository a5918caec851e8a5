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
from dataclasses import dataclass, field
from typing import Any

from zarrport.errors import CorruptSourceError, UnrecognizedFormatError

_MESSAGE = re.compile(r"^(\d+)(?:\.(\d+))?$")
_UNNAMED = re.compile(r"var discipline=(\d+) .*?parmcat=(\d+) parm=(\d+)")


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
        m = _UNNAMED.match(self.param)
        return f"var_{m.group(1)}_{m.group(2)}_{m.group(3)}" if m else self.param


def parse_wgrib2_idx(text: str, *, source: str, file_size: int | None = None
                     ) -> list[IndexEntry]:
    """Entries of a wgrib2 inventory; lengths need ``file_size`` for the last message."""
    rows: list[tuple[int, int | None, int, list[str]]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(":")
        m = _MESSAGE.match(parts[0])
        if len(parts) < 6 or m is None or not parts[1].isdigit():
            raise CorruptSourceError(
                f"{source}: line {lineno} is not a wgrib2 inventory line "
                f"(message:offset:d=date:param:level:forecast:): {line[:80]!r}", source=source)
        rows.append((int(m.group(1)), int(m.group(2)) if m.group(2) else None,
                     int(parts[1]), parts[2:]))
    if not rows:
        raise UnrecognizedFormatError(f"{source}: empty index", source=source)
    starts = sorted({offset for _, _, offset, _ in rows})
    for (msg, _f, offset, _p), (msg2, _f2, offset2, _p2) in zip(rows, rows[1:], strict=False):
        if offset2 < offset:
            raise CorruptSourceError(
                f"{source}: message {msg2} starts at byte {offset2}, before message {msg} "
                f"(byte {offset}): the offsets must not decrease", source=source)
    if file_size is not None and starts[-1] >= file_size:
        bad = next(r for r in rows if r[2] >= file_size)
        raise CorruptSourceError(
            f"{source}: message {bad[0]} starts at byte {bad[2]}, past the end of the GRIB "
            f"file ({file_size} bytes): the index is for another file", source=source)
    ends = dict(zip(starts, [*starts[1:], file_size], strict=True))
    out = []
    for msg, fld, offset, rest in rows:
        end = ends[offset]
        keys: dict[str, Any] = {"date": rest[0].removeprefix("d="), "forecast": rest[3]}
        extra = [x for x in rest[4:] if x]
        if extra:
            keys["extra"] = extra
        out.append(IndexEntry(message=msg, field=fld, offset=offset,
                              length=None if end is None else end - offset,
                              param=rest[1], level=rest[2], keys=keys))
    return out


def parse_ecmwf_index(text: str, *, source: str, file_size: int | None = None
                      ) -> list[IndexEntry]:
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
        out.append(IndexEntry(message=lineno, field=None, offset=offset, length=length,
                              param=param, level=level, keys=keys))
    if not out:
        raise UnrecognizedFormatError(f"{source}: empty index", source=source)
    return out


def parse_index(data: bytes, *, source: str, file_size: int | None = None
                ) -> list[IndexEntry]:
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
        return parse_ecmwf_index(text, source=source, file_size=file_size)
    return parse_wgrib2_idx(text, source=source, file_size=file_size)
