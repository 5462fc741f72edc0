"""A validating ``.npz`` sparse-matrix reader: nothing unpickled, nothing trusted unchecked.

Archives written by ``scipy.sparse.save_npz`` (CSR, CSC, COO) are read member by member with
:mod:`zipfile`: each member's directory entry and ``.npy`` header are checked against the
sizes before any data is read (so a zip bomb or a lying header is refused unread), object
arrays are refused, and the arrays must form a valid matrix.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib
from typing import BinaryIO

import numpy as np
import scipy.sparse as sp

from .._shared.files import CorruptFile, require
from .._shared.memory import check_memory

#: The arrays each supported format needs besides 'data' ('coords' may replace 'row', 'col').
_NPZ_INDICES = {"csr": ("indices", "indptr"), "csc": ("indices", "indptr"), "coo": ("row", "col")}
#: The most bytes the 'format' and 'shape' members may hold (they are read before the guard).
_SMALL_MEMBER = 1024
#: Deflate expands at most ~1032:1, so a larger claimed size is corrupt (or a zip bomb).
_DEFLATE_RATIO = 1032
#: What zipfile, zlib and numpy's .npy header reader raise for malformed bytes.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    ValueError,
    struct.error,
    OverflowError,
    NotImplementedError,  # a zip version or feature zipfile does not read
)


def read(file: BinaryIO, max_bytes: int | None, what: str) -> sp.sparray:
    size = os.fstat(file.fileno()).st_size
    try:
        with zipfile.ZipFile(file) as archive:
            fmt = _npz_format(_npy(archive, _member(archive, "format", size), small=True))
            shape = _npz_shape(_npy(archive, _member(archive, "shape", size), small=True))
            names = ["data", *_NPZ_INDICES[fmt]]
            if fmt == "coo" and "row.npy" not in archive.namelist():
                names[1:] = ["coords"]  # the n-d COO layout, (2, nnz) for a matrix
            members = {name: _member(archive, name, size) for name in names}
            stored = sum(info.file_size for info in members.values())
            # the arrays, a canonical copy, and the row pointers
            check_memory(2 * stored + 16 * (shape[0] + 1), max_bytes, what)
            arrays = {name: _npy(archive, info) for name, info in members.items()}
        return _npz_matrix(fmt, shape, arrays)
    except _ZIP_ERRORS as error:  # also scipy's ValueError, should a check here miss one
        raise CorruptFile(f"{type(error).__name__}: {error}") from error


def _member(archive: zipfile.ZipFile, name: str, size: int) -> zipfile.ZipInfo:
    """The member holding array ``name`` in an archive of ``size`` bytes, if plausible.

    Its directory entry must be inside the file, unencrypted, stored or deflated, and claim
    no more bytes than its compressed data can hold (so a zip bomb is refused unread).
    """
    try:
        info = archive.getinfo(f"{name}.npy")
    except KeyError:
        raise CorruptFile(f"it has no array {name!r}") from None
    if not 0 <= info.header_offset <= info.header_offset + info.compress_size <= size:
        raise CorruptFile(f"array {name!r} lies outside the file")
    if info.flag_bits & 0x1:
        raise CorruptFile(f"array {name!r} is encrypted")
    ratio = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: _DEFLATE_RATIO}.get(info.compress_type)
    if ratio is None:
        raise CorruptFile(f"array {name!r} uses unsupported compression {info.compress_type}")
    if info.file_size > ratio * info.compress_size + 64:
        raise CorruptFile(
            f"array {name!r} claims {info.file_size} bytes from {info.compress_size} compressed"
        )
    return info


def _npy(archive: zipfile.ZipFile, info: zipfile.ZipInfo, *, small: bool = False) -> np.ndarray:
    """The array in member ``info``, its ``.npy`` header checked first.

    The header is checked against the member's size before the data is read; object
    arrays are refused, so nothing is ever unpickled.
    """
    name = info.filename.removesuffix(".npy")
    if small and info.file_size > _SMALL_MEMBER:
        raise CorruptFile(f"array {name!r} holds {info.file_size} bytes, expected a few")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0)):
            raise CorruptFile(f"array {name!r} has unsupported .npy version {version}")
        read_header = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }[version]
        shape, fortran_order, dtype = read_header(member)
        if dtype.hasobject:
            raise CorruptFile(f"array {name!r} holds Python objects, which are never unpickled")
        nbytes = math.prod(shape) * dtype.itemsize
        if member.tell() + nbytes != info.file_size:
            raise CorruptFile(
                f"array {name!r} describes {nbytes} bytes of data, its member holds "
                f"{info.file_size - member.tell()}"
            )
        data = member.read(nbytes)
        if len(data) != nbytes or member.read(1):  # reading to the end checks the CRC
            raise CorruptFile(f"array {name!r} does not hold the {nbytes} bytes it describes")
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def _npz_format(array: np.ndarray) -> str:
    if array.shape != () or array.dtype.kind not in "SU":
        raise CorruptFile(f"'format' must be a string, got {array.dtype} of shape {array.shape}")
    fmt = array.item()
    fmt = fmt.decode("ascii", "replace") if isinstance(fmt, bytes) else fmt
    if fmt not in _NPZ_INDICES:
        raise CorruptFile(
            f"unsupported sparse format {fmt!r}, expected one of {tuple(_NPZ_INDICES)}"
        )
    return fmt


def _npz_shape(array: np.ndarray) -> tuple[int, int]:
    if array.shape != (2,) or array.dtype.kind not in "iu" or (array < 0).any():
        raise CorruptFile(f"'shape' must be two non-negative integers, got {array!r}")
    rows, cols = (int(size) for size in array)
    if max(rows, cols) >= 2**63:
        raise CorruptFile(f"'shape' {rows} x {cols} does not fit int64")
    return rows, cols


def _npz_index(arrays: dict[str, np.ndarray], name: str, size: int) -> np.ndarray:
    """Index array ``name``, 1-d integers in ``0..size-1``, as int64."""
    index = arrays[name]
    if index.ndim != 1 or index.dtype.kind not in "iu":
        raise CorruptFile(
            f"{name!r} must be 1-d integers, got {index.dtype} of shape {index.shape}"
        )
    require(
        (index >= 0) & (index < size),
        lambda i: f"{name}[{i}] = {index[i]} is not in 0..{size - 1}",
    )
    return index.astype(np.int64)


def _npz_matrix(fmt: str, shape: tuple[int, int], arrays: dict[str, np.ndarray]) -> sp.sparray:
    """The matrix the arrays describe, every array checked first."""
    data = arrays["data"]
    if data.ndim != 1 or data.dtype.kind not in "biufc" or data.dtype == np.float16:
        raise CorruptFile(
            f"'data' must be 1-d numbers of a dtype scipy.sparse supports, got {data.dtype} "
            f"of shape {data.shape}"
        )
    if fmt == "coo":
        if "coords" in arrays:
            coords = arrays.pop("coords")  # (2, nnz)
            if coords.ndim != 2 or len(coords) != 2:
                raise CorruptFile(f"'coords' must have shape (2, nnz), got {coords.shape}")
            arrays.update(row=coords[0], col=coords[1])
        row = _npz_index(arrays, "row", shape[0])
        col = _npz_index(arrays, "col", shape[1])
        if not row.size == col.size == data.size:
            raise CorruptFile(
                f"'row', 'col', 'data' differ in length: {row.size, col.size, data.size}"
            )
        return sp.coo_array((data, (row, col)), shape=shape)
    major, minor = shape if fmt == "csr" else shape[::-1]
    indices = _npz_index(arrays, "indices", minor)
    indptr = _npz_index(arrays, "indptr", indices.size + 1)
    if indptr.size != major + 1 or indptr[0] != 0 or not indptr[-1] == indices.size == data.size:
        raise CorruptFile(
            f"'indptr' ({indptr.size} entries from {indptr[:1]} to {indptr[-1:]}) does not "
            f"match shape {shape} and {indices.size} indices, {data.size} values"
        )
    require(np.diff(indptr) >= 0, lambda i: f"'indptr' decreases after entry {i}")
    kind = sp.csr_array if fmt == "csr" else sp.csc_array
    return kind((data, indices, indptr), shape=shape)
