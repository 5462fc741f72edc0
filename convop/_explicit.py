"""The exact matrix of a convolution operator, dense or sparse, by index arithmetic.

:class:`ExplicitMatrices` gives :class:`~convop.operator.ConvOperator` its explicit matrices
(``todense``, ``to_dense``, ``tosparse``, ``to_sparse_csr``): each is built from the plan that
the operator makes of its weight and geometry (``_plan()``, a ``convop._materialize.Plan``),
never by probing, and refused with ``MemoryError`` before allocating what cannot fit.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from . import _materialize
from ._shared.arrays import to_numpy
from ._shared.checks import check_choice

#: The formats of :meth:`ExplicitMatrices.tosparse`.
SPARSE_FORMATS = ("csr", "csc", "coo")


class ExplicitMatrices:
    """The explicit-matrix methods of an operator that can plan its matrix (``_plan()``)."""

    shape: tuple[int, int]

    def _plan(self) -> _materialize.Plan:  # pragma: no cover - every user defines it
        raise NotImplementedError

    def todense(self, *, max_bytes: int | None = None, progress: bool | None = None) -> np.ndarray:
        """The exact matrix as a dense numpy array of shape ``op.shape``.

        Built by index arithmetic from the geometry and the weight (no probing), one block
        of rows at a time, straight into the result.

        Parameters
        ----------
        max_bytes : int, optional
            Refuse (``MemoryError``, before allocating) results larger than this. Default:
            half of the memory available now.
        progress : bool, optional
            Show a progress bar; by default only for builds that take several seconds.

        Returns
        -------
        numpy.ndarray
            ``op.dtype``; ``op.H.todense()`` is ``op.todense().conj().T``.

        Examples
        --------
        >>> import numpy as np, torch, convop
        >>> op = convop.conv1d(torch.tensor([[[1.0, 2.0, 3.0]]]), (1, 4), padding=1)
        >>> op.todense()
        array([[2., 3., 0., 0.],
               [1., 2., 3., 0.],
               [0., 1., 2., 3.],
               [0., 0., 1., 2.]], dtype=float32)
        """
        return to_numpy(self.to_dense(max_bytes=max_bytes, progress=progress))

    def to_dense(
        self, *, max_bytes: int | None = None, progress: bool | None = None
    ) -> torch.Tensor:
        """The exact matrix as a dense tensor on the operator's device.

        What :meth:`todense` returns as a numpy array (on the CPU: the same memory).

        Parameters
        ----------
        max_bytes : int, optional
            Refuse (``MemoryError``, before allocating) results larger than this on the
            operator's device. Default: half of the memory available there now.
        progress : bool, optional
            As for :meth:`todense`.

        Returns
        -------
        torch.Tensor
            Shape ``op.shape``, the weight's dtype.

        See Also
        --------
        to_sparse_csr : Only the structural nonzeros, as a torch sparse tensor.
        """
        plan = self._plan()
        return _materialize.dense(plan, max_bytes=max_bytes, progress=progress)

    def tosparse(
        self,
        format: str = "csr",
        *,
        max_bytes: int | None = None,
        progress: bool | None = None,
    ) -> sp.sparray:
        """The exact matrix as a scipy sparse array, in O(nnz) time and memory.

        Only structural entries are stored: every (output, input) pair some kernel tap
        connects, taps that padding folds onto the same input sample summed into one entry.
        The result is canonical (sorted indices, no duplicates).

        Parameters
        ----------
        format : {'csr', 'csc', 'coo'}, default 'csr'
        max_bytes : int, optional
            Refuse (``MemoryError``, before allocating) builds whose peak would exceed this.
            Default: half of the memory available now.
        progress : bool, optional
            Show a progress bar; by default only for builds that take several seconds.

        Returns
        -------
        scipy.sparse.csr_array, csc_array or coo_array
            Shape ``op.shape``, dtype ``op.dtype``; indices int32 when they fit.

        Notes
        -----
        CSR of a convolution and CSC of its adjoint or of a transposed convolution are
        written directly; the other format costs one scipy conversion (about twice the
        result's memory at the peak).

        Examples
        --------
        >>> import torch, convop
        >>> op = convop.conv2d(torch.ones(4, 2, 3, 3), (2, 16, 16), padding=1)
        >>> A = op.tosparse()
        >>> A.shape, A.nnz, A.format
        ((1024, 512), 16928, 'csr')
        """
        check_choice(format, "format", SPARSE_FORMATS)
        plan = self._plan()
        native = "csc" if plan.transpose else "csr"
        arrays = _materialize.compressed(
            plan,
            max_bytes=max_bytes,
            what=f"tosparse({format!r})",
            convert=format != native,
            progress=progress,
        )
        indptr, indices, data = (to_numpy(t) for t in arrays)
        cls = sp.csc_array if plan.transpose else sp.csr_array
        matrix = cls((data, indices, indptr), shape=self.shape)
        matrix.has_sorted_indices = True
        matrix.has_canonical_format = True
        if format == native:
            return matrix
        converted = matrix.asformat(format)
        if format == "coo":
            converted.sum_duplicates()  # sorts into canonical (row-major) order; no duplicates
        return converted

    def to_sparse_csr(
        self, *, max_bytes: int | None = None, progress: bool | None = None
    ) -> torch.Tensor:
        """The exact matrix as a torch sparse CSR tensor on the operator's device.

        Same entries as :meth:`tosparse`; the torch counterpart of ``tensor.to_sparse_csr()``.

        Parameters
        ----------
        max_bytes : int, optional
            Refuse builds whose peak would exceed this on the operator's device (a transposed
            convolution's, built as CSC, counts its conversion). Default: half of the memory
            available there now.
        progress : bool, optional
            As for :meth:`tosparse`.

        Returns
        -------
        torch.Tensor
            Sparse CSR, shape ``op.shape``, the weight's dtype.

        See Also
        --------
        to_dense : Every entry, as a dense tensor.

        Examples
        --------
        >>> import torch, convop
        >>> op = convop.conv1d(torch.ones(1, 1, 2), (1, 3))
        >>> op.to_sparse_csr().to_dense()
        tensor([[1., 1., 0.],
                [0., 1., 1.]])
        """
        plan = self._plan()
        indptr, indices, data = _materialize.compressed(
            plan,
            max_bytes=max_bytes,
            what="to_sparse_csr()",
            convert=plan.transpose,
            progress=progress,
        )
        build = torch.sparse_csc_tensor if plan.transpose else torch.sparse_csr_tensor
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Sparse (CSR|CSC) tensor support is in beta")
            tensor = build(indptr, indices, data, size=self.shape, check_invariants=False)
            return tensor.to_sparse_csr() if plan.transpose else tensor
