"""Padding as a linear map: ``pad(x)`` and its exact adjoint ``pad_adjoint(z)``.

All four padding modes are separable: the padded sample at position ``i`` of a dimension
(``-before <= i < n + after``) is a copy of input sample ``source_index(i)``, independently
per dimension. The adjoint therefore keeps the core of the padded tensor and *adds* every
halo sample back onto the input sample it was copied from, one dimension at a time.
For zero padding the halo holds no copies and the adjoint is a crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

Pairs = Sequence[tuple[int, int]]


def source_index(
    n: int, before: int, after: int, mode: str, device: torch.device | None = None
) -> torch.Tensor:
    """Index of the input sample each padded sample copies, along one dimension.

    Parameters
    ----------
    n : int
        Input length along the dimension.
    before, after : int
        Padding on each side.
    mode : str
        ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``. For ``'zeros'``
        halo positions copy nothing and get index ``-1``.
    device : torch.device, optional
        Where to build the index.

    Returns
    -------
    torch.Tensor
        int64 tensor of length ``before + n + after``.

    Examples
    --------
    >>> source_index(4, 2, 2, "reflect").tolist()
    [2, 1, 0, 1, 2, 3, 2, 1]
    >>> source_index(4, 2, 2, "circular").tolist()
    [2, 3, 0, 1, 2, 3, 0, 1]
    >>> source_index(4, 1, 1, "zeros").tolist()
    [-1, 0, 1, 2, 3, -1]
    """
    i = torch.arange(-before, n + after, device=device)
    if mode == "reflect":  # mirror about the edge samples, which are not repeated
        i = i.abs()
        return torch.where(i > n - 1, 2 * (n - 1) - i, i)
    if mode == "replicate":
        return i.clamp(0, n - 1)
    if mode == "circular":
        return i.remainder(n)
    if mode == "zeros":
        return torch.where((i >= 0) & (i < n), i, -1)
    raise ValueError(f"unknown padding mode {mode!r}")


def pad(x: torch.Tensor, padding: Pairs, mode: str) -> torch.Tensor:
    """Pad the trailing ``len(padding)`` dimensions of ``x``.

    Parameters
    ----------
    x : torch.Tensor
        Shape ``(..., *spatial)``.
    padding : sequence of (int, int)
        ``(before, after)`` per spatial dimension.
    mode : str
        ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``.

    Returns
    -------
    torch.Tensor
        Shape ``(..., *(n + before + after))``, as ``torch.nn.functional.pad``.
    """
    flat = [p for pair in reversed(padding) for p in pair]  # F.pad wants the last dim first
    if not any(flat):
        return x
    if mode == "zeros":
        return F.pad(x, flat)
    return F.pad(x, flat, mode=mode)


def pad_adjoint(z: torch.Tensor, padding: Pairs, mode: str) -> torch.Tensor:
    """Adjoint of :func:`pad`: fold every halo sample back onto its source sample.

    Parameters
    ----------
    z : torch.Tensor
        Shape ``(..., *(n + before + after))``.
    padding : sequence of (int, int)
        ``(before, after)`` per spatial dimension.
    mode : str
        ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``.

    Returns
    -------
    torch.Tensor
        Shape ``(..., *n)`` with ``<pad(x), z> == <x, pad_adjoint(z)>``.

    Examples
    --------
    >>> z = torch.ones(1, 6)
    >>> pad_adjoint(z, [(2, 1)], "replicate")
    tensor([[3., 1., 2.]])
    """
    lead = z.ndim - len(padding)
    for i, (before, after) in enumerate(padding):
        z = _fold(z, lead + i, before, after, mode)
    return z


def _fold(z: torch.Tensor, dim: int, before: int, after: int, mode: str) -> torch.Tensor:
    if not (before or after):
        return z
    n = z.shape[dim] - before - after
    core = z.narrow(dim, before, n)
    if mode == "zeros":
        return core
    source = source_index(n, before, after, mode, device=z.device)
    halo_index = torch.cat([source[:before], source[before + n :]])
    halo = torch.cat([z.narrow(dim, 0, before), z.narrow(dim, before + n, after)], dim=dim)
    return core.index_add(dim, halo_index, halo)
