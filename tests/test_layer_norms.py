"""convop.layer_norms: certified Lipschitz bounds of layers and models, spectral normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
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


@pytest.mark.parametrize(
    ("layer", "expected"),
    [
        (nn.ReLU(), 1.0),
        (nn.LeakyReLU(2.0), 2.0),
        (nn.Sigmoid(), 0.25),
        (nn.ELU(alpha=1.5), 1.5),
        (nn.GELU(), 1.1289),
        (nn.MaxPool2d(2), 1.0),
        (nn.MaxPool2d(3, stride=1), 3.0),  # a sample in up to 3 x 3 windows
        (nn.AvgPool2d(2), 0.5),  # sqrt(1 window * 4 samples) / 4
        (nn.AvgPool2d(3, stride=1), 1.0),  # sqrt(9 * 9) / 9
    ],
)
def test_activation_and_pooling_bounds(layer, expected):
    bound = convop.lipschitz(layer, (2, 6, 6))
    assert bound == pytest.approx(expected)
    assert worst_ratio(layer, (2, 6, 6)) <= bound * (1 + 1e-9)


def test_eval_batch_norm_bound_and_training_batch_norm_refused():
    bn = nn.BatchNorm2d(3, dtype=torch.float64)
    with torch.no_grad():
        bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
        bn.weight.copy_(torch.tensor([1.0, 1.0, -3.0]))
    with pytest.raises(ValueError, match="BatchNorm2d in training mode depends on the batch"):
        convop.lipschitz(bn, (3, 4, 4))
    bn.eval()
    assert convop.lipschitz(bn, (3, 4, 4)) == pytest.approx(3 / math.sqrt(1 + bn.eps))


def test_unknown_layers_and_bad_input_shapes_are_refused():
    with pytest.raises(TypeError, match="lipschitz\\(\\) has no bound for Softmax"):
        convop.lipschitz(nn.Sequential(nn.ReLU(), nn.Softmax(dim=1)), (3, 4))
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got int"):
        convop.lipschitz(3, (3, 4))
    with pytest.raises(ValueError, match="input_shape must be a non-empty tuple of positive"):
        convop.lipschitz(nn.ReLU(), (3, 0))
    with pytest.raises(TypeError, match="input_shape must be a tuple of ints, got int"):
        convop.lipschitz(nn.ReLU(), 3)


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
    for _ in range(30):  # power iterations converge over forward passes
        estimate = dense_norm(convop.from_module(layer, shape))
    assert estimate == pytest.approx(1.0, rel=1e-2)


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
