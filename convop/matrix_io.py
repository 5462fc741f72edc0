"""Save and load materialised matrices for use outside Python: ``.npz`` and Matrix Market.

What is guaranteed:

* **Atomic writes.** :func:`save_matrix` writes a temporary file in the target's directory,
  syncs it to disk, checks its size, gives it the permissions ``open()`` would, and renames it
  into place. The target is the old file or the complete new one, never a partial file; on
  failure no temporary file is left and an ``OSError`` names the target and the cause.
* **Validation before trust.** :func:`load_matrix` never hands a file to a parser that could
  crash or allocate what the file claims: Matrix Market files are read by the strict reader
  below (not ``scipy.io.mmread``, whose C++ reader segfaults on some truncated files), and
  ``.npz`` archives member by member, headers checked against sizes, without pickles. Memory
  is guarded (``MemoryError``, through ``convop._shared.memory.check_memory``) from the
  header's counts, before the data is read.
* **One exception type.** Every corrupt or truncated file raises ``ValueError`` naming the file
  and the reason; I/O problems (missing file, permissions) stay ``OSError``.

The readers live in ``convop._io.mtx`` and ``convop._io.npz``, the atomic writer in
``convop._shared.files``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import scipy.io
import scipy.sparse as sp

from ._io import mtx as _mtx
from ._io import npz as _npz
from ._shared.files import CorruptFile, atomic_write
from ._shared.memory import check_memory
from .operator import ConvOperator

FORMATS = {".npz": "scipy sparse .npz", ".mtx": "Matrix Market .mtx"}
_READERS = {".npz": _npz.read, ".mtx": _mtx.read}


def _suffix(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(FORMATS)
        raise ValueError(f"path must end in one of {known}, got path={str(path)!r}")
    return suffix


# ====================================================================== writing
def save_matrix(
    path: str | os.PathLike,
    matrix: ConvOperator | sp.sparray | sp.spmatrix | np.ndarray,
    *,
    max_bytes: int | None = None,
    comment: str | None = None,
) -> Path:
    """Write a convolution's matrix to ``.npz`` (scipy) or ``.mtx`` (Matrix Market), atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Ends in ``.npz`` (``scipy.sparse.save_npz``, compressed; readable by
        :func:`load_matrix` and ``scipy.sparse.load_npz``) or ``.mtx`` (Matrix Market
        coordinate format, readable by MATLAB, Julia, R, SuiteSparse, ...), in any case
        (``.NPZ``, ``.Mtx``). The file written is exactly ``path``; no suffix is appended.
        A symbolic link is followed: the file it points to is replaced, the link kept.
    matrix : ConvOperator, scipy sparse array/matrix or numpy.ndarray
        An operator is materialised with :meth:`ConvOperator.tosparse`; a dense array is
        stored sparse (its nonzeros). All of this happens before the file system is touched.
    max_bytes : int, optional
        Memory guard passed to :meth:`ConvOperator.tosparse`.
    comment : str, optional
        The comment of a ``.mtx`` file; default: ``repr(matrix)`` for an operator, none
        otherwise. Ignored for ``.npz``.

    Returns
    -------
    pathlib.Path
        ``Path(path)``, the file written.

    Raises
    ------
    ValueError
        For an unknown suffix.
    TypeError
        For anything that is not a 2-d matrix.
    MemoryError
        When materialising an operator would exceed ``max_bytes``.
    OSError
        When the file cannot be written (missing or unwritable directory, the target is a
        directory or not a regular file, disk full, ...); the message names ``path`` and the
        cause. An existing file at ``path`` is then left as it was.

    Notes
    -----
    The matrix is written to a temporary file ``.<name>.<random>.tmp`` next to the target,
    flushed, ``fsync``-ed and checked (its size on disk equals the bytes written), given the
    permissions a plain ``open()`` would give (an existing target's mode, else
    ``0o666 & ~umask``), renamed over the target with ``os.replace`` and the directory synced.
    Matrix Market files are written with ``symmetry='general'`` so that every stored entry,
    explicit zeros included, round-trips.

    Examples
    --------
    >>> import tempfile, pathlib, torch, convop
    >>> op = convop.conv1d(torch.ones(1, 1, 3), (1, 5))
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "conv.mtx"
    >>> convop.save_matrix(path, op) == path
    True
    >>> (convop.load_matrix(path) != op.tosparse()).nnz
    0
    """
    write = _WRITERS[_suffix(path)]
    matrix, described = _as_sparse(matrix, max_bytes)
    comment = described if comment is None else str(comment)
    target = Path(path)
    atomic_write(target, lambda file: write(file, matrix, comment))
    return target


def _as_sparse(matrix: object, max_bytes: int | None) -> tuple[sp.sparray | sp.spmatrix, str]:
    """The matrix to write, in memory and validated, and a comment saying where it came from."""
    if isinstance(matrix, ConvOperator):
        return matrix.tosparse("csr", max_bytes=max_bytes), repr(matrix)
    if isinstance(matrix, np.ndarray) and matrix.ndim == 2:
        return sp.csr_array(matrix), ""
    if sp.issparse(matrix) and matrix.ndim == 2:
        return matrix, ""
    raise TypeError(
        f"matrix must be a ConvOperator, a scipy sparse matrix or a 2-d numpy array, "
        f"got {type(matrix).__name__}"
        + (f" with {matrix.ndim} dimensions" if hasattr(matrix, "ndim") else "")
    )


def _write_npz(file: BinaryIO, matrix: sp.sparray | sp.spmatrix, comment: str) -> None:
    sp.save_npz(file, sp.csr_array(matrix), compressed=True)


def _write_mtx(file: BinaryIO, matrix: sp.sparray | sp.spmatrix, comment: str) -> None:
    scipy.io.mmwrite(file, sp.coo_array(matrix), comment=comment, symmetry="general")


_WRITERS = {".npz": _write_npz, ".mtx": _write_mtx}


# ====================================================================== reading
def load_matrix(path: str | os.PathLike, *, max_bytes: int | None = None) -> sp.csr_array:
    """Read a sparse matrix from ``.npz`` or Matrix Market ``.mtx``, validating everything.

    Parameters
    ----------
    path : str or os.PathLike
        Ends in ``.npz`` or ``.mtx`` (in any case). ``.npz``: written by
        :func:`save_matrix` or ``scipy.sparse.save_npz`` in CSR, CSC or COO format.
        ``.mtx``: any Matrix Market matrix (coordinate or array; real, double, integer,
        complex or pattern; general, symmetric, skew-symmetric or hermitian).
    max_bytes : int, optional
        Refuse (``MemoryError``, before reading the data) files whose reading would need
        more memory than this, estimated from the header. Default: half of the memory
        available now, as for :meth:`ConvOperator.todense`.

    Returns
    -------
    scipy.sparse.csr_array
        Canonical: sorted indices, duplicate entries summed. dtype float64 (``real``,
        ``double``, ``pattern``), int64 (``integer``) or complex128 (``complex``) for
        Matrix Market; the stored dtype for ``.npz``.

    Raises
    ------
    ValueError
        For an unknown suffix, an invalid ``max_bytes``, and every corrupt, truncated or
        malformed file: ``"<path>: not a valid ... file: <reason>"``.
    MemoryError
        When the header announces more than ``max_bytes`` of data.
    OSError
        When the file cannot be read (missing, a directory, no permission).

    Notes
    -----
    Matrix Market files are read here, strictly, by the rules of the format (NIST, 1996):
    the banner ``%%MatrixMarket matrix <format> <field> <symmetry>`` (any case; combinations
    the format forbids, such as ``array pattern`` or ``real hermitian``, are refused), ``%``
    comment lines, the size line (``rows columns entries`` for coordinate, ``rows columns``
    for array), then exactly the announced entries, one per line, each line holding exactly
    its numbers (2 indices and 0, 1 or 2 values; one value, two if complex, for array) and the
    last one ending in a newline. Blank lines are allowed. Numbers are read by
    ``np.fromstring`` (decimal, ``nan``, ``inf``; a number cut short such as ``1.5E`` is
    refused); indices must be integers within the size, integer values at most ``2**53`` in
    magnitude (exact in float64). Symmetric storage must hold the lower triangle only and is
    mirrored: ``A[j, i] = A[i, j]`` (symmetric), ``-A[i, j]`` (skew-symmetric, whose diagonal
    must be zero), ``conj(A[i, j])`` (hermitian, whose diagonal must be real). Array files
    list values column by column (symmetric ones the lower triangle, column by column); their
    zeros are not stored.

    Being strict costs speed: about a million coordinate entries (three million numbers) per
    second or somewhat less, 10 to 20 times slower than ``scipy.io.mmread`` (measured on a
    1M-entry file), which is not used because it crashes the process on some truncated files.
    Memory stays bounded: the data is scanned in chunks of ``convop._io.mtx.CHUNK_BYTES``
    into arrays sized from the header.

    ``.npz`` archives are read with ``zipfile``, member by member: each ``.npy`` header is
    checked against the member's size (which ``zipfile`` enforces, CRC included) before
    its data is read, object arrays are refused (nothing is unpickled), and the arrays must
    form a valid matrix (shape, index types and bounds, monotone ``indptr``).

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np, convop
    >>> path = convop.save_matrix(pathlib.Path(tempfile.mkdtemp()) / "B.mtx", np.eye(3))
    >>> convop.load_matrix(path).toarray()
    array([[1., 0., 0.],
           [0., 1., 0.],
           [0., 0., 1.]])
    >>> _ = path.write_bytes(path.read_bytes()[:-3])  # cut the last line short
    >>> convop.load_matrix(path)
    Traceback (most recent call last):
    ValueError: ...B.mtx: not a valid Matrix Market file: incomplete last line (the file may ...
    """
    suffix = _suffix(path)
    what = f"load_matrix({os.fspath(path)!r})"
    check_memory(0, max_bytes, what)  # refuses a malformed max_bytes before any reading
    read = _READERS[suffix]
    try:
        with open(path, "rb") as file:
            matrix = read(file, max_bytes, what)
        return _canonical(matrix)
    except CorruptFile as error:
        kind = "scipy sparse .npz" if suffix == ".npz" else "Matrix Market"
        message = f"{os.fspath(path)}: not a valid {kind} file: {error}"
        raise ValueError(message) from error.__cause__


def _canonical(matrix: sp.sparray) -> sp.csr_array:
    """CSR, checked by scipy too, with sorted indices and duplicates summed."""
    try:
        result = sp.csr_array(matrix)
        result.check_format(full_check=True)
        result.sum_duplicates()
    except ValueError as error:  # e.g. a dtype scipy.sparse does not support
        raise CorruptFile(f"scipy.sparse refuses its arrays: {error}") from error
    return result
