"""scipy's ``lsqr``, ``lsmr`` and ``cg`` on an operator, with a progress bar (demo, deblur)."""

from __future__ import annotations

import math
import time

import numpy as np

from ..operator import ConvOperator
from ..threads import solver_threads

#: Most cg iterations per ADMM step of :func:`solve_nonneg_normal` (warm-started).
ADMM_CG = 10
#: lsqr iterations per split-Bregman step of :func:`solve_tv` and :func:`solve_admm_tv`.
TV_INNER = 5


def _progress(iterations: int, desc: str, quiet: bool):
    """A tqdm bar over solver iterations; off with ``--quiet`` or when stderr is no TTY."""
    from tqdm import tqdm

    return tqdm(
        total=iterations, desc=desc, unit="it", leave=False, disable=True if quiet else None
    )


def _counted(op: ConvOperator, bar):
    """``op`` behind a thin ``LinearOperator`` that ticks ``bar`` once per forward product.

    scipy's ``lsqr``/``lsmr`` take no callback, but each iteration applies ``op`` exactly once.
    """
    from scipy.sparse.linalg import LinearOperator

    class Counted(LinearOperator):
        def __init__(self) -> None:
            super().__init__(dtype=op.dtype, shape=op.shape)

        def _matvec(self, x):
            bar.update(1)
            return op.matvec(x)

        def _rmatvec(self, y):
            return op.rmatvec(y)

    return Counted()


def solve(
    name: str,
    op: ConvOperator,
    b: np.ndarray,
    *,
    damp: float,
    iterations: int,
    quiet: bool,
    exact_count: bool,
    label: str | None = None,
) -> tuple[np.ndarray, int, int, float, float]:
    """Run scipy's ``lsqr`` or ``lsmr``; ``(x, istop, itn, residual norm, seconds)``.

    ``exact_count`` runs exactly ``iterations`` (tolerances 0) instead of stopping early;
    ``label`` titles the progress bar (default ``name``).
    """
    from scipy.sparse.linalg import lsmr, lsqr

    tol = dict(atol=0.0, btol=0.0) if exact_count else {}
    # numpy's BLAS on one thread: no fight with torch's workers (convop.threads).
    with _progress(iterations, label or name, quiet) as bar, solver_threads():
        A = _counted(op, bar)
        start = time.perf_counter()
        if name == "lsqr":
            x, istop, itn, r1norm = lsqr(A, b, damp=damp, iter_lim=iterations, **tol)[:4]
        else:
            x, istop, itn, r1norm = lsmr(A, b, damp=damp, maxiter=iterations, **tol)[:4]
        seconds = time.perf_counter() - start
    return x, istop, itn, float(r1norm), seconds


def solve_normal(
    op: ConvOperator,
    b: np.ndarray,
    *,
    damp: float,
    iterations: int,
    quiet: bool,
    preconditioned: bool = True,
    rtol: float = 1e-6,
    label: str | None = None,
) -> tuple[np.ndarray, bool, int, float, float]:
    """``cg`` on ``(A^H A + damp^2 I) x = A^H b``; ``(x, converged, itn, residual, seconds)``.

    ``preconditioned``: with :func:`convop.preconditioner` (built inside the timing: its
    setup counts). ``residual`` is ``|b - A x|``.
    """
    from scipy.sparse.linalg import LinearOperator, cg

    from ..deconvolution import preconditioner

    with _progress(iterations, label or "cg", quiet) as bar, solver_threads():
        start = time.perf_counter()
        n = op.shape[1]
        normal = LinearOperator(
            (n, n), dtype=op.dtype, matvec=lambda v: op.rmatvec(op.matvec(v)) + damp**2 * v
        )
        M = preconditioner(op, damp=damp) if preconditioned else None
        count = [0]

        def tick(_):
            count[0] += 1
            bar.update(1)

        x, info = cg(normal, op.rmatvec(b), rtol=rtol, maxiter=iterations, M=M, callback=tick)
        seconds = time.perf_counter() - start
    residual = float(np.linalg.norm(b - op.matvec(x)))
    return x, info == 0, count[0], residual, seconds


def _derivatives(op: ConvOperator) -> list:
    """PyLops' forward differences along the two image axes of ``op``'s input."""
    import pylops

    dims = tuple(op.input_shape)
    return [
        pylops.FirstDerivative(dims, axis=axis, kind="forward", dtype=op.dtype)
        for axis in (-2, -1)
    ]


def solve_tv(
    op: ConvOperator,
    b: np.ndarray,
    *,
    weight: float,
    iterations: int,
    quiet: bool,
    inner: int = TV_INNER,
    label: str | None = None,
) -> tuple[np.ndarray, int, float, float]:
    """Anisotropic total variation by PyLops' split Bregman; ``(x, itn, residual, seconds)``.

    ``min 1/2 |A x - b|^2 + weight (|D_y x|_1 + |D_x x|_1)``, forward differences along the
    two image axes, ``iterations`` outer steps of ``inner`` lsqr iterations each, started
    from ``b``: convop's operator inside PyLops' solver. With ``mu = 1`` PyLops' split
    Bregman for ``epsRL1s = eps`` takes steps of penalty ``eps`` and thresholds at ``eps``,
    so that its fixed point minimises this objective for ``weight = eps^2`` (the test
    suite checks it against :func:`solve_admm_tv`): ``eps = sqrt(weight)``.
    ``residual`` is ``|b - A x|``.
    """
    from pylops.optimization.sparsity import splitbregman

    eps = math.sqrt(weight)
    with _progress(iterations, label or "tv", quiet) as bar, solver_threads():
        start = time.perf_counter()
        x, itn, _ = splitbregman(
            op.to_pylops(), b, _derivatives(op), x0=np.array(b, dtype=op.dtype),
            niter_outer=iterations, niter_inner=1, mu=1.0, epsRL1s=[eps, eps], tol=1e-4,
            tau=1.0, iter_lim=inner, damp=1e-4, callback=lambda _: bar.update(1),
        )  # fmt: skip
        seconds = time.perf_counter() - start
    residual = float(np.linalg.norm(b - op.matvec(x)))
    return x, int(itn), residual, seconds


def _stopped(x: np.ndarray, z: np.ndarray, z_old: np.ndarray, rtol: float) -> bool:
    """ADMM's stop: ``x`` and its nonnegative copy ``z`` agree, and ``z`` has settled."""
    scale = max(float(np.linalg.norm(z)), np.finfo(float).tiny)
    return max(np.linalg.norm(x - z), np.linalg.norm(z - z_old)) <= rtol * scale


def solve_nonneg_normal(
    op: ConvOperator,
    b: np.ndarray,
    *,
    damp: float,
    iterations: int,
    quiet: bool,
    rtol: float = 1e-4,
    label: str | None = None,
) -> tuple[np.ndarray, bool, int, float, float]:
    """``min |A x - b|^2 + damp^2 |x|^2`` over ``x >= 0``; ``(x, converged, itn, residual, s)``.

    ADMM on the split ``x = z``, ``z >= 0`` (Boyd et al., *Distributed Optimization and
    Statistical Learning via ADMM*, 2011, section 5): each step solves
    ``(A^H A + (damp^2 + rho) I) x = A^H b + rho (z - u)`` by ``cg`` with
    :func:`convop.preconditioner` (built once; warm-started, to ``rtol / 10`` or
    ``ADMM_CG`` iterations), then
    ``z = max(x + u, 0)``, ``u += x - z``, until ``x`` and ``z`` agree and ``z`` settles
    to ``rtol``. The penalty ``rho`` is ``max(damp^2, |A|^2 / 10)`` (of those tried on a
    256^2 phantom, the one that converged in the fewest steps). The result is ``z``:
    nonnegative. ``residual`` is ``|b - A z|``.
    """
    from scipy.sparse.linalg import LinearOperator, cg

    from ..deconvolution import preconditioner

    with _progress(iterations, label or "admm", quiet) as bar, solver_threads():
        start = time.perf_counter()
        n = op.shape[1]
        rho = max(damp**2, 0.1 * _norm_squared(op))
        shift = damp**2 + rho
        normal = LinearOperator(
            (n, n), dtype=op.dtype, matvec=lambda v: op.rmatvec(op.matvec(v)) + shift * v
        )
        M = preconditioner(op, damp=math.sqrt(shift))
        rhs = op.rmatvec(b)
        x = np.array(b, dtype=op.dtype)
        z = np.maximum(x, 0)
        u = np.zeros_like(x)
        converged, itn = False, 0
        while itn < iterations and not converged:
            x, _ = cg(normal, rhs + rho * (z - u), x0=x, rtol=rtol / 10, maxiter=ADMM_CG, M=M)
            z_old, z = z, np.maximum(x + u, 0)
            u += x - z
            itn += 1
            bar.update(1)
            converged = _stopped(x, z, z_old, rtol)
        seconds = time.perf_counter() - start
    residual = float(np.linalg.norm(b - op.matvec(z)))
    return z, converged, itn, residual, seconds


def solve_admm_tv(
    op: ConvOperator,
    b: np.ndarray,
    *,
    weight: float,
    iterations: int,
    quiet: bool,
    nonneg: bool = True,
    inner: int = TV_INNER,
    rtol: float = 1e-4,
    label: str | None = None,
) -> tuple[np.ndarray, int, float, float]:
    """Total variation, over ``x >= 0`` with ``nonneg``: ``(x, itn, residual, seconds)``.

    ``min 1/2 |A x - b|^2 + weight (|D_y x|_1 + |D_x x|_1)``: split Bregman (ADMM) on
    ``d_i = D_i x`` and, with ``nonneg``, one more split ``z = x``, ``z >= 0`` for the
    constraint (Goldstein & Osher, SIAM J. Imaging Sci. 2009; Boyd et al. 2011), with the
    penalty ``rho = sqrt(weight)`` of :func:`solve_tv`'s steps. Each step: ``inner``
    iterations of scipy's ``lsqr`` (warm-started) on the stacked PyLops operator ``[A;
    sqrt(rho) D_y; sqrt(rho) D_x; sqrt(rho) I]``, soft thresholds at ``weight / rho``,
    ``z = max(x + v, 0)``, the dual updates. Started from ``b``; at most ``iterations``
    steps, fewer when ``x`` and ``z`` agree and ``z`` settles to ``rtol`` (with
    ``nonneg``). The result is ``z`` (``x`` without ``nonneg``).
    """
    import pylops
    from scipy.sparse.linalg import lsqr

    n = op.shape[1]
    derivatives = _derivatives(op)
    rho = math.sqrt(weight)
    root = math.sqrt(rho)
    blocks = [op.to_pylops(), *[root * D for D in derivatives]]
    if nonneg:
        blocks.append(root * pylops.Identity(n, dtype=op.dtype))
    stacked = pylops.VStack(blocks)
    with _progress(iterations, label or "tv", quiet) as bar, solver_threads():
        start = time.perf_counter()
        x = np.array(b, dtype=op.dtype)
        z = np.maximum(x, 0)
        d = [D @ x for D in derivatives]
        u = [np.zeros_like(di) for di in d]
        v = np.zeros_like(x)
        itn, converged = 0, False
        while itn < iterations and not converged:
            parts = [b, *[root * (di - ui) for di, ui in zip(d, u)]]
            x = lsqr(stacked, np.concatenate(parts + [root * (z - v)] * nonneg), x0=x,
                     iter_lim=inner, atol=0, btol=0)[0]  # fmt: skip
            grads = [D @ x for D in derivatives]
            d = [_soft(g + ui, weight / rho) for g, ui in zip(grads, u)]
            u = [ui + g - di for ui, g, di in zip(u, grads, d)]
            if nonneg:
                z_old, z = z, np.maximum(x + v, 0)
                v += x - z
                converged = _stopped(x, z, z_old, rtol)
            itn += 1
            bar.update(1)
        seconds = time.perf_counter() - start
    x = z if nonneg else x
    residual = float(np.linalg.norm(b - op.matvec(x)))
    return x, itn, residual, seconds


def _soft(x: np.ndarray, threshold: float) -> np.ndarray:
    """Soft thresholding, the proximal map of ``threshold |x|_1``."""
    return np.sign(x) * np.maximum(np.abs(x) - threshold, 0)


def _norm_squared(op: ConvOperator) -> float:
    """``|A|^2``, the largest eigenvalue of ``A^H A``, by convop's spectral norm."""
    from ..spectral import opnorm

    return float(opnorm(op, rtol=1e-2).estimate) ** 2
