"""wgrib2 .idx and ECMWF .index parsing, on every real index in ../shared/data/real."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from zarrport.errors import CorruptSourceError, UnrecognizedFormatError
from zarrport.grib import parse_index

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
INDEXES = sorted((REAL / "idx").glob("*.idx")) + sorted((REAL / "idx").glob("*.index"))
WITH_GRIB = sorted((REAL / "grib").glob("*.idx"))


@pytest.mark.parametrize("path", INDEXES, ids=lambda p: p.name)
def test_every_real_index_parses_or_is_refused_by_name(path):
    data = path.read_bytes()
    if b"GB1IX1" in data[:100]:  # a binary grbindex of GRIB1, not an inventory
        with pytest.raises(UnrecognizedFormatError, match="binary GRIB1 grbindex"):
            parse_index(data, source=path.name)
        return
    entries = parse_index(data, source=path.name)
    lines = [ln for ln in data.decode().splitlines() if ln.strip()]
    assert len(entries) == len(lines)
    offsets = [e.offset for e in entries]
    assert offsets == sorted(offsets)
    for e in entries:
        assert e.param and e.name and e.offset >= 0
    # lengths are known for all but the last message (no file size given)
    last = max(offsets)
    assert all(e.length and e.length > 0 for e in entries if e.offset != last)


def test_sub_messages_share_one_message():
    entries = parse_index((REAL / "idx" / "idx_icpac_cfs_flxf_20260702_00_f006.01.idx")
                          .read_bytes(), source="cfs")
    u, v = (e for e in entries if e.message == 36)
    assert (u.field, v.field) == (1, 2) and u.param == "UGRD" and v.param == "VGRD"
    assert u.offset == v.offset == 1781393 and u.length == v.length
    nxt = next(e for e in entries if e.message == 37)
    assert u.length == nxt.offset - u.offset


def test_unnamed_wgrib2_fields_get_a_name_from_their_codes():
    entries = parse_index((REAL / "idx" / "idx_herbie_hrrr.t00z.wrfsfcf00.grib2.idx")
                          .read_bytes(), source="hrrr")
    e = entries[2]
    assert e.param.startswith("var discipline=0 center=7")
    assert e.name == "var_0_16_201" and e.level == "entire atmosphere"
    assert entries[0].keys == {"date": "2023120100", "forecast": "anl"}


def test_ecmwf_index_keys():
    entries = parse_index((REAL / "idx" / "idx_herbie_20231201000000-0h-oper-fc.index")
                          .read_bytes(), source="ecmwf")
    first = entries[0]
    assert (first.param, first.level, first.offset, first.length) == ("r", "pl 1000", 0, 199377)
    assert entries[1].offset == first.offset + first.length
    assert "number" not in first.keys  # an oper (control-like) forecast


def _grib_messages(path: Path) -> list[tuple[int, int]]:
    """(offset, length) of each GRIB2 message, from section 0 (magic + total length)."""
    data = path.read_bytes()
    out, pos = [], 0
    while (pos := data.find(b"GRIB", pos)) != -1:
        assert data[pos + 7] == 2
        (length,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
        out.append((pos, length))
        pos += length
    return out


@pytest.mark.parametrize("idx", WITH_GRIB, ids=lambda p: p.name)
def test_real_idx_offsets_and_lengths_match_the_grib_file(idx):
    grib = idx.with_suffix("")
    entries = parse_index(idx.read_bytes(), source=idx.name, file_size=grib.stat().st_size)
    spans = sorted({(e.offset, e.length) for e in entries})
    assert spans == _grib_messages(grib)


def test_bad_indexes_name_file_and_message(tmp_path):
    good = (REAL / "grib" / WITH_GRIB[0].name).read_bytes()
    grib_size = WITH_GRIB[0].with_suffix("").stat().st_size
    with pytest.raises(CorruptSourceError, match=r"message \d+ starts at byte \d+, past the "
                       r"end of the GRIB file \(\d+ bytes\): the index is for another file"):
        parse_index(good, source="x.idx", file_size=grib_size // 2)
    with pytest.raises(CorruptSourceError, match="line 2 is not a wgrib2 inventory line"):
        parse_index(b"1:0:d=2021113000:WIND:surface:anl:\nhello\n", source="x.idx")
    with pytest.raises(CorruptSourceError, match="message 2 starts at byte 5, before message 1"):
        parse_index(b"1:10:d=1:A:s:anl:\n2:5:d=1:B:s:anl:\n", source="x.idx")
    with pytest.raises(CorruptSourceError, match="line 1 is not an ECMWF index entry"):
        parse_index(b'{"param": "tp"}\n', source="x.index")
    with pytest.raises(CorruptSourceError, match="past the end of the GRIB file"):
        parse_index(b'{"param": "tp", "_offset": 0, "_length": 100}\n', source="x.index",
                    file_size=50)
    with pytest.raises(UnrecognizedFormatError, match="empty index"):
        parse_index(b"\n", source="x.idx")
    with pytest.raises(UnrecognizedFormatError, match="not a text index"):
        parse_index(b"\xff\xfe\x00garbage", source="x.idx")


def test_select_keeps_wanted_fields_with_lengths_from_every_line():
    text = (b"1:0:d=2025010100:TMP:2 m above ground:3 hour fcst:ENS=+1\n"
            b"2:100:d=2025010100:APCP:surface:0-3 hour acc fcst:ENS=+1\n"
            b"3:250:d=2025010100:var discipline=0 center=7 local_table=1 parmcat=16 parm=201:"
            b"surface:3 hour fcst:ENS=+1\n")
    every = parse_index(text, source="x.idx", file_size=400)
    picked = parse_index(text, source="x.idx", file_size=400,
                         select=lambda name, level: name in ("APCP", "var_0_16_201"))
    assert [e.name for e in picked] == ["APCP", "var_0_16_201"]
    assert [(e.offset, e.length) for e in picked] == [(100, 150), (250, 150)]
    assert picked == [e for e in every if e.name != "TMP"]
    assert picked[0].keys == {"date": "2025010100", "forecast": "0-3 hour acc fcst",
                              "extra": ["ENS=+1"]}
    # a bad line is refused even when nothing on it was asked for
    with pytest.raises(CorruptSourceError, match="line 2 is not a wgrib2 inventory line"):
        parse_index(b"1:0:d=1:A:s:anl:\n2:x:d=1:B:s:anl:\n", source="x.idx",
                    select=lambda name, level: name == "A")
    with pytest.raises(CorruptSourceError, match="line 1 is not a wgrib2 inventory line"):
        parse_index(b"1:0:d=1:A\n", source="x.idx")
