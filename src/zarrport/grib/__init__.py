"""GRIB: sidecar indexes (wgrib2 ``.idx``, ECMWF ``.index``); parsers and codec to come."""

from zarrport.grib.index import IndexEntry, parse_ecmwf_index, parse_index, parse_wgrib2_idx

__all__ = ["IndexEntry", "parse_ecmwf_index", "parse_index", "parse_wgrib2_idx"]
