"""Save and load materialised matrices for use outside Python: ``.npz`` and Matrix Market."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse as sp

from .operator import ConvOperator

FORMATS = {".npz": "scipy sparse .npz", ".mtx": "Matrix Market .mtx"}


def _suffix(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(FORMATS)
        raise ValueError(f"path must end in one of {known}, got path={str(path)!r}")
    return suffix


def save_matrix(
    path: str | os.PathLike,
    matrix: ConvOperator | sp.sparray | sp.spmatrix | np.ndarray,
    *,
    max_bytes: int | None = None,
) -> Path:
    """Write a convolution's matrix to ``.npz`` (scipy) or ``.mtx`` (Matrix Market).

    Parameters
    ----------
    path : str or os.PathLike
        Ends in ``.npz`` (``scipy.sparse.save_npz``, compressed; readable by
        :func:`load_matrix` and ``scipy.sparse.load_npz``) or ``.mtx`` (Matrix Market
        coordinate format, readable by MATLAB, Julia, R, SuiteSparse, ...).
    matrix : ConvOperator, scipy sparse array/matrix or numpy.ndarray
        An operator is materialised with :meth:`ConvOperator.tosparse`; a dense array is
        stored sparse (its nonzeros).
    max_bytes : int, optional
        Memory guard passed to :meth:`ConvOperator.tosparse`.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ValueError
        For an unknown suffix.
    TypeError
        For anything that is not a matrix.

    Examples
    --------
    >>> import tempfile, pathlib, torch, convop
    >>> op = convop.conv1d(torch.ones(1, 1, 3), (1, 5))
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "conv.mtx"
    >>> _ = convop.save_matrix(path, op)
    >>> (convop.load_matrix(path) != op.tosparse()).nnz
    0
    """
    suffix = _suffix(path)
    comment = ""
    if isinstance(matrix, ConvOperator):
        comment = repr(matrix)
        matrix = matrix.tosparse("csr", max_bytes=max_bytes)
    elif isinstance(matrix, np.ndarray) and matrix.ndim == 2:
        matrix = sp.csr_array(matrix)
    elif not sp.issparse(matrix):
        raise TypeError(
            f"matrix must be a ConvOperator, a scipy sparse matrix or a 2-d numpy array, "
            f"got {type(matrix).__name__}"
        )
    path = Path(path)
    if suffix == ".npz":
        sp.save_npz(path, sp.csr_array(matrix), compressed=True)
    else:
        scipy.io.mmwrite(path, sp.coo_array(matrix), comment=comment)
    return path


def load_matrix(path: str | os.PathLike) -> sp.csr_array:
    """Read a matrix written by :func:`save_matrix` (or any ``.npz``/``.mtx`` sparse matrix).

    Parameters
    ----------
    path : str or os.PathLike
        Ends in ``.npz`` or ``.mtx``.

    Returns
    -------
    scipy.sparse.csr_array
        Canonical (sorted indices, no duplicates).
    """
    suffix = _suffix(path)
    matrix = sp.load_npz(path) if suffix == ".npz" else scipy.io.mmread(path)
    result = sp.csr_array(matrix)
    result.sum_duplicates()
    return result
