"""Exact Tikhonov and Wiener solves of circulant convolutions, by FFTs."""

from __future__ import annotations

import math

import numpy as np
import torch

from .._fourier.circulant import gram_side, transfer
from .._shared.checks import as_float
from .._shared.memory import check_memory
from ..operator import ConvOperator
from ..spectral import is_circulant
from ._batch import read_batch


def _tikhonov_damping(damp: object, nsr: object, freq: tuple[int, ...],
                      device: torch.device) -> torch.Tensor:  # fmt: skip
    """The damping ``sqrt(nsr)`` (or ``damp``) as float64: a scalar, or ``freq``-shaped."""
    if nsr is None:
        return torch.tensor(
            as_float(damp, "damp", minimum=0.0), dtype=torch.float64, device=device
        )
    if isinstance(nsr, (int, float)) and not isinstance(nsr, bool):
        ratio = torch.tensor(as_float(nsr, "nsr", minimum=0.0), dtype=torch.float64)
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
    r"""The exact minimiser of ``||op x - y||^2 + damp^2 ||x||^2`` for a circulant ``op``.

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

    See Also
    --------
    convop.tikhonov : The same problem for any operator, or over ``x >= 0``.
    convop.choose_damping : A damping chosen from the data.
    convop.is_circulant : Whether an operator is one this solves.
    convop.preconditioner : The fast approximate inverse for other boundaries, for ``cg``.

    Notes
    -----
    With the weight's transfer matrices :math:`K(f)` (as in :func:`convop.svdvals`), the
    minimiser is, frequency by frequency, the Tikhonov filter [1]_ (:math:`\delta` =
    ``damp``)

    .. math::

        \hat x(f) = K(f)^H \big(K(f) K(f)^H + \delta^2 I\big)^{-1} \hat y(f)
        = V \varphi(S)\, U^H \hat y(f), \qquad
        \varphi(s) = \frac{s}{s^2 + \delta^2},

    with :math:`K(f) = U S V^H`; with a noise-to-signal ratio :math:`r(f)` in place of
    :math:`\delta^2` it is the Wiener filter [2]_, the minimiser of
    :math:`\|A x - y\|^2 + \sum_f r(f) |\hat x(f)|^2`.

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

    References
    ----------
    .. [1] P. C. Hansen, J. G. Nagy and D. P. O'Leary, *Deblurring Images: Matrices,
       Spectra, and Filtering*, SIAM, 2006.
    .. [2] N. Wiener, *Extrapolation, Interpolation, and Smoothing of Stationary Time
       Series*, MIT Press, 1949.

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
    conv, input_side = gram_side(op, "solve_tikhonov()")
    if not is_circulant(op):
        raise ValueError(
            f"solve_tikhonov() needs a circulant convolution (circular padding summing to the "
            f"kernel's reach, stride 1), got the {op.name} with padding_mode="
            f"{op.geometry.padding_mode!r}; solve other boundaries iteratively: "
            f"scipy.sparse.linalg.cg on the normal equations with M=convop.preconditioner(op, "
            f"damp=damp)"
        )
    weight = op._weight_now().detach()  # conjugated for op.T
    batch, form = read_batch(op, y, weight)
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
    kernel = transfer(torch.ldexp(wide, torch.tensor(-shift)) if shift else wide, conv, real)
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
    return form.back(x.to(batch.dtype))
