#!/usr/bin/env python
"""Benchmark: decoding GRIB messages, eccodes against gribberish against zarrport's codec.

Run from the repository root::

    .venv/bin/python bench/bench_grib_decode.py                          # prints the section
    .venv/bin/python bench/bench_grib_decode.py --out docs/benchmarks.md # ... and puts it there
    .venv/bin/python bench/bench_grib_decode.py --quick                  # small grid, few reps

Per packing (simple, complex, complex + spatial differencing, JPEG 2000, PNG, CCSDS, IEEE
32 and 64 bit) one synthetic 721 x 1440 global field (0..360, north to south, like GFS: a
smooth temperature-like field plus noise, packed with eccodes at 16 bits), once without and
once with a land-sea-mask-like bitmap, plus every message of the real sample files whose
grid zarrport maps to an array. Contenders, all in one process and interleaved repetition
by repetition (a noisy neighbour hurts them alike), each time the median:

* ``eccodes``: ``codes_new_from_message`` + ``codes_get_values`` + ``codes_release``;
* ``gribberish``: ``parse_grib_array(message, 0)``;
* ``codec``: ``zarrport.grib.codec.decode(message, layout, "auto")`` with zarrport's layout
  (south to north, -180..180: a row flip and a half-width roll for these fields), and with
  the storage-order layout (``decode only``) -- the raw decoders do not reorder, so that
  column is the like-for-like one.

The gribberish-capable packings are also timed on smaller fields (684 to 260k points):
eccodes' fixed cost per message makes gribberish the faster below some size.

Every result is checked against eccodes (NaN where the bitmap says missing): gribberish
panics, errors and wrong values are reported as such and never timed as a win; a codec
result that differs is ``WRONG``. The last two tables derive what the codec's tables
should say (``FASTEST``, ``FASTEST_WITH_BITMAP``, ``GRIBBERISH_UP_TO`` in
``src/zarrport/grib/codec.py``): gribberish only where it is exact on every message here
that :func:`~zarrport.grib.codec.gribberish_unsuitable` lets through *and* at least 10 %
faster than eccodes; the tables are set by hand from a full run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.util
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import (  # bench/_common.py
    fmt_load,
    loadavg,
    machine,
    package_versions,
    replace_section,
    short_error,
)

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("zarrport") is None:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT / "src"))

SECTION = "GRIB decoding"
BEGIN = "<!-- grib-decode:start -->"
END = "<!-- grib-decode:end -->"
DOCS = ROOT / "docs" / "benchmarks.md"
REAL = ROOT.parent / "shared" / "data" / "real" / "grib"

FULL_GRID = (721, 1440)
QUICK_GRID = (37, 72)
#: smaller fields, for where eccodes' fixed cost per message makes gribberish the faster
SWEEP_GRIDS = [(19, 36), (37, 72), (73, 144), (121, 240), (181, 360), (361, 720)]
QUICK_SWEEP_GRIDS = [(19, 36)]
#: the packings gribberish may decode (zarrport.grib.codec.GRIBBERISH_TEMPLATES)
SWEEP_PACKINGS = ("simple", "complex + spatial differencing", "JPEG 2000", "PNG", "CCSDS")
FULL_REPEAT = 11
QUICK_REPEAT = 3
#: small messages are repeated more, up to this many times, for a stable median
MAX_REPEAT = 200
#: --quick reads at most this many real messages per file, none larger than this
QUICK_REAL_MESSAGES, QUICK_REAL_POINTS = 2, 100_000
#: gribberish must beat eccodes by this factor to be named in FASTEST
FASTER_BY = 0.9

#: (label, eccodes packingType, keys set before the values)
PACKINGS: list[tuple[str, str, dict[str, int]]] = [
    ("simple", "grid_simple", {"bitsPerValue": 16}),
    ("complex", "grid_complex", {"bitsPerValue": 16}),
    ("complex + spatial differencing", "grid_complex_spatial_differencing",
     {"bitsPerValue": 16}),
    ("JPEG 2000", "grid_jpeg", {"bitsPerValue": 16}),
    ("PNG", "grid_png", {"bitsPerValue": 16}),
    ("CCSDS", "grid_ccsds", {"bitsPerValue": 16}),
    ("IEEE 32-bit", "grid_ieee", {"precision": 1}),
    ("IEEE 64-bit", "grid_ieee", {"precision": 2}),
]
TEMPLATE_NAMES = {0: "simple", 2: "complex", 3: "complex + spatial differencing",
                  4: "IEEE", 40: "JPEG 2000", 41: "PNG", 42: "CCSDS"}
CONTENDERS = ("eccodes", "gribberish", "codec", "codec (decode only)")


def log(message: str) -> None:
    print(f"[bench_grib_decode] {message}", file=sys.stderr, flush=True)


# ============================================================================================
# inputs


@dataclass
class Sample:
    """One message to decode, and what is known about it after the check."""

    row: str  # the table row it counts towards
    source: str
    message: bytes
    layout: Any  # zarrport.grib.grid.Layout
    template: int | None  # GRIB2 data representation template, None for GRIB1
    npoints: int
    #: gribberish against eccodes: exact, mismatch, panic, error, n/a (GRIB1)
    gribberish: str = ""
    #: why zarrport's codec does not hand this message to gribberish (None: it may)
    unsuitable: str | None = None
    #: the codec's result with decoder auto/eccodes/gribberish equals eccodes'
    codec_ok: bool = True
    #: "main" (all contenders) or "sweep" (eccodes, gribberish, codec in storage order)
    kind: str = "main"
    repeat: int = 0
    times: dict[str, list[float]] = field(default_factory=dict)


def synthetic_message(packing: str, settings: dict[str, int], nj: int, ni: int,
                      bitmap: bool) -> bytes:
    """A global 0..360 north-to-south field, smooth plus noise, packed by eccodes."""
    import eccodes

    h = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib2")
    try:
        for key, value in (("Ni", ni), ("Nj", nj), ("latitudeOfFirstGridPointInDegrees", 90.0),
                           ("latitudeOfLastGridPointInDegrees", -90.0),
                           ("longitudeOfFirstGridPointInDegrees", 0.0),
                           ("longitudeOfLastGridPointInDegrees", 360.0 - 360.0 / ni),
                           ("iDirectionIncrementInDegrees", 360.0 / ni),
                           ("jDirectionIncrementInDegrees", 180.0 / (nj - 1))):
            eccodes.codes_set(h, key, value)
        eccodes.codes_set(h, "packingType", packing)
        for key, value in settings.items():
            eccodes.codes_set(h, key, value)
        lat = np.radians(np.linspace(90.0, -90.0, nj))[:, None]
        lon = np.radians(np.arange(ni) * 360.0 / ni)[None, :]
        rng = np.random.default_rng(42)
        values = (273.15 + 30.0 * np.cos(lat) + 5.0 * np.sin(3 * lon) * np.cos(2 * lat)
                  + rng.normal(0.0, 0.5, (nj, ni)))
        if bitmap:  # "continents": about 30 % of the points, in large blobs
            land = np.sin(2 * lon + 1.0) * np.cos(3 * lat) + 0.5 * np.sin(5 * lon) > 0.6
            eccodes.codes_set(h, "bitmapPresent", 1)
            eccodes.codes_set(h, "missingValue", 9999.0)
            values = np.where(land, 9999.0, values)
        eccodes.codes_set_values(h, values.ravel())
        return eccodes.codes_get_message(h)
    finally:
        eccodes.codes_release(h)


def synthetic_samples(grid: tuple[int, int]) -> list[Sample]:
    import eccodes

    from zarrport.grib.codec import packing_template
    from zarrport.grib.grid import grid_from_handle

    out = []
    for bitmap in (False, True):
        for label, packing, settings in PACKINGS:
            message = synthetic_message(packing, settings, *grid, bitmap)
            h = eccodes.codes_new_from_message(message)
            try:
                layout = grid_from_handle(h).layout
            finally:
                eccodes.codes_release(h)
            row = label + (" + bitmap" if bitmap else "")
            out.append(Sample(row, "synthetic", message, layout, packing_template(message),
                              grid[0] * grid[1]))
    return out


def sweep_samples(grids: list[tuple[int, int]]) -> list[Sample]:
    """The packings gribberish may decode, without bitmap, on smaller grids (the main grid's
    messages complete the sweep)."""
    from zarrport.grib.codec import packing_template
    from zarrport.grib.grid import Layout

    out = []
    for label, packing, settings in PACKINGS:
        if label not in SWEEP_PACKINGS:
            continue
        for nj, ni in grids:
            message = synthetic_message(packing, settings, nj, ni, False)
            out.append(Sample(label, "synthetic", message, Layout(nj, ni),
                              packing_template(message), nj * ni, kind="sweep"))
    return out


def real_samples(directory: Path, quick: bool) -> list[Sample]:
    """Every message of the real files whose grid zarrport accepts (one row per packing
    and edition)."""
    import eccodes

    from zarrport.grib.codec import packing_template
    from zarrport.grib.grid import grid_from_handle, grid_key

    out: list[Sample] = []
    for path in sorted(directory.glob("*")):
        if path.suffix == ".idx" or not path.is_file():
            continue
        layouts: dict[str, Any] = {}
        taken = 0
        with path.open("rb") as f:
            while True:
                try:
                    h = eccodes.codes_grib_new_from_file(f)
                except Exception:  # noqa: BLE001 - a damaged file: keep what was read
                    break
                if h is None:
                    break
                try:
                    npoints = int(eccodes.codes_get(h, "numberOfDataPoints"))
                    if quick and (taken >= QUICK_REAL_MESSAGES or npoints > QUICK_REAL_POINTS):
                        continue
                    key = grid_key(h)
                    if key not in layouts:
                        try:
                            layouts[key] = grid_from_handle(h).layout
                        except Exception:  # noqa: BLE001 - refused grid (reduced, spectral...)
                            layouts[key] = None
                    if layouts[key] is None:
                        continue
                    message = eccodes.codes_get_message(h)
                    template = packing_template(message)
                    if template is None:
                        row = f"GRIB1 {eccodes.codes_get(h, 'packingType')}"
                    else:
                        row = f"{TEMPLATE_NAMES.get(template, '?')} (5.{template})"
                    out.append(Sample(row, path.name, message, layouts[key], template, npoints))
                    taken += 1
                finally:
                    eccodes.codes_release(h)
    return out


# ============================================================================================
# decoders


def eccodes_values(message: bytes) -> np.ndarray:
    import eccodes

    h = eccodes.codes_new_from_message(message)
    try:
        return eccodes.codes_get_values(h)
    finally:
        eccodes.codes_release(h)


def gribberish_values(message: bytes) -> np.ndarray:
    import gribberish

    return gribberish.parse_grib_array(message, 0)


def reference(message: bytes) -> np.ndarray:
    """eccodes' values in storage order, NaN where the bitmap (or missing value
    management) says missing."""
    import eccodes

    h = eccodes.codes_new_from_message(message)
    try:
        values = eccodes.codes_get_values(h)
        if eccodes.codes_get(h, "bitmapPresent"):
            values[np.asarray(eccodes.codes_get_array(h, "bitmap")) == 0] = np.nan
        elif (eccodes.codes_is_defined(h, "missingValueManagementUsed")
              and eccodes.codes_get(h, "missingValueManagementUsed")):
            values[values == eccodes.codes_get(h, "missingValue")] = np.nan
        return values
    finally:
        eccodes.codes_release(h)


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2: a Rust panic prints its backtrace there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check(sample: Sample) -> None:
    """gribberish's status and the codec's correctness for one message (untimed; also the
    warm-up of every contender)."""
    from zarrport.grib.codec import decode, gribberish_unsuitable

    ref = reference(sample.message)
    sample.unsuitable = gribberish_unsuitable(sample.message)
    if sample.template is None:
        sample.gribberish = "n/a"
    else:
        try:
            with quiet_stderr():
                got = np.asarray(gribberish_values(sample.message), dtype=np.float64).ravel()
            sample.gribberish = ("exact" if np.array_equal(got, ref, equal_nan=True)
                                 else "mismatch")
        except BaseException as e:  # noqa: BLE001 - pyo3_runtime.PanicException
            if isinstance(e, KeyboardInterrupt):
                raise
            sample.gribberish = "panic" if type(e).__name__ == "PanicException" else "error"
    want = sample.layout.apply(ref)
    with quiet_stderr():
        sample.codec_ok = all(
            np.array_equal(decode(sample.message, sample.layout, d), want, equal_nan=True)
            for d in ("auto", "eccodes", "gribberish"))


def contenders(sample: Sample) -> dict[str, Callable[[], Any]]:
    from zarrport.grib.codec import decode
    from zarrport.grib.grid import Layout

    storage = Layout(sample.layout.rows, sample.layout.cols)
    out: dict[str, Callable[[], Any]] = {
        "eccodes": lambda: eccodes_values(sample.message),
        "codec (decode only)": lambda: decode(sample.message, storage, "auto"),
    }
    if sample.kind == "main":
        out["codec"] = lambda: decode(sample.message, sample.layout, "auto")
    if sample.gribberish in ("exact", "mismatch"):
        out["gribberish"] = lambda: gribberish_values(sample.message)
    return out


def measure(samples: list[Sample], repeat: int, max_repeat: int) -> None:
    """Interleaved: every contender on every message, ``repeat`` times over (small
    synthetic messages more often, up to ``max_repeat``: they take a fraction of a
    millisecond). The contenders run in a new random order every round: none always runs
    right after the same other one (after eccodes has flushed the caches, or after a large
    free that makes the allocator hand back memory to the system)."""
    for s in samples:  # real files: many messages per row, their sum is stable enough
        s.repeat = repeat if s.source != "synthetic" else max(
            repeat, min(max_repeat, repeat * 1_000_000 // max(s.npoints, 1)))
    plan = [(s, list(contenders(s).items())) for s in samples]
    rounds = max(s.repeat for s in samples)
    shuffle = random.Random(0)
    gc.collect()
    gc.disable()
    try:
        for rep in range(rounds):
            for sample, calls in plan:
                if rep >= sample.repeat:
                    continue
                for name, fn in shuffle.sample(calls, len(calls)):
                    t0 = time.perf_counter()
                    fn()
                    sample.times.setdefault(name, []).append(time.perf_counter() - t0)
            if (rep + 1) % 10 == 0 or rep + 1 == rounds:
                log(f"round {rep + 1}/{rounds}")
    finally:
        gc.enable()


# ============================================================================================
# report


@dataclass
class Row:
    label: str
    samples: list[Sample]

    @property
    def messages(self) -> int:
        return len(self.samples)

    @property
    def points(self) -> int:
        return sum(s.npoints for s in self.samples)

    @property
    def templates(self) -> set[int | None]:
        return {s.template for s in self.samples}

    def seconds(self, name: str) -> float | None:
        """Sum over the row's messages of each message's median time."""
        if any(name not in s.times for s in self.samples):
            return None
        return sum(statistics.median(s.times[name]) for s in self.samples)

    def gribberish(self) -> str:
        counts: dict[str, int] = {}
        for s in self.samples:
            counts[s.gribberish] = counts.get(s.gribberish, 0) + 1
        if len(counts) == 1:
            return next(iter(counts))
        return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))

    def auto_uses(self) -> str:
        from zarrport.grib import codec

        names = {"eccodes" if s.unsuitable else codec._fastest(codec.packing(s.message),
                                                               s.npoints)
                 for s in self.samples}
        return "/".join(sorted(names))


def rows_of(samples: list[Sample]) -> list[Row]:
    rows: dict[str, list[Sample]] = {}
    for s in samples:
        rows.setdefault(s.row, []).append(s)
    return [Row(label, group) for label, group in rows.items()]


def _rate(row: Row, name: str) -> str:
    secs = row.seconds(name)
    if secs is None:
        return "--"
    return f"{row.messages / secs:,.1f} msg/s · {row.points * 8 / secs / 1e6:,.0f} MB/s"


def _ratio(row: Row, name: str) -> tuple[float | None, str]:
    """Faster raw decoder's time / the codec's (>= 1: the codec is at least as fast).
    A raw gribberish that is wrong on any message of the row does not count."""
    raw = [("eccodes", row.seconds("eccodes"))]
    if all(s.gribberish == "exact" for s in row.samples):
        raw.append(("gribberish", row.seconds("gribberish")))
    best = min(((n, t) for n, t in raw if t), key=lambda nt: nt[1], default=None)
    codec = row.seconds(name)
    if best is None or not codec:
        return None, ""
    return best[1] / codec, best[0]


def table(rows: list[Row], *, real: bool) -> list[str]:
    head = ("| packing | " + ("messages (files) | " if real else "")
            + "eccodes | gribberish | gribberish result | codec `auto` | codec `auto`, "
            "decode only | `auto` uses | codec / faster | decode only / faster |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        files = len({s.source for s in row.samples})
        ratio, best = _ratio(row, "codec")
        ratio_only, _ = _ratio(row, "codec (decode only)")
        ok = all(s.codec_ok for s in row.samples)
        cells = [row.label]
        if real:
            cells.append(f"{row.messages} ({files})")
        grib = _rate(row, "gribberish")
        if row.gribberish() != "exact" and grib != "--":
            grib += " (wrong)"
        cells += [_rate(row, "eccodes"), grib, row.gribberish(),
                  _rate(row, "codec") + ("" if ok else " **WRONG**"),
                  _rate(row, "codec (decode only)"), row.auto_uses(),
                  f"{ratio:.2f} ({best})" if ratio else "--",
                  f"{ratio_only:.2f}" if ratio_only else "--"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def suggested_fastest(samples: list[Sample]) -> dict[tuple[int, bool], tuple[str, str]]:
    """(template, bitmap) -> (decoder, why): speed from the synthetic field with or without
    bitmap, exactness from every message of the template gribberish would get."""
    out: dict[tuple[int, bool], tuple[str, str]] = {}
    templates = sorted({s.template for s in samples if s.template is not None})
    for t in templates:
        usable = [s for s in samples if s.template == t and s.unsuitable is None]
        wrong = [s for s in usable if s.gribberish != "exact"]
        for bitmap in (False, True):
            if not usable:
                out[t, bitmap] = ("eccodes", "gribberish excluded on every message "
                                             "(gribberish_unsuitable)")
                continue
            if wrong:
                kinds = sorted({s.gribberish for s in wrong})
                out[t, bitmap] = ("eccodes", f"gribberish {'/'.join(kinds)} on {len(wrong)} of "
                                             f"{len(usable)} messages it would get")
                continue
            synth = [s for s in usable if s.source == "synthetic" and s.kind == "main"
                     and s.row.endswith(" + bitmap") == bitmap]
            ecc = sum(_median(s, "eccodes") or 0.0 for s in synth)
            grb = sum(_median(s, "gribberish") or 0.0 for s in synth)
            if not (synth and ecc and grb):
                out[t, bitmap] = ("eccodes", "not measured")
            elif grb <= FASTER_BY * ecc:
                out[t, bitmap] = ("gribberish", f"exact; {ecc / grb:.2f}x eccodes' speed")
            else:
                out[t, bitmap] = ("eccodes", "gribberish exact but not measurably faster "
                                             f"({ecc / grb:.2f}x eccodes' speed)")
    return out


def _median(s: Sample, name: str) -> float | None:
    return statistics.median(s.times[name]) if s.times.get(name) else None


def sweep_series(sweep: list[Sample], synth: list[Sample]) -> dict[str, list[Sample]]:
    """packing -> its samples by size, the main grid's (no bitmap) last."""
    out: dict[str, list[Sample]] = {}
    for label in SWEEP_PACKINGS:
        series = sorted((s for s in sweep if s.row == label), key=lambda s: s.npoints)
        out[label] = series + [s for s in synth if s.row == label]
    return out


def gribberish_wins(s: Sample) -> bool:
    e, g = _median(s, "eccodes"), _median(s, "gribberish")
    return (s.unsuitable is None and s.gribberish == "exact" and e is not None
            and g is not None and g <= FASTER_BY * e)


def suggested_up_to(series: dict[str, list[Sample]]) -> dict[int, int | None]:
    """template -> the largest field size up to which gribberish wins at every measured
    size (0: not even the smallest; None: every size, the main grid included)."""
    out: dict[int, int | None] = {}
    for samples in series.values():
        if not samples or samples[0].template is None:
            continue
        limit: int | None = 0
        for s in samples:
            if not gribberish_wins(s):
                break
            limit = s.npoints
        else:
            limit = None
        out[samples[0].template] = limit
    return out


def sweep_table(series: dict[str, list[Sample]]) -> list[str]:
    from zarrport.grib.codec import GRIBBERISH_UP_TO

    sizes = [s.npoints for s in next(iter(series.values()))]
    head = ("| packing | " + " | ".join(f"{n:,} points" for n in sizes)
            + " | gribberish faster up to | `GRIBBERISH_UP_TO` now | codec `auto` / faster, "
            "worst size |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    suggested = suggested_up_to(series)
    for label, samples in series.items():
        cells = [f"{label} (5.{samples[0].template})"]
        worst = None
        for s in samples:
            e, g = _median(s, "eccodes"), _median(s, "gribberish")
            c = _median(s, "codec (decode only)")
            if e is None:
                cells.append("--")
                continue
            text = f"{e * 1e3:.2f} / " + (f"{g * 1e3:.2f} ms" if g else "-- ms")
            if g and s.gribberish != "exact":
                text += " (wrong)"
            elif g:
                text += f" ({e / g:.1f}x)"
            cells.append(text)
            best = min(t for t in (e, g if s.gribberish == "exact" else None) if t)
            if c:
                worst = best / c if worst is None else min(worst, best / c)
        limit = suggested.get(samples[0].template)
        now = GRIBBERISH_UP_TO.get(samples[0].template, 0)
        cells.append("every size" if limit is None else f"{limit:,}" if limit else "never")
        flag = "" if limit is None or limit == now else " **(differs)**"
        cells.append(f"{now:,}{flag}")
        cells.append(f"{worst:.2f}" if worst else "--")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def summary(synth: list[Sample], real: list[Sample]) -> list[str]:
    """The target (codec at least as fast as the faster raw decoder), over the rows."""
    lines = ["### Target: the codec at least as fast as the faster raw decoder", "",
             "| rows | codec, decode only / faster: worst, median | codec with zarrport's "
             "layout / faster: worst, median |", "|---|---|---|"]
    for label, samples in ((f"synthetic ({len(rows_of(synth))})", synth),
                           (f"real files ({len(rows_of(real))})", real)):
        rows = rows_of(samples)
        if not rows:
            continue
        cells = []
        for name in ("codec (decode only)", "codec"):
            ratios = sorted(r for r in (_ratio(row, name)[0] for row in rows) if r)
            cells.append(f"{ratios[0]:.2f}, {statistics.median(ratios):.2f}" if ratios
                         else "--")
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    return lines


def render(synth: list[Sample], real: list[Sample], sweep: list[Sample], *, label: str,
           grid: tuple[int, int], repeat: int, started: dt.datetime, elapsed: float,
           load: tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    import eccodes

    from zarrport.grib.codec import FASTEST, FASTEST_WITH_BITMAP

    m = machine()
    v = package_versions(("zarrport", "eccodes", "eccodeslib", "gribberish", "numpy", "zarr"))
    v["ecCodes library"] = eccodes.codes_get_api_version()
    lines = [
        f"## {SECTION}",
        "",
        f"Generated by `bench/bench_grib_decode.py` ({label}) on {started:%Y-%m-%d %H:%M} UTC "
        f"in {elapsed:.0f} s. Median of {repeat} interleaved repetitions per message (small "
        f"synthetic messages up to {max(s.repeat for s in synth + sweep)}), all "
        "contenders in one process. A cell gives messages per second and decoded float64 "
        "MB per second. **Figures are from a shared machine**: compare ratios from the same "
        "run rather than absolute times across runs.",
        "",
        f"- machine: {m.get('cpu', '?')}, nproc {m['nproc']} (shared), RAM {m['ram']}, "
        f"{m['os']}, Python {m['python']}",
        f"- load average (1, 5, 15 min) at start {fmt_load(load[0])}, at end "
        f"{fmt_load(load[1])}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        "- eccodes = `codes_new_from_message` + `codes_get_values` + `codes_release`; "
        "gribberish = `parse_grib_array(message, 0)`; codec = "
        "`zarrport.grib.codec.decode(message, layout, \"auto\")` with zarrport's layout "
        "(south to north, -180..180: a row flip and, for the synthetic 0..360 fields, a "
        "half-width roll) and, *decode only*, with the storage-order layout -- the raw "
        "decoders do not reorder, so that is the like-for-like column.",
        "- codec / faster = time of the faster raw decoder (gribberish only if exact on "
        "every message of the row) / the codec's time: >= 1.0 means the codec is at least "
        "as fast. Every codec result (decoder auto, eccodes and gribberish) is checked equal "
        "to eccodes' values, NaN where the bitmap says missing.",
        "",
        *summary(synth, real),
        "",
        f"### Synthetic {grid[0]} x {grid[1]} fields (16 bits; IEEE as such)",
        "",
        *table(rows_of(synth), real=False),
    ]
    if real:
        files = len({s.source for s in real})
        lines += [
            "",
            f"### Real sample files ({len(real)} messages from {files} files, every message "
            "on a grid zarrport maps to an array)",
            "",
            *table(rows_of(real), real=True),
        ]
    suggested = suggested_fastest(synth + real)
    lines += [
        "",
        "### Decoder per packing (`FASTEST` in `src/zarrport/grib/codec.py`)",
        "",
        "gribberish is named only where it is exact on every message here that "
        "`gribberish_unsuitable` lets through and at least "
        f"{round((1 / FASTER_BY - 1) * 100)} % faster than eccodes on the synthetic field "
        "(with a bitmap: `FASTEST_WITH_BITMAP`).",
        "",
        "| template | packing | bitmap | suggested | why | table now |",
        "|---|---|---|---|---|---|",
    ]
    for (t, bitmap), (dec, why) in suggested.items():
        now = (FASTEST_WITH_BITMAP.get(t) if bitmap else None) or FASTEST.get(t, "eccodes")
        flag = "" if now == dec else " **(differs)**"
        lines.append(f"| 5.{t} | {TEMPLATE_NAMES.get(t, '?')} | {'yes' if bitmap else 'no'} | "
                     f"{dec} | {why} | {now}{flag} |")
    series = sweep_series(sweep, synth)
    lines += [
        "",
        "### Small fields (`GRIBBERISH_UP_TO` in `src/zarrport/grib/codec.py`)",
        "",
        "eccodes spends a fixed time on every message before it decodes a value, gribberish "
        "almost none: on small fields gribberish wins even where eccodes decodes faster per "
        "value. Per packing and field size (synthetic, no bitmap, the largest is the grid "
        "above): median eccodes / gribberish time per message, and gribberish's speed "
        "relative to eccodes. `auto` sends a field to gribberish when it has at most "
        "`GRIBBERISH_UP_TO[template]` points; the suggestion is the largest size up to which "
        f"gribberish was exact and at least {round((1 / FASTER_BY - 1) * 100)} % faster at "
        "every size. The last column is the codec's `auto` (storage order) against the "
        "faster raw decoder, at its worst size.",
        "",
        *sweep_table(series),
    ]
    problems = sorted({(s.source, s.row, s.gribberish) for s in synth + real
                       if s.gribberish in ("mismatch", "panic", "error")})
    if problems:
        lines += ["", "gribberish failures (always decoded by eccodes in the codec):", ""]
        lines += [f"- {src}: {row}: {kind}" for src, row, kind in problems]
    return "\n".join(lines) + "\n"








def write_section(section: str, path: Path) -> None:
    """Put ``section`` between the markers in ``path`` (appended the first time)."""
    replace_section(path, BEGIN, END, section)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_GRID[0]}x{QUICK_GRID[1]} grid, {QUICK_REPEAT} "
                             "repetitions, a few small real messages: a smoke check")
    parser.add_argument("--repeat", type=int, help=f"repetitions (default {FULL_REPEAT})")
    parser.add_argument("--real-dir", type=Path, default=REAL,
                        help="real GRIB sample files (default ../shared/data/real/grib)")
    parser.add_argument("--no-real", action="store_true", help="synthetic fields only")
    parser.add_argument("--out", type=Path, help="replace (or append) the section between "
                        f"{BEGIN} and {END} in this file, e.g. docs/benchmarks.md")
    args = parser.parse_args(argv)

    grid = QUICK_GRID if args.quick else FULL_GRID
    repeat = args.repeat or (QUICK_REPEAT if args.quick else FULL_REPEAT)
    started, t0, load0 = dt.datetime.now(dt.UTC), time.perf_counter(), loadavg()
    log(f"making the synthetic {grid[0]}x{grid[1]} messages")
    synth = synthetic_samples(grid)
    sweep = sweep_samples(QUICK_SWEEP_GRIDS if args.quick else SWEEP_GRIDS)
    real: list[Sample] = []
    if not args.no_real and args.real_dir.is_dir():
        real = real_samples(args.real_dir, args.quick)
        log(f"{len(real)} real messages")
    failed = []
    for s in synth + sweep + real:
        try:
            check(s)
        except Exception as e:  # noqa: BLE001 - reported, not timed
            log(f"check failed for {s.source} {s.row}: {short_error(e)}")
            failed.append(s)
    synth = [s for s in synth if s not in failed]
    sweep = [s for s in sweep if s not in failed]
    real = [s for s in real if s not in failed]
    measure(synth + sweep + real, repeat, repeat if args.quick else MAX_REPEAT)
    section = render(synth, real, sweep, label="--quick" if args.quick else "full run", grid=grid,
                     repeat=repeat, started=started, elapsed=time.perf_counter() - t0,
                     load=(load0, loadavg()))
    if args.out:
        write_section(section, args.out)
        log(f"section written to {args.out}")
    print(section, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
