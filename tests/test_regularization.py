"""convop.regularization: the damping chosen from the data, against dense SVDs."""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import pytest
import torch

import convop
from convop.data import gaussian_kernel, phantom
from convop.noise import estimate_noise
from convop.regularization import choose_damping


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


def exact_discrepancy_rtol(op: convop.ConvOperator, y: np.ndarray, damp: float,
                           sigma: float) -> float:  # fmt: skip
    """How far ``exact=True``'s dense residual ``||y - op x*(damp)||^2`` may be from its target.

    The search stops when the residual of ``cg``'s solution ``x`` is within a factor
    ``1 + rho`` of ``T = sigma sqrt(m)`` (``rho = DISCREPANCY_RTOL``). ``cg`` stops at
    ``||A^H y - N x|| < tau ||A^H y||`` (``tau = _cg_rtol``, ``N = A^H A + damp^2 I``), so
    ``||A (x - x*)|| = ||A N^-1 (A^H y - N x)|| <= tau ||A^H y|| max_i s_i / (s_i^2 + damp^2)
    = delta`` (``s``: the dense singular values), and ``||y - A x*||`` lies in
    ``[T / (1 + rho) - delta, (1 + rho) T + delta]``. Squared: within ``(1 + rho + delta /
    T)^2 - 1`` of ``T^2`` (about ``2 rho``), plus the dense residual's round-off, a sum of
    ``m`` terms up to ``||y||^2``: ``m eps ||y||^2 / T^2``.
    """
    a = op.todense()
    s = np.linalg.svd(a, compute_uv=False)
    tau = convop.regularization._cg_rtol(np.result_type(op.dtype, y.dtype))
    target = sigma * np.sqrt(op.shape[0])
    delta = tau * np.linalg.norm(a.conj().T @ y) * np.max(s / (s**2 + damp**2))
    rho = convop.regularization.DISCREPANCY_RTOL
    roundoff = op.shape[0] * np.finfo(np.float64).eps * np.vdot(y, y).real / target**2
    return (1 + rho + delta / target) ** 2 - 1 + roundoff


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


def _dense_root(residual, size: int, sigma: float) -> float:
    """The damping at which ``residual`` (of :func:`dense_criteria`) is ``size sigma^2``."""
    target = sigma**2 * size
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
    rtol = exact_discrepancy_rtol(op, y, damp, 0.02)  # 2.0e-3 and a little
    np.testing.assert_allclose(residual(damp), 0.02**2 * op.shape[0], rtol=rtol)


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_discrepancy_model_is_near_the_operators_own_root(mode):
    """Moisan's periodic component keeps the edges' jump out of the periodic model."""
    op = _shifted_blur(mode)
    y = _ramp(op, 0.02, seed=6)
    root = _dense_root(dense_criteria(op, y)[0], op.shape[0], 0.02)
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


# ---------------------------------------------------------------- scale, edges, bad input
def _reflect_blur() -> convop.ConvOperator:
    """A mirror-symmetric blur: a cosine (DCT-II) model along both axes."""
    w = torch.from_numpy(gaussian_kernel(5, 1.2))[None, None]
    return convop.conv2d(w, (1, 24, 20), padding="same", padding_mode="reflect")


SCALE_OPS = {"reflect": _reflect_blur, "shifted": lambda: _shifted_blur("reflect")}
#: The choices that scale with ``y``: ``(method, noise at scale 1)``; ``None``: estimated.
CHOICES = {"gcv": ("gcv", None), "discrepancy": ("discrepancy", None),
           "discrepancy-noise": ("discrepancy", 0.02)}  # fmt: skip
#: Powers of two that keep every sample of the test data a normal number of its dtype.
SCALES = {np.float64: (-1000, -700, -300, -40, 40, 300, 700, 1000),
          np.float32: (-100, -60, -20, 20, 60, 100)}  # fmt: skip


@pytest.mark.parametrize("dtype", list(SCALES))
@pytest.mark.parametrize("choice", list(CHOICES))
@pytest.mark.parametrize("name", list(SCALE_OPS))
def test_choice_is_the_same_at_every_power_of_two_scale(name, choice, dtype):
    op = SCALE_OPS[name]()
    method, noise = CHOICES[choice]
    y = _ramp(op, 0.02, seed=10).astype(dtype)
    damp = choose_damping(op, y, method=method, noise=noise)
    for k in SCALES[dtype]:
        scaled = np.ldexp(y, k)
        np.testing.assert_array_equal(np.ldexp(scaled, -k), y)  # the data is exact at 2**k
        sigma = None if noise is None else float(np.ldexp(noise, k))
        assert choose_damping(op, scaled, method=method, noise=sigma) == pytest.approx(
            damp, rel=1e-12
        ), k


def test_exact_discrepancy_is_the_same_at_every_power_of_two_scale():
    w = torch.from_numpy(gaussian_kernel(3, 0.8))
    w = w + torch.roll(w, (1, 1), (0, 1))  # periodic along both axes: the model differs
    op = convop.conv2d(w[None, None] / w.sum(), (1, 12, 10), padding="same")
    y = _ramp(op, 0.02, seed=11)
    scaled = choose_damping(op, np.ldexp(y, 1000), method="discrepancy", exact=True)
    assert scaled == pytest.approx(choose_damping(op, y, method="discrepancy", exact=True),
                                   rel=1e-12)  # fmt: skip


@pytest.mark.parametrize("method", list(convop.regularization.METHODS))
@pytest.mark.parametrize("scale", [1e200, 1e-200, 1e-300, 1.7e308 / 4])
def test_choice_at_decimal_scales_neither_overflows_nor_drifts(method, scale):
    """Issue 24: GCV gave 1.1e-7 at 1e+-200; the discrepancy raised OverflowError."""
    op = _reflect_blur()
    y = _ramp(op, 0.02, seed=12)
    y *= 1 / np.abs(y).max()  # largest sample 1: the last scale is just below float64's max
    damp = choose_damping(op, y * scale, method=method)
    assert damp == pytest.approx(choose_damping(op, y, method=method), rel=1e-9)


def test_choice_scales_with_the_operator():
    op = _reflect_blur()
    y = _ramp(op, 0.02, seed=13)
    for k in (-500, 500):  # the kernel's autocorrelation would leave float64 unscaled
        big = convop.conv2d(op.weight * 2.0**k, op.input_shape, padding="same",
                            padding_mode="reflect")  # fmt: skip
        for method in convop.regularization.METHODS:
            assert choose_damping(big, np.ldexp(y, k), method=method) == pytest.approx(
                np.ldexp(choose_damping(op, y, method=method), k), rel=1e-12
            )


def test_discrepancy_with_a_noise_level_beyond_the_data():
    """A fixed noise level is not rescaled with ``y``: it reads at the data's own scale."""
    op = _reflect_blur()
    y = _ramp(op, 0.02, seed=14)
    top = choose_damping(op, y, method="discrepancy", noise=10.0)  # beyond every residual
    assert top == choose_damping(op, np.ldexp(y, -1000), method="discrepancy", noise=1e300)
    assert top == choose_damping(op, y, method="discrepancy", noise=10)
    bottom = choose_damping(op, y, method="discrepancy", noise=0.0)
    assert bottom == choose_damping(op, np.ldexp(y, 1000), method="discrepancy", noise=5e-324)
    assert 0 < bottom < top < np.inf
    assert choose_damping(op, y, method="discrepancy", noise=np.float32(0.02)) == pytest.approx(
        choose_damping(op, y, method="discrepancy", noise=0.02), rel=1e-6
    )


@pytest.mark.parametrize("method", list(convop.regularization.METHODS))
@pytest.mark.parametrize("value", [0.0, 0.7])
def test_choice_for_constant_data_is_finite(method, value):
    op = _reflect_blur()
    y = np.full(op.shape[0], value)
    damp = choose_damping(op, y, method=method)
    assert 0 < damp <= 1  # between 1e-7 and 1 times the norm of a normalised blur
    assert choose_damping(op, y, method="discrepancy") == choose_damping(
        op, y, method="discrepancy", noise=0.0
    )  # the estimated noise of constant data is zero


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_choice_for_complex_data_is_the_dense_one(mode):
    """Complex data under a cosine model: each part transformed (rfft refused it)."""
    op = convop.conv2d(torch.from_numpy(gaussian_kernel(5, 1.2))[None, None], (1, 24, 20),
                       padding="same", padding_mode=mode)  # fmt: skip
    rng = np.random.default_rng(15)
    y = op @ (phantom(24)[:, :20].ravel() * (1 + 0.5j))
    y = y + 0.02 * (rng.standard_normal(480) + 1j * rng.standard_normal(480)) / np.sqrt(2)
    kept = y.copy()
    residual, gcv = dense_criteria(op, y)
    grid = np.geomspace(1e-4, 1, 801)
    best = grid[np.argmin([gcv(d) for d in grid])]
    assert best / 1.5 <= choose_damping(op, y) <= best * 1.5
    root = _dense_root(residual, op.shape[0], 0.02)
    assert root / 1.3 <= choose_damping(op, y, method="discrepancy", noise=0.02) <= root * 1.3
    np.testing.assert_array_equal(y, kept)


def test_choice_of_tensors_and_low_precision_is_that_of_their_values():
    op = _reflect_blur()
    y = _ramp(op, 0.02, seed=16).reshape(op.output_shape)
    for dtype in (torch.float16, torch.bfloat16):
        tensor = torch.from_numpy(y).to(dtype)
        kept = tensor.clone()
        for method in convop.regularization.METHODS:
            assert choose_damping(op, tensor, method=method) == choose_damping(
                op, tensor.double().numpy(), method=method
            )
        torch.testing.assert_close(tensor, kept, rtol=0, atol=0)


def test_estimate_noise_scales_exactly_with_the_data():
    rng = np.random.default_rng(17)
    y = 0.5 + 0.01 * rng.standard_normal((40, 30))
    sigma = estimate_noise(y)
    for k in (-1000, -40, 40, 1000, 1022):  # up to the top: samples near 2**1021
        assert estimate_noise(np.ldexp(y, k)) == np.ldexp(sigma, k)
    subnormal = estimate_noise(np.ldexp(y, -1061))  # 13 bits left per sample
    assert subnormal == pytest.approx(np.ldexp(sigma, -1061), rel=0.05)
    single = y.astype(np.float32)
    assert estimate_noise(np.ldexp(single, -120)) == np.ldexp(estimate_noise(single), -120)


def test_estimate_noise_of_complex_data_is_the_root_mean_square():
    """``sqrt(E|n|^2)`` of circular noise, as ``choose_damping``'s target needs."""
    rng = np.random.default_rng(18)
    n = 0.3 * (rng.standard_normal((200, 300)) + 1j * rng.standard_normal((200, 300)))
    assert estimate_noise(n) == pytest.approx(0.3 * np.sqrt(2), rel=0.03)
    assert estimate_noise(torch.from_numpy(n).to(torch.complex64)) == pytest.approx(
        estimate_noise(n), rel=1e-6
    )


@pytest.mark.parametrize("n", [2, 3, 4])
def test_estimate_noise_of_images_smaller_than_the_filter(n):
    """Axes shorter than 5 samples take the highest difference they hold, still unbiased."""
    y = np.random.default_rng(19).standard_normal((n, n, 20000))
    assert estimate_noise(y, axes=(0, 1)) == pytest.approx(1.0, rel=0.05)


def test_estimate_noise_axes_forms_and_edges():
    rng = np.random.default_rng(20)
    y = rng.standard_normal((3, 64, 48))
    assert estimate_noise(y, axes=(-2, -1)) == estimate_noise(y, axes=(1, 2))
    assert estimate_noise(y, axes=[np.int64(2)]) == estimate_noise(y, axes=2)
    assert estimate_noise(np.full((8, 9), 3.5)) == 0.0
    assert estimate_noise(np.zeros((8, 9), np.float16)) == 0.0
    assert estimate_noise(y.tolist()) == estimate_noise(y)
    half = y.astype(np.float16)
    assert estimate_noise(half) == estimate_noise(half.astype(np.float64))
    kept = y.copy()
    tensor = torch.from_numpy(y)
    assert estimate_noise(tensor) == estimate_noise(y[::-1].copy()[::-1])
    np.testing.assert_array_equal(y, kept)


class BadNoiseInput(NamedTuple):
    y: object
    axes: object
    error: type
    match: str


_Y = np.random.default_rng(21).standard_normal((6, 7))
BAD_NOISE_INPUTS = {
    "nan": BadNoiseInput(np.where(np.eye(6, 7) > 0, np.nan, _Y), None, ValueError, "NaN or Inf"),
    "inf": BadNoiseInput(torch.tensor([[1.0, float("inf"), 2.0]] * 3), None, ValueError,
                         "NaN or Inf"),
    "axis-out-of-range": BadNoiseInput(_Y, (5,), ValueError,
                                       r"axes must be in \[-2, 2\) .* got axes=\(5,\)"),
    "negative-out-of-range": BadNoiseInput(_Y, (-3,), ValueError, r"axes must be in \[-2, 2\)"),
    "repeated": BadNoiseInput(_Y, (0, 0), ValueError, r"each axis once, got axes=\(0, 0\)"),
    "repeated-negative": BadNoiseInput(_Y, (1, -1), ValueError, "each axis once"),
    "no-axes": BadNoiseInput(_Y, (), ValueError, "at least one axis"),
    "float-axis": BadNoiseInput(_Y, (1.0,), TypeError, r"axes must contain only ints"),
    "bool-axis": BadNoiseInput(_Y, (True,), TypeError, r"axes must contain only ints"),
    "string-axes": BadNoiseInput(_Y, "01", TypeError, "axes must be an int or a tuple"),
    "empty": BadNoiseInput(np.zeros((0, 5)), None, ValueError, r"not be empty.*\(0, 5\)"),
    "empty-elsewhere": BadNoiseInput(np.zeros((6, 0)), (0,), ValueError, "not be empty"),
    "scalar": BadNoiseInput(np.float64(2.0), None, ValueError, "at least one axis"),
    "one-sample": BadNoiseInput(np.ones((1, 5)), None, ValueError, "at least 2 samples"),
    "strings": BadNoiseInput(np.array(["a", "b"]), None, TypeError, "real or complex numbers"),
    "bools": BadNoiseInput(torch.ones(4, 4, dtype=torch.bool), None, TypeError,
                           "real or complex numbers"),
    "estimate-overflows": BadNoiseInput(np.array([1e308, -1e308] * 4), None, ValueError,
                                        "exceeds float64's range"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BAD_NOISE_INPUTS))
def test_estimate_noise_rejects_bad_input(name):
    case = BAD_NOISE_INPUTS[name]
    with pytest.raises(case.error, match=case.match):
        estimate_noise(case.y, axes=case.axes)


def test_choose_damping_rejects_more_bad_input():
    op = _reflect_blur()
    with pytest.raises(TypeError, match="y must hold real or complex numbers, got dtype bool"):
        choose_damping(op, np.ones(op.shape[0], dtype=bool))
    with pytest.raises(ValueError, match="noise must be a finite float >= 0, got 1000000"):
        choose_damping(op, np.ones(op.shape[0]), method="discrepancy", noise=10**400)
    with pytest.raises(ValueError, match="op's weight has NaN or Inf"):
        choose_damping(convop.conv2d(torch.full((1, 1, 3, 3), float("nan")), (1, 8, 8),
                                     padding=1), np.ones(64))  # fmt: skip


def test_large_allocations_ask_the_memory_guard(monkeypatch):
    from convop._shared import memory as _memory

    monkeypatch.setattr(_memory, "HOST_SOURCES", (lambda: 100_000,))
    op = _reflect_blur()
    with pytest.raises(MemoryError, match=r"choose_damping\(\)'s spectrum"):
        choose_damping(op, np.ones(op.shape[0]))
    with pytest.raises(MemoryError, match=r"estimate_noise\(\) of a \(60, 50\)"):
        estimate_noise(np.ones((60, 50)))


@pytest.mark.parametrize("method", list(convop.regularization.METHODS))
@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_choose_damping_with_a_201_psf_on_a_256_image(mode, method):
    """Issue 24 item 8: a PSF near the image's size (its lags computed by FFT in _lags)."""
    w = torch.from_numpy(gaussian_kernel(201, 30.0))[None, None]
    op = convop.conv2d(w, (1, 256, 256), padding="same", padding_mode=mode)
    y = np.random.default_rng(22).random(op.shape[0])
    start = time.perf_counter()
    damp = choose_damping(op, y, method=method)
    assert time.perf_counter() - start < 20  # generous: a few seconds on 2 busy cores
    assert 0 < damp < np.inf


def _complex_transpose(mode: str) -> tuple[convop.ConvOperator, convop.ConvOperator]:
    """``op.T`` of a complex blur, and the same map built directly: ``A^T = conj(A)^H``, the
    adjoint of the convolution with the conjugated weight."""
    blur = torch.from_numpy(gaussian_kernel(5, 1.2)).to(torch.complex128)
    phase = torch.exp(1j * torch.linspace(0, 2, 5, dtype=torch.float64))[:, None]
    jitter = torch.randn(5, 5, dtype=torch.complex128, generator=torch.Generator().manual_seed(7))
    w = (blur * phase + 0.004 * jitter)[None, None]
    op = convop.conv2d(w, (1, 16, 12), padding=2, padding_mode=mode)
    direct = convop.conv2d(w.conj().resolve_conj(), (1, 16, 12), padding=2, padding_mode=mode)
    return op.T, direct.H


def _complex_data(op: convop.ConvOperator, sigma: float) -> np.ndarray:
    """``op`` of a complex phantom, with circular complex noise of ``E|n|^2 = sigma^2``."""
    height, width = op.input_shape[1:]
    x = phantom(max(height, width))[:height, :width].ravel() * (1 - 0.5j)
    rng = np.random.default_rng(4)
    noise = rng.standard_normal(op.shape[0]) + 1j * rng.standard_normal(op.shape[0])
    return op @ x + sigma * noise / np.sqrt(2)


TRANSPOSE_CHOICES = {
    "gcv": {},
    "discrepancy": {"method": "discrepancy", "noise": 0.02},
    "discrepancy-exact": {"method": "discrepancy", "noise": 0.02, "exact": True},
}


@pytest.mark.parametrize("choice", list(TRANSPOSE_CHOICES))
@pytest.mark.parametrize("mode", ["reflect", "circular"])
def test_choice_for_a_transpose_is_that_of_its_conjugated_weight(mode, choice):
    """``op.T`` applies ``conj(op.weight)``; read unconjugated, circular GCV gave 0.027 for
    0.088 and the discrepancy 0.035 for 0.157 here (the exact one started off its root)."""
    transpose, direct = _complex_transpose(mode)
    np.testing.assert_array_equal(transpose.todense(), direct.todense())  # one map, two forms
    y = _complex_data(transpose, 0.02)
    options = TRANSPOSE_CHOICES[choice]
    assert choose_damping(transpose, y, **options) == pytest.approx(
        choose_damping(direct, y, **options), rel=1e-12
    )


def test_choice_for_a_circulant_transpose_is_the_dense_one():
    """Circulant: both criteria are exact, so they match the dense SVD's."""
    transpose, _ = _complex_transpose("circular")
    y = _complex_data(transpose, 0.02)
    residual, gcv = dense_criteria(transpose, y)
    damp = choose_damping(transpose, y)
    assert gcv(damp) <= min(gcv(d) for d in np.geomspace(damp / 3, damp * 3, 401)) * (1 + 1e-6)
    damp = choose_damping(transpose, y, method="discrepancy", noise=0.02)
    np.testing.assert_allclose(residual(damp), 0.02**2 * transpose.shape[0], rtol=1e-6)


def test_choice_for_a_reflect_transpose_is_the_dense_one():
    """Reflect: GCV up to the model's boundary; the exact discrepancy to its stopping rule."""
    transpose, _ = _complex_transpose("reflect")
    y = _complex_data(transpose, 0.02)
    residual, gcv = dense_criteria(transpose, y)
    grid = np.geomspace(1e-4, 1, 801)
    best = grid[np.argmin([gcv(d) for d in grid])]
    assert best / 1.5 <= choose_damping(transpose, y) <= best * 1.5
    damp = choose_damping(transpose, y, method="discrepancy", noise=0.02, exact=True)
    rtol = exact_discrepancy_rtol(transpose, y, damp, 0.02)
    np.testing.assert_allclose(residual(damp), 0.02**2 * transpose.shape[0], rtol=rtol)
