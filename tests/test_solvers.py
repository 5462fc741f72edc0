"""convop.solvers: every solver against a dense oracle, its callback, its errors.

Oracles are independent of the code under test: dense normal equations (numpy), scipy's
``lsq_linear`` refined to the exact KKT point for nonnegative Tikhonov, and for total
variation a dense dual projected-gradient method whose duality gap certifies its optimum.
Tolerances follow the solvers' stopping rules (see each test).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
import torch
from scipy.optimize import lsq_linear
from scipy.sparse.linalg import LinearOperator
from threadpoolctl import threadpool_info

import convop
from convop.data import gaussian_kernel, phantom
from convop.solvers import NormalOperator, SolverResult

EPS = np.finfo(np.float64).eps


# ---------------------------------------------------------------------- problems
def blur(shape: tuple[int, ...], mode: str = "reflect") -> convop.ConvOperator:
    """A mild separable blur of each channel of ``(C, *spatial)`` (well conditioned)."""
    taps = np.array([0.2, 0.6, 0.2])
    kernel = taps
    for _ in range(len(shape) - 2):
        kernel = np.multiply.outer(kernel, taps)
    channels = shape[0]
    weight = np.broadcast_to(kernel, (channels, 1, *kernel.shape)).copy()  # (C, 1, *k)
    conv = (convop.conv1d, convop.conv2d, convop.conv3d)[len(shape) - 2]
    return conv(weight, shape, padding="same", padding_mode=mode, groups=channels)


def phantom_problem(n: int = 24, sigma: float = 0.02, mode: str = "reflect"):
    """The CLI's kind of problem: a 5x5 Gaussian blur of the phantom, plus noise."""
    op = convop.conv2d(gaussian_kernel(5, 1.2)[None, None], (1, n, n), padding="same",
                       padding_mode=mode)  # fmt: skip
    truth = phantom(n)
    y = op @ truth.ravel() + sigma * np.random.default_rng(0).standard_normal(op.shape[0])
    return op, y, truth


def tikhonov_dense(a: np.ndarray, y: np.ndarray, damp: float) -> np.ndarray:
    """``argmin ||a x - y||^2 + damp^2 ||x||^2`` by a dense solve of the normal equations."""
    return np.linalg.solve(a.conj().T @ a + damp**2 * np.eye(a.shape[1]), a.conj().T @ y)


def pcg_tolerance(a: np.ndarray, y: np.ndarray, damp: float) -> float:
    """How far from the minimiser :func:`convop.pcg`'s stopping rule lets its result be.

    With ``N = a^H a + damp^2 I``, ``c = a^H y``: cg stops at ``||c - N x|| < rtol ||c||``
    (its updated residual; the true one drifts from it by round-off, a few ``eps ||N||
    ||x||``), and any ``x`` has ``||x - x*|| <= ||N x - c|| / lambda_min(N)``.
    """
    normal = a.conj().T @ a + damp**2 * np.eye(a.shape[1])
    low, high = np.linalg.eigvalsh(normal)[[0, -1]]
    c = np.linalg.norm(a.conj().T @ y)
    return (1e-6 * c + 100 * EPS * high * np.linalg.norm(tikhonov_dense(a, y, damp))) / low


# ---------------------------------------------------------------------- normal operator
def _counted(product: str):
    """The method ``_<product>`` of :class:`Counting`: note the call, then pass it on."""

    def method(self, x):
        self.calls.append(product)
        return getattr(self.op, product)(x)

    return method


class Counting(LinearOperator):
    """An operator that counts its batched products (one per matmat, whatever the width)."""

    def __init__(self, op: convop.ConvOperator) -> None:
        self.op, self.calls = op, []
        super().__init__(dtype=op.dtype, shape=op.shape)

    _matvec = _counted("matvec")
    _rmatvec = _counted("rmatvec")
    _matmat = _counted("matmat")
    _rmatmat = _counted("rmatmat")


def test_normal_operator_is_the_dense_normal_matrix_and_batches():
    op = blur((2, 5, 6), mode="zeros")
    counting = Counting(op)
    N = convop.normal_operator(counting, damp=0.3)
    a = op.todense()
    X = np.random.default_rng(0).standard_normal((op.shape[1], 7))
    expected = a.T @ (a @ X) + 0.09 * X
    np.testing.assert_allclose(N @ X, expected, rtol=1e-13, atol=1e-13 * np.abs(expected).max())
    assert counting.calls == ["matmat", "rmatmat"]  # one batched product each way
    np.testing.assert_allclose(N.matvec(X[:, 0]), expected[:, 0], rtol=1e-13, atol=1e-13)
    assert isinstance(N, NormalOperator)
    assert N.H is N
    assert (N.shape, N.dtype) == ((op.shape[1],) * 2, np.dtype(np.float64))


def test_normal_operator_of_a_complex_operator_is_hermitian():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(2, 1, 3, dtype=torch.complex128, generator=gen)
    op = convop.conv1d(w, (1, 9), padding=1)  # (2, 9) out of (1, 9)
    a = op.todense()
    N = convop.normal_operator(op, damp=0.5)
    dense = N @ np.eye(op.shape[1], dtype=complex)
    np.testing.assert_allclose(dense, a.conj().T @ a + 0.25 * np.eye(9), atol=1e-13)
    np.testing.assert_allclose(dense, dense.conj().T, atol=1e-13)
    v = np.random.default_rng(1).standard_normal(9) * 1j
    np.testing.assert_allclose(N.rmatvec(v), N.matvec(v), atol=1e-13)


# ---------------------------------------------------------------------- pcg, tikhonov
class Blur(NamedTuple):
    name: str
    build: Callable[[], convop.ConvOperator]


BLURS = [
    Blur("reflect 2-d", lambda: phantom_problem(16)[0]),
    Blur("zeros 2-d", lambda: phantom_problem(16, mode="zeros")[0]),
    Blur("replicate 3-d", lambda: blur((1, 4, 5, 3), mode="replicate")),
    Blur("strided (no preconditioner)", lambda: convop.conv1d(np.array([[[0.5, 1.0, 0.5]]]),
                                                              (1, 30), stride=2, padding=1)),
    Blur("transposed", lambda: convop.conv_transpose2d(np.full((1, 1, 2, 2), 0.25), (1, 6, 7))),
]  # fmt: skip


@pytest.mark.parametrize("case", BLURS, ids=[c.name for c in BLURS])
def test_pcg_is_within_its_stopping_rule_of_the_dense_solution(case):
    op = case.build()
    a = op.todense()
    y = np.random.default_rng(0).standard_normal(op.shape[0])
    damp = 0.05
    solved = convop.pcg(op, y, damp)
    assert solved.converged
    assert np.linalg.norm(solved.x - tikhonov_dense(a, y, damp)) <= pcg_tolerance(a, y, damp)
    assert solved.residual == pytest.approx(np.linalg.norm(y - a @ solved.x), rel=1e-12)


def test_pcg_preconditions_where_it_applies_and_saves_iterations():
    op, y, _ = phantom_problem(24)
    pre = convop.pcg(op, y, 1e-2)
    plain = convop.pcg(op, y, 1e-2, M=None)
    strided = convop.pcg(BLURS[3].build(), np.ones(15), 1e-2)
    assert (pre.method, plain.method, strided.method) == ("pcg", "cg", "cg")
    assert pre.iterations * 5 < plain.iterations
    explicit = convop.pcg(op, y, 1e-2, M=convop.preconditioner(op, damp=1e-2))
    np.testing.assert_array_equal(explicit.x, pre.x)


def test_pcg_solves_complex_problems():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(1, 1, 3, 3, dtype=torch.complex128, generator=gen)
    op = convop.conv2d(w, (1, 6, 5), padding=1, padding_mode="reflect")
    a = op.todense()
    rng = np.random.default_rng(2)
    y = rng.standard_normal(op.shape[0]) + 1j * rng.standard_normal(op.shape[0])
    solved = convop.pcg(op, y, 0.1)
    assert solved.x.dtype == np.complex128
    assert np.linalg.norm(solved.x - tikhonov_dense(a, y, 0.1)) <= pcg_tolerance(a, y, 0.1)


def test_tikhonov_is_exact_for_circulant_operators_and_pcg_elsewhere():
    op = convop.conv2d(gaussian_kernel(5, 1.0)[None, None], (1, 12, 12), padding="same",
                       padding_mode="circular")  # fmt: skip
    a = op.todense()
    y = np.random.default_rng(0).standard_normal(op.shape[0])
    solved = convop.tikhonov(op, y, 0.05)
    exact = tikhonov_dense(a, y, 0.05)
    # round-off: a few eps times the condition number of the normal matrix
    eigen = np.linalg.eigvalsh(a.T @ a + 0.05**2 * np.eye(a.shape[1]))
    tolerance = 100 * EPS * eigen[-1] / eigen[0] * np.linalg.norm(exact)
    assert (solved.method, solved.iterations, solved.converged) == ("exact", 1, True)
    assert np.linalg.norm(solved.x - exact) <= tolerance
    reflect = convop.tikhonov(phantom_problem(12)[0], y, 0.05)
    assert reflect.method == "pcg"


def bounded_tikhonov(a: np.ndarray, b: np.ndarray, damp: float) -> np.ndarray:
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
    op, b, _ = phantom_problem(16, mode=mode)
    damp, rtol, rho = 0.05, 1e-8, 0.1
    a = op.todense()
    exact = bounded_tikhonov(a, b, damp)
    solved = convop.tikhonov(op, b, damp, nonneg=True, rtol=rtol, rho=rho, maxiter=2000)
    mu, big = np.linalg.eigvalsh(a.T @ a + damp**2 * np.eye(a.shape[1]))[[0, -1]]
    tolerance = 1.1 * (1 + big) * (big + rho) / mu * rtol * np.linalg.norm(solved.x)
    assert (solved.method, solved.converged) == ("admm", True)
    assert solved.x.min() >= 0
    assert (exact == 0).sum() > 10  # the constraint is active
    assert np.linalg.norm(solved.x - exact) <= tolerance
    assert solved.residual == pytest.approx(np.linalg.norm(b - a @ solved.x), rel=1e-12)


def test_nonnegative_tikhonov_default_penalty_converges_to_the_same_point():
    op, b, _ = phantom_problem(16)
    default = convop.tikhonov(op, b, 0.05, nonneg=True, rtol=1e-8, maxiter=3000)
    given = convop.tikhonov(op, b, 0.05, nonneg=True, rtol=1e-8, rho=0.1, maxiter=3000)
    assert default.converged
    np.testing.assert_allclose(default.x, given.x, atol=1e-5 * np.abs(given.x).max())


# ---------------------------------------------------------------------- total variation
def gradients(x: np.ndarray) -> np.ndarray:
    """Forward differences along every spatial axis of ``(C, *spatial)``: ``(k, C, *spatial)``."""
    parts = []
    for axis in range(1, x.ndim):
        d = np.zeros_like(x)
        d[(slice(None),) * axis + (slice(None, -1),)] = np.diff(x, axis=axis)
        parts.append(d)
    return np.stack(parts)


def tv_objective(op, y, x, weight, isotropic):
    g = gradients(np.reshape(x, op.input_shape))
    tv = np.sqrt((g**2).sum(0)).sum() if isotropic else np.abs(g).sum()
    return 0.5 * np.sum((op @ np.ravel(x) - y) ** 2) + weight * tv


def dense_gradient(shape: tuple[int, ...]) -> np.ndarray:
    """The matrix of :func:`gradients` on flat samples: ``(k n, n)``."""
    n = int(np.prod(shape))
    columns = [gradients(e.reshape(shape)).ravel() for e in np.eye(n)]
    return np.array(columns).T


def tv_oracle(a, y, shape, weight, isotropic, nonneg, gap=1e-10):
    """``(x*, P*)``: accelerated projected gradient on the dual, to a duality gap ``gap P``.

    ``min 1/2 |a x - y|^2 + w TV(x) (+ x >= 0)``, ``H = a^T a`` invertible: the dual of
    ``q = (p, s)`` (``p`` in the ``w``-ball per pixel or per entry, ``s >= 0``) is
    ``D(q) = |y|^2 / 2 - 1/2 (c - B^T q)^T H^-1 (c - B^T q)``, ``B = [G; -I]``, ``c = a^T
    y``; its maximiser gives ``x = H^-1 (c - B^T q)``. ``P(max(x, 0)) - D(q)`` bounds the
    error of the objective value from above. FISTA with gradient restarts (O'Donoghue &
    Candes 2015).
    """
    n = a.shape[1]
    G = dense_gradient(shape)
    k = G.shape[0] // n
    B = np.vstack([G, -np.eye(n)]) if nonneg else G
    hinv = np.linalg.inv(a.T @ a)
    c = a.T @ y
    step = 1 / np.linalg.eigvalsh(B @ hinv @ B.T)[-1]

    def project(q):
        p = q[: k * n].reshape(k, n)
        length = np.sqrt((p**2).sum(0)) if isotropic else np.abs(p)
        p = p * np.minimum(1, weight / np.maximum(length, 1e-300))
        return np.concatenate([p.ravel(), np.maximum(q[k * n :], 0)])

    def objective(x):
        g = (G @ x).reshape(k, n)
        tv = np.sqrt((g**2).sum(0)).sum() if isotropic else np.abs(g).sum()
        return 0.5 * np.sum((a @ x - y) ** 2) + weight * tv

    q = z = np.zeros(B.shape[0])
    t = 1.0
    for it in range(200_000):
        new = project(z + step * (B @ (hinv @ (c - B.T @ z))))
        t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
        restart = (z - new) @ (new - q) > 0
        z = new if restart else new + (t - 1) / t_new * (new - q)
        q, t = new, 1.0 if restart else t_new
        if it % 50 == 0:
            r = c - B.T @ q
            x = hinv @ r
            x = np.maximum(x, 0) if nonneg else x
            upper, lower = objective(x), 0.5 * y @ y - 0.5 * r @ hinv @ r
            if upper - lower <= gap * upper:
                return x, lower
    raise AssertionError("the oracle did not converge")


class TVCase(NamedTuple):
    shape: tuple[int, ...]
    isotropic: bool
    nonneg: bool


TV_CASES = [
    TVCase(shape, isotropic, nonneg)
    for shape in [(1, 16), (1, 5, 5), (1, 3, 3, 3), (2, 4, 4)]
    for isotropic in (False, True)
    for nonneg in (False, True)
]


@pytest.mark.parametrize(
    "case", TV_CASES, ids=[f"{c.shape}-iso{c.isotropic:d}-nonneg{c.nonneg:d}" for c in TV_CASES]
)
def test_total_variation_reaches_the_certified_minimum(case):
    """1-D, 2-D and 3-D, one and two channels, anisotropic and isotropic, with and without
    the constraint: the objective within ``30 rtol`` of the oracle's certified minimum.

    The ADMM stops when its result moved by at most ``rtol ||x||`` in the last step; it
    contracts by a factor ``r`` per step (0.85 to 0.97 on these problems), so what is left
    is about that step times ``r / (1 - r) <= 30``: the objective is then within about
    ``30 rtol`` of the minimum, relative (observed: 0.3 to 11 rtol).
    """
    op = blur(case.shape)
    a = op.todense()
    truth = (np.random.default_rng(1).random(case.shape) > 0.5).astype(float)
    y = a @ truth.ravel() + 0.05 * np.random.default_rng(2).standard_normal(a.shape[0])
    weight, rtol = 0.02, 1e-6
    minimum = tv_oracle(a, y, case.shape, weight, case.isotropic, case.nonneg)[1]
    solved = convop.total_variation(op, y, weight, isotropic=case.isotropic,
                                    nonneg=case.nonneg, rtol=rtol, maxiter=5000)  # fmt: skip
    value = tv_objective(op, y, solved.x, weight, case.isotropic)
    assert solved.converged
    assert minimum <= value <= minimum * (1 + 30 * rtol)
    assert solved.x.min() >= 0 or not case.nonneg
    # not a vacuous tolerance: the minimiser of twice the weight misses it
    other = tv_oracle(a, y, case.shape, 2 * weight, case.isotropic, case.nonneg)[0]
    assert tv_objective(op, y, other, weight, case.isotropic) > minimum * (1 + 30 * rtol)


def test_isotropic_and_anisotropic_differ_in_2d_and_agree_in_1d():
    op2 = blur((1, 8, 8))
    y2 = op2 @ np.tri(8).ravel()  # a diagonal edge: where the two norms differ
    kw = dict(rtol=1e-8, maxiter=5000)
    iso, aniso = (
        convop.total_variation(op2, y2, 0.05, isotropic=i, **kw).x for i in (True, False)
    )
    assert tv_objective(op2, y2, iso, 0.05, True) < tv_objective(op2, y2, aniso, 0.05, True)
    assert tv_objective(op2, y2, aniso, 0.05, False) < tv_objective(op2, y2, iso, 0.05, False)
    op1 = blur((1, 20))
    y1 = op1 @ np.repeat([0.0, 1.0], 10)
    iso, aniso = (
        convop.total_variation(op1, y1, 0.05, isotropic=i, **kw).x for i in (True, False)
    )
    np.testing.assert_allclose(iso, aniso, atol=1e-12)


def test_pylops_split_bregman_minimises_the_stated_tv_objective():
    """method='pylops' passes PyLops sqrt(weight): its fixed point is convop's for ``weight``.

    Both run to the step rule at ``rtol``; their objectives agree within the certified
    tolerance of :func:`test_total_variation_reaches_the_certified_minimum`.
    """
    op, b, _ = phantom_problem(16)
    weight, rtol = 4 * 0.02**2, 1e-7
    common = dict(x0=b, rtol=rtol, maxiter=3000)
    ours = convop.total_variation(op, b, weight, **common)
    theirs = convop.total_variation(op, b, weight, method="pylops", **common)
    f_ours, f_theirs = (tv_objective(op, b, r.x, weight, False) for r in (ours, theirs))
    assert (ours.converged, theirs.converged, theirs.method) == (True, True, "pylops")
    assert f_theirs == pytest.approx(f_ours, rel=30 * rtol)
    for scale in (0.5, 2.0):  # another weight's minimiser is worse for this one
        other = convop.total_variation(op, b, scale * weight, method="pylops", **common)
        assert tv_objective(op, b, other.x, weight, False) > f_theirs * (1 + 30 * rtol)


def test_nonnegative_tv_beats_clipping_the_unconstrained_result():
    op, b, truth = phantom_problem()
    weight = 4 * 0.02**2
    kept = convop.total_variation(op, b, weight, nonneg=True, x0=b, maxiter=300)
    free = convop.total_variation(op, b, weight, x0=b, maxiter=300)
    assert kept.x.min() >= 0
    assert free.x.min() < -1e-3  # the constraint is active
    clipped = np.maximum(free.x, 0)
    assert tv_objective(op, b, kept.x, weight, False) < tv_objective(op, b, clipped, weight, False)
    assert np.linalg.norm(kept.x - truth.ravel()) < np.linalg.norm(b - truth.ravel())


def test_gradient_and_its_adjoint_are_pylops_forward_differences():
    """The stacked operator of the TV steps: PyLops' FirstDerivative's numbers, exactly."""
    import pylops

    from convop.solvers._gradient import Gradient

    shape = (2, 4, 5, 3)
    x = np.random.default_rng(0).standard_normal(shape)
    g = Gradient(shape)
    for i, axis in enumerate(g.axes):
        D = pylops.FirstDerivative(shape, axis=axis, kind="forward", dtype="float64")
        np.testing.assert_array_equal(g(x.ravel())[i].ravel(), D @ x.ravel())
        np.testing.assert_array_equal(g.adjoint(x, axis), D.H @ x.ravel())


# ---------------------------------------------------------------------- callbacks
class Solver(NamedTuple):
    name: str
    run: Callable  # (op, y, **kw) -> SolverResult
    iterative: bool


SOLVERS = [
    Solver("pcg", lambda op, y, **kw: convop.pcg(op, y, 0.05, rtol=0, maxiter=8, **kw), True),
    Solver("tikhonov exact",
           lambda op, y, **kw: convop.tikhonov(op, y, 0.05, method="exact", **kw), False),
    Solver("tikhonov nonneg",
           lambda op, y, **kw: convop.tikhonov(op, y, 0.05, nonneg=True, rtol=0, maxiter=8,
                                               rho=0.1, **kw), True),
    Solver("tv admm",
           lambda op, y, **kw: convop.total_variation(op, y, 0.01, isotropic=True, nonneg=True,
                                                      rtol=0, maxiter=8, **kw), True),
    Solver("tv pylops",
           lambda op, y, **kw: convop.total_variation(op, y, 0.01, method="pylops", rtol=0,
                                                      maxiter=8, **kw), True),
]  # fmt: skip
IDS = [s.name for s in SOLVERS]


def _circulant_problem():
    op = convop.conv2d(gaussian_kernel(3, 1.0)[None, None], (1, 8, 8), padding="same",
                       padding_mode="circular")  # fmt: skip
    return op, op @ phantom(8).ravel()


@pytest.mark.parametrize("solver", SOLVERS, ids=IDS)
def test_callback_sees_each_iteration_and_the_final_iterate(solver):
    op, y = _circulant_problem()
    seen = []
    solved = solver.run(op, y, callback=lambda k, x: seen.append((k, x.copy())))
    assert [k for k, _ in seen] == list(range(1, solved.iterations + 1))
    assert solved.iterations == (8 if solver.iterative else 1)
    np.testing.assert_array_equal(seen[-1][1], solved.x)
    assert solved.stop == ("maxiter" if solver.iterative else "converged")


@pytest.mark.parametrize("solver", [s for s in SOLVERS if s.iterative], ids=IDS[:1] + IDS[2:])
def test_callback_returning_true_stops_early_with_that_iterate(solver):
    op, y = _circulant_problem()
    seen = []

    def stop_at_three(k, x):
        seen.append(x.copy())
        return np.bool_(k == 3)  # numpy's True stops too; False goes on

    solved = solver.run(op, y, callback=stop_at_three)
    assert (solved.iterations, solved.stop, solved.converged) == (3, "callback", False)
    np.testing.assert_array_equal(solved.x, seen[-1])
    assert solved.residual == pytest.approx(np.linalg.norm(y - op @ solved.x), rel=1e-12)


@pytest.mark.parametrize("solver", SOLVERS, ids=IDS)
def test_callback_gets_a_read_only_view_and_only_true_stops(solver):
    op, y = _circulant_problem()
    writes = []

    def meddle(k, x):
        with pytest.raises(ValueError, match="read-only"):
            x[0] = 1e9
        writes.append(k)
        return 1  # truthy but not True (tqdm's update returns True on redraws): goes on

    solved = solver.run(op, y, callback=meddle)
    assert writes == list(range(1, solved.iterations + 1))
    assert solved.stop != "callback"


@pytest.mark.parametrize("solver", SOLVERS, ids=IDS)
def test_solvers_run_with_numpys_blas_on_one_thread(solver):
    op, y = _circulant_problem()
    threads = []
    solver.run(op, y, callback=lambda k, x: threads.append(
        {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}))  # fmt: skip
    assert threads
    assert all(t <= {1} for t in threads)


# ---------------------------------------------------------------------- data in and out
@pytest.mark.parametrize("solver", SOLVERS, ids=IDS)
def test_callers_arrays_are_never_written_to(solver):
    op, y = _circulant_problem()
    data = np.repeat(y, 2)[::2]  # non-contiguous
    start = np.full(op.shape[1], 0.5)
    for a in (data, start):
        a.flags.writeable = False  # any write raises
    kept = data.copy(), start.copy()
    solver.run(op, data, x0=start)  # the exact solve takes no start and ignores it
    np.testing.assert_array_equal(data, kept[0])
    np.testing.assert_array_equal(start, kept[1])


@pytest.mark.parametrize("solver", SOLVERS, ids=IDS)
def test_shapes_and_tensors_come_back_as_they_came(solver):
    op, y = _circulant_problem()
    flat = solver.run(op, y)
    shaped = solver.run(op, y.reshape(op.output_shape))
    tensor = solver.run(op, torch.from_numpy(y.reshape(op.output_shape)))
    assert isinstance(flat, SolverResult)
    assert flat.x.shape == (op.shape[1],)
    assert shaped.x.shape == tuple(op.input_shape)
    assert isinstance(tensor.x, torch.Tensor)
    assert (tensor.x.dtype, tuple(tensor.x.shape)) == (torch.float64, tuple(op.input_shape))
    np.testing.assert_array_equal(shaped.x.ravel(), flat.x)
    np.testing.assert_array_equal(tensor.x.numpy(), shaped.x)


def test_single_precision_solves_in_single_precision():
    op = convop.conv1d(np.array([[[0.2, 0.6, 0.2]]], dtype=np.float32), (1, 12), padding=1)
    y = np.linspace(0, 1, 12, dtype=np.float32)
    solved = convop.pcg(op, y, 0.1, rtol=1e-4)
    assert solved.x.dtype == np.float32
    assert solved.converged


# ---------------------------------------------------------------------- errors
class Bad(NamedTuple):
    call: Callable[[convop.ConvOperator, np.ndarray], object]
    error: type
    match: str


BAD = {
    "op not an operator": Bad(lambda op, y: convop.pcg(np.eye(3), y), TypeError,
                              r"op must be a scipy.sparse.linalg.LinearOperator"),
    "tv op": Bad(lambda op, y: convop.total_variation(op.todense(), y, 1.0), TypeError,
                 r"op must be a convop.ConvOperator, got ndarray"),
    "y type": Bad(lambda op, y: convop.tikhonov(op, list(y), 0.1), TypeError,
                  r"y must be a numpy.ndarray or torch.Tensor, got list"),
    "y shape": Bad(lambda op, y: convop.pcg(op, y[:-1]), ValueError,
                   r"y must have shape \(1, 8, 8\) or \(64,\), got \(63,\)"),
    "x0 shape": Bad(lambda op, y: convop.pcg(op, y, x0=np.ones(3)), ValueError,
                    r"x0 must have shape \(1, 8, 8\) or \(64,\), got \(3,\)"),
    "negative damp": Bad(lambda op, y: convop.tikhonov(op, y, -1.0), ValueError,
                         r"damp must be a finite float >= 0, got damp=-1.0"),
    "damp overflows": Bad(lambda op, y: convop.normal_operator(op, 1e200), ValueError,
                          r"damp must be a float whose square is finite, got damp=1e\+200"),
    "rtol": Bad(lambda op, y: convop.pcg(op, y, rtol=1.5), ValueError,
                r"rtol must be a finite float >= 0 and < 1, got rtol=1.5"),
    "maxiter": Bad(lambda op, y: convop.total_variation(op, y, 1.0, maxiter=0), ValueError,
                   r"maxiter must be >= 1, got maxiter=0"),
    "inner": Bad(lambda op, y: convop.total_variation(op, y, 1.0, inner=2.5), TypeError,
                 r"inner must be an int, got 2.5"),
    "weight": Bad(lambda op, y: convop.total_variation(op, y, 0.0), ValueError,
                  r"weight must be a finite float > 0, got weight=0.0"),
    "rho": Bad(lambda op, y: convop.tikhonov(op, y, 0.1, nonneg=True, rho=-1.0), ValueError,
               r"rho must be a finite float > 0, got rho=-1.0"),
    "callback": Bad(lambda op, y: convop.pcg(op, y, callback=3), TypeError,
                    r"callback must be callable or None, got int"),
    "M": Bad(lambda op, y: convop.pcg(op, y, M="fast"), TypeError,
             r"M must be 'auto', None or a scipy.sparse.linalg.LinearOperator, got str"),
    "tikhonov method": Bad(lambda op, y: convop.tikhonov(op, y, 0.1, method="lsqr"), ValueError,
                           r"method must be one of 'auto', 'exact', 'pcg', 'admm', got "
                           r"method='lsqr'"),
    "nonneg by pcg": Bad(lambda op, y: convop.tikhonov(op, y, 0.1, nonneg=True, method="pcg"),
                         ValueError, r"method='pcg' does not fit nonneg=True"),
    "exact not circulant": Bad(lambda op, y: convop.tikhonov(convop.conv2d(
        np.ones((1, 1, 3, 3)), (1, 8, 8), padding=1), y, 0.1, method="exact"), ValueError,
        r"solve_tikhonov\(\) needs a circulant convolution"),
    "tv method": Bad(lambda op, y: convop.total_variation(op, y, 1.0, method="fista"),
                     ValueError, r"method must be one of 'admm', 'pylops', got method='fista'"),
    "pylops isotropic": Bad(lambda op, y: convop.total_variation(op, y, 1.0, isotropic=True,
                                                                 method="pylops"),
                            ValueError, r"method='pylops' is PyLops' split Bregman for the "
                                        r"anisotropic total variation without constraint"),
    "nonneg flag": Bad(lambda op, y: convop.total_variation(op, y, 1.0, nonneg=1), TypeError,
                       r"nonneg must be a bool, got int"),
    "complex tv": Bad(lambda op, y: convop.total_variation(op, y * 1j, 1.0), TypeError,
                      r"total_variation\(\) solves real problems: got y of dtype complex128"),
    "complex nonneg": Bad(lambda op, y: convop.tikhonov(op, y * 1j, 0.1, nonneg=True),
                          TypeError, r"tikhonov\(nonneg=True\) solves real problems"),
    "complex x0 for a real solve": Bad(lambda op, y: convop.pcg(op, y, x0=y * 1j), TypeError,
                                       r"x0 of dtype complex128 does not fit a solve in "
                                       r"float64"),
    "half tensor": Bad(lambda op, y: convop.pcg(op, torch.zeros(64, dtype=torch.float16)),
                       TypeError, r"y must be a float32, float64, complex64 or complex128 "
                                  r"tensor, got torch.float16"),
}  # fmt: skip


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD)
def test_bad_parameters_are_refused_naming_them(bad):
    op, y = _circulant_problem()
    with pytest.raises(bad.error, match=bad.match):
        bad.call(op, y)
