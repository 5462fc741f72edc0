"""Singular values and certified operator norms of convolution operators.

Three tools, from the exact to the bounded:

- :func:`svdvals`: every singular value of a circulant convolution (circular padding, or no
  padding with 1-sample kernels, stride 1 or a stride that divides the input size), exactly,
  from the per-frequency ``C_out x C_in`` matrices of the kernel's spectrum (Sedghi, Gupta &
  Long 2019; polyphase for strides).
- :func:`opnorm`: a bracket ``lower <= ||op||_2 <= upper`` for *every* operator, certified
  (round-off aside, with a margin for it), tightened until ``upper <= (1 + rtol) * lower``.
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
- *small operators*: the exact 2-norm of the explicit matrix.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import torch

from . import functional
from ._memory import check_memory
from .geometry import ConvGeometry
from .operator import ConvOperator
from .padding import source_index

#: Relative margin added to bounds computed in float64 (transforms, Gram matrices, Cholesky,
#: LAPACK's singular values and the products of a Rayleigh quotient all err by far less).
MARGIN = 1e-9
#: The longest input dimension whose 1-D factor matrices the separable bound forms.
SEPARABLE_LIMIT = 1024
#: Operators with at most this many rows times columns get the exact norm of their matrix.
DENSE_LIMIT = 2**21
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
        :func:`opnorm` there.

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
    blocks, counts = _blocks(op.weight, conv, conv.input_size, half=not op.weight.is_complex())
    values = _batched(torch.linalg.svdvals, blocks)  # (B, min(O, C*s))
    values = values.repeat_interleave(counts.to(torch.int64), dim=0).reshape(-1)
    return torch.sort(values, descending=True).values


def _output_grams(weight: torch.Tensor, geom: ConvGeometry,
                  grid: tuple[int, ...]) -> torch.Tensor:  # fmt: skip
    """``B(f) B(f)^H`` for the polyphase blocks ``B(f)`` of :func:`_blocks` on ``grid``.

    Without forming the blocks: ``(F, C_out/G, C_out/G)``, one per output frequency and group
    (for a real weight, one of each conjugate pair of frequencies).

    With ``R_delta = sum_t w[t + tau] w[t]^H`` (the kernel's autocorrelation at the spatial
    lag ``delta = dilation * tau``), ``K(g) K(g)^H = sum_delta R_delta e^{-2 pi i g delta/n}``
    and summing over the ``s`` aliases ``g = f + j m`` keeps the lags that are multiples of
    the stride: ``B B^H(f) = sum_{s | delta} R_delta e^{-2 pi i f (delta/s) / m}``. The lags
    are one small convolution of the weight with itself; then one transform of
    ``C_out * C_out / G`` arrays on the (subsampled) grid.
    """
    w = weight.detach().to(torch.complex128 if weight.is_complex() else torch.float64)
    g, nd = geom.groups, geom.ndim
    o, c = geom.out_channels // g, geom.in_channels // g
    k = geom.kernel_size
    x = torch.nn.functional.pad(w, [p for n in reversed(k) for p in (n - 1, n - 1)])
    x = x.reshape(g, o, c, *x.shape[2:]).transpose(0, 1).reshape(o, g * c, *x.shape[2:])
    correlate = (torch.nn.functional.conv1d, torch.nn.functional.conv2d,
                 torch.nn.functional.conv3d)[nd - 1]  # fmt: skip
    lags = correlate(x, w.conj(), groups=g)  # (a, G * b, *(2k - 1)): R[tau][a, b]
    lags = (
        lags.reshape(o, g, o, *lags.shape[2:]).transpose(0, 1).reshape(g * o, o, *lags.shape[2:])
    )
    m = [n // s for n, s in zip(grid, geom.stride)]
    half = not weight.is_complex()
    # a direct DFT of the few lags per dimension (2k - 1 of them, those that are multiples
    # of the stride), as one matrix product that writes the blocks in place: far cheaper
    # than transforming mostly-zero grids
    dft = torch.ones((1, 1), dtype=torch.complex128, device=w.device)  # (F, lags), Kronecker
    for i, (n, d, s) in enumerate(zip(k, geom.dilation, geom.stride)):
        delta = (torch.arange(2 * n - 1, device=w.device) - (n - 1)) * d
        keep = (delta % s == 0).nonzero().reshape(-1)
        lags = lags.index_select(2 + i, keep)
        count = m[i] // 2 + 1 if half and i == nd - 1 else m[i]
        f = torch.arange(count, device=w.device, dtype=torch.float64)
        phase = -2 * math.pi * f[:, None] * (delta[keep] // s).to(torch.float64)[None] / m[i]
        factor = torch.polar(torch.ones_like(phase), phase)  # (F_i, lags_i)
        dft = (dft[:, None, :, None] * factor[None, :, None, :]).reshape(
            dft.shape[0] * factor.shape[0], -1
        )
    taps = lags.reshape(g, o * o, -1).transpose(1, 2)  # (G, lags, a * b)
    spec = dft @ taps.to(torch.complex128)  # (G, F, a * b)
    return spec.reshape(-1, o, o)  # (G * F, a, b)


#: The shift of a Cholesky test, relative to ``target**2``, per precision: above the backward
#: error of a Cholesky factorisation of a ``p x p`` matrix, ``(p + 2) u tr(A)`` (Rump,
#: "Verification of positive definiteness", BIT 2006), for ``p`` up to 1024 in complex128
#: and up to 128 in complex64 (with the rounding of the matrix to single precision).
_CHOLESKY_SHIFT = {torch.complex128: 1e-12, torch.complex64: 2e-3}


def _gram_max(grams: torch.Tensor, target: float | None, *, slack: float = 0.0) -> float:
    """An upper bound on ``sqrt(lambda_max)`` over the Hermitian ``grams`` (B, p, p).

    Exact where it matters: a block for which ``target**2 (1 - shift) - G`` has a Cholesky
    factor is at most ``target`` (cheap); the others are computed exactly. Where ``slack``
    (the relative room between the target and the bound really needed) allows, the test
    runs in single precision, whose larger shift that room absorbs.
    """
    if target is not None and target > 0:
        single = slack >= 5 * _CHOLESKY_SHIFT[torch.complex64] and grams.shape[-1] <= 128
        tested = grams.to(torch.complex64) if single else grams
        shift = _CHOLESKY_SHIFT[tested.dtype]
        shifted = tested.neg()
        shifted.diagonal(dim1=-2, dim2=-1).add_(target**2 * (1 - shift))
        info = _batched(lambda a: torch.linalg.cholesky_ex(a)[1], shifted)
        failed = info != 0
        if not bool(failed.any()):
            return target
        top = float(_batched(torch.linalg.eigvalsh, grams[failed])[:, -1].max())
        return max(target, math.sqrt(max(top, 0.0)))
    top = float(_batched(torch.linalg.eigvalsh, grams)[:, -1].max())
    return math.sqrt(max(top, 0.0))


# --------------------------------------------------------------------------- upper bounds
def _pad_norm(geom: ConvGeometry) -> float:
    """``||pad||_2``: the square root of the most copies padding makes of one sample."""
    if geom.padding_mode == "zeros":
        return 1.0
    norm = 1.0
    for n, (lo, hi) in zip(geom.input_size, geom.padding):
        copies = torch.bincount(source_index(n, lo, hi, geom.padding_mode), minlength=n)
        norm *= math.sqrt(int(copies.max()))
    return norm


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


def _grams(weight: torch.Tensor, geom: ConvGeometry, grid: tuple[int, ...]) -> torch.Tensor:
    """The smaller of the blocks' Gram matrices on ``grid``.

    ``B B^H``, or (stride 1, more output than input channels) ``B^H B``, which has the same
    nonzero eigenvalues.

    ``B^H B = K^H K`` is ``K K^H`` of the adjoint kernel: channels swapped, taps reversed
    and conjugated (its lag-``tau`` autocorrelation is ``sum_t w[t]^H w[t + tau]``).
    """
    g = geom.groups
    o, c = geom.out_channels // g, geom.in_channels // g
    side = min(o, c * math.prod(geom.stride))
    needed = 3 * g * math.prod(n // s for n, s in zip(grid, geom.stride)) * side * side * 16
    check_memory(needed, None, f"the kernel's per-frequency Gram matrices on a {grid} grid",
                 weight.device, hint="use a smaller input_shape")  # fmt: skip
    if c < o and all(s == 1 for s in geom.stride):
        k = geom.kernel_size
        w = weight.detach().reshape(g, o, c, *k).transpose(1, 2).reshape(g * c, o, *k)
        w = w.flip(tuple(range(2, 2 + geom.ndim))).conj()
        swapped = ConvGeometry(geom.out_channels, geom.in_channels, k, geom.input_size,
                               geom.stride, geom.padding, geom.dilation, groups=g)  # fmt: skip
        return _output_grams(w, swapped, grid)
    return _output_grams(weight, geom, grid)


def _embedding_bound(weight: torch.Tensor, conv: ConvGeometry, target: float | None,
                     *, slack: float = 0.0) -> float:  # fmt: skip
    grams = _grams(weight, conv, _embedding_grid(conv))
    return _gram_max(grams, target, slack=slack) * _pad_norm(conv)


def _factor_norm(u: torch.Tensor, conv: ConvGeometry, dim: int, kept: list) -> float:
    """Exact 2-norm of the one-channel 1-D convolution by ``u`` along dimension ``dim``.

    ``kept`` holds the norms already computed in this call: a symmetric kernel's factors are
    the same vector up to a unit factor (which does not change the norm) and round-off, and
    a factor within ``1e-13`` (relative, in the 1-norm) of a kept one reuses its norm, which
    moves it by at most that much times ``||pad||`` (Young), far inside ``convop.spectral.MARGIN``.
    """
    top = int(u.abs().argmax())
    unit = u / (u[top] / u[top].abs())  # the same operator norm, a canonical phase
    key = (conv.input_size[dim], conv.stride[dim], conv.padding[dim], conv.dilation[dim])
    for other_key, other, norm in kept:
        same = other_key == key and other.shape == unit.shape
        if same and float((other - unit).abs().sum()) <= 1e-13 * float(unit.abs().sum()):
            return norm
    n = conv.input_size[dim]
    g1 = ConvGeometry(1, 1, (u.numel(),), (n,), (conv.stride[dim],), (conv.padding[dim],),
                      (conv.dilation[dim],), padding_mode=conv.padding_mode)  # fmt: skip
    eye = torch.eye(n, dtype=u.dtype, device=u.device).reshape(n, 1, n)
    at = functional.forward(eye, unit.reshape(1, 1, -1), g1).reshape(n, -1)  # (n, m): A^T
    gram = at.mH @ at if at.shape[1] <= n else at @ at.mH
    norm = math.sqrt(max(float(torch.linalg.eigvalsh(gram)[-1]), 0.0))
    kept.append((key, unit, norm))
    return norm


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
            us[i] = rest / rest.norm()
    s = w
    for j in reversed(range(d)):
        s = torch.tensordot(s, us[j].conj(), dims=([j], [0]))
    return s, us


def _separable_bounds(weight: torch.Tensor, conv: ConvGeometry) -> tuple[float, float] | None:
    """``(lower, upper)`` from the Kronecker structure, for one channel per group.

    Per group, ``w = s u_1 (x) .. (x) u_D + r``: ``||A(w)||`` is within ``||A(r)|| <=
    |r|_1 ||pad||`` of ``|s| prod_i ||A_i(u_i)||`` (triangle inequality both ways), and the
    operator is block diagonal over groups. ``None`` when channels mix.
    """
    if conv.out_channels != conv.groups or conv.in_channels != conv.groups:
        return None
    if max(conv.input_size) > SEPARABLE_LIMIT:
        return None
    w = weight.detach().to(torch.complex128 if weight.is_complex() else torch.float64)
    pad = _pad_norm(conv)
    kept: list = []
    lower = upper = 0.0
    for kernel in w.reshape(conv.groups, *conv.kernel_size):
        if conv.ndim == 1:
            norm = _factor_norm(kernel, conv, 0, kept)
            lower, upper = max(lower, norm), max(upper, norm)
            continue
        s, us = _rank_one(kernel)
        rest = float((kernel - s * _outer(us)).abs().sum()) * pad  # Young: ||A(r)|| <= this
        norm = abs(complex(s)) * math.prod(
            _factor_norm(u, conv, i, kept) for i, u in enumerate(us)
        )
        lower, upper = max(lower, norm - rest), max(upper, norm + rest)
    return max(lower, 0.0) * (1 - MARGIN), upper * (1 + MARGIN)


def _outer(us: list[torch.Tensor]) -> torch.Tensor:
    """``us[0] (x) us[1] (x) ..``, a d-way array."""
    out = us[0]
    for u in us[1:]:
        out = out[..., None] * u
    return out


# --------------------------------------------------------------------------- opnorm
def _precise(op: ConvOperator) -> ConvOperator:
    """The forward map with the weight in float64 (complex128), where bounds are certified.

    It evaluates products the way ``op`` does now (a fixed method: an ``'auto'`` operator
    made afresh would time both methods on its first products).
    """
    w = op.weight.detach()
    precise = torch.complex128 if w.is_complex() else torch.float64
    w = w if w.dtype == precise else w.to(precise)
    return ConvOperator(w, op.geometry, method=op.method)


def _dense_norm(op: ConvOperator) -> float:
    """Exact 2-norm of a small ``op``: the top eigenvalue of the smaller Gram matrix."""
    rows, cols = op.shape
    w = op.weight
    eye = torch.eye(cols, dtype=w.dtype, device=w.device).reshape(cols, *op.input_shape)
    at = op.apply(eye).reshape(cols, rows)  # (cols, rows): A^T
    gram = at.mH @ at if rows <= cols else at @ at.mH  # A A^H or (A^H A)^T (conjugated)
    return math.sqrt(max(float(torch.linalg.eigvalsh(gram)[-1]), 0.0))


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

    def collatz(self, v: torch.Tensor) -> float:
        """``sqrt(max_i (M v)_i / v_i)`` for positive ``v``, in float64.

        An upper bound on ||A|| when A's matrix is non-negative (Collatz-Wielandt).
        """
        first, second = self._pair(self.precise)
        mv = second(first(v.reshape(self.shape))).reshape(-1)
        return math.sqrt(max(float((mv / v).max()), 0.0))


def opnorm(op: ConvOperator, *, rtol: float = 1e-3, maxiter: int = MAXITER) -> OpNorm:
    """Certified bounds on the operator 2-norm (largest singular value) of ``op``.

    Returns ``(estimate, lower, upper)`` with ``lower <= ||op||_2 <= upper`` guaranteed (a
    margin of ``convop.spectral.MARGIN`` covers round-off) and, on return,
    ``upper <= (1 + rtol) * lower``; where the bounds cannot get that close within
    ``maxiter`` iterations, a ``RuntimeWarning`` says which gap was reached. Works on the
    operator's device; products run in the weight's precision, the bounds are certified in
    float64.

    How (proofs in ``docs/conventions.md``):

    - circulant convolutions (see :func:`svdvals`): the exact largest singular value;
    - small operators (at most ``convop.spectral.DENSE_LIMIT`` matrix entries): the exact
      norm of the explicit matrix;
    - otherwise the lower bound is the Rayleigh quotient ``||A y|| / ||y||`` of the Lanczos
      vector ``y`` of ``A^H A`` (or ``A A^H``, whichever is smaller), and the upper bound the
      least of: the circulant embedding of the padded convolution (times ``||pad||_2`` for
      reflect, replicate and circular padding), the exact norms of the one-dimensional
      factors of a separable kernel (one channel per group), and the Collatz-Wielandt bound
      of the Lanczos vector for non-negative kernels.

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
    if exact and _circulant_reason(conv) is None:
        return _exact(_gram_max(_grams(weight, conv, conv.input_size), None))
    precise = _precise(op)
    rows, cols = op.shape
    if rows * cols <= DENSE_LIMIT and min(rows, cols) <= 2048:
        return _exact(_dense_norm(precise))
    return _bracket(op, weight, conv, precise, rtol, maxiter)


def _exact(sigma: float) -> OpNorm:
    return OpNorm(sigma, sigma * (1 - MARGIN), sigma * (1 + MARGIN))


class _Bracket:
    """The bounds :func:`opnorm` tightens for a non-circulant operator, and how."""

    def __init__(self, op: ConvOperator, conv: ConvGeometry, precise: ConvOperator,
                 rtol: float) -> None:  # fmt: skip
        self.weight = op.weight.detach()
        self.conv, self.rtol = conv, rtol
        self.side = _Side(ConvOperator(self.weight, op.geometry, method=precise.method), precise)
        self.lower, self.upper, self.how = 0.0, math.inf, "none"
        self.estimate = 0.0
        self.steps = 0
        self.nonneg = not self.weight.is_complex() and bool((self.weight >= 0).all())
        self.pad_norm = _pad_norm(conv)
        self.embedded = False
        separable = _separable_bounds(self.weight, conv)
        if separable is not None:
            self.offer_upper(separable[1], "separable kernel")
            if _as_conv(op.geometry)[1]:  # a bound below too only if the maps are equal
                self.lower = separable[0]
                self.estimate = separable[1] / (1 + MARGIN)

    @property
    def reached(self) -> bool:
        return self.upper <= (1 + self.rtol) * self.lower

    def offer_upper(self, bound: float, how: str) -> None:
        if bound < self.upper:
            self.upper, self.how = bound, how

    def offer_vector(self, y: torch.Tensor, floor: float = 1e-3) -> None:
        """Certify the Rayleigh quotient of ``y``, and its Collatz-Wielandt bound.

        The quotient is a lower bound; for a non-negative operator, the Collatz-Wielandt
        bound of ``y``'s positive part (raised to ``floor`` times its largest entry) is an
        upper bound.
        """
        y = y.to(self.side.precise.weight.dtype)
        quotient, _ = self.side.rayleigh(y)
        self.lower = max(self.lower, quotient * (1 - MARGIN))
        if self.nonneg and not self.reached:
            y = y if float(y.sum()) >= 0 else -y
            top = float(y.max())
            if top > 0:
                v = y.clamp(min=floor * top)
                self.offer_upper(self.side.collatz(v) * (1 + MARGIN), "Collatz-Wielandt")

    def embedding(self) -> None:
        """The circulant embedding bound, tested at ``(1 + rtol)`` times the lower bound."""
        self.embedded = True
        target = (1 + self.rtol) * self.lower * (1 - 1e-6) / self.pad_norm
        bound = _embedding_bound(self.weight, self.conv, target, slack=self.rtol)
        bound *= 1 + MARGIN
        self.offer_upper(bound, "circulant embedding")

    def lanczos(self, steps: int) -> torch.Tensor:
        """Up to ``steps`` Lanczos steps on ``M``, fully reorthogonalised; the last Ritz vector.

        Stops early once the bounds meet ``rtol``, on an invariant subspace, or (for
        non-negative operators, which power iterations refine) once the estimate settles.
        """
        side, dtype, device = self.side, self.weight.dtype, self.weight.device
        check_memory((steps + 1) * side.size * self.weight.element_size(), None,
                     f"{steps + 1} Lanczos vectors of {side.size} samples", device,
                     hint="pass a smaller maxiter")  # fmt: skip
        if self.nonneg:  # the Perron vector is non-negative: start near it
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


def _bracket(op, weight, conv, precise, rtol, maxiter) -> OpNorm:
    b = _Bracket(op, conv, precise, rtol)
    if not b.reached:
        y = b.lanczos(min(maxiter, LANCZOS_STEPS))
        if b.nonneg and not b.reached and maxiter > b.steps:
            b.power(y, maxiter - b.steps)
    if not b.reached and (not b.embedded or b.upper == math.inf):
        b.embedding()
    if not b.reached:
        warnings.warn(
            f"opnorm: the certified bounds [{b.lower:.6g}, {b.upper:.6g}] are "
            f"{OpNorm(0.0, b.lower, b.upper).gap:.2%} apart, more than rtol={rtol:g}, after "
            f"{b.steps} iterations (upper bound: {b.how}); pass a larger maxiter or rtol",
            RuntimeWarning,
            stacklevel=3,
        )
    return OpNorm(min(max(b.estimate, b.lower), b.upper), b.lower, b.upper)
