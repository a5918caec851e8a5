"""The GRIB codec (``zarrport.grib.codec``): every real message decodes exactly like eccodes,
through each decoder, through zarr and xarray and through the ``zarr.codecs`` entry point;
broken messages raise CorruptSourceError; the layout puts values where their coordinates
say."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.core.buffer import cpu
from zarr.storage import LocalStore, MemoryStore

from zarrport.errors import UnsupportedVariableError
from zarrport.grib import codec as codec_module
from zarrport.grib.codec import (
    GribCodec,
    arrange,
    decode,
    decode_gribberish,
    grib2_sections,
    gribberish_unsuitable,
    packing_template,
)
from zarrport.grib.grid import Grid, Layout, grid_from_handle, grid_key, wrap_longitude
from zarrport.testing import grib_synthetic as synthetic

eccodes = pytest.importorskip("eccodes")

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real" / "grib"
FILES = sorted(p for p in REAL.glob("*") if p.is_file() and p.suffix != ".idx")
#: eccodes' own file reader stops at the first message (a wrong GRIB1 length): tested
#: below as a corrupt message
UNREADABLE = {"cfgrib_era5-levels-corrupted.grib"}
DECODERS = ("auto", "eccodes", "gribberish")
ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ helpers


@dataclass
class Message:
    index: int
    message: bytes
    edition: int
    #: eccodes' dataRepresentationTemplateNumber (None for GRIB1)
    template: int | None
    #: zarrport's grid, or the UnsupportedVariableError that refused it
    grid: Grid | UnsupportedVariableError
    handle: int  # released by iter_messages after the caller is done


_GRIDS: dict[str, Grid | UnsupportedVariableError] = {}


def _grid(h: int) -> Grid | UnsupportedVariableError:
    """grid_from_handle once per grid definition (the coordinates of a big grid are slow)."""
    key = grid_key(h)
    if key not in _GRIDS:
        try:
            _GRIDS[key] = grid_from_handle(h)
        except UnsupportedVariableError as e:
            _GRIDS[key] = e
    return _GRIDS[key]


def iter_messages(path: Path) -> Iterator[Message]:
    """The messages eccodes' file reader finds (it stops at a truncated last message:
    kerchunk_hrrr.t11z.wrfsfcf12.grib2; that one is a corrupt case below)."""
    with path.open("rb") as f:
        index = 0
        while True:
            try:
                h = eccodes.codes_grib_new_from_file(f)
            except eccodes.PrematureEndOfFileError:
                return
            if h is None:
                return
            try:
                edition = eccodes.codes_get(h, "edition")
                template = (eccodes.codes_get(h, "dataRepresentationTemplateNumber")
                            if edition == 2 else None)
                yield Message(index, eccodes.codes_get_message(h), edition, template, _grid(h),
                              h)
            finally:
                eccodes.codes_release(h)
            index += 1


def reference(h: int) -> np.ndarray:
    """eccodes' values in storage order, NaN where the bitmap (or complex packing's
    missing value management) says missing -- found without the codec's NaN trick."""
    values = np.asarray(eccodes.codes_get_values(h), dtype=np.float64)
    if eccodes.codes_get(h, "bitmapPresent"):
        values[np.asarray(eccodes.codes_get_array(h, "bitmap")) == 0] = np.nan
    elif (eccodes.codes_is_defined(h, "missingValueManagementUsed")
          and eccodes.codes_get(h, "missingValueManagementUsed")):
        values[values == eccodes.codes_get(h, "missingValue")] = np.nan
    return values


def message_reference(message: bytes) -> np.ndarray:
    """:func:`reference` of one message's bytes."""
    h = eccodes.codes_new_from_message(message)
    try:
        return reference(h)
    finally:
        eccodes.codes_release(h)


def first_message(name: str) -> bytes:
    return next(iter_messages(REAL / name)).message


def storage_layout(message: bytes) -> Layout:
    h = eccodes.codes_new_from_message(message)
    try:
        return Layout(eccodes.codes_get(h, "Nj"), eccodes.codes_get(h, "Ni"))
    finally:
        eccodes.codes_release(h)


def make_message(values: np.ndarray, *, packing: str = "grid_ieee", precision: int = 2,
                 sample: str = "regular_ll_sfc_grib2", bitmap: bool = False,
                 bits: int | None = None, **keys: float | int) -> bytes:
    """A message from an eccodes sample: ``keys`` set in order, then packing (and bits per
    value), values."""
    h = eccodes.codes_grib_new_from_samples(sample)
    try:
        for key, value in keys.items():
            eccodes.codes_set(h, key, value)
        eccodes.codes_set(h, "packingType", packing)
        if packing == "grid_ieee":
            eccodes.codes_set(h, "precision", precision)
        elif bits is not None:
            eccodes.codes_set(h, "bitsPerValue", bits)
        if bitmap:
            eccodes.codes_set(h, "bitmapPresent", 1)
            eccodes.codes_set(h, "missingValue", 9999.0)
            values = np.where(np.isnan(values), 9999.0, values)
        eccodes.codes_set_values(h, np.asarray(values, dtype=np.float64).ravel())
        return eccodes.codes_get_message(h)
    finally:
        eccodes.codes_release(h)


def global_grid(ni: int, nj: int, first_lon: float, last_lon: float, *, north_first: bool,
                scanning: int | None = None) -> dict[str, float | int]:
    lat0, lat1 = (90.0, -90.0) if north_first else (-90.0, 90.0)
    keys: dict[str, float | int] = {
        "Ni": ni, "Nj": nj, "iDirectionIncrementInDegrees": 360.0 / ni,
        "jDirectionIncrementInDegrees": 180.0 / (nj - 1),
        "latitudeOfFirstGridPointInDegrees": lat0, "latitudeOfLastGridPointInDegrees": lat1,
        "longitudeOfFirstGridPointInDegrees": first_lon,
        "longitudeOfLastGridPointInDegrees": last_lon}
    keys["scanningMode"] = (0 if north_first else 0x40) if scanning is None else scanning
    return keys


def handle_grid(message: bytes) -> Grid:
    h = eccodes.codes_new_from_message(message)
    try:
        return grid_from_handle(h)
    finally:
        eccodes.codes_release(h)


def per_point(message: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """eccodes' latitudes, longitudes and values, point by point in storage order."""
    h = eccodes.codes_new_from_message(message)
    try:
        return (np.asarray(eccodes.codes_get_array(h, "latitudes")),
                np.asarray(eccodes.codes_get_array(h, "longitudes")),
                np.asarray(eccodes.codes_get_values(h)))
    finally:
        eccodes.codes_release(h)


# ------------------------------------------------------------------------- real files


@pytest.mark.parametrize("path", [p for p in FILES if p.name not in UNREADABLE],
                         ids=lambda p: p.name)
def test_every_real_message_decodes_like_eccodes(path: Path) -> None:
    """Each message is either on a grid zarrport maps to an array -- then every decoder
    gives eccodes' values in the grid's layout, NaN where missing -- or refused by name."""
    decoded = refused = 0
    for m in iter_messages(path):
        if isinstance(m.grid, UnsupportedVariableError):
            assert str(m.grid).startswith("unsupported grid:"), m.grid
            refused += 1
            continue
        layout = m.grid.layout
        want = layout.apply(reference(m.handle))
        if layout.alternate:
            # every second row stored reversed: ecCodes' geo-iterator gives the values row
            # by row (these grids scan +i +j, so no other reordering applies)
            want = reference(m.handle)
            want = want.reshape(layout.shape).copy()
            want[1::2] = want[1::2, ::-1]
            from zarrport.grib.grid import iterator_values

            np.testing.assert_array_equal(want.ravel(), iterator_values(m.handle))
        for decoder in DECODERS:
            got = decode(m.message, layout, decoder)
            assert got.shape == layout.shape and got.dtype == np.float64
            np.testing.assert_array_equal(got, want, err_msg=f"#{m.index} decoder={decoder}")
        if m.edition == 2 and gribberish_unsuitable(m.message) is None:
            # gribberish itself (no fallback): the unsuitable rules catch every mismatch
            np.testing.assert_array_equal(decode_gribberish(m.message, layout), want,
                                          err_msg=f"#{m.index} raw gribberish")
        decoded += 1
    assert decoded + refused > 0


def test_the_real_files_cover_every_packing() -> None:
    seen = set()
    for path in FILES:
        if path.name in UNREADABLE:
            continue
        for m in iter_messages(path):
            if not isinstance(m.grid, UnsupportedVariableError):
                seen.add(m.template if m.edition == 2 else "GRIB1")
    assert {0, 3, 40, 41, 42, "GRIB1"} <= seen, seen


def test_packing_template_matches_eccodes_on_every_real_message() -> None:
    count = 0
    for path in FILES:
        if path.name in UNREADABLE:
            continue
        for m in iter_messages(path):
            assert packing_template(m.message) == m.template, (path.name, m.index)
            count += 1
    assert count > 1000
    assert packing_template(b"") is None
    assert packing_template(b"GRIB" + bytes(100)) is None
    msl = first_message("cfgrib_regular_ll_msl.grib")
    assert packing_template(msl[: len(msl) // 2]) is None  # truncated
    assert packing_template(msl + bytes(8)) == 0  # padding after the message is fine


@pytest.mark.parametrize("name", [
    "cfgrib_scanning_mode_64.grib",  # jScansPositively=1
    "cfgrib_regular_ll_msl.grib",  # 0..359, north to south: flip + roll
    "pygrib_flux.grb",  # regular Gaussian
    "xrdata_era5-2mt-2019-03-uk.grib",  # regional
    "gribberish_gfswave.t18z.atlocn.0p16.f001.grib2",  # regional, west of 0, bitmap
    "iris_jpeg2000_file.grib2",
])
def test_values_sit_at_eccodes_coordinates(name: str) -> None:
    """The 1-D coordinates of a regular grid are eccodes' per-point coordinates after the
    layout, so decoded values sit where eccodes says they are."""
    message = first_message(name)
    grid = handle_grid(message)
    lats, lons, values = per_point(message)
    lat2, lon2 = grid.layout.apply(lats), wrap_longitude(grid.layout.apply(lons))
    np.testing.assert_array_equal(lat2, np.broadcast_to(grid.latitude[:, None], lat2.shape))
    np.testing.assert_array_equal(lon2, np.broadcast_to(grid.longitude[None, :], lon2.shape))
    assert np.all(np.diff(grid.latitude) > 0) and np.all(np.diff(grid.longitude) > 0)
    got = decode(message, grid.layout)
    # independent of the layout: eccodes' nearest-point lookup at a few places
    h = eccodes.codes_new_from_message(message)
    try:
        for i, j in [(0, 0), (-1, -1), (0, -1), (-1, 0), (len(grid.latitude) // 3,
                                                       len(grid.longitude) // 2)]:
            (near,) = eccodes.codes_grib_find_nearest(h, grid.latitude[i], grid.longitude[j])
            assert near.lat == pytest.approx(grid.latitude[i])
            assert wrap_longitude(near.lon) == pytest.approx(grid.longitude[j])
            if near.value != eccodes.codes_get(h, "missingValue"):
                assert got[i, j] == near.value
            else:
                assert np.isnan(got[i, j])
    finally:
        eccodes.codes_release(h)


# ------------------------------------------------------------------ layout: synthetic


def _lat_lon_values(lats: np.ndarray, lons_in_file: np.ndarray) -> np.ndarray:
    """A value that says where it is: 1000 * latitude + longitude as written (0..360)."""
    return 1000.0 * lats + lons_in_file


def test_global_0_360_north_to_south_comes_out_minus180_180_south_to_north() -> None:
    ni, nj = 72, 37
    file_lats = np.linspace(90.0, -90.0, nj)
    file_lons = np.arange(ni) * 5.0
    values = _lat_lon_values(file_lats[:, None], file_lons[None, :])
    message = make_message(values, **global_grid(ni, nj, 0.0, 355.0, north_first=True))
    grid = handle_grid(message)
    np.testing.assert_array_equal(grid.latitude, np.linspace(-90.0, 90.0, nj))
    np.testing.assert_array_equal(grid.longitude, np.arange(-180.0, 180.0, 5.0))
    assert grid.layout.flip_rows and grid.layout.roll == 36
    for decoder in DECODERS:
        got = decode(message, grid.layout, decoder)
        i, j = list(grid.latitude).index(50.0), list(grid.longitude).index(-10.0)
        assert got[i, j] == 50 * 1000 + 350  # lat 50, lon 350 in the file
        assert got[0, 0] == -90 * 1000 + 180 and got[-1, -1] == 90 * 1000 + 175
        want = _lat_lon_values(grid.latitude[:, None], grid.longitude[None, :] % 360.0)
        np.testing.assert_array_equal(got, want)


def test_first_longitude_180_like_ecmwf_open_data_starts_at_minus180() -> None:
    ni, nj = 72, 37
    file_lats = np.linspace(90.0, -90.0, nj)
    file_lons = 180.0 + np.arange(ni) * 5.0  # 180, 185 ... 535 (= 175)
    values = _lat_lon_values(file_lats[:, None], file_lons[None, :] % 360.0)
    message = make_message(values, **global_grid(ni, nj, 180.0, 175.0, north_first=True))
    grid = handle_grid(message)
    np.testing.assert_array_equal(grid.longitude, np.arange(-180.0, 180.0, 5.0))
    np.testing.assert_array_equal(grid.latitude, np.linspace(-90.0, 90.0, nj))
    got = decode(message, grid.layout)
    np.testing.assert_array_equal(
        got, _lat_lon_values(grid.latitude[:, None], grid.longitude[None, :] % 360.0))
    assert got[-1, 0] == 90 * 1000 + 180  # first point of the file: lat 90, lon 180


@pytest.mark.parametrize("scanning", [0x00, 0x40, 0x80, 0xC0, 0x20, 0x60, 0xA0, 0xE0],
                         ids=lambda s: f"scanningMode={s:#04x}")
def test_every_scanning_mode_puts_values_at_their_coordinates(scanning: int) -> None:
    """A regional grid (lon 10..45, lat -20..20) in each scanning mode: eccodes computes
    where each stored value is, the codec must put it there."""
    ni, nj = 8, 5
    i_neg, j_pos = bool(scanning & 0x80), bool(scanning & 0x40)
    keys = {"Ni": ni, "Nj": nj, "iDirectionIncrementInDegrees": 5.0,
            "jDirectionIncrementInDegrees": 10.0,
            "latitudeOfFirstGridPointInDegrees": -20.0 if j_pos else 20.0,
            "latitudeOfLastGridPointInDegrees": 20.0 if j_pos else -20.0,
            "longitudeOfFirstGridPointInDegrees": 45.0 if i_neg else 10.0,
            "longitudeOfLastGridPointInDegrees": 10.0 if i_neg else 45.0,
            "scanningMode": scanning}
    probe = make_message(np.zeros(ni * nj), **keys)
    lats, lons, _ = per_point(probe)
    message = make_message(_lat_lon_values(lats, lons), **keys)
    grid = handle_grid(message)
    np.testing.assert_array_equal(grid.latitude, np.arange(-20.0, 21.0, 10.0))
    np.testing.assert_array_equal(grid.longitude, np.arange(10.0, 46.0, 5.0))
    for decoder in DECODERS:
        got = decode(message, grid.layout, decoder)
        np.testing.assert_array_equal(
            got, _lat_lon_values(grid.latitude[:, None], grid.longitude[None, :]))


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("flip_rows", [False, True])
@pytest.mark.parametrize("flip_cols", [False, True])
@pytest.mark.parametrize("roll", [0, 1, 3, 7])
def test_arrange_is_layout_apply(transpose: bool, flip_rows: bool, flip_cols: bool,
                                 roll: int) -> None:
    layout = Layout(5, 7, transpose, flip_rows, flip_cols, roll)
    values = np.arange(35, dtype=np.float64)
    np.testing.assert_array_equal(arrange(values, layout), layout.apply(values))
    as32 = arrange(values, layout, np.float32)
    assert as32.dtype == np.float32
    np.testing.assert_array_equal(as32, layout.apply(values).astype(np.float32))


# ------------------------------------------------------------------- gribberish safety


def _signed_ccsds() -> bytes:
    """An eccodes-written CCSDS field with libaec's "signed samples" flag set: gribberish
    1.9.0 panics on it (TryFromIntError), eccodes decodes it."""
    rng = np.random.default_rng(1)
    message = bytearray(make_message(rng.normal(280, 5, (19, 36)), packing="grid_ccsds",
                                     bits=12, **global_grid(36, 19, 0.0, 350.0,
                                                            north_first=True)))
    message[grib2_sections(bytes(message))[5][0] + 21] |= 1
    return bytes(message)


def test_gribberish_panic_falls_back_to_eccodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CCSDS field with signed samples makes gribberish panic -- a pyo3 PanicException, a
    BaseException -- yet decoder="gribberish" gives eccodes' values, whether the panic is
    foreseen or has to be caught."""
    import gribberish

    message = _signed_ccsds()
    with pytest.raises(BaseException) as err:
        gribberish.parse_grib_array(message, 0)
    assert type(err.value).__name__ == "PanicException"
    assert not isinstance(err.value, Exception)
    layout = storage_layout(message)
    want = message_reference(message)
    assert "signed samples" in (gribberish_unsuitable(message) or "")
    np.testing.assert_array_equal(decode(message, layout, "gribberish").ravel(), want)
    # the safety net: with the rules off, the panic itself is caught
    monkeypatch.setattr(codec_module, "_unsuitable", lambda _s5: None)
    np.testing.assert_array_equal(decode(message, layout, "gribberish").ravel(), want)


def test_gribberish_integer_overflow_falls_back_to_eccodes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """gribberish 1.9.0 rebuilds 5.2/5.3 values in 32-bit integers, which wrap to large
    negative values past 2**31 (a g2c-written ramp to 2**31 + 2**20; ecCodes cannot write
    one). A value below R * 10**-D is impossible, so such a decode goes to eccodes."""
    import gribberish

    rng = np.random.default_rng(2)
    for packing_name in ("grid_complex", "grid_complex_spatial_differencing"):
        message = make_message(rng.normal(280, 5, (19, 36)), packing=packing_name, bits=16,
                               **global_grid(36, 19, 0.0, 350.0, north_first=True))
        layout = storage_layout(message)
        want = message_reference(message)
        real = gribberish.parse_grib_array
        np.testing.assert_array_equal(decode(message, layout, "gribberish").ravel(), want)

        def wrapped(msg, index, real=real):
            values = np.array(real(msg, index), dtype=np.float64)
            values[10] = -2147457024.0  # what the overflow gives
            return values

        monkeypatch.setattr(gribberish, "parse_grib_array", wrapped)
        with pytest.raises(ValueError, match="below the reference value"):
            codec_module._gribberish(message, layout, np.float64)
        np.testing.assert_array_equal(decode(message, layout, "gribberish").ravel(), want)
        np.testing.assert_array_equal(decode(message, layout, "auto").ravel(), want)
        monkeypatch.setattr(gribberish, "parse_grib_array", real)


# ------------------------------------------------------- missing values, degenerate fields


def _degenerate(case: str, shape: tuple[int, int]) -> tuple[np.ndarray, bool | None]:
    """Values (NaN: absent) and the bitmap choice of one degenerate field."""
    noisy = np.random.default_rng(3).normal(280.0, 5.0, shape)
    v = np.full(shape, 273.15)
    if case == "all_missing":
        return np.full(shape, np.nan), True
    if case == "one_present":
        v = np.full(shape, np.nan)
        v[2, 3] = 281.5
        return v, True
    if case == "constant":
        return v, False
    if case == "constant_with_missing":
        v[:3] = np.nan
        return v, True
    if case == "bitmap_all_present":
        return noisy, True
    if case == "bitmap_all_present_constant":
        return v, True
    if case == "zero_with_missing":
        v = np.zeros(shape)
        v[::2] = np.nan
        return v, True
    assert case == "noisy_with_missing"
    noisy.flat[::7] = np.nan
    return noisy, True


DEGENERATE = ("all_missing", "one_present", "constant", "constant_with_missing",
              "bitmap_all_present", "bitmap_all_present_constant", "zero_with_missing",
              "noisy_with_missing")


@pytest.mark.parametrize("case", DEGENERATE)
@pytest.mark.parametrize("packing", synthetic.PACKINGS)
def test_missing_values_are_exact_for_every_packing_and_degenerate_field(
        packing: str, case: str) -> None:
    """Every packing x every degenerate field (every point missing, one present, constant
    with 0 bits per value, a bitmap of all ones, zeros next to missing points ...): every
    decoder gives eccodes' values with the bitmap's absent points as NaN, through zarr too.
    (Before: an all-missing JPEG 2000 field hung in gribberish, decoder auto included.)"""
    grid = synthetic.Grid(5.0) if packing == "grid_png" else synthetic.Grid(10.0)
    values, with_bitmap = _degenerate(case, grid.shape)
    message = synthetic.encode_field(values, packing, 16, grid, bitmap=with_bitmap)
    want = message_reference(message)
    h = eccodes.codes_new_from_message(message)
    try:
        assert eccodes.codes_get(h, "bitmapPresent") == int(with_bitmap)
    finally:
        eccodes.codes_release(h)
    if packing != "grid_ieee":  # IEEE keeps every value; the others round
        np.testing.assert_allclose(want, values.ravel(), rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(np.isnan(want), np.isnan(values).ravel())
    layout = Layout(*grid.shape)
    for decoder in DECODERS:
        for dtype in ("float64", "float32"):
            got = decode(message, layout, decoder, np.dtype(dtype))
            assert got.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(got.ravel(), want.astype(dtype),
                                          err_msg=f"{decoder} {dtype}")
    store = MemoryStore()
    array = zarr.create_array(store, name="v", shape=(1, *grid.shape), chunks=(1, *grid.shape),
                              dtype="float32", fill_value=0.0, compressors=None, filters=None,
                              serializer=GribCodec(layout=layout))
    zarr.core.sync.sync(store.set("v/c/0/0/0", cpu.Buffer.from_bytes(message)))
    np.testing.assert_array_equal(array[0].ravel(), want.astype("float32"))


def test_an_all_missing_jpeg_field_does_not_hang() -> None:
    """gribberish 1.9.0 loops forever on a JPEG 2000 message whose bitmap marks every point
    absent (section 7 empty); ``auto`` sends small JPEG fields to gribberish. Run in a
    child process so that, were it to hang again, this test fails instead of the run."""
    code = textwrap.dedent("""
        import numpy as np
        from zarrport.grib.codec import decode
        from zarrport.grib.grid import Layout
        from zarrport.testing.grib_synthetic import Grid, encode_field
        grid = Grid(10.0)
        message = encode_field(np.full(grid.shape, np.nan), "grid_jpeg", 16, grid)
        for decoder in ("auto", "gribberish"):
            assert np.isnan(decode(message, Layout(*grid.shape), decoder)).all()
        print("ok")
        """)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("decoding an all-missing JPEG 2000 field hung")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_bitmap_and_packed_value_count_are_read_from_the_bytes() -> None:
    """codec.bitmap / packed_values agree with eccodes' bitmap and numberOfValues; GRIB1 and
    messages without a bitmap give None."""
    grid = synthetic.Grid(10.0)
    for case in DEGENERATE:
        values, with_bitmap = _degenerate(case, grid.shape)
        message = synthetic.encode_field(values, "grid_simple", 16, grid, bitmap=with_bitmap)
        h = eccodes.codes_new_from_message(message)
        try:
            count = eccodes.codes_get(h, "numberOfValues")
            want = (np.asarray(eccodes.codes_get_array(h, "bitmap")) == 1
                    if with_bitmap else None)
        finally:
            eccodes.codes_release(h)
        assert codec_module.packed_values(message) == count
        got = codec_module.bitmap(message)
        if want is None:
            assert got is None
        else:
            np.testing.assert_array_equal(got, want)
    grib1 = first_message("cfgrib_regular_ll_sfc.grib")
    assert codec_module.bitmap(grib1) is None and codec_module.packed_values(grib1) is None


@pytest.mark.parametrize("packing", ["grid_simple", "grid_ccsds", "grid_png"])
def test_gribberish_values_at_absent_points_go_to_eccodes(
        packing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Were gribberish to give a value (0.0, the reference value ...) where the bitmap says
    absent, or NaN where it says present, the codec must not pass it on: the message goes
    to eccodes, whose absent points are NaN."""
    import gribberish

    grid = synthetic.Grid(5.0)
    checked = 0
    for case in ("noisy_with_missing", "zero_with_missing", "bitmap_all_present"):
        values, with_bitmap = _degenerate(case, grid.shape)
        message = synthetic.encode_field(values, packing, 16, grid, bitmap=with_bitmap)
        if gribberish_unsuitable(message) is not None:  # e.g. PNG at 0 bits: eccodes' anyway
            continue
        checked += 1
        want = message_reference(message)
        layout = Layout(*grid.shape)
        real = gribberish.parse_grib_array

        for wrong in ("zero at absent", "nan at present"):
            present = int(np.flatnonzero(~np.isnan(want))[0])

            def wrapped(msg, index, real=real, wrong=wrong, present=present):
                got = np.array(real(msg, index), dtype=np.float64)
                if wrong == "zero at absent":
                    return np.nan_to_num(got, nan=0.0)
                got[present] = np.nan
                return got

            monkeypatch.setattr(gribberish, "parse_grib_array", wrapped)
            if wrong == "zero at absent" and not np.isnan(want).any():
                continue
            with pytest.raises(ValueError, match="missing points differ from the bitmap"):
                codec_module._gribberish(message, layout, np.float64)
            for decoder in ("gribberish", "auto"):
                np.testing.assert_array_equal(decode(message, layout, decoder).ravel(), want)
            monkeypatch.setattr(gribberish, "parse_grib_array", real)
    assert checked >= 2


@pytest.mark.parametrize("precision", [1, 2], ids=["ieee32", "ieee64"])
@pytest.mark.parametrize("bitmap", [False, True], ids=["", "bitmap"])
def test_ieee_packing_decodes_exactly(precision: int, bitmap: bool,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """gribberish cannot read IEEE packing (5.4); every decoder still gives the exact
    values, including ones simple packing would round."""
    rng = np.random.default_rng(4)
    values = rng.normal(0.0, 1e4, (19, 36))
    values[0, :4] = [np.pi, -1e-30, 3.4e38, 1.0 + 2**-20]
    if precision == 2:
        values[1, :3] = [1e300, -5e-300, 1.0 + 2**-50]
    else:
        values = values.astype(np.float32).astype(np.float64)
    if bitmap:
        values[5:9, 10:20] = np.nan
    message = make_message(values, precision=precision, bitmap=bitmap,
                           **global_grid(36, 19, 0.0, 350.0, north_first=True))
    assert packing_template(message) == 4
    grid = handle_grid(message)
    want = grid.layout.apply(values.ravel())
    for decoder in DECODERS:
        np.testing.assert_array_equal(decode(message, grid.layout, decoder), want)
    monkeypatch.setattr(codec_module, "_unsuitable", lambda _s5: None)
    np.testing.assert_array_equal(decode(message, grid.layout, "gribberish"), want)


def test_auto_picks_the_decoder_by_packing_and_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto``: gribberish for the packings FASTEST names and for fields up to
    GRIBBERISH_UP_TO points, eccodes otherwise and wherever gribberish is unsuitable."""
    used = []
    real = codec_module._gribberish

    def spy(message: bytes, layout: Layout, dtype: object) -> np.ndarray:
        used.append("gribberish")
        return real(message, layout, dtype)

    monkeypatch.setattr(codec_module, "_gribberish", spy)

    def picks(message: bytes) -> str:
        used.clear()
        grid = handle_grid(message)
        got = decode(message, grid.layout, "auto")
        np.testing.assert_array_equal(got, decode(message, grid.layout, "eccodes"))
        return used[0] if used else "eccodes"

    rng = np.random.default_rng(5)

    def field(packing: str, nj: int, ni: int, bitmap: bool = False) -> bytes:
        values = rng.normal(280.0, 5.0, (nj, ni))
        if bitmap:
            values[: nj // 3] = np.nan
        return make_message(values, packing=packing, bits=16, bitmap=bitmap,
                            **global_grid(ni, nj, 0.0, 360.0 - 360.0 / ni, north_first=True))

    for template, packing in ((0, "grid_simple"), (2, "grid_complex"),
                              (3, "grid_complex_spatial_differencing"),
                              (40, "grid_jpeg"), (41, "grid_png"), (42, "grid_ccsds")):
        limit = codec_module.GRIBBERISH_UP_TO.get(template, 0)
        for bitmap in (False, True):
            big = ((codec_module.FASTEST_WITH_BITMAP.get(template) if bitmap else None)
                   or codec_module.FASTEST.get(template, "eccodes"))
            assert picks(field(packing, 181, 360, bitmap)) == (
                "gribberish" if 181 * 360 <= limit else big), (packing, bitmap)
        if packing != "grid_png":  # eccodes cannot write a PNG that small
            assert picks(field(packing, 10, 18)) == ("gribberish" if 180 <= limit else big)
    assert picks(field("grid_ieee", 10, 18)) == "eccodes"
    assert picks(first_message("cfgrib_regular_ll_sfc.grib")) == "eccodes"  # GRIB1
    constant = make_message(np.full((10, 18), 273.15), packing="grid_simple",
                            **global_grid(18, 10, 0.0, 340.0, north_first=True))
    assert picks(constant) == "gribberish"  # exact on constant fields since gribberish 1.x
    assert picks(_signed_ccsds()) == "eccodes"  # gribberish_unsuitable: it would panic


@pytest.mark.parametrize("name, why", [
    ("pygrib_flux.grb", "decimal scale factor 6"),
])
def test_gribberish_is_kept_off_the_messages_it_gets_wrong(name: str, why: str) -> None:
    """Each rule of gribberish_unsuitable that a real file triggers guards a real mismatch.
    If this fails because gribberish now agrees with eccodes, the rule can go. (The rules
    gribberish 1.x made unnecessary -- constant fields, missing value management, template
    5.2 -- went with this test failing on gribberish_s2s-pdt12-pdt107-anomaly.grib2,
    eccodes_samples_ccsds_grib2.tmpl, kerchunk_CMC_reg_DEPR_ISBL_10_ps10km_2022072000_P000,
    pygrib_dspr.temp.bin and cfgrib_ds.waveh.5.grib; they stay in the conformance run.)"""
    import gribberish

    for m in iter_messages(REAL / name):
        reason = gribberish_unsuitable(m.message)
        if reason is None or why not in reason:
            continue
        want = reference(m.handle)
        try:
            got = np.asarray(gribberish.parse_grib_array(m.message, 0), dtype=np.float64)
        except BaseException as e:  # noqa: BLE001 - the panic is the mismatch
            assert type(e).__name__ == "PanicException"
            return
        assert not np.array_equal(got.ravel(), want, equal_nan=True)
        return
    pytest.fail(f"no message of {name} is refused for {why!r}")


@pytest.mark.parametrize("packing, bits, shapes", [
    ("grid_simple", (1, 2, 7, 8, 12, 16, 17, 24, 31), ((7, 9), (19, 36))),
    ("grid_complex_spatial_differencing", (2, 4, 8, 12, 16, 24), ((3, 4), (7, 9), (19, 36))),
    ("grid_complex", (2, 4, 8, 12, 16, 24), ((3, 4), (7, 9), (19, 36))),
    ("grid_jpeg", (1, 3, 8, 12, 16, 24), ((7, 9), (19, 36))),
    ("grid_png", (1, 4, 8, 12, 16, 24, 32), ((73, 144),)),  # eccodes' PNG fails on smaller fields
    ("grid_ccsds", (1, 2, 4, 5, 8, 12, 16, 17, 24, 32), ((7, 9), (19, 36))),
])
def test_gribberish_rules_hold_on_eccodes_written_fields(packing: str, bits: tuple[int, ...],
                                                         shapes: tuple[tuple[int, int], ...]
                                                         ) -> None:
    """Many bit widths, sizes, smooth / noisy / stepped / constant fields, with and without
    bitmap: wherever gribberish_unsuitable lets gribberish decode, it is exact; and every
    decoder always equals eccodes."""
    rng = np.random.default_rng(11)
    tried = let_through = 0
    for nbits in bits:
        for nj, ni in shapes:
            base = rng.normal(280.0, 5.0, (nj, ni))
            for kind, values in (("noisy", base + np.linspace(0, 50, ni)),
                                 ("stepped", np.round(base / 4) * 4),
                                 ("constant", np.full((nj, ni), 273.15))):
                for bitmap in (False, True):
                    v = values.copy()
                    if bitmap:
                        v.flat[::5] = np.nan
                    h = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib2")
                    try:
                        for key, value in global_grid(ni, nj, 0.0, 360.0 - 360.0 / ni,
                                                      north_first=True).items():
                            eccodes.codes_set(h, key, value)
                        eccodes.codes_set(h, "packingType", packing)
                        eccodes.codes_set(h, "bitsPerValue", nbits)
                        if bitmap:
                            eccodes.codes_set(h, "bitmapPresent", 1)
                            eccodes.codes_set(h, "missingValue", 9999.0)
                        eccodes.codes_set_values(h, np.where(np.isnan(v), 9999.0, v).ravel())
                        message = eccodes.codes_get_message(h)
                        want = reference(h)
                    except eccodes.GribInternalError:
                        continue  # eccodes cannot write this combination
                    finally:
                        eccodes.codes_release(h)
                    tried += 1
                    label = f"{packing} {nbits} bits {nj}x{ni} {kind} bitmap={bitmap}"
                    layout = Layout(nj, ni)
                    for decoder in DECODERS:
                        np.testing.assert_array_equal(
                            decode(message, layout, decoder).ravel(), want, err_msg=label)
                    if gribberish_unsuitable(message) is None:
                        let_through += 1
                        np.testing.assert_array_equal(
                            decode_gribberish(message, layout).ravel(), want, err_msg=label)
    assert tried > 10 and let_through > 0, (tried, let_through)


def test_grib2_sections_refuses_what_would_hang_gribberish() -> None:
    """gribberish loops forever on a zero section length: such bytes never reach it."""
    msl = first_message("cfgrib_regular_ll_msl.grib")
    sections = grib2_sections(msl)
    assert sections is not None and sorted(sections) == [1, 3, 4, 5, 6, 7]
    pos, length = sections[7]
    broken = bytearray(msl)
    broken[pos:pos + length] = bytes(length)
    assert grib2_sections(bytes(broken)) is None
    assert gribberish_unsuitable(bytes(broken)) is not None
    assert grib2_sections(msl[:-1]) is None


# ------------------------------------------------------------------------ corruption


_CORRUPT_CHILD = textwrap.dedent("""
    import json, pickle, sys
    import numpy as np
    import zarr
    from zarr.core.buffer import cpu
    from zarr.storage import MemoryStore
    from zarrport.errors import CorruptSourceError
    from zarrport.grib.codec import GribCodec, decode

    cases = pickle.load(open(sys.argv[1], "rb"))
    for name, message, layout in cases:
        for decoder in ("auto", "eccodes", "gribberish"):
            print(json.dumps({"case": name, "decoder": decoder, "start": True}), flush=True)
            try:
                decode(message, layout, decoder)
                out = {"error": None}
            except BaseException as e:
                out = {"error": type(e).__name__, "text": str(e),
                       "corrupt": isinstance(e, CorruptSourceError)}
            print(json.dumps({"case": name, "decoder": decoder, **out}), flush=True)
    # and through zarr: the codec raises the same error out of a read
    name, message, layout = cases[0]
    d = {}
    a = zarr.create_array(MemoryStore(d), name="v", shape=layout.shape, chunks=layout.shape,
                          dtype="float32", serializer=GribCodec(layout=layout),
                          compressors=None, filters=None)
    d["v/c/0/0"] = cpu.Buffer.from_bytes(message)
    try:
        a[:]
        out = {"error": None}
    except BaseException as e:
        out = {"error": type(e).__name__, "text": str(e),
               "corrupt": isinstance(e, CorruptSourceError)}
    print(json.dumps({"case": "zarr read of " + name, "decoder": "auto", **out}), flush=True)
""")


def _sections(message: bytes) -> dict[int, tuple[int, int]]:
    out, pos = {}, 16
    while pos < len(message) - 4:
        (length,) = struct.unpack(">I", message[pos:pos + 4])
        out[message[pos + 4]] = (pos, length)
        pos += length
    return out


def _zero(message: bytes, section: int, *, keep_header: bool = False) -> bytes:
    pos, length = _sections(message)[section]
    start = pos + 5 if keep_header else pos
    out = bytearray(message)
    out[start:pos + length] = bytes(pos + length - start)
    return bytes(out)


def test_corrupt_messages_raise_corrupt_source_error(tmp_path: Path) -> None:
    """Truncated, random, zeroed: one-line CorruptSourceError from every decoder, no panic,
    hang or crash (run in a subprocess, so a crash would fail this test, not kill pytest)."""
    msl = first_message("cfgrib_regular_ll_msl.grib")  # GRIB2 simple
    hrrr = first_message("gribberish_hrrr.t06z.wrfsfcf01-TMP.grib2")  # 5.3, 1.9M points
    jpeg = first_message("iris_jpeg2000_file.grib2")
    png = first_message("gribberish_MRMS_MergedReflectivityQCComposite_00.50_"
                        "20220704-110040.grib2")
    grib1 = first_message("cfgrib_regular_ll_sfc.grib")
    era5 = (REAL / "cfgrib_era5-levels-corrupted.grib").read_bytes()
    cut = (REAL / "kerchunk_hrrr.t11z.wrfsfcf12.grib2").read_bytes()
    cut = cut[cut.rindex(b"GRIB"):]  # the file ends in the middle of its last message
    rng = np.random.default_rng(7)
    cases = [
        ("truncated GRIB2 simple", msl[: len(msl) // 2], storage_layout(msl)),
        ("truncated GRIB2 JPEG", jpeg[:-100], storage_layout(jpeg)),
        ("truncated GRIB1", grib1[: len(grib1) // 2], storage_layout(grib1)),
        ("truncated last message of kerchunk_hrrr.t11z.wrfsfcf12.grib2", cut,
         Layout(1059, 1799)),
        ("GRIB1 whose length field is wrong (cfgrib_era5-levels-corrupted.grib)",
         era5[:struct.unpack(">I", b"\0" + era5[4:7])[0]], Layout(61, 120)),
        ("random bytes", rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), Layout(10, 10)),
        ("GRIB2 header then random bytes",
         b"GRIB\0\0\0\2" + struct.pack(">Q", 5000)
         + rng.integers(0, 256, 4976, dtype=np.uint8).tobytes() + b"7777", Layout(10, 10)),
        ("empty", b"", Layout(1, 1)),
        ("zeroed section 7, simple", _zero(msl, 7), storage_layout(msl)),
        ("zeroed section 7, complex + spatial differencing", _zero(hrrr, 7),
         storage_layout(hrrr)),
        ("zeroed section 7, JPEG", _zero(jpeg, 7), storage_layout(jpeg)),
        ("zeroed section 7 data, JPEG", _zero(jpeg, 7, keep_header=True),
         storage_layout(jpeg)),
        ("zeroed section 7 data, PNG", _zero(png, 7, keep_header=True), storage_layout(png)),
        ("right message, wrong array shape", msl, Layout(3, 3)),
    ]
    cases_file = tmp_path / "cases.pkl"
    cases_file.write_bytes(pickle.dumps(cases))
    proc = subprocess.run([sys.executable, "-c", _CORRUPT_CHILD, str(cases_file)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    last = results[-1] if results else {}
    assert proc.returncode == 0, (f"child died ({proc.returncode}) during {last}: "
                                  f"{proc.stderr[-2000:]}")
    done = [r for r in results if "start" not in r]
    assert len(done) == 3 * len(cases) + 1
    for r in done:
        assert r["corrupt"], r
        assert "\n" not in r["text"] and 0 < len(r["text"]) < 400, r
        assert "GRIB" in r["text"], r


# ------------------------------------------------------------------ through zarr/xarray


def _steps_dataset(store: MemoryStore | LocalStore, decoder: str = "auto",
                   dtype: str = "float64") -> tuple[Grid, list[np.ndarray]]:
    """Three steps of a global 0..360 north-to-south field, and its 1-D coordinates and
    ``endStep`` read through the same messages."""
    ni, nj = 36, 19
    file_lats = np.linspace(90.0, -90.0, nj)[:, None]
    file_lons = (np.arange(ni) * 10.0)[None, :]
    grid_keys = global_grid(ni, nj, 0.0, 350.0, north_first=True)
    messages, fields = [], []
    for k, step in enumerate((0, 6, 12)):
        values = 20.0 * np.cos(np.radians(file_lats)) + file_lons / 10.0 + k
        values[2, 3] = np.nan  # a missing point (bitmap)
        message = make_message(values, packing="grid_simple", bitmap=True,
                               forecastTime=step, **grid_keys)
        h = eccodes.codes_new_from_message(message)
        try:
            fields.append(reference(h))  # 16-bit simple packing: eccodes' values
        finally:
            eccodes.codes_release(h)
        messages.append(message)
    grid = handle_grid(messages[0])
    root = zarr.open_group(store, mode="w", zarr_format=3)

    def array(name: str, shape: tuple[int, ...], chunks: tuple[int, ...], field: str,
              dims: tuple[str, ...], dt: str, fill: float | int) -> None:
        root.create_array(name, shape=shape, chunks=chunks, dtype=dt, fill_value=fill,
                          serializer=GribCodec(layout=grid.layout, field=field,
                                               decoder=decoder),
                          compressors=None, filters=None, dimension_names=dims)

    array("t", (3, nj, ni), (1, nj, ni), "values", ("step", "latitude", "longitude"), dtype,
          np.nan)
    array("latitude", (nj,), (nj,), "latitude", ("latitude",), "float64", np.nan)
    array("longitude", (ni,), (ni,), "longitude", ("longitude",), "float64", np.nan)
    array("step", (3,), (1,), "key:endStep", ("step",), "int64", -1)
    chunks = {"latitude/c/0": messages[0], "longitude/c/0": messages[0]}
    for k, message in enumerate(messages):
        chunks[f"t/c/{k}/0/0"] = message
        chunks[f"step/c/{k}"] = message
    for key, message in chunks.items():
        zarr.core.sync.sync(store.set(key, cpu.Buffer.from_bytes(message)))
    return grid, [grid.layout.apply(f) for f in fields]


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_zarr_and_xarray_read_grib_chunks(decoder: str, dtype: str) -> None:
    import xarray as xr

    store = MemoryStore()
    grid, fields = _steps_dataset(store, decoder, dtype)
    t = zarr.open_array(store, path="t", mode="r")
    assert t.metadata.codecs[0].to_dict()["configuration"]["decoder"] == decoder
    want = np.stack(fields).astype(dtype)
    np.testing.assert_array_equal(t[:], want)
    np.testing.assert_array_equal(t[1, 3:7, 10:20], want[1, 3:7, 10:20])
    assert np.isnan(t[:]).sum() == 3

    ds = xr.open_zarr(store, consolidated=False, zarr_format=3)
    np.testing.assert_array_equal(ds["latitude"].values, grid.latitude)
    np.testing.assert_array_equal(ds["longitude"].values, grid.longitude)
    np.testing.assert_array_equal(ds["longitude"].values, np.arange(-180.0, 180.0, 10.0))
    assert list(ds["step"].values) == [0, 6, 12]
    assert ds["t"].dims == ("step", "latitude", "longitude")
    np.testing.assert_array_equal(ds["t"].values, want)
    # value at lat 50, lon -10 is the file's lon 350 at step 6
    got = float(ds["t"].sel(step=6, latitude=50.0, longitude=-10.0))
    assert got == pytest.approx(20 * np.cos(np.radians(50.0)) + 35 + 1, abs=0.01)


@pytest.mark.parametrize("name", [
    "gribberish_gfswave.t18z.atlocn.0p16.f001.grib2",  # JPEG, bitmap, row flip (a view)
    "iris_umukv_ukv_chan9.grib2",  # space view, column flip
    "cfgrib_forecast_monthly_ukmo.grib",  # GRIB1, 168 messages
])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_zarr_reads_real_messages_as_chunks(name: str, dtype: str) -> None:
    """Every message of a file as one chunk of a (message, y, x) array, read back whole
    and in slices that cross chunks."""
    messages = [(m.message, m.grid.layout, m.grid.layout.apply(reference(m.handle)))
                for m in iter_messages(REAL / name)]
    layout = messages[0][1]
    store = MemoryStore()
    array = zarr.create_array(store, name="v", shape=(len(messages), *layout.shape),
                              chunks=(1, *layout.shape), dtype=dtype, fill_value=np.nan,
                              serializer=GribCodec(layout=layout), compressors=None,
                              filters=None)
    for k, (message, _, _) in enumerate(messages):
        zarr.core.sync.sync(store.set(f"v/c/{k}/0/0", cpu.Buffer.from_bytes(message)))
    want = np.stack([w for _, _, w in messages]).astype(dtype)
    np.testing.assert_array_equal(array[:], want)
    rows, cols = layout.shape
    sel = (slice(None, 3), slice(rows // 3, rows // 2), slice(cols // 4, None, 3))
    np.testing.assert_array_equal(array[sel], want[sel])


def test_zarr_reads_2d_coordinates_of_a_projected_grid() -> None:
    """Mercator (GRIB2, complex packing with spatial differencing): values and 2-D
    latitude/longitude read through the message itself."""
    message = first_message("gribberish_aqm.t12z.ave_1hr_o3-HI-mercator.grib2")
    grid = handle_grid(message)
    assert grid.dims == ("y", "x") and grid.latitude.ndim == 2
    store = MemoryStore()
    root = zarr.open_group(store, mode="w", zarr_format=3)
    for name, field in (("ozcon", "values"), ("latitude", "latitude"),
                        ("longitude", "longitude")):
        root.create_array(name, shape=grid.shape, chunks=grid.shape, dtype="float64",
                          fill_value=np.nan, serializer=GribCodec(layout=grid.layout,
                                                                  field=field),
                          compressors=None, filters=None, dimension_names=("y", "x"))
        zarr.core.sync.sync(store.set(f"{name}/c/0/0", cpu.Buffer.from_bytes(message)))
    lats, lons, values = per_point(message)
    np.testing.assert_array_equal(root["latitude"][:], grid.layout.apply(lats))
    np.testing.assert_array_equal(root["longitude"][:],
                                  wrap_longitude(grid.layout.apply(lons)))
    np.testing.assert_array_equal(root["latitude"][:], grid.latitude)
    np.testing.assert_array_equal(root["ozcon"][:], grid.layout.apply(values))


def test_messages_decode_off_zarrs_event_loop_in_parallel(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """zarr runs every read of every thread on one event loop ("zarr_io"): a codec that
    decodes there decodes one message at a time. The codec decodes in worker threads, so
    two chunks -- of one read, or of two Dask threads -- are decoded at the same time: each
    decode below waits for a second one to be running (a barrier), which would time out if
    they ran one after the other."""
    import threading

    import dask
    import xarray as xr

    store = MemoryStore()
    _grid, fields = _steps_dataset(store, "eccodes", "float64")
    want = np.stack(fields)
    real = codec_module.decode
    threads: list[str] = []
    barrier = threading.Barrier(2, timeout=20)

    def spy(message, layout, decoder="auto", dtype=np.float64):
        threads.append(threading.current_thread().name)
        barrier.wait()
        return real(message, layout, decoder, dtype)

    monkeypatch.setattr(codec_module, "decode", spy)
    t = zarr.open_array(store, path="t", mode="r")
    np.testing.assert_array_equal(t[:2], want[:2])  # one read, two chunks
    assert len(threads) == 2 and "zarr_io" not in threads, threads
    threads.clear()
    ds = xr.open_zarr(store, consolidated=False, zarr_format=3, chunks={"step": 1})
    with dask.config.set(scheduler="threads", num_workers=2):
        got = ds["t"].isel(step=slice(1, 3)).compute().values  # two Dask tasks
    np.testing.assert_array_equal(got, want[1:3])
    assert len(threads) == 2 and "zarr_io" not in threads, threads
    # the synchronous interface (zarr's SupportsSyncCodec) decodes in the calling thread
    codec = t.metadata.codecs[0]
    from zarr.abc.codec import _codec_supports_sync

    assert _codec_supports_sync(codec)


def test_writing_through_the_codec_is_refused() -> None:
    store = MemoryStore()
    _steps_dataset(store)
    t = zarr.open_array(store, path="t", mode="r+")
    with pytest.raises(NotImplementedError, match="read-only codec"):
        t[0] = 1.0


def test_bad_configuration_is_a_value_error() -> None:
    layout = {"rows": 2, "cols": 3}
    for config, match in (({"layout": layout, "decoder": "fast"}, "unknown GRIB decoder"),
                          ({"layout": layout, "field": "temperature"}, "unknown GRIB codec "
                                                                       "field"),
                          ({"layout": layout, "field": "key:"}, "unknown GRIB codec field"),
                          ({"layout": layout, "decoders": "auto"}, "unknown GRIB codec "
                                                                   "configuration"),
                          ({"layout": {"rows": 2, "colz": 3}}, "invalid GRIB codec layout")):
        with pytest.raises(ValueError, match=match):
            GribCodec.from_dict({"name": "zarrport.grib", "configuration": config})
    with pytest.raises(ValueError, match="unknown GRIB decoder"):
        decode(first_message("cfgrib_regular_ll_msl.grib"), Layout(181, 360), "fast")
    codec = GribCodec.from_dict({"name": "zarrport.grib", "configuration": {
        "layout": layout, "field": "key:endStep", "decoder": "gribberish"}})
    assert codec.to_dict() == {"name": "zarrport.grib", "configuration": {
        "layout": Layout(2, 3).to_config(), "field": "key:endStep", "decoder": "gribberish"}}
    # a store whose metadata names an unknown decoder fails to open, by name
    store = MemoryStore()
    _steps_dataset(store)
    meta = json.loads(zarr.core.sync.sync(store.get(
        "t/zarr.json", cpu.buffer_prototype)).to_bytes())
    meta["codecs"][0]["configuration"]["decoder"] = "fast"
    zarr.core.sync.sync(store.set("t/zarr.json", cpu.Buffer.from_bytes(
        json.dumps(meta).encode())))
    with pytest.raises(ValueError, match="unknown GRIB decoder 'fast'"):
        zarr.open_array(store, path="t", mode="r")


def test_message_field_and_alternate_in_the_configuration() -> None:
    """Both are written only where used, so every other store's metadata is unchanged;
    a bad message_field is a ValueError."""
    layout = {"rows": 2, "cols": 3}
    assert "alternate" not in Layout(2, 3).to_config()
    assert Layout(2, 3, alternate=True).to_config()["alternate"] is True
    plain = GribCodec.from_dict({"name": "zarrport.grib", "configuration": {"layout": layout}})
    assert "message_field" not in plain.to_dict()["configuration"]
    second = GribCodec.from_dict({"name": "zarrport.grib", "configuration": {
        "layout": {**layout, "alternate": True}, "message_field": 1}})
    assert second.message_field == 1 and second.layout.alternate
    assert GribCodec.from_dict(second.to_dict()) == second
    for bad in (-1, "1", True, 1.5):
        with pytest.raises(ValueError, match="message_field"):
            GribCodec.from_dict({"name": "zarrport.grib", "configuration": {
                "layout": layout, "message_field": bad}})


# ------------------------------------------------------------------------ entry point


_ENTRY_POINT_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import zarr
    from zarr.storage import LocalStore

    before = "zarrport" in sys.modules
    cls = zarr.registry.get_codec_class("zarrport.grib")
    group = zarr.open_group(LocalStore(sys.argv[1], read_only=True), mode="r")
    np.save(sys.argv[2], group["t"][:])
    print(json.dumps({"imported_before": before, "module": cls.__module__,
                      "name": cls.__name__, "step": group["step"][:].tolist(),
                      "lon": group["longitude"][:3].tolist()}))
""")


def test_entry_point_finds_the_codec_in_a_fresh_process(tmp_path: Path) -> None:
    """Nothing imports zarrport in the child: zarr finds ``zarrport.grib`` through the
    ``zarr.codecs`` entry point of the installed package, and decodes a LocalStore."""
    path = tmp_path / "steps.zarr"
    grid, fields = _steps_dataset(LocalStore(path))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", _ENTRY_POINT_CHILD, str(path),
                           str(tmp_path / "t.npy")], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"imported_before": False, "module": "zarrport.grib.codec",
                   "name": "GribCodec", "step": [0, 6, 12], "lon": [-180.0, -170.0, -160.0]}
    np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), np.stack(fields))
