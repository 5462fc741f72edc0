"""convop.cli._solve: the CLI's solvers minimise the objectives they state."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import lsq_linear

import convop
from convop.cli._solve import solve_admm_tv, solve_nonneg_normal, solve_tv
from convop.data import gaussian_kernel, phantom


def _problem(n: int = 24, sigma: float = 0.02, mode: str = "reflect"):
    op = convop.conv2d(gaussian_kernel(5, 1.2)[None, None], (1, n, n), padding="same",
                       padding_mode=mode)  # fmt: skip
    truth = phantom(n)
    b = op @ truth.ravel() + sigma * np.random.default_rng(0).standard_normal(op.shape[0])
    return op, b, truth


def _tv_objective(op, b, x, weight):
    image = x.reshape(op.input_shape[-2:])
    tv = np.abs(np.diff(image, axis=0)).sum() + np.abs(np.diff(image, axis=1)).sum()
    return 0.5 * np.sum((op @ x - b) ** 2) + weight * tv


def test_pylops_split_bregman_minimises_the_stated_tv_objective():
    """solve_tv passes PyLops sqrt(weight): its fixed point is ADMM's for ``weight``."""
    op, b, _ = _problem()
    weight = 4 * 0.02**2
    ours, *_ = solve_admm_tv(op, b, weight=weight, iterations=400, quiet=True, nonneg=False)
    theirs, *_ = solve_tv(op, b, weight=weight, iterations=400, quiet=True)
    f_ours, f_theirs = _tv_objective(op, b, ours, weight), _tv_objective(op, b, theirs, weight)
    assert f_theirs == pytest.approx(f_ours, rel=1e-4)
    for scale in (0.5, 2.0):  # another weight's minimiser is worse for this one
        other, *_ = solve_tv(op, b, weight=scale * weight, iterations=400, quiet=True)
        assert _tv_objective(op, b, other, weight) > f_theirs * (1 + 1e-4)


def test_nonnegative_tv_beats_clipping_the_unconstrained_result():
    op, b, truth = _problem()
    weight = 4 * 0.02**2
    kept = b.copy()
    x, _itn, residual, _ = solve_admm_tv(op, b, weight=weight, iterations=300, quiet=True)
    np.testing.assert_array_equal(b, kept)
    assert x.min() >= 0
    free, *_ = solve_admm_tv(op, b, weight=weight, iterations=300, quiet=True, nonneg=False)
    assert free.min() < -1e-3  # the constraint is active
    clipped = np.maximum(free, 0)
    assert _tv_objective(op, b, x, weight) < _tv_objective(op, b, clipped, weight)
    assert residual == pytest.approx(np.linalg.norm(b - op @ x))
    assert np.linalg.norm(x - truth.ravel()) < np.linalg.norm(b - truth.ravel())


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_nonnegative_tikhonov_is_scipys_bounded_least_squares(mode):
    op, b, _ = _problem(16, mode=mode)
    damp = 0.05
    a = op.todense()
    stacked = np.vstack([a, damp * np.eye(a.shape[1])])
    rhs = np.concatenate([b, np.zeros(a.shape[1])])
    reference = lsq_linear(stacked, rhs, bounds=(0, np.inf), tol=1e-12).x
    x, converged, _itn, residual, _ = solve_nonneg_normal(
        op, b, damp=damp, iterations=2000, quiet=True, rtol=1e-8
    )
    assert converged
    assert x.min() >= 0
    assert (reference < 1e-12).sum() > 10  # the constraint is active
    np.testing.assert_allclose(x, reference, rtol=0, atol=1e-5)
    assert residual == pytest.approx(np.linalg.norm(b - op @ x))
