"""Pure torch, written once for N-d: the forward map of a convolution and its exact adjoint.

Both functions take batched tensors, are differentiable with respect to the data and the
weight, and never write into their arguments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .geometry import ConvGeometry
from .padding import pad, pad_adjoint

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def forward(x: torch.Tensor, weight: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    """Apply the convolution described by ``geom``.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, *geom.input_shape)``.
    weight : torch.Tensor
        ``geom.weight_shape``, same dtype and device as ``x``.
    geom : ConvGeometry

    Returns
    -------
    torch.Tensor
        ``(B, *geom.output_shape)``, equal to the matching ``torch.nn`` module's output
        without bias.

    Examples
    --------
    >>> g = ConvGeometry.from_torch((2, 1, 3), (1, 5), padding=1, padding_mode="circular")
    >>> forward(torch.ones(1, 1, 5), torch.ones(2, 1, 3), g)
    tensor([[[3., 3., 3., 3., 3.],
             [3., 3., 3., 3., 3.]]])
    """
    if geom.transposed:
        crop = tuple(lo for lo, _ in geom.padding)  # conv_transpose's padding crops its output
        return _CONV_T[geom.ndim](
            x,
            weight,
            None,
            geom.stride,
            crop,
            geom.output_padding,
            geom.groups,
            geom.dilation,
        )
    implicit, explicit = geom.conv_padding
    if explicit is not None:
        x = pad(x, explicit, geom.padding_mode)  # (B, C_in, *partly padded)
    return _CONV[geom.ndim](x, weight, None, geom.stride, implicit, geom.dilation, geom.groups)


def adjoint(y: torch.Tensor, weight: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    """Apply the adjoint (conjugate transpose) of :func:`forward`.

    Parameters
    ----------
    y : torch.Tensor
        ``(B, *geom.output_shape)``.
    weight : torch.Tensor
        ``geom.weight_shape``; it is conjugated here for complex data.
    geom : ConvGeometry

    Returns
    -------
    torch.Tensor
        ``(B, *geom.input_shape)`` with ``<forward(x), y> == <x, adjoint(y)>``.

    Notes
    -----
    Convolution, ``y = conv(pad(x), w)``::

        adjoint(y) = pad_adjoint(conv_transpose(y, conj(w), output_padding=r))

    where ``r = (n + before + after - d(k-1) - 1) mod s`` restores the samples a strided
    convolution never reads, and ``pad_adjoint`` folds reflect/replicate/circular halos back
    onto their sources (a crop for zeros). Transposed convolution::

        adjoint(y) = conv(y, conj(w))[..., :n]

    cropped because ``output_padding >= stride`` (allowed when smaller than the dilation)
    adds output samples no input reaches.

    Examples
    --------
    >>> g = ConvGeometry.from_torch((1, 1, 2), (1, 4), stride=2)
    >>> adjoint(torch.ones(1, 1, 2), torch.tensor([[[1.0, 2.0]]]), g)
    tensor([[[1., 2., 1., 2.]]])
    """
    if weight.is_complex():
        weight = weight.conj().resolve_conj()
    if geom.transposed:
        crop = tuple(lo for lo, _ in geom.padding)
        x = _CONV[geom.ndim](y, weight, None, geom.stride, crop, geom.dilation, geom.groups)
        for i, n in enumerate(geom.input_size):
            x = x.narrow(2 + i, 0, n)
        return x
    implicit, explicit = geom.conv_padding
    z = _CONV_T[geom.ndim](  # (B, C_in, *partly padded)
        y,
        weight,
        None,
        geom.stride,
        implicit,
        geom.adjoint_output_padding,
        geom.groups,
        geom.dilation,
    )
    return z if explicit is None else pad_adjoint(z, explicit, geom.padding_mode)
