#!/usr/bin/env python
"""Benchmark: map tiles served over loopback by ``zarrport serve`` (kerchunk JSON, Icechunk,
converted Zarr and its pyramid) side by side with stock titiler.xarray and xpublish-tiles on
the same converted Zarr and the same tile list: 32 concurrent clients, latency percentiles,
throughput, errors; the first tile of a fresh server; and whether a new Icechunk commit shows
in the very next request.

    python bench/bench_serve.py --out docs/benchmarks.md --json bench/.work/serve.json
    python bench/bench_serve.py --size small --duration 5          # development
    python bench/bench_serve.py --make-xpublish-env                # its own venv, once

Every server is a real uvicorn subprocess on 127.0.0.1, started fresh for each scenario; the
load runs in this process (asyncio + httpx). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import itertools
import json
import math
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _common import (  # noqa: E402
    fmt_load,
    git_commit,
    loadavg,
    machine,
    nproc,
    package_versions,
    replace_section,
    short_error,
)

BEGIN = "<!-- bench_serve: begin -->"
END = "<!-- bench_serve: end -->"
PNG = b"\x89PNG\r\n\x1a\n"
RESCALE = (220, 320)
COLORMAP = "viridis"
XPUBLISH_REQ = "xpublish-tiles==0.12.*"
#: xpublish-tiles 0.12 declares Requires-Python >=3.12; the project's own venv never gets it
XP_PYTHONS = ("3.13", "3.12")
ZOOMS = (0, 1, 2, 3, 4)
#: a map view of at most this many tiles (columns x rows) per zoom
VIEW = (4, 3)
COLD_TILE = (2, 2, 1)  # z, x, y: over Europe/Africa at zoom 2
TARGETS = {"p50_ms": 50.0, "p95_ms": 150.0, "cold_ms": 300.0}

SIZES: dict[str, dict[str, Any]] = {
    # 3 years x 365 x 360 x 720 x 4 B = 1.14 GB of tas (0.5 degree, daily)
    "full": {"years": range(2015, 2018), "nlat": 360, "nlon": 720, "duration": 20.0,
             "warmup": 5.0, "single": 8.0, "shared": 10.0, "clients": 32, "workers": 2},
    "small": {"years": range(2015, 2017), "nlat": 90, "nlon": 180, "duration": 5.0,
              "warmup": 2.0, "single": 2.0, "shared": 3.0, "clients": 32, "workers": 2},
    "tiny": {"years": range(2015, 2016), "nlat": 32, "nlon": 64, "duration": 2.0,
             "warmup": 0.5, "single": 1.0, "shared": 1.0, "clients": 8, "workers": 1},
}
NOLEAP_MONTHS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def log(msg: str) -> None:
    print(f"[bench_serve {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fmt_ms(s: float | None) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "--"
    ms = s * 1e3
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms"


def fmt_b(n: float | None) -> str:
    if n is None:
        return "--"
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= f:
            return f"{n / f:.2f} {unit}"
    return f"{n:.0f} B"


def _env(pythonpath: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                          os.environ.get("PYTHONPATH")]))
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


def zarrport_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "zarrport", *args]


def data_root(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    env = os.environ.get("ZARRPORT_BENCH_DATA")
    return Path(env) if env else ROOT / "bench" / ".data"


# --------------------------------------------------------------------------- data


def _step(stamp: Path, what: str, cmd: list[str], logdir: Path) -> dict[str, Any]:
    """Run one zarrport command unless its stamp says it finished before; the stamp holds
    the command's wall time and its --json output."""
    if stamp.exists():
        return json.loads(stamp.read_text())
    log(f"data: {what}")
    logdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT)
    took = time.perf_counter() - t0
    (logdir / f"{stamp.stem}.stderr").write_text(proc.stderr)
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-1:])[:300]
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {tail}")
    try:
        summary = json.loads(proc.stdout)
    except ValueError:
        summary = None
    rec = {"wall_s": took, "cmd": " ".join(cmd[2:]), "summary": summary}
    stamp.write_text(json.dumps(rec, default=str))
    return rec


def build_data(size: dict[str, Any], data_dir: Path, need: set[str]) -> dict[str, Any]:
    """The archive and its served forms under ``data_dir/serve/<grid>/``, each made once
    with zarrport's own commands: kerchunk JSON (virtualize), the Icechunk repository that
    batch writes, a ``--pattern spatial`` Zarr converted from it, and its pyramid."""
    from zarrport.testing.samples import write_cmip6_archive

    years = size["years"]
    base = data_dir / "serve" / f"{size['nlat']}x{size['nlon']}-{years[0]}-{years[-1]}"
    archive = base / "archive"
    logs = base / "logs"
    t0 = time.perf_counter()
    paths = write_cmip6_archive(archive, years=years, overwrite=False, nlat=size["nlat"],
                                nlon=size["nlon"], time_chunk=1)
    info: dict[str, Any] = {
        "dir": str(base), "files": len(paths), "archive_s": time.perf_counter() - t0,
        "tas_bytes": len(years) * 365 * size["nlat"] * size["nlon"] * 4,
        "disk_bytes": sum(p.stat().st_size for p in paths), "forms": {}, "steps": {}}
    forms = info["forms"]
    batch_out = base / "batch"
    rec = _step(base / "batch.done", "zarrport batch", zarrport_cli(
        "batch", str(archive / "*.nc"), "-o", str(batch_out), "--workers", "2", "--json"),
        logs)
    info["steps"]["batch"] = rec
    repos = sorted((batch_out / "collections").glob("*.icechunk"))
    if len(repos) != 1:
        raise RuntimeError(f"batch wrote {len(repos)} Icechunk repositories, expected 1")
    forms["icechunk"] = str(repos[0])
    if "kerchunk" in need:
        refs = base / "refs.json"
        info["steps"]["virtualize"] = _step(base / "virtualize.done", "zarrport virtualize",
                                            zarrport_cli("virtualize", *map(str, paths), "-o",
                                                         str(refs), "--concat-dim", "time",
                                                         "--overwrite", "--json"), logs)
        forms["kerchunk"] = str(refs)
    spatial = base / "spatial.zarr"
    info["steps"]["convert"] = _step(base / "convert.done", "zarrport convert --pattern spatial",
                                     zarrport_cli("convert", str(repos[0]), "-o", str(spatial),
                                                  "--pattern", "spatial", "--workers", "2",
                                                  "--overwrite", "--json"), logs)
    forms["zarr"] = str(spatial)
    if "pyramid" in need:
        pyr = base / "pyramid.zarr"
        info["steps"]["pyramid"] = _step(base / "pyramid.done", "zarrport pyramid",
                                         zarrport_cli("pyramid", str(spatial), "-o", str(pyr),
                                                      "--overwrite", "--json"), logs)
        forms["pyramid"] = str(pyr)
    info["chunks"] = _zarr_chunks(spatial)
    info["levels"] = _pyramid_levels(Path(forms["pyramid"])) if "pyramid" in forms else None
    return info


def _zarr_chunks(path: Path) -> list[int] | None:
    meta = path / "tas" / "zarr.json"
    try:
        m = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    grid = m.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape")
    for codec in m.get("codecs", []):
        if codec.get("name") == "sharding_indexed":
            return [*grid, "shard of", *codec["configuration"]["chunk_shape"]]
    return grid


def _pyramid_levels(path: Path) -> list[list[int]]:
    shapes = []
    for k in itertools.count():
        meta = path / str(k) / "tas" / "zarr.json"
        if not meta.exists():
            break
        shapes.append(json.loads(meta.read_text())["shape"])
    return shapes


# --------------------------------------------------------------------------- tiles


def noleap_date(year0: int, day: int) -> tuple[int, int, int]:
    year, doy = year0 + day // 365, day % 365
    for month, n in enumerate(NOLEAP_MONTHS, start=1):
        if doy < n:
            return year, month, doy + 1
        doy -= n
    raise AssertionError(day)


def tile_plan(seed: int, n: int, years: range) -> list[tuple[str, int, int, int]]:
    """``n`` requests ``(date, z, x, y)`` as a map viewer makes them: a view picks a day
    at random, a zoom 0-4 (uniform), a window of up to 4x3 tiles at a random place on the
    globe, and asks for every tile of it; then the next view."""
    rng = random.Random(seed)
    ndays = 365 * len(years)
    out: list[tuple[str, int, int, int]] = []
    while len(out) < n:
        y, m, d = noleap_date(years[0], rng.randrange(ndays))
        date = f"{y:04d}-{m:02d}-{d:02d}"
        z = rng.choice(ZOOMS)
        side = 2 ** z
        cols, rows = min(side, VIEW[0]), min(side, VIEW[1])
        x0, y0 = rng.randrange(side), rng.randrange(side - rows + 1)
        for j in range(rows):
            for i in range(cols):
                out.append((date, z, (x0 + i) % side, y0 + j))
    return out[:n]


def shared_plan(date: str) -> list[tuple[str, int, int, int]]:
    """Every tile of zooms 0-3 of one day (85 tiles), in zoom order: many people looking at
    the same map (a viewer's default day), the case a cache of rendered tiles is for."""
    return [(date, z, x, y) for z in range(4) for y in range(2 ** z) for x in range(2 ** z)]


class Server:
    """How to start one server and ask it for a tile."""

    def __init__(self, key: str, label: str, cmd: list[str], env: dict[str, str],
                 health: str, tile_url: Any, point_url: Any = None) -> None:
        self.key, self.label, self.cmd, self.env = key, label, cmd, env
        self.health, self.tile_url, self.point_url = health, tile_url, point_url


def titiler_like_urls(url: str) -> tuple[Any, Any]:
    from urllib.parse import quote

    q = quote(url, safe="/:")

    def tile(date: str, z: int, x: int, y: int) -> str:
        return (f"/xarray/tiles/WebMercatorQuad/{z}/{x}/{y}.png?url={q}&variable=tas"
                f"&sel=time={date}&rescale={RESCALE[0]},{RESCALE[1]}"
                f"&colormap_name={COLORMAP}")

    def point(date: str, lon: float, lat: float) -> str:
        return f"/xarray/point/{lon},{lat}?url={q}&variable=tas&sel=time={date}"

    return tile, point


def xpublish_url(date: str, z: int, x: int, y: int) -> str:
    # xpublish-tiles: /tiles/{tms}/{tileMatrix}/{tileRow}/{tileCol}, row = y, col = x;
    # a cftime time is selected exactly (the files' steps are at noon)
    return (f"/tiles/WebMercatorQuad/{z}/{y}/{x}?variables=tas&style=raster/{COLORMAP}"
            f"&colorscalerange={RESCALE[0]},{RESCALE[1]}&width=256&height=256"
            f"&f=image/png&time={date}T12:00:00")


def png_size(body: bytes) -> tuple[int, int] | None:
    if body[:8] != PNG or body[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", body[16:24])


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    def __init__(self, server: Server, port: int, logdir: Path, name: str) -> None:
        logdir.mkdir(parents=True, exist_ok=True)
        self.base = f"http://127.0.0.1:{port}"
        self.stderr_path = logdir / f"{name}.stderr"
        cmd = [c.replace("{port}", str(port)) for c in server.cmd]
        self.t0 = time.perf_counter()
        with open(logdir / f"{name}.stdout", "w") as out, open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=server.env,
                                         cwd=ROOT, start_new_session=True)
        self.health = server.health
        self.ready_s: float | None = None

    def wait_ready(self, timeout: float = 120) -> None:
        import httpx

        while time.perf_counter() - self.t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}): "
                                   f"{self.stderr_tail()}")
            try:
                if httpx.get(self.base + self.health, timeout=2).status_code == 200:
                    self.ready_s = time.perf_counter() - self.t0
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout:.0f} s: {self.stderr_tail()}")

    def stderr_tail(self) -> str:
        try:
            lines = [ln for ln in self.stderr_path.read_text(errors="replace").splitlines()
                     if ln.strip()]
        except OSError:
            return ""
        last = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln),
                    lines[-1] if lines else "")
        return " ".join(last.split())[:240]

    def tree(self) -> list[Any]:
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def cpu_s(self) -> float:
        total = 0.0
        for p in self.tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except Exception:  # noqa: BLE001 - a process that just ended
                continue
        return total

    def rss(self) -> int:
        total = 0
        for p in self.tree():
            try:
                total += p.memory_info().rss
            except Exception:  # noqa: BLE001
                continue
        return total

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)  # the session this process started
            except ProcessLookupError:
                return
            try:
                self.proc.wait(10)
                return
            except subprocess.TimeoutExpired:
                continue


# --------------------------------------------------------------------------- load


def _check(resp: Any) -> str | None:
    """None when the response is a 256x256 PNG with status 200, else what is wrong."""
    if resp.status_code != 200:
        return f"HTTP {resp.status_code}: {' '.join(resp.text[:160].split())}"
    if not resp.headers.get("content-type", "").startswith("image/png"):
        return f"content-type {resp.headers.get('content-type')}"
    if png_size(resp.content) != (256, 256):
        return f"not a 256x256 PNG (size {png_size(resp.content)})"
    return None


async def _load(base: str, urls: list[str], clients: int, duration: float
                ) -> dict[str, Any]:
    import httpx

    counter = itertools.count()
    samples: list[tuple[float, float, bool]] = []
    errors: dict[str, int] = {}
    cache: dict[str, int] = {}
    tiles: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        start = time.perf_counter()
        stop = start + duration

        async def worker() -> None:
            while time.perf_counter() < stop:
                url = urls[next(counter) % len(urls)]
                t0 = time.perf_counter()
                try:
                    resp = await client.get(url)
                    err = _check(resp)
                    hdr = resp.headers.get("x-zarrport-cache")
                    if hdr:
                        cache[hdr] = cache.get(hdr, 0) + 1
                    hdr = resp.headers.get("x-zarrport-tile-cache")
                    if hdr:
                        tiles[hdr] = tiles.get(hdr, 0) + 1
                except httpx.HTTPError as e:
                    err = short_error(e)
                t1 = time.perf_counter()
                samples.append((t1, t1 - t0, err is None))
                if err is not None:
                    errors[err] = errors.get(err, 0) + 1

        await asyncio.gather(*(worker() for _ in range(clients)))
        end = max((s[0] for s in samples), default=time.perf_counter())
    lat = sorted(s[1] for s in samples)
    n = len(lat)

    def pct(p: float) -> float | None:
        return lat[min(n - 1, int(math.ceil(p / 100 * n)) - 1)] if n else None

    return {"clients": clients, "duration_s": end - start, "requests": n,
            "errors": sum(errors.values()), "error_kinds": dict(sorted(
                errors.items(), key=lambda kv: -kv[1])[:5]),
            "p50_s": pct(50), "p95_s": pct(95), "p99_s": pct(99),
            "mean_s": statistics.fmean(lat) if lat else None, "max_s": lat[-1] if lat else None,
            "throughput": n / (end - start) if end > start else None, "cache": cache,
            "tile_cache": tiles}


def load(base: str, urls: list[str], clients: int, duration: float) -> dict[str, Any]:
    cpu0 = time.process_time()
    res = asyncio.run(_load(base, urls, clients, duration))
    # the clients' own CPU: they share the machine with the server
    res["client_cpu_util"] = (time.process_time() - cpu0) / res["duration_s"] \
        if res["duration_s"] else None
    return res


def get(base: str, path: str, timeout: float = 120) -> tuple[float, Any]:
    import httpx

    t0 = time.perf_counter()
    resp = httpx.get(base + path, timeout=timeout)
    return time.perf_counter() - t0, resp


# --------------------------------------------------------------------------- scenarios


def run_scenario(server: Server, form: str, ctx: dict[str, Any]) -> dict[str, Any]:
    """Fresh server; its first tile (cold); warm-up load; measured load with N clients;
    then one client alone; the check tiles (bytes kept for comparison)."""
    size = ctx["size"]
    name = f"{server.key}-{form}"
    row: dict[str, Any] = {"server": server.key, "label": server.label, "form": form}
    log(f"scenario {name}")
    run = Running(server, free_port(), ctx["work"] / "logs", name)
    try:
        run.wait_ready()
        row["ready_s"] = run.ready_s
        date0 = ctx["dates"][len(ctx["dates"]) // 2]
        cold_s, resp = get(run.base, server.tile_url(date0, *COLD_TILE))
        row["cold_s"] = cold_s
        row["cold_status"] = _check(resp) or "ok"
        row["cold_cache"] = resp.headers.get("x-zarrport-cache")
        _, resp = get(run.base, server.tile_url(date0, *COLD_TILE))
        row["second_s"] = _
        warm = [server.tile_url(*t) for t in ctx["warm_plan"]]
        meas = [server.tile_url(*t) for t in ctx["plan"]]
        single = [server.tile_url(*t) for t in ctx["single_plan"]]
        load(run.base, warm, size["clients"], size["warmup"])
        rss0, cpu0 = run.rss(), run.cpu_s()
        res = load(run.base, meas, size["clients"], size["duration"])
        cpu = run.cpu_s() - cpu0
        res["server_cpu_per_req_s"] = cpu / res["requests"] if res["requests"] else None
        res["server_cpu_util"] = cpu / res["duration_s"] if res["duration_s"] else None
        res["rss"] = max(rss0, run.rss())
        row["load"] = res
        row["single"] = load(run.base, single, 1, size["single"])
        # many people on the same map: one day, every tile of zooms 0-3, in view order
        shared = [server.tile_url(*t) for t in ctx["shared_plan"]]
        row["shared"] = load(run.base, shared, size["clients"], size["shared"])
        checks = {}
        saved = ctx["work"] / "tiles" / name  # for a look by eye
        saved.mkdir(parents=True, exist_ok=True)
        for t in ctx["check_tiles"]:
            _, resp = get(run.base, server.tile_url(*t))
            (saved / f"{t[1]}-{t[2]}-{t[3]}.png").write_bytes(resp.content)
            checks["/".join(map(str, t))] = (hashlib.sha256(resp.content).hexdigest()
                                              if _check(resp) is None else None)
        row["check_tiles"] = checks
        if server.key == "zarrport":
            _, resp = get(run.base, "/metrics")
            row["metrics"] = resp.text[:4000] if resp.status_code == 200 else None
        row["status"] = "ok"
    except Exception as err:  # noqa: BLE001 - reported in the table
        row["status"] = f"failed: {short_error(err)}"
        tail = run.stderr_tail()
        if tail:
            row["status"] += f" (server: {tail})"
    finally:
        run.stop()
    return row


def run_freshness(server: Server, ctx: dict[str, Any]) -> dict[str, Any]:
    """On a copy of the batch Icechunk repository: warm the server on the converted Zarr,
    open the copy for the first time (a never-opened dataset on a warm server), then
    overwrite one day of ``tas`` with 300 K in a new commit (icechunk + zarr directly) and
    ask again at once: the tile's bytes must change and the point value must be 300."""
    import netCDF4
    import numpy as np

    work = ctx["work"]
    repo = work / "fresh.icechunk"
    if repo.exists():
        shutil.rmtree(repo)
    shutil.copytree(ctx["inputs"]["forms"]["icechunk"], repo)
    out: dict[str, Any] = {}
    run = Running(server, free_port(), work / "logs", "zarrport-freshness")
    tile_url, point_url = titiler_like_urls(str(repo))
    zarr_tile, _ = titiler_like_urls(ctx["inputs"]["forms"]["zarr"])
    size = ctx["size"]
    try:
        run.wait_ready()
        load(run.base, [zarr_tile(*t) for t in ctx["warm_plan"]], 4, 1.0)
        day = 40  # 2015-02-10
        y, m, d = noleap_date(size["years"][0], day)
        date = f"{y:04d}-{m:02d}-{d:02d}"
        ilat, ilon = size["nlat"] // 3, size["nlon"] // 8
        lat = -90 + (ilat + 0.5) * 180 / size["nlat"]
        lon = (ilon + 0.5) * 360 / size["nlon"]
        lon = lon - 360 if lon > 180 else lon
        tile = (date, 1, 1, 0)
        t_first, r0 = get(run.base, tile_url(*tile))
        out["first_tile_warm_server_s"] = t_first
        out["first_tile_status"] = _check(r0) or "ok"
        _, r1 = get(run.base, tile_url(*tile))
        _, p0 = get(run.base, point_url(date, lon, lat))
        before = p0.json()["values"][0] if p0.status_code == 200 else None
        files = sorted(Path(ctx["inputs"]["dir"], "archive").glob("*.nc"))
        with netCDF4.Dataset(files[0]) as nc:
            v = nc["tas"]
            v.set_auto_maskandscale(False)
            source = float(v[day, ilat, ilon])
        out.update(before=before, source=source, repeat_same=r0.content == r1.content)
        # the new commit, written with icechunk + zarr directly
        import icechunk
        import zarr

        t0 = time.perf_counter()
        rep = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
        session = rep.writable_session("main")
        arr = zarr.open_group(session.store, mode="r+")["tas"]
        arr[day] = np.full(arr.shape[1:], 300.0, dtype=arr.dtype)
        out["snapshot"] = session.commit("bench_serve: day 40 set to 300 K")
        out["commit_s"] = time.perf_counter() - t0
        t_after, r2 = get(run.base, tile_url(*tile))
        out["after_tile_s"] = t_after
        out["after_status"] = _check(r2) or "ok"
        out["after_cache"] = r2.headers.get("x-zarrport-cache")
        _, p1 = get(run.base, point_url(date, lon, lat))
        after = p1.json()["values"][0] if p1.status_code == 200 else None
        out["after"] = after
        out["tile_changed"] = r2.content != r0.content
        out["point_new"] = after is not None and abs(after - 300.0) < 1e-3
        out["before_matches_source"] = before is not None and abs(before - source) < 1e-3
        out["visible"] = bool(out["tile_changed"] and out["point_new"] and out["repeat_same"])
        out["status"] = "ok"
    except Exception as err:  # noqa: BLE001 - reported
        out["status"] = f"failed: {short_error(err)}"
        tail = run.stderr_tail()
        if tail:
            out["status"] += f" (server: {tail})"
        out["visible"] = False
    finally:
        run.stop()
    return out


# --------------------------------------------------------------------------- servers


def zarrport_serves_tiles() -> str | None:
    """None when ``zarrport serve`` of this checkout has the tile server (--allow), else
    why not."""
    proc = subprocess.run(zarrport_cli("serve", "--help"), capture_output=True, text=True,
                          env=_env(), cwd=ROOT)
    if proc.returncode != 0:
        return f"`zarrport serve --help` failed: {proc.stderr.strip()[-200:]}"
    if "--allow" not in proc.stdout:
        return "this checkout's `zarrport serve` has no tile server (no --allow option)"
    return None


def find_xpublish_python(arg: str | None, data_dir: Path) -> str | None:
    cand = arg or os.environ.get("ZARRPORT_BENCH_XPUBLISH_PY") or str(
        data_dir / "xpublish-venv" / "bin" / "python")
    return cand if Path(cand).exists() else None


def make_xpublish_env(data_dir: Path) -> int:
    """A venv with xpublish-tiles 0.12 under the data directory, from PyPI with pip, made
    with the first CPython 3.13/3.12 under pyenv or on PATH."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = sorted((str(p) for v in XP_PYTHONS for p in pyenv.glob(f"{v}*/bin/python{v}")),
                   reverse=True)
    found += [shutil.which(f"python{v}") for v in XP_PYTHONS]
    venv = data_dir / "xpublish-venv"
    have = venv / "bin" / "python"
    if have.exists() and subprocess.run([str(have), "-c", "import xpublish_tiles, uvicorn"],
                                        capture_output=True).returncode == 0:
        print(have)  # made before
        return 0
    python = next((p for p in found if p), None)
    if python is None:
        print("no Python 3.13 or 3.12 found (xpublish-tiles 0.12 needs >=3.12)",
              file=sys.stderr)
        return 1
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(have), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, XPUBLISH_REQ, "uvicorn", "zarr", "icechunk"], check=True)
    print(have)
    return 0


def make_servers(ctx: dict[str, Any], wanted: list[str]) -> tuple[list[tuple[Server, str]],
                                                                   list[dict[str, Any]]]:
    """(server, form) scenarios to run, and rows for servers that cannot run."""
    forms = ctx["inputs"]["forms"]
    me = str(Path(__file__).resolve())
    runs: list[tuple[Server, str]] = []
    missing: list[dict[str, Any]] = []
    if "zarrport" in wanted:
        why = zarrport_serves_tiles()
        if why:
            missing.append({"server": "zarrport", "label": "**zarrport serve**",
                            "form": "all", "status": f"not available: {why}"})
        else:
            for form in ctx["forms"]:
                tile, point = titiler_like_urls(forms[form])
                runs.append((Server(
                    "zarrport", "**zarrport serve**",
                    zarrport_cli("serve", "--allow", str(ctx["data_dir"]), "--allow",
                                 str(ctx["work"]), "--host", "127.0.0.1", "--port", "{port}",
                                 "--log-level", "warning"),
                    _env(), "/healthz", tile, point), form))
            if "kerchunk" in ctx["forms"] and ctx["size"].get("workers", 1) > 1:
                # the same server with a process per core (each with its own caches)
                n = ctx["size"]["workers"]
                tile, point = titiler_like_urls(forms["kerchunk"])
                runs.append((Server(
                    "zarrport", f"**zarrport serve --workers {n}**",
                    zarrport_cli("serve", "--allow", str(ctx["data_dir"]), "--allow",
                                 str(ctx["work"]), "--host", "127.0.0.1", "--port", "{port}",
                                 "--log-level", "warning", "--workers", str(n)),
                    _env(), "/healthz", tile, point), "kerchunk"))
    if "titiler" in wanted:
        tile, point = titiler_like_urls(forms["zarr"])
        runs.append((Server("titiler", "titiler.xarray (stock)",
                            [sys.executable, me, "--child", "titiler", "{port}"], _env(),
                            "/healthz", tile, point), "zarr"))
    if "xpublish" in wanted:
        py = ctx["xp_python"]
        if py is None:
            missing.append({"server": "xpublish", "label": "xpublish-tiles", "form": "zarr",
                            "status": "not available: no venv with xpublish-tiles (make "
                            "one with --make-xpublish-env; it needs Python >= 3.12)"})
        else:
            args = json.dumps({"store": forms["zarr"],
                               "versions": str(ctx["work"] / "xpublish-versions.json")})
            runs.append((Server("xpublish", "xpublish-tiles",
                                [py, me, "--child", "xpublish", "{port}", args],
                                _env(pythonpath=False), "/healthz", xpublish_url), "zarr"))
    return runs, missing


def child_titiler(port: int) -> int:
    """Stock titiler.xarray: its TilerFactory with the default Reader (opener ``open_zarr``,
    obstore), under /xarray like zarrport's, one uvicorn process on 127.0.0.1."""
    import uvicorn
    from fastapi import FastAPI
    from titiler.core.errors import DEFAULT_STATUS_CODES, add_exception_handlers
    from titiler.xarray.factory import TilerFactory

    app = FastAPI()
    md = TilerFactory(router_prefix="/xarray")
    app.include_router(md.router, prefix="/xarray")
    add_exception_handlers(app, DEFAULT_STATUS_CODES)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    return 0


def child_xpublish(port: int, a: dict[str, Any]) -> int:
    """xpublish + xpublish-tiles (its own venv): the converted Zarr opened as its CLI opens
    a ``zarr+file://`` dataset, one SingleDatasetRest with the TilesPlugin, one uvicorn
    process on 127.0.0.1."""
    from importlib import metadata

    import uvicorn
    import xarray as xr
    import xpublish
    from xpublish_tiles.xpublish.tiles.plugin import TilesPlugin

    Path(a["versions"]).write_text(json.dumps(
        {n: metadata.version(n) for n in ("xpublish-tiles", "xpublish", "xarray", "zarr",
                                          "datashader", "numpy", "uvicorn")}
        | {"python": sys.version.split()[0]}))
    ds = xr.open_zarr(a["store"], consolidated=False, chunks=None, decode_coords="all")
    ds.attrs["_xpublish_id"] = f"zarr+file:{a['store']}"
    xr.set_options(keep_attrs=True)
    rest = xpublish.SingleDatasetRest(ds, plugins={"tiles": TilesPlugin()})

    @rest.app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(rest.app, host="127.0.0.1", port=port, log_level="warning")
    return 0


# --------------------------------------------------------------------------- report


def _ratio(x: float | None) -> str:
    if not x:
        return "--"
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.3f}x"


def status_word(ok: bool | None) -> str:
    return "--" if ok is None else ("**PASS**" if ok else "**MISS**")


FORM_LABEL = {"kerchunk": "kerchunk JSON", "icechunk": "Icechunk (batch)",
              "zarr": "converted Zarr", "pyramid": "pyramid", "all": "--"}


def render(res: dict[str, Any]) -> str:
    inp, size = res["inputs"], res["size"]
    rows = res["rows"]
    ok = [r for r in rows if r.get("status") == "ok"]
    tit = next((r for r in ok if r["server"] == "titiler"), None)
    zps = [r for r in ok if r["server"] == "zarrport"]
    title = "## Serving tiles (bench_serve.py)"
    if res["size_name"] != "full":
        title += f" (--size {res['size_name']})"
    chunks = inp.get("chunks")
    lines = [
        title, "",
        f"Generated by `bench/bench_serve.py --size {res['size_name']}` on {res['date']} in "
        f"{res['elapsed_s']:.0f} s (zarrport at commit {res['commit']}). Data: "
        f"{inp['files']} yearly CMIP6-like NetCDF-4 files "
        f"(`write_cmip6_archive`, {size['nlat']}x{size['nlon']} grid, "
        f"{size['years'][0]}-{size['years'][-1]}, daily `tas` in one chunk per day, noleap): "
        f"{fmt_b(inp['tas_bytes'])} of float32, {fmt_b(inp['disk_bytes'])} on disk. Served "
        "forms, each made once with zarrport's commands: *kerchunk JSON* (`zarrport "
        "virtualize FILES -o refs.json --concat-dim time`), *Icechunk* (the repository "
        "`zarrport batch 'archive/*.nc' -o batch/` writes), *converted Zarr* (`zarrport "
        "convert REPO -o spatial.zarr --pattern spatial`"
        + (f", `tas` chunks {tuple(chunks)}" if chunks else "") + ") and *pyramid* "
        "(`zarrport pyramid spatial.zarr -o pyramid.zarr`"
        + (f": levels {', '.join('x'.join(map(str, s[1:])) for s in inp['levels'])}"
           if inp.get("levels") else "") + ").",
        "",
        f"Load: {size['clients']} concurrent clients (asyncio + httpx, keep-alive) on "
        f"127.0.0.1, the same tile list for every server: map views of up to "
        f"{VIEW[0]}x{VIEW[1]} tiles (every tile of the view), each view a random day and a "
        f"zoom 0-4 at random (so zooms 2-4 make most requests), 256x256 PNG, viridis over "
        f"{RESCALE[0]}-{RESCALE[1]} K. Each scenario starts its server fresh, asks for one "
        f"tile (*cold*), runs {size['warmup']:g} s of warm-up load (another tile list), "
        f"then {size['duration']:g} s measured, then {size['single']:g} s with one "
        "client alone. An error is any response that is not status 200 with a 256x256 "
        "PNG. Servers are one uvicorn process each; the clients share the machine's "
        f"{res['machine']['nproc']} cores with the server.",
        "",
    ]
    # targets
    t = ["### Targets", "", "| target | measured | status |", "|---|---|---|"]
    if not zps:
        zrow = next((r for r in rows if r["server"] == "zarrport"), None)
        why = zrow["status"] if zrow else "not run"
        t.append(f"| all targets | zarrport: {why} | -- |")
    else:
        errs = sum(r["load"]["errors"] + r["single"]["errors"] for r in zps)
        n = sum(r["load"]["requests"] + r["single"]["requests"] for r in zps)
        failed = [r for r in rows if r["server"] == "zarrport" and r.get("status") != "ok"]
        t.append(f"| 0 errors | {errs} of {n:,} requests over {len(zps)} data forms"
                 + (f"; {len(failed)} scenario(s) failed" if failed else "")
                 + f" | {status_word(errs == 0 and not failed)} |")
        for phase, what in (("load", f"{size['clients']} clients, random days"),
                            ("shared", f"{size['clients']} clients on one day's map"),
                            ("single", "1 client")):
            if not all(phase in r for r in zps):
                continue
            vals = "; ".join(f"{_name(r)} {fmt_ms(r[phase]['p50_s'])} / "
                             f"{fmt_ms(r[phase]['p95_s'])}" for r in zps)
            good = all(r[phase]["p50_s"] is not None
                       and r[phase]["p50_s"] * 1e3 <= TARGETS["p50_ms"]
                       and r[phase]["p95_s"] * 1e3 <= TARGETS["p95_ms"] for r in zps)
            t.append(f"| warm tile p50 <= {TARGETS['p50_ms']:.0f} ms and p95 <= "
                     f"{TARGETS['p95_ms']:.0f} ms, {what} | p50 / p95: {vals} | "
                     f"{status_word(good)} |")
        vals = "; ".join(f"{_name(r)} {fmt_ms(r['cold_s'])}" for r in zps)
        good = all(r["cold_s"] * 1e3 <= TARGETS["cold_ms"] and r["cold_status"] == "ok"
                   for r in zps)
        t.append(f"| first tile of a never-opened dataset <= {TARGETS['cold_ms']:.0f} ms "
                 f"(fresh server, first request) | {vals} | {status_word(good)} |")
        fr = res.get("freshness")
        if fr:
            t.append(f"| first tile of a never-opened dataset <= {TARGETS['cold_ms']:.0f} ms "
                     f"(warm server: an Icechunk copy opened for the first time) | "
                     f"{fmt_ms(fr.get('first_tile_warm_server_s'))} | "
                     f"{status_word(fr.get('first_tile_warm_server_s') is not None and fr['first_tile_warm_server_s'] * 1e3 <= TARGETS['cold_ms'])} |")  # noqa: E501
            t.append(f"| a new Icechunk commit visible to the next request | "
                     f"{_fresh_text(fr)} | {status_word(fr.get('visible'))} |")
    lines += t + [""]
    # load table
    lines += [f"### Warm load: {size['clients']} clients, {size['duration']:.0f} s", "",
              "| server | data | requests | errors | p50 | p95 | p99 | tiles/s | p50 / "
              "titiler | tiles/s / titiler | server CPU per tile | server / client CPU use "
              "| server RSS | X-Zarrport-Cache | status |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['label']} | {FORM_LABEL[r['form']]} |" + " |" * 12
                         + f" {r['status']} |")
            continue
        ld = r["load"]
        p50r = (ld["p50_s"] / tit["load"]["p50_s"]) if tit and ld["p50_s"] else None
        thr = (ld["throughput"] / tit["load"]["throughput"]) if tit and ld["throughput"] \
            else None
        errs = f"{ld['errors']}" + (f" ({_errors(ld)})" if ld["errors"] else "")
        lines.append(
            f"| {r['label']} | {FORM_LABEL[r['form']]} | {ld['requests']:,} | {errs} | "
            f"{fmt_ms(ld['p50_s'])} | {fmt_ms(ld['p95_s'])} | {fmt_ms(ld['p99_s'])} | "
            f"{ld['throughput']:.1f} | {_ratio(p50r)} | {_ratio(thr)} | "
            f"{fmt_ms(ld.get('server_cpu_per_req_s'))} | {_util(ld)} | {fmt_b(ld.get('rss'))} "
            f"| {', '.join(f'{k} {v}' for k, v in sorted(ld['cache'].items())) or '--'} | ok |")
    lines += ["", "Ratios against stock titiler.xarray on the converted Zarr (p50: lower is "
              "better; tiles/s: higher is better). Server CPU per tile: user + system CPU of "
              "the server's process tree during the measured phase / requests. CPU use: "
              "cores busy on average during the phase, the server's process tree / the "
              "benchmark's clients (one process). RSS: the server's process tree at the end "
              "of the phase. X-Zarrport-Cache: zarrport's response header (its cache of "
              "opened datasets) over the measured requests.", ""]
    # shared map
    if any("shared" in r for r in ok):
        lines += [f"### One day's map: {size['clients']} clients, {size['shared']:.0f} s", "",
                  "| server | data | requests | errors | p50 | p95 | p99 | tiles/s | tiles/s / "
                  "titiler | rendered-tile cache |", "|---|---|---:|---:|---:|---:|---:|---:|"
                  "---:|---|"]
        for r in ok:
            sh = r.get("shared")
            if not sh:
                continue
            thr = (sh["throughput"] / tit["shared"]["throughput"]) \
                if tit and tit.get("shared") and sh["throughput"] else None
            lines.append(
                f"| {r['label']} | {FORM_LABEL[r['form']]} | {sh['requests']:,} | "
                f"{sh['errors']} | {fmt_ms(sh['p50_s'])} | {fmt_ms(sh['p95_s'])} | "
                f"{fmt_ms(sh['p99_s'])} | {sh['throughput']:.1f} | {_ratio(thr)} | "
                f"{_tile_cache(sh)} |")
        lines += ["", "Every tile of zooms 0-3 of one day (85 tiles), requested over and over "
                  "in zoom order: many people on the same map, e.g. the viewer's default "
                  "day. zarrport answers repeats from its cache of rendered tiles "
                  "(`--tile-cache`, checked against the dataset's version on every request); "
                  "stock titiler.xarray and xpublish-tiles render every request.", ""]
    # single client + cold
    lines += ["### One client alone, and the first tile", "",
              "| server | data | requests | errors | p50 | p95 | p99 | tiles/s | ready after "
              "| first tile (cold) | second tile | same image as titiler |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in ok:
        sg = r["single"]
        lines.append(
            f"| {r['label']} | {FORM_LABEL[r['form']]} | {sg['requests']:,} | {sg['errors']} | "
            f"{fmt_ms(sg['p50_s'])} | {fmt_ms(sg['p95_s'])} | {fmt_ms(sg['p99_s'])} | "
            f"{sg['throughput']:.1f} | {r['ready_s']:.1f} s | {fmt_ms(r['cold_s'])}"
            + ("" if r["cold_status"] == "ok" else f" ({r['cold_status']})")
            + f" | {fmt_ms(r['second_s'])} | {_same(r, tit)} |")
    lines += ["", "*Ready after*: from starting the process until its health endpoint "
              "answers. *First tile*: the first request the fresh server gets (zoom "
              f"{COLD_TILE[0]} tile {COLD_TILE[1]}/{COLD_TILE[2]}, the middle day), which "
              "opens the dataset (titiler's `open_zarr`, zarrport's opener) -- except "
              "xpublish-tiles, which opens its dataset before it starts serving. *Same "
              f"image*: of {len(res['check_tiles'])} check tiles (zooms 0-4), how many PNGs "
              "are byte-identical to stock titiler's (same renderer, rio-tiler; a pyramid "
              "serves coarser levels at low zooms, xpublish-tiles renders with datashader, "
              "so those differ by design).", ""]
    fr = res.get("freshness")
    if fr:
        lines += ["### Freshness (Icechunk)", "", _fresh_text(fr, long=True), ""]
    # machine, versions
    m = res["machine"]
    lines += [f"- machine: {m.get('cpu', '?')}, nproc {m['nproc']}, RAM {m['ram']}, "
              f"Python {m['python']}; load average at start {res['load_start']}, at end "
              f"{res['load_end']} (shared machine: compare ratios within one run)",
              "- versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items())]
    if res.get("xp_versions"):
        lines.append("- xpublish-tiles ran from its own venv: " + ", ".join(
            f"{k} {v}" for k, v in res["xp_versions"].items()))
    steps = inp.get("steps") or {}
    if steps:
        lines.append("- data made in: " + ", ".join(
            f"{k} {v['wall_s']:.1f} s" for k, v in steps.items()) + " (once; reused by later "
            "runs)")
    utils = [r["load"].get("server_cpu_util") for r in ok]
    if utils and all(u is not None and u < 1.2 for u in utils):
        lines.append(
            f"- Every server used about one core or less on average under load "
            f"({min(utils):.2f}-{max(utils):.2f} cores) with {size['clients']} requests "
            f"waiting: each is one uvicorn process (its Python work takes turns on the "
            f"GIL), and the machine is shared (load average above). So with "
            f"{size['clients']} clients the latency is mostly the queue (p50 ~ clients / "
            f"tiles/s); the one-client rows show a tile's own time.")
    for note in res.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines)


def _name(r: dict[str, Any]) -> str:
    label = FORM_LABEL[r["form"]]
    return label + (" (--workers)" if "--workers" in r["label"] else "")


def _tile_cache(ld: dict[str, Any]) -> str:
    c = ld.get("tile_cache") or {}
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "--"


def _util(ld: dict[str, Any]) -> str:
    a, b = ld.get("server_cpu_util"), ld.get("client_cpu_util")
    return "--" if a is None or b is None else f"{a:.2f} / {b:.2f}"


def _errors(ld: dict[str, Any]) -> str:
    return "; ".join(f"{k} x{v}" for k, v in ld["error_kinds"].items())[:200]


def _same(r: dict[str, Any], tit: dict[str, Any] | None) -> str:
    if r["server"] == "titiler" or tit is None:
        return "--"
    mine, theirs = r.get("check_tiles") or {}, tit.get("check_tiles") or {}
    same = sum(1 for k, v in mine.items() if v is not None and v == theirs.get(k))
    return f"{same} of {len(theirs)}"


def _fresh_text(fr: dict[str, Any], long: bool = False) -> str:
    if fr.get("status") != "ok":
        return fr.get("status", "not run")
    short = (f"tile bytes changed: {'yes' if fr['tile_changed'] else 'no'}; point value "
             f"{fr['before']:.2f} K -> {fr['after']:.2f} K (written: 300 K); the next "
             f"request {fmt_ms(fr['after_tile_s'])} after the commit")
    if not long:
        return short
    return (f"On a copy of the batch repository: the server, warmed on the converted Zarr, "
            f"opened the copy for the first time ({fmt_ms(fr['first_tile_warm_server_s'])}"
            f" for the first tile), answered the same tile twice with identical bytes "
            f"({'yes' if fr['repeat_same'] else 'NO'}) and the point value "
            f"{fr['before']:.2f} K (netCDF4 on the file: {fr['source']:.2f} K, "
            f"{'equal' if fr['before_matches_source'] else 'DIFFERENT'}). Then one day of "
            f"`tas` was set to 300 K with icechunk + zarr in a writable session and "
            f"committed ({fmt_ms(fr['commit_s'])}); the very next tile request "
            f"({fmt_ms(fr['after_tile_s'])}, cache header "
            f"{fr.get('after_cache') or '--'}) returned "
            f"{'different' if fr['tile_changed'] else 'THE SAME'} bytes and the point "
            f"{fr['after']:.2f} K.")


# --------------------------------------------------------------------------- main


NOTES = [
    "Stock titiler.xarray's `open_zarr` keeps every dataset it opened for the life of the "
    "process (`functools.cache`), so it never sees a new commit or a rewritten store; its "
    "load rows measure a dataset opened once.",
    "xpublish-tiles 0.12 requires Python >= 3.12 and icechunk 2, so it runs from its own "
    "venv (`--make-xpublish-env`: pip install xpublish-tiles into bench/.data/xpublish-venv, "
    "never into the project's), serving the converted Zarr with xpublish's "
    "`SingleDatasetRest` and the `TilesPlugin` (`/tiles/WebMercatorQuad/{z}/{y}/{x}"
    "?variables=tas&style=raster/viridis&colorscalerange=220,320&width=256&height=256"
    "&time=...T12:00:00`; the time is selected exactly). It renders with datashader.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--servers", action="append",
                        choices=["zarrport", "titiler", "xpublish"],
                        help="only these servers (repeatable; default all)")
    parser.add_argument("--forms", action="append",
                        choices=["kerchunk", "icechunk", "zarr", "pyramid"],
                        help="zarrport's data forms (repeatable; default all)")
    parser.add_argument("--duration", type=float, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per scenario")
    parser.add_argument("--single", type=float, help="seconds of one client alone")
    parser.add_argument("--clients", type=int, help="concurrent clients")
    parser.add_argument("--no-freshness", action="store_true",
                        help="skip the Icechunk commit check")
    parser.add_argument("--out", type=Path, help="replace this benchmark's section here")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--data-dir", type=Path,
                        help="inputs (default $ZARRPORT_BENCH_DATA or bench/.data)")
    parser.add_argument("--work-dir", type=Path, help="outputs (default bench/.work/serve)")
    parser.add_argument("--xpublish-python", help="python of a venv with xpublish-tiles "
                        "(default bench/.data/xpublish-venv/bin/python)")
    parser.add_argument("--make-xpublish-env", action="store_true",
                        help="create that venv (Python 3.13/3.12, pip) and exit")
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="render the section from a --json file of an earlier run")
    parser.add_argument("--child", choices=["titiler", "xpublish"], help=argparse.SUPPRESS)
    parser.add_argument("child_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "titiler":
        return child_titiler(int(args.child_args[0]))
    if args.child == "xpublish":
        return child_xpublish(int(args.child_args[0]), json.loads(args.child_args[1]))
    if args.from_json:
        section = render(json.loads(args.from_json.read_text()))
        print(section)
        if args.out:
            replace_section(args.out, BEGIN, END, section)
        return 0
    data_dir = data_root(args.data_dir)
    if args.make_xpublish_env:
        return make_xpublish_env(data_dir)
    size = dict(SIZES[args.size])
    for k in ("duration", "warmup", "single", "clients"):
        if getattr(args, k) is not None:
            size[k] = getattr(args, k)
    wanted = args.servers or ["zarrport", "titiler", "xpublish"]
    forms = args.forms or ["kerchunk", "icechunk", "zarr", "pyramid"]
    work = args.work_dir or ROOT / "bench" / ".work" / (
        "serve" if args.size == "full" else f"serve-{args.size}")
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    load0 = loadavg()
    need = set(forms) if "zarrport" in wanted else set()
    inputs = build_data(size, data_dir, need)
    years = size["years"]
    ndays = 365 * len(years)
    dates = [("{:04d}-{:02d}-{:02d}".format(*noleap_date(years[0], d))) for d in range(ndays)]
    # enough requests that no scenario runs out (the list wraps around if it does)
    n_req = int(max(2000, 400 * size["duration"]))
    ctx: dict[str, Any] = {
        "size": size, "work": work, "data_dir": data_dir, "inputs": inputs, "forms": forms,
        "dates": dates, "plan": tile_plan(1, n_req, years),
        "warm_plan": tile_plan(2, n_req, years), "single_plan": tile_plan(3, n_req, years),
        "xp_python": find_xpublish_python(args.xpublish_python, data_dir)}
    ctx["check_tiles"] = [(dates[ndays // 3], z, 2 ** z // 2, 2 ** z // 3) for z in ZOOMS]
    ctx["shared_plan"] = shared_plan(dates[ndays // 2])
    scen, missing = make_servers(ctx, wanted)
    rows: list[dict[str, Any]] = []
    for server, form in scen:
        rows.append(run_scenario(server, form, ctx))
    rows += missing
    res: dict[str, Any] = {
        "size_name": args.size, "size": {**size, "years": list(years)}, "inputs": inputs,
        "rows": rows, "check_tiles": ctx["check_tiles"], "commit": git_commit()}
    zp_server = next((s for s, _ in scen if s.key == "zarrport"), None)
    if zp_server is not None and not args.no_freshness:
        log("freshness")
        res["freshness"] = run_freshness(zp_server, ctx)
    xv = work / "xpublish-versions.json"
    if "xpublish" in wanted and xv.exists():
        res["xp_versions"] = json.loads(xv.read_text())
    res["notes"] = list(NOTES)
    res.update(date=f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
               elapsed_s=time.perf_counter() - t_start, machine=machine(),
               load_start=fmt_load(load0), load_end=fmt_load(loadavg()),
               versions={**package_versions(["zarrport", "titiler.xarray", "titiler.core",
                                             "rio-tiler", "xarray", "zarr", "icechunk",
                                             "fastapi", "uvicorn", "httpx"]),
                         "python": sys.version.split()[0], "nproc": str(nproc())})
    section = render(res)
    print(section)
    if args.out:
        replace_section(args.out, BEGIN, END, section)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
