"""The PyLops face: N-d dims, pylops' own dot test, composition and PyLops solvers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pylops
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pylops.optimization.basic import cgls, lsqr
from pylops.optimization.leastsquares import regularized_inversion
from pylops.optimization.sparsity import fista
from pylops.utils import dottest

import convop
from convop.pylops_bridge import PyLopsConv

from .strategies import COMBO_IDS, COMBOS, draw_operator


def _blur(shape=(1, 24, 20), dtype=torch.float64) -> convop.ConvOperator:
    """A well-posed, single-channel 'same' blur (a smoothing kernel plus a strong centre)."""
    kernel = torch.full((1, 1, 3, 3), 0.05, dtype=dtype)
    kernel[0, 0, 1, 1] = 1.0
    return convop.conv2d(kernel, shape, padding="same", padding_mode="replicate")


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_pylops_dottest_passes(combo, data):
    _, dtype, _, op = draw_operator(data, combo)
    P = op.to_pylops()
    assert (P.dims, P.dimsd) == (P.conv.input_shape, P.conv.output_shape)
    complexflag = 3 if dtype.is_complex else 0
    assert dottest(P, *P.shape, rtol=1e-10, complexflag=complexflag)
    assert dottest(P.H, *P.H.shape, rtol=1e-10, complexflag=complexflag)


def test_float32_dottest_with_a_float32_tolerance():
    weight = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    P = convop.conv2d(weight, (3, 16, 16), stride=2, padding=1, padding_mode="circular")
    assert dottest(P.to_pylops(), *P.shape, rtol=1e-4)


def test_nd_arrays_in_and_out_like_pylops_operators():
    op = convop.conv2d(torch.randn(4, 2, 3, 3, dtype=torch.float64), (2, 9, 7), stride=2)
    P = op.to_pylops()
    x = np.random.default_rng(0).standard_normal(op.input_shape)
    y = P @ x
    assert y.shape == op.output_shape
    np.testing.assert_array_equal(y.ravel(), op @ x.ravel())
    np.testing.assert_array_equal((P.H @ y).ravel(), op.rmatvec(y.ravel()))
    assert (P @ x.ravel()).shape == (op.shape[0],)


def test_matmat_is_one_batched_convolution(monkeypatch):
    op = convop.conv1d(torch.randn(2, 1, 3, dtype=torch.float64), (1, 10))
    P = op.to_pylops()
    calls = []
    run = type(op)._run
    monkeypatch.setattr(
        type(op), "_run", lambda s, b, w, **k: calls.append(b.shape) or run(s, b, w, **k)
    )
    X = np.random.default_rng(0).standard_normal((10, 5))
    Y = P.matmat(X)
    assert calls == [torch.Size([5, 1, 10])]
    np.testing.assert_allclose(Y, np.stack([op @ X[:, j] for j in range(5)], axis=1))
    np.testing.assert_allclose(P.rmatmat(Y), op.rmatmat(Y))


def test_frames_and_columns_are_one_batched_convolution(monkeypatch):
    op = convop.conv1d(torch.randn(2, 1, 3, dtype=torch.float64), (1, 10))
    P = PyLopsConv(op, frames=4)
    calls = []
    run = type(op)._run
    monkeypatch.setattr(
        type(op), "_run", lambda s, b, w, **k: calls.append(b.shape) or run(s, b, w, **k)
    )
    X = np.random.default_rng(0).standard_normal((P.shape[1], 3))
    Y = P.matmat(X)
    assert calls == [torch.Size([12, 1, 10])]  # 4 frames of 3 columns
    frames = X.reshape(4, 10, 3)
    expected = np.stack([op.matmat(frames[f]) for f in range(4)]).reshape(-1, 3)
    np.testing.assert_allclose(Y, expected, rtol=1e-14)
    V = np.random.default_rng(1).standard_normal((P.shape[0], 2))
    expected = np.stack([op.rmatmat(v) for v in V.reshape(4, -1, 2)]).reshape(-1, 2)
    np.testing.assert_allclose(P.rmatmat(V), expected, rtol=1e-14)


def test_composes_with_pylops_operators():
    op = _blur()
    P = op.to_pylops()
    n = op.shape[1]
    laplacian = pylops.Laplacian(dims=op.input_shape, axes=(1, 2), dtype=np.float64)
    stacked = pylops.VStack([P, laplacian])
    side_by_side = pylops.HStack([P, P])
    block = pylops.BlockDiag([P, P])
    weighted = pylops.Diagonal(np.linspace(1.0, 2.0, op.shape[0])) @ P
    for composite in (stacked, side_by_side, block, weighted, P.H @ P, 2.0 * P + P):
        assert dottest(composite, *composite.shape, rtol=1e-10)
    x = np.random.default_rng(1).standard_normal(n)
    np.testing.assert_allclose(stacked @ x, np.concatenate([op @ x, laplacian @ x]))


def test_pylops_least_squares_solvers_recover_the_signal():
    """Each solver's error, bounded by what its stopping rule guarantees (dense SVD's sigma)."""
    op = _blur()
    P = op.to_pylops()
    x_true = np.random.default_rng(2).standard_normal(op.shape[1])
    y = op @ x_true
    a = op.todense()
    sigma_min = np.linalg.svd(a, compute_uv=False).min()  # 0.80
    x_cgls, istop, iterations = cgls(P, y, niter=200, tol=1e-14)[:3]
    # CGLS runs while ||A^H s||^2 > tol (s: its residual y - A x) and says istop=1 when it
    # stopped there, not at niter; then ||x - x*|| <= ||A^H s|| / sigma_min^2
    assert istop == 1
    assert iterations < 200
    error = np.linalg.norm(x_cgls.ravel() - x_true)  # solvers return dims shape
    assert error <= np.sqrt(1e-14) / sigma_min**2  # 8.4e-8 measured, 1.55e-7 allowed
    # LSQR's istop=1 is its test 1, ||r|| <= btol ||y|| + atol ||A|| ||x|| (||A||: at most
    # the Frobenius norm), and ||x - x*|| <= ||r|| / sigma_min. Its test 2, ||A^H r|| <= atol
    # ||A^H y||, implies ||r|| <= atol cond(A) ||y|| here (A square, nonsingular), within test
    # 1's bound, and test 1 is checked last: istop=1 is what it stops with.
    x_lsqr, istop = lsqr(P, y, niter=200, atol=1e-14, btol=1e-14)[:2]
    assert istop == 1
    x_lsqr = x_lsqr.ravel()
    bound = 1e-14 * np.linalg.norm(y) + 1e-14 * np.linalg.norm(a) * np.linalg.norm(x_lsqr)
    assert np.linalg.norm(x_lsqr - x_true) <= bound / sigma_min  # 6.4e-13 measured, 6.5e-12


def test_regularized_inversion_with_a_laplacian_smooths():
    op = _blur(shape=(1, 32, 32))
    P = op.to_pylops()
    grid = np.linspace(0, 1, 32)
    x_true = np.outer(np.sin(3 * grid), np.cos(2 * grid)).reshape(op.input_shape)
    noisy = P @ x_true + 0.05 * np.random.default_rng(3).standard_normal(op.output_shape)
    laplacian = pylops.Laplacian(dims=op.input_shape, axes=(1, 2), dtype=np.float64)
    plain = regularized_inversion(P, noisy.ravel(), [laplacian], epsRs=[0.0], iter_lim=300)[0]
    smooth = regularized_inversion(P, noisy.ravel(), [laplacian], epsRs=[0.5], iter_lim=300)[0]
    error = [np.linalg.norm(x.ravel() - x_true.ravel()) for x in (plain, smooth)]
    assert error[1] < 0.8 * error[0]


def test_fista_recovers_a_sparse_signal():
    """FISTA's error after k steps, bounded by its rate and the L1 term's bias (dense SVD).

    PyLops' FISTA minimises ``F(x) = 1/2 ||A x - y||^2 + lam ||x||_1``, ``lam = eps / 2``
    (it thresholds at ``eps alpha / 2`` after a gradient step ``alpha = 1 / sigma_max^2``).
    Beck & Teboulle (2009, Thm. 4.4): ``F(x_k) - F* <= 2 L ||x*||^2 / (k + 1)^2``, ``L =
    sigma_max^2``; ``F`` is ``mu = sigma_min^2``-strongly convex (``A`` square, nonsingular),
    so ``||x_k - x*|| <= 2 (sigma_max / sigma_min) ||x*|| / (k + 1)``. The minimiser's bias:
    ``A^T A (x* - x_true) = -lam g`` with ``|g_i| <= 1``, so ``|x* - x_true|_inf <= lam
    ||(A^T A)^-1||_inf`` and ``||x*|| <= ||x_true|| + lam sqrt(n) / sigma_min^2``. Its own
    ``tol`` stops at a small step, which bounds nothing: ``tol=0`` stops only at a step that
    changes nothing (89 here, of 400), and the bound is for the steps taken.
    """
    op = _blur(shape=(1, 20, 20))
    P = op.to_pylops()
    x_true = np.zeros(op.shape[1])
    x_true[np.random.default_rng(4).choice(op.shape[1], 8, replace=False)] = 1.0
    x_hat, steps, _ = fista(P, P @ x_true, niter=400, eps=1e-3, tol=0.0)
    a = op.todense()
    s = np.linalg.svd(a, compute_uv=False)
    lam = 1e-3 / 2
    bias = lam * np.abs(np.linalg.inv(a.T @ a)).sum(1).max()  # 1.0e-3
    size = np.linalg.norm(x_true) + lam * np.sqrt(a.shape[1]) / s.min() ** 2
    rate = 2 * (s.max() / s.min()) * size / (steps + 1)  # 0.11 after 89 steps
    np.testing.assert_allclose(x_hat.ravel(), x_true, rtol=0, atol=rate + bias)  # 5e-4 seen
    assert np.count_nonzero(np.abs(x_hat) > 0.5) == 8


def test_repr_and_name():
    P = _blur().to_pylops(name="B")
    assert P.name == "B"
    assert repr(P).startswith("<480x480 PyLopsConv(ConvOperator(conv2d, input_shape=(1, 24, 20)")
    assert isinstance(P, pylops.LinearOperator)
    assert isinstance(P, PyLopsConv)


def test_import_convop_does_not_import_pylops():
    code = "import sys, convop; sys.exit('pylops' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_foreign_arrays_on_another_device_are_rejected():
    P = _blur().to_pylops()
    with pytest.raises(ValueError, match=r"x is on meta but the operator's weight is on cpu"):
        P._apply(torch.ones(P.shape[1], 1, dtype=torch.float64, device="meta"), adjoint=False)


def test_dlpack_arrays_round_trip_without_numpy():
    # torch tensors speak DLPack like CuPy arrays do: the same path, testable on the CPU.
    op = convop.conv2d(torch.randn(2, 1, 3, 3, dtype=torch.float64), (1, 6, 6), padding=1)
    X = torch.randn(op.shape[1], 3, dtype=torch.float64)
    Y = op.to_pylops()._apply(X, adjoint=False)
    assert isinstance(Y, torch.Tensor)
    np.testing.assert_allclose(Y.numpy(), op.matmat(X.numpy()))


@pytest.mark.cuda
def test_cupy_arrays_stay_on_the_gpu():
    cp = pytest.importorskip("cupy")
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    cpu = convop.conv2d(weight, (2, 10, 10), padding=1, padding_mode="reflect")
    P = convop.conv2d(weight.cuda(), (2, 10, 10), padding=1, padding_mode="reflect").to_pylops()
    x = cp.random.standard_normal(P.shape[1])
    y = P @ x
    assert isinstance(y, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(y), cpu @ cp.asnumpy(x), rtol=1e-12, atol=1e-12)
    assert dottest(P, *P.shape, rtol=1e-10, backend="cupy")
