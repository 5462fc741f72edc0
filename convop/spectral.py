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
- *small operators*: the exact 2-norm of the explicit matrix (or, where the bounds above
  stay apart, of the smaller Gram matrix, formed by products).

The lower bound starts, for kernels of mixed sign, from the embedding's largest block made
into a tapered plane wave: a near-top singular vector before any iteration.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import torch

from . import functional
from ._lags import gram_lags
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


#: The shift of a Cholesky test, relative to ``target**2``: above the backward error of a
#: Cholesky factorisation of a ``p x p`` matrix, ``(p + 2) u tr(A)`` (Rump, "Verification of
#: positive definiteness", BIT 2006), for ``p`` up to 1024 in complex128 and up to 128 in
#: complex64 (with the rounding of the matrix to single precision).
_CHOLESKY_SHIFT = {torch.complex128: 1e-12, torch.complex64: 2e-3}
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
        self._full: torch.Tensor | None = None
        #: the block found largest by the last :meth:`bound` that computed any (or -1)
        self.peak = -1

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
            level = best * (1 + 2 * _CHOLESKY_SHIFT[torch.complex128])
            shifted.diagonal(dim1=-2, dim2=-1).add_(
                level * (1 - _CHOLESKY_SHIFT[torch.complex128])
            )
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

    def bound(self, target: float | None, *, slack: float = 0.0) -> float:
        """An upper bound on ``sqrt(lambda_max)`` over the blocks.

        Exact where it matters: a block for which ``level I - G`` has a Cholesky factor, with
        ``level`` below ``target**2`` by the factorisation's backward error (and, in single
        precision, by the blocks' own error), is at most ``target`` (cheap); the others are
        computed exactly. Where ``slack`` (the relative room between the target and the bound
        really needed) allows, the blocks are formed and tested in single precision.
        """
        if target is not None and target > 0:
            level = target**2 * (1 - _CHOLESKY_SHIFT[torch.complex64])
            single = self.real and self.size <= _SINGLE_LIMIT and slack > 0
            if single:
                error = self._single_error(level)
                single = 4 * (_CHOLESKY_SHIFT[torch.complex64] + error / target**2) <= slack
            if single:  # the level lowered by the blocks' own error
                failed = self._single_failures(level - error)
            else:
                level = target**2 * (1 - _CHOLESKY_SHIFT[torch.complex128])
                shifted = self.exact().neg()
                shifted.diagonal(dim1=-2, dim2=-1).add_(level)
                info = _batched(lambda a: torch.linalg.cholesky_ex(a)[1], shifted)
                del shifted
                failed = (info != 0).nonzero().reshape(-1)
            if failed.numel() == 0:
                return target
            top, self.peak = self._largest(failed)
            return max(target, math.sqrt(max(top, 0.0)))
        top = float(_batched(torch.linalg.eigvalsh, self.exact())[:, -1].max())
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
    """Exact 2-norm: the top eigenvalue of the smaller Gram matrix ``A^H A`` or ``A A^H``.

    Formed a batch of unit vectors at a time (products, never the whole matrix at once).
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
        return _exact(_Grams(weight, conv, conv.input_size).bound(None))
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
        self.transposed, self.equal = op.geometry.transposed, _as_conv(op.geometry)[1]
        self._grams: _Grams | None = None
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

    @property
    def grams(self) -> _Grams:
        """The Gram blocks of the circulant embedding (built once)."""
        if self._grams is None:
            self._grams = _Grams(self.weight, self.conv, _embedding_grid(self.conv))
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


def _bracket(op, weight, conv, precise, rtol, maxiter) -> OpNorm:
    b = _Bracket(op, conv, precise, rtol)
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
    rows, cols = op.shape
    if not b.reached and rows * cols <= GRAM_LIMIT and min(rows, cols) <= 2048:
        return _exact(_dense_norm(precise))  # the bounds stayed apart: a few thousand products
    if not b.reached:
        warnings.warn(
            f"opnorm: the certified bounds [{b.lower:.6g}, {b.upper:.6g}] are "
            f"{OpNorm(0.0, b.lower, b.upper).gap:.2%} apart, more than rtol={rtol:g}, after "
            f"{b.steps} iterations (upper bound: {b.how}); pass a larger maxiter or rtol",
            RuntimeWarning,
            stacklevel=3,
        )
    return OpNorm(min(max(b.estimate, b.lower), b.upper), b.lower, b.upper)
