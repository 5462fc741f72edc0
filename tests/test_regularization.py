"""convop.regularization: the damping chosen from the data, against dense SVDs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convop
from convop.data import gaussian_kernel, phantom
from convop.regularization import choose_damping, estimate_noise


def dense_criteria(op: convop.ConvOperator, y: np.ndarray):
    """``(residual(damp), gcv(damp))`` of ``op`` from its dense SVD."""
    a = op.todense()
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    c = u.conj().T @ y
    outside = float(np.vdot(y, y).real - np.vdot(c, c).real)
    extra = a.shape[0] - s.size

    def residual(damp: float) -> float:
        f = damp**2 / (s**2 + damp**2)
        return float((f**2 * np.abs(c) ** 2).sum() + outside)

    def gcv(damp: float) -> float:
        trace = float((damp**2 / (s**2 + damp**2)).sum() + extra)
        return residual(damp) / trace**2

    return residual, gcv


def _noisy(op: convop.ConvOperator, sigma: float = 0.02, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.random(op.shape[1])
    return op @ x + sigma * rng.standard_normal(op.shape[0])


CIRCULANTS = {
    "blur": lambda: convop.conv2d(torch.from_numpy(gaussian_kernel(5, 1.2))[None, None],
                                  (1, 16, 12), padding=2, padding_mode="circular"),
    "crosstalk": lambda: convop.conv2d(
        (0.6 * torch.eye(2, dtype=torch.float64) + 0.2)[:, :, None, None]
        * torch.from_numpy(gaussian_kernel(3, 0.8)), (2, 10, 9), padding=1,
        padding_mode="circular"),
    "more-outputs-1d": lambda: convop.conv1d(
        torch.randn(3, 1, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
        (1, 24), padding=2, padding_mode="circular"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CIRCULANTS))
def test_gcv_of_a_circulant_is_the_dense_minimiser(name):
    op = CIRCULANTS[name]()
    y = _noisy(op)
    kept = y.copy()
    damp = choose_damping(op, y)
    np.testing.assert_array_equal(y, kept)
    _, gcv = dense_criteria(op, y)
    grid = np.geomspace(damp / 3, damp * 3, 401)
    assert gcv(damp) <= min(gcv(d) for d in grid) * (1 + 1e-6)


@pytest.mark.parametrize("name", list(CIRCULANTS))
def test_discrepancy_of_a_circulant_meets_the_noise_level(name):
    op = CIRCULANTS[name]()
    y = _noisy(op, sigma=0.05)
    residual, _ = dense_criteria(op, y)
    damp = choose_damping(op, y, method="discrepancy", noise=0.05)
    np.testing.assert_allclose(residual(damp), 0.05**2 * op.shape[0], rtol=1e-6)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "zeros"])
def test_gcv_elsewhere_is_near_the_dense_minimiser(mode):
    """Under the symmetric model the choice is the operator's up to its boundary."""
    w = torch.from_numpy(gaussian_kernel(5, 1.2))[None, None]
    op = convop.conv2d(w, (1, 24, 20), padding="same", padding_mode=mode)
    y = op @ phantom(24)[:, :20].ravel() + 0.02 * np.random.default_rng(2).standard_normal(480)
    _, gcv = dense_criteria(op, y)
    grid = np.geomspace(1e-4, 1, 801)
    best = grid[np.argmin([gcv(d) for d in grid])]
    assert best / 1.5 <= choose_damping(op, y) <= best * 1.5


def test_choice_accepts_tensors_and_shapes_and_tracks_the_noise():
    w = torch.from_numpy(gaussian_kernel(7, 1.5))[None, None]
    op = convop.conv2d(w, (1, 64, 64), padding="same", padding_mode="reflect")
    clean = op @ phantom(64).ravel()
    rng = np.random.default_rng(3)
    low = clean + 0.002 * rng.standard_normal(clean.size)
    high = clean + 0.05 * rng.standard_normal(clean.size)
    assert choose_damping(op, low) < choose_damping(op, high)
    tensor = torch.from_numpy(high.reshape(op.output_shape))
    assert choose_damping(op, tensor) == pytest.approx(choose_damping(op, high), rel=1e-12)


def test_estimate_noise():
    rng = np.random.default_rng(4)
    assert estimate_noise(rng.standard_normal((200, 300))) == pytest.approx(1.0, rel=0.03)
    smooth = np.add.outer(np.sin(np.linspace(0, 3, 128)), np.cos(np.linspace(0, 2, 128)))
    noisy = smooth + 0.03 * rng.standard_normal(smooth.shape)
    assert estimate_noise(noisy) == pytest.approx(0.03, rel=0.05)
    stack = np.stack([noisy, noisy[::-1]])
    assert estimate_noise(stack, axes=(1, 2)) == pytest.approx(0.03, rel=0.05)
    with pytest.raises(ValueError, match="at least 2 samples"):
        estimate_noise(np.ones((1, 5)))


def test_choose_damping_rejects_bad_input():
    op = CIRCULANTS["blur"]()
    y = _noisy(op)
    with pytest.raises(ValueError, match="method"):
        choose_damping(op, y, method="l-curve")
    with pytest.raises(ValueError, match=r"noise must be a finite float >= 0, got -1\.0"):
        choose_damping(op, y, method="discrepancy", noise=-1.0)
    with pytest.raises(TypeError, match="noise must be a float"):
        choose_damping(op, y, noise="0.1")
    with pytest.raises(TypeError, match="exact must be a bool, got str"):
        choose_damping(op, y, method="discrepancy", exact="yes")
    with pytest.raises(ValueError, match=r"y must have shape \(1, 16, 12\) or \(192,\)"):
        choose_damping(op, y[:-1])
    bad = y.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        choose_damping(op, bad)
    with pytest.raises(TypeError, match=r"y must be a numpy\.ndarray or torch\.Tensor"):
        choose_damping(op, list(y))
    strided = convop.conv2d(torch.ones(1, 1, 3, 3), (1, 8, 8), stride=2, padding=1)
    with pytest.raises(ValueError, match="needs stride 1"):
        choose_damping(strided, np.ones(strided.shape[0]))
    with pytest.raises(TypeError, match=r"op must be a convop\.ConvOperator"):
        choose_damping(np.eye(3), np.ones(3))


def _shifted_blur(mode: str) -> convop.ConvOperator:
    """A blur that is mirror-symmetric along no axis: its model is periodic on both."""
    w = torch.from_numpy(gaussian_kernel(5, 1.0))
    w = w + torch.roll(w, (1, 1), (0, 1))  # lags (1, 1) and (-1, -1), not (1, -1)
    return convop.conv2d(w[None, None] / w.sum(), (1, 22, 18), padding="same", padding_mode=mode)


def _ramp(op: convop.ConvOperator, sigma: float, seed: int) -> np.ndarray:
    """Blurred data with very different opposite edges (a ramp plus the phantom), noisy."""
    height, width = op.input_shape[1:]
    x = phantom(max(height, width))[:height, :width] + np.add.outer(
        np.linspace(0, 1, height), np.linspace(0, 0.5, width)
    )
    return op @ x.ravel() + sigma * np.random.default_rng(seed).standard_normal(op.shape[0])


def _dense_root(op: convop.ConvOperator, y: np.ndarray, sigma: float) -> float:
    residual, _ = dense_criteria(op, y)
    target = sigma**2 * op.shape[0]
    low, high = np.log(1e-6), np.log(10.0)
    for _ in range(80):
        mid = (low + high) / 2
        low, high = (mid, high) if residual(np.exp(mid)) < target else (low, mid)
    return float(np.exp(low))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "zeros"])
def test_discrepancy_exact_matches_the_operators_own_residual(mode):
    op = _shifted_blur(mode)
    y = _ramp(op, 0.02, seed=5)
    kept = y.copy()
    residual, _ = dense_criteria(op, y)
    damp = choose_damping(op, y, method="discrepancy", noise=0.02, exact=True)
    np.testing.assert_array_equal(y, kept)
    np.testing.assert_allclose(residual(damp), 0.02**2 * op.shape[0], rtol=3e-3)


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_discrepancy_model_is_near_the_operators_own_root(mode):
    """Moisan's periodic component keeps the edges' jump out of the periodic model."""
    op = _shifted_blur(mode)
    y = _ramp(op, 0.02, seed=6)
    root = _dense_root(op, y, 0.02)
    damp = choose_damping(op, y, method="discrepancy", noise=0.02)
    assert root / 1.3 <= damp <= root * 1.3


def test_periodic_component_removes_the_edges_jump_only():
    from convop.regularization import _periodic_component

    y = torch.rand(2, 20, 15, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    smooth = y - _periodic_component(y, [1, 2])
    laplacian = sum(
        torch.roll(smooth, 1, d) + torch.roll(smooth, -1, d) - 2 * smooth for d in (1, 2)
    )
    jumps = torch.zeros_like(y)
    for d in (1, 2):
        step = y.narrow(d, -1, 1) - y.narrow(d, 0, 1)
        jumps.narrow(d, 0, 1).add_(step)
        jumps.narrow(d, -1, 1).sub_(step)
    torch.testing.assert_close(laplacian, jumps, rtol=0, atol=1e-12)
    torch.testing.assert_close(smooth.sum(dim=(1, 2)), torch.zeros(2, dtype=torch.float64),
                               rtol=0, atol=1e-10)  # fmt: skip
    equal_ends = torch.sin(torch.arange(16, dtype=torch.float64) * torch.pi / 15) + 2
    grid = equal_ends[None, :, None] * equal_ends[None, None, :]  # no jump: nothing removed
    torch.testing.assert_close(_periodic_component(grid, [1, 2]), grid, rtol=0, atol=1e-12)


def test_estimate_noise_of_a_blurred_sharp_image():
    """The fourth differences see little of the signal (the Haar detail: 9% too much)."""
    w = torch.from_numpy(gaussian_kernel(9, 2.0))[None, None]
    op = convop.conv2d(w, (1, 256, 256), padding="same", padding_mode="reflect")
    y = op @ phantom(256).ravel() + 0.005 * np.random.default_rng(8).standard_normal(256 * 256)
    assert estimate_noise(y.reshape(256, 256)) == pytest.approx(0.005, rel=0.03)
    rng = np.random.default_rng(9)
    assert estimate_noise(rng.standard_normal((3, 4000))) == pytest.approx(1.0, rel=0.05)
