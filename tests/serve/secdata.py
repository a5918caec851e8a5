"""Data and guards for the tile server's security and fuzz tests (``test_security.py``,
``test_schema_fuzz.py``): a tiny NetCDF dataset, a tiny STAC catalog, hostile kerchunk
references and Icechunk repositories, and :class:`NetworkGuard`, which fails a test that
opens anything it should not (a dataset, a filesystem, a non-loopback connection or name
lookup).
"""

from __future__ import annotations

import builtins
import ipaddress
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

VARIABLE = "tas"
NLAT, NLON, NTIME = 8, 16, 3
TIMES = ("2015-01-01", "2015-01-02", "2015-01-03")


def write_tiny_nc(path: Path, *, variable: str = VARIABLE) -> Path:
    """``variable(time=3, lat=8, lon=16)`` float32 on a global grid, NetCDF-4."""
    import pandas as pd
    import xarray as xr

    lat = np.linspace(-78.75, 78.75, NLAT)
    lon = np.linspace(-168.75, 168.75, NLON)
    rng = np.random.default_rng(7)
    data = (rng.standard_normal((NTIME, NLAT, NLON)) * 10 + 280).astype("float32")
    ds = xr.Dataset(
        {variable: (("time", "lat", "lon"), data, {"units": "K"})},
        coords={"time": pd.to_datetime(list(TIMES)),
                "lat": ("lat", lat, {"units": "degrees_north"}),
                "lon": ("lon", lon, {"units": "degrees_east"})},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, engine="netcdf4")
    return path


def write_catalog(directory: Path, hrefs: dict[str, str]) -> Path:
    """A static STAC catalog: one collection per ``{id: dataset href}``, each with one item
    holding the same asset."""
    directory.mkdir(parents=True, exist_ok=True)
    links = [{"rel": "root", "href": "./catalog.json", "type": "application/json"}]
    for cid, href in hrefs.items():
        links.append({"rel": "child", "href": f"./{cid}/collection.json",
                      "type": "application/json"})
        asset = {"netcdf": {"href": href, "type": "application/netcdf", "roles": ["data"]}}
        item_id = f"{cid}-item"
        item = {
            "type": "Feature", "stac_version": "1.1.0", "id": item_id, "collection": cid,
            "geometry": {"type": "Polygon", "coordinates": [[[-180, -90], [180, -90],
                                                             [180, 90], [-180, 90],
                                                             [-180, -90]]]},
            "bbox": [-180, -90, 180, 90],
            "properties": {"datetime": None, "start_datetime": "2015-01-01T00:00:00Z",
                           "end_datetime": "2015-01-03T00:00:00Z"},
            "assets": asset,
            "links": [{"rel": "collection", "href": "./collection.json"}],
        }
        coll = {
            "type": "Collection", "stac_version": "1.1.0", "id": cid,
            "description": f"{cid} (test)", "license": "CC-BY-4.0",
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                       "temporal": {"interval": [["2015-01-01T00:00:00Z",
                                                  "2015-01-03T00:00:00Z"]]}},
            "assets": asset,
            "links": [{"rel": "root", "href": "../catalog.json"},
                      {"rel": "item", "href": f"./{item_id}/{item_id}.json"}],
        }
        (directory / cid / item_id).mkdir(parents=True, exist_ok=True)
        (directory / cid / "collection.json").write_text(json.dumps(coll))
        (directory / cid / item_id / f"{item_id}.json").write_text(json.dumps(item))
    catalog = {"type": "Catalog", "stac_version": "1.1.0", "id": "test-catalog",
               "description": "test", "links": links}
    (directory / "catalog.json").write_text(json.dumps(catalog))
    return directory


KERCHUNK_LAT = (-45.0, 45.0)
KERCHUNK_LON = (-90.0, 90.0)


def write_kerchunk(path: Path, target: str, *, templated: bool = False) -> Path:
    """A kerchunk JSON reference to ``v(lat=2, lon=2)`` float32 whose one chunk is bytes
    0-16 of ``target`` (coordinates inline); ``templated`` names the target through
    ``templates``."""
    import base64

    def zarray(shape: list[int], dtype: str) -> str:
        return json.dumps({"chunks": shape, "compressor": None, "dtype": dtype,
                           "fill_value": None, "filters": None, "order": "C",
                           "shape": shape, "zarr_format": 2})

    def inline(values: tuple[float, ...]) -> str:
        return "base64:" + base64.b64encode(np.asarray(values, "<f8").tobytes()).decode()

    refs: dict[str, Any] = {
        ".zgroup": json.dumps({"zarr_format": 2}),
        ".zattrs": json.dumps({}),
        "lat/.zarray": zarray([2], "<f8"),
        "lat/.zattrs": json.dumps({"_ARRAY_DIMENSIONS": ["lat"], "units": "degrees_north"}),
        "lat/0": inline(KERCHUNK_LAT),
        "lon/.zarray": zarray([2], "<f8"),
        "lon/.zattrs": json.dumps({"_ARRAY_DIMENSIONS": ["lon"], "units": "degrees_east"}),
        "lon/0": inline(KERCHUNK_LON),
        "v/.zarray": zarray([2, 2], "<f4"),
        "v/.zattrs": json.dumps({"_ARRAY_DIMENSIONS": ["lat", "lon"]}),
        "v/0.0": ["{{u}}" if templated else target, 0, 16],
    }
    doc: dict[str, Any] = {"version": 1, "refs": refs}
    if templated:
        doc["templates"] = {"u": target}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def write_icechunk_virtual(path: Path, prefix: str) -> Path:
    """An Icechunk repository at ``path`` whose config has a virtual chunk container for
    ``prefix`` (``file:///etc/``, ``http://169.254.169.254/``) and one commit."""
    import icechunk

    if prefix.startswith("file://"):
        store = icechunk.local_filesystem_store(prefix.removeprefix("file://"))
    else:  # a container is only configuration: nothing is contacted
        store = icechunk.http_store()
    container = icechunk.VirtualChunkContainer(prefix, store)
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(container)
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)), config)
    session = repo.writable_session("main")
    kerchunk_like_dataset().to_zarr(session.store, zarr_format=3, consolidated=False)
    session.commit("v(lat, lon), native chunks")
    return path


def kerchunk_like_dataset() -> Any:
    """``v(lat=2, lon=2) = [[0, 1], [2, 3]]`` on the grid of :func:`write_kerchunk`."""
    import xarray as xr

    return xr.Dataset({"v": (("lat", "lon"), np.arange(4, dtype="f4").reshape(2, 2))},
                      coords={"lat": ("lat", list(KERCHUNK_LAT), {"units": "degrees_north"}),
                              "lon": ("lon", list(KERCHUNK_LON), {"units": "degrees_east"})})


# ------------------------------------------------------------------------ the guard


def _loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).strip("[]")
    if host in ("localhost", "") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@dataclass
class NetworkGuard:
    """Records (and refuses) what an attack request must never cause.

    ``armed`` guards: anything opening a dataset or a filesystem (``DatasetCache._open``/
    ``kind``, ``zarrport.open.detect``, ``zarrport.open_dataset``, ``fsspec.filesystem``,
    ``zarrport.storage.filesystem``) and any connection or name lookup to a non-loopback
    address (``socket.socket.connect``, ``socket.create_connection``,
    ``socket.getaddrinfo``). ``secrets``: local paths whose opening is recorded (the
    builtin ``open`` and ``os.open``). Each call raises ``AssertionError`` inside the server
    (so it would be a 500) and lands in ``calls``; :meth:`assert_clean` fails the test.
    """

    secrets: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    opening_allowed: bool = False  # True: datasets may open (only network + secrets guarded)

    def install(self, monkeypatch: Any) -> NetworkGuard:
        import fsspec

        import zarrport
        import zarrport.open
        from zarrport import storage
        from zarrport.service.datasets import DatasetCache

        guard = self

        def refuse(what: str) -> Any:
            def _refused(*args: Any, **kwargs: Any) -> Any:
                guard.calls.append(f"{what}{_brief(args)}")
                raise AssertionError(f"the server called {what} for a refused request")
            return _refused

        if not self.opening_allowed:
            monkeypatch.setattr(DatasetCache, "_open", refuse("DatasetCache._open"))
            monkeypatch.setattr(DatasetCache, "kind", refuse("DatasetCache.kind"))
            monkeypatch.setattr(zarrport.open, "detect", refuse("zarrport.open.detect"))
            monkeypatch.setattr(zarrport, "open_dataset", refuse("zarrport.open_dataset"))
            monkeypatch.setattr(fsspec, "filesystem", refuse("fsspec.filesystem"))
            monkeypatch.setattr(storage, "filesystem", refuse("zarrport.storage.filesystem"))

        real_connect = socket.socket.connect
        real_create = socket.create_connection
        real_getaddrinfo = socket.getaddrinfo

        def connect(sock: socket.socket, address: Any) -> Any:
            host = address[0] if isinstance(address, tuple) else address
            if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(host):
                guard.calls.append(f"socket.connect{address!r}")
                raise AssertionError(f"connection to {address!r}")
            return real_connect(sock, address)

        def create_connection(address: Any, *args: Any, **kwargs: Any) -> Any:
            if not _loopback(address[0]):
                guard.calls.append(f"socket.create_connection{address!r}")
                raise AssertionError(f"connection to {address!r}")
            return real_create(address, *args, **kwargs)

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if host is not None and not _loopback(host):
                guard.calls.append(f"socket.getaddrinfo({host!r})")
                raise AssertionError(f"name lookup of {host!r}")
            return real_getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket, "create_connection", create_connection)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

        if self.secrets:
            real_open = builtins.open
            real_os_open = os.open
            secrets = [os.path.realpath(s) for s in self.secrets]

            def watched(path: Any) -> None:
                try:
                    p = os.path.realpath(os.fspath(path))
                except (TypeError, ValueError):
                    return
                if p in secrets:
                    guard.calls.append(f"open({p!r})")
                    raise AssertionError(f"the server opened {p}")

            def guarded_open(file: Any, *args: Any, **kwargs: Any) -> Any:
                if not isinstance(file, int):
                    watched(file)
                return real_open(file, *args, **kwargs)

            def guarded_os_open(path: Any, *args: Any, **kwargs: Any) -> Any:
                watched(path)
                return real_os_open(path, *args, **kwargs)

            monkeypatch.setattr(builtins, "open", guarded_open)
            monkeypatch.setattr(os, "open", guarded_os_open)
        return self

    def assert_clean(self) -> None:
        assert not self.calls, f"a refused request still reached: {self.calls}"


def _brief(args: tuple) -> str:
    text = repr(args)
    return text if len(text) < 200 else text[:197] + "..."
