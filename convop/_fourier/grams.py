"""The per-frequency Gram blocks of a circulant: the circulant embedding's bound on a norm.

A convolution is part of a circulant on a large enough grid (:func:`.circulant.embedding_grid`),
whose norm is the largest singular value of its per-frequency blocks [1]_. :class:`Grams`
holds the smaller Gram matrix of each block, made from the kernel's lags (:mod:`.lags`) by a
direct DFT, with its round-off budgeted (:meth:`Grams._budget`, with the bounds of [2]_),
and finds the largest eigenvalue over them cheaply: a Cholesky test per block at a target,
shifted by the factorisation's backward error [3]_ (in single precision where the caller's
slack allows), exact eigenvalues only for the blocks above it. It also ranks the blocks for
the plane wave that starts :mod:`.bracket`'s Lanczos iteration.

The blocks are evaluated here rather than by :func:`.symbol.gram_symbol` because their
error budget ``E`` is derived for this evaluation (phases as ``D``-term dot products, then
``L``-term sums per entry) and for the partial evaluations the tests need (a few blocks, or
all in float32).

References
----------
.. [1] H. Sedghi, V. Gupta and P. M. Long, "The Singular Values of Convolutional Layers,"
   International Conference on Learning Representations (ICLR), 2019.
.. [2] N. J. Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., SIAM, 2002.
.. [3] S. M. Rump, "Verification of Positive Definiteness," BIT Numer. Math. 46 (2006),
   433-452.
"""

from __future__ import annotations

import math

import torch

from .._shared.memory import check_memory
from ..geometry import ConvGeometry
from .lags import gram_lags, lags_error
from .rounding import BUDGET_SLACK, U, gamma, summed_terms


def threaded(fn, tasks: list) -> list:
    """``[fn(task) for task in tasks]``, on torch's threads (on the CPU)."""
    threads = torch.get_num_threads()
    if threads < 2 or len(tasks) < 2:
        return [fn(task) for task in tasks]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(threads, len(tasks))) as pool:
        return list(pool.map(fn, tasks))


def batched(fn, x: torch.Tensor) -> torch.Tensor:
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


#: The least shift of a Cholesky test, relative to ``target**2``: above the backward error
#: of a Cholesky factorisation of a ``p x p`` matrix, about ``(p + 1) u tr(A)`` (Rump,
#: "Verification of positive definiteness", BIT 2006), where ``tr(A) <= p target**2``: in
#: complex64, for ``p`` up to 128 (with the rounding of the matrix to single precision);
#: in complex128, for ``p`` up to about 64 (larger blocks: :func:`cholesky_shift`).
CHOLESKY_SHIFT = {torch.complex128: 1e-12, torch.complex64: 2e-3}


def cholesky_shift(p: int) -> float:
    """The shift of a complex128 Cholesky test of ``p x p`` blocks, relative to ``target**2``.

    Rump's bound ``gamma_{p+1} tr(A)`` with ``tr(A) <= p target**2``, doubled for complex
    arithmetic and the rounding of the shifted diagonal: ``2 (p + 2) p u``, at least
    :data:`CHOLESKY_SHIFT` (1.2e-10 for ``p = 1024``, where 1e-12 fell short).
    """
    return max(CHOLESKY_SHIFT[torch.complex128], 2 * gamma((p + 2) * p))


#: The largest blocks tested in single precision.
SINGLE_LIMIT = 128


class Grams:
    """The smaller Gram matrix of each block of :func:`.circulant.polyphase_blocks` on ``grid``.

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
        self.shift = cholesky_shift(self.size)
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
          ``g = gamma_{4L+11}`` of ``sum_l |R^_l| |phi^_l|`` (:func:`.rounding.summed_terms`).

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
        e = 3 * U + gamma(dims + 3) * 2 * math.pi * reach
        g = gamma(summed_terms(lags, True))
        kappa = lags * (c * (1 + e) + e + g * (1 + c) * (1 + e))
        w = weight.detach().to(torch.complex128 if weight.is_complex() else torch.float64)
        squares = w.abs().square().reshape(self.groups, -1).sum(1)  # ||w_g||_F^2
        return kappa * float(squares.max()) * BUDGET_SLACK

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
            values = batched(torch.linalg.eigvalsh, blocks[order])[:, -1]
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
            info = batched(lambda a: torch.linalg.cholesky_ex(a)[1], shifted)
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

        return torch.cat(threaded(test, tasks))

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
        return float(batched(torch.linalg.eigvalsh, self.exact())[:, -1].max())

    def bound(self, target: float | None, *, slack: float = 0.0) -> float:
        """An upper bound on ``sqrt(lambda_max)`` over the exact blocks.

        Exact where it matters: a block for which ``level I - G^`` has a Cholesky factor,
        with ``level`` below ``target**2`` by the factorisation's backward error and by the
        computed blocks' error :attr:`error` (and, in single precision, by the float32
        blocks' own), is at most ``target`` (cheap); the others are computed, and their
        largest eigenvalue, raised by :attr:`error`, bounds theirs. Where ``slack`` (the
        relative room between the target and the bound really needed) allows, the blocks
        are formed and tested in single precision. LAPACK's relative error is left to
        :data:`.rounding.MARGIN`, which the callers apply.
        """
        if target is not None and target > 0:
            level = target**2 * (1 - CHOLESKY_SHIFT[torch.complex64])
            single = self.real and self.size <= SINGLE_LIMIT and slack > 0
            if single:
                error = self._single_error(level) + self.error
                single = 4 * (CHOLESKY_SHIFT[torch.complex64] + error / target**2) <= slack
            if single:  # the level lowered by the float32 blocks' error and the lags'
                failed = self._single_failures(level - error)
            else:
                level = target**2 * (1 - self.shift) - self.error
                shifted = self.exact().neg()
                shifted.diagonal(dim1=-2, dim2=-1).add_(level)
                info = batched(lambda a: torch.linalg.cholesky_ex(a)[1], shifted)
                del shifted
                failed = (info != 0).nonzero().reshape(-1)
            if failed.numel() == 0:
                return target
            top, self.peak = self._largest(failed)
            return max(target, math.sqrt(max(top, 0.0) + self.error))
        return math.sqrt(max(self.top_eigenvalue(), 0.0) + self.error)
