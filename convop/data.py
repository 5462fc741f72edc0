"""Test images and blur kernels generated on the spot: examples and the demo run offline.

Everything here is deterministic numpy (the scipy/torch boundary is not crossed), so the
same call gives the same array on every machine.
"""

from __future__ import annotations

import math

import numpy as np

from ._shared.checks import as_int

# Modified Shepp-Logan phantom (Toft's contrast-improved version): for each ellipse its
# intensity, semi-axes (a, b), centre (x0, y0) and rotation in degrees, on [-1, 1]^2.
_SHEPP_LOGAN = (
    (1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0),
    (-0.2, 0.11, 0.31, 0.22, 0.0, -18.0),
    (-0.2, 0.16, 0.41, -0.22, 0.0, 18.0),
    (0.1, 0.21, 0.25, 0.0, 0.35, 0.0),
    (0.1, 0.046, 0.046, 0.0, 0.1, 0.0),
    (0.1, 0.046, 0.046, 0.0, -0.1, 0.0),
    (0.1, 0.046, 0.023, -0.08, -0.605, 0.0),
    (0.1, 0.023, 0.023, 0.0, -0.606, 0.0),
    (0.1, 0.023, 0.046, 0.06, -0.605, 0.0),
)


def phantom(n: int = 256) -> np.ndarray:
    """The modified Shepp–Logan phantom, an ``(n, n)`` float64 image with values in [0, 1].

    A standard test image of tomography and deblurring: ellipses with sharp edges and low
    contrast details, generated analytically (no file, no download). The ellipses are
    Shepp and Logan's head section [1]_ with Toft's contrast-improved intensities [2]_.

    Parameters
    ----------
    n : int, default 256
        Image size in pixels (at least 8).

    Returns
    -------
    numpy.ndarray
        ``(n, n)``, row 0 at the top.

    See Also
    --------
    gaussian_kernel : A Gaussian blur to apply to it.
    motion_kernel : A motion blur to apply to it.
    psnr : How close a restored image is to it.

    References
    ----------
    .. [1] L. A. Shepp and B. F. Logan, "The Fourier Reconstruction of a Head Section,"
       IEEE Trans. Nucl. Sci. 21 (1974), 21-43.
    .. [2] P. Toft, "The Radon Transform: Theory and Implementation," Ph.D. thesis,
       Technical University of Denmark, 1996.

    Examples
    --------
    >>> from convop.data import phantom
    >>> image = phantom(64)
    >>> image.shape, float(image.min()), float(image.max())
    ((64, 64), 0.0, 1.0)
    """
    n = as_int(n, "n", minimum=8)
    y, x = np.mgrid[1 : -1 : n * 1j, -1 : 1 : n * 1j]  # y up, image row 0 at the top
    image = np.zeros((n, n))
    for value, a, b, x0, y0, degrees in _SHEPP_LOGAN:
        theta = np.deg2rad(degrees)
        u = (x - x0) * np.cos(theta) + (y - y0) * np.sin(theta)
        v = -(x - x0) * np.sin(theta) + (y - y0) * np.cos(theta)
        image[(u / a) ** 2 + (v / b) ** 2 <= 1.0] += value
    return np.clip(image, 0.0, 1.0)


def gaussian_kernel(size: int = 9, sigma: float | None = None) -> np.ndarray:
    """A normalised ``(size, size)`` Gaussian blur kernel (float64, sums to 1).

    Parameters
    ----------
    size : int, default 9
        Odd kernel size.
    sigma : float, optional
        Standard deviation in pixels; default ``size / 6`` (the kernel spans +-3 sigma).

    Returns
    -------
    numpy.ndarray
        ``(size, size)``, ``exp(-(i^2 + j^2) / (2 sigma^2))`` at offsets ``(i, j)`` from
        the centre, divided by its sum.

    See Also
    --------
    motion_kernel : A linear motion blur.
    convop.imaging.load_kernel : The same kernel from a spec, ``gaussian:SIZE[:SIGMA]``.

    Examples
    --------
    >>> from convop.data import gaussian_kernel
    >>> k = gaussian_kernel(5, 1.0)
    >>> k.shape, round(float(k.sum()), 12), bool(k[2, 2] == k.max())
    ((5, 5), 1.0, True)
    """
    size = as_int(size, "size", minimum=1)
    if size % 2 == 0:
        raise ValueError(f"size must be odd, got size={size}")
    sigma = size / 6 if sigma is None else float(sigma)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite float > 0, got sigma={sigma}")
    t = np.arange(size) - size // 2
    # exp(-(t/sigma)^2 / 2) by distances in units of sigma, clipped where the Gaussian is 0
    # anyway: a tiny sigma gives the delta kernel without an overflow in the square
    g = np.exp(-0.5 * (np.minimum(np.abs(t), 64.0 * sigma) / sigma) ** 2)
    kernel = np.outer(g, g)
    return kernel / kernel.sum()


def motion_kernel(length: int = 9, angle: float = 0.0) -> np.ndarray:
    """A normalised linear motion-blur kernel of ``length`` pixels at ``angle`` degrees.

    Parameters
    ----------
    length : int, default 9
        Odd length of the motion, in pixels; the kernel is ``(length, length)``.
    angle : float, default 0.0
        Direction of the motion in degrees, counter-clockwise from the positive x-axis
        (rows grow downwards).

    Returns
    -------
    numpy.ndarray
        ``(length, length)``: equal weights on the pixels along a centred line segment of
        ``length`` pixels, summing to 1.

    See Also
    --------
    gaussian_kernel : A Gaussian blur.
    convop.imaging.load_kernel : The same kernel from a spec, ``motion:LENGTH[:ANGLE]``.

    Examples
    --------
    >>> from convop.data import motion_kernel
    >>> motion_kernel(3, 0.0)
    array([[0.        , 0.        , 0.        ],
           [0.33333333, 0.33333333, 0.33333333],
           [0.        , 0.        , 0.        ]])
    """
    length = as_int(length, "length", minimum=1)
    if length % 2 == 0:
        raise ValueError(f"length must be odd, got length={length}")
    angle = float(angle)
    if not math.isfinite(angle):
        raise ValueError(f"angle must be a finite number of degrees, got angle={angle}")
    kernel = np.zeros((length, length))
    c = length // 2
    t = np.linspace(-c, c, 4 * length)
    theta = np.deg2rad(math.fmod(angle, 360.0))  # reduced first: exact, and precise when huge
    rows = np.rint(c - t * np.sin(theta)).astype(int)
    cols = np.rint(c + t * np.cos(theta)).astype(int)
    kernel[rows, cols] = 1.0
    return kernel / kernel.sum()


def psnr(estimate: np.ndarray, truth: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio of ``estimate`` against ``truth``, in dB.

    ``10 log10(peak^2 / mse)``, with ``mse`` the mean squared difference over all values and
    ``peak`` the data range: ``data_range`` if given, else the range of ``truth``
    (``truth.max() - truth.min()``, 1 for the images of this module, whose values span
    [0, 1]). The peak never depends on ``estimate``, so two estimates of one truth compare
    directly.

    Parameters
    ----------
    estimate : numpy.ndarray
        Any shape holding as many values as ``truth`` (a flattened image is fine).
    truth : numpy.ndarray
        The reference.
    data_range : float, optional
        The peak, e.g. 1.0 for values in [0, 1] or 255 for 8-bit samples.

    Returns
    -------
    float
        In dB; ``inf`` when ``estimate`` equals ``truth``.

    Raises
    ------
    ValueError
        If the sizes differ, or the peak is not positive (a constant ``truth`` without
        ``data_range``).

    See Also
    --------
    phantom : A test image to measure restorations of.

    Examples
    --------
    >>> import numpy as np
    >>> from convop.data import phantom, psnr
    >>> truth = phantom(64)
    >>> noisy = truth + 0.01 * np.random.default_rng(0).standard_normal(truth.shape)
    >>> round(psnr(noisy.ravel(), truth), 1)
    40.0
    >>> round(psnr(2 * truth, 2 * truth + 0.02, data_range=2.0), 2)
    40.0
    """
    estimate, truth = np.asarray(estimate), np.asarray(truth)
    if estimate.size != truth.size:
        raise ValueError(
            f"estimate and truth must hold as many values, got estimate.shape="
            f"{estimate.shape} and truth.shape={truth.shape}"
        )
    peak = float(truth.max() - truth.min()) if data_range is None else float(data_range)
    if not peak > 0:
        source = "the range of truth" if data_range is None else "data_range"
        raise ValueError(f"the peak must be > 0, got {peak:g} ({source}); pass data_range")
    mse = float(np.mean(np.abs(estimate.ravel() - truth.ravel()) ** 2))
    return float(10 * np.log10(peak**2 / mse)) if mse > 0 else float("inf")
