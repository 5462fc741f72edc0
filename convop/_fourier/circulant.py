"""Circulant convolutions in the frequency domain: the kernel placed on a grid and transformed.

A convolution that wraps around its grid (a *circulant*) is diagonalised by the DFT: per
frequency and group, a ``C_out/G x C_in/G`` matrix, the transform of the taps placed on the
grid. Everything here starts from that placement, written once (:func:`place`,
:func:`grid_spectrum`):

- :func:`transfer`: a circulant convolution's transfer matrices ``K(f)`` (the exact
  Tikhonov solve's);
- :func:`polyphase_blocks`: the per-frequency blocks of a strided circulant, whose singular
  values are the operator's (:func:`convop.svdvals`);
- :func:`gram_side`, :func:`convolution_of`, :func:`circulant_reason`,
  :func:`embedding_grid`: on which side an operator's Gram operator is a convolution, the
  convolution whose norm bounds a transposed one's, whether it is a circulant, and the
  smallest circulant it is part of (:func:`convop.opnorm`'s upper bound).

The Gram operator's symbol under the other boundary models is in :mod:`.symbol`; the lags
it is made from in :mod:`.lags`.
"""

from __future__ import annotations

import math

import torch

from .._shared.memory import check_memory
from ..geometry import ConvGeometry
from ..operator import ConvOperator


def place(taps: torch.Tensor, positions: list[torch.Tensor],
          grid: tuple[int, ...]) -> torch.Tensor:  # fmt: skip
    """``taps`` ``(A, B, *k)`` put at ``positions`` of a zero ``(A, B, *grid)`` array.

    ``positions`` has one index tensor per axis, ``k_i`` positions in ``[0, n_i)``; taps
    that land on one sample (a kernel wrapped around a small grid) add.
    """
    a, b = taps.shape[:2]
    index = torch.zeros((), dtype=torch.int64, device=taps.device)
    for n, position in zip(grid, positions):  # row-major flat index of every tap
        index = index[..., None] * n + position
    placed = taps.new_zeros((a, b, math.prod(grid)))
    placed.index_add_(2, index.reshape(-1), taps.reshape(a, b, -1))
    return placed.reshape(a, b, *grid)


def grid_spectrum(taps: torch.Tensor, positions: list[torch.Tensor], grid: tuple[int, ...],
                  *, half: bool) -> torch.Tensor:  # fmt: skip
    """The DFT over ``grid`` of ``taps`` placed at ``positions`` (:func:`place`).

    ``(A, B, *F)``: ``F = grid``, or with the last axis halved (``rfftn``) where ``half``
    (real taps).
    """
    placed = place(taps, positions, grid)
    dims = tuple(range(2, 2 + len(grid)))
    return torch.fft.rfftn(placed, dim=dims) if half else torch.fft.fftn(placed, dim=dims)


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
    w = weight.to(torch.complex128 if weight.is_complex() else torch.float64)
    spec = grid_spectrum(w.reshape(g * o, c, *conv.kernel_size), positions, grid, half=real)
    return spec.reshape(g, o, c, *spec.shape[2:])


# ---------------------------------------------------------------------- singular values
def convolution_of(geom: ConvGeometry) -> tuple[ConvGeometry, bool]:
    """``(conv, exact)``: a convolution whose norm bounds ``geom``'s.

    ``exact``: the maps are equal up to adjoint. A transposed convolution is the adjoint of
    :meth:`~ConvGeometry.as_convolution` applied to its input embedded (zero-filled) into
    that convolution's output.
    """
    if not geom.transposed:
        return geom, True
    conv = geom.as_convolution()
    return conv, conv.output_size == geom.input_size


def circulant_reason(geom: ConvGeometry) -> str | None:
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


def polyphase_blocks(weight: torch.Tensor, geom: ConvGeometry, grid: tuple[int, ...],
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
    positions = [torch.arange(k, device=w.device) * d % n
                 for k, d, n in zip(geom.kernel_size, geom.dilation, grid)]  # fmt: skip
    # the half spectrum is all that is kept where the last axis is not strided
    spec = grid_spectrum(w.reshape(g * o, c, *geom.kernel_size), positions, grid,
                         half=half and geom.stride[-1] == 1)  # fmt: skip
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


def check_blocks_memory(geom: ConvGeometry, grid: tuple[int, ...], device) -> None:
    """Ask the memory guard for :func:`polyphase_blocks`' spectrum on ``grid``."""
    o, c = geom.out_channels, geom.in_channels // geom.groups
    needed = 3 * o * c * math.prod(grid) * 16
    check_memory(needed, None, f"the kernel's spectrum on a {grid} grid", device,
                 hint="use a smaller input_shape")  # fmt: skip


# ---------------------------------------------------------------------- the embedding
def embedding_grid(geom: ConvGeometry) -> tuple[int, ...]:
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
