"""The bracket :func:`convop.opnorm` tightens for an operator that is not a circulant.

Below, the Rayleigh quotient ``||A y|| / ||y||`` of a Lanczos vector [1]_ ``y`` of
``A^H A`` (or ``A A^H``, whichever is smaller: :class:`Side`), started, for kernels of
mixed sign, from the plane wave of the circulant embedding's largest block
(:meth:`Bracket.warm_start`). Above, the least of the structural bounds: the circulant
embedding (:mod:`.grams`, times ``||pad||_2``), the separable factors (:mod:`.separable`)
and, for non-negative operators, the Collatz-Wielandt bound [2]_ [3]_ of the Lanczos vector
(or of power iterations from it). Each is certified with the round-off of its products
(:mod:`.rounding`); :func:`bracket` plays them against each other until they meet
``rtol``, and :func:`dense_norm` is the exact fallback (the smaller Gram matrix, formed by
products). The proofs are in ``docs/conventions.md``.

References
----------
.. [1] C. Lanczos, "An Iteration Method for the Solution of the Eigenvalue Problem of
   Linear Differential and Integral Operators," J. Res. Nat. Bur. Standards 45 (1950),
   255-282.
.. [2] L. Collatz, "Einschließungssatz für die charakteristischen Zahlen von Matrizen,"
   Math. Z. 48 (1942), 221-226.
.. [3] H. Wielandt, "Unzerlegbare, nicht negative Matrizen," Math. Z. 52 (1950), 642-648.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._shared.memory import check_memory
from ..geometry import ConvGeometry
from ..operator import ConvOperator
from .circulant import convolution_of, embedding_grid
from .grams import Grams
from .rounding import MARGIN, Bounds, Rounding, from_square, pad_norm, rounding_of
from .scaling import round_off
from .separable import separable_bounds


def dense_norm(op: ConvOperator, rounding: Rounding) -> Bounds:
    """Bounds on the 2-norm from the smaller Gram matrix ``A^H A`` or ``A A^H``.

    Exact but for round-off (:meth:`Rounding.gram`). Formed a batch of unit vectors at a
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
    return from_square(float(torch.linalg.eigvalsh(gram)[-1]), rounding.gram(size))


class Side:
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

    def collatz(self, v: torch.Tensor, rounding: Rounding) -> float:
        """``sqrt(max_i (M v)_i / v_i)`` for positive ``v``, from float64 products.

        An upper bound on ||A|| when A's matrix is non-negative (Collatz-Wielandt), with
        the products' round-off (:meth:`Rounding.collatz`).
        """
        first, second = self._pair(self.precise)
        mv = second(first(v.reshape(self.shape))).reshape(-1)
        return math.sqrt(max(rounding.collatz(mv, v), 0.0))


class Bracket:
    """The bounds :func:`convop.opnorm` tightens for a non-circulant operator, and how."""

    def __init__(self, work: ConvOperator, conv: ConvGeometry, precise: ConvOperator,
                 rtol: float) -> None:  # fmt: skip
        #: the working precision's weight (Lanczos) and the float64 one (every bound)
        self.weight, self.precise = work.weight, precise.weight
        self.conv, self.rtol = conv, rtol
        self.side = Side(work, precise)
        #: what the float64 products err by, and ``Y`` (:func:`rounding_of`)
        self.rounding = rounding_of(precise, conv)
        self.lower, self.upper, self.how = 0.0, math.inf, "none"
        self.estimate = 0.0
        self.steps = 0
        self.nonneg = not self.precise.is_complex() and bool((self.precise >= 0).all())
        self.pad_norm = pad_norm(conv)
        self.embedded = False
        self.transposed, self.equal = work.geometry.transposed, convolution_of(work.geometry)[1]
        self._grams: Grams | None = None
        separable = separable_bounds(self.precise, conv)
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
        (:attr:`Rounding.normwise`: ``||A y|| >= ||fl(A y)|| - e ||y||``), is a lower bound;
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
    def grams(self) -> Grams:
        """The Gram blocks of the circulant embedding (built once)."""
        if self._grams is None:
            self._grams = Grams(self.precise, self.conv, embedding_grid(self.conv))
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


def bracket(work: ConvOperator, conv: ConvGeometry, precise: ConvOperator, rtol: float,
            maxiter: int, shift: int, *, lanczos_steps: int,
            gram_limit: int) -> tuple[Bounds, str | None]:  # fmt: skip
    """``(bounds, None)``, or ``(bounds, why)`` where they stay more than ``rtol`` apart.

    ``shift``: the operator is ``2**shift`` times ``precise`` (for the message). At most
    ``lanczos_steps`` of the ``maxiter`` iterations are Lanczos steps; where the bounds stay
    apart, an operator of at most ``gram_limit`` entries (and at most 2048 rows or columns)
    gets the exact norm of its Gram matrix (:func:`dense_norm`).
    """
    b = Bracket(work, conv, precise, rtol)
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
        y = b.lanczos(min(maxiter, lanczos_steps), start)
        if b.nonneg and not b.reached and maxiter > b.steps:
            b.power(y, maxiter - b.steps)
    if not b.reached and (not b.embedded or b.upper == math.inf):
        b.embedding()
    rows, cols = work.shape
    if not b.reached and rows * cols <= gram_limit and min(rows, cols) <= 2048:
        # the bounds stayed apart: the exact Gram matrix, a few thousand products
        return dense_norm(precise, b.rounding), None
    detail = None
    if not b.reached:
        detail = f"after {b.steps} iterations (upper bound: {b.how})"
        if b.floor > rtol * max(b.lower, b.estimate) / 4:  # not for want of iterations
            detail += f", {round_off(b.floor, b.rounding.abs_norm, shift)}"
        else:
            detail += "; pass a larger maxiter or rtol"
    return Bounds(min(max(b.estimate, b.lower), b.upper), b.lower, b.upper), detail
