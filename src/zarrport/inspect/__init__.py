"""Pre-flight check of one source: what ``zarrport virtualize`` will do with each variable.

>>> report = inspect_source("data/tas_day_2015.nc")          # doctest: +SKIP
>>> report.summary["verdict"], [v.verdict for v in report.variables]  # doctest: +SKIP

See ``docs/inspect.md`` for the fields, the guideline thresholds and the verdicts.
"""

from zarrport.inspect.guidelines import (
    LARGE_SPATIAL_CHUNK,
    TINY_CHUNK_BYTES,
    TINY_CHUNK_COUNT,
    GuidelineWarning,
)
from zarrport.inspect.report import (
    CONVERT,
    INLINE,
    VERDICTS,
    VIRTUALIZE,
    VIRTUALIZE_SUBCHUNKED,
    FilterReport,
    SourceReport,
    VariableReport,
    inspect_source,
)
from zarrport.inspect.text import render_text

__all__ = [
    "CONVERT",
    "INLINE",
    "LARGE_SPATIAL_CHUNK",
    "TINY_CHUNK_BYTES",
    "TINY_CHUNK_COUNT",
    "VERDICTS",
    "VIRTUALIZE",
    "VIRTUALIZE_SUBCHUNKED",
    "FilterReport",
    "GuidelineWarning",
    "SourceReport",
    "VariableReport",
    "inspect_source",
    "render_text",
]
