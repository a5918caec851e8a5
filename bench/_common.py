"""What every benchmark reports about the machine and the libraries, how they shorten
errors and how they put their section into docs/benchmarks.md: one copy, imported by
``bench_virtualize.py``, ``bench_batch.py``, ``bench_grib.py``, ``bench_grib_decode.py``,
``bench_convert.py`` and ``bench_serve.py``."""

from __future__ import annotations

import os
import platform
import re
import subprocess
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


def loadavg() -> tuple[float, ...]:
    try:
        return os.getloadavg()
    except OSError:
        return ()


def fmt_load(values: tuple[float, ...]) -> str:
    return ", ".join(f"{x:.2f}" for x in values) if values else "?"


def replace_section(path: Path, begin: str, end: str, section: str) -> None:
    """Put ``section`` between the markers ``begin``/``end`` in ``path`` (markers and
    section appended the first time); the rest of the file is left alone."""
    text = path.read_text() if path.exists() else ""
    block = f"{begin}\n\n{section.rstrip()}\n\n{end}\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def git_commit() -> str:
    """The checkout measured: short commit, ``+dirty`` when ``src/`` has changes."""
    root = str(Path(__file__).resolve().parents[1])
    try:
        out = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "src"],
                               capture_output=True, text=True).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"
