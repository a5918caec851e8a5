"""Test support that ships with zarrport (as ``zarr.testing`` and ``xarray.testing`` do):
synthetic data builders and conformance harnesses, used by zarrport's tests, benchmarks and
demo, and by anyone testing their own pipeline against zarrport. The library itself never
imports this package.

- :mod:`zarrport.testing.samples` -- CMIP6-like daily NetCDF-4 archives (any calendar,
  chunking, compression, fill fraction);
- :mod:`zarrport.testing.grib_synthetic` -- GEFS and ECMWF ensemble cycles in their real
  directory layouts, with real-format ``.idx`` / ``.index`` files (needs the [grib] extra);
- :mod:`zarrport.testing.grib_conformance` -- every message of a GRIB file read through
  zarrport compared with ecCodes, each file in its own process (needs the [grib] extra),
  and cfgrib's reading judged by the same oracle (needs cfgrib: the [bench] extra).
"""
