"""Choosing between direct and FFT evaluation by a cost model of geometry, dtype and device.

Direct convolution costs about ``C_out * C_in/groups * prod(k)`` multiply-adds per output
sample; FFT evaluation costs two transforms per channel (``L log L`` for an FFT grid of ``L``
samples) plus a ``C_out x C_in/groups`` matrix per frequency. Which wins depends on the
kernel size, the channel counts and on how fast each kernel runs on the hardware, so the
model's throughputs were measured (``benchmarks/bench_operators.py --calibrate``) and are
kept per device type and precision. "auto" takes the cheaper estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .fft import frame
from .geometry import ConvGeometry

METHODS = ("auto", "direct", "fft")


@dataclass(frozen=True)
class Throughput:
    """Measured speeds of one device type and precision (seconds per unit of work)."""

    mac: float  # per multiply-add of a direct convolution with many channels
    mac_single: float  # per multiply-add when a group has one input channel (no GEMM reuse)
    fft: float  # per (sample * log2 L) of one real FFT of a channel
    mix: float  # per complex multiply-add of the per-frequency channel mixing
    overhead_direct: float  # per call
    overhead_fft: float  # per call


# Measured on a 2-core x86-64 CPU (see docs/benchmarks.md); complex dtypes count 4x.
CPU = {
    torch.float64: Throughput(
        mac=2.4e-10, mac_single=5.5e-9, fft=1.1e-9, mix=1.5e-9,
        overhead_direct=2e-5, overhead_fft=6e-5,
    ),
    torch.float32: Throughput(
        mac=1.0e-10, mac_single=1.0e-9, fft=0.8e-9, mix=1.0e-9,
        overhead_direct=2e-5, overhead_fft=6e-5,
    ),
}  # fmt: skip
# GPUs: transforms and convolutions are both fast; FFT wins later than on the CPU.
CUDA = {
    torch.float64: Throughput(
        mac=2e-12, mac_single=2e-11, fft=5e-12, mix=5e-12,
        overhead_direct=2e-5, overhead_fft=6e-5,
    ),
    torch.float32: Throughput(
        mac=2e-13, mac_single=2e-12, fft=2e-12, mix=2e-12,
        overhead_direct=2e-5, overhead_fft=6e-5,
    ),
}  # fmt: skip


def _throughput(dtype: torch.dtype, device: torch.device) -> Throughput:
    table = CUDA if device.type == "cuda" else CPU
    real = torch.empty((), dtype=dtype).real.dtype
    return table[torch.float64 if real == torch.float64 else torch.float32]


def direct_seconds(geom: ConvGeometry, dtype: torch.dtype, device: torch.device) -> float:
    """Estimated time of one direct product for one sample."""
    speed = _throughput(dtype, device)
    per_group_in = geom.in_channels // geom.groups
    taps = math.prod(geom.kernel_size)
    if geom.transposed:  # conv_transpose scatters each input sample through the kernel
        positions = math.prod(geom.input_size)
        macs = positions * geom.in_channels * (geom.out_channels // geom.groups) * taps
    else:
        macs = math.prod(geom.output_size) * geom.out_channels * per_group_in * taps
    rate = speed.mac if per_group_in * taps >= 16 and geom.out_channels > 1 else speed.mac_single
    complex_factor = 4 if dtype.is_complex else 1
    return speed.overhead_direct + complex_factor * macs * rate


def fft_seconds(geom: ConvGeometry, dtype: torch.dtype, device: torch.device) -> float:
    """Estimated time of one FFT product for one sample."""
    speed = _throughput(dtype, device)
    sizes = frame(geom).sizes
    total = math.prod(sizes)
    freqs = total // sizes[-1] * (sizes[-1] // 2 + 1)
    transforms = (geom.in_channels + geom.out_channels) * total * math.log2(max(total, 2))
    mixing = freqs * geom.out_channels * (geom.in_channels // geom.groups)
    complex_factor = 2 if dtype.is_complex else 1
    return speed.overhead_fft + complex_factor * (transforms * speed.fft + mixing * speed.mix)


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


def resolve(method: object, geom: ConvGeometry, dtype: torch.dtype, device: torch.device) -> str:
    """Validate a user's ``method`` and resolve ``'auto'``."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of 'auto', 'direct', 'fft', got method={method!r}")
    return choose(geom, dtype, device) if method == "auto" else method
