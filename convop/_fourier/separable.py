"""Separable kernels: bounds on a convolution's norm from the norms of one-dimensional factors.

A kernel ``sum_r s_r u_r (x) v_r`` (one channel per group) gives an operator ``sum_r s_r
A(u_r) (x) A(v_r)``, and Kronecker products multiply norms, so the exact norms of the small
one-dimensional factors bound the whole: :func:`separable_bounds` takes the leading rank-one
term (:func:`rank_one`; a Gaussian blur is one term) and bounds what it leaves by Young's
inequality; :func:`factor_norm` gives each factor's norm, from its explicit matrix, with
its round-off budgeted. One of the upper bounds :func:`convop.opnorm` plays against the
others (:mod:`.bracket`).
"""

from __future__ import annotations

import math

import torch

from .. import functional
from ..geometry import ConvGeometry
from .rounding import BUDGET_SLACK, MARGIN, U, from_square, gamma, pad_norm, summed_terms

#: The longest input dimension whose 1-D factor matrices the separable bound forms.
SEPARABLE_LIMIT = 1024


def factor_norm(u: torch.Tensor, conv: ConvGeometry, dim: int,
                 kept: list) -> tuple[float, float, float]:  # fmt: skip
    """``(lower, estimate, upper)``: the 2-norm of the 1-D convolution by ``u`` along ``dim``.

    The explicit ``n x m`` matrix ``A^T`` is formed by one product of the identity, then its
    smaller Gram matrix and that's top eigenvalue. Each entry of the matrix is a sum of the
    (at most ``k``) taps padding folds onto it, so it errs by ``gamma_k`` times the sum of
    their absolute values: ``|dA| <= gamma_k |W|`` with ``|W|`` the matrix of ``|u|``, and
    ``|| |W| ||_2 <= y = ||u||_1 ||pad||_2`` (Young). The Gram matrix, inner products of
    length ``j``, then errs by ``gamma_j |A|^H |A|`` more, so in all by at most
    ``(2 gamma_k + gamma_k^2 + gamma_j (1 + gamma_k)^2) y^2`` in the 2-norm
    (:func:`from_square` turns that into the bounds). Absolute: relative to ``||u||_1``,
    not to the norm, which is far smaller where the taps cancel.

    ``kept`` holds the bounds already computed in this call: a symmetric kernel's factors
    are the same vector up to a unit factor (which does not change the norm) and round-off;
    a factor within ``1e-13`` (relative, in the 1-norm) of a kept one reuses its bounds,
    widened by that much times ``||u||_1 ||pad||`` (Young), twice for the rounding of the
    comparison. A complex factor is first turned to a canonical phase, exactly up to a few
    unit round-offs per entry, which widens them by ``4 u ||u||_1 ||pad||`` more.
    """
    top = int(u.abs().argmax())
    if not bool(u[top] != 0):  # a pruned channel: the zero operator, and no phase to take
        return 0.0, 0.0, 0.0
    unit = u / (u[top] / u[top].abs())  # the same operator norm, a canonical phase
    pad = pad_norm(conv, (dim,))
    size = float(unit.abs().sum()) * pad * BUDGET_SLACK  # ||u||_1 ||pad||_2 >= || |W| ||_2
    widen = 4 * U * size if u.is_complex() else 0.0  # a real u's phase is +-1: exact
    key = (conv.input_size[dim], conv.stride[dim], conv.padding[dim], conv.dilation[dim])
    for other_key, other, (lower, estimate, upper) in kept:
        same = other_key == key and other.shape == unit.shape
        if same and float((other - unit).abs().sum()) <= 1e-13 * float(unit.abs().sum()):
            widen += 2e-13 * size
            return max(lower - widen, 0.0), estimate, upper + widen
    n = conv.input_size[dim]
    g1 = ConvGeometry(1, 1, (u.numel(),), (n,), (conv.stride[dim],), (conv.padding[dim],),
                      (conv.dilation[dim],), padding_mode=conv.padding_mode)  # fmt: skip
    eye = torch.eye(n, dtype=u.dtype, device=u.device).reshape(n, 1, n)
    at = functional.forward(eye, unit.reshape(1, 1, -1), g1).reshape(n, -1)  # (n, m): A^T
    inner = max(n, at.shape[1])  # the Gram matrix's inner products: of the longer side
    gram = at.mH @ at if at.shape[1] <= n else at @ at.mH
    entries = gamma(summed_terms(u.numel(), u.is_complex()))
    products = gamma(summed_terms(inner, u.is_complex()))
    error = (2 * entries + entries**2 + products * (1 + entries) ** 2) * size**2
    bounds = from_square(float(torch.linalg.eigvalsh(gram)[-1]), error)
    kept.append((key, unit, bounds))
    return max(bounds.lower - widen, 0.0), bounds.estimate, bounds.upper + widen


def rank_one(w: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
    """``(s, [u_1, .., u_d])``: a rank-one approximation ``s u_1 (x) ..`` of the array ``w``.

    Unit ``u_i``: the leading singular vectors of its unfoldings, refined by a few
    alternating steps.
    """
    d = w.ndim
    us = [torch.linalg.svd(w.movedim(i, 0).reshape(w.shape[i], -1))[0][:, 0] for i in range(d)]
    for _ in range(3 if d > 2 else 0):
        for i in range(d):
            rest = w
            for j in reversed(range(d)):
                if j != i:
                    rest = torch.tensordot(rest, us[j].conj(), dims=([j], [0]))
            norm = rest.norm()
            if norm > 0:  # a zero kernel (a pruned channel) keeps its unit vectors
                us[i] = rest / norm
    s = w
    for j in reversed(range(d)):
        s = torch.tensordot(s, us[j].conj(), dims=([j], [0]))
    return s, us


def separable_bounds(weight: torch.Tensor,
                      conv: ConvGeometry) -> tuple[float, float, float] | None:  # fmt: skip
    """``(lower, estimate, upper)`` from the Kronecker structure, for one channel per group.

    Per group, ``w = s u_1 (x) .. (x) u_D + r``, exactly, for the computed ``s`` and ``u_i``
    and ``r`` what they leave: ``||A(w)||`` is within ``||A(r)|| <= |r|_1 ||pad||`` (Young)
    of ``|s| prod_i ||A_i(u_i)||`` (triangle inequality both ways), and the operator is
    block diagonal over groups. The ``||A_i(u_i)||`` are bounded by :func:`factor_norm`;
    ``|r|_1`` is that of the computed ``r^``, plus what rounding ``s u_1 (x) ..`` (``D``
    products) and the difference can hide: ``|r| <= (1 + 2u) |r^| + gamma_D |s| prod_i
    |u_i|``, entrywise. ``None`` when channels mix.
    """
    if conv.out_channels != conv.groups or conv.in_channels != conv.groups:
        return None
    if max(conv.input_size) > SEPARABLE_LIMIT:
        return None
    w = weight.detach().to(torch.complex128 if weight.is_complex() else torch.float64)
    pad = pad_norm(conv)
    kept: list = []
    lower = estimate = upper = 0.0
    for kernel in w.reshape(conv.groups, *conv.kernel_size):
        if conv.ndim == 1:
            bounds = factor_norm(kernel, conv, 0, kept)
            lower, estimate = max(lower, bounds[0]), max(estimate, bounds[1])
            upper = max(upper, bounds[2])
            continue
        s, us = rank_one(kernel)
        scale = abs(complex(s))
        rest = float((kernel - s * outer(us)).abs().sum())  # |r^|_1
        product = scale * math.prod(float(u.abs().sum()) for u in us)  # |s| prod_i |u_i|_1
        rest = (rest * (1 + gamma(kernel.numel() + 4))
                + gamma(summed_terms(conv.ndim + 1, w.is_complex())) * product)  # fmt: skip
        rest *= pad * BUDGET_SLACK  # Young: ||A(r)|| <= this
        factors = [factor_norm(u, conv, i, kept) for i, u in enumerate(us)]
        low, mid, high = (scale * math.prod(f[j] for f in factors) for j in range(3))
        lower, estimate = max(lower, low - rest), max(estimate, mid)
        upper = max(upper, high + rest)
    return max(lower, 0.0) * (1 - MARGIN), estimate, upper * (1 + MARGIN)


def outer(us: list[torch.Tensor]) -> torch.Tensor:
    """``us[0] (x) us[1] (x) ..``, a d-way array."""
    out = us[0]
    for u in us[1:]:
        out = out[..., None] * u
    return out
