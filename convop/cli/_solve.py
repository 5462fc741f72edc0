"""scipy's ``lsqr``, ``lsmr`` and ``cg`` on an operator, with a progress bar (demo, deblur)."""

from __future__ import annotations

import time

import numpy as np

from ..operator import ConvOperator
from ..threads import solver_threads


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


def solve_tv(
    op: ConvOperator,
    b: np.ndarray,
    *,
    weight: float,
    iterations: int,
    quiet: bool,
    inner: int = 5,
    label: str | None = None,
) -> tuple[np.ndarray, int, float, float]:
    """Anisotropic total variation by PyLops' split Bregman; ``(x, itn, residual, seconds)``.

    ``min 1/2 |A x - b|^2 + weight (|D_y x|_1 + |D_x x|_1)``, forward differences along the
    two image axes, ``iterations`` outer steps of ``inner`` lsqr iterations each, started
    from ``b``: convop's operator inside PyLops' solver. ``residual`` is ``|b - A x|``.
    """
    import pylops
    from pylops.optimization.sparsity import splitbregman

    dims = tuple(op.input_shape)
    derivatives = [
        pylops.FirstDerivative(dims, axis=axis, kind="forward", dtype=op.dtype)
        for axis in (-2, -1)
    ]
    with _progress(iterations, label or "tv", quiet) as bar, solver_threads():
        start = time.perf_counter()
        x, itn, _ = splitbregman(
            op.to_pylops(), b, derivatives, x0=np.array(b, dtype=op.dtype), niter_outer=iterations,
            niter_inner=1, mu=1.0, epsRL1s=[weight, weight], tol=1e-4, tau=1.0, iter_lim=inner,
            damp=1e-4, callback=lambda _: bar.update(1),
        )  # fmt: skip
        seconds = time.perf_counter() - start
    residual = float(np.linalg.norm(b - op.matvec(x)))
    return x, int(itn), residual, seconds
