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
which moves the choice little (it is a choice of one number, not a solve).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from ._arrays import to_tensor
from ._checks import check_choice
from ._lags import gram_lags
from .deconvolution import _dct, _gram_side, cosine_symbol
from .operator import ConvOperator
from .spectral import is_circulant

#: The criteria :func:`choose_damping` offers.
METHODS = ("gcv", "discrepancy")
#: Donoho's constant: the median absolute deviation of a standard normal.
MAD_NORMAL = 0.6744897501960817


def estimate_noise(y, axes: tuple[int, ...] | None = None) -> float:
    """The standard deviation of white noise in ``y``, from its finest Haar details.

    The median absolute value of the finest diagonal wavelet coefficients over 0.6745
    (Donoho & Johnstone, Biometrika 1994): a blurred signal has almost nothing at the
    highest frequencies, so what is there is noise.

    Parameters
    ----------
    y : numpy.ndarray or torch.Tensor
        The data.
    axes : tuple of int, optional
        The axes to take the details along (default: all); each needs 2 samples or more.
        Leave out a channel axis.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> from convop.regularization import estimate_noise
    >>> rng = np.random.default_rng(0)
    >>> smooth = np.add.outer(np.linspace(0, 1, 256), np.linspace(0, 1, 256))
    >>> round(estimate_noise(smooth + 0.01 * rng.standard_normal((256, 256))), 3)
    0.01
    """
    t = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y.detach())
    t = t.to(torch.complex128 if t.is_complex() else torch.float64)
    axes = tuple(range(t.ndim)) if axes is None else tuple(a % max(t.ndim, 1) for a in axes)
    if not axes or any(t.shape[a] < 2 for a in axes):
        raise ValueError(
            f"y must have at least 2 samples along each of the axes {axes}, got shape "
            f"{tuple(t.shape)}"
        )
    detail = t
    for axis in axes:  # the Haar high-pass, then every other sample
        m = detail.shape[axis] // 2 * 2
        pairs = detail.narrow(axis, 0, m).unflatten(axis, (m // 2, 2))
        detail = (pairs.select(axis + 1, 0) - pairs.select(axis + 1, 1)) / math.sqrt(2)
    return float(detail.abs().reshape(-1).median()) / MAD_NORMAL


def _spectrum(op: ConvOperator, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(mu, power, top)``: ``A A^H``'s eigenvalues and ``|c|^2`` of ``y``, per frequency.

    Both ``(G, *F, p)``; ``power`` sums to ``||y||^2``; ``top`` is the largest ``mu``.
    """
    conv, input_side = _gram_side(op, "choose_damping()")
    taps, deltas = gram_lags(op.weight.detach(), conv, input_side=not input_side)
    size = tuple(op.output_shape[1:])
    counts = [int(torch.unique(deltas[:, i]).numel()) for i in range(deltas.shape[1])]
    grid = taps.reshape(taps.shape[0], *counts, taps.shape[2])  # (G, *lags, p * p)
    tolerance = 1e-12 * float(taps.abs().max())
    circulant = is_circulant(op)
    boundaries = tuple(
        "even"
        if not circulant and bool(torch.allclose(grid.flip(1 + i), grid, rtol=0, atol=tolerance))
        else "periodic"
        for i in range(len(counts))
    )
    lags = [torch.unique(deltas[:, i]) for i in range(deltas.shape[1])]
    symbol = cosine_symbol(grid, lags, boundaries, size, halve=False)  # (G, p, p, *F)
    blocks = symbol.movedim(1, -1).movedim(1, -1)  # (G, *F, p, p)
    mu, vectors = torch.linalg.eigh(blocks)
    mu = mu.clamp(min=0)
    z = y
    for a, boundary in enumerate(boundaries):
        if boundary == "even":
            z = _dct(z, 1 + a)
    periodic = [1 + a for a, b in enumerate(boundaries) if b == "periodic"]
    if periodic:
        z = torch.fft.fftn(z, dim=periodic)
    g, p = blocks.shape[0], blocks.shape[-1]
    z = z.reshape(g, p, *z.shape[1:]).movedim(1, -1)[..., None]  # (G, *F, p, 1)
    c = (vectors.mH @ z.to(vectors.dtype))[..., 0]
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


def choose_damping(op: ConvOperator, y, *, method: str = "gcv",
                   noise: float | None = None) -> float:  # fmt: skip
    """The Tikhonov damping for ``min ||op x - y||^2 + damp^2 ||x||^2``, chosen from ``y``.

    Parameters
    ----------
    op : ConvOperator
        A stride-1 convolution, transposed convolution or adjoint; any channels.
    y : numpy.ndarray or torch.Tensor
        The data: ``op.output_shape`` or flat (``op.shape[0]``).
    method : {'gcv', 'discrepancy'}, default 'gcv'
        ``'gcv'``: the minimiser of generalised cross-validation, ``||r(damp)||^2 /
        trace(I - A A^+_damp)^2`` (needs no noise level). ``'discrepancy'``: the damping
        whose residual ``||r(damp)||`` equals the noise's expected norm, ``noise *
        sqrt(op.shape[0])`` (Morozov).
    noise : float, optional
        The noise's standard deviation, for ``'discrepancy'``; default: estimated from
        ``y`` by :func:`estimate_noise`.

    Returns
    -------
    float
        ``damp``, between ``1e-7`` and ``1`` times the operator's norm.

    Raises
    ------
    ValueError
        For a strided operator, a ``y`` of the wrong size or with NaN or Inf values, an
        unknown method or a negative noise level.

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
    if noise is not None:
        if isinstance(noise, bool) or not isinstance(noise, (int, float)):
            raise TypeError(f"noise must be a float, got {type(noise).__name__}")
        if not (math.isfinite(noise) and noise >= 0):
            raise ValueError(f"noise must be a finite float >= 0, got {noise!r}")
    if isinstance(y, torch.Tensor):
        t = y.detach().to("cpu")
    elif isinstance(y, np.ndarray):
        t = to_tensor(y, y.dtype, torch.device("cpu"))
    else:
        raise TypeError(f"y must be a numpy.ndarray or torch.Tensor, got {type(y).__name__}")
    shape = tuple(op.output_shape)
    if t.numel() != op.shape[0] or (t.ndim != 1 and tuple(t.shape) != shape):
        raise ValueError(f"y must have shape {shape} or ({op.shape[0]},), got {tuple(t.shape)}")
    t = t.reshape(shape).to(torch.complex128 if t.is_complex() else torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("y has NaN or Inf values: no damping fits them")
    mu, power, top = _spectrum(op, t.to(op.device))
    mu, power = mu.reshape(-1).cpu(), power.reshape(-1).cpu()
    if top <= 0:
        raise ValueError("the operator is zero: no damping makes it invertible")
    low, high = math.log(1e-7 * math.sqrt(top)), math.log(math.sqrt(top))

    def residual(log_damp: float) -> float:  # ||r||^2
        a2 = math.exp(2 * log_damp)
        return float((power * (a2 / (mu + a2)) ** 2).sum())

    if method == "discrepancy":
        spatial = tuple(range(1, t.ndim))
        sigma = estimate_noise(t, spatial) if noise is None else float(noise)
        target = sigma**2 * op.shape[0]
        if residual(low) >= target:
            return math.exp(low)
        if residual(high) <= target:
            return math.exp(high)
        for _ in range(100):  # the residual grows with damp: bisect in log damp
            middle = (low + high) / 2
            low, high = (middle, high) if residual(middle) < target else (low, middle)
        return math.exp((low + high) / 2)

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
        return math.exp(candidates[best])
    found = minimize_scalar(gcv, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return math.exp(found.x if found.fun <= values[best] else candidates[best])
