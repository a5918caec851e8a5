"""The ``zarrport`` xarray backend: ``xr.open_dataset(refs, engine="zarrport")``.

xarray imports this module (its entry point) whenever it guesses an engine for any file, so
it imports nothing heavy and changes nothing: the reader (:mod:`zarrport.references`) is
imported when a dataset is opened.
"""

from __future__ import annotations

import os
from typing import Any

from xarray.backends import BackendEntrypoint

_DECODE_FLAGS = ("mask_and_scale", "decode_times", "concat_characters", "decode_coords",
                 "use_cftime", "decode_timedelta")


class ZarrportBackendEntrypoint(BackendEntrypoint):
    """``xr.open_dataset(refs, engine="zarrport")`` for kerchunk JSON / Parquet references.

    Reads exactly what xarray's Zarr engine over fsspec's ``reference://`` reads; where the
    references use something zarrport's chunk path does not implement, the dataset is opened
    through that standard path instead (logged on the ``zarrport`` logger).
    """

    description = "kerchunk references (JSON/Parquet) read directly by zarrport"
    url = "https://github.com/zarrport"
    # named, not inferred: xarray maps decode_cf=False onto the decoders listed here, and
    # infers the list only for engines it loads by name
    open_dataset_parameters = ("filename_or_obj", *_DECODE_FLAGS, "drop_variables", "group",
                               "storage_options", "kind", "use_zarr_fill_value_as_mask")

    def open_dataset(self, filename_or_obj: Any, *, mask_and_scale: bool = True,
                     decode_times: Any = True, concat_characters: bool = True,
                     decode_coords: Any = True, drop_variables: Any = None,
                     use_cftime: Any = None, decode_timedelta: Any = None,
                     group: str | None = None, storage_options: dict | None = None,
                     kind: str | None = None,
                     use_zarr_fill_value_as_mask: bool | None = None) -> Any:
        flags = {"mask_and_scale": mask_and_scale, "decode_times": decode_times,
                 "concat_characters": concat_characters, "decode_coords": decode_coords,
                 "use_cftime": use_cftime, "decode_timedelta": decode_timedelta}
        from xarray.backends.store import StoreBackendEntrypoint

        from zarrport import storage

        url = storage.normalize_url(str(filename_or_obj))
        from zarrport.references import HandOver, ReferenceStore

        try:
            store = ReferenceStore(url, storage_options, kind, group=group,
                                   use_zarr_fill_value_as_mask=use_zarr_fill_value_as_mask)
            store.get_variables()
        except HandOver as why:
            import logging

            from zarrport.open import open_references_standard

            logging.getLogger("zarrport").info(
                "%s: read through xarray's Zarr engine (%s)", url, why)
            return open_references_standard(
                url, kind, storage_options, drop_variables=drop_variables, group=group,
                use_zarr_fill_value_as_mask=use_zarr_fill_value_as_mask, **flags)
        return StoreBackendEntrypoint().open_dataset(store, drop_variables=drop_variables,
                                                     **flags)

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """True for a local kerchunk JSON file or kerchunk Parquet directory, judged by its
        content (remote references: pass ``engine="zarrport"``)."""
        if not isinstance(filename_or_obj, str | os.PathLike):
            return False
        path = os.fspath(filename_or_obj)
        if "://" in path and not path.startswith("file://"):
            return False
        path = path.removeprefix("file://")
        try:
            if os.path.isdir(path):
                with open(os.path.join(path, ".zmetadata"), "rb") as f:
                    return b'"record_size"' in f.read(1 << 16)
            with open(path, "rb") as f:
                head = f.read(4096).lstrip()
        except OSError:
            return False
        return head[:1] == b"{" and any(
            k in head for k in (b'"refs"', b'.zgroup"', b'.zarray"'))
