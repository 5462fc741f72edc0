"""The point-spread function of ``convop deconvolve``: read, normalised, centred, checked.

A PSF file (TIFF, ``.npy``, ``.npz``, read by :mod:`convop._io.stacks`) is refused when it
holds NaN or Inf or negative values, or sums to 0. It is then

1. normalised to sum 1, so that the result keeps the stack's counts;
2. centred: the all-zero planes at its borders are cut off, and it is zero-padded to an
   odd size along each axis, with its intensity centroid (rounded to the nearest sample,
   halves up) at the middle sample ``k // 2``. Padding never drops a sample of the PSF; the
   centre it moves to is the sample :func:`convop.extended_domain` and ``padding="same"``
   map onto each image sample, so the result is registered on the stack by the PSF's
   centroid;
3. checked against the stack: one axis per axis of the stack, not larger along any (after
   centring), and sampled at the same voxel size along every axis (1% apart at most) when
   both voxel sizes are known, from the files or from ``--voxel`` and ``--psf-voxel``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .._io.stacks import read_stack, split_member, stack_info
from ._parser import CommandError

#: How far apart (relative) the PSF's and the stack's voxel sizes may be along an axis.
VOXEL_TOLERANCE = 0.01
#: Axis names, for messages.
AXES = ("z", "y", "x")


class PSF(NamedTuple):
    """The PSF as deconvolve uses it, and what was done to it (for the report)."""

    values: np.ndarray
    """The solve's dtype, summing to 1, odd along every axis, centroid at the middle sample."""
    total: float
    """Its sum as read."""
    shape: tuple[int, ...]
    """Its shape as read."""
    voxel: tuple[float, ...] | None
    """Its voxel size in micrometres (file or ``--psf-voxel``), if known."""


def centred(psf: np.ndarray) -> np.ndarray:
    """``psf`` cut to its nonzero box and zero-padded, odd, its centroid at the middle.

    Along each axis of ``n`` samples with the (rounded) centroid at ``r``, ``h = max(r, n
    - 1 - r)``: ``h - r`` zeros before and ``h - (n - 1 - r)`` after give ``2 h + 1``
    samples with the centroid at ``h``. ``psf`` is non-negative and not all zero.

    Examples
    --------
    >>> centred(np.array([0.0, 1.0, 3.0, 0.0]))  # [1, 3]: centroid 0.75, sample 1
    array([1., 3., 0.])
    >>> centred(np.array([2.0, 1.0, 0.0, 0.0, 1.0]))  # centroid 1.25: sample 1
    array([0., 0., 2., 1., 0., 0., 1.])
    """
    nonzero = np.argwhere(psf > 0)
    box = tuple(slice(lo, hi + 1) for lo, hi in zip(nonzero.min(0), nonzero.max(0)))
    psf = psf[box]
    weights = psf.astype(np.float64)
    total = weights.sum()
    pads = []
    for axis, n in enumerate(psf.shape):
        profile = weights.sum(axis=tuple(a for a in range(psf.ndim) if a != axis))
        centroid = float(np.dot(profile, np.arange(n))) / total
        r = min(max(math.floor(centroid + 0.5), 0), n - 1)
        h = max(r, n - 1 - r)
        pads.append((h - r, h - (n - 1 - r)))
    return np.pad(psf, pads)


def read_psf(text: str, voxel: tuple[float, ...] | None, max_bytes: int | None,
             dtype=np.float32) -> PSF:  # fmt: skip
    """The ``--psf`` file, refused, normalised and centred as the module says, as ``dtype``.

    ``voxel``: ``--psf-voxel``, which replaces the file's voxel size.
    """
    path, member = split_member(text)
    what = f"PSF {text!r}"
    info = stack_info(path, what, member)
    values = read_stack(path, info, what, counts=False, dtype=np.float64, max_bytes=max_bytes)
    negative = int((values < 0).sum())
    if negative:
        raise CommandError(
            f"{what} has {negative} negative value{'s' * (negative > 1)}, the smallest "
            f"{float(values.min()):.3g}: a PSF is an intensity, >= 0 (clip it at 0 after "
            f"subtracting its background)"
        )
    total = float(values.sum(dtype=np.float64))
    if not total > 0:
        raise CommandError(
            f"{what} is all zeros: it blurs every stack to 0, so there is nothing to recover"
        )
    unit = (centred(values) / total).astype(dtype)
    return PSF(unit, total, info.shape, voxel if voxel is not None else info.voxel)


def check_against(psf: PSF, shape: tuple[int, ...], voxel: tuple[float, ...] | None,
                  what: str) -> None:  # fmt: skip
    """Refuse a PSF with other axes than the stack ``shape``, larger, or sampled otherwise."""
    nd = len(shape)
    noun = "stack" if nd == 3 else "image"
    if psf.values.ndim != nd:
        raise CommandError(
            f"--psf: a {psf.values.ndim}-D PSF (shape {psf.shape}) for a {nd}-D {noun} "
            f"{shape} ({what}): the PSF needs one axis per axis of the {noun}"
        )
    names = AXES[-nd:]
    for name, k, n in zip(names, psf.values.shape, shape):
        if k > n:
            raise CommandError(
                f"--psf: the PSF, centred, has {k} samples along {name} (shape "
                f"{psf.values.shape}, read as {psf.shape}), more than the {noun}'s {n} "
                f"({what}, shape {shape}): crop the PSF to at most the {noun}'s size"
            )
    if psf.voxel is None or voxel is None:
        return
    for name, p, s in zip(names, psf.voxel, voxel):
        if abs(p / s - 1) > VOXEL_TOLERANCE:
            raise CommandError(
                f"--psf: the PSF's voxel size {_sizes(psf.voxel)} um differs from the "
                f"{noun}'s {_sizes(voxel)} um ({what}) along {name} (anisotropy "
                f"{_anisotropy(psf.voxel)} against {_anisotropy(voxel)}): resample the PSF "
                f"to the {noun}'s voxel size, or give the right sizes with --psf-voxel and "
                f"--voxel"
            )


def _sizes(voxel: tuple[float, ...]) -> str:
    return " x ".join(f"{v:.4g}" for v in voxel)


def _anisotropy(voxel: tuple[float, ...]) -> str:
    """The spacing of each axis over the last one's, ``z/x 3.08``."""
    names = AXES[-len(voxel) :]
    return ", ".join(f"{n}/x {v / voxel[-1]:.3g}" for n, v in zip(names[:-1], voxel[:-1]))
