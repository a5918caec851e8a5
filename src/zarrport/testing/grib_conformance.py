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
                        "shortName", "typeOfLevel", "stepType", "level", "dataDate",
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
                                    "xarray", "zarr", "eccodes", "zarrport"])
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
        workdir: Path | None = None) -> list[GribOutcome]:
    """Check every file, ``jobs`` at a time, each in its own process."""
    import tempfile

    paths = sorted(paths)
    jobs = max(1, jobs or os.cpu_count() or 1)
    results: dict[Path, GribOutcome] = {}
    with tempfile.TemporaryDirectory(prefix="zarrport-grib-conformance-",
                                     dir=workdir) as tmp:
        pending = list(paths)
        running: list[_Running] = []
        while pending or running:
            while pending and len(running) < jobs:
                running.append(_Running(pending.pop(0), Path(tmp), timeout))
            for r in list(running):
                if r.poll():
                    assert r.result is not None
                    results[r.path] = r.result
                    running.remove(r)
            time.sleep(0.02)
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
        "| file | icechunk | manifest | .idx | variables (dims besides the grid) / reason |",
        "|---|---|---|---|---|",
    ]
    counts: dict[str, int] = {}
    for o in sorted(outcomes, key=lambda o: o.file):
        if o.outcome == "identical":
            shown = o.variables[:8] + (["..."] if len(o.variables) > 8 else [])
            note = f"{o.messages} message{'s' if o.messages != 1 else ''}: " + ", ".join(
                shown)
        else:
            note = o.reason
        cells = ([o.icechunk, o.manifest] if o.outcome in ("identical", "MISMATCH")
                 or o.icechunk != "-" else [o.outcome, o.outcome])
        lines.append(f"| `{o.file}` | {cells[0]} | {cells[1]} | {o.idx} | "
                     f"{note.replace('|', '/')} |")
        counts[o.outcome] = counts.get(o.outcome, 0) + 1
    lines += ["", "Totals (files): " + ", ".join(f"{k}: {v}" for k, v in
                                                 sorted(counts.items())), ""]
    return "\n".join(lines)


__all__ = ["GribOutcome", "Oracle", "check_grib_file", "check_isolated", "compare",
           "grib_files", "idx_problems", "run", "to_markdown"]
