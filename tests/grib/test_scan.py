"""GribParser: any GRIB1/GRIB2 file without a sidecar index.

Files are made here with ecCodes from its samples; the oracle is ecCodes' own decoding of
the same messages. Each test names the behaviour it pins down.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import eccodes
import numpy as np
import pytest
import xarray as xr

from zarrport import errors, storage
from zarrport.errors import (
    CorruptSourceError,
    IncompatibleSourcesError,
    InvalidArgumentError,
    UnrecognizedFormatError,
    UnsupportedVariableError,
    ZarrportError,
)
from zarrport.grib.scan import GribParser, locate_messages

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "grib"
NI, NJ = 16, 31  # the regular_ll_sfc_grib2 sample: 0..30 E, 60..0 N, north to south


# --------------------------------------------------------------------------- helpers


def message(sample: str = "regular_ll_sfc_grib2", values: np.ndarray | None = None,
            **keys) -> bytes:
    """One message from an ecCodes sample with ``keys`` set (in order), then ``values``."""
    h = eccodes.codes_grib_new_from_samples(sample)
    try:
        for k, v in keys.items():
            if isinstance(v, float):
                eccodes.codes_set_double(h, k, v)
            else:
                eccodes.codes_set(h, k, v)
        if values is None and "sh" not in sample and "reduced" not in sample:
            n = eccodes.codes_get(h, "numberOfPoints")
            values = np.linspace(200.0, 300.0, n) + 0.001 * np.arange(n) % 7
        if values is not None:
            eccodes.codes_set_values(h, np.asarray(values, dtype=np.float64))
        return eccodes.codes_get_message(h)
    finally:
        eccodes.codes_release(h)


def write(path: Path, *messages: bytes) -> str:
    path.write_bytes(b"".join(messages))
    return storage.normalize_url(str(path))


def build(url: str, **options):
    return GribParser(**options).build(url, storage.object_store_registry([url]))


def open_store(url: str, **options) -> xr.Dataset:
    store = GribParser(**options)(url, storage.object_store_registry([url]))
    return xr.open_dataset(store, engine="zarr", consolidated=False, zarr_format=3,
                           chunks=None)


def eccodes_values(msg: bytes) -> np.ndarray:
    """ecCodes' values, absent points NaN (bitmap), as a north-to-south (Nj, Ni) grid."""
    h = eccodes.codes_new_from_message(msg)
    try:
        vals = eccodes.codes_get_values(h).astype(np.float64)
        if eccodes.codes_get(h, "bitmapPresent"):
            vals[eccodes.codes_get_array(h, "bitmap") == 0] = np.nan
        nj, ni = eccodes.codes_get(h, "Nj"), eccodes.codes_get(h, "Ni")
    finally:
        eccodes.codes_release(h)
    return vals.reshape(nj, ni)


def sections(msg: bytes) -> list[bytes]:
    """The sections 1..7 of a GRIB2 message, as bytes."""
    out, p = [], 16
    while p < len(msg) - 4:
        n = int.from_bytes(msg[p:p + 4], "big")
        out.append(msg[p:p + n])
        p += n
    return out


# --------------------------------------------------------------------------- grouping


def test_groups_by_name_level_type_and_grid(tmp_path):
    """t on two pressure levels is one variable with a level dimension; t on a hybrid level
    and 2t are others; a name on two level types gets the level type as suffix; the same
    parameter on a second grid is a separate variable with its own coordinates."""
    msgs = [
        message(shortName="t", typeOfFirstFixedSurface=100, scaleFactorOfFirstFixedSurface=0,
                scaledValueOfFirstFixedSurface=85000),
        message(shortName="t", typeOfFirstFixedSurface=100, scaleFactorOfFirstFixedSurface=0,
                scaledValueOfFirstFixedSurface=50000),
        message(shortName="t", typeOfLevel="hybrid", level=1),
        message(shortName="2t"),
        message(shortName="msl"),
        message(shortName="msl", longitudeOfFirstGridPointInDegrees=10.0,
                longitudeOfLastGridPointInDegrees=40.0),
    ]
    url = write(tmp_path / "mixed.grib2", *msgs)
    vds = build(url).dataset
    refs = {n: v for n, v in vds.variables.items() if v.refs is not None}
    assert sorted(refs) == ["2t", "msl_grid0", "msl_grid1", "t_hybrid", "t_isobaricInhPa"]
    assert refs["t_isobaricInhPa"].dims == ("level", "latitude", "longitude")
    assert list(vds.variables["level"].data) == [500.0, 850.0]
    assert vds.variables["level"].attrs["GRIB_typeOfLevel"] == "isobaricInhPa"
    assert refs["t_hybrid"].dims == ("latitude", "longitude")
    assert refs["t_hybrid"].attrs["GRIB_level"] == 1.0
    assert refs["msl_grid0"].dims == ("latitude", "longitude")
    assert refs["msl_grid1"].dims == ("latitude_1", "longitude_1")
    assert vds.variables["longitude_1"].data[0] == 10.0
    assert vds.variables["longitude"].data[0] == 0.0
    ds = open_store(url)  # each grid's coordinates come from a message on that grid
    assert float(ds.longitude_1[0]) == 10.0 and float(ds.longitude[0]) == 0.0
    np.testing.assert_array_equal(ds["t_isobaricInhPa"].sel(level=850.0).values,
                                  eccodes_values(msgs[0])[::-1].astype(np.float32))


def test_step_type_splits_a_name(tmp_path):
    """The real cfgrib_cfrzr_and_cprat.grib: cfrzr and cpr each come instantaneous and
    averaged at the same step; they become name_instant / name_avg, not duplicates."""
    path = REAL / "cfgrib_cfrzr_and_cprat.grib"
    if not path.exists():
        pytest.skip("shared/data/real is not beside the checkout")
    vds = build(storage.normalize_url(str(path))).dataset
    names = sorted(n for n, v in vds.variables.items() if v.refs is not None)
    assert names == ["cfrzr_avg", "cfrzr_instant", "cpr_avg", "cpr_instant"]
    assert vds.variables["cfrzr_avg"].attrs["GRIB_stepType"] == "avg"


def test_dimensions_from_the_keys_that_vary(tmp_path):
    """init_time, member and step become dimensions because they vary; the level does not
    vary and is an attribute. Sub-hourly steps work (minutes)."""
    msgs = []
    for date in (20240101, 20240102):
        for number in (0, 1, 2):
            for minutes in (0, 30, 90):
                msgs.append(message(
                    productDefinitionTemplateNumber=1, shortName="2t", dataDate=date,
                    number=number, stepUnits="m", forecastTime=minutes))
    del msgs[5]  # one field absent: a missing chunk, read as NaN
    url = write(tmp_path / "ens.grib2", *msgs)
    ds = open_store(url)
    t = ds["2t"]
    assert t.dims == ("init_time", "member", "step", "latitude", "longitude")
    assert list(ds.member.values) == [0, 1, 2]
    assert list(ds.step.values) == [np.timedelta64(m, "m") for m in (0, 30, 90)]
    assert list(ds.init_time.values) == [np.datetime64("2024-01-01T12:00"),
                                         np.datetime64("2024-01-02T12:00")]
    assert t.attrs["GRIB_level"] == 2.0 and "level" not in t.dims
    assert np.isnan(t.values[0, 1, 2]).all()  # the deleted message: date 1, member 1, 90 min
    np.testing.assert_array_equal(t.values[1, 2, 1], eccodes_values(msgs[-2])[::-1]
                                  .astype(np.float32))


def test_accumulation_window_start(tmp_path):
    """stepType accum: where each step's window starts is kept (startStep)."""
    msgs = [message(centre="ecmf", paramId=228, forecastTime=0, lengthOfTimeRange=h)
            for h in (6, 12)]
    built = build(write(tmp_path / "tp.grib2", *msgs))
    assert [f.window_start for f in built.fields] == [np.timedelta64(0, "s")] * 2
    assert "tp_window_start" in built.dataset.variables


# --------------------------------------------------------------------------- names


def test_names_come_from_eccodes_not_gribberish(tmp_path):
    """ECMWF's tp is discipline 0, category 1, number 193: gribberish's NCEP table calls it
    CFRZR (categorical freezing rain); the variable is named tp, from ecCodes."""
    import gribberish

    msg = message(centre="ecmf", paramId=228)
    assert gribberish.parse_grib_message_metadata(msg, 0).var_abbrev == "CFRZR"
    url = write(tmp_path / "tp.grib2", msg)
    ds = open_store(url)
    assert list(ds.data_vars) == ["tp"]
    assert ds.tp.attrs["GRIB_shortName"] == "tp"
    assert ds.tp.attrs["long_name"] == "Total precipitation"
    assert ds.tp.attrs["GRIB_stepType"] == "accum"


def test_unknown_parameter_is_named_by_its_numbers(tmp_path):
    """A parameter ecCodes has no name for: var_<discipline>_<category>_<number>."""
    msg = message(discipline=209, parameterCategory=10, parameterNumber=0)
    vds = build(write(tmp_path / "mrms.grib2", msg)).dataset
    assert "var_209_10_0" in vds.variables
    assert vds.variables["var_209_10_0"].attrs["GRIB_discipline"] == 209


def test_attributes(tmp_path):
    url = write(tmp_path / "t.grib2", message(shortName="2t"))
    attrs = build(url).dataset.variables["2t"].attrs
    assert attrs["long_name"] == "2 metre temperature"
    assert attrs["units"] == "K"
    assert attrs["standard_name"] == "air_temperature"
    assert attrs["GRIB_paramId"] == 167
    assert attrs["GRIB_typeOfLevel"] == "heightAboveGround"
    assert attrs["GRIB_gridType"] == "regular_ll"
    assert attrs["GRIB_packingType"] == "grid_simple"
    assert attrs["GRIB_edition"] == 2
    assert attrs["GRIB_init_time"] == "2007-03-23T12:00:00"


# --------------------------------------------------------------------------- values


def test_manifest_store_equals_eccodes_grib1_and_grib2(tmp_path):
    """Values through the ManifestStore equal ecCodes' (cast to float32), latitude
    increasing, for a GRIB1 and a GRIB2 message in one file."""
    g1 = message("GRIB1", shortName="2t", typeOfLevel="surface")
    g2 = message(shortName="msl", bitsPerValue=16)
    url = write(tmp_path / "both.grib", g1, g2)
    ds = open_store(url)
    assert ds["2t"].attrs["GRIB_edition"] == 1 and ds["msl"].attrs["GRIB_edition"] == 2
    assert ds["2t"].dtype == np.float32
    np.testing.assert_array_equal(ds["msl"].values,
                                  eccodes_values(g2)[::-1].astype(np.float32))
    # the GRIB1 sample is global 0..359 E: rolled to -180..179
    want = np.roll(eccodes_values(g1)[::-1], 180, axis=1).astype(np.float32)
    np.testing.assert_array_equal(ds["2t"].values, want)
    assert np.all(np.diff(ds.latitude.values) > 0)
    assert ds["2t"].dims == ("latitude", "longitude")  # the first grid in the file
    assert float(ds.longitude[0]) == -180.0 and float(ds.longitude_1[0]) == 0.0


def test_grib2_bitmap_gives_nan(tmp_path):
    """Points the GRIB2 bitmap marks absent read as NaN, the others as ecCodes' values."""
    vals = np.linspace(250.0, 300.0, NI * NJ)
    vals[::7] = 9999.0
    msg = message(bitmapPresent=1, missingValue=9999.0, values=vals, bitsPerValue=16)
    h = eccodes.codes_new_from_message(msg)
    assert eccodes.codes_get(h, "bitmapPresent") == 1
    eccodes.codes_release(h)
    got = open_store(write(tmp_path / "bitmap.grib2", msg))["t"].values
    want = eccodes_values(msg)[::-1].astype(np.float32)
    assert np.isnan(want).sum() == len(vals[::7])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got, want)


def test_ieee_64_bit_is_float64(tmp_path):
    """64-bit IEEE packing keeps float64 so values equal ecCodes' exactly."""
    vals = np.random.default_rng(1).normal(size=NI * NJ) * 1e-3 + np.pi
    msg = message(packingType="grid_ieee", precision=2, values=vals)
    url = write(tmp_path / "ieee.grib2", msg)
    ds = open_store(url)
    assert ds.t.dtype == np.float64
    np.testing.assert_array_equal(ds.t.values, eccodes_values(msg)[::-1])
    msg32 = message(packingType="grid_ieee", precision=1, values=vals)
    assert open_store(write(tmp_path / "ieee32.grib2", msg32)).t.dtype == np.float32


# --------------------------------------------------------------------------- refusals


def test_truncated_file_names_the_message(tmp_path):
    a, b = message(shortName="2t"), message(shortName="msl")
    url = write(tmp_path / "cut.grib2", a, b[: len(b) // 2])
    with pytest.raises(CorruptSourceError) as e:
        build(url)
    text = str(e.value)
    assert "cut.grib2" in text and f"message 2 (byte {len(a)})" in text
    assert "truncated" in text and "\n" not in text


def test_missing_7777_is_corrupt(tmp_path):
    a = bytearray(message())
    a[-4:] = b"7778"
    with pytest.raises(CorruptSourceError, match=r"message 1 \(byte 0\).*7777"):
        build(write(tmp_path / "end.grib2", bytes(a)))


def test_garbage_is_unrecognized(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    noise = noise.replace(b"GRIB", b"GRIX")
    with pytest.raises(UnrecognizedFormatError, match="not a GRIB file"):
        build(write(tmp_path / "noise.grib", noise))
    with pytest.raises(UnrecognizedFormatError, match="empty"):
        build(write(tmp_path / "empty.grib", b""))


@pytest.mark.parametrize("length", [0, 1, 20, 2**63])
def test_garbage_length_is_corrupt(tmp_path, length):
    """A length field of zero, too small or past the end: refused, never a hang."""
    msg = bytearray(message())
    msg[8:16] = length.to_bytes(8, "big")
    with pytest.raises(CorruptSourceError, match=r"message 1 \(byte 0\)"):
        build(write(tmp_path / "len.grib2", bytes(msg)))


def test_unknown_edition_is_corrupt(tmp_path):
    msg = bytearray(message())
    msg[7] = 7
    with pytest.raises(CorruptSourceError, match="edition 7"):
        build(write(tmp_path / "ed.grib", bytes(msg)))


def test_scan_terminates_on_damaged_headers():
    """Random damage to indicator and section headers: the byte walk either accepts the
    message or raises a zarrport error, and always returns quickly."""
    good = message() + message(shortName="msl")
    rng = random.Random(0)
    t0 = time.perf_counter()
    outcomes = set()
    for _ in range(2000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            at = rng.choice([4, 5, 6, 7, 8, 14, 15, 16, 19, 20, 36, 40, rng.randrange(len(data))])
            data[at] = rng.randrange(256)
        try:
            locate_messages(bytes(data), "fuzz")
            outcomes.add("ok")
        except ZarrportError as e:
            outcomes.add(type(e).__name__)
    assert time.perf_counter() - t0 < 10
    assert "ok" in outcomes and "CorruptSourceError" in outcomes


def multi(*msgs: bytes) -> bytes:
    """GRIB2 messages on one grid as one multi-field message (sections 4-7 repeated)."""
    from zarrport.testing.grib_synthetic import multi_field_message

    return multi_field_message(*msgs)


def test_multi_field_messages_each_field_its_own_chunk(tmp_path):
    """NCEP-style messages holding u and v: each field is a chunk (the message's byte
    range, the field picked by the codec's message_field), exact through Icechunk and the
    ManifestStore, and ecCodes (multi-field support on) agrees field by field."""
    import zarrport
    from zarrport.virtual.icechunk import write_icechunk

    msgs = []
    for s in (0, 6):
        u = message(values=np.arange(NI * NJ) * 1.0 + s, shortName="10u", stepUnits=1,
                    forecastTime=s)
        v = message(values=np.arange(NI * NJ) * -1.0 - s, shortName="10v", stepUnits=1,
                    forecastTime=s)
        msgs.append(multi(u, v))
    url = write(tmp_path / "uv.grib2", message(shortName="2t"), *msgs)
    built = build(url)
    var = built.dataset.variables["10v"]
    assert var.serializer["configuration"]["message_field"] == 1
    assert built.dataset.variables["10u"].serializer["configuration"]["message_field"] == 0
    assert "message_field" not in built.dataset.variables["2t"].serializer["configuration"]
    repo = str(tmp_path / "uv.icechunk")
    write_icechunk(built.dataset, repo, message="test", provenance={})
    want = {}
    eccodes.codes_grib_multi_support_on()
    try:
        with open(tmp_path / "uv.grib2", "rb") as f:
            while (h := eccodes.codes_grib_new_from_file(f)) is not None:
                key = (eccodes.codes_get(h, "shortName"), eccodes.codes_get(h, "endStep"))
                want[key] = eccodes.codes_get_values(h).reshape(NJ, NI)[::-1]
                eccodes.codes_release(h)
    finally:
        eccodes.codes_grib_multi_support_off()
    assert len(want) == 5
    for ds in (zarrport.open_dataset(repo), open_store(url)):
        for name in ("10u", "10v"):
            for k, step in enumerate((0, 6)):
                np.testing.assert_array_equal(ds[name].isel(step=k).values,
                                              want[(name, step)].astype(np.float32))


def test_multi_field_previously_defined_bitmap(tmp_path):
    """A field whose section 6 says "the bitmap defined before applies" (254) is read with
    the earlier field's bitmap."""
    from zarrport.grib.codec import grib2_field

    vals = np.arange(NI * NJ) * 1.0
    vals[::3] = 9999.0
    a = message(values=vals, shortName="10u", bitmapPresent=1, missingValue=9999.0)
    b = message(values=np.where(vals == 9999.0, vals, vals + 1), shortName="10v",
                bitmapPresent=1, missingValue=9999.0)
    both = multi(a, b)
    secs = sections(both)
    sixes = [i for i, s_ in enumerate(secs) if s_[4] == 6]
    assert len(sixes) == 2 and secs[sixes[0]] == secs[sixes[1]]
    secs[sixes[1]] = (6).to_bytes(4, "big") + bytes([6, 254])
    body = b"".join(secs)
    msg = both[:8] + (16 + len(body) + 4).to_bytes(8, "big") + body + b"7777"
    url = write(tmp_path / "bm.grib2", msg)
    ds = open_store(url)
    want = eccodes_values(grib2_field(msg, 1))[::-1].astype(np.float32)
    assert np.isnan(want).sum() == len(vals[::3])
    np.testing.assert_array_equal(ds["10v"].values, want)


def test_a_field_that_is_not_there_is_corrupt():
    from zarrport.grib.codec import grib2_field

    both = multi(message(shortName="10u"), message(shortName="10v"))
    with pytest.raises(CorruptSourceError, match="2 field"):
        grib2_field(both, 2)
    lone = bytearray(message(shortName="10u"))
    secs = sections(bytes(lone))
    six = next(s_ for s_ in secs if s_[4] == 6)
    assert b"".join(secs).count(six) == 1
    with pytest.raises(CorruptSourceError, match="previously defined bitmap"):
        body = b"".join((6).to_bytes(4, "big") + bytes([6, 254]) if s_[4] == 6 else s_
                        for s_ in secs)
        grib2_field(bytes(lone[:8]) + (16 + len(body) + 4).to_bytes(8, "big") + body
                    + b"7777", 0)


def test_unsupported_grids(tmp_path):
    with pytest.raises(UnsupportedVariableError, match="spherical harmonics"):
        build(write(tmp_path / "sh.grib2", message("sh_ml_grib2")))
    # ecCodes ignores alternative row scanning on regular grids: refused, not guessed
    with pytest.raises(UnsupportedVariableError,
                       match=r"message 1 .*regular_ll with alternative row scanning"):
        build(write(tmp_path / "ars.grib2", message(alternativeRowScanning=1)))


@pytest.mark.parametrize("sample", ["reduced_gg_pl_32_grib2", "reduced_gg_pl_32_grib1",
                                    "reduced_ll_sfc_grib2", "reduced_rotated_gg_sfc_grib2"])
def test_reduced_grids_are_one_values_dimension(tmp_path, sample):
    """Rows of different lengths: one ``values`` dimension in the message's order, with
    ecCodes' latitude/longitude of each point as coordinates (cfgrib's layout); the same
    through Icechunk and the ManifestStore; the codec decodes with ecCodes."""
    import zarrport
    from zarrport.virtual.icechunk import write_icechunk

    h = eccodes.codes_grib_new_from_samples(sample)
    n = eccodes.codes_get(h, "numberOfDataPoints")
    eccodes.codes_release(h)
    values = 250.0 + (np.arange(n) % 97) * 0.5
    msgs = [message(sample, values=values, stepUnits=1, endStep=s) if "grib1" not in sample
            else message(sample, values=values + s, stepUnits=1, P1=s) for s in (0, 6)]
    url = write(tmp_path / "r.grib", *msgs)
    built = build(url)
    name = next(n for n, v in built.dataset.variables.items() if v.refs is not None)
    var = built.dataset.variables[name]
    assert var.dims == ("step", "values") and var.shape == (2, n)
    assert var.serializer["configuration"]["decoder"] == "eccodes"
    repo = str(tmp_path / "r.icechunk")
    write_icechunk(built.dataset, repo, message="test", provenance={})
    ms = open_store(url)
    for ds in (zarrport.open_dataset(repo), ms):
        assert ds[name].dims == ("step", "values")
        assert set(ds[name].coords) >= {"latitude", "longitude", "step"}
        for k, msg in enumerate(msgs):
            h = eccodes.codes_new_from_message(msg)
            lat = eccodes.codes_get_array(h, "latitudes")
            lon = (eccodes.codes_get_array(h, "longitudes") + 180) % 360 - 180
            want = eccodes.codes_get_values(h).astype(np.float32)
            eccodes.codes_release(h)
            np.testing.assert_array_equal(ds.latitude.values, lat)
            np.testing.assert_array_equal(ds.longitude.values, lon)
            np.testing.assert_array_equal(ds[name].isel(step=k).values, want)


@pytest.mark.skipif(not (REAL / "pygrib_dspr.temp.bin").exists(), reason="no real data")
def test_alternative_row_scanning_is_put_in_order():
    """NDFD Mercator, every second row stored east to west: each value lands on the point
    ecCodes' geo-iterator gives it (not where codes_get_values' order would put it)."""
    from zarrport.grib.grid import iterator_points

    url = storage.normalize_url(str(REAL / "pygrib_dspr.temp.bin"))
    ds = open_store(url)
    with open(REAL / "pygrib_dspr.temp.bin", "rb") as f:
        h = eccodes.codes_grib_new_from_file(f)
        lat, lon, values = iterator_points(h)
        ni, nj = eccodes.codes_get(h, "Ni"), eccodes.codes_get(h, "Nj")
        stored = eccodes.codes_get_values(h)
        eccodes.codes_release(h)
    name = next(iter(ds.data_vars))
    got = ds[name].isel({d: 0 for d in ds[name].dims if d not in ("y", "x")}).values
    np.testing.assert_array_equal(ds.latitude.values.ravel(), lat)
    np.testing.assert_array_equal(ds.longitude.values.ravel(), (lon + 180) % 360 - 180)
    np.testing.assert_array_equal(got.ravel(), values.astype(np.float32))
    assert not np.array_equal(stored.reshape(nj, ni)[1], values.reshape(nj, ni)[1])


def test_duplicate_fields_are_refused_naming_both(tmp_path):
    """Two messages of one variable at the same coordinates (here: two accumulation windows
    ending at the same step) cannot both be a chunk: refused, naming the keys that differ."""
    msgs = [message(centre="ecmf", paramId=228, forecastTime=s, lengthOfTimeRange=12 - s)
            for s in (0, 6)]
    url = write(tmp_path / "dup.grib2", *msgs)
    with pytest.raises(IncompatibleSourcesError) as e:
        build(url)
    text = str(e.value)
    assert f"messages 1 (byte 0) and 2 (byte {len(msgs[0])})" in text
    assert "startStep" in text and "filter_by_keys" in text


def test_filter_by_keys(tmp_path):
    """filter_by_keys picks messages; messages left out are not even checked for grids."""
    url = write(tmp_path / "f.grib2", message(shortName="2t"),
                message("sh_ml_grib2", shortName="msl"))
    with pytest.raises(UnsupportedVariableError):
        build(url)
    vds = build(url, filter_by_keys={"shortName": ["2t", "10u"]}).dataset
    assert [n for n, v in vds.variables.items() if v.refs is not None] == ["2t"]
    with pytest.raises(InvalidArgumentError, match="none of its 2 messages"):
        build(url, filter_by_keys={"shortName": "tp"})


# --------------------------------------------------------------------------- locating


def test_leading_and_trailing_bytes_are_skipped(tmp_path):
    """A WMO bulletin header before a message and padding after it are not messages."""
    a = message()
    url = write(tmp_path / "wmo.grib2", b"****\r\r\nHEADER 123\r\r\n", a, b"\0" * 40)
    built = build(url)
    assert [(f.offset, f.length) for f in built.fields] == [(20, len(a))]


def test_eccodes_scan_agrees(tmp_path):
    msgs = [message("GRIB1"), message(), message(shortName="msl")]
    url = write(tmp_path / "three.grib", *msgs)
    a = build(url, decoder_scan="eccodes")
    b = build(url)
    assert [(f.offset, f.length) for f in a.fields] == [(f.offset, f.length)
                                                        for f in b.fields]
    with pytest.raises(InvalidArgumentError):
        GribParser(decoder_scan="gribberish")


def test_grib1_large_message_length(tmp_path):
    """GRIB1 over 8 MB: the length counts 120-byte blocks (ecCodes' rule); the walk finds
    both messages where ecCodes does."""
    ni, nj = 4000, 2001
    h = eccodes.codes_grib_new_from_samples("GRIB1")
    for k, v in (("Ni", ni), ("Nj", nj), ("iDirectionIncrementInDegrees", 0.09),
                 ("jDirectionIncrementInDegrees", 0.09),
                 ("latitudeOfFirstGridPointInDegrees", 90.0),
                 ("latitudeOfLastGridPointInDegrees", -90.0),
                 ("longitudeOfFirstGridPointInDegrees", 0.0),
                 ("longitudeOfLastGridPointInDegrees", 359.91), ("bitsPerValue", 24)):
        eccodes.codes_set(h, k, v)
    eccodes.codes_set_values(h, np.tile(np.arange(ni, dtype=np.float64), nj))
    big = eccodes.codes_get_message(h)
    eccodes.codes_release(h)
    assert len(big) > 2**24 and big[4] & 0x80  # the large-message coding is in use
    data = big + message("GRIB1") + big
    found = locate_messages(data, "big")
    assert [(m.offset, m.length) for m in found] == [
        (0, len(big)), (len(big), len(data) - 2 * len(big)),
        (len(data) - len(big), len(big))]


def test_remote_file_through_s3(s3_server):
    """An object store URL: the file is read through the registry, the ManifestStore
    references it there, and values equal ecCodes'."""
    from zarrport.grib.build import to_manifest_store

    a, b = message(shortName="2t"), message(shortName="2t", dataDate=20240102)
    s3_server.create_bucket("grib-scan")
    url = s3_server.put_object("grib-scan", "dir/two.grib2", a + b)
    registry = storage.object_store_registry([url], s3_server.storage_options)
    built = GribParser().build(url, registry)
    assert [f.url for f in built.fields] == [url, url]
    assert built.dataset.source_stats[0]["size"] == len(a + b)
    ds = xr.open_dataset(to_manifest_store(built, registry), engine="zarr",
                         consolidated=False, zarr_format=3, chunks=None)
    np.testing.assert_array_equal(ds["2t"].values[1],
                                  eccodes_values(b)[::-1].astype(np.float32))
    missing = url.replace("two", "absent")
    with pytest.raises(errors.SourceNotFoundError):
        GribParser().build(missing, registry)


def test_grib_bytes_inside_a_message_are_not_a_message(tmp_path):
    """Packed data can contain the bytes 'GRIB' (here: IEEE values spelling it); the walk
    jumps from one message's start to its end, so they are never taken for a message."""
    raw = np.frombuffer(b"GRIB\x00\x00\x07\x07" * (NI * NJ // 2), dtype=">f4")
    msg = message(packingType="grid_ieee", precision=1, values=raw.astype(np.float64))
    assert msg.count(b"GRIB") > 100
    url = write(tmp_path / "inner.grib2", msg, message(shortName="2t"))
    built = build(url)
    assert [f.offset for f in built.fields] == [0, len(msg)]
    ds = open_store(url)
    np.testing.assert_array_equal(ds["t"].values, raw.reshape(NJ, NI)[::-1].astype(np.float32))


def test_one_variable_across_editions(tmp_path):
    """t at 500 hPa in GRIB1 and at 850 hPa in GRIB2 (converted by ecCodes, same grid):
    one variable with a level dimension; the grids are merged because their layout and
    coordinates are equal, though their grid sections differ. ECMWF's GRIB1 always has an
    ensemble number (0), a deterministic GRIB2 field none: that mix is refused, naming
    both, unless the GRIB2 field is an ensemble member too."""
    h = eccodes.codes_grib_new_from_samples("GRIB1")
    eccodes.codes_set(h, "shortName", "t")
    eccodes.codes_set(h, "level", 500)
    eccodes.codes_set_values(h, np.linspace(220.0, 240.0, 360 * 181))
    g1 = eccodes.codes_get_message(h)
    eccodes.codes_set(h, "edition", 2)
    eccodes.codes_set(h, "level", 850)
    eccodes.codes_set_values(h, np.linspace(260.0, 290.0, 360 * 181))
    deterministic = eccodes.codes_get_message(h)
    eccodes.codes_set(h, "productDefinitionTemplateNumber", 1)
    eccodes.codes_set(h, "number", 0)
    eccodes.codes_set_values(h, np.linspace(260.0, 290.0, 360 * 181))
    g2 = eccodes.codes_get_message(h)
    eccodes.codes_release(h)
    with pytest.raises(IncompatibleSourcesError) as e:
        build(write(tmp_path / "mix.grib", g1, deterministic))
    assert "message 1 (byte 0, GRIB1) has the ensemble member number 0" in str(e.value)
    assert "message 2" in str(e.value) and "'edition': 2" in str(e.value)
    ds = open_store(write(tmp_path / "editions.grib", g1, g2))
    assert list(ds.data_vars) == ["t"] and ds.t.dims == ("level", "latitude", "longitude")
    assert ds.t.attrs["GRIB_edition"] == [1, 2] and ds.t.attrs["GRIB_member"] == 0
    for k, msg in enumerate((g1, g2)):
        want = np.roll(eccodes_values(msg)[::-1], 180, axis=1).astype(np.float32)
        np.testing.assert_array_equal(ds.t.values[k], want)


def test_unknown_packing_is_refused(tmp_path):
    """A data representation template ecCodes does not know: refused before any decoding,
    not mistaken for a grid problem."""
    msg = bytearray(message())
    at = 16 + sum(len(s) for s in sections(bytes(msg)) if s[4] < 5)
    assert msg[at + 4] == 5
    msg[at + 9:at + 11] = (777).to_bytes(2, "big")
    with pytest.raises(UnsupportedVariableError, match="data representation template 777"):
        build(write(tmp_path / "packing.grib2", bytes(msg)))


def test_a_message_eccodes_cannot_read_is_corrupt(tmp_path, monkeypatch):
    """Whatever ecCodes raises for a message is a CorruptSourceError naming it."""
    url = write(tmp_path / "two.grib2", message(), message(shortName="msl"))
    real = eccodes.codes_new_from_message
    calls = []

    def failing(data):
        calls.append(1)
        if len(calls) == 2:
            raise eccodes.GribInternalError(-13)  # what a damaged section gives
        return real(data)

    monkeypatch.setattr(eccodes, "codes_new_from_message", failing)
    with pytest.raises(CorruptSourceError) as e:
        build(url)
    assert f"message 2 (byte {len(message())})" in str(e.value)
    assert "ecCodes cannot read it" in str(e.value)


def test_fractional_levels(tmp_path):
    """GRIB2 soil layers 0-0.1, 0.1-0.4, 0.4-1, 1-2 m: ecCodes' (long) level is 0, 0, 0, 1;
    the parser reads it as a double, so they are four levels, exact through build(),
    Icechunk and the ManifestStore (whose level coordinate the codec reads as a double)."""
    import zarrport
    from zarrport.virtual.icechunk import write_icechunk

    layers = [(0, 1), (1, 4), (4, 10), (10, 20)]
    msgs = [message(typeOfFirstFixedSurface=106,
                    scaleFactorOfFirstFixedSurface=1, scaledValueOfFirstFixedSurface=top,
                    typeOfSecondFixedSurface=106, scaleFactorOfSecondFixedSurface=1,
                    scaledValueOfSecondFixedSurface=bottom) for top, bottom in layers]
    url = write(tmp_path / "soil.grib2", *msgs)
    built = build(url)
    assert list(built.dataset.variables["level"].data) == [0.0, 0.1, 0.4, 1.0]
    repo = str(tmp_path / "soil.icechunk")
    write_icechunk(built.dataset, repo, message="test", provenance={})
    ds = zarrport.open_dataset(repo)
    assert list(ds.level.values) == [0.0, 0.1, 0.4, 1.0]
    np.testing.assert_array_equal(ds.t.sel(level=0.4).values,
                                  eccodes_values(msgs[2])[::-1].astype(np.float32))
    store = GribParser()(url, storage.object_store_registry([url]))
    ms = xr.open_zarr(store, consolidated=False, zarr_format=3)
    assert list(ms.level.values) == [0.0, 0.1, 0.4, 1.0]
    np.testing.assert_array_equal(ms.t.sel(level=0.4).values, ds.t.sel(level=0.4).values)
