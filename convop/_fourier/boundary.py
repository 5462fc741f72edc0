"""Boundary models of the frequency domain: extensions, their folds, and the cosine transforms.

A preconditioner or a damping rule inverts ``B^H B`` under a *boundary model*: the data
extended beyond its ends as the model assumes (periodic, whole-sample ``'reflect'``,
half-sample ``'even'``), where the Gram operator becomes a circulant. :func:`extend` is that
extension ``E``, :func:`fold` its adjoint ``E^T``; a half-sample symmetric model is
diagonalised by the DCT-II (:func:`dct`, :func:`idct`, by real FFTs of the samples
themselves), so :func:`transform` and :func:`inverse_transform` take data to the model's
frequencies (DCT-IIs along the half-sample symmetric axes, DFTs along the periodic ones)
and back; :func:`model_diagonal` is the diagonal of the model's Gram operator. The symbol
itself, the eigenvalues at those frequencies, is :func:`.symbol.gram_symbol`.
"""

from __future__ import annotations

import math

import torch


def extend(x: torch.Tensor, axis: int, boundary: str) -> torch.Tensor:
    """``x`` extended along ``axis`` as ``boundary`` assumes (the extension map ``E``)."""
    n = x.shape[axis]
    if boundary == "even":  # [x, flip x]: 2n samples
        return torch.cat([x, x.flip(axis)], axis)
    if boundary == "reflect":  # [x, flip x[1:-1]]: 2n - 2 samples
        return torch.cat([x, x.narrow(axis, 1, n - 2).flip(axis)], axis)
    return x


def fold(z: torch.Tensor, axis: int, n: int, boundary: str) -> torch.Tensor:
    """``E^T z``: each sample of the extended ``z`` added back onto the one it copies."""
    if boundary == "even":
        return z.narrow(axis, 0, n) + z.narrow(axis, n, n).flip(axis)
    if boundary == "reflect":
        head = z.narrow(axis, 0, n).clone()
        head.narrow(axis, 1, n - 2).add_(z.narrow(axis, n, n - 2).flip(axis))
        return head
    return z


def extended_length(n: int, boundary: str) -> int:
    return {"even": 2 * n, "reflect": 2 * n - 2}.get(boundary, n)


def along(axis: int, part: slice) -> tuple:
    """An index taking ``part`` along ``axis`` (a non-negative axis) and all of the others."""
    return (slice(None),) * axis + (part,)


def twiddle(n: int, count: int, sign: float, axis: int, ndim: int,
             device: torch.device) -> torch.Tensor:  # fmt: skip
    """``exp(sign i pi k / (2n))`` for ``k < count``, shaped to broadcast along ``axis``."""
    k = torch.arange(count, dtype=torch.float64, device=device)
    shape = [1] * ndim
    shape[axis] = count
    return torch.polar(torch.ones_like(k), sign * math.pi * k / (2 * n)).reshape(shape)


def dct(x: torch.Tensor, axis: int) -> torch.Tensor:
    """``X_k = sum_j x_j cos(pi k (2j + 1) / (2n))`` along ``axis``: one real FFT of length n.

    Makhoul's reordering (IEEE Trans. ASSP 28, 1980): the even samples, then the odd ones
    reversed; then ``X_k = Re(w_k V_k)`` and ``X_{n-k} = -Im(w_k V_k)``, ``w_k =
    exp(-i pi k / 2n)``. This is the transform that diagonalises the half-sample symmetric
    extension's circulant, restricted to the original samples. Complex data part by part
    (the transform is real).
    """
    if x.is_complex():
        return torch.complex(dct(x.real, axis), dct(x.imag, axis))
    n = x.shape[axis]
    v = torch.cat([x[along(axis, slice(0, None, 2))],
                   x[along(axis, slice(1, None, 2))].flip(axis)], axis)  # fmt: skip
    z = torch.fft.rfft(v, dim=axis)
    z = z * twiddle(n, z.shape[axis], -1.0, axis, x.ndim, x.device).to(z.dtype)
    tail = z.imag.narrow(axis, 1, (n - 1) // 2).flip(axis).neg()
    return torch.cat([z.real, tail], axis)


def idct(y: torch.Tensor, axis: int) -> torch.Tensor:
    """The inverse of :func:`dct`: ``x_j = (y_0 + 2 sum_{k>0} y_k cos(...)) / n``."""
    n = y.shape[axis]
    m = n // 2 + 1
    head = y.narrow(axis, 0, m)
    mirror = torch.cat(
        [torch.zeros_like(y.narrow(axis, 0, 1)), y.narrow(axis, n - m + 1, m - 1).flip(axis)], axis
    )  # y_{n-k}, y_n = 0
    z = torch.complex(head, -mirror) * twiddle(n, m, 1.0, axis, y.ndim, y.device).to(
        torch.complex128 if y.dtype == torch.float64 else torch.complex64
    )
    v = torch.fft.irfft(z, n=n, dim=axis)
    h = (n + 1) // 2
    x = torch.empty_like(v)
    x[along(axis, slice(0, None, 2))] = v.narrow(axis, 0, h)
    x[along(axis, slice(1, None, 2))] = v.narrow(axis, h, n - h).flip(axis)
    return x


def model_diagonal(grid: torch.Tensor, lags: list[torch.Tensor], boundaries: tuple[str, ...],
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


def transform(z: torch.Tensor, boundaries: tuple[str, ...], first: int, *,
              half: bool = False) -> torch.Tensor:  # fmt: skip
    """``z`` at the model's frequencies along axes ``first, first + 1, ...``.

    The DCT-II (:func:`dct`) along the ``'even'`` axes, then the DFT along the
    ``'periodic'`` ones (``rfftn``, the last of them halved, where ``half``: real ``z``).
    """
    for a, boundary in enumerate(boundaries):
        if boundary == "even":
            z = dct(z, first + a)
    periodic = [first + a for a, b in enumerate(boundaries) if b == "periodic"]
    if periodic:
        z = torch.fft.rfftn(z, dim=periodic) if half else torch.fft.fftn(z, dim=periodic)
    return z


def inverse_transform(z: torch.Tensor, boundaries: tuple[str, ...], first: int,
                      size: tuple[int, ...], *, half: bool = False) -> torch.Tensor:  # fmt: skip
    """The inverse of :func:`transform`, back onto the grid of ``size``."""
    periodic = [first + a for a, b in enumerate(boundaries) if b == "periodic"]
    if periodic and half:
        z = torch.fft.irfftn(z, s=[size[axis - first] for axis in periodic], dim=periodic)
    elif periodic:
        z = torch.fft.ifftn(z, dim=periodic)
    for a, boundary in enumerate(boundaries):
        if boundary == "even":
            z = idct(z, first + a)
    return z
