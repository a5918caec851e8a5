"""NetCDF-3 (CDF-1 classic, CDF-2 64-bit offset, CDF-5) -> :class:`VirtualDataset`.

The header is read directly (the format is small and fully specified). VirtualiZarr's own
``NetCDF3Parser`` (2.8.0) drops some variables (``yy`` of netcdfc_ref_nctest_classic.nc; no
upstream issue found); kerchunk's ``NetCDF3ToZarr`` (0.2.10) needs scipy.

Layout: a fixed-size variable is one contiguous big-endian block at ``begin`` (split into
byte-range sub-chunks like HDF5's contiguous data); a record variable has one slab per record,
``recsize`` bytes apart, which becomes one chunk per record.
"""

from __future__ import annotations

import math
import struct
from typing import Any, BinaryIO

import numpy as np

from zarrport.errors import CorruptSourceError
from zarrport.virtual.hdf5 import contiguous_refs, subchunk_shape
from zarrport.virtual.model import ChunkRefs, VirtualDataset, VirtualVariable, exact_fill

_TYPES = {
    1: np.dtype("i1"),
    2: np.dtype("S1"),
    3: np.dtype(">i2"),
    4: np.dtype(">i4"),
    5: np.dtype(">f4"),
    6: np.dtype(">f8"),
    7: np.dtype("u1"),
    8: np.dtype(">u2"),
    9: np.dtype(">u4"),
    10: np.dtype(">i8"),
    11: np.dtype(">u8"),
}
# netCDF default fill values (netcdf.h NC_FILL_*)
_DEFAULT_FILL = {
    1: -127,
    2: b"\x00",
    3: -32767,
    4: -2147483647,
    5: 9.969209968386869e36,
    6: 9.969209968386869e36,
    7: 255,
    8: 65535,
    9: 4294967295,
    10: -9223372036854775806,
    11: 18446744073709551614,
}
_ABSENT, _DIMENSION, _VARIABLE, _ATTRIBUTE = 0, 10, 11, 12


class _Header:
    def __init__(self, buf: bytes, url: str) -> None:
        self.buf = buf
        self.pos = 0
        self.url = url

    def need(self, n: int) -> None:
        if self.pos + n > len(self.buf):
            raise EOFError

    def u32(self) -> int:
        self.need(4)
        (v,) = struct.unpack_from(">I", self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self) -> int:
        self.need(8)
        (v,) = struct.unpack_from(">Q", self.buf, self.pos)
        self.pos += 8
        return v

    def bytes_(self, n: int) -> bytes:
        self.need(n)
        out = self.buf[self.pos : self.pos + n]
        self.pos += n + (-n % 4)
        return out


def is_netcdf3(magic: bytes) -> bool:
    return magic[:3] == b"CDF" and magic[3:4] in (b"\x01", b"\x02", b"\x05")


def _attr_value(nc_type: int, raw: bytes, n: int) -> Any:
    if nc_type == 2:
        return raw[:n].decode("utf-8", errors="replace").rstrip("\x00")
    arr = np.frombuffer(raw, dtype=_TYPES[nc_type], count=n)
    if n == 1:
        return arr[0].item()
    return arr.tolist()


def _read_header(read_at: Any, url: str) -> tuple[int, dict, dict, list]:
    size_hint = 8192
    while True:
        buf = read_at(0, size_hint)
        try:
            return _parse_header(buf, url)
        except EOFError:
            if len(buf) < size_hint:
                raise CorruptSourceError(
                    f"{url}: truncated NetCDF-3 header", source=url
                ) from None
            size_hint *= 4


def _parse_header(buf: bytes, url: str) -> tuple[int, dict, dict, list]:
    if not is_netcdf3(buf[:4]):
        raise CorruptSourceError(f"{url}: not a NetCDF-3 file", source=url)
    version = buf[3]
    h = _Header(buf, url)
    h.pos = 4
    big = version == 5
    count = h.u64 if big else h.u32
    offset_reader = h.u64 if version in (2, 5) else h.u32
    numrecs = count()

    def name() -> str:
        n = count()
        return h.bytes_(n).decode("utf-8", errors="replace").rstrip("\x00")

    def attrs() -> dict:
        tag, n = h.u32(), count()
        if tag == _ABSENT:
            return {}
        if tag != _ATTRIBUTE:
            raise CorruptSourceError(f"{url}: damaged NetCDF-3 attribute list", source=url)
        out = {}
        for _ in range(n):
            key = name()
            nc_type, nelems = h.u32(), count()
            if nc_type not in _TYPES:
                raise CorruptSourceError(f"{url}: unknown attribute type {nc_type}", source=url)
            raw = h.bytes_(nelems * _TYPES[nc_type].itemsize)
            out[key] = _attr_value(nc_type, raw, nelems)
        return out

    tag, ndims = h.u32(), count()
    dims: list[tuple[str, int]] = []
    if tag not in (_ABSENT, _DIMENSION):
        raise CorruptSourceError(f"{url}: damaged NetCDF-3 dimension list", source=url)
    for _ in range(ndims):
        dims.append((name(), count()))
    gattrs = attrs()
    tag, nvars = h.u32(), count()
    if tag not in (_ABSENT, _VARIABLE):
        raise CorruptSourceError(f"{url}: damaged NetCDF-3 variable list", source=url)
    variables = []
    for _ in range(nvars):
        vname = name()
        nd = count()
        dimids = [count() for _ in range(nd)]
        vattrs = attrs()
        nc_type = h.u32()
        vsize = count() if big else h.u32()
        begin = offset_reader()
        if nc_type not in _TYPES or any(d >= len(dims) for d in dimids):
            raise CorruptSourceError(f"{url}: damaged NetCDF-3 variable {vname!r}", source=url)
        variables.append((vname, dimids, vattrs, nc_type, vsize, begin))
    return numrecs, {"dims": dims}, gattrs, variables


def parse_netcdf3(
    fileobj: BinaryIO,
    url: str,
    *,
    file_size: int,
    subchunk_bytes: int = 16 * 2**20,
    inline_bytes: int = 64 * 2**10,
    drop_variables: Any = (),
) -> VirtualDataset:
    def read_at(offset: int, n: int) -> bytes:
        fileobj.seek(offset)
        return fileobj.read(n)

    numrecs, meta, gattrs, raw_vars = _read_header(read_at, url)
    dims = meta["dims"]
    record_vars = [v for v in raw_vars if v[1] and dims[v[1][0]][1] == 0]
    # recsize: sum of record variables' padded slab sizes; a lone record variable is unpadded
    if len(record_vars) == 1:
        v = record_vars[0]
        recsize = math.prod(dims[d][1] for d in v[1][1:]) * _TYPES[v[3]].itemsize
    else:
        recsize = sum(v[4] for v in record_vars)
    if numrecs == 0xFFFFFFFF or (numrecs == 2**64 - 1):  # streaming: count from the size
        first = min((v[5] for v in record_vars), default=file_size)
        numrecs = (file_size - first) // recsize if recsize else 0

    drop = set(drop_variables)
    variables: dict[str, VirtualVariable] = {}
    for vname, dimids, vattrs, nc_type, _vsize, begin in raw_vars:
        if vname in drop:
            continue
        dtype = _TYPES[nc_type]
        is_record = bool(dimids) and dims[dimids[0]][1] == 0
        shape = tuple(numrecs if (i == 0 and is_record) else dims[d][1]
                      for i, d in enumerate(dimids))
        dim_names = tuple(dims[d][0] for d in dimids)
        # the value of never-written data; a _FillValue of another type than the variable
        # (NaN on an integer, written by some tools) is not one, the default is
        fill = exact_fill(vattrs.get("_FillValue"), dtype)
        if fill is None:
            fill = _DEFAULT_FILL[nc_type]
        if nc_type == 2:
            fill = fill.encode() if isinstance(fill, str) else fill
        inner = math.prod(shape[1:]) * dtype.itemsize if is_record else 0
        nbytes = math.prod(shape) * dtype.itemsize
        base = dict(name=vname, dims=dim_names, shape=shape, dtype=dtype,
                    fill_value=fill, attrs=vattrs, layout="record" if is_record else "contiguous")
        end = begin + ((numrecs - 1) * recsize + inner if is_record and numrecs else nbytes)
        if end > file_size and nbytes:
            raise CorruptSourceError(
                f"{url}: truncated: variable {vname!r} ends at byte {end} "
                f"but the file has {file_size}",
                variable=vname, source=url,
            )
        small_coord = len(shape) == 1 and dim_names == (vname,)
        if nbytes <= inline_bytes or (small_coord and nbytes <= 4 * 2**20):
            if is_record:
                raw = b"".join(read_at(begin + r * recsize, inner) for r in range(numrecs))
            else:
                raw = read_at(begin, nbytes)
            data = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
            variables[vname] = VirtualVariable(chunks=shape, data=data,
                                               note="inlined: small", **base)
            continue
        if is_record:
            chunks = (1,) + shape[1:]
            grid = (numrecs,) + (1,) * (len(shape) - 1)
            refs = ChunkRefs.empty(grid)
            refs.source[...] = 0
            offsets = begin + np.arange(numrecs, dtype=np.uint64) * np.uint64(recsize)
            refs.offset[...] = offsets.reshape(grid)
            refs.length[...] = inner
            variables[vname] = VirtualVariable(chunks=chunks, refs=refs, **base)
        else:
            chunks = subchunk_shape(shape, dtype.itemsize, subchunk_bytes)
            refs = contiguous_refs(shape, chunks, dtype.itemsize, 0, begin)
            variables[vname] = VirtualVariable(chunks=chunks, refs=refs,
                                               contiguous_at=(0, begin), **base)
    return VirtualDataset(variables=variables, attrs=gattrs, sources=[url])
