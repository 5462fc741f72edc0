"""The cost model's constants for this machine: measured on first use, cached on disk.

``method="auto"`` compares two estimates (:mod:`convop._auto.cost`) whose constants depend on
the hardware. The first time "auto" is resolved for a device and precision in a process,
:func:`throughput` looks for them in a cache file; when there is none (or it is not valid)
it runs :func:`probe`, a short measurement (0.3-0.6 s on a 2-core CPU: small direct
convolutions both ways, small FFT products), fits the constants to it and writes the file.
Building an operator never probes; resolving "auto" (the first product, ``op.method`` or
``repr(op)``) does, at most once per device and precision per process, under a lock. A
probe that did not get the CPUs of torch's threads (other processes took them) measured the
load rather than the machine: that process uses the built-in constants and writes nothing.

Cache files are JSON, one per machine, device and precision, in ``$CONVOP_CACHE_DIR``, else
``$XDG_CACHE_HOME/convop``, else ``~/.cache/convop``. A file names what it was measured on:
the CPU model, architecture, CPU count, torch's thread count and version (and the GPU's
name); it is written atomically and validated when read, and a file that is corrupt, from
another machine or of another schema is ignored and replaced. Where the directory cannot be
written the constants stay in memory. ``CONVOP_CALIBRATE=0`` turns all of this off: the
built-in constants of :mod:`convop._auto.cost` are used and nothing is measured or written.

Only CPUs and CUDA devices are probed (timed with ``torch.cuda.synchronize``); other devices
use the built-in GPU constants.

The module is longer than most (about 570 lines) because it holds one responsibility from
end to end: the environment and the cache directory, the file format and its validation,
the probe and the fit, and the process-wide memory with its lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .. import _fft, functional
from .._shared.files import CorruptFile, atomic_write
from ..geometry import ConvGeometry
from .cost import (
    DENSE_ROWS,
    EXTENTS,
    GRIDS,
    KINDS,
    MANY_CHANNELS,
    UNFOLDED,
    Direct,
    Estimate,
    Throughput,
    builtin,
    precision,
)
from .cost import estimate as estimate_with
from .trial import uncertain

SCHEMA = 2  # of the cache files; bump when the probe or the model's terms change
SWITCH = "CONVOP_CALIBRATE"
DIRECTORY = "CONVOP_CACHE_DIR"
MAX_FILE_BYTES = 64 * 1024
_OFF, _ON = ("0", "false", "no", "off"), ("1", "true", "yes", "on", "")
_FLOOR = 1e-15  # smallest constant a fit may give (every constant must be > 0)
_ROUNDS = 3  # timed runs of every measurement, after one warm-up; the least is kept
_BUDGET = 1.0  # seconds after which the probe starts no new round

_LOCK = threading.Lock()
# This process's constants per (device, precision): measured, or None where the machine was
# too busy to measure (the built-in ones are used then).
_KNOWN: dict[tuple[str, torch.dtype], Throughput | None] = {}


def enabled() -> bool:
    """Whether "auto" uses measured constants (``CONVOP_CALIBRATE``, default on).

    Raises
    ------
    ValueError
        If ``CONVOP_CALIBRATE`` is set to something other than 0/1 (false/true, no/yes,
        off/on).
    """
    raw = os.environ.get(SWITCH, "1")
    value = raw.strip().lower()
    if value in _OFF:
        return False
    if value in _ON:
        return True
    raise ValueError(f"{SWITCH} must be 0 or 1 (or false/true, no/yes, off/on), got {raw!r}")


def cache_dir() -> Path | None:
    """Where cache files go (``None`` if no home directory can be found).

    ``$CONVOP_CACHE_DIR``, else ``$XDG_CACHE_HOME/convop``, else ``~/.cache/convop``.
    """
    explicit = os.environ.get(DIRECTORY, "")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):  # the XDG spec: relative paths are ignored
        return Path(xdg) / "convop"
    try:
        return Path.home() / ".cache" / "convop"
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        return None


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` where there is one), or ``'unknown'``."""
    with contextlib.suppress(OSError, UnicodeDecodeError), open("/proc/cpuinfo") as info:
        for line in info:
            name, _, value = line.partition(":")
            if name.strip() in ("model name", "Model", "Hardware", "cpu model"):
                return value.strip()
    return platform.processor() or "unknown"


def machine(device: torch.device, dtype: torch.dtype) -> dict[str, object]:
    """What a measurement for ``device`` and ``dtype``'s precision depends on."""
    key: dict[str, object] = {
        "device": device.type,
        "precision": str(precision(dtype)).removeprefix("torch."),
        "cpu": _cpu_model(),
        "arch": platform.machine(),
        "system": platform.system(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        key["gpu"] = torch.cuda.get_device_name(device)
    return key


def cache_file(key: dict[str, object]) -> Path | None:
    """The cache file for ``key`` (from :func:`machine`), ``None`` without a directory."""
    directory = cache_dir()
    if directory is None:
        return None
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return directory / f"calibration-{key['device']}-{key['precision']}-{digest}.json"


# ---------------------------------------------------------------------- the file format
def encode(speed: Throughput) -> dict[str, object]:
    """``speed`` as plain JSON values."""

    def side(d: Direct) -> dict[str, object]:
        return {"call": d.call, "group": d.group, "dilated": d.dilated, "complex": d.complex,
                "large": d.large,
                "single": [list(row) for row in d.single],
                "grouped": [list(row) for row in d.grouped], "dense": list(d.dense)}  # fmt: skip

    return {
        "conv": side(speed.conv),
        "transpose": side(speed.transpose),
        "call_fft": speed.call_fft,
        "transform": list(speed.transform),
        "lone_1d": speed.lone_1d,
        "odd": speed.odd,
        "complex_fft": speed.complex_fft,
        "large": speed.large,
        "mix": speed.mix,
    }


def _fields(obj: object, names: tuple[str, ...], what: str) -> dict:
    if not isinstance(obj, dict) or set(obj) != set(names):
        found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise CorruptFile(f"{what} must have the fields {sorted(names)}, got {found}")
    return obj


def _numbers(obj: object, what: str) -> tuple:
    if not isinstance(obj, list):
        raise CorruptFile(f"{what} must be a list of numbers, got {type(obj).__name__}")
    return tuple(obj)


def _rows(obj: object, what: str) -> list:
    if not isinstance(obj, list):
        raise CorruptFile(f"{what} must be a list of rows, got {type(obj).__name__}")
    return obj


def decode(obj: object) -> Throughput:
    """The :class:`Throughput` in ``obj`` (from :func:`encode`); ``CorruptFile`` if invalid."""
    scalars = ("call_fft", "lone_1d", "odd", "complex_fft", "large", "mix")
    names = ("conv", "transpose", "transform", *scalars)
    top = _fields(obj, names, "throughput")
    try:
        sides = []
        for name in ("conv", "transpose"):
            costs = ("call", "group", "dilated", "complex", "large")
            d = _fields(top[name], (*costs, *KINDS), name)
            tables = {
                kind: tuple(_numbers(row, f"{name}.{kind}") for row in _rows(d[kind], kind))
                for kind in ("single", "grouped")
            }
            dense = _numbers(d["dense"], f"{name}.dense")
            sides.append(Direct(**{key: d[key] for key in costs}, **tables, dense=dense))
        transform = _numbers(top["transform"], "transform")
        return Throughput(*sides, transform=transform, **{key: top[key] for key in scalars})
    except (TypeError, ValueError) as error:
        raise CorruptFile(str(error)) from error


def _reject_constant(name: str) -> float:
    raise CorruptFile(f"{name} is not a number a cache file may hold")


def read(path: Path, key: dict[str, object]) -> Throughput:
    """The constants in the cache file ``path`` if it is valid and was written for ``key``.

    Raises
    ------
    OSError
        If the file cannot be read (e.g. it does not exist).
    CorruptFile
        If it is not a cache file of this schema for ``key`` with valid constants.
    """
    with open(path, "rb") as file:
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise CorruptFile(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise CorruptFile(f"{path} is not JSON: {error}") from error
    top = _fields(obj, ("schema", "key", "probe_seconds", "throughput"), str(path))
    if top["schema"] != SCHEMA or top["key"] != key:
        raise CorruptFile(f"{path} was written for another schema, machine or torch")
    return decode(top["throughput"])


def write(path: Path, key: dict[str, object], speed: Throughput, seconds: float) -> None:
    """Write the cache file ``path`` atomically (``OSError`` if it cannot be written)."""
    document = {"schema": SCHEMA, "key": key, "probe_seconds": seconds,
                "throughput": encode(speed)}  # fmt: skip
    text = json.dumps(document, indent=1, allow_nan=False).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda file: file.write(text))


# ---------------------------------------------------------------------- the probe
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


class Busy(Exception):
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


# ---------------------------------------------------------------------- the entry points
def _measured(dtype: torch.dtype, device: torch.device) -> Throughput | None:
    """The calibrated constants: this process's, the cache file's, or a fresh probe's.

    ``None`` where the probe found the machine too busy (then not retried in this process).
    """
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    memo = (name, precision(dtype))
    if memo in _KNOWN:
        return _KNOWN[memo]
    with _LOCK:
        if memo in _KNOWN:  # another thread probed while this one waited
            return _KNOWN[memo]
        key = machine(device, dtype)
        path = cache_file(key)
        speed = None
        if path is not None:
            with contextlib.suppress(OSError, CorruptFile):
                speed = read(path, key)
        if speed is None:
            start = time.perf_counter()
            try:
                speed = probe(dtype, device)
            except Busy:  # this process makes do with the built-in constants
                _KNOWN[memo] = None
                return None
            took = time.perf_counter() - start
            if path is not None:
                with contextlib.suppress(OSError):  # unwritable: keep it in memory only
                    write(path, key, speed, took)
        _KNOWN[memo] = speed
        return speed


def throughput(dtype: torch.dtype, device: torch.device) -> tuple[Throughput, str]:
    """The constants "auto" uses for ``dtype`` on ``device``, and where they came from.

    ``'calibrated'`` when measured on this machine (see the module docstring), else the
    built-in ones: ``'built-in'`` with ``CONVOP_CALIBRATE=0`` and on devices other than
    CPUs and CUDA GPUs, ``'built-in, machine busy'`` when the probe was disturbed by other
    processes (nothing is written then, so the next process measures again).
    """
    if not enabled() or device.type not in ("cpu", "cuda"):
        return builtin(dtype, device), "built-in"
    speed = _measured(dtype, device)
    if speed is None:
        return builtin(dtype, device), "built-in, machine busy"
    return speed, "calibrated"


def estimate(geom: ConvGeometry, dtype: torch.dtype, device: torch.device) -> Estimate:
    """Both estimates of one product of ``geom`` with the constants of :func:`throughput`.

    Examples
    --------
    >>> import torch
    >>> blur = ConvGeometry.from_torch((1, 1, 31, 31), (1, 512, 512), padding="same")
    >>> guess = estimate(blur, torch.float64, torch.device("cpu"))
    >>> guess.method, guess.fft < guess.direct
    ('fft', True)
    """
    speed, source = throughput(dtype, device)
    found = estimate_with(geom, dtype, device, speed=speed, source=source)
    if source == "calibrated" and uncertain(found.direct, found.fft):
        return dataclasses.replace(found, uncertain=True)  # settled by timing (convop._auto.trial)
    return found
