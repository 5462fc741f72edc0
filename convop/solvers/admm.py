"""ADMM for the split problems: nonnegative Tikhonov and total variation.

The alternating direction method of multipliers in its scaled form (Boyd et al., sections
3.1.1 and 5), which for total variation is split Bregman (Goldstein & Osher): the
references are :mod:`convop.solvers`'. The public entries are
:func:`convop.solvers.tikhonov` (``nonneg=True``) and
:func:`convop.solvers.total_variation`, which validate; these engines take checked,
private flat arrays.
"""

from __future__ import annotations

import math

import numpy as np

from ..deconvolution import preconditioner
from ..spectral import opnorm
from ._common import Data, finish, settled
from ._gradient import Gradient, Stacked, soft, vector_soft
from .normal import NormalOperator, preconditions

#: The most cg iterations of one ADMM step of nonnegative Tikhonov (warm-started).
INNER_CG = 10


def penalty(op) -> float:
    """``|A|^2 / 10``, the nonnegative Tikhonov ADMM's penalty for small dampings.

    Of the penalties tried on a 256^2 phantom, the one that converged in the fewest steps;
    ``|A|`` by :func:`convop.opnorm` to 1%.
    """
    return 0.1 * float(opnorm(op, rtol=1e-2).estimate) ** 2


def nonneg_tikhonov(
    op, data: Data, start: np.ndarray | None, *, damp: float, rho: float, rtol: float,
    maxiter: int, callback,
) -> tuple[np.ndarray, int, str]:  # fmt: skip
    """``min ||A x - y||^2 + damp^2 ||x||^2`` over ``x >= 0``: ``(z, steps, stop)``.

    The split ``x = z``, ``z >= 0``; each step solves ``(A^H A + (damp^2 + rho) I) x = A^H
    y + rho (z - u)`` by ``cg`` (warm-started, preconditioned by
    :func:`convop.preconditioner` where it applies, built once) to ``rtol / 10`` or
    :data:`INNER_CG` iterations, then ``z = max(x + u, 0)``, ``u += x - z``. Stops when
    ``||x - z|| <= rtol ||z||`` and ``||z - z_old|| <= rtol ||z||``.
    """
    from scipy.sparse.linalg import cg

    shift = damp**2 + rho
    normal = NormalOperator(op, shift)
    M = preconditioner(op, damp=math.sqrt(shift)) if preconditions(op) else None
    rhs = op.rmatvec(data.values)
    x = np.zeros(op.shape[1], dtype=data.dtype) if start is None else start
    z = np.maximum(x, 0)
    u = np.zeros_like(x)
    itn, stop = 0, None
    while itn < maxiter and stop is None:
        x, _ = cg(normal, rhs + rho * (z - u), x0=x, rtol=rtol / 10, maxiter=INNER_CG, M=M)
        z_old, z = z, np.maximum(x + u, 0)
        u += x - z
        itn += 1
        done = settled(z, z_old, rtol) and settled(z, x, rtol)
        stop = finish(callback, op, data, itn, z, done)
    return z, itn, stop or "maxiter"


def tv_admm(op, data: Data, start: np.ndarray | None, *, weight: float, isotropic: bool,
            nonneg: bool, rho: float, inner: int, rtol: float, maxiter: int,
            callback) -> tuple[np.ndarray, int, str]:  # fmt: skip
    """Total variation by ADMM (split Bregman): ``(x, steps, stop)``; see ``total_variation``.

    ``min 1/2 ||A x - y||^2 + weight TV(x)`` (over ``x >= 0`` with ``nonneg``), split as
    ``d = G x`` (and ``z = x``). Each step: ``inner`` iterations of scipy's ``lsqr``
    (warm-started, tolerances 0) on ``[A; sqrt(rho) G (; sqrt(rho) I)] x = [y; sqrt(rho) (d
    - u) (; sqrt(rho) (z - v))]``, the (vector) soft threshold ``d = shrink(G x + u,
    weight / rho)``, ``u += G x - d`` (and ``z = max(x + v, 0)``, ``v += x - z``). The result
    is ``z`` with ``nonneg``, else ``x``.
    """
    from scipy.sparse.linalg import lsqr

    gradient = Gradient(op.input_shape)
    root = math.sqrt(rho)
    stacked = Stacked(op, gradient, root, nonneg, data.dtype)
    shrink = vector_soft if isotropic else soft
    x = np.zeros(op.shape[1], dtype=data.dtype) if start is None else start
    z = np.maximum(x, 0)
    d = gradient(x)  # (k, C, *spatial)
    u = np.zeros_like(d)
    v = np.zeros_like(x)
    itn, stop = 0, None
    while itn < maxiter and stop is None:
        parts = [data.values, (root * (d - u)).reshape(-1)]
        if nonneg:
            parts.append(root * (z - v))
        x_old = x
        x = lsqr(stacked, np.concatenate(parts), x0=x, iter_lim=inner, atol=0, btol=0)[0]
        g = gradient(x)
        d = shrink(g + u, weight / rho)
        u = u + g - d
        if nonneg:
            z_old, z = z, np.maximum(x + v, 0)
            v += x - z
            done = settled(z, z_old, rtol) and settled(z, x, rtol)
        else:
            done = settled(x, x_old, rtol)
        itn += 1
        stop = finish(callback, op, data, itn, z if nonneg else x, done)
    return (z if nonneg else x), itn, stop or "maxiter"
