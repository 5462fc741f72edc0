"""Estimating the noise of data: Donoho's median estimator on high-order differences.

:func:`estimate_noise` (``convop.estimate_noise``), and the exact scaling of data by a power
of two that it and :func:`convop.choose_damping` share.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable

import numpy as np
import torch

from ._shared.arrays import to_tensor
from ._shared.checks import is_int
from ._shared.memory import check_memory

__all__ = ["estimate_noise"]

#: Donoho's constant: the median absolute deviation of a standard normal.
MAD_NORMAL = 0.6744897501960817
#: Its complex counterpart: the median modulus of a circular complex normal of unit
#: ``E|n|^2``, ``sqrt(log 2)``.
MAD_COMPLEX = math.sqrt(math.log(2.0))
#: The order of the differences :func:`estimate_noise` takes along each axis.
DIFFERENCE_ORDER = 4


def as_data(y, name: str = "y") -> torch.Tensor:
    """``y`` as a float64 (complex128) tensor where it lives; a view where it already is one.

    Callers never write into the result: it may share memory with the caller's array.
    """
    if isinstance(y, torch.Tensor):
        t = y.detach()
        if t.dtype == torch.bool or t.is_quantized:
            raise TypeError(f"{name} must hold real or complex numbers, got dtype {t.dtype}")
        return t.to(torch.complex128 if t.is_complex() else torch.float64)
    array = y if isinstance(y, np.ndarray) else np.asarray(y)
    if array.dtype.kind not in "iufc":
        raise TypeError(f"{name} must hold real or complex numbers, got dtype {array.dtype}")
    dtype = np.complex128 if array.dtype.kind == "c" else np.float64
    return to_tensor(array, np.dtype(dtype), torch.device("cpu"))


def _axes(axes: object, ndim: int) -> tuple[int, ...]:
    """``axes`` (``None``, an int or ints, negative from the end) as distinct axes >= 0."""
    if axes is None:
        return tuple(range(ndim))
    if is_int(axes):
        axes = (axes,)
    if isinstance(axes, (str, bytes)) or not isinstance(axes, Iterable):
        raise TypeError(f"axes must be an int or a tuple of ints, got {axes!r}")
    axes = tuple(axes)
    if not all(is_int(a) for a in axes):
        raise TypeError(f"axes must contain only ints, got axes={axes!r}")
    if not axes:
        raise ValueError("axes must name at least one axis, got axes=()")
    if not all(-ndim <= a < ndim for a in axes):
        raise ValueError(
            f"axes must be in [{-ndim}, {ndim}) for y of {ndim} dimensions, got axes={axes!r}"
        )
    normal = tuple(operator.index(a) % ndim for a in axes)
    if len(set(normal)) != len(normal):
        raise ValueError(f"axes must name each axis once, got axes={axes!r}")
    return normal


def normalised(t: torch.Tensor, name: str = "y") -> tuple[torch.Tensor, int]:
    """``(t * 2**-e, e)``: ``t``'s largest component scaled into ``[0.5, 1)`` exactly.

    ``e = 0`` for zero data. A power of two changes no digit, so whatever is computed from
    the scaled data is what the same data at any other such scale gives, and neither
    squares nor sums of it can overflow or underflow. ``t`` is not written to.
    """
    parts = torch.view_as_real(t) if t.is_complex() else t
    low, high = torch.aminmax(parts)  # NaN if there is one; no copy of the data
    peak = max(-float(low), float(high))
    if not math.isfinite(peak):
        raise ValueError(f"{name} has NaN or Inf values; expected finite values")
    if peak == 0:
        return t, 0
    e = math.frexp(peak)[1]
    if -1021 <= e <= 1022:
        return t * math.ldexp(1.0, -e), e
    half = -e // 2  # 2**-e alone is not a float64 here
    return (t * math.ldexp(1.0, half)) * math.ldexp(1.0, -e - half), e


def noise_sigma(t: torch.Tensor, axes: tuple[int, ...]) -> float:
    """:func:`estimate_noise` of ``t`` (finite, normalised) along the distinct ``axes``."""
    if any(t.shape[a] < 2 for a in axes):
        raise ValueError(
            f"y must have at least 2 samples along each of the axes {axes}, got shape "
            f"{tuple(t.shape)}"
        )
    detail = t
    for axis in axes:
        order = min(DIFFERENCE_ORDER, t.shape[axis] - 1)
        detail = torch.diff(detail, n=order, dim=axis) / math.sqrt(math.comb(2 * order, order))
    mad = MAD_COMPLEX if t.is_complex() else MAD_NORMAL
    return float(detail.abs().reshape(-1).median()) / mad


def estimate_noise(y, axes: int | tuple[int, ...] | None = None) -> float:
    r"""The standard deviation of white noise in ``y``, from its finest differences.

    The median absolute value of ``y``'s fourth differences along every axis at once
    (the separable filter ``[1, -4, 6, -4, 1]`` per axis, scaled to unit norm), over
    0.6745: Donoho & Johnstone's robust estimator with a high-pass that cancels
    polynomials of degree 3 along each axis. A blurred signal has almost
    nothing at the highest frequencies, so what is there is noise; the fourth difference
    lets through less of the signal than the Haar detail (a first difference), which
    overestimates the noise of sharp images by 10-25% at 0.5% noise. Axes with fewer
    than 5 samples take the highest difference they hold.

    Parameters
    ----------
    y : numpy.ndarray, torch.Tensor or array_like
        The data: real or complex, any float or int dtype (computed in float64). Never
        written to.
    axes : int or tuple of int, optional
        The axes to take the differences along (default: all), each once; negative ones
        count from the end. Each needs 2 samples or more. Leave out a channel axis.

    Returns
    -------
    float
        ``sigma``, in ``y``'s units: ``estimate_noise(c * y) == abs(c) * estimate_noise(y)``,
        exactly when ``c`` is a power of two and ``c * y`` exact. For complex ``y``,
        ``sqrt(E|n|^2)`` of circular Gaussian noise ``n`` (its median modulus over
        ``sqrt(log 2)``, not 0.6745). Zero for constant data.

    Raises
    ------
    ValueError
        For an empty ``y``, NaN or Inf values, an axis out of range or repeated, or fewer
        than 2 samples along an axis; also if the estimate exceeds float64's range.
    TypeError
        For non-numeric data, or ``axes`` that are not ints.

    See Also
    --------
    choose_damping : The discrepancy principle, which uses this estimate by default.

    Notes
    -----
    With :math:`D` the fourth difference along each of the axes in turn, each scaled to
    unit norm (:math:`\|[1, -4, 6, -4, 1]\|_2 = \sqrt{70}`), so that every sample of
    :math:`D n` has the standard deviation :math:`\sigma` of white Gaussian noise :math:`n`,

    .. math::

        \hat\sigma = \frac{\operatorname{median}_i |(D y)_i|}{0.6745},

    0.6745 being the median of :math:`|n|` for a standard normal :math:`n`: the median
    absolute deviation of the finest-scale detail, as Donoho and Johnstone estimate the
    noise from a wavelet transform's finest coefficients [1]_. The median ignores the
    few large details where the signal has edges.

    References
    ----------
    .. [1] D. L. Donoho and I. M. Johnstone, "Ideal Spatial Adaptation by Wavelet
       Shrinkage," Biometrika 81 (1994), 425-455.

    Examples
    --------
    >>> import numpy as np
    >>> from convop import estimate_noise
    >>> rng = np.random.default_rng(0)
    >>> smooth = np.add.outer(np.linspace(0, 1, 256), np.linspace(0, 1, 256))
    >>> round(estimate_noise(smooth + 0.01 * rng.standard_normal((256, 256))), 3)
    0.01
    """
    t = as_data(y)
    if t.ndim == 0:
        raise ValueError("y must have at least one axis, got a scalar of shape ()")
    axes = _axes(axes, t.ndim)
    if t.numel() == 0:
        raise ValueError(f"y must not be empty, got shape {tuple(t.shape)}")
    check_memory(4 * t.numel() * t.element_size(), None, f"estimate_noise() of a "
                 f"{tuple(t.shape)} {t.dtype} y", t.device)  # fmt: skip
    t, e = normalised(t)
    sigma = noise_sigma(t, axes)
    try:
        return math.ldexp(sigma, e)
    except OverflowError:
        raise ValueError(
            f"y's noise estimate, {sigma} * 2**{e}, exceeds float64's range; scale y down"
        ) from None
