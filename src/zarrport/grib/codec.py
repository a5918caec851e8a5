"""A Zarr v3 array->bytes codec whose encoded chunk is one whole GRIB message.

Registered through the ``zarr.codecs`` entry point as ``zarrport.grib`` (pyproject.toml),
so any process that has zarrport installed and opens a store written by it finds the
codec without importing anything first.

Configuration (all JSON, stored in the array metadata)::

    {"name": "zarrport.grib",
     "configuration": {"layout": {"rows": 721, "cols": 1440, "transpose": false,
                                  "flip_rows": true, "flip_cols": false, "roll": 720},
                       "field": "values", "decoder": "auto"}}

* ``field``: ``values`` (the message's data, bitmap-missing points as NaN), ``latitude`` /
  ``longitude`` (the grid's coordinates, so a coordinate can be read through the same
  message), or ``key:<name>`` (one header key per chunk, e.g. ``key:endStep``).
* ``layout``: :class:`zarrport.grib.grid.Layout` -- reshape, scanning flips and the
  longitude roll, identical for values and coordinates.
* ``message_field`` (optional): the chunk is a multi-field GRIB2 message and the array
  holds its field number ``message_field`` (0-based); that field is cut out as a message
  of its own (:func:`grib2_field`) before decoding.
* ``decoder``: ``auto`` picks, per packing (data representation template), field size and
  bitmap, the decoder ``bench/bench_grib_decode.py`` measured fastest *and* exact
  (:data:`FASTEST`, :data:`FASTEST_WITH_BITMAP`, :data:`GRIBBERISH_UP_TO`); ``eccodes`` or
  ``gribberish`` force one. gribberish is never trusted blindly: messages it is known to
  get wrong (:func:`gribberish_unsuitable`) go to eccodes, the reference decoder, and so
  does any other failure of it, Rust panics (``pyo3_runtime.PanicException``, a
  BaseException) included. Values are float64 as eccodes computes them, cast to the
  array's dtype.

Missing values are exact for every packing: NaN exactly where the bitmap (or complex
packing's missing value management) says absent, checked on gribberish's output
(:func:`_check_missing`); a message whose bitmap marks every point absent and that packs
no value is all NaN without a decoder (:func:`_all_missing`).

A message that no decoder can read raises :class:`~zarrport.errors.CorruptSourceError`
(one line, naming the message's first bytes), never a panic.
"""

from __future__ import annotations

import asyncio
import functools
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer

from zarrport.errors import CorruptSourceError
from zarrport.grib.grid import Layout, wrap_longitude

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec

CODEC_NAME = "zarrport.grib"
DECODERS = ("auto", "eccodes", "gribberish")

#: data representation template -> the decoder measured fastest on a 721 x 1440 field
#: without bitmap, among those exact on it (bench/bench_grib_decode.py, docs/benchmarks.md).
#: Not listed: eccodes.
FASTEST: dict[int, str] = {
    0: "eccodes",      # simple packing: gribberish 2x slower
    2: "eccodes",      # complex packing: gribberish 2x slower
    3: "eccodes",      # complex packing with spatial differencing: gribberish 3x slower
    4: "eccodes",      # IEEE floating point: gribberish cannot read it
    40: "eccodes",     # JPEG 2000: both spend their time in OpenJPEG, a tie
    41: "gribberish",  # PNG: gribberish 1.8-2x faster
    42: "eccodes",     # CCSDS: gribberish 1.3x slower
}

#: the same for a field with a bitmap, where it differs. Empty: eccodes expands bitmaps
#: slowly, yet gribberish was not measurably faster on a quiet machine (simple packing: a
#: tie, 1.04x; 1.1-1.5x only under load; CCSDS: 1.09x)
FASTEST_WITH_BITMAP: dict[int, str] = {}

#: data representation template -> the largest field (points) up to which gribberish beat
#: eccodes by >= 10 % at every size measured, in every run (at the next size up it was
#: borderline or slower). eccodes spends ~0.3 ms on every message before it decodes a
#: value, gribberish next to nothing, so small fields go to gribberish even where eccodes
#: decodes faster per value.
#: Re-measured with gribberish 1.9.0 / ecCodes 2.50 (gribberish / eccodes time at 10,512,
#: 29,040, 65,160 points: 5.0 0.22, 0.50, 0.98; 5.2 0.52, 1.01, -; 5.3 0.36, 0.84, 1.17;
#: 5.40 0.76, 0.88, 0.93; 5.42 0.30, 0.59, 0.85): the limits below still hold; 5.2 joins.
GRIBBERISH_UP_TO: dict[int, int] = {0: 29_040, 2: 10_512, 3: 10_512, 40: 10_512,
                                    42: 65_160}

#: templates on which gribberish matches eccodes bit for bit (apart from the messages
#: :func:`gribberish_unsuitable` singles out), checked with gribberish 1.9.0 on every real
#: GRIB2 message and ~60,000 fields written by ecCodes 2.50 and NCEP g2c 1.7. 5.2 joined
#: with gribberish 1.x (0.30 panicked on it). Not 4 (IEEE): gribberish 1.9.0 still raises
#: "Failed to unpack the data representation template".
GRIBBERISH_TEMPLATES = frozenset({0, 2, 3, 40, 41, 42})


class Packing(NamedTuple):
    """What the choice of decoder depends on, from sections 5 and 6 of a GRIB2 message."""

    template: int
    #: bits per packed value (complex packing: per group reference; -1: not in the section)
    bits: int
    #: decimal scale factor D (values are scaled by 10**-D)
    decimal_scale: int
    #: a bitmap marks missing points (section 6)
    bitmap: bool = False
    #: complex packing (5.2, 5.3): missing value management (0: none), number of groups,
    #: reference and bit count of the group widths, bit count of the scaled group lengths
    missing_management: int = 0
    groups: int = 0
    width_reference: int = 0
    width_bits: int = 0
    length_bits: int = 0
    #: CCSDS (5.42): libaec flags
    ccsds_flags: int = 0
    #: reference value R (the packed minimum: every value is >= R * 10**-D)
    reference: float = 0.0


_U16, _U32, _U64, _F32 = (struct.Struct(f">{c}").unpack_from for c in "HIQf")


def grib2_sections(message: bytes) -> dict[int, tuple[int, int]] | None:
    """Section number -> (offset, length) of the first occurrence of each section of a
    GRIB2 message, or None unless the bytes start with one well-formed message: ``GRIB``,
    edition 2, a total length within the bytes (padding after it is ignored), sections of
    at least 5 bytes numbered 1 to 7 that end exactly at the closing ``7777``. Checked
    before gribberish sees a message: it loops forever on a zero section length."""
    if len(message) < 20 or message[:4] != b"GRIB" or message[7] != 2:
        return None
    n = _U64(message, 8)[0]
    if not 20 <= n <= len(message) or message[n - 4:n] != b"7777":
        return None
    sections: dict[int, tuple[int, int]] = {}
    pos, end = 16, n - 4
    while pos < end:
        if pos + 5 > end:
            return None
        length = _U32(message, pos)[0]
        number = message[pos + 4]
        if length < 5 or pos + length > end or not 1 <= number <= 7:
            return None
        sections.setdefault(number, (pos, length))
        pos += length
    return sections if 5 in sections and 6 in sections and 7 in sections else None


def grib2_field(message: bytes, k: int) -> bytes:
    """Field ``k`` (0-based) of a multi-field GRIB2 message as a message of its own:
    sections 0 and 1, the latest sections 2 and 3 before it, its sections 4, 5, 6 and 7,
    ``7777``. A section 6 saying "the bitmap defined before applies" (indicator 254) is
    replaced by the latest one that defines a bitmap (WMO GRIB2 regulation 92.9.3)."""
    if len(message) < 20 or message[:4] != b"GRIB" or message[7] != 2:
        raise CorruptSourceError("not a GRIB2 message: cannot take one of its fields")
    n = _U64(message, 8)[0]
    pos, end = 16, min(n, len(message)) - 4
    latest: dict[int, bytes] = {}
    defined_bitmap: bytes | None = None
    count = -1
    while pos + 5 <= end:
        length, number = _U32(message, pos)[0], message[pos + 4]
        if length < 5 or pos + length > end:
            break
        sec = bytes(message[pos:pos + length])
        if number == 6 and length >= 6:
            if sec[5] == 254:
                if defined_bitmap is None:
                    raise CorruptSourceError(
                        f"GRIB2 field {count + 2} refers to a previously defined bitmap, "
                        "but no earlier field defines one")
                sec = defined_bitmap
            elif sec[5] == 0:
                defined_bitmap = sec
        latest[number] = sec
        if number == 7:
            count += 1
            if count == k:
                missing = [x for x in (1, 3, 4, 5, 6) if x not in latest]
                if missing:
                    raise CorruptSourceError(
                        f"GRIB2 field {k + 1} has no section(s) {missing} before its data")
                body = b"".join(latest[x] for x in (1, 2, 3, 4, 5, 6, 7) if x in latest)
                total = 16 + len(body) + 4
                return bytes(message[:8]) + total.to_bytes(8, "big") + body + b"7777"
        pos += length
    raise CorruptSourceError(f"GRIB2 message has {count + 1} field(s), no field {k + 1}")


def packing(message: bytes) -> Packing | None:
    """How a GRIB2 message's data are packed, read from the bytes without decoding; None
    for GRIB1 or bytes that are not one well-formed GRIB2 message (:func:`grib2_sections`)."""
    sections = grib2_sections(message)
    if sections is None:
        return None
    pos, length = sections[5]
    if length < 11:
        return None
    template = _U16(message, pos + 9)[0]
    if length < 20:  # shorter than the fields every grid-point packing has (5.0: 21)
        return Packing(template, -1, 0)
    d = _U16(message, pos + 17)[0]
    decimal = -(d & 0x7FFF) if d & 0x8000 else d  # GRIB2 signs are sign-magnitude
    bits = message[pos + 19]
    bitmap = message[sections[6][0] + 5] != 255  # 255: no bitmap
    reference = _F32(message, pos + 11)[0]
    if template in (2, 3):
        if length < 47:  # truncated: never gribberish's
            return Packing(template, -1, decimal, bitmap, 1)
        return Packing(template, bits, decimal, bitmap, message[pos + 22],
                       _U32(message, pos + 31)[0], message[pos + 35], message[pos + 36],
                       message[pos + 46], reference=reference)
    if template == 42 and length >= 22:
        return Packing(template, bits, decimal, bitmap, ccsds_flags=message[pos + 21],
                       reference=reference)
    return Packing(template, bits, decimal, bitmap, reference=reference)


def bitmap(message: bytes) -> np.ndarray | None:
    """The points a GRIB2 message's bitmap (section 6, indicator 0) marks present, as a
    boolean array in storage order; None without a bitmap of its own (indicator 255, or a
    predefined / previously defined one, which eccodes resolves), for GRIB1, or for bytes
    that are not one well-formed GRIB2 message."""
    sections = grib2_sections(message)
    if sections is None or 3 not in sections:
        return None
    pos, length = sections[6]
    if length < 6 or message[pos + 5] != 0:
        return None
    s3, s3_length = sections[3]
    if s3_length < 10:
        return None
    n = _U32(message, s3 + 6)[0]
    if (length - 6) * 8 < n:
        return None
    bits = np.frombuffer(message, dtype=np.uint8, count=length - 6, offset=pos + 6)
    return np.unpackbits(bits, count=n).astype(bool)


def packed_values(message: bytes) -> int | None:
    """Section 5's number of data points with a value (the points the bitmap marks
    present), or None for GRIB1 or bytes that are not one well-formed GRIB2 message."""
    sections = grib2_sections(message)
    if sections is None or sections[5][1] < 9:
        return None
    return _U32(message, sections[5][0] + 5)[0]


def _all_missing(message: bytes, npoints: int) -> bool:
    """True for a GRIB2 message whose own bitmap marks every one of ``npoints`` absent and
    whose section 5 packs no value: every decoder must give NaN everywhere, and
    gribberish 1.9.0 loops forever on such a JPEG 2000 message (an empty section 7), so
    nothing is decoded. A bitmap of zeros over packed values is inconsistent: eccodes
    decides."""
    if packed_values(message) != 0:  # cheap: most messages stop here
        return False
    mask = bitmap(message)
    return mask is not None and mask.size == npoints and not mask.any()


def packing_template(message: bytes) -> int | None:
    """GRIB2 data representation template number (section 5), read from the bytes without
    decoding; None for GRIB1 or a message too short to hold one."""
    p = packing(message)
    return None if p is None else p.template


def _eccodes_power(s: int, n: int) -> float:
    """ecCodes' ``codes_power``: n**s by repeated multiplication or division."""
    out = 1.0
    while s < 0:
        out /= n
        s += 1
    while s > 0:
        out *= n
        s -= 1
    return out


def _rust_powi(a: float, b: int) -> float:
    """Rust's ``f64::powi`` (LLVM ``__powidf2``): square-and-multiply, then 1/x."""
    recip, b, out = b < 0, abs(b), 1.0
    while True:
        if b & 1:
            out *= a
        b //= 2
        if b == 0:
            break
        a *= a
    return 1.0 / out if recip else out


def gribberish_unsuitable(message: bytes) -> str | None:
    """Why gribberish would not give eccodes' values for this message, or None.

    Each rule is a mismatch found on real files or on fields written by ecCodes and NCEP
    g2c (tests/grib/test_codec.py), re-checked with gribberish 1.9.0 and ecCodes 2.50 (no
    upstream issue found for any of them):

    * PNG with 0 bits per value: ecCodes writes such messages with PNG data in section 7
      and returns the reference value everywhere, gribberish decodes the PNG (other
      constant fields match since gribberish 1.x; 0.30 returned zeros);
    * complex packing whose group lengths are coded with 0 bits, over several groups:
      gribberish returns NaN where the lengths do not add up (g2c-written 5.2 fields);
    * CCSDS outside 5-24 bits or with signed samples: wrong values, errors or panics
      (1-4 bits wrong, 25-32 bits off by ~1e-8 relative, signed samples panic);
    * a decimal scale factor where eccodes' 10**-D (repeated division) and gribberish's
      (powi) differ in the last bit, D >= 6: values differ by one ulp (pygrib_flux.grb).

    Dropped with gribberish 1.x, each re-checked on every real message and the written
    fields: constant simple/JPEG/CCSDS fields, complex packing with missing value
    management (types 1 and 2), 0-bit group widths, PNG at other than 16 bits, and 5.2
    as a whole (0.30 panicked on it). A 5.2/5.3 decode that overflows gribberish's 32-bit
    integers is caught after decoding (:func:`_gribberish`), as no header shows it.
    """
    return _unsuitable(packing(message))


def _unsuitable(p: Packing | None) -> str | None:
    if p is None:
        return "not one well-formed GRIB2 message"
    if p.template not in GRIBBERISH_TEMPLATES:
        return f"gribberish does not decode data representation template 5.{p.template}"
    if p.template in (2, 3):
        if p.bits < 0:
            return "complex packing section too short"
        if p.length_bits == 0 and p.groups > 1:
            return "complex packing with 0-bit group lengths: gribberish may misread it"
    if p.template == 41 and p.bits <= 0:
        return "PNG with 0 bits per value: gribberish decodes the PNG, eccodes R"
    if p.template == 42 and (not (p.bits == 0 or 5 <= p.bits <= 24) or p.ccsds_flags & 1):
        return (f"CCSDS at {p.bits} bits, flags {p.ccsds_flags}: gribberish reads only "
                "constant fields and 5-24 bit unsigned samples right")
    if not _same_decimal_scale(p.decimal_scale):
        return f"decimal scale factor {p.decimal_scale}: gribberish rounds 10**-D differently"
    return None


@functools.cache
def _same_decimal_scale(d: int) -> bool:
    return _eccodes_power(-d, 10) == _rust_powi(10.0, -d)


def arrange(values: np.ndarray, layout: Layout, dtype: Any = np.float64) -> np.ndarray:
    """``layout.apply(values)`` as ``dtype`` with at most one copy.

    Flips and transposes are returned as views: zarr copies every decoded chunk into its
    output anyway, so making them contiguous here would be a second pass over the data.
    Only a longitude roll (or a dtype change) needs a new array, written in one pass.
    """
    if layout.transpose:
        out = values.reshape(layout.cols, layout.rows).T
    else:
        out = values.reshape(layout.rows, layout.cols)
    if layout.alternate:  # alternative row scanning: every second stored row reversed
        out = out.copy()
        out[1::2] = out[1::2, ::-1]
    if layout.flip_rows:
        out = out[::-1, :]
    if layout.flip_cols:
        out = out[:, ::-1]
    k = layout.roll % layout.cols if layout.cols else 0
    if not k:
        return out.astype(dtype, copy=False)
    rolled = np.empty(out.shape, dtype=dtype)  # np.roll(out, k, axis=1), cast on the way
    rolled[:, k:] = out[:, :-k]
    rolled[:, :k] = out[:, -k:]
    return rolled


def decode_eccodes(message: bytes, layout: Layout, dtype: Any = np.float64) -> np.ndarray:
    """Values of one message with eccodes, NaN where the bitmap (or the complex packing's
    missing-value management) says the point is absent, in ``layout`` order."""
    import eccodes

    try:
        h = eccodes.codes_new_from_message(message)
    except Exception as e:  # noqa: BLE001 - eccodes raises many types
        raise CorruptSourceError(f"not a readable GRIB message ({_why(e, message)})") from None
    try:
        # eccodes writes missingValue at absent points: NaN there saves a masking pass
        eccodes.codes_set(h, "missingValue", np.nan)
        values = eccodes.codes_get_values(h)
    except Exception as e:  # noqa: BLE001
        raise CorruptSourceError(
            f"eccodes cannot decode the GRIB message ({_why(e, message)})") from None
    finally:
        eccodes.codes_release(h)
    _check_size(values.size, layout)
    return arrange(values, layout, dtype)


def _nan(layout: Layout, dtype: Any) -> np.ndarray:
    return np.full(layout.shape, np.nan, dtype=dtype)


def decode_gribberish(message: bytes, layout: Layout, dtype: Any = np.float64) -> np.ndarray:
    """Values with gribberish (GRIB2 only), in ``layout`` order (NaN missing).

    gribberish returns the values in the message's storage order (whatever the scanning
    mode) with missing points as NaN, so the same layout as eccodes applies. Raises
    ValueError for a message :func:`gribberish_unsuitable` knows it gets wrong, and
    whatever gribberish raises -- including its Rust panics -- for :func:`decode` to catch.
    """
    why = gribberish_unsuitable(message)
    if why is not None:
        raise ValueError(why)
    if _all_missing(message, layout.rows * layout.cols):
        return _nan(layout, dtype)
    return _gribberish(message, layout, dtype)


def _gribberish(message: bytes, layout: Layout, dtype: Any) -> np.ndarray:
    import gribberish

    n = _U64(message, 8)[0]
    if n < len(message):  # padding after the message
        message = bytes(message[:n])
    values = np.asarray(gribberish.parse_grib_array(message, 0), dtype=np.float64)
    if values.size != layout.rows * layout.cols:
        raise ValueError(f"gribberish gave {values.size} values")
    _check_not_below_reference(message, values)
    _check_missing(message, values)
    return arrange(values, layout, dtype)


def _check_missing(message: bytes, values: np.ndarray) -> None:
    """gribberish's NaN must be exactly the points the bitmap marks absent (complex
    packing may add its own missing values at present points); anything else -- a value
    at an absent point, NaN at a present one -- sends the message to eccodes."""
    mask = bitmap(message)
    if mask is None or mask.size != values.size:
        return
    nan = np.isnan(values)
    if nan[~mask].all() and (not nan[mask].any() or packing_template(message) in (2, 3)):
        return
    raise ValueError("gribberish's missing points differ from the bitmap")


def _check_not_below_reference(message: bytes, values: np.ndarray) -> None:
    """Complex packing (5.2, 5.3): gribberish 1.9.0 rebuilds spatially differenced values
    in 32-bit integers, which wrap past 2**31 to large negative values (a g2c-written ramp
    to 2**31 + 2**20 gives -2147457024; nothing in the header shows it). Packed integers
    are never negative, so every true value is >= R * 10**-D: a value below it is
    gribberish's error, and the message goes to eccodes."""
    p = packing(message)
    if p is None or p.template not in (2, 3) or not values.size:
        return
    low = float(np.nanmin(values)) if not np.isnan(values).all() else None
    floor = p.reference * _eccodes_power(-p.decimal_scale, 10)
    if low is not None and low < floor - abs(floor) * 1e-6 - 1e-300:
        raise ValueError(f"gribberish gave {low}, below the reference value {floor}")


def decode(message: bytes, layout: Layout, decoder: str = "auto",
           dtype: Any = np.float64) -> np.ndarray:
    """Decode with the chosen (or fastest) decoder. gribberish is only tried where it is
    exact, and any failure of it, Rust panics included, falls back to eccodes."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown GRIB decoder {decoder!r} (one of {', '.join(DECODERS)})")
    if _all_missing(message, layout.rows * layout.cols):
        return _nan(layout, dtype)
    p = packing(message) if decoder != "eccodes" else None
    if decoder == "auto":
        decoder = _fastest(p, layout.rows * layout.cols)
    if decoder == "gribberish" and _unsuitable(p) is None:
        try:
            return _gribberish(message, layout, dtype)
        except BaseException as e:
            # pyo3_runtime.PanicException derives from BaseException; let real interrupts
            # (KeyboardInterrupt, SystemExit, GeneratorExit) through
            if not isinstance(e, Exception) and type(e).__name__ != "PanicException":
                raise
    return decode_eccodes(message, layout, dtype)


def _fastest(p: Packing | None, npoints: int) -> str:
    if p is None:  # GRIB1
        return "eccodes"
    if npoints <= GRIBBERISH_UP_TO.get(p.template, 0):
        return "gribberish"
    if p.bitmap and p.template in FASTEST_WITH_BITMAP:
        return FASTEST_WITH_BITMAP[p.template]
    return FASTEST.get(p.template, "eccodes")


def _check_size(size: int, layout: Layout) -> None:
    if size != layout.rows * layout.cols:
        raise CorruptSourceError(
            f"GRIB message has {size} values, the array expects {layout.rows}x{layout.cols}")


def read_key(message: bytes, key: str) -> Any:
    """One header key of a message (no data decoded). Two derived keys: ``init_seconds``
    (the reference time as seconds since 1970-01-01 UTC) and ``end_step_minutes``."""
    import eccodes

    try:
        h = eccodes.codes_new_from_message(message)
    except Exception as e:  # noqa: BLE001
        raise CorruptSourceError(f"not a readable GRIB message ({_why(e, message)})") from None
    try:
        if key == "init_seconds":
            import datetime as dt

            date, time = int(eccodes.codes_get(h, "dataDate")), int(
                eccodes.codes_get(h, "dataTime"))
            second = (int(eccodes.codes_get(h, "second"))
                      if eccodes.codes_is_defined(h, "second") else 0)
            t = dt.datetime(date // 10000, date // 100 % 100, date % 100, time // 100,
                            time % 100, second, tzinfo=dt.UTC)
            return int(t.timestamp())
        if key == "end_step_minutes":
            eccodes.codes_set(h, "stepUnits", "m")
            return int(eccodes.codes_get_long(h, "endStep"))
        if not eccodes.codes_is_defined(h, key):
            return 0 if key == "number" else None
        if key == "level":  # the integer key rounds soil layers (0.1 m) to 0
            return eccodes.codes_get_double(h, key)
        return eccodes.codes_get(h, key)
    finally:
        eccodes.codes_release(h)


def coordinates(message: bytes, layout: Layout, which: str) -> np.ndarray:
    """Latitudes or longitudes of every point, in ``layout`` order (longitudes wrapped)."""
    import eccodes

    try:
        h = eccodes.codes_new_from_message(message)
    except Exception as e:  # noqa: BLE001
        raise CorruptSourceError(f"not a readable GRIB message ({_why(e, message)})") from None
    try:
        values = np.asarray(eccodes.codes_get_array(h, f"{which}s"), dtype=np.float64)
    except Exception as e:  # noqa: BLE001
        raise CorruptSourceError(
            f"eccodes cannot compute the {which}s of the GRIB message ({_why(e, message)})"
        ) from None
    finally:
        eccodes.codes_release(h)
    _check_size(values.size, layout)
    out = layout.apply(values)
    return wrap_longitude(out) if which == "longitude" else out


def _why(e: BaseException, message: bytes) -> str:
    """The first line of an eccodes error, and the message's first bytes and length."""
    text = str(e).strip().splitlines()
    why = (text[0] if text else type(e).__name__)[:200]
    return f"{why}; {len(message)} bytes starting {bytes(message[:8])!r}"


@dataclass(frozen=True)
class GribCodec(ArrayBytesCodec):
    """Decode a chunk that is exactly one GRIB message (see the module docstring)."""

    is_fixed_size = False

    layout: Layout = Layout(1, 1)
    field: str = "values"
    decoder: str = "auto"
    #: multi-field GRIB2 messages: which field (0-based) of the message this array holds
    message_field: int | None = None

    def __init__(self, *, layout: Layout | dict[str, Any] | None = None,
                 field: str = "values", decoder: str = "auto",
                 message_field: int | None = None) -> None:
        if isinstance(layout, dict):
            try:
                layout = Layout(**layout)
            except TypeError as e:
                raise ValueError(f"invalid GRIB codec layout {layout!r}: {e}") from None
        if decoder not in DECODERS:
            raise ValueError(
                f"unknown GRIB decoder {decoder!r} (one of {', '.join(DECODERS)})")
        if not (field in ("values", "latitude", "longitude") or (
                field.startswith("key:") and len(field) > 4)):
            raise ValueError(f"unknown GRIB codec field {field!r} (values, latitude, "
                             "longitude or key:<eccodes key>)")
        if message_field is not None and (not isinstance(message_field, int)
                                          or isinstance(message_field, bool)
                                          or message_field < 0):
            raise ValueError(f"GRIB codec message_field must be an integer >= 0, not "
                             f"{message_field!r}")
        object.__setattr__(self, "message_field", message_field)
        object.__setattr__(self, "layout", layout or Layout(1, 1))
        object.__setattr__(self, "field", field)
        object.__setattr__(self, "decoder", decoder)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        config = dict(data.get("configuration") or {})
        unknown = set(config) - {"layout", "field", "decoder", "message_field"}
        if unknown:
            raise ValueError(f"unknown GRIB codec configuration {sorted(unknown)}")
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        config = {"layout": self.layout.to_config(), "field": self.field,
                  "decoder": self.decoder}
        if self.message_field is not None:
            config["message_field"] = self.message_field
        return {"name": CODEC_NAME, "configuration": config}

    def evolve_from_array_spec(self, array_spec: ArraySpec) -> Self:
        return self

    def _decode_array(self, message: bytes, chunk_spec: ArraySpec) -> np.ndarray:
        dtype = chunk_spec.dtype.to_native_dtype()
        if self.message_field is not None:  # one field of a multi-field message
            message = grib2_field(message, self.message_field)
        if self.field == "values":
            out = decode(message, self.layout, self.decoder, dtype)
        elif self.field in ("latitude", "longitude"):
            out = coordinates(message, self.layout, self.field)
            if len(chunk_spec.shape) == 1 and out.size != chunk_spec.shape[0]:
                # 1-D coordinate of a regular grid (a reduced grid's are all its points)
                out = out[:, 0] if self.field == "latitude" else out[0, :]
        else:
            out = np.asarray(read_key(message, self.field[4:]))
        return np.asarray(out).astype(dtype, copy=False).reshape(chunk_spec.shape)

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        """zarr's synchronous codec interface (``SupportsSyncCodec``, zarr >= 3.2): the
        decode itself, in whichever thread calls it."""
        arr = self._decode_array(chunk_bytes.to_bytes(), chunk_spec)
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(arr)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        # Off zarr's event loop: every zarr read of every Dask thread shares that one
        # loop, so decoding on it would decode one message at a time. ecCodes (cffi) and
        # gribberish release the GIL while they decode, as zarr's own gzip/zstd/blosc
        # codecs run in a thread (zarr 3.4.2).
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        raise NotImplementedError(
            "zarrport.grib is a read-only codec: chunks are GRIB messages referenced in place")

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return self._encode_sync(chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("zarrport.grib chunks are whole GRIB messages of any size")
