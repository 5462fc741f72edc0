"""Pure torch, written once for N-d: the forward map of a convolution and its exact adjoint.

Both functions take batched tensors, are differentiable with respect to the data and the
weight, and never write into their arguments.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .geometry import ConvGeometry
from .padding import pad, pad_adjoint, pad_adjoint_

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
        The convolution or transposed convolution, its padding mode included.

    Returns
    -------
    torch.Tensor
        ``(B, *geom.output_shape)``, equal to the matching ``torch.nn`` module's output
        without bias.

    See Also
    --------
    adjoint : Its exact adjoint.
    direct : The same function with torch's arguments worked out once.

    Notes
    -----
    Convolution: ``conv(pad(x), w)``, where ``pad`` is :func:`convop.padding.pad` (torch's
    convolution does the symmetric part of zero padding itself). Transposed convolution:
    ``conv_transpose(x, w)``.

    Examples
    --------
    >>> g = ConvGeometry.from_torch((2, 1, 3), (1, 5), padding=1, padding_mode="circular")
    >>> forward(torch.ones(1, 1, 5), torch.ones(2, 1, 3), g)
    tensor([[[3., 3., 3., 3., 3.],
             [3., 3., 3., 3., 3.]]])
    """
    return direct(geom, adjoint=False)(x, weight)


def adjoint(y: torch.Tensor, weight: torch.Tensor, geom: ConvGeometry) -> torch.Tensor:
    """Apply the adjoint (conjugate transpose) of :func:`forward`.

    Exact for every geometry: ``conv_transpose`` with the forward's own padding is not the
    adjoint of a reflect, replicate or circular convolution (the halo must be folded back
    onto its sources), nor of a strided one whose last input samples are never read.

    Parameters
    ----------
    y : torch.Tensor
        ``(B, *geom.output_shape)``.
    weight : torch.Tensor
        The forward's weight (``geom.weight_shape``); it is conjugated here for complex
        data.
    geom : ConvGeometry
        As for :func:`forward`.

    Returns
    -------
    torch.Tensor
        ``(B, *geom.input_shape)`` with ``<forward(x), y> == <x, adjoint(y)>``.

    See Also
    --------
    forward : The map this is the adjoint of.
    convop.padding.pad_adjoint : The fold of the padding's halo.

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
    return direct(geom, adjoint=True)(y, weight)


def direct(
    geom: ConvGeometry, *, adjoint: bool
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The direct evaluation of :func:`forward` (or :func:`adjoint`) as ``f(x, weight)``.

    Every argument torch's kernel takes is worked out here, once: an operator keeps the
    two functions, so that a product on a small layer, which takes tens of microseconds,
    costs one Python call on top of torch's own.

    Examples
    --------
    >>> g = ConvGeometry.from_torch((1, 1, 2), (1, 4), stride=2)
    >>> f = direct(g, adjoint=True)
    >>> f(torch.ones(1, 1, 2), torch.tensor([[[1.0, 2.0]]]))
    tensor([[[1., 2., 1., 2.]]])
    """
    ndim, stride, dilation, groups = geom.ndim, geom.stride, geom.dilation, geom.groups
    conv, conv_t = _CONV[ndim], _CONV_T[ndim]
    if geom.transposed:
        crop = tuple(lo for lo, _ in geom.padding)  # conv_transpose's padding crops its output
        if not adjoint:
            output_padding = geom.output_padding

            def transposed(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
                return conv_t(x, weight, None, stride, crop, output_padding, groups, dilation)

            return transposed
        size = geom.input_size

        def transposed_adjoint(y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            if weight.is_complex():
                weight = weight.conj().resolve_conj()
            x = conv(y, weight, None, stride, crop, dilation, groups)
            for i, n in enumerate(size):  # output_padding >= stride adds samples: crop them
                if x.shape[2 + i] != n:
                    x = x.narrow(2 + i, 0, n)
            return x

        return transposed_adjoint
    implicit, explicit = geom.conv_padding
    mode = geom.padding_mode
    if not adjoint:
        if explicit is None:

            def convolution(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
                return conv(x, weight, None, stride, implicit, dilation, groups)

            return convolution

        def padded_convolution(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            x = pad(x, explicit, mode)  # (B, C_in, *partly padded)
            return conv(x, weight, None, stride, implicit, dilation, groups)

        return padded_convolution
    output_padding = geom.adjoint_output_padding

    def convolution_adjoint(y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if weight.is_complex():
            weight = weight.conj().resolve_conj()
        z = conv_t(y, weight, None, stride, implicit, output_padding, groups, dilation)
        if explicit is None:
            return z
        recorded = z.requires_grad and torch.is_grad_enabled()  # else z is ours to fold into
        return (pad_adjoint if recorded else pad_adjoint_)(z, explicit, mode)

    return convolution_adjoint
