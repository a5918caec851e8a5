"""``zarrport pyramid``: every level against an independent numpy computation of the 2x2
block reduction of the source as netCDF4 reads it, the multiscales metadata, chunking, the
incomplete marker, and every bad input through the command line."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr

import zarrport
from test_cli import assert_clean_failure, run
from zarrport.convert import pyramid as pyr
from zarrport.convert.pyramid import coarsen_block, pyramid
from zarrport.convert.writer import MARKER, is_incomplete
from zarrport.errors import IncompleteOutputError, InvalidArgumentError, OutputExistsError

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
AIR = REAL / "nc4" / "kerchunk_air.nc"


# --------------------------------------------------------------------------- oracles


def oracle_mean(a: np.ndarray) -> np.ndarray:
    """NaN-aware mean of each 2x2 block of the last two axes (blocks past an odd edge hold
    the cells that exist), one block at a time."""
    ny, nx = a.shape[-2:]
    out = np.full(a.shape[:-2] + ((ny + 1) // 2, (nx + 1) // 2), np.nan)
    for idx in np.ndindex(*a.shape[:-2]):
        for i in range(out.shape[-2]):
            for j in range(out.shape[-1]):
                block = a[idx][2 * i:2 * i + 2, 2 * j:2 * j + 2]
                vals = block[~np.isnan(block)]
                if vals.size:
                    out[idx + (i, j)] = vals.mean()
    return out


def oracle_mode(a: np.ndarray, fill: int) -> np.ndarray:
    """Most frequent value other than ``fill`` per 2x2 block, ties to the smallest; ``fill``
    where a block has none."""
    ny, nx = a.shape
    out = np.full(((ny + 1) // 2, (nx + 1) // 2), fill, dtype=a.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            vals = [int(v) for v in a[2 * i:2 * i + 2, 2 * j:2 * j + 2].ravel() if v != fill]
            if vals:
                counts = Counter(vals)
                top = max(counts.values())
                out[i, j] = min(v for v, c in counts.items() if c == top)
    return out


def oracle_nearest(a: np.ndarray) -> np.ndarray:
    ny, nx = a.shape
    return np.array([[a[2 * i, 2 * j] for j in range((nx + 1) // 2)]
                     for i in range((ny + 1) // 2)], dtype=a.dtype)


def oracle_pairs(c: np.ndarray) -> np.ndarray:
    return np.array([c[i:i + 2].mean() for i in range(0, c.size, 2)])


def netcdf(path: Path, name: str, *, raw: bool = False) -> np.ndarray:
    with netCDF4.Dataset(path) as nc:
        v = nc[name]
        if raw:
            v.set_auto_maskandscale(False)
            return np.asarray(v[:])
        return np.ma.filled(v[:].astype(np.float64), np.nan)


def level(out: Path, k: int, **kw) -> xr.Dataset:
    return xr.open_zarr(str(out), group=str(k), decode_times=False, **kw)


def root_attrs(out: Path) -> dict:
    return json.loads((out / "zarr.json").read_text())["attributes"]


# --------------------------------------------------------------------------- sources


@pytest.fixture
def continuous(tmp_path) -> Path:
    """Packed tas (int16, scale/offset, _FillValue) on an odd 9x13 south-up grid with NaNs
    (one all-NaN block), bounds, a noleap time and a variable without space."""
    rng = np.random.default_rng(1)
    nt, ny, nx = 2, 9, 13
    tas = rng.normal(280, 5, (nt, ny, nx)).astype("float32")
    tas[0, 0:2, 0:2] = np.nan  # a whole block
    tas[0, 2, 3] = np.nan
    tas[1, 8, 12] = np.nan  # the padded corner's only cell
    tas[1, 4:6, 6] = np.nan
    lat = np.linspace(-80, 80, ny)
    lon = np.arange(nx) * 2.5
    ds = xr.Dataset(
        {"tas": (("time", "lat", "lon"), tas,
                 {"units": "K", "standard_name": "air_temperature"}),
         "series": (("time",), np.arange(nt, dtype="f4")),
         "lat_bnds": (("lat", "bnds"), np.stack([lat - 10, lat + 10], 1)),
         "time_bnds": (("time", "bnds"), np.array([[0.0, 1.0], [1.0, 2.0]]))},
        coords={"time": ("time", [0.5, 1.5], {"units": "days since 2000-01-01",
                                              "calendar": "noleap", "bounds": "time_bnds"}),
                "lat": ("lat", lat, {"units": "degrees_north", "bounds": "lat_bnds"}),
                "lon": ("lon", lon, {"units": "degrees_east"})},
        attrs={"title": "pyramid test"})
    path = tmp_path / "tas.nc"
    ds.to_netcdf(path, encoding={
        "tas": {"dtype": "int16", "scale_factor": 0.01, "add_offset": 280.0,
                "_FillValue": np.int16(-32767), "chunksizes": (1, 4, 8)},
        "time": {"dtype": "f8"}})
    return path


@pytest.fixture
def categorical(tmp_path) -> Path:
    """uint8 classes on a 7x11 grid with _FillValue 255: ties, an all-fill block, a block
    whose top-left is the fill value."""
    rng = np.random.default_rng(2)
    lc = rng.integers(0, 5, (7, 11)).astype("uint8")
    lc[0:2, 0:2] = [[1, 2], [2, 1]]  # tie 1/2 -> 1
    lc[0:2, 2:4] = [[255, 255], [255, 255]]  # nothing valid -> fill
    lc[2:4, 0:2] = [[255, 3], [3, 0]]  # fill on the top-left; mode 3
    lc[2:4, 2:4] = [[4, 0], [255, 255]]  # tie 0/4 -> 0
    ds = xr.Dataset(
        {"lc": (("y", "x"), lc, {"long_name": "land cover", "flag_values": [0, 1, 2, 3, 4]})},
        coords={"y": ("y", np.arange(7) * -100.0 + 600, {"standard_name":
                                                          "projection_y_coordinate"}),
                "x": ("x", np.arange(11) * 100.0, {"standard_name": "projection_x_coordinate"})})
    path = tmp_path / "lc.nc"
    ds.to_netcdf(path, encoding={"lc": {"_FillValue": np.uint8(255)}})
    return path


# --------------------------------------------------------------------------- values


def test_mean_levels_match_numpy_blocks_nan_aware(tmp_path, continuous):
    out = tmp_path / "p.zarr"
    s = pyramid(str(continuous), str(out), levels=3)
    src = netcdf(continuous, "tas")  # decoded by netCDF4, fill values as NaN
    want1 = oracle_mean(src)
    want2 = oracle_mean(want1)  # each level from the one before
    got0 = level(out, 0).tas.values
    np.testing.assert_allclose(got0, src, rtol=1e-12, equal_nan=True)
    got1 = level(out, 1).tas.values
    assert np.isnan(got1[0, 0, 0])  # the all-NaN block
    assert not np.isnan(got1[0, 1, 1])  # a block with one NaN of four
    np.testing.assert_allclose(got1, want1, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(level(out, 2).tas.values, want2, rtol=1e-12, equal_nan=True)
    assert np.isnan(got1).sum() == np.isnan(want1).sum()
    # odd sizes padded: 9x13 -> 5x7 -> 3x4, the edge row/column from the cells that exist
    assert [lv["sizes"] for lv in s["levels"]] == [
        {"lat": 9, "lon": 13}, {"lat": 5, "lon": 7}, {"lat": 3, "lon": 4}]
    assert np.isnan(got1[1, 4, 6])  # its one cell is NaN
    assert got1[0, 4, 6] == pytest.approx(src[0, 8, 12])
    # coordinates: means of the block centres, the padded edge its one centre
    with netCDF4.Dataset(continuous) as nc:
        lat, lon = nc["lat"][:], nc["lon"][:]
        time = nc["time"][:]
    lvl1 = level(out, 1)
    np.testing.assert_allclose(lvl1.lat.values, oracle_pairs(lat))
    np.testing.assert_allclose(lvl1.lon.values, oracle_pairs(lon))
    assert lvl1.lat.values[-1] == lat[-1]
    np.testing.assert_allclose(level(out, 2).lon.values, oracle_pairs(oracle_pairs(lon)))
    # CF kept: units, standard_name, time encoded with its units and calendar
    assert lvl1.tas.attrs["units"] == "K"
    assert lvl1.tas.attrs["standard_name"] == "air_temperature"
    np.testing.assert_array_equal(lvl1.time.values, time)
    assert lvl1.time.attrs["units"] == "days since 2000-01-01"
    assert lvl1.time.attrs["calendar"] == "noleap"
    decoded = xr.open_zarr(str(out), group="1")  # times decode
    assert decoded.time.values[0].calendar == "noleap"
    assert lvl1.attrs["title"] == "pyramid test"
    # no scale/offset on the means; float with NaN as the fill value
    assert "scale_factor" not in level(out, 1, mask_and_scale=False).tas.attrs
    assert level(out, 1).tas.dtype.kind == "f"
    # bounds: lat's at level 0 only (and no dangling `bounds`), time's everywhere
    assert "lat_bnds" in level(out, 0) and "lat_bnds" not in lvl1
    assert "bounds" not in lvl1.lat.attrs
    assert "time_bnds" in lvl1 and lvl1.time.attrs["bounds"] == "time_bnds"
    # left out and said so
    assert "series" not in level(out, 0)
    assert s["left_out"] == [{"variable": "series", "reason": "no y and x dimensions (time)"}]


@pytest.mark.parametrize("method", ["mode", "nearest"])
def test_categorical_mode_and_nearest_keep_dtype_and_fill(tmp_path, categorical, method):
    out = tmp_path / f"{method}.zarr"
    pyramid(str(categorical), str(out), method=method, levels=3)
    raw = netcdf(categorical, "lc", raw=True)
    oracle = (lambda a: oracle_mode(a, 255)) if method == "mode" else oracle_nearest
    want1 = oracle(raw)
    want2 = oracle(want1)
    for k, want in ((1, want1), (2, want2)):
        got = level(out, k, mask_and_scale=False).lc
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got.values, want)
        assert got.attrs["_FillValue"] == 255
        meta = json.loads((out / str(k) / "lc" / "zarr.json").read_text())
        assert meta["fill_value"] == 255  # what web readers take as "no data"
    lvl1 = level(out, 1, mask_and_scale=False).lc.values
    if method == "mode":
        assert lvl1[0, 0] == 1 and lvl1[0, 1] == 255 and lvl1[1, 0] == 3 and lvl1[1, 1] == 0
    else:
        assert lvl1[1, 0] == 255  # the top-left sample, fill value or not
    assert level(out, 1, mask_and_scale=False).lc.attrs["flag_values"] == [0, 1, 2, 3, 4]
    assert [level(out, k).sizes["y"] for k in range(3)] == [7, 4, 2]
    assert [level(out, k).sizes["x"] for k in range(3)] == [11, 6, 3]
    assert root_attrs(out)["multiscales"]["resampling_method"] == method


def test_curvilinear_coordinates_and_grid_mapping(tmp_path):
    """2-D latitude/longitude: block means of the cell centres (a block across the
    antimeridian averages across it, not across the globe); the grid mapping comes along,
    without GDAL's level-0 GeoTransform on coarser levels."""
    ny, nx = 5, 6
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    lat = 60.0 + yy * 0.5 + xx * 0.1
    lon = (178.0 + xx * 0.8 + yy * 0.2 + 180) % 360 - 180  # crosses +-180
    val = (yy * 10 + xx).astype("f4")
    ds = xr.Dataset(
        {"v": (("y", "x"), val, {"grid_mapping": "crs", "units": "1"}),
         "crs": ((), np.int32(0), {"grid_mapping_name": "polar_stereographic",
                                   "GeoTransform": "0 1 0 0 0 -1"}),
         "lat_bnds": (("y", "x", "nv"), np.stack([lat - 0.25, lat, lat + 0.25, lat], -1))},
        coords={"lat": (("y", "x"), lat, {"standard_name": "latitude",
                                          "units": "degrees_north", "bounds": "lat_bnds"}),
                "lon": (("y", "x"), lon, {"standard_name": "longitude",
                                          "units": "degrees_east"})})
    src = tmp_path / "curvi.nc"
    ds.to_netcdf(src)
    out = tmp_path / "c.zarr"
    s = pyramid(str(src), str(out), levels=2)
    lvl1 = level(out, 1)
    np.testing.assert_allclose(lvl1.lat.values, oracle_mean(lat))
    unwrapped = oracle_mean(np.where(lon < 0, lon + 360, lon))  # all blocks near 180
    np.testing.assert_allclose((lvl1.lon.values - unwrapped + 180) % 360 - 180, 0,
                               atol=1e-9)
    assert np.all(np.abs(lvl1.lon.values) <= 180)  # in the range the source uses
    np.testing.assert_allclose(lvl1.v.values, oracle_mean(val.astype("f8")))
    assert lvl1.v.attrs["grid_mapping"] == "crs"
    assert lvl1.crs.attrs["grid_mapping_name"] == "polar_stereographic"
    assert "GeoTransform" in level(out, 0).crs.attrs and "GeoTransform" not in lvl1.crs.attrs
    assert s["left_out"] == [] and s["bounds"] == ["lat_bnds"]
    np.testing.assert_array_equal(level(out, 0).lat_bnds.values,
                                  netcdf(src, "lat_bnds"))  # level 0 only
    assert "lat_bnds" not in lvl1 and "bounds" not in lvl1.lat.attrs
    layout = root_attrs(out)["multiscales"]["layout"]
    assert "spatial:transform" not in layout[0]  # no 1-D regular axes to describe
    assert [e["spatial:shape"] for e in layout] == [[5, 6], [3, 3]]


def test_block_reductions_units():
    """Longitude blocks straddling the seam average across it; mode ties to the smallest;
    float fill values compare as stored."""
    lon = np.array([179.0, -179.0, 10.0])
    got = coarsen_block(lon, (0,), "mean", period=360.0)
    assert got.tolist() in ([180.0, 10.0], [-180.0, 10.0])
    edge = np.array([179.0, 180.0, 180.0])  # a grid ending on 180 keeps it
    assert coarsen_block(edge, (0,), "mean", period=360.0).tolist() == [179.5, 180.0]
    assert coarsen_block(np.array([359.0, 1.0]), (0,), "mean", period=360.0).tolist() \
        in ([0.0], [360.0])
    a = np.array([[5, 7], [7, 5]], dtype="int16")
    assert coarsen_block(a, (0, 1), "mode")[0, 0] == 5
    f = np.array([[1e20, 1e20], [2.5, np.nan]], dtype="float32")
    assert coarsen_block(f, (0, 1), "mode", fill=(1e20,))[0, 0] == np.float32(2.5)
    assert coarsen_block(f, (0, 1), "mean")[0, 0] == np.float32((1e20 + 1e20 + 2.5) / 3)


# --------------------------------------------------------------------------- metadata, chunks


def test_multiscales_metadata_and_consolidation(tmp_path, continuous):
    out = tmp_path / "p.zarr"
    pyramid(str(continuous), str(out), levels=3)
    attrs = root_attrs(out)
    uuids = {c["uuid"] for c in attrs["zarr_conventions"]}
    assert "d35379db-88df-4056-af3a-620245f8e347" in uuids  # multiscales
    layout = attrs["multiscales"]["layout"]
    assert [e["asset"] for e in layout] == ["0", "1", "2"]
    g = zarr.open_group(str(out), mode="r")
    for k, e in enumerate(layout):
        assert isinstance(g[e["asset"]], zarr.Group)
        assert e["transform"]["scale"] == [2.0 ** k, 2.0 ** k]
        assert e["transform"]["translation"] == [0.0, 0.0]
        if k:
            assert e["derived_from"] == "0" and e["resampling_method"] == "average"
    assert attrs["multiscales"]["resampling_method"] == "average"
    assert attrs["spatial:dimensions"] == ["lat", "lon"]
    t = [e["spatial:transform"] for e in layout]
    with netCDF4.Dataset(continuous) as nc:
        lat, lon = nc["lat"][:], nc["lon"][:]
    dx, dy = lon[1] - lon[0], lat[1] - lat[0]
    assert t[0] == pytest.approx([dx, 0, lon[0] - dx / 2, 0, dy, lat[0] - dy / 2])
    for k in (1, 2):  # pixel size doubles, origin stays
        assert t[k][0] == pytest.approx(2 * t[k - 1][0])
        assert t[k][4] == pytest.approx(2 * t[k - 1][4])
        assert t[k][2] == t[0][2] and t[k][5] == t[0][5]
    assert attrs["spatial:bbox"] == pytest.approx(
        [lon[0] - dx / 2, lat[0] - dy / 2, lon[-1] + dx / 2, lat[-1] + dy / 2])
    # south-up: no spatial:shape (OpenLayers would take the grid as north-up)
    assert all("spatial:shape" not in e for e in layout)
    meta = json.loads((out / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    assert {"0/tas", "1/tas", "2/tas", "1/lat", "2/lon"} <= set(meta)
    assert attrs[MARKER]["status"] == "complete"
    for k in range(3):
        assert level(out, k).attrs[MARKER]["status"] == "complete"


def test_default_levels_and_256_chunks(tmp_path):
    """A 300x600 field: levels until the larger side is <= 256 (600, 300, 150), every
    level chunked (1, <=256, <=256)."""
    rng = np.random.default_rng(3)
    ds = xr.Dataset({"z": (("time", "lat", "lon"), rng.random((2, 300, 600), dtype="f4"))},
                    coords={"time": ("time", [0, 1], {"units": "hours since 2020-01-01"}),
                            "lat": np.linspace(89.7, -89.7, 300),
                            "lon": np.linspace(0, 359.4, 600)})
    src = tmp_path / "z.nc"
    ds.to_netcdf(src, encoding={"z": {"chunksizes": (1, 100, 200)}})
    out = tmp_path / "z.zarr"
    s = pyramid(str(src), str(out))
    assert [lv["sizes"] for lv in s["levels"]] == [
        {"lat": 300, "lon": 600}, {"lat": 150, "lon": 300}, {"lat": 75, "lon": 150}]
    g = zarr.open_group(str(out), mode="r")
    for k in range(3):
        arr = g[f"{k}/z"]
        assert arr.chunks[0] == 1
        assert all(c <= 256 for c in arr.chunks[1:])
        assert arr.chunks[1:] == tuple(min(256, n) for n in arr.shape[1:])
        assert "zstd" in json.dumps(json.loads((out / str(k) / "z" / "zarr.json").read_text()))
    # north-up: every level declares its spatial:shape
    layout = root_attrs(out)["multiscales"]["layout"]
    assert [e["spatial:shape"] for e in layout] == [[300, 600], [150, 300], [75, 150]]
    assert layout[0]["spatial:transform"][4] < 0
    np.testing.assert_allclose(level(out, 1).z.values, oracle_mean(ds.z.values.astype("f8")),
                               rtol=1e-6)


def test_real_packed_file_north_up(tmp_path):
    """NCEP air (int16 packed, 11x21, descending latitude): levels 1 and 2 against netCDF4."""
    if not AIR.is_file():
        pytest.skip("shared real data not present")
    out = tmp_path / "air.zarr"
    pyramid(str(AIR), str(out), levels=3)
    src = netcdf(AIR, "air")
    want1 = oracle_mean(src)
    np.testing.assert_allclose(level(out, 1).air.values, want1, rtol=1e-6)
    np.testing.assert_allclose(level(out, 2).air.values, oracle_mean(want1), rtol=1e-6)
    layout = root_attrs(out)["multiscales"]["layout"]
    assert [e["spatial:shape"] for e in layout] == [[11, 21], [6, 11], [3, 6]]


def test_from_a_converted_zarr_store(tmp_path, continuous):
    """The usual source: a Zarr v3 store written by `zarrport convert` (packed values and
    their scale/offset kept); the mean is of the decoded values."""
    from zarrport.convert import convert

    conv = tmp_path / "tas.zarr"
    convert(str(continuous), str(conv), workers=1)
    out = tmp_path / "p.zarr"
    pyramid(str(conv), str(out), levels=2)
    np.testing.assert_allclose(level(out, 1).tas.values, oracle_mean(netcdf(continuous, "tas")),
                               rtol=1e-12, equal_nan=True)


# --------------------------------------------------------------------------- the marker


def test_incomplete_while_writing_complete_at_the_end(tmp_path, continuous, monkeypatch):
    out = tmp_path / "p.zarr"
    seen = []
    real = pyr._next_level

    def spy(o, k, *a, **kw):
        rec = is_incomplete("file://" + str(o))
        seen.append((k, rec and rec["status"]))
        for path in (o, o / str(k - 1)):  # the root and the levels written so far
            with pytest.raises(IncompleteOutputError):
                zarrport.open_dataset(str(path))
        assert "multiscales" not in root_attrs(o)  # no pyramid metadata until finished
        return real(o, k, *a, **kw)

    monkeypatch.setattr(pyr, "_next_level", spy)
    pyramid(str(continuous), str(out), levels=3)
    assert seen == [(1, "incomplete"), (2, "incomplete")]
    assert is_incomplete("file://" + str(out)) is None
    assert root_attrs(out)[MARKER]["status"] == "complete"
    zarrport.open_dataset(str(out / "1"))  # opens


def test_failed_run_leaves_nothing_and_killed_run_is_replaced(tmp_path, continuous,
                                                              monkeypatch):
    out = tmp_path / "p.zarr"

    def boom(*a, **kw):
        raise OSError("disk on fire")

    with monkeypatch.context() as m:
        m.setattr(pyr, "_next_level", boom)
        with pytest.raises(OSError):
            pyramid(str(continuous), str(out), levels=2)
    assert not out.exists()
    pyramid(str(continuous), str(out), levels=2)
    with pytest.raises(OutputExistsError):  # a finished pyramid needs --overwrite
        pyramid(str(continuous), str(out), levels=2)
    # what a killed run leaves: the marker still says incomplete; a re-run replaces it
    g = zarr.open_group(str(out), mode="r+")
    g.attrs[MARKER] = dict(g.attrs[MARKER], status="incomplete")
    pyramid(str(continuous), str(out), levels=3)
    assert root_attrs(out)[MARKER]["status"] == "complete"
    assert len(root_attrs(out)["multiscales"]["layout"]) == 3


# --------------------------------------------------------------------------- the command line


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """``zarrport ARGS`` in this process (the same ``main`` the console script runs): exit
    status, stdout, stderr."""
    from zarrport.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("zarrport: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_cli_json_and_text_summary(tmp_path, continuous, capsys):
    out = tmp_path / "p.zarr"
    proc = run("pyramid", str(continuous), "-o", str(out), "--levels", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert [lv["path"] for lv in s["levels"]] == ["0", "1"]
    assert s["levels"][1]["variables"] == {"tas": [2, 5, 7]}
    assert s["levels"][1]["bytes_written"] > 0
    assert s["left_out"][0]["variable"] == "series"
    code, text, err = cli(capsys, "pyramid", str(continuous), "-o", str(out), "--overwrite")
    assert code == 0, err
    assert "left out: series" in text and "level 0" in text and "level 1" not in text
    code, text, _ = cli(capsys, "pyramid", "--help")
    assert code == 0 and "Examples:" in text


def _no_space(tmp_path: Path) -> Path:
    path = tmp_path / "series.nc"
    xr.Dataset({"v": ("time", np.arange(4.0))}, coords={"time": np.arange(4.0)}).to_netcdf(path)
    return path


@pytest.mark.parametrize("case", ["levels0", "levels_too_many", "levels_word", "method",
                                  "no_space", "missing", "remote_out", "out_is_source"])
def test_cli_bad_input_one_line_nothing_written(tmp_path, continuous, capsys, case):
    out = tmp_path / "p.zarr"
    src = str(continuous)
    extra: list[str] = []
    needle, code = "", 2
    if case == "levels0":
        extra, needle = ["--levels", "0"], "--levels must be at least 1"
    elif case == "levels_too_many":
        extra, needle = ["--levels", "6"], "at most 5 levels"  # 13 -> 7 -> 4 -> 2 -> 1
    elif case == "levels_word":
        extra, needle = ["--levels", "many"], "--levels must be a whole number"
    elif case == "method":
        extra, needle = ["--method", "median"], "--method must be one of mean, nearest, mode"
    elif case == "no_space":
        src, needle = str(_no_space(tmp_path)), "no variable with both a y and an x dimension"
    elif case == "missing":
        src, needle, code = str(tmp_path / "nope.nc"), "does not exist", 3
    elif case == "remote_out":
        out, needle = "s3://bucket/p.zarr", "pyramid writes to a local directory"
    else:
        out, needle = continuous, "sits inside the source"
    before = sorted(p.name for p in tmp_path.iterdir())
    size = continuous.stat().st_size
    got, stdout, err = cli(capsys, "pyramid", src, "-o", str(out), *extra)
    one_error_line(err, needle)
    assert got == code and stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert continuous.stat().st_size == size


def test_cli_existing_output_refused_and_kept(tmp_path, continuous, capsys):
    """In a process of its own: one line on stderr, exit 6, the directory untouched."""
    out = tmp_path / "p.zarr"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = run("pyramid", str(continuous), "-o", str(out))
    assert_clean_failure(proc, "exists; pass --overwrite")
    assert proc.returncode == 6
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    # --overwrite does not delete a directory that is not a Zarr store either
    code, _, err = cli(capsys, "pyramid", str(continuous), "-o", str(out), "--overwrite")
    one_error_line(err, "not a Zarr store")
    assert code == 6
    assert (out / "keep.txt").read_text() == "mine"


def test_levels_checked_before_anything_is_written(tmp_path, continuous):
    with pytest.raises(InvalidArgumentError, match="at most 5 levels"):
        pyramid(str(continuous), str(tmp_path / "p.zarr"), levels=9)
    assert not (tmp_path / "p.zarr").exists()
