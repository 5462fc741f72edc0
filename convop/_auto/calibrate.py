"""Which constants ``method="auto"`` uses, and :func:`calibrate`, which measures them.

Calibration is explicit and opt-in, as FFTW's wisdom and ``torch.backends.cudnn.benchmark``
are: nothing convop does on its own times this machine or writes a file. "auto" uses, for a
device type and precision, in this order:

1. the constants :func:`calibrate` measured in this process;
2. those of the cache file a calibration wrote for this machine (``convop._auto.cache``),
   read the first time this process needs them (at most once per device and precision,
   under a lock) and never written here;
3. the built-in constants of :mod:`convop._auto.cost`.

``CONVOP_CALIBRATE=0`` makes every choice deterministic: the built-in constants, no file
read, and no trial (``convop._auto.trial``). Devices other than CPUs and CUDA GPUs use the
built-in constants.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
import warnings
from pathlib import Path

import torch

from .._shared.arrays import TORCH_TO_NUMPY
from .._shared.files import CorruptFile
from ..geometry import ConvGeometry
from . import cache, probe
from .cost import Estimate, Throughput, builtin, precision
from .cost import estimate as estimate_with
from .trial import uncertain

SWITCH = "CONVOP_CALIBRATE"
_OFF, _ON = ("0", "false", "no", "off"), ("1", "true", "yes", "on", "")
_DEVICES = ("cpu", "cuda")  # measured by the probe; others use the built-in constants

_LOCK = threading.Lock()
# This process's constants per (device, precision) and where they came from: calibrate()'s,
# the cache file's, or None where no file was found (then the built-in ones are used).
_KNOWN: dict[tuple[str, torch.dtype], tuple[Throughput, str] | None] = {}
#: Counts the calibrations of this process: operators resolve "auto" again when it changes.
generation = 0


def enabled() -> bool:
    """Whether "auto" may use measured constants and timings (``CONVOP_CALIBRATE``, default on).

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


def _memo(device: torch.device, dtype: torch.dtype) -> tuple[str, torch.dtype]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return name, precision(dtype)


def _known(dtype: torch.dtype, device: torch.device) -> tuple[Throughput, str] | None:
    """The constants of this process, else the cache file's (read once), else ``None``."""
    memo = _memo(device, dtype)
    if memo in _KNOWN:
        return _KNOWN[memo]
    with _LOCK:
        if memo in _KNOWN:  # another thread read the file while this one waited
            return _KNOWN[memo]
        key = cache.machine(device, dtype)
        path = cache.cache_file(key)
        found = None
        if path is not None:
            with contextlib.suppress(OSError, CorruptFile):  # none, or not valid: built-in
                found = (cache.read(path, key), "cache file")
        _KNOWN[memo] = found
        return found


def throughput(dtype: torch.dtype, device: torch.device) -> tuple[Throughput, str]:
    """The constants "auto" uses for ``dtype`` on ``device``, and where they came from.

    ``'calibrated'`` (this process's :func:`calibrate`), ``'cache file'`` (an earlier
    calibration's, on this machine) or ``'built-in'`` (none of those, ``CONVOP_CALIBRATE=0``,
    or a device other than a CPU or a CUDA GPU). Never measures or writes anything.
    """
    if not enabled() or device.type not in _DEVICES:
        return builtin(dtype, device), "built-in"
    found = _known(dtype, device)
    return (builtin(dtype, device), "built-in") if found is None else found


def estimate(
    geom: ConvGeometry, dtype: torch.dtype, device: torch.device, *, batch: int = 1
) -> Estimate:
    """Both estimates of one product of ``geom`` with the constants of :func:`throughput`.

    ``uncertain`` where they are too close to call and the product may time both
    (``CONVOP_CALIBRATE`` on, a CPU or CUDA device).

    Examples
    --------
    >>> import torch
    >>> blur = ConvGeometry.from_torch((1, 1, 31, 31), (1, 512, 512), padding="same")
    >>> guess = estimate(blur, torch.float64, torch.device("cpu"))
    >>> guess.method, guess.fft < guess.direct
    ('fft', True)
    """
    speed, source = throughput(dtype, device)
    found = estimate_with(geom, dtype, device, speed=speed, source=source, batch=batch)
    if device.type in _DEVICES and uncertain(found.direct, found.fft) and enabled():
        return dataclasses.replace(found, uncertain=True)  # settled by timing (trial.py)
    return found


def calibrate(
    device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> dict[torch.dtype, Path | None]:
    """Measure this machine's constants for ``method='auto'`` and keep them in a cache file.

    A short probe (small direct convolutions both ways and small FFT products; about half a
    second per precision on a 2-core CPU) fits the cost model's constants for the device
    and precision. They are used by this process at once, and written, validated, to a
    cache file for this machine that later processes read the first time they resolve
    ``'auto'``. Nothing else in convop measures or writes: until a calibration,
    ``'auto'`` uses the built-in constants (measured on the development machine), and
    where those are too close to call, the first product of each batch size times both
    methods. ``CONVOP_CALIBRATE=0`` makes ``'auto'`` ignore calibrations (and never time).

    Cache files are JSON, one per machine, device type and precision, in
    ``$CONVOP_CACHE_DIR``, else ``$XDG_CACHE_HOME/convop``, else ``~/.cache/convop``, named
    after what they were measured on (CPU model, architecture, CPU count, torch's thread
    count and version, the GPU's name): a file is used only on the machine, thread count
    and torch that made it. Calibrate again after changing any of them.

    Parameters
    ----------
    device : torch.device or str, optional
        A CPU (default) or CUDA device.
    dtype : torch.dtype, optional
        The precision to measure: float32 (and complex64) or float64 (and complex128).
        Default: both.

    Returns
    -------
    dict
        For each precision measured (``torch.float32``, ``torch.float64``), the cache file
        written, or ``None`` where it could not be written (a ``RuntimeWarning`` says why;
        the constants are kept for this process).

    Raises
    ------
    TypeError, ValueError
        For a device other than a CPU or a CUDA GPU, or an unsupported dtype.
    RuntimeError
        If other processes kept the CPUs of torch's threads busy during the probe: it
        measured the load rather than the machine, and that precision's constants are
        neither kept nor written (precisions measured before stay). Calibrate again when the
        machine is quieter.

    Examples
    --------
    Once per machine (and after upgrading torch or changing the thread count), for
    example in a setup script or with ``convop calibrate``::

        import convop
        convop.calibrate()  # {torch.float32: PosixPath(...), torch.float64: PosixPath(...)}
    """
    global generation
    device = _check_device(device)
    if dtype is None:
        precisions = (torch.float32, torch.float64)
    elif isinstance(dtype, torch.dtype) and dtype in TORCH_TO_NUMPY:
        precisions = (precision(dtype),)
    else:
        raise TypeError(
            f"dtype must be torch.float32, float64, complex64 or complex128 (or None for both "
            f"precisions), got dtype={dtype!r}"
        )
    written: dict[torch.dtype, Path | None] = {}
    with _LOCK:
        try:
            for real in precisions:
                start = time.perf_counter()
                try:
                    speed = probe.probe(real, device)
                except probe.Busy as error:
                    raise probe.Busy(
                        f"{error}: the machine was too busy to measure, so the "
                        f"{str(real).removeprefix('torch.')} constants were neither kept nor "
                        f"written; calibrate again when it is quieter"
                    ) from error
                took = time.perf_counter() - start
                _KNOWN[_memo(device, real)] = (speed, "calibrated")
                written[real] = _write(device, real, speed, took)
        finally:
            generation += 1
    return written


def _check_device(device: object) -> torch.device:
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, (torch.device, str)):
        raise TypeError(f"device must be a torch.device or str, got {type(device).__name__}")
    try:
        found = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device must name a torch device, got device={device!r}") from error
    if found.type not in _DEVICES:
        raise ValueError(
            f"device must be a CPU or CUDA device (others use the built-in constants), got "
            f"device={device!r}"
        )
    return found


def _write(device: torch.device, dtype: torch.dtype, speed: Throughput,
           took: float) -> Path | None:  # fmt: skip
    """Write and check the cache file; ``None`` (and a warning) where that fails."""
    key = cache.machine(device, dtype)
    path = cache.cache_file(key)
    if path is None:
        problem = "no cache directory: set CONVOP_CACHE_DIR"
    else:
        try:
            cache.write(path, key, speed, took)
            if cache.read(path, key) == speed:
                return path
            problem = "it reads back different constants"
        except (OSError, CorruptFile) as error:
            problem = str(error)
    warnings.warn(
        f"the calibration could not be written to {path}: {problem}; its constants are kept "
        f"for this process only",
        RuntimeWarning,
        stacklevel=3,
    )
    return None
