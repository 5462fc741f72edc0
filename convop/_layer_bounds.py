"""The Lipschitz bound of each kind of layer but convolutions, for :func:`convop.lipschitz`.

:data:`BOUNDS` maps a ``torch.nn`` class to its bound, a function of the module, its input
sample's shape and its output's: ``nn.Linear`` exactly (its matrix's 2-norm), pooling per
dimension (max: the square root of the most windows a sample falls in; average: the exact
norms of its one-dimensional factors, or Schur's test [1]_), eval-mode batch norm by its
largest scale, dropout in eval mode as the identity, and activations by the supremum of
their slope.

Those suprema are certified, never estimates: each is rounded *up*, and the comment beside
it says where the slope peaks (the tests check every one against the maximum found in
40-digit arithmetic). Activations with parameters (ELU, CELU, Softplus, PReLU, RReLU,
LeakyReLU) get theirs from the parameters, and are refused where a parameter makes them not
Lipschitz. Conv layers map to ``None``: :mod:`convop.layer_norms` bounds them by
:func:`convop.opnorm`.

References
----------
.. [1] I. Schur, "Bemerkungen zur Theorie der beschränkten Bilinearformen mit unendlich
   vielen Veränderlichen," J. Reine Angew. Math. 140 (1911), 1-28.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .spectral import MARGIN, check_finite


def _up(x: float) -> float:
    """The float after ``x``: at least the real number that ``x`` is the rounding of."""
    return math.nextafter(x, math.inf)


#: The conv layers: bounded by their operator norm (:func:`convop.opnorm`).
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
         nn.ConvTranspose3d)  # fmt: skip
#: Parameter-free elementwise maps and reshapes: sup |f'|, rounded up.
_CONSTANT = {
    nn.Identity: 1.0,
    nn.Flatten: 1.0,
    nn.Unflatten: 1.0,
    nn.ReLU: 1.0,
    nn.ReLU6: 1.0,
    nn.Hardtanh: 1.0,
    nn.Tanh: 1.0,
    nn.Softsign: 1.0,
    nn.LogSigmoid: 1.0,
    nn.Tanhshrink: 1.0,  # tanh(x)^2
    nn.Softshrink: 1.0,
    nn.Sigmoid: 0.25,  # at 0
    nn.Hardsigmoid: _up(1 / 6),  # on (-3, 3); the float nearest 1/6 is below it
    nn.Hardswish: 1.5,  # (2x + 3) / 6 as x -> 3
    nn.SiLU: 1.0998394,  # sigmoid(x) (1 + x sigmoid(-x)): 1.0998393201 at x = 2.39936
    nn.Mish: 1.0884982,  # 1.0884981613 at x = 1.49057
    nn.SELU: 1.7580994,  # scale * alpha = 1.7580993408, as x -> 0 from below
}
#: nn.GELU by its ``approximate``: Phi(x) + x phi(x) is 1.1289041452 at x = sqrt(2); the
#: tanh form peaks at 1.1289930687 (x = 1.41850).
_GELU = {"none": 1.1289042, "tanh": 1.1289931}
#: The pooling layers, and the dimensions they pool.
_POOLS = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3, nn.AvgPool1d: 1, nn.AvgPool2d: 2,
          nn.AvgPool3d: 3, nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2,
          nn.AdaptiveMaxPool3d: 3, nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2,
          nn.AdaptiveAvgPool3d: 3}  # fmt: skip
#: Layers bounded only in eval mode (with running statistics; with ``p = 0`` for dropout).
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
            nn.FeatureAlphaDropout)  # fmt: skip


def _linear_bound(module: nn.Linear, *_) -> float:
    w = module.weight.detach()
    check_finite(w, "the weight of nn.Linear")
    w = w.to(torch.complex128 if w.is_complex() else torch.float64)
    return float(torch.linalg.matrix_norm(w, ord=2)) * (1 + MARGIN)


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"lipschitz(): {what} must be finite, got {value!r}")
    return value


def _elu_bound(module: nn.ELU, *_) -> float:
    # slope 1 above 0, alpha e^x below: |alpha| as x -> 0 (alpha may be negative)
    return max(1.0, abs(_finite(float(module.alpha), "ELU's alpha")))


def _celu_bound(module: nn.CELU, *_) -> float:
    # slope 1 above 0, exp(x / alpha) below: at most 1 for alpha > 0, unbounded for alpha < 0
    alpha = _finite(float(module.alpha), "CELU's alpha")
    if alpha <= 0:
        raise ValueError(
            f"lipschitz(): CELU's alpha must be positive, got {alpha!r}: its slope exp(x/alpha) "
            f"is unbounded below 0 then"
        )
    return 1.0


def _softplus_bound(module: nn.Softplus, *_) -> float:
    """1 (the slope is ``sigmoid(beta x)``), where the switch to the identity is continuous.

    Above ``beta x = threshold`` torch returns ``x``, which is ``log1p(exp(-threshold)) /
    |beta|`` below ``softplus`` there: a jump no Lipschitz constant covers. Accepted where
    the jump is below single-precision round-off of the output at the switch (threshold
    >= 14; 1e-10 relative at the default 20), refused otherwise.
    """
    beta = _finite(float(module.beta), "Softplus's beta")
    threshold = _finite(float(module.threshold), "Softplus's threshold")
    if beta == 0:
        raise ValueError("lipschitz(): Softplus's beta must be non-zero, got 0.0")
    jump = math.log1p(math.exp(-threshold)) if threshold > -700 else -threshold
    if jump > 2.0**-24 * abs(threshold):
        raise ValueError(
            f"lipschitz(): Softplus(threshold={threshold!r}) jumps by {jump / abs(beta):.3g} "
            f"where it switches to the identity, so it is not Lipschitz; expected a threshold "
            f"of at least 14 (the default is 20)"
        )
    return 1.0


def _prelu_bound(module: nn.PReLU, *_) -> float:
    w = module.weight.detach()
    check_finite(w, "the weight of nn.PReLU")
    return max(1.0, float(w.abs().max()))


def _rrelu_bound(module: nn.RReLU, *_) -> float:
    # eval mode: the fixed slope (lower + upper) / 2 below 0
    slope = abs(_finite(float(module.lower) + float(module.upper), "RReLU's lower + upper"))
    return max(1.0, _up(slope / 2))


def _batch_norm_bound(module: nn.modules.batchnorm._BatchNorm, *_) -> float:
    scale = 1 / torch.sqrt(module.running_var.double() + module.eps)
    if module.affine:
        scale = scale * module.weight.detach().double()
    check_finite(scale, f"the scale weight / sqrt(running_var + eps) of {type(module).__name__}")
    return float(scale.abs().max()) * (1 + MARGIN)


def _per_dim(value: object, nd: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * nd


def _pool_bound(module: nn.Module, shape: tuple[int, ...], out: tuple[int, ...]) -> float:
    """Lipschitz bound of a pooling layer, the product of one factor per dimension.

    Pooling acts per dimension: a sample is in the windows of its coordinates, and torch's
    average divisor is a product of one count per dimension. Max pooling changes each output
    by at most the largest change in its window, so ``||Δy||² <= sum_i hits_i |Δx_i|²`` with
    ``hits_i`` the windows sample ``i`` falls in: the bound ``sqrt(max hits)`` (attained by a
    change at that sample alone). Average pooling is linear and a Kronecker product of one
    matrix per dimension, whose norms multiply: each is computed exactly (up to 2**20
    entries), or bounded by ``||A||² <= max row sum * max column sum`` (Schur's test).
    """
    kind = next(c for c in type(module).__mro__ if c in _POOLS)
    nd = _POOLS[kind]
    adaptive = kind.__name__.startswith("Adaptive")
    average = "Avg" in kind.__name__
    if not adaptive:
        kernel = _per_dim(module.kernel_size, nd)
        stride = _per_dim(module.stride if module.stride else module.kernel_size, nd)
        padding = _per_dim(module.padding, nd)
        dilation = _per_dim(getattr(module, "dilation", 1), nd)
    override = getattr(module, "divisor_override", None)  # AvgPool2d and 3d only
    bound = 1.0
    for i, (n, m) in enumerate(zip(shape[-nd:], out[-nd:])):
        index = torch.arange(m)
        if adaptive:  # windows [floor(j n / m), ceil((j + 1) n / m))
            starts, lengths, step = index * n // m, -(-(index + 1) * n // m) - index * n // m, 1
        else:
            starts = index * stride[i] - padding[i]
            lengths, step = torch.full((m,), kernel[i]), dilation[i]
        taps = starts[:, None] + step * torch.arange(int(lengths.max()))  # (m, longest window)
        inside = (torch.arange(taps.shape[1]) < lengths[:, None]) & (taps >= 0) & (taps < n)
        if not average:
            bound *= int(torch.bincount(taps[inside], minlength=n).max())
            continue
        if adaptive:
            divisor = lengths
        elif override is not None:
            divisor = torch.ones(m, dtype=torch.int64)
        elif module.count_include_pad:  # the window clipped to the padded input
            divisor = torch.clamp(starts + kernel[i], max=n + padding[i]) - starts
        else:
            divisor = inside.sum(1)
        share = (1 / divisor.double())[:, None].expand(taps.shape)[inside]
        if m * n <= 2**20:
            matrix = torch.zeros((m, n), dtype=torch.float64)  # (output, input) on this dim
            window = index[:, None].expand(taps.shape)[inside]
            matrix.index_put_((window, taps[inside]), share, accumulate=True)
            bound *= float(torch.linalg.matrix_norm(matrix, ord=2))
        else:
            rows = float((inside.sum(1) / divisor.double()).max())
            columns = float(torch.bincount(taps[inside], weights=share, minlength=n).max())
            bound *= math.sqrt(rows * columns)
    if not average:
        root = math.isqrt(int(bound))
        return float(root) if root * root == bound else _up(math.sqrt(bound))
    if override is not None:
        bound /= override
    return bound * (1 + MARGIN)


def _dropout_bound(*_) -> float:
    return 1.0  # eval mode (or p = 0): the identity


_Bound = Callable[[nn.Module, tuple[int, ...], tuple[int, ...]], float]
#: The bound of each layer class, from the module, its input and its output sample shapes.
BOUNDS: dict[type, _Bound | None] = {
    nn.Linear: _linear_bound,
    **{kind: (lambda *_, c=c: c) for kind, c in _CONSTANT.items()},
    nn.GELU: lambda module, *_: _GELU[module.approximate],
    nn.LeakyReLU: lambda module, *_: max(
        1.0, abs(_finite(float(module.negative_slope), "LeakyReLU's negative_slope"))
    ),
    nn.ELU: _elu_bound,
    nn.CELU: _celu_bound,
    nn.Softplus: _softplus_bound,
    nn.PReLU: _prelu_bound,
    nn.RReLU: _rrelu_bound,
    **dict.fromkeys(_POOLS, _pool_bound),
    **dict.fromkeys(BATCH_NORMS, _batch_norm_bound),
    **dict.fromkeys(DROPOUTS, _dropout_bound),
    **dict.fromkeys(CONVS, None),  # by convop.opnorm, in convop.layer_norms
}
