"""GRIB as virtual Zarr: ensemble parsers from sidecar indexes, a Zarr v3 codec, forecast
cycles in Icechunk, accumulations and exceedance probabilities (docs/grib.md)."""

from zarrport.grib.ensemble import ECMWFParser, GEFSParser
from zarrport.grib.index import IndexEntry, parse_ecmwf_index, parse_index, parse_wgrib2_idx
from zarrport.grib.scan import GribParser

__all__ = [
    "ECMWFParser",
    "GEFSParser",
    "GribParser",
    "IndexEntry",
    "parse_ecmwf_index",
    "parse_index",
    "parse_wgrib2_idx",
]
