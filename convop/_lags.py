"""The autocorrelation lags of a convolution's kernel: the symbol of its Gram operators.

A stride-``s`` convolution ``B`` (per group, ``C_out/G x C_in/G`` taps ``w[t]``, dilation
``d``) has ``B B^H`` shift-invariant on the output grid, with lags
``R_delta = sum_t w[t + tau] w[t]^H`` at the spatial lag ``delta = d * tau`` (kept where the
stride divides it, counted in units of the stride). With stride 1, ``B^H B`` is
shift-invariant on the input grid, with the lags of the adjoint kernel (channels swapped,
taps reversed and conjugated): ``sum_t w[t]^H w[t + tau]``. ``R_{-delta} = R_delta^H``
either way. :mod:`convop.spectral` bounds norms with them; :mod:`convop.deconvolution`
builds preconditioners from them.
"""

from __future__ import annotations

import torch

from .geometry import ConvGeometry

_CORRELATE = (torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d)


def gram_lags(weight: torch.Tensor, geom: ConvGeometry, *,
              input_side: bool) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``(taps, deltas)``: the lags of ``B^H B`` (``input_side``) or ``B B^H`` of ``geom``.

    Parameters
    ----------
    weight : torch.Tensor
        ``geom.weight_shape``; the lags are computed in float64 (complex128).
    geom : ConvGeometry
        A convolution (not transposed); stride 1 for ``input_side``.
    input_side : bool
        The lags of ``B^H B`` (on the input's channels) rather than ``B B^H``.

    Returns
    -------
    taps : torch.Tensor
        ``(G, L, p * p)``: ``R_delta[a, b]`` of group ``g`` at ``taps[g, l, a * p + b]``,
        ``p`` channels per group on that side.
    deltas : torch.Tensor
        ``(L, ndim)`` float64: the lags, in samples of that side's grid (of the output's,
        subsampled by the stride, for ``B B^H``), in lexicographic order, so that lag
        ``L - 1 - l`` is lag ``l``'s mirror.
    """
    g, nd = geom.groups, geom.ndim
    o, c = geom.out_channels // g, geom.in_channels // g
    k = geom.kernel_size
    weight = weight.detach()
    stride = geom.stride
    if input_side:
        if any(s != 1 for s in stride):
            raise ValueError(f"B^H B is shift-invariant only for stride 1, got {stride}")
        weight = weight.reshape(g, o, c, *k).transpose(1, 2).reshape(g * c, o, *k)
        weight = weight.flip(tuple(range(2, 2 + nd))).conj()
        o, c = c, o
    w = weight.to(torch.float64 if not weight.is_complex() else torch.complex128)
    x = torch.nn.functional.pad(w, [p for n in reversed(k) for p in (n - 1, n - 1)])
    x = x.reshape(g, o, c, *x.shape[2:]).transpose(0, 1).reshape(o, g * c, *x.shape[2:])
    lags = _CORRELATE[nd - 1](x, w.conj(), groups=g)  # (a, G * b, *(2k - 1)): R[tau][a, b]
    lags = lags.reshape(o, g, o, *lags.shape[2:]).transpose(0, 1)  # (G, a, b, *lags)
    deltas = []
    for i, (n, d, s) in enumerate(zip(k, geom.dilation, stride)):
        delta = (torch.arange(2 * n - 1, device=w.device) - (n - 1)) * d
        keep = (delta % s == 0).nonzero().reshape(-1)  # a symmetric set of lags
        lags = lags.index_select(3 + i, keep)
        deltas.append((delta[keep] // s).to(torch.float64))
    deltas = torch.stack(torch.meshgrid(*deltas, indexing="ij"), -1).reshape(-1, nd)
    return lags.reshape(g, o * o, -1).transpose(1, 2), deltas  # (G, L, a * b), (L, ndim)
