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


def _bounded_tikhonov(a: np.ndarray, b: np.ndarray, damp: float) -> np.ndarray:
    """The exact minimiser of ``|a x - b|^2 + damp^2 |x|^2`` over ``x >= 0``.

    scipy's ``lsq_linear`` gives the active set (the zeros), the free values are solved for
    densely, and the set is corrected until the KKT conditions hold to round-off: free
    values positive, the gradient nonnegative where ``x = 0``. The minimiser is unique.
    """
    h, c = a.T @ a + damp**2 * np.eye(a.shape[1]), a.T @ b
    stacked = np.vstack([a, damp * np.eye(a.shape[1])])
    rhs = np.concatenate([b, np.zeros(a.shape[1])])
    guess = lsq_linear(stacked, rhs, bounds=(0, np.inf), tol=1e-12).x
    free = guess > 1e-9 * guess.max()
    for _ in range(20):
        exact = np.zeros_like(c)
        exact[free] = np.linalg.solve(h[np.ix_(free, free)], c[free])
        gradient = h @ exact - c
        leaving, entering = free & (exact <= 0), ~free & (gradient < -1e-13 * np.abs(c).max())
        if not (leaving.any() or entering.any()):
            return exact
        free = (free & ~leaving) | entering
    raise AssertionError("no active set satisfies the KKT conditions")


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_nonnegative_tikhonov_is_the_bounded_least_squares_solution(mode):
    """ADMM's result is within what its stopping rule guarantees of the exact solution.

    For f(x) = 1/2 |A x - b|^2 + damp^2/2 |x|^2 over x >= 0, with H = A^T A + damp^2 I,
    mu and L its smallest and largest eigenvalues: (1) the error of any x is bounded by
    its natural residual r(x) = x - max(x - grad f(x), 0): |x - x*| <= (1 + L) / mu
    |r(x)| (strong monotonicity of grad f); (2) at ADMM's stop (x = z + (x - z), z the
    result, u the scaled dual) grad f(z) + rho u = H (z - x) + rho (z_old - z) with
    -rho u in the normal cone at z, so |r(z)| <= L |x - z| + rho |z - z_old| <= (L + rho)
    rtol |z|, the stopping rule; the inner cg solves, to rtol / 10, add at most a tenth.
    Hence |z - x*| <= 1.1 (1 + L) (L + rho) / mu * rtol * |z|.
    """
    from convop.cli._solve import _norm_squared

    op, b, _ = _problem(16, mode=mode)
    damp, rtol = 0.05, 1e-8
    a = op.todense()
    h = a.T @ a + damp**2 * np.eye(a.shape[1])
    exact = _bounded_tikhonov(a, b, damp)
    x, converged, _itn, residual, _ = solve_nonneg_normal(
        op, b, damp=damp, iterations=2000, quiet=True, rtol=rtol
    )
    mu, big = np.linalg.eigvalsh(h)[[0, -1]]
    rho = max(damp**2, 0.1 * _norm_squared(op))  # the solver's penalty
    tolerance = 1.1 * (1 + big) * (big + rho) / mu * rtol * np.linalg.norm(x)
    assert converged
    assert x.min() >= 0
    assert (exact == 0).sum() > 10  # the constraint is active
    assert np.linalg.norm(x - exact) <= tolerance
    assert residual == pytest.approx(np.linalg.norm(b - op @ x))
