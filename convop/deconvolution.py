"""Solving with convolution operators: preconditioners and exact Tikhonov solves.

Both come from the kernel's spectrum:

- :func:`preconditioner`: a fast approximation of ``(A^H A + damp^2 I)^{-1}`` (or its square
  root), for ``scipy.sparse.linalg.cg`` on the normal equations (``M=``) or as a right
  preconditioner for ``lsqr``/``lsmr``. ``A^H A`` is a convolution with the kernel's
  autocorrelation; the preconditioner inverts that convolution under a boundary model
  matched to the padding mode, by fast transforms (per frequency, a small solve over the
  channels), scaled where the model is not the operator's so that both share the diagonal:

  ===============  =====================================================================
  padding mode     boundary model (transform)
  ===============  =====================================================================
  circular         periodic (the FFT): exact for circulant convolutions (Strang 1986)
  reflect          whole-sample symmetric (a DCT-I), with the end samples weighted
  replicate        half-sample symmetric (a DCT-II, by real FFTs of the samples
                   themselves; Ng, Chan & Tang 1999), equilibrated
  zeros            half-sample symmetric (measured better than periodic here),
                   equilibrated
  ===============  =====================================================================

- :func:`solve_tikhonov`: the exact minimiser of ``||A x - y||^2 + damp^2 ||x||^2`` for a
  circulant convolution, in one forward and one inverse FFT (per frequency, a small
  SVD-based filter; the least-squares solution of least norm where ``damp = 0`` leaves it
  ambiguous), and its Wiener-filter form for a noise-to-signal ratio.

The maths (the extensions, why the reflect model weights the end samples, the
preconditioner's own damping, the diagonal scaling) is in ``docs/conventions.md``, section
11. One module of about a thousand lines, as both halves share the kernel's transfer
function, its Gram symbol and their transforms; every step that allocates in proportion to
the grid asks the memory guard (:func:`convop._memory.check_memory`) first.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator

from ._arrays import result_dtype, to_numpy, to_tensor
from ._checks import check_choice
from ._gram_diagonal import diagonal_bytes, gram_diagonal
from ._lags import gram_lags
from ._memory import check_memory
from .geometry import ConvGeometry
from .operator import ConvOperator
from .spectral import is_circulant

#: What :func:`preconditioner` approximates: the inverse, or its square root.
KINDS = ("normal", "right")
#: The boundary model of each padding mode, on the input side of a convolution.
BOUNDARIES = {"circular": "periodic", "reflect": "reflect", "replicate": "even", "zeros": "even"}
#: The preconditioner's own damping, relative to the operator's norm (the largest value of
#: its symbol), where its boundary model is not the operator's, per padding mode: large
#: enough that the boundary's mismatch makes no outlying eigenvalues, small enough to keep
#: the rest clustered (measured in benchmarks/bench_deconvolution.py). ``'mixing'``:
#: channels that mix without symmetric lags, where only the periodic model holds.
MISMATCH_DAMPING = {"zeros": 0.02, "reflect": 0.02, "replicate": 0.01, "circular": 0.02,
                    "mixing": 0.3}  # fmt: skip

#: The most bytes the exact diagonal of ``op^H op`` may take to compute
#: (:func:`convop._gram_diagonal.diagonal_bytes`) for the preconditioner's scaling; its work
#: grows with them. Near corners it costs ``~ (pad * n)^d`` for large kernels under reflect
#: or circular padding (a 201 x 201 kernel on 256^2: 39 GiB, hours), a 3 x 3 replicate
#: kernel on 4096^2 384 MiB and 0.3 s. Beyond it the preconditioner is unscaled.
DIAGONAL_BYTES = 2**30

#: Apply half-sample symmetric models by cosine transforms (else by FFTs of the extension,
#: the same operator at 2^d times the data; kept as the reference the tests compare with).
COSINE = True


def _check_damp(damp: object, name: str = "damp") -> float:
    if isinstance(damp, bool) or not isinstance(damp, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(damp).__name__}")
    if not (math.isfinite(damp) and damp >= 0):
        raise ValueError(f"{name} must be a finite float >= 0, got {damp!r}")
    return float(damp)


def _gram_side(op: ConvOperator, what: str) -> tuple[ConvGeometry, bool]:
    """``(B, input_side)``: ``op^H op`` is ``B^H B`` (``input_side``) or ``B B^H``.

    ``B`` is the convolution of ``op``'s geometry (of its ``as_convolution`` for a transposed
    one, whose map is ``B^H``); an adjoint flips the side.
    """
    if not isinstance(op, ConvOperator):
        raise TypeError(f"op must be a convop.ConvOperator, got {type(op).__name__}")
    geom = op.geometry
    conv = geom.as_convolution() if geom.transposed else geom
    if any(s != 1 for s in conv.stride):
        raise ValueError(
            f"{what} needs stride 1, got stride={conv.stride}: the normal operator of a "
            f"strided convolution is not a convolution (use an unpreconditioned solver)"
        )
    return conv, geom.transposed == op.is_adjoint


# ---------------------------------------------------------------------- extensions
def _extend(x: torch.Tensor, axis: int, boundary: str) -> torch.Tensor:
    """``x`` extended along ``axis`` as ``boundary`` assumes (the extension map ``E``)."""
    n = x.shape[axis]
    if boundary == "even":  # [x, flip x]: 2n samples
        return torch.cat([x, x.flip(axis)], axis)
    if boundary == "reflect":  # [x, flip x[1:-1]]: 2n - 2 samples
        return torch.cat([x, x.narrow(axis, 1, n - 2).flip(axis)], axis)
    return x


def _fold(z: torch.Tensor, axis: int, n: int, boundary: str) -> torch.Tensor:
    """``E^T z``: each sample of the extended ``z`` added back onto the one it copies."""
    if boundary == "even":
        return z.narrow(axis, 0, n) + z.narrow(axis, n, n).flip(axis)
    if boundary == "reflect":
        head = z.narrow(axis, 0, n).clone()
        head.narrow(axis, 1, n - 2).add_(z.narrow(axis, n, n - 2).flip(axis))
        return head
    return z


def _extended(n: int, boundary: str) -> int:
    return {"even": 2 * n, "reflect": 2 * n - 2}.get(boundary, n)


def _along(axis: int, part: slice) -> tuple:
    """An index taking ``part`` along ``axis`` (a non-negative axis) and all of the others."""
    return (slice(None),) * axis + (part,)


def _twiddle(n: int, count: int, sign: float, axis: int, ndim: int,
             device: torch.device) -> torch.Tensor:  # fmt: skip
    """``exp(sign i pi k / (2n))`` for ``k < count``, shaped to broadcast along ``axis``."""
    k = torch.arange(count, dtype=torch.float64, device=device)
    shape = [1] * ndim
    shape[axis] = count
    return torch.polar(torch.ones_like(k), sign * math.pi * k / (2 * n)).reshape(shape)


def _dct(x: torch.Tensor, axis: int) -> torch.Tensor:
    """``X_k = sum_j x_j cos(pi k (2j + 1) / (2n))`` along ``axis``: one real FFT of length n.

    Makhoul's reordering (IEEE Trans. ASSP 28, 1980): the even samples, then the odd ones
    reversed; then ``X_k = Re(w_k V_k)`` and ``X_{n-k} = -Im(w_k V_k)``, ``w_k =
    exp(-i pi k / 2n)``. This is the transform that diagonalises the half-sample symmetric
    extension's circulant, restricted to the original samples.
    """
    n = x.shape[axis]
    v = torch.cat([x[_along(axis, slice(0, None, 2))],
                   x[_along(axis, slice(1, None, 2))].flip(axis)], axis)  # fmt: skip
    z = torch.fft.rfft(v, dim=axis)
    z = z * _twiddle(n, z.shape[axis], -1.0, axis, x.ndim, x.device).to(z.dtype)
    tail = z.imag.narrow(axis, 1, (n - 1) // 2).flip(axis).neg()
    return torch.cat([z.real, tail], axis)


def _idct(y: torch.Tensor, axis: int) -> torch.Tensor:
    """The inverse of :func:`_dct`: ``x_j = (y_0 + 2 sum_{k>0} y_k cos(...)) / n``."""
    n = y.shape[axis]
    m = n // 2 + 1
    head = y.narrow(axis, 0, m)
    mirror = torch.cat(
        [torch.zeros_like(y.narrow(axis, 0, 1)), y.narrow(axis, n - m + 1, m - 1).flip(axis)], axis
    )  # y_{n-k}, y_n = 0
    z = torch.complex(head, -mirror) * _twiddle(n, m, 1.0, axis, y.ndim, y.device).to(
        torch.complex128 if y.dtype == torch.float64 else torch.complex64
    )
    v = torch.fft.irfft(z, n=n, dim=axis)
    h = (n + 1) // 2
    x = torch.empty_like(v)
    x[_along(axis, slice(0, None, 2))] = v.narrow(axis, 0, h)
    x[_along(axis, slice(1, None, 2))] = v.narrow(axis, h, n - h).flip(axis)
    return x


def _model_diagonal(grid: torch.Tensor, lags: list[torch.Tensor], boundaries: tuple[str, ...],
                    size: tuple[int, ...]) -> torch.Tensor:  # fmt: skip
    """The diagonal of ``2^{-d} E^T C E`` per channel and sample: ``(G, p, *size)`` float64.

    ``grid``: the lags' diagonal entries ``(G, *counts, p)``; ``lags[a]``: their values along
    axis ``a``. A sample ``j`` of a half-sample symmetric axis has the copies ``j`` and
    ``2n - 1 - j``, so the four pairs of copies see the lags 0, 0 and ``+-m``, ``m = 2n - 1 -
    2j``; a periodic axis sees the lags that wrap onto 0.
    """
    out = grid.real if grid.is_complex() else grid
    for a, (n, boundary) in enumerate(zip(size, boundaries)):
        u = lags[a].to(torch.int64)[:, None]
        if boundary == "even":
            m = 2 * n - 1 - 2 * torch.arange(n, device=u.device)[None, :]
            period = 2 * n
            weight = ((u % period == 0).to(torch.float64)
                      + 0.5 * ((u - m) % period == 0).to(torch.float64)
                      + 0.5 * ((u + m) % period == 0).to(torch.float64))  # fmt: skip
        else:  # periodic
            weight = (u % n == 0).to(torch.float64).expand(-1, n)
        out = torch.tensordot(out, weight.to(out.device), dims=([1 + a], [0]))
        out = out.movedim(-1, 1 + a)
    return out.movedim(-1, 1)  # (G, *size, p) -> (G, p, *size)


def cosine_symbol(grid: torch.Tensor, lags: list[torch.Tensor], boundaries: tuple[str, ...],
                  size: tuple[int, ...], *, nyquist: bool = False,
                  halve: bool = True) -> torch.Tensor:  # fmt: skip
    """A Gram symbol at the cosine and Fourier transforms' frequencies: ``(G, p, p, *F)``.

    Parameters
    ----------
    grid : torch.Tensor
        The lags ``R_delta`` on their grid: ``(G, *counts, p * p)``.
    lags : list of torch.Tensor
        The lag values along each axis (``counts[a]`` of them).
    boundaries : tuple of str
        ``'even'``: frequency ``k < n`` of the half-sample symmetric ``2n`` extension,
        ``sum_delta R_delta cos(pi k delta / n)`` (the lags must be mirror-symmetric along
        the axis), the eigenvalues of its DCT-II; ``k = n`` too with ``nyquist``.
        ``'periodic'``: the DFT's, ``sum_delta R_delta exp(2 pi i f delta / n)``, the last
        periodic axis halved as ``rfftn`` when ``halve``.
    size : tuple of int
        The grid's size ``n`` per axis.
    """
    periodic = [a for a, b in enumerate(boundaries) if b == "periodic"]
    counts = [
        n + nyquist if b == "even" else n // 2 + 1 if halve and a == periodic[-1] else n
        for a, (n, b) in enumerate(zip(size, boundaries))
    ]
    check_memory(2 * 16 * grid.shape[0] * grid.shape[-1]
                 * math.prod(max(f, u.numel()) for f, u in zip(counts, lags)), None,
                 f"the Gram symbol on a {tuple(size)} grid", grid.device,
                 hint="use a smaller input_shape")  # fmt: skip
    out = grid.to(torch.complex128) if periodic else grid
    for a, n in enumerate(size):
        u = lags[a].to(grid.device)[:, None]
        if boundaries[a] == "even":
            f = torch.arange(n + nyquist, dtype=torch.float64, device=grid.device)[None, :]
            factor = torch.cos(math.pi * u * f / n)
        else:
            count = n // 2 + 1 if halve and a == periodic[-1] else n
            f = torch.arange(count, dtype=torch.float64, device=grid.device)[None, :]
            factor = torch.polar(torch.ones_like(u * f), 2 * math.pi * u * f / n)
        out = torch.tensordot(out, factor.to(out.dtype), dims=([1 + a], [0]))
        out = out.movedim(-1, 1 + a)
    g, p = out.shape[0], math.isqrt(out.shape[-1])
    return out.movedim(-1, 1).reshape(g, p, p, *out.shape[1:-1])


# ---------------------------------------------------------------------- preconditioner
class Preconditioner(LinearOperator):
    """A fast approximation of ``(op^H op + beta^2 I)^{-1}`` or of its square root.

    Made by :func:`preconditioner`; see there. Symmetric positive definite
    (``kind='normal'``; ``'right'`` is a factor of it, see there). A
    ``scipy.sparse.linalg.LinearOperator`` (numpy face) with a torch face
    (:meth:`apply`); ``to_pylops()`` wraps it for PyLops. Built lazily: the kernel's
    spectrum is computed on first use, and again whenever the weight's values change.

    Parameters
    ----------
    op : ConvOperator
        The operator to precondition.
    damp : float
        The problem's damping.
    kind : {'normal', 'right'}
        The approximate inverse, or its square root.
    beta : float or None
        The preconditioner's own damping; ``None``: chosen on first use.

    Attributes
    ----------
    op : ConvOperator
        The operator it preconditions (its weight is read at every use).
    damp : float
        The problem's damping.
    beta : float or None
        The preconditioner's own damping (``None`` until first use when chosen
        automatically: it depends on the weight).
    kind : {'normal', 'right'}
    boundaries : tuple of str
        The boundary model per spatial axis: ``'periodic'``, ``'even'`` or ``'reflect'``.
    grid : tuple of int
        The transform's grid: the input's size, or its extension along the reflect axes
        (and along every symmetric one for complex weights).
    exact : bool
        Whether it is the exact inverse (a circulant convolution, ``kind='normal'``).
    """

    def __init__(self, op: ConvOperator, damp: float, kind: str, beta: float | None) -> None:
        conv, input_side = _gram_side(op, "preconditioner()")
        self.op, self.damp, self.kind = op, damp, kind
        self._conv, self._input_side = conv, input_side
        self._circulant = is_circulant(op)
        mode = conv.padding_mode if input_side else "zeros"
        size = op.input_shape[1:]
        boundaries = []
        for n, k, d, (lo, hi) in zip(size, conv.kernel_size, conv.dilation, conv.padding):
            if self._circulant or (d * (k - 1) == 0 and lo == hi == 0):
                boundaries.append("periodic")  # exact: no halo, or a circulant
            elif BOUNDARIES[mode] == "reflect" and n < 3:
                boundaries.append("even")
            else:
                boundaries.append(BOUNDARIES[mode])
        self._models = tuple(boundaries)  # the padding mode's; lags may rule them out
        self._set_boundaries(self._models)
        self._beta = beta
        self.beta = beta
        self.exact = self._circulant and kind == "normal"
        self._key: torch.Tensor | None = None
        self._filter: torch.Tensor | None = None
        self._scale: torch.Tensor | None = None
        self._cosine = False
        super().__init__(dtype=op.dtype, shape=(op.shape[1], op.shape[1]))

    def _set_boundaries(self, boundaries: tuple[str, ...]) -> None:
        self.boundaries = boundaries
        size = self.op.input_shape[1:]
        self.grid = tuple(_extended(n, b) for n, b in zip(size, boundaries))

    @property
    def device(self) -> torch.device:
        """Where it runs: the operator's device."""
        return self.op.device

    def __repr__(self) -> str:
        beta = "auto" if self.beta is None else f"{self.beta:.3g}"
        return (
            f"Preconditioner({self.kind}, of the {self.op.name}, damp={self.damp:g}, "
            f"beta={beta}, boundaries={self.boundaries}, shape={self.shape}, "
            f"dtype={self.dtype}, device={self.device})"
        )

    # ------------------------------------------------------------------ the spectrum
    def _matched(self, weight: torch.Tensor) -> bool:
        """Whether the boundary model is the operator's own (up to its end samples).

        A circulant; or kernels mirror-symmetric along every axis (every channel pair's),
        centred padding, under reflect (whole-sample) or, for kernels of reach 1, replicate
        padding.
        """
        if self._circulant:
            return True
        conv = self._conv
        if not self._input_side:
            return False
        centred = all(lo == hi for lo, hi in conv.padding)
        dims = tuple(range(2, 2 + conv.ndim))
        tolerance = 1e-10 * float(weight.abs().max())
        symmetric = all(
            bool(torch.allclose(weight, weight.flip(d), rtol=0, atol=tolerance)) for d in dims
        )
        reach = max(d * (k - 1) for k, d in zip(conv.kernel_size, conv.dilation))
        mode = conv.padding_mode
        return (
            centred and symmetric and (mode == "reflect" or (mode == "replicate" and reach <= 2))
        )

    def _symbol(self, taps: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        """The Gram symbol ``S(f)`` on the extended grid: ``(G, p, p, *F)`` complex128."""
        weight = self.op._weight_now()
        g, count, pp = taps.shape
        grid = self.grid
        real = not weight.is_complex()
        frequencies = [*grid[:-1], grid[-1] // 2 + 1 if real else grid[-1]]
        check_memory(4 * g * pp * math.prod(frequencies) * 16, None,
                     f"the preconditioner's spectrum on a {grid} grid", weight.device,
                     hint="use a smaller input_shape")  # fmt: skip
        index = torch.zeros(count, dtype=torch.int64, device=taps.device)
        for i, n in enumerate(grid):
            index = index * n + (-deltas[:, i]).to(torch.int64).remainder(n)
        placed = taps.new_zeros((g, pp, math.prod(grid)))
        placed.index_add_(2, index, taps.transpose(1, 2))  # taps that wrap onto one sample add
        placed = placed.reshape(g, pp, *grid)
        dims = tuple(range(2, 2 + len(grid)))
        spec = torch.fft.rfftn(placed, dim=dims) if real else torch.fft.fftn(placed, dim=dims)
        p = math.isqrt(pp)
        return spec.reshape(g, p, p, *spec.shape[2:])

    def _current(self) -> torch.Tensor:
        """The filter ``f(S + beta^2 I)`` for the weight as it is now: ``(G, p, p, *F)``."""
        weight = self.op._weight_now().detach().resolve_conj()  # conjugated for op.T
        key = self._key
        if key is not None and key.shape == weight.shape and torch.equal(key, weight):
            return self._filter
        taps, deltas = gram_lags(weight, self._conv, input_side=self._input_side)
        # a mirrored copy along axis i sees the lags with delta_i negated: a symmetric model
        # holds along the axes where that changes nothing (a Gaussian's; not a diagonal
        # motion's, nor channels that mix without symmetry); periodic holds for any
        counts = [int(torch.unique(deltas[:, i]).numel()) for i in range(deltas.shape[1])]
        grid = taps.reshape(taps.shape[0], *counts, taps.shape[2])  # (G, *lags, p * p)
        tolerance = 1e-12 * float(taps.abs().max())
        mirrored = [
            bool(torch.allclose(grid.flip(1 + i), grid, rtol=0, atol=tolerance))
            for i in range(len(counts))
        ]
        symmetric = all(mirrored)
        models = tuple(m if ok else "periodic" for m, ok in zip(self._models, mirrored))
        self._set_boundaries(models)
        # half-sample symmetric axes by cosine transforms of the samples themselves (no
        # extension: 2^d times less data), where no axis needs reflect's extension
        self._cosine = (COSINE and not weight.is_complex() and "even" in models
                        and "reflect" not in models)  # fmt: skip
        if self._cosine:
            size = self.op.input_shape[1:]
            periodic = [a for a, b in enumerate(models) if b == "periodic"]
            frequencies = [n + 1 if b == "even" else n // 2 + 1 if a == periodic[-1] else n
                           for a, (n, b) in enumerate(zip(size, models))]  # fmt: skip
            check_memory(4 * 16 * taps.shape[0] * taps.shape[2]
                         * math.prod(max(f, u) for f, u in zip(frequencies, counts)), None,
                         f"the preconditioner's spectrum on a {tuple(size)} grid",
                         weight.device, hint="use a smaller input_shape")  # fmt: skip
            lags = [torch.unique(deltas[:, i]) for i in range(deltas.shape[1])]
            symbol = cosine_symbol(grid, lags, self.boundaries, self.op.input_shape[1:],
                                   nyquist=True)  # fmt: skip
            self.grid = tuple(self.op.input_shape[1:])
        else:
            symbol = self._symbol(taps, deltas)
        blocks = symbol.movedim(1, -1).movedim(1, -1)  # (G, *F, p, p)
        values, vectors = torch.linalg.eigh(blocks)  # Hermitian per frequency
        values = values.clamp(min=0)
        top = float(values.max()) if values.numel() else 0.0
        matched = self._matched(weight)
        if self._beta is not None:
            beta = self._beta
        elif matched:
            beta = self.damp
        else:
            tau = MISMATCH_DAMPING[self._conv.padding_mode if symmetric else "mixing"]
            beta = max(self.damp, tau * math.sqrt(top))
        # never singular: at least 1e-8 of the norm (matters only for damp = 0)
        beta2 = max(beta * beta, 1e-16 * top, torch.finfo(torch.float64).tiny)
        scale = (values + beta2).reciprocal()
        if self.kind == "right":
            scale = scale.sqrt()
        inverse = (vectors * scale[..., None, :].to(vectors.dtype)) @ vectors.mH
        self._filter = inverse.movedim(-1, 1).movedim(-1, 1)  # (G, p, p, *F)
        if self._cosine:  # drop k = n along the cosine axes
            for a, (n, boundary) in enumerate(zip(self.grid, self.boundaries)):
                if boundary == "even":
                    self._filter = self._filter.narrow(3 + a, 0, n)
        self._scale = None if matched else self._equilibration(weight, grid, deltas)
        self._key = weight.clone()
        self.beta = beta
        return self._filter

    def _equilibration(self, weight: torch.Tensor, grid: torch.Tensor,
                       deltas: torch.Tensor) -> torch.Tensor | None:  # fmt: skip
        """``S``, making ``S^{-1} M^{-1} S^{-1}`` share ``op^H op``'s diagonal, or None.

        Where the boundary model is not the operator's, their diagonals differ near the
        boundary: replicate padding reads its end samples through many taps, so their
        columns weigh up to ``(k/2)^d`` times more, and each makes an outlying eigenvalue.
        Scaling by ``S = sqrt(diag(model) / diag(op^H op))`` (exact, by
        :func:`convop._gram_diagonal.gram_diagonal`) puts them back in the cluster. Not for
        reflect's whole-sample model, whose end weights ``D`` serve the same purpose, nor
        on the output side.
        """
        if not self._input_side or "reflect" in self.boundaries:
            return None
        if diagonal_bytes(self._conv, weight.dtype) > DIAGONAL_BYTES:
            return None  # too costly to compute exactly: unscaled (still SPD, slower)
        size = tuple(self.op.input_shape[1:])
        g, p = grid.shape[0], math.isqrt(grid.shape[-1])
        own = grid[..., :: p + 1]  # (G, *counts, p): the lags' diagonal entries
        lags = [torch.unique(deltas[:, i]) for i in range(deltas.shape[1])]
        model = _model_diagonal(own, lags, self.boundaries, size).reshape(g * p, *size)
        actual = gram_diagonal(weight, self._conv)
        ratio = torch.where((actual > 0) & (model > 0), model / actual.clamp(min=1e-300), 1.0)
        return ratio.sqrt()

    # ------------------------------------------------------------------ products
    def apply(self, x: torch.Tensor, *, adjoint: bool = False) -> torch.Tensor:
        """The preconditioner (or its adjoint) applied to a batch of tensors.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, *op.input_shape)`` or ``op.input_shape``, on the operator's device.
        adjoint : bool, default False
            Apply ``P^H`` (which differs from ``P`` only for ``kind='right'`` with a
            diagonal scaling).

        Returns
        -------
        torch.Tensor
            The same shape; the promoted dtype of the weight and ``x``.
        """
        shape = tuple(self.op.input_shape)
        single = tuple(x.shape) == shape
        if not single and tuple(x.shape[1:]) != shape:
            raise ValueError(f"x must have shape {shape} or (B, *{shape}), got {tuple(x.shape)}")
        batch = x[None] if single else x
        y = self._product(batch, adjoint)
        return y[0] if single else y

    def _product(self, x: torch.Tensor, adjoint: bool = False) -> torch.Tensor:
        weight = self.op._weight_now()
        if x.is_complex() and not weight.is_complex():  # a real map: parts one by one
            return torch.complex(self._product(x.real, adjoint), self._product(x.imag, adjoint))
        inverse = self._current()  # (G, p, p, *F)
        # the data on the transform's grid, its spectrum and the filtered one (complex128)
        check_memory(
            48 * x.shape[0] * x.shape[1] * math.prod(self.grid),
            None,
            f"the preconditioner's product of {x.shape[0]} sample(s) on a {self.grid} grid",
            x.device,
            hint="apply it to fewer samples at a time",
        )
        scale = self._scale  # normal: S M S; right: S M^(1/2), whose adjoint is M^(1/2) S
        dtype = torch.promote_types(weight.dtype, x.dtype)
        real = not weight.is_complex()
        b, c = x.shape[:2]
        size = x.shape[2:]
        nd = len(size)
        z = x.to(dtype)
        if scale is not None and (self.kind == "normal" or adjoint):
            z = z * scale.to(z.dtype)
        if self._cosine:
            z = self._cosine_product(z, inverse)
            if scale is not None and (self.kind == "normal" or not adjoint):
                z = z * scale.to(z.dtype)
            return z
        for i, (n, boundary) in enumerate(zip(size, self.boundaries)):
            if boundary == "reflect":  # the end samples count twice (D = W'^{-1})
                z = z.clone() if z is x else z
                z.narrow(2 + i, 0, 1).mul_(2)
                z.narrow(2 + i, n - 1, 1).mul_(2)
            z = _extend(z, 2 + i, boundary)
        dims = tuple(range(2, 2 + nd))
        spec = torch.fft.rfftn(z, dim=dims) if real else torch.fft.fftn(z, dim=dims)
        g, p = inverse.shape[:2]
        spec = spec.reshape(b, g, p, *spec.shape[2:])
        inverse = inverse.to(spec.dtype)
        if p == 1:
            spec = spec * inverse[None, :, 0]  # (B, G, 1, *F)
        else:
            spec = torch.einsum("gab...,kgb...->kga...", inverse, spec)
        spec = spec.reshape(b, c, *spec.shape[3:])
        if real:
            z = torch.fft.irfftn(spec, s=self.grid, dim=dims)
        else:
            z = torch.fft.ifftn(spec, dim=dims)
        factor = 1.0
        for i, (n, boundary) in enumerate(zip(size, self.boundaries)):
            z = _fold(z, 2 + i, n, boundary)
            if boundary != "periodic":
                factor /= 2
            if boundary == "reflect":
                z.narrow(2 + i, 0, 1).mul_(2)
                z.narrow(2 + i, n - 1, 1).mul_(2)
        z = z * factor if factor != 1 else z
        if scale is not None and (self.kind == "normal" or not adjoint):
            z = z * scale.to(z.dtype)
        return z

    def _cosine_product(self, z: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        """``C^T f(S) C z`` by cosine transforms along the even axes, FFTs along the rest."""
        b, c = z.shape[:2]
        size = z.shape[2:]
        even = [2 + a for a, bd in enumerate(self.boundaries) if bd == "even"]
        periodic = [2 + a for a, bd in enumerate(self.boundaries) if bd == "periodic"]
        for axis in even:
            z = _dct(z, axis)
        if periodic:
            z = torch.fft.rfftn(z, dim=periodic)
        else:
            inverse = inverse.real
        g, p = inverse.shape[:2]
        z = z.reshape(b, g, p, *z.shape[2:])
        inverse = inverse.to(z.dtype)
        if p == 1:
            z = z * inverse[None, :, 0]
        else:
            z = torch.einsum("gab...,kgb...->kga...", inverse, z)
        z = z.reshape(b, c, *z.shape[3:])
        if periodic:
            z = torch.fft.irfftn(z, s=[size[axis - 2] for axis in periodic], dim=periodic)
        for axis in even:
            z = _idct(z, axis)
        return z

    def _matmat(self, X: np.ndarray, adjoint: bool = False) -> np.ndarray:
        X = np.asarray(X)
        dtype = result_dtype(self.dtype, X.dtype, "x")
        n, k = X.shape
        x = to_tensor(X.T, dtype, self.device).reshape(k, *self.op.input_shape)
        with torch.no_grad():
            y = self._product(x, adjoint)
        return to_numpy(y.reshape(k, n)).T

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(np.reshape(x, (-1, 1)))[:, 0]

    def _rmatvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(np.reshape(x, (-1, 1)), adjoint=True)[:, 0]

    def _rmatmat(self, X: np.ndarray) -> np.ndarray:
        return self._matmat(X, adjoint=True)

    def to_pylops(self, name: str | None = None):
        """The preconditioner as a ``pylops.LinearOperator`` (``dims`` = ``op.input_shape``).

        Parameters
        ----------
        name : str, optional
            PyLops' operator name.

        Returns
        -------
        pylops.LinearOperator
        """
        import pylops

        return pylops.LinearOperator(
            self, dims=tuple(self.op.input_shape), dimsd=tuple(self.op.input_shape), name=name
        )


def preconditioner(op: ConvOperator, *, damp: float = 0.0, kind: str = "normal",
                   beta: float | None = None) -> Preconditioner:  # fmt: skip
    """A preconditioner for solves with ``op``: about ``(op^H op + damp^2 I)^{-1}``.

    Applied by fast transforms under the padding mode's boundary model (periodic for
    circular padding, by FFTs; whole-sample symmetric for reflect, by FFTs of the extended
    input; half-sample symmetric for replicate and zeros, by cosine transforms), with one
    small solve over the channels per frequency. For a circulant convolution it is the
    exact inverse: ``cg`` converges in one iteration. Elsewhere it differs from the inverse
    near the boundary. A diagonal scaling gives it ``op^H op``'s exact diagonal (replicate
    padding's end samples weigh up to ``(k/2)^d`` times more), and its own damping ``beta``
    (default: ``damp`` where the model is the operator's own, else at least
    ``convop.deconvolution.MISMATCH_DAMPING`` times the operator's norm: 0.02 for zeros and
    reflect, 0.01 for replicate padding) keeps the rest from making outlying eigenvalues.
    The scaling is left out where that exact diagonal would take more than
    ``convop.deconvolution.DIAGONAL_BYTES`` bytes to compute: large kernels under
    reflect or circular padding whose lags are not mirror-symmetric (a 201 x 201 PSF
    elongated along a diagonal), which keep the unscaled, still positive definite, model.
    Built on first use from the kernel's autocorrelation, in a fraction of a second and a
    few MB even for a 201 x 201 PSF.

    Parameters
    ----------
    op : ConvOperator
        A convolution or transposed convolution with stride 1, or its adjoint; any ndim,
        channels, groups, dilation and padding mode; real or complex.
    damp : float, default 0.0
        The damping of the problem, ``min ||op x - y||^2 + damp^2 ||x||^2``.
    kind : {'normal', 'right'}, default 'normal'
        ``'normal'``: the approximate inverse of ``op^H op + damp^2 I``, for
        ``scipy.sparse.linalg.cg(..., M=P)`` on the normal equations. ``'right'``: a
        factor ``P`` of it (``P P^H`` is the normal one; its symmetric square root where no
        scaling applies), a right preconditioner for ``lsqr``/``lsmr``: solve
        ``[op; damp I] P z = [y; 0]``, then ``x = P z`` (``P^H`` by ``rmatvec``).
    beta : float, optional
        The preconditioner's own damping, instead of the automatic choice.

    Returns
    -------
    Preconditioner
        A ``scipy.sparse.linalg.LinearOperator`` of shape ``(op.shape[1], op.shape[1])``
        (symmetric positive definite for ``'normal'``), with a torch face ``apply`` and
        ``to_pylops()``.

    Raises
    ------
    ValueError
        For a strided operator (its normal operator is not a convolution), a negative or
        non-finite ``damp``/``beta``, or an unknown ``kind``.
    MemoryError
        On first use or in a product, before allocating more than half the memory
        available (the spectrum on the model's grid, the products' workspace).

    Notes
    -----
    ``op^H op`` is the convolution with the kernel's autocorrelation ``R``. With ``E`` the
    extension of the boundary model, ``C`` the circulant of ``R`` on the extended grid and
    ``D`` the weights of the end samples (2 for reflect's, else 1), the preconditioner is
    ``2^{-d} D E^T f(C + beta^2 I) E D`` with ``f(t) = 1/t`` (``'normal'``) or ``t^{-1/2}``
    (``'right'``), over the ``d`` extended axes: symmetric positive definite by
    construction. Along half-sample symmetric axes it equals a DCT-II, the filter and the
    inverse DCT-II of the samples themselves (``2^d`` times less data than the extension);
    where the model is not the operator's it is scaled, ``S P S`` (``S P^{1/2}`` for
    ``'right'``), so that ``S^{-1} P^{-1} S^{-1}`` has ``op^H op``'s diagonal. For kernels
    mirror-symmetric along every axis, with reflect padding, the preconditioned normal
    matrix has its eigenvalues in ``[1, 2]`` for ``beta = damp``.

    Examples
    --------
    Deconvolving a reflect-padded blur with ``cg`` on the normal equations:

    >>> import numpy as np, torch, convop
    >>> from scipy.sparse.linalg import LinearOperator, cg
    >>> g = torch.exp(-torch.linspace(-2, 2, 9, dtype=torch.float64) ** 2)
    >>> w = torch.outer(g, g)[None, None] / g.sum() ** 2
    >>> A = convop.conv2d(w, (1, 64, 64), padding="same", padding_mode="reflect")
    >>> damp = 1e-2
    >>> N = LinearOperator(A.shape[::-1], matvec=lambda v: A.rmatvec(A.matvec(v)) + damp**2 * v,
    ...                    dtype=A.dtype)
    >>> y = A @ np.random.default_rng(0).random(A.shape[1])
    >>> def iterations(**kw):
    ...     count = []
    ...     cg(N, A.rmatvec(y), rtol=1e-6, callback=count.append, **kw)
    ...     return len(count)
    >>> iterations() > 10 * iterations(M=convop.preconditioner(A, damp=damp))
    True
    """
    damp = _check_damp(damp)
    check_choice(kind, "kind", KINDS)
    if beta is not None:
        beta = _check_damp(beta, "beta")
    return Preconditioner(op, damp, kind, beta)


# ---------------------------------------------------------------------- Tikhonov
def _transfer(weight: torch.Tensor, conv: ConvGeometry, real: bool) -> torch.Tensor:
    """The circulant convolution's transfer matrices ``K(f)``: ``(G, O, C, *F)``.

    Output ``i`` reads ``x[(i + t d - lo) mod n]``, so with ``x_hat(f) = sum_i x_i
    e^{-2 pi i f i / n}`` the output's transform is ``sum_t w[t] e^{2 pi i f (t d - lo)/n}
    x_hat(f)``: the weight placed at ``(lo - t d) mod n`` and transformed.
    """
    g = conv.groups
    o, c = conv.out_channels // g, conv.in_channels // g
    grid = conv.input_size
    positions = [
        (lo - torch.arange(k, device=weight.device) * d).remainder(n)
        for k, d, n, (lo, _) in zip(conv.kernel_size, conv.dilation, grid, conv.padding)
    ]
    index = torch.zeros((), dtype=torch.int64, device=weight.device)
    for n, pos in zip(grid, positions):
        index = index[..., None] * n + pos
    w = weight.to(torch.complex128 if weight.is_complex() else torch.float64)
    placed = w.new_zeros((g * o, c, math.prod(grid)))
    placed.index_add_(2, index.reshape(-1), w.reshape(g * o, c, -1))
    placed = placed.reshape(g, o, c, *grid)
    dims = tuple(range(3, 3 + len(grid)))
    return torch.fft.rfftn(placed, dim=dims) if real else torch.fft.fftn(placed, dim=dims)


def _tikhonov_data(op: ConvOperator, y: object,
                   weight: torch.Tensor) -> tuple[torch.Tensor, bool, bool, bool]:  # fmt: skip
    """``(batch, numpy_in, flat, single)``: ``y`` as a ``(B, *op.output_shape)`` tensor.

    In the dtype of the result: numpy's promotion of the operator's and ``y``'s (as ``op @
    x``), torch's for tensors (as ``op.apply``: float16 and bfloat16 data computed in the
    weight's precision). Read, never written to.
    """
    numpy_in = isinstance(y, np.ndarray)
    if numpy_in:
        t = to_tensor(y, result_dtype(op.dtype, y.dtype, "y"), weight.device)
    elif isinstance(y, torch.Tensor):
        if not (y.is_floating_point() or y.is_complex()):
            raise TypeError(f"y must be a floating-point or complex tensor, got {y.dtype}")
        if y.device != weight.device:
            raise ValueError(
                f"y is on {y.device} but the operator's weight is on {weight.device}; "
                f"move it with .to({str(weight.device)!r})"
            )
        t = y.detach()
        t = t.to(torch.promote_types(weight.dtype, t.dtype))
    else:
        raise TypeError(f"y must be a numpy.ndarray or torch.Tensor, got {type(y).__name__}")
    out_shape = tuple(op.output_shape)
    flat = t.ndim == 1 and t.numel() == op.shape[0]
    single = tuple(t.shape) == out_shape
    if flat or single:
        return t.reshape(1, *out_shape), numpy_in, flat, single
    if tuple(t.shape[1:]) == out_shape:
        return t, numpy_in, flat, single
    raise ValueError(
        f"y must have shape {out_shape}, (B, *{out_shape}) or ({op.shape[0]},), "
        f"got {tuple(t.shape)}"
    )


def _tikhonov_damping(damp: object, nsr: object, freq: tuple[int, ...],
                      device: torch.device) -> torch.Tensor:  # fmt: skip
    """The damping ``sqrt(nsr)`` (or ``damp``) as float64: a scalar, or ``freq``-shaped."""
    if nsr is None:
        return torch.tensor(_check_damp(damp), dtype=torch.float64, device=device)
    if isinstance(nsr, (int, float)) and not isinstance(nsr, bool):
        ratio = torch.tensor(_check_damp(nsr, "nsr"), dtype=torch.float64)
    else:
        if isinstance(nsr, bool) or not isinstance(nsr, (np.ndarray, torch.Tensor)):
            raise TypeError(
                f"nsr must be a float, numpy.ndarray or torch.Tensor, got {type(nsr).__name__}"
            )
        kind = nsr.dtype.kind if isinstance(nsr, np.ndarray) else (
            "c" if nsr.is_complex() else "b" if nsr.dtype == torch.bool else "f")  # fmt: skip
        if kind not in "iuf":
            raise TypeError(f"nsr must hold real numbers, got dtype {nsr.dtype}")
        ratio = torch.as_tensor(nsr).detach().to(device="cpu", dtype=torch.float64)
        if not bool(torch.isfinite(ratio).all()) or bool((ratio < 0).any()):
            raise ValueError(
                f"nsr must be finite and >= 0 everywhere, got values from "
                f"{float(ratio.min()) if ratio.numel() else 'none'} to "
                f"{float(ratio.max()) if ratio.numel() else 'none'}"
            )
        try:
            ratio = torch.broadcast_to(ratio, freq)
        except RuntimeError:
            raise ValueError(
                f"nsr must broadcast to the frequency grid {tuple(freq)}, "
                f"got shape {tuple(ratio.shape)}"
            ) from None
    return ratio.sqrt().to(device)  # never squared: damp^2 under- or overflows


def _check_rcond(rcond: object) -> float | None:
    if rcond is None:
        return None
    if isinstance(rcond, bool) or not isinstance(rcond, (int, float)):
        raise TypeError(f"rcond must be a float or None, got {type(rcond).__name__}")
    if not (0 <= rcond < 1):
        raise ValueError(f"rcond must be a float in [0, 1), got {rcond!r}")
    return float(rcond)


def solve_tikhonov(op: ConvOperator, y, damp: float | None = None, *, nsr=None,
                   rcond: float | None = None):  # fmt: skip
    """The exact minimiser of ``||op x - y||^2 + damp^2 ||x||^2`` for a circulant ``op``.

    By one FFT of ``y``, one small filter per frequency and one inverse FFT: with ``K(f)
    = U S V^H`` the transfer matrix at frequency ``f`` (a vector where a group has one
    input or one output channel: no decomposition then), ``x(f) = V phi(S) U^H y(f)``,
    ``phi(s) = s / (s^2 + damp^2)``. With ``nsr`` instead of ``damp``, the Wiener filter
    ``K^H (K K^H + nsr)^{-1}``, where ``nsr`` is the noise-to-signal power ratio: a number
    (white signal; ``damp = sqrt(nsr)``) or an array over the frequencies. Where the
    minimiser is not unique (``damp = 0``, or ``nsr = 0`` somewhere, and a singular
    ``K(f)``), the one of least norm: ``damp = 0`` gives the pseudo-inverse solution, as
    ``numpy.linalg.lstsq`` of the dense matrix would.

    Parameters
    ----------
    op : ConvOperator
        A circulant convolution (circular padding summing to the kernel's reach, stride 1),
        its adjoint or transpose, or a 1-sample transposed convolution; see
        :func:`convop.is_circulant`.
    y : numpy.ndarray or torch.Tensor
        ``op.output_shape``, a batch ``(B, *op.output_shape)``, or flat (``op.shape[0]``).
        A tensor on the operator's device; float16 and bfloat16 data are solved in the
        weight's precision.
    damp : float, optional
        The Tikhonov damping, ``>= 0`` (give ``damp`` or ``nsr``); any finite float:
        ``damp^2`` is never formed.
    nsr : float, numpy.ndarray or torch.Tensor, optional
        The noise-to-signal ratio, ``>= 0``: a number, or an array broadcastable to the
        frequency grid ``(*n[:-1], n[-1] // 2 + 1)`` of a real problem (``n`` for a complex
        one), e.g. ``noise power / signal power spectrum``.
    rcond : float, optional
        Singular values ``s <= rcond * s_max`` of the ``K(f)`` count as zero (``phi(s) =
        0``), ``s_max`` the largest over all frequencies (``op``'s norm), as ``rcond`` in
        ``numpy.linalg.lstsq``. Default: ``eps * (max(p, q) + log2 N)`` for ``p x q``
        matrices ``K(f)`` on a grid of ``N`` samples, ``eps`` of the working precision: the
        round-off of the transforms and of the small decompositions, below which a singular
        value cannot be told from zero. Values under the square root of the smallest
        normal number count as zero whatever ``rcond`` (their squares underflow).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``x`` like ``y``: the same type, batch and flatness, of ``op.input_shape``.

    Raises
    ------
    ValueError
        When ``op`` is not circulant (use :func:`preconditioner` with ``cg`` there), when
        neither or both of ``damp`` and ``nsr`` are given, for a negative or non-finite
        ``damp``, ``nsr`` or ``rcond`` outside ``[0, 1)``, or for a bad shape or device.
    TypeError
        For ``y`` that is not a float or complex array or tensor, or ``damp``, ``nsr`` or
        ``rcond`` of the wrong type.
    MemoryError
        Before allocating more than half the memory available.

    Notes
    -----
    ``damp^2`` is never formed where it could under- or overflow: the filter is
    ``h^2`` or ``(s h) h`` with ``h = 1 / hypot(s, damp)``, applied one factor at a time
    where their product would leave the normal range, and weights far from 1 (beyond
    ``2^+-100``, ``2^+-20`` in single precision) are scaled, exactly, by a power of two,
    ``damp`` with them. So ``damp =
    1e-200`` gives the least-squares solution as ``damp = 0`` does (to round-off),
    ``damp = 1e160`` on data of ``1e300`` gives ``A^H y / damp^2`` (about ``1e-20``), and
    ``damp = 1e200`` on data of order 1 gives ``0``, its entries being below ``1e-300``.
    The SVDs of the ``K(f)`` cost about 3x a solve of the same systems; single-channel
    groups (a vector ``K(f)``) need none.

    Examples
    --------
    >>> import numpy as np, torch, convop
    >>> w = torch.rand(1, 1, 5, 5, dtype=torch.float64)
    >>> op = convop.conv2d(w, (1, 32, 32), padding=2, padding_mode="circular")
    >>> y = np.random.default_rng(0).random(op.shape[0])
    >>> x = convop.solve_tikhonov(op, y, damp=0.1)
    >>> dense = op.todense()
    >>> exact = np.linalg.solve(dense.T @ dense + 0.01 * np.eye(op.shape[1]), dense.T @ y)
    >>> bool(np.allclose(x, exact, atol=1e-10))
    True

    A difference filter is singular (it loses the mean); with ``damp=0`` the solution of
    least norm, which has mean zero:

    >>> d = convop.conv1d(torch.tensor([[[1.0, -1.0]]], dtype=torch.float64), (1, 8),
    ...                   padding="same", padding_mode="circular")
    >>> x = convop.solve_tikhonov(d, d @ np.arange(8.0), damp=0.0)
    >>> bool(np.allclose(x, np.arange(8.0) - 3.5))
    True
    """
    if not isinstance(op, ConvOperator):
        raise TypeError(f"op must be a convop.ConvOperator, got {type(op).__name__}")
    if (damp is None) == (nsr is None):
        raise ValueError("give one of damp and nsr")
    rcond = _check_rcond(rcond)
    conv, input_side = _gram_side(op, "solve_tikhonov()")
    if not is_circulant(op):
        raise ValueError(
            f"solve_tikhonov() needs a circulant convolution (circular padding summing to the "
            f"kernel's reach, stride 1), got the {op.name} with padding_mode="
            f"{op.geometry.padding_mode!r}; solve other boundaries iteratively: "
            f"scipy.sparse.linalg.cg on the normal equations with M=convop.preconditioner(op, "
            f"damp=damp)"
        )
    weight = op._weight_now().detach()  # conjugated for op.T
    batch, numpy_in, flat, single = _tikhonov_data(op, y, weight)
    real = not (weight.is_complex() or batch.is_complex())
    grid = tuple(op.input_shape[1:])
    g = conv.groups
    o, c = conv.out_channels // g, conv.in_channels // g
    rows, cols = (o, c) if input_side else (c, o)  # K(f): cols -> rows per group
    freq = (*grid[:-1], grid[-1] // 2 + 1) if real else grid
    b, m = batch.shape[0], min(rows, cols)
    distance = _tikhonov_damping(damp, nsr, freq, weight.device)  # sqrt(nsr) or damp
    check_memory(16 * g * (3 * o * c * math.prod(grid) + 2 * (rows + cols) * m * math.prod(freq))
                 + 16 * b * g * (rows + m + 2 * cols) * math.prod(freq),
                 None, f"the Tikhonov solve of {b} sample(s) on a {grid} grid", weight.device,
                 hint="solve fewer samples at a time")  # fmt: skip
    double = batch.dtype in (torch.float64, torch.complex128)
    work = torch.complex128 if double else torch.complex64
    fine = torch.float64 if double else torch.float32
    tiny = torch.finfo(fine).tiny
    # weights far from 1 are scaled by a power of two (exactly), and damp with them, so that
    # |K|^2 and the filter stay in the normal range whatever the sizes of weight and damp
    top = float(weight.abs().max()) if weight.numel() else 0.0
    exponent = math.frexp(top)[1] if top > 0 else 0
    comfortable = 100 if double else 20  # |K| >= 2^-comfortable: |K|^2 stays normal
    shift = exponent if abs(exponent) > comfortable else 0
    wide = weight.to(torch.complex128 if weight.is_complex() else torch.float64)
    kernel = _transfer(torch.ldexp(wide, torch.tensor(-shift)) if shift else wide, conv, real)
    k = kernel.permute(0, *range(3, 3 + len(freq)), 1, 2)  # (G, *F, O, C)
    if not input_side:  # op = B^H: its transfer is K^H
        k = k.mH
    k = k.to(work)
    scaled = torch.ldexp(distance, torch.tensor(-shift)) if shift else distance
    scaled = (scaled[None, ..., None] if distance.ndim else scaled).to(fine)  # (1, *F, 1)
    largest_damp = float(scaled.max())
    nd = len(freq)
    dims = tuple(range(2, 2 + nd))
    spec = torch.fft.rfftn(batch, dim=dims) if real else torch.fft.fftn(batch, dim=dims)
    spec = spec.to(work).reshape(b, g, rows, *freq).movedim(2, -1)  # (B, G, *F, rows)
    if m == 1:  # a vector per frequency: s = |K|, U and V its direction
        vector = k.squeeze(-1) if cols == 1 else k.squeeze(-2)  # (G, *F, rows or cols)
        power = (vector.real.square() + vector.imag.square()).sum(-1, keepdim=True)  # s^2
        largest = math.sqrt(float(power.max())) if power.numel() else 0.0
    else:
        u, values, vh = torch.linalg.svd(k, full_matrices=False)  # values: (G, *F, m)
        largest = float(values.max()) if values.numel() else 0.0
    if rcond is None:
        rcond = torch.finfo(fine).eps * (max(rows, cols) + math.log2(max(math.prod(grid), 1)))
    cutoff = max(rcond * largest, math.sqrt(tiny))  # singular values up to it count as 0
    # 1 / (s^2 + damp^2) = h^2 and s / (s^2 + damp^2) = (s h) h, h = 1 / hypot(s, damp),
    # applied one factor at a time where their product could fall below the normal range
    # (a large damp on large data: y ~ 1e300, damp = 1e160 gives x ~ 1e-20)
    split = max(largest, largest_damp) > 0.5 / math.sqrt(tiny)
    if m == 1:  # x = K^H y / (|K|^2 + damp^2)
        keep = power > cutoff * cutoff
        if split:
            h = torch.where(keep, torch.hypot(power.sqrt(), scaled).reciprocal(), 0)
            spec = h * (h * spec)
        else:
            spec = torch.where(keep, (power + scaled.square()).reciprocal(), 0) * spec
        x = vector.conj() * spec  # (B, G, *F, rows or cols)
        x = x if rows == 1 else x.sum(-1, keepdim=True)  # (B, G, *F, cols)
    else:  # x = V phi(S) U^H y, phi(s) = s / (s^2 + damp^2)
        keep = values > cutoff
        safe = torch.where(keep, values, 1)
        h = torch.where(keep, torch.hypot(safe, scaled).reciprocal(), 0)
        x = (u.mH @ spec[..., None])[..., 0]
        x = (h * safe) * (h * x)
        x = (vh.mH @ x[..., None])[..., 0]  # (B, G, *F, cols)
    if shift:  # back from the scaled system
        x = torch.ldexp(x, torch.tensor(-shift, device=x.device))
    x = x.movedim(-1, 2).reshape(b, g * cols, *freq)
    x = torch.fft.irfftn(x, s=grid, dim=dims) if real else torch.fft.ifftn(x, dim=dims)
    x = x.to(batch.dtype)
    if flat:
        x = x.reshape(-1)
    elif single:
        x = x[0]
    return to_numpy(x) if numpy_in else x
