"""Conformance over real GRIB files: every file either opens through :class:`GribParser`
with every value equal to ecCodes' decoding, or is refused with a typed error naming why.

For each file (:func:`check_grib_file`):

1. ``GribParser().build`` -> Icechunk (``write_icechunk``) -> ``zarrport.open_dataset``,
   and ``GribParser()(url, registry)`` -> ``ManifestStore`` -> ``xarray.open_dataset``.
   A :class:`~zarrport.errors.ZarrportError` from the parser is a **refusal**; any other
   exception, or any exception once the parser has accepted the file, is a **CRASH**.
2. The oracle walks the file with ecCodes (``codes_grib_new_from_file``, independent of the
   parser's byte walk) and decodes each message once: ``codes_get_values`` with absent
   points set to NaN (a sentinel ``missingValue``, cross-checked with the bitmap), cast to
   the variable's dtype (float32; float64 for 64-bit IEEE packing). Each value is placed
   by ecCodes' own latitude and longitude of its point (regular grids: exact equality with
   the dataset's 1-D coordinates, every cell hit once) or, on projected grids, by the
   documented convention from the scanning keys with every point's latitude and longitude
   then equal to the dataset's -- not with zarrport's layout code. Each message is matched
   to its variable by its ecCodes keys (``shortName``, ``typeOfLevel``, ``stepType``; the
   parameter numbers where the name is unknown; the grid where several match) and to its
   position by its ``dataDate`` / ``dataTime`` / ``second``, ``number``, ``endStep`` and ``level``.
   Every field must equal the oracle exactly (NaN where it is NaN), no two messages may
   share a position, every position without a message must be all NaN, regular grids must
   have latitude and longitude increasing and longitude in -180..180, and coordinates that
   are not dimensions must equal the variable's ``GRIB_*`` attributes.
3. Where a wgrib2 ``.idx`` lies beside the file, a second manifest is built from the index
   offsets alone (one variable per index line) and each of its chunks must equal the
   oracle's decoding of the message ecCodes finds at that offset.

4. cfgrib, for comparison (:func:`cfgrib_outcome`, in a process of its own): its
   ``open_datasets`` reading of the file is judged by the same oracle
   (:func:`cfgrib_problems`): identical, refused (cfgrib raises) or MISMATCH.

:func:`run` checks each file in its own process (forked from a preloaded server), so a
segfault is reported as CRASH and a hang (no result within ``timeout`` seconds) as HANG.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ACCEPTABLE = ("identical", "refused")
#: absent points, in the oracle (not the codec's NaN trick): no packed value is this
SENTINEL = -1.0e300
TIMEOUT = 120.0


@dataclass
class GribOutcome:
    file: str
    outcome: str  # identical, refused, MISMATCH, CRASH, HANG
    reason: str = ""
    #: per path: icechunk / manifest ("identical", "MISMATCH" ...), "-" if not reached
    icechunk: str = "-"
    manifest: str = "-"
    #: the .idx manifest check: "-" without an index
    idx: str = "-"
    messages: int = 0
    variables: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: cfgrib judged against the same oracle (:func:`cfgrib_outcome`): identical, refused,
    #: MISMATCH, CRASH, HANG; "-" if not run. Not part of ``acceptable``.
    cfgrib: str = "-"
    cfgrib_reason: str = ""

    @property
    def acceptable(self) -> bool:
        return self.outcome in ACCEPTABLE and self.idx in ("-", "identical")


def grib_files(root: Path) -> list[Path]:
    """Every GRIB file under ``root/grib`` (sidecar ``.idx`` files left out)."""
    folder = root / "grib"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix != ".idx")


# --------------------------------------------------------------------------- the oracle


@dataclass
class _Message:
    number: int
    offset: int
    length: int
    keys: dict[str, Any]
    grid_digest: str


class Oracle:
    """ecCodes' own reading of a file; values and coordinates decoded on demand."""

    def __init__(self, path: Path):
        import eccodes

        from zarrport.grib.grid import grid_key

        self.path = path
        self.messages: list[_Message] = []
        self._grids: dict[str, _OracleGrid] = {}
        self._placements: dict[Any, np.ndarray | None] = {}
        with open(path, "rb") as f:
            while True:
                h = eccodes.codes_grib_new_from_file(f)
                if h is None:
                    break
                try:
                    keys = {k: _get(h, k) for k in (
                        "shortName", "paramId", "typeOfLevel", "stepType", "level", "dataDate",
                        "dataTime", "second", "number", "discipline", "parameterCategory",
                        "parameterNumber", "table2Version", "indicatorOfParameter",
                        "packingType", "precision", "edition", "offset", "totalLength")}
                    if eccodes.codes_is_defined(h, "stepUnits"):
                        eccodes.codes_set(h, "stepUnits", "m")
                    if keys["level"] is not None:  # exact, as the parser reads it
                        keys["level"] = float(eccodes.codes_get_double(h, "level"))
                    for k in ("endStep", "startStep"):
                        keys[k] = (int(eccodes.codes_get_long(h, k))
                                   if eccodes.codes_is_defined(h, k) else None)
                    self.messages.append(_Message(len(self.messages) + 1, int(keys["offset"]),
                                                  int(keys["totalLength"]), keys, grid_key(h)))
                finally:
                    eccodes.codes_release(h)

    def handle(self, m: _Message) -> Any:
        import eccodes

        with open(self.path, "rb") as f:
            f.seek(m.offset)
            return eccodes.codes_new_from_message(f.read(m.length))

    def values(self, m: _Message) -> np.ndarray:
        """ecCodes' values in ecCodes' order (float64), absent points NaN."""
        import eccodes

        h = self.handle(m)
        try:
            eccodes.codes_set(h, "missingValue", SENTINEL)
            if _get(h, "alternativeRowScanning"):
                # every second row stored reversed: ecCodes' geo-iterator gives the values
                # in the order of its ``latitudes`` / ``longitudes`` (codes_get_values
                # does not)
                from zarrport.grib.grid import iterator_values

                vals = iterator_values(h)
                eccodes.codes_set(h, "missingValue", SENTINEL)
                vals[np.isnan(vals)] = SENTINEL
            else:
                vals = np.asarray(eccodes.codes_get_values(h), dtype=np.float64)
            absent = vals == SENTINEL
            if _get(h, "bitmapPresent"):
                bitmap = np.asarray(eccodes.codes_get_array(h, "bitmap")) == 0
                if bitmap.shape == absent.shape and not np.array_equal(bitmap, absent & bitmap):
                    raise AssertionError(f"message {m.number}: the bitmap marks points absent "
                                         "that ecCodes gives values for")
            vals[absent] = np.nan
        finally:
            eccodes.codes_release(h)
        return vals

    def grid(self, m: _Message) -> _OracleGrid:
        """ecCodes' latitude and longitude of every point (ecCodes' order), and the
        scanning keys, once per distinct grid section."""
        import eccodes

        if m.grid_digest not in self._grids:
            h = self.handle(m)
            try:
                lats = np.asarray(eccodes.codes_get_array(h, "latitudes"), dtype=np.float64)
                lons = np.asarray(eccodes.codes_get_array(h, "longitudes"), dtype=np.float64)
                scan = {k: int(_get(h, k) or 0) for k in (
                    "Ni", "Nj", "iScansNegatively", "jScansPositively",
                    "jPointsAreConsecutive")}
            finally:
                eccodes.codes_release(h)
            self._grids[m.grid_digest] = _OracleGrid(m.grid_digest, lats,
                                                     (lons + 180.0) % 360.0 - 180.0, scan)
        return self._grids[m.grid_digest]

    def place(self, m: _Message, lat: np.ndarray, lon: np.ndarray,
              regular: bool) -> np.ndarray | None:
        """Where each of the message's points goes in a dataset grid whose coordinates are
        ``lat``/``lon`` (1-D for a regular grid, 2-D otherwise): flat indices, or None if
        the message's own coordinates do not fit that grid point for point.

        Regular grids: each point is placed by its own latitude and longitude (exact
        equality), independently of zarrport's layout; every cell must get one point.
        Projected grids: the documented convention (rows in the grid's +j direction,
        columns in +i) from the scanning keys, and every point's latitude and longitude
        must then equal the dataset's there.
        """
        g = self.grid(m)
        key = (g.digest, regular, lat.shape, lon.shape,
               hashlib.blake2b(lat.tobytes() + lon.tobytes(), digest_size=16).digest())
        if key in self._placements:
            return self._placements[key]
        n = g.lats.size
        flat: np.ndarray | None = None
        if regular == "reduced":  # the points in the message's order
            if (lat.shape == lon.shape == (n,)
                    and np.array_equal(lat, g.lats, equal_nan=True)
                    and np.array_equal(lon, g.lons, equal_nan=True)):
                flat = np.arange(n)
        elif regular and lat.ndim == 1 and lon.ndim == 1 and lat.size * lon.size == n and n:
            i = np.clip(np.searchsorted(lat, g.lats), 0, lat.size - 1)
            j = np.clip(np.searchsorted(lon, g.lons), 0, lon.size - 1)
            if np.array_equal(lat[i], g.lats) and np.array_equal(lon[j], g.lons):
                cand = i * lon.size + j
                if np.all(np.bincount(cand, minlength=n) == 1):
                    flat = cand
        elif not regular and lat.ndim == 2 and lat.size == n:
            ni, nj = g.scan["Ni"], g.scan["Nj"]
            idx = np.arange(n)
            a = idx.reshape(ni, nj).T if g.scan["jPointsAreConsecutive"] else idx.reshape(
                nj, ni)
            if not g.scan["jScansPositively"]:
                a = a[::-1, :]
            if g.scan["iScansNegatively"]:
                a = a[:, ::-1]
            if a.shape == lat.shape:
                cand = np.empty(n, dtype=np.int64)
                cand[a.ravel()] = idx
                if (np.array_equal(lat.ravel()[cand], g.lats, equal_nan=True)
                        and np.array_equal(lon.ravel()[cand], g.lons, equal_nan=True)):
                    flat = cand
        self._placements[key] = flat
        return flat

    def field(self, m: _Message, flat: np.ndarray, shape: tuple[int, ...],
              dtype: np.dtype) -> np.ndarray:
        """The message's values placed on the dataset's grid, cast to ``dtype``."""
        out = np.full(int(np.prod(shape)), np.nan)
        out[flat] = self.values(m)
        return out.reshape(shape).astype(dtype)

    def dtype(self, m: _Message) -> np.dtype:
        k = m.keys
        ieee64 = k.get("packingType") == "grid_ieee" and int(k.get("precision") or 1) >= 2
        return np.dtype(np.float64 if ieee64 else np.float32)

    def identity(self, m: _Message) -> tuple[Any, ...]:
        k = m.keys
        ident: tuple[Any, ...] = (str(k["shortName"]), k["typeOfLevel"] or "",
                                  k["stepType"] or "")
        if k["shortName"] in ("unknown", "~", "", None):
            ident += ((k["discipline"], k["parameterCategory"], k["parameterNumber"])
                      if k["edition"] == 2 else (k["table2Version"], k["indicatorOfParameter"]))
        return ident

    def coords(self, m: _Message) -> dict[str, Any]:
        """init_time / member / step / level of a message, as zarrport decodes them."""
        from zarrport.grib.build import init_time_of

        k = m.keys
        step = None if k["endStep"] is None else np.timedelta64(int(k["endStep"]), "m")
        return {"init_time": init_time_of(int(k["dataDate"]), int(k["dataTime"]),
                                          int(k.get("second") or 0)),
                "member": None if k["number"] is None else int(k["number"]),
                "step": step,
                "level": None if k["level"] is None else float(k["level"])}


@dataclass
class _OracleGrid:
    digest: str
    lats: np.ndarray  # ecCodes' order
    lons: np.ndarray  # ecCodes' order, wrapped to -180..180
    scan: dict[str, int]


def _get(h: Any, key: str) -> Any:
    import eccodes

    try:
        return eccodes.codes_get(h, key) if eccodes.codes_is_defined(h, key) else None
    except eccodes.GribInternalError:
        return None


# --------------------------------------------------------------------------- comparison


def _identity_of(var: Any) -> tuple[Any, ...]:
    a = var.attrs
    ident: tuple[Any, ...] = (str(a.get("GRIB_shortName")), a.get("GRIB_typeOfLevel", ""),
                              a.get("GRIB_stepType", ""))
    if a.get("GRIB_shortName") in ("unknown", "~", ""):
        keys = (("GRIB_discipline", "GRIB_parameterCategory", "GRIB_parameterNumber")
                if "GRIB_discipline" in a else ("GRIB_table2Version", "GRIB_indicatorOfParameter"))
        ident += tuple(a.get(k) for k in keys)
    return ident


def _grid_dims(var: Any) -> tuple[str, ...]:
    if str(var.dims[-1]).startswith("values"):  # reduced grid: one dimension
        return tuple(var.dims[-1:])
    return tuple(var.dims[-2:])


def _grid_coords(ds: Any, var: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    """The variable's latitude and longitude (1-D for a regular grid, 2-D for a projected
    one, 1-D along ``values`` for a reduced one: ``regular`` is then ``"reduced"``)."""
    ydim = _grid_dims(var)[0]
    if ydim.startswith("values"):
        suffix = ydim[len("values"):]
        lat = np.asarray(ds["latitude" + suffix].values, dtype=np.float64)
        lon = np.asarray(ds["longitude" + suffix].values, dtype=np.float64)
        return lat, lon, "reduced"
    regular = ydim.startswith("latitude")
    suffix = ydim[len("latitude"):] if regular else ydim[1:]
    lat = np.asarray(ds["latitude" + suffix].values, dtype=np.float64)
    lon = np.asarray(ds["longitude" + suffix].values, dtype=np.float64)
    return lat, lon, regular


def compare(ds: Any, oracle: Oracle) -> list[str]:
    """Every problem found comparing an opened dataset with the oracle (empty: identical)."""
    problems: list[str] = []
    dims_order = ("init_time", "member", "step", "level")
    data_vars = {n: v for n, v in ds.data_vars.items() if "GRIB_shortName" in v.attrs}
    by_identity: dict[tuple[Any, ...], list[str]] = {}
    for n, v in data_vars.items():
        by_identity.setdefault(_identity_of(v), []).append(n)
    coord_index: dict[str, dict[Any, int]] = {}
    for d in dims_order:
        if d in ds.variables:
            coord_index[d] = {_key(x): i for i, x in enumerate(ds[d].values)}
    coords_of = {n: _grid_coords(ds, v) for n, v in data_vars.items()}
    for n, (lat, lon, regular) in coords_of.items():
        if regular is True:
            if lat.size > 1 and not np.all(np.diff(lat) > 0):
                problems.append(f"{n}: latitude not increasing")
            if lon.size > 1 and not np.all(np.diff(lon) > 0):
                problems.append(f"{n}: longitude not increasing")
            if lon.size and not (lon.min() >= -180.0 and lon.max() < 180.0):
                problems.append(f"{n}: longitude outside -180..180")
    loaded: dict[str, np.ndarray] = {}
    filled: dict[str, np.ndarray] = {}
    for m in oracle.messages:
        where = f"message {m.number} @{m.offset}"
        names = by_identity.get(oracle.identity(m), [])
        placed = {n: oracle.place(m, *coords_of[n]) for n in names}
        fits = [n for n in names if placed[n] is not None]
        if len(fits) != 1:
            problems.append(
                f"{where} {oracle.identity(m)}: on the grid of {len(fits)} of the variables "
                f"{names} (expected 1: no such variable, or coordinates differ from ecCodes')")
            continue
        n = fits[0]
        v = data_vars[n]
        coords = oracle.coords(m)
        pos: list[int] = []
        for d in dims_order:
            value = coords[d]
            if d in v.dims:
                k = coord_index.get(d, {}).get(_key(value))
                if k is None:
                    problems.append(f"{where}: {n} has no {d} {value}")
                    break
                pos.append(k)
            else:
                problem = _check_constant(v.attrs, d, value)
                if problem:
                    problems.append(f"{where}: {n}: {problem}")
        else:
            if n not in loaded:
                loaded[n] = np.asarray(v.values)
                filled[n] = np.zeros(v.shape[:-len(_grid_dims(v))], dtype=bool)
                if loaded[n].dtype != oracle.dtype(m):
                    problems.append(f"{n}: dtype {loaded[n].dtype}, expected "
                                    f"{oracle.dtype(m)}")
            t = tuple(pos)
            if filled[n][t]:
                problems.append(f"{where}: {n}{list(t)} holds two messages")
                continue
            filled[n][t] = True
            got = loaded[n][t]
            want = oracle.field(m, placed[n], got.shape, got.dtype)
            if not np.array_equal(got, want, equal_nan=True):
                diff = ~((got == want) | (np.isnan(got) & np.isnan(want)))
                problems.append(f"{where}: {n}{list(t)}: {int(diff.sum())} of {got.size} "
                                "values differ from ecCodes'")
    for n in data_vars:
        if n not in loaded:
            problems.append(f"{n}: no message of the file belongs to it")
            continue
        empty = ~filled[n]
        if empty.any() and not np.all(np.isnan(loaded[n][empty])):
            problems.append(f"{n}: positions without a message are not all NaN")
    return problems


def _lead_dims(var: Any) -> tuple[str, ...]:
    return tuple(var.dims[:-len(_grid_dims(var))])


def _key(x: Any) -> Any:
    if isinstance(x, np.datetime64):
        return ("t", int(np.datetime64(x, "s").astype(np.int64)))
    if isinstance(x, np.timedelta64):
        return ("d", int(np.timedelta64(x, "s").astype(np.int64)))
    if x is None:
        return None
    return float(x)


def _check_constant(attrs: dict[str, Any], dim: str, value: Any) -> str | None:
    """A coordinate that is not a dimension must match the variable's GRIB_* attribute."""
    attr = {"init_time": "GRIB_init_time", "member": "GRIB_member",
            "step": "GRIB_step_minutes", "level": "GRIB_level"}[dim]
    if value is None:
        return f"{attr} is set but ecCodes has no {dim}" if attr in attrs else None
    if attr not in attrs:
        return f"{dim} {value} is neither a dimension nor the attribute {attr}"
    got = attrs[attr]
    if dim == "init_time":
        ok = np.datetime64(got, "s") == value
    elif dim == "step":
        ok = np.timedelta64(int(got), "m") == value
    else:
        ok = float(got) == float(value)
    return None if ok else f"{attr}={got!r}, ecCodes says {value}"


# --------------------------------------------------------------------------- one file


def check_grib_file(path: Path, workdir: Path) -> GribOutcome:
    """Run one file through both paths and compare with the oracle (see the module doc)."""
    import warnings

    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    path = Path(path).resolve()
    out = GribOutcome(path.name, "")
    try:
        _check(path, workdir, out)
    finally:
        out.seconds = round(time.perf_counter() - t0, 2)
    return out


def _check(path: Path, workdir: Path, out: GribOutcome) -> None:
    import xarray as xr

    import zarrport
    from zarrport import storage
    from zarrport.errors import ZarrportError
    from zarrport.grib.build import to_manifest_store
    from zarrport.grib.scan import GribParser
    from zarrport.virtual.icechunk import write_icechunk

    url = storage.normalize_url(str(path))
    registry = storage.object_store_registry([url])
    parser = GribParser()
    try:
        built = parser.build(url, registry)
        store = to_manifest_store(built, registry)  # what parser(url, registry) returns
    except ZarrportError as err:
        out.outcome, out.reason = "refused", f"{type(err).__name__}: {_short(err, path)}"
        _check_idx(path, None, out)
        return
    except Exception as err:  # noqa: BLE001 - a crash is a conformance failure
        out.outcome, out.reason = "CRASH", f"parser: {type(err).__name__}: {err}"
        return
    data_vars = [n for n, v in built.dataset.variables.items() if v.refs is not None]
    out.variables = [f"{n}({','.join(d for d in _lead_dims(built.dataset.variables[n]))})"
                     for n in data_vars]
    out.messages = len(built.fields)
    try:
        oracle = Oracle(path)
    except Exception as err:  # noqa: BLE001
        out.outcome = "MISMATCH"
        out.reason = f"zarrport accepts the file, ecCodes cannot read it: {err}"
        return
    problems: list[str] = []
    if len(oracle.messages) != len(built.fields):
        problems.append(f"ecCodes finds {len(oracle.messages)} messages, the parser "
                        f"{len(built.fields)}")
    repo = workdir / f"{path.name}.icechunk"
    stages = (
        ("icechunk", lambda: (write_icechunk(
            built.dataset, str(repo), message=f"conformance {path.name}",
            provenance={"kind": "grib-file", "source": url}), zarrport.open_dataset(str(repo)))[1]),
        ("manifest", lambda: xr.open_dataset(store, engine="zarr", consolidated=False,
                                             zarr_format=3, chunks=None)),
    )
    for name, opener in stages:
        try:
            ds = opener()
            found = compare(ds, oracle)
        except Exception as err:  # noqa: BLE001 - accepted, then failed: a bug
            setattr(out, name, "CRASH")
            problems.append(f"{name}: {type(err).__name__}: {_one_line(err)}")
            continue
        setattr(out, name, "identical" if not found else "MISMATCH")
        problems += [f"{name}: {p}" for p in found[:3]]
    _check_idx(path, oracle, out)
    if any(getattr(out, s) == "CRASH" for s in ("icechunk", "manifest")):
        out.outcome = "CRASH"
    elif problems:
        out.outcome = "MISMATCH"
    else:
        out.outcome = "identical"
    out.reason = "; ".join(problems[:4])


def _check_idx(path: Path, oracle: Oracle | None, out: GribOutcome) -> None:
    """A manifest from the wgrib2 ``.idx`` beside the file: each chunk equals ecCodes."""
    idx = path.with_name(path.name + ".idx")
    if not idx.is_file():
        return
    try:
        problems = idx_problems(path, idx, oracle or Oracle(path))
    except Exception as err:  # noqa: BLE001
        out.idx = "CRASH"
        out.reason = (out.reason + "; " if out.reason else "") + (
            f"idx: {type(err).__name__}: {_one_line(err)}")
        return
    out.idx = "identical" if not problems else "MISMATCH"
    if problems:
        out.reason = (out.reason + "; " if out.reason else "") + "idx: " + "; ".join(
            problems[:3])


def idx_problems(path: Path, idx: Path, oracle: Oracle) -> list[str]:
    """Build a ManifestStore from the index offsets alone (one variable per index line) and
    compare every chunk with the oracle's message at that offset."""
    import eccodes
    import xarray as xr

    from zarrport import storage
    from zarrport.grib.build import Field, build_dataset, to_manifest_store
    from zarrport.grib.grid import grid_from_handle
    from zarrport.grib.index import parse_index

    url = storage.normalize_url(str(path))
    entries = parse_index(idx.read_bytes(), source=str(idx), file_size=path.stat().st_size)
    by_offset = {m.offset: m for m in oracle.messages}
    problems: list[str] = []
    fields: list[Field] = []
    grids: dict[str, Any] = {}
    data = path.read_bytes()
    for e in entries:
        m = by_offset.get(e.offset)
        if m is None or m.length != e.length:
            problems.append(f"line {e.message}: offset {e.offset} length {e.length} is not a "
                            "message ecCodes finds")
            continue
        h = eccodes.codes_new_from_message(data[e.offset:e.offset + int(e.length or 0)])
        try:
            grid = grid_from_handle(h, source=str(path))
        finally:
            eccodes.codes_release(h)
        grids.setdefault(grid.key, grid)
        fields.append(Field(url=url, offset=e.offset, length=int(e.length or 0),
                            name=f"m{e.message}{'' if e.field is None else f'_{e.field}'}",
                            grid=grid.key, dtype=str(oracle.dtype(m)),
                            attrs={"GRIB_index_line": f"{e.param}:{e.level}"}))
    if problems or not fields:
        return problems or ["the index lists no message"]
    registry = storage.object_store_registry([url])
    built = build_dataset(fields, grids, attrs={"source": url})
    ds = xr.open_dataset(to_manifest_store(built, registry), engine="zarr",
                         consolidated=False, zarr_format=3, chunks=None)
    for f in fields:
        m = by_offset[f.offset]
        var = ds[f.name]
        flat = oracle.place(m, *_grid_coords(ds, var))
        if flat is None:
            problems.append(f"{f.name}: coordinates differ from ecCodes'")
            continue
        got = np.asarray(var.values)
        if not np.array_equal(got, oracle.field(m, flat, got.shape, got.dtype),
                              equal_nan=True):
            problems.append(f"{f.name} (message at {f.offset}) differs from ecCodes'")
    return problems


def _short(err: Exception, path: Path) -> str:
    text = str(err)
    return text.replace(path.as_uri() + ": ", "").replace(str(path) + ": ", "")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]


# --------------------------------------------------------------------------- cfgrib


def cfgrib_outcome(path: Path, workdir: Path) -> tuple[str, str]:
    """cfgrib's reading of ``path`` judged against the same oracle: ``("identical", "")``,
    ``("refused", why)`` when cfgrib raises opening or loading it, or ``("MISMATCH", why)``.

    cfgrib gets its best chance: ``cfgrib.open_datasets`` splits the file into as many
    hypercubes as it needs. See :func:`cfgrib_problems` for what is compared.
    """
    import cfgrib

    path = Path(path).resolve()
    # cfgrib writes an index beside the file it opens unless indexpath is "", and
    # open_datasets takes indexpath in backend_kwargs only (a plain keyword goes to xarray
    # and is ignored; checked with cfgrib 0.9.15.1): it opens a symlink in the work
    # folder, so nothing it might write lands beside the data
    link = workdir / f"cfgrib-{os.getpid()}-{path.name}"
    link.symlink_to(path)
    try:
        datasets = [ds.load() for ds in
                    cfgrib.open_datasets(str(link), backend_kwargs={"indexpath": ""})]
    except Exception as err:  # noqa: BLE001 - cfgrib refusing the file is an outcome
        return "refused", f"{type(err).__name__}: " + _one_line(err).replace(
            str(link), path.name)
    finally:
        link.unlink()
    try:
        oracle = Oracle(path)
    except Exception as err:  # noqa: BLE001
        # cfgrib reads what it can and skips a damaged message with a logged warning
        return "MISMATCH", ("datasets returned without an error, but ecCodes cannot walk "
                            f"the file ({_one_line(err)}): a damaged message is skipped")
    problems = cfgrib_problems(datasets, oracle)
    if not problems:
        return "identical", ""
    more = f" (+{len(problems) - 2} more)" if len(problems) > 2 else ""
    return "MISMATCH", "; ".join(problems[:2]) + more


@dataclass
class _CfVar:
    """One data variable of one of cfgrib's datasets."""

    label: str
    var: Any
    grid_dims: tuple[str, ...]
    values: np.ndarray | None = None
    #: per position of the leading dimensions, the message found there (0: none)
    filled: np.ndarray | None = None
    considered: bool = False


def _cf_identity(a: dict[str, Any]) -> tuple[Any, ...]:
    return (int(a.get("GRIB_paramId", -1)), str(a.get("GRIB_shortName")),
            str(a.get("GRIB_typeOfLevel")), str(a.get("GRIB_stepType")))


def _wrap(lon: np.ndarray) -> np.ndarray:
    """Longitude to -180..180 the way the oracle wraps ecCodes' (same arithmetic)."""
    return (lon + 180.0) % 360.0 - 180.0


def _cf_place(oracle: Oracle, m: _Message, v: _CfVar) -> tuple[np.ndarray | None, str]:
    """Flat indices into cfgrib's grid of the message's points, placed by ecCodes' own
    latitude and longitude of each point (exact equality, every cell hit once), or None and
    why not."""
    var = v.var
    if "latitude" not in var.coords or "longitude" not in var.coords:
        return None, "no latitude/longitude coordinates"
    lat = np.asarray(var.coords["latitude"].values, dtype=np.float64)
    lon = _wrap(np.asarray(var.coords["longitude"].values, dtype=np.float64))
    g = oracle.grid(m)
    n = g.lats.size
    shape = tuple(var.sizes[d] for d in v.grid_dims)
    if int(np.prod(shape)) != n:
        return None, f"grid {shape}, ecCodes has {n} points"
    lat_dims = var.coords["latitude"].dims
    lon_dims = var.coords["longitude"].dims
    if (lat_dims != lon_dims and lat_dims == v.grid_dims[-2:-1]
            and lon_dims == v.grid_dims[-1:]):  # 1-D latitude and longitude
        i, ok_i = _lookup(lat, g.lats)
        j, ok_j = _lookup(lon, g.lons)
        if ok_i.all() and ok_j.all():
            cand = i * lon.size + j
            if np.all(np.bincount(cand, minlength=n) == 1):
                return cand, ""
            return None, "ecCodes' points do not cover the grid once each"
        return None, ("latitude/longitude differ from ecCodes' (by up to "
                      f"{_gap(lat, g.lats[~ok_i]):.3g} / {_gap(lon, g.lons[~ok_j]):.3g} deg)")
    if lat_dims == lon_dims == v.grid_dims:  # one latitude and longitude per point
        flat_lat, flat_lon = lat.ravel(), lon.ravel()
        if (np.array_equal(flat_lat, g.lats, equal_nan=True)
                and np.array_equal(flat_lon, g.lons, equal_nan=True)):
            return np.arange(n), ""
        # another order: by (latitude, longitude) pairs, where they are unique
        pairs = flat_lat + 1j * flat_lon
        k, ok = _lookup(pairs, g.lats + 1j * g.lons)
        if ok.all() and np.unique(pairs).size == n and np.all(
                np.bincount(k, minlength=n) == 1):
            return k, ""
        return None, ("latitude/longitude differ from ecCodes' (by up to "
                      f"{np.nanmax(np.abs(np.sort(flat_lat) - np.sort(g.lats))):.3g} / "
                      f"{np.nanmax(np.abs(np.sort(flat_lon) - np.sort(g.lons))):.3g} deg)")
    return None, f"latitude{lat_dims} / longitude{lon_dims} do not span the grid {v.grid_dims}"


def _lookup(table: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index in ``table`` of each of ``wanted`` (exact equality) and where it was found."""
    order = np.argsort(table, kind="stable")
    k = np.clip(np.searchsorted(table[order], wanted), 0, max(table.size - 1, 0))
    idx = order[k]
    return idx, table[idx] == wanted


def _gap(table: np.ndarray, missed: np.ndarray) -> float:
    """How far the values not found are from the nearest in ``table``."""
    missed = np.unique(missed)[:2000]
    if not missed.size:
        return 0.0
    return float(np.nanmax(np.min(np.abs(missed[:, None] - table[None, :]), axis=1)))


def cfgrib_problems(datasets: list[Any], oracle: Oracle) -> list[str]:
    """Every difference between cfgrib's datasets and the oracle (empty: identical).

    Each message must be found once: in a variable whose ``GRIB_paramId``,
    ``GRIB_shortName``, ``GRIB_typeOfLevel`` and ``GRIB_stepType`` are the message's,
    whose latitude and longitude place each of ecCodes' points (:func:`_cf_place`), at
    the position given by its coordinates ``time`` (``dataDate``/``dataTime``/``second``),
    ``step`` (``endStep``), ``number`` and the level coordinate named by ``typeOfLevel``
    (each a dimension holding the value, or a scalar coordinate equal to it), with every
    value equal to ecCodes' (NaN exactly where ecCodes has none, in the oracle's dtype).
    A position holding no message must be all NaN (so a message given twice is found).
    Where several variables fit a message, the one whose field equals it is taken; if none
    or more than one does, the message is reported unmatched.
    """
    problems: list[str] = []
    cfvars: list[_CfVar] = []
    for i, ds in enumerate(datasets):
        for n, var in ds.data_vars.items():
            # the grid: the dimensions latitude and longitude span (none for a single
            # point, which cfgrib squeezes to scalar coordinates)
            spanned = {d for c in ("latitude", "longitude") if c in var.coords
                       for d in var.coords[c].dims}
            gdims = (tuple(d for d in var.dims if d in spanned) if spanned
                     else ("values",) if var.dims and var.dims[-1] == "values"
                     else tuple(var.dims[-2:]) if "latitude" not in var.coords else ())
            cfvars.append(_CfVar(f"{n}[{i}]" if len(datasets) > 1 else str(n), var, gdims))
    by_identity: dict[tuple[Any, ...], list[_CfVar]] = {}
    for v in cfvars:
        by_identity.setdefault(_cf_identity(v.var.attrs), []).append(v)
    places: dict[tuple[str, str], tuple[np.ndarray | None, str]] = {}
    for m in oracle.messages:
        k = m.keys
        ident = (int(k["paramId"] or 0), str(k["shortName"]), str(k["typeOfLevel"]),
                 str(k["stepType"]))
        coords = oracle.coords(m)
        level = "" if k["level"] is None else f" {k['level']:g}"
        what = (f"message {m.number} ({k['shortName']} {k['typeOfLevel']}{level} "
                f"step {k['endStep']} min)")
        fits: list[tuple[_CfVar, tuple[int, ...], np.ndarray]] = []
        why: list[str] = []
        for v in by_identity.get(ident, []):
            v.considered = True
            key = (v.label, m.grid_digest)
            if key not in places:
                places[key] = _cf_place(oracle, m, v)
            flat, reason = places[key]
            if flat is None:
                why.append(f"{v.label}: {reason}")
                continue
            pos, reason = _cf_position(v, coords, str(k["typeOfLevel"]))
            if pos is None:
                why.append(f"{v.label}: {reason}")
                continue
            fits.append((v, pos, flat))
        if not fits:
            problems.append(f"{what}: not found: " + ("; ".join(why[:2]) if why else
                                                      "no such variable in cfgrib's datasets"))
            continue
        want = None
        chosen = []
        for v, pos, flat in fits:
            if v.values is None:
                v.values = np.asarray(v.var.values)
                v.filled = np.zeros(v.values.shape[:v.values.ndim - len(v.grid_dims)],
                                    dtype=np.int64)
            got = v.values[pos]
            if want is None or want.shape != got.shape:
                want = oracle.field(m, flat, got.shape, oracle.dtype(m))
            same = np.array_equal(got.astype(np.float64), want.astype(np.float64),
                                  equal_nan=True)
            chosen.append((v, pos, same, got))
        if len(chosen) > 1:
            equal = [c for c in chosen if c[2]]
            if len(equal) != 1:
                problems.append(f"{what}: unmatched: fits {len(chosen)} variables "
                                f"({', '.join(c[0].label for c in chosen)}), "
                                f"{len(equal)} of them equal to it")
                continue
            chosen = equal
        v, pos, same, got = chosen[0]
        assert v.filled is not None
        if v.filled[pos]:
            problems.append(f"{what}: missing: {v.label}{list(pos)} is already message "
                            f"{v.filled[pos]} (one field for both)")
            continue
        v.filled[pos] = m.number
        if not same:
            assert want is not None
            w = want.astype(np.float64)
            g64 = got.astype(np.float64)
            diff = ~((g64 == w) | (np.isnan(g64) & np.isnan(w)))
            nan = int((np.isnan(g64) != np.isnan(w)).sum())
            problems.append(f"{what}: {v.label}{list(pos)}: {int(diff.sum())} of {got.size} "
                            f"values differ from ecCodes' ({nan} of them NaN on one side only"
                            f"; cfgrib {got.dtype}, ecCodes {oracle.dtype(m)})"
                            + _stored_order_hint(oracle, m, got))
    for v in cfvars:
        if v.values is None:
            if not v.considered:
                problems.append(f"{v.label}: no message of the file belongs to it")
            continue
        assert v.filled is not None
        empty = v.filled == 0
        if empty.any() and not np.all(np.isnan(v.values[empty])):
            problems.append(f"{v.label}: positions without a message hold values")
    return problems


def _stored_order_hint(oracle: Oracle, m: _Message, got: np.ndarray) -> str:
    """Why values differ, where it is that the values are in the message's stored order
    (``codes_get_values``) while the coordinates are ecCodes' per-point ones: with
    alternative row scanning, every second row is then placed reversed."""
    import eccodes

    h = oracle.handle(m)
    try:
        if not _get(h, "alternativeRowScanning"):
            return ""
        eccodes.codes_set(h, "missingValue", SENTINEL)
        raw = np.asarray(eccodes.codes_get_values(h), dtype=np.float64)
    finally:
        eccodes.codes_release(h)
    raw[raw == SENTINEL] = np.nan
    if got.size == raw.size and np.array_equal(
            got.ravel().astype(np.float64), raw.astype(oracle.dtype(m)).astype(np.float64),
            equal_nan=True):
        return (": the values are in stored order, every second row reversed against its "
                "latitude/longitude (alternative row scanning)")
    return ""


def _cf_position(v: _CfVar, coords: dict[str, Any],
                 type_of_level: str) -> tuple[tuple[int, ...] | None, str]:
    """Index of the message in the variable's leading dimensions, from its coordinates."""
    var = v.var
    names = {"time": coords["init_time"], "step": coords["step"],
             "number": coords["member"], type_of_level: coords["level"]}
    lead = var.dims[:var.ndim - len(v.grid_dims)]
    for d in lead:
        if d not in names:
            return None, f"dimension {d} is not one the messages' keys give"
    pos = {}
    for name, value in names.items():
        if name in lead:
            if value is None:
                return None, f"dimension {name}, ecCodes has none"
            if name not in var.coords:
                return None, f"no {name} coordinate (ecCodes: {_show(value)})"
            hits = [i for i, x in enumerate(var.coords[name].values) if _key(x) == _key(value)]
            if len(hits) != 1:
                return None, f"{name} {_show(value)} found {len(hits)} times"
            pos[name] = hits[0]
        elif name in var.coords:
            got = var.coords[name].values[()]
            if value is not None and _key(got) != _key(value):
                return None, f"{name} is {_show(got)}, ecCodes says {_show(value)}"
        elif value is not None:
            return None, f"no {name} coordinate (ecCodes: {_show(value)})"
    return tuple(pos[d] for d in lead), ""


def _show(x: Any) -> str:
    if isinstance(x, np.datetime64):
        return str(np.datetime64(x, "s"))
    if isinstance(x, np.timedelta64):
        return f"{int(np.timedelta64(x, 's').astype(np.int64)) / 60:g} min"
    return f"{x}" if not isinstance(x, float) else f"{x:g}"


# --------------------------------------------------------------------------- isolation


def _child(path: str, workdir: str, conn: Any) -> None:
    try:
        result = check_grib_file(Path(path), Path(workdir))
        conn.send(asdict(result))
    except BaseException as err:  # noqa: BLE001 - reported, not raised
        conn.send(asdict(GribOutcome(Path(path).name, "CRASH",
                                     f"{type(err).__name__}: {_one_line(err)}")))
    finally:
        conn.close()


def _cfgrib_child(path: str, workdir: str, conn: Any) -> None:
    """:func:`cfgrib_outcome` in a child: sends a :class:`GribOutcome` whose ``outcome`` and
    ``reason`` are cfgrib's."""
    import warnings

    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    try:
        outcome, reason = cfgrib_outcome(Path(path), Path(workdir))
    except BaseException as err:  # noqa: BLE001 - reported, not raised
        outcome, reason = "CRASH", f"{type(err).__name__}: {_one_line(err)}"
    try:
        conn.send(asdict(GribOutcome(Path(path).name, outcome, reason,
                                     seconds=round(time.perf_counter() - t0, 2))))
    finally:
        conn.close()


_CONTEXT: Any = None


def _context() -> Any:
    """A forkserver with zarrport, xarray, zarr and ecCodes preloaded: each check is a
    cheap fork of a process that has never started a thread or event loop.

    Not icechunk: importing icechunk 2 starts its tokio runtime, and a child forked after
    that hangs on its first store call (tokio-rs/tokio#4301; checked with icechunk 2.3.0)."""
    global _CONTEXT
    if _CONTEXT is None:
        import multiprocessing as mp

        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["zarrport.testing.grib_conformance", "zarrport.grib.scan",
                                    "xarray", "zarr", "eccodes", "zarrport", "cfgrib"])
        _CONTEXT = ctx
    return _CONTEXT


class _Running:
    """One file being checked in a child process (``target(path, workdir, conn)`` sends a
    :class:`GribOutcome` as a dict)."""

    def __init__(self, path: Path, workdir: Path, timeout: float, target: Any = None):
        ctx = _context()
        self.path = path
        self.recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=target or _child,
                                args=(str(path), str(workdir), send), daemon=True)
        self.proc.start()
        send.close()
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.result: GribOutcome | None = None

    def poll(self) -> bool:
        """True once finished (result set)."""
        if self.recv.poll():
            try:
                self.result = GribOutcome(**self.recv.recv())
            except EOFError:
                self.result = None
            self.proc.join(5)
            if self.result is None:
                self.result = self._died()
            return True
        if not self.proc.is_alive():
            self.proc.join()
            if self.recv.poll():
                return self.poll()
            self.result = self._died()
            return True
        if time.monotonic() > self.deadline:
            self.proc.kill()
            self.proc.join()
            self.result = GribOutcome(self.path.name, "HANG",
                                      f"no result within {self.timeout:g} s (killed)")
            return True
        return False

    def _died(self) -> GribOutcome:
        code = self.proc.exitcode
        import signal

        why = (f"killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exit status {code}")
        return GribOutcome(self.path.name, "CRASH", f"the checking process died ({why})")


def check_isolated(path: Path, workdir: Path, timeout: float = TIMEOUT, *,
                   target: Any = None) -> GribOutcome:
    """:func:`check_grib_file` in its own process: a segfault is CRASH, a hang HANG.
    ``target`` replaces the check (a module-level function, for tests)."""
    running = _Running(path, workdir, timeout, target)
    while not running.poll():
        time.sleep(0.02)
    assert running.result is not None
    return running.result


def run(paths: Iterable[Path], *, timeout: float = TIMEOUT, jobs: int | None = None,
        workdir: Path | None = None, cfgrib: bool = True) -> list[GribOutcome]:
    """Check every file, ``jobs`` at a time, each in its own process; with ``cfgrib``, also
    judge cfgrib's reading of each file (:func:`cfgrib_outcome`) in a process of its own,
    into the outcome's ``cfgrib`` / ``cfgrib_reason``."""
    import tempfile

    paths = sorted(paths)
    jobs = max(1, jobs or os.cpu_count() or 1)
    results: dict[Path, GribOutcome] = {}
    cf: dict[Path, GribOutcome] = {}
    with tempfile.TemporaryDirectory(prefix="zarrport-grib-conformance-",
                                     dir=workdir) as tmp:
        pending = [(p, None) for p in paths]
        if cfgrib:
            pending += [(p, _cfgrib_child) for p in paths]
        running: list[tuple[_Running, Any]] = []
        while pending or running:
            while pending and len(running) < jobs:
                path, target = pending.pop(0)
                running.append((_Running(path, Path(tmp), timeout, target), target))
            for r, target in list(running):
                if r.poll():
                    assert r.result is not None
                    (cf if target is not None else results)[r.path] = r.result
                    running.remove((r, target))
            time.sleep(0.02)
    for p, o in cf.items():
        results[p].cfgrib, results[p].cfgrib_reason = o.outcome, o.reason
    return [results[p] for p in paths]


# --------------------------------------------------------------------------- markdown

GRIB_HEADING = "## GRIB"


def to_markdown(outcomes: list[GribOutcome]) -> str:
    lines = [
        GRIB_HEADING,
        "",
        "Every GRIB1/GRIB2 file in `shared/data/real/grib` (taken byte for byte from cfgrib,",
        "ecCodes, gribberish, iris, kerchunk, pygrib, herbie, g2c, VirtualiZarr and xarray's",
        "test data; `.idx` sidecars aside) is scanned by `GribParser` (no index) and read two",
        "ways: written to **Icechunk** and opened with `zarrport.open_dataset`, and as",
        "VirtualiZarr's **ManifestStore** opened with xarray. The oracle is ecCodes walking the",
        "file itself: every message is decoded once (`codes_get_values`, absent points NaN;",
        "with alternative row scanning, ecCodes' geo-iterator, which puts the rows in order),",
        "cast to the variable's dtype (float32; float64 for 64-bit IEEE packing), placed by",
        "ecCodes' own latitude and longitude of each point (not by zarrport's layout code;",
        "reduced and HEALPix grids: point for point in the message's order),",
        "matched to its variable by its keys (`shortName`, `typeOfLevel`,",
        "`stepType`, parameter numbers where the name is unknown, the grid) and to its position",
        "by `dataDate`/`dataTime`, `number`, `endStep` and `level`. **identical** means every",
        "value of every field equals ecCodes' (NaN exactly where ecCodes has none), every",
        "position without a message is NaN, no message is lost or doubled, latitudes and",
        "longitudes equal ecCodes' (regular grids: increasing, longitude in -180..180) and",
        "coordinates that are not dimensions equal the variable's `GRIB_*` attributes.",
        "**refused** is a typed zarrport error naming the file, the message and the reason.",
        "Each file runs in its own process with a 120 s limit, so a segfault would show as",
        "CRASH and a hang as HANG.",
        "",
        "The `.idx` column: for the files with a wgrib2 inventory beside them, a second",
        "manifest is built from the index offsets alone (one variable per index line) and each",
        "chunk must equal ecCodes' decoding of the message at that offset.",
        "",
        "Variable names are ecCodes' `shortName` (`cfVarName`, then",
        "`var_<discipline>_<category>_<number>` where it is unknown); a name found on several",
        "level types, step types or grids gets a suffix for what differs (`t_isobaricInhPa`,",
        "`cfrzr_avg`, `dis06_grid1`).",
        "",
        "The **cfgrib** column judges cfgrib on the same file against the same oracle, in a",
        "process of its own: `cfgrib.open_datasets(path, backend_kwargs={\"indexpath\": \"\"})`,",
        "which splits the file into as many hypercubes as it needs, so cfgrib gets its best",
        "chance. **identical** means every message is found once, in a variable with the",
        "message's `GRIB_paramId`, `GRIB_shortName`, `GRIB_typeOfLevel` and `GRIB_stepType`, at",
        "the position its `time` (`dataDate`/`dataTime`/`second`), `step` (`endStep`), `number`",
        "and level coordinate (named by `typeOfLevel`) give -- a dimension holding the value or",
        "a scalar coordinate equal to it -- with every value equal to ecCodes' (NaN exactly",
        "where ecCodes has none) placed by ecCodes' latitude and longitude of each point on",
        "cfgrib's own coordinates (1-D latitude/longitude, or one per point along `values` or",
        "`y`/`x`; longitudes compared modulo 360), and every position holding no message all",
        "NaN. **refused** is cfgrib raising while opening or loading the file; **MISMATCH**",
        "names the first differences: a message missing (two messages given as one field),",
        "values differing, points at the wrong latitude/longitude, or coordinates missing.",
        "Where several variables fit a message, the one equal to it is taken; if none or more",
        "than one is, the message counts as unmatched.",
        "",
        "| file | icechunk | manifest | .idx | cfgrib | variables (dims besides the grid) / "
        "reason |",
        "|---|---|---|---|---|---|",
    ]
    counts: dict[str, int] = {}
    cf_counts: dict[str, int] = {}
    for o in sorted(outcomes, key=lambda o: o.file):
        if o.outcome == "identical":
            shown = o.variables[:8] + (["..."] if len(o.variables) > 8 else [])
            note = f"{o.messages} message{'s' if o.messages != 1 else ''}: " + ", ".join(
                shown)
        else:
            note = o.reason
        if o.cfgrib not in ("-", "identical"):
            note += f"; cfgrib: {o.cfgrib_reason}"
        cells = ([o.icechunk, o.manifest] if o.outcome in ("identical", "MISMATCH")
                 or o.icechunk != "-" else [o.outcome, o.outcome])
        lines.append(f"| `{o.file}` | {cells[0]} | {cells[1]} | {o.idx} | {o.cfgrib} | "
                     f"{note.replace('|', '/')} |")
        counts[o.outcome] = counts.get(o.outcome, 0) + 1
        if o.cfgrib != "-":
            cf_counts[o.cfgrib] = cf_counts.get(o.cfgrib, 0) + 1
    lines += ["", "Totals (files): " + ", ".join(f"{k}: {v}" for k, v in
                                                 sorted(counts.items())), ""]
    if cf_counts:
        lines[lines.index("| file | icechunk | manifest | .idx | cfgrib | variables (dims "
                          "besides the grid) / reason |"):0] = summary(outcomes) + [""]
    return "\n".join(lines)


def tally(outcomes: list[GribOutcome]) -> dict[str, dict[str, int]]:
    """Files per outcome, for zarrport (``outcome``) and for cfgrib (``cfgrib``)."""
    out: dict[str, dict[str, int]] = {"zarrport": {}, "cfgrib": {}}
    for o in outcomes:
        out["zarrport"][o.outcome] = out["zarrport"].get(o.outcome, 0) + 1
        if o.cfgrib != "-":
            out["cfgrib"][o.cfgrib] = out["cfgrib"].get(o.cfgrib, 0) + 1
    return out


def summary(outcomes: list[GribOutcome]) -> list[str]:
    """The totals per tool and the rule they are held to, as markdown lines."""
    t = tally(outcomes)
    order = ("identical", "refused", "MISMATCH", "CRASH", "HANG")

    def row(tool: str) -> str:
        c = t[tool]
        return (f"| {tool} | " + " | ".join(str(c.get(k, 0)) for k in order) + " |")

    return [
        f"Totals over the {len(outcomes)} files (identical means exact):",
        "",
        "| tool | " + " | ".join(order) + " |",
        "|---|" + "---|" * len(order),
        row("zarrport"),
        row("cfgrib"),
        "",
        "The rule (`tests/grib/test_grib_conformance.py`): zarrport is identical on at least",
        "as many files as cfgrib, with no MISMATCH, CRASH or HANG: every file it does not",
        "read exactly it refuses with a typed error.",
    ]


__all__ = ["GribOutcome", "Oracle", "cfgrib_outcome", "cfgrib_problems", "check_grib_file",
           "check_isolated", "compare", "grib_files", "idx_problems", "run", "summary",
           "tally", "to_markdown"]
