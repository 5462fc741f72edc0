"""The cost model's constants on disk: one validated JSON file per machine, device, precision.

:func:`convop.calibrate` writes the file (:func:`write`); ``method="auto"`` reads it
(:func:`read`) the first time it needs a device and precision's constants in a process, and
never writes it. Files live in ``$CONVOP_CACHE_DIR``, else ``$XDG_CACHE_HOME/convop``, else
``~/.cache/convop`` (:func:`cache_dir`). A file names what it was measured on
(:func:`machine`: the CPU model, architecture, CPU count, torch's thread count and version,
and the GPU's name), so that a file from another machine, thread count or torch is never
used; it is written atomically, and a file that is corrupt, of another schema or from
elsewhere is refused as a whole (:class:`convop._shared.files.CorruptFile`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
from pathlib import Path

import torch

from .._shared.files import CorruptFile, atomic_write
from .cost import KINDS, Direct, Throughput, precision

SCHEMA = 2  # of the cache files; bump when the probe or the model's terms change
DIRECTORY = "CONVOP_CACHE_DIR"
MAX_FILE_BYTES = 64 * 1024


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


@functools.cache
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
