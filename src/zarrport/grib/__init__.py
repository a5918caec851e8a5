"""GRIB as virtual Zarr: ensemble parsers from sidecar indexes, a Zarr v3 codec, forecast
cycles in Icechunk, accumulations and exceedance probabilities (docs/grib.md)."""

from zarrport.extras import require

require("grib", what="zarrport.grib")

# the [grib] extra is checked before anything of it is imported
from zarrport.grib.ensemble import ECMWFParser, GEFSParser  # noqa: E402
from zarrport.grib.index import (  # noqa: E402
    IndexEntry,
    parse_ecmwf_index,
    parse_index,
    parse_wgrib2_idx,
)
from zarrport.grib.scan import GribParser  # noqa: E402

__all__ = [
    "ECMWFParser",
    "GEFSParser",
    "GribParser",
    "IndexEntry",
    "parse_ecmwf_index",
    "parse_index",
    "parse_wgrib2_idx",
]
