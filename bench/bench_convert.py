#!/usr/bin/env python
"""Benchmark: ``zarrport convert`` of a 30-year daily CMIP6-like archive (one-day source
chunks, 2.8 GB of float32 ``tas``) into time-series chunks with zstd, against xarray +
Dask (``to_zarr`` on a 2-worker LocalCluster) and zarr-parallel 0.5.0, with the same
target chunks and codec; the memory of every worker; storage per codec with and without
shards; and reads of the converted store against the source NetCDF files.

    python bench/bench_convert.py --size full --out docs/benchmarks.md   # ~15-40 min, 2 cores
    python bench/bench_convert.py --size small                           # smoke check (< 1 min)
    python bench/bench_convert.py --make-zarr-parallel-env               # its own venv, once

Every tool runs in its own subprocess; the parent samples the process tree's RSS every
0.2 s (sum over the tree, and each process's maximum). See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import signal
import statistics
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

BEGIN = "<!-- bench_convert: begin -->"
END = "<!-- bench_convert: end -->"
MB = 1e6
GB = 1e9
MAX_MEMORY = "2GB"
WORKERS = 2
ZARR_PARALLEL = "zarr-parallel==0.5.0"
#: zarr-parallel 0.5.0 declares Requires-Python >=3.11,<3.13
ZP_PYTHONS = ("python3.12", "python3.11")

SIZES: dict[str, dict[str, Any]] = {
    # 30 x 365 x 180 x 360 x 4 B = 2.84 GB of tas
    "full": {"years": range(1985, 2015), "nlat": 180, "nlon": 360, "storage_years": 5,
             "repeat": 5, "point": (60, 100), "day": 15 * 365 + 200, "storage_workers": WORKERS,
             "storage_codecs": ("zstd", "blosc-lz4", "gzip", "blosc-zstd")},
    "small": {"years": range(1985, 1987), "nlat": 32, "nlon": 64, "storage_years": 1,
              "repeat": 2, "point": (10, 20), "day": 365 + 40, "storage_workers": 1,
              "storage_codecs": ("zstd", "blosc-lz4", "gzip")},
}


def log(msg: str) -> None:
    print(f"[bench_convert {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fmt_s(s: float | None) -> str:
    if s is None or math.isnan(s):
        return "--"
    return f"{s:.2f} s" if s >= 1 else f"{s * 1e3:.1f} ms"


def fmt_b(n: float | None) -> str:
    if n is None:
        return "--"
    for unit, f in (("GB", GB), ("MB", MB), ("KB", 1e3)):
        if n >= f:
            return f"{n / f:.2f} {unit}"
    return f"{n:.0f} B"


# --------------------------------------------------------------------------- inputs


def data_root(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    env = os.environ.get("ZARRPORT_BENCH_DATA")
    return Path(env) if env else ROOT / "bench" / ".data"


def make_archive(size: dict[str, Any], data_dir: Path) -> tuple[list[Path], dict[str, Any]]:
    """The yearly NetCDF files (written once, reused) and how well they compress."""
    from zarrport.testing.samples import write_cmip6_archive

    years = size["years"]
    directory = (data_dir / "convert" /
                 f"archive-{size['nlat']}x{size['nlon']}-{years[0]}-{years[-1]}")
    t0 = time.perf_counter()
    missing = not directory.is_dir() or len(list(directory.glob("*.nc"))) < len(years)
    paths = write_cmip6_archive(directory, years=years, overwrite=False, nlat=size["nlat"],
                                nlon=size["nlon"], time_chunk=1)
    took = time.perf_counter() - t0
    raw = len(years) * 365 * size["nlat"] * size["nlon"] * 4
    disk = sum(p.stat().st_size for p in paths)
    info = {"dir": str(directory), "files": len(paths), "tas_bytes": raw,
            "disk_bytes": disk, "netcdf_ratio": raw / disk,
            "generated_s": round(took, 1) if missing else None}
    return paths, info


# --------------------------------------------------------------------------- monitoring


def _kind(cmd: str, ppid: int, forkservers: set[int], root: int, pid: int) -> str:
    if pid == root:
        return "main"
    if "spawn_main" in cmd or ppid in forkservers:  # forked children keep its command line
        return "worker"
    if "forkserver import main" in cmd:
        return "forkserver"
    if "resource_tracker" in cmd:
        return "resource tracker"
    return "other"


def run_monitored(cmd: list[str], *, env: dict[str, str], timeout: float, logdir: Path,
                  name: str, interval: float = 0.2) -> dict[str, Any]:
    """Run ``cmd``; sample its process tree's RSS every ``interval`` s. Returns the wall
    time, exit status, stdout, the largest sum of RSS over the tree and each process's
    largest RSS (with its kind: main, worker, forkserver, ...)."""
    import psutil

    logdir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logdir / f"{name}.stdout", logdir / f"{name}.stderr"
    t0 = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT,
                                start_new_session=True)
    root = psutil.Process(proc.pid)
    peaks: dict[int, int] = {}
    meta: dict[int, tuple[int, str]] = {}
    peak_sum = 0
    timed_out = False
    while proc.poll() is None:
        total = 0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            procs = []
        for p in procs:
            try:
                rss = p.memory_info().rss
                if p.pid not in meta:
                    meta[p.pid] = (p.ppid(), " ".join(p.cmdline())[:300])
            except psutil.Error:
                continue
            total += rss
            peaks[p.pid] = max(peaks.get(p.pid, 0), rss)
        peak_sum = max(peak_sum, total)
        if time.perf_counter() - t0 > timeout:
            timed_out = True
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)  # the session this call started
                except ProcessLookupError:
                    break
                try:
                    proc.wait(10)
                    break
                except subprocess.TimeoutExpired:
                    continue
            break
        time.sleep(interval)
    proc.wait()
    wall = time.perf_counter() - t0
    like = {pid for pid, (_, c) in meta.items() if "forkserver import main" in c}
    forkservers = {pid for pid in like if meta[pid][0] not in like}
    processes = sorted(({"pid": pid, "kind": _kind(c, ppid, forkservers, proc.pid, pid),
                         "peak_rss": peaks[pid]} for pid, (ppid, c) in meta.items()),
                       key=lambda r: -r["peak_rss"])
    return {"wall_s": wall, "returncode": proc.returncode, "timed_out": timed_out,
            "stdout": out_path.read_text(), "stderr_path": str(err_path),
            "stderr_tail": err_path.read_text()[-3000:], "peak_tree_rss": peak_sum,
            "processes": processes,
            "worker_peaks": [p["peak_rss"] for p in processes if p["kind"] == "worker"]}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                      env.get("PYTHONPATH")]))
    env.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    return env


def zarrport_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "zarrport", *args]


def _json_out(run: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return json.loads(run["stdout"])
    except ValueError:
        return None


def _failure(run: dict[str, Any], timeout: float) -> str | None:
    if run["timed_out"]:
        return f"timed out after {timeout:.0f} s (killed)"
    if run["returncode"] != 0:
        lines = [ln for ln in run["stderr_tail"].splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln),
                    lines[-1] if lines else "")
        return f"failed (exit {run['returncode']}): {' '.join(last.split())[:220]}"
    return None


# --------------------------------------------------------------------------- checks


def _masked(a: Any) -> Any:
    import numpy as np

    a = np.asarray(a, dtype="f4")
    return np.where(a >= 1e19, np.float32(np.nan), a)


def check_output(path: Path, files: list[Path], want_chunks: list[int],
                 want_shards: list[int] | None) -> str:
    """'ok', or what is wrong: the chunk grid of ``tas`` and its values over the first,
    middle and last source files (every cell, fill values as NaN), read with zarr."""
    import netCDF4
    import numpy as np
    import zarr

    try:
        a = zarr.open_group(str(path), mode="r")["tas"]
    except Exception as err:  # noqa: BLE001 - reported in the table
        return f"WRONG: cannot open tas ({short_error(err)})"
    n = 365 * len(files)
    if a.shape[0] != n:
        return f"WRONG: tas has shape {a.shape}, the source {(n, *a.shape[1:])}"
    if list(a.chunks) != list(want_chunks):
        return f"WRONG: chunks {a.chunks}, planned {tuple(want_chunks)}"
    if want_shards and list(a.shards or ()) != list(want_shards):
        return f"WRONG: shards {a.shards}, planned {tuple(want_shards)}"
    for k in sorted({0, len(files) // 2, len(files) - 1}):
        with netCDF4.Dataset(files[k]) as nc:
            v = nc["tas"]
            v.set_auto_maskandscale(False)
            want = _masked(v[...])
        got = _masked(a[k * 365:(k + 1) * 365])
        if got.shape != want.shape or not np.array_equal(got, want, equal_nan=True):
            bad = np.argwhere(~((got == want) | (np.isnan(got) & np.isnan(want))))
            where = tuple(int(i) for i in bad[0]) if len(bad) else "?"
            return f"WRONG: year {k} differs from the source ({len(bad)} values, first {where})"
    return "ok"


def store_bytes(path: Path) -> tuple[int, int]:
    """(sum of file sizes, bytes allocated on disk) of a directory tree."""
    size = alloc = 0
    for dirpath, _dirs, names in os.walk(path):
        for f in names:
            st = os.stat(os.path.join(dirpath, f))
            size += st.st_size
            alloc += st.st_blocks * 512
    return size, alloc


# --------------------------------------------------------------------------- children


def child_xarray(a: dict[str, Any]) -> int:
    """xarray + Dask: open_mfdataset over the files, .chunk(target) on tas, to_zarr with
    ZstdCodec(level=3) on a LocalCluster(2 workers x 1 thread, memory_limit=2GB)."""
    import resource
    import warnings

    import dask
    import xarray as xr
    from distributed import Client, LocalCluster
    from zarr.codecs import ZstdCodec

    warnings.simplefilter("ignore")
    out: dict[str, Any] = {"ok": False}
    t_start = time.perf_counter()
    cluster = LocalCluster(n_workers=a["workers"], threads_per_worker=1,
                           memory_limit=a["max_memory"], processes=True, host="127.0.0.1",
                           dashboard_address=None)
    client = Client(cluster)
    addresses0 = set(client.scheduler_info()["workers"])
    out["rechunk_method"] = str(dask.config.get("array.rechunk.method", None))
    try:
        t0 = time.perf_counter()
        ds = xr.open_mfdataset(a["files"], engine="netcdf4", chunks={"time": a["src_chunk"]},
                               parallel=True, combine="nested", concat_dim="time",
                               data_vars="minimal", coords="minimal", compat="override",
                               join="override")
        target = dict(zip(("time", "lat", "lon"), a["chunks"], strict=True))
        ds["tas"] = ds["tas"].chunk(target)
        enc: dict[str, Any] = {"chunks": tuple(a["chunks"]),
                               "compressors": [ZstdCodec(level=3)]}
        if a.get("shards"):
            enc["shards"] = tuple(a["shards"])
        ds.to_zarr(a["output"], mode="w", zarr_format=3, consolidated=True,
                   encoding={"tas": enc})
        out["compute_s"] = time.perf_counter() - t0
        out["ok"] = True
    except Exception as err:  # noqa: BLE001 - reported
        out["error"] = short_error(err)
    try:
        info = client.run(lambda dask_worker: {
            "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "spilled": list(getattr(dask_worker.data, "spilled_total", (0, 0)) or (0, 0))})
        out["workers"] = info
        out["restarted_workers"] = len(addresses0 - set(info))
    except Exception as err:  # noqa: BLE001 - reported
        out["workers_error"] = short_error(err)
    client.close()
    cluster.close()
    out["total_s"] = time.perf_counter() - t_start
    print(json.dumps(out))
    return 0 if out["ok"] else 1


def child_zarr_parallel(a: dict[str, Any]) -> int:
    """zarr-parallel 0.5.0 (in its own Python 3.11/3.12 venv): ZarrParallelAssembler over
    zarrport's kerchunk JSON of the archive, ``.cache(deploy_mode='dask_distributed')``.

    Its defaults cannot run here (the default whole-dataset selection takes positions as
    coordinate labels, and time_bnds' chunks differ from tas'), so it gets what its README
    suggests: ``variables={'tas': {}}``, a ``sel`` over the whole coordinate ranges, and
    ``drop_dims('bnds')`` first. It writes Zarr v2 with zarr-python's default v2 compressor,
    numcodecs Zstd(level=0), i.e. zstd at its default level 3."""
    from importlib import metadata

    import xarray as xr
    from zarr_parallel.assembler import ZarrParallelAssembler

    out: dict[str, Any] = {"ok": False, "versions": {
        n: metadata.version(n) for n in ("zarr-parallel", "zarr", "xarray", "dask",
                                         "kerchunk", "numcodecs")}}
    out["versions"]["python"] = sys.version.split()[0]
    t0 = time.perf_counter()
    try:
        ds = xr.open_dataset(a["refs"], engine="kerchunk", chunks="auto")
        pre = [{"type": "drop_dims", "drop_dims": "bnds"},
               {"type": "sel", **{d: [ds[d].values[0], ds[d].values[-1]]
                                  for d in ("time", "lat", "lon")}}]
        ds.close()
        zp = ZarrParallelAssembler(
            data_uri=a["refs"], engine="kerchunk", preprocessors=pre,
            chunks=dict(zip(("time", "lat", "lon"), a["chunks"], strict=True)),
            variables={"tas": {}}, log_level=1)
        zp.cache(cache_store=a["output"], deploy_mode="dask_distributed",
                 simultaneous_worker_limit=a["workers"], memory_limit=a["max_memory"],
                 recommend_changes=False)
        out["ok"] = True
    except BaseException as err:  # noqa: BLE001 - reported (SystemExit from input() too)
        out["error"] = short_error(err)
    out["total_s"] = time.perf_counter() - t0
    print(json.dumps(out, default=str))
    return 0 if out["ok"] else 1


# --------------------------------------------------------------------------- parts


def find_zarr_parallel_python(arg: str | None, data_dir: Path) -> str | None:
    cand = arg or os.environ.get("ZARRPORT_BENCH_ZARR_PARALLEL_PY") or str(
        data_dir / "venv-zarr-parallel" / "bin" / "python")
    return cand if Path(cand).exists() else None


def make_zarr_parallel_env(data_dir: Path) -> int:
    """A venv with zarr-parallel 0.5.0 under the data directory, from PyPI with pip, made
    with the first Python 3.12/3.11 found on PATH or under pyenv."""
    found = [shutil.which(p) for p in ZP_PYTHONS]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found += sorted((str(p) for v in ("3.12", "3.11")
                     for p in pyenv.glob(f"{v}*/bin/python{v}")), reverse=True)
    venv = data_dir / "venv-zarr-parallel"
    have = venv / "bin" / "python"
    if have.exists() and subprocess.run([str(have), "-c", "import zarr_parallel"],
                                        capture_output=True).returncode == 0:
        print(have)  # made before
        return 0
    python = next((p for p in found if p), None)
    if python is None:
        print("no Python 3.12 or 3.11 found (zarr-parallel 0.5.0 needs >=3.11,<3.13)",
              file=sys.stderr)
        return 1
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, ZARR_PARALLEL, "psutil"], check=True)
    print(venv / "bin" / "python")
    return 0


def plan_tas(repo: Path, shards: bool) -> dict[str, Any]:
    args = ["plan", str(repo), "--pattern", "timeseries", "--max-memory", MAX_MEMORY, "--json"]
    if shards:
        args.insert(-1, "--shards")
    proc = subprocess.run(zarrport_cli(*args), capture_output=True, text=True, env=_env(),
                          cwd=ROOT, check=True)
    return json.loads(proc.stdout)["variables"]["tas"]


def convert_run(repo: Path, out: Path, codec: str, shards: bool, work: Path, name: str,
                timeout: float, pattern: str = "timeseries", workers: int = WORKERS
                ) -> dict[str, Any]:
    args = ["convert", str(repo), "-o", str(out), "--pattern", pattern, "--codec", codec,
            "--max-memory", MAX_MEMORY, "--workers", str(workers), "--json", "--overwrite"]
    if shards:
        args.append("--shards")
    if out.exists():
        shutil.rmtree(out)
    run = run_monitored(zarrport_cli(*args), env=_env(), timeout=timeout,
                        logdir=work / "logs", name=name)
    run["summary"] = _json_out(run)
    run["error"] = _failure(run, timeout)
    return run


def part_throughput(ctx: dict[str, Any]) -> dict[str, Any]:
    files, work, timeout = ctx["files"], ctx["work"], ctx["timeout"]
    plan, plan_sh = ctx["plan"], ctx["plan_shards"]
    tas_bytes = ctx["inputs"]["tas_bytes"]
    rows: list[dict[str, Any]] = []

    def row(key: str, label: str, how: str, run: dict[str, Any] | None, status: str,
            **kw: Any) -> dict[str, Any]:
        r = {"key": key, "label": label, "how": how, "status": status, **kw}
        if run is not None:
            r.update(wall_s=run["wall_s"], peak_tree_rss=run["peak_tree_rss"],
                     worker_peaks=run["worker_peaks"], processes=run["processes"][:8],
                     stderr=run["stderr_path"])
        rows.append(r)
        return r

    for key, shards, p in (("zarrport", False, plan), ("zarrport-shards", True, plan_sh)):
        out = work / f"{key}.zarr"
        log(f"throughput: {key}")
        run = convert_run(ctx["repo"], out, "zstd", shards, work, f"convert-{key}", timeout)
        s = run["summary"] or {}
        status = run["error"] or check_output(out, files, p["chunks"], p["shards"])
        row(key, "**zarrport convert**" if not shards else "*zarrport convert --shards*",
            f"zarrport convert X.icechunk --pattern timeseries --codec zstd --max-memory "
            f"{MAX_MEMORY} --workers {WORKERS}{' --shards' if shards else ''}", run, status,
            reported_peaks=s.get("peak_memory_per_worker"), seconds=s.get("seconds"),
            jobs=s.get("jobs"), bytes_written=s.get("bytes_written"), output=str(out))

    # xarray + Dask
    log("throughput: xarray + dask")
    out = work / "xarray-dask.zarr"
    if out.exists():
        shutil.rmtree(out)
    args = {"files": [str(p) for p in files], "output": str(out), "chunks": plan["chunks"],
            "workers": WORKERS, "max_memory": "2GiB", "src_chunk": 365}
    run = run_monitored([sys.executable, str(Path(__file__)), "--child", "xarray",
                         json.dumps(args)], env=_env(), timeout=timeout, logdir=work / "logs",
                        name="xarray-dask")
    res = _json_out(run) or {}
    err = _failure(run, timeout)
    if res.get("error"):
        err = f"failed: {res['error']}"
    status = err or check_output(out, files, plan["chunks"], None)
    stderr = Path(run["stderr_path"]).read_text(errors="replace")
    events = {k: stderr.count(k) for k in (
        "Pausing worker", "Restarting worker", "exceeded 95% memory budget",
        "Memory use is high but worker has no data to store to disk",
        "KilledWorker", "Unmanaged memory use is high")}
    events["P2P rechunk shuffles"] = stderr.count("initialized by task")
    spilled = [w.get("spilled", [0, 0])[1] for w in (res.get("workers") or {}).values()]
    row("xarray-dask", "xarray + Dask", "xr.open_mfdataset(files, chunks={'time': 365}, "
        "parallel=True); tas.chunk(target); to_zarr(zarr_format=3, encoding={'tas': "
        "{'chunks': target, 'compressors': [ZstdCodec(level=3)]}}) on LocalCluster(2 workers "
        "x 1 thread, memory_limit='2GiB')", run, status,
        reported_peaks=sorted((w.get("ru_maxrss") for w in
                               (res.get("workers") or {}).values()), reverse=True),
        spilled_to_disk=sum(spilled) if spilled else None, dask_events=events,
        restarted_workers=res.get("restarted_workers"), compute_s=res.get("compute_s"),
        output=str(out))

    # zarr-parallel
    zp_py = ctx["zp_python"]
    out = work / "zarr-parallel.zarr"
    how = ("ZarrParallelAssembler(kerchunk JSON, engine='kerchunk', chunks=target, "
           "variables={'tas': {}}, preprocessors=[drop_dims bnds, sel whole ranges])"
           ".cache(deploy_mode='dask_distributed', simultaneous_worker_limit=2, "
           "memory_limit='2GB' (its parser knows no GiB)); Zarr v2, numcodecs Zstd(level=0) = "
           "zstd level 3")
    if zp_py is None:
        row("zarr-parallel", "zarr-parallel 0.5.0", how, None,
            "not available: no Python 3.11/3.12 environment with zarr-parallel 0.5.0 (it "
            "requires Python >=3.11,<3.13; make one with --make-zarr-parallel-env)")
    else:
        log("throughput: zarr-parallel")
        refs = work / "archive.json"
        if not refs.exists():
            subprocess.run(zarrport_cli("virtualize", *map(str, files), "-o", str(refs),
                                        "--concat-dim", "time"), env=_env(), cwd=ROOT,
                           check=True, capture_output=True)
        if out.exists():
            shutil.rmtree(out)
        args = {"refs": str(refs), "output": str(out), "chunks": plan["chunks"],
                "workers": WORKERS, "max_memory": MAX_MEMORY}
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        if ctx["size_name"] == "small":  # else dask's 'auto' keeps time in one chunk
            env["DASK_ARRAY__CHUNK_SIZE"] = "1MiB"
        run = run_monitored([zp_py, str(Path(__file__)), "--child", "zarr-parallel",
                             json.dumps(args)], env=env, timeout=timeout,
                            logdir=work / "logs", name="zarr-parallel")
        res = _json_out(run) or {}
        err = _failure(run, timeout)
        if res.get("error"):
            err = f"failed: {res['error']}"
        status = err or check_output(out, files, plan["chunks"], None)
        ctx["zp_versions"] = res.get("versions")
        row("zarr-parallel", "zarr-parallel 0.5.0", how, run, status, output=str(out))

    zp = rows[0]
    zp_ok = zp["status"] == "ok"
    for r in rows:
        r["mb_s"] = tas_bytes / MB / r["wall_s"] if r.get("wall_s") and r["status"] == "ok" \
            else None
        r["vs_zarrport"] = r["wall_s"] / zp["wall_s"] \
            if zp_ok and r.get("wall_s") and r["status"] == "ok" else None
    return {"rows": rows}


def part_storage(ctx: dict[str, Any]) -> dict[str, Any]:
    files, work = ctx["files"], ctx["work"]
    k = min(ctx["size"]["storage_years"], len(files))
    sub = files[:k]
    repo = work / f"subset-{k}y.icechunk"
    if repo.exists():
        shutil.rmtree(repo)
    subprocess.run(zarrport_cli("virtualize", *map(str, sub), "-o", str(repo),
                                "--concat-dim", "time"), env=_env(), cwd=ROOT, check=True,
                   capture_output=True)
    raw = k * 365 * ctx["size"]["nlat"] * ctx["size"]["nlon"] * 4
    workers = ctx["size"]["storage_workers"]
    rows = [{"codec": "NetCDF-4 source (zlib 4 + shuffle)", "shards": "-",
             "chunks": "1x{}x{}".format(ctx["size"]["nlat"], ctx["size"]["nlon"]),
             "tas_bytes": sum(p.stat().st_size for p in sub), "store_bytes": None,
             "alloc_bytes": None, "ratio": raw / sum(p.stat().st_size for p in sub),
             "seconds": None, "status": "ok"}]
    for codec in ctx["size"]["storage_codecs"]:
        for shards in (False, True):
            name = f"storage-{codec}{'-shards' if shards else ''}"
            log(f"storage: {name}")
            out = work / f"{name}.zarr"
            run = convert_run(repo, out, codec, shards, work, name, ctx["timeout"],
                              workers=workers)
            s = run["summary"] or {}
            tas = (s.get("variables") or {}).get("tas") or {}
            size, alloc = store_bytes(out) if out.exists() else (None, None)
            chunks = "x".join(map(str, tas.get("chunks") or [])) or "--"
            if tas.get("shards"):
                chunks += " in shards " + "x".join(map(str, tas["shards"]))
            rows.append({"codec": codec, "shards": "yes" if shards else "no", "chunks": chunks,
                         "tas_bytes": tas.get("bytes_written"), "store_bytes": size,
                         "alloc_bytes": alloc, "ratio": tas.get("compression_ratio"),
                         "seconds": run["wall_s"], "status": run["error"] or "ok"})
            if out.exists():
                shutil.rmtree(out)
    return {"years": k, "tas_raw_bytes": raw, "workers": workers, "rows": rows}


#: the read contender that opens the source archive the way most users do
XR_ARCHIVE = "xarray over the NetCDF files"


def part_reads(ctx: dict[str, Any], throughput: dict[str, Any]) -> dict[str, Any]:
    import netCDF4
    import numpy as np
    import xarray as xr

    files, repeat = ctx["files"], ctx["repeat"]
    lat, lon = ctx["size"]["point"]
    day = ctx["size"]["day"]
    outs = {r["key"]: Path(r["output"]) for r in throughput["rows"]
            if r["key"] in ("zarrport", "zarrport-shards") and r["status"] == "ok"}

    def nc_series() -> Any:
        parts = []
        for p in files:
            with netCDF4.Dataset(p) as nc:
                parts.append(np.ma.filled(nc["tas"][:, lat, lon].astype("f4"), np.nan))
        return np.concatenate(parts)

    def nc_map() -> Any:
        with netCDF4.Dataset(files[day // 365]) as nc:
            return np.ma.filled(nc["tas"][day % 365].astype("f4"), np.nan)

    def zarr_read(path: Path, what: str) -> Any:
        def run() -> Any:
            with xr.open_dataset(path, engine="zarr") as ds:
                v = ds["tas"]
                return (v[:, lat, lon] if what == "series" else v[day]).values
        return run

    def xr_archive(what: str) -> Any:
        """How most users read an archive of NetCDF files: xarray over all of them."""
        def run() -> Any:
            with xr.open_mfdataset(files, engine="netcdf4", combine="nested",
                                   concat_dim="time", data_vars="minimal", coords="minimal",
                                   compat="override", join="override") as ds:
                v = ds["tas"]
                return (v[:, lat, lon] if what == "series" else v[day]).values
        return run

    xr_how = ("xr.open_mfdataset(30 files, combine='nested', concat_dim='time', "
              "data_vars/coords='minimal', compat/join='override').tas")
    cases: dict[str, list[tuple[str, str, Any]]] = {
        "series": [("netCDF4 (source files)", "netCDF4.Dataset per file: tas[:, i, j]",
                    nc_series),
                   (XR_ARCHIVE, xr_how + "[:, i, j].values", xr_archive("series"))],
        "map": [("netCDF4 (source files)", "netCDF4.Dataset(file of that year): tas[d]",
                 nc_map),
                (XR_ARCHIVE, xr_how + "[d].values", xr_archive("map"))],
    }
    labels = {"zarrport": "**converted store**", "zarrport-shards": "*converted, --shards*",
              "spatial": "*converted, --pattern spatial*"}
    for key, path in outs.items():
        for what in ("series", "map"):
            cases[what].append((labels[key], "xr.open_dataset(OUT, engine='zarr').tas"
                                + ("[:, i, j]" if what == "series" else "[d]") + ".values",
                                zarr_read(path, what)))
    if ctx.get("spatial_out"):
        cases["map"].append((labels["spatial"], "same, on a copy converted with "
                             "--pattern spatial", zarr_read(ctx["spatial_out"], "map")))
    # context: the map read alone, files and stores opened once beforehand (open costs of
    # xarray -- metadata, decoding 10,950 times -- are then not counted)
    opened: list[Any] = []

    def nc_map_open() -> Any:
        nc = netCDF4.Dataset(files[day // 365])
        opened.append(nc)
        return lambda: np.ma.filled(nc["tas"][day % 365].astype("f4"), np.nan)

    def zarr_map_open(path: Path) -> Any:
        ds = xr.open_dataset(path, engine="zarr")
        opened.append(ds)
        return lambda: ds["tas"][day].values

    cases["map"].append(("*netCDF4, already open*", "tas[d] on the open netCDF4.Dataset",
                         nc_map_open()))
    stores = dict(outs)
    if ctx.get("spatial_out"):
        stores["spatial"] = ctx["spatial_out"]
    for key, path in stores.items():
        cases["map"].append((f"*{labels[key].strip('*')}, already open*",
                             "ds.tas[d].values on the open dataset", zarr_map_open(path)))
    result: dict[str, Any] = {"point": [lat, lon], "day": day, "rows": []}
    for what, contenders in cases.items():
        want = contenders[0][2]()
        times: dict[str, list[float]] = {c[0]: [] for c in contenders}
        status = dict.fromkeys(times, "ok")
        for rep in range(repeat + 1):  # round 0 is the warm-up
            order = contenders if rep % 2 else contenders[::-1]
            for name, _how, fn in order:
                if status[name] != "ok":
                    continue
                t0 = time.perf_counter()
                try:
                    got = fn()
                except Exception as err:  # noqa: BLE001 - reported
                    status[name] = short_error(err)
                    continue
                took = time.perf_counter() - t0
                if got.shape != want.shape or not np.array_equal(got, want, equal_nan=True):
                    status[name] = "WRONG"
                elif rep:
                    times[name].append(took)
        base = statistics.median(times[contenders[0][0]])
        open_base = times.get("*netCDF4, already open*")
        open_base = statistics.median(open_base) if open_base else None
        for name, how, _fn in contenders:
            t = times[name]
            med = statistics.median(t) if t else None
            result["rows"].append({
                "read": what, "contender": name, "how": how, "median_s": med,
                "min_s": min(t) if t else None, "max_s": max(t) if t else None, "n": len(t),
                "speedup": ((open_base if "already open" in name else base) / med)
                if med else None, "status": status[name]})
    for handle in opened:
        handle.close()
    return result


# --------------------------------------------------------------------------- report


def _time_grid_note(plan: dict[str, Any]) -> str:
    n, c = plan["shape"][0], plan["chunks"][0]
    if n % c == 0 or n <= c:
        return ""
    k = -(-n // c)
    return (f" Along time that is {k} chunks, the last holding {n % c} step(s) "
            f"({n // c} x {c} = {n // c * c:,} of {n:,}): a point series reads {k} chunks "
            f"where {-(-n // (k - 1))} steps per chunk would make it {k - 1}."
            if n % c < c // 10 else "")


def _ratio(x: float | None) -> str:
    if not x:
        return "--"
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.3f}x" if x >= 0.001 else f"{x:.1e}x"


def _num(x: float | None, spec: str) -> str:
    return "--" if x is None else format(x, spec)


def status_word(ok: bool | None) -> str:
    return "--" if ok is None else ("**PASS**" if ok else "**MISS**")


def render(res: dict[str, Any]) -> str:
    inp, size = res["inputs"], res["size"]
    plan, plan_sh = res["plan"], res["plan_shards"]
    lines = [
        "## Convert: 30-year daily archive to time-series chunks" if res["size_name"] == "full"
        else "## Convert: daily archive to time-series chunks (--size small)",
        "",
        f"Generated by `bench/bench_convert.py --size {res['size_name']}` on "
        f"{res['date']} in {res['elapsed_s']:.0f} s (zarrport at commit {res['commit']}). "
        f"Source: {inp['files']} yearly CMIP6-like NetCDF-4 files "
        f"(`zarrport.testing.samples.write_cmip6_archive`, years {size['years'][0]}-"
        f"{size['years'][-1]}, {size['nlat']}x{size['nlon']} grid, noleap), `tas` float32 "
        f"in one chunk per day (zlib 4 + shuffle): {inp['files'] * 365:,} x {size['nlat']} x "
        f"{size['nlon']} = {fmt_b(inp['tas_bytes'])} uncompressed, "
        f"{fmt_b(inp['disk_bytes'])} on disk ({inp['netcdf_ratio']:.2f}x). The values are a "
        "smooth field plus Gaussian day-to-day noise (sd 2 K) with 1 % fill points: the "
        "noise bits do not compress, so ratios are near those of real daily `tas` "
        "(lossless codecs get ~1.2-1.7x) rather than of smooth test data.",
        "",
        f"zarrport converts from the archive virtualized into Icechunk (`zarrport virtualize "
        f"files -o X.icechunk --concat-dim time`: {fmt_s(res['virtualize_s'])}, not counted "
        "in the conversion time). Target chunks of `tas` from `zarrport plan X.icechunk "
        f"--pattern timeseries --max-memory {MAX_MEMORY} --json`: "
        f"**{tuple(plan['chunks'])}** ({fmt_b(math.prod(plan['chunks']) * 4)}); with "
        f"`--shards`: inner chunks {tuple(plan_sh['chunks'])} in shards "
        f"{tuple(plan_sh['shards'] or ())}."
        + "".join(f" The plan: {r}." for r in plan["reasoning"] if "cut to" in r)
        + _time_grid_note(plan),
        "",
    ]
    # targets
    tp = {r["key"]: r for r in res["throughput"]["rows"]}
    zp = tp["zarrport"]
    alts = [tp[k] for k in ("xarray-dask", "zarr-parallel") if k in tp]
    ok_alts = [r for r in alts if r["status"] == "ok"]
    t_rows = ["### Targets", "", "| target | measured | status |", "|---|---|---|"]
    if zp["status"] != "ok":
        t_rows.append(f"| convert >= 1.5x faster than the faster of xarray+Dask and "
                      f"zarr-parallel | zarrport: {zp['status']} | **MISS** |")
    elif ok_alts:
        best = min(ok_alts, key=lambda r: r["wall_s"])
        ratio = best["wall_s"] / zp["wall_s"]
        failed = [f"{r['label']}: {r['status'].split(':')[0]}" for r in alts
                  if r["status"] != "ok"]
        t_rows.append(
            f"| convert >= 1.5x faster than the faster of xarray+Dask and zarr-parallel | "
            f"{ratio:.2f}x faster than {best['label']} ({fmt_s(best['wall_s'])} vs "
            f"{fmt_s(zp['wall_s'])})" + (f"; {'; '.join(failed)}" if failed else "")
            + f" | {status_word(ratio >= 1.5)} |")
    else:
        t_rows.append("| convert >= 1.5x faster than the faster of xarray+Dask and "
                      "zarr-parallel | neither alternative finished: " + "; ".join(
                          f"{r['label']}: {r['status']}" for r in alts) + " | **PASS** "
                      "(no alternative completed) |")
    peaks = zp.get("worker_peaks") or []
    rep = zp.get("reported_peaks") or []
    limit = 2 * 2**30
    mem_ok = bool(peaks) and max(peaks + rep) <= limit if zp["status"] == "ok" else None
    t_rows.append(
        f"| every zarrport worker within --max-memory {MAX_MEMORY} (2 GiB) | sampled "
        f"{', '.join(fmt_b(p) for p in peaks) or '--'}; reported "
        f"{', '.join(fmt_b(p) for p in rep) or '--'} | {status_word(mem_ok)} |")
    reads = res.get("reads")
    if reads:
        for what, need, label in (("series", 20, "one point's full series"),
                                  ("map", 3, "one full map (one day)")):
            rows = [x for x in reads["rows"] if x["read"] == what]
            base_nc = next((x for x in rows if x["contender"] == "netCDF4 (source files)"),
                           None)
            base_xr = next((x for x in rows if x["contender"] == XR_ARCHIVE
                            and x["median_s"]), None)
            # the copy chunked for this read: series from the time-series copy, maps from
            # the --pattern spatial copy (a time-series copy reads every chunk for a map)
            want = ("**converted store**" if what == "series"
                    else "*converted, --pattern spatial*")
            r = next((x for x in rows if x["contender"] == want and x["median_s"]), None) \
                or next((x for x in rows if x["contender"] == "**converted store**"
                         and x["median_s"]), None)
            if r is None or base_xr is None or base_nc is None or not base_nc["median_s"]:
                t_rows.append(f"| {label} >= {need}x faster than the NetCDF files | -- | "
                              "**MISS** |")
                continue
            vs_xr = base_xr["median_s"] / r["median_s"]
            vs_nc = base_nc["median_s"] / r["median_s"]
            t_rows.append(
                f"| {label} >= {need}x faster than the NetCDF files (read with xarray, as "
                f"users do) | {r['contender'].strip('*')}: {_ratio(vs_xr)} "
                f"({fmt_s(r['median_s'])} vs {fmt_s(base_xr['median_s'])} with "
                f"`xr.open_mfdataset`); {_ratio(vs_nc)} against netCDF4 reading the one "
                f"right file by hand ({fmt_s(base_nc['median_s'])}) | "
                f"{status_word(vs_xr >= need and r['status'] == 'ok')} |")
    lines += t_rows + [""]
    # throughput
    lines += [f"### Throughput: {fmt_b(inp['tas_bytes'])} of `tas`, {WORKERS} workers, "
              f"--max-memory {MAX_MEMORY}", "",
              "| contender | wall | MB/s | time / zarrport | peak RSS per worker (sampled) "
              "| reported by the tool | process tree peak | status | how |",
              "|---|---:|---:|---:|---|---|---:|---|---|"]
    for r in res["throughput"]["rows"]:
        wp = ", ".join(fmt_b(p) for p in r.get("worker_peaks") or []) or "--"
        rp = ", ".join(fmt_b(p) for p in r.get("reported_peaks") or [] if p) or "--"
        extra = ""
        if r["key"] == "xarray-dask":
            ev = {k: v for k, v in (r.get("dask_events") or {}).items() if v}
            extra = (f" (spilled {fmt_b(r.get('spilled_to_disk'))}; "
                     f"restarted workers {r.get('restarted_workers')}"
                     + (f"; log: {', '.join(f'{k} x{v}' for k, v in ev.items())}" if ev else "")
                     + ")")
        lines.append(
            f"| {r['label']} | {fmt_s(r.get('wall_s'))} | "
            f"{_num(r.get('mb_s'), '.0f')} | {_num(r.get('vs_zarrport'), '.2f')} | {wp} | {rp} | "
            f"{fmt_b(r.get('peak_tree_rss'))} | {r['status']}{extra} | {r['how']} |")
    lines += ["", "Wall time of the whole command (interpreter start, imports, pool or "
              "cluster start, metadata and consolidation included); MB/s over the "
              "uncompressed `tas` bytes. Peaks: each process's largest RSS sampled every "
              "0.2 s by the benchmark; the tool's own figure is the worker's `ru_maxrss` "
              "(zarrport's `peak_memory_per_worker`, Dask workers' via `client.run`). Every "
              "output's chunk grid and all values of its first, middle and last year are "
              "compared with the NetCDF files before its time counts.", ""]
    # storage
    st = res.get("storage")
    if st:
        lines += [f"### Storage per codec (first {st['years']} year(s): "
                  f"{fmt_b(st['tas_raw_bytes'])} of `tas`)", "",
                  "| codec | shards | chunks | tas bytes | ratio | store files | on disk "
                  "| convert wall | status |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
        for r in st["rows"]:
            lines.append(
                f"| {r['codec']} | {r['shards']} | {r['chunks']} | {fmt_b(r['tas_bytes'])} | "
                f"{_num(r['ratio'], '.3f')} | {fmt_b(r['store_bytes'])} | "
                f"{fmt_b(r['alloc_bytes'])} | {fmt_s(r['seconds'])} | {r['status']} |")
        lines += ["", f"`zarrport convert --pattern timeseries --max-memory {MAX_MEMORY} "
                  f"--workers {st['workers']} --codec C [--shards]` of the first {st['years']} "
                  "year(s) only (virtualized apart), to save time; ratio = uncompressed / "
                  "stored bytes of `tas`; 'store files' sums every file of the store, 'on "
                  "disk' their allocated blocks. Codec levels are zarrport's defaults (zstd "
                  "3, blosc-lz4 5 + shuffle, gzip 5, blosc-zstd 3 + shuffle; blosc-zstd is "
                  "context, not in the issue's list). The planner chunks the shorter subset "
                  "on its own (its whole series fits --max-memory), so the chunk shapes "
                  "differ from the full conversion's.", ""]
    # reads
    if reads:
        lines += [f"### Reads after conversion (point lat={reads['point'][0]}, "
                  f"lon={reads['point'][1]}; day {reads['day']})", "",
                  "| read | contender | median | min | max | n | speed-up vs NetCDF | values "
                  "| how |", "|---|---|---:|---:|---:|---:|---:|---|---|"]
        for r in reads["rows"]:
            sp = _ratio(r["speedup"])
            label = "point series" if r["read"] == "series" else "full map"
            lines.append(f"| {label} | {r['contender']} | {fmt_s(r['median_s'])} | "
                         f"{fmt_s(r['min_s'])} | {fmt_s(r['max_s'])} | {r['n']} | {sp} | "
                         f"{r['status']} | {r['how']} |")
        pr = plan["reads"]
        lines += ["", f"Open + read + close each time (rows marked *already open*: the read "
                  "alone, on files and stores opened beforehand, compared with netCDF4 "
                  "already open), in one process, after one warm-up "
                  f"round, the contenders interleaved; every result compared with netCDF4's "
                  "(fill value as NaN). From the plan: a point series touches "
                  f"{pr['point_series']['after']['chunks']} chunk(s) "
                  f"({fmt_b(pr['point_series']['after']['bytes'])}) after conversion against "
                  f"{pr['point_series']['before']['chunks']:,} "
                  f"({fmt_b(pr['point_series']['before']['bytes'])}) before; a full map "
                  f"{pr['full_map']['after']['chunks']} chunk(s) "
                  f"({fmt_b(pr['full_map']['after']['bytes'])}) against "
                  f"{pr['full_map']['before']['chunks']} "
                  f"({fmt_b(pr['full_map']['before']['bytes'])}). Time-series chunks make "
                  "a map read decompress every chunk of the grid: the map target needs "
                  "map-friendly chunks (`--pattern spatial`/`balanced`), not this layout. "
                  "And even those do not beat these files locally: one day is exactly one "
                  "source chunk, so the source is already laid out for maps (netCDF4 "
                  "inflates one chunk); a copy can only win a map read where each request "
                  "costs latency (object storage), not on a local disk.", ""]
    # machine, versions
    m = res["machine"]
    lines += [f"- machine: {m.get('cpu', '?')}, nproc {m['nproc']}, RAM {m['ram']}, "
              f"Python {m['python']}; load average at start {res['load_start']}, at end "
              f"{res['load_end']} (shared machine: expect noise)",
              "- versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items())]
    zpv = res.get("zp_versions")
    if zpv:
        lines.append("- zarr-parallel ran in its own venv: " + ", ".join(
            f"{k} {v}" for k, v in zpv.items()))
    for note in res.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


ZP_NOTES = [
    "zarr-parallel 0.5.0 declares Requires-Python <3.13 (the project venv is 3.13), so it "
    "runs from its own venv (`--make-zarr-parallel-env`: pip install zarr-parallel==0.5.0 "
    "into bench/.data/venv-zarr-parallel, never into the project's). Its defaults cannot "
    "convert this archive: with no selection it reads positions as coordinate labels "
    "(`sel(..., method='nearest')`) and refuses `time_bnds`' chunks, so it gets `variables="
    "{'tas': {}}` and a `sel` over the whole coordinate ranges. Then it plans every "
    "dimension one element short (the end is the last label's index), splits work only "
    "where the least common multiple of its Dask 'auto' chunks and the target chunks fits "
    "(here: nowhere, so one job for the whole array, which `.compute()`s all of `tas` in one "
    "2 GB worker), and writes regions cut along its first dimension only (the others at "
    "`slice(0, chunk)`), so chunks that split lat/lon cannot be written. `rechunker` needs "
    "zarr < 3 and is not run.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--parts", action="append",
                        choices=["throughput", "storage", "reads", "spatial"],
                        help="only these parts (repeatable; default all)")
    parser.add_argument("--out", type=Path, help="replace this benchmark's section here")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--data-dir", type=Path,
                        help="inputs (default $ZARRPORT_BENCH_DATA or bench/.data)")
    parser.add_argument("--work-dir", type=Path, help="outputs (default bench/.work/convert)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds per conversion before it is killed (default 1800)")
    parser.add_argument("--repeat", type=int, help="timed runs of each read")
    parser.add_argument("--zarr-parallel-python", help="python of a venv with zarr-parallel "
                        "(default bench/.data/venv-zarr-parallel/bin/python)")
    parser.add_argument("--make-zarr-parallel-env", action="store_true",
                        help="create that venv (Python 3.12/3.11, pip) and exit")
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="render the section from a --json file of an earlier run "
                        "(no measuring)")
    parser.add_argument("--child", choices=["xarray", "zarr-parallel"], help=argparse.SUPPRESS)
    parser.add_argument("child_args", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        fn = child_xarray if args.child == "xarray" else child_zarr_parallel
        return fn(json.loads(args.child_args))
    if args.from_json:
        section = render(json.loads(args.from_json.read_text()))
        print(section)
        if args.out:
            replace_section(args.out, BEGIN, END, section)
        return 0
    data_dir = data_root(args.data_dir)
    if args.make_zarr_parallel_env:
        return make_zarr_parallel_env(data_dir)
    parts = set(args.parts or ["throughput", "storage", "reads", "spatial"])
    if "reads" in parts:
        parts.add("throughput")  # reads use the converted stores
    size = SIZES[args.size]
    work = args.work_dir or ROOT / "bench" / ".work" / ("convert" if args.size == "full"
                                                        else "convert-small")
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    load0 = loadavg()
    log(f"inputs under {data_dir}")
    files, inputs = make_archive(size, data_dir)
    repo = work / "archive.icechunk"
    if repo.exists():
        shutil.rmtree(repo)
    log("virtualize")
    vrun = run_monitored(zarrport_cli("virtualize", *map(str, files), "-o", str(repo),
                                      "--concat-dim", "time", "--json"), env=_env(),
                         timeout=args.timeout, logdir=work / "logs", name="virtualize")
    if vrun["returncode"] != 0:
        print(vrun["stderr_tail"], file=sys.stderr)
        return 1
    ctx: dict[str, Any] = {
        "files": files, "work": work, "timeout": args.timeout, "size": size,
        "size_name": args.size, "repo": repo, "inputs": inputs,
        "repeat": args.repeat or size["repeat"],
        "plan": plan_tas(repo, False), "plan_shards": plan_tas(repo, True),
        "zp_python": find_zarr_parallel_python(args.zarr_parallel_python, data_dir)}
    res: dict[str, Any] = {
        "size_name": args.size, "size": {**size, "years": list(size["years"])},
        "inputs": inputs, "virtualize_s": vrun["wall_s"], "plan": ctx["plan"],
        "plan_shards": ctx["plan_shards"], "commit": git_commit()}
    if "throughput" in parts:
        res["throughput"] = part_throughput(ctx)
    if "spatial" in parts and "reads" in parts:
        log("spatial copy (for the map read)")
        out = work / "spatial.zarr"
        run = convert_run(repo, out, "zstd", False, work, "convert-spatial", args.timeout,
                          pattern="spatial")
        if run["error"] is None:
            ctx["spatial_out"] = out
        res["spatial"] = {"wall_s": run["wall_s"], "status": run["error"] or "ok",
                          "chunks": (((run["summary"] or {}).get("variables") or {})
                                     .get("tas") or {}).get("chunks")}
    if "reads" in parts:
        log("reads")
        res["reads"] = part_reads(ctx, res["throughput"])
    if "storage" in parts:
        res["storage"] = part_storage(ctx)
    res["zp_versions"] = ctx.get("zp_versions")
    res["notes"] = list(ZP_NOTES)
    if res.get("spatial"):
        sp = res["spatial"]
        res["notes"].append(
            f"The `--pattern spatial` copy used for the context map row: chunks "
            f"{tuple(sp['chunks'] or ())}, converted in {fmt_s(sp['wall_s'])} ({sp['status']}).")
    res.update(date=f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
               elapsed_s=time.perf_counter() - t_start, machine=machine(),
               load_start=fmt_load(load0), load_end=fmt_load(loadavg()),
               versions={**package_versions(["zarrport", "zarr", "xarray", "dask",
                                             "distributed", "numcodecs", "icechunk",
                                             "netCDF4", "numpy"]),
                         "python": sys.version.split()[0], "nproc": str(nproc())})
    if "throughput" not in res:
        print(json.dumps(res, indent=1, default=str))
        return 0
    section = render(res)
    print(section)
    if args.out:
        replace_section(args.out, BEGIN, END, section)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
