"""Singular values and certified operator norms of convolution operators.

Two tools, from the exact to the bounded, and :func:`is_circulant`, which says where the
first applies:

- :func:`svdvals`: every singular value of a circulant convolution (circular padding, or no
  padding with 1-sample kernels, stride 1 or a stride that divides the input size), exactly,
  from the per-frequency ``C_out x C_in`` matrices of the kernel's spectrum (Sedghi, Gupta &
  Long 2019; polyphase for strides).
- :func:`opnorm`: a bracket ``lower <= ||op||_2 <= upper`` for *every* operator, certified
  (round-off included), tightened until ``upper <= (1 + rtol) * lower``. The lower bound is
  the Rayleigh quotient of a Lanczos vector, started from the plane wave of the circulant
  embedding's largest block; the upper bound the best of the structural bounds: the
  circulant embedding (times ``||pad||_2`` for padding that copies samples), the exact norms
  of a separable kernel's one-dimensional factors, the Collatz-Wielandt bound of a
  non-negative operator, and, for small operators, the exact norm of the explicit matrix or
  of its smaller Gram matrix (proofs in ``docs/conventions.md``).

This module is the public face and the choice between those paths; the algorithms live in
:mod:`convop._fourier`: the polyphase blocks in ``circulant``, the Gram blocks of the
embedding in ``grams``, the separable factors in ``separable``, the Lanczos bracket in
``bracket``, the rounding-error budgets behind every bound in ``rounding`` (``MARGIN``, the
relative margin, is re-exported here), and the exact powers of two that make every scale
work in ``scaling``. :func:`convop.lipschitz` and :func:`convop.spectral_normalize`
(:mod:`convop.layer_norms`) apply them to ``torch.nn`` layers and models.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from ._fourier.bracket import bracket, dense_norm
from ._fourier.circulant import (
    check_blocks_memory,
    circulant_reason,
    convolution_of,
    polyphase_blocks,
)
from ._fourier.grams import Grams, batched
from ._fourier.rounding import MARGIN, abs_norm, from_square, rounding_of
from ._fourier.scaling import ldexp_, round_off, scaled_back, unit_weight
from .geometry import ConvGeometry
from .operator import ConvOperator

#: Operators with at most this many rows times columns get the exact norm of their matrix.
DENSE_LIMIT = 2**21
#: Operators with at most this many rows times columns (and at most 2048 of the fewer) whose
#: bounds stay apart get the exact norm of their smaller Gram matrix, formed by products.
GRAM_LIMIT = 2**26
#: The most iterations (products by ``A^H A``) :func:`opnorm` takes by default.
MAXITER = 200
#: The most of them that are Lanczos steps (each keeps one vector); non-negative operators
#: go on with power iterations.
LANCZOS_STEPS = 60


class OpNorm(NamedTuple):
    """What :func:`opnorm` returns: ``lower <= ||op||_2 <= upper``, and a best estimate.

    Parameters
    ----------
    estimate : float
        The best estimate of the norm (the Lanczos value, within the bounds).
    lower, upper : float
        Certified bounds on the norm.

    See Also
    --------
    opnorm : The function that returns it.
    """

    estimate: float
    lower: float
    upper: float

    @property
    def gap(self) -> float:
        """``upper / lower - 1``: the relative width of the bracket."""
        return self.upper / self.lower - 1 if self.lower > 0 else math.inf


def check_finite(weight: torch.Tensor, what: str = "the operator's weight") -> None:
    """``ValueError`` if ``weight`` holds NaN or Inf: no singular value is defined then."""
    if not bool(torch.isfinite(weight.detach()).all()):
        raise ValueError(f"{what} holds NaN or Inf: its singular values are not defined")


def check_rtol(rtol: object) -> float:
    """``rtol`` as a float, or a ``TypeError``/``ValueError`` naming it."""
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)):
        raise TypeError(f"rtol must be a float, got {type(rtol).__name__}")
    if not (math.isfinite(rtol) and rtol > 0):
        raise ValueError(f"rtol must be a positive finite float, got {rtol!r}")
    return float(rtol)


def _forward_geometry(op: ConvOperator) -> ConvGeometry:
    """The geometry whose forward map has ``op``'s singular values (adjoints share them)."""
    if not isinstance(op, ConvOperator):
        raise TypeError(f"op must be a convop.ConvOperator, got {type(op).__name__}")
    return op.geometry


def is_circulant(op: ConvOperator) -> bool:
    """Whether :func:`svdvals` applies to ``op`` (a circulant, possibly strided, convolution).

    Parameters
    ----------
    op : ConvOperator
        Any convolution or transposed convolution, its adjoint or its transpose.

    Returns
    -------
    bool
        ``True`` where ``op`` is a circulant convolution, possibly strided: the operators
        :func:`svdvals` takes (its description says which).

    See Also
    --------
    svdvals : Every singular value of the operators for which this is true.
    opnorm : Certified bounds on the norm of any operator, circulant or not.
    convop.solve_tikhonov : The exact Tikhonov and Wiener solves of circulant operators.

    Examples
    --------
    >>> import torch, convop
    >>> w = torch.randn(4, 2, 3, 3)
    >>> convop.is_circulant(convop.conv2d(w, (2, 8, 8), padding=1, padding_mode="circular"))
    True
    >>> convop.is_circulant(convop.conv2d(w, (2, 8, 8), padding=1))
    False
    """
    conv, exact = convolution_of(_forward_geometry(op))
    return exact and circulant_reason(conv) is None


def svdvals(op: ConvOperator) -> torch.Tensor:
    r"""All singular values of a circulant convolution, exactly (round-off only).

    For circular padding that keeps the size (``padding`` summing to the kernel's reach
    ``dilation * (kernel_size - 1)`` per dimension), or no padding with 1-sample kernels,
    with stride 1 or a stride that divides the input size; any number of dimensions,
    channels, groups and dilation; convolutions, their adjoints (``op.H``) and transposes
    (``op.T``). The per-frequency matrices of the kernel's spectrum (polyphase blocks for
    strides) are formed and their singular values taken.

    Parameters
    ----------
    op : ConvOperator
        A circulant convolution (:func:`is_circulant`), its adjoint or its transpose.

    Returns
    -------
    torch.Tensor
        ``min(op.shape)`` singular values, float64, sorted descending, on the operator's
        device (computed in float64 / complex128 whatever the weight's precision).

    Raises
    ------
    ValueError
        When the operator is not a circulant (zero, reflect or replicate padding, a
        size-changing padding, a stride that does not divide the size): use
        :func:`opnorm` there. Also when the weight holds NaN or Inf, or the largest
        singular value is beyond float64's largest number (about ``1.8e308``); any smaller
        scale is exact (the weight is divided by a power of two first, and the values
        multiplied back).

    See Also
    --------
    is_circulant : Whether ``svdvals`` applies to an operator.
    opnorm : Certified bounds on the largest singular value of any operator.
    convop.lipschitz : The Lipschitz constant of a layer or a model, from these norms.

    Notes
    -----
    The unitary DFT on the input grid of :math:`n` samples block-diagonalises a circulant
    convolution into one :math:`C_\text{out}/G \times C_\text{in}/G` matrix per frequency
    :math:`f` and group [1]_,

    .. math::

        K(f) = \sum_\kappa w_\kappa\, e^{-2\pi i f \kappa d / n} .

    A stride :math:`s` dividing :math:`n` keeps every :math:`s`-th output: output frequency
    :math:`f` collects the :math:`s` input frequencies :math:`f + jm`, :math:`m = n/s`, that
    alias onto it, so the blocks are the polyphase matrices

    .. math::

        B(f) = s^{-1/2} \big[K(f) \;\cdots\; K(f + (s-1)m)\big]

    (:math:`s^D` column blocks in :math:`D` dimensions), and the singular values of the
    operator are those of the blocks. For a real weight :math:`B(-f)` is
    :math:`\overline{B(f)}` up to a permutation of its columns: half the frequencies suffice.
    The derivation is in ``docs/conventions.md``, section 10.

    References
    ----------
    .. [1] H. Sedghi, V. Gupta and P. M. Long, "The Singular Values of Convolutional
       Layers," International Conference on Learning Representations (ICLR), 2019.

    Examples
    --------
    >>> import numpy as np, torch, convop
    >>> torch.manual_seed(0)
    <torch._C.Generator object at ...>
    >>> w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    >>> op = convop.conv2d(w, (2, 6, 6), padding=1, padding_mode="circular")
    >>> s = convop.svdvals(op)
    >>> s.shape
    torch.Size([72])
    >>> bool(np.allclose(s.numpy(), np.linalg.svd(op.todense(), compute_uv=False)))
    True
    """
    geom = _forward_geometry(op)
    check_finite(op.weight)
    conv, exact = convolution_of(geom)
    reason = circulant_reason(conv) if exact else "its output is cropped"
    if reason is not None:
        raise ValueError(
            f"svdvals() needs a circulant convolution, but {reason}; "
            f"use convop.opnorm(op) for certified bounds on the largest singular value"
        )
    check_blocks_memory(conv, conv.input_size, op.weight.device)
    unit, shift = unit_weight(op.weight.detach(), geom, conv)  # the weight / 2**shift
    if unit is None:
        return torch.zeros(min(op.shape), dtype=torch.float64, device=op.weight.device)
    blocks, counts = polyphase_blocks(unit, conv, conv.input_size, half=not unit.is_complex())
    values = batched(torch.linalg.svdvals, blocks)  # (B, min(O, C*s))
    values = values.repeat_interleave(counts.to(torch.int64), dim=0).reshape(-1)
    values = torch.sort(values, descending=True).values
    top = float(values[0])
    if top > 0 and math.log2(top) + shift >= 1024:
        raise ValueError(
            f"svdvals(): the largest singular value is about 2**{math.log2(top) + shift:.1f}, "
            f"beyond float64's largest number (about 2**1024); scale the weight down (the "
            f"singular values scale with it)"
        )
    return ldexp_(values, shift)


def opnorm(op: ConvOperator, *, rtol: float = 1e-3, maxiter: int = MAXITER) -> OpNorm:
    r"""Certified bounds on the operator 2-norm (largest singular value) of ``op``.

    Returns ``(estimate, lower, upper)`` with ``lower <= ||op||_2 <= upper`` guaranteed for
    the weight's exact values, round-off included (a relative margin
    ``convop.spectral.MARGIN`` for the errors relative to the norm; absolute terms for those
    of sums whose terms cancel, relative to the taps' sizes) and, on return,
    ``upper <= (1 + rtol) * lower``; where the bounds cannot get that close within
    ``maxiter`` iterations, or round-off keeps them apart, a ``RuntimeWarning`` says which
    gap was reached and why. Works on the operator's device; products run in the weight's
    precision, the bounds are certified in float64.

    At every scale: the weight is first divided by the power of two that puts its largest
    entry (of those the operator reads) in ``[1/2, 1)``, which is exact, so squares neither
    overflow nor underflow and single-precision products stay in range; the bounds are
    multiplied back, rounded outward (the lower bound down, the upper bound up) where that
    lands in float64's subnormal range. A zero operator (all taps zero, or all those that
    read the input: pruned layers) gives ``(0.0, 0.0, 0.0)``. How the bounds are found is
    in the Notes below.

    Parameters
    ----------
    op : ConvOperator
        Any convolution or transposed convolution, or its adjoint or transpose (they share
        the norm).
    rtol : float, default 1e-3
        The relative gap ``upper / lower - 1`` to reach.
    maxiter : int, default 200
        The most iterations, each a product and an adjoint product: up to 60 Lanczos steps,
        then, for non-negative operators, power iterations.

    Returns
    -------
    OpNorm
        Named tuple ``(estimate, lower, upper)`` of floats; ``.gap`` is ``upper / lower - 1``.

    Raises
    ------
    ValueError
        When the weight holds NaN or Inf, or the norm is too close to float64's largest
        number (about ``1.8e308``) for a finite upper bound.

    Warns
    -----
    RuntimeWarning
        When the bounds stay more than ``rtol`` apart: after ``maxiter`` iterations; for a
        norm tiny next to its taps (sums of taps that cancel, as when padding folds a
        kernel summing to almost nothing onto one sample), where round-off alone keeps
        them apart by about ``1e-8`` times the norm of the operator of ``|w|`` (the Gram
        matrices' square roots) or less; for an ``rtol`` below the margin
        ``convop.spectral.MARGIN``; or for a norm in float64's subnormal range (below
        ``2.2e-308``), where outward rounding alone can make them so.

    See Also
    --------
    svdvals : Every singular value, exactly, where the operator is a circulant.
    is_circulant : Whether the exact path applies.
    convop.lipschitz : Certified Lipschitz bounds of layers and models, from these bounds.
    convop.spectral_normalize : A conv layer divided by its operator norm.

    Notes
    -----
    By the operator (proofs in ``docs/conventions.md``, section 10):

    - circulant convolutions (see :func:`svdvals`): the exact largest singular value, that
      of the kernel's per-frequency blocks [1]_;
    - small operators (at most ``convop.spectral.DENSE_LIMIT`` matrix entries): the exact
      norm of the explicit matrix;
    - otherwise the lower bound is the Rayleigh quotient of a Lanczos vector [2]_ ``y`` of
      ``A^H A`` (or ``A A^H``, whichever is smaller), started, for kernels of mixed sign,
      from the plane wave of the circulant embedding's largest block (often within ``rtol``
      before any step),

      .. math::

          \|A\|_2 \;\ge\; \frac{\|A y\|_2}{\|y\|_2} \qquad (y \ne 0);

      the upper bound is the least of: the circulant embedding of the padded convolution
      (times :math:`\|P\|_2` for reflect, replicate and circular padding :math:`P`), whose
      blocks on a grid of :math:`m` frequencies per dimension are, for stride :math:`s`,

      .. math::

          B(f) B(f)^H = \sum_{s \mid \delta} R_\delta\, e^{-2\pi i f (\delta / s) / m},
          \qquad \|A\|_2 \le \|P\|_2 \max_f \lambda_\max\big(B(f) B(f)^H\big)^{1/2},

      with :math:`R_\delta` the kernel's autocorrelation at lag :math:`\delta`, each block
      certified below a target by a Cholesky factorisation [3]_ (in single precision where
      ``rtol >= 1e-2`` allows); the exact norms of the one-dimensional factors of a
      separable kernel (one channel per group); and, for non-negative kernels, the
      Collatz-Wielandt bound [4]_ [5]_ of the Lanczos vector (or of power iterations from
      it), for any :math:`v > 0`,

      .. math::

          \|A\|_2^2 = \rho(A^T A) \le \max_i \frac{(A^T A v)_i}{v_i} ;

    - where those bounds stay more than ``rtol`` apart and the operator has at most
      ``convop.spectral.GRAM_LIMIT`` entries and at most 2048 rows or columns: the exact
      norm of its smaller Gram matrix, formed by products.

    Every rounding error of these computations is budgeted with the standard bounds of
    floating-point sums and products [6]_ and added to the bounds.

    References
    ----------
    .. [1] H. Sedghi, V. Gupta and P. M. Long, "The Singular Values of Convolutional
       Layers," International Conference on Learning Representations (ICLR), 2019.
    .. [2] C. Lanczos, "An Iteration Method for the Solution of the Eigenvalue Problem of
       Linear Differential and Integral Operators," J. Res. Nat. Bur. Standards 45 (1950),
       255-282.
    .. [3] S. M. Rump, "Verification of Positive Definiteness," BIT Numer. Math. 46 (2006),
       433-452.
    .. [4] L. Collatz, "Einschließungssatz für die charakteristischen Zahlen von Matrizen,"
       Math. Z. 48 (1942), 221-226.
    .. [5] H. Wielandt, "Unzerlegbare, nicht negative Matrizen," Math. Z. 52 (1950),
       642-648.
    .. [6] N. J. Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., SIAM,
       2002.

    Examples
    --------
    A zero-padded blur: the power method's estimates approach the norm from below and never
    say how far they are from it; ``opnorm`` brackets it.

    >>> import torch, convop
    >>> w = torch.ones(1, 1, 5, 5, dtype=torch.float64) / 25
    >>> op = convop.conv2d(w, (1, 200, 200), padding="same")
    >>> est, lower, upper = convop.opnorm(op, rtol=1e-3)
    >>> lower <= est <= upper <= 1.001 * lower
    True
    >>> upper <= 1.0 + 1e-8  # an averaging blur never amplifies
    True
    """
    geom = _forward_geometry(op)
    rtol = check_rtol(rtol)
    if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 1:
        raise ValueError(f"maxiter must be a positive int, got {maxiter!r}")
    weight = op.weight.detach()
    check_finite(weight)
    conv, exact = convolution_of(geom)
    unit, shift = unit_weight(weight, geom, conv)
    if unit is None:  # every tap the operator reads is zero: so is the operator
        return OpNorm(0.0, 0.0, 0.0)
    # the same operator divided by 2**shift (exactly), its largest tap in [1/2, 1): nothing
    # squared below overflows or underflows, and products in float32 stay in range. Products
    # are evaluated the way ``op`` does now (a fixed method: an 'auto' operator made afresh
    # would time both methods on its first products).
    precise = ConvOperator(unit, geom, method=op.method)
    detail = None
    if exact and circulant_reason(conv) is None:
        grams = Grams(unit, conv, conv.input_size)
        result = from_square(grams.top_eigenvalue(), grams.error)
    elif math.prod(op.shape) <= DENSE_LIMIT and min(op.shape) <= 2048:
        result = dense_norm(precise, rounding_of(precise, conv))
    else:
        work = ConvOperator(unit.to(weight.dtype), geom, method=precise.method)
        result, detail = bracket(work, conv, precise, rtol, maxiter, shift,
                                 lanczos_steps=LANCZOS_STEPS, gram_limit=GRAM_LIMIT)  # fmt: skip
    bounds = OpNorm(*scaled_back(result, shift))
    met = result.upper <= (1 + rtol) * result.lower
    if detail is None and not met:  # an exact path: round-off alone keeps them apart
        if result.upper <= (1 + 8 * MARGIN) * result.lower:
            detail = f"because rtol is below the margin for round-off (MARGIN={MARGIN:g})"
        else:
            detail = round_off(result.upper - result.lower, abs_norm(unit, conv), shift)
    if detail is not None or (met and not bounds.upper <= (1 + rtol) * bounds.lower):
        detail = detail or (
            "in float64's subnormal range (below 2.2e-308), where the bounds are rounded "
            "outward to its coarser spacing"
        )
        warnings.warn(
            f"opnorm: the certified bounds [{bounds.lower:.6g}, {bounds.upper:.6g}] are "
            f"{bounds.gap:.2%} apart, more than rtol={rtol:g}, {detail}",
            RuntimeWarning,
            stacklevel=2,
        )
    return bounds
