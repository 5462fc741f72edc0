"""A strict Matrix Market reader: every malformed or truncated file is refused.

``scipy.io.mmread`` (fast_matrix_market) crashes the process on some truncated files (a last
number cut to ``1.5E``) and reads others silently as a different matrix, so files convop did
not write itself are read here instead, by the rules of the format (NIST, 1996), in chunks,
under the memory guard. About a million entries per second: 10 to 20 times slower than
scipy's reader, the price of checking every rule.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import scipy.sparse as sp

from .._shared.files import CorruptFile, require
from .._shared.memory import check_memory, format_bytes

#: Bytes of data scanned per step (the scan's temporaries are at most ~32x this).
CHUNK_BYTES = 1 << 20
#: The longest line accepted.
MAX_LINE_BYTES = 1 << 20

_VALUES_PER_ENTRY = {"real": 1, "double": 1, "integer": 1, "complex": 2, "pattern": 0}
_DTYPES = {
    "real": np.float64,
    "double": np.float64,
    "integer": np.int64,
    "complex": np.complex128,
    "pattern": np.float64,
}
_MM_FORMATS = ("coordinate", "array")
_SYMMETRIES = ("general", "symmetric", "skew-symmetric", "hermitian")
_BANNER = "%%MatrixMarket matrix <format> <field> <symmetry>"
_INCOMPLETE = "incomplete last line (the file may be truncated)"
#: Indices and integers are read as float64, exact up to this magnitude.
_EXACT = 2**53
_SIZE = re.compile(rb"[0-9]{1,16}")
_SPACE = np.zeros(256, dtype=bool)  # (256,): the bytes np.fromstring(sep=" ") skips
_SPACE[list(b" \t\n\v\f\r")] = True
_TEXT = _SPACE.copy()  # (256,): the bytes allowed in the data, printable ASCII and spaces
_TEXT[0x20:0x7F] = True


@dataclass(frozen=True)
class _MtxHeader:
    format: str  # 'coordinate' or 'array'
    field: str  # a key of _DTYPES
    symmetry: str  # one of _SYMMETRIES
    rows: int
    cols: int
    entries: int  # entries stored in the file
    lines: int  # lines before the data

    @property
    def per_entry(self) -> int:
        """Numbers on each data line."""
        return (2 if self.format == "coordinate" else 0) + _VALUES_PER_ENTRY[self.field]


def read(file: BinaryIO, max_bytes: int | None, what: str) -> sp.coo_array:
    header = _mtx_header(file)
    text_bytes = os.fstat(file.fileno()).st_size - file.tell()
    check_memory(_mtx_bytes(header, text_bytes), max_bytes, what)
    numbers = _mtx_numbers(file, header)  # (entries, per_entry) float64
    rows, cols, values = _mtx_entries(numbers, header)
    return sp.coo_array((values, (rows, cols)), shape=(header.rows, header.cols))


def _header_line(file: BinaryIO, number: int) -> bytes:
    """Line ``number`` (1-based) of the header, without its newline."""
    line = file.readline(MAX_LINE_BYTES + 1)
    if line.endswith(b"\n"):
        return line[:-1]
    if len(line) > MAX_LINE_BYTES:
        raise CorruptFile(f"line {number} is longer than {format_bytes(MAX_LINE_BYTES)}")
    if not line:
        raise CorruptFile(
            "the file is empty"
            if number == 1
            else "it ends before its size line (the file may be truncated)"
        )
    raise CorruptFile(_INCOMPLETE)


def _mtx_header(file: BinaryIO) -> _MtxHeader:
    """The banner and the size line, checked; the file is left at the first data line."""
    banner = _header_line(file, 1)
    words = banner.lower().split()
    if len(words) != 5 or words[0] != b"%%matrixmarket":
        raise CorruptFile(f"line 1 must read {_BANNER!r}, got {_shorten(banner)!r}")
    obj, fmt, field, symmetry = (word.decode("ascii", "replace") for word in words[1:])
    _check_banner(obj, fmt, field, symmetry)
    number, line = 2, _header_line(file, 2)
    while line.startswith(b"%") or not line.strip():  # comments and blank lines
        number, line = number + 1, _header_line(file, number + 1)
    names = ("rows", "columns", "entries")[: 3 if fmt == "coordinate" else 2]
    sizes = line.split()
    if len(sizes) != len(names) or not all(_SIZE.fullmatch(size) for size in sizes):
        raise CorruptFile(
            f"line {number}: expected the size line '{' '.join(names)}' as "
            f"{len(names)} non-negative integers, got {_shorten(line)!r}"
        )
    rows, cols, *entries = (int(size) for size in sizes)
    if max(rows, cols) > _EXACT:
        raise CorruptFile(
            f"line {number}: sizes above 2**53 are not supported, got {rows} x {cols}"
        )
    if symmetry != "general" and rows != cols:
        raise CorruptFile(f"a {symmetry} matrix must be square, got {rows} x {cols}")
    if fmt == "array":
        triangle = {"general": rows * cols, "skew-symmetric": rows * (rows - 1) // 2}
        entries = [triangle.get(symmetry, rows * (rows + 1) // 2)]
    return _MtxHeader(fmt, field, symmetry, rows, cols, entries[0], number)


def _check_banner(obj: str, fmt: str, field: str, symmetry: str) -> None:
    """The combinations the Matrix Market format allows."""
    for kind, word, known in [
        ("object", obj, ("matrix",)),
        ("format", fmt, _MM_FORMATS),
        ("field", field, tuple(_DTYPES)),
        ("symmetry", symmetry, _SYMMETRIES),
    ]:
        if word not in known:
            raise CorruptFile(f"unknown {kind} {word!r} in line 1, expected one of {known}")
    if fmt == "array" and field == "pattern":
        raise CorruptFile("an 'array' file cannot have field 'pattern'")
    if symmetry == "hermitian" and field != "complex":
        raise CorruptFile(f"a 'hermitian' matrix must be 'complex', got {field!r}")
    if symmetry == "skew-symmetric" and field == "pattern":
        raise CorruptFile("a 'pattern' matrix cannot be 'skew-symmetric'")


def _mtx_bytes(header: _MtxHeader, text_bytes: int) -> int:
    """Peak memory of reading the data.

    One chunk's scan, the parsed numbers, the entries (mirrored for symmetric storage) as COO
    and as CSR, and the row pointers.
    """
    itemsize = np.dtype(_DTYPES[header.field]).itemsize
    stored = header.entries * (1 if header.symmetry == "general" else 2)
    scan = 32 * min(text_bytes, CHUNK_BYTES + MAX_LINE_BYTES)
    parsed = 8 * header.entries * header.per_entry
    return scan + parsed + 2 * stored * (16 + itemsize) + 8 * (header.rows + 1)


def _mtx_numbers(file: BinaryIO, header: _MtxHeader) -> np.ndarray:
    """All numbers of the data, ``(entries, per_entry)`` float64, read chunk by chunk."""
    k = header.per_entry
    numbers = np.empty(header.entries * k, dtype=np.float64)  # (entries * k,)
    filled, line, carry = 0, header.lines + 1, b""  # numbers so far, next line, partial line
    while block := file.read(CHUNK_BYTES):
        text = carry + block
        end = text.rfind(b"\n") + 1  # the chunk is the complete lines
        if end == 0 and len(text) > MAX_LINE_BYTES:
            raise CorruptFile(f"line {line} is longer than {format_bytes(MAX_LINE_BYTES)}")
        chunk, carry = text[:end], text[end:]
        found, lines = _scan(chunk, k, line)
        if filled + found.size > numbers.size:
            raise CorruptFile(f"more entries than the {header.entries} the size line announces")
        numbers[filled : filled + found.size] = found
        filled, line = filled + found.size, line + lines
    if carry:
        raise CorruptFile(_INCOMPLETE)
    if filled < numbers.size:
        raise CorruptFile(
            f"found {filled // k} entries, but the size line announces {header.entries} "
            f"(the file may be truncated)"
        )
    return numbers.reshape(header.entries, k)


def _scan(chunk: bytes, k: int, first_line: int) -> tuple[np.ndarray, int]:
    """The numbers on the complete lines ``chunk``, flat float64, and how many lines it has.

    Every non-blank line must hold exactly ``k`` numbers; ``first_line`` (1-based) numbers
    the chunk's first line in messages.
    """
    text = np.frombuffer(chunk, dtype=np.uint8)  # (N,), ends with a newline
    newlines = np.flatnonzero(text == ord("\n"))  # (L,) where each line ends
    odd = ~_TEXT[text]  # (N,)
    if odd.any():
        at = int(np.argmax(odd))
        line = first_line + int(np.searchsorted(newlines, at))
        raise CorruptFile(f"line {line}: unexpected byte 0x{text[at]:02x}")
    lengths = np.diff(newlines, prepend=-1) - 1  # (L,) bytes on each line
    require(
        lengths <= MAX_LINE_BYTES,
        lambda i: f"line {first_line + i} is longer than {format_bytes(MAX_LINE_BYTES)}",
    )
    space = _SPACE[text]  # (N,)
    starts = ~space  # (N,): the first byte of each token
    starts[1:] &= space[:-1]
    per_line = np.bincount(  # (L,) tokens on each line
        np.searchsorted(newlines, np.flatnonzero(starts)), minlength=newlines.size
    )
    require(
        (per_line == 0) | (per_line == k),
        lambda i: (
            f"line {first_line + i} holds {per_line[i]} numbers, an entry has {k}: "
            f"{_line(chunk, newlines, i)!r}"
        ),
    )
    counts = np.cumsum(per_line)  # (L,) numbers up to the end of each line
    found = _parse(chunk, int(counts[-1]) if counts.size else 0)
    if found is None:
        i = _first_unreadable_line(chunk, newlines, counts)
        raise CorruptFile(f"line {first_line + i}: not a number in {_line(chunk, newlines, i)!r}")
    return found, newlines.size


def _parse(text: bytes, count: int) -> np.ndarray | None:
    """``count`` whitespace-separated float64 numbers, or None if ``text`` holds anything else."""
    if count == 0:  # np.fromstring reads whitespace alone as [-1.0]
        return np.empty(0)
    try:
        numbers = np.fromstring(text, dtype=np.float64, sep=" ")
    except (ValueError, DeprecationWarning):  # numpy < 2 warns (and stops early) instead
        return None
    return numbers if numbers.size == count else None


def _first_unreadable_line(chunk: bytes, newlines: np.ndarray, counts: np.ndarray) -> int:
    """Bisect for the first line (0-based in ``chunk``) that ``np.fromstring`` refuses."""
    low, high = 0, newlines.size - 1  # the first failing line is in [low, high]
    while low < high:
        mid = (low + high) // 2
        if _parse(chunk[: newlines[mid] + 1], int(counts[mid])) is None:
            high = mid
        else:
            low = mid + 1
    return low


def _line(chunk: bytes, newlines: np.ndarray, i: int) -> str:
    """Line ``i`` (0-based) of ``chunk`` for a message."""
    start = newlines[i - 1] + 1 if i else 0
    return _shorten(chunk[start : newlines[i]].strip()).decode("ascii")


def _shorten(line: bytes) -> bytes:
    return line if len(line) <= 60 else line[:57] + b"..."


def _mtx_entries(
    numbers: np.ndarray, header: _MtxHeader
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """0-based rows, columns and values of every entry of the full matrix."""
    if header.format == "coordinate":
        rows = _mtx_index(numbers[:, 0], header.rows, "row")
        cols = _mtx_index(numbers[:, 1], header.cols, "column")
        values = _mtx_values(numbers[:, 2:], header.field)
    else:
        rows, cols = _array_positions(header)
        values = _mtx_values(numbers, header.field)
        nonzero = values != 0  # (entries,): a dense array's zeros are not entries
        rows, cols, values = rows[nonzero], cols[nonzero], values[nonzero]
    return _mirror(rows, cols, values, header.symmetry)


def _mtx_index(numbers: np.ndarray, size: int, what: str) -> np.ndarray:
    """0-based int64 indices from 1-based ones, each an integer in 1..size."""
    ok = (numbers >= 1) & (numbers <= size) & (numbers == np.floor(numbers))  # (entries,)
    require(
        ok,
        lambda i: f"entry {i + 1}: {what} index {numbers[i]:g} is not an integer in 1..{size}",
    )
    return numbers.astype(np.int64) - 1


def _mtx_values(numbers: np.ndarray, field: str) -> np.ndarray:
    """The values, ``(entries,)`` of the field's dtype, from their ``(entries, 0|1|2)`` numbers."""
    if field == "pattern":
        return np.ones(len(numbers))
    if field == "complex":
        values = np.empty(len(numbers), dtype=np.complex128)  # not re + 1j*im: inf*1j is nan
        values.real, values.imag = numbers[:, 0], numbers[:, 1]
        return values
    values = np.ascontiguousarray(numbers[:, 0])
    if field == "integer":
        ok = (values == np.floor(values)) & (np.abs(values) <= _EXACT)
        require(ok, lambda i: f"entry {i + 1}: {values[i]:g} is not an integer up to 2**53")
        return values.astype(np.int64)
    return values


def _array_positions(header: _MtxHeader) -> tuple[np.ndarray, np.ndarray]:
    """0-based (rows, columns) of an array file's values, in its column-major order."""
    if header.symmetry == "general":
        rows = np.tile(np.arange(header.rows), header.cols)  # (m*n,)
        cols = np.repeat(np.arange(header.cols), header.rows)  # (m*n,)
        return rows, cols
    # The lower triangle column by column is the upper triangle row by row, transposed.
    strict = 1 if header.symmetry == "skew-symmetric" else 0
    cols, rows = np.triu_indices(header.rows, k=strict)  # (entries,) each
    return rows, cols


_MIRRORED = {"symmetric": np.positive, "skew-symmetric": np.negative, "hermitian": np.conj}


def _mirror(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, symmetry: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full matrix's entries from symmetric storage (the lower triangle) by mirroring."""
    if symmetry == "general":
        return rows, cols, values

    def at(i: int) -> str:
        return f"the entry at ({rows[i] + 1}, {cols[i] + 1})"

    require(
        rows >= cols,
        lambda i: f"{at(i)} lies above the diagonal; {symmetry} storage is the lower triangle",
    )
    diagonal = rows == cols  # (entries,)
    if symmetry == "skew-symmetric":
        require(
            ~diagonal | (values == 0),
            lambda i: f"{at(i)} is on the diagonal, so must be 0, got {values[i]}",
        )
    if symmetry == "hermitian":
        require(
            ~diagonal | (values.imag == 0),
            lambda i: f"{at(i)} is on the diagonal, so must be real, got {values[i]}",
        )
    below = ~diagonal
    return (
        np.concatenate([rows, cols[below]]),  # (entries + below,)
        np.concatenate([cols, rows[below]]),
        np.concatenate([values, _MIRRORED[symmetry](values[below])]),
    )
