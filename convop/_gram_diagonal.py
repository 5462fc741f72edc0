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
"""

from __future__ import annotations

import itertools

import torch

from ._materialize import _sources
from .geometry import ConvGeometry
from .padding import source_index


def gram_diagonal(weight: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    """``diag(B^H B)`` of the convolution ``geom`` with ``weight``: ``(C_in, *input_size)``.

    Parameters
    ----------
    weight : torch.Tensor
        ``geom.weight_shape``; computed in float64 (the squared moduli of complex taps).
    geom : ConvGeometry
        A convolution (not transposed): any stride, dilation, groups and padding mode.

    Returns
    -------
    torch.Tensor
        float64: the squared norm of the column of every input sample, on the input grid.
    """
    g, nd = geom.groups, geom.ndim
    o, c = geom.out_channels // g, geom.in_channels // g
    w = weight.detach()
    w = w.to(torch.complex128 if w.is_complex() else torch.float64)
    w = w.reshape(g, o, c, *geom.kernel_size)
    device = w.device
    one = torch.ones((), dtype=torch.float64, device=device)
    simple, direct, gathered, copied = [], [], [], []
    for n, (lo, hi), k, s, d in zip(geom.input_size, geom.padding, geom.kernel_size,
                                    geom.stride, geom.dilation):  # fmt: skip
        out = (n + lo + hi - d * (k - 1) - 1) // s + 1
        source = _sources(n, lo, hi, k, s, d, geom.padding_mode, range(out), device)
        padded = source_index(n, lo, hi, geom.padding_mode, device=device)
        copies = torch.bincount(padded[padded >= 0], minlength=n)
        simple.append((copies <= 1).nonzero().reshape(-1))
        many = (copies > 1).nonzero().reshape(-1)  # samples with copies in the halo
        copied.append(many)
        taps = torch.arange(k, device=device).expand_as(source)
        valid = source >= 0
        count = torch.zeros(n, k, dtype=torch.float64, device=device)
        count.index_put_((source[valid], taps[valid]), one, accumulate=True)
        direct.append(count)  # (n, k): how many outputs read sample j through tap t
        reads = (source[None] == many[:, None, None]).to(w.dtype)  # (J, n_out, k)
        gathered.append(reads[:, reads.abs().sum((0, 2)) > 0])  # only the outputs reading
    diagonal = torch.zeros(g, c, *geom.input_size, dtype=torch.float64, device=device)
    for pattern in itertools.product((False, True), repeat=nd):  # True: gathered axis
        if any(p and copied[a].numel() == 0 for a, p in enumerate(pattern)):
            continue
        plain = [a for a in range(nd) if not pattern[a]]
        rest = [a for a in range(nd) if pattern[a]]
        t = w  # (G, O, C, *k): each gathered axis's tap becomes a (J, I) pair at the end
        for a in rest:
            position = 3 + sum(1 for b in plain if b < a)  # the taps left before a's
            t = torch.tensordot(t, gathered[a], dims=([position], [2]))
        squares = t.real.square() + t.imag.square() if t.is_complex() else t.square()
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
        pick = [torch.arange(copied[a].numel(), device=device) if pattern[a] else simple[a]
                for a in range(nd)]  # fmt: skip
        place = [copied[a] if pattern[a] else simple[a] for a in range(nd)]
        grid = torch.meshgrid(*pick, indexing="ij")
        diagonal[(slice(None), slice(None), *torch.meshgrid(*place, indexing="ij"))] = squares[
            (slice(None), slice(None), *grid)
        ]
    return diagonal.reshape(g * c, *geom.input_size)
