"""The units ``convop deblur`` solves in: the data and the kernel brought near 1.

Deblurring is equivariant under scaling. With ``A = t A'`` and ``b = s b'``, and
``x = (s / t) x'``::

    |A x - b|^2 + damp^2 |x|^2        = s^2 (|A' x' - b'|^2 + (damp / t)^2 |x'|^2)
    1/2 |A x - b|^2 + w TV(x)         = s^2 (1/2 |A' x' - b'|^2 + w / (s t) TV(x'))

so the solve runs on ``b' = b / s`` and ``A' = A / t`` with the damping ``damp / t`` and
the weight ``w / (s t)``, and its result is scaled back. ``s`` and ``t`` are powers of two
near the data's largest ``|value|`` and the kernel's sum of ``|values|``: scaling by them is
exact, so for data and kernels already near 1 (``s = t = 1``) nothing changes, and pixels
near 1e300 or a kernel near 1e-300 no longer overflow the solvers' squares and products.

The default total-variation weight is a rule in the data's own units: ``w = 8 sigma^2 /
p``, ``sigma`` the noise level estimated from the image and ``p`` its scale, 1 for image
files (whose pixels lie in [0, 1]) and the largest ``|value|`` of a ``.npy`` array (which
carries no absolute scale), so that scaling an array scales the result by the same factor.
"""

from __future__ import annotations

import math
import sys
from typing import NamedTuple

import numpy as np

from ._parser import MAX_DAMP, CommandError

#: float64's normal exponents: 2**e is a normal number, and so is 2**-e.
_EXPONENTS = (-1021, 1021)
#: The most the scaled result may be scaled back by, as a power of two (float64 ends at 2**1024).
_RESULT_EXPONENT = 1000


class _Option(NamedTuple):
    """An option given in the data's or the kernel's units, and its range in the solve's.

    ``why`` says why a value outside is refused; its fields are ``scaled`` (the value in the
    solve's units), ``side`` ('too small' or 'too large'), ``high`` (the range's top),
    ``peak`` and ``kernel`` (:class:`Scales`' fields).
    """

    name: str
    allowed: tuple[float, float]
    why: str


_DAMP = _Option(
    "--damp",
    (0.0, MAX_DAMP),
    "{scaled:.3g} times the kernel's scale (its sum of |values|, about 2**{kernel}), more "
    "than {high:g}: the damping alone would decide the result; pass a smaller --damp",
)
_WEIGHT = _Option(  # from the smallest float64 above 0 to the largest: neither 0 nor inf
    "--tv-weight",
    (math.ulp(0.0), sys.float_info.max),
    "{side} for an image whose values reach {peak:.3g} and a kernel summing to about "
    "2**{kernel}: it leaves float64's range",
)


def _exponent(value: float) -> int:
    """``e`` such that ``2**e`` is the power of two nearest ``value`` (> 0); 0 for 0."""
    if value == 0:
        return 0
    mantissa, exponent = math.frexp(value)  # value = mantissa * 2**exponent, 0.5 <= m < 1
    return min(max(exponent - (mantissa < math.sqrt(0.5)), _EXPONENTS[0]), _EXPONENTS[1])


def _exponent_of_sum(values: np.ndarray) -> int:
    """:func:`_exponent` of ``sum(|values|)``, computed without overflow."""
    largest = float(np.max(np.abs(values), initial=0.0))
    if largest == 0:
        return 0
    top = math.frexp(largest)[1]
    total = float(np.ldexp(np.abs(values), -top).sum())  # each term <= 1
    return min(max(top + _exponent(total), _EXPONENTS[0]), _EXPONENTS[1])


class Scales(NamedTuple):
    """How the data and the kernel are scaled for the solve (see the module's docstring)."""

    data: int
    """``s = 2**data``, near the data's largest ``|value|`` (0 for image files)."""
    kernel: int
    """``t = 2**kernel``, near the kernel's sum of ``|values|``."""
    peak: float
    """``p``, the data's scale in the default TV weight: 1 for image files, else max ``|b|``."""

    @classmethod
    def of(cls, pixels: np.ndarray, from_file: bool, weight: np.ndarray) -> Scales:
        """The scales of an image's ``pixels`` (read from an image file or not) and a kernel.

        Refuses a pair whose result would leave float64's range.
        """
        peak = 1.0 if from_file else float(np.max(np.abs(pixels), initial=0.0)) or 1.0
        scales = cls(0 if from_file else _exponent(peak), _exponent_of_sum(weight), peak)
        if scales.data - scales.kernel > _RESULT_EXPONENT:  # below, it fades into subnormals
            raise CommandError(
                f"the image's values (up to {peak:.3g}) over the kernel's (summing to about "
                f"2**{scales.kernel}) are beyond float64's range: the deblurred image would "
                f"overflow; rescale the image or the kernel"
            )
        return scales

    @property
    def s(self) -> float:
        return math.ldexp(1.0, self.data)

    @property
    def t(self) -> float:
        return math.ldexp(1.0, self.kernel)

    def data_in_units(self, b: np.ndarray) -> np.ndarray:
        """``b / s``, exactly."""
        return np.ldexp(b, -self.data)

    def kernel_in_units(self, weight: np.ndarray) -> np.ndarray:
        """``weight / t``, exactly."""
        return np.ldexp(weight, -self.kernel)

    def result(self, x: np.ndarray) -> np.ndarray:
        """``(s / t) x`` for the solve's ``x``; ``FloatingPointError`` if not finite."""
        with np.errstate(over="ignore"):
            result = np.ldexp(x, self.data - self.kernel)
        if not np.isfinite(result).all():
            raise FloatingPointError(
                "the deblurred image has NaN or Inf values: nothing was written"
            )
        return result

    def damp_in_units(self, damp: float) -> float:
        """``damp / t``, refused above :data:`MAX_DAMP`."""
        return self._in_units(_DAMP, damp, -self.kernel)

    def damp_from_units(self, damp: float) -> float:
        """A damping of the solve in the kernel's units: ``t damp``."""
        return _ldexp(damp, self.kernel)

    def weight_in_units(self, weight: float) -> float:
        """A TV weight given in the data's units, ``w / (s t)``, refused outside float64."""
        return self._in_units(_WEIGHT, weight, -self.data - self.kernel)

    def weight_from_units(self, weight: float) -> float:
        """A TV weight of the solve in the data's units: ``s t w``."""
        return _ldexp(weight, self.data + self.kernel)

    def default_weight(self, per_variance: float, noise: float) -> float:
        """The default TV weight in the solve's units, for ``noise`` measured in them.

        ``per_variance sigma^2 / p`` in the data's units, ``sigma = s noise``; ``inf``
        where that leaves float64.
        """
        return _ldexp(per_variance * noise**2 * (self.s / self.peak), -self.kernel)

    def _in_units(self, option: _Option, value: float, exponent: int) -> float:
        """``value * 2**exponent``, the option's value in the solve's units, in its range."""
        scaled = _ldexp(value, exponent)
        low, high = option.allowed
        if not low <= scaled <= high:
            side = "too small" if scaled < low else "too large"
            why = option.why.format(scaled=scaled, side=side, high=high, peak=self.peak,
                                    kernel=self.kernel)  # fmt: skip
            raise CommandError(f"{option.name} {value:g} is {why}")
        return scaled


def _ldexp(value: float, exponent: int) -> float:
    """``value * 2**exponent``, ``inf`` where that overflows (``math.ldexp`` raises)."""
    try:
        return math.ldexp(value, exponent)
    except OverflowError:
        return math.inf
