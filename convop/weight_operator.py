"""The kernel as the unknown: a convolution of a fixed input, as a linear map of its weight.

Blind deconvolution alternates between estimating the image for a known blur and the blur
for a known image. The second half needs ``w -> conv(x; w)`` for a fixed ``x`` as a linear
operator, and its adjoint, the weight gradient. :class:`WeightOperator` is that operator,
made by :meth:`convop.ConvOperator.weight_operator`; it has the same faces as
:class:`~convop.operator.ConvOperator` (scipy, torch, PyLops).

Both directions run in torch as one batched evaluation, whatever the number of weights:
the forward map is :func:`convop.functional.forward` (or :func:`convop.functional.adjoint`
for an adjoint operator) of a geometry with the weights stacked as extra channels, and
the adjoint is autograd's weight gradient of that one convolution.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator

from . import functional
from ._shared.arrays import NUMPY_TO_TORCH, numpy_dtype, result_dtype, to_numpy, to_tensor
from .geometry import ConvGeometry
from .operator import ConvOperator


class WeightOperator(LinearOperator):
    """A convolution of a fixed input ``x``, as a linear operator of the weight.

    Made by :meth:`convop.ConvOperator.weight_operator`. For a convolution operator ``op``
    and the fixed sample ``x``, ``A = WeightOperator(op, x)`` maps a weight ``w`` of shape
    ``op.geometry.weight_shape``, flattened in C order (``w.reshape(-1)``), to ``op``'s
    output for ``x`` had it that weight (bias excluded), flattened: ``A.shape ==
    (op.shape[0], op.weight.numel())``. Every geometry of ``op`` carries over (stride,
    padding and padding modes, dilation, groups, transposed convolutions, 1-3 D), and so
    does its direction: the operator of ``op.H`` or ``op.T`` maps ``w`` to the adjoint's
    (transpose's) output for ``x``.

    Parameters
    ----------
    op : ConvOperator
        The convolution; only its geometry, direction and dtype are read, at construction
        (never its weight's values).
    x : torch.Tensor or numpy.ndarray
        One sample of ``op.input_shape``, or flattened (``(op.shape[1],)``); need not be
        finite. A tensor is held as given (not copied: products read it at every use, and
        :meth:`apply` is differentiable with respect to it); an array is copied.

    Attributes
    ----------
    x : torch.Tensor
        The fixed input held (the tensor given, or a private copy of the array given).
    geometry : ConvGeometry
        ``op``'s geometry.
    conv_name : str
        Which map of the weight: ``op.name`` (``'conv2d'``, ``'adjoint of conv2d'``, ...),
        or ``'transpose of ...'`` for ``op.T``.
    is_adjoint : bool
        ``True`` for ``A.H``, which maps output samples to weight gradients.
    input_shape, output_shape : tuple of int
        Shapes of one vector in and out: ``geometry.weight_shape`` and ``op.output_shape``
        (swapped for ``A.H``).
    shape : (int, int)
    dtype : numpy.dtype
        ``op.dtype`` promoted with ``x``'s dtype, as ``op`` would compute ``op @ x``
        (numpy's promotion for an array, torch's for a tensor).
    device : torch.device
        Where products run: ``x``'s device for a tensor, ``op``'s for an array.

    Raises
    ------
    TypeError
        If ``op`` is not a ConvOperator, or ``x`` is neither a tensor nor an array, or has
        a dtype no product can use.
    ValueError
        If ``x`` has the wrong shape, or a tensor ``x`` is on the meta device, or the map
        is not linear: an adjoint's output ``conj(w) * x`` is conjugate-linear in a complex
        weight. For complex data use ``op.T``, whose map is linear (and equals ``op.H``'s
        for real weights).

    Notes
    -----
    For a convolution (``s`` stride, ``d`` dilation, ``c`` over the input channels of
    ``o``'s group), the forward map and its adjoint, the weight gradient of
    ``<v, A w>``, are::

        (A w)[o, p]    = sum_{c, k} w[o, c, k] * pad(x)[c, p*s + k*d]
        (A^H v)[o, c, k] = sum_p conj(pad(x)[c, p*s + k*d]) * v[o, p]

    In general ``A w = f(x, w)`` with ``f`` :func:`convop.functional.forward`, or
    :func:`convop.functional.adjoint` (with ``w`` conjugated once more, so that the map is
    linear) for an adjoint operator; ``A^H v`` is the vector-Jacobian product of ``w -> f(x,
    w)`` at ``v``, which is what ``torch.autograd`` gives as the gradient of ``<v, A w>``
    with respect to ``w``. ``matmat``/``rmatmat`` and batches in the torch face run as one
    convolution, not a loop over columns: the ``B`` weights are stacked, group by group, as
    extra output channels of the map (a convolution of the same geometry with ``B`` times
    the channels). The adjoint is autograd's weight gradient of that convolution, which
    first records the forward: it costs about two convolutions.

    Dtypes: the numpy face computes in ``np.result_type(A.dtype, data.dtype)``, the torch
    face in ``torch.promote_types``, as :class:`~convop.operator.ConvOperator` does. A real
    operator applied to complex data is its linear extension (real and imaginary parts
    mapped separately). Building the operator does O(ndim) work; nothing is cached.

    Examples
    --------
    >>> import numpy as np, torch, convop
    >>> from scipy.sparse.linalg import lsqr
    >>> x = torch.arange(6.0, dtype=torch.float64).reshape(1, 6)
    >>> op = convop.conv1d(torch.zeros(1, 1, 2, dtype=torch.float64), (1, 6))
    >>> A = op.weight_operator(x)
    >>> A
    WeightOperator(weight map of conv1d, shape=(5, 2), x_shape=(1, 6), weight_shape=(1, 1, 2),
                   output_shape=(1, 5), kernel_size=(2,), dtype=float64, device=cpu)
    >>> A @ np.array([1.0, -1.0])
    array([-1., -1., -1., -1., -1.])
    >>> A.rmatvec(np.ones(5))  # the weight gradient of sum(conv(x; w))
    array([10., 15.])

    Blind deconvolution's kernel step: recover the kernel from the image and its blur.

    >>> blur = convop.conv1d(torch.tensor([[[0.75, 0.25]]], dtype=torch.float64), (1, 6))
    >>> y = blur @ x.numpy().ravel()
    >>> lsqr(A, y, atol=1e-12, btol=1e-12)[0].round(12)
    array([0.75, 0.25])
    """

    def __init__(self, op: ConvOperator, x: torch.Tensor | np.ndarray) -> None:
        if not isinstance(op, ConvOperator):
            raise TypeError(f"op must be a ConvOperator, got {type(op).__name__}")
        self._x, self._dtype, self.device = _check_x(x, op)
        transpose = "transpose" if op.is_adjoint else "conjugate"
        self.conv_name = f"{transpose} of {op.geometry.name}" if op._conj else op.name
        if (op.is_adjoint != op._conj) and self._dtype.is_complex:  # w -> op(x) uses conj(w)
            advice = "op.T" if op.is_adjoint else f"the {op.geometry.name} itself"
            raise ValueError(
                f"the {self.conv_name} is conjugate-linear in a complex weight (it applies "
                f"conj(w)), so w -> op(x) is not a linear operator; got op.dtype={op.dtype} "
                f"and x.dtype={_dtype_name(x)}. Use {advice}: its map of the weight is linear "
                f"and equal to this one for real weights"
            )
        self.geometry = op.geometry
        self._conv_adjoint = op.is_adjoint
        self.x_shape = op.input_shape
        self._weight_shape = op.geometry.weight_shape
        self._conv_output_shape = op.output_shape
        self._setup(adjoint=False)

    def _setup(self, *, adjoint: bool) -> None:
        self.is_adjoint = adjoint
        spaces = (self._weight_shape, self._conv_output_shape)
        self.input_shape, self.output_shape = spaces[::-1] if adjoint else spaces
        shape = (math.prod(self.output_shape), math.prod(self.input_shape))
        super().__init__(dtype=numpy_dtype(self._dtype), shape=shape)

    # ------------------------------------------------------------------ descriptive
    @property
    def x(self) -> torch.Tensor:
        """The fixed input held: the tensor given, or a private copy of the array given."""
        return self._x

    @property
    def name(self) -> str:
        """``'weight map of conv2d'``, ``'weight gradient of conv2d'`` (the adjoint), ..."""
        return f"{'weight gradient' if self.is_adjoint else 'weight map'} of {self.conv_name}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name}, shape={self.shape}, x_shape={self.x_shape}, "
            f"weight_shape={self._weight_shape}, output_shape={self._conv_output_shape}, "
            f"{self.geometry.describe()}, dtype={self.dtype}, device={self.device})"
        )

    # ------------------------------------------------------------------ the maps, in torch
    def _fixed_input(self, dtype: torch.dtype) -> torch.Tensor:
        """The held ``x`` as a batch of one, in ``dtype`` (differentiable)."""
        x = self._x.reshape(1, *self.x_shape)  # (1, *x_shape)
        return x if x.dtype == dtype else x.to(dtype)

    def _forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``op``'s output for ``x`` (1, *x_shape) with each of ``weights`` (B, B >= 1).

        One convolution: the B weights are stacked as extra output channels of the map
        (group by group, so that each stays in its group), which is a convolution of the
        same geometry with B times the channels; its output is unstacked the same way.
        """
        geom, size = self.geometry, weights.shape[0]
        w_shape, channels = self._weight_shape, self._conv_output_shape[0]
        groups, rest = geom.groups, self._weight_shape[2:]
        if geom.transposed == self._conv_adjoint:  # the map's output channels: weight dim 0
            stacked = weights.reshape(size, groups, w_shape[0] // groups, w_shape[1], *rest)
            stacked = stacked.transpose(0, 1).reshape(size * w_shape[0], w_shape[1], *rest)
        else:  # dim 1, already per group: (B, R, C/g, *k) -> (R, B * C/g, *k)
            stacked = weights.transpose(0, 1).reshape(w_shape[0], size * w_shape[1], *rest)
        if self._conv_adjoint:  # the adjoint conjugates w: conjugate it back
            stacked = stacked.conj()
        out = _stacked_map(geom, size, self._conv_adjoint)(x, stacked)  # (1, B*C, *spatial)
        spatial = out.shape[2:]
        out = out.reshape(groups, size, channels // groups, *spatial).transpose(0, 1)
        return out.reshape(size, channels, *spatial)  # (B, C, *spatial)

    def _map(self, x: torch.Tensor, batch: torch.Tensor, *, gradient: bool) -> torch.Tensor:
        """The forward map for the fixed input ``x``, or with ``gradient`` its adjoint.

        Weights ``batch`` (B, *weight_shape) to (B, *output_shape), or back; each one
        convolution (and its weight gradient) for the whole batch.
        """
        shape_out = self._weight_shape if gradient else self._conv_output_shape
        if batch.shape[0] == 0:  # no convolution has zero channels
            return batch.new_zeros((0, *shape_out))
        if not gradient:
            return self._forward(x, batch)
        # The adjoint of a linear map is its vector-Jacobian product at any point: autograd's
        # weight gradient of the stacked convolution at zero weights (the forward it records
        # first is the one convolution too many), differentiable if y or x require grad.
        # Autograd runs whatever the caller's mode (no_grad, inference_mode).
        graph = torch.is_grad_enabled() and (batch.requires_grad or x.requires_grad)
        with torch.inference_mode(False), torch.enable_grad():
            if x.is_inference():  # made in inference mode: autograd cannot save it
                x = x.clone()
            zero = torch.zeros((batch.shape[0], *self._weight_shape), dtype=batch.dtype,
                               device=batch.device, requires_grad=True)  # fmt: skip
            out = self._forward(x, zero)
            return torch.autograd.grad(out, zero, batch, create_graph=graph)[0]

    # ------------------------------------------------------------------ torch face
    def apply(self, w: torch.Tensor) -> torch.Tensor:
        """Apply the operator to a batch of weights (output samples for ``A.H``).

        Parameters
        ----------
        w : torch.Tensor
            Shape ``(..., *input_shape)`` or flattened ``(..., prod(input_shape))``, any
            leading dimensions, on :attr:`device`; the full shape is matched first.

        Returns
        -------
        torch.Tensor
            Shape ``(..., *output_shape)``, or ``(..., prod(output_shape))`` for flattened
            input; differentiable with respect to ``w`` and the held ``x``.

        Examples
        --------
        >>> import torch, convop
        >>> op = convop.conv1d(torch.zeros(1, 1, 2), (1, 4))
        >>> A = op.weight_operator(torch.tensor([[1.0, 2.0, 4.0, 8.0]]))
        >>> A.apply(torch.tensor([[[[1.0, -1.0]]], [[[0.0, 1.0]]]]))
        tensor([[[-1., -2., -4.]],
        <BLANKLINE>
                [[ 2.,  4.,  8.]]])
        """
        return self._apply(w, adjoint=False)

    def apply_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the adjoint to a batch of output samples: the weight gradients.

        Parameters
        ----------
        y : torch.Tensor
            Shape ``(..., *output_shape)`` or flattened ``(..., prod(output_shape))``, any
            leading dimensions, on :attr:`device`; the full shape is matched first.

        Returns
        -------
        torch.Tensor
            Shape ``(..., *input_shape)``, or ``(..., prod(input_shape))`` for flattened
            input; differentiable with respect to ``y`` and the held ``x``.

        Examples
        --------
        >>> import torch, convop
        >>> op = convop.conv1d(torch.zeros(1, 1, 2), (1, 4))
        >>> A = op.weight_operator(torch.tensor([[1.0, 2.0, 4.0, 8.0]]))
        >>> A.apply_adjoint(torch.ones(2, 3))
        tensor([[ 7., 14.],
                [ 7., 14.]])
        """
        return self._apply(y, adjoint=True)

    def _apply(self, t: torch.Tensor, *, adjoint: bool) -> torch.Tensor:
        gradient = adjoint != self.is_adjoint
        name = "y" if gradient else "w"
        shape_in, shape_out = self.output_shape, self.input_shape
        if not adjoint:
            shape_in, shape_out = shape_out, shape_in
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        k, n = len(shape_in), math.prod(shape_in)
        if t.ndim >= k and tuple(t.shape[t.ndim - k :]) == shape_in:
            lead = t.shape[: t.ndim - k]
        elif t.ndim >= 1 and t.shape[-1] == n:
            lead, shape_out = t.shape[:-1], (math.prod(shape_out),)
        else:
            raise ValueError(
                f"{name} must have shape (..., {', '.join(map(str, shape_in))}) or "
                f"(..., {n}), got {tuple(t.shape)}"
            )
        if t.device != self.device:
            raise ValueError(
                f"{name} is on {t.device} but the operator's x is on {self.device}; "
                f"move it with .to({str(self.device)!r})"
            )
        if not (t.is_floating_point() or t.is_complex()):
            raise TypeError(f"{name} must be a floating-point or complex tensor, got {t.dtype}")
        dtype = torch.promote_types(self._dtype, t.dtype)
        batch = t.to(dtype).reshape(math.prod(lead), *shape_in)  # (B, *shape_in)
        out = self._map(self._fixed_input(dtype), batch, gradient=gradient)
        return out.reshape(*lead, *shape_out)

    # ------------------------------------------------------------------ numpy faces
    def _product(self, batch: torch.Tensor, *, adjoint: bool) -> torch.Tensor:
        """Internal entry point of the array faces (numpy, PyLops).

        ``batch`` is ``(B, *input_shape)`` (``(B, *output_shape)`` if ``adjoint``) on
        :attr:`device`; the result, without autograd, is in ``torch.promote_types(dtype,
        batch.dtype)``. Callers validate shapes and devices.
        """
        dtype = torch.promote_types(self._dtype, batch.dtype)
        x = self._fixed_input(dtype).detach()
        batch = batch.detach().to(dtype)
        return self._map(x, batch, gradient=adjoint != self.is_adjoint)

    def _array_product(self, X: np.ndarray, *, adjoint: bool) -> np.ndarray:
        """Every column of ``X`` (n, k) at once: ``(m, k)`` in ``result_type(dtype, X.dtype)``."""
        X = np.asarray(X)
        gradient = adjoint != self.is_adjoint
        dtype = result_dtype(self.dtype, X.dtype, "y" if gradient else "w")
        shape_in = self.output_shape if adjoint else self.input_shape
        m, k = self.shape[1] if adjoint else self.shape[0], X.shape[1]
        batch = to_tensor(X.T, dtype, self.device).reshape(k, *shape_in)  # (k, *shape_in)
        out = self._product(batch, adjoint=adjoint)  # (k, *shape_out)
        return to_numpy(out.reshape(k, m)).T

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._array_product(np.reshape(x, (-1, 1)), adjoint=False)[:, 0]

    def _rmatvec(self, x: np.ndarray) -> np.ndarray:
        return self._array_product(np.reshape(x, (-1, 1)), adjoint=True)[:, 0]

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        return self._array_product(X, adjoint=False)

    def _rmatmat(self, X: np.ndarray) -> np.ndarray:
        return self._array_product(X, adjoint=True)

    def _adjoint(self) -> WeightOperator:
        adjoint = WeightOperator.__new__(WeightOperator)
        adjoint.__dict__.update(self.__dict__)
        adjoint._setup(adjoint=not self.is_adjoint)
        return adjoint

    # ------------------------------------------------------------------ pylops face
    def to_pylops(self, name: str | None = None):
        """The operator as a ``pylops.LinearOperator`` with N-d ``dims`` and ``dimsd``.

        ``dims == input_shape`` (the weight's shape) and ``dimsd == output_shape``, so
        ``P @ w`` takes a weight and returns an output sample. pylops is imported only here.

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
        >>> op = convop.conv2d(torch.zeros(2, 1, 3, 3, dtype=torch.float64), (1, 6, 6))
        >>> P = op.weight_operator(torch.randn(1, 6, 6, dtype=torch.float64)).to_pylops()
        >>> P.dims, P.dimsd
        ((2, 1, 3, 3), (2, 4, 4))
        >>> bool(pylops.utils.dottest(P, *P.shape, rtol=1e-10))
        True
        """
        from .pylops_bridge import PyLopsConv

        return PyLopsConv(self, name=name)


@functools.lru_cache(maxsize=64)
def _stacked_map(geom: ConvGeometry, size: int, adjoint: bool) -> Callable:
    """:func:`convop.functional.direct` of ``geom`` widened for ``size`` stacked weights.

    ``size`` times the map's output channels (the input channels of an adjoint). Kept per
    (geometry, batch size, direction): validating a geometry costs more than a small product.
    """
    if adjoint:
        wide = dataclasses.replace(geom, in_channels=size * geom.in_channels)
    else:
        wide = dataclasses.replace(geom, out_channels=size * geom.out_channels)
    return functional.direct(wide, adjoint=adjoint)


def _dtype_name(x: object) -> str:
    dtype = getattr(x, "dtype", None)
    return str(dtype).removeprefix("torch.")


def _check_x(x: object, op: ConvOperator) -> tuple[torch.Tensor, torch.dtype, torch.device]:
    """``(x to hold, the operator's torch dtype, its device)``; errors name ``x``."""
    sample, n = op.input_shape, op.shape[1]
    if isinstance(x, np.ndarray):
        _check_x_shape(x.shape, sample, n)
        dtype = result_dtype(op.dtype, x.dtype, "x")
        # a private, native-endian, contiguous copy: the caller keeps their array
        copy = torch.from_numpy(np.array(x, dtype=dtype, order="C", copy=True))
        return copy.to(op.device), NUMPY_TO_TORCH[dtype], op.device
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if x.layout != torch.strided:
        raise TypeError(f"x must be a dense (strided) tensor, got layout {x.layout}")
    if x.is_meta:
        raise ValueError("x is on the meta device, which holds no values; expected data")
    _check_x_shape(tuple(x.shape), sample, n)
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"x must be a floating-point or complex tensor, got x.dtype={x.dtype}")
    weight_dtype = NUMPY_TO_TORCH[op.dtype]
    return x, torch.promote_types(weight_dtype, x.dtype), x.device


def _check_x_shape(shape: tuple, sample: tuple, n: int) -> None:
    if shape not in (sample, (n,)):
        raise ValueError(
            f"x must have shape {sample} (one sample of op.input_shape) or ({n},) "
            f"(flattened), got {shape}"
        )
