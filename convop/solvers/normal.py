"""The normal equations ``(op^H op + damp^2 I) x = op^H y`` and preconditioned CG on them."""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import LinearOperator

from ..deconvolution import preconditioner
from ..operator import ConvOperator
from ..threads import solver_threads
from . import _common
from ._common import SolverResult


class NormalOperator(LinearOperator):
    """``op^H op + shift I``: Hermitian, positive semi-definite (definite for ``shift > 0``).

    Made by :func:`normal_operator` (``shift = damp^2``); see there.

    Parameters
    ----------
    op : scipy.sparse.linalg.LinearOperator
        The operator ``A``.
    shift : float
        The diagonal shift, ``damp^2``.

    Attributes
    ----------
    op : scipy.sparse.linalg.LinearOperator
        The operator ``A``.
    shift : float
        ``damp^2``.
    """

    def __init__(self, op: LinearOperator, shift: float) -> None:
        self.op, self.shift = op, shift
        n = op.shape[1]
        super().__init__(dtype=np.dtype(op.dtype), shape=(n, n))

    def __repr__(self) -> str:
        name = getattr(self.op, "name", type(self.op).__name__)
        return f"NormalOperator({name}, shape={self.shape}, shift={self.shift!r})"

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self.op.rmatvec(self.op.matvec(x)) + self.shift * x

    def _matmat(self, X: np.ndarray) -> np.ndarray:  # one batched product each way
        return self.op.rmatmat(self.op.matmat(X)) + self.shift * X

    _rmatvec = _matvec  # Hermitian
    _rmatmat = _matmat

    def _adjoint(self) -> NormalOperator:
        return self


def normal_operator(op: LinearOperator, damp: float = 0.0) -> NormalOperator:
    """The normal operator ``op^H op + damp^2 I`` of ``min ||op x - y||^2 + damp^2 ||x||^2``.

    The matrix of the normal equations ``(op^H op + damp^2 I) x = op^H y``, applied as one
    product and one adjoint product (a batch of columns as one batched product each way),
    never formed. Hermitian, so its adjoint is itself; positive definite for ``damp > 0``.

    Parameters
    ----------
    op : scipy.sparse.linalg.LinearOperator
        Any convop operator (a :class:`convop.ConvOperator`, its ``.H``, a
        :class:`convop.WeightOperator`) or other scipy ``LinearOperator`` with an adjoint.
    damp : float, default 0.0
        The Tikhonov damping, ``>= 0``, with a finite square.

    Returns
    -------
    NormalOperator
        A ``scipy.sparse.linalg.LinearOperator`` of shape ``(op.shape[1], op.shape[1])``
        and ``op``'s dtype.

    Raises
    ------
    TypeError
        If ``op`` is not a scipy ``LinearOperator``, or ``damp`` not a float.
    ValueError
        If ``damp`` is negative, not finite, or its square overflows.

    See Also
    --------
    pcg : Preconditioned conjugate gradients on these normal equations.

    Notes
    -----
    ``N v = op^H (op v) + damp^2 v``; ``N^H = N``.

    Examples
    --------
    >>> import numpy as np, convop
    >>> op = convop.conv1d(np.array([[[1.0, 2.0, 1.0]]]), (1, 6), padding=1)
    >>> N = convop.normal_operator(op, damp=0.5)
    >>> A = op.todense()
    >>> bool(np.allclose(N @ np.eye(6), A.T @ A + 0.25 * np.eye(6)))
    True
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(
            f"op must be a scipy.sparse.linalg.LinearOperator (any convop operator), got "
            f"{type(op).__name__}"
        )
    damp = _common.check_damp(damp)
    return NormalOperator(op, damp * damp)


def preconditions(op: LinearOperator) -> bool:
    """Whether :func:`convop.preconditioner` applies to ``op``: a convolution of stride 1."""
    if not isinstance(op, ConvOperator):
        return False
    geom = op.geometry
    conv = geom.as_convolution() if geom.transposed else geom
    return all(s == 1 for s in conv.stride)


class _Stop(Exception):
    """Raised from scipy's callback to end ``cg`` early, with the iterate to return."""

    def __init__(self, x: np.ndarray) -> None:
        super().__init__()
        self.x = x


def pcg(op: LinearOperator, y, damp: float = 0.0, *, M="auto", x0=None, rtol: float = 1e-6,
        maxiter: int | None = None, callback=None) -> SolverResult:  # fmt: skip
    """Tikhonov by preconditioned conjugate gradients on the normal equations.

    Minimises ``||op x - y||^2 + damp^2 ||x||^2`` by scipy's ``cg`` on ``(op^H op + damp^2
    I) x = op^H y`` (:func:`normal_operator`), preconditioned by default with
    :func:`convop.preconditioner` (built inside the call: its setup counts), which cuts the
    iterations for blurs by one to two orders of magnitude (one iteration for a circulant
    convolution). Runs inside :func:`convop.solver_threads`.

    Parameters
    ----------
    op : scipy.sparse.linalg.LinearOperator
        A :class:`convop.ConvOperator` (or any scipy ``LinearOperator`` with an adjoint).
    y : numpy.ndarray or torch.Tensor
        The data: ``op.output_shape`` or flat (``op.shape[0]``); never written to.
    damp : float, default 0.0
        The Tikhonov damping, ``>= 0``.
    M : 'auto', scipy.sparse.linalg.LinearOperator or None, default 'auto'
        The preconditioner, an approximate inverse of the normal operator. ``'auto'``:
        ``convop.preconditioner(op, damp=damp)`` for a convolution of stride 1 (where it
        applies), none otherwise; ``None``: plain CG.
    x0 : numpy.ndarray or torch.Tensor, optional
        The starting point (default zero), ``op.input_shape`` or flat.
    rtol : float, default 1e-6
        The stopping rule's relative tolerance, in ``[0, 1)``; 0 runs ``maxiter`` iterations.
    maxiter : int, optional
        The most iterations (default scipy's, ``10 op.shape[1]``).
    callback : callable, optional
        ``callback(iteration, x)`` after each iteration, ``x`` the iterate (read-only);
        returning True stops (see :mod:`convop.solvers`).

    Returns
    -------
    SolverResult
        ``x`` (like ``y``: flat or ``op.input_shape``, numpy or a tensor), ``iterations``,
        ``converged``, ``stop``, ``residual = ||y - op x||`` and ``method`` (``'pcg'``, or
        ``'cg'`` without a preconditioner).

    Raises
    ------
    TypeError
        For an ``op`` that is no ``LinearOperator``, ``y`` or ``x0`` that is no array or
        tensor, parameters of the wrong type, or a ``callback`` that is not callable.
    ValueError
        For data of the wrong shape, a negative ``damp``, ``rtol`` outside ``[0, 1)`` or
        ``maxiter < 1``; from :func:`convop.preconditioner` for a strided operator with an
        explicit ``M``.

    See Also
    --------
    tikhonov : The same problem, exact for circulant operators, or over ``x >= 0``.
    normal_operator : The operator ``N`` of the normal equations.
    preconditioner : The default ``M``.

    Notes
    -----
    Conjugate gradients [1]_ on ``N x = c``, ``N = op^H op + damp^2 I``, ``c = op^H y``,
    preconditioned by ``M``, as for deblurring in [2]_.
    Stopping rule (scipy's ``cg``): the recursively updated residual ``r_k = c - N x_k``
    satisfies ``||r_k|| < rtol ||c||``. Then ``||x_k - x*|| <= rtol ||c|| / lambda_min(N)``
    (``lambda_min(N) >= damp^2``), up to the drift of the updated residual from the true
    one (round-off).

    References
    ----------
    .. [1] M. R. Hestenes and E. Stiefel, "Methods of conjugate gradients for solving linear
       systems," J. Res. Nat. Bur. Standards 49 (1952), 409-436.
    .. [2] P. C. Hansen, J. G. Nagy and D. P. O'Leary, *Deblurring Images: Matrices,
       Spectra, and Filtering*, SIAM, 2006.

    Examples
    --------
    >>> import numpy as np, convop
    >>> from convop.data import gaussian_kernel
    >>> op = convop.conv2d(gaussian_kernel(5, 1.0)[None, None], (1, 32, 32), padding="same",
    ...                    padding_mode="reflect")
    >>> y = op @ np.random.default_rng(0).random(op.shape[1])
    >>> res = convop.pcg(op, y, damp=1e-2)
    >>> plain = convop.pcg(op, y, damp=1e-2, M=None)
    >>> res.converged, res.method, res.iterations < plain.iterations / 5
    (True, 'pcg', True)
    """
    normal = normal_operator(op, damp)  # validates op and damp
    damp = _common.check_damp(damp)
    data = _common.read_data(op, y)
    start = _common.read_start(op, x0, data)
    rtol = _common.check_rtol(rtol)
    maxiter = None if maxiter is None else _common.check_maxiter(maxiter)
    callback = _common.check_callback(callback)
    if isinstance(M, str) and M == "auto":
        method = "pcg" if preconditions(op) else "cg"
    elif M is None or isinstance(M, LinearOperator):
        method = "cg" if M is None else "pcg"
    else:
        raise TypeError(
            f"M must be 'auto', None or a scipy.sparse.linalg.LinearOperator, got "
            f"{type(M).__name__}"
        )
    from scipy.sparse.linalg import cg

    count = 0

    def tick(xk: np.ndarray) -> None:
        nonlocal count
        count += 1
        if callback is not None and _common.stops(callback(count, _common.view(op, xk, data))):
            raise _Stop(xk.copy())

    with solver_threads():
        if isinstance(M, str):
            M = preconditioner(op, damp=damp) if method == "pcg" else None
        try:
            x, info = cg(normal, op.rmatvec(data.values), x0=start, rtol=rtol, atol=0.0,
                         maxiter=maxiter, M=M, callback=tick)  # fmt: skip
            stop = "converged" if info == 0 else "maxiter"
        except _Stop as stopped:
            x, stop = stopped.x, "callback"
        return _common.result(op, x, data, iterations=count, stop=stop, method=method)
