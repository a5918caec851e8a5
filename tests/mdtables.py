"""Reading the markdown tables the benchmarks write (for their smoke tests)."""

from __future__ import annotations


def tables(section: str) -> dict[str, list[dict[str, str]]]:
    """### heading -> rows of its markdown table as {header: cell}."""
    out: dict[str, list[dict[str, str]]] = {}
    heading, header = "", None
    for line in section.splitlines():
        if line.startswith("### "):
            heading, header = line[4:], None
            out[heading] = []
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not set(line) <= set("|-: "):
                out[heading].append(dict(zip(header, cells, strict=True)))
        else:
            header = None if not line.strip() else header
    return out
