"""The probe: this machine's constants for the cost model, measured and fitted.

:func:`probe` times small direct convolutions (both ways) and small FFT products of a
device and precision, a fraction of a second on a 2-core CPU, and fits the constants of
:class:`convop._auto.cost.Throughput` to them. Only :func:`convop.calibrate` runs it: never
an operator, its ``repr``, ``method`` or ``estimate()``. A probe that did not get the CPUs of
torch's threads (other processes took them) measured the load rather than the machine, and
raises :class:`Busy` instead of returning constants (:func:`disturbed`). CUDA devices are
timed with ``torch.cuda.synchronize``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import torch

from .. import _fft, functional
from ..geometry import ConvGeometry
from .cost import (
    DENSE_ROWS,
    EXTENTS,
    GRIDS,
    MANY_CHANNELS,
    UNFOLDED,
    Direct,
    Throughput,
    precision,
)

_FLOOR = 1e-15  # smallest constant a fit may give (every constant must be > 0)
_ROUNDS = 3  # timed runs of every measurement, after one warm-up; the least is kept
_BUDGET = 1.0  # seconds after which the probe starts no new round


def _measure(tasks: dict[object, Callable[[], object]], device: torch.device) -> dict:
    """Seconds per call of each task: the least of several runs, in interleaved rounds.

    Each task is warmed up (plans, primitives and buffers are made on first use), then run
    in up to :data:`_ROUNDS` rounds over all tasks, so that a burst of load from other
    processes spoils a few runs of every task rather than all runs of one. No new round
    starts after :data:`_BUDGET` seconds.

    Raises
    ------
    Busy
        On a CPU, as soon as the probe has run for :data:`_BUDGET` seconds without the CPUs
        of torch's threads, or at its end if it did not get them (:func:`disturbed`).
    """
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda *_: None)
    threads = torch.get_num_threads()
    wall, cpu = time.perf_counter(), time.process_time()

    def check(final: bool) -> None:
        took = time.perf_counter() - wall
        if not cuda and (final or took > _BUDGET):
            share = time.process_time() - cpu
            if disturbed(took, share, threads):
                raise Busy(f"the probe ran {took:.2f} s on {share / took:.2f} of {threads} CPUs")

    calls = {}
    for key, fn in tasks.items():
        fn()  # the first call pays for plans, primitives and buffers
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        once = time.perf_counter() - start
        calls[key] = max(1, min(100, int(5e-4 / max(once, 1e-7))))  # runs of >= 0.5 ms
        check(final=False)
    best = dict.fromkeys(tasks, math.inf)
    for done in range(_ROUNDS):
        if done and time.perf_counter() - wall > _BUDGET:
            break
        for key, fn in tasks.items():
            start = time.perf_counter()
            for _ in range(calls[key]):
                fn()
            sync(device)
            best[key] = min(best[key], (time.perf_counter() - start) / calls[key])
    check(final=True)
    return best


def _data(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Deterministic values in [-1, 1] (the global random generator is left alone)."""
    n = math.prod(shape)
    return torch.linspace(-1.0, 1.0, n, dtype=dtype, device=device).reshape(shape)


def _cube(channels: int, k: int, n: int, ndim: int, groups: int) -> ConvGeometry:
    """An ``ndim``-d convolution of ``n`` samples per side, zero-padded to keep its size."""
    return ConvGeometry.from_torch(
        (channels, channels // groups, *(k,) * ndim), (channels, *(n,) * ndim),
        padding=(k - 1) // 2, groups=groups,
    )  # fmt: skip


# The probe's multiply-add anchors: (ndim, kind, kernel extent) -> (channels, groups, samples
# per side), each a few hundred thousand (one row) to a few million (dense) multiply-adds.
# 3-D kernels of extent 15 are too slow to time here: they take extent 7's cost.
_ANCHORS = {
    (2, "single", 3): (1, 1, 160), (2, "single", 7): (1, 1, 72), (2, "single", 15): (1, 1, 34),
    (2, "grouped", 3): (16, 16, 40), (2, "grouped", 7): (16, 16, 18),
    (2, "grouped", 15): (16, 16, 9),
    (2, "dense", 3): (DENSE_ROWS, 1, 40), (2, "dense", 7): (DENSE_ROWS, 1, 18),
    (2, "dense", 15): (DENSE_ROWS, 1, 10),
    (1, "single", 3): (1, 1, 65536), (1, "single", 7): (1, 1, 32768),
    (1, "single", 15): (1, 1, 16384),
    (1, "grouped", 3): (16, 16, 4096), (1, "grouped", 7): (16, 16, 2048),
    (1, "grouped", 15): (16, 16, 1024),
    (3, "single", 3): (1, 1, 32), (3, "single", 7): (1, 1, 16),
    (3, "grouped", 3): (16, 16, 14), (3, "grouped", 7): (16, 16, 8),
}  # fmt: skip
# FFT products whose time is mostly transforms (depthwise: the mixing is a pointwise
# product): (ndim, channels) -> samples per side, on 5-smooth grids that are not powers of
# two, like most padded sizes (2160, 10000, 150**2, 40**3 samples); a 2-D one on a grid of
# odd lengths (135**2 samples; 1-D grids are always even) and a large 2-D one.
_TRANSFORMS = {(1, MANY_CHANNELS): 2158, (1, 1): 9998, (2, 2): math.isqrt(GRIDS[0]) - 2,
               (3, 1): 38}  # fmt: skip
_ODD = 133
_LARGE = math.isqrt(GRIDS[1]) - 2  # a 2-D grid of GRIDS[1] samples


def probe(dtype: torch.dtype, device: torch.device) -> Throughput:
    """Measure this machine and fit the cost model's constants for ``dtype``'s precision.

    Small direct convolutions, both ways: single-channel and depthwise ones in 1, 2 and 3
    dimensions and 16-channel ones in 2-D, with kernels of extent 3, 7 and 15, a dilated
    one, a complex one, a large one and one of many tiny groups; and small FFT products in
    1, 2 and 3 dimensions, on a grid of odd length, a large one, of complex data, and one
    that mixes 16 channels. Each is timed as the least of a few runs after a warm-up
    (:func:`_measure`); nothing random is drawn and nothing is cached.

    Raises
    ------
    Busy
        If, on a CPU, the probe did not get the CPUs of torch's threads (:func:`disturbed`).
    """
    real = precision(dtype)
    complex_ = torch.complex128 if real == torch.float64 else torch.complex64
    tasks: dict[object, Callable[[], object]] = {}

    def direct(name: object, geom: ConvGeometry, kind: torch.dtype = real) -> ConvGeometry:
        weight = _data(geom.weight_shape, kind, device)
        x = _data((1, *geom.input_shape), kind, device)
        y = _data((1, *geom.output_shape), kind, device)
        tasks[name, 0] = lambda: functional.forward(x, weight, geom)
        tasks[name, 1] = lambda: functional.adjoint(y, weight, geom)
        return geom

    def fourier(name: object, geom: ConvGeometry, kind: torch.dtype = real) -> ConvGeometry:
        weight = _data(geom.weight_shape, kind, device)
        x = _data((1, *geom.input_shape), kind, device)
        y = _data((1, *geom.output_shape), kind, device)
        with torch.no_grad():
            spec = _fft.spectrum(weight, geom)
        tasks[name, 0] = lambda: _fft.forward(x, spec, geom)
        tasks[name, 1] = lambda: _fft.adjoint(y, spec, geom)
        return geom

    direct("call", _cube(1, 1, 4, 2, 1))
    groups = direct("groups", _cube(64, 3, 4, 2, 64))
    anchors = {
        key: direct(key, _cube(channels, key[2], n, key[0], g))
        for key, (channels, g, n) in _ANCHORS.items()
    }
    dilation = direct(
        "dilated", ConvGeometry.from_torch((1, 1, 5, 5), (1, 100, 100), padding=4, dilation=2)
    )
    big = direct("unfolded", _cube(1, 3, math.isqrt(UNFOLDED[1] // 9), 2, 1))
    direct("real", _cube(4, 3, 64, 2, 1))
    direct("complex", _cube(4, 3, 64, 2, 1), complex_)
    fourier("fft call", _cube(1, 1, 4, 2, 1))
    transform_geoms = {
        (ndim, c): fourier(("transform", ndim, c), _cube(c, 3, n, ndim, c))
        for (ndim, c), n in _TRANSFORMS.items()
    }
    odd = fourier("odd", _cube(2, 3, _ODD, 2, 2))  # like transform (2, 2), on odd lengths
    large_grid = fourier("large grid", _cube(1, 3, _LARGE, 2, 1))
    fourier("complex fft", transform_geoms[2, 2], complex_)
    mixing = fourier("mix", _cube(16, 3, 14, 2, 1))
    with torch.no_grad():
        t = _measure(tasks, device)

    def per_mac(side: int, ndim: int, kind: str, extent: int, group: float) -> float:
        key = (ndim, kind, extent)
        if key not in anchors:  # 3-D kernels of extent 15: extent 7's cost
            key = (ndim, kind, EXTENTS[-2])
        geom = anchors[key]
        return _per(_net(t[key, side], t["call", side] + geom.groups * group), _macs(geom))

    sides = []
    for s in (0, 1):  # conv, transpose
        base = t["call", s]
        group = _per(_net(t["groups", s], base), groups.groups)  # next to no multiply-adds
        table = {
            kind: tuple(
                tuple(per_mac(s, ndim, kind, k, group) for k in EXTENTS) for ndim in (1, 2, 3)
            )
            for kind in ("single", "grouped")
        }
        dense = tuple(per_mac(s, 2, "dense", k, group) for k in EXTENTS)
        side = Direct(base, group, 1.0, 1.0, 1.0, **table, dense=dense)
        dilated = _net(t["dilated", s], base) / (side.mac_seconds(1, 5, 1, 2) * _macs(dilation))
        complex_factor = _net(t["complex", s], base) / _net(t["real", s], base)
        unfolded = _net(t["unfolded", s], base) / (side.mac_seconds(1, 3, 1, 2) * _macs(big))
        sides.append(dataclasses.replace(
            side, dilated=_clip(dilated), complex=_clip(complex_factor),
            large=_clip(unfolded, low=0.1, high=10.0),
        ))  # fmt: skip

    def fft(name: object) -> float:
        return (t[name, 0] + t[name, 1]) / 2

    fft_call = fft("fft call")

    def per_unit(name: object, geom: ConvGeometry) -> float:
        return _per(_net(fft(name), fft_call), _transforms(geom))

    per = {key: per_unit(("transform", *key), geom) for key, geom in transform_geoms.items()}
    per_transform = (per[1, MANY_CHANNELS], per[2, 2], per[3, 1])
    mix_work = _net(fft("mix"), fft_call + _transforms(mixing) * per_transform[1])
    return Throughput(
        *sides,
        call_fft=fft_call,
        transform=per_transform,
        lone_1d=_clip(per[1, 1] / per[1, MANY_CHANNELS], low=0.01),
        odd=_clip(per_unit("odd", odd) / per[2, 2]),
        complex_fft=_clip(per_unit("complex fft", transform_geoms[2, 2]) / per[2, 2]),
        large=_clip(per_unit("large grid", large_grid) / per[2, 2], low=0.05, high=20.0),
        mix=_per(mix_work, _mixing(mixing)),
    )


def _clip(factor: float, low: float = 1.0, high: float = 100.0) -> float:
    """A measured factor, within ``[low, high]`` (noise must not make it absurd)."""
    return min(max(factor, low), high)


class Busy(RuntimeError):
    """The machine was too busy for the probe to measure it (see :func:`disturbed`)."""


def disturbed(wall: float, cpu: float, threads: int) -> bool:
    """Whether a probe that took ``wall`` seconds and ``cpu`` CPU seconds was disturbed.

    torch's threads keep their CPUs busy through a probe (they spin between parallel
    regions), so a probe that got less than 3/4 of ``threads`` CPUs shared them with other
    processes, and its timings (multi-threaded ones above all) say more about the load than
    about the machine.
    """
    return cpu < 0.75 * threads * wall


def _net(seconds: float, overhead: float) -> float:
    """``seconds`` less an ``overhead`` measured apart, but at least a quarter of it.

    The probe's sizes make the work the larger part; where noise says otherwise, a quarter
    keeps the constant in proportion instead of near zero.
    """
    return max(seconds - overhead, seconds / 4)


def _per(seconds: float, count: float) -> float:
    """``seconds / count``, at least a tiny positive number (the fit's constants are > 0)."""
    return max(seconds / count, _FLOOR)


def _macs(geom: ConvGeometry) -> int:
    return (
        math.prod(geom.output_size)
        * geom.out_channels
        * geom.weight_shape[1]
        * math.prod(geom.kernel_size)
    )


def _transforms(geom: ConvGeometry) -> float:
    total = math.prod(_fft.frame(geom).sizes)
    return (geom.in_channels + geom.out_channels) * total * math.log2(max(total, 2))


def _mixing(geom: ConvGeometry) -> int:
    sizes = _fft.frame(geom).sizes
    freqs = math.prod(sizes) // sizes[-1] * (sizes[-1] // 2 + 1)
    return freqs * geom.out_channels * (geom.in_channels // geom.groups)
