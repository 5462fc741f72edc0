"""The PyLops face of every convop operator.

Imported only by ``to_pylops()`` (:meth:`convop._base.Operator.to_pylops`), so
``import convop`` never imports pylops. :class:`PyLopsConv` wraps any operator of the
``convop._base`` contract (a :class:`~convop.operator.ConvOperator`, a
:class:`~convop.weight_operator.WeightOperator`, a :class:`~convop.deconvolution.Preconditioner`,
their adjoints): numpy arrays go through the operator's numpy face; any other array (CuPy on
a GPU, ...) crosses into torch and back by DLPack, without copies, on the operator's device.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pylops
import torch
from pylops.utils.backend import get_array_module

if TYPE_CHECKING:
    from ._base import Operator


class PyLopsConv(pylops.LinearOperator):
    """A convop operator as a ``pylops.LinearOperator`` with N-d ``dims`` and ``dimsd``.

    Made by ``op.to_pylops()``; ``dims == op.input_shape`` and ``dimsd == op.output_shape``,
    so ``P @ x`` takes an array of shape ``op.input_shape`` (or its flattened form) and
    returns ``op.output_shape`` (or flat), as PyLops operators do.

    Parameters
    ----------
    op : convop._base.Operator
        The operator to wrap (shared, not copied): a ``ConvOperator``, ``WeightOperator``,
        ``Preconditioner``, or any other operator of convop's contract.
    name : str, optional
        PyLops' operator name (default ``'C'``).
    frames : int, optional
        Apply the operator to this many independent samples at once (one batched
        product): ``dims == (frames, *op.input_shape)``. Default: one sample,
        ``dims == op.input_shape``.

    Attributes
    ----------
    operator : convop._base.Operator
        The operator wrapped (also as ``conv``, its name from when only convolutions were
        wrapped).
    frames : int or None

    Notes
    -----
    ``matvec``/``rmatvec`` are the operator and its exact adjoint; ``matmat`` and
    ``rmatmat`` run one batched product for all columns (and all frames). The result dtype
    follows the numpy face of the operator (``np.result_type(op.dtype, x.dtype)``).
    """

    def __init__(
        self, op: Operator, name: str | None = None, *, frames: int | None = None
    ) -> None:
        self.operator = self.conv = op
        self.frames = frames
        lead = () if frames is None else (frames,)
        super().__init__(
            dtype=None,  # a property: it follows the convop operator (its weight)
            dims=(*lead, *op.input_shape),
            dimsd=(*lead, *op.output_shape),
            clinear=True,
            explicit=False,
            name="C" if name is None else name,
        )

    @property
    def dtype(self) -> np.dtype:
        """The convop operator's dtype now (it follows the weight)."""
        return self.operator.dtype

    def _apply(self, X: Any, *, adjoint: bool) -> Any:
        """``X`` of shape (n, k) -> (m, k) in X's own array library and device."""
        op = self.operator
        if isinstance(X, np.ndarray):
            return op._array_product(X, adjoint=adjoint)
        if not hasattr(X, "__dlpack__"):
            raise TypeError(f"x must be a numpy or DLPack array, got {type(X).__name__}")
        x = X if isinstance(X, torch.Tensor) else torch.from_dlpack(X)  # zero-copy view
        if x.device != op.device:
            raise ValueError(
                f"x is on {x.device} but the operator's {op._device_owner} is on {op.device}; "
                f"build the operator on {x.device}"
            )
        shape_in = op.output_shape if adjoint else op.input_shape
        m, k = math.prod(op.input_shape if adjoint else op.output_shape), x.shape[1]
        batch = x.T.reshape(k, *shape_in)  # (k, *shape_in)
        y = op._product(batch, adjoint=adjoint)  # (k, *shape_out)
        y = y.reshape(k, m).T.resolve_conj().contiguous()  # (m, k)
        return y if isinstance(X, torch.Tensor) else get_array_module(X).from_dlpack(y)

    def _columns(self, X: Any, *, adjoint: bool) -> Any:
        """``matmat`` (``rmatmat``): every column, and every frame of it, in one product."""
        if self.frames is None:
            return self._apply(X, adjoint=adjoint)
        # frame f of a column is its f-th contiguous block: (F * n, k) -> (n, F * k) and back
        f, k = self.frames, X.shape[1]
        blocks = _swap(X.reshape(f, -1, k)).reshape(-1, f * k)
        out = self._apply(blocks, adjoint=adjoint)  # (m, F * k)
        return _swap(out.reshape(-1, f, k)).reshape(-1, k)

    def _matvec(self, x: Any) -> Any:
        return self._columns(x.reshape(-1, 1), adjoint=False)[:, 0]

    def _rmatvec(self, x: Any) -> Any:
        return self._columns(x.reshape(-1, 1), adjoint=True)[:, 0]

    def _matmat(self, X: Any) -> Any:
        return self._columns(X, adjoint=False)

    def _rmatmat(self, X: Any) -> Any:
        return self._columns(X, adjoint=True)

    def __repr__(self) -> str:
        frames = "" if self.frames is None else f", frames={self.frames}"
        return f"<{self.shape[0]}x{self.shape[1]} PyLopsConv({self.operator!r}{frames})>"


def _swap(a: Any) -> Any:
    """``a`` (p, q, r) as (q, p, r), in its own array library."""
    return a.permute(1, 0, 2) if isinstance(a, torch.Tensor) else a.transpose(1, 0, 2)
