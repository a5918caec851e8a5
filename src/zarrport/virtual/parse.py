"""Open one source, recognise its format from its bytes, and build its VirtualDataset."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from zarrport import storage
from zarrport.errors import (
    CorruptSourceError,
    InvalidArgumentError,
    StorageError,
    UnrecognizedFormatError,
    ZarrportError,
)
from zarrport.virtual.model import MISSING, VirtualDataset

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


@dataclass(frozen=True)
class ParseOptions:
    group: str | None = None
    #: target size of byte-range sub-chunks of uncompressed contiguous variables
    subchunk_bytes: int = 16 * 2**20
    #: referenceable variables up to this size are inlined anyway
    inline_bytes: int = 64 * 2**10
    #: variables that cannot be referenced are inlined up to this size, refused above
    inline_limit_bytes: int = 4 * 2**20
    drop_variables: tuple[str, ...] = field(default_factory=tuple)
    #: "raise" refuses a file with a variable that cannot be virtualized; "drop" skips it
    on_unsupported: str = "raise"


#: how far into a file the first GRIB message may start (WMO bulletin headers before it)
GRIB_HEAD = 1024

#: smallest ``subchunk_mb`` accepted (10 KiB): below it a contiguous variable becomes so many
#: byte ranges that the references outgrow the data they point to (each reference costs
#: ~50-100 bytes in JSON) and every read turns into thousands of requests
MIN_SUBCHUNK_MB = 0.01


def check_sizes(subchunk_mb: float, inline_limit_mb: float) -> None:
    """Refuse sub-chunk / inline-limit sizes that cannot be used (not a finite number, a
    sub-chunk below :data:`MIN_SUBCHUNK_MB`, a negative inline limit)."""
    import math

    def number(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)

    if not number(subchunk_mb) or subchunk_mb < MIN_SUBCHUNK_MB:
        raise InvalidArgumentError(
            f"--subchunk-mb must be a finite number of at least {MIN_SUBCHUNK_MB} (MB), "
            f"not {subchunk_mb!r}")
    if not number(inline_limit_mb) or inline_limit_mb < 0:
        raise InvalidArgumentError(
            f"--inline-limit-mb must be a finite number >= 0 (MB), not {inline_limit_mb!r}")


def sniff(head: bytes) -> str:
    """'hdf5', 'netcdf3', 'grib' or '' from a file's first bytes (HDF5 may sit after a user
    block; a GRIB message after a WMO bulletin header of up to :data:`GRIB_HEAD` bytes)."""
    if head[:8] == HDF5_MAGIC:
        return "hdf5"
    if head[:3] == b"CDF" and head[3:4] in (b"\x01", b"\x02", b"\x05"):
        return "netcdf3"
    for off in (512, 1024, 2048, 4096):
        if head[off : off + 8] == HDF5_MAGIC:
            return "hdf5"
    i = head.find(b"GRIB", 0, GRIB_HEAD + 4)
    if i >= 0 and i + 8 <= len(head) and head[i + 7] in (1, 2):  # octet 8: the edition
        return "grib"
    return ""


@contextlib.contextmanager
def open_source(
    url: str, storage_options: dict | None = None
) -> Iterator[tuple[Any, BinaryIO, storage.SourceStat]]:
    """(path-or-file for h5py, binary file, stat) of one source."""
    st = storage.stat(url, storage_options)
    fs, path = storage.filesystem(url, storage_options)
    if url.startswith("file://"):
        with open(path, "rb") as f:
            yield path, f, st
    else:
        # fsspec filesystems are cached per process with their listings: a file rewritten
        # since an earlier listing would be opened with its old ETag and fail (s3fs: "... and
        # Etag ... no longer exists"; fsspec/s3fs#851, checked with s3fs 2026.9.0)
        fs.invalidate_cache(path)
        with fs.open(path, "rb", block_size=2 * 2**20, cache_type="blockcache") as raw:
            f = _RecordingFile(raw)
            yield f, f, st  # type: ignore[misc]


class _RecordingFile:
    """A remote file object that remembers the I/O error of a failed read.

    h5py (3.16) re-raises the file object's error, but timeouts and connection resets are
    OSErrors, which the parsers' damaged-file handling would record as a corrupt source and
    never retry. With the I/O error remembered, :func:`recognised_source` tells them apart
    and reports it as the storage error it is.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.io_error: BaseException | None = None

    def read(self, *args: Any) -> bytes:
        try:
            return self._raw.read(*args)
        except Exception as err:
            self.io_error = err
            raise

    def readinto(self, buffer: Any) -> int:
        try:
            return self._raw.readinto(buffer)
        except Exception as err:
            self.io_error = err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


@contextlib.contextmanager
def recognised_source(
    url: str, storage_options: dict | None = None
) -> Iterator[tuple[str, Any, BinaryIO, storage.SourceStat]]:
    """(kind, path-or-file for h5py, binary file, stat) of a NetCDF-4/HDF5, NetCDF-3 or
    GRIB file (kind ``hdf5``, ``netcdf3``, ``grib``).

    Empty and unrecognised files raise :class:`UnrecognizedFormatError`; what the parsers
    raise for damaged files (h5py's OSError/RuntimeError/..., header errors) becomes
    :class:`CorruptSourceError`. ``parse_source`` and ``inspect_source`` both read through it.
    """
    with open_source(url, storage_options) as (h5target, f, st):
        if st.size == 0:
            raise UnrecognizedFormatError(f"{url}: the file is empty", source=url)
        try:
            head = f.read(4104)
        except ZarrportError:
            raise
        except Exception as err:
            raise StorageError(f"{url}: reading failed: {type(err).__name__}: {err}",
                               source=url) from err
        kind = sniff(head)
        if not kind:
            raise UnrecognizedFormatError(
                f"{url}: not a NetCDF-4/HDF5 or NetCDF-3 file, nor GRIB (starts with "
                f"{head[:8]!r})",
                source=url,
            )
        f.seek(0)
        try:
            yield kind, h5target, f, st
        except ZarrportError:
            raise
        except Exception as err:
            io_error = getattr(f, "io_error", None)
            if io_error is not None:
                raise StorageError(
                    f"{url}: reading failed: {type(io_error).__name__}: {io_error}", source=url
                ) from io_error
            if not isinstance(err, OSError | RuntimeError | ValueError | KeyError | IndexError):
                raise
            # h5py raises these for damaged B-trees, heaps and object headers
            raise CorruptSourceError(
                f"{url}: damaged {kind.upper()} file ({err})", source=url
            ) from err


def parse_source(
    url: str, storage_options: dict | None = None, options: ParseOptions | None = None
) -> VirtualDataset:
    """The VirtualDataset of one NetCDF-4/HDF5, NetCDF-3 or GRIB file, with its stat
    recorded. GRIB files go through :class:`zarrport.grib.GribParser`: one chunk per
    message, decoded by the ``zarrport.grib`` codec."""
    from zarrport.virtual.hdf5 import parse_hdf5
    from zarrport.virtual.netcdf3 import parse_netcdf3

    options = options or ParseOptions()
    url = storage.normalize_url(url)
    with recognised_source(url, storage_options) as (kind, h5target, f, st):
        if kind == "grib":
            vds = parse_grib(url, storage_options, options)
        elif kind == "hdf5":
            vds = parse_hdf5(
                h5target,
                url,
                group=options.group,
                subchunk_bytes=options.subchunk_bytes,
                inline_bytes=options.inline_bytes,
                inline_limit_bytes=options.inline_limit_bytes,
                drop_variables=options.drop_variables,
                on_unsupported=options.on_unsupported,
            )
        else:
            if options.group not in (None, "", "/"):
                raise InvalidArgumentError(
                    f"{url}: NetCDF-3 files have no groups (got group={options.group!r})",
                    source=url,
                )
            vds = parse_netcdf3(
                f,
                url,
                file_size=st.size,
                subchunk_bytes=options.subchunk_bytes,
                inline_bytes=options.inline_bytes,
                drop_variables=options.drop_variables,
            )
    _check_ranges(vds, st.size)
    vds.source_stats = [st.to_dict()]
    return vds


def parse_grib(url: str, storage_options: dict | None, options: ParseOptions
               ) -> VirtualDataset:
    """One GRIB file through :class:`~zarrport.grib.scan.GribParser` (coordinates inlined,
    every field a chunk referencing its message)."""
    from zarrport.errors import InvalidArgumentError

    if options.group not in (None, "", "/"):
        raise InvalidArgumentError(
            f"{url}: GRIB files have no groups (got group={options.group!r})", source=url)
    from zarrport.grib.scan import GribParser

    registry = storage.object_store_registry([url], storage_options)
    vds = GribParser().build(url, registry).dataset
    for name in options.drop_variables:
        vds.variables.pop(name, None)
    return vds


def _check_ranges(vds: VirtualDataset, size: int) -> None:
    """Every referenced byte range must lie inside the file (a truncated file fails here)."""
    for var in vds.variables.values():
        if var.refs is None or var.refs.count == 0:
            continue
        present = var.refs.source != MISSING
        ends = (var.refs.offset + var.refs.length)[present]
        if ends.size and int(ends.max()) > size:
            raise CorruptSourceError(
                f"{vds.sources[0]}: truncated: variable {var.name!r} references bytes up to "
                f"{int(ends.max())} but the file has {size}",
                variable=var.name,
                source=vds.sources[0],
            )
