"""The human form of a :class:`SourceReport`: a header, one table row per variable, then the
warnings, the reason for each verdict and the summary."""

from __future__ import annotations

from zarrport.inspect.guidelines import human_bytes
from zarrport.inspect.report import VERDICTS, SourceReport, VariableReport

_COLUMNS = ("name", "shape", "dtype", "layout", "chunks", "MB/chunk", "#chunks", "filters",
            "verdict")


def _shape(t: tuple[int, ...] | None) -> str:
    if t is None:
        return "-"
    return "(" + ", ".join(str(x) for x in t) + ("," if len(t) == 1 else "") + ")"


def _mb(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.3g}" if x < 1000 else f"{x:.0f}"




def _count(v: VariableReport) -> str:
    if v.chunks_total is None:
        return "-"
    alloc = "?" if v.chunks_allocated is None else str(v.chunks_allocated)
    return f"{alloc}/{v.chunks_total}"


def _filters(v: VariableReport) -> str:
    if not v.filters:
        return "-"
    return ",".join(f.name + ("" if f.has_zarr_codec else "!") for f in v.filters)


def _row(v: VariableReport) -> tuple[str, ...]:
    return (v.name, _shape(v.shape), v.dtype, v.layout, _shape(v.chunks), _mb(v.chunk_mb),
            _count(v), _filters(v), v.verdict)


def render_text(report: SourceReport) -> str:
    """The report as the ``zarrport inspect`` table (plain text, ends with a newline)."""
    lines = [report.url]
    lines.append(f"  format   {report.format}: {report.format_version}")
    lines.append(f"  size     {human_bytes(report.size)} ({report.size} bytes), "
                 f"{report.global_attr_count} global attributes"
                 + (f", group {report.group}" if report.group else ""))
    if report.grib is not None:
        msgs = report.grib["messages"]
        n = len({m["offset"] for m in msgs})
        fields = f" ({len(msgs)} fields)" if len(msgs) != n else ""
        lines.append(f"  messages {n}{fields}, decoded by the {report.grib['codec']} codec")
        for g in report.grib["grids"]:
            shape = " x ".join(f"{d}={n}" for d, n in zip(g["dims"], g["shape"], strict=True))
            where = ""
            if g["latitude"] and g["longitude"]:
                where = (f", latitude {g['latitude'][0]:g}..{g['latitude'][1]:g}, longitude "
                         f"{g['longitude'][0]:g}..{g['longitude'][1]:g}")
            lines.append(f"  grid     {g['grid_type']}: {shape}{where}")
    if report.dims:
        dims = ", ".join(f"{k}={n}" + (" (unlimited)" if k in report.unlimited_dims else "")
                         for k, n in report.dims.items())
        lines.append(f"  dims     {dims}")
    lines.append("")

    if report.variables:
        rows = [_COLUMNS] + [_row(v) for v in report.variables]
        widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if any(not f.has_zarr_codec for v in report.variables for f in v.filters):
            lines.append("(filter! = no Zarr codec for this HDF5 filter)")
    else:
        lines.append("(no variables)")

    warned = [v for v in report.variables if v.warnings]
    if warned:
        lines += ["", "warnings:"]
        for v in warned:
            for w in v.warnings:
                lines.append(f"  {v.name}: [{w.code}] {w.message}")

    if report.variables:
        lines += ["", "verdicts:"]
        for v in report.variables:
            lines.append(f"  {v.name}: {v.verdict} - {v.reason}")

    if report.problems:
        lines += ["", "file problems:"]
        lines += [f"  {p}" for p in report.problems]

    s = report.summary
    counts = ", ".join(f"{s['counts'][k]} {k}" for k in VERDICTS)
    lines += ["", f"summary: {s['verdict']} ({counts})", f"  {s['reason']}"]
    return "\n".join(lines) + "\n"
