"""Circulant convolutions in the frequency domain: the kernel placed on the grid and transformed.

:func:`gram_side` says on which side of an operator its Gram operator is a convolution;
:func:`transfer` gives a circulant convolution's transfer matrices ``K(f)``, one
``C_out/G x C_in/G`` matrix per frequency and group.
"""

from __future__ import annotations

import math

import torch

from ..geometry import ConvGeometry
from ..operator import ConvOperator


def gram_side(op: ConvOperator, what: str) -> tuple[ConvGeometry, bool]:
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


def transfer(weight: torch.Tensor, conv: ConvGeometry, real: bool) -> torch.Tensor:
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
