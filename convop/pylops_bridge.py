"""The PyLops face of a :class:`~convop.operator.ConvOperator`.

Imported only by :meth:`convop.ConvOperator.to_pylops`, so ``import convop`` never imports pylops.
numpy arrays go through the operator's numpy face; any other array (CuPy on a GPU, ...)
crosses into torch and back by DLPack, without copies, on the operator's device.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pylops
import torch
from pylops.utils.backend import get_array_module

if TYPE_CHECKING:
    from .operator import ConvOperator


class PyLopsConv(pylops.LinearOperator):
    """A convolution as a ``pylops.LinearOperator`` with N-d ``dims`` and ``dimsd``.

    Made by :meth:`convop.ConvOperator.to_pylops`; ``dims == op.input_shape`` and
    ``dimsd == op.output_shape``, so ``P @ x`` takes an array of shape ``op.input_shape``
    (or its flattened form) and returns ``op.output_shape`` (or flat), as PyLops operators do.

    Parameters
    ----------
    op : ConvOperator
        The operator to wrap (shared, not copied).
    name : str, optional
        PyLops' operator name (default ``'C'``).
    frames : int, optional
        Apply the operator to this many independent samples at once (one batched
        convolution per product): ``dims == (frames, *op.input_shape)``. Default: one
        sample, ``dims == op.input_shape``.

    Notes
    -----
    ``matvec``/``rmatvec`` are the convolution and its exact adjoint; ``matmat`` and
    ``rmatmat`` run one batched convolution for all columns. The result dtype follows the
    numpy face of the operator (``np.result_type(op.dtype, x.dtype)``).
    """

    def __init__(
        self, op: ConvOperator, name: str | None = None, *, frames: int | None = None
    ) -> None:
        self.conv = op
        self.frames = frames
        lead = () if frames is None else (frames,)
        super().__init__(
            dtype=None,  # a property: it follows the convop operator's weight
            dims=(*lead, *op.input_shape),
            dimsd=(*lead, *op.output_shape),
            clinear=True,
            explicit=False,
            name="C" if name is None else name,
        )

    @property
    def dtype(self) -> np.dtype:
        """The convop operator's dtype now (it follows the weight)."""
        return self.conv.dtype

    def _apply(self, X: Any, *, adjoint: bool) -> Any:
        """``X`` of shape (n, k) -> (m, k) in X's own array library and device."""
        if isinstance(X, np.ndarray):
            return self.conv._array_product(X, adjoint=adjoint)
        if not hasattr(X, "__dlpack__"):
            raise TypeError(f"x must be a numpy or DLPack array, got {type(X).__name__}")
        x = X if isinstance(X, torch.Tensor) else torch.from_dlpack(X)  # zero-copy view
        if x.device != self.conv.device:
            raise ValueError(
                f"x is on {x.device} but the operator's weight is on {self.conv.device}; "
                f"build the operator from a weight on {x.device}"
            )
        shape_in = self.conv.output_shape if adjoint else self.conv.input_shape
        m, k = math.prod(self.conv.input_shape if adjoint else self.conv.output_shape), x.shape[1]
        batch = x.T.reshape(k, *shape_in)  # (k, *shape_in)
        y = self.conv._product(batch, adjoint=adjoint)  # (k, *shape_out)
        y = y.reshape(k, m).T.contiguous()  # (m, k)
        return y if isinstance(X, torch.Tensor) else get_array_module(X).from_dlpack(y)

    def _vector(self, x: Any, *, adjoint: bool) -> Any:
        if self.frames is None:
            return self._apply(x.reshape(-1, 1), adjoint=adjoint)[:, 0]
        # frame f is the f-th contiguous block: the columns of a (sample, frames) matrix
        return self._apply(x.reshape(self.frames, -1).T, adjoint=adjoint).T.reshape(-1)

    def _matvec(self, x: Any) -> Any:
        return self._vector(x, adjoint=False)

    def _rmatvec(self, x: Any) -> Any:
        return self._vector(x, adjoint=True)

    def _matmat(self, X: Any) -> Any:
        if self.frames is not None:
            return get_array_module(X).stack([self._matvec(c) for c in X.T], axis=1)
        return self._apply(X, adjoint=False)

    def _rmatmat(self, X: Any) -> Any:
        if self.frames is not None:
            return get_array_module(X).stack([self._rmatvec(c) for c in X.T], axis=1)
        return self._apply(X, adjoint=True)

    def __repr__(self) -> str:
        frames = "" if self.frames is None else f", frames={self.frames}"
        return f"<{self.shape[0]}x{self.shape[1]} PyLopsConv({self.conv!r}{frames})>"
