"""``zarrport inspect``: the report, its verdicts (checked against the virtualizer) and the CLI."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import h5py
import hdf5plugin
import netCDF4
import numpy as np
import pytest

from zarrport.errors import (
    CorruptSourceError,
    InvalidArgumentError,
    NotAFileError,
    SourceNotFoundError,
    UnrecognizedFormatError,
    UnsupportedVariableError,
    ZarrportError,
)
from zarrport.inspect import (
    CONVERT,
    INLINE,
    VIRTUALIZE,
    VIRTUALIZE_SUBCHUNKED,
    SourceReport,
    VariableReport,
    inspect_source,
    render_text,
)
from zarrport.virtual.hdf5 import subchunk_shape
from zarrport.virtual.parse import ParseOptions, parse_source

REAL = Path(__file__).resolve().parents[3] / "shared/data/real"
MB = 2**20


def codes(var: VariableReport) -> set[str]:
    return {w.code for w in var.warnings}


def assert_agrees(path: Path | str, report: SourceReport, *, subchunk_mb: float = 16,
                  inline_limit_mb: float = 4, sample: int | None = None) -> None:
    """The report's verdicts are what parse_source does with the same settings.

    ``sample``: only check the first ``sample`` variables (the others are dropped from the
    parse, which decides per variable), to keep files with thousands of variables fast.
    """
    names = [v.name for v in report.variables]
    keep = set(names[:sample]) if sample is not None else set(names)
    drop = tuple(n for n in names if n not in keep)
    opts = dict(subchunk_bytes=max(1, int(subchunk_mb * MB)),
                inline_limit_bytes=int(inline_limit_mb * MB), drop_variables=drop)
    refused = [v.name for v in report.variables if v.verdict == CONVERT and v.name in keep]
    try:
        vds = parse_source(str(path), options=ParseOptions(**opts))
    except UnsupportedVariableError as err:
        assert refused or report.problems, f"parse refused {path}: {err}"
        if refused:  # the parser stops at the first variable it refuses
            assert (err.variable or "").removeprefix("_nc4_non_coord_") == refused[0]
        else:
            assert err.variable is None
        vds = parse_source(str(path), options=ParseOptions(on_unsupported="drop", **opts))
    else:
        assert not refused and not report.problems, (refused, report.problems)

    for var in report.variables:
        if var.name not in keep:
            continue
        if var.verdict == CONVERT:
            # dropped, unless only its attributes were the problem ("drop" keeps those)
            if var.name in vds.variables:
                assert "attribute" in var.reason
            continue
        got = vds.variables[var.name]
        assert got.dims == var.dims, var.name
        assert got.shape == var.shape, var.name
        assert got.is_inline == (var.verdict == INLINE), (var.name, var.verdict, got.note)
        if var.verdict == VIRTUALIZE_SUBCHUNKED:
            assert got.contiguous_at is not None, var.name
        if var.verdict == VIRTUALIZE:
            assert got.contiguous_at is None, var.name
        assert got.chunks == var.virtual_chunks, var.name
    assert set(vds.variables) <= keep


# --------------------------------------------------------------------------- synthetic files


def test_contiguous_uncompressed_is_subchunked(tmp_path: Path) -> None:
    path = tmp_path / "contig.nc"
    with netCDF4.Dataset(path, "w") as ds:
        for d, n in (("time", 10), ("y", 100), ("x", 100)):
            ds.createDimension(d, n)
        v = ds.createVariable("t", "f8", ("time", "y", "x"), contiguous=True)
        v[:] = np.random.default_rng(0).random((10, 100, 100))
    report = inspect_source(str(path))
    assert report.format == "netcdf4" and report.format_version.startswith("NETCDF4")
    var = report.variable("t")
    assert var.layout == "contiguous"
    assert var.verdict == VIRTUALIZE_SUBCHUNKED
    assert var.chunks == (10, 100, 100) and var.chunks_allocated == 1 and var.chunks_total == 1
    assert var.virtual_chunks == subchunk_shape((10, 100, 100), 8, 16 * MB)
    assert var.filters == []
    assert "contiguous" in codes(var)
    assert var.size_mb == pytest.approx(800_000 / MB, abs=1e-6)
    assert_agrees(path, report)

    small = inspect_source(str(path), subchunk_mb=0.1)
    var = small.variable("t")
    assert var.verdict == VIRTUALIZE_SUBCHUNKED
    assert var.virtual_chunks == subchunk_shape((10, 100, 100), 8, int(0.1 * MB)) == (1, 100, 100)
    assert "10 byte-range sub-chunks" in var.reason
    assert_agrees(path, small, subchunk_mb=0.1)


def test_chunked_zlib_is_virtualized(tmp_path: Path) -> None:
    path = tmp_path / "zlib.nc"
    with netCDF4.Dataset(path, "w") as ds:
        ds.setncattr("title", "zlib test")
        ds.createDimension("time", None)
        ds.createDimension("y", 100)
        ds.createDimension("x", 100)
        v = ds.createVariable("tas", "f4", ("time", "y", "x"), zlib=True, shuffle=True,
                              chunksizes=(1, 100, 100), fill_value=np.float32(np.nan))
        v.scale_factor = 0.5
        v.add_offset = 10.0
        v.set_auto_maskandscale(False)
        v[:] = np.ones((12, 100, 100), dtype="f4")
    report = inspect_source(str(path))
    var = report.variable("tas")
    assert var.layout == "chunked" and var.verdict == VIRTUALIZE
    assert var.chunks == (1, 100, 100)
    assert (var.chunks_allocated, var.chunks_total) == (12, 12)
    assert var.chunk_mb == pytest.approx(40_000 / MB, abs=1e-6)
    assert [(f.name, f.id, f.has_zarr_codec, f.zarr_codec) for f in var.filters] == [
        ("shuffle", 2, True, "shuffle"), ("deflate", 1, True, "zlib")]
    assert var.scale_factor == 0.5 and var.add_offset == 10.0
    assert var.warnings == []
    assert report.unlimited_dims == ["time"]
    assert report.dims == {"time": 12, "y": 100, "x": 100}
    assert report.global_attr_count == 1
    assert report.summary["verdict"] == VIRTUALIZE
    d = report.to_dict()
    # JSON-ready: a NaN fill value is spelled as Zarr spells it, strict JSON works
    assert d["variables"][-1]["fill_value"] == "NaN"
    json.dumps(d, allow_nan=False)
    assert_agrees(path, report)


def _h5(path: Path, name: str, shape: tuple[int, ...], chunks: tuple[int, ...] | None,
        dtype: str = "f4", **kw) -> None:
    with h5py.File(path, "w") as f:
        data = np.arange(math.prod(shape), dtype=dtype).reshape(shape)
        f.create_dataset(name, data=data, chunks=chunks, **kw)


def test_single_pixel_chunks_warning(tmp_path: Path) -> None:
    path = tmp_path / "pixel.h5"
    _h5(path, "v", (100, 30, 30), (100, 1, 1))
    report = inspect_source(str(path))
    assert report.format == "hdf5"
    var = report.variable("v")
    assert var.verdict == VIRTUALIZE
    assert "single_pixel_chunks" in codes(var)
    assert "large_spatial_chunks" not in codes(var)
    assert_agrees(path, report)


def test_large_spatial_chunks_warning(tmp_path: Path) -> None:
    path = tmp_path / "tiles.h5"
    _h5(path, "v", (2, 1200, 10), (1, 1200, 10), compression="gzip")
    var = inspect_source(str(path)).variable("v")
    assert var.verdict == VIRTUALIZE
    assert codes(var) == {"large_spatial_chunks"}
    assert "1200" in var.warnings[0].message


def test_tiny_chunks_warning(tmp_path: Path) -> None:
    path = tmp_path / "tiny.h5"
    _h5(path, "v", (2000, 100), (1, 100))
    report = inspect_source(str(path))
    var = report.variable("v")
    assert var.verdict == VIRTUALIZE
    assert (var.chunks_allocated, var.chunks_total) == (2000, 2000)
    assert codes(var) == {"tiny_chunks"}
    # 1000 chunks or fewer is not "many"
    _h5(path, "v", (1000, 100), (1, 100))
    assert codes(inspect_source(str(path)).variable("v")) == set()


def test_unmapped_filter_inline_when_small_convert_when_large(tmp_path: Path) -> None:
    path = tmp_path / "lz4.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("small", data=np.zeros((100, 100), "f4"), chunks=(50, 50),
                         **hdf5plugin.LZ4())
        f.create_dataset("large", data=np.zeros((1100, 1000), "f4"), chunks=(100, 1000),
                         **hdf5plugin.LZ4())
    report = inspect_source(str(path))
    small, large = report.variable("small"), report.variable("large")
    for var in (small, large):
        assert [(f.name, f.id, f.has_zarr_codec) for f in var.filters] == [("lz4", 32004, False)]
    assert small.verdict == INLINE and "lz4 has no Zarr codec" in small.reason
    assert small.virtual_chunks == (100, 100)
    assert large.verdict == CONVERT and "too large to inline" in large.reason
    assert large.virtual_chunks is None
    assert report.summary["verdict"] == CONVERT
    assert report.summary["counts"][CONVERT] == 1
    with pytest.raises(UnsupportedVariableError) as exc:
        parse_source(str(path))
    assert exc.value.variable == "large"
    assert_agrees(path, report)
    # a higher inline limit lets the virtualizer inline it: the verdict follows
    roomy = inspect_source(str(path), inline_limit_mb=8)
    assert roomy.variable("large").verdict == INLINE
    assert_agrees(path, roomy, inline_limit_mb=8)


def test_vlen_strings_inline(tmp_path: Path) -> None:
    path = tmp_path / "strings.nc"
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("station", 3)
        v = ds.createVariable("name", str, ("station",))
        v[:] = np.array(["alpha", "beta", "gamma"], dtype=object)
    report = inspect_source(str(path))
    var = report.variable("name")
    assert var.dtype == "str"
    assert var.verdict == INLINE and "variable-length strings" in var.reason
    assert var.chunk_mb is None and var.size_mb is None
    assert_agrees(path, report)


def test_compound_type_is_refused_even_when_small(tmp_path: Path) -> None:
    # the virtualizer refuses types with no Zarr form at any size: the verdict says so
    path = tmp_path / "compound.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("c", data=np.zeros(3, dtype=[("a", "i4"), ("b", "f8")]))
        f.create_dataset("ok", data=np.arange(3))
    report = inspect_source(str(path))
    assert report.variable("c").verdict == CONVERT
    assert report.variable("c").dtype == "compound"
    assert report.variable("ok").verdict == INLINE
    assert_agrees(path, report)


def test_netcdf3_record_variables(tmp_path: Path) -> None:
    path = tmp_path / "classic.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("time", None)
        ds.createDimension("lat", 50)
        ds.createDimension("lon", 50)
        t = ds.createVariable("time", "f8", ("time",))
        v = ds.createVariable("tas", "f4", ("time", "lat", "lon"))
        v.scale_factor = 2.0
        t[:] = np.arange(10)
        v[:] = np.ones((10, 50, 50), "f4")
    report = inspect_source(str(path))
    assert report.format == "netcdf3" and report.format_version.startswith("CDF-1")
    assert report.dims == {"time": 10, "lat": 50, "lon": 50}
    assert report.unlimited_dims == ["time"]
    var = report.variable("tas")
    assert var.layout == "record" and var.verdict == VIRTUALIZE
    assert var.chunks == (1, 50, 50) and var.chunks_total == 10
    assert var.scale_factor == 2.0
    assert var.dtype == "float32"
    assert report.variable("time").layout == "record"
    assert report.variable("time").verdict == INLINE
    assert_agrees(path, report)
    with pytest.raises(InvalidArgumentError):
        inspect_source(str(path), group="g")


def test_group(tmp_path: Path) -> None:
    path = tmp_path / "groups.nc"
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("x", 20000)
        g = ds.createGroup("sub")
        v = g.createVariable("v", "f8", ("x",), zlib=True)
        v[:] = np.arange(20000)
    root = inspect_source(str(path))
    assert root.variables == []
    sub = inspect_source(str(path), group="sub")
    assert sub.group == "sub"
    assert sub.variable("v").verdict == VIRTUALIZE
    assert sub.variable("v").dims == ("x",)
    # a missing group is the caller's mistake, named with the groups there are (issue 10)
    with pytest.raises(InvalidArgumentError, match=r"'nope' does not exist.*/, /sub"):
        inspect_source(str(path), group="nope")


def test_bad_input_raises_typed_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.nc"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.nc"
    noise.write_bytes(np.random.default_rng(1).bytes(5000))
    real = tmp_path / "real.nc"
    with netCDF4.Dataset(real, "w") as ds:
        ds.createDimension("x", 100000)
        ds.createVariable("v", "f8", ("x",), zlib=True)[:] = np.arange(100000)
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    nc3 = tmp_path / "nc3.nc"
    with netCDF4.Dataset(nc3, "w", format="NETCDF3_64BIT_OFFSET") as ds:
        ds.createDimension("x", 100000)
        ds.createVariable("v", "f8", ("x", ))[:] = np.arange(100000)
    truncated3 = tmp_path / "truncated3.nc"
    truncated3.write_bytes(nc3.read_bytes()[:-100])
    cases = [
        (tmp_path / "missing.nc", SourceNotFoundError),
        (tmp_path, NotAFileError),
        (empty, UnrecognizedFormatError),
        (noise, UnrecognizedFormatError),
        (truncated, CorruptSourceError),
        (truncated3, CorruptSourceError),
    ]
    for path, error in cases:
        with pytest.raises(error):
            inspect_source(str(path))
        with pytest.raises(error):  # the same type as the virtualizer
            parse_source(str(path))
    with pytest.raises(InvalidArgumentError):
        inspect_source(str(real), subchunk_mb=0)


# --------------------------------------------------------------------------- CLI


def _cli_modules_present() -> bool:
    return all(importlib.util.find_spec(f"zarrport.cli.{m}") is not None
               for m in ("info", "inspect", "verify", "virtualize"))


def run_cli(args: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
            ) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``zarrport ARGS``: a subprocess when every command
    module exists, else ``zarrport.cli.main`` in-process with only this command."""
    if _cli_modules_present():
        p = subprocess.run([sys.executable, "-m", "zarrport", *args], capture_output=True,
                           text=True, timeout=120)
        return p.returncode, p.stdout, p.stderr
    import zarrport.cli

    monkeypatch.setattr(zarrport.cli, "_register",
                        lambda: importlib.import_module("zarrport.cli.inspect"))
    capsys.readouterr()
    try:
        zarrport.cli.main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture()
def sample_file(tmp_path: Path) -> Path:
    path = tmp_path / "sample.nc"
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", 30)
        ds.createDimension("y", 100)
        ds.createDimension("x", 120)
        ds.createVariable("time", "f8", ("time",))[:] = np.arange(30)
        v = ds.createVariable("tas", "f4", ("time", "y", "x"), zlib=True,
                              chunksizes=(10, 100, 120))
        v[:] = np.ones((30, 100, 120), "f4")
        c = ds.createVariable("orog", "f8", ("y", "x"), contiguous=True)  # 96 KB
        c[:] = np.zeros((100, 120))
    return path


def test_cli_json_is_the_library_model(sample_file: Path, capsys, monkeypatch) -> None:
    code, out, err = run_cli(["inspect", str(sample_file), "--json"], capsys, monkeypatch)
    assert code == 0, err
    assert json.loads(out) == inspect_source(str(sample_file)).to_dict()


def test_cli_human_table(sample_file: Path, capsys, monkeypatch) -> None:
    code, out, err = run_cli(["inspect", str(sample_file)], capsys, monkeypatch)
    assert code == 0, err
    assert out == render_text(inspect_source(str(sample_file)))
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("name "))
    for col in ("shape", "dtype", "layout", "chunks", "MB/chunk", "#chunks", "filters",
                "verdict"):
        assert col in header
    tas = next(line for line in lines if line.startswith("tas "))
    assert "virtualize" in tas and "deflate" in tas and "(10, 100, 120)" in tas and "3/3" in tas
    orog = next(line for line in lines if line.startswith("orog "))
    assert orog.rstrip().endswith("virtualize_subchunked")
    assert "orog: [contiguous]" in out
    assert "tas: virtualize - " in out
    assert out.splitlines()[-2].startswith("summary: virtualize (")


def test_cli_options(sample_file: Path, capsys, monkeypatch) -> None:
    code, out, err = run_cli(["inspect", str(sample_file), "--json", "--subchunk-mb", "0.01",
                              "--storage-option", "anon=false"], capsys, monkeypatch)
    assert code == 0, err
    data = json.loads(out)
    orog = next(v for v in data["variables"] if v["name"] == "orog")
    assert orog["virtual_chunks"] == list(subchunk_shape((100, 120), 8, int(0.01 * MB)))
    code, out, err = run_cli(["inspect", "--help"], capsys, monkeypatch)
    assert code == 0 and "Examples:" in out and "--json" in out and "--storage-option" in out


@pytest.mark.parametrize("kind", ["missing", "empty", "noise", "directory"])
def test_cli_bad_input_one_line(kind: str, tmp_path: Path, capsys, monkeypatch) -> None:
    path = tmp_path / "bad.nc"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "noise":
        path.write_bytes(b"\x00garbage" * 100)
    elif kind == "directory":
        path = tmp_path
    code, out, err = run_cli(["inspect", str(path)], capsys, monkeypatch)
    assert code not in (0, 1), (code, err)  # a typed error's status, not a crash
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("zarrport: error:") and "Traceback" not in err


# --------------------------------------------------------------------------- real files


def _real_files() -> list[Path]:
    return sorted(p for d in ("nc4", "nc3") if (REAL / d).is_dir()
                  for p in (REAL / d).iterdir() if p.is_file())


def _real_params() -> list:
    return [pytest.param(p, id=f"{p.parent.name}/{p.name}") for p in _real_files()]


@pytest.mark.skipif(not _real_files(), reason=f"no real sample files under {REAL}")
@pytest.mark.parametrize("path", _real_params())
def test_real_file_agrees_with_virtualizer(path: Path) -> None:
    try:
        report = inspect_source(str(path))
    except ZarrportError:
        return  # refused with a typed error: acceptable (never another exception)
    json.dumps(report.to_dict(), allow_nan=False)
    render_text(report)
    # files with thousands of variables: the decision is per variable, check a sample
    assert_agrees(path, report, sample=50 if len(report.variables) > 200 else None)
