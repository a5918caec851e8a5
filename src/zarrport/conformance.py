"""Conformance over real files: every file either reads back identical to netCDF4's decoding
through every output format, or is refused with a typed error naming the reason.

Used by ``tests/test_conformance.py`` and ``scripts/conformance.py`` (which writes the table to
``docs/conformance.md``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

FORMATS = ("json", "parquet", "icechunk")


@dataclass
class Outcome:
    file: str
    format: str
    outcome: str  # "identical", "refused", "MISMATCH", "CRASH"
    reason: str = ""

    @property
    def acceptable(self) -> bool:
        return self.outcome in ("identical", "refused")


def check_file(path: Path, fmt: str, workdir: Path) -> Outcome:
    import zarrport
    from zarrport.errors import ZarrportError
    from zarrport.verify import verify

    out = workdir / f"{path.name}.{fmt}"
    try:
        result = zarrport.virtualize(str(path), str(out), overwrite=True)
    except ZarrportError as err:
        return Outcome(path.name, fmt, "refused", f"{type(err).__name__}: {_short(err, path)}")
    except Exception as err:  # a crash is a conformance failure, not a refusal
        return Outcome(path.name, fmt, "CRASH", f"{type(err).__name__}: {err}")
    try:
        report = verify(str(out))
    except Exception as err:
        return Outcome(path.name, fmt, "CRASH", f"verify: {type(err).__name__}: {err}")
    if report.ok:
        notes = sorted({n.removeprefix("inlined: ") for n in result.notes.values()
                        if n != "inlined: small"})
        return Outcome(path.name, fmt, "identical", "; ".join(notes))
    detail = "; ".join(f"{p.kind} {p.item}: {p.detail}" for p in report.problems[:3])
    return Outcome(path.name, fmt, "MISMATCH", detail)


def _short(err: Exception, path: Path) -> str:
    text = str(err)
    return text.replace(path.as_uri() + ": ", "").replace(str(path) + ": ", "")


def run(paths: Iterable[Path], formats: Iterable[str] = FORMATS) -> list[Outcome]:
    out: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="zarrport-conformance-") as tmp:
        for path in sorted(paths):
            for fmt in formats:
                out.append(check_file(path, fmt, Path(tmp)))
    return out


def real_files(root: Path) -> list[Path]:
    return sorted(p for sub in ("nc4", "nc3") for p in (root / sub).glob("*") if p.is_file())


def to_markdown(outcomes: list[Outcome], root: Path) -> str:
    by_file: dict[str, dict[str, Outcome]] = {}
    for o in outcomes:
        by_file.setdefault(o.file, {})[o.format] = o
    lines = [
        "# Conformance over real files",
        "",
        "Every NetCDF-4/HDF5 and NetCDF-3 file in `shared/data/real/nc4` and `nc3` (written by",
        "other projects, taken byte for byte) is virtualized into each output format and",
        "compared by `zarrport verify` with the file read by netCDF4 (values with NaN",
        "positions, decoded times, attributes). kerchunk JSON and Parquet are read twice, by",
        "zarrport's reader and by the standard one (xarray's Zarr engine over fsspec's",
        "`reference://`), and both must be identical; Icechunk is read through the Icechunk",
        "store and xarray's Zarr engine. Each cell is either **identical** or **refused** with",
        "a typed error; MISMATCH or CRASH would be a bug.",
        "",
        "Regenerate with `make conformance` (`scripts/conformance.py`).",
        "",
        "Known, documented differences that the comparison allows (they are properties of Zarr",
        "and xarray, not of the references):",
        "",
        "- CF-packed variables whose `scale_factor`/`add_offset` are float32 decode to float64",
        "  through any Zarr store (JSON attributes have no float32); the values agree to float32",
        "  precision.",
        "- Attributes whose names start with `_nc` are dropped by xarray's Zarr backend from",
        "  Zarr v2 arrays and from groups (pydata/xarray#6420, xarray 2026.9.0).",
        "- Non-finite float attributes are stored as the strings \"NaN\"/\"Infinity\" in Zarr v3",
        "  (Icechunk), which requires strict JSON.",
        "",
        "| file | " + " | ".join(FORMATS) + " | reason / notes |",
        "|---|" + "---|" * len(FORMATS) + "---|",
    ]
    counts: dict[str, int] = {}
    for name in sorted(by_file):
        cells = by_file[name]
        reasons = {o.reason for o in cells.values() if o.reason}
        lines.append(
            f"| `{name}` | " + " | ".join(cells[f].outcome if f in cells else "-"
                                          for f in FORMATS)
            + f" | {'; '.join(sorted(reasons)).replace('|', '/')} |"
        )
        for o in cells.values():
            counts[o.outcome] = counts.get(o.outcome, 0) + 1
    lines += ["", "Totals (file x format): " + ", ".join(f"{k}: {v}" for k, v in
                                                         sorted(counts.items())), ""]
    return "\n".join(lines)
