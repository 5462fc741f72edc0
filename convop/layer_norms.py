"""Lipschitz constants of conv layers and models, and spectral normalisation by them.

A conv layer's Lipschitz constant (in the 2-norm) is the operator norm of its linear part,
which depends on the input size, the padding mode and the stride, not only on the weight:
``torch.nn.utils.parametrizations.spectral_norm`` normalises by the largest singular value
of the weight reshaped to ``(C_out, -1)``, which neither bounds nor equals it. Here the
norm is the operator's, exact for circulant layers and certified for the rest
(:func:`convop.opnorm`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from . import functional
from .constructors import from_module
from .geometry import ConvGeometry
from .operator import ConvOperator
from .spectral import MARGIN, check_finite, check_rtol, opnorm

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
          nn.ConvTranspose3d)  # fmt: skip
#: Activations and shape changes with a known Lipschitz constant (the supremum of |f'|).
_CONSTANT = {
    nn.ReLU: 1.0,
    nn.ReLU6: 1.0,
    nn.Tanh: 1.0,
    nn.Hardtanh: 1.0,
    nn.Softsign: 1.0,
    nn.Softplus: 1.0,
    nn.Sigmoid: 0.25,
    nn.Hardsigmoid: 1 / 6,
    nn.SiLU: 1.0998393,  # max of d/dx x sigmoid(x), at x ~ 2.3994 (rounded up)
    nn.GELU: 1.1289,  # max of d/dx x Phi(x), at x = sqrt(2) (1.12880..., rounded up)
    nn.Mish: 1.089,  # max of d/dx x tanh(softplus(x)) (1.0886..., rounded up)
    nn.Identity: 1.0,
    nn.Flatten: 1.0,
    nn.Unflatten: 1.0,
    nn.Dropout: 1.0,
    nn.Dropout1d: 1.0,
    nn.Dropout2d: 1.0,
    nn.Dropout3d: 1.0,
}


def _check_shape(input_shape: object) -> tuple[int, ...]:
    if not isinstance(input_shape, Sequence) or isinstance(input_shape, str):
        raise TypeError(f"input_shape must be a tuple of ints, got {type(input_shape).__name__}")
    shape = tuple(input_shape)
    if not shape or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                            for n in shape):  # fmt: skip
        raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {shape!r}")
    return shape


def _next_shape(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The sample shape ``module`` maps ``shape`` to (one forward pass on zeros)."""
    p = next(module.parameters(), None)
    x = torch.zeros((1, *shape), dtype=p.dtype if p is not None else torch.get_default_dtype(),
                    device=p.device if p is not None else None)  # fmt: skip
    with torch.no_grad():
        return tuple(module(x).shape[1:])


def _pool_bound(module: nn.Module, shape: tuple[int, ...]) -> float:
    """Lipschitz bound of a pooling layer.

    ``sqrt(most windows one sample falls in)`` for max pooling, times ``sqrt(window) /
    divisor`` for average pooling.
    """
    nd = len(shape) - 1
    as_tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd  # noqa: E731
    kernel, stride = as_tuple(module.kernel_size), as_tuple(module.stride or module.kernel_size)
    padding = as_tuple(module.padding)
    dilation = as_tuple(getattr(module, "dilation", 1))
    if getattr(module, "ceil_mode", False):
        raise ValueError(
            f"lipschitz(): {type(module).__name__} with ceil_mode=True is not supported"
        )
    count = 1
    for n, k, s, p, d in zip(shape[1:], kernel, stride, padding, dilation):
        starts = range(-p, n + p - d * (k - 1), s)
        hits = [0] * n
        for start in starts:
            for t in range(k):
                i = start + t * d
                if 0 <= i < n:
                    hits[i] += 1
        count *= max(hits)
    if isinstance(module, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        divisor = getattr(module, "divisor_override", None)
        if divisor is None:
            if any(padding) and not module.count_include_pad:
                raise ValueError(
                    f"lipschitz(): {type(module).__name__} with padding and "
                    f"count_include_pad=False is not supported"
                )
            divisor = math.prod(kernel)
        return math.sqrt(count * math.prod(kernel)) / divisor
    return math.sqrt(count)


def layer_bound(module: nn.Module, input_shape: Sequence[int], *, rtol: float = 1e-2) -> float:
    """A certified upper bound on the Lipschitz constant (2-norm) of one layer.

    See :func:`lipschitz`, which multiplies these along a model.
    """
    shape = _check_shape(input_shape)
    if isinstance(module, _CONVS):
        return opnorm(from_module(module, shape), rtol=rtol).upper
    if isinstance(module, nn.Linear):
        w = module.weight.detach()
        check_finite(w, "the weight of nn.Linear")
        w = w.to(torch.complex128 if w.is_complex() else torch.float64)
        return float(torch.linalg.matrix_norm(w, ord=2)) * (1 + MARGIN)
    for kind, constant in _CONSTANT.items():
        if type(module) is kind:
            return constant
    if isinstance(module, nn.LeakyReLU):
        return max(1.0, abs(module.negative_slope))
    if isinstance(module, (nn.ELU, nn.CELU)):
        return max(1.0, module.alpha)
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
                           nn.AvgPool2d, nn.AvgPool3d)):  # fmt: skip
        return _pool_bound(module, shape)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.training or not module.track_running_stats:
            raise ValueError(
                f"lipschitz(): {type(module).__name__} in training mode depends on the batch; "
                f"call model.eval() first"
            )
        scale = 1 / torch.sqrt(module.running_var.double() + module.eps)
        if module.affine:
            scale = scale * module.weight.detach().double()
        return float(scale.abs().max()) * (1 + MARGIN)
    raise TypeError(
        f"lipschitz() has no bound for {type(module).__name__}; it knows conv layers, "
        f"nn.Linear, pooling, eval-mode batch norm, nn.Sequential and common activations"
    )


def lipschitz(model: nn.Module, input_shape: Sequence[int], *, rtol: float = 1e-2) -> float:
    """Certified upper bound on the Lipschitz constant (2-norm) of a layer or a Sequential.

    The product of the layers' certified bounds: conv layers by :func:`convop.opnorm`
    (their norm for *this* input size and padding), ``nn.Linear`` exactly, pooling by the
    most windows a sample falls in, eval-mode batch norm by its largest scale, and
    activations by the supremum of their slope (1 for ReLU, tanh and the like). Biases do
    not change a Lipschitz constant. Nested ``nn.Sequential`` models are walked.

    Parameters
    ----------
    model : torch.nn.Module
        A conv layer, another supported layer, or an ``nn.Sequential`` of them.
    input_shape : tuple of int
        ``(C, *spatial)`` of one input sample, without a batch dimension.
    rtol : float, default 1e-2
        Relative gap passed to :func:`convop.opnorm` for each conv layer (the bound of a
        circulant layer is exact whatever ``rtol``).

    Returns
    -------
    float
        ``L`` with ``||model(x) - model(y)|| <= L ||x - y||`` for all inputs of
        ``input_shape`` (one sample; a batch maps sample by sample).

    Raises
    ------
    TypeError
        For a layer without a known bound (its class is named).
    ValueError
        For batch norm in training mode, or an invalid ``input_shape``.

    Examples
    --------
    >>> import torch, convop
    >>> torch.manual_seed(0)
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Conv2d(1, 4, 3, padding=1, padding_mode="circular"), torch.nn.ReLU(),
    ...     torch.nn.Conv2d(4, 1, 3, padding=1, padding_mode="circular"))
    >>> bound = convop.lipschitz(model, (1, 16, 16))
    >>> x, y = torch.randn(1, 1, 16, 16), torch.randn(1, 1, 16, 16)
    >>> bool((model(x) - model(y)).norm() <= bound * (x - y).norm())
    True
    """
    shape = _check_shape(input_shape)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, nn.Sequential):
        bound = 1.0
        for layer in model:
            bound *= lipschitz(layer, shape, rtol=rtol)
            shape = _next_shape(layer, shape)
        return bound
    return layer_bound(model, shape, rtol=rtol)


# --------------------------------------------------------------------------- normalisation
class ConvSpectralNorm(nn.Module):
    """The parametrization :func:`spectral_normalize` registers: ``weight / ||A(weight)||``.

    In training mode the norm is estimated by power iterations on the layer's operator,
    warm-started from the last forward pass (``n_power_iterations`` each), and differentiated
    as ``<u, A(weight) v>`` for the current singular vector estimates, as Miyato et al.
    (2018) do for the reshaped weight matrix. In eval mode the weight is divided by the
    *certified* upper bound of :func:`convop.opnorm` (exact for circulant layers), so that the
    layer's Lipschitz constant is at most 1 for certain; that bound is kept as long as the
    weight's values are unchanged.
    """

    def __init__(self, geometry: ConvGeometry, weight: torch.Tensor, *, rtol: float,
                 n_power_iterations: int) -> None:  # fmt: skip
        super().__init__()
        self.geometry = geometry
        self.rtol = rtol
        self.n_power_iterations = n_power_iterations
        gen = torch.Generator(device=weight.device).manual_seed(0)
        v = torch.randn((1, *geometry.input_shape), generator=gen, dtype=weight.dtype,
                        device=weight.device)  # fmt: skip
        self.register_buffer("_v", v / torch.linalg.vector_norm(v))
        self._certified: tuple[torch.Tensor, float] | None = None

    def _operator_norm_bound(self, weight: torch.Tensor) -> float:
        kept = self._certified
        w = weight.detach()
        if kept is not None and kept[0].dtype == w.dtype and torch.equal(kept[0], w):
            return kept[1]
        upper = opnorm(ConvOperator(w, self.geometry), rtol=self.rtol).upper
        self._certified = (w.clone(), upper)
        return upper

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """The normalised weight (see the class)."""
        if not self.training:
            return weight / self._operator_norm_bound(weight)
        geom = self.geometry
        with torch.no_grad():
            v = self._v
            for _ in range(self.n_power_iterations):
                u = functional.forward(v, weight, geom)
                u = u / torch.linalg.vector_norm(u).clamp_min(1e-30)
                v = functional.adjoint(u, weight, geom)
                v = v / torch.linalg.vector_norm(v).clamp_min(1e-30)
            self._v.copy_(v)
            u = functional.forward(v, weight, geom)
            u = u / torch.linalg.vector_norm(u).clamp_min(1e-30)
        sigma = torch.vdot(u.reshape(-1), functional.forward(v, weight, geom).reshape(-1)).real
        return weight / sigma


def spectral_normalize(module: nn.Module, input_shape: Sequence[int], *, rtol: float = 1e-2,
                       n_power_iterations: int = 1) -> nn.Module:  # fmt: skip
    """Make a conv layer 1-Lipschitz by its operator norm, for training.

    Registers a :class:`ConvSpectralNorm` parametrization on ``module.weight``
    (``torch.nn.utils.parametrize``): in training mode the weight is divided by a power-
    iteration estimate of the layer's operator norm (differentiable), in eval mode by the
    certified upper bound of :func:`convop.opnorm`, so that the evaluated layer is at most
    1-Lipschitz for certain. Unlike ``torch.nn.utils.parametrizations.spectral_norm``, which
    divides by the norm of the weight reshaped to a matrix, this is the norm of the
    convolution itself, for ``input_shape``, its padding mode and stride.

    Parameters
    ----------
    module : torch.nn.Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d or ConvTranspose3d
    input_shape : tuple of int
        ``(C_in, *spatial)`` of one input sample.
    rtol : float, default 1e-2
        The certified bound's relative gap (eval mode).
    n_power_iterations : int, default 1
        Power iterations per training forward pass.

    Returns
    -------
    torch.nn.Module
        ``module``, parametrized.

    Examples
    --------
    >>> import torch, convop
    >>> torch.manual_seed(0)
    <torch._C.Generator object at ...>
    >>> layer = convop.spectral_normalize(torch.nn.Conv2d(3, 8, 3, padding=1), (3, 16, 16))
    >>> _ = layer.eval()
    >>> convop.lipschitz(layer, (3, 16, 16), rtol=1e-3) <= 1 + 1e-6
    True
    """
    if not isinstance(module, _CONVS):
        raise TypeError(
            f"module must be a torch.nn conv layer (Conv1d/2d/3d, ConvTranspose1d/2d/3d), "
            f"got {type(module).__name__}"
        )
    if (
        isinstance(n_power_iterations, bool)
        or not isinstance(n_power_iterations, int)
        or (n_power_iterations < 1)
    ):
        raise ValueError(f"n_power_iterations must be a positive int, got {n_power_iterations!r}")
    op = from_module(module, _check_shape(input_shape))
    check_rtol(rtol)
    parametrization = ConvSpectralNorm(op.geometry, module.weight.detach(), rtol=rtol,
                                       n_power_iterations=n_power_iterations)  # fmt: skip
    torch.nn.utils.parametrize.register_parametrization(module, "weight", parametrization)
    return module
