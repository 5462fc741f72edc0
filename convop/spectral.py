"""Singular values and certified operator norms of convolution operators.

Three tools, from the exact to the bounded:

- :func:`svdvals`: every singular value of a circulant convolution (circular padding, or no
  padding with 1-sample kernels, stride 1 or a stride that divides the input size), exactly,
  from the per-frequency ``C_out x C_in`` matrices of the kernel's spectrum (Sedghi, Gupta &
  Long 2019; polyphase for strides).
- :func:`opnorm`: a bracket ``lower <= ||op||_2 <= upper`` for *every* operator, certified
  (round-off included, see below), tightened until ``upper <= (1 + rtol) * lower``.
  The lower bound is the Rayleigh quotient of a Lanczos vector; the upper bound the best of
  the structural bounds below (proofs in ``docs/conventions.md``).
- :func:`spectral_normalize` and :func:`lipschitz`: the same for ``torch.nn`` layers and
  models.

Upper bounds, each a theorem about the operator's structure:

- *circulant embedding*: the convolution of the padded input is a submatrix of a circulant
  on any grid that holds the padded input, so its norm is at most the largest singular
  value of the per-frequency blocks there; padding other than zeros multiplies the bound by
  ``||pad||_2 = sqrt(most copies of one input sample)``.
- *separable kernels* (one channel per group): a kernel ``sum_r s_r u_r (x) v_r`` gives an
  operator ``sum_r s_r A(u_r) (x) A(v_r)``, and Kronecker products multiply norms, so the
  exact norms of the small one-dimensional factors bound the whole (a Gaussian blur is one
  term; what the leading term leaves is bounded by Young's inequality).
- *non-negative operators* (a real, non-negative kernel; every padding is a non-negative
  map): for any positive ``v``, ``lambda_max(A^T A) <= max_i (A^T A v)_i / v_i``
  (Collatz-Wielandt), tight at the Perron vector that the Lanczos vector approximates.
- *small operators*: the exact 2-norm of the explicit matrix (or, where the bounds above
  stay apart, of the smaller Gram matrix, formed by products).

The lower bound starts, for kernels of mixed sign, from the embedding's largest block made
into a tapered plane wave: a near-top singular vector before any iteration.

Every scale: both functions divide the weight by a power of two first (exact), so that the
squares behind the blocks and Gram matrices stay inside float64's range, and multiply the
results back (bounds rounded outward).

Round-off: every bound holds for the exact operator of the weight's exact values. Errors
relative to the quantity bounded (LAPACK's eigenvalues, norms, square roots) are covered by
the relative :data:`MARGIN`; the errors of sums whose terms can cancel (matrix entries where
padding folds taps together, products, the kernel's lags and their transforms) are relative
to the sizes of the terms, so each bound carries an absolute term for them as well: ``e``,
the products' error (:class:`_Rounding`), on the Rayleigh quotients, and ``E`` on the top
eigenvalue of a Gram matrix or block (``sqrt(lambda +- E)``: :meth:`_Grams._budget`,
:meth:`_Rounding.gram`, :func:`_factor_norm`). Where the norm is tiny next to the taps
(they cancel), these keep the bounds apart, and :func:`opnorm` warns that round-off, not
iterations, sets the gap.

This module runs past 400 lines because every bound above shares the same blocks, scaling
and round-off margins, and :func:`opnorm` plays them against each other.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import torch

from . import _fft, functional
from ._fourier.lags import gram_lags, lags_error
from ._shared.memory import check_memory
from .geometry import ConvGeometry
from .operator import ConvOperator
from .padding import source_index

#: Relative margin added to bounds computed in float64: it covers the errors that are
#: relative to the quantity bounded (LAPACK's eigenvalues, vector norms, square roots and
#: products of a few factors all err by far less). The errors of sums whose terms can
#: cancel (matrix entries, products, lags, transforms) are relative to the sizes of the
#: terms instead, and are budgeted explicitly as absolute terms (see :class:`_Rounding`).
MARGIN = 1e-9
#: The longest input dimension whose 1-D factor matrices the separable bound forms.
SEPARABLE_LIMIT = 1024
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


#: Unit round-off of float64 (and complex128), in which every bound is computed.
_U = 2.0**-53
#: Relative slack on the error budgets themselves (computed in float64: sums of at most a
#: few million terms, each within ``gamma_n`` of exact, far below this).
_BUDGET_SLACK = 1 + 1e-6


def _gamma(n: float) -> float:
    """``gamma_n = n u / (1 - n u)``, ``u`` the unit round-off of float64.

    A sum of ``n`` products errs by at most ``gamma_n`` times the sum of their absolute
    values, in any order of summation (Higham, *Accuracy and Stability of Numerical
    Algorithms*, 3.1).
    """
    return n * _U / (1 - n * _U)


def _terms(n: int, is_complex: bool) -> int:
    """``n`` products summed, as the ``n`` of ``gamma_n``; complex: ``4 n + 11``.

    Torch convolves complex data by three real convolutions (Gauss's trick: the imaginary
    part is ``(a + b)(c + d) - ac - bd``, whose terms are up to twice ``|w| |x|``), and a
    complex matrix product may do the same: ``gamma_{4n + 11}`` covers either way (the
    bound :func:`convop._fourier.lags.lags_error` uses for the same reason).
    """
    return 4 * n + 11 if is_complex else n


class OpNorm(NamedTuple):
    """What :func:`opnorm` returns: ``lower <= ||op||_2 <= upper``, and a best estimate.

    Parameters
    ----------
    estimate : float
        The best estimate of the norm (the Lanczos value, within the bounds).
    lower, upper : float
        Certified bounds on the norm.
    """

    estimate: float
    lower: float
    upper: float

    @property
    def gap(self) -> float:
        """``upper / lower - 1``: the relative width of the bracket."""
        return self.upper / self.lower - 1 if self.lower > 0 else math.inf


# --------------------------------------------------------------------------- geometry
def check_finite(weight: torch.Tensor, what: str = "the operator's weight") -> None:
    """``ValueError`` if ``weight`` holds NaN or Inf: no singular value is defined then."""
    if not bool(torch.isfinite(weight.detach()).all()):
        raise ValueError(f"{what} holds NaN or Inf: its singular values are not defined")


def _forward_geometry(op: ConvOperator) -> ConvGeometry:
    """The geometry whose forward map has ``op``'s singular values (adjoints share them)."""
    if not isinstance(op, ConvOperator):
        raise TypeError(f"op must be a convop.ConvOperator, got {type(op).__name__}")
    return op.geometry


def _as_conv(geom: ConvGeometry) -> tuple[ConvGeometry, bool]:
    """``(conv, exact)``: a convolution whose norm bounds ``geom``'s.

    ``exact``: the maps are equal up to adjoint. A transposed convolution is the adjoint of
    :meth:`~ConvGeometry.as_convolution` applied to its input embedded (zero-filled) into
    that convolution's output.
    """
    if not geom.transposed:
        return geom, True
    conv = geom.as_convolution()
    return conv, conv.output_size == geom.input_size


def _circulant_reason(geom: ConvGeometry) -> str | None:
    """Why ``geom``'s convolution is not a (strided) circulant, or ``None`` if it is."""
    for i, (n, k, s, d, (lo, hi)) in enumerate(
        zip(geom.input_size, geom.kernel_size, geom.stride, geom.dilation, geom.padding)
    ):
        reach = d * (k - 1)
        if lo + hi != reach:
            return f"dimension {i} is padded by {lo + hi}, not by the kernel's reach {reach}"
        if reach and geom.padding_mode != "circular":
            return f"padding_mode={geom.padding_mode!r} (only 'circular' wraps around)"
        if n % s:
            return f"stride {s} does not divide the input size {n} in dimension {i}"
    return None


def is_circulant(op: ConvOperator) -> bool:
    """Whether :func:`svdvals` applies to ``op`` (a circulant, possibly strided, convolution).

    Parameters
    ----------
    op : ConvOperator

    Returns
    -------
    bool

    Examples
    --------
    >>> import torch, convop
    >>> w = torch.randn(4, 2, 3, 3)
    >>> convop.is_circulant(convop.conv2d(w, (2, 8, 8), padding=1, padding_mode="circular"))
    True
    >>> convop.is_circulant(convop.conv2d(w, (2, 8, 8), padding=1))
    False
    """
    conv, exact = _as_conv(_forward_geometry(op))
    return exact and _circulant_reason(conv) is None


# --------------------------------------------------------------------------- blocks
def _place(taps: torch.Tensor, positions: list[torch.Tensor],
           grid: tuple[int, ...]) -> torch.Tensor:  # fmt: skip
    """``taps`` (A, B, *k) put at ``positions`` of a zero (A, B, *grid) array.

    ``positions`` has one index tensor of length ``k_i`` per dimension; taps that meet add.
    """
    a, b = taps.shape[:2]
    index = torch.meshgrid(*positions, indexing="ij")
    flat = sum(i * math.prod(grid[j + 1 :]) for j, i in enumerate(index)).reshape(-1)
    place = taps.new_zeros((a, b, math.prod(grid)))
    place.index_add_(2, flat, taps.reshape(a, b, -1))
    return place.reshape(a, b, *grid)


def _wrap(taps: torch.Tensor, dilation: tuple[int, ...], grid: tuple[int, ...]) -> torch.Tensor:
    """The kernel of the circulant on ``grid``: ``taps`` placed ``dilation`` apart, wrapped."""
    positions = [torch.arange(k, device=taps.device) * d % n
                 for k, d, n in zip(taps.shape[2:], dilation, grid)]  # fmt: skip
    return _place(taps, positions, grid)


def _threaded(fn, tasks: list) -> list:
    """``[fn(task) for task in tasks]``, on torch's threads (on the CPU)."""
    threads = torch.get_num_threads()
    if threads < 2 or len(tasks) < 2:
        return [fn(task) for task in tasks]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(threads, len(tasks))) as pool:
        return list(pool.map(fn, tasks))


def _batched(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` for a batch of small matrices, in chunks on torch's threads.

    LAPACK's batched calls on the CPU take one matrix at a time, on one thread.
    """
    threads = torch.get_num_threads()
    if not x.is_cpu or threads < 2 or x.shape[0] < 2 * threads:
        return fn(x)
    from concurrent.futures import ThreadPoolExecutor

    chunks = x.tensor_split(threads)
    with ThreadPoolExecutor(threads) as pool:
        return torch.cat(list(pool.map(fn, chunks)))


def _blocks(weight: torch.Tensor, geom: ConvGeometry, grid: tuple[int, ...],
            *, half: bool) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Polyphase blocks of the circulant on ``grid`` and how often each occurs.

    The convolution's kernel (dilated, wrapped onto ``grid``) has per-frequency
    ``C_out x C_in`` matrices ``K(f)``; subsampling by the stride ``s`` adds the ``prod(s)``
    frequencies that alias, so the (unitary) map is block diagonal with blocks
    ``[K(f + j m) for j] / sqrt(prod(s))`` per output frequency ``f`` and group
    (``grid = s * m``). Returns ``(blocks, counts)``: blocks
    ``(B, C_out/G, C_in/G * prod(s))`` in complex128 and how many of the map's blocks each
    stands for (``half``, for a real weight: frequencies ``f`` and ``-f`` have conjugate,
    equally singular blocks, so only one of each pair is formed).
    """
    w = weight.detach().to(torch.complex128 if weight.is_complex() else torch.float64)
    g, nd = geom.groups, geom.ndim
    o, c = geom.out_channels // g, geom.in_channels // g
    place = _wrap(w.reshape(g * o, c, *geom.kernel_size), geom.dilation, grid)
    dims = tuple(range(2, 2 + nd))
    if half and geom.stride[-1] == 1:  # the half spectrum is all that is kept
        spec = torch.fft.rfftn(place, dim=dims)  # (G*O, C, *grid[:-1], grid[-1] // 2 + 1)
    else:
        spec = torch.fft.fftn(place, dim=dims)  # (G*O, C, *grid)
    m = [n // s for n, s in zip(grid, geom.stride)]
    if half:  # keep output frequencies 0 .. m_last // 2 of the last dimension
        keep = m[-1] // 2 + 1
    if half and geom.stride[-1] > 1:
        last = torch.arange(geom.stride[-1], device=w.device)[:, None] * m[-1] + torch.arange(
            keep, device=w.device
        )
        spec = spec.index_select(-1, last.reshape(-1))
    m_last = keep if half else m[-1]
    shape = [g, o, c]
    for i, s in enumerate(geom.stride):
        shape += [s, m[i] if i < nd - 1 else m_last]
    spec = spec.reshape(shape)  # (G, O, C, s1, m1, s2, m2, ...)
    order = [0, *range(4, 3 + 2 * nd, 2), 1, 2, *range(3, 3 + 2 * nd, 2)]
    spec = spec.permute(order)  # (G, m1, .., O, C, s1, ..)
    stride = math.prod(geom.stride)
    blocks = spec.reshape(-1, o, c * stride) / math.sqrt(stride)
    counts = torch.ones([*m[:-1], m_last], dtype=torch.float64, device=w.device)
    if half:
        twice = (torch.arange(m_last, device=w.device) > 0) & (
            2 * torch.arange(m_last, device=w.device) != m[-1]
        )
        counts[..., twice] = 2
    counts = counts.reshape(1, -1).expand(g, -1).reshape(-1)
    return blocks, counts


def _check_blocks_memory(geom: ConvGeometry, grid: tuple[int, ...], device) -> None:
    o, c = geom.out_channels, geom.in_channels // geom.groups
    needed = 3 * o * c * math.prod(grid) * 16
    check_memory(needed, None, f"the kernel's spectrum on a {grid} grid", device,
                 hint="use a smaller input_shape")  # fmt: skip


def svdvals(op: ConvOperator) -> torch.Tensor:
    """All singular values of a circulant convolution, exactly (round-off only).

    For circular padding that keeps the size (``padding`` summing to the kernel's reach
    ``dilation * (kernel_size - 1)`` per dimension), or no padding with 1-sample kernels,
    with stride 1 or a stride that divides the input size; any number of dimensions,
    channels, groups and dilation; convolutions, their adjoints (``op.H``) and transposes
    (``op.T``). The per-frequency matrices of the kernel's spectrum (polyphase blocks for
    strides) are formed and their singular values taken (Sedghi, Gupta & Long, ICLR 2019).

    Parameters
    ----------
    op : ConvOperator

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
    conv, exact = _as_conv(geom)
    reason = _circulant_reason(conv) if exact else "its output is cropped"
    if reason is not None:
        raise ValueError(
            f"svdvals() needs a circulant convolution, but {reason}; "
            f"use convop.opnorm(op) for certified bounds on the largest singular value"
        )
    _check_blocks_memory(conv, conv.input_size, op.weight.device)
    unit, shift = _unit_weight(op.weight.detach(), geom, conv)  # the weight / 2**shift
    if unit is None:
        return torch.zeros(min(op.shape), dtype=torch.float64, device=op.weight.device)
    blocks, counts = _blocks(unit, conv, conv.input_size, half=not unit.is_complex())
    values = _batched(torch.linalg.svdvals, blocks)  # (B, min(O, C*s))
    values = values.repeat_interleave(counts.to(torch.int64), dim=0).reshape(-1)
    values = torch.sort(values, descending=True).values
    top = float(values[0])
    if top > 0 and math.log2(top) + shift >= 1024:
        raise ValueError(
            f"svdvals(): the largest singular value is about 2**{math.log2(top) + shift:.1f}, "
            f"beyond float64's largest number (about 2**1024); scale the weight down (the "
            f"singular values scale with it)"
        )
    return _ldexp_(values, shift)


#: The least shift of a Cholesky test, relative to ``target**2``: above the backward error
#: of a Cholesky factorisation of a ``p x p`` matrix, about ``(p + 1) u tr(A)`` (Rump,
#: "Verification of positive definiteness", BIT 2006), where ``tr(A) <= p target**2``: in
#: complex64, for ``p`` up to 128 (with the rounding of the matrix to single precision);
#: in complex128, for ``p`` up to about 64 (larger blocks: :func:`_cholesky_shift`).
_CHOLESKY_SHIFT = {torch.complex128: 1e-12, torch.complex64: 2e-3}


def _cholesky_shift(p: int) -> float:
    """The shift of a complex128 Cholesky test of ``p x p`` blocks, relative to ``target**2``.

    Rump's bound ``gamma_{p+1} tr(A)`` with ``tr(A) <= p target**2``, doubled for complex
    arithmetic and the rounding of the shifted diagonal: ``2 (p + 2) p u``, at least
    :data:`_CHOLESKY_SHIFT` (1.2e-10 for ``p = 1024``, where 1e-12 fell short).
    """
    return max(_CHOLESKY_SHIFT[torch.complex128], 2 * _gamma((p + 2) * p))


#: The largest blocks tested in single precision.
_SINGLE_LIMIT = 128


class _Grams:
    """The smaller Gram matrix of each polyphase block of :func:`_blocks` on ``grid``.

    ``B B^H``, or (stride 1, more output than input channels) ``B^H B``, which has the same
    nonzero eigenvalues: ``G * F`` blocks ``p x p``, one per group and output frequency (for
    a real weight, one of each conjugate pair of frequencies), built without forming ``B``.

    With ``R_delta = sum_t w[t + tau] w[t]^H`` (the kernel's autocorrelation at the spatial
    lag ``delta = dilation * tau``), ``K(g) K(g)^H = sum_delta R_delta e^{-2 pi i g delta/n}``
    and summing over the ``s`` aliases ``g = f + j m`` keeps the lags that are multiples of
    the stride: ``B B^H(f) = sum_{s | delta} R_delta e^{-2 pi i f (delta/s) / m}``. The lags
    are one small convolution of the weight with itself; the blocks, a direct DFT of the few
    lags per dimension as one matrix product (far cheaper than transforming mostly-zero
    grids). ``B^H B = K^H K`` is ``K K^H`` of the adjoint kernel: channels swapped, taps
    reversed and conjugated.
    """

    def __init__(self, weight: torch.Tensor, geom: ConvGeometry,
                 grid: tuple[int, ...]) -> None:  # fmt: skip
        g = geom.groups
        o, c = geom.out_channels // g, geom.in_channels // g
        #: the blocks are ``B^H B``: their eigenvectors live on the input's channels
        self.input_side = c < o and all(s == 1 for s in geom.stride)
        self.real = not weight.is_complex()
        self.groups, self.size, self.grid = g, c if self.input_side else o, grid
        self.m = [n // s for n, s in zip(grid, geom.stride)]
        self.counts = [*self.m[:-1], self.m[-1] // 2 + 1 if self.real else self.m[-1]]
        self.freqs = math.prod(self.counts)
        self.count = g * self.freqs
        #: (G, L, a * b) and (L, ndim): the lags (in units of the stride), in that order
        self.taps, self.deltas = gram_lags(weight, geom, input_side=self.input_side)
        #: ``E``: every computed block is within ``E`` (2-norm) of the exact one
        self.error = self._budget(weight, geom)
        #: the complex128 Cholesky tests' shift, relative to ``target**2``
        self.shift = _cholesky_shift(self.size)
        self._full: torch.Tensor | None = None
        #: the block found largest by the last :meth:`bound` that computed any (or -1)
        self.peak = -1

    def _budget(self, weight: torch.Tensor, geom: ConvGeometry) -> float:
        """``E``: a bound on ``||G^(f) - G(f)||_2`` for every block, as computed.

        Block ``f`` is ``G(f) = sum_l R_l phi_l`` over the ``L`` lags, ``p x p`` matrices
        ``R_l``, with ``phi_l = e^{i theta_l}`` and ``theta_l = -2 pi (f / m) . delta_l``.
        What is computed, and how far from exact:

        - the lags ``R^_l``: entry ``[a, b]`` within ``c ||w_a|| ||w_b||`` of exact, with
          ``c`` from :func:`convop._fourier.lags.lags_error` and ``w_a`` every tap of channel ``a``
          on the lags' side;
        - the phases ``phi^_l``: ``theta`` in float64 (``f / m`` rounded, a ``D``-term dot
          product with ``delta``, the rounded factor ``2 pi``: ``gamma_{D+3}`` relative, and
          ``|f_i / m_i| < 1``), then ``cos`` and ``sin`` within an ulp (``2u``) each, so
          ``|phi^_l - phi_l| <= e = 3u + gamma_{D+3} 2 pi max_l ||delta_l||_1``;
        - the sum over lags, a matrix product of ``L`` terms per entry: within
          ``g = gamma_{4L+11}`` of ``sum_l |R^_l| |phi^_l|`` (:func:`_terms`).

        Every lag entry is an inner product of shifted taps, so ``|R_l[a, b]| <= n_a n_b``
        with ``n_a = ||w_a||_2`` (Cauchy-Schwarz); hence, entry by entry,

            |G^ - G| <= sum_l |R^_l - R_l| |phi^_l| + |R_l| |phi^_l - phi_l|
                        + g |R^_l| |phi^_l|
                     <= L (c (1 + e) + e + g (1 + c)(1 + e)) n_a n_b =: kappa n_a n_b,

        and ``||G^ - G||_2 <= || |G^ - G| ||_2 <= kappa ||n n^T||_2 = kappa ||w_g||_F^2``
        (a non-negative matrix bounds the norm of any it bounds entrywise), the largest over
        the groups ``g``. It is absolute: relative to the taps' sizes, not to the blocks',
        which can be far smaller where taps cancel. The float32 blocks of
        :meth:`_single_failures` err by :meth:`_single_error` more.
        """
        c = lags_error(geom, input_side=self.input_side, dtype=weight.dtype)
        lags, dims = self.deltas.shape
        reach = float(self.deltas.abs().sum(1).max()) if lags else 0.0
        e = 3 * _U + _gamma(dims + 3) * 2 * math.pi * reach
        g = _gamma(_terms(lags, True))
        kappa = lags * (c * (1 + e) + e + g * (1 + c) * (1 + e))
        w = weight.detach().to(torch.complex128 if weight.is_complex() else torch.float64)
        squares = w.abs().square().reshape(self.groups, -1).sum(1)  # ||w_g||_F^2
        return kappa * float(squares.max()) * _BUDGET_SLACK

    def _phases(self, freqs: torch.Tensor) -> torch.Tensor:
        """``-2 pi f . delta / m`` for frequency indices ``freqs`` (n,): (n, L)."""
        f = torch.stack(torch.unravel_index(freqs, self.counts), -1).to(torch.float64)
        scale = torch.tensor(self.m, dtype=torch.float64, device=f.device)
        return (-2 * math.pi) * (f / scale) @ self.deltas.T

    def _dft(self, freqs: torch.Tensor | None = None) -> torch.Tensor:
        """``e^{i phase}`` for frequency indices ``freqs`` (all by default): (n, L)."""
        if freqs is None:
            freqs = torch.arange(self.freqs, device=self.taps.device)
        phase = self._phases(freqs)
        return torch.polar(torch.ones_like(phase), phase)

    def _check_memory(self, per_entry: int) -> None:
        check_memory(self.count * self.size**2 * per_entry, None,
                     f"the kernel's per-frequency Gram matrices on a {self.grid} grid",
                     self.taps.device, hint="use a smaller input_shape")  # fmt: skip

    def exact(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """The blocks (all, or those at ``index`` of ``G * F``) in complex128: (B, p, p)."""
        p, taps = self.size, self.taps
        taps = taps if taps.is_complex() else taps.to(torch.complex128)
        if index is None:
            if self._full is None:
                self._check_memory(48)
                self._full = (self._dft() @ taps).reshape(-1, p, p)
            return self._full
        if self._full is not None:
            return self._full[index]
        group, freq = index // self.freqs, index % self.freqs
        out = torch.empty((index.numel(), p * p), dtype=taps.dtype, device=taps.device)
        for g in torch.unique(group).tolist():
            rows = (group == g).nonzero().reshape(-1)
            if self.real:  # two real products: the lags are real
                phase = self._phases(freq[rows])
                lags = self.taps[g]
                out[rows] = torch.complex(phase.cos() @ lags, phase.sin() @ lags)
            else:
                out[rows] = self._dft(freq[rows]) @ taps[g]
        return out.reshape(-1, p, p)

    def _largest(self, index: torch.Tensor) -> tuple[float, int]:
        """``(lambda_max, i)``: the largest eigenvalue over the blocks at ``index``, exactly.

        The eigenvalues of a few (those of largest Frobenius norm) set a level; a Cholesky
        test at that level clears the blocks below it, and only the rest get theirs computed,
        until none is left above.
        """
        blocks = self.exact(index)
        known = torch.zeros(index.numel(), dtype=torch.bool, device=index.device)
        order = torch.argsort(torch.linalg.matrix_norm(blocks), descending=True)
        order = order[: 8 if index.numel() > 64 else None]  # a few: all of them outright
        best, where = -math.inf, -1
        while order.numel():
            values = _batched(torch.linalg.eigvalsh, blocks[order])[:, -1]
            known[order] = True
            top = int(values.argmax())
            if float(values[top]) > best:
                best, where = float(values[top]), int(index[order[top]])
            rest = (~known).nonzero().reshape(-1)
            if not rest.numel() or best <= 0:
                order = rest
                continue
            shifted = blocks[rest].neg()
            level = best * (1 + 2 * self.shift)
            shifted.diagonal(dim1=-2, dim2=-1).add_(level * (1 - self.shift))
            info = _batched(lambda a: torch.linalg.cholesky_ex(a)[1], shifted)
            known[rest[info == 0]] = True  # at most ``level``: within round-off of ``best``
            best = max(best, level) if bool((info == 0).any()) else best
            order = rest[info != 0]
        return best, where

    def _pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """``(R_0, R_delta + R_delta^T, R_delta - R_delta^T, centre)`` over ``delta > 0``.

        For a real weight, ``R_{-delta} = R_delta^T``; ``taps`` holds lag ``L - 1 - l``'s
        mirror at ``l``, so ``delta > 0`` (lexicographically) are the lags after the centre.
        """
        taps = self.taps  # (G, L, a * b)
        centre = (taps.shape[1] - 1) // 2
        upper = taps[:, centre + 1 :]
        mirror = taps[:, :centre].flip(1)
        return taps[:, centre], upper + mirror, upper - mirror, centre

    def _single_error(self, level: float) -> float:
        """A bound on the 2-norm error of the float32 blocks, at levels up to ``level``.

        Each entry is an ``n``-term dot product of coefficients ``|c_j| <= 1`` with lags
        ``S_j``, so it errs by at most ``gamma_{n+2} sum_j |S_j|`` with the rounding of both
        to single precision (Higham, *Accuracy and Stability of Numerical Algorithms*, 3.1);
        and ``||E||_2 <= ||E||_F``. Doubled for the float64 sums behind it.
        """
        zero, sym, anti, _ = self._pairs()
        eye = torch.eye(self.size, dtype=zero.dtype, device=zero.device).reshape(-1)
        spread = level * eye + zero.abs() + sym.abs().sum(1) + anti.abs().sum(1)
        terms = 3 + sym.shape[1] + anti.shape[1]
        u = 2.0**-24
        gamma = terms * u / (1 - terms * u)
        return 2 * gamma * float(torch.linalg.vector_norm(spread, dim=-1).max())

    def _single_failures(self, level: float) -> torch.Tensor:
        """Indices of the blocks for which ``level I - G`` (complex64) has no Cholesky factor.

        For a real weight, a chunk of blocks at a time, each formed by one real matrix
        product that writes the real and imaginary parts in place
        (``Re G = R_0 + sum (R_delta + R_delta^T) cos``,
        ``Im G = sum (R_delta - R_delta^T) sin`` over half the lags) and tested while it is
        in cache; chunks run on torch's threads.
        """
        zero, sym, anti, centre = self._pairs()
        p, half, device = self.size, sym.shape[1], zero.device
        eye = torch.eye(p, dtype=zero.dtype, device=device).reshape(-1)
        phase = self._phases(torch.arange(self.freqs, device=device))[:, centre + 1 :]
        ones = torch.ones((self.freqs, 1), dtype=phase.dtype, device=device)
        coef = torch.cat([ones, phase.cos(), phase.sin()], 1).to(torch.float32)
        stacked = zero.new_zeros((self.groups, 1 + 2 * half, p * p, 2))  # (real, imaginary)
        stacked[:, 0, :, 0] = level * eye - zero
        stacked[:, 1 : 1 + half, :, 0] = -sym
        stacked[:, 1 + half :, :, 1] = -anti
        stacked = stacked.reshape(self.groups, 1 + 2 * half, -1).to(torch.float32)
        chunk = max(1, 2**21 // (8 * p * p))  # about 2 MiB of blocks
        tasks = [(g, start) for g in range(self.groups) for start in range(0, self.freqs, chunk)]

        def test(task: tuple[int, int]) -> torch.Tensor:
            g, start = task
            out = coef[start : start + chunk] @ stacked[g]  # (n, a * b * 2)
            info = torch.linalg.cholesky_ex(torch.view_as_complex(out.reshape(-1, p, p, 2)))[1]
            return (info != 0).nonzero().reshape(-1) + g * self.freqs + start

        return torch.cat(_threaded(test, tasks))

    def norms(self) -> torch.Tensor:
        """The blocks' Frobenius norms: (G * F,).

        ``||G(f)||_F^2 = phi^T H conj(phi)`` with ``H`` the inner products of the lags and
        ``phi`` the DFT row of ``f``: no block formed.
        """
        taps = self.taps.to(torch.complex128)
        inner = taps @ taps.mH  # (G, L, L)
        dft = self._dft()  # (F, L)
        squares = ((dft @ inner) * dft.conj()).sum(-1).real  # (G, F)
        return squares.clamp(min=0).reshape(-1).sqrt()

    def top(self, candidates: int = 128, steps: int = 4) -> tuple[float, int, torch.Tensor]:
        """``(lambda, index, u)``: the top eigenpair of the largest block among candidates.

        A cheap guess at where the spectrum peaks, for a start vector (nothing is certified
        by it): the blocks of largest Frobenius norm, ranked by a few batched power
        iterations; the leading four get their exact top eigenpair.
        """
        index = torch.topk(self.norms(), min(candidates, self.count)).indices
        if self.real and self.groups == 1:  # single precision is plenty to rank them
            phase = self._phases(index).to(torch.float32)
            lags = self.taps[0].to(torch.float32)
            rough = torch.complex(phase.cos() @ lags, phase.sin() @ lags)
            rough = rough.reshape(-1, self.size, self.size)
        else:
            rough = self.exact(index).to(torch.complex64)
        v = rough.sum(-1, keepdim=True) + 1  # (B, p, 1): a start that no block annihilates
        for _ in range(steps):
            v = rough @ v
            v = v / torch.linalg.vector_norm(v, dim=1, keepdim=True).clamp(min=1e-30)
        quotients = (v.conj() * (rough @ v)).sum((1, 2)).real
        lead = torch.topk(quotients, min(4, index.numel())).indices
        values, vectors = torch.linalg.eigh(self.exact(index[lead]))
        best = int(values[:, -1].argmax())
        return float(values[best, -1]), int(index[lead[best]]), vectors[best, :, -1]

    def frequency(self, index: int) -> tuple[int, list[int], list[int]]:
        """``(group, f, m)``: the group and frequency of block ``index`` on the grid ``m``."""
        group, freq = divmod(index, self.freqs)
        f = [int(i) for i in torch.unravel_index(torch.tensor(freq), self.counts)]
        return group, f, self.m

    def top_eigenvalue(self) -> float:
        """The largest eigenvalue over the computed blocks (within :attr:`error` of exact)."""
        return float(_batched(torch.linalg.eigvalsh, self.exact())[:, -1].max())

    def bound(self, target: float | None, *, slack: float = 0.0) -> float:
        """An upper bound on ``sqrt(lambda_max)`` over the exact blocks.

        Exact where it matters: a block for which ``level I - G^`` has a Cholesky factor,
        with ``level`` below ``target**2`` by the factorisation's backward error and by the
        computed blocks' error :attr:`error` (and, in single precision, by the float32
        blocks' own), is at most ``target`` (cheap); the others are computed, and their
        largest eigenvalue, raised by :attr:`error`, bounds theirs. Where ``slack`` (the
        relative room between the target and the bound really needed) allows, the blocks
        are formed and tested in single precision. LAPACK's relative error is left to
        :data:`MARGIN`, which the callers apply.
        """
        if target is not None and target > 0:
            level = target**2 * (1 - _CHOLESKY_SHIFT[torch.complex64])
            single = self.real and self.size <= _SINGLE_LIMIT and slack > 0
            if single:
                error = self._single_error(level) + self.error
                single = 4 * (_CHOLESKY_SHIFT[torch.complex64] + error / target**2) <= slack
            if single:  # the level lowered by the float32 blocks' error and the lags'
                failed = self._single_failures(level - error)
            else:
                level = target**2 * (1 - self.shift) - self.error
                shifted = self.exact().neg()
                shifted.diagonal(dim1=-2, dim2=-1).add_(level)
                info = _batched(lambda a: torch.linalg.cholesky_ex(a)[1], shifted)
                del shifted
                failed = (info != 0).nonzero().reshape(-1)
            if failed.numel() == 0:
                return target
            top, self.peak = self._largest(failed)
            return max(target, math.sqrt(max(top, 0.0) + self.error))
        return math.sqrt(max(self.top_eigenvalue(), 0.0) + self.error)


# --------------------------------------------------------------------------- upper bounds
def _copies(geom: ConvGeometry, dims: tuple[int, ...] | None = None) -> int:
    """The most copies padding makes of one input sample (along ``dims``; all by default)."""
    if geom.padding_mode == "zeros":
        return 1
    most = 1
    for i in range(geom.ndim) if dims is None else dims:
        n, (lo, hi) = geom.input_size[i], geom.padding[i]
        copies = torch.bincount(source_index(n, lo, hi, geom.padding_mode), minlength=n)
        most *= int(copies.max())
    return most


def _pad_norm(geom: ConvGeometry, dims: tuple[int, ...] | None = None) -> float:
    """``||pad||_2``: the square root of the most copies padding makes of one sample."""
    return math.sqrt(_copies(geom, dims))


def _embedding_grid(geom: ConvGeometry) -> tuple[int, ...]:
    """The smallest grid (a multiple of the stride) on which ``geom`` is part of a circulant.

    The convolution reads padded samples ``-lo .. (m - 1) s + d (k - 1) - lo`` of each input
    dimension. Other padding modes copy samples into the halo, so their padded input must fit
    the grid whole; zero padding only needs the samples read outside the input to land, once
    wrapped around, where the embedded input is zero: a grid of ``max(n + lo, reach + 1)``
    samples. The bound is tightest on the smallest grid (a coarser sampling of the kernel's
    frequency response).
    """
    sizes = []
    for n, (lo, hi), m, k, s, d in zip(geom.input_size, geom.padding, geom.output_size,
                                        geom.kernel_size, geom.stride, geom.dilation):  # fmt: skip
        reach = (m - 1) * s + d * (k - 1)  # the last padded sample read, counted from -lo
        size = max(n + lo, reach - lo + 1, n) if geom.padding_mode == "zeros" else n + lo + hi
        sizes.append(-(-size // s) * s)
    return tuple(sizes)


def _factor_norm(u: torch.Tensor, conv: ConvGeometry, dim: int,
                 kept: list) -> tuple[float, float, float]:  # fmt: skip
    """``(lower, estimate, upper)``: the 2-norm of the 1-D convolution by ``u`` along ``dim``.

    The explicit ``n x m`` matrix ``A^T`` is formed by one product of the identity, then its
    smaller Gram matrix and that's top eigenvalue. Each entry of the matrix is a sum of the
    (at most ``k``) taps padding folds onto it, so it errs by ``gamma_k`` times the sum of
    their absolute values: ``|dA| <= gamma_k |W|`` with ``|W|`` the matrix of ``|u|``, and
    ``|| |W| ||_2 <= y = ||u||_1 ||pad||_2`` (Young). The Gram matrix, inner products of
    length ``j``, then errs by ``gamma_j |A|^H |A|`` more, so in all by at most
    ``(2 gamma_k + gamma_k^2 + gamma_j (1 + gamma_k)^2) y^2`` in the 2-norm
    (:func:`_from_square` turns that into the bounds). Absolute: relative to ``||u||_1``,
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
    pad = _pad_norm(conv, (dim,))
    size = float(unit.abs().sum()) * pad * _BUDGET_SLACK  # ||u||_1 ||pad||_2 >= || |W| ||_2
    widen = 4 * _U * size if u.is_complex() else 0.0  # a real u's phase is +-1: exact
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
    entries = _gamma(_terms(u.numel(), u.is_complex()))
    products = _gamma(_terms(inner, u.is_complex()))
    error = (2 * entries + entries**2 + products * (1 + entries) ** 2) * size**2
    bounds = _from_square(float(torch.linalg.eigvalsh(gram)[-1]), error)
    kept.append((key, unit, bounds))
    return max(bounds.lower - widen, 0.0), bounds.estimate, bounds.upper + widen


def _rank_one(w: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
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


def _separable_bounds(weight: torch.Tensor,
                      conv: ConvGeometry) -> tuple[float, float, float] | None:  # fmt: skip
    """``(lower, estimate, upper)`` from the Kronecker structure, for one channel per group.

    Per group, ``w = s u_1 (x) .. (x) u_D + r``, exactly, for the computed ``s`` and ``u_i``
    and ``r`` what they leave: ``||A(w)||`` is within ``||A(r)|| <= |r|_1 ||pad||`` (Young)
    of ``|s| prod_i ||A_i(u_i)||`` (triangle inequality both ways), and the operator is
    block diagonal over groups. The ``||A_i(u_i)||`` are bounded by :func:`_factor_norm`;
    ``|r|_1`` is that of the computed ``r^``, plus what rounding ``s u_1 (x) ..`` (``D``
    products) and the difference can hide: ``|r| <= (1 + 2u) |r^| + gamma_D |s| prod_i
    |u_i|``, entrywise. ``None`` when channels mix.
    """
    if conv.out_channels != conv.groups or conv.in_channels != conv.groups:
        return None
    if max(conv.input_size) > SEPARABLE_LIMIT:
        return None
    w = weight.detach().to(torch.complex128 if weight.is_complex() else torch.float64)
    pad = _pad_norm(conv)
    kept: list = []
    lower = estimate = upper = 0.0
    for kernel in w.reshape(conv.groups, *conv.kernel_size):
        if conv.ndim == 1:
            bounds = _factor_norm(kernel, conv, 0, kept)
            lower, estimate = max(lower, bounds[0]), max(estimate, bounds[1])
            upper = max(upper, bounds[2])
            continue
        s, us = _rank_one(kernel)
        scale = abs(complex(s))
        rest = float((kernel - s * _outer(us)).abs().sum())  # |r^|_1
        product = scale * math.prod(float(u.abs().sum()) for u in us)  # |s| prod_i |u_i|_1
        rest = (rest * (1 + _gamma(kernel.numel() + 4))
                + _gamma(_terms(conv.ndim + 1, w.is_complex())) * product)  # fmt: skip
        rest *= pad * _BUDGET_SLACK  # Young: ||A(r)|| <= this
        factors = [_factor_norm(u, conv, i, kept) for i, u in enumerate(us)]
        low, mid, high = (scale * math.prod(f[j] for f in factors) for j in range(3))
        lower, estimate = max(lower, low - rest), max(estimate, mid)
        upper = max(upper, high + rest)
    return max(lower, 0.0) * (1 - MARGIN), estimate, upper * (1 + MARGIN)


def _outer(us: list[torch.Tensor]) -> torch.Tensor:
    """``us[0] (x) us[1] (x) ..``, a d-way array."""
    out = us[0]
    for u in us[1:]:
        out = out[..., None] * u
    return out


# --------------------------------------------------------------------------- opnorm
def _abs_norm(weight: torch.Tensor, conv: ConvGeometry) -> float:
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
    return math.sqrt(rows * cols) * _pad_norm(conv) * _BUDGET_SLACK


def _fft_error(weight: torch.Tensor, geom: ConvGeometry, conv: ConvGeometry) -> float:
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
    - the mixing, ``gamma_{4q+11}`` (:func:`_terms`) times ``|K^_f| |Z^_f|``:
      ``g (a + 3 b sqrt(N) F)(1 + b) sqrt(N) ||z||``;
    - the inverse transform maps these to the result dividing by ``sqrt(N)`` (times
      ``sqrt 2 <= 2`` for a half spectrum), and errs by ``b`` of its result, at most
      ``a ||z||`` plus the errors above;
    - the adjoint folds the halo back, ``gamma_c`` (``c`` copies at most) of the sums.

    ``max_g ||pad|| ((e1 + e2)(1 + gamma_c) + gamma_c a)`` in all, with ``e1`` the first
    three (through the inverse) and ``e2`` the last transform's.
    """
    grid = math.prod(_fft.frame(geom).sizes)
    b = 7 * _U * (math.log2(max(grid, 2)) + 2 * geom.ndim)
    root = math.sqrt(grid)
    g = conv.groups
    q = max(conv.out_channels, conv.in_channels) // g
    mix = _gamma(_terms(q, True))
    fold = _gamma(_copies(conv))
    w = weight.detach().reshape(g, -1)
    worst = 0.0
    for a, f in zip(w.abs().sum(1).tolist(), torch.linalg.vector_norm(w, dim=1).tolist()):
        kernel = 3 * b * root * f
        e1 = 2 * (a * b + kernel * (1 + b) + mix * (a + kernel) * (1 + b))
        e2 = b * (a + e1)
        worst = max(worst, (e1 + e2) * (1 + fold) + fold * a)
    return worst * _pad_norm(conv) * _BUDGET_SLACK


class _Rounding(NamedTuple):
    """What the float64 products of one operator ``A`` (weight at unit scale) can err by.

    ``gamma``: a direct product (a sum of at most ``n`` products per output sample, then, for
    the adjoint, of the halo copies folded back) errs entrywise by ``gamma_n`` times the
    product of ``|A|``'s bound ``|C| P`` with ``|x|``, hence normwise by ``gamma Y``;
    ``normwise``: a bound on ``||fl(A x) - A x|| / ||x||`` for either direction and either
    method the operator may take; ``fft``: whether products may run by FFT, for which only
    the normwise bound holds. ``abs_norm``: ``Y >= || |A| ||_2`` (:func:`_abs_norm`).
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


def _rounding(op: ConvOperator, conv: ConvGeometry) -> _Rounding:
    """The :class:`_Rounding` of the float64 products of ``op`` (``conv`` its convolution)."""
    w, geom = op.weight, op.geometry
    g = conv.groups
    n = max(conv.out_channels, conv.in_channels) // g * math.prod(conv.kernel_size)
    gamma = _gamma(_terms(n + _copies(conv), w.is_complex()))
    y = _abs_norm(w, conv)
    fft = op.method == "fft"
    normwise = max(gamma * y, _fft_error(w, geom, conv) if fft else 0.0)
    return _Rounding(y, gamma, normwise, fft)


def _from_square(top: float, error: float) -> OpNorm:
    """Bounds on ``sqrt(lambda)`` from ``top``, the computed top eigenvalue of a matrix.

    ``lambda`` is the top eigenvalue of a Hermitian matrix within ``error`` (2-norm) of the
    one whose top eigenvalue LAPACK computed as ``top``. Weyl: ``|lambda - top| <= error``
    plus LAPACK's own error, relative to the computed matrix's norm (at most
    ``top + error``) and left to :data:`MARGIN`.
    """
    top_ = max(top, 0.0)
    upper = math.sqrt(top_ + error) * (1 + MARGIN)
    lower = math.sqrt(max(top * (1 - MARGIN) - error * (1 + MARGIN), 0.0)) * (1 - MARGIN)
    return OpNorm(min(max(math.sqrt(top_), lower), upper), lower, upper)


def _dense_norm(op: ConvOperator, rounding: _Rounding) -> OpNorm:
    """Bounds on the 2-norm from the smaller Gram matrix ``A^H A`` or ``A A^H``.

    Exact but for round-off (:meth:`_Rounding.gram`). Formed a batch of unit vectors at a
    time (products, never the whole matrix at once).
    """
    rows, cols = op.shape
    w = op.weight
    output_side = rows < cols
    size, shape = (rows, op.output_shape) if output_side else (cols, op.input_shape)
    first, second = (op.apply_adjoint, op.apply) if output_side else (op.apply, op.apply_adjoint)
    batch = max(1, 2**22 // max(rows, cols))
    gram = torch.empty((size, size), dtype=w.dtype, device=w.device)
    for start in range(0, size, batch):
        stop = min(size, start + batch)
        units = torch.zeros((stop - start, size), dtype=w.dtype, device=w.device)
        units[torch.arange(stop - start), torch.arange(start, stop)] = 1
        gram[start:stop] = second(first(units.reshape(-1, *shape))).reshape(-1, size)
    # row j is (M e_j)^T: the transpose of the Hermitian M, with the same eigenvalues
    return _from_square(float(torch.linalg.eigvalsh(gram)[-1]), rounding.gram(size))


def check_rtol(rtol: object) -> float:
    """``rtol`` as a float, or a ``TypeError``/``ValueError`` naming it."""
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)):
        raise TypeError(f"rtol must be a float, got {type(rtol).__name__}")
    if not (math.isfinite(rtol) and rtol > 0):
        raise ValueError(f"rtol must be a positive finite float, got {rtol!r}")
    return float(rtol)


class _Side:
    """``M = A^H A`` (input side) or ``A A^H`` (output side), whichever is smaller.

    Products in the working precision (``work``) and in float64 (``precise``).
    """

    def __init__(self, work: ConvOperator, precise: ConvOperator) -> None:
        rows, cols = work.shape
        self.output_side = rows < cols
        self.work, self.precise = work, precise
        self.shape = work.output_shape if self.output_side else work.input_shape
        self.size = min(rows, cols)

    def _pair(self, op: ConvOperator):
        if self.output_side:
            return op.apply_adjoint, op.apply
        return op.apply, op.apply_adjoint

    def gram(self, v: torch.Tensor) -> torch.Tensor:
        """``M v`` in the working precision, ``v`` flat."""
        first, second = self._pair(self.work)
        return second(first(v.reshape(self.shape))).reshape(-1)

    def rayleigh(self, v: torch.Tensor) -> tuple[float, torch.Tensor]:
        """``(||B v|| / ||v||, B v)`` in float64, ``B`` = A or A^H: a lower bound on ||A||."""
        first, _ = self._pair(self.precise)
        bv = first(v.reshape(self.shape))
        return float(torch.linalg.vector_norm(bv) / torch.linalg.vector_norm(v)), bv

    def collatz(self, v: torch.Tensor, rounding: _Rounding) -> float:
        """``sqrt(max_i (M v)_i / v_i)`` for positive ``v``, from float64 products.

        An upper bound on ||A|| when A's matrix is non-negative (Collatz-Wielandt), with
        the products' round-off (:meth:`_Rounding.collatz`).
        """
        first, second = self._pair(self.precise)
        mv = second(first(v.reshape(self.shape))).reshape(-1)
        return math.sqrt(max(rounding.collatz(mv, v), 0.0))


def opnorm(op: ConvOperator, *, rtol: float = 1e-3, maxiter: int = MAXITER) -> OpNorm:
    """Certified bounds on the operator 2-norm (largest singular value) of ``op``.

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
    read the input: pruned layers) gives ``(0.0, 0.0, 0.0)``.

    How (proofs in ``docs/conventions.md``):

    - circulant convolutions (see :func:`svdvals`): the exact largest singular value;
    - small operators (at most ``convop.spectral.DENSE_LIMIT`` matrix entries): the exact
      norm of the explicit matrix;
    - otherwise the lower bound is the Rayleigh quotient ``||A y|| / ||y||`` of the Lanczos
      vector ``y`` of ``A^H A`` (or ``A A^H``, whichever is smaller), started, for kernels
      of mixed sign, from the plane wave of the circulant embedding's largest block (often
      within ``rtol`` before any step); the upper bound is the least of: the circulant
      embedding of the padded convolution (times ``||pad||_2`` for reflect, replicate and
      circular padding; its blocks tested in single precision where ``rtol >= 1e-2``
      allows), the exact norms of the one-dimensional factors of a separable kernel (one
      channel per group), and the Collatz-Wielandt bound of the Lanczos vector for
      non-negative kernels;
    - where those bounds stay more than ``rtol`` apart and the operator has at most
      ``convop.spectral.GRAM_LIMIT`` entries and at most 2048 rows or columns: the exact
      norm of its smaller Gram matrix, formed by products.

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
    conv, exact = _as_conv(geom)
    unit, shift = _unit_weight(weight, geom, conv)
    if unit is None:  # every tap the operator reads is zero: so is the operator
        return OpNorm(0.0, 0.0, 0.0)
    # the same operator divided by 2**shift (exactly), its largest tap in [1/2, 1): nothing
    # squared below overflows or underflows, and products in float32 stay in range. Products
    # are evaluated the way ``op`` does now (a fixed method: an 'auto' operator made afresh
    # would time both methods on its first products).
    precise = ConvOperator(unit, geom, method=op.method)
    detail = None
    if exact and _circulant_reason(conv) is None:
        grams = _Grams(unit, conv, conv.input_size)
        result = _from_square(grams.top_eigenvalue(), grams.error)
    elif math.prod(op.shape) <= DENSE_LIMIT and min(op.shape) <= 2048:
        result = _dense_norm(precise, _rounding(precise, conv))
    else:
        work = ConvOperator(unit.to(weight.dtype), geom, method=precise.method)
        result, detail = _bracket(work, conv, precise, rtol, maxiter, shift)
    bounds = _scaled_back(result, shift)
    met = result.upper <= (1 + rtol) * result.lower
    if detail is None and not met:  # an exact path: round-off alone keeps them apart
        if result.upper <= (1 + 8 * MARGIN) * result.lower:
            detail = f"because rtol is below the margin for round-off (MARGIN={MARGIN:g})"
        else:
            detail = _round_off(result.upper - result.lower, _abs_norm(unit, conv), shift)
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


def _read_taps(geom: ConvGeometry, conv: ConvGeometry) -> torch.Tensor | None:
    """Which taps the operator of ``geom`` reads an input sample with (bool, ``(*k)``).

    ``None`` when all are: every padding but zeros copies input samples into the whole halo.
    With zero padding, tap ``t`` of dimension ``i`` reads input sample ``p s + t d - lo`` at
    output ``p``; it reads none where that misses ``0 .. n - 1`` for every output kept (a
    transposed convolution keeps the first ``input_size`` outputs of ``conv``). The other
    taps are the operator's matrix entries, so the largest of them bounds its norm below.
    """
    if conv.padding_mode != "zeros":
        return None
    outputs = geom.input_size if geom.transposed else conv.output_size
    masks = []
    for n, m, k, s, d, (lo, _) in zip(conv.input_size, outputs, conv.kernel_size, conv.stride,
                                      conv.dilation, conv.padding):  # fmt: skip
        first = [max(0, -(-(lo - t * d) // s)) for t in range(k)]  # first output in range
        masks.append(torch.tensor([p < m and p * s + t * d - lo < n
                                   for t, p in enumerate(first)]))  # fmt: skip
    if all(bool(mask.all()) for mask in masks):
        return None
    return _outer(masks)


def _unit_weight(weight: torch.Tensor, geom: ConvGeometry,
                 conv: ConvGeometry) -> tuple[torch.Tensor | None, int]:  # fmt: skip
    """``(u, e)``: the taps the operator reads, ``weight = u * 2**e`` there, ``u`` in float64.

    ``e`` puts the largest real or imaginary part of ``u`` in ``[1/2, 1)``; multiplying by a
    power of two is exact (short of the subnormal range, where only parts below
    ``2**-1022`` of the largest land), and the norm of the operator of ``u`` is at least
    ``1/2`` when its padding is zeros. Taps no input sample meets are zeroed: the operator
    is the same. ``(None, 0)`` when those read are all zero. A new tensor, never ``weight``.
    """
    precise = torch.complex128 if weight.is_complex() else torch.float64
    read = _read_taps(geom, conv)
    u = weight.to(precise, copy=True)
    if read is not None:
        u.mul_(read.to(device=u.device))
    parts = torch.view_as_real(u) if u.is_complex() else u
    top = float(parts.abs().max())
    if top == 0:
        return None, 0
    shift = math.frexp(top)[1]
    return _ldexp_(u, -shift), shift


def _ldexp_(x: torch.Tensor, shift: int) -> torch.Tensor:
    """``x *= 2**shift`` in place (exact, short of the subnormal range and of overflow)."""
    while shift:  # 2.0**shift overflows beyond 1023: in steps
        step = max(-1000, min(1000, shift))
        x.mul_(2.0**step)
        shift -= step
    return x


def _scaled_back(result: OpNorm, shift: int) -> OpNorm:
    """``result`` times ``2**shift``, the bounds rounded outward; ``ValueError`` on overflow.

    A power of two scales exactly, except into the subnormal range, where the lower bound
    is rounded down and the upper bound up.
    """
    try:
        upper = _ldexp_outward(result.upper, shift, up=True)
    except OverflowError:
        upper = math.inf
    if not math.isfinite(upper):
        log2 = math.log2(max(result.estimate, result.lower, 1e-300)) + shift
        raise ValueError(
            f"opnorm: the operator's norm is about 2**{log2:.1f}, too close to or beyond "
            f"float64's largest number (about 2**1024) for a finite certified upper bound; "
            f"scale the weight down (the norm scales with it)"
        )
    lower = _ldexp_outward(result.lower, shift, up=False)
    estimate = math.ldexp(result.estimate, shift)
    return OpNorm(min(max(estimate, lower), upper), lower, upper)


def _ldexp_outward(x: float, shift: int, *, up: bool) -> float:
    """``x * 2**shift`` rounded up (``up``) or down; ``OverflowError`` beyond float64."""
    y = math.ldexp(x, shift)
    back = math.ldexp(y, -shift)  # exact: only scaling into the subnormal range rounds
    if up and back < x:
        return math.nextafter(y, math.inf)
    if not up and back > x:
        return math.nextafter(y, 0.0)
    return y


def _round_off(doubt: float, abs_norm: float, shift: int) -> str:
    """Why bounds stay apart where round-off, not iterations, sets their distance.

    ``doubt`` and ``abs_norm`` (``Y``, :func:`_abs_norm`) at the unit scale, ``2**shift``
    times smaller than the operator's.
    """
    return (
        f"because round-off alone leaves {_scaled_text(doubt, shift)} of doubt: the norm is "
        f"small next to the taps (their absolute values make an operator of norm up to "
        f"{_scaled_text(abs_norm, shift)}), and sums of taps that cancel err relative to the "
        f"taps' sizes; the bounds cannot be closer in float64"
    )


def _scaled_text(x: float, shift: int) -> str:
    """``x * 2**shift`` for a message, as ``2**e`` beyond float64's range."""
    try:
        return f"{math.ldexp(x, shift):.3g}"
    except OverflowError:
        return f"2**{math.log2(x) + shift:.1f}"


class _Bracket:
    """The bounds :func:`opnorm` tightens for a non-circulant operator, and how."""

    def __init__(self, work: ConvOperator, conv: ConvGeometry, precise: ConvOperator,
                 rtol: float) -> None:  # fmt: skip
        #: the working precision's weight (Lanczos) and the float64 one (every bound)
        self.weight, self.precise = work.weight, precise.weight
        self.conv, self.rtol = conv, rtol
        self.side = _Side(work, precise)
        #: what the float64 products err by, and ``Y`` (:func:`_rounding`)
        self.rounding = _rounding(precise, conv)
        self.lower, self.upper, self.how = 0.0, math.inf, "none"
        self.estimate = 0.0
        self.steps = 0
        self.nonneg = not self.precise.is_complex() and bool((self.precise >= 0).all())
        self.pad_norm = _pad_norm(conv)
        self.embedded = False
        self.transposed, self.equal = work.geometry.transposed, _as_conv(work.geometry)[1]
        self._grams: _Grams | None = None
        separable = _separable_bounds(self.precise, conv)
        if separable is not None:
            self.offer_upper(separable[2], "separable kernel")
            if self.equal:  # a bound below too only if the maps are equal
                self.lower = separable[0]
                self.estimate = separable[1]

    @property
    def reached(self) -> bool:
        return self.upper <= (1 + self.rtol) * self.lower

    def offer_upper(self, bound: float, how: str) -> None:
        if bound < self.upper:
            self.upper, self.how = bound, how

    @property
    def floor(self) -> float:
        """The absolute doubt round-off leaves in the bounds, however far they are tightened.

        The products' error (the lower bound's) and, where the embedding's blocks were
        formed, what their error ``E`` adds to its upper bound near the norm ``s``:
        ``sqrt(s^2 + E) - s`` (``sqrt(E)`` for a norm near 0, ``E / 2s`` for a larger one).
        """
        blocks = 0.0
        if self._grams is not None:
            s, error = max(self.lower, self.estimate) / self.pad_norm, self._grams.error
            blocks = error / (math.sqrt(s * s + error) + s) * self.pad_norm if error else 0.0
        return max(self.rounding.normwise, blocks)

    def offer_vector(self, y: torch.Tensor, floor: float = 1e-3) -> None:
        """Certify the Rayleigh quotient of ``y``, and its Collatz-Wielandt bound.

        The quotient, less what the product's round-off can add to it
        (:attr:`_Rounding.normwise`: ``||A y|| >= ||fl(A y)|| - e ||y||``), is a lower bound;
        for a non-negative operator, the Collatz-Wielandt bound of ``y``'s positive part
        (raised to ``floor`` times its largest entry) is an upper bound.
        """
        y = y.to(self.side.precise.weight.dtype)
        quotient, _ = self.side.rayleigh(y)
        quotient = quotient * (1 - MARGIN) - self.rounding.normwise
        self.lower = max(self.lower, quotient)
        if self.nonneg and not self.reached:
            y = y if float(y.sum()) >= 0 else -y
            top = float(y.max())
            if top > 0:
                v = y.clamp(min=floor * top)
                bound = self.side.collatz(v, self.rounding) * (1 + MARGIN)
                self.offer_upper(bound, "Collatz-Wielandt")

    @property
    def grams(self) -> _Grams:
        """The Gram blocks of the circulant embedding (built once)."""
        if self._grams is None:
            self._grams = _Grams(self.precise, self.conv, _embedding_grid(self.conv))
        return self._grams

    def embedding(self) -> None:
        """The circulant embedding bound, tested at ``(1 + rtol)`` times the lower bound."""
        self.embedded = True
        target = (1 + self.rtol) * self.lower * (1 - 1e-6) / self.pad_norm
        bound = self.grams.bound(target, slack=self.rtol) * self.pad_norm
        self.offer_upper(bound * (1 + MARGIN), "circulant embedding")

    def warm_start(self) -> torch.Tensor | None:
        """A start vector near the top singular vector, or ``None``; sets :attr:`peak`.

        The embedding's block with the largest eigenvalue among a few candidates gives a
        frequency and channel vector; see :meth:`plane_wave`.
        """
        if self.transposed and not self.equal:
            return None
        try:
            value, index, u = self.grams.top()
        except MemoryError:
            return None
        self.peak = math.sqrt(max(value, 0.0)) * self.pad_norm
        return self.plane_wave(index, u)

    def plane_wave(self, index: int, u: torch.Tensor | None = None) -> torch.Tensor | None:
        """The plane wave of the embedding's block ``index`` on the side Lanczos works on.

        Block ``index`` has a frequency ``f`` and a top eigenvector ``u`` (over the channels
        of its group); ``e^{-2 pi i f . x / m} u`` (its real part for a real weight), tapered
        by a sine window to the operator's support, is nearly a top singular vector of the
        padded convolution when the block is the largest: its Rayleigh quotient falls short
        by ``O(1/n^2)``. ``None`` where it vanishes.
        """
        grams, conv = self.grams, self.conv
        if u is None:
            u = torch.linalg.eigh(grams.exact(torch.tensor([index])))[1][0, :, -1]
        top = int(u.abs().argmax())
        u = u * (u[top].abs() / u[top])  # the largest entry real: keep it in Re
        group, f, m = grams.frequency(index)
        start_in = grams.input_side  # the vector lives on the convolution's input, else output
        channels = conv.in_channels if start_in else conv.out_channels
        size = conv.input_size if start_in else conv.output_size
        wave = torch.ones((), dtype=torch.complex128, device=u.device)
        for n, fi, mi in zip(size, f, m):
            x = torch.arange(n, dtype=torch.float64, device=u.device)
            taper = torch.sin(math.pi * (x + 1) / (n + 1))
            wave = wave[..., None] * torch.polar(taper, -2 * math.pi * fi * x / mi)
        z = torch.zeros((channels, *size), dtype=torch.complex128, device=u.device)
        p = grams.size
        z[group * p : (group + 1) * p] = u.reshape(p, *([1] * len(size))) * wave
        z = (z if self.weight.is_complex() else z.real).to(self.weight.dtype)
        # the side Lanczos works on, in the convolution's terms (a transposed convolution
        # maps the convolution's output to its input)
        side_in = self.side.output_side == self.transposed
        if side_in != start_in:
            work = self.side.work
            forward = start_in != self.transposed  # conv input to output is the conv itself
            z = (work.apply if forward else work.apply_adjoint)(z)
        norm = float(torch.linalg.vector_norm(z))
        return z.reshape(-1) / norm if math.isfinite(norm) and norm > 0 else None

    def lanczos(self, steps: int, start: torch.Tensor | None = None) -> torch.Tensor:
        """Up to ``steps`` Lanczos steps on ``M``, fully reorthogonalised; the last Ritz vector.

        Stops early once the bounds meet ``rtol``, on an invariant subspace, or (for
        non-negative operators, which power iterations refine) once the estimate settles.
        """
        side, dtype, device = self.side, self.weight.dtype, self.weight.device
        check_memory((steps + 1) * side.size * self.weight.element_size(), None,
                     f"{steps + 1} Lanczos vectors of {side.size} samples", device,
                     hint="pass a smaller maxiter")  # fmt: skip
        if start is not None:
            pass
        elif self.nonneg:  # the Perron vector is non-negative: start near it
            start = torch.ones(side.size, dtype=dtype, device=device)
        else:
            gen = torch.Generator(device=device).manual_seed(0)
            start = torch.randn(side.size, generator=gen, dtype=dtype, device=device)
        basis = torch.empty((steps + 1, side.size), dtype=dtype, device=device)
        basis[0] = start / torch.linalg.vector_norm(start)
        alphas: list[float] = []
        betas: list[float] = []
        previous, y = None, basis[0]
        for j in range(steps):
            w = side.gram(basis[j])
            alphas.append(float(torch.vdot(basis[j], w).real))
            w = w - alphas[-1] * basis[j]  # the three-term recurrence, then
            if j:
                w = w - betas[-1] * basis[j - 1]
            q = basis[: j + 1]  # full reorthogonalisation, a second pass only where the
            before = float(torch.linalg.vector_norm(w))  # first cancelled much (Kahan)
            w = w - q.T @ (q.conj() @ w)
            beta = float(torch.linalg.vector_norm(w))
            if beta < 0.7 * before:
                w = w - q.T @ (q.conj() @ w)
                beta = float(torch.linalg.vector_norm(w))
            betas.append(beta)
            self.steps += 1
            done = beta <= 1e-12 * max(abs(a) for a in alphas)  # an invariant subspace
            if not done:
                basis[j + 1] = w / beta
            if not (done or j + 1 == steps or (j + 1) % 4 == 0):
                continue
            k = j + 1
            tri = np.diag(alphas) + np.diag(betas[: k - 1], 1) + np.diag(betas[: k - 1], -1)
            values, vectors = np.linalg.eigh(tri)
            self.estimate = math.sqrt(max(values[-1], 0.0))
            y = basis[:k].T @ torch.from_numpy(vectors[:, -1]).to(dtype=dtype, device=device)
            # settled enough to test the embedding at (1 + rtol) times it: blocks above that
            # target are then computed exactly, so an early test costs little
            stable = previous is not None and abs(self.estimate - previous) <= (
                self.rtol * self.estimate
            )
            previous = self.estimate
            promising = self.estimate * (1 + self.rtol) >= self.upper
            if self.nonneg or stable or done or promising or k == steps:
                self.offer_vector(y)  # float64 products: only where they can settle it
            if (
                stable
                and not self.embedded
                and not self.reached
                and (self.pad_norm <= 1 + self.rtol or self.upper == math.inf)
            ):
                self.embedding()  # at (1 + rtol) times the lower bound just certified
            if self.reached or done or (stable and self.nonneg):
                break
        return y

    def power(self, y: torch.Tensor, steps: int) -> None:
        """Power iterations from ``y``'s positive part, which they keep positive.

        They converge to the Perron vector entry by entry, which the Collatz-Wielandt bound
        needs, where Lanczos vectors converge in norm.
        """
        y = y if float(y.sum()) >= 0 else -y
        v = y.clamp(min=1e-3 * float(y.max())) if float(y.max()) > 0 else y.abs() + 1
        for j in range(steps):
            v = self.side.gram(v)
            v = v / torch.linalg.vector_norm(v)
            self.steps += 1
            if (j + 1) % 5 == 0 or j + 1 == steps:
                self.offer_vector(v, floor=1e-30)  # positive already: keep its entries
                if self.reached:
                    return


def _bracket(work: ConvOperator, conv: ConvGeometry, precise: ConvOperator, rtol: float,
             maxiter: int, shift: int) -> tuple[OpNorm, str | None]:  # fmt: skip
    """``(bounds, None)``, or ``(bounds, why)`` where they stay more than ``rtol`` apart.

    ``shift``: the operator is ``2**shift`` times ``precise`` (for the message).
    """
    b = _Bracket(work, conv, precise, rtol)
    start = None
    if not (b.reached or b.nonneg):  # the Perron vector is near the ones Lanczos starts from
        start = b.warm_start()
    if start is not None:
        b.offer_vector(start)
        b.estimate = max(b.estimate, b.lower)
        if b.pad_norm <= 1 + rtol:
            # passes, or computes the blocks above the target: the embedding's exact peak,
            # whose plane wave is then a better start
            b.embedding()
            if not b.reached and b.grams.peak >= 0:
                better = b.plane_wave(b.grams.peak)
                if better is not None:
                    start = better
                    b.offer_vector(start)
                    b.estimate = max(b.estimate, b.lower)
    if not b.reached:
        y = b.lanczos(min(maxiter, LANCZOS_STEPS), start)
        if b.nonneg and not b.reached and maxiter > b.steps:
            b.power(y, maxiter - b.steps)
    if not b.reached and (not b.embedded or b.upper == math.inf):
        b.embedding()
    rows, cols = work.shape
    if not b.reached and rows * cols <= GRAM_LIMIT and min(rows, cols) <= 2048:
        # the bounds stayed apart: the exact Gram matrix, a few thousand products
        return _dense_norm(precise, b.rounding), None
    detail = None
    if not b.reached:
        detail = f"after {b.steps} iterations (upper bound: {b.how})"
        if b.floor > rtol * max(b.lower, b.estimate) / 4:  # not for want of iterations
            detail += f", {_round_off(b.floor, b.rounding.abs_norm, shift)}"
        else:
            detail += "; pass a larger maxiter or rtol"
    return OpNorm(min(max(b.estimate, b.lower), b.upper), b.lower, b.upper), detail
