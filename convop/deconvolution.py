"""Preconditioners for solves with convolution operators, from the kernel's spectrum.

:func:`preconditioner`: a fast approximation of ``(A^H A + damp^2 I)^{-1}`` (or its square
root), for ``scipy.sparse.linalg.cg`` on the normal equations (``M=``) or as a right
preconditioner for ``lsqr``/``lsmr``. ``A^H A`` is a convolution with the kernel's
autocorrelation; the preconditioner inverts that convolution under a boundary model matched
to the padding mode, by fast transforms (per frequency, a small solve over the channels),
scaled where the model is not the operator's so that both share the diagonal:

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

The frequency-domain machinery is shared with :func:`convop.choose_damping` and lives in
:mod:`convop._fourier`: the lags and the Gram symbol under the model (``symbol``), the
extensions, folds and cosine transforms (``boundary``), the exact diagonal
(``gram_diagonal``). This module chooses the model, the preconditioner's own damping and
the scaling, and applies them. The maths (the extensions, why the reflect model weights the
end samples, the preconditioner's own damping, the diagonal scaling) is in
``docs/conventions.md``, section 11; every step that allocates in proportion to the grid
asks the memory guard (:func:`convop._shared.memory.check_memory`) first. The exact
Tikhonov solve of a circulant convolution is :func:`convop.solve_tikhonov`
(:mod:`convop.solvers`).
"""

from __future__ import annotations

import math

import torch

from ._base import Derived
from ._fourier.boundary import (
    extend,
    extended_length,
    fold,
    inverse_transform,
    model_diagonal,
    transform,
)
from ._fourier.circulant import gram_side
from ._fourier.gram_diagonal import diagonal_bytes, gram_diagonal
from ._fourier.symbol import Lags, diagonalise, gram_symbol
from ._shared.checks import as_float, check_choice
from ._shared.memory import check_memory
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
#: (:func:`convop._fourier.gram_diagonal.diagonal_bytes`) for the preconditioner's scaling;
#: its work grows with them. Near corners it costs ``~ (pad * n)^d`` for large kernels under
#: reflect or circular padding (a 201 x 201 kernel on 256^2: 39 GiB, hours), a 3 x 3
#: replicate kernel on 4096^2 384 MiB and 0.3 s. Beyond it the preconditioner is unscaled.
DIAGONAL_BYTES = 2**30

#: Apply half-sample symmetric models by cosine transforms (else by FFTs of the extension,
#: the same operator at 2^d times the data; kept as the reference the tests compare with).
COSINE = True


# ---------------------------------------------------------------------- preconditioner
class Preconditioner(Derived):
    """A fast approximation of ``(op^H op + beta^2 I)^{-1}`` or of its square root.

    Made by :func:`preconditioner`; see there. Symmetric positive definite
    (``kind='normal'``; ``'right'`` is a factor of it, see there). A convop operator
    (``convop._base``): a ``scipy.sparse.linalg.LinearOperator`` with a torch face
    (:meth:`apply`, :meth:`apply_adjoint`) and ``to_pylops()``; its dtype follows the
    operator's weight. Built lazily: the kernel's spectrum is computed on first use, and
    again whenever the weight's values change.

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
        conv, input_side = gram_side(op, "preconditioner()")
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
        super().__init__(op, op.input_shape, op.input_shape)

    def _set_boundaries(self, boundaries: tuple[str, ...]) -> None:
        self.boundaries = boundaries
        size = self.op.input_shape[1:]
        self.grid = tuple(extended_length(n, b) for n, b in zip(size, boundaries))

    @property
    def name(self) -> str:
        """``'normal preconditioner of the conv2d'``, ..."""
        return f"{self.kind} preconditioner of the {self.op.name}"

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

    def _current(self) -> torch.Tensor:
        """The filter ``f(S + beta^2 I)`` for the weight as it is now: ``(G, p, p, *F)``."""
        weight = self.op._weight_now().detach().resolve_conj()  # conjugated for op.T
        key = self._key
        if key is not None and key.shape == weight.shape and torch.equal(key, weight):
            return self._filter
        lags = Lags.of(weight, self._conv, input_side=self._input_side)
        # a symmetric model holds only along the axes where the lags are mirror-symmetric;
        # periodic holds for any
        symmetric = all(lags.mirrored)
        models = lags.model(self._models)
        self._set_boundaries(models)
        real = not weight.is_complex()
        # half-sample symmetric axes by cosine transforms of the samples themselves (no
        # extension: 2^d times less data), where no axis needs reflect's extension
        self._cosine = COSINE and real and "even" in models and "reflect" not in models
        size = tuple(self.op.input_shape[1:])
        symbol = gram_symbol(lags, models, size, extended=not self._cosine, nyquist=True,
                             halve=real, what="the preconditioner's spectrum")  # fmt: skip
        if self._cosine:
            self.grid = size
        values, vectors = diagonalise(symbol)  # (G, *F, p), (G, *F, p, p)
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
        self._scale = None if matched else self._equilibration(weight, lags)
        self._key = weight.clone()
        self.beta = beta
        return self._filter

    def _equilibration(self, weight: torch.Tensor, lags: Lags) -> torch.Tensor | None:
        """``S``, making ``S^{-1} M^{-1} S^{-1}`` share ``op^H op``'s diagonal, or None.

        Where the boundary model is not the operator's, their diagonals differ near the
        boundary: replicate padding reads its end samples through many taps, so their
        columns weigh up to ``(k/2)^d`` times more, and each makes an outlying eigenvalue.
        Scaling by ``S = sqrt(diag(model) / diag(op^H op))`` (exact, by
        :func:`convop._fourier.gram_diagonal.gram_diagonal`) puts them back in the cluster. Not for
        reflect's whole-sample model, whose end weights ``D`` serve the same purpose, nor
        on the output side.
        """
        if not self._input_side or "reflect" in self.boundaries:
            return None
        if diagonal_bytes(self._conv, weight.dtype) > DIAGONAL_BYTES:
            return None  # too costly to compute exactly: unscaled (still SPD, slower)
        size = tuple(self.op.input_shape[1:])
        g, p = lags.grid.shape[0], lags.size
        model = model_diagonal(lags.diagonal(), lags.values, self.boundaries, size)
        model = model.reshape(g * p, *size)
        actual = gram_diagonal(weight, self._conv)
        ratio = torch.where((actual > 0) & (model > 0), model / actual.clamp(min=1e-300), 1.0)
        return ratio.sqrt()

    # ------------------------------------------------------------------ products
    def apply(self, x: torch.Tensor, *, adjoint: bool = False) -> torch.Tensor:
        """The preconditioner applied to a batch of tensors.

        Parameters
        ----------
        x : torch.Tensor
            Shape ``(..., *op.input_shape)``, any leading dimensions (none for one sample),
            on the operator's device.
        adjoint : bool, default False
            Apply ``P^H`` instead (which differs from ``P`` only for ``kind='right'`` with a
            diagonal scaling): the same as :meth:`apply_adjoint`, which every convop operator
            has; kept for code written before it.

        Returns
        -------
        torch.Tensor
            The same shape; the promoted dtype of the weight and ``x``.
        """
        return self.apply_adjoint(x) if adjoint else super().apply(x)

    def _product(self, x: torch.Tensor, *, adjoint: bool, grad: bool = False) -> torch.Tensor:
        """``P`` (``P^H`` if ``adjoint``) of a batch ``(B, *op.input_shape)``: the contract."""
        weight = self.op._weight_now()
        if not grad:
            x = x.detach()
        if x.is_complex() and not weight.is_complex():  # a real map: parts one by one
            parts = (self._product(p, adjoint=adjoint, grad=grad) for p in (x.real, x.imag))
            return torch.complex(*parts)
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
            z = extend(z, 2 + i, boundary)
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
            z = fold(z, 2 + i, n, boundary)
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
        size = tuple(z.shape[2:])
        z = transform(z, self.boundaries, 2, half=True)
        if "periodic" not in self.boundaries:  # the cosine transforms alone: real
            inverse = inverse.real
        g, p = inverse.shape[:2]
        z = z.reshape(b, g, p, *z.shape[2:])
        inverse = inverse.to(z.dtype)
        if p == 1:
            z = z * inverse[None, :, 0]
        else:
            z = torch.einsum("gab...,kgb...->kga...", inverse, z)
        z = z.reshape(b, c, *z.shape[3:])
        return inverse_transform(z, self.boundaries, 2, size, half=True)


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

    See Also
    --------
    pcg : Conjugate gradients on the normal equations, preconditioned by this by default.
    solve_tikhonov : The exact solve where ``op`` is circulant.
    choose_damping : A damping from the data, under the same boundary models.

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

    Under the periodic model ``C`` is Strang's circulant preconditioner [1]_ of the (block)
    Toeplitz matrix ``op^H op``: its central diagonals, wrapped around. T. Chan's optimal
    circulant [2]_, the nearest in the Frobenius norm, weights the lag ``j`` by ``1 - |j|/n``
    instead and differs from it by ``O(k/n)`` for a kernel of ``k`` taps; both are reviewed
    in [3]_. Half-sample symmetric models follow Ng, Chan and Tang [4]_: under Neumann
    (half-sample symmetric) boundary conditions the blur of a symmetric kernel is
    diagonalised by the DCT-II.

    References
    ----------
    .. [1] G. Strang, "A proposal for Toeplitz matrix calculations," Stud. Appl. Math. 74
       (1986), 171-176.
    .. [2] T. F. Chan, "An optimal circulant preconditioner for Toeplitz systems," SIAM J.
       Sci. Stat. Comput. 9 (1988), 766-771.
    .. [3] R. H. Chan and M. K. Ng, "Conjugate gradient methods for Toeplitz systems," SIAM
       Rev. 38 (1996), 427-482.
    .. [4] M. K. Ng, R. H. Chan and W.-C. Tang, "A fast algorithm for deblurring models with
       Neumann boundary conditions," SIAM J. Sci. Comput. 21 (1999), 851-866.

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
    damp = as_float(damp, "damp", minimum=0.0)
    check_choice(kind, "kind", KINDS)
    if beta is not None:
        beta = as_float(beta, "beta", minimum=0.0)
    return Preconditioner(op, damp, kind, beta)
