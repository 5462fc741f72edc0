"""convop.layer_norms: certified Lipschitz bounds of layers and models, spectral normalisation."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import mpmath as mp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convop

from .test_spectral import dense_norm


def worst_ratio(model: nn.Module, shape: tuple[int, ...], pairs: int = 64) -> float:
    """The largest ``||f(x) - f(y)|| / ||x - y||`` seen over random nearby pairs (a lower
    bound on the Lipschitz constant)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((pairs, *shape), generator=gen, dtype=torch.float64)
    y = x + 1e-3 * torch.randn((pairs, *shape), generator=gen, dtype=torch.float64)
    with torch.no_grad():
        num = (model(x) - model(y)).flatten(1).norm(dim=1)
    return float((num / (x - y).flatten(1).norm(dim=1)).max())


def test_a_conv_layer_bound_is_its_operator_norm():
    torch.manual_seed(0)
    layer = nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect", dtype=torch.float64)
    bound = convop.lipschitz(layer, (2, 9, 9), rtol=1e-3)
    norm = dense_norm(convop.from_module(layer, (2, 9, 9)))
    assert norm <= bound <= norm * (1 + 1e-3)


def test_a_sequential_bound_is_the_product_and_holds():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, dtype=torch.float64),
        nn.LeakyReLU(0.1),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, padding_mode="circular", dtype=torch.float64),
        nn.Sequential(nn.Tanh(), nn.MaxPool2d(2)),
        nn.Flatten(),
        nn.Linear(16, 3, dtype=torch.float64),
        nn.Sigmoid(),
    )
    shape = (1, 8, 8)
    bound = convop.lipschitz(model, shape)
    first = convop.opnorm(convop.from_module(model[0], shape)).upper
    second = float(convop.svdvals(convop.from_module(model[2], (4, 8, 8)))[0])
    linear = float(torch.linalg.matrix_norm(model[5].weight.detach(), ord=2))
    assert bound == pytest.approx(first * second * linear * 0.25, rel=1e-6)
    assert worst_ratio(model, shape) <= bound


# --------------------------------------------------------------------------- activations
SELU_SCALE = "1.0507009873554804934193349852946"  # torch.nn.SELU's documentation
SELU_ALPHA = "1.6732632423543772848170429916717"


def _sigmoid(x):
    return 1 / (1 + mp.exp(-x))


class Activation(NamedTuple):
    """A layer and its function as torch documents it, in 40-digit arithmetic."""

    make: Callable[[], nn.Module]
    f: Callable


ACTIVATIONS = {
    "ReLU": Activation(nn.ReLU, lambda x: max(x, 0)),
    "ReLU6": Activation(nn.ReLU6, lambda x: min(max(x, 0), 6)),
    "LeakyReLU": Activation(lambda: nn.LeakyReLU(0.1), lambda x: x if x >= 0 else x / 10),
    "LeakyReLU-negative": Activation(
        lambda: nn.LeakyReLU(-2.5), lambda x: x if x >= 0 else -2.5 * x
    ),
    "Hardtanh": Activation(lambda: nn.Hardtanh(-2.0, 3.0), lambda x: min(max(x, -2), 3)),
    "Tanh": Activation(nn.Tanh, mp.tanh),
    "Sigmoid": Activation(nn.Sigmoid, _sigmoid),
    "Softsign": Activation(nn.Softsign, lambda x: x / (1 + abs(x))),
    "LogSigmoid": Activation(nn.LogSigmoid, lambda x: mp.log(_sigmoid(x))),
    "Tanhshrink": Activation(nn.Tanhshrink, lambda x: x - mp.tanh(x)),
    "Softshrink": Activation(
        lambda: nn.Softshrink(0.5), lambda x: x - 0.5 if x > 0.5 else x + 0.5 if x < -0.5 else 0
    ),
    "Hardsigmoid": Activation(nn.Hardsigmoid, lambda x: min(max(x / 6 + mp.mpf(1) / 2, 0), 1)),
    "Hardswish": Activation(
        nn.Hardswish, lambda x: 0 if x <= -3 else x if x >= 3 else x * (x + 3) / 6
    ),
    "SiLU": Activation(nn.SiLU, lambda x: x * _sigmoid(x)),
    "Mish": Activation(nn.Mish, lambda x: x * mp.tanh(mp.log(1 + mp.exp(x)))),
    "GELU": Activation(nn.GELU, lambda x: x * (1 + mp.erf(x / mp.sqrt(2))) / 2),
    "GELU-tanh": Activation(
        lambda: nn.GELU(approximate="tanh"),
        lambda x: x / 2 * (1 + mp.tanh(mp.sqrt(2 / mp.pi) * (x + mp.mpf("0.044715") * x**3))),
    ),
    "ELU": Activation(nn.ELU, lambda x: x if x > 0 else mp.expm1(x)),
    "ELU-1.5": Activation(lambda: nn.ELU(1.5), lambda x: x if x > 0 else 1.5 * mp.expm1(x)),
    "ELU-negative": Activation(lambda: nn.ELU(-2.0), lambda x: x if x > 0 else -2 * mp.expm1(x)),
    "CELU-2": Activation(lambda: nn.CELU(2.0), lambda x: max(0, x) + min(0, 2 * mp.expm1(x / 2))),
    "CELU-0.5": Activation(
        lambda: nn.CELU(0.5), lambda x: max(0, x) + min(0, mp.expm1(2 * x) / 2)
    ),
    "SELU": Activation(
        nn.SELU,
        lambda x: mp.mpf(SELU_SCALE) * (max(0, x) + min(0, mp.mpf(SELU_ALPHA) * mp.expm1(x))),
    ),
    "Softplus": Activation(nn.Softplus, lambda x: mp.log(1 + mp.exp(x))),
    "Softplus-beta-2": Activation(
        lambda: nn.Softplus(beta=2.0), lambda x: mp.log(1 + mp.exp(2 * x)) / 2
    ),
    "Softplus-beta-negative": Activation(
        lambda: nn.Softplus(beta=-0.5), lambda x: -2 * mp.log(1 + mp.exp(-x / 2))
    ),
    "PReLU": Activation(
        lambda: nn.PReLU(init=-1.7, dtype=torch.float64), lambda x: x if x >= 0 else -1.7 * x
    ),
    "RReLU-eval": Activation(
        lambda: nn.RReLU(-3.0, -1.0).eval(), lambda x: x if x >= 0 else -2 * x
    ),
}


def _golden_max(g: Callable, a, b, steps: int = 120):
    """The maximum of a unimodal ``g`` on ``[a, b]`` by golden-section search."""
    r = (mp.sqrt(5) - 1) / 2
    c, d = b - r * (b - a), a + r * (b - a)
    gc, gd = g(c), g(d)
    for _ in range(steps):
        if gc > gd:
            b, d, gd = d, c, gc
            c = b - r * (b - a)
            gc = g(c)
        else:
            a, c, gc = c, d, gd
            d = a + r * (b - a)
            gd = g(d)
    return max(gc, gd)


def sup_slope(f: Callable):
    """``sup |f'|`` on [-30, 30] in 40-digit arithmetic: the best point of a grid of step
    0.1, refined by golden-section search between its neighbours (a supremum at a kink is
    approached from its side)."""
    with mp.workdps(40):
        slope = lambda x: abs(mp.diff(f, x))  # noqa: E731
        grid = [mp.mpf(i) / 10 for i in range(-300, 301)]
        best = max(grid, key=slope)
        step = mp.mpf("0.1")
        return max(slope(best), _golden_max(slope, best - step, best + step))


@pytest.mark.parametrize("case", ACTIVATIONS.values(), ids=ACTIVATIONS.keys())
def test_activation_bounds_are_the_supremum_of_the_slope_rounded_up(case):
    """The real check is against sup |f'| found in 40-digit arithmetic: never below it
    (``mpf(bound)`` is the float exactly), above by at most 1e-6 relative. The float64
    autograd derivative on a fine grid is a necessary check of the same."""
    layer = case.make()
    bound = convop.lipschitz(layer, (5,))
    with mp.workdps(40):
        sup = sup_slope(case.f)
        assert sup <= mp.mpf(bound) <= sup * (1 + mp.mpf("1e-6"))
    x = torch.linspace(-30, 30, 600_001, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(layer(x).sum(), x)
    # some backward kernels hold single-precision constants (hardsigmoid's 1/6)
    assert float(slope.abs().max()) <= bound * (1 + 2**-23)


def test_layers_with_a_jump_or_an_unbounded_slope_are_refused():
    """Softplus returns x above beta x = threshold, log1p(exp(-threshold)) / beta below
    softplus: with threshold=1 that is a jump of 0.31, which no Lipschitz constant covers."""
    softplus = nn.Softplus(threshold=1.0)
    x = torch.tensor([1 - 1e-9, 1 + 1e-9], dtype=torch.float64)
    y = softplus(x)
    assert float((y[0] - y[1]) / (x[1] - x[0])) > 1e8  # not 1-Lipschitz: not Lipschitz
    with pytest.raises(ValueError, match=r"Softplus\(threshold=1\.0\) jumps by 0\.313"):
        convop.lipschitz(softplus, (3,))
    with pytest.raises(ValueError, match=r"Softplus's beta must be non-zero, got 0\.0"):
        convop.lipschitz(nn.Softplus(beta=0.0), (3,))
    with pytest.raises(ValueError, match=r"CELU's alpha must be positive, got -1\.0"):
        convop.lipschitz(nn.CELU(-1.0), (3,))


@pytest.mark.parametrize(
    "kind",
    [
        nn.Dropout,
        nn.Dropout1d,
        nn.Dropout2d,
        nn.Dropout3d,
        nn.AlphaDropout,
        nn.FeatureAlphaDropout,
    ],
)
def test_dropout_is_refused_in_training_mode_and_the_identity_in_eval_mode(kind):
    """Training-mode dropout is a random map (a new mask each call, scaled by 1/(1-p)): no
    constant bounds model(x) - model(y) across two calls. Refused, as batch norm is."""
    torch.manual_seed(0)
    shape = {nn.Dropout1d: (3, 8), nn.Dropout2d: (3, 4, 4)}.get(kind, (3, 4, 4, 4))
    layer = kind(p=0.3)
    with pytest.raises(ValueError, match=rf"{kind.__name__}\(p=0\.3\) in training mode is random"):
        convop.lipschitz(layer, shape)
    x = torch.randn(64, *shape)
    assert not torch.equal(layer(x), x)  # what was bounded by 1 before
    layer.eval()
    assert convop.lipschitz(layer, shape) == 1.0
    torch.testing.assert_close(layer(x), x, rtol=0, atol=0)
    assert convop.lipschitz(kind(p=0.0), shape) == 1.0  # p = 0 is the identity in both modes


def test_rrelu_is_refused_in_training_mode():
    """Training-mode RReLU draws a random slope in [lower, upper] for each element."""
    with pytest.raises(ValueError, match="RReLU in training mode draws a random slope"):
        convop.lipschitz(nn.RReLU(), (3,))


# --------------------------------------------------------------------------- pooling
def exact_pool_norm(pool: nn.Module, shape: tuple[int, ...]) -> float:
    """The Lipschitz constant of a pooling layer, from torch.

    Average pooling is linear: the 2-norm of its matrix, whose columns are the pooled unit
    samples. Max pooling: a change at sample ``i`` alone, where every other sample is far
    below, changes exactly the windows that hold ``i``, each by as much; no change does
    better (see ``_pool_bound``), so the largest ratio over ``i`` is the constant.
    """
    n = math.prod(shape)
    units = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    if "Avg" in type(pool).__name__:
        columns = pool(units).reshape(n, -1)  # (input, output): the transposed matrix
        gram = columns.T @ columns if columns.shape[1] < n else columns @ columns.T
        return math.sqrt(float(torch.linalg.eigvalsh(gram)[-1]))
    x = 100 * (units - 1)  # -100 everywhere but at one sample
    return float((pool(x) - pool(x - units)).flatten(1).norm(dim=1).max())


class Pool(NamedTuple):
    make: Callable[[], nn.Module]
    shape: tuple[int, ...]


POOLS = {
    "max": Pool(lambda: nn.MaxPool2d(2), (2, 6, 6)),
    "max-overlapping": Pool(lambda: nn.MaxPool2d(3, stride=1), (2, 6, 6)),
    "max-ceil-padded": Pool(
        lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 7, 9)
    ),
    "max-1d-dilated-ceil": Pool(
        lambda: nn.MaxPool1d(3, stride=2, padding=1, dilation=2, ceil_mode=True), (2, 9)
    ),
    "max-3d-padded": Pool(lambda: nn.MaxPool3d(2, stride=1, padding=1), (1, 4, 5, 3)),
    "adaptive-max": Pool(lambda: nn.AdaptiveMaxPool2d((3, 4)), (2, 7, 9)),
    "avg": Pool(lambda: nn.AvgPool2d(2), (2, 6, 6)),
    "avg-overlapping": Pool(lambda: nn.AvgPool2d(3, stride=1), (2, 6, 6)),
    "avg-ceil-exclude-pad": Pool(
        lambda: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        (2, 7, 9),
    ),
    "avg-ceil-include-pad": Pool(
        lambda: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 7, 9)
    ),
    "avg-divisor-override": Pool(
        lambda: nn.AvgPool2d(3, stride=2, padding=1, divisor_override=4), (2, 7, 9)
    ),
    "avg-1d-ceil": Pool(lambda: nn.AvgPool1d(4, stride=3, padding=2, ceil_mode=True), (2, 9)),
    "avg-3d-exclude-pad": Pool(
        lambda: nn.AvgPool3d(2, stride=1, padding=1, count_include_pad=False), (1, 4, 5, 3)
    ),
    "adaptive-avg": Pool(lambda: nn.AdaptiveAvgPool2d((3, 4)), (2, 7, 9)),
    "global-avg": Pool(lambda: nn.AdaptiveAvgPool1d(1), (2, 9)),
}


@pytest.mark.parametrize("case", POOLS.values(), ids=POOLS.keys())
def test_pooling_bounds_are_the_exact_lipschitz_constants(case):
    pool = case.make()
    exact = exact_pool_norm(pool, case.shape)
    assert exact <= convop.lipschitz(pool, case.shape) <= exact * (1 + 1e-8)


def test_average_pooling_of_a_long_input_is_bounded_by_schurs_test():
    """Past 2**20 entries per dimension the matrix is not formed: Schur's test bounds it."""
    pool = nn.AvgPool1d(3, stride=1, padding=1, count_include_pad=False)
    exact = exact_pool_norm(pool, (1, 1100))
    assert exact <= convop.lipschitz(pool, (1, 1100)) <= 1.1 * exact


def test_eval_batch_norm_bound_and_training_batch_norm_refused():
    bn = nn.BatchNorm2d(3, dtype=torch.float64)
    with torch.no_grad():
        bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
        bn.weight.copy_(torch.tensor([1.0, 1.0, -3.0]))
    with pytest.raises(ValueError, match="BatchNorm2d in training mode depends on the batch"):
        convop.lipschitz(bn, (3, 4, 4))
    bn.eval()
    assert convop.lipschitz(bn, (3, 4, 4)) == pytest.approx(3 / math.sqrt(1 + bn.eps))
    batch_only = nn.BatchNorm2d(3, track_running_stats=False).eval()  # batch statistics
    with pytest.raises(ValueError, match="BatchNorm2d with track_running_stats=False"):
        convop.lipschitz(batch_only, (3, 4, 4))


def test_unknown_layers_and_bad_input_shapes_are_refused():
    with pytest.raises(TypeError, match="lipschitz\\(\\) has no bound for Softmax"):
        convop.lipschitz(nn.Sequential(nn.ReLU(), nn.Softmax(dim=1)), (3, 4))
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got int"):
        convop.lipschitz(3, (3, 4))
    with pytest.raises(ValueError, match="input_shape must be a non-empty tuple of positive"):
        convop.lipschitz(nn.ReLU(), (3, 0))
    with pytest.raises(TypeError, match="input_shape must be a tuple of ints, got int"):
        convop.lipschitz(nn.ReLU(), 3)


# --------------------------------------------------------------------------- what is refused
class Residual(nn.Sequential):
    """``x + layers(x)``: a Sequential by class, not by function."""

    def forward(self, x):
        return x + super().forward(x)


class ScaledConv(nn.Conv1d):
    def forward(self, x):
        return 10 * super().forward(x)


def _hooked() -> nn.Module:
    layer = nn.Conv1d(2, 2, 3, padding=1)
    layer.register_forward_hook(lambda module, args, out: 10 * out)
    return layer


class Refused(NamedTuple):
    make: Callable[[], nn.Module]
    shape: tuple[int, ...]
    error: type
    match: str


REFUSED = {
    "residual": Refused(
        lambda: Residual(nn.Linear(4, 4)),
        (4,),
        TypeError,
        r"Residual overrides nn\.Sequential\.forward",
    ),
    "subclass-forward": Refused(
        lambda: ScaledConv(2, 2, 3), (2, 8), TypeError, r"ScaledConv overrides nn\.Conv1d\.forward"
    ),
    "forward-hook": Refused(_hooked, (2, 8), ValueError, "Conv1d has forward hooks"),
    "nested-hook": Refused(
        lambda: nn.Sequential(nn.ReLU(), nn.Sequential(_hooked())),
        (2, 8),
        ValueError,
        "Conv1d has forward hooks",
    ),
    "flatten-batch": Refused(
        lambda: nn.Flatten(0), (2, 3), ValueError, "Flatten does not map samples one by one"
    ),
    "indices": Refused(
        lambda: nn.MaxPool1d(2, return_indices=True),
        (2, 8),
        TypeError,
        "MaxPool1d returns a tuple, expected a tensor",
    ),
    "shape-mismatch": Refused(
        lambda: nn.Linear(3, 2), (4,), ValueError, r"input_shape=\(4,\) does not fit Linear"
    ),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_layers_that_are_not_what_their_class_computes_are_refused(case):
    with pytest.raises(case.error, match=case.match):
        convop.lipschitz(case.make(), case.shape)


def test_power_iteration_parametrizations_are_refused_in_training_mode_and_bounded_in_eval():
    """In training mode their weight changes at every call (and reading it would move the
    singular vector estimates): refused, with the model left as it was."""
    torch.manual_seed(0)
    shape = (2, 10)
    ours = convop.spectral_normalize(nn.Conv1d(2, 3, 3, padding=1, dtype=torch.float64), shape)
    theirs = nn.utils.parametrizations.spectral_norm(
        nn.Conv1d(2, 3, 3, padding=1, dtype=torch.float64)
    )
    before = ours.parametrizations.weight[0]._v.clone()
    for layer, name in ((ours, "ConvSpectralNorm"), (theirs, "_SpectralNorm")):
        with pytest.raises(
            ValueError, match=rf"the {name} parametrization of ParametrizedConv1d\.weight"
        ):
            convop.lipschitz(layer, shape)
    torch.testing.assert_close(ours.parametrizations.weight[0]._v, before, rtol=0, atol=0)
    for layer in (ours.eval(), theirs.eval()):
        norm = dense_norm(convop.from_module(layer, shape))
        assert norm <= convop.lipschitz(layer, shape, rtol=1e-3) <= norm * (1 + 1e-3)


def test_a_depthwise_conv_with_a_zero_channel_is_bounded():
    """Issue 24, item 3: one all-zero channel made the bound's eigensolver fail."""
    torch.manual_seed(0)
    layer = nn.Conv1d(4, 4, 3, padding=1, groups=4)
    with torch.no_grad():
        layer.weight[2] = 0
    bound = convop.lipschitz(layer, (4, 400))  # too large for the explicit matrix
    units = torch.eye(400, dtype=torch.float64)[:, None]  # (400, 1, 400): unit samples
    w = layer.weight.detach().double()
    blocks = [F.conv1d(units, w[c : c + 1], padding=1)[:, 0] for c in range(4)]
    # depthwise: the operator is block diagonal, one block per channel
    exact = max(math.sqrt(float(torch.linalg.eigvalsh(b @ b.T)[-1])) for b in blocks)
    assert exact <= bound <= exact * (1 + 1e-2)


# --------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Conv2d(3, 5, 3, padding=1, dtype=torch.float64),
        lambda: nn.Conv2d(3, 5, 3, padding=1, padding_mode="circular", dtype=torch.float64),
        lambda: nn.Conv1d(
            2, 2, 5, padding=2, padding_mode="reflect", stride=2, dtype=torch.float64
        ),
        lambda: nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1, dtype=torch.float64),
    ],
    ids=["zeros", "circular", "reflect-strided-1d", "transposed"],
)
def test_spectral_normalize_makes_the_layer_1_lipschitz(make):
    """The layers are made inside the test: weights drawn at collection would depend on
    what other test modules drew before (power iterations converge slower for some)."""
    torch.manual_seed(0)
    layer = make()
    shape = (layer.in_channels, *(12,) * (layer.weight.ndim - 2))
    convop.spectral_normalize(layer, shape, rtol=1e-3)
    layer.eval()
    norm = dense_norm(convop.from_module(layer, shape))
    assert 1 - 2e-3 <= norm <= 1 + 1e-9  # certified: never above 1
    layer.train()
    for _ in range(60):  # power iterations converge over forward passes
        _ = layer.weight
    assert dense_norm(convop.from_module(layer, shape)) == pytest.approx(1.0, rel=1e-2)


def test_spectral_normalize_trains_and_follows_the_weight():
    torch.manual_seed(0)
    layer = convop.spectral_normalize(nn.Conv2d(2, 2, 3, padding=1), (2, 10, 10))
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    x = torch.randn(4, 2, 10, 10)
    for _ in range(5):
        opt.zero_grad()
        loss = -layer(x).square().mean()  # pushes the norm up: normalisation must hold it
        loss.backward()
        opt.step()
    assert layer.parametrizations.weight.original.grad is not None
    layer.eval()
    norm = convop.opnorm(convop.from_module(layer, (2, 10, 10)), rtol=1e-3)
    assert norm.upper <= 1 + 1e-6  # the eval bound is recomputed for the new weight


def test_spectral_normalize_differs_from_torchs_reshaped_matrix_norm():
    """torch's spectral_norm divides by the norm of the weight as a matrix: not a bound."""
    torch.manual_seed(3)
    w = torch.randn(4, 4, 3, 3, dtype=torch.float64)
    op = convop.conv2d(w, (4, 16, 16), padding=1, padding_mode="circular")
    matrix = float(torch.linalg.matrix_norm(w.reshape(4, -1), ord=2))
    exact = float(convop.svdvals(op)[0])
    assert not np.isclose(matrix, exact, rtol=0.05)


def test_spectral_normalize_rejects_bad_arguments():
    with pytest.raises(TypeError, match=r"module must be a torch\.nn conv layer"):
        convop.spectral_normalize(nn.Linear(3, 3), (3,))
    with pytest.raises(ValueError, match="n_power_iterations must be a positive int"):
        convop.spectral_normalize(nn.Conv1d(1, 1, 3), (1, 8), n_power_iterations=0)
    with pytest.raises(ValueError, match="rtol must be a positive finite float"):
        convop.spectral_normalize(nn.Conv1d(1, 1, 3), (1, 8), rtol=-1.0)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_spectral_normalize_leaves_a_zero_layer_zero(mode):
    """A zero operator has norm 0: the weight stays zero (not 0 / 0), and the gradient there
    is the identity's, that of the layer without the parametrization."""
    torch.manual_seed(0)
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    probe = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    plain = nn.Conv2d(2, 3, 3, padding=1, dtype=torch.float64)
    layer = nn.Conv2d(2, 3, 3, padding=1, dtype=torch.float64)
    for conv in (plain, layer):
        nn.init.zeros_(conv.weight)
    convop.spectral_normalize(layer, (2, 8, 8))
    getattr(layer, mode)()
    assert torch.equal(layer.weight, torch.zeros_like(layer.weight))
    (layer(x) * probe).sum().backward()
    (plain(x) * probe).sum().backward()
    grad = layer.parametrizations.weight.original.grad
    torch.testing.assert_close(grad, plain.weight.grad, rtol=1e-14, atol=0)


def test_spectral_normalize_recovers_from_a_zero_weight():
    """A zero weight must not wipe the power iterations' vector: when the weight becomes
    non-zero, the estimate converges to 1 again."""
    torch.manual_seed(0)
    layer = convop.spectral_normalize(
        nn.Conv1d(2, 2, 3, padding=1, dtype=torch.float64), (2, 12), n_power_iterations=5
    )
    original = layer.parametrizations.weight.original
    saved = original.detach().clone()
    with torch.no_grad():
        original.zero_()
        _ = layer.weight  # one training forward with a zero weight
        original.copy_(saved)
    for _ in range(10):
        _ = layer.weight
    assert dense_norm(convop.from_module(layer, (2, 12))) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize(
    ("dtype", "scale"),
    [
        (torch.float64, 1e-200),
        (torch.float64, 1e200),
        (torch.float32, 1e-30),
        (torch.float32, 1e30),
    ],
)
def test_spectral_normalize_is_scale_invariant(dtype, scale, mode):
    """``w / ||A(w)||`` does not depend on the scale of ``w``, and its gradient scales as
    ``1 / scale``: tiny and huge weights must not underflow or overflow on the way."""
    torch.manual_seed(0)
    w = torch.randn(3, 2, 3, 3, dtype=dtype)
    x, probe = torch.randn(2, 2, 8, 8, dtype=dtype), torch.randn(2, 3, 8, 8, dtype=dtype)
    results = []
    for s in (1.0, scale):
        layer = nn.Conv2d(2, 3, 3, padding=1, bias=False, dtype=dtype)
        with torch.no_grad():
            layer.weight.copy_(w * s)
        convop.spectral_normalize(layer, (2, 8, 8))
        getattr(layer, mode)()
        (layer(x) * probe).sum().backward()
        grad = layer.parametrizations.weight.original.grad
        results.append((layer.weight.detach(), grad * s))
    tol = {torch.float64: 1e-12, torch.float32: 1e-5}[dtype]
    (weight, grad), (scaled_weight, scaled_grad) = results
    assert bool(torch.isfinite(scaled_grad).all())
    torch.testing.assert_close(
        scaled_weight, weight, rtol=tol, atol=tol * float(weight.abs().max())
    )
    torch.testing.assert_close(scaled_grad, grad, rtol=tol, atol=tol * float(grad.abs().max()))
