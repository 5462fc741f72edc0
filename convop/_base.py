"""The operator contract: what a convop operator implements, and the faces it gets for it.

Every linear operator of convop (:class:`~convop.operator.ConvOperator`,
:class:`~convop.weight_operator.WeightOperator`, :class:`~convop.deconvolution.Preconditioner`,
and the adjoints and transposes this module makes) is an :class:`Operator`. A subclass
implements only:

- ``input_shape`` and ``output_shape``, the shapes of one sample in and out (given to
  :meth:`Operator.__init__`, which derives ``shape``);
- ``device`` (where products run) and ``torch_dtype`` (the operator's dtype now, one of
  float32, float64, complex64 and complex128), attributes or properties;
- ``name``, which ``repr`` and messages use;
- ``_product(batch, *, adjoint, grad=False)``: the operator (its adjoint if ``adjoint``)
  applied to a torch batch ``(B, *input_shape)`` (``(B, *output_shape)`` for the adjoint)
  on ``device``, giving ``(B, *output_shape)`` (``(B, *input_shape)``). Its dtype rule:
  ``batch`` may be of any floating or complex dtype, and the result is of
  ``torch.promote_types(torch_dtype, batch.dtype)`` (a real operator applied to complex data
  is its linear extension). Without ``grad`` the result carries no autograd graph, whatever
  requires grad; with ``grad`` (only the torch face asks) it is differentiable with respect
  to ``batch`` and to the tensors the operator reads, where the operator supports it.
  Callers validate shapes and devices; ``_product`` never writes into ``batch``;
- where it has adjoints and transposes of its own kind, ``_adjoint()`` and ``_transpose()``
  (the defaults wrap the operator in :class:`Adjoint` and :class:`Transpose`, which apply
  ``_product`` the other way, conjugated for the transpose).

An operator made from another one (a preconditioner, an adjoint) subclasses
:class:`Derived`, which gives it that one's ``device`` and ``torch_dtype``.

Optional, for messages and speed: ``_names`` (what the torch face calls its argument),
``_device_owner`` (what sets the device) and ``_zero_copy_dtype()`` (a faster answer to the
zero-copy test of the numpy face).

In return the base gives, written once: ``shape`` and ``dtype`` (numpy's, following
``torch_dtype``); the numpy face (scipy's ``matvec``, ``rmatvec``, ``matmat``, ``rmatmat``,
``dot`` and ``@``, with numpy's result dtype and the zero-copy path solvers take); the torch
face (:meth:`Operator.apply`, :meth:`Operator.apply_adjoint`); and :meth:`Operator.to_pylops`.
The MPI face (``convop.distributed``) calls ``_product`` on each rank's slab.

The torch face takes one convention: a tensor of shape ``(..., *input_shape)``, any number
of leading (batch) dimensions, none included; flattened samples are refused (reshape them
first: ``t.reshape(*lead, *op.input_shape)``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator

from ._shared.arrays import TORCH_TO_NUMPY, numpy_dtype, result_dtype, to_numpy, to_tensor

if TYPE_CHECKING:
    from .pylops_bridge import PyLopsConv


class Operator(LinearOperator):
    """What every convop operator is: a scipy ``LinearOperator`` with a torch face.

    Not made directly: subclasses implement the contract of :mod:`convop._base`
    (``_product``, ``input_shape``, ``output_shape``, ``device``, ``torch_dtype``, ``name``,
    ``_adjoint``) and get the faces below.

    Parameters
    ----------
    input_shape, output_shape : tuple of int
        The shapes of one sample in and out; vectors of the numpy face are these samples
        flattened in C order, so ``shape == (prod(output_shape), prod(input_shape))``.

    Attributes
    ----------
    input_shape, output_shape : tuple of int
    shape : (int, int)
    dtype : numpy.dtype
        The operator's dtype now (``torch_dtype`` as a numpy dtype).

    Notes
    -----
    Dtypes: the numpy face computes in ``np.result_type(op.dtype, x.dtype)``, as a dense
    matrix would (a float32 operator given float64 data returns float64; a real operator
    given complex data, complex); the torch face in ``torch.promote_types(op's dtype,
    x.dtype)`` and refuses integer tensors, as torch's own operations do.
    """

    #: The names the torch face gives its argument in messages: (apply's, apply_adjoint's).
    _names: tuple[str, str] = ("x", "y")
    #: What sets the operator's device, for messages ("the operator's weight is on cpu").
    _device_owner: str = "weight"

    def __init__(self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> None:
        self.input_shape, self.output_shape = tuple(input_shape), tuple(output_shape)
        # (1, *sample) of a flattened vector in (matvec, rmatvec): the solvers' fast path
        self._vector_shapes = ((1, *self.input_shape), (1, *self.output_shape))
        shape = (math.prod(self.output_shape), math.prod(self.input_shape))
        super().__init__(dtype=None, shape=shape)  # dtype is a property: it follows the operator

    # ------------------------------------------------------------------ description
    @property
    def dtype(self) -> np.dtype:
        """The operator's dtype now, as a numpy dtype."""
        return numpy_dtype(self.torch_dtype)

    @dtype.setter
    def dtype(self, value) -> None:
        if value is not None:  # scipy's __init__ assigns None
            raise AttributeError(
                f"{type(self).__name__}.dtype follows the operator and cannot be set"
            )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name}, input_shape={self.input_shape}, "
            f"output_shape={self.output_shape}, dtype={self.dtype}, device={self.device})"
        )

    # ------------------------------------------------------------------ torch face
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the operator to a batch of tensors.

        Parameters
        ----------
        x : torch.Tensor
            Shape ``(..., *input_shape)``, any leading dimensions (none for one sample), on
            the operator's device; floating-point or complex.

        Returns
        -------
        torch.Tensor
            Shape ``(..., *output_shape)``, in ``torch.promote_types`` of the operator's and
            ``x``'s dtypes; differentiable with respect to ``x`` (and to the tensors the
            operator reads, where it supports that).

        Examples
        --------
        >>> import torch, convop
        >>> op = convop.conv1d(torch.tensor([[[1.0, -1.0]]]), (1, 4))
        >>> op.apply(torch.tensor([[1.0, 2.0, 4.0, 8.0]]))
        tensor([[-1., -2., -4.]])
        >>> op.apply(torch.ones(2, 3, 1, 4)).shape  # any leading dimensions
        torch.Size([2, 3, 1, 3])
        """
        return self._torch_face(x, adjoint=False)

    def apply_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the adjoint to a batch of tensors.

        Parameters
        ----------
        y : torch.Tensor
            Shape ``(..., *output_shape)``, any leading dimensions, on the operator's device.

        Returns
        -------
        torch.Tensor
            Shape ``(..., *input_shape)``, differentiable like :meth:`apply`.

        Examples
        --------
        >>> import torch, convop
        >>> op = convop.conv1d(torch.tensor([[[1.0, -1.0]]]), (1, 4))
        >>> op.apply_adjoint(torch.tensor([[1.0, 0.0, 0.0]]))
        tensor([[ 1., -1.,  0.,  0.]])
        """
        return self._torch_face(y, adjoint=True)

    def _torch_face(self, x: torch.Tensor, *, adjoint: bool) -> torch.Tensor:
        """:meth:`apply` (:meth:`apply_adjoint` if ``adjoint``): validated, then batched."""
        name = self._names[adjoint]
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        shape_in = self.output_shape if adjoint else self.input_shape
        k = len(shape_in)
        if x.ndim < k or x.shape[x.ndim - k :] != shape_in:
            raise ValueError(
                f"{name} must have shape (..., {', '.join(map(str, shape_in))}), got "
                f"{tuple(x.shape)}; reshape flattened samples to (..., *"
                f"{'output' if adjoint else 'input'}_shape)"
            )
        if x.layout != torch.strided:
            raise TypeError(f"{name} must be a dense (strided) tensor, got layout {x.layout}")
        device = self.device
        if x.device != device:
            raise ValueError(
                f"{name} is on {x.device} but the operator's {self._device_owner} is on "
                f"{device}; move it with .to({str(device)!r})"
            )
        if not (x.is_floating_point() or x.is_complex()):
            raise TypeError(f"{name} must be a floating-point or complex tensor, got {x.dtype}")
        if x.ndim == k + 1:  # already one batch dimension: no reshapes (a few us per call)
            return self._product(x, adjoint=adjoint, grad=True)
        lead = x.shape[: x.ndim - k]
        batch = x.reshape(math.prod(lead), *shape_in)  # (B, *shape_in)
        out = self._product(batch, adjoint=adjoint, grad=True)  # (B, *shape_out)
        return out.reshape(*lead, *out.shape[1:])

    # ------------------------------------------------------------------ numpy (scipy) face
    def _array_product(self, X: np.ndarray, *, adjoint: bool) -> np.ndarray:
        """The numpy faces' entry point (scipy, PyLops): every column of ``X`` at once.

        ``X`` is ``(n, k)``; the result ``(m, k)`` in ``np.result_type(op.dtype, X.dtype)``,
        from one batched :meth:`_product`. ``X`` is never written to.
        """
        X = np.asarray(X)
        dtype = result_dtype(self.dtype, X.dtype, "x")
        shape_in = self.output_shape if adjoint else self.input_shape
        m, k = self.shape[1] if adjoint else self.shape[0], X.shape[1]
        batch = to_tensor(X.T, dtype, self.device).reshape(k, *shape_in)  # (k, *shape_in)
        out = self._product(batch, adjoint=adjoint)  # (k, *shape_out)
        return to_numpy(out.reshape(k, m)).T

    def _vector(self, x, *, adjoint: bool) -> np.ndarray:
        """matvec (rmatvec if ``adjoint``) of one flattened sample, validated."""
        n = self.shape[0] if adjoint else self.shape[1]
        if type(x) is np.ndarray and x.shape == (n,) and x.dtype == self._zero_copy_dtype():
            flags = x.flags  # a new object at every access (what solvers pass is below)
            if flags.c_contiguous and flags.aligned and flags.writeable:
                # one view in, one view out (the general path costs ~20 us more)
                t = torch.from_numpy(x.reshape(self._vector_shapes[adjoint]))  # (1, *sample)
                y = self._product(t, adjoint=adjoint)  # (1, *sample_out)
                return (y.resolve_conj() if y.is_conj() else y).numpy().reshape(-1)
        sample = self.output_shape if adjoint else self.input_shape
        x = np.asanyarray(x)
        _check_vector(x, n, sample)
        y = self._array_product(np.reshape(x, (-1, 1)), adjoint=adjoint)[:, 0]
        return y.reshape(self.shape[1] if adjoint else self.shape[0], *x.shape[1:])

    def _zero_copy_dtype(self) -> np.dtype | None:
        """The dtype of the vectors that take the numpy face's zero-copy path, or ``None``.

        The operator's own dtype where it runs on the CPU. Nothing needs validating here
        (``_product`` validates); a subclass may answer faster than this default, which
        the solvers' path calls at every product.
        """
        return TORCH_TO_NUMPY.get(self.torch_dtype) if self.device.type == "cpu" else None

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        return self._array_product(X, adjoint=False)

    def _rmatmat(self, X: np.ndarray) -> np.ndarray:
        return self._array_product(X, adjoint=True)

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._array_product(np.reshape(x, (-1, 1)), adjoint=False)[:, 0]

    def _rmatvec(self, x: np.ndarray) -> np.ndarray:
        return self._array_product(np.reshape(x, (-1, 1)), adjoint=True)[:, 0]

    # Overrides of scipy's public methods, each kept because it pays (benchmarks/
    # bench_operators.py, "layer" rows): matvec, rmatvec and dot skip scipy's dispatch for
    # the one-vector case solvers call (about 20-40 us of a 100 us product on a small layer);
    # matmat and rmatmat only add an error message that names the sample shape. ``@`` needs
    # no override: scipy's __matmul__ calls dot.
    def matvec(self, x):
        """The operator applied to one flattened sample.

        Parameters
        ----------
        x : array_like
            Shape ``(n,)`` or ``(n, 1)``: a sample of ``input_shape``, flattened in C order.

        Returns
        -------
        numpy.ndarray
            Shape ``(m,)`` or ``(m, 1)`` like ``x``, in ``np.result_type(op.dtype, x.dtype)``.
        """
        return self._vector(x, adjoint=False)

    def rmatvec(self, x):
        """The adjoint applied to one flattened output sample.

        Parameters
        ----------
        x : array_like
            Shape ``(m,)`` or ``(m, 1)``: a sample of ``output_shape``, flattened.

        Returns
        -------
        numpy.ndarray
            Shape ``(n,)`` or ``(n, 1)`` like ``x``.
        """
        return self._vector(x, adjoint=True)

    def dot(self, x):
        """``op @ x``: :meth:`matvec` for a vector, :meth:`matmat` for a matrix.

        Parameters
        ----------
        x : array_like, scalar or LinearOperator
            Operators and scalars compose as in scipy (``op @ other_operator`` is a product
            operator, ``op.dot(2.0)`` a scaled one).

        Returns
        -------
        numpy.ndarray or LinearOperator
        """
        if type(x) is np.ndarray and x.ndim == 1:  # skip scipy's dispatch for the common case
            return self._vector(x, adjoint=False)
        return super().dot(x)

    def matmat(self, X):
        """The operator applied to each column of ``X``, as one batched product.

        Parameters
        ----------
        X : array_like
            Shape ``(n, k)``: one flattened input sample per column.

        Returns
        -------
        numpy.ndarray
            Shape ``(m, k)``, in ``np.result_type(op.dtype, X.dtype)``.
        """
        _check_matrix(X, self.shape[1], self.input_shape)
        return super().matmat(X)

    def rmatmat(self, X):
        """``op.H.matmat(X)``, without making ``op.H``: the adjoint of each column at once.

        Parameters
        ----------
        X : array_like
            Shape ``(m, k)``, ``k`` flattened samples of ``output_shape``.

        Returns
        -------
        numpy.ndarray
            Shape ``(n, k)``, in the dtype :meth:`matmat` gives.
        """
        _check_matrix(X, self.shape[0], self.output_shape)
        return super().rmatmat(X)

    # ------------------------------------------------------------------ adjoint, transpose
    def _adjoint(self) -> Operator:
        return Adjoint(self)

    def _transpose(self) -> Operator:
        return Transpose(self)

    # ------------------------------------------------------------------ pylops face
    def to_pylops(self, name: str | None = None) -> PyLopsConv:
        """The operator as a ``pylops.LinearOperator`` with N-d ``dims`` and ``dimsd``.

        ``dims == op.input_shape`` and ``dimsd == op.output_shape``, so ``P @ x`` works on
        N-d arrays; it composes with PyLops operators (``VStack``, ``BlockDiag``,
        ``Laplacian``, ...) and runs in PyLops solvers. numpy arrays use the numpy face;
        CuPy arrays cross into torch by DLPack without copies (on the operator's device).
        pylops is imported only here.

        Parameters
        ----------
        name : str, optional
            PyLops' operator name.

        Returns
        -------
        convop.pylops_bridge.PyLopsConv

        Examples
        --------
        >>> import numpy as np, pylops, torch, convop
        >>> op = convop.conv2d(torch.ones(1, 1, 3, 3, dtype=torch.float64), (1, 8, 8),
        ...                    padding="same", padding_mode="reflect")
        >>> P = op.to_pylops()
        >>> P.dims, P.dimsd
        ((1, 8, 8), (1, 8, 8))
        >>> (P @ np.ones((1, 8, 8))).shape
        (1, 8, 8)
        >>> bool(pylops.utils.dottest(P, *P.shape, rtol=1e-10))
        True
        """
        from .pylops_bridge import PyLopsConv

        return PyLopsConv(self, name=name)


class Derived(Operator):
    """An operator made from another one: it runs on that one's device, in its dtype.

    Parameters
    ----------
    op : Operator
        The operator it is made from (shared, not copied), kept as ``operator``.
    input_shape, output_shape : tuple of int
        Its own sample shapes.
    """

    def __init__(self, op: Operator, input_shape: tuple[int, ...],
                 output_shape: tuple[int, ...]) -> None:  # fmt: skip
        self.operator = op
        super().__init__(input_shape, output_shape)

    @property
    def device(self) -> torch.device:
        """The device of the operator it is made from."""
        return self.operator.device

    @property
    def torch_dtype(self) -> torch.dtype:
        """The dtype now of the operator it is made from."""
        return self.operator.torch_dtype


class _Reversed(Derived):
    """An operator's adjoint or transpose: the shapes and the torch face's names swapped.

    Parameters
    ----------
    op : Operator
        The operator (shared, not copied); ``Adjoint(op).H`` and ``Transpose(op).T`` are
        ``op`` again.
    """

    #: ``'adjoint'`` or ``'transpose'``, for the name.
    _kind: str

    def __init__(self, op: Operator) -> None:
        self._names = op._names[::-1]
        self._device_owner = op._device_owner
        super().__init__(op, op.output_shape, op.input_shape)

    @property
    def name(self) -> str:
        """``'adjoint of ...'`` or ``'transpose of ...'``."""
        return f"{self._kind} of {self.operator.name}"


class Adjoint(_Reversed):
    """``Adjoint(op)``: the adjoint of an :class:`Operator` that has none of its own kind."""

    _kind = "adjoint"

    def _product(self, batch: torch.Tensor, *, adjoint: bool, grad: bool = False) -> torch.Tensor:
        return self.operator._product(batch, adjoint=not adjoint, grad=grad)

    def _adjoint(self) -> Operator:
        return self.operator


class Transpose(_Reversed):
    """``Transpose(op)``: ``A^T = conj(A^H)`` of an :class:`Operator`, ``conj(A^H conj(y))``."""

    _kind = "transpose"

    def _product(self, batch: torch.Tensor, *, adjoint: bool, grad: bool = False) -> torch.Tensor:
        out = self.operator._product(batch.conj(), adjoint=not adjoint, grad=grad)
        return out.conj().resolve_conj()  # a tensor of its own, not a lazily conjugated view

    def _transpose(self) -> Operator:
        return self.operator


def _check_vector(x, n: int, sample: tuple) -> None:
    shape = np.shape(x)
    if shape not in ((n,), (n, 1)):
        raise ValueError(
            f"x must have shape ({n},) or ({n}, 1), a flattened sample of shape {sample}, "
            f"got shape {shape}"
        )


def _check_matrix(X, n: int, sample: tuple) -> None:
    shape = np.shape(X)
    if len(shape) != 2 or shape[0] != n:
        raise ValueError(
            f"X must have shape ({n}, k), one flattened sample of shape {sample} per "
            f"column, got shape {shape}"
        )
