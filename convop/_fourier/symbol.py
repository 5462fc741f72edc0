"""The Gram operator's symbol under a boundary model, per frequency: written once.

``B^H B`` (or ``B B^H``) is a convolution with the kernel's lags ``R_delta``
(:mod:`.lags`). Under a boundary model (:mod:`.boundary`: periodic, whole-sample
``'reflect'``, half-sample ``'even'``) it becomes a circulant, block diagonal in the model's
transform: per frequency ``f`` and group, the ``p x p`` matrix ``S(f) = sum_delta R_delta
phi_f(delta)``, Hermitian and positive semidefinite. :func:`convop.preconditioner` inverts
it and :func:`convop.choose_damping` sums over its eigenvalues:

- :class:`Lags`: the lags on their grid, and along which axes they are mirror-symmetric (a
  symmetric model holds only there: :meth:`Lags.model`);
- :func:`gram_symbol`: ``S`` at the model's frequencies, either those of the DFT of the
  extension (by one FFT of the lags placed on the extended grid) or those of the DCT-II
  along the half-sample symmetric axes, which diagonalises the model there for
  mirror-symmetric lags [1]_ (by direct sums: ``2^d`` times fewer frequencies);
- :func:`diagonalise`: its eigenvalues and eigenvectors, frequency by frequency.

:func:`convop.opnorm`'s Gram blocks (:mod:`.grams`) are the periodic symbol on the
embedding's grid, evaluated there with their own round-off budget.

References
----------
.. [1] M. K. Ng, R. H. Chan and W.-C. Tang, "A Fast Algorithm for Deblurring Models with
   Neumann Boundary Conditions," SIAM J. Sci. Comput. 21 (1999), 851-866.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .._shared.memory import check_memory
from ..geometry import ConvGeometry
from .boundary import extended_length
from .circulant import grid_spectrum
from .lags import gram_lags


class Lags(NamedTuple):
    """The lags ``R_delta`` of a Gram operator on their grid: what its symbol is made of."""

    #: ``(G, *counts, p * p)``: ``R_delta[a, b]`` of group ``g`` at ``[g, *index, a * p + b]``
    grid: torch.Tensor
    #: per axis, the ``counts[a]`` lag values (float64, increasing): the grid's coordinates
    values: list[torch.Tensor]
    #: per axis, whether ``R_delta`` is unchanged when ``delta_a`` changes sign (within
    #: ``1e-12`` of the largest lag): a mirrored copy along axis ``a`` sees the lags with
    #: ``delta_a`` negated, so a symmetric model holds along the axes where that changes
    #: nothing (a Gaussian's; not a diagonal motion's, nor channels that mix without symmetry)
    mirrored: tuple[bool, ...]

    @classmethod
    def of(cls, weight: torch.Tensor, conv: ConvGeometry, *, input_side: bool) -> Lags:
        """The lags of ``B^H B`` (``input_side``) or ``B B^H`` (:func:`.lags.gram_lags`)."""
        taps, deltas = gram_lags(weight, conv, input_side=input_side)
        values = [torch.unique(deltas[:, i]) for i in range(deltas.shape[1])]
        # gram_lags lists the lags in lexicographic order: a grid of them
        grid = taps.reshape(taps.shape[0], *(v.numel() for v in values), taps.shape[2])
        tolerance = 1e-12 * float(taps.abs().max())
        mirrored = tuple(
            bool(torch.allclose(grid.flip(1 + a), grid, rtol=0, atol=tolerance))
            for a in range(len(values))
        )
        return cls(grid, values, mirrored)

    @property
    def size(self) -> int:
        """``p``: the channels per group on the Gram operator's side."""
        return math.isqrt(self.grid.shape[-1])

    def model(self, boundaries: tuple[str, ...]) -> tuple[str, ...]:
        """``boundaries``, made periodic along the axes where the lags are not mirrored.

        Periodic holds for any lags.
        """
        return tuple(b if ok else "periodic" for b, ok in zip(boundaries, self.mirrored))

    def diagonal(self) -> torch.Tensor:
        """The lags' diagonal entries ``R_delta[a, a]``: ``(G, *counts, p)``."""
        return self.grid[..., :: self.size + 1]


def gram_symbol(lags: Lags, boundaries: tuple[str, ...], size: tuple[int, ...], *,
                extended: bool = False, nyquist: bool = False, halve: bool = True,
                what: str = "the Gram symbol") -> torch.Tensor:  # fmt: skip
    """The Gram operator's symbol ``S(f)`` under ``boundaries``: ``(G, p, p, *F)``.

    Asks the memory guard first, for ``what``: the symbol and room for its eigenvectors.

    Parameters
    ----------
    lags : Lags
        The lags, :meth:`Lags.of`; mirror-symmetric along every ``'even'`` axis unless
        ``extended``.
    boundaries : tuple of str
        Per axis, ``'periodic'``, ``'even'`` (half-sample symmetric) or ``'reflect'``
        (whole-sample symmetric; only ``extended``).
    size : tuple of int
        The grid's size ``n`` per axis.
    extended : bool, default False
        The frequencies of the DFT of the model's extension (:func:`.boundary.extend`:
        ``2n`` samples along an even axis, ``2n - 2`` along a reflect one, ``n`` along a
        periodic one), ``sum_delta R_delta exp(2 pi i f delta / N)``, by one FFT of the lags
        placed at ``-delta mod N``; the last axis halved (``rfftn``) where ``halve``. Else,
        by direct sums: along an even axis the frequencies ``k < n`` of its ``2n``
        extension (``k = n`` too with ``nyquist``), ``sum_delta R_delta cos(pi k delta /
        n)``, the eigenvalues of its DCT-II; along a periodic axis the DFT's, the last
        periodic axis halved where ``halve``.
    nyquist, halve : bool
        As above. ``halve`` needs real lags.
    what : str
        What the memory guard's message calls the symbol.

    Returns
    -------
    torch.Tensor
        Complex128 where any axis is a DFT's, else float64.
    """
    grid, values = lags.grid, lags.values
    g, pp = grid.shape[0], grid.shape[-1]
    p = lags.size
    if extended:
        full = tuple(extended_length(n, b) for n, b in zip(size, boundaries))
        counts = [*full[:-1], full[-1] // 2 + 1 if halve else full[-1]]
        check_memory(4 * g * pp * math.prod(counts) * 16, None, f"{what} on a {full} grid",
                     grid.device, hint="use a smaller input_shape")  # fmt: skip
        positions = [(-u).to(torch.int64).remainder(n) for u, n in zip(values, full)]
        spec = grid_spectrum(grid.movedim(-1, 1), positions, full, half=halve)  # (G, pp, *F)
        return spec.reshape(g, p, p, *spec.shape[2:])
    if "reflect" in boundaries:
        raise ValueError(f"a whole-sample symmetric model needs extended=True, got {boundaries}")
    periodic = [a for a, b in enumerate(boundaries) if b == "periodic"]
    counts = [
        n + nyquist if b == "even" else n // 2 + 1 if halve and a == periodic[-1] else n
        for a, (n, b) in enumerate(zip(size, boundaries))
    ]
    check_memory(4 * 16 * g * pp * math.prod(max(f, u.numel()) for f, u in zip(counts, values)),
                 None, f"{what} on a {tuple(size)} grid", grid.device,
                 hint="use a smaller input_shape")  # fmt: skip
    out = grid.to(torch.complex128) if periodic else grid
    for a, (n, count) in enumerate(zip(size, counts)):  # one small DFT matrix per axis
        u = values[a].to(grid.device)[:, None]
        f = torch.arange(count, dtype=torch.float64, device=grid.device)[None, :]
        if boundaries[a] == "even":
            factor = torch.cos(math.pi * u * f / n)
        else:
            factor = torch.polar(torch.ones_like(u * f), 2 * math.pi * u * f / n)
        out = torch.tensordot(out, factor.to(out.dtype), dims=([1 + a], [0]))
        out = out.movedim(-1, 1 + a)
    return out.movedim(-1, 1).reshape(g, p, p, *out.shape[1:-1])


def diagonalise(symbol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, vectors)`` of each frequency's block of ``symbol`` ``(G, p, p, *F)``.

    ``values``: ``(G, *F, p)``, ascending, clamped at 0 (the symbol is positive
    semidefinite; round-off can take its smallest eigenvalues below); ``vectors``:
    ``(G, *F, p, p)``, orthonormal columns.
    """
    blocks = symbol.movedim(1, -1).movedim(1, -1)  # (G, *F, p, p)
    values, vectors = torch.linalg.eigh(blocks)  # Hermitian per frequency
    return values.clamp(min=0), vectors
