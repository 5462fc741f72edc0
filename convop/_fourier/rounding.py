"""What the norm bounds' arithmetic can err by: every rounding error of :func:`convop.opnorm`.

Every bound :func:`convop.opnorm` returns holds for the exact operator of the weight's exact
values, though it is computed in float64. Errors relative to the quantity bounded
(LAPACK's eigenvalues, norms, square roots) are covered by the relative :data:`MARGIN`; the
errors of sums whose terms can cancel (matrix entries where padding folds taps together,
products, the kernel's lags and their transforms) are relative to the sizes of the terms,
so each bound carries an absolute term for them as well: ``e``, the products' error
(:class:`Rounding`), on the Rayleigh quotients, and ``E`` on the top eigenvalue of a Gram
matrix or block (``sqrt(lambda +- E)``: :meth:`.grams.Grams._budget`, :meth:`Rounding.gram`,
:func:`.separable.factor_norm`). This module holds the shared pieces: Higham's
``gamma_n`` (:func:`gamma`), the norm of padding (:func:`pad_norm`), Schur's bound ``Y`` on
``|| |A| ||`` (:func:`abs_norm`), the FFT products' normwise error (:func:`fft_error`), and
:func:`from_square`, which turns a computed top eigenvalue and its error into
:class:`Bounds`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .. import _fft
from ..geometry import ConvGeometry
from ..operator import ConvOperator
from ..padding import source_index

#: Relative margin added to bounds computed in float64: it covers the errors that are
#: relative to the quantity bounded (LAPACK's eigenvalues, vector norms, square roots and
#: products of a few factors all err by far less). The errors of sums whose terms can
#: cancel (matrix entries, products, lags, transforms) are relative to the sizes of the
#: terms instead, and are budgeted explicitly as absolute terms (see :class:`Rounding`).
MARGIN = 1e-9

#: Unit round-off of float64 (and complex128), in which every bound is computed.
U = 2.0**-53
#: Relative slack on the error budgets themselves (computed in float64: sums of at most a
#: few million terms, each within ``gamma_n`` of exact, far below this).
BUDGET_SLACK = 1 + 1e-6


class Bounds(NamedTuple):
    """``lower <= ||A||_2 <= upper``, and a best estimate (the fields of ``convop.OpNorm``)."""

    estimate: float
    lower: float
    upper: float


def gamma(n: float) -> float:
    """``gamma_n = n u / (1 - n u)``, ``u`` the unit round-off of float64.

    A sum of ``n`` products errs by at most ``gamma_n`` times the sum of their absolute
    values, in any order of summation (Higham, *Accuracy and Stability of Numerical
    Algorithms*, 3.1).
    """
    return n * U / (1 - n * U)


def summed_terms(n: int, is_complex: bool) -> int:
    """``n`` products summed, as the ``n`` of ``gamma_n``; complex: ``4 n + 11``.

    Torch convolves complex data by three real convolutions (Gauss's trick: the imaginary
    part is ``(a + b)(c + d) - ac - bd``, whose terms are up to twice ``|w| |x|``), and a
    complex matrix product may do the same: ``gamma_{4n + 11}`` covers either way (the
    bound :func:`convop._fourier.lags.lags_error` uses for the same reason).
    """
    return 4 * n + 11 if is_complex else n


def copies(geom: ConvGeometry, dims: tuple[int, ...] | None = None) -> int:
    """The most copies padding makes of one input sample (along ``dims``; all by default)."""
    if geom.padding_mode == "zeros":
        return 1
    most = 1
    for i in range(geom.ndim) if dims is None else dims:
        n, (lo, hi) = geom.input_size[i], geom.padding[i]
        counts = torch.bincount(source_index(n, lo, hi, geom.padding_mode), minlength=n)
        most *= int(counts.max())
    return most


def pad_norm(geom: ConvGeometry, dims: tuple[int, ...] | None = None) -> float:
    """``||pad||_2``: the square root of the most copies padding makes of one sample."""
    return math.sqrt(copies(geom, dims))


def abs_norm(weight: torch.Tensor, conv: ConvGeometry) -> float:
    """``Y``: a bound on ``|| |A| ||_2``, the norm of the matrix of the entries' absolute values.

    ``A = S C P`` (padding ``P`` copies input samples, ``C`` convolves the padded input and
    ``S`` keeps what the output reads), and an entry of ``A`` is a sum of the taps padding
    folds onto it, so ``|A| <= |C| P`` entrywise, and ``|| |A| || <= || |C| || ||P||``. By
    Schur's test ``|| |C| ||_2 <= sqrt(r c)``: ``r``, the largest sum of ``|w|`` over one
    output channel's taps, bounds its row sums, and ``c``, over one input channel's, its
    column sums (a padded sample meets each tap of an output channel at most once). A
    transposed convolution is a submatrix of the adjoint of ``conv``'s: the same bound.
    """
    g = conv.groups
    a = weight.detach().abs().reshape(g, conv.out_channels // g, conv.in_channels // g, -1)
    rows, cols = float(a.sum((2, 3)).max()), float(a.sum((1, 3)).max())
    return math.sqrt(rows * cols) * pad_norm(conv) * BUDGET_SLACK


def fft_error(weight: torch.Tensor, geom: ConvGeometry, conv: ConvGeometry) -> float:
    """``e``: an FFT product by ``geom`` (either direction) errs by at most ``e ||x||_2``.

    The product is ``take(F^-1 (K F z))`` on a grid of ``N`` samples, ``z`` the padded input
    placed on the grid (``||z|| <= ||pad|| ||x||``), ``K_f`` the ``q x q'`` channel-mixing
    matrices of one group, themselves a transform of the taps. One transform errs normwise by
    ``b = 7u (log2 N + 2 D)`` of its result (Higham, *Accuracy and Stability of Numerical
    Algorithms*, Thm. 24.2: ``7u`` per radix-2 stage; two more per dimension for mixed
    radices and the real transforms' pre- and post-processing). Per group, with
    ``a = ||w_g||_1 >= ||K_f||_F >= ||K_f||_2`` and ``F = ||w_g||_F``:

    - the data's transform, ``||dZ|| <= b sqrt(N) ||z||``, reaches the result through
      ``K``: ``a b sqrt(N) ||z||``;
    - the kernel's (up to three transforms: a real weight's full spectrum is made from its
      half one), ``sum_f ||dK_f||_F^2 <= (3 b)^2 N F^2``: ``3 b sqrt(N) F (1 + b) sqrt(N)
      ||z||``;
    - the mixing, ``gamma_{4q+11}`` (:func:`summed_terms`) times ``|K^_f| |Z^_f|``:
      ``g (a + 3 b sqrt(N) F)(1 + b) sqrt(N) ||z||``;
    - the inverse transform maps these to the result dividing by ``sqrt(N)`` (times
      ``sqrt 2 <= 2`` for a half spectrum), and errs by ``b`` of its result, at most
      ``a ||z||`` plus the errors above;
    - the adjoint folds the halo back, ``gamma_c`` (``c`` copies at most) of the sums.

    ``max_g ||pad|| ((e1 + e2)(1 + gamma_c) + gamma_c a)`` in all, with ``e1`` the first
    three (through the inverse) and ``e2`` the last transform's.
    """
    grid = math.prod(_fft.frame(geom).sizes)
    b = 7 * U * (math.log2(max(grid, 2)) + 2 * geom.ndim)
    root = math.sqrt(grid)
    g = conv.groups
    q = max(conv.out_channels, conv.in_channels) // g
    mix = gamma(summed_terms(q, True))
    fold = gamma(copies(conv))
    w = weight.detach().reshape(g, -1)
    worst = 0.0
    for a, f in zip(w.abs().sum(1).tolist(), torch.linalg.vector_norm(w, dim=1).tolist()):
        kernel = 3 * b * root * f
        e1 = 2 * (a * b + kernel * (1 + b) + mix * (a + kernel) * (1 + b))
        e2 = b * (a + e1)
        worst = max(worst, (e1 + e2) * (1 + fold) + fold * a)
    return worst * pad_norm(conv) * BUDGET_SLACK


class Rounding(NamedTuple):
    """What the float64 products of one operator ``A`` (weight at unit scale) can err by.

    ``gamma``: a direct product (a sum of at most ``n`` products per output sample, then, for
    the adjoint, of the halo copies folded back) errs entrywise by ``gamma_n`` times the
    product of ``|A|``'s bound ``|C| P`` with ``|x|``, hence normwise by ``gamma Y``;
    ``normwise``: a bound on ``||fl(A x) - A x|| / ||x||`` for either direction and either
    method the operator may take; ``fft``: whether products may run by FFT, for which only
    the normwise bound holds. ``abs_norm``: ``Y >= || |A| ||_2`` (:func:`abs_norm`).
    """

    abs_norm: float
    gamma: float
    normwise: float
    fft: bool

    def gram(self, size: int) -> float:
        """A bound on ``||M^ - M||_2`` for a Gram matrix formed by products.

        ``M = A^H A`` (or ``A A^H``), ``size`` square, formed column by column by two
        products and read from one triangle. Direct: the entries err by at most
        ``(2 gamma + gamma^2) |A|^T |A|``, a symmetric non-negative matrix, so the matrix
        read from either triangle errs by at most ``(2 gamma + gamma^2) Y^2``. By FFT, each
        column errs by at most ``(2 e Y + e^2)`` (``e`` :attr:`normwise`, ``||A|| <= Y``):
        ``sqrt(2 size)`` times that in the Frobenius norm, once reflected.
        """
        y, e = self.abs_norm, self.normwise
        if self.fft:
            return math.sqrt(2 * size) * (2 * e * y + e * e)
        return (2 * self.gamma + self.gamma**2) * y * y

    def collatz(self, mv: torch.Tensor, v: torch.Tensor) -> float:
        """``max_i (M v)_i / v_i`` bounded above, from the computed ``M v`` of a positive ``v``.

        Direct, with every term non-negative: each computed sum is at least ``1 - gamma``
        times the exact one, so ``M v <= M^ v / (1 - gamma)^2``. By FFT: every entry within
        ``(2 e Y + e^2) ||v||`` of exact.
        """
        if self.fft:
            e, y = self.normwise, self.abs_norm
            slack = (2 * e * y + e * e) * float(torch.linalg.vector_norm(v))
            return float(((mv + slack) / v).max())
        return float((mv / v).max()) / (1 - self.gamma) ** 2


def rounding_of(op: ConvOperator, conv: ConvGeometry) -> Rounding:
    """The :class:`Rounding` of the float64 products of ``op`` (``conv`` its convolution)."""
    w, geom = op.weight, op.geometry
    g = conv.groups
    n = max(conv.out_channels, conv.in_channels) // g * math.prod(conv.kernel_size)
    direct = gamma(summed_terms(n + copies(conv), w.is_complex()))
    y = abs_norm(w, conv)
    fft = op.method == "fft"
    normwise = max(direct * y, fft_error(w, geom, conv) if fft else 0.0)
    return Rounding(y, direct, normwise, fft)


def from_square(top: float, error: float) -> Bounds:
    """Bounds on ``sqrt(lambda)`` from ``top``, the computed top eigenvalue of a matrix.

    ``lambda`` is the top eigenvalue of a Hermitian matrix within ``error`` (2-norm) of the
    one whose top eigenvalue LAPACK computed as ``top``. Weyl: ``|lambda - top| <= error``
    plus LAPACK's own error, relative to the computed matrix's norm (at most
    ``top + error``) and left to :data:`MARGIN`.
    """
    top_ = max(top, 0.0)
    upper = math.sqrt(top_ + error) * (1 + MARGIN)
    lower = math.sqrt(max(top * (1 - MARGIN) - error * (1 + MARGIN), 0.0)) * (1 - MARGIN)
    return Bounds(min(max(math.sqrt(top_), lower), upper), lower, upper)
