"""Choosing between direct and FFT evaluation by a cost model of geometry, dtype and device.

Direct convolution costs about ``C_out * C_in/groups * prod(k)`` multiply-adds per output
sample; FFT evaluation costs two transforms per channel (``L log L`` for an FFT grid of ``L``
samples) plus a ``C_out x C_in/groups`` matrix per frequency. Which wins depends on the
kernel size, the channel counts and on how fast each kernel runs on the hardware, so the
model's costs were measured on the development machine (the timings behind them are the
benchmarks in ``docs/benchmarks.md``) and are kept per device type and precision. "auto"
takes the cheaper estimate; ``method="direct"`` or ``"fft"`` overrides it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from ._fft import frame
from .geometry import ConvGeometry

METHODS = ("auto", "direct", "fft")


@dataclass(frozen=True)
class Throughput:
    """Measured costs on one device type and precision, in seconds.

    A direct convolution runs as GEMMs whose row count is the output channels per group
    (``C_out/G``): with one row it is memory bound, with dozens it is compute bound, so the
    cost of a multiply-add is tabulated against that count and interpolated.
    """

    mac: tuple[tuple[int, float], ...]  # (C_out/G, seconds per multiply-add), increasing
    pixel: float  # per output sample (bookkeeping of the direct kernel)
    fft: float  # per L log2(L) of one real transform of one channel
    mix: float  # per complex multiply-add of the per-frequency channel mixing
    call_direct: float  # fixed cost of one direct product
    call_fft: float  # fixed cost of one FFT product

    def mac_seconds(self, rows: int) -> float:
        """Cost of one multiply-add of a GEMM with ``rows`` rows (log-linear interpolation)."""
        table = self.mac
        if rows <= table[0][0]:
            return table[0][1]
        for (r0, t0), (r1, t1) in itertools.pairwise(table):
            if rows <= r1:
                w = math.log(rows / r0) / math.log(r1 / r0)
                return math.exp((1 - w) * math.log(t0) + w * math.log(t1))
        return table[-1][1]


# Measured on this project's 2-core x86-64 CPU with torch 2.13 (see docs/benchmarks.md).
CPU = {
    torch.float64: Throughput(
        mac=((1, 2.0e-9), (4, 6.5e-10), (8, 1.3e-10), (16, 5e-11), (32, 2.5e-11)),
        pixel=0.0, fft=2.2e-10, mix=2.2e-9, call_direct=2e-5, call_fft=1e-4,
    ),
    torch.float32: Throughput(
        mac=((1, 9e-11), (4, 3e-11), (8, 2e-11), (16, 1.2e-11), (32, 7e-12)),
        pixel=4.6e-9, fft=1.3e-10, mix=1.4e-9, call_direct=2e-5, call_fft=1e-4,
    ),
}  # fmt: skip
# GPUs: not measured here (no GPU on the development machine); scaled so that, as on GPUs
# generally, direct convolution stays the choice for small kernels and FFT for large ones.
CUDA = {
    torch.float64: Throughput(
        mac=((1, 2e-11), (32, 2e-12)), pixel=0.0, fft=4e-12, mix=2e-11,
        call_direct=2e-5, call_fft=6e-5,
    ),
    torch.float32: Throughput(
        mac=((1, 2e-12), (32, 2e-13)), pixel=0.0, fft=2e-12, mix=1e-11,
        call_direct=2e-5, call_fft=6e-5,
    ),
}  # fmt: skip


def _throughput(dtype: torch.dtype, device: torch.device) -> Throughput:
    table = CUDA if device.type == "cuda" else CPU
    real = torch.empty((), dtype=dtype).real.dtype
    return table[torch.float64 if real == torch.float64 else torch.float32]


def direct_seconds(geom: ConvGeometry, dtype: torch.dtype, device: torch.device) -> float:
    """Estimated time of one direct product for one sample."""
    speed = _throughput(dtype, device)
    taps = math.prod(geom.kernel_size)
    per_group_in = geom.in_channels // geom.groups
    per_group_out = geom.out_channels // geom.groups
    if geom.transposed:  # conv_transpose: a GEMM over input samples, then col2im
        positions = math.prod(geom.input_size)
        rows = per_group_out * taps
    else:
        positions = math.prod(geom.output_size)
        rows = per_group_out
    macs = positions * geom.out_channels * per_group_in * taps
    complex_factor = 4 if dtype.is_complex else 1
    work = macs * speed.mac_seconds(rows) + positions * speed.pixel
    return speed.call_direct + complex_factor * work


def fft_seconds(geom: ConvGeometry, dtype: torch.dtype, device: torch.device) -> float:
    """Estimated time of one FFT product for one sample."""
    speed = _throughput(dtype, device)
    sizes = frame(geom).sizes
    total = math.prod(sizes)
    freqs = total // sizes[-1] * (sizes[-1] // 2 + 1)
    transforms = (geom.in_channels + geom.out_channels) * total * math.log2(max(total, 2))
    mixing = freqs * geom.out_channels * (geom.in_channels // geom.groups)
    complex_factor = 2 if dtype.is_complex else 1
    return speed.call_fft + complex_factor * (transforms * speed.fft + mixing * speed.mix)


def choose(geom: ConvGeometry, dtype: torch.dtype, device: torch.device) -> str:
    """``'direct'`` or ``'fft'``, whichever the cost model expects to be faster.

    Examples
    --------
    >>> import torch
    >>> layer = ConvGeometry.from_torch((64, 64, 3, 3), (64, 56, 56), padding=1)
    >>> blur = ConvGeometry.from_torch((1, 1, 31, 31), (1, 512, 512), padding="same")
    >>> cpu = torch.device("cpu")
    >>> choose(layer, torch.float32, cpu), choose(blur, torch.float64, cpu)
    ('direct', 'fft')
    """
    direct = direct_seconds(geom, dtype, device)
    return "fft" if fft_seconds(geom, dtype, device) < direct else "direct"


def check(method: object) -> str:
    """Validate a user's ``method`` (``'auto'`` is resolved on use, by :func:`choose`)."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of 'auto', 'direct', 'fft', got method={method!r}")
    return method
