"""Choosing the Tikhonov damping from the data: generalised cross-validation and discrepancy.

For ``min ||A x - y||^2 + damp^2 ||x||^2``, both criteria need the residual
``||(I - A (A^H A + damp^2 I)^{-1} A^H) y||`` as a function of ``damp``, and GCV the
trace of that matrix. Under a boundary model that diagonalises ``A A^H`` (the output
side's Gram) they are sums over frequencies (Hansen, Nagy & O'Leary, *Deblurring Images*,
SIAM 2006, ch. 6): with eigenvalues ``mu`` and coefficients ``c`` of ``y`` in the
eigenvectors, the residual is ``sum (damp^2 / (mu + damp^2))^2 |c|^2`` and the trace
``sum damp^2 / (mu + damp^2)``. The model is the one :func:`convop.preconditioner`
uses: periodic (the DFT) for circulant operators and along axes where the lags are not
mirror-symmetric, half-sample symmetric (the DCT-II) elsewhere. For circulant operators
both criteria are exact; elsewhere the model differs from the operator near the boundary,
which moves the choice little (it is a choice of one number, not a solve). Along periodic
axes of such operators the data's periodic component (Moisan's) is what is transformed:
the jump between an image's opposite edges would otherwise read as high-frequency data,
as much residual as the noise, and the discrepancy principle would damp 10-20 times too
little. ``choose_damping(..., method="discrepancy", exact=True)`` then matches the
operator's own residual, by a few preconditioned solves.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from ._fourier.boundary import transform
from ._fourier.circulant import gram_side
from ._fourier.symbol import Lags, diagonalise, gram_symbol
from ._shared.checks import check_choice
from ._shared.memory import check_memory
from .noise import as_data, noise_sigma, normalised
from .operator import ConvOperator
from .spectral import is_circulant

#: The criteria :func:`choose_damping` offers.
METHODS = ("gcv", "discrepancy")
#: ``choose_damping(method="discrepancy")`` stops when the residual is within this
#: relative distance of its target.
DISCREPANCY_RTOL = 1e-3
#: Limits of that search: solves, and ``cg`` iterations per solve.
MAX_SOLVES = 30
MAX_CG = 500


def _periodic_component(y: torch.Tensor, axes: list[int]) -> torch.Tensor:
    """``y`` less its smooth component along ``axes``: Moisan's periodic component.

    ``y = p + s`` where ``s`` is smooth (its discrete Laplacian along ``axes`` is zero but
    for the jumps between ``y``'s opposite ends) and ``p`` has no such jumps, so that its
    DFT holds no boundary artefact: the cross of energy along the frequency axes that a
    non-periodic image puts into a periodic model (L. Moisan, "Periodic plus smooth image
    decomposition", J. Math. Imaging Vis. 2011).
    """
    jumps = torch.zeros_like(y)
    laplacian = torch.zeros((), dtype=torch.float64, device=y.device)
    for axis in axes:
        n = y.shape[axis]
        step = y.narrow(axis, n - 1, 1) - y.narrow(axis, 0, 1)  # last - first
        jumps.narrow(axis, 0, 1).add_(step)
        jumps.narrow(axis, n - 1, 1).sub_(step)
        f = torch.arange(n, dtype=torch.float64, device=y.device)
        along = 2 * torch.cos(2 * math.pi * f / n) - 2
        shape = [1] * y.ndim
        shape[axis] = n
        laplacian = laplacian + along.reshape(shape)
    spectrum = torch.fft.fftn(jumps, dim=axes)
    laplacian = laplacian.expand(*[y.shape[a] if a in axes else 1 for a in range(y.ndim)])
    smooth = torch.where(laplacian == 0, 0, spectrum / torch.where(laplacian == 0, 1, laplacian))
    smooth = torch.fft.ifftn(smooth, dim=axes)
    return y - (smooth if y.is_complex() else smooth.real)


def _spectrum(op: ConvOperator, kernel: torch.Tensor,
              y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:  # fmt: skip
    """``(mu, power, top)``: ``A A^H``'s eigenvalues and ``|c|^2`` of ``y``, per frequency.

    ``A`` is ``op`` with ``kernel`` for its weight. Both ``(G, *F, p)``; ``power`` sums to
    ``||y||^2``; ``top`` is the largest ``mu``.
    """
    conv, input_side = gram_side(op, "choose_damping()")
    size = tuple(op.output_shape[1:])
    g = conv.groups
    p = op.output_shape[0] // g
    lags = Lags.of(kernel, conv, input_side=not input_side)  # of A A^H
    circulant = is_circulant(op)
    boundaries = lags.model(("periodic" if circulant else "even",) * conv.ndim)
    symbol = gram_symbol(lags, boundaries, size, halve=False,
                         what="choose_damping()'s spectrum")  # fmt: skip
    mu, vectors = diagonalise(symbol)  # (G, *F, p), (G, *F, p, p)
    periodic = [1 + a for a, b in enumerate(boundaries) if b == "periodic"]
    z = y if circulant or not periodic else _periodic_component(y, periodic)
    z = transform(z, boundaries, 1)  # DCT-IIs and DFTs: (C, *F)
    z = z.reshape(g, p, *z.shape[1:]).movedim(1, -1)[..., None]  # (G, *F, p, 1)
    common = torch.promote_types(vectors.dtype, z.dtype)  # complex data, real symbol
    c = (vectors.to(common).mH @ z.to(common))[..., 0]
    weight = torch.ones((), dtype=torch.float64)
    for n, boundary in zip(size, boundaries):
        if boundary == "even":  # the DCT-II's orthonormal scaling, squared
            w = torch.full((n,), 2.0 / n, dtype=torch.float64)
            w[0] = 1.0 / n
        else:
            w = torch.full((n,), 1.0 / n, dtype=torch.float64)
        weight = weight[..., None] * w
    power = c.abs().square() * weight.to(c.device)[None, ..., None]
    return mu, power, float(mu.max()) if mu.numel() else 0.0


def _cg_rtol(dtype: np.dtype) -> float:
    """The relative residual at which :func:`_match_residual`'s solves stop, in ``dtype``.

    scipy's ``cg`` stops once ``||b - N x|| < rtol ||b||`` (its recursively updated
    residual), so each solve's ``x`` is within ``rtol ||b|| / lambda_min(N)`` of the exact
    one: ``1e-7`` in float64, ``sqrt(eps) / 10`` (3.5e-5) in float32.
    """
    return max(1e-7, float(np.sqrt(np.finfo(dtype).eps)) * 1e-1)


def _match_residual(op: ConvOperator, y: np.ndarray, target: float, start: float,
                    bounds: tuple[float, float]) -> float:  # fmt: skip
    """The damping in ``bounds`` (logs) at which ``||y - op x_damp|| = target``, for ``op``.

    ``x_damp`` solves ``(op^H op + damp^2 I) x = op^H y`` by scipy's ``cg`` with
    :func:`convop.preconditioner`, warm-started from the previous damping's solution. The
    residual grows with the damping: from ``start`` (log), steps of a factor 2 bracket the
    root, then false position (Illinois) on ``log ||r||`` against ``log damp`` closes in to
    :data:`DISCREPANCY_RTOL`.
    """
    from scipy.sparse.linalg import LinearOperator, cg

    from .deconvolution import preconditioner

    n = op.shape[1]
    dtype = np.result_type(op.dtype, y.dtype)
    rtol = _cg_rtol(dtype)
    rhs = op.rmatvec(y)
    x = np.zeros(n, dtype=dtype)
    low, high = bounds

    def excess(u: float) -> float:  # log(||r|| / target), increasing in u
        nonlocal x
        d2 = math.exp(2 * u)
        normal = LinearOperator(
            (n, n), dtype=dtype, matvec=lambda v: op.rmatvec(op.matvec(v)) + d2 * v
        )
        M = preconditioner(op, damp=math.exp(u))
        x, _ = cg(normal, rhs, x0=x, rtol=rtol, maxiter=MAX_CG, M=M)
        return math.log(max(float(np.linalg.norm(y - op.matvec(x))), 1e-300) / target)

    tolerance = math.log1p(DISCREPANCY_RTOL)
    b = min(max(start, low), high)
    fb = excess(b)
    if abs(fb) <= tolerance:
        return math.exp(b)
    step = math.log(2.0) if fb < 0 else -math.log(2.0)
    while True:  # steps of a factor 2 until the residual crosses the target
        c = min(max(b + step, low), high)
        if c == b:
            return math.exp(b)  # the target lies beyond the bounds
        a, fa, b, fb = b, fb, c, excess(c)
        if abs(fb) <= tolerance:
            return math.exp(b)
        if (fb < 0) != (fa < 0):
            break
    for _ in range(MAX_SOLVES):  # Illinois: false position that halves a stale end
        c = b - fb * (b - a) / (fb - fa)
        fc = excess(c)
        if abs(fc) <= tolerance:
            return math.exp(c)
        if (fc < 0) != (fb < 0):
            a, fa = b, fb
        else:
            fa /= 2
        b, fb = c, fc
    return math.exp(b)


def choose_damping(op: ConvOperator, y, *, method: str = "gcv",
                   noise: float | None = None, exact: bool = False) -> float:  # fmt: skip
    r"""The Tikhonov damping for ``min ||op x - y||^2 + damp^2 ||x||^2``, chosen from ``y``.

    Parameters
    ----------
    op : ConvOperator
        A stride-1 convolution, transposed convolution, adjoint or transpose (``op.T``,
        whose weight is applied conjugated); any channels.
    y : numpy.ndarray or torch.Tensor
        The data: ``op.output_shape`` or flat (``op.shape[0]``); real or complex, any float
        or int dtype (computed in float64). Never written to.
    method : {'gcv', 'discrepancy'}, default 'gcv'
        ``'gcv'``: the minimiser of generalised cross-validation, ``||r(damp)||^2 /
        trace(I - A A^+_damp)^2`` (needs no noise level). ``'discrepancy'``: the damping
        whose residual ``||r(damp)||`` equals the noise's expected norm, ``noise *
        sqrt(op.shape[0])`` (Morozov's discrepancy principle).
    noise : float, optional
        The noise's standard deviation in ``y``'s units (for complex ``y``, ``sqrt(E|n|^2)``),
        for ``'discrepancy'``; default: estimated from ``y`` by :func:`estimate_noise`.
    exact : bool, default False
        For ``'discrepancy'`` on an operator that is not circulant: match the residual of
        ``op`` itself, not of the boundary model, by a few solves of the normal equations
        (scipy's ``cg`` with :func:`convop.preconditioner`, each a fraction of a deblur)
        to a relative ``1e-3``. The model's choice is usually within a few percent of it,
        closer than the noise level is known.

    Returns
    -------
    float
        ``damp``, between ``1e-7`` and ``1`` times the operator's norm.

    Raises
    ------
    ValueError
        For a strided operator, a ``y`` of the wrong size or with NaN or Inf values, an
        unknown method or a negative or infinite noise level.
    TypeError
        For an ``op`` that is not a :class:`convop.ConvOperator`, a ``y`` that is not an
        array of numbers, a ``noise`` that is not a real number, a non-bool ``exact``.
    MemoryError
        Before allocating, where the spectrum would take more than half the memory
        available.

    See Also
    --------
    estimate_noise : The noise level the discrepancy principle uses by default.
    convop.tikhonov : The Tikhonov solve, given the damping.
    convop.solve_tikhonov : The exact Tikhonov solve of circulant operators.
    convop.pcg : The preconditioned CG solve of the normal equations.
    convop.preconditioner : Whose boundary model the criteria are evaluated under.

    Notes
    -----
    With :math:`\delta` the damping, :math:`\mu_k` the eigenvalues of :math:`A A^H` under
    the boundary model and :math:`c_k` the coefficients of :math:`y` in its eigenvectors,
    the residual of the Tikhonov solution and the trace of the residual's matrix are sums
    over frequencies [1]_,

    .. math::

        \|r(\delta)\|^2 = \sum_k \Big(\frac{\delta^2}{\mu_k + \delta^2}\Big)^2 |c_k|^2,
        \qquad
        t(\delta) = \operatorname{tr}\big(I - A (A^H A + \delta^2 I)^{-1} A^H\big)
        = \sum_k \frac{\delta^2}{\mu_k + \delta^2} .

    ``'gcv'`` minimises :math:`\|r(\delta)\|^2 / t(\delta)^2` [2]_ over a grid in
    :math:`\log \delta`, refined by a bounded scalar search; ``'discrepancy'`` solves
    :math:`\|r(\delta)\| = \sigma \sqrt{m}` for the noise level :math:`\sigma` and
    :math:`m` data samples [3]_ (by bisection in :math:`\log \delta`: the residual grows
    with :math:`\delta`). The model is the one :func:`convop.preconditioner` uses: periodic
    (the DFT) for circulant operators and along the axes where the kernel's lags are not
    mirror-symmetric, half-sample symmetric (the DCT-II) elsewhere; exact for circulant
    operators. Along the periodic axes of other operators the data's periodic component
    [4]_ is transformed, so that the jump between opposite edges does not read as
    high-frequency residual.

    The choice does not depend on the scale of the data: ``y`` is scaled by a power of two
    to a largest value in ``[0.5, 1)`` first (and a given ``noise`` with it), so
    ``choose_damping(op, c * y)`` is ``choose_damping(op, y)`` for every ``c`` (bit for bit
    when ``c`` is a power of two and ``c * y`` is exact), and the same holds for
    ``noise=c * sigma`` against ``noise=sigma``. A fixed ``noise`` with a rescaled ``y``
    is a different noise level, and a different damping. The operator's weight is scaled
    the same way: ``c * op`` gets ``c`` times the damping. Constant or zero data has a
    zero noise estimate: the discrepancy principle then returns the lowest damping.

    On photographs GCV tends to damp too little: 0.4-2.0 dB below the best damping of a
    sweep on a 256^2 crop of scikit-image's ``camera``, where the discrepancy principle came
    within 0.5 dB in 11 of 12 cases (two images, Gaussian and motion blur, 0.5-2% noise;
    ``benchmarks/bench_deblur_quality.py``). ``convop deblur`` uses the discrepancy
    principle.

    References
    ----------
    .. [1] P. C. Hansen, J. G. Nagy and D. P. O'Leary, *Deblurring Images: Matrices,
       Spectra, and Filtering*, SIAM, 2006.
    .. [2] G. H. Golub, M. Heath and G. Wahba, "Generalized Cross-Validation as a Method
       for Choosing a Good Ridge Parameter," Technometrics 21 (1979), 215-223.
    .. [3] V. A. Morozov, "On the Solution of Functional Equations by the Method of
       Regularization," Soviet Math. Dokl. 7 (1966), 414-417.
    .. [4] L. Moisan, "Periodic Plus Smooth Image Decomposition," J. Math. Imaging Vis. 39
       (2011), 161-179.

    Examples
    --------
    >>> import numpy as np, torch, convop
    >>> from convop.data import gaussian_kernel, phantom
    >>> w = torch.from_numpy(gaussian_kernel(9, 2.0))[None, None]
    >>> A = convop.conv2d(w, (1, 128, 128), padding="same", padding_mode="reflect")
    >>> rng = np.random.default_rng(0)
    >>> y = A @ phantom(128).ravel() + 0.01 * rng.standard_normal(A.shape[0])
    >>> damp = convop.choose_damping(A, y)
    >>> bool(0.005 < damp < 0.2)
    True
    """
    if not isinstance(op, ConvOperator):
        raise TypeError(f"op must be a convop.ConvOperator, got {type(op).__name__}")
    check_choice(method, "method", METHODS)
    if not isinstance(exact, bool):
        raise TypeError(f"exact must be a bool, got {type(exact).__name__}")
    if noise is not None:
        if isinstance(noise, bool) or not isinstance(noise, numbers.Real):
            raise TypeError(f"noise must be a float, got {type(noise).__name__}")
        try:
            finite = math.isfinite(noise) and noise >= 0
        except OverflowError:  # an int beyond float64
            finite = False
        if not finite:
            raise ValueError(f"noise must be a finite float >= 0, got {noise!r}")
        noise = float(noise)
    if not isinstance(y, (np.ndarray, torch.Tensor)):
        raise TypeError(f"y must be a numpy.ndarray or torch.Tensor, got {type(y).__name__}")
    shape = tuple(op.output_shape)
    if math.prod(y.shape) != op.shape[0] or (y.ndim != 1 and tuple(y.shape) != shape):
        raise ValueError(f"y must have shape {shape} or ({op.shape[0]},), got {tuple(y.shape)}")
    conv, _ = gram_side(op, "choose_damping()")
    channels, size = shape[0], shape[1:]
    g = conv.groups
    wide = math.prod(max(n, 2 * k - 1) for n, k in zip(size, conv.kernel_size))
    check_memory(  # the symbol and its eigenvectors, and a few copies and transforms of y
        16 * (4 * channels * (channels // g) * wide + 8 * channels * math.prod(size)), None,
        f"choose_damping()'s spectrum of a {shape} output", op.device,
        hint="choose the damping on a crop of the data",
    )  # fmt: skip
    # Both scaled by powers of two: the choice is the same at every scale of y (and of
    # sigma with it), and nothing below overflows or underflows.
    t, e = normalised(as_data(y).reshape(shape))
    # The weight op applies: conjugated for a transpose (``op.T``), which ``op.weight`` is
    # not; resolved, as ``view_as_real`` refuses a conjugated view.
    applied = op._weight_now().resolve_conj()
    weight, f = normalised(as_data(applied, "op's weight"), "op's weight")
    mu, power, top = _spectrum(op, weight, t.to(op.device))
    mu, power = mu.reshape(-1).cpu().numpy(), power.reshape(-1).cpu().numpy()  # fast loops
    if top <= 0:
        raise ValueError("the operator is zero: no damping makes it invertible")
    low, high = math.log(1e-7 * math.sqrt(top)), math.log(math.sqrt(top))

    def damping(log_damp: float) -> float:  # in op's units
        try:
            return math.ldexp(math.exp(log_damp), f)
        except OverflowError:
            raise ValueError("op's norm exceeds float64's range: scale its weight down") from None

    def residual(log_damp: float) -> float:  # ||r||^2
        a2 = math.exp(2 * log_damp)
        return float((power * (a2 / (mu + a2)) ** 2).sum())

    if method == "discrepancy":
        spatial = tuple(range(1, t.ndim))
        # ||y|| < sqrt(n) now: a sigma of 2**64 is beyond every residual, as any larger one
        sigma = noise_sigma(t, spatial) if noise is None else min(_ldexp(noise, -e), 2.0**64)
        target = sigma * sigma * op.shape[0]
        if residual(low) >= target:
            found = low
        elif residual(high) <= target:
            found = high
        else:
            a, b = low, high
            for _ in range(100):  # the residual grows with damp: bisect in log damp
                middle = (a + b) / 2
                a, b = (middle, b) if residual(middle) < target else (a, middle)
            found = (a + b) / 2
        if not exact or is_circulant(op) or target == 0:
            return damping(found)
        flat = t.reshape(-1).cpu().numpy()
        shift = f * math.log(2.0)  # op's own units
        return _match_residual(op, flat, math.sqrt(target), found + shift,
                               (low + shift, high + shift))  # fmt: skip

    def gcv(log_damp: float) -> float:
        a2 = math.exp(2 * log_damp)
        trace = float((a2 / (mu + a2)).sum())
        return residual(log_damp) / max(trace, 1e-300) ** 2

    candidates = np.linspace(low, high, 141)
    values = [gcv(v) for v in candidates]
    best = int(np.argmin(values))
    step = candidates[1] - candidates[0]
    lo, hi = candidates[max(best - 1, 0)], candidates[min(best + 1, len(candidates) - 1)]
    if hi - lo < step / 2:
        return damping(candidates[best])
    found = minimize_scalar(gcv, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return damping(found.x if found.fun <= values[best] else candidates[best])


def _ldexp(x: float, e: int) -> float:
    """``x * 2**e``, ``inf`` where that exceeds float64 (``math.ldexp`` raises there)."""
    try:
        return math.ldexp(x, e)
    except OverflowError:
        return math.inf
