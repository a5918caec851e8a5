"""Optional parts of zarrport and the one-line error a command gives when one is missing.

``pip install zarrport`` virtualizes and opens NetCDF; the extras add the rest (pyproject's
``[project.optional-dependencies]``)::

    [grib]   GRIB parsers, the zarrport.grib codec, forecast cycles (eccodes, gribberish, dask)
    [dask]   batch runs on a Dask cluster (distributed)
    [serve]  the HTTP service (FastAPI, uvicorn)
    [cloud]  S3 and Azure Blob through fsspec (s3fs, adlfs)
    [analysis] normals and regional means on Dask (distributed, flox, shapely, geopandas,
             matplotlib)
    [all]    everything, with the test and benchmark tools
"""

from __future__ import annotations

import importlib

from zarrport.errors import MissingExtraError

#: extra -> (what it is for, modules it brings)
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "grib": ("GRIB", ("eccodes", "gribberish", "dask")),
    "dask": ("a Dask cluster", ("distributed",)),
    "serve": ("the HTTP service", ("fastapi", "uvicorn")),
    "cloud": ("S3 and Azure Blob", ("s3fs", "adlfs")),
    "analysis": ("analyses and pipelines",
                 ("distributed", "flox", "shapely", "geopandas", "matplotlib")),
}


def require(extra: str, *modules: str, what: str | None = None) -> None:
    """Import ``modules`` (default: all of ``extra``'s); if one is missing, raise
    :class:`MissingExtraError` naming the extra to install."""
    purpose, default = EXTRAS[extra]
    for name in modules or default:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise MissingExtraError(
                f"{what or purpose} needs zarrport's [{extra}] extra ({name} is not "
                f"installed): pip install 'zarrport[{extra}]'") from err
