"""What both benchmarks report about the machine and the libraries, and how they shorten
errors: one copy, imported by ``bench_virtualize.py`` and ``bench_batch.py``."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path


def short_error(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(err).__name__}: {text}"


def nproc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def machine() -> dict[str, str]:
    info = {"nproc": str(nproc()), "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}
    try:
        import psutil

        info["ram"] = f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    except ImportError:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["ram"] = f"{pages / 2**30:.1f} GiB"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def package_versions(names: Iterable[str]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
