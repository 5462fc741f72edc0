"""The extended-domain model of a measured image: the scene goes on past the frame."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ._shared.arrays import as_weight_tensor
from ._shared.checks import is_int
from .constructors import conv1d, conv2d, conv3d
from .operator import ConvOperator

_CONSTRUCTORS = {1: conv1d, 2: conv2d, 3: conv3d}


@dataclass(frozen=True)
class ExtendedDomain:
    """A blur from an object larger than the image, and the crop back to the image's frame.

    Made by :func:`extended_domain`.

    Parameters
    ----------
    op : ConvOperator
        The 'valid' convolution from the object ``(1, *object_shape)`` to the image
        ``(views, *image_shape)``: every image pixel sees all of the PSF, no padding.
    image_shape, object_shape : tuple of int
        Spatial shapes: ``object_shape[a] = image_shape[a] + psf_shape[a] - 1``.
    offset : tuple of int
        Where the image's frame starts in the object: ``(k - 1) // 2`` along an axis of
        ``k`` PSF samples. The object sample ``offset + i`` is the one PSF's centre maps
        onto image sample ``i``.
    """

    op: ConvOperator
    image_shape: tuple[int, ...]
    object_shape: tuple[int, ...]
    offset: tuple[int, ...]

    def crop(self, x):
        """The image's field of view of an object: ``x[..., o:o + n, ...]`` on each axis.

        Parameters
        ----------
        x : numpy.ndarray or torch.Tensor
            Of shape ``(..., *object_shape)`` (any leading axes: channel, batch), or flat
            (one object, ``prod(object_shape)`` values).

        Returns
        -------
        numpy.ndarray or torch.Tensor
            A view of ``x``, ``(..., *image_shape)`` (flat for a flat ``x``).
        """
        if not isinstance(x, (np.ndarray, torch.Tensor)):
            raise TypeError(f"x must be a numpy.ndarray or torch.Tensor, got {type(x).__name__}")
        nd = len(self.object_shape)
        flat = x.ndim == 1 and x.shape[0] == math.prod(self.object_shape) and nd > 1
        shaped = x.reshape(self.object_shape) if flat else x
        if tuple(shaped.shape[shaped.ndim - nd :]) != self.object_shape:
            raise ValueError(
                f"x must have shape (..., *{self.object_shape}) or "
                f"({math.prod(self.object_shape)},), got {tuple(x.shape)}"
            )
        window = (slice(o, o + n) for o, n in zip(self.offset, self.image_shape))
        out = shaped[(Ellipsis, *window)]
        return out.reshape(-1) if flat else out


def extended_domain(psf, image_shape, *, dtype=None, device=None,
                    method: str = "auto") -> ExtendedDomain:  # fmt: skip
    r"""The boundary-exact model of a measured image: a 'valid' blur of a larger object.

    A camera or a microscope records a frame of a scene that goes on past its edges: pixels
    near the border saw light from outside. Modelling the image as a blur of an object
    larger by the PSF's reach (``psf_shape - 1`` along each axis), with no padding at all,
    is exact [1]_: a deconvolution of this model (with :func:`convop.richardson_lucy`, which
    normalises by ``A^T 1``, or any least-squares solver) has no boundary artefact, and
    :meth:`ExtendedDomain.crop` gives the image's field of view back.

    Parameters
    ----------
    psf : array_like or torch.Tensor
        The point-spread function as a *convolution* kernel (the image of a point source,
        as microscopes and telescopes record it; flipped here for torch's correlation):
        ``(*k)`` with one axis per axis of the image, or ``(views, *k)`` for several views
        of one object. Used as given (normalise it to sum 1 for RL to keep the counts).
    image_shape : tuple of int
        The image's spatial shape, 1-D to 3-D.
    dtype : torch.dtype, optional
        Default: the PSF's (numpy float64 gives float64).
    device : torch.device or str, optional
        Default: the PSF's (CPU for numpy).
    method : {'auto', 'direct', 'fft'}, default 'auto'
        The operator's evaluation (:func:`convop.conv2d`).

    Returns
    -------
    ExtendedDomain
        ``op`` (object ``(1, *object_shape)`` to image ``(views, *image_shape)``), the
        shapes, and ``crop``.

    Raises
    ------
    TypeError
        For a PSF that is no array, or a complex one.
    ValueError
        For a PSF with no samples, non-finite values or the wrong number of axes, or an
        ``image_shape`` that is not 1 to 3 positive ints.

    See Also
    --------
    richardson_lucy : Poisson deconvolution; normalises by ``A^T 1``, as this model needs.

    Notes
    -----
    The PSF's centre is its sample ``k // 2`` along an axis of ``k`` samples (``numpy.fft``'s
    ``fftshift`` convention; the middle for odd ``k``). Image sample ``i`` is then

    .. math:: y_i = \sum_{j=0}^{k-1} \mathrm{psf}_j \, x_{i + k - 1 - j},

    so that the PSF's centre ``j = k // 2`` maps the object sample ``offset + i``
    (``offset = k - 1 - k // 2 = (k - 1) // 2``) onto image sample ``i``.

    References
    ----------
    .. [1] M. Bertero and P. Boccacci, "A simple method for the reduction of boundary
       effects in the Richardson-Lucy approach to image deconvolution," Astronomy &
       Astrophysics 437 (2005), 369-374.

    Examples
    --------
    >>> import numpy as np, convop
    >>> psf = np.outer([1, 2, 1], [1, 2, 1]) / 16.0
    >>> model = convop.extended_domain(psf, (32, 32))
    >>> model.object_shape, model.op.output_shape
    ((34, 34), (1, 32, 32))
    >>> scene = np.random.default_rng(0).random(model.object_shape)
    >>> image = (model.op @ scene.ravel()).reshape(32, 32)
    >>> model.crop(scene).shape
    (32, 32)
    """
    if (
        not isinstance(image_shape, (tuple, list))
        or not 1 <= len(image_shape) <= 3
        or not all(is_int(n) and n >= 1 for n in image_shape)
    ):
        raise ValueError(f"image_shape must be 1 to 3 positive ints, got {image_shape!r}")
    image_shape = tuple(int(n) for n in image_shape)
    nd = len(image_shape)
    if not isinstance(psf, torch.Tensor):
        psf = np.asarray(psf)
        if psf.dtype.kind not in "biuf":
            raise TypeError(f"psf must hold real numbers, got dtype {psf.dtype}")
        psf = torch.from_numpy(np.array(psf, dtype=np.float64 if psf.dtype.kind != "f"
                                        else psf.dtype))  # fmt: skip
    if psf.is_complex():
        raise TypeError(f"psf must be real, got {psf.dtype}")
    if psf.ndim not in (nd, nd + 1):
        raise ValueError(
            f"psf must have {nd} axes (one view) or {nd + 1} (views first) for an image of "
            f"shape {image_shape}, got shape {tuple(psf.shape)}"
        )
    if psf.numel() == 0 or not bool(torch.isfinite(psf).all()):
        raise ValueError(
            f"psf must have samples, all finite, got shape {tuple(psf.shape)} with "
            f"{int((~torch.isfinite(psf)).sum())} non-finite value(s)"
        )
    views = psf if psf.ndim == nd + 1 else psf[None]
    weight = views.detach().flip(tuple(range(1, nd + 1))).unsqueeze(1)  # (V, 1, *k)
    weight = weight.to(dtype=dtype or weight.dtype, device=device or weight.device)
    weight = as_weight_tensor(weight, "psf")
    kernel = tuple(weight.shape[2:])
    object_shape = tuple(n + k - 1 for n, k in zip(image_shape, kernel))
    op = _CONSTRUCTORS[nd](weight, (1, *object_shape), padding=0, method=method)
    offset = tuple((k - 1) // 2 for k in kernel)
    return ExtendedDomain(op, image_shape, object_shape, offset)
