"""zarrport's kerchunk reader against the standard one, on references other tools wrote.

The rule: ``zarrport.open_dataset(refs)`` gives exactly what xarray's Zarr engine over
fsspec's ``reference://`` gives (``engine="zarr"``) -- variables, dtypes, values with NaN
positions, attributes, encodings' fill values -- or raises. References here are written by
kerchunk (single files, MultiZarrToZarr, ``kerchunk.df`` Parquet, ``kerchunk.zarr``) and
VirtualiZarr (``to_kerchunk`` JSON/Parquet, ``xr.concat`` combines) from the real files in
``shared/data/real`` and from synthetic ones, plus the legitimate variants of the kerchunk
spec and of Zarr v2 metadata (``/`` chunk keys, order F, every fill value form, big-endian,
numcodecs filters and compressors, ``templates``, ``gen``, version 0, inline base64).
"""

from __future__ import annotations

import base64
import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import zarrport
from zarrport.errors import CorruptSourceError
from zarrport.references import ZarrportBackendEntrypoint

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
NC4 = sorted((REAL / "nc4").glob("*")) if REAL.exists() else []
NC3 = sorted((REAL / "nc3").glob("*")) if REAL.exists() else []

# 2,000 one-chunk variables: kerchunk and VirtualiZarr take minutes to reference it (both
# readers then take a second); the conformance suite reads zarrport's references of it
SLOW_TO_REFERENCE = {"netcdfc_ref_hdf5_compat1.nc"}
REAL_FILES = [p for p in NC4 + NC3 if p.name not in SLOW_TO_REFERENCE]

FLAG_SETS = [{}, {"decode_cf": False}, {"mask_and_scale": False},
             {"decode_times": False}, {"use_cftime": True}]


def _same(a: xr.Dataset, b: xr.Dataset, where: str) -> None:
    assert set(a.variables) == set(b.variables), where
    assert dict(a.sizes) == dict(b.sizes), where
    assert a.attrs.keys() == b.attrs.keys(), where
    for name in b.variables:
        x, y = a[name].variable, b[name].variable
        assert x.dims == y.dims, f"{where}: {name} dims"
        assert x.dtype == y.dtype, f"{where}: {name} dtype {x.dtype} vs {y.dtype}"
        xv, yv = x.values, y.values
        if xv.dtype.kind in "fc":
            np.testing.assert_array_equal(xv, yv, err_msg=f"{where}: {name}")
        elif xv.dtype.kind == "O":  # masked bytes/bools: NaN where missing
            import pandas as pd

            nx, ny = pd.isnull(xv), pd.isnull(yv)
            assert np.array_equal(nx, ny), f"{where}: {name} missing positions"
            assert np.array_equal(xv[~nx], yv[~ny]), f"{where}: {name} values"
        else:
            assert np.array_equal(xv, yv), f"{where}: {name} values"
        assert _attrs_equal(x.attrs, y.attrs), f"{where}: {name} attrs {x.attrs} vs {y.attrs}"
        for key in ("_FillValue", "missing_value", "scale_factor", "add_offset", "units",
                    "calendar", "dtype"):
            assert _attr_equal(x.encoding.get(key), y.encoding.get(key)), \
                f"{where}: {name} encoding {key}"


def _attrs_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(_attr_equal(a[k], b[k]) for k in a)


def _attr_equal(x, y) -> bool:
    if type(x) is not type(y) and not (np.isscalar(x) and np.isscalar(y)):
        return False
    try:
        return bool(np.array_equal(np.asarray(x), np.asarray(y),
                                   equal_nan=np.asarray(x).dtype.kind in "fc"))
    except TypeError:
        return bool(np.array_equal(np.asarray(x), np.asarray(y)))


def _outcome(fn):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn().load(), None
    except Exception as err:  # noqa: BLE001 - compared below
        return None, err


def assert_parity(url: str | Path, flag_sets=FLAG_SETS, json_twin: Path | None = None,
                  **open_kw) -> None:
    """Both readers give the same dataset for every set of decoding flags, or both fail.

    ``json_twin``: the same references as kerchunk JSON. fsspec's Parquet reader fails on
    the null path kerchunk writes for a chunk that does not exist ("argument of type
    'float' is not iterable" in ReferenceFileSystem._cat_file; fsspec/kerchunk#493 was
    meant to be fixed by fsspec/filesystem_spec#1738, still so in fsspec 2026.9.0); where
    it does, zarrport's reading must equal the standard reading of the JSON twin."""
    for flags in flag_sets:
        where = f"{Path(str(url)).name} {flags}"
        ours, our_err = _outcome(lambda f=flags: zarrport.open_dataset(str(url), **f, **open_kw))
        std, std_err = _outcome(lambda f=flags: zarrport.open_dataset(str(url), engine="zarr",
                                                                     **f, **open_kw))
        if std_err is not None and json_twin is not None and "float" in str(std_err):
            std, std_err = _outcome(lambda f=flags: zarrport.open_dataset(
                str(json_twin), engine="zarr", **f, **open_kw))
        if std_err is not None:
            assert our_err is not None, f"{where}: standard reader fails ({std_err!r}), ours not"
            continue
        assert our_err is None, f"{where}: ours fails: {our_err!r}"
        _same(ours, std, where)


# ------------------------------------------------------------------ references by kerchunk


def _kerchunk_single(path: Path) -> dict:
    if path.parent.name == "nc3":
        from kerchunk.netCDF3 import NetCDF3ToZarr

        return NetCDF3ToZarr(str(path), inline_threshold=50).translate()
    from kerchunk.hdf import SingleHdf5ToZarr

    with open(path, "rb") as f:
        return SingleHdf5ToZarr(f, str(path), inline_threshold=50).translate()


def _to_parquet(refs: dict, out: Path, record_size: int = 7) -> Path:
    from kerchunk.df import refs_to_dataframe

    refs_to_dataframe(refs, str(out), record_size=record_size)
    return out


@pytest.mark.skipif(not REAL_FILES, reason="shared/data/real is not beside the checkout")
@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name)
def test_kerchunk_references_of_real_files(tmp_path, path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            refs = _kerchunk_single(path)
    except Exception as err:  # noqa: BLE001 - kerchunk itself cannot reference this file
        pytest.skip(f"kerchunk cannot reference it: {type(err).__name__}")
    js = tmp_path / "refs.json"
    js.write_text(json.dumps(refs))
    assert_parity(js, flag_sets=FLAG_SETS[:2])
    try:
        pq = _to_parquet(refs, tmp_path / "refs.parq")
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"kerchunk.df cannot write it: {type(err).__name__}")
    assert_parity(pq, flag_sets=FLAG_SETS[:1], json_twin=js)


# --------------------------------------------------------------- references by VirtualiZarr


def _vz_open(path: Path):
    import obstore.store
    from virtualizarr import open_virtual_dataset
    from virtualizarr.parsers import HDFParser, NetCDF3Parser
    from virtualizarr.registry import ObjectStoreRegistry

    registry = ObjectStoreRegistry({"file://": obstore.store.LocalStore()})
    parser = NetCDF3Parser() if path.parent.name == "nc3" or path.suffix == ".nc3" else \
        HDFParser()
    return open_virtual_dataset(path.resolve().as_uri(), parser=parser, registry=registry,
                                loadable_variables=[])


@pytest.mark.skipif(not REAL_FILES, reason="shared/data/real is not beside the checkout")
@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name)
def test_virtualizarr_kerchunk_references_of_real_files(tmp_path, path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vds = _vz_open(path)
            vds.vz.to_kerchunk(str(tmp_path / "vz.json"), format="json")
            vds.vz.to_kerchunk(str(tmp_path / "vz.parq"), format="parquet",
                               record_size=5)
    except Exception as err:  # noqa: BLE001 - VirtualiZarr itself cannot reference it
        pytest.skip(f"VirtualiZarr cannot reference it: {type(err).__name__}")
    assert_parity(tmp_path / "vz.json", flag_sets=FLAG_SETS[:3])
    assert_parity(tmp_path / "vz.parq", flag_sets=FLAG_SETS[:1],
                  json_twin=tmp_path / "vz.json")


def _synthetic(path: Path, start: int, fill=-999.0, dtype="f4", n=4) -> Path:
    import netCDF4

    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", None)
        ds.createDimension("y", 3)
        ds.createDimension("x", 5)
        t = ds.createVariable("time", "f8", ("time",))
        t.units = "days since 2000-01-01"
        t.calendar = "noleap"
        t[:] = np.arange(start, start + n)
        v = ds.createVariable("tas", dtype, ("time", "y", "x"), fill_value=fill,
                              chunksizes=(2, 3, 5), zlib=True, shuffle=True)
        v.units = "K"
        data = np.arange(n * 15, dtype="f8").reshape(n, 3, 5) + start
        v[:] = data.astype(dtype)
        v[0, 1, 2] = np.ma.masked
        p = ds.createVariable("pr", "i2", ("time", "y", "x"), fill_value=-32767)
        p.scale_factor = 0.01
        p.add_offset = 1.0
        p[:] = np.ma.masked_array(np.arange(n * 15).reshape(n, 3, 5) % 7,
                                  mask=np.arange(n * 15).reshape(n, 3, 5) % 5 == 0)
    return path


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_virtualizarr_concat_combine(tmp_path, fmt):
    a = _synthetic(tmp_path / "a.nc", 0, fill=1e20)
    b = _synthetic(tmp_path / "b.nc", 4, fill=1e20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vds = xr.concat([_vz_open(a), _vz_open(b)], dim="time", coords="minimal",
                        compat="override", combine_attrs="override")
        out = tmp_path / f"combined.{fmt}"
        vds.vz.to_kerchunk(str(out), format=fmt)
        vds.vz.to_kerchunk(str(tmp_path / "twin.json"), format="json")
    assert_parity(out, json_twin=tmp_path / "twin.json")
    ds = zarrport.open_dataset(str(out))
    assert np.isnan(ds.tas.values[0, 1, 2]) and np.isnan(ds.tas.values[4, 1, 2])
    assert ds.tas.shape == (8, 3, 5)


def test_kerchunk_multizarr_combine(tmp_path):
    from kerchunk.combine import MultiZarrToZarr

    singles = [_kerchunk_single(_synthetic(tmp_path / f"{i}.nc", 4 * i)) for i in range(3)]
    combined = MultiZarrToZarr(singles, concat_dims=["time"],
                               coo_map={"time": "cf:time"}).translate()
    js = tmp_path / "mzz.json"
    js.write_text(json.dumps(combined))
    assert_parity(js)
    pq = _to_parquet(combined, tmp_path / "mzz.parq", record_size=3)
    assert_parity(pq, flag_sets=FLAG_SETS[:2], json_twin=js)


# ------------------------------------------------ variants the kerchunk spec and Zarr v2 allow


def _v1(path: Path) -> dict:
    return _kerchunk_single(_synthetic(path, 0))


def _write(tmp_path: Path, refs: dict, name: str = "variant.json") -> Path:
    out = tmp_path / name
    out.write_text(json.dumps(refs))
    return out


def test_slash_dimension_separator(tmp_path):
    refs = _v1(tmp_path / "s.nc")
    body = refs["refs"]
    for key in list(body):
        name, _, leaf = key.rpartition("/")
        if name and not leaf.startswith("."):
            body[f"{name}/{leaf.replace('.', '/')}"] = body.pop(key)
    for key in [k for k in body if k.endswith("/.zarray")]:
        meta = json.loads(body[key])
        meta["dimension_separator"] = "/"
        body[key] = json.dumps(meta)
    out = _write(tmp_path, refs)
    assert_parity(out)
    ds = zarrport.open_dataset(str(out))
    assert float(ds.tas.values[1, 0, 0]) == 15.0  # not the fill value


def test_chunk_keys_of_the_other_separator_are_not_read(tmp_path):
    """zarr asks for ``v/0.0`` when the separator is ``.``: a ``v/0/0`` key is not a chunk."""
    refs = _v1(tmp_path / "s.nc")
    body = refs["refs"]
    key = next(k for k in body if k.startswith("tas/") and not k.rpartition("/")[2][0] == ".")
    body[key.replace(".", "/")] = body.pop(key)
    assert_parity(_write(tmp_path, refs), flag_sets=FLAG_SETS[:1])


def test_version_0_and_inline_base64(tmp_path):
    refs = _v1(tmp_path / "s.nc")["refs"]
    # a coordinate inlined as base64, another as raw text bytes
    t = np.arange(4, dtype="<f8")
    refs["time/0"] = "base64:" + base64.b64encode(t.tobytes()).decode()
    meta = json.loads(refs["time/.zarray"])
    meta.update(compressor=None, filters=None, dtype="<f8", chunks=[4])
    refs["time/.zarray"] = json.dumps(meta)
    out = _write(tmp_path, refs)  # no "version": spec version 0
    assert_parity(out)
    assert list(zarrport.open_dataset(str(out), decode_times=False).time.values) == list(t)


def test_templates_and_gen(tmp_path):
    """A raw binary file of float32 records: ``gen`` makes one reference per record from
    arithmetic on the index, ``templates`` names the file once."""
    data = np.arange(8 * 3 * 5, dtype="<f4").reshape(8, 3, 5)
    data[3, 1, 1] = -999.0
    raw = tmp_path / "records.bin"
    raw.write_bytes(b"HEAD" * 4 + data.tobytes())
    chunk_bytes = 2 * 3 * 5 * 4
    refs = {
        "version": 1,
        "templates": {"u": str(raw)},
        "refs": {
            ".zgroup": json.dumps({"zarr_format": 2}),
            "v/.zarray": json.dumps({"zarr_format": 2, "shape": [8, 3, 5],
                                     "chunks": [2, 3, 5], "dtype": "<f4",
                                     "fill_value": -999.0, "order": "C", "filters": None,
                                     "compressor": None}),
            "v/.zattrs": json.dumps({"_ARRAY_DIMENSIONS": ["t", "y", "x"]}),
            "v/0.0.0": ["{{u}}", 16, chunk_bytes],
        },
        "gen": [{"key": "v/{{i}}.0.0", "url": "{{u}}",
                 "offset": "{{16 + i * " + str(chunk_bytes) + "}}", "length": str(chunk_bytes),
                 "dimensions": {"i": {"start": 1, "stop": 4}}}],
    }
    out = _write(tmp_path, refs)
    assert_parity(out)
    values = zarrport.open_dataset(str(out)).v.values
    expected = data.copy()
    expected[3, 1, 1] = np.nan
    np.testing.assert_array_equal(values, expected)


def test_templates_that_cannot_expand_fail_in_both(tmp_path):
    refs = _v1(tmp_path / "s.nc")
    refs["templates"] = {"u": "x"}
    key = next(k for k in refs["refs"] if k.startswith("tas/") and "/." not in k)
    refs["refs"][key] = ["{{nope}}", 0, 10]
    assert_parity(_write(tmp_path, refs), flag_sets=FLAG_SETS[:1])


# ---- the Zarr v2 metadata matrix, as kerchunk.zarr references a v2 store (whole-file refs)

DTYPES = ["|i1", "<u2", ">i4", "<i8", "<f4", ">f8", "<c8", "|b1", "|S3"]
FILLS = {"none": None, "zero": 0, "nan": "nan", "neg": -7, "inf": "inf"}
CODECS = {
    "raw": ([], None),
    "zlib": ([], {"id": "zlib", "level": 1}),
    "shuffle+zstd": ([{"id": "shuffle", "elementsize": 0}], {"id": "zstd", "level": 1}),
    "delta+blosc": ([{"id": "delta", "dtype": None}], {"id": "blosc", "cname": "lz4",
                                                       "clevel": 1, "shuffle": 1}),
}


def _fill_for(dtype: np.dtype, fill):
    if fill is None:
        return None
    if dtype.kind == "S":
        return b"ab" if fill == -7 else (b"" if fill == 0 else None)
    if dtype.kind == "b":
        return bool(fill) if fill in (0,) else None
    if fill in ("nan", "inf"):
        return float(fill) if dtype.kind in "fc" else None
    if dtype.kind == "u" and fill < 0:
        return None
    return fill


def _v2_store(root: Path, dtype: str, fill, codec: str, order: str, sep: str) -> bool:
    import numcodecs
    import zarr

    dt = np.dtype(dtype)
    value = _fill_for(dt, fill)
    if fill is not None and value is None:
        return False
    filters, compressor = CODECS[codec]
    if codec == "delta+blosc":
        if dt.kind not in "iuf":
            return False
        filters = [{"id": "delta", "dtype": dt.str}]
    if codec == "shuffle+zstd":
        filters = [{"id": "shuffle", "elementsize": dt.itemsize}]
    shape, chunks = (7, 5), (3, 2)
    group = zarr.open_group(str(root), mode="w", zarr_format=2)
    arr = group.create_array(
        "v", shape=shape, chunks=chunks, dtype=dt, fill_value=value, order=order,
        filters=[numcodecs.get_codec(f) for f in filters] or None,
        compressors=numcodecs.get_codec(compressor) if compressor else None,
        chunk_key_encoding={"name": "v2", "separator": sep},
        attributes={"_ARRAY_DIMENSIONS": ["y", "x"], "units": "1"},
    )
    rng = np.random.default_rng(0)
    if dt.kind == "S":
        data = np.array([b"abc", b"ab", b"", b"x"] * 9, dtype=dt)[:35].reshape(shape)
    elif dt.kind == "b":
        data = rng.integers(0, 2, shape).astype(bool)
    elif dt.kind == "c":
        data = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(dt)
    else:
        data = (rng.integers(0, 50, shape)).astype(dt)
        if value not in (None,) and dt.kind in "iuf" and np.isfinite(value):
            data[0, 0] = value
        if dt.kind == "f":
            data[1, 1] = np.nan
    arr[:5, :] = data[:5]  # rows 5-6: chunks never written (read as the fill value)
    return True


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fill", list(FILLS))
def test_zarr_v2_metadata_matrix(tmp_path, dtype, fill):
    from kerchunk.zarr import single_zarr

    done = 0
    for codec in CODECS:
        for order in ("C", "F"):
            for sep in (".", "/"):
                root = tmp_path / f"{codec}-{order}-{'slash' if sep == '/' else 'dot'}.zarr"
                if not _v2_store(root, dtype, FILLS[fill], codec, order, sep):
                    continue
                refs = single_zarr(str(root), inline_threshold=0)
                js = tmp_path / f"{root.stem}.json"
                js.write_text(json.dumps(refs))
                assert_parity(js, flag_sets=FLAG_SETS[:3])
                if sep == ".":
                    assert_parity(_to_parquet(refs, tmp_path / f"{root.stem}.parq",
                                              record_size=4), flag_sets=FLAG_SETS[:1],
                                  json_twin=js)
                done += 1
    if not done:
        pytest.skip(f"fill {fill} is not a value of {dtype}")


# --------------------------------------------------------------------------- failures


def test_short_chunk_is_an_error_naming_chunk_and_source(tmp_path):
    src = _synthetic(tmp_path / "short.nc", 0)
    refs = _kerchunk_single(src)
    body = refs["refs"]
    key = sorted(k for k in body if k.startswith("tas/") and "/." not in k)[0]
    url, offset, length = body[key]
    meta = json.loads(body["tas/.zarray"])
    meta.update(filters=None, compressor=None)
    body["tas/.zarray"] = json.dumps(meta)
    body[key] = [url, offset, 7]  # 7 bytes: not a whole chunk of float32
    out = _write(tmp_path, refs)
    with pytest.raises(CorruptSourceError, match=r"tas/0\.0\.0.*short\.nc"):
        zarrport.open_dataset(str(out)).tas.load()
    with pytest.raises(Exception):  # noqa: B017 - the standard reader fails too
        zarrport.open_dataset(str(out), engine="zarr").tas.load()


def test_range_past_the_end_of_the_source_is_an_error(tmp_path):
    src = _synthetic(tmp_path / "end.nc", 0)
    refs = _kerchunk_single(src)
    key = sorted(k for k in refs["refs"] if k.startswith("tas/") and "/." not in k)[0]
    size = src.stat().st_size
    refs["refs"][key] = [str(src), size - 4, 100]
    with pytest.raises(CorruptSourceError, match="100 bytes"):
        zarrport.open_dataset(str(_write(tmp_path, refs))).tas.load()


def test_unknown_spec_version_is_a_clear_error(tmp_path):
    out = _write(tmp_path, {"version": 2, "refs": {".zgroup": '{"zarr_format": 2}'}})
    with pytest.raises(CorruptSourceError, match="version 2 is unknown"):
        zarrport.open_dataset(str(out))


# ----------------------------------------------------------- the xarray plugin, as a guest


def test_guess_can_open_looks_at_content(tmp_path):
    refs = _write(tmp_path, _v1(tmp_path / "s.nc"), "refs.json")
    other = tmp_path / "package.json"
    other.write_text(json.dumps({"name": "x", "version": "1.0"}))
    not_json = tmp_path / "table.parquet"
    not_json.write_bytes(b"PAR1....")
    entry = ZarrportBackendEntrypoint()
    assert entry.guess_can_open(str(refs))
    assert not entry.guess_can_open(str(other))
    assert not entry.guess_can_open(str(not_json))
    assert not entry.guess_can_open(str(tmp_path / "missing.json"))
    pq = _to_parquet(_v1(tmp_path / "p.nc"), tmp_path / "refs.parq")
    assert entry.guess_can_open(str(pq))
    plain = tmp_path / "plain.parq"
    shutil.copytree(pq, plain)
    (plain / ".zmetadata").write_text("{}")
    assert not entry.guess_can_open(str(plain))


def test_engine_by_name_honours_decoding_flags(tmp_path):
    out = _write(tmp_path, _v1(tmp_path / "s.nc"))
    raw = xr.open_dataset(out, engine="zarrport", decode_cf=False)
    assert raw.pr.dtype == np.int16 and "scale_factor" in raw.pr.attrs
    dropped = xr.open_dataset(out, engine="zarrport", drop_variables=["pr"])
    assert "pr" not in dropped
    decoded = xr.open_dataset(out, engine="zarrport")
    assert decoded.pr.dtype.kind == "f" and math.isnan(float(decoded.pr.values[0, 0, 0]))


# --------------------------------------------------------- Icechunk written by VirtualiZarr


def test_virtualizarr_icechunk_repository(tmp_path):
    """A repository VirtualiZarr wrote (virtual chunks in a local container) opens through
    zarrport as through the Icechunk store and xarray's Zarr engine."""
    import icechunk

    a = _synthetic(tmp_path / "a.nc", 0, fill=1e20)
    b = _synthetic(tmp_path / "b.nc", 4, fill=1e20)
    prefix = f"file://{tmp_path}/"
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(str(tmp_path))))
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "r")),
                                      config=config)
    session = repo.writable_session("main")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vds = xr.concat([_vz_open(a), _vz_open(b)], dim="time", coords="minimal",
                        compat="override", combine_attrs="override")
        vds.vz.to_icechunk(session.store)
    session.commit("written by VirtualiZarr")
    repo = icechunk.Repository.open(
        icechunk.local_filesystem_storage(str(tmp_path / "r")),
        authorize_virtual_chunk_access=icechunk.containers_credentials({prefix: None}))
    for flags in FLAG_SETS[:3]:
        std = xr.open_zarr(repo.readonly_session("main").store, consolidated=False,
                           chunks=None, **flags).load()
        ours = zarrport.open_dataset(str(tmp_path / "r"), **flags).load()
        _same(ours, std, f"icechunk {flags}")
    expected = xr.concat([xr.open_dataset(a), xr.open_dataset(b)], dim="time")
    np.testing.assert_array_equal(zarrport.open_dataset(str(tmp_path / "r")).tas.values,
                                  expected.tas.values)


def test_small_inline_arrays_of_other_dtypes_keep_the_fast_path(tmp_path):
    """A vlen-string variable whose chunks are inline is decoded by zarr itself from
    memory; the other arrays stay on zarrport's path (no hand-over of the dataset)."""
    import netCDF4

    from zarrport.references import ReferenceArray

    src = tmp_path / "strings.nc"
    with netCDF4.Dataset(src, "w") as ds:
        ds.createDimension("x", 3)
        names = ds.createVariable("name", str, ("x",))
        for i, n in enumerate(["alpha", "beta", "gamma"]):
            names[i] = n
        v = ds.createVariable("v", "f4", ("x",))
        v[:] = [1.0, 2.0, 3.0]
    refs = _kerchunk_single(src)
    assert all(not isinstance(val, list) for k, val in refs["refs"].items()
               if k.startswith("name/") and "/." not in k)
    out = _write(tmp_path, refs)
    assert_parity(out)
    ds = zarrport.open_dataset(str(out))
    assert list(ds.name.values) == ["alpha", "beta", "gamma"]
    lazy = xr.open_dataset(out, engine="zarrport", mask_and_scale=False)
    inner = lazy.v.variable._data
    while hasattr(inner, "array"):
        inner = inner.array
    assert isinstance(inner, ReferenceArray)


# --------------------------------------------------------------- review findings, pinned


def test_keys_zarr_never_asks_for_are_not_chunks(tmp_path):
    """``01``, ``+2``, `` 3`` and a key with too few parts are other keys to zarr."""
    data = np.arange(4, dtype="<i4")
    raw = tmp_path / "ints.bin"
    raw.write_bytes(data.tobytes())
    body = {
        ".zgroup": json.dumps({"zarr_format": 2}),
        "v/.zarray": json.dumps({"zarr_format": 2, "shape": [4], "chunks": [1],
                                 "dtype": "<i4", "fill_value": -9, "order": "C",
                                 "filters": None, "compressor": None}),
        "v/.zattrs": json.dumps({"_ARRAY_DIMENSIONS": ["x"]}),
        "v/0": [str(raw), 0, 4],
        "v/01": [str(raw), 4, 4],
        "v/+2": [str(raw), 8, 4],
        "v/ 3": [str(raw), 12, 4],
        "w/.zarray": json.dumps({"zarr_format": 2, "shape": [2, 2], "chunks": [1, 1],
                                 "dtype": "<i4", "fill_value": -9, "order": "C",
                                 "filters": None, "compressor": None}),
        "w/.zattrs": json.dumps({"_ARRAY_DIMENSIONS": ["y", "z"]}),
        "w/0.0.0": [str(raw), 0, 4],
        "w/1": [str(raw), 4, 4],
    }
    out = _write(tmp_path, {"version": 1, "refs": body})
    assert_parity(out, flag_sets=[{"mask_and_scale": False}])
    ds = zarrport.open_dataset(str(out), mask_and_scale=False)
    assert list(ds.v.values) == [0, -9, -9, -9]
    assert (ds.w.values == -9).all()


def test_a_short_parquet_record_is_an_error_not_a_shift(tmp_path):
    import pyarrow.parquet as pq

    refs = _v1(tmp_path / "s.nc")
    pqdir = _to_parquet(refs, tmp_path / "refs.parq", record_size=2)
    first = pqdir / "tas" / "refs.0.parq"
    pq.write_table(pq.read_table(first).slice(0, 1), first)
    with pytest.raises(CorruptSourceError, match="refs.0.parq has 1 rows, 2 expected"):
        zarrport.open_dataset(str(pqdir)).tas.load()


def test_sources_are_numbered_once_across_threads(tmp_path):
    """Arrays of one store build their chunk tables in parallel (Dask threads): every
    variable still reads its own file."""
    from concurrent.futures import ThreadPoolExecutor

    files = []
    body = {".zgroup": json.dumps({"zarr_format": 2})}
    for k in range(24):
        raw = tmp_path / f"f{k}.bin"
        raw.write_bytes(np.full(8, k, dtype="<i2").tobytes())
        files.append(raw)
        body[f"v{k}/.zarray"] = json.dumps({"zarr_format": 2, "shape": [8], "chunks": [8],
                                            "dtype": "<i2", "fill_value": None,
                                            "order": "C", "filters": None,
                                            "compressor": None})
        body[f"v{k}/.zattrs"] = json.dumps({"_ARRAY_DIMENSIONS": ["x"]})
        body[f"v{k}/0"] = [str(raw), 0, 16]
    out = _write(tmp_path, {"version": 1, "refs": body})
    for _ in range(5):
        ds = zarrport.open_dataset(str(out))
        with ThreadPoolExecutor(8) as pool:
            values = list(pool.map(lambda k, d=ds: d[f"v{k}"].values, range(24)))
        for k, v in enumerate(values):
            assert (v == k).all(), k
