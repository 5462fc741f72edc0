"""The kernel as the unknown: a convolution of a fixed input, as a linear map of its weight.

Blind deconvolution alternates between estimating the image for a known blur and the blur
for a known image. The second half needs ``w -> conv(x; w)`` for a fixed ``x`` as a linear
operator, and its adjoint, the weight gradient. :class:`WeightOperator` is that operator,
made by :meth:`convop.ConvOperator.weight_operator`; it implements the operator contract of
``convop._base``, so it has the faces of every convop operator (scipy, torch, PyLops).

Both directions run in torch as one batched evaluation, whatever the number of weights:
the forward map is :func:`convop.functional.forward` (or :func:`convop.functional.adjoint`
for an adjoint operator) of a geometry with the weights stacked as extra channels, and
the adjoint is autograd's weight gradient of that one convolution.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
import torch

from . import functional
from ._base import Operator
from ._shared.arrays import NUMPY_TO_TORCH, result_dtype
from .geometry import ConvGeometry
from .operator import ConvOperator


class WeightOperator(Operator):
    r"""A convolution of a fixed input ``x``, as a linear operator of the weight.

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

    See Also
    --------
    convop.ConvOperator.weight_operator : What makes it, from an operator and an input.
    convop.ConvOperator : The convolution of a fixed weight, as a map of its input.

    Notes
    -----
    For a convolution (:math:`s` stride, :math:`d` dilation, :math:`c` over the input
    channels of :math:`o`'s group, :math:`\tilde x` the padded input), the forward map and
    its adjoint, the weight gradient of :math:`\langle v, A w \rangle`, are

    .. math::

        (A w)[o, p] = \sum_{c, \kappa} w[o, c, \kappa]\, \tilde x[c, p s + \kappa d],
        \qquad
        (A^H v)[o, c, \kappa] = \sum_p \overline{\tilde x[c, p s + \kappa d]}\, v[o, p] .

    In general ``A w = f(x, w)`` with ``f`` :func:`convop.functional.forward`, or
    :func:`convop.functional.adjoint` (with ``w`` conjugated once more, so that the map is
    linear) for an adjoint operator; ``A^H v`` is the vector-Jacobian product of ``w -> f(x,
    w)`` at ``v``, which is what ``torch.autograd`` gives as the gradient of ``<v, A w>``
    with respect to ``w``. ``matmat``/``rmatmat`` and batches in the torch face run as one
    convolution, not a loop over columns: the ``B`` weights are stacked, group by group, as
    extra output channels of the map (a convolution of the same geometry with ``B`` times
    the channels). The adjoint is autograd's weight gradient of that convolution, which
    first records the forward: it costs about two convolutions.

    Its faces are every convop operator's (``convop._base``): the numpy face takes flattened
    weights (``A @ w.reshape(-1)``), the torch face weights in their own shape with any
    leading batch dimensions, ``A.apply(w)`` for ``w`` of shape ``(..., *weight_shape)``,
    and ``A.apply_adjoint(v)`` output samples of shape ``(..., *op.output_shape)``.

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
    >>> A.apply(torch.tensor([[[[1.0, -1.0]]], [[[0.0, 1.0]]]], dtype=torch.float64))
    tensor([[[-1., -1., -1., -1., -1.]],
    <BLANKLINE>
            [[ 1.,  2.,  3.,  4.,  5.]]], dtype=torch.float64)

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

    #: What sets the device, for the torch face's messages.
    _device_owner = "x"

    def _setup(self, *, adjoint: bool) -> None:
        self.is_adjoint = adjoint
        spaces = (self._weight_shape, self._conv_output_shape)
        super().__init__(*(spaces[::-1] if adjoint else spaces))

    @property
    def _names(self) -> tuple[str, str]:
        """The torch face's names of a weight (``w``) and of an output sample (``y``)."""
        return ("y", "w") if self.is_adjoint else ("w", "y")

    @property
    def torch_dtype(self) -> torch.dtype:
        """The operator's dtype (fixed at construction)."""
        return self._dtype

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

    # ------------------------------------------------------------------ the contract
    def _product(self, batch: torch.Tensor, *, adjoint: bool, grad: bool = False) -> torch.Tensor:
        """The map (its adjoint if ``adjoint``) of ``batch`` (the ``convop._base`` contract).

        ``batch`` is ``(B, *input_shape)`` (``(B, *output_shape)`` if ``adjoint``) on
        :attr:`device`; the result is in ``torch.promote_types(dtype, batch.dtype)``,
        differentiable with respect to ``batch`` and the held ``x`` only with ``grad``.
        """
        dtype = torch.promote_types(self._dtype, batch.dtype)
        x = self._fixed_input(dtype)
        if not grad:
            x, batch = x.detach(), batch.detach()
        return self._map(x, batch.to(dtype), gradient=adjoint != self.is_adjoint)

    def _adjoint(self) -> WeightOperator:
        adjoint = WeightOperator.__new__(WeightOperator)
        adjoint.__dict__.update(self.__dict__)
        adjoint._setup(adjoint=not self.is_adjoint)
        return adjoint


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
