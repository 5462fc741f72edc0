"""Tikhonov regularised least squares on any convolution: :func:`tikhonov`.

Exactly where the operator is circulant (:func:`convop.solve_tikhonov`), by preconditioned
CG elsewhere (:func:`convop.pcg`), and over ``x >= 0`` by ADMM
(:mod:`convop.solvers.admm`).
"""

from __future__ import annotations

from .._shared.checks import as_float, check_choice
from ..operator import ConvOperator
from ..spectral import is_circulant
from ..threads import solver_threads
from . import _common
from ._common import SolverResult
from .admm import nonneg_tikhonov, penalty
from .circulant import solve_tikhonov
from .normal import pcg

METHODS = ("auto", "exact", "pcg", "admm")
#: The default relative tolerances of the stopping rules: pcg's, and the ADMM's.
RTOL = {"pcg": 1e-6, "admm": 1e-4}
#: The default most steps of the ADMM (``nonneg=True``).
ADMM_MAXITER = 500


def tikhonov(op: ConvOperator, y, damp: float, *, nonneg: bool = False, method: str = "auto",
             x0=None, rtol: float | None = None, maxiter: int | None = None,
             rho: float | None = None, callback=None) -> SolverResult:  # fmt: skip
    """Tikhonov regularised least squares: ``min ||op x - y||^2 + damp^2 ||x||^2``.

    Over all ``x``: exactly for a circulant convolution (:func:`solve_tikhonov`: FFTs, no
    iterations), else by conjugate gradients on the normal equations preconditioned with
    :func:`convop.preconditioner` (:func:`pcg`). Over ``x >= 0`` (``nonneg``, intensities):
    by ADMM whose steps are warm-started preconditioned CG solves. Runs inside
    :func:`convop.solver_threads`.

    Parameters
    ----------
    op : ConvOperator
        Any convop operator; the preconditioner is used where it applies (stride 1).
    y : numpy.ndarray or torch.Tensor
        The data, ``op.output_shape`` or flat. Never written to.
    damp : float
        The damping, ``>= 0``, with a finite square.
    nonneg : bool, default False
        Minimise over ``x >= 0`` (real problems only).
    method : {'auto', 'exact', 'pcg', 'admm'}, default 'auto'
        ``'auto'``: ``'admm'`` with ``nonneg``, else ``'exact'`` for a circulant ``op``
        (:func:`convop.is_circulant`) and ``'pcg'`` otherwise. ``'exact'`` and ``'pcg'``
        solve without the constraint, ``'admm'`` with it.
    x0 : numpy.ndarray or torch.Tensor, optional
        The starting point of ``'pcg'`` and ``'admm'`` (default zero); ``op.input_shape``
        or flat.
    rtol : float, optional
        The stopping rule's relative tolerance in ``[0, 1)`` (default ``1e-6`` for
        ``'pcg'``, ``1e-4`` for ``'admm'``); not used by ``'exact'``.
    maxiter : int, optional
        The most iterations: ``'pcg'``'s (default ``10 op.shape[1]``) or the ADMM's steps
        (default ``convop.solvers.least_squares.ADMM_MAXITER``, each at most
        :data:`convop.solvers.admm.INNER_CG` CG iterations).
    rho : float, optional
        The ADMM penalty, ``> 0``; default ``max(damp^2, ||op||^2 / 10)``.
    callback : callable, optional
        ``callback(iteration, x)`` after each iteration (once for ``'exact'``), ``x`` the
        current result, read-only; returning True stops (see :mod:`convop.solvers`).

    Returns
    -------
    SolverResult
        ``x`` (like ``y``: flat or ``op.input_shape``, numpy or a tensor), ``iterations``,
        ``converged``, ``stop``, ``residual = ||y - op x||`` and ``method``.

    Raises
    ------
    TypeError
        For an ``op`` that is no ``ConvOperator``, data that is no array or tensor, complex
        data with ``nonneg``, or parameters of the wrong type.
    ValueError
        For data of the wrong shape, a negative ``damp``, ``rtol`` outside ``[0, 1)``,
        ``maxiter < 1``, an unknown ``method`` or one that does not fit ``nonneg``, and
        ``'exact'`` for an operator that is not circulant.

    See Also
    --------
    solve_tikhonov : The exact solve, batched and on tensors, with a Wiener filter.
    pcg : The preconditioned CG solve and its options.
    total_variation : Edge-preserving regularisation.

    Notes
    -----
    The Tikhonov regularisation of deblurring, its exact and iterative solves: [1]_. The
    constrained problem by the scaled ADMM [2]_.

    Stopping rules. ``'exact'``: none (one step, to round-off). ``'pcg'``: scipy's ``cg``,
    ``||c - N x_k|| < rtol ||c||`` for the normal equations ``N x = c`` (see :func:`pcg`).
    ``'admm'`` (the scaled ADMM on the split ``x = z``, ``z >= 0``; the result is ``z``):
    ``||x_k - z_k|| <= rtol ||z_k||`` and ``||z_k - z_{k-1}|| <= rtol ||z_k||``, each step
    solving ``(op^H op + (damp^2 + rho) I) x = op^H y + rho (z - u)`` by CG to ``rtol /
    10``. At that stop ``z`` is within ``1.1 (1 + L) (L + rho) / mu * rtol ||z||`` of the
    minimiser, ``mu`` and ``L`` the extreme eigenvalues of ``op^H op + damp^2 I``.

    References
    ----------
    .. [1] P. C. Hansen, J. G. Nagy and D. P. O'Leary, *Deblurring Images: Matrices,
       Spectra, and Filtering*, SIAM, 2006.
    .. [2] S. Boyd, N. Parikh, E. Chu, B. Peleato and J. Eckstein, "Distributed optimization
       and statistical learning via the alternating direction method of multipliers,"
       Found. Trends Mach. Learn. 3 (2011), 1-122.

    Examples
    --------
    >>> import numpy as np, convop
    >>> from convop.data import gaussian_kernel, phantom
    >>> op = convop.conv2d(gaussian_kernel(5, 1.0)[None, None], (1, 16, 16), padding="same",
    ...                    padding_mode="reflect")
    >>> y = op @ phantom(16).ravel() + 0.01 * np.random.default_rng(0).standard_normal(256)
    >>> free = convop.tikhonov(op, y, 0.05)
    >>> kept = convop.tikhonov(op, y, 0.05, nonneg=True, rtol=1e-3)
    >>> free.method, kept.method, kept.converged
    ('pcg', 'admm', True)
    >>> bool(free.x.min() < 0 <= kept.x.min())
    True
    """
    if not isinstance(op, ConvOperator):
        raise TypeError(f"op must be a convop.ConvOperator, got {type(op).__name__}")
    damp = _common.check_damp(damp)
    check_choice(method, "method", METHODS)
    if not isinstance(nonneg, bool):
        raise TypeError(f"nonneg must be a bool, got {type(nonneg).__name__}")
    if method == "auto":
        method = "admm" if nonneg else "exact" if is_circulant(op) else "pcg"
    if nonneg != (method == "admm"):
        raise ValueError(
            f"method={method!r} does not fit nonneg={nonneg}: 'admm' solves over x >= 0, "
            f"'exact' and 'pcg' without the constraint"
        )
    rtol = _common.check_rtol(RTOL.get(method, 0.0) if rtol is None else rtol)
    callback = _common.check_callback(callback)
    if method == "pcg":
        return pcg(op, y, damp, x0=x0, rtol=rtol, maxiter=maxiter, callback=callback)
    data = _common.read_data(op, y, real="tikhonov(nonneg=True)" if nonneg else None)
    if method == "exact":
        with solver_threads():
            x = solve_tikhonov(op, data.values, damp=damp)
            if callback is not None:
                callback(1, _common.view(op, x, data))
            return _common.result(op, x, data, iterations=1, stop="converged", method=method)
    start = _common.read_start(op, x0, data)
    maxiter = ADMM_MAXITER if maxiter is None else _common.check_maxiter(maxiter)
    if rho is not None:
        rho = as_float(rho, "rho", positive=True)
    with solver_threads():
        rho = max(damp**2, penalty(op)) if rho is None else rho
        z, steps, stop = nonneg_tikhonov(op, data, start, damp=damp, rho=rho, rtol=rtol,
                                         maxiter=maxiter, callback=callback)  # fmt: skip
        return _common.result(op, z, data, iterations=steps, stop=stop, method=method)
