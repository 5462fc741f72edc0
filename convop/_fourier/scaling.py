"""The weight at unit scale: norms at every scale, by exact powers of two.

:func:`convop.svdvals` and :func:`convop.opnorm` first divide the weight by the power of
two that puts its largest entry (of the taps the operator reads: :func:`read_taps`) in
``[1/2, 1)`` (:func:`unit_weight`), which is exact, so that the squares behind the blocks
and Gram matrices stay inside float64's range; then they multiply the results back
(:func:`ldexp_`, :func:`scaled_back`: bounds rounded outward where that lands in the
subnormal range). :func:`round_off` says, at the operator's scale, why round-off keeps two
bounds apart.
"""

from __future__ import annotations

import math

import torch

from ..geometry import ConvGeometry
from .rounding import Bounds
from .separable import outer


def read_taps(geom: ConvGeometry, conv: ConvGeometry) -> torch.Tensor | None:
    """Which taps the operator of ``geom`` reads an input sample with (bool, ``(*k)``).

    ``None`` when all are: every padding but zeros copies input samples into the whole halo.
    With zero padding, tap ``t`` of dimension ``i`` reads input sample ``p s + t d - lo`` at
    output ``p``; it reads none where that misses ``0 .. n - 1`` for every output kept (a
    transposed convolution keeps the first ``input_size`` outputs of ``conv``). The other
    taps are the operator's matrix entries, so the largest of them bounds its norm below.
    """
    if conv.padding_mode != "zeros":
        return None
    outputs = geom.input_size if geom.transposed else conv.output_size
    masks = []
    for n, m, k, s, d, (lo, _) in zip(conv.input_size, outputs, conv.kernel_size, conv.stride,
                                      conv.dilation, conv.padding):  # fmt: skip
        first = [max(0, -(-(lo - t * d) // s)) for t in range(k)]  # first output in range
        masks.append(torch.tensor([p < m and p * s + t * d - lo < n
                                   for t, p in enumerate(first)]))  # fmt: skip
    if all(bool(mask.all()) for mask in masks):
        return None
    return outer(masks)


def unit_weight(weight: torch.Tensor, geom: ConvGeometry,
                 conv: ConvGeometry) -> tuple[torch.Tensor | None, int]:  # fmt: skip
    """``(u, e)``: the taps the operator reads, ``weight = u * 2**e`` there, ``u`` in float64.

    ``e`` puts the largest real or imaginary part of ``u`` in ``[1/2, 1)``; multiplying by a
    power of two is exact (short of the subnormal range, where only parts below
    ``2**-1022`` of the largest land), and the norm of the operator of ``u`` is at least
    ``1/2`` when its padding is zeros. Taps no input sample meets are zeroed: the operator
    is the same. ``(None, 0)`` when those read are all zero. A new tensor, never ``weight``.
    """
    precise = torch.complex128 if weight.is_complex() else torch.float64
    read = read_taps(geom, conv)
    u = weight.to(precise, copy=True)
    if read is not None:
        u.mul_(read.to(device=u.device))
    parts = torch.view_as_real(u) if u.is_complex() else u
    top = float(parts.abs().max())
    if top == 0:
        return None, 0
    shift = math.frexp(top)[1]
    return ldexp_(u, -shift), shift


def ldexp_(x: torch.Tensor, shift: int) -> torch.Tensor:
    """``x *= 2**shift`` in place (exact, short of the subnormal range and of overflow)."""
    while shift:  # 2.0**shift overflows beyond 1023: in steps
        step = max(-1000, min(1000, shift))
        x.mul_(2.0**step)
        shift -= step
    return x


def scaled_back(result: Bounds, shift: int) -> Bounds:
    """``result`` times ``2**shift``, the bounds rounded outward; ``ValueError`` on overflow.

    A power of two scales exactly, except into the subnormal range, where the lower bound
    is rounded down and the upper bound up.
    """
    try:
        upper = ldexp_outward(result.upper, shift, up=True)
    except OverflowError:
        upper = math.inf
    if not math.isfinite(upper):
        log2 = math.log2(max(result.estimate, result.lower, 1e-300)) + shift
        raise ValueError(
            f"opnorm: the operator's norm is about 2**{log2:.1f}, too close to or beyond "
            f"float64's largest number (about 2**1024) for a finite certified upper bound; "
            f"scale the weight down (the norm scales with it)"
        )
    lower = ldexp_outward(result.lower, shift, up=False)
    estimate = math.ldexp(result.estimate, shift)
    return Bounds(min(max(estimate, lower), upper), lower, upper)


def ldexp_outward(x: float, shift: int, *, up: bool) -> float:
    """``x * 2**shift`` rounded up (``up``) or down; ``OverflowError`` beyond float64."""
    y = math.ldexp(x, shift)
    back = math.ldexp(y, -shift)  # exact: only scaling into the subnormal range rounds
    if up and back < x:
        return math.nextafter(y, math.inf)
    if not up and back > x:
        return math.nextafter(y, 0.0)
    return y


def round_off(doubt: float, abs_norm: float, shift: int) -> str:
    """Why bounds stay apart where round-off, not iterations, sets their distance.

    ``doubt`` and ``abs_norm`` (``Y``, :func:`.rounding.abs_norm`) at the unit scale, ``2**shift``
    times smaller than the operator's.
    """
    return (
        f"because round-off alone leaves {scaled_text(doubt, shift)} of doubt: the norm is "
        f"small next to the taps (their absolute values make an operator of norm up to "
        f"{scaled_text(abs_norm, shift)}), and sums of taps that cancel err relative to the "
        f"taps' sizes; the bounds cannot be closer in float64"
    )


def scaled_text(x: float, shift: int) -> str:
    """``x * 2**shift`` for a message, as ``2**e`` beyond float64's range."""
    try:
        return f"{math.ldexp(x, shift):.3g}"
    except OverflowError:
        return f"2**{math.log2(x) + shift:.1f}"
