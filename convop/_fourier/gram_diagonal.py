"""The exact diagonal of a convolution's Gram operator ``B^H B``: its columns' squared norms.

Along one axis, output ``i`` reads through tap ``t`` the padded sample ``q = i s + t d``,
a copy of input sample ``source(q)`` (:func:`convop.padding.source_index`). An input
sample is *simple* along that axis when it has no copy in the halo: there every output
reads it through at most one tap, so the squares of the column's entries are the squared
taps, counted where an output reads them. The others (replicate's end samples, reflect's
and circular's near the edges) gather several taps per output, which are summed before
squaring. Every sample is simple along some axes and not along the rest; this is the
column norms of all of them, exactly, by one small contraction per such pattern.
:mod:`convop.deconvolution` scales its preconditioners with it.

The contraction for a pattern of gathered axes holds ``J I`` entries per such axis (``J``
copied samples, read by ``I`` outputs) where the taps held ``k``: near ``(pad n)^d`` for a
large kernel under reflect or circular padding (2.6e9 for a 201 x 201 kernel on 256^2).
:func:`gram_diagonal` therefore sizes its work first, from ``O(n)`` per-axis counts
(:func:`diagonal_bytes`), and asks the memory guard before allocating any of it. Chunks
would bound the memory but not the time (hours there), so it refuses instead.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch

from .._shared.memory import check_memory
from ..geometry import ConvGeometry
from ..padding import source_index


class _Axis(NamedTuple):
    """One axis's padding, from ``O(n + pad)`` work: who is copied, who reads the copies."""

    n: int  # input samples
    k: int  # taps
    out: int  # outputs
    padded: torch.Tensor  # (lo + n + hi,) int64: the input sample each padded one copies
    simple: torch.Tensor  # (n - J,) the samples with no copy in the halo
    copied: torch.Tensor  # (J,) the others
    reading: torch.Tensor  # (I,) the outputs reading a copied sample through some tap


def _axis(n: int, lo: int, hi: int, k: int, s: int, d: int, mode: str,
          device: torch.device) -> _Axis:  # fmt: skip
    """:class:`_Axis` of one axis; no table of outputs by taps."""
    out = (n + lo + hi - d * (k - 1) - 1) // s + 1
    padded = source_index(n, lo, hi, mode, device=device)  # (L,)
    copies = torch.bincount(padded[padded >= 0], minlength=n)  # (n,)
    flag = (padded >= 0) & (copies[padded.clamp(min=0)] > 1)  # (L,): holds a copied sample
    # Output i reads positions i s + t d, t < k: k consecutive rows of one column once the
    # positions are laid out d to a row; column sums of rows below r give the count read.
    rows = -(-flag.numel() // d)
    grid = torch.zeros(rows * d, dtype=torch.int64, device=device)
    grid[: flag.numel()] = flag
    below = torch.zeros(rows + 1, d, dtype=torch.int64, device=device)
    below[1:] = grid.reshape(rows, d).cumsum(0)  # (rows + 1, d)
    start = torch.arange(out, device=device) * s
    row, column = start // d, start % d
    hits = below[row + k, column] - below[row, column]  # (out,): copied samples read
    return _Axis(n, k, out, padded, (copies <= 1).nonzero().reshape(-1),
                 (copies > 1).nonzero().reshape(-1), (hits > 0).nonzero().reshape(-1))  # fmt: skip


def _contractions(geom: ConvGeometry, axes: list[_Axis]):
    """``(pattern, taps, factors, squares)`` of every pattern of gathered axes that occurs.

    ``taps``: entries of the taps tensor before and after each gathered axis's contraction
    with its ``(J, I, k)`` reads, of ``factors`` entries each; ``squares``: entries of the
    squared moduli summed over outputs, then after each plain axis's contraction with its
    counts.
    """
    g = geom.groups
    o, c = geom.out_channels // g, geom.in_channels // g
    for pattern in itertools.product((False, True), repeat=len(axes)):  # True: gathered
        if any(p and a.copied.numel() == 0 for a, p in zip(axes, pattern)):
            continue
        gathered = [a for a, p in zip(axes, pattern) if p]
        factors = [a.copied.numel() * a.reading.numel() * a.k for a in gathered]
        taps = [g * o * c * math.prod(a.k for a in axes)]
        for a, f in zip(gathered, factors):
            taps.append(taps[-1] // a.k * (f // a.k))  # k taps become J I pairs
        squares = [taps[-1] // o // math.prod(a.reading.numel() for a in gathered)]
        for a, p in zip(axes, pattern):
            if not p:
                squares.append(squares[-1] // a.k * a.n)
        yield pattern, taps, factors, squares


def _bytes(geom: ConvGeometry, axes: list[_Axis], complex_: bool) -> int:
    """An upper bound on what :func:`gram_diagonal` holds at once, in bytes.

    Beyond the ``O(n + pad)`` counts of :func:`_axis`, in the order they are made: the
    weight in float64 (complex128); per axis, the ``(n, k)`` counts of direct reads from an
    ``(out, k)`` table of sources (33 bytes an entry, then freed), and the ``(J, I, k)``
    gathered reads from an ``(I, k)`` one (41 bytes an entry), both kept; then the diagonal
    with the largest of the contractions: each ``tensordot`` holds its input, a contiguous
    copy of it and its output (the reads' taps are their last axis: a transposed matrix,
    not copied); the squared moduli are three float64 arrays beside the complex taps (one
    beside real ones), which bounds the sums over outputs that follow; the final scatter,
    the contraction's result and the part of it picked (its indices are broadcast views).
    Not counted: the BLAS library's workspace, and freed blocks the allocator keeps (with
    those returned to the system, the peak RSS measured 0-1.2% above this: 1-d to 3-d, 3
    to 301 taps, all four padding modes).
    """
    item = 16 if complex_ else 8
    g = geom.groups
    c = geom.in_channels // g
    held = item * math.prod(geom.weight_shape)
    peak = held
    for a in axes:
        counts = 8 * a.n * a.k
        reads = item * a.copied.numel() * a.reading.numel() * a.k
        peak = max(peak, held + counts + 33 * a.out * a.k,
                   held + counts + reads + 41 * a.reading.numel() * a.k)  # fmt: skip
        held += counts + reads
    largest = 0
    for pattern, taps, _, squares in _contractions(geom, axes):
        contract = item * max((2 * b + e for b, e in itertools.pairwise(taps)), default=0)
        squared = taps[-1] * (item + (24 if complex_ else 8))
        summed = 8 * max((2 * b + e for b, e in itertools.pairwise(squares)), default=0)
        placed = g * c * math.prod(a.copied.numel() if p else a.simple.numel()
                                   for a, p in zip(axes, pattern))  # fmt: skip
        scatter = 8 * (squares[-1] + placed)
        largest = max(largest, contract, squared, summed, scatter)
    diagonal = 8 * g * c * math.prod(geom.input_size)
    return max(peak, held + diagonal + largest)


def _axes(geom: ConvGeometry, device: torch.device | None) -> list[_Axis]:
    return [_axis(n, lo, hi, k, s, d, geom.padding_mode, device)
            for n, (lo, hi), k, s, d in zip(geom.input_size, geom.padding, geom.kernel_size,
                                            geom.stride, geom.dilation)]  # fmt: skip


def diagonal_bytes(geom: ConvGeometry, dtype: torch.dtype = torch.float64,
                   device: torch.device | None = None) -> int:  # fmt: skip
    """The bytes :func:`gram_diagonal` asks the memory guard for, without allocating them.

    Parameters
    ----------
    geom : ConvGeometry
        A convolution (not transposed).
    dtype : torch.dtype, default torch.float64
        The weight's dtype: complex weights take twice the memory.
    device : torch.device, optional
        Where the ``O(n + pad)`` per-axis counts are made (the host by default).

    Returns
    -------
    int
        An upper bound on what it holds at once: the weight in float64, the reads of each
        axis and the largest contraction.

    See Also
    --------
    gram_diagonal : The diagonal itself, which asks the guard for these bytes first.

    Examples
    --------
    Large kernels under reflect padding need the most (their folded taps near the corners;
    ``convop.deconvolution.DIAGONAL_BYTES`` is the preconditioner's limit):

    >>> large = ConvGeometry.from_torch((1, 1, 201, 201), (1, 256, 256), padding="same",
    ...                                 padding_mode="reflect")
    >>> f"{diagonal_bytes(large) / 2**30:.0f} GiB"
    '39 GiB'
    """
    return _bytes(geom, _axes(geom, device), dtype.is_complex)


def gram_diagonal(weight: torch.Tensor, geom: ConvGeometry, *,
                  max_bytes: int | None = None) -> torch.Tensor:  # fmt: skip
    """``diag(B^H B)`` of the convolution ``geom`` with ``weight``: ``(C_in, *input_size)``.

    Parameters
    ----------
    weight : torch.Tensor
        ``geom.weight_shape``; computed in float64 (the squared moduli of complex taps).
    geom : ConvGeometry
        A convolution (not transposed): any stride, dilation, groups and padding mode.
    max_bytes : int, optional
        The most it may allocate at once; default: half the memory available on the
        weight's device.

    Returns
    -------
    torch.Tensor
        float64: the squared norm of the column of every input sample, on the input grid.

    Raises
    ------
    MemoryError
        Before allocating, where :func:`diagonal_bytes` exceeds the limit.

    See Also
    --------
    convop.preconditioner : Scaled to this diagonal where its boundary model is not the
        operator's own.
    """
    g, nd = geom.groups, geom.ndim
    o, c = geom.out_channels // g, geom.in_channels // g
    device = weight.device
    axes = _axes(geom, device)
    check_memory(_bytes(geom, axes, weight.is_complex()), max_bytes,
                 f"the exact diagonal of B^H B for a {geom.kernel_size} kernel on a "
                 f"{geom.input_size} input ({geom.padding_mode} padding)", device)  # fmt: skip
    w = weight.detach()
    w = w.to(torch.complex128 if w.is_complex() else torch.float64)
    w = w.reshape(g, o, c, *geom.kernel_size)
    one = torch.ones((), dtype=torch.float64, device=device)
    direct, gathered = [], []
    for a, d, s in zip(axes, geom.dilation, geom.stride):
        taps = torch.arange(a.k, device=device) * d
        source = a.padded[torch.arange(a.out, device=device)[:, None] * s + taps]  # (out, k)
        valid = source >= 0
        count = torch.zeros(a.n, a.k, dtype=torch.float64, device=device)
        count.index_put_((source[valid], valid.nonzero()[:, 1]), one, accumulate=True)
        direct.append(count)  # (n, k): how many outputs read sample j through tap t
        del source, valid
        index = torch.full((a.n,), -1, dtype=torch.int64, device=device)
        index[a.copied] = torch.arange(a.copied.numel(), device=device)
        read = a.padded[a.reading[:, None] * s + taps]  # (I, k): what the readers read
        which = torch.where(read >= 0, index[read.clamp(min=0)], -1)  # (I, k): J's or -1
        hit = which >= 0
        reads = torch.zeros(a.copied.numel(), a.reading.numel(), a.k, dtype=w.dtype,
                            device=device)  # fmt: skip
        reads[(which[hit], *hit.nonzero(as_tuple=True))] = 1
        gathered.append(reads)  # (J, I, k): output i reads copied sample j through tap t
    diagonal = torch.zeros(g, c, *geom.input_size, dtype=torch.float64, device=device)
    for pattern, *_ in _contractions(geom, axes):
        plain = [a for a in range(nd) if not pattern[a]]
        rest = [a for a in range(nd) if pattern[a]]
        t = w  # (G, O, C, *k): each gathered axis's tap becomes a (J, I) pair at the end
        for a in rest:
            position = 3 + sum(1 for b in plain if b < a)  # the taps left before a's
            t = torch.tensordot(t, gathered[a], dims=([position], [2]))
        squares = t.real.square() + t.imag.square() if t.is_complex() else t.square()
        del t
        squares = squares.sum(1)  # (G, C, *k of the plain axes, J1, I1, J2, I2, ...)
        base = 2 + len(plain)
        if rest:
            squares = squares.sum(tuple(range(base + 1, squares.ndim, 2)))
        for i, a in enumerate(plain):  # each output reads a plain sample through one tap
            squares = torch.tensordot(squares, direct[a], dims=([2 + i], [1]))
            squares = squares.movedim(-1, 2 + i)
        # (G, C, *n of the plain axes, *J of the gathered ones): back into axis order
        order = plain + rest
        squares = squares.permute(0, 1, *(2 + order.index(a) for a in range(nd)))
        pick = [torch.arange(axes[a].copied.numel(), device=device) if pattern[a]
                else axes[a].simple for a in range(nd)]  # fmt: skip
        place = [axes[a].copied if pattern[a] else axes[a].simple for a in range(nd)]
        grid = torch.meshgrid(*pick, indexing="ij")
        diagonal[(slice(None), slice(None), *torch.meshgrid(*place, indexing="ij"))] = squares[
            (slice(None), slice(None), *grid)
        ]
    return diagonal.reshape(g * c, *geom.input_size)
