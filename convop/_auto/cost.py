"""Choosing between direct and FFT evaluation by a cost model of geometry, dtype and device.

The model estimates the seconds of one product on one sample by each method, as a sum of
terms whose constants (:class:`Throughput`) depend on the hardware and the precision.

Direct evaluation runs torch's convolution one way and its transpose the other (which is
which depends on whether the geometry is transposed). Both are seen as one convolution from
``C_a`` to ``C_b`` channels at ``P`` output positions with ``t`` taps and ``G`` groups, so
``M = P * C_b * (C_a/G) * t`` multiply-adds; each side (:class:`Direct`) costs::

    call + G * group + M * mac(C_b/G, k, G, ndim) [* dilated] [* complex] [* large]

``mac`` is a table against the GEMM rows ``C_b/G`` (one row is memory bound, dozens are
compute bound), the kernel's extent ``k`` (torch switches kernels with the kernel size),
whether there are several groups (depthwise kernels) and, for one row, the number of
dimensions (1-D, 2-D and 3-D convolutions run different kernels), interpolated
log-linearly. ``group`` is what torch pays per group where it runs groups one by one;
``dilated`` is the extra cost of a dilated one-row convolution (fading out towards dense
ones, like ``mac``), ``large`` that of a one-row convolution too large for the caches, and
``complex`` that of a complex one (torch runs three real ones).

FFT evaluation transforms every input and output channel on a grid of ``L`` samples and
mixes channels per frequency (``F`` frequencies, ``C_out * C_in/G`` complex multiply-adds
each, as batched matrix products; with one channel in and out per group it is a pointwise
product, counted with the transforms)::

    call + transform[ndim] * (C_in + C_out) * L log2 L [* complex_fft] + mix * F * C_out * C_in/G

with a factor ``lone_1d`` on 1-D transforms of one channel (torch's FFTs are several times
faster per sample on many rows at once than on one long row), interpolated log-linearly to 1
at 16 channels, a factor ``odd`` when the last length of the grid is odd, and a factor
``large`` for large grids, interpolated log-linearly in the grid's size.

"auto" takes the method whose estimate, the mean of forward and adjoint, is smaller. The
constants are measured on this machine by :func:`convop.calibrate` (``convop._auto.probe``);
the built-in ones here, measured on the development machine, are used until then (and
always with ``CONVOP_CALIBRATE=0``). :class:`Estimate` also gives each method's memory.
(The tables make this module a little longer than most.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from .._fft import frame, spectrum_bytes, workspace_bytes
from ..geometry import ConvGeometry

METHODS = ("auto", "direct", "fft")
#: The multiply-add tables: kinds of convolution, and kernel extents (``max(kernel_size)``).
KINDS = ("single", "grouped", "dense")
EXTENTS = (3, 7, 15)
DENSE_ROWS = 16  # C_b/G of the "dense" row; "single" and "grouped" have one row
MANY_CHANNELS = 16  # channels per transform call from which a 1-D FFT runs at full speed
GRIDS = (150**2, 540**2)  # FFT grids (samples) at which `transform` and `large` are measured
UNFOLDED = (160**2 * 9, 512**2 * 9)  # unfolded samples where `mac`, `Direct.large` are measured


def _positive(value: object, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}")
    return float(value)


@dataclass(frozen=True)
class Direct:
    """Costs of one side of a direct product (torch's convolution, or its transpose).

    Attributes
    ----------
    call : float
        Seconds of one call, whatever its size.
    group : float
        Seconds per group.
    dilated : float
        Factor on the multiply-adds of a dilated convolution.
    complex : float
        Factor on the multiply-adds of a complex convolution (torch runs three real ones,
        and splits and joins the real and imaginary parts).
    large : float
        Factor on the multiply-adds of one-row convolutions whose unfolded input (``P * C_a/G
        * t`` samples per group) reaches ``UNFOLDED[1]``: they no longer fit in the caches.
        Interpolated log-linearly from 1 at ``UNFOLDED[0]``; it fades towards dense ones.
    single, grouped : tuple of tuple of float
        Seconds per multiply-add of convolutions with one output channel per group, of one
        group (``single``) or several (``grouped``): ``single[ndim - 1][j]`` for kernels of
        extent ``EXTENTS[j]`` in ``ndim`` dimensions.
    dense : tuple of float
        The same with :data:`DENSE_ROWS` output channels per group (measured in 2-D, used
        for every dimension count).
    """

    call: float
    group: float
    dilated: float
    complex: float
    large: float
    single: tuple[tuple[float, ...], ...]
    grouped: tuple[tuple[float, ...], ...]
    dense: tuple[float, ...]

    def __post_init__(self) -> None:
        for name in ("call", "group", "dilated", "complex", "large"):
            _positive(getattr(self, name), name)
        for name in ("single", "grouped"):
            table = getattr(self, name)
            if not (isinstance(table, tuple) and len(table) == 3):
                raise ValueError(f"{name} must be a tuple of 3 rows (1-D, 2-D, 3-D)")
            for i, row in enumerate(table):
                _row(row, f"{name}[{i}]")
        _row(self.dense, "dense")

    def mac_seconds(self, rows: int, extent: int, groups: int, ndim: int) -> float:
        """Seconds per multiply-add of a GEMM with ``rows`` rows, for a kernel of ``extent``.

        Interpolated log-linearly in ``rows`` (between 1 and :data:`DENSE_ROWS`) and in
        ``extent`` (between the :data:`EXTENTS`); constant beyond the ends.
        """
        low = (self.grouped if groups > 1 else self.single)[ndim - 1]
        u = _fraction((1, DENSE_ROWS), rows)
        j, v = _bracket(EXTENTS, extent)
        logs = sum(
            weight * math.log(row[j + dj])
            for row, wr in ((low, 1 - u), (self.dense, u))
            for dj, wt in ((0, 1 - v), (1, v))
            if (weight := wr * wt)
        )
        return math.exp(logs)


def _row(row: object, name: str) -> None:
    if not (isinstance(row, tuple) and len(row) == len(EXTENTS)):
        raise ValueError(f"{name} must be a tuple of {len(EXTENTS)} numbers, got {row!r}")
    for j, value in enumerate(row):
        _positive(value, f"{name}[{j}]")


def _fraction(ends: tuple[int, int], x: int) -> float:
    """Where ``x`` lies between ``ends``, in logs, clipped to [0, 1]."""
    w = math.log(max(x, 1) / ends[0]) / math.log(ends[1] / ends[0])
    return min(max(w, 0.0), 1.0)


def _bracket(anchors: tuple[int, ...], x: int) -> tuple[int, float]:
    """``(i, w)``: ``x`` lies at fraction ``w`` of ``[anchors[i], anchors[i+1]]`` (in logs)."""
    for i in range(len(anchors) - 2):
        if x <= anchors[i + 1]:
            return i, _fraction((anchors[i], anchors[i + 1]), x)
    i = len(anchors) - 2
    return i, _fraction((anchors[i], anchors[i + 1]), x)


@dataclass(frozen=True)
class Throughput:
    """The cost model's constants for one device type and precision, in seconds.

    Attributes
    ----------
    conv : Direct
        torch's convolution (the forward of a convolution, the adjoint of a transposed one).
    transpose : Direct
        torch's transposed convolution (the other side).
    call_fft : float
        Seconds of one FFT product, whatever its size.
    transform : tuple of float
        Seconds per ``L log2 L`` per channel of real transforms on ``L`` samples of many
        channels at once, in 1, 2 and 3 dimensions.
    lone_1d : float
        Factor on ``transform[0]`` for 1-D transforms of one channel.
    odd : float
        Factor on the transforms when the grid's last length is odd (real FFTs prefer even
        lengths; 1-D grids are always even, see :func:`convop._fft.fast_length`).
    complex_fft : float
        Factor on the transforms of complex data (full complex transforms instead of real
        ones).
    large : float
        Factor on the transforms of grids of ``GRIDS[1]`` samples and more (large transforms
        run faster per sample, on several threads above all), interpolated log-linearly
        from 1 at ``GRIDS[0]`` samples.
    mix : float
        Seconds per complex multiply-add of the per-frequency channel mixing.
    """

    conv: Direct
    transpose: Direct
    call_fft: float
    transform: tuple[float, float, float]
    lone_1d: float
    odd: float
    complex_fft: float
    large: float
    mix: float

    def __post_init__(self) -> None:
        for name in ("conv", "transpose"):
            if not isinstance(getattr(self, name), Direct):
                raise TypeError(f"{name} must be a Direct, got {type(getattr(self, name))}")
        for name in ("call_fft", "lone_1d", "odd", "complex_fft", "large", "mix"):
            _positive(getattr(self, name), name)
        if not (isinstance(self.transform, tuple) and len(self.transform) == 3):
            raise ValueError(f"transform must be a tuple of 3 numbers, got {self.transform!r}")
        for i, value in enumerate(self.transform):
            _positive(value, f"transform[{i}]")


# Measured on this project's 2-core x86-64 CPU (AMD EPYC, AVX2) with torch 2.13 and its two
# threads, by convop._auto.probe: the median of 5 runs that the machine's other load
# did not disturb (`odd`: re-measured on 2-D grids when 1-D grids became even, 5 runs).
_F64, _F32 = torch.float64, torch.float32
#: Each side of a direct product, per precision: call, group, dilated, complex, large.
_CPU_SIDES = {
    (_F64, "conv"): (2.8e-5, 1.4e-5, 1.9, 3.1, 1.0),
    (_F64, "transpose"): (3.8e-5, 9.4e-6, 1.0, 3.4, 1.0),
    (_F32, "conv"): (2.1e-5, 4.6e-6, 1.5, 3.1, 0.53),
    (_F32, "transpose"): (2.4e-5, 3.1e-6, 1.0, 3.1, 0.75),
}
#: Seconds per multiply-add for kernels of extent EXTENTS (3, 7, 15), per precision, side,
#: kind and dimension count (`dense`: measured in 2-D, used for every dimension count).
_CPU_MACS = {
    (_F64, "conv", "single", 1): (2.2e-9, 1.6e-9, 1.3e-9),
    (_F64, "conv", "single", 2): (1.5e-9, 1.2e-9, 1.3e-9),
    (_F64, "conv", "single", 3): (1.9e-9, 1.9e-9, 1.9e-9),
    (_F64, "conv", "grouped", 1): (2.4e-9, 1.7e-9, 1.6e-9),
    (_F64, "conv", "grouped", 2): (1.9e-9, 1.9e-9, 2.6e-9),
    (_F64, "conv", "grouped", 3): (1.6e-9, 1.6e-9, 1.6e-9),
    (_F64, "conv", "dense", 2): (1.7e-10, 1.4e-10, 1.7e-10),
    (_F64, "transpose", "single", 1): (4.4e-9, 3.9e-9, 4e-9),
    (_F64, "transpose", "single", 2): (3.8e-9, 3.8e-9, 3.4e-9),
    (_F64, "transpose", "single", 3): (2.1e-9, 2.4e-9, 2.4e-9),
    (_F64, "transpose", "grouped", 1): (3.8e-9, 3.3e-9, 3.2e-9),
    (_F64, "transpose", "grouped", 2): (3.1e-9, 2.6e-9, 2.2e-9),
    (_F64, "transpose", "grouped", 3): (1.9e-9, 1.8e-9, 1.8e-9),
    (_F64, "transpose", "dense", 2): (2.9e-10, 2.5e-10, 2.5e-10),
    (_F32, "conv", "single", 1): (3.6e-9, 2.1e-9, 7.6e-10),
    (_F32, "conv", "single", 2): (1.4e-9, 1e-9, 5.7e-9),
    (_F32, "conv", "single", 3): (1.6e-9, 5.2e-10, 5.2e-10),
    (_F32, "conv", "grouped", 1): (1.5e-9, 7e-10, 1.2e-9),
    (_F32, "conv", "grouped", 2): (7.1e-10, 3.4e-10, 1.2e-9),
    (_F32, "conv", "grouped", 3): (3.5e-10, 1.1e-10, 1.1e-10),
    (_F32, "conv", "dense", 2): (7.8e-11, 6.9e-11, 1.1e-10),
    (_F32, "transpose", "single", 1): (6.9e-9, 4.5e-9, 2.8e-9),
    (_F32, "transpose", "single", 2): (3.1e-9, 2.6e-9, 2.5e-9),
    (_F32, "transpose", "single", 3): (2.1e-9, 1.5e-9, 1.5e-9),
    (_F32, "transpose", "grouped", 1): (1.5e-9, 9.7e-10, 7.1e-10),
    (_F32, "transpose", "grouped", 2): (8.1e-10, 6.3e-10, 5.2e-10),
    (_F32, "transpose", "grouped", 3): (1.5e-9, 8.1e-10, 8.1e-10),
    (_F32, "transpose", "dense", 2): (7.4e-11, 7.2e-11, 5.5e-11),
}
#: The FFT constants, per device type and precision: call_fft, transform (1-D, 2-D, 3-D),
#: lone_1d, odd, complex_fft, large, mix. GPUs: not measured here (no GPU on the development
#: machine); scaled so that, as on GPUs generally, direct convolution stays the choice for
#: small kernels and FFT for large ones.
_FFT = {
    ("cpu", _F64): (2.5e-4, (5e-10, 5.3e-10, 5.8e-10), 2.9, 1.2, 1.3, 0.72, 5.5e-9),
    ("cpu", _F32): (2.3e-4, (3.1e-10, 3.7e-10, 5.3e-10), 3.6, 1.3, 1.2, 0.67, 4.9e-9),
    ("cuda", _F64): (6e-5, (4e-12,) * 3, 1.0, 1.0, 2.0, 1.0, 2e-11),
    ("cuda", _F32): (6e-5, (2e-12,) * 3, 1.0, 1.0, 2.0, 1.0, 1e-11),
}
_GPU_DIRECT = Direct(call=2e-5, group=1e-7, dilated=1.5, complex=3.0, large=1.0,
                     single=((2e-11,) * 3,) * 3,
                     grouped=((2e-11,) * 3,) * 3, dense=(2e-12,) * 3)  # fmt: skip


def _cpu_side(precision: torch.dtype, side: str) -> Direct:
    """One side's :class:`Direct` from the rows of ``_CPU_SIDES`` and ``_CPU_MACS``."""
    tables = {
        kind: tuple(_CPU_MACS[precision, side, kind, ndim] for ndim in (1, 2, 3))
        for kind in ("single", "grouped")
    }
    dense = _CPU_MACS[precision, side, "dense", 2]
    return Direct(*_CPU_SIDES[precision, side], **tables, dense=dense)


#: The built-in constants of each precision on CPUs and on CUDA GPUs.
CPU = {p: Throughput(_cpu_side(p, "conv"), _cpu_side(p, "transpose"), *_FFT["cpu", p])
       for p in (_F64, _F32)}  # fmt: skip
CUDA = {p: Throughput(_GPU_DIRECT, _GPU_DIRECT, *_FFT["cuda", p]) for p in (_F64, _F32)}


def precision(dtype: torch.dtype) -> torch.dtype:
    """The real precision the model keys on: float64 for (complex) doubles, else float32."""
    real = torch.empty((), dtype=dtype).real.dtype
    return torch.float64 if real == torch.float64 else torch.float32


def builtin(dtype: torch.dtype, device: torch.device) -> Throughput:
    """The built-in constants for ``dtype`` on ``device``'s type (CUDA's for any GPU)."""
    table = CPU if device.type == "cpu" else CUDA
    return table[precision(dtype)]


def _sides(geom: ConvGeometry) -> tuple[int, int, int]:
    """``(C_a, C_b, P)`` of the convolution torch runs: channels in, out, output positions."""
    if geom.transposed:  # its conv side maps the output back onto the input grid
        return geom.out_channels, geom.in_channels, math.prod(geom.input_size)
    return geom.in_channels, geom.out_channels, math.prod(geom.output_size)


def side_seconds(geom: ConvGeometry, dtype: torch.dtype, side: Direct) -> float:
    """Estimated seconds of one side of a direct product for one sample."""
    c_a, c_b, positions = _sides(geom)
    g = geom.groups
    macs = positions * c_b * (c_a // g) * math.prod(geom.kernel_size)
    rows = c_b // g
    work = macs * side.mac_seconds(rows, max(geom.kernel_size), g, geom.ndim)
    one_row = 1 - _fraction((1, DENSE_ROWS), rows)  # measured on one row; dense GEMMs hide it
    if any(d > 1 for d in geom.dilation):
        work *= side.dilated**one_row
    unfolded = positions * (c_a // g) * math.prod(geom.kernel_size)
    work *= side.large ** (one_row * _fraction(UNFOLDED, unfolded))
    if dtype.is_complex:
        work *= side.complex
    return side.call + g * side.group + work


def seconds(
    method: str,
    geom: ConvGeometry,
    dtype: torch.dtype,
    device: torch.device,
    speed: Throughput | None = None,
) -> float:
    """Estimated time of one product by ``method`` (``'direct'`` or ``'fft'``) for one sample.

    The mean of forward and adjoint; ``speed`` defaults to the built-in constants
    (:func:`builtin`).
    """
    speed = builtin(dtype, device) if speed is None else speed
    return _SECONDS[method](geom, dtype, speed)


def _direct_seconds(geom: ConvGeometry, dtype: torch.dtype, speed: Throughput) -> float:
    conv = side_seconds(geom, dtype, speed.conv)
    transpose = side_seconds(geom, dtype, speed.transpose)
    return (conv + transpose) / 2


def _fft_seconds(geom: ConvGeometry, dtype: torch.dtype, speed: Throughput) -> float:
    """Forward and adjoint alike: the same transforms and mixing."""
    sizes = frame(geom).sizes
    total = math.prod(sizes)
    freqs = total if dtype.is_complex else total // sizes[-1] * (sizes[-1] // 2 + 1)
    channels = geom.in_channels + geom.out_channels
    transforms = channels * total * math.log2(max(total, 2))
    transform = speed.transform[geom.ndim - 1]
    if geom.ndim == 1:  # one long row is slower per sample than many
        transform *= speed.lone_1d ** (1 - _fraction((1, MANY_CHANNELS), channels // 2))
    if sizes[-1] % 2:
        transform *= speed.odd
    transform *= speed.large ** _fraction(GRIDS, total)
    pairs = geom.out_channels * (geom.in_channels // geom.groups)
    # one channel in and out per group: a pointwise product, part of what transform measures
    mixing = 0 if pairs == geom.groups else freqs * pairs
    factor = speed.complex_fft if dtype.is_complex else 1
    return speed.call_fft + factor * transforms * transform + mixing * speed.mix


_SECONDS = {"direct": _direct_seconds, "fft": _fft_seconds}


@dataclass(frozen=True)
class Estimate:
    """What one product is expected to cost by each method, and where the constants came from.

    Made by :meth:`convop.ConvOperator.estimate` (and for ``repr`` and ``op.method``): every
    number comes from one set of constants.

    Attributes
    ----------
    direct, fft : float
        Estimated seconds of one direct and of one FFT product (the mean of forward and
        adjoint) of ``batch`` samples.
    source : str
        Where the constants came from: ``'calibrated'`` (this process's
        :func:`convop.calibrate`), ``'cache file'`` (written by an earlier calibration on
        this machine) or ``'built-in'``.
    uncertain : bool
        Whether the two are too close for the model to tell apart (within 4x, see
        :func:`convop._auto.trial.uncertain`): then the first product of each batch size
        times both methods and keeps the faster. Never with ``CONVOP_CALIBRATE=0``.
    direct_bytes, fft_bytes : int
        Memory one product of ``batch`` samples takes beyond its input: direct, the output
        and the input once more (what the product guard counts); FFT, the weight's spectrum
        (its peak while it is built on first use; it is kept) plus the transforms' workspace.
    batch : int
        Samples per product.
    """

    direct: float
    fft: float
    source: str
    uncertain: bool = False
    direct_bytes: int = 0
    fft_bytes: int = 0
    batch: int = 1

    @property
    def method(self) -> str:
        """``'fft'`` if its estimate is smaller, else ``'direct'``: ``method='auto'``'s pick."""
        return "fft" if self.fft < self.direct else "direct"

    def __str__(self) -> str:
        """``'est. fft 2.1 ms, direct 5.4 ms, calibrated'``: the pick first."""
        other = "direct" if self.method == "fft" else "fft"
        first, second = getattr(self, self.method), getattr(self, other)
        return f"est. {self.method} {_seconds(first)}, {other} {_seconds(second)}, {self.source}"


def _seconds(value: float) -> str:
    """``'41 us'``, ``'2.1 ms'``, ``'370 ms'``, ``'1.5 s'``: about two significant digits."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale or unit == "us":
            v = value / scale
            return f"{v:.0f} {unit}" if v >= 10 else f"{v:.2g} {unit}"
    raise AssertionError("unreachable")


def direct_bytes(geom: ConvGeometry, dtype: torch.dtype, batch: int = 1) -> int:
    """Memory of one direct product of ``batch`` samples beyond its input (the guard's count)."""
    samples = math.prod(geom.input_shape) + math.prod(geom.output_shape)
    return batch * samples * dtype.itemsize


def fft_bytes(geom: ConvGeometry, dtype: torch.dtype, batch: int = 1) -> int:
    """Memory of one FFT product of ``batch`` samples beyond its input, its spectrum included.

    The spectrum's peak while it is built (``convop._fft.spectrum_bytes``) plus the
    transforms' workspace (``convop._fft.workspace_bytes``), the two numbers the FFT path's
    memory guards check.
    """
    channels = geom.in_channels + geom.out_channels
    framed = SimpleNamespace(frame=frame(geom))  # workspace_bytes reads only the frame
    workspace = workspace_bytes(framed, channels, batch, dtype)
    return spectrum_bytes(geom, dtype) + workspace


def estimate(
    geom: ConvGeometry,
    dtype: torch.dtype,
    device: torch.device,
    *,
    speed: Throughput | None = None,
    source: str = "built-in",
    batch: int = 1,
) -> Estimate:
    """Both estimates with the constants ``speed`` (default: the built-in ones).

    Seconds are one sample's times ``batch``; bytes are those of a product of ``batch``
    samples.

    Examples
    --------
    >>> import torch
    >>> layer = ConvGeometry.from_torch((64, 64, 3, 3), (64, 56, 56), padding=1)
    >>> blur = ConvGeometry.from_torch((1, 1, 31, 31), (1, 512, 512), padding="same")
    >>> cpu = torch.device("cpu")
    >>> estimate(layer, torch.float32, cpu).method, estimate(blur, torch.float64, cpu).method
    ('direct', 'fft')
    >>> str(estimate(blur, torch.float64, cpu))
    'est. fft ..., direct ..., built-in'
    """
    speed = builtin(dtype, device) if speed is None else speed
    return Estimate(
        batch * _direct_seconds(geom, dtype, speed),
        batch * _fft_seconds(geom, dtype, speed),
        source,
        direct_bytes=direct_bytes(geom, dtype, batch),
        fft_bytes=fft_bytes(geom, dtype, batch),
        batch=batch,
    )


def check(method: object) -> str:
    """Validate a user's ``method`` (``'auto'`` is resolved on use)."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of 'auto', 'direct', 'fft', got method={method!r}")
    return method
