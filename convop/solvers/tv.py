"""Total variation: ``min 1/2 ||op x - y||^2 + weight TV(x)``, anisotropic or isotropic."""

from __future__ import annotations

import math

import numpy as np

from .._shared.checks import as_float, as_int, check_choice
from ..operator import ConvOperator
from ..threads import solver_threads
from ._common import (
    SolverResult,
    check_callback,
    check_maxiter,
    check_rtol,
    finish,
    read_data,
    read_start,
    result,
    settled,
)
from .admm import tv_admm

#: lsqr iterations per step (the x-subproblem), by default.
INNER_LSQR = 5
#: The damping of the lsqr steps of ``method='pylops'`` (PyLops' ``damp``, as the CLI ran it).
PYLOPS_DAMP = 1e-4
METHODS = ("admm", "pylops")


def total_variation(op: ConvOperator, y, weight: float, *, isotropic: bool = False,
                    nonneg: bool = False, method: str = "admm", x0=None, rtol: float = 1e-4,
                    maxiter: int = 100, inner: int = INNER_LSQR, rho: float | None = None,
                    callback=None) -> SolverResult:  # fmt: skip
    r"""Total-variation regularised least squares, by split Bregman (ADMM).

    Minimises ``1/2 ||op x - y||^2 + weight TV(x)``, over ``x >= 0`` with ``nonneg``, where
    ``TV`` sums the forward differences ``D_a x`` of each channel along every spatial axis
    of ``op``'s input (1-D, 2-D, 3-D, ...): ``TV(x) = sum_a ||D_a x||_1`` (anisotropic), or
    ``sum_p sqrt(sum_a (D_a x)(p)^2)`` over the pixels ``p`` (isotropic: rotation
    invariant, the gradient's length). Keeps edges sharp where Tikhonov blurs them. Runs
    inside :func:`convop.solver_threads`.

    Parameters
    ----------
    op : ConvOperator
        The blur (any real convop operator).
    y : numpy.ndarray or torch.Tensor
        The data, ``op.output_shape`` or flat; real. Never written to.
    weight : float
        The weight of the total variation, ``> 0``.
    isotropic : bool, default False
        The isotropic total variation (the vector soft threshold per pixel) instead of the
        anisotropic one.
    nonneg : bool, default False
        Minimise over ``x >= 0`` (one more split, ``z = x``; the result is ``z``).
    method : {'admm', 'pylops'}, default 'admm'
        ``'admm'``: convop's split Bregman, every variant. ``'pylops'``: PyLops'
        ``SplitBregman`` with convop's operator inside (anisotropic, without ``nonneg``),
        as the ``convop`` command runs it: ``epsRL1s = sqrt(weight)`` and ``mu = 1`` (its
        fixed point then minimises this objective, which the tests check), lsqr steps
        damped by :data:`~convop.solvers.tv.PYLOPS_DAMP`.
    x0 : numpy.ndarray or torch.Tensor, optional
        The starting point (default zero), ``op.input_shape`` or flat; the data itself is a
        good start for a blur.
    rtol : float, default 1e-4
        The stopping rule's relative tolerance, in ``[0, 1)``; 0 runs ``maxiter`` steps.
    maxiter : int, default 100
        The most steps (each ``inner`` lsqr iterations).
    inner : int, default 5
        The lsqr iterations per step, warm-started (:data:`~convop.solvers.tv.INNER_LSQR`).
    rho : float, optional
        The ADMM penalty (``method='admm'``), ``> 0``; default ``sqrt(weight)``, the penalty
        of PyLops' steps, which suits data and kernels of order 1.
    callback : callable, optional
        ``callback(step, x)`` after each step, ``x`` the current result (read-only);
        returning True stops (see :mod:`convop.solvers`).

    Returns
    -------
    SolverResult
        ``x`` (like ``y``), ``iterations`` (steps), ``converged``, ``stop``, ``residual``
        and ``method``.

    Raises
    ------
    TypeError
        For an ``op`` that is no ``ConvOperator``, complex data or operators (total
        variation is defined here for real images), or parameters of the wrong type.
    ValueError
        For data of the wrong shape, ``weight <= 0``, ``rtol`` outside ``[0, 1)``,
        ``maxiter`` or ``inner`` below 1, an unknown ``method``, or ``method='pylops'``
        with ``isotropic`` or ``nonneg``.

    See Also
    --------
    tikhonov : The quadratic penalty ``damp^2 ||x||^2`` instead.
    pcg : The Tikhonov solve by preconditioned CG, with its options.

    Notes
    -----
    The total variation regularisation of [1]_, with :math:`\lambda` = ``weight`` and
    :math:`D_a` the forward difference along spatial axis :math:`a`:

    .. math::

        \min_x \tfrac12 \|A x - y\|_2^2 + \lambda \operatorname{TV}(x), \qquad
        \operatorname{TV}(x) = \sum_a \|D_a x\|_1 \;\text{(anisotropic)} \;\text{ or }\;
        \sum_p \Big(\sum_a (D_a x)_p^2\Big)^{1/2} \;\text{(isotropic)}.

    It is solved by split Bregman [2]_, which is the scaled ADMM [3]_ on the split
    :math:`d_a = D_a x` (and :math:`z = x` with ``nonneg``). Each step: ``inner`` lsqr
    iterations on

    .. math::

        \min_x \|A x - y\|^2 + \rho \sum_a \|D_a x - d_a + u_a\|^2
        \;\big(+\, \rho \|x - z + v\|^2\big),

    then :math:`d = \operatorname{shrink}(D x + u, \lambda / \rho)` (the soft threshold, or
    the vector soft threshold of each pixel's gradient), :math:`u \leftarrow u + D x - d`,
    and :math:`z = \max(x + v, 0)`, :math:`v \leftarrow v + x - z`.

    Stopping rule: the result ``r_k`` (``z`` with ``nonneg``, else ``x``) settles,
    ``||r_k - r_{k-1}|| <= rtol ||r_k||``, and with ``nonneg`` the split agrees,
    ``||x_k - z_k|| <= rtol ||z_k||``; or ``maxiter`` steps.

    References
    ----------
    .. [1] L. I. Rudin, S. Osher and E. Fatemi, "Nonlinear Total Variation Based Noise
       Removal Algorithms," Physica D 60 (1992), 259-268.
    .. [2] T. Goldstein and S. Osher, "The Split Bregman Method for L1-Regularized
       Problems," SIAM J. Imaging Sci. 2 (2009), 323-343.
    .. [3] S. Boyd, N. Parikh, E. Chu, B. Peleato and J. Eckstein, "Distributed
       Optimization and Statistical Learning via the Alternating Direction Method of
       Multipliers," Foundations and Trends in Machine Learning 3 (2011), 1-122.

    Examples
    --------
    A blurred step edge in 1-D, restored with its edge:

    >>> import numpy as np, convop
    >>> truth = np.repeat([0.0, 1.0], 32)
    >>> op = convop.conv1d(np.full((1, 1, 9), 1 / 9), (1, 64), padding="same",
    ...                    padding_mode="replicate")
    >>> y = op @ truth
    >>> res = convop.total_variation(op, y, 1e-3, maxiter=500, x0=y)
    >>> bool(np.abs(res.x - truth).max() < 0.05 < np.abs(y - truth).max())
    True
    """
    if not isinstance(op, ConvOperator):
        raise TypeError(f"op must be a convop.ConvOperator, got {type(op).__name__}")
    weight = as_float(weight, "weight", positive=True)
    check_choice(method, "method", METHODS)
    for flag, name in ((isotropic, "isotropic"), (nonneg, "nonneg")):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if method == "pylops" and (isotropic or nonneg):
        raise ValueError(
            "method='pylops' is PyLops' split Bregman for the anisotropic total variation "
            f"without constraint, got isotropic={isotropic}, nonneg={nonneg}: use "
            f"method='admm'"
        )
    data = read_data(op, y, real="total_variation()")
    start = read_start(op, x0, data)
    rtol = check_rtol(rtol)
    maxiter = check_maxiter(maxiter)
    inner = as_int(inner, "inner", minimum=1)
    rho = math.sqrt(weight) if rho is None else as_float(rho, "rho", positive=True)
    callback = check_callback(callback)
    with solver_threads():
        if method == "pylops":
            x, itn, stop = _pylops(op, data, start, weight=weight, rtol=rtol, maxiter=maxiter,
                                   inner=inner, callback=callback)  # fmt: skip
        else:
            x, itn, stop = tv_admm(op, data, start, weight=weight, isotropic=isotropic,
                                   nonneg=nonneg, rho=rho, inner=inner, rtol=rtol,
                                   maxiter=maxiter, callback=callback)  # fmt: skip
        return result(op, x, data, iterations=itn, stop=stop, method=method)


def _pylops(op: ConvOperator, data, start, *, weight: float, rtol: float, maxiter: int,
            inner: int, callback) -> tuple[np.ndarray, int, str]:  # fmt: skip
    """PyLops' ``SplitBregman``, one outer step at a time: ``(x, steps, stop)``.

    With ``mu = 1`` PyLops' split Bregman for ``epsRL1s = eps`` takes lsqr steps of penalty
    ``eps`` and thresholds at ``eps``, so that its fixed point minimises ``1/2 ||A x -
    y||^2 + eps^2 TV(x)``: ``eps = sqrt(weight)``.
    """
    import pylops
    from pylops.optimization.cls_sparsity import SplitBregman

    dims = tuple(op.input_shape)
    derivatives = [
        pylops.FirstDerivative(dims, axis=axis, kind="forward", dtype=data.dtype)
        for axis in range(1, len(dims))
    ]
    eps = math.sqrt(weight)
    solver = SplitBregman(op.to_pylops())
    x = solver.setup(data.values, derivatives, x0=start, niter_outer=maxiter, niter_inner=1,
                     mu=1.0, epsRL1s=[eps] * len(derivatives), tau=1.0)  # fmt: skip
    itn, stop = 0, None
    while itn < maxiter and stop is None:
        x_old = x
        x = solver.step(x, iter_lim=inner, damp=PYLOPS_DAMP)
        itn += 1
        stop = finish(callback, op, data, itn, x, settled(x, x_old, rtol))
    return x, itn, stop or "maxiter"
